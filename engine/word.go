package engine

import (
	"math"
	"time"
)

// The state of one limit fits in one 64-bit word, so that every decision is
// a single compare-and-swap. The word of a key's first limit also carries the
// key's flags, which makes revocation and the decrement one atomic step:
//
//	bit 63     revoked
//	bit 62     sealed: the word is final; the key's record is being replaced
//	bits 0-61  the limit's value, which only grows as units are granted:
//	           Credits: units spent (above the quota after a shrink)
//	           PerWindow, PerMonth: bits 32-61 the window index mod 2^30,
//	                                bits 0-31 the units used in that window
//	           Rate: the theoretical arrival time (TAT), ns since the epoch
const (
	revokedBit uint64 = 1 << 63
	sealedBit  uint64 = 1 << 62
	flagBits          = revokedBit | sealedBit
	valueMask         = sealedBit - 1

	tagShift       = 32
	tagMask        = 1<<30 - 1
	usedMask       = 1<<32 - 1
	tagHalf        = 1 << 29
	never    int64 = -1 // RetryAfter of a denial that waiting cannot cure
)

// lim is what the arithmetic needs to know of a limit.
type lim struct {
	kind   Kind
	quota  int64 // credits, window quota, or rate burst
	period int64 // window length or rate emission interval, ns
	loc    *time.Location
}

func (s *spec) lim() lim {
	return lim{kind: s.kind, quota: s.quota, period: s.period, loc: s.loc}
}

// result describes a limit after (or, when denied, instead of) a step.
type result struct {
	remaining int64
	retry     int64 // ns until the request would fit; never if it cannot
	reset     int64 // ns until the limit is full again; 0 if it never resets
}

// windowEnd returns when window idx ends, in ns since the epoch. Inside the
// supported clock range it cannot overflow: a window holding a time before
// MaxTime ends before MaxTime plus MaxWindow.
func (l *lim) windowEnd(idx int64) int64 {
	if l.kind == KindWindow {
		if idx >= math.MaxInt64/l.period-1 {
			return math.MaxInt64
		}
		return (idx + 1) * l.period
	}
	return time.Date(1970, time.Month(idx+2), 1, 0, 0, 0, 0, l.loc).UnixNano()
}

// windowIndex returns the index of the window holding now.
func (l *lim) windowIndex(now int64) int64 {
	if l.kind == KindWindow {
		return now / l.period
	}
	y, m, _ := time.Unix(0, now).In(l.loc).Date()
	return int64(y-1970)*12 + int64(m-1)
}

// window decodes v against now. It returns the units used in the window that
// holds now and that window's index (as stored, mod 2^30) and end. If the
// stored window is older, the count starts over. If it is newer, the clock
// stepped back: the stored window stays current, so a step back never hands
// out a window's quota twice.
func (l *lim) window(v uint64, now int64) (used int64, tag uint64, end int64) {
	idx := l.windowIndex(now)
	cur := uint64(idx) & tagMask
	tag = v >> tagShift & tagMask
	switch d := (cur - tag) & tagMask; {
	case d == 0:
		return int64(v & usedMask), tag, l.windowEnd(idx)
	case d < tagHalf:
		return 0, cur, l.windowEnd(idx)
	default:
		return int64(v & usedMask), tag, l.windowEnd(idx + int64(tagMask+1-d))
	}
}

// initial returns the value of a fresh limit at now.
func (l *lim) initial(now int64) uint64 {
	switch l.kind {
	case KindWindow, KindMonth:
		return (uint64(l.windowIndex(now)) & tagMask) << tagShift
	}
	return 0 // Credits: nothing spent; Rate: a TAT in the past is a full bucket
}

// left returns the units a Credits limit has left with spent units spent.
func (l *lim) left(spent uint64) int64 {
	return max(l.quota-int64(min(spent, valueMask)), 0)
}

// clampDur keeps a duration of limit l within [0, the limit's own period]:
// after a clock step back or a limit shrunk below what was spent, the exact
// figure could be longer (then a retry may be denied again), never shorter
// than 0.
func (l *lim) clampDur(d int64) int64 {
	if d <= 0 {
		return 0
	}
	p := l.period
	switch l.kind {
	case KindMonth:
		p = 31 * 24 * int64(time.Hour)
	case KindRate:
		p = l.quota * l.period // tau: a full bucket
	}
	return min(d, p)
}

// consume tries to take n units from value v at now.
func (l *lim) consume(v uint64, n, now int64) (uint64, bool, result) {
	switch l.kind {
	case KindCredits:
		left := l.left(v)
		if n > left {
			return v, false, result{remaining: left, retry: never}
		}
		return v + uint64(n), true, result{remaining: left - n}
	case KindRate:
		tat := int64(v)
		tau := l.quota * l.period
		t := max(tat, now)
		if n > l.quota {
			return v, false, result{remaining: max(now+tau-t, 0) / l.period, retry: never, reset: l.clampDur(t - now)}
		}
		nt := t + n*l.period
		if nt-now > tau || uint64(nt) > valueMask {
			return v, false, result{remaining: max(now+tau-t, 0) / l.period, retry: max(l.clampDur(nt-now-tau), 1), reset: l.clampDur(t - now)}
		}
		return uint64(nt), true, result{remaining: (now + tau - nt) / l.period, reset: nt - now}
	default:
		used, tag, end := l.window(v, now)
		left := max(l.quota-used, 0)
		reset := l.clampDur(end - now)
		if n > left {
			retry := max(reset, 1)
			if n > l.quota {
				retry = never
			}
			return v, false, result{remaining: left, retry: retry, reset: reset}
		}
		return tag<<tagShift | uint64(used+n), true, result{remaining: left - n, reset: reset}
	}
}

// peek describes value v at now without changing it.
func (l *lim) peek(v uint64, now int64) result {
	switch l.kind {
	case KindCredits:
		return result{remaining: l.left(v)}
	case KindRate:
		t := max(int64(v), now)
		return result{remaining: max(now+l.quota*l.period-t, 0) / l.period, reset: l.clampDur(t - now)}
	default:
		used, _, end := l.window(v, now)
		return result{remaining: max(l.quota-used, 0), reset: l.clampDur(end - now)}
	}
}

// refund gives back, at now, n units of a grant made at time at (0 if the
// grant did not read the clock), never above the quota. A window gets them
// back only if it is the window the grant was counted in and it has not
// ended: units of an ended window are gone with it.
func (l *lim) refund(v uint64, n, now, at int64) uint64 {
	switch l.kind {
	case KindCredits:
		return v - min(v, uint64(n))
	case KindRate:
		tat := int64(v)
		if tat <= now {
			return v
		}
		if n > (tat-now)/l.period {
			return uint64(now)
		}
		return uint64(tat - n*l.period)
	default:
		idx := uint64(l.windowIndex(now)) & tagMask
		tag := v >> tagShift & tagMask
		if d := (idx - tag) & tagMask; d != 0 && d < tagHalf {
			return v // the window the units came from is over
		}
		if at <= 0 || uint64(l.windowIndex(at))&tagMask != tag {
			return v // the units came from another window, or from an unknown one
		}
		used := int64(v & usedMask)
		return tag<<tagShift | uint64(max(used-n, 0))
	}
}

// carry converts value v of limit from into a value for limit l at now,
// keeping what was spent: SetLimits and TopUp use it.
func (l *lim) carry(from *lim, v uint64, now int64) uint64 {
	switch {
	case from.kind != l.kind:
		return l.initial(now)
	case l.kind == KindCredits:
		return v // the units spent stay spent, whatever the quota
	case l.kind == KindRate:
		debt := int64(v) - now
		if debt <= 0 {
			return v
		}
		// The debt in units, whole, at the new interval; never clamped to
		// the new burst, so that shrinking and growing it back refills
		// nothing.
		units := debt/from.period + min(debt%from.period, 1)
		if units > (int64(valueMask)-now)/l.period {
			return valueMask
		}
		return uint64(now + units*l.period)
	case l.kind == KindWindow && l.period != from.period,
		l.kind == KindMonth && l.loc.String() != from.loc.String():
		// The units used in the old window that holds now count in the
		// new window that holds now.
		used, _, _ := from.window(v, now)
		return l.initial(now) | uint64(used)
	}
	return v // same window: the units used stay used
}
