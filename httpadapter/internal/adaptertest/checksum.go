package adaptertest

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// mistype returns key with its character at i changed: a key CheckKey
// refuses.
func mistype(key string, i int) string {
	b := []byte(key)
	if b[i] == 'x' {
		b[i] = 'y'
	} else {
		b[i] = 'x'
	}
	return string(b)
}

// WithKeyChecksum(true) refuses a key that fails engine.CheckKey (mistyped,
// made up, or not of engine.NewKey's format) with 401 invalid_token before
// the engine is asked: the engine counts no decision for it, the cost
// function and the handler do not run, and a closed engine, which answers
// every request that reaches it with 503, is not reached. Keys that pass the
// checksum go to the engine as before: granted, unknown, revoked. Without
// the option a mistyped key is an unknown key of the engine's.
//
// (The engine's Stats do not count the UnknownKey decisions of Admit, only
// those of Consume, so UnknownKey cannot tell here whether the engine was
// asked; the closed engine can.)
func testKeyChecksum(t *testing.T, mk New) {
	eng := NewEngine(t, engine.WithCounting())
	key, err := engine.NewKey("sk_test")
	require.NoError(t, err)
	gone, err := engine.NewKey("sk_test")
	require.NoError(t, err)
	stranger, err := engine.NewKey("sk_test") // never registered
	require.NoError(t, err)
	register(t, eng, key, engine.Credits(10))
	register(t, eng, gone, engine.Credits(10))
	register(t, eng, "legacy", engine.Credits(10)) // not made by NewKey
	require.NoError(t, eng.Revoke(context.Background(), gone))

	app := &ok{}
	costs := 0
	h := mk(eng, app, httpadapter.WithKeyChecksum(true), httpadapter.WithCost(func(*http.Request) int64 { costs++; return 1 }))
	for _, c := range []keyRefusal{
		{"mistyped body", http.Header{"X-Api-Key": {mistype(key, 10)}}, 401, challengeInvalid, "checksum"},
		{"mistyped checksum", http.Header{"X-Api-Key": {mistype(key, len(key)-1)}}, 401, challengeInvalid, "checksum"},
		{"mistyped prefix", http.Header{"Authorization": {"Bearer " + mistype(key, 0)}}, 401, challengeInvalid, "checksum"},
		{"truncated", http.Header{"X-Api-Key": {key[:len(key)-1]}}, 401, challengeInvalid, "checksum"},
		{"not NewKey's", http.Header{"X-Api-Key": {"legacy"}}, 401, challengeInvalid, "checksum"},
	} {
		checkKeyRefusal(t, h, c)
	}
	s := eng.Stats()
	assert.Zero(t, s.Granted+s.Exhausted+s.Revoked+s.UnknownKey, "the engine was never asked")
	assert.Zero(t, costs, "the cost is not computed for a refused key")

	assert.Equal(t, http.StatusOK, serve(h, get(key, "/")).Code)
	checkKeyRefusal(t, h, keyRefusal{"revoked", http.Header{"X-Api-Key": {gone}}, 401, challengeInvalid, "revoked"})
	checkKeyRefusal(t, h, keyRefusal{"unknown", http.Header{"X-Api-Key": {stranger}}, 401, challengeInvalid, "not valid"})
	s = eng.Stats()
	assert.Equal(t, [2]int64{1, 1}, [2]int64{s.Granted, s.Revoked}, "keys that pass the checksum reach the engine")
	assert.Equal(t, int64(1), app.calls.Load())
	assert.Equal(t, int64(9), remaining(t, eng, key))
	assert.Equal(t, int64(10), remaining(t, eng, "legacy"))

	// The check applies to a key from WithKeyFunc, and before the engine
	// is asked even if it would fail: a nil engine answers 503 for any
	// request, but a closed one still refuses a bad checksum with 401.
	hk := mk(eng, app, httpadapter.WithKeyChecksum(true), httpadapter.WithKeyFunc(func(r *http.Request) (string, error) { return r.Header.Get("X-Token"), nil }))
	r := get("", "/")
	r.Header.Set("X-Token", mistype(key, 12))
	assert.Equal(t, http.StatusUnauthorized, serve(hk, r).Code)
	r.Header.Set("X-Token", key)
	assert.Equal(t, http.StatusOK, serve(hk, r).Code)

	// Off (the default, or false): a mistyped key goes to the engine,
	// which finds it unknown.
	for _, h := range []http.Handler{mk(eng, app), mk(eng, app, httpadapter.WithKeyChecksum(true), httpadapter.WithKeyChecksum(false))} {
		checkKeyRefusal(t, h, keyRefusal{"mistyped, unchecked", http.Header{"X-Api-Key": {mistype(key, 10)}}, 401, challengeInvalid, "not valid"})
		assert.Equal(t, http.StatusOK, serve(h, get("legacy", "/")).Code)
	}

	// A closed engine answers 503 to every request that reaches it: with
	// the option a bad key does not reach it (401), a good one does (503,
	// or let through with WithFailOpen); without the option both reach it.
	closed := NewEngine(t)
	require.NoError(t, closed.Close())
	hc := mk(closed, app, httpadapter.WithKeyChecksum(true))
	checkKeyRefusal(t, hc, keyRefusal{"closed engine", http.Header{"X-Api-Key": {mistype(key, 10)}}, 401, challengeInvalid, "checksum"})
	assert.Equal(t, http.StatusServiceUnavailable, serve(hc, get(key, "/")).Code)
	hc = mk(closed, app, httpadapter.WithKeyChecksum(true), httpadapter.WithFailOpen(true))
	checkKeyRefusal(t, hc, keyRefusal{"closed engine, fail-open", http.Header{"X-Api-Key": {mistype(key, 10)}}, 401, challengeInvalid, "checksum"})
	assert.Equal(t, http.StatusOK, serve(hc, get(key, "/")).Code, "fail-open lets a good key through a closed engine")
	assert.Equal(t, http.StatusServiceUnavailable, serve(mk(closed, app), get(mistype(key, 10), "/")).Code, "unchecked, a bad key reaches the engine")
}
