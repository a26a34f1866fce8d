package engine

import (
	"sync/atomic"
)

// regOf returns the registration an entry carries: its chain's.
func regOf(ent *entry) uint64 {
	if ent.st.alias != nil {
		return ent.st.alias.reg
	}
	return ent.st.reg
}

// next returns the entry a rotated-out key's entry points to, nil if there
// is none or it is another registration of the name (the one the chain went
// to was deleted).
func (e *Engine) next(ent *entry) *entry {
	a := ent.st.alias
	t := e.m.Load(a.target)
	if t == nil || regOf(t) != a.reg {
		return nil
	}
	return t
}

// maxHops bounds a walk along a rotation chain: MaxRotationChain links,
// each of which may have a forwarding entry after a restart, and the head.
const maxHops = 2*MaxRotationChain + 2

// resolve follows a rotated-out key to its head, the key that owns its
// counters, whether or not the chain is still alive; nil if there is none.
func (e *Engine) resolve(a *alias) (string, *entry) {
	key, reg := a.target, a.reg
	for range maxHops {
		t := e.m.Load(key)
		if t == nil || regOf(t) != reg {
			return key, nil
		}
		if t.kind() != 0 {
			return key, t
		}
		key = t.st.alias.target
	}
	return key, nil
}

// alive reports whether a rotated-out key may still consume through its
// chain at now: no link revoked or past its grace.
func (e *Engine) alive(ent *entry, now int64) bool {
	for range maxHops {
		if ent.kind() != 0 {
			return atomic.LoadUint64(&ent.word)&revokedBit == 0
		}
		a := ent.st.alias
		if atomic.LoadUint64(&ent.word)&revokedBit != 0 || (!a.forward && now >= a.deadline) {
			return false
		}
		if ent = e.next(ent); ent == nil {
			return false
		}
	}
	return false
}
