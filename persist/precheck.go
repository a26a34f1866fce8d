package persist

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/allot-go/allot/persist/internal/codec"
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/fb"
	badgeropts "github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
)

// manifest is what readManifest found of Badger's MANIFEST.
type manifest struct {
	exists bool
	ok     bool // it could be read (Badger's Open reports why not)
	tables map[uint64]bool
	torn   bool // it ends in a partial change set, which Badger cuts off
}

// readManifest reads Badger's MANIFEST in dir, as Badger's Open will.
func readManifest(dir string, bo badger.Options) (manifest, error) {
	f, err := os.Open(filepath.Join(dir, "MANIFEST"))
	if errors.Is(err, fs.ErrNotExist) {
		return manifest{}, nil
	}
	if err != nil {
		return manifest{}, fmt.Errorf("allot: reading the MANIFEST: %w", err)
	}
	defer f.Close()
	m, end, err := badger.ReplayManifestFile(f, bo.ExternalMagicVersion, bo)
	if err != nil {
		return manifest{exists: true}, nil
	}
	fi, err := f.Stat()
	if err != nil {
		return manifest{}, fmt.Errorf("allot: reading the MANIFEST: %w", err)
	}
	mf := manifest{exists: true, ok: true, tables: map[uint64]bool{}, torn: end < fi.Size()}
	for id := range m.Tables {
		mf.tables[id] = true
	}
	return mf, nil
}

// checkTables reads the footer of every table file in dir and checks what
// Badger would otherwise trust at Open: the checksum of the table's index,
// and that every block the index names lies inside the file. Badger opens
// tables in goroutines of its own, where a damaged footer is a panic no
// caller can recover; this turns it into an error first.
//
// Only tables the MANIFEST lists are checked: Badger deletes the others (a
// crash in the middle of a flush leaves such orphans, empty or half written).
// If the MANIFEST itself cannot be read, Badger's Open reports it.
func checkTables(dir string, mf manifest) error {
	for id := range mf.tables {
		f := table.NewFilename(id, dir)
		if err := checkTable(f); err != nil {
			return fmt.Errorf("%w: table %s: %v", ErrCorrupt, filepath.Base(f), err)
		}
	}
	return nil
}

// keepOrphans hard-links into dir/allot-kept every table file that the
// MANIFEST does not list, and copies a MANIFEST that ends in a partial change
// set: Badger's Open deletes the one and cuts the other. After a crash they
// are leftovers (a flush or compaction that did not finish) and Open removes
// the copies again; after damage to the MANIFEST they are what the store
// lost, and a refused Open leaves them there. Without a MANIFEST, every
// table is an orphan. It returns the paths made.
func keepOrphans(dir string, mf manifest) ([]string, error) {
	if mf.exists && !mf.ok {
		return nil, nil // Badger's Open fails, and touches nothing
	}
	var orphans []string
	files, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, f := range files {
		var id uint64
		if n, err := fmt.Sscanf(filepath.Base(f), "%06d.sst", &id); n != 1 || err != nil || mf.tables[id] {
			continue
		}
		if fi, err := os.Stat(f); err == nil && fi.Size() > 0 {
			orphans = append(orphans, f)
		}
	}
	if len(orphans) == 0 && !mf.torn {
		return nil, nil
	}
	keep := filepath.Join(dir, keptDir)
	if err := os.MkdirAll(keep, 0o700); err != nil {
		return nil, fmt.Errorf("allot: keeping table files: %w", err)
	}
	var made []string
	for _, f := range orphans {
		to := filepath.Join(keep, filepath.Base(f))
		if err := os.Link(f, to); err != nil && !errors.Is(err, fs.ErrExist) {
			return made, fmt.Errorf("allot: keeping %s: %w", filepath.Base(f), err)
		}
		made = append(made, to)
	}
	if mf.torn {
		b, err := os.ReadFile(filepath.Join(dir, "MANIFEST"))
		if err == nil {
			to := filepath.Join(keep, "MANIFEST")
			if err = writeSynced(to, b); err == nil {
				made = append(made, to)
			}
		}
		if err != nil {
			return made, fmt.Errorf("allot: keeping the MANIFEST: %w", err)
		}
	}
	return made, nil
}

// newerInOrphans reads the kept tables (those Badger dropped at Open, not
// listed in its MANIFEST) and counts the writes in them that the open store
// does not have, at their version or a newer one (a record the store does
// not hold at all is not counted: it may have been deleted, and a record
// lost shows in the counts). After a crash such a
// table is a flush or compaction that did not finish: its writes are also
// in the write-ahead file, or in the tables it came from, and the count is
// 0. After damage to the MANIFEST it is a table the store lost: a record
// in it comes back older or not at all, which the record count alone does
// not show. A table that is not whole (a crash while it was written) is
// skipped: its writes are in the write-ahead file still.
func newerInOrphans(db *badger.DB, kept []string) (newer int, table string, err error) {
	for _, k := range kept {
		if !strings.HasSuffix(k, ".sst") || checkTable(k) != nil {
			continue
		}
		n, err := newerIn(db, k)
		if err != nil {
			return 0, "", fmt.Errorf("%w: reading the dropped table %s: %v", ErrCorrupt, filepath.Base(k), err)
		}
		if n > 0 {
			newer, table = newer+n, filepath.Base(k)
		}
	}
	return newer, table, nil
}

func newerIn(db *badger.DB, path string) (newer int, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("unreadable: %v", p)
		}
	}()
	data, err := os.ReadFile(path) // in memory: releasing a table opened from its file would delete the file
	if err != nil {
		return 0, err
	}
	t, err := table.OpenInMemoryTable(data, 0, &table.Options{Compression: badgeropts.None, ChkMode: badgeropts.NoVerification})
	if err != nil {
		return 0, err
	}
	defer func() { _ = t.DecrRef() }()
	it := t.NewIterator(0)
	defer func() { _ = it.Close() }()
	err = db.View(func(txn *badger.Txn) error {
		for it.Rewind(); it.Valid(); it.Next() {
			key, version := y.ParseKey(it.Key()), y.ParseTs(it.Key())
			if bytes.HasPrefix(key, []byte("!badger!")) {
				continue
			}
			item, err := txn.Get(bytes.Clone(key))
			switch {
			case errors.Is(err, badger.ErrKeyNotFound) && (bytes.HasPrefix(key, []byte(codec.KeyPrefix)) || bytes.Equal(key, keyCompact)):
				// A record deleted since (a compaction drops its deletion
				// too), or Compact's marker: gone by design. A record lost
				// instead shows in the counts (m/state is in every Save).
			case errors.Is(err, badger.ErrKeyNotFound):
				newer++
			case err != nil:
				return err
			case item.Version() < version:
				newer++
			}
		}
		return nil
	})
	return newer, err
}

func checkTable(path string) (err error) {
	defer func() {
		if p := recover(); p != nil { // a flatbuffer that lies about itself
			err = fmt.Errorf("index unreadable: %v", p)
		}
	}()
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	pos := len(data) - 4
	if pos < 0 {
		return fmt.Errorf("%d bytes", len(data))
	}
	sumLen := int(binary.BigEndian.Uint32(data[pos:]))
	if sumLen > pos {
		return fmt.Errorf("checksum length %d", sumLen)
	}
	pos -= sumLen
	algo, sum, ok := parseChecksum(data[pos : pos+sumLen])
	if !ok {
		return fmt.Errorf("checksum unreadable")
	}
	if pos -= 4; pos < 0 {
		return fmt.Errorf("no index length")
	}
	indexLen := int(binary.BigEndian.Uint32(data[pos:]))
	if indexLen > pos {
		return fmt.Errorf("index length %d", indexLen)
	}
	pos -= indexLen
	index := data[pos : pos+indexLen]
	if err := y.VerifyChecksum(index, &pb.Checksum{Algo: pb.Checksum_Algorithm(algo), Sum: sum}); err != nil {
		return err
	}
	ti := fb.GetRootAsTableIndex(index, 0)
	var bo fb.BlockOffset
	for i := 0; i < ti.OffsetsLength(); i++ {
		if !ti.Offsets(&bo, i) || int(bo.Offset())+int(bo.Len()) > pos {
			return fmt.Errorf("block %d outside the file", i)
		}
		if err := checkBlock(data[bo.Offset() : bo.Offset()+bo.Len()]); err != nil {
			return fmt.Errorf("block %d: %v", i, err)
		}
	}
	return nil
}

// checkBlock verifies an uncompressed block as Badger lays it out: entries,
// entry offsets, their count (4 bytes), the checksum of all that, and the
// checksum's length (4 bytes). Badger would slice by these numbers without
// checking them.
func checkBlock(b []byte) error {
	pos := len(b) - 4
	if pos < 0 {
		return fmt.Errorf("%d bytes", len(b))
	}
	sumLen := int(binary.BigEndian.Uint32(b[pos:]))
	if sumLen > pos-4 {
		return fmt.Errorf("checksum length %d", sumLen)
	}
	pos -= sumLen
	algo, sum, ok := parseChecksum(b[pos : pos+sumLen])
	if !ok {
		return fmt.Errorf("checksum unreadable")
	}
	if err := y.VerifyChecksum(b[:pos], &pb.Checksum{Algo: pb.Checksum_Algorithm(algo), Sum: sum}); err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint32(b[pos-4:]))
	if n < 0 || n > (pos-4)/4 {
		return fmt.Errorf("%d entries", n)
	}
	return nil
}

// parseChecksum reads Badger's pb.Checksum message: field 1 the algorithm,
// field 2 the sum, both varints.
func parseChecksum(b []byte) (algo int32, sum uint64, ok bool) {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, 0, false
		}
		b = b[n:]
		v, n := binary.Uvarint(b)
		if n <= 0 || tag&7 != 0 {
			return 0, 0, false
		}
		b = b[n:]
		switch tag >> 3 {
		case 1:
			algo = int32(v)
		case 2:
			sum = v
		}
	}
	return algo, sum, algo == int32(pb.Checksum_CRC32C) || algo == int32(pb.Checksum_XXHash64)
}
