package persist_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
)

// Benchmarks of the store, each beside the memory-only engine in one run:
//
//	go test -run='^$' -bench=. -benchmem -count=5 ./persist   (make bench-persist)
//
// BenchmarkConsume: lease mode against memory-only, one hot key and
// 1,000,000 keys drawn Zipf(1.1). BenchmarkExact: exact mode with 1, 8 and
// 64 callers, reporting ops/s and syncs/s. BenchmarkReopen: opening a store
// of 1,000,000 keys in a fresh process, reporting seconds and peak RSS.

const zipfKeys = 1_000_000

// Built on first use, not at package start: every test and fuzz worker of
// this package would pay for them otherwise.
var (
	benchKeysOnce = sync.OnceValue(func() []string {
		k := make([]string, zipfKeys)
		for i := range k {
			k[i] = "bench-key-" + strconv.Itoa(i)
		}
		return k
	})
	zipfSeqOnce = sync.OnceValue(func() []int32 {
		r := rand.New(rand.NewPCG(3, 4))
		z := rand.NewZipf(r, 1.1, 1, zipfKeys-1)
		s := make([]int32, 1<<20)
		for i := range s {
			s[i] = int32(z.Uint64())
		}
		return s
	})
)

// registerAll registers keys from many goroutines, so that a store
// group-commits them.
func registerAll(b *testing.B, eng *engine.Engine, keys []string, limits ...engine.Limit) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(keys)) {
					return
				}
				if err := eng.Register(ctx, keys[i], limits...); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

var (
	consumeMu   sync.Mutex
	consumeEngs = map[string]*engine.Engine{}
)

func benchEngine(b *testing.B, store, dist string) *engine.Engine {
	consumeMu.Lock()
	defer consumeMu.Unlock()
	id := store + "/" + dist
	if e := consumeEngs[id]; e != nil {
		return e
	}
	var eng *engine.Engine
	var err error
	if store == "memory" {
		eng, err = engine.New()
	} else {
		dir, derr := os.MkdirTemp("", "allot-bench-")
		if derr != nil {
			b.Fatal(derr)
		}
		st, oerr := persist.Open(dir)
		if oerr != nil {
			b.Fatal(oerr)
		}
		eng, err = engine.New(engine.WithStore(st))
	}
	if err != nil {
		b.Fatal(err)
	}
	n := 1
	if dist == "zipf1m" {
		n = zipfKeys
	}
	registerAll(b, eng, benchKeysOnce()[:n], engine.Credits(engine.MaxCredits))
	consumeEngs[id] = eng
	return eng
}

func BenchmarkConsume(b *testing.B) {
	for _, dist := range []string{"hot", "zipf1m"} {
		for _, store := range []string{"memory", "lease"} {
			b.Run("dist="+dist+"/store="+store, func(b *testing.B) {
				eng := benchEngine(b, store, dist)
				benchKeys, zipfSeq := benchKeysOnce(), zipfSeqOnce()
				var off atomic.Uint32
				var denied atomic.Int64
				before := eng.Stats()
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					i := int(off.Add(7919)*104729) % len(zipfSeq)
					for pb.Next() {
						k := 0
						if dist != "hot" {
							k = int(zipfSeq[i])
							i = (i + 1) & (len(zipfSeq) - 1)
						}
						d, err := eng.Consume(ctx, benchKeys[k], 1)
						if err != nil || !d.Allowed {
							denied.Add(1)
						}
					}
				})
				b.StopTimer()
				if denied.Load() != 0 {
					b.Fatalf("%d denied or failed", denied.Load())
				}
				after := eng.Stats()
				b.ReportMetric(float64(after.Rounds-before.Rounds)/b.Elapsed().Seconds(), "syncs/s")
			})
		}
	}
}

func BenchmarkExact(b *testing.B) {
	dir := b.TempDir()
	st, err := persist.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	eng, err := engine.New(engine.WithStore(st), engine.WithLease(engine.LeaseOptions{Exact: true}))
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	const keys = 1000
	benchKeys := benchKeysOnce()
	registerAll(b, eng, benchKeys[:keys], engine.Credits(engine.MaxCredits))
	for _, callers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			before := eng.Stats()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for c := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if d, err := eng.Consume(ctx, benchKeys[c%keys], 1); err != nil || !d.Allowed {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			secs := b.Elapsed().Seconds()
			after := eng.Stats()
			b.ReportMetric(float64(b.N)/secs, "ops/s")
			b.ReportMetric(float64(after.Rounds-before.Rounds)/secs, "syncs/s")
		})
	}
}

// BenchmarkReopen builds a store of 1,000,000 keys, then times opening it in
// a fresh process (TestReopenChild), which reports its own peak RSS.
func BenchmarkReopen(b *testing.B) {
	dir := b.TempDir()
	st, err := persist.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	eng, err := engine.New(engine.WithStore(st))
	if err != nil {
		b.Fatal(err)
	}
	registerAll(b, eng, benchKeysOnce(), engine.Credits(1000), engine.PerWindow(100, time.Hour))
	if err := eng.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		cmd := exec.Command(os.Args[0], "-test.run=^TestReopenChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "ALLOT_REOPEN_DIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		var secs float64
		var keys int
		if _, err := fmt.Sscanf(lastLine(string(out), "reopen "), "reopen %d keys %f s", &keys, &secs); err != nil || keys != zipfKeys {
			b.Fatalf("child said %q (%v)", out, err)
		}
		b.ReportMetric(secs, "open-s")
		b.ReportMetric(float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)/1024, "peak-MiB")
	}
}

func lastLine(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// TestReopenChild opens a store and counts its keys; run by BenchmarkReopen.
func TestReopenChild(t *testing.T) {
	dir := os.Getenv("ALLOT_REOPEN_DIR")
	if dir == "" {
		t.Skip("started by BenchmarkReopen only")
	}
	start := time.Now()
	st, err := persist.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.WithStore(st))
	if err != nil {
		t.Fatal(err)
	}
	secs := time.Since(start).Seconds()
	n := 0
	for _, k := range benchKeysOnce() {
		if _, err := eng.Status(k); err == nil {
			n++
		}
	}
	runtime.KeepAlive(eng)
	fmt.Printf("reopen %d keys %.3f s\n", n, secs)
}
