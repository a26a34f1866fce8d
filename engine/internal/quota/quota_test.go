package quota

import (
	"go/build"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// The package stays pure: its code imports the standard library only (a
// path whose first element has no dot), never the engine or a module.
func TestImportsStandardLibraryOnly(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkg.Imports) == 0 {
		t.Fatal("no imports found: is this the package's directory?")
	}
	for _, p := range pkg.Imports {
		if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") {
			t.Errorf("package quota imports %s: it may import the standard library only", p)
		}
	}
}

// A window value's fields stay inside the value, apart from each other.
func TestValueLayout(t *testing.T) {
	if (uint64(TagMask)<<TagShift|UsedMask)&^ValueMask != 0 {
		t.Fatal("window fields overflow the value")
	}
	if uint64(TagMask)<<TagShift&UsedMask != 0 {
		t.Fatal("window tag and count overlap")
	}
	if NoLease <= ValueMask {
		t.Fatal("NoLease must lie above every value")
	}
	if Never >= 0 {
		t.Fatal("Never must not be a duration")
	}
}

var t0 = time.Date(2026, 3, 31, 23, 59, 0, 0, time.UTC).UnixNano()

func limits() []Limit {
	return []Limit{
		{Kind: Credits, Quota: 100},
		{Kind: Window, Quota: 100, Period: int64(time.Minute)},
		{Kind: Month, Quota: 100, Loc: time.UTC},
		{Kind: Rate, Quota: 100, Period: int64(time.Millisecond)},
	}
}

// Grants never exceed the quota at one instant; a refund of a grant gives
// it back in the same window, and a value never leaves ValueMask.
func TestConsumeRefund(t *testing.T) {
	for _, l := range limits() {
		v := l.Initial(t0)
		var got int64
		for {
			nv, ok, r := l.Consume(v, 7, t0)
			if !ok {
				if r.Remaining >= 7 || r.Retry == 0 {
					t.Fatalf("%v: denied with %d left, retry %d", l.Kind, r.Remaining, r.Retry)
				}
				break
			}
			if nv&^ValueMask != 0 || r.Remaining != l.Quota-got-7 {
				t.Fatalf("%v: value %x, remaining %d after %d", l.Kind, nv, r.Remaining, got+7)
			}
			v, got = nv, got+7
		}
		if got != 98 {
			t.Fatalf("%v: granted %d, want 98", l.Kind, got)
		}
		back := l.Refund(v, 7, t0, t0)
		if r := l.Peek(back, t0); r.Remaining != 9 {
			t.Fatalf("%v: %d left after a refund of 7, want 9", l.Kind, r.Remaining)
		}
	}
	// A window's units do not come back once the window has ended.
	l := limits()[1]
	v, _, _ := l.Consume(l.Initial(t0), 5, t0)
	next := t0 + int64(time.Minute)
	if nv := l.Refund(v, 5, next, t0); nv != v {
		t.Fatal("a refund reached an ended window")
	}
}

// A reservation only grows, covers what it reserved, and its soft mark
// fires before its hard mark binds; Tighten keeps its size after a refund.
func TestReserve(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, l := range limits() {
		v := l.Initial(t0)
		m := l.Exhausted(v)
		for range 200 {
			now := t0 + r.Int64N(int64(time.Second))
			nm := l.Reserve(v, m.Hard, 1+r.Int64N(16), now)
			if nm.Hard < m.Hard { // one window throughout: t0 plus less than a second
				t.Fatalf("%v: reservation shrank from %d to %d", l.Kind, m.Hard, nm.Hard)
			}
			if !l.Covered(v, nm.Hard) {
				t.Fatalf("%v: value %d outside its own reservation %d", l.Kind, v, nm.Hard)
			}
			m = nm
			nv, ok, _ := l.Consume(v, 1, now)
			if !ok {
				break
			}
			if !l.Covered(nv, m.Hard) {
				if !l.Low(nv, m.Soft) {
					t.Fatalf("%v: %d passed the hard mark %d without passing the soft %d", l.Kind, nv, m.Hard, m.Soft)
				}
				continue
			}
			v = nv
		}
		if u := l.Unbounded(); !l.Covered(v, u.Hard) || l.Low(v, u.Soft) {
			t.Fatalf("%v: unbounded marks bind", l.Kind)
		}
		if l.Kind == Credits {
			h, ok := l.Tighten(m.Hard, v, v-1)
			if !ok || h != m.Hard-1 {
				t.Fatalf("credits: tighten %d by one gave %d, %v", m.Hard, h, ok)
			}
		}
	}
	if Worst(3, 9, true) != 9 || Worst(3, 9, false) != 3 {
		t.Fatal("Worst")
	}
}
