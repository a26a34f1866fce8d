package ginadapter_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
	"github.com/allot-go/allot/httpadapter/ginadapter"
	"github.com/allot-go/allot/httpadapter/internal/adaptertest"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

// newHandler mounts app as a catch-all route of a Gin engine that uses the
// middleware (and no gin.Recovery, so that panics reach the test).
func newHandler(eng *engine.Engine, app http.Handler, opts ...httpadapter.Option) http.Handler {
	r := gin.New()
	r.Use(ginadapter.Middleware(eng, opts...))
	r.Any("/*path", gin.WrapH(app))
	return r
}

// TestMiddleware runs the cases every adapter shares.
func TestMiddleware(t *testing.T) {
	adaptertest.Run(t, newHandler)
}

// A nil engine is a misconfiguration: every request is refused with 503,
// never a panic, and the handler never runs.
func TestNilEngine(t *testing.T) {
	ran := false
	h := newHandler(nil, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran = true }))
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-API-Key", "key")
	h.ServeHTTP(w, r)
	assert.Equal(t, http.StatusServiceUnavailable, w.Code)
	assert.False(t, ran)
}
