package adaptertest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// 401 for a missing, unknown, revoked, too long or malformed key, with a
// challenge and a problem body, and without running the handler.
func testUnauthorized(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	register(t, eng, "gone", engine.Credits(10))
	require.NoError(t, eng.Revoke(context.Background(), "gone"))
	app := &ok{}
	h := mk(eng, app)
	long := strings.Repeat("k", engine.MaxKeyLen+1)

	for _, c := range []struct {
		name      string
		header    http.Header
		challenge string
	}{
		{"missing", http.Header{}, `Bearer realm="api"`},
		{"empty header", http.Header{"X-Api-Key": {""}}, `Bearer realm="api"`},
		{"other scheme", http.Header{"Authorization": {"Basic a2V5Og=="}}, `Bearer realm="api"`},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, `Bearer realm="api"`},
		{"unknown", http.Header{"X-Api-Key": {"nope"}}, `Bearer realm="api", error="invalid_token"`},
		{"unknown bearer", http.Header{"Authorization": {"Bearer nope"}}, `Bearer realm="api", error="invalid_token"`},
		{"revoked", http.Header{"X-Api-Key": {"gone"}}, `Bearer realm="api", error="invalid_token"`},
		{"too long", http.Header{"X-Api-Key": {long}}, `Bearer realm="api", error="invalid_token"`},
		{"too long bearer", http.Header{"Authorization": {"Bearer " + long}}, `Bearer realm="api", error="invalid_token"`},
	} {
		r := get("", "/")
		r.Header = c.header
		rec := serve(h, r)
		require.Equal(t, http.StatusUnauthorized, rec.Code, c.name)
		assert.Equal(t, c.challenge, rec.Header().Get("WWW-Authenticate"), c.name)
		CheckProblem(t, http.StatusUnauthorized, rec.Header(), rec.Body.Bytes())
		assert.Empty(t, rec.Header().Values("RateLimit"), c.name)
		assert.Empty(t, rec.Header().Values("RateLimit-Policy"), c.name)
	}
	assert.Equal(t, int64(0), app.calls.Load(), "the handler never runs for a refused request")

	// Accepted forms: either header, any case of the scheme; X-API-Key wins.
	for _, hd := range []http.Header{
		{"X-Api-Key": {"key"}},
		{"Authorization": {"Bearer key"}},
		{"Authorization": {"bearer   key"}},
		{"X-Api-Key": {"key"}, "Authorization": {"Bearer nope"}},
	} {
		r := get("", "/")
		r.Header = hd
		assert.Equal(t, http.StatusOK, serve(h, r).Code, "%v", hd)
	}
	assert.Equal(t, int64(6), remaining(t, eng, "key"))

	h = mk(eng, app, httpadapter.WithRealm(`my "api"`))
	rec := serve(h, get("", "/"))
	assert.Equal(t, `Bearer realm="my \"api\""`, rec.Header().Get("WWW-Authenticate"))
}

// A key in the query is ignored unless WithQueryKey enables it, and then
// only when no header carries one.
func testQueryKey(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	register(t, eng, "a b+c", engine.Credits(10))
	app := &ok{}

	h := mk(eng, app)
	rec := serve(h, get("", "/?api_key=key"))
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
	assert.Equal(t, `Bearer realm="api"`, rec.Header().Get("WWW-Authenticate"))
	assert.Equal(t, int64(0), app.calls.Load())

	h = mk(eng, app, httpadapter.WithQueryKey("api_key"))
	for _, c := range []struct {
		path   string
		header string
		status int
	}{
		{"/?api_key=key", "", http.StatusOK},
		{"/?x=1&api_key=key&api_key=nope", "", http.StatusOK},
		{"/?api%5Fkey=key", "", http.StatusOK},
		{"/?api_key=a+b%2Bc", "", http.StatusOK},
		{"/?api_key=nope", "key", http.StatusOK}, // the header wins
		{"/?api_key=nope", "", http.StatusUnauthorized},
		{"/?api_key=%zz", "", http.StatusUnauthorized},
		{"/?apikey=key", "", http.StatusUnauthorized},
	} {
		rec := serve(h, get(c.header, c.path))
		assert.Equal(t, c.status, rec.Code, c.path)
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
