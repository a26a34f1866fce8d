// Package keyseq makes the key sequences of the benchmarks: the key names
// and the generator and seed of engine/bench_test.go, shared by the
// benchmarks of package bench and the programs of bench/cmd.
package keyseq

import (
	"math/rand/v2"
	"strconv"
)

// Len is the length of a sequence: 2^20 key indexes.
const Len = 1 << 20

// Name returns the name of key i: "key-<i>".
func Name(i int) string { return "key-" + strconv.Itoa(i) }

// Names returns dst with the names of keys len(dst) to n-1 appended.
func Names(dst []string, n int) []string {
	for len(dst) < n {
		dst = append(dst, Name(len(dst)))
	}
	return dst
}

// Generate returns Len indexes of n keys: Zipf(1.1) if zipf
// (rand.NewZipf(r, 1.1, 1, n-1)), else uniform, from a PCG seeded 1, 2.
func Generate(n int, zipf bool) []int32 {
	r := rand.New(rand.NewPCG(1, 2))
	s := make([]int32, Len)
	var z *rand.Zipf
	if zipf {
		z = rand.NewZipf(r, 1.1, 1, uint64(n-1))
	}
	for i := range s {
		if z != nil {
			s[i] = int32(z.Uint64())
		} else {
			s[i] = int32(r.IntN(n))
		}
	}
	return s
}
