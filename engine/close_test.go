package engine_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/stretchr/testify/require"
)

// Close leaves out, in lease mode, the keys the store holds already as
// they are, unless a Save has failed: a failure need not mean that nothing
// landed. Here a reservation's Save lands but reports a failure; the
// Consume that waited for it fails and changes nothing in memory, while
// the store holds the reservation. Were Close to trust the marks, it
// would leave that record, and the restart would lose its units. It writes
// every key instead, and the restart finds each one exactly as it was.
func TestCloseAfterFailedSaveWritesAll(t *testing.T) {
	clk := newClock(time.Date(2026, 11, 29, 10, 30, 0, 0, time.UTC))
	lo := engine.WithLease(engine.LeaseOptions{MinChunk: 4, MaxChunk: 4})
	mem := newMemStore()
	eng, err := engine.New(engine.WithStore(mem), engine.WithClock(clk.Now), lo)
	require.NoError(t, err)
	for i := range 20 {
		require.NoError(t, eng.Register(ctx, fmt.Sprint("k", i), engine.Credits(100)))
	}
	require.NoError(t, eng.Close())

	// A restart that changes nothing writes nothing.
	eng, err = engine.New(engine.WithStore(mem.clone()), engine.WithClock(clk.Now), lo)
	require.NoError(t, err)
	s0 := eng.Stats()
	require.NoError(t, eng.Close())
	require.Zero(t, eng.Stats().Records-s0.Records)

	fs := newFaultStore()
	fs.inner = mem.clone()
	eng, err = engine.New(engine.WithStore(fs), engine.WithClock(clk.Now), lo, engine.WithCounting())
	require.NoError(t, err)
	fs.mu.Lock()
	fs.landed = errors.New("timed out, but written")
	fs.mu.Unlock()
	_, err = eng.Consume(ctx, "k0", 1) // needs a reservation: its Save lands and fails
	require.ErrorIs(t, err, engine.ErrStore)
	fs.mu.Lock()
	fs.landed = nil
	fs.mu.Unlock()
	before := mustStatus(t, eng, "k0")
	require.Equal(t, int64(100), before.Limits[0].Remaining, "the failed Consume took nothing")
	s0 = eng.Stats()
	require.NoError(t, eng.Close())
	require.Equal(t, int64(20), eng.Stats().Records-s0.Records, "after a failed Save, Close writes every key")

	eng, err = engine.New(engine.WithStore(fs.inner.clone()), engine.WithClock(clk.Now), lo)
	require.NoError(t, err)
	defer eng.Close()
	require.Equal(t, before, mustStatus(t, eng, "k0"), "nothing lost")
}

// A refund lowers a key's hard mark without a write and queues the key; if
// Close comes before a round has written it, the key's value is at its mark
// and looks durable, but the store holds the mark from before the refund.
// Close writes it all the same (the key is queued, and unsaved): the
// restart finds the refunded unit. A round held in the store keeps the
// refund's key queued while Close starts; the committer then either runs
// one more round or goes straight to the last one, in the scheduler's
// order, 50 times. Under -race, as make test runs it, a Close that trusted
// the marks alone loses the unit within a few runs.
func TestCloseWritesQueuedRefund(t *testing.T) {
	clk := newClock(time.Date(2026, 11, 29, 10, 30, 0, 0, time.UTC))
	lo := engine.WithLease(engine.LeaseOptions{MinChunk: 4, MaxChunk: 4})
	for range 50 {
		mem := newMemStore()
		eng, err := engine.New(engine.WithStore(mem), engine.WithClock(clk.Now), lo)
		require.NoError(t, err)
		require.NoError(t, eng.Register(ctx, "a", engine.Credits(4))) // no reservation can reach past 4
		require.NoError(t, eng.Register(ctx, "b", engine.Credits(100)))
		require.NoError(t, eng.Close())

		fs := newFaultStore()
		fs.inner = mem.clone()
		eng, err = engine.New(engine.WithStore(fs), engine.WithClock(clk.Now), lo)
		require.NoError(t, err)
		var last engine.Decision
		for range 4 { // the whole first reservation: the value is at the hard mark
			last, err = eng.Consume(ctx, "a", 1)
			require.NoError(t, err)
			require.True(t, last.Allowed)
		}
		letGo := fs.holdSaves()
		consumed := make(chan error, 1)
		go func() { _, err := eng.Consume(ctx, "b", 1); consumed <- err }() // a round for b, held
		<-fs.entered
		require.NoError(t, eng.Refund(ctx, "a", last, 1)) // value and mark to 3, the store's at 4; "a" queued behind b's round
		closed := make(chan error, 1)
		go func() { closed <- eng.Close() }()
		letGo()
		bErr := <-consumed // granted, or refused by the Close that sealed it while it waited
		bLeft := int64(99)
		if bErr != nil {
			require.ErrorIs(t, bErr, engine.ErrClosed)
			bLeft = 100
		}
		require.NoError(t, <-closed)

		eng, err = engine.New(engine.WithStore(fs.inner.clone()), engine.WithClock(clk.Now), lo)
		require.NoError(t, err)
		require.Equal(t, int64(1), mustStatus(t, eng, "a").Limits[0].Remaining, "the refunded unit is kept")
		require.Equal(t, bLeft, mustStatus(t, eng, "b").Limits[0].Remaining)
		require.NoError(t, eng.Close())
	}
}
