package lab

import (
	"fmt"
	"time"

	"github.com/zerolossmq/zeroloss"
)

// Queue settings every run uses: small segments, so a run of a few thousand
// messages rolls over several of them and recovery crosses segment
// boundaries.
const (
	segmentSize    = 1 << 20
	maxMessageSize = 64 << 10
)

// Config is one queue configuration the lab measures: the flush mode and, for
// the consumer-crash failure, how the consumer acknowledges. Replication and a
// strict producer will be further fields, each carried to the child by args.
type Config struct {
	// Name labels the configuration in the report; empty means one built
	// from the fields, such as "flush=sync".
	Name string
	// Flush is the queue's flush mode.
	Flush zeroloss.FlushMode
	// FlushInterval is the queue's FlushInterval (how often FlushAsync
	// syncs in the background); 0 means the queue's default.
	FlushInterval time.Duration
	// DedupOff turns the queue's deduplication of resent IDs off (the lab's
	// self-test plants duplicates with it).
	DedupOff bool
	// Ack is how the child's consumer acknowledges; AckNone (the zero
	// value) means the child does not consume. Only ConsumerCrash applies
	// to a configuration with a consumer, and only to those.
	Ack AckMode
}

// AckMode is when a consumer acknowledges a message.
type AckMode int

const (
	// AckNone: no consumer.
	AckNone AckMode = iota
	// AckAfterHandling: the documented way. The consumer handles the
	// message (appends it to its fsynced processed file), then acks it.
	AckAfterHandling
	// AckOnReceive: the anti-pattern. The consumer acks as soon as it
	// receives the message, then handles it in a goroutine.
	AckOnReceive
)

var ackModeNames = [...]string{"none", "after-handling", "on-receive"}

func (m AckMode) String() string {
	if m < 0 || int(m) >= len(ackModeNames) {
		return fmt.Sprintf("AckMode(%d)", int(m))
	}
	return ackModeNames[m]
}

// parseAckMode is the inverse of AckMode.String.
func parseAckMode(s string) (AckMode, error) {
	for i, name := range ackModeNames {
		if name == s {
			return AckMode(i), nil
		}
	}
	return 0, fmt.Errorf("unknown ack mode %q, want none, after-handling or on-receive", s)
}

// DefaultConfigs returns the configurations without a consumer:
// flush=sync and flush=async.
func DefaultConfigs() []Config {
	return []Config{{Flush: zeroloss.FlushSync}, {Flush: zeroloss.FlushAsync}}
}

// AllConfigs returns every configuration the lab knows: each flush mode
// without a consumer, and with a consumer of each AckMode.
func AllConfigs() []Config {
	var out []Config
	for _, flush := range []zeroloss.FlushMode{zeroloss.FlushSync, zeroloss.FlushAsync} {
		for _, ack := range []AckMode{AckNone, AckAfterHandling, AckOnReceive} {
			out = append(out, Config{Flush: flush, Ack: ack})
		}
	}
	return out
}

// Label returns c.Name, or the name built from c's fields, such as
// "flush=sync" or "flush=sync/ack=on-receive".
func (c Config) Label() string {
	if c.Name != "" {
		return c.Name
	}
	label := "flush=" + c.Flush.String()
	if c.FlushInterval != 0 {
		label += fmt.Sprintf("/interval=%v", c.FlushInterval)
	}
	if c.Ack != AckNone {
		label += "/ack=" + c.Ack.String()
	}
	return label
}

// queueOptions returns the queue options of c, for the child and for recovery.
func (c Config) queueOptions() *zeroloss.Options {
	o := &zeroloss.Options{Flush: c.Flush, FlushInterval: c.FlushInterval,
		SegmentSize: segmentSize, MaxMessageSize: maxMessageSize}
	if c.DedupOff {
		o.DedupWindow = -1
	}
	return o
}

// args returns the child's command-line flags that carry c.
func (c Config) args() []string {
	args := []string{"--flush", c.Flush.String()}
	if c.FlushInterval != 0 {
		args = append(args, "--flush-interval", c.FlushInterval.String())
	}
	if c.DedupOff {
		args = append(args, "--dedup-off")
	}
	if c.Ack != AckNone {
		args = append(args, "--ack", c.Ack.String())
	}
	return args
}

// parseFlush is the inverse of FlushMode.String.
func parseFlush(s string) (zeroloss.FlushMode, error) {
	for _, m := range []zeroloss.FlushMode{zeroloss.FlushSync, zeroloss.FlushAsync} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown flush mode %q, want sync or async", s)
}

// failureKind tells the runner how to inject a failure, and which workload
// the child runs.
type failureKind int

const (
	killProcess   failureKind = iota + 1 // workload "produce"
	powerLoss                            // workload "produce", with file reports
	consumerCrash                        // workload "consume"
	txCrash                              // workload "tx"
)

// Failure is one way a run ends badly. The known failures are listed by
// Failures; the zero value is not a failure.
type Failure struct {
	// Name labels the failure in the report, e.g. "process-crash".
	Name string
	// Summary says in one line what the lab does.
	Summary string
	kind    failureKind
}

// ProcessCrash kills the child process with SIGKILL (TerminateProcess on
// Windows) after a random number of acknowledged messages, while its
// producers are still sending. The operating system and its page cache
// survive.
var ProcessCrash = Failure{
	Name:    "process-crash",
	Summary: "SIGKILL of the sending process at a random moment under load; the page cache survives",
	kind:    killProcess,
}

// PowerLoss kills the child like ProcessCrash, then takes away what the
// page cache held: before recovery, every file of the queue is cut back to
// what its last completed fdatasync made durable, and every directory entry
// to its last completed directory fsync (see the package comment for the
// model).
var PowerLoss = Failure{
	Name:    "power-loss",
	Summary: "SIGKILL, then every byte and directory entry not made durable by a completed sync is dropped, torn or zeroed",
	kind:    powerLoss,
}

// ConsumerCrash kills, with SIGKILL, a child that sends and consumes in the
// same process, while its consumer is handling messages; the parent then
// drains the consumer group and counts the messages never handled (see the
// package comment). It applies to configurations with a consumer (Ack set).
var ConsumerCrash = Failure{
	Name:    "consumer-crash",
	Summary: "SIGKILL of a process that sends and consumes, mid-handler; the group is drained after restart",
	kind:    consumerCrash,
}

// TxCrash kills, with SIGKILL, a child that sends transactional messages
// whose local transactions live in an fsynced file, some decided only by
// the TxChecker; the parent restarts the queue with a checker reading that
// file, waits until no half is pending, drains a consumer group and counts
// the messages of committed transactions not delivered, and the messages
// delivered whose transaction did not commit (phantoms).
var TxCrash = Failure{
	Name:    "tx-crash",
	Summary: "SIGKILL in the middle of transactions; the TxChecker decides the pending halves after restart",
	kind:    txCrash,
}

// Failures returns every failure the lab can inject.
func Failures() []Failure { return []Failure{ProcessCrash, PowerLoss, ConsumerCrash, TxCrash} }

// Promises reports whether the library's documentation promises that c loses
// no acknowledged message under f. A process crash keeps the page cache, so
// both flush modes promise zero loss; a power loss is promised only to
// FlushSync (FlushAsync loses what it acknowledged after its last background
// sync). A consumer crash loses nothing only if the consumer acks after
// handling; acking on receive may lose what was acked and not yet handled. A
// crash during transactions must lose no committed transaction's message and
// deliver no other.
func (f Failure) Promises(c Config) bool {
	switch f.kind {
	case killProcess, txCrash:
		return true
	case powerLoss:
		return c.Flush == zeroloss.FlushSync
	case consumerCrash:
		return c.Ack == AckAfterHandling
	}
	return false
}

// Applies reports whether f can be run on c: ConsumerCrash needs a
// configuration with a consumer, the other failures one without.
func (f Failure) Applies(c Config) bool {
	if f.kind == consumerCrash {
		return c.Ack != AckNone
	}
	return c.Ack == AckNone
}

// killScale divides the kill point drawn from Options.MinAcks and MaxAcks:
// the workloads of ConsumerCrash and TxCrash acknowledge one or two orders of
// magnitude slower (an fsync per handled message; three per transaction, of
// which only one in four prints an ack), and their recovery does more (a
// drain; check-backs).
func (f Failure) killScale() int {
	switch f.kind {
	case consumerCrash:
		return 20
	case txCrash:
		return 80
	}
	return 1
}

// workload names the child's workload for f.
func (f Failure) workload() string {
	switch f.kind {
	case consumerCrash:
		return workloadConsume
	case txCrash:
		return workloadTx
	}
	return workloadProduce
}

func (f Failure) valid() bool { return f.kind >= killProcess && f.kind <= txCrash }

// Scenario is one (configuration, failure) pair: one row of the report.
type Scenario struct {
	Config  Config
	Failure Failure
}

// Scenarios returns every pair of configs and failures that applies (see
// Failure.Applies), configuration by configuration.
func Scenarios(configs []Config, failures []Failure) []Scenario {
	var out []Scenario
	for _, c := range configs {
		for _, f := range failures {
			if f.Applies(c) {
				out = append(out, Scenario{c, f})
			}
		}
	}
	return out
}

// DefaultScenarios returns the curated set the lab command runs: every row
// of the guarantee table (both flush modes under a process crash and a power
// loss), a consumer crash under each way of acking, and a crash during
// transactions, all with FlushSync where the flush mode is not the point.
func DefaultScenarios() []Scenario {
	sync := zeroloss.FlushSync
	return append(Scenarios(DefaultConfigs(), []Failure{ProcessCrash, PowerLoss}),
		Scenario{Config{Flush: sync, Ack: AckAfterHandling}, ConsumerCrash},
		Scenario{Config{Flush: sync, Ack: AckOnReceive}, ConsumerCrash},
		Scenario{Config{Flush: sync}, TxCrash},
	)
}

// AllScenarios returns the full cross product of AllConfigs and Failures,
// less the pairs that do not apply.
func AllScenarios() []Scenario { return Scenarios(AllConfigs(), Failures()) }
