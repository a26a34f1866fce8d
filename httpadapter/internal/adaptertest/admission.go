package adaptertest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// 500 clients race for 100 credits through a real server: exactly 100 get
// 200, the others 429 without Retry-After (credits never refill).
func testConcurrentCredits(t *testing.T, mk New) {
	const clients, credits = 500, 100
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(credits))
	app := &ok{}
	srv := httptest.NewServer(mk(eng, app))
	defer srv.Close()
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	// No client timeout: the server is local and always answers, and a
	// timeout could only fail the test on a slow machine.
	client := &http.Client{Transport: tr}

	var wg sync.WaitGroup
	start := make(chan struct{})
	codes := make([]int, clients)
	headers := make([]http.Header, clients)
	bodies := make([][]byte, clients)
	errs := make([]error, clients)
	for i := range clients {
		wg.Go(func() {
			<-start
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
			if err != nil {
				errs[i] = err
				return
			}
			req.Header.Set("X-API-Key", "key")
			resp, err := client.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			bodies[i], errs[i] = io.ReadAll(resp.Body)
			codes[i], headers[i] = resp.StatusCode, resp.Header
		})
	}
	close(start)
	wg.Wait()

	count := map[int]int{}
	for i := range clients {
		require.NoError(t, errs[i], "client %d", i)
		count[codes[i]]++
		_, limits := CheckFields(t, headers[i])
		require.Len(t, limits, 1)
		assert.Equal(t, "credits", limits[0].Name)
		assert.Empty(t, headers[i].Get("Retry-After"), "credits never refill")
		if codes[i] == http.StatusTooManyRequests {
			p := CheckProblem(t, http.StatusTooManyRequests, headers[i], bodies[i])
			assert.Equal(t, []string{"credits"}, p.Violated)
			assert.Equal(t, int64(0), limits[0].Params["r"])
		}
	}
	assert.Equal(t, map[int]int{http.StatusOK: credits, http.StatusTooManyRequests: clients - credits}, count)
	assert.Equal(t, int64(credits), app.calls.Load(), "the handler runs only for granted requests")
	assert.Equal(t, int64(0), remaining(t, eng, "key"))
}

// WithCost charges several units; a cost below 1 is a 500.
func testCost(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(12))
	app := &ok{}
	h := mk(eng, app, httpadapter.WithCost(func(r *http.Request) int64 {
		n, _ := strconv.ParseInt(r.Header.Get("X-Cost"), 10, 64)
		return n
	}))
	req := func(cost string) *http.Request {
		r := get("key", "/")
		r.Header.Set("X-Cost", cost)
		return r
	}
	for _, r := range []string{`"credits";r=7`, `"credits";r=2`} {
		rec := serve(h, req("5"))
		require.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, r, rec.Header().Get("RateLimit"))
	}
	check429(t, serve(h, req("5")), "", "credits")
	require.Equal(t, http.StatusOK, serve(h, req("2")).Code)
	for _, c := range []string{"0", "-3", ""} {
		rec := serve(h, req(c))
		require.Equal(t, http.StatusInternalServerError, rec.Code, c)
		CheckProblem(t, http.StatusInternalServerError, rec.Header(), rec.Body.Bytes())
	}
	assert.Equal(t, int64(3), app.calls.Load())
}
