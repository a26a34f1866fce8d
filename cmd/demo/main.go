// Command demo races goroutines for a quota, first against the naive
// check-then-decrement design that the Express article warns about, then
// against allot's engine, and prints what each granted.
//
//	make demo
package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine"
)

const (
	callers = 1000
	quota   = 100
)

// naiveQuota is the design of the Express article's first example, in Go: a
// map of remaining units under a mutex, read, then (after some I/O, here a
// short sleep) written back. Every step is locked, and it still overspends:
// the check and the decrement are two steps.
type naiveQuota struct {
	mu        sync.Mutex
	remaining map[string]int64
}

func (q *naiveQuota) consume(key string) bool {
	q.mu.Lock()
	left := q.remaining[key]
	q.mu.Unlock()
	if left <= 0 {
		return false
	}
	time.Sleep(time.Millisecond) // await db.logUsage(key)
	q.mu.Lock()
	q.remaining[key] = left - 1
	q.mu.Unlock()
	return true
}

func race(consume func() bool) int64 {
	var granted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if consume() {
				granted.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	return granted.Load()
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	fmt.Printf("%d goroutines race for a key with a quota of %d units.\n\n", callers, quota)

	naive := &naiveQuota{remaining: map[string]int64{"key-a": quota}}
	g := race(func() bool { return naive.consume("key-a") })
	fmt.Printf("naive check-then-decrement map: granted %4d of %d  (over-granted by %d)\n", g, quota, g-quota)

	eng, err := engine.New()
	if err != nil {
		return err
	}
	defer eng.Close()
	if err := eng.Register(ctx, "key-a", engine.Credits(quota)); err != nil {
		return err
	}
	g = race(func() bool {
		d, err := eng.Consume(ctx, "key-a", 1)
		return err == nil && d.Allowed
	})
	fmt.Printf("allot engine:                   granted %4d of %d\n", g, quota)
	if g != quota {
		return fmt.Errorf("allot granted %d, want %d", g, quota)
	}
	return nil
}
