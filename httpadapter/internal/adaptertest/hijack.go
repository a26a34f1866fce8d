package adaptertest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
)

// finished wraps a server's handler and reports on done each time a request
// has left it, returned or panicked: the middleware inside has then
// finished the request (refunded it or not, marked it done). Tests wait on
// it instead of on what the client read, which a handler that hijacks can
// send before the middleware has finished.
type finished struct {
	h    http.Handler
	done chan struct{}
}

// newFinished wraps h.
func newFinished(h http.Handler) *finished {
	return &finished{h: h, done: make(chan struct{}, 64)}
}

func (f *finished) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() { f.done <- struct{}{} }()
	f.h.ServeHTTP(w, r)
}

// quietServer starts a real server for h whose error log (panics of
// handlers, writes on hijacked connections) is discarded, closed at the end
// of the test.
func quietServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// rawGet sends GET path with key in X-API-Key over a new connection to srv,
// and returns the status of the response the client receives (0 if the
// connection ends before a complete header) and its body, as far as it can
// be read. A raw connection, unlike http.Client, never retries.
func rawGet(t *testing.T, srv *httptest.Server, path, key string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: allot.test\r\nX-API-Key: %s\r\n\r\n", path, key)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// hijackApp hijacks the connection, through http.Hijacker on /iface and
// http.ResponseController elsewhere, after what the path says:
//
//	/iface, /rc        nothing
//	/500               WriteHeader(500)
//	/500-flushed       WriteHeader(500) and Flush
//
// then writes a complete 200 by hand, unless the path contains "silent",
// and closes the connection. After the hijack, it calls WriteHeader(500) and
// Write on the hijacked writer if the path is /after, and panics if the
// path contains "panic".
var hijackApp = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch p {
	case "/500", "/500-silent", "/500-panic":
		w.WriteHeader(http.StatusInternalServerError)
	case "/500-flushed", "/500-flushed-silent", "/500-flushed-panic":
		w.WriteHeader(http.StatusInternalServerError)
		if err := http.NewResponseController(w).Flush(); err != nil {
			panic(err)
		}
	}
	var conn net.Conn
	var buf *bufio.ReadWriter
	var err error
	if p == "/iface" {
		conn, buf, err = w.(http.Hijacker).Hijack()
	} else {
		conn, buf, err = http.NewResponseController(w).Hijack()
	}
	if err != nil {
		panic(err) // the connection is real: Hijack must work
	}
	defer conn.Close()
	if !strings.Contains(p, "silent") {
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = buf.Flush()
	}
	if p == "/after" {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "lost")
	}
	if strings.Contains(p, "panic") {
		panic("panic after hijack")
	}
})

// What a hijacked connection costs: once the handler hijacks, the
// middleware cannot see what the client gets, so the units stay spent,
// whatever the handler writes or panics afterwards. Only a final status sent
// to the connection before the hijack counts, judged as usual (a 500 is
// refunded). net/http sends a status passed to WriteHeader when the
// connection is hijacked; Gin only records it until something is written
// or flushed, and then it is never sent. Each case runs on a real
// connection, checks what the client got, and waits until the middleware
// has finished the request before it reads the balance.
func testHijack(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(100))
	fin := newFinished(mk(eng, hijackApp))
	srv := quietServer(t, fin)

	left := int64(100)
	for _, c := range []struct {
		path   string
		status int // what the client gets; 0: nothing
		refund bool
	}{
		{"/iface", 200, false},
		{"/rc", 200, false},
		{"/after", 200, false},             // WriteHeader(500) after the hijack
		{"/panic", 200, false},             // the client was served, then a panic
		{"/silent", 0, false},              // nothing at all
		{"/silent-panic", 0, false},        // nothing, then a panic
		{"/500-flushed", 500, true},        // the 500 went out before the hijack
		{"/500-flushed-silent", 500, true}, //
		{"/500-flushed-panic", 500, true},  // refunded once, not twice
		{"/500", -1, false},                // see below
		{"/500-panic", -1, false},          //
		{"/500-silent", -1, false},         //
	} {
		status, body := rawGet(t, srv, c.path, "key")
		within(t, fin.done)
		refund := c.refund
		if c.status == -1 {
			// A status recorded but not flushed before the hijack:
			// net/http sends it as it hands the connection over, Gin
			// never does. The rule is the same: it counts if the client
			// got it.
			require.Contains(t, []int{500, 200, 0}, status, c.path)
			refund = status == http.StatusInternalServerError
			t.Logf("%s: the client got %d", c.path, status)
		} else {
			require.Equal(t, c.status, status, c.path)
			if status == http.StatusOK {
				assert.Equal(t, "hijacked", body, c.path)
			}
		}
		if !refund {
			left--
		}
		assert.Equal(t, left, remaining(t, eng, "key"), c.path)
		assert.Equal(t, int64(0), eng.InFlight("key"), "%s: the request is done", c.path)
	}

	// Every request is done: RevokeAndWait returns.
	revoked := make(chan error, 1)
	go func() { revoked <- eng.RevokeAndWait(context.Background(), "key") }()
	require.NoError(t, within(t, revoked))
}

// A writer that cannot be hijacked (here a recorder) makes Hijack return
// http.ErrNotSupported, through http.Hijacker and http.ResponseController,
// without a panic; the handler then answers as usual, and is charged as
// usual.
func testHijackNotSupported(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	var errs []error
	h := mk(eng, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _, err := w.(http.Hijacker).Hijack()
		errs = append(errs, err)
		_, _, err = http.NewResponseController(w).Hijack()
		errs = append(errs, err)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	rec := serve(h, get("key", "/"))
	require.Len(t, errs, 2)
	for _, err := range errs {
		assert.ErrorIs(t, err, http.ErrNotSupported)
	}
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, int64(10), remaining(t, eng, "key"), "a 503 is refunded: nothing was hijacked")
}
