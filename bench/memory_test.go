package bench

import (
	"runtime"
	"testing"
)

// memKeys is the number of keys BenchmarkMemory registers.
const memKeys = 1_000_000

// memImpls are the stores BenchmarkMemory weighs: allot's memory-only
// engine (keys with one Credits limit, and keys with two limits), a
// map[string]*paddedCounter holding the same state (the floor's map, 64
// bytes a key plus the map), the same in an xsync.MapOf, the naive
// map[string]int64, and the peers' in-memory stores. (The persisted engine's Badger tables live
// mostly outside the Go heap, and Redis in another process.)
var memImpls = []struct {
	name string
	im   string // the implementation whose allow-path state is weighed
}{
	{"map", "floor"},
	{"xsync", "xsync"},
	{"naive", "naive"},
	{"allot", "allot"},
	{"allot-multi", "allot-multi"},
	{"xrate", "xrate"},
	{"golimiter", "golimiter"},
	{"ulule", "ulule"},
	{"throttled", "throttled"},
}

var memResults = map[string][2]float64{} // name: B/key, setup ns/key

// BenchmarkMemory reports the heap bytes per key ("B/key") of 1,000,000
// keys with full quotas: runtime.GC and HeapAlloc before and after building
// the store, which holds its own copy of every key. It measures once per
// store (run it with -benchtime=1x); "setup-ns/key" is the time the store
// took to build, per key.
func BenchmarkMemory(b *testing.B) {
	for _, m := range memImpls {
		b.Run("impl="+m.name, func(b *testing.B) {
			if skipBig() {
				b.Skip("1M-key sets skipped (ALLOT_BENCH_SMALL is set)")
			}
			r, ok := memResults[m.name]
			if !ok {
				r = weigh(b, m.im)
				memResults[m.name] = r
			}
			b.ReportMetric(0, "ns/op") // nothing is timed per op
			b.ReportMetric(r[0], "B/key")
			b.ReportMetric(r[1], "setup-ns/key")
		})
	}
}

func weigh(b *testing.B, name string) [2]float64 {
	var im *impl
	for i := range impls {
		if impls[i].name == name {
			im = &impls[i]
		}
	}
	keys := names(memKeys)
	release()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	st, done := im.build(b, keys, allow)
	b.StopTimer()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(st)
	if done != nil {
		done()
	}
	st = nil
	runtime.GC()
	return [2]float64{
		(float64(after.HeapAlloc) - float64(before.HeapAlloc)) / memKeys,
		float64(b.Elapsed().Nanoseconds()) / memKeys,
	}
}
