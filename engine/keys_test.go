package engine_test

import (
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
)

var keyRE = regexp.MustCompile(engine.KeyPattern)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// The format, as NewKey's doc comment gives it: prefix, '_', 30 random
// base62 characters and the CRC-32 of the rest in 6 base62 digits,
// computed here independently with hash/crc32.
func TestNewKeyFormat(t *testing.T) {
	for _, prefix := range []string{"sk_live", "a", "0", "pk", "sk_test_2", strings.Repeat("z", engine.MaxKeyPrefixLen)} {
		key, err := engine.NewKey(prefix)
		require.NoError(t, err, prefix)
		require.Len(t, key, len(prefix)+1+36)
		require.True(t, strings.HasPrefix(key, prefix+"_"), key)
		require.Regexp(t, keyRE, key)
		require.LessOrEqual(t, len(key), engine.MaxKeyLen)
		require.NoError(t, engine.CheckKey(key))

		body := key[:len(key)-engine.KeyChecksumLen]
		c := crc32.ChecksumIEEE([]byte(body))
		var want [engine.KeyChecksumLen]byte
		for i := len(want) - 1; i >= 0; i-- {
			want[i], c = base62[c%62], c/62
		}
		require.Equal(t, string(want[:]), key[len(key)-engine.KeyChecksumLen:], key)
	}
	// The example of the doc comment, whose checksum a scanner's author
	// may check an implementation against.
	require.NoError(t, engine.CheckKey("sk_live_2Ct0qGzVnR8uJ1aXkPw5mLd3Ye7HbF0xbso0"))
	require.Equal(t, `^[a-z0-9](?:[a-z0-9_]{0,14}[a-z0-9])?_[0-9A-Za-z]{36}$`, engine.KeyPattern, "the doc comment gives this pattern")

	// The scanner's form of the pattern finds a key in text.
	key, err := engine.NewKey("sk_live")
	require.NoError(t, err)
	scan := regexp.MustCompile(`\bsk_live_[0-9A-Za-z]{36}\b`)
	require.Equal(t, key, scan.FindString("export TOKEN="+key+"\n"))
}

func TestNewKeyBadPrefix(t *testing.T) {
	for _, prefix := range []string{"", "_", "_sk", "sk_", "SK", "sk-live", "sk live", "é", strings.Repeat("a", engine.MaxKeyPrefixLen+1), "a\x00"} {
		key, err := engine.NewKey(prefix)
		require.ErrorIs(t, err, engine.ErrInvalidKey, "%q", prefix)
		require.Empty(t, key)
	}
}

// Keys never repeat, and their characters are spread over the whole
// alphabet (a body drawn from part of it would show here).
func TestNewKeyUnique(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	seen := make(map[string]bool, n)
	var counts [256]int
	for range n {
		key, err := engine.NewKey("sk")
		require.NoError(t, err)
		require.False(t, seen[key], "repeated key")
		seen[key] = true
		for i := 3; i < 3+engine.KeyBodyLen; i++ {
			counts[key[i]]++
		}
	}
	want := float64(n*engine.KeyBodyLen) / 62
	for _, c := range []byte(base62) {
		// Each character within 7 standard deviations of its share
		// (a count is binomial, sigma about sqrt(want)): a false alarm
		// once in about 10^11 runs for the 62 of them, while a
		// character drawn half as often is 70 sigma off at n = 10,000.
		require.InDelta(t, want, float64(counts[c]), 7*math.Sqrt(want), "character %q", c)
	}
}

// Every change of one character of a key, to any other byte, is caught;
// so is every truncation.
func TestCheckKeyCatchesEveryOneCharacterChange(t *testing.T) {
	changes := 0
	for _, prefix := range []string{"sk_live", "x", "pk0123456789abcd"} {
		for range 20 {
			key, err := engine.NewKey(prefix)
			require.NoError(t, err)
			b := []byte(key)
			for i := range b {
				orig := b[i]
				for c := range 256 {
					if byte(c) == orig {
						continue
					}
					b[i] = byte(c)
					err := engine.CheckKey(string(b))
					require.ErrorIs(t, err, engine.ErrInvalidKey, "%q", b)
					changes++
				}
				b[i] = orig
				require.Error(t, engine.CheckKey(key[:i]), "truncated to %d", i)
			}
			require.NoError(t, engine.CheckKey(string(b)))
		}
	}
	t.Logf("%d one-character changes, all caught", changes)
}

func TestCheckKeyErrors(t *testing.T) {
	key, err := engine.NewKey("sk_live")
	require.NoError(t, err)
	last := key[len(key)-1]
	other := byte('0')
	if last == '0' {
		other = '1'
	}
	typo := key[:len(key)-1] + string(other)
	require.ErrorIs(t, engine.CheckKey(typo), engine.ErrBadChecksum)
	require.ErrorIs(t, engine.CheckKey(typo), engine.ErrInvalidKey)
	for _, s := range []string{"", "_", "sk_live", "sk_live_", "nope", key + "0", "SK" + key[2:], strings.Repeat("a", 100)} {
		err := engine.CheckKey(s)
		require.ErrorIs(t, err, engine.ErrInvalidKey, "%q", s)
		require.False(t, errors.Is(err, engine.ErrBadChecksum), "%q is not of the format at all", s)
	}
}

// CheckKey runs on every request of a middleware that checks keys: it
// never allocates, whether the key passes or not.
func TestCheckKeyAllocs(t *testing.T) {
	key, err := engine.NewKey("sk_live")
	require.NoError(t, err)
	bad := key[:10] + "x" + key[11:]
	if bad == key {
		bad = key[:10] + "y" + key[11:]
	}
	for _, k := range []string{key, bad, "nope"} {
		require.Zero(t, testing.AllocsPerRun(100, func() { _ = engine.CheckKey(k) }), k)
	}
}

// CheckKey never panics; what it accepts has the documented format, and
// what it refuses matches ErrInvalidKey.
func FuzzCheckKey(f *testing.F) {
	for _, p := range []string{"sk_live", "a", "pk0123456789abcd"} {
		k, err := engine.NewKey(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(k)
		f.Add(k[:len(k)-1])
		f.Add(strings.ToUpper(k))
	}
	f.Add("")
	f.Add("_")
	f.Add("__" + strings.Repeat("0", 36))
	f.Add("a_" + strings.Repeat("0", 36))
	f.Fuzz(func(t *testing.T, key string) {
		err := engine.CheckKey(key)
		if err == nil {
			if !keyRE.MatchString(key) {
				t.Fatalf("CheckKey accepted %q, which KeyPattern does not match", key)
			}
			return
		}
		if !errors.Is(err, engine.ErrInvalidKey) {
			t.Fatalf("CheckKey(%q) = %v, not ErrInvalidKey", key, err)
		}
	})
}

// BenchmarkCheckKey is what the middleware pays per request to check a key.
func BenchmarkCheckKey(b *testing.B) {
	key, err := engine.NewKey("sk_live")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if engine.CheckKey(key) != nil {
			b.Fatal("refused")
		}
	}
}

// A new key matches KeyPattern and passes CheckKey; a mistyped one fails it
// (the key itself is random, so it is not printed).
func ExampleNewKey() {
	key, err := engine.NewKey("sk_live")
	if err != nil {
		panic(err)
	}
	fmt.Println(regexp.MustCompile(engine.KeyPattern).MatchString(key), engine.CheckKey(key))

	// The last character mistyped: still the format, a wrong checksum.
	typo := []byte(key)
	if typo[len(typo)-1] == 'x' {
		typo[len(typo)-1] = 'y'
	} else {
		typo[len(typo)-1] = 'x'
	}
	err = engine.CheckKey(string(typo))
	fmt.Println(regexp.MustCompile(engine.KeyPattern).Match(typo), err, errors.Is(err, engine.ErrInvalidKey))
	// Output:
	// true <nil>
	// true allot: invalid key: checksum mismatch true
}
