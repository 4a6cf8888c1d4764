package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/report"
)

// Options configure Run. The zero value means every default.
type Options struct {
	// Runs is the number of runs of each (configuration, failure) pair.
	// Default 10.
	Runs int
	// Seed seeds the draw of the kill points. 0 picks one from the clock;
	// the report records the seed used, so a run can be repeated.
	Seed uint64
	// Dir is where run directories are created (in a new directory of their
	// own). Default os.TempDir(). Put it on the disk you want to measure.
	Dir string
	// MinAcks and MaxAcks bound the number of acknowledged messages the
	// parent waits for before it injects the failure; the number is drawn
	// uniformly in [MinAcks, MaxAcks] for each run, then divided for the
	// slower workloads of consumer-crash (by 20) and tx-crash (by 80).
	// Defaults 500 and 8000.
	MinAcks, MaxAcks int
	// RunTimeout bounds the time from the start of the child to the
	// failure; a child that has not acknowledged MinAcks messages by then
	// fails the run with an error. Default 60s.
	RunTimeout time.Duration
	// KeepDirs keeps every run's directory. Without it, only the runs that
	// lost data they were promised to keep, corrupted data, or failed, keep
	// theirs.
	KeepDirs bool
	// Progress, if not nil, receives the lab's progress. On a terminal (see
	// report.IsTerminal), one line rewritten in place with a carriage
	// return before each run; elsewhere (a log file, a pipe, a buffer), one
	// plain line per finished row, with its runs, acknowledged and lost
	// messages and verdict, written as the row finishes.
	Progress io.Writer
	// Executable is the program re-executed as the child; it must call
	// ChildMain when IsChild. Default os.Executable().
	Executable string
}

// Defaults for Options fields left zero.
const (
	DefaultRuns       = 10
	DefaultMinAcks    = 500
	DefaultMaxAcks    = 8000
	DefaultRunTimeout = 60 * time.Second
)

func (o Options) withDefaults() (Options, error) {
	if o.Runs < 0 || o.MinAcks < 0 || o.MaxAcks < 0 || o.RunTimeout < 0 {
		return o, errors.New("lab: negative option")
	}
	if o.Runs == 0 {
		o.Runs = DefaultRuns
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	if o.MinAcks == 0 {
		o.MinAcks = DefaultMinAcks
	}
	if o.MaxAcks == 0 {
		o.MaxAcks = max(DefaultMaxAcks, o.MinAcks)
	}
	if o.MinAcks < 1 || o.MaxAcks < o.MinAcks {
		return o, fmt.Errorf("lab: MinAcks %d and MaxAcks %d: want 1 <= MinAcks <= MaxAcks", o.MinAcks, o.MaxAcks)
	}
	if o.RunTimeout == 0 {
		o.RunTimeout = DefaultRunTimeout
	}
	if o.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("lab: finding the program to run as the child: %w", err)
		}
		o.Executable = exe
	}
	return o, nil
}

// Run runs opts.Runs runs of every configuration under every failure that
// applies to it (see Scenarios), one at a time, and returns the report. It
// blocks until they are done or ctx ends (the child of the current run is
// then killed). It returns an error, with the report of the runs completed
// so far, when the lab could not measure: a child that did not start,
// exited by itself or timed out, or a directory it could not read. A queue
// that loses data is not an error: it is what the report shows. Run is safe
// for concurrent use with distinct opts.Dir.
func Run(ctx context.Context, opts Options, configs []Config, failures []Failure) (*Report, error) {
	for _, f := range failures {
		if !f.valid() {
			return nil, fmt.Errorf("lab: unknown failure %q", f.Name)
		}
	}
	return RunScenarios(ctx, opts, Scenarios(configs, failures))
}

// RunScenarios is Run on a list of scenarios: one row each, in order.
func RunScenarios(ctx context.Context, opts Options, scenarios []Scenario) (*Report, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(scenarios) == 0 {
		return nil, errors.New("lab: no scenario to run")
	}
	configs := map[string]Config{}
	rows := map[[2]string]bool{}
	for _, sc := range scenarios {
		if !sc.Failure.valid() {
			return nil, fmt.Errorf("lab: unknown failure %q", sc.Failure.Name)
		}
		if !sc.Failure.Applies(sc.Config) {
			return nil, fmt.Errorf("lab: %s does not apply to %s", sc.Failure.Name, sc.Config.Label())
		}
		label := sc.Config.Label()
		if c, ok := configs[label]; ok && c != sc.Config {
			return nil, fmt.Errorf("lab: two configurations named %q", label)
		}
		configs[label] = sc.Config
		if rows[[2]string{label, sc.Failure.Name}] {
			return nil, fmt.Errorf("lab: %s under %s twice", label, sc.Failure.Name)
		}
		rows[[2]string{label, sc.Failure.Name}] = true
	}
	jobs := make([]rowJob, len(scenarios))
	for i, sc := range scenarios {
		cfg, f := sc.Config, sc.Failure
		jobs[i] = rowJob{
			row: Row{Config: cfg.Label(), Failure: f.Name, Promised: f.Promises(cfg)},
			run: func(ctx context.Context, labDir string, n int) (RunResult, error) {
				return runOnce(ctx, o, labDir, cfg, f, n)
			},
		}
	}
	return runRows(ctx, o, "zeroloss-lab-", jobs)
}

// rowJob is one row of a report: its runs are run(ctx, labDir, 1..o.Runs).
type rowJob struct {
	row Row // Config, Failure and Promised set
	run func(ctx context.Context, labDir string, n int) (RunResult, error)
}

// runRows runs every job's runs in order in a fresh directory under o.Dir,
// with a progress line, and returns the report. It stops at the first run
// that fails, keeping the rows measured so far (a partial row included) and
// naming the run's directory if it was kept.
func runRows(ctx context.Context, o Options, prefix string, jobs []rowJob) (*Report, error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	labDir, err := os.MkdirTemp(o.Dir, prefix)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	start := time.Now()
	report := &Report{Seed: o.Seed, RunsPerRow: o.Runs}
	progress := newProgressLine(o.Progress)
	defer progress.clear()
	total, done := len(jobs)*o.Runs, 0
	var runErr error
rows:
	for _, job := range jobs {
		row := job.row
		name := strings.TrimSpace(row.Config + " " + row.Failure)
		rowStart := time.Now()
		for n := 1; n <= o.Runs; n++ {
			done++
			progress.printf("[%d/%d] %s run %d/%d...", done, total, name, n, o.Runs)
			res, err := job.run(ctx, labDir, n)
			if err != nil {
				if _, statErr := os.Stat(res.Dir); res.Dir != "" && statErr == nil {
					err = fmt.Errorf("%w (directory kept: %s)", err, res.Dir)
				}
				runErr = fmt.Errorf("lab: %s run %d: %w", name, n, err)
				row.Elapsed = time.Since(rowStart)
				if len(row.Results) > 0 {
					report.addRow(row)
				}
				break rows
			}
			row.Results = append(row.Results, res)
		}
		row.Elapsed = time.Since(rowStart)
		report.addRow(row)
		progress.rowDone(len(report.Rows), len(jobs), &report.Rows[len(report.Rows)-1])
	}
	report.Elapsed = time.Since(start)
	if !o.KeepDirs {
		os.Remove(labDir) // fails, as it should, if a run kept its directory
	}
	return report, runErr
}

// runOnce is one run: start the child, read acks, inject the failure, recover
// and count.
func runOnce(ctx context.Context, o Options, labDir string, cfg Config, f Failure, n int) (res RunResult, err error) {
	res.Run = n
	rng := rand.New(rand.NewPCG(o.Seed, runStream(cfg, f, n)))
	res.KillAfter = max(1, (o.MinAcks+rng.IntN(o.MaxAcks-o.MinAcks+1))/f.killScale())
	dir := filepath.Join(labDir, fmt.Sprintf("%s-%s-%03d", strings.NewReplacer("=", "-", "/", "_").Replace(cfg.Label()), f.Name, n))
	keep := o.KeepDirs
	defer func() {
		// A loss without a promise (flush=async under power loss) is
		// expected, and not worth the disk space.
		lostPromised := (res.Lost > 0 || res.Phantom > 0) && f.Promises(cfg)
		if err != nil || lostPromised || res.Corrupt > 0 || res.Undelivered > 0 || res.Isolation > 0 ||
			res.CrossCheck != res.Counts || res.RecoveryError != "" {
			keep = true
		}
		if keep {
			res.Dir = dir
		} else {
			os.RemoveAll(dir)
		}
	}()

	dirs := dirsOf(dir, cfg, f.workload())
	args := append([]string{ChildCommand, "--dir", dir, "--run", strconv.Itoa(n), "--workload", f.workload(),
		"--timeout", (o.RunTimeout + 30*time.Second).String()}, cfg.args()...)
	if f.kind == powerLoss {
		args = append(args, "--power-loss")
	}
	if f.kind == queueOutage {
		res.Outage = outageKind(n)
		args = append(args, "--outage", res.Outage, "--outage-at", strconv.Itoa(max(1, res.KillAfter/2)))
	}
	child, err := crashChild(ctx, o, args, f.kind == powerLoss, res.KillAfter, f.kind == queueOutage)
	if err != nil {
		return res, err
	}
	acked := child.acked
	res.Refused, res.Spooled = child.refused, child.spooled
	if child.outageMet == 0 && f.kind == queueOutage {
		res.Outage += " (never met)"
	}
	if child.model != nil {
		mode := lossMode(rng.IntN(len(lossModeNames)))
		res.PowerLoss = mode.String()
		for _, d := range dirs.all() {
			if err := child.model.apply(d, rng, mode); err != nil {
				return res, fmt.Errorf("simulating the power loss: %w", err)
			}
		}
	}
	res.Acknowledged = len(acked)
	if elapsed := child.times.last.Sub(child.times.first); elapsed > 0 {
		res.Throughput = float64(len(acked)-1) / elapsed.Seconds()
	}
	switch f.kind {
	case consumerCrash:
		return res, recoverConsumer(&res, dir, cfg, acked)
	case txCrash:
		return res, recoverTx(&res, dir, cfg, acked)
	}

	countDir := dirs.queue
	if f.kind == diskLoss {
		// The leader's disk is gone; the follower's directory becomes the
		// queue.
		if err := os.RemoveAll(dirs.queue); err != nil {
			return res, fmt.Errorf("destroying the leader's directory: %w", err)
		}
		countDir = dirs.follower
	}
	recoverStart := time.Now()
	err = recoverQueue(countDir, dirs.spool, cfg)
	res.RecoveryTime = time.Since(recoverStart)
	if err != nil {
		var refused *openError
		if !errors.As(err, &refused) {
			return res, err
		}
		// The queue refuses its own directory: every acknowledged message
		// is out of reach. That is a finding, not a lab failure.
		res.RecoveryError = refused.Error()
		res.Lost, res.CrossCheck.Lost = len(acked), len(acked)
		return res, nil
	}
	stored, err := readLog(countDir)
	if err != nil {
		return res, fmt.Errorf("reading the log back: %w", err)
	}
	res.Counts = count(acked, stored)
	res.lostBelowKept = lostBelowKept(acked, stored)
	found, records, undecodable, err := scanDigests(countDir)
	if err != nil {
		return res, fmt.Errorf("scanning the log for the cross-check: %w", err)
	}
	res.CrossCheck = crossCheck(acked, found, undecodable)
	// The topics: what each group delivers, against what it owes.
	received, err := drainGroups(countDir, cfg)
	if err != nil {
		return res, fmt.Errorf("draining the topics' groups: %w", err)
	}
	res.Groups = countGroups(acked, stored, received)
	res.Undelivered, res.Isolation = groupTotals(res.Groups)
	res.CrossCheck.Undelivered, res.CrossCheck.Isolation = crossCheckGroups(acked, records)
	return res, nil
}

// openError is the queue refusing to open its directory after the failure.
type openError struct{ err error }

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

// spoolFlushTimeout bounds the restarted strict producer's flush of its
// spool into the recovered queue.
const spoolFlushTimeout = 60 * time.Second

// recoverQueue opens the queue in dir and closes it (the recovery a restart
// does). With spool set it does what a restarted application with a strict
// producer does in between: it opens a producer on the spool, which resends
// what it holds, and waits until the spool is empty.
func recoverQueue(dir, spool string, cfg Config) error {
	q, err := zeroloss.Open(dir, cfg.recoveryOptions())
	if err != nil {
		return &openError{err}
	}
	if spool != "" {
		err = flushSpool(q, spool)
	}
	if cerr := q.Close(); err == nil && cerr != nil {
		err = &openError{cerr}
	}
	return err
}

// flushSpool opens a strict producer on spool, sending to q, and waits until
// every message it holds is in q with SendOK.
func flushSpool(q *zeroloss.Queue, spool string) error {
	p, err := zeroloss.NewProducer(q, &zeroloss.ProducerOptions{Strict: true, SpoolDir: spool,
		MaxMessageSize: maxMessageSize})
	if err != nil {
		return fmt.Errorf("reopening the strict producer's spool: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), spoolFlushTimeout)
	defer cancel()
	err = p.Flush(ctx)
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("flushing the strict producer's spool: %w", err)
	}
	return nil
}

// runStream returns the PCG stream of one run, derived from the names of its
// configuration and failure and its number, so that adding a configuration
// does not move the kill points of the others.
func runStream(cfg Config, f Failure, n int) uint64 {
	return stream(cfg.Label(), f.Name, n)
}

func stream(config, failure string, n int) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%d", config, failure, n)
	return h.Sum64()
}

// ackTimes holds the times the parent read the first and the last ack.
type ackTimes struct{ first, last time.Time }

// childRun is what the parent read from a child it killed.
type childRun struct {
	acked     map[string]uint64 // acknowledged IDs: their seq, 0 for a spooled one
	times     ackTimes
	model     *powerModel // power loss only
	refused   int         // "rf" lines
	spooled   int         // "sp" lines
	outageMet int         // "outage end" lines (0 or 1)
}

// crashChild starts the child with args (Options.Executable with ChildEnv
// set), reads its acks, kills it after killAfter of them (and, with
// waitOutage, not before it printed "outage end"), reads the acks still in
// the pipe and waits for it. With power it also builds the model from the
// child's file reports, which it acknowledges on the child's stdin as they
// come.
func crashChild(ctx context.Context, o Options, args []string, power bool, killAfter int, waitOutage bool) (childRun, error) {
	ctx, cancel := context.WithTimeout(ctx, o.RunTimeout)
	defer cancel()
	run := childRun{acked: make(map[string]uint64, killAfter+1024)}
	if power {
		run.model = newPowerModel()
	}
	cmd := exec.CommandContext(ctx, o.Executable, args...)
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	stderr := &tailBuffer{limit: 4 << 10}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return childRun{}, err
	}
	var replies io.WriteCloser
	if power {
		if replies, err = cmd.StdinPipe(); err != nil {
			return childRun{}, err
		}
	}
	if err := cmd.Start(); err != nil {
		return childRun{}, fmt.Errorf("starting the child: %w", err)
	}
	killed := false
	outageBegun, outageEnded := false, false
	var lineErr error
	setErr := func(err error) {
		if lineErr == nil {
			lineErr = err
		}
	}
	rd := bufio.NewReader(stdout)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			// EOF; a final fragment without its newline cannot come from
			// one atomic write, and is not an ack.
			break
		}
		if report, isReport := strings.CutPrefix(line, "fs "); isReport && run.model != nil {
			if err := handleReport(run.model, report, replies); err != nil {
				setErr(err)
			}
			continue
		}
		switch strings.TrimSpace(line) {
		case "outage end":
			outageEnded = outageBegun
			run.outageMet++
			if !outageBegun {
				setErr(errors.New("the child ended an outage it did not begin"))
			}
		case "outage begin " + outageFsync, "outage begin " + outageDiskFull:
			outageBegun = true
		}
		if strings.HasPrefix(line, "outage ") {
			if !killed && outageEnded && len(run.acked) >= killAfter {
				if err := cmd.Process.Kill(); err != nil {
					return childRun{}, fmt.Errorf("killing the child: %w", err)
				}
				killed = true
			}
			continue
		}
		kind, id, seq, ok := parseAck(line)
		switch {
		case !ok:
			setErr(fmt.Errorf("unexpected line from the child: %q", strings.TrimSpace(line)))
			continue // test frameworks may print; keep reading to the end
		case kind == "rf":
			run.refused++
			continue
		case kind == "sp":
			run.spooled++
		}
		if _, dup := run.acked[id]; dup {
			setErr(fmt.Errorf("the child acknowledged %s twice", id))
		}
		run.acked[id] = seq
		now := time.Now()
		if run.times.first.IsZero() {
			run.times.first = now
		}
		run.times.last = now
		if len(run.acked) >= killAfter && !killed && (!waitOutage || outageEnded) {
			if err := cmd.Process.Kill(); err != nil {
				return childRun{}, fmt.Errorf("killing the child: %w", err)
			}
			killed = true
		}
	}
	waitErr := cmd.Wait()
	switch {
	case !killed && ctx.Err() != nil:
		return childRun{}, fmt.Errorf("the child acknowledged %d of %d messages before %w (stderr: %q)",
			len(run.acked), killAfter, context.Cause(ctx), stderr.String())
	case !killed:
		return childRun{}, fmt.Errorf("the child exited after %d of %d acks: %v (stderr: %q)",
			len(run.acked), killAfter, waitErr, stderr.String())
	case lineErr != nil:
		return childRun{}, lineErr
	}
	return run, nil
}

// handleReport applies one file report of the child to model and, if the
// child waits for it, acknowledges it with one byte on replies. A failed
// acknowledgement is not an error: the child may be dead already.
func handleReport(model *powerModel, report string, replies io.Writer) error {
	words, err := parseReport(report)
	if err != nil {
		return err
	}
	reply, err := model.handle(words)
	if err != nil {
		return err
	}
	if reply {
		replies.Write([]byte{'.'})
	}
	return nil
}

// parseAck parses an acknowledgement line: "ok ID SEQ\n" (a SendOK),
// "sp ID\n" (spooled by the strict producer; seq 0) or "rf ID\n" (refused:
// not acknowledged).
func parseAck(line string) (kind, id string, seq uint64, ok bool) {
	fields := strings.Fields(line)
	switch {
	case len(fields) == 2 && (fields[0] == "sp" || fields[0] == "rf"):
		return fields[0], fields[1], 0, true
	case len(fields) != 3 || fields[0] != "ok":
		return "", "", 0, false
	}
	seq, err := strconv.ParseUint(fields[2], 10, 64)
	if err != nil || seq == 0 {
		return "", "", 0, false
	}
	return "ok", fields[1], seq, true
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.buf = b.buf[over:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf))
}

// progressLine is the lab's progress on w: on a terminal, one line
// rewritten in place before each run (printf, clear); elsewhere, one plain
// line per finished row (rowDone). A nil w receives nothing.
type progressLine struct {
	w       io.Writer
	inPlace bool // w is a terminal
	lastLen int
}

func newProgressLine(w io.Writer) *progressLine {
	return &progressLine{w: w, inPlace: report.IsTerminal(w)}
}

// printf rewrites the line, on a terminal.
func (p *progressLine) printf(format string, args ...any) {
	if p.w == nil || !p.inPlace {
		return
	}
	s := fmt.Sprintf(format, args...)
	pad := max(p.lastLen-len(s), 0)
	fmt.Fprintf(p.w, "\r%s%s", s, strings.Repeat(" ", pad))
	p.lastLen = len(s)
}

// rowDone writes, when w is not a terminal, a line saying what row n of
// total measured, in one Write so that it reaches a log as the row ends.
func (p *progressLine) rowDone(n, total int, row *Row) {
	if p.w == nil || p.inPlace {
		return
	}
	fmt.Fprintf(p.w, "[%d/%d] %s (%s)\n", n, total, row.Summary(), row.Elapsed.Round(100*time.Millisecond))
}

// clear blanks the line, leaving the cursor at its start.
func (p *progressLine) clear() {
	if p.w == nil || p.lastLen == 0 {
		return
	}
	fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.lastLen))
	p.lastLen = 0
}
