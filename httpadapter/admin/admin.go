package admin

import (
	"context"
	_ "embed"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/allot-go/allot/engine"
)

// MaxBody is the largest request body the handler reads, in bytes: a larger
// one is refused with 413.
const MaxBody = 64 << 10

// List page sizes: the limit query parameter of GET /keys.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

//go:embed openapi.json
var openAPI []byte

// Option configures Handler. Options apply in order; a nil Option is
// ignored.
type Option func(*config)

type config struct {
	authorize func(*http.Request) bool
	challenge string
	log       *slog.Logger
}

// WithAuthorize makes the handler serve the requests for which authorize
// returns true. It is called first, before the body is read (it must not
// consume the body), for every request, openapi.json included. Without it,
// or with a nil authorize, every request is refused with 403: the handler
// denies by default. A request authorize refuses gets 403 too, or 401 with
// WithChallenge.
func WithAuthorize(authorize func(*http.Request) bool) Option {
	return func(c *config) { c.authorize = authorize }
}

// WithChallenge makes a request that the WithAuthorize function refuses get
// 401 with `WWW-Authenticate: challenge` (for example `Bearer
// realm="admin"`), instead of 403. Use it when the authorizer checks an
// HTTP authentication scheme the client can answer. "" restores 403.
func WithChallenge(challenge string) Option {
	return func(c *config) { c.challenge = challenge }
}

// WithLogger makes the handler log one line per request, after it is
// answered: the operation, the status, the key's ID when the call named one
// (hex; a raw key is never logged, nor is the request's URL, which a
// careless client may have put a raw key in), the remote address and, for
// an error, the problem's detail. Without it nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.log = l }
}

// route is one endpoint: routes is the only place endpoints are declared,
// both for the ServeMux and for the test that checks openapi.json against
// them.
type route struct {
	method string // GET also serves HEAD
	path   string // a ServeMux path pattern, which is also the OpenAPI path
	op     string // the operationId in openapi.json, and the "op" of a log line
	serve  func(h *handler, w http.ResponseWriter, r *http.Request, c *call) (int, any, error)
}

var routes = []route{
	{"POST", "/keys", "registerKey", (*handler).register},
	{"GET", "/keys", "listKeys", (*handler).list},
	{"GET", "/keys/{id}", "getKey", (*handler).statusID},
	{"DELETE", "/keys/{id}", "deleteKey", (*handler).deleteID},
	{"POST", "/keys/{id}/revoke", "revokeKey", (*handler).revokeID},
	{"POST", "/keys/{id}/reset", "resetKey", (*handler).resetID},
	{"POST", "/keys/{id}/top-up", "topUpKey", (*handler).topUpID},
	{"POST", "/by-key/status", "getKeyByKey", (*handler).statusKey},
	{"POST", "/by-key/revoke", "revokeKeyByKey", (*handler).revokeKey},
	{"POST", "/by-key/delete", "deleteKeyByKey", (*handler).deleteKey},
	{"POST", "/by-key/reset", "resetKeyByKey", (*handler).resetKey},
	{"POST", "/by-key/top-up", "topUpKeyByKey", (*handler).topUpKey},
	{"POST", "/by-key/set-limits", "setLimitsByKey", (*handler).setLimits},
	{"POST", "/by-key/rotate", "rotateKeyByKey", (*handler).rotate},
	{"GET", "/stats", "getStats", (*handler).stats},
	{"GET", "/openapi.json", "getOpenAPI", (*handler).openapi},
}

// Handler returns the admin API of eng: JSON over HTTP, to register, list,
// inspect, revoke, delete, reset, top up, change and rotate keys (see the
// package documentation for the endpoints and status codes). Its paths are
// relative to where it is mounted: serve it under a prefix with
// http.StripPrefix. Without WithAuthorize it refuses every request. A nil
// eng answers every call 503.
func Handler(eng *engine.Engine, opts ...Option) http.Handler {
	h := &handler{eng: eng, mux: http.NewServeMux()}
	for _, o := range opts {
		if o != nil {
			o(&h.cfg)
		}
	}
	allow := map[string][]string{}
	for _, rt := range routes {
		h.mux.HandleFunc(rt.method+" "+rt.path, h.endpoint(rt))
		allow[rt.path] = append(allow[rt.path], rt.method)
		if rt.method == http.MethodGet {
			allow[rt.path] = append(allow[rt.path], http.MethodHead)
		}
	}
	// Each path also gets a pattern without a method, less specific than
	// its routes': it answers the other methods 405, with Allow. What
	// matches no path gets 404. Both are problem documents, as every error.
	for path, methods := range allow {
		slices.Sort(methods)
		a := strings.Join(methods, ", ")
		h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			c := callOf(r)
			c.op = "methodNotAllowed"
			w.Header().Set("Allow", a)
			h.problem(w, c, http.StatusMethodNotAllowed, codeMethod, "the method "+r.Method+" is not allowed here: use "+a)
		})
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c := callOf(r)
		c.op = "notFound"
		// The path is not echoed: a careless client may have put a raw key in it.
		h.problem(w, c, http.StatusNotFound, codeNotFound, "no such endpoint (see openapi.json)")
	})
	return h
}

type handler struct {
	eng *engine.Engine
	cfg config
	mux *http.ServeMux
}

// call is what a request's log line says, filled in as it is served.
type call struct {
	op     string
	id     string // hex KeyID of the key the call named, if any
	status int
	detail string
	keys   []string // raw keys of the request's body, kept out of every detail
}

type callKey struct{}

func callOf(r *http.Request) *call {
	c, _ := r.Context().Value(callKey{}).(*call)
	if c == nil {
		c = &call{} // not reached through ServeHTTP
	}
	return c
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{op: "unauthorized"}
	hd := w.Header()
	hd.Set("Cache-Control", "no-store") // a register response holds a raw key
	hd.Set("X-Content-Type-Options", "nosniff")
	defer h.logCall(r, c)
	switch {
	case h.cfg.authorize == nil:
		h.problem(w, c, http.StatusForbidden, codeForbidden, "the admin API refuses every request: the server did not configure admin.WithAuthorize")
		return
	case !h.cfg.authorize(r):
		if h.cfg.challenge != "" {
			hd.Set("WWW-Authenticate", h.cfg.challenge)
			h.problem(w, c, http.StatusUnauthorized, codeUnauthorized, "the request is not authorised")
			return
		}
		h.problem(w, c, http.StatusForbidden, codeForbidden, "the request is not authorised")
		return
	}
	c.op = ""
	h.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
}

// endpoint returns the http.HandlerFunc of rt: it runs rt.serve and writes
// its result, a JSON body or a problem.
func (h *handler) endpoint(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := callOf(r)
		c.op = rt.op
		if err := checkQuery(r, rt.op == "listKeys"); err != nil {
			h.fail(w, c, err)
			return
		}
		if h.eng == nil && rt.op != "getOpenAPI" {
			h.problem(w, c, http.StatusServiceUnavailable, codeUnavailable, "the admin API has no engine")
			return
		}
		status, body, err := rt.serve(h, w, r, c)
		if err == errWritten {
			c.status = status
			return
		}
		if err != nil {
			h.fail(w, c, err)
			return
		}
		c.status = status
		if body == nil {
			w.WriteHeader(status)
			return
		}
		writeJSON(w, status, body)
	}
}

func (h *handler) logCall(r *http.Request, c *call) {
	if h.cfg.log == nil {
		return
	}
	level := slog.LevelInfo
	switch {
	case c.status >= 500:
		level = slog.LevelError
	case c.status >= 400:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{slog.String("op", c.op), slog.String("method", r.Method), slog.Int("status", c.status)}
	if c.id != "" {
		attrs = append(attrs, slog.String("id", c.id))
	}
	attrs = append(attrs, slog.String("remote", r.RemoteAddr))
	if c.detail != "" {
		attrs = append(attrs, slog.String("detail", c.detail))
	}
	h.cfg.log.LogAttrs(r.Context(), level, "allot admin", attrs...)
}
