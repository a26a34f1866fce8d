// Package redistest starts a real redis-server for tests: on 127.0.0.1, a
// free port, a directory of the test's own, append-only persistence, and
// stops it when the test ends; StartCluster starts a Redis Cluster of such
// servers. Without redis-server (or, for a cluster, redis-cli) on the PATH
// a test skips, and under CI=true it fails: CI installs them.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server run by a test.
type Server struct {
	Addr   string
	Dir    string
	args   []string
	cmd    *exec.Cmd
	exited chan struct{}
	t      testing.TB
}

// Fsync is the appendfsync setting of a Server.
type Fsync string

const (
	Always   Fsync = "always"
	EverySec Fsync = "everysec"
)

// Start starts a redis-server with appendonly yes and the given fsync.
func Start(t testing.TB, fsync Fsync, extra ...string) *Server {
	t.Helper()
	need(t, "redis-server")
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, t: t}
	s.args = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", string(fsync), "--dir", dir,
		"--protected-mode", "no", "--loglevel", "warning"}, extra...)
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// need skips the test, or under CI=true fails it, without bin on the PATH.
func need(t testing.TB, bin string) {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (CI installs the Debian package redis-server): %v", bin, err)
		}
		t.Skipf("%s not found: %v", bin, err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() {
	s.t.Helper()
	cmd := exec.Command("redis-server", s.args...)
	out, err := os.Create(s.Dir + "/redis.log")
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); out.Close(); close(s.exited) }()
	if err := s.ready(); err != nil {
		log, _ := os.ReadFile(s.Dir + "/redis.log")
		s.t.Fatalf("redis-server on %s: %v\n%s", s.Addr, err, log)
	}
}

// ready waits until the server answers PING and has loaded its data, or
// exits.
func (s *Server) ready() error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return errors.New("exited")
		default:
		}
		if err := c.Ping(context.Background()).Err(); err == nil {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return errors.New("no answer within 30s")
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Kill stops the server with SIGKILL and waits for it to exit.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// Restart starts the server again on the same port and directory, after
// Kill.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Stop stops the server (SIGKILL: nothing of it is kept).
func (s *Server) Stop() { s.Kill() }

// Info returns field of INFO's answer, "" if there is none.
func (s *Server) Info(ctx context.Context, c *redis.Client, field string) string {
	txt, err := c.Info(ctx).Result()
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(strings.NewReader(txt))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok && k == field {
			return v
		}
	}
	return ""
}

// String describes the server.
func (s *Server) String() string { return fmt.Sprintf("redis-server %s (%s)", s.Addr, s.Dir) }

// Cluster is a Redis Cluster of masters without replicas, run by a test.
type Cluster struct {
	Nodes []*Server
	t     testing.TB
}

// StartCluster starts n redis-servers (as Start does, with the given fsync)
// with cluster mode on, joins them into one cluster with
// redis-cli --cluster create (the slots shared out evenly, no replicas),
// and waits until every node reports cluster_state:ok.
func StartCluster(t testing.TB, n int, fsync Fsync) *Cluster {
	t.Helper()
	need(t, "redis-cli")
	cl := &Cluster{t: t}
	args := []string{"--cluster", "create"}
	for range n {
		s := Start(t, fsync, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000")
		cl.Nodes = append(cl.Nodes, s)
		args = append(args, s.Addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range cl.Nodes {
		c := redis.NewClient(&redis.Options{Addr: s.Addr})
		for {
			txt, err := c.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(txt, "cluster_state:ok") && strings.Contains(txt, "cluster_slots_ok:16384") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("cluster node %s not ready within 30s: %q %v", s.Addr, txt, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		c.Close()
	}
	return cl
}

// Addrs returns the nodes' addresses.
func (cl *Cluster) Addrs() []string {
	as := make([]string, len(cl.Nodes))
	for i, s := range cl.Nodes {
		as[i] = s.Addr
	}
	return as
}

// Client returns a cluster client of the cluster, closed when the test
// ends.
func (cl *Cluster) Client() *redis.ClusterClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	cl.t.Cleanup(func() { c.Close() })
	return c
}
