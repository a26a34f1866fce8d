package admin

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/allot-go/allot/engine"
)

// limitJSON is a limit in a request: {"kind":"credits","quota":100},
// {"kind":"window","quota":1000,"period":"1h"},
// {"kind":"month","quota":5,"location":"Europe/Paris"},
// {"kind":"rate","n":10,"per":"1s","burst":20}, each with an optional
// "name". The pointers tell a member that was sent from one that was not.
type limitJSON struct {
	Kind     string  `json:"kind"`
	Name     *string `json:"name"`
	Quota    *int64  `json:"quota"`
	Period   *string `json:"period"`
	Location *string `json:"location"`
	N        *int64  `json:"n"`
	Per      *string `json:"per"`
	Burst    *int64  `json:"burst"`
}

// toLimits converts the limits of a request, checking that each has the
// members of its kind and no other; the engine checks their values.
func toLimits(in []limitJSON) ([]engine.Limit, error) {
	out := make([]engine.Limit, 0, len(in))
	for i, l := range in {
		lim, err := toLimit(l)
		if err != nil {
			return nil, fmt.Errorf("%w: limits[%d]: %s", engine.ErrInvalidLimit, i, err.Error())
		}
		out = append(out, lim)
	}
	return out, nil
}

func toLimit(l limitJSON) (engine.Limit, error) {
	members := map[string]bool{
		"quota": l.Quota != nil, "period": l.Period != nil, "location": l.Location != nil,
		"n": l.N != nil, "per": l.Per != nil, "burst": l.Burst != nil,
	}
	var want []string
	switch l.Kind {
	case "credits":
		want = []string{"quota"}
	case "window":
		want = []string{"quota", "period"}
	case "month":
		want = []string{"quota", "location"}
	case "rate":
		want = []string{"n", "per", "burst"}
	case "":
		return engine.Limit{}, errors.New(`"kind" is required: "credits", "window", "month" or "rate"`)
	default:
		return engine.Limit{}, errors.New(`unknown "kind": use "credits", "window", "month" or "rate"`)
	}
	for _, m := range []string{"quota", "period", "location", "n", "per", "burst"} {
		allowed := false
		for _, w := range want {
			allowed = allowed || w == m
		}
		switch {
		case members[m] && !allowed:
			return engine.Limit{}, fmt.Errorf("a %s limit has no %q", l.Kind, m)
		case !members[m] && allowed && m != "location":
			return engine.Limit{}, fmt.Errorf("a %s limit needs %q", l.Kind, m)
		}
	}
	var lim engine.Limit
	switch l.Kind {
	case "credits":
		lim = engine.Credits(*l.Quota)
	case "window":
		d, err := parseDuration("period", *l.Period)
		if err != nil {
			return lim, err
		}
		lim = engine.PerWindow(*l.Quota, d)
	case "month":
		loc := time.UTC
		if l.Location != nil {
			var err error
			if loc, err = loadLocation(*l.Location); err != nil {
				return lim, err
			}
		}
		lim = engine.PerMonthIn(*l.Quota, loc)
	case "rate":
		d, err := parseDuration("per", *l.Per)
		if err != nil {
			return lim, err
		}
		lim = engine.Rate(*l.N, d, *l.Burst)
	}
	if l.Name != nil {
		if *l.Name == "" {
			return lim, errors.New(`"name" must not be empty (leave it out for the default name)`)
		}
		lim = lim.Named(*l.Name)
	}
	return lim, nil
}

func parseDuration(member, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: %q is not a duration such as \"1h\" or \"500ms\"", member, s)
	}
	return d, nil
}

// loadLocation loads an IANA time zone by name. "Local" is refused: it
// would mean the server's zone, which the client cannot know.
func loadLocation(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf(`"location": %q: name an IANA time zone, such as "UTC" or "Europe/Paris"`, name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf(`"location": %q is not a time zone this server knows`, name)
	}
	return loc, nil
}

// sameLimits reports whether a key's limits are those of a request.
func sameLimits(req []engine.Limit, have []engine.LimitStatus) bool {
	if len(req) != len(have) {
		return false
	}
	for i, a := range req {
		b := have[i].Limit
		if a.Kind() != b.Kind() || a.Name() != b.Name() || a.Quota() != b.Quota() ||
			a.Period() != b.Period() || a.RateN() != b.RateN() || locName(a) != locName(b) {
			return false
		}
	}
	return true
}

func locName(l engine.Limit) string {
	if loc := l.Location(); loc != nil {
		return loc.String()
	}
	return ""
}

// limitOut is a limit in a response: the members of its kind, as in a
// request, with its name, the units it would grant now and the time until
// it is full again (0s for credits).
type limitOut struct {
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Quota      int64  `json:"quota,omitempty"`
	Period     string `json:"period,omitempty"`
	Location   string `json:"location,omitempty"`
	N          int64  `json:"n,omitempty"`
	Per        string `json:"per,omitempty"`
	Burst      int64  `json:"burst,omitempty"`
	Remaining  int64  `json:"remaining"`
	ResetAfter string `json:"reset_after"`
}

func limitOf(ls engine.LimitStatus) limitOut {
	l := ls.Limit
	o := limitOut{Kind: l.Kind().String(), Name: l.Name(), Remaining: ls.Remaining, ResetAfter: ls.ResetAfter.String()}
	switch l.Kind() {
	case engine.KindCredits:
		o.Quota = l.Quota()
	case engine.KindWindow:
		o.Quota, o.Period = l.Quota(), l.Period().String()
	case engine.KindMonth:
		o.Quota, o.Location = l.Quota(), locName(l)
	case engine.KindRate:
		o.N, o.Per, o.Burst = l.RateN(), l.Period().String(), l.Quota()
	}
	return o
}

// keyOut is a key in a response, by ID. Key, the raw key, is set only in
// the response that created it with a generated key.
type keyOut struct {
	ID          string     `json:"id"`
	Key         string     `json:"key,omitempty"`
	RotatedFrom string     `json:"rotated_from,omitempty"`
	Revoked     bool       `json:"revoked"`
	RotatedOut  bool       `json:"rotated_out"`
	GraceUntil  string     `json:"grace_until,omitempty"`
	Recovered   bool       `json:"recovered,omitempty"`
	Limits      []limitOut `json:"limits"`
}

func keyOf(id engine.KeyID, st engine.Status) keyOut {
	o := keyOut{ID: hex.EncodeToString(id[:]), Revoked: st.Revoked, RotatedOut: st.RotatedOut, Limits: make([]limitOut, 0, len(st.Limits))}
	if st.RotatedOut {
		o.GraceUntil = st.GraceUntil.UTC().Format(time.RFC3339Nano)
	}
	for _, l := range st.Limits {
		o.Limits = append(o.Limits, limitOf(l))
	}
	return o
}

type pageOut struct {
	Keys []keyOut `json:"keys"`
	// Next is the after parameter of the next page; absent on the last.
	Next string `json:"next,omitempty"`
}

type histogramOut struct {
	Bounds     []float64 `json:"bounds_seconds"`
	Counts     []uint64  `json:"counts"`
	Count      uint64    `json:"count"`
	SumSeconds float64   `json:"sum_seconds"`
}

type statsOut struct {
	Granted          int64        `json:"granted"`
	Exhausted        int64        `json:"exhausted"`
	Revoked          int64        `json:"revoked"`
	UnknownKey       int64        `json:"unknown_key"`
	UnitsGranted     int64        `json:"units_granted"`
	Rounds           int64        `json:"rounds"`
	Records          int64        `json:"records"`
	Reservations     int64        `json:"reservations"`
	RoundLatency     histogramOut `json:"round_latency"`
	StoreErrors      int64        `json:"store_errors"`
	LastStoreError   string       `json:"last_store_error,omitempty"`
	LastStoreErrorAt string       `json:"last_store_error_at,omitempty"`
	Keys             int64        `json:"keys"`
	RevokedKeys      int64        `json:"revoked_keys"`
	RotatedOut       int64        `json:"rotated_out"`
	Recovered        int64        `json:"recovered"`
	InFlight         int64        `json:"in_flight"`
}

func statsOf(s engine.Stats) statsOut {
	o := statsOut{
		Granted: s.Granted, Exhausted: s.Exhausted, Revoked: s.Revoked, UnknownKey: s.UnknownKey, UnitsGranted: s.UnitsGranted,
		Rounds: s.Rounds, Records: s.Records, Reservations: s.Reservations,
		RoundLatency: histogramOut{Bounds: s.RoundLatency.Bounds, Counts: s.RoundLatency.Counts, Count: s.RoundLatency.Count, SumSeconds: s.RoundLatency.Sum},
		StoreErrors:  s.StoreErrors,
		Keys:         s.Keys, RevokedKeys: s.RevokedKeys, RotatedOut: s.RotatedOut, Recovered: s.Recovered, InFlight: s.InFlight,
	}
	if o.RoundLatency.Bounds == nil {
		o.RoundLatency.Bounds = []float64{}
	}
	if o.RoundLatency.Counts == nil {
		o.RoundLatency.Counts = []uint64{}
	}
	if s.LastStoreError != nil {
		o.LastStoreError = s.LastStoreError.Error()
		o.LastStoreErrorAt = s.LastStoreErrorAt.UTC().Format(time.RFC3339Nano)
	}
	return o
}

// Requests.
type (
	registerReq struct {
		Key    *string     `json:"key"`
		Limits []limitJSON `json:"limits"`
	}
	// keyReq is a body that names a key; so are the bodies of the other
	// calls by key (not by embedding keyReq: encoding/json would name its
	// members after it in its errors).
	keyReq struct {
		Key *string `json:"key"`
	}
	amountReq struct {
		Amount *int64 `json:"amount"`
	}
	topUpReq struct {
		Key    *string `json:"key"`
		Amount *int64  `json:"amount"`
	}
	setLimitsReq struct {
		Key    *string     `json:"key"`
		Limits []limitJSON `json:"limits"`
	}
	rotateReq struct {
		Key    *string `json:"key"`
		NewKey *string `json:"new_key"`
		Grace  *string `json:"grace"`
	}
	noBody struct{}
)

// named returns the key a body names (nil if none), for byKey.
func (b *keyReq) named() *string       { return b.Key }
func (b *topUpReq) named() *string     { return b.Key }
func (b *setLimitsReq) named() *string { return b.Key }
func (b *rotateReq) named() *string    { return b.Key }

// decode reads r's JSON body into v: at most MaxBody bytes (413 beyond),
// a media type of application/json or */*+json (415 otherwise), one JSON
// value with no member v does not know and nothing after it (400). An
// empty body is an empty object if optional, else a 400.
func decode(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	tooLarge := &badRequest{status: http.StatusRequestEntityTooLarge, code: codeTooLarge, msg: fmt.Sprintf("the body is larger than %d bytes", MaxBody)}
	if r.ContentLength > MaxBody {
		return tooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge
		}
		return bad("the body could not be read")
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if optional {
			return nil
		}
		return bad("a JSON body is required (see openapi.json)")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return &badRequest{status: http.StatusUnsupportedMediaType, code: codeMediaType, msg: "send the body as Content-Type: application/json"}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bad(jsonError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad("the body holds more than one JSON value")
	}
	return nil
}

// jsonError describes a decoding error without quoting the body (which
// holds raw keys) or naming Go types.
func jsonError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "the body is not valid JSON (at byte " + strconv.FormatInt(se.Offset, 10) + ")"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the body is not valid JSON (it ends early)"
	case errors.As(err, &te):
		want := "another type"
		switch te.Type.Kind().String() {
		case "int64":
			want = "an integer"
		case "string":
			want = "a string"
		case "slice":
			want = "an array"
		case "struct":
			want = "an object"
		}
		if te.Field == "" {
			return "the body must be " + want
		}
		return fmt.Sprintf("%q must be %s", te.Field, want)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		if plainName(name) {
			return fmt.Sprintf("unknown member %q (see openapi.json)", name)
		}
		return "the body has an unknown member (see openapi.json)"
	}
	return "the body is not valid JSON"
}

// plainName reports whether an unknown member's name may be quoted back:
// a short lower-case word, not something that could be a key.
func plainName(s string) bool {
	if s == "" || len(s) > 24 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// checkQuery refuses a query string, but for the list's after and limit,
// each at most once. Values are never echoed.
func checkQuery(r *http.Request, list bool) error {
	if r.URL.RawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return bad("the query string is malformed")
	}
	for name, vs := range q {
		if !list || name != "after" && name != "limit" {
			if list {
				return bad("unknown query parameter: GET keys takes after and limit")
			}
			return bad("this endpoint takes no query parameters")
		}
		if len(vs) > 1 {
			return bad("a query parameter is repeated")
		}
	}
	return nil
}

// parseID parses a KeyID of 64 hex digits; the value is never echoed.
func parseID(s, what string) (engine.KeyID, error) {
	var id engine.KeyID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("%w: %s must be a key ID, 64 hex digits", engine.ErrInvalidKey, what)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: %s must be a key ID, 64 hex digits", engine.ErrInvalidKey, what)
	}
	return id, nil
}

func idHex(id engine.KeyID) string { return hex.EncodeToString(id[:]) }

// writeJSON writes v as the body, with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
