package engine

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/allot-go/allot/engine/internal/quota"
)

// Refund gives back n units of grant, a Decision that Consume or Admit
// returned for key, up to each limit's quota: for a request that was
// admitted and then did not use what it was granted. Units go back only to
// the limits they were counted in: a window gets them back only while it is
// the window the grant was counted in (units of a window that has ended are
// gone with it), and nothing is given back once SetLimits has replaced the
// key's limits since the grant. Refunding through a rotated-out key refunds
// the key its chain ends at. Give each grant back at most once; n may be
// less than it granted.
//
// It returns ErrInvalidAmount for a grant that is not an allowed Decision
// or an n above what it granted.
func (e *Engine) Refund(ctx context.Context, key string, grant Decision, n int64) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if err := checkAmount(n); err != nil {
		return err
	}
	if !grant.Allowed || n > grant.n {
		return fmt.Errorf("%w: refund of %d units of a grant of %d", ErrInvalidAmount, n, grant.n)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("allot: refund: %w", err)
	}
	for {
		ent, err := e.find(ctx, key)
		if err != nil {
			return err
		}
		if ent == nil {
			return fmt.Errorf("%w: refund", ErrUnknownKey)
		}
		if ent.kind() == 0 {
			k, t := e.resolve(ent.st.alias)
			if t == nil {
				return nil
			}
			key, ent = k, t
		}
		if grant.st == nil || grant.st.origin != ent.st.origin {
			return nil // the limits the grant was counted in are gone
		}
		switch e.refund(ent, n, grant.at) {
		case done:
			return nil
		case badClock:
			return e.clockErr()
		}
		if e.closed.Load() {
			return ErrClosed
		}
		e.waitReplaced(key)
	}
}

// refund gives units back in memory. With leases, each limit's hard mark
// moves by the same amount, so that the reservation keeps its size and the
// key's next record (asked for here, written in the background) counts the
// refund; until it lands a crash may lose the refund, never more.
func (e *Engine) refund(ent *entry, n, at int64) outcome {
	st := ent.st
	var now int64
	if ent.multi() || ent.kind() != KindCredits {
		if now = e.now(); now < 0 {
			return badClock
		}
	}
	if !ent.multi() {
		l := ent.lim0()
		for {
			w := atomic.LoadUint64(&ent.word)
			if w&sealedBit != 0 {
				return sealed
			}
			nv := l.Refund(w&valueMask, n, now, at)
			if atomic.CompareAndSwapUint64(&ent.word, w, nv|w&revokedBit) {
				e.refunded(ent, 0, &l, w&valueMask, nv)
				return done
			}
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&sealedBit != 0 {
			return sealed
		}
		l := st.limits()[0].lim()
		nv := l.Refund(w&valueMask, n, now, at)
		if !atomic.CompareAndSwapUint64(&ent.word, w, nv|w&revokedBit) {
			continue
		}
		e.refunded(ent, 0, &l, w&valueMask, nv)
		for i := 1; i < len(st.limits()); i++ {
			l := st.limits()[i].lim()
			old := st.ms.more[i-1].Load()
			nv := l.Refund(old, n, now, at)
			st.ms.more[i-1].Store(nv)
			e.refunded(ent, i, &l, old, nv)
		}
		return done
	}
}

// refunded follows a refund of limit i from value old to nv: with leases it
// tightens the hard mark by as much (a tighter mark than the durable one is
// always safe) and asks for the key's record; in exact mode it asks for the
// record only.
func (e *Engine) refunded(ent *entry, i int, l *quota.Limit, old, nv uint64) {
	if e.c == nil || old == nv {
		return
	}
	if e.leased {
		ent.st.unsaved.Store(true)
		m := ent.marks(i)
		for {
			h := atomic.LoadUint64(&m.Hard)
			nh, ok := l.Tighten(h, old, nv)
			if !ok || atomic.CompareAndSwapUint64(&m.Hard, h, nh) {
				break
			}
		}
	}
	e.c.ask(ent)
}
