package persist_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/stretchr/testify/require"
)

// The mixed crash loop: the child consumes from many goroutines while one
// goroutine makes administrative calls (register, revoke, rotate, top up,
// delete, reset, and the store's Compact) and reports each one when it
// returns; a third of the grants are partly refunded, as a handler that
// failed would. As in TestCrashLoop, each kill is aimed at the child's
// opening, its running or its closing. After every kill -9 the parent
// reopens the store (at the first try) and checks: every acknowledged
// registration is there, every acknowledged revocation holds, every
// acknowledged deletion holds (the key is unknown, and a key rotated into
// it is denied), no account (a key and the keys rotated into it) has been
// granted more than its limit allows since it was registered or last
// reset, and no counter is back above where the previous restart found
// it, refills and resets aside (reservations never shrink across a
// crash). While the child runs, no grant is reported for a key after its
// deletion returned. Keys get every limit kind in turn, a Rate with a 48 h
// period included.
//
// A Delete or a Reset excludes the consumers (they hold a read lock from
// Consume until their report is written, refund included), so that the
// child's reports are in the order of the calls: a grant reported after
// "del k" was made after Delete returned.

const mixQuota = 5000

// mixLimits are the limits a registration of the mixed loop draws from.
var mixLimits = []engine.Limit{
	engine.Credits(mixQuota),
	engine.PerWindow(mixQuota, 24*time.Hour),
	engine.PerMonth(mixQuota),
	engine.Rate(1, time.Minute, mixQuota),
	engine.Rate(1, 48*time.Hour, 10), // a long period: 10 units, then one every two days
}

// TestCrashMixChild runs in the child process only.
func TestCrashMixChild(t *testing.T) {
	dir := os.Getenv("ALLOT_MIX_DIR")
	if dir == "" {
		t.Skip("started by TestCrashMix only")
	}
	say := sayer()
	eng, st := childEngine(dir, say)
	var mu sync.RWMutex
	var order sync.RWMutex // consumers read-lock it, Delete and Reset lock it
	keys := strings.Fields(os.Getenv("ALLOT_MIX_KEYS"))
	cycle := os.Getenv("ALLOT_MIX_CYCLE")
	closeAfter, _ := strconv.Atoi(os.Getenv("ALLOT_MIX_CLOSE_AFTER"))
	var closed atomic.Bool
	say("ready")
	for w := range 6 {
		go func() {
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for !closed.Load() {
				mu.RLock()
				if len(keys) == 0 {
					mu.RUnlock()
					time.Sleep(time.Millisecond)
					continue
				}
				k := keys[r.IntN(len(keys))]
				mu.RUnlock()
				order.RLock()
				done := consumeOnce(eng, r, k, say, &closed)
				order.RUnlock()
				if done {
					return
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(99, uint64(time.Now().UnixNano())))
	for i := 0; closeAfter == 0 || i < closeAfter; i++ {
		mu.RLock()
		k := ""
		if len(keys) > 0 {
			k = keys[r.IntN(len(keys))]
		}
		mu.RUnlock()
		switch op := r.IntN(15); {
		case op < 3 || k == "":
			nk := fmt.Sprintf("mix-%s-%d", cycle, i)
			kind := r.IntN(len(mixLimits))
			say("try reg %s %d", nk, kind)
			if err := eng.Register(ctx, nk, mixLimits[kind]); err != nil {
				say("error %v", err)
				os.Exit(2)
			}
			say("reg %s", nk)
			mu.Lock()
			keys = append(keys, nk)
			mu.Unlock()
		case op < 5:
			say("try rev %s", k)
			if err := eng.Revoke(ctx, k); err != nil {
				say("error %v", err)
				os.Exit(2)
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
		case op < 10:
			n := 1 + r.Int64N(50)
			say("try top %s %d", k, n)
			if err := eng.TopUp(ctx, k, n); err != nil {
				say("no top %s", k) // not a Credits key, revoked, rotated out
				continue
			}
			say("top %s %d", k, n)
		case op < 12:
			order.Lock()
			say("try del %s", k)
			if err := eng.Delete(ctx, k); err != nil {
				say("error %v", err)
				os.Exit(2)
			}
			say("del %s", k)
			order.Unlock()
			mu.Lock()
			keys = slices.DeleteFunc(keys, func(x string) bool { return x == k })
			mu.Unlock()
		case op == 14:
			say("try cmp")
			if err := st.Compact(ctx); err != nil {
				say("error %v", err)
				os.Exit(2)
			}
			say("cmp")
		default:
			order.Lock()
			say("try rst %s", k)
			err := eng.Reset(ctx, k)
			if err != nil {
				say("no rst %s", k) // rotated out
			} else {
				say("rst %s", k)
			}
			order.Unlock()
		}
		time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
	}
	closed.Store(true)
	say("closing")
	if err := eng.Close(); err != nil {
		say("error %v", err)
		os.Exit(2)
	}
	say("closed")
	os.Exit(0)
}

// consumeOnce makes one Consume of key k, reports a grant, and refunds
// part of a third of them; it reports true when the engine is closed.
func consumeOnce(eng *engine.Engine, r *rand.Rand, k string, say func(string, ...any), closed *atomic.Bool) bool {
	n := 1 + r.Int64N(3)
	d, err := eng.Consume(ctx, k, n)
	if errors.Is(err, engine.ErrClosed) && closed.Load() {
		return true
	}
	if err != nil {
		say("error %v", err)
		os.Exit(2)
	}
	if !d.Allowed {
		return false
	}
	say("g %s %d", k, n)
	if r.IntN(3) == 0 { // the request failed: give some back
		m := 1 + r.Int64N(n)
		say("try ref %s %d", k, m)
		if err := eng.Refund(ctx, k, d, m); err != nil {
			if errors.Is(err, engine.ErrClosed) && closed.Load() {
				return true
			}
			say("error %v", err)
			os.Exit(2)
		}
		say("ref %s %d", k, m)
	}
	return false
}

type mixAccount struct {
	limit        engine.Limit
	since        time.Time // when it was registered
	quota, maybe int64     // acknowledged quota; top-ups and refunds not acknowledged
	granted      int64     // units reported granted, less those refunded
	refunded     int64     // units refunded since the last restart
	lastLeft     int64     // what the last restart found left, -1 before
	lastQuota    int64     // quota at that restart
	lastAt       time.Time // when
	resetting    bool      // a Reset was tried and not yet acknowledged
}

// refill returns how much a limit can have refilled between from and to,
// and false if that cannot be told (a window began).
func refill(l engine.Limit, from, to time.Time) (int64, bool) {
	a, ok := allowance(l, from, to)
	return a - l.Quota(), ok
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
	deleted := map[string]bool{}     // acknowledged deletions
	deleting := map[string]bool{}    // tried, not acknowledged
	rotatedTo := map[string]string{} // a rotated-out key -> the key it went to
	// dead reports whether k is deleted or reaches a deleted key through
	// its rotations: no grant may be reported for it.
	dead := func(k string) bool {
		for ; k != ""; k = rotatedTo[k] {
			if deleted[k] {
				return true
			}
		}
		return false
	}
	var keys []string
	k := newKiller(5)
	var cyclesDone, grants, checks, unchecked, resets, compactions int
	for cycle := range n {
		phase := k.phase()
		// Default reservations: a Rate with a long period then reserves
		// chunks of tens of thousands of emission intervals.
		keys = slices.DeleteFunc(keys, func(k string) bool { return deleted[k] })
		env := []string{"ALLOT_CRASH_CHUNKS=default", "ALLOT_MIX_DIR=" + dir, "ALLOT_MIX_KEYS=" + strings.Join(keys, " "), "ALLOT_MIX_CYCLE=" + strconv.Itoa(cycle)}
		if phase == phaseClose {
			env = append(env, fmt.Sprintf("ALLOT_MIX_CLOSE_AFTER=%d", 1+k.r.IntN(40)))
		}
		cmd, sc := childRun(t, "TestCrashMixChild", env...)
		c := k.start(cmd, phase)
		for sc.Scan() {
			if c.line(sc.Text()) {
				continue
			}
			f := strings.Fields(sc.Text())
			switch {
			case f[0] == "g":
				v, _ := strconv.ParseInt(f[2], 10, 64)
				grants++
				account[f[1]].granted += v
				if dead(f[1]) {
					c.end()
					t.Fatalf("cycle %d: %s granted after a deletion returned (of it, or of a key it was rotated to)", cycle, f[1])
				}
			case f[0] == "reg":
				registered[f[1]] = true
				keys = append(keys, f[1])
			case f[0] == "try" && f[1] == "reg":
				kind, _ := strconv.Atoi(f[3])
				l := mixLimits[kind]
				account[f[2]] = &mixAccount{limit: l, since: time.Now(), quota: l.Quota(), lastLeft: -1}
			case f[0] == "rev":
				revoked[f[1]] = true
			case f[0] == "try" && f[1] == "rot":
				account[f[3]] = account[f[2]]
			case f[0] == "rot":
				registered[f[2]] = true
				rotatedTo[f[1]] = f[2]
				keys = append(keys, f[2])
			case f[0] == "try" && f[1] == "del":
				deleting[f[2]] = true
			case f[0] == "del":
				deleted[f[1]] = true
				delete(deleting, f[1])
				delete(registered, f[1])
			case f[0] == "try" && f[1] == "rst":
				account[f[2]].resetting = true
			case f[0] == "rst":
				// Grants reported before it were in the limits Reset
				// cleared; the counters may now be above where the
				// last restart found them.
				a := account[f[1]]
				a.granted, a.refunded, a.lastLeft, a.resetting = 0, 0, -1, false
				resets++
			case f[0] == "no" && f[1] == "rst":
				account[f[2]].resetting = false
			case f[0] == "try" && f[1] == "top":
				v, _ := strconv.ParseInt(f[3], 10, 64)
				account[f[2]].maybe += v
			case f[0] == "top":
				v, _ := strconv.ParseInt(f[2], 10, 64)
				account[f[1]].quota += v
				account[f[1]].maybe -= v
			case f[0] == "try" && f[1] == "ref":
				v, _ := strconv.ParseInt(f[3], 10, 64)
				account[f[2]].maybe += v
			case f[0] == "ref":
				v, _ := strconv.ParseInt(f[2], 10, 64)
				a := account[f[1]]
				a.granted, a.refunded, a.maybe = a.granted-v, a.refunded+v, a.maybe-v
			case f[0] == "cmp":
				compactions++
			case f[0] == "no", f[0] == "try":
			default:
				c.end()
				t.Fatalf("cycle %d (phase %d): child said %q", cycle, phase, sc.Text())
			}
		}
		c.end()
		cyclesDone++

		// The child died: check every invariant on what it left.
		eng := open(t, dir, nil)
		now := time.Now()
		for k := range deleted {
			_, err := eng.Status(k)
			require.ErrorIs(t, err, engine.ErrUnknownKey, "cycle %d: acknowledged deletion of %s lost", cycle, k)
		}
		for k := range deleting { // the kill came during Delete: either way
			if _, err := eng.Status(k); errors.Is(err, engine.ErrUnknownKey) {
				deleted[k] = true
				delete(registered, k)
			}
			delete(deleting, k)
		}
		for _, a := range account {
			if a.resetting { // the kill came during Reset: it may have landed
				a.granted, a.refunded, a.lastLeft, a.resetting = 0, 0, -1, false
			}
		}
		seen := map[*mixAccount]bool{}
		for k := range registered {
			s, err := eng.Status(k)
			require.NoError(t, err, "cycle %d: acknowledged key %s lost", cycle, k)
			if revoked[k] || dead(k) {
				require.True(t, s.Revoked, "cycle %d: acknowledged revocation or deletion (down its rotations) of %s lost", cycle, k)
			}
			a := account[k]
			if seen[a] || s.RotatedOut {
				continue
			}
			seen[a] = true
			extra, known := refill(a.limit, a.since, now)
			if !known {
				unchecked++ // a new window began since it was registered
				continue
			}
			// No over-grant: what was granted plus what is left to grant
			// fits in the quota (with top-ups that may have landed, and
			// what a rate refilled).
			left := s.Limits[0].Remaining
			require.GreaterOrEqual(t, left, int64(0))
			require.LessOrEqual(t, a.granted+left, a.quota+a.maybe+extra, "cycle %d: %s (%s) over-granted", cycle, k, a.limit.Name())
			// Reservations never shrink: nothing is left that the last
			// restart had already counted as spent, but for what a rate
			// refilled since.
			if a.lastLeft >= 0 {
				back, _ := refill(a.limit, a.lastAt, now)
				require.LessOrEqual(t, left, a.lastLeft+(a.quota-a.lastQuota)+a.refunded+a.maybe+back, "cycle %d: %s counter went back up", cycle, k)
			}
			a.lastLeft, a.lastQuota, a.lastAt, a.refunded = left, a.quota, now, 0
			checks++
		}
		require.NoError(t, eng.Close())
	}
	t.Logf("%d kill -9 cycles with administrative calls (%v): %d grants, %d keys, %d revoked, %d deleted, %d resets, %d compactions, %d account checks (%d skipped: a window began), 0 violations, every open at the first try",
		cyclesDone, k, grants, len(registered)+len(deleted), len(revoked), len(deleted), resets, compactions, checks, unchecked)
}
