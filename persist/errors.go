package persist

import "errors"

// Sentinel errors of package persist. Errors from the store reach engine
// callers wrapped in engine.ErrStore, and still match these with errors.Is.
var (
	// ErrLocked is returned by Open when another process (or another Open
	// in this one) holds the directory.
	ErrLocked = errors.New("allot: store directory is in use by another process")
	// ErrCorrupt reports a record or file that cannot be read. Open never
	// treats an unreadable record as a fresh key.
	ErrCorrupt = errors.New("allot: store is damaged")
	// ErrVersion reports a store written in a format this version does not
	// know.
	ErrVersion = errors.New("allot: store format version unknown")
	// ErrUnsupported reports a value the store cannot keep, such as a
	// PerMonthIn location that time.LoadLocation cannot load back.
	ErrUnsupported = errors.New("allot: value cannot be stored")
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("allot: store closed")
)
