package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// procsFile holds cmd/procs's output (make bench-redis).
const procsFile = "raw-procs.txt"

// redisKind is a limit kind of the Redis section: memory-only allot's key,
// allot's key on Redis, and the peer of the same kind on the same Redis.
type redisKind struct {
	name, mem, redis, peer, peerName string
}

var redisKinds = []redisKind{
	{"Credits", "allot", "allot-redis", "redis-decr", "DECR"},
	{"Rate", "allot-rate", "allot-redis-rate", "redis-rate", "redis_rate"},
	{"PerWindow", "allot-window", "allot-redis-window", "redis-ulule", "ulule's Redis store"},
}

// redisPeerProcs is the -cpu of the peers' rows: 64 requests in flight.
const redisPeerProcs = 64

// readProcs returns cmd/procs's results (none if it did not run).
func readProcs() []result {
	rs, err := readResults(procsFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Printf("%s: %v", procsFile, err)
	}
	return rs
}

// redisSection writes the Redis section, from make bench-redis's run
// alone, and its charts.
func redisSection(w *strings.Builder, red *dataset, procs []result) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## Redis\n\n")
	p("One run of `make bench-redis` (results/raw-redis.txt), all on one local redis-server (no persistence): the peers " +
		"with 64 requests in flight (`-cpu=64`, `b.SetParallelism`), each a round trip per call: `redis-decr` (DECR, a " +
		"result below zero is a denial: the naive design moved to Redis), `redis-rate` (go-redis/redis_rate v10, GCRA in " +
		"Lua) and `redis-ulule` (ulule/limiter v3's Redis store, a fixed window in Lua); and allot with " +
		"persist/redisstore (`allot-redis*`: one quota per key shared by every process on that Redis, granted from " +
		"reservations) beside memory-only allot, both at each `-cpu` (goroutines = GOMAXPROCS), in the same run. " +
		"The Rate key on Redis is 10^6 a second (as `redis-rate`), burst 2^40, on the allow path; one per 5 years, " +
		"burst 2, used, on the deny path (README.md says why not the in-process row's figures).\n\n")

	p("### Goals\n\n")
	p("allot on Redis ÷ memory-only allot, ns per Consume in the same column (goal: at most 2×):\n\n")
	goalTable(w, red, func(k redisKind, dist, state string, pr int) string {
		r, ok1 := red.ns(k.redis, dist, state, pr)
		m, ok2 := red.ns(k.mem, dist, state, pr)
		if !ok1 || !ok2 || m == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", r/m)
	})
	p("Throughput of allot on Redis ÷ the peer's of its kind (calls per second; the peer at %d requests in flight, its "+
		"best; goal against redis_rate: at least 100×), with the peer's ns/op:\n\n", redisPeerProcs)
	goalTable(w, red, func(k redisKind, dist, state string, pr int) string {
		r, ok1 := red.ns(k.redis, dist, state, pr)
		q, ok2 := red.ns(k.peer, dist, state, redisPeerProcs)
		if !ok1 || !ok2 || r == 0 {
			return "–"
		}
		return fmt.Sprintf("%s (%s)", fmtRatio(q/r), fmtNs(q))
	})

	p("### Redis commands per 1,000 grants at steady state\n\n")
	p("Allow path (every call granted), the median over every run of the row: `redis-cmds` counts every command Redis " +
		"ran (INFO's `total_commands_processed` before and after the timed loop: a script counts one, and each command it " +
		"runs one more); round trips are the client's (a pipeline is one; a go-redis hook). allot reserves a chunk of " +
		"each key's quota per round trip (64 units at first, doubling to 65,536 while a key reserves again within a " +
		"second) and renews its one lease on everything it holds (2 s, the default) every 0.5 s in the background, one " +
		"script run whatever the number of keys; before timing, every key of the 1M-key sequence has had its first reservation (a first touch costs a round " +
		"trip); the peers send one script or command per call.\n\n")
	p("| impl | dist | redis-cmds / 1k grants | round trips / 1k grants | Redis commands per grant |\n|---|---|---:|---:|---:|\n")
	for _, k := range redisKinds {
		for _, impl := range []string{k.redis, k.peer} {
			for _, dist := range dists {
				c, ok := allSamples(red, impl, dist, "allow", "redis-cmds/1k-grants")
				t, _ := allSamples(red, impl, dist, "allow", "round-trips/1k-grants")
				if !ok {
					continue
				}
				p("| %s | %s | %s | %s | %s |\n", impl, dist, fmtSig(c), fmtSig(t), fmtSig(c/1000))
			}
		}
	}
	p("\n")

	p("### ns/op\n\n")
	p("Medians; columns are goroutines (`-cpu`); the peers ran at %d only. Per 1k: the median over the row's runs of "+
		"`redis-cmds` and round trips per 1,000 grants (on the deny path, where nothing is granted, per 1,000 calls). "+
		"A denial rests on what the engine last heard of the key for 16 leases (32 s by default), then asks Redis again; "+
		"before timing, every key of the 1M-key sequence was touched once (allow: its first reservation; deny: its first "+
		"answer).\n\n", redisPeerProcs)
	for _, dist := range dists {
		for _, state := range states {
			if !hasAny(red, dist, state) {
				continue
			}
			p("#### dist=%s, state=%s\n\n", dist, state)
			redisNsTable(w, red, dist, state)
			name := fmt.Sprintf("redis-%s-%s.png", dist, state)
			title := fmt.Sprintf("Redis, dist=%s, state=%s: ns per Consume (median) against goroutines; peers at %d in flight",
				dist, state, redisPeerProcs)
			ok, err := chart(red, redisPanels(), dist, state, title, filepath.Join(resultsDir, name))
			if err != nil {
				log.Printf("chart %s: %v", name, err)
			}
			if ok {
				p("![Redis: ns/op against goroutines, dist=%s, state=%s](results/%s)\n\n", dist, state, name)
			}
		}
	}
	if len(procs) > 0 {
		procsSection(w, procs)
	}
}

// redisPanels are the Redis charts' panels: one per limit kind.
func redisPanels() []panel {
	var out []panel
	for _, k := range redisKinds {
		out = append(out, panel{fmt.Sprintf("%s: in memory, on Redis, %s", k.name, k.peerName), []string{k.mem, k.redis, k.peer}})
	}
	return out
}

// goalTable writes a row per limit kind, distribution and path, and a
// column per -cpu value of allot's rows.
func goalTable(w *strings.Builder, red *dataset, cell func(k redisKind, dist, state string, procs int) string) {
	procsHeader(w, []string{"kind", "dist", "state"}, red.procs, nil)
	for _, k := range redisKinds {
		for _, dist := range dists {
			for _, state := range states {
				if !has(red, k.redis, dist, state) {
					continue
				}
				fmt.Fprintf(w, "| %s | %s | %s |", k.name, dist, state)
				for _, pr := range red.procs {
					fmt.Fprintf(w, " %s |", cell(k, dist, state, pr))
				}
				fmt.Fprintln(w)
			}
		}
	}
	fmt.Fprintln(w)
}

// procsHeader writes a table's header: the lead columns (left-aligned),
// a column per -cpu value, then the tail columns (right-aligned).
func procsHeader(w *strings.Builder, lead []string, procs []int, tail []string) {
	fmt.Fprintf(w, "| %s |", strings.Join(lead, " | "))
	for _, pr := range procs {
		fmt.Fprintf(w, " %d |", pr)
	}
	for _, t := range tail {
		fmt.Fprintf(w, " %s |", t)
	}
	fmt.Fprintf(w, "\n|%s%s\n", strings.Repeat("---|", len(lead)), strings.Repeat("---:|", len(procs)+len(tail)))
}

// allSamples returns the median of unit over every -cpu value of a row.
func allSamples(d *dataset, impl, dist, state, unit string) (float64, bool) {
	var v []float64
	for _, pr := range d.procs {
		v = append(v, d.samples[key{"Contention", impl, dist, state, pr}][unit]...)
	}
	if len(v) == 0 {
		return 0, false
	}
	return medianOf(v), true
}

func redisNsTable(w *strings.Builder, red *dataset, dist, state string) {
	per := "1k-grants"
	if state == "deny" {
		per = "1k-calls"
	}
	procsHeader(w, []string{"impl", "limit"}, red.procs, []string{"allocs/op", "redis-cmds / " + per, "round trips / " + per})
	for _, k := range redisKinds {
		for _, impl := range []string{k.mem, k.redis, k.peer} {
			if !has(red, impl, dist, state) {
				continue
			}
			fmt.Fprintf(w, "| %s | %s |", impl, limitOf[impl])
			for _, pr := range red.procs {
				v, ok := red.ns(impl, dist, state, pr)
				cell := "–"
				if ok {
					cell = fmtNs(v)
				}
				fmt.Fprintf(w, " %s |", cell)
			}
			cells := []string{"–", "–", "–"}
			for i, unit := range []string{"allocs/op", "redis-cmds/" + per, "round-trips/" + per} {
				if v, ok := allSamples(red, impl, dist, state, unit); ok {
					cells[i] = fmtSig(v)
				}
			}
			fmt.Fprintf(w, " %s |\n", strings.Join(cells, " | "))
		}
	}
	fmt.Fprintln(w)
}

// fmtSig prints v whole from 100 up, else with three significant digits.
func fmtSig(v float64) string {
	if math.Abs(v) >= 100 || v == math.Trunc(v) {
		return fmtCount(math.Round(v))
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// procsSection writes cmd/procs's results: one process and four, each
// configuration's median.
func procsSection(w *strings.Builder, procs []result) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	type cfg struct {
		impl, dist string
		n          int
	}
	vals := map[cfg]map[string][]float64{}
	var impls []string
	var ns []int
	for _, r := range procs {
		if r.bench != "Processes" {
			continue
		}
		n, _ := strconv.Atoi(r.conf["procs"])
		c := cfg{r.conf["impl"], r.conf["dist"], n}
		if vals[c] == nil {
			vals[c] = map[string][]float64{}
		}
		for u, v := range r.values {
			vals[c][u] = append(vals[c][u], v)
		}
		if !slices.Contains(impls, c.impl) {
			impls = append(impls, c.impl)
		}
		if !slices.Contains(ns, n) {
			ns = append(ns, n)
		}
	}
	slices.Sort(ns)
	med := func(c cfg, unit string) (float64, bool) {
		v := vals[c][unit]
		if len(v) == 0 {
			return 0, false
		}
		return medianOf(v), true
	}
	p("### Across processes\n\n")
	p("`go run ./cmd/procs` (results/raw-procs.txt): one and four OS processes on the same Redis, 64 goroutines " +
		"between them, each consuming one unit a call from the same keys (a hot key; 1,000,000 Zipf keys, the sequence " +
		"above, each goroutine from its own offset): allot on Redis with a Rate key (10^6 a second, burst 2^40) and " +
		"redis_rate (10^6 a second, burst 10^6). Each process warms up (reservations, and for allot the first lookup of " +
		"each key in Redis), then counts; throughput is the processes' calls per second added up, ns/op its inverse " +
		"(as `b.RunParallel` counts it), per call the mean time one call took in its goroutine; every call was granted. " +
		"The processes share the machine's 2 vCPUs with Redis.\n\n")
	p("| impl | dist |")
	for _, n := range ns {
		p(" %d proc: calls/s | ns/op | per call |", n)
	}
	p("\n|---|---|%s\n", strings.Repeat("---:|---:|---:|", len(ns)))
	for _, impl := range impls {
		for _, dist := range dists {
			if _, ok := med(cfg{impl, dist, ns[0]}, "ns/op"); !ok {
				continue
			}
			p("| %s | %s |", impl, dist)
			for _, n := range ns {
				c := cfg{impl, dist, n}
				t, ok1 := med(c, "calls/s")
				o, _ := med(c, "ns/op")
				pc, _ := med(c, "ns/call")
				if !ok1 {
					p(" – | – | – |")
					continue
				}
				p(" %s | %s | %s |", fmtCount(math.Round(t)), fmtNs(o), fmtNs(pc))
			}
			p("\n")
		}
	}
	p("\n")
	if len(impls) < 2 {
		return
	}
	p("Throughput of %s ÷ %s:\n\n| dist |", impls[0], impls[1])
	for _, n := range ns {
		p(" %d proc |", n)
	}
	p("\n|---|%s\n", strings.Repeat("---:|", len(ns)))
	for _, dist := range dists {
		row, any := "", false
		for _, n := range ns {
			a, ok1 := med(cfg{impls[0], dist, n}, "calls/s")
			b, ok2 := med(cfg{impls[1], dist, n}, "calls/s")
			if ok1 && ok2 && b > 0 {
				row += " " + fmtRatio(a/b) + " |"
				any = true
			} else {
				row += " – |"
			}
		}
		if any {
			p("| %s |%s\n", dist, row)
		}
	}
	p("\n")
}
