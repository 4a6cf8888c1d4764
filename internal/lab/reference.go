package lab

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// References: other logs put through the power-loss harness, so that the
// report shows what owning the log buys. A reference lives outside this
// module (bench/peers holds github.com/tidwall/wal, and the library's go.mod
// must not require it); its program calls RunReferences as the parent and,
// when IsChild, runs its child with a ReferenceChild, which speaks the
// protocol of a power-loss child: "ok ID SEQ" per acknowledged entry and
// "fs …" reports of what it knows to be durable (see reportFS), waiting for
// the parent's byte after each sync report.
//
// A reference cannot be wrapped in the lab's file system, so its child
// reports what it can observe instead: after each acknowledged write it
// reports the size of every file it knows as synced (true when the log
// syncs before it returns, as tidwall/wal with NoSync false does), and the
// files it sees appear. The model stays conservative: a file is durable only
// from its report on, and nothing is reported between a write and its ack.

// Reference is another log run through the power-loss harness.
type Reference struct {
	// Name labels the reference's row, e.g. "tidwall/wal fsync each".
	Name string
	// Args are passed to the child after the lab's own flags (--dir,
	// --run, --timeout, --power-loss).
	Args []string
	// Dir is the log's directory within the run directory, where the
	// power loss is applied (e.g. "wal").
	Dir string
	// Read reads the log back after the power loss the way an application
	// would, through the log's own code (the main count). An error means
	// the log refused to open: every acknowledged entry counts as lost.
	Read func(dir string) (ReadBack, error)
	// Scan reads the log's files a second, independent way (the
	// cross-check).
	Scan func(dir string) (ReadBack, error)
}

// ReadBack is what a reading of a reference log found.
type ReadBack struct {
	// Bodies holds, for every message ID found, the SHA-256 of each body
	// found under it (more than one: duplicates).
	Bodies map[string][][sha256.Size]byte
	// Foreign counts the entries that are no message the child wrote (an
	// empty entry read from zeros, for instance); they are the reference
	// rows' phantoms.
	Foreign int
	// Undecodable counts entries or segments that could not be read.
	Undecodable int
}

// Add records an entry whose data is "ID\nBODY" (see EntryData), or a
// foreign one.
func (rb *ReadBack) Add(data []byte) {
	id, body, ok := strings.Cut(string(data), "\n")
	if !ok || id == "" {
		rb.Foreign++
		return
	}
	if rb.Bodies == nil {
		rb.Bodies = map[string][][sha256.Size]byte{}
	}
	rb.Bodies[id] = append(rb.Bodies[id], sha256.Sum256([]byte(body)))
}

// counts turns a reading into the counts of a run.
func (rb ReadBack) counts(acked map[string]uint64) Counts {
	found := make(map[string][]digest, len(rb.Bodies))
	for id, ds := range rb.Bodies {
		for _, d := range ds {
			found[id] = append(found[id], digest(d))
		}
	}
	c := crossCheck(acked, found, rb.Undecodable)
	c.Phantom = rb.Foreign
	c.Recovered += rb.Foreign
	return c
}

// Count compares a reading with the acknowledged messages (ID → the seq
// their acknowledgement named) and returns the counts of a run, as the
// reference rows count theirs: for a program outside this package that
// reads a log back two ways (the main count and the cross-check).
func (rb ReadBack) Count(acked map[string]uint64) Counts { return rb.counts(acked) }

// AddRow sums row's results into its totals (runs, acknowledged, lost, …,
// cross-check mismatches, median throughput) and appends it to the report,
// as Run does for its own rows: for a program outside this package that
// runs its own rows.
func (rep *Report) AddRow(row Row) { rep.addRow(row) }

// WriteTableAndJSON writes rep's wide table (every column) to w and, if
// jsonFile is not empty, its JSON to that file: what a program outside this
// package that runs rows (a reference log, another backend) prints for
// zeroloss lab to read.
func (rep *Report) WriteTableAndJSON(w io.Writer, jsonFile string) error {
	err := rep.WriteWideTable(w)
	if jsonFile != "" {
		f, ferr := os.Create(jsonFile)
		if ferr == nil {
			ferr = errors.Join(rep.WriteJSON(f), f.Close())
		}
		err = errors.Join(err, ferr)
	}
	return err
}

// MessageID names entry i of a reference child's run (producer 0).
func MessageID(run, i int) string { return messageID(run, 0, i) }

// EntryData returns what a reference child writes for id: "ID\n" and the
// body the lab derives from the ID.
func EntryData(id string) []byte { return append([]byte(id+"\n"), bodyFor(id)...) }

// RunReferences runs opts.Runs power-loss runs of each reference, the
// child being opts.Executable, and returns one row per reference. Its rows
// are measured, never promised. Errors are as for Run.
func RunReferences(ctx context.Context, opts Options, refs []Reference) (*Report, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, errors.New("lab: no reference to run")
	}
	jobs := make([]rowJob, len(refs))
	for i, ref := range refs {
		jobs[i] = rowJob{
			row: Row{Config: ref.Name, Failure: PowerLoss.Name},
			run: func(ctx context.Context, labDir string, n int) (RunResult, error) {
				return runReference(ctx, o, labDir, ref, n)
			},
		}
	}
	return runRows(ctx, o, "zeroloss-lab-ref-", jobs)
}

// runReference is one power-loss run of a reference.
func runReference(ctx context.Context, o Options, labDir string, ref Reference, n int) (res RunResult, err error) {
	res.Run = n
	rng := rand.New(rand.NewPCG(o.Seed, stream(ref.Name, PowerLoss.Name, n)))
	res.KillAfter = o.MinAcks + rng.IntN(o.MaxAcks-o.MinAcks+1)
	dir := filepath.Join(labDir, fmt.Sprintf("%s-%03d", strings.NewReplacer("/", "_", " ", "_", ",", "").Replace(ref.Name), n))
	res.Dir = dir
	defer func() {
		if err == nil && !o.KeepDirs && res.CrossCheckAgrees() {
			os.RemoveAll(dir)
			res.Dir = ""
		}
	}()
	args := append([]string{ChildCommand, "--dir", dir, "--run", strconv.Itoa(n),
		"--timeout", (o.RunTimeout + 30*time.Second).String(), "--power-loss"}, ref.Args...)
	child, err := crashChild(ctx, o, args, true, res.KillAfter, false)
	if err != nil {
		return res, err
	}
	mode := lossMode(rng.IntN(len(lossModeNames)))
	res.PowerLoss = mode.String()
	logDir := filepath.Join(dir, ref.Dir)
	if err := child.model.apply(logDir, rng, mode); err != nil {
		return res, fmt.Errorf("simulating the power loss: %w", err)
	}
	res.Acknowledged = len(child.acked)
	if elapsed := child.times.last.Sub(child.times.first); elapsed > 0 {
		res.Throughput = float64(len(child.acked)-1) / elapsed.Seconds()
	}
	start := time.Now()
	main, err := ref.Read(logDir)
	res.RecoveryTime = time.Since(start)
	if err != nil {
		res.RecoveryError = err.Error()
		res.Lost, res.CrossCheck.Lost = len(child.acked), len(child.acked)
		return res, nil
	}
	res.Counts = main.counts(child.acked)
	scan, err := ref.Scan(logDir)
	if err != nil {
		return res, fmt.Errorf("scanning the log for the cross-check: %w", err)
	}
	res.CrossCheck = scan.counts(child.acked)
	return res, nil
}

// ReferenceChild is the child's side of a reference run: the flags the lab
// passes, and the reports and acks it must print.
type ReferenceChild struct {
	// Dir is the run directory; Run the run number (for MessageID).
	Dir string
	Run int
	// Timeout is how long the child may live: it must exit after it.
	Timeout time.Duration

	out   *ackWriter
	fs    *reportFS
	sizes map[string]int64 // reported synced size by path
}

// NewReferenceChild parses the lab's flags (args without the program name,
// ChildCommand first) and those the reference defines on extra (which may
// be nil), and returns the child's reporter, writing to stdout and reading
// the parent's replies from stdin.
func NewReferenceChild(args []string, extra *flag.FlagSet) (*ReferenceChild, error) {
	if len(args) > 0 && args[0] == ChildCommand {
		args = args[1:]
	}
	if extra == nil {
		extra = flag.NewFlagSet(ChildCommand, flag.ContinueOnError)
	}
	c := &ReferenceChild{sizes: map[string]int64{}}
	extra.StringVar(&c.Dir, "dir", "", "run directory")
	extra.IntVar(&c.Run, "run", 0, "run number")
	extra.DurationVar(&c.Timeout, "timeout", time.Minute, "exit if still alive after this long")
	power := extra.Bool("power-loss", false, "report to the parent (required)")
	if err := extra.Parse(args); err != nil {
		return nil, err
	}
	if c.Dir == "" || !*power || extra.NArg() > 0 {
		return nil, fmt.Errorf("%s: want --dir DIR --power-loss [--run N] [--timeout D] and the reference's flags", ChildCommand)
	}
	c.out = &ackWriter{w: os.Stdout}
	c.fs = newReportFS(nil, c.out, os.Stdin)
	return c, nil
}

// newReferenceChildTo is NewReferenceChild's reporter on other streams, for
// tests.
func newReferenceChildTo(w io.Writer, replies io.Reader) *ReferenceChild {
	out := &ackWriter{w: w}
	return &ReferenceChild{out: out, fs: newReportFS(nil, out, replies), sizes: map[string]int64{}}
}

// Observe reports what the child knows of the files of dir after a write the
// log made durable before returning: each file not seen before is reported
// created (and, with dirSynced, its directory entry durable, as if the log
// had fsynced the directory), and each file whose size changed is reported
// synced at its current size.
func (c *ReferenceChild) Observe(dir string, dirSynced bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	created := false
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		names = append(names, e.Name())
		path := filepath.Join(dir, e.Name())
		if _, known := c.sizes[path]; !known {
			c.sizes[path] = -1
			created = true
			c.fs.mu.Lock()
			err := c.fs.report(false, "c", strconv.Quote(path))
			c.fs.mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
	if created && dirSynced {
		if err := c.reportSync("d", "D", append([]string{strconv.Quote(filepath.Clean(dir))}, quoteAll(names)...)); err != nil {
			return err
		}
	}
	for _, name := range names {
		path := filepath.Join(dir, name)
		info, err := os.Stat(path)
		if err != nil {
			return err
		}
		if info.Size() == c.sizes[path] {
			continue
		}
		if err := c.reportSync("s", "S", []string{strconv.Quote(path), strconv.FormatInt(info.Size(), 10)}); err != nil {
			return err
		}
		c.sizes[path] = info.Size()
	}
	return nil
}

// reportSync reports a sync (issue, the parent's reply, completion) that the
// log already did.
func (c *ReferenceChild) reportSync(issue, done string, words []string) error {
	r := c.fs
	r.mu.Lock()
	defer r.mu.Unlock()
	r.token++
	token := strconv.FormatUint(r.token, 10)
	if err := r.report(true, append([]string{issue, token}, words...)...); err != nil {
		return err
	}
	return r.report(false, done, token)
}

// Ack prints the acknowledgement of the entry id, written at index seq (> 0).
func (c *ReferenceChild) Ack(id string, seq uint64) error { return c.out.ack(id, seq) }

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strconv.Quote(n)
	}
	return out
}
