package persist_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/stretchr/testify/require"
)

// credits is a record of key with one Credits limit.
func credits(key string, spent uint64) engine.Record {
	return engine.Record{ID: engine.IDOf(key), Limits: []engine.Limit{engine.Credits(1000)}, Counters: []uint64{spent}}
}

func deleted(key string) engine.Record { return engine.Record{ID: engine.IDOf(key), Deleted: true} }

// requireCount checks that Badger holds records records and that its own
// count (m/state) says so.
func requireCount(t *testing.T, st *persist.Store, records int) {
	t.Helper()
	_, count, n, err := st.StateForTest()
	require.NoError(t, err)
	require.Equal(t, records, n, "records in Badger")
	require.Equal(t, uint64(records), count, "m/state's count")
}

// A deletion removes the record in the Save's transaction and takes it out
// of the count: a record that is not there, the same key written and
// deleted in one Save (the last record decides, as in Badger's
// transaction), and deletions in Saves that failed, landed or not, all
// leave the count exact; every Open after that passes its checks.
func TestRecordCountWithDeletes(t *testing.T) {
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	require.NoError(t, st.Save(ctx, credits("a", 1), credits("b", 1), credits("c", 1), credits("d", 1)))
	require.NoError(t, st.Save(ctx, deleted("a"), credits("b", 2)))
	requireCount(t, st, 3) // b c d
	require.NoError(t, st.Save(ctx, deleted("a"), deleted("nowhere")))
	requireCount(t, st, 3)
	require.NoError(t, st.Save(ctx, credits("e", 1), deleted("e"), deleted("b"), credits("b", 3)))
	requireCount(t, st, 3) // b c d
	require.NoError(t, st.Save(ctx, deleted("c"), credits("c", 4), deleted("c")))
	requireCount(t, st, 2) // b d

	st.FailNextSaveForTest(false) // not landed: d stays
	require.ErrorIs(t, st.Save(ctx, deleted("d"), credits("f", 1)), persist.ErrHookForTest)
	require.NoError(t, st.Save(ctx, credits("b", 5)))
	requireCount(t, st, 2)       // b d
	st.FailNextSaveForTest(true) // landed: d goes, g comes
	require.ErrorIs(t, st.Save(ctx, deleted("d"), credits("g", 1)), persist.ErrHookForTest)
	require.NoError(t, st.Save(ctx, credits("b", 6)))
	requireCount(t, st, 2)       // b g
	st.FailNextSaveForTest(true) // landed; the next Save writes the key again
	require.ErrorIs(t, st.Save(ctx, deleted("g")), persist.ErrHookForTest)
	require.NoError(t, st.Save(ctx, credits("g", 2)))
	requireCount(t, st, 2)        // b g
	st.FailNextSaveForTest(false) // not landed; the next Save deletes it again
	require.ErrorIs(t, st.Save(ctx, deleted("g")), persist.ErrHookForTest)
	require.NoError(t, st.Save(ctx, deleted("g")))
	requireCount(t, st, 1) // b
	require.NoError(t, st.Close())

	for range 2 {
		st, err = persist.Open(dir)
		require.NoError(t, err)
		requireCount(t, st, 1)
		var ids []engine.KeyID
		require.NoError(t, st.Load(ctx, func(r engine.Record) error {
			ids = append(ids, r.ID)
			return nil
		}))
		require.Equal(t, []engine.KeyID{engine.IDOf("b")}, ids, "Load never returns a deleted record")
		require.NoError(t, st.Save(ctx, credits("h", 1), deleted("h"), credits("i", 1)))
		require.NoError(t, st.Save(ctx, deleted("i")))
		requireCount(t, st, 1)
		require.NoError(t, st.Close())
	}
}

// The meta file trails Badger (it is written after Badger's transaction):
// a crash after Saves that deleted records leaves it counting more records
// than Badger holds. Such a store opens; one whose meta file is at Badger's
// generation and counts more is refused.
func TestMetaFileBehindDeletions(t *testing.T) {
	dir := t.TempDir()
	eng, st := openStore(t, dir)
	for i := range 12 {
		require.NoError(t, eng.Register(ctx, fmt.Sprint("key-", i), engine.Credits(100)))
	}
	require.NoError(t, st.SyncMetaForTest())
	early, err := os.ReadFile(filepath.Join(dir, "allot.meta")) // 12 records
	require.NoError(t, err)
	for i := range 5 {
		require.NoError(t, eng.Delete(ctx, fmt.Sprint("key-", i)))
	}
	require.NoError(t, eng.Close())

	behind := t.TempDir()
	require.NoError(t, os.CopyFS(behind, os.DirFS(dir)))
	require.NoError(t, os.WriteFile(filepath.Join(behind, "allot.meta"), early, 0o600))
	eng = open(t, behind, nil)
	require.Equal(t, 7, eng.Len())
	require.NoError(t, eng.Close())
	eng = open(t, dir, nil)
	require.Equal(t, 7, eng.Len())
	require.NoError(t, eng.Close())
}

// openStore is open, and returns the store too.
func openStore(t *testing.T, dir string) (*engine.Engine, *persist.Store) {
	t.Helper()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	return eng, st
}

// A table that Badger drops at Open (not in its MANIFEST: a compaction
// whose inputs a crash left behind) may hold a record that the store has
// deleted since; that is no loss, and Open accepts it. (A record lost
// instead shows in the counts: TestDamagedManifestIsRefused,
// TestDamagedFiles.)
func TestDeletedRecordInDroppedTable(t *testing.T) {
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	require.NoError(t, st.Save(ctx, credits("gone", 10), credits("kept", 10)))
	require.NoError(t, st.Close()) // a table holds both records
	old, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	require.NotEmpty(t, old)
	saved := t.TempDir()
	require.NoError(t, os.CopyFS(saved, os.DirFS(dir))) // a copy: Badger empties a table file before it deletes it
	st, err = persist.Open(dir)
	require.NoError(t, err)
	require.NoError(t, st.Save(ctx, deleted("gone")))
	require.NoError(t, st.Compact(ctx)) // the tables are rewritten, the old ones deleted
	require.NoError(t, st.Close())
	for _, f := range old {
		_, err := os.Stat(f)
		require.ErrorIs(t, err, fs.ErrNotExist, "compacted away")
		b, err := os.ReadFile(filepath.Join(saved, filepath.Base(f)))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(f, b, 0o600)) // as a crash before the deletion leaves it
	}
	st, err = persist.Open(dir)
	require.NoError(t, err)
	requireCount(t, st, 1)
	require.NoError(t, st.Close())
}

// Delete, then kill -9 the instant Delete returns: after the restart the
// key is unknown, and a Register of the name starts from nothing. After a
// Compact, no file of the directory holds the deleted keys' digests, raw or
// in hex (the keys kept are still there: the search sees digests).
func TestDeleteSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	eng := open(t, dir, nil)
	victims := []string{"victim-0", "victim-1", "victim-2"}
	for _, k := range append([]string{"kept"}, victims...) {
		require.NoError(t, eng.Register(ctx, k, engine.Credits(10), engine.PerWindow(5, time.Hour)))
		_, err := eng.Consume(ctx, k, 4)
		require.NoError(t, err)
	}
	require.NoError(t, eng.Revoke(ctx, "victim-2"))
	require.NoError(t, eng.Close())
	for i, k := range victims {
		if i == 1 { // one victim in a table, the others in the write-ahead file only
			st, err := persist.Open(dir)
			require.NoError(t, err)
			require.NoError(t, st.Close())
		}
		killAfter(t, dir, "delete", k)
	}

	eng, st := openStore(t, dir)
	for _, k := range victims {
		d, err := eng.Consume(ctx, k, 1)
		require.NoError(t, err)
		require.Equal(t, engine.UnknownKey, d.Reason, k)
		_, err = eng.Status(k)
		require.ErrorIs(t, err, engine.ErrUnknownKey)
	}
	require.Equal(t, 1, eng.Len())
	require.NoError(t, st.Compact(ctx))
	require.NoError(t, eng.Close())
	holders := digestHolders(t, dir, append([]string{"kept"}, victims...))
	require.NotEmpty(t, holders["kept"], "the search finds the digest of a key kept")
	for _, k := range victims {
		require.Empty(t, holders[k], "%s's digest is still in the directory", k)
	}

	eng = open(t, dir, nil)
	defer eng.Close()
	for _, k := range victims {
		require.NoError(t, eng.Register(ctx, k, engine.Credits(10), engine.PerWindow(5, time.Hour)))
		s := statusOf(t, eng, k)
		require.False(t, s.Revoked, k)
		require.Equal(t, []int64{10, 5}, []int64{s.Limits[0].Remaining, s.Limits[1].Remaining}, "%s starts from nothing", k)
	}
	require.Equal(t, int64(6), statusOf(t, eng, "kept").Limits[0].Remaining)
}

// digestHolders returns, for each key, the files of dir (and below) that
// hold its digest's 32 bytes or their hex.
func digestHolders(t *testing.T, dir string, keys []string) map[string][]string {
	t.Helper()
	holders := map[string][]string{}
	err := eachFile(dir, func(p string, b []byte) error {
		for _, k := range keys {
			id := engine.IDOf(k)
			if bytes.Contains(b, id[:]) || bytes.Contains(b, []byte(hex.EncodeToString(id[:]))) || bytes.Contains(b, []byte(hex.EncodeToString(id[:])[:16])) {
				holders[k] = append(holders[k], filepath.Base(p))
			}
		}
		return nil
	})
	require.NoError(t, err)
	return holders
}

// churnCycle registers a new key, consumes from it and deletes it.
func churnCycle(eng *engine.Engine) error {
	key, err := engine.NewKey("sk_churn")
	if err != nil {
		return err
	}
	if err := eng.Register(ctx, key, engine.Credits(10)); err != nil {
		return err
	}
	if d, err := eng.Consume(ctx, key, 1); err != nil || !d.Allowed {
		return fmt.Errorf("consume: %v, %v", d, err)
	}
	return eng.Delete(ctx, key)
}

// eachFile calls fn with the path and contents of every file in dir and
// below.
func eachFile(dir string, fn func(path string, b []byte) error) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return fn(p, b)
	})
}

// dirSize returns the bytes dir's files take on disk (allocated blocks, as
// du counts them), their apparent size, and the bytes of its table files.
func dirSize(t *testing.T, dir string) (disk, apparent, tables int64) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			return err
		}
		disk += st.Blocks * 512
		apparent += st.Size
		if filepath.Ext(p) == ".sst" {
			tables += st.Size
		}
		return nil
	})
	require.NoError(t, err)
	return disk, apparent, tables
}

// Churn through a persist store: cycles of NewKey, Register, Consume and
// Delete. After a Compact the directory takes no more than twice what it
// took after the first 10,000 cycles, and the store holds no record.
//
//	ALLOT_PERSIST_CHURN=1000000 go test -run TestPersistChurn -v ./persist
func TestPersistChurn(t *testing.T) {
	const first = 10_000
	n := 20_000
	if s := os.Getenv("ALLOT_PERSIST_CHURN"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(t, err)
	}
	if testing.Short() {
		n = first + 1000
	}
	n = max(n, first+1)
	dir := t.TempDir()
	eng, st := openStore(t, dir)
	defer eng.Close()
	start := time.Now()
	// Many goroutines, so that registrations and deletions share rounds
	// (one synced transaction each), as they would in a service.
	const workers = 32
	churn := func(k int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Go(func() {
				for next.Add(1) <= int64(k) {
					if err := churnCycle(eng); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	}
	// measure logs the directory's size, compacts, and returns its size
	// on disk after that.
	measure := func(cycles int) int64 {
		disk, _, tables := dirSize(t, dir)
		t0 := time.Now()
		require.NoError(t, st.Compact(ctx))
		took := time.Since(t0)
		requireCount(t, st, 0)
		after, apparent, tablesAfter := dirSize(t, dir)
		t.Logf("after %d cycles (%v): %d bytes on disk (%d in tables); after a Compact (%v): %d bytes on disk (%d apparent), %d in tables",
			cycles, time.Since(start).Round(time.Millisecond), disk, tables, took.Round(time.Millisecond), after, apparent, tablesAfter)
		return after
	}
	churn(first)
	base := measure(first)
	for done := first; done < n; {
		k := min(100_000, n-done)
		churn(k)
		if done += k; done < n && os.Getenv("ALLOT_PERSIST_CHURN") == "" {
			continue
		}
		size := measure(done)
		require.Zero(t, eng.Len())
		require.LessOrEqual(t, size, 2*base, "the directory grew past twice its size after %d cycles", first)
	}
	took := time.Since(start)
	t.Logf("%d cycles in %v (%.1f µs a cycle, %d goroutines)", n, took.Round(time.Millisecond), float64(took.Microseconds())/float64(n), workers)
	files, _ := os.ReadDir(dir)
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, f.Name())
	}
	slices.Sort(names)
	t.Logf("files: %v", names)
}

// Compact while keys are registered, consumed and deleted: every call
// works (Saves wait while Badger flushes its write-ahead file, then go on
// beside the merge), and the store reopens with what was left.
func TestCompactWhileBusy(t *testing.T) {
	dir := t.TempDir()
	eng, st := openStore(t, dir)
	require.NoError(t, eng.Register(ctx, "steady", engine.Credits(1_000_000)))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	var cycles, grants atomic.Int64
	progress := make(chan struct{}, 64)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := churnCycle(eng); err != nil {
					errs <- err
					return
				}
				cycles.Add(1)
				d, err := eng.Consume(ctx, "steady", 1)
				if err != nil || !d.Allowed {
					errs <- fmt.Errorf("consume: %v, %v", d, err)
					return
				}
				grants.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		})
	}
	for range 5 {
		for range 50 { // cycles between compactions
			select {
			case <-progress:
			case err := <-errs:
				require.NoError(t, err)
			}
		}
		require.NoError(t, st.Compact(ctx))
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 1, eng.Len())
	require.NoError(t, eng.Close())
	eng, _ = openStore(t, dir)
	defer eng.Close()
	require.Equal(t, 1, eng.Len())
	require.Equal(t, 1_000_000-grants.Load(), statusOf(t, eng, "steady").Limits[0].Remaining)
	t.Logf("%d cycles and %d grants beside 5 compactions", cycles.Load(), grants.Load())
}
