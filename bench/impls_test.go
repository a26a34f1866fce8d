package bench

import (
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/go-redis/redis_rate/v10"
	"github.com/puzpuzpuz/xsync/v3"
	"github.com/redis/go-redis/v9"
	golimiter "github.com/sethvargo/go-limiter"
	"github.com/sethvargo/go-limiter/memorystore"
	"github.com/throttled/throttled/v2"
	"github.com/throttled/throttled/v2/store/memstore"
	ulule "github.com/ulule/limiter/v3"
	ulmemory "github.com/ulule/limiter/v3/drivers/store/memory"
	"golang.org/x/time/rate"
)

// An implementation consumes one unit per call from a per-key quota.
//
// build makes its state for keys on a path: allow (a quota or rate that
// never runs out during a run), deny (a quota used up before timing
// starts) or one (one unit per key, not used yet: the key-spread probe of
// BenchmarkContention). The store holds its own copies of the keys (as one
// filled from a config or a database would), so a lookup compares bytes
// instead of finding the caller's own string pointer. run runs
// b.RunParallel over the walker's sequence and hands each goroutine's
// span and grants to the walker.
type impl struct {
	name string
	// limit is the kind of limit the implementation enforces, as the
	// report's tables name it: "floor", "credits", "rate" (a token bucket
	// or GCRA), "window" (a fixed window), "multi" (two limits at once).
	limit string
	redis bool // needs ALLOT_REDIS_ADDR
	// slow: building 1M keys takes about a minute per path (persisted
	// Registers), so the zipf1m sets run only with ALLOT_BENCH_FULL=1.
	slow  bool
	build func(b *testing.B, keys []string, p path) (any, func())
	run   func(b *testing.B, st any, w *walker)
}

// path is the state a benchmark starts from.
type path uint8

const (
	allow path = iota // every call must be granted
	deny              // every call must be denied
	one               // each key grants exactly one call (the spread probe)
)

const (
	bigQuota  = 1 << 62                    // never runs out
	longTime  = 100 * 365 * 24 * time.Hour // a "rate extremely low": one unit per century
	regWorker = 256                        // goroutines that register keys in a persisted engine
)

var impls = []impl{
	// Floors: what any exact limiter must do, and the map allot does not use.
	{name: "cas", limit: "floor", build: buildCAS, run: runCAS},
	{name: "floor", limit: "floor", build: buildFloor, run: runFloor},
	{name: "floor-clock", limit: "floor", build: buildFloor, run: runFloorClock},
	{name: "xsync", limit: "floor", build: buildXsync, run: runXsync},
	// Credits: a balance that never refills.
	{name: "naive", limit: "credits", build: buildNaive, run: runNaive},
	{name: "allot", limit: "credits", build: buildAllot(creditsLimits), run: runAllot},
	{name: "allot-lease", limit: "credits", slow: true, build: buildPersisted(engine.DefaultLeaseOptions()), run: runAllot},
	{name: "allot-exact", limit: "credits", slow: true, build: buildPersisted(engine.LeaseOptions{Exact: true}), run: runAllot},
	// allot with the limits the peers enforce: it reads the clock there too.
	{name: "allot-rate", limit: "rate", build: buildAllot(rateLimits), run: runAllot},
	{name: "allot-window", limit: "window", build: buildAllot(windowLimits), run: runAllot},
	{name: "allot-multi", limit: "multi", build: buildAllot(multiLimits), run: runAllot},
	// The peers, each with its own algorithm.
	{name: "xrate", limit: "rate", build: buildXRate, run: runXRate},
	{name: "golimiter", limit: "window", build: buildGoLimiter, run: runGoLimiter},
	{name: "ulule", limit: "window", build: buildUlule, run: runUlule},
	{name: "throttled", limit: "rate", build: buildThrottled, run: runThrottled},
	// Two of a peer's limiters per key, checked in sequence: none of the
	// peers has a key with several limits.
	{name: "xrate-pair", limit: "multi", build: buildXRatePair, run: runXRatePair},
	{name: "golimiter-pair", limit: "multi", build: buildGoLimiterPair, run: runGoLimiterPair},
	{name: "ulule-pair", limit: "multi", build: buildUlulePair, run: runUlulePair},
	{name: "throttled-pair", limit: "multi", build: buildThrottledPair, run: runThrottledPair},
	{name: "redis-decr", limit: "credits", redis: true, build: buildRedisDecr, run: runRedisDecr},
	{name: "redis-rate", limit: "rate", redis: true, build: buildRedisRate, run: runRedisRate},
	{name: "redis-ulule", limit: "window", redis: true, build: buildRedisUlule, run: runRedisUlule},
	// allot on Redis (persist/redisstore): one quota per key shared by
	// every process on that Redis, granted from reservations.
	{name: "allot-redis", limit: "credits", redis: true, build: buildAllotRedis(redisCreditsLimits, usedUp), run: runAllotRedis},
	{name: "allot-redis-rate", limit: "rate", redis: true, build: buildAllotRedis(redisRateLimits, redisRateUsedUp), run: runAllotRedis},
	{name: "allot-redis-window", limit: "window", redis: true, build: buildAllotRedis(windowLimits, usedUp), run: runAllotRedis},
}

// ---- floors ----

// paddedCounter is a counter alone on its cache line: 64 bytes.
type paddedCounter struct {
	v atomic.Int64
	_ [56]byte
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

// initial is a counter's start on path p.
func initial(p path) int64 {
	switch p {
	case deny:
		return 0
	case one:
		return 1
	}
	return bigQuota
}

// cas: a CAS loop on one counter, no lookup: the cost of the atomic.
func buildCAS(_ *testing.B, _ []string, p path) (any, func()) {
	c := new(paddedCounter)
	c.v.Store(initial(p))
	return c, nil
}

func runCAS(b *testing.B, st any, w *walker) {
	c := st.(*paddedCounter)
	b.RunParallel(func(pb *testing.PB) {
		n := int64(0)
		for pb.Next() {
			if casTake(&c.v) {
				n++
			}
		}
		w.granted.Add(n) // no keys, no span
	})
}

func paddedCounters(keys []string, p path) map[string]*paddedCounter {
	m := make(map[string]*paddedCounter, len(keys))
	for _, k := range keys {
		c := new(paddedCounter)
		c.v.Store(initial(p))
		m[strings.Clone(k)] = c
	}
	return m
}

// floor: a lookup in a read-only map, then a CAS loop on the key's padded
// counter: the least any exact limiter must do.
func buildFloor(_ *testing.B, keys []string, p path) (any, func()) {
	return paddedCounters(keys, p), nil
}

func runFloor(b *testing.B, st any, w *walker) {
	m := st.(map[string]*paddedCounter)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			if casTake(&m[keys[seq[i&seqMask]]].v) {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// floor-clock: the floor with a read of the monotonic clock before the
// CAS, as every limiter that refills (allot's Rate and PerWindow keys, all
// the peers) reads it: the least a limiter that reads the clock must do.
// On a virtual machine the clock read can cost more than the rest.
func runFloorClock(b *testing.B, st any, w *walker) {
	m := st.(map[string]*paddedCounter)
	t0 := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			c := m[keys[seq[i&seqMask]]]
			if time.Since(t0) >= 0 && casTake(&c.v) {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// xsync: the floor with github.com/puzpuzpuz/xsync/v3's MapOf (a concurrent
// hash map whose Load takes no lock) in place of the read-only map: the
// same padded counter, the same CAS. It is what allot's shard.Map would be
// replaced by.
func buildXsync(_ *testing.B, keys []string, p path) (any, func()) {
	m := xsync.NewMapOf[string, *paddedCounter](xsync.WithPresize(len(keys)))
	for k, c := range paddedCounters(keys, p) {
		m.Store(k, c)
	}
	return m, nil
}

func runXsync(b *testing.B, st any, w *walker) {
	m := st.(*xsync.MapOf[string, *paddedCounter])
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			c, _ := m.Load(keys[seq[i&seqMask]])
			if casTake(&c.v) {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// ---- the naive check-then-decrement map ----

// naive is the design that comes first to mind: remaining units in a map
// under one mutex, read (checked) in one locked step and written back
// (decremented) in another. Two requests for the same key can both read
// the same balance before either writes, so it over-grants under
// contention (see cmd/demo; a real handler does I/O between the two
// steps, which widens the gap). On the paths measured here, with nothing
// in between, it grants the right answer.
type naive struct {
	mu sync.Mutex
	m  map[string]int64
}

func (q *naive) take(key string) bool {
	q.mu.Lock()
	left := q.m[key]
	q.mu.Unlock()
	if left <= 0 {
		return false
	}
	q.mu.Lock()
	q.m[key] = left - 1
	q.mu.Unlock()
	return true
}

func buildNaive(_ *testing.B, keys []string, p path) (any, func()) {
	q := &naive{m: make(map[string]int64, len(keys))}
	for _, k := range keys {
		q.m[strings.Clone(k)] = initial(p)
	}
	return q, nil
}

func runNaive(b *testing.B, st any, w *walker) {
	q := st.(*naive)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			if q.take(keys[seq[i&seqMask]]) {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// ---- allot ----

// The limits of allot's keys on each path. deny: one unit, used before
// timing starts (the window, for the multi-limit key); one: one unit, not
// used. A denial never ends during a run: one unit per century for a
// window, per MaxRateSpan (10 years, the longest a Rate accepts) for a rate.

// creditsLimits: one Credits balance of MaxCredits units.
func creditsLimits(p path) []engine.Limit {
	if p == allow {
		return []engine.Limit{engine.Credits(engine.MaxCredits)}
	}
	return []engine.Limit{engine.Credits(1)}
}

// allowRate is the Rate of the allow path: 10^9 a second (one unit a ns)
// and a burst of 2^40, the figures of the rate peers.
var allowRate = engine.Rate(1_000_000_000, time.Second, 1<<40)

// rateLimits: one Rate limit (GCRA).
func rateLimits(p path) []engine.Limit {
	if p == allow {
		return []engine.Limit{allowRate}
	}
	return []engine.Limit{engine.Rate(1, engine.MaxRateSpan, 1)}
}

// windowLimits: one PerWindow limit. Allow path: MaxWindowQuota (2^32-1)
// an hour; a leaf's state serves all its -count and -cpu runs, which do
// not reach 2^32 calls in an hour (at 10 ns a call and -benchtime=1s,
// 20 runs make about 2*10^9).
func windowLimits(p path) []engine.Limit {
	if p == allow {
		return []engine.Limit{engine.PerWindow(engine.MaxWindowQuota, time.Hour)}
	}
	return []engine.Limit{engine.PerWindow(1, longTime)}
}

// multiLimits: a key with two limits, an hourly window and a rate; on the
// deny and one paths the window is the one that runs out, the rate never.
func multiLimits(p path) []engine.Limit {
	return []engine.Limit{windowLimits(p)[0], allowRate}
}

// buildAllot: a memory-only engine, the limits of path p on every key.
func buildAllot(limits func(path) []engine.Limit) func(b *testing.B, keys []string, p path) (any, func()) {
	return func(b *testing.B, keys []string, p path) (any, func()) {
		eng, err := engine.New()
		if err != nil {
			b.Fatal(err)
		}
		ls := limits(p)
		for _, k := range keys {
			// No strings.Clone: the engine keeps its own copy of every key.
			if err := eng.Register(ctx, k, ls...); err != nil {
				b.Fatal(err)
			}
			if p == deny {
				if d, err := eng.Consume(ctx, k, 1); err != nil || !d.Allowed {
					b.Fatalf("using up %s: %v %v", k, d, err)
				}
			}
		}
		return eng, func() { _ = eng.Close() }
	}
}

// buildPersisted: an engine with a Badger store in a temporary directory,
// in lease mode or exact mode as lo says, one Credits limit
// per key. A persisted Register is a synced write; concurrent ones share a
// sync, so keys are registered (and, on the deny path, used up) from many
// goroutines.
func buildPersisted(lo engine.LeaseOptions) func(b *testing.B, keys []string, p path) (any, func()) {
	return func(b *testing.B, keys []string, p path) (any, func()) {
		dir, err := os.MkdirTemp("", "allot-bench-")
		if err != nil {
			b.Fatal(err)
		}
		st, err := persist.Open(dir)
		if err != nil {
			_ = os.RemoveAll(dir)
			b.Fatal(err)
		}
		eng, err := engine.New(engine.WithStore(st), engine.WithLease(lo))
		if err != nil {
			_ = st.Close()
			_ = os.RemoveAll(dir)
			b.Fatal(err)
		}
		done := func() {
			_ = eng.Close()
			_ = os.RemoveAll(dir)
		}
		if err := registerAll(b, eng, keys, creditsLimits(p), usedUp(p)); err != nil {
			done()
			b.Fatal(err)
		}
		return eng, done
	}
}

// usedUp is the number of units to consume from each key before timing
// starts, on path p: 1 on the deny path (which uses up a quota of 1).
func usedUp(p path) int {
	if p == deny {
		return 1
	}
	return 0
}

// registerAll registers keys with limits ls in eng from many goroutines, so
// that Registers share the store's rounds, then consumes one unit from
// each key use times (the deny path's quota used up).
func registerAll(b *testing.B, eng *engine.Engine, keys []string, ls []engine.Limit, use int) error {
	err := parallel(regWorker, len(keys), func(i int) error {
		return eng.Register(ctx, keys[i], ls...)
	})
	for range use {
		if err != nil {
			break
		}
		err = parallel(regWorker, len(keys), func(i int) error {
			d, err := eng.Consume(ctx, keys[i], 1)
			if err == nil && !d.Allowed {
				b.Errorf("using up %s: %v", keys[i], d)
			}
			return err
		})
	}
	return err
}

// runAllot consumes 1 unit a call. A denial must be for exhaustion: a key
// the engine does not know is denied too (UnknownKey), and would pass the
// deny path's count unseen.
func runAllot(b *testing.B, st any, w *walker) {
	eng := st.(*engine.Engine)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			d, err := eng.Consume(ctx, keys[seq[i&seqMask]], 1)
			if err != nil {
				b.Error(err)
				break
			}
			if d.Allowed {
				n++
			} else if d.Reason != engine.Exhausted {
				b.Errorf("%s denied as %v", keys[seq[i&seqMask]], d.Reason)
				break
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// ---- peers ----

// xrate: golang.org/x/time/rate (a token bucket), one Limiter per key in a
// map built up front. Allow path: 10^9 tokens per second and a burst of
// 2^40; deny path: a burst of 1, used up, and one token per century.
func newXRate(p path) *rate.Limiter {
	if p == allow {
		return rate.NewLimiter(1e9, 1<<40)
	}
	l := rate.NewLimiter(rate.Every(longTime), 1)
	if p == deny {
		l.Allow()
	}
	return l
}

func buildXRate(_ *testing.B, keys []string, p path) (any, func()) {
	m := make(map[string]*rate.Limiter, len(keys))
	for _, k := range keys {
		m[strings.Clone(k)] = newXRate(p)
	}
	return m, nil
}

func runXRate(b *testing.B, st any, w *walker) {
	m := st.(map[string]*rate.Limiter)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			if m[keys[seq[i&seqMask]]].Allow() {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// golimiter: sethvargo/go-limiter's memorystore, each key's bucket set up
// front with Set. It calls itself a token bucket, but its bucket is filled
// whole at each interval tick counted from the bucket's creation: a fixed
// window per key. Allow path: 2^62 tokens an hour; deny path: 1 token per
// century, taken. The sweeper is pushed out of the run.
func buildGoLimiter(b *testing.B, keys []string, p path) (any, func()) {
	tokens, interval := uint64(bigQuota), time.Hour
	if p != allow {
		tokens, interval = 1, longTime
	}
	s, err := memorystore.New(&memorystore.Config{Tokens: tokens, Interval: interval,
		SweepInterval: longTime, SweepMinTTL: longTime})
	if err != nil {
		b.Fatal(err)
	}
	for _, k := range keys {
		k = strings.Clone(k)
		if err := s.Set(ctx, k, tokens, interval); err != nil {
			b.Fatal(err)
		}
		if p == deny {
			if _, _, _, ok, err := s.Take(ctx, k); err != nil || !ok {
				b.Fatalf("using up %s: %v %v", k, ok, err)
			}
		}
	}
	return s, func() { _ = s.Close(ctx) }
}

func runGoLimiter(b *testing.B, st any, w *walker) {
	s := st.(golimiter.Store)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			_, _, _, ok, err := s.Take(ctx, keys[seq[i&seqMask]])
			if err != nil {
				b.Error(err)
				break
			}
			if ok {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// ulule: ulule/limiter/v3 with its memory store (a fixed window that
// starts at a key's first hit), each key created up front by one Get.
// Allow path: 2^62 per hour; deny path: 1 per century, used by that Get;
// one path: 2 per century, one used by it. The store's cleaner is off: it
// would range over every key during the run.
func buildUlule(b *testing.B, keys []string, p path) (any, func()) {
	l := ulule.New(ulmemory.NewStoreWithOptions(ulule.StoreOptions{Prefix: ulule.DefaultPrefix}), ululeRate(p))
	for _, k := range keys {
		if c, err := l.Get(ctx, strings.Clone(k)); err != nil || c.Reached {
			b.Fatalf("creating %s: %+v %v", k, c, err)
		}
	}
	return l, nil
}

// ululeRate is the rate of ulule's limiters on path p.
func ululeRate(p path) ulule.Rate {
	switch p {
	case deny:
		return ulule.Rate{Period: longTime, Limit: 1}
	case one:
		return ulule.Rate{Period: longTime, Limit: 2}
	}
	return ulule.Rate{Period: time.Hour, Limit: bigQuota}
}

func runUlule(b *testing.B, st any, w *walker) {
	l := st.(*ulule.Limiter)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			c, err := l.Get(ctx, keys[seq[i&seqMask]])
			if err != nil {
				b.Error(err)
				break
			}
			if !c.Reached {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// throttled: throttled/v2's GCRA over its memstore (no LRU), each key
// created up front by one call. Allow path: 10^9 per second, burst 2^40;
// deny path: 1 per century, burst 0 (one call), used by that call; one
// path: burst 1 (two calls), one used by it. Its CAS gives up after 10
// failed attempts by default (an error for the caller); that would fail
// the hot-key runs, so the limit is raised out of the way.
func buildThrottled(b *testing.B, keys []string, p path) (any, func()) {
	q := throttled.RateQuota{MaxRate: throttled.PerSec(1_000_000_000), MaxBurst: 1 << 40}
	switch p {
	case deny:
		q = throttled.RateQuota{MaxRate: throttled.PerDuration(1, longTime), MaxBurst: 0}
	case one:
		q = throttled.RateQuota{MaxRate: throttled.PerDuration(1, longTime), MaxBurst: 1}
	}
	s, err := memstore.NewCtx(0)
	if err != nil {
		b.Fatal(err)
	}
	l, err := throttled.NewGCRARateLimiterCtx(s, q)
	if err != nil {
		b.Fatal(err)
	}
	l.SetMaxCASAttemptsLimit(1 << 30)
	for _, k := range keys {
		if limited, _, err := l.RateLimitCtx(ctx, strings.Clone(k), 1); err != nil || limited {
			b.Fatalf("creating %s: %v %v", k, limited, err)
		}
	}
	return l, nil
}

func runThrottled(b *testing.B, st any, w *walker) {
	l := st.(*throttled.GCRARateLimiterCtx)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			limited, _, err := l.RateLimitCtx(ctx, keys[seq[i&seqMask]], 1)
			if err != nil {
				b.Error(err)
				break
			}
			if !limited {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// ---- peers, two limiters per key ----

// None of the peers can give a key several limits. What a user of one
// does instead is check two of its limiters in sequence, the rate first,
// then the window (or the peer's stand-in for one), stopping at the first
// denial. Each is built as above: the first with the allow path's
// figures (it never denies), the second with path p's; so on the deny
// path both are checked and the second denies. Checked in sequence, the
// pair is not one step: a call the second limiter denies has already been
// counted by the first, which allot's multi-limit key never does (it
// takes from every limit or from none).

// xrate-pair: two rate.Limiters per key in one map value (one lookup).
type xratePair struct{ rate, window *rate.Limiter }

func buildXRatePair(_ *testing.B, keys []string, p path) (any, func()) {
	m := make(map[string]*xratePair, len(keys))
	for _, k := range keys {
		m[strings.Clone(k)] = &xratePair{newXRate(allow), newXRate(p)}
	}
	return m, nil
}

func runXRatePair(b *testing.B, st any, w *walker) {
	m := st.(map[string]*xratePair)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			l := m[keys[seq[i&seqMask]]]
			if l.rate.Allow() && l.window.Allow() {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// pairOf builds two states of one peer, the first with the allow path's
// figures, the second with p's.
func pairOf(build func(*testing.B, []string, path) (any, func())) func(b *testing.B, keys []string, p path) (any, func()) {
	return func(b *testing.B, keys []string, p path) (any, func()) {
		s1, c1 := build(b, keys, allow)
		s2, c2 := build(b, keys, p)
		return [2]any{s1, s2}, func() {
			for _, c := range []func(){c1, c2} {
				if c != nil {
					c()
				}
			}
		}
	}
}

// golimiter-pair: two memorystores (two map lookups, two bucket locks).
var buildGoLimiterPair = pairOf(buildGoLimiter)

func runGoLimiterPair(b *testing.B, st any, w *walker) {
	s := st.([2]any)
	s1, s2 := s[0].(golimiter.Store), s[1].(golimiter.Store)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			k := keys[seq[i&seqMask]]
			_, _, _, ok, err := s1.Take(ctx, k)
			if err == nil && ok {
				_, _, _, ok, err = s2.Take(ctx, k)
			}
			if err != nil {
				b.Error(err)
				break
			}
			if ok {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// ulule-pair: two limiters, each over a memory store of its own.
var buildUlulePair = pairOf(buildUlule)

func runUlulePair(b *testing.B, st any, w *walker) {
	s := st.([2]any)
	l1, l2 := s[0].(*ulule.Limiter), s[1].(*ulule.Limiter)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			k := keys[seq[i&seqMask]]
			c, err := l1.Get(ctx, k)
			if err == nil && !c.Reached {
				c, err = l2.Get(ctx, k)
			}
			if err != nil {
				b.Error(err)
				break
			}
			if !c.Reached {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// throttled-pair: two GCRA limiters, each over a memstore of its own.
var buildThrottledPair = pairOf(buildThrottled)

func runThrottledPair(b *testing.B, st any, w *walker) {
	s := st.([2]any)
	l1, l2 := s[0].(*throttled.GCRARateLimiterCtx), s[1].(*throttled.GCRARateLimiterCtx)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			k := keys[seq[i&seqMask]]
			limited, _, err := l1.RateLimitCtx(ctx, k, 1)
			if err == nil && !limited {
				limited, _, err = l2.RateLimitCtx(ctx, k, 1)
			}
			if err != nil {
				b.Error(err)
				break
			}
			if !limited {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// ---- Redis ----

// redisInFlight is the number of requests the Redis benchmarks keep in
// flight: b.SetParallelism makes the goroutines 64 whatever -cpu is (for
// -cpu values dividing 64).
const redisInFlight = 64

const redisPrefix = "allot-bench:"

func redisAddr() string { return os.Getenv("ALLOT_REDIS_ADDR") }

type redisState struct {
	c    *redis.Client
	rt   *roundTrips
	keys []string // redisPrefix + name, by index
	lim  *redis_rate.Limiter
	rl   redis_rate.Limit
	ul   *ulule.Limiter
}

func newRedis(b *testing.B, keys []string) *redisState {
	c, rt := redisClient(b, 0)
	s := &redisState{c: c, rt: rt, keys: make([]string, len(keys))}
	for i, k := range keys {
		s.keys[i] = redisPrefix + k
	}
	return s
}

// pipelined sends f's commands for every key, 10,000 to a round trip.
func (s *redisState) pipelined(f func(p redis.Pipeliner, key string)) error {
	for lo := 0; lo < len(s.keys); lo += 10_000 {
		p := s.c.Pipeline()
		for _, k := range s.keys[lo:min(lo+10_000, len(s.keys))] {
			f(p, k)
		}
		if _, err := p.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (s *redisState) close(prefix string) func() {
	return func() {
		_ = s.pipelined(func(p redis.Pipeliner, k string) { p.Unlink(ctx, prefix+k) })
		_ = s.c.Close()
	}
}

func setParallelism(b *testing.B) {
	b.SetParallelism(max(1, redisInFlight/runtime.GOMAXPROCS(0)))
}

// redis-decr: the usual move of the naive design to Redis: a counter per
// key, DECR, and a result below zero is a denial.
func buildRedisDecr(b *testing.B, keys []string, p path) (any, func()) {
	s := newRedis(b, keys)
	if err := s.pipelined(func(pl redis.Pipeliner, k string) { pl.Set(ctx, k, initial(p), 0) }); err != nil {
		s.close("")()
		b.Fatal(err)
	}
	return s, s.close("")
}

func runRedisDecr(b *testing.B, st any, w *walker) {
	s := st.(*redisState)
	runRedis(b, s, w, func(key string) (bool, error) {
		v, err := s.c.Decr(ctx, key).Result()
		return v >= 0, err
	})
}

// runRedis runs take on the walker's keys with 64 requests in flight and
// counts the grants, and the commands and round trips to Redis.
func runRedis(b *testing.B, s *redisState, w *walker, take func(key string) (bool, error)) {
	setParallelism(b)
	counted(b, s.c, s.rt, w, func() { runTake(b, s, w, take) })
}

func runTake(b *testing.B, s *redisState, w *walker, take func(key string) (bool, error)) {
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, s.keys
		i0, n := w.start(), int64(0)
		i := i0
		for pb.Next() {
			ok, err := take(keys[seq[i&seqMask]])
			if err != nil {
				b.Error(err)
				break
			}
			if ok {
				n++
			}
			i++
		}
		w.finish(i0, i, n)
	})
}

// redis-rate: go-redis/redis_rate (GCRA in a Lua script), each key created
// up front by one Allow. Allow path: 10^6 per second, burst 10^6; deny
// path: 1 per 1000 hours, burst 1, used (its Lua script computes in
// seconds as floats: with a century per unit, rounding denies the first
// call); one path: burst 2, one used.
func buildRedisRate(b *testing.B, keys []string, p path) (any, func()) {
	s := newRedis(b, keys)
	s.lim = redis_rate.NewLimiter(s.c)
	s.rl = redis_rate.Limit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second}
	switch p {
	case deny:
		s.rl = redis_rate.Limit{Rate: 1, Burst: 1, Period: 1000 * time.Hour}
	case one:
		s.rl = redis_rate.Limit{Rate: 1, Burst: 2, Period: 1000 * time.Hour}
	}
	s.create(b, "rate:", func(key string) (bool, error) {
		r, err := s.lim.Allow(ctx, key, s.rl)
		return r != nil && r.Allowed == 1, err
	})
	return s, s.close("rate:")
}

// create creates every key of s with one call of take, which must grant
// it, from 128 goroutines; on failure it deletes the keys (prefix +
// key) and fails b.
func (s *redisState) create(b *testing.B, prefix string, take func(key string) (bool, error)) {
	err := parallel(2*redisInFlight, len(s.keys), func(i int) error {
		ok, err := take(s.keys[i])
		if err == nil && !ok {
			b.Errorf("creating %s: denied", s.keys[i])
		}
		return err
	})
	if err != nil || b.Failed() {
		s.close(prefix)()
		b.Fatal(err)
	}
}

func runRedisRate(b *testing.B, st any, w *walker) {
	s := st.(*redisState)
	runRedis(b, s, w, func(key string) (bool, error) {
		r, err := s.lim.Allow(ctx, key, s.rl)
		return err == nil && r.Allowed > 0, err
	})
}
