package httpadapter_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// A handler reads its own request's decision: the one its RateLimit field
// describes.
func ExampleDecisionFrom() {
	eng, _ := engine.New()
	defer eng.Close()
	_ = eng.Register(context.Background(), "key-c", engine.Credits(100))

	h := httpadapter.Middleware(eng, httpadapter.WithDecisionContext(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _, _ := httpadapter.DecisionFrom(r.Context())
		fmt.Fprintf(w, "%d credits left", d.Remaining)
	}))
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-API-Key", "key-c")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	fmt.Println(rec.Body.String())
	fmt.Println("RateLimit:", rec.Header().Get("RateLimit"))
	// Output:
	// 99 credits left
	// RateLimit: "credits";r=99
}

// Shadow mode: a new limit of 2 an hour is tried out. The third request is
// over it, but is let through; the handler sees the denial, and the
// engine counts it.
func ExampleWithShadow() {
	now := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	eng, _ := engine.New(engine.WithCounting(), engine.WithClock(func() time.Time { return now }))
	defer eng.Close()
	_ = eng.Register(context.Background(), "key-d", engine.PerWindow(2, time.Hour))

	h := httpadapter.Middleware(eng, httpadapter.WithShadow(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, _, _ := httpadapter.DecisionFrom(r.Context()); !d.Allowed {
			fmt.Println("would have been refused:", d.Reason)
		}
	}))
	for range 3 {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-API-Key", "key-d")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		fmt.Println(rec.Code, rec.Header().Get("RateLimit"))
	}
	s := eng.Stats()
	fmt.Println("granted:", s.Granted, "exhausted:", s.Exhausted, "shadow denied:", s.ShadowDenied)
	// Output:
	// 200 "hour";r=1;t=3600
	// 200 "hour";r=0;t=3600
	// would have been refused: exhausted
	// 200 "hour";r=0;t=3600
	// granted: 2 exhausted: 1 shadow denied: 1
}

// Refusals in the application's own JSON format instead of problem+json.
func ExampleWithDenyHandler() {
	eng, _ := engine.New()
	defer eng.Close()
	_ = eng.Register(context.Background(), "key-e", engine.Credits(1))

	deny := func(w http.ResponseWriter, r *http.Request, d httpadapter.Denial) {
		msg := "refused"
		switch {
		case d.Decision.Reason == engine.Exhausted:
			msg = "out of credits"
		case d.Err == httpadapter.ErrMissingKey:
			msg = "send your API key"
		case d.Decision.Reason == engine.UnknownKey:
			msg = "unknown API key"
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(d.Status)
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "message": msg})
	}
	h := httpadapter.Middleware(eng, httpadapter.WithDenyHandler(deny))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, `{"ok":true}`)
	}))
	for _, key := range []string{"key-e", "key-e", "", "key-x"} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if key != "" {
			r.Header.Set("X-API-Key", key)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		fmt.Print(rec.Code, " ", rec.Body.String())
	}
	// Output:
	// 200 {"ok":true}
	// 429 {"message":"out of credits","ok":false}
	// 401 {"message":"send your API key","ok":false}
	// 401 {"message":"unknown API key","ok":false}
}
