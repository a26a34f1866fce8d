package adaptertest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
)

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
