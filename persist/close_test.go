package persist_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/stretchr/testify/require"
)

// Close writes only the keys that changed since the store last held them,
// and loses nothing by it. Each of 30 restarts does something random to a
// few of the keys (consume, a consume that uses up its whole reservation
// followed by a refund, which lowers the hard mark without a write, top up,
// reset, set limits, revoke, rotate, delete, register, the clock moving on
// across windows), or nothing at all; then Close, reopen: every key's Status
// is exactly what it was before Close, and Close wrote no more records
// than the keys touched (none in a restart that touched nothing). The
// test fails if Close writes every key, as it did before.
func TestCloseWritesOnlyChanged(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{}
	clk.ns.Store(time.Date(2026, 11, 29, 10, 30, 0, 0, time.UTC).UnixNano())
	lo := engine.LeaseOptions{MinChunk: 4, MaxChunk: 4}
	eng := openMode(t, dir, clk, lo)
	limits := func(i int) []engine.Limit {
		switch i % 5 {
		case 0:
			return []engine.Limit{engine.Credits(1000)}
		case 1:
			return []engine.Limit{engine.PerWindow(500, time.Hour)}
		case 2:
			return []engine.Limit{engine.Rate(10, time.Second, 200)}
		case 3:
			return []engine.Limit{engine.Credits(2000), engine.PerWindow(300, time.Minute)}
		default:
			return []engine.Limit{engine.PerMonthIn(700, time.UTC)}
		}
	}
	var keys []string
	for i := range 200 {
		k := fmt.Sprint("k", i)
		require.NoError(t, eng.Register(ctx, k, limits(i)...))
		keys = append(keys, k)
	}
	require.NoError(t, eng.Close())

	r := rand.New(rand.NewPCG(7, 7))
	next := 200
	wrote := 0
	for cycle := range 30 {
		eng = openMode(t, dir, clk, lo)
		touched := map[string]bool{}
		ops := 0
		if cycle%5 != 4 { // every fifth restart touches nothing
			ops = 1 + r.IntN(12)
		}
		for range ops {
			k := keys[r.IntN(len(keys))]
			touched[k] = true
			switch op := r.IntN(12); {
			case op < 5: // consume, sometimes a whole reservation, then refund one unit
				n := 1 + r.IntN(4)
				var last engine.Decision
				for range n {
					d, err := eng.Consume(ctx, k, 1)
					require.NoError(t, err)
					if d.Allowed {
						last = d
					}
				}
				if last.Allowed && r.IntN(2) == 0 {
					require.NoError(t, eng.Refund(ctx, k, last, 1))
				}
			case op == 5:
				refused(t, eng.TopUp(ctx, k, 5))
			case op == 6:
				refused(t, eng.Reset(ctx, k))
			case op == 7:
				refused(t, eng.SetLimits(ctx, k, limits(r.IntN(5))...))
			case op == 8:
				refused(t, eng.Revoke(ctx, k))
			case op == 9:
				nk := fmt.Sprint("k", next)
				next++
				if err := eng.Rotate(ctx, k, nk, time.Duration(r.IntN(3))*time.Hour); err == nil {
					keys = append(keys, nk)
					touched[nk] = true
				} else {
					refused(t, err)
				}
			case op == 10:
				require.NoError(t, eng.Delete(ctx, k))
				i := slices.Index(keys, k)
				keys = slices.Delete(keys, i, i+1)
				delete(touched, k)
			default:
				nk := fmt.Sprint("k", next)
				next++
				require.NoError(t, eng.Register(ctx, nk, limits(next)...))
				keys = append(keys, nk)
				touched[nk] = true
			}
		}
		if r.IntN(3) == 0 {
			clk.ns.Add(int64(time.Duration(r.IntN(90)) * time.Minute)) // across windows
		}
		before := map[string]engine.Status{}
		for _, k := range keys {
			before[k] = statusOf(t, eng, k)
		}
		if ops > 0 {
			// A registration and a deletion, each written in a round
			// that takes whatever the changes above left queued (a
			// refund's record, a reservation asked for in the
			// background), so that what follows counts Close alone.
			sentinel := fmt.Sprint("sentinel-", cycle)
			require.NoError(t, eng.Register(ctx, sentinel, engine.Credits(1)))
			require.NoError(t, eng.Delete(ctx, sentinel))
		}
		s0 := eng.Stats()
		require.NoError(t, eng.Close())
		written := eng.Stats().Records - s0.Records
		require.LessOrEqual(t, written, int64(len(touched)), "cycle %d: Close wrote more records than keys touched", cycle)
		if ops == 0 {
			require.Zero(t, written, "cycle %d: nothing changed, nothing written", cycle)
		}
		wrote += int(written)

		eng = openMode(t, dir, clk, lo)
		for _, k := range keys {
			require.Equal(t, before[k], statusOf(t, eng, k), "cycle %d key %s", cycle, k)
		}
		require.NoError(t, eng.Close())
	}
	t.Logf("30 restarts: %d keys at the end, %d records written by the Closes that followed changes", len(keys), wrote)
}

// refused checks that err is nil or one of the refusals an administrative
// call may meet on a key that a random history revoked or rotated out.
func refused(t *testing.T, err error) {
	t.Helper()
	for _, ok := range []error{nil, engine.ErrNoCredits, engine.ErrRotated, engine.ErrKeyRevoked, engine.ErrRotationChain} {
		if errors.Is(err, ok) {
			return
		}
	}
	require.NoError(t, err)
}

// The time Close takes after a restart of a large store, ALLOT_CLOSE_N keys
// (for example 1000000) each with a Credits and a window limit, of which 1%
// consumed since the restart: Close writes those only.
//
//	ALLOT_CLOSE_N=1000000 go test -run TestCloseTiming -v ./persist
//
// ALLOT_CLOSE_ALL=1 adds a run with every key consumed.
func TestCloseTiming(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ALLOT_CLOSE_N"))
	if n == 0 {
		t.Skip("set ALLOT_CLOSE_N")
	}
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	limits := []engine.Limit{engine.Credits(1000), engine.PerWindow(100, time.Hour)}
	key := func(i int) string { return "close-key-" + strconv.Itoa(i) }
	batch := make([]engine.Record, 0, 1024)
	for i := range n {
		batch = append(batch, engine.Record{ID: engine.IDOf(key(i)), Limits: limits, Counters: []uint64{0, 0}})
		if len(batch) == cap(batch) || i == n-1 {
			require.NoError(t, st.Save(ctx, batch...))
			batch = batch[:0]
		}
	}
	require.NoError(t, st.Close())
	pcts := []int{0, 1, 100}
	if os.Getenv("ALLOT_CLOSE_ALL") == "" {
		pcts = pcts[:2] // every key consumed takes minutes of reservations first
	}
	for _, pct := range pcts {
		st, err := persist.Open(dir)
		require.NoError(t, err)
		eng, err := engine.New(engine.WithStore(st))
		require.NoError(t, err)
		changed := n * pct / 100
		// From 64 goroutines, so that the reservations share rounds.
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1) - 1); i < changed; i = int(next.Add(1) - 1) {
					d, err := eng.Consume(ctx, key(i*(100/max(pct, 1))), 1)
					if err != nil || !d.Allowed {
						t.Errorf("consume: %v %v", d.Reason, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		s0 := eng.Stats()
		start := time.Now()
		require.NoError(t, eng.Close())
		secs := time.Since(start).Seconds()
		written := eng.Stats().Records - s0.Records
		require.Equal(t, int64(changed), written)
		t.Logf("%d keys, %d%% consumed since the restart: Close wrote %d records in %.3f s", n, pct, written, secs)
	}
}
