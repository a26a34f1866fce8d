package httpadapter_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
	"github.com/allot-go/allot/persist"
	"github.com/stretchr/testify/require"
)

// nullWriter is the cheapest ResponseWriter: the flood measures the
// middleware and the engine, not a recorder.
type nullWriter struct {
	h    http.Header
	code int
}

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nullWriter) WriteHeader(code int)        { w.code = code }

func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A flood of requests with random unknown keys creates no engine state: the
// engine holds as many keys after as before, and the heap does not grow with
// the number of requests. It runs against an engine restarted from a store,
// where an unknown key also costs a digest lookup among recovered keys.
//
// 1,000,000 requests without the race detector, 100,000 with it
// (ALLOT_FLOOD_N overrides).
func TestUnknownKeyFloodCreatesNoState(t *testing.T) {
	n := 1_000_000
	if raceEnabled {
		n = 100_000
	}
	if s := os.Getenv("ALLOT_FLOOD_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	for i := range 1000 {
		require.NoError(t, eng.Register(context.Background(), "valid-"+strconv.Itoa(i), engine.Credits(1<<40)))
	}
	require.NoError(t, eng.Close())
	st, err = persist.Open(dir)
	require.NoError(t, err)
	eng, err = engine.New(engine.WithStore(st))
	require.NoError(t, err)
	defer eng.Close()
	// Half the valid keys are used once (moved under their raw key), half
	// stay recovered-only.
	h := httpadapter.Middleware(eng)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	serve := func(key string) int {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header = http.Header{"X-Api-Key": {key}}
		w := &nullWriter{h: http.Header{}}
		h.ServeHTTP(w, r)
		return w.code
	}
	for i := range 500 {
		require.Equal(t, http.StatusOK, serve("valid-"+strconv.Itoa(i)))
	}
	keysBefore := eng.Len()
	heapBefore := heapNow()

	var wg sync.WaitGroup
	codes := make([]map[int]int, 4)
	for g := range codes {
		codes[g] = map[int]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range n / len(codes) {
				codes[g][serve(fmt.Sprintf("sk_%016x%016x", r.Uint64(), r.Uint64()))]++
			}
		}()
	}
	wg.Wait()
	heapAfter := heapNow()
	unauthorized := 0
	for _, c := range codes {
		unauthorized += c[http.StatusUnauthorized]
	}
	require.Equal(t, n/len(codes)*len(codes), unauthorized, "every unknown key is refused")
	require.Equal(t, keysBefore, eng.Len(), "no key was created")
	growth := int64(heapAfter) - int64(heapBefore)
	t.Logf("%d requests with unknown keys: %d refused, keys %d -> %d, heap %+d bytes", n, unauthorized, keysBefore, eng.Len(), growth)
	require.Less(t, growth, int64(1<<20), "the heap grew with the flood")
	// The valid keys still work, the recovered-only ones too.
	require.Equal(t, http.StatusOK, serve("valid-1"))
	require.Equal(t, http.StatusOK, serve("valid-999"))
}

// BenchmarkFlood measures valid-key requests alone and while other
// goroutines flood the middleware with unknown keys, in one run:
//
//	go test -run=^$ -bench=Flood -benchmem ./httpadapter
func BenchmarkFlood(b *testing.B) {
	eng, err := engine.New()
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	for i := range 1000 {
		if err := eng.Register(context.Background(), "valid-"+strconv.Itoa(i), engine.Credits(1<<50)); err != nil {
			b.Fatal(err)
		}
	}
	h := httpadapter.Middleware(eng)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	valid := make([]*http.Request, 1000)
	for i := range valid {
		valid[i], _ = http.NewRequest(http.MethodGet, "/", nil)
		valid[i].Header.Set("X-API-Key", "valid-"+strconv.Itoa(i))
	}
	for _, flood := range []bool{false, true} {
		b.Run(fmt.Sprintf("flood=%v", flood), func(b *testing.B) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if flood {
				// One flooding goroutine per core but the one the valid
				// requests run on: the flood competes for the engine, not
				// for a CPU the measured loop would otherwise have.
				for g := range max(runtime.GOMAXPROCS(0)-1, 1) {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r := rand.New(rand.NewPCG(uint64(g), 1))
						req, _ := http.NewRequest(http.MethodGet, "/", nil)
						for {
							select {
							case <-stop:
								return
							default:
							}
							req.Header = http.Header{"X-Api-Key": {fmt.Sprintf("sk_%016x", r.Uint64())}}
							h.ServeHTTP(&nullWriter{h: http.Header{}}, req)
						}
					}()
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				w := &nullWriter{h: http.Header{}}
				h.ServeHTTP(w, valid[i%len(valid)])
				if w.code != http.StatusOK {
					b.Fatalf("valid key got %d", w.code)
				}
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
		})
	}
}
