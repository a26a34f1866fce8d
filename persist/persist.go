// Package persist keeps an allot engine's keys in a Badger database in a
// local directory, so that quotas survive restarts and crashes.
//
//	st, err := persist.Open("/var/lib/myapp/quotas")
//	eng, err := engine.New(engine.WithStore(st))
//	defer eng.Close() // writes back unused reservations, closes the store
//
// What is durable, and when:
//
//   - Register, Revoke, Rotate, TopUp and SetLimits are synced to disk before
//     they return. A revocation survives kill -9 the instant Revoke returns.
//   - Consume, in lease mode (the default), grants units only from a
//     reservation that is already synced; the next reservation is written
//     in the background, many keys to one synced transaction, so Consume
//     does not wait for the disk in steady state. A crash loses at most the
//     unused rest of each reservation (see engine.LeaseOptions: at most
//     MaxChunk units per limit of each key in use), and never grants a
//     unit twice. In exact mode (WithExact) every grant is durable before
//     Consume returns.
//   - Close (through the engine's Close) writes every counter as it is: a
//     restart after a clean Close loses nothing.
//
// Keys are stored under their SHA-256 digest; no raw API key reaches the
// directory. Records carry a format version and a checksum: a damaged or
// unknown record makes Open fail, it never resets a counter to full.
package persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist/internal/codec"
	"github.com/dgraph-io/badger/v4"
	badgeropts "github.com/dgraph-io/badger/v4/options"
)

// Store is a Badger-backed engine.Store. Create it with Open and hand it to
// engine.WithStore; the engine's Close closes it. Its methods are safe for
// concurrent use.
type Store struct {
	db    *badger.DB
	opts  options
	mu    sync.RWMutex
	close bool
}

var metaVersion = []byte("m/format")

// Open opens (creating if needed) the store in dir. It fails with ErrLocked
// if another process holds dir, and with an error matching ErrCorrupt or
// ErrVersion if the files or records cannot be read; it never panics on a
// damaged directory.
func Open(dir string, opts ...Option) (st *Store, err error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(logger{o.logger}).
		WithNumVersionsToKeep(1).
		WithMemTableSize(16 << 20).     // a write-ahead file of 32 MiB, not 128
		WithValueLogFileSize(16 << 20). // values never reach the value log
		WithValueThreshold(1 << 10).    // records stay in the LSM tree, out of the value log
		// Uncompressed tables: checkTables verifies every block before Badger
		// reads one (Badger's own checks panic on some damage, in goroutines
		// of its own). Records are small; compression would gain little.
		WithCompression(badgeropts.None)
	if o.badger != nil {
		bo = o.badger(bo)
	}
	if bo.BypassLockGuard || !bo.SyncWrites {
		return nil, fmt.Errorf("%w: BypassLockGuard and unsynced writes void the store's guarantees", ErrUnsupported)
	}
	defer func() {
		if p := recover(); p != nil {
			st, err = nil, fmt.Errorf("%w: opening %s: %v", ErrCorrupt, dir, p)
		}
	}()
	if o.verify {
		if err := checkTables(dir, bo); err != nil {
			return nil, err
		}
	}
	// A kill while Badger creates a file can leave it zero-length: a .mem
	// (dgraph-io/badger#2207) or the .vlog that every Open creates. Badger
	// then fails the next Open (it "opens" the empty file as an existing
	// one, and reports the z.NewFile it gets back as an error); the Open
	// after that works. Such a file holds no data: remove it first.
	removeEmptyFiles(dir)
	db, err := badger.Open(bo)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("%w: opening %s: %v", ErrCorrupt, dir, err)
	}
	s := &Store{db: db, opts: o}
	if err := s.checkFormat(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// removeEmptyFiles removes the zero-length memtable and value log files of
// dir and reports whether there were any. Badger writes both through a
// memory map of a file it first creates and then sizes: zero length means
// it died in between, before a byte was written.
func removeEmptyFiles(dir string) bool {
	removed := false
	for _, pattern := range []string{"*.mem", "*.vlog"} {
		files, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, f := range files {
			if fi, err := os.Lstat(f); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 && os.Remove(f) == nil {
				removed = true
			}
		}
	}
	return removed
}

// checkFormat writes the format version into a new store, and checks it in
// an old one.
func (s *Store) checkFormat() error {
	return s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(metaVersion)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set(metaVersion, []byte{codec.FormatVersion})
		}
		if err != nil {
			return fmt.Errorf("%w: reading the format version: %v", ErrCorrupt, err)
		}
		return item.Value(func(v []byte) error {
			if len(v) != 1 || v[0] != codec.FormatVersion {
				return fmt.Errorf("%w: store format %v, this build reads %d", ErrVersion, v, codec.FormatVersion)
			}
			return nil
		})
	})
}

// LeaseOptions tells the engine how to use this store (see WithExact and
// WithChunks).
func (s *Store) LeaseOptions() engine.LeaseOptions {
	if s == nil {
		return engine.DefaultLeaseOptions()
	}
	return s.opts.lease
}

// Load calls fn with every record. It stops at the first record it cannot
// read, with an error matching ErrCorrupt or ErrVersion.
func (s *Store) Load(ctx context.Context, fn func(engine.Record) error) error {
	return s.open(func(db *badger.DB) error {
		return db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256, Prefix: []byte(codec.KeyPrefix)})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				if err := ctx.Err(); err != nil {
					return err
				}
				item := it.Item()
				k := item.Key()
				if len(k) != len(codec.KeyPrefix)+len(engine.KeyID{}) {
					return fmt.Errorf("%w: key of %d bytes", ErrCorrupt, len(k))
				}
				var id engine.KeyID
				copy(id[:], k[len(codec.KeyPrefix):])
				var rec engine.Record
				err := item.Value(func(v []byte) error {
					var err error
					rec, err = codec.Decode(id, v)
					return err
				})
				if err != nil {
					return fmt.Errorf("record %x: %w", id[:4], err)
				}
				if err := fn(rec); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// open runs f with the database unless the store is closed (or nil); Close
// waits for it.
func (s *Store) open(f func(*badger.DB) error) error {
	if s == nil {
		return ErrClosed
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.close {
		return ErrClosed
	}
	return f(s.db)
}

// Save writes recs in one synced transaction: all of them or none.
func (s *Store) Save(ctx context.Context, recs ...engine.Record) error {
	vals := make([][]byte, len(recs))
	for i, r := range recs {
		v, err := codec.Encode(r)
		if err != nil {
			return err
		}
		vals[i] = v
	}
	return s.open(func(db *badger.DB) error {
		return db.Update(func(txn *badger.Txn) error {
			for i, r := range recs {
				if err := txn.Set(codec.Key(r.ID), vals[i]); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// Close closes the database. It is idempotent: later calls return nil.
func (s *Store) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.close {
		return nil
	}
	s.close = true
	return s.db.Close()
}

// logger adapts Badger's logging to slog; without a slog.Logger it drops
// everything.
type logger struct{ l *slog.Logger }

func (g logger) log(level slog.Level, format string, args ...any) {
	if g.l != nil {
		g.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
	}
}

func (g logger) Errorf(f string, a ...any)   { g.log(slog.LevelError, f, a...) }
func (g logger) Warningf(f string, a ...any) { g.log(slog.LevelWarn, f, a...) }
func (g logger) Infof(f string, a ...any)    { g.log(slog.LevelDebug, f, a...) }
func (g logger) Debugf(f string, a ...any)   { g.log(slog.LevelDebug, f, a...) }
