package engine

import (
	"crypto/rand"
	"fmt"
	"hash/crc32"
	"unsafe"
)

// The format of the keys NewKey makes (its doc comment describes it).
const (
	// MaxKeyPrefixLen is the longest prefix NewKey takes.
	MaxKeyPrefixLen = 16
	// KeyBodyLen is the number of random base62 characters of a key.
	KeyBodyLen = 30
	// KeyChecksumLen is the number of base62 characters of its checksum.
	KeyChecksumLen = 6
	// KeyPattern is a regular expression (RE2, as package regexp) that
	// matches a whole key of NewKey's format, checksum unchecked. Without
	// its anchors ^ and $, and with \b around it, it finds keys in text.
	KeyPattern = `^[a-z0-9](?:[a-z0-9_]{0,14}[a-z0-9])?_[0-9A-Za-z]{36}$`
)

// ErrBadChecksum is returned by CheckKey for a string of the keys' format
// whose checksum does not match: a mistyped or made-up key. It matches
// ErrInvalidKey too.
var ErrBadChecksum = fmt.Errorf("%w: checksum mismatch", ErrInvalidKey)

// The errors of CheckKey and NewKey for a malformed key or prefix, built
// once: CheckKey runs on every request of a middleware that checks keys,
// and must not allocate.
var (
	errKeyFormat = fmt.Errorf("%w: not of the format of NewKey (prefix, '_', 36 base62 characters)", ErrInvalidKey)
	errPrefix    = fmt.Errorf("%w: prefix must be 1 to %d characters of [a-z0-9_], not starting or ending with '_'", ErrInvalidKey, MaxKeyPrefixLen)
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewKey returns a new random API key, with a checksum that CheckKey
// verifies. An invalid prefix gives an error matching ErrInvalidKey. NewKey
// only makes the string: Register it to give it limits.
//
// A key is prefix, '_', body and checksum, with nothing between them:
//
//   - prefix: the caller's, 1 to MaxKeyPrefixLen (16) characters of
//     [a-z0-9_] that neither start nor end with '_' (for example "sk_live");
//   - body: KeyBodyLen (30) characters of the base62 alphabet 0-9A-Za-z
//     (in that order), each drawn uniformly from crypto/rand: 30 × log2(62),
//     about 178 bits;
//   - checksum: the CRC-32 (IEEE, as hash/crc32.ChecksumIEEE) of prefix,
//     '_' and body, in base62 with the same alphabet, most significant digit
//     first, left-padded with '0' to KeyChecksumLen (6) characters.
//
// So the part after the last '_' is always 36 base62 characters, and a key
// is at most 16+1+36 = 53 bytes, for example
//
//	sk_live_2Ct0qGzVnR8uJ1aXkPw5mLd3Ye7HbF0xbso0
//
// (body 2Ct0qGzVnR8uJ1aXkPw5mLd3Ye7HbF, checksum 0xbso0). KeyPattern matches
// exactly the strings of this form:
//
//	^[a-z0-9](?:[a-z0-9_]{0,14}[a-z0-9])?_[0-9A-Za-z]{36}$
//
// A secret scanner that knows its prefix (say "sk_live") matches
// \bsk_live_[0-9A-Za-z]{36}\b, and may verify the checksum to drop false
// positives.
func NewKey(prefix string) (string, error) {
	if !validPrefix(prefix) {
		return "", errPrefix
	}
	b := make([]byte, 0, len(prefix)+1+KeyBodyLen+KeyChecksumLen)
	b = append(b, prefix...)
	b = append(b, '_')
	// Rejection sampling: a byte below 248 (4 × 62) gives a character
	// uniformly; the others (3%) are drawn again.
	var buf [64]byte
	for len(b) < len(prefix)+1+KeyBodyLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("allot: reading random bytes: %w", err)
		}
		for _, r := range buf {
			if r < 248 && len(b) < len(prefix)+1+KeyBodyLen {
				b = append(b, base62[r%62])
			}
		}
	}
	b = appendChecksum(b, checksum(string(b)))
	return string(b), nil
}

// CheckKey reports whether key has NewKey's format and a checksum that
// matches: nil if so; otherwise an error matching ErrInvalidKey, and
// ErrBadChecksum if only the checksum is wrong. Any change of one character
// of a key is caught. It neither allocates nor looks anything up (tens of
// nanoseconds): a middleware calls it to refuse a mistyped or random key
// before asking the engine (httpadapter.WithKeyChecksum).
func CheckKey(key string) error {
	const tail = KeyBodyLen + KeyChecksumLen
	n := len(key) - tail - 1 // the prefix's length
	if n < 1 || n > MaxKeyPrefixLen || key[n] != '_' || !validPrefix(key[:n]) {
		return errKeyFormat
	}
	var bad uint8
	for i := n + 1; i < len(key); i++ {
		bad |= keyChars[key[i]] ^ isB62
	}
	if bad&isB62 != 0 {
		return errKeyFormat
	}
	// The 6 digits read as a number (below 62^6, every character being
	// base62) equal the CRC-32 exactly when its encoding equals them.
	var v uint64
	for i := len(key) - KeyChecksumLen; i < len(key); i++ {
		v = v*62 + uint64(digit62[key[i]])
	}
	if v != uint64(checksum(key[:len(key)-KeyChecksumLen])) {
		return ErrBadChecksum
	}
	return nil
}

// digit62 is the value of each character of the base62 alphabet.
var digit62 = func() (t [256]uint8) {
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = uint8(i)
	}
	return t
}()

// keyChars classifies bytes: isB62 for the base62 alphabet, isPrefix for
// the characters of a prefix.
var keyChars = func() (t [256]uint8) {
	for i := range t {
		c := byte(i)
		if '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' {
			t[i] |= isB62
		}
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' {
			t[i] |= isPrefix
		}
	}
	return t
}()

const (
	isB62 uint8 = 1 << iota
	isPrefix
)

// validPrefix reports whether p is 1 to MaxKeyPrefixLen characters of
// [a-z0-9_] that neither start nor end with '_'.
func validPrefix(p string) bool {
	if len(p) < 1 || len(p) > MaxKeyPrefixLen || p[0] == '_' || p[len(p)-1] == '_' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if keyChars[p[i]]&isPrefix == 0 {
			return false
		}
	}
	return true
}

// checksum is crc32.ChecksumIEEE of s. The slice it is handed shares s's
// bytes (no copy, no allocation): ChecksumIEEE only reads it.
func checksum(s string) uint32 {
	return crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// appendChecksum appends c in KeyChecksumLen base62 digits, most
// significant first (62^6 > 2^32, so every CRC-32 fits).
func appendChecksum(b []byte, c uint32) []byte {
	var d [KeyChecksumLen]byte
	for i := KeyChecksumLen - 1; i >= 0; i-- {
		d[i] = base62[c%62]
		c /= 62
	}
	return append(b, d[:]...)
}
