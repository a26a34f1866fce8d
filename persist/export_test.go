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
