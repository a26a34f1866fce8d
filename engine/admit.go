package engine

import (
	"context"
	"fmt"
	"time"
)

// Admission is a request admitted by Admit. Call Done when the request has
// finished; RevokeAndWait waits for it. The zero Admission (returned with a
// denial) has a Done that does nothing.
type Admission struct{ t *tracker }

// Done marks the admitted request as finished. Call it once.
func (a Admission) Done() {
	if a.t != nil {
		a.t.n.Add(-1)
	}
}

// Admit is Consume for a request that will run for a while: if the units are
// granted, the request counts as in flight until Done, so that
// RevokeAndWait can wait for it. It does not allocate once a key has been
// admitted before.
func (e *Engine) Admit(ctx context.Context, key string, n int64) (Decision, Admission, error) {
	if e.closed.Load() {
		return Decision{}, Admission{}, ErrClosed
	}
	if err := checkKey(key); err != nil {
		return Decision{}, Admission{}, err
	}
	if err := checkAmount(n); err != nil {
		return Decision{}, Admission{}, err
	}
	ent, err := e.find(ctx, key)
	if err != nil {
		return Decision{}, Admission{}, err
	}
	if ent == nil {
		if c := e.count; c != nil {
			c.unknown.Inc()
		}
		return Decision{Reason: UnknownKey}, Admission{}, nil
	}
	t := ent.st.track.Load()
	if t == nil {
		if t, err = e.tracker(key); err != nil {
			return Decision{}, Admission{}, err
		} else if t == nil {
			if c := e.count; c != nil {
				c.unknown.Inc()
			}
			return Decision{Reason: UnknownKey}, Admission{}, nil
		}
	}
	// Counted before the consume: a Revoke that lands after the grant then
	// finds the request counted.
	t.n.Add(1)
	d, err := e.Consume(ctx, key, n)
	if err != nil || !d.Allowed {
		t.n.Add(-1)
		return d, Admission{}, err
	}
	return d, Admission{t: t}, nil
}

// tracker returns the tracker of the head of key's chain (key itself if it
// was not rotated out), creating it under the head's stripe lock so that a
// concurrent change (which copies the pointer under the same lock) keeps it.
// Nil if key or its head is unknown. It publishes an entry, so it takes the
// admin lock shared and fails with ErrClosed after Close.
func (e *Engine) tracker(key string) (*tracker, error) {
	e.admin.RLock()
	defer e.admin.RUnlock()
	if e.closed.Load() {
		return nil, ErrClosed
	}
	for range maxHops {
		ent, err := e.lookup(context.Background(), key)
		if ent == nil {
			return nil, err
		}
		if ent.kind() == 0 {
			k, t := e.resolve(ent.st.alias)
			if t == nil {
				return nil, nil
			}
			key = k
		}
		if t, ok := e.headTracker(key); ok {
			return t, nil
		}
	}
	return nil, nil
}

// headTracker returns the tracker of key, a head, creating it; ok is false if
// key is not (or no longer) a head.
func (e *Engine) headTracker(key string) (*tracker, bool) {
	e.m.Lock(key)
	defer e.m.Unlock(key)
	ent := e.m.Load(key)
	if ent == nil || ent.kind() == 0 {
		return nil, false
	}
	st := ent.st
	if t := st.track.Load(); t != nil {
		return t, true
	}
	t := new(tracker)
	if st == sharedOf(st) {
		// The key shares its state with others of its plan: give it its
		// own, by the same seal-and-replace as any change.
		revoked, vals := seal(ent)
		own := &keyState{plan: st.plan, chain: st.chain, origin: st.origin, reg: st.reg}
		own.track.Store(t)
		e.m.Store(key, e.newEntry(own, revoked, vals, 0)) // no Store: no reservation, no clock
		return t, true
	}
	st.track.Store(t)
	return t, true
}

// trackerOf returns the tracker that counts key's requests in flight, if
// there is one yet: its head's.
func (e *Engine) trackerOf(key string) *tracker {
	ent, _ := e.findLocal(key)
	if ent == nil {
		return nil
	}
	if ent.kind() == 0 {
		if _, ent = e.resolve(ent.st.alias); ent == nil {
			return nil
		}
	}
	return ent.st.track.Load()
}

// InFlight returns the number of requests admitted for key and not yet Done.
// A key and the keys rotated to it (its chain) share one count.
func (e *Engine) InFlight(key string) int64 {
	if checkKey(key) != nil {
		return 0
	}
	if t := e.trackerOf(key); t != nil {
		return t.n.Load()
	}
	return 0
}

// RevokeAndWait revokes key, then waits until every request admitted for it
// (by Admit) has called Done, or until ctx ends. Once it returns nil, no
// request of the key is running or will run. It returns ctx's error if ctx
// ended first; the key is revoked all the same. The requests of a chain of
// rotated keys count together, also across restarts: RevokeAndWait of any
// key of a chain waits for the requests admitted through every key of it.
func (e *Engine) RevokeAndWait(ctx context.Context, key string) error {
	if err := e.Revoke(ctx, key); err != nil {
		return err
	}
	t := e.trackerOf(key)
	if t == nil {
		return nil
	}
	wait := time.Microsecond
	var timer *time.Timer
	for t.n.Load() > 0 {
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("allot: revoked, but requests still in flight: %w", ctx.Err())
		case <-timer.C:
		}
		wait = min(2*wait, 5*time.Millisecond)
	}
	return nil
}
