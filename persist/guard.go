package persist

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/dgraph-io/badger/v4"
)

// The guard: what Save checks before it lets Badger write, because some of
// Badger's failures cannot be caught once they happen.
//
//   - Badger writes its write-ahead file (.mem) and its tables through
//     memory maps of files it creates sparse. On a full filesystem, a page
//     the filesystem cannot back raises SIGBUS, which ends the process (no
//     Go code can recover it). So the store preallocates each write-ahead
//     file (fallocate) as soon as it appears, and refuses writes while the
//     free space is below a reserve that covers the next write-ahead file,
//     the flush of the current one into a table, and compactions
//     (WithFreeSpaceReserve). Open refuses a filesystem without room for the
//     write-ahead file and the reserve.
//   - After a write that failed to create the next memtable, Badger has no
//     memtable, and its next write calls log.Fatal (y.AssertTrue). So after
//     any failed write the store looks before writing again: a read that
//     finds no memtable panics, and the store then fails for good
//     (ErrFailed) until it is reopened.
//   - A directory removed or replaced under the store is noticed (the held
//     directory's link count drops to zero, or the path names another
//     directory; the meta file's link count drops to zero, or the current
//     write-ahead file is missing, when the files are deleted), as is a
//     directory that cannot be written (read-only mount, permissions,
//     immutable flag: access(2)). A single table file deleted is not seen
//     until the next Open (which refuses the store).
//
// None of these checks touches the disk: a few system calls per Save
// (two fstat, two stat, access, fstatfs, and a stat for the next
// write-ahead file), some microseconds against the milliseconds of the
// synced write.

// guard is the state the checks keep; the Store's wmu guards it.
type guard struct {
	dirf     *os.File // the directory, held open
	dev, ino uint64

	memTable    int64 // Badger's MemTableSize
	reserve     int64 // free bytes below which writes are refused; < 0: computed
	tables      int64 // bytes of table files, for the computed reserve
	walFid      int   // the newest write-ahead file known
	walBacked   bool  // it is preallocated
	noFallocate bool  // the filesystem cannot preallocate: the reserve alone protects

	// badgerErr is the last error of a Badger write: until a look shows
	// that Badger still has a memtable, no write goes to it.
	badgerErr error
	// failed and gone are for good: Badger lost its memtable, or the
	// directory was removed or replaced.
	failed, gone error
}

// needReserve returns the free space below which writes are refused.
func (g *guard) needReserve() int64 {
	if g.reserve >= 0 {
		return g.reserve
	}
	// The next write-ahead file (2 memtables), the flush of the current one
	// into a table (at most a memtable) and a memtable more; and room for a
	// compaction to rewrite every table before it deletes the old ones.
	return 4*g.memTable + g.tables
}

// walPath returns the path of write-ahead file fid.
func walPath(dir string, fid int) string { return filepath.Join(dir, fmt.Sprintf("%05d.mem", fid)) }

// openGuard holds dir open and checks, before Badger opens, that the
// filesystem has room for a write-ahead file and the reserve.
func openGuard(dir string, bo badger.Options, reserve int64) (*guard, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("allot: opening %s: %w", dir, err)
	}
	g := &guard{dirf: d, memTable: bo.MemTableSize, reserve: reserve}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(d.Fd()), &st); err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("allot: opening %s: %w", dir, err)
	}
	g.dev, g.ino = uint64(st.Dev), st.Ino
	g.tables = tableBytes(dir)
	// Write-ahead files left by a crash are replayed and flushed into
	// tables as soon as Badger opens.
	wals, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	need := 2*g.memTable + g.needReserve() + int64(len(wals))*g.memTable
	if free, _, err := g.free(); err == nil && free < need {
		_ = d.Close()
		return nil, fmt.Errorf("%w: %s has %s free; the store needs %s (a write-ahead file of %s, preallocated, and a reserve of %s: see WithFreeSpaceReserve and Badger's MemTableSize)",
			ErrNoSpace, dir, size(free), size(need), size(2*g.memTable), size(g.needReserve()))
	}
	return g, nil
}

// afterOpen finds Badger's write-ahead file and preallocates it.
func (g *guard) afterOpen(dir string) error {
	wals, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	for _, w := range wals {
		var fid int
		if _, err := fmt.Sscanf(filepath.Base(w), "%05d.mem", &fid); err == nil && fid > g.walFid {
			g.walFid = fid
		}
	}
	return g.backWAL(dir)
}

// backWAL preallocates the newest write-ahead file, so that no page Badger
// writes through its memory map lacks a block.
func (g *guard) backWAL(dir string) error {
	if g.walBacked || g.noFallocate {
		return nil
	}
	f, err := os.OpenFile(walPath(dir, g.walFid), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("allot: preallocating the write-ahead file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("allot: preallocating the write-ahead file: %w", err)
	}
	for {
		err = syscall.Fallocate(int(f.Fd()), 0, 0, fi.Size())
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	switch {
	case err == nil:
		g.walBacked = true
		return nil
	case errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS):
		g.noFallocate = true // the reserve alone keeps Badger's pages backed
		return nil
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w: preallocating the write-ahead file %s (%s): %w", ErrNoSpace, filepath.Base(f.Name()), size(fi.Size()), err)
	}
	return fmt.Errorf("allot: preallocating the write-ahead file: %w", err)
}

// afterWrite notices a new write-ahead file (Badger made one while
// writing) and preallocates it; until that works, writes are refused.
func (g *guard) afterWrite(dir string) {
	for {
		if _, err := os.Stat(walPath(dir, g.walFid+1)); err != nil {
			break
		}
		g.walFid++
		g.walBacked = false
		g.tables = tableBytes(dir)
	}
	_ = g.backWAL(dir) // an error is the next check's
}

// free returns the bytes and inodes available on dir's filesystem.
func (g *guard) free() (bytes int64, inodes uint64, err error) {
	var s syscall.Statfs_t
	if err := syscall.Fstatfs(int(g.dirf.Fd()), &s); err != nil {
		return 0, 0, err
	}
	inodes = s.Ffree
	if s.Files == 0 {
		inodes = ^uint64(0) // the filesystem does not count them
	}
	return int64(s.Bavail) * int64(s.Bsize), inodes, nil
}

// check says whether Badger may write now. It never touches the disk.
func (g *guard) check(dir string, meta *os.File, db *badger.DB, onlyBadger bool) error {
	if g.failed != nil {
		return g.failed
	}
	if !onlyBadger {
		if err := g.checkDir(dir, meta); err != nil {
			return err
		}
		if err := g.checkRoom(dir); err != nil {
			return err
		}
	}
	if g.badgerErr != nil {
		if memtableLost(db) {
			g.failed = fmt.Errorf("%w: Badger lost its memtable after a failed write (%v); its next write would end the process: reopen the store", ErrFailed, g.badgerErr)
			return g.failed
		}
		g.badgerErr = nil
	}
	return nil
}

// checkDir notices a directory that was removed or replaced, or whose
// files were deleted (the meta file's link count is then zero).
func (g *guard) checkDir(dir string, meta *os.File) error {
	if g.gone != nil {
		return g.gone
	}
	var st syscall.Stat_t
	switch err := syscall.Fstat(int(g.dirf.Fd()), &st); {
	case err != nil:
		return fmt.Errorf("allot: checking %s: %w", dir, err)
	case st.Nlink == 0:
		g.gone = fmt.Errorf("%w: %s was removed; the store's records went with it (nothing more is written; restore the directory and reopen)", ErrRemoved, dir)
		return g.gone
	}
	switch err := syscall.Stat(dir, &st); {
	case errors.Is(err, syscall.ENOENT):
		g.gone = fmt.Errorf("%w: %s no longer exists (moved or removed; nothing more is written)", ErrRemoved, dir)
		return g.gone
	case err != nil:
		return fmt.Errorf("allot: checking %s: %w", dir, err)
	case uint64(st.Dev) != g.dev || st.Ino != g.ino:
		g.gone = fmt.Errorf("%w: %s is another directory than the one the store opened (replaced; nothing more is written)", ErrRemoved, dir)
		return g.gone
	}
	if meta != nil {
		if err := syscall.Fstat(int(meta.Fd()), &st); err == nil && st.Nlink == 0 {
			g.gone = fmt.Errorf("%w: %s was deleted from %s: the store's files were removed (nothing more is written)", ErrRemoved, metaName, dir)
			return g.gone
		}
	}
	if g.walFid > 0 {
		if err := syscall.Stat(walPath(dir, g.walFid), &st); errors.Is(err, syscall.ENOENT) {
			g.gone = fmt.Errorf("%w: Badger's write-ahead file %s was deleted from %s: what it held is lost (nothing more is written)", ErrRemoved, filepath.Base(walPath(dir, g.walFid)), dir)
			return g.gone
		}
	}
	return nil
}

// checkRoom says whether Badger can write without faulting: the directory
// is writable, the write-ahead file preallocated, the reserve free.
func (g *guard) checkRoom(dir string) error {
	if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnwritable, dir, err)
	}
	if err := g.backWAL(dir); err != nil {
		return err
	}
	free, inodes, err := g.free()
	if err != nil {
		return fmt.Errorf("allot: checking the free space of %s: %w", dir, err)
	}
	if need := g.needReserve(); free < need {
		return fmt.Errorf("%w: %s has %s free, below the store's reserve of %s: %w", ErrNoSpace, dir, size(free), size(need), syscall.ENOSPC)
	}
	if inodes < 16 {
		return fmt.Errorf("%w: %s has %d free inodes: %w", ErrNoSpace, dir, inodes, syscall.ENOSPC)
	}
	return nil
}

// memtableLost reports whether Badger has no memtable: a write that failed
// to create the next one leaves it nil, and Badger's next write would end
// the process (y.AssertTrue calls log.Fatal). A read looks at the memtable
// first, and panics on a nil one (recovered here; Badger's locks are
// released by its own defers on the way).
func memtableLost(db *badger.DB) (lost bool) {
	defer func() {
		if recover() != nil {
			lost = true
		}
	}()
	_ = db.View(func(txn *badger.Txn) error {
		_, _ = txn.Get(keyState)
		return nil
	})
	return false
}

func (g *guard) close() {
	if g != nil && g.dirf != nil {
		_ = g.dirf.Close()
		g.dirf = nil
	}
}

// tableBytes returns the size of dir's table files.
func tableBytes(dir string) int64 {
	var n int64
	files, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// size formats a number of bytes.
func size(n int64) string {
	switch {
	case n >= 10<<30:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 10<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 10<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
