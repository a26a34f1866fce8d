package httpadapter

import (
	"net/http"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter/internal/core"
)

// Option configures the middleware of this package and of package
// ginadapter. Options apply in order; a nil Option is ignored.
type Option func(*core.Config)

// WithKeyFunc makes the middleware read the API key with f instead of the
// default extraction (the X-API-Key header, Authorization: Bearer and the
// WithQueryKey parameter, which must agree; see the package documentation).
// If f returns an error the request is refused with 401 and
// error="invalid_token"; if it returns "" it is refused with 401 as carrying
// no key. A nil f restores the default.
func WithKeyFunc(f func(*http.Request) (string, error)) Option {
	return func(c *core.Config) { c.KeyFunc = f }
}

// WithQueryKey makes the default key extraction also read the query
// parameter name (for example "api_key"). Its values count like the headers'
// keys: a header and a parameter that differ, or two values of the
// parameter that differ, are refused with 400 as ambiguous, and an empty
// value with 401. Beware: URLs end up in access logs, proxy logs, browser histories and
// Referer headers, so a key sent in the query leaks. Off by default; "" turns
// it off again.
func WithQueryKey(name string) Option {
	return func(c *core.Config) { c.QueryKey = name }
}

// WithCost makes a request cost f(r) units instead of 1. A cost below 1 is a
// bug of f: the request is refused with 500. A nil f restores the default.
func WithCost(f func(*http.Request) int64) Option {
	return func(c *core.Config) { c.Cost = f }
}

// WithFailOpen sets whether the middleware lets requests through,
// unmetered and without rate-limit fields, when the engine fails (it was
// closed, or its store failed), instead of answering 503. Off by default:
// the middleware fails closed.
func WithFailOpen(on bool) Option {
	return func(c *core.Config) { c.FailOpen = on }
}

// WithLegacyHeaders sets whether the middleware adds the GitHub-style
// fields X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset
// (Unix seconds, rounded up), describing the tightest limit of the key, to
// the draft's RateLimit and RateLimit-Policy fields. Off by default.
func WithLegacyHeaders(on bool) Option {
	return func(c *core.Config) { c.Legacy = on }
}

// WithClock makes the middleware read the time from now, to compute
// X-RateLimit-Reset. Give it the engine's clock (engine.WithClock) so both
// agree. Default: time.Now; nil restores it.
func WithClock(now func() time.Time) Option {
	return func(c *core.Config) { c.Clock = now }
}

// WithRefundIf makes the middleware refund a request's units when
// refund(status) is true for the status its handler answered (200 if it
// never called WriteHeader; 500 if it panicked; for a hijacked connection,
// only a status sent before the hijack, see the package documentation).
// Default: status >= 500. To never refund, pass
// func(int) bool { return false }; nil restores the default.
func WithRefundIf(refund func(status int) bool) Option {
	return func(c *core.Config) { c.RefundIf = refund }
}

// WithRealm sets the realm of the WWW-Authenticate challenge of 401
// responses. Default: "api".
func WithRealm(realm string) Option {
	return func(c *core.Config) { c.Realm = realm }
}

// WithKeyChecksum sets whether the middleware refuses, before asking the
// engine, every key that fails engine.CheckKey: a key that is not of the
// format of engine.NewKey, or whose checksum does not match (mistyped, or
// made up). Such a request is answered 401 with error="invalid_token"
// without a lookup, whether the engine is healthy or not, and without
// calling the WithCost function; the engine does not count it (it is in
// none of Stats' decisions). A flood of random keys then costs a checksum
// per request instead of a lookup. Turn it on only if every key the engine
// holds was made by engine.NewKey: any other key is refused. It applies to
// the keys WithKeyFunc returns too. Off by default.
func WithKeyChecksum(on bool) Option {
	return func(c *core.Config) { c.KeyChecksum = on }
}

// WithSkip exempts the requests for which skip returns true (health
// checks, the admin API, public pages): they go to the handler as they
// came, need no key, count nowhere (no decision, no units, not in flight)
// and get no rate-limit fields. skip runs first, before the key is read,
// also when the engine is nil or closed. A nil skip exempts nothing.
func WithSkip(skip func(*http.Request) bool) Option {
	return func(c *core.Config) { c.Skip = skip }
}

// WithShadow sets shadow mode, for trying limits out before enforcing
// them: the middleware decides and counts as usual and sets the rate-limit
// fields, but lets a request that a limit denies (engine.Exhausted) through
// to the handler instead of answering 429, without Retry-After and without
// calling the WithDenyHandler function. Nothing is granted to such a
// request: it spends no units and gets no refund. Its handler can tell it
// from a grant with DecisionFrom (Allowed false, Reason engine.Exhausted;
// WithShadow implies WithDecisionContext(true)),
// and the engine counts it, with engine.WithCounting, in Stats.Exhausted
// and in Stats.ShadowDenied (engine.Engine.CountShadowDenied). It is not an
// admitted request: RevokeAndWait does not wait for it.
//
// Shadow mode only concerns quotas: a request without a valid key (400,
// 401, a revoked key included), a cost below 1 (500) and an engine failure
// (503, see WithFailOpen) are refused as usual, or letting requests through
// would let any client in. Off by default.
func WithShadow(on bool) Option {
	return func(c *core.Config) { c.Shadow = on }
}

// WithDecisionContext sets whether the handler can read its request's
// decision with DecisionFrom: the middleware then passes it a shallow copy
// of the request (r.WithContext) whose context carries the decision, as
// any middleware that adds a context value does. The copy costs the size
// of an http.Request, about 300 bytes, per request let through, which is
// why it is off by default. WithShadow turns it on, for a handler behind
// shadow mode needs DecisionFrom to tell a shadow denial from a grant.
func WithDecisionContext(on bool) Option {
	return func(c *core.Config) { c.DecisionContext = on }
}

// WithRateLimitHeaders sets whether the middleware sets the draft's
// RateLimit and RateLimit-Policy fields, on admitted responses and 429s.
// Retry-After stays on 429s whatever this says, and WithLegacyHeaders is
// independent of it. Without either, the middleware does not read the
// key's limits after its decision. On by default.
func WithRateLimitHeaders(on bool) Option {
	return func(c *core.Config) { c.NoRateLimit = !on }
}

// Denial is a refusal of the middleware, for a WithDenyHandler function.
type Denial struct {
	// Status is the status the default response has: 400, 401, 429, 500
	// or 503 (see the package documentation).
	Status int
	// Decision is the engine's decision for a refusal the engine decided:
	// Reason engine.Exhausted for a 429 (Limit, Remaining, RetryAfter...
	// describe the limit that refused), engine.Revoked or engine.UnknownKey
	// for a 401. It is the zero Decision (Reason engine.Undecided) for the
	// others, which Err explains.
	Decision engine.Decision
	// Err is why a request the engine did not decide on was refused, nil
	// otherwise: ErrMissingKey (401), ErrAmbiguousKey (400), an error
	// matching engine.ErrInvalidKey for a key that is empty, malformed or
	// fails its checksum (401), the WithKeyFunc function's own error (401),
	// one matching engine.ErrInvalidAmount for a cost below 1 (500), and the
	// engine's error for a 503 (engine.ErrClosed, also for a nil engine, or
	// a store failure).
	Err error
}

// WithDenyHandler makes deny answer every refusal (400, 401, 429, 500 and
// 503) in the application's own format, instead of the default RFC 9457
// problem+json bodies. When deny is called, the middleware has set on w's
// header what the refusal must carry: the WWW-Authenticate challenge of a
// 400 or 401; the RateLimit fields and Retry-After of a 429. deny writes
// the rest: it must write the status (d.Status, or another of its choice)
// and a body; if it writes nothing, net/http answers 200 with an empty
// body. The handler never runs for a refused request, and a Gin request is
// aborted after deny returns. A nil deny restores the default.
func WithDenyHandler(deny func(w http.ResponseWriter, r *http.Request, d Denial)) Option {
	return func(c *core.Config) {
		if deny == nil {
			c.Deny = nil
			return
		}
		c.Deny = func(w http.ResponseWriter, r *http.Request, status int, d engine.Decision, err error) {
			deny(w, r, Denial{Status: status, Decision: d, Err: err})
		}
	}
}
