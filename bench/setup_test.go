package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/bench/internal/keyseq"
)

// The key sequences mirror engine/bench_test.go: the same key names, the
// same generator and seed, the same walk. Every implementation walks the
// same sequence, each goroutine from its own offset.

var ctx = context.Background()

// dist is a key distribution.
type dist struct {
	name string
	keys int  // number of distinct keys registered
	zipf bool // Zipf(1.1) instead of uniform
	// minDistinct is the fewest distinct keys the sequence must hold: a
	// benchmark that says it spreads its keys must really do so
	// (go-limiter's published benchmark hit the key "" every time).
	minDistinct int
}

var dists = []dist{
	{name: "hot", keys: 1, minDistinct: 1},
	{name: "uniform1k", keys: 1000, minDistinct: 1000},
	// 2^20 draws of Zipf(1.1) over 10^6 keys hit 141,806 distinct
	// keys with this seed; the top key takes about 12% of the draws.
	{name: "zipf1m", keys: 1_000_000, zipf: true, minDistinct: 100_000},
}

const seqLen = keyseq.Len

var (
	seqMu    sync.Mutex
	seqCache = map[string][]int32{}
	keyNames []string // "key-0", "key-1", ...: what callers pass
)

// names returns the first n key names.
func names(n int) []string {
	seqMu.Lock()
	defer seqMu.Unlock()
	keyNames = keyseq.Names(keyNames, n)
	return keyNames[:n]
}

// sequence returns the key indexes the goroutines walk, and fails the
// benchmark unless they are spread as the distribution says.
func sequence(b testing.TB, d dist) []int32 {
	names(d.keys)
	seqMu.Lock()
	defer seqMu.Unlock()
	if s, ok := seqCache[d.name]; ok {
		return s
	}
	s := keyseq.Generate(d.keys, d.zipf)
	if n := distinct(s); n < d.minDistinct {
		b.Fatalf("%s: only %d distinct keys in the sequence, want at least %d", d.name, n, d.minDistinct)
	}
	seqCache[d.name] = s
	return s
}

func distinct(s []int32) int {
	seen := make(map[int32]struct{}, 1024)
	for _, k := range s {
		seen[k] = struct{}{}
	}
	return len(seen)
}

// walker hands each goroutine of a RunParallel its own starting point in
// the shared sequence, and adds up what was granted. A goroutine counts
// its position up from its start and reads the sequence at position &
// seqMask; it hands back where it started and ended (finish), so that the
// keys a run really reached can be counted.
type walker struct {
	seq     []int32
	keys    []string
	off     atomic.Uint32
	granted atomic.Int64

	mu    sync.Mutex
	spans [][2]int // start and end position of each goroutine
}

const seqMask = seqLen - 1

func (w *walker) start() int { return int(w.off.Add(7919)*104729) % seqLen }

// finish records that a goroutine walked from position start to end and
// was granted n calls.
func (w *walker) finish(start, end int, n int64) {
	w.granted.Add(n)
	w.mu.Lock()
	w.spans = append(w.spans, [2]int{start, end})
	w.mu.Unlock()
}

// calls returns the number of calls the goroutines made.
func (w *walker) calls() int {
	n := 0
	for _, sp := range w.spans {
		n += sp[1] - sp[0]
	}
	return n
}

// reached returns the number of distinct keys of the spans walked.
func (w *walker) reached() int {
	seen := make([]bool, len(w.keys))
	n := 0
	mark := func(part []int32) {
		for _, k := range part {
			if !seen[k] {
				seen[k] = true
				n++
			}
		}
	}
	for _, sp := range w.spans {
		lo, calls := sp[0]&seqMask, sp[1]-sp[0]
		switch {
		case calls >= seqLen:
			mark(w.seq)
		case lo+calls <= seqLen:
			mark(w.seq[lo : lo+calls])
		default:
			mark(w.seq[lo:])
			mark(w.seq[:lo+calls-seqLen])
		}
	}
	return n
}

// check verifies that an implementation granted what it should: every call
// on the allow path, none on the deny path.
func check(b *testing.B, p path, granted int64) {
	b.Helper()
	if p == deny && granted != 0 {
		b.Fatalf("deny path granted %d of %d", granted, b.N)
	}
	if p == allow && granted != int64(b.N) {
		b.Fatalf("allow path granted %d of %d", granted, b.N)
	}
}

// live holds the state of one implementation for one distribution and
// path. A leaf benchmark is called many times in a row (once per -cpu value
// and -count), so its state is built on the first call and kept; it is
// released when another leaf needs another state, so at most one 1M-key
// state is alive at a time.
var live struct {
	id    string
	v     any
	close func()
}

// state returns the state named id, building it with build if it is not
// the live one (releasing the live one first).
func state(b *testing.B, id string, build func() (any, func())) any {
	b.Helper()
	if live.id == id {
		return live.v
	}
	release()
	t0 := time.Now()
	v, c := build()
	if d := time.Since(t0); d > time.Second {
		b.Logf("built %s in %v", id, d.Round(time.Millisecond))
	}
	if b.Failed() {
		if c != nil {
			c()
		}
		b.FailNow()
	}
	live.id, live.v, live.close = id, v, c
	return v
}

// release drops the live state and gives its memory back.
func release() {
	if live.close != nil {
		live.close()
	}
	live.id, live.v, live.close = "", nil, nil
	runtime.GC()
	debug.FreeOSMemory()
}

func TestMain(m *testing.M) {
	code := m.Run()
	release()
	os.Exit(code)
}

// parallel runs f from n goroutines over the indexes 0..count-1, stopping
// at the first error.
func parallel(n, count int, f func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(count))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func stateID(impl string, d dist, p path) string {
	return fmt.Sprint(impl, "/", d.name, "/", p)
}

// skipBig reports whether the 1M-key sets are to be skipped, for a quick
// look at the others (ALLOT_BENCH_SMALL=1).
func skipBig() bool { return os.Getenv("ALLOT_BENCH_SMALL") != "" }
