package persist

import (
	"log/slog"

	"github.com/dgraph-io/badger/v4"
)

// Option configures Open.
type Option func(*options)

type options struct {
	logger *slog.Logger
	verify bool
	badger func(badger.Options) badger.Options

	acceptLoss bool
	reserve    int64
}

func defaultOptions() options {
	return options{verify: true, reserve: -1}
}

// WithLogger routes Badger's log lines to l (Info and Debug at slog's Debug
// level). Default: Badger's logging is off, apart from nothing at all.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithoutVerify skips the check of every table's footer, index and block
// checksums before Badger opens them. Default: Open verifies, so that a
// damaged table is an error at Open rather than a panic or a misread later.
func WithoutVerify() Option { return func(o *options) { o.verify = false } }

// WithBadgerOptions lets f adjust Badger's options after the store has set
// its own (directory, synced writes, logging). Do not unset SyncWrites or
// set BypassLockGuard: the store's guarantees rest on them.
func WithBadgerOptions(f func(badger.Options) badger.Options) Option {
	return func(o *options) { o.badger = f }
}

// WithAcceptLoss makes Open accept a store that has lost records (Open
// fails otherwise, with an error matching ErrCorrupt that says what it
// found): the store opens as it now stands, and its metadata is written
// anew. A key whose record was lost is unknown again; registering it again
// gives it a full quota, and a revocation that was lost no longer holds.
// Use it only once you have decided that this is acceptable, for example
// after restoring what could be restored. The damage is logged.
func WithAcceptLoss() Option { return func(o *options) { o.acceptLoss = true } }

// WithFreeSpaceReserve sets the free space, in bytes, below which Save
// writes nothing (it fails with ErrNoSpace, and the engine's calls with
// engine.ErrStore) and Close leaves Badger open. Badger writes its
// write-ahead file and its tables through memory maps: on a full
// filesystem, a write to such a map ends the process with SIGBUS. The
// reserve must hold what Badger may write before the next Save is checked:
// a new write-ahead file (twice the memtable), the flush of the current one,
// and compactions. Default: 4 memtables (64 MiB) plus the size of the
// store's tables. 0 turns the check off: then only another process keeps
// the disk from filling up.
func WithFreeSpaceReserve(bytes int64) Option {
	return func(o *options) { o.reserve = max(bytes, 0) }
}
