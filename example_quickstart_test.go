package allot_test

import (
	"context"
	"fmt"
	"time"

	"github.com/allot-go/allot/engine"
)

// The quick start of the README, which keeps a copy of this function's body
// (TestReadmeQuickStart checks that the two stay the same).
func Example_quickStart() {
	ctx := context.Background()
	eng, err := engine.New() // in memory; engine.WithStore(st) keeps the keys on disk (package persist)
	if err != nil {
		panic(err)
	}
	defer eng.Close()

	// key-a may spend 3 units in all. key-b may spend 1000 an hour and 10 a
	// second, in bursts of up to 20: a Consume of key-b needs both to allow it.
	if err := eng.Register(ctx, "key-a", engine.Credits(3)); err != nil {
		panic(err)
	}
	if err := eng.Register(ctx, "key-b", engine.PerWindow(1000, time.Hour), engine.Rate(10, time.Second, 20)); err != nil {
		panic(err)
	}

	for range 4 {
		d, err := eng.Consume(ctx, "key-a", 1)
		if err != nil {
			panic(err) // bad input, a closed engine, a failed store: a denial is not an error
		}
		if d.Allowed {
			fmt.Println("key-a granted, remaining:", d.Remaining)
		} else {
			fmt.Println("key-a denied:", d.Reason)
		}
	}

	d, err := eng.Consume(ctx, "key-b", 5)
	if err != nil {
		panic(err)
	}
	fmt.Println("key-b granted 5 units:", d.Allowed)

	// Once Revoke returns, no Consume of the key succeeds.
	if err := eng.Revoke(ctx, "key-b"); err != nil {
		panic(err)
	}
	d, err = eng.Consume(ctx, "key-b", 1)
	if err != nil {
		panic(err)
	}
	fmt.Println("key-b after Revoke:", d.Allowed, d.Reason)

	st, err := eng.Status("key-b") // reads without consuming
	if err != nil {
		panic(err)
	}
	fmt.Println("key-b revoked:", st.Revoked)
	// Output:
	// key-a granted, remaining: 2
	// key-a granted, remaining: 1
	// key-a granted, remaining: 0
	// key-a denied: exhausted
	// key-b granted 5 units: true
	// key-b after Revoke: false revoked
	// key-b revoked: true
}
