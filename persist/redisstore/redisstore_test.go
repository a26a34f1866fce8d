package redisstore_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/internal/redistest"
	"github.com/allot-go/allot/persist/redisstore"
	"github.com/redis/go-redis/v9"
)

var ctx = context.Background()

// newRedis starts a redis-server and initializes it for allot.
func newRedis(t *testing.T) (*redistest.Server, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t, redistest.Always)
	c := srv.Client()
	if err := redisstore.Initialize(ctx, c); err != nil {
		t.Fatal(err)
	}
	return srv, c
}

// newEngine returns an engine on a store of its own on c: one of several
// "processes" sharing Redis.
func newEngine(t *testing.T, c redis.UniversalClient, opts ...engine.Option) *engine.Engine {
	t.Helper()
	return newEngineWith(t, c, nil, opts...)
}

// newEngineWith is newEngine with options of the store.
func newEngineWith(t *testing.T, c redis.UniversalClient, sopts []redisstore.Option, opts ...engine.Option) *engine.Engine {
	t.Helper()
	st, err := redisstore.New(ctx, c, sopts...)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(append([]engine.Option{engine.WithStore(st)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

func TestNewNeedsMarker(t *testing.T) {
	srv := redistest.Start(t, redistest.Always)
	c := srv.Client()
	if _, err := redisstore.New(ctx, c); !errors.Is(err, redisstore.ErrNotInitialized) {
		t.Fatalf("New on an empty Redis: %v, want ErrNotInitialized", err)
	}
	if _, err := redisstore.New(ctx, nil); !errors.Is(err, redisstore.ErrInvalidOption) {
		t.Fatalf("New(nil): %v", err)
	}
}

// consumeAll consumes key one unit at a time from g goroutines of each
// engine until every one is denied, and returns the units each engine
// granted.
func consumeAll(t *testing.T, key string, g int, engs ...*engine.Engine) []int64 {
	t.Helper()
	us := make([]use, len(engs))
	for i, eng := range engs {
		us[i] = use{eng, key}
	}
	return consumeUses(t, g, us...)
}

func sum(xs []int64) int64 {
	var n int64
	for _, x := range xs {
		n += x
	}
	return n
}

func TestSharedCreditsExact(t *testing.T) {
	_, c := newRedis(t)
	a, b := newEngine(t, c), newEngine(t, c)
	const q = 10000
	if err := a.Register(ctx, "shared", engine.Credits(q)); err != nil {
		t.Fatal(err)
	}
	got := consumeAll(t, "shared", 16, a, b)
	if sum(got) != q {
		t.Fatalf("granted %v = %d in all, want exactly %d", got, sum(got), q)
	}
	if got[1] == 0 {
		t.Fatalf("the second engine granted nothing: %v", got)
	}
	t.Logf("granted %v", got)
}

func TestRegisterSeenElsewhere(t *testing.T) {
	_, c := newRedis(t)
	a, b := newEngine(t, c), newEngine(t, c)
	if err := a.Register(ctx, "k", engine.Credits(5)); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(ctx, "k", engine.Credits(5)); !errors.Is(err, engine.ErrKeyExists) {
		t.Fatalf("Register of a key another engine registered: %v", err)
	}
	d, err := b.Consume(ctx, "k", 5)
	if err != nil || !d.Allowed {
		t.Fatalf("Consume in the other engine: %+v %v", d, err)
	}
	if d, _ := a.Consume(ctx, "k", 1); d.Allowed {
		t.Fatalf("a granted beyond the shared quota: %+v", d)
	}
}

func TestUnknownKeyCachedThenRegistered(t *testing.T) {
	_, c := newRedis(t)
	a := newEngine(t, c)
	for range 3 {
		if d, err := a.Consume(ctx, "nobody", 1); err != nil || d.Reason != engine.UnknownKey {
			t.Fatalf("unknown key: %+v %v", d, err)
		}
	}
	if err := a.Register(ctx, "nobody", engine.Credits(1)); err != nil {
		t.Fatal(err)
	}
	if d, err := a.Consume(ctx, "nobody", 1); err != nil || !d.Allowed {
		t.Fatalf("after Register in the same engine: %+v %v", d, err)
	}
}

func TestCloseGivesBack(t *testing.T) {
	_, c := newRedis(t)
	a := newEngine(t, c)
	if err := a.Register(ctx, "k", engine.Credits(1000)); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if d, err := a.Consume(ctx, "k", 1); err != nil || !d.Allowed {
			t.Fatal(d, err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := newEngine(t, c)
	got := consumeAll(t, "k", 4, b)
	if got[0] != 990 {
		t.Fatalf("after a's Close, b granted %d, want 990", got[0])
	}
}

func TestCrashLosesAtMostAChunk(t *testing.T) {
	_, c := newRedis(t)
	st, err := redisstore.New(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	a, err := engine.New(engine.WithStore(st))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Register(ctx, "k", engine.Credits(1000)); err != nil {
		t.Fatal(err)
	}
	if d, err := a.Consume(ctx, "k", 1); err != nil || !d.Allowed {
		t.Fatal(d, err)
	}
	// a "crashes": never closed. What it held is lost, nothing more.
	b := newEngine(t, c)
	got := consumeAll(t, "k", 4, b)[0]
	lo := int64(1000 - 1 - engine.DefaultLeaseOptions().MaxChunk)
	if got > 999 || got < lo {
		t.Fatalf("after a crash, b granted %d, want %d to 999", got, lo)
	}
	t.Logf("granted %d of 999 after a crash", got)
}

func TestSharedWindowsAndRate(t *testing.T) {
	_, c := newRedis(t)
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).UnixNano())
	clock := engine.WithClock(func() time.Time { return time.Unix(0, now.Load()) })
	const maxChunk = 64
	small := engine.WithLease(engine.LeaseOptions{MinChunk: 8, MaxChunk: maxChunk})
	a, b := newEngine(t, c, clock, small), newEngine(t, c, clock, small)
	if err := a.Register(ctx, "w", engine.PerWindow(500, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := a.Register(ctx, "r", engine.Rate(100, time.Second, 300)); err != nil {
		t.Fatal(err)
	}
	if err := a.Register(ctx, "two", engine.Credits(700), engine.PerWindow(400, time.Minute)); err != nil {
		t.Fatal(err)
	}
	// A Rate reservation reaches beyond the burst by a slack for the
	// round trip (one emission, 10 ms of the rate, up to 100 ms): what the
	// slack reserved may be lost to the other engine, 10 units at most
	// here per engine.
	const rateSlack = 10
	for _, tc := range []struct {
		key      string
		want, lo int64
	}{{"w", 500, 500}, {"r", 300, 300 - 2*rateSlack}, {"two", 400, 400}} {
		got := consumeAll(t, tc.key, 8, a, b)
		if n := sum(got); n > tc.want || n < tc.lo {
			t.Errorf("%s: granted %v = %d, want %d to %d", tc.key, got, n, tc.lo, tc.want)
		}
	}
	now.Add(int64(time.Minute)) // a new window; the rate refills 6000 in a minute, capped at its burst
	for _, tc := range []struct {
		key      string
		want, lo int64
	}{{"w", 500, 500}, {"r", 300, 300 - 2*rateSlack}, {"two", 300, 300 - 2*maxChunk}} {
		// "two": the credits left (300) are held by both engines, and
		// so are the window's units: an engine holding credits but no
		// window units, while the other holds window units but no
		// credits, is the under-grant the bound allows (a chunk per
		// engine and limit).
		got := consumeAll(t, tc.key, 8, a, b)
		if n := sum(got); n > tc.want || n < tc.lo {
			t.Errorf("next window, %s: granted %v = %d, want %d to %d", tc.key, got, n, tc.lo, tc.want)
		}
	}
}

func TestRevokeAcrossEngines(t *testing.T) {
	_, c := newRedis(t)
	a, b := newEngine(t, c), newEngine(t, c)
	if err := a.Register(ctx, "k", engine.Credits(1<<40)); err != nil {
		t.Fatal(err)
	}
	var revoked atomic.Bool
	var after atomic.Int64 // grants of Consumes that started after Revoke returned
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				late := revoked.Load()
				d, err := b.Consume(ctx, "k", 1)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed && late {
					after.Add(1)
				}
				if !d.Allowed && d.Reason == engine.Revoked {
					return
				}
			}
		}()
	}
	// b is granting: wait until it has reserved.
	for {
		if s, err := b.Status("k"); err == nil && s.Limits[0].Remaining < 1<<40 {
			break
		}
	}
	start := time.Now()
	if err := a.Revoke(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	revoked.Store(true)
	wg.Wait()
	close(stop)
	if n := after.Load(); n != 0 {
		t.Fatalf("%d grants in another engine after Revoke returned", n)
	}
	if d, _ := b.Consume(ctx, "k", 1); d.Allowed {
		t.Fatal("granted after Revoke")
	}
	t.Logf("Revoke took %v", took)
}

func TestRedisLostItsData(t *testing.T) {
	_, c := newRedis(t)
	a := newEngine(t, c)
	if err := a.Register(ctx, "k", engine.Credits(1000)); err != nil {
		t.Fatal(err)
	}
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// What a holds is still its own until its lease ends; the next
	// reservation finds the marker gone.
	var err error
	for range 2000 {
		if _, err = a.Consume(ctx, "k", 1); err != nil {
			break
		}
	}
	if !errors.Is(err, engine.ErrStore) || !errors.Is(err, redisstore.ErrLost) {
		t.Fatalf("Consume after Redis lost its data: %v, want ErrStore and ErrLost", err)
	}
	if _, err := redisstore.New(ctx, c); !errors.Is(err, redisstore.ErrNotInitialized) {
		t.Fatalf("New on a Redis that lost its data: %v", err)
	}
}

// Changes in one engine hold in the other as soon as they return: the
// other engine's reservation is stopped, and it reads the key again.
func TestChangesAcrossEngines(t *testing.T) {
	_, c := newRedis(t)
	a, b := newEngine(t, c), newEngine(t, c)
	if err := a.Register(ctx, "k", engine.Credits(100)); err != nil {
		t.Fatal(err)
	}
	if got := sum(consumeAll(t, "k", 4, b)); got != 100 {
		t.Fatalf("granted %d of 100", got)
	}
	if err := a.TopUp(ctx, "k", 50); err != nil {
		t.Fatal(err)
	}
	if got := sum(consumeAll(t, "k", 4, a, b)); got != 50 {
		t.Fatalf("after TopUp(50) elsewhere: granted %d, want 50", got)
	}
	if err := a.Reset(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if got := sum(consumeAll(t, "k", 4, b)); got != 150 {
		t.Fatalf("after Reset elsewhere: granted %d, want 150", got)
	}
	// Shrink below what is spent, grow back: nothing refills.
	if err := a.SetLimits(ctx, "k", engine.Credits(10)); err != nil {
		t.Fatal(err)
	}
	if err := a.SetLimits(ctx, "k", engine.Credits(150)); err != nil {
		t.Fatal(err)
	}
	if got := sum(consumeAll(t, "k", 4, a, b)); got != 0 {
		t.Fatalf("after a shrink and a grow back: granted %d, want 0", got)
	}
	if err := a.SetLimits(ctx, "k", engine.Credits(170)); err != nil {
		t.Fatal(err)
	}
	if got := sum(consumeAll(t, "k", 4, a, b)); got != 20 {
		t.Fatalf("after growing by 20: granted %d, want 20", got)
	}
	if err := a.TopUp(ctx, "nope", 1); !errors.Is(err, engine.ErrUnknownKey) {
		t.Fatalf("TopUp of an unknown key: %v", err)
	}
	if err := a.TopUp(ctx, "k", 0); !errors.Is(err, engine.ErrInvalidAmount) {
		t.Fatalf("TopUp(0): %v", err)
	}
	if err := a.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*engine.Engine{a, b} {
		if d, err := e.Consume(ctx, "k", 1); err != nil || d.Reason != engine.UnknownKey {
			t.Fatalf("after Delete: %+v %v, want UnknownKey", d, err)
		}
	}
	if err := b.Register(ctx, "k", engine.Credits(3)); err != nil {
		t.Fatalf("Register after Delete: %v", err)
	}
	if got := sum(consumeAll(t, "k", 4, b)); got != 3 {
		t.Fatalf("a name registered again starts from nothing: granted %d, want 3", got)
	}
}

// A change while another engine consumes: after the change returns, the
// other engine grants only under the new limits.
func TestShrinkWhileConsuming(t *testing.T) {
	_, c := newRedis(t)
	a, b := newEngine(t, c), newEngine(t, c)
	if err := a.Register(ctx, "k", engine.Credits(1<<40)); err != nil {
		t.Fatal(err)
	}
	var changed atomic.Bool
	var granted, after atomic.Int64
	var wg sync.WaitGroup
	started := make(chan struct{})
	var once sync.Once
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				late := changed.Load()
				d, err := b.Consume(ctx, "k", 1)
				if err != nil {
					t.Error(err)
					return
				}
				if !d.Allowed {
					return
				}
				granted.Add(1)
				once.Do(func() { close(started) })
				if late {
					after.Add(1)
				}
			}
		}()
	}
	<-started
	// Spent so far is what b granted plus what it holds: shrink to what
	// is spent now plus 100, so that at most 100 more may be granted.
	if err := a.SetLimits(ctx, "k", engine.Credits(1)); err != nil {
		t.Fatal(err)
	}
	changed.Store(true)
	wg.Wait()
	if n := after.Load(); n != 0 {
		t.Fatalf("%d grants after SetLimits(Credits(1)) returned, with more than 1 spent", n)
	}
}

// TestPropagation measures how long a change in one engine takes to be
// seen by another that keeps asking: Register (the other engine had a
// negative answer cached) and TopUp (the other engine had the key used
// up). The guarantee needs no message (a negative answer lasts
// engine.NegativeTTL at most, a change reaches a denying holder through its
// inbox); the events
// make it fast. Only the figures are reported: a time bound would fail
// under load.
func TestPropagation(t *testing.T) {
	_, c := newRedis(t)
	a, b := newEngine(t, c), newEngine(t, c)
	n := 200 // ALLOT_PROPAGATION_N=1000 for the figures
	if s := os.Getenv("ALLOT_PROPAGATION_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	until := func(f func() bool) time.Duration {
		start := time.Now()
		for !f() {
		}
		return time.Since(start)
	}
	reg := make([]time.Duration, 0, n)
	for i := range n {
		key := "prop-" + strconv.Itoa(i)
		if d, _ := b.Consume(ctx, key, 1); d.Reason != engine.UnknownKey {
			t.Fatalf("%s: %+v", key, d)
		}
		if err := a.Register(ctx, key, engine.Credits(1)); err != nil {
			t.Fatal(err)
		}
		reg = append(reg, until(func() bool {
			d, err := b.Consume(ctx, key, 1)
			return err == nil && d.Allowed
		}))
	}
	top := make([]time.Duration, 0, n/5)
	for i := range n / 5 {
		key := "prop-" + strconv.Itoa(i)
		if err := a.TopUp(ctx, key, 1); err != nil {
			t.Fatal(err)
		}
		top = append(top, until(func() bool {
			d, err := b.Consume(ctx, key, 1)
			return err == nil && d.Allowed
		}))
	}
	for _, x := range []struct {
		what string
		ds   []time.Duration
	}{{"Register", reg}, {"TopUp", top}} {
		slices.Sort(x.ds)
		t.Logf("%s in one engine, seen by another: p50 %v, p99 %v, max %v over %d trials",
			x.what, x.ds[len(x.ds)/2], x.ds[len(x.ds)*99/100], x.ds[len(x.ds)-1], len(x.ds))
	}
}

// Rate limits whose span is short next to a round trip, or whose burst is
// one slow emission, are granted (they once waited for ever: the span
// reserved had passed, or was one emission short, when the answer came).
func TestRateSpansOutliveTheRoundTrip(t *testing.T) {
	_, c := newRedis(t)
	a := newEngine(t, c)
	for _, tc := range []struct {
		key string
		l   engine.Limit
		n   int
	}{
		{"slow-burst-1", engine.Rate(1, time.Minute, 1), 1},
		{"fast", engine.Rate(1_000_000_000, time.Second, 1<<20), 10_000},
		{"fast-small-burst", engine.Rate(1_000_000, time.Second, 10), 1},
	} {
		if err := a.Register(ctx, tc.key, tc.l); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a failure, not a hang
		for i := range tc.n {
			d, err := a.Consume(cctx, tc.key, 1)
			if err != nil || !d.Allowed {
				cancel()
				t.Fatalf("%s: Consume %d: %+v %v", tc.key, i, d, err)
			}
		}
		cancel()
	}
}

// TestPooledKeysUnderReservations: a key of one limit grants by CAS
// without the key's mutex, while the engine's committer moves its word and
// marks for each reservation. With chunks that a round trip outlasts, four
// engines reserve again all the time, with 16 goroutines each that consume
// and refund. Nothing is granted beyond the quota (the clock stands still:
// a window's quota, a Rate's burst); and once every engine has closed
// (each gives back what it holds), Redis counts as spent exactly the units
// granted and not refunded (Credits and windows: a Rate limit gives back
// only while no other engine reserved past it).
func TestPooledKeysUnderReservations(t *testing.T) {
	for _, tc := range []struct {
		name  string
		q     int64
		limit engine.Limit
		exact bool
	}{
		{"credits", 1_000_000, engine.Credits(1_000_000), true},
		{"window", 300_000, engine.PerWindow(300_000, time.Hour), true},
		{"rate", 300_000, engine.Rate(300_000, time.Hour, 300_000), false},
	} {
		t.Run(tc.name, func(t *testing.T) { pooledUnderReservations(t, tc.q, tc.limit, tc.exact) })
	}
}

func pooledUnderReservations(t *testing.T, q int64, limit engine.Limit, exact bool) {
	_, c := newRedis(t)
	clk := newClock()
	opts := []engine.Option{engine.WithLease(engine.LeaseOptions{MinChunk: 4096, MaxChunk: 65536}), clk.option()}
	engs := make([]*engine.Engine, 4)
	for i := range engs {
		st, err := redisstore.New(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if engs[i], err = engine.New(append([]engine.Option{engine.WithStore(st)}, opts...)...); err != nil {
			t.Fatal(err)
		}
	}
	if err := engs[0].Register(ctx, "k", limit); err != nil {
		t.Fatal(err)
	}
	var granted, refunded atomic.Int64
	var wg sync.WaitGroup
	for i, eng := range engs {
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; ; j++ {
					d, err := eng.Consume(ctx, "k", 1)
					if err != nil {
						t.Error(err)
						return
					}
					if !d.Allowed {
						return
					}
					granted.Add(1)
					if (i+g+j)%7 == 0 && j < 200 {
						if err := eng.Refund(ctx, "k", d, 1); err != nil {
							t.Error(err)
							return
						}
						refunded.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	net := granted.Load() - refunded.Load()
	if net > q {
		t.Fatalf("granted %d, refunded %d: %d net, more than the quota %d", granted.Load(), refunded.Load(), net, q)
	}
	for _, eng := range engs {
		if err := eng.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !exact {
		t.Logf("granted %d, refunded %d: %d net of %d", granted.Load(), refunded.Load(), net, q)
		return
	}
	fresh := newEngine(t, c, clk.option())
	if d, err := fresh.Consume(ctx, "k", q+1); err != nil || d.Allowed { // reads the key from Redis
		t.Fatalf("%+v %v", d, err)
	}
	s, err := fresh.Status("k")
	if err != nil {
		t.Fatal(err)
	}
	if spent := q - s.Limits[0].Remaining; spent != net {
		t.Fatalf("Redis counts %d spent after every engine closed, want the %d granted and not refunded (%d granted, %d refunded)",
			spent, net, granted.Load(), refunded.Load())
	}
	t.Logf("granted %d, refunded %d; Redis counts %d spent of %d", granted.Load(), refunded.Load(), net, q)
}
