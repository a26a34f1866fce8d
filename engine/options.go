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
