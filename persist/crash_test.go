package persist_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
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

// The crash test: a child process consumes from many goroutines and reports
// every grant on stdout as it happens; the parent kills it with SIGKILL at a
// random moment and starts it again. Across all cycles, the grants reported
// for a key never exceed its quota, and what is lost (quota minus reported
// grants minus what a final open finds left) stays within the documented
// bound: per crash, MaxChunk units per key plus the grants in flight.
//
//	ALLOT_CRASH_CYCLES=50 go test -run TestCrashLoop ./persist   (make crash)

const (
	crashKeys     = 4
	crashQuota    = 2_000_000
	crashWorkers  = 8
	crashMaxChunk = 64
)

var crashLimits = func(i int) []engine.Limit {
	if i == 0 {
		// A rate that barely refills during the test, with a large burst.
		return []engine.Limit{engine.Rate(1, time.Minute, crashQuota)}
	}
	return []engine.Limit{engine.Credits(crashQuota)}
}

func crashKey(i int) string { return fmt.Sprintf("crash-key-%02d", i) }

func cycles(t *testing.T, def int) int {
	if s := os.Getenv("ALLOT_CRASH_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		return n
	}
	if testing.Short() {
		return 3
	}
	return def
}

// TestCrashChild is the child process; it runs only when started by the
// parent test.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("ALLOT_CRASH_DIR")
	if dir == "" {
		t.Skip("started by TestCrashLoop only")
	}
	eng, say := childEngine(dir)
	switch os.Getenv("ALLOT_CRASH_MODE") {
	case "revoke":
		k := os.Getenv("ALLOT_CRASH_KEY")
		if err := eng.Revoke(ctx, k); err != nil {
			say("error %v", err)
			os.Exit(2)
		}
		say("revoked %s", k)
		select {} // wait for SIGKILL
	}
	say("ready")
	var wg sync.WaitGroup
	for w := range crashWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for {
				i := r.IntN(crashKeys)
				d, err := eng.Consume(ctx, crashKey(i), 1)
				if err != nil {
					say("error %v", err)
					return
				}
				if d.Allowed {
					say("g %d", i)
				}
			}
		}()
	}
	wg.Wait()
	os.Exit(3)
}

// childEngine opens the engine of a crash child, and returns it with a
// function that writes one line to the parent at once (the parent kills the
// child at any moment: nothing may wait in a buffer).
func childEngine(dir string) (*engine.Engine, func(format string, a ...any)) {
	var out sync.Mutex
	say := func(format string, a ...any) {
		out.Lock()
		_, _ = fmt.Fprintf(os.Stdout, format+"\n", a...)
		out.Unlock()
	}
	st, err := persist.Open(dir, persist.WithChunks(4, crashMaxChunk))
	if err != nil {
		say("error %v", err)
		os.Exit(2)
	}
	eng, err := engine.New(engine.WithStore(st))
	if err != nil {
		say("error %v", err)
		os.Exit(2)
	}
	return eng, say
}

// child starts the test binary as a crash child.
func child(t *testing.T, dir string, env ...string) (*exec.Cmd, *bufio.Scanner) {
	return childRun(t, "TestCrashChild", append(env, "ALLOT_CRASH_DIR="+dir)...)
}

// childRun starts the test binary running only the named test.
func childRun(t *testing.T, test string, env ...string) (*exec.Cmd, *bufio.Scanner) {
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	return cmd, bufio.NewScanner(stdout)
}

func TestCrashLoop(t *testing.T) {
	n := cycles(t, 10)
	dir := t.TempDir()
	eng := open(t, dir, nil)
	for i := range crashKeys {
		require.NoError(t, eng.Register(ctx, crashKey(i), crashLimits(i)...))
	}
	require.NoError(t, eng.Close())

	reported := make([]int64, crashKeys)
	r := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	start := time.Now()
	for cycle := range n {
		cmd, sc := child(t, dir)
		require.True(t, sc.Scan(), "child did not start")
		require.Equal(t, "ready", sc.Text())
		kill := time.AfterFunc(time.Duration(20+r.IntN(150))*time.Millisecond, func() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
		})
		for sc.Scan() {
			line := sc.Text()
			if i, ok := strings.CutPrefix(line, "g "); ok {
				k, err := strconv.Atoi(i)
				require.NoError(t, err)
				reported[k]++
				continue
			}
			t.Fatalf("cycle %d: child said %q", cycle, line)
		}
		kill.Stop()
		_ = cmd.Wait()
	}
	elapsed := time.Since(start)

	eng = open(t, dir, nil)
	defer eng.Close()
	var total, lost int64
	bound := int64(n) * (crashMaxChunk + crashWorkers)
	for i := range crashKeys {
		s := statusOf(t, eng, crashKey(i))
		quota := int64(crashQuota)
		if i == 0 {
			quota += int64(elapsed/time.Minute) + 1 // what the rate refilled
		}
		require.LessOrEqual(t, reported[i], quota, "%s over-granted", crashKey(i))
		short := quota - reported[i] - s.Limits[0].Remaining
		require.GreaterOrEqual(t, short, int64(-1), "%s: more left than quota minus grants", crashKey(i))
		require.LessOrEqual(t, short, bound, "%s: lost more than the bound", crashKey(i))
		total += reported[i]
		lost += max(short, 0)
	}
	require.Positive(t, total, "the children granted something")
	t.Logf("%d kill -9 cycles: %d grants reported, 0 over-grants, %d units lost (bound %d per key)", n, total, lost, bound)
}

// Revoke, then SIGKILL the instant it returns: the key is revoked on reopen.
func TestRevokeSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	eng := open(t, dir, nil)
	for i := range 3 {
		require.NoError(t, eng.Register(ctx, fmt.Sprint("victim-", i), engine.Credits(10)))
	}
	require.NoError(t, eng.Close())
	for i := range 3 {
		k := fmt.Sprint("victim-", i)
		cmd, sc := child(t, dir, "ALLOT_CRASH_MODE=revoke", "ALLOT_CRASH_KEY="+k)
		require.True(t, sc.Scan())
		require.Equal(t, "revoked "+k, sc.Text())
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
	}
	eng = open(t, dir, nil)
	defer eng.Close()
	for i := range 3 {
		d, err := eng.Consume(ctx, fmt.Sprint("victim-", i), 1)
		require.NoError(t, err)
		require.Equal(t, engine.Revoked, d.Reason)
	}
}
