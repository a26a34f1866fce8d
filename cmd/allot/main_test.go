package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

// at is the time the test stores are written at, and inspected at.
var at = time.Date(2026, 11, 29, 10, 30, 0, 0, time.UTC)

// rawKeys are the keys makeStore registers; no byte of them may appear in
// any output.
var rawKeys = []string{"sk_credits_secret", "sk_window_secret", "sk_month_secret", "sk_rate_secret", "sk_multi_secret", "sk_revoked_secret", "sk_old_secret", "sk_new_secret"}

// makeStore writes a store in dir with a key of every limit kind, a key
// revoked and a key rotated out, spent from at the time at, and closes it.
func makeStore(t testing.TB, dir string) {
	t.Helper()
	require.NoError(t, writeStore(dir))
}

func writeStore(dir string) error {
	st, err := persist.Open(dir)
	if err != nil {
		return err
	}
	eng, err := engine.New(engine.WithStore(st), engine.WithClock(func() time.Time { return at }))
	if err != nil {
		return err
	}
	limits := [][]engine.Limit{
		{engine.Credits(1000)},
		{engine.PerWindow(100, time.Hour)},
		{engine.PerMonthIn(5000, time.UTC)},
		{engine.Rate(10, time.Second, 50)},
		{engine.Credits(5000), engine.PerWindow(900, time.Minute).Named("per-minute")},
		{engine.Credits(10)},
		{engine.Credits(300)},
	}
	for i, ls := range limits {
		if err := eng.Register(ctx, rawKeys[i], ls...); err != nil {
			return err
		}
	}
	for i, n := range []int64{37, 12, 250, 20, 99, 0, 5} {
		if n == 0 {
			continue
		}
		if d, err := eng.Consume(ctx, rawKeys[i], n); err != nil || !d.Allowed {
			return fmt.Errorf("consume: %v %v", d, err)
		}
	}
	if err := eng.Revoke(ctx, "sk_revoked_secret"); err != nil {
		return err
	}
	if err := eng.Rotate(ctx, "sk_old_secret", "sk_new_secret", 24*time.Hour); err != nil {
		return err
	}
	return eng.Close()
}

// allot runs the command in-process and returns its exit status, stdout
// and stderr. No raw key may appear in either.
func allot(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	for _, k := range rawKeys {
		require.NotContains(t, out.String(), k)
		require.NotContains(t, errb.String(), k)
	}
	return code, out.String(), errb.String()
}

func id(key string) string {
	d := engine.IDOf(key)
	return hex.EncodeToString(d[:])
}

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	makeStore(t, dir)
	code, out, errs := allot(t, "inspect", "--at", at.Format(time.RFC3339), dir)
	require.Equal(t, 0, code, errs)
	require.Empty(t, errs)
	t.Logf("\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Regexp(t, `^ID +STATE +LIMIT +REMAINING +FULL IN$`, lines[0])
	row := func(key string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, id(key)[:16]+" ") {
				return l
			}
		}
		t.Fatalf("no line for %s in\n%s", key, out)
		return ""
	}
	require.Regexp(t, `active +credits: 1000 credits +963 +-$`, row("sk_credits_secret"))
	require.Regexp(t, `active +hour: 100 per 1h0m0s +88 +30m0s$`, row("sk_window_secret"))
	require.Regexp(t, `revoked +credits: 10 credits +10 +-$`, row("sk_revoked_secret"))
	require.Regexp(t, `rotated to `+id("sk_new_secret")[:16]+` until 2026-11-30T10:30:00Z +credits: 300 credits +295`, row("sk_old_secret"))
	require.Regexp(t, `^8 keys \(1 revoked, 1 rotated out\); store [0-9a-f]{32}, generation \d+, 8 records$`, lines[len(lines)-1])
	// The second limit of a key has a line of its own.
	require.Contains(t, out, "per-minute: 900 per 1m0s")

	code, out, errs = allot(t, "inspect", dir, "--json", "--at", at.Format(time.RFC3339))
	require.Equal(t, 0, code, errs)
	var doc struct {
		Store struct{ Records int }
		Keys  []struct {
			ID         string `json:"id"`
			Revoked    bool   `json:"revoked"`
			RotatedOut bool   `json:"rotated_out"`
			RotatedTo  string `json:"rotated_to"`
			Limits     []struct {
				Kind      string
				Remaining int64
			}
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.Equal(t, 8, doc.Store.Records)
	require.Len(t, doc.Keys, 8)
	byID := map[string]int{}
	for i, k := range doc.Keys {
		byID[k.ID] = i
	}
	k := doc.Keys[byID[id("sk_old_secret")]]
	require.True(t, k.RotatedOut)
	require.Equal(t, id("sk_new_secret"), k.RotatedTo)
	require.True(t, doc.Keys[byID[id("sk_revoked_secret")]].Revoked)
	require.Equal(t, int64(963), doc.Keys[byID[id("sk_credits_secret")]].Limits[0].Remaining)
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	makeStore(t, dir)
	code, out, errs := allot(t, "verify", dir)
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `^`+regexp.QuoteMeta(dir)+`: sound: store [0-9a-f]{32}, generation \d+, 8 records \(\d revoked, 1 rotated out\)\n$`, out)

	code, _, errs = allot(t, "verify", t.TempDir())
	require.Equal(t, 1, code)
	require.Contains(t, errs, "holds no store")
}

// Damaged copies of a store: verify and inspect fail with status 1 and
// say why, or (for damage to a file that no check depends on) succeed;
// they never panic (a panic in one of Badger's goroutines would end the
// test binary), and never report a usage error.
func TestDamagedCopies(t *testing.T) {
	good := t.TempDir()
	makeStore(t, good)
	files, err := os.ReadDir(good)
	require.NoError(t, err)
	// Damage to one of allot.meta's two slots leaves the other: only its
	// removal must fail.
	mustFail := map[string]bool{"MANIFEST": true}
	for _, f := range files {
		if !f.Type().IsRegular() {
			continue
		}
		name := f.Name()
		if strings.HasSuffix(name, ".sst") {
			mustFail[name] = true
		}
		for _, damage := range []string{"removed", "truncated", "flipped"} {
			t.Run(name+"/"+damage, func(t *testing.T) {
				dir := t.TempDir()
				require.NoError(t, os.CopyFS(dir, os.DirFS(good)))
				p := filepath.Join(dir, name)
				b, err := os.ReadFile(p)
				require.NoError(t, err)
				switch damage {
				case "removed":
					require.NoError(t, os.Remove(p))
				case "truncated":
					require.NoError(t, os.WriteFile(p, b[:len(b)/2], 0o600))
				case "flipped":
					if len(b) == 0 {
						t.Skip("empty file")
					}
					b[len(b)/2] ^= 0xff
					require.NoError(t, os.WriteFile(p, b, 0o600))
				}
				for _, cmd := range []string{"verify", "inspect"} {
					code, _, errs := allot(t, cmd, dir)
					require.Contains(t, []int{0, 1}, code, errs)
					if code == 1 {
						require.NotEmpty(t, errs)
						require.NotContains(t, errs, "allot-snapshot-", "errors name the directory, not its copy")
					}
					if mustFail[name] || (name == "allot.meta" && damage == "removed") {
						require.Equal(t, 1, code, "%s of %s %s: %s", cmd, name, damage, errs)
					}
					t.Logf("%s: %d %s", cmd, code, strings.TrimSpace(errs))
				}
			})
		}
	}
}

func TestBackupRestore(t *testing.T) {
	dir := t.TempDir()
	makeStore(t, dir)
	file := filepath.Join(t.TempDir(), "quotas.allotbak")
	code, out, errs := allot(t, "backup", dir, file)
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `^`+regexp.QuoteMeta(file)+`: store [0-9a-f]{32}, generation \d+, 8 records, taken \S+, \d+ bytes, sha256 [0-9a-f]{64}\n$`, out)
	backup, err := os.ReadFile(file)
	require.NoError(t, err)
	for _, k := range rawKeys {
		require.NotContains(t, string(backup), k, "no raw key in the backup")
	}

	code, _, errs = allot(t, "backup", dir, file)
	require.Equal(t, 1, code)
	require.Contains(t, errs, "exists (--force replaces it)")
	code, _, errs = allot(t, "backup", "--force", dir, file)
	require.Equal(t, 0, code, errs)

	code, out, errs = allot(t, "verify", file)
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, ": sound backup: store ")

	to := filepath.Join(t.TempDir(), "restored")
	code, out, errs = allot(t, "restore", file, to)
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, to+": restored store ")

	// Every key as it was: the same JSON, store id and generation included.
	_, before, _ := allot(t, "inspect", "--json", "--at", at.Format(time.RFC3339), dir)
	code, after, errs := allot(t, "inspect", "--json", "--at", at.Format(time.RFC3339), to)
	require.Equal(t, 0, code, errs)
	require.JSONEq(t, before, after)

	code, _, errs = allot(t, "restore", file, to)
	require.Equal(t, 1, code)
	require.Contains(t, errs, "not empty")

	// A damaged backup: nothing written.
	b := append([]byte(nil), backup...)
	b[len(b)/2] ^= 1
	bad := filepath.Join(t.TempDir(), "bad.allotbak")
	require.NoError(t, os.WriteFile(bad, b, 0o600))
	to2 := filepath.Join(t.TempDir(), "restored")
	code, _, errs = allot(t, "restore", bad, to2)
	require.Equal(t, 1, code)
	require.Contains(t, errs, "SHA-256 does not match")
	_, err = os.Stat(to2)
	require.ErrorIs(t, err, fs.ErrNotExist)
	code, _, errs = allot(t, "verify", bad)
	require.Equal(t, 1, code)
	require.Contains(t, errs, "SHA-256 does not match")

	// Through stdout and stdin.
	var out2, errb bytes.Buffer
	require.Equal(t, 0, run([]string{"backup", dir, "-"}, &out2, &errb), errb.String())
	require.Contains(t, errb.String(), dir+" backed up: store ")
	stdin = bytes.NewReader(out2.Bytes())
	defer func() { stdin = os.Stdin }()
	to3 := filepath.Join(t.TempDir(), "from-stdin")
	code, _, errs = allot(t, "restore", "-", to3)
	require.Equal(t, 0, code, errs)
	_, after, _ = allot(t, "inspect", "--json", "--at", at.Format(time.RFC3339), to3)
	require.JSONEq(t, before, after)
}

// A directory that a store in this process holds: every command that
// reads it refuses with status 1 and says so, and writes nothing.
func TestHeldDirectory(t *testing.T) {
	dir := t.TempDir()
	makeStore(t, dir)
	st, err := persist.Open(dir)
	require.NoError(t, err)
	defer st.Close()
	file := filepath.Join(t.TempDir(), "b")
	for _, args := range [][]string{{"inspect", dir}, {"verify", dir}, {"backup", dir, file}} {
		code, out, errs := allot(t, args...)
		require.Equal(t, 1, code, args)
		require.Empty(t, out)
		require.Contains(t, errs, "allot: "+dir+" is in use by a running process (pid ")
		require.Contains(t, errs, "(*persist.Store).Backup")
	}
	_, err = os.Stat(file)
	require.ErrorIs(t, err, fs.ErrNotExist)

	// The in-process way: the running store backs itself up.
	f, err := os.Create(file)
	require.NoError(t, err)
	_, err = st.Backup(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	code, out, errs := allot(t, "verify", file)
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "8 records")
}

// The same with the directory held by another process, which stays
// untouched: it still works after the refusals.
func TestHeldByAnotherProcess(t *testing.T) {
	if os.Getenv("ALLOT_TEST_HOLD") != "" {
		hold(os.Getenv("ALLOT_TEST_HOLD"))
		return
	}
	dir := t.TempDir()
	makeStore(t, dir)
	child := exec.Command(os.Args[0], "-test.run=^TestHeldByAnotherProcess$")
	child.Env = append(os.Environ(), "ALLOT_TEST_HOLD="+dir)
	in, err := child.StdinPipe()
	require.NoError(t, err)
	outp, err := child.StdoutPipe()
	require.NoError(t, err)
	child.Stderr = os.Stderr
	require.NoError(t, child.Start())
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	r := bufio.NewReader(outp)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "holding\n", line)

	pid := fmt.Sprintf("(pid %d, ", child.Process.Pid)
	for _, args := range [][]string{{"inspect", dir}, {"verify", dir}, {"backup", dir, filepath.Join(t.TempDir(), "b")}} {
		code, _, errs := allot(t, args...)
		require.Equal(t, 1, code, args)
		require.Contains(t, errs, dir+" is in use by a running process "+pid)
	}
	// The child goes on: it consumes once more, and closes cleanly.
	_, err = in.Write([]byte("consume\n"))
	require.NoError(t, err)
	line, err = r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "consumed 962\n", line)
	require.NoError(t, in.Close())
	require.NoError(t, child.Wait())
	code, out, errs := allot(t, "inspect", "--at", at.Format(time.RFC3339), dir)
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `active +credits: 1000 credits +962 +-`, out)
}

// hold is the child of TestHeldByAnotherProcess: it opens the store in dir
// and consumes a unit of the credits key for each line it reads, until
// stdin closes.
func hold(dir string) {
	st, err := persist.Open(dir)
	if err != nil {
		panic(err)
	}
	eng, err := engine.New(engine.WithStore(st), engine.WithClock(func() time.Time { return at }))
	if err != nil {
		panic(err)
	}
	fmt.Println("holding")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		d, err := eng.Consume(ctx, "sk_credits_secret", 1)
		if err != nil {
			panic(err)
		}
		fmt.Println("consumed", d.Remaining)
	}
	if err := eng.Close(); err != nil {
		panic(err)
	}
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string // a part of it
		stderr string
	}{
		{nil, 2, "", "Usage:"},
		{[]string{"help"}, 0, "Commands:", ""},
		{[]string{"-h"}, 0, "Commands:", ""},
		{[]string{"help", "backup"}, 0, "usage: allot backup [--force] DIR FILE", ""},
		{[]string{"help", "nope"}, 2, "", "unknown command"},
		{[]string{"nope"}, 2, "", "allot nope: unknown command"},
		{[]string{"inspect"}, 2, "", "want 1 argument, got 0"},
		{[]string{"inspect", "a", "b"}, 2, "", "want 1 argument, got 2"},
		{[]string{"inspect", "--bogus", dir}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"inspect", "--at", "yesterday", dir}, 2, "", "--at: "},
		{[]string{"backup", dir}, 2, "", "want 2 arguments, got 1"},
		{[]string{"restore", "x"}, 2, "", "usage: allot restore FILE DIR"},
		{[]string{"keygen", "extra"}, 2, "", "want 0 arguments, got 1"},
		{[]string{"keygen", "--prefix", "Bad"}, 2, "", "--prefix \"Bad\""},
		{[]string{"inspect", "--", "-dir-"}, 1, "", "-dir-: no such file or directory"},
	} {
		code, out, errs := allot(t, tc.args...)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, errs)
		require.Contains(t, out, tc.stdout, tc.args)
		require.Contains(t, errs, tc.stderr, tc.args)
		if tc.code == 0 {
			require.Empty(t, errs, tc.args)
		} else {
			require.Empty(t, out, tc.args)
		}
	}
	// -h on every command: its help on stdout, status 0.
	for _, c := range commands {
		code, out, errs := allot(t, c.name, "-h")
		require.Equal(t, 0, code, c.name)
		require.Empty(t, errs)
		require.True(t, strings.HasPrefix(out, "usage: allot "+c.name+" "), out)
		require.Contains(t, out, "Example:")
	}
}

func TestKeygen(t *testing.T) {
	for _, args := range [][]string{{"keygen"}, {"keygen", "--prefix", "sk_live"}} {
		code, out, errs := allot(t, args...)
		require.Equal(t, 0, code, errs)
		key := strings.TrimSuffix(out, "\n")
		require.Regexp(t, engine.KeyPattern, key)
		require.NoError(t, engine.CheckKey(key))
		if len(args) == 3 {
			require.True(t, strings.HasPrefix(key, "sk_live_"))
		}
	}
}
