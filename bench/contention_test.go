package bench

import (
	"os"
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
func BenchmarkContention(b *testing.B) {
	for _, im := range impls {
		for _, d := range dists {
			for _, path := range []string{"allow", "deny"} {
				deny := path == "deny"
				b.Run("impl="+im.name+"/dist="+d.name+"/state="+path, func(b *testing.B) {
					if im.redis && redisAddr() == "" {
						b.Skip("Redis: set ALLOT_REDIS_ADDR=host:port (make bench-redis starts a server)")
					}
					if d.keys > 1000 && skipBig() {
						b.Skip("1M-key sets skipped (ALLOT_BENCH_SMALL is set)")
					}
					if d.keys > 1000 && im.slow && os.Getenv("ALLOT_BENCH_FULL") == "" {
						b.Skip("a persisted 1M-key set takes about a minute to register: set ALLOT_BENCH_FULL=1 (make bench does)")
					}
					w := &walker{seq: sequence(b, d), keys: names(d.keys)}
					st := state(b, stateID(im.name, d, deny), func() (any, func()) {
						return im.build(b, w.keys, deny)
					})
					b.ReportAllocs()
					b.ResetTimer()
					im.run(b, st, w)
					b.StopTimer()
					check(b, deny, w.granted.Load())
				})
			}
		}
	}
}
