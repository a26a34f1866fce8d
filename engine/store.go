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
	// Counters holds one word per limit, in order: what a restart must
	// assume of that limit. A Store keeps them as opaque numbers below
	// 2^62, and returns them unchanged. Their meaning, for a Store that
	// wants to read them (an operator's tool, say):
	//
	//   - Credits: the units spent (the balance is the quota minus this,
	//     and 0 while it exceeds the quota).
	//   - PerWindow, PerMonth: bits 32 to 61 the index of the window the
	//     count belongs to, modulo 2^30 (PerWindow: ns since the Unix epoch
	//     divided by the period; PerMonth: months since January 1970 in the
	//     limit's time zone), bits 0 to 31 the units used in that window.
	//   - Rate: the theoretical arrival time, in ns since the Unix epoch
	//     (the bucket is full when it is not after now).
	//
	// In lease mode the counter is the end of the limit's durable
	// reservation, not its value: a restart takes every reserved unit as
	// spent.
	Counters []uint64
	// Revoked reports whether the key is revoked.
	Revoked bool
	// RotatedTo, for a key rotated out, is the key that now owns its
	// counters; GraceUntil is when the old key stops working.
	RotatedTo  *KeyID
	GraceUntil time.Time
	// Registration tells registrations of one key name apart: a rotated-out
	// key draws on the key it went to only while both carry the same
	// number, so a name deleted and registered again never gives an old
	// chain access to the new registration. 0 for none.
	Registration uint64
	// Deleted, in a Save, asks the Store to remove the record of ID: the
	// key was deleted. Load never returns a deleted record.
	Deleted bool
}

// Store is where an engine keeps its keys across restarts. Package persist
// implements it on Badger; an engine without a Store keeps everything in
// memory.
//
// The engine calls Save for every administrative change (Register, Revoke,
// Rotate, TopUp, SetLimits, Reset, Delete) before the call returns, and Save
// must not return until the records are durable, all of them or none: a
// record with Deleted set removes the key's record instead. Load is called once, by New. Close
// is called once, by the engine's Close, after a last Save.
//
// Implementations must be safe for concurrent use.
type Store interface {
	Load(ctx context.Context, fn func(Record) error) error
	Save(ctx context.Context, recs ...Record) error
	Close() error
}
