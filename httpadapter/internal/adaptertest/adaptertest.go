// Package adaptertest is the test table that every adapter of the quota
// middleware must pass: the net/http middleware of package httpadapter and
// the Gin middleware of package ginadapter run the very same cases, each
// through a constructor of its own.
//
// The cases are grouped by topic, one file each: admission.go (concurrent
// grants, costs), fields.go (RateLimit, RateLimit-Policy, Retry-After and
// the legacy fields), keys.go (key extraction and 401s), checksum.go
// (WithKeyChecksum), refunds.go,
// writer.go (Flush), hijack.go, drain.go (revocation draining) and
// failures.go (engine failures, nil engine). check.go holds the checkers
// of fields and problem bodies; this file the table and the helpers.
package adaptertest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// New builds the server under test: app behind the adapter's middleware for
// eng, configured by opts. app is a plain http.Handler; an adapter for a
// framework mounts it as a catch-all route.
type New func(eng *engine.Engine, app http.Handler, opts ...httpadapter.Option) http.Handler

// Run runs every case against the adapter that mk builds.
func Run(t *testing.T, mk New) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, mk) })
	}
}

var cases = []struct {
	name string
	run  func(*testing.T, New)
}{
	{"ConcurrentCredits", testConcurrentCredits},
	{"WindowFields", testWindowFields},
	{"RateFields", testRateFields},
	{"MultipleLimits", testMultipleLimits},
	{"LegacyFields", testLegacyFields},
	{"FieldsBeforeHandler", testFieldsBeforeHandler},
	{"Refunds", testRefunds},
	{"RefundIf", testRefundIf},
	{"RefundAcrossWindows", testRefundAcrossWindows},
	{"FieldsMatchDecision", testFieldsMatchDecision},
	{"Flush", testFlush},
	{"Hijack", testHijack},
	{"HijackNotSupported", testHijackNotSupported},
	{"RevocationDrain", testRevocationDrain},
	{"Unauthorized", testUnauthorized},
	{"AmbiguousKey", testAmbiguousKey},
	{"QueryKey", testQueryKey},
	{"KeyFunc", testKeyFunc},
	{"KeyChecksum", testKeyChecksum},
	{"Cost", testCost},
	{"EngineFailure", testEngineFailure},
	{"NilEngine", testNilEngine},
	{"DecisionFrom", testDecisionFrom},
	{"Shadow", testShadow},
	{"DenyHandler", testDenyHandler},
	{"Skip", testSkip},
	{"HeaderControl", testHeaderControl},
}

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock stopped at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set sets the clock's time.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// NewEngine returns an engine closed at the end of the test.
func NewEngine(t *testing.T, opts ...engine.Option) *engine.Engine {
	t.Helper()
	eng, err := engine.New(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = eng.Close() })
	return eng
}

func register(t *testing.T, eng *engine.Engine, key string, limits ...engine.Limit) {
	t.Helper()
	require.NoError(t, eng.Register(context.Background(), key, limits...))
}

// get returns a GET request for path with key in X-API-Key (none if "").
func get(key, path string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if key != "" {
		r.Header.Set("X-API-Key", key)
	}
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// ok is an app that answers 200 "ok" and counts its calls.
type ok struct{ calls atomic.Int64 }

func (a *ok) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	a.calls.Add(1)
	_, _ = io.WriteString(w, "ok")
}

func remaining(t *testing.T, eng *engine.Engine, key string) int64 {
	t.Helper()
	st, err := eng.Status(key)
	require.NoError(t, err)
	return st.Limits[0].Remaining
}

// within receives from c. Rather than hang until go test's -timeout panics,
// it fails the test when that deadline is near (nine tenths of the time
// left): a bound for failures, which no load on a passing test reaches, not
// a timing assumption. Without a deadline it waits as long as it takes.
func within[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	deadline, ok := t.Deadline()
	if !ok {
		return <-c
	}
	left := time.Until(deadline)
	timer := time.NewTimer(left - left/10)
	defer timer.Stop()
	select {
	case v := <-c:
		return v
	case <-timer.C:
		require.FailNow(t, "nothing received before the test's deadline")
		panic("unreachable")
	}
}
