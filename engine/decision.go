package engine

import "time"

// Reason says why a Decision was made.
type Reason uint8

const (
	// Undecided is the zero Reason: that of the empty Decision returned
	// beside an error, which decided nothing.
	Undecided Reason = iota
	// OK: the units were granted.
	OK
	// Exhausted: a limit of the key has too few units left.
	Exhausted
	// Revoked: the key was revoked (or its rotation grace ended).
	Revoked
	// UnknownKey: no such key is registered.
	UnknownKey
)

var reasonNames = [...]string{Undecided: "undecided", OK: "ok", Exhausted: "exhausted", Revoked: "revoked", UnknownKey: "unknown_key"}

// String returns "undecided", "ok", "exhausted", "revoked" or "unknown_key".
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Decision is the outcome of a Consume. A denial is a Decision with Allowed
// false, not an error.
//
// Limit, Remaining, RetryAfter and ResetAfter describe the key's tightest
// limit: when granted, the limit with the fewest units left; when denied for
// exhaustion, the denying limit that frees up last.
type Decision struct {
	// Allowed reports whether the units were granted (Reason == OK).
	Allowed bool
	// Reason says why.
	Reason Reason
	// Limit is the quota of the tightest limit (for a Rate limit, its burst).
	Limit int64
	// Remaining is the number of units that limit has left after this call.
	Remaining int64
	// RetryAfter, on an Exhausted denial, is how long until the same request
	// could be granted. It is 0 when waiting would not help: a Credits limit
	// never refills by itself, and a request larger than a limit's quota
	// never fits.
	RetryAfter time.Duration
	// ResetAfter is how long until the tightest limit is back to its full
	// quota: the end of the window, or the time a Rate limit's bucket is full
	// again. It is 0 for Credits, which never reset by themselves.
	ResetAfter time.Duration
	// LimitIndex is the position, in the key's limits, of the limit that
	// Limit, Remaining, RetryAfter and ResetAfter describe.
	LimitIndex int

	// What Refund needs to give a grant back: its units, the time it was
	// counted at (0 if it read no clock), and the state of the key it was
	// counted in.
	n, at int64
	st    *keyState
}

// Granted returns the units the Decision granted: 0 for a denial.
func (d Decision) Granted() int64 { return d.n }

// LimitStatus is the state of one limit of a key.
type LimitStatus struct {
	// Limit is the limit as registered (or as last changed).
	Limit Limit
	// Remaining is the number of units it would grant now.
	Remaining int64
	// ResetAfter is how long until it is back to its full quota (0 for
	// Credits).
	ResetAfter time.Duration
}

// Status is a key's state, read without consuming.
type Status struct {
	// Revoked reports whether Consume of this key is denied as Revoked.
	Revoked bool
	// RotatedOut reports whether the key was rotated out by Rotate; it
	// draws on the new key's counters until GraceUntil.
	RotatedOut bool
	// GraceUntil is when a rotated-out key stops working.
	GraceUntil time.Time
	// Limits holds one entry per limit, in registration order.
	Limits []LimitStatus
}
