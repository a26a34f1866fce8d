package persist

import (
	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist/internal/codec"
	"github.com/dgraph-io/badger/v4"
)

func (s *Store) SetFormatForTest(v byte) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(metaVersion, []byte{v}) })
}

func (s *Store) PutRawForTest(id engine.KeyID, v []byte) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(codec.Key(id), v) })
}

// StateForTest returns the store's generation and count as Badger holds
// them (m/state), and the number of records it holds.
func (s *Store) StateForTest() (gen, count uint64, records int, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		v, err := getValue(txn, keyState)
		if err != nil {
			return err
		}
		if gen, count, err = parseState(v); err != nil {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(codec.KeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			records++
		}
		return nil
	})
	return gen, count, records, err
}

// SyncMetaForTest brings the meta file up to the last Save now.
func (s *Store) SyncMetaForTest() error {
	s.metaMu.Lock()
	m := s.want
	s.metaMu.Unlock()
	return s.meta.write(m)
}

var ErrHookForTest = errTest

// FailNextSaveForTest makes the next Save fail: before its transaction
// commits (landed false), or after (landed true: the records are in
// Badger, but Save reports an error, as when a sync's outcome is unknown).
func (s *Store) FailNextSaveForTest(landed bool) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.failNext = 1
	if landed {
		s.failNext = 2
	}
}

// SkipGuardForTest turns off Save's checks of the directory and the free
// space (not the look at Badger's memtable after a failed write), as if
// every fault came between a check and Badger's write.
func (s *Store) SkipGuardForTest() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.skipGuard = true
}
