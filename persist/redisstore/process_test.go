package redisstore_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist/redisstore"
	"github.com/redis/go-redis/v9"
)

// The child processes of the tests below run this test binary again, with
// ALLOT_REDIS_CHILD set: TestMain sends them to child.
func TestMain(m *testing.M) {
	if os.Getenv("ALLOT_REDIS_CHILD") != "" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

// child is one process sharing a key: it opens an engine on Redis
// (ALLOT_ADDR), says "ready", waits for a line on stdin, consumes
// ALLOT_KEY one unit at a time from 16 goroutines (until denied, or for
// ALLOT_FOR with the real clock), prints "granted N" and closes.
func child() int {
	c := redis.NewClient(&redis.Options{Addr: os.Getenv("ALLOT_ADDR")})
	defer c.Close()
	st, err := redisstore.New(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts := []engine.Option{engine.WithStore(st)}
	if s := os.Getenv("ALLOT_NOW"); s != "" {
		ns, _ := strconv.ParseInt(s, 10, 64)
		opts = append(opts, engine.WithClock(func() time.Time { return time.Unix(0, ns) }))
	}
	if s := os.Getenv("ALLOT_CHUNK"); s != "" {
		n, _ := strconv.ParseInt(s, 10, 64)
		opts = append(opts, engine.WithLease(engine.LeaseOptions{MinChunk: min(8, n), MaxChunk: n}))
	}
	eng, err := engine.New(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	key := os.Getenv("ALLOT_KEY")
	var dur time.Duration
	if s := os.Getenv("ALLOT_FOR"); s != "" {
		dur, _ = time.ParseDuration(s)
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 1
	}
	var granted, failed atomic.Int64
	end := time.Now().Add(dur)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for dur == 0 || time.Now().Before(end) {
				d, err := eng.Consume(ctx, key, 1)
				if err != nil {
					failed.Add(1)
					fmt.Fprintln(os.Stderr, err)
					return
				}
				if d.Allowed {
					granted.Add(1)
				} else if dur == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("granted %d\n", granted.Load())
	if err := eng.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if failed.Load() > 0 {
		return 1
	}
	return 0
}

// proc is a running child.
type proc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	errb *strings.Builder
}

// startChildren starts n children with the given environment and waits
// until each is ready.
func startChildren(t *testing.T, n int, env ...string) []*proc {
	t.Helper()
	ps := make([]*proc, n)
	for i := range ps {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), append([]string{"ALLOT_REDIS_CHILD=1"}, env...)...)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		p := &proc{cmd: cmd, in: in, out: bufio.NewReader(out), errb: &strings.Builder{}}
		cmd.Stderr = p.errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		ps[i] = p
	}
	for _, p := range ps {
		if l, err := p.out.ReadString('\n'); err != nil || l != "ready\n" {
			t.Fatalf("child: %q %v\n%s", l, err, p.errb)
		}
	}
	return ps
}

// run starts every child at once and returns the units each granted.
func run(t *testing.T, ps []*proc) []int64 {
	t.Helper()
	for _, p := range ps {
		if _, err := io.WriteString(p.in, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]int64, len(ps))
	for i, p := range ps {
		l, err := p.out.ReadString('\n')
		if err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, p.errb)
		}
		if _, err := fmt.Sscanf(l, "granted %d", &got[i]); err != nil {
			t.Fatalf("child %d said %q", i, l)
		}
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, p.errb)
		}
	}
	return got
}

// TestProcessesShareOneQuota: four processes, 16 goroutines each, one key.
func TestProcessesShareOneQuota(t *testing.T) {
	_, c := newRedis(t)
	eng := newEngine(t, c)
	addr := "ALLOT_ADDR=" + c.Options().Addr
	now := "ALLOT_NOW=" + strconv.FormatInt(time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC).UnixNano(), 10)
	const chunk = 256
	for _, tc := range []struct {
		name   string
		limits []engine.Limit
		q      int64
	}{
		{"credits", []engine.Limit{engine.Credits(50_000)}, 50_000},
		{"window", []engine.Limit{engine.PerWindow(40_000, time.Hour)}, 40_000},
		{"two limits", []engine.Limit{engine.Credits(30_000), engine.PerWindow(20_000, time.Hour)}, 20_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "proc-" + strings.ReplaceAll(tc.name, " ", "-")
			if err := eng.Register(ctx, key, tc.limits...); err != nil {
				t.Fatal(err)
			}
			ps := startChildren(t, 4, addr, now, "ALLOT_KEY="+key, "ALLOT_CHUNK="+strconv.Itoa(chunk))
			got := run(t, ps)
			total := sum(got)
			lo := tc.q
			if len(tc.limits) > 1 {
				lo = tc.q - 4*chunk // units of one limit held where the other's are used up
			}
			t.Logf("%s: granted %v = %d of %d", tc.name, got, total, tc.q)
			if total > tc.q || total < lo {
				t.Fatalf("granted %d, want %d to %d", total, lo, tc.q)
			}
		})
	}
	t.Run("rate", func(t *testing.T) {
		const rate, burst = 2000, 500
		if err := eng.Register(ctx, "proc-rate", engine.Rate(rate, time.Second, burst)); err != nil {
			t.Fatal(err)
		}
		ps := startChildren(t, 4, addr, "ALLOT_KEY=proc-rate", "ALLOT_FOR=500ms", "ALLOT_CHUNK="+strconv.Itoa(chunk))
		start := time.Now()
		got := run(t, ps)
		elapsed := time.Since(start)
		limit := burst + int64(rate*elapsed.Seconds()) + 1
		t.Logf("rate: granted %v = %d over %v, bound %d", got, sum(got), elapsed, limit)
		if sum(got) > limit {
			t.Fatalf("granted %d over %v, more than burst + rate × elapsed = %d", sum(got), elapsed, limit)
		}
	})
}
