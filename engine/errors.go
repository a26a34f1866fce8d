package engine

import (
	"errors"
	"strings"
)

// Sentinel errors. Every error the engine returns matches one of these with
// errors.Is; the message of a wrapped error adds the detail.
var (
	// ErrClosed is returned by every call on an engine after Close.
	ErrClosed = errors.New("allot: engine closed")
	// ErrInvalidKey reports an empty key or one longer than MaxKeyLen bytes.
	ErrInvalidKey = errors.New("allot: invalid key")
	// ErrInvalidAmount reports a non-positive amount, or one whose sum with a
	// stored value would overflow.
	ErrInvalidAmount = errors.New("allot: invalid amount")
	// ErrInvalidLimit reports a limit with a non-positive or too large quota,
	// period or burst, a bad name, or a bad set of limits.
	ErrInvalidLimit = errors.New("allot: invalid limit")
	// ErrInvalidOption reports a bad engine option.
	ErrInvalidOption = errors.New("allot: invalid option")
	// ErrKeyExists is returned by Register and Rotate for a key that is
	// already registered.
	ErrKeyExists = errors.New("allot: key already registered")
	// ErrUnknownKey is returned by administrative calls on a key that was
	// never registered. (Consume reports an unknown key as a Decision.)
	ErrUnknownKey = errors.New("allot: unknown key")
	// ErrKeyRevoked is returned by Rotate for a revoked key.
	ErrKeyRevoked = errors.New("allot: key revoked")
	// ErrRotated is returned by SetLimits, TopUp and Rotate for a key that was
	// rotated out: its counters now belong to the key it was rotated to.
	ErrRotated = errors.New("allot: key was rotated out")
	// ErrNoCredits is returned by TopUp for a key without a Credits limit.
	ErrNoCredits = errors.New("allot: key has no credits limit")
	// ErrRotationChain is returned by Rotate when the key ends a chain of
	// MaxRotationChain rotations still in their grace.
	ErrRotationChain = errors.New("allot: rotation chain too long")
	// ErrClock reports a clock reading outside [MinTime, MaxTime).
	ErrClock = errors.New("allot: clock out of range")
	// ErrStore wraps a failure of the engine's Store.
	ErrStore = errors.New("allot: store failed")
	// ErrStoreInUse is returned by New for a Store that serves another
	// engine, until that engine is closed: two engines on one Store
	// would each take the other's reservations for their own.
	ErrStoreInUse = errors.New("allot: the store serves another engine")
)

// storeError is a Store's error wrapped in ErrStore. It reads
// "allot: store failed: <op>: <the store's error>", with the store's own
// "allot: " prefix left out, so that the prefix appears once; errors.Is
// matches both ErrStore and the store's error.
type storeError struct {
	op  string // "" if none
	err error
}

func (e *storeError) Error() string {
	msg := strings.TrimPrefix(e.err.Error(), "allot: ")
	if e.op != "" {
		msg = e.op + ": " + msg
	}
	return "allot: store failed: " + msg
}

func (e *storeError) Unwrap() []error { return []error{ErrStore, e.err} }

// wrapStore wraps err, from the Store, in ErrStore.
func wrapStore(op string, err error) error { return &storeError{op: op, err: err} }
