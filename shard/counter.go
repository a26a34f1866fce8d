package shard

import "sync/atomic"

// Counter is an atomic 64-bit word alone on its cache line, so that CAS
// traffic on one counter never slows a neighbour (false sharing). Its zero
// value is a counter holding 0. A Counter must not be copied after first use.
type Counter struct {
	v atomic.Uint64
	_ [CacheLineSize - 8]byte
}

// Load atomically loads the counter's word.
func (c *Counter) Load() uint64 { return c.v.Load() }

// Store atomically stores w.
func (c *Counter) Store(w uint64) { c.v.Store(w) }

// CompareAndSwap atomically replaces old with new and reports whether it did.
func (c *Counter) CompareAndSwap(old, new uint64) bool { return c.v.CompareAndSwap(old, new) }

// Update applies f to the word in a CAS loop until it wins or f declines by
// returning ok == false. It returns the word it read last and f's result.
// f may run several times and must have no side effects.
func (c *Counter) Update(f func(old uint64) (new uint64, ok bool)) (old, new uint64, ok bool) {
	for {
		old = c.v.Load()
		new, ok = f(old)
		if !ok || c.v.CompareAndSwap(old, new) {
			return old, new, ok
		}
	}
}
