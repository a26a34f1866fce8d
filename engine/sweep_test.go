package engine_test

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
)

// The overflow sweep: every constructor and call with extreme values, on an
// engine in memory and on one in lease mode with the largest chunks, at the
// edges of the supported clock range. Nothing may panic, every error must
// match a sentinel, and no Consume may grant more than the quota.
func TestOverflowSweep(t *testing.T) {
	vals := []int64{0, 1, -1, 2, math.MaxInt64, math.MinInt64, engine.MaxCredits - 1, engine.MaxCredits, engine.MaxCredits + 1,
		engine.MaxWindowQuota, engine.MaxWindowQuota + 1}
	periods := []time.Duration{0, -1, 1, time.Second - 1, time.Second, time.Hour, 290 * 365 * 24 * time.Hour,
		engine.MaxRateSpan, engine.MaxRateSpan + 1, math.MaxInt64}
	var limits []engine.Limit
	for _, v := range vals {
		limits = append(limits, engine.Credits(v), engine.PerMonth(v), engine.PerMonthIn(v, nil))
		for _, p := range periods {
			limits = append(limits, engine.PerWindow(v, p))
			for _, b := range []int64{0, 1, -1, math.MaxInt64, engine.MaxCredits, engine.MaxCredits + 1} {
				limits = append(limits, engine.Rate(v, p, b))
			}
		}
	}
	clocks := []time.Time{engine.MinTime, engine.MinTime.Add(1), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		engine.MaxTime.Add(-time.Nanosecond), engine.MaxTime, time.Unix(0, math.MaxInt64), time.Unix(0, math.MinInt64)}
	sentinels := []error{engine.ErrClosed, engine.ErrInvalidKey, engine.ErrInvalidAmount, engine.ErrInvalidLimit,
		engine.ErrInvalidOption, engine.ErrKeyExists, engine.ErrUnknownKey, engine.ErrKeyRevoked, engine.ErrRotated,
		engine.ErrNoCredits, engine.ErrRotationChain, engine.ErrClock, engine.ErrStore}
	check := func(what string, err error) {
		t.Helper()
		if err == nil {
			return
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("%s: %v matches no sentinel", what, err)
	}
	amounts := []int64{0, -1, 1, 2, math.MaxInt64, engine.MaxCredits, engine.MaxCredits + 1}
	graces := []time.Duration{-1, 0, 1, time.Hour, math.MaxInt64}
	calls, refusals := 0, 0
	for mode, opts := range map[string][]engine.Option{
		"memory": nil,
		"lease":  {engine.WithStore(newMemStore()), engine.WithLease(engine.LeaseOptions{MinChunk: 1, MaxChunk: 1 << 40})},
	} {
		for ci, at := range clocks {
			clk := newClock(at)
			eng, err := engine.New(append(opts, engine.WithClock(clk.Now))...)
			if err != nil {
				check("New", err)
				continue
			}
			for li, l := range limits {
				key := fmt.Sprint(mode, ci, "-", li)
				do := func(what string, err error) {
					t.Helper()
					calls++
					if err != nil {
						refusals++
					}
					check(fmt.Sprintf("%s %s %v at %v", what, mode, l, at), err)
				}
				err := eng.Register(ctx, key, l)
				do("Register", err)
				if err != nil {
					continue
				}
				var granted int64
				var last engine.Decision
				for _, n := range amounts {
					d, err := eng.Consume(ctx, key, n)
					do("Consume", err)
					if d.Allowed {
						granted += n
						last = d
					}
					if d.Remaining < 0 || d.RetryAfter < 0 || d.ResetAfter < 0 {
						t.Fatalf("%v: negative figures %+v", l, d)
					}
				}
				if granted > l.Quota() {
					t.Fatalf("%v: granted %d", l, granted)
				}
				for _, n := range amounts {
					do("Refund", eng.Refund(ctx, key, last, n))
					do("TopUp", eng.TopUp(ctx, key, n))
				}
				_, err = eng.Status(key)
				do("Status", err)
				for _, m := range limits[:len(limits):len(limits)][li%7 : li%7+3] {
					do("SetLimits", eng.SetLimits(ctx, key, m))
				}
				do("SetLimits back", eng.SetLimits(ctx, key, l))
				for gi, g := range graces {
					do("Rotate", eng.Rotate(ctx, key, fmt.Sprint(key, "r", gi), g))
				}
				clk.Add(time.Hour)
				_, err = eng.Consume(ctx, key, 1)
				do("Consume later", err)
				clk.Set(at)
				do("Revoke", eng.Revoke(ctx, key))
			}
			check("Close", eng.Close())
		}
	}
	t.Logf("%d calls over %d limits and %d clocks: %d refused, each with a sentinel, 0 panics", calls, len(limits), len(clocks), refusals)
}
