// Package core is the one implementation of the quota middleware that
// package httpadapter exposes to net/http and package ginadapter to Gin: key
// extraction, the decision, the RateLimit header fields, the problem
// responses and the refunds. The adapters only plumb a request through it.
package core

import (
	"context"
	"errors"
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
	checksum  bool   // refuse keys that fail engine.CheckKey
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
		eng:      eng,
		keyFunc:  c.KeyFunc,
		queryKey: c.QueryKey,
		cost:     c.Cost,
		failOpen: c.FailOpen,
		legacy:   c.Legacy,
		clock:    c.Clock,
		refundIf: c.RefundIf,
		checksum: c.KeyChecksum,
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

// Ticket is an admitted request: Finish ends it. The zero Ticket (a request
// let through by fail-open) has a Finish that does nothing.
type Ticket struct {
	g   *Guard
	key string
	d   engine.Decision // the grant
	adm engine.Admission
}

// Finish ends an admitted request, once its handler has returned or
// panicked. For a handler that kept the connection, status is the final
// status it answered (200 if it wrote none). For a handler that hijacked the
// connection, hijacked is true and status is the final status sent to the
// connection before the hijack, or 0 if none was.
//
// Finish refunds the request's units if the refund predicate accepts the
// status; a panic counts as 500, unless the connection was hijacked: what
// the client got after a hijack is unknown, so only a status sent before it
// counts, and without one the units stay spent. Then Finish marks the
// request done for RevokeAndWait. Call it once, deferred, and let a panic go
// on unwinding: Finish does not recover it.
func (t *Ticket) Finish(status int, hijacked, panicked bool) {
	if t.g == nil {
		return
	}
	defer t.adm.Done()
	switch {
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

// Begin decides on r. If the request may go on to the handler, Begin has set
// the RateLimit fields on w's header and returns true; the caller runs the
// handler and then calls the Ticket's Finish. Otherwise Begin has written
// the refusal to w (status, fields and problem body) and returns false: the
// handler must not run.
func (g *Guard) Begin(w http.ResponseWriter, r *http.Request) (Ticket, bool) {
	if g.eng == nil {
		if g.failOpen {
			return Ticket{}, true
		}
		writeBody(w, http.StatusServiceUnavailable, bodyUnavailable)
		return Ticket{}, false
	}
	key, err := g.key(r)
	if err != nil {
		switch err {
		case ErrAmbiguousKey:
			g.challengeWith(w, http.StatusBadRequest, g.ambiguous, bodyAmbiguousKey)
		case ErrEmptyKey:
			g.unauthorized(w, g.invalid, bodyEmptyKey)
		default:
			g.unauthorized(w, g.invalid, bodyBadCredentials)
		}
		return Ticket{}, false
	}
	if key == "" {
		g.unauthorized(w, g.challenge, bodyMissingKey)
		return Ticket{}, false
	}
	if g.checksum && engine.CheckKey(key) != nil {
		// A mistyped or made-up key: refused before any lookup, and
		// before the cost is computed.
		g.unauthorized(w, g.invalid, bodyBadChecksum)
		return Ticket{}, false
	}
	n := int64(1)
	if g.cost != nil {
		if n = g.cost(r); n < 1 {
			writeBody(w, http.StatusInternalServerError, bodyBadCost)
			return Ticket{}, false
		}
	}
	d, adm, err := g.eng.Admit(r.Context(), key, n)
	if err != nil {
		switch {
		case errors.Is(err, engine.ErrInvalidKey):
			g.unauthorized(w, g.invalid, bodyBadKey)
		case errors.Is(err, engine.ErrInvalidAmount):
			writeBody(w, http.StatusInternalServerError, bodyBadCost)
		case g.failOpen:
			return Ticket{}, true
		default:
			writeBody(w, http.StatusServiceUnavailable, bodyUnavailable)
		}
		return Ticket{}, false
	}
	switch d.Reason {
	case engine.OK:
		var buf [engine.MaxLimits]engine.LimitStatus
		ls := g.limits(buf[:0], key, &d)
		g.setFields(w.Header(), ls, &d)
		return Ticket{g: g, key: key, d: d, adm: adm}, true
	case engine.Exhausted:
		var buf [engine.MaxLimits]engine.LimitStatus
		ls := g.limits(buf[:0], key, &d)
		g.setFields(w.Header(), ls, &d)
		writeBody(w, http.StatusTooManyRequests, exceededBody(ls, n, &d))
	case engine.Revoked:
		g.unauthorized(w, g.invalid, bodyRevoked)
	default:
		g.unauthorized(w, g.invalid, bodyUnknownKey)
	}
	return Ticket{}, false
}

// limits appends the state of key's limits to dst for the RateLimit fields.
// The limit the decision describes is reported as the decision saw it, not
// as a second read finds it a moment later (other requests may have moved
// it since).
func (g *Guard) limits(dst []engine.LimitStatus, key string, d *engine.Decision) []engine.LimitStatus {
	ls, _ := g.eng.AppendLimits(dst, key)
	if i := d.LimitIndex; i < len(ls) && ls[i].Limit.Quota() == d.Limit {
		ls[i].Remaining, ls[i].ResetAfter = d.Remaining, d.ResetAfter
	}
	return ls
}

// ErrAmbiguousKey reports a request that carries several different API
// keys (the default extraction only): which one to charge is not for the
// middleware to guess.
var ErrAmbiguousKey = errors.New("allot: the request carries several different API keys")

// ErrEmptyKey reports a request that sends an API key, in X-API-Key or as
// Authorization: Bearer, that is empty or all white space, or an empty
// WithQueryKey parameter (the default extraction only).
var ErrEmptyKey = errors.New("allot: the API key is empty")

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
var errBadQuery = errors.New("allot: malformed api key query parameter")

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

// unauthorized writes a 401 with the given challenge and body.
func (g *Guard) unauthorized(w http.ResponseWriter, challenge string, body []byte) {
	g.challengeWith(w, http.StatusUnauthorized, challenge, body)
}

// challengeWith writes status with the given challenge and body.
func (g *Guard) challengeWith(w http.ResponseWriter, status int, challenge string, body []byte) {
	w.Header()["Www-Authenticate"] = []string{challenge}
	writeBody(w, status, body)
}

// writeBody writes a problem response.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/problem+json"}
	h["Cache-Control"] = []string{"no-store"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
