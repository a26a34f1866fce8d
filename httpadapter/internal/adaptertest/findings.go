package adaptertest

import (
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// Issue 9, finding 4: a request admitted in one window whose handler fails
// after the next window has begun is not refunded into the next window.
func testRefundAcrossWindows(t *testing.T, mk New) {
	clk := NewClock(time.Date(2026, 3, 1, 10, 59, 59, 0, time.UTC))
	eng := NewEngine(t, engine.WithClock(clk.Now))
	register(t, eng, "key", engine.PerWindow(10, time.Hour))
	entered, fail := make(chan struct{}), make(chan struct{})
	h := mk(eng, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-fail
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}), httpadapter.WithClock(clk.Now))
	done := make(chan int, 1)
	go func() { done <- serve(h, get("key", "/slow")).Code }()
	within(t, entered)
	clk.Advance(2 * time.Second) // window 2 begins while the request runs
	ok := 0
	for range 10 {
		if serve(h, get("key", "/")).Code == http.StatusOK {
			ok++
		}
	}
	require.Equal(t, 10, ok, "window 2 serves its quota")
	close(fail)
	assert.Equal(t, http.StatusInternalServerError, within(t, done))
	assert.Equal(t, http.StatusTooManyRequests, serve(h, get("key", "/")).Code, "window 2 serves 10, not 11")
}

// Issue 9, finding 11: the RateLimit field of each response carries its own
// decision's r, not a second read's. With 64 requests in parallel on one
// key, each grant leaves a different balance, so the r values of all the
// admitted responses are exactly 0 .. quota-1, each once; and each is the
// Remaining of the Decision the request's handler got from DecisionFrom
// (which the app answers as its body).
func testFieldsMatchDecision(t *testing.T, mk New) {
	const goroutines, each = 64, 60
	const quota = goroutines * each
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(quota))
	h := mk(eng, &decisionApp{}, httpadapter.WithDecisionContext(true))
	var mu sync.Mutex
	seen := make(map[int64]int, quota)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				rec := serve(h, get("key", "/"))
				if rec.Code != http.StatusOK {
					t.Errorf("status %d", rec.Code)
					return
				}
				_, items := CheckFields(t, rec.Header())
				r := items[0].Params["r"]
				if body := rec.Body.String(); body != strconv.FormatInt(r, 10) {
					t.Errorf("RateLimit r=%d, the handler's Decision.Remaining %s", r, body)
				}
				mu.Lock()
				seen[r]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, quota, "every response's r is its own")
	for r := range int64(quota) {
		require.Equal(t, 1, seen[r], "r=%d", r)
	}
}
