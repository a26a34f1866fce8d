package engine_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/shard"
)

// The benchmarks compare, in one run, allot's Consume with two floors:
//
//	cas:   a CAS loop on one counter, no lookup (the cost of the atomic);
//	floor: a lookup in a pre-built read-only map[string]*counter, then a CAS
//	       loop on that key's padded counter: the least any exact limiter
//	       must do.
//
// Each runs for one hot key, 1,000 keys drawn uniformly and 1,000,000 keys
// drawn Zipf(1.1), on the allow path (a quota that never runs out) and the
// deny path (an exhausted quota). Every implementation walks the same key
// sequence.
//
//	go test -run=^$ -bench=Consume -cpu=1,2,8 -count=5 ./engine

type dist struct {
	name string
	keys int
	zipf bool
}

var dists = []dist{{"hot", 1, false}, {"uniform1k", 1000, false}, {"zipf1m", 1_000_000, true}}

const seqLen = 1 << 20

var (
	seqMu    sync.Mutex
	seqCache = map[string][]int32{}
	keyNames []string
)

func keyName(i int) string {
	for len(keyNames) <= i {
		keyNames = append(keyNames, "key-"+strconv.Itoa(len(keyNames)))
	}
	return keyNames[i]
}

// sequence returns the key indexes the goroutines walk, and checks that they
// really are spread (go-limiter's published benchmark used one key by
// mistake).
func sequence(b *testing.B, d dist) []int32 {
	seqMu.Lock()
	defer seqMu.Unlock()
	if s, ok := seqCache[d.name]; ok {
		return s
	}
	r := rand.New(rand.NewPCG(1, 2))
	s := make([]int32, seqLen)
	var z *rand.Zipf
	if d.zipf {
		z = rand.NewZipf(r, 1.1, 1, uint64(d.keys-1))
	}
	seen := map[int32]bool{}
	for i := range s {
		if z != nil {
			s[i] = int32(z.Uint64())
		} else {
			s[i] = int32(r.IntN(d.keys))
		}
		seen[s[i]] = true
	}
	want := min(d.keys, 1000)
	if len(seen) < want {
		b.Fatalf("%s: only %d distinct keys in the sequence", d.name, len(seen))
	}
	for i := range d.keys {
		keyName(i)
	}
	seqCache[d.name] = s
	return s
}

type counter struct {
	v atomic.Int64
	_ [shard.CacheLineSize - 8]byte
}

func casTake(c *atomic.Int64) bool {
	for {
		v := c.Load()
		if v < 1 {
			return false
		}
		if c.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

var (
	engMu    sync.Mutex
	engCache = map[string]*engine.Engine{}
)

func benchEngine(b *testing.B, d dist, deny, counting bool) *engine.Engine {
	engMu.Lock()
	defer engMu.Unlock()
	id := fmt.Sprint(d.name, deny, counting)
	if e, ok := engCache[id]; ok {
		return e
	}
	var opts []engine.Option
	if counting {
		opts = append(opts, engine.WithCounting())
	}
	e, err := engine.New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	quota := int64(engine.MaxCredits)
	if deny {
		quota = 1
	}
	for i := range d.keys {
		if err := e.Register(ctx, keyName(i), engine.Credits(quota)); err != nil {
			b.Fatal(err)
		}
		if deny {
			_, _ = e.Consume(ctx, keyName(i), 1)
		}
	}
	engCache[id] = e
	return e
}

func BenchmarkConsume(b *testing.B) {
	for _, d := range dists {
		for _, state := range []string{"allow", "deny"} {
			deny := state == "deny"
			b.Run("dist="+d.name+"/state="+state+"/impl=cas", func(b *testing.B) {
				var c counter
				if !deny {
					c.v.Store(1 << 62)
				}
				b.ReportAllocs()
				var granted atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					n := int64(0)
					for pb.Next() {
						if casTake(&c.v) {
							n++
						}
					}
					granted.Add(n)
				})
				check(b, deny, granted.Load())
			})
			b.Run("dist="+d.name+"/state="+state+"/impl=floor", func(b *testing.B) {
				seq := sequence(b, d)
				m := make(map[string]*counter, d.keys)
				for i := range d.keys {
					c := new(counter)
					if !deny {
						c.v.Store(1 << 62)
					}
					// A copy of the key, as a map filled from a config
					// or a database would hold: the lookup then compares
					// bytes, as allot's does, instead of finding the
					// caller's own string pointer.
					m[strings.Clone(keyName(i))] = c
				}
				var off atomic.Uint32
				var granted atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					i, n := int(off.Add(7919)*104729)%seqLen, int64(0)
					for pb.Next() {
						if casTake(&m[keyNames[seq[i]]].v) {
							n++
						}
						i = (i + 1) & (seqLen - 1)
					}
					granted.Add(n)
				})
				check(b, deny, granted.Load())
			})
			for _, counting := range []bool{false, true} {
				impl := "allot"
				if counting {
					impl = "allot-counting" // WithCounting: decisions counted for Stats
				}
				b.Run("dist="+d.name+"/state="+state+"/impl="+impl, func(b *testing.B) {
					seq := sequence(b, d)
					eng := benchEngine(b, d, deny, counting)
					var off atomic.Uint32
					var granted atomic.Int64
					b.ReportAllocs()
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						i, n := int(off.Add(7919)*104729)%seqLen, int64(0)
						for pb.Next() {
							d, err := eng.Consume(ctx, keyNames[seq[i]], 1)
							if err != nil {
								b.Error(err)
								return
							}
							if d.Allowed {
								n++
							}
							i = (i + 1) & (seqLen - 1)
						}
						granted.Add(n)
					})
					check(b, deny, granted.Load())
				})
			}
		}
	}
}

// check verifies that each implementation granted what it should: every call
// on the allow path, none on the deny path.
func check(b *testing.B, deny bool, granted int64) {
	b.Helper()
	if deny && granted != 0 {
		b.Fatalf("deny path granted %d", granted)
	}
	if !deny && granted != int64(b.N) {
		b.Fatalf("allow path granted %d of %d", granted, b.N)
	}
}
