package redisstore_test

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/internal/redistest"
	"github.com/allot-go/allot/persist/redisstore"
	"github.com/redis/go-redis/v9"
)

// envInt returns the integer in environment variable name, def if unset.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// newRand returns a random source seeded from ALLOT_REDIS_SEED, or from the
// clock; the seed is logged so that a failure can be replayed.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ALLOT_REDIS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("ALLOT_REDIS_SEED=%d", seed)
	return rand.New(rand.NewPCG(seed, seed))
}

// redisHash returns the name of key's hash in Redis.
func redisHash(key string) string {
	id := engine.IDOf(key)
	return "{allot:" + hex.EncodeToString(id[:]) + "}"
}

// poolUsed returns the pool's count of limit 0 of key (Credits: units
// reserved; a window: units reserved in its current window).
func poolUsed(t *testing.T, c redis.UniversalClient, key string) int64 {
	t.Helper()
	v, err := c.HGet(ctx, redisHash(key), "v0").Int64()
	if err != nil {
		t.Fatalf("HGET v0 of %s: %v", key, err)
	}
	return v
}

func grants(ps []*sproc) int64 {
	var n int64
	for _, p := range ps {
		n += p.count('g')
	}
	return n
}

// TestKillProcesses: in each cycle four processes consume one key (Credits
// in even cycles, a window in odd ones), a random non-empty subset of them
// is killed with SIGKILL once each victim has reported a random number of
// grants, and as many fresh processes join the survivors to drain the key.
//
// Every process reports each grant on its stdout, with one write, after
// Consume returns and before its next Consume; what a killed process wrote
// is read to the end. A grant is counted once reported: that is a grant
// served, and the check "total ≤ quota" is exact for them. A grant a
// killed process made but had not written yet (at most one per goroutine)
// was never served, and counts in the shortfall, as do the units it held
// unused; both come out of what it held after its last reservation (or
// with one in flight, that Redis made and whose answer the kill lost),
// which is at most a chunk. So the shortfall is at most the killed
// processes times MaxChunk.
//
// ALLOT_REDIS_KILL_CYCLES sets the number of cycles (default 10).
func TestKillProcesses(t *testing.T) {
	cycles := envInt(t, "ALLOT_REDIS_KILL_CYCLES", 10)
	rnd := newRand(t)
	_, c := newRedis(t)
	eng := newEngine(t, c)
	const chunk, q = 256, 16_384
	// What a killed process held (at most a chunk), plus the grants its
	// 16 goroutines had made and not written yet when it died: those were
	// taken from the pool, but no client heard of them, so they count in
	// the shortfall though they were granted, one per goroutine at most.
	const perKilled = chunk + 16
	env := []string{"ALLOT_ADDR=" + c.Options().Addr, "ALLOT_CHUNK=" + strconv.Itoa(chunk),
		"ALLOT_NOW=" + strconv.FormatInt(time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC).UnixNano(), 10)}
	var worst, sumShort, sumKilled int64
	for cycle := range cycles {
		kind, lim := "credits", engine.Credits(q)
		if cycle%2 == 1 {
			kind, lim = "window", engine.PerWindow(q, time.Hour)
		}
		key := fmt.Sprintf("kill-%d-%s", cycle, kind)
		if err := eng.Register(ctx, key, lim); err != nil {
			t.Fatal(err)
		}
		kenv := append(env, "ALLOT_KEY="+key)
		ps := startStream(t, 4, "stream", kenv...)
		for _, p := range ps {
			p.start(t)
		}
		victims := rnd.Perm(4)[:1+rnd.IntN(4)]
		var killed []*sproc
		for _, v := range victims {
			<-ps[v].when('g', 1+rnd.Int64N(q/8))
			if ps[v].kill() {
				killed = append(killed, ps[v])
			}
		}
		fresh := startStream(t, len(victims), "stream", kenv...)
		for _, p := range fresh {
			p.start(t)
		}
		var survivors []*sproc
		for i, p := range ps {
			if !contains(victims, i) {
				survivors = append(survivors, p)
			}
		}
		for _, p := range append(survivors, fresh...) {
			if f := p.finish(t); f[0] != p.count('g') {
				t.Fatalf("cycle %d: a child said it granted %d and reported %d grants", cycle, f[0], p.count('g'))
			}
		}
		total := grants(ps) + grants(fresh)
		short := q - total
		t.Logf("cycle %d (%s): killed %d of 4 (their reports %d), granted %d of %d, shortfall %d, pool %d",
			cycle, kind, len(killed), grants(killed), total, q, short, poolUsed(t, c, key))
		if total > q {
			t.Fatalf("cycle %d (%s): over-grant: %d granted, quota %d", cycle, kind, total, q)
		}
		if bound := int64(len(killed)) * perKilled; short > bound {
			t.Fatalf("cycle %d (%s): shortfall %d above %d killed × (MaxChunk + 16 unwritten grants) = %d", cycle, kind, short, len(killed), bound)
		}
		worst, sumShort, sumKilled = max(worst, short), sumShort+short, sumKilled+int64(len(killed))
	}
	t.Logf("%d cycles, %d processes killed: 0 over-grants; shortfall %d in all, at most %d in a cycle, %.1f per killed process (bound %d)",
		cycles, sumKilled, sumShort, worst, float64(sumShort)/float64(max(sumKilled, 1)), perKilled)
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestKillRedisAlways: four processes consume one key while redis-server
// (appendonly yes, appendfsync always) is killed with SIGKILL and
// restarted, ALLOT_REDIS_SERVER_CYCLES times (default 3). In each cycle:
// every process grants more than it can hold (so it reserved from the
// restarted server), Redis is killed, every process reports an error
// matching engine.ErrStore (its lease ran out), Redis restarts on the same
// port and directory, and the pool's count covers every grant reported so
// far: no grant without a durable reservation, so no unit can be granted
// twice. At the end the processes stop and close (giving back what they
// hold): what the pool counts beyond the grants is the shortfall, at most
// one chunk per process and kill (a reservation Redis made durable whose
// answer the kill lost).
func TestKillRedisAlways(t *testing.T) {
	lost := killRedis(t, redistest.Always)
	if lost != 0 {
		t.Fatalf("appendfsync always: the restarted Redis forgot %d granted units", lost)
	}
}

// TestKillRedisEverysec is TestKillRedisAlways with appendfsync everysec,
// which may lose the last second of writes: it reports what was lost.
func TestKillRedisEverysec(t *testing.T) {
	lost := killRedis(t, redistest.EverySec)
	t.Logf("appendfsync everysec: the restarted Redis forgot %d granted units, which it would grant again", lost)
}

// killRedis runs the cycles of TestKillRedisAlways and returns the granted
// units the restarted Redis forgot, over all cycles: what it would
// over-grant.
func killRedis(t *testing.T, fsync redistest.Fsync) (lost int64) {
	cycles := envInt(t, "ALLOT_REDIS_SERVER_CYCLES", 3)
	srv := redistest.Start(t, fsync)
	c := srv.Client()
	if err := redisstore.Initialize(ctx, c); err != nil {
		t.Fatal(err)
	}
	eng := newEngine(t, c)
	const chunk = 64
	resume := int64(3 * chunk) // more than a process can hold: it reserved again
	key := "redis-kill"
	if err := eng.Register(ctx, key, engine.Credits(1<<50)); err != nil {
		t.Fatal(err)
	}
	ps := startStream(t, 4, "stream", "ALLOT_ADDR="+c.Options().Addr, "ALLOT_KEY="+key,
		"ALLOT_CHUNK="+strconv.Itoa(chunk), "ALLOT_LEASE=300ms", "ALLOT_TOLERATE=1", "ALLOT_DIAL_ONCE=1")
	for _, p := range ps {
		p.start(t)
	}
	var restarted time.Time
	for cycle := range cycles {
		for _, p := range ps {
			<-p.when('g', p.count('g')+resume)
		}
		resumed := time.Since(restarted)
		before := grants(ps)
		srv.Kill()
		killed := time.Now()
		for _, p := range ps {
			<-p.when('e', p.count('e')+1)
		}
		down := grants(ps) - before // from live reservations while Redis was down
		failed := time.Since(killed)
		srv.Restart()
		restarted = time.Now()
		g := grants(ps)
		pool := poolUsed(t, c, key)
		if cycle > 0 {
			t.Logf("cycle %d: every process granted %d units within %v of the restart", cycle-1, resume, resumed.Round(time.Millisecond))
		}
		t.Logf("cycle %d: %d granted before the kill, %d more while Redis was down, an error in every process within %v; after the restart (%v) the pool counts %d",
			cycle, before, down, failed.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), pool)
		if g-pool > lost { // a loss stays: the pool counts behind the grants from then on
			t.Logf("cycle %d: the restarted Redis forgot %d granted units", cycle, g-pool-lost)
			lost = g - pool
		}
		for _, p := range ps {
			if f := p.failures(); len(f) > 0 {
				t.Fatalf("cycle %d: a process failed: %q", cycle, f)
			}
		}
	}
	for _, p := range ps {
		<-p.when('g', p.count('g')+resume)
		p.stop(t)
	}
	var total, errs int64
	for _, p := range ps {
		f := p.finish(t)
		total += f[0]
		errs += f[3]
	}
	pool := poolUsed(t, c, key)
	t.Logf("%d cycles: granted %d, pool counts %d after every process closed (shortfall %d), %d errors matching ErrStore while Redis was down",
		cycles, total, pool, max(pool-total, 0), errs)
	lost = max(lost, total-pool)
	if bound := int64(cycles) * 4 * chunk; fsync == redistest.Always && pool-total > bound {
		t.Fatalf("shortfall %d above %d kills × 4 processes × chunk = %d", pool-total, cycles, bound)
	}
	return lost
}
