package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/stretchr/testify/require"
)

// faultStore wraps a memStore and lets a test take the committer's
// interleavings in hand: each Save can be held until the test lets it go,
// delayed, or failed, and crash returns what a restart would find (only
// what Saves acknowledged, nothing of a Save still held).
type faultStore struct {
	inner *memStore

	mu      sync.Mutex
	hold    bool          // the next Saves wait for release
	entered chan struct{} // receives once for each Save that starts waiting
	release chan struct{} // closed (or sent to) to let held Saves go on
	fail    error         // the next Saves fail with it
	landed  error         // the next Saves land, then report it (a failure that wrote all the same)
}

func newFaultStore() *faultStore {
	return &faultStore{inner: newMemStore(), entered: make(chan struct{}, 64), release: make(chan struct{})}
}

func (s *faultStore) Load(ctx context.Context, fn func(engine.Record) error) error {
	return s.inner.Load(ctx, fn)
}

func (s *faultStore) Save(ctx context.Context, recs ...engine.Record) error {
	s.mu.Lock()
	hold, rel, fail, landed := s.hold, s.release, s.fail, s.landed
	s.mu.Unlock()
	if hold {
		s.entered <- struct{}{}
		<-rel
	}
	if fail != nil {
		return fail
	}
	if err := s.inner.Save(ctx, recs...); err != nil || landed == nil {
		return err
	}
	return landed
}

func (s *faultStore) Close() error { return s.inner.Close() }

// holdSaves makes the next Saves wait until the returned function is called.
func (s *faultStore) holdSaves() (letGo func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold, s.release = true, make(chan struct{})
	rel := s.release
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.hold = false
			s.mu.Unlock()
			close(rel)
		})
	}
}

// crash returns a store with what was acknowledged: a kill -9 now.
func (s *faultStore) crash() *memStore { return s.inner.clone() }

// Finding 9: a refund made while a background round writes was overwritten
// when the round's reservation landed, and no later round wrote it.
func TestFindingRefundDuringRoundIsKept(t *testing.T) {
	for name, l := range map[string]engine.Limit{
		"credits": engine.Credits(1000),
		"window":  engine.PerWindow(1000, time.Hour),
		"rate":    engine.Rate(1, time.Hour, 1000),
	} {
		t.Run(name, func(t *testing.T) {
			clk := newClock(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC))
			fs := newFaultStore()
			lo := engine.LeaseOptions{MinChunk: 8, MaxChunk: 8}
			eng, err := engine.New(engine.WithStore(fs), engine.WithClock(clk.Now), engine.WithLease(lo))
			require.NoError(t, err)
			defer eng.Close()
			require.NoError(t, eng.Register(ctx, "k", l))
			spent := int64(0)
			for cycle := range 20 {
				d, err := eng.Consume(ctx, "k", 5)
				require.NoError(t, err)
				require.True(t, d.Allowed, "cycle %d", cycle)
				// A synchronous write: once it returns, no round of k is
				// pending or running.
				require.NoError(t, eng.Register(ctx, fmt.Sprint("sync", cycle), engine.Credits(1)))
				// A refund asks for k's record: its round builds a new
				// reservation and is held in its Save...
				letGo := fs.holdSaves()
				require.NoError(t, eng.Refund(ctx, "k", d, 1))
				<-fs.entered
				// ...while a second refund lands.
				require.NoError(t, eng.Refund(ctx, "k", d, 3))
				spent++
				letGo()
				require.NoError(t, eng.Register(ctx, fmt.Sprint("sync2-", cycle), engine.Credits(1)))
			}
			re, err := engine.New(engine.WithStore(fs.crash()), engine.WithClock(clk.Now), engine.WithLease(lo))
			require.NoError(t, err)
			defer re.Close()
			s, err := re.Status("k")
			require.NoError(t, err)
			left := s.Limits[0].Remaining
			require.LessOrEqual(t, left, 1000-spent, "over-grant after a crash")
			require.GreaterOrEqual(t, left, 1000-spent-lo.MaxChunk, "a crash loses at most MaxChunk, refunds included")
		})
	}
}

// Finding 5: Close sealed every key while a first use after a restart
// published a new, unsealed entry under the raw key; its grants were never
// written. The race is between a Consume that passed Close's closed check
// and Close's sealing of every key, so the test runs it many times: after a
// clean Close, a reopen must show every grant.
func TestFindingCloseRacesFirstUse(t *testing.T) {
	const keys, rounds = 300, 30
	st := newMemStore()
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	for i := range keys {
		require.NoError(t, eng.Register(ctx, fmt.Sprint("k", i), engine.Credits(1_000_000)))
	}
	require.NoError(t, eng.Close())
	left := make([]int64, keys)
	for i := range left {
		left[i] = 1_000_000
	}
	for round := range rounds {
		eng, err := engine.New(engine.WithStore(st))
		require.NoError(t, err)
		granted := make([]atomic.Int64, keys)
		started := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; ; i = (i + 7) % keys {
					if i == g {
						select {
						case started <- struct{}{}:
						default:
						}
					}
					d, err := eng.Consume(ctx, fmt.Sprint("k", i), 1)
					if errors.Is(err, engine.ErrClosed) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						granted[i].Add(1)
					}
				}
			}()
		}
		<-started
		require.NoError(t, eng.Close())
		wg.Wait()
		re, err := engine.New(engine.WithStore(st))
		require.NoError(t, err)
		for i := range keys {
			s, err := re.Status(fmt.Sprint("k", i))
			require.NoError(t, err)
			left[i] -= granted[i].Load()
			require.Equal(t, left[i], s.Limits[0].Remaining, "round %d key %d: a clean Close keeps every grant", round, i)
		}
		require.NoError(t, re.Close())
	}
}

// Finding 10: after a restart, a rotated key's old and new names counted
// their requests in flight apart, so RevokeAndWait of the new one returned
// while a request admitted under the old one still ran.
func TestFindingRevokeAndWaitAfterRestart(t *testing.T) {
	fs := newFaultStore()
	eng, err := engine.New(engine.WithStore(fs))
	require.NoError(t, err)
	require.NoError(t, eng.Register(ctx, "old", engine.Credits(100)))
	require.NoError(t, eng.Rotate(ctx, "old", "new", time.Hour))
	require.NoError(t, eng.Close())

	eng, err = engine.New(engine.WithStore(fs.crash()))
	require.NoError(t, err)
	defer eng.Close()
	d, adm, err := eng.Admit(ctx, "old", 1)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	require.Equal(t, int64(1), eng.InFlight("new"), "one count for the chain")
	done, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, eng.RevokeAndWait(done, "new"), context.Canceled, "a request admitted through old still runs")
	adm.Done()
	require.NoError(t, eng.RevokeAndWait(ctx, "new"))
	d, err = eng.Consume(ctx, "old", 1)
	require.NoError(t, err)
	require.Equal(t, engine.Revoked, d.Reason)
}
