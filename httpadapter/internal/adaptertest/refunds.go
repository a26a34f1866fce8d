package adaptertest

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
)

// statusApp answers the status in the path: /500, /404, /panic, /none
// (writes nothing), /write (writes without WriteHeader).
var statusApp = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch p := strings.TrimPrefix(r.URL.Path, "/"); p {
	case "panic":
		panic("handler panic")
	case "none":
	case "write":
		_, _ = io.WriteString(w, "body")
	default:
		code, _ := strconv.Atoi(p)
		w.WriteHeader(code)
	}
})

// By default, 5xx and panics are refunded, other statuses are not.
func testRefunds(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	h := mk(eng, statusApp)

	for _, c := range []struct {
		path   string
		status int
		left   int64
	}{
		{"/500", 500, 10},
		{"/503", 503, 10},
		{"/404", 404, 9},
		{"/400", 400, 8},
		{"/200", 200, 7},
		{"/none", 200, 6},
		{"/write", 200, 5},
	} {
		rec := serve(h, get("key", c.path))
		assert.Equal(t, c.status, rec.Code, c.path)
		assert.Equal(t, c.left, remaining(t, eng, "key"), c.path)
		assert.Equal(t, int64(0), eng.InFlight("key"), c.path)
	}

	assert.PanicsWithValue(t, "handler panic", func() { serve(h, get("key", "/panic")) },
		"the panic goes on after the refund")
	assert.Equal(t, int64(5), remaining(t, eng, "key"), "a panic is refunded")
	assert.Equal(t, int64(0), eng.InFlight("key"), "a panicking request is done")
}

// WithRefundIf replaces the predicate; it sees 200 for a handler that wrote
// nothing and 500 for a panic.
func testRefundIf(t *testing.T, mk New) {
	eng := NewEngine(t)
	register(t, eng, "key", engine.Credits(10))
	var mu sync.Mutex
	var seen []int
	h := mk(eng, statusApp, httpadapter.WithRefundIf(func(status int) bool {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, status)
		return status == http.StatusNotFound
	}))

	serve(h, get("key", "/404"))
	assert.Equal(t, int64(10), remaining(t, eng, "key"))
	serve(h, get("key", "/500"))
	assert.Equal(t, int64(9), remaining(t, eng, "key"))
	serve(h, get("key", "/none"))
	serve(h, get("key", "/write"))
	assert.Panics(t, func() { serve(h, get("key", "/panic")) })
	assert.Equal(t, int64(6), remaining(t, eng, "key"))
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []int{404, 500, 200, 200, 500}, seen)
}
