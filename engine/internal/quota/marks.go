package quota

import "time"

// Leases (hi/lo reservations). With a Store, a unit is granted only inside a
// reservation that is already durable, so a crash can lose reserved units
// (an under-grant) but never grant one that was not reserved. Each limit has
// two marks, in the same encoding as its value:
//
//	hard: how far the value may move. Credits: the most units spent
//	      reserved; windows: the window and the highest count reserved in
//	      it; Rate: the latest theoretical arrival time reserved.
//	soft: when the value passes it, the next reservation is written in the
//	      background, before the hard mark is reached.
//
// The record a Store keeps holds the hard marks: on a restart every reserved
// unit counts as spent. Without a Store (or in exact mode) the marks are
// unbounded and never bind.

// NoLease is the unbounded mark of windows and the soft mark that never
// fires; for Credits and Rate the unbounded marks are ValueMask.
const NoLease = ^uint64(0)

// MinRateSpan is the shortest reservation of a Rate limit whose burst spans
// less: a reservation of a Rate limit spans at most the larger of its burst
// (tau) and this, so that a crash costs at most that much of its time.
const MinRateSpan = int64(time.Second)

// Marks holds one limit's lease marks. The engine accesses them atomically
// only.
type Marks struct {
	Hard, Soft uint64
}

// Unbounded returns marks that never bind and never fire.
func (l *Limit) Unbounded() Marks {
	if l.Kind == Credits || l.Kind == Rate {
		return Marks{Hard: ValueMask, Soft: ValueMask}
	}
	return Marks{Hard: NoLease, Soft: NoLease}
}

// Exhausted returns marks with no headroom at value v: the state after a
// restart, when everything reserved counts as spent.
func (l *Limit) Exhausted(v uint64) Marks {
	return Marks{Hard: v, Soft: l.Unbounded().Soft}
}

// Covered reports whether value nv lies inside the reservation hard.
func (l *Limit) Covered(nv, hard uint64) bool {
	if l.Kind == Credits || l.Kind == Rate {
		return nv <= hard
	}
	return hard == NoLease || (nv>>TagShift == hard>>TagShift && nv&UsedMask <= hard&UsedMask)
}

// Low reports whether value nv has passed the soft mark: time to reserve.
func (l *Limit) Low(nv, soft uint64) bool {
	if l.Kind == Credits || l.Kind == Rate {
		return nv > soft
	}
	return soft != NoLease && (nv>>TagShift != soft>>TagShift || nv&UsedMask > soft&UsedMask)
}

// Reserve returns the marks of a new reservation of chunk units beyond value
// v at now. The new hard mark is never tighter than old: a reservation only
// ever grows.
func (l *Limit) Reserve(v uint64, old uint64, chunk, now int64) Marks {
	switch l.Kind {
	case Credits:
		top := max(v, min(v+uint64(chunk), uint64(l.Quota)))
		hard := max(top, old)
		if hard >= uint64(l.Quota) {
			return Marks{Hard: hard, Soft: ValueMask} // the whole balance is reserved
		}
		return Marks{Hard: hard, Soft: hard - (hard-v)/2}
	case Rate:
		t := max(int64(v), now)
		// chunk emissions, but at most the larger of a full bucket and
		// MinRateSpan: a reservation further ahead could only be lost.
		span := max(l.Quota*l.Period, MinRateSpan)
		if chunk < span/l.Period {
			span = chunk * l.Period
		}
		hard := max(uint64(min(t, int64(ValueMask)-span)+span), old)
		return Marks{Hard: hard, Soft: hard - min(hard, uint64(span/2))}
	}
	used, tag, _ := l.window(v, now)
	top := max(used, min(used+chunk, l.Quota)) // never below what is used: a shrunk quota
	if top > int64(UsedMask) {
		top = int64(UsedMask)
	}
	if old>>TagShift&TagMask == tag && old != NoLease {
		top = max(top, int64(old&UsedMask))
	}
	hard := tag<<TagShift | uint64(top)
	if top >= l.Quota {
		return Marks{Hard: hard, Soft: NoLease} // the whole window is reserved
	}
	return Marks{Hard: hard, Soft: tag<<TagShift | uint64(top-(top-used)/2)}
}

// Worst is the value a restart must assume for a limit with value v and
// hard mark hard: with leases, everything reserved counts as spent; without
// (no Store, or exact mode, where every grant is durable before it returns)
// the value itself.
func Worst(v, hard uint64, leased bool) uint64 {
	if leased {
		return hard
	}
	return v
}

// Tighten moves hard mark hard by what a refund moved the value from old to
// nv, so that the reservation keeps its size. It reports false when there is
// nothing to move (an unbounded mark, a window the mark is not for).
func (l *Limit) Tighten(hard, old, nv uint64) (uint64, bool) {
	if l.Kind == Credits || l.Kind == Rate {
		d := old - nv // a refund only lowers what was spent, or the arrival time
		if nv > old || hard < d || hard == ValueMask {
			return hard, false
		}
		return hard - d, true
	}
	if hard == NoLease || hard>>TagShift != nv>>TagShift || old>>TagShift != nv>>TagShift {
		return hard, false
	}
	d := old&UsedMask - nv&UsedMask
	if nv&UsedMask > old&UsedMask || hard&UsedMask < d {
		return hard, false
	}
	return hard - d, true
}

// Held returns the units between value v and hard mark h that may still be
// granted at now: none for a window whose reservation is in another window
// than v, or than the one that holds now. Credits and windows only.
func (l *Limit) Held(v, h uint64, now int64) int64 {
	if l.Kind == Credits {
		return int64(h - min(h, v))
	}
	if h == NoLease {
		return 0
	}
	vu, vt, _ := l.window(v, now)
	hu, ht, _ := l.window(h, now)
	if vt != ht {
		return 0
	}
	return max(hu-vu, 0)
}
