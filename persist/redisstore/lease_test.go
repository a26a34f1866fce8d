package redisstore_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/internal/redistest"
	"github.com/allot-go/allot/persist/redisstore"
)

// TestChangesWithoutMessages runs on a Redis where PUBLISH is renamed
// away, so that every message between stores is lost. Revoke, TopUp and
// SetLimits in A must still return while B, which holds a reservation of
// the key, runs on, and B must then act on them: it lets go of the key
// when its next renewal (a quarter of its lease) finds the key in its
// inbox, not when its lease ends, so at their return B's lease is still
// live by Redis's clock.
func TestChangesWithoutMessages(t *testing.T) {
	srv := redistest.Start(t, redistest.Always, "--rename-command", "PUBLISH", "allot-test-no-publish")
	c := srv.Client()
	if err := redisstore.Initialize(ctx, c); err != nil {
		t.Fatal(err)
	}
	const lease = 8 * time.Second
	a := newEngine(t, c)
	b := newEngineWith(t, c, []redisstore.Option{redisstore.WithLease(lease)})
	for _, k := range []string{"revoked", "topped"} {
		if err := a.Register(ctx, k, engine.Credits(100)); err != nil {
			t.Fatal(err)
		}
		if d, err := b.Consume(ctx, k, 1); err != nil || !d.Allowed {
			t.Fatalf("B's first Consume of %s: %v, %v", k, d, err)
		}
	}
	leaseLive := func(what string) {
		t.Helper()
		now, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys, err := c.Keys(ctx, "{allot:p:*}").Result()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, k := range keys {
			v, err := c.HGet(ctx, k, "d").Result()
			if err != nil {
				continue // an inbox
			}
			d, _ := strconv.ParseInt(v, 10, 64)
			if d <= now.UnixMilli() {
				t.Errorf("after %s: the lease %s had ended by Redis's clock: the holder was not told, it was waited out", what, k)
			}
			n++
		}
		if n != 2 {
			t.Errorf("after %s: %d leases in Redis, want 2", what, n)
		}
	}

	start := time.Now()
	if err := a.Revoke(ctx, "revoked"); err != nil {
		t.Fatal(err)
	}
	t.Logf("Revoke without messages took %v (B's lease %v, renewed every %v)", time.Since(start).Round(time.Millisecond), lease, lease/4)
	leaseLive("Revoke")
	if d, err := b.Consume(ctx, "revoked", 1); err != nil || d.Allowed || d.Reason != engine.Revoked {
		t.Errorf("B's Consume after Revoke returned: %v, %v; want a denial, Revoked", d, err)
	}

	// B has used up "spent" and denies it; a TopUp in A reaches B as a
	// holder (a reservation that got nothing records it too): once TopUp
	// returns, B grants the new unit, long before its denials would have
	// asked Redis again on their own (16 leases).
	if err := a.Register(ctx, "spent", engine.Credits(1)); err != nil {
		t.Fatal(err)
	}
	if d, err := b.Consume(ctx, "spent", 1); err != nil || !d.Allowed {
		t.Fatalf("B's first Consume of spent: %v, %v", d, err)
	}
	if d, err := b.Consume(ctx, "spent", 1); err != nil || d.Allowed {
		t.Fatalf("B's second Consume of spent: %v, %v; want a denial", d, err)
	}
	start = time.Now()
	if err := a.TopUp(ctx, "spent", 1); err != nil {
		t.Fatal(err)
	}
	t.Logf("TopUp without messages took %v", time.Since(start).Round(time.Millisecond))
	leaseLive("TopUp")
	if d, err := b.Consume(ctx, "spent", 1); err != nil || !d.Allowed {
		t.Errorf("B's Consume after TopUp returned: %v, %v; want the unit topped up", d, err)
	}

	start = time.Now()
	if err := a.SetLimits(ctx, "topped", engine.Credits(1)); err != nil {
		t.Fatal(err)
	}
	t.Logf("SetLimits without messages took %v", time.Since(start).Round(time.Millisecond))
	leaseLive("SetLimits")
	// The pool's count is 1 or more (B's first unit, and what it held is
	// lost): the new quota of 1 grants nothing more, in either engine.
	for name, e := range map[string]*engine.Engine{"A": a, "B": b} {
		if d, err := e.Consume(ctx, "topped", 1); err != nil || d.Allowed {
			t.Errorf("%s's Consume after SetLimits to Credits(1) returned: %v, %v; want a denial", name, d, err)
		}
	}
}
