package persist_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
)

// Faults of the disk under a running engine: a full filesystem, a data
// directory removed or made read-only. Each scenario runs in a child
// process, so that a fault that ends the process (SIGBUS from a write
// through Badger's memory maps, log.Fatal from Badger's assertions) is a
// failure of the test, not the end of the test binary. What each must show:
// no crash; every failing call matches engine.ErrStore; no grant beyond the
// reservations that were durable (checked on a copy of the directory taken
// while the fault lasts, as a crash would leave it); service resumes,
// without a restart, once the fault is gone (where it can be gone); a
// reopen shows no over-grant.

// faultQuota is more than the consumers can take: each phase of consuming
// makes at most consumeCap calls on each goroutine.
const (
	faultQuota = 4_000_000
	consumeCap = 200_000
)

var faultLimits = []engine.Limit{
	engine.Credits(faultQuota),
	engine.PerWindow(faultQuota, 24*time.Hour),
	engine.PerMonth(faultQuota),
	engine.Rate(1, time.Minute, faultQuota),
	engine.Rate(1, 48*time.Hour, 10),
}

func faultKey(i int) string { return fmt.Sprint("fault-", i) }

// small is the Badger of the fault tests: a memtable of 256 KiB (a
// write-ahead file of 512 KiB), which a 2 MiB filesystem can hold with the
// reserve; the scenarios write far less than a memtable, so Badger makes no
// new write-ahead file and no table while they run.
var small = persist.WithBadgerOptions(func(o badger.Options) badger.Options {
	return o.WithMemTableSize(256 << 10).WithValueLogFileSize(1 << 20)
})

// workload consumes from every fault key on a few goroutines, and makes
// administrative calls on request; it records every error that does not
// match engine.ErrStore, and counts grants.
type workload struct {
	t       testing.TB
	eng     *engine.Engine
	granted [8]atomic.Int64
	errs    atomic.Int64 // calls that failed with ErrStore
	bad     chan error   // calls that failed otherwise
	stop    chan struct{}
	wg      sync.WaitGroup
	n       atomic.Int64 // administrative calls made
}

func newWorkload(t testing.TB, eng *engine.Engine) *workload {
	return &workload{t: t, eng: eng, bad: make(chan error, 100), stop: make(chan struct{})}
}

func (w *workload) failed(err error) {
	if err == nil {
		return
	}
	if errors.Is(err, engine.ErrStore) {
		w.errs.Add(1)
		return
	}
	select {
	case w.bad <- err:
	default:
	}
}

// consume starts the consumers.
func (w *workload) consume() {
	w.stop = make(chan struct{})
	for c := range 3 {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := c; i < c+consumeCap; i++ {
				select {
				case <-w.stop:
					return
				default:
				}
				k := i % len(faultLimits)
				d, err := w.eng.Consume(context.Background(), faultKey(k), 1)
				w.failed(err)
				if err == nil && d.Allowed {
					w.granted[k].Add(1)
				}
			}
		}()
	}
}

// pause stops the consumers.
func (w *workload) pause() {
	close(w.stop)
	w.wg.Wait()
}

// admin makes one administrative call, of a kind that depends on i, and
// returns its error.
func (w *workload) admin(i int) error {
	n := w.n.Add(1)
	var err error
	switch i % 3 {
	case 0:
		err = w.eng.Register(context.Background(), fmt.Sprint("admin-", n), engine.Credits(5))
	case 1:
		err = w.eng.TopUp(context.Background(), "pad", 1)
	default:
		k := fmt.Sprint("admin-", n)
		if err = w.eng.Register(context.Background(), k, engine.Credits(5)); err == nil {
			err = w.eng.Revoke(context.Background(), k)
		}
	}
	w.failed(err)
	return err
}

// noBad fails the test for any call that failed without ErrStore.
func (w *workload) noBad() {
	w.t.Helper()
	select {
	case err := <-w.bad:
		w.t.Fatalf("a call failed without engine.ErrStore: %v", err)
	default:
	}
}

// serves checks that every fault key with units to spare grants one.
func (w *workload) serves() {
	w.t.Helper()
	for i, l := range faultLimits {
		if l.Quota() < 1000 {
			continue // the two-day rate may have no unit left
		}
		d, err := w.eng.Consume(ctx, faultKey(i), 1)
		require.NoError(w.t, err, faultKey(i))
		require.True(w.t, d.Allowed, faultKey(i))
		w.granted[i].Add(1)
	}
}

// registerFaultKeys registers the fault keys and grants a few units of
// each.
func registerFaultKeys(t testing.TB, eng *engine.Engine) {
	require.NoError(t, eng.Register(ctx, "pad", engine.Credits(1)))
	for i, l := range faultLimits {
		require.NoError(t, eng.Register(ctx, faultKey(i), l))
		d, err := eng.Consume(ctx, faultKey(i), 1)
		require.NoError(t, err)
		require.True(t, d.Allowed)
	}
}

// checkDurable opens a copy of dir (as a crash would leave it) and checks
// that what was granted fits in what is left: no unit was granted beyond
// the reservations that were durable. It returns what the copy had left.
func checkDurable(t testing.TB, dir string, granted func(int) int64, since time.Time, opts ...persist.Option) {
	t.Helper()
	cp := t.TempDir()
	require.NoError(t, os.CopyFS(cp, os.DirFS(dir)))
	checkGrants(t, cp, granted, since, opts...)
}

// checkGrants opens dir and checks every fault key: granted plus left fits
// in the quota (plus what a rate refilled).
func checkGrants(t testing.TB, dir string, granted func(int) int64, since time.Time, opts ...persist.Option) {
	t.Helper()
	eng := open(t, dir, nil, opts...)
	defer eng.Close()
	now := time.Now()
	for i, l := range faultLimits {
		s, err := eng.Status(faultKey(i))
		require.NoError(t, err)
		quota, known := allowance(l, since, now)
		if !known {
			continue // a new window began: which window each grant fell in is not known
		}
		require.LessOrEqual(t, granted(i)+s.Limits[0].Remaining, quota, "%s (%s): granted beyond what was durable", faultKey(i), l.Name())
	}
}

// TestFaultChild runs a fault scenario in a child process.
func TestFaultChild(t *testing.T) {
	mode := os.Getenv("ALLOT_FAULT")
	if mode == "" {
		t.Skip("started by the fault tests only")
	}
	dir := os.Getenv("ALLOT_FAULT_DIR")
	switch mode {
	case "full":
		fullDiskChild(t, dir)
	case "removed", "emptied", "readonly":
		directoryChild(t, dir, mode)
	case "memtable":
		memtableChild(t, dir)
	default:
		t.Fatalf("mode %q", mode)
	}
	fmt.Println("ok")
}

// runFault runs a scenario in a child and returns its output lines; the
// child must exit normally and say "ok".
func runFault(t *testing.T, mode, dir string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFaultChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "ALLOT_FAULT="+mode, "ALLOT_FAULT_DIR="+dir)
	out, err := cmd.CombinedOutput()
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	ok := false
	for sc.Scan() {
		l := sc.Text()
		lines = append(lines, l)
		ok = ok || l == "ok"
	}
	if err != nil || !ok {
		t.Fatalf("the %s scenario's child did not finish (%v; %s); it said:\n%s", mode, err, cmd.ProcessState, out)
	}
	for _, l := range lines {
		if v, found := strings.CutPrefix(l, "say "); found {
			t.Log(v)
		}
	}
	return lines
}

// say reports a figure to the parent.
func say(format string, a ...any) { fmt.Printf("say "+format+"\n", a...) }

// mountTmpfs mounts a tmpfs of the given size on a new directory and
// unmounts it at cleanup; false if mounting is refused (not root).
func mountTmpfs(t *testing.T, size string) (string, bool) {
	dir := filepath.Join(t.TempDir(), "mnt")
	require.NoError(t, os.Mkdir(dir, 0o700))
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Logf("mount -t tmpfs -o size=%s refused: %v", size, err)
		return "", false
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir, true
}

// fill writes a file in dir until the filesystem is full, and returns it.
func fill(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer f.Close()
	for _, chunk := range []int{64 << 10, 4 << 10, 512, 1} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				require.ErrorIs(t, err, syscall.ENOSPC)
				break
			}
		}
	}
	return path
}

// A full disk: SIGBUS in Badger's write-ahead file before (the test's child
// died), errors matching engine.ErrStore now, and service again once there
// is room. On a 2 MiB tmpfs where mount works (root); elsewhere a store that
// fails writes with ENOSPC covers the engine's side, and the test says so.
func TestFullDisk(t *testing.T) {
	mnt, ok := mountTmpfs(t, "2m")
	if !ok {
		t.Log("FELL BACK: no tmpfs (mount refused); a store wrapper failing Save with ENOSPC covers the engine's side only, not Badger's")
		fullDiskFallback(t)
		return
	}
	start := time.Now()
	lines := runFault(t, "full", mnt)
	granted := make([]int64, len(faultLimits))
	for _, l := range lines {
		var i int
		var n int64
		if _, err := fmt.Sscanf(l, "granted %d %d", &i, &n); err == nil {
			granted[i] = n
		}
	}
	// The child closed the store after space came back: a reopen shows no
	// over-grant.
	checkGrants(t, filepath.Join(mnt, "store"), func(i int) int64 { return granted[i] }, start, small)
}

// Open refuses a filesystem without room for a preallocated write-ahead
// file and the reserve, with a clear error: Badger's default memtable (a
// write-ahead file of 32 MiB) on 2 MiB, or a full filesystem. Before, it
// opened, and the first writes past 2 MiB ended the process.
func TestOpenNeedsRoom(t *testing.T) {
	mnt, ok := mountTmpfs(t, "2m")
	if !ok {
		t.Skip("no tmpfs (mount refused): nothing to open on a small filesystem")
	}
	_, err := persist.Open(filepath.Join(mnt, "default"))
	require.ErrorIs(t, err, persist.ErrNoSpace)
	require.Contains(t, err.Error(), "MemTableSize")
	t.Log(err)
	filler := fill(t, mnt)
	_, err = persist.Open(filepath.Join(mnt, "small"), small)
	require.ErrorIs(t, err, persist.ErrNoSpace)
	t.Log(err)
	require.NoError(t, os.Remove(filler))
	st, err := persist.Open(filepath.Join(mnt, "small"), small)
	require.NoError(t, err)
	require.NoError(t, st.Close())
}

// fullDiskChild fills a 2 MiB filesystem under a running engine.
func fullDiskChild(t *testing.T, mnt string) {
	start := time.Now()
	dir := filepath.Join(mnt, "store")
	st, err := persist.Open(dir, small)
	require.NoError(t, err)
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	registerFaultKeys(t, eng)
	w := newWorkload(t, eng)
	granted := func(i int) int64 { return w.granted[i].Load() + 1 }
	w.consume()
	for i := range 20 {
		require.NoError(t, w.admin(i), "before the disk is full")
	}

	// Fill the disk while the consumers run, then administer: every call
	// that needs a write fails, with ErrStore.
	filler := fill(t, mnt)
	failures := 0
	for i := range 60 {
		if w.admin(i) != nil {
			failures++
		}
	}
	w.noBad()
	require.Equal(t, 60, failures, "every administrative call fails on a full disk")
	// A crash now: nothing granted beyond durable reservations. (Every Save
	// is refused before Badger writes: the directory does not change while
	// it is copied.)
	w.pause()
	checkDurable(t, dir, granted, start, small)
	say("full disk: %d calls failed with ErrStore, 0 otherwise, no crash; a copy as a crash leaves it shows no grant beyond durable reservations", w.errs.Load())

	// Room again: service resumes at once, without a restart.
	require.NoError(t, os.Remove(filler))
	w.serves()
	w.consume()
	for i := range 20 {
		require.NoError(t, w.admin(i), "space is back")
	}
	w.pause()
	w.noBad()

	// Close on a full disk: refused (Badger's Close would write a table
	// through a memory map), then done once there is room.
	filler = fill(t, mnt)
	require.ErrorIs(t, eng.Close(), engine.ErrStore)
	require.Error(t, st.Close())
	require.NoError(t, os.Remove(filler))
	require.NoError(t, st.Close())
	for i := range faultLimits {
		fmt.Printf("granted %d %d\n", i, granted(i))
	}
	say("space freed: service resumed without a restart; Close on a full disk refused, then done")
}

// faultStore wraps a store; while full is set, Save fails with ENOSPC.
type faultStore struct {
	*persist.Store
	full atomic.Bool
}

func (f *faultStore) Save(ctx context.Context, recs ...engine.Record) error {
	if f.full.Load() {
		return fmt.Errorf("fault store: %w", syscall.ENOSPC)
	}
	return f.Store.Save(ctx, recs...)
}

// fullDiskFallback is the engine's side of a full disk, without one.
func fullDiskFallback(t *testing.T) {
	start := time.Now()
	dir := t.TempDir()
	st, err := persist.Open(dir)
	require.NoError(t, err)
	fs := &faultStore{Store: st}
	eng, err := engine.New(engine.WithStore(fs))
	require.NoError(t, err)
	registerFaultKeys(t, eng)
	w := newWorkload(t, eng)
	granted := func(i int) int64 { return w.granted[i].Load() + 1 }
	w.consume()
	fs.full.Store(true)
	for i := range 60 {
		require.Error(t, w.admin(i))
	}
	w.noBad()
	w.pause()
	checkDurable(t, dir, granted, start)
	fs.full.Store(false)
	w.serves()
	w.consume()
	for i := range 20 {
		require.NoError(t, w.admin(i))
	}
	w.pause()
	w.noBad()
	require.NoError(t, eng.Close())
	checkGrants(t, dir, granted, start)
}

// A data directory removed, or made read-only, under a running engine.
// Before: removal went unnoticed (writes landed in unlinked files), and the
// first write that needed a new memtable failed, after which the next one
// ended the process (log.Fatal in Badger). Now every write fails with
// ErrStore at once, nothing is granted beyond durable reservations, and a
// read-only directory that becomes writable again is written again.
func TestDirectoryRemoved(t *testing.T) {
	for _, mode := range []string{"removed", "emptied"} { // the directory, or its files
		t.Run(mode, func(t *testing.T) { runFault(t, mode, filepath.Join(t.TempDir(), "store")) })
	}
}

func TestDirectoryReadOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	t.Cleanup(func() { // a child that died read-only would leave it so
		_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		_ = exec.Command("chattr", "-i", dir).Run()
		_ = os.Chmod(dir, 0o700)
	})
	lines := runFault(t, "readonly", dir)
	for _, l := range lines {
		if strings.HasPrefix(l, "skip ") {
			t.Skip(l)
		}
	}
}

// makeReadOnly makes dir read-only for this process and returns the undo.
// Root ignores permissions: a read-only bind mount of dir on itself does
// it then (chattr +i where mount is refused). Without root, chmod.
func makeReadOnly(dir string) (undo func() error, how string, err error) {
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o500); err != nil {
			return nil, "", err
		}
		return func() error { return os.Chmod(dir, 0o700) }, "chmod 0500", nil
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err == nil {
		if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
			_ = syscall.Unmount(dir, 0)
			return nil, "", err
		}
		return func() error { return syscall.Unmount(dir, syscall.MNT_DETACH) }, "a read-only bind mount", nil
	}
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("neither a bind mount nor chattr +i: %v %s", err, out)
	}
	return func() error { return exec.Command("chattr", "-i", dir).Run() }, "chattr +i", nil
}

// directoryChild removes the store's directory, or makes it read-only,
// under a running engine.
func directoryChild(t *testing.T, dir, mode string) {
	start := time.Now()
	st, err := persist.Open(dir, small)
	require.NoError(t, err)
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	registerFaultKeys(t, eng)
	w := newWorkload(t, eng)
	granted := func(i int) int64 { return w.granted[i].Load() + 1 }
	w.consume()
	for i := range 10 {
		require.NoError(t, w.admin(i))
	}
	w.pause()
	require.NoError(t, w.admin(0)) // its round comes after every reservation the consumers asked for
	// A copy of the store as it is when the fault comes: every grant after
	// it must come from reservations durable before.
	before := t.TempDir()
	require.NoError(t, os.CopyFS(before, os.DirFS(dir)))

	var undo func() error
	switch mode {
	case "removed":
		require.NoError(t, os.RemoveAll(dir))
	case "emptied":
		files, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, f := range files {
			require.NoError(t, os.RemoveAll(filepath.Join(dir, f.Name())))
		}
	case "readonly":
		var how string
		if undo, how, err = makeReadOnly(dir); err != nil {
			fmt.Printf("skip cannot make a directory read-only here: %v\n", err)
			return
		}
		say("read-only by %s", how)
	}
	w.consume()
	failures := 0
	for i := range 200 { // far more than the first write that needs a new memtable
		if w.admin(i) != nil {
			failures++
		}
	}
	w.pause()
	w.noBad()
	require.Equal(t, 200, failures, "every administrative call fails once the directory is %s", mode)
	checkGrants(t, before, granted, start, small)
	say("directory %s: %d calls failed with ErrStore, 0 otherwise, no crash; no grant beyond what was durable before", mode, w.errs.Load())

	if mode != "readonly" {
		require.ErrorIs(t, eng.Close(), engine.ErrStore, "Close returns (and leaves Badger's vanished files alone)")
		return
	}
	// Writable again: service resumes without a restart, and a reopen
	// shows every acknowledged call and no over-grant.
	require.NoError(t, undo())
	w.serves()
	w.consume()
	for i := range 10 {
		require.NoError(t, w.admin(i), "writable again")
	}
	w.pause()
	w.noBad()
	require.NoError(t, eng.Close())
	checkGrants(t, dir, granted, start, small)
	say("writable again: service resumed without a restart; reopened with no over-grant")
}

// When Badger itself fails a write that needed a new memtable, it is left
// without one, and its next write would end the process. With the
// directory checks off (as when the fault comes between the check and the
// write), the store notices the lost memtable and fails closed.
func TestBadgerFailureFailsClosed(t *testing.T) {
	runFault(t, "memtable", filepath.Join(t.TempDir(), "store"))
}

func memtableChild(t *testing.T, dir string) {
	st, err := persist.Open(dir, small)
	require.NoError(t, err)
	eng, err := engine.New(engine.WithStore(st))
	require.NoError(t, err)
	registerFaultKeys(t, eng)
	st.SkipGuardForTest()
	require.NoError(t, os.RemoveAll(dir))
	// Registrations land in the unlinked write-ahead file until it is full;
	// the write that needs the next one fails, and every later one fails
	// without reaching Badger.
	var big []engine.Limit // records of about 700 bytes: the write-ahead file fills sooner
	for i := range engine.MaxLimits {
		big = append(big, engine.Credits(int64(i+1)).Named(fmt.Sprintf("%02d%s", i, strings.Repeat("n", 60))))
	}
	var first int
	for i := 0; ; i++ {
		err := eng.Register(ctx, "k"+strconv.Itoa(i), big...)
		if err != nil {
			require.ErrorIs(t, err, engine.ErrStore)
			first = i
			break
		}
		require.Less(t, i, 100_000, "a write-ahead file of 512 KiB fills long before")
	}
	for i := range 50 {
		err := eng.Revoke(ctx, faultKey(i%len(faultLimits)))
		require.ErrorIs(t, err, engine.ErrStore)
		require.ErrorIs(t, err, persist.ErrFailed)
	}
	say("Badger lost its memtable at registration %d; 50 revocations after it failed with ErrFailed, no exit", first)
	require.Error(t, eng.Close())
}
