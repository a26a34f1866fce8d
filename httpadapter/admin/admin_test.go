package admin_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter/admin"
)

// sample gives each route a request that it serves, against a key named
// "k" (ID kid) registered with a credits limit.
func sample(rt admin.Route, kid string) (path, body string) {
	path = strings.ReplaceAll(rt.Path, "{id}", kid)
	switch rt.Op {
	case "registerKey":
		body = `{"limits":[{"kind":"credits","quota":10}]}`
	case "topUpKey":
		body = `{"amount":1}`
	case "topUpKeyByKey":
		body = `{"key":"k","amount":1}`
	case "setLimitsByKey":
		body = `{"key":"k","limits":[{"kind":"credits","quota":10}]}`
	case "rotateKeyByKey":
		body = `{"key":"k","new_key":"k2"}`
	default:
		if strings.HasPrefix(rt.Path, "/by-key/") {
			body = `{"key":"k"}`
		}
	}
	return path, body
}

func TestDenyByDefault(t *testing.T) {
	eng := newEngine(t)
	if err := eng.Register(t.Context(), "k", engine.Credits(10)); err != nil {
		t.Fatal(err)
	}
	called := 0
	refuse := admin.WithAuthorize(func(*http.Request) bool { called++; return false })
	for _, tc := range []struct {
		name   string
		opts   []admin.Option
		status int
		code   string
	}{
		{"no authorizer", nil, http.StatusForbidden, "forbidden"},
		{"nil authorizer", []admin.Option{admin.WithAuthorize(nil), nil}, http.StatusForbidden, "forbidden"},
		{"refused", []admin.Option{refuse}, http.StatusForbidden, "forbidden"},
		{"refused with a challenge", []admin.Option{refuse, admin.WithChallenge(`Bearer realm="admin"`)}, http.StatusUnauthorized, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := admin.Handler(eng, tc.opts...)
			paths := append(admin.Routes(), admin.Route{Method: "GET", Path: "/nowhere"}, admin.Route{Method: "PUT", Path: "/keys"})
			for _, rt := range paths {
				path, body := sample(rt, idOf("k"))
				// The body is never read: the authorizer comes first.
				r := httptest.NewRequest(rt.Method, path, &unread{t: t, body: body})
				r.Header.Set("Content-Type", "application/json")
				got := serve(h, r)
				wantProblem(t, got, tc.status, tc.code)
				if tc.status == http.StatusUnauthorized && got.Header.Get("WWW-Authenticate") != `Bearer realm="admin"` {
					t.Errorf("%s %s: WWW-Authenticate %q", rt.Method, path, got.Header.Get("WWW-Authenticate"))
				}
				if got.Header.Get("Allow") != "" {
					t.Errorf("%s %s: a refused request learns the methods: Allow %q", rt.Method, path, got.Header.Get("Allow"))
				}
			}
		})
	}
	if called == 0 {
		t.Error("the authorizer was never called")
	}
	// Nothing was done.
	st, err := eng.Status("k")
	if err != nil || st.Revoked || st.Limits[0].Remaining != 10 {
		t.Fatalf("status %+v, %v", st, err)
	}
	if _, err := eng.Status("k2"); !errors.Is(err, engine.ErrUnknownKey) {
		t.Fatalf("k2 was registered: %v", err)
	}
}

// unread is a body that fails the test if it is read.
type unread struct {
	t    *testing.T
	body string
}

func (u *unread) Read([]byte) (int, error) {
	u.t.Error("the body of a refused request was read")
	return 0, io.EOF
}

func TestAuthorizerSeesRequest(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, admin.WithAuthorize(func(r *http.Request) bool {
		return r.Header.Get("Authorization") == "Bearer let-me-in"
	}))
	r := httptest.NewRequest("GET", "/keys", nil)
	wantProblem(t, serve(h, r), http.StatusForbidden, "forbidden")
	r.Header.Set("Authorization", "Bearer let-me-in")
	want[keyPage](t, serve(h, r), http.StatusOK)
}

var keyFormat = regexp.MustCompile(`^sk_[0-9A-Za-z]{36}$`)

func TestRegister(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, allowAll)

	// A generated key: the response is the only time it is shown.
	r := do(t, h, "POST", "/keys", `{"limits":[{"kind":"credits","quota":100},{"kind":"window","quota":10,"period":"1h","name":"hourly"}]}`)
	k := want[key](t, r, http.StatusCreated)
	if !keyFormat.MatchString(k.Key) || k.ID != idOf(k.Key) {
		t.Fatalf("generated key %q, ID %s", k.Key, k.ID)
	}
	if loc := r.Header.Get("Location"); loc != "keys/"+k.ID {
		t.Fatalf("Location %q", loc)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("Cache-Control %q", r.Header.Get("Cache-Control"))
	}
	if len(k.Limits) != 2 || k.Limits[0] != (limit{Kind: "credits", Name: "credits", Quota: 100, Remaining: 100, ResetAfter: "0s"}) ||
		k.Limits[1].Name != "hourly" || k.Limits[1].Period != "1h0m0s" || k.Limits[1].Remaining != 10 {
		t.Fatalf("limits %+v", k.Limits)
	}
	st, err := eng.Status(k.Key)
	if err != nil || len(st.Limits) != 2 {
		t.Fatalf("engine status %+v, %v", st, err)
	}
	// The status by ID does not show it.
	got := do(t, h, "GET", "/keys/"+k.ID, "")
	if s := want[key](t, got, http.StatusOK); s.Key != "" || s.ID != k.ID || strings.Contains(got.Body, k.Key) {
		t.Fatalf("status shows the key: %s", got.Body)
	}

	// A given key is never echoed.
	body := `{"key":"customer-7","limits":[{"kind":"rate","n":10,"per":"1s","burst":20}]}`
	r = do(t, h, "POST", "/keys", body)
	k = want[key](t, r, http.StatusCreated)
	if k.Key != "" || strings.Contains(r.Body, "customer-7") || k.ID != idOf("customer-7") {
		t.Fatalf("register echoes the given key: %s", r.Body)
	}
	if k.Limits[0] != (limit{Kind: "rate", Name: "rate", N: 10, Per: "1s", Burst: 20, Remaining: 20, ResetAfter: "0s"}) {
		t.Fatalf("limits %+v", k.Limits)
	}

	// Idempotent: the same limits again are a 200 that changes nothing.
	if _, err := eng.Consume(t.Context(), "customer-7", 5); err != nil {
		t.Fatal(err)
	}
	k = want[key](t, do(t, h, "POST", "/keys", body), http.StatusOK)
	if k.Limits[0].Remaining != 15 {
		t.Fatalf("the second register changed the key: %+v", k.Limits)
	}
	// The same limits, named explicitly by their default name: the same.
	want[key](t, do(t, h, "POST", "/keys", `{"key":"customer-7","limits":[{"kind":"rate","n":10,"per":"1000ms","burst":20,"name":"rate"}]}`), http.StatusOK)
	// Other limits: 409.
	p := wantProblem(t, do(t, h, "POST", "/keys", `{"key":"customer-7","limits":[{"kind":"rate","n":10,"per":"1s","burst":21}]}`), http.StatusConflict, "key_exists")
	if !strings.HasPrefix(p.Detail, engine.ErrKeyExists.Error()) {
		t.Fatalf("detail %q", p.Detail)
	}
	// The same limits, but revoked: 409.
	if err := eng.Revoke(t.Context(), "customer-7"); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, do(t, h, "POST", "/keys", body), http.StatusConflict, "key_exists")

	// Bad keys.
	wantProblem(t, do(t, h, "POST", "/keys", `{"key":"","limits":[{"kind":"credits","quota":1}]}`), http.StatusBadRequest, "invalid_key")
	wantProblem(t, do(t, h, "POST", "/keys", `{"key":"`+strings.Repeat("x", engine.MaxKeyLen+1)+`","limits":[{"kind":"credits","quota":1}]}`), http.StatusBadRequest, "invalid_key")
	wantProblem(t, do(t, h, "POST", "/keys", `{"key":"\u0000x","limits":[{"kind":"credits","quota":1}]}`), http.StatusBadRequest, "invalid_key")
	wantProblem(t, do(t, h, "POST", "/keys", `{"key":"x"}`), http.StatusBadRequest, "invalid_limit")
	wantProblem(t, do(t, h, "POST", "/keys", `{"key":"x","limits":[]}`), http.StatusBadRequest, "invalid_limit")
}

func TestLimits(t *testing.T) {
	eng := newEngine(t, engine.WithClock(func() time.Time { return time.Date(2026, 3, 10, 12, 30, 0, 0, time.UTC) }))
	h := admin.Handler(eng, allowAll)
	n := 0
	for _, tc := range []struct {
		in   string
		want limit
	}{
		{`{"kind":"credits","quota":100}`, limit{Kind: "credits", Name: "credits", Quota: 100, Remaining: 100, ResetAfter: "0s"}},
		{`{"kind":"window","quota":1000,"period":"1h"}`, limit{Kind: "window", Name: "hour", Quota: 1000, Period: "1h0m0s", Remaining: 1000, ResetAfter: "30m0s"}},
		{`{"kind":"window","quota":7,"period":"90s","name":"ninety"}`, limit{Kind: "window", Name: "ninety", Quota: 7, Period: "1m30s", Remaining: 7, ResetAfter: "1m30s"}},
		{`{"kind":"month","quota":5,"location":"UTC"}`, limit{Kind: "month", Name: "month", Quota: 5, Location: "UTC", Remaining: 5, ResetAfter: "515h30m0s"}},
		{`{"kind":"month","quota":5}`, limit{Kind: "month", Name: "month", Quota: 5, Location: "UTC", Remaining: 5, ResetAfter: "515h30m0s"}},
		{`{"kind":"rate","n":10,"per":"1s","burst":20}`, limit{Kind: "rate", Name: "rate", N: 10, Per: "1s", Burst: 20, Remaining: 20, ResetAfter: "0s"}},
	} {
		n++
		k := fmt.Sprintf("limit-%d", n)
		got := want[key](t, do(t, h, "POST", "/keys", `{"key":"`+k+`","limits":[`+tc.in+`]}`), http.StatusCreated)
		if len(got.Limits) != 1 || got.Limits[0] != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.in, got.Limits, tc.want)
		}
	}
	for _, in := range []string{
		`{}`,
		`{"kind":"bucket","quota":1}`,
		`{"kind":"credits"}`,
		`{"kind":"credits","quota":0}`,
		`{"kind":"credits","quota":-1}`,
		`{"kind":"credits","quota":100,"period":"1h"}`,
		`{"kind":"credits","quota":36028797018963968}`,
		`{"kind":"credits","quota":1,"name":""}`,
		`{"kind":"credits","quota":1,"name":"a\"b"}`,
		`{"kind":"window","quota":10}`,
		`{"kind":"window","quota":10,"period":"500ms"}`,
		`{"kind":"window","quota":10,"period":"an hour"}`,
		`{"kind":"window","quota":10,"period":"1h","burst":3}`,
		`{"kind":"window","quota":4294967296,"period":"1h"}`,
		`{"kind":"month","quota":5,"location":"Local"}`,
		`{"kind":"month","quota":5,"location":""}`,
		`{"kind":"month","quota":5,"location":"Mars/Olympus_Mons"}`,
		`{"kind":"month","quota":5,"period":"720h"}`,
		`{"kind":"rate","n":10,"per":"1s"}`,
		`{"kind":"rate","n":0,"per":"1s","burst":1}`,
		`{"kind":"rate","n":10,"per":"-1s","burst":1}`,
		`{"kind":"rate","quota":10,"n":10,"per":"1s","burst":1}`,
		`{"kind":"credits","quota":1},{"kind":"credits","quota":2}`,
		strings.Repeat(`{"kind":"credits","quota":1},`, 8) + `{"kind":"credits","quota":1}`,
	} {
		n++
		p := wantProblem(t, do(t, h, "POST", "/keys", fmt.Sprintf(`{"key":"bad-%d","limits":[%s]}`, n, in)), http.StatusBadRequest, "invalid_limit")
		if !strings.HasPrefix(p.Detail, engine.ErrInvalidLimit.Error()+": ") {
			t.Errorf("%s: detail %q does not start with the sentinel's message", in, p.Detail)
		}
	}
	// A member of the wrong type is a 400 of the JSON.
	wantProblem(t, do(t, h, "POST", "/keys", `{"key":"x","limits":[{"kind":"credits","quota":"100"}]}`), http.StatusBadRequest, "bad_request")
	wantProblem(t, do(t, h, "POST", "/keys", `{"key":"x","limits":[{"kind":"credits","quota":1.5}]}`), http.StatusBadRequest, "bad_request")
}

func TestByID(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, allowAll)
	if err := eng.Register(t.Context(), "k", engine.Credits(10), engine.PerWindow(100, time.Hour)); err != nil {
		t.Fatal(err)
	}
	id := idOf("k")
	if _, err := eng.Consume(t.Context(), "k", 4); err != nil {
		t.Fatal(err)
	}

	k := want[key](t, do(t, h, "GET", "/keys/"+id, ""), http.StatusOK)
	if k.ID != id || k.Revoked || k.Limits[0].Remaining != 6 || k.Limits[1].Remaining != 96 {
		t.Fatalf("status %+v", k)
	}
	// Upper-case hex is the same ID.
	want[key](t, do(t, h, "GET", "/keys/"+strings.ToUpper(id), ""), http.StatusOK)
	// HEAD is GET without the body.
	if r := do(t, h, "HEAD", "/keys/"+id, ""); r.Code != http.StatusOK {
		t.Fatalf("HEAD: %d", r.Code)
	}

	k = want[key](t, do(t, h, "POST", "/keys/"+id+"/top-up", `{"amount":5}`), http.StatusOK)
	if k.Limits[0].Quota != 15 || k.Limits[0].Remaining != 11 {
		t.Fatalf("after top up %+v", k.Limits[0])
	}
	wantProblem(t, do(t, h, "POST", "/keys/"+id+"/top-up", `{"amount":0}`), http.StatusBadRequest, "invalid_amount")
	wantProblem(t, do(t, h, "POST", "/keys/"+id+"/top-up", `{}`), http.StatusBadRequest, "invalid_amount")
	wantProblem(t, do(t, h, "POST", "/keys/"+id+"/top-up", ``), http.StatusBadRequest, "bad_request")

	k = want[key](t, do(t, h, "POST", "/keys/"+id+"/reset", ""), http.StatusOK)
	if k.Limits[0].Remaining != 15 || k.Limits[1].Remaining != 100 {
		t.Fatalf("after reset %+v", k.Limits)
	}
	want[key](t, do(t, h, "POST", "/keys/"+id+"/reset", "{}"), http.StatusOK)

	// Revoke is idempotent.
	for range 2 {
		if k = want[key](t, do(t, h, "POST", "/keys/"+id+"/revoke", ""), http.StatusOK); !k.Revoked {
			t.Fatalf("after revoke %+v", k)
		}
	}
	if d, _ := eng.Consume(t.Context(), "k", 1); d.Reason != engine.Revoked {
		t.Fatalf("consume after revoke: %v", d.Reason)
	}
	// A revoked key may be reset; it stays revoked.
	if k = want[key](t, do(t, h, "POST", "/keys/"+id+"/reset", ""), http.StatusOK); !k.Revoked {
		t.Fatalf("reset unrevoked %+v", k)
	}

	want[struct{}](t, do(t, h, "DELETE", "/keys/"+id, ""), http.StatusNoContent)
	if _, err := eng.Status("k"); !errors.Is(err, engine.ErrUnknownKey) {
		t.Fatalf("after delete: %v", err)
	}
	// Every call on a key that is not there is 404, delete included.
	for _, c := range [][2]string{{"GET", ""}, {"DELETE", ""}, {"POST", "/revoke"}, {"POST", "/reset"}, {"POST", "/top-up"}} {
		body := ""
		if c[1] == "/top-up" {
			body = `{"amount":1}`
		}
		p := wantProblem(t, do(t, h, c[0], "/keys/"+id+c[1], body), http.StatusNotFound, "unknown_key")
		if !strings.HasPrefix(p.Detail, engine.ErrUnknownKey.Error()) {
			t.Errorf("detail %q", p.Detail)
		}
	}
	// A malformed ID is a 400 that does not echo it: a careless client may
	// put a raw key there.
	for _, bad := range []string{"sk_notanidatall", id[:63], id + "0", strings.Repeat("g", 64), "%2F" + id[3:]} {
		r := do(t, h, "GET", "/keys/"+bad, "")
		p := wantProblem(t, r, http.StatusBadRequest, "invalid_key")
		if strings.Contains(r.Body, bad) {
			t.Errorf("%s echoed: %s", bad, p.Detail)
		}
	}
	// Revoke, reset and delete take no body but {}.
	if err := eng.Register(t.Context(), "k", engine.Credits(10)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/revoke", "/reset"} {
		wantProblem(t, do(t, h, "POST", "/keys/"+id+p, `{"key":"k"}`), http.StatusBadRequest, "bad_request")
	}
	wantProblem(t, do(t, h, "DELETE", "/keys/"+id, `{"force":true}`), http.StatusBadRequest, "bad_request")
	want[struct{}](t, do(t, h, "DELETE", "/keys/"+id, `{}`), http.StatusNoContent)
}

func TestByKey(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, allowAll)
	if err := eng.Register(t.Context(), "k", engine.Credits(10)); err != nil {
		t.Fatal(err)
	}
	id := idOf("k")
	if _, err := eng.Consume(t.Context(), "k", 3); err != nil {
		t.Fatal(err)
	}
	k := want[key](t, do(t, h, "POST", "/by-key/status", `{"key":"k"}`), http.StatusOK)
	if k.ID != id || k.Limits[0].Remaining != 7 || k.Key != "" {
		t.Fatalf("status %+v", k)
	}
	k = want[key](t, do(t, h, "POST", "/by-key/top-up", `{"key":"k","amount":10}`), http.StatusOK)
	if k.Limits[0].Quota != 20 || k.Limits[0].Remaining != 17 {
		t.Fatalf("top up %+v", k)
	}
	k = want[key](t, do(t, h, "POST", "/by-key/reset", `{"key":"k"}`), http.StatusOK)
	if k.Limits[0].Remaining != 20 {
		t.Fatalf("reset %+v", k)
	}
	// Set limits carries the units spent over, and may be repeated.
	if _, err := eng.Consume(t.Context(), "k", 5); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		k = want[key](t, do(t, h, "POST", "/by-key/set-limits", `{"key":"k","limits":[{"kind":"credits","quota":50},{"kind":"window","quota":9,"period":"1m"}]}`), http.StatusOK)
		if len(k.Limits) != 2 || k.Limits[0].Quota != 50 || k.Limits[0].Remaining != 45 || k.Limits[1].Name != "minute" {
			t.Fatalf("set limits %+v", k.Limits)
		}
	}
	wantProblem(t, do(t, h, "POST", "/by-key/set-limits", `{"key":"k","limits":[]}`), http.StatusBadRequest, "invalid_limit")
	wantProblem(t, do(t, h, "POST", "/by-key/set-limits", `{"key":"nobody","limits":[{"kind":"credits","quota":1}]}`), http.StatusNotFound, "unknown_key")

	for range 2 {
		if k = want[key](t, do(t, h, "POST", "/by-key/revoke", `{"key":"k"}`), http.StatusOK); !k.Revoked {
			t.Fatalf("revoke %+v", k)
		}
	}
	want[struct{}](t, do(t, h, "POST", "/by-key/delete", `{"key":"k"}`), http.StatusNoContent)
	for _, p := range []string{"status", "revoke", "delete", "reset"} {
		wantProblem(t, do(t, h, "POST", "/by-key/"+p, `{"key":"k"}`), http.StatusNotFound, "unknown_key")
		wantProblem(t, do(t, h, "POST", "/by-key/"+p, `{}`), http.StatusBadRequest, "invalid_key")
		wantProblem(t, do(t, h, "POST", "/by-key/"+p, `{"key":""}`), http.StatusBadRequest, "invalid_key")
		wantProblem(t, do(t, h, "POST", "/by-key/"+p, ``), http.StatusBadRequest, "bad_request")
	}
	wantProblem(t, do(t, h, "POST", "/by-key/top-up", `{"key":"k","amount":1}`), http.StatusNotFound, "unknown_key")
	wantProblem(t, do(t, h, "POST", "/by-key/top-up", `{"key":"k"}`), http.StatusBadRequest, "invalid_amount")

	// A key without credits: 409.
	if err := eng.Register(t.Context(), "w", engine.PerWindow(5, time.Hour)); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, do(t, h, "POST", "/by-key/top-up", `{"key":"w","amount":1}`), http.StatusConflict, "no_credits")
	wantProblem(t, do(t, h, "POST", "/keys/"+idOf("w")+"/top-up", `{"amount":1}`), http.StatusConflict, "no_credits")
}

func TestRotate(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, allowAll)
	if err := eng.Register(t.Context(), "old", engine.Credits(10)); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Consume(t.Context(), "old", 4); err != nil {
		t.Fatal(err)
	}
	// To a given key, with a grace: it is not echoed.
	r := do(t, h, "POST", "/by-key/rotate", `{"key":"old","new_key":"new","grace":"1h"}`)
	k := want[key](t, r, http.StatusCreated)
	if k.ID != idOf("new") || k.RotatedFrom != idOf("old") || k.Key != "" || k.Limits[0].Remaining != 6 || strings.Contains(r.Body, `"new"`) {
		t.Fatalf("rotate %s", r.Body)
	}
	if loc := r.Header.Get("Location"); loc != "../keys/"+idOf("new") {
		t.Fatalf("Location %q", loc)
	}
	o := want[key](t, do(t, h, "GET", "/keys/"+idOf("old"), ""), http.StatusOK)
	if !o.RotatedOut || o.Revoked || o.GraceUntil == "" {
		t.Fatalf("old key %+v", o)
	}
	// Not idempotent: the new key exists, and the old key was rotated out.
	wantProblem(t, do(t, h, "POST", "/by-key/rotate", `{"key":"old","new_key":"new","grace":"1h"}`), http.StatusConflict, "key_exists")
	wantProblem(t, do(t, h, "POST", "/by-key/rotate", `{"key":"old","new_key":"newer","grace":"1h"}`), http.StatusConflict, "rotated")
	wantProblem(t, do(t, h, "POST", "/by-key/set-limits", `{"key":"old","limits":[{"kind":"credits","quota":1}]}`), http.StatusConflict, "rotated")
	wantProblem(t, do(t, h, "POST", "/keys/"+idOf("old")+"/top-up", `{"amount":1}`), http.StatusConflict, "rotated")

	// To a generated key: shown once.
	r = do(t, h, "POST", "/by-key/rotate", `{"key":"new"}`)
	g := want[key](t, r, http.StatusCreated)
	if !keyFormat.MatchString(g.Key) || g.ID != idOf(g.Key) || g.RotatedFrom != idOf("new") {
		t.Fatalf("rotate to a generated key %s", r.Body)
	}
	if st, err := eng.Status(g.Key); err != nil || st.Limits[0].Remaining != 6 {
		t.Fatalf("new key %+v, %v", st, err)
	}
	// Without a grace the old key is revoked at once.
	if n := want[key](t, do(t, h, "POST", "/by-key/status", `{"key":"new"}`), http.StatusOK); !n.Revoked || !n.RotatedOut {
		t.Fatalf("rotated without grace %+v", n)
	}

	wantProblem(t, do(t, h, "POST", "/by-key/rotate", `{"key":"nobody"}`), http.StatusNotFound, "unknown_key")
	wantProblem(t, do(t, h, "POST", "/by-key/rotate", `{"new_key":"x"}`), http.StatusBadRequest, "invalid_key")
	wantProblem(t, do(t, h, "POST", "/by-key/rotate", `{"key":"`+g.Key+`","new_key":"`+g.Key+`"}`), http.StatusConflict, "key_exists")
	wantProblem(t, do(t, h, "POST", "/by-key/rotate", `{"key":"`+g.Key+`","grace":"-1s"}`), http.StatusBadRequest, "invalid_amount")
	wantProblem(t, do(t, h, "POST", "/by-key/rotate", `{"key":"`+g.Key+`","grace":"soon"}`), http.StatusBadRequest, "invalid_amount")
	if err := eng.Register(t.Context(), "taken", engine.Credits(1)); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, do(t, h, "POST", "/by-key/rotate", `{"key":"`+g.Key+`","new_key":"taken"}`), http.StatusConflict, "key_exists")

	// A revoked key cannot be rotated.
	if err := eng.Revoke(t.Context(), "taken"); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, do(t, h, "POST", "/by-key/rotate", `{"key":"taken"}`), http.StatusConflict, "key_revoked")

	// A chain of rotations in grace is bounded.
	if err := eng.Register(t.Context(), "c0", engine.Credits(1)); err != nil {
		t.Fatal(err)
	}
	for i := range engine.MaxRotationChain {
		want[key](t, do(t, h, "POST", "/by-key/rotate", fmt.Sprintf(`{"key":"c%d","new_key":"c%d","grace":"1h"}`, i, i+1)), http.StatusCreated)
	}
	wantProblem(t, do(t, h, "POST", "/by-key/rotate", fmt.Sprintf(`{"key":"c%d","grace":"1h"}`, engine.MaxRotationChain)), http.StatusConflict, "rotation_chain")
}

func TestRequestBodies(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, allowAll)
	if err := eng.Register(t.Context(), "k", engine.Credits(10)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body, detail string
	}{
		{"unknown member", `{"key":"k","amount":1,"amonut":2}`, `unknown member "amonut"`},
		{"unknown member in a limit", `{"key":"k","limits":[{"kind":"credits","quota":1,"extra":1}]}`, `unknown member "extra"`},
		{"unknown member not echoed", `{"key":"k","sk_Secret123":1}`, "unknown member"},
		{"trailing garbage", `{"key":"k","amount":1} garbage`, "more than one JSON value"},
		{"two values", `{"key":"k","amount":1}{"key":"k","amount":1}`, "more than one JSON value"},
		{"not JSON", `key=k`, "not valid JSON"},
		{"cut short", `{"key":"k","amount":`, "not valid JSON"},
		{"wrong type", `{"key":"k","amount":"1"}`, `"amount" must be an integer`},
		{"array", `[{"key":"k"}]`, "must be an object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/by-key/top-up"
			if strings.Contains(tc.body, "limits") {
				path = "/by-key/set-limits"
			}
			r := do(t, h, "POST", path, tc.body)
			p := wantProblem(t, r, http.StatusBadRequest, "bad_request")
			if !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("detail %q, want %q", p.Detail, tc.detail)
			}
			if strings.Contains(r.Body, "sk_Secret123") || strings.Contains(r.Body, "garbage") {
				t.Fatalf("the body is quoted back: %s", r.Body)
			}
		})
	}
	st, _ := eng.Status("k")
	if st.Limits[0].Limit.Quota() != 10 {
		t.Fatalf("a refused request changed the key: %+v", st)
	}

	// The media type.
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "bad/;;"} {
		r := httptest.NewRequest("POST", "/by-key/status", strings.NewReader(`{"key":"k"}`))
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		wantProblem(t, serve(h, r), http.StatusUnsupportedMediaType, "unsupported_media_type")
	}
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"} {
		r := httptest.NewRequest("POST", "/by-key/status", strings.NewReader(`{"key":"k"}`))
		r.Header.Set("Content-Type", ct)
		want[key](t, serve(h, r), http.StatusOK)
	}
}

func TestBodyTooLarge(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, allowAll)
	if err := eng.Register(t.Context(), "k", engine.Credits(10)); err != nil {
		t.Fatal(err)
	}
	// Exactly MaxBody bytes: read.
	body := `{"key":"k"}`
	body += strings.Repeat(" ", admin.MaxBody-len(body))
	want[key](t, do(t, h, "POST", "/by-key/status", body), http.StatusOK)
	// One more: 413, with its length announced or not.
	body += " "
	wantProblem(t, do(t, h, "POST", "/by-key/status", body), http.StatusRequestEntityTooLarge, "body_too_large")
	r := httptest.NewRequest("POST", "/by-key/status", io.MultiReader(strings.NewReader(body)))
	r.ContentLength = -1
	r.Header.Set("Content-Type", "application/json")
	wantProblem(t, serve(h, r), http.StatusRequestEntityTooLarge, "body_too_large")
	// Far more, announced: refused before it is read.
	r = httptest.NewRequest("POST", "/keys", &unread{t: t})
	r.ContentLength = 1 << 30
	r.Header.Set("Content-Type", "application/json")
	wantProblem(t, serve(h, r), http.StatusRequestEntityTooLarge, "body_too_large")
	// On every endpoint that takes a body.
	for _, rt := range admin.Routes() {
		if rt.Method != "POST" && rt.Method != "DELETE" {
			continue
		}
		path, _ := sample(rt, idOf("k"))
		wantProblem(t, do(t, h, rt.Method, path, `{"key":"k"}`+strings.Repeat(" ", admin.MaxBody)), http.StatusRequestEntityTooLarge, "body_too_large")
	}
}

func TestMethodNotAllowed(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, allowAll)
	allowed := map[string][]string{}
	for _, rt := range admin.Routes() {
		allowed[rt.Path] = append(allowed[rt.Path], rt.Method)
		if rt.Method == "GET" {
			allowed[rt.Path] = append(allowed[rt.Path], "HEAD")
		}
	}
	for path, methods := range allowed {
		slices.Sort(methods)
		p := strings.ReplaceAll(path, "{id}", idOf("k"))
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"} {
			if slices.Contains(methods, m) {
				continue
			}
			r := do(t, h, m, p, "")
			if m == "HEAD" {
				if r.Code != http.StatusMethodNotAllowed {
					t.Errorf("HEAD %s: %d", p, r.Code)
				}
			} else {
				wantProblem(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
			}
			if got := r.Header.Get("Allow"); got != strings.Join(methods, ", ") {
				t.Errorf("%s %s: Allow %q, want %q", m, p, got, strings.Join(methods, ", "))
			}
		}
	}
}

func TestNotFound(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, allowAll)
	for _, p := range []string{"/", "/key", "/keys/", "/keys/" + idOf("k") + "/", "/keys/" + idOf("k") + "/limits", "/by-key", "/by-key/sk_live_abc", "/admin/keys"} {
		r := do(t, h, "GET", p, "")
		wantProblem(t, r, http.StatusNotFound, "not_found")
		if strings.Contains(r.Body, "sk_live_abc") {
			t.Errorf("the path is echoed: %s", r.Body)
		}
	}
}

func TestQueryParameters(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, allowAll)
	if err := eng.Register(t.Context(), "k", engine.Credits(10)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, code string }{
		{"/keys/" + idOf("k") + "?key=sk_leak", "bad_request"},
		{"/keys?key=sk_leak", "bad_request"},
		{"/keys?sk_leak=1", "bad_request"},
		{"/keys?afterr=" + idOf("k"), "bad_request"},
		{"/keys?limit=1&limit=2", "bad_request"},
		{"/keys?limit=0", "bad_request"},
		{"/keys?limit=1001", "bad_request"},
		{"/keys?limit=sk_leak", "bad_request"},
		{"/keys?after=sk_leak", "invalid_key"},
		{"/keys?after=sk_leak%zz", "bad_request"},
		{"/stats?verbose=sk_leak", "bad_request"},
		{"/openapi.json?v=sk_leak", "bad_request"},
	} {
		r := do(t, h, "GET", tc.path, "")
		wantProblem(t, r, http.StatusBadRequest, tc.code)
		if strings.Contains(r.Body, "sk_leak") {
			t.Errorf("%s: echoed: %s", tc.path, r.Body)
		}
	}
	want[key](t, do(t, h, "POST", "/by-key/status?", `{"key":"k"}`), http.StatusOK)
}

func TestList(t *testing.T) {
	eng := newEngine(t)
	h := admin.Handler(eng, allowAll)
	if pg := want[keyPage](t, do(t, h, "GET", "/keys", ""), http.StatusOK); len(pg.Keys) != 0 || pg.Next != "" || !strings.Contains(do(t, h, "GET", "/keys", "").Body, `"keys":[]`) {
		t.Fatalf("empty engine: %+v", pg)
	}
	var ids []string
	for i := range 25 {
		k := fmt.Sprintf("key-%d", i)
		if err := eng.Register(t.Context(), k, engine.Credits(int64(i+1))); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, idOf(k))
	}
	if err := eng.Revoke(t.Context(), "key-3"); err != nil {
		t.Fatal(err)
	}
	if err := eng.Rotate(t.Context(), "key-4", "key-4b", time.Hour); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, idOf("key-4b"))
	slices.Sort(ids)

	// The default page holds them all.
	pg := want[keyPage](t, do(t, h, "GET", "/keys", ""), http.StatusOK)
	if len(pg.Keys) != 26 || pg.Next != "" {
		t.Fatalf("%d keys, next %q", len(pg.Keys), pg.Next)
	}
	for i, k := range pg.Keys {
		if k.ID != ids[i] {
			t.Fatalf("key %d: %s, want %s", i, k.ID, ids[i])
		}
		switch k.ID {
		case idOf("key-3"):
			if !k.Revoked {
				t.Errorf("key-3 not revoked: %+v", k)
			}
		case idOf("key-4"):
			if !k.RotatedOut || k.GraceUntil == "" {
				t.Errorf("key-4 not rotated out: %+v", k)
			}
		}
	}
	// Pages of 7, 1 and 26.
	for _, size := range []int{7, 1, 26} {
		var got []string
		after, pages := "", 0
		for {
			p := fmt.Sprintf("/keys?limit=%d", size)
			if after != "" {
				p += "&after=" + after
			}
			pg := want[keyPage](t, do(t, h, "GET", p, ""), http.StatusOK)
			pages++
			for _, k := range pg.Keys {
				got = append(got, k.ID)
			}
			if pg.Next == "" {
				break
			}
			if pg.Next != pg.Keys[len(pg.Keys)-1].ID || len(pg.Keys) != size {
				t.Fatalf("page of %d keys, next %s", len(pg.Keys), pg.Next)
			}
			after = pg.Next
		}
		if !slices.Equal(got, ids) || pages != (len(ids)+size-1)/size {
			t.Fatalf("pages of %d: %d pages, %d keys", size, pages, len(got))
		}
	}
	// After an ID that is no key: the keys above it.
	mid := ids[10][:63] + "0"
	if mid >= ids[10] {
		mid = ids[10]
	}
	pg = want[keyPage](t, do(t, h, "GET", "/keys?limit=1000&after="+mid, ""), http.StatusOK)
	if n := len(pg.Keys); n < 15 || n > 16 || pg.Keys[0].ID < mid {
		t.Fatalf("after %s: %d keys from %s", mid, n, pg.Keys[0].ID)
	}
	// After the last: an empty page.
	pg = want[keyPage](t, do(t, h, "GET", "/keys?after="+ids[len(ids)-1], ""), http.StatusOK)
	if len(pg.Keys) != 0 || pg.Next != "" {
		t.Fatalf("after the last: %+v", pg)
	}
}

// failStore is a Store whose Save fails while fail is set.
type failStore struct{ fail atomic.Bool }

func (s *failStore) Load(context.Context, func(engine.Record) error) error { return nil }
func (s *failStore) Save(context.Context, ...engine.Record) error {
	if s.fail.Load() {
		return errors.New("disk on fire")
	}
	return nil
}
func (s *failStore) Close() error { return nil }

func TestEngineFailures(t *testing.T) {
	t.Run("store", func(t *testing.T) {
		st := &failStore{}
		eng := newEngine(t, engine.WithStore(st))
		h := admin.Handler(eng, allowAll)
		want[key](t, do(t, h, "POST", "/keys", `{"key":"k","limits":[{"kind":"credits","quota":1}]}`), http.StatusCreated)
		st.fail.Store(true)
		p := wantProblem(t, do(t, h, "POST", "/keys", `{"key":"k2","limits":[{"kind":"credits","quota":1}]}`), http.StatusServiceUnavailable, "store")
		if !strings.HasPrefix(p.Detail, engine.ErrStore.Error()) {
			t.Fatalf("detail %q", p.Detail)
		}
		wantProblem(t, do(t, h, "POST", "/keys/"+idOf("k")+"/reset", ""), http.StatusServiceUnavailable, "store")
		wantProblem(t, do(t, h, "POST", "/by-key/revoke", `{"key":"k"}`), http.StatusServiceUnavailable, "store")
		st.fail.Store(false)
		s := want[map[string]any](t, do(t, h, "GET", "/stats", ""), http.StatusOK)
		if s["store_errors"].(float64) < 1 || !strings.Contains(s["last_store_error"].(string), "disk on fire") {
			t.Fatalf("stats %v", s)
		}
	})
	t.Run("closed", func(t *testing.T) {
		eng := newEngine(t)
		h := admin.Handler(eng, allowAll)
		if err := eng.Register(t.Context(), "k", engine.Credits(1)); err != nil {
			t.Fatal(err)
		}
		_ = eng.Close()
		wantProblem(t, do(t, h, "POST", "/by-key/status", `{"key":"k"}`), http.StatusServiceUnavailable, "closed")
		wantProblem(t, do(t, h, "GET", "/keys/"+idOf("k"), ""), http.StatusServiceUnavailable, "closed")
		wantProblem(t, do(t, h, "POST", "/keys/"+idOf("k")+"/revoke", ""), http.StatusServiceUnavailable, "closed")
		wantProblem(t, do(t, h, "POST", "/keys", `{"limits":[{"kind":"credits","quota":1}]}`), http.StatusServiceUnavailable, "closed")
	})
	t.Run("nil engine", func(t *testing.T) {
		h := admin.Handler(nil, allowAll)
		wantProblem(t, do(t, h, "GET", "/keys", ""), http.StatusServiceUnavailable, "unavailable")
		if r := do(t, h, "GET", "/openapi.json", ""); r.Code != http.StatusOK {
			t.Fatalf("openapi.json without an engine: %d", r.Code)
		}
	})
	t.Run("clock", func(t *testing.T) {
		eng := newEngine(t, engine.WithClock(func() time.Time { return time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC) }))
		h := admin.Handler(eng, allowAll)
		wantProblem(t, do(t, h, "POST", "/keys", `{"key":"k","limits":[{"kind":"credits","quota":1}]}`), http.StatusInternalServerError, "clock")
	})
	t.Run("context", func(t *testing.T) {
		eng := newEngine(t)
		h := admin.Handler(eng, allowAll)
		if err := eng.Register(t.Context(), "k", engine.Credits(1)); err != nil {
			t.Fatal(err)
		}
		canceled, cancel := context.WithCancel(t.Context())
		cancel()
		expired, cancel2 := context.WithDeadline(t.Context(), time.Unix(0, 0))
		defer cancel2()
		for _, tc := range []struct {
			ctx    context.Context
			status int
			code   string
		}{{canceled, admin.StatusClientClosedRequest, "canceled"}, {expired, http.StatusServiceUnavailable, "timeout"}} {
			r := httptest.NewRequestWithContext(tc.ctx, "POST", "/by-key/reset", strings.NewReader(`{"key":"k"}`))
			r.Header.Set("Content-Type", "application/json")
			p := wantProblem(t, serve(h, r), tc.status, tc.code)
			if tc.status == admin.StatusClientClosedRequest && p.Title != "Client Closed Request" {
				t.Errorf("title %q", p.Title)
			}
		}
	})
}

func TestStats(t *testing.T) {
	eng := newEngine(t, engine.WithCounting())
	h := admin.Handler(eng, allowAll)
	if err := eng.Register(t.Context(), "k", engine.Credits(1)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := eng.Consume(t.Context(), "k", 1); err != nil {
			t.Fatal(err)
		}
	}
	r := do(t, h, "GET", "/stats", "")
	s := want[struct {
		Granted      int64 `json:"granted"`
		Exhausted    int64 `json:"exhausted"`
		Revoked      int64 `json:"revoked"`
		UnknownKey   int64 `json:"unknown_key"`
		UnitsGranted int64 `json:"units_granted"`
		Rounds       int64 `json:"rounds"`
		Records      int64 `json:"records"`
		Reservations int64 `json:"reservations"`
		RoundLatency struct {
			BoundsSeconds []float64 `json:"bounds_seconds"`
			Counts        []uint64  `json:"counts"`
			Count         uint64    `json:"count"`
			SumSeconds    float64   `json:"sum_seconds"`
		} `json:"round_latency"`
		StoreErrors int64 `json:"store_errors"`
		Keys        int64 `json:"keys"`
		RevokedKeys int64 `json:"revoked_keys"`
		RotatedOut  int64 `json:"rotated_out"`
		Recovered   int64 `json:"recovered"`
		InFlight    int64 `json:"in_flight"`
	}](t, r, http.StatusOK)
	if s.Granted != 1 || s.Exhausted != 2 || s.UnitsGranted != 1 || s.Keys != 1 || len(s.RoundLatency.BoundsSeconds) == 0 {
		t.Fatalf("stats %s", r.Body)
	}
}

func TestGeneratedKeys(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		k := admin.NewKey()
		if !keyFormat.MatchString(k) || !regexp.MustCompile(engine.KeyPattern).MatchString(k) || seen[k] {
			t.Fatalf("key %q (seen: %v)", k, seen[k])
		}
		if err := engine.CheckKey(k); err != nil {
			t.Fatalf("key %q: %v", k, err)
		}
		if !strings.HasPrefix(k, admin.KeyPrefix) {
			t.Fatalf("key %q without %q", k, admin.KeyPrefix)
		}
		seen[k] = true
	}
}
