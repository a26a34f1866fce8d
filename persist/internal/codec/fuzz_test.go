package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
)

// FuzzDecode feeds arbitrary bytes to the record decoder: it returns a
// record or an error matching ErrCorrupt or ErrVersion, never panics, and a
// record it accepts encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	id := engine.IDOf("k")
	for _, r := range []engine.Record{
		{ID: id, Limits: []engine.Limit{engine.Credits(10)}, Counters: []uint64{3}},
		{ID: id, Limits: []engine.Limit{engine.PerWindow(5, time.Hour).Named("h"), engine.Rate(1, time.Second, 9), engine.PerMonth(7)}, Counters: []uint64{1, 2, 3}, Revoked: true},
		{ID: id, RotatedTo: &id, GraceUntil: time.Unix(1_800_000_000, 0)},
	} {
		b, err := Encode(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 1, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(id, b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("decode error %v matches neither ErrCorrupt nor ErrVersion", err)
			}
			return
		}
		again, err := Encode(r)
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("round trip changed the bytes:\n%x\n%x", b, again)
		}
	})
}

// FuzzDecodeBody is FuzzDecode past the checksum: it appends a valid CRC to
// the fuzzed bytes, so the parser behind it is explored too.
func FuzzDecodeBody(f *testing.F) {
	id := engine.IDOf("k")
	r := engine.Record{ID: id, Limits: []engine.Limit{engine.PerWindow(5, time.Hour), engine.Rate(1, time.Second, 9), engine.PerMonth(7), engine.Credits(4)}, Counters: []uint64{1, 2, 3, 4}}
	b, err := Encode(r)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b[:len(b)-4])
	f.Add([]byte{FormatVersion, flagRotated})
	f.Add([]byte{FormatVersion, 0, 9})
	f.Fuzz(func(t *testing.T, body []byte) {
		v := binary.BigEndian.AppendUint32(append([]byte(nil), body...), crc32.Checksum(body, castagnoli))
		r, err := Decode(id, v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("decode error %v matches neither ErrCorrupt nor ErrVersion", err)
			}
			return
		}
		if _, err := Encode(r); err != nil && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("decoded record does not encode: %v", err)
		}
	})
}
