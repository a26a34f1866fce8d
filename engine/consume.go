package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine/internal/quota"
)

// Consume takes n units from key if every limit of the key allows it, and
// reports the outcome. Denials (an exhausted limit, a revoked or unknown key)
// are Decisions; errors are for bad input, a closed engine, a store failure,
// or ctx ending while Consume waits for the store.
//
// For a key with one limit, Consume takes no lock and does not allocate.
// With a Store it waits only when the key's durable reservation is used up
// (the next one is normally written in the background before that), or, in
// exact mode, until its grant is durable.
func (e *Engine) Consume(ctx context.Context, key string, n int64) (Decision, error) {
	if e.closed.Load() {
		return Decision{}, ErrClosed
	}
	if len(key) == 0 || len(key) > MaxKeyLen || key[0] == 0 {
		return Decision{}, checkKey(key)
	}
	if n <= 0 {
		return Decision{}, checkAmount(n)
	}
	// The loop is written out here, not shared with Admit: a call more on
	// this path costs more than Admit's second lookup.
	for {
		ent := e.m.Load(key)
		if ent == nil {
			var err error
			if ent, err = e.find(ctx, key); err != nil {
				return Decision{}, err
			} else if ent == nil {
				if c := e.count; c != nil {
					c.unknown.Inc()
				}
				return Decision{Reason: UnknownKey}, nil
			}
		}
		if ent.qm>>multiShift == uint64(KindCredits)<<(kindShift-multiShift) {
			// The commonest case, inlined: one Credits limit, units spent
			// within the quota and the reservation, and one CAS. The word
			// has no flag set and is below 2^62, so w+n cannot wrap.
			w := atomic.LoadUint64(&ent.word)
			q := ent.quota()
			nw := w + uint64(n)
			if w&flagBits == 0 && nw <= uint64(q) && nw <= atomic.LoadUint64(&ent.lease.Hard) && atomic.CompareAndSwapUint64(&ent.word, w, nw) {
				d := Decision{Allowed: true, Reason: OK, Limit: q, Remaining: q - int64(nw), n: n, st: ent.st}
				if nw > atomic.LoadUint64(&ent.lease.Soft) || e.exact {
					if err := e.granted(ctx, ent); err != nil {
						e.takeBack(key, d)
						return Decision{}, err
					}
				}
				if c := e.count; c != nil {
					c.granted.Inc()
					c.units.Add(n)
				}
				return d, nil
			}
			if w&flagBits == 0 && nw > uint64(q) {
				// Exhausted: a denial changes nothing, so the load decides.
				if c := e.count; c != nil {
					c.exhausted.Inc()
				}
				return Decision{Reason: Exhausted, Limit: q, Remaining: max(q-int64(w), 0)}, nil
			}
		}
		if ent.qm>>multiShift == (pooledBit|uint64(KindCredits)<<kindShift)>>multiShift {
			// The same for a Pool's Credits key (consumePooled, which
			// decides every other case): a grant also needs the lease
			// live, a denial too but on the coarse clock.
			w := atomic.LoadUint64(&ent.word)
			q := ent.quota()
			nw := w + uint64(n)
			if w&flagBits == 0 && nw <= uint64(q) {
				// The clock only here: a denial does without it.
				if mono := e.mono(); e.holds(ent, mono) {
					// Read the word again after the clock: the CAS
					// then races others no longer than without a lease.
					w = atomic.LoadUint64(&ent.word)
					nw = w + uint64(n)
					if w&flagBits == 0 && nw <= uint64(q) && nw <= atomic.LoadUint64(&ent.lease.Hard) && atomic.CompareAndSwapUint64(&ent.word, w, nw) {
						if nw > atomic.LoadUint64(&ent.lease.Soft) {
							e.c.ask(ent)
						}
						if c := e.count; c != nil {
							c.granted.Inc()
							c.units.Add(n)
						}
						return Decision{Allowed: true, Reason: OK, Limit: q, Remaining: q - int64(nw), n: n, st: ent.st}, nil
					}
				}
			} else if w&flagBits == 0 && nw > uint64(q) && e.coarse.Load() < ent.st.news.Load() {
				if c := e.count; c != nil {
					c.exhausted.Inc()
				}
				return Decision{Reason: Exhausted, Limit: q, Remaining: max(q-int64(w), 0)}, nil
			}
		}
		d, st := e.consume(ent, n)
		switch st {
		case badClock:
			return Decision{}, e.clockErr()
		case done:
			if d.Allowed && e.exact {
				if o := e.owner(ent); o != nil {
					if err := e.wait(ctx, e.c.request(o, 0)); err != nil {
						e.takeBack(key, d)
						return Decision{}, err
					}
				}
			}
			if c := e.count; c != nil {
				c.count(&d)
			}
			return d, nil
		case sealed:
			if e.closed.Load() {
				return Decision{}, ErrClosed
			}
			e.waitReplaced(key)
		case needLease:
			if e.pool != nil && e.mono() >= e.lease.until.Load() {
				if err := e.awaitLease(ctx); err != nil {
					return Decision{}, err
				}
				continue
			}
			if o := e.owner(ent); o != nil {
				if err := e.wait(ctx, e.c.request(o, n)); err != nil {
					return Decision{}, err
				}
				if e.pool != nil && o.st.stale.Load() {
					if err := e.reload(ctx, o); err != nil {
						return Decision{}, err
					}
				}
			}
		}
	}
}

// takeBack undoes grant d of key, in exact mode, when Consume returns an
// error after its CAS (ctx ended or the store failed while it waited for the
// grant to be durable): a call that reports failure has taken nothing. The
// refund asks for the key's record, so the next round writes it back.
func (e *Engine) takeBack(key string, d Decision) {
	for range maxHops {
		ent := e.m.Load(key)
		if ent == nil {
			return
		}
		if ent.kind() == 0 {
			k, t := e.resolve(ent.st.alias)
			if t == nil {
				return
			}
			key, ent = k, t
		}
		if d.st == nil || d.st.origin != ent.st.origin {
			return // the limits changed since: what was spent carried over
		}
		if e.refund(ent, d.n, d.at) != sealed || e.closed.Load() {
			return
		}
		e.waitReplaced(key)
	}
}

// owner returns the entry whose counters ent draws on: ent itself, or for a
// rotated-out key the entry of the key it went to (nil if there is none).
func (e *Engine) owner(ent *entry) *entry {
	if ent.kind() != 0 {
		return ent
	}
	_, t := e.resolve(ent.st.alias)
	return t
}

// granted follows a grant that crossed a soft mark (asks for the next
// reservation, without waiting) or, in exact mode, waits until it is durable.
func (e *Engine) granted(ctx context.Context, ent *entry) error {
	if e.exact {
		return e.wait(ctx, e.c.request(ent, 0))
	}
	e.c.ask(ent)
	return nil
}

// wait waits for a batch of the committer.
func (e *Engine) wait(ctx context.Context, b *batch) error {
	select {
	case <-b.done:
		if b.err != nil && !errors.Is(b.err, ErrClosed) {
			return wrapStore("", b.err)
		}
		return b.err
	case <-ctx.Done():
		return fmt.Errorf("allot: waiting for the store: %w", ctx.Err())
	}
}

// outcome says what a consume step did.
type outcome uint8

const (
	done      outcome = iota // decided
	sealed                   // the entry is being replaced: look the key up again
	needLease                // the durable reservation is used up: reserve and retry
	badClock                 // the clock reads a time out of range
)

// waitReplaced waits until the administrative call that sealed key's entry
// has published its replacement: it holds the stripe's lock until then.
func (e *Engine) waitReplaced(key string) {
	e.m.Lock(key)
	e.m.Unlock(key) //nolint:staticcheck // an empty critical section is the point
}

// consume runs one Consume on ent.
func (e *Engine) consume(ent *entry, n int64) (Decision, outcome) {
	if ent.kind() == 0 {
		return e.consumeAlias(ent, n)
	}
	if ent.multi() {
		return e.consumeMulti(ent, n)
	}
	if ent.qm&pooledBit != 0 {
		return e.consumePooled(ent, n)
	}
	l := ent.lim0()
	timed := l.Kind != quota.Credits
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&flagBits != 0 {
			return flagged(w)
		}
		// The clock is read after the word, on every try: a word that
		// another Consume moved into a newer window was written after
		// that Consume read the clock, so now then holds that window
		// too, and the grant is counted in the window of at (which
		// Refund relies on). Read before the word, now could lie in an
		// older window than the one the word counts the grant in.
		var now int64
		if timed {
			if now = e.now(); now < 0 {
				return Decision{}, badClock
			}
		}
		nw, ok, r := l.Consume(w, n, now)
		if !ok {
			return decision(false, l.Quota, r, 0, 0, 0), done
		}
		if !l.Covered(nw, atomic.LoadUint64(&ent.lease.Hard)) {
			return Decision{}, needLease
		}
		if atomic.CompareAndSwapUint64(&ent.word, w, nw) {
			if l.Low(nw, atomic.LoadUint64(&ent.lease.Soft)) && !e.exact {
				e.c.ask(ent)
			}
			d := decision(true, l.Quota, r, 0, n, now)
			d.st = ent.st
			return d, done
		}
	}
}

// flagged is what word w decides when a flag of it is set: a revoked key is
// denied, a sealed one is being replaced.
func flagged(w uint64) (Decision, outcome) {
	if w&revokedBit != 0 {
		return Decision{Reason: Revoked}, done
	}
	return Decision{}, sealed
}

// consumePooled runs one Consume on a key of one limit of an engine with a
// Pool: the CAS of a single-limit key, granted only while the key's entry
// holds what the pool reserved for it and the engine's lease on the pool
// is live, on its monotonic clock. It takes no lock: applyReservation,
// which moves the word, first drops the hard mark to 0, so that a Consume
// that read the old word with the old mark fails its CAS, and one that
// read the new word sees the new mark or none (see applyReservation). A
// Consume that read the lease before invalidate ended it may still grant
// from it: it began before the news arrived, so it may be ordered before
// the Revoke or change (whose call had not returned).
func (e *Engine) consumePooled(ent *entry, n int64) (Decision, outcome) {
	if ent.kind() != KindCredits {
		return e.consumePooledTimed(ent, n)
	}
	q := ent.quota()
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&flagBits != 0 {
			return flagged(w)
		}
		nw := w + uint64(n)
		if nw > uint64(q) {
			if e.coarse.Load() >= ent.st.news.Load() {
				// Perhaps old news (a TopUp elsewhere): ask again
				// before denying.
				return Decision{}, needLease
			}
			return Decision{Reason: Exhausted, Limit: q, Remaining: max(q-int64(w), 0)}, done
		}
		mono := e.mono()
		if nw > atomic.LoadUint64(&ent.lease.Hard) || !e.holds(ent, mono) {
			if moved, h := e.settled(ent, w); moved || nw <= h && e.holds(ent, e.mono()) {
				continue
			}
			return Decision{}, needLease
		}
		if atomic.CompareAndSwapUint64(&ent.word, w, nw) {
			if nw > atomic.LoadUint64(&ent.lease.Soft) {
				e.c.ask(ent)
			}
			return Decision{Allowed: true, Reason: OK, Limit: q, Remaining: q - int64(nw), n: n, st: ent.st}, done
		}
	}
}

// consumePooledTimed is consumePooled for a Rate or window limit: the
// clock is read after the word, on each try, as in consume, and a denial
// rests on what the engine knows of the key for as long as consumePooled's.
func (e *Engine) consumePooledTimed(ent *entry, n int64) (Decision, outcome) {
	l := ent.lim0()
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&flagBits != 0 {
			return flagged(w)
		}
		now := e.now()
		if now < 0 {
			return Decision{}, badClock
		}
		mono := e.monoAt(now)
		nw, ok, r := l.Consume(w, n, now)
		if !ok {
			if mono >= ent.st.news.Load() {
				return Decision{}, needLease // perhaps old news: ask again first
			}
			return decision(false, l.Quota, r, 0, 0, 0), done
		}
		if !l.Covered(nw, atomic.LoadUint64(&ent.lease.Hard)) || !e.holds(ent, mono) {
			if moved, h := e.settled(ent, w); moved || l.Covered(nw, h) && e.holds(ent, e.mono()) {
				continue
			}
			return Decision{}, needLease
		}
		if atomic.CompareAndSwapUint64(&ent.word, w, nw) {
			if l.Low(nw, atomic.LoadUint64(&ent.lease.Soft)) {
				e.c.ask(ent)
			}
			d := decision(true, l.Quota, r, 0, n, now)
			d.st = ent.st
			return d, done
		}
	}
}

// holds reports whether the engine may grant from what ent holds of its
// Pool at mono: the key's entry holds it and the engine's lease is live.
func (e *Engine) holds(ent *entry, mono int64) bool {
	return mono < ent.st.until.Load() && mono < e.lease.until.Load()
}

// settled waits for an applyReservation of ent in progress (it holds the
// key's mutex), and returns whether the word moved from w meanwhile, and
// the hard mark then: a retry of consumePooled may then grant what it
// could not.
func (e *Engine) settled(ent *entry, w uint64) (moved bool, hard uint64) {
	ent.st.mu.Lock()
	h := atomic.LoadUint64(&ent.lease.Hard)
	ent.st.mu.Unlock()
	return atomic.LoadUint64(&ent.word) != w, h
}

// decision builds the Decision of limit i's result r; a grant of n units
// at time at.
func decision(ok bool, limit int64, r quota.Result, i int, n, at int64) Decision {
	d := Decision{Allowed: ok, Limit: limit, Remaining: r.Remaining, ResetAfter: time.Duration(r.Reset), LimitIndex: i}
	if ok {
		d.Reason, d.n, d.at = OK, n, at
	} else {
		d.Reason = Exhausted
		if r.Retry > 0 {
			d.RetryAfter = time.Duration(r.Retry)
		}
	}
	return d
}

// consumeMulti consumes from a key with several limits under the key's
// mutex. The word of limit 0 is still updated by CAS, because Revoke sets its
// flag without the mutex; it is written first, so a Revoke that gets in
// between makes the whole step retry.
func (e *Engine) consumeMulti(ent *entry, n int64) (Decision, outcome) {
	st := ent.st
	var vals [MaxLimits]uint64
	var res [MaxLimits]quota.Result
	st.mu.Lock()
	// The clock is read under the mutex, which every writer of the
	// values holds (Revoke, which does not, sets only a flag): no value
	// then counts a window newer than the one that holds now, and the
	// grant is counted in the windows of at, which Refund relies on.
	// Read before the mutex, now could lie in a window that another
	// Consume, with a later reading, had already left; the grant would
	// be counted in the newer window and a refund of it would give that
	// window nothing.
	now := e.now()
	if now < 0 {
		st.mu.Unlock()
		return Decision{}, badClock
	}
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&flagBits != 0 {
			st.mu.Unlock()
			return flagged(w)
		}
		if linkEnded(st, now) {
			st.mu.Unlock()
			return Decision{Reason: Revoked}, done // a rotated-out key of a Pool past its grace
		}
		allowed, covered, low := true, true, false
		for i := range st.limits() {
			v := w
			if i > 0 {
				v = st.ms.more[i-1].Load()
			}
			l := st.limits()[i].lim()
			var ok bool
			vals[i], ok, res[i] = l.Consume(v, n, now)
			allowed = allowed && ok
			if ok {
				m := &st.ms.leases[i]
				covered = covered && l.Covered(vals[i], atomic.LoadUint64(&m.Hard))
				low = low || l.Low(vals[i], atomic.LoadUint64(&m.Soft))
			}
		}
		if e.pool != nil {
			// Grant nothing from what this engine holds without its
			// lease, or once the pool's news ended it; deny nothing on
			// what may be old news (a TopUp or Reset elsewhere) before
			// asking the pool again.
			mono := e.monoAt(now)
			if allowed && (mono >= st.until.Load() || mono >= e.lease.until.Load()) || !allowed && mono >= st.news.Load() {
				st.mu.Unlock()
				return Decision{}, needLease
			}
		}
		if allowed && !covered {
			st.mu.Unlock()
			return Decision{}, needLease
		}
		if allowed && !atomic.CompareAndSwapUint64(&ent.word, w, vals[0]) {
			continue
		}
		if allowed {
			for i := 1; i < len(st.limits()); i++ {
				st.ms.more[i-1].Store(vals[i])
			}
		}
		st.mu.Unlock()
		if allowed && low && !e.exact {
			e.c.ask(ent)
		}
		i := tightest(allowed, res[:len(st.limits())])
		d := decision(allowed, st.limits()[i].quota, res[i], i, n, now)
		if allowed {
			d.st = st
		}
		return d, done
	}
}

// tightest picks the limit a Decision describes: after a grant, the one with
// the fewest units left; after a denial, a denying one that waiting cannot
// cure, else the one that frees up last.
func tightest(allowed bool, res []quota.Result) int {
	best := 0
	for i := 1; i < len(res); i++ {
		r, b := res[i], res[best]
		switch {
		case allowed:
			if r.Remaining < b.Remaining {
				best = i
			}
		case b.Retry == quota.Never:
		case r.Retry == quota.Never || r.Retry > b.Retry:
			best = i
		}
	}
	return best
}

// consumeAlias consumes for a rotated-out key: from the counters of the key
// its chain of rotations ends at (its head), while every link of the chain is
// in its grace and not revoked. It holds the mutex of every link, oldest
// first, while it checks their flags and consumes, which makes the consume
// one step with respect to Revoke of any link (Revoke of a rotated-out key
// takes its mutex). The caller waits for the store (a sealed link or head, a
// used-up reservation) after the mutexes are let go.
func (e *Engine) consumeAlias(ent *entry, n int64) (Decision, outcome) {
	now := e.now()
	if now < 0 {
		return Decision{}, badClock
	}
	var held [maxHops]*keyState
	k := 0 // mutexes held
	defer func() {
		for i := k - 1; i >= 0; i-- {
			held[i].mu.Unlock()
		}
	}()
	cur := ent
	for range maxHops {
		st := cur.st
		st.mu.Lock()
		held[k] = st
		k++
		w := atomic.LoadUint64(&cur.word)
		switch {
		case w&revokedBit != 0, !st.alias.forward && now >= st.alias.deadline:
			return Decision{Reason: Revoked}, done
		case w&sealedBit != 0:
			return Decision{}, sealed
		}
		next := e.next(cur)
		switch {
		case next == nil:
			return Decision{Reason: Revoked}, done
		case next.kind() != 0:
			return e.consume(next, n)
		}
		cur = next
	}
	return Decision{Reason: Revoked}, done
}
