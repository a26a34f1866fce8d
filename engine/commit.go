package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine/internal/quota"
	"github.com/allot-go/allot/shard"
)

// LeaseOptions say how an engine with a Store makes grants durable; pass
// them to New with WithLease. A zero MinChunk or MaxChunk takes its default,
// so LeaseOptions{Exact: true} is exact mode and LeaseOptions{MaxChunk: 1024}
// lease mode with reservations of 64 to 1024 units.
//
// In lease mode (the default) a limit hands out units from a durable
// reservation of MinChunk to MaxChunk units (its chunk), and the next
// reservation is written in the background when half of the current one is
// used. The chunk doubles while a key needs a new reservation within a
// second of the last, and halves when it needs one after more than 10 s. A crash
// loses, per limit of each key in use, at most the unused rest of its
// reservation: never more than MaxChunk units (for a Rate limit, MaxChunk
// emission intervals), never a unit gained. A clean Close loses nothing.
//
// In exact mode every granted Consume is durable before it returns;
// concurrent Consumes share one write and one sync (group commit).
type LeaseOptions struct {
	// MinChunk is the smallest reservation, and the first. Default (0):
	// 64, or MaxChunk if that is smaller.
	MinChunk int64
	// MaxChunk is the largest reservation, and so the most a crash can
	// lose per limit of a key. Default (0): 65536, or MinChunk if that is
	// larger.
	MaxChunk int64
	// Exact makes every grant durable before Consume returns.
	Exact bool
}

// DefaultLeaseOptions returns MinChunk 64, MaxChunk 65536, lease mode.
func DefaultLeaseOptions() LeaseOptions { return LeaseOptions{MinChunk: 64, MaxChunk: 1 << 16} }

// withDefaults fills in a zero MinChunk or MaxChunk.
func (o LeaseOptions) withDefaults() LeaseOptions {
	d := DefaultLeaseOptions()
	if o.MinChunk == 0 {
		o.MinChunk = d.MinChunk
		if o.MaxChunk > 0 {
			o.MinChunk = min(o.MinChunk, o.MaxChunk)
		}
	}
	if o.MaxChunk == 0 {
		o.MaxChunk = max(d.MaxChunk, o.MinChunk)
	}
	return o
}

func (o LeaseOptions) validate() error {
	if o.MinChunk < 1 || o.MaxChunk < o.MinChunk || o.MaxChunk > 1<<40 {
		return fmt.Errorf("%w: lease chunks %d to %d: need 1 <= MinChunk <= MaxChunk <= 2^40", ErrInvalidOption, o.MinChunk, o.MaxChunk)
	}
	return nil
}

// committer is the one goroutine that writes to the Store. Requests queue
// up while it writes; each round writes all of them in one Save (one
// synced transaction), then wakes everyone who waited for that round.
// Records of live entries are built when the round starts, from memory, so a
// later round never writes an older state of a key than an earlier one, and
// a reservation is raised in memory only after its round is durable.
type committer struct {
	e    *Engine
	opts LeaseOptions

	mu       sync.Mutex
	pending  []*entry        // live entries to write (reservations, revocations, exact grants)
	explicit []*pendingWrite // records of entries not yet published (administrative changes)
	cur      *batch          // the round the next request joins
	closed   bool
	wake     chan struct{}
	stop     chan struct{}
	stopped  chan struct{}

	rounds, records atomic.Int64
	stats           storeStats
	flushErr        error // the last round's, read by Close after stopped
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

func newCommitter(e *Engine, o LeaseOptions) *committer {
	return &committer{e: e, opts: o, cur: newBatch(), wake: make(chan struct{}, 1),
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
type pendingWrite struct{ recs []Record }

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
		ent.st.queued.Store(false)
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
		b.err = c.e.flush(context.Background())
		c.flushErr = b.err
		return
	}
	if len(pend)+len(expl) == 0 {
		return
	}
	now := c.e.now()
	if now < 0 && len(pend) > 0 {
		b.err = c.e.clockErr()
		return
	}
	var recs []Record
	for _, w := range expl {
		recs = append(recs, w.recs...)
	}
	raises := make([]raise, 0, len(pend))
	for i, ent := range pend {
		rec, r, ok := c.build(ent, wants[i], now)
		if !ok {
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
	start := time.Now()
	err := c.e.store.Save(context.Background(), recs...)
	c.stats.observe(time.Since(start))
	if err != nil {
		b.err = err
		c.stats.failed(c.e.log, err, len(recs))
		return
	}
	c.rounds.Add(1)
	c.records.Add(int64(len(recs)))
	c.stats.reservations.Add(int64(len(raises)))
	for _, r := range raises {
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
}

// build returns the record of a live entry and, in lease mode, the
// reservation it makes durable. A sealed entry is skipped: the call that
// sealed it writes its successor.
func (c *committer) build(ent *entry, want, now int64) (Record, raise, bool) {
	st := ent.st
	if st.alias != nil || !c.e.leased {
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
	switch since := now - st.lastReserve; {
	case st.lastReserve == 0:
		st.chunk = max(st.chunk, c.opts.MinChunk)
	case since < int64(time.Second):
		st.chunk = min(2*st.chunk, c.opts.MaxChunk)
	case since > int64(10*time.Second):
		st.chunk = max(st.chunk/2, c.opts.MinChunk)
	}
	st.lastReserve = now
	chunk := max(st.chunk, want)
	r := raise{ent: ent}
	if st.id == nil {
		id := idOfKey(shard.KeyOf(ent))
		st.id = &id
	}
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
