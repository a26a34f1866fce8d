// Package httpadapter enforces an engine's per-API-key quotas on net/http
// handlers. Package ginadapter offers the same middleware, with the same
// options and behaviour, to Gin.
//
// # Keys and costs
//
// The key is read from the X-API-Key header or from an
// `Authorization: Bearer <key>` header (the scheme in any case, white space
// around the key ignored). WithQueryKey adds a query parameter (keys in
// URLs leak into logs), and WithKeyFunc replaces the extraction
// altogether. Each request costs one unit, or what WithCost says.
//
// Every key the request carries counts, and none is silently preferred to
// another: each X-API-Key field line, each Bearer credential and, with
// WithQueryKey, each value of the parameter. A header that is sent counts
// even if it is empty. Then:
//
//   - no key at all (no X-API-Key, no Bearer credential, no parameter; an
//     Authorization header of another scheme is not a key): 401, missing
//     key;
//   - several keys that are not all the same (two X-API-Key lines that
//     differ, an empty one and a real one, X-API-Key and a different Bearer
//     token, a header and a different parameter): 400, invalid_request. The
//     middleware does not guess which key to charge, and charges none;
//   - one key, however often it is sent: that key, or 401 invalid_token if
//     it is empty or all white space (`Authorization: Bearer` without a
//     token, `X-API-Key:` without a value).
//
// With WithKeyChecksum(true), a key that fails engine.CheckKey (not made by
// engine.NewKey, or mistyped) is refused with 401 invalid_token before the
// engine is asked: a flood of random keys costs a checksum each, not a
// lookup.
//
// # Status codes
//
// A request is admitted with engine.Engine.Admit: the handler runs only if
// the engine grants the units. Otherwise the middleware answers with an
// RFC 9457 problem (Content-Type application/problem+json, members type,
// title, status and detail):
//
//   - 401 Unauthorized: no key (WWW-Authenticate: Bearer realm="api"), or
//     a key that is empty, unknown, revoked, malformed (too long, badly
//     escaped in the query, failing its checksum with WithKeyChecksum) or
//     that WithKeyFunc could not read
//     (WWW-Authenticate: Bearer realm="api", error="invalid_token"). The
//     challenge uses the Bearer scheme of RFC 6750 because that is the
//     standard way to send the key; the X-API-Key header is accepted all the
//     same. WithRealm sets the realm.
//   - 400 Bad Request: the request carries several different keys
//     (WWW-Authenticate: Bearer realm="api", error="invalid_request", as
//     RFC 6750 says for a request that uses more than one method to send
//     its token).
//   - 429 Too Many Requests: a limit of the key is exhausted. The problem
//     type is the draft's
//     https://iana.org/assignments/http-problem-types#quota-exceeded, whose
//     violated-policies member lists the names of the limits that refused.
//     Retry-After gives the seconds (rounded up) until the same request
//     could succeed; it is omitted when waiting would not help: a Credits
//     limit never refills, and a request larger than a limit's quota never
//     fits.
//   - 503 Service Unavailable: the engine failed (it was closed, or its
//     store failed). The middleware fails closed, unless WithFailOpen(true),
//     which lets the request through unmetered, without rate-limit fields.
//   - 500 Internal Server Error: the WithCost function returned less than 1.
//
// # Rate-limit fields
//
// Every response to a live key, admitted (whatever the handler answers) or
// refused with 429, carries the fields of draft-ietf-httpapi-ratelimit-headers
// revision 11, set before the handler runs. Each is an RFC 9651 List with
// one String item per limit of the key, named after engine.Limit.Name, in
// registration order:
//
//	RateLimit-Policy: "hour";q=1000;w=3600, "credits";q=50000
//	RateLimit: "hour";r=998;t=1800, "credits";r=41234
//
// In RateLimit-Policy, q is the quota (a Rate limit's burst) and w the
// window in seconds: the period of a PerWindow limit, and for a Rate limit
// the seconds needed to refill a whole burst, rounded up. Credits, which
// never refill, and PerMonth limits, whose months differ in length, have no
// w. In RateLimit, r is the units left and t the seconds, rounded up, until
// the limit is full again (the end of the window, or the time a Rate
// bucket is full); Credits have no t. Integers are clamped to the 15 digits
// RFC 9651 allows. Responses to requests without a live key (400, 401, 503)
// have none of these fields.
//
// WithLegacyHeaders(true) adds the GitHub-style X-RateLimit-Limit,
// X-RateLimit-Remaining and X-RateLimit-Reset (the Unix time, in seconds
// rounded up, at which the limit is full again; omitted when it has nothing
// to reset, e.g. for Credits) fields, which describe the one limit the
// engine's Decision reports: the tightest.
//
// WithRateLimitHeaders(false) leaves out RateLimit and RateLimit-Policy;
// the legacy fields are on or off by themselves. Retry-After stays on 429s
// either way.
//
// # Hooks
//
// With WithDecisionContext(true), a handler reads its request's decision
// with DecisionFrom(r.Context()): the engine.Decision its fields describe,
// and its engine.Admission. The handler then gets a shallow copy of the
// request (r.WithContext), whose context carries the decision; the
// incoming request is left as it came. The copy costs about 300 bytes per
// request, so it is off by default.
//
// WithDenyHandler answers refusals (400, 401, 429, 500, 503) in the
// application's own format: it gets the status, the Decision (for a 429,
// a revoked or an unknown key) or the error, and the request, with the
// challenge, the rate-limit fields and Retry-After already set. By
// default refusals are the problem+json bodies above.
//
// WithSkip exempts requests, such as health checks: they need no key and
// count nowhere. WithShadow decides, counts and sets the fields, but lets
// the requests a limit denies through (engine.Stats.ShadowDenied counts
// them), to try limits out before enforcing them; missing, bad and revoked
// keys are refused as ever.
//
// # Refunds and revocation
//
// When the handler answers a status the WithRefundIf predicate accepts (by
// default any 5xx) or panics (which counts as 500), the request's units are
// refunded; a panic then goes on unwinding, unchanged. The status is the one
// the handler passed to WriteHeader, or 200 if it wrote without it or did
// not write at all; a handler that hijacks the connection is judged
// differently (see Hijacked connections). Every admitted request counts as
// in flight until its handler returns, so engine.Engine.RevokeAndWait waits
// for it.
//
// # Hijacked connections
//
// Once a handler hijacks the connection (http.Hijacker or
// http.ResponseController), the middleware can no longer see what the
// client gets. So a hijacked request's units stay spent, whatever the
// handler writes or does afterwards, a panic included: a panic after a
// hijack is not refunded, nor is a WriteHeader(500) on the hijacked writer.
//
// The one status that counts is a final status that had been sent to the
// connection before the hijack: it is judged by WithRefundIf as usual, so
// by default a 500 sent and then hijacked is refunded, once. With net/http,
// a status passed to WriteHeader is sent as the server hands the connection
// over, so WriteHeader(500) followed by Hijack counts as 500. With Gin,
// c.Writer.WriteHeader only records a status until something is written or
// flushed (c.Writer.Written reports it); a status merely recorded is never
// sent, and does not count. Hijacking with nothing sent costs the request's
// units.
//
// A hijacked request is done, for RevokeAndWait, when its handler returns,
// even if another goroutine goes on using the connection.
//
// The response writer given to the handler keeps http.Flusher,
// http.Hijacker, io.ReaderFrom and io.StringWriter working, and unwraps (Unwrap) for
// http.ResponseController. The incoming request is never modified.
package httpadapter
