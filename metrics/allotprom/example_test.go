package allotprom_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/metrics/allotprom"
)

// An engine's metrics, registered and gathered as a scrape would (a server
// would serve reg with promhttp.HandlerFor, or register the collector with
// prometheus.MustRegister and serve promhttp.Handler()). This engine has no
// store, so its store figures are 0.
func Example() {
	ctx := context.Background()
	eng, err := engine.New(engine.WithCounting()) // WithCounting: the decision counters
	if err != nil {
		panic(err)
	}
	defer eng.Close()
	_ = eng.Register(ctx, "key-a", engine.Credits(2))
	_ = eng.Register(ctx, "key-b", engine.Credits(2))
	_ = eng.Revoke(ctx, "key-b")
	for _, key := range []string{"key-a", "key-a", "key-a", "key-b", "key-c"} {
		_, _ = eng.Consume(ctx, key, 1)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(allotprom.NewCollector(eng, allotprom.WithConstLabels(prometheus.Labels{"engine": "public"})))
	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		_, _ = expfmt.MetricFamilyToText(&b, mf)
	}
	fmt.Print(b.String())
	// Output:
	// # HELP allot_decisions_total Consume and Admit calls that returned a decision, by reason (counted only with engine.WithCounting).
	// # TYPE allot_decisions_total counter
	// allot_decisions_total{engine="public",reason="exhausted"} 1
	// allot_decisions_total{engine="public",reason="ok"} 2
	// allot_decisions_total{engine="public",reason="revoked"} 1
	// allot_decisions_total{engine="public",reason="unknown_key"} 1
	// # HELP allot_keys Keys held by the engine, by state.
	// # TYPE allot_keys gauge
	// allot_keys{engine="public",state="active"} 1
	// allot_keys{engine="public",state="recovered"} 0
	// allot_keys{engine="public",state="revoked"} 1
	// allot_keys{engine="public",state="rotated_out"} 0
	// # HELP allot_requests_in_flight Requests admitted by Admit and not yet done.
	// # TYPE allot_requests_in_flight gauge
	// allot_requests_in_flight{engine="public"} 0
	// # HELP allot_shadow_denied_total Exhausted decisions let through in shadow mode (httpadapter.WithShadow); also counted in decisions_total{reason="exhausted"} (counted only with engine.WithCounting).
	// # TYPE allot_shadow_denied_total counter
	// allot_shadow_denied_total{engine="public"} 0
	// # HELP allot_store_errors_total Store rounds whose Save failed.
	// # TYPE allot_store_errors_total counter
	// allot_store_errors_total{engine="public"} 0
	// # HELP allot_store_last_error_timestamp_seconds Unix time of the last failed store round, 0 if none failed.
	// # TYPE allot_store_last_error_timestamp_seconds gauge
	// allot_store_last_error_timestamp_seconds{engine="public"} 0
	// # HELP allot_store_records_total Records written by successful store rounds.
	// # TYPE allot_store_records_total counter
	// allot_store_records_total{engine="public"} 0
	// # HELP allot_store_reservations_total Lease reservations made durable by successful store rounds.
	// # TYPE allot_store_reservations_total counter
	// allot_store_reservations_total{engine="public"} 0
	// # HELP allot_store_round_duration_seconds Time of each store round's Save, failed ones included.
	// # TYPE allot_store_round_duration_seconds histogram
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.0001"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.00025"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.0005"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.001"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.0025"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.005"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.01"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.025"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.05"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.1"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.25"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="0.5"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="1"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="2.5"} 0
	// allot_store_round_duration_seconds_bucket{engine="public",le="+Inf"} 0
	// allot_store_round_duration_seconds_sum{engine="public"} 0
	// allot_store_round_duration_seconds_count{engine="public"} 0
	// # HELP allot_store_rounds_total Store rounds (one synced Save each) that succeeded.
	// # TYPE allot_store_rounds_total counter
	// allot_store_rounds_total{engine="public"} 0
	// # HELP allot_units_granted_total Units granted (counted only with engine.WithCounting).
	// # TYPE allot_units_granted_total counter
	// allot_units_granted_total{engine="public"} 2
}
