package bench

import (
	"bufio"
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist/redisstore"
	"github.com/redis/go-redis/v9"
	ulule "github.com/ulule/limiter/v3"
	ulredis "github.com/ulule/limiter/v3/drivers/store/redis"
)

// ---- what a run asks of Redis ----

// roundTrips counts a client's round trips to Redis: one per command sent
// alone, one per pipeline (a go-redis hook).
type roundTrips struct{ n atomic.Int64 }

func (*roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

// redisClient returns a client of ALLOT_REDIS_ADDR's database db, with a
// round-trip counter.
func redisClient(b testing.TB, db int) (*redis.Client, *roundTrips) {
	c := redis.NewClient(&redis.Options{Addr: redisAddr(), DB: db, PoolSize: 2 * redisInFlight})
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		b.Fatalf("redis at %s: %v", redisAddr(), err)
	}
	rt := new(roundTrips)
	c.AddHook(rt)
	return c, rt
}

// serverCommands returns the commands Redis has run: INFO's
// total_commands_processed, which counts those a script runs too.
func serverCommands(b *testing.B, c *redis.Client) int64 {
	txt, err := c.Info(ctx, "stats").Result()
	if err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(txt))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "total_commands_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("INFO stats has no total_commands_processed")
	return 0
}

// counted runs run (a b.RunParallel over w) and reports what it asked of
// Redis per 1,000 grants: redis-cmds, every command Redis ran (INFO's
// total_commands_processed: those inside a Lua script count one each, the
// script itself one more), and round-trips, the client's round trips (a
// pipeline is one). A run that granted nothing (the deny path) reports
// them per 1,000 calls instead. Redis serves nothing else while a
// benchmark runs; the INFO calls are outside the timer and not counted.
// (The spread probe's figures, 1k-grants too, are replaced by the run's.)
func counted(b *testing.B, c *redis.Client, rt *roundTrips, w *walker, run func()) {
	b.StopTimer()
	c0, t0, g0 := serverCommands(b, c), rt.n.Load(), w.granted.Load()
	b.StartTimer()
	run()
	b.StopTimer()
	cmds := serverCommands(b, c) - c0 - 1 // the first INFO
	trips := rt.n.Load() - t0 - 1         // the second INFO
	per, unit := float64(w.granted.Load()-g0), "1k-grants"
	if per == 0 {
		per, unit = float64(b.N), "1k-calls"
	}
	b.ReportMetric(float64(cmds)*1000/per, "redis-cmds/"+unit)
	b.ReportMetric(float64(trips)*1000/per, "round-trips/"+unit)
	b.StartTimer()
}

// ---- ulule/limiter on Redis ----

// redis-ulule: ulule/limiter/v3's Redis store (a fixed window from a key's
// first hit: INCRBY and PEXPIRE in a Lua script, one round trip a call),
// each key created up front by one Get; the rates of the memory store's
// row (ululeRate).
func buildRedisUlule(b *testing.B, keys []string, p path) (any, func()) {
	s := newRedis(b, keys)
	store, err := ulredis.NewStoreWithOptions(s.c, ulule.StoreOptions{Prefix: "ulule"})
	if err != nil {
		s.close("")()
		b.Fatal(err)
	}
	s.ul = ulule.New(store, ululeRate(p))
	s.create(b, "ulule:", func(key string) (bool, error) {
		c, err := s.ul.Get(ctx, key)
		return !c.Reached, err
	})
	return s, s.close("ulule:")
}

func runRedisUlule(b *testing.B, st any, w *walker) {
	s := st.(*redisState)
	runRedis(b, s, w, func(key string) (bool, error) {
		c, err := s.ul.Get(ctx, key)
		return !c.Reached, err
	})
}

// ---- allot on Redis ----

// redisCreditsLimits: creditsLimits, but at most 2^53-1 units, the most a
// Redis pool holds exactly (a Lua number).
func redisCreditsLimits(p path) []engine.Limit {
	if p == allow {
		return []engine.Limit{engine.Credits(1<<53 - 1)}
	}
	return creditsLimits(p)
}

// redisRateLimits: one Rate limit, 10^6 a second on the allow path (the
// rate of redis-rate's row; the burst stays 2^40, which allot's grants at
// in-memory speed need), one per 5 years with a burst of 2 on the others
// (deny: both used; one: one used), where rateLimits has one per 10 years
// with a burst of 1. On Redis neither of rateLimits' figures works (see
// README.md): a reservation of a Rate limit is a span of the shared
// theoretical arrival time of at most MaxChunk emission intervals (65.5 µs
// at 10^9 a second, which a round trip on a busy machine outlasts), and
// at most the burst's span from the pool's now, which a key with a burst
// of 1 and an emission interval of 1 s or more needs whole, at a later
// now: such a Consume waits for ever.
func redisRateLimits(p path) []engine.Limit {
	if p == allow {
		return []engine.Limit{engine.Rate(1_000_000, time.Second, 1<<40)}
	}
	return []engine.Limit{engine.Rate(1, 5*365*24*time.Hour, 2)}
}

// redisRateUsedUp: the units redisRateLimits' keys have used before timing.
func redisRateUsedUp(p path) int {
	switch p {
	case deny:
		return 2
	case one:
		return 1
	}
	return 0
}

// redisDB is the database the last allot-on-Redis state was given: each
// state gets one of its own, 1 to 15 in turn, flushed when it is released
// (at most two are alive at once: the live state and the spread probe's).
var redisDB atomic.Int32

type allotRedis struct {
	eng *engine.Engine
	c   *redis.Client
	rt  *roundTrips
}

// buildAllotRedis: an engine on persist/redisstore (default lease options
// and lease) on a database of its own, the limits of path p on every key,
// registered from many goroutines (a round of the engine's committer
// registers every key queued, in one pipeline), used(p) units used.
func buildAllotRedis(limits func(path) []engine.Limit, used func(path) int) func(b *testing.B, keys []string, p path) (any, func()) {
	return func(b *testing.B, keys []string, p path) (any, func()) {
		c, rt := redisClient(b, int(redisDB.Add(1)%15)+1)
		fail := func(err error) {
			_ = c.FlushDB(ctx).Err()
			_ = c.Close()
			b.Fatal(err)
		}
		if err := c.FlushDB(ctx).Err(); err != nil {
			fail(err)
		}
		if err := redisstore.Initialize(ctx, c); err != nil {
			fail(err)
		}
		st, err := redisstore.New(ctx, c)
		if err != nil {
			fail(err)
		}
		eng, err := engine.New(engine.WithStore(st))
		if err != nil {
			fail(err)
		}
		s := &allotRedis{eng: eng, c: c, rt: rt}
		done := func() {
			_ = eng.Close()
			_ = c.FlushDB(ctx).Err()
			_ = c.Close()
		}
		if err := registerAll(b, eng, keys, limits(p), used(p)); err != nil {
			done()
			b.Fatal(err)
		}
		if err := warmUp(b, eng, keys, p); err != nil {
			done()
			b.Fatal(err)
		}
		return s, done
	}
}

// warmUp touches every key of a large set's sequence once before timing:
// on the allow path it gets its first reservation, on the deny path its
// first answer from Redis (a denial rests on it for 16 leases). The rows
// are then at steady state, where a key's first touch is long past. A key
// touched for the first time costs a round trip, as every call of the
// peers on Redis does.
func warmUp(b *testing.B, eng *engine.Engine, keys []string, p path) error {
	if len(keys) <= probeKeys {
		return nil
	}
	var seq []int32
	for _, d := range dists {
		if d.keys == len(keys) {
			seq = sequence(b, d)
		}
	}
	seen := make([]bool, len(keys))
	var touched []int32
	for _, k := range seq {
		if !seen[k] {
			seen[k] = true
			touched = append(touched, k)
		}
	}
	return parallel(regWorker, len(touched), func(i int) error {
		d, err := eng.Consume(ctx, keys[touched[i]], 1)
		if err == nil && d.Allowed != (p == allow) {
			b.Errorf("warming up %s: %v", keys[touched[i]], d)
		}
		return err
	})
}

func runAllotRedis(b *testing.B, st any, w *walker) {
	s := st.(*allotRedis)
	counted(b, s.c, s.rt, w, func() { runAllot(b, s.eng, w) })
}
