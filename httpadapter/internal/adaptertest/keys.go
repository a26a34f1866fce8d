package adaptertest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// The challenges of refusals for a missing, a bad and an ambiguous key.
const (
	challengeMissing   = `Bearer realm="api"`
	challengeInvalid   = `Bearer realm="api", error="invalid_token"`
	challengeAmbiguous = `Bearer realm="api", error="invalid_request"`
)

// keyRefusal is a request the middleware refuses for its key, and how.
type keyRefusal struct {
	name      string
	header    http.Header
	status    int
	challenge string
	detail    string // a part of the problem's detail
}

// checkKeyRefusal serves c's request and checks its refusal: status,
// challenge, a problem body and no rate-limit fields.
func checkKeyRefusal(t *testing.T, h http.Handler, c keyRefusal) {
	t.Helper()
	r := get("", "/")
	r.Header = c.header
	rec := serve(h, r)
	require.Equal(t, c.status, rec.Code, c.name)
	assert.Equal(t, c.challenge, rec.Header().Get("WWW-Authenticate"), c.name)
	p := CheckProblem(t, c.status, rec.Header(), rec.Body.Bytes())
	assert.Contains(t, p.Detail, c.detail, c.name)
	assert.Empty(t, rec.Header().Values("RateLimit"), c.name)
	assert.Empty(t, rec.Header().Values("RateLimit-Policy"), c.name)
}

// 401 for a missing, empty, unknown, revoked or too long key, with a
// challenge and a problem body, and without running the handler. A header
// that is sent counts as a key, even empty: an empty X-API-Key or an empty
// Bearer token is a malformed key (error="invalid_token", RFC 6750), not a
// missing one.
func testUnauthorized(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	register(t, eng, "gone", engine.Credits(10))
	require.NoError(t, eng.Revoke(context.Background(), "gone"))
	app := &ok{}
	h := mk(eng, app)
	long := strings.Repeat("k", engine.MaxKeyLen+1)

	for _, c := range []keyRefusal{
		{"missing", http.Header{}, 401, challengeMissing, "required"},
		{"other scheme", http.Header{"Authorization": {"Basic a2V5Og=="}}, 401, challengeMissing, "required"},
		{"scheme without space", http.Header{"Authorization": {"Bearerkey"}}, 401, challengeMissing, "required"},
		{"empty header", http.Header{"X-Api-Key": {""}}, 401, challengeInvalid, "empty"},
		{"blank header", http.Header{"X-Api-Key": {" \t "}}, 401, challengeInvalid, "empty"},
		{"bearer alone", http.Header{"Authorization": {"Bearer"}}, 401, challengeInvalid, "empty"},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, 401, challengeInvalid, "empty"},
		{"blank bearer", http.Header{"Authorization": {"bearer  \t  "}}, 401, challengeInvalid, "empty"},
		{"empty twice", http.Header{"X-Api-Key": {"", " "}, "Authorization": {"Bearer"}}, 401, challengeInvalid, "empty"},
		{"unknown", http.Header{"X-Api-Key": {"nope"}}, 401, challengeInvalid, "not valid"},
		{"unknown bearer", http.Header{"Authorization": {"Bearer nope"}}, 401, challengeInvalid, "not valid"},
		{"revoked", http.Header{"X-Api-Key": {"gone"}}, 401, challengeInvalid, "revoked"},
		{"too long", http.Header{"X-Api-Key": {long}}, 401, challengeInvalid, "malformed"},
		{"too long bearer", http.Header{"Authorization": {"Bearer " + long}}, 401, challengeInvalid, "malformed"},
	} {
		checkKeyRefusal(t, h, c)
	}
	assert.Equal(t, int64(0), app.calls.Load(), "the handler never runs for a refused request")

	// Accepted forms: either header, any case of the scheme, white space
	// around the key, the same key sent more than once, a header of
	// another scheme beside X-API-Key.
	accepted := []http.Header{
		{"X-Api-Key": {"key"}},
		{"X-Api-Key": {" key\t"}},
		{"Authorization": {"Bearer key"}},
		{"Authorization": {"bearer   key  "}},
		{"X-Api-Key": {"key", "key"}},
		{"X-Api-Key": {"key"}, "Authorization": {"Bearer key"}},
		{"X-Api-Key": {"key"}, "Authorization": {"Basic a2V5Og=="}},
	}
	for _, hd := range accepted {
		r := get("", "/")
		r.Header = hd
		assert.Equal(t, http.StatusOK, serve(h, r).Code, "%v", hd)
	}
	assert.Equal(t, int64(10-len(accepted)), remaining(t, eng, "key"))

	h = mk(eng, app, httpadapter.WithRealm(`my "api"`))
	rec := serve(h, get("", "/"))
	assert.Equal(t, `Bearer realm="my \"api\""`, rec.Header().Get("WWW-Authenticate"))
	rec = serve(h, get(" ", "/"))
	assert.Equal(t, `Bearer realm="my \"api\"", error="invalid_token"`, rec.Header().Get("WWW-Authenticate"))
}

// A request that carries several different keys, in X-API-Key field lines
// or an Authorization: Bearer credential, is ambiguous: 400 with
// error="invalid_request" (RFC 6750, section 3.1), nothing charged to any
// of them, and the handler does not run. An empty value counts: an empty
// X-API-Key followed by a real one is refused, not read as the second.
func testAmbiguousKey(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	register(t, eng, "other", engine.Credits(10))
	app := &ok{}
	h := mk(eng, app)

	for _, c := range []keyRefusal{
		{"empty then key", http.Header{"X-Api-Key": {"", "key"}}, 400, challengeAmbiguous, "several"},
		{"key then empty", http.Header{"X-Api-Key": {"key", ""}}, 400, challengeAmbiguous, "several"},
		{"two keys", http.Header{"X-Api-Key": {"key", "other"}}, 400, challengeAmbiguous, "several"},
		{"header and bearer", http.Header{"X-Api-Key": {"key"}, "Authorization": {"Bearer other"}}, 400, challengeAmbiguous, "several"},
		{"empty header and bearer", http.Header{"X-Api-Key": {""}, "Authorization": {"Bearer key"}}, 400, challengeAmbiguous, "several"},
		{"header and empty bearer", http.Header{"X-Api-Key": {"key"}, "Authorization": {"Bearer"}}, 400, challengeAmbiguous, "several"},
		{"two bearers", http.Header{"Authorization": {"Bearer key", "Bearer other"}}, 400, challengeAmbiguous, "several"},
	} {
		checkKeyRefusal(t, h, c)
	}
	assert.Equal(t, int64(0), app.calls.Load())
	assert.Equal(t, int64(10), remaining(t, eng, "key"))
	assert.Equal(t, int64(10), remaining(t, eng, "other"))

	// The same on the wire, where net/http parses the field lines: an
	// empty X-API-Key line before a real one.
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	require.NoError(t, err)
	req.Header["X-Api-Key"] = []string{"", "key"}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, challengeAmbiguous, resp.Header.Get("WWW-Authenticate"))
	CheckProblem(t, http.StatusBadRequest, resp.Header, body)
	assert.Equal(t, int64(0), app.calls.Load())
	assert.Equal(t, int64(10), remaining(t, eng, "key"))
}

// A key in the query is ignored unless WithQueryKey enables it. Then its
// values are keys like those of the headers: several that differ, in the
// query or between query and header, are ambiguous (400), an empty one is
// malformed (401 invalid_token).
func testQueryKey(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	register(t, eng, "a b+c", engine.Credits(10))
	app := &ok{}

	h := mk(eng, app)
	rec := serve(h, get("", "/?api_key=key"))
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
	assert.Equal(t, challengeMissing, rec.Header().Get("WWW-Authenticate"))
	assert.Equal(t, int64(0), app.calls.Load())

	h = mk(eng, app, httpadapter.WithQueryKey("api_key"))
	for _, c := range []struct {
		path      string
		header    string
		status    int
		challenge string
	}{
		{"/?api_key=key", "", http.StatusOK, ""},
		{"/?api%5Fkey=key", "", http.StatusOK, ""},
		{"/?api_key=a+b%2Bc", "", http.StatusOK, ""},
		{"/?api_key=key&x=1&api_key=key", "", http.StatusOK, ""},
		{"/?api_key=key", "key", http.StatusOK, ""},
		{"/?x=1&api_key=key&api_key=nope", "", http.StatusBadRequest, challengeAmbiguous},
		{"/?api_key=nope", "key", http.StatusBadRequest, challengeAmbiguous},
		{"/?api_key=", "key", http.StatusBadRequest, challengeAmbiguous},
		{"/?api_key=", "", http.StatusUnauthorized, challengeInvalid},
		{"/?api_key=nope", "", http.StatusUnauthorized, challengeInvalid},
		{"/?api_key=%zz", "", http.StatusUnauthorized, challengeInvalid},
		{"/?apikey=key", "", http.StatusUnauthorized, challengeMissing},
	} {
		rec := serve(h, get(c.header, c.path))
		assert.Equal(t, c.status, rec.Code, c.path)
		assert.Equal(t, c.challenge, rec.Header().Get("WWW-Authenticate"), c.path)
		if c.status != http.StatusOK {
			CheckProblem(t, c.status, rec.Header(), rec.Body.Bytes())
		}
	}
	assert.Equal(t, int64(6), remaining(t, eng, "key"))
	assert.Equal(t, int64(9), remaining(t, eng, "a b+c"))
}

// WithKeyFunc replaces the extraction; its error is a 401.
func testKeyFunc(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	app := &ok{}
	h := mk(eng, app, httpadapter.WithKeyFunc(func(r *http.Request) (string, error) {
		if r.Header.Get("X-Bad") != "" {
			return "", errors.New("allot: bad token")
		}
		return r.Header.Get("X-Token"), nil
	}))
	r := get("key", "/") // X-API-Key is not read any more
	assert.Equal(t, http.StatusUnauthorized, serve(h, r).Code)
	r.Header.Set("X-Token", "key")
	assert.Equal(t, http.StatusOK, serve(h, r).Code)
	r.Header.Set("X-Bad", "1")
	rec := serve(h, r)
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
	assert.Contains(t, rec.Header().Get("WWW-Authenticate"), "invalid_token")
	CheckProblem(t, http.StatusUnauthorized, rec.Header(), rec.Body.Bytes())
	assert.Equal(t, int64(1), app.calls.Load())
}
