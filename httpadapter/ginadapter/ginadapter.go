// Package ginadapter enforces an engine's per-API-key quotas on Gin
// routes. It adapts the middleware of package httpadapter, whose options it
// takes and whose behaviour it shares: the same key extraction, status codes
// (400, 401, 429, 503, as application/problem+json bodies), RateLimit and
// RateLimit-Policy fields, refunds and revocation draining. See package
// httpadapter for the details.
//
// A refused request is answered and aborted (c.Abort), so no later handler
// of the chain runs. For refunds, the status is c.Writer.Status() once the
// chain has run (Gin's default is 200); a panic counts as 500 and goes on
// unwinding after the refund, to gin.Recovery if it is installed before
// this middleware.
package ginadapter

import (
	"github.com/gin-gonic/gin"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
	"github.com/allot-go/allot/httpadapter/internal/core"
)

// Middleware returns Gin middleware that enforces eng's quotas, configured
// by the options of package httpadapter. A nil eng answers every request 503
// (see WithFailOpen) instead of panicking.
func Middleware(eng *engine.Engine, opts ...httpadapter.Option) gin.HandlerFunc {
	g := core.New(eng, opts...)
	return func(c *gin.Context) {
		t, ok := g.Begin(c.Writer, c.Request)
		if !ok {
			// Begin has written the problem response, like
			// c.AbortWithStatusJSON would, with its own content type.
			c.Abort()
			return
		}
		panicked := true
		defer func() { t.Finish(c.Writer.Status(), panicked) }()
		c.Next()
		panicked = false
	}
}
