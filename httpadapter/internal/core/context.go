package core

import (
	"context"
	"fmt"

	"github.com/allot-go/allot/engine"
)

// ctxKey is the context key of a request's Ticket.
type ctxKey struct{}

// decisionCtx is the context of a request let through: its parent's, with
// the Ticket as the value of ctxKey. It is what context.WithValue would
// make, but it lives in the Ticket, so it costs no allocation of its own.
// Every other method, and every other key, goes to the parent: the
// context package finds the parent's cancellation through Value, as for a
// context of its own.
type decisionCtx struct {
	context.Context
	t *Ticket
}

func (c *decisionCtx) Value(key any) any {
	if _, ok := key.(ctxKey); ok {
		return c.t
	}
	return c.Context.Value(key)
}

// String names the context as context.WithValue's would be named.
func (c *decisionCtx) String() string {
	if s, ok := c.Context.(fmt.Stringer); ok {
		return s.String() + ".WithValue(allot decision)"
	}
	return "context.WithValue(allot decision)"
}

// FromContext returns the decision on the request whose context ctx is (or
// derives from), and its Admission; false if the middleware let no request
// through with ctx (a skipped request, one let through by fail-open, or a
// context the middleware never saw).
func FromContext(ctx context.Context) (engine.Decision, engine.Admission, bool) {
	if ctx == nil {
		return engine.Decision{}, engine.Admission{}, false
	}
	t, ok := ctx.Value(ctxKey{}).(*Ticket)
	if !ok || t == nil || t.g == nil {
		return engine.Decision{}, engine.Admission{}, false
	}
	return t.d, t.adm, true
}
