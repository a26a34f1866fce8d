package core

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/dunglas/httpsfv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
)

func TestCeilSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int64{
		-time.Second:            0,
		0:                       0,
		time.Nanosecond:         1,
		time.Second:             1,
		time.Second + 1:         2,
		1500 * time.Millisecond: 2,
		time.Hour:               3600,
		math.MaxInt64:           9223372037, // no overflow
	} {
		assert.Equal(t, want, ceilSeconds(d), "%v", d)
	}
}

func TestWindow(t *testing.T) {
	for _, c := range []struct {
		l  engine.Limit
		w  int64
		ok bool
	}{
		{engine.Credits(5), 0, false},
		{engine.PerMonth(5), 0, false},
		{engine.PerWindow(5, time.Hour), 3600, true},
		{engine.PerWindow(5, 1500*time.Millisecond), 2, true},
		{engine.Rate(10, time.Second, 20), 2, true},
		{engine.Rate(3, time.Second, 5), 2, true},   // 5 × 333333334 ns
		{engine.Rate(3, time.Second, 3), 2, true},   // 3 × 333333334 ns is just over 1 s
		{engine.Rate(1, time.Minute, 1), 60, true},  // one a minute
		{engine.Rate(100, time.Second, 1), 1, true}, // 10 ms, rounded up
	} {
		w, ok := Window(c.l)
		assert.Equal(t, c.ok, ok, "%v", c.l)
		assert.Equal(t, c.w, w, "%v", c.l)
	}
}

// Integers beyond RFC 9651's 15 digits are clamped, so the fields stay
// parseable whatever the balance.
func TestFieldsClampAndParse(t *testing.T) {
	eng, err := engine.New()
	require.NoError(t, err)
	defer eng.Close()
	require.NoError(t, eng.Register(context.Background(), "k",
		engine.Credits(engine.MaxCredits).Named(`odd name !#$%&'()*+,-./:;<=>?@[]^_{|}~`),
		engine.Rate(1, time.Nanosecond, 1<<40)))
	ls, err := eng.AppendLimits(nil, "k")
	require.NoError(t, err)

	policy := string(AppendPolicy(nil, ls))
	assert.Equal(t, `"odd name !#$%&'()*+,-./:;<=>?@[]^_{|}~";q=999999999999999, "rate";q=1099511627776;w=1100`, policy)
	limits := string(AppendRateLimit(nil, ls))
	assert.Equal(t, `"odd name !#$%&'()*+,-./:;<=>?@[]^_{|}~";r=999999999999999, "rate";r=1099511627776;t=0`, limits)
	for _, f := range []string{policy, limits} {
		l, err := httpsfv.UnmarshalList([]string{f})
		require.NoError(t, err, f)
		require.Len(t, l, 2)
		assert.Equal(t, ls[0].Limit.Name(), l[0].(httpsfv.Item).Value)
	}
}

// sfvList builds, with httpsfv, the List the serializer must write: one
// String item per limit, with the given Integer parameters.
func sfvList(ls []engine.LimitStatus, params func(engine.LimitStatus, *httpsfv.Params)) httpsfv.List {
	l := httpsfv.List{}
	for _, s := range ls {
		it := httpsfv.NewItem(s.Limit.Name())
		params(s, it.Params)
		l = append(l, it)
	}
	return l
}

func clampSF(v int64) int64 { return min(max(v, 0), 999_999_999_999_999) }

// The serializer writes exactly what httpsfv, an independent RFC 9651
// implementation, serializes for the same items (RFC 9651's serialization
// is canonical, so the bytes must match), for every kind of limit, at full
// and partial balances and past the 15-digit clamp.
func TestFieldsMatchHTTPSFV(t *testing.T) {
	clock := time.Date(2026, 2, 27, 12, 0, 0, 0, time.UTC)
	eng, err := engine.New(engine.WithClock(func() time.Time { return clock }))
	require.NoError(t, err)
	defer eng.Close()
	keys := map[string][]engine.Limit{
		"credits": {engine.Credits(engine.MaxCredits)},
		"month":   {engine.PerMonth(3)},
		"window":  {engine.PerWindow(7, 90*time.Second).Named("a-b_c.d")},
		"rate":    {engine.Rate(3, time.Second, 5)},
		"many": {engine.Credits(1000), engine.PerMonth(30), engine.PerWindow(10, time.Hour),
			engine.Rate(10, time.Second, 20).Named("burst"), engine.Rate(1, time.Nanosecond, 1<<40).Named("huge")},
		"odd": {engine.Credits(5).Named(`odd name !#$%&'()*+,-./:;<=>?@[]^_{|}~`)},
	}
	for key, limits := range keys {
		require.NoError(t, eng.Register(context.Background(), key, limits...), key)
		for spent := range 3 {
			ls, err := eng.AppendLimits(nil, key)
			require.NoError(t, err)
			want, err := httpsfv.Marshal(sfvList(ls, func(s engine.LimitStatus, p *httpsfv.Params) {
				p.Add("q", clampSF(s.Limit.Quota()))
				if w, ok := Window(s.Limit); ok {
					p.Add("w", clampSF(w))
				}
			}))
			require.NoError(t, err)
			assert.Equal(t, want, string(AppendPolicy(nil, ls)), "%s policy after %d", key, spent)
			want, err = httpsfv.Marshal(sfvList(ls, func(s engine.LimitStatus, p *httpsfv.Params) {
				p.Add("r", clampSF(s.Remaining))
				if s.Limit.Kind() != engine.KindCredits {
					p.Add("t", ceilSeconds(s.ResetAfter))
				}
			}))
			require.NoError(t, err)
			assert.Equal(t, want, string(AppendRateLimit(nil, ls)), "%s RateLimit after %d", key, spent)
			_, err = eng.Consume(context.Background(), key, 1)
			require.NoError(t, err)
		}
	}
}

// The serializer does not allocate: it appends to the caller's buffer.
func TestFieldsAllocationFree(t *testing.T) {
	eng, err := engine.New()
	require.NoError(t, err)
	defer eng.Close()
	require.NoError(t, eng.Register(context.Background(), "k",
		engine.Credits(1000), engine.PerMonth(30), engine.Rate(10, time.Second, 20).Named("burst")))
	ls, err := eng.AppendLimits(nil, "k")
	require.NoError(t, err)
	buf := make([]byte, 0, 768)
	allocs := testing.AllocsPerRun(100, func() {
		b := AppendPolicy(buf[:0], ls)
		b = AppendRateLimit(b, ls)
		buf = b[:0]
	})
	assert.Zero(t, allocs)
}

func TestAppendString(t *testing.T) {
	assert.Equal(t, `"a\"b\\c?d"`, string(appendString(nil, "a\"b\\c\x01d")))
	it, err := httpsfv.UnmarshalItem([]string{string(appendString(nil, "a\"b\\c\x01d\xff"))})
	require.NoError(t, err)
	assert.Equal(t, `a"b\c?d?`, it.Value)
}

func TestQuote(t *testing.T) {
	assert.Equal(t, `"api"`, quote("api"))
	assert.Equal(t, `"a \"b\" \\ c"`, quote("a \"b\" \\ c\r\n"))
}

func TestAddQuery(t *testing.T) {
	for _, c := range []struct {
		q, want string
		n       int
		differ  bool
		err     bool
	}{
		{"", "", 0, false, false},
		{"api_key=k", "k", 1, false, false},
		{"a=1&api_key=k&api_key=j", "k", 2, true, false},
		{"api_key=k&x=1&api_key=k", "k", 2, false, false},
		{"api_key", "", 1, false, false},
		{"api_key=", "", 1, false, false},
		{"api%5fkey=a%20b+c", "a b c", 1, false, false},
		{"api+key=k", "", 0, false, false},
		{"api_keyx=k", "", 0, false, false},
		{"api_key=%2", "", 0, false, true},
		{"api_key=%g0", "", 0, false, true},
		{"api%zzkey=k&api_key=j", "j", 1, false, false},
	} {
		var cs candidates
		err := cs.addQuery(c.q, "api_key")
		assert.Equal(t, c.err, err != nil, c.q)
		if !c.err {
			assert.Equal(t, candidates{key: c.want, n: c.n, differ: c.differ}, cs, c.q)
		}
	}
}

func TestBearer(t *testing.T) {
	for _, c := range []struct {
		a, tok string
		ok     bool
	}{
		{"Bearer k", "k", true},
		{"bearer   k  ", "k", true},
		{"BEARER\tk", "k", true},
		{"Bearer", "", true},
		{"Bearer ", "", true},
		{"Bearer \t ", "", true},
		{"Bearerk", "", false},
		{"Beare", "", false},
		{"Basic a2V5Og==", "", false},
		{"", "", false},
	} {
		tok, ok := bearer(c.a)
		assert.Equal(t, c.ok, ok, "%q", c.a)
		assert.Equal(t, c.tok, tok, "%q", c.a)
	}
}

func TestExceededBodyFallback(t *testing.T) {
	ls := []engine.LimitStatus{
		{Limit: engine.Credits(10), Remaining: 5},
		{Limit: engine.PerWindow(3, time.Hour), Remaining: 3},
	}
	// The state moved on since the decision: no limit has fewer than n
	// left, so the limit with the decision's quota is named.
	d := engine.Decision{Reason: engine.Exhausted, Limit: 3}
	assert.Contains(t, string(exceededBody(ls, 1, &d)), `"violated-policies":["hour"]`)
	assert.Contains(t, string(exceededBody(ls, 4, &d)), `"violated-policies":["hour"]`)
	assert.Contains(t, string(exceededBody(ls, 6, &d)), `"violated-policies":["credits","hour"]`)
	assert.Contains(t, string(exceededBody(nil, 6, &d)), `"violated-policies":[]`)
}

// The context of a request let through carries its Ticket, passes every
// other key and the cancellation on to its parent, and is read without an
// allocation.
func TestDecisionContext(t *testing.T) {
	type key struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	tk := &Ticket{g: &Guard{}, d: engine.Decision{Allowed: true, Reason: engine.OK, Remaining: 7}}
	dc := &decisionCtx{Context: parent, t: tk}
	var ctx context.Context = dc
	type other struct{}
	child, stop := context.WithCancel(context.WithValue(ctx, other{}, 1))
	defer stop()

	d, _, ok := FromContext(child)
	require.True(t, ok)
	assert.Equal(t, int64(7), d.Remaining)
	assert.Equal(t, "v", child.Value(key{}))
	assert.Equal(t, "context.Background.WithValue(core.key, v).WithCancel.WithValue(allot decision)", dc.String())
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _, ok = FromContext(child) }))

	cancel()
	<-child.Done() // the parent's cancellation reaches the child
	assert.ErrorIs(t, child.Err(), context.Canceled)

	_, _, ok = FromContext(context.Background())
	assert.False(t, ok)
	fo := &Ticket{} // fail-open: no Guard
	_, _, ok = FromContext(&decisionCtx{Context: context.Background(), t: fo})
	assert.False(t, ok)
}
