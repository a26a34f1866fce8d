package adaptertest

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// testNilEngine: a nil engine is a misconfiguration; every request is
// refused with 503, never a panic, and the handler never runs.
func testNilEngine(t *testing.T, mk New) {
	app := &ok{}
	rec := serve(mk(nil, app), get("key", "/"))
	if rec.Code != http.StatusServiceUnavailable || app.calls.Load() != 0 {
		t.Fatalf("nil engine: status %d, handler ran %d times", rec.Code, app.calls.Load())
	}
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
