package persist

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist/internal/codec"
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"google.golang.org/protobuf/proto"
)

// A backup is Badger's own backup stream (DB.Backup: length-prefixed
// protocol buffers, each a list of entries) between a header and a trailer
// of ours:
//
//	header   "ALLOTBAK", byte backup format (1), byte record format
//	         (codec.FormatVersion), int64 time of the backup (ns since the
//	         Unix epoch): 18 bytes
//	stream   what DB.Backup wrote, of a snapshot of the store
//	trailer  "ALLOTEND", uint64 length of the stream, uint64 records,
//	         uint64 generation, [16]byte store id, then the SHA-256 of
//	         everything before it: 80 bytes
//
// Integers are big-endian. Every record in the stream was decoded as it was
// written, and Restore decodes every record, and checks the sum, the
// lengths and the counts, before it writes anything.
const (
	backupMagic   = "ALLOTBAK"
	backupEnd     = "ALLOTEND"
	backupFormat  = 1
	backupHeader  = 8 + 1 + 1 + 8
	backupTrailer = 8 + 8 + 8 + 8 + 16 + sha256.Size
)

// BackupInfo describes a backup.
type BackupInfo struct {
	// Info is the store's id, and its generation and records at the time
	// of the backup.
	Info
	// Time is when the backup was taken.
	Time time.Time
	// Bytes is the size of the backup, and SHA256 the sum in its trailer.
	Bytes  int64
	SHA256 [sha256.Size]byte
}

// String describes the backup in one line.
func (b BackupInfo) String() string {
	return fmt.Sprintf("%s, taken %s, %d bytes, sha256 %s", b.Info, b.Time.UTC().Format(time.RFC3339), b.Bytes, hex.EncodeToString(b.SHA256[:]))
}

// Backup writes a backup of the store to w: a snapshot of every record as
// of one moment (Badger's), while Load and Save go on. It is the way to
// back up a store that a running process holds: Badger lets no other
// process open its directory, not even to read it. Close waits for a
// Backup in progress.
//
// The backup holds what a restart at that moment would find: in lease mode
// (the default) a key's counters are the ends of its durable reservations,
// every reserved unit counted as spent; after the engine's Close, or with
// engine.WithLease(engine.LeaseOptions{Exact: true}), they are exact.
// Restore it with Restore, or `allot restore`.
func (s *Store) Backup(w io.Writer) (BackupInfo, error) {
	var info BackupInfo
	err := s.use(func(db *badger.DB) error {
		h := sha256.New()
		out := &countWriter{w: io.MultiWriter(w, h)}
		info.Time = time.Now()
		hdr := append([]byte(backupMagic), backupFormat, codec.FormatVersion)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(info.Time.UnixNano()))
		if _, err := out.Write(hdr); err != nil {
			return fmt.Errorf("allot: writing the backup: %w", err)
		}
		sc := &scanner{}
		stream := &countWriter{w: io.MultiWriter(out, sc)}
		if _, err := db.Backup(stream, 0); err != nil {
			if sc.err != nil {
				return sc.err
			}
			return fmt.Errorf("allot: writing the backup: %w", err)
		}
		if err := sc.end(); err != nil {
			return err
		}
		info.Info = sc.info
		_, err := out.Write(trailer(stream.n, sc.info))
		if err == nil {
			_, err = w.Write(h.Sum(nil))
		}
		if err != nil {
			return fmt.Errorf("allot: writing the backup: %w", err)
		}
		info.Bytes = out.n + sha256.Size
		copy(info.SHA256[:], h.Sum(nil))
		return nil
	})
	return info, err
}

// BackupFile writes a backup of the store (as Backup) to the file path,
// whole or not at all: into a new file beside it, synced, then renamed to
// path (replacing a file there) and the directory synced.
func (s *Store) BackupFile(path string) (BackupInfo, error) { return backupFile(path, s.Backup) }

func backupFile(path string, backup func(io.Writer) (BackupInfo, error)) (BackupInfo, error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return BackupInfo{}, fmt.Errorf("allot: writing the backup: %w", err)
	}
	defer os.Remove(f.Name()) // gone after the rename
	info, err := backup(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return info, fmt.Errorf("allot: writing the backup %s: %w", path, err)
	}
	return info, nil
}

func trailer(streamLen int64, i Info) []byte {
	b := append([]byte(nil), backupEnd...)
	b = binary.BigEndian.AppendUint64(b, uint64(streamLen))
	b = binary.BigEndian.AppendUint64(b, i.Records)
	b = binary.BigEndian.AppendUint64(b, i.Generation)
	return append(b, i.ID[:]...)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// scanner reads Badger's backup stream as it is written (an io.Writer) and
// checks every entry: a record that decodes, the store's state, id and
// format. Its first error sticks, and fails the Write that found it.
type scanner struct {
	buf    []byte
	info   Info
	state  bool   // m/state seen
	id     bool   // m/id seen
	format bool   // m/format seen
	count  uint64 // the records m/state counts
	err    error
}

// bitDelete is Badger's meta bit of a deletion marker (badger.bitDelete).
const bitDelete = 1 << 0

func (sc *scanner) Write(p []byte) (int, error) {
	if sc.err != nil {
		return 0, sc.err
	}
	sc.buf = append(sc.buf, p...)
	for len(sc.buf) >= 8 {
		n := binary.LittleEndian.Uint64(sc.buf)
		if n > 1<<31 {
			sc.err = fmt.Errorf("%w: backup stream: a list of %d bytes", ErrCorrupt, n)
			return 0, sc.err
		}
		if uint64(len(sc.buf)-8) < n {
			break
		}
		if sc.err = sc.list(sc.buf[8 : 8+n]); sc.err != nil {
			return 0, sc.err
		}
		sc.buf = sc.buf[8+n:]
	}
	if len(sc.buf) == 0 {
		sc.buf = sc.buf[:0:0] // let a large list's buffer go
	}
	return len(p), nil
}

// list checks one list of entries. A key's versions come together, newest
// first: the first one decides whether the key is live.
func (sc *scanner) list(b []byte) error {
	var l pb.KVList
	if err := proto.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("%w: backup stream: %v", ErrCorrupt, err)
	}
	var prev []byte
	for _, kv := range l.Kv {
		if prev != nil && bytes.Equal(kv.Key, prev) {
			continue // an older version, or the marker below a newest one
		}
		prev = kv.Key
		if len(kv.Meta) > 0 && kv.Meta[0]&bitDelete != 0 {
			continue // deleted
		}
		if err := sc.entry(kv.Key, kv.Value); err != nil {
			return err
		}
	}
	return nil
}

func (sc *scanner) entry(k, v []byte) error {
	switch {
	case bytes.HasPrefix(k, []byte(codec.KeyPrefix)):
		if len(k) != len(codec.KeyPrefix)+len(engine.KeyID{}) {
			return fmt.Errorf("%w: backup stream: key of %d bytes", ErrCorrupt, len(k))
		}
		id := engine.KeyID(k[len(codec.KeyPrefix):])
		if _, err := codec.Decode(id, v); err != nil {
			return fmt.Errorf("backup stream: record %x: %w", id[:4], err)
		}
		sc.info.Records++
	case bytes.Equal(k, keyState):
		gen, count, err := parseState(v)
		if err != nil {
			return err
		}
		sc.state, sc.info.Generation, sc.count = true, gen, count
	case bytes.Equal(k, keyID):
		if len(v) != len(sc.info.ID) {
			return fmt.Errorf("%w: backup stream: m/id of %d bytes", ErrCorrupt, len(v))
		}
		sc.id = true
		copy(sc.info.ID[:], v)
	case bytes.Equal(k, metaVersion):
		if len(v) != 1 || v[0] != codec.FormatVersion {
			return fmt.Errorf("%w: backup stream: store format %v, this build reads %d", ErrVersion, v, codec.FormatVersion)
		}
		sc.format = true
	case bytes.HasPrefix(k, []byte("m/")):
		// Metadata of a later version of the store: carried as it is.
	default:
		return fmt.Errorf("%w: backup stream: an entry under the unknown key %q", ErrCorrupt, k)
	}
	return nil
}

// end checks that the stream ended whole and held a store.
func (sc *scanner) end() error {
	switch {
	case sc.err != nil:
		return sc.err
	case len(sc.buf) > 0:
		return fmt.Errorf("%w: backup stream: %d bytes after the last whole list", ErrCorrupt, len(sc.buf))
	case !sc.state || !sc.id || !sc.format:
		return fmt.Errorf("%w: backup stream: the store's state, id or format is missing", ErrCorrupt)
	case sc.info.Records < sc.count:
		return fmt.Errorf("%w: backup stream: %d records, the store's count says %d", ErrCorrupt, sc.info.Records, sc.count)
	}
	return nil
}

// CheckBackup reads a backup from r to its end and checks it as Restore
// does before it writes anything: the header, the sum, the lengths and
// counts of the trailer, and every entry of the stream (every record
// decoded). Damage is an error matching ErrCorrupt; a backup of another
// format, ErrVersion.
func CheckBackup(r io.Reader) (BackupInfo, error) {
	var info BackupInfo
	hdr := make([]byte, backupHeader)
	if _, err := io.ReadFull(r, hdr); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return info, fmt.Errorf("%w: not an allot backup (%v)", ErrCorrupt, err)
		}
		return info, fmt.Errorf("allot: reading the backup: %w", err)
	}
	switch {
	case string(hdr[:8]) != backupMagic:
		return info, fmt.Errorf("%w: not an allot backup (it starts with %q)", ErrCorrupt, hdr[:8])
	case hdr[8] != backupFormat:
		return info, fmt.Errorf("%w: backup format %d, this build reads %d", ErrVersion, hdr[8], backupFormat)
	case hdr[9] != codec.FormatVersion:
		return info, fmt.Errorf("%w: a backup of records of format %d, this build reads %d", ErrVersion, hdr[9], codec.FormatVersion)
	}
	info.Time = time.Unix(0, int64(binary.BigEndian.Uint64(hdr[10:]))).UTC()
	h := sha256.New()
	h.Write(hdr)
	sc := &scanner{}
	t := &holdBack{h: h, sc: sc}
	n, err := io.Copy(t, r)
	if err != nil {
		return info, fmt.Errorf("allot: reading the backup: %w", err)
	}
	if len(t.keep) < backupTrailer {
		return info, fmt.Errorf("%w: backup truncated (%d bytes)", ErrCorrupt, backupHeader+n)
	}
	tr := t.keep
	h.Write(tr[:backupTrailer-sha256.Size])
	info.Bytes = backupHeader + n
	copy(info.SHA256[:], tr[backupTrailer-sha256.Size:])
	if !bytes.Equal(h.Sum(nil), info.SHA256[:]) {
		return info, fmt.Errorf("%w: backup damaged or incomplete: its SHA-256 does not match its trailer", ErrCorrupt)
	}
	if string(tr[:8]) != backupEnd {
		return info, fmt.Errorf("%w: backup trailer unreadable", ErrCorrupt)
	}
	if err := sc.end(); err != nil {
		return info, err
	}
	want := trailer(t.n, sc.info)
	if !bytes.Equal(want, tr[:len(want)]) {
		return info, fmt.Errorf("%w: backup trailer says %d bytes of stream, %d records, generation %d; the stream holds %d bytes, %d records, generation %d",
			ErrCorrupt, binary.BigEndian.Uint64(tr[8:]), binary.BigEndian.Uint64(tr[16:]), binary.BigEndian.Uint64(tr[24:]), t.n, sc.info.Records, sc.info.Generation)
	}
	info.Info = sc.info
	return info, nil
}

// holdBack passes on to the sum and the scanner all but the last
// backupTrailer bytes written to it: the stream, without the trailer.
// The scanner's error is kept (the sum is checked first), not returned.
type holdBack struct {
	h    hash.Hash
	sc   *scanner
	keep []byte
	n    int64 // bytes passed on
}

func (t *holdBack) Write(p []byte) (int, error) {
	t.keep = append(t.keep, p...)
	if over := len(t.keep) - backupTrailer; over > 0 {
		t.h.Write(t.keep[:over])
		_, _ = t.sc.Write(t.keep[:over])
		t.n += int64(over)
		t.keep = append(t.keep[:0], t.keep[over:]...)
	}
	return len(p), nil
}

// Restore writes the backup read from r into dir, which must be empty or
// missing, and returns what it restored. It reads the whole backup and
// checks it (as CheckBackup does) before it writes anything; then it loads
// Badger's stream into a new directory beside dir, writes the store's meta
// file, opens the result with every check of Open and closes it, and only
// then renames it to dir: a failure or a crash leaves dir as it was (a
// crash may leave a directory .allot-restore-* beside it). If r is not an
// *os.File, or not a regular file, the backup is first copied to a
// temporary file (os.TempDir).
//
// Open of the restored directory gives every key exactly the state it had
// in the backup; the store keeps its id and generation.
func Restore(r io.Reader, dir string, opts ...Option) (info BackupInfo, err error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := checkEmpty(dir); err != nil {
		return info, err
	}
	f, cleanup, err := seekable(r)
	if err != nil {
		return info, err
	}
	defer cleanup()
	if info, err = CheckBackup(f); err != nil {
		return info, err
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return info, fmt.Errorf("allot: restoring into %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, ".allot-restore-")
	if err != nil {
		return info, fmt.Errorf("allot: restoring into %s: %w", dir, err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("allot: restoring into %s: %v", dir, p)
		}
		if err != nil {
			_ = os.RemoveAll(tmp)
			err = relocate(err, tmp, dir)
		}
	}()
	streamLen := info.Bytes - backupHeader - backupTrailer
	if err := load(f, streamLen, tmp, o); err != nil {
		return info, err
	}
	mf, err := createMeta(tmp, metaState{id: info.ID, gen: info.Generation, count: info.Records})
	if err != nil {
		return info, err
	}
	_ = mf.close()
	st, err := Open(tmp, opts...)
	if err != nil {
		return info, fmt.Errorf("allot: opening the restored store: %w", err)
	}
	got := st.Info()
	if err := st.Close(); err != nil {
		return info, fmt.Errorf("allot: closing the restored store: %w", err)
	}
	if got.ID != info.ID || got.Records != info.Records {
		return info, fmt.Errorf("%w: the restored store holds %s, the backup %s", ErrCorrupt, got, info.Info)
	}
	// rename(2) itself, which replaces an empty directory (os.Rename
	// refuses any directory).
	if err := syscall.Rename(tmp, dir); err != nil {
		return info, fmt.Errorf("allot: restoring into %s: %w", dir, err)
	}
	if err := syncDir(parent); err != nil {
		return info, fmt.Errorf("allot: restoring into %s: %w", dir, err)
	}
	return info, nil
}

// checkEmpty fails unless dir is missing or an empty directory.
func checkEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("allot: restoring into %s: %w", dir, err)
	case len(entries) > 0:
		return fmt.Errorf("allot: restoring into %s: the directory is not empty (%d entries); restore into an empty or new directory", dir, len(entries))
	}
	return nil
}

// seekable returns r as a regular file at its start, copying it to a
// temporary one if it is not.
func seekable(r io.Reader) (*os.File, func(), error) {
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			if _, err := f.Seek(0, io.SeekStart); err == nil {
				return f, func() {}, nil
			}
		}
	}
	f, err := os.CreateTemp("", "allot-backup-")
	if err != nil {
		return nil, nil, fmt.Errorf("allot: reading the backup: %w", err)
	}
	cleanup := func() { _ = f.Close(); _ = os.Remove(f.Name()) }
	if _, err := io.Copy(f, r); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("allot: reading the backup: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("allot: reading the backup: %w", err)
	}
	return f, cleanup, nil
}

// load loads n bytes of Badger's backup stream, from f after the header,
// into a new Badger in dir, opened as the store opens it.
func load(f *os.File, n int64, dir string, o options) error {
	bo, err := badgerOptions(dir, o)
	if err != nil {
		return err
	}
	g, err := openGuard(dir, bo, o.reserve)
	if err != nil {
		return err
	}
	free, _, err := g.free()
	need := 2*g.memTable + g.needReserve() + 2*n // the write-ahead files and the tables
	g.close()
	if err == nil && free < need {
		return fmt.Errorf("%w: %s has %s free; restoring a stream of %s needs %s", ErrNoSpace, dir, size(free), size(n), size(need))
	}
	if _, err := f.Seek(backupHeader, io.SeekStart); err != nil {
		return fmt.Errorf("allot: reading the backup: %w", err)
	}
	db, err := badger.Open(bo)
	if err != nil {
		return fmt.Errorf("allot: creating the store: %w", err)
	}
	err = db.Load(io.LimitReader(f, n), 16)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("allot: loading the backup: %w", err)
	}
	return nil
}
