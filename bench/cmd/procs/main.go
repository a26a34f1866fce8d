// Command procs measures one quota shared by several OS processes on one
// Redis: for allot on Redis (persist/redisstore) and go-redis/redis_rate,
// a hot key and 1,000,000 Zipf keys, with one and with four processes
// that together keep 64 goroutines consuming, and prints the total
// throughput in the format of go test -bench:
//
//	BenchmarkProcesses/impl=allot-redis-rate/dist=hot/procs=4  <calls>  <ns> ns/op  <n> calls/s  <n> grants/s ...
//
// ns/op is wall time ÷ calls over all processes together (as b.RunParallel
// counts it), calls/s its inverse; per-call is the mean time one call took
// in its goroutine.
//
//	go run ./cmd/procs -addr=127.0.0.1:6379            # make bench-redis runs it
//	go run ./cmd/procs -addr=... -procs=4 -impl=redis-rate -dist=hot -for=2s
//
// Each run registers its keys (allot: one Rate limit per key, 10^6 a second
// with a burst of 2^40, as allot-redis-rate in the benchmarks; redis_rate:
// 10^6 a second, burst 10^6, as redis-rate) in a Redis database of its own, starts the
// processes (this program again), lets them warm up (-warm: reservations,
// and for allot the first lookup of each key), then counts for -for and
// flushes the database. It needs a Redis that serves nothing else.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/bench/internal/keyseq"
	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist/redisstore"
	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

var ctx = context.Background()

// The database the runs use, and the prefix of redis_rate's keys.
const (
	db         = 15
	ratePrefix = "procs:"
)

var dists = map[string]struct {
	keys int
	zipf bool
}{"hot": {1, false}, "zipf1m": {1_000_000, true}}

// allotLimit is the limit of allot's keys; rateLimit redis_rate's.
var (
	allotLimit = engine.Rate(1_000_000, time.Second, 1<<40)
	rateLimit  = redis_rate.Limit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second}
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("procs: ")
	if os.Getenv("ALLOT_PROCS_CHILD") != "" {
		if err := child(); err != nil {
			log.Fatal(err)
		}
		return
	}
	addr := flag.String("addr", os.Getenv("ALLOT_REDIS_ADDR"), "Redis host:port (default $ALLOT_REDIS_ADDR)")
	procs := flag.String("procs", "1,4", "numbers of processes")
	impls := flag.String("impl", "allot-redis-rate,redis-rate", "implementations")
	dl := flag.String("dist", "hot,zipf1m", "key distributions")
	goroutines := flag.Int("goroutines", 64, "goroutines over all processes")
	warm := flag.Duration("warm", time.Second, "time each process consumes before counting")
	dur := flag.Duration("for", 3*time.Second, "time each process counts")
	count := flag.Int("count", 1, "runs of each configuration")
	flag.Parse()
	if *addr == "" {
		log.Fatal("-addr or ALLOT_REDIS_ADDR: a Redis that serves nothing else")
	}
	c := redis.NewClient(&redis.Options{Addr: *addr, DB: db, PoolSize: 256})
	defer c.Close()
	for _, impl := range strings.Split(*impls, ",") {
		for _, dist := range strings.Split(*dl, ",") {
			d, ok := dists[dist]
			if !ok {
				log.Fatalf("unknown dist %q", dist)
			}
			if err := setup(c, impl, d.keys); err != nil {
				log.Fatalf("%s/%s: %v", impl, dist, err)
			}
			for _, ps := range strings.Split(*procs, ",") {
				n, err := strconv.Atoi(ps)
				if err != nil || n < 1 || *goroutines%n != 0 {
					log.Fatalf("-procs %q: each must divide -goroutines %d", ps, *goroutines)
				}
				for range *count {
					res, err := runProcs(*addr, impl, dist, n, *goroutines/n, *warm, *dur)
					if err != nil {
						log.Fatalf("%s/%s/%d: %v", impl, dist, n, err)
					}
					calls, grants, busy, secs := int64(0), int64(0), 0.0, 0.0
					for _, r := range res {
						calls, grants, busy = calls+r.calls, grants+r.grants, busy+r.busy
						secs += float64(r.calls) / r.elapsed // each process's throughput
					}
					if grants != calls {
						log.Fatalf("%s/%s/%d: granted %d of %d calls", impl, dist, n, grants, calls)
					}
					fmt.Printf("BenchmarkProcesses/impl=%s/dist=%s/procs=%d\t%d\t%.1f ns/op\t%.0f calls/s\t%.0f ns/call\n",
						impl, dist, n, calls, 1e9/secs, secs, busy*1e9/float64(calls))
				}
			}
			if err := c.FlushDB(ctx).Err(); err != nil {
				log.Fatal(err)
			}
		}
	}
}

// setup empties the database and registers n keys.
func setup(c *redis.Client, impl string, n int) error {
	if err := c.FlushDB(ctx).Err(); err != nil {
		return err
	}
	if impl == "redis-rate" {
		return nil // redis_rate creates a key at its first call
	}
	if impl != "allot-redis-rate" {
		return fmt.Errorf("unknown impl %q (allot-redis-rate, redis-rate)", impl)
	}
	if err := redisstore.Initialize(ctx, c); err != nil {
		return err
	}
	eng, err := openEngine(c)
	if err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 256)
	for range 256 { // concurrent Registers share a round trip
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := eng.Register(ctx, keyseq.Name(i), allotLimit); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(<-errs, eng.Close())
}

// openEngine opens an engine on a redisstore on c.
func openEngine(c *redis.Client) (*engine.Engine, error) {
	st, err := redisstore.New(ctx, c)
	if err != nil {
		return nil, err
	}
	return engine.New(engine.WithStore(st))
}

// result is what one process reports.
type result struct {
	calls, grants int64
	busy          float64 // seconds its goroutines spent in calls, added up
	elapsed       float64 // seconds it counted
}

// runProcs runs n processes of g goroutines each and returns their reports.
func runProcs(addr, impl, dist string, n, g int, warm, dur time.Duration) ([]result, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	type proc struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *bufio.Reader
	}
	ps := make([]proc, n)
	defer func() {
		for _, p := range ps {
			if p.cmd != nil && p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
			}
		}
	}()
	for i := range ps {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "ALLOT_PROCS_CHILD=1", "ALLOT_REDIS_ADDR="+addr, "PROCS_IMPL="+impl,
			"PROCS_DIST="+dist, "PROCS_G="+strconv.Itoa(g), "PROCS_WARM="+warm.String(), "PROCS_FOR="+dur.String(),
			"PROCS_OFFSET="+strconv.Itoa(i*keyseq.Len/n))
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		ps[i] = proc{cmd, in, bufio.NewReader(out)}
	}
	for _, p := range ps {
		if l, err := p.out.ReadString('\n'); err != nil || l != "ready\n" {
			return nil, fmt.Errorf("child: %q %v", l, err)
		}
	}
	for _, p := range ps {
		if _, err := io.WriteString(p.in, "go\n"); err != nil {
			return nil, err
		}
	}
	res := make([]result, n)
	for i, p := range ps {
		l, err := p.out.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("child %d: %v", i, err)
		}
		r := &res[i]
		if _, err := fmt.Sscanf(l, "calls %d grants %d busy %g elapsed %g", &r.calls, &r.grants, &r.busy, &r.elapsed); err != nil {
			return nil, fmt.Errorf("child %d said %q", i, l)
		}
		if err := p.cmd.Wait(); err != nil {
			return nil, fmt.Errorf("child %d: %v", i, err)
		}
	}
	return res, nil
}

// child is one process: it consumes from PROCS_G goroutines, each walking
// the distribution's key sequence from its own offset, for PROCS_WARM
// uncounted, then for PROCS_FOR counted, and prints what it counted.
func child() error {
	c := redis.NewClient(&redis.Options{Addr: os.Getenv("ALLOT_REDIS_ADDR"), DB: db, PoolSize: 256})
	defer c.Close()
	impl, dist := os.Getenv("PROCS_IMPL"), dists[os.Getenv("PROCS_DIST")]
	g, _ := strconv.Atoi(os.Getenv("PROCS_G"))
	off, _ := strconv.Atoi(os.Getenv("PROCS_OFFSET"))
	warm, _ := time.ParseDuration(os.Getenv("PROCS_WARM"))
	dur, _ := time.ParseDuration(os.Getenv("PROCS_FOR"))
	var take func(key string) (bool, error)
	var closeFn func() error
	switch impl {
	case "allot-redis-rate":
		eng, err := openEngine(c)
		if err != nil {
			return err
		}
		closeFn = eng.Close
		take = func(key string) (bool, error) {
			d, err := eng.Consume(ctx, key, 1)
			return d.Allowed, err
		}
	case "redis-rate":
		lim := redis_rate.NewLimiter(c)
		closeFn = func() error { return nil }
		take = func(key string) (bool, error) {
			r, err := lim.Allow(ctx, ratePrefix+key, rateLimit)
			return err == nil && r.Allowed > 0, err
		}
	default:
		return fmt.Errorf("unknown impl %q", impl)
	}
	seq := keyseq.Generate(dist.keys, dist.zipf)
	names := keyseq.Names(nil, dist.keys)
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	var counting atomic.Bool
	var calls, grants, busy atomic.Int64
	var stop atomic.Bool
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for j := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := off + j*7919
			var n, ok, ns int64
			counted := false
			for !stop.Load() {
				if !counted && counting.Load() {
					counted, n, ok, ns = true, 0, 0, 0
				}
				t0 := time.Now()
				granted, err := take(names[seq[i&(keyseq.Len-1)]])
				ns += int64(time.Since(t0))
				if err != nil {
					once.Do(func() { first = err })
					stop.Store(true)
					break
				}
				n++
				if granted {
					ok++
				}
				i++
			}
			if counted {
				calls.Add(n)
				grants.Add(ok)
				busy.Add(ns)
			}
		}()
	}
	time.Sleep(warm)
	counting.Store(true)
	t0 := time.Now()
	time.Sleep(dur)
	stop.Store(true)
	elapsed := time.Since(t0)
	wg.Wait()
	if first != nil {
		return first
	}
	fmt.Printf("calls %d grants %d busy %g elapsed %g\n", calls.Load(), grants.Load(), float64(busy.Load())/1e9, elapsed.Seconds())
	return closeFn()
}
