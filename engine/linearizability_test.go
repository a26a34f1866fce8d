package engine_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/allot-go/allot/engine"
	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"
)

// Linearizability: concurrent histories of Consume, Refund, Revoke and TopUp
// from 8 to 32 goroutines, recorded with call and return times and checked
// per key with porcupine against a sequential model of one key. Some
// histories cross a store crash and reopen: the model lets a crash lower
// what is left by up to the lease bound, and never raise it.
//
//	ALLOT_LIN_HISTORIES=500 go test -run TestLinearizable ./engine   (make stress)

type linIn struct {
	key string
	op  string // consume, refund, revoke, topup, crash
	n   int64
}

type linOut struct {
	allowed   bool
	reason    engine.Reason
	remaining int64
	revoked   bool // crash: the key's flag after the reopen
}

type linState struct {
	remaining, quota int64
	revoked          bool
	refunded         int64 // units refunded since the last crash: a crash may lose them
}

const linQuota = 40

func linModel(bound int64) porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			var keys []string
			for _, op := range h {
				k := op.Input.(linIn).key
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], op)
			}
			var out [][]porcupine.Operation
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() any { return linState{remaining: linQuota, quota: linQuota} },
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(linState), input.(linIn), output.(linOut)
			switch in.op {
			case "consume":
				switch {
				case s.revoked:
					return !out.allowed && out.reason == engine.Revoked, s
				case s.remaining >= in.n:
					s.remaining -= in.n
					return out.allowed && out.remaining == s.remaining, s
				default:
					return !out.allowed && out.reason == engine.Exhausted && out.remaining == s.remaining, s
				}
			case "refund":
				was := s.remaining
				s.remaining = min(s.remaining+in.n, s.quota)
				s.refunded += s.remaining - was
			case "revoke":
				s.revoked = true
			case "topup":
				s.quota += in.n
				s.remaining += in.n
			case "crash":
				// Never a gain; a loss of at most the lease bound, plus
				// refunds (which lease mode does not write by themselves).
				ok := out.revoked == s.revoked && out.remaining <= s.remaining && out.remaining >= max(s.remaining-bound-s.refunded, 0)
				s.remaining, s.refunded = out.remaining, 0
				return ok, s
			}
			return true, s
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(linIn), output.(linOut)
			switch in.op {
			case "consume":
				return fmt.Sprintf("%s consume(%d) -> %v %v left %d", in.key, in.n, out.allowed, out.reason, out.remaining)
			case "crash":
				return fmt.Sprintf("%s crash -> left %d revoked %v", in.key, out.remaining, out.revoked)
			}
			return fmt.Sprintf("%s %s(%d)", in.key, in.op, in.n)
		},
		DescribeState: func(state any) string {
			s := state.(linState)
			return fmt.Sprintf("left %d of %d revoked %v refunded %d", s.remaining, s.quota, s.revoked, s.refunded)
		},
	}
}

// recorder collects operations with a shared logical clock.
type recorder struct {
	clock atomic.Int64
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func (r *recorder) do(client int, in linIn, f func() linOut) {
	call := r.clock.Add(1)
	out := f()
	ret := r.clock.Add(1)
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	r.mu.Unlock()
}

// workload runs goroutines of random operations on keys.
func workload(t *testing.T, eng *engine.Engine, rec *recorder, r *rand.Rand, keys []string, goroutines int) {
	var wg sync.WaitGroup
	for g := range goroutines {
		seed := r.Uint64()
		wg.Add(1)
		go func() {
			defer wg.Done()
			gr := rand.New(rand.NewPCG(seed, uint64(g)))
			granted := map[string]engine.Decision{} // this client's last grant of each key
			for range 4 + gr.IntN(8) {
				k := keys[gr.IntN(len(keys))]
				switch p := gr.IntN(100); {
				case p < 72 || (p < 86 && !granted[k].Allowed):
					n := 1 + gr.Int64N(3)
					rec.do(g, linIn{key: k, op: "consume", n: n}, func() linOut {
						d, err := eng.Consume(ctx, k, n)
						require.NoError(t, err)
						if d.Allowed {
							granted[k] = d
						}
						return linOut{allowed: d.Allowed, reason: d.Reason, remaining: d.Remaining}
					})
				case p < 86:
					d := granted[k]
					delete(granted, k)
					n := 1 + gr.Int64N(d.Granted())
					rec.do(g, linIn{key: k, op: "refund", n: n}, func() linOut {
						require.NoError(t, eng.Refund(ctx, k, d, n))
						return linOut{}
					})
				case p < 98:
					n := 1 + gr.Int64N(4)
					rec.do(g, linIn{key: k, op: "topup", n: n}, func() linOut {
						require.NoError(t, eng.TopUp(ctx, k, n))
						return linOut{}
					})
				default:
					rec.do(g, linIn{key: k, op: "revoke"}, func() linOut {
						require.NoError(t, eng.Revoke(ctx, k))
						return linOut{}
					})
				}
			}
		}()
	}
	wg.Wait()
}

func histories(t *testing.T) int {
	if s := os.Getenv("ALLOT_LIN_HISTORIES"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		return n
	}
	if testing.Short() {
		return 6
	}
	return 20
}

func TestLinearizable(t *testing.T) {
	n := histories(t)
	lo := engine.LeaseOptions{MinChunk: 2, MaxChunk: 8}
	bound := lo.MaxChunk + 3 // a reservation grows to cover the request that needs it
	var illegal, ops int
	for h := range n {
		r := rand.New(rand.NewPCG(uint64(h), 99))
		keys := []string{"k0", "k1", "k2", "k3"}
		rec := &recorder{}
		crash := h%2 == 1
		var eng *engine.Engine
		var st *memStore
		var err error
		if crash {
			st = newMemStore()
			eng, err = engine.New(engine.WithStore(st), engine.WithLease(lo))
		} else {
			eng, err = engine.New()
		}
		require.NoError(t, err)
		for _, k := range keys {
			require.NoError(t, eng.Register(ctx, k, engine.Credits(linQuota)))
		}
		workload(t, eng, rec, r, keys, 8+r.IntN(25))
		if crash {
			// Everything above has returned: the copy is what a kill -9
			// at this instant would leave on disk.
			re, err := engine.New(engine.WithStore(st.clone()), engine.WithLease(lo))
			require.NoError(t, err)
			for _, k := range keys {
				rec.do(99, linIn{key: k, op: "crash"}, func() linOut {
					s, err := re.Status(k)
					require.NoError(t, err)
					return linOut{remaining: s.Limits[0].Remaining, revoked: s.Revoked}
				})
			}
			_ = eng.Close()
			eng = re
			workload(t, eng, rec, r, keys, 8+r.IntN(25))
		}
		_ = eng.Close()
		ops += len(rec.ops)
		model := linModel(bound)
		// No time-out: a checker that gives up under CPU load would fail
		// the test for the machine's sake; go test's own deadline bounds it.
		if !porcupine.CheckOperations(model, rec.ops) {
			_, info := porcupine.CheckOperationsVerbose(model, rec.ops, 0)
			illegal++
			dir := filepath.Join("testdata", "output")
			_ = os.MkdirAll(dir, 0o755)
			path := filepath.Join(dir, fmt.Sprintf("linearizability-%d.html", h))
			_ = porcupine.VisualizePath(model, info, path)
			dump(filepath.Join(dir, fmt.Sprintf("linearizability-%d.txt", h)), model, rec.ops)
			t.Errorf("history %d (crash %v) is not linearizable: see %s", h, crash, path)
		}
	}
	t.Logf("%d histories (%d operations, half across a crash): %d illegal", n, ops, illegal)
}

// dump writes the operations of each illegal key, by call time, for reading.
func dump(path string, model porcupine.Model, ops []porcupine.Operation) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	for _, part := range model.Partition(ops) {
		if porcupine.CheckOperations(model, part) {
			continue
		}
		sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
		for _, op := range part {
			fmt.Fprintf(f, "[%d,%d] c%d %s\n", op.Call, op.Return, op.ClientId, model.DescribeOperation(op.Input, op.Output))
		}
	}
}
