package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine"
)

// The quick start: register a key with a quota, consume from it, and revoke
// it.
func Example() {
	ctx := context.Background()
	eng, err := engine.New()
	if err != nil {
		panic(err)
	}
	defer eng.Close()

	if err := eng.Register(ctx, "key-a", engine.Credits(3)); err != nil {
		panic(err)
	}
	var last engine.Decision
	for range 4 {
		d, _ := eng.Consume(ctx, "key-a", 1)
		fmt.Println(d.Allowed, d.Reason, d.Remaining)
		if d.Allowed {
			last = d
		}
	}
	_ = eng.Refund(ctx, "key-a", last, 1) // the request granted last did not use its unit
	d, _ := eng.Consume(ctx, "key-a", 1)
	fmt.Println("after refund:", d.Allowed, d.Remaining)

	_ = eng.Revoke(ctx, "key-a")
	d, _ = eng.Consume(ctx, "key-a", 1)
	fmt.Println("after revoke:", d.Allowed, d.Reason)
	// Output:
	// true ok 2
	// true ok 1
	// true ok 0
	// false exhausted 0
	// after refund: true 0
	// after revoke: false revoked
}

// A thousand goroutines race for 100 units: exactly 100 win.
func ExampleEngine_Consume_concurrent() {
	ctx := context.Background()
	eng, _ := engine.New()
	defer eng.Close()
	_ = eng.Register(ctx, "key-a", engine.Credits(100))

	var granted atomic.Int64
	var wg sync.WaitGroup
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d, _ := eng.Consume(ctx, "key-a", 1); d.Allowed {
				granted.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Println("granted:", granted.Load())
	// Output: granted: 100
}

// A window limit with a fixed clock: the quota comes back when the next
// window starts.
func ExamplePerWindow() {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 10, 59, 0, 0, time.UTC)
	eng, _ := engine.New(engine.WithClock(func() time.Time { return now }))
	defer eng.Close()
	_ = eng.Register(ctx, "key-b", engine.PerWindow(2, time.Hour))

	for range 3 {
		d, _ := eng.Consume(ctx, "key-b", 1)
		fmt.Println(d.Allowed, d.Remaining, d.RetryAfter, d.ResetAfter)
	}
	now = now.Add(time.Minute) // 11:00, a new window
	d, _ := eng.Consume(ctx, "key-b", 1)
	fmt.Println(d.Allowed, d.Remaining, d.ResetAfter)
	// Output:
	// true 1 0s 1m0s
	// true 0 0s 1m0s
	// false 0 1m0s 1m0s
	// true 1 1h0m0s
}

// A GCRA rate limit: a burst, then one unit per emission interval.
func ExampleRate() {
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	eng, _ := engine.New(engine.WithClock(func() time.Time { return now }))
	defer eng.Close()
	_ = eng.Register(ctx, "key-c", engine.Rate(10, time.Second, 3))

	for range 4 {
		d, _ := eng.Consume(ctx, "key-c", 1)
		fmt.Println(d.Allowed, d.Remaining, d.RetryAfter)
	}
	now = now.Add(100 * time.Millisecond)
	d, _ := eng.Consume(ctx, "key-c", 1)
	fmt.Println(d.Allowed, d.Remaining)
	// Output:
	// true 2 0s
	// true 1 0s
	// true 0 0s
	// false 0 100ms
	// true 0
}

// Several limits: a Consume is granted only if all allow it.
func ExampleEngine_Register_multipleLimits() {
	ctx := context.Background()
	eng, _ := engine.New(engine.WithClock(func() time.Time { return time.Unix(0, 0) }))
	defer eng.Close()
	_ = eng.Register(ctx, "key-d", engine.Credits(1_000_000), engine.Rate(50, time.Second, 2))

	for range 3 {
		d, _ := eng.Consume(ctx, "key-d", 1)
		fmt.Println(d.Allowed, d.Limit, d.Remaining)
	}
	st, _ := eng.Status("key-d")
	for _, l := range st.Limits {
		fmt.Println(l.Limit.Name(), l.Remaining)
	}
	// Output:
	// true 2 1
	// true 2 0
	// false 2 0
	// credits 999998
	// rate 0
}

// Rotate: the new key takes over the counters, the old one works for a grace
// period.
func ExampleEngine_Rotate() {
	ctx := context.Background()
	now := time.Unix(0, 0)
	eng, _ := engine.New(engine.WithClock(func() time.Time { return now }))
	defer eng.Close()
	_ = eng.Register(ctx, "old", engine.Credits(10))
	_, _ = eng.Consume(ctx, "old", 4)

	_ = eng.Rotate(ctx, "old", "new", time.Minute)
	d, _ := eng.Consume(ctx, "new", 1)
	fmt.Println("new:", d.Allowed, d.Remaining)
	d, _ = eng.Consume(ctx, "old", 1)
	fmt.Println("old in grace:", d.Allowed, d.Remaining)
	now = now.Add(time.Minute)
	d, _ = eng.Consume(ctx, "old", 1)
	fmt.Println("old after grace:", d.Allowed, d.Reason)
	// Output:
	// new: true 5
	// old in grace: true 4
	// old after grace: false revoked
}

// Bad input is an error matching a sentinel, never a panic.
func ExampleErrInvalidAmount() {
	eng, _ := engine.New()
	defer eng.Close()
	_, err := eng.Consume(context.Background(), "key-a", 0)
	fmt.Println(errors.Is(err, engine.ErrInvalidAmount), err)
	// Output: true allot: invalid amount: 0, must be positive
}
