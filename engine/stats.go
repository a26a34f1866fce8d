package engine

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/puzpuzpuz/xsync/v3"
)

// Stats is a snapshot of what an engine has done and holds, for metrics
// (package metrics/allotprom exports it to Prometheus) and health checks.
// Counters only grow; the key and in-flight figures are read when Stats is
// called.
type Stats struct {
	// Decisions by reason: Consume and Admit calls that returned a
	// Decision (calls that returned an error are in none of them).
	Granted, Exhausted, Revoked, UnknownKey int64
	// ShadowDenied counts the Exhausted denials that their caller let
	// through all the same and reported with CountShadowDenied (the
	// middleware's shadow mode, httpadapter.WithShadow). They stay counted
	// in Exhausted, which is what the engine decided, so every counter only
	// grows: Exhausted - ShadowDenied is the denials that were enforced.
	ShadowDenied int64
	// UnitsGranted is the sum of the units of every grant.
	UnitsGranted int64

	// Store rounds: each one Save (one synced transaction) of the records
	// that had queued up, or of Close's final flush (1,024 keys a Save),
	// and the reservations they made durable.
	Rounds, Records, Reservations int64
	// RoundLatency is the distribution of the rounds' Save times.
	RoundLatency Histogram
	// StoreErrors counts the rounds whose Save failed; LastStoreError is
	// the last one's error (nil if none), at LastStoreErrorAt.
	StoreErrors      int64
	LastStoreError   error
	LastStoreErrorAt time.Time

	// Keys by state (a recovered key not yet named since a restart counts
	// in Recovered only).
	Keys                               int64 // registered keys that are not rotated out, revoked or not
	RevokedKeys, RotatedOut, Recovered int64
	// InFlight is the number of requests admitted by Admit and not yet Done.
	InFlight int64
}

// Histogram is a cumulative histogram in seconds, as Prometheus has them:
// Counts[i] is the number of observations at or below Bounds[i].
type Histogram struct {
	Bounds []float64
	Counts []uint64
	Count  uint64
	Sum    float64 // seconds
}

// roundBounds are the upper bounds of the round latency histogram, in
// seconds: a synced write takes from tens of microseconds (tmpfs) to tens
// of milliseconds (a busy disk).
var roundBounds = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// counters are an engine's decision counters: striped (xsync.Counter), so
// that Consumes on many cores do not contend on them.
type counters struct {
	granted, exhausted, revoked, unknown, units, shadow *xsync.Counter
}

func newCounters() *counters {
	return &counters{xsync.NewCounter(), xsync.NewCounter(), xsync.NewCounter(), xsync.NewCounter(), xsync.NewCounter(), xsync.NewCounter()}
}

// count records a Decision.
func (c *counters) count(d *Decision) {
	switch d.Reason {
	case OK:
		c.granted.Inc()
		c.units.Add(d.n)
	case Exhausted:
		c.exhausted.Inc()
	case Revoked:
		c.revoked.Inc()
	case UnknownKey:
		c.unknown.Inc()
	}
}

// CountShadowDenied records, for Stats.ShadowDenied, that the caller did
// not enforce d, an Exhausted denial this engine returned: it let the
// request through all the same, as a shadow mode does to try a limit out
// without refusing anyone (httpadapter.WithShadow calls it). Call it at
// most once per Decision. A Decision of any other Reason is not counted,
// and without WithCounting nothing is. It does not allocate.
func (e *Engine) CountShadowDenied(d Decision) {
	if c := e.count; c != nil && d.Reason == Exhausted {
		c.shadow.Inc()
	}
}

// storeStats is what the committer records of its rounds.
type storeStats struct {
	reservations atomic.Int64
	errors       atomic.Int64
	mu           sync.Mutex
	lastErr      error
	lastErrAt    time.Time
	hist         [15]atomic.Uint64 // one per bound, and +Inf
	sumNs        atomic.Int64
}

func (s *storeStats) observe(d time.Duration) {
	sec := d.Seconds()
	i := 0
	for i < len(roundBounds) && sec > roundBounds[i] {
		i++
	}
	s.hist[i].Add(1)
	s.sumNs.Add(int64(d))
}

// save is one Save of Close's final flush, counted as a round: its
// records, its latency and its error.
func (c *committer) save(ctx context.Context, recs []Record) error {
	return c.call(len(recs), func() error { return c.env.save(ctx, recs...) })
}

// failed records a round's store error and logs it.
func (s *storeStats) failed(log *slog.Logger, err error, recs int) {
	s.errors.Add(1)
	s.mu.Lock()
	s.lastErr, s.lastErrAt = err, time.Now()
	s.mu.Unlock()
	if log != nil {
		log.LogAttrs(context.Background(), slog.LevelError, "allot: store write failed; grants beyond durable reservations are refused until it recovers",
			slog.Int("records", recs), slog.String("error", err.Error()))
	}
}

// Stats returns a snapshot of the engine's counts. It walks the key map for
// the key and in-flight figures (no lock: Consume goes on), so its cost
// grows with the number of keys; call it at scrape time, not per request.
// Without WithCounting the decision counters are 0.
func (e *Engine) Stats() Stats {
	var s Stats
	if c := e.count; c != nil {
		s.Granted, s.Exhausted, s.Revoked, s.UnknownKey = c.granted.Value(), c.exhausted.Value(), c.revoked.Value(), c.unknown.Value()
		s.UnitsGranted, s.ShadowDenied = c.units.Value(), c.shadow.Value()
	}
	s.RoundLatency.Bounds = roundBounds
	s.RoundLatency.Counts = make([]uint64, len(roundBounds))
	if e.c != nil {
		ss := &e.c.stats
		s.Rounds, s.Records, s.Reservations = e.c.rounds.Load(), e.c.records.Load(), ss.reservations.Load()
		s.StoreErrors = ss.errors.Load()
		ss.mu.Lock()
		s.LastStoreError, s.LastStoreErrorAt = ss.lastErr, ss.lastErrAt
		ss.mu.Unlock()
		var cum uint64
		for i := range roundBounds {
			cum += ss.hist[i].Load()
			s.RoundLatency.Counts[i] = cum
		}
		s.RoundLatency.Count = cum + ss.hist[len(roundBounds)].Load()
		s.RoundLatency.Sum = time.Duration(ss.sumNs.Load()).Seconds()
	}
	seen := map[*tracker]bool{}
	e.m.Range(func(key string, ent *entry) bool {
		switch {
		case ent.st.alias != nil && ent.st.alias.forward:
			return true
		case len(key) > 0 && key[0] == recoveredPrefix[0]:
			s.Recovered++
		case ent.kind() == 0:
			s.RotatedOut++
		case atomic.LoadUint64(&ent.word)&revokedBit != 0:
			s.Keys++
			s.RevokedKeys++
		default:
			s.Keys++
		}
		if t := ent.st.track.Load(); t != nil && !seen[t] {
			seen[t] = true
			s.InFlight += t.n.Load()
		}
		return true
	})
	return s
}
