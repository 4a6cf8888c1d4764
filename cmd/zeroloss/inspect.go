package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

const inspectUsage = `usage: zeroloss inspect [--json] DIR

Inspect prints a summary of the queue directory DIR: what its IDENTITY file
says it is (queue, follower copy, producer spool) and its queue ID, the files
in it zeroloss did not create, one line per segment
file (name, base seq, last seq, frames, data bytes, file bytes, sealed or
active, the synced offset and seq lease recorded in its slot), then totals:
segments, first and last seq, frames by record type, messages, disk use, and
the torn tail that the next open would cut, if there is one. Then the state a
restart would rebuild: transactional half messages pending a decision, IDs in
the dedup window, and per consumer group its floor, delivered mark, messages
not yet delivered (BEHIND, an upper bound), delivered and unacked, in the
retry stream, dead letters, the distinct keys of its retry stream's
messages and how long ago the oldest of them was first delivered (the keys
an Ordered group holds back), and how far it holds retention back: the
segments (and their bytes) kept for it alone, and whether it holds the
oldest segment.

It checks every frame's checksum on the way, as verify does, and decodes the
records the state is built from (consumer records, transaction records and
message IDs), but not message bodies and headers. It only reads: it takes no
lock and changes nothing.

Exit status: 0 when the scan reached the end of the log (a torn tail is not an
error), 1 when damage or an error stopped it (what was scanned before is still
printed, then the error on stderr), 2 for a usage error.
`

func runInspect(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("inspect", inspectUsage, stderr)
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	dir, status, ok := parseDir(fs, args)
	if !ok {
		return status
	}
	res, scanErr := wal.Scan(vfs.OS, dir)
	report := newInspectReport(dir, res, scanErr)
	if id, err := zeroloss.ReadDirIdentity(dir); err == nil {
		report.Kind, report.QueueID, report.Foreign = id.Kind, id.QueueID, id.Foreign
	} else if scanErr == nil {
		scanErr = err
		report.Error = err.Error()
	}
	if scanErr == nil {
		st, err := zeroloss.ReadDirState(dir)
		if err != nil {
			scanErr = err
			report.Error = err.Error()
		} else {
			report.State = newStateReport(st)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			fmt.Fprintf(stderr, "zeroloss inspect: %v\n", err)
			return exitFailure
		}
	} else {
		report.print(stdout)
	}
	if scanErr != nil {
		fmt.Fprintln(stderr, describeScanError(scanErr))
		return exitFailure
	}
	return exitOK
}

// inspectReport is what inspect prints; its JSON form is the output of
// --json.
type inspectReport struct {
	Dir string `json:"dir"`
	// Kind and QueueID are what DIR's IDENTITY file says ("" if it has
	// none); Foreign lists the files in DIR zeroloss did not create.
	Kind     string          `json:"kind"`
	QueueID  string          `json:"queue_id"`
	Foreign  []string        `json:"foreign,omitempty"`
	Segments []segmentReport `json:"segments"`
	Totals   totalsReport    `json:"totals"`
	// TornTail is null when the log ends cleanly.
	TornTail *tornReport `json:"torn_tail"`
	// Corrupt is set when the scan stopped at damage; Error when it stopped
	// at another error (such as a missing directory).
	Corrupt *corruptReport `json:"corrupt,omitempty"`
	Error   string         `json:"error,omitempty"`
	// State is the consumer groups, pending transactions and dedup table,
	// as a restart would rebuild them (null when the scan failed).
	State *stateReport `json:"state,omitempty"`
}

type stateReport struct {
	Topics        []zeroloss.TopicStats `json:"topics"`
	Groups        []zeroloss.DirGroup   `json:"groups"`
	PendingTx     int                   `json:"pending_transactions"`
	DedupIDs      int                   `json:"dedup_ids"`
	HasCheckpoint bool                  `json:"checkpoint"`
	// CheckpointFiles are DIR's checkpoint files, newest first: Open
	// starts from the newest without a problem and reads the log after it.
	CheckpointFiles []zeroloss.DirCheckpointFile `json:"checkpoint_files"`
	// SpoolDepth is set when DIR is a strict producer's spool.
	SpoolDepth *int `json:"spool_depth,omitempty"`
	// Epoch is the latest leadership term, EpochStart its first seq;
	// Follower says DIR is a follower's copy.
	Epoch      uint64 `json:"epoch"`
	EpochStart uint64 `json:"epoch_start_seq"`
	Follower   bool   `json:"follower"`
}

func newStateReport(st zeroloss.DirState) *stateReport {
	r := &stateReport{Topics: st.Topics, Groups: st.Groups, PendingTx: st.PendingTx, DedupIDs: st.DedupIDs, HasCheckpoint: st.Checkpoint,
		SpoolDepth: st.SpoolDepth, Epoch: st.Epoch, EpochStart: st.EpochStart, Follower: st.Follower, CheckpointFiles: st.CheckpointFiles}
	if r.CheckpointFiles == nil {
		r.CheckpointFiles = []zeroloss.DirCheckpointFile{}
	}
	if r.Groups == nil {
		r.Groups = []zeroloss.DirGroup{}
	}
	if r.Topics == nil {
		r.Topics = []zeroloss.TopicStats{}
	}
	return r
}

type segmentReport struct {
	Name        string `json:"name"`
	BaseSeq     uint64 `json:"base_seq"`
	LastSeq     uint64 `json:"last_seq"` // prev_last_seq when the segment holds no frames
	PrevLastSeq uint64 `json:"prev_last_seq"`
	Frames      int    `json:"frames"`
	DataBytes   int64  `json:"data_bytes"`
	FileBytes   int64  `json:"file_bytes"`
	Sealed      bool   `json:"sealed"`
	// AfterGap: a follower's copy jumped here over records its leader had
	// deleted (the segment header's gap flag).
	AfterGap bool `json:"after_gap,omitempty"`
	// Recycled: the file held an earlier segment that retention deleted
	// (RecycleSegments); what is left of it past the data is never read.
	Recycled bool `json:"recycled,omitempty"`
	// SyncedOffset and Lease are recorded in the segment's slot.
	SyncedOffset int64  `json:"synced_offset"`
	Lease        uint64 `json:"lease"`
}

type totalsReport struct {
	Segments int `json:"segments"`
	// FirstSeq and LastSeq are 0 when the log holds no frames.
	FirstSeq     uint64         `json:"first_seq"`
	LastSeq      uint64         `json:"last_seq"`
	Frames       int            `json:"frames"`
	FramesByType map[string]int `json:"frames_by_type"`
	Messages     int            `json:"messages"` // TypeMessage frames
	DataBytes    int64          `json:"data_bytes"`
	DiskBytes    int64          `json:"disk_bytes"` // size of the segment files
}

type tornReport struct {
	File   string `json:"file"`
	Offset int64  `json:"offset"`
	Frames int    `json:"frames"`
	Bytes  int64  `json:"bytes"`
	Reason string `json:"reason"`
}

type corruptReport struct {
	File   string `json:"file"`
	Offset int64  `json:"offset"`
	Reason string `json:"reason"`
}

func newInspectReport(dir string, res *wal.ScanResult, scanErr error) *inspectReport {
	r := &inspectReport{Dir: dir, Segments: []segmentReport{}, Totals: totalsReport{FramesByType: map[string]int{}}}
	if res != nil {
		for _, s := range res.Segments {
			r.Segments = append(r.Segments, segmentReport{
				Name: s.Name, BaseSeq: s.BaseSeq, LastSeq: s.LastSeq, PrevLastSeq: s.PrevLastSeq,
				Frames: s.Frames, DataBytes: s.DataBytes, FileBytes: s.FileBytes, Sealed: s.Sealed,
				SyncedOffset: s.SyncedOffset, Lease: s.Lease, AfterGap: s.Gap, Recycled: s.Recycled,
			})
			r.Totals.DataBytes += s.DataBytes
			r.Totals.DiskBytes += s.FileBytes
		}
		r.Totals.Segments = len(res.Segments)
		for typ, n := range res.Frames {
			r.Totals.FramesByType[typ.String()] = n
			r.Totals.Frames += n
		}
		r.Totals.Messages = res.Frames[record.TypeMessage]
		if r.Totals.Frames > 0 {
			r.Totals.FirstSeq, r.Totals.LastSeq = res.FirstSeq, res.LastSeq
		}
		if t := res.Torn; t != nil {
			r.TornTail = &tornReport{File: t.File, Offset: t.Offset, Frames: t.Frames, Bytes: t.Bytes, Reason: t.Reason}
		}
	}
	var ce *wal.CorruptError
	switch {
	case errors.As(scanErr, &ce):
		r.Corrupt = &corruptReport{File: ce.File, Offset: ce.Offset, Reason: ce.Reason}
	case scanErr != nil:
		r.Error = scanErr.Error()
	}
	return r
}

func (r *inspectReport) print(w io.Writer) {
	fmt.Fprintf(w, "log %s\n", r.Dir)
	switch {
	case r.Kind == "":
		fmt.Fprintf(w, "directory: no IDENTITY file (written before directory identity, or not zeroloss's)\n")
	case r.QueueID == "":
		fmt.Fprintf(w, "directory: %s, queue not known yet\n", r.Kind)
	default:
		fmt.Fprintf(w, "directory: %s, queue %s\n", r.Kind, r.QueueID)
	}
	if len(r.Foreign) > 0 {
		fmt.Fprintf(w, "foreign:   %s (not created by zeroloss: Open refuses this directory)\n", strings.Join(r.Foreign, ", "))
	}
	fmt.Fprintln(w)
	if len(r.Segments) > 0 {
		rows := [][]string{{"SEGMENT", "BASE SEQ", "LAST SEQ", "FRAMES", "DATA BYTES", "FILE BYTES", "STATE", "SYNCED OFFSET", "LEASE"}}
		for _, s := range r.Segments {
			last := fmt.Sprint(s.LastSeq)
			if s.Frames == 0 {
				last = "-"
			}
			state := "active"
			if s.Sealed {
				state = "sealed"
			}
			if s.AfterGap {
				state += ", after a gap"
			}
			if s.Recycled {
				state += ", recycled"
			}
			rows = append(rows, []string{s.Name, fmt.Sprint(s.BaseSeq), last, fmt.Sprint(s.Frames),
				fmt.Sprint(s.DataBytes), fmt.Sprint(s.FileBytes), state, fmt.Sprint(s.SyncedOffset), fmt.Sprint(s.Lease)})
		}
		printTable(w, rows, map[int]bool{0: true, 6: true})
		fmt.Fprintln(w)
	}
	t := r.Totals
	line := func(key, format string, args ...any) {
		fmt.Fprintf(w, "%-11s%s\n", key+":", fmt.Sprintf(format, args...))
	}
	line("segments", "%d", t.Segments)
	if t.Frames > 0 {
		line("seqs", "%d..%d", t.FirstSeq, t.LastSeq)
	} else {
		line("seqs", "none (no frames)")
	}
	line("frames", "%d%s", t.Frames, framesByType(t.FramesByType))
	line("messages", "%d", t.Messages)
	line("data", "%s", formatBytes(t.DataBytes))
	line("disk use", "%s", formatBytes(t.DiskBytes))
	if r.TornTail == nil {
		line("torn tail", "none")
	} else {
		fmt.Fprintln(w, describeTorn(r.TornTail))
	}
	if st := r.State; st != nil && st.SpoolDepth != nil {
		line("spool", "%d messages spooled by a strict producer, not yet confirmed by a queue", *st.SpoolDepth)
	} else if st != nil {
		role := "a leader's (Open begins the next epoch)"
		if st.Follower {
			role = "a follower's copy (Open promotes it: the next epoch starts 2^32 seqs up)"
		}
		if st.Epoch > 0 {
			line("epoch", "%d, since seq %d; %s", st.Epoch, st.EpochStart, role)
		}
		line("pending tx", "%d transactional half messages waiting for a decision", st.PendingTx)
		line("dedup ids", "%d within the default window", st.DedupIDs)
		if len(st.CheckpointFiles) == 0 {
			line("restart", "no checkpoint file: the next Open reads the whole log")
		}
		from := false
		for _, f := range st.CheckpointFiles {
			switch {
			case f.Problem != "":
				line("restart", "%s (%s): ignored by Open: %s", f.Name, formatBytes(f.Bytes), f.Problem)
			case !from:
				from = true
				line("restart", "%s (%s): the next Open starts from it and reads only the log after seq %d", f.Name, formatBytes(f.Bytes), f.Seq)
			default:
				line("restart", "%s (%s): kept in case the newer one is damaged", f.Name, formatBytes(f.Bytes))
			}
		}
		if len(st.Topics) > 0 {
			fmt.Fprintln(w)
			rows := [][]string{{"TOPIC", "MESSAGES", "BYTES", "GROUPS", "OLDEST SEQ", "OLDEST"}}
			for _, tp := range st.Topics {
				oldest, oldestSeq := "-", "-"
				if tp.OldestSeq != 0 {
					oldestSeq = fmt.Sprint(tp.OldestSeq)
				}
				if !tp.Oldest.IsZero() {
					oldest = tp.Oldest.UTC().Format(time.RFC3339)
				}
				rows = append(rows, []string{topicName(tp.Topic), fmt.Sprint(tp.Messages), formatBytes(int64(tp.Bytes)),
					fmt.Sprint(tp.Groups), oldestSeq, oldest})
			}
			printTable(w, rows, map[int]bool{0: true, 5: true})
			fmt.Fprintln(w, "A topic with no group keeps its messages (within RetentionBytes/RetentionAge) for a group declared later.")
		}
		if len(st.Groups) > 0 {
			fmt.Fprintln(w)
			rows := [][]string{{"GROUP", "TOPIC", "LAG", "FLOOR", "MARK", "BEHIND", "UNACKED", "RETRYING", "DEAD LETTERS", "RETRY KEYS", "OLDEST RETRY",
				"PINNED", "PINNED BYTES", "OLDEST"}}
			for _, g := range st.Groups {
				oldest := "-"
				if g.HoldsOldest {
					oldest = "holds it"
				}
				retryAge := "-"
				if g.RetryKeyAge > 0 {
					retryAge = g.RetryKeyAge.Round(time.Millisecond).String()
					if g.RetryKeyAge >= time.Second {
						retryAge = g.RetryKeyAge.Round(time.Second).String()
					}
				}
				topic := topicName(g.Topic)
				if len(g.Tags) > 0 {
					topic += " [" + strings.Join(g.Tags, ",") + "]"
				}
				rows = append(rows, []string{g.Name, topic, fmt.Sprint(g.Lag), fmt.Sprint(g.Floor), fmt.Sprint(g.Mark), fmt.Sprint(g.Behind),
					fmt.Sprint(g.Unacked), fmt.Sprint(g.Retrying), fmt.Sprint(g.DeadLetters), fmt.Sprint(g.RetryKeys), retryAge,
					plural(int64(g.PinnedSegments), "segment"), formatBytes(g.PinnedBytes), oldest})
			}
			printTable(w, rows, map[int]bool{0: true, 1: true, 13: true})
			fmt.Fprintln(w, "TOPIC: the topic the group reads [and the tags it takes]; LAG: its messages not acked (as of its last record)")
			fmt.Fprintln(w, "RETRY KEYS: keys of messages in the retry stream, which an Ordered group holds back; OLDEST RETRY: since the oldest of them was first delivered")
			fmt.Fprintln(w, "PINNED: segments retention keeps for that group alone; OLDEST: the group retention waits for (DeleteGroup releases a group never read)")
		}
	}
}

// topicName shows a topic's name, and the default topic as "(default)".
func topicName(topic string) string {
	if topic == "" {
		return "(default)"
	}
	return topic
}

// printTable prints rows in columns two spaces apart, numbers aligned right
// and the columns in leftAligned to the left.
func printTable(w io.Writer, rows [][]string, leftAligned map[int]bool) {
	var widths []int
	for _, row := range rows {
		for i, cell := range row {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len(cell))
		}
	}
	for _, row := range rows {
		var line strings.Builder
		for i, cell := range row {
			if i > 0 {
				line.WriteString("  ")
			}
			pad := strings.Repeat(" ", widths[i]-len(cell))
			if leftAligned[i] {
				line.WriteString(cell + pad)
			} else {
				line.WriteString(pad + cell)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(line.String(), " "))
	}
}

// framesByType returns " (message 400, ack 12)" in record type order. Scan
// rejects types this build does not know, so there are no others.
func framesByType(counts map[string]int) string {
	var parts []string
	for typ := record.Type(1); typ.Valid(); typ++ {
		if n := counts[typ.String()]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", typ, n))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func describeTorn(t *tornReport) string {
	return fmt.Sprintf("torn tail at %s offset %d: %s, %s would be cut on open (%s)",
		t.File, t.Offset, plural(int64(t.Frames), "frame"), plural(t.Bytes, "byte"), t.Reason)
}

// describeScanError returns the line printed on stderr for an error from
// wal.Scan: "corrupt: FILE at offset N: reason" for damage.
func describeScanError(err error) string {
	var ce *wal.CorruptError
	if errors.As(err, &ce) {
		return fmt.Sprintf("corrupt: %s at offset %d: %s", ce.File, ce.Offset, ce.Reason)
	}
	return fmt.Sprintf("error: %v", err)
}
