package engine_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/allot-go/allot/engine"
)

// FuzzLimits registers a key with fuzzed limit parameters: Register either
// accepts them or returns ErrInvalidLimit, never panics, and an accepted key
// answers Consume and Status within its quota.
func FuzzLimits(f *testing.F) {
	f.Add(uint8(1), int64(100), int64(0), int64(0), int64(0), "")
	f.Add(uint8(2), int64(1000), int64(time.Hour), int64(0), int64(0), "hour")
	f.Add(uint8(3), int64(10), int64(0), int64(0), int64(3600), "")
	f.Add(uint8(4), int64(20), int64(time.Second), int64(10), int64(0), "rate")
	f.Add(uint8(4), int64(math.MaxInt64), int64(1), int64(math.MaxInt64), int64(0), "x")
	f.Add(uint8(2), int64(-1), int64(-1), int64(0), int64(0), "a\"b")
	f.Fuzz(func(t *testing.T, kind uint8, quota, period, rate, zone int64, name string) {
		var l engine.Limit
		switch kind % 5 {
		case 0:
			l = engine.Limit{}
		case 1:
			l = engine.Credits(quota)
		case 2:
			l = engine.PerWindow(quota, time.Duration(period))
		case 3:
			l = engine.PerMonthIn(quota, time.FixedZone("Z", int(zone%86400)))
		case 4:
			l = engine.Rate(rate, time.Duration(period), quota)
		}
		if name != "" {
			l = l.Named(name)
		}
		eng, err := engine.New(engine.WithClock(func() time.Time { return time.Unix(1_800_000_000, 0) }))
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		if err := eng.Register(ctx, "k", l); err != nil {
			if !errors.Is(err, engine.ErrInvalidLimit) {
				t.Fatalf("Register: %v, want ErrInvalidLimit", err)
			}
			return
		}
		for _, n := range []int64{1, quota, math.MaxInt64} {
			d, err := eng.Consume(ctx, "k", max(n, 1))
			if err != nil {
				t.Fatal(err)
			}
			if d.Remaining < 0 || d.Remaining > l.Quota() {
				t.Fatalf("remaining %d outside [0, %d]", d.Remaining, l.Quota())
			}
		}
		if _, err := eng.Status("k"); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzAmounts drives one key with fuzzed amounts for Consume, Refund and
// TopUp, including 0, negatives, math.MaxInt64 and sums that overflow: every
// call is a Decision or a sentinel error, and the key's balance stays within
// [0, quota] and equals what a plain model computes.
func FuzzAmounts(f *testing.F) {
	f.Add(int64(100), int64(1), int64(0), int64(5), int64(math.MaxInt64))
	f.Add(int64(engine.MaxCredits), int64(math.MaxInt64), int64(-1), int64(math.MinInt64), int64(1))
	f.Add(int64(1), int64(engine.MaxCredits), int64(engine.MaxCredits), int64(engine.MaxCredits), int64(2))
	f.Fuzz(func(t *testing.T, quota, a, b, c, d int64) {
		eng, err := engine.New()
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		if err := eng.Register(ctx, "k", engine.Credits(quota)); err != nil {
			if !errors.Is(err, engine.ErrInvalidLimit) {
				t.Fatal(err)
			}
			return
		}
		rem, q := quota, quota
		var last engine.Decision // the last grant, to refund
		for i, n := range []int64{a, b, c, d, a, c} {
			switch i % 3 {
			case 0:
				dec, err := eng.Consume(ctx, "k", n)
				if n <= 0 {
					if !errors.Is(err, engine.ErrInvalidAmount) {
						t.Fatalf("Consume(%d): %v", n, err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if want := n <= rem; dec.Allowed != want {
					t.Fatalf("Consume(%d) with %d left: allowed %v", n, rem, dec.Allowed)
				}
				if dec.Allowed {
					rem, last = rem-n, dec
				}
			case 1:
				err := eng.Refund(ctx, "k", last, n)
				switch {
				case n <= 0 || !last.Allowed || n > last.Granted():
					if !errors.Is(err, engine.ErrInvalidAmount) {
						t.Fatalf("Refund(%d) of a grant of %d: %v", n, last.Granted(), err)
					}
					continue
				case err != nil:
					t.Fatal(err)
				}
				rem, last = min(rem+n, q), engine.Decision{}
			case 2:
				err := eng.TopUp(ctx, "k", n)
				switch {
				case n <= 0 || n > engine.MaxCredits-q:
					if !errors.Is(err, engine.ErrInvalidAmount) {
						t.Fatalf("TopUp(%d) of quota %d: %v", n, q, err)
					}
					continue
				case err != nil:
					t.Fatal(err)
				}
				q += n
				rem += n
			}
			st, err := eng.Status("k")
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Limits[0].Remaining; got != rem || got < 0 || got > q {
				t.Fatalf("after step %d: remaining %d, model %d, quota %d", i, got, rem, q)
			}
		}
	})
}

// FuzzKeys checks key validation: any string is either a valid key or
// ErrInvalidKey, for every call, and never a panic.
func FuzzKeys(f *testing.F) {
	f.Add("key-a")
	f.Add("")
	f.Add("\x00")
	f.Add(string(make([]byte, engine.MaxKeyLen+1)))
	f.Add("é\xff\xfe")
	f.Fuzz(func(t *testing.T, key string) {
		eng, err := engine.New()
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		valid := len(key) > 0 && len(key) <= engine.MaxKeyLen && key[0] != 0
		err = eng.Register(ctx, key, engine.Credits(2))
		if valid != (err == nil) || (!valid && !errors.Is(err, engine.ErrInvalidKey)) {
			t.Fatalf("Register(%q): %v", key, err)
		}
		d, err := eng.Consume(ctx, key, 1)
		if valid != (err == nil) || (valid && !d.Allowed) {
			t.Fatalf("Consume(%q): %+v %v", key, d, err)
		}
	})
}
