package httpadapter_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
	"github.com/allot-go/allot/httpadapter/internal/adaptertest"
)

func newHandler(eng *engine.Engine, app http.Handler, opts ...httpadapter.Option) http.Handler {
	return httpadapter.Middleware(eng, opts...)(app)
}

// TestMiddleware runs the cases every adapter shares.
func TestMiddleware(t *testing.T) {
	adaptertest.Run(t, newHandler)
}

func keyed(eng *engine.Engine, t *testing.T) {
	t.Helper()
	require.NoError(t, eng.Register(context.Background(), "key", engine.Credits(100)))
}

func request() *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-API-Key", "key")
	return r
}

// The wrapper unwraps for http.ResponseController, passes io.ReaderFrom on
// and reports what the underlying writer cannot do.
func TestResponseWriter(t *testing.T) {
	eng := adaptertest.NewEngine(t)
	keyed(eng, t)
	var unwrapped http.ResponseWriter
	var deadlineErr, flushErr, hijackErr error
	var copied int64
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if ok {
			unwrapped = u.Unwrap()
		}
		rc := http.NewResponseController(w)
		deadlineErr = rc.SetWriteDeadline(time.Now().Add(24 * time.Hour)) // never reached
		if r.URL.Path == "/deadline" {
			return
		}
		_, _, hijackErr = w.(http.Hijacker).Hijack()
		copied, _ = w.(io.ReaderFrom).ReadFrom(strings.NewReader("copied"))
		flushErr = rc.Flush()
	})
	h := httpadapter.Middleware(eng)(app)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, request())
	assert.Same(t, rec, unwrapped)
	assert.ErrorIs(t, deadlineErr, http.ErrNotSupported, "a recorder has no deadlines")
	assert.ErrorIs(t, hijackErr, http.ErrNotSupported, "a recorder cannot be hijacked")
	assert.NoError(t, flushErr)
	assert.Equal(t, int64(6), copied)
	assert.Equal(t, "copied", rec.Body.String())
	assert.True(t, rec.Flushed)

	// On a real connection, deadlines work through Unwrap.
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/deadline", nil)
	req.Header.Set("X-API-Key", "key")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.NoError(t, deadlineErr)
}

// writerOnly is a ResponseWriter that can neither flush nor hijack.
type writerOnly struct{ http.ResponseWriter }

func TestFlushNotSupported(t *testing.T) {
	eng := adaptertest.NewEngine(t)
	keyed(eng, t)
	var err error
	h := httpadapter.Middleware(eng)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush() // must not panic
		err = http.NewResponseController(w).Flush()
	}))
	h.ServeHTTP(writerOnly{httptest.NewRecorder()}, request())
	assert.ErrorIs(t, err, http.ErrNotSupported)
}

// Informational responses do not count as the status; a 5xx after a 103
// is refunded.
func TestInformationalStatus(t *testing.T) {
	eng := adaptertest.NewEngine(t)
	keyed(eng, t)
	h := httpadapter.Middleware(eng)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusBadGateway)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, request())
	st, err := eng.Status("key")
	require.NoError(t, err)
	assert.Equal(t, int64(100), st.Limits[0].Remaining)
}

// nopWriter is a ResponseWriter that allocates nothing: its header is
// reset between requests, in place.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// An admitted request costs two allocations: the middleware's state (its
// decision and the writer, and with WithDecisionContext the context that
// carries the decision and the request passed on) and the fields' values;
// one without the RateLimit fields, none for a skipped request.
// DecisionFrom allocates nothing; without WithDecisionContext it finds no
// decision.
func TestMiddlewareAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	eng := adaptertest.NewEngine(t)
	keyed(eng, t)
	require.NoError(t, eng.TopUp(context.Background(), "key", 1_000_000))
	var decided bool
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _, decided = httpadapter.DecisionFrom(r.Context())
	})
	r := request()
	w := &nopWriter{h: http.Header{}}
	for _, c := range []struct {
		name   string
		opts   []httpadapter.Option
		allocs float64
		decide bool
	}{
		{"default", nil, 2, false},
		{"decision context", []httpadapter.Option{httpadapter.WithDecisionContext(true)}, 2, true},
		{"no fields", []httpadapter.Option{httpadapter.WithRateLimitHeaders(false)}, 1, false},
		{"no fields, decision context", []httpadapter.Option{httpadapter.WithRateLimitHeaders(false), httpadapter.WithDecisionContext(true)}, 1, true},
		{"skipped", []httpadapter.Option{httpadapter.WithSkip(func(*http.Request) bool { return true })}, 0, false},
	} {
		h := httpadapter.Middleware(eng, c.opts...)(app)
		h.ServeHTTP(w, r) // the header map's buckets
		got := testing.AllocsPerRun(100, func() {
			clear(w.h)
			h.ServeHTTP(w, r)
		})
		assert.Equal(t, c.allocs, got, c.name)
		assert.Equal(t, c.decide, decided, c.name)
	}
}
