package persist_test

import (
	"context"
	"fmt"
	"os"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
)

// A store on local disk: what was spent before a restart stays spent, and a
// revocation holds after it.
func Example() {
	dir, err := os.MkdirTemp("", "allot-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	open := func() *engine.Engine {
		st, err := persist.Open(dir) // options: persist.WithLogger, persist.WithoutVerify, …
		if err != nil {
			panic(err)
		}
		eng, err := engine.New(engine.WithStore(st)) // lease mode; engine.WithLease for exact mode
		if err != nil {
			panic(err)
		}
		return eng
	}

	eng := open()
	_ = eng.Register(ctx, "sk_live_a", engine.Credits(10))
	_ = eng.Register(ctx, "sk_live_b", engine.Credits(10))
	d, _ := eng.Consume(ctx, "sk_live_a", 7)
	_ = eng.Revoke(ctx, "sk_live_b")
	fmt.Println("before the restart: a granted", d.Allowed, "remaining", d.Remaining)
	_ = eng.Close() // gives back the unused part of every reservation

	eng = open()
	defer eng.Close()
	d, _ = eng.Consume(ctx, "sk_live_a", 4)
	fmt.Println("after: a asks 4:", d.Allowed, "remaining", d.Remaining)
	d, _ = eng.Consume(ctx, "sk_live_b", 1)
	fmt.Println("after: b is", d.Reason)
	// Output:
	// before the restart: a granted true remaining 3
	// after: a asks 4: false remaining 3
	// after: b is revoked
}
