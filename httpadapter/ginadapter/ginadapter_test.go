package ginadapter_test

import (
	"net/http"
	"os"
	"testing"

	"github.com/gin-gonic/gin"

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
