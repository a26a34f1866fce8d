package engine

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

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
//   - No over-grant: the units granted never exceed what the limits allow.
//   - Linearizable revocation: once Revoke returns, every Consume of the key
//     is denied with Reason Revoked.
//   - Consume, Refund, Revoke and TopUp are linearizable per key.
//
// Create an Engine with New; the zero value is not usable. All methods are
// safe for concurrent use.
type Engine struct {
	m     shard.Map[entry]
	clock func() time.Time
	wall0 int64
	mono0 time.Time
	store Store

	closed atomic.Bool
	admin  sync.RWMutex // held shared by administrative calls, exclusively by Close

	recovering atomic.Int64 // recovered keys not yet seen under their raw key
}

// entry is a key's record in the map. Its size, with the map node's header,
// is exactly one cache line (see TestEntryIsOneCacheLine), so the hot word of
// one key never shares a line with another key.
type entry struct {
	word   uint64    // flags and the state of limit 0; accessed atomically only
	st     *keyState // immutable apart from its counters and mutex
	kind   Kind      // of limit 0; 0 for a rotated-out key
	multi  bool      // more than one limit
	quota  int64     // of limit 0
	period int64     // of limit 0, ns
}

// keyState is the part of a key's record the hot path of a single-limit key
// does not touch. An entry and its keyState are replaced together, never
// changed in place, apart from the counters.
type keyState struct {
	mu     sync.Mutex // serialises Consume of multi-limit and rotated-out keys with changes
	id     KeyID
	limits []spec
	more   []shard.Counter // words of limits[1:]
	alias  *alias
	track  atomic.Pointer[tracker] // requests in flight (Admit); kept across changes
}

// tracker counts a key's admitted requests that are still running.
type tracker struct {
	n atomic.Int64
	_ [shard.CacheLineSize - 8]byte
}

// alias is what a rotated-out key keeps: where its counters went, and until
// when it may use them.
type alias struct {
	target   string // raw key, or recoveredPrefix+ID while not seen since a restart
	targetID KeyID
	deadline int64 // ns since the epoch
	forward  bool  // left behind by promote: not a key, only a pointer to one
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
	e := &Engine{clock: o.clock, store: o.store, mono0: time.Now()}
	if err := e.m.Init(o.shards); err != nil {
		return nil, fmt.Errorf("%w: %d shards: must be a power of two from 1 to %d", ErrInvalidOption, o.shards, shard.MaxStripes)
	}
	e.wall0 = e.mono0.UnixNano()
	if e.store != nil {
		if err := e.load(context.Background()); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// now returns the time in ns since the epoch: the injected clock, or the wall
// clock at New advanced by the monotonic clock, so a wall-clock step never
// moves it.
func (e *Engine) now() int64 {
	var t int64
	if e.clock != nil {
		t = e.clock().UnixNano()
	} else {
		t = e.wall0 + int64(time.Since(e.mono0))
	}
	return max(t, 0)
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
// are Decisions; errors are for bad input and a closed engine.
//
// For a key with one limit, Consume takes no lock and does not allocate.
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
	for {
		ent := e.m.Load(key)
		if ent == nil {
			if ent = e.promote(key); ent == nil {
				return Decision{Reason: UnknownKey}, nil
			}
		}
		if ent.kind == KindCredits && !ent.multi {
			// The commonest case, inlined: a balance and one CAS.
			w := atomic.LoadUint64(&ent.word)
			if w&flagBits == 0 && uint64(n) <= w && atomic.CompareAndSwapUint64(&ent.word, w, w-uint64(n)) {
				return Decision{Allowed: true, Limit: ent.quota, Remaining: int64(w) - n}, nil
			}
		}
		if d, ok := e.consume(ent, n); ok {
			return d, nil
		}
		e.waitReplaced(key)
	}
}

// waitReplaced waits until the administrative call that sealed key's entry
// has published its replacement: it holds the stripe's lock until then.
func (e *Engine) waitReplaced(key string) {
	e.m.Lock(key)
	e.m.Unlock(key) //nolint:staticcheck // an empty critical section is the point
}

// consume runs one Consume on ent. It reports false if ent was sealed: the
// caller looks the key up again.
func (e *Engine) consume(ent *entry, n int64) (Decision, bool) {
	if ent.kind == 0 {
		return e.consumeAlias(ent, n)
	}
	if ent.multi {
		return e.consumeMulti(ent, n)
	}
	l := lim{kind: ent.kind, quota: ent.quota, period: ent.period}
	var now int64
	if l.kind != KindCredits {
		now = e.now()
		if l.kind == KindMonth {
			l.loc = ent.st.limits[0].loc
		}
	}
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&flagBits != 0 {
			if w&revokedBit != 0 {
				return Decision{Reason: Revoked}, true
			}
			return Decision{}, false
		}
		nw, ok, r := l.consume(w, n, now)
		if !ok {
			return decision(false, l.quota, r), true
		}
		if atomic.CompareAndSwapUint64(&ent.word, w, nw) {
			return decision(true, l.quota, r), true
		}
	}
}

func decision(ok bool, quota int64, r result) Decision {
	d := Decision{Allowed: ok, Limit: quota, Remaining: r.remaining, ResetAfter: time.Duration(r.reset)}
	if !ok {
		d.Reason = Exhausted
		if r.retry > 0 {
			d.RetryAfter = time.Duration(r.retry)
		}
	}
	return d
}

// consumeMulti consumes from a key with several limits under the key's
// mutex. The word of limit 0 is still updated by CAS, because Revoke sets its
// flag without the mutex; it is written first, so a Revoke that gets in
// between makes the whole step retry.
func (e *Engine) consumeMulti(ent *entry, n int64) (Decision, bool) {
	st := ent.st
	now := e.now()
	var vals [MaxLimits]uint64
	var res [MaxLimits]result
	st.mu.Lock()
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&flagBits != 0 {
			st.mu.Unlock()
			if w&revokedBit != 0 {
				return Decision{Reason: Revoked}, true
			}
			return Decision{}, false
		}
		allowed := true
		for i := range st.limits {
			v := w
			if i > 0 {
				v = st.more[i-1].Load()
			}
			l := st.limits[i].lim()
			var ok bool
			vals[i], ok, res[i] = l.consume(v, n, now)
			allowed = allowed && ok
		}
		if allowed && !atomic.CompareAndSwapUint64(&ent.word, w, vals[0]) {
			continue
		}
		if allowed {
			for i := 1; i < len(st.limits); i++ {
				st.more[i-1].Store(vals[i])
			}
		}
		st.mu.Unlock()
		i := tightest(allowed, res[:len(st.limits)])
		return decision(allowed, st.limits[i].quota, res[i]), true
	}
}

// tightest picks the limit a Decision describes: after a grant, the one with
// the fewest units left; after a denial, a denying one that waiting cannot
// cure, else the one that frees up last.
func tightest(allowed bool, res []result) int {
	best := 0
	for i := 1; i < len(res); i++ {
		r, b := res[i], res[best]
		switch {
		case allowed:
			if r.remaining < b.remaining {
				best = i
			}
		case b.retry == never:
		case r.retry == never || r.retry > b.retry:
			best = i
		}
	}
	return best
}

// consumeAlias consumes for a rotated-out key: from the counters of the key
// it was rotated to, while its grace lasts and it is not revoked. The alias's
// mutex makes the check of its flag and the consume one step with respect to
// Revoke of the alias.
func (e *Engine) consumeAlias(ent *entry, n int64) (Decision, bool) {
	st := ent.st
	st.mu.Lock()
	defer st.mu.Unlock()
	w := atomic.LoadUint64(&ent.word)
	if w&revokedBit != 0 || e.now() >= st.alias.deadline {
		return Decision{Reason: Revoked}, true
	}
	for {
		key, t := e.resolve(st.alias)
		if t == nil {
			return Decision{Reason: Revoked}, true
		}
		if d, ok := e.consume(t, n); ok {
			return d, true
		}
		e.waitReplaced(key)
	}
}

// resolve follows a rotated-out key to the key that owns its counters.
func (e *Engine) resolve(a *alias) (string, *entry) {
	key := a.target
	for range 64 {
		t := e.m.Load(key)
		if t == nil {
			return key, nil
		}
		if t.kind != 0 {
			return key, t
		}
		key = t.st.alias.target
	}
	return key, nil
}

// Refund gives n units back to key, up to each limit's quota. Units of a
// window that has ended are not given back to the next one. Refunding a
// rotated-out key refunds the key it was rotated to.
func (e *Engine) Refund(ctx context.Context, key string, n int64) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if err := checkAmount(n); err != nil {
		return err
	}
	for {
		ent := e.lookup(key)
		if ent == nil {
			return fmt.Errorf("%w: refund", ErrUnknownKey)
		}
		if ent.kind == 0 {
			k, t := e.resolve(ent.st.alias)
			if t == nil {
				return nil
			}
			key, ent = k, t
		}
		if e.refund(ent, n) {
			return nil
		}
		e.waitReplaced(key)
	}
}

func (e *Engine) refund(ent *entry, n int64) bool {
	now := e.now()
	st := ent.st
	if !ent.multi {
		l := st.limits[0].lim()
		for {
			w := atomic.LoadUint64(&ent.word)
			if w&sealedBit != 0 {
				return false
			}
			nw := l.refund(w&valueMask, n, now) | w&revokedBit
			if atomic.CompareAndSwapUint64(&ent.word, w, nw) {
				return true
			}
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&sealedBit != 0 {
			return false
		}
		l := st.limits[0].lim()
		if !atomic.CompareAndSwapUint64(&ent.word, w, l.refund(w&valueMask, n, now)|w&revokedBit) {
			continue
		}
		for i := 1; i < len(st.limits); i++ {
			l := st.limits[i].lim()
			st.more[i-1].Store(l.refund(st.more[i-1].Load(), n, now))
		}
		return true
	}
}

// lookup returns key's entry, promoting a recovered record first seen under
// its raw key. Nil if the key is unknown.
func (e *Engine) lookup(key string) *entry {
	if ent := e.m.Load(key); ent != nil {
		return ent
	}
	return e.promote(key)
}

// beginAdmin starts an administrative call: it fails after Close, and keeps
// Close waiting until endAdmin.
func (e *Engine) beginAdmin(key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	e.admin.RLock()
	if e.closed.Load() {
		e.admin.RUnlock()
		return ErrClosed
	}
	return nil
}

func (e *Engine) endAdmin() { e.admin.RUnlock() }

// Register adds key with the given limits, all full. A key that exists, even
// revoked or rotated out, gives ErrKeyExists. With a Store, the key is
// durable before Register returns.
func (e *Engine) Register(ctx context.Context, key string, limits ...Limit) error {
	specs, err := validateLimits(limits)
	if err != nil {
		return err
	}
	if err := e.beginAdmin(key); err != nil {
		return err
	}
	defer e.endAdmin()
	if e.lookup(key) != nil {
		return fmt.Errorf("%w: register", ErrKeyExists)
	}
	e.m.Lock(key)
	defer e.m.Unlock(key)
	if e.m.Load(key) != nil {
		return fmt.Errorf("%w: register", ErrKeyExists)
	}
	now := e.now()
	vals := make([]uint64, len(specs))
	for i := range specs {
		l := specs[i].lim()
		vals[i] = l.initial(now)
	}
	ent := newEntry(&keyState{id: IDOf(key), limits: specs}, false, vals)
	if err := e.save(ctx, &ent); err != nil {
		return err
	}
	e.m.Store(key, ent)
	return nil
}

// newEntry builds the entry for st with the given revoked flag and counter
// values (none for a rotated-out key).
func newEntry(st *keyState, revoked bool, vals []uint64) entry {
	ent := entry{st: st}
	if st.alias == nil {
		s0 := &st.limits[0]
		ent.kind, ent.quota, ent.period = s0.kind, s0.quota, s0.period
		ent.multi = len(st.limits) > 1
		st.more = make([]shard.Counter, len(st.limits)-1)
		for i := 1; i < len(vals); i++ {
			st.more[i-1].Store(vals[i])
		}
		ent.word = vals[0]
	}
	if revoked {
		ent.word |= revokedBit
	}
	return ent
}

// Revoke revokes key. Once Revoke returns, every Consume of key is denied
// with Reason Revoked; with a Store, this holds across restarts. Revoking
// the key a key was rotated to also ends the old key's grace. Revoking a
// revoked key does nothing.
func (e *Engine) Revoke(ctx context.Context, key string) error {
	if err := e.beginAdmin(key); err != nil {
		return err
	}
	defer e.endAdmin()
	if e.lookup(key) == nil {
		return fmt.Errorf("%w: revoke", ErrUnknownKey)
	}
	e.m.Lock(key)
	defer e.m.Unlock(key)
	ent := e.m.Load(key)
	if ent.kind == 0 {
		ent.st.mu.Lock() // waits for the alias's in-flight Consume
	}
	for {
		w := atomic.LoadUint64(&ent.word)
		if w&revokedBit != 0 || atomic.CompareAndSwapUint64(&ent.word, w, w|revokedBit) {
			break
		}
	}
	if ent.kind == 0 {
		ent.st.mu.Unlock()
	}
	// The flag is set in memory first: if the store fails, the key stays
	// revoked in this process and the caller learns it may not be on disk.
	return e.save(ctx, ent)
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
	vals = make([]uint64, len(st.limits))
	if len(vals) > 0 {
		vals[0] = w & valueMask
	}
	for i := 1; i < len(vals); i++ {
		vals[i] = st.more[i-1].Load()
	}
	return w&revokedBit != 0, vals
}

// unseal undoes seal after a failed change. Nothing else writes a sealed
// word, so a plain store is safe.
func unseal(ent *entry) {
	atomic.StoreUint64(&ent.word, atomic.LoadUint64(&ent.word)&^sealedBit)
}

// change replaces key's entry with the result of f, which receives the
// current entry's revoked flag and values. f returns the new keyState and
// values, or an error, in which case nothing changes.
func (e *Engine) change(ctx context.Context, key, op string, f func(ent *entry, revoked bool, vals []uint64) (*keyState, []uint64, error)) error {
	if err := e.beginAdmin(key); err != nil {
		return err
	}
	defer e.endAdmin()
	if e.lookup(key) == nil {
		return fmt.Errorf("%w: %s", ErrUnknownKey, op)
	}
	e.m.Lock(key)
	defer e.m.Unlock(key)
	ent := e.m.Load(key)
	if ent.kind == 0 {
		return fmt.Errorf("%w: %s", ErrRotated, op)
	}
	revoked, vals := seal(ent)
	st, nvals, err := f(ent, revoked, vals)
	if err == nil {
		st.track.Store(ent.st.track.Load())
		ne := newEntry(st, revoked, nvals)
		if err = e.save(ctx, &ne); err == nil {
			e.m.Store(key, ne)
			return nil
		}
	}
	unseal(ent)
	return err
}

// SetLimits replaces key's limits. Spending carries over between limits of
// the same name and kind: a Credits limit keeps what was spent (so its new
// balance is the new quota minus the units spent), a window keeps the units
// used in the current window, a Rate keeps its debt. Other limits start
// full. A revoked key stays revoked.
func (e *Engine) SetLimits(ctx context.Context, key string, limits ...Limit) error {
	specs, err := validateLimits(limits)
	if err != nil {
		return err
	}
	return e.change(ctx, key, "set limits", func(ent *entry, _ bool, vals []uint64) (*keyState, []uint64, error) {
		now := e.now()
		old := ent.st.limits
		nvals := make([]uint64, len(specs))
		for i := range specs {
			l := specs[i].lim()
			nvals[i] = l.initial(now)
			for j := range old {
				if old[j].Name() == specs[i].Name() {
					from := old[j].lim()
					nvals[i] = l.carry(&from, vals[j], now)
				}
			}
		}
		return &keyState{id: ent.st.id, limits: specs}, nvals, nil
	})
}

// TopUp adds n units to every Credits limit of key: to its balance and to
// its quota. It returns ErrNoCredits if the key has none.
func (e *Engine) TopUp(ctx context.Context, key string, n int64) error {
	if err := checkAmount(n); err != nil {
		return err
	}
	return e.change(ctx, key, "top up", func(ent *entry, _ bool, vals []uint64) (*keyState, []uint64, error) {
		specs := append([]spec(nil), ent.st.limits...)
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
			specs[i].quota += n
			nvals[i] += uint64(n)
		}
		if !found {
			return nil, nil, fmt.Errorf("%w: top up", ErrNoCredits)
		}
		return &keyState{id: ent.st.id, limits: specs}, nvals, nil
	})
}

// Rotate replaces oldKey by newKey. newKey takes over oldKey's limits and
// counters; oldKey keeps drawing on the same counters until grace has
// passed, and is revoked from then on (at once if grace is 0). Revoke of
// oldKey ends its grace early; Revoke of newKey ends both.
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
	if err := e.beginAdmin(oldKey); err != nil {
		return err
	}
	defer e.endAdmin()
	if e.lookup(oldKey) == nil {
		return fmt.Errorf("%w: rotate", ErrUnknownKey)
	}
	if e.lookup(newKey) != nil {
		return fmt.Errorf("%w: rotate", ErrKeyExists)
	}
	e.m.LockPair(oldKey, newKey)
	defer e.m.UnlockPair(oldKey, newKey)
	if e.m.Load(newKey) != nil {
		return fmt.Errorf("%w: rotate", ErrKeyExists)
	}
	oe := e.m.Load(oldKey)
	if oe.kind == 0 {
		return fmt.Errorf("%w: rotate", ErrRotated)
	}
	revoked, vals := seal(oe)
	if revoked {
		unseal(oe)
		return fmt.Errorf("%w: rotate", ErrKeyRevoked)
	}
	deadline := int64(math.MaxInt64)
	if now := e.now(); grace < time.Duration(math.MaxInt64-now) {
		deadline = now + int64(grace)
	}
	nst := &keyState{id: IDOf(newKey), limits: oe.st.limits}
	ne := newEntry(nst, false, vals)
	ast := &keyState{id: oe.st.id, alias: &alias{target: newKey, targetID: nst.id, deadline: deadline}}
	ae := newEntry(ast, grace == 0, nil)
	if err := e.save(ctx, &ne, &ae); err != nil {
		unseal(oe)
		return err
	}
	e.m.Store(newKey, ne)
	e.m.Store(oldKey, ae)
	return nil
}

// Status returns key's state without consuming.
func (e *Engine) Status(key string) (Status, error) {
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
	s, err := e.status(dst, key)
	if err != nil {
		return dst, err
	}
	return s.Limits, nil
}

func (e *Engine) status(dst []LimitStatus, key string) (Status, error) {
	if e.closed.Load() {
		return Status{}, ErrClosed
	}
	if err := checkKey(key); err != nil {
		return Status{}, err
	}
	for {
		ent := e.lookup(key)
		if ent == nil {
			return Status{}, fmt.Errorf("%w: status", ErrUnknownKey)
		}
		var s Status
		now := e.now()
		if ent.kind == 0 {
			a := ent.st.alias
			s.RotatedOut, s.GraceUntil = true, time.Unix(0, a.deadline)
			s.Revoked = atomic.LoadUint64(&ent.word)&revokedBit != 0 || now >= a.deadline
			if key, ent = e.resolve(a); ent == nil {
				s.Revoked = true
				s.Limits = dst
				return s, nil
			}
		}
		var vals [MaxLimits]uint64
		revoked, ok := snapshot(ent, &vals)
		if !ok {
			e.waitReplaced(key)
			continue
		}
		s.Revoked = s.Revoked || revoked
		for i := range ent.st.limits {
			l := ent.st.limits[i].lim()
			r := l.peek(vals[i], now)
			dst = append(dst, LimitStatus{Limit: ent.st.limits[i].Limit, Remaining: r.remaining, ResetAfter: time.Duration(r.reset)})
		}
		s.Limits = dst
		return s, nil
	}
}

// snapshot reads ent's flag and values consistently into vals; ok is false
// if ent is sealed (the values are then its final ones).
func snapshot(ent *entry, vals *[MaxLimits]uint64) (revoked, ok bool) {
	st := ent.st
	if ent.multi {
		st.mu.Lock()
		defer st.mu.Unlock()
	}
	w := atomic.LoadUint64(&ent.word)
	vals[0] = w & valueMask
	for i := 1; i < len(st.limits); i++ {
		vals[i] = st.more[i-1].Load()
	}
	return w&revokedBit != 0, w&sealedBit == 0
}

// Close ends the engine: later calls return ErrClosed. With a Store, it
// writes every key's counters and closes the store. Close waits for
// administrative calls in flight. It is idempotent: calls after the first
// return ErrClosed.
func (e *Engine) Close() error {
	e.admin.Lock()
	defer e.admin.Unlock()
	if !e.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	if e.store == nil {
		return nil
	}
	err := e.flush(context.Background())
	if cerr := e.store.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%w: close: %w", ErrStore, cerr)
	}
	return err
}
