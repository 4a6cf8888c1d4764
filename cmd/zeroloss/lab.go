package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/zerolossmq/zeroloss/internal/lab"
	"github.com/zerolossmq/zeroloss/internal/report"
)

const labUsage = `usage: zeroloss lab [--runs N] [--seed S] [--dir D] [--all] [--reference [--peers-dir DIR]] [--jetstream [--jetstream-dir DIR]] [--wide] [--json FILE] [--html FILE]

Lab measures what each queue configuration loses when something fails under
load, by doing it: it starts a child process that sends from 8 goroutines,
kills it with SIGKILL after a random number of acknowledged messages, recovers
the queue and reads every message back. It counts the acknowledged messages
that are lost, duplicated or corrupt, checks the count a second, independent
way, and prints one row per configuration and failure: the acknowledged,
lost and duplicated messages, what the topics' consumer groups got, the
throughput and a verdict, in 100 columns for the default set. --wide prints
every column (refused, corrupt, phantom, undelivered, isolation, unacked,
recovered, the cross-check), as --json and --html always do; they also
count each consumer group.

The child sends to 4 topics (the default one, orders, emails, audit; the
orders messages carry a tag) and declares a consumer group per topic, plus
one on orders that takes only the tags paid and shipped. After recovery the
lab drains every group: each must deliver every acknowledged message of its
topic (and tags) that the log holds (undelivered otherwise), and none of
another topic or tag (isolation), whatever the configuration. The
consumer-crash and tx-crash children use the default topic only.
While it runs, it shows on a terminal a line rewritten before each run;
when standard error is not a terminal (a CI log, a pipe), one line per
finished row instead.

By default it runs a curated set of rows, one for each row of the guarantee
table and each new scenario:

  flush=sync and flush=async under process-crash, which keeps the operating
  system's page cache: both must lose nothing; and under power-loss, which
  also takes away, before recovery, every byte and directory entry that no
  completed fsync made durable (the child reports its writes and syncs to the
  lab): flush=sync must still lose nothing, while flush=async is only
  measured and may lose what it acknowledged after its last background sync.

  consumer-crash, with a child that also consumes: ack=after-handling (ack
  once the message is handled, into an fsynced file) must lose nothing, while
  ack=on-receive (ack, then handle in a goroutine) is only measured: it may
  lose what it acked and had not handled when it was killed.

  replication, with a follower (zeroloss.Follow) in the child attached to
  the leader: repl=sync under power-loss of both machines' files, and
  leader-disk-loss: the leader's directory is destroyed after the kill and
  the follower's opened as the queue (failover). repl=sync must lose
  nothing, as its SendOK waits for the follower's fdatasync; repl=async is
  only measured: it may lose the replication lag.

  queue-outage, where the queue's fdatasync fails (poisoning it; it is
  reopened) or its disk is full for a while under load: Queue.Send callers
  see errors or statuses other than SendOK (counted as refused, not
  acknowledged), and the strict producer (producer=strict) spools what the
  queue cannot confirm and resends it: it must lose nothing it accepted.

  tx-crash, with a child in the middle of transactional sends
  (producer=tx) whose local transactions live in an fsynced file: after a
  restart with a TxChecker reading that file, every committed transaction's
  message must be delivered and no other (phantom).

--all runs the cross product flush {sync, async} x replication {none,
async, sync} x consumer {none, ack after handling, ack on receive} x
producer {plain, strict, tx} under every failure that applies, and lists
the pairs it skips with the reason of each (it takes an hour or more).

--reference also runs github.com/tidwall/wal through the power-loss
harness, as a reference log: it runs "go run ./labref" in the bench/peers
module (its own go.mod; --peers-dir says where it is), and adds its rows to
the report. Without that module, or without the go command, it says so and
runs the rest.

--jetstream also runs the process-crash scenario against the JetStream
adapter: it runs "go run ./labjs" in the jetstream module (its own go.mod;
--jetstream-dir says where it is), whose child process runs a nats-server
that is killed with SIGKILL while the lab sends through the adapter, then
restarted on the same store; two rows, the server's default background sync
and sync_interval: always, both promised zero loss. There is no power-loss
row for JetStream: nats-server writes its files itself, so the lab cannot
know what it fsynced. Without that module, or without the go command, it
says so at the start and runs the rest.

Each run uses a fresh queue directory under D, removed afterwards unless it
lost data it was promised to keep, corrupted data, or failed. The default set
takes about two minutes on a 2-core machine with a fast disk; a slower fsync
makes the flush=sync runs longer.

Exit status: 0 every configuration kept its promises, 1 one lost or
corrupted an acknowledged message it promised to keep, or delivered a
phantom, or a consumer group missed or crossed topics (or the lab's two
counts disagree, or the lab could not measure), 2 a usage error.
`

func init() {
	// A lab child is this program re-executed by Run: it sends until it is
	// killed, and must not go through the command dispatcher.
	if lab.IsChild(os.Args[1:]) {
		os.Exit(lab.ChildMain(os.Args[1:]))
	}
	commands = append(commands, command{"lab", "measure what each queue configuration loses under failures (process, consumer and transaction crashes, power loss)", runLab})
}

func runLab(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("lab", labUsage, stderr)
	runs := fs.Int("runs", lab.DefaultRuns, "runs of each configuration under each failure")
	seed := fs.Uint64("seed", 0, "seed of the kill points (0: from the clock; the report prints the seed used)")
	dir := fs.String("dir", os.TempDir(), "directory for the run directories: put it on the disk to measure")
	jsonFile := fs.String("json", "", "also write the report, every run included, as JSON to `FILE`")
	wide := fs.Bool("wide", false, "print every column of the table, not only those that fit in 100 columns (--json and --html have them all)")
	htmlFile := fs.String("html", "", "also write the report as a self-contained HTML page, with charts, to `FILE`")
	all := fs.Bool("all", false, "run every configuration under every failure that applies (takes an hour or more)")
	reference := fs.Bool("reference", false, "also run tidwall/wal through the power-loss harness (needs the bench/peers module and the go command)")
	peersDir := fs.String("peers-dir", filepath.Join("bench", "peers"), "where the bench/peers module is, for --reference")
	jetStream := fs.Bool("jetstream", false, "also run the process-crash scenario against the JetStream adapter (needs the jetstream module and the go command)")
	jetStreamDir := fs.String("jetstream-dir", "jetstream", "where the jetstream module is, for --jetstream")
	positional, status, ok := parseArgs(fs, args)
	if !ok {
		return status
	}
	if len(positional) > 0 {
		fmt.Fprintf(stderr, "zeroloss lab: unexpected arguments %q\n\n", positional)
		fs.Usage()
		return exitUsage
	}
	if *runs < 1 {
		fmt.Fprintf(stderr, "zeroloss lab: --runs is %d, want at least 1\n\n", *runs)
		fs.Usage()
		return exitUsage
	}

	if *jetStream {
		// Said before the runs rather than minutes after them.
		if _, _, err := findLabJS(*jetStreamDir); err != nil {
			fmt.Fprintf(stderr, "zeroloss lab: --jetstream: %v; the JetStream rows are left out\n", err)
			*jetStream = false
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	// On a terminal, a line rewritten in place; elsewhere, a line per row.
	opts := lab.Options{Runs: *runs, Seed: *seed, Dir: *dir, Progress: stderr}
	start := time.Now()
	scenarios := lab.DefaultScenarios()
	var skipped []lab.Skipped
	if *all {
		scenarios, skipped = lab.AllScenarios(), lab.AllSkipped()
	}
	rep, err := lab.RunScenarios(ctx, opts, scenarios)
	if rep != nil {
		rep.Skipped = skipped
	}
	if *reference && err == nil {
		refOpts := opts
		refOpts.Seed = rep.Seed // the seed the lab used, also when drawn from the clock
		rows, refErr := runReference(ctx, *peersDir, refOpts, opts.Progress)
		switch {
		case errors.Is(refErr, errNoReference):
			fmt.Fprintf(stderr, "zeroloss lab: --reference: %v; the reference rows are left out\n", refErr)
		case refErr != nil:
			err = refErr
		default:
			rep.Rows = append(rep.Rows, rows...)
		}
	}
	if *jetStream && err == nil {
		jsOpts := opts
		jsOpts.Seed = rep.Seed
		rows, jsErr := runJetStream(ctx, *jetStreamDir, jsOpts, opts.Progress)
		if jsErr != nil {
			err = jsErr
		} else {
			rep.Rows = append(rep.Rows, rows...)
		}
	}
	if rep != nil && (*reference || *jetStream) {
		rep.Elapsed = time.Since(start) // the table's time covers the rows run by go run too
	}
	if rep != nil && len(rep.Rows) > 0 {
		writeTable := rep.WriteTable
		if *wide {
			writeTable = rep.WriteWideTable
		}
		if werr := writeTable(stdout); werr != nil && err == nil {
			err = werr
		}
		if *jsonFile != "" {
			if werr := writeFile(*jsonFile, rep.WriteJSON); werr != nil && err == nil {
				err = werr
			}
		}
		if *htmlFile != "" {
			if werr := writeFile(*htmlFile, labReport(start, *dir, rep).WriteHTML); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "zeroloss lab: %v\n", err)
		return exitFailure
	}
	for _, row := range rep.Rows {
		if row.Broken() {
			fmt.Fprintf(stderr, "zeroloss lab: %s lost or corrupted acknowledged messages (or delivered phantoms, or a consumer group missed or crossed topics) under %s, which it promises not to\n", row.Config, row.Failure)
		}
		if row.CrossCheckMismatches > 0 {
			fmt.Fprintf(stderr, "zeroloss lab: %s under %s: the two counts disagree in %d runs; the figures cannot be trusted\n", row.Config, row.Failure, row.CrossCheckMismatches)
		}
		for _, res := range row.Results {
			if res.Dir != "" {
				fmt.Fprintf(stderr, "zeroloss lab: %s under %s, run %d: kept %s\n", row.Config, row.Failure, res.Run, res.Dir)
			}
		}
	}
	if !rep.OK() {
		return exitFailure
	}
	return exitOK
}

// labReport describes the lab's report for the report package: the table
// WriteWideTable prints, and charts of lost messages and throughput per
// configuration and failure.
func labReport(start time.Time, dir string, rep *lab.Report) *report.Report {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	out := &report.Report{
		Title: "zeroloss lab",
		Meta: append(report.Machine(start),
			report.Pair{Key: "dir", Value: dir},
			report.Pair{Key: "seed", Value: fmt.Sprint(rep.Seed)},
			report.Pair{Key: "runs per row", Value: fmt.Sprint(rep.RunsPerRow)},
			report.Pair{Key: "elapsed", Value: rep.Elapsed.Round(100 * time.Millisecond).String()},
		),
	}
	t := report.Table{Columns: lab.TableColumns, Notes: lab.TableNotes}
	lost := report.BarChart{Title: "Acknowledged messages lost", Unit: "msgs"}
	throughput := report.BarChart{Title: "Throughput (median over the runs)", Unit: "msgs/s"}
	for i := range rep.Rows {
		r := &rep.Rows[i]
		t.Rows = append(t.Rows, []string{r.Config, r.Failure, fmt.Sprint(r.Runs), fmt.Sprint(r.Acknowledged),
			fmt.Sprint(r.Refused), fmt.Sprint(r.Lost), fmt.Sprint(r.Duplicates), fmt.Sprint(r.Corrupt), fmt.Sprint(r.Phantom),
			fmt.Sprint(r.Undelivered), fmt.Sprint(r.Isolation), fmt.Sprint(r.OrderViolations), fmt.Sprint(r.UnackedPresent),
			fmt.Sprint(r.Recovered), fmt.Sprint(int64(math.Round(r.MedianThroughput))), r.CrossCheck(), r.Verdict()})
		label := r.Config + " / " + r.Failure
		note := ""
		if r.Acknowledged > 0 {
			note = fmt.Sprintf("of %d acknowledged", r.Acknowledged)
		}
		lost.Bars = append(lost.Bars, report.Bar{Label: label, Value: float64(r.Lost), Note: note})
		throughput.Bars = append(throughput.Bars, report.Bar{Label: label, Value: r.MedianThroughput})
	}
	out.Tables = []report.Table{t}
	if groups := labGroupsTable(rep); len(groups.Rows) > 0 {
		out.Tables = append(out.Tables, groups)
	}
	if len(rep.Skipped) > 0 {
		skipped := report.Table{Title: "Pairs skipped (they do not apply)", Columns: []string{"config", "failure", "reason"}}
		for _, s := range rep.Skipped {
			skipped.Rows = append(skipped.Rows, []string{s.Config, s.Failure, s.Reason})
		}
		out.Tables = append(out.Tables, skipped)
	}
	out.Charts = []report.BarChart{lost, throughput}
	return out
}

// labGroupsTable is the per-topic table of the lab's report: for each row
// with topics, each consumer group's topic, tags and counts, summed over
// the row's runs.
func labGroupsTable(rep *lab.Report) report.Table {
	t := report.Table{Title: "Consumer groups by topic (sums over the runs)",
		Columns: []string{"config", "failure", "group", "topic", "tags", "acknowledged", "received", "undelivered", "isolation"},
		Notes: []string{
			"acknowledged: acked messages of the group's topic (and tags); received: deliveries, unacked messages and duplicates included.",
			"undelivered: acked, in the recovered log, not delivered by the group; isolation: delivered to the group from another topic or an unlisted tag.",
		}}
	for i := range rep.Rows {
		r := &rep.Rows[i]
		for _, g := range r.Groups {
			topic := g.Topic
			if topic == "" {
				topic = "(default)"
			}
			tags := strings.Join(g.Tags, ",")
			if tags == "" {
				tags = "all"
			}
			t.Rows = append(t.Rows, []string{r.Config, r.Failure, g.Group, topic, tags, fmt.Sprint(g.Acknowledged),
				fmt.Sprint(g.Received), fmt.Sprint(g.Undelivered), fmt.Sprint(g.Isolation)})
		}
	}
	return t
}

// errNoReference: the reference rows cannot be run here.
var errNoReference = errors.New("reference not available")

// runReference runs the bench/peers module's labref program (tidwall/wal
// through the power-loss harness) with go run, with the lab's runs, seed
// and directory, and returns its rows. It returns an error matching
// errNoReference when the module or the go command is missing.
func runReference(ctx context.Context, peersDir string, opts lab.Options, progress io.Writer) ([]lab.Row, error) {
	dir, err := findPeersDir(peersDir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoReference, strings.TrimPrefix(err.Error(), "--peers: "))
	}
	if _, err := os.Stat(filepath.Join(dir, "labref")); err != nil {
		return nil, fmt.Errorf("%w: no labref program in %s", errNoReference, dir)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("%w: the go command is not on PATH", errNoReference)
	}
	rows, err := goRunRows(ctx, goTool, dir, "labref", opts, progress, "the reference")
	if err != nil {
		return nil, fmt.Errorf("--reference: %w", err)
	}
	return rows, nil
}

// errNoJetStream: the JetStream rows cannot be run here.
var errNoJetStream = errors.New("JetStream lab not available")

// findLabJS returns the jetstream module's directory, if dir holds it and
// its labjs program, and the go command; else an error matching
// errNoJetStream that says what is missing.
func findLabJS(dir string) (abs, goTool string, err error) {
	abs, err = filepath.Abs(dir)
	if err != nil {
		return "", "", err
	}
	mod, err := os.ReadFile(filepath.Join(abs, "go.mod"))
	if err != nil || !strings.Contains(string(mod), "module github.com/zerolossmq/zeroloss/jetstream\n") {
		return "", "", fmt.Errorf("%w: no jetstream module in %s (run from the repository root, or give --jetstream-dir)", errNoJetStream, abs)
	}
	if _, err := os.Stat(filepath.Join(abs, "labjs")); err != nil {
		return "", "", fmt.Errorf("%w: no labjs program in %s", errNoJetStream, abs)
	}
	if goTool, err = exec.LookPath("go"); err != nil {
		return "", "", fmt.Errorf("%w: the go command is not on PATH", errNoJetStream)
	}
	return abs, goTool, nil
}

// runJetStream runs the jetstream module's labjs program (the process-crash
// scenario against the JetStream adapter) with go run, with the lab's runs,
// seed, directory and kill-point bounds, and returns its rows. It returns
// an error matching errNoJetStream when the module or the go command is
// missing.
func runJetStream(ctx context.Context, jetStreamDir string, opts lab.Options, progress io.Writer) ([]lab.Row, error) {
	dir, goTool, err := findLabJS(jetStreamDir)
	if err != nil {
		return nil, err
	}
	rows, err := goRunRows(ctx, goTool, dir, "labjs", opts, progress, "the JetStream lab")
	if err != nil {
		return nil, fmt.Errorf("--jetstream: %w", err)
	}
	return rows, nil
}

// goRunRows runs "go run ./PROGRAM" in the module directory dir with the
// lab's runs, directory, seed and kill-point bounds (when set), and a
// --json file, and returns the rows of the report the program wrote there.
// what names the program in the progress: a line rewritten in place on a
// terminal, else a line before and one per row after.
func goRunRows(ctx context.Context, goTool, dir, program string, opts lab.Options, progress io.Writer, what string) ([]lab.Row, error) {
	out, err := os.CreateTemp("", "zeroloss-"+program+"-*.json")
	if err != nil {
		return nil, err
	}
	out.Close()
	defer os.Remove(out.Name())
	args := []string{"run", "./" + program, "--runs", strconv.Itoa(opts.Runs), "--dir", opts.Dir, "--json", out.Name()}
	if opts.Seed != 0 {
		args = append(args, "--seed", strconv.FormatUint(opts.Seed, 10))
	}
	if opts.MinAcks != 0 {
		args = append(args, "--min-acks", strconv.Itoa(opts.MinAcks))
	}
	if opts.MaxAcks != 0 {
		args = append(args, "--max-acks", strconv.Itoa(opts.MaxAcks))
	}
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Dir = dir
	var stdout, stderr strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	inPlace := report.IsTerminal(progress)
	if progress != nil {
		line := fmt.Sprintf("running %s (go run ./%s in %s)...", what, program, dir)
		if inPlace {
			fmt.Fprintf(progress, "\r%s", line)
			defer fmt.Fprintf(progress, "\r%s\r", strings.Repeat(" ", len(line)))
		} else {
			fmt.Fprintln(progress, line)
		}
	}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go run ./%s in %s: %v\n%s%s", program, dir, err, lastLines(stdout.String(), 10), stderr.String())
	}
	data, err := os.ReadFile(out.Name())
	if err != nil {
		return nil, err
	}
	var rep lab.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("reading the report of ./%s: %w", program, err)
	}
	if progress != nil && !inPlace {
		for i := range rep.Rows {
			fmt.Fprintf(progress, "[%d/%d] %s\n", i+1, len(rep.Rows), rep.Rows[i].Summary())
		}
	}
	return rep.Rows, nil
}
