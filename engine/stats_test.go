package engine_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/stretchr/testify/require"
)

// Each counter against known traffic.
func TestStatsCountKnownTraffic(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	eng := newEngine(t, engine.WithCounting(), engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "c", engine.Credits(10)))
	require.NoError(t, eng.Register(ctx, "m", engine.Credits(10), engine.Rate(1, time.Hour, 3)))
	require.NoError(t, eng.Register(ctx, "r", engine.Credits(1)))
	require.NoError(t, eng.Register(ctx, "o", engine.Credits(5)))
	require.NoError(t, eng.Rotate(ctx, "o", "o2", time.Hour))
	require.NoError(t, eng.Revoke(ctx, "r"))
	for range 4 {
		_, _ = eng.Consume(ctx, "c", 3) // 3 granted (9 units), 1 exhausted
	}
	for range 4 {
		_, _ = eng.Consume(ctx, "m", 1) // 3 granted, 1 exhausted (the rate)
	}
	_, _ = eng.Consume(ctx, "r", 1)            // revoked
	_, _ = eng.Consume(ctx, "nope", 1)         // unknown
	_, _ = eng.Consume(ctx, "o", 1)            // granted through the rotation
	_, _ = eng.Consume(ctx, "c", 0)            // an error: counted nowhere
	_, _, _ = eng.Admit(ctx, "nope-either", 1) // unknown, through Admit
	_, adm, err := eng.Admit(ctx, "o2", 1)
	require.NoError(t, err)
	s := eng.Stats()
	require.Equal(t, int64(3+3+1+1), s.Granted)
	require.Equal(t, int64(9+3+1+1), s.UnitsGranted)
	require.Equal(t, int64(2), s.Exhausted)
	require.Equal(t, int64(1), s.Revoked)
	require.Equal(t, int64(2), s.UnknownKey)
	require.Equal(t, int64(4), s.Keys, "c, m, r, o2")
	require.Equal(t, int64(1), s.RevokedKeys)
	require.Equal(t, int64(1), s.RotatedOut)
	require.Equal(t, int64(1), s.InFlight)
	adm.Done()
	require.Zero(t, eng.Stats().InFlight)

	quiet := newEngine(t)
	require.NoError(t, quiet.Register(ctx, "c", engine.Credits(10)))
	_, _ = quiet.Consume(ctx, "c", 1)
	require.Zero(t, quiet.Stats().Granted, "counting is off by default")
}

// CountShadowDenied counts Exhausted denials only, in ShadowDenied beside
// Exhausted; without WithCounting it counts nothing.
func TestStatsShadowDenied(t *testing.T) {
	eng := newEngine(t, engine.WithCounting())
	require.NoError(t, eng.Register(ctx, "c", engine.Credits(1)))
	require.NoError(t, eng.Register(ctx, "r", engine.Credits(1)))
	require.NoError(t, eng.Revoke(ctx, "r"))
	var denials []engine.Decision
	for _, key := range []string{"c", "c", "c", "r", "nope"} {
		d, err := eng.Consume(ctx, key, 1)
		require.NoError(t, err)
		denials = append(denials, d)
	}
	for _, d := range denials {
		eng.CountShadowDenied(d) // the grant, the revoked and the unknown key are not counted
	}
	eng.CountShadowDenied(engine.Decision{})
	s := eng.Stats()
	require.Equal(t, int64(1), s.Granted)
	require.Equal(t, int64(2), s.Exhausted)
	require.Equal(t, int64(2), s.ShadowDenied)
	require.Equal(t, int64(1), s.Revoked)
	require.Equal(t, int64(1), s.UnknownKey)

	quiet := newEngine(t)
	require.NoError(t, quiet.Register(ctx, "c", engine.Credits(1)))
	d, err := quiet.Consume(ctx, "c", 2)
	require.NoError(t, err)
	require.Equal(t, engine.Exhausted, d.Reason)
	quiet.CountShadowDenied(d)
	require.Zero(t, quiet.Stats().ShadowDenied, "counting is off by default")
}

// A background store failure reaches the snapshot and the log.
func TestStatsReportStoreFailure(t *testing.T) {
	fs := newFaultStore()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	eng, err := engine.New(engine.WithStore(fs), engine.WithLogger(log), engine.WithLease(engine.LeaseOptions{MinChunk: 2, MaxChunk: 2}))
	require.NoError(t, err)
	defer eng.Close()
	require.NoError(t, eng.Register(ctx, "secret-key-1", engine.Credits(100)))
	fs.mu.Lock()
	fs.fail = errors.New("disk on fire")
	fs.mu.Unlock()
	// The reservation runs out; the next one's round fails.
	var lastErr error
	for range 10 {
		if _, err := eng.Consume(ctx, "secret-key-1", 1); err != nil {
			lastErr = err
			break
		}
	}
	require.ErrorIs(t, lastErr, engine.ErrStore, "no grant beyond the durable reservation")
	s := eng.Stats()
	require.Positive(t, s.StoreErrors)
	require.ErrorContains(t, s.LastStoreError, "disk on fire")
	require.False(t, s.LastStoreErrorAt.IsZero())
	require.Positive(t, s.RoundLatency.Count)
	require.Contains(t, buf.String(), "disk on fire")
	require.Contains(t, buf.String(), "level=ERROR")
	require.False(t, strings.Contains(buf.String(), "secret-key-1"), "no raw key in the log")
}

// A store's error is wrapped once: "allot: store failed: load: …", with no
// second "allot: " inside, and errors.Is finds both.
func TestStoreErrorReadsOnce(t *testing.T) {
	inner := errors.New("allot: disk unreadable")
	st := newMemStore()
	st.loadErr = inner
	_, err := engine.New(engine.WithStore(st))
	require.ErrorIs(t, err, engine.ErrStore)
	require.ErrorIs(t, err, inner)
	require.Equal(t, "allot: store failed: load: disk unreadable", err.Error())
}

// Close's final flush is counted as rounds like any other: its Saves (1,024
// records each), its records, their latency, and a failure.
func TestStatsCountCloseFlush(t *testing.T) {
	eng, err := engine.New(engine.WithStore(newMemStore()))
	require.NoError(t, err)
	for i := range 1500 {
		require.NoError(t, eng.Register(ctx, fmt.Sprint("k", i), engine.Credits(10)))
	}
	before := eng.Stats()
	require.Equal(t, int64(1500), before.Rounds, "one round per registration")
	require.NoError(t, eng.Close())
	after := eng.Stats()
	require.Equal(t, before.Rounds+2, after.Rounds, "1,500 keys: two Saves")
	require.Equal(t, before.Records+1500, after.Records)
	require.Equal(t, before.RoundLatency.Count+2, after.RoundLatency.Count)
	require.Zero(t, after.StoreErrors)

	fs := newFaultStore()
	eng, err = engine.New(engine.WithStore(fs))
	require.NoError(t, err)
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(10)))
	fs.mu.Lock()
	fs.fail = errors.New("disk gone at close")
	fs.mu.Unlock()
	before = eng.Stats()
	require.ErrorIs(t, eng.Close(), engine.ErrStore)
	after = eng.Stats()
	require.Equal(t, before.Rounds, after.Rounds)
	require.Equal(t, before.StoreErrors+1, after.StoreErrors)
	require.ErrorContains(t, after.LastStoreError, "disk gone at close")
	require.Equal(t, before.RoundLatency.Count+1, after.RoundLatency.Count)
}
