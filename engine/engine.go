package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine/internal/quota"
	"github.com/allot-go/allot/shard"
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
	c      *committer // nil without a Store
	leased bool       // a Store in lease mode: grants need a durable reservation
	exact  bool       // a Store in exact mode: every grant is durable before Consume returns

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
	qm     uint64      // limit 0: quota | multi<<multiShift | kind<<kindShift; kind 0: rotated out
	period int64       // limit 0: window length or rate interval, ns
	lease  quota.Marks // limit 0 of a single-limit key; atomic access only
}

const (
	kindShift  = 56
	multiShift = 55
	quotaMask  = 1<<multiShift - 1
)

func (ent *entry) kind() Kind   { return Kind(ent.qm >> kindShift) }
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
	want   int64       // guarded by the committer's mutex
	// Owned by the committer goroutine.
	chunk, lastReserve int64
	id                 *KeyID // the key's digest, once the committer needed it
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
		e.exact, e.leased = lo.Exact, !lo.Exact
		e.c = newCommitter(e, lo)
		if err := e.load(context.Background()); err != nil {
			return nil, err
		}
		go e.c.run()
	}
	return e, nil
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

// Consume takes n units from key if every limit of the key allows it, and
// reports the outcome. Denials (an exhausted limit, a revoked or unknown key)
// are Decisions; errors are for bad input, a closed engine, a store failure,
// or ctx ending while Consume waits for the store.
//
// For a key with one limit, Consume takes no lock and does not allocate.
// With a Store it waits only when the key's durable reservation is used up
// (the next one is normally written in the background before that), or, in
// exact mode, until its grant is durable.
func (e *Engine) Consume(ctx context.Context, key string, n int64) (Decision, error) {
	if e.closed.Load() {
		return Decision{}, ErrClosed
	}
	if len(key) == 0 || len(key) > MaxKeyLen || key[0] == 0 {
		return Decision{}, checkKey(key)
	}
	if n <= 0 {
		return Decision{}, checkAmount(n)
	}
	// The loop is written out here, not shared with Admit: a call more on
	// this path costs more than Admit's second lookup.
	for {
		ent := e.m.Load(key)
		if ent == nil {
			var err error
			if ent, err = e.find(key); err != nil {
				return Decision{}, err
			} else if ent == nil {
				if c := e.count; c != nil {
					c.unknown.Inc()
				}
				return Decision{Reason: UnknownKey}, nil
			}
		}
		if ent.qm>>multiShift == uint64(KindCredits)<<(kindShift-multiShift) {
			// The commonest case, inlined: one Credits limit, units spent
			// within the quota and the reservation, and one CAS. The word
			// has no flag set and is below 2^62, so w+n cannot wrap.
			w := atomic.LoadUint64(&ent.word)
			q := ent.quota()
			nw := w + uint64(n)
			if w&flagBits == 0 && nw <= uint64(q) && nw <= atomic.LoadUint64(&ent.lease.Hard) && atomic.CompareAndSwapUint64(&ent.word, w, nw) {
				d := Decision{Allowed: true, Reason: OK, Limit: q, Remaining: q - int64(nw), n: n, st: ent.st}
				if nw > atomic.LoadUint64(&ent.lease.Soft) || e.exact {
					if err := e.granted(ctx, ent); err != nil {
						e.takeBack(key, d)
						return Decision{}, err
					}
				}
				if c := e.count; c != nil {
					c.granted.Inc()
					c.units.Add(n)
				}
				return d, nil
			}
			if w&flagBits == 0 && nw > uint64(q) {
				// Exhausted: a denial changes nothing, so the load decides.
				if c := e.count; c != nil {
					c.exhausted.Inc()
				}
				return Decision{Reason: Exhausted, Limit: q, Remaining: max(q-int64(w), 0)}, nil
			}
		}
		d, st := e.consume(ent, n)
		switch st {
		case badClock:
			return Decision{}, e.clockErr()
		case done:
			if d.Allowed && e.exact {
				if o := e.owner(ent); o != nil {
					if err := e.wait(ctx, e.c.request(o, 0)); err != nil {
						e.takeBack(key, d)
						return Decision{}, err
					}
				}
			}
			if c := e.count; c != nil {
				c.count(&d)
			}
			return d, nil
		case sealed:
			if e.closed.Load() {
				return Decision{}, ErrClosed
			}
			e.waitReplaced(key)
		case needLease:
			if o := e.owner(ent); o != nil {
				if err := e.wait(ctx, e.c.request(o, n)); err != nil {
					return Decision{}, err
				}
			}
		}
	}
}

// takeBack undoes grant d of key, in exact mode, when Consume returns an
// error after its CAS (ctx ended or the store failed while it waited for the
// grant to be durable): a call that reports failure has taken nothing. The
// refund asks for the key's record, so the next round writes it back.
func (e *Engine) takeBack(key string, d Decision) {
	for range maxHops {
		ent := e.m.Load(key)
		if ent == nil {
			return
		}
		if ent.kind() == 0 {
			k, t := e.resolve(ent.st.alias)
			if t == nil {
				return
			}
			key, ent = k, t
		}
		if d.st == nil || d.st.origin != ent.st.origin {
			return // the limits changed since: what was spent carried over
		}
		if e.refund(ent, d.n, d.at) != sealed || e.closed.Load() {
			return
		}
		e.waitReplaced(key)
	}
}

// owner returns the entry whose counters ent draws on: ent itself, or for a
// rotated-out key the entry of the key it went to (nil if there is none).
func (e *Engine) owner(ent *entry) *entry {
	if ent.kind() != 0 {
		return ent
	}
	_, t := e.resolve(ent.st.alias)
	return t
}

// granted follows a grant that crossed a soft mark (asks for the next
// reservation, without waiting) or, in exact mode, waits until it is durable.
func (e *Engine) granted(ctx context.Context, ent *entry) error {
	if e.exact {
		return e.wait(ctx, e.c.request(ent, 0))
	}
	e.c.ask(ent)
	return nil
}

// wait waits for a batch of the committer.
func (e *Engine) wait(ctx context.Context, b *batch) error {
	select {
	case <-b.done:
		if b.err != nil && !errors.Is(b.err, ErrClosed) {
			return wrapStore("", b.err)
		}
		return b.err
	case <-ctx.Done():
		return fmt.Errorf("allot: waiting for the store: %w", ctx.Err())
	}
}

// outcome says what a consume step did.
type outcome uint8

const (
	done      outcome = iota // decided
	sealed                   // the entry is being replaced: look the key up again
	needLease                // the durable reservation is used up: reserve and retry
	badClock                 // the clock reads a time out of range
)

// waitReplaced waits until the administrative call that sealed key's entry
// has published its replacement: it holds the stripe's lock until then.
func (e *Engine) waitReplaced(key string) {
	e.m.Lock(key)
	e.m.Unlock(key) //nolint:staticcheck // an empty critical section is the point
}

// consume runs one Consume on ent.
func (e *Engine) consume(ent *entry, n int64) (Decision, outcome) {
	if ent.kind() == 0 {
		return e.consumeAlias(ent, n)
	}
	if ent.multi() {
		return e.consumeMulti(ent, n)
	}
	l := ent.lim0()
	var now int64
	if l.Kind != quota.Credits {
		if now = e.now(); now < 0 {
			return Decision{}, badClock
		}
	}
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&flagBits != 0 {
			if w&revokedBit != 0 {
				return Decision{Reason: Revoked}, done
			}
			return Decision{}, sealed
		}
		nw, ok, r := l.Consume(w, n, now)
		if !ok {
			return decision(false, l.Quota, r, 0, 0, 0), done
		}
		if !l.Covered(nw, atomic.LoadUint64(&ent.lease.Hard)) {
			return Decision{}, needLease
		}
		if atomic.CompareAndSwapUint64(&ent.word, w, nw) {
			if l.Low(nw, atomic.LoadUint64(&ent.lease.Soft)) && !e.exact {
				e.c.ask(ent)
			}
			d := decision(true, l.Quota, r, 0, n, now)
			d.st = ent.st
			return d, done
		}
	}
}

// decision builds the Decision of limit i's result r; a grant of n units
// at time at.
func decision(ok bool, limit int64, r quota.Result, i int, n, at int64) Decision {
	d := Decision{Allowed: ok, Limit: limit, Remaining: r.Remaining, ResetAfter: time.Duration(r.Reset), LimitIndex: i}
	if ok {
		d.Reason, d.n, d.at = OK, n, at
	} else {
		d.Reason = Exhausted
		if r.Retry > 0 {
			d.RetryAfter = time.Duration(r.Retry)
		}
	}
	return d
}

// consumeMulti consumes from a key with several limits under the key's
// mutex. The word of limit 0 is still updated by CAS, because Revoke sets its
// flag without the mutex; it is written first, so a Revoke that gets in
// between makes the whole step retry.
func (e *Engine) consumeMulti(ent *entry, n int64) (Decision, outcome) {
	st := ent.st
	now := e.now()
	if now < 0 {
		return Decision{}, badClock
	}
	var vals [MaxLimits]uint64
	var res [MaxLimits]quota.Result
	st.mu.Lock()
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&flagBits != 0 {
			st.mu.Unlock()
			if w&revokedBit != 0 {
				return Decision{Reason: Revoked}, done
			}
			return Decision{}, sealed
		}
		allowed, covered, low := true, true, false
		for i := range st.limits() {
			v := w
			if i > 0 {
				v = st.ms.more[i-1].Load()
			}
			l := st.limits()[i].lim()
			var ok bool
			vals[i], ok, res[i] = l.Consume(v, n, now)
			allowed = allowed && ok
			if ok {
				m := &st.ms.leases[i]
				covered = covered && l.Covered(vals[i], atomic.LoadUint64(&m.Hard))
				low = low || l.Low(vals[i], atomic.LoadUint64(&m.Soft))
			}
		}
		if allowed && !covered {
			st.mu.Unlock()
			return Decision{}, needLease
		}
		if allowed && !atomic.CompareAndSwapUint64(&ent.word, w, vals[0]) {
			continue
		}
		if allowed {
			for i := 1; i < len(st.limits()); i++ {
				st.ms.more[i-1].Store(vals[i])
			}
		}
		st.mu.Unlock()
		if allowed && low && !e.exact {
			e.c.ask(ent)
		}
		i := tightest(allowed, res[:len(st.limits())])
		d := decision(allowed, st.limits()[i].quota, res[i], i, n, now)
		if allowed {
			d.st = st
		}
		return d, done
	}
}

// tightest picks the limit a Decision describes: after a grant, the one with
// the fewest units left; after a denial, a denying one that waiting cannot
// cure, else the one that frees up last.
func tightest(allowed bool, res []quota.Result) int {
	best := 0
	for i := 1; i < len(res); i++ {
		r, b := res[i], res[best]
		switch {
		case allowed:
			if r.Remaining < b.Remaining {
				best = i
			}
		case b.Retry == quota.Never:
		case r.Retry == quota.Never || r.Retry > b.Retry:
			best = i
		}
	}
	return best
}

// consumeAlias consumes for a rotated-out key: from the counters of the key
// its chain of rotations ends at (its head), while every link of the chain is
// in its grace and not revoked. It holds the mutex of every link, oldest
// first, while it checks their flags and consumes, which makes the consume
// one step with respect to Revoke of any link (Revoke of a rotated-out key
// takes its mutex). The caller waits for the store (a sealed link or head, a
// used-up reservation) after the mutexes are let go.
func (e *Engine) consumeAlias(ent *entry, n int64) (Decision, outcome) {
	now := e.now()
	if now < 0 {
		return Decision{}, badClock
	}
	var held [maxHops]*keyState
	k := 0 // mutexes held
	defer func() {
		for i := k - 1; i >= 0; i-- {
			held[i].mu.Unlock()
		}
	}()
	cur := ent
	for range maxHops {
		st := cur.st
		st.mu.Lock()
		held[k] = st
		k++
		w := atomic.LoadUint64(&cur.word)
		switch {
		case w&revokedBit != 0, !st.alias.forward && now >= st.alias.deadline:
			return Decision{Reason: Revoked}, done
		case w&sealedBit != 0:
			return Decision{}, sealed
		}
		next := e.next(cur)
		switch {
		case next == nil:
			return Decision{Reason: Revoked}, done
		case next.kind() != 0:
			return e.consume(next, n)
		}
		cur = next
	}
	return Decision{Reason: Revoked}, done
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

// Refund gives back n units of grant, a Decision that Consume or Admit
// returned for key, up to each limit's quota: for a request that was
// admitted and then did not use what it was granted. Units go back only to
// the limits they were counted in: a window gets them back only while it is
// the window the grant was counted in (units of a window that has ended are
// gone with it), and nothing is given back once SetLimits has replaced the
// key's limits since the grant. Refunding through a rotated-out key refunds
// the key its chain ends at. Give each grant back at most once; n may be
// less than it granted.
//
// It returns ErrInvalidAmount for a grant that is not an allowed Decision
// or an n above what it granted.
func (e *Engine) Refund(ctx context.Context, key string, grant Decision, n int64) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if err := checkAmount(n); err != nil {
		return err
	}
	if !grant.Allowed || n > grant.n {
		return fmt.Errorf("%w: refund of %d units of a grant of %d", ErrInvalidAmount, n, grant.n)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("allot: refund: %w", err)
	}
	for {
		ent, err := e.find(key)
		if err != nil {
			return err
		}
		if ent == nil {
			return fmt.Errorf("%w: refund", ErrUnknownKey)
		}
		if ent.kind() == 0 {
			k, t := e.resolve(ent.st.alias)
			if t == nil {
				return nil
			}
			key, ent = k, t
		}
		if grant.st == nil || grant.st.origin != ent.st.origin {
			return nil // the limits the grant was counted in are gone
		}
		switch e.refund(ent, n, grant.at) {
		case done:
			return nil
		case badClock:
			return e.clockErr()
		}
		if e.closed.Load() {
			return ErrClosed
		}
		e.waitReplaced(key)
	}
}

// refund gives units back in memory. With leases, each limit's hard mark
// moves by the same amount, so that the reservation keeps its size and the
// key's next record (asked for here, written in the background) counts the
// refund; until it lands a crash may lose the refund, never more.
func (e *Engine) refund(ent *entry, n, at int64) outcome {
	st := ent.st
	var now int64
	if ent.multi() || ent.kind() != KindCredits {
		if now = e.now(); now < 0 {
			return badClock
		}
	}
	if !ent.multi() {
		l := ent.lim0()
		for {
			w := atomic.LoadUint64(&ent.word)
			if w&sealedBit != 0 {
				return sealed
			}
			nv := l.Refund(w&valueMask, n, now, at)
			if atomic.CompareAndSwapUint64(&ent.word, w, nv|w&revokedBit) {
				e.refunded(ent, 0, &l, w&valueMask, nv)
				return done
			}
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&sealedBit != 0 {
			return sealed
		}
		l := st.limits()[0].lim()
		nv := l.Refund(w&valueMask, n, now, at)
		if !atomic.CompareAndSwapUint64(&ent.word, w, nv|w&revokedBit) {
			continue
		}
		e.refunded(ent, 0, &l, w&valueMask, nv)
		for i := 1; i < len(st.limits()); i++ {
			l := st.limits()[i].lim()
			old := st.ms.more[i-1].Load()
			nv := l.Refund(old, n, now, at)
			st.ms.more[i-1].Store(nv)
			e.refunded(ent, i, &l, old, nv)
		}
		return done
	}
}

// refunded follows a refund of limit i from value old to nv: with leases it
// tightens the hard mark by as much (a tighter mark than the durable one is
// always safe) and asks for the key's record; in exact mode it asks for the
// record only.
func (e *Engine) refunded(ent *entry, i int, l *quota.Limit, old, nv uint64) {
	if e.c == nil || old == nv {
		return
	}
	if e.leased {
		m := ent.marks(i)
		for {
			h := atomic.LoadUint64(&m.Hard)
			nh, ok := l.Tighten(h, old, nv)
			if !ok || atomic.CompareAndSwapUint64(&m.Hard, h, nh) {
				break
			}
		}
	}
	e.c.ask(ent)
}

// lookup returns key's entry, promoting a recovered record first seen under
// its raw key. Nil if the key is unknown. The caller holds the admin lock
// shared (an administrative call).
func (e *Engine) lookup(key string) *entry {
	if ent := e.m.Load(key); ent != nil {
		return ent
	}
	return e.promote(key)
}

// find is lookup for a call that does not hold the admin lock: a promotion
// publishes an entry, which after Close has sealed every key it must not,
// so it takes the lock shared and fails with ErrClosed after Close.
func (e *Engine) find(key string) (*entry, error) {
	if ent := e.m.Load(key); ent != nil {
		return ent, nil
	}
	if e.recovering.Load() == 0 {
		return nil, nil
	}
	e.admin.RLock()
	defer e.admin.RUnlock()
	if e.closed.Load() {
		return nil, ErrClosed
	}
	return e.promote(key), nil
}

// Status returns key's state without consuming. It never waits for the
// store: during an administrative change of key it reports the state before
// the change.
func (e *Engine) Status(key string) (Status, error) {
	if err := checkKey(key); err != nil {
		return Status{}, err
	}
	s, err := e.status(nil, key)
	if err == nil && s.Limits == nil {
		s.Limits = []LimitStatus{}
	}
	return s, err
}

// AppendLimits appends the state of each of key's limits to dst and returns
// the extended slice, like Status but without allocating when dst has room.
// For a revoked key it still reports the counters.
func (e *Engine) AppendLimits(dst []LimitStatus, key string) ([]LimitStatus, error) {
	if err := checkKey(key); err != nil {
		return dst, err
	}
	s, err := e.status(dst, key)
	if err != nil {
		return dst, err
	}
	return s.Limits, nil
}

// status is Status of a map key: a raw key, or a recovered record's.
func (e *Engine) status(dst []LimitStatus, key string) (Status, error) {
	if e.closed.Load() {
		return Status{}, ErrClosed
	}
	ent, err := e.find(key)
	if err != nil {
		return Status{}, err
	}
	if ent == nil {
		return Status{}, fmt.Errorf("%w: status", ErrUnknownKey)
	}
	var s Status
	now := e.now()
	if now < 0 {
		return Status{}, e.clockErr()
	}
	if ent.kind() == 0 {
		a := ent.st.alias
		s.RotatedOut, s.GraceUntil = true, time.Unix(0, a.deadline)
		s.Revoked = !e.alive(ent, now)
		if _, ent = e.resolve(a); ent == nil {
			s.Revoked = true
			s.Limits = dst
			return s, nil
		}
	}
	var vals [MaxLimits]uint64
	revoked, ok := snapshot(ent, &vals)
	if !ok && e.closed.Load() {
		return Status{}, ErrClosed // Close seals every key for good
	}
	// A sealed entry holds its final values: the change that sealed it
	// has not taken effect yet, so reading them is linearizable, and
	// Status never waits behind the change's write to the store.
	s.Revoked = s.Revoked || revoked
	for i := range ent.st.limits() {
		l := ent.st.limits()[i].lim()
		r := l.Peek(vals[i], now)
		dst = append(dst, LimitStatus{Limit: ent.st.limits()[i].Limit, Remaining: r.Remaining, ResetAfter: time.Duration(r.Reset)})
	}
	s.Limits = dst
	return s, nil
}

// snapshot reads ent's flag and values consistently into vals; ok is false
// if ent is sealed (the values are then its final ones).
func snapshot(ent *entry, vals *[MaxLimits]uint64) (revoked, ok bool) {
	st := ent.st
	if ent.multi() {
		st.mu.Lock()
		defer st.mu.Unlock()
	}
	w := atomic.LoadUint64(&ent.word)
	vals[0] = w & valueMask
	for i := 1; i < len(st.limits()); i++ {
		vals[i] = st.ms.more[i-1].Load()
	}
	return w&revokedBit != 0, w&sealedBit == 0
}

// Close ends the engine: later calls return ErrClosed. With a Store, it
// writes every key as it is, giving back the unused part of every
// reservation, so that a restart loses nothing, then closes the store.
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
	e.m.Range(func(_ string, ent *entry) bool {
		seal(ent)
		return true
	})
	close(e.c.stop)
	<-e.c.stopped
	err := e.c.flushErr
	if cerr := e.store.Close(); err == nil && cerr != nil {
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
