package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/hook"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// The child process is the program that runs the lab, re-executed with
// ChildCommand as its first argument and ChildEnv=1 in its environment. Its
// main function, or a test binary's TestMain, checks IsChild before anything
// else and hands over to ChildMain.
const (
	ChildEnv     = "ZEROLOSS_LAB_CHILD"
	ChildCommand = "lab-child"
)

// producers is how many goroutines send in the child.
const producers = 8

// Exit statuses of ChildMain. It never exits normally: the parent kills it.
const (
	childUsage    = 2 // bad arguments
	childOpen     = 3 // the queue did not open
	childSend     = 4 // a Send failed
	childDeadline = 5 // nobody killed it within --timeout
)

// IsChild reports whether this process is a lab child: ChildEnv is "1" and
// args (without the program name) start with ChildCommand.
func IsChild(args []string) bool {
	return os.Getenv(ChildEnv) == "1" && len(args) > 0 && args[0] == ChildCommand
}

// The child's workloads, chosen by --workload (see Failure.workload).
const (
	workloadProduce = "produce" // send from 8 goroutines (process-crash, power-loss)
	workloadConsume = "consume" // send and consume in one process (consumer-crash)
	workloadTx      = "tx"      // transactional sends (tx-crash)
)

// queueDir is where a run of workload keeps its queue: the run directory
// itself for workloadProduce, whose count reads every file of it, and its
// subdirectory "q" for the others, whose side files (the consumer's
// processed file, the local transactions' file) sit next to it.
func queueDir(runDir, workload string) string {
	if workload == workloadProduce {
		return runDir
	}
	return filepath.Join(runDir, "q")
}

// runDirs are the directories of one run.
type runDirs struct {
	queue    string // the (leader) queue
	follower string // the follower's log; "" without replication
	spool    string // the strict producer's spool; "" without one
}

// all returns the directories in use.
func (d runDirs) all() []string {
	out := []string{d.queue}
	for _, dir := range []string{d.follower, d.spool} {
		if dir != "" {
			out = append(out, dir)
		}
	}
	return out
}

// dirsOf lays out a run directory: the queue where queueDir says, except
// that a produce workload with a follower or a spool keeps its queue in "q"
// too, next to "follower" and "spool".
func dirsOf(runDir string, cfg Config, workload string) runDirs {
	d := runDirs{queue: queueDir(runDir, workload)}
	if cfg.Replication != zeroloss.ReplicateNone || cfg.Producer == ProducerStrict {
		d.queue = filepath.Join(runDir, "q")
	}
	if cfg.Replication != zeroloss.ReplicateNone {
		d.follower = filepath.Join(runDir, "follower")
	}
	if cfg.Producer == ProducerStrict {
		d.spool = filepath.Join(runDir, "spool")
	}
	return d
}

// childFlags are the child's command line, parsed.
type childFlags struct {
	dir      string
	run      int
	workload string
	power    bool
	timeout  time.Duration
	cfg      Config
	outage   outagePlan
}

// parseChildFlags parses and checks the child's arguments.
func parseChildFlags(args []string) (childFlags, error) {
	var cf childFlags
	fs := flag.NewFlagSet(ChildCommand, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.StringVar(&cf.dir, "dir", "", "run directory")
	flush := fs.String("flush", "sync", "flush mode: sync or async")
	fs.IntVar(&cf.run, "run", 0, "run number, part of every message ID")
	flushInterval := fs.Duration("flush-interval", 0, "queue FlushInterval (0: the default)")
	fs.BoolVar(&cf.power, "power-loss", false, "report file operations to the parent (see reportFS)")
	dedupOff := fs.Bool("dedup-off", false, "turn the queue's deduplication off")
	fs.StringVar(&cf.workload, "workload", workloadProduce, "produce, consume or tx")
	ack := fs.String("ack", "none", "consumer ack mode for --workload consume: after-handling, on-receive or ordered")
	repl := fs.String("repl", "none", "replication: none, async or sync (a follower in this process)")
	producer := fs.String("producer", "plain", "producer of --workload produce: plain or strict")
	fs.StringVar(&cf.outage.kind, "outage", "", "queue outage to inject: fsync or disk-full")
	fs.IntVar(&cf.outage.at, "outage-at", 0, "acknowledged messages before the outage begins")
	fs.DurationVar(&cf.outage.hold, "outage-hold", outageHold, "how long the outage lasts after the first refusal")
	fs.DurationVar(&cf.timeout, "timeout", time.Minute, "exit if still alive after this long")
	if err := fs.Parse(args); err != nil {
		return cf, err
	}
	mode, err := parseFlush(*flush)
	var ackMode AckMode
	var replMode zeroloss.ReplicationMode
	var prodMode ProducerMode
	if err == nil {
		ackMode, err = parseAckMode(*ack)
	}
	if err == nil {
		replMode, err = parseReplication(*repl)
	}
	if err == nil {
		prodMode, err = parseProducerMode(*producer)
	}
	switch {
	case err != nil:
	case cf.dir == "":
		err = errors.New("missing --dir")
	case *flushInterval < 0:
		err = errors.New("negative --flush-interval")
	case cf.workload != workloadProduce && cf.workload != workloadConsume && cf.workload != workloadTx:
		err = fmt.Errorf("unknown --workload %q", cf.workload)
	case (cf.workload == workloadConsume) != (ackMode != AckNone):
		err = errors.New("--ack after-handling, on-receive or ordered goes with --workload consume, and only with it")
	case cf.power && cf.workload != workloadProduce:
		err = errors.New("--power-loss goes with --workload produce")
	case prodMode == ProducerTx:
		err = errors.New("the transactional producer is --workload tx")
	case prodMode != ProducerPlain && cf.workload != workloadProduce:
		err = errors.New("--producer strict goes with --workload produce")
	case cf.outage.kind != "" && cf.outage.kind != outageFsync && cf.outage.kind != outageDiskFull:
		err = fmt.Errorf("unknown --outage %q", cf.outage.kind)
	case cf.outage.kind != "" && (cf.workload != workloadProduce || cf.power || replMode != zeroloss.ReplicateNone):
		err = errors.New("--outage goes with --workload produce, without --power-loss and without --repl")
	case cf.outage.at < 0 || cf.outage.hold < 0:
		err = errors.New("negative --outage-at or --outage-hold")
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cf.cfg = Config{Flush: mode, FlushInterval: *flushInterval, Replication: replMode, Producer: prodMode,
		DedupOff: *dedupOff, Ack: ackMode}
	if cf.workload == workloadTx {
		cf.cfg.Producer = ProducerTx
	}
	return cf, err
}

// ChildMain is the child's side of a run. args are the process's arguments
// without the program name (ChildCommand first, which it skips). It opens the
// queue of the run directory --dir with the configuration given by the flags
// (with --repl, a follower too, in this process) and runs the --workload
// until it is killed: produce sends from 8 goroutines, printing "ok ID SEQ"
// on stdout, in one write, for every SendOK (and, with --producer strict,
// "sp ID" for every message spooled; "rf ID" for a send refused: an error
// or another status); consume (see consumeChild) also consumes; tx (see
// txChild) sends transactional messages. With --power-loss it also reports
// its file operations on stdout, as "fs …" lines, and reads the parent's
// acknowledgements of its syncs on stdin (see reportFS); with --outage it
// injects a fault under the queue (see outagePlan). It returns an exit
// status only when something went wrong (and says what on stderr): the
// caller passes it to os.Exit.
func ChildMain(args []string) int {
	if len(args) > 0 && args[0] == ChildCommand {
		args = args[1:]
	}
	cf, err := parseChildFlags(args)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "%s: %v; want --dir DIR [--flush sync|async] [--flush-interval D] [--repl none|async|sync] [--producer plain|strict] [--dedup-off] [--workload produce|consume|tx] [--ack after-handling|on-receive|ordered] [--power-loss] [--outage fsync|disk-full --outage-at N [--outage-hold D]] [--run N] [--timeout D]\n", ChildCommand, err)
		}
		return childUsage
	}
	cfg, dirs := cf.cfg, dirsOf(cf.dir, cf.cfg, cf.workload)
	acks := &ackWriter{w: os.Stdout}
	var fault *vfs.FaultFS
	switch {
	case cf.power:
		hook.FS = newReportFS(vfs.OS, acks, os.Stdin)
	case cf.outage.kind != "":
		fault = vfs.NewFault(vfs.OS)
		hook.FS = &routeFS{FS: vfs.OS, dir: dirs.queue, fault: fault}
	}
	opts := cfg.queueOptions()
	for _, d := range append(dirs.all(), cf.dir) {
		if err := os.MkdirAll(d, 0o700); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
			return childOpen
		}
	}
	var tx *txDB
	if cf.workload == workloadTx {
		if tx, err = openTxDB(filepath.Join(cf.dir, txDBFile)); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
			return childOpen
		}
		opts.TxChecker, opts.TxTimeout, opts.TxCheckInterval = tx.liveChecker, childTxTimeout, childTxTimeout
	}
	q, err := zeroloss.Open(dirs.queue, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
		return childOpen
	}
	failed := make(chan error, producers+consumers+2)
	if dirs.follower != "" {
		if err := attachFollower(q, dirs.follower, failed); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
			return childOpen
		}
	}
	if cf.workload == workloadProduce {
		if err := declareGroups(q); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
			return childOpen
		}
	}
	var strict *zeroloss.Producer
	if cfg.Producer == ProducerStrict {
		strict, err = zeroloss.NewProducer(q, &zeroloss.ProducerOptions{Strict: true, SpoolDir: dirs.spool,
			MaxMessageSize: maxMessageSize})
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
			return childOpen
		}
	}
	switch {
	case cf.workload == workloadProduce && cf.outage.kind == "" && strict == nil:
		for p := range producers {
			go func() { failed <- produce(q, cf.run, p, acks) }()
		}
	case cf.workload == workloadProduce:
		var current atomic.Pointer[zeroloss.Queue]
		current.Store(q)
		var out *outage
		if cf.outage.kind != "" {
			out = &outage{outagePlan: cf.outage, fault: fault, dir: dirs.queue, opts: opts, queue: &current, producer: strict}
			go func() {
				if err := out.run(acks); err != nil {
					failed <- err
				}
			}()
		}
		for p := range producers {
			s := sender{queue: &current, strict: strict, outage: out}
			go func() { failed <- s.loop(cf.run, p, acks) }()
		}
	case cf.workload == workloadConsume:
		if err := consumeChild(q, cf.dir, cfg.Ack, cf.run, acks, failed); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
			return childOpen
		}
	case cf.workload == workloadTx:
		for p := range producers {
			go func() { failed <- produceTx(q, tx, cf.run, p, acks) }()
		}
	}
	select {
	case err := <-failed:
		fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
		return childSend
	case <-time.After(cf.timeout):
		fmt.Fprintf(os.Stderr, "%s: not killed within %v\n", ChildCommand, cf.timeout)
		return childDeadline
	}
}

// attachFollower starts a follower on dir, in this process, and attaches it
// to q over a net.Pipe. If the follower stops, its error goes to failed: a
// run whose follower dies is not a measurement.
func attachFollower(q *zeroloss.Queue, dir string, failed chan<- error) error {
	leaderEnd, followerEnd := net.Pipe()
	go func() {
		err := zeroloss.Follow(context.Background(), dir, followerEnd,
			&zeroloss.FollowOptions{SegmentSize: segmentSize})
		failed <- fmt.Errorf("the follower stopped: %w", err)
	}()
	if err := q.AttachReplica(leaderEnd); err != nil {
		return fmt.Errorf("attaching the follower: %w", err)
	}
	return nil
}

// produce is one of the child's producers with Queue.Send and no outage:
// it sends messages messageID(run, producer, 0), (…, 1), … and prints an ack
// for each SendOK, and a refusal for another status. It returns only on an
// error. Tests replace it to make the child misbehave.
var produce = func(q *zeroloss.Queue, run, producer int, acks *ackWriter) error {
	for i := 0; ; i++ {
		id := messageID(run, producer, i)
		res, err := q.Send(context.Background(), messageFor(id))
		if err != nil {
			return fmt.Errorf("send %s: %w", id, err)
		}
		if res.Status == zeroloss.SendOK {
			err = acks.ack(id, res.Seq)
		} else {
			err = acks.refused(id)
		}
		if err != nil {
			return err
		}
	}
}

// ackWriter prints ack lines, one write each: a write of a line this short
// to a pipe is atomic, so a kill never leaves half a line for the parent.
// It counts the acknowledgements it printed (acks and spooled messages).
type ackWriter struct {
	mu      sync.Mutex
	w       io.Writer
	buf     []byte
	acked   int
	waiters []ackWaiter
}

// ackWaiter is a channel closed once n acknowledgements are printed.
type ackWaiter struct {
	n  int
	ch chan struct{}
}

// ack prints "ok ID SEQ": a SendOK.
func (a *ackWriter) ack(id string, seq uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.buf = append(a.buf[:0], "ok "...)
	a.buf = append(a.buf, id...)
	a.buf = append(a.buf, ' ')
	a.buf = strconv.AppendUint(a.buf, seq, 10)
	a.buf = append(a.buf, '\n')
	return a.writeAck()
}

// spooled prints "sp ID": the strict producer spooled the message.
func (a *ackWriter) spooled(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.buf = append(append(append(a.buf[:0], "sp "...), id...), '\n')
	return a.writeAck()
}

// refused prints "rf ID": the send was not acknowledged (an error, or a
// status other than SendOK).
func (a *ackWriter) refused(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.buf = append(append(append(a.buf[:0], "rf "...), id...), '\n')
	_, err := a.w.Write(a.buf)
	return err
}

// writeAck writes a.buf, an acknowledgement, and counts it. a.mu is held.
func (a *ackWriter) writeAck() error {
	if _, err := a.w.Write(a.buf); err != nil {
		return err
	}
	a.acked++
	kept := a.waiters[:0]
	for _, w := range a.waiters {
		if a.acked >= w.n {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	a.waiters = kept
	return nil
}

// reached returns a channel closed once n acknowledgements are printed.
func (a *ackWriter) reached(n int) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch := make(chan struct{})
	if a.acked >= n {
		close(ch)
	} else {
		a.waiters = append(a.waiters, ackWaiter{n, ch})
	}
	return ch
}

// line writes b, a whole line, in one write that no ack interleaves with.
func (a *ackWriter) line(b []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, err := a.w.Write(b)
	return err
}

// messageID names message i of a producer in a run.
func messageID(run, producer, i int) string {
	return fmt.Sprintf("r%d-p%d-%d", run, producer, i)
}

// bodyFor derives a message's body from its ID: the hex SHA-256 of the ID,
// repeated 1 to 8 times (64 to 512 bytes), so that both the content and the
// length of a body say whether it belongs to its ID.
func bodyFor(id string) []byte {
	sum := sha256.Sum256([]byte(id))
	hexSum := hex.EncodeToString(sum[:])
	repeat := 1 + int(sum[0]%8)
	body := make([]byte, 0, len(hexSum)*repeat)
	for range repeat {
		body = append(body, hexSum...)
	}
	return body
}
