package engine

import (
	"context"
	"fmt"
	"iter"
	"sync/atomic"
)

// Delete forgets key: its counters, its revocation and, with a Store, its
// record. Like Revoke it is linearizable: once Delete returns, no Consume is
// granted under the old registration, and a new Register of the name starts
// from nothing. With a Store the deletion is durable before Delete returns.
//
// Deleting a rotated-out key removes it: the key it was rotated to goes on,
// and keys rotated out before it (older links of its chain) have nothing to
// draw through and are denied as Revoked. Deleting a key that keys were
// rotated to ends their grace the same way: they are denied as Revoked, and
// never reach a later registration of the same name. Delete them too to free
// their memory. A revoked key stays revoked until it is deleted.
func (e *Engine) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return e.delete(ctx, key)
}

// DeleteID is Delete of the key with the given ID, for a key listed by Keys.
func (e *Engine) DeleteID(ctx context.Context, id KeyID) error {
	return e.byID(ctx, id, e.delete)
}

func (e *Engine) delete(ctx context.Context, key string) error {
	if e.pool != nil {
		return e.changeShared(ctx, key, "delete", true, nil)
	}
	if err := e.beginAdmin(ctx); err != nil {
		return err
	}
	defer e.endAdmin()
	if e.held(key) == nil {
		return fmt.Errorf("%w: delete", ErrUnknownKey)
	}
	// A promoted key leaves a forwarding entry under its ID: it goes too.
	rk := idKey(idOfKey(key))
	e.m.LockPair(key, rk)
	defer e.m.UnlockPair(key, rk)
	ent := e.m.Load(key)
	seal(ent) // takes the key's mutex: waits for an alias's Consume in flight
	if err := e.saveRecords(ctx, Record{ID: idOfKey(key), Deleted: true}); err != nil {
		unseal(ent)
		return err
	}
	// The entry stays sealed for good: a Consume that loaded it waits on
	// the stripe lock, looks the key up again and finds nothing.
	e.m.Delete(key)
	if key == rk {
		e.recovering.Add(-1) // never promoted now
	} else if f := e.m.Load(rk); f != nil && f.st.alias != nil && f.st.alias.forward {
		e.m.Delete(rk)
	}
	return nil
}

// Reset puts every limit of key back to full: Credits to their quota (no
// unit spent), windows to no unit used, a Rate's bucket full. A revoked key
// stays revoked. Grants made before Reset are not refunded after it (their
// units were spent in the limits Reset cleared).
func (e *Engine) Reset(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return e.reset(ctx, key)
}

// ResetID is Reset of the key with the given ID.
func (e *Engine) ResetID(ctx context.Context, id KeyID) error {
	return e.byID(ctx, id, e.reset)
}

func (e *Engine) reset(ctx context.Context, key string) error {
	return e.change(ctx, key, "reset", func(ent *entry, _ bool, _ []uint64, now int64) (*keyState, []uint64, error) {
		nvals := make([]uint64, len(ent.st.limits()))
		for i := range ent.st.limits() {
			l := ent.st.limits()[i].lim()
			nvals[i] = l.Initial(now)
		}
		st := &keyState{plan: ent.st.plan}
		st.origin = st // what was spent is gone: older grants give nothing back
		return st, nvals, nil
	})
}

// RevokeID is Revoke of the key with the given ID: an operator who sees a
// leaked key's ID (in a listing, a log of IDs) can revoke it without the raw
// key.
func (e *Engine) RevokeID(ctx context.Context, id KeyID) error {
	return e.byID(ctx, id, e.revoke)
}

// TopUpID is TopUp of the key with the given ID.
func (e *Engine) TopUpID(ctx context.Context, id KeyID, n int64) error {
	if err := checkAmount(n); err != nil {
		return err
	}
	return e.byID(ctx, id, func(ctx context.Context, key string) error { return e.topUp(ctx, key, n) })
}

// StatusID is Status of the key with the given ID.
func (e *Engine) StatusID(id KeyID) (Status, error) {
	key, ok := e.keyOfID(id)
	if !ok {
		return Status{}, fmt.Errorf("%w: status", ErrUnknownKey)
	}
	s, err := e.status(nil, key)
	if err == nil && s.Limits == nil {
		s.Limits = []LimitStatus{}
	}
	return s, err
}

// byID runs f, an administrative call, on the map key of id.
func (e *Engine) byID(ctx context.Context, id KeyID, f func(context.Context, string) error) error {
	key, ok := e.keyOfID(id)
	if !ok {
		if e.closed.Load() {
			return ErrClosed
		}
		return fmt.Errorf("%w: no key with ID %x", ErrUnknownKey, id[:4])
	}
	return f(ctx, key)
}

// keyOfID finds the map key of the key with ID id: the recovered record held
// under the ID, the key its forwarding entry points to, or else a raw key
// whose digest is id. That last search hashes every key the engine holds:
// by-ID calls are for operators, not for the request path.
func (e *Engine) keyOfID(id KeyID) (string, bool) {
	rk := idKey(id)
	if ent := e.m.Load(rk); ent != nil {
		if a := ent.st.alias; a != nil && a.forward {
			return a.target, e.m.Load(a.target) != nil
		}
		return rk, true
	}
	var found string
	e.m.Range(func(k string, _ *entry) bool {
		if k[0] != recoveredPrefix[0] && IDOf(k) == id {
			found = k
			return false
		}
		return true
	})
	return found, found != ""
}

// KeyInfo is a key as Keys lists it: by ID, never by its raw key.
type KeyInfo struct {
	ID KeyID
	// Recovered reports a key loaded from the store and not named by any
	// call since the restart.
	Recovered bool
	Status
}

// Keys returns an iterator over the keys the engine holds, with their state:
// registered, revoked, rotated out, and recovered keys not yet named since a
// restart, each once, in no particular order. It takes no lock: Consume goes
// on while it runs, and each key's state is read at the moment it is listed.
// A key registered or deleted while it runs may be listed or not. Each key
// costs one SHA-256 (for its ID).
func (e *Engine) Keys() iter.Seq[KeyInfo] {
	return func(yield func(KeyInfo) bool) {
		e.m.Range(func(k string, ent *entry) bool {
			if a := ent.st.alias; a != nil && a.forward {
				return true
			}
			if atomic.LoadUint64(&ent.word)&sealedBit != 0 && e.m.Load(k) != ent {
				return true // deleted, or replaced since Range saw it
			}
			info := KeyInfo{ID: idOfKey(k), Recovered: k[0] == recoveredPrefix[0]}
			s, err := e.status(nil, k)
			if err != nil {
				return true // deleted meanwhile, or the clock is out of range
			}
			if s.Limits == nil {
				s.Limits = []LimitStatus{}
			}
			info.Status = s
			return yield(info)
		})
	}
}
