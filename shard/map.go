// Package shard holds the engine's building blocks: a lock-striped hash map
// with lock-free lookups, and cache-line padded atomic counters. It is public
// so that its design can be read and measured on its own, but it is shaped
// by package engine and promises nothing beyond what the engine needs; it is
// not a general-purpose concurrent map. In particular a Map's writers must
// hold the key's stripe lock (Lock, LockPair) around Store and Delete, which
// lets the engine seal a key, write it to its store and publish its new
// entry as one step; Node and KeyOf exist so that the engine can lay out and
// find its entries in place. For a general concurrent map use sync.Map or
// github.com/puzpuzpuz/xsync.
//
// It does no I/O, knows nothing of quotas and imports only the standard
// library; package engine puts the policy on top.
package shard

import (
	"errors"
	"hash/maphash"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// CacheLineSize is the size, in bytes, that hot values are padded to so that
// two of them never share a cache line (false sharing). 64 bytes covers x86-64
// and most arm64 cores.
const CacheLineSize = 64

// MaxStripes is the largest number of stripes a Map accepts.
const MaxStripes = 1 << 16

// ErrInvalidStripes is returned by New when the stripe count is not a power of
// two between 1 and MaxStripes.
var ErrInvalidStripes = errors.New("allot: stripe count must be a power of two between 1 and 65536")

// Map is a hash map from string keys to values of type V, split into stripes.
//
// Lookups (Load, Range) take no lock at all: each stripe publishes an
// open-addressing table through an atomic pointer, and each slot is an atomic
// pointer to an immutable node. Structural changes (Store, Delete) are made by
// a caller that holds the stripe's mutex (Lock/Unlock), so writers to
// different stripes never contend and readers never wait for writers.
//
// Values are stored inline in their node: Load returns a pointer into the
// node, so a lookup and the value's first fields share a cache line. A Store
// of an existing key publishes a new node; readers that loaded the old one
// keep a valid pointer to the old value.
//
// Keys are hashed with hash/maphash under a seed drawn for each Map, so an
// attacker cannot choose keys that collide (hash flooding).
//
// A Map must be created with New. All methods are safe for concurrent use,
// with the locking rules stated on each.
type Map[V any] struct {
	seed    maphash.Seed
	shift   uint     // 64 - log2(len(stripes)): the stripe is the hash's top bits
	tomb    *Node[V] // marks a deleted slot, so that probe chains stay unbroken
	stripes []stripe[V]
}

type stripe[V any] struct {
	mu    sync.Mutex
	tab   atomic.Pointer[table[V]]
	live  int // nodes in tab, guarded by mu
	dead  int // tombstones in tab, guarded by mu
	count atomic.Int64
	_     [CacheLineSize - 40]byte
}

type table[V any] struct {
	mask  uint64
	slots []slot[V]
}

// slot holds a node and its hash side by side, so that a probe compares
// hashes within the table's cache lines and dereferences only the node whose
// hash matches. The node pointer is what says whether the slot is used: a
// writer stores the hash first, and a reader checks the key on the node.
type slot[V any] struct {
	hash atomic.Uint64
	node atomic.Pointer[Node[V]]
}

// Node is one key and its value. Its key is immutable. (The key's hash is
// kept in the table's slot, not here, so a node costs only the key header
// beside its value.)
type Node[V any] struct {
	key   string
	Value V
}

// New returns an empty Map with the given number of stripes, which must be a
// power of two between 1 and MaxStripes.
func New[V any](stripes int) (*Map[V], error) {
	m := new(Map[V])
	if err := m.Init(stripes); err != nil {
		return nil, err
	}
	return m, nil
}

// Init makes m an empty Map with the given number of stripes, for a Map
// embedded by value in another struct (one pointer less on every lookup).
// It must be called once, before any other method.
func (m *Map[V]) Init(stripes int) error {
	if stripes < 1 || stripes > MaxStripes || stripes&(stripes-1) != 0 {
		return ErrInvalidStripes
	}
	m.seed = maphash.MakeSeed()
	m.shift = uint(64 - bits.TrailingZeros(uint(stripes)))
	m.tomb = new(Node[V])
	m.stripes = make([]stripe[V], stripes)
	for i := range m.stripes {
		m.stripes[i].tab.Store(newTable[V](8))
	}
	return nil
}

func newTable[V any](size int) *table[V] {
	return &table[V]{mask: uint64(size - 1), slots: make([]slot[V], size)}
}

func (m *Map[V]) hash(key string) uint64 { return maphash.String(m.seed, key) }

func (m *Map[V]) stripeOf(h uint64) *stripe[V] {
	return &m.stripes[h>>m.shift] // a shift by 64 (one stripe) yields 0
}

// Load returns a pointer to the value stored for key, or nil. It takes no
// lock and does not allocate.
func (m *Map[V]) Load(key string) *V {
	h := m.hash(key)
	t := m.stripeOf(h).tab.Load()
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		n := s.node.Load()
		if n == nil {
			return nil
		}
		if s.hash.Load() == h && n.key == key && n != m.tomb {
			return &n.Value
		}
	}
}

// Lock locks the stripe that holds key. Store and Delete for key require it.
func (m *Map[V]) Lock(key string) { m.stripeOf(m.hash(key)).mu.Lock() }

// Unlock unlocks the stripe that holds key.
func (m *Map[V]) Unlock(key string) { m.stripeOf(m.hash(key)).mu.Unlock() }

// LockPair locks the stripes of a and b, once if they share one, in a fixed
// order so that two LockPair calls never deadlock.
func (m *Map[V]) LockPair(a, b string) {
	sa, sb := m.stripeOf(m.hash(a)), m.stripeOf(m.hash(b))
	if sa == sb {
		sa.mu.Lock()
		return
	}
	if m.index(sa) > m.index(sb) {
		sa, sb = sb, sa
	}
	sa.mu.Lock()
	sb.mu.Lock()
}

// UnlockPair undoes LockPair(a, b).
func (m *Map[V]) UnlockPair(a, b string) {
	sa, sb := m.stripeOf(m.hash(a)), m.stripeOf(m.hash(b))
	sa.mu.Unlock()
	if sa != sb {
		sb.mu.Unlock()
	}
}

func (m *Map[V]) index(s *stripe[V]) int {
	for i := range m.stripes {
		if &m.stripes[i] == s {
			return i
		}
	}
	return -1
}

// Store sets the value for key, inserting it or replacing the node that held
// it, and returns a pointer to the stored value. The caller must hold the
// stripe's lock (Lock(key)). The key is copied, so the caller's string may
// point into a larger buffer.
func (m *Map[V]) Store(key string, v V) *V {
	h := m.hash(key)
	s := m.stripeOf(h)
	n := &Node[V]{key: strings.Clone(key), Value: v}
	t := s.tab.Load()
	free := int64(-1)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		cur := t.slots[i].node.Load()
		if cur == nil {
			break
		}
		if t.slots[i].hash.Load() == h && cur.key == key && cur != m.tomb {
			n.key = cur.key // share the existing copy
			t.slots[i].node.Store(n)
			return &n.Value
		}
		if free < 0 && cur == m.tomb {
			free = int64(i)
		}
	}
	if free >= 0 {
		t.slots[free].hash.Store(h)
		t.slots[free].node.Store(n)
		s.dead--
	} else {
		if 4*(s.live+s.dead+1) > 3*len(t.slots) {
			t = s.grow(t, m.tomb)
		}
		insert(t, h, n)
	}
	s.live++
	s.count.Add(1)
	return &n.Value
}

// Delete removes key and reports whether it was present. The caller must hold
// the stripe's lock (Lock(key)).
func (m *Map[V]) Delete(key string) bool {
	h := m.hash(key)
	s := m.stripeOf(h)
	t := s.tab.Load()
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		cur := t.slots[i].node.Load()
		if cur == nil {
			return false
		}
		if t.slots[i].hash.Load() == h && cur.key == key && cur != m.tomb {
			t.slots[i].node.Store(m.tomb)
			s.live--
			s.dead++
			s.count.Add(-1)
			return true
		}
	}
}

// Range calls f for each key and value until f returns false. It takes no
// lock: a key stored or deleted during Range may or may not be seen, every
// other key is seen exactly once.
func (m *Map[V]) Range(f func(key string, v *V) bool) {
	for i := range m.stripes {
		t := m.stripes[i].tab.Load()
		for j := range t.slots {
			n := t.slots[j].node.Load()
			if n == nil || n == m.tomb {
				continue
			}
			if !f(n.key, &n.Value) {
				return
			}
		}
	}
}

// Len returns the number of keys. Under concurrent writes it is a snapshot
// of each stripe's count, not of the whole map at one instant.
func (m *Map[V]) Len() int {
	var n int64
	for i := range m.stripes {
		n += m.stripes[i].count.Load()
	}
	return int(n)
}

// grow replaces t with a table twice as large (or the same size, when
// tombstones are what fills it) and publishes it. Caller holds s.mu.
func (s *stripe[V]) grow(t *table[V], tomb *Node[V]) *table[V] {
	size := len(t.slots)
	if 2*(s.live+1) > size { // over half full of live nodes: double
		size *= 2
	}
	nt := newTable[V](size)
	for i := range t.slots {
		if n := t.slots[i].node.Load(); n != nil && n != tomb {
			insert(nt, t.slots[i].hash.Load(), n)
		}
	}
	s.dead = 0
	s.tab.Store(nt)
	return nt
}

func insert[V any](t *table[V], h uint64, n *Node[V]) {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		if t.slots[i].node.Load() == nil {
			t.slots[i].hash.Store(h)
			t.slots[i].node.Store(n)
			return
		}
	}
}

// KeyOf returns the key stored with v, which must be a pointer returned by
// Load or Store of a Map[V] (a pointer into a node), not a copy.
func KeyOf[V any](v *V) string {
	var n Node[V]
	off := unsafe.Offsetof(n.Value)
	return (*Node[V])(unsafe.Add(unsafe.Pointer(v), -int(off))).key
}
