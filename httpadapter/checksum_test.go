package httpadapter_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
	"github.com/allot-go/allot/persist"
)

// bodyWriter is a nullWriter that remembers whether the body named the
// checksum.
type bodyWriter struct {
	nullWriter
	checksum bool
}

func (w *bodyWriter) Write(p []byte) (int, error) {
	w.checksum = w.checksum || bytes.Contains(p, []byte("checksum"))
	return len(p), nil
}

// checksumKeys returns n keys made by engine.NewKey.
func checksumKeys(tb testing.TB, n int) []string {
	tb.Helper()
	keys := make([]string, n)
	for i := range keys {
		k, err := engine.NewKey("sk_live")
		if err != nil {
			tb.Fatal(err)
		}
		keys[i] = k
	}
	return keys
}

// mistyped returns key with one character, at a random place, changed to
// another of the base62 alphabet: a key that fails engine.CheckKey.
func mistyped(r *rand.Rand, key string) string {
	const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := []byte(key)
	i := r.IntN(len(b))
	for c := b[i]; b[i] == c || b[i] == '_'; {
		b[i] = base62[r.IntN(len(base62))]
	}
	return string(b)
}

// A flood of requests whose keys fail the checksum, through the middleware
// with WithKeyChecksum(true), never reaches the engine: every one is
// refused with 401 and the checksum's problem detail, the engine counts no
// decision and holds no new key, and the same flood against a closed
// engine (which answers 503 to any request that reaches it) is refused
// with 401 all the same, while without the option it is 503. Half the keys
// are registered keys mistyped, half keys never registered, mistyped.
//
// 100,000 requests (ALLOT_FLOOD_N overrides).
func TestChecksumFloodNeverReachesTheEngine(t *testing.T) {
	n := 100_000
	if s := os.Getenv("ALLOT_FLOOD_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	eng, err := engine.New(engine.WithCounting())
	require.NoError(t, err)
	defer eng.Close()
	valid := checksumKeys(t, 1000)
	for _, k := range valid {
		require.NoError(t, eng.Register(context.Background(), k, engine.Credits(1<<40)))
	}
	strangers := checksumKeys(t, 1000)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

	// flood sends n requests with mistyped keys to h from 4 goroutines and
	// returns how many got each status, and how many 401s named the
	// checksum.
	flood := func(h http.Handler, n int) (codes map[int]int, checksum int) {
		var mu sync.Mutex
		codes = map[int]int{}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), 11))
				req, _ := http.NewRequest(http.MethodGet, "/", nil)
				mine, named := map[int]int{}, 0
				for i := range n / 4 {
					from := valid
					if i%2 == 1 {
						from = strangers
					}
					req.Header = http.Header{"X-Api-Key": {mistyped(r, from[r.IntN(len(from))])}}
					w := &bodyWriter{nullWriter: nullWriter{h: http.Header{}}}
					h.ServeHTTP(w, req)
					mine[w.code]++
					if w.checksum {
						named++
					}
				}
				mu.Lock()
				defer mu.Unlock()
				for c, k := range mine {
					codes[c] += k
				}
				checksum += named
			}()
		}
		wg.Wait()
		return codes, checksum
	}

	h := httpadapter.Middleware(eng, httpadapter.WithKeyChecksum(true))(ok)
	keysBefore, before := eng.Len(), eng.Stats()
	codes, named := flood(h, n)
	after := eng.Stats()
	sent := n / 4 * 4
	require.Equal(t, map[int]int{http.StatusUnauthorized: sent}, codes)
	require.Equal(t, sent, named, "every refusal is the checksum's")
	require.Zero(t, after.UnknownKey, "the engine was never asked")
	require.Equal(t, [4]int64{before.Granted, before.Exhausted, before.Revoked, before.UnknownKey},
		[4]int64{after.Granted, after.Exhausted, after.Revoked, after.UnknownKey}, "no decision")
	require.Equal(t, keysBefore, eng.Len())
	t.Logf("%d requests with mistyped keys: %d refused with 401 for their checksum; decisions counted by the engine: %d, keys %d -> %d",
		sent, codes[http.StatusUnauthorized], after.Granted+after.Exhausted+after.Revoked+after.UnknownKey, keysBefore, eng.Len())

	// The probe: a closed engine answers 503 to every request that
	// reaches it.
	closed, err := engine.New()
	require.NoError(t, err)
	require.NoError(t, closed.Close())
	codes, named = flood(httpadapter.Middleware(closed, httpadapter.WithKeyChecksum(true))(ok), n)
	require.Equal(t, map[int]int{http.StatusUnauthorized: sent}, codes, "none reached the engine")
	require.Equal(t, sent, named)
	codes, _ = flood(httpadapter.Middleware(closed)(ok), 1000)
	require.Equal(t, map[int]int{http.StatusServiceUnavailable: 1000}, codes, "without the option, every one reaches it")
	t.Logf("the same flood against a closed engine: %d of %d refused with 401 before the engine (503 without the option: 1000 of 1000)", sent, sent)

	// The valid keys still work, and are counted.
	for _, k := range valid[:10] {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-API-Key", k)
		w := &nullWriter{h: http.Header{}}
		h.ServeHTTP(w, r)
		require.Equal(t, http.StatusOK, w.code)
	}
	require.Equal(t, before.Granted+10, eng.Stats().Granted)
}

// BenchmarkChecksumFlood measures, in one run:
//
//   - refuse/checksum: a request whose key fails the checksum, refused by
//     WithKeyChecksum(true) before the engine;
//
//   - refuse/unknown: the same request without the option, refused by the
//     engine as an unknown key after a lookup;
//
//   - refuse/unknown-restarted: the same, with and without the option, on
//     an engine restarted from a store, where an unknown key also costs a
//     digest lookup among the recovered keys;
//
//   - valid/flood=false and valid/flood=true: requests with valid keys,
//     with the option, alone and while one goroutine per other core floods
//     the middleware with keys that fail the checksum. Their ratio is the
//     slowdown a flood causes;
//
//   - valid/alternating: the same two, in turns of 2,000 requests (quiet,
//     flood, flood, quiet, ...) timed apart, so that both see the same
//     machine (on a shared machine, runs seconds apart do not): it reports
//     quiet-ns/req, flood-ns/req and their ratio, flood/quiet.
//
//     go test -run=^$ -bench=ChecksumFlood -benchmem -count=5 ./httpadapter
func BenchmarkChecksumFlood(b *testing.B) {
	eng, err := engine.New(engine.WithCounting())
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	valid := checksumKeys(b, 1000)
	for _, k := range valid {
		if err := eng.Register(context.Background(), k, engine.Credits(engine.MaxCredits)); err != nil {
			b.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	bad := make([]string, 4096)
	for i := range bad {
		bad[i] = mistyped(r, valid[i%len(valid)])
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	checked := httpadapter.Middleware(eng, httpadapter.WithKeyChecksum(true))(ok)
	unchecked := httpadapter.Middleware(eng)(ok)
	requests := func(keys []string) []*http.Request {
		rs := make([]*http.Request, len(keys))
		for i, k := range keys {
			rs[i], _ = http.NewRequest(http.MethodGet, "/", nil)
			rs[i].Header.Set("X-API-Key", k)
		}
		return rs
	}
	validReqs, badReqs := requests(valid), requests(bad)

	// loop serves reqs in turn to h, b.N times, each with a reused
	// writer, and checks the status.
	loop := func(b *testing.B, h http.Handler, reqs []*http.Request, want int) {
		w := &nullWriter{h: http.Header{}}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			clear(w.h)
			w.code = 0
			h.ServeHTTP(w, reqs[i%len(reqs)])
			if w.code != want {
				b.Fatalf("status %d, want %d", w.code, want)
			}
		}
	}
	b.Run("refuse/checksum", func(b *testing.B) {
		before := eng.Stats().UnknownKey
		loop(b, checked, badReqs, http.StatusUnauthorized)
		if eng.Stats().UnknownKey != before {
			b.Fatal("a key that fails the checksum reached the engine")
		}
	})
	b.Run("refuse/unknown", func(b *testing.B) { loop(b, unchecked, badReqs, http.StatusUnauthorized) })
	b.Run("refuse/unknown-restarted", func(b *testing.B) {
		// After a restart from a store, an unknown key also costs a
		// digest lookup among the keys recovered and not yet named.
		dir := b.TempDir()
		st, err := persist.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		re, err := engine.New(engine.WithStore(st))
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range valid {
			if err := re.Register(context.Background(), k, engine.Credits(engine.MaxCredits)); err != nil {
				b.Fatal(err)
			}
		}
		if err := re.Close(); err != nil {
			b.Fatal(err)
		}
		if st, err = persist.Open(dir); err != nil {
			b.Fatal(err)
		}
		if re, err = engine.New(engine.WithStore(st)); err != nil {
			b.Fatal(err)
		}
		defer re.Close()
		b.Run("unchecked", func(b *testing.B) { loop(b, httpadapter.Middleware(re)(ok), badReqs, http.StatusUnauthorized) })
		b.Run("checksum", func(b *testing.B) {
			loop(b, httpadapter.Middleware(re, httpadapter.WithKeyChecksum(true))(ok), badReqs, http.StatusUnauthorized)
		})
	})
	for _, flood := range []bool{false, true} {
		b.Run(fmt.Sprintf("valid/flood=%v", flood), func(b *testing.B) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var flooded []int64
			if flood {
				// One flooding goroutine per core but the one the valid
				// requests run on.
				flooded = make([]int64, max(runtime.GOMAXPROCS(0)-1, 1))
				for g := range flooded {
					wg.Add(1)
					go func() {
						defer wg.Done()
						w := &nullWriter{h: http.Header{}}
						for i := g; ; i++ {
							select {
							case <-stop:
								return
							default:
							}
							clear(w.h)
							checked.ServeHTTP(w, badReqs[i%len(badReqs)])
							if w.code != http.StatusUnauthorized {
								panic("a key that fails the checksum was not refused")
							}
							flooded[g]++
						}
					}()
				}
			}
			loop(b, checked, validReqs, http.StatusOK)
			b.StopTimer()
			close(stop)
			wg.Wait()
			if flood {
				var sum int64
				for _, f := range flooded {
					sum += f
				}
				b.ReportMetric(float64(sum)/float64(b.N), "flood-req/op")
			}
		})
	}
	b.Run("valid/alternating", func(b *testing.B) {
		f := startFlood(checked, badReqs, max(runtime.GOMAXPROCS(0)-1, 1))
		defer f.quit()
		w := &nullWriter{h: http.Header{}}
		var spent [2]time.Duration // quiet, flood
		var reqs [2]int
		b.ReportAllocs()
		b.ResetTimer()
		for done, turn := 0, 0; done < b.N; turn++ {
			mode := (turn + turn/2) % 2 // 0, 1, 1, 0, 0, 1, 1, 0, ...
			if mode == 1 {
				f.on()
			}
			n := min(2000, b.N-done)
			start := time.Now()
			for i := range n {
				clear(w.h)
				w.code = 0
				checked.ServeHTTP(w, validReqs[(done+i)%len(validReqs)])
				if w.code != http.StatusOK {
					b.Fatalf("valid key got %d", w.code)
				}
			}
			spent[mode] += time.Since(start)
			reqs[mode] += n
			if mode == 1 {
				f.off()
			}
			done += n
		}
		b.StopTimer()
		if reqs[0] > 0 && reqs[1] > 0 {
			quiet := float64(spent[0].Nanoseconds()) / float64(reqs[0])
			flood := float64(spent[1].Nanoseconds()) / float64(reqs[1])
			b.ReportMetric(quiet, "quiet-ns/req")
			b.ReportMetric(flood, "flood-ns/req")
			b.ReportMetric(flood/quiet, "flood/quiet")
		}
	})
}

// flooder is a set of goroutines that flood a handler with requests while
// on, and wait, without spinning, while off.
type flooder struct {
	running atomic.Bool
	start   []chan struct{}
	stopped chan struct{}
	done    chan struct{}
}

// startFlood starts g goroutines that serve reqs in turn to h, each
// expecting a 401, while the flooder is on. It starts off.
func startFlood(h http.Handler, reqs []*http.Request, g int) *flooder {
	f := &flooder{start: make([]chan struct{}, g), stopped: make(chan struct{}), done: make(chan struct{})}
	for j := range f.start {
		f.start[j] = make(chan struct{})
		go func() {
			w := &nullWriter{h: http.Header{}}
			for i := j; ; {
				select {
				case <-f.done:
					return
				case <-f.start[j]:
				}
				for f.running.Load() {
					clear(w.h)
					h.ServeHTTP(w, reqs[i%len(reqs)])
					if w.code != http.StatusUnauthorized {
						panic("a key that fails the checksum was not refused")
					}
					i++
				}
				f.stopped <- struct{}{}
			}
		}()
	}
	return f
}

func (f *flooder) on() {
	f.running.Store(true)
	for _, c := range f.start {
		c <- struct{}{}
	}
}

// off returns once every goroutine has stopped.
func (f *flooder) off() {
	f.running.Store(false)
	for range f.start {
		<-f.stopped
	}
}

func (f *flooder) quit() { close(f.done) }
