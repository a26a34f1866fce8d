package engine_test

import (
	"context"
	"fmt"
	"time"

	"github.com/allot-go/allot/engine"
)

// Refund gives back what a request was granted and did not use: here the
// handler failed after Consume granted 3 units.
func ExampleEngine_Refund() {
	ctx := context.Background()
	eng, _ := engine.New()
	defer eng.Close()
	_ = eng.Register(ctx, "key", engine.Credits(10))

	d, _ := eng.Consume(ctx, "key", 3)
	fmt.Println("granted", d.Granted(), "left", d.Remaining)
	_ = eng.Refund(ctx, "key", d, d.Granted()) // the work failed: give them back
	s, _ := eng.Status("key")
	fmt.Println("after refund", s.Limits[0].Remaining)
	// Output:
	// granted 3 left 7
	// after refund 10
}

// Delete forgets a key; its name can be registered again, from nothing.
func ExampleEngine_Delete() {
	ctx := context.Background()
	eng, _ := engine.New()
	defer eng.Close()
	_ = eng.Register(ctx, "key", engine.Credits(10))
	_ = eng.Revoke(ctx, "key")

	_ = eng.Delete(ctx, "key")
	d, _ := eng.Consume(ctx, "key", 1)
	fmt.Println(d.Reason)
	_ = eng.Register(ctx, "key", engine.Credits(5))
	d, _ = eng.Consume(ctx, "key", 1)
	fmt.Println(d.Reason, d.Remaining)
	// Output:
	// unknown_key
	// ok 4
}

// Keys lists every key by ID, never by its raw key; an operator acts on one
// by ID.
func ExampleEngine_Keys() {
	ctx := context.Background()
	eng, _ := engine.New()
	defer eng.Close()
	_ = eng.Register(ctx, "key-a", engine.Credits(10))
	_ = eng.Register(ctx, "key-b", engine.PerWindow(100, time.Hour))

	n := 0
	for k := range eng.Keys() {
		n++
		if k.ID == engine.IDOf("key-a") {
			_ = eng.RevokeID(ctx, k.ID) // e.g. the ID showed up in a leak report
		}
	}
	s, _ := eng.Status("key-a")
	fmt.Println(n, "keys; key-a revoked:", s.Revoked)
	// Output:
	// 2 keys; key-a revoked: true
}

// Stats is a snapshot for metrics; decisions are counted with
// WithCounting.
func ExampleEngine_Stats() {
	ctx := context.Background()
	eng, _ := engine.New(engine.WithCounting())
	defer eng.Close()
	_ = eng.Register(ctx, "key", engine.Credits(2))
	for range 3 {
		_, _ = eng.Consume(ctx, "key", 1)
	}
	s := eng.Stats()
	fmt.Println("granted", s.Granted, "exhausted", s.Exhausted, "keys", s.Keys)
	// Output:
	// granted 2 exhausted 1 keys 1
}
