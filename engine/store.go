package engine

import (
	"context"
	"crypto/sha256"
	"time"
)

// KeyID identifies a key to a Store: the SHA-256 digest of the API key. The
// raw key never leaves the engine's memory.
type KeyID [sha256.Size]byte

// IDOf returns the KeyID of key.
func IDOf(key string) KeyID { return sha256.Sum256([]byte(key)) }

// Record is a key's durable state, as the engine hands it to a Store.
type Record struct {
	// ID is the digest of the key.
	ID KeyID
	// Limits are the key's limits, in order. Empty for a rotated-out key.
	Limits []Limit
	// Counters holds one word per limit, in the engine's own encoding
	// (see word.go); a Store keeps them as opaque numbers.
	Counters []uint64
	// Revoked reports whether the key is revoked.
	Revoked bool
	// RotatedTo, for a key rotated out, is the key that now owns its
	// counters; GraceUntil is when the old key stops working.
	RotatedTo  *KeyID
	GraceUntil time.Time
}

// Store is where an engine keeps its keys across restarts. Package persist
// implements it on Badger; an engine without a Store keeps everything in
// memory.
//
// The engine calls Save for every administrative change (Register, Revoke,
// Rotate, TopUp, SetLimits) before the call returns, and Save must not
// return until the records are durable. Load is called once, by New. Close
// is called once, by the engine's Close, after a last Save.
//
// Implementations must be safe for concurrent use.
type Store interface {
	Load(ctx context.Context, fn func(Record) error) error
	Save(ctx context.Context, recs ...Record) error
	Close() error
}
