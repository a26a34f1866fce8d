// Package engine enforces per-API-key quotas: validation, revocation and the
// decrement are one atomic step, exact under any number of goroutines.
//
//	eng, err := engine.New()                           // in memory; engine.WithStore(st) to persist
//	err = eng.Register(ctx, "key", engine.Credits(100)) // limits: Credits, PerWindow, PerMonth, Rate
//	d, err := eng.Consume(ctx, "key", 1)               // a denial is a Decision, an error is bad input or a failure
//	err = eng.Refund(ctx, "key", d, 1)                 // give a grant back
//	err = eng.Revoke(ctx, "key")                       // linearizable: no Consume succeeds after it returns
//
// Every error matches one of the sentinels in errors.go with errors.Is, or
// wraps ctx.Err(). All methods are safe for concurrent use.
//
// # Contexts
//
// Every administrative call (Register, Revoke, Rotate, TopUp, SetLimits,
// RevokeAndWait) and Refund honours its ctx: one already done makes the
// call return at once with an error matching ctx.Err() and change nothing.
// If ctx ends while the call's write waits for the store, the write is
// taken back if no round has handed it to the store yet, and the call
// returns ctx's error having changed nothing; once the store has it, the
// call waits for the outcome, so that a change that may land is never
// reported as not made. Revoke is the exception that keeps its promise: the
// revocation takes effect in memory before the write, and stays.
//
// Consume and Admit decide without looking at ctx on the path where they
// never wait (the hot path stays a lookup and a CAS). They stop waiting when
// ctx ends: for a reservation (nothing was taken yet) or, in exact mode, for
// their grant to be durable (the grant is then given back before they
// return). A Consume or Admit that returns an error has taken nothing.
// Status never waits for the store.
//
// # Design note: the engine's invariants
//
// Each invariant below is stated once, with the test that guards it. Change
// the engine only in ways that keep them, and keep this note true.
//
// I1. One word per limit, flags in the first (word.go; the value's
// encoding in internal/quota). The state of a limit fits in 62 bits and
// only grows as units are granted: Credits hold the units spent, windows a
// window tag and the units used in it, Rate the theoretical arrival time.
// The word of limit 0 also holds the revoked and sealed bits, so "is it
// revoked?" and "take n units" are one CAS. Guarded by TestWordLayout,
// quota.TestValueLayout, TestExactUnderContention,
// TestRevokeIsLinearizable.
//
// I2. Seal and replace. No administrative call changes a published entry in
// place, apart from the revoked bit, counters and lease marks. It takes the
// key's stripe lock, seals the word (a Consume that sees the seal waits on
// the stripe lock and looks the key up again), builds a new entry, makes it
// durable, and publishes it; on failure it unseals and changes nothing.
// Guarded by TestChangesRacingConsumes, TestStoreFailureChangesNothing,
// TestLinearizable.
//
// I3. What is spent stays spent. SetLimits carries each limit's spending to
// the new limit of the same name and kind (Credits: units spent; Rate: its
// debt, unclamped; windows: the count of the window that holds now), through
// any sequence of changes. Guarded by TestFindingSetLimitsKeepsSpending and
// TestModel.
//
// I4. Refunds go back where they came from. A Decision carries its grant's
// units, time and key state (keyState.origin, kept by changes that keep the
// limits); Refund gives nothing back across a SetLimits, nor to a window
// that is not the one the grant was counted in. Guarded by
// TestFindingRefundDoesNotCrossWindows, the middleware's RefundAcrossWindows
// case, TestModel.
//
// I5. Rotation chains. A rotated-out key is an alias; its chain ends at a
// head, the only entry with counters and a request tracker. consumeAlias
// locks every link's mutex, oldest first, and grants only if no link is
// revoked or past its grace; Revoke of an alias takes its mutex. A head's
// chainInfo bounds the live chain at MaxRotationChain, checked by Rotate.
// Guarded by TestFindingRevokeMiddleOfChain, TestFindingRotationChainLimit,
// TestFindingRevokeAndWaitAfterRestart, TestModel.
//
// I6. Recovered keys. After a restart a record lives under
// recoveredPrefix+ID until a call names the key; promote then moves it under
// the raw key and leaves a forwarding alias. Promotion (and creating a
// tracker) publishes an entry, so it holds the admin lock shared and fails
// after Close, which seals every entry under the admin lock exclusively.
// Guarded by TestFindingCloseRacesFirstUse and the persist crash loops.
//
// I7. Leases (internal/quota/marks.go). With a Store in lease mode a unit is
// granted only below a limit's hard mark, and a hard mark is raised in
// memory only after the record holding it is durable; a restart takes every
// reserved unit as spent. A refund tightens the hard mark; a round that
// lands after the refund moves its new mark by as much. A crash loses at
// most one reservation per limit: MaxChunk units, for Rate at most
// max(burst, 1 s). Guarded by TestLeaseCrashNeverOverGrants,
// TestLeaseRefundIsWritten, TestFindingRefundDuringRoundIsKept,
// TestLinearizable (crash histories), quota.TestReserve.
//
// I8. Committer rounds (commit.go). One goroutine writes to the Store.
// Records of live entries are built when a round starts, from memory, so a
// later round never writes an older state of a key; administrative records
// go whole in one Save. Close writes every key exactly after sealing them,
// but in lease mode it leaves out a key the store holds already as it is
// (durable, recover.go): not queued, no write of it dropped because it was
// sealed, every value at its hard mark, and no Save failed since the
// engine started (a failure may have landed all the same). The committer
// knows the engine only through commitEnv (save, the clock, an iterator of
// the records for Close, the lease options): it never calls back into the
// engine's state. Guarded by TestStoreRoundTrip,
// TestExactModeSurvivesCrash, TestRevokeIsDurableAtOnce,
// TestLeaseOptionsZeroTakesDefaults, TestCloseWritesQueuedRefund,
// TestCloseAfterFailedSaveWritesAll, persist's TestCloseWritesOnlyChanged.
//
// I9. Arithmetic in range. Every value a constructor accepts keeps every
// state inside its word for any time in [MinTime, MaxTime): Rate bursts
// refill within MaxRateSpan, window ends saturate, reservations saturate.
// A time outside the range is refused with ErrClock; durations stay within
// the limit's own period. Guarded by TestOverflowSweep,
// TestFindingHugeRateDoesNotPanic, TestFindingClockOutOfRange, FuzzLimits,
// FuzzAmounts.
//
// I10. Deletion and registrations. Delete seals the key's entry for good,
// writes a deletion record, and only then removes the entry (and a
// promoted key's forwarding entry): a Consume that loaded the entry waits,
// looks again, and finds nothing. Every link and the head of a chain carry
// the chain's registration number (keyState.reg, alias.reg,
// Record.Registration); following a link checks it, so a name deleted and
// registered again is never reached by an old chain. Reset, like SetLimits,
// starts a new origin. With a Store the deletion record removes the key's
// record in the Save's transaction, so a restart never brings the key back.
// Guarded by TestDeleteRacingConsume, TestDeleteInRotationChain,
// TestDeleteAndRegisterAgain, TestResetExact, TestDeleteChurn (and in
// persist by TestDeleteSurvivesKill, TestCrashMix).
//
// I11. Pools (pool.go). With a Store that is a Pool, shared by engines in
// several processes, a value is in the pool's terms, and a unit is granted
// only below a hard mark set from the pool's answer, while the key's entry
// holds it (keyState.until, which the pool's news of the key ends:
// invalidate, under the key's mutex) and while the engine's one lease on
// everything it holds is live (poolLease, counted on the monotonic clock
// from before the Renew that took it, less 1/16; holdLease renews it every
// quarter). A renewal that finds the lease lapsed in the pool lets go of
// every key before it takes the new one, and a reservation asked for before
// a key was let go of gives no hold (keyState.inval). A key with several
// limits, or a rotated-out key, takes its mutex, under which
// applyReservation moves the values and marks together. A key of one limit,
// of any kind, grants by CAS without it (consumePooled): applyReservation
// first drops the hard mark to 0, then moves the word by CAS (recomputed
// from the word it replaces, so no grant is lost), then sets the new mark;
// a Consume that read the old word fails its CAS, one that reads the new
// word sees the new mark or 0. So what the engine may grant is exactly what
// the pool reserved for it and it has not granted. A denial rests on what
// the engine heard of the key for at most its Reservation.Lease
// (keyState.news), then asks the pool again. Revoke returns only after the
// pool says every other holder of the key has let go of it, or has no live
// lease. Guarded, against a real redis-server, by TestSharedCreditsExact,
// TestPooledKeysUnderReservations (Credits, window and Rate keys; chunks
// that outlast a round trip, refunds, and every engine's give-back counted
// exactly), TestProcessesShareOneQuota, TestRevokeAcrossEngines,
// TestRevokeAcrossProcesses (a holder stopped by SIGSTOP: its lease lapses)
// and TestChangesWithoutMessages (every message lost) in
// persist/redisstore.
//
// I12. One engine per Store. New claims its Store (a comparable one: any
// pointer) and Close releases it; New refuses a Store that serves another
// engine with ErrStoreInUse, for two engines on one Store would each write
// over the other's reservations and grant them again. Guarded by
// TestStoreServesOneEngine.
//
// I13. Rotation with a Pool (poolrotate.go, persist/redisstore/rotate.go).
// A chain's counters stay in its first key's pool record; every key of it
// is an entry of its own in each engine, reserving from them, and a
// rotated-out key's entry carries its keyState.link: Consume (consumeMulti:
// such an entry never gets pooledBit, whose lock-free path does not look
// at it) denies it as Revoked from link.until
// on, on the engine's clock, and the pool refuses its reservations once a
// link on its way is revoked or past its grace. Rotate, and Revoke of any
// key of the chain, return only once no other engine can grant on what it
// read before (the pool waits for the reservations granted at older
// versions), and tell this engine's other entries of the chain at once.
// A crash between Rotate's two writes leaves a pointer that reads as
// unknown and grants nothing; the retry finishes it. Guarded, against a
// real redis-server, by TestRotateExact, TestRotateAcrossEngines,
// TestRotateGrace, TestRotateRevokeHead, TestRotateRevokeOldLink,
// TestRotateChain, TestRotateRefused, TestRotateCrashBetweenWrites,
// TestRotateDelete, TestRotateDeleteCrashed and TestRotateCluster in
// persist/redisstore.
//
// The files, from the bottom up. internal/quota: the arithmetic of one limit
// and its lease marks; pure: being below engine it cannot import it, and
// quota.TestImportsStandardLibraryOnly keeps it on the standard library.
// limit.go: Limit, Kind, the bounds and validation. word.go: the flags
// beside a value, and a validated limit as a quota.Limit. decision.go,
// errors.go, options.go (Option, LeaseOptions), store.go (the Store
// interface and Record), keys.go (NewKey, CheckKey). engine.go: the Engine,
// its entries and key states, New, the clock, lookup, Close. chain.go:
// walking rotation chains. consume.go: Consume and its paths (one limit,
// several, an alias). refund.go, status.go. admin.go: changes (seal and
// replace). lifecycle.go: Delete, Reset, listing, calls by ID. admit.go:
// requests in flight. stats.go. commit.go: the committer, which the files
// above feed through commitEnv and which alone calls Save. pool.go: a
// shared store's reservations and changes (sharedRounds, behind the same
// seam); poolrotate.go: Rotate with one. recover.go: load,
// promotion, and the records the committer writes.
package engine
