package redisstore_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/redis/go-redis/v9"
)

// streamChild is a child that reports every grant as it happens, so that
// a process killed with SIGKILL has told the test of every grant it served
// before it died: each goroutine writes a line "g" with one write(2) after
// each granted Consume and before its next one, and what is in the pipe
// survives the process. It opens its engine with childEngine, says
// "ready", waits for a line on stdin, then consumes ALLOT_KEY one unit at
// a time from 16 goroutines. A goroutine stops at its first denial, or,
// with ALLOT_MARKER, at its first denial of a Consume it started after it
// saw that Redis key set (a happens-before marker: such a Consume is
// "late", and a late grant is reported "v", a violation). With
// ALLOT_TOLERATE an error matching engine.ErrStore is reported "e <err>"
// and the goroutine goes on; any other error is reported "x <err>" and
// stops it. With ALLOT_FOR (a duration) it goes on through denials until
// that time has passed on the real clock. A second line on stdin, or its
// end, stops every goroutine. At the end it prints "done <granted> <late> <violations>
// <errors>" and closes the engine.
func streamChild() int {
	eng, c, closeAll, err := childEngine()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	key, marker := os.Getenv("ALLOT_KEY"), os.Getenv("ALLOT_MARKER")
	tolerate := os.Getenv("ALLOT_TOLERATE") != ""
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return 1
	}
	var stop atomic.Bool
	go func() { _, _ = in.ReadString('\n'); stop.Store(true) }()
	timed := os.Getenv("ALLOT_FOR") != ""
	if s := os.Getenv("ALLOT_FOR"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fmt.Printf("x ALLOT_FOR: %v\n", err)
			return 1
		}
		time.AfterFunc(d, func() { stop.Store(true) })
	}
	var granted, late, viol, failed atomic.Int64
	g, v := []byte("g\n"), []byte("v\n")
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				seen := false
				if marker != "" {
					s, err := c.Get(ctx, marker).Result()
					if err != nil && !errors.Is(err, redis.Nil) {
						fmt.Printf("x marker: %v\n", err)
						return
					}
					seen = s == "1"
				}
				d, err := eng.Consume(ctx, key, 1)
				if err != nil {
					failed.Add(1)
					if tolerate && errors.Is(err, engine.ErrStore) {
						fmt.Printf("e %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
						continue
					}
					fmt.Printf("x %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
					return
				}
				if seen {
					late.Add(1)
				}
				switch {
				case d.Allowed && seen:
					viol.Add(1)
					_, _ = os.Stdout.Write(v)
				case d.Allowed:
					granted.Add(1)
					_, _ = os.Stdout.Write(g)
				case timed:
				case seen || marker == "":
					return
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("done %d %d %d %d\n", granted.Load(), late.Load(), viol.Load(), failed.Load())
	if err := closeAll(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// revokeChild is process A of the revocation tests: it opens its engine
// (childEngine), says "ready", and at a line on stdin revokes ALLOT_KEY,
// then sets the Redis key ALLOT_MARKER to 1 (after Revoke returned), and
// prints "revoked <ns Revoke took>".
func revokeChild() int {
	eng, c, closeAll, err := childEngine()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 1
	}
	start := time.Now()
	if err := eng.Revoke(ctx, os.Getenv("ALLOT_KEY")); err != nil {
		fmt.Printf("x revoke: %v\n", err)
		return 1
	}
	took := time.Since(start)
	if err := c.Set(ctx, os.Getenv("ALLOT_MARKER"), "1", 0).Err(); err != nil {
		fmt.Printf("x marker: %v\n", err)
		return 1
	}
	fmt.Printf("revoked %d\n", took.Nanoseconds())
	if err := closeAll(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// sproc is a running streamChild (or revokeChild), read by a goroutine of
// its own.
type sproc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	errb lockedBuf
	eof  chan struct{} // closed when its stdout ends
	// reading is set once a goroutine reads its stdout (after "ready").
	reading atomic.Bool

	mu      sync.Mutex
	n       map[byte]int64 // lines seen per kind: g, v, e
	waiters []waiter
	fatal   []string // x lines
	lastErr string   // the last e line
	last    string   // the done or revoked line
}

type waiter struct {
	kind byte
	n    int64
	ch   chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startStream starts n children of the given mode (stream or revoke) and
// waits until each is ready.
func startStream(t *testing.T, n int, mode string, env ...string) []*sproc {
	t.Helper()
	ps := make([]*sproc, n)
	for i := range ps {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), append([]string{"ALLOT_REDIS_CHILD=" + mode}, env...)...)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		p := &sproc{cmd: cmd, in: in, out: bufio.NewReader(out), eof: make(chan struct{}), n: map[byte]int64{}}
		cmd.Stderr = &p.errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			if p.reading.Load() {
				<-p.eof
			}
			_ = cmd.Wait()
		})
		ps[i] = p
	}
	for _, p := range ps {
		if l, err := p.out.ReadString('\n'); err != nil || l != "ready\n" {
			t.Fatalf("child: %q %v\n%s", l, err, p.errb.String())
		}
		p.reading.Store(true)
		go p.read()
	}
	return ps
}

func (p *sproc) read() {
	defer close(p.eof)
	sc := bufio.NewScanner(p.out)
	for sc.Scan() {
		l := sc.Text()
		p.mu.Lock()
		switch {
		case l == "g" || l == "v":
			p.n[l[0]]++
		case strings.HasPrefix(l, "e "):
			p.n['e']++
			p.lastErr = l[2:]
		case strings.HasPrefix(l, "x "):
			p.fatal = append(p.fatal, l[2:])
		default:
			p.last = l
		}
		ws := p.waiters[:0]
		for _, w := range p.waiters {
			if p.n[w.kind] >= w.n {
				close(w.ch)
			} else {
				ws = append(ws, w)
			}
		}
		p.waiters = ws
		p.mu.Unlock()
	}
	p.mu.Lock()
	for _, w := range p.waiters {
		close(w.ch)
	}
	p.waiters = nil
	p.mu.Unlock()
}

// failures returns the child's x lines so far.
func (p *sproc) failures() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.fatal...)
}

// count returns the lines of kind seen so far.
func (p *sproc) count(kind byte) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[kind]
}

// when returns a channel closed once n lines of kind have been seen, or
// the child's output ended.
func (p *sproc) when(kind byte, n int64) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan struct{})
	select {
	case <-p.eof:
		close(ch)
		return ch
	default:
	}
	if p.n[kind] >= n {
		close(ch)
	} else {
		p.waiters = append(p.waiters, waiter{kind, n, ch})
	}
	return ch
}

// stop tells the child to stop.
func (p *sproc) stop(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(p.in, "stop\n"); err != nil {
		t.Fatal(err)
	}
}

// start tells the child to go.
func (p *sproc) start(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(p.in, "go\n"); err != nil {
		t.Fatal(err)
	}
}

// kill kills the child with SIGKILL and reads what it wrote before it
// died. It reports whether the child was still running (it had not
// printed its done line).
func (p *sproc) kill() bool {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.eof
	_ = p.cmd.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last == ""
}

// finish waits for the child to end by itself and returns its last line's
// fields after the first (done's or revoked's numbers).
func (p *sproc) finish(t *testing.T) []int64 {
	t.Helper()
	<-p.eof
	err := p.cmd.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.fatal) > 0 || err != nil {
		t.Fatalf("child: %v, errors %q\n%s", err, p.fatal, p.errb.String())
	}
	f := strings.Fields(p.last)
	if len(f) == 0 {
		t.Fatalf("child said nothing at its end\n%s", p.errb.String())
	}
	xs := make([]int64, len(f)-1)
	for i := range xs {
		var err error
		if xs[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			t.Fatalf("child's last line %q", p.last)
		}
	}
	return xs
}
