// Package adaptertest is the test table that every adapter of the quota
// middleware must pass: the net/http middleware of package httpadapter and
// the Gin middleware of package ginadapter run the very same cases, each
// through a constructor of its own.
package adaptertest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
	"github.com/allot-go/allot/httpadapter/internal/sfv"
)

// New builds the server under test: app behind the adapter's middleware for
// eng, configured by opts. app is a plain http.Handler; an adapter for a
// framework mounts it as a catch-all route.
type New func(eng *engine.Engine, app http.Handler, opts ...httpadapter.Option) http.Handler

// Run runs every case against the adapter that mk builds.
func Run(t *testing.T, mk New) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, mk) })
	}
}

var cases = []struct {
	name string
	run  func(*testing.T, New)
}{
	{"ConcurrentCredits", testConcurrentCredits},
	{"WindowFields", testWindowFields},
	{"RateFields", testRateFields},
	{"MultipleLimits", testMultipleLimits},
	{"LegacyFields", testLegacyFields},
	{"FieldsBeforeHandler", testFieldsBeforeHandler},
	{"Refunds", testRefunds},
	{"RefundIf", testRefundIf},
	{"Flush", testFlush},
	{"Hijack", testHijack},
	{"RevocationDrain", testRevocationDrain},
	{"Unauthorized", testUnauthorized},
	{"QueryKey", testQueryKey},
	{"KeyFunc", testKeyFunc},
	{"Cost", testCost},
	{"EngineFailure", testEngineFailure},
	{"NilEngine", testNilEngine},
}

// testNilEngine: a nil engine is a misconfiguration; every request is
// refused with 503, never a panic, and the handler never runs.
func testNilEngine(t *testing.T, mk New) {
	app := &ok{}
	rec := serve(mk(nil, app), get("key", "/"))
	if rec.Code != http.StatusServiceUnavailable || app.calls.Load() != 0 {
		t.Fatalf("nil engine: status %d, handler ran %d times", rec.Code, app.calls.Load())
	}
}

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock stopped at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set sets the clock's time.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// NewEngine returns an engine closed at the end of the test.
func NewEngine(t *testing.T, opts ...engine.Option) *engine.Engine {
	t.Helper()
	eng, err := engine.New(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = eng.Close() })
	return eng
}

func register(t *testing.T, eng *engine.Engine, key string, limits ...engine.Limit) {
	t.Helper()
	require.NoError(t, eng.Register(context.Background(), key, limits...))
}

// get returns a GET request for path with key in X-API-Key (none if "").
func get(key, path string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if key != "" {
		r.Header.Set("X-API-Key", key)
	}
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// ok is an app that answers 200 "ok" and counts its calls.
type ok struct{ calls atomic.Int64 }

func (a *ok) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	a.calls.Add(1)
	_, _ = io.WriteString(w, "ok")
}

func remaining(t *testing.T, eng *engine.Engine, key string) int64 {
	t.Helper()
	st, err := eng.Status(key)
	require.NoError(t, err)
	return st.Limits[0].Remaining
}

// Item is a parsed member of RateLimit or RateLimit-Policy.
type Item struct {
	Name   string
	Params map[string]int64
	Keys   []string
}

// CheckFields parses the RateLimit-Policy and RateLimit fields of h as
// RFC 9651 Lists and checks their shape: every member a String item whose
// parameters are non-negative Integers, q in every policy, r in every
// RateLimit item, the same names in the same order in both. It returns the
// items; both are nil if h has neither field.
func CheckFields(t *testing.T, h http.Header) (policy, limits []Item) {
	t.Helper()
	pv, rv := h.Values("RateLimit-Policy"), h.Values("RateLimit")
	if len(pv) == 0 && len(rv) == 0 {
		return nil, nil
	}
	policy = parseItems(t, "RateLimit-Policy", pv, "q")
	limits = parseItems(t, "RateLimit", rv, "r")
	require.Equal(t, len(policy), len(limits), "one item per limit in both fields")
	for i := range policy {
		assert.Equal(t, policy[i].Name, limits[i].Name, "item %d", i)
		for _, k := range policy[i].Keys {
			assert.Contains(t, []string{"q", "w"}, k, "policy parameters")
		}
		for _, k := range limits[i].Keys {
			assert.Contains(t, []string{"r", "t"}, k, "RateLimit parameters")
		}
	}
	return policy, limits
}

func parseItems(t *testing.T, field string, lines []string, required string) []Item {
	t.Helper()
	require.NotEmpty(t, lines, "%s missing", field)
	ms, err := sfv.ParseList(lines...)
	require.NoError(t, err, "%s: %q", field, lines)
	require.NotEmpty(t, ms, "%s is an empty list", field)
	items := make([]Item, len(ms))
	for i, m := range ms {
		require.False(t, m.Inner, "%s member %d is an inner list", field, i)
		name, isStr := m.Value.(string)
		require.True(t, isStr, "%s member %d: %#v is not a String", field, i, m.Value)
		it := Item{Name: name, Params: map[string]int64{}, Keys: m.Params.Keys()}
		for _, p := range m.Params {
			v, isInt := p.Value.(int64)
			require.True(t, isInt, "%s member %d: parameter %s=%#v is not an Integer", field, i, p.Key, p.Value)
			require.GreaterOrEqual(t, v, int64(0), "%s member %d: %s", field, i, p.Key)
			it.Params[p.Key] = v
		}
		_, has := it.Params[required]
		require.True(t, has, "%s member %d lacks %s", field, i, required)
		items[i] = it
	}
	return items
}

// Problem is a decoded problem+json body.
type Problem struct {
	Type     string   `json:"type"`
	Title    string   `json:"title"`
	Status   int      `json:"status"`
	Detail   string   `json:"detail"`
	Violated []string `json:"violated-policies"`
}

// CheckProblem checks that a refusal is an RFC 9457 problem with the given
// status, and decodes it.
func CheckProblem(t *testing.T, status int, h http.Header, body []byte) Problem {
	t.Helper()
	assert.Equal(t, "application/problem+json", h.Get("Content-Type"))
	var p Problem
	require.NoError(t, json.Unmarshal(body, &p), "body %s", body)
	assert.Equal(t, status, p.Status)
	assert.NotEmpty(t, p.Type)
	assert.NotEmpty(t, p.Title)
	assert.NotEmpty(t, p.Detail)
	if status == http.StatusTooManyRequests {
		assert.Equal(t, "https://iana.org/assignments/http-problem-types#quota-exceeded", p.Type)
		assert.NotEmpty(t, p.Violated)
	} else {
		assert.Equal(t, "about:blank", p.Type)
		assert.Equal(t, http.StatusText(status), p.Title)
	}
	return p
}

// check429 checks a 429 recorded in-process.
func check429(t *testing.T, rec *httptest.ResponseRecorder, retryAfter string, violated ...string) {
	t.Helper()
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	p := CheckProblem(t, http.StatusTooManyRequests, rec.Header(), rec.Body.Bytes())
	assert.Equal(t, violated, p.Violated)
	assert.Equal(t, retryAfter, rec.Header().Get("Retry-After"))
	CheckFields(t, rec.Header())
}

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
	client := &http.Client{Transport: tr, Timeout: time.Minute}

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

// An hourly window at fixed instants: exact fields and Retry-After.
func testWindowFields(t *testing.T, mk New) {
	clock := NewClock(time.Date(2026, 1, 1, 10, 59, 30, 0, time.UTC))
	eng := NewEngine(t, engine.WithClock(clock.Now))
	register(t, eng, "key", engine.PerWindow(2, time.Hour))
	app := &ok{}
	h := mk(eng, app)

	for _, r := range []string{`"hour";r=1;t=30`, `"hour";r=0;t=30`} {
		rec := serve(h, get("key", "/"))
		require.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, "ok", rec.Body.String())
		assert.Equal(t, `"hour";q=2;w=3600`, rec.Header().Get("RateLimit-Policy"))
		assert.Equal(t, r, rec.Header().Get("RateLimit"))
		assert.Empty(t, rec.Header().Get("Retry-After"))
		assert.Empty(t, rec.Header().Get("X-RateLimit-Limit"), "legacy fields are off by default")
		CheckFields(t, rec.Header())
	}

	rec := serve(h, get("key", "/"))
	check429(t, rec, "30", "hour")
	assert.Equal(t, `"hour";q=2;w=3600`, rec.Header().Get("RateLimit-Policy"))
	assert.Equal(t, `"hour";r=0;t=30`, rec.Header().Get("RateLimit"))

	clock.Set(time.Date(2026, 1, 1, 10, 59, 59, 500_000_000, time.UTC))
	rec = serve(h, get("key", "/"))
	check429(t, rec, "1", "hour") // half a second, rounded up
	assert.Equal(t, `"hour";r=0;t=1`, rec.Header().Get("RateLimit"))

	clock.Set(time.Date(2026, 1, 1, 11, 0, 0, 0, time.UTC))
	rec = serve(h, get("key", "/"))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, `"hour";r=1;t=3600`, rec.Header().Get("RateLimit"))
	assert.Equal(t, int64(3), app.calls.Load())
}

// Rate limits: w is the time to refill a burst and Retry-After the exact
// wait, both in seconds rounded up.
func testRateFields(t *testing.T, mk New) {
	t0 := time.Unix(1_700_000_000, 0)
	clock := NewClock(t0)
	eng := NewEngine(t, engine.WithClock(clock.Now))
	// 2 per 3 s: one unit every 1.5 s, a burst of 1.
	register(t, eng, "slow", engine.Rate(2, 3*time.Second, 1))
	// 3 per second: one unit every 333333334 ns, a burst of 5 (1.67 s).
	register(t, eng, "fast", engine.Rate(3, time.Second, 5))
	h := mk(eng, &ok{})

	rec := serve(h, get("slow", "/"))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, `"rate";q=1;w=2`, rec.Header().Get("RateLimit-Policy"))
	assert.Equal(t, `"rate";r=0;t=2`, rec.Header().Get("RateLimit"))
	CheckFields(t, rec.Header())

	rec = serve(h, get("slow", "/"))
	check429(t, rec, "2", "rate") // 1.5 s
	clock.Advance(600 * time.Millisecond)
	rec = serve(h, get("slow", "/"))
	check429(t, rec, "1", "rate") // 0.9 s
	assert.Equal(t, `"rate";r=0;t=1`, rec.Header().Get("RateLimit"))
	clock.Advance(900 * time.Millisecond)
	rec = serve(h, get("slow", "/"))
	require.Equal(t, http.StatusOK, rec.Code)

	clock.Set(t0)
	for i := range 5 {
		rec = serve(h, get("fast", "/"))
		require.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, `"rate";q=5;w=2`, rec.Header().Get("RateLimit-Policy"))
		// After i+1 units the bucket is full again in (i+1) intervals.
		reset := (time.Duration(i+1)*333333334 + time.Second - 1) / time.Second
		assert.Equal(t, fmt.Sprintf(`"rate";r=%d;t=%d`, 4-i, reset), rec.Header().Get("RateLimit"))
	}
	rec = serve(h, get("fast", "/"))
	check429(t, rec, "1", "rate") // one interval: 333333334 ns
	clock.Advance(333333333 * time.Nanosecond)
	check429(t, serve(h, get("fast", "/")), "1", "rate") // 1 ns left
	clock.Advance(time.Nanosecond)
	require.Equal(t, http.StatusOK, serve(h, get("fast", "/")).Code)
}

// A key with several limits: one item per limit, in registration order;
// no w for Credits and PerMonth, no t for Credits; the 429 names the limit
// that refused.
func testMultipleLimits(t *testing.T, mk New) {
	clock := NewClock(time.Date(2026, 2, 27, 12, 0, 0, 0, time.UTC))
	eng := NewEngine(t, engine.WithClock(clock.Now))
	register(t, eng, "key", engine.Credits(1000), engine.PerMonth(3), engine.Rate(10, time.Second, 5).Named("burst"))
	h := mk(eng, &ok{})

	const toMarch = 36 * 60 * 60 // Feb 27 12:00 to Mar 1 00:00
	for i := range 3 {
		rec := serve(h, get("key", "/"))
		require.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, `"credits";q=1000, "month";q=3, "burst";q=5;w=1`, rec.Header().Get("RateLimit-Policy"))
		assert.Equal(t, fmt.Sprintf(`"credits";r=%d, "month";r=%d;t=%d, "burst";r=%d;t=1`, 999-i, 2-i, toMarch, 4-i),
			rec.Header().Get("RateLimit"))
		policy, _ := CheckFields(t, rec.Header())
		assert.Equal(t, []string{"q"}, policy[0].Keys)
		assert.Equal(t, []string{"q"}, policy[1].Keys)
	}
	rec := serve(h, get("key", "/"))
	check429(t, rec, strconv.Itoa(toMarch), "month")
	assert.Equal(t, fmt.Sprintf(`"credits";r=997, "month";r=0;t=%d, "burst";r=2;t=1`, toMarch), rec.Header().Get("RateLimit"))
}

// WithLegacyHeaders adds the X-RateLimit-* fields of the tightest limit,
// with the reset instant from the middleware's clock.
func testLegacyFields(t *testing.T, mk New) {
	clock := NewClock(time.Date(2026, 3, 1, 12, 0, 20, 250_000_000, time.UTC))
	eng := NewEngine(t, engine.WithClock(clock.Now))
	register(t, eng, "win", engine.PerWindow(10, time.Minute))
	register(t, eng, "cred", engine.Credits(1))
	h := mk(eng, &ok{}, httpadapter.WithLegacyHeaders(true), httpadapter.WithClock(clock.Now))

	rec := serve(h, get("win", "/"))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "10", rec.Header().Get("X-RateLimit-Limit"))
	assert.Equal(t, "9", rec.Header().Get("X-RateLimit-Remaining"))
	reset := time.Date(2026, 3, 1, 12, 1, 0, 0, time.UTC).Unix()
	assert.Equal(t, strconv.FormatInt(reset, 10), rec.Header().Get("X-RateLimit-Reset"))
	CheckFields(t, rec.Header())

	rec = serve(h, get("cred", "/"))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "1", rec.Header().Get("X-RateLimit-Limit"))
	assert.Equal(t, "0", rec.Header().Get("X-RateLimit-Remaining"))
	assert.Empty(t, rec.Header().Values("X-RateLimit-Reset"), "credits never reset")

	rec = serve(h, get("cred", "/"))
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "0", rec.Header().Get("X-RateLimit-Remaining"))
}

// The fields are on the response before the handler runs, also when it
// streams, and whatever it answers.
func testFieldsBeforeHandler(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.PerWindow(100, time.Hour))
	var seen atomic.Value
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(w.Header().Get("RateLimit"))
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, "streamed")
		http.NewResponseController(w).Flush()
	})
	srv := httptest.NewServer(mk(eng, app))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	req.Header.Set("Authorization", "Bearer key")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	assert.Equal(t, http.StatusTeapot, resp.StatusCode)
	assert.NotEmpty(t, seen.Load())
	assert.Equal(t, seen.Load(), resp.Header.Get("RateLimit"))
	CheckFields(t, resp.Header)
}

// statusApp answers the status in the path: /500, /404, /panic, /none
// (writes nothing), /write (writes without WriteHeader).
var statusApp = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch p := strings.TrimPrefix(r.URL.Path, "/"); p {
	case "panic":
		panic("handler panic")
	case "none":
	case "write":
		_, _ = io.WriteString(w, "body")
	default:
		code, _ := strconv.Atoi(p)
		w.WriteHeader(code)
	}
})

// By default, 5xx and panics are refunded, other statuses are not.
func testRefunds(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	h := mk(eng, statusApp)

	for _, c := range []struct {
		path   string
		status int
		left   int64
	}{
		{"/500", 500, 10},
		{"/503", 503, 10},
		{"/404", 404, 9},
		{"/400", 400, 8},
		{"/200", 200, 7},
		{"/none", 200, 6},
		{"/write", 200, 5},
	} {
		rec := serve(h, get("key", c.path))
		assert.Equal(t, c.status, rec.Code, c.path)
		assert.Equal(t, c.left, remaining(t, eng, "key"), c.path)
		assert.Equal(t, int64(0), eng.InFlight("key"), c.path)
	}

	assert.PanicsWithValue(t, "handler panic", func() { serve(h, get("key", "/panic")) },
		"the panic goes on after the refund")
	assert.Equal(t, int64(5), remaining(t, eng, "key"), "a panic is refunded")
	assert.Equal(t, int64(0), eng.InFlight("key"), "a panicking request is done")
}

// WithRefundIf replaces the predicate; it sees 200 for a handler that wrote
// nothing and 500 for a panic.
func testRefundIf(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	var mu sync.Mutex
	var seen []int
	h := mk(eng, statusApp, httpadapter.WithRefundIf(func(status int) bool {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, status)
		return status == http.StatusNotFound
	}))

	serve(h, get("key", "/404"))
	assert.Equal(t, int64(10), remaining(t, eng, "key"))
	serve(h, get("key", "/500"))
	assert.Equal(t, int64(9), remaining(t, eng, "key"))
	serve(h, get("key", "/none"))
	serve(h, get("key", "/write"))
	assert.Panics(t, func() { serve(h, get("key", "/panic")) })
	assert.Equal(t, int64(6), remaining(t, eng, "key"))
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []int{404, 500, 200, 200, 500}, seen)
}

// Flushing works through the middleware: in-process through http.Flusher
// and http.ResponseController, and on a real server, where the client reads
// the first chunk while the handler is still blocked.
func testFlush(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.PerWindow(100, time.Hour))
	release := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		switch r.URL.Path {
		case "/iface":
			f, ok := w.(http.Flusher)
			if !ok {
				http.Error(w, "no flusher", http.StatusInternalServerError)
				return
			}
			f.Flush()
		default:
			if err := http.NewResponseController(w).Flush(); err != nil {
				_, _ = io.WriteString(w, err.Error())
				return
			}
		}
		if r.URL.Path == "/stream" {
			<-release
			_, _ = io.WriteString(w, "second\n")
		}
	})
	h := mk(eng, app)
	for _, p := range []string{"/iface", "/rc"} {
		rec := serve(h, get("key", p))
		assert.True(t, rec.Flushed, p)
		assert.Equal(t, "first\n", rec.Body.String(), p)
	}

	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/stream", nil)
	req.Header.Set("X-API-Key", "key")
	resp, err := srv.Client().Do(req)
	if err != nil {
		close(release)
		require.NoError(t, err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	close(release)
	require.NoError(t, err)
	assert.Equal(t, "first\n", line)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "second\n", string(rest))
}

// Hijacking works through the middleware, with http.Hijacker and with
// http.ResponseController; a hijacked request is not refunded and is done.
func testHijack(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var hijack func() (netConn io.ReadWriteCloser, buf *bufio.ReadWriter, err error)
		if r.URL.Path == "/iface" {
			hj, ok := w.(http.Hijacker)
			if !ok {
				http.Error(w, "no hijacker", http.StatusInternalServerError)
				return
			}
			hijack = func() (io.ReadWriteCloser, *bufio.ReadWriter, error) { return hj.Hijack() }
		} else {
			hijack = func() (io.ReadWriteCloser, *bufio.ReadWriter, error) {
				return http.NewResponseController(w).Hijack()
			}
		}
		conn, buf, err := hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = buf.Flush()
	})
	srv := httptest.NewServer(mk(eng, app))
	defer srv.Close()
	for i, p := range []string{"/iface", "/rc"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+p, nil)
		req.Header.Set("X-API-Key", "key")
		resp, err := srv.Client().Do(req)
		require.NoError(t, err, p)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err, p)
		assert.Equal(t, http.StatusOK, resp.StatusCode, p)
		assert.Equal(t, "hijacked", string(body), p)
		assert.Equal(t, int64(9-i), remaining(t, eng, "key"), p)
	}
	// Both requests are done: RevokeAndWait returns at once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, eng.RevokeAndWait(ctx, "key"))
}

// A request blocked in its handler keeps RevokeAndWait waiting; once it
// returns, RevokeAndWait returns nil, and later requests get 401.
func testRevocationDrain(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	entered, release := make(chan struct{}), make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	h := mk(eng, app)

	served := make(chan *httptest.ResponseRecorder)
	go func() { served <- serve(h, get("key", "/block")) }()
	<-entered
	defer func() {
		select {
		case <-release:
		default:
			close(release) // on failure, free the handler
		}
	}()
	require.Equal(t, int64(1), eng.InFlight("key"))

	waited := make(chan error, 1)
	go func() { waited <- eng.RevokeAndWait(context.Background(), "key") }()

	// A bounded wait shows the request holds revocation back...
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := eng.RevokeAndWait(ctx, "key")
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	// ...and so does the unbounded one, which has had as long.
	select {
	case err := <-waited:
		t.Fatalf("RevokeAndWait returned %v while a request was in flight", err)
	default:
	}

	// Requests arriving now are refused: the key is revoked.
	rec := serve(h, get("key", "/"))
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	CheckProblem(t, http.StatusUnauthorized, rec.Header(), rec.Body.Bytes())

	close(release)
	rec = within(t, served)
	assert.Equal(t, http.StatusOK, rec.Code, "an admitted request completes")
	assert.Equal(t, "done", rec.Body.String())
	require.NoError(t, within(t, waited), "RevokeAndWait returns once the request is done")
	assert.Equal(t, int64(0), eng.InFlight("key"))

	rec = serve(h, get("key", "/"))
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	assert.Contains(t, rec.Header().Get("WWW-Authenticate"), `error="invalid_token"`)
}

// within receives from c, failing the test instead of hanging if nothing
// comes in a long while (a bound for failures, not a timing assumption).
func within[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case v := <-c:
		return v
	case <-timer.C:
		require.FailNow(t, "nothing received in 30 s")
		panic("unreachable")
	}
}

// 401 for a missing, unknown, revoked, too long or malformed key, with a
// challenge and a problem body, and without running the handler.
func testUnauthorized(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	register(t, eng, "gone", engine.Credits(10))
	require.NoError(t, eng.Revoke(context.Background(), "gone"))
	app := &ok{}
	h := mk(eng, app)
	long := strings.Repeat("k", engine.MaxKeyLen+1)

	for _, c := range []struct {
		name      string
		header    http.Header
		challenge string
	}{
		{"missing", http.Header{}, `Bearer realm="api"`},
		{"empty header", http.Header{"X-Api-Key": {""}}, `Bearer realm="api"`},
		{"other scheme", http.Header{"Authorization": {"Basic a2V5Og=="}}, `Bearer realm="api"`},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, `Bearer realm="api"`},
		{"unknown", http.Header{"X-Api-Key": {"nope"}}, `Bearer realm="api", error="invalid_token"`},
		{"unknown bearer", http.Header{"Authorization": {"Bearer nope"}}, `Bearer realm="api", error="invalid_token"`},
		{"revoked", http.Header{"X-Api-Key": {"gone"}}, `Bearer realm="api", error="invalid_token"`},
		{"too long", http.Header{"X-Api-Key": {long}}, `Bearer realm="api", error="invalid_token"`},
		{"too long bearer", http.Header{"Authorization": {"Bearer " + long}}, `Bearer realm="api", error="invalid_token"`},
	} {
		r := get("", "/")
		r.Header = c.header
		rec := serve(h, r)
		require.Equal(t, http.StatusUnauthorized, rec.Code, c.name)
		assert.Equal(t, c.challenge, rec.Header().Get("WWW-Authenticate"), c.name)
		CheckProblem(t, http.StatusUnauthorized, rec.Header(), rec.Body.Bytes())
		assert.Empty(t, rec.Header().Values("RateLimit"), c.name)
		assert.Empty(t, rec.Header().Values("RateLimit-Policy"), c.name)
	}
	assert.Equal(t, int64(0), app.calls.Load(), "the handler never runs for a refused request")

	// Accepted forms: either header, any case of the scheme; X-API-Key wins.
	for _, hd := range []http.Header{
		{"X-Api-Key": {"key"}},
		{"Authorization": {"Bearer key"}},
		{"Authorization": {"bearer   key"}},
		{"X-Api-Key": {"key"}, "Authorization": {"Bearer nope"}},
	} {
		r := get("", "/")
		r.Header = hd
		assert.Equal(t, http.StatusOK, serve(h, r).Code, "%v", hd)
	}
	assert.Equal(t, int64(6), remaining(t, eng, "key"))

	h = mk(eng, app, httpadapter.WithRealm(`my "api"`))
	rec := serve(h, get("", "/"))
	assert.Equal(t, `Bearer realm="my \"api\""`, rec.Header().Get("WWW-Authenticate"))
}

// A key in the query is ignored unless WithQueryKey enables it, and then
// only when no header carries one.
func testQueryKey(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	register(t, eng, "a b+c", engine.Credits(10))
	app := &ok{}

	h := mk(eng, app)
	rec := serve(h, get("", "/?api_key=key"))
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
	assert.Equal(t, `Bearer realm="api"`, rec.Header().Get("WWW-Authenticate"))
	assert.Equal(t, int64(0), app.calls.Load())

	h = mk(eng, app, httpadapter.WithQueryKey("api_key"))
	for _, c := range []struct {
		path   string
		header string
		status int
	}{
		{"/?api_key=key", "", http.StatusOK},
		{"/?x=1&api_key=key&api_key=nope", "", http.StatusOK},
		{"/?api%5Fkey=key", "", http.StatusOK},
		{"/?api_key=a+b%2Bc", "", http.StatusOK},
		{"/?api_key=nope", "key", http.StatusOK}, // the header wins
		{"/?api_key=nope", "", http.StatusUnauthorized},
		{"/?api_key=%zz", "", http.StatusUnauthorized},
		{"/?apikey=key", "", http.StatusUnauthorized},
	} {
		rec := serve(h, get(c.header, c.path))
		assert.Equal(t, c.status, rec.Code, c.path)
	}
	assert.Equal(t, int64(6), remaining(t, eng, "key"))
	assert.Equal(t, int64(9), remaining(t, eng, "a b+c"))
}

// WithKeyFunc replaces the extraction; its error is a 401.
func testKeyFunc(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	app := &ok{}
	h := mk(eng, app, httpadapter.WithKeyFunc(func(r *http.Request) (string, error) {
		if r.Header.Get("X-Bad") != "" {
			return "", errors.New("allot: bad token")
		}
		return r.Header.Get("X-Token"), nil
	}))
	r := get("key", "/") // X-API-Key is not read any more
	assert.Equal(t, http.StatusUnauthorized, serve(h, r).Code)
	r.Header.Set("X-Token", "key")
	assert.Equal(t, http.StatusOK, serve(h, r).Code)
	r.Header.Set("X-Bad", "1")
	rec := serve(h, r)
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
	assert.Contains(t, rec.Header().Get("WWW-Authenticate"), "invalid_token")
	CheckProblem(t, http.StatusUnauthorized, rec.Header(), rec.Body.Bytes())
	assert.Equal(t, int64(1), app.calls.Load())
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

// An engine that fails gives 503 (fail closed), or lets the request through
// with WithFailOpen.
func testEngineFailure(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	require.NoError(t, eng.Close())
	app := &ok{}

	rec := serve(mk(eng, app), get("key", "/"))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	CheckProblem(t, http.StatusServiceUnavailable, rec.Header(), rec.Body.Bytes())
	assert.Equal(t, int64(0), app.calls.Load())

	rec = serve(mk(eng, app, httpadapter.WithFailOpen(true)), get("key", "/"))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "ok", rec.Body.String())
	assert.Empty(t, rec.Header().Values("RateLimit"))
	assert.Equal(t, int64(1), app.calls.Load())

	// A missing key is still a 401, whatever the engine's state.
	rec = serve(mk(eng, app, httpadapter.WithFailOpen(true)), get("", "/"))
	require.Equal(t, http.StatusUnauthorized, rec.Code)
}
