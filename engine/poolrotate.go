package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/allot-go/allot/shard"
)

// Rotation is Rotate of a key of a Pool: the chain's head Old, of
// registration Registration, goes to New (a name no key holds), which
// takes over the chain's counters; Old keeps drawing on them until
// Deadline (ns since the Unix epoch, on the engine's clock), or is revoked
// at once if Grace is false. Now is the engine's clock, which the pool
// compares with the deadlines of the chain's links to bound the chain
// (MaxRotationChain, as Rotate does without a Pool).
type Rotation struct {
	Old, New     KeyID
	Registration uint64
	Now          int64
	Deadline     int64
	Grace        bool
}

// poolLink is what an engine with a Pool keeps of a key rotated out: its
// chain's head and when the key stops working, the earliest grace deadline
// of the key and of every key after it in the chain (ns since the epoch,
// on the engine's clock). Consume checks it before each grant; the pool
// checks it again at each reservation, and revocations of links through
// the chain's pool.
type poolLink struct {
	head  KeyID
	until int64
}

// linkEnded reports whether st, a key of a Pool rotated out, is past its
// grace at now. The caller holds st's mutex.
func linkEnded(st *keyState, now int64) bool {
	return st.link != nil && now >= st.link.until
}

// rotateShared is Rotate with a Pool. The caller holds the admin lock
// shared and has checked the arguments.
func (e *Engine) rotateShared(ctx context.Context, oldKey, newKey string, grace time.Duration) error {
	if ent, err := e.lookup(ctx, oldKey); err != nil {
		return err
	} else if ent == nil {
		return fmt.Errorf("%w: rotate", ErrUnknownKey)
	}
	if ent, err := e.lookup(ctx, newKey); err != nil {
		return err
	} else if ent != nil {
		return fmt.Errorf("%w: rotate", ErrKeyExists)
	}
	e.m.LockPair(oldKey, newKey)
	defer e.m.UnlockPair(oldKey, newKey)
	if e.m.Load(newKey) != nil {
		return fmt.Errorf("%w: rotate", ErrKeyExists)
	}
	oe := e.m.Load(oldKey)
	switch {
	case oe == nil:
		return fmt.Errorf("%w: rotate", ErrUnknownKey)
	case oe.st.link != nil:
		return fmt.Errorf("%w: rotate", ErrRotated)
	}
	now := e.now()
	if now < 0 {
		return e.clockErr()
	}
	deadline := graceEnd(now, grace)
	revoked, _ := seal(oe)
	if revoked {
		unseal(oe)
		return fmt.Errorf("%w: rotate", ErrKeyRevoked)
	}
	oldID, newID := IDOf(oldKey), IDOf(newKey)
	err := e.pool.Rotate(ctx, Rotation{Old: oldID, New: newID, Registration: oe.st.reg, Now: now, Deadline: deadline, Grace: grace > 0})
	if err != nil {
		unseal(oe)
		for _, s := range []error{ErrUnknownKey, ErrKeyExists, ErrKeyRevoked, ErrRotated, ErrRotationChain, ErrClosed} {
			if errors.Is(err, s) {
				return err
			}
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return fmt.Errorf("allot: rotate: %w", err)
		}
		return wrapStore("rotate", err)
	}
	// The pool holds the rotation: both keys are read again from it (old
	// stays sealed for good; what it held is lost, at most a chunk per
	// limit). A key that cannot be read now is read at its next use.
	e.neg.m.Delete(newID)
	track := oe.st.track.Load()
	for _, k := range []struct {
		key string
		id  KeyID
	}{{newKey, newID}, {oldKey, oldID}} {
		rec, ok, lerr := e.pool.Lookup(ctx, k.id)
		var ne entry
		if lerr == nil && ok {
			ne, lerr = e.pooledEntry(rec, false)
		}
		if lerr != nil || !ok {
			e.m.Delete(k.key)
			e.ids.Delete(k.id)
			continue
		}
		if track != nil {
			ne.st.track.Store(track)
		}
		stored := e.m.Store(k.key, ne)
		e.ids.Store(k.id, shard.KeyOf(stored))
	}
	return nil
}
