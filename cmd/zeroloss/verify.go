package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

const verifyUsage = `usage: zeroloss verify [--strict] [--spool] DIR

Verify reads the whole log in DIR: it checks every frame's checksum, the
segment headers and sync slots, the chain of seqs from segment to segment,
and decodes every message payload. It only reads: it takes no lock and changes
nothing.

It prints "ok: N segments, M frames, seqs A..B" when the log is intact, and
"corrupt: FILE at offset N: reason" on stderr for each piece of damage found.
A torn tail (unsynced bytes at the end of the last segment, which the next
open cuts) is a warning unless --strict is given.

DIR must be a queue's directory (or a follower's copy of one; with --spool,
a strict producer's spool), as its IDENTITY file says. A directory of
another kind, one holding a file zeroloss did not create, or one with
neither an IDENTITY file nor segment files is not verified: verify says
what it found and exits 1. A directory with segments and no IDENTITY was
written before directory identity: verify checks it and says so.

Exit status: 0 intact (maybe with a torn tail), 1 corrupt or another error,
2 a usage error, or a torn tail with --strict.
`

// exitTorn is verify --strict's status for a torn tail.
const exitTorn = 2

// maxReportedMessages bounds the undecodable messages verify lists one by one.
const maxReportedMessages = 10

func runVerify(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("verify", verifyUsage, stderr)
	strict := fs.Bool("strict", false, "treat a torn tail as a failure (exit status 2)")
	spool := fs.Bool("spool", false, "DIR is a strict producer's spool, not a queue")
	dir, status, ok := parseDir(fs, args)
	if !ok {
		return status
	}
	if msg, ok := checkKind(dir, *spool, stderr); !ok {
		fmt.Fprintf(stderr, "zeroloss verify: %s\n", msg)
		return exitFailure
	}
	res, scanErr := wal.Scan(vfs.OS, dir)
	var ce *wal.CorruptError
	if scanErr != nil && !errors.As(scanErr, &ce) {
		fmt.Fprintf(stderr, "zeroloss verify: %v\n", scanErr)
		return exitFailure
	}
	// Decode the messages Scan found well framed, also those ahead of the
	// damage when there is some.
	messages, bad, err := checkMessages(dir, res)
	if err != nil {
		fmt.Fprintf(stderr, "zeroloss verify: %v\n", err)
		return exitFailure
	}
	if scanErr != nil {
		fmt.Fprintln(stderr, describeScanError(scanErr))
	}
	for i, b := range bad {
		if i == maxReportedMessages {
			fmt.Fprintf(stderr, "corrupt: %d more messages do not decode\n", len(bad)-i)
			break
		}
		fmt.Fprintf(stderr, "corrupt: %s at offset %d: message seq %d does not decode: %v\n", b.file, b.offset, b.seq, b.err)
	}
	if scanErr != nil || len(bad) > 0 {
		return exitFailure
	}

	frames := 0
	for _, s := range res.Segments {
		frames += s.Frames
	}
	if len(res.Segments) == 0 {
		fmt.Fprintf(stderr, "warning: no segment files in %s\n", dir)
	}
	if t := res.Torn; t != nil {
		torn := describeTorn(&tornReport{File: t.File, Offset: t.Offset, Frames: t.Frames, Bytes: t.Bytes, Reason: t.Reason})
		if *strict {
			fmt.Fprintf(stderr, "torn: %s\n", torn)
			return exitTorn
		}
		fmt.Fprintf(stderr, "warning: %s\n", torn)
	}
	seqs := "no seqs"
	if frames > 0 {
		seqs = fmt.Sprintf("seqs %d..%d", res.FirstSeq, res.LastSeq)
	}
	fmt.Fprintf(stdout, "ok: %s, %s, %s (%s decoded)\n",
		plural(int64(len(res.Segments)), "segment"), plural(int64(frames), "frame"), seqs, plural(int64(messages), "message"))
	return exitOK
}

// checkKind says whether dir is what verify was asked to check (a queue, or
// with spool a producer's spool), and if not, what it found. A directory
// written before directory identity passes with a warning on stderr.
func checkKind(dir string, spool bool, stderr io.Writer) (string, bool) {
	want := "queue"
	if spool {
		want = "producer spool"
	}
	id, err := zeroloss.ReadDirIdentity(dir)
	switch {
	case err != nil:
		return err.Error(), false
	case len(id.Foreign) > 0:
		return fmt.Sprintf("%s is not a %s directory: it holds %q, a file zeroloss did not create (%s)",
			dir, want, id.Foreign[0], plural(int64(len(id.Foreign)), "foreign file")), false
	case id.Kind == "" && !id.Segments:
		return fmt.Sprintf("%s is not a %s directory: it has no IDENTITY file and no segment files", dir, want), false
	case id.Kind == "":
		fmt.Fprintf(stderr, "warning: %s has no IDENTITY file: written before directory identity (the next Open adds one)\n", dir)
		return "", true
	case spool != (id.Kind == "producer spool"):
		queue := id.QueueID
		if queue == "" {
			queue = "not known yet"
		}
		return fmt.Sprintf("%s is a %s (queue %s), not a %s", dir, id.Kind, queue, want), false
	}
	return "", true
}

// badMessage is a TypeMessage frame whose checksum holds but whose payload
// does not decode: written wrong, not damaged on disk.
type badMessage struct {
	file   string
	offset int64
	seq    uint64
	err    error
}

// checkMessages decodes the payload of every TypeMessage frame in the
// segments of res and returns how many it decoded and those that failed.
func checkMessages(dir string, res *wal.ScanResult) (messages int, bad []badMessage, err error) {
	for _, seg := range res.Segments {
		path := filepath.Join(dir, seg.Name)
		err := wal.ReadFrames(vfs.OS, dir, seg, func(offset int64, rec *record.Record) error {
			if rec.Type != record.TypeMessage {
				return nil
			}
			if _, err := record.DecodeMessage(rec.Payload); err != nil {
				bad = append(bad, badMessage{file: path, offset: offset, seq: rec.Seq, err: err})
				return nil
			}
			messages++
			return nil
		})
		if err != nil {
			return messages, bad, err
		}
	}
	return messages, bad, nil
}
