package adaptertest

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
)

// Hijacking works through the middleware, with http.Hijacker and with
// http.ResponseController; a hijacked request is not refunded and is done.
func testHijack(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var hijack func() (netConn io.ReadWriteCloser, buf *bufio.ReadWriter, err error)
		if r.URL.Path == "/iface" {
			hj, ok := w.(http.Hijacker)
			if !ok {
				http.Error(w, "no hijacker", http.StatusInternalServerError)
				return
			}
			hijack = func() (io.ReadWriteCloser, *bufio.ReadWriter, error) { return hj.Hijack() }
		} else {
			hijack = func() (io.ReadWriteCloser, *bufio.ReadWriter, error) {
				return http.NewResponseController(w).Hijack()
			}
		}
		conn, buf, err := hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = buf.Flush()
	})
	srv := httptest.NewServer(mk(eng, app))
	defer srv.Close()
	for i, p := range []string{"/iface", "/rc"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+p, nil)
		req.Header.Set("X-API-Key", "key")
		resp, err := srv.Client().Do(req)
		require.NoError(t, err, p)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err, p)
		assert.Equal(t, http.StatusOK, resp.StatusCode, p)
		assert.Equal(t, "hijacked", string(body), p)
		assert.Equal(t, int64(9-i), remaining(t, eng, "key"), p)
	}
	// Both requests are done: RevokeAndWait returns at once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, eng.RevokeAndWait(ctx, "key"))
}
