package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/hist"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/report"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

const benchUsage = `usage: zeroloss bench [--duration D] [--dir DIR] [--json FILE] [--html FILE] [--peers [--peers-dir DIR]]

Bench measures, on real files in a temporary directory under DIR, what the
disk gives and what a queue gets from it, with 1 KiB messages:

  raw write              one write(2) of 1 KiB per message, never synced
  raw write+fdatasync    1 KiB write then one fdatasync per message, on a
                         preallocated file (its median is the disk's
                         fdatasync latency, shown in the header)
  raw batch64+fdatasync  one write of 64 x 1 KiB then one fdatasync
  flush=sync             zeroloss Send from 1, 16 and 64 producers
  flush=async            zeroloss Send from 1 and 16 producers
  repl=async follower=F  flush=sync Send from 64 producers, ReplicateAsync, a
                         follower (zeroloss.Follow, FlushSync) attached over a
                         Unix socket in the same process
  repl=sync follower=F   the same with ReplicateSync: SendOK once the
                         follower has the message durably too
  strict producer        a strict Producer (spool on the same disk) from 16
                         producers, flush=sync
  transaction            SendInTransaction (half, commit) from 16 producers,
                         flush=sync

F is tmpfs when /dev/shm is a tmpfs: the follower's directory is there, so
its fdatasync is free and the row measures the protocol's overhead; else F is
disk, the follower's directory being under DIR with the leader's.

Each case runs for D (or, for the queue, until 1 Mi messages, whichever comes
first). For each it prints the throughput, the p50/p99/p99.9 latency of one
Send (of one write, write+fdatasync or batch for the raw cases), and the
throughput as a ratio to its baseline: flush=sync with 1 producer against
write+fdatasync, with more producers against batch64+fdatasync (what group
commit can at best reach), flush=async against write. The repl, strict
producer and transaction cases are compared with plain flush=sync Sends from
as many producers to another queue on the same disk, run in alternating
rounds of 250 ms within the case (D in all, half each), so that the disk's
drifting fdatasync latency cancels out of their ratio. After each queue case
it closes the queue, reopens the log and checks, outside the timing, that it
holds exactly the messages Send acknowledged (the follower's directory too;
for transactions, one commit per half). The whole run takes about a minute
with the default D.

With --peers it then runs the benchmarks of the bench/peers module (its own
go.mod: tidwall/wal, go-diskqueue, dque, goque, goqite on SQLite, NATS
JetStream embedded and Redis Streams when redis-server is installed, next to
zeroloss and a raw write+fdatasync loop) with go test, about 1 s each, which
adds several minutes and downloads the peers' modules on first use; their
table gives each figure as a ratio to that run's raw fsync loop and says what
each peer's acknowledgement guarantees (durable or page cache).

Exit status: 0 success, 1 a queue lost or added messages, or an I/O error,
2 a usage error.
`

func init() {
	commands = append(commands, command{"bench", "measure Send throughput and latency next to the disk's raw write and fdatasync", runBench})
}

const (
	benchMessageSize = 1 << 10
	benchBatch       = 64
	benchFileSize    = 64 << 20 // raw files wrap at this size, one queue segment
	benchMaxMessages = 1 << 20  // a queue case stops here even before its duration
)

// benchKind says what a case measures.
type benchKind int

const (
	kindRawWrite benchKind = iota
	kindRawWriteSync
	kindRawBatchSync
	kindQueue
	kindAlternating // a variant of flush=sync Send, alternating with plain Sends
)

// benchVariant is what a kindAlternating case sends with.
type benchVariant int

const (
	variantReplicateAsync benchVariant = iota
	variantReplicateSync
	variantStrict
	variantTx
)

// benchCase is one line of the bench.
type benchCase struct {
	name      string
	kind      benchKind
	flush     zeroloss.FlushMode // kindQueue only
	variant   benchVariant       // kindAlternating only
	producers int
	baseline  string // name of the raw case it is compared with, or caseAlternated; "" for raw cases
}

func (c benchCase) label() string { return fmt.Sprintf("%s p=%d", c.name, c.producers) }

const (
	caseRawWrite     = "raw write"
	caseRawWriteSync = "raw write+fdatasync"
	caseRawBatchSync = "raw batch64+fdatasync"
	// caseAlternated is the baseline of the kindAlternating cases: plain
	// flush=sync Sends to another queue, in rounds alternating with the
	// case's own within the case.
	caseAlternated = "flush=sync alternated"
)

// benchCases is the standard set, baselines first.
func benchCases() []benchCase {
	follower := "follower=disk"
	if benchTmpfs() != "" {
		follower = "follower=tmpfs"
	}
	return []benchCase{
		{name: caseRawWrite, kind: kindRawWrite, producers: 1},
		{name: caseRawWriteSync, kind: kindRawWriteSync, producers: 1},
		{name: caseRawBatchSync, kind: kindRawBatchSync, producers: 1},
		{name: "flush=sync", kind: kindQueue, flush: zeroloss.FlushSync, producers: 1, baseline: caseRawWriteSync},
		{name: "flush=sync", kind: kindQueue, flush: zeroloss.FlushSync, producers: 16, baseline: caseRawBatchSync},
		{name: "flush=sync", kind: kindQueue, flush: zeroloss.FlushSync, producers: 64, baseline: caseRawBatchSync},
		{name: "flush=async", kind: kindQueue, flush: zeroloss.FlushAsync, producers: 1, baseline: caseRawWrite},
		{name: "flush=async", kind: kindQueue, flush: zeroloss.FlushAsync, producers: 16, baseline: caseRawWrite},
		{name: "repl=async " + follower, kind: kindAlternating, variant: variantReplicateAsync, producers: 64, baseline: caseAlternated},
		{name: "repl=sync " + follower, kind: kindAlternating, variant: variantReplicateSync, producers: 64, baseline: caseAlternated},
		{name: "strict producer", kind: kindAlternating, variant: variantStrict, producers: 16, baseline: caseAlternated},
		{name: "transaction", kind: kindAlternating, variant: variantTx, producers: 16, baseline: caseAlternated},
	}
}

// benchResult is what one case measured; the JSON report's data holds one
// per case. Latencies are in nanoseconds.
type benchResult struct {
	Case      string        `json:"case"`
	Producers int           `json:"producers"`
	Messages  int64         `json:"messages"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	// Throughput is in messages per second.
	Throughput float64 `json:"throughput"`
	// Latencies are of one Send (one write, write+fdatasync or batch for
	// the raw cases), within 1/128 (hist.MaxError).
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
	// Baseline names the raw case Ratio compares with, or is
	// "flush=sync alternated": plain flush=sync Sends from as many
	// producers, in rounds alternating with the case's own, whose
	// throughput is BaselineThroughput. Ratio is Throughput divided by the
	// baseline's.
	Baseline           string  `json:"baseline,omitempty"`
	BaselineThroughput float64 `json:"baseline_throughput,omitempty"`
	Ratio              float64 `json:"ratio,omitempty"`
	// GroupAvg is the mean number of Sends answered by one fdatasync
	// (flush=sync only).
	GroupAvg float64 `json:"group_avg,omitempty"`
	// Verified is "ok", or what the reopened log got wrong; empty for the
	// raw cases.
	Verified string `json:"verified,omitempty"`
	// Error is an I/O error that stopped the case.
	Error string `json:"error,omitempty"`
}

// benchOptions configure one bench run.
type benchOptions struct {
	dir      string        // parent of the run's temporary directory
	duration time.Duration // per case
	progress *progress     // nil: silent
}

func runBench(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bench", benchUsage, stderr)
	duration := fs.Duration("duration", 4*time.Second, "how long each case runs")
	dir := fs.String("dir", os.TempDir(), "directory for the temporary files: put it on the disk to measure")
	jsonFile := fs.String("json", "", "also write the report as JSON to `FILE`")
	htmlFile := fs.String("html", "", "also write the report as a self-contained HTML page to `FILE`")
	withPeers := fs.Bool("peers", false, "also run the bench/peers module's benchmarks (several minutes)")
	peersDir := fs.String("peers-dir", filepath.Join("bench", "peers"), "where the peers module is")
	positional, status, ok := parseArgs(fs, args)
	if !ok {
		return status
	}
	if len(positional) > 0 {
		fmt.Fprintf(stderr, "zeroloss bench: unexpected arguments %q\n\n", positional)
		fs.Usage()
		return exitUsage
	}
	if *duration <= 0 {
		fmt.Fprintf(stderr, "zeroloss bench: --duration is %v, want more than 0\n\n", *duration)
		fs.Usage()
		return exitUsage
	}

	var peersAt string
	if *withPeers {
		var err error
		if peersAt, err = findPeersDir(*peersDir); err != nil {
			fmt.Fprintf(stderr, "zeroloss bench: %v\n", err)
			return exitUsage
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := benchOptions{dir: *dir, duration: *duration}
	if report.IsTerminal(stderr) {
		opts.progress = &progress{w: stderr} // a line rewritten in place: noise in a log file
	}
	start := time.Now()
	results, kept, err := bench(ctx, opts)
	rep := benchReport(start, opts, results)
	if peersAt != "" && err == nil {
		opts.progress.printf("bench: peers (go test -bench in %s) ...", peersAt)
		peers, perr := runPeers(ctx, peersAt, time.Second, nil)
		opts.progress.clear()
		if perr != nil {
			err = perr
		} else {
			rep.Tables = append(rep.Tables, peersTable(peers))
			rep.Data = map[string]any{"zeroloss": results, "peers": peers}
		}
	}
	failed := err != nil
	if len(results) > 0 {
		err = errors.Join(err, rep.WriteText(stdout))
		if *jsonFile != "" {
			err = errors.Join(err, writeFile(*jsonFile, rep.WriteJSON))
		}
		if *htmlFile != "" {
			err = errors.Join(err, writeFile(*htmlFile, rep.WriteHTML))
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "zeroloss bench: %v\n", err)
		failed = true
	}
	for _, r := range results {
		if r.Verified != "" && r.Verified != "ok" {
			fmt.Fprintf(stderr, "zeroloss bench: %s producers=%d: %s\n", r.Case, r.Producers, r.Verified)
			failed = true
		}
		if r.Error != "" {
			failed = true
		}
	}
	if kept != "" {
		fmt.Fprintf(stderr, "zeroloss bench: kept %s\n", kept)
	}
	if failed {
		return exitFailure
	}
	return exitOK
}

// bench runs every case in a new directory under o.dir, which it removes
// unless a queue failed its verification (kept is then its path). It stops
// at the first I/O error or when ctx ends, returning the results so far.
func bench(ctx context.Context, o benchOptions) (results []benchResult, kept string, err error) {
	root, err := os.MkdirTemp(o.dir, "zeroloss-bench-")
	if err != nil {
		return nil, "", err
	}
	keep := false
	defer func() {
		if keep {
			kept = root
			return
		}
		if rerr := os.RemoveAll(root); err == nil {
			err = rerr
		}
	}()
	defer o.progress.clear()
	cases := benchCases()
	throughput := map[string]float64{}
	for i, c := range cases {
		if err := ctx.Err(); err != nil {
			return results, "", fmt.Errorf("interrupted: %w", err)
		}
		o.progress.printf("bench %d/%d: %s, %v ...", i+1, len(cases), c.label(), o.duration)
		dir := filepath.Join(root, fmt.Sprintf("case-%d", i+1))
		if err := os.Mkdir(dir, 0o700); err != nil {
			return results, "", err
		}
		r := runBenchCase(ctx, c, dir, o.duration)
		if c.baseline != "" && throughput[c.baseline] > 0 {
			r.Ratio = r.Throughput / throughput[c.baseline]
		}
		if c.kind != kindQueue && c.kind != kindAlternating {
			throughput[c.name] = r.Throughput
		}
		results = append(results, r)
		if r.Error != "" {
			return results, "", fmt.Errorf("%s: %s", c.label(), r.Error)
		}
		if r.Verified != "ok" && (c.kind == kindQueue || c.kind == kindAlternating) {
			keep = true
			continue
		}
		if err := os.RemoveAll(dir); err != nil { // free the space before the next case
			return results, "", err
		}
	}
	return results, "", nil
}

// runBenchCase runs one case in dir for d and returns what it measured.
func runBenchCase(ctx context.Context, c benchCase, dir string, d time.Duration) benchResult {
	r := benchResult{Case: c.name, Producers: c.producers, Baseline: c.baseline}
	var (
		h   *hist.Histogram
		err error
	)
	switch c.kind {
	case kindRawWrite:
		h, r.Messages, r.Elapsed, err = rawWrite(ctx, filepath.Join(dir, "raw"), d)
	case kindRawWriteSync:
		h, r.Messages, r.Elapsed, err = rawSync(ctx, filepath.Join(dir, "raw"), 1, d)
	case kindRawBatchSync:
		h, r.Messages, r.Elapsed, err = rawSync(ctx, filepath.Join(dir, "raw"), benchBatch, d)
	case kindQueue:
		var stats zeroloss.Stats
		h, r.Messages, r.Elapsed, stats, err = queueSend(ctx, dir, c.flush, c.producers, d)
		if c.flush == zeroloss.FlushSync {
			r.GroupAvg = stats.GroupAvg
		}
		if err == nil {
			r.Verified = "ok"
			if verr := verifyMessages(dir, r.Messages); verr != nil {
				r.Verified = verr.Error()
			}
		}
	case kindAlternating:
		var a alternated
		a, err = runAlternating(ctx, c, dir, d)
		h, r.Messages, r.Elapsed, r.GroupAvg, r.Verified = a.h, a.sent, a.elapsed, a.groupAvg, a.verified
		if a.baseElapsed > 0 {
			r.BaselineThroughput = float64(a.baseSent) / a.baseElapsed.Seconds()
		}
	}
	if err != nil {
		r.Error = err.Error()
	}
	if r.Elapsed > 0 {
		r.Throughput = float64(r.Messages) / r.Elapsed.Seconds()
	}
	if r.BaselineThroughput > 0 {
		r.Ratio = r.Throughput / r.BaselineThroughput
	}
	if h != nil {
		r.P50, r.P99, r.P999, r.Max = h.Quantile(0.5), h.Quantile(0.99), h.Quantile(0.999), h.Max()
	}
	return r
}

// benchBody returns n bytes of a repeating non-zero pattern.
func benchBody(n int) []byte {
	body := make([]byte, n)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	return body
}

// rawWrite appends 1 KiB with one write(2) at a time to a new file for d,
// going back to the start of the file at benchFileSize so that it stays
// small. Nothing is synced: the cost of reaching the page cache.
func rawWrite(ctx context.Context, name string, d time.Duration) (h *hist.Histogram, messages int64, elapsed time.Duration, err error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, 0, 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	buf := benchBody(benchMessageSize)
	h = hist.New()
	var offset int64
	start := time.Now()
	deadline := start.Add(d)
	for now := start; now.Before(deadline) && ctx.Err() == nil; {
		if offset+benchMessageSize > benchFileSize {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return nil, 0, 0, err
			}
			offset = 0
		}
		if _, err := f.Write(buf); err != nil {
			return nil, 0, 0, err
		}
		end := time.Now()
		h.Record(end.Sub(now))
		now = end
		offset += benchMessageSize
		messages++
	}
	return h, messages, time.Since(start), nil
}

// rawSync writes batch messages of 1 KiB with one positional write, then
// syncs the file (vfs.OS: fdatasync, F_FULLFSYNC or FlushFileBuffers), for
// d. The file is preallocated to benchFileSize and synced first, and writes
// wrap to its start, so its size never changes and each sync pays for the
// data (and, before the first wrap, the conversion of preallocated extents:
// what a queue's fresh segment pays too). One Record per sync.
func rawSync(ctx context.Context, name string, batch int, d time.Duration) (h *hist.Histogram, messages int64, elapsed time.Duration, err error) {
	f, err := vfs.OS.Create(name)
	if err != nil {
		return nil, 0, 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if err := f.Allocate(benchFileSize); err != nil {
		return nil, 0, 0, err
	}
	if err := f.Sync(); err != nil {
		return nil, 0, 0, err
	}
	buf := benchBody(batch * benchMessageSize)
	h = hist.New()
	var offset int64
	start := time.Now()
	deadline := start.Add(d)
	for now := start; now.Before(deadline) && ctx.Err() == nil; {
		if offset+int64(len(buf)) > benchFileSize {
			offset = 0
		}
		if _, err := f.WriteAt(buf, offset); err != nil {
			return nil, 0, 0, err
		}
		if err := f.Sync(); err != nil {
			return nil, 0, 0, err
		}
		end := time.Now()
		h.Record(end.Sub(now))
		now = end
		offset += int64(len(buf))
		messages += int64(batch)
	}
	return h, messages, time.Since(start), nil
}

// queueSend opens a queue in dir with default options but flush, sends 1 KiB
// messages from producers goroutines, each one Send at a time, for d or until
// benchMaxMessages, then closes the queue. messages counts the Sends that
// returned SendOK; any other outcome is an error. Every producer records its
// Sends in its own histogram; h merges them.
func queueSend(ctx context.Context, dir string, flush zeroloss.FlushMode, producers int, d time.Duration) (h *hist.Histogram, messages int64, elapsed time.Duration, stats zeroloss.Stats, err error) {
	q, err := zeroloss.Open(dir, &zeroloss.Options{Flush: flush})
	if err != nil {
		return nil, 0, 0, stats, err
	}
	body := benchBody(benchMessageSize)
	var reserved atomic.Int64
	send := func(ctx context.Context) error {
		if reserved.Add(1) > benchMaxMessages {
			return errEnough
		}
		return sendOK(q.Send(ctx, &zeroloss.Message{Body: body}))
	}
	h = hist.New()
	messages, elapsed, err = sendFor(ctx, send, producers, d, h)
	stats = q.Stats()
	return h, messages, elapsed, stats, errors.Join(err, q.Close())
}

// verifyMessages reopens the closed queue's log in dir and checks that it
// recovers cleanly and holds exactly want messages, each with a body of the
// bench's size.
func verifyMessages(dir string, want int64) error {
	var messages int64
	rec, err := wal.ReadDurable(dir, wal.Options{}, func(r record.Record) error {
		if r.Type != record.TypeMessage {
			return nil
		}
		m, err := record.DecodeMessage(r.Payload)
		if err != nil {
			return fmt.Errorf("seq %d: %w", r.Seq, err)
		}
		if len(m.Body) != benchMessageSize {
			return fmt.Errorf("seq %d: body of %d bytes, want %d", r.Seq, len(m.Body), benchMessageSize)
		}
		messages++
		return nil
	})
	if err != nil {
		return fmt.Errorf("reopen: %w (after %d messages)", err, messages)
	}
	if rec.Unclean || rec.Torn != nil {
		return fmt.Errorf("reopen after a clean Close: unclean=%v torn=%+v", rec.Unclean, rec.Torn)
	}
	if messages != want {
		return fmt.Errorf("the log holds %d messages, Send acknowledged %d", messages, want)
	}
	return nil
}

// benchReport describes results for the report package.
func benchReport(start time.Time, o benchOptions, results []benchResult) *report.Report {
	rep := &report.Report{Title: "zeroloss bench", Meta: report.Machine(start), Data: results}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		dir = o.dir
	}
	rep.Meta = append(rep.Meta,
		report.Pair{Key: "fdatasync", Value: fdatasyncLatency(results)},
		report.Pair{Key: "dir", Value: dir},
		report.Pair{Key: "each case", Value: fmt.Sprintf("%v (queue: at most %d messages), 1 KiB messages", o.duration, benchMaxMessages)},
	)
	t := report.Table{
		Columns: []string{"case", "producers", "messages", "msgs/s", "p50 µs", "p99 µs", "p99.9 µs", "vs baseline", "ratio", "msgs/fsync", "verified"},
		Notes: []string{
			"latency: of one Send; for the raw cases of one write, write+fdatasync or batch of 64 (histogram, within 0.8%).",
			"ratio: msgs/s over the baseline's msgs/s. msgs/fsync: Sends answered by one fdatasync (group commit).",
			"flush=sync alternated: plain flush=sync Sends from as many producers to another queue, in 250 ms rounds alternating with the case's own, so the disk's drift cancels out of the ratio.",
			"verified: the reopened log holds exactly the messages Send acknowledged (and the follower's, for repl).",
		},
	}
	throughput := report.BarChart{Title: "Throughput", Unit: "msgs/s"}
	p50 := report.BarChart{Title: "Send latency, p50", Unit: "µs"}
	p99 := report.BarChart{Title: "Send latency, p99", Unit: "µs"}
	for _, r := range results {
		label := benchCase{name: r.Case, producers: r.Producers}.label()
		baseline, ratio, note := "-", "-", ""
		if r.Baseline != "" {
			baseline = r.Baseline
			if r.Ratio > 0 {
				ratio = fmt.Sprintf("%.2fx", r.Ratio)
				note = fmt.Sprintf("%.2fx %s", r.Ratio, r.Baseline)
			}
		}
		group := "-"
		if r.GroupAvg > 0 {
			group = fmt.Sprintf("%.1f", r.GroupAvg)
		}
		verified := r.Verified
		switch {
		case r.Error != "":
			verified = "ERROR: " + r.Error
		case verified == "":
			verified = "-"
		case verified != "ok":
			verified = "FAILED: " + verified
		}
		t.Rows = append(t.Rows, []string{r.Case, fmt.Sprint(r.Producers), fmt.Sprint(r.Messages),
			fmt.Sprint(int64(math.Round(r.Throughput))), micros(r.P50), micros(r.P99), micros(r.P999),
			baseline, ratio, group, verified})
		throughput.Bars = append(throughput.Bars, report.Bar{Label: label, Value: r.Throughput, Note: note})
		p50.Bars = append(p50.Bars, report.Bar{Label: label, Value: float64(r.P50) / 1e3})
		p99.Bars = append(p99.Bars, report.Bar{Label: label, Value: float64(r.P99) / 1e3})
	}
	rep.Tables = []report.Table{t}
	rep.Charts = []report.BarChart{throughput, p50, p99}
	return rep
}

// fdatasyncLatency describes the disk's sync latency: the median of the raw
// write+fdatasync loop.
func fdatasyncLatency(results []benchResult) string {
	for _, r := range results {
		if r.Case == caseRawWriteSync && r.Error == "" && r.Messages > 0 {
			return fmt.Sprintf("%s median, %s p99 (1 KiB write + sync, preallocated file, %d samples)",
				r.P50.Round(time.Microsecond/10), r.P99.Round(time.Microsecond/10), r.Messages)
		}
	}
	return "not measured"
}

// micros formats d in microseconds with one decimal.
func micros(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/1e3) }

// writeFile writes name, replacing it, with write.
func writeFile(name string, write func(io.Writer) error) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// progress is a line on a terminal, rewritten in place. A nil *progress
// prints nothing.
type progress struct {
	w       io.Writer
	lastLen int
}

func (p *progress) printf(format string, args ...any) {
	if p == nil {
		return
	}
	s := fmt.Sprintf(format, args...)
	fmt.Fprintf(p.w, "\r%s%s", s, strings.Repeat(" ", max(p.lastLen-len(s), 0)))
	p.lastLen = len(s)
}

func (p *progress) clear() {
	if p == nil || p.lastLen == 0 {
		return
	}
	fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.lastLen))
	p.lastLen = 0
}
