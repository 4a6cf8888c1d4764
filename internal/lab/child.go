package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
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

// ChildMain is the child's side of a run. args are the process's arguments
// without the program name (ChildCommand first, which it skips). It opens the
// queue of the run directory --dir with the configuration given by the flags
// and runs the --workload until it is killed: produce sends from 8
// goroutines, printing "ok ID SEQ" on stdout, in one write, for every SendOK;
// consume (see consumeChild) also consumes; tx (see txChild) sends
// transactional messages. With --power-loss it also reports its file
// operations on stdout, as "fs …" lines, and reads the parent's
// acknowledgements of its syncs on stdin (see reportFS). It returns an exit
// status only when something went wrong (and says what on stderr): the
// caller passes it to os.Exit.
func ChildMain(args []string) int {
	if len(args) > 0 && args[0] == ChildCommand {
		args = args[1:]
	}
	fs := flag.NewFlagSet(ChildCommand, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	dir := fs.String("dir", "", "run directory")
	flush := fs.String("flush", "sync", "flush mode: sync or async")
	run := fs.Int("run", 0, "run number, part of every message ID")
	flushInterval := fs.Duration("flush-interval", 0, "queue FlushInterval (0: the default)")
	power := fs.Bool("power-loss", false, "report file operations to the parent (see reportFS)")
	dedupOff := fs.Bool("dedup-off", false, "turn the queue's deduplication off")
	workload := fs.String("workload", workloadProduce, "produce, consume or tx")
	ack := fs.String("ack", "none", "consumer ack mode for --workload consume: after-handling or on-receive")
	timeout := fs.Duration("timeout", time.Minute, "exit if still alive after this long")
	if err := fs.Parse(args); err != nil {
		return childUsage
	}
	mode, err := parseFlush(*flush)
	var ackMode AckMode
	if err == nil {
		ackMode, err = parseAckMode(*ack)
	}
	switch {
	case err != nil:
	case *dir == "":
		err = errors.New("missing --dir")
	case *flushInterval < 0:
		err = errors.New("negative --flush-interval")
	case *workload != workloadProduce && *workload != workloadConsume && *workload != workloadTx:
		err = fmt.Errorf("unknown --workload %q", *workload)
	case (*workload == workloadConsume) != (ackMode != AckNone):
		err = errors.New("--ack after-handling or on-receive goes with --workload consume, and only with it")
	case *power && *workload != workloadProduce:
		err = errors.New("--power-loss goes with --workload produce")
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v; want --dir DIR [--flush sync|async] [--flush-interval D] [--dedup-off] [--workload produce|consume|tx] [--ack after-handling|on-receive] [--power-loss] [--run N] [--timeout D]\n", ChildCommand, err)
		return childUsage
	}
	cfg := Config{Flush: mode, FlushInterval: *flushInterval, DedupOff: *dedupOff, Ack: ackMode}
	acks := &ackWriter{w: os.Stdout}
	if *power {
		hook.FS = newReportFS(vfs.OS, acks, os.Stdin)
	}
	opts := cfg.queueOptions()
	if *workload != workloadProduce {
		if err := os.MkdirAll(*dir, 0o700); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
			return childOpen
		}
	}
	var tx *txDB
	if *workload == workloadTx {
		if tx, err = openTxDB(filepath.Join(*dir, txDBFile)); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
			return childOpen
		}
		opts.TxChecker, opts.TxTimeout, opts.TxCheckInterval = tx.liveChecker, childTxTimeout, childTxTimeout
	}
	q, err := zeroloss.Open(queueDir(*dir, *workload), opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
		return childOpen
	}
	failed := make(chan error, producers+consumers)
	switch *workload {
	case workloadProduce:
		for p := range producers {
			go func() { failed <- produce(q, *run, p, acks) }()
		}
	case workloadConsume:
		if err := consumeChild(q, *dir, ackMode, *run, acks, failed); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
			return childOpen
		}
	case workloadTx:
		for p := range producers {
			go func() { failed <- produceTx(q, tx, *run, p, acks) }()
		}
	}
	select {
	case err := <-failed:
		fmt.Fprintf(os.Stderr, "%s: %v\n", ChildCommand, err)
		return childSend
	case <-time.After(*timeout):
		fmt.Fprintf(os.Stderr, "%s: not killed within %v\n", ChildCommand, *timeout)
		return childDeadline
	}
}

// produce is one of the child's producers: it sends messages
// messageID(run, producer, 0), (…, 1), … and prints an ack for each SendOK.
// It returns only on an error. Tests replace it to make the child misbehave.
var produce = func(q *zeroloss.Queue, run, producer int, acks *ackWriter) error {
	for i := 0; ; i++ {
		id := messageID(run, producer, i)
		res, err := q.Send(context.Background(), &zeroloss.Message{ID: id, Body: bodyFor(id)})
		if err != nil {
			return fmt.Errorf("send %s: %w", id, err)
		}
		if res.Status == zeroloss.SendOK {
			if err := acks.ack(id, res.Seq); err != nil {
				return err
			}
		}
	}
}

// ackWriter prints ack lines, one write each: a write of a line this short
// to a pipe is atomic, so a kill never leaves half a line for the parent.
type ackWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func (a *ackWriter) ack(id string, seq uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.buf = append(a.buf[:0], "ok "...)
	a.buf = append(a.buf, id...)
	a.buf = append(a.buf, ' ')
	a.buf = strconv.AppendUint(a.buf, seq, 10)
	a.buf = append(a.buf, '\n')
	_, err := a.w.Write(a.buf)
	return err
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
