package core

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/allot-go/allot/engine"
)

// FuzzKeyExtraction feeds arbitrary header and query values to the key
// extraction: it never panics, an X-API-Key value wins as it is, a Bearer
// credential is returned without its scheme, and the query is read only when
// enabled, decoding as net/url does.
func FuzzKeyExtraction(f *testing.F) {
	f.Add("key-a", "", "", true)
	f.Add("", "Bearer key-b", "", false)
	f.Add("", "bearer   spaced", "", true)
	f.Add("", "Basic dXNlcjpwYXNz", "api_key=k%41&x=1", true)
	f.Add("", "", "api_key=%zz", true)
	f.Add("", "Bearer", "api%5Fkey=a+b", true)
	f.Add("", "", "x=1&api_key=&api_key=2", true)
	eng, err := engine.New()
	if err != nil {
		f.Fatal(err)
	}
	plain := New[func(*Config)](eng)
	withQuery := New(eng, func(c *Config) { c.QueryKey = "api_key" })
	f.Fuzz(func(t *testing.T, xKey, auth, query string, enableQuery bool) {
		r := &http.Request{Header: http.Header{}, URL: &url.URL{RawQuery: query}}
		if xKey != "" {
			r.Header["X-Api-Key"] = []string{xKey}
		}
		if auth != "" {
			r.Header["Authorization"] = []string{auth}
		}
		g := plain
		if enableQuery {
			g = withQuery
		}
		key, err := g.key(r)
		switch {
		case xKey != "":
			if key != xKey || err != nil {
				t.Fatalf("X-API-Key %q: got %q %v", xKey, key, err)
			}
		case len(auth) > 7 && strings.EqualFold(auth[:7], "Bearer "):
			if want := strings.TrimLeft(auth[7:], " "); key != want || err != nil {
				t.Fatalf("Authorization %q: got %q %v, want %q", auth, key, err, want)
			}
		case !enableQuery:
			if key != "" || err != nil {
				t.Fatalf("query read while disabled: %q %v", key, err)
			}
		default:
			vals, perr := url.ParseQuery(query)
			if err == nil && perr == nil && key != vals.Get("api_key") {
				t.Fatalf("query %q: got %q, net/url says %q", query, key, vals.Get("api_key"))
			}
		}
	})
}
