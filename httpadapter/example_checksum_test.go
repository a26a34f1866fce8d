package httpadapter_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// Keys made by engine.NewKey carry a checksum: with WithKeyChecksum the
// middleware refuses a mistyped key before the engine is asked.
func ExampleWithKeyChecksum() {
	eng, err := engine.New(engine.WithCounting())
	if err != nil {
		panic(err)
	}
	defer eng.Close()
	key, err := engine.NewKey("sk_live")
	if err != nil {
		panic(err)
	}
	if err := eng.Register(context.Background(), key, engine.Credits(100)); err != nil {
		panic(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	h := httpadapter.Middleware(eng, httpadapter.WithKeyChecksum(true))(ok)

	typo := strings.Replace(key, "_", "-", 1) // one character off
	for _, k := range []string{key, typo} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-API-Key", k)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		fmt.Println(strings.TrimSpace(fmt.Sprint(rec.Code, " ", rec.Header().Get("WWW-Authenticate"))))
	}
	fmt.Println("granted:", eng.Stats().Granted)
	// Output:
	// 200
	// 401 Bearer realm="api", error="invalid_token"
	// granted: 1
}
