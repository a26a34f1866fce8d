package httpadapter_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// Two requests an hour, half a minute before the hour: the third request is
// refused until the next window, 30 seconds away.
func Example() {
	now := time.Date(2026, 1, 1, 10, 59, 30, 0, time.UTC)
	eng, err := engine.New(engine.WithClock(func() time.Time { return now }))
	if err != nil {
		panic(err)
	}
	defer eng.Close()
	if err := eng.Register(context.Background(), "key-a", engine.PerWindow(2, time.Hour)); err != nil {
		panic(err)
	}

	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	})
	h := httpadapter.Middleware(eng)(hello)

	for range 3 {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer key-a")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		fmt.Printf("%d RateLimit: %s\n", rec.Code, rec.Header().Get("RateLimit"))
		if rec.Code == http.StatusTooManyRequests {
			fmt.Println("Retry-After:", rec.Header().Get("Retry-After"))
			fmt.Println("RateLimit-Policy:", rec.Header().Get("RateLimit-Policy"))
			fmt.Println(rec.Body.String())
		}
	}

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	fmt.Println(rec.Code, rec.Header().Get("WWW-Authenticate"))
	// Output:
	// 200 RateLimit: "hour";r=1;t=30
	// 200 RateLimit: "hour";r=0;t=30
	// 429 RateLimit: "hour";r=0;t=30
	// Retry-After: 30
	// RateLimit-Policy: "hour";q=2;w=3600
	// {"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Request cannot be satisfied as assigned quota has been exceeded","status":429,"detail":"the quota is exhausted; retry in 30 s","violated-policies":["hour"]}
	// 401 Bearer realm="api"
}

// Prepaid credits, a per-second rate, costs by route, and the legacy
// GitHub-style fields.
func ExampleMiddleware_options() {
	now := time.Unix(1_767_268_800, 0) // 2026-01-01 12:00:00 UTC
	clock := func() time.Time { return now }
	eng, _ := engine.New(engine.WithClock(clock))
	defer eng.Close()
	_ = eng.Register(context.Background(), "key-b",
		engine.Credits(100), engine.Rate(10, time.Second, 20).Named("per-second"))

	mw := httpadapter.Middleware(eng,
		httpadapter.WithCost(func(r *http.Request) int64 {
			if r.URL.Path == "/search" {
				return 5
			}
			return 1
		}),
		httpadapter.WithLegacyHeaders(true),
		httpadapter.WithClock(clock),
	)
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))

	for _, path := range []string{"/", "/search"} {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("X-API-Key", "key-b")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		fmt.Println(path, rec.Code)
		for _, f := range []string{"RateLimit-Policy", "RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} {
			fmt.Printf("  %s: %s\n", f, rec.Header().Get(f))
		}
	}
	// Output:
	// / 200
	//   RateLimit-Policy: "credits";q=100, "per-second";q=20;w=2
	//   RateLimit: "credits";r=99, "per-second";r=19;t=1
	//   X-RateLimit-Limit: 20
	//   X-RateLimit-Remaining: 19
	//   X-RateLimit-Reset: 1767268801
	// /search 200
	//   RateLimit-Policy: "credits";q=100, "per-second";q=20;w=2
	//   RateLimit: "credits";r=94, "per-second";r=14;t=1
	//   X-RateLimit-Limit: 20
	//   X-RateLimit-Remaining: 14
	//   X-RateLimit-Reset: 1767268801
}

// Every key a request carries counts: an empty one is a malformed key, two
// different ones are ambiguous and charge nothing, the same key twice is
// that key.
func ExampleMiddleware_keys() {
	eng, _ := engine.New()
	defer eng.Close()
	_ = eng.Register(context.Background(), "key-c", engine.Credits(10))
	_ = eng.Register(context.Background(), "key-d", engine.Credits(10))
	h := httpadapter.Middleware(eng)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))

	for _, hd := range []http.Header{
		{"Authorization": {"Bearer "}},
		{"X-Api-Key": {"", "key-c"}},
		{"X-Api-Key": {"key-c"}, "Authorization": {"Bearer key-d"}},
		{"X-Api-Key": {"key-c"}, "Authorization": {"Bearer key-c"}},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header = hd
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if c := rec.Header().Get("WWW-Authenticate"); c != "" {
			fmt.Println(rec.Code, c)
		} else {
			fmt.Println(rec.Code)
		}
	}
	st, _ := eng.Status("key-c")
	fmt.Println("key-c left:", st.Limits[0].Remaining)
	// Output:
	// 401 Bearer realm="api", error="invalid_token"
	// 400 Bearer realm="api", error="invalid_request"
	// 400 Bearer realm="api", error="invalid_request"
	// 200
	// key-c left: 9
}
