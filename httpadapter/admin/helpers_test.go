package admin_test

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter/admin"
)

var allowAll = admin.WithAuthorize(func(*http.Request) bool { return true })

func newEngine(t testing.TB, opts ...engine.Option) *engine.Engine {
	t.Helper()
	eng, err := engine.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	return eng
}

func idOf(key string) string {
	id := engine.IDOf(key)
	return hex.EncodeToString(id[:])
}

// resp is an answer of the handler.
type resp struct {
	Code   int
	Header http.Header
	Body   string
}

// do sends a request to h, with Content-Type application/json if it has a
// body.
func do(t testing.TB, h http.Handler, method, path, body string) resp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, path, rd)
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	return serve(h, r)
}

func serve(h http.Handler, r *http.Request) resp {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return resp{rec.Code, rec.Header(), rec.Body.String()}
}

// key is a key in a response.
type key struct {
	ID          string  `json:"id"`
	Key         string  `json:"key"`
	RotatedFrom string  `json:"rotated_from"`
	Revoked     bool    `json:"revoked"`
	RotatedOut  bool    `json:"rotated_out"`
	GraceUntil  string  `json:"grace_until"`
	Recovered   bool    `json:"recovered"`
	Limits      []limit `json:"limits"`
}

type limit struct {
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Quota      int64  `json:"quota"`
	Period     string `json:"period"`
	Location   string `json:"location"`
	N          int64  `json:"n"`
	Per        string `json:"per"`
	Burst      int64  `json:"burst"`
	Remaining  int64  `json:"remaining"`
	ResetAfter string `json:"reset_after"`
}

type keyPage struct {
	Keys []key  `json:"keys"`
	Next string `json:"next"`
}

type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// want checks the status of a JSON answer and decodes it into v (which
// may be nil), strictly.
func want[T any](t testing.TB, r resp, status int) T {
	t.Helper()
	var v T
	if r.Code != status {
		t.Fatalf("status %d, want %d: %s", r.Code, status, r.Body)
	}
	if status == http.StatusNoContent {
		if r.Body != "" {
			t.Fatalf("204 with a body: %q", r.Body)
		}
		return v
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json: %s", ct, r.Body)
	}
	strict(t, r.Body, &v)
	return v
}

// wantProblem checks that r is a problem document of the given status and
// code, and returns it.
func wantProblem(t testing.TB, r resp, status int, code string) problem {
	t.Helper()
	if r.Code != status {
		t.Fatalf("status %d, want %d: %s", r.Code, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	var p problem
	strict(t, r.Body, &p)
	if p.Status != status || p.Code != code || p.Type != "about:blank" || p.Title == "" || p.Detail == "" {
		t.Fatalf("problem %+v, want status %d code %s", p, status, code)
	}
	return p
}

// strict decodes s into v, refusing members v does not have: the
// responses hold nothing the tests do not know of.
func strict(t testing.TB, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s: %v", s, err)
	}
}
