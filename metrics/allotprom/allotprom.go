// Package allotprom exports an engine's Stats to Prometheus.
//
// NewCollector returns a prometheus.Collector that reads eng.Stats() when it
// is scraped, in the style of go-redis's redisprometheus: the engine counts
// on its own (striped counters, see engine.Stats), nothing is updated on the
// request path for Prometheus, and a program that does not import this
// package does not link client_golang.
//
//	eng, _ := engine.New(engine.WithCounting())
//	prometheus.MustRegister(allotprom.NewCollector(eng))
//	http.Handle("/metrics", promhttp.Handler())
//
// # Metrics
//
// Counters (they only grow, from the engine's start):
//
//	allot_decisions_total{reason}           Consume and Admit calls that returned a Decision, by reason:
//	                                        "ok", "exhausted", "revoked", "unknown_key"
//	allot_units_granted_total               units granted (the sum of the grants' amounts)
//	allot_store_rounds_total                store rounds: Saves (one synced transaction each) that succeeded
//	allot_store_records_total               records those rounds wrote
//	allot_store_reservations_total          lease reservations those rounds made durable
//	allot_store_errors_total                store rounds whose Save failed
//
// A histogram:
//
//	allot_store_round_duration_seconds      the time of each round's Save, failed ones included
//
// Gauges (read at scrape time):
//
//	allot_store_last_error_timestamp_seconds  Unix time of the last failed round; 0 if none failed
//	allot_keys{state}                       keys held, by state: "active", "revoked",
//	                                        "rotated_out" (in or past their grace, until
//	                                        forgotten) and "recovered" (loaded from the
//	                                        store and not yet seen under their raw key
//	                                        since the restart); each key is in one state
//	allot_requests_in_flight                requests admitted by Admit (the middleware) and not yet done
//
// The two decision counters need engine.WithCounting(): without it the
// engine does not count its decisions and they stay at 0. Every other figure
// is always kept.
//
// There are no per-key labels, and no option adds them: an API key (or its
// ID) as a label value would give each key a time series of its own, an
// unbounded cardinality (Limitador turned its per-limit label off by default
// for this reason). Per-key figures are for engine.Status, not for metrics.
//
// A scrape costs what eng.Stats() costs: a walk over the engine's key map
// (without stopping Consume), so its time grows with the number of keys.
package allotprom

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/allot-go/allot/engine"
)

// Option configures a Collector.
type Option func(*config)

type config struct {
	namespace string
	labels    prometheus.Labels
}

// WithNamespace puts namespace and an underscore before every metric's name:
// WithNamespace("billing") exports billing_allot_decisions_total and so on.
// Default: none. An empty namespace is ignored.
func WithNamespace(namespace string) Option {
	return func(c *config) { c.namespace = namespace }
}

// WithConstLabels adds labels, with fixed values, to every metric of the
// Collector: to tell apart the engines of one process, for example
// WithConstLabels(prometheus.Labels{"engine": "public"}). They must not be
// named "reason" or "state", which the collector uses: registering such a
// Collector fails.
func WithConstLabels(labels prometheus.Labels) Option {
	return func(c *config) {
		if c.labels == nil {
			c.labels = prometheus.Labels{}
		}
		for k, v := range labels {
			c.labels[k] = v
		}
	}
}

// Collector is the prometheus.Collector of an engine's Stats.
type Collector struct {
	eng *engine.Engine

	decisions, units, shadow            *prometheus.Desc
	rounds, records, reservations, errs *prometheus.Desc
	roundDuration, lastError            *prometheus.Desc
	keys, inFlight                      *prometheus.Desc
}

// The values of the reason label of allot_decisions_total, as
// engine.Reason's String gives them.
var reasons = [...]string{engine.OK.String(), engine.Exhausted.String(), engine.Revoked.String(), engine.UnknownKey.String()}

// NewCollector returns a Collector of eng's Stats (eng must not be nil),
// read at each scrape.
// Register it once per engine (prometheus.MustRegister, or a Registry of your
// own); give each engine of a process its own const labels
// (WithConstLabels), or registration fails as a duplicate.
func NewCollector(eng *engine.Engine, opts ...Option) prometheus.Collector {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(c.namespace, "allot", name), help, labels, c.labels)
	}
	return &Collector{
		eng:           eng,
		decisions:     desc("decisions_total", "Consume and Admit calls that returned a decision, by reason (counted only with engine.WithCounting).", "reason"),
		units:         desc("units_granted_total", "Units granted (counted only with engine.WithCounting)."),
		shadow:        desc("shadow_denied_total", "Exhausted decisions let through in shadow mode (httpadapter.WithShadow); also counted in decisions_total{reason=\"exhausted\"} (counted only with engine.WithCounting)."),
		rounds:        desc("store_rounds_total", "Store rounds (one synced Save each) that succeeded."),
		records:       desc("store_records_total", "Records written by successful store rounds."),
		reservations:  desc("store_reservations_total", "Lease reservations made durable by successful store rounds."),
		errs:          desc("store_errors_total", "Store rounds whose Save failed."),
		roundDuration: desc("store_round_duration_seconds", "Time of each store round's Save, failed ones included."),
		lastError:     desc("store_last_error_timestamp_seconds", "Unix time of the last failed store round, 0 if none failed."),
		keys:          desc("keys", "Keys held by the engine, by state.", "state"),
		inFlight:      desc("requests_in_flight", "Requests admitted by Admit and not yet done."),
	}
}

// Describe sends the descriptors of every metric the Collector exports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range [...]*prometheus.Desc{c.decisions, c.units, c.shadow, c.rounds, c.records, c.reservations, c.errs, c.roundDuration, c.lastError, c.keys, c.inFlight} {
		ch <- d
	}
}

// Collect reads the engine's Stats and sends its metrics. It works on a
// closed engine too (the figures stay as Close left them).
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.eng.Stats()
	send := func(d *prometheus.Desc, m prometheus.Metric, err error) {
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err) // the registry reports it
		}
		ch <- m
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
		send(d, m, err)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...)
		send(d, m, err)
	}
	for i, v := range [...]int64{s.Granted, s.Exhausted, s.Revoked, s.UnknownKey} {
		counter(c.decisions, v, reasons[i])
	}
	counter(c.units, s.UnitsGranted)
	counter(c.shadow, s.ShadowDenied)
	counter(c.rounds, s.Rounds)
	counter(c.records, s.Records)
	counter(c.reservations, s.Reservations)
	counter(c.errs, s.StoreErrors)

	h := s.RoundLatency
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		buckets[b] = h.Counts[i]
	}
	m, err := prometheus.NewConstHistogram(c.roundDuration, h.Count, h.Sum, buckets)
	send(c.roundDuration, m, err)

	last := 0.0
	if !s.LastStoreErrorAt.IsZero() {
		last = float64(s.LastStoreErrorAt.UnixNano()) / 1e9
	}
	gauge(c.lastError, last)
	gauge(c.keys, float64(s.Keys-s.RevokedKeys), "active")
	gauge(c.keys, float64(s.RevokedKeys), "revoked")
	gauge(c.keys, float64(s.RotatedOut), "rotated_out")
	gauge(c.keys, float64(s.Recovered), "recovered")
	gauge(c.inFlight, float64(s.InFlight))
}
