package bench

import (
	"os"
	"strconv"
	"testing"
)

// BenchmarkContention runs every implementation on every distribution, on
// the allow path and the deny path:
//
//	impl=<name>/dist=<hot|uniform1k|zipf1m>/state=<allow|deny>
//
// Run it with -cpu=1,2,8,64 (goroutines = GOMAXPROCS; 64 on a small
// machine shows oversubscription). The Redis implementations run only when
// ALLOT_REDIS_ADDR is set, always with 64 requests in flight (see make
// bench-redis). The loops run implementation by implementation, so each
// state is built once and released before the next is built.
//
// Each run reports "keys": the distinct keys its calls reached (from the
// spans the goroutines walked). Once per implementation, on its first run
// of at least 100 calls, the probe (probeSpread) checks that its calls
// really go to the keys they name.
func BenchmarkContention(b *testing.B) {
	probed := map[string]bool{}
	for _, im := range impls {
		for _, d := range dists {
			for _, p := range []path{allow, deny} {
				pname := "allow"
				if p == deny {
					pname = "deny"
				}
				b.Run("impl="+im.name+"/dist="+d.name+"/state="+pname, func(b *testing.B) {
					if im.redis && redisAddr() == "" {
						b.Skip("Redis: set ALLOT_REDIS_ADDR=host:port (make bench-redis starts a server)")
					}
					if d.keys > 1000 && skipBig() {
						b.Skip("1M-key sets skipped (ALLOT_BENCH_SMALL is set)")
					}
					if d.keys > 1000 && im.slow && os.Getenv("ALLOT_BENCH_FULL") == "" {
						b.Skip("a persisted 1M-key set takes about a minute to register: set ALLOT_BENCH_FULL=1 (make bench does)")
					}
					if !probed[im.name] && im.name != "cas" && b.N >= 100 {
						probeSpread(b, im)
						probed[im.name] = true
					}
					w := &walker{seq: sequence(b, d), keys: names(d.keys)}
					st := state(b, stateID(im.name, d, p), func() (any, func()) {
						return im.build(b, w.keys, p)
					})
					b.ReportAllocs()
					b.ResetTimer()
					im.run(b, st, w)
					b.StopTimer()
					check(b, p, w.granted.Load())
					if im.name != "cas" {
						b.ReportMetric(float64(w.reached()), "keys")
					}
				})
			}
		}
	}
}

// probeKeys is the number of keys of the spread probe.
const probeKeys = 1000

// probeSpread checks that im's run really sends each call to the key the
// sequence names, as go-limiter's published benchmark did not (every call
// went to the key ""): on a fresh state where each of probeKeys keys
// grants exactly one call, it walks a sequence that runs through them in
// turn, and requires one grant per distinct key its calls reached, and at
// least two such keys. Calls that all went to one key (or to a key the
// state does not hold) are granted once (or never, or for a peer that
// creates keys it does not know, without limit) and fail it. It runs with
// the caller's b.N and before the caller's timer is reset.
func probeSpread(b *testing.B, im impl) {
	b.Helper()
	// Names of their own: a Redis state lives outside the process, and
	// the probe's must not overwrite (or, closed, delete) the live one's.
	keys := make([]string, probeKeys)
	for i := range keys {
		keys[i] = "probe-" + strconv.Itoa(i)
	}
	seq := make([]int32, seqLen)
	for i := range seq {
		seq[i] = int32(i % probeKeys)
	}
	w := &walker{seq: seq, keys: keys}
	st, done := im.build(b, keys, one)
	im.run(b, st, w)
	if done != nil {
		done()
	}
	reached, granted := w.reached(), w.granted.Load()
	if w.calls() != b.N || reached < 2 || granted != int64(reached) {
		b.Fatalf("spread probe of %s: %d calls (want %d) reached %d distinct keys and were granted %d times, want one grant per key",
			im.name, w.calls(), b.N, reached, granted)
	}
	b.Logf("spread probe: %d calls reached %d distinct keys, granted once each", b.N, reached)
}
