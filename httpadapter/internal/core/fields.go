package core

import (
	"net/http"
	"strconv"
	"time"

	"github.com/allot-go/allot/engine"
)

// maxSFInteger is the largest Integer of RFC 9651 (15 digits). Larger
// numbers (only a Credits balance can be) are clamped to it.
const maxSFInteger = 999_999_999_999_999

// ceilSeconds returns d in whole seconds, rounded up; 0 for d <= 0.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// Window returns the "w" parameter of l's RateLimit-Policy item, in whole
// seconds rounded up, and false if the item has none: the window of a
// PerWindow limit; for a Rate limit, the time to refill a whole burst (burst
// times the emission interval, which the engine rounds up to the
// nanosecond). Credits never refill and calendar months have no fixed
// length, so they have no "w".
func Window(l engine.Limit) (int64, bool) {
	switch l.Kind() {
	case engine.KindWindow:
		return ceilSeconds(l.Period()), true
	case engine.KindRate:
		n := l.RateN()
		if n <= 0 {
			return 0, false
		}
		interval := (int64(l.Period()) + n - 1) / n
		return ceilSeconds(time.Duration(l.Quota() * interval)), true
	}
	return 0, false
}

// appendInt appends v clamped to the range of an RFC 9651 Integer and to
// at least 0.
func appendInt(b []byte, v int64) []byte {
	return strconv.AppendInt(b, min(max(v, 0), maxSFInteger), 10)
}

// appendParam appends ";name=v".
func appendParam(b []byte, name string, v int64) []byte {
	b = append(b, ';')
	b = append(b, name...)
	b = append(b, '=')
	return appendInt(b, v)
}

// appendString appends s as an RFC 9651 String. Limit names are printable
// ASCII without quotes or backslashes (the engine checks), but escape and
// filter anyway: a header must never be malformed.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c >= 0x20 && c < 0x7f:
			b = append(b, c)
		default:
			b = append(b, '?')
		}
	}
	return append(b, '"')
}

// AppendPolicy appends the RateLimit-Policy value for ls: one item per
// limit, `"name";q=quota;w=seconds`.
func AppendPolicy(b []byte, ls []engine.LimitStatus) []byte {
	for i := range ls {
		l := ls[i].Limit
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendString(b, l.Name())
		b = appendParam(b, "q", l.Quota())
		if w, ok := Window(l); ok {
			b = appendParam(b, "w", w)
		}
	}
	return b
}

// AppendRateLimit appends the RateLimit value for ls: one item per limit,
// `"name";r=remaining;t=seconds`, without "t" for Credits, which never
// reset.
func AppendRateLimit(b []byte, ls []engine.LimitStatus) []byte {
	for i := range ls {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendString(b, ls[i].Limit.Name())
		b = appendParam(b, "r", ls[i].Remaining)
		if ls[i].Limit.Kind() != engine.KindCredits {
			b = appendParam(b, "t", ceilSeconds(ls[i].ResetAfter))
		}
	}
	return b
}

// Header names, in the canonical form http.Header uses, so they can be set
// without canonicalising on every request.
const (
	hPolicy     = "Ratelimit-Policy"
	hRateLimit  = "Ratelimit"
	hRetryAfter = "Retry-After"
	hLimit      = "X-Ratelimit-Limit"
	hRemaining  = "X-Ratelimit-Remaining"
	hReset      = "X-Ratelimit-Reset"
)

// maxFields is the number of rate-limit fields a response can get.
const maxFields = 6

// setFields sets the rate-limit fields of a response to a live key: the
// RateLimit-Policy and RateLimit lists of ls, unless they are off,
// Retry-After for a denial (refused) that waiting cures, and the legacy
// X-RateLimit-* fields if enabled. All values are built in one buffer and
// stored as substrings of one string, with vals as the backing array of
// their slices if it is long enough (else one is made): one allocation, or
// two, in all.
func (g *Guard) setFields(h http.Header, ls []engine.LimitStatus, d *engine.Decision, refused bool, vals []string) {
	var arr [768]byte
	b := arr[:0]
	var ends [maxFields]int
	var names [maxFields]string
	k := 0
	mark := func(name string) {
		names[k], ends[k] = name, len(b)
		k++
	}
	if g.rateLimit && len(ls) > 0 {
		b = AppendPolicy(b, ls)
		mark(hPolicy)
		b = AppendRateLimit(b, ls)
		mark(hRateLimit)
	}
	if refused && d.RetryAfter > 0 {
		b = appendInt(b, ceilSeconds(d.RetryAfter))
		mark(hRetryAfter)
	}
	if g.legacy {
		b = appendInt(b, d.Limit)
		mark(hLimit)
		b = appendInt(b, d.Remaining)
		mark(hRemaining)
		if d.ResetAfter > 0 {
			t := g.clock().Add(d.ResetAfter)
			s := t.Unix()
			if t.Nanosecond() > 0 {
				s++
			}
			b = appendInt(b, s)
			mark(hReset)
		}
	}
	if k == 0 {
		return
	}
	s := string(b)
	if len(vals) < k {
		vals = make([]string, k)
	}
	start := 0
	for i := range k {
		vals[i] = s[start:ends[i]]
		start = ends[i]
		h[names[i]] = vals[i : i+1 : i+1]
	}
}
