// Command demo shows the two races of the Express article, and allot closing
// them, over real HTTP on 127.0.0.1:
//
//  1. 1,000 concurrent requests spend a key with a quota of 100: first
//     against a naive handler written the article's way (check the quota,
//     await some I/O, decrement), then against allot's middleware over a
//     Badger store in a temporary directory.
//  2. A key is revoked while requests of it are running: the naive handler
//     lets the admitted ones finish their work after the revocation; allot's
//     RevokeAndWait returns only once they are done, and refuses the rest.
//
// It ends by itself, in a few seconds.
//
//	make demo
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
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
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// naive is the Express article's first design in Go: a map of remaining
// units, read, then (after an await) written back. Revocation is a set
// checked when a request arrives.
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

func run() error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "allot-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := persist.Open(dir)
	if err != nil {
		return err
	}
	eng, err := engine.New(engine.WithStore(st))
	if err != nil {
		return err
	}
	defer eng.Close()
	for _, k := range []string{"key-a", "key-b"} {
		if err := eng.Register(ctx, k, engine.Credits(quota)); err != nil {
			return err
		}
	}
	nv := &naive{remaining: map[string]int64{"key-a": quota, "key-b": quota}, revoked: map[string]bool{}}

	mux := http.NewServeMux()
	mux.Handle("/naive/", nv)
	mux.Handle("/allot/", httpadapter.Middleware(eng)(http.HandlerFunc(work)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Shutdown(ctx)
	base := "http://" + ln.Addr().String()
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: attackers, MaxConnsPerHost: 0},
	}

	fmt.Printf("HTTP server on %s, Badger store in %s\n\n", ln.Addr(), dir)
	fmt.Printf("1. %d concurrent requests against a key with a quota of %d units\n", attackers, quota)
	for _, target := range []string{"naive", "allot"} {
		codes, err := attack(client, base+"/"+target+"/work", "key-a", attackers)
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

	fmt.Printf("\n2. key-b is revoked while 20 of its slow requests (300 ms each) are running\n")
	for _, target := range []string{"naive", "allot"} {
		after, refused, err := revokeMidFlight(client, base+"/"+target+"/work?slow=1", func() error {
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
	fmt.Println("\nallot granted exactly the quota, and nothing of a revoked key ran after RevokeAndWait returned.")
	return nil
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
	resp.Body.Close()
	return resp.StatusCode, nil
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
