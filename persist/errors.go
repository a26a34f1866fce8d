package persist

import (
	"errors"

	"github.com/allot-go/allot/persist/internal/codec"
)

// Sentinel errors of package persist. Errors from the store reach engine
// callers wrapped in engine.ErrStore, and still match these with errors.Is.
// Errors of Save never mean that a record was half written: a Save lands
// whole or not at all, and one that failed may still have landed.
var (
	// ErrLocked is returned by Open when another process (or another Open
	// in this one) holds the directory.
	ErrLocked = errors.New("allot: store directory is in use by another process")
	// ErrCorrupt reports a record or file that cannot be read. Open never
	// treats an unreadable record as a fresh key.
	ErrCorrupt = codec.ErrCorrupt
	// ErrVersion reports a store written in a format this version does not
	// know.
	ErrVersion = codec.ErrVersion
	// ErrUnsupported reports a value the store cannot keep, such as a
	// PerMonthIn location that time.LoadLocation cannot load back.
	ErrUnsupported = codec.ErrUnsupported
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("allot: store closed")

	// ErrNoSpace reports a filesystem with less free space than the store
	// needs to write safely (see WithFreeSpaceReserve). Open and Close
	// refuse, and Save writes nothing, until there is room again; then the
	// store goes on by itself.
	ErrNoSpace = errors.New("allot: not enough free space for the store")
	// ErrUnwritable reports a store directory that cannot be written (a
	// read-only mount, permissions, an immutable flag). Save writes nothing
	// until it can be written again; then the store goes on by itself.
	ErrUnwritable = errors.New("allot: store directory cannot be written")
	// ErrRemoved reports a store directory that was removed or replaced
	// (or whose files were deleted) while the store was open. The store's
	// records went with it: every later Save fails, and Close leaves
	// Badger's files alone. Restore the directory and open it again.
	ErrRemoved = errors.New("allot: store directory was removed")
	// ErrFailed reports that Badger failed a write in a way it does not
	// recover from (it lost its memtable, and its next write would end the
	// process): every later Save fails. Close the store and open it again.
	ErrFailed = errors.New("allot: store failed")
)
