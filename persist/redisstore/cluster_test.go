package redisstore_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/internal/redistest"
	"github.com/allot-go/allot/persist/redisstore"
)

// TestCluster: a Redis Cluster of three masters, two engines with a
// cluster client each. Initialize and New work through the cluster client
// (the marker allot:marker is in one slot; every other node's scripts are
// loaded too). Keys of every kind, single and multi-limit, spread over the
// three masters, are shared exactly; each key's hash and holders share one
// slot; Revoke in one engine stops the other.
func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, redistest.Always)
	ca, cb := cl.Client(), cl.Client()
	if _, err := redisstore.New(ctx, ca); !errors.Is(err, redisstore.ErrNotInitialized) {
		t.Fatalf("New on an empty cluster: %v", err)
	}
	if err := redisstore.Initialize(ctx, ca); err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).UnixNano())
	opts := []engine.Option{
		engine.WithClock(func() time.Time { return time.Unix(0, now.Load()) }),
		engine.WithLease(engine.LeaseOptions{MinChunk: 8, MaxChunk: 64}),
	}
	lease := []redisstore.Option{redisstore.WithLease(200 * time.Millisecond)}
	a := newEngineWith(t, ca, lease, opts...)
	b := newEngineWith(t, cb, lease, opts...)

	type keyCase struct {
		key      string
		limits   []engine.Limit
		want, lo int64
	}
	var cases []keyCase
	for i := range 4 {
		n := int64(300 + 10*i)
		cases = append(cases,
			keyCase{fmt.Sprintf("credits-%d", i), []engine.Limit{engine.Credits(n)}, n, n},
			keyCase{fmt.Sprintf("window-%d", i), []engine.Limit{engine.PerWindow(n, time.Minute)}, n, n},
			// Rate: a span one engine reserved past another's is lost
			// when it goes back for more (at most a chunk per engine).
			keyCase{fmt.Sprintf("rate-%d", i), []engine.Limit{engine.Rate(10, time.Second, n)}, n, n - 2*64},
			// Two limits: one engine may hold credits while the other holds
			// the window's units, a chunk per engine and limit.
			keyCase{fmt.Sprintf("two-%d", i), []engine.Limit{engine.Credits(n + 100), engine.PerWindow(n, time.Minute)}, n, n - 2*64},
		)
	}
	nodes := map[string]int{}
	for _, tc := range cases {
		if err := a.Register(ctx, tc.key, tc.limits...); err != nil {
			t.Fatal(err)
		}
		h := redisHash(tc.key)
		s1, err1 := ca.ClusterKeySlot(ctx, h).Result()
		s2, err2 := ca.ClusterKeySlot(ctx, h+":h").Result()
		if err1 != nil || err2 != nil || s1 != s2 {
			t.Fatalf("%s: slots %d (%v) of its hash and %d (%v) of its holders", tc.key, s1, err1, s2, err2)
		}
		m, err := ca.MasterForKey(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		nodes[m.Options().Addr]++
		if n, err := m.Exists(ctx, h).Result(); err != nil || n != 1 {
			t.Fatalf("%s: its hash is not on the master of its slot %d: %v", tc.key, s1, err)
		}
	}
	if len(nodes) != 3 {
		t.Fatalf("the keys are on %d masters (%v), want all 3", len(nodes), nodes)
	}
	for _, tc := range cases {
		got := consumeAll(t, tc.key, 4, a, b)
		if n := sum(got); n > tc.want || n < tc.lo {
			t.Errorf("%s: granted %v = %d, want %d to %d", tc.key, got, n, tc.lo, tc.want)
		}
	}
	t.Logf("%d keys over the masters %v: shared exactly", len(cases), nodes)

	// Revoke in a while b holds a reservation of the key.
	if err := a.Register(ctx, "revoked", engine.Credits(1<<40)); err != nil {
		t.Fatal(err)
	}
	if d, err := b.Consume(ctx, "revoked", 1); err != nil || !d.Allowed {
		t.Fatalf("%+v %v", d, err)
	}
	start := time.Now()
	if err := a.Revoke(ctx, "revoked"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if d, err := b.Consume(ctx, "revoked", 1); err != nil || d.Allowed || d.Reason != engine.Revoked {
		t.Fatalf("after Revoke in the other engine: %+v %v", d, err)
	}
	t.Logf("Revoke across engines on the cluster took %v (lease 200ms)", took.Round(time.Millisecond))

	// The marker's node is the one that says whether Redis lost its data.
	if err := a.Register(ctx, "marked", engine.Credits(1<<40)); err != nil {
		t.Fatal(err)
	}
	if err := ca.Del(ctx, "allot:marker").Err(); err != nil {
		t.Fatal(err)
	}
	var err error
	for range 1000 { // more than b can hold: it reserves again
		if _, err = b.Consume(ctx, "marked", 1); err != nil {
			break
		}
	}
	if !errors.Is(err, redisstore.ErrLost) {
		t.Fatalf("after the marker went: %v, want ErrLost", err)
	}
}
