package redisstore_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist/redisstore"
	"github.com/redis/go-redis/v9"
)

// Engines, as processes would, share one quota on Redis: what one holds,
// the others cannot grant until it gives it back, and a revocation in one
// holds in every other as soon as Revoke returns.
func Example() {
	addr, stop := exampleRedis() // a throwaway redis-server on 127.0.0.1
	defer stop()
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	if err := redisstore.Initialize(ctx, client); err != nil { // once, for a new deployment
		panic(err)
	}

	open := func() *engine.Engine {
		st, err := redisstore.New(ctx, client)
		if err != nil {
			panic(err)
		}
		eng, err := engine.New(engine.WithStore(st))
		if err != nil {
			panic(err)
		}
		return eng
	}
	a, b := open(), open()
	defer b.Close()

	_ = a.Register(ctx, "sk_live_example", engine.Credits(10))
	da, _ := a.Consume(ctx, "sk_live_example", 6) // a reserves all 10, grants 6
	db, _ := b.Consume(ctx, "sk_live_example", 4) // a holds the other 4
	fmt.Println("a took 6:", da.Allowed, "| b took 4 while a holds them:", db.Allowed)
	_ = a.Close() // gives back the 4 it did not grant

	c := open()
	defer c.Close()
	dc, _ := c.Consume(ctx, "sk_live_example", 4)
	dc2, _ := c.Consume(ctx, "sk_live_example", 1)
	fmt.Println("after a's Close, c took 4:", dc.Allowed, "| c took 1 more:", dc2.Allowed)

	_ = c.TopUp(ctx, "sk_live_example", 5)
	_ = c.Revoke(ctx, "sk_live_example")
	d, _ := b.Consume(ctx, "sk_live_example", 1)
	fmt.Println("after c's TopUp and Revoke, b:", d.Reason)
	// Output:
	// a took 6: true | b took 4 while a holds them: false
	// after a's Close, c took 4: true | c took 1 more: false
	// after c's TopUp and Revoke, b: revoked
}

// exampleRedis starts redis-server on a free port, without persistence,
// and returns its address and a function that stops it.
func exampleRedis() (string, func()) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "allot-example-redis")
	if err != nil {
		panic(err)
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		panic(fmt.Sprintf("redis-server (the Debian package redis-server): %v", err))
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	for start := time.Now(); c.Ping(context.Background()).Err() != nil; {
		if time.Since(start) > 30*time.Second {
			panic("redis-server did not answer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return addr, func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); os.RemoveAll(dir) }
}
