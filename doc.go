// Package allot enforces per-API-key quotas inside one Go process: correctly
// under any concurrency, fast, and durably on local disk, without Redis.
//
// A service that checks "does this key have quota left?" and decrements it
// later lets two parallel requests both take the last unit, and lets a key
// revoked between the check and the work get through. allot makes the check,
// the revocation test and the decrement one atomic step.
//
// Install it with
//
//	go get github.com/allot-go/allot@latest
//
// (Go 1.26 or newer). The package's QuickStart example is the README's
// quick start.
//
// # Packages
//
//   - [github.com/allot-go/allot/engine]: the API. Keys, limits (Credits,
//     PerWindow, PerMonth, Rate), Consume, Refund, Revoke, Rotate, TopUp,
//     SetLimits, Status. Imports the standard library, shard and xsync.
//   - [github.com/allot-go/allot/shard]: the engine's building blocks, the
//     lock-striped map with lock-free lookups and cache-line padded
//     counters. No I/O, no policy, and not a general-purpose map.
//   - github.com/allot-go/allot/persist: a Badger store the engine writes
//     through its Store interface. In-memory users never link Badger.
//   - [github.com/allot-go/allot/httpadapter]: net/http middleware (401 and
//     429 with RateLimit headers, refunds on 5xx, revocation drain);
//     httpadapter/ginadapter: the same for Gin.
//
// # Guarantees
//
//  1. No over-grant, ever: under any number of goroutines, a key never gets
//     more units than its limits allow.
//  2. Linearizable revocation: once Revoke returns, no Consume of the key
//     succeeds.
//  3. Fast: for a key with one limit, Consume is a lookup in a map whose
//     reads take no lock, then one compare-and-swap on a 64-bit word that
//     holds both the counter and the revoked flag. No allocation, no lock.
//  4. Nothing is lost on a clean shutdown (Close); a crash loses a bounded,
//     documented number of units and never gains any.
//  5. No raw API key is written to disk: a Store sees SHA-256 digests.
//
// # Algorithms
//
// Credits is a balance that only TopUp refills. PerWindow counts units in
// fixed windows aligned to the Unix epoch; PerMonth in calendar months of a
// time zone; the window's index and its count share one word, so rollover is
// part of the same CAS. Rate is GCRA: the theoretical arrival time (one
// int64) moves forward by one emission interval per unit, and a request is
// granted if it stays within the burst of now. A clock that steps back never
// grants twice: a window stays current and an arrival time stays where it
// was. Time comes from the monotonic clock, or from engine.WithClock in tests.
package allot
