package persist_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/stretchr/testify/require"
)

// metaStore builds a closed store of 12 keys, some spent, one revoked.
func metaStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	eng := open(t, dir, nil)
	for i := range 12 {
		k := fmt.Sprint("key-", i)
		require.NoError(t, eng.Register(ctx, k, engine.Credits(100)))
		_, err := eng.Consume(ctx, k, 60)
		require.NoError(t, err)
	}
	require.NoError(t, eng.Revoke(ctx, "key-3"))
	require.NoError(t, eng.Close())
	return dir
}

// requireWhole opens dir and checks that every key of metaStore is there
// as it was left.
func requireWhole(t *testing.T, dir string) {
	t.Helper()
	eng := open(t, dir, nil)
	defer eng.Close()
	for i := range 12 {
		s := statusOf(t, eng, fmt.Sprint("key-", i))
		require.Equal(t, i == 3, s.Revoked)
		require.LessOrEqual(t, s.Limits[0].Remaining, int64(40))
	}
}

// A damaged or deleted MANIFEST made Open succeed with no records at all,
// the revoked key included; a provisioning job re-registering the keys it
// could not find would have given them their full quota back. Now Open
// refuses, says what it found, and keeps refusing; Badger's table files are
// kept (a deleted MANIFEST is caught before Badger would delete them).
func TestDamagedManifestIsRefused(t *testing.T) {
	for _, damage := range []string{"truncated by 8 bytes", "deleted"} {
		t.Run(damage, func(t *testing.T) {
			dir := metaStore(t)
			mf := filepath.Join(dir, "MANIFEST")
			if damage == "deleted" {
				require.NoError(t, os.Remove(mf))
			} else {
				b, err := os.ReadFile(mf)
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(mf, b[:len(b)-8], 0o600))
			}
			for range 2 { // and again: a refused Open does not make the next one pass
				_, err := persist.Open(dir)
				require.ErrorIs(t, err, persist.ErrCorrupt)
				t.Log(err)
				require.Contains(t, err.Error(), "12 records")
			}
			tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
			kept, _ := filepath.Glob(filepath.Join(dir, "allot-kept", "*.sst"))
			require.NotEmpty(t, append(tables, kept...), "the table files are still there")
		})
	}
}

// An operator who accepts a loss can open the store as it stands.
func TestAcceptLoss(t *testing.T) {
	for _, damage := range []string{"truncated by 8 bytes", "deleted"} {
		t.Run(damage, func(t *testing.T) {
			dir := metaStore(t)
			mf := filepath.Join(dir, "MANIFEST")
			if damage == "deleted" {
				require.NoError(t, os.Remove(mf))
			} else {
				b, err := os.ReadFile(mf)
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(mf, b[:len(b)-8], 0o600))
			}
			st, err := persist.Open(dir, persist.WithAcceptLoss())
			require.NoError(t, err)
			eng, err := engine.New(engine.WithStore(st))
			require.NoError(t, err)
			_, err = eng.Status("key-0")
			require.ErrorIs(t, err, engine.ErrUnknownKey)
			require.NoError(t, eng.Close())
			st, err = persist.Open(dir)
			require.NoError(t, err, "accepted once, it opens from then on")
			require.NoError(t, st.Close())
		})
	}
}

// Badger's m/state (in every Save's transaction) counts records, not
// writes: a Save of an existing ID, or the same ID twice in one Save, does
// not count twice; a Save that failed is looked up by the next one, whether
// its transaction landed or not.
func TestRecordCount(t *testing.T) {
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	rec := func(k string) engine.Record {
		return engine.Record{ID: engine.IDOf(k), Limits: []engine.Limit{engine.Credits(10)}, Counters: []uint64{3}}
	}
	check := func(records int) {
		t.Helper()
		_, count, n, err := st.StateForTest()
		require.NoError(t, err)
		require.Equal(t, records, n)
		require.Equal(t, uint64(records), count)
	}
	require.NoError(t, st.Save(ctx, rec("a"), rec("b")))
	require.NoError(t, st.Save(ctx, rec("a"), rec("a"), rec("c")))
	require.NoError(t, st.Save(ctx, rec("b")))
	check(3)
	st.FailNextSaveForTest(false) // not landed
	require.ErrorIs(t, st.Save(ctx, rec("d"), rec("a")), persist.ErrHookForTest)
	st.FailNextSaveForTest(true) // landed, but reported failed
	require.ErrorIs(t, st.Save(ctx, rec("e"), rec("b")), persist.ErrHookForTest)
	require.NoError(t, st.Save(ctx, rec("a")))
	check(4) // a, b, c, e
	st.FailNextSaveForTest(true)
	require.ErrorIs(t, st.Save(ctx, rec("f")), persist.ErrHookForTest)
	require.NoError(t, st.Save(ctx, rec("f"), rec("g")))
	check(6)
	st.FailNextSaveForTest(false)
	require.ErrorIs(t, st.Save(ctx, rec("h")), persist.ErrHookForTest)
	require.NoError(t, st.Save(ctx, rec("h")))
	check(7)
	require.NoError(t, st.Close())
	st, err = persist.Open(dir)
	require.NoError(t, err)
	check(7)
	require.NoError(t, st.Save(ctx, rec("a"), rec("i")))
	check(8)
	require.NoError(t, st.Close())
}

// The meta file and Badger are not written together: the meta file only
// takes a state once Badger's transaction of it is durable. A meta file
// behind Badger (a crash between the two) opens; one ahead of it (Badger's
// files older than the meta file: writes lost, or an old copy restored
// under a newer meta file) is refused.
func TestMetaFileOrder(t *testing.T) {
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	for i := range 5 {
		require.NoError(t, eng.Register(ctx, fmt.Sprint("key-", i), engine.Credits(100)))
	}
	require.NoError(t, st.SyncMetaForTest())
	early := t.TempDir()
	require.NoError(t, os.CopyFS(early, os.DirFS(dir))) // Badger and meta file at 5 keys, as a crash leaves them
	for i := 5; i < 12; i++ {
		require.NoError(t, eng.Register(ctx, fmt.Sprint("key-", i), engine.Credits(100)))
	}
	require.NoError(t, st.SyncMetaForTest())
	late := t.TempDir()
	require.NoError(t, os.CopyFS(late, os.DirFS(dir)))
	require.NoError(t, eng.Close())

	swap := func(badger, meta string) string {
		d := t.TempDir()
		require.NoError(t, os.CopyFS(d, os.DirFS(badger)))
		b, err := os.ReadFile(filepath.Join(meta, "allot.meta"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(d, "allot.meta"), b, 0o600))
		return d
	}
	// Behind: the crash came after Badger's commits, before the meta file
	// caught up.
	for _, d := range []string{swap(late, early), swap(dir, early)} {
		st, err := persist.Open(d)
		require.NoError(t, err)
		eng, err := engine.New(engine.WithStore(st))
		require.NoError(t, err)
		require.Equal(t, 12, eng.Len())
		require.NoError(t, eng.Close())
	}
	// Ahead: seven registrations that were durable are gone.
	_, err = persist.Open(swap(early, late))
	require.ErrorIs(t, err, persist.ErrCorrupt)
	require.Contains(t, err.Error(), "durable writes lost")
	t.Log(err)

	// A creation that died before the rename leaves a temporary file only;
	// a meta file that is missing (Badger has a generation) or another
	// store's is refused.
	require.NoError(t, os.WriteFile(filepath.Join(early, "allot.meta.tmp"), []byte("half"), 0o600))
	st, err = persist.Open(early)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	d := swap(late, late)
	require.NoError(t, os.Remove(filepath.Join(d, "allot.meta")))
	_, err = persist.Open(d)
	require.ErrorIs(t, err, persist.ErrCorrupt)
	require.Contains(t, err.Error(), "allot.meta is missing")
	other := t.TempDir()
	st, err = persist.Open(other)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	_, err = persist.Open(swap(late, other))
	require.ErrorIs(t, err, persist.ErrCorrupt)
	require.Contains(t, err.Error(), "another store")
}

// A torn write damages one slot of the meta file: the other is read.
func TestMetaFileSlots(t *testing.T) {
	dir := metaStore(t)
	path := filepath.Join(dir, "allot.meta")
	orig, err := os.ReadFile(path)
	require.NoError(t, err)
	for slot := range 2 {
		b := append([]byte(nil), orig...)
		b[slot*512+30] ^= 0xff
		require.NoError(t, os.WriteFile(path, b, 0o600))
		requireWhole(t, dir)
	}
	b := append([]byte(nil), orig...)
	b[30] ^= 0xff
	b[512+30] ^= 0xff
	require.NoError(t, os.WriteFile(path, b, 0o600))
	_, err = persist.Open(dir)
	require.ErrorIs(t, err, persist.ErrCorrupt)
	require.True(t, errors.Is(err, persist.ErrCorrupt))
	require.Contains(t, err.Error(), "allot.meta damaged")
}

// A MANIFEST that lost its last change set (a flush's table) while the
// write-ahead file kept newer writes: Badger drops the table as a leftover,
// and the records in it come back at older counters, with every count
// intact; the store would grant again what was spent. Open reads the
// dropped table first, and refuses.
func TestDroppedTableIsRefused(t *testing.T) {
	dir := t.TempDir()
	rec := func(k string, spent uint64) engine.Record {
		return engine.Record{ID: engine.IDOf(k), Limits: []engine.Limit{engine.Credits(1000)}, Counters: []uint64{spent}}
	}
	for _, spent := range []uint64{10, 900} { // each Close flushes a table
		st, err := persist.Open(dir)
		require.NoError(t, err)
		for i := range 20 {
			require.NoError(t, st.Save(ctx, rec(fmt.Sprint("key-", i), spent)))
		}
		require.NoError(t, st.Close())
	}
	st, err := persist.Open(dir)
	require.NoError(t, err)
	require.NoError(t, st.Save(ctx, rec("other", 1))) // newer writes, in the write-ahead file only
	require.NoError(t, st.SyncMetaForTest())
	crashed := t.TempDir()
	require.NoError(t, os.CopyFS(crashed, os.DirFS(dir)))
	require.NoError(t, st.Close())

	// Cut the MANIFEST's last change set: the second table's creation.
	mf := filepath.Join(crashed, "MANIFEST")
	b, err := os.ReadFile(mf)
	require.NoError(t, err)
	last := 8
	for off := 8; off+8 <= len(b); {
		n := int(binary.BigEndian.Uint32(b[off:]))
		if off+8+n > len(b) {
			break
		}
		last, off = off, off+8+n
	}
	require.NoError(t, os.WriteFile(mf, b[:last], 0o600))

	for range 2 { // and again: the dropped table is kept, and read again
		_, err = persist.Open(crashed)
		require.ErrorIs(t, err, persist.ErrCorrupt)
		require.Contains(t, err.Error(), "dropped")
		t.Log(err)
	}
	st, err = persist.Open(crashed, persist.WithAcceptLoss())
	require.NoError(t, err)
	require.NoError(t, st.Close())
	st, err = persist.Open(crashed)
	require.NoError(t, err, "accepted once, it opens from then on")
	require.NoError(t, st.Close())
	lost, _ := filepath.Glob(filepath.Join(crashed, "allot-lost-*", "*.sst"))
	require.NotEmpty(t, lost, "what was dropped is still there to look at")
}
