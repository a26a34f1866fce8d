package main

import (
	"errors"
	"fmt"
	"image/color"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	dists  = []string{"hot", "uniform1k", "zipf1m"}
	states = []string{"allow", "deny"}
)

// kind is a limit kind the report compares like with like: allot's row for
// it, the peers' rows that enforce the same kind, and the floor its
// ratios are taken to.
type kind struct {
	name  string
	allot string
	peers []string
	what  string // what allot's keys and the peers' rows hold
}

var kinds = []kind{
	{"Credits", "allot", []string{"xrate", "golimiter", "ulule", "throttled"},
		"allot: one `Credits` limit per key (a balance that never refills; it reads no clock). " +
			"No peer has a balance: each peer's row is its own limiter (below) with figures that never run out " +
			"on the allow path and never refill within the run on the deny path, so these rows compare allot's " +
			"cheapest kind with limiters that read the clock."},
	{"Rate", "allot-rate", []string{"xrate", "golimiter", "throttled"},
		"allot: one `Rate` limit per key (GCRA; it reads the clock, as the peers do): 10^9 a second with a " +
			"burst of 2^40 on the allow path, one per 10 years (`MaxRateSpan`) with a burst of 1, used, on the deny path. " +
			"Peers: x/time/rate (a token bucket per key, 10^9 a second, burst 2^40), throttled (GCRA, the same figures) " +
			"and go-limiter's memorystore, which calls itself a token bucket but fills the whole bucket at each " +
			"interval tick since the bucket's creation (a window per key; 2^62 an hour)."},
	{"PerWindow", "allot-window", []string{"ulule", "golimiter"},
		"allot: one `PerWindow` limit per key (a fixed window aligned to the epoch; it reads the clock): " +
			"2^32-1 an hour on the allow path, 1 per century, used, on the deny path. Peers: ulule/limiter's memory " +
			"store (a fixed window from a key's first hit, 2^62 an hour) and go-limiter (a window per bucket, as above)."},
	{"Multi-limit", "allot-multi", []string{"xrate-pair", "golimiter-pair", "ulule-pair", "throttled-pair"},
		"allot: a key with two limits, an hourly `PerWindow` and the `Rate` above, taken from both in one step " +
			"(under the key's mutex). No peer has a key with several limits; the honest comparison is two of its " +
			"limiters per key checked in sequence, the rate first, then the window (x/time/rate: two Limiters in " +
			"one map value; the others: two stores), stopping at the first denial. On the deny path the window is " +
			"used up, so both are checked, as allot checks both. Checked in sequence, a call the second limiter " +
			"denies has already been counted by the first; allot takes from both limits or from neither."},
}

// limitOf says what each row enforces, for the "limit" column.
var limitOf = map[string]string{
	"cas":                "one counter, no key",
	"floor":              "floor",
	"floor-clock":        "floor + clock read",
	"xsync":              "floor in xsync.MapOf",
	"naive":              "credits (check, then decrement)",
	"allot":              "Credits",
	"allot-lease":        "Credits, Badger, lease",
	"allot-exact":        "Credits, Badger, exact",
	"allot-rate":         "Rate, GCRA",
	"allot-window":       "PerWindow, hour",
	"allot-multi":        "PerWindow hour + Rate",
	"xrate":              "token bucket",
	"golimiter":          "window per bucket",
	"ulule":              "fixed window",
	"throttled":          "GCRA",
	"xrate-pair":         "2 token buckets in sequence",
	"golimiter-pair":     "2 buckets in sequence",
	"ulule-pair":         "2 windows in sequence",
	"throttled-pair":     "2 GCRA in sequence",
	"redis-decr":         "DECR counter",
	"redis-rate":         "GCRA (Lua)",
	"redis-ulule":        "fixed window (Lua)",
	"allot-redis":        "Credits, on Redis",
	"allot-redis-rate":   "Rate, on Redis",
	"allot-redis-window": "PerWindow hour, on Redis",
}

func isRedis(impl string) bool { return strings.HasPrefix(impl, "redis-") }

// renderReport writes RESULTS.md and the charts from results/.
func renderReport() error {
	rs, err := readResults(rawFile)
	if err != nil {
		return fmt.Errorf("%w (run make bench first)", err)
	}
	rr, err := readResults(redisFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	d := newDataset(rs)
	red := newDataset(rr)
	if len(d.procs) == 0 {
		return fmt.Errorf("no BenchmarkContention results in %s", filepath.Join(resultsDir, rawFile))
	}

	var charts []string
	for _, dist := range dists {
		for _, state := range states {
			name := fmt.Sprintf("ns-%s-%s.png", dist, state)
			title := fmt.Sprintf("dist=%s, state=%s: ns per Consume (median) against goroutines, by limit kind", dist, state)
			ok, err := chart(d, panels, dist, state, title, filepath.Join(resultsDir, name))
			if err != nil {
				return fmt.Errorf("chart %s: %w", name, err)
			}
			if ok {
				charts = append(charts, name)
			}
		}
	}

	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	p("# allot: benchmark results\n\n")
	p("Written by `bench/cmd/report` (`make bench`, `make bench-redis`); do not edit by hand.\n")
	p("What is measured, and how, is in [README.md](README.md). Raw output: [results/raw.txt](results/raw.txt)")
	if len(rr) > 0 {
		p(", [results/raw-redis.txt](results/raw-redis.txt)")
	}
	p(".\n\n")

	p("## Machine and commands\n\n")
	var cmds []string
	p("| | |\n|---|---|\n")
	for _, l := range append(readMeta(metaFile), readMeta(redisMeta)...) {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		if k == "command" {
			cmds = append(cmds, v)
			continue
		}
		p("| %s | %s |\n", k, v)
	}
	if n := samplesPerConfig(d); n > 0 {
		p("| samples per configuration | %d |\n", n)
	}
	p("\n```sh\ncd bench\n%s\n```\n\n", strings.Join(cmds, "\n"))
	method(&w, d, cmds)
	spread(&w, d, readProbes(rawFile))

	p("## allot against the others, limit kind by limit kind\n\n")
	p("Each table compares allot's key of one limit kind with the peers' limiters of the same kind, in the same run " +
		"and on the same key sequence: ns/op of the fastest of those peers ÷ ns/op of allot (above 1: allot is faster), " +
		"with that peer and its ns/op.\n\n")
	for _, k := range kinds {
		p("### %s key: allot (`%s`) against the fastest of %s\n\n", k.name, k.allot, strings.Join(k.peers, ", "))
		p("%s\n\n", k.what)
		ratioTable(&w, d, func(dist, state string, procs int) string {
			a, ok := d.ns(k.allot, dist, state, procs)
			if !ok {
				return "–"
			}
			best, bestName := math.Inf(1), ""
			for _, peer := range k.peers {
				if v, ok := d.ns(peer, dist, state, procs); ok && v < best {
					best, bestName = v, peer
				}
			}
			if bestName == "" {
				return "–"
			}
			return fmt.Sprintf("%.2f× (%s %s)", best/a, bestName, fmtNs(best))
		})
	}

	p("### allot against the floors, every limit kind\n\n")
	p("ns/op ÷ ns/op of the floor (a lookup in a read-only `map[string]*T` plus a CAS on the key's padded counter; " +
		"1 is the floor). `floor-clock` is the floor with a read of the monotonic clock before the CAS: the least a " +
		"limiter that reads the clock must do (allot's Rate, PerWindow and multi-limit keys, and every peer); on this " +
		"virtual machine the clock read is a large part of it. `xsync` is the floor with `xsync.MapOf` in place of the map.\n\n")
	floorRows := []string{"floor-clock", "xsync", "allot", "allot-rate", "allot-window", "allot-multi"}
	multiRatioTable(&w, d, floorRows, func(impl string) string {
		if impl == "floor-clock" || impl == "xsync" {
			return impl
		}
		return fmt.Sprintf("%s (%s)", impl, limitOf[impl])
	}, "floor")

	p("### The key map: xsync.MapOf against the floor and shard.Map\n\n")
	p("The same padded counter and CAS behind three lookups: the floor's read-only Go map (which cannot take a new key " +
		"while it is read), `github.com/puzpuzpuz/xsync/v3` v3.5.1 `MapOf.Load` (a concurrent map, lock-free reads), " +
		"and allot's own `Consume` of a Credits key, whose `shard.Map` lookup (lock-free reads, one cache line per " +
		"key) is most of its cost. ns/op, and ÷ the floor in brackets.\n\n")
	xsyncTable(&w, d)

	p("### The cost of persistence (Credits keys)\n\n")
	p("ns/op of allot with a Badger store ÷ ns/op of the memory-only engine, both with one Credits limit per key: lease mode (the default), then exact mode " +
		"(every grant durable before Consume returns; group commit).\n\n")
	p("Lease mode:\n\n")
	ratioTable(&w, d, ratio(d, "allot-lease", "allot"))
	p("Exact mode:\n\n")
	ratioTable(&w, d, ratio(d, "allot-exact", "allot"))

	p("### Heap bytes per key\n\n")
	memoryTable(&w, d)

	p("## ns/op by implementation\n\n")
	p("Medians; rows are implementations, with the limit each enforces, columns the number of goroutines (`-cpu`); " +
		"in brackets, ÷ the floor's ns/op in the same column. allocs/op is the median over all columns; keys is the " +
		"median number of distinct keys one run's calls reached.\n\n")
	for _, dist := range dists {
		for _, state := range states {
			if !hasAny(d, dist, state) {
				continue
			}
			p("### dist=%s, state=%s\n\n", dist, state)
			nsTable(&w, d, dist, state)
			if c := fmt.Sprintf("ns-%s-%s.png", dist, state); slices.Contains(charts, c) {
				p("![ns/op against goroutines, dist=%s, state=%s, one panel per limit kind](results/%s)\n\n", dist, state, c)
			}
		}
	}

	if len(rr) > 0 {
		redisSection(&w, red, readProcs())
	}

	p("## benchstat\n\n")
	p("`benchstat -table /dist,/state -row /impl -col /gomaxprocs -filter .unit:sec/op` " +
		"(the first column, with an empty header, is GOMAXPROCS 1; \"vs base\" compares each column with it):\n\n")
	p("```\n%s\n```\n", benchstat([]string{"-table", "/dist,/state", "-row", "/impl", "-col", "/gomaxprocs", "-filter", ".unit:sec/op"}, rawFile))
	if len(rr) > 0 {
		p("\nRedis:\n\n```\n%s\n```\n", benchstat([]string{"-table", "/dist,/state", "-row", "/impl", "-col", "/gomaxprocs", "-filter", ".unit:sec/op"}, redisFile))
	}
	return os.WriteFile(reportFile, []byte(w.String()), 0o644)
}

// flagOf returns the value of -name=value in the first command that has it.
func flagOf(cmds []string, name string) string {
	for _, c := range cmds {
		for _, f := range strings.Fields(c) {
			if v, ok := strings.CutPrefix(strings.Trim(f, "'"), "-"+name+"="); ok {
				return v
			}
		}
	}
	return ""
}

// method explains how the figures were taken, and how far to trust them.
func method(w *strings.Builder, d *dataset, cmds []string) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	cpu, count, bt := flagOf(cmds, "cpu"), flagOf(cmds, "count"), flagOf(cmds, "benchtime")
	p("**Method.** ns/op is the time per Consume (or the peer's equivalent) with as many goroutines as GOMAXPROCS (`-cpu=%s`), "+
		"all on the same key sequence; each configuration ran %s times (`-count`) for %s each (`-benchtime`), and the tables "+
		"give the median of those samples. On a machine with fewer cores than goroutines the higher `-cpu` values show "+
		"oversubscription, not parallel speed-up.\n\n", cpu, count, bt)
	// How far apart are a configuration's samples?
	n, wide := 0, 0
	for k, s := range d.samples {
		v := s["ns/op"]
		if k.bench != "Contention" || len(v) < 2 {
			continue
		}
		n++
		if slices.Max(v) > 1.5*slices.Min(v) {
			wide++
		}
	}
	p("**Machine.** The machine has 2 vCPUs, shared with other work that ran at the same time (other builds and tests), " +
		"so timings are bimodal: a configuration's samples tend to fall near one of two values, depending on whether the " +
		"other vCPU was busy, and whole runs shift together. ")
	if n > 0 {
		p("In this run, %d of %d configurations have samples more than 1.5× apart. ", wide, n)
	}
	p("Read ratios taken within one column of one run (the tables below) rather than absolute figures, and small " +
		"differences (under about 1.3×) as ties; the benchstat section shows the spread.\n\n")
}

// spread reports the key-spread checks: the probe of each implementation
// and the distinct keys each distribution's runs reached.
func spread(w *strings.Builder, d *dataset, probes map[string]string) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("**Keys.** Every implementation is checked to send each call to the key the sequence names (go-limiter's own " +
		"benchmark once sent every call to the key \"\"): once per implementation, on a fresh state where each of 1,000 keys " +
		"grants exactly one call, a run must be granted once per distinct key its calls reached. ")
	var ok, missing []string
	for _, impl := range d.impls {
		if impl == "cas" || isRedis(impl) {
			continue
		}
		if _, found := probes[impl]; found {
			ok = append(ok, impl)
		} else {
			missing = append(missing, impl)
		}
	}
	if len(ok) > 0 {
		msg := probes[ok[0]]
		p("Passed here by %d of %d implementations (e.g. %s: %s)", len(ok), len(ok)+len(missing), ok[0], msg)
		if len(missing) > 0 {
			p("; no probe ran for %s (it needs a run of at least 100 calls)", strings.Join(missing, ", "))
		}
		p(". ")
	}
	p("Distinct keys one run reached (the `keys` metric), least and most over implementations and runs:")
	for _, dist := range dists {
		lo, hi := math.Inf(1), 0.0
		for k, s := range d.samples {
			if k.bench != "Contention" || k.dist != dist {
				continue
			}
			for _, v := range s["keys"] {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
		if hi > 0 {
			p(" %s %s to %s;", dist, fmtCount(lo), fmtCount(hi))
		}
	}
	p(" (a slow implementation makes fewer calls, so it reaches fewer of the 1,000,000 keys).\n\n")
}

func fmtCount(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func samplesPerConfig(d *dataset) int {
	n := 0
	for k, s := range d.samples {
		if k.bench == "Contention" {
			n = max(n, len(s["ns/op"]))
		}
	}
	return n
}

func hasAny(d *dataset, dist, state string) bool {
	for _, impl := range d.impls {
		for _, pr := range d.procs {
			if _, ok := d.ns(impl, dist, state, pr); ok {
				return true
			}
		}
	}
	return false
}

func ratio(d *dataset, num, den string) func(dist, state string, procs int) string {
	return func(dist, state string, procs int) string {
		a, ok1 := d.ns(num, dist, state, procs)
		b, ok2 := d.ns(den, dist, state, procs)
		if !ok1 || !ok2 || b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
}

// ratioTable writes a table with a row per distribution and path and a
// column per -cpu value.
func ratioTable(w *strings.Builder, d *dataset, cell func(dist, state string, procs int) string) {
	fmt.Fprintf(w, "| dist | state |")
	for _, pr := range d.procs {
		fmt.Fprintf(w, " %d |", pr)
	}
	fmt.Fprintf(w, "\n|---|---|%s\n", strings.Repeat("---:|", len(d.procs)))
	for _, dist := range dists {
		for _, state := range states {
			if !hasAny(d, dist, state) {
				continue
			}
			fmt.Fprintf(w, "| %s | %s |", dist, state)
			for _, pr := range d.procs {
				fmt.Fprintf(w, " %s |", cell(dist, state, pr))
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w)
}

// multiRatioTable writes a table with a row per distribution, path and
// implementation (label names it) and a column per -cpu value: the
// implementation's ns/op ÷ den's.
func multiRatioTable(w *strings.Builder, d *dataset, impls []string, label func(string) string, den string) {
	procsHeader(w, []string{"dist", "state", "impl"}, d.procs, nil)
	for _, dist := range dists {
		for _, state := range states {
			for _, impl := range impls {
				if !has(d, impl, dist, state) {
					continue
				}
				fmt.Fprintf(w, "| %s | %s | %s |", dist, state, label(impl))
				for _, pr := range d.procs {
					fmt.Fprintf(w, " %s |", ratio(d, impl, den)(dist, state, pr))
				}
				fmt.Fprintln(w)
			}
		}
	}
	fmt.Fprintln(w)
}

// xsyncTable writes ns/op (÷ the floor) of the floor, xsync and allot.
func xsyncTable(w *strings.Builder, d *dataset) {
	procsHeader(w, []string{"dist", "state", "impl"}, d.procs, nil)
	for _, dist := range dists {
		for _, state := range states {
			for _, impl := range []string{"cas", "floor", "xsync", "allot"} {
				if !has(d, impl, dist, state) {
					continue
				}
				fmt.Fprintf(w, "| %s | %s | %s |", dist, state, impl)
				for _, pr := range d.procs {
					fmt.Fprintf(w, " %s |", nsCell(d, impl, dist, state, pr))
				}
				fmt.Fprintln(w)
			}
		}
	}
	fmt.Fprintln(w)
	// One line to quote: the medians over every column of the ratios.
	var xf, ax []float64
	for _, dist := range dists {
		for _, state := range states {
			for _, pr := range d.procs {
				f, ok1 := d.ns("floor", dist, state, pr)
				x, ok2 := d.ns("xsync", dist, state, pr)
				a, ok3 := d.ns("allot", dist, state, pr)
				if ok1 && ok2 && f > 0 {
					xf = append(xf, x/f)
				}
				if ok2 && ok3 && x > 0 {
					ax = append(ax, a/x)
				}
			}
		}
	}
	if len(xf) > 0 && len(ax) > 0 {
		fmt.Fprintf(w, "Over all %d columns: xsync ÷ floor median %.2f× (%.2f× to %.2f×); allot's whole Consume ÷ xsync's "+
			"lookup + CAS median %.2f× (%.2f× to %.2f×).\n\n",
			len(xf), medianOf(xf), slices.Min(xf), slices.Max(xf), medianOf(ax), slices.Min(ax), slices.Max(ax))
	}
}

func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func has(d *dataset, impl, dist, state string) bool {
	for _, pr := range d.procs {
		if _, ok := d.ns(impl, dist, state, pr); ok {
			return true
		}
	}
	return false
}

// nsCell is "ns (÷ floor)", or "ns" for the floor itself.
func nsCell(d *dataset, impl, dist, state string, procs int) string {
	v, ok := d.ns(impl, dist, state, procs)
	if !ok {
		return "–"
	}
	f, ok := d.ns("floor", dist, state, procs)
	if !ok || impl == "floor" || f == 0 {
		return fmtNs(v)
	}
	return fmt.Sprintf("%s (%s)", fmtNs(v), fmtRatio(v/f))
}

func fmtRatio(r float64) string {
	if r >= 100 {
		return strconv.FormatFloat(r, 'f', 0, 64) + "×"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

func nsTable(w *strings.Builder, d *dataset, dist, state string) {
	fmt.Fprintf(w, "| impl | limit |")
	for _, pr := range d.procs {
		fmt.Fprintf(w, " %d |", pr)
	}
	fmt.Fprintf(w, " allocs/op | keys |\n|---|---|%s---:|---:|\n", strings.Repeat("---:|", len(d.procs)))
	for _, impl := range d.impls {
		if isRedis(impl) || !has(d, impl, dist, state) {
			continue
		}
		var row strings.Builder
		var allocs, keys []float64
		for _, pr := range d.procs {
			k := key{"Contention", impl, dist, state, pr}
			allocs = append(allocs, d.samples[k]["allocs/op"]...)
			keys = append(keys, d.samples[k]["keys"]...)
			fmt.Fprintf(&row, " %s |", nsCell(d, impl, dist, state, pr))
		}
		a, kk := "–", "–"
		if len(allocs) > 0 {
			a = strconv.FormatFloat(medianOf(allocs), 'f', -1, 64)
		}
		if len(keys) > 0 {
			kk = fmtCount(medianOf(keys))
		}
		name := impl
		if strings.HasPrefix(impl, "allot") && !strings.Contains(impl, "lease") && !strings.Contains(impl, "exact") {
			name = "**" + impl + "**"
		}
		fmt.Fprintf(w, "| %s | %s |%s %s | %s |\n", name, limitOf[impl], row.String(), a, kk)
	}
	fmt.Fprintln(w)
}

func memoryTable(w *strings.Builder, d *dataset) {
	type row struct {
		impl       string
		b, setupNs float64
	}
	var rows []row
	var mapB float64
	for k, s := range d.samples {
		if k.bench != "Memory" || len(s["B/key"]) == 0 {
			continue
		}
		b, _ := d.median(k, "B/key")
		ns, _ := d.median(k, "setup-ns/key")
		rows = append(rows, row{k.impl, b, ns})
		if k.impl == "map" {
			mapB = b
		}
	}
	if len(rows) == 0 {
		fmt.Fprintf(w, "(no BenchmarkMemory results)\n\n")
		return
	}
	slices.SortFunc(rows, func(a, b row) int { return int(math.Copysign(1, a.b-b.b)) })
	fmt.Fprintf(w, "1,000,000 keys with full quotas, each store holding its own copy of the keys: the growth of "+
		"HeapAlloc (after runtime.GC) divided by the number of keys. `map` is a map[string]*T, T a 64-byte padded counter "+
		"(the floor's state); `xsync` the same counters in an xsync.MapOf; `naive` a map[string]int64; `allot` keys with one "+
		"Credits limit, `allot-multi` keys with two limits (PerWindow + Rate). setup is the time to build the store, per key.\n\n")
	fmt.Fprintf(w, "| impl | B/key | ÷ map | setup ns/key |\n|---|---:|---:|---:|\n")
	for _, r := range rows {
		ratio := "–"
		if mapB > 0 {
			ratio = fmt.Sprintf("%.2f×", r.b/mapB)
		}
		name := r.impl
		if name == "allot" {
			name = "**allot**"
		}
		fmt.Fprintf(w, "| %s | %.1f | %s | %.0f |\n", name, r.b, ratio, r.setupNs)
	}
	fmt.Fprintln(w)
}

// fmtNs prints a duration in ns with three significant digits, in µs or ms
// when large.
func fmtNs(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 3, 64) + " ms"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'g', 3, 64) + " µs"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + " ns"
	}
	return strconv.FormatFloat(v, 'g', 3, 64) + " ns"
}

// panel is one panel of a chart: its title and the rows it draws.
type panel struct {
	title string
	impls []string
}

// panels are the charts' panels: each shows the floors and one limit
// kind's rows.
var panels = []panel{
	{"Credits (and the naive map, xsync)", []string{"cas", "floor", "xsync", "naive", "allot", "allot-lease", "allot-exact"}},
	{"Rate", []string{"floor", "floor-clock", "allot-rate", "xrate", "golimiter", "throttled"}},
	{"PerWindow", []string{"floor", "floor-clock", "allot-window", "ulule", "golimiter"}},
	{"Multi-limit (peers: two limiters in sequence)", []string{"floor", "floor-clock", "allot-multi", "xrate-pair", "golimiter-pair", "ulule-pair", "throttled-pair"}},
}

// chart draws ns/op against goroutines, log-log, in one panel per limit
// kind, one line per implementation (the same colour and mark for an
// implementation in every panel), each panel with its legend to the right.
// It reports false if there was nothing to draw.
func chart(d *dataset, panels []panel, dist, state, title, path string) (bool, error) {
	const cols, rows = 2, 2
	const legendW = 1.35 * vg.Inch
	wd, ht := 13*vg.Inch, 8.5*vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(wd, ht), vgimg.UseDPI(100), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	// A title line across the top.
	head := draw.Crop(dc, 0, 0, ht-vg.Points(24), 0)
	sty := plot.New().Title.TextStyle
	head.FillText(sty, vg.Point{X: wd / 2, Y: head.Max.Y - vg.Points(4)}, title)
	body := draw.Crop(dc, 0, 0, 0, -vg.Points(26))
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Points(6), PadY: vg.Points(6)}
	drawn := 0
	for pi, pn := range panels {
		cell := tiles.At(body, pi%cols, pi/cols)
		pl := plot.New()
		pl.Title.Text = pn.title
		pl.X.Label.Text = "goroutines (-cpu)"
		pl.Y.Label.Text = "ns/op (log)"
		pl.X.Scale, pl.Y.Scale = plot.LogScale{}, plot.LogScale{}
		var ticks []plot.Tick
		for _, pr := range d.procs {
			ticks = append(ticks, plot.Tick{Value: float64(pr), Label: strconv.Itoa(pr)})
		}
		pl.X.Tick.Marker = plot.ConstantTicks(ticks)
		pl.Y.Tick.Marker = ticks125{}
		grid := plotter.NewGrid()
		grid.Vertical.Color = color.Gray{Y: 220}
		grid.Horizontal.Color = color.Gray{Y: 220}
		pl.Add(grid)
		legend := plot.NewLegend()
		legend.Top, legend.Left = true, true
		n := 0
		for _, impl := range pn.impls {
			i := slices.Index(d.impls, impl)
			if i < 0 {
				continue
			}
			var xys plotter.XYs
			for _, pr := range d.procs {
				if v, ok := d.ns(impl, dist, state, pr); ok && v > 0 {
					xys = append(xys, plotter.XY{X: float64(pr), Y: v})
				}
			}
			if len(xys) == 0 {
				continue
			}
			l, s, err := plotter.NewLinePoints(xys)
			if err != nil {
				return false, err
			}
			l.Color, s.Color = plotutil.Color(i), plotutil.Color(i)
			s.Shape = plotutil.Shape(i)
			l.Dashes = plotutil.Dashes(i / len(plotutil.DefaultColors))
			if strings.HasPrefix(impl, "allot") && !strings.Contains(impl, "lease") && !strings.Contains(impl, "exact") {
				l.Width = vg.Points(3)
			}
			pl.Add(l, s)
			legend.Add(impl, l, s)
			n++
		}
		if n == 0 {
			continue
		}
		drawn++
		cw := cell.Max.X - cell.Min.X
		pl.Draw(draw.Crop(cell, 0, -legendW, 0, 0))
		legend.Draw(draw.Crop(cell, cw-legendW+vg.Points(6), 0, 0, -vg.Points(24)))
	}
	if drawn == 0 {
		return false, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return false, err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return false, err
	}
	return true, f.Close()
}

// ticks125 labels a log axis at 1, 2 and 5 times each power of ten, so that
// a panel spanning less than a decade still has labels (at powers of ten
// only when it spans more than three).
type ticks125 struct{}

func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	ms := []float64{1, 2, 5}
	if hi > 1000*lo { // a wide axis: powers of ten only
		ms = ms[:1]
	}
	for e := math.Floor(math.Log10(lo)); math.Pow(10, e) <= hi; e++ {
		for _, m := range ms {
			v := m * math.Pow(10, e)
			if v >= lo && v <= hi {
				out = append(out, plot.Tick{Value: v, Label: fmtNs(v)})
			}
		}
	}
	return out
}
