package httpadapter

import (
	"net/http"
	"time"

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
