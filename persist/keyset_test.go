package persist

import (
	"math/rand/v2"
	"testing"
)

// The key set against a map: adds, removes (backward-shift deletion across
// clusters that wrap around the end of the slots) and lookups, through
// growth. Fingerprints are drawn from a small range so that clusters form.
func TestKeySetAgainstMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var s keySet
	want := map[uint64]bool{}
	for i := range 30_000 {
		fp := 1 + r.Uint64N(1500)
		if i%7 == 0 {
			fp |= uint64(r.Uint32()) << 32 // homes spread over all the slots
		}
		switch r.IntN(3) {
		case 0, 1:
			if got := s.add(fp); got != !want[fp] {
				t.Fatalf("step %d: add(%d) = %v with the key there: %v", i, fp, got, want[fp])
			}
			want[fp] = true
		default:
			s.remove(fp)
			delete(want, fp)
		}
		if s.n != len(want) {
			t.Fatalf("step %d: %d keys in the set, %d in the map", i, s.n, len(want))
		}
		if probe := 1 + r.Uint64N(1500); s.has(probe) != want[probe] {
			t.Fatalf("step %d: has(%d) = %v, want %v", i, probe, !want[probe], want[probe])
		}
	}
	for fp := range want {
		if !s.has(fp) {
			t.Fatalf("%d lost", fp)
		}
	}
}
