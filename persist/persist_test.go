package persist_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

func open(t testing.TB, dir string, clk *clock, opts ...persist.Option) *engine.Engine {
	t.Helper()
	return openMode(t, dir, clk, engine.DefaultLeaseOptions(), opts...)
}

// openMode is open in the given lease or exact mode.
func openMode(t testing.TB, dir string, clk *clock, lo engine.LeaseOptions, opts ...persist.Option) *engine.Engine {
	t.Helper()
	st, err := persist.Open(dir, opts...)
	require.NoError(t, err)
	eopts := []engine.Option{engine.WithStore(st), engine.WithLease(lo)}
	if clk != nil {
		eopts = append(eopts, engine.WithClock(clk.Now))
	}
	eng, err := engine.New(eopts...)
	require.NoError(t, err)
	return eng
}

func statusOf(t *testing.T, eng *engine.Engine, key string) engine.Status {
	t.Helper()
	s, err := eng.Status(key)
	require.NoError(t, err)
	return s
}

// restartKeys are keys of every limit kind, with the limits to register:
// "revoked" is for Revoke, "old" for Rotate.
func restartKeys() map[string][]engine.Limit {
	return map[string][]engine.Limit{
		"credits": {engine.Credits(1000)},
		"window":  {engine.PerWindow(1000, time.Hour)},
		"month":   {engine.PerMonthIn(1000, time.UTC)},
		"rate":    {engine.Rate(10, time.Second, 1000)},
		"multi":   {engine.Credits(5000), engine.PerWindow(900, time.Minute).Named("per-minute"), engine.Rate(1, time.Millisecond, 800)},
		"revoked": {engine.Credits(10)},
		"old":     {engine.Credits(300)},
	}
}

// Consume, Close, reopen: every limit kind is exactly where it was.
func TestCleanRestartIsExact(t *testing.T) {
	for _, mode := range []string{"lease", "exact"} {
		t.Run(mode, func(t *testing.T) {
			lo := engine.LeaseOptions{Exact: mode == "exact"}
			dir := t.TempDir()
			clk := &clock{}
			clk.ns.Store(time.Date(2026, 11, 29, 10, 30, 0, 0, time.UTC).UnixNano())
			eng := openMode(t, dir, clk, lo)
			for k, ls := range restartKeys() {
				require.NoError(t, eng.Register(ctx, k, ls...))
			}
			var last engine.Decision
			for i, k := range []string{"credits", "window", "month", "rate", "multi", "old"} {
				for j := range 37 + 11*i {
					d, err := eng.Consume(ctx, k, int64(1+j%3))
					require.NoError(t, err)
					require.True(t, d.Allowed, "%s %d", k, j)
					if k == "credits" && d.Granted() == 3 {
						last = d
					}
				}
			}
			require.NoError(t, eng.Refund(ctx, "credits", last, 3))
			require.NoError(t, eng.Revoke(ctx, "revoked"))
			require.NoError(t, eng.Rotate(ctx, "old", "new", time.Hour))
			require.NoError(t, eng.TopUp(ctx, "new", 50))
			before := map[string]engine.Status{}
			for _, k := range []string{"credits", "window", "month", "rate", "multi", "revoked", "old", "new"} {
				before[k] = statusOf(t, eng, k)
			}
			require.NoError(t, eng.Close())
			require.ErrorIs(t, eng.Close(), engine.ErrClosed)

			eng = openMode(t, dir, clk, lo)
			defer eng.Close()
			for k, want := range before {
				require.Equal(t, want, statusOf(t, eng, k), k)
			}
			// And it goes on from there: the next Consume sees the same state.
			d, err := eng.Consume(ctx, "credits", 1)
			require.NoError(t, err)
			require.Equal(t, before["credits"].Limits[0].Remaining-1, d.Remaining)
			d, _ = eng.Consume(ctx, "revoked", 1)
			require.Equal(t, engine.Revoked, d.Reason)
			d, _ = eng.Consume(ctx, "old", 1)
			require.True(t, d.Allowed, "the rotated-out key still has its grace")
		})
	}
}

// No raw key byte reaches the directory.
func TestNoRawKeysOnDisk(t *testing.T) {
	dir := t.TempDir()
	eng := open(t, dir, nil)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("sk_live_%04d_%x", i, []byte(fmt.Sprint("secret", i*7919)))
		require.NoError(t, eng.Register(ctx, keys[i], engine.Credits(100), engine.PerWindow(50, time.Minute)))
	}
	for i, k := range keys {
		_, err := eng.Consume(ctx, k, int64(1+i%5))
		require.NoError(t, err)
	}
	require.NoError(t, eng.Rotate(ctx, keys[0], "sk_live_rotated_secret_value", time.Hour))
	require.NoError(t, eng.Revoke(ctx, keys[1]))
	require.NoError(t, eng.Close())

	var files, size int
	err := eachFile(dir, func(p string, b []byte) error {
		files++
		size += len(b)
		for _, k := range append(keys, "sk_live_rotated_secret_value") {
			if bytes.Contains(b, []byte(k)) {
				return fmt.Errorf("%s holds raw key %q", p, k)
			}
		}
		if bytes.Contains(b, []byte("sk_live_")) {
			return fmt.Errorf("%s holds a key prefix", p)
		}
		return nil
	})
	require.NoError(t, err)
	require.Positive(t, files)
	require.Greater(t, size, 1000*32, "the records are there, as digests")
	// And they load.
	eng = open(t, dir, nil)
	defer eng.Close()
	d, _ := eng.Consume(ctx, keys[500], 1)
	require.True(t, d.Allowed)
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	_, err = persist.Open(dir)
	require.ErrorIs(t, err, persist.ErrLocked)
	require.True(t, strings.HasPrefix(err.Error(), "allot: "))
	require.NoError(t, st.Close())
	require.NoError(t, st.Close(), "Close is idempotent")
	st, err = persist.Open(dir)
	require.NoError(t, err, "free again after Close")
	require.NoError(t, st.Close())
}

// Damage to any file of a store is an error at Open or Load, never a panic,
// and never a key lost or back at a larger balance: each damaged copy
// either opens with every record as it was, or is refused with an error
// that names the damage (ErrCorrupt or ErrVersion). The store has lived
// two sessions: the first closed (its records in a table), the second
// spent more and registered more. Each kind of file of the store closed
// after the second session, and of the store copied while the second ran
// (as a crash leaves it: a table, and newer writes in the write-ahead
// file), is truncated at several lengths and has bytes flipped at several
// places, each in a copy of its own.
func TestDamagedFiles(t *testing.T) {
	const keys = 200
	// A memtable of 1 MiB and value log files of 1 MiB: the write-ahead file
	// and the value log of the running copy are 2 MiB each, not 32, and
	// each copy is quick to make.
	small := persist.WithBadgerOptions(func(o badger.Options) badger.Options {
		return o.WithMemTableSize(1 << 20).WithValueLogFileSize(1 << 20)
	})
	closed := t.TempDir()
	st, err := persist.Open(closed, small)
	require.NoError(t, err)
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	for i := range keys {
		k := fmt.Sprint("key-", i)
		require.NoError(t, eng.Register(ctx, k, engine.Credits(100)))
		_, _ = eng.Consume(ctx, k, 60)
	}
	require.NoError(t, eng.Revoke(ctx, "key-7"))
	require.NoError(t, eng.Close())
	// The second session: keys 0 to 99 spend 10 more (a record of them
	// back at the first session's state is a loss), 20 keys are new.
	st, err = persist.Open(closed, small)
	require.NoError(t, err)
	eng, err = engine.New(engine.WithStore(st))
	require.NoError(t, err)
	for i := range keys / 2 {
		d, err := eng.Consume(ctx, fmt.Sprint("key-", i), 10)
		require.NoError(t, err)
		require.True(t, d.Allowed || i == 7)
	}
	for i := keys; i < keys+20; i++ {
		require.NoError(t, eng.Register(ctx, fmt.Sprint("key-", i), engine.Credits(100)))
	}
	// The running copy is taken with nothing in flight: every reservation
	// round came before this registration's, and the meta file is up to
	// date (it trails Badger by the Saves of the last moment otherwise).
	require.NoError(t, eng.Register(ctx, "last", engine.Credits(1)))
	require.NoError(t, st.SyncMetaForTest())
	running := t.TempDir()
	require.NoError(t, os.CopyFS(running, os.DirFS(closed))) // before Close: a table, .mem with newer writes
	require.NoError(t, eng.Close())
	// whole says whether key k is as the second session left it.
	whole := func(k int, s engine.Status) bool {
		switch {
		case s.Revoked != (k == 7):
			return false
		case k < keys/2 && k != 7:
			return s.Limits[0].Remaining <= 30
		case k < keys:
			return s.Limits[0].Remaining <= 40
		}
		return true
	}
	var trials, refused, opened, lossy int
	reasons := map[string]int{}
	for _, base := range []string{closed, running} {
		entries, err := os.ReadDir(base)
		require.NoError(t, err)
		for _, f := range entries {
			name := f.Name()
			if name == "LOCK" || f.IsDir() {
				continue
			}
			orig, err := os.ReadFile(filepath.Join(base, name))
			require.NoError(t, err)
			if len(orig) == 0 {
				continue
			}
			require.Less(t, len(orig), 64<<20, "%s: a store file this large makes the trials slow", name)
			// damage returns the i-th damaged version of orig: 5 truncations,
			// 8 single flipped bytes, 1 run of flips.
			damage := func(i int) []byte {
				switch {
				case i < 5:
					return bytes.Clone(orig[:int([]float64{0, 0.25, 0.5, 0.75, 0.999}[i]*float64(len(orig)))])
				case i < 13:
					b := bytes.Clone(orig)
					b[(len(b)*(2*(i-5)+1))/16] ^= 0xff
					return b
				}
				b := bytes.Clone(orig)
				for j := len(b) / 3; j < len(b); j += max(len(b)/7, 1) {
					b[j] ^= 0x5a
				}
				return b
			}
			for i := range 14 {
				damaged := damage(i)
				trials++
				dir := t.TempDir()
				require.NoError(t, os.CopyFS(dir, os.DirFS(base)))
				require.NoError(t, os.WriteFile(filepath.Join(dir, name), damaged, 0o600))
				what := fmt.Sprintf("%s damage %d in the %s copy", name, i, map[string]string{closed: "closed", running: "running"}[base])
				st, err := persist.Open(dir, small)
				var e *engine.Engine
				if err == nil {
					if e, err = engine.New(engine.WithStore(st)); err != nil {
						_ = st.Close()
					}
				}
				if err != nil {
					require.True(t, errors.Is(err, persist.ErrCorrupt) || errors.Is(err, persist.ErrVersion), "%s: refused without naming the damage: %v", what, err)
					refused++
					reasons[name+": "+damageReason(err)]++
					continue
				}
				lost := 0
				for k := range keys + 20 {
					s, err := e.Status(fmt.Sprint("key-", k))
					if errors.Is(err, engine.ErrUnknownKey) || (err == nil && !whole(k, s)) {
						lost++
						continue
					}
					require.NoError(t, err)
				}
				if _, err := e.Status("last"); err != nil {
					lost++
				}
				if lost > 0 {
					lossy++
					t.Errorf("%s: opened with %d keys lost or back at a larger balance", what, lost)
				} else {
					opened++
				}
				require.NoError(t, e.Close())
			}
		}
	}
	t.Logf("%d damaged copies: %d opened with every record, %d refused with an error that names the damage, %d opened with records lost; 0 panics", trials, opened, refused, lossy)
	for r, n := range reasons {
		t.Logf("  refused %3d: %s", n, r)
	}
	require.Positive(t, refused)
	require.Zero(t, lossy)
}

// damageReason shortens a refusal to what kind of damage it names.
func damageReason(err error) string {
	m := err.Error()
	for _, r := range []string{"durable writes lost", "records lost", "MANIFEST missing", "allot.meta damaged", "allot.meta is missing", "another store"} {
		if strings.Contains(m, r) {
			return r
		}
	}
	if i := strings.Index(m, "opening "); i >= 0 {
		if j := strings.Index(m[i:], ": "); j >= 0 {
			m = m[i+j+2:]
		}
	}
	if i := strings.Index(m, "/"); i >= 0 {
		m = m[:i]
	}
	return strings.TrimSpace(m[:min(len(m), 60)])
}

func TestUnknownFormatVersion(t *testing.T) {
	dir := t.TempDir()
	st, err := persist.Open(dir, persist.WithBadgerOptions(nil))
	require.NoError(t, err)
	require.NoError(t, st.SetFormatForTest(99))
	require.NoError(t, st.Close())
	_, err = persist.Open(dir)
	require.ErrorIs(t, err, persist.ErrVersion)
}

func TestDamagedRecord(t *testing.T) {
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	id := engine.IDOf("k")
	require.NoError(t, st.Save(ctx, engine.Record{ID: id, Limits: []engine.Limit{engine.Credits(10)}, Counters: []uint64{3}}))
	require.NoError(t, st.PutRawForTest(id, []byte{1, 0, 1, 1}))
	_, err = engine.New(engine.WithStore(st))
	require.ErrorIs(t, err, persist.ErrCorrupt)
	require.ErrorIs(t, err, engine.ErrStore)
	require.NoError(t, st.Close())
}

func TestUnloadableLocationIsRefused(t *testing.T) {
	eng := open(t, t.TempDir(), nil)
	defer eng.Close()
	err := eng.Register(ctx, "k", engine.PerMonthIn(10, time.FixedZone("NOWHERE", 3600)))
	require.ErrorIs(t, err, persist.ErrUnsupported)
	d, _ := eng.Consume(ctx, "k", 1)
	require.Equal(t, engine.UnknownKey, d.Reason)
}

// A kill -9 while Badger creates the value log (every Open creates one) or a
// memtable file leaves it zero-length. The next Open must work at the first
// try, with every record (the kill -9 loops hit this; here it is set up
// directly).
func TestZeroLengthFilesAtOpen(t *testing.T) {
	dir := t.TempDir()
	eng := open(t, dir, nil)
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(10)))
	_, err := eng.Consume(ctx, "k", 3)
	require.NoError(t, err)
	require.NoError(t, eng.Close())
	next := func(ext string, width int) string {
		files, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
		n := 0
		for _, f := range files {
			var id int
			if _, err := fmt.Sscanf(filepath.Base(f), "%d", &id); err == nil && id > n {
				n = id
			}
		}
		return filepath.Join(dir, fmt.Sprintf("%0*d%s", width, n+1, ext))
	}
	for _, f := range []string{next(".vlog", 6), next(".mem", 5)} {
		require.NoError(t, os.WriteFile(f, nil, 0o600))
		eng = open(t, dir, nil)
		require.Equal(t, int64(7), statusOf(t, eng, "k").Limits[0].Remaining, filepath.Base(f))
		require.NoError(t, eng.Close())
	}
}
