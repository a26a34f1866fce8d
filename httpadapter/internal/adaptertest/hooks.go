package adaptertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// seen is what a handler saw of its request's decision.
type seen struct {
	d   engine.Decision
	ok  bool
	ctx context.Context
	req *http.Request
}

// decisionApp is an app that records DecisionFrom for each request, in
// order, and answers 200 with the decision's Remaining as its body.
type decisionApp struct {
	mu   sync.Mutex
	seen []seen
}

func (a *decisionApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d, _, ok := httpadapter.DecisionFrom(r.Context())
	a.mu.Lock()
	a.seen = append(a.seen, seen{d: d, ok: ok, ctx: r.Context(), req: r})
	a.mu.Unlock()
	_, _ = fmt.Fprint(w, d.Remaining)
}

func (a *decisionApp) last(t *testing.T) seen {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	require.NotEmpty(t, a.seen, "the handler never ran")
	return a.seen[len(a.seen)-1]
}

// DecisionFrom gives the handler the decision its RateLimit fields
// describe, and its Admission, which counts the request in flight until
// the handler returns. The incoming request is not modified: the handler
// gets a copy whose context carries the decision.
func testDecisionFrom(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.PerWindow(3, time.Hour))
	var inFlight int64
	var admOK bool
	app := &decisionApp{}
	h := mk(eng, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, adm, ok := httpadapter.DecisionFrom(r.Context())
		admOK = ok && adm != engine.Admission{}
		inFlight = eng.InFlight("key")
		app.ServeHTTP(w, r)
	}), httpadapter.WithDecisionContext(true))
	for i := range 3 {
		type ctxKey struct{}
		parent := context.WithValue(context.Background(), ctxKey{}, "caller's")
		r := get("key", "/").WithContext(parent)
		header := r.Header.Clone()
		rec := serve(h, r)
		require.Equal(t, http.StatusOK, rec.Code)
		s := app.last(t)
		require.True(t, s.ok)
		assert.True(t, s.d.Allowed)
		assert.Equal(t, engine.OK, s.d.Reason)
		assert.Equal(t, int64(2-i), s.d.Remaining)
		assert.Equal(t, int64(1), s.d.Granted())
		assert.True(t, admOK, "the Admission of a grant")
		assert.Equal(t, int64(1), inFlight, "in flight while the handler runs")
		_, limits := CheckFields(t, rec.Header())
		assert.Equal(t, s.d.Remaining, limits[0].Params["r"])
		assert.Equal(t, strconv.FormatInt(s.d.Remaining, 10), rec.Body.String())
		assert.Equal(t, "caller's", s.ctx.Value(ctxKey{}), "the context derives from the request's")
		assert.Same(t, parent, r.Context(), "the incoming request keeps its context")
		assert.Equal(t, header, r.Header, "and its header")
		assert.NotSame(t, r, s.req, "the handler gets a copy")
	}
	assert.Zero(t, eng.InFlight("key"))
	d, _, ok := httpadapter.DecisionFrom(context.Background())
	assert.False(t, ok, "a context that never went through the middleware")
	assert.Equal(t, engine.Decision{}, d)
	var none context.Context
	_, _, ok = httpadapter.DecisionFrom(none)
	assert.False(t, ok, "a nil context is answered, not a panic")

	// Without WithDecisionContext, the handler gets the request as it came,
	// and DecisionFrom finds no decision.
	plain := &decisionApp{}
	register(t, eng, "key-plain", engine.Credits(1))
	r := get("key-plain", "/")
	require.Equal(t, http.StatusOK, serve(mk(eng, plain), r).Code)
	s := plain.last(t)
	assert.False(t, s.ok, "no decision without the option")
	assert.Same(t, r, s.req, "the handler gets the request itself")

	// A request let through by fail-open has no decision.
	require.NoError(t, eng.Close())
	rec := serve(mk(eng, app, httpadapter.WithFailOpen(true), httpadapter.WithDecisionContext(true)), get("key", "/"))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.False(t, app.last(t).ok)
}

// WithShadow lets 1,000 over-quota requests through, each with its
// Exhausted decision in DecisionFrom and r=0 in its fields, but without
// Retry-After; the engine counts them in Exhausted and ShadowDenied, and
// grants nothing more. Keys are still checked.
func testShadow(t *testing.T, mk New) {
	const quota, over = 10, 1000
	clock := NewClock(time.Date(2026, 1, 1, 10, 59, 30, 0, time.UTC))
	eng := NewEngine(t, engine.WithCounting(), engine.WithClock(clock.Now))
	register(t, eng, "key", engine.PerWindow(quota, time.Hour))
	register(t, eng, "gone", engine.PerWindow(quota, time.Hour))
	require.NoError(t, eng.Revoke(context.Background(), "gone"))
	app := &decisionApp{}
	var denied atomic.Int64
	h := mk(eng, app, httpadapter.WithShadow(true),
		httpadapter.WithDenyHandler(func(w http.ResponseWriter, _ *http.Request, d httpadapter.Denial) {
			denied.Add(1)
			w.WriteHeader(d.Status)
		}))

	for i := range quota + over {
		rec := serve(h, get("key", "/"))
		require.Equal(t, http.StatusOK, rec.Code, "request %d", i)
		s := app.last(t)
		require.True(t, s.ok)
		if i < quota {
			require.True(t, s.d.Allowed, "request %d", i)
			continue
		}
		require.False(t, s.d.Allowed, "request %d", i)
		require.Equal(t, engine.Exhausted, s.d.Reason)
		require.Equal(t, 30*time.Second, s.d.RetryAfter)
		require.Equal(t, `"hour";r=0;t=30`, rec.Header().Get("RateLimit"))
		require.Equal(t, `"hour";q=10;w=3600`, rec.Header().Get("RateLimit-Policy"))
		require.Empty(t, rec.Header().Values("Retry-After"), "not refused")
	}
	app.mu.Lock()
	assert.Len(t, app.seen, quota+over, "the handler ran for every request")
	app.mu.Unlock()
	assert.Zero(t, denied.Load())

	// A shadow request whose handler fails is not refunded: nothing was
	// granted to it.
	fail := mk(eng, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}), httpadapter.WithShadow(true))
	require.Equal(t, http.StatusInternalServerError, serve(fail, get("key", "/")).Code)
	assert.Equal(t, int64(0), remaining(t, eng, "key"))

	// Keys are checked as ever, and go to the deny handler.
	assert.Equal(t, http.StatusUnauthorized, serve(h, get("gone", "/")).Code)
	assert.Equal(t, http.StatusUnauthorized, serve(h, get("", "/")).Code)
	assert.Equal(t, http.StatusUnauthorized, serve(h, get("nope", "/")).Code)
	assert.Equal(t, int64(3), denied.Load())

	s := eng.Stats()
	assert.Equal(t, int64(quota), s.Granted)
	assert.Equal(t, int64(quota), s.UnitsGranted)
	assert.Equal(t, int64(over+1), s.Exhausted)
	assert.Equal(t, int64(over+1), s.ShadowDenied)
	assert.Equal(t, int64(1), s.Revoked)
	assert.Zero(t, s.InFlight)

	// Without shadow mode the same key is refused.
	check429(t, serve(mk(eng, app), get("key", "/")), "30", "hour")
	assert.Equal(t, int64(over+1), eng.Stats().ShadowDenied)
}

// denial is the app's own format of a refusal, as the deny handler of the
// tests writes it.
type denial struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
	Err    string `json:"error,omitempty"`
}

// WithDenyHandler answers every refusal, and gets the status, the
// decision or the error; the fields a refusal must carry are already set.
func testDenyHandler(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.PerWindow(1, time.Hour))
	register(t, eng, "gone", engine.Credits(1))
	require.NoError(t, eng.Revoke(context.Background(), "gone"))
	app := &ok{}
	var got []httpadapter.Denial
	deny := httpadapter.WithDenyHandler(func(w http.ResponseWriter, r *http.Request, d httpadapter.Denial) {
		require.NotNil(t, r)
		got = append(got, d)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(d.Status)
		out := denial{Code: d.Status, Reason: d.Decision.Reason.String()}
		if d.Err != nil {
			out.Err = d.Err.Error()
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	cost := httpadapter.WithCost(func(r *http.Request) int64 {
		if r.URL.Path == "/free" {
			return 0
		}
		return 1
	})
	h := mk(eng, app, deny, cost)
	require.Equal(t, http.StatusOK, serve(h, get("key", "/")).Code)

	ambiguous := get("key", "/")
	ambiguous.Header.Set("Authorization", "Bearer other")
	for _, c := range []struct {
		name      string
		r         *http.Request
		status    int
		reason    engine.Reason
		is        error
		challenge string
	}{
		{"exhausted", get("key", "/"), http.StatusTooManyRequests, engine.Exhausted, nil, ""},
		{"revoked", get("gone", "/"), http.StatusUnauthorized, engine.Revoked, nil, challengeInvalid},
		{"unknown", get("nope", "/"), http.StatusUnauthorized, engine.UnknownKey, nil, challengeInvalid},
		{"missing", get("", "/"), http.StatusUnauthorized, engine.Undecided, httpadapter.ErrMissingKey, challengeMissing},
		{"ambiguous", ambiguous, http.StatusBadRequest, engine.Undecided, httpadapter.ErrAmbiguousKey, challengeAmbiguous},
		{"empty", get(" ", "/"), http.StatusUnauthorized, engine.Undecided, engine.ErrInvalidKey, challengeInvalid},
		{"cost", get("key", "/free"), http.StatusInternalServerError, engine.Undecided, engine.ErrInvalidAmount, ""},
	} {
		got = nil
		rec := serve(h, c.r)
		require.Equal(t, c.status, rec.Code, c.name)
		require.Len(t, got, 1, c.name)
		d := got[0]
		assert.Equal(t, c.status, d.Status, c.name)
		assert.Equal(t, c.reason, d.Decision.Reason, c.name)
		if c.is == nil {
			assert.NoError(t, d.Err, c.name)
		} else {
			assert.ErrorIs(t, d.Err, c.is, c.name)
		}
		assert.Equal(t, "application/json", rec.Header().Get("Content-Type"), c.name)
		var body denial
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), c.name)
		assert.Equal(t, denial{Code: c.status, Reason: c.reason.String(), Err: errString(d.Err)}, body, c.name)
		assert.Equal(t, c.challenge, rec.Header().Get("WWW-Authenticate"), c.name)
		if c.reason == engine.Exhausted {
			assert.Equal(t, int64(0), d.Decision.Remaining)
			assert.Positive(t, d.Decision.RetryAfter)
			assert.NotEmpty(t, rec.Header().Get("Retry-After"))
			CheckFields(t, rec.Header())
		} else {
			assert.Empty(t, rec.Header().Values("RateLimit"), c.name)
		}
	}
	assert.Equal(t, int64(1), app.calls.Load(), "the handler runs only for the grant")

	// 503: a closed engine, and no engine at all.
	require.NoError(t, eng.Close())
	for _, e := range []*engine.Engine{eng, nil} {
		got = nil
		rec := serve(mk(e, app, deny), get("key", "/"))
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		require.Len(t, got, 1)
		assert.ErrorIs(t, got[0].Err, engine.ErrClosed)
		assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	}
	assert.Equal(t, int64(1), app.calls.Load())
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// WithSkip exempts requests: no key needed, nothing counted, no fields,
// no decision; the others are metered as ever. The exemption holds without
// an engine too.
func testSkip(t *testing.T, mk New) {
	eng := NewEngine(t, engine.WithCounting())
	register(t, eng, "key", engine.Credits(1))
	app := &decisionApp{}
	skip := httpadapter.WithSkip(func(r *http.Request) bool { return r.URL.Path == "/healthz" })
	h := mk(eng, app, skip, httpadapter.WithDecisionContext(true))
	for _, key := range []string{"", "key", "nope"} {
		for range 3 {
			rec := serve(h, get(key, "/healthz"))
			require.Equal(t, http.StatusOK, rec.Code)
			assert.Empty(t, rec.Header().Values("RateLimit"))
			s := app.last(t)
			assert.False(t, s.ok, "no decision")
		}
	}
	assert.Equal(t, int64(1), remaining(t, eng, "key"))
	s := eng.Stats()
	assert.Equal(t, [4]int64{}, [4]int64{s.Granted, s.Exhausted, s.Revoked, s.UnknownKey}, "nothing counted")

	assert.Equal(t, http.StatusUnauthorized, serve(h, get("", "/")).Code, "other paths need a key")
	assert.Equal(t, http.StatusOK, serve(h, get("key", "/")).Code)
	assert.Equal(t, http.StatusTooManyRequests, serve(h, get("key", "/")).Code)
	s = eng.Stats()
	assert.Equal(t, [3]int64{1, 1, 0}, [3]int64{s.Granted, s.Exhausted, s.UnknownKey})

	rec := serve(mk(nil, app, skip), get("", "/healthz"))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, http.StatusServiceUnavailable, serve(mk(nil, app, skip), get("key", "/")).Code)
}

// WithRateLimitHeaders(false) drops RateLimit and RateLimit-Policy; a 429
// keeps Retry-After and its problem body; the legacy fields are on or off
// by themselves.
func testHeaderControl(t *testing.T, mk New) {
	clock := NewClock(time.Date(2026, 1, 1, 10, 59, 30, 0, time.UTC))
	eng := NewEngine(t, engine.WithClock(clock.Now))
	fields := []string{"RateLimit", "RateLimit-Policy", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"}
	for i, c := range []struct {
		opts []httpadapter.Option
		ok   []string // the fields of a grant; a 429 adds Retry-After
	}{
		{nil, fields[:2]},
		{[]httpadapter.Option{httpadapter.WithRateLimitHeaders(false)}, nil},
		{[]httpadapter.Option{httpadapter.WithRateLimitHeaders(false), httpadapter.WithLegacyHeaders(true)}, fields[2:5]},
		{[]httpadapter.Option{httpadapter.WithLegacyHeaders(true)}, fields[:5]},
		{[]httpadapter.Option{httpadapter.WithLegacyHeaders(true), httpadapter.WithLegacyHeaders(false), httpadapter.WithRateLimitHeaders(false), httpadapter.WithRateLimitHeaders(true)}, fields[:2]},
	} {
		key := "key" + strconv.Itoa(i)
		register(t, eng, key, engine.PerWindow(1, time.Hour))
		h := mk(eng, &ok{}, append(c.opts, httpadapter.WithClock(clock.Now))...)
		rec := serve(h, get(key, "/"))
		require.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, c.ok, present(rec.Header(), fields), "grant %d", i)
		rec = serve(h, get(key, "/"))
		require.Equal(t, http.StatusTooManyRequests, rec.Code)
		assert.Equal(t, append(c.ok[:len(c.ok):len(c.ok)], "Retry-After"), present(rec.Header(), fields), "429 %d", i)
		assert.Equal(t, "30", rec.Header().Get("Retry-After"))
		p := CheckProblem(t, http.StatusTooManyRequests, rec.Header(), rec.Body.Bytes())
		assert.Equal(t, []string{"hour"}, p.Violated, "the body names the limit with the fields off too")
		if len(c.ok) > 0 && c.ok[0] == "RateLimit" {
			CheckFields(t, rec.Header())
		}
	}
}

// present returns the names of fields that h has, in order.
func present(h http.Header, fields []string) []string {
	var out []string
	for _, f := range fields {
		if len(h.Values(f)) > 0 {
			out = append(out, f)
		}
	}
	return out
}
