package redisstore

import (
	"errors"

	"github.com/allot-go/allot/engine"
)

// Sentinel errors. The engine wraps a Store's errors in engine.ErrStore, so
// a Consume that fails on one of these matches both.
var (
	// ErrNotInitialized is returned by New for a Redis without the marker
	// Initialize writes: a new deployment, or a Redis that lost its data.
	ErrNotInitialized = errors.New("allot: redis holds no allot marker: initialize a new deployment with redisstore.Initialize, or restore the data Redis lost")
	// ErrLost is returned by every call once the marker New found is gone
	// or changed: Redis came back without its data. The store refuses to
	// serve, so that no quota is handed out again, until an operator
	// restores the data or initializes Redis again and restarts.
	ErrLost = errors.New("allot: redis lost its data (the marker is gone); refusing to serve")
	// ErrCorrupt reports a value in Redis that does not decode.
	ErrCorrupt = errors.New("allot: redis holds a damaged value")
	// ErrClosed is returned after Close.
	ErrClosed = engine.ErrClosed
	// ErrInvalidOption reports a bad option of New.
	ErrInvalidOption = errors.New("allot: invalid redis store option")
)
