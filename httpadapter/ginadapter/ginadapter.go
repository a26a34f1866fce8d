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
// this middleware. A hijacked connection costs what package httpadapter
// says (its section "Hijacked connections"): the units stay spent, unless
// Gin had written a final status before the hijack, which then counts; a
// status only recorded with c.Writer.WriteHeader is never sent by Gin, and
// does not count. The middleware wraps c.Writer, to see the hijack, while
// the rest of the chain runs.
//
// The hooks work as in package httpadapter: with
// httpadapter.WithDecisionContext(true), a handler reads its decision with
// httpadapter.DecisionFrom(c.Request.Context()), for c.Request is then a
// shallow copy of the request whose context carries it (the middleware
// puts the original back once the chain has run, as it does c.Writer); a
// WithDenyHandler function writes to c.Writer, and the request is aborted
// after it; a request exempted by WithSkip goes down the chain untouched;
// WithShadow lets the requests a limit denies go down the chain.
package ginadapter

import (
	"bufio"
	"net"
	"net/http"

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
		if g.Skip(c.Request) {
			return // the chain goes on, untouched
		}
		var t core.Ticket
		q, req, ok := core.Begin[writer](g, c.Writer, c.Request, &t)
		if !ok {
			// Begin has written the refusal, like c.AbortWithStatusJSON
			// would, with its own content type.
			c.Abort()
			return
		}
		w := &q.A
		w.ResponseWriter = c.Writer
		orig := c.Request
		c.Writer, c.Request = w, req
		panicked := true
		defer func() {
			c.Writer, c.Request = w.ResponseWriter, orig
			if w.hijacked {
				t.Finish(w.sent, true, panicked)
			} else {
				t.Finish(w.Status(), false, panicked)
			}
		}()
		c.Next()
		panicked = false
	}
}

// writer is Gin's writer, which it wraps to see a hijack.
type writer struct {
	gin.ResponseWriter
	hijacked bool
	sent     int // the status written before the hijack, 0 if none
}

// Hijack hijacks Gin's writer. A status Gin had written (Written) before
// the hijack is sent as the server hands the connection over; one it had
// only recorded (WriteHeader without a write) never is.
//
// If Gin's own writer wraps one that cannot be hijacked, Hijack returns
// http.ErrNotSupported, as package httpadapter does, where Gin would panic.
func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if u, ok := w.ResponseWriter.(interface{ Unwrap() http.ResponseWriter }); ok {
		if _, ok := u.Unwrap().(http.Hijacker); !ok {
			return nil, nil, http.ErrNotSupported
		}
	}
	written, status := w.ResponseWriter.Written(), w.ResponseWriter.Status()
	conn, rw, err := w.ResponseWriter.Hijack()
	if err == nil && !w.hijacked {
		w.hijacked = true
		if written {
			w.sent = status
		}
	}
	return conn, rw, err
}

// Unwrap returns Gin's writer, for http.ResponseController.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
