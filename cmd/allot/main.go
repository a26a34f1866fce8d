// Command allot looks after the data directories of allot's persist
// package: it lists the keys of a store, checks a store or a backup, backs
// a store up and restores it, and makes new API keys.
//
//	allot inspect [--json] [--at TIME] DIR
//	allot verify DIR|FILE
//	allot backup [--force] DIR FILE
//	allot restore FILE DIR
//	allot keygen [--prefix P]
//	allot help [COMMAND]
//
// It reads a directory through a private copy (persist.OpenSnapshot) and
// never writes it; restore writes only into an empty or new directory.
// A directory that a running process holds cannot be read by another
// process (Badger's lock), so inspect, verify and backup refuse it: a
// running application backs its store up with (*persist.Store).Backup,
// which writes the same format as allot backup.
//
// Output goes to stdout, diagnostics to stderr. The exit status is 0 for
// success, 1 for a failure (a damaged store, a directory in use), and 2
// for a usage error.
//
// Install it with
//
//	go install github.com/allot-go/allot/cmd/allot@latest
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// stdin is where restore reads a backup named "-".
var stdin io.Reader = os.Stdin

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// command is a subcommand: its synopsis, its help, and what runs it.
type command struct {
	name, args, short, long string
	run                     func(c *cmdEnv, args []string) int
}

var commands []*command

func init() {
	commands = []*command{inspectCmd, verifyCmd, backupCmd, restoreCmd, keygenCmd}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

const usageHead = `allot looks after the data directories of allot's persist package.

Usage:

	allot <command> [arguments]

Commands:

`

const usageTail = `
Run 'allot help <command>' or 'allot <command> -h' for the details of one.
Exit status: 0 success, 1 failure, 2 usage error.
`

func usage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	for _, c := range commands {
		fmt.Fprintf(w, "\t%-8s %s\n", c.name, c.short)
	}
	fmt.Fprintf(w, "\t%-8s %s\n", "help", "show this help, or a command's")
	fmt.Fprint(w, usageTail)
}

// run is the command with its arguments (without the program's name); it
// returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch name := args[0]; name {
	case "help", "-h", "-help", "--help":
		if name != "help" || len(args) == 1 {
			usage(stdout)
			return 0
		}
		if len(args) > 2 {
			fmt.Fprintln(stderr, "usage: allot help [command]")
			return 2
		}
		c := lookup(args[1])
		if c == nil {
			fmt.Fprintf(stderr, "allot help %s: unknown command; run 'allot help'\n", args[1])
			return 2
		}
		c.usage(stdout, nil)
		return 0
	default:
		c := lookup(name)
		if c == nil {
			fmt.Fprintf(stderr, "allot %s: unknown command\nRun 'allot help' for usage.\n", name)
			return 2
		}
		return c.run(&cmdEnv{cmd: c, stdout: stdout, stderr: stderr}, args[1:])
	}
}

func (c *command) usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: allot %s %s\n\n%s\n", c.name, c.args, strings.TrimSpace(c.long))
	if fs == nil {
		fs = flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.run(&cmdEnv{cmd: c, describe: fs}, nil)
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// cmdEnv is what a command runs with.
type cmdEnv struct {
	cmd            *command
	stdout, stderr io.Writer
	// describe, if set, asks the command only to declare its flags in it
	// (for its help) and return.
	describe *flag.FlagSet
}

// flags returns the command's flag set; parse parses args with it.
func (c *cmdEnv) flags() *flag.FlagSet {
	if c.describe != nil {
		return c.describe
	}
	fs := flag.NewFlagSet(c.cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses args with fs, flags before, between or after the
// positional arguments (up to "--"), and checks their number. It returns
// the positional arguments, and an exit status >= 0 if the command is
// done: 0 for -h (its help on stdout), 2 for a usage error (on stderr).
// A command only declaring its flags (describe) is done too.
func (c *cmdEnv) parse(fs *flag.FlagSet, args []string, nargs int) ([]string, int) {
	if c.describe != nil {
		return nil, 0
	}
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			c.cmd.usage(c.stdout, fs)
			return nil, 0
		}
		if err != nil {
			return nil, c.usageError(fs, "%v", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	if len(pos) != nargs {
		return nil, c.usageError(fs, "want %d argument%s, got %d", nargs, plural(nargs), len(pos))
	}
	return pos, -1
}

// usageError reports a usage error, with the command's synopsis, and
// returns 2.
func (c *cmdEnv) usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(c.stderr, "allot %s: %s\nusage: allot %s %s\nRun 'allot %s -h' for details.\n", c.cmd.name, fmt.Sprintf(format, args...), c.cmd.name, c.cmd.args, c.cmd.name)
	return 2
}

// fail reports a failure on stderr and returns 1.
func (c *cmdEnv) fail(err error) int {
	fmt.Fprintf(c.stderr, "allot: %s\n", strings.TrimPrefix(err.Error(), "allot: "))
	return 1
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
