package ginadapter_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/gin-gonic/gin"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
	"github.com/allot-go/allot/httpadapter/ginadapter"
)

// A Gin router whose routes cost one credit each: the third request is
// refused, and an unknown key gets a 401.
func Example() {
	gin.SetMode(gin.ReleaseMode)
	eng, err := engine.New()
	if err != nil {
		panic(err)
	}
	defer eng.Close()
	if err := eng.Register(context.Background(), "key-a", engine.Credits(2)); err != nil {
		panic(err)
	}

	r := gin.New()
	r.Use(gin.Recovery(), ginadapter.Middleware(eng, httpadapter.WithRealm("example")))
	r.GET("/hello", func(c *gin.Context) { c.String(http.StatusOK, "hello") })

	for _, key := range []string{"key-a", "key-a", "key-a", "key-z"} {
		req := httptest.NewRequest(http.MethodGet, "/hello", nil)
		req.Header.Set("X-API-Key", key)
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			fmt.Println(rec.Code, rec.Body.String(), rec.Header().Get("RateLimit"))
		case http.StatusTooManyRequests:
			fmt.Println(rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("RateLimit"))
		default:
			fmt.Println(rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	}
	// Output:
	// 200 hello "credits";r=1
	// 200 hello "credits";r=0
	// 429 application/problem+json "credits";r=0
	// 401 Bearer realm="example", error="invalid_token"
}

// The hooks with Gin: a handler reads its decision from c.Request's
// context, health checks are exempt, and refusals are the application's
// JSON.
func Example_hooks() {
	gin.SetMode(gin.ReleaseMode)
	eng, _ := engine.New()
	defer eng.Close()
	_ = eng.Register(context.Background(), "key-b", engine.Credits(1))

	r := gin.New()
	r.Use(ginadapter.Middleware(eng,
		httpadapter.WithDecisionContext(true),
		httpadapter.WithSkip(func(r *http.Request) bool { return r.URL.Path == "/healthz" }),
		httpadapter.WithDenyHandler(func(w http.ResponseWriter, _ *http.Request, d httpadapter.Denial) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(d.Status)
			fmt.Fprintf(w, `{"error":%q}`, http.StatusText(d.Status))
		})))
	r.GET("/hello", func(c *gin.Context) {
		d, _, _ := httpadapter.DecisionFrom(c.Request.Context())
		c.String(http.StatusOK, "hello, %d left", d.Remaining)
	})
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "up") })

	for _, path := range []string{"/hello", "/hello", "/healthz"} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("X-API-Key", "key-b")
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Body.String())
	}
	// Output:
	// 200 hello, 0 left
	// 429 {"error":"Too Many Requests"}
	// 200 up
}
