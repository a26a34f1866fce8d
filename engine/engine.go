package engine

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine/internal/quota"
	"github.com/allot-go/allot/shard"
	"github.com/puzpuzpuz/xsync/v3"
)

// Engine enforces per-key quotas.
//
// Each key has one to MaxLimits limits (Credits, PerWindow, PerMonth,
// Rate); Consume grants n units only if every limit of the key can spare
// them, and takes them from all of them in the same atomic step. The state
// of a key's first limit and the key's revoked flag share one 64-bit word,
// so for a key with one limit a Consume is a lookup in a lock-striped map
// whose reads take no lock, then one compare-and-swap: no allocation, no
// lock, no system call (Credits do not even read the clock). A key with
// several limits, or a key rotated out, takes a mutex of its own instead.
//
// Guarantees, for any number of goroutines:
//   - No over-grant: the units granted never exceed what the limits allow;
//     with a Store, not across crashes and restarts either.
//   - Linearizable revocation: once Revoke returns, every Consume of the key
//     is denied with Reason Revoked (with a Store, also after a restart).
//   - Consume, Refund, Revoke and TopUp are linearizable per key.
//
// Create an Engine with New; the zero value is not usable. All methods are
// safe for concurrent use.
type Engine struct {
	m      shard.Map[entry]
	clock  func() time.Time
	wall0  int64
	mono0  time.Time
	store  Store
	c      *committer                  // nil without a Store
	leased bool                        // a Store in lease mode: grants need a durable reservation
	exact  bool                        // a Store in exact mode: every grant is durable before Consume returns
	pool   Pool                        // the Store, if it is a Pool (shared with other engines)
	neg    negCache                    // keys the Pool did not know (with a Pool only)
	ids    *xsync.MapOf[KeyID, string] // with a Pool: the raw key of each ID held
	// coarse is the monotonic clock as a ticker last read it (with a Pool:
	// every coarseTick, from New to Close). It is never ahead of the
	// clock, so a lease it finds live may have just ended: a denial on
	// it may be old news for at most that lag more, never a grant.
	coarse     atomic.Int64
	coarseStop chan struct{}
	lease      poolLease // with a Pool: the engine's lease on what it holds (Pool.Renew)

	closed atomic.Bool
	admin  sync.RWMutex // held shared by administrative calls, exclusively by Close

	recovering atomic.Int64 // recovered keys not yet seen under their raw key
	plans      sync.Map     // planKey -> *plan

	count *counters    // nil without WithCounting
	log   *slog.Logger // nil without WithLogger
}

// entry is a key's record in the map. With the map node's key header it is
// exactly one cache line (see TestEntryIsOneCacheLine), so the hot word of
// one key never shares a line with another key, and a Consume of a
// single-limit key reads nothing else.
type entry struct {
	word   uint64      // flags and the value of limit 0; atomic access only
	st     *keyState   // immutable apart from its counters, marks and mutex
	qm     uint64      // limit 0: quota | multi<<multiShift | kind<<kindShift | pooledBit; kind 0: rotated out
	period int64       // limit 0: window length or rate interval, ns
	lease  quota.Marks // limit 0 of a single-limit key; atomic access only
}

const (
	kindShift  = 56
	multiShift = 55
	quotaMask  = 1<<multiShift - 1
	// pooledBit marks a key of one limit of an engine with a Pool (not
	// rotated out): it grants by CAS as other single-limit keys do, and
	// checks its leases on the monotonic clock first (consumePooled).
	pooledBit = 1 << 63
	kindMask  = 0x7f
)

func (ent *entry) kind() Kind   { return Kind(ent.qm >> kindShift & kindMask) }
func (ent *entry) multi() bool  { return ent.qm>>multiShift&1 != 0 }
func (ent *entry) quota() int64 { return int64(ent.qm & quotaMask) }

// keyState is the part of a key's record that the hot path of a
// single-limit key does not touch. An entry and its keyState are replaced
// together, never changed in place, apart from counters, marks and the
// committer's bookkeeping.
type keyState struct {
	mu    sync.Mutex // serialises Consume of multi-limit and rotated-out keys with changes
	plan  *plan      // the limits; shared by every key with the same ones
	ms    *multiState
	alias *alias
	track atomic.Pointer[tracker] // requests in flight (Admit); kept across changes

	// origin is the keyState that the key's current limits were set in (by
	// Register, SetLimits or a restart); changes that keep the limits
	// (TopUp, Rotate, a tracker, a promotion) keep it. A refund gives back
	// only a grant made under the same origin.
	origin *keyState
	// reg tells registrations of one name apart (Record.Registration): a
	// chain's links and head share it; 0 for a key that was never rotated
	// and shares its plan's keyState.
	reg uint64
	// chain describes the rotation chains that end at this key (a head):
	// the hops of the longest one that may still be in grace, and until
	// when. Rotate reads it to enforce MaxRotationChain.
	chain chainInfo

	queued atomic.Bool // in the committer's next round; set under its mutex
	// unsaved is set by a change the store may not hold whatever the
	// marks say: a refund, which lowers a hard mark without a write (its
	// record may be refused once Close has begun), or a round that took
	// the key but wrote nothing, for it was sealed. Close then writes the
	// key (see durable). It is never cleared: that costs a write at Close.
	unsaved atomic.Bool
	want    int64 // guarded by the committer's mutex
	// Owned by the committer goroutine.
	chunk, lastReserve int64
	id                 *KeyID // the key's digest, once the committer needed it
	// With a Pool: base holds the pool's state after this engine's last
	// reservation (owned by the committer, set before the entry is
	// published); until is MaxInt64 while the engine may grant from what
	// it holds (with the engine's lease live, Engine.leased), 0 once the
	// pool's news of the key ended that (invalidate) or before the first
	// reservation; news is until when, on the engine's monotonic clock (ns
	// since New), a denial may rest on what the engine last heard of the
	// key (then it asks the pool again).
	base  []uint64
	until atomic.Int64
	news  atomic.Int64
	stale atomic.Bool // changed elsewhere: read the key again (reload)
	// link is set, with a Pool, for a key rotated out: it draws on its
	// chain's counters (the pool's) until link.until (poolrotate.go).
	link *poolLink
	// inval counts the Pool's news of the key (invalidate): a reservation
	// asked for before the last of them gives no lease, since the engine
	// may have told the pool it let go of the key.
	inval atomic.Uint64
}

type chainInfo struct {
	depth int
	until int64 // ns since the epoch
}

// limits returns the key's limits; none for a rotated-out key.
func (st *keyState) limits() []spec {
	if st.plan == nil {
		return nil
	}
	return st.plan.limits
}

// plan is a validated list of limits. Plans are interned: keys registered
// with the same limits share one.
type plan struct {
	limits []spec
	// shared is the keyState of every in-memory single-limit key of this
	// plan that needs nothing of its own (no tracker, not rotated out, no
	// Store): its fields are the plan and a mutex, which seal may share.
	shared *keyState
}

// sharedOf returns the shared keyState of st's plan, if st could have one.
func sharedOf(st *keyState) *keyState {
	if st.plan == nil {
		return nil
	}
	return st.plan.shared
}

// multiState holds what only a key with several limits needs.
type multiState struct {
	more   []shard.Counter // values of limits[1:]
	leases []quota.Marks   // marks of every limit
}

// tracker counts a key's admitted requests that are still running. Only a
// head has one: requests admitted through a rotated-out key count on the
// tracker of the key its chain ends at.
type tracker struct {
	n atomic.Int64
	_ [shard.CacheLineSize - 8]byte
}

// alias is what a rotated-out key keeps: where its counters went, and until
// when it may use them.
type alias struct {
	target   string // raw key, or recoveredPrefix+ID while not seen since a restart
	targetID KeyID
	deadline int64  // ns since the epoch
	forward  bool   // left behind by promote: not a key, only a pointer to one
	reg      uint64 // the registration of the chain: its target must carry it
}

// lim0 returns what the arithmetic needs of limit 0, from the entry alone.
func (ent *entry) lim0() quota.Limit {
	l := quota.Limit{Kind: quota.Kind(ent.kind()), Quota: ent.quota(), Period: ent.period}
	if l.Kind == quota.Month {
		l.Loc = ent.st.limits()[0].loc
	}
	return l
}

// marks returns the lease marks of limit i.
func (ent *entry) marks(i int) *quota.Marks {
	if ent.multi() {
		return &ent.st.ms.leases[i]
	}
	return &ent.lease
}

// recoveredPrefix marks map keys that hold a recovered record whose raw key
// has not been seen since the restart. Raw keys may not start with it.
const recoveredPrefix = "\x00"

// New returns an engine. Without WithStore everything lives in memory.
func New(opts ...Option) (*Engine, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	e := &Engine{clock: o.clock, store: o.store, mono0: time.Now(), log: o.logger}
	if o.counting {
		e.count = newCounters()
	}
	if err := e.m.Init(o.shards); err != nil {
		return nil, fmt.Errorf("%w: %d shards: must be a power of two from 1 to %d", ErrInvalidOption, o.shards, shard.MaxStripes)
	}
	e.wall0 = e.mono0.UnixNano()
	if e.store != nil {
		lo := o.lease.withDefaults()
		if err := lo.validate(); err != nil {
			return nil, err
		}
		if !claim(e.store) {
			return nil, fmt.Errorf("%w: close the engine it serves first, or open a store of its own", ErrStoreInUse)
		}
		ok := false
		defer func() {
			if !ok {
				release(e.store)
			}
		}()
		e.exact, e.leased = lo.Exact, !lo.Exact
		env := commitEnv{save: e.store.Save, now: e.now, clockErr: e.clockErr,
			every: e.records, log: e.log, leased: e.leased, opts: lo}
		if p, ok := e.store.(Pool); ok {
			if lo.Exact {
				return nil, fmt.Errorf("%w: exact mode with a shared store (a Pool)", ErrInvalidOption)
			}
			e.pool, e.neg.m, e.ids = p, xsync.NewMapOf[KeyID, int64](), xsync.NewMapOf[KeyID, string]()
			env.shared = e
			p.Watch(e.invalidate)
		}
		e.c = newCommitter(env)
		if err := e.load(context.Background()); err != nil {
			return nil, err
		}
		ok = true
		go e.c.run()
		if e.pool != nil {
			e.coarse.Store(e.mono())
			e.coarseStop = make(chan struct{})
			e.lease.init()
			go e.tickCoarse()
			go e.holdLease()
		}
	}
	return e, nil
}

// inUse holds the Stores that serve an engine (New claims, Close releases):
// one Store serves one engine at a time. A Store whose dynamic type is not
// comparable cannot be told from another, and is not checked.
var inUse sync.Map

func claim(st Store) bool {
	if !reflect.TypeOf(st).Comparable() {
		return true
	}
	_, loaded := inUse.LoadOrStore(st, struct{}{})
	return !loaded
}

func release(st Store) {
	if reflect.TypeOf(st).Comparable() {
		inUse.Delete(st)
	}
}

// now returns the time in ns since the epoch: the injected clock, or the wall
// clock at New advanced by the monotonic clock, so a wall-clock step never
// moves it. It returns -1 for a time outside [MinTime, MaxTime).
func (e *Engine) now() int64 {
	if e.clock != nil {
		t := e.clock()
		if t.Before(MinTime) || !t.Before(MaxTime) {
			return -1
		}
		return t.UnixNano()
	}
	if t := e.wall0 + int64(time.Since(e.mono0)); t >= 0 && t < maxTimeNs {
		return t
	}
	return -1
}

// clockErr is the error of a call that read a time out of range.
func (e *Engine) clockErr() error {
	t := time.Now()
	if e.clock != nil {
		t = e.clock()
	}
	return fmt.Errorf("%w: %v is not in [%v, %v)", ErrClock, t.UTC(), MinTime, MaxTime)
}

func checkKey(key string) error {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return fmt.Errorf("%w: length %d, must be 1 to %d bytes", ErrInvalidKey, len(key), MaxKeyLen)
	}
	if key[0] == recoveredPrefix[0] {
		return fmt.Errorf("%w: must not start with a NUL byte", ErrInvalidKey)
	}
	return nil
}

func checkAmount(n int64) error {
	if n <= 0 {
		return fmt.Errorf("%w: %d, must be positive", ErrInvalidAmount, n)
	}
	return nil
}

// lookup returns key's entry, promoting a recovered record first seen under
// its raw key. Nil if the key is unknown. The caller holds the admin lock
// shared (an administrative call).
func (e *Engine) lookup(ctx context.Context, key string) (*entry, error) {
	if ent := e.held(key); ent != nil || e.pool == nil {
		return ent, nil
	}
	return e.fetch(ctx, key)
}

// held is lookup without asking a Pool: the keys this engine holds.
func (e *Engine) held(key string) *entry {
	if ent := e.m.Load(key); ent != nil {
		return ent
	}
	return e.promote(key)
}

// find is lookup for a call that does not hold the admin lock: a promotion
// publishes an entry, which after Close has sealed every key it must not,
// so it takes the lock shared and fails with ErrClosed after Close.
func (e *Engine) find(ctx context.Context, key string) (*entry, error) {
	if ent := e.m.Load(key); ent != nil {
		return ent, nil
	}
	if e.recovering.Load() == 0 && e.pool == nil {
		return nil, nil
	}
	e.admin.RLock()
	defer e.admin.RUnlock()
	if e.closed.Load() {
		return nil, ErrClosed
	}
	return e.lookup(ctx, key)
}

// findLocal is find without asking a Pool: for calls that never wait.
func (e *Engine) findLocal(key string) (*entry, error) {
	if ent := e.m.Load(key); ent != nil || e.recovering.Load() == 0 {
		return ent, nil
	}
	e.admin.RLock()
	defer e.admin.RUnlock()
	if e.closed.Load() {
		return nil, ErrClosed
	}
	return e.promote(key), nil
}

// Close ends the engine: later calls return ErrClosed. With a Store, it
// writes every key as it is, giving back the unused part of every
// reservation, so that a restart loses nothing, then closes the store. In
// lease mode it leaves out the keys the store holds already as they are
// (used, refunded or changed by no call since they were last written),
// unless a Save has failed since New.
// Close waits for administrative calls in flight. It is idempotent: calls
// after the first return ErrClosed.
func (e *Engine) Close() error {
	e.admin.Lock()
	defer e.admin.Unlock()
	if !e.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	if e.store == nil {
		return nil
	}
	// Freeze every counter: a Consume in flight either got its CAS in
	// before (and is written below) or sees the seal and returns ErrClosed.
	// In lease mode the last round freezes each key as it reaches it, in
	// the same pass that writes it (records): no Consume there waits for a
	// round after its CAS. In exact mode one does (and takes its grant
	// back if the round fails), and a Pool gives back from every key, so
	// every key is frozen before the last round starts.
	if e.exact || e.pool != nil {
		e.m.Range(func(_ string, ent *entry) bool {
			freeze(ent)
			return true
		})
	}
	if e.coarseStop != nil {
		close(e.coarseStop)
		<-e.lease.stopped
	}
	close(e.c.stop)
	<-e.c.stopped
	err := e.c.flushErr
	cerr := e.store.Close()
	release(e.store)
	if err == nil && cerr != nil {
		err = wrapStore("close", cerr)
	}
	return err
}

// Len returns the number of keys the engine holds: registered, recovered,
// rotated out or revoked (a revoked key is kept, so that it stays revoked).
func (e *Engine) Len() int {
	n := 0
	e.m.Range(func(_ string, ent *entry) bool {
		if ent.st.alias == nil || !ent.st.alias.forward {
			n++
		}
		return true
	})
	return n
}
