package engine

import (
	"context"
	"fmt"
	"iter"
	"math"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/allot-go/allot/engine/internal/quota"
)

// A Store knows keys only by KeyID. After a restart the engine holds each
// recovered key under recoveredPrefix+ID, where only aliases find it, until a
// call names the key: then lookup hashes the raw key, finds the record, and
// moves it under the raw key, leaving a forwarding alias behind. Until then
// an unknown key costs one SHA-256 per call and creates no state.

// idOfKey returns the KeyID of a map key: the digest of a raw key, or the
// ID a recovered record is held under.
func idOfKey(key string) KeyID {
	if len(key) == 1+len(KeyID{}) && key[0] == recoveredPrefix[0] {
		return KeyID([]byte(key[1:]))
	}
	return IDOf(key)
}

// recordOf describes ent, the entry of the key with the given ID, for the
// store, as a restart must see it: with leases, every reserved unit counts
// as spent.
func recordOf(ent *entry, id KeyID, leased bool) Record {
	st := ent.st
	r := Record{ID: id, Registration: regOf(ent)}
	var vals [MaxLimits]uint64
	revoked, _ := snapshot(ent, &vals)
	if st.alias != nil {
		t := st.alias.targetID
		r.RotatedTo = &t
		r.GraceUntil = time.Unix(0, st.alias.deadline).UTC()
		r.Revoked = atomic.LoadUint64(&ent.word)&revokedBit != 0
		return r
	}
	r.Revoked = revoked
	r.Counters = make([]uint64, len(st.limits()))
	r.Limits = make([]Limit, len(st.limits()))
	for i := range st.limits() {
		r.Limits[i] = st.limits()[i].Limit
		r.Counters[i] = quota.Worst(vals[i], atomic.LoadUint64(&ent.marks(i).Hard), leased)
	}
	return r
}

// records yields the record of every key as it is, reservations given back
// (a forwarding entry has none of its own); with all false, only those of
// the keys that are not durable. Close's last round writes them: it freezes
// each entry before it reads it (in exact mode Close has frozen them all
// already), so nothing moves under it. Close holds the admin lock, so no
// entry is published meanwhile.
func (e *Engine) records(all bool) iter.Seq[Record] {
	return func(yield func(Record) bool) {
		e.m.Range(func(key string, ent *entry) bool {
			freeze(ent)
			if ent.st.alias != nil && ent.st.alias.forward {
				return true
			}
			if !all && durable(ent) {
				return true
			}
			return yield(recordOf(ent, idOfKey(key), false))
		})
	}
}

// durable reports, in lease mode and when no Save has failed, whether the
// store holds ent's record already as Close would write it, so that Close
// may leave it out. That is so when ent is not queued for a write (the last
// round leaves the flag of the keys it took), not unsaved (refunded since
// the restart, whose record Close may already refuse to queue, or dropped
// by a round because it was sealed), and every value is at its hard
// mark: the store holds the hard marks of a live entry, for a reservation's
// record carries them (and the marks are raised only once it is durable),
// and a restart loads every value as its hard mark. Every other change (a
// registration, a revocation, a rotation and its alias, a deletion) is
// written before its call returns.
func durable(ent *entry) bool {
	if ent.st.queued.Load() || ent.st.unsaved.Load() {
		return false
	}
	if ent.st.alias != nil {
		return true
	}
	var vals [MaxLimits]uint64
	snapshot(ent, &vals)
	for i := range ent.st.limits() {
		if vals[i] != atomic.LoadUint64(&ent.marks(i).Hard) {
			return false
		}
	}
	return true
}

// load reads every record of the store into the map under its ID.
func (e *Engine) load(ctx context.Context) error {
	now := e.now()
	if now < 0 {
		return e.clockErr()
	}
	err := e.store.Load(ctx, func(r Record) error {
		st := &keyState{}
		var vals []uint64
		if r.RotatedTo != nil {
			deadline := int64(math.MaxInt64)
			if !r.GraceUntil.IsZero() {
				deadline = r.GraceUntil.UnixNano()
			}
			st.alias = &alias{target: idKey(*r.RotatedTo), targetID: *r.RotatedTo, deadline: deadline, reg: r.Registration}
		} else {
			specs, err := validateLimits(r.Limits)
			if err != nil {
				return fmt.Errorf("record %x: %w", r.ID[:4], err)
			}
			if len(r.Counters) != len(specs) {
				return fmt.Errorf("%w: record %x: %d counters for %d limits", ErrStore, r.ID[:4], len(r.Counters), len(specs))
			}
			vals = append([]uint64(nil), r.Counters...)
			for i, v := range vals {
				if v > valueMask {
					// Beyond any state a limit can reach: take it as
					// the most spent (one bad record must not keep the
					// others from loading, nor grant anything).
					vals[i] = valueMask
				}
			}
			st.plan, st.reg = e.intern(specs), r.Registration
		}
		k := idKey(r.ID)
		ent := e.newEntry(st, r.Revoked, vals, now)
		if e.leased && st.alias == nil {
			for i := range st.limits() {
				l := st.limits()[i].lim()
				*ent.marks(i) = l.Exhausted(vals[i]) // reserved before the stop: spent
			}
		}
		e.m.Lock(k)
		defer e.m.Unlock(k)
		if e.m.Load(k) == nil {
			e.recovering.Add(1)
		}
		e.m.Store(k, ent)
		return nil
	})
	if err != nil {
		return wrapStore("load", err)
	}
	e.chains(now)
	return nil
}

// chains works out, after a load, the rotation chains that end at each head
// and may still be in grace, as Rotate keeps them (see chainInfo).
func (e *Engine) chains(now int64) {
	e.m.Range(func(_ string, ent *entry) bool {
		if ent.kind() != 0 || ent.st.alias.forward {
			return true
		}
		hops, until := 0, int64(math.MaxInt64)
		cur := ent
		for range maxHops {
			a := cur.st.alias
			if atomic.LoadUint64(&cur.word)&revokedBit != 0 || now >= a.deadline {
				return true // a dead link: no chain through it
			}
			hops, until = hops+1, min(until, a.deadline)
			if cur = e.next(cur); cur == nil {
				return true
			}
			if cur.kind() != 0 {
				c := &cur.st.chain
				c.depth, c.until = max(c.depth, hops), max(c.until, until)
				return true
			}
		}
		return true
	})
}

func idKey(id KeyID) string { return recoveredPrefix + string(id[:]) }

// promote moves the recovered record of key, if any, under key and returns
// its entry; nil if the key is unknown.
func (e *Engine) promote(key string) *entry {
	if e.recovering.Load() == 0 {
		return nil
	}
	id := IDOf(key)
	var buf [1 + len(id)]byte
	buf[0] = recoveredPrefix[0]
	copy(buf[1:], id[:])
	rk := unsafe.String(&buf[0], len(buf))
	if e.m.Load(rk) == nil {
		return nil
	}
	rk = string(buf[:])
	e.m.LockPair(key, rk)
	defer e.m.UnlockPair(key, rk)
	if ent := e.m.Load(key); ent != nil {
		return ent
	}
	re := e.m.Load(rk)
	if re == nil || (re.st.alias != nil && re.st.alias.forward) {
		return nil
	}
	revoked, vals := seal(re)
	st := &keyState{plan: re.st.plan, alias: re.st.alias, chain: re.st.chain, origin: re.st.origin, reg: re.st.reg}
	st.track.Store(re.st.track.Load())
	now := e.now()
	ent := e.newEntry(st, revoked, vals, now)
	for i := range st.limits() {
		// The reservations move along: they are durable already.
		*ent.marks(i) = quota.Marks{Hard: atomic.LoadUint64(&re.marks(i).Hard), Soft: atomic.LoadUint64(&re.marks(i).Soft)}
	}
	ne := e.m.Store(key, ent)
	e.m.Store(rk, e.newEntry(&keyState{alias: &alias{target: key, targetID: id, deadline: math.MaxInt64, forward: true, reg: regOf(ne)}}, false, nil, now))
	e.recovering.Add(-1)
	return ne
}
