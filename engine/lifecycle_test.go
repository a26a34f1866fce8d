package engine_test

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/stretchr/testify/require"
)

// Delete and Register racing Consume on one name: once Delete returns, no
// Consume is granted under the old registration. The registrations have
// quotas of their own, so each grant's Decision.Limit says which one it drew
// on; a happens-before marker says which Delete had returned when the
// Consume started.
func TestDeleteRacingConsume(t *testing.T) {
	eng := newEngine(t)
	const rounds = 200
	var deleted [rounds + 1]atomic.Bool // deleted[g]: registration g's Delete returned
	var gen atomic.Int64
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(engine.MaxCredits-int64(0))))
	stop := make(chan struct{})
	var bad atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				g := gen.Load()
				before := make([]bool, g+1)
				for i := range before {
					before[i] = deleted[i].Load()
				}
				d, err := eng.Consume(ctx, "k", 1)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					r := engine.MaxCredits - d.Limit // the registration drawn on
					if r < int64(len(before)) && before[r] {
						bad.Add(1)
					}
				}
			}
		}()
	}
	for g := range int64(rounds) {
		require.NoError(t, eng.Delete(ctx, "k"))
		deleted[g].Store(true)
		gen.Store(g + 1)
		require.NoError(t, eng.Register(ctx, "k", engine.Credits(engine.MaxCredits-(g+1))))
	}
	close(stop)
	wg.Wait()
	require.Zero(t, bad.Load(), "grants under a registration after its Delete returned")
}

func TestDeleteAndRegisterAgain(t *testing.T) {
	eng := newEngine(t)
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(10)))
	d, err := eng.Consume(ctx, "k", 7)
	require.NoError(t, err)
	require.NoError(t, eng.Revoke(ctx, "k"))
	require.NoError(t, eng.Delete(ctx, "k"))
	require.ErrorIs(t, eng.Delete(ctx, "k"), engine.ErrUnknownKey)
	_, err = eng.Status("k")
	require.ErrorIs(t, err, engine.ErrUnknownKey)
	d2, err := eng.Consume(ctx, "k", 1)
	require.NoError(t, err)
	require.Equal(t, engine.UnknownKey, d2.Reason)
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(10)))
	require.Equal(t, []int64{10}, remaining(mustStatus(t, eng, "k")), "a new registration starts from nothing, not revoked")
	require.NoError(t, eng.Refund(ctx, "k", d, 7), "a refund of the old registration's grant")
	require.Equal(t, []int64{10}, remaining(mustStatus(t, eng, "k")), "gives nothing to the new one")
	require.Equal(t, int64(10), hammer(t, eng, "k", 4, 10))
	require.Zero(t, eng.Len()-1)
}

// Deleting a link of a rotation chain, or its head, ends the grace of the
// older keys, also when the name is registered again.
func TestDeleteInRotationChain(t *testing.T) {
	eng := newEngine(t)
	require.NoError(t, eng.Register(ctx, "A", engine.Credits(100)))
	require.NoError(t, eng.Rotate(ctx, "A", "B", time.Hour))
	require.NoError(t, eng.Rotate(ctx, "B", "C", time.Hour))
	require.NoError(t, eng.Delete(ctx, "C"))
	for _, k := range []string{"A", "B"} {
		d, err := eng.Consume(ctx, k, 1)
		require.NoError(t, err)
		require.Equal(t, engine.Revoked, d.Reason, k)
		require.True(t, mustStatus(t, eng, k).Revoked, k)
	}
	require.NoError(t, eng.Register(ctx, "C", engine.Credits(5)))
	d, err := eng.Consume(ctx, "A", 1)
	require.NoError(t, err)
	require.Equal(t, engine.Revoked, d.Reason, "an old chain never reaches a new registration")
	require.Equal(t, []int64{5}, remaining(mustStatus(t, eng, "C")))

	require.NoError(t, eng.Register(ctx, "X", engine.Credits(100)))
	require.NoError(t, eng.Rotate(ctx, "X", "Y", time.Hour))
	require.NoError(t, eng.Delete(ctx, "X"), "deleting a rotated-out key")
	d, err = eng.Consume(ctx, "Y", 1)
	require.NoError(t, err)
	require.True(t, d.Allowed, "the key it went to goes on")
	require.NoError(t, eng.Register(ctx, "X", engine.Credits(1)), "the name is free")
}

func TestResetExact(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	eng := newEngine(t, engine.WithClock(clk.Now))
	require.NoError(t, eng.Register(ctx, "k", engine.Credits(500), engine.PerWindow(400, time.Hour), engine.Rate(1, time.Hour, 300)))
	require.Equal(t, int64(300), hammer(t, eng, "k", 32, 20))
	require.NoError(t, eng.Reset(ctx, "k"))
	require.Equal(t, []int64{500, 400, 300}, remaining(mustStatus(t, eng, "k")))
	require.Equal(t, int64(300), hammer(t, eng, "k", 32, 20), "exactly the quota again, under contention")
	require.NoError(t, eng.Revoke(ctx, "k"))
	require.NoError(t, eng.Reset(ctx, "k"))
	require.True(t, mustStatus(t, eng, "k").Revoked, "revoked stays revoked")
}

// Listing after a restart shows recovered keys by ID; an operator revokes
// one by ID without its raw key.
func TestKeysAndByID(t *testing.T) {
	st := newMemStore()
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	for i := range 5 {
		require.NoError(t, eng.Register(ctx, fmt.Sprint("key-", i), engine.Credits(10)))
	}
	require.NoError(t, eng.Rotate(ctx, "key-4", "key-5", time.Hour))
	require.NoError(t, eng.Close())
	eng, err = engine.New(engine.WithStore(st))
	require.NoError(t, err)
	defer eng.Close()
	_, err = eng.Consume(ctx, "key-0", 3) // named: no longer "recovered"
	require.NoError(t, err)
	ids := map[engine.KeyID]engine.KeyInfo{}
	for k := range eng.Keys() {
		ids[k.ID] = k
	}
	require.Len(t, ids, 6)
	require.False(t, ids[engine.IDOf("key-0")].Recovered)
	require.Equal(t, int64(7), ids[engine.IDOf("key-0")].Limits[0].Remaining)
	require.True(t, ids[engine.IDOf("key-1")].Recovered)
	require.True(t, ids[engine.IDOf("key-4")].RotatedOut)

	leaked := engine.IDOf("key-1")
	require.NoError(t, eng.RevokeID(ctx, leaked))
	d, err := eng.Consume(ctx, "key-1", 1)
	require.NoError(t, err)
	require.Equal(t, engine.Revoked, d.Reason)
	require.NoError(t, eng.TopUpID(ctx, engine.IDOf("key-0"), 5))
	s, err := eng.StatusID(engine.IDOf("key-0"))
	require.NoError(t, err)
	require.Equal(t, int64(12), s.Limits[0].Remaining)
	require.NoError(t, eng.ResetID(ctx, engine.IDOf("key-0")))
	require.NoError(t, eng.DeleteID(ctx, engine.IDOf("key-2")))
	require.ErrorIs(t, eng.DeleteID(ctx, engine.IDOf("key-2")), engine.ErrUnknownKey)
	require.ErrorIs(t, eng.RevokeID(ctx, engine.IDOf("never")), engine.ErrUnknownKey)
	n := 0
	for range eng.Keys() {
		n++
	}
	require.Equal(t, 5, n)
	require.NoError(t, eng.Close())
	eng, err = engine.New(engine.WithStore(st))
	require.NoError(t, err)
	_, err = eng.Status("key-2")
	require.ErrorIs(t, err, engine.ErrUnknownKey, "a deletion is durable")
	require.True(t, mustStatus(t, eng, "key-1").Revoked, "a revocation by ID is durable")
}

// Churn: cycles of NewKey, Register, Consume and Delete in memory; the
// engine ends empty and its live heap where it started.
//
//	ALLOT_CHURN=1000000 go test -run TestDeleteChurn -v ./engine
func TestDeleteChurn(t *testing.T) {
	n := 200_000
	if s := os.Getenv("ALLOT_CHURN"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		n = 20_000
	}
	eng := newEngine(t)
	// Warm up the map's tables, then measure.
	churn := func(k int) {
		for range k {
			key, err := engine.NewKey("sk_churn")
			require.NoError(t, err)
			require.NoError(t, eng.Register(ctx, key, engine.Credits(10)))
			d, err := eng.Consume(ctx, key, 1)
			require.NoError(t, err)
			require.True(t, d.Allowed)
			require.NoError(t, eng.Delete(ctx, key))
		}
	}
	churn(10_000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	churn(n)
	took := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	require.Zero(t, eng.Len())
	t.Logf("%d cycles in %v: live heap %d -> %d bytes (%.3f times)", n, took.Round(time.Millisecond), before.HeapAlloc, after.HeapAlloc, float64(after.HeapAlloc)/float64(before.HeapAlloc))
	require.Less(t, float64(after.HeapAlloc), 1.1*float64(before.HeapAlloc)+256<<10, "live heap grew")
}

var _ = errors.Is
