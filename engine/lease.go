package engine

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

// noLease is the unbounded mark of windows and the soft mark that never
// fires; for Credits and Rate the unbounded marks are valueMask.
const noLease = ^uint64(0)

// minRateSpan is the shortest reservation of a Rate limit whose burst spans
// less: a reservation of a Rate limit spans at most the larger of its burst
// (tau) and this, so that a crash costs at most that much of its time.
const minRateSpan = int64(time.Second)

// leasePair holds one limit's marks. Accessed atomically only.
type leasePair struct {
	hard, soft uint64
}

// unbounded returns marks that never bind and never fire.
func (l *lim) unbounded() leasePair {
	if l.kind == KindCredits || l.kind == KindRate {
		return leasePair{hard: valueMask, soft: valueMask}
	}
	return leasePair{hard: noLease, soft: noLease}
}

// exhausted returns marks with no headroom at value v: the state after a
// restart, when everything reserved counts as spent.
func (l *lim) exhausted(v uint64) leasePair {
	return leasePair{hard: v, soft: l.unbounded().soft}
}

// covered reports whether value nv lies inside the reservation hard.
func (l *lim) covered(nv, hard uint64) bool {
	if l.kind == KindCredits || l.kind == KindRate {
		return nv <= hard
	}
	return hard == noLease || (nv>>tagShift == hard>>tagShift && nv&usedMask <= hard&usedMask)
}

// low reports whether value nv has passed the soft mark: time to reserve.
func (l *lim) low(nv, soft uint64) bool {
	if l.kind == KindCredits || l.kind == KindRate {
		return nv > soft
	}
	return soft != noLease && (nv>>tagShift != soft>>tagShift || nv&usedMask > soft&usedMask)
}

// reserve returns the marks of a new reservation of chunk units beyond value
// v at now. The new hard mark is never tighter than old: a reservation only
// ever grows.
func (l *lim) reserve(v uint64, old uint64, chunk, now int64) leasePair {
	switch l.kind {
	case KindCredits:
		top := max(v, min(v+uint64(chunk), uint64(l.quota)))
		hard := max(top, old)
		if hard >= uint64(l.quota) {
			return leasePair{hard: hard, soft: valueMask} // the whole balance is reserved
		}
		return leasePair{hard: hard, soft: hard - (hard-v)/2}
	case KindRate:
		t := max(int64(v), now)
		// chunk emissions, but at most the larger of a full bucket and
		// minRateSpan: a reservation further ahead could only be lost.
		span := max(l.quota*l.period, minRateSpan)
		if chunk < span/l.period {
			span = chunk * l.period
		}
		hard := max(uint64(min(t, int64(valueMask)-span)+span), old)
		return leasePair{hard: hard, soft: hard - min(hard, uint64(span/2))}
	}
	used, tag, _ := l.window(v, now)
	top := max(used, min(used+chunk, l.quota)) // never below what is used: a shrunk quota
	if top > int64(usedMask) {
		top = int64(usedMask)
	}
	if old>>tagShift&tagMask == tag && old != noLease {
		top = max(top, int64(old&usedMask))
	}
	hard := tag<<tagShift | uint64(top)
	if top >= l.quota {
		return leasePair{hard: hard, soft: noLease} // the whole window is reserved
	}
	return leasePair{hard: hard, soft: tag<<tagShift | uint64(top-(top-used)/2)}
}

// worst is the value a restart must assume for a limit with value v and
// hard mark hard: with leases, everything reserved counts as spent; without
// (no Store, or exact mode, where every grant is durable before it returns)
// the value itself.
func worst(v, hard uint64, leased bool) uint64 {
	if leased {
		return hard
	}
	return v
}

// tighten moves hard mark hard by what a refund moved the value from old to
// nv, so that the reservation keeps its size. It reports false when there is
// nothing to move (an unbounded mark, a window the mark is not for).
func (l *lim) tighten(hard, old, nv uint64) (uint64, bool) {
	if l.kind == KindCredits || l.kind == KindRate {
		d := old - nv // a refund only lowers what was spent, or the arrival time
		if nv > old || hard < d || hard == valueMask {
			return hard, false
		}
		return hard - d, true
	}
	if hard == noLease || hard>>tagShift != nv>>tagShift || old>>tagShift != nv>>tagShift {
		return hard, false
	}
	d := old&usedMask - nv&usedMask
	if nv&usedMask > old&usedMask || hard&usedMask < d {
		return hard, false
	}
	return hard - d, true
}
