// Package core is the one implementation of the quota middleware that
// package httpadapter exposes to net/http and package ginadapter to Gin: key
// extraction, the decision, the RateLimit header fields, the problem
// responses and the refunds. The adapters only plumb a request through it.
package core

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/allot-go/allot/engine"
)

// Config is the middleware's configuration; httpadapter's options set it.
// The zero value is the default configuration.
type Config struct {
	// KeyFunc, if set, replaces the default key extraction (headers and
	// QueryKey).
	KeyFunc func(*http.Request) (string, error)
	// QueryKey, if set, names a query parameter read when no header carries
	// a key.
	QueryKey string
	// Cost, if set, gives a request's units; default 1.
	Cost func(*http.Request) int64
	// FailOpen lets requests through when the engine fails.
	FailOpen bool
	// Legacy adds the X-RateLimit-* fields.
	Legacy bool
	// Clock, if set, replaces time.Now for X-RateLimit-Reset.
	Clock func() time.Time
	// RefundIf, if set, replaces the default refund predicate (status >= 500).
	RefundIf func(status int) bool
	// Realm is the realm of the WWW-Authenticate challenge; default "api".
	Realm string
	// KeyChecksum refuses a key that fails engine.CheckKey before the
	// engine is asked.
	KeyChecksum bool
	// Skip, if set, exempts the requests for which it returns true: they
	// go to the handler untouched, without a key, and count nowhere.
	Skip func(*http.Request) bool
	// Shadow lets the requests a limit denies (Exhausted) through, as if
	// granted, and counts them with engine.Engine.CountShadowDenied.
	Shadow bool
	// Deny, if set, answers every refusal instead of the problem bodies.
	Deny func(w http.ResponseWriter, r *http.Request, status int, d engine.Decision, err error)
	// NoRateLimit leaves out the RateLimit and RateLimit-Policy fields.
	NoRateLimit bool
	// DecisionContext passes the handler a shallow copy of the request
	// whose context carries the decision (FromContext). Shadow implies it.
	DecisionContext bool
}

// Guard runs the middleware's logic for one engine and configuration. It is
// safe for concurrent use.
type Guard struct {
	eng       *engine.Engine
	keyFunc   func(*http.Request) (string, error)
	queryKey  string
	cost      func(*http.Request) int64
	failOpen  bool
	legacy    bool
	clock     func() time.Time
	refundIf  func(int) bool
	checksum  bool // refuse keys that fail engine.CheckKey
	skip      func(*http.Request) bool
	shadow    bool
	deny      func(http.ResponseWriter, *http.Request, int, engine.Decision, error)
	rateLimit bool   // set the RateLimit and RateLimit-Policy fields
	carry     bool   // pass the handler a request whose context carries the decision
	challenge string // WWW-Authenticate for a missing key
	invalid   string // WWW-Authenticate for a bad key
	ambiguous string // WWW-Authenticate for several different keys
}

// New returns a Guard for eng configured by opts, applied in order to a zero
// Config. A nil eng is no engine at all: every request is answered 503 (or
// let through, with FailOpen), as for an engine that fails.
func New[O ~func(*Config)](eng *engine.Engine, opts ...O) *Guard {
	var c Config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	g := &Guard{
		eng:       eng,
		keyFunc:   c.KeyFunc,
		queryKey:  c.QueryKey,
		cost:      c.Cost,
		failOpen:  c.FailOpen,
		legacy:    c.Legacy,
		clock:     c.Clock,
		refundIf:  c.RefundIf,
		checksum:  c.KeyChecksum,
		skip:      c.Skip,
		shadow:    c.Shadow,
		deny:      c.Deny,
		rateLimit: !c.NoRateLimit,
		carry:     c.DecisionContext || c.Shadow,
	}
	if g.clock == nil {
		g.clock = time.Now
	}
	if g.refundIf == nil {
		g.refundIf = DefaultRefundIf
	}
	realm := c.Realm
	if realm == "" {
		realm = "api"
	}
	g.challenge = `Bearer realm=` + quote(realm)
	g.invalid = g.challenge + `, error="invalid_token"`
	g.ambiguous = g.challenge + `, error="invalid_request"`
	return g
}

// DefaultRefundIf is the default refund predicate: the handler failed
// (5xx, or a panic, which counts as 500).
func DefaultRefundIf(status int) bool { return status >= 500 }

// quote returns s as an HTTP quoted-string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\t' || c >= 0x20 && c != 0x7f:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Ticket is a request let through to the handler: Finish ends it. The
// Ticket of a request let through by fail-open has no Guard, and a Finish
// that does nothing. The adapter keeps it on its stack: it is never
// written after Begin, so a copy of it is as good as the original.
type Ticket struct {
	g   *Guard
	key string
	d   engine.Decision // a grant, or with Shadow an Exhausted denial
	adm engine.Admission
}

// Request is the state of a request let through to the handler that must
// live on the heap, in one allocation: A, the adapter's own (its response
// writer), and vals, which backs the header values of the rate-limit
// fields.
type Request[A any] struct {
	A    A
	vals [2]string
}

// carried is a Request whose handler gets a request that carries the
// decision (Config.DecisionContext), in the same one allocation: t is a
// copy of the request's Ticket, ctx the request's context, which carries t
// (FromContext), and req the request passed on, a shallow copy of the
// incoming one with ctx, made by r.WithContext and copied in here so that
// its own allocation does not escape. It costs the size of an
// http.Request and a Ticket (about 400 bytes) per request, which is why it
// is an option.
type carried[A any] struct {
	Request[A]
	t   Ticket
	ctx decisionCtx
	req http.Request
}

// Finish ends a request let through, once its handler has returned or
// panicked. For a handler that kept the connection, status is the final
// status it answered (200 if it wrote none). For a handler that hijacked the
// connection, hijacked is true and status is the final status sent to the
// connection before the hijack, or 0 if none was.
//
// Finish refunds the request's units if they were granted and the refund
// predicate accepts the status; a panic counts as 500, unless the
// connection was hijacked: what the client got after a hijack is unknown,
// so only a status sent before it counts, and without one the units stay
// spent. Then Finish marks the request done for RevokeAndWait. Call it
// once, deferred, and let a panic go on unwinding: Finish does not recover
// it.
func (t *Ticket) Finish(status int, hijacked, panicked bool) {
	if t.g == nil {
		return
	}
	defer t.adm.Done()
	switch {
	case !t.d.Allowed:
		return // a shadow denial: nothing was granted
	case hijacked:
		if status == 0 {
			return
		}
	case panicked:
		status = http.StatusInternalServerError
	}
	if t.g.refundIf(status) {
		// The error can only be ErrClosed: nothing is left to refund then.
		_ = t.g.eng.Refund(context.Background(), t.key, t.d, t.d.Granted())
	}
}

// Skip reports whether r is exempt: the adapter passes it on to the
// handler as it is, without calling Begin.
func (g *Guard) Skip(r *http.Request) bool { return g.skip != nil && g.skip(r) }

// Begin decides on r. If the request may go on to the handler, Begin has
// filled t and set the rate-limit fields on w's header, and returns the
// Request, with the adapter's A zero, and the request to pass on: with DecisionContext
// (or Shadow) a copy whose context carries the decision (FromContext),
// otherwise r itself; the caller runs the handler and then calls
// Finish. Otherwise Begin has written the refusal to w (status, fields and
// problem body, or whatever the Deny function wrote) and returns false: the
// handler must not run.
func Begin[A any](g *Guard, w http.ResponseWriter, r *http.Request, t *Ticket) (*Request[A], *http.Request, bool) {
	if g.eng == nil {
		if g.failOpen {
			return new(Request[A]), r, true
		}
		g.refuse(w, r, http.StatusServiceUnavailable, "", bodyUnavailable, nil, errNoEngine)
		return nil, nil, false
	}
	key, err := g.key(r)
	if err != nil {
		switch err {
		case ErrAmbiguousKey:
			g.refuse(w, r, http.StatusBadRequest, g.ambiguous, bodyAmbiguousKey, nil, err)
		case ErrEmptyKey:
			g.refuse(w, r, http.StatusUnauthorized, g.invalid, bodyEmptyKey, nil, err)
		default:
			g.refuse(w, r, http.StatusUnauthorized, g.invalid, bodyBadCredentials, nil, err)
		}
		return nil, nil, false
	}
	if key == "" {
		g.refuse(w, r, http.StatusUnauthorized, g.challenge, bodyMissingKey, nil, ErrMissingKey)
		return nil, nil, false
	}
	if g.checksum {
		if err := engine.CheckKey(key); err != nil {
			// A mistyped or made-up key: refused before any lookup, and
			// before the cost is computed.
			g.refuse(w, r, http.StatusUnauthorized, g.invalid, bodyBadChecksum, nil, err)
			return nil, nil, false
		}
	}
	n := int64(1)
	if g.cost != nil {
		if n = g.cost(r); n < 1 {
			g.refuse(w, r, http.StatusInternalServerError, "", bodyBadCost, nil, errBadCost)
			return nil, nil, false
		}
	}
	d, adm, err := g.eng.Admit(r.Context(), key, n)
	if err != nil {
		switch {
		case errors.Is(err, engine.ErrInvalidKey):
			g.refuse(w, r, http.StatusUnauthorized, g.invalid, bodyBadKey, nil, err)
		case errors.Is(err, engine.ErrInvalidAmount):
			g.refuse(w, r, http.StatusInternalServerError, "", bodyBadCost, nil, err)
		case g.failOpen:
			return new(Request[A]), r, true
		default:
			g.refuse(w, r, http.StatusServiceUnavailable, "", bodyUnavailable, nil, err)
		}
		return nil, nil, false
	}
	switch d.Reason {
	case engine.OK:
	case engine.Exhausted:
		if !g.shadow {
			g.exhausted(w, r, key, n, &d)
			return nil, nil, false
		}
		g.eng.CountShadowDenied(d)
	case engine.Revoked:
		g.refuse(w, r, http.StatusUnauthorized, g.invalid, bodyRevoked, &d, nil)
		return nil, nil, false
	default:
		g.refuse(w, r, http.StatusUnauthorized, g.invalid, bodyUnknownKey, &d, nil)
		return nil, nil, false
	}
	var q *Request[A]
	var c *carried[A]
	if g.carry {
		c = new(carried[A])
		q = &c.Request
	} else {
		q = new(Request[A])
	}
	t.g, t.key, t.d, t.adm = g, key, d, adm
	if g.rateLimit || g.legacy {
		var buf [engine.MaxLimits]engine.LimitStatus
		var ls []engine.LimitStatus
		if g.rateLimit {
			ls = g.limits(buf[:0], key, &d)
		}
		g.setFields(w.Header(), ls, &d, false, q.vals[:])
	}
	if c == nil {
		return q, r, true
	}
	c.t = *t
	c.ctx = decisionCtx{Context: r.Context(), t: &c.t}
	c.req = *r.WithContext(&c.ctx)
	return q, &c.req, true
}

// exhausted refuses a request a limit denied: 429, with the rate-limit
// fields and Retry-After, and the quota-exceeded problem (or whatever the
// Deny function writes).
func (g *Guard) exhausted(w http.ResponseWriter, r *http.Request, key string, n int64, d *engine.Decision) {
	var buf [engine.MaxLimits]engine.LimitStatus
	var ls []engine.LimitStatus
	if g.rateLimit || g.deny == nil {
		ls = g.limits(buf[:0], key, d)
	}
	g.setFields(w.Header(), ls, d, true, nil)
	if g.deny != nil {
		g.deny(w, r, http.StatusTooManyRequests, *d, nil)
		return
	}
	writeBody(w, http.StatusTooManyRequests, exceededBody(ls, n, d), "")
}

// refuse answers a refusal other than a 429: it sets the WWW-Authenticate
// challenge, if any, then calls the Deny function with the status, the
// decision (the zero Decision if d is nil) and err, or without one writes
// the problem body.
func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, status int, challenge string, body []byte, d *engine.Decision, err error) {
	if g.deny == nil {
		writeBody(w, status, body, challenge)
		return
	}
	if challenge != "" {
		w.Header()["Www-Authenticate"] = []string{challenge}
	}
	var dec engine.Decision
	if d != nil {
		dec = *d
	}
	g.deny(w, r, status, dec, err)
}

// limits appends the state of key's limits to dst for the RateLimit fields.
// The limit the decision describes is reported as the decision saw it, not
// as a second read finds it a moment later (other requests may have moved
// it since).
func (g *Guard) limits(dst []engine.LimitStatus, key string, d *engine.Decision) []engine.LimitStatus {
	ls, _ := g.eng.AppendDecisionLimits(dst, key, *d)
	return ls
}

// ErrAmbiguousKey reports a request that carries several different API
// keys (the default extraction only): which one to charge is not for the
// middleware to guess.
var ErrAmbiguousKey = errors.New("allot: the request carries several different API keys")

// ErrMissingKey reports a request that carries no API key at all.
var ErrMissingKey = errors.New("allot: the request carries no API key")

// errBadCost reports a WithCost function that returned less than 1.
var errBadCost = fmt.Errorf("%w: the request's cost, from the WithCost function, is below 1", engine.ErrInvalidAmount)

// errNoEngine reports a middleware made without an engine: it answers as
// for a closed one.
var errNoEngine = fmt.Errorf("%w: the middleware has no engine", engine.ErrClosed)

// ErrEmptyKey reports a request that sends an API key, in X-API-Key or as
// Authorization: Bearer, that is empty or all white space, or an empty
// WithQueryKey parameter (the default extraction only).
var ErrEmptyKey = fmt.Errorf("%w: the API key is empty", engine.ErrInvalidKey)

// key extracts the request's API key: "" if there is none. The default
// extraction gathers every key the request carries, in any X-API-Key field
// line, any Authorization: Bearer credential and, if enabled, any value of
// the query parameter: none is no key; several that differ are
// ErrAmbiguousKey; one key, however often it is repeated, is the key, or
// ErrEmptyKey if it is empty.
func (g *Guard) key(r *http.Request) (string, error) {
	if g.keyFunc != nil {
		return g.keyFunc(r)
	}
	var c candidates
	for _, v := range r.Header["X-Api-Key"] {
		c.add(textproto.TrimString(v))
	}
	for _, v := range r.Header["Authorization"] {
		if tok, ok := bearer(v); ok {
			c.add(tok)
		}
	}
	if g.queryKey != "" && r.URL != nil {
		if err := c.addQuery(r.URL.RawQuery, g.queryKey); err != nil {
			return "", err
		}
	}
	switch {
	case c.differ:
		return "", ErrAmbiguousKey
	case c.n > 0 && c.key == "":
		return "", ErrEmptyKey
	}
	return c.key, nil
}

// candidates are the keys a request carries: how many, the first, and
// whether any differs from it.
type candidates struct {
	key    string
	n      int
	differ bool
}

func (c *candidates) add(k string) {
	if c.n == 0 {
		c.key = k
	} else if k != c.key {
		c.differ = true
	}
	c.n++
}

// bearer returns the token of an Authorization value of the Bearer scheme
// (any case), without the white space around it: "" for "Bearer" alone. It
// returns false for any other scheme.
func bearer(a string) (string, bool) {
	const scheme = "Bearer"
	if len(a) < len(scheme) || !strings.EqualFold(a[:len(scheme)], scheme) {
		return "", false
	}
	rest := a[len(scheme):]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return "", false // another scheme, such as "Bearerx"
	}
	return textproto.TrimString(rest), true
}

// errBadQuery reports a query whose key parameter is badly escaped.
var errBadQuery = fmt.Errorf("%w: badly escaped in the query", engine.ErrInvalidKey)

// addQuery adds every value of parameter name in the raw query q, decoded
// as url.ParseQuery would, without parsing the whole query into a map. A
// badly escaped value is an error.
func (c *candidates) addQuery(q, name string) error {
	for q != "" {
		var part string
		part, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		v, err := url.QueryUnescape(v)
		if err != nil {
			return errBadQuery
		}
		c.add(v)
	}
	return nil
}

// writeBody writes a problem response, with the WWW-Authenticate challenge
// if it is not empty. Its fields' values share one allocation: a refusal
// of a flood of bad keys costs one.
func writeBody(w http.ResponseWriter, status int, body []byte, challenge string) {
	h := w.Header()
	v := &[4]string{"application/problem+json", "no-store", "nosniff", challenge}
	h["Content-Type"] = v[0:1:1]
	h["Cache-Control"] = v[1:2:2]
	h["X-Content-Type-Options"] = v[2:3:3]
	if challenge != "" {
		h["Www-Authenticate"] = v[3:4:4]
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
