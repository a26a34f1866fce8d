package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/allot-go/allot/engine"
)

// StatusClientClosedRequest is the status of a call whose client went away
// (its request's context was canceled) before the engine finished: nginx's
// 499, which the client never sees, but a log does.
const StatusClientClosedRequest = 499

// Problem codes: the "code" member of every problem document, for clients
// that act on an error without parsing its detail.
const (
	codeUnauthorized = "unauthorized"
	codeForbidden    = "forbidden"
	codeNotFound     = "not_found"
	codeMethod       = "method_not_allowed"
	codeTooLarge     = "body_too_large"
	codeMediaType    = "unsupported_media_type"
	codeBadRequest   = "bad_request"
	codeUnavailable  = "unavailable"
	codeInternal     = "internal"
)

// problemDoc is an RFC 9457 problem document, with the extension member
// code.
type problemDoc struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// badRequest is an error of the request itself (its JSON, query or path),
// answered 400, or with another status.
type badRequest struct {
	status int
	code   string
	msg    string
}

func (e *badRequest) Error() string { return e.msg }

func bad(msg string) error {
	return &badRequest{status: http.StatusBadRequest, code: codeBadRequest, msg: msg}
}

// engineErrors maps the engine's sentinel errors to a status and a code.
var engineErrors = []struct {
	err    error
	status int
	code   string
}{
	{engine.ErrUnknownKey, http.StatusNotFound, "unknown_key"},
	{engine.ErrKeyExists, http.StatusConflict, "key_exists"},
	{engine.ErrRotated, http.StatusConflict, "rotated"},
	{engine.ErrKeyRevoked, http.StatusConflict, "key_revoked"},
	{engine.ErrRotationChain, http.StatusConflict, "rotation_chain"},
	{engine.ErrNoCredits, http.StatusConflict, "no_credits"},
	{engine.ErrInvalidKey, http.StatusBadRequest, "invalid_key"},
	{engine.ErrInvalidAmount, http.StatusBadRequest, "invalid_amount"},
	{engine.ErrInvalidLimit, http.StatusBadRequest, "invalid_limit"},
	{engine.ErrClosed, http.StatusServiceUnavailable, "closed"},
	{engine.ErrStore, http.StatusServiceUnavailable, "store"},
	{engine.ErrClock, http.StatusInternalServerError, "clock"},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout"},
	{context.Canceled, StatusClientClosedRequest, "canceled"},
}

// fail answers err as a problem: the engine's sentinel errors by the table
// above, with the engine's message as the detail; errors of the request by
// their own status; anything else 500, without its message.
func (h *handler) fail(w http.ResponseWriter, c *call, err error) {
	var br *badRequest
	if errors.As(err, &br) {
		h.problem(w, c, br.status, br.code, br.msg)
		return
	}
	for _, m := range engineErrors {
		if errors.Is(err, m.err) {
			h.problem(w, c, m.status, m.code, err.Error())
			return
		}
	}
	c.detail = err.Error() // logged, not answered
	h.problem(w, c, http.StatusInternalServerError, codeInternal, "internal error")
}

// problem writes a problem document. A raw key the request carried never
// appears in its detail, nor in the log line's.
func (h *handler) problem(w http.ResponseWriter, c *call, status int, code, detail string) {
	detail = c.scrub(detail)
	c.status = status
	if c.detail == "" {
		c.detail = detail
	} else {
		c.detail = detail + ": " + c.scrub(c.detail)
	}
	title := http.StatusText(status)
	if status == StatusClientClosedRequest {
		title = "Client Closed Request"
	}
	b, _ := json.Marshal(problemDoc{Type: "about:blank", Title: title, Status: status, Detail: detail, Code: code})
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// scrub replaces every raw key of the request's body in s.
func (c *call) scrub(s string) string {
	for _, k := range c.keys {
		if k != "" {
			s = strings.ReplaceAll(s, k, "[key]")
		}
	}
	return s
}
