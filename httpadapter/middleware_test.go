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
