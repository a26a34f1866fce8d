package persist_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

func open(t testing.TB, dir string, clk *clock, opts ...persist.Option) *engine.Engine {
	t.Helper()
	st, err := persist.Open(dir, opts...)
	require.NoError(t, err)
	eopts := []engine.Option{engine.WithStore(st)}
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

// Consume, Close, reopen: every limit kind is exactly where it was.
func TestCleanRestartIsExact(t *testing.T) {
	for _, mode := range []string{"lease", "exact"} {
		t.Run(mode, func(t *testing.T) {
			var opts []persist.Option
			if mode == "exact" {
				opts = append(opts, persist.WithExact())
			}
			dir := t.TempDir()
			clk := &clock{}
			clk.ns.Store(time.Date(2026, 11, 29, 10, 30, 0, 0, time.UTC).UnixNano())
			eng := open(t, dir, clk, opts...)
			keys := map[string][]engine.Limit{
				"credits": {engine.Credits(1000)},
				"window":  {engine.PerWindow(1000, time.Hour)},
				"month":   {engine.PerMonthIn(1000, time.UTC)},
				"rate":    {engine.Rate(10, time.Second, 1000)},
				"multi":   {engine.Credits(5000), engine.PerWindow(900, time.Minute).Named("per-minute"), engine.Rate(1, time.Millisecond, 800)},
				"revoked": {engine.Credits(10)},
				"old":     {engine.Credits(300)},
			}
			for k, ls := range keys {
				require.NoError(t, eng.Register(ctx, k, ls...))
			}
			for i, k := range []string{"credits", "window", "month", "rate", "multi", "old"} {
				for j := range 37 + 11*i {
					d, err := eng.Consume(ctx, k, int64(1+j%3))
					require.NoError(t, err)
					require.True(t, d.Allowed, "%s %d", k, j)
				}
			}
			require.NoError(t, eng.Refund(ctx, "credits", 5))
			require.NoError(t, eng.Revoke(ctx, "revoked"))
			require.NoError(t, eng.Rotate(ctx, "old", "new", time.Hour))
			require.NoError(t, eng.TopUp(ctx, "new", 50))
			before := map[string]engine.Status{}
			for _, k := range []string{"credits", "window", "month", "rate", "multi", "revoked", "old", "new"} {
				before[k] = statusOf(t, eng, k)
			}
			require.NoError(t, eng.Close())
			require.ErrorIs(t, eng.Close(), engine.ErrClosed)

			eng = open(t, dir, clk, opts...)
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
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
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
// and never a key back at full quota.
func TestDamagedFiles(t *testing.T) {
	base := t.TempDir()
	eng := open(t, base, nil)
	for i := range 200 {
		k := fmt.Sprint("key-", i)
		require.NoError(t, eng.Register(ctx, k, engine.Credits(100)))
		_, _ = eng.Consume(ctx, k, 60)
	}
	require.NoError(t, eng.Close())
	entries, err := os.ReadDir(base)
	require.NoError(t, err)
	for _, f := range entries {
		name := f.Name()
		if name == "LOCK" {
			continue
		}
		for _, how := range []string{"truncate", "flip"} {
			t.Run(name+"/"+how, func(t *testing.T) {
				dir := t.TempDir()
				require.NoError(t, os.CopyFS(dir, os.DirFS(base)))
				p := filepath.Join(dir, name)
				b, err := os.ReadFile(p)
				require.NoError(t, err)
				if len(b) == 0 {
					t.Skip("empty file")
				}
				if how == "truncate" {
					b = b[:len(b)/2]
				} else {
					for i := len(b) / 3; i < len(b); i += max(len(b)/7, 1) {
						b[i] ^= 0x5a
					}
				}
				require.NoError(t, os.WriteFile(p, b, 0o600))
				st, err := persist.Open(dir)
				if err != nil {
					t.Logf("Open: %v", err)
					return
				}
				e, err := engine.New(engine.WithStore(st))
				if err != nil {
					t.Logf("New: %v", err)
					_ = st.Close()
					return
				}
				defer e.Close()
				// It opened: every key it knows must still show its spending.
				for i := range 200 {
					s, err := e.Status(fmt.Sprint("key-", i))
					if errors.Is(err, engine.ErrUnknownKey) {
						continue
					}
					require.NoError(t, err)
					require.LessOrEqual(t, s.Limits[0].Remaining, int64(40), "key-%d back at full quota", i)
				}
			})
		}
	}
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
