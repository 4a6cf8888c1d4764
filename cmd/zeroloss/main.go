// Command zeroloss looks after zeroloss queue directories from the command
// line.
//
//	zeroloss lab [--runs N] [--seed S] [--dir D] [--json FILE] [--html FILE]
//	                                the loss lab: what each configuration loses under failures
//	zeroloss bench [--duration D] [--dir D] [--json FILE] [--html FILE]
//	                                Send throughput and latency per flush mode next to raw disk baselines
//	zeroloss inspect [--json] DIR   summary of segments, seqs, record types, torn tail
//	zeroloss verify [--strict] [--spool] DIR  check every checksum and every message's encoding
//	zeroloss follow --dir D --listen unix:PATH|tcp:HOST:PORT [--tls-cert F --tls-key F --tls-ca F] [--flush sync|async]
//	                                run a replication follower until SIGINT or SIGTERM
//	zeroloss help [COMMAND]         usage
//
// inspect and verify only read: they take no lock and change nothing, so they may
// run next to an open queue (whose active segment may then be caught
// mid-write).
//
// Exit status: 0 success, 1 corruption or another error, 2 a usage error (and
// for verify --strict, a torn tail).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

// Exit statuses shared by every subcommand.
const (
	exitOK      = 0 // success
	exitFailure = 1 // corruption found, or an error such as an unreadable directory
	exitUsage   = 2 // bad command line
)

// command is one subcommand. run parses its own flags from args (the
// arguments after the subcommand's name) and returns the exit status.
type command struct {
	name    string
	summary string // one line for the command list
	run     func(args []string, stdout, stderr io.Writer) int
}

// commands lists the subcommands in the order usage shows them. A new
// subcommand lives in its own file and adds one line here.
var commands = []command{
	{"inspect", "print a summary of a queue directory: segments, seqs, record types, torn tail", runInspect},
	{"verify", "check every frame's checksum and every message's encoding", runVerify},
	{"follow", "run a replication follower: keep a copy of a leader queue's log in a directory", runFollow},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches args (without the program name) to a subcommand and returns
// the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			printUsage(stdout)
			return exitOK
		}
		c := lookup(rest[0])
		if c == nil || len(rest) > 1 {
			fmt.Fprintf(stderr, "zeroloss help: want one of the commands below, got %q\n\n", rest)
			printUsage(stderr)
			return exitUsage
		}
		// The command prints its usage, flags included, for -h.
		return c.run([]string{"-h"}, stdout, stdout)
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "zeroloss: unknown command %q\n\n", name)
		printUsage(stderr)
		return exitUsage
	}
	return c.run(rest, stdout, stderr)
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, "zeroloss looks after zeroloss queue directories.\n\n")
	fmt.Fprint(w, "Usage:\n\n  zeroloss <command> [flags] [arguments]\n\nCommands:\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, "\nRun \"zeroloss help <command>\" for a command's flags and exit statuses.\n")
}

// newFlagSet returns the FlagSet of a subcommand. Errors and the usage go to
// stderr; usage is the text printed above the list of flags.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("zeroloss "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprint(stderr, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseArgs parses args with fs and returns the positional arguments. Unlike
// fs.Parse it also takes flags that follow a positional argument ("inspect
// DIR --json"); "--" ends the flags. If the command should stop, ok is false
// and status is its exit status: exitOK after -h, exitUsage after a bad flag
// (fs has then printed the error and the usage).
func parseArgs(fs *flag.FlagSet, args []string) (positional []string, status int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, exitOK, true
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), exitOK, true
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// parseDir parses the arguments of a subcommand that takes exactly one
// directory. On a usage error it prints the problem and the usage.
func parseDir(fs *flag.FlagSet, args []string) (dir string, status int, ok bool) {
	positional, status, ok := parseArgs(fs, args)
	if !ok {
		return "", status, false
	}
	if len(positional) != 1 {
		if len(positional) == 0 {
			fmt.Fprintf(fs.Output(), "%s: missing the queue directory\n\n", fs.Name())
		} else {
			fmt.Fprintf(fs.Output(), "%s: want one queue directory, got %d arguments: %q\n\n", fs.Name(), len(positional), positional)
		}
		fs.Usage()
		return "", exitUsage, false
	}
	return positional[0], exitOK, true
}

// plural returns "1 frame" or "2 frames".
func plural(n int64, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// formatBytes returns n in bytes and, from 1 KiB up, in binary units:
// "196608 bytes (192.0 KiB)".
func formatBytes(n int64) string {
	const units = "KMGTPE"
	s := plural(n, "byte")
	if n < 1024 {
		return s
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%s (%.1f %ciB)", s, v, units[i])
}
