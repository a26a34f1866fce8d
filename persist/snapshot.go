package persist

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/allot-go/allot/engine"
)

// Snapshot is a store directory as an operator's tool reads it: a private
// copy, taken while no process holds the directory, and opened with every
// check of Open. The directory itself is never written, so a snapshot of a
// directory that a crash left behind, or that Open would refuse, changes
// nothing there: Open's repairs (write-ahead files replayed, leftovers of a
// crash removed) happen in the copy.
//
// Badger does not let a second process open a directory that a running
// store holds, not even read-only: its lock is a flock of the directory,
// exclusive for a writer and shared for a reader. So OpenSnapshot of a
// directory held by a running process fails with ErrLocked; a running
// application backs its store up with (*Store).Backup instead.
type Snapshot struct {
	dir, tmp string
	st       *Store
}

// OpenSnapshot copies the store in dir into a temporary directory (under
// os.TempDir, so TMPDIR chooses where: it needs room for a copy of dir and
// a write-ahead file of 32 MiB) and opens the copy with opts, as Open
// would open dir. It fails with ErrLocked while another process (or a
// Store in this one) holds dir, for the time of the copy it keeps Open of
// dir from starting (Open fails with ErrLocked), and it fails with the
// error of Open, ErrCorrupt or ErrVersion say, in which paths name dir,
// if Open would refuse dir. A directory that holds no store is an error
// matching ErrCorrupt; OpenSnapshot never creates one.
func OpenSnapshot(dir string, opts ...Option) (_ *Snapshot, err error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("allot: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("allot: %s is not a directory", dir)
	}
	unlock, err := holdShared(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !holdsStore(dir) {
		return nil, fmt.Errorf("%w: %s holds no store (no MANIFEST, %s or table)", ErrCorrupt, dir, metaName)
	}
	tmp, err := os.MkdirTemp("", "allot-snapshot-")
	if err != nil {
		return nil, fmt.Errorf("allot: copying %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := copyStore(dir, tmp); err != nil {
		return nil, fmt.Errorf("allot: copying %s: %w", dir, err)
	}
	unlock()
	// The copy is read and thrown away: no reserve of free space is kept
	// for later writes to it.
	st, err := Open(tmp, append(opts[:len(opts):len(opts)], WithFreeSpaceReserve(0))...)
	if err != nil {
		return nil, relocate(err, tmp, dir)
	}
	return &Snapshot{dir: dir, tmp: tmp, st: st}, nil
}

// Load calls fn with every record of the snapshot, each decoded as Open's
// engine would decode it; it stops at the first record it cannot read.
func (s *Snapshot) Load(ctx context.Context, fn func(engine.Record) error) error {
	return relocate(s.st.Load(ctx, fn), s.tmp, s.dir)
}

// Info returns the snapshot's store id, generation and record count.
func (s *Snapshot) Info() Info { return s.st.Info() }

// Backup writes a backup of the snapshot to w, as (*Store).Backup does.
func (s *Snapshot) Backup(w io.Writer) (BackupInfo, error) {
	info, err := s.st.Backup(w)
	return info, relocate(err, s.tmp, s.dir)
}

// BackupFile writes a backup of the snapshot to the file path, as
// (*Store).BackupFile does.
func (s *Snapshot) BackupFile(path string) (BackupInfo, error) {
	return backupFile(path, s.Backup)
}

// Close closes the snapshot and removes its copy.
func (s *Snapshot) Close() error {
	err := s.st.Close()
	if rerr := os.RemoveAll(s.tmp); err == nil {
		err = rerr
	}
	return relocate(err, s.tmp, s.dir)
}

// Info describes a store: its id (random, made when the store was
// created), its generation (one more at every Save) and the number of its
// records.
type Info struct {
	ID         [16]byte
	Generation uint64
	Records    uint64
}

// String returns the id in hex, the generation and the count.
func (i Info) String() string {
	return fmt.Sprintf("store %s, generation %d, %d records", hex.EncodeToString(i.ID[:]), i.Generation, i.Records)
}

// Info returns the store's id, generation and record count, as of its last
// Save.
func (s *Store) Info() Info {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return Info{ID: s.id, Generation: s.gen, Records: s.count}
}

// holdShared takes the locks a Store holds, shared, and returns their
// release (which may be called more than once): the store's allot.lock if
// there is one, and Badger's, a flock of the directory itself. Either held
// by a running store is ErrLocked.
func holdShared(dir string) (_ func(), err error) {
	var held []*os.File
	release := func() {
		for _, f := range held {
			_ = f.Close()
		}
		held = nil
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	lock := func(path string) error {
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) && path != dir {
			return nil // no store has run here since the lock file came in
		}
		if err != nil {
			return fmt.Errorf("allot: locking %s: %w", dir, err)
		}
		held = append(held, f)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return inUse(dir)
			}
			return fmt.Errorf("allot: locking %s: %w", dir, err)
		}
		return nil
	}
	if err := lock(filepath.Join(dir, lockName)); err != nil {
		return nil, err
	}
	if err := lock(dir); err != nil {
		return nil, err
	}
	return release, nil
}

// inUse is the error for a directory that a running store holds, with the
// process id Badger writes into its LOCK file, if it is there.
func inUse(dir string) error {
	e := &lockedError{dir: dir}
	if b, err := os.ReadFile(filepath.Join(dir, "LOCK")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			e.pid = pid
		}
	}
	return e
}

// lockedError is ErrLocked for a snapshot: the directory, and the process
// that holds it if Badger's LOCK file names it.
type lockedError struct {
	dir string
	pid int
}

func (e *lockedError) Error() string {
	who := ""
	if e.pid > 0 {
		who = fmt.Sprintf(" (pid %d, from Badger's LOCK file)", e.pid)
	}
	return fmt.Sprintf("allot: %s is in use by a running process%s: Badger lets no other process open it, not even read-only; stop that process first, or back up from inside it with (*persist.Store).Backup", e.dir, who)
}

func (e *lockedError) Is(target error) bool { return target == ErrLocked }

// holdsStore reports whether dir has any of a store's files.
func holdsStore(dir string) bool {
	for _, pattern := range []string{"MANIFEST", metaName, "*.sst", "*.mem"} {
		if m, _ := filepath.Glob(filepath.Join(dir, pattern)); len(m) > 0 {
			return true
		}
	}
	return false
}

// copyStore copies the store's files in from (its regular files, but for
// the lock files, and the tables kept in allot-kept) into the directory to.
func copyStore(from, to string) error {
	for _, sub := range []string{"", keptDir} {
		entries, err := os.ReadDir(filepath.Join(from, sub))
		if errors.Is(err, fs.ErrNotExist) && sub != "" {
			continue
		}
		if err != nil {
			return err
		}
		if sub != "" {
			if err := os.Mkdir(filepath.Join(to, sub), 0o700); err != nil {
				return err
			}
		}
		for _, e := range entries {
			if !e.Type().IsRegular() || (sub == "" && (e.Name() == lockName || e.Name() == "LOCK")) {
				continue
			}
			if err := copyFile(filepath.Join(from, sub, e.Name()), filepath.Join(to, sub, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// relocate returns err with the path of a copy replaced by that of the
// directory copied; it still matches what err matches.
func relocate(err error, tmp, dir string) error {
	if err == nil || !strings.Contains(err.Error(), tmp) {
		return err
	}
	return relocated{err, tmp, dir}
}

type relocated struct {
	err      error
	tmp, dir string
}

func (r relocated) Error() string { return strings.ReplaceAll(r.err.Error(), r.tmp, r.dir) }
func (r relocated) Unwrap() error { return r.err }
