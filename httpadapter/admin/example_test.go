package admin_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter/admin"
)

// The admin API under /admin, for callers with the admin token: register a
// key with 100 credits, spend some, top it up, revoke it by ID, delete it.
func Example() {
	eng, err := engine.New()
	if err != nil {
		panic(err)
	}
	defer eng.Close()

	h := admin.Handler(eng, admin.WithAuthorize(func(r *http.Request) bool {
		return r.Header.Get("Authorization") == "Bearer admin-token"
	}))
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", h))

	id := engine.IDOf("customer-1") // IDs are not secret: the raw key never goes in a URL
	hexID := hex.EncodeToString(id[:])
	short := strings.NewReplacer(hexID, hexID[:8]+"…") // for the output below
	call := func(method, path, body string) {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		r := httptest.NewRequest(method, path, rd)
		r.Header.Set("Authorization", "Bearer admin-token")
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		fmt.Println(short.Replace(strings.TrimSpace(fmt.Sprintf("%s %s: %d %s", method, path, w.Code, w.Body.String()))))
	}

	call("POST", "/admin/keys", `{"key":"customer-1","limits":[{"kind":"credits","quota":100}]}`)
	if _, err := eng.Consume(context.Background(), "customer-1", 30); err != nil {
		panic(err)
	}
	call("POST", "/admin/keys/"+hexID+"/top-up", `{"amount":50}`)
	call("POST", "/admin/keys/"+hexID+"/revoke", "")
	call("DELETE", "/admin/keys/"+hexID, "")
	call("GET", "/admin/keys/"+hexID, "")
	// Output:
	// POST /admin/keys: 201 {"id":"e83f10dc…","revoked":false,"rotated_out":false,"limits":[{"kind":"credits","name":"credits","quota":100,"remaining":100,"reset_after":"0s"}]}
	// POST /admin/keys/e83f10dc…/top-up: 200 {"id":"e83f10dc…","revoked":false,"rotated_out":false,"limits":[{"kind":"credits","name":"credits","quota":150,"remaining":120,"reset_after":"0s"}]}
	// POST /admin/keys/e83f10dc…/revoke: 200 {"id":"e83f10dc…","revoked":true,"rotated_out":false,"limits":[{"kind":"credits","name":"credits","quota":150,"remaining":120,"reset_after":"0s"}]}
	// DELETE /admin/keys/e83f10dc…: 204
	// GET /admin/keys/e83f10dc…: 404 {"type":"about:blank","title":"Not Found","status":404,"detail":"allot: unknown key: status","code":"unknown_key"}
}
