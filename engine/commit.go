package engine

import (
	"context"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine/internal/quota"
	"github.com/allot-go/allot/shard"
)

// committer is the one goroutine that writes to the Store. Requests queue
// up while it writes; each round writes all of them in one Save (one
// synced transaction), then wakes everyone who waited for that round.
// Records of live entries are built when the round starts, from memory, so a
// later round never writes an older state of a key than an earlier one, and
// a reservation is raised in memory only after its round is durable.
type committer struct {
	env commitEnv

	mu       sync.Mutex
	pending  []*entry        // live entries to write (reservations, revocations, exact grants)
	explicit []*pendingWrite // records of entries not yet published (administrative changes)
	cur      *batch          // the round the next request joins
	closed   bool
	wake     chan struct{}
	stop     chan struct{}
	stopped  chan struct{}

	rounds, records atomic.Int64
	rtt             atomic.Int64 // with a Pool: how long the last Reserve took, ns
	// unsure is set once a round's Save failed: the store may then hold
	// other records than memory says it does (a failure need not mean
	// that nothing landed), so Close writes every key again.
	unsure   atomic.Bool
	stats    storeStats
	flushErr error // the last round's, read by Close after stopped
}

// maxRound is the most live entries one round writes (administrative records
// always go whole, so that a Rotate's two records share a transaction).
const maxRound = 4096

// batch is one round of the committer.
type batch struct {
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// commitEnv is all the committer knows of the engine: the seam between
// them, so that data flows one way. The engine queues entries and records
// (request, ask, write); the committer builds each round and hands it to the
// store through save; the engine reads the outcome from the round's batch.
// Nothing here calls back into the engine's state but now and every. A
// store that grants reservations itself (a shared one, which may grant less
// than it was asked) is meant to reuse the committer behind this seam: save
// is where a round's reservations are granted, and apply raises the marks
// that the round made durable.
type commitEnv struct {
	save     func(ctx context.Context, recs ...Record) error // the Store's Save
	now      func() int64                                    // the engine's clock, ns since the epoch; -1 out of range
	clockErr func() error                                    // the error of a clock out of range
	// every yields the record of every key as it is, reservations given
	// back; the last round (Close, after sealing every entry) writes them.
	// With all false, it may leave out, in lease mode, the keys whose
	// record the store holds already as it would write it (durable).
	every  func(all bool) iter.Seq[Record]
	log    *slog.Logger // failed background writes; nil for none
	leased bool         // lease mode: a live entry's record carries a new reservation
	opts   LeaseOptions
	// shared, with a Pool, makes each round's reservations (and the
	// last round's give-back) instead of records of reservations: the
	// pool, not the committer, decides what each gets (pool.go).
	shared sharedRounds
}

// sharedRounds is what the committer asks of an engine with a Pool.
type sharedRounds interface {
	sharedRound(c *committer, pend []*entry, wants []int64, expl []*pendingWrite, b *batch, now int64)
	sharedFlush(c *committer) error
}

func newCommitter(env commitEnv) *committer {
	return &committer{env: env, cur: newBatch(), wake: make(chan struct{}, 1),
		stop: make(chan struct{}), stopped: make(chan struct{})}
}

var closedBatch = func() *batch {
	b := &batch{done: make(chan struct{}), err: ErrClosed}
	close(b.done)
	return b
}()

// request asks for ent's record to be written (with a new reservation, in
// lease mode, of at least want units) and returns the round that will.
func (c *committer) request(ent *entry, want int64) *batch {
	return c.enqueue(func() {
		st := ent.st
		if !st.queued.Load() {
			st.queued.Store(true)
			c.pending = append(c.pending, ent)
		}
		st.want = max(st.want, want)
	})
}

// ask is request without waiting: the next reservation, in the background.
// A key already queued costs one atomic load, not the committer's mutex, so
// that the Consumes that pass a soft mark before the reservation lands do not
// queue on it.
func (c *committer) ask(ent *entry) {
	if !ent.st.queued.Load() {
		c.request(ent, 0)
	}
}

// pendingWrite is the records of one administrative call, written whole.
type pendingWrite struct {
	recs []Record
	err  error // its own outcome, where the round does not share one (a Pool); set before the round's batch is done
}

// write queues records built by an administrative call.
func (c *committer) write(w *pendingWrite) *batch {
	return c.enqueue(func() { c.explicit = append(c.explicit, w) })
}

// cancel takes w out of the queue if no round has taken it yet, and reports
// whether it did: then w will never reach the store.
func (c *committer) cancel(w *pendingWrite) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.explicit {
		if x == w {
			c.explicit = append(c.explicit[:i], c.explicit[i+1:]...)
			return true
		}
	}
	return false
}

// enqueue runs add under the committer's mutex, wakes the committer and
// returns the round that will carry what add queued (a finished round with
// ErrClosed once the committer has stopped).
func (c *committer) enqueue(add func()) *batch {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return closedBatch
	}
	add()
	b := c.cur
	c.mu.Unlock()
	c.signal()
	return b
}

// signal wakes the committer, if it is not awake already.
func (c *committer) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *committer) run() {
	defer close(c.stopped)
	for {
		select {
		case <-c.wake:
			c.round(false)
		case <-c.stop:
			c.round(true)
			return
		}
	}
}

type raise struct {
	ent   *entry
	marks [MaxLimits]quota.Marks
	from  [MaxLimits]uint64 // the hard marks the new ones were built from
}

// round writes what has queued up. The last round (at Close) writes every
// key as it is instead: Close has sealed them all.
func (c *committer) round(last bool) {
	c.mu.Lock()
	pend, expl, b := c.pending, c.explicit, c.cur
	c.pending, c.explicit = nil, nil
	if len(pend) > maxRound && !last {
		// Keep a round's transaction small; the rest goes next round,
		// whose batch the entries' waiters then wait for.
		pend, c.pending = pend[:maxRound], append([]*entry(nil), pend[maxRound:]...)
		c.signal()
	}
	wants := make([]int64, len(pend))
	for i, ent := range pend {
		if !last {
			// The last round leaves the flag set: Close writes the
			// keys still queued, whether or not they look durable.
			ent.st.queued.Store(false)
		}
		wants[i], ent.st.want = ent.st.want, 0
	}
	if last {
		c.closed = true
	} else {
		c.cur = newBatch()
	}
	c.mu.Unlock()
	defer close(b.done)
	if last {
		if c.env.shared != nil {
			b.err = c.env.shared.sharedFlush(c)
		} else {
			b.err = c.flush(context.Background())
		}
		c.flushErr = b.err
		return
	}
	if len(pend)+len(expl) == 0 {
		return
	}
	now := c.env.now()
	if now < 0 && len(pend) > 0 {
		b.err = c.env.clockErr()
		return
	}
	var recs []Record
	for _, w := range expl {
		recs = append(recs, w.recs...)
	}
	if c.env.shared != nil {
		c.env.shared.sharedRound(c, pend, wants, expl, b, now)
		return
	}
	raises := make([]raise, 0, len(pend))
	for i, ent := range pend {
		rec, r, ok := c.build(ent, wants[i], now)
		if !ok {
			ent.st.unsaved.Store(true)
			continue
		}
		recs = append(recs, rec)
		if r.ent != nil {
			raises = append(raises, r)
		}
	}
	if len(recs) == 0 {
		return
	}
	if b.err = c.call(len(recs), func() error { return c.env.save(context.Background(), recs...) }); b.err != nil {
		c.unsure.Store(true)
		return
	}
	c.stats.reservations.Add(int64(len(raises)))
	for _, r := range raises {
		c.apply(r)
	}
}

// apply raises the marks of a reservation that its round made durable.
func (c *committer) apply(r raise) {
	for i := range r.ent.st.limits() {
		l := r.ent.st.limits()[i].lim()
		m := r.ent.marks(i)
		for {
			// A refund that moved the mark while the round was
			// writing moves the new mark as much: otherwise the
			// new mark would undo it and no later round would
			// write it.
			cur := atomic.LoadUint64(&m.Hard)
			nh := r.marks[i].Hard
			if cur != r.from[i] {
				if t, ok := l.Tighten(nh, r.from[i], cur); ok {
					nh = t
				}
			}
			if atomic.CompareAndSwapUint64(&m.Hard, cur, nh) {
				break
			}
		}
		atomic.StoreUint64(&m.Soft, r.marks[i].Soft)
	}
}

// flush writes every record env.every yields, in Saves of flushBatch
// records: the last round, at Close. In lease mode, and if no round failed,
// it leaves out the keys the store holds already as they are (see
// durable): with 1% of a million keys used since a restart, Close writes
// 1% of them.
func (c *committer) flush(ctx context.Context) error {
	recs := make([]Record, 0, flushBatch)
	var err error
	all := !c.env.leased || c.unsure.Load()
	c.env.every(all)(func(r Record) bool {
		recs = append(recs, r)
		if len(recs) == flushBatch {
			err = c.save(ctx, recs)
			recs = recs[:0]
		}
		return err == nil
	})
	if err == nil && len(recs) > 0 {
		err = c.save(ctx, recs)
	}
	if err != nil {
		return wrapStore("flush", err)
	}
	return nil
}

// flushBatch is the most records one Save of the last round carries.
const flushBatch = 1024

// build returns the record of a live entry and, in lease mode, the
// reservation it makes durable. A sealed entry is skipped: the call that
// sealed it writes its successor.
func (c *committer) build(ent *entry, want, now int64) (Record, raise, bool) {
	st := ent.st
	if st.alias != nil || !c.env.leased {
		var vals [MaxLimits]uint64
		if _, ok := snapshot(ent, &vals); !ok {
			return Record{}, raise{}, false
		}
		return recordOf(ent, idOfKey(shard.KeyOf(ent)), false), raise{}, true
	}
	var vals [MaxLimits]uint64
	revoked, ok := snapshot(ent, &vals)
	if !ok {
		return Record{}, raise{}, false
	}
	chunk := c.chunk(ent, want, now)
	r := raise{ent: ent}
	rec := Record{ID: *st.id, Revoked: revoked, Registration: st.reg, Limits: make([]Limit, len(st.limits())), Counters: make([]uint64, len(st.limits()))}
	for i := range st.limits() {
		l := st.limits()[i].lim()
		r.from[i] = atomic.LoadUint64(&ent.marks(i).Hard)
		r.marks[i] = l.Reserve(vals[i], r.from[i], chunk, now)
		rec.Limits[i] = st.limits()[i].Limit
		rec.Counters[i] = r.marks[i].Hard
	}
	return rec, r, true
}

// chunk adapts the reservation size of ent's key to its rate of use and
// returns the size of its next reservation, at least want; it also notes
// the key's ID, which the record needs.
func (c *committer) chunk(ent *entry, want, now int64) int64 {
	st := ent.st
	switch since := now - st.lastReserve; {
	case st.lastReserve == 0:
		st.chunk = max(st.chunk, c.env.opts.MinChunk)
	case since < int64(time.Second):
		st.chunk = min(2*st.chunk, c.env.opts.MaxChunk)
	case since > int64(10*time.Second):
		st.chunk = max(st.chunk/2, c.env.opts.MinChunk)
	}
	st.lastReserve = now
	if st.id == nil {
		id := idOfKey(shard.KeyOf(ent))
		st.id = &id
	}
	return max(st.chunk, want)
}

// call runs one call to the store for a round of n records, and counts it:
// its latency, and either a round of n records or a failure.
func (c *committer) call(n int, f func() error) error {
	start := time.Now()
	err := f()
	c.stats.observe(time.Since(start))
	if err != nil {
		c.stats.failed(c.env.log, err, n)
		return err
	}
	c.rounds.Add(1)
	c.records.Add(int64(n))
	return nil
}
