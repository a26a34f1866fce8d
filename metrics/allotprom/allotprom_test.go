package allotprom_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/metrics/allotprom"
)

var ctx = context.Background()

// memStore is an in-memory engine.Store that counts its Saves, and fails
// them while fail is set: the ground truth of the store metrics.
type memStore struct {
	mu            sync.Mutex
	recs          map[engine.KeyID]engine.Record
	fail          error
	saved, failed int // Saves that succeeded, and that failed
	records       int // records of the Saves that succeeded
}

func newMemStore() *memStore { return &memStore{recs: map[engine.KeyID]engine.Record{}} }

func (s *memStore) Load(_ context.Context, fn func(engine.Record) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) Save(_ context.Context, recs ...engine.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		s.failed++
		return s.fail
	}
	s.saved++
	s.records += len(recs)
	for _, r := range recs {
		r.Limits = append([]engine.Limit(nil), r.Limits...)
		r.Counters = append([]uint64(nil), r.Counters...)
		s.recs[r.ID] = r
	}
	return nil
}

func (*memStore) Close() error { return nil }

func (s *memStore) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *memStore) counts() (saved, failed, records int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saved, s.failed, s.records
}

func newEngine(t *testing.T, opts ...engine.Option) *engine.Engine {
	t.Helper()
	eng, err := engine.New(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = eng.Close() })
	return eng
}

// storeNames are the store metrics but the histogram, whose sum is a time.
var storeNames = []string{"allot_store_rounds_total", "allot_store_records_total", "allot_store_reservations_total", "allot_store_errors_total"}

// trafficNames are the metrics that known traffic fixes.
var trafficNames = append([]string{"allot_decisions_total", "allot_units_granted_total", "allot_keys", "allot_requests_in_flight"}, storeNames...)

// Decisions, units, keys by state and requests in flight, against known
// traffic on an engine without a store (whose store metrics stay 0).
func TestKnownTraffic(t *testing.T) {
	eng := newEngine(t, engine.WithCounting(), engine.WithClock(func() time.Time { return time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC) }))
	require.NoError(t, eng.Register(ctx, "c", engine.Credits(10)))
	require.NoError(t, eng.Register(ctx, "m", engine.Credits(10), engine.Rate(1, time.Hour, 3)))
	require.NoError(t, eng.Register(ctx, "r", engine.Credits(1)))
	require.NoError(t, eng.Register(ctx, "o", engine.Credits(5)))
	require.NoError(t, eng.Rotate(ctx, "o", "o2", time.Hour))
	require.NoError(t, eng.Revoke(ctx, "r"))
	for range 4 {
		_, _ = eng.Consume(ctx, "c", 3) // 3 granted (9 units), 1 exhausted
	}
	for range 4 {
		d, _ := eng.Consume(ctx, "m", 1) // 3 granted, 1 exhausted (the rate)
		eng.CountShadowDenied(d)         // let through in shadow mode: the exhausted one only
	}
	_, _ = eng.Consume(ctx, "r", 1)    // revoked
	_, _ = eng.Consume(ctx, "nope", 1) // unknown
	_, _ = eng.Consume(ctx, "o", 1)    // granted through the rotation
	_, _ = eng.Consume(ctx, "c", 0)    // an error: counted nowhere
	_, adm, err := eng.Admit(ctx, "o2", 2)
	require.NoError(t, err)

	c := allotprom.NewCollector(eng)
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP allot_decisions_total Consume and Admit calls that returned a decision, by reason (counted only with engine.WithCounting).
# TYPE allot_decisions_total counter
allot_decisions_total{reason="ok"} 8
allot_decisions_total{reason="exhausted"} 2
allot_decisions_total{reason="revoked"} 1
allot_decisions_total{reason="unknown_key"} 1
# HELP allot_units_granted_total Units granted (counted only with engine.WithCounting).
# TYPE allot_units_granted_total counter
allot_units_granted_total 15
# HELP allot_keys Keys held by the engine, by state.
# TYPE allot_keys gauge
allot_keys{state="active"} 3
allot_keys{state="revoked"} 1
allot_keys{state="rotated_out"} 1
allot_keys{state="recovered"} 0
# HELP allot_requests_in_flight Requests admitted by Admit and not yet done.
# TYPE allot_requests_in_flight gauge
allot_requests_in_flight 1
# HELP allot_shadow_denied_total Exhausted decisions let through in shadow mode (httpadapter.WithShadow); also counted in decisions_total{reason="exhausted"} (counted only with engine.WithCounting).
# TYPE allot_shadow_denied_total counter
allot_shadow_denied_total 1
# HELP allot_store_rounds_total Store rounds (one synced Save each) that succeeded.
# TYPE allot_store_rounds_total counter
allot_store_rounds_total 0
# HELP allot_store_records_total Records written by successful store rounds.
# TYPE allot_store_records_total counter
allot_store_records_total 0
# HELP allot_store_reservations_total Lease reservations made durable by successful store rounds.
# TYPE allot_store_reservations_total counter
allot_store_reservations_total 0
# HELP allot_store_errors_total Store rounds whose Save failed.
# TYPE allot_store_errors_total counter
allot_store_errors_total 0
`), trafficNames...))
	adm.Done()
	require.Equal(t, 0.0, gauge(t, c, "allot_requests_in_flight"))
	require.Equal(t, 0.0, gauge(t, c, "allot_store_last_error_timestamp_seconds"), "0 when no round failed")
	h := histogram(t, c)
	require.Zero(t, h.GetSampleCount())
	require.Len(t, h.GetBucket(), 14, "every bound of engine's histogram, +Inf implied")

	// Without WithCounting the decision counters stay at 0; the rest is
	// kept.
	quiet := newEngine(t)
	require.NoError(t, quiet.Register(ctx, "c", engine.Credits(10)))
	_, _ = quiet.Consume(ctx, "c", 1)
	require.NoError(t, testutil.CollectAndCompare(allotprom.NewCollector(quiet), strings.NewReader(`
# HELP allot_units_granted_total Units granted (counted only with engine.WithCounting).
# TYPE allot_units_granted_total counter
allot_units_granted_total 0
# HELP allot_keys Keys held by the engine, by state.
# TYPE allot_keys gauge
allot_keys{state="active"} 1
allot_keys{state="revoked"} 0
allot_keys{state="rotated_out"} 0
allot_keys{state="recovered"} 0
`), "allot_units_granted_total", "allot_keys"))
}

// The store metrics against known traffic on a store that counts its own
// Saves: rounds, records and reservations, a failed round, the histogram,
// the last error's time, and the keys recovered after a restart.
func TestKnownStoreTraffic(t *testing.T) {
	st := newMemStore()
	eng, err := engine.New(engine.WithStore(st), engine.WithCounting(), engine.WithLease(engine.LeaseOptions{MinChunk: 4, MaxChunk: 4}))
	require.NoError(t, err)
	// Two rounds of one record each; each Register reserves the first
	// chunk (4 units) in its own record.
	require.NoError(t, eng.Register(ctx, "a", engine.Credits(6)))
	require.NoError(t, eng.Register(ctx, "b", engine.Credits(10)))
	// 3 units pass the reservation's half: a reservation is written in
	// the background. The next 3 go past the reservation, so that Consume
	// waits for a reservation round (the background one, or one more if
	// that had started before it): once it returns no round is left in
	// flight, and the whole balance is reserved.
	for range 2 {
		d, err := eng.Consume(ctx, "a", 3)
		require.NoError(t, err)
		require.True(t, d.Allowed)
	}
	st.setFail(errors.New("disk on fire"))
	before := time.Now()
	require.ErrorIs(t, eng.Register(ctx, "c", engine.Credits(10)), engine.ErrStore) // a failed round
	after := time.Now()
	st.setFail(nil)

	saved, failed, records := st.counts()
	reservations := saved - 2 // the rounds that were not a Register's
	require.Contains(t, []int{1, 2}, reservations)
	require.Equal(t, 1, failed)
	require.Equal(t, saved, records, "one record a round")
	c := allotprom.NewCollector(eng)
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(fmt.Sprintf(`
# HELP allot_store_rounds_total Store rounds (one synced Save each) that succeeded.
# TYPE allot_store_rounds_total counter
allot_store_rounds_total %d
# HELP allot_store_records_total Records written by successful store rounds.
# TYPE allot_store_records_total counter
allot_store_records_total %d
# HELP allot_store_reservations_total Lease reservations made durable by successful store rounds.
# TYPE allot_store_reservations_total counter
allot_store_reservations_total %d
# HELP allot_store_errors_total Store rounds whose Save failed.
# TYPE allot_store_errors_total counter
allot_store_errors_total 1
# HELP allot_decisions_total Consume and Admit calls that returned a decision, by reason (counted only with engine.WithCounting).
# TYPE allot_decisions_total counter
allot_decisions_total{reason="ok"} 2
allot_decisions_total{reason="exhausted"} 0
allot_decisions_total{reason="revoked"} 0
allot_decisions_total{reason="unknown_key"} 0
# HELP allot_keys Keys held by the engine, by state.
# TYPE allot_keys gauge
allot_keys{state="active"} 2
allot_keys{state="revoked"} 0
allot_keys{state="rotated_out"} 0
allot_keys{state="recovered"} 0
`, saved, records, reservations)), append(storeNames, "allot_decisions_total", "allot_keys")...))
	h := histogram(t, c)
	require.Equal(t, uint64(saved+failed), h.GetSampleCount(), "every Save is observed, failed ones included")
	require.Positive(t, h.GetSampleSum())
	prev := uint64(0)
	for _, b := range h.GetBucket() {
		require.GreaterOrEqual(t, b.GetCumulativeCount(), prev, "cumulative buckets")
		prev = b.GetCumulativeCount()
	}
	require.LessOrEqual(t, prev, h.GetSampleCount())
	last := gauge(t, c, "allot_store_last_error_timestamp_seconds")
	require.GreaterOrEqual(t, last, float64(before.UnixNano())/1e9)
	require.LessOrEqual(t, last, float64(after.UnixNano())/1e9)
	require.NoError(t, eng.Close())
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(fmt.Sprintf(`
# HELP allot_store_rounds_total Store rounds (one synced Save each) that succeeded.
# TYPE allot_store_rounds_total counter
allot_store_rounds_total %d
`, saved+1)), "allot_store_rounds_total"), "a closed engine is still collected; Close's last write is one more round")

	// After a restart both keys are recovered until they are named.
	eng = newEngine(t, engine.WithStore(st))
	c = allotprom.NewCollector(eng)
	require.Equal(t, map[string]float64{"active": 0, "revoked": 0, "rotated_out": 0, "recovered": 2}, keys(t, c))
	_, err = eng.Consume(ctx, "a", 1)
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"active": 1, "revoked": 0, "rotated_out": 0, "recovered": 1}, keys(t, c))
	require.Equal(t, 0.0, gauge(t, c, "allot_store_last_error_timestamp_seconds"), "a new engine has had no error")
}

// A pedantic registry (which checks that Collect matches Describe and that
// every metric is consistent) takes the collector and gathers; two engines
// in one registry are told apart by const labels; the names follow the
// conventions that promlint checks.
func TestPedanticRegistry(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	a := busyEngine(t)
	b := newEngine(t)
	require.NoError(t, reg.Register(allotprom.NewCollector(a, allotprom.WithConstLabels(prometheus.Labels{"engine": "a"}))))
	require.NoError(t, reg.Register(allotprom.NewCollector(b, nil, allotprom.WithConstLabels(prometheus.Labels{"engine": "b"}))))
	err := reg.Register(allotprom.NewCollector(b, allotprom.WithConstLabels(prometheus.Labels{"engine": "b"})))
	require.ErrorAs(t, err, new(prometheus.AlreadyRegisteredError), "the same labels twice are refused")
	mfs, err := reg.Gather()
	require.NoError(t, err)
	require.Len(t, mfs, 11)
	for _, mf := range mfs {
		require.True(t, strings.HasPrefix(mf.GetName(), "allot_"), mf.GetName())
		if mf.GetType() == dto.MetricType_COUNTER {
			require.True(t, strings.HasSuffix(mf.GetName(), "_total"), mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				require.Contains(t, []string{"engine", "reason", "state"}, l.GetName(), "no other label, no per-key label")
			}
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)

	bad := prometheus.NewPedanticRegistry()
	require.Error(t, bad.Register(allotprom.NewCollector(b, allotprom.WithConstLabels(prometheus.Labels{"reason": "x"}))), "a label the collector uses")

	ns := prometheus.NewPedanticRegistry()
	require.NoError(t, ns.Register(allotprom.NewCollector(a, allotprom.WithNamespace("billing"))))
	mfs, err = ns.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		require.True(t, strings.HasPrefix(mf.GetName(), "billing_allot_"), mf.GetName())
	}
}

// promtool check metrics passes on the text exposition of a gathered
// registry. promtool is the Debian package prometheus: under CI=true a
// missing promtool fails the test; elsewhere it skips.
func TestPromtoolCheckMetrics(t *testing.T) {
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool not found (CI=true): install the Debian package prometheus: %v", err)
		}
		t.Skipf("promtool not found; install it (apt-get install prometheus) to run this test: %v", err)
	}
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(allotprom.NewCollector(busyEngine(t))))
	text := exposition(t, reg)
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	t.Logf("promtool check metrics: %q", out)
	require.NoError(t, err, "promtool check metrics:\n%s\non:\n%s", out, text)
	require.Empty(t, bytes.TrimSpace(out), "promtool found problems")
}

// busyEngine returns an engine that has done a bit of everything: every
// reason, every key state, a request in flight, store rounds, a failed one.
func busyEngine(t *testing.T) *engine.Engine {
	t.Helper()
	st := newMemStore()
	eng := newEngine(t, engine.WithStore(st), engine.WithCounting())
	require.NoError(t, eng.Register(ctx, "a", engine.Credits(2)))
	require.NoError(t, eng.Register(ctx, "r", engine.Credits(2)))
	require.NoError(t, eng.Register(ctx, "o", engine.Credits(2)))
	require.NoError(t, eng.Rotate(ctx, "o", "o2", time.Hour))
	require.NoError(t, eng.Revoke(ctx, "r"))
	for _, k := range []string{"a", "a", "a", "r", "x"} {
		_, err := eng.Consume(ctx, k, 1)
		require.NoError(t, err)
	}
	_, adm, err := eng.Admit(ctx, "o2", 1)
	require.NoError(t, err)
	t.Cleanup(adm.Done)
	st.setFail(errors.New("disk on fire"))
	require.Error(t, eng.Register(ctx, "f", engine.Credits(1)))
	st.setFail(nil)
	return eng
}

// exposition returns the text exposition of what g gathers.
func exposition(t *testing.T, g prometheus.Gatherer) []byte {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		require.NoError(t, enc.Encode(mf))
	}
	return buf.Bytes()
}

// families gathers c alone.
func families(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	m := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		m[mf.GetName()] = mf
	}
	return m
}

func gauge(t *testing.T, c prometheus.Collector, name string) float64 {
	t.Helper()
	mf := families(t, c)[name]
	require.NotNil(t, mf, name)
	require.Len(t, mf.GetMetric(), 1)
	return mf.GetMetric()[0].GetGauge().GetValue()
}

func keys(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, s := range families(t, c)["allot_keys"].GetMetric() {
		m[s.GetLabel()[0].GetValue()] = s.GetGauge().GetValue()
	}
	return m
}

func histogram(t *testing.T, c prometheus.Collector) *dto.Histogram {
	t.Helper()
	mf := families(t, c)["allot_store_round_duration_seconds"]
	require.NotNil(t, mf)
	require.Equal(t, dto.MetricType_HISTOGRAM, mf.GetType())
	return mf.GetMetric()[0].GetHistogram()
}
