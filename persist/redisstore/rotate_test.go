package redisstore_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/internal/redistest"
	"github.com/allot-go/allot/persist/redisstore"
	"github.com/redis/go-redis/v9"
)

// use is one key consumed in one engine.
type use struct {
	eng *engine.Engine
	key string
}

// consumeUses is consumeAll over several (engine, key) pairs: g goroutines
// each, one unit at a time, until each is denied; it returns the units
// each pair granted.
func consumeUses(t *testing.T, g int, us ...use) []int64 {
	t.Helper()
	got := make([]int64, len(us))
	var wg sync.WaitGroup
	for i, u := range us {
		for range g {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					d, err := u.eng.Consume(ctx, u.key, 1)
					if err != nil {
						t.Error(err)
						return
					}
					if !d.Allowed {
						return
					}
					atomic.AddInt64(&got[i], 1)
				}
			}()
		}
	}
	wg.Wait()
	return got
}

// fakeClock is a clock both engines of a test share.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) option() engine.Option {
	return engine.WithClock(func() time.Time { return time.Unix(0, c.ns.Load()) })
}

func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// want checks that Consume of key in eng is decided with reason r.
func want(t *testing.T, eng *engine.Engine, key string, r engine.Reason) {
	t.Helper()
	d, err := eng.Consume(ctx, key, 1)
	if err != nil {
		t.Fatalf("Consume(%s): %v", key, err)
	}
	if d.Reason != r {
		t.Fatalf("Consume(%s): %+v, want reason %v", key, d, r)
	}
}

const chunk = 64

// twoEngines returns two engines ("processes") on one Redis, on one
// injected clock, with chunks of 8 to 64 units.
func twoEngines(t *testing.T, c redis.UniversalClient, clk *fakeClock) (*engine.Engine, *engine.Engine) {
	t.Helper()
	opts := []engine.Option{clk.option(), engine.WithLease(engine.LeaseOptions{MinChunk: 8, MaxChunk: chunk})}
	return newEngine(t, c, opts...), newEngine(t, c, opts...)
}

// TestRotateAcrossEngines: a rotation in A; in B the new key and the old
// one (in its grace) draw on one quota, under many goroutines in both
// engines, exactly (what each engine held of the key when it rotated is
// lost: at most a chunk per engine).
func TestRotateAcrossEngines(t *testing.T) {
	_, c := newRedis(t)
	clk := newClock()
	a, b := twoEngines(t, c, clk)
	const q = 5000
	if err := a.Register(ctx, "old", engine.Credits(q)); err != nil {
		t.Fatal(err)
	}
	// Both engines hold a reservation of the key when it rotates.
	want(t, a, "old", engine.OK)
	want(t, b, "old", engine.OK)
	if err := a.Rotate(ctx, "old", "new", time.Hour); err != nil {
		t.Fatal(err)
	}
	got := consumeUses(t, 8, use{a, "old"}, use{a, "new"}, use{b, "old"}, use{b, "new"})
	n := sum(got) + 2
	if n > q || n < q-2*chunk {
		t.Fatalf("granted %v (+2 before) = %d, want %d less at most a chunk per engine (%d)", got, n, q, 2*chunk)
	}
	for i, g := range got {
		if g == 0 {
			t.Errorf("use %d granted nothing: %v", i, got)
		}
	}
	t.Logf("granted %v, %d of %d", got, n, q)
	// A fresh engine sees the same chain.
	d := newEngine(t, c, clk.option())
	want(t, d, "new", engine.Exhausted)
	want(t, d, "old", engine.Exhausted)
	if err := a.TopUp(ctx, "new", 100); err != nil {
		t.Fatal(err)
	}
	got = consumeUses(t, 4, use{a, "old"}, use{b, "new"}, use{d, "old"}, use{d, "new"})
	if n := sum(got); n != 100 {
		t.Fatalf("after TopUp(100) of the head: granted %v = %d, want 100", got, n)
	}
}

// TestRotateExact: no reservation held when the key rotates: the two
// names in two engines grant exactly the quota.
func TestRotateExact(t *testing.T) {
	_, c := newRedis(t)
	clk := newClock()
	a, b := twoEngines(t, c, clk)
	const q = 3000
	if err := a.Register(ctx, "old", engine.Credits(q)); err != nil {
		t.Fatal(err)
	}
	if err := b.Rotate(ctx, "old", "new", time.Hour); err != nil {
		t.Fatal(err)
	}
	got := consumeUses(t, 8, use{a, "old"}, use{a, "new"}, use{b, "old"}, use{b, "new"})
	if n := sum(got); n != q {
		t.Fatalf("granted %v = %d, want exactly %d", got, n, q)
	}
}

// TestRotateGrace: the old key works in every engine until its grace has
// passed on the (injected) clock, then is denied as Revoked; grace 0
// revokes it at once, also in the engine that held a reservation of it.
func TestRotateGrace(t *testing.T) {
	_, c := newRedis(t)
	clk := newClock()
	a, b := twoEngines(t, c, clk)
	for _, k := range []string{"g", "z"} {
		if err := a.Register(ctx, k, engine.Credits(1000)); err != nil {
			t.Fatal(err)
		}
		want(t, b, k, engine.OK) // b holds a reservation of it
	}
	if err := a.Rotate(ctx, "g", "g2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := a.Rotate(ctx, "z", "z2", 0); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*engine.Engine{a, b} {
		want(t, e, "g", engine.OK)
		want(t, e, "g2", engine.OK)
		want(t, e, "z", engine.Revoked)
		want(t, e, "z2", engine.OK)
	}
	clk.advance(time.Minute - 1)
	want(t, b, "g", engine.OK)
	clk.advance(1)
	for _, e := range []*engine.Engine{a, b} {
		want(t, e, "g", engine.Revoked)
		want(t, e, "g2", engine.OK)
	}
	// A fresh engine agrees.
	d := newEngine(t, c, clk.option())
	want(t, d, "g", engine.Revoked)
	want(t, d, "z", engine.Revoked)
	want(t, d, "g2", engine.OK)
}

// revokeWhileConsuming runs 8 goroutines of b consuming each key of keys
// while a revokes revoked; a Consume started after Revoke returned must
// not be granted for a key in stopped. It returns the grants of the keys
// not in stopped after Revoke returned.
func revokeWhileConsuming(t *testing.T, a, b *engine.Engine, revoked string, keys []string, stopped map[string]bool) map[string]int64 {
	t.Helper()
	var done atomic.Bool
	var mu sync.Mutex
	after := map[string]int64{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	started := make(chan struct{}, 8*len(keys))
	for _, k := range keys {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				first := true
				for {
					select {
					case <-stop:
						return
					default:
					}
					late := done.Load()
					d, err := b.Consume(ctx, k, 1)
					if err != nil {
						t.Error(err)
						return
					}
					if first && d.Allowed {
						first = false
						started <- struct{}{}
					}
					if late && d.Allowed {
						mu.Lock()
						after[k]++
						mu.Unlock()
						if !stopped[k] {
							return
						}
					}
					if late && !d.Allowed {
						if stopped[k] && d.Reason != engine.Revoked {
							t.Errorf("%s after Revoke(%s): %+v, want Revoked", k, revoked, d)
						}
						return
					}
				}
			}()
		}
	}
	for range 8 * len(keys) {
		<-started // every goroutine was granted: b holds reservations
	}
	if err := a.Revoke(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	done.Store(true)
	wg.Wait()
	close(stop)
	for k := range stopped {
		if after[k] != 0 {
			t.Errorf("%s: %d grants in another engine of Consumes started after Revoke(%s) returned", k, after[k], revoked)
		}
	}
	return after
}

// TestRotateRevokeHead: Revoke of the head in A stops both names in B once
// it returns.
func TestRotateRevokeHead(t *testing.T) {
	_, c := newRedis(t)
	clk := newClock()
	a, b := twoEngines(t, c, clk)
	if err := a.Register(ctx, "k1", engine.Credits(1<<40)); err != nil {
		t.Fatal(err)
	}
	if err := a.Rotate(ctx, "k1", "k2", time.Hour); err != nil {
		t.Fatal(err)
	}
	revokeWhileConsuming(t, a, b, "k2", []string{"k1", "k2"}, map[string]bool{"k1": true, "k2": true})
	for _, e := range []*engine.Engine{a, b} {
		want(t, e, "k1", engine.Revoked)
		want(t, e, "k2", engine.Revoked)
	}
	if err := a.Rotate(ctx, "k2", "k3", 0); !errors.Is(err, engine.ErrKeyRevoked) {
		t.Fatalf("Rotate of a revoked key: %v, want ErrKeyRevoked", err)
	}
	want(t, b, "k3", engine.UnknownKey)
}

// TestRotateRevokeOldLink: Revoke of the old key stops it only; in the
// engine that revokes it too.
func TestRotateRevokeOldLink(t *testing.T) {
	_, c := newRedis(t)
	clk := newClock()
	a, b := twoEngines(t, c, clk)
	if err := a.Register(ctx, "k1", engine.Credits(1<<40)); err != nil {
		t.Fatal(err)
	}
	if err := a.Rotate(ctx, "k1", "k2", time.Hour); err != nil {
		t.Fatal(err)
	}
	want(t, a, "k1", engine.OK)
	after := revokeWhileConsuming(t, a, b, "k1", []string{"k1", "k2"}, map[string]bool{"k1": true})
	if after["k2"] == 0 {
		t.Errorf("k2 was not granted after Revoke(k1): %v", after)
	}
	for _, e := range []*engine.Engine{a, b, newEngine(t, c, clk.option())} {
		want(t, e, "k1", engine.Revoked)
		want(t, e, "k2", engine.OK)
	}
}

// TestRotateChain: k0 → k1 → k2 → k3, each with a grace. Every name works
// and draws on one quota; revoking k2 stops k2, k1 and k0 (they draw
// through it) but not k3; in a second chain, the grace of a middle link
// ending stops the older links too.
func TestRotateChain(t *testing.T) {
	_, c := newRedis(t)
	clk := newClock()
	a, b := twoEngines(t, c, clk)
	const q = 2000
	if err := a.Register(ctx, "k0", engine.Credits(q)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e := []*engine.Engine{a, b}[i%2]
		if err := e.Rotate(ctx, "k"+strconv.Itoa(i), "k"+strconv.Itoa(i+1), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	var us []use
	for i := range 4 {
		us = append(us, use{a, "k" + strconv.Itoa(i)}, use{b, "k" + strconv.Itoa(i)})
	}
	got := consumeUses(t, 2, us...)
	if n := sum(got); n != q {
		t.Fatalf("a chain of 3 in two engines: granted %v = %d, want %d", got, n, q)
	}
	if err := a.TopUp(ctx, "k3", 1000); err != nil {
		t.Fatal(err)
	}
	if err := b.Revoke(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*engine.Engine{a, b} {
		for _, k := range []string{"k0", "k1", "k2"} {
			want(t, e, k, engine.Revoked)
		}
		want(t, e, "k3", engine.OK)
	}

	// Graces of 3, 1 and 2 minutes: at 1 minute, j1's ends, and j0
	// (which draws through j1) stops with it; j2 goes on.
	if err := a.Register(ctx, "j0", engine.Credits(q)); err != nil {
		t.Fatal(err)
	}
	for i, g := range []time.Duration{3 * time.Minute, time.Minute, 2 * time.Minute} {
		if err := b.Rotate(ctx, "j"+strconv.Itoa(i), "j"+strconv.Itoa(i+1), g); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		want(t, a, "j"+strconv.Itoa(i), engine.OK)
	}
	clk.advance(time.Minute)
	for _, e := range []*engine.Engine{a, b} {
		want(t, e, "j0", engine.Revoked)
		want(t, e, "j1", engine.Revoked)
		want(t, e, "j2", engine.OK)
		want(t, e, "j3", engine.OK)
	}
	clk.advance(time.Minute)
	want(t, a, "j2", engine.Revoked)
	want(t, b, "j3", engine.OK)
}

// TestRotateRefused: the sentinel errors of Rotate with a Pool, and
// nothing changed by any of them.
func TestRotateRefused(t *testing.T) {
	_, c := newRedis(t)
	clk := newClock()
	a, b := twoEngines(t, c, clk)
	const q = 100
	for _, k := range []string{"k", "other", "gone"} {
		if err := a.Register(ctx, k, engine.Credits(q)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Revoke(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err, sentinel error) {
		t.Helper()
		if !errors.Is(err, sentinel) {
			t.Fatalf("%s: %v, want %v", what, err, sentinel)
		}
		if err.Error()[:7] != "allot: " {
			t.Fatalf("%s: %q", what, err)
		}
	}
	check("to an existing key", b.Rotate(ctx, "k", "other", time.Hour), engine.ErrKeyExists)
	check("of a revoked key", b.Rotate(ctx, "gone", "fresh", time.Hour), engine.ErrKeyRevoked)
	check("of an unknown key", b.Rotate(ctx, "nobody", "fresh", time.Hour), engine.ErrUnknownKey)
	check("to itself", b.Rotate(ctx, "k", "k", time.Hour), engine.ErrKeyExists)
	check("negative grace", b.Rotate(ctx, "k", "fresh", -1), engine.ErrInvalidAmount)
	if err := a.Rotate(ctx, "k", "k2", time.Hour); err != nil {
		t.Fatal(err)
	}
	check("of a rotated-out key", b.Rotate(ctx, "k", "fresh", time.Hour), engine.ErrRotated)
	check("to a rotated-out key", b.Rotate(ctx, "other", "k", time.Hour), engine.ErrKeyExists)
	check("to a key rotated to", b.Rotate(ctx, "other", "k2", time.Hour), engine.ErrKeyExists)
	check("TopUp of a rotated-out key", b.TopUp(ctx, "k", 1), engine.ErrRotated)
	check("SetLimits of a rotated-out key", b.SetLimits(ctx, "k", engine.Credits(1)), engine.ErrRotated)
	// Nothing changed: "fresh" is unknown everywhere and can be
	// registered; the quotas are whole.
	for _, e := range []*engine.Engine{a, b} {
		want(t, e, "fresh", engine.UnknownKey)
	}
	if got := sum(consumeUses(t, 2, use{a, "k"}, use{b, "k2"})); got != q {
		t.Fatalf("k and k2: granted %d, want %d", got, q)
	}
	if got := sum(consumeUses(t, 2, use{a, "other"}, use{b, "other"})); got != q {
		t.Fatalf("other: granted %d, want %d", got, q)
	}
	want(t, b, "gone", engine.Revoked)

	// The chain's limit, on the injected clock: MaxRotationChain
	// rotations in grace, then ErrRotationChain; a rotation without a
	// grace, or the graces passing, ends the chain.
	if err := a.Register(ctx, "c0", engine.Credits(q)); err != nil {
		t.Fatal(err)
	}
	name := func(i int) string { return "c" + strconv.Itoa(i) }
	for i := range engine.MaxRotationChain {
		if err := []*engine.Engine{a, b}[i%2].Rotate(ctx, name(i), name(i+1), time.Hour); err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
	}
	last := name(engine.MaxRotationChain)
	check("over the chain limit", b.Rotate(ctx, last, "c-over", time.Hour), engine.ErrRotationChain)
	want(t, a, "c-over", engine.UnknownKey)
	want(t, a, "c0", engine.OK)
	want(t, b, last, engine.OK)
	clk.advance(time.Hour)
	if err := b.Rotate(ctx, last, "c-next", time.Hour); err != nil {
		t.Fatalf("after the graces passed: %v", err)
	}
	if err := a.Rotate(ctx, "c-next", "c-zero", 0); err != nil {
		t.Fatal(err)
	}
	want(t, b, "c-next", engine.Revoked)
	want(t, b, "c-zero", engine.OK)
	if err := a.Register(ctx, "fresh", engine.Credits(1)); err != nil {
		t.Fatalf("Register of a name refused rotations were to: %v", err)
	}
}

// TestRotateCrashBetweenWrites: Rotate writes the new key's pointer, then
// the rotation in the chain's pool. A crash in between leaves a pointer
// the pool does not list: the new key reads as unknown everywhere, the
// old one is still the head, and Rotate called again finishes it.
func TestRotateCrashBetweenWrites(t *testing.T) {
	_, c := newRedis(t)
	clk := newClock()
	a, b := twoEngines(t, c, clk)
	const q = 500
	for _, k := range []string{"old", "other"} {
		if err := a.Register(ctx, k, engine.Credits(q)); err != nil {
			t.Fatal(err)
		}
	}
	reg := registration(t, c, "old")
	st, err := redisstore.New(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if created, err := st.PointForTest(ctx, engine.IDOf("new"), engine.IDOf("old"), reg); err != nil || !created {
		t.Fatalf("pointer: %v %v", created, err)
	}
	// The "crashed" process is gone; a and b go on.
	for _, e := range []*engine.Engine{a, b} {
		want(t, e, "new", engine.UnknownKey)
		want(t, e, "old", engine.OK)
	}
	if err := b.TopUp(ctx, "old", 10); err != nil {
		t.Fatal(err)
	}
	// The name is taken until the rotation is done.
	if err := a.Register(ctx, "new", engine.Credits(1)); !errors.Is(err, engine.ErrKeyExists) {
		t.Fatalf("Register over a rotation's pointer: %v, want ErrKeyExists", err)
	}
	if err := b.Rotate(ctx, "other", "new", time.Hour); !errors.Is(err, engine.ErrKeyExists) {
		t.Fatalf("Rotate of another key to it: %v, want ErrKeyExists", err)
	}
	if err := a.Rotate(ctx, "old", "new", time.Hour); err != nil {
		t.Fatalf("Rotate called again: %v", err)
	}
	got := consumeUses(t, 4, use{a, "old"}, use{a, "new"}, use{b, "old"}, use{b, "new"})
	if n := sum(got) + 2; n > q+10 || n < q+10-2*chunk {
		t.Fatalf("granted %v (+2) = %d, want %d less at most a chunk per engine", got, n, q+10)
	}
	// A crash after the second write: the rotation landed, and a retry
	// says so as Rotate without a Pool does (the new key exists).
	if err := a.Register(ctx, "x", engine.Credits(q)); err != nil {
		t.Fatal(err)
	}
	if err := a.Rotate(ctx, "x", "y", time.Hour); err != nil {
		t.Fatal(err)
	}
	fresh := newEngine(t, c, clk.option())
	if err := fresh.Rotate(ctx, "x", "y", time.Hour); !errors.Is(err, engine.ErrKeyExists) {
		t.Fatalf("Rotate again after it landed, in another engine: %v, want ErrKeyExists", err)
	}
	if err := fresh.Rotate(ctx, "x", "z", time.Hour); !errors.Is(err, engine.ErrRotated) {
		t.Fatalf("Rotate of the rotated-out key to another: %v, want ErrRotated", err)
	}
}

// registration reads key's registration number from its Redis hash.
func registration(t *testing.T, c redis.UniversalClient, key string) uint64 {
	t.Helper()
	s, err := c.HGet(ctx, redisHash(key), "reg").Result()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestRotateDelete: Delete of the head removes the chain in every engine,
// and every name of it can be registered again; Delete of a rotated-out
// key is not supported with a Pool yet, and changes nothing.
func TestRotateDelete(t *testing.T) {
	_, c := newRedis(t)
	clk := newClock()
	a, b := twoEngines(t, c, clk)
	if err := a.Register(ctx, "d0", engine.Credits(100)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := a.Rotate(ctx, fmt.Sprintf("d%d", i), fmt.Sprintf("d%d", i+1), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		want(t, b, fmt.Sprintf("d%d", i), engine.OK)
	}
	if err := b.Delete(ctx, "d0"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Delete of a rotated-out key: %v, want ErrUnsupported", err)
	}
	want(t, a, "d0", engine.OK)
	if err := b.Delete(ctx, "d2"); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*engine.Engine{a, b} {
		for i := range 3 {
			want(t, e, fmt.Sprintf("d%d", i), engine.UnknownKey)
		}
	}
	for i := range 3 {
		k := fmt.Sprintf("d%d", i)
		if n, err := c.Exists(ctx, redisHash(k)).Result(); err != nil || n != 0 {
			t.Fatalf("%s: its hash is still there (%d, %v)", k, n, err)
		}
		if err := b.Register(ctx, k, engine.Credits(3)); err != nil {
			t.Fatalf("Register %s again: %v", k, err)
		}
		if got := sum(consumeUses(t, 2, use{a, k}, use{b, k})); got != 3 {
			t.Fatalf("%s registered again: granted %d, want 3", k, got)
		}
	}
}

// TestRotateDeleteCrashed: a Delete of a chain that stopped after removing
// the pool, before removing the pointers, leaves pointers to nothing: they
// read as unknown, and their names can be registered.
func TestRotateDeleteCrashed(t *testing.T) {
	_, c := newRedis(t)
	clk := newClock()
	a, b := twoEngines(t, c, clk)
	if err := a.Register(ctx, "p0", engine.Credits(100)); err != nil {
		t.Fatal(err)
	}
	if err := a.Rotate(ctx, "p0", "p1", time.Hour); err != nil {
		t.Fatal(err)
	}
	// What the Delete's commit does; the pointer of p1 stays.
	if err := c.Del(ctx, redisHash("p0"), redisHash("p0")+":h").Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Exists(ctx, redisHash("p1")).Result(); err != nil || n != 1 {
		t.Fatalf("p1's pointer: %d %v", n, err)
	}
	fresh := newEngine(t, c, clk.option())
	want(t, fresh, "p1", engine.UnknownKey)
	if err := b.Register(ctx, "p1", engine.Credits(5)); err != nil {
		t.Fatalf("Register over a dead chain's pointer: %v", err)
	}
	if got := sum(consumeUses(t, 2, use{b, "p1"}, use{fresh, "p1"})); got != 5 {
		t.Fatalf("p1 registered again: granted %d, want 5", got)
	}
}

// TestRotateCluster: on a Cluster of three masters, a chain whose keys
// live in different slots (and masters): the new key and the old one draw
// on one quota in both engines; Revoke of the old link, then of the head,
// stops them in the other engine once it returns.
func TestRotateCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, redistest.Always)
	ca, cb := cl.Client(), cl.Client()
	if err := redisstore.Initialize(ctx, ca); err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	opts := []engine.Option{clk.option(), engine.WithLease(engine.LeaseOptions{MinChunk: 8, MaxChunk: chunk})}
	lease := []redisstore.Option{redisstore.WithLease(200 * time.Millisecond)}
	a := newEngineWith(t, ca, lease, opts...)
	b := newEngineWith(t, cb, lease, opts...)
	// Three names on three masters.
	names := []string{}
	masters := map[string]bool{}
	for i := 0; len(names) < 3; i++ {
		k := "ck-" + strconv.Itoa(i)
		m, err := ca.MasterForKey(ctx, redisHash(k))
		if err != nil {
			t.Fatal(err)
		}
		if !masters[m.Options().Addr] {
			masters[m.Options().Addr] = true
			names = append(names, k)
		}
	}
	const q = 1000
	if err := a.Register(ctx, names[0], engine.Credits(q)); err != nil {
		t.Fatal(err)
	}
	if err := a.Rotate(ctx, names[0], names[1], time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := b.Rotate(ctx, names[1], names[2], time.Hour); err != nil {
		t.Fatal(err)
	}
	var us []use
	for _, k := range names {
		us = append(us, use{a, k}, use{b, k})
	}
	if got := consumeUses(t, 2, us...); sum(got) != q {
		t.Fatalf("a chain over three masters: granted %v = %d, want %d", got, sum(got), q)
	}
	if err := a.TopUp(ctx, names[2], 1<<30); err != nil {
		t.Fatal(err)
	}
	for _, k := range names {
		want(t, b, k, engine.OK)
	}
	if err := a.Revoke(ctx, names[1]); err != nil {
		t.Fatal(err)
	}
	want(t, b, names[0], engine.Revoked)
	want(t, b, names[1], engine.Revoked)
	want(t, b, names[2], engine.OK)
	if err := a.Revoke(ctx, names[2]); err != nil {
		t.Fatal(err)
	}
	want(t, b, names[2], engine.Revoked)
	t.Logf("a chain over the masters %v", masters)
}
