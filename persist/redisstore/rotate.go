package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/redis/go-redis/v9"
)

// Rotation chains. The first key of a chain keeps its hash, which holds
// the chain's counters and all of its mutable state: it is the chain's
// pool. Every later key gets a pointer hash in its own slot, {pool, preg}:
// the pool's digest (hex) and the chain's registration, written once by
// Rotate and never changed (a Cluster script touches one slot only, so
// what changes lives in the pool's). The pool's hash holds, beside the
// fields of scripts.go:
//
//	head    the digest (hex) of the chain's head; none: the pool's own key
//	l:<hex> per key rotated out: "<next>,<deadline>,<revoked>", the key it
//	        went to, the end of its grace (ns since the epoch, 19 digits,
//	        on the clock of the engine that rotated it) and 0 or 1
//	cd, cu  the chain's depth and until when it may be in grace (19
//	        digits), which bound it at engine.MaxRotationChain
//
// rv means the head is revoked, which ends every key of the chain. A key
// of the chain works while it and every key after it is in its grace and
// not revoked, and the head is not revoked: the reserve script walks the
// chain at each reservation, and Lookup returns the earliest deadline,
// which the engine checks before each grant. Times are compared as
// zero-padded decimal strings: exact, in Lua too.

// chainState is what a pool's hash says of its chain.
type chainState struct {
	pool  engine.KeyID
	head  string // hex
	links map[string]link
}

type link struct {
	next     string
	deadline int64
	revoked  bool
}

// chainOf reads the chain fields of the hash f of pool p.
func chainOf(p engine.KeyID, f map[string]string) (chainState, error) {
	c := chainState{pool: p, head: f["head"], links: map[string]link{}}
	if c.head == "" {
		c.head = hex.EncodeToString(p[:])
	}
	for k, v := range f {
		h, ok := strings.CutPrefix(k, "l:")
		if !ok {
			continue
		}
		parts := strings.Split(v, ",")
		if len(parts) != 3 {
			return c, fmt.Errorf("%w: redis hash of %x: link %q", ErrCorrupt, p[:4], v)
		}
		dl, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil {
			return c, fmt.Errorf("%w: redis hash of %x: link %q", ErrCorrupt, p[:4], v)
		}
		c.links[h] = link{next: parts[0], deadline: dl, revoked: parts[2] == "1"}
	}
	return c, nil
}

// walk returns, for the key of digest id, whether it belongs to the chain,
// whether it is the head, and else the earliest deadline along its way to
// the head and whether a link on it is revoked.
func (c *chainState) walk(id engine.KeyID) (member, head bool, deadline int64, revoked bool) {
	cur := hex.EncodeToString(id[:])
	deadline = math.MaxInt64
	for range 2*engine.MaxRotationChain + 2 {
		if cur == c.head {
			return true, cur == hex.EncodeToString(id[:]), deadline, revoked
		}
		l, ok := c.links[cur]
		if !ok {
			return false, false, 0, false
		}
		deadline = min(deadline, l.deadline)
		revoked = revoked || l.revoked
		cur = l.next
	}
	return false, false, 0, false
}

// names returns the digests of every key of the chain: the head and the
// keys rotated out.
func (c *chainState) names() []engine.KeyID {
	var ids []engine.KeyID
	for _, h := range append([]string{c.head}, keysOf(c.links)...) {
		if id, ok := parseID(h); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

func keysOf(m map[string]link) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func parseID(h string) (engine.KeyID, bool) {
	var id engine.KeyID
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// t19 formats a time in ns as 19 digits, so that Lua compares them as
// strings exactly.
func t19(ns int64) string { return fmt.Sprintf("%019d", max(ns, 0)) }

// chains is what a store knows of the pools of the keys it has read: the
// pool of each key (a pointer never changes; a key deleted and registered
// again is read again, for its reservations find nothing), and the keys of
// each pool, to tell them all of an event of the pool.
type chains struct {
	mu    sync.Mutex
	pool  map[engine.KeyID]engine.KeyID
	names map[engine.KeyID]map[engine.KeyID]struct{}
	fn    func(engine.KeyID) // the engine's Watch function
}

// learn records that key id draws on pool p.
func (s *Store) learn(id, p engine.KeyID) {
	c := &s.chains
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pool == nil {
		c.pool, c.names = map[engine.KeyID]engine.KeyID{}, map[engine.KeyID]map[engine.KeyID]struct{}{}
	}
	if old, ok := c.pool[id]; ok && old != p {
		delete(c.names[old], id)
	}
	c.pool[id] = p
	if c.names[p] == nil {
		c.names[p] = map[engine.KeyID]struct{}{}
	}
	c.names[p][id] = struct{}{}
}

// forget drops what the store knew of key id's pool.
func (s *Store) forget(id engine.KeyID) {
	c := &s.chains
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pool[id]; ok {
		delete(c.names[p], id)
		if len(c.names[p]) == 0 {
			delete(c.names, p)
		}
		delete(c.pool, id)
	}
}

// poolOf returns the pool of key id as far as the store knows: the key
// itself if it read no pointer of it.
func (s *Store) poolOf(id engine.KeyID) engine.KeyID {
	c := &s.chains
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pool[id]; ok {
		return p
	}
	return id
}

// resolve is poolOf for a key the store may not have read: it reads the
// key's hash for a pointer.
func (s *Store) resolve(ctx context.Context, id engine.KeyID) (engine.KeyID, error) {
	if p := s.poolOf(id); p != id {
		return p, nil
	}
	h, _ := hashKey(id)
	var cmd *redis.StringCmd
	if err := s.run(ctx, func(pipe redis.Pipeliner) { cmd = pipe.HGet(ctx, h, "pool") }); err != nil {
		return id, err
	}
	if p, ok := parseID(cmd.Val()); ok {
		return p, nil
	}
	return id, nil
}

// namesOf returns the keys of pool p this store has read, p among them.
func (s *Store) namesOf(p engine.KeyID) []engine.KeyID {
	c := &s.chains
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := []engine.KeyID{p}
	for id := range c.names[p] {
		if id != p {
			ids = append(ids, id)
		}
	}
	return ids
}

// notify tells this store's engine of an event of pool p, for each of its
// keys it holds, as Watch does for another store's event.
func (s *Store) notify(p engine.KeyID) {
	s.chains.mu.Lock()
	fn := s.chains.fn
	s.chains.mu.Unlock()
	if fn == nil {
		return
	}
	for _, id := range s.namesOf(p) {
		fn(id)
	}
}

// notifyOthers is notify for the keys of pool p other than id.
func (s *Store) notifyOthers(p, id engine.KeyID) {
	s.chains.mu.Lock()
	fn := s.chains.fn
	s.chains.mu.Unlock()
	if fn == nil {
		return
	}
	for _, n := range s.namesOf(p) {
		if n != id {
			fn(n)
		}
	}
}

// clearDeadPointer removes key id's hash if it is a pointer to a pool
// that is gone or is another registration now (a Delete of the chain that
// did not remove all its pointers): no Rotate can list it any more, so its
// name is free. It reports whether it removed one. A pointer to a live
// pool that does not list it (a Rotate that stopped between its writes)
// stays: the Rotate called again finishes it.
func (s *Store) clearDeadPointer(ctx context.Context, id engine.KeyID) bool {
	f, _, err := s.hash(ctx, id)
	if err != nil {
		return false
	}
	p, ok := parseID(f["pool"])
	if !ok {
		return false
	}
	h, _ := hashKey(p)
	var reg *redis.StringCmd
	if err := s.run(ctx, func(pipe redis.Pipeliner) { reg = pipe.HGet(ctx, h, "reg") }); err != nil || reg.Val() == f["preg"] {
		return false
	}
	preg, err := strconv.ParseUint(f["preg"], 10, 64)
	if err != nil {
		return false
	}
	return s.unpoint(ctx, id, p, preg)
}

// Rotate rotates r.Old, the head of its chain, to r.New (see engine.Pool):
// first r.New's pointer to the chain's pool, then one script on the pool
// makes r.New the head, gives r.Old its deadline and bumps the version, so
// that every reservation of the chain is stale; then it waits for the
// other holders, as Change does.
//
// A crash between the two writes leaves a pointer the pool does not list:
// it reads as unknown, and keeps the name from being registered until the
// Rotate is called again, which finds its pointer and goes on.
func (s *Store) Rotate(ctx context.Context, r engine.Rotation) error {
	if s.closed.Load() {
		return ErrClosed
	}
	p, err := s.resolve(ctx, r.Old)
	if err != nil {
		return err
	}
	created, err := s.point(ctx, r.New, p, r.Registration)
	if err != nil {
		return err
	}
	out, err := s.rotate(ctx, p, r)
	if err != nil {
		if created && out == "" {
			// Nothing ran on the pool (ctx ended, or a change of it
			// went on too long): take the pointer back.
			s.unpoint(context.WithoutCancel(ctx), r.New, p, r.Registration)
		}
		return err
	}
	switch out {
	case "ok", "done":
	default:
		if created {
			s.unpoint(context.WithoutCancel(ctx), r.New, p, r.Registration)
		}
		switch out {
		case "gone":
			return fmt.Errorf("%w: rotate", engine.ErrUnknownKey)
		case "rotated":
			return fmt.Errorf("%w: rotate", engine.ErrRotated)
		case "revoked":
			return fmt.Errorf("%w: rotate", engine.ErrKeyRevoked)
		case "exists":
			return fmt.Errorf("%w: rotate", engine.ErrKeyExists)
		case "chain":
			return fmt.Errorf("%w: the key ends a chain of %d rotations in grace", engine.ErrRotationChain, engine.MaxRotationChain)
		}
		return fmt.Errorf("%w: rotate answered %q", ErrCorrupt, out)
	}
	s.learn(r.New, p)
	s.learn(r.Old, p)
	for _, id := range s.namesOf(p) {
		s.vers.Delete(id)
	}
	// Every engine reads the chain again: the other stores hear it, this
	// one tells its engine now. Then wait for the other holders.
	s.publish(ctx, p)
	s.publish(ctx, r.New) // an engine that was told New is unknown forgets it
	s.notify(p)
	if err := s.Quiesce(context.WithoutCancel(ctx), r.Old); err != nil {
		return fmt.Errorf("allot: redis: rotated, waiting for the other engines: %w", err)
	}
	return nil
}

// point writes key id's pointer to pool p of registration reg; created is
// false if it was there already (a Rotate that did not finish, called
// again).
func (s *Store) point(ctx context.Context, id, p engine.KeyID, reg uint64) (created bool, err error) {
	h, _ := hashKey(id)
	var res *redis.Cmd
	if err := s.run(ctx, func(pipe redis.Pipeliner) {
		res = pointScript.EvalSha(ctx, pipe, []string{h}, hex.EncodeToString(p[:]), strconv.FormatUint(reg, 10))
	}); err != nil {
		return false, err
	}
	out, err := res.Text()
	switch {
	case err != nil:
		return false, fmt.Errorf("allot: redis: rotate: %w", err)
	case out == "exists":
		return false, fmt.Errorf("%w: rotate (in redis)", engine.ErrKeyExists)
	}
	return out == "ok", nil
}

// unpoint removes key id's pointer to pool p of registration reg, if it
// is that; best effort.
func (s *Store) unpoint(ctx context.Context, id, p engine.KeyID, reg uint64) bool {
	h, _ := hashKey(id)
	var res *redis.Cmd
	err := s.run(ctx, func(pipe redis.Pipeliner) {
		res = unpointScript.EvalSha(ctx, pipe, []string{h}, hex.EncodeToString(p[:]), strconv.FormatUint(reg, 10))
	})
	return err == nil && res.Val() == "ok"
}

// rotate runs the rotate script on pool p, waiting while a change of the
// pool runs. Once it has sent the script it waits for the outcome whatever
// ctx does; if the outcome is lost (Redis or the network failed), it reads
// the pool to learn whether the rotation landed, and if it cannot tell it
// returns the error with out "?" (the pointer stays: a retry settles it).
// An error with out "" means nothing ran on the pool.
func (s *Store) rotate(ctx context.Context, p engine.KeyID, r engine.Rotation) (out string, err error) {
	h, _ := hashKey(p)
	oldH, newH := hex.EncodeToString(r.Old[:]), hex.EncodeToString(r.New[:])
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		var res *redis.Cmd
		ctx := context.WithoutCancel(ctx)
		err := s.run(ctx, func(pipe redis.Pipeliner) {
			res = rotateScript.EvalSha(ctx, pipe, []string{h}, strconv.FormatUint(r.Registration, 10),
				oldH, newH, t19(r.Now), t19(r.Deadline), b2s(r.Grace), engine.MaxRotationChain, hex.EncodeToString(p[:]))
		})
		var out string
		if err == nil {
			out, err = res.Text()
		}
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return "", err
			}
			// Did it land? The pool says so: New is its head, Old a link
			// to it.
			head, herr := s.c.HMGet(ctx, h, "head", "l:"+oldH).Result()
			if herr == nil && len(head) == 2 && head[0] == newH {
				if l, ok := head[1].(string); ok && strings.HasPrefix(l, newH+",") {
					return "done", nil
				}
			}
			return "?", fmt.Errorf("allot: redis: rotate: %w", err)
		}
		if out != "busy" {
			return out, nil
		}
		time.Sleep(wait) // a change of the chain runs; ctx is checked above
	}
}
