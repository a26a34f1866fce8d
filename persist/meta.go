package persist

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// The store's own metadata, beside Badger's files, so that a store that
// lost records refuses to open instead of opening without them.
//
// Badger keeps, in every Save's transaction, the key m/state: a generation
// number (one more at each Save) and the number of records. The meta file,
// allot.meta, holds the last generation and count known durable. The two
// cannot change atomically together, so the order is fixed: the meta file
// only ever takes a state after Badger's transaction of that state has
// committed (and synced). A crash between them leaves the meta file behind
// Badger, never ahead, and Open accepts that. A Save that deletes records
// lowers the count in the same transaction, so the meta file's count holds
// for its own generation only: a meta file behind Badger may count records
// deleted since.
//
// Open refuses (ErrCorrupt, naming what it found) when:
//   - Badger's generation is below the meta file's: writes that were durable
//     are gone (a damaged or deleted MANIFEST, table or write-ahead file);
//   - Badger holds fewer records than its own count, or than the meta
//     file's when both are at the same generation: records are gone while
//     newer writes survived (tables dropped from a damaged MANIFEST, with
//     the write-ahead log intact);
//   - the meta file is missing while Badger has a generation, or the meta
//     file is damaged, or is another store's (store ids differ);
//   - the meta file has a generation but the MANIFEST is missing (checked
//     before Badger opens: Badger would start a new MANIFEST and delete
//     every table).
//
// The meta file is created whole (a temporary file, fsync, rename, fsync of
// the directory) before Badger ever holds a generation, and is then written
// in place: two slots of 512 bytes, each with its own checksum, written in
// turn and synced, so that a torn write leaves the other slot whole. Open
// reads the slot with the highest generation.

const (
	metaName   = "allot.meta"
	metaSlot   = 512
	metaLen    = 44 // magic 7, version 1, id 16, generation 8, count 8, CRC-32C 4
	metaFormat = 1
	metaMagic  = "allotmt"
)

var (
	keyState = []byte("m/state") // generation and record count, in every Save
	keyID    = []byte("m/id")    // the store's id, as in its meta file
	// keyCompact is written and dropped by Compact: Badger's DropPrefix,
	// which flushes the memtables, acts only on a prefix that has a key.
	keyCompact = []byte("m/compact")
)

// metaState is what the meta file and m/state hold.
type metaState struct {
	id    [16]byte
	gen   uint64
	count uint64
}

func (m metaState) slot() []byte {
	b := make([]byte, 0, metaLen)
	b = append(b, metaMagic...)
	b = append(b, metaFormat)
	b = append(b, m.id[:]...)
	b = binary.BigEndian.AppendUint64(b, m.gen)
	b = binary.BigEndian.AppendUint64(b, m.count)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// readMeta reads the meta file of dir, and says which slot holds what it
// returns. ok is false if there is none; a file with no whole slot is an
// error matching ErrCorrupt.
func readMeta(dir string) (m metaState, slot int, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, metaName))
	if errors.Is(err, fs.ErrNotExist) {
		return m, 0, false, nil
	}
	if err != nil {
		return m, 0, false, fmt.Errorf("allot: reading %s: %w", metaName, err)
	}
	found := false
	for off := 0; off+metaLen <= len(b) && off < 2*metaSlot; off += metaSlot {
		s := b[off : off+metaLen]
		if string(s[:7]) != metaMagic || crc32.Checksum(s[:metaLen-4], crcTable) != binary.BigEndian.Uint32(s[metaLen-4:]) {
			continue
		}
		if s[7] != metaFormat {
			return m, 0, true, fmt.Errorf("%w: %s format %d, this build reads %d", ErrVersion, metaName, s[7], metaFormat)
		}
		var c metaState
		copy(c.id[:], s[8:24])
		c.gen = binary.BigEndian.Uint64(s[24:32])
		c.count = binary.BigEndian.Uint64(s[32:40])
		if !found || c.gen > m.gen {
			if found && c.id != m.id {
				return m, 0, true, fmt.Errorf("%w: %s damaged: its slots name two stores", ErrCorrupt, metaName)
			}
			m, slot, found = c, off/metaSlot, true
		}
	}
	if !found {
		return m, 0, true, fmt.Errorf("%w: %s damaged (%d bytes, no slot with a valid checksum): the store's generation and record count are unknown", ErrCorrupt, metaName, len(b))
	}
	return m, slot, true, nil
}

// newStoreID returns a random store id.
func newStoreID() (id [16]byte) {
	_, _ = rand.Read(id[:])
	return id
}

// metaFile writes the meta file in place, slot after slot.
type metaFile struct {
	mu   sync.Mutex
	f    *os.File
	next int // the slot the next write goes to
	last metaState
}

// createMeta writes a new meta file holding m, whole or not at all, and
// opens it.
func createMeta(dir string, m metaState) (*metaFile, error) {
	tmp := filepath.Join(dir, metaName+".tmp")
	b := make([]byte, 2*metaSlot)
	copy(b, m.slot())
	copy(b[metaSlot:], m.slot())
	if err := writeSynced(tmp, b); err != nil {
		return nil, fmt.Errorf("allot: creating %s: %w", metaName, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, metaName)); err != nil {
		return nil, fmt.Errorf("allot: creating %s: %w", metaName, err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("allot: creating %s: %w", metaName, err)
	}
	return openMeta(dir, m, 0)
}

// openMeta opens the meta file of dir, whose slot holds m, for writing.
func openMeta(dir string, m metaState, slot int) (*metaFile, error) {
	f, err := os.OpenFile(filepath.Join(dir, metaName), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("allot: opening %s: %w", metaName, err)
	}
	return &metaFile{f: f, last: m, next: 1 - slot}, nil
}

// write records m, if it is newer than what the file holds, and syncs it.
func (mf *metaFile) write(m metaState) error {
	mf.mu.Lock()
	defer mf.mu.Unlock()
	if m.gen <= mf.last.gen {
		return nil
	}
	// The slot written is never the one holding the newest state: a torn
	// write leaves that one whole. Both hold it after creation.
	if _, err := mf.f.WriteAt(m.slot(), int64(mf.next*metaSlot)); err != nil {
		return err
	}
	if err := syscall.Fdatasync(int(mf.f.Fd())); err != nil {
		return err
	}
	mf.next, mf.last = 1-mf.next, m
	return nil
}

func (mf *metaFile) close() error { return mf.f.Close() }

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// stateValue and parseState encode m/state: generation, count, CRC-32C.
func stateValue(gen, count uint64) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 20), gen)
	b = binary.BigEndian.AppendUint64(b, count)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

func parseState(v []byte) (gen, count uint64, err error) {
	if len(v) != 20 || crc32.Checksum(v[:16], crcTable) != binary.BigEndian.Uint32(v[16:]) {
		return 0, 0, fmt.Errorf("%w: m/state damaged", ErrCorrupt)
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:16]), nil
}

// keySet holds a 64-bit fingerprint of every record's key (its digest's
// first 8 bytes), so that Save knows which records are new without reading
// Badger: open addressing, linear probing, 8 bytes a slot, at most 3/4 full.
// Two keys with the same fingerprint (about one chance in 2^64/n² ) count as
// one: the count then falls short, which only weakens the check, never
// fails a sound store.
type keySet struct {
	slots []uint64
	n     int
}

func fingerprint(id []byte) uint64 {
	if fp := binary.LittleEndian.Uint64(id[:8]); fp != 0 {
		return fp
	}
	return 1
}

// add inserts fp and reports whether it was not there.
func (s *keySet) add(fp uint64) bool {
	if 4*(s.n+1) > 3*len(s.slots) {
		s.grow()
	}
	mask := uint64(len(s.slots) - 1)
	for i := fp & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case fp:
			return false
		case 0:
			s.slots[i] = fp
			s.n++
			return true
		}
	}
}

// find returns the slot of fp, and false if fp is not in the set.
func (s *keySet) find(fp uint64) (uint64, bool) {
	if s.n == 0 {
		return 0, false
	}
	mask := uint64(len(s.slots) - 1)
	for i := fp & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case fp:
			return i, true
		case 0:
			return 0, false
		}
	}
}

// has reports whether fp is in the set.
func (s *keySet) has(fp uint64) bool {
	_, ok := s.find(fp)
	return ok
}

// remove deletes fp, if it is there (backward-shift deletion: no
// tombstones).
func (s *keySet) remove(fp uint64) {
	i, ok := s.find(fp)
	if !ok {
		return
	}
	mask := uint64(len(s.slots) - 1)
	for j := (i + 1) & mask; s.slots[j] != 0; j = (j + 1) & mask {
		// The entry at j may move into the hole at i if its home slot
		// does not lie cyclically in (i, j].
		if home := s.slots[j] & mask; (j-home)&mask >= (j-i)&mask {
			s.slots[i], i = s.slots[j], j
		}
	}
	s.slots[i] = 0
	s.n--
}

func (s *keySet) grow() {
	old := s.slots
	s.slots, s.n = make([]uint64, max(2*len(old), 1024)), 0
	for _, fp := range old {
		if fp != 0 {
			s.add(fp)
		}
	}
}
