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
	// peers are the in-memory libraries allot is compared with.
	peers = []string{"xrate", "golimiter", "ulule", "throttled"}
)

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
			ok, err := chart(d, dist, state, filepath.Join(resultsDir, name))
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
	p("ns/op is the time per Consume (or the peer's equivalent) with as many goroutines as GOMAXPROCS (`-cpu`), " +
		"all on the same key sequence; the numbers below are medians. On a machine with fewer cores than goroutines the " +
		"higher `-cpu` values show oversubscription, not parallel speed-up.\n\n")

	p("## allot against the others\n\n")
	p("### allot against the fastest in-memory peer\n\n")
	p("The fastest of %s, ns/op of that peer ÷ ns/op of allot (above 1: allot is faster).\n\n", strings.Join(peers, ", "))
	ratioTable(&w, d, func(dist, state string, procs int) string {
		a, ok := d.ns("allot", dist, state, procs)
		if !ok {
			return "–"
		}
		best, bestName := math.Inf(1), ""
		for _, peer := range peers {
			if v, ok := d.ns(peer, dist, state, procs); ok && v < best {
				best, bestName = v, peer
			}
		}
		if bestName == "" {
			return "–"
		}
		return fmt.Sprintf("%.2f× (%s %s)", best/a, bestName, fmtNs(best))
	})
	p("### allot against the floor\n\n")
	p("ns/op of allot ÷ ns/op of the floor (a read-only map lookup plus a CAS on a padded counter; 1 is the floor).\n\n")
	ratioTable(&w, d, ratio(d, "allot", "floor"))
	p("### The cost of persistence\n\n")
	p("ns/op of allot with a Badger store ÷ ns/op of the memory-only engine: lease mode (the default), then exact mode " +
		"(every grant durable before Consume returns; group commit).\n\n")
	p("Lease mode:\n\n")
	ratioTable(&w, d, ratio(d, "allot-lease", "allot"))
	p("Exact mode:\n\n")
	ratioTable(&w, d, ratio(d, "allot-exact", "allot"))

	p("### Heap bytes per key\n\n")
	memoryTable(&w, d)

	p("## ns/op by implementation\n\n")
	p("Medians; rows are implementations, columns the number of goroutines (`-cpu`). allocs/op is the median over all columns.\n\n")
	for _, dist := range dists {
		for _, state := range states {
			if !hasAny(d, dist, state) {
				continue
			}
			p("### dist=%s, state=%s\n\n", dist, state)
			nsTable(&w, d, dist, state)
			if c := fmt.Sprintf("ns-%s-%s.png", dist, state); slices.Contains(charts, c) {
				p("![ns/op against goroutines, dist=%s, state=%s](results/%s)\n\n", dist, state, c)
			}
		}
	}

	if len(rr) > 0 {
		p("## Redis\n\n")
		p("The article's second design (DECR, a result below zero is a denial) and go-redis/redis_rate, " +
			"on a local redis-server (no persistence), 64 requests in flight; beside them allot in process with 64 goroutines.\n\n")
		p("| dist | state | impl | ns/op | allot ns/op (64 goroutines) | impl ÷ allot |\n|---|---|---|---:|---:|---:|\n")
		for _, dist := range dists {
			for _, state := range states {
				for _, impl := range red.impls {
					var vals []float64
					for _, pr := range red.procs {
						if v, ok := red.ns(impl, dist, state, pr); ok {
							vals = append(vals, v)
						}
					}
					if len(vals) == 0 {
						continue
					}
					v := vals[len(vals)-1]
					a, ok := d.ns("allot", dist, state, 64)
					ax, rx := "–", "–"
					if ok {
						ax, rx = fmtNs(a), fmt.Sprintf("%.0f×", v/a)
					}
					p("| %s | %s | %s | %s | %s | %s |\n", dist, state, impl, fmtNs(v), ax, rx)
				}
			}
		}
		p("\n")
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

func nsTable(w *strings.Builder, d *dataset, dist, state string) {
	fmt.Fprintf(w, "| impl |")
	for _, pr := range d.procs {
		fmt.Fprintf(w, " %d |", pr)
	}
	fmt.Fprintf(w, " allocs/op |\n|---|%s---:|\n", strings.Repeat("---:|", len(d.procs)))
	for _, impl := range d.impls {
		if isRedis(impl) {
			continue
		}
		var row strings.Builder
		var allocs []float64
		any := false
		for _, pr := range d.procs {
			k := key{"Contention", impl, dist, state, pr}
			v, ok := d.median(k, "ns/op")
			allocs = append(allocs, d.samples[k]["allocs/op"]...)
			if !ok {
				row.WriteString(" – |")
				continue
			}
			any = true
			fmt.Fprintf(&row, " %s |", fmtNs(v))
		}
		if !any {
			continue
		}
		a := "–"
		if len(allocs) > 0 {
			slices.Sort(allocs)
			a = strconv.FormatFloat(allocs[len(allocs)/2], 'f', -1, 64)
		}
		name := impl
		if impl == "allot" {
			name = "**allot**"
		}
		fmt.Fprintf(w, "| %s |%s %s |\n", name, row.String(), a)
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
		"(the floor's state); `naive` a map[string]int64. setup is the time to build the store, per key.\n\n")
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

// chart draws ns/op against goroutines, one line per in-process
// implementation, log-log, with the legend to the right of the plot. It
// reports false if there was nothing to draw.
func chart(d *dataset, dist, state, path string) (bool, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("dist=%s, state=%s: ns per Consume (median)", dist, state)
	p.X.Label.Text = "goroutines (-cpu = GOMAXPROCS)"
	p.Y.Label.Text = "ns/op (log scale)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	var ticks []plot.Tick
	for _, pr := range d.procs {
		ticks = append(ticks, plot.Tick{Value: float64(pr), Label: strconv.Itoa(pr)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	grid := plotter.NewGrid()
	grid.Vertical.Color = color.Gray{Y: 220}
	grid.Horizontal.Color = color.Gray{Y: 220}
	p.Add(grid)
	legend := plot.NewLegend()
	legend.Top = true
	legend.Left = true
	n := 0
	for i, impl := range d.impls {
		if isRedis(impl) {
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
		if impl == "allot" {
			l.Width = vg.Points(3)
		}
		p.Add(l, s)
		legend.Add(impl, l, s)
		n++
	}
	if n == 0 {
		return false, nil
	}
	const legendW = 1.5 * vg.Inch
	wd, ht := 9*vg.Inch, 5.5*vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(wd, ht), vgimg.UseDPI(110), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	p.Draw(draw.Crop(dc, 0, -legendW, 0, 0))
	legend.Draw(draw.Crop(dc, wd-legendW+vg.Points(8), 0, 0, -vg.Points(30)))
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
