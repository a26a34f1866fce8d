package engine

import (
	"fmt"
	"time"
)

// Kind is the algorithm of a Limit.
type Kind uint8

const (
	// KindCredits is a balance that never refills by itself (see TopUp).
	KindCredits Kind = iota + 1
	// KindWindow is a quota per fixed window aligned to the Unix epoch.
	KindWindow
	// KindMonth is a quota per calendar month in a time zone.
	KindMonth
	// KindRate is a GCRA rate limit with a burst.
	KindRate
)

// String returns "credits", "window", "month" or "rate".
func (k Kind) String() string {
	switch k {
	case KindCredits:
		return "credits"
	case KindWindow:
		return "window"
	case KindMonth:
		return "month"
	case KindRate:
		return "rate"
	}
	return "invalid"
}

// Limits on the values a Limit accepts. They keep each limit's state inside
// one 62-bit word, the unit of the engine's compare-and-swap.
const (
	// MaxKeyLen is the longest key, in bytes.
	MaxKeyLen = 512
	// MaxLimits is the most limits one key may have.
	MaxLimits = 8
	// MaxCredits is the largest Credits balance, and the largest burst.
	MaxCredits = 1<<55 - 1
	// MaxWindowQuota is the largest quota of a PerWindow or PerMonth limit.
	MaxWindowQuota = 1<<32 - 1
	// MinWindow is the shortest PerWindow period; use Rate for finer limits.
	MinWindow = time.Second
	// MaxNameLen is the longest limit name, in bytes.
	MaxNameLen = 64
	// MaxRateSpan is the longest a Rate limit's burst may take to refill
	// (burst × period/n), so that its state stays inside a word up to
	// MaxTime.
	MaxRateSpan = 10 * 365 * 24 * time.Hour
	// MaxRotationChain is the most rotations a chain of keys still in
	// their grace may hold: Rotate of a key that ends such a chain
	// returns ErrRotationChain. A rotation with no grace ends every chain.
	MaxRotationChain = 16
)

// The supported range of clock values: a call that reads a time outside
// [MinTime, MaxTime) returns ErrClock and changes nothing.
var (
	MinTime = time.Unix(0, 0).UTC()
	MaxTime = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

const maxTimeNs = 4102444800 * int64(time.Second) // MaxTime.UnixNano()

// Limit describes one quota of a key. Build it with Credits, PerWindow,
// PerMonth, PerMonthIn or Rate, and name it with Named. A Limit is a small
// immutable value; it is checked when passed to Register or SetLimits, which
// return ErrInvalidLimit for a bad one.
type Limit struct {
	kind   Kind
	quota  int64         // credits balance, window quota, or rate burst
	period time.Duration // window length, or the rate's "per"
	rate   int64         // rate: units per period
	loc    *time.Location
	name   string
}

// Credits is a balance of n units that never refills by itself: a prepaid
// plan. TopUp adds to it.
func Credits(n int64) Limit { return Limit{kind: KindCredits, quota: n} }

// PerWindow allows n units in each fixed window of the given period, aligned
// to the Unix epoch (an hourly window starts on the hour, UTC). The period
// must be at least MinWindow.
func PerWindow(n int64, period time.Duration) Limit {
	return Limit{kind: KindWindow, quota: n, period: period}
}

// PerMonth allows n units in each calendar month, UTC.
func PerMonth(n int64) Limit { return PerMonthIn(n, time.UTC) }

// PerMonthIn allows n units in each calendar month in loc.
func PerMonthIn(n int64, loc *time.Location) Limit {
	return Limit{kind: KindMonth, quota: n, loc: loc}
}

// Rate allows n units per period on average, with bursts of up to burst
// units, by the generic cell rate algorithm (GCRA): one unit is "emitted"
// every period/n (rounded up to the nanosecond, so the rate is never
// exceeded), and a request is granted if the theoretical arrival time it
// would push the key to lies within burst emissions of now.
func Rate(n int64, per time.Duration, burst int64) Limit {
	return Limit{kind: KindRate, quota: burst, period: per, rate: n}
}

// Named returns l with the given name, used in Status and in HTTP headers
// (`RateLimit-Policy: "hour";q=1000;w=3600`). Names are matched by SetLimits
// to carry spending over. Default names: "credits", "second", "minute",
// "hour", "day", "week" or "window" for windows, "month", and "rate".
func (l Limit) Named(name string) Limit { l.name = name; return l }

// Kind returns the limit's algorithm.
func (l Limit) Kind() Kind { return l.kind }

// Name returns the limit's name.
func (l Limit) Name() string {
	if l.name != "" {
		return l.name
	}
	switch l.kind {
	case KindWindow:
		switch l.period {
		case time.Second:
			return "second"
		case time.Minute:
			return "minute"
		case time.Hour:
			return "hour"
		case 24 * time.Hour:
			return "day"
		case 7 * 24 * time.Hour:
			return "week"
		}
		return "window"
	case KindMonth:
		return "month"
	}
	return l.kind.String()
}

// Quota returns the most units the limit can grant at once: the Credits
// balance it was created with, the window quota, or the Rate burst.
func (l Limit) Quota() int64 { return l.quota }

// Period returns the window length of a PerWindow limit, the "per" of a Rate
// limit, and 0 otherwise.
func (l Limit) Period() time.Duration { return l.period }

// RateN returns n of Rate(n, per, burst), and 0 for other kinds.
func (l Limit) RateN() int64 { return l.rate }

// Location returns the time zone of a PerMonth limit, nil otherwise.
func (l Limit) Location() *time.Location { return l.loc }

// String describes the limit, e.g. `hour: 1000 per 1h0m0s`.
func (l Limit) String() string {
	switch l.kind {
	case KindCredits:
		return fmt.Sprintf("%s: %d credits", l.Name(), l.quota)
	case KindWindow:
		return fmt.Sprintf("%s: %d per %v", l.Name(), l.quota, l.period)
	case KindMonth:
		return fmt.Sprintf("%s: %d per month (%v)", l.Name(), l.quota, l.loc)
	case KindRate:
		return fmt.Sprintf("%s: %d per %v, burst %d", l.Name(), l.rate, l.period, l.quota)
	}
	return "invalid limit"
}

// spec is a validated Limit with the numbers the hot path needs.
type spec struct {
	Limit
	period int64 // window length or rate emission interval, in ns
	tau    int64 // rate: burst * emission interval, in ns
}

func (l Limit) validate() (spec, error) {
	s := spec{Limit: l}
	if err := validName(l.Name()); err != nil {
		return s, err
	}
	s.Limit.name = l.Name() // Status reports the name in use
	if l.quota <= 0 {
		return s, fmt.Errorf("%w: %s: quota %d must be positive", ErrInvalidLimit, l.Name(), l.quota)
	}
	switch l.kind {
	case KindCredits:
		if l.quota > MaxCredits {
			return s, fmt.Errorf("%w: %s: credits %d over the maximum %d", ErrInvalidLimit, l.Name(), l.quota, int64(MaxCredits))
		}
	case KindWindow, KindMonth:
		if l.quota > MaxWindowQuota {
			return s, fmt.Errorf("%w: %s: quota %d over the maximum %d", ErrInvalidLimit, l.Name(), l.quota, int64(MaxWindowQuota))
		}
		if l.kind == KindWindow {
			if l.period < MinWindow {
				return s, fmt.Errorf("%w: %s: window %v shorter than %v", ErrInvalidLimit, l.Name(), l.period, MinWindow)
			}
			s.period = int64(l.period)
		} else if l.loc == nil {
			return s, fmt.Errorf("%w: %s: nil location", ErrInvalidLimit, l.Name())
		}
	case KindRate:
		if l.rate <= 0 || l.period <= 0 {
			return s, fmt.Errorf("%w: %s: rate %d per %v must be positive", ErrInvalidLimit, l.Name(), l.rate, l.period)
		}
		t := int64(l.period) / l.rate // rounded up: never faster than asked
		if int64(l.period)%l.rate != 0 {
			t++
		}
		if l.quota > MaxCredits || l.quota > int64(MaxRateSpan)/t {
			return s, fmt.Errorf("%w: %s: burst %d refills in more than %v", ErrInvalidLimit, l.Name(), l.quota, MaxRateSpan)
		}
		s.period, s.tau = t, t*l.quota
	default:
		return s, fmt.Errorf("%w: zero Limit (use Credits, PerWindow, PerMonth or Rate)", ErrInvalidLimit)
	}
	return s, nil
}

func validName(n string) error {
	if len(n) == 0 || len(n) > MaxNameLen {
		return fmt.Errorf("%w: name %q must be 1 to %d bytes", ErrInvalidLimit, n, MaxNameLen)
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return fmt.Errorf("%w: name %q: only printable ASCII without quotes or backslashes", ErrInvalidLimit, n)
		}
	}
	return nil
}

func validateLimits(ls []Limit) ([]spec, error) {
	if len(ls) == 0 {
		return nil, fmt.Errorf("%w: a key needs at least one limit", ErrInvalidLimit)
	}
	if len(ls) > MaxLimits {
		return nil, fmt.Errorf("%w: %d limits, at most %d", ErrInvalidLimit, len(ls), MaxLimits)
	}
	out := make([]spec, len(ls))
	for i, l := range ls {
		s, err := l.validate()
		if err != nil {
			return nil, err
		}
		for j := 0; j < i; j++ {
			if out[j].Name() == s.Name() {
				return nil, fmt.Errorf("%w: two limits named %q (use Named)", ErrInvalidLimit, s.Name())
			}
		}
		out[i] = s
	}
	return out, nil
}

// planKey identifies a list of limits, for interning.
type planKey struct {
	n int
	s [MaxLimits]spec
}

// intern returns the shared plan for specs: keys with the same limits share
// one, so a million keys of one tier cost one list of limits.
func (e *Engine) intern(specs []spec) *plan {
	var k planKey
	k.n = copy(k.s[:], specs)
	if p, ok := e.plans.Load(k); ok {
		return p.(*plan)
	}
	np := &plan{limits: specs}
	np.shared = &keyState{plan: np}
	np.shared.origin = np.shared
	p, _ := e.plans.LoadOrStore(k, np)
	return p.(*plan)
}
