package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/puzpuzpuz/xsync/v3"
)

// A Pool is a Store that several engines, in several processes, share
// (package persist/redisstore): the store holds each limit's state for all
// of them, and each engine grants from reservations the store hands it, at
// in-memory speed. The store decides how much a reservation gets, and may
// grant less than asked, or nothing.
//
// An engine with a Pool works in lease mode only (WithLease with Exact
// returns ErrInvalidOption). It keeps the Store methods' meaning, with
// these differences:
//
//   - Load may return no record: the engine asks Lookup for a key it does
//     not hold the first time a call names it, and remembers a negative
//     answer for at most NegativeTTL (Register in this engine forgets it at
//     once).
//   - Save is called by Register only, with every counter at its initial
//     value. A Save of a key the store already holds fails with an error
//     that matches ErrKeyExists. Revocations go through Reserve.
//   - Reserve is called for reservations, revocations and, at Close, to
//     give back what is unused; Save is not called at Close.
//   - TopUp, SetLimits, Rotate, Reset and Delete return an error matching
//     errors.ErrUnsupported and change nothing (for now).
//
// Implementations must be safe for concurrent use.
type Pool interface {
	Store
	// Reserve answers each request in place (see Reservation). An error
	// fails the whole call; the engine grants nothing new from it.
	Reserve(ctx context.Context, rs []Reservation) error
	// Lookup returns the record of id as the store holds it now, with its
	// counters at the store's values; ok is false if there is none.
	Lookup(ctx context.Context, id KeyID) (rec Record, ok bool, err error)
	// Quiesce returns once no other engine can grant id a unit from a
	// reservation made before id was revoked in the store: every holder
	// has let go of it, or its lease has run out.
	Quiesce(ctx context.Context, id KeyID) error
}

// NegativeTTL is how long an engine with a Pool remembers that the store
// did not know a key: a key registered by another engine may be reported
// unknown for that long.
const NegativeTTL = time.Second

// Reservation is one key's request to a Pool, answered in place. Values are
// in the encoding of Record.Counters, in the pool's terms: the pool's state
// of the limit for all engines together.
//
// For each limit i the engine holds, since its last reservation of the key,
// the units between its own value and From[i]: it may grant them. The pool
// gets back Base[i] - From[i] (units refunded since, or, with Release, every
// unit not granted), then reserves up to Want[i] more. For Credits and
// windows the engine asks for its chunk less what it still holds, so that
// it never holds more than a chunk (LeaseOptions.MaxChunk): what a crash
// of it may lose. It answers Start[i],
// its state after the give-back and before the grant, and Hard[i], its state
// after the grant. The engine then moves its value by Start[i] - From[i] and
// may grant up to Hard[i]:
//
//   - Credits: the units spent; Want is in units.
//   - PerWindow, PerMonth: a reservation belongs to the window that holds
//     Now; the pool starts a new window's count at 0, gives back only to the
//     window Base is in, and grants nothing in a window older than its own.
//     Want is in units.
//   - Rate: the theoretical arrival time. The pool reserves the span
//     [Start, Hard) with Start = max(its arrival time, Now) and Hard at most
//     Now plus the larger of the burst's span and one second; Want is in ns.
//     It gives back only if its arrival time is still Base.
type Reservation struct {
	ID           KeyID
	Registration uint64
	Limits       []Limit
	Base, From   []uint64
	Want         []uint64
	// Now is the engine's clock, in ns since the Unix epoch.
	Now int64
	// Revoke asks the pool to revoke the key: no reservation of it is
	// granted from then on, in any engine.
	Revoke bool
	// Release gives back everything unused and reserves nothing (Close).
	Release bool

	// Answered by the pool.
	Start, Hard []uint64
	// Revoked reports that the key is revoked in the pool; Gone, that the
	// pool holds no key of this ID and registration. Either way nothing
	// was reserved.
	Revoked, Gone bool
	// Lease is how long, counted from before the engine called Reserve,
	// the engine may grant from what it holds of the key.
	Lease time.Duration
}

// leaseMargin is the part of a lease an engine does not use, for a clock
// that runs slower than the pool's: 1/16 of it (and at least 10 ms).
func leaseMargin(d time.Duration) time.Duration { return max(d/16, 10*time.Millisecond) }

// errShared is the error of a change a Pool does not support yet.
func errShared(op string) error {
	return fmt.Errorf("allot: %s with a shared store: %w", op, errors.ErrUnsupported)
}

// negCache remembers keys a Pool did not know, each until a deadline on the
// engine's monotonic clock; it holds at most negMax of them.
type negCache struct{ m *xsync.MapOf[KeyID, int64] }

const negMax = 1 << 16

func (e *Engine) mono() int64 { return int64(time.Since(e.mono0)) }

// fetch asks the Pool for key, which the engine does not hold, and
// publishes its entry; nil if the pool does not know it either. The caller
// holds the admin lock shared.
func (e *Engine) fetch(ctx context.Context, key string) (*entry, error) {
	id := IDOf(key)
	if d, ok := e.neg.m.Load(id); ok && e.mono() < d {
		return nil, nil
	}
	rec, ok, err := e.pool.Lookup(ctx, id)
	if err != nil {
		return nil, wrapStore("lookup", err)
	}
	if !ok || rec.RotatedTo != nil {
		if e.neg.m.Size() >= negMax {
			e.neg.m.Clear()
		}
		e.neg.m.Store(id, e.mono()+int64(NegativeTTL))
		return nil, nil
	}
	specs, err := validateLimits(rec.Limits)
	if err != nil || len(rec.Counters) != len(specs) {
		return nil, fmt.Errorf("%w: lookup: record %x does not decode", ErrStore, id[:4])
	}
	now := e.now()
	if now < 0 {
		return nil, e.clockErr()
	}
	vals := append([]uint64(nil), rec.Counters...)
	for i := range vals {
		vals[i] = min(vals[i], valueMask)
	}
	st := &keyState{plan: e.intern(specs), reg: rec.Registration, id: &id}
	ne := e.newEntry(st, rec.Revoked, vals, now)
	st.base = vals
	e.m.Lock(key)
	defer e.m.Unlock(key)
	if ent := e.m.Load(key); ent != nil {
		return ent, nil
	}
	return e.m.Store(key, ne), nil
}

// poolRound is a committer round for a Pool: the administrative records go
// to Save, then each pending entry gets its reservation (or gives back
// everything, at Close).
func (c *committer) poolRound(pend []*entry, wants []int64, recs []Record, b *batch, now int64, release bool) {
	p := c.e.pool
	if len(recs) > 0 {
		if b.err = c.call(len(recs), func() error { return p.Save(context.Background(), recs...) }); b.err != nil {
			return
		}
	}
	rs := make([]Reservation, 0, len(pend))
	ents := make([]*entry, 0, len(pend))
	for i, ent := range pend {
		if r, ok := c.reservation(ent, wants[i], now, release); ok {
			rs, ents = append(rs, r), append(ents, ent)
		}
	}
	if len(rs) == 0 {
		return
	}
	t0 := c.e.mono()
	if b.err = c.call(len(rs), func() error { return p.Reserve(context.Background(), rs) }); b.err != nil {
		return
	}
	if !release {
		c.stats.reservations.Add(int64(len(rs)))
	}
	for i := range rs {
		c.e.applyReservation(ents[i], &rs[i], t0)
	}
}

// reservation builds ent's request to the pool; false if there is none to
// make (a rotated-out key, or at Close a key never reserved).
func (c *committer) reservation(ent *entry, want, now int64, release bool) (Reservation, bool) {
	st := ent.st
	if st.alias != nil || st.base == nil {
		return Reservation{}, false
	}
	var vals [MaxLimits]uint64
	revoked, _ := snapshot(ent, &vals)
	chunk := want
	if !release {
		chunk = c.chunk(ent, want, now)
	} else if st.id == nil {
		return Reservation{}, false
	}
	n := len(st.limits())
	r := Reservation{ID: *st.id, Registration: st.reg, Now: now, Revoke: revoked, Release: release,
		Limits: make([]Limit, n), Base: st.base, From: make([]uint64, n), Want: make([]uint64, n)}
	for i := range st.limits() {
		s := &st.limits()[i]
		r.Limits[i] = s.Limit
		if release {
			r.From[i] = vals[i]
			continue
		}
		r.From[i] = atomic.LoadUint64(&ent.marks(i).hard)
		if s.kind == KindRate {
			span := max(s.quota*s.period, minRateSpan)
			if chunk < span/s.period {
				span = chunk * s.period
			}
			r.Want[i] = uint64(span)
		} else {
			// The chunk less what this engine still holds, as in
			// lease mode without a Pool: it never holds more than a
			// chunk, which is what a crash may lose.
			r.Want[i] = uint64(chunk - min(chunk, held(s, vals[i], r.From[i], now)))
		}
	}
	return r, true
}

// held returns the units between value v and hard mark h of limit s
// (Credits or a window) that the engine may still grant at now.
func held(s *spec, v, h uint64, now int64) int64 {
	if s.kind == KindCredits {
		return int64(h - min(h, v))
	}
	if h == noLease {
		return 0
	}
	l := s.lim()
	vu, vt, _ := l.window(v, now)
	hu, ht, _ := l.window(h, now)
	if vt != ht {
		return 0
	}
	return max(hu-vu, 0)
}

// applyReservation moves ent to the pool's answer r to a request sent at
// t0 (the engine's monotonic clock): each value by Start - From, each hard
// mark to Hard (less what was refunded since the request was built), and
// the lease to t0 + r.Lease less its margin. It holds the key's mutex, so
// no Consume or Refund of the key runs meanwhile (an entry of an engine
// with a Pool always takes it).
func (e *Engine) applyReservation(ent *entry, r *Reservation, t0 int64) {
	st := ent.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if r.Revoked || r.Gone {
		for {
			w := atomic.LoadUint64(&ent.word)
			if w&revokedBit != 0 || atomic.CompareAndSwapUint64(&ent.word, w, w|revokedBit) {
				break
			}
		}
		if r.Gone {
			st.until.Store(0)
		}
	}
	if r.Release || r.Gone || len(r.Start) != len(st.limits()) || len(r.Hard) != len(st.limits()) {
		return
	}
	for i := range st.limits() {
		s := &st.limits()[i]
		l := s.lim()
		var v uint64
		if i == 0 {
			v = atomic.LoadUint64(&ent.word) & valueMask
		} else {
			v = st.ms.more[i-1].Load()
		}
		m := ent.marks(i)
		cur := atomic.LoadUint64(&m.hard)
		from, start, hard := r.From[i], r.Start[i], r.Hard[i]
		var nv, nh uint64
		switch l.kind {
		case KindCredits:
			nv = shift(v, start, from)
			nh = hard - min(hard, from-min(from, cur)) // less what was refunded since
		case KindRate:
			if start <= from {
				nv = v // contiguous: what this engine held is still its own
				nh = hard - min(hard, from-min(from, cur))
			} else {
				nv = max(v, start) // another engine reserved in between: the rest is lost
				nh = hard
			}
		default:
			// The same as Credits, in counts of the pool's window (a
			// value or mark of another window counts 0 in it).
			tag := start >> tagShift & tagMask
			cnt := func(x uint64) uint64 {
				if x>>tagShift&tagMask != tag {
					return 0
				}
				return x & usedMask
			}
			nv = tag<<tagShift | min(shift(cnt(v), start&usedMask, cnt(from)), usedMask)
			nh = tag<<tagShift | hard&usedMask - min(hard&usedMask, cnt(from)-min(cnt(from), cnt(cur)))
		}
		if i == 0 {
			for {
				w := atomic.LoadUint64(&ent.word)
				if atomic.CompareAndSwapUint64(&ent.word, w, w&flagBits|nv) {
					break
				}
			}
		} else {
			st.ms.more[i-1].Store(nv)
		}
		atomic.StoreUint64(&m.hard, nh)
		soft := l.unbounded().soft
		switch l.kind {
		case KindCredits:
			if nh < uint64(l.quota) {
				soft = nh - (nh-min(nh, nv))/2
			}
		case KindRate:
			soft = nh // reserve when used up: a span reserved early is lost if another engine reserves in between
		default:
			if c, u := int64(nh&usedMask), int64(nv&usedMask); c < l.quota {
				soft = nh&^usedMask | uint64(c-max(c-u, 0)/2)
			}
		}
		atomic.StoreUint64(&m.soft, soft)
	}
	st.base = r.Hard
	if !r.Revoked {
		st.until.Store(t0 + int64(r.Lease-leaseMargin(r.Lease)))
	}
}

// shift returns v moved by start - from, never below 0.
func shift(v, start, from uint64) uint64 {
	if start >= from {
		return v + (start - from)
	}
	return v - min(v, from-start)
}

// poolFlush gives back, at Close, everything unused of every key this
// engine reserved: Close has sealed them all.
func (c *committer) poolFlush() error {
	var pend []*entry
	c.e.m.Range(func(_ string, ent *entry) bool {
		if ent.st.alias == nil && ent.st.base != nil {
			pend = append(pend, ent)
		}
		return true
	})
	const batch = 1024
	for len(pend) > 0 {
		k := min(len(pend), batch)
		b := newBatch()
		c.poolRound(pend[:k], make([]int64, k), nil, b, c.e.now(), true)
		if b.err != nil {
			return wrapStore("flush", b.err)
		}
		pend = pend[k:]
	}
	return nil
}
