package engine_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

// requireDecision checks what got says against want, LimitIndex aside
// unless want sets it.
func requireDecision(t testing.TB, want, got engine.Decision, msg ...any) {
	t.Helper()
	if want.LimitIndex == 0 {
		got.LimitIndex = 0
	}
	if want.Allowed && want.Reason == engine.Undecided {
		want.Reason = engine.OK // a grant's Reason
	}
	type view struct {
		Allowed                bool
		Reason                 engine.Reason
		Limit, Remaining       int64
		RetryAfter, ResetAfter time.Duration
		LimitIndex             int
	}
	v := func(d engine.Decision) view {
		return view{d.Allowed, d.Reason, d.Limit, d.Remaining, d.RetryAfter, d.ResetAfter, d.LimitIndex}
	}
	require.Equal(t, v(want), v(got), msg...)
}

var grants = struct {
	once sync.Once
	eng  *engine.Engine
}{}

// grantOf returns a grant of n units (at most MaxCredits) from an engine of
// its own, which read no clock: a Decision to refund with where a test has
// none of the key's own. It gives nothing back to a window.
func grantOf(t testing.TB, n int64) engine.Decision {
	t.Helper()
	grants.once.Do(func() {
		grants.eng, _ = engine.New()
	})
	key := fmt.Sprint("g", n)
	_ = grants.eng.Register(ctx, key, engine.Credits(engine.MaxCredits))
	d, err := grants.eng.Consume(ctx, key, n)
	if err != nil || !d.Allowed {
		t.Fatalf("grantOf(%d): %+v %v", n, d, err)
	}
	return d
}

// clock is a settable clock for engine.WithClock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func (c *clock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }

func newEngine(t testing.TB, opts ...engine.Option) *engine.Engine {
	t.Helper()
	eng, err := engine.New(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = eng.Close() })
	return eng
}

// hammer runs goroutines × attempts Consume(key, 1) calls and returns how
// many were granted.
func hammer(t *testing.T, eng *engine.Engine, key string, goroutines, attempts int) int64 {
	t.Helper()
	var granted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range attempts {
				d, err := eng.Consume(ctx, key, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					granted.Add(1)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	return granted.Load()
}

func TestExactUnderContention(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	cases := []struct {
		name   string
		limits []engine.Limit
		want   int64
	}{
		{"credits", []engine.Limit{engine.Credits(1000)}, 1000},
		{"window", []engine.Limit{engine.PerWindow(1000, time.Hour)}, 1000},
		{"month", []engine.Limit{engine.PerMonth(1000)}, 1000},
		{"rate", []engine.Limit{engine.Rate(1, time.Hour, 1000)}, 1000},
		{"multi-credits-binds", []engine.Limit{engine.Credits(1000), engine.PerWindow(5000, time.Hour)}, 1000},
		{"multi-window-binds", []engine.Limit{engine.Credits(1_000_000), engine.PerWindow(1000, time.Hour), engine.Rate(1, time.Hour, 3000)}, 1000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eng := newEngine(t, engine.WithClock(clk.Now))
			require.NoError(t, eng.Register(ctx, "k", tc.limits...))
			got := hammer(t, eng, "k", 64, 10_000)
			require.Equal(t, tc.want, got)
			st, err := eng.Status("k")
			require.NoError(t, err)
			min := int64(math.MaxInt64)
			for _, l := range st.Limits {
				min = int64(math.Min(float64(min), float64(l.Remaining)))
			}
			require.Equal(t, int64(0), min, "the binding limit is empty")
		})
	}
}

// Refunds of granted units racing with consumes: remaining never leaves
// [0, quota], and at the end it is exactly quota - granted + refunded.
func TestRefundRacingConsume(t *testing.T) {
	for _, limits := range [][]engine.Limit{
		{engine.Credits(500)},
		{engine.Credits(500), engine.PerWindow(500, time.Hour)},
	} {
		eng := newEngine(t, engine.WithClock(newClock(time.Unix(1e9, 0)).Now))
		require.NoError(t, eng.Register(ctx, "k", limits...))
		d7, err := eng.Consume(ctx, "k", 7) // refunded at the end
		require.NoError(t, err)
		require.True(t, d7.Allowed)
		var granted, refunded atomic.Int64
		granted.Add(7)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var bad atomic.Int64
		wg.Add(1)
		go func() { // observer
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				st, err := eng.Status("k")
				if err != nil {
					bad.Add(1)
					return
				}
				for _, l := range st.Limits {
					if l.Remaining < 0 || l.Remaining > 500 {
						bad.Add(1)
					}
				}
			}
		}()
		var workers sync.WaitGroup
		for g := range 32 {
			workers.Add(1)
			go func() {
				defer workers.Done()
				for i := range 2000 {
					d, _ := eng.Consume(ctx, "k", 2)
					if d.Allowed {
						granted.Add(2)
						if (g+i)%3 == 0 {
							require.NoError(t, eng.Refund(ctx, "k", d, 2))
							refunded.Add(2)
						}
					}
					if d.Remaining < 0 || d.Remaining > 500 {
						bad.Add(1)
					}
				}
			}()
		}
		workers.Wait()
		close(stop)
		wg.Wait()
		require.Zero(t, bad.Load())
		st, _ := eng.Status("k")
		for _, l := range st.Limits {
			require.Equal(t, 500-granted.Load()+refunded.Load(), l.Remaining, l.Limit.Name())
		}
		// Refunds beyond what was spent stop at the quota.
		for range 100 {
			require.NoError(t, eng.Refund(ctx, "k", d7, 7))
		}
		st, _ = eng.Status("k")
		for _, l := range st.Limits {
			require.Equal(t, int64(500), l.Remaining)
		}
	}
}

// Once Revoke returns, no Consume that starts afterwards is granted. The
// marker is set after Revoke returns and read before each Consume starts, so
// "saw the marker" implies "started after Revoke returned" (happens-before),
// whatever the timing.
func TestRevokeIsLinearizable(t *testing.T) {
	for _, limits := range [][]engine.Limit{
		{engine.Credits(math.MaxInt32)},
		{engine.Credits(math.MaxInt32), engine.Rate(1, time.Nanosecond, 1_000_000)},
	} {
		for round := range 20 {
			eng := newEngine(t)
			require.NoError(t, eng.Register(ctx, "k", limits...))
			var marker atomic.Bool
			var before, after, violations atomic.Int64
			var wg sync.WaitGroup
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						started := marker.Load()
						d, err := eng.Consume(ctx, "k", 1)
						require.NoError(t, err)
						if started {
							after.Add(1)
							if d.Allowed {
								violations.Add(1)
							}
							if d.Reason != engine.Revoked {
								violations.Add(1)
							}
							if i > 50 {
								return
							}
						} else if d.Allowed {
							before.Add(1)
						}
					}
				}()
			}
			for before.Load() < int64(100*(round+1)) {
				// let consumers get going
			}
			require.NoError(t, eng.Revoke(ctx, "k"))
			marker.Store(true)
			wg.Wait()
			require.Zero(t, violations.Load())
			require.Positive(t, after.Load())
		}
	}
}

func TestRevokeThenStatus(t *testing.T) {
	eng := newEngine(t)
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(5)))
	require.NoError(t, eng.Revoke(ctx, "k"))
	require.NoError(t, eng.Revoke(ctx, "k"), "revoking twice is fine")
	st, err := eng.Status("k")
	require.NoError(t, err)
	require.True(t, st.Revoked)
	require.Equal(t, int64(5), st.Limits[0].Remaining)
	d, err := eng.Consume(ctx, "k", 1)
	require.NoError(t, err)
	requireDecision(t, engine.Decision{Reason: engine.Revoked}, d)
}

func TestUnknownKeyIsADecision(t *testing.T) {
	eng := newEngine(t)
	d, err := eng.Consume(ctx, "nope", 1)
	require.NoError(t, err)
	require.Equal(t, engine.UnknownKey, d.Reason)
	require.False(t, d.Allowed)
}

func TestValidation(t *testing.T) {
	eng := newEngine(t)
	long := strings.Repeat("k", engine.MaxKeyLen+1)
	require.NoError(t, eng.Register(ctx, strings.Repeat("k", engine.MaxKeyLen), engine.Credits(1)))
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(10)))

	for _, key := range []string{"", long, "\x00abc"} {
		_, err := eng.Consume(ctx, key, 1)
		require.ErrorIs(t, err, engine.ErrInvalidKey)
		require.ErrorIs(t, eng.Register(ctx, key, engine.Credits(1)), engine.ErrInvalidKey)
		require.ErrorIs(t, eng.Refund(ctx, key, grantOf(t, 1), 1), engine.ErrInvalidKey)
		require.ErrorIs(t, eng.Revoke(ctx, key), engine.ErrInvalidKey)
		_, err = eng.Status(key)
		require.ErrorIs(t, err, engine.ErrInvalidKey)
	}
	for _, n := range []int64{0, -1, math.MinInt64} {
		_, err := eng.Consume(ctx, "k", n)
		require.ErrorIs(t, err, engine.ErrInvalidAmount)
		require.ErrorIs(t, eng.Refund(ctx, "k", grantOf(t, 1), n), engine.ErrInvalidAmount)
		require.ErrorIs(t, eng.TopUp(ctx, "k", n), engine.ErrInvalidAmount)
	}
	// Huge amounts are denials, not errors or overflows.
	d, err := eng.Consume(ctx, "k", math.MaxInt64)
	require.NoError(t, err)
	require.Equal(t, engine.Exhausted, d.Reason)
	require.Equal(t, time.Duration(0), d.RetryAfter)
	require.NoError(t, eng.Refund(ctx, "k", grantOf(t, engine.MaxCredits/2), engine.MaxCredits/2))
	require.ErrorIs(t, eng.Refund(ctx, "k", grantOf(t, 5), 6), engine.ErrInvalidAmount, "more than the grant")
	require.ErrorIs(t, eng.Refund(ctx, "k", d, 1), engine.ErrInvalidAmount, "a denial grants nothing")
	require.ErrorIs(t, eng.Refund(ctx, "k", engine.Decision{}, 1), engine.ErrInvalidAmount)
	require.ErrorIs(t, eng.TopUp(ctx, "k", math.MaxInt64), engine.ErrInvalidAmount)
	st, _ := eng.Status("k")
	require.Equal(t, int64(10), st.Limits[0].Remaining, "a failed top up changes nothing")

	bad := map[string][]engine.Limit{
		"none":            nil,
		"zero":            {{}},
		"credits 0":       {engine.Credits(0)},
		"credits -1":      {engine.Credits(-1)},
		"credits huge":    {engine.Credits(math.MaxInt64)},
		"window 0":        {engine.PerWindow(0, time.Hour)},
		"window period 0": {engine.PerWindow(1, 0)},
		"window short":    {engine.PerWindow(1, time.Millisecond)},
		"window huge":     {engine.PerWindow(1<<33, time.Hour)},
		"month 0":         {engine.PerMonth(0)},
		"month nil loc":   {engine.PerMonthIn(1, nil)},
		"rate n 0":        {engine.Rate(0, time.Second, 1)},
		"rate per 0":      {engine.Rate(1, 0, 1)},
		"rate per -1":     {engine.Rate(1, -time.Second, 1)},
		"rate burst 0":    {engine.Rate(1, time.Second, 0)},
		"rate overflow":   {engine.Rate(1, time.Hour, math.MaxInt64/2)},
		"dup names":       {engine.Credits(1), engine.Credits(2)},
		"bad name":        {engine.Credits(1).Named(`a"b`)},
		"empty name":      {engine.Credits(1).Named("")}, // "" means default: valid
		"too many":        make([]engine.Limit, engine.MaxLimits+1),
	}
	for name, ls := range bad {
		err := eng.Register(ctx, "new-"+name, ls...)
		if name == "empty name" {
			require.NoError(t, err)
			continue
		}
		require.ErrorIs(t, err, engine.ErrInvalidLimit, name)
		require.True(t, strings.HasPrefix(err.Error(), "allot: "), err.Error())
		require.ErrorIs(t, eng.SetLimits(ctx, "k", ls...), engine.ErrInvalidLimit, name)
	}

	require.ErrorIs(t, eng.Register(ctx, "k", engine.Credits(1)), engine.ErrKeyExists)
	require.ErrorIs(t, eng.Refund(ctx, "nope", grantOf(t, 1), 1), engine.ErrUnknownKey)
	require.ErrorIs(t, eng.Revoke(ctx, "nope"), engine.ErrUnknownKey)
	require.ErrorIs(t, eng.TopUp(ctx, "nope", 1), engine.ErrUnknownKey)
	require.ErrorIs(t, eng.SetLimits(ctx, "nope", engine.Credits(1)), engine.ErrUnknownKey)
	require.ErrorIs(t, eng.Rotate(ctx, "nope", "new", 0), engine.ErrUnknownKey)
	_, err = eng.Status("nope")
	require.ErrorIs(t, err, engine.ErrUnknownKey)

	_, err = engine.New(engine.WithShards(3))
	require.ErrorIs(t, err, engine.ErrInvalidOption)
	_, err = engine.New(engine.WithShards(0))
	require.ErrorIs(t, err, engine.ErrInvalidOption)
	_, err = engine.New(engine.WithClock(nil))
	require.ErrorIs(t, err, engine.ErrInvalidOption)
}

func TestClose(t *testing.T) {
	eng, err := engine.New()
	require.NoError(t, err)
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(1)))
	require.NoError(t, eng.Close())
	require.ErrorIs(t, eng.Close(), engine.ErrClosed)
	_, err = eng.Consume(ctx, "k", 1)
	require.ErrorIs(t, err, engine.ErrClosed)
	require.ErrorIs(t, eng.Register(ctx, "j", engine.Credits(1)), engine.ErrClosed)
	require.ErrorIs(t, eng.Refund(ctx, "k", grantOf(t, 1), 1), engine.ErrClosed)
	require.ErrorIs(t, eng.Revoke(ctx, "k"), engine.ErrClosed)
	_, err = eng.Status("k")
	require.ErrorIs(t, err, engine.ErrClosed)
}

func TestWindowRollover(t *testing.T) {
	clk := newClock(time.Date(2026, 5, 5, 9, 59, 59, 0, time.UTC))
	eng := newEngine(t, engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "k", engine.PerWindow(3, time.Hour)))
	d, _ := eng.Consume(ctx, "k", 3)
	requireDecision(t, engine.Decision{Allowed: true, Limit: 3, Remaining: 0, ResetAfter: time.Second}, d)
	clk.Add(999_999_999 * time.Nanosecond) // 09:59:59.999999999
	d, _ = eng.Consume(ctx, "k", 1)
	requireDecision(t, engine.Decision{Reason: engine.Exhausted, Limit: 3, RetryAfter: time.Nanosecond, ResetAfter: time.Nanosecond}, d)
	clk.Add(time.Nanosecond) // 10:00: a new window
	d, _ = eng.Consume(ctx, "k", 2)
	requireDecision(t, engine.Decision{Allowed: true, Limit: 3, Remaining: 1, ResetAfter: time.Hour}, d)
	// Asking for more than the quota can never succeed: RetryAfter 0.
	d, _ = eng.Consume(ctx, "k", 4)
	requireDecision(t, engine.Decision{Reason: engine.Exhausted, Limit: 3, Remaining: 1, ResetAfter: time.Hour}, d)

	// A clock that steps back does not reopen the window it left.
	clk.Add(-2 * time.Hour)
	d, _ = eng.Consume(ctx, "k", 2)
	require.False(t, d.Allowed)
	d, _ = eng.Consume(ctx, "k", 1)
	require.True(t, d.Allowed)
	require.Equal(t, int64(0), d.Remaining)
	// Refund to a window that is over gives nothing to the next one.
	clk.Set(time.Date(2026, 5, 5, 11, 0, 0, 0, time.UTC))
	d, _ = eng.Consume(ctx, "k", 1)
	require.Equal(t, int64(2), d.Remaining)
	clk.Set(time.Date(2026, 5, 5, 12, 0, 0, 0, time.UTC))
	require.NoError(t, eng.Refund(ctx, "k", d, 1))
	st, _ := eng.Status("k")
	require.Equal(t, int64(3), st.Limits[0].Remaining)
	require.Equal(t, time.Hour, st.Limits[0].ResetAfter)
}

// stallClock is a clock one reading of which, once armed, is taken and then
// held until release is closed: a Consume that read the time just before
// another caller moved the clock on.
type stallClock struct {
	*clock
	armed         atomic.Bool
	read, release chan struct{}
}

func (c *stallClock) Now() time.Time {
	t := c.clock.Now()
	if c.armed.CompareAndSwap(true, false) {
		c.read <- struct{}{}
		<-c.release
	}
	return t
}

// A grant is counted in the window of the time its Decision carries, which
// Refund goes by. A Consume that read 09:59 while another, reading 10:59,
// moved the key into the 10:00 window counted its grant there with 09:59
// as its time, and its refund gave the 10:00 window nothing
// (TestLinearizableChains found it, one history in about 40 runs).
func TestRefundOfAGrantAtAWindowEdge(t *testing.T) {
	for _, limits := range [][]engine.Limit{
		{engine.PerWindow(20, time.Hour)},
		{engine.Credits(30), engine.PerWindow(20, time.Hour)},
	} {
		clk := &stallClock{clock: newClock(time.Date(2026, 6, 1, 9, 59, 0, 0, time.UTC)), read: make(chan struct{}), release: make(chan struct{})}
		eng := newEngine(t, engine.WithClock(clk.Now))
		require.NoError(t, eng.Register(ctx, "k", limits...))
		type result struct {
			d   engine.Decision
			err error
		}
		first, second := make(chan result, 1), make(chan result, 1)
		clk.armed.Store(true)
		go func() { d, err := eng.Consume(ctx, "k", 1); first <- result{d, err} }()
		<-clk.read         // the first Consume has read 09:59
		clk.Add(time.Hour) // 10:59
		go func() { d, err := eng.Consume(ctx, "k", 2); second <- result{d, err} }()
		var b result
		select {
		case b = <-second: // counted in the 10:00 window first
			close(clk.release)
		case <-time.After(50 * time.Millisecond): // or it waits for the first
			close(clk.release)
			b = <-second
		}
		a := <-first
		for _, r := range []result{a, b} {
			require.NoError(t, r.err)
			require.True(t, r.d.Allowed)
		}
		require.NoError(t, eng.Refund(ctx, "k", a.d, 1))
		// Either the first grant was counted in the 09:00 window, which
		// is over, or in the 10:00 one, which gets it back: 10:00 counts
		// the second grant's 2 units only.
		st := mustStatus(t, eng, "k")
		require.Equal(t, int64(18), st.Limits[len(limits)-1].Remaining, "%v", limits)
		if len(limits) > 1 {
			require.Equal(t, int64(28), st.Limits[0].Remaining, "credits: 30 - 3 + 1")
		}
	}
}

func TestWindowsAreAlignedToTheEpoch(t *testing.T) {
	clk := newClock(time.Unix(86400*20000+17, 0)) // 17 s into a UTC day
	eng := newEngine(t, engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "k", engine.PerWindow(10, 24*time.Hour), engine.PerWindow(5, time.Minute)))
	d, _ := eng.Consume(ctx, "k", 1)
	requireDecision(t, engine.Decision{Allowed: true, Limit: 5, Remaining: 4, ResetAfter: 43 * time.Second}, d)
	st, _ := eng.Status("k")
	require.Equal(t, "day", st.Limits[0].Limit.Name())
	require.Equal(t, 24*time.Hour-17*time.Second, st.Limits[0].ResetAfter)
}

func TestMonthRollover(t *testing.T) {
	tokyo := time.FixedZone("JST", 9*3600)
	// 2026-01-31 23:00 in Tokyo is 14:00 UTC: still January there and in UTC.
	clk := newClock(time.Date(2026, 1, 31, 23, 0, 0, 0, tokyo))
	eng := newEngine(t, engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "utc", engine.PerMonth(2)))
	require.NoError(t, eng.Register(ctx, "jst", engine.PerMonthIn(2, tokyo)))
	for _, k := range []string{"utc", "jst"} {
		d, _ := eng.Consume(ctx, k, 2)
		require.True(t, d.Allowed)
	}
	d, _ := eng.Consume(ctx, "jst", 1)
	requireDecision(t, engine.Decision{Reason: engine.Exhausted, Limit: 2, RetryAfter: time.Hour, ResetAfter: time.Hour}, d)
	d, _ = eng.Consume(ctx, "utc", 1)
	require.Equal(t, 10*time.Hour, d.RetryAfter)
	clk.Add(time.Hour) // February in Tokyo, not yet in UTC
	d, _ = eng.Consume(ctx, "jst", 1)
	requireDecision(t, engine.Decision{Allowed: true, Limit: 2, Remaining: 1, ResetAfter: 28 * 24 * time.Hour}, d)
	d, _ = eng.Consume(ctx, "utc", 1)
	require.False(t, d.Allowed)
	clk.Set(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
	d, _ = eng.Consume(ctx, "utc", 1)
	requireDecision(t, engine.Decision{Allowed: true, Limit: 2, Remaining: 1, ResetAfter: 28 * 24 * time.Hour}, d)
}

func TestRateBurstAndSteadyState(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	clk := newClock(t0)
	eng := newEngine(t, engine.WithClock(clk.Now))
	// 10 per second: one unit every 100 ms; bursts of 20.
	require.NoError(t, eng.Register(ctx, "k", engine.Rate(10, time.Second, 20)))
	for i := range 20 {
		d, _ := eng.Consume(ctx, "k", 1)
		requireDecision(t, engine.Decision{Allowed: true, Limit: 20, Remaining: int64(19 - i), ResetAfter: time.Duration(i+1) * 100 * time.Millisecond}, d)
	}
	d, _ := eng.Consume(ctx, "k", 1)
	requireDecision(t, engine.Decision{Reason: engine.Exhausted, Limit: 20, RetryAfter: 100 * time.Millisecond, ResetAfter: 2 * time.Second}, d)
	d, _ = eng.Consume(ctx, "k", 5)
	require.Equal(t, 500*time.Millisecond, d.RetryAfter)
	clk.Add(37 * time.Millisecond)
	d, _ = eng.Consume(ctx, "k", 1)
	require.Equal(t, 63*time.Millisecond, d.RetryAfter, "exact to the nanosecond")
	// Steady state: one unit per 100 ms is granted, forever.
	clk.Set(t0)
	for i := range 1000 {
		clk.Set(t0.Add(time.Duration(i+1) * 100 * time.Millisecond))
		d, _ := eng.Consume(ctx, "k", 1)
		require.True(t, d.Allowed, "step %d", i)
		require.Equal(t, int64(0), d.Remaining)
		d, _ = eng.Consume(ctx, "k", 1)
		require.False(t, d.Allowed, "step %d", i)
		require.Equal(t, 100*time.Millisecond, d.RetryAfter)
	}
	// Idle for long: back to a full burst, not more.
	clk.Add(time.Hour)
	d, _ = eng.Consume(ctx, "k", 21)
	requireDecision(t, engine.Decision{Reason: engine.Exhausted, Limit: 20, Remaining: 20}, d)
	d, _ = eng.Consume(ctx, "k", 20)
	require.True(t, d.Allowed)
	// A clock that steps back never refills the bucket; RetryAfter stays
	// within a full bucket's time (2 s), though the true wait is longer.
	clk.Add(-time.Minute)
	d, _ = eng.Consume(ctx, "k", 1)
	require.False(t, d.Allowed)
	require.Equal(t, 2*time.Second, d.RetryAfter)
	require.Equal(t, 2*time.Second, d.ResetAfter)
}

func TestRateRoundsIntervalUp(t *testing.T) {
	clk := newClock(time.Unix(1_800_000_000, 0))
	eng := newEngine(t, engine.WithClock(clk.Now))
	// 3 per second is an interval of 333,333,333.33 ns: rounded up, never faster.
	require.NoError(t, eng.Register(ctx, "k", engine.Rate(3, time.Second, 1)))
	d, _ := eng.Consume(ctx, "k", 1)
	require.True(t, d.Allowed)
	d, _ = eng.Consume(ctx, "k", 1)
	require.Equal(t, 333_333_334*time.Nanosecond, d.RetryAfter)
}

func TestMultiLimitDenialChangesNothing(t *testing.T) {
	clk := newClock(time.Unix(1_800_000_000, 0))
	eng := newEngine(t, engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(100), engine.PerWindow(10, time.Minute), engine.Rate(1, time.Second, 5)))
	d, _ := eng.Consume(ctx, "k", 5)
	requireDecision(t, engine.Decision{Allowed: true, Limit: 5, Remaining: 0, ResetAfter: 5 * time.Second}, d)
	d, _ = eng.Consume(ctx, "k", 1) // the rate denies; credits and window must not move
	requireDecision(t, engine.Decision{Reason: engine.Exhausted, Limit: 5, RetryAfter: time.Second, ResetAfter: 5 * time.Second}, d)
	st, _ := eng.Status("k")
	require.Equal(t, []int64{95, 5, 0}, remaining(st))
	// Credits exhausted and rate exhausted: the credits (never refills) is the one reported.
	require.NoError(t, eng.SetLimits(ctx, "k", engine.Credits(5), engine.PerWindow(10, time.Minute), engine.Rate(1, time.Second, 5)))
	st, _ = eng.Status("k")
	require.Equal(t, []int64{0, 5, 0}, remaining(st), "spending carried over")
	d, _ = eng.Consume(ctx, "k", 1)
	requireDecision(t, engine.Decision{Reason: engine.Exhausted, Limit: 5}, d)
}

func remaining(st engine.Status) []int64 {
	var r []int64
	for _, l := range st.Limits {
		r = append(r, l.Remaining)
	}
	return r
}

func TestTopUpAndSetLimits(t *testing.T) {
	clk := newClock(time.Unix(1_800_000_000, 0))
	eng := newEngine(t, engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(10)))
	d10, _ := eng.Consume(ctx, "k", 10)
	require.True(t, d10.Allowed)
	require.NoError(t, eng.TopUp(ctx, "k", 5))
	d, _ := eng.Consume(ctx, "k", 1)
	require.Equal(t, int64(15), d.Limit)
	require.Equal(t, int64(4), d.Remaining)
	require.NoError(t, eng.Refund(ctx, "k", d10, 10), "a top up keeps the limits a grant was counted in")
	require.NoError(t, eng.Refund(ctx, "k", d, 1))
	require.NoError(t, eng.Refund(ctx, "k", d10, 10))
	st, _ := eng.Status("k")
	require.Equal(t, int64(15), st.Limits[0].Remaining, "refund stops at the topped-up quota")

	require.NoError(t, eng.Register(ctx, "w", engine.PerWindow(10, time.Hour)))
	require.ErrorIs(t, eng.TopUp(ctx, "w", 1), engine.ErrNoCredits)
	_, _ = eng.Consume(ctx, "w", 4)
	require.NoError(t, eng.SetLimits(ctx, "w", engine.PerWindow(6, time.Hour), engine.Credits(3)))
	st, _ = eng.Status("w")
	require.Equal(t, []int64{2, 3}, remaining(st), "window keeps its 4 used units; the new limit starts full")
	require.NoError(t, eng.SetLimits(ctx, "w", engine.PerWindow(3, time.Hour)))
	d, _ = eng.Consume(ctx, "w", 1)
	require.False(t, d.Allowed, "4 used of a quota lowered to 3")

	require.NoError(t, eng.Register(ctx, "r", engine.Rate(1, time.Second, 10)))
	_, _ = eng.Consume(ctx, "r", 8)
	require.NoError(t, eng.SetLimits(ctx, "r", engine.Rate(2, time.Second, 10)))
	st, _ = eng.Status("r")
	require.Equal(t, []int64{2}, remaining(st), "a rate keeps its debt of 8 units")
	require.NoError(t, eng.Revoke(ctx, "r"))
	require.NoError(t, eng.SetLimits(ctx, "r", engine.Credits(1)))
	st, _ = eng.Status("r")
	require.True(t, st.Revoked, "SetLimits keeps a revocation")
}

func TestRotate(t *testing.T) {
	clk := newClock(time.Unix(1_800_000_000, 0))
	eng := newEngine(t, engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "a", engine.Credits(100), engine.Rate(1, time.Millisecond, 1000)))
	d10, _ := eng.Consume(ctx, "a", 10)
	require.NoError(t, eng.Rotate(ctx, "a", "b", time.Minute))
	require.ErrorIs(t, eng.Rotate(ctx, "a", "c", time.Minute), engine.ErrRotated)
	require.ErrorIs(t, eng.Register(ctx, "a", engine.Credits(1)), engine.ErrKeyExists)
	require.ErrorIs(t, eng.TopUp(ctx, "a", 1), engine.ErrRotated)
	require.ErrorIs(t, eng.Rotate(ctx, "b", "b", 0), engine.ErrKeyExists)

	// Both keys draw on one set of counters during the grace.
	g := hammerAll(t, eng, []string{"a", "b"}, 16, 100)
	require.Equal(t, int64(90), g)
	st, _ := eng.Status("a")
	require.True(t, st.RotatedOut)
	require.False(t, st.Revoked)
	require.Equal(t, clk.Now().Add(time.Minute), st.GraceUntil)
	require.NoError(t, eng.Refund(ctx, "a", d10, 5)) // refunds b's counters
	st, _ = eng.Status("b")
	require.Equal(t, int64(5), st.Limits[0].Remaining)

	// Rotate again: a now follows b's counters to c.
	require.NoError(t, eng.Rotate(ctx, "b", "c", time.Hour))
	d, _ := eng.Consume(ctx, "a", 1)
	require.Equal(t, int64(4), d.Remaining)
	clk.Add(time.Minute)
	d, _ = eng.Consume(ctx, "a", 1)
	require.Equal(t, engine.Revoked, d.Reason, "grace over")
	d, _ = eng.Consume(ctx, "b", 1)
	require.True(t, d.Allowed)
	require.NoError(t, eng.Revoke(ctx, "b"))
	d, _ = eng.Consume(ctx, "b", 1)
	require.Equal(t, engine.Revoked, d.Reason)
	d, _ = eng.Consume(ctx, "c", 1)
	require.True(t, d.Allowed)
	require.Equal(t, int64(2), d.Remaining)

	// Grace 0 revokes at once; revoking the new key ends the old key's grace.
	require.NoError(t, eng.Register(ctx, "x", engine.Credits(10)))
	require.NoError(t, eng.Rotate(ctx, "x", "y", 0))
	d, _ = eng.Consume(ctx, "x", 1)
	require.Equal(t, engine.Revoked, d.Reason)
	require.NoError(t, eng.Rotate(ctx, "y", "z", time.Hour))
	require.NoError(t, eng.Revoke(ctx, "z"))
	d, _ = eng.Consume(ctx, "y", 1)
	require.Equal(t, engine.Revoked, d.Reason)
	require.ErrorIs(t, eng.Rotate(ctx, "z", "w", 0), engine.ErrKeyRevoked)
	require.ErrorIs(t, eng.Rotate(ctx, "c", "x", 0), engine.ErrKeyExists)
	require.ErrorIs(t, eng.Rotate(ctx, "c", "q", -time.Second), engine.ErrInvalidAmount)
}

func hammerAll(t *testing.T, eng *engine.Engine, keys []string, goroutines, attempts int) int64 {
	var total int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := hammer(t, eng, k, goroutines, attempts)
			mu.Lock()
			total += g
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total
}

// Consumes racing with SetLimits, TopUp and Rotate (which replace the key's
// record) still never over-grant.
func TestChangesRacingConsumes(t *testing.T) {
	eng := newEngine(t)
	require.NoError(t, eng.Register(ctx, "k0", engine.Credits(1000)))
	var wg sync.WaitGroup
	var granted atomic.Int64
	stop := make(chan struct{})
	keys := []string{"k0", "k1", "k2", "k3"}
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d, err := eng.Consume(ctx, keys[(g+i)%len(keys)], 1)
				require.NoError(t, err)
				if d.Allowed {
					granted.Add(1)
				}
			}
		}()
	}
	var toppedUp int64
	for i := range 3 {
		for range 50 {
			require.NoError(t, eng.SetLimits(ctx, keys[i], engine.Credits(1000+toppedUp)))
			require.NoError(t, eng.TopUp(ctx, keys[i], 2))
			toppedUp += 2
		}
		require.NoError(t, eng.Rotate(ctx, keys[i], keys[i+1], time.Hour))
	}
	close(stop)
	wg.Wait()
	st, _ := eng.Status("k3")
	total := int64(1000 + toppedUp)
	require.Equal(t, total-st.Limits[0].Remaining, granted.Load(), "every grant is accounted for")
	require.LessOrEqual(t, granted.Load(), total)
}

func TestZeroAllocs(t *testing.T) {
	clk := newClock(time.Unix(1_800_000_000, 0))
	eng := newEngine(t, engine.WithClock(clk.Now))
	cases := map[string][]engine.Limit{
		"credits": {engine.Credits(1 << 40)},
		"window":  {engine.PerWindow(1<<31, time.Hour)},
		"month":   {engine.PerMonthIn(1<<31, time.FixedZone("X", 3600))},
		"rate":    {engine.Rate(1, time.Nanosecond, 1<<20)},
		"multi":   {engine.Credits(1 << 40), engine.PerWindow(1<<31, time.Hour)},
		"deny":    {engine.Credits(1)},
	}
	for name, ls := range cases {
		require.NoError(t, eng.Register(ctx, name, ls...))
		allocs := testing.AllocsPerRun(1000, func() {
			_, _ = eng.Consume(ctx, name, 1)
		})
		require.Zero(t, allocs, name)
	}
	require.Zero(t, testing.AllocsPerRun(1000, func() { _, _ = eng.Consume(ctx, "unknown", 1) }))
	buf := make([]engine.LimitStatus, 0, engine.MaxLimits)
	require.Zero(t, testing.AllocsPerRun(1000, func() { _, _ = eng.AppendLimits(buf[:0], "multi") }))
	_, adm, _ := eng.Admit(ctx, "credits", 1)
	adm.Done()
	require.Zero(t, testing.AllocsPerRun(1000, func() {
		_, adm, _ := eng.Admit(ctx, "credits", 1)
		adm.Done()
	}))
}

func TestRevokeAndWait(t *testing.T) {
	eng := newEngine(t)
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(100)))
	d, adm, err := eng.Admit(ctx, "k", 1)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	require.Equal(t, int64(1), eng.InFlight("k"))

	// While the admitted request runs, RevokeAndWait cannot finish.
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	err = eng.RevokeAndWait(short, "k")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	d, adm2, _ := eng.Admit(ctx, "k", 1)
	require.Equal(t, engine.Revoked, d.Reason, "revoked even though the wait timed out")
	adm2.Done() // no-op on a denial

	done := make(chan error)
	go func() { done <- eng.RevokeAndWait(ctx, "k") }()
	select {
	case err := <-done:
		t.Fatalf("returned %v with a request in flight", err)
	default:
	}
	adm.Done()
	require.NoError(t, <-done)
	require.Equal(t, int64(0), eng.InFlight("k"))
}

// After a rotation both keys share one count of requests in flight:
// RevokeAndWait of the new key waits for a request admitted through the old.
func TestRevokeAndWaitAfterRotate(t *testing.T) {
	eng := newEngine(t)
	require.NoError(t, eng.Register(ctx, "old", engine.Credits(100)))
	require.NoError(t, eng.Rotate(ctx, "old", "new", time.Hour))
	d, adm, err := eng.Admit(ctx, "old", 1)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	require.ErrorIs(t, eng.RevokeAndWait(short, "new"), context.DeadlineExceeded, "must wait for the old key's request")
	done := make(chan error)
	go func() { done <- eng.RevokeAndWait(ctx, "new") }()
	select {
	case err := <-done:
		t.Fatalf("returned %v while a request of the old key runs", err)
	default:
	}
	adm.Done()
	require.NoError(t, <-done)
	d, _, _ = eng.Admit(ctx, "old", 1)
	require.Equal(t, engine.Revoked, d.Reason)
}

// AppendDecisionLimits reports the limit a decision describes as the
// decision saw it, not as it is a moment later; a grant on a key of one
// limit is answered from the decision alone, under the limits it was
// decided under, without an allocation.
func TestAppendDecisionLimits(t *testing.T) {
	eng := newEngine(t)
	require.NoError(t, eng.Register(ctx, "one", engine.Credits(10)))
	d, err := eng.Consume(ctx, "one", 3)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	_, err = eng.Consume(ctx, "one", 2) // moves the counter after d
	require.NoError(t, err)
	buf := make([]engine.LimitStatus, 0, engine.MaxLimits)
	ls, err := eng.AppendDecisionLimits(buf, "one", d)
	require.NoError(t, err)
	require.Len(t, ls, 1)
	require.Equal(t, [2]int64{10, 7}, [2]int64{ls[0].Limit.Quota(), ls[0].Remaining})
	now, err := eng.AppendLimits(buf, "one")
	require.NoError(t, err)
	require.Equal(t, int64(5), now[0].Remaining, "AppendLimits reads the key now")
	require.Zero(t, testing.AllocsPerRun(100, func() { _, _ = eng.AppendDecisionLimits(buf[:0], "one", d) }))

	// Under the limits it was decided under, after a change.
	require.NoError(t, eng.SetLimits(ctx, "one", engine.Credits(100)))
	ls, err = eng.AppendDecisionLimits(buf[:0], "one", d)
	require.NoError(t, err)
	require.Len(t, ls, 1)
	require.Equal(t, [2]int64{10, 7}, [2]int64{ls[0].Limit.Quota(), ls[0].Remaining})

	// Several limits: the decision's one as it saw it, the others now.
	hour := engine.PerWindow(100, time.Hour)
	require.NoError(t, eng.Register(ctx, "two", engine.Credits(5), hour))
	d, err = eng.Consume(ctx, "two", 1)
	require.NoError(t, err)
	require.Equal(t, 0, d.LimitIndex, "the credits are the tighter")
	_, err = eng.Consume(ctx, "two", 1)
	require.NoError(t, err)
	ls, err = eng.AppendDecisionLimits(buf[:0], "two", d)
	require.NoError(t, err)
	require.Len(t, ls, 2)
	require.Equal(t, [2]int64{5, 4}, [2]int64{ls[0].Limit.Quota(), ls[0].Remaining})
	require.Equal(t, hour.Quota(), ls[1].Limit.Quota())
	require.Equal(t, int64(98), ls[1].Remaining, "read now")

	// A denial is answered like AppendLimits, with its own view.
	for range 3 {
		_, err = eng.Consume(ctx, "two", 1)
		require.NoError(t, err)
	}
	d, err = eng.Consume(ctx, "two", 1)
	require.NoError(t, err)
	require.Equal(t, engine.Exhausted, d.Reason)
	ls, err = eng.AppendDecisionLimits(buf[:0], "two", d)
	require.NoError(t, err)
	require.Equal(t, int64(0), ls[0].Remaining)
	require.Equal(t, int64(95), ls[1].Remaining)

	// A key the engine does not hold, and bad input, as AppendLimits.
	_, err = eng.AppendDecisionLimits(nil, "nobody", engine.Decision{})
	require.ErrorIs(t, err, engine.ErrUnknownKey)
	_, err = eng.AppendDecisionLimits(nil, "", engine.Decision{})
	require.ErrorIs(t, err, engine.ErrInvalidKey)
}
