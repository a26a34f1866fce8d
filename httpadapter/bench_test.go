package httpadapter_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// benchApp is a minimal but realistic handler: a content type and a body.
var benchApp = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "ok")
})

func benchServe(b *testing.B, h http.Handler, r *http.Request, want int) {
	b.Helper()
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != want {
			b.Fatalf("status %d, want %d", rec.Code, want)
		}
	}
}

func benchEngine(b *testing.B, limits ...engine.Limit) *engine.Engine {
	b.Helper()
	eng, err := engine.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = eng.Close() })
	if err := eng.Register(context.Background(), "key", limits...); err != nil {
		b.Fatal(err)
	}
	return eng
}

// BenchmarkNetHTTP measures the middleware's overhead per request: compare
// each case with "bare", the same handler without the middleware.
func BenchmarkNetHTTP(b *testing.B) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-API-Key", "key")

	b.Run("bare", func(b *testing.B) { benchServe(b, benchApp, r, http.StatusOK) })
	b.Run("middleware", func(b *testing.B) {
		eng := benchEngine(b, engine.PerWindow(engine.MaxWindowQuota, 1000*time.Hour))
		benchServe(b, httpadapter.Middleware(eng)(benchApp), r, http.StatusOK)
	})
	b.Run("middleware-decision-context", func(b *testing.B) {
		eng := benchEngine(b, engine.PerWindow(engine.MaxWindowQuota, 1000*time.Hour))
		benchServe(b, httpadapter.Middleware(eng, httpadapter.WithDecisionContext(true))(benchApp), r, http.StatusOK)
	})
	b.Run("middleware-credits", func(b *testing.B) {
		eng := benchEngine(b, engine.Credits(engine.MaxCredits))
		benchServe(b, httpadapter.Middleware(eng)(benchApp), r, http.StatusOK)
	})
	b.Run("middleware-legacy", func(b *testing.B) {
		eng := benchEngine(b, engine.PerWindow(engine.MaxWindowQuota, 1000*time.Hour))
		benchServe(b, httpadapter.Middleware(eng, httpadapter.WithLegacyHeaders(true))(benchApp), r, http.StatusOK)
	})
	b.Run("middleware-3-limits", func(b *testing.B) {
		eng := benchEngine(b, engine.Credits(engine.MaxCredits),
			engine.PerWindow(engine.MaxWindowQuota, 1000*time.Hour), engine.PerMonth(engine.MaxWindowQuota))
		benchServe(b, httpadapter.Middleware(eng)(benchApp), r, http.StatusOK)
	})
	b.Run("refused-429", func(b *testing.B) {
		eng := benchEngine(b, engine.PerWindow(1, 1000*time.Hour))
		_, _ = eng.Consume(context.Background(), "key", 1)
		benchServe(b, httpadapter.Middleware(eng)(benchApp), r, http.StatusTooManyRequests)
	})
}
