package adaptertest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

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
