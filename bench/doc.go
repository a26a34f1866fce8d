// Package bench compares allot's engine with floors (a bare CAS; a map
// lookup plus a CAS, with and without a clock read; the same with
// xsync.MapOf), a naive check-then-decrement map under a mutex, and the Go
// rate limiters people reach for (golang.org/x/time/rate,
// sethvargo/go-limiter, ulule/limiter, throttled), in one run and on the
// same key sequences; optionally also against Redis. allot runs with a key
// of each limit kind (Credits, Rate, PerWindow, and two limits at once)
// beside the peers' limiters of the same kind.
//
// It is a module of its own so that none of those libraries reach the
// dependency graph of github.com/allot-go/allot. Everything lives in the test
// files; see README.md for how to run it and cmd/report for the report.
package bench
