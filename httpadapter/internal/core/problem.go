package core

import (
	"net/http"
	"strconv"

	"github.com/allot-go/allot/engine"
)

// ProblemQuotaExceeded is the problem type of a 429, from
// draft-ietf-httpapi-ratelimit-headers.
const ProblemQuotaExceeded = "https://iana.org/assignments/http-problem-types#quota-exceeded"

// The bodies of the fixed problem responses, built once.
var (
	bodyMissingKey     = problem(http.StatusUnauthorized, "an API key is required: send it in the X-API-Key header or as Authorization: Bearer <key>")
	bodyBadCredentials = problem(http.StatusUnauthorized, "the API key could not be read from the request")
	bodyEmptyKey       = problem(http.StatusUnauthorized, "the API key is empty")
	bodyAmbiguousKey   = problem(http.StatusBadRequest, "the request carries several different API keys: send one, in the X-API-Key header or as Authorization: Bearer <key>")
	bodyBadKey         = problem(http.StatusUnauthorized, "the API key is malformed")
	bodyUnknownKey     = problem(http.StatusUnauthorized, "the API key is not valid")
	bodyBadChecksum    = problem(http.StatusUnauthorized, "the API key is not valid: its checksum does not match (mistyped?)")
	bodyRevoked        = problem(http.StatusUnauthorized, "the API key has been revoked")
	bodyBadCost        = problem(http.StatusInternalServerError, "the request's cost could not be computed")
	bodyUnavailable    = problem(http.StatusServiceUnavailable, "the quota service is unavailable")
)

// problem returns an RFC 9457 body of type about:blank, whose title is the
// status text.
func problem(status int, detail string) []byte {
	b := []byte(`{"type":"about:blank","title":`)
	b = appendJSONString(b, http.StatusText(status))
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"detail":`...)
	b = appendJSONString(b, detail)
	return append(b, '}')
}

// exceededBody returns the body of a 429: the draft's quota-exceeded problem
// type, whose violated-policies member names the limits that denied the n
// units (those with fewer than n left; if none is found, because the state
// moved on since the decision, the limits with the decision's quota).
func exceededBody(ls []engine.LimitStatus, n int64, d *engine.Decision) []byte {
	b := make([]byte, 0, 320)
	b = append(b, `{"type":"`+ProblemQuotaExceeded+`","title":"Request cannot be satisfied as assigned quota has been exceeded","status":429,"detail":`...)
	if d.RetryAfter > 0 {
		var num [20]byte
		b = appendJSONString(b, "the quota is exhausted; retry in "+string(appendInt(num[:0], ceilSeconds(d.RetryAfter)))+" s")
	} else {
		b = appendJSONString(b, "the quota is exhausted and does not refill by itself")
	}
	b = append(b, `,"violated-policies":[`...)
	first := true
	for pass := 0; pass < 2 && first; pass++ {
		for i := range ls {
			if pass == 0 && ls[i].Remaining >= n || pass == 1 && ls[i].Limit.Quota() != d.Limit {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendJSONString(b, ls[i].Limit.Name())
		}
	}
	return append(b, "]}"...)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
