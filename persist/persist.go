// Package persist keeps an allot engine's keys in a Badger database in a
// local directory, so that quotas survive restarts and crashes.
//
//	st, err := persist.Open("/var/lib/myapp/quotas")
//	eng, err := engine.New(engine.WithStore(st))
//	defer eng.Close() // writes back unused reservations, closes the store
//
// What is durable, and when:
//
//   - Register, Revoke, Rotate, TopUp, SetLimits, Reset and Delete are
//     synced to disk before they return. A revocation survives kill -9 the
//     instant Revoke returns; so does a deletion: Delete removes the key's
//     record in the same synced transaction, and the key is unknown after
//     a restart.
//   - Consume, in lease mode (the default), grants units only from a
//     reservation that is already synced; the next reservation is written
//     in the background, many keys to one synced transaction, so Consume
//     does not wait for the disk in steady state. A crash loses at most the
//     unused rest of each reservation (see engine.LeaseOptions: at most
//     MaxChunk units per limit of each key in use), and never grants a
//     unit twice. In exact mode (engine.WithLease with
//     engine.LeaseOptions{Exact: true}) every grant is durable before
//     Consume returns.
//   - Close (through the engine's Close) writes every counter as it is: a
//     restart after a clean Close loses nothing.
//   - A kill -9 at any moment, while Open or Close runs included, leaves a
//     store that the next Open opens at the first try.
//
// Keys are stored under their SHA-256 digest; no raw API key reaches the
// directory. Records carry a format version and a checksum: a damaged or
// unknown record makes Open fail, it never resets a counter to full.
//
// A deleted record leaves Badger's deletion marker, and older versions of
// records stay, until a compaction drops them: Compact does that for every
// table at once, after which no byte of a deleted key's digest is left in
// the directory's files. Run it after many deletions (the space comes back
// then, too).
//
// # What Open refuses
//
// Open fails, rather than open a store that is not whole:
//
//   - ErrLocked: another process, or another Open in this one, holds the
//     directory (allot.lock, then Badger's LOCK).
//   - ErrCorrupt, ErrVersion: a file or record cannot be read; or the store
//     has lost records. Besides Badger's files the directory holds
//     allot.meta, the store's own metadata: a generation that every Save
//     moves on and the number of records, which Badger also holds (m/state)
//     in the same transaction as the records. The meta file is only ever
//     written after Badger's transaction is durable, so a crash leaves it
//     behind Badger, never ahead; Open refuses when Badger is behind the
//     meta file (durable writes are gone: a damaged or deleted MANIFEST,
//     table or write-ahead file), when Badger holds fewer records than its
//     own count says, or than the meta file's at the same generation
//     (tables dropped; a meta file behind Badger may still count records
//     deleted since), when the meta file is missing or damaged or another
//     store's, and when the MANIFEST is missing (before Badger would start
//     a new one and delete every table). The error says
//     what was found, for example "the store holds 0 records at generation
//     0, allot.meta says 12 records at generation 15". Table files that
//     Badger drops at Open (not listed in its MANIFEST) are kept in
//     allot-kept/ until Open has decided; after a refusal they stay there.
//     WithAcceptLoss opens such a store as it stands.
//   - ErrNoSpace: the filesystem has no room for a preallocated write-ahead
//     file (twice Badger's MemTableSize: 32 MiB) and the free-space reserve
//     (64 MiB and the size of the tables by default): 96 MiB free for a new
//     store with the defaults.
//
// Tables that Badger drops at Open are read before they go: a write in one
// that the store holds at an older version (a record that would come back
// older, which no count shows) is refused too; a record the store does not
// hold at all may have been deleted, and is left to the counts. Damage the
// checks cannot see: loss confined to the writes of the last 100 ms before
// a crash (the meta file trails Badger by that much while Saves keep
// coming; Close and Open bring it up to date).
//
// # Faults while it runs
//
// Save checks, before Badger writes anything, what Badger itself would turn
// into the end of the process. Every failure reaches the engine's callers
// as engine.ErrStore, and writes nothing: no reservation beyond what is
// durable, so nothing is granted beyond it.
//
//   - A full disk: Badger writes through memory maps of sparse files, where
//     a page the filesystem cannot back is SIGBUS. The store preallocates
//     each write-ahead file, and Save fails with ErrNoSpace while the free
//     space is below the reserve (WithFreeSpaceReserve); it goes on by
//     itself once there is room. Close on a full disk fails with ErrNoSpace
//     and leaves Badger open (its Close writes a table through a memory
//     map); call it again once there is room. Another process that fills
//     the disk while Badger flushes or compacts (in its own goroutines) can
//     still end the process: keep the disk from filling up.
//   - A directory that cannot be written (read-only mount, permissions):
//     ErrUnwritable, until it can be written again.
//   - A directory removed, moved or replaced, or emptied of its files:
//     ErrRemoved, for good (the records went with it). Close then leaves
//     Badger alone (its Close would retry a flush into the missing
//     directory forever). Lease mode grants what was reserved before, and
//     nothing more.
//   - A Badger write that fails anyway (the fault came between the check
//     and the write, an I/O error): if Badger lost its memtable, its next
//     write would end the process (log.Fatal); the store looks first, and
//     fails with ErrFailed until it is closed and opened again.
//
// The checks cost a few system calls per Save, some microseconds.
//
// # Backups, and reading a directory from outside
//
// (*Store).Backup writes a backup of a running store (Badger's backup
// stream of a snapshot, with a header and a SHA-256 trailer of ours) while
// the engine goes on; BackupFile writes one to a file, whole or not at all.
// Restore writes a backup into an empty or new directory, after checking
// all of it. Another process cannot open a directory a Store holds, not
// even to read it (Badger's lock): OpenSnapshot, for tools such as the
// allot command, reads a directory that no process holds through a private
// copy, with every check of Open, and never writes it.
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
	"syscall"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist/internal/codec"
	"github.com/dgraph-io/badger/v4"
	badgeropts "github.com/dgraph-io/badger/v4/options"
)

// Store is a Badger-backed engine.Store. Create it with Open and hand it to
// engine.WithStore; the engine's Close closes it. Its methods are safe for
// concurrent use.
type Store struct {
	dir  string
	opts options

	mu    sync.RWMutex // Close excludes Load and Save
	close bool
	db    *badger.DB
	lock  *os.File // allot.lock, flocked while the store is open
	g     *guard   // what Save checks before Badger writes (guard.go)

	wmu       sync.Mutex // one Save at a time: m/state is read, changed, written
	gen       uint64     // the generation of the last Save that committed
	count     uint64     // records known to be in Badger
	keys      keySet     // fingerprints of the records' keys (and of uncertain ones)
	uncertain map[uint64]engine.KeyID
	id        [16]byte
	failNext  int   // tests only: fail the next Save before (1) or after (2) it commits
	skipGuard bool  // tests only: no checks of the directory and the free space in Save
	accepted  bool  // Open accepted a loss (WithAcceptLoss)
	valueMax  int64 // the value threshold, less the key: larger records are refused

	meta   *metaFile
	metaW  chan struct{} // wakes the meta writer
	metaMu sync.Mutex
	want   metaState // the newest state known durable, for the meta writer
	metaE  error     // the meta writer's last error
	stopW  chan struct{}
	doneW  chan struct{}
}

var metaVersion = []byte("m/format")

const (
	lockName = "allot.lock"
	keptDir  = "allot-kept" // table files Badger would delete, kept while Open decides
)

// Open opens (creating if needed) the store in dir. It fails with ErrLocked
// if another process holds dir, and with an error matching ErrCorrupt or
// ErrVersion if the files or records cannot be read, or if the store has
// lost records (see the package documentation); it never panics on a
// damaged directory.
func Open(dir string, opts ...Option) (st *Store, err error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	bo, err := badgerOptions(dir, o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("allot: creating %s: %w", dir, err)
	}
	s := &Store{dir: dir, opts: o, valueMax: bo.ValueThreshold - 64}
	if s.lock, err = lockDir(dir); err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			st, err = nil, fmt.Errorf("%w: opening %s: %v", ErrCorrupt, dir, p)
		}
		if err != nil {
			s.release()
		}
	}()
	if err := s.open(bo); err != nil {
		return nil, err
	}
	return s, nil
}

// badgerOptions returns the options the store opens Badger with in dir.
func badgerOptions(dir string, o options) (badger.Options, error) {
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(logger{o.logger}).
		WithNumVersionsToKeep(1).
		WithMemTableSize(16 << 20).     // a write-ahead file of 32 MiB, not 128
		WithValueLogFileSize(16 << 20). // values never reach the value log
		// Every record stays in the LSM tree, out of the value log (Save
		// refuses a record this large: none comes near it).
		WithValueThreshold(maxValue).
		// Uncompressed tables: checkTables verifies every block before Badger
		// reads one (Badger's own checks panic on some damage, in goroutines
		// of its own). Records are small; compression would gain little.
		WithCompression(badgeropts.None)
	if o.badger != nil {
		bo = o.badger(bo)
	}
	if bo.BypassLockGuard || !bo.SyncWrites {
		return bo, fmt.Errorf("%w: BypassLockGuard and unsynced writes void the store's guarantees", ErrUnsupported)
	}
	if bo.ValueThreshold == maxValue {
		// Badger wants it within a batch (15% of the memtable), which a
		// small memtable makes smaller.
		bo.ValueThreshold = min(maxValue, 15*bo.MemTableSize/100)
	}
	if bo.ValueThreshold < minValue {
		return bo, fmt.Errorf("%w: a value threshold below %d bytes would put records in the value log", ErrUnsupported, minValue)
	}
	if bo.InMemory || bo.ReadOnly || (bo.ValueDir != "" && filepath.Clean(bo.ValueDir) != filepath.Clean(bo.Dir)) {
		return bo, fmt.Errorf("%w: an in-memory or read-only Badger, or a value directory of its own", ErrUnsupported)
	}
	return bo, nil
}

// lockDir takes the store's own lock, before anything in dir is touched:
// Open removes and keeps files before Badger takes its lock.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("allot: locking %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("allot: locking %s: %w", dir, err)
	}
	return f, nil
}

// release closes what a failed Open or a Close leaves open of ours.
func (s *Store) release() {
	s.g.close()
	if s.meta != nil {
		_ = s.meta.close()
		s.meta = nil
	}
	if s.lock != nil {
		_ = s.lock.Close()
		s.lock = nil
	}
}

// open opens Badger in s.dir and checks it against the meta file.
func (s *Store) open(bo badger.Options) error {
	dir := s.dir
	var err error
	if s.g, err = openGuard(dir, bo, s.opts.reserve); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, metaName+".tmp")) // a creation that did not finish
	meta, slot, haveMeta, err := readMeta(dir)
	if err != nil {
		return err
	}
	mf, err := readManifest(dir, bo)
	if err != nil {
		return err
	}
	if haveMeta && meta.gen > 0 && !mf.exists {
		// Badger would start a new MANIFEST and delete every table.
		err := fmt.Errorf("%w: MANIFEST missing in %s, but %s says the store holds %d records at generation %d (restore the directory)",
			ErrCorrupt, dir, metaName, meta.count, meta.gen)
		if !s.opts.acceptLoss {
			return err
		}
		s.warn("opening the store as it stands (WithAcceptLoss)", "dir", s.dir, "damage", err)
	}
	if s.opts.verify {
		if err := checkTables(dir, mf); err != nil {
			return err
		}
	}
	if _, err := keepOrphans(dir, mf); err != nil {
		return err
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
			return fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return fmt.Errorf("%w: opening %s: %s%v", ErrCorrupt, dir, badgerFile(err), err)
	}
	s.db = db
	err = s.g.afterOpen(dir)
	if err == nil {
		err = s.check(meta, slot, haveMeta)
	}
	if err != nil {
		_ = db.Close()
		s.db = nil
		return err
	}
	// Kept files are leftovers of crashes (or of damage accepted): they go.
	if files, _ := os.ReadDir(filepath.Join(dir, keptDir)); len(files) > 0 {
		if s.accepted {
			_ = os.Rename(filepath.Join(dir, keptDir), filepath.Join(dir, fmt.Sprintf("allot-lost-%d", time.Now().Unix())))
		} else {
			_ = os.RemoveAll(filepath.Join(dir, keptDir))
		}
	}
	s.metaW, s.stopW, s.doneW = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go s.metaWriter()
	return nil
}

// removeEmptyFiles removes the zero-length memtable and value log files of
// dir and reports whether there were any. Badger writes both through a
// memory map of a file it first creates and then sizes: zero length means
// it died in between, before a byte was written. A value log file no
// longer than its header (20 bytes) holds no value either: the store never
// puts one there, so a damaged header (which Badger would refuse) is gone
// with it too.
func removeEmptyFiles(dir string) bool {
	removed := false
	for _, pattern := range []string{"*.mem", "*.vlog"} {
		files, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, f := range files {
			limit := int64(0)
			if strings.HasSuffix(f, ".vlog") {
				limit = vlogHeader
			}
			if fi, err := os.Lstat(f); err == nil && fi.Mode().IsRegular() && fi.Size() <= limit && os.Remove(f) == nil {
				removed = true
			}
		}
	}
	return removed
}

// vlogHeader is the size of a value log file's header (key id and IV).
const vlogHeader = 20

// badgerFile guesses which of Badger's files an error of its Open is
// about, to name it.
func badgerFile(err error) string {
	m := strings.ToLower(err.Error())
	switch {
	case strings.Contains(m, "key registry") || strings.Contains(m, "encryption key") || strings.Contains(m, "sanity text"):
		return "KEYREGISTRY: "
	case strings.Contains(m, "manifest"):
		return "MANIFEST: "
	case strings.Contains(m, ".vlog") || strings.Contains(m, "vlog"):
		return "value log: "
	case strings.Contains(m, ".mem") || strings.Contains(m, "memtable") || strings.Contains(m, "wal"):
		return "write-ahead file: "
	case strings.Contains(m, "table") || strings.Contains(m, ".sst"):
		return "table: "
	}
	return ""
}

// check reads the store's format, id, generation and count from Badger,
// counts its records, and compares all that with the meta file (see
// meta.go). It creates the meta file of a new store, or of one written
// before there was a meta file, and brings the meta file up to Badger's
// generation.
func (s *Store) check(meta metaState, slot int, haveMeta bool) error {
	var (
		format             []byte
		id                 []byte
		haveState          bool
		bgen, bcount, recs uint64
	)
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if format, err = getValue(txn, metaVersion); err != nil {
			return err
		}
		if id, err = getValue(txn, keyID); err != nil {
			return err
		}
		v, err := getValue(txn, keyState)
		if err != nil {
			return err
		}
		if v != nil {
			haveState = true
			if bgen, bcount, err = parseState(v); err != nil {
				return err
			}
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(codec.KeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != len(codec.KeyPrefix)+len(engine.KeyID{}) {
				return fmt.Errorf("%w: key of %d bytes", ErrCorrupt, len(k))
			}
			recs++
			s.keys.add(fingerprint(k[len(codec.KeyPrefix):]))
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return err
		}
		return fmt.Errorf("%w: reading %s: %v", ErrCorrupt, s.dir, err)
	}
	if format != nil && (len(format) != 1 || format[0] != codec.FormatVersion) {
		return fmt.Errorf("%w: store format %v, this build reads %d", ErrVersion, format, codec.FormatVersion)
	}
	if id != nil && len(id) != len(s.id) {
		return fmt.Errorf("%w: m/id of %d bytes", ErrCorrupt, len(id))
	}
	lost := func(what string, args ...any) error {
		msg := fmt.Sprintf(what, args...)
		if files, _ := os.ReadDir(filepath.Join(s.dir, keptDir)); len(files) > 0 {
			msg += fmt.Sprintf("; %d files that Badger dropped or cut are kept in %s", len(files), filepath.Join(s.dir, keptDir))
		}
		if s.opts.acceptLoss {
			s.accepted = true
			s.warn("opening the store as it stands (WithAcceptLoss)", "dir", s.dir, "damage", msg)
			return nil
		}
		return fmt.Errorf("%w: %s: %s", ErrCorrupt, s.dir, msg)
	}
	switch {
	case !haveMeta && haveState:
		if err := lost("%s is missing, but the store is at generation %d with %d records: its records cannot be checked", metaName, bgen, bcount); err != nil {
			return err
		}
	case haveMeta && id != nil && [16]byte(id) != meta.id:
		if err := lost("%s belongs to another store (id %x, the store's is %x)", metaName, meta.id[:4], id[:4]); err != nil {
			return err
		}
	case haveMeta && bgen < meta.gen:
		if err := lost("durable writes lost (MANIFEST, table or write-ahead file damaged or deleted): the store holds %d records at generation %d, %s says %d records at generation %d",
			recs, bgen, metaName, meta.count, meta.gen); err != nil {
			return err
		}
	case recs < bcount:
		if err := lost("records lost (MANIFEST or table file damaged): the store holds %d records, its own count says %d (generation %d)", recs, bcount, bgen); err != nil {
			return err
		}
	case haveMeta && meta.gen == bgen && recs < meta.count:
		// Only at the same generation: a Save since may have deleted
		// records that the meta file still counts.
		if err := lost("records lost (MANIFEST or table file damaged): the store holds %d records, %s says %d (generation %d)", recs, metaName, meta.count, meta.gen); err != nil {
			return err
		}
	}
	// The tables Badger dropped (this time, or at an Open that refused):
	// a write in one that the store no longer has is a record lost or
	// come back older, which no count shows.
	kept, _ := filepath.Glob(filepath.Join(s.dir, keptDir, "*.sst"))
	newer, table, err := newerInOrphans(s.db, kept)
	if err != nil {
		return err
	}
	if newer > 0 {
		if err := lost("records lost (MANIFEST damaged): %d writes in table files that Badger dropped because its MANIFEST no longer lists them (%s among them) are newer than what the store holds", newer, table); err != nil {
			return err
		}
	}
	s.count = uint64(s.keys.n)
	switch {
	case id != nil:
		s.id = [16]byte(id)
	case haveMeta:
		s.id = meta.id
	default:
		s.id = newStoreID()
	}
	fresh := !haveMeta || !haveState || id == nil || s.accepted
	if fresh {
		// A new store, one written before there was a meta file, or one
		// accepted as it stands: the meta file first (at generation 0,
		// which any Badger state satisfies), then Badger's state, then the
		// meta file again.
		if s.meta, err = createMeta(s.dir, metaState{id: s.id}); err != nil {
			return err
		}
		s.gen = bgen + 1
		err := s.db.Update(func(txn *badger.Txn) error {
			if format == nil {
				if err := txn.Set(metaVersion, []byte{codec.FormatVersion}); err != nil {
					return err
				}
			}
			if err := txn.Set(keyID, s.id[:]); err != nil {
				return err
			}
			return txn.Set(keyState, stateValue(s.gen, s.count))
		})
		if err != nil {
			return fmt.Errorf("allot: writing the state of %s: %w", s.dir, err)
		}
	} else {
		s.gen = bgen
		if s.meta, err = openMeta(s.dir, meta, slot); err != nil {
			return err
		}
	}
	s.want = metaState{id: s.id, gen: s.gen, count: s.count}
	if err := s.meta.write(s.want); err != nil {
		return fmt.Errorf("allot: writing %s: %w", metaName, err)
	}
	return nil
}

// getValue returns the value of key, nil if there is none.
func getValue(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

// metaEvery is the least time between two writes of the meta file while
// Saves keep coming: each is a sync of its own, and syncing it after every
// Save cost about as much again as the Saves themselves on a busy disk.
const metaEvery = 100 * time.Millisecond

// metaWriter brings the meta file up to the newest durable state, in the
// background: Save does not wait for it. It trails Badger by the Saves of
// the last metaEvery at most (damage confined to those, after a crash,
// cannot be told from a crash); Open and Close write it themselves.
func (s *Store) metaWriter() {
	defer close(s.doneW)
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		select {
		case <-s.metaW:
		case <-s.stopW:
			return
		}
		s.metaMu.Lock()
		m := s.want
		s.metaMu.Unlock()
		err := s.meta.write(m)
		s.metaMu.Lock()
		s.metaE = err
		s.metaMu.Unlock()
		if err != nil {
			s.warn("writing the meta file", "file", metaName, "err", err)
		}
		pause.Reset(metaEvery)
		select {
		case <-pause.C:
		case <-s.stopW:
			return
		}
	}
}

// Load calls fn with every record. It stops at the first record it cannot
// read, with an error matching ErrCorrupt or ErrVersion.
func (s *Store) Load(ctx context.Context, fn func(engine.Record) error) error {
	return s.use(func(db *badger.DB) error {
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

// use runs f with the database unless the store is closed (or nil); Close
// waits for it.
func (s *Store) use(f func(*badger.DB) error) error {
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

// errTest is the failure of FailNextSaveForTest.
var errTest = errors.New("allot: a failure the test asked for")

// maxValue is Badger's largest value threshold: a record at least this
// large (or as large as the threshold set) would go to the value log, which
// the store never uses, and Save refuses it. The largest record (8 limits,
// names of 64 bytes, long location names) is well under minValue.
const (
	maxValue = 1 << 20
	minValue = 4 << 10
)

// Save writes recs in one synced transaction: all of them or none. A record
// with Deleted set removes the key's record instead (a record that is not
// there is no error). The same transaction moves the store's generation and
// record count (m/state) on.
func (s *Store) Save(ctx context.Context, recs ...engine.Record) error {
	if s == nil {
		return ErrClosed
	}
	vals := make([][]byte, len(recs))
	for i, r := range recs {
		if r.Deleted {
			continue // removed in the same transaction; nothing to encode
		}
		v, err := codec.Encode(r)
		if err != nil {
			return err
		}
		if int64(len(v)) >= s.valueMax {
			return fmt.Errorf("%w: a record of %d bytes", ErrUnsupported, len(v))
		}
		vals[i] = v
	}
	return s.use(func(db *badger.DB) error {
		s.wmu.Lock()
		defer s.wmu.Unlock()
		if err := s.g.check(s.dir, s.meta.f, db, s.skipGuard); err != nil {
			return err
		}
		if err := s.metaErr(); err != nil {
			return err
		}
		if err := s.save(db, recs, vals); err != nil {
			s.g.badgerErr = err
			return err
		}
		s.g.afterWrite(s.dir)
		return nil
	})
}

// Compact gives back the space of deleted records and of older versions
// of records, and leaves no byte of a deleted key's digest in the
// directory's files: Badger flushes its write-ahead files into a table (new
// Saves wait for that part), then merges every table into one level, where
// deletions and what they deleted are dropped. Run it after many Deletes
// (say, once a day); Badger's own compactions drop some as they go, with no
// bound on when. The reserve of free space (WithFreeSpaceReserve) is
// checked first, as by Save. A Delete racing Compact may leave its record
// behind until the next one.
func (s *Store) Compact(ctx context.Context) error {
	return s.use(func(db *badger.DB) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.flushAll(db); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := db.Flatten(1); err != nil {
			return fmt.Errorf("allot: compacting %s: %w", s.dir, err)
		}
		return nil
	})
}

// flushAll makes Badger flush every memtable into a table and compact level
// 0 into the levels below: DropPrefix of a key written for the purpose. It
// holds wmu (Badger refuses writes meanwhile), and runs the guard's checks
// as Save does: the write-ahead file changes.
func (s *Store) flushAll(db *badger.DB) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.g.check(s.dir, s.meta.f, db, s.skipGuard); err != nil {
		return err
	}
	err := db.Update(func(txn *badger.Txn) error { return txn.Set(keyCompact, nil) })
	if err == nil {
		err = db.DropPrefix(keyCompact)
	}
	if err != nil {
		s.g.badgerErr = err
		return fmt.Errorf("allot: compacting %s: %w", s.dir, err)
	}
	s.g.afterWrite(s.dir)
	return nil
}

// metaErr returns nil if the meta file writer's last write worked, or if a
// write now works.
func (s *Store) metaErr() error {
	s.metaMu.Lock()
	err, m := s.metaE, s.want
	s.metaMu.Unlock()
	if err == nil {
		return nil
	}
	if err := s.meta.write(m); err != nil {
		return fmt.Errorf("%w: writing %s: %w", ErrUnwritable, metaName, err)
	}
	s.metaMu.Lock()
	s.metaE = nil
	s.metaMu.Unlock()
	return nil
}

// keyChange is what one Save does to the key set at one fingerprint.
type keyChange struct {
	id       engine.KeyID
	was, now bool // counted before the Save; there after it
}

// save is Save under s.wmu.
//
// The count (s.count, and m/state) is the number of fingerprints in s.keys
// less the uncertain ones: those of a Save that failed, which may or may
// not have landed, and which the next Save looks up. Every fingerprint in
// the set stands for at least one record in Badger, so the count never
// exceeds the records Badger holds (two keys with one fingerprint count as
// one, and a deletion of either takes the fingerprint out).
func (s *Store) save(db *badger.DB, recs []engine.Record, vals [][]byte) error {
	// What the batch does to the set: a fingerprint that comes or goes, or
	// that was uncertain, gets an entry (in the batch's order, the last
	// record of a key decides, as in Badger's transaction). A batch of
	// keys already known allocates nothing.
	var changes map[uint64]*keyChange
	for _, r := range recs {
		fp := fingerprint(r.ID[:])
		c := changes[fp]
		if c == nil {
			_, unsure := s.uncertain[fp]
			was := !unsure && s.keys.has(fp)
			if was != r.Deleted && !unsure {
				continue // there and written, or not there and deleted
			}
			if changes == nil {
				changes = make(map[uint64]*keyChange)
			}
			c = &keyChange{was: was}
			changes[fp] = c
		}
		c.id, c.now = r.ID, !r.Deleted
	}
	var count uint64
	var absent []uint64
	err := db.Update(func(txn *badger.Txn) error {
		count, absent = s.count, absent[:0]
		for _, c := range changes {
			switch {
			case c.now && !c.was:
				count++
			case !c.now && c.was:
				count--
			}
		}
		for fp, id := range s.uncertain {
			if changes[fp] != nil {
				continue // this Save decides it, counted above
			}
			_, err := txn.Get(codec.Key(id))
			switch {
			case err == nil:
				count++
			case errors.Is(err, badger.ErrKeyNotFound):
				absent = append(absent, fp)
			default:
				return err
			}
		}
		for i, r := range recs {
			var err error
			if r.Deleted {
				err = txn.Delete(codec.Key(r.ID))
			} else {
				err = txn.Set(codec.Key(r.ID), vals[i])
			}
			if err != nil {
				return err
			}
		}
		if s.failNext == 1 {
			return errTest
		}
		return txn.Set(keyState, stateValue(s.gen+1, count))
	})
	if err == nil && s.failNext == 2 {
		err = errTest
	}
	s.failNext = 0
	if err != nil {
		// Landed or not: each key the batch changed is uncertain now, in
		// the set and not counted.
		if len(changes) > 0 && s.uncertain == nil {
			s.uncertain = make(map[uint64]engine.KeyID)
		}
		for fp, c := range changes {
			if c.was {
				s.count--
			}
			s.keys.add(fp)
			s.uncertain[fp] = c.id
		}
		return err
	}
	for _, fp := range absent {
		s.keys.remove(fp)
	}
	for fp, c := range changes {
		if c.now {
			s.keys.add(fp)
		} else {
			s.keys.remove(fp)
		}
	}
	clear(s.uncertain)
	s.gen, s.count = s.gen+1, count
	s.metaMu.Lock()
	s.want = metaState{id: s.id, gen: s.gen, count: s.count}
	s.metaMu.Unlock()
	select {
	case s.metaW <- struct{}{}:
	default:
	}
	return nil
}

// Close closes the database. Later calls return nil, but for a Close that
// failed with ErrNoSpace or ErrUnwritable: Badger is then still open (its
// Close writes a table through a memory map, which a full disk turns into
// SIGBUS, or waits forever for a directory it cannot write), everything
// durable is in its synced write-ahead log, and Close may be called again
// once there is room. After ErrRemoved, Badger's files are gone and Close
// leaves them alone.
func (s *Store) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	if !s.close {
		s.close = true
		close(s.stopW)
		<-s.doneW
	}
	if err := s.g.checkDir(s.dir, s.meta.f); err != nil {
		s.db = nil // left open: its Close would retry a flush into a directory that is gone, forever
		s.release()
		return fmt.Errorf("allot: closing the store: %w (Badger was left open)", err)
	}
	if err := s.g.checkRoom(s.dir); err != nil {
		return fmt.Errorf("allot: the store is not closed yet: %w; nothing durable is lost (it is in Badger's synced write-ahead log): call Close again once there is room", err)
	}
	// Every Save has returned: the meta file takes the last state, then
	// Badger closes (its Close writes no new state).
	err := s.meta.write(s.want)
	if err != nil {
		err = fmt.Errorf("allot: writing %s: %w", metaName, err)
	}
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	s.db = nil
	s.release()
	return err
}

// warn logs what the store itself has to say.
func (s *Store) warn(msg string, args ...any) {
	if s.opts.logger != nil {
		s.opts.logger.Warn("allot: "+msg, append(args, "component", "allot/persist")...)
	}
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
