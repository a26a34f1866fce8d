// Package bench compares allot's engine with two floors (a bare CAS, and a
// map lookup plus a CAS), the naive mutex-guarded map of the Express
// article, and the Go rate limiters people reach for (golang.org/x/time/rate,
// sethvargo/go-limiter, ulule/limiter, throttled), in one run and on the same
// key sequences; optionally also against Redis.
//
// It is a module of its own so that none of those libraries reach the
// dependency graph of github.com/allot-go/allot. Everything lives in the test
// files; see README.md for how to run it and cmd/report for the report.
package bench
