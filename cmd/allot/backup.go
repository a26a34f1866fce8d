package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/allot-go/allot/engine"
	"github.com/allot-go/allot/persist"
)

var backupCmd = &command{
	name:  "backup",
	args:  "[--force] DIR FILE",
	short: "back up a store directory to a file",
	long: `
Backup writes a backup of the store in DIR to FILE ("-" for stdout):
Badger's own backup stream, between a header (magic, format version) and
a trailer with the record count and a SHA-256 sum that restore checks. The
file is written beside FILE first and renamed when it is whole; an
existing FILE is refused unless --force is given.

DIR is read through a private copy, with every check of persist.Open,
and never written; a store that Open would refuse is not backed up.

A directory that a running process holds cannot be read by another
process: Badger locks it, for readers too. Backup then fails (exit status
1) and says so. Back a running store up from inside the application
instead, without stopping it, with (*persist.Store).Backup, which writes
the same format:

	info, err := st.BackupFile("quotas.allotbak") // st: the engine's *persist.Store

Example:

	$ allot backup /var/lib/myapp/quotas quotas.allotbak
	quotas.allotbak: store 5d41402a..., generation 1234, 2 records, taken ..., 1210 bytes, sha256 ...
`,
	run: runBackup,
}

var restoreCmd = &command{
	name:  "restore",
	args:  "FILE DIR",
	short: "restore a backup into an empty or new directory",
	long: `
Restore reads the backup in FILE ("-" for stdin) and checks all of it
(header, SHA-256 sum, every record) before it writes anything; then it
loads it into a new directory beside DIR, opens that with every check of
persist.Open, and renames it to DIR. DIR must be empty or missing. Opening
DIR then gives every key exactly the state it had in the backup.

Example:

	$ allot restore quotas.allotbak /var/lib/myapp/quotas-restored
	/var/lib/myapp/quotas-restored: restored store 5d41402a..., generation 1234, 2 records, taken ...
`,
	run: runRestore,
}

var keygenCmd = &command{
	name:  "keygen",
	args:  "[--prefix P]",
	short: "print a new API key",
	long: `
Keygen prints a new random API key of engine.NewKey's format: the prefix,
'_', 30 random base62 characters and a 6-character checksum (about 178
random bits). It only makes the string; register it to give it limits.

Example:

	$ allot keygen --prefix sk_live
	sk_live_2Ct0qGzVnR8uJ1aXkPw5mLd3Ye7HbF0xbso0
`,
	run: runKeygen,
}

func runBackup(c *cmdEnv, args []string) int {
	fs := c.flags()
	force := fs.Bool("force", false, "replace FILE if it exists")
	pos, code := c.parse(fs, args, 2)
	if code >= 0 {
		return code
	}
	dir, file := pos[0], pos[1]
	if file != "-" && !*force {
		if _, err := os.Lstat(file); err == nil {
			return c.fail(fmt.Errorf("%s exists (--force replaces it)", file))
		}
	}
	snap, err := persist.OpenSnapshot(dir)
	if err != nil {
		return c.fail(err)
	}
	defer snap.Close()
	if file == "-" {
		info, err := snap.Backup(c.stdout)
		if err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(c.stderr, "%s backed up: %s\n", dir, info)
		return 0
	}
	info, err := snap.BackupFile(file)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "%s: %s\n", file, info)
	return 0
}

func runRestore(c *cmdEnv, args []string) int {
	fs := c.flags()
	pos, code := c.parse(fs, args, 2)
	if code >= 0 {
		return code
	}
	file, dir := pos[0], pos[1]
	in := stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return c.fail(err)
		}
		defer f.Close()
		in = f
	}
	info, err := persist.Restore(in, dir)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "%s: restored %s\n", dir, info)
	return 0
}

func runKeygen(c *cmdEnv, args []string) int {
	fs := c.flags()
	prefix := fs.String("prefix", "sk", "the key's `prefix`: 1 to 16 characters of [a-z0-9_], not starting or ending with '_'")
	if _, code := c.parse(fs, args, 0); code >= 0 {
		return code
	}
	key, err := engine.NewKey(*prefix)
	if errors.Is(err, engine.ErrInvalidKey) {
		return c.usageError(fs, "--prefix %q: %v", *prefix, err)
	}
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintln(c.stdout, key)
	return 0
}
