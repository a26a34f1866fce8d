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
	rem    int64 // credits
	win    int64 // window index of used
	used   int64
	tat    int64
}

type mKey struct {
	limits  []*mLimit
	revoked bool
}

type model struct {
	now  int64
	keys map[string]*mKey
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
	case engine.KindCredits:
		ml.rem = l.Quota()
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

type mRes struct {
	ok                      bool
	remaining, retry, reset int64 // retry -1: never
}

func (m *model) try(l *mLimit, n int64) (mRes, func()) {
	switch l.l.Kind() {
	case engine.KindCredits:
		if n > l.rem {
			return mRes{remaining: l.rem, retry: -1}, nil
		}
		return mRes{ok: true, remaining: l.rem - n}, func() { l.rem -= n }
	case engine.KindRate:
		tau := l.quota * l.period
		t := max(l.tat, m.now)
		if n > l.quota {
			return mRes{remaining: max(m.now+tau-t, 0) / l.period, retry: -1, reset: t - m.now}, nil
		}
		nt := t + n*l.period
		if nt-m.now > tau {
			return mRes{remaining: max(m.now+tau-t, 0) / l.period, retry: nt - m.now - tau, reset: t - m.now}, nil
		}
		return mRes{ok: true, remaining: (m.now + tau - nt) / l.period, reset: nt - m.now}, func() { l.tat = nt }
	default:
		cur := m.winIndex(l)
		win, used := l.win, l.used
		if cur > win { // a new window; if the clock went back, the old one stays
			win, used = cur, 0
		}
		end := m.winEnd(l, win)
		left := max(l.quota-used, 0)
		if n > left {
			retry := end - m.now
			if n > l.quota {
				retry = -1
			}
			return mRes{remaining: left, retry: retry, reset: end - m.now}, nil
		}
		return mRes{ok: true, remaining: left - n, reset: end - m.now}, func() { l.win, l.used = win, used+n }
	}
}

func (m *model) consume(key string, n int64) engine.Decision {
	k := m.keys[key]
	switch {
	case k == nil:
		return engine.Decision{Reason: engine.UnknownKey}
	case k.revoked:
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
	d := engine.Decision{Allowed: allowed, Limit: k.limits[best].quota, Remaining: r.remaining, ResetAfter: time.Duration(r.reset)}
	if !allowed {
		d.Reason = engine.Exhausted
		if r.retry > 0 {
			d.RetryAfter = time.Duration(r.retry)
		}
	}
	return d
}

func (m *model) refund(key string, n int64) error {
	k := m.keys[key]
	if k == nil {
		return engine.ErrUnknownKey
	}
	for _, l := range k.limits {
		switch l.l.Kind() {
		case engine.KindCredits:
			if l.rem < l.quota {
				l.rem = min(l.rem+n, l.quota)
			}
		case engine.KindRate:
			if l.tat > m.now {
				l.tat = max(l.tat-n*l.period, m.now)
			}
		default:
			if l.win >= m.winIndex(l) {
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
				nl.rem = max(nl.quota-(o.quota-o.rem), 0)
			case l.Kind() == engine.KindRate:
				if debt := o.tat - m.now; debt > 0 {
					nl.tat = m.now + min((debt+o.period-1)/o.period, nl.quota)*nl.period
				} else {
					nl.tat = o.tat
				}
			case l.Kind() == engine.KindWindow && nl.period != o.period:
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
	found := false
	for _, l := range k.limits {
		if l.l.Kind() == engine.KindCredits {
			found = true
			l.quota += n
			l.rem += n
		}
	}
	if !found {
		return engine.ErrNoCredits
	}
	return nil
}

func (m *model) status(key string) []int64 {
	var out []int64
	for _, l := range m.keys[key].limits {
		switch l.l.Kind() {
		case engine.KindCredits:
			out = append(out, l.rem)
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
	for _, s := range []error{engine.ErrUnknownKey, engine.ErrKeyExists, engine.ErrNoCredits, engine.ErrInvalidAmount} {
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
	keys := []string{"a", "b", "c", "d"}
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d, after:\n%s\n%s", seed, joinTail(log, 30), fmt.Sprintf(format, args...))
	}
	for range steps {
		key := keys[r.IntN(len(keys))]
		switch op := r.IntN(20); {
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
			if err != nil || got != want {
				fail("consume: got %+v %v want %+v", got, err, want)
			}
		case op < 13:
			n := 1 + r.Int64N(5)
			log = append(log, fmt.Sprintf("refund %s %d", key, n))
			if err, want := errClass(eng.Refund(ctx, key, n)), m.refund(key, n); err != want {
				fail("refund: got %v want %v", err, want)
			}
		case op < 14:
			log = append(log, "revoke "+key)
			err := eng.Revoke(ctx, key)
			var want error = engine.ErrUnknownKey
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
			if err != nil || st.Revoked != m.keys[k].revoked || fmt.Sprint(remaining(st)) != fmt.Sprint(m.status(k)) {
				fail("status %s: got %v %+v want revoked=%v %v", k, err, st, m.keys[k].revoked, m.status(k))
			}
		}
	}
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
