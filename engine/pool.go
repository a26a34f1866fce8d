package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine/internal/quota"
	"github.com/allot-go/allot/shard"
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
//   - The engine grants from reservations only while it holds a lease on
//     the pool (Renew), which it renews in the background; a Consume that
//     finds it ended waits for the next renewal, and fails with an error
//     matching ErrStore if that fails. So a key that stays in use costs
//     no round trip to keep: only its reservations do.
//   - TopUp, SetLimits, Reset and Delete go through Change, which makes
//     them linearizable across engines: the pool stops every reservation
//     of the key, waits until no other holder's lease is live, and applies
//     the change to the state it holds. What engines held of the key is
//     lost (at most a chunk per engine and limit): never a unit gained.
//     Another engine that held the key learns of the change at its next
//     reservation (Stale) and reads the key again.
//   - Rotate goes through Rotate: the chain keeps one set of counters in
//     the pool, and every key of it is an entry of its own that reserves
//     from them (Reservation.ID names the key, the pool finds the chain).
//     Lookup of a rotated-out key returns the chain's limits and
//     counters, RotatedTo the chain's head, GraceUntil the earliest grace
//     deadline of the key and the keys after it, and Revoked if one of
//     them, or the head, is revoked; the engine grants nothing through it
//     from GraceUntil on, by its own clock. A reservation through a key
//     rotated out answers Revoked, or Stale once its grace has passed.
//     Revoke of a rotated-out key revokes that link (and so the keys
//     rotated out before it); of the head, the chain. What an engine held
//     of the old key when it rotated is lost (a chunk per limit).
//     Delete of a rotated-out key returns an error matching
//     errors.ErrUnsupported and changes nothing (for now).
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
	// Change changes id's record, of registration reg: it stops every
	// reservation of id, waits until no other holder's lease is live,
	// calls f with the record as the pool holds it then (counters at the
	// pool's values), and stores what f returns in its place (a record
	// with Deleted removes the key). If f or the pool fails, nothing
	// changes and Change returns that error. A key the pool does not
	// hold under reg gives an error matching ErrUnknownKey.
	Change(ctx context.Context, id KeyID, reg uint64, f func(Record) (Record, error)) error
	// Rotate rotates r.Old, the head of its chain, to r.New (see
	// Rotation), and returns once no other engine can grant through a key
	// of the chain on what it read before: every holder of the chain's
	// reservations has let go, or its lease has run out. A name the pool
	// holds gives an error matching ErrKeyExists; r.Old unknown under
	// r.Registration ErrUnknownKey, rotated out ErrRotated, revoked
	// ErrKeyRevoked, ending a full chain ErrRotationChain. On an error
	// nothing changed, except when it says the rotation landed (then only
	// the wait for the other holders failed).
	Rotate(ctx context.Context, r Rotation) error
	// Watch is called once, by New, before any other method: the pool
	// calls fn with the ID of a key another engine registered, revoked or
	// changed, if it learns of it (messages may be lost: the leases keep
	// the guarantees, fn only makes them fast). When fn returns, the
	// engine grants nothing more of the key from what it held (a Consume
	// that had read the lease before may still finish its grant: it
	// began before the news, so before the call that sent it returned),
	// and it
	// has forgotten a negative answer about it: the pool may tell the
	// engine that asked (for a Revoke, a change) that this holder has let
	// go of the key.
	Watch(fn func(KeyID))
	// Renew renews the engine's lease on everything it holds of the pool,
	// for the duration it returns, counted from before the call: the
	// engine grants from reservations only while its lease is live, and
	// renews it in the background every quarter of it. Before it returns,
	// Renew calls fn, as Watch's, with the ID of each key the engine must
	// let go of that the pool's messages may not have told it (Quiesce
	// waits for it), and may then tell the pool the engine let go of it.
	// lapsed reports that the previous lease had run out in the pool:
	// others may have changed or revoked keys meanwhile without waiting
	// for this engine, which then lets go of every key it holds before it
	// takes the new lease. The first call of a store is never lapsed.
	Renew(ctx context.Context, fn func(KeyID)) (lease time.Duration, lapsed bool, err error)
}

// minPoolSlack is the least a Rate reservation from a Pool reaches beyond
// the burst's span (see reservation); twice the last round trip is used if
// longer, up to maxPoolSlack. What a slack reserves beyond the burst may be
// lost to the other engines: at most one emission or maxPoolSlack of the
// rate per engine and reservation.
const (
	minPoolSlack = 10 * time.Millisecond
	maxPoolSlack = 100 * time.Millisecond
)

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
//     Now plus the larger of the burst's span (a full bucket) and Want;
//     Want, in ns, is the burst's span (or the chunk's, if shorter) plus a
//     slack for the round trip: at least one emission and 10 ms.
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
	// pool holds no key of this ID and registration; Stale, that the key
	// was changed (or is being changed) since the engine read it: the
	// engine must read it again. Then nothing was reserved.
	Revoked, Gone, Stale bool
	// Lease is how long, counted from before the engine called Reserve,
	// the engine may deny on what it knows of the key before it asks the
	// pool again. It grants from what it holds while its lease on the
	// pool (Renew) is live and no news of the key (Watch, Renew) ended it.
	Lease time.Duration

	inval uint64 // the key's keyState.inval when the request was built
}

// leaseMargin is the part of a lease an engine does not use, for a clock
// that runs slower than the pool's: 1/16 of it (and at least 10 ms).
func leaseMargin(d time.Duration) time.Duration { return max(d/16, 10*time.Millisecond) }

// errShared is the error of a change a Pool does not support yet.
func errShared(op string) error {
	return fmt.Errorf("allot: %s with a shared store: %w", op, errors.ErrUnsupported)
}

// invalidate is the engine's side of Pool.Watch: id was registered,
// revoked or changed elsewhere. The key's lease ends here and now (under
// its mutex, so no Consume in flight still grants from it), and a negative
// answer about it is forgotten.
func (e *Engine) invalidate(id KeyID) {
	e.neg.m.Delete(id)
	key, ok := e.ids.Load(id)
	if !ok {
		return
	}
	if ent := e.m.Load(key); ent != nil {
		letGo(ent)
	}
}

// letGo ends what the engine may grant or deny of ent on what it holds,
// under the key's mutex: no Consume in flight still grants from it, and a
// reservation asked for before gives no lease (inval).
func letGo(ent *entry) {
	if ent.st.alias != nil {
		return
	}
	ent.st.mu.Lock()
	ent.st.inval.Add(1)
	ent.st.until.Store(0)
	ent.st.news.Store(0)
	ent.st.mu.Unlock()
}

// poolLease is an engine's lease on what it holds of a Pool (Pool.Renew),
// which one goroutine (holdLease) renews: until is its end on the engine's
// monotonic clock, less a margin (0: none yet, or lapsed). A Consume that
// finds it ended waits for the next renewal (awaitLease).
type poolLease struct {
	until   atomic.Int64
	kick    chan struct{} // wakes holdLease for a renewal now
	stopped chan struct{} // closed when holdLease returns (Close)

	mu     sync.Mutex
	done   chan struct{} // closed at the next renewal's outcome
	err    error         // the last renewal's, nil if it succeeded
	failed int64         // when it failed (monotonic)
}

func (l *poolLease) init() {
	l.kick, l.stopped, l.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
}

// leaseRetry is how soon a renewal that failed is tried again, and how long
// a Consume that finds the lease ended takes that failure for the answer
// without waiting for another try.
const leaseRetry = 50 * time.Millisecond

// holdLease renews the engine's lease on the Pool, every quarter of it, at
// once when a Consume finds it ended, and every leaseRetry while it fails.
// A lapsed lease (the pool's ended before a renewal reached it) lets go of
// every key first: what the engine held then may have been revoked or
// changed without waiting for it.
func (e *Engine) holdLease() {
	l := &e.lease
	defer close(l.stopped)
	t := time.NewTimer(0)
	defer t.Stop()
	timeout := 2 * time.Second
	for {
		select {
		case <-t.C:
		case <-l.kick:
		case <-e.coarseStop:
			l.until.Store(0)
			l.end(ErrClosed, e.mono())
			return
		}
		t0 := e.mono()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		d, lapsed, err := e.pool.Renew(ctx, e.invalidate)
		cancel()
		next := leaseRetry
		if err == nil && d <= 0 {
			err = fmt.Errorf("%w: renew: a lease of %v", ErrStore, d)
		}
		if err == nil {
			if lapsed {
				e.m.Range(func(_ string, ent *entry) bool {
					letGo(ent)
					return true
				})
				e.neg.m.Clear()
			}
			l.until.Store(t0 + int64(d-leaseMargin(d)))
			next, timeout = d/4, max(d/2, 100*time.Millisecond)
		} else if e.mono() >= l.until.Load() {
			l.until.Store(0)
		}
		l.end(err, e.mono())
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// end publishes a renewal's outcome and wakes the Consumes that wait for it.
func (l *poolLease) end(err error, now int64) {
	l.mu.Lock()
	l.err, l.failed = err, now
	close(l.done)
	l.done = make(chan struct{})
	l.mu.Unlock()
}

// awaitLease returns once the engine's lease on its Pool is live: at once
// if it is, else after the next renewal, which it asks for. It fails with
// the renewal's error (matching ErrStore) if that failed, without waiting
// if the last one failed less than leaseRetry ago.
func (e *Engine) awaitLease(ctx context.Context) error {
	l := &e.lease
	l.mu.Lock()
	done, err, failed := l.done, l.err, l.failed
	l.mu.Unlock()
	now := e.mono()
	if now < l.until.Load() {
		return nil
	}
	if err == nil || now-failed >= int64(leaseRetry) {
		select {
		case l.kick <- struct{}{}:
		default:
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if e.mono() < l.until.Load() {
			return nil
		}
		l.mu.Lock()
		err = l.err
		l.mu.Unlock()
	}
	switch {
	case errors.Is(err, ErrClosed):
		return ErrClosed
	case err == nil:
		err = errors.New("no lease")
	}
	return wrapStore("lease", err)
}

// negCache remembers keys a Pool did not know, each until a deadline on the
// engine's monotonic clock; it holds at most negMax of them.
type negCache struct{ m *xsync.MapOf[KeyID, int64] }

const negMax = 1 << 16

func (e *Engine) mono() int64 { return int64(time.Since(e.mono0)) }

// coarseTick is how often the coarse clock is read: what a denial of a
// Pool's Credits key may lag a lease's end by.
const coarseTick = 5 * time.Millisecond

func (e *Engine) tickCoarse() {
	t := time.NewTicker(coarseTick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			e.coarse.Store(e.mono())
		case <-e.coarseStop:
			return
		}
	}
}

// monoAt returns the monotonic clock at now, a reading of e.now: without
// WithClock the two are one reading (now is wall0 plus the monotonic
// clock), which saves a clock read.
func (e *Engine) monoAt(now int64) int64 {
	if e.clock == nil {
		return now - e.wall0
	}
	return e.mono()
}

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
	if !ok {
		if e.neg.m.Size() >= negMax {
			e.neg.m.Clear()
		}
		e.neg.m.Store(id, e.mono()+int64(NegativeTTL))
		return nil, nil
	}
	ne, err := e.pooledEntry(rec, false)
	if err != nil {
		return nil, err
	}
	e.m.Lock(key)
	defer e.m.Unlock(key)
	if ent := e.m.Load(key); ent != nil {
		return ent, nil
	}
	stored := e.m.Store(key, ne)
	e.ids.Store(id, shard.KeyOf(stored))
	return stored, nil
}

// pooledEntry builds the entry of a record a Pool returned.
func (e *Engine) pooledEntry(rec Record, revoked bool) (entry, error) {
	specs, err := validateLimits(rec.Limits)
	if err != nil || len(rec.Counters) != len(specs) {
		return entry{}, fmt.Errorf("%w: lookup: record %x does not decode", ErrStore, rec.ID[:4])
	}
	now := e.now()
	if now < 0 {
		return entry{}, e.clockErr()
	}
	vals := append([]uint64(nil), rec.Counters...)
	for i := range vals {
		vals[i] = min(vals[i], quota.ValueMask)
	}
	id := rec.ID
	st := &keyState{plan: e.intern(specs), reg: rec.Registration, id: &id}
	if rec.RotatedTo != nil {
		until := int64(math.MaxInt64)
		if !rec.GraceUntil.IsZero() {
			until = rec.GraceUntil.UnixNano()
		}
		st.link = &poolLink{head: *rec.RotatedTo, until: until}
	}
	return e.newEntry(st, rec.Revoked || revoked, vals, now), nil
}

// reload reads key again from the Pool after a change elsewhere made its
// entry old stale: it seals old, reads the record, and publishes its new
// entry (or removes the key, deleted elsewhere). What old held is lost.
func (e *Engine) reload(ctx context.Context, old *entry) error {
	key := shard.KeyOf(old)
	e.admin.RLock()
	defer e.admin.RUnlock()
	if e.closed.Load() {
		return ErrClosed
	}
	e.m.Lock(key)
	defer e.m.Unlock(key)
	if e.m.Load(key) != old {
		return nil // read again already
	}
	revoked, _ := seal(old)
	rec, ok, err := e.pool.Lookup(ctx, idOfKey(key))
	if err != nil {
		unseal(old)
		return wrapStore("lookup", err)
	}
	if !ok || rec.Registration != old.st.reg {
		e.m.Delete(key) // deleted elsewhere: old stays sealed for good
		e.ids.Delete(idOfKey(key))
		return nil
	}
	ne, err := e.pooledEntry(rec, revoked)
	if err != nil {
		unseal(old)
		return err
	}
	ne.st.track.Store(old.st.track.Load())
	e.m.Store(key, ne)
	return nil
}

// changeShared is change (or, with del, delete) of a key of a Pool: the
// pool stops every reservation of the key and waits for every other
// holder's lease to end, then f runs on the pool's state.
func (e *Engine) changeShared(ctx context.Context, key, op string, del bool, f func(ent *entry, revoked bool, vals []uint64, now int64) (*keyState, []uint64, error)) error {
	if err := e.beginAdmin(ctx); err != nil {
		return err
	}
	defer e.endAdmin()
	if ent, err := e.lookup(ctx, key); err != nil {
		return err
	} else if ent == nil {
		return fmt.Errorf("%w: %s", ErrUnknownKey, op)
	}
	e.m.Lock(key)
	defer e.m.Unlock(key)
	ent := e.m.Load(key)
	if ent == nil {
		return fmt.Errorf("%w: %s", ErrUnknownKey, op)
	}
	if ent.kind() == 0 || ent.st.link != nil && !del {
		return fmt.Errorf("%w: %s", ErrRotated, op)
	}
	if ent.st.link != nil {
		return errShared("delete of a rotated-out key")
	}
	now := e.now()
	if now < 0 {
		return e.clockErr()
	}
	revoked, _ := seal(ent)
	id := IDOf(key)
	var ne entry
	var ferr error
	err := e.pool.Change(ctx, id, ent.st.reg, func(rec Record) (Record, error) {
		if del {
			return Record{ID: id, Deleted: true}, nil
		}
		cur, err := e.pooledEntry(rec, revoked) // the limits and values as the pool has them
		if err != nil {
			return Record{}, err
		}
		var vals [MaxLimits]uint64
		rv, _ := snapshot(&cur, &vals)
		st, nvals, err := f(&cur, rv, vals[:len(cur.st.limits())], now)
		if err != nil {
			ferr = err
			return Record{}, err
		}
		st.track.Store(ent.st.track.Load())
		st.reg = rec.Registration
		ne = e.newEntry(st, rv, nvals, now)
		return recordOf(&ne, id, false), nil
	})
	if err != nil {
		unseal(ent)
		switch {
		case ferr != nil:
			return ferr
		case errors.Is(err, ErrRotated):
			return fmt.Errorf("%w: %s", ErrRotated, op) // rotated elsewhere meanwhile
		case errors.Is(err, ErrUnknownKey), ctx.Err() != nil && errors.Is(err, ctx.Err()):
			return fmt.Errorf("allot: %s: %w", op, err)
		}
		return wrapStore(op, err)
	}
	if del {
		e.m.Delete(key) // ent stays sealed for good
		e.ids.Delete(id)
		return nil
	}
	e.m.Store(key, ne)
	return nil
}

// poolRound is a committer round for a Pool: the administrative records go
// to Save, then each pending entry gets its reservation (or gives back
// everything, at Close).
func (e *Engine) sharedRound(c *committer, pend []*entry, wants []int64, expl []*pendingWrite, b *batch, now int64) {
	// Each administrative write is its own Save with its own outcome: the
	// pool writes keys one by one, not in one transaction, so a write that
	// fails must not take down another that landed.
	for _, w := range expl {
		w.err = c.call(len(w.recs), func() error { return e.pool.Save(context.Background(), w.recs...) })
	}
	e.poolRound(c, pend, wants, nil, b, now, false)
}

func (e *Engine) poolRound(c *committer, pend []*entry, wants []int64, recs []Record, b *batch, now int64, release bool) {
	p := e.pool
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
	t0 := e.mono()
	if b.err = c.call(len(rs), func() error { return p.Reserve(context.Background(), rs) }); b.err != nil {
		return
	}
	c.rtt.Store(min(e.mono()-t0, int64(time.Second)))
	if !release {
		c.stats.reservations.Add(int64(len(rs)))
	}
	for i := range rs {
		e.applyReservation(ents[i], &rs[i], t0)
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
	r := Reservation{ID: *st.id, Registration: st.reg, Now: now, Revoke: revoked, Release: release, inval: st.inval.Load(),
		Limits: make([]Limit, n), Base: st.base, From: make([]uint64, n), Want: make([]uint64, n)}
	for i := range st.limits() {
		s := &st.limits()[i]
		r.Limits[i] = s.Limit
		if release {
			r.From[i] = vals[i]
			continue
		}
		r.From[i] = atomic.LoadUint64(&ent.marks(i).Hard)
		if s.kind == KindRate {
			// At most the burst's span: with other engines reserving
			// too, a span further ahead than a full bucket could not be
			// granted before others' reservations move past it.
			span := s.quota * s.period
			if chunk < span/s.period {
				span = chunk * s.period
			}
			// Plus a slack for the time the answer takes to come back
			// and be used: a span that has passed when it arrives is
			// of no use (a burst of 1 needs its whole span from the
			// later Consume's clock; a fast rate's chunk can be
			// shorter than a round trip).
			r.Want[i] = uint64(span + max(s.period, int64(minPoolSlack), min(2*c.rtt.Load(), int64(maxPoolSlack))))
			if held := int64(r.From[i]) - max(int64(vals[i]), now); 2*held >= span {
				// Half the span or more is still ahead (a denial that
				// asks again on old news): ask for no new span, which
				// would cost the rest of this one if another engine
				// has reserved past it.
				r.Want[i] = 0
			}
		} else {
			// The chunk less what this engine still holds, as in
			// lease mode without a Pool: it never holds more than a
			// chunk, which is what a crash may lose.
			r.Want[i] = uint64(chunk - min(chunk, heldOf(s, vals[i], r.From[i], now)))
		}
	}
	return r, true
}

// heldOf is quota.Limit.Held of a validated limit.
func heldOf(s *spec, v, h uint64, now int64) int64 {
	l := s.lim()
	return l.Held(v, h, now)
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
	if r.Stale || r.Gone {
		st.until.Store(0)
		st.news.Store(0)
		st.stale.Store(true) // read it again: changed, or deleted, elsewhere
	}
	if r.Revoked {
		for {
			w := atomic.LoadUint64(&ent.word)
			if w&revokedBit != 0 || atomic.CompareAndSwapUint64(&ent.word, w, w|revokedBit) {
				break
			}
		}
	}
	if r.Release || r.Gone || r.Stale || len(r.Start) != len(st.limits()) || len(r.Hard) != len(st.limits()) {
		return
	}
	for i := range st.limits() {
		s := &st.limits()[i]
		l := s.lim()
		m := ent.marks(i)
		cur := atomic.LoadUint64(&m.Hard)
		if i == 0 && !ent.multi() {
			// A pooled key of one limit (consumePooled) takes no lock:
			// no Consume may pair the new word with the old mark, or
			// the old word with the new one and succeed. With the mark
			// at 0 none grants; one that read the old word before
			// fails its CAS below once the word moves (and if it does
			// not move, the old word and mark still hold).
			atomic.StoreUint64(&m.Hard, 0)
		}
		from, start, hard := r.From[i], r.Start[i], r.Hard[i]
		var nh uint64
		var move func(v uint64) uint64
		switch l.Kind {
		case quota.Credits:
			move = func(v uint64) uint64 { return shift(v, start, from) }
			nh = hard - min(hard, from-min(from, cur)) // less what was refunded since
		case quota.Rate:
			switch {
			case start <= from:
				move = func(v uint64) uint64 { return v } // contiguous: what this engine held is still its own
				nh = hard - min(hard, from-min(from, cur))
			case r.Want[i] == 0:
				// A renewal of the lease only (reservation): what this
				// engine held is still its own.
				move = func(v uint64) uint64 { return v }
				nh = cur
				// The pool's arrival time is past this engine's end (the
				// span between is another's): a base at this end, which
				// is not the pool's arrival time, gives nothing back.
				r.Hard[i] = cur
			default:
				move = func(v uint64) uint64 { return max(v, start) } // another engine reserved in between: the rest is lost
				nh = hard
			}
		default:
			// The same as Credits, in counts of the pool's window (a
			// value or mark of another window counts 0 in it).
			tag := start >> quota.TagShift & quota.TagMask
			cnt := func(x uint64) uint64 {
				if x>>quota.TagShift&quota.TagMask != tag {
					return 0
				}
				return x & quota.UsedMask
			}
			move = func(v uint64) uint64 {
				return tag<<quota.TagShift | min(shift(cnt(v), start&quota.UsedMask, cnt(from)), quota.UsedMask)
			}
			nh = tag<<quota.TagShift | hard&quota.UsedMask - min(hard&quota.UsedMask, cnt(from)-min(cnt(from), cnt(cur)))
		}
		var nv uint64
		if i == 0 {
			for {
				w := atomic.LoadUint64(&ent.word)
				nv = move(w & quota.ValueMask)
				if atomic.CompareAndSwapUint64(&ent.word, w, w&flagBits|nv) {
					break
				}
			}
		} else {
			nv = move(st.ms.more[i-1].Load())
			st.ms.more[i-1].Store(nv)
		}
		atomic.StoreUint64(&m.Hard, nh)
		soft := l.Unbounded().Soft
		switch l.Kind {
		case quota.Credits:
			if nh < uint64(l.Quota) {
				soft = nh - (nh-min(nh, nv))/2
			}
		case quota.Rate:
			soft = nh // reserve when used up: a span reserved early is lost if another engine reserves in between
		default:
			if c, u := int64(nh&quota.UsedMask), int64(nv&quota.UsedMask); c < l.Quota {
				soft = nh&^quota.UsedMask | uint64(c-max(c-u, 0)/2)
			}
		}
		atomic.StoreUint64(&m.Soft, soft)
	}
	st.base = r.Hard
	if !r.Revoked && st.inval.Load() == r.inval {
		// Grants need the engine's lease too (Engine.leased).
		st.news.Store(t0 + int64(r.Lease-leaseMargin(r.Lease)))
		st.until.Store(math.MaxInt64)
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
func (e *Engine) sharedFlush(c *committer) error {
	var pend []*entry
	e.m.Range(func(_ string, ent *entry) bool {
		if ent.st.alias == nil && ent.st.base != nil {
			pend = append(pend, ent)
		}
		return true
	})
	const batch = 1024
	for len(pend) > 0 {
		k := min(len(pend), batch)
		b := newBatch()
		e.poolRound(c, pend[:k], make([]int64, k), nil, b, e.now(), true)
		if b.err != nil {
			return wrapStore("flush", b.err)
		}
		pend = pend[k:]
	}
	return nil
}
