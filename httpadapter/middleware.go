package httpadapter

import (
	"bufio"
	"io"
	"net"
	"net/http"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter/internal/core"
)

// Middleware returns net/http middleware that enforces eng's quotas: it
// admits each request with eng.Admit and runs the handler only if the
// units are granted (see the package documentation for the status codes,
// fields and refunds). A nil eng answers every request 503
// (see WithFailOpen) instead of panicking.
func Middleware(eng *engine.Engine, opts ...Option) func(http.Handler) http.Handler {
	g := core.New(eng, opts...)
	return func(next http.Handler) http.Handler {
		return &handler{g: g, next: next}
	}
}

type handler struct {
	g    *core.Guard
	next http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.g.Skip(r) {
		h.next.ServeHTTP(w, r)
		return
	}
	// The Ticket stays on the stack; one allocation holds the response
	// writer (and, with WithDecisionContext, the context that carries the
	// decision and the request passed on).
	var t core.Ticket
	q, req, ok := core.Begin[responseWriter](h.g, w, r, &t)
	if !ok {
		return
	}
	rw := &q.A
	rw.ResponseWriter = w
	panicked := true
	defer func() {
		status, hijacked := rw.result()
		t.Finish(status, hijacked, panicked)
	}()
	h.next.ServeHTTP(rw, req)
	panicked = false
}

// responseWriter records the status the handler answers.
type responseWriter struct {
	http.ResponseWriter
	status   int
	hijacked bool
	sent     int // the status passed on before the hijack, 0 if none
}

// result returns the status to judge the request by: for a hijacked
// connection, the status passed on before the hijack, which the server
// sends as it hands the connection over (0 if there was none); otherwise
// the status the handler answered, 200 if none.
func (w *responseWriter) result() (status int, hijacked bool) {
	switch {
	case w.hijacked:
		return w.sent, true
	case w.status == 0:
		return http.StatusOK, false
	}
	return w.status, false
}

// WriteHeader records the first final status (informational 1xx responses
// other than 101 may precede it) and passes code on.
func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write passes p on; without an earlier WriteHeader the status is 200.
func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// WriteString passes s on without copying it, if the underlying writer is
// an io.StringWriter.
func (w *responseWriter) WriteString(s string) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return io.WriteString(w.ResponseWriter, s)
}

// ReadFrom passes src on, keeping the underlying writer's io.ReaderFrom
// (sendfile) fast path.
func (w *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{w.ResponseWriter}, src)
}

// writerOnly hides every method but Write, so io.Copy cannot loop back into
// ReadFrom.
type writerOnly struct{ io.Writer }

// Flush implements http.Flusher: it flushes the underlying writer, if it
// can be flushed (directly or through Unwrap).
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError flushes the underlying writer, for http.ResponseController; it
// returns http.ErrNotSupported if the writer cannot flush.
func (w *responseWriter) FlushError() error {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker by hijacking the underlying writer
// (directly or through Unwrap); it returns http.ErrNotSupported if that
// cannot be hijacked. What the handler does after a successful hijack
// changes nothing for the middleware.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && !w.hijacked {
		w.hijacked, w.sent = true, w.status
	}
	return conn, rw, err
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
