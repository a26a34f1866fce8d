package persist_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/stretchr/testify/require"
)

// backupKeys are the keys fillStore registers: every limit kind, a key
// revoked, a key rotated out (and the key it went to).
var backupKeys = []string{"credits", "window", "month", "rate", "multi", "revoked", "old", "new"}

// fillStore registers backupKeys in eng and spends from them.
func fillStore(t testing.TB, eng *engine.Engine) {
	t.Helper()
	for k, ls := range restartKeys() {
		require.NoError(t, eng.Register(ctx, k, ls...))
	}
	for i, k := range []string{"credits", "window", "month", "rate", "multi", "old"} {
		for j := range 37 + 11*i {
			d, err := eng.Consume(ctx, k, int64(1+j%3))
			require.NoError(t, err)
			require.True(t, d.Allowed, "%s %d", k, j)
		}
	}
	require.NoError(t, eng.Revoke(ctx, "revoked"))
	require.NoError(t, eng.Rotate(ctx, "old", "new", time.Hour))
	require.NoError(t, eng.TopUp(ctx, "new", 50))
}

func statuses(t *testing.T, eng *engine.Engine) map[string]engine.Status {
	t.Helper()
	m := map[string]engine.Status{}
	for _, k := range backupKeys {
		m[k] = statusOf(t, eng, k)
	}
	return m
}

// records returns every record of a store, by ID.
func records(t *testing.T, load func(func(engine.Record) error) error) map[engine.KeyID]engine.Record {
	t.Helper()
	m := map[engine.KeyID]engine.Record{}
	require.NoError(t, load(func(r engine.Record) error { m[r.ID] = r; return nil }))
	return m
}

// dirSums returns the SHA-256 of every file under dir.
func dirSums(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	m := map[string][32]byte{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		m[p] = sha256.Sum256(b)
		return err
	}))
	return m
}

// A backup of a closed directory (through a snapshot), restored into a new
// one and reopened: every record and every key's Status as they were.
func TestBackupRestoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{}
	clk.ns.Store(time.Date(2026, 11, 29, 10, 30, 0, 0, time.UTC).UnixNano())
	eng := open(t, dir, clk)
	fillStore(t, eng)
	before := statuses(t, eng)
	require.NoError(t, eng.Close())

	sums := dirSums(t, dir)
	snap, err := persist.OpenSnapshot(dir)
	require.NoError(t, err)
	want := records(t, func(fn func(engine.Record) error) error { return snap.Load(ctx, fn) })
	require.Len(t, want, len(backupKeys))
	var buf bytes.Buffer
	binfo, err := snap.Backup(&buf)
	require.NoError(t, err)
	require.NoError(t, snap.Close())
	require.Equal(t, sums, dirSums(t, dir), "a snapshot writes nothing in the directory")
	require.Equal(t, uint64(len(backupKeys)), binfo.Records)
	require.Equal(t, int64(buf.Len()), binfo.Bytes)
	require.Equal(t, sha256.Sum256(buf.Bytes()[:buf.Len()-sha256.Size]), binfo.SHA256)

	checked, err := persist.CheckBackup(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.Equal(t, binfo.Info, checked.Info)
	require.Equal(t, binfo.SHA256, checked.SHA256)

	to := filepath.Join(t.TempDir(), "restored")
	rinfo, err := persist.Restore(bytes.NewReader(buf.Bytes()), to)
	require.NoError(t, err)
	require.Equal(t, binfo.Info, rinfo.Info)

	st, err := persist.Open(to)
	require.NoError(t, err)
	require.Equal(t, want, records(t, func(fn func(engine.Record) error) error { return st.Load(ctx, fn) }))
	require.Equal(t, binfo.Info.ID, st.Info().ID)
	eng, err = engine.New(engine.WithStore(st), engine.WithClock(clk.Now))
	require.NoError(t, err)
	defer eng.Close()
	require.Equal(t, before, statuses(t, eng))
	d, _ := eng.Consume(ctx, "revoked", 1)
	require.Equal(t, engine.Revoked, d.Reason)
	d, _ = eng.Consume(ctx, "old", 1)
	require.True(t, d.Allowed, "the rotated-out key still has its grace")
}

// A running engine's store backs up while Consume goes on; the backup,
// restored, holds what the store held at that moment (exact mode: every
// grant durable).
func TestBackupWhileRunning(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{}
	clk.ns.Store(time.Date(2026, 11, 29, 10, 30, 0, 0, time.UTC).UnixNano())
	st, err := persist.Open(dir)
	require.NoError(t, err)
	eng, err := engine.New(engine.WithStore(st), engine.WithClock(clk.Now), engine.WithLease(engine.LeaseOptions{Exact: true}))
	require.NoError(t, err)
	defer eng.Close()
	fillStore(t, eng)
	for i := range 100 {
		require.NoError(t, eng.Register(ctx, "bulk-"+string(rune('a'+i%26))+string(rune('a'+i/26)), engine.Credits(100)))
	}

	// Consumers run all along the backup, and are never stopped by it.
	var stop atomic.Bool
	var granted atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				d, err := eng.Consume(ctx, "multi", 1)
				if err != nil || !d.Allowed {
					return
				}
				granted.Add(1)
			}
		}()
	}
	for granted.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	var buf bytes.Buffer
	before, start := granted.Load(), time.Now()
	_, err = st.Backup(&buf)
	require.NoError(t, err)
	t.Logf("%d grants during the backup (%v, %d bytes)", granted.Load()-before, time.Since(start), buf.Len())
	stop.Store(true)
	wg.Wait()

	to := t.TempDir() // empty: restored into
	_, err = persist.Restore(bytes.NewReader(buf.Bytes()), to)
	require.NoError(t, err)
	st2, err := persist.Open(to)
	require.NoError(t, err)
	eng2, err := engine.New(engine.WithStore(st2), engine.WithClock(clk.Now))
	require.NoError(t, err)
	defer eng2.Close()
	for _, k := range backupKeys {
		if k == "multi" {
			continue
		}
		require.Equal(t, statusOf(t, eng, k), statusOf(t, eng2, k), k)
	}
	// multi moved on during the backup: the restored one is between the
	// state before the consumers and the state now.
	now, was := statusOf(t, eng, "multi").Limits[0].Remaining, statusOf(t, eng2, "multi").Limits[0].Remaining
	require.GreaterOrEqual(t, was, now)
	require.LessOrEqual(t, was-now, granted.Load())
}

// Damage to a backup is found before anything is written, never a panic.
func TestDamagedBackupIsRefused(t *testing.T) {
	dir := t.TempDir()
	eng := open(t, dir, nil)
	fillStore(t, eng)
	require.NoError(t, eng.Close())
	snap, err := persist.OpenSnapshot(dir)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = snap.Backup(&buf)
	require.NoError(t, err)
	require.NoError(t, snap.Close())
	good := buf.Bytes()

	cases := map[string][]byte{
		"empty":     {},
		"truncated": good[:len(good)-1],
		"header":    good[:18],
		"no stream": append(append([]byte(nil), good[:18]...), good[len(good)-80:]...),
		"appended":  append(append([]byte(nil), good...), 0),
	}
	for _, off := range []int{0, 8, 9, 12, 18, 30, len(good) / 2, len(good) - 81, len(good) - 70, len(good) - 1} {
		b := append([]byte(nil), good...)
		b[off] ^= 0x40
		cases["flipped at "+strconv.Itoa(off)] = b
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := persist.CheckBackup(bytes.NewReader(b))
			require.Error(t, err)
			require.True(t, errors.Is(err, persist.ErrCorrupt) || errors.Is(err, persist.ErrVersion), "%v", err)
			to := filepath.Join(t.TempDir(), "restored")
			_, err = persist.Restore(bytes.NewReader(b), to)
			require.Error(t, err)
			_, serr := os.Stat(to)
			require.ErrorIs(t, serr, fs.ErrNotExist, "nothing written")
			left, _ := filepath.Glob(filepath.Join(filepath.Dir(to), ".allot-restore-*"))
			require.Empty(t, left)
		})
	}

	// Only into an empty or missing directory.
	_, err = persist.Restore(bytes.NewReader(good), dir)
	require.ErrorContains(t, err, "not empty")
}

// A directory that a Store holds, in this process or another, is ErrLocked
// for a snapshot, and a snapshot in progress keeps Open out.
func TestSnapshotOfHeldDirectory(t *testing.T) {
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	_, err = persist.OpenSnapshot(dir)
	require.ErrorIs(t, err, persist.ErrLocked)
	require.ErrorContains(t, err, dir+" is in use by a running process (pid ")
	require.ErrorContains(t, err, "(*persist.Store).Backup")
	require.NoError(t, st.Close())

	snap, err := persist.OpenSnapshot(dir)
	require.NoError(t, err)
	require.NoError(t, snap.Close())

	_, err = persist.OpenSnapshot(t.TempDir())
	require.ErrorIs(t, err, persist.ErrCorrupt)
	require.ErrorContains(t, err, "holds no store")
	_, err = persist.OpenSnapshot(filepath.Join(t.TempDir(), "missing"))
	require.ErrorIs(t, err, fs.ErrNotExist)
}

// A snapshot of a damaged directory fails as Open would, naming the
// directory (not its copy), and leaves it as it was.
func TestSnapshotOfDamagedDirectory(t *testing.T) {
	dir := t.TempDir()
	eng := open(t, dir, nil)
	fillStore(t, eng)
	require.NoError(t, eng.Close())
	require.NoError(t, os.Remove(filepath.Join(dir, "MANIFEST")))
	sums := dirSums(t, dir)
	_, err := persist.OpenSnapshot(dir)
	require.ErrorIs(t, err, persist.ErrCorrupt)
	require.ErrorContains(t, err, "MANIFEST missing in "+dir)
	require.NotContains(t, err.Error(), os.TempDir()+"/allot-snapshot-")
	require.Equal(t, sums, dirSums(t, dir))
}

// The time to back up and restore a large store: ALLOT_BACKUP_N keys
// (for example 1000000), each with a Credits and a window limit.
//
//	ALLOT_BACKUP_N=1000000 go test -run TestBackupTiming -v ./persist
func TestBackupTiming(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ALLOT_BACKUP_N"))
	if n == 0 {
		t.Skip("set ALLOT_BACKUP_N")
	}
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	start := time.Now()
	limits := []engine.Limit{engine.Credits(1000), engine.PerWindow(100, time.Hour)}
	batch := make([]engine.Record, 0, 1024)
	for i := range n {
		var id engine.KeyID
		copy(id[:], strconv.Itoa(i))
		id[31] = byte(i)
		id = sha256.Sum256(id[:])
		batch = append(batch, engine.Record{ID: id, Limits: limits, Counters: []uint64{uint64(i % 1000), uint64(i % 100)}})
		if len(batch) == cap(batch) || i == n-1 {
			require.NoError(t, st.Save(ctx, batch...))
			batch = batch[:0]
		}
	}
	t.Logf("%d records written in %v", n, time.Since(start).Round(time.Millisecond))
	file := filepath.Join(t.TempDir(), "b")
	start = time.Now()
	info, err := st.BackupFile(file)
	require.NoError(t, err)
	t.Logf("backup of the open store (Store.BackupFile): %v, %d bytes", time.Since(start).Round(time.Millisecond), info.Bytes)
	require.EqualValues(t, n, info.Records)
	require.NoError(t, st.Close())

	start = time.Now()
	snap, err := persist.OpenSnapshot(dir)
	require.NoError(t, err)
	opened := time.Since(start)
	_, err = snap.BackupFile(file)
	require.NoError(t, err)
	require.NoError(t, snap.Close())
	t.Logf("backup of the closed directory (OpenSnapshot, BackupFile, Close): %v (%v of it the copy and Open)", time.Since(start).Round(time.Millisecond), opened.Round(time.Millisecond))

	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	start = time.Now()
	_, err = persist.CheckBackup(f)
	require.NoError(t, err)
	t.Logf("CheckBackup: %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	to := filepath.Join(t.TempDir(), "restored")
	_, err = persist.Restore(f, to)
	require.NoError(t, err)
	t.Logf("restore (check, load, open, close): %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	st, err = persist.Open(to)
	require.NoError(t, err)
	got := 0
	require.NoError(t, st.Load(ctx, func(engine.Record) error { got++; return nil }))
	require.Equal(t, n, got)
	require.NoError(t, st.Close())
	t.Logf("open and load of the restored store: %v", time.Since(start).Round(time.Millisecond))
}
