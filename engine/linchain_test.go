package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"
)

// Linearizability of the operations that move state between keys and
// limits: Rotate and rotation chains, Revoke at any link, SetLimits that
// shrink and grow, TopUp, and refunds of earlier grants across window
// edges, with Consume, from many goroutines. Each group is one chain of up
// to three names (the first registered with a Credits limit and an hourly
// window); a tick moves the clock to the next hour, for every group. Half
// of the histories cross a crash taken while a background round is held in
// its Save: the model lets the crash lower what is left by up to the lease
// bound, never raise it.
//
//	ALLOT_LIN_HISTORIES=500 go test -run TestLinearizableChains ./engine   (make stress)

const (
	chNames   = 3
	chClients = 40
	chQuota   = 30 // credits
	chWindow  = 20 // per hour
)

type chIn struct {
	group  int
	client int
	op     string // consume, refund, revoke, rotate, setlimits, topup, tick, crash
	name   int    // the key's index in its group; rotate: from
	to     int    // rotate: to
	n      int64  // consume, topup; setlimits: credits quota
	w      int64  // setlimits: window quota
}

type chOut struct {
	err       string // "" or the sentinel's text
	allowed   bool
	reason    engine.Reason
	remaining int64
	// crash: what a reopen finds: credits and window left, and of each
	// name whether it exists, was rotated out, and may consume.
	left    [2]int64
	exists  [chNames]bool
	rotated [chNames]bool
	usable  [chNames]bool
}

type chGrant struct {
	ok          bool
	gen, win, n int64
	name        int
}

type chState struct {
	kind       [chNames]int8 // 0 absent, 1 head, 2 rotated out
	target     [chNames]int8
	revoked    [chNames]bool
	q, spent   int64
	w          int64
	win        int64 // the clock's hour
	used, uwin int64 // the window's count and the hour it counts
	gen        int64 // bumped by SetLimits and by a restart: refunds of older grants give nothing
	refunded   int64 // since the last crash: a crash may lose them
	grants     [chClients]chGrant
}

func (s *chState) head(name int) (int, bool) {
	alive := true
	for range chNames + 1 {
		switch s.kind[name] {
		case 0:
			return -1, false
		case 1:
			return name, alive && !s.revoked[name]
		}
		if s.revoked[name] {
			alive = false
		}
		name = int(s.target[name])
	}
	return -1, false
}

func (s *chState) winLeft() int64 {
	if s.uwin < s.win {
		return s.w
	}
	return max(s.w-s.used, 0)
}

func chModel(bound int64) porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			groups := map[int][]porcupine.Operation{}
			var ticks []porcupine.Operation
			for _, op := range h {
				in := op.Input.(chIn)
				if in.op == "tick" {
					ticks = append(ticks, op)
					continue
				}
				groups[in.group] = append(groups[in.group], op)
			}
			var out [][]porcupine.Operation
			for _, ops := range groups {
				out = append(out, append(ops, ticks...))
			}
			return out
		},
		Init: func() any {
			s := chState{q: chQuota, w: chWindow}
			s.kind[0] = 1
			return s
		},
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(chState), input.(chIn), output.(chOut)
			switch in.op {
			case "tick":
				s.win++
				return true, s
			case "consume":
				if out.err != "" {
					return true, s // an error takes nothing (a wait cut short)
				}
				h, alive := s.head(in.name)
				switch {
				case h < 0:
					return !out.allowed && out.reason == engine.UnknownKey, s
				case !alive:
					return !out.allowed && out.reason == engine.Revoked, s
				}
				cl, wl := max(s.q-s.spent, 0), s.winLeft()
				if in.n > cl || in.n > wl {
					want := wl
					if in.n > cl {
						want = cl
					}
					return !out.allowed && out.reason == engine.Exhausted && out.remaining == want, s
				}
				if s.uwin < s.win {
					s.used, s.uwin = 0, s.win
				}
				s.spent += in.n
				s.used += in.n
				s.grants[in.client] = chGrant{ok: true, gen: s.gen, win: s.win, n: in.n, name: in.name}
				return out.allowed && out.remaining == min(cl-in.n, wl-in.n), s
			case "refund":
				g := s.grants[in.client]
				s.grants[in.client] = chGrant{}
				if out.err != "" {
					return out.err == context.Canceled.Error() || errors.Is(errors.New(out.err), context.Canceled) || strings.HasSuffix(out.err, context.Canceled.Error()), s
				}
				if !g.ok || g.gen != s.gen {
					return true, s
				}
				was := s.spent
				s.spent = max(s.spent-in.n, 0)
				s.refunded += was - s.spent
				if g.win == s.uwin && s.uwin == s.win {
					wasU := s.used
					s.used = max(s.used-in.n, 0)
					s.refunded += wasU - s.used
				}
				return true, s
			case "revoke":
				if s.kind[in.name] == 0 {
					return out.err == engine.ErrUnknownKey.Error(), s
				}
				s.revoked[in.name] = true
				return out.err == "", s
			case "rotate":
				var want error
				switch {
				case s.kind[in.name] == 0:
					want = engine.ErrUnknownKey
				case s.kind[in.to] != 0:
					want = engine.ErrKeyExists
				case s.kind[in.name] == 2:
					want = engine.ErrRotated
				case s.revoked[in.name]:
					want = engine.ErrKeyRevoked
				}
				if want != nil {
					return out.err == want.Error(), s
				}
				s.kind[in.name], s.target[in.name] = 2, int8(in.to)
				s.kind[in.to] = 1
				return out.err == "", s
			case "setlimits", "topup":
				switch s.kind[in.name] {
				case 0:
					return out.err == engine.ErrUnknownKey.Error(), s
				case 2:
					return out.err == engine.ErrRotated.Error(), s
				}
				if in.op == "topup" {
					s.q += in.n
				} else {
					s.q, s.w, s.gen = in.n, in.w, s.gen+1
				}
				return out.err == "", s
			case "crash":
				ok := out.err == ""
				for name := range chNames {
					_, alive := s.head(name)
					ok = ok && out.exists[name] == (s.kind[name] != 0) && out.rotated[name] == (s.kind[name] == 2) && out.usable[name] == alive
				}
				cl, wl := max(s.q-s.spent, 0), s.winLeft()
				ok = ok && out.left[0] <= cl && out.left[0] >= max(cl-bound-s.refunded, 0)
				ok = ok && out.left[1] <= wl && out.left[1] >= max(wl-bound-s.refunded, 0)
				s.spent += cl - out.left[0]
				if s.uwin < s.win {
					s.used, s.uwin = 0, s.win
				}
				s.used += wl - out.left[1]
				s.refunded, s.gen = 0, s.gen+1
				return ok, s
			}
			return false, s
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(chIn), output.(chOut)
			return fmt.Sprintf("g%d c%d %s(%d->%d n=%d w=%d) -> %+v", in.group, in.client, in.op, in.name, in.to, in.n, in.w, out)
		},
		DescribeState: func(state any) string {
			s := state.(chState)
			return fmt.Sprintf("%+v", s)
		},
	}
}

// record is recorder.do for operations of any type.
func record[I, O any](r *recorder, client int, in I, f func() O) {
	call := r.clock.Add(1)
	out := f()
	ret := r.clock.Add(1)
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	r.mu.Unlock()
}

func chKey(group, name int) string { return fmt.Sprintf("g%d-%c", group, 'a'+name) }

func errText(err error) string {
	for _, s := range []error{engine.ErrUnknownKey, engine.ErrKeyExists, engine.ErrRotated, engine.ErrKeyRevoked} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// chWorkload runs clients of random operations on groups; admin is false
// while a round is held (then only Consume and Refund run, with ctx, and an
// administrative call would wait for the held round).
func chWorkload(t *testing.T, eng *engine.Engine, clk *clock, rec *recorder, r *rand.Rand, groups int, clients []int, admin bool, cctx context.Context) {
	var wg sync.WaitGroup
	for _, c := range clients {
		seed := r.Uint64()
		wg.Add(1)
		go func() {
			defer wg.Done()
			gr := rand.New(rand.NewPCG(seed, uint64(c)))
			granted := map[int]engine.Decision{} // by group
			names := map[int]int{}
			for range 4 + gr.IntN(8) {
				g := gr.IntN(groups)
				name := gr.IntN(chNames)
				in := chIn{group: g, client: c, name: name}
				p := gr.IntN(100)
				if !admin && p >= 80 {
					p = gr.IntN(80)
				}
				switch {
				case p < 55 || (p < 70 && !granted[g].Allowed):
					in.op, in.n = "consume", 1+gr.Int64N(3)
					record(rec, c, in, func() chOut {
						d, err := eng.Consume(cctx, chKey(g, name), in.n)
						if err != nil {
							if !admin && errors.Is(err, context.Canceled) {
								return chOut{err: err.Error()}
							}
							require.NoError(t, err)
						}
						if d.Allowed {
							granted[g], names[g] = d, name
						}
						return chOut{allowed: d.Allowed, reason: d.Reason, remaining: d.Remaining}
					})
				case p < 70:
					d := granted[g]
					delete(granted, g)
					in.op, in.name, in.n = "refund", names[g], d.Granted()
					in.group = g
					record(rec, c, in, func() chOut {
						return chOut{err: errText(eng.Refund(cctx, chKey(g, in.name), d, in.n))}
					})
				case p < 80:
					record(rec, c, chIn{group: -1, client: c, op: "tick"}, func() chOut {
						clk.Add(time.Hour)
						return chOut{}
					})
				case p < 86:
					in.op = "revoke"
					record(rec, c, in, func() chOut { return chOut{err: errText(eng.Revoke(ctx, chKey(g, name)))} })
				case p < 92:
					in.op, in.to = "rotate", gr.IntN(chNames)
					if in.to == name {
						in.to = (name + 1) % chNames
					}
					record(rec, c, in, func() chOut {
						return chOut{err: errText(eng.Rotate(ctx, chKey(g, name), chKey(g, in.to), 1000*time.Hour))}
					})
				case p < 96:
					in.op, in.n = "topup", 1+gr.Int64N(5)
					record(rec, c, in, func() chOut { return chOut{err: errText(eng.TopUp(ctx, chKey(g, name), in.n))} })
				default:
					in.op, in.n, in.w = "setlimits", 1+gr.Int64N(2*chQuota), 1+gr.Int64N(2*chWindow)
					record(rec, c, in, func() chOut {
						return chOut{err: errText(eng.SetLimits(ctx, chKey(g, name), engine.Credits(in.n), engine.PerWindow(in.w, time.Hour).Named("hour")))}
					})
				}
			}
		}()
	}
	wg.Wait()
}

func TestLinearizableChains(t *testing.T) {
	n := histories(t)
	lo := engine.LeaseOptions{MinChunk: 2, MaxChunk: 8}
	bound := lo.MaxChunk + 3 // a reservation grows to cover the request that needs it
	const groups = 3
	var illegal, ops, cut int
	for h := range n {
		r := rand.New(rand.NewPCG(uint64(h), 7))
		rec := &recorder{}
		crash := h%2 == 1
		clk := newClock(time.Date(2026, 6, 1, 9, 59, 0, 0, time.UTC))
		fs := newFaultStore()
		opts := []engine.Option{engine.WithClock(clk.Now)}
		if crash {
			opts = append(opts, engine.WithStore(fs), engine.WithLease(lo))
		}
		eng, err := engine.New(opts...)
		require.NoError(t, err)
		for g := range groups {
			require.NoError(t, eng.Register(ctx, chKey(g, 0), engine.Credits(chQuota), engine.PerWindow(chWindow, time.Hour).Named("hour")))
		}
		clients := func(from, k int) []int {
			var cs []int
			for i := range k {
				cs = append(cs, from+i)
			}
			return cs
		}
		chWorkload(t, eng, clk, rec, r, groups, clients(0, 8+r.IntN(8)), true, ctx)
		if crash {
			// Hold the next round in its Save, run consumes and refunds
			// (some of which ask for that round, or wait for it until
			// their context ends), then crash with the round unwritten.
			letGo := fs.holdSaves()
			cctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				chWorkload(t, eng, clk, rec, r, groups, clients(16, 8), false, cctx)
				close(done)
			}()
			select {
			case <-fs.entered:
				cut++
			case <-done:
			}
			cancel()
			<-done
			snap := fs.crash()
			letGo()
			_ = eng.Close()
			eng, err = engine.New(engine.WithStore(snap), engine.WithLease(lo), engine.WithClock(clk.Now))
			require.NoError(t, err)
			for g := range groups {
				record(rec, chClients-1, chIn{group: g, op: "crash"}, func() chOut {
					var out chOut
					for name := range chNames {
						s, err := eng.Status(chKey(g, name))
						if errors.Is(err, engine.ErrUnknownKey) {
							continue
						}
						require.NoError(t, err)
						out.exists[name], out.rotated[name], out.usable[name] = true, s.RotatedOut, !s.Revoked
						if !s.RotatedOut {
							out.left = [2]int64{s.Limits[0].Remaining, s.Limits[1].Remaining}
						}
					}
					return out
				})
			}
			chWorkload(t, eng, clk, rec, r, groups, clients(24, 8+r.IntN(8)), true, ctx)
		}
		_ = eng.Close()
		ops += len(rec.ops)
		model := chModel(bound)
		// No time-out, as in TestLinearizable.
		if !porcupine.CheckOperations(model, rec.ops) {
			illegal++
			t.Errorf("history %d (crash %v) is not linearizable", h, crash)
		}
	}
	t.Logf("%d histories (%d operations, half across a crash with a round held: %d cut one): %d illegal", n, ops, cut, illegal)
}
