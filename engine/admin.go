package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine/internal/quota"
	"github.com/allot-go/allot/shard"
)

// newReg returns a registration number: random, so that it is unique across
// restarts too, and never 0.
func newReg() uint64 { return rand.Uint64() | 1 }

// beginAdmin starts an administrative call: it fails after Close or with a
// context already done, and keeps Close waiting until endAdmin.
func (e *Engine) beginAdmin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("allot: %w", err)
	}
	e.admin.RLock()
	if e.closed.Load() {
		e.admin.RUnlock()
		return ErrClosed
	}
	return nil
}

func (e *Engine) endAdmin() { e.admin.RUnlock() }

// newEntry builds the entry for st with the given revoked flag and values
// (none for a rotated-out key). With leases, each limit gets a fresh
// reservation beyond its value, which the caller makes durable (by saving
// the entry) before it publishes it.
func (e *Engine) newEntry(st *keyState, revoked bool, vals []uint64, now int64) entry {
	if e.c == nil && st.alias == nil && len(st.limits()) == 1 && st.track.Load() == nil && st.chain.depth == 0 && st.origin == nil {
		// Nothing of the keyState is the key's own (a key just
		// registered): share its plan's.
		st = st.plan.shared
	}
	if st.origin == nil {
		st.origin = st // limits set here: Register, SetLimits, a restart
	}
	ent := entry{st: st}
	if st.alias == nil {
		s0 := &st.limits()[0]
		ent.qm = uint64(s0.quota) | uint64(s0.kind)<<kindShift
		if n := len(st.limits()); n == 1 && e.pool != nil && st.link == nil {
			ent.qm |= pooledBit
		} else if n > 1 || e.pool != nil {
			// Several limits, or a rotated-out key of a Pool (whose
			// grace consumeMulti checks): the key's mutex.
			ent.qm |= 1 << multiShift
			st.ms = &multiState{more: make([]shard.Counter, n-1), leases: make([]quota.Marks, n)}
			for i := 1; i < n; i++ {
				st.ms.more[i-1].Store(vals[i])
			}
		}
		ent.period = s0.period
		ent.word = vals[0]
		for i := range st.limits() {
			l := st.limits()[i].lim()
			m := l.Unbounded()
			switch {
			case e.pool != nil:
				m = l.Exhausted(vals[i]) // reservations come from the pool
			case e.leased:
				st.chunk = e.c.env.opts.MinChunk
				m = l.Reserve(vals[i], l.Exhausted(vals[i]).Hard, st.chunk, now)
			}
			*ent.marks(i) = m
		}
	}
	if e.pool != nil && st.alias == nil {
		st.chunk = e.c.env.opts.MinChunk
		st.base = append([]uint64(nil), vals...)
	}
	if revoked {
		ent.word |= revokedBit
	}
	return ent
}

// save makes the records of entries not published yet (or sealed) durable,
// if there is a Store: keys[i] is the key of ents[i]. If ctx ends before a
// round has handed the records to the store, they are taken back and save
// returns ctx's error: nothing was written. Once they are with the store,
// save waits for the outcome, so that a change that may land is never
// reported as not made.
func (e *Engine) save(ctx context.Context, keys []string, ents ...*entry) error {
	if e.c == nil {
		return nil
	}
	recs := make([]Record, len(ents))
	for i, ent := range ents {
		recs[i] = recordOf(ent, idOfKey(keys[i]), e.leased)
	}
	return e.saveRecords(ctx, recs...)
}

// saveRecords is save of records already built.
func (e *Engine) saveRecords(ctx context.Context, recs ...Record) error {
	if e.c == nil {
		return nil
	}
	w := &pendingWrite{recs: recs}
	b := e.c.write(w)
	select {
	case <-b.done:
	case <-ctx.Done():
		if e.c.cancel(w) {
			return fmt.Errorf("allot: waiting for the store: %w", ctx.Err())
		}
		<-b.done
	}
	err := b.err
	if err == nil {
		err = w.err
	}
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return ErrClosed
		}
		return wrapStore("", err)
	}
	return nil
}

// Register adds key with the given limits, all full. A key that exists, even
// revoked or rotated out, gives ErrKeyExists. With a Store, the key is
// durable before Register returns.
func (e *Engine) Register(ctx context.Context, key string, limits ...Limit) error {
	specs, err := validateLimits(limits)
	if err != nil {
		return err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if err := e.beginAdmin(ctx); err != nil {
		return err
	}
	defer e.endAdmin()
	if ent, err := e.lookup(ctx, key); err != nil {
		return err
	} else if ent != nil {
		return fmt.Errorf("%w: register", ErrKeyExists)
	}
	e.m.Lock(key)
	defer e.m.Unlock(key)
	if e.m.Load(key) != nil {
		return fmt.Errorf("%w: register", ErrKeyExists)
	}
	now := e.now()
	if now < 0 {
		return e.clockErr()
	}
	vals := make([]uint64, len(specs))
	for i := range specs {
		l := specs[i].lim()
		vals[i] = l.Initial(now)
	}
	ent := e.newEntry(&keyState{plan: e.intern(specs), reg: newReg()}, false, vals, now)
	if err := e.save(ctx, []string{key}, &ent); err != nil {
		return err
	}
	stored := e.m.Store(key, ent)
	if e.pool != nil {
		e.neg.m.Delete(IDOf(key))
		e.ids.Store(IDOf(key), shard.KeyOf(stored))
	}
	return nil
}

// Revoke revokes key. Once Revoke returns, every Consume of key is denied
// with Reason Revoked; with a Store, this holds across restarts. Revoking
// the key a key was rotated to also ends the old key's grace. Revoking a
// revoked key does nothing.
//
// A context already done changes nothing. The revocation takes effect in
// memory before it is written: if ctx ends or the store fails while Revoke
// waits for the write, Revoke returns that error, and the key is revoked in
// this process all the same (call Revoke again to make it durable).
func (e *Engine) Revoke(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return e.revoke(ctx, key)
}

func (e *Engine) revoke(ctx context.Context, key string) error {
	if err := e.beginAdmin(ctx); err != nil {
		return err
	}
	defer e.endAdmin()
	if ent, err := e.lookup(ctx, key); err != nil {
		return err
	} else if ent == nil {
		return fmt.Errorf("%w: revoke", ErrUnknownKey)
	}
	e.m.Lock(key)
	defer e.m.Unlock(key)
	ent := e.m.Load(key)
	if ent.kind() == 0 {
		ent.st.mu.Lock() // waits for the alias's in-flight Consume
	}
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&revokedBit != 0 || atomic.CompareAndSwapUint64(&ent.word, w, w|revokedBit) {
			break
		}
	}
	if ent.kind() == 0 {
		ent.st.mu.Unlock()
	}
	// The flag is set in memory first: if the store fails, the key stays
	// revoked in this process and the caller learns it may not be on disk.
	if e.c == nil {
		return nil
	}
	b := e.c.request(ent, 0)
	select {
	case <-b.done:
	case <-ctx.Done():
		return fmt.Errorf("allot: revoked in memory, waiting for the store: %w", ctx.Err())
	}
	if b.err != nil {
		return wrapStore("revoke", b.err)
	}
	if e.pool != nil {
		// Other engines may hold reservations of the key: wait until
		// none of them can grant from one.
		if err := e.pool.Quiesce(ctx, idOfKey(key)); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("allot: revoked, waiting for the other engines: %w", ctx.Err())
			}
			return wrapStore("revoke", err)
		}
	}
	return nil
}

// seal freezes ent's words, so that no Consume or Refund changes them, and
// returns the revoked flag and the value of each limit. The caller holds the
// stripe's lock, publishes a replacement (or calls unseal), and so releases
// the Consumes that wait on a sealed entry.
func seal(ent *entry) (revoked bool, vals []uint64) {
	st := ent.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var w uint64
	for {
		w = atomic.LoadUint64(&ent.word)
		if atomic.CompareAndSwapUint64(&ent.word, w, w|sealedBit) {
			break
		}
	}
	vals = make([]uint64, len(st.limits()))
	if len(vals) > 0 {
		vals[0] = w & valueMask
	}
	for i := 1; i < len(vals); i++ {
		vals[i] = st.ms.more[i-1].Load()
	}
	return w&revokedBit != 0, vals
}

// freeze seals ent for Close, as seal does, without reading its values or
// allocating: a key of one limit needs only the CAS, for every other writer
// of its word CASes it too; a key with several limits, or a rotated-out
// key, takes its mutex, so that a Consume that holds it finishes first.
func freeze(ent *entry) {
	if ent.multi() || ent.kind() == 0 {
		ent.st.mu.Lock()
		defer ent.st.mu.Unlock()
	}
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&sealedBit != 0 || atomic.CompareAndSwapUint64(&ent.word, w, w|sealedBit) {
			return
		}
	}
}

// unseal undoes seal after a failed change. Nothing else writes a sealed
// word, so a plain store is safe.
func unseal(ent *entry) {
	atomic.StoreUint64(&ent.word, atomic.LoadUint64(&ent.word)&^sealedBit)
}

// change replaces key's entry with the result of f, which receives the
// current entry's revoked flag and values. f returns the new keyState and
// values, or an error, in which case nothing changes.
func (e *Engine) change(ctx context.Context, key, op string, f func(ent *entry, revoked bool, vals []uint64, now int64) (*keyState, []uint64, error)) error {
	if e.pool != nil {
		return e.changeShared(ctx, key, op, false, f)
	}
	if err := e.beginAdmin(ctx); err != nil {
		return err
	}
	defer e.endAdmin()
	if e.held(key) == nil {
		return fmt.Errorf("%w: %s", ErrUnknownKey, op)
	}
	e.m.Lock(key)
	defer e.m.Unlock(key)
	ent := e.m.Load(key)
	if ent.kind() == 0 {
		return fmt.Errorf("%w: %s", ErrRotated, op)
	}
	now := e.now()
	if now < 0 {
		return e.clockErr()
	}
	revoked, vals := seal(ent)
	st, nvals, err := f(ent, revoked, vals, now)
	if err == nil {
		st.track.Store(ent.st.track.Load())
		st.chain, st.reg = ent.st.chain, ent.st.reg
		if st.origin == nil {
			st.origin = ent.st.origin // limits kept (TopUp)
		}
		ne := e.newEntry(st, revoked, nvals, now)
		if err = e.save(ctx, []string{key}, &ne); err == nil {
			e.m.Store(key, ne)
			return nil
		}
	}
	unseal(ent)
	return err
}

// SetLimits replaces key's limits. Spending carries over between limits of
// the same name and kind, through any sequence of changes: a Credits limit
// keeps the units spent (so its balance is the new quota minus the units
// spent, and 0 while they exceed it), a window keeps the units used in the
// window that holds now (also when its period or time zone changes), a Rate
// keeps its debt, in units, even beyond the new burst. Other limits start
// full. A revoked key stays revoked.
func (e *Engine) SetLimits(ctx context.Context, key string, limits ...Limit) error {
	specs, err := validateLimits(limits)
	if err != nil {
		return err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	return e.change(ctx, key, "set limits", func(ent *entry, _ bool, vals []uint64, now int64) (*keyState, []uint64, error) {
		old := ent.st.limits()
		nvals := make([]uint64, len(specs))
		for i := range specs {
			l := specs[i].lim()
			nvals[i] = l.Initial(now)
			for j := range old {
				if old[j].Name() == specs[i].Name() {
					from := old[j].lim()
					nvals[i] = l.Carry(&from, vals[j], now)
				}
			}
		}
		st := &keyState{plan: e.intern(specs)}
		st.origin = st // new limits: grants made before give nothing back
		return st, nvals, nil
	})
}

// TopUp adds n units to the quota of every Credits limit of key, and so to
// its balance. It returns ErrNoCredits if the key has none.
func (e *Engine) TopUp(ctx context.Context, key string, n int64) error {
	if err := checkAmount(n); err != nil {
		return err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	return e.topUp(ctx, key, n)
}

func (e *Engine) topUp(ctx context.Context, key string, n int64) error {
	return e.change(ctx, key, "top up", func(ent *entry, _ bool, vals []uint64, _ int64) (*keyState, []uint64, error) {
		specs := append([]spec(nil), ent.st.limits()...)
		nvals := append([]uint64(nil), vals...)
		found := false
		for i := range specs {
			if specs[i].kind != KindCredits {
				continue
			}
			found = true
			if n > MaxCredits-specs[i].quota {
				return nil, nil, fmt.Errorf("%w: top up %d: %s would exceed %d", ErrInvalidAmount, n, specs[i].Name(), int64(MaxCredits))
			}
			specs[i].quota += n // the units spent stay as they are
		}
		if !found {
			return nil, nil, fmt.Errorf("%w: top up", ErrNoCredits)
		}
		return &keyState{plan: e.intern(specs)}, nvals, nil
	})
}

// graceEnd returns when a grace of the given length that starts at now
// ends (ns since the epoch), at the latest time an int64 holds.
func graceEnd(now int64, grace time.Duration) int64 {
	if grace < time.Duration(math.MaxInt64-now) {
		return now + int64(grace)
	}
	return math.MaxInt64
}

// Rotate replaces oldKey by newKey. newKey takes over oldKey's limits and
// counters; oldKey keeps drawing on the same counters until grace has
// passed, and is revoked from then on (at once if grace is 0). Revoke of
// oldKey ends its grace early; Revoke of newKey ends both.
//
// Rotating newKey in turn makes a chain: the oldest key then works while
// every key after it in the chain is in its grace and not revoked. A chain
// of keys still in their grace holds at most MaxRotationChain rotations:
// Rotate with a grace, of a key that ends a full chain, returns
// ErrRotationChain. A rotation with no grace ends every chain through it.
func (e *Engine) Rotate(ctx context.Context, oldKey, newKey string, grace time.Duration) error {
	if err := checkKey(newKey); err != nil {
		return err
	}
	if grace < 0 {
		return fmt.Errorf("%w: grace %v is negative", ErrInvalidAmount, grace)
	}
	if oldKey == newKey {
		return fmt.Errorf("%w: rotate to the same key", ErrKeyExists)
	}
	if err := checkKey(oldKey); err != nil {
		return err
	}
	if err := e.beginAdmin(ctx); err != nil {
		return err
	}
	defer e.endAdmin()
	if e.pool != nil {
		return e.rotateShared(ctx, oldKey, newKey, grace)
	}
	if e.held(oldKey) == nil {
		return fmt.Errorf("%w: rotate", ErrUnknownKey)
	}
	if e.held(newKey) != nil {
		return fmt.Errorf("%w: rotate", ErrKeyExists)
	}
	e.m.LockPair(oldKey, newKey)
	defer e.m.UnlockPair(oldKey, newKey)
	if e.m.Load(newKey) != nil {
		return fmt.Errorf("%w: rotate", ErrKeyExists)
	}
	oe := e.m.Load(oldKey)
	if oe.kind() == 0 {
		return fmt.Errorf("%w: rotate", ErrRotated)
	}
	now := e.now()
	if now < 0 {
		return e.clockErr()
	}
	chain := chainInfo{}
	if grace > 0 {
		chain.depth = 1
		if now < oe.st.chain.until {
			chain.depth += oe.st.chain.depth
		}
	}
	revoked, vals := seal(oe)
	if revoked {
		unseal(oe)
		return fmt.Errorf("%w: rotate", ErrKeyRevoked)
	}
	if chain.depth > MaxRotationChain {
		unseal(oe)
		return fmt.Errorf("%w: the key ends a chain of %d rotations in grace", ErrRotationChain, chain.depth-1)
	}
	deadline := graceEnd(now, grace)
	if grace > 0 {
		chain.until = max(oe.st.chain.until, deadline)
	}
	// The new key takes over the requests in flight: requests admitted
	// through oldKey from now on count there too (only a chain's head has
	// a tracker), so RevokeAndWait of either waits for both.
	reg := oe.st.reg
	if reg == 0 {
		reg = newReg() // a key that shared its plan's state gets one now
	}
	nst := &keyState{plan: oe.st.plan, chain: chain, origin: oe.st.origin, reg: reg}
	nst.track.Store(oe.st.track.Load())
	ne := e.newEntry(nst, false, vals, now)
	ast := &keyState{alias: &alias{target: newKey, targetID: IDOf(newKey), deadline: deadline, reg: reg}}
	ae := e.newEntry(ast, grace == 0, nil, now)
	if err := e.save(ctx, []string{newKey, oldKey}, &ne, &ae); err != nil {
		unseal(oe)
		return err
	}
	e.m.Store(newKey, ne)
	e.m.Store(oldKey, ae)
	return nil
}
