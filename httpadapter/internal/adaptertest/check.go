package adaptertest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dunglas/httpsfv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Item is a parsed member of RateLimit or RateLimit-Policy.
type Item struct {
	Name   string
	Params map[string]int64
	Keys   []string
}

// CheckFields parses the RateLimit-Policy and RateLimit fields of h as
// RFC 9651 Lists with github.com/dunglas/httpsfv, a parser independent of
// the middleware's serializer, and checks their shape against revision 11
// of the draft: every member a String item whose parameters are
// non-negative Integers, q in every policy and w > 0 where present, r in
// every RateLimit item, the same names in the same order in both. Each
// field must also be exactly what httpsfv serializes from what it parsed
// (the canonical form of RFC 9651, section 4.1). It returns the items;
// both are nil if h has neither field.
func CheckFields(t *testing.T, h http.Header) (policy, limits []Item) {
	t.Helper()
	pv, rv := h.Values("RateLimit-Policy"), h.Values("RateLimit")
	if len(pv) == 0 && len(rv) == 0 {
		return nil, nil
	}
	policy = parseItems(t, "RateLimit-Policy", pv, "q")
	limits = parseItems(t, "RateLimit", rv, "r")
	require.Equal(t, len(policy), len(limits), "one item per limit in both fields")
	for i := range policy {
		assert.Equal(t, policy[i].Name, limits[i].Name, "item %d", i)
		for _, k := range policy[i].Keys {
			assert.Contains(t, []string{"q", "w"}, k, "policy parameters")
		}
		if w, has := policy[i].Params["w"]; has {
			assert.Positive(t, w, "policy item %d: w", i)
		}
		for _, k := range limits[i].Keys {
			assert.Contains(t, []string{"r", "t"}, k, "RateLimit parameters")
		}
	}
	return policy, limits
}

func parseItems(t *testing.T, field string, lines []string, required string) []Item {
	t.Helper()
	require.NotEmpty(t, lines, "%s missing", field)
	l, err := httpsfv.UnmarshalList(lines)
	require.NoError(t, err, "%s: %q", field, lines)
	require.NotEmpty(t, l, "%s is an empty list", field)
	canonical, err := httpsfv.Marshal(l)
	require.NoError(t, err, "%s: %q", field, lines)
	assert.Equal(t, canonical, strings.Join(lines, ", "), "%s is not in canonical form", field)
	items := make([]Item, len(l))
	for i, m := range l {
		it, isItem := m.(httpsfv.Item)
		require.True(t, isItem, "%s member %d is an inner list", field, i)
		name, isStr := it.Value.(string)
		require.True(t, isStr, "%s member %d: %#v is not a String", field, i, it.Value)
		item := Item{Name: name, Params: map[string]int64{}, Keys: it.Params.Names()}
		for _, k := range item.Keys {
			pv, _ := it.Params.Get(k)
			v, isInt := pv.(int64)
			require.True(t, isInt, "%s member %d: parameter %s=%#v is not an Integer", field, i, k, pv)
			require.GreaterOrEqual(t, v, int64(0), "%s member %d: %s", field, i, k)
			item.Params[k] = v
		}
		_, has := item.Params[required]
		require.True(t, has, "%s member %d lacks %s", field, i, required)
		items[i] = item
	}
	return items
}

// Problem is a decoded problem+json body.
type Problem struct {
	Type     string   `json:"type"`
	Title    string   `json:"title"`
	Status   int      `json:"status"`
	Detail   string   `json:"detail"`
	Violated []string `json:"violated-policies"`
}

// CheckProblem checks that a refusal is an RFC 9457 problem with the given
// status, and decodes it.
func CheckProblem(t *testing.T, status int, h http.Header, body []byte) Problem {
	t.Helper()
	assert.Equal(t, "application/problem+json", h.Get("Content-Type"))
	var p Problem
	require.NoError(t, json.Unmarshal(body, &p), "body %s", body)
	assert.Equal(t, status, p.Status)
	assert.NotEmpty(t, p.Type)
	assert.NotEmpty(t, p.Title)
	assert.NotEmpty(t, p.Detail)
	if status == http.StatusTooManyRequests {
		assert.Equal(t, "https://iana.org/assignments/http-problem-types#quota-exceeded", p.Type)
		assert.NotEmpty(t, p.Violated)
	} else {
		assert.Equal(t, "about:blank", p.Type)
		assert.Equal(t, http.StatusText(status), p.Title)
	}
	return p
}

// check429 checks a 429 recorded in-process.
func check429(t *testing.T, rec *httptest.ResponseRecorder, retryAfter string, violated ...string) {
	t.Helper()
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	p := CheckProblem(t, http.StatusTooManyRequests, rec.Header(), rec.Body.Bytes())
	assert.Equal(t, violated, p.Violated)
	assert.Equal(t, retryAfter, rec.Header().Get("Retry-After"))
	CheckFields(t, rec.Header())
}
