package ginadapter_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
	"github.com/allot-go/allot/httpadapter/ginadapter"
	"github.com/allot-go/allot/httpadapter/internal/adaptertest"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

// newHandler mounts app as a catch-all route of a Gin engine that uses the
// middleware (and no gin.Recovery, so that panics reach the test).
func newHandler(eng *engine.Engine, app http.Handler, opts ...httpadapter.Option) http.Handler {
	r := gin.New()
	r.Use(ginadapter.Middleware(eng, opts...))
	r.Any("/*path", gin.WrapH(app))
	return r
}

// TestMiddleware runs the cases every adapter shares.
func TestMiddleware(t *testing.T) {
	adaptertest.Run(t, newHandler)
}

// The middleware wraps c.Writer to see hijacks: the wrapper keeps Gin's
// writer working (status, size, http.ResponseController through Unwrap),
// and middleware outside it gets its own writer back once the chain has
// run. The same goes for c.Request, replaced by a copy whose context
// carries the decision.
func TestWriterWrapper(t *testing.T) {
	eng := adaptertest.NewEngine(t)
	require.NoError(t, eng.Register(context.Background(), "key", engine.Credits(10)))
	var outerBefore, outerAfter gin.ResponseWriter
	var reqBefore, reqAfter, inner *http.Request
	var decided bool
	var deadlineErr error
	var status, size int
	r := gin.New()
	r.Use(func(c *gin.Context) {
		outerBefore, reqBefore = c.Writer, c.Request
		c.Next()
		outerAfter, reqAfter = c.Writer, c.Request
		status, size = c.Writer.Status(), c.Writer.Size()
	}, ginadapter.Middleware(eng, httpadapter.WithDecisionContext(true)))
	r.GET("/", func(c *gin.Context) {
		inner = c.Request
		_, _, decided = httpadapter.DecisionFrom(c.Request.Context())
		deadlineErr = http.NewResponseController(c.Writer).SetWriteDeadline(time.Now().Add(24 * time.Hour)) // never reached
		c.String(http.StatusAccepted, "accepted")
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	require.NoError(t, err)
	req.Header.Set("X-API-Key", "key")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusAccepted, resp.StatusCode)
	assert.Equal(t, "accepted", string(body))
	assert.NoError(t, deadlineErr, "deadlines reach the connection through Unwrap")
	assert.Same(t, outerBefore, outerAfter, "the outer middleware gets its writer back")
	assert.Same(t, reqBefore, reqAfter, "and its request")
	assert.NotSame(t, reqBefore, inner, "the handlers get a copy of the request")
	assert.True(t, decided, "whose context carries the decision")
	assert.Equal(t, http.StatusAccepted, status)
	assert.Equal(t, len("accepted"), size)
}
