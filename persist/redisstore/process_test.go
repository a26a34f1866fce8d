package redisstore_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist/redisstore"
	"github.com/redis/go-redis/v9"
)

// The child processes of the tests below run this test binary again, with
// ALLOT_REDIS_CHILD set: TestMain sends them to streamChild or
// revokeChild.
func TestMain(m *testing.M) {
	switch os.Getenv("ALLOT_REDIS_CHILD") {
	case "":
		os.Exit(m.Run())
	case "revoke":
		os.Exit(revokeChild())
	default:
		os.Exit(streamChild())
	}
}

// childEngine opens a child's engine on Redis, from its environment:
// ALLOT_ADDR the server, ALLOT_NOW a fixed clock (ns), ALLOT_CHUNK the
// largest chunk, ALLOT_LEASE the store's lease, ALLOT_DIAL_ONCE a client
// that dials once per attempt (go-redis's default dials 5 times, 100 ms
// apart, in each of its 4 attempts: 1.7 s before a command fails on a
// Redis that is down). The engine and the client are closed by closeAll.
func childEngine() (eng *engine.Engine, c *redis.Client, closeAll func() error, err error) {
	o := &redis.Options{Addr: os.Getenv("ALLOT_ADDR")}
	if os.Getenv("ALLOT_DIAL_ONCE") != "" {
		o.DialerRetries = 1
	}
	c = redis.NewClient(o)
	var sopts []redisstore.Option
	if s := os.Getenv("ALLOT_LEASE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			c.Close()
			return nil, nil, nil, err
		}
		sopts = append(sopts, redisstore.WithLease(d))
	}
	st, err := redisstore.New(ctx, c, sopts...)
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	opts := []engine.Option{engine.WithStore(st)}
	if s := os.Getenv("ALLOT_NOW"); s != "" {
		ns, _ := strconv.ParseInt(s, 10, 64)
		opts = append(opts, engine.WithClock(func() time.Time { return time.Unix(0, ns) }))
	}
	if s := os.Getenv("ALLOT_CHUNK"); s != "" {
		n, _ := strconv.ParseInt(s, 10, 64)
		opts = append(opts, engine.WithLease(engine.LeaseOptions{MinChunk: min(8, n), MaxChunk: n}))
	}
	if eng, err = engine.New(opts...); err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	return eng, c, func() error { defer c.Close(); return eng.Close() }, nil
}

// run starts every child at once, waits for them to end and returns the
// units each granted.
func run(t *testing.T, ps []*sproc) []int64 {
	t.Helper()
	for _, p := range ps {
		p.start(t)
	}
	got := make([]int64, len(ps))
	for i, p := range ps {
		got[i] = p.finish(t)[0]
	}
	return got
}

// TestProcessesShareOneQuota: four processes, 16 goroutines each, one key.
func TestProcessesShareOneQuota(t *testing.T) {
	_, c := newRedis(t)
	eng := newEngine(t, c)
	addr := "ALLOT_ADDR=" + c.Options().Addr
	now := "ALLOT_NOW=" + strconv.FormatInt(time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC).UnixNano(), 10)
	const chunk = 256
	for _, tc := range []struct {
		name   string
		limits []engine.Limit
		q      int64
	}{
		{"credits", []engine.Limit{engine.Credits(50_000)}, 50_000},
		{"window", []engine.Limit{engine.PerWindow(40_000, time.Hour)}, 40_000},
		{"two limits", []engine.Limit{engine.Credits(30_000), engine.PerWindow(20_000, time.Hour)}, 20_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "proc-" + strings.ReplaceAll(tc.name, " ", "-")
			if err := eng.Register(ctx, key, tc.limits...); err != nil {
				t.Fatal(err)
			}
			got := run(t, startStream(t, 4, "stream", addr, now, "ALLOT_KEY="+key, "ALLOT_CHUNK="+strconv.Itoa(chunk)))
			total := sum(got)
			lo := tc.q
			if len(tc.limits) > 1 {
				lo = tc.q - 4*chunk // units of one limit held where the other's are used up
			}
			t.Logf("%s: granted %v = %d of %d", tc.name, got, total, tc.q)
			if total > tc.q || total < lo {
				t.Fatalf("granted %d, want %d to %d", total, lo, tc.q)
			}
		})
	}
	t.Run("rate", func(t *testing.T) {
		const rate, burst = 2000, 500
		if err := eng.Register(ctx, "proc-rate", engine.Rate(rate, time.Second, burst)); err != nil {
			t.Fatal(err)
		}
		ps := startStream(t, 4, "stream", addr, "ALLOT_KEY=proc-rate", "ALLOT_FOR=500ms", "ALLOT_CHUNK="+strconv.Itoa(chunk))
		start := time.Now()
		got := run(t, ps)
		elapsed := time.Since(start)
		limit := burst + int64(rate*elapsed.Seconds()) + 1
		t.Logf("rate: granted %v = %d over %v, bound %d", got, sum(got), elapsed, limit)
		if sum(got) > limit {
			t.Fatalf("granted %d over %v, more than burst + rate × elapsed = %d", sum(got), elapsed, limit)
		}
	})
}
