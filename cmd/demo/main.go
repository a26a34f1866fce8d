// Command demo shows, over real HTTP on 127.0.0.1 and a Badger store in a
// temporary directory, the races of a check-then-decrement quota and what
// allot promises instead:
//
//  1. 1,000 concurrent requests spend a key with a quota of 100: first
//     against a naive handler (check the quota, await some I/O, decrement),
//     then against allot's middleware.
//  2. A key is revoked while requests of it are running: the naive handler
//     lets the admitted ones finish their work after the revocation; allot's
//     RevokeAndWait returns only once they are done, and refuses the rest.
//  3. The store restarts (Close, then persist.Open and engine.New on the
//     same directory): the units spent before the restart stay spent.
//  4. The key revoked in 2 stays revoked after the restart.
//  5. One 429 response, printed as it crossed the wire: its RateLimit,
//     RateLimit-Policy and Retry-After fields and its problem body.
//
// It checks each of these, exits with status 1 if one fails, and ends by
// itself in a few seconds. Its figures are the same on every run: the
// engine's clock is pinned (engine.WithClock), which only the window limit
// of part 5 reads.
//
//	make demo
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/httpadapter"
	"github.com/allot-go/allot/persist"
)

const (
	attackers = 1000
	quota     = 100
	ioDelay   = 5 * time.Millisecond // the "await" of the naive handler

	spentC  = 37   // units key-c spends before the restart
	creditD = 1000 // key-d's credits
	hourlyD = 5    // key-d's units per hour
	beforeD = 3    // requests of key-d before the restart
)

// pinned is the engine's clock: half a minute before the hour, so that the
// window of part 5 turns in 30 s.
var pinned = time.Date(2026, 1, 1, 10, 59, 30, 0, time.UTC)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// naive is the usual first design: a map of remaining units, read, then
// (after an await) written back. Revocation is a set checked when a request
// arrives.
type naive struct {
	mu        sync.Mutex
	remaining map[string]int64
	revoked   map[string]bool
}

func (q *naive) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("X-API-Key")
	q.mu.Lock()
	left, known := q.remaining[key]
	revoked := q.revoked[key]
	q.mu.Unlock()
	switch {
	case !known || revoked:
		http.Error(w, "invalid key", http.StatusUnauthorized)
		return
	case left <= 0:
		http.Error(w, "quota exhausted", http.StatusTooManyRequests)
		return
	}
	time.Sleep(ioDelay) // await db.logUsage(key)
	q.mu.Lock()
	q.remaining[key] = left - 1
	q.mu.Unlock()
	work(w, r)
}

func (q *naive) revoke(key string) {
	q.mu.Lock()
	q.revoked[key] = true
	q.mu.Unlock()
}

// work is the protected handler. A request with ?slow=1 runs for a while,
// and reports when it finishes.
var finished = make(chan time.Time, 4096)

func work(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("slow") == "1" {
		entered <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		finished <- time.Now()
	}
	fmt.Fprintln(w, "ok")
}

var entered = make(chan struct{}, 4096)

// open opens the Badger store in dir and an engine over it.
func open(dir string) (*engine.Engine, error) {
	st, err := persist.Open(dir)
	if err != nil {
		return nil, err
	}
	eng, err := engine.New(engine.WithStore(st), engine.WithClock(func() time.Time { return pinned }))
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	return eng, nil
}

// server is an HTTP server on a free port of 127.0.0.1.
type server struct {
	srv  *http.Server
	addr string
}

func serve(h http.Handler) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, addr: ln.Addr().String()}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *server) url(path string) string { return "http://" + s.addr + path }

func (s *server) stop() { _ = s.srv.Shutdown(context.Background()) }

func run() error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "allot-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	eng, err := open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = eng.Close() }() // the engine open at the end; ErrClosed if it is closed already
	for _, k := range []string{"key-a", "key-b", "key-c"} {
		if err := eng.Register(ctx, k, engine.Credits(quota)); err != nil {
			return err
		}
	}
	if err := eng.Register(ctx, "key-d", engine.Credits(creditD), engine.PerWindow(hourlyD, time.Hour)); err != nil {
		return err
	}
	nv := &naive{remaining: map[string]int64{"key-a": quota, "key-b": quota}, revoked: map[string]bool{}}

	mux := http.NewServeMux()
	mux.Handle("/naive/", nv)
	mux.Handle("/allot/", httpadapter.Middleware(eng)(http.HandlerFunc(work)))
	srv, err := serve(mux)
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: attackers},
	}

	fmt.Println("HTTP server on 127.0.0.1, Badger store in a new temporary directory")
	fmt.Println("\n1. 1000 concurrent requests against a key with a quota of 100 units")
	for _, target := range []string{"naive", "allot"} {
		codes, err := attack(client, srv.url("/"+target+"/work"), "key-a", attackers)
		if err != nil {
			return err
		}
		fmt.Printf("   %-5s  200 OK: %4d of quota %d   429: %4d   other: %d\n",
			target, codes[http.StatusOK], quota, codes[http.StatusTooManyRequests],
			attackers-codes[http.StatusOK]-codes[http.StatusTooManyRequests])
		if target == "allot" && codes[http.StatusOK] != quota {
			return fmt.Errorf("allot let %d requests through, want %d", codes[http.StatusOK], quota)
		}
	}

	fmt.Println("\n2. key-b is revoked while 20 of its slow requests (300 ms each) are running")
	for _, target := range []string{"naive", "allot"} {
		after, refused, err := revokeMidFlight(client, srv.url("/"+target+"/work?slow=1"), func() error {
			if target == "naive" {
				nv.revoke("key-b")
				return nil
			}
			return eng.RevokeAndWait(ctx, "key-b")
		})
		if err != nil {
			return err
		}
		fmt.Printf("   %-5s  requests that completed their work after the revocation returned: %2d   refused afterwards (401): %d\n",
			target, after, refused)
		if target == "allot" && after != 0 {
			return fmt.Errorf("allot: %d requests completed after RevokeAndWait returned", after)
		}
	}

	// Part 3: spend, restart, compare.
	codes, err := attack(client, srv.url("/allot/work"), "key-c", spentC)
	if err != nil {
		return err
	}
	if codes[http.StatusOK] != spentC {
		return fmt.Errorf("key-c: %d of %d requests admitted", codes[http.StatusOK], spentC)
	}
	for range beforeD {
		if code, err := get(client, srv.url("/allot/work"), "key-d"); err != nil {
			return err
		} else if code != http.StatusOK {
			return fmt.Errorf("key-d: status %d before the restart", code)
		}
	}
	before, err := remaining(eng)
	if err != nil {
		return err
	}
	srv.stop()
	client.CloseIdleConnections()
	if err := eng.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if eng, err = open(dir); err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	after, err := remaining(eng)
	if err != nil {
		return err
	}
	fmt.Printf("\n3. A restart of the store: the units spent before it stay spent\n")
	fmt.Printf("   key-c spends %d units and key-d %d, over HTTP; then eng.Close(), and persist.Open on the\n", spentC, beforeD)
	fmt.Printf("   same directory and engine.New(engine.WithStore(st)) make a new engine from the store\n")
	fmt.Printf("   remaining                 before the restart     after it\n")
	for i, row := range []string{"key-a (credits, part 1)", "key-c (credits)", "key-d (credits)", "key-d (5 an hour)"} {
		fmt.Printf("   %-25s %18s %12s\n", row, before[i], after[i])
		if before[i] != after[i] {
			return fmt.Errorf("%s: %s before the restart, %s after", row, before[i], after[i])
		}
	}

	fmt.Printf("\n4. A revocation holds after the restart (key-b was revoked in part 2)\n")
	st, err := eng.Status("key-b")
	if err != nil {
		return err
	}
	d, err := eng.Consume(ctx, "key-b", 1)
	if err != nil {
		return err
	}
	fmt.Printf("   eng.Status(\"key-b\").Revoked: %v\n", st.Revoked)
	fmt.Printf("   eng.Consume(ctx, \"key-b\", 1): Allowed %v, Reason %v\n", d.Allowed, d.Reason)
	if !st.Revoked || d.Allowed || d.Reason != engine.Revoked {
		return fmt.Errorf("key-b after the restart: revoked %v, consume %+v", st.Revoked, d)
	}

	mux = http.NewServeMux()
	mux.Handle("/allot/", httpadapter.Middleware(eng)(http.HandlerFunc(work)))
	if srv, err = serve(mux); err != nil {
		return err
	}
	defer srv.stop()
	resp, err := exchange(srv.addr, "/allot/work", "key-b")
	if err != nil {
		return err
	}
	fmt.Printf("   GET /allot/work with key-b: %s, body %s\n", resp.status, resp.body)
	if !strings.Contains(resp.status, " 401 ") {
		return fmt.Errorf("key-b over HTTP after the restart: %s", resp.status)
	}

	fmt.Printf("\n5. One 429, as it crossed the wire (key-d: %d requests before the restart, %d after, then this one)\n",
		beforeD, hourlyD-beforeD)
	fmt.Printf("   the engine's clock is pinned at %s, 30 s before the hour window turns\n", pinned.Format("15:04:05 MST"))
	for range hourlyD - beforeD {
		if code, err := get(client, srv.url("/allot/work"), "key-d"); err != nil {
			return err
		} else if code != http.StatusOK {
			return fmt.Errorf("key-d: status %d after the restart", code)
		}
	}
	resp, err = exchange(srv.addr, "/allot/work", "key-d")
	if err != nil {
		return err
	}
	for _, l := range resp.request {
		fmt.Println("   >", l)
	}
	fmt.Println("   <", resp.status)
	for _, l := range resp.header {
		fmt.Println("   <", l)
	}
	fmt.Println("   <")
	fmt.Println("   <", resp.body)
	if !strings.Contains(resp.status, " 429 ") {
		return fmt.Errorf("key-d: %s, want 429", resp.status)
	}

	fmt.Println("\nallot granted exactly the quota, ran nothing of a revoked key after RevokeAndWait returned,")
	fmt.Println("and kept both across a restart. make crash checks, across kill -9, that no unit is granted")
	fmt.Println("twice and that a revocation holds.")
	return nil
}

// remaining reports what key-a, key-c and key-d have left, as "n of quota".
func remaining(eng *engine.Engine) ([]string, error) {
	var out []string
	for _, k := range []struct {
		key   string
		limit int
		of    int64
	}{{"key-a", 0, quota}, {"key-c", 0, quota}, {"key-d", 0, creditD}, {"key-d", 1, hourlyD}} {
		st, err := eng.Status(k.key)
		if err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf("%d of %d", st.Limits[k.limit].Remaining, k.of))
	}
	return out, nil
}

// attack sends n concurrent requests and counts the status codes.
func attack(client *http.Client, url, key string, n int) (map[int]int, error) {
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			code, err := get(client, url, key)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, err
	}
	return codes, nil
}

func get(client *http.Client, url, key string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-API-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// wire is one HTTP/1.1 exchange as it was written and read.
type wire struct {
	request []string // request line and fields
	status  string   // status line
	header  []string // response fields, as received (Date's value elided)
	body    string
}

// exchange sends a GET for path with key over a new TCP connection and
// returns the exchange as it crossed the wire.
func exchange(addr, path, key string) (wire, error) {
	w := wire{request: []string{"GET " + path + " HTTP/1.1", "Host: " + "127.0.0.1", "X-API-Key: " + key, "Connection: close"}}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return w, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, strings.Join(w.request, "\r\n")+"\r\n\r\n"); err != nil {
		return w, err
	}
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return w, fmt.Errorf("reading the response head: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			body, err := io.ReadAll(r)
			if err != nil {
				return w, err
			}
			w.body = strings.TrimRight(string(body), "\n")
			if w.status == "" {
				return w, errors.New("empty response")
			}
			return w, nil
		case w.status == "":
			w.status = line
		case strings.HasPrefix(strings.ToLower(line), "date:"):
			w.header = append(w.header, line[:len("date:")]+" (elided: it differs on every run)")
		default:
			w.header = append(w.header, line)
		}
	}
}

// revokeMidFlight starts 20 slow requests of key-b, revokes the key once
// they are all inside the handler, then sends 20 more. It returns how many
// slow requests finished their work after revoke returned, and how many of
// the later requests were refused with 401.
func revokeMidFlight(client *http.Client, url string, revoke func() error) (after, refused int, err error) {
	const inFlight = 20
	var wg sync.WaitGroup
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = get(client, url, "key-b")
		}()
	}
	for range inFlight {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			return 0, 0, errors.New("slow requests did not start")
		}
	}
	if err := revoke(); err != nil {
		return 0, 0, err
	}
	revokedAt := time.Now()
	for range inFlight {
		code, err := get(client, url, "key-b")
		if err != nil {
			return 0, 0, err
		}
		if code == http.StatusUnauthorized {
			refused++
		}
	}
	wg.Wait()
	for {
		select {
		case t := <-finished:
			if t.After(revokedAt) {
				after++
			}
			continue
		default:
		}
		break
	}
	return after, refused, nil
}
