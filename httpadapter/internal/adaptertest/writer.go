package adaptertest

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
)

// Flushing works through the middleware: in-process through http.Flusher
// and http.ResponseController, and on a real server, where the client reads
// the first chunk while the handler is still blocked.
func testFlush(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.PerWindow(100, time.Hour))
	release := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		switch r.URL.Path {
		case "/iface":
			f, ok := w.(http.Flusher)
			if !ok {
				http.Error(w, "no flusher", http.StatusInternalServerError)
				return
			}
			f.Flush()
		default:
			if err := http.NewResponseController(w).Flush(); err != nil {
				_, _ = io.WriteString(w, err.Error())
				return
			}
		}
		if r.URL.Path == "/stream" {
			<-release
			_, _ = io.WriteString(w, "second\n")
		}
	})
	h := mk(eng, app)
	for _, p := range []string{"/iface", "/rc"} {
		rec := serve(h, get("key", p))
		assert.True(t, rec.Flushed, p)
		assert.Equal(t, "first\n", rec.Body.String(), p)
	}

	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/stream", nil)
	req.Header.Set("X-API-Key", "key")
	resp, err := srv.Client().Do(req)
	if err != nil {
		close(release)
		require.NoError(t, err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	close(release)
	require.NoError(t, err)
	assert.Equal(t, "first\n", line)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "second\n", string(rest))
}
