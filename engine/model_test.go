package engine_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
)

// A sequential reference model of the engine, written the plain way (full
// window indexes, no bit packing, no CAS), to compare with the engine result
// by result over random sequences of calls.

type mLimit struct {
	l      engine.Limit
	quota  int64
	period int64 // window ns, or rate interval ns
	spent  int64 // credits: units spent (may exceed quota after a shrink)
	win    int64 // window index of used
	used   int64
	tat    int64
}

type mKey struct {
	limits  []*mLimit
	revoked bool
	alias   *mAlias // a rotated-out key: no limits of its own
	// Rotation chain bookkeeping of a head, as the engine documents it:
	// depth counts the hops of the chains still in grace that end here.
	depth int
	until int64
}

type mAlias struct {
	target   string
	deadline int64
}

// grant is a granted Consume the model remembers, for refunds.
type grant struct {
	key  string
	n    int64
	at   int64
	d    engine.Decision
	lims []*mLimit // the limits it was counted in
}

type model struct {
	now    int64
	keys   map[string]*mKey
	grants []grant
}

// resolve follows key through its rotation chain: the head, and whether
// every link is alive (not revoked, grace not over).
func (m *model) resolve(key string) (*mKey, bool) {
	k := m.keys[key]
	alive := true
	for k != nil && k.alias != nil {
		if k.revoked || m.now >= k.alias.deadline {
			alive = false
		}
		k = m.keys[k.alias.target]
	}
	if k == nil || k.revoked {
		return k, false
	}
	return k, alive
}

func (m *model) winIndex(l *mLimit) int64 {
	if l.l.Kind() == engine.KindWindow {
		return m.now / l.period
	}
	t := time.Unix(0, m.now).In(l.l.Location())
	return int64(t.Year()-1970)*12 + int64(t.Month()-1)
}

func (m *model) winEnd(l *mLimit, idx int64) int64 {
	if l.l.Kind() == engine.KindWindow {
		return (idx + 1) * l.period
	}
	return time.Date(1970, time.Month(idx+2), 1, 0, 0, 0, 0, l.l.Location()).UnixNano()
}

func (m *model) newLimit(l engine.Limit) *mLimit {
	ml := &mLimit{l: l, quota: l.Quota()}
	switch l.Kind() {
	case engine.KindWindow:
		ml.period = int64(l.Period())
	case engine.KindRate:
		ml.period = (int64(l.Period()) + l.RateN() - 1) / l.RateN()
	}
	if k := l.Kind(); k == engine.KindWindow || k == engine.KindMonth {
		ml.win = m.winIndex(ml)
	}
	return ml
}

// periodOf is the longest a window's durations may be.
func (m *model) periodOf(l *mLimit) int64 {
	if l.l.Kind() == engine.KindMonth {
		return int64(31 * 24 * time.Hour)
	}
	return l.period
}

type mRes struct {
	ok                      bool
	remaining, retry, reset int64 // retry -1: never
}

func (m *model) try(l *mLimit, n int64) (mRes, func()) {
	switch l.l.Kind() {
	case engine.KindCredits:
		left := max(l.quota-l.spent, 0)
		if n > left {
			return mRes{remaining: left, retry: -1}, nil
		}
		return mRes{ok: true, remaining: left - n}, func() { l.spent += n }
	case engine.KindRate:
		tau := l.quota * l.period
		t := max(l.tat, m.now)
		if n > l.quota {
			return mRes{remaining: max(m.now+tau-t, 0) / l.period, retry: -1, reset: min(t-m.now, tau)}, nil
		}
		nt := t + n*l.period
		if nt-m.now > tau {
			return mRes{remaining: max(m.now+tau-t, 0) / l.period, retry: min(nt-m.now-tau, tau), reset: min(t-m.now, tau)}, nil
		}
		return mRes{ok: true, remaining: (m.now + tau - nt) / l.period, reset: nt - m.now}, func() { l.tat = nt }
	default:
		cur := m.winIndex(l)
		win, used := l.win, l.used
		if cur > win { // a new window; if the clock went back, the old one stays
			win, used = cur, 0
		}
		// Durations stay within the limit's own period, also when the
		// clock stepped back.
		reset := min(m.winEnd(l, win)-m.now, m.periodOf(l))
		left := max(l.quota-used, 0)
		if n > left {
			retry := reset
			if n > l.quota {
				retry = -1
			}
			return mRes{remaining: left, retry: retry, reset: reset}, nil
		}
		return mRes{ok: true, remaining: left - n, reset: reset}, func() { l.win, l.used = win, used+n }
	}
}

func (m *model) consume(key string, n int64) engine.Decision {
	if m.keys[key] == nil {
		return engine.Decision{Reason: engine.UnknownKey}
	}
	k, alive := m.resolve(key)
	if !alive {
		return engine.Decision{Reason: engine.Revoked}
	}
	res := make([]mRes, len(k.limits))
	var apply []func()
	allowed := true
	for i, l := range k.limits {
		r, f := m.try(l, n)
		res[i] = r
		allowed = allowed && r.ok
		apply = append(apply, f)
	}
	// The tightest limit: fewest left after a grant; after a denial one that
	// never frees up, else the one that frees up last (first wins ties).
	best := 0
	for i := range res {
		b := res[best]
		if allowed && res[i].remaining < b.remaining {
			best = i
		}
		if !allowed && !res[i].ok && (b.ok || (b.retry != -1 && (res[i].retry == -1 || res[i].retry > b.retry))) {
			best = i
		}
	}
	if allowed {
		for _, f := range apply {
			f()
		}
	}
	r := res[best]
	d := engine.Decision{Allowed: allowed, Reason: engine.OK, Limit: k.limits[best].quota, Remaining: r.remaining, ResetAfter: time.Duration(r.reset)}
	if !allowed {
		d.Reason = engine.Exhausted
		if r.retry > 0 {
			d.RetryAfter = time.Duration(r.retry)
		}
	}
	return d
}

// refund gives back n units of a grant made at time at: to a window only
// if it is still the window the grant was counted in.
// Nothing is given back once SetLimits has replaced the limits of the
// grant.
func (m *model) refund(g grant, n int64) error {
	if m.keys[g.key] == nil {
		return engine.ErrUnknownKey
	}
	k, _ := m.resolve(g.key)
	if k == nil || len(k.limits) == 0 || &k.limits[0] != &g.lims[0] {
		return nil
	}
	at := g.at
	for _, l := range k.limits {
		switch l.l.Kind() {
		case engine.KindCredits:
			l.spent = max(l.spent-n, 0)
		case engine.KindRate:
			if l.tat > m.now {
				l.tat = max(l.tat-n*l.period, m.now)
			}
		default:
			saved := m.now
			m.now = at
			origin := m.winIndex(l)
			m.now = saved
			if origin == l.win && l.win >= m.winIndex(l) {
				l.used = max(l.used-n, 0)
			}
		}
	}
	return nil
}

func (m *model) setLimits(key string, ls []engine.Limit) error {
	k := m.keys[key]
	if k == nil {
		return engine.ErrUnknownKey
	}
	if k.alias != nil {
		return engine.ErrRotated
	}
	var next []*mLimit
	for _, l := range ls {
		nl := m.newLimit(l)
		for _, o := range k.limits {
			if o.l.Name() != l.Name() {
				continue
			}
			switch {
			case o.l.Kind() != l.Kind():
			case l.Kind() == engine.KindCredits:
				nl.spent = o.spent
			case l.Kind() == engine.KindRate:
				if debt := o.tat - m.now; debt > 0 {
					nl.tat = m.now + (debt+o.period-1)/o.period*nl.period
				} else {
					nl.tat = o.tat
				}
			case l.Kind() == engine.KindWindow && nl.period != o.period:
				// The units used in the old window that holds now count
				// in the new window that holds now.
				if o.win >= m.winIndex(o) {
					nl.used = o.used
				}
			case l.Kind() == engine.KindMonth && nl.l.Location().String() != o.l.Location().String():
				if o.win >= m.winIndex(o) {
					nl.used = o.used
				}
			default:
				nl.win, nl.used = o.win, o.used
			}
		}
		next = append(next, nl)
	}
	k.limits = next
	return nil
}

func (m *model) topUp(key string, n int64) error {
	k := m.keys[key]
	if k == nil {
		return engine.ErrUnknownKey
	}
	if k.alias != nil {
		return engine.ErrRotated
	}
	found := false
	for _, l := range k.limits {
		if l.l.Kind() == engine.KindCredits {
			found = true
			l.quota += n
		}
	}
	if !found {
		return engine.ErrNoCredits
	}
	return nil
}

// rotate is Rotate in the model: old becomes an alias of new, and new a
// head one hop deeper than old (the hops of chains whose grace is over do
// not count).
func (m *model) rotate(oldKey, newKey string, grace time.Duration) error {
	o := m.keys[oldKey]
	switch {
	case oldKey == newKey:
		return engine.ErrKeyExists
	case o == nil:
		return engine.ErrUnknownKey
	case m.keys[newKey] != nil:
		return engine.ErrKeyExists
	case o.alias != nil:
		return engine.ErrRotated
	case o.revoked:
		return engine.ErrKeyRevoked
	}
	depth := 0
	if m.now < o.until {
		depth = o.depth
	}
	if grace > 0 && depth+1 > engine.MaxRotationChain {
		return engine.ErrRotationChain
	}
	deadline := m.now + int64(grace)
	nk := &mKey{limits: o.limits, depth: depth + 1, until: max(o.until, deadline)}
	if grace == 0 {
		nk.depth, nk.until = 0, 0 // the old key is revoked at once: no chain
	}
	m.keys[newKey] = nk
	o.limits, o.alias = nil, &mAlias{target: newKey, deadline: deadline}
	if grace == 0 {
		o.revoked = true
	}
	return nil
}

func (m *model) status(key string) []int64 {
	var out []int64
	k, _ := m.resolve(key)
	if k == nil {
		return nil
	}
	for _, l := range k.limits {
		switch l.l.Kind() {
		case engine.KindCredits:
			out = append(out, max(l.quota-l.spent, 0))
		case engine.KindRate:
			out = append(out, max(m.now+l.quota*l.period-max(l.tat, m.now), 0)/l.period)
		default:
			used := l.used
			if m.winIndex(l) > l.win {
				used = 0
			}
			out = append(out, max(l.quota-used, 0))
		}
	}
	return out
}

func randLimits(r *rand.Rand) []engine.Limit {
	pool := []func() engine.Limit{
		func() engine.Limit { return engine.Credits(1 + r.Int64N(20)) },
		func() engine.Limit { return engine.PerWindow(1+r.Int64N(10), time.Second) },
		func() engine.Limit { return engine.PerWindow(1+r.Int64N(10), time.Minute) },
		func() engine.Limit { return engine.PerWindow(1+r.Int64N(10), time.Hour) },
		func() engine.Limit { return engine.PerMonthIn(1+r.Int64N(10), time.FixedZone("X", 5*3600)) },
		func() engine.Limit {
			return engine.Rate(1+r.Int64N(5), []time.Duration{time.Second, 10 * time.Second, 7 * time.Second}[r.IntN(3)], 1+r.Int64N(8))
		},
	}
	var out []engine.Limit
	for _, i := range r.Perm(len(pool))[:1+r.IntN(3)] {
		out = append(out, pool[i]())
	}
	return out
}

func errClass(err error) error {
	for _, s := range []error{engine.ErrUnknownKey, engine.ErrKeyExists, engine.ErrNoCredits, engine.ErrInvalidAmount, engine.ErrRotated, engine.ErrKeyRevoked, engine.ErrRotationChain} {
		if errors.Is(err, s) {
			return s
		}
	}
	return err
}

func TestModel(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 20
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runModel(t, uint64(seed), 400) })
	}
}

func runModel(t *testing.T, seed uint64, steps int) {
	r := rand.New(rand.NewPCG(seed, 42))
	clk := newClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(90 * 24 * time.Hour)))))
	eng := newEngine(t, engine.WithClock(clk.Now))
	m := &model{now: clk.Now().UnixNano(), keys: map[string]*mKey{}}
	keys := []string{"a", "b", "c", "d", "e", "f"}
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d, after:\n%s\n%s", seed, joinTail(log, 30), fmt.Sprintf(format, args...))
	}
	for range steps {
		key := keys[r.IntN(len(keys))]
		switch op := r.IntN(22); {
		case op < 2:
			ls := randLimits(r)
			log = append(log, fmt.Sprintf("register %s %v", key, ls))
			err := eng.Register(ctx, key, ls...)
			var want error
			if m.keys[key] != nil {
				want = engine.ErrKeyExists
			} else {
				mk := &mKey{}
				for _, l := range ls {
					mk.limits = append(mk.limits, m.newLimit(l))
				}
				m.keys[key] = mk
			}
			if errClass(err) != want {
				fail("register: got %v want %v", err, want)
			}
		case op < 11:
			n := 1 + r.Int64N(4)
			if r.IntN(10) == 0 {
				n = 1 + r.Int64N(30)
			}
			got, err := eng.Consume(ctx, key, n)
			want := m.consume(key, n)
			log = append(log, fmt.Sprintf("consume %s %d -> %+v", key, n, got))
			if err != nil || !sameDecision(got, want) {
				fail("consume: got %+v %v want %+v", got, err, want)
			}
			if got.Allowed {
				head, _ := m.resolve(key)
				m.grants = append(m.grants, grant{key: key, n: n, at: m.now, d: got, lims: head.limits})
			}
		case op < 13:
			// Refund part of a grant made earlier (maybe in a window that
			// has ended since), through the name it was made with.
			if len(m.grants) == 0 {
				continue
			}
			i := len(m.grants) - 1 - r.IntN(min(len(m.grants), 8))
			g := m.grants[i]
			m.grants = append(m.grants[:i], m.grants[i+1:]...)
			n := 1 + r.Int64N(g.n)
			log = append(log, fmt.Sprintf("refund %s %d of a grant at %v", g.key, n, time.Unix(0, g.at).UTC()))
			if err, want := errClass(refund(eng, g, n)), m.refund(g, n); err != want {
				fail("refund: got %v want %v", err, want)
			}
		case op < 14:
			log = append(log, "revoke "+key)
			err := eng.Revoke(ctx, key)
			want := engine.ErrUnknownKey
			if k := m.keys[key]; k != nil {
				k.revoked, want = true, nil
			}
			if errClass(err) != want {
				fail("revoke: got %v want %v", err, want)
			}
		case op < 15:
			n := 1 + r.Int64N(10)
			log = append(log, fmt.Sprintf("topup %s %d", key, n))
			if err, want := errClass(eng.TopUp(ctx, key, n)), m.topUp(key, n); err != want {
				fail("topup: got %v want %v", err, want)
			}
		case op < 16:
			ls := randLimits(r)
			log = append(log, fmt.Sprintf("setlimits %s %v", key, ls))
			if err, want := errClass(eng.SetLimits(ctx, key, ls...)), m.setLimits(key, ls); err != want {
				fail("setlimits: got %v want %v", err, want)
			}
		case op < 18:
			to := keys[r.IntN(len(keys))]
			grace := []time.Duration{0, time.Second, time.Minute, time.Hour, 48 * time.Hour}[r.IntN(5)]
			log = append(log, fmt.Sprintf("rotate %s -> %s grace %v", key, to, grace))
			err, want := errClass(eng.Rotate(ctx, key, to, grace)), m.rotate(key, to, grace)
			if err != want {
				fail("rotate: got %v want %v", err, want)
			}
		default:
			var d time.Duration
			switch r.IntN(6) {
			case 0:
				d = time.Duration(r.Int64N(int64(time.Second)))
			case 1:
				d = time.Duration(r.Int64N(int64(time.Minute)))
			case 2:
				d = time.Duration(r.Int64N(int64(2 * time.Hour)))
			case 3:
				d = time.Duration(r.Int64N(int64(40 * 24 * time.Hour)))
			case 4:
				d = -time.Duration(r.Int64N(int64(10 * time.Second))) // a clock that steps back
			default:
				d = 100 * time.Millisecond
			}
			clk.Add(d)
			m.now = clk.Now().UnixNano()
			log = append(log, fmt.Sprintf("clock %+v -> %v", d, clk.Now().UTC()))
		}
		for _, k := range keys {
			st, err := eng.Status(k)
			if m.keys[k] == nil {
				if !errors.Is(err, engine.ErrUnknownKey) {
					fail("status %s: got %v, want unknown", k, err)
				}
				continue
			}
			_, alive := m.resolve(k)
			if err != nil || st.Revoked != !alive || st.RotatedOut != (m.keys[k].alias != nil) || fmt.Sprint(remaining(st)) != fmt.Sprint(m.status(k)) {
				fail("status %s: got %v %+v want revoked=%v %v", k, err, st, !alive, m.status(k))
			}
		}
	}
}

// sameDecision compares what a Decision says, not how a refund finds its
// grant again.
func sameDecision(got, want engine.Decision) bool {
	return got.Allowed == want.Allowed && got.Reason == want.Reason && got.Limit == want.Limit &&
		got.Remaining == want.Remaining && got.RetryAfter == want.RetryAfter && got.ResetAfter == want.ResetAfter
}

// refund gives back n units of grant g through the engine.
func refund(eng *engine.Engine, g grant, n int64) error {
	return eng.Refund(ctx, g.key, g.d, n)
}

func joinTail(log []string, n int) string {
	if len(log) > n {
		log = log[len(log)-n:]
	}
	out := ""
	for _, l := range log {
		out += "  " + l + "\n"
	}
	return out
}
