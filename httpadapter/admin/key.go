package admin

import (
	"crypto/rand"
	"math/big"
)

// KeyPrefix starts every key the handler generates.
const KeyPrefix = "sk_"

// keyDigits is the number of base62 digits of 20 random bytes: 62^27 >
// 2^160.
const keyDigits = 27

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newKey returns a new API key: KeyPrefix and 160 bits from crypto/rand in
// base62, always 27 digits (leading zeros kept), 30 bytes in all.
//
// TODO: use engine.NewKey, with its checksum, once the engine has it.
func newKey() string {
	var b [20]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24 and later)
	n := new(big.Int).SetBytes(b[:])
	base, d := big.NewInt(62), new(big.Int)
	out := make([]byte, len(KeyPrefix)+keyDigits)
	copy(out, KeyPrefix)
	for i := len(out) - 1; i >= len(KeyPrefix); i-- {
		n.DivMod(n, base, d)
		out[i] = base62[d.Int64()]
	}
	return string(out)
}
