package adaptertest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
)

// A request blocked in its handler keeps RevokeAndWait waiting; once it
// returns, RevokeAndWait returns nil. Requests arriving after the
// revocation get 401 while the admitted one goes on. Every step waits on an
// event, never on time: a bounded RevokeAndWait is given a context the test
// cancels itself, and the unbounded one reports whether it returned before
// the handler was let go.
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
	require.Equal(t, int64(1), eng.InFlight("key"), "an admitted request is in flight")

	// Requests arriving once the key is revoked are refused.
	require.NoError(t, eng.Revoke(context.Background(), "key"))
	rec := serve(h, get("key", "/"))
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	CheckProblem(t, http.StatusUnauthorized, rec.Header(), rec.Body.Bytes())

	// The unbounded wait must not return before the handler is let go.
	var released atomic.Bool
	type result struct {
		err      error
		released bool
		inFlight int64
	}
	waited := make(chan result, 1)
	go func() {
		err := eng.RevokeAndWait(context.Background(), "key")
		waited <- result{err, released.Load(), eng.InFlight("key")}
	}()

	// A bounded wait gives up with its context's error, never nil, while
	// the request is in flight, whenever its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	bounded := make(chan error, 1)
	go func() { bounded <- eng.RevokeAndWait(ctx, "key") }()
	cancel()
	require.ErrorIs(t, within(t, bounded), context.Canceled)
	require.Equal(t, int64(1), eng.InFlight("key"), "the request is still in flight")

	released.Store(true)
	close(release)
	rec = within(t, served)
	assert.Equal(t, http.StatusOK, rec.Code, "an admitted request completes")
	assert.Equal(t, "done", rec.Body.String())
	res := within(t, waited)
	require.NoError(t, res.err, "RevokeAndWait returns once the request is done")
	assert.True(t, res.released, "RevokeAndWait returned while the handler was still blocked")
	assert.Equal(t, int64(0), res.inFlight)

	rec = serve(h, get("key", "/"))
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	assert.Contains(t, rec.Header().Get("WWW-Authenticate"), `error="invalid_token"`)
}
