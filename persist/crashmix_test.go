package persist_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/stretchr/testify/require"
)

// The mixed crash loop: the child consumes from many goroutines while one
// goroutine makes administrative calls (register, revoke, rotate, top up)
// and reports each one when it returns. After every kill -9 the parent
// reopens the store and checks: every acknowledged registration is there,
// every acknowledged revocation holds, no account (a key and the keys
// rotated into it) has been granted more than its quota, and no counter is
// back above where the previous restart found it (reservations never shrink
// across a crash).

const mixQuota = 5000

// TestCrashMixChild runs in the child process only.
func TestCrashMixChild(t *testing.T) {
	dir := os.Getenv("ALLOT_MIX_DIR")
	if dir == "" {
		t.Skip("started by TestCrashMix only")
	}
	eng, say := childEngine(dir)
	var mu sync.RWMutex
	keys := strings.Fields(os.Getenv("ALLOT_MIX_KEYS"))
	cycle := os.Getenv("ALLOT_MIX_CYCLE")
	say("ready")
	for w := range 6 {
		go func() {
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for {
				mu.RLock()
				if len(keys) == 0 {
					mu.RUnlock()
					time.Sleep(time.Millisecond)
					continue
				}
				k := keys[r.IntN(len(keys))]
				mu.RUnlock()
				n := 1 + r.Int64N(3)
				d, err := eng.Consume(ctx, k, n)
				if err != nil {
					say("error %v", err)
					return
				}
				if d.Allowed {
					say("g %s %d", k, n)
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(99, uint64(time.Now().UnixNano())))
	for i := 0; ; i++ {
		mu.RLock()
		k := ""
		if len(keys) > 0 {
			k = keys[r.IntN(len(keys))]
		}
		mu.RUnlock()
		switch op := r.IntN(10); {
		case op < 3 || k == "":
			nk := fmt.Sprintf("mix-%s-%d", cycle, i)
			say("try reg %s", nk)
			if err := eng.Register(ctx, nk, engine.Credits(mixQuota)); err != nil {
				say("error %v", err)
				return
			}
			say("reg %s", nk)
			mu.Lock()
			keys = append(keys, nk)
			mu.Unlock()
		case op < 5:
			say("try rev %s", k)
			if err := eng.Revoke(ctx, k); err != nil {
				say("error %v", err)
				return
			}
			say("rev %s", k)
		case op < 7:
			nk := fmt.Sprintf("mix-%s-%d", cycle, i)
			say("try rot %s %s", k, nk)
			err := eng.Rotate(ctx, k, nk, time.Hour)
			if err != nil {
				say("no rot %s", k) // revoked or rotated out already: refused
				continue
			}
			say("rot %s %s", k, nk)
			mu.Lock()
			keys = append(keys, nk)
			mu.Unlock()
		default:
			n := 1 + r.Int64N(50)
			say("try top %s %d", k, n)
			if err := eng.TopUp(ctx, k, n); err != nil {
				say("no top %s", k)
				continue
			}
			say("top %s %d", k, n)
		}
		time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
	}
}

type mixAccount struct {
	quota, maybe int64 // acknowledged quota; top-ups not acknowledged
	granted      int64 // units reported granted
	lastLeft     int64 // what the last restart found left, -1 before
	lastQuota    int64 // quota at that restart
}

func TestCrashMix(t *testing.T) {
	n := cycles(t, 10)
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	require.NoError(t, st.Close())

	account := map[string]*mixAccount{} // key -> its account (shared after a rotation)
	registered := map[string]bool{}
	revoked := map[string]bool{}
	var keys []string
	r := rand.New(rand.NewPCG(5, uint64(time.Now().UnixNano())))
	var cyclesDone, grants, checks int
	for cycle := range n {
		cmd, sc := childRun(t, "TestCrashMixChild", "ALLOT_MIX_DIR="+dir, "ALLOT_MIX_KEYS="+strings.Join(keys, " "),
			"ALLOT_MIX_CYCLE="+strconv.Itoa(cycle))
		require.True(t, sc.Scan())
		require.Equal(t, "ready", sc.Text())
		kill := time.AfterFunc(time.Duration(30+r.IntN(150))*time.Millisecond, func() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
		})
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case f[0] == "g":
				v, _ := strconv.ParseInt(f[2], 10, 64)
				grants++
				account[f[1]].granted += v
			case f[0] == "reg":
				registered[f[1]] = true
				keys = append(keys, f[1])
			case f[0] == "try" && f[1] == "reg":
				account[f[2]] = &mixAccount{quota: mixQuota, lastLeft: -1}
			case f[0] == "rev":
				revoked[f[1]] = true
			case f[0] == "try" && f[1] == "rot":
				account[f[3]] = account[f[2]]
			case f[0] == "rot":
				registered[f[2]] = true
				keys = append(keys, f[2])
			case f[0] == "try" && f[1] == "top":
				v, _ := strconv.ParseInt(f[3], 10, 64)
				account[f[2]].maybe += v
			case f[0] == "top":
				v, _ := strconv.ParseInt(f[2], 10, 64)
				account[f[1]].quota += v
				account[f[1]].maybe -= v
			case f[0] == "no", f[0] == "try":
			default:
				t.Fatalf("cycle %d: child said %q", cycle, sc.Text())
			}
		}
		kill.Stop()
		_ = cmd.Wait()
		cyclesDone++

		// The child died: check every invariant on what it left.
		eng := open(t, dir, nil)
		seen := map[*mixAccount]bool{}
		for k := range registered {
			s, err := eng.Status(k)
			require.NoError(t, err, "cycle %d: acknowledged key %s lost", cycle, k)
			if revoked[k] {
				require.True(t, s.Revoked, "cycle %d: acknowledged revocation of %s lost", cycle, k)
			}
			a := account[k]
			if seen[a] || s.RotatedOut {
				continue
			}
			seen[a] = true
			// No over-grant: what was granted plus what is left to grant
			// fits in the quota (with top-ups that may have landed).
			left := s.Limits[0].Remaining
			require.GreaterOrEqual(t, left, int64(0))
			require.LessOrEqual(t, a.granted+left, a.quota+a.maybe, "cycle %d: %s over-granted", cycle, k)
			// Reservations never shrink: nothing is left that the last
			// restart had already counted as spent.
			if a.lastLeft >= 0 {
				require.LessOrEqual(t, left, a.lastLeft+(a.quota-a.lastQuota)+a.maybe, "cycle %d: %s counter went back up", cycle, k)
			}
			a.lastLeft, a.lastQuota = left, a.quota
			checks++
		}
		require.NoError(t, eng.Close())
	}
	t.Logf("%d kill -9 cycles with administrative calls: %d grants, %d keys, %d revoked, %d account checks, 0 violations",
		cyclesDone, grants, len(registered), len(revoked), checks)
}
