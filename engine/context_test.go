package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/stretchr/testify/require"
)

// snapshotOf is every key's Status, for "changed nothing" checks.
func snapshotOf(t *testing.T, eng *engine.Engine, keys ...string) string {
	t.Helper()
	out := ""
	for _, k := range keys {
		s, err := eng.Status(k)
		out += fmt.Sprintf("%s: %+v %v\n", k, s, errors.Is(err, engine.ErrUnknownKey))
	}
	return out
}

// A context already done makes every administrative call and Refund return
// at once with its error, changing nothing, in memory and with a store.
func TestCancelledContextChangesNothing(t *testing.T) {
	for mode, opts := range map[string]func() []engine.Option{
		"memory": func() []engine.Option { return nil },
		"lease":  func() []engine.Option { return []engine.Option{engine.WithStore(newMemStore())} },
		"exact": func() []engine.Option {
			return []engine.Option{engine.WithStore(newMemStore()), engine.WithLease(engine.LeaseOptions{MinChunk: 1, MaxChunk: 1, Exact: true})}
		},
	} {
		t.Run(mode, func(t *testing.T) {
			clk := newClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
			eng, err := engine.New(append(opts(), engine.WithClock(clk.Now))...)
			require.NoError(t, err)
			defer eng.Close()
			require.NoError(t, eng.Register(ctx, "k", engine.Credits(10), engine.PerWindow(5, time.Hour)))
			d, err := eng.Consume(ctx, "k", 2)
			require.NoError(t, err)
			done, cancel := context.WithCancel(ctx)
			cancel()
			keys := []string{"k", "new", "k2"}
			before := snapshotOf(t, eng, keys...)
			for name, call := range map[string]func() error{
				"Register":      func() error { return eng.Register(done, "new", engine.Credits(1)) },
				"Revoke":        func() error { return eng.Revoke(done, "k") },
				"RevokeAndWait": func() error { return eng.RevokeAndWait(done, "k") },
				"Rotate":        func() error { return eng.Rotate(done, "k", "k2", time.Hour) },
				"TopUp":         func() error { return eng.TopUp(done, "k", 5) },
				"SetLimits":     func() error { return eng.SetLimits(done, "k", engine.Credits(1)) },
				"Refund":        func() error { return eng.Refund(done, "k", d, 2) },
			} {
				err := call()
				require.ErrorIs(t, err, context.Canceled, name)
				require.Equal(t, before, snapshotOf(t, eng, keys...), "%s changed something", name)
			}
		})
	}
}

// notifyCtx tells when a call first waits on it: an administrative call
// does so only once its write is queued.
type notifyCtx struct {
	context.Context
	once  sync.Once
	asked chan struct{}
}

func (c *notifyCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.asked) })
	return c.Context.Done()
}

// A context that ends while an administrative call's write waits behind
// another round stops the wait: the write is taken back and never reaches
// the store, in memory or after a restart.
func TestContextEndsWhileWriteQueued(t *testing.T) {
	fs := newFaultStore()
	eng, err := engine.New(engine.WithStore(fs))
	require.NoError(t, err)
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(10)))
	letGo := fs.holdSaves()
	first := make(chan error, 1)
	go func() { first <- eng.Register(ctx, "a", engine.Credits(1)) }()
	<-fs.entered // the committer is in a round, holding "a"
	before := snapshotOf(t, eng, "k", "b")
	for name, call := range map[string]func(context.Context) error{
		"Register":  func(c context.Context) error { return eng.Register(c, "b", engine.Credits(1)) },
		"TopUp":     func(c context.Context) error { return eng.TopUp(c, "k", 5) },
		"SetLimits": func(c context.Context) error { return eng.SetLimits(c, "k", engine.Credits(3)) },
		"Rotate":    func(c context.Context) error { return eng.Rotate(c, "k", "b", time.Hour) },
	} {
		inner, cancel := context.WithCancel(ctx)
		c := &notifyCtx{Context: inner, asked: make(chan struct{})}
		res := make(chan error, 1)
		go func() { res <- call(c) }()
		<-c.asked // the call has queued its write, behind the held round
		cancel()
		require.ErrorIs(t, <-res, context.Canceled, name)
		require.Equal(t, before, snapshotOf(t, eng, "k", "b"), name)
	}
	letGo()
	require.NoError(t, <-first)
	require.NoError(t, eng.Close())
	re, err := engine.New(engine.WithStore(fs.inner))
	require.NoError(t, err)
	defer re.Close()
	require.Equal(t, before, snapshotOf(t, re, "k", "b"), "a cancelled write never reached the store")
}

// In exact mode a Consume whose context ends while it waits for its grant
// to be durable returns the context's error and has taken nothing: not in
// memory, and not after the next round.
func TestExactConsumeCancelledTakesNothing(t *testing.T) {
	fs := newFaultStore()
	lo := engine.LeaseOptions{MinChunk: 1, MaxChunk: 1, Exact: true}
	clk := newClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	eng, err := engine.New(engine.WithStore(fs), engine.WithLease(lo), engine.WithClock(clk.Now))
	require.NoError(t, err)
	for _, l := range []engine.Limit{engine.Credits(10), engine.PerWindow(10, time.Hour), engine.Rate(1, time.Hour, 10)} {
		key := l.Kind().String()
		require.NoError(t, eng.Register(ctx, key, l))
		before := snapshotOf(t, eng, key)
		letGo := fs.holdSaves()
		c, cancel := context.WithCancel(ctx)
		res := make(chan error, 1)
		go func() {
			_, err := eng.Consume(c, key, 3)
			res <- err
		}()
		<-fs.entered // the grant's round is with the store
		cancel()
		require.ErrorIs(t, <-res, context.Canceled, key)
		require.Equal(t, before, snapshotOf(t, eng, key), "%s: a failed Consume took units", key)
		letGo()
		require.NoError(t, eng.Register(ctx, "sync-"+key, engine.Credits(1)))
		re, err := engine.New(engine.WithStore(fs.crash()), engine.WithLease(lo), engine.WithClock(clk.Now))
		require.NoError(t, err)
		require.Equal(t, before, snapshotOf(t, re, key), "%s: after the next round the store agrees", key)
		_ = re.Close()
	}
	require.NoError(t, eng.Close())
}
