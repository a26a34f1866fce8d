// Package core is the one implementation of the quota middleware that
// package httpadapter exposes to net/http and package ginadapter to Gin: key
// extraction, the decision, the RateLimit header fields, the problem
// responses and the refunds. The adapters only plumb a request through it.
package core

import (
	"context"
	"errors"
	"net/http"
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
	challenge string // WWW-Authenticate for a missing key
	invalid   string // WWW-Authenticate for a bad key
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

// Hijacked is the status to pass to Finish for a request whose connection
// the handler hijacked: it has no status, and is refunded only if it panics.
const Hijacked = 0

// Finish ends an admitted request whose handler answered status (Hijacked
// if it took the connection over), or panicked. It refunds the request's
// units if the refund predicate accepts the status (a panic counts as 500),
// then marks the request done for RevokeAndWait. Call it once, deferred, and
// let a panic go on unwinding: Finish does not recover it.
func (t *Ticket) Finish(status int, panicked bool) {
	if t.g == nil {
		return
	}
	defer t.adm.Done()
	if panicked {
		status = http.StatusInternalServerError
	} else if status == Hijacked {
		return
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
		g.unauthorized(w, g.invalid, bodyBadCredentials)
		return Ticket{}, false
	}
	if key == "" {
		g.unauthorized(w, g.challenge, bodyMissingKey)
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

// key extracts the request's API key: "" if there is none.
func (g *Guard) key(r *http.Request) (string, error) {
	if g.keyFunc != nil {
		return g.keyFunc(r)
	}
	if v := r.Header["X-Api-Key"]; len(v) > 0 && v[0] != "" {
		return v[0], nil
	}
	if v := r.Header["Authorization"]; len(v) > 0 {
		if a := v[0]; len(a) > len("Bearer ") && strings.EqualFold(a[:len("Bearer ")], "Bearer ") {
			return strings.TrimLeft(a[len("Bearer "):], " "), nil
		}
	}
	if g.queryKey != "" && r.URL != nil {
		return queryValue(r.URL.RawQuery, g.queryKey)
	}
	return "", nil
}

// errBadQuery reports a query whose key parameter is badly escaped.
var errBadQuery = errors.New("allot: malformed api key query parameter")

// queryValue returns the first value of parameter name in the raw query q,
// without parsing the whole query into a map.
func queryValue(q, name string) (string, error) {
	for q != "" {
		var part string
		part, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := unescape(k); err != nil || uk != name {
				continue
			}
		}
		return unescape(v)
	}
	return "", nil
}

// unescape decodes a query component ('+' is a space).
func unescape(s string) (string, error) {
	if !strings.ContainsAny(s, "%+") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			b.WriteByte(' ')
		case '%':
			if i+2 >= len(s) {
				return "", errBadQuery
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", errBadQuery
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unauthorized writes a 401 with the given challenge and body.
func (g *Guard) unauthorized(w http.ResponseWriter, challenge string, body []byte) {
	w.Header()["Www-Authenticate"] = []string{challenge}
	writeBody(w, http.StatusUnauthorized, body)
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
