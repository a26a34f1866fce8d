package engine_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/stretchr/testify/require"
)

// Regression tests for the findings of the outside reviews (issue 9), one
// per finding, through the public API only.

// Finding 1: an "unlimited" rate overflowed the interval to 0 and panicked.
func TestFindingHugeRateDoesNotPanic(t *testing.T) {
	eng := newEngine(t)
	require.NoError(t, eng.Register(ctx, "other", engine.Credits(1)))
	for i, l := range []engine.Limit{
		engine.Rate(math.MaxInt64, time.Second, 10),
		engine.Rate(math.MaxInt64, time.Duration(math.MaxInt64), 10),
		engine.Rate(math.MaxInt64-1, 1, math.MaxInt64),
		engine.Rate(1, time.Duration(math.MaxInt64), 1),
	} {
		k := string(rune('a' + i))
		err := eng.Register(ctx, k, l)
		serr := eng.SetLimits(ctx, "other", engine.Credits(1), l)
		if err != nil {
			require.ErrorIs(t, err, engine.ErrInvalidLimit)
			require.ErrorIs(t, serr, engine.ErrInvalidLimit)
			continue
		}
		require.NoError(t, serr)
		d, err := eng.Consume(ctx, k, 1)
		require.NoError(t, err)
		require.True(t, d.Allowed)
		require.NoError(t, eng.SetLimits(ctx, k, l))
		_, err = eng.Consume(ctx, k, 1)
		require.NoError(t, err)
	}
}

// Finding 2: shrinking a limit and growing it back forgot what was spent.
func TestFindingSetLimitsKeepsSpending(t *testing.T) {
	eng := newEngine(t)
	require.NoError(t, eng.Register(ctx, "c", engine.Credits(100)))
	_, err := eng.Consume(ctx, "c", 60)
	require.NoError(t, err)
	require.NoError(t, eng.SetLimits(ctx, "c", engine.Credits(50)))
	require.NoError(t, eng.SetLimits(ctx, "c", engine.Credits(100)))
	require.Equal(t, []int64{40}, remaining(mustStatus(t, eng, "c")), "100 - 60 spent")
	require.Equal(t, int64(40), hammer(t, eng, "c", 8, 20))

	clk := newClock(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	eng = newEngine(t, engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "r", engine.Rate(1, time.Hour, 100)))
	require.Equal(t, int64(100), hammer(t, eng, "r", 8, 20))
	require.NoError(t, eng.SetLimits(ctx, "r", engine.Rate(1, time.Hour, 10)))
	require.NoError(t, eng.SetLimits(ctx, "r", engine.Rate(1, time.Hour, 100)))
	require.Equal(t, int64(0), hammer(t, eng, "r", 8, 20), "the clock is frozen: nothing refilled")

	require.NoError(t, eng.Register(ctx, "w", engine.PerWindow(10, time.Hour)))
	require.Equal(t, int64(10), hammer(t, eng, "w", 4, 10))
	require.NoError(t, eng.SetLimits(ctx, "w", engine.PerWindow(3, time.Hour)))
	require.NoError(t, eng.SetLimits(ctx, "w", engine.PerWindow(10, time.Hour)))
	require.Equal(t, int64(0), hammer(t, eng, "w", 4, 10))
}

func mustStatus(t *testing.T, eng *engine.Engine, key string) engine.Status {
	t.Helper()
	st, err := eng.Status(key)
	require.NoError(t, err)
	return st
}

// Finding 3: revoking the middle of a rotation chain left its oldest key
// working; chains had no stated length.
func TestFindingRevokeMiddleOfChain(t *testing.T) {
	eng := newEngine(t)
	require.NoError(t, eng.Register(ctx, "A", engine.Credits(100)))
	require.NoError(t, eng.Rotate(ctx, "A", "B", time.Hour))
	require.NoError(t, eng.Rotate(ctx, "B", "C", time.Hour))
	d, err := eng.Consume(ctx, "A", 1)
	require.NoError(t, err)
	require.True(t, d.Allowed, "A is in grace, through B, to C")
	require.NoError(t, eng.Revoke(ctx, "B"))
	d, err = eng.Consume(ctx, "A", 1)
	require.NoError(t, err)
	require.Equal(t, engine.Revoked, d.Reason, "A reaches C only through B")
	require.True(t, mustStatus(t, eng, "A").Revoked)
	d, err = eng.Consume(ctx, "C", 1)
	require.NoError(t, err)
	require.True(t, d.Allowed)
}

func TestFindingRotationChainLimit(t *testing.T) {
	eng := newEngine(t)
	keys := []string{"k0"}
	require.NoError(t, eng.Register(ctx, "k0", engine.Credits(1000)))
	for i := 1; i <= engine.MaxRotationChain; i++ {
		keys = append(keys, "k"+string(rune('a'+i)))
		require.NoError(t, eng.Rotate(ctx, keys[i-1], keys[i], time.Hour))
	}
	err := eng.Rotate(ctx, keys[len(keys)-1], "next", time.Hour)
	require.ErrorIs(t, err, engine.ErrRotationChain)
	for _, k := range keys {
		d, err := eng.Consume(ctx, k, 1)
		require.NoError(t, err)
		require.True(t, d.Allowed, "every key of a chain at the limit works in its grace: %s", k)
	}
	// A rotation without grace ends every chain: it is always allowed.
	require.NoError(t, eng.Rotate(ctx, keys[len(keys)-1], "next", 0))
	require.NoError(t, eng.Rotate(ctx, "next", "after", time.Hour))
}

// Finding 4: a refund of a grant made in an ended window went into the next.
func TestFindingRefundDoesNotCrossWindows(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 1, 10, 59, 59, 0, time.UTC))
	eng := newEngine(t, engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "w", engine.PerWindow(10, time.Hour)))
	old, err := eng.Consume(ctx, "w", 1)
	require.NoError(t, err)
	require.True(t, old.Allowed)
	clk.Add(2 * time.Second) // window 2
	require.Equal(t, int64(10), hammer(t, eng, "w", 4, 10))
	require.NoError(t, refundGrant(eng, "w", old, 1))
	require.Equal(t, int64(0), hammer(t, eng, "w", 4, 10), "window 2 serves 10, not 11")
}

// Finding 15: times out of the supported range are refused, durations stay
// in range.
func TestFindingClockOutOfRange(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	eng := newEngine(t, engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "w", engine.PerWindow(10, time.Hour)))
	require.NoError(t, eng.Register(ctx, "r", engine.Rate(10, time.Second, 10)))
	for _, when := range []time.Time{time.Date(1626, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC), engine.MaxTime.Add(time.Nanosecond), time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)} {
		clk.Set(when)
		for _, k := range []string{"w", "r"} {
			_, err := eng.Consume(ctx, k, 1)
			require.ErrorIs(t, err, engine.ErrClock, "%s at %v", k, when)
		}
		require.ErrorIs(t, eng.Register(ctx, "x", engine.Rate(1, time.Second, 1)), engine.ErrClock)
	}
	// Near the top of the range, a fresh Rate still works.
	clk.Set(engine.MaxTime.Add(-time.Hour))
	require.NoError(t, eng.Register(ctx, "late", engine.Rate(10, time.Second, 10)))
	d, err := eng.Consume(ctx, "late", 1)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	require.Equal(t, int64(9), d.Remaining)
	// A step back keeps every duration within the limit's period.
	clk.Set(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	require.Equal(t, int64(10), hammer(t, eng, "w", 2, 10))
	clk.Set(time.Date(1971, 1, 1, 0, 0, 0, 0, time.UTC))
	d, err = eng.Consume(ctx, "w", 1)
	require.NoError(t, err)
	require.False(t, d.Allowed)
	require.GreaterOrEqual(t, d.RetryAfter, time.Duration(0))
	require.LessOrEqual(t, d.RetryAfter, time.Hour)
	require.GreaterOrEqual(t, d.ResetAfter, time.Duration(0))
	require.LessOrEqual(t, d.ResetAfter, time.Hour)
}

var _ = errors.Is

// refundGrant gives back n units of the grant d of key.
func refundGrant(eng *engine.Engine, key string, d engine.Decision, n int64) error {
	return eng.Refund(ctx, key, d, n)
}

// Finding 2 across a crash: a window shrunk below what it used must not
// reserve below that count, or a restart would forget the units above the
// new quota.
func TestFindingShrunkLimitSurvivesCrash(t *testing.T) {
	for name, ls := range map[string][2]engine.Limit{
		"window":  {engine.PerWindow(10, time.Hour), engine.PerWindow(3, time.Hour)},
		"credits": {engine.Credits(10), engine.Credits(3)},
		"rate":    {engine.Rate(1, time.Hour, 10), engine.Rate(1, time.Hour, 3)},
	} {
		t.Run(name, func(t *testing.T) {
			clk := newClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
			st := newMemStore()
			lo := engine.LeaseOptions{MinChunk: 2, MaxChunk: 2}
			eng, err := engine.New(engine.WithStore(st), engine.WithClock(clk.Now), engine.WithLease(lo))
			require.NoError(t, err)
			defer eng.Close()
			require.NoError(t, eng.Register(ctx, "k", ls[0]))
			require.Equal(t, int64(8), hammer(t, eng, "k", 1, 8))
			require.NoError(t, eng.SetLimits(ctx, "k", ls[1]))
			re, err := engine.New(engine.WithStore(st.clone()), engine.WithClock(clk.Now), engine.WithLease(lo))
			require.NoError(t, err)
			defer re.Close()
			require.NoError(t, re.SetLimits(ctx, "k", ls[0]))
			require.LessOrEqual(t, hammer(t, re, "k", 1, 10), int64(2), "8 of 10 were spent before the crash")
		})
	}
}
