package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/stretchr/testify/require"
)

// memStore is a Store in a map, for testing the engine's side of the
// interface.
type memStore struct {
	mu      sync.Mutex
	recs    map[engine.KeyID]engine.Record
	saves   int
	fail    error
	loadErr error
	closed  bool
}

func newMemStore() *memStore { return &memStore{recs: map[engine.KeyID]engine.Record{}} }

func (s *memStore) Load(_ context.Context, fn func(engine.Record) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadErr != nil {
		return s.loadErr
	}
	s.closed = false
	for _, r := range s.recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) Save(_ context.Context, recs ...engine.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if s.closed {
		return errors.New("closed")
	}
	s.saves++
	for _, r := range recs {
		if r.Deleted {
			delete(s.recs, r.ID)
			continue
		}
		r.Counters = append([]uint64(nil), r.Counters...)
		s.recs[r.ID] = r
	}
	return nil
}

func (s *memStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func TestStoreRoundTrip(t *testing.T) {
	clk := newClock(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC))
	st := newMemStore()
	eng, err := engine.New(engine.WithStore(st), engine.WithClock(clk.Now))
	require.NoError(t, err)
	require.NoError(t, eng.Register(ctx, "a", engine.Credits(100)))
	require.NoError(t, eng.Register(ctx, "b", engine.Credits(50), engine.PerWindow(10, time.Hour).Named("hourly"), engine.Rate(1, time.Second, 5)))
	require.NoError(t, eng.Register(ctx, "r", engine.Credits(5)))
	require.Equal(t, 3, st.saves, "each registration is saved before it returns")
	_, _ = eng.Consume(ctx, "a", 30)
	_, _ = eng.Consume(ctx, "b", 4)
	require.NoError(t, eng.Revoke(ctx, "r"))
	require.NoError(t, eng.Rotate(ctx, "a", "a2", time.Hour))
	require.NoError(t, eng.Close())
	require.Len(t, st.recs, 4)
	for _, raw := range []string{"a", "b", "r", "a2"} {
		require.Contains(t, st.recs, engine.IDOf(raw), "keys reach the store only as digests")
	}
	require.Equal(t, engine.IDOf("a2"), *st.recs[engine.IDOf("a")].RotatedTo)

	eng, err = engine.New(engine.WithStore(st), engine.WithClock(clk.Now))
	require.NoError(t, err)
	defer eng.Close()
	d, _ := eng.Consume(ctx, "unknown", 1)
	require.Equal(t, engine.UnknownKey, d.Reason)
	require.ErrorIs(t, eng.Register(ctx, "b", engine.Credits(1)), engine.ErrKeyExists, "a recovered key exists before it is used")
	s, err := eng.Status("b")
	require.NoError(t, err)
	require.Equal(t, []int64{46, 6, 1}, remaining(s))
	require.Equal(t, "hourly", s.Limits[1].Limit.Name())
	d, _ = eng.Consume(ctx, "r", 1)
	require.Equal(t, engine.Revoked, d.Reason, "a revocation survives a restart")
	// The rotated-out key resolves to its new key, first used after it.
	d, _ = eng.Consume(ctx, "a", 1)
	requireDecision(t, engine.Decision{Allowed: true, Limit: 100, Remaining: 69}, d)
	d, _ = eng.Consume(ctx, "a2", 1)
	requireDecision(t, engine.Decision{Allowed: true, Limit: 100, Remaining: 68}, d)
	d, _ = eng.Consume(ctx, "a", 1)
	require.Equal(t, int64(67), d.Remaining)
	clk.Add(time.Hour)
	d, _ = eng.Consume(ctx, "a", 1)
	require.Equal(t, engine.Revoked, d.Reason)
}

func TestStoreFailureChangesNothing(t *testing.T) {
	st := newMemStore()
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	defer eng.Close()
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(10)))
	st.fail = errors.New("disk on fire")

	err = eng.Register(ctx, "new", engine.Credits(1))
	require.ErrorIs(t, err, engine.ErrStore)
	d, _ := eng.Consume(ctx, "new", 1)
	require.Equal(t, engine.UnknownKey, d.Reason, "a registration that was not saved does not exist")

	require.ErrorIs(t, eng.SetLimits(ctx, "k", engine.Credits(1)), engine.ErrStore)
	require.ErrorIs(t, eng.TopUp(ctx, "k", 5), engine.ErrStore)
	require.ErrorIs(t, eng.Rotate(ctx, "k", "k2", time.Hour), engine.ErrStore)
	d, _ = eng.Consume(ctx, "k", 1)
	requireDecision(t, engine.Decision{Allowed: true, Limit: 10, Remaining: 9}, d, "failed changes leave the key as it was, and usable")
	d, _ = eng.Consume(ctx, "k2", 1)
	require.Equal(t, engine.UnknownKey, d.Reason)

	// A failed revocation still revokes in memory: failing safe.
	require.ErrorIs(t, eng.Revoke(ctx, "k"), engine.ErrStore)
	d, _ = eng.Consume(ctx, "k", 1)
	require.Equal(t, engine.Revoked, d.Reason)
	st.fail = nil
}

func TestStoreLoadRejectsBadRecords(t *testing.T) {
	for name, rec := range map[string]engine.Record{
		"no limits":      {ID: engine.IDOf("x")},
		"bad limit":      {ID: engine.IDOf("x"), Limits: []engine.Limit{engine.Credits(-1)}, Counters: []uint64{0}},
		"counters count": {ID: engine.IDOf("x"), Limits: []engine.Limit{engine.Credits(1)}},
	} {
		st := newMemStore()
		st.recs[rec.ID] = rec
		_, err := engine.New(engine.WithStore(st))
		require.ErrorIs(t, err, engine.ErrStore, name)
	}
}

// A counter beyond any state its limit can reach loads as spent: one bad
// record neither grants anything nor keeps the other keys from loading.
func TestStoreLoadClampsCounters(t *testing.T) {
	st := newMemStore()
	for i, l := range []engine.Limit{engine.Credits(10), engine.Rate(1, time.Second, 5)} {
		id := engine.IDOf(fmt.Sprint("bad", i))
		st.recs[id] = engine.Record{ID: id, Limits: []engine.Limit{l}, Counters: []uint64{1<<63 | 5}}
	}
	st.recs[engine.IDOf("good")] = engine.Record{ID: engine.IDOf("good"), Limits: []engine.Limit{engine.Credits(10)}, Counters: []uint64{3}}
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	defer eng.Close()
	for i := range 2 {
		d, err := eng.Consume(ctx, fmt.Sprint("bad", i), 1)
		require.NoError(t, err)
		require.False(t, d.Allowed)
	}
	s, err := eng.Status("good")
	require.NoError(t, err)
	require.Equal(t, []int64{7}, remaining(s))
}

func (s *memStore) clone() *memStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := newMemStore()
	for id, r := range s.recs {
		r.Counters = append([]uint64(nil), r.Counters...)
		c.recs[id] = r
	}
	return c
}

// A crash is a copy of the store taken while the engine runs; the restart
// opens an engine on the copy. With leases, every grant made before the copy
// must be covered (no over-grant), and at most MaxChunk units per limit may
// be lost.
func TestLeaseCrashNeverOverGrants(t *testing.T) {
	clk := newClock(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC))
	lo := engine.LeaseOptions{MinChunk: 4, MaxChunk: 64}
	limits := map[string][]engine.Limit{
		"credits": {engine.Credits(20_000)},
		"window":  {engine.PerWindow(20_000, time.Hour)},
		"rate":    {engine.Rate(1, time.Millisecond, 20_000)},
		"multi":   {engine.Credits(20_000), engine.PerWindow(30_000, time.Hour)},
	}
	for name, ls := range limits {
		t.Run(name, func(t *testing.T) {
			st := newMemStore()
			eng, err := engine.New(engine.WithStore(st), engine.WithClock(clk.Now), engine.WithLease(lo))
			require.NoError(t, err)
			require.NoError(t, eng.Register(ctx, "k", ls...))
			var granted atomic.Int64
			for round := range 5 {
				var wg sync.WaitGroup
				for range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range 300 + 100*round {
							d, err := eng.Consume(ctx, "k", 1)
							require.NoError(t, err)
							if d.Allowed {
								granted.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				crash := st.clone()
				g := granted.Load()
				re, err := engine.New(engine.WithStore(crash), engine.WithClock(clk.Now), engine.WithLease(lo))
				require.NoError(t, err)
				s, err := re.Status("k")
				require.NoError(t, err)
				for _, l := range s.Limits {
					quota := l.Limit.Quota()
					require.LessOrEqual(t, l.Remaining, quota-g, "%s: a restart must not give back granted units", l.Limit.Name())
					require.GreaterOrEqual(t, l.Remaining, quota-g-2*lo.MaxChunk, "%s: lost more than the bound", l.Limit.Name())
				}
				// The restarted engine grants what it has, and the sum stays within quota.
				more := hammer(t, re, "k", 4, 10_000)
				require.LessOrEqual(t, g+more, int64(20_000))
				require.NoError(t, re.Close())
			}
			st2 := eng.Stats()
			require.Positive(t, st2.Rounds)
			require.NoError(t, eng.Close())
			// A clean Close gives every reservation back: exact.
			re, err := engine.New(engine.WithStore(st), engine.WithClock(clk.Now), engine.WithLease(lo))
			require.NoError(t, err)
			s, _ := re.Status("k")
			require.Equal(t, s.Limits[0].Limit.Quota()-granted.Load(), s.Limits[0].Remaining, "clean restart is exact")
			require.NoError(t, re.Close())
		})
	}
}

// WithLease is the one way to choose the mode; a zero chunk bound takes its
// default, so LeaseOptions{Exact: true} alone is exact mode.
func TestLeaseOptionsZeroTakesDefaults(t *testing.T) {
	afterCrash := func(lo engine.LeaseOptions, quota int64) int64 {
		st := newMemStore()
		eng, err := engine.New(engine.WithStore(st), engine.WithLease(lo))
		require.NoError(t, err)
		defer eng.Close()
		require.NoError(t, eng.Register(ctx, "k", engine.Credits(quota)))
		d, err := eng.Consume(ctx, "k", 1)
		require.NoError(t, err)
		require.True(t, d.Allowed)
		re, err := engine.New(engine.WithStore(st.clone()))
		require.NoError(t, err)
		defer re.Close()
		s, err := re.Status("k")
		require.NoError(t, err)
		return s.Limits[0].Remaining
	}
	require.Equal(t, int64(9), afterCrash(engine.LeaseOptions{Exact: true}, 10), "exact: the grant alone is durable")
	require.Equal(t, int64(100-4), afterCrash(engine.LeaseOptions{MaxChunk: 4}, 100), "MinChunk 0 with MaxChunk 4: reservations of 4")
	require.Equal(t, int64(1000-64), afterCrash(engine.LeaseOptions{}, 1000), "the default: a first reservation of 64")
	for _, lo := range []engine.LeaseOptions{{MinChunk: -1}, {MaxChunk: -1}, {MinChunk: 8, MaxChunk: 4}, {MaxChunk: 1<<40 + 1}} {
		_, err := engine.New(engine.WithStore(newMemStore()), engine.WithLease(lo))
		require.ErrorIs(t, err, engine.ErrInvalidOption, "%+v", lo)
	}
}

func TestExactModeSurvivesCrash(t *testing.T) {
	st := newMemStore()
	eng, err := engine.New(engine.WithStore(st), engine.WithLease(engine.LeaseOptions{MinChunk: 1, MaxChunk: 1, Exact: true}))
	require.NoError(t, err)
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(5000)))
	got := hammer(t, eng, "k", 32, 50)
	require.Equal(t, int64(1600), got)
	crash := st.clone()
	re, err := engine.New(engine.WithStore(crash))
	require.NoError(t, err)
	s, _ := re.Status("k")
	require.Equal(t, int64(3400), s.Limits[0].Remaining, "every returned grant is durable")
	require.NoError(t, re.Close())
	require.Positive(t, eng.Stats().Rounds) // that rounds are shared is measured by persist's BenchmarkExact
	require.NoError(t, eng.Close())
}

func TestRevokeIsDurableAtOnce(t *testing.T) {
	st := newMemStore()
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	defer eng.Close()
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(10)))
	require.NoError(t, eng.Revoke(ctx, "k"))
	crash := st.clone()
	re, err := engine.New(engine.WithStore(crash))
	require.NoError(t, err)
	d, _ := re.Consume(ctx, "k", 1)
	require.Equal(t, engine.Revoked, d.Reason)
	require.NoError(t, re.Close())
}

// With leases a refund moves the reservation with it and asks for the key's
// record, so a crash after the next write keeps the refund.
func TestLeaseRefundIsWritten(t *testing.T) {
	for name, l := range map[string]engine.Limit{
		"credits": engine.Credits(1000),
		"window":  engine.PerWindow(1000, time.Hour),
		"rate":    engine.Rate(1, time.Hour, 1000),
	} {
		t.Run(name, func(t *testing.T) {
			clk := newClock(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC))
			st := newMemStore()
			lo := engine.LeaseOptions{MinChunk: 4, MaxChunk: 8}
			eng, err := engine.New(engine.WithStore(st), engine.WithClock(clk.Now), engine.WithLease(lo))
			require.NoError(t, err)
			defer eng.Close()
			require.NoError(t, eng.Register(ctx, "k", l))
			for range 300 {
				d, err := eng.Consume(ctx, "k", 1)
				require.NoError(t, err)
				require.True(t, d.Allowed)
			}
			d, err := eng.Consume(ctx, "k", 200)
			require.NoError(t, err)
			require.True(t, d.Allowed)
			require.NoError(t, eng.Refund(ctx, "k", d, 200))
			// A synchronous write queues behind the refund's: once it
			// returns, the refund's record is on disk.
			require.NoError(t, eng.Register(ctx, "sync", engine.Credits(1)))
			re, err := engine.New(engine.WithStore(st.clone()), engine.WithClock(clk.Now), engine.WithLease(lo))
			require.NoError(t, err)
			defer re.Close()
			s, err := re.Status("k")
			require.NoError(t, err)
			left := s.Limits[0].Remaining
			require.LessOrEqual(t, left, int64(700))
			require.GreaterOrEqual(t, left, int64(700)-lo.MaxChunk, "the refund was lost in the crash")
		})
	}
}

// One Store serves one engine at a time: a second engine on it would take
// the first's reservations for its own and grant them again. New refuses
// it, and changes nothing: the first engine goes on, and once it is closed
// the Store may serve another (a failed New releases it too).
func TestStoreServesOneEngine(t *testing.T) {
	st := newMemStore()
	first, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	require.NoError(t, first.Register(ctx, "k", engine.Credits(10)))

	second, err := engine.New(engine.WithStore(st))
	require.ErrorIs(t, err, engine.ErrStoreInUse)
	require.Nil(t, second)
	require.True(t, strings.HasPrefix(err.Error(), "allot: "), err.Error())
	d, err := first.Consume(ctx, "k", 1)
	require.NoError(t, err)
	require.True(t, d.Allowed, "the first engine goes on")

	// A New that fails for another reason releases the store at once.
	other := newMemStore()
	other.loadErr = errors.New("disk gone")
	_, err = engine.New(engine.WithStore(other))
	require.ErrorIs(t, err, engine.ErrStore)
	other.loadErr = nil
	again, err := engine.New(engine.WithStore(other))
	require.NoError(t, err)
	require.NoError(t, again.Close())

	require.NoError(t, first.Close())
	st.mu.Lock()
	st.closed = false // a store that can be opened again
	st.mu.Unlock()
	next, err := engine.New(engine.WithStore(st))
	require.NoError(t, err, "free once the engine it served is closed")
	defer next.Close()
	s, err := next.Status("k")
	require.NoError(t, err)
	require.Equal(t, int64(9), s.Limits[0].Remaining)
}
