package httpadapter

import (
	"context"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter/internal/core"
)

// DecisionFrom returns the engine's decision on the request whose context
// ctx is, or derives from: r.Context() in a handler behind the middleware
// (c.Request.Context() with Gin). It is the Decision the request's
// RateLimit fields describe, a grant (Allowed), or with WithShadow an
// Exhausted denial that was let through; and the request's Admission. The
// middleware calls the Admission's Done when the handler returns: the
// handler must not. The middleware must be made with
// WithDecisionContext(true), or WithShadow(true), which implies it. ok is
// false if the middleware let no request through with this context: a
// middleware without that option, a request exempted by WithSkip, one let
// through by WithFailOpen without a decision, or a context that never went
// through the middleware. It does not allocate.
func DecisionFrom(ctx context.Context) (d engine.Decision, adm engine.Admission, ok bool) {
	return core.FromContext(ctx)
}

// ErrMissingKey is the Denial.Err of a request that carries no API key (no
// X-API-Key, no Bearer credential, no WithQueryKey parameter, or "" from
// the WithKeyFunc function): 401.
var ErrMissingKey = core.ErrMissingKey

// ErrAmbiguousKey is the Denial.Err of a request that carries several
// different API keys: 400.
var ErrAmbiguousKey = core.ErrAmbiguousKey
