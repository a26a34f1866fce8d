// Command report runs the contention and memory benchmarks of this module
// and writes RESULTS.md with tables and charts.
//
//	go run ./cmd/report                       # run (make bench), then render
//	go run ./cmd/report -count=1 -benchtime=100ms
//	go run ./cmd/report -render               # render from results/ only
//	go run ./cmd/report -freeport             # print a free TCP port (make bench-redis)
//
// It must run in the bench module's directory. The raw output goes to
// results/raw.txt (results/raw-redis.txt holds make bench-redis's), the
// charts to results/*.png, the report to RESULTS.md. It parses the output
// of go test -bench itself; the benchstat table comes from running
// benchstat (pinned below) and is left out, with a note, if that fails.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// benchstatPkg is run with go run; golang.org/x/perf has no tags, so this
// is the pseudo-version that was latest when this was written.
const benchstatPkg = "golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da"

const (
	resultsDir = "results"
	rawFile    = "raw.txt"
	redisFile  = "raw-redis.txt"
	metaFile   = "meta.txt"
	redisMeta  = "meta-redis.txt"
	reportFile = "RESULTS.md"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("report: ")
	count := flag.Int("count", 5, "go test -count")
	benchtime := flag.String("benchtime", "1s", "go test -benchtime for the contention benchmark")
	cpu := flag.String("cpu", "1,2,8,64", "go test -cpu for the contention benchmark")
	render := flag.Bool("render", false, "only render RESULTS.md and the charts from results/")
	freeport := flag.Bool("freeport", false, "print a free TCP port on 127.0.0.1 and exit")
	flag.Parse()

	if *freeport {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
		_ = l.Close()
		return
	}
	if _, err := os.Stat("go.mod"); err != nil {
		log.Fatal("run me in the bench module's directory (cd bench)")
	}
	if err := os.MkdirAll(resultsDir, 0o755); err != nil {
		log.Fatal(err)
	}
	if !*render {
		if err := run(*count, *benchtime, *cpu); err != nil {
			log.Fatal(err)
		}
	}
	if err := renderReport(); err != nil {
		log.Fatal(err)
	}
}

// run runs the benchmarks, writing their output to results/raw.txt (and to
// stdout as it comes), and the machine and commands to results/meta.txt.
func run(count int, benchtime, cpu string) error {
	cmds := [][]string{
		{"go", "test", "-run=^$", "-bench=^BenchmarkContention$", "-cpu=" + cpu,
			"-count=" + strconv.Itoa(count), "-benchtime=" + benchtime, "-timeout=0", "."},
		{"go", "test", "-run=^$", "-bench=^BenchmarkMemory$", "-cpu=1", "-count=1", "-benchtime=1x", "-timeout=0", "."},
	}
	meta := machine()
	meta = append(meta, "date: "+time.Now().UTC().Format(time.RFC3339))
	for _, c := range cmds {
		meta = append(meta, "command: ALLOT_BENCH_FULL=1 "+strings.Join(quoteArgs(c), " "))
	}
	if err := os.WriteFile(filepath.Join(resultsDir, metaFile), []byte(strings.Join(meta, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(resultsDir, rawFile))
	if err != nil {
		return err
	}
	defer f.Close()
	for _, c := range cmds {
		log.Printf("running %s", strings.Join(c, " "))
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Env = append(withoutEnv(os.Environ(), "ALLOT_REDIS_ADDR", "ALLOT_BENCH_SMALL"), "ALLOT_BENCH_FULL=1")
		cmd.Stdout = io.MultiWriter(f, os.Stdout)
		cmd.Stderr = io.MultiWriter(f, os.Stderr)
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w (output so far in %s)", strings.Join(c, " "), err, filepath.Join(resultsDir, rawFile))
		}
	}
	return nil
}

func withoutEnv(env []string, names ...string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				return true
			}
		}
		return false
	})
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, "^$*|() ") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}

// machine describes the machine as "key: value" lines.
func machine() []string {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	nproc := strconv.Itoa(runtime.NumCPU())
	if out, err := exec.Command("nproc").Output(); err == nil {
		nproc = strings.TrimSpace(string(out))
	}
	gover := runtime.Version()
	if out, err := exec.Command("go", "version").Output(); err == nil {
		gover = strings.TrimSpace(string(out))
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			mem = strings.Join(strings.Fields(strings.TrimPrefix(l, "MemTotal:")), " ")
		}
	}
	return []string{"nproc: " + nproc, "cpu: " + model, "memory: " + mem, "go: " + gover,
		"os: " + runtime.GOOS + "/" + runtime.GOARCH}
}

// ---- parsing go test -bench output ----

// result is one benchmark line.
type result struct {
	bench  string            // "Contention", "Memory"
	conf   map[string]string // impl, dist, state
	procs  int
	values map[string]float64 // unit: value
}

// parse reads go test -bench output: lines like
//
//	BenchmarkContention/impl=allot/dist=hot/state=allow-8  1000  12.3 ns/op  0 B/op  0 allocs/op
//
// (no -N suffix means GOMAXPROCS 1).
func parse(r io.Reader) ([]result, error) {
	var out []result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name, procs := f[0], 1
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if n, err := strconv.Atoi(name[i+1:]); err == nil {
				name, procs = name[:i], n
			}
		}
		parts := strings.Split(strings.TrimPrefix(name, "Benchmark"), "/")
		res := result{bench: parts[0], conf: map[string]string{}, procs: procs, values: map[string]float64{}}
		for _, p := range parts[1:] {
			if k, v, ok := strings.Cut(p, "="); ok {
				res.conf[k] = v
			}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			res.values[f[i+1]] = v
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

// key identifies a configuration; samples holds its values per unit.
type key struct {
	bench, impl, dist, state string
	procs                    int
}

type dataset struct {
	samples map[key]map[string][]float64
	procs   []int    // sorted -cpu values seen (Contention)
	impls   []string // in order of first appearance (Contention)
}

func newDataset(rs []result) *dataset {
	d := &dataset{samples: map[key]map[string][]float64{}}
	for _, r := range rs {
		k := key{r.bench, r.conf["impl"], r.conf["dist"], r.conf["state"], r.procs}
		if d.samples[k] == nil {
			d.samples[k] = map[string][]float64{}
		}
		for u, v := range r.values {
			d.samples[k][u] = append(d.samples[k][u], v)
		}
		if r.bench == "Contention" {
			if !slices.Contains(d.procs, r.procs) {
				d.procs = append(d.procs, r.procs)
			}
			if !slices.Contains(d.impls, k.impl) {
				d.impls = append(d.impls, k.impl)
			}
		}
	}
	sort.Ints(d.procs)
	return d
}

// median returns the median of k's values in unit, and whether there are any.
func (d *dataset) median(k key, unit string) (float64, bool) {
	v := slices.Clone(d.samples[k][unit])
	if len(v) == 0 {
		return 0, false
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

func (d *dataset) ns(impl, dist, state string, procs int) (float64, bool) {
	return d.median(key{"Contention", impl, dist, state, procs}, "ns/op")
}

func readResults(name string) ([]result, error) {
	f, err := os.Open(filepath.Join(resultsDir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parse(f)
}

// readProbes returns, for each implementation, the message of its spread
// probe (BenchmarkContention logs it under the benchmark's name):
//
//	--- BENCH: BenchmarkContention/impl=allot/dist=hot/state=allow-2
//	    contention_test.go:43: spread probe: 100 calls reached 100 distinct keys, granted once each
func readProbes(name string) map[string]string {
	out := map[string]string{}
	b, err := os.ReadFile(filepath.Join(resultsDir, name))
	if err != nil {
		return out
	}
	impl := ""
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "--- BENCH: BenchmarkContention/impl="); ok {
			impl, _, _ = strings.Cut(rest, "/")
			continue
		}
		if _, msg, ok := strings.Cut(l, "spread probe: "); ok && impl != "" {
			out[impl] = strings.TrimSpace(msg)
		}
	}
	return out
}

func readMeta(name string) []string {
	b, err := os.ReadFile(filepath.Join(resultsDir, name))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// benchstat runs benchstat on the given files with args, or explains why
// it could not.
func benchstat(args []string, files ...string) string {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	argv := append([]string{"run", benchstatPkg}, args...)
	for _, f := range files {
		argv = append(argv, filepath.Join(resultsDir, f))
	}
	cmd := exec.CommandContext(c, "go", argv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("(benchstat did not run: %v: %s; the medians above are computed by cmd/report itself)",
			err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimRight(out.String(), "\n")
}
