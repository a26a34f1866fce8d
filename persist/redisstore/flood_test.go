package redisstore_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestUnknownKeyFlood: ALLOT_REDIS_FLOOD (default 10,000) Consumes of
// unknown keys against one engine, from 16 goroutines, while another
// goroutine consumes a valid key and times each Consume. First every key
// is new: each costs one lookup in Redis (one HGETALL, counted exactly).
// Then the same number over 64 unknown keys: the negative cache keeps each
// to one lookup per engine.NegativeTTL, and a few for goroutines that miss
// it together. Each phase reports Redis's commands per second and the
// valid key's latency.
func TestUnknownKeyFlood(t *testing.T) {
	n := envInt(t, "ALLOT_REDIS_FLOOD", 10_000)
	srv, c := newRedis(t)
	eng := newEngine(t, c)
	if err := eng.Register(ctx, "valid", engine.Credits(1<<50)); err != nil {
		t.Fatal(err)
	}
	quiet := validLatency(t, eng, func() bool { return false }, 20_000)
	t.Logf("valid key alone: %s", quiet)
	const g, k = 16, 64
	for _, ph := range []struct {
		name string
		key  func(i int64) string
	}{
		{"distinct unknown keys", func(i int64) string { return "new-" + strconv.FormatInt(i, 10) }},
		{"64 unknown keys again and again", func(i int64) string { return "again-" + strconv.FormatInt(i%k, 10) }},
	} {
		hget0, total0 := commandCalls(t, c, "hgetall"), infoInt(t, srv, c, "total_commands_processed")
		var next atomic.Int64
		var stop atomic.Bool
		var wg sync.WaitGroup
		start := time.Now()
		for range g {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
					d, err := eng.Consume(ctx, ph.key(i), 1)
					if err != nil || d.Reason != engine.UnknownKey {
						t.Errorf("unknown key: %+v %v", d, err)
						return
					}
				}
			}()
		}
		lat := make(chan latencies, 1)
		go func() { lat <- validLatency(t, eng, stop.Load, 0) }()
		wg.Wait()
		elapsed := time.Since(start)
		stop.Store(true)
		l := <-lat
		hgets := commandCalls(t, c, "hgetall") - hget0
		cmds := infoInt(t, srv, c, "total_commands_processed") - total0 - 1 // less the INFO before
		t.Logf("%s: %d Consumes in %v (%.0f/s): %d lookups, %d Redis commands (%.0f/s, %.3f per Consume); valid key beside it: %s",
			ph.name, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), hgets, cmds,
			float64(cmds)/elapsed.Seconds(), float64(cmds)/float64(n), l)
		switch ph.name {
		case "distinct unknown keys":
			if hgets != int64(n) {
				t.Errorf("%d lookups for %d new keys, want one each", hgets, n)
			}
		default:
			// One lookup per key and NegativeTTL, and at most one more for
			// each goroutine that found the answer expired at the same time.
			periods := int64(elapsed/engine.NegativeTTL) + 1
			if bound := k * g * periods; hgets > bound {
				t.Errorf("%d lookups for %d Consumes of %d keys over %v, above %d (a key: one per NegativeTTL and goroutine)", hgets, n, k, elapsed, bound)
			}
		}
	}
}

// latencies summarises the durations of Consumes.
type latencies struct {
	n             int
	p50, p99, max time.Duration
}

func (l latencies) String() string {
	return fmt.Sprintf("%d Consumes, p50 %v, p99 %v, max %v", l.n, l.p50, l.p99, l.max.Round(time.Microsecond))
}

// validLatency consumes the key "valid" until stop says so, and at least
// min times, and returns the durations.
func validLatency(t *testing.T, eng *engine.Engine, stop func() bool, least int) latencies {
	var ds []time.Duration
	for len(ds) < least || (least == 0 && !stop()) {
		s := time.Now()
		d, err := eng.Consume(ctx, "valid", 1)
		ds = append(ds, time.Since(s))
		if err != nil || !d.Allowed {
			t.Errorf("valid key: %+v %v", d, err)
			break
		}
	}
	slices.Sort(ds)
	if len(ds) == 0 {
		return latencies{}
	}
	return latencies{n: len(ds), p50: ds[len(ds)/2], p99: ds[len(ds)*99/100], max: ds[len(ds)-1]}
}

// infoInt returns an integer field of INFO.
func infoInt(t *testing.T, srv *redistest.Server, c *redis.Client, field string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(srv.Info(ctx, c, field), 10, 64)
	if err != nil {
		t.Fatalf("INFO %s: %v", field, err)
	}
	return n
}

// commandCalls returns how many times Redis ran cmd, from INFO
// commandstats (0 before the first).
func commandCalls(t *testing.T, c *redis.Client, cmd string) int64 {
	t.Helper()
	txt, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(txt, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "cmdstat_"+cmd+":calls="); ok {
			v, _, _ = strings.Cut(v, ",")
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("commandstats %q", l)
			}
			return n
		}
	}
	return 0
}
