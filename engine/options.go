package engine

import (
	"fmt"
	"log/slog"
	"runtime"
	"time"
)

// Option configures an Engine in New.
type Option func(*options)

type options struct {
	counting bool
	logger   *slog.Logger
	clock    func() time.Time
	shards   int
	store    Store
	badClock bool
	lease    LeaseOptions
}

// WithLease sets how an engine with a Store makes grants durable: lease
// mode with the given chunks, or exact mode (see LeaseOptions). It is the
// one place to choose: WithLease(LeaseOptions{Exact: true}) for exact mode.
// Default: DefaultLeaseOptions(), lease mode. Without a Store it has no
// effect.
func WithLease(o LeaseOptions) Option {
	return func(op *options) { op.lease = o }
}

// WithClock makes the engine read the time from now instead of the system's
// monotonic clock. Tests use it to pin instants; now must be safe for
// concurrent use. A clock that steps back never grants a unit twice: a
// window stays current and a rate's arrival time stays where it was.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		o.clock = now
		o.badClock = now == nil
	}
}

// WithShards sets the number of stripes of the key map, a power of two
// from 1 to 65536. Lookups never lock, so stripes only spread the locks of
// administrative calls, which with a Store hold their stripe while their
// record is synced: more stripes let more of them share one sync. Default:
// the power of two at or above 4×GOMAXPROCS, and at least 256.
func WithShards(n int) Option { return func(o *options) { o.shards = n } }

// WithCounting makes the engine count its decisions by reason and the units
// it grants, for Stats (and package metrics/allotprom). The counters are
// striped (xsync.Counter), so Consumes on many cores do not contend on
// them; they still cost an increment per call, which is why they are off by
// default. The store figures of Stats are always kept.
func WithCounting() Option { return func(o *options) { o.counting = true } }

// WithLogger makes the engine log what no caller can be told: a background
// store write that failed. Without it nothing is logged. No raw key is ever
// logged.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithStore makes the engine keep its keys in s (see package persist). The
// engine loads s in New and closes it in Close. Default: none; everything
// lives in memory and is gone with the process.
func WithStore(s Store) Option { return func(o *options) { o.store = s } }

func defaultOptions() options {
	n := 256
	for n < 4*runtime.GOMAXPROCS(0) {
		n *= 2
	}
	return options{shards: n, lease: DefaultLeaseOptions()}
}

func (o *options) validate() error {
	if o.badClock {
		return fmt.Errorf("%w: nil clock", ErrInvalidOption)
	}
	return nil
}

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
