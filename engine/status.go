package engine

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Status returns key's state without consuming. It never waits for the
// store: during an administrative change of key it reports the state before
// the change.
func (e *Engine) Status(key string) (Status, error) {
	if err := checkKey(key); err != nil {
		return Status{}, err
	}
	s, err := e.status(nil, key)
	if err == nil && s.Limits == nil {
		s.Limits = []LimitStatus{}
	}
	return s, err
}

// AppendLimits appends the state of each of key's limits to dst and returns
// the extended slice, like Status but without allocating when dst has room.
// For a revoked key it still reports the counters.
func (e *Engine) AppendLimits(dst []LimitStatus, key string) ([]LimitStatus, error) {
	if err := checkKey(key); err != nil {
		return dst, err
	}
	s, err := e.status(dst, key)
	if err != nil {
		return dst, err
	}
	return s.Limits, nil
}

// AppendDecisionLimits appends to dst the state of key's limits as seen by
// d, a decision on key: what the RateLimit fields of d's response describe.
// The limit d describes is reported as d saw it (Remaining, ResetAfter), not
// as a second read finds it a moment later, when other calls may have moved
// it; the others are read as AppendLimits reads them. For a grant on a key
// of one limit, the answer comes from d alone: no lookup, no clock read, no
// error, and the limits are the ones d was decided under, even if SetLimits
// has changed them since.
func (e *Engine) AppendDecisionLimits(dst []LimitStatus, key string, d Decision) ([]LimitStatus, error) {
	if st := d.st; st != nil && d.Allowed {
		if ls := st.limits(); len(ls) == 1 && d.LimitIndex == 0 {
			return append(dst, LimitStatus{Limit: ls[0].Limit, Remaining: d.Remaining, ResetAfter: d.ResetAfter}), nil
		}
	}
	n := len(dst)
	dst, err := e.AppendLimits(dst, key)
	if err != nil {
		return dst, err
	}
	if i := n + d.LimitIndex; i < len(dst) && dst[i].Limit.Quota() == d.Limit {
		dst[i].Remaining, dst[i].ResetAfter = d.Remaining, d.ResetAfter
	}
	return dst, nil
}

// status is Status of a map key: a raw key, or a recovered record's.
func (e *Engine) status(dst []LimitStatus, key string) (Status, error) {
	if e.closed.Load() {
		return Status{}, ErrClosed
	}
	ent, err := e.findLocal(key)
	if err != nil {
		return Status{}, err
	}
	if ent == nil {
		return Status{}, fmt.Errorf("%w: status", ErrUnknownKey)
	}
	var s Status
	now := e.now()
	if now < 0 {
		return Status{}, e.clockErr()
	}
	if ent.kind() == 0 {
		a := ent.st.alias
		s.RotatedOut, s.GraceUntil = true, time.Unix(0, a.deadline)
		s.Revoked = !e.alive(ent, now)
		if _, ent = e.resolve(a); ent == nil {
			s.Revoked = true
			s.Limits = dst
			return s, nil
		}
	}
	var vals [MaxLimits]uint64
	revoked, ok := snapshot(ent, &vals)
	if !ok && e.closed.Load() {
		return Status{}, ErrClosed // Close seals every key for good
	}
	// A sealed entry holds its final values: the change that sealed it
	// has not taken effect yet, so reading them is linearizable, and
	// Status never waits behind the change's write to the store.
	s.Revoked = s.Revoked || revoked
	for i := range ent.st.limits() {
		l := ent.st.limits()[i].lim()
		r := l.Peek(vals[i], now)
		dst = append(dst, LimitStatus{Limit: ent.st.limits()[i].Limit, Remaining: r.Remaining, ResetAfter: time.Duration(r.Reset)})
	}
	s.Limits = dst
	return s, nil
}

// snapshot reads ent's flag and values consistently into vals; ok is false
// if ent is sealed (the values are then its final ones).
func snapshot(ent *entry, vals *[MaxLimits]uint64) (revoked, ok bool) {
	st := ent.st
	if ent.multi() {
		st.mu.Lock()
		defer st.mu.Unlock()
	}
	w := atomic.LoadUint64(&ent.word)
	vals[0] = w & valueMask
	for i := 1; i < len(st.limits()); i++ {
		vals[i] = st.ms.more[i-1].Load()
	}
	return w&revokedBit != 0, w&sealedBit == 0
}
