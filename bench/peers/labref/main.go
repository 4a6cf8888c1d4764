// Command labref puts github.com/tidwall/wal through the loss lab's
// power-loss harness (internal/lab), as a reference next to zeroloss's own
// rows: `zeroloss lab --reference` runs it with `go run`, here, in the
// bench/peers module, so that the library's go.mod never requires
// tidwall/wal.
//
//	go run ./labref [--runs N] [--seed S] [--dir D] [--json FILE]
//
// It prints the lab's table, one row per reference:
//
//	tidwall/wal fsync each                    NoSync false: every Write is
//	                                          write(2) + fsync(2); the
//	                                          directory is never fsynced, so
//	                                          under the model (POSIX) no
//	                                          segment file's entry is durable
//	tidwall/wal fsync each, dir entries kept  the same log, with its files'
//	                                          directory entries treated as
//	                                          durable once seen (what ext4
//	                                          does in practice): the data
//	                                          alone
//
// The child (this program re-executed) writes entries "ID\nBODY" with one
// Log.Write each, from one goroutine (the log has a single writer and
// consecutive indexes), and after each Write, which fsyncs before it
// returns (and fsyncs a full segment before starting the next), reports
// the files it sees and their sizes as durable, then acknowledges the entry.
// After the kill and the simulated power loss, the main count opens the log
// with wal.Open and reads every index (an Open error is a log that refuses
// to open: every acknowledged entry counts as lost); the cross-check parses
// the segment files itself (uvarint length, then the data).
//
// Exit status: 0 the lab ran (whatever it measured), 1 it could not
// measure, 2 a usage error.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/tidwall/wal"

	"github.com/zerolossmq/zeroloss/internal/lab"
)

// walDir is the log's directory within a run directory.
const walDir = "wal"

// segmentSize is tidwall/wal's SegmentSize in the lab: 1 MiB, the size
// zeroloss's runs use, so that runs cross segment boundaries.
const segmentSize = 1 << 20

func main() {
	if lab.IsChild(os.Args[1:]) {
		os.Exit(child(os.Args[1:]))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// references returns the rows labref measures.
func references() []lab.Reference {
	ref := func(name string, dirKept bool) lab.Reference {
		return lab.Reference{
			Name: name,
			Args: []string{"--dir-entries-kept=" + strconv.FormatBool(dirKept)},
			Dir:  walDir,
			Read: readWAL,
			Scan: scanWAL,
		}
	}
	return []lab.Reference{
		ref("tidwall/wal fsync each", false),
		ref("tidwall/wal fsync each, dir entries kept", true),
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("labref", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runs := fs.Int("runs", 10, "runs of each reference")
	seed := fs.Uint64("seed", 0, "seed of the kill points (0: from the clock)")
	dir := fs.String("dir", os.TempDir(), "directory for the run directories")
	minAcks := fs.Int("min-acks", 50, "fewest acknowledged entries before the kill")
	maxAcks := fs.Int("max-acks", 1500, "most acknowledged entries before the kill")
	jsonFile := fs.String("json", "", "also write the report as JSON to `FILE`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *runs < 1 {
		fmt.Fprintf(stderr, "labref: want [--runs N>0] [--seed S] [--dir D] [--json FILE]\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := lab.Options{Runs: *runs, Seed: *seed, Dir: *dir, MinAcks: *minAcks, MaxAcks: *maxAcks}
	rep, err := lab.RunReferences(ctx, opts, references())
	if rep != nil && len(rep.Rows) > 0 {
		if werr := rep.WriteTableAndJSON(stdout, *jsonFile); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "labref: %v\n", err)
		return 1
	}
	return 0
}

// child is the child's side: it writes until it is killed.
func child(args []string) int {
	extra := flag.NewFlagSet(lab.ChildCommand, flag.ContinueOnError)
	dirKept := extra.Bool("dir-entries-kept", false, "report the log's directory entries as durable once seen")
	c, err := lab.NewReferenceChild(args, extra)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go func() {
		time.Sleep(c.Timeout)
		fmt.Fprintf(os.Stderr, "%s: not killed within %v\n", lab.ChildCommand, c.Timeout)
		os.Exit(5)
	}()
	path := filepath.Join(c.Dir, walDir)
	l, err := wal.Open(path, walOptions())
	if err == nil {
		err = c.Observe(path, *dirKept)
	}
	for i := uint64(1); err == nil; i++ {
		id := lab.MessageID(c.Run, int(i))
		if err = l.Write(i, lab.EntryData(id)); err != nil {
			break
		}
		// Write returned: everything it wrote is fsynced (a full segment
		// was fsynced before the next was created).
		if err = c.Observe(path, *dirKept); err != nil {
			break
		}
		err = c.Ack(id, i)
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", lab.ChildCommand, err)
	return 4
}

func walOptions() *wal.Options {
	opts := *wal.DefaultOptions
	opts.NoSync = false // fsync after every Write (the default)
	opts.SegmentSize = segmentSize
	return &opts
}

// readWAL is the main count: the log opened and read by its own code.
func readWAL(dir string) (lab.ReadBack, error) {
	var rb lab.ReadBack
	l, err := wal.Open(dir, walOptions())
	if err != nil {
		return rb, fmt.Errorf("tidwall/wal refuses to open: %w", err)
	}
	defer l.Close()
	first, err := l.FirstIndex()
	if err != nil {
		return rb, err
	}
	last, err := l.LastIndex()
	if err != nil {
		return rb, err
	}
	for i := first; i != 0 && i <= last; i++ {
		data, err := l.Read(i)
		if err != nil {
			// Unreadable from here on: the entries past it are out of an
			// application's reach.
			rb.Undecodable++
			break
		}
		rb.Add(data)
	}
	return rb, nil
}

// scanWAL is the cross-check: the segment files parsed directly, in order
// of their names (the first index, 20 digits), each a sequence of uvarint
// length + data. A segment that ends inside an entry is counted as one
// undecodable and ends the scan, as an unreadable entry ends readWAL.
func scanWAL(dir string) (lab.ReadBack, error) {
	var rb lab.ReadBack
	entries, err := os.ReadDir(dir)
	if err != nil {
		return rb, err
	}
	var names []string
	for _, e := range entries {
		if len(e.Name()) == 20 && !e.IsDir() {
			if _, err := strconv.ParseUint(e.Name(), 10, 64); err == nil {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return rb, err
		}
		for len(data) > 0 {
			size, n := binary.Uvarint(data)
			if n <= 0 || uint64(len(data)-n) < size {
				rb.Undecodable++
				return rb, nil
			}
			rb.Add(data[n : n+int(size)])
			data = data[n+int(size):]
		}
	}
	return rb, nil
}
