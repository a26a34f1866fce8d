package core

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/allot-go/allot/engine"
)

// FuzzKeyExtraction feeds arbitrary header and query values to the key
// extraction and checks it against a model written independently: it
// never panics; every X-API-Key field line (xKey split at newlines), every
// Authorization: Bearer credential (auth split at newlines) and, when
// enabled, every api_key value that net/url decodes, is a candidate; no
// candidate is no key, candidates that differ are ErrAmbiguousKey, one
// empty key is ErrEmptyKey, and one key, however often it is repeated, is
// the key.
func FuzzKeyExtraction(f *testing.F) {
	f.Add("key-a", "", "", true)
	f.Add("", "Bearer key-b", "", false)
	f.Add("", "bearer   spaced", "", true)
	f.Add("", "Basic dXNlcjpwYXNz", "api_key=k%41&x=1", true)
	f.Add("", "", "api_key=%zz", true)
	f.Add("", "Bearer", "api%5Fkey=a+b", true)
	f.Add("", "", "x=1&api_key=&api_key=2", true)
	f.Add(" \nkey", "", "", false)
	f.Add("key", "Bearer other", "", false)
	f.Add("key\nkey", "Bearer key", "api_key=key", true)
	f.Add("", "Basic x\nBearer k", "", false)
	f.Add("key", "", "api_key=other", true)
	eng, err := engine.New()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = eng.Close() })
	plain := New[func(*Config)](eng)
	withQuery := New(eng, func(c *Config) { c.QueryKey = "api_key" })
	f.Fuzz(func(t *testing.T, xKey, auth, query string, enableQuery bool) {
		r := &http.Request{Header: http.Header{}, URL: &url.URL{RawQuery: query}}
		var cands []string
		if xKey != "" {
			r.Header["X-Api-Key"] = strings.Split(xKey, "\n")
			for _, v := range r.Header["X-Api-Key"] {
				cands = append(cands, strings.Trim(v, " \t\r"))
			}
		}
		if auth != "" {
			r.Header["Authorization"] = strings.Split(auth, "\n")
			for _, a := range r.Header["Authorization"] {
				scheme, rest := a, ""
				if i := strings.IndexAny(a, " \t"); i >= 0 {
					scheme, rest = a[:i], a[i:]
				}
				if strings.EqualFold(scheme, "bearer") {
					cands = append(cands, strings.Trim(rest, " \t\r"))
				}
			}
		}
		g := plain
		if enableQuery {
			g = withQuery
			vals, perr := url.ParseQuery(query)
			if perr != nil {
				_, _ = g.key(r) // only: no panic
				return
			}
			cands = append(cands, vals["api_key"]...)
		}
		want, wantErr := "", error(nil)
		for i, c := range cands {
			if i == 0 {
				want = c
			} else if c != want {
				want, wantErr = "", ErrAmbiguousKey
				break
			}
		}
		if len(cands) > 0 && wantErr == nil && want == "" {
			wantErr = ErrEmptyKey
		}
		key, err := g.key(r)
		if key != want || !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
			t.Fatalf("X-API-Key %q, Authorization %q, query %q (enabled %v): got %q, %v; want %q, %v",
				xKey, auth, query, enableQuery, key, err, want, wantErr)
		}
	})
}
