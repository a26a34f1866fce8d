package ginadapter_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter/ginadapter"
)

func benchRouter(mw ...gin.HandlerFunc) *gin.Engine {
	r := gin.New()
	r.Use(mw...)
	r.GET("/", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	return r
}

// BenchmarkGin measures the middleware's overhead per request: compare
// "middleware" with "bare", the same gin.New() engine without it.
func BenchmarkGin(b *testing.B) {
	gin.SetMode(gin.ReleaseMode)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("X-API-Key", "key")
	run := func(b *testing.B, h http.Handler) {
		b.ReportAllocs()
		for b.Loop() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d", rec.Code)
			}
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, benchRouter()) })
	b.Run("middleware", func(b *testing.B) {
		eng, err := engine.New()
		if err != nil {
			b.Fatal(err)
		}
		defer eng.Close()
		if err := eng.Register(context.Background(), "key", engine.PerWindow(engine.MaxWindowQuota, 1000*time.Hour)); err != nil {
			b.Fatal(err)
		}
		run(b, benchRouter(ginadapter.Middleware(eng)))
	})
}
