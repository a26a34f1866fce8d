// Package redisstore is an engine.Pool on Redis: several engines, in several
// processes, enforce one quota per key, each granting at in-memory speed
// from reservations it takes from Redis.
//
//	st, err := redisstore.New(ctx, client) // client: a redis.UniversalClient (one node, Sentinel or Cluster)
//	eng, err := engine.New(engine.WithStore(st))
//
// # How it works
//
// Redis holds each limit's state for all engines together (a pool). An
// engine reserves a chunk of each limit of a key with one Lua script per
// key (EVALSHA, EVAL after NOSCRIPT), grants from what it holds with a
// compare-and-swap, reserves again in the background when half of it is
// used, and gives back the unused rest on Close. Credits and windows
// reserve units (a window's reservation belongs to its window); Rate
// reserves a span of the shared theoretical arrival time. The chunk adapts
// to each key's rate of use, from MinChunk to MaxChunk of
// engine.LeaseOptions.
//
// # Guarantees
//
//   - No over-grant across processes: the units all engines grant together
//     never exceed what the limits allow, since each grants only from units
//     Redis reserved for it. A crashed process loses at most what it held:
//     per limit of each key in use, one chunk. The under-grant at any time
//     is at most the number of live engines times the chunk, per limit of
//     Credits and windows. A Rate limit can lose more while engines
//     contend on its key: an engine holds one span of the arrival time, so
//     when it reserves again after another engine has reserved past it,
//     the unused rest of its span is lost (up to half a chunk each time).
//     Such a key grants less than its rate, never more. Rate limits and windows compare times on each engine's own clock:
//     engines whose clocks differ by d can exceed a Rate limit by at most
//     d × rate, and a window by what its edge moves in d.
//   - Linearizable revocation across processes: each store holds one lease
//     (WithLease, default 2 s) on everything its engine holds, renewed in
//     the background every quarter of it (Renew: one script run, whatever
//     the number of keys), which the engine counts on its own monotonic
//     clock from before it asked, less a margin of 1/16, and Redis records
//     from its own clock; the engine grants nothing from a reservation
//     without it. Each key records its holders. Revoke marks the key in
//     Redis, so that no reservation of it is granted again, publishes it
//     on the channel allot:events, puts it in the inbox of every other
//     holder, and waits until each has let go of the key (each does when
//     it hears of it, or when its next renewal takes its inbox) or its
//     lease has run out by Redis's clock. Once Revoke returns, no engine
//     grants the key. A lost message makes Revoke wait for the holder's
//     next renewal (a quarter of a lease); a frozen process (SIGSTOP), at
//     most one lease: a renewal that finds its lease run out lets go of
//     every key before it takes a new one.
//   - A key registered in one engine can be used in every other: an engine
//     asks Redis for a key it does not hold, and remembers a negative
//     answer for engine.NegativeTTL.
//   - Only SHA-256 digests of keys reach Redis, never a raw key.
//
// # Durability of Redis
//
// What Redis loses, the guarantee loses with it. With appendonly yes and
// appendfsync always, a Redis killed with SIGKILL loses no acknowledged
// reservation, so there is no over-grant. With appendfsync everysec the
// reservations of about the last second (up to two while a sync is slow)
// may be lost, and re-granted after the restart. Without persistence a restart is empty: New refuses a Redis
// without the marker Initialize writes, and a running Store that finds the
// marker gone (Redis came back empty) refuses to serve, and logs it, until
// an operator restores the data or initializes Redis again and restarts
// the processes.
//
// # Changes
//
// TopUp, SetLimits, Reset and Delete are linearizable across processes
// (Change): the key is frozen in Redis, every other holder lets go of it
// (or its lease runs out), the change applies to the state Redis holds,
// the key thaws. A process that only denies a key is a holder too, and
// hears of the change the same way. What it may miss is units other
// processes gave back: a denial rests on what it knows for at most 16
// leases (plus 5 ms for a Credits key, whose denials read a coarse clock),
// then it asks Redis again.
//
// # Rotation
//
// Rotate works across processes (rotate.go): a chain keeps its first key's
// hash, which holds the counters and every link's state (the head, each
// rotated-out key's grace deadline and revoked flag); each later key gets
// a pointer to it in its own slot. A key rotated out draws on the chain's
// counters while it and every key after it are in their grace and not
// revoked, and the head is not: each reservation checks it in the pool's
// script, and each engine checks the deadline, on its own clock, before
// each grant. Rotate and Revoke of a rotated-out key bump the pool's
// version and wait for the reservations granted before it, as Change
// does; engines that keep using the head do not hold them up.
//
// # Not yet
//
// Delete of a rotated-out key returns an error matching
// errors.ErrUnsupported (Delete of the head removes the chain). Keys
// lists the keys this engine has seen, not every key in Redis.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist/internal/codec"
	"github.com/redis/go-redis/v9"
)

// markerKey holds the marker Initialize writes: a random epoch.
const markerKey = "allot:marker"

// events is the channel of the digests (hex) of keys registered, revoked or
// changed: every store drops what its engine held of such a key, then lets
// go of its lease on it (deletes itself from the key's holders), so that a
// Revoke or a change waiting for the leases returns at once. A lost message
// only makes it wait for the lease.
const events = "allot:events"

// newsLeases is how many leases a denial rests on what a store's engine
// last heard of a key (engine.Reservation.Lease) before it asks Redis
// again. A change of the key reaches every holder sooner (events, or its
// inbox at its next renewal: every reservation not refused records its
// store among the holders, a denying one too), so what a denial may miss
// for that long is only units other engines gave back (at Close, or
// refunds at their next reservation).
const newsLeases = 16

// maxExact is the largest value a Lua number holds exactly.
const maxExact = 1<<53 - 1

// Store is an engine.Pool on Redis. Create it with New; it is safe for
// concurrent use. Close does not close the client. A Store serves one
// engine (engine.New refuses a second with engine.ErrStoreInUse): for
// several engines in one process, make a Store for each, on one client.
type Store struct {
	c      redis.UniversalClient
	holder string // this store's name among a key's holders
	epoch  string
	lease  time.Duration
	log    *slog.Logger

	lost    atomic.Bool
	closed  atomic.Bool
	renewed atomic.Bool // its lease was taken once (Renew)
	vers    sync.Map    // KeyID -> string: the version of each key's record this store read
	frozen  sync.Map    // KeyID -> struct{}: keys this store is changing
	chains  chains      // the pools of rotated keys (rotate.go)
	sub     *redis.PubSub
	subDone chan struct{}
}

var _ engine.Pool = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithLease sets the store's lease: how long its engine may grant from
// what it holds without renewing it (it renews every quarter of it, in the
// background), and so the longest a Revoke waits for a process that does
// not answer; 16 times it is how long a denial rests on what the engine
// last heard of a key. Default 2 s; at least 100 ms.
func WithLease(d time.Duration) Option { return func(s *Store) { s.lease = d } }

// WithLogger logs what no caller can be told: a Redis that lost its data.
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// Initialize writes the marker New looks for, for a new deployment: a
// Redis without it is taken for one that lost its data. It does nothing if
// the marker is there.
func Initialize(ctx context.Context, c redis.UniversalClient) error {
	var b [16]byte
	_, _ = rand.Read(b[:])
	if err := c.SetNX(ctx, markerKey, hex.EncodeToString(b[:]), 0).Err(); err != nil {
		return fmt.Errorf("allot: redis: initialize: %w", err)
	}
	return nil
}

// New returns a Store on c. It fails with ErrNotInitialized if Redis holds
// no marker (see Initialize).
func New(ctx context.Context, c redis.UniversalClient, opts ...Option) (*Store, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidOption)
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	s := &Store{c: c, holder: hex.EncodeToString(b[:]), lease: 2 * time.Second}
	for _, o := range opts {
		o(s)
	}
	if s.lease < 100*time.Millisecond {
		return nil, fmt.Errorf("%w: lease %v, must be at least 100ms", ErrInvalidOption, s.lease)
	}
	ep, err := c.Get(ctx, markerKey).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotInitialized
	}
	if err != nil {
		return nil, fmt.Errorf("allot: redis: %w", err)
	}
	s.epoch = ep
	if err := loadScripts(ctx, c); err != nil {
		return nil, err
	}
	return s, nil
}

// hashKey returns the Redis key of id's hash, and of its holders.
func hashKey(id engine.KeyID) (string, string) {
	h := "{allot:" + hex.EncodeToString(id[:]) + "}"
	return h, h + ":h"
}

func (s *Store) verify(cmd *redis.StringCmd) error {
	if s.lost.Load() {
		return ErrLost
	}
	v, err := cmd.Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("allot: redis: %w", err)
	}
	if v != s.epoch {
		s.lost.Store(true)
		if s.log != nil {
			s.log.Error("allot: redis lost its data: the marker is gone or changed; refusing to serve until an operator restores it")
		}
		return ErrLost
	}
	return nil
}

// Load returns nothing: an engine asks Lookup for each key it needs.
func (s *Store) Load(ctx context.Context, fn func(engine.Record) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Save registers keys: each record must be a new key's, with its counters
// at their initial values. A key Redis holds already fails with an error
// matching engine.ErrKeyExists.
func (s *Store) Save(ctx context.Context, recs ...engine.Record) error {
	if s.closed.Load() {
		return ErrClosed
	}
	for _, r := range recs {
		if r.Deleted || r.RotatedTo != nil {
			return fmt.Errorf("allot: redis: %w: only registrations are saved", errors.ErrUnsupported)
		}
		if err := checkLimits(r.Limits); err != nil {
			return err
		}
	}
	return s.create(ctx, recs)
}

// create registers recs with one script run each, all in one pipeline (a
// round of the engine's committer carries every Register that queued
// meanwhile: one round trip for all of them, not one each).
func (s *Store) create(ctx context.Context, recs []engine.Record) error {
	args := make([][]any, len(recs))
	for i, r := range recs {
		body, err := codec.Encode(engine.Record{ID: r.ID, Limits: r.Limits, Counters: r.Counters, Registration: r.Registration})
		if err != nil {
			return err
		}
		a := []any{strconv.FormatUint(r.Registration, 10), body, b2s(r.Revoked)}
		for j, l := range r.Limits {
			v, w := pooled(l, r.Counters[j])
			a = append(a, v, w)
		}
		args[i] = a
	}
	res := make([]*redis.Cmd, len(recs))
	if err := s.run(ctx, func(pipe redis.Pipeliner) {
		for i, r := range recs {
			h, _ := hashKey(r.ID)
			res[i] = createScript.EvalSha(ctx, pipe, []string{h}, args[i]...)
		}
	}); err != nil {
		return err
	}
	var first error
	pipe := s.c.Pipeline()
	for i, cmd := range res {
		out, err := cmd.Text()
		switch {
		case err != nil:
			err = fmt.Errorf("allot: redis: register: %w", err)
		case out == "exists" && s.clearDeadPointer(ctx, recs[i].ID):
			err = s.create(ctx, recs[i:i+1]) // the name was a dead chain's pointer
		case out == "exists":
			err = fmt.Errorf("%w (in redis)", engine.ErrKeyExists)
		default:
			s.forget(recs[i].ID)
			s.vers.Store(recs[i].ID, "1")
			pipe.Publish(context.WithoutCancel(ctx), events, hex.EncodeToString(recs[i].ID[:]))
		}
		if first == nil {
			first = err
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(context.WithoutCancel(ctx))
	}
	return first
}

// run builds a pipeline with build, after a GET of the marker, and runs
// it; if Redis forgot a script (NOSCRIPT, after a restart) it loads the
// scripts and runs a new pipeline from build again. Then it checks the
// marker.
func (s *Store) run(ctx context.Context, build func(redis.Pipeliner)) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.lost.Load() {
		return ErrLost
	}
	for try := 0; ; try++ {
		pipe := s.c.Pipeline()
		mk := pipe.Get(ctx, markerKey)
		build(pipe)
		cmds, err := pipe.Exec(ctx)
		if err != nil && !errors.Is(err, redis.Nil) {
			if try == 0 && noScript(cmds) {
				if err := loadScripts(ctx, s.c); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("allot: redis: %w", err)
		}
		return s.verify(mk)
	}
}

var scripts = []*redis.Script{createScript, reserveScript, holdersScript, freezeScript, commitScript, thawScript, pointScript, unpointScript, rotateScript, letGoScript, renewScript, pokeScript}

func loadScripts(ctx context.Context, c redis.UniversalClient) error {
	for _, sc := range scripts {
		if err := sc.Load(ctx, c).Err(); err != nil {
			return fmt.Errorf("allot: redis: load script: %w", err)
		}
	}
	return nil
}

func noScript(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if e := c.Err(); e != nil && strings.HasPrefix(e.Error(), "NOSCRIPT") {
			return true
		}
	}
	return false
}

// Lookup returns id's record as Redis holds it now. While another store
// changes the key (Change), it waits for the change to end.
func (s *Store) Lookup(ctx context.Context, id engine.KeyID) (engine.Record, bool, error) {
	_, frozenHere := s.frozen.Load(id)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		rec, ok, frozen, err := s.lookup(ctx, id)
		if err != nil || !frozen || frozenHere {
			return rec, ok, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return engine.Record{}, false, ctx.Err()
		}
	}
}

func (s *Store) lookup(ctx context.Context, id engine.KeyID) (rec engine.Record, ok, frozen bool, err error) {
	rec, ok, frozen, _, err = s.lookupChain(ctx, id)
	return rec, ok, frozen, err
}

// lookupChain is lookup that also returns the key's chain as its pool
// holds it. A key rotated to another reads its pool's hash through its
// pointer (a second round trip); it reads as unknown if the pool is gone,
// is another registration, or does not list it.
func (s *Store) lookupChain(ctx context.Context, id engine.KeyID) (rec engine.Record, ok, frozen bool, ch chainState, err error) {
	f, now, err := s.hash(ctx, id)
	if err != nil {
		return engine.Record{}, false, false, ch, err
	}
	p := id
	if ptr, isPtr := f["pool"]; isPtr {
		var ok bool
		if p, ok = parseID(ptr); !ok {
			return engine.Record{}, false, false, ch, fmt.Errorf("%w: redis hash of %x: pool %q", ErrCorrupt, id[:4], ptr)
		}
		preg := f["preg"]
		if f, now, err = s.hash(ctx, p); err != nil {
			return engine.Record{}, false, false, ch, err
		}
		if f["reg"] != preg {
			f = nil // the pool is gone, or another registration
		}
	}
	if len(f) == 0 {
		s.forget(id)
		return engine.Record{}, false, false, ch, nil
	}
	if frz, err := strconv.ParseInt(f["frz"], 10, 64); err == nil && frz > now.UnixMilli() {
		frozen = true
	}
	if ch, err = chainOf(p, f); err != nil {
		return engine.Record{}, false, false, ch, err
	}
	member, head, deadline, revoked := ch.walk(id)
	if !member {
		s.forget(id)
		return engine.Record{}, false, false, ch, nil
	}
	if rec, err = decode(id, f); err != nil {
		return engine.Record{}, false, false, ch, err
	}
	if !head {
		h, _ := parseID(ch.head)
		rec.RotatedTo, rec.GraceUntil, rec.Revoked = &h, time.Unix(0, deadline).UTC(), rec.Revoked || revoked
	}
	s.learn(id, p)
	s.vers.Store(id, f["ver"])
	return rec, true, frozen, ch, nil
}

// hash reads the hash of id and Redis's clock.
func (s *Store) hash(ctx context.Context, id engine.KeyID) (map[string]string, time.Time, error) {
	h, _ := hashKey(id)
	var all *redis.MapStringStringCmd
	var now *redis.TimeCmd
	if err := s.run(ctx, func(pipe redis.Pipeliner) { all, now = pipe.HGetAll(ctx, h), pipe.Time(ctx) }); err != nil {
		return nil, time.Time{}, err
	}
	return all.Val(), now.Val(), nil
}

// decode reads a key's hash.
func decode(id engine.KeyID, f map[string]string) (engine.Record, error) {
	rec, err := codec.Decode(id, []byte(f["rec"]))
	if err != nil {
		return engine.Record{}, err
	}
	if reg, err := strconv.ParseUint(f["reg"], 10, 64); err != nil || reg != rec.Registration {
		return engine.Record{}, fmt.Errorf("%w: redis hash of %x: registration %q", ErrCorrupt, id[:4], f["reg"])
	}
	rec.Revoked = f["rv"] == "1"
	for i, l := range rec.Limits {
		v, err1 := strconv.ParseUint(f["v"+strconv.Itoa(i)], 10, 64)
		w, err2 := strconv.ParseInt(f["w"+strconv.Itoa(i)], 10, 64)
		if err1 != nil || err2 != nil {
			return engine.Record{}, fmt.Errorf("%w: redis hash of %x: limit %d", ErrCorrupt, id[:4], i)
		}
		rec.Counters[i] = counter(l, v, w)
	}
	return rec, nil
}

// Change runs a change of id (see engine.Pool): freeze the key, wait for
// every other holder's lease, read it, write what f returns, thaw.
func (s *Store) Change(ctx context.Context, id engine.KeyID, reg uint64, f func(engine.Record) (engine.Record, error)) error {
	// A chain's head: the change is of its pool.
	p, err := s.resolve(ctx, id)
	if err != nil {
		return err
	}
	h, hk := hashKey(p)
	var ver string
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		var res *redis.Cmd
		if err := s.run(ctx, func(pipe redis.Pipeliner) {
			res = freezeScript.EvalSha(ctx, pipe, []string{h}, strconv.FormatUint(reg, 10), (4 * s.lease).Milliseconds())
		}); err != nil {
			return err
		}
		out, err := res.StringSlice()
		if err != nil {
			return fmt.Errorf("allot: redis: freeze: %w", err)
		}
		if out[0] == "gone" {
			return engine.ErrUnknownKey
		}
		if out[0] == "ok" {
			ver = out[1]
			break
		}
		t := time.NewTimer(wait) // another change of the key runs
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	s.frozen.Store(id, struct{}{})
	defer s.frozen.Delete(id)
	s.publish(ctx, p) // the holders let go: Quiesce returns at once
	done := false
	defer func() {
		if !done {
			_ = thawScript.Run(context.WithoutCancel(ctx), s.c, []string{h}, ver).Err()
		}
	}()
	if err := s.Quiesce(ctx, id); err != nil {
		return err
	}
	cur, ok, _, ch, err := s.lookupChain(ctx, id)
	if err != nil {
		return err
	}
	if !ok || cur.Registration != reg {
		return engine.ErrUnknownKey
	}
	if cur.RotatedTo != nil {
		return engine.ErrRotated // rotated meanwhile: the change is the new head's
	}
	next, err := f(cur)
	if err != nil {
		return err
	}
	if err := checkLimits(next.Limits); err != nil {
		return err
	}
	args := []any{ver, b2s(next.Deleted)}
	if !next.Deleted {
		body, err := codec.Encode(engine.Record{ID: id, Limits: next.Limits, Counters: next.Counters, Registration: reg})
		if err != nil {
			return err
		}
		args = append(args, body)
		for i, l := range next.Limits {
			v, w := pooled(l, next.Counters[i])
			args = append(args, v, w)
		}
	} else {
		args = append(args, "")
	}
	var res *redis.Cmd
	if err := s.run(ctx, func(pipe redis.Pipeliner) {
		res = commitScript.EvalSha(ctx, pipe, []string{h, hk}, args...)
	}); err != nil {
		return err
	}
	if out, err := res.Text(); err != nil || out != "ok" {
		return fmt.Errorf("allot: redis: the change of %x took longer than its freeze (%v): %v %w", id[:4], 4*s.lease, out, err)
	}
	done = true
	names := s.namesOf(p)
	for _, n := range names {
		s.vers.Delete(n)
	}
	s.publish(ctx, p) // the others read the key again
	if next.Deleted {
		// The chain went with its pool: its pointers read as unknown,
		// and are removed so that their names can be registered again.
		for _, n := range ch.names() {
			if n != p {
				s.unpoint(context.WithoutCancel(ctx), n, p, reg)
			}
			s.forget(n)
		}
	}
	return nil
}

// Reserve answers each reservation with one script run per key, all in one
// pipeline.
func (s *Store) Reserve(ctx context.Context, rs []engine.Reservation) error {
	if s.closed.Load() {
		return ErrClosed
	}
	cmds := make([]*redis.Cmd, len(rs))
	err := s.run(ctx, func(pipe redis.Pipeliner) {
		for i := range rs {
			r := &rs[i]
			p := s.poolOf(r.ID)
			h, hk := hashKey(p)
			ver := "1"
			if v, ok := s.vers.Load(r.ID); ok {
				ver = v.(string)
			}
			args := []any{strconv.FormatUint(r.Registration, 10), s.holder, 0, b2s(r.Revoke), b2s(r.Release), len(r.Limits), ver,
				hex.EncodeToString(r.ID[:]), t19(r.Now), hex.EncodeToString(p[:])}
			for j, l := range r.Limits {
				args = append(args, reserveArgs(l, r.Base[j], r.From[j], r.Want[j], r.Now)...)
			}
			cmds[i] = reserveScript.EvalSha(ctx, pipe, []string{h, hk}, args...)
		}
	})
	if err != nil {
		return err
	}
	for i := range rs {
		if err := answer(&rs[i], cmds[i], newsLeases*s.lease); err != nil {
			return err
		}
	}
	s.publishAll(ctx, rs) // revocations; a Release: the others may use what came back
	return nil
}

// publishAll publishes, in one pipeline, the pools of the keys of rs that
// were revoked or given back; best effort. A revocation is told to this
// store's engine too, for the other keys of the chain it holds.
func (s *Store) publishAll(ctx context.Context, rs []engine.Reservation) {
	pipe := s.c.Pipeline()
	for i := range rs {
		if rs[i].Revoke || rs[i].Release {
			p := s.poolOf(rs[i].ID)
			pipe.Publish(context.WithoutCancel(ctx), events, hex.EncodeToString(p[:]))
			if rs[i].Revoke {
				s.notifyOthers(p, rs[i].ID)
			}
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(context.WithoutCancel(ctx))
	}
}

// answer reads a reserve script's reply into r.
func answer(r *engine.Reservation, cmd *redis.Cmd, lease time.Duration) error {
	out, err := cmd.StringSlice()
	if err != nil {
		return fmt.Errorf("allot: redis: reserve: %w", err)
	}
	switch {
	case len(out) == 1 && out[0] == "gone":
		r.Gone = true
		return nil
	case len(out) == 2 && out[0] == "stale":
		r.Stale, r.Revoked = true, out[1] == "1"
		return nil
	case len(out) != 1+3*len(r.Limits):
		return fmt.Errorf("%w: reserve answered %d values for %d limits", ErrCorrupt, len(out), len(r.Limits))
	}
	r.Revoked = out[0] == "revoked"
	r.Lease = lease
	r.Start, r.Hard = make([]uint64, len(r.Limits)), make([]uint64, len(r.Limits))
	for j, l := range r.Limits {
		st, err1 := strconv.ParseUint(out[1+3*j], 10, 64)
		hd, err2 := strconv.ParseUint(out[2+3*j], 10, 64)
		tag, err3 := strconv.ParseInt(out[3+3*j], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return fmt.Errorf("%w: reserve answered %q", ErrCorrupt, out)
		}
		r.Start[j], r.Hard[j] = counter(l, st, tag), counter(l, hd, tag)
	}
	return nil
}

// Quiesce waits until no other store can grant id a unit from a
// reservation made before: each holder of a reservation of it has let go
// (it does when it hears of the key: events, or the inbox its next
// renewal takes), or its lease has ended by Redis's clock.
func (s *Store) Quiesce(ctx context.Context, id engine.KeyID) error {
	p, err := s.resolve(ctx, id)
	if err != nil {
		return err
	}
	h, hk := hashKey(p)
	digest := hex.EncodeToString(p[:])
	for {
		out, err := holdersScript.Run(ctx, s.c, []string{hk, h}, s.holder, hex.EncodeToString(id[:]), digest).StringSlice()
		if err != nil {
			return fmt.Errorf("allot: redis: quiesce: %w", err)
		}
		if len(out) <= 1 {
			return nil
		}
		// Each holder finds the key in its inbox at its next renewal, if
		// it has not heard of it; one whose lease has ended grants
		// nothing more (its next renewal is lapsed, and lets go of
		// everything): drop it from the key's holders.
		others := out[1:]
		live := make([]*redis.Cmd, len(others))
		if err := s.run(ctx, func(pipe redis.Pipeliner) {
			for i, who := range others {
				lk, in := leaseKey(who)
				live[i] = pokeScript.EvalSha(ctx, pipe, []string{lk, in}, digest, (4 * s.lease).Milliseconds())
			}
		}); err != nil {
			return err
		}
		var dead []string
		for i, who := range others {
			if n, err := live[i].Int(); err == nil && n == 0 {
				dead = append(dead, who)
			}
		}
		if len(dead) > 0 {
			if err := s.run(ctx, func(pipe redis.Pipeliner) {
				for _, who := range dead {
					letGoScript.EvalSha(ctx, pipe, []string{hk}, who)
				}
			}); err != nil {
				return err
			}
		}
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// leaseKey returns the Redis keys of holder's lease and inbox.
func leaseKey(holder string) (string, string) {
	k := "{allot:p:" + holder + "}"
	return k, k + ":in"
}

// Renew renews this store's lease (see engine.Pool), and lets go of each
// key in its inbox after fn.
func (s *Store) Renew(ctx context.Context, fn func(engine.KeyID)) (time.Duration, bool, error) {
	lk, in := leaseKey(s.holder)
	var res *redis.Cmd
	if err := s.run(ctx, func(pipe redis.Pipeliner) {
		res = renewScript.EvalSha(ctx, pipe, []string{lk, in}, s.lease.Milliseconds(), b2s(!s.renewed.Load()))
	}); err != nil {
		return 0, false, err
	}
	out, err := res.StringSlice()
	if err != nil || len(out) == 0 {
		return 0, false, fmt.Errorf("allot: redis: renew: %v %w", out, err)
	}
	s.renewed.Store(true)
	var ids []engine.KeyID
	for _, k := range out[1:] {
		if id, ok := parseID(k); ok {
			for _, n := range s.namesOf(id) {
				fn(n)
			}
			ids = append(ids, id)
		}
	}
	if len(ids) > 0 {
		// A failure here leaves the keys in their holders: their
		// Quiesce puts them in the inbox again.
		if err := s.run(ctx, func(pipe redis.Pipeliner) {
			for _, id := range ids {
				_, hk := hashKey(id)
				letGoScript.EvalSha(ctx, pipe, []string{hk}, s.holder)
			}
		}); err != nil {
			return 0, false, err
		}
	}
	return s.lease, out[0] == "1", nil
}

// Close marks the store closed and stops listening for events; it does
// not close the client. The engine gives back its reservations before it
// calls Close. Idempotent.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.sub != nil {
		_ = s.sub.Close()
		<-s.subDone
	}
	// The engine gave back its reservations and holds nothing more: no
	// Quiesce need wait for this store's lease.
	lk, in := leaseKey(s.holder)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.c.Del(ctx, lk, in).Err()
	return nil
}

// Watch listens for the events of other stores (see events) and calls fn
// with each key's ID, then lets go of this store's lease on the key.
func (s *Store) Watch(fn func(engine.KeyID)) {
	s.chains.mu.Lock()
	s.chains.fn = fn
	s.chains.mu.Unlock()
	s.sub = s.c.Subscribe(context.Background(), events)
	s.subDone = make(chan struct{})
	ch := s.sub.Channel()
	go func() {
		defer close(s.subDone)
		for m := range ch {
			var id engine.KeyID
			if b, err := hex.DecodeString(m.Payload); err != nil || len(b) != len(id) {
				continue
			}
			hex.Decode(id[:], []byte(m.Payload))
			for _, n := range s.namesOf(id) { // a pool: every key of its chain this store read
				fn(n)
			}
			_, hk := hashKey(id)
			_ = letGoScript.Run(context.Background(), s.c, []string{hk}, s.holder).Err()
		}
	}()
}

// publish tells the other stores that id changed; best effort.
func (s *Store) publish(ctx context.Context, id engine.KeyID) {
	_ = s.c.Publish(context.WithoutCancel(ctx), events, hex.EncodeToString(id[:])).Err()
}

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// checkLimits refuses limits whose state a Lua number cannot hold exactly.
func checkLimits(ls []engine.Limit) error {
	for _, l := range ls {
		if l.Kind() == engine.KindCredits && l.Quota() > maxExact {
			return fmt.Errorf("%w: credits quota %d above 2^53 on redis", engine.ErrInvalidLimit, l.Quota())
		}
	}
	return nil
}

// Values in the engine's encoding (engine.Record.Counters) and in the
// pool's.
const (
	tagShift = 32
	tagMask  = 1<<30 - 1
	usedMask = 1<<32 - 1
)

// pooled converts engine counter v of limit l to the pool's value and
// window tag.
func pooled(l engine.Limit, v uint64) (string, string) {
	switch l.Kind() {
	case engine.KindRate:
		return strconv.FormatUint((v+999)/1000, 10), "0" // µs, rounded up: never earlier
	case engine.KindWindow, engine.KindMonth:
		return strconv.FormatUint(v&usedMask, 10), strconv.FormatUint(v>>tagShift&tagMask, 10)
	}
	return strconv.FormatUint(v, 10), "0"
}

// counter converts a pool value (and window index) of limit l to the
// engine's encoding.
func counter(l engine.Limit, v uint64, tag int64) uint64 {
	switch l.Kind() {
	case engine.KindRate:
		return v * 1000
	case engine.KindWindow, engine.KindMonth:
		return uint64(tag)&tagMask<<tagShift | v&usedMask
	}
	return v
}

// reserveArgs returns the 9 script arguments of one limit.
func reserveArgs(l engine.Limit, base, from, want uint64, now int64) []any {
	switch l.Kind() {
	case engine.KindRate:
		// No reservation beyond a full bucket and the slack the engine
		// asks for on top of it (engine.Reservation).
		span := max(l.Quota()*int64(emission(l)), int64(want))
		return []any{"r", l.Quota(), 0, base / 1000, 0, (from + 999) / 1000, (want + 999) / 1000, (now + 999) / 1000, span / 1000}
	case engine.KindWindow, engine.KindMonth:
		return []any{"w", l.Quota(), base >> tagShift & tagMask, base & usedMask, from >> tagShift & tagMask, from & usedMask, want, windowIndex(l, now) & tagMask, 0}
	}
	return []any{"c", l.Quota(), 0, base, 0, from, want, 0, 0}
}

// emission returns a Rate limit's emission interval, as the engine
// computes it: period/n rounded up.
func emission(l engine.Limit) time.Duration {
	p, n := int64(l.Period()), l.RateN()
	return time.Duration((p + n - 1) / n)
}

// windowIndex returns the index of the window of l that holds now (ns).
func windowIndex(l engine.Limit, now int64) int64 {
	if l.Kind() == engine.KindWindow {
		return now / int64(l.Period())
	}
	y, m, _ := time.Unix(0, now).In(l.Location()).Date()
	return int64(y-1970)*12 + int64(m-1)
}
