package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
)

var inspectCmd = &command{
	name:  "inspect",
	args:  "[--json] [--at TIME] DIR",
	short: "list the keys of a store directory",
	long: `
Inspect lists the keys of the store in DIR, by ID (the hex SHA-256 of the
API key: the store never holds a raw key), in the order of their IDs: one
line per limit, with the units it would grant and the time until it is
full again, and the key's state: active, revoked, or rotated (to the key
it went to, until its grace ends).

The numbers are those a restart would find: after the application's
clean Close they are exact; after a crash, or for a store that a running
engine in lease mode wrote, every reserved unit counts as spent.

DIR is read through a private copy, with every check that persist.Open
makes, and never written. A directory that a running process holds is
refused (exit status 1).

With --json the output is one JSON object: "store" (id, generation,
records) and "keys", each with its full "id", "revoked", "rotated_out",
"rotated_to" and "grace_until" (for a key rotated out), and "limits": kind,
name, quota (the credits, window quota or rate burst), period (of a window
or a rate), rate (n of a rate), location (of a month), remaining and
reset_after.

Example:

	$ allot inspect /var/lib/myapp/quotas
	ID                STATE    LIMIT                      REMAINING  FULL IN
	1f0c3a9be2d84c71  active   credits: 1000 credits      963        -
	4a7d0e55c1b29f08  revoked  credits: 10 credits        10         -
	...
`,
	run: runInspect,
}

var verifyCmd = &command{
	name:  "verify",
	args:  "DIR|FILE",
	short: "check a store directory, or a backup file",
	long: `
Verify checks the store in DIR as persist.Open does (its meta file and
Badger's state, the MANIFEST, every table's checksums, the record counts),
decodes every record, and loads them all into an engine as the
application's engine.New would. It prints a summary and exits with status
0 if the store is sound; otherwise it says what is wrong on stderr and
exits with status 1. DIR is read through a private copy and never written.

Given a FILE (a backup of allot backup or (*persist.Store).Backup), it
checks the backup as restore does before it writes anything: the header,
the SHA-256 sum, and every record.

Example:

	$ allot verify /var/lib/myapp/quotas
	/var/lib/myapp/quotas: sound: store 5d41402abc4b2a76..., generation 1234, 2 records (1 revoked, 0 rotated out)
`,
	run: runVerify,
}

// loaded is a store's keys as an engine sees them.
type loaded struct {
	info    persist.Info
	keys    []engine.KeyInfo
	rotated map[engine.KeyID]engine.KeyID // rotated-out keys: where they went
}

// load reads the store in dir through a snapshot and loads it into an
// engine whose clock reads at (the current time if zero).
func load(dir string, at time.Time) (*loaded, error) {
	snap, err := persist.OpenSnapshot(dir)
	if err != nil {
		return nil, err
	}
	defer snap.Close()
	l := &loaded{info: snap.Info(), rotated: map[engine.KeyID]engine.KeyID{}}
	opts := []engine.Option{engine.WithStore(readOnly{snap, l.rotated})}
	if !at.IsZero() {
		opts = append(opts, engine.WithClock(func() time.Time { return at }))
	}
	eng, err := engine.New(opts...)
	if err != nil {
		return nil, err
	}
	for k := range eng.Keys() {
		l.keys = append(l.keys, k)
	}
	_ = eng.Close() // its last Save fails: the snapshot is read-only
	slices.SortFunc(l.keys, func(a, b engine.KeyInfo) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return l, nil
}

// readOnly is a snapshot as an engine's Store that refuses every write.
type readOnly struct {
	snap    *persist.Snapshot
	rotated map[engine.KeyID]engine.KeyID
}

var errReadOnly = errors.New("allot: the snapshot is read-only")

func (r readOnly) Load(ctx context.Context, fn func(engine.Record) error) error {
	return r.snap.Load(ctx, func(rec engine.Record) error {
		if rec.RotatedTo != nil {
			r.rotated[rec.ID] = *rec.RotatedTo
		}
		return fn(rec)
	})
}

func (readOnly) Save(context.Context, ...engine.Record) error { return errReadOnly }
func (readOnly) Close() error                                 { return nil }

func runInspect(c *cmdEnv, args []string) int {
	fs := c.flags()
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	at := fs.String("at", "", "compute the remaining units at `TIME` (RFC 3339) instead of now")
	pos, code := c.parse(fs, args, 1)
	if code >= 0 {
		return code
	}
	var when time.Time
	if *at != "" {
		var err error
		if when, err = time.Parse(time.RFC3339Nano, *at); err != nil {
			return c.usageError(fs, "--at: %v", err)
		}
	}
	l, err := load(pos[0], when)
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(l.json()); err != nil {
			return c.fail(err)
		}
		return 0
	}
	if err := l.table(c.stdout); err != nil {
		return c.fail(err)
	}
	return 0
}

// idLen is the number of hex digits of an ID that the table shows.
const idLen = 16

func short(id engine.KeyID) string { return hex.EncodeToString(id[:])[:idLen] }

// state describes a key's state in a word or a few.
func (l *loaded) state(k engine.KeyInfo) string {
	var s []string
	if k.Revoked {
		s = append(s, "revoked")
	}
	if k.RotatedOut {
		r := "rotated"
		if to, ok := l.rotated[k.ID]; ok {
			r += " to " + short(to)
		}
		if !k.GraceUntil.IsZero() && k.GraceUntil.Year() < 9999 {
			r += " until " + k.GraceUntil.UTC().Format(time.RFC3339)
		}
		s = append(s, r)
	}
	if len(s) == 0 {
		return "active"
	}
	return strings.Join(s, ", ")
}

func (l *loaded) table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tLIMIT\tREMAINING\tFULL IN")
	for _, k := range l.keys {
		id, state := short(k.ID), l.state(k)
		if len(k.Limits) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\n", id, state)
		}
		for i, ls := range k.Limits {
			full := "-"
			if d := ls.ResetAfter; d >= time.Minute {
				full = d.Round(time.Second).String()
			} else if d > 0 {
				full = d.Round(time.Millisecond).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", id, state, ls.Limit, ls.Remaining, full)
			if i == 0 {
				id, state = "", ""
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d keys %s; %s\n", len(l.keys), l.counts(), l.info)
	return err
}

// counts says how many keys are revoked and rotated out.
func (l *loaded) counts() string {
	revoked, rotated := 0, 0
	for _, k := range l.keys {
		if k.Revoked {
			revoked++
		}
		if k.RotatedOut {
			rotated++
		}
	}
	return fmt.Sprintf("(%d revoked, %d rotated out)", revoked, rotated)
}

type storeJSON struct {
	ID         string `json:"id"`
	Generation uint64 `json:"generation"`
	Records    uint64 `json:"records"`
}

type keyJSON struct {
	ID         string      `json:"id"`
	Revoked    bool        `json:"revoked"`
	RotatedOut bool        `json:"rotated_out"`
	RotatedTo  string      `json:"rotated_to,omitempty"`
	GraceUntil string      `json:"grace_until,omitempty"`
	Limits     []limitJSON `json:"limits"`
}

type limitJSON struct {
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Quota      int64  `json:"quota"`
	Period     string `json:"period,omitempty"`
	Rate       int64  `json:"rate,omitempty"`
	Location   string `json:"location,omitempty"`
	Remaining  int64  `json:"remaining"`
	ResetAfter string `json:"reset_after"`
}

func (l *loaded) json() any {
	keys := make([]keyJSON, 0, len(l.keys))
	for _, k := range l.keys {
		o := keyJSON{ID: hex.EncodeToString(k.ID[:]), Revoked: k.Revoked, RotatedOut: k.RotatedOut, Limits: make([]limitJSON, 0, len(k.Limits))}
		if k.RotatedOut {
			o.GraceUntil = k.GraceUntil.UTC().Format(time.RFC3339Nano)
			if to, ok := l.rotated[k.ID]; ok {
				o.RotatedTo = hex.EncodeToString(to[:])
			}
		}
		for _, ls := range k.Limits {
			lim := ls.Limit
			lj := limitJSON{Kind: lim.Kind().String(), Name: lim.Name(), Quota: lim.Quota(), Rate: lim.RateN(), Remaining: ls.Remaining, ResetAfter: ls.ResetAfter.String()}
			if lim.Period() > 0 {
				lj.Period = lim.Period().String()
			}
			if loc := lim.Location(); loc != nil {
				lj.Location = loc.String()
			}
			o.Limits = append(o.Limits, lj)
		}
		keys = append(keys, o)
	}
	return struct {
		Store storeJSON `json:"store"`
		Keys  []keyJSON `json:"keys"`
	}{storeJSON{hex.EncodeToString(l.info.ID[:]), l.info.Generation, l.info.Records}, keys}
}

func runVerify(c *cmdEnv, args []string) int {
	fs := c.flags()
	pos, code := c.parse(fs, args, 1)
	if code >= 0 {
		return code
	}
	path := pos[0]
	fi, err := os.Stat(path)
	if err != nil {
		return c.fail(err)
	}
	if fi.Mode().IsRegular() {
		f, err := os.Open(path)
		if err != nil {
			return c.fail(err)
		}
		defer f.Close()
		info, err := persist.CheckBackup(f)
		if err != nil {
			return c.fail(fmt.Errorf("%s: %w", path, err))
		}
		fmt.Fprintf(c.stdout, "%s: sound backup: %s\n", path, info)
		return 0
	}
	l, err := load(path, time.Time{})
	if err != nil {
		return c.fail(err)
	}
	if uint64(len(l.keys)) != l.info.Records {
		return c.fail(fmt.Errorf("%s: the store holds %d records, the engine loaded %d keys", path, l.info.Records, len(l.keys)))
	}
	fmt.Fprintf(c.stdout, "%s: sound: %s %s\n", path, l.info, l.counts())
	return 0
}
