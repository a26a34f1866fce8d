package admin_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter/admin"
)

// exchange is a request and its response, as the client saw them.
type exchange struct {
	method, url, reqBody string
	status               int
	header               http.Header
	body                 string
}

// recorder is a RoundTripper that keeps every exchange.
type recorder struct {
	rt  http.RoundTripper
	mu  sync.Mutex
	all []exchange
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		reqBody, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := r.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	r.mu.Lock()
	r.all = append(r.all, exchange{req.Method, req.URL.String(), string(reqBody), resp.StatusCode, resp.Header.Clone(), string(body)})
	r.mu.Unlock()
	return resp, nil
}

// last returns the index of the last exchange.
func (r *recorder) last() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all) - 1
}

// lockedBuffer is a log sink for several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// client calls the admin API of a loopback server.
type client struct {
	t     *testing.T
	base  string
	token string
	hc    *http.Client
}

func (c *client) call(method, path, body string) resp {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp{res.StatusCode, res.Header, string(b)}
}

var generated = regexp.MustCompile(admin.KeyPrefix + `[0-9A-Za-z]{36}`)

// TestEndToEnd drives every endpoint over a loopback server, under a
// prefix, with 10,000 keys to page through while others come and go, and
// then scans every URL, response and log line for raw keys: a raw key is
// only ever in the response that generated it.
func TestEndToEnd(t *testing.T) {
	eng := newEngine(t)
	var logs lockedBuffer
	const token = "admin-token-not-a-key"
	h := admin.Handler(eng,
		admin.WithAuthorize(func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+token }),
		admin.WithChallenge(`Bearer realm="allot-admin"`),
		admin.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", h))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	rec := &recorder{rt: srv.Client().Transport}
	c := &client{t: t, base: srv.URL + "/admin", token: token, hc: &http.Client{Transport: rec}}

	created := map[string]int{} // raw key -> the exchange that may show it (-1: none)

	// Unauthorised calls are refused, and change nothing.
	anon := &client{t: t, base: c.base, hc: c.hc}
	for _, rt := range admin.Routes() {
		path, body := sample(rt, idOf("k"))
		r := anon.call(rt.Method, path, body)
		wantProblem(t, r, http.StatusUnauthorized, "unauthorized")
		if r.Header.Get("WWW-Authenticate") != `Bearer realm="allot-admin"` {
			t.Fatalf("WWW-Authenticate %q", r.Header.Get("WWW-Authenticate"))
		}
	}
	wrong := &client{t: t, base: c.base, token: "guess", hc: c.hc}
	wantProblem(t, wrong.call("GET", "/keys", ""), http.StatusUnauthorized, "unauthorized")
	if eng.Len() != 0 {
		t.Fatalf("%d keys after unauthorised calls", eng.Len())
	}

	// Register: a generated key, and a given one.
	a := want[key](t, c.call("POST", "/keys", `{"limits":[{"kind":"credits","quota":100},{"kind":"rate","n":5,"per":"1s","burst":5}]}`), http.StatusCreated)
	created[a.Key] = rec.last()
	const b = "customer-b-secret"
	created[b] = -1
	want[key](t, c.call("POST", "/keys", `{"key":"`+b+`","limits":[{"kind":"window","quota":1000,"period":"1h"}]}`), http.StatusCreated)
	want[key](t, c.call("POST", "/keys", `{"key":"`+b+`","limits":[{"kind":"window","quota":1000,"period":"1h"}]}`), http.StatusOK)
	wantProblem(t, c.call("POST", "/keys", `{"key":"`+b+`","limits":[{"kind":"window","quota":1001,"period":"1h"}]}`), http.StatusConflict, "key_exists")
	if _, err := eng.Consume(t.Context(), a.Key, 3); err != nil {
		t.Fatal(err)
	}

	// By ID.
	if k := want[key](t, c.call("GET", "/keys/"+a.ID, ""), http.StatusOK); k.Limits[0].Remaining != 97 {
		t.Fatalf("status %+v", k)
	}
	if k := want[key](t, c.call("POST", "/keys/"+a.ID+"/top-up", `{"amount":30}`), http.StatusOK); k.Limits[0].Remaining != 127 || k.Limits[0].Quota != 130 {
		t.Fatalf("top up %+v", k)
	}
	if k := want[key](t, c.call("POST", "/keys/"+a.ID+"/reset", ""), http.StatusOK); k.Limits[0].Remaining != 130 {
		t.Fatalf("reset %+v", k)
	}
	if k := want[key](t, c.call("POST", "/keys/"+a.ID+"/revoke", ""), http.StatusOK); !k.Revoked {
		t.Fatalf("revoke %+v", k)
	}
	want[struct{}](t, c.call("DELETE", "/keys/"+a.ID, ""), http.StatusNoContent)
	wantProblem(t, c.call("DELETE", "/keys/"+a.ID, ""), http.StatusNotFound, "unknown_key")
	wantProblem(t, c.call("GET", "/keys/"+a.ID, ""), http.StatusNotFound, "unknown_key")

	// By raw key.
	kb := `{"key":"` + b + `"}`
	if k := want[key](t, c.call("POST", "/by-key/status", kb), http.StatusOK); k.ID != idOf(b) {
		t.Fatalf("status %+v", k)
	}
	want[key](t, c.call("POST", "/by-key/set-limits", `{"key":"`+b+`","limits":[{"kind":"window","quota":1000,"period":"1h"},{"kind":"credits","quota":10}]}`), http.StatusOK)
	if k := want[key](t, c.call("POST", "/by-key/top-up", `{"key":"`+b+`","amount":5}`), http.StatusOK); k.Limits[1].Quota != 15 {
		t.Fatalf("top up %+v", k)
	}
	want[key](t, c.call("POST", "/by-key/reset", kb), http.StatusOK)
	// Rotate to a generated key, then that one to a given key.
	g := want[key](t, c.call("POST", "/by-key/rotate", `{"key":"`+b+`","grace":"1h"}`), http.StatusCreated)
	created[g.Key] = rec.last()
	const d = "customer-d-secret"
	created[d] = -1
	want[key](t, c.call("POST", "/by-key/rotate", `{"key":"`+g.Key+`","new_key":"`+d+`"}`), http.StatusCreated)
	wantProblem(t, c.call("POST", "/by-key/rotate", `{"key":"`+g.Key+`","new_key":"another"}`), http.StatusConflict, "rotated")
	if k := want[key](t, c.call("POST", "/by-key/revoke", `{"key":"`+d+`"}`), http.StatusOK); !k.Revoked {
		t.Fatalf("revoke %+v", k)
	}
	want[struct{}](t, c.call("POST", "/by-key/delete", `{"key":"`+d+`"}`), http.StatusNoContent)
	wantProblem(t, c.call("POST", "/by-key/delete", `{"key":"`+d+`"}`), http.StatusNotFound, "unknown_key")
	want[map[string]any](t, c.call("GET", "/stats", ""), http.StatusOK)
	if r := c.call("GET", "/openapi.json", ""); r.Code != http.StatusOK || !json.Valid([]byte(r.Body)) {
		t.Fatalf("openapi.json: %d", r.Code)
	}

	// 413, 415, 400, 405, 404 over the wire.
	wantProblem(t, c.call("POST", "/by-key/status", `{"key":"`+b+`"}`+strings.Repeat(" ", admin.MaxBody)), http.StatusRequestEntityTooLarge, "body_too_large")
	wantProblem(t, c.call("POST", "/by-key/status", `{"key":"`+b+`","verbose":true}`), http.StatusBadRequest, "bad_request")
	wantProblem(t, c.call("POST", "/by-key/status", `{"key":"`+b+`"} {}`), http.StatusBadRequest, "bad_request")
	r := c.call("PUT", "/keys/"+idOf(b), "")
	wantProblem(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
	if r.Header.Get("Allow") != "DELETE, GET, HEAD" {
		t.Fatalf("Allow %q", r.Header.Get("Allow"))
	}
	wantProblem(t, c.call("GET", "/keys/"+idOf(b)+"/limits", ""), http.StatusNotFound, "not_found")

	// Pagination over 10,000 keys, while other keys are registered and
	// deleted: each of the 10,000 is listed exactly once, in order.
	const n = 10000
	bulk := map[string]bool{}
	for i := range n {
		k := fmt.Sprintf("bulk-%05d-%s", i, admin.NewKey())
		if err := eng.Register(t.Context(), k, engine.Credits(int64(i+1))); err != nil {
			t.Fatal(err)
		}
		bulk[idOf(k)] = true
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	churn := 0
	wg.Go(func() {
		// Register and delete keys, keeping one in ten, up to 1,000.
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("churn-%d-%s", i, admin.NewKey())
			if err := eng.Register(t.Context(), k, engine.Credits(1)); err != nil {
				t.Error(err)
				return
			}
			churn++
			if i%10 != 0 || i >= 10000 {
				if err := eng.Delete(t.Context(), k); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	seen, pages, prev, after := 0, 0, "", ""
	for {
		p := "/keys?limit=1000"
		if after != "" {
			p += "&after=" + after
		}
		pg := want[keyPage](t, c.call("GET", p, ""), http.StatusOK)
		pages++
		for _, k := range pg.Keys {
			if k.ID <= prev {
				t.Fatalf("page %d: %s after %s", pages, k.ID, prev)
			}
			prev = k.ID
			if bulk[k.ID] {
				seen++
			}
		}
		if pg.Next == "" {
			break
		}
		after = pg.Next
	}
	close(stop)
	wg.Wait()
	if seen != n {
		t.Fatalf("%d of the %d keys listed", seen, n)
	}
	t.Logf("%d keys listed in %d pages of up to 1000, %d other keys registered meanwhile (all but 1 in 10, up to 1,000, deleted)", n, pages, churn)

	// The scan: the four keys by name; the 10,000 and the churn's by their
	// prefixes, and every generated key by "sk_", which only the two
	// responses that generated a key may hold (a key's 27 digits after it).
	for _, m := range []string{"bulk-", "churn-"} {
		created[m] = -1
	}
	created[admin.KeyPrefix] = -2
	for k, at := range created {
		for i, x := range rec.all {
			if strings.Contains(x.url, k) {
				t.Errorf("exchange %d: the raw key %q is in the URL %s", i, k, x.url)
			}
			var hdr strings.Builder
			_ = x.header.Write(&hdr)
			inResponse := strings.Contains(x.body, k) || strings.Contains(hdr.String(), k)
			switch {
			case at == -2:
				if generated.MatchString(x.body+hdr.String()) && i != created[a.Key] && i != created[g.Key] {
					t.Errorf("exchange %d (%s %s): a generated key is in the response: %s", i, x.method, x.url, x.body)
				}
			case i == at && !inResponse:
				t.Errorf("exchange %d (%s %s) created %q and does not show it", i, x.method, x.url, k)
			case i != at && inResponse:
				t.Errorf("exchange %d (%s %s): the raw key %q is in the response: %s", i, x.method, x.url, k, x.body)
			}
		}
		if strings.Contains(logs.String(), k) {
			t.Errorf("the raw key %q is in the log", k)
		}
	}
	// The log has a line per request, with IDs.
	lines := strings.Count(logs.String(), "\n")
	if lines != len(rec.all) || !strings.Contains(logs.String(), `"id":"`+idOf(b)+`"`) || !strings.Contains(logs.String(), `"op":"rotateKeyByKey"`) {
		t.Fatalf("%d log lines for %d requests:\n%.2000s", lines, len(rec.all), logs.String())
	}
	t.Logf("%d exchanges and %d log lines scanned for %d raw keys", len(rec.all), lines, n+churn+4)
}
