package quota

import (
	"math"
	"time"
)

// Kind is the algorithm of a limit. Its values are engine.Kind's.
type Kind uint8

// The kinds, numbered as engine.KindCredits, KindWindow, KindMonth and
// KindRate.
const (
	Credits Kind = iota + 1
	Window
	Month
	Rate
)

// The layout of a value.
const (
	// ValueMask holds a value: the low 62 bits of a word.
	ValueMask uint64 = 1<<62 - 1
	// TagShift, TagMask and UsedMask take a window value apart: its
	// window index mod 2^30 and the units used in that window.
	TagShift = 32
	TagMask  = 1<<30 - 1
	UsedMask = 1<<32 - 1
	tagHalf  = 1 << 29
	// Never is the retry of a denial that waiting cannot cure.
	Never int64 = -1
)

// Limit is what the arithmetic needs to know of a limit.
type Limit struct {
	Kind   Kind
	Quota  int64 // credits, window quota, or rate burst
	Period int64 // window length or rate emission interval, ns
	Loc    *time.Location
}

// Result describes a limit after (or, when denied, instead of) a step.
type Result struct {
	Remaining int64
	Retry     int64 // ns until the request would fit; Never if it cannot
	Reset     int64 // ns until the limit is full again; 0 if it never resets
}

// windowEnd returns when window idx ends, in ns since the epoch. Inside the
// supported clock range it cannot overflow: a window holding a time before
// MaxTime ends before MaxTime plus MaxWindow.
func (l *Limit) windowEnd(idx int64) int64 {
	if l.Kind == Window {
		if idx >= math.MaxInt64/l.Period-1 {
			return math.MaxInt64
		}
		return (idx + 1) * l.Period
	}
	return time.Date(1970, time.Month(idx+2), 1, 0, 0, 0, 0, l.Loc).UnixNano()
}

// windowIndex returns the index of the window holding now.
func (l *Limit) windowIndex(now int64) int64 {
	if l.Kind == Window {
		return now / l.Period
	}
	y, m, _ := time.Unix(0, now).In(l.Loc).Date()
	return int64(y-1970)*12 + int64(m-1)
}

// window decodes v against now. It returns the units used in the window that
// holds now and that window's index (as stored, mod 2^30) and end. If the
// stored window is older, the count starts over. If it is newer, the clock
// stepped back: the stored window stays current, so a step back never hands
// out a window's quota twice.
func (l *Limit) window(v uint64, now int64) (used int64, tag uint64, end int64) {
	idx := l.windowIndex(now)
	cur := uint64(idx) & TagMask
	tag = v >> TagShift & TagMask
	switch d := (cur - tag) & TagMask; {
	case d == 0:
		return int64(v & UsedMask), tag, l.windowEnd(idx)
	case d < tagHalf:
		return 0, cur, l.windowEnd(idx)
	default:
		return int64(v & UsedMask), tag, l.windowEnd(idx + int64(TagMask+1-d))
	}
}

// Initial returns the value of a fresh limit at now.
func (l *Limit) Initial(now int64) uint64 {
	switch l.Kind {
	case Window, Month:
		return (uint64(l.windowIndex(now)) & TagMask) << TagShift
	}
	return 0 // Credits: nothing spent; Rate: a TAT in the past is a full bucket
}

// left returns the units a Credits limit has left with spent units spent.
func (l *Limit) left(spent uint64) int64 {
	return max(l.Quota-int64(min(spent, ValueMask)), 0)
}

// clampDur keeps a duration of limit l within [0, the limit's own period]:
// after a clock step back or a limit shrunk below what was spent, the exact
// figure could be longer (then a retry may be denied again), never shorter
// than 0.
func (l *Limit) clampDur(d int64) int64 {
	if d <= 0 {
		return 0
	}
	p := l.Period
	switch l.Kind {
	case Month:
		p = 31 * 24 * int64(time.Hour)
	case Rate:
		p = l.Quota * l.Period // tau: a full bucket
	}
	return min(d, p)
}

// Consume tries to take n units from value v at now. It returns the new
// value and true, or v and false for a denial; the Result describes the
// limit either way.
func (l *Limit) Consume(v uint64, n, now int64) (uint64, bool, Result) {
	switch l.Kind {
	case Credits:
		left := l.left(v)
		if n > left {
			return v, false, Result{Remaining: left, Retry: Never}
		}
		return v + uint64(n), true, Result{Remaining: left - n}
	case Rate:
		tat := int64(v)
		tau := l.Quota * l.Period
		t := max(tat, now)
		if n > l.Quota {
			return v, false, Result{Remaining: max(now+tau-t, 0) / l.Period, Retry: Never, Reset: l.clampDur(t - now)}
		}
		nt := t + n*l.Period
		if nt-now > tau || uint64(nt) > ValueMask {
			return v, false, Result{Remaining: max(now+tau-t, 0) / l.Period, Retry: max(l.clampDur(nt-now-tau), 1), Reset: l.clampDur(t - now)}
		}
		return uint64(nt), true, Result{Remaining: (now + tau - nt) / l.Period, Reset: nt - now}
	default:
		used, tag, end := l.window(v, now)
		left := max(l.Quota-used, 0)
		reset := l.clampDur(end - now)
		if n > left {
			retry := max(reset, 1)
			if n > l.Quota {
				retry = Never
			}
			return v, false, Result{Remaining: left, Retry: retry, Reset: reset}
		}
		return tag<<TagShift | uint64(used+n), true, Result{Remaining: left - n, Reset: reset}
	}
}

// Peek describes value v at now without changing it.
func (l *Limit) Peek(v uint64, now int64) Result {
	switch l.Kind {
	case Credits:
		return Result{Remaining: l.left(v)}
	case Rate:
		t := max(int64(v), now)
		return Result{Remaining: max(now+l.Quota*l.Period-t, 0) / l.Period, Reset: l.clampDur(t - now)}
	default:
		used, _, end := l.window(v, now)
		return Result{Remaining: max(l.Quota-used, 0), Reset: l.clampDur(end - now)}
	}
}

// Refund gives back, at now, n units of a grant made at time at (0 if the
// grant did not read the clock), never above the quota. A window gets them
// back only if it is the window the grant was counted in and it has not
// ended: units of an ended window are gone with it.
func (l *Limit) Refund(v uint64, n, now, at int64) uint64 {
	switch l.Kind {
	case Credits:
		return v - min(v, uint64(n))
	case Rate:
		tat := int64(v)
		if tat <= now {
			return v
		}
		if n > (tat-now)/l.Period {
			return uint64(now)
		}
		return uint64(tat - n*l.Period)
	default:
		idx := uint64(l.windowIndex(now)) & TagMask
		tag := v >> TagShift & TagMask
		if d := (idx - tag) & TagMask; d != 0 && d < tagHalf {
			return v // the window the units came from is over
		}
		if at <= 0 || uint64(l.windowIndex(at))&TagMask != tag {
			return v // the units came from another window, or from an unknown one
		}
		used := int64(v & UsedMask)
		return tag<<TagShift | uint64(max(used-n, 0))
	}
}

// Carry converts value v of limit from into a value for limit l at now,
// keeping what was spent: SetLimits and TopUp use it.
func (l *Limit) Carry(from *Limit, v uint64, now int64) uint64 {
	switch {
	case from.Kind != l.Kind:
		return l.Initial(now)
	case l.Kind == Credits:
		return v // the units spent stay spent, whatever the quota
	case l.Kind == Rate:
		debt := int64(v) - now
		if debt <= 0 {
			return v
		}
		// The debt in units, whole, at the new interval; never clamped to
		// the new burst, so that shrinking and growing it back refills
		// nothing.
		units := debt/from.Period + min(debt%from.Period, 1)
		if units > (int64(ValueMask)-now)/l.Period {
			return ValueMask
		}
		return uint64(now + units*l.Period)
	case l.Kind == Window && l.Period != from.Period,
		l.Kind == Month && l.Loc.String() != from.Loc.String():
		// The units used in the old window that holds now count in the
		// new window that holds now.
		used, _, _ := from.window(v, now)
		return l.Initial(now) | uint64(used)
	}
	return v // same window: the units used stay used
}
