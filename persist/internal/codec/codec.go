// Package codec encodes and decodes the records of package persist. It is
// apart so that it can be fuzzed without Badger in the binary.
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/allot-go/allot/engine"
)

// FormatVersion is the version of the record format, the first byte of
// every value. Version 2: a Credits counter holds the units spent (version
// 1 held the units left, and is refused). Every value ends in a CRC-32C of
// what precedes it, so damage is an error, never a misread counter.
//
//	byte     version (2)
//	byte     flags: 1 revoked, 2 rotated out, 4 registration follows
//	registration: uvarint, nonzero
//	rotated out:  [32]byte the key it went to, int64 grace end (ns, big-endian)
//	otherwise:    uvarint count, then per limit:
//	              byte kind, uvarint quota, varint period (ns), uvarint rate,
//	              string name, string location, uvarint counter
//	uint32   CRC-32C (big-endian)
//
// Strings are a uvarint length and bytes. Keys are "k/" and the SHA-256 of
// the API key: the raw key is never written.
const FormatVersion = 2

// Sentinel errors; package persist exports them under the same names.
var (
	ErrCorrupt     = errors.New("allot: store is damaged")
	ErrVersion     = errors.New("allot: store format version unknown")
	ErrUnsupported = errors.New("allot: value cannot be stored")
)

const (
	flagRevoked = 1 << iota
	flagRotated
	flagRegistration // a uvarint registration number follows the flags
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// KeyPrefix starts the database key of every record.
const KeyPrefix = "k/"

// Key returns the database key of the record of id.
func Key(id engine.KeyID) []byte { return append([]byte(KeyPrefix), id[:]...) }

// Encode returns the stored form of r.
func Encode(r engine.Record) ([]byte, error) {
	b := make([]byte, 0, 64+48*len(r.Limits))
	b = append(b, FormatVersion)
	var flags byte
	if r.Revoked {
		flags |= flagRevoked
	}
	if r.RotatedTo != nil {
		flags |= flagRotated
	}
	if r.Registration != 0 {
		flags |= flagRegistration
	}
	b = append(b, flags)
	if r.Registration != 0 {
		b = binary.AppendUvarint(b, r.Registration)
	}
	if r.RotatedTo != nil {
		b = append(b, r.RotatedTo[:]...)
		var grace int64
		if !r.GraceUntil.IsZero() {
			grace = r.GraceUntil.UnixNano()
		}
		b = binary.BigEndian.AppendUint64(b, uint64(grace))
	} else {
		if len(r.Counters) != len(r.Limits) {
			return nil, fmt.Errorf("%w: %d counters for %d limits", ErrUnsupported, len(r.Counters), len(r.Limits))
		}
		b = binary.AppendUvarint(b, uint64(len(r.Limits)))
		for i, l := range r.Limits {
			loc := ""
			if l.Kind() == engine.KindMonth {
				loc = l.Location().String()
				if _, err := time.LoadLocation(loc); err != nil {
					return nil, fmt.Errorf("%w: location %q of limit %q cannot be loaded back (use UTC, Local or an IANA name)", ErrUnsupported, loc, l.Name())
				}
			}
			b = append(b, byte(l.Kind()))
			b = binary.AppendUvarint(b, uint64(l.Quota()))
			b = binary.AppendVarint(b, int64(l.Period()))
			b = binary.AppendUvarint(b, uint64(l.RateN()))
			b = appendString(b, l.Name())
			b = appendString(b, loc)
			b = binary.AppendUvarint(b, r.Counters[i])
		}
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decoder reads a record; its first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: record truncated or malformed at %s", ErrCorrupt, what)
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bytes(n int, what string) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.fail(what)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(what string) string {
	n := d.uvarint(what)
	if n > 1<<16 {
		d.fail(what)
		return ""
	}
	return string(d.bytes(int(n), what))
}

// Decode parses a record stored under id. Its errors match ErrCorrupt or
// ErrVersion.
func Decode(id engine.KeyID, v []byte) (engine.Record, error) {
	r := engine.Record{ID: id}
	if len(v) < 6 {
		return r, fmt.Errorf("%w: record of %d bytes", ErrCorrupt, len(v))
	}
	body, sum := v[:len(v)-4], binary.BigEndian.Uint32(v[len(v)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return r, fmt.Errorf("%w: record checksum mismatch", ErrCorrupt)
	}
	if body[0] != FormatVersion {
		return r, fmt.Errorf("%w: record version %d, this build reads %d", ErrVersion, body[0], FormatVersion)
	}
	d := &decoder{b: body[1:]}
	flags := d.byte("flags")
	if flags&^(flagRevoked|flagRotated|flagRegistration) != 0 {
		return r, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	r.Revoked = flags&flagRevoked != 0
	if flags&flagRegistration != 0 {
		if r.Registration = d.uvarint("registration"); r.Registration == 0 {
			d.fail("registration")
		}
	}
	if flags&flagRotated != 0 {
		var t engine.KeyID
		copy(t[:], d.bytes(len(t), "rotation target"))
		r.RotatedTo = &t
		if gb := d.bytes(8, "grace"); gb != nil {
			if g := int64(binary.BigEndian.Uint64(gb)); g != 0 {
				r.GraceUntil = time.Unix(0, g).UTC()
			}
		}
	} else {
		n := d.uvarint("limit count")
		if n == 0 || n > engine.MaxLimits {
			d.fail("limit count")
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			kind := engine.Kind(d.byte("kind"))
			quota := int64(d.uvarint("quota"))
			period := time.Duration(d.varint("period"))
			rate := int64(d.uvarint("rate"))
			name := d.string("name")
			locName := d.string("location")
			counter := d.uvarint("counter")
			var l engine.Limit
			switch kind {
			case engine.KindCredits:
				l = engine.Credits(quota)
			case engine.KindWindow:
				l = engine.PerWindow(quota, period)
			case engine.KindMonth:
				loc, err := time.LoadLocation(locName)
				if err != nil {
					return r, fmt.Errorf("%w: location %q: %v", ErrCorrupt, locName, err)
				}
				l = engine.PerMonthIn(quota, loc)
			case engine.KindRate:
				l = engine.Rate(rate, period, quota)
			default:
				d.fail("kind")
			}
			r.Limits = append(r.Limits, l.Named(name))
			r.Counters = append(r.Counters, counter)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("end")
	}
	return r, d.err
}
