package redisstore_test

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/redis/go-redis/v9"
)

// TestRevokeAcrossProcesses: process A revokes a key while B, C and D
// consume it, 16 goroutines each. A sets a Redis key (the marker) once
// Revoke has returned; every consumer reads the marker before each
// Consume, and a grant of a Consume started after it saw the marker is a
// violation: there must be none, in any process. Each goroutine goes on
// until such a Consume is denied, so every process shows it checked.
//
// "one stopped" stops D with SIGSTOP, once it has granted, before A
// revokes: Revoke must still return, within one lease (300 ms here) and
// a margin, by Redis's clock; after SIGCONT, D grants nothing either.
func TestRevokeAcrossProcesses(t *testing.T) {
	const lease = 300 * time.Millisecond
	for _, stopped := range []bool{false, true} {
		name := "all running"
		if stopped {
			name = "one stopped"
		}
		t.Run(name, func(t *testing.T) {
			_, c := newRedis(t)
			eng := newEngine(t, c)
			const key, marker = "revoked", "test:revoked"
			if err := eng.Register(ctx, key, engine.Credits(1<<50)); err != nil {
				t.Fatal(err)
			}
			env := []string{"ALLOT_ADDR=" + c.Options().Addr, "ALLOT_KEY=" + key, "ALLOT_MARKER=" + marker,
				"ALLOT_LEASE=" + lease.String(), "ALLOT_CHUNK=256"}
			ps := startStream(t, 3, "stream", env...)
			a := startStream(t, 1, "revoke", env...)[0]
			for _, p := range ps {
				p.start(t)
			}
			for _, p := range ps {
				<-p.when('g', 300) // past the first chunks: it reserved more than once
			}
			d := ps[2]
			if stopped {
				if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
			}
			// How long the holders' leases still run, by Redis's clock.
			left := holdersLeft(t, c, key)
			a.start(t)
			took := time.Duration(a.finish(t)[0])
			if stopped {
				if err := d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
			}
			var granted, late int64
			for i, p := range ps {
				f := p.finish(t) // granted, late, violations, errors
				if f[2] != 0 || p.count('v') != 0 {
					t.Errorf("process %c: %d grants of Consumes started after Revoke returned", 'B'+i, f[2])
				}
				if f[1] < 16 {
					t.Errorf("process %c: %d Consumes after Revoke returned, want one per goroutine at least", 'B'+i, f[1])
				}
				granted, late = granted+f[0], late+f[1]
			}
			t.Logf("%s: Revoke took %v (lease %v; the holders' leases had %v left by Redis's clock); before it %d grants, after it 0 of %d Consumes",
				name, took.Round(time.Millisecond), lease, left, granted, late)
			// The margin: a round to Redis to mark the key, Quiesce's
			// rounds, and a loaded machine's scheduling.
			if bound := lease + 2*time.Second; took > bound {
				t.Errorf("Revoke took %v, above the lease %v plus a margin: %v", took, lease, bound)
			}
		})
	}
}

// holdersLeft returns how long the latest lease of key's holders still
// runs, by Redis's clock: each holder's lease is its store's.
func holdersLeft(t *testing.T, c redis.UniversalClient, key string) time.Duration {
	t.Helper()
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	hs, err := c.HKeys(ctx, redisHash(key)+":h").Result()
	if err != nil {
		t.Fatal(err)
	}
	var latest int64
	for _, f := range hs {
		holder, _, _ := strings.Cut(f, ":")
		v, err := c.HGet(ctx, "{allot:p:"+holder+"}", "d").Result()
		if err != nil {
			t.Fatalf("lease of holder %q: %v", holder, err)
		}
		d, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("holder deadline %q", v)
		}
		latest = max(latest, d)
	}
	return time.Duration(latest-now.UnixMilli()) * time.Millisecond
}
