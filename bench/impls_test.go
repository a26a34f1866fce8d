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
// build makes its state for keys on the allow path (a quota or rate that
// never runs out during a run) or the deny path (a quota used up before
// timing starts). The store holds its own copies of the keys (as one
// filled from a config or a database would), so a lookup compares bytes
// instead of finding the caller's own string pointer. run runs
// b.RunParallel over the walker's sequence and adds the grants to it.
type impl struct {
	name  string
	redis bool // needs ALLOT_REDIS_ADDR
	// slow: building 1M keys takes about a minute per path (persisted
	// Registers), so the zipf1m sets run only with ALLOT_BENCH_FULL=1.
	slow  bool
	build func(b *testing.B, keys []string, deny bool) (any, func())
	run   func(b *testing.B, st any, w *walker)
}

const (
	bigQuota  = 1 << 62                    // never runs out
	longTime  = 100 * 365 * 24 * time.Hour // a "rate extremely low": one unit per century
	regWorker = 256                        // goroutines that register keys in a persisted engine
)

var impls = []impl{
	{name: "cas", build: buildCAS, run: runCAS},
	{name: "floor", build: buildFloor, run: runFloor},
	{name: "naive", build: buildNaive, run: runNaive},
	{name: "allot", build: buildAllot, run: runAllot},
	{name: "allot-lease", slow: true, build: buildPersisted(), run: runAllot},
	{name: "allot-exact", slow: true, build: buildPersisted(persist.WithExact()), run: runAllot},
	{name: "xrate", build: buildXRate, run: runXRate},
	{name: "golimiter", build: buildGoLimiter, run: runGoLimiter},
	{name: "ulule", build: buildUlule, run: runUlule},
	{name: "throttled", build: buildThrottled, run: runThrottled},
	{name: "redis-decr", redis: true, build: buildRedisDecr, run: runRedisDecr},
	{name: "redis-rate", redis: true, build: buildRedisRate, run: runRedisRate},
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

func initial(deny bool) int64 {
	if deny {
		return 0
	}
	return bigQuota
}

// cas: a CAS loop on one counter, no lookup: the cost of the atomic.
func buildCAS(_ *testing.B, _ []string, deny bool) (any, func()) {
	c := new(paddedCounter)
	c.v.Store(initial(deny))
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
		w.granted.Add(n)
	})
}

// floor: a lookup in a read-only map, then a CAS loop on the key's padded
// counter: the least any exact limiter must do.
func buildFloor(_ *testing.B, keys []string, deny bool) (any, func()) {
	m := make(map[string]*paddedCounter, len(keys))
	for _, k := range keys {
		c := new(paddedCounter)
		c.v.Store(initial(deny))
		m[strings.Clone(k)] = c
	}
	return m, nil
}

func runFloor(b *testing.B, st any, w *walker) {
	m := st.(map[string]*paddedCounter)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i, n := w.start(), int64(0)
		for pb.Next() {
			if casTake(&m[keys[seq[i]]].v) {
				n++
			}
			i = (i + 1) & (seqLen - 1)
		}
		w.granted.Add(n)
	})
}

// ---- the Express article's design ----

// naive is the article's first design in Go: remaining units in a map
// under one mutex, read in one step and written back in another (without
// the article's I/O in between). It over-grants under contention (see
// cmd/demo); on the paths measured here it grants the right answer.
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

func buildNaive(_ *testing.B, keys []string, deny bool) (any, func()) {
	q := &naive{m: make(map[string]int64, len(keys))}
	for _, k := range keys {
		q.m[strings.Clone(k)] = initial(deny)
	}
	return q, nil
}

func runNaive(b *testing.B, st any, w *walker) {
	q := st.(*naive)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i, n := w.start(), int64(0)
		for pb.Next() {
			if q.take(keys[seq[i]]) {
				n++
			}
			i = (i + 1) & (seqLen - 1)
		}
		w.granted.Add(n)
	})
}

// ---- allot ----

func credits(deny bool) engine.Limit {
	if deny {
		return engine.Credits(1)
	}
	return engine.Credits(engine.MaxCredits)
}

// buildAllot: a memory-only engine, one Credits limit per key.
func buildAllot(b *testing.B, keys []string, deny bool) (any, func()) {
	eng, err := engine.New()
	if err != nil {
		b.Fatal(err)
	}
	for _, k := range keys {
		// No strings.Clone: the engine keeps its own copy of every key.
		if err := eng.Register(ctx, k, credits(deny)); err != nil {
			b.Fatal(err)
		}
		if deny {
			if d, err := eng.Consume(ctx, k, 1); err != nil || !d.Allowed {
				b.Fatalf("using up %s: %v %v", k, d, err)
			}
		}
	}
	return eng, func() { _ = eng.Close() }
}

// buildPersisted: an engine with a Badger store in a temporary directory,
// in lease mode (the default) or with the given options. A persisted
// Register is a synced write; concurrent ones share a sync, so keys are
// registered (and, on the deny path, used up) from many goroutines.
func buildPersisted(opts ...persist.Option) func(b *testing.B, keys []string, deny bool) (any, func()) {
	return func(b *testing.B, keys []string, deny bool) (any, func()) {
		dir, err := os.MkdirTemp("", "allot-bench-")
		if err != nil {
			b.Fatal(err)
		}
		st, err := persist.Open(dir, opts...)
		if err != nil {
			_ = os.RemoveAll(dir)
			b.Fatal(err)
		}
		eng, err := engine.New(engine.WithStore(st))
		if err != nil {
			_ = st.Close()
			_ = os.RemoveAll(dir)
			b.Fatal(err)
		}
		done := func() {
			_ = eng.Close()
			_ = os.RemoveAll(dir)
		}
		err = parallel(regWorker, len(keys), func(i int) error {
			return eng.Register(ctx, keys[i], credits(deny))
		})
		if err == nil && deny {
			err = parallel(regWorker, len(keys), func(i int) error {
				d, err := eng.Consume(ctx, keys[i], 1)
				if err == nil && !d.Allowed {
					b.Errorf("using up %s: %v", keys[i], d)
				}
				return err
			})
		}
		if err != nil {
			done()
			b.Fatal(err)
		}
		return eng, done
	}
}

func runAllot(b *testing.B, st any, w *walker) {
	eng := st.(*engine.Engine)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i, n := w.start(), int64(0)
		for pb.Next() {
			d, err := eng.Consume(ctx, keys[seq[i]], 1)
			if err != nil {
				b.Error(err)
				break
			}
			if d.Allowed {
				n++
			}
			i = (i + 1) & (seqLen - 1)
		}
		w.granted.Add(n)
	})
}

// ---- peers ----

// xrate: golang.org/x/time/rate, one Limiter per key in a map built up
// front. Allow path: 10^9 tokens per second and a burst of 2^40; deny
// path: a burst of 1, used up, and one token per century.
func buildXRate(_ *testing.B, keys []string, deny bool) (any, func()) {
	m := make(map[string]*rate.Limiter, len(keys))
	for _, k := range keys {
		var l *rate.Limiter
		if deny {
			l = rate.NewLimiter(rate.Every(longTime), 1)
			l.Allow()
		} else {
			l = rate.NewLimiter(1e9, 1<<40)
		}
		m[strings.Clone(k)] = l
	}
	return m, nil
}

func runXRate(b *testing.B, st any, w *walker) {
	m := st.(map[string]*rate.Limiter)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i, n := w.start(), int64(0)
		for pb.Next() {
			if m[keys[seq[i]]].Allow() {
				n++
			}
			i = (i + 1) & (seqLen - 1)
		}
		w.granted.Add(n)
	})
}

// golimiter: sethvargo/go-limiter's memorystore, each key's bucket set up
// front with Set. Allow path: 2^62 tokens an hour; deny path: 1 token per
// century, taken. The sweeper is pushed out of the run.
func buildGoLimiter(b *testing.B, keys []string, deny bool) (any, func()) {
	tokens, interval := uint64(bigQuota), time.Hour
	if deny {
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
		if deny {
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
		i, n := w.start(), int64(0)
		for pb.Next() {
			_, _, _, ok, err := s.Take(ctx, keys[seq[i]])
			if err != nil {
				b.Error(err)
				break
			}
			if ok {
				n++
			}
			i = (i + 1) & (seqLen - 1)
		}
		w.granted.Add(n)
	})
}

// ulule: ulule/limiter/v3 with its memory store (a fixed window), each key
// created up front by one Get. Allow path: 2^62 per hour; deny path: 1 per
// century, used. The store's cleaner is off: it would range over every key
// during the run.
func buildUlule(b *testing.B, keys []string, deny bool) (any, func()) {
	r := ulule.Rate{Period: time.Hour, Limit: bigQuota}
	if deny {
		r = ulule.Rate{Period: longTime, Limit: 1}
	}
	l := ulule.New(ulmemory.NewStoreWithOptions(ulule.StoreOptions{Prefix: ulule.DefaultPrefix}), r)
	for _, k := range keys {
		if c, err := l.Get(ctx, strings.Clone(k)); err != nil || c.Reached {
			b.Fatalf("creating %s: %+v %v", k, c, err)
		}
	}
	return l, nil
}

func runUlule(b *testing.B, st any, w *walker) {
	l := st.(*ulule.Limiter)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, w.keys
		i, n := w.start(), int64(0)
		for pb.Next() {
			c, err := l.Get(ctx, keys[seq[i]])
			if err != nil {
				b.Error(err)
				break
			}
			if !c.Reached {
				n++
			}
			i = (i + 1) & (seqLen - 1)
		}
		w.granted.Add(n)
	})
}

// throttled: throttled/v2's GCRA over its memstore (no LRU), each key
// created up front by one call. Allow path: 10^9 per second, burst 2^40;
// deny path: 1 per century, burst 1, used. Its CAS gives up after 10
// failed attempts by default (an error for the caller); that would fail
// the hot-key runs, so the limit is raised out of the way.
func buildThrottled(b *testing.B, keys []string, deny bool) (any, func()) {
	q := throttled.RateQuota{MaxRate: throttled.PerSec(1_000_000_000), MaxBurst: 1 << 40}
	if deny {
		q = throttled.RateQuota{MaxRate: throttled.PerDuration(1, longTime), MaxBurst: 0}
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
		i, n := w.start(), int64(0)
		for pb.Next() {
			limited, _, err := l.RateLimitCtx(ctx, keys[seq[i]], 1)
			if err != nil {
				b.Error(err)
				break
			}
			if !limited {
				n++
			}
			i = (i + 1) & (seqLen - 1)
		}
		w.granted.Add(n)
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
	keys []string // redisPrefix + name, by index
	lim  *redis_rate.Limiter
	rl   redis_rate.Limit
}

func newRedis(b *testing.B, keys []string) *redisState {
	c := redis.NewClient(&redis.Options{Addr: redisAddr(), PoolSize: 2 * redisInFlight})
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		b.Fatalf("redis at %s: %v", redisAddr(), err)
	}
	s := &redisState{c: c, keys: make([]string, len(keys))}
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

// redis-decr: the article's second design: a counter per key, DECR, and a
// result below zero is a denial.
func buildRedisDecr(b *testing.B, keys []string, deny bool) (any, func()) {
	s := newRedis(b, keys)
	if err := s.pipelined(func(p redis.Pipeliner, k string) { p.Set(ctx, k, initial(deny), 0) }); err != nil {
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
// counts the grants.
func runRedis(b *testing.B, s *redisState, w *walker, take func(key string) (bool, error)) {
	setParallelism(b)
	b.RunParallel(func(pb *testing.PB) {
		seq, keys := w.seq, s.keys
		i, n := w.start(), int64(0)
		for pb.Next() {
			ok, err := take(keys[seq[i]])
			if err != nil {
				b.Error(err)
				break
			}
			if ok {
				n++
			}
			i = (i + 1) & (seqLen - 1)
		}
		w.granted.Add(n)
	})
}

// redis-rate: go-redis/redis_rate (GCRA in a Lua script), each key created
// up front by one Allow. Allow path: 10^6 per second, burst 10^6; deny
// path: 1 per 1000 hours, burst 1, used (its Lua script computes in
// seconds as floats: with a century per unit, rounding denies the first call).
func buildRedisRate(b *testing.B, keys []string, deny bool) (any, func()) {
	s := newRedis(b, keys)
	s.lim = redis_rate.NewLimiter(s.c)
	s.rl = redis_rate.Limit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second}
	if deny {
		s.rl = redis_rate.Limit{Rate: 1, Burst: 1, Period: 1000 * time.Hour}
	}
	err := parallel(2*redisInFlight, len(s.keys), func(i int) error {
		r, err := s.lim.Allow(ctx, s.keys[i], s.rl)
		if err == nil && r.Allowed != 1 {
			b.Errorf("creating %s: %+v", s.keys[i], r)
		}
		return err
	})
	if err != nil {
		s.close("rate:")()
		b.Fatal(err)
	}
	return s, s.close("rate:")
}

func runRedisRate(b *testing.B, st any, w *walker) {
	s := st.(*redisState)
	runRedis(b, s, w, func(key string) (bool, error) {
		r, err := s.lim.Allow(ctx, key, s.rl)
		return err == nil && r.Allowed > 0, err
	})
}
