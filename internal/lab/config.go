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

// Config is one queue configuration the lab measures: the flush mode, the
// replication mode, how the child produces and, for the consumer-crash
// failure, how its consumer acknowledges. Each field is carried to the child
// by args.
type Config struct {
	// Name labels the configuration in the report; empty means one built
	// from the fields, such as "flush=sync".
	Name string
	// Flush is the queue's flush mode.
	Flush zeroloss.FlushMode
	// FlushInterval is the queue's FlushInterval (how often FlushAsync
	// syncs in the background); 0 means the queue's default.
	FlushInterval time.Duration
	// Replication is the leader queue's replication mode. With
	// ReplicateAsync or ReplicateSync the child also runs a follower
	// (zeroloss.Follow over a net.Pipe, in its own directory) attached to
	// the leader.
	Replication zeroloss.ReplicationMode
	// Producer is how the child sends: Queue.Send (the zero value), a strict
	// zeroloss.Producer with a spool, or transactions.
	Producer ProducerMode
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
	// AckOrdered: ack after handling, in a group with
	// ConsumerOptions.Ordered and Concurrency 8, the messages spread over
	// orderedKeys keys. The lab also counts order violations: a later
	// message of a key handled before an earlier one was handled once.
	AckOrdered
)

var ackModeNames = [...]string{"none", "after-handling", "on-receive", "ordered"}

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
	return 0, fmt.Errorf("unknown ack mode %q, want none, after-handling, on-receive or ordered", s)
}

// ProducerMode is how the child sends its messages.
type ProducerMode int

const (
	// ProducerPlain: Queue.Send. Only SendOK counts as acknowledged; an
	// error or another status is counted as refused (not acknowledged).
	ProducerPlain ProducerMode = iota
	// ProducerStrict: a strict zeroloss.Producer whose spool is in its own
	// directory. Sent (SendOK) and Spooled (durable in the spool) both
	// count as acknowledged: the producer answers for both. After the
	// failure the lab reopens the producer on the spool and flushes it
	// into the recovered queue, as a restarted application would.
	ProducerStrict
	// ProducerTx: Queue.SendInTransaction flows (the tx-crash workload).
	ProducerTx
)

var producerModeNames = [...]string{"plain", "strict", "tx"}

func (m ProducerMode) String() string {
	if m < 0 || int(m) >= len(producerModeNames) {
		return fmt.Sprintf("ProducerMode(%d)", int(m))
	}
	return producerModeNames[m]
}

// parseProducerMode is the inverse of ProducerMode.String.
func parseProducerMode(s string) (ProducerMode, error) {
	for i, name := range producerModeNames {
		if name == s {
			return ProducerMode(i), nil
		}
	}
	return 0, fmt.Errorf("unknown producer %q, want plain, strict or tx", s)
}

// parseReplication is the inverse of ReplicationMode.String.
func parseReplication(s string) (zeroloss.ReplicationMode, error) {
	for _, m := range []zeroloss.ReplicationMode{zeroloss.ReplicateNone, zeroloss.ReplicateAsync, zeroloss.ReplicateSync} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown replication mode %q, want none, async or sync", s)
}

// asyncReplicaSyncInterval is the FlushInterval AllConfigs gives the
// configurations with FlushAsync and ReplicateSync: the leader streams only
// synced frames, so each of their Sends waits for a background sync, and
// with the default 500ms a run would take minutes.
const asyncReplicaSyncInterval = 10 * time.Millisecond

// DefaultConfigs returns the configurations without a consumer, a follower
// or another producer than Queue.Send: flush=sync and flush=async.
func DefaultConfigs() []Config {
	return []Config{{Flush: zeroloss.FlushSync}, {Flush: zeroloss.FlushAsync}}
}

// AllConfigs returns every configuration the lab knows, the cross product
// flush {sync, async} × replication {none, async, sync} × consumer {none,
// ack after handling, ack on receive} × producer {plain, strict, tx}. Under
// FlushAsync with ReplicateSync the FlushInterval is 10ms (see
// asyncReplicaSyncInterval); the label says so.
func AllConfigs() []Config {
	var out []Config
	for _, flush := range []zeroloss.FlushMode{zeroloss.FlushSync, zeroloss.FlushAsync} {
		for _, repl := range []zeroloss.ReplicationMode{zeroloss.ReplicateNone, zeroloss.ReplicateAsync, zeroloss.ReplicateSync} {
			for _, ack := range []AckMode{AckNone, AckAfterHandling, AckOnReceive, AckOrdered} {
				for _, prod := range []ProducerMode{ProducerPlain, ProducerStrict, ProducerTx} {
					c := Config{Flush: flush, Replication: repl, Ack: ack, Producer: prod}
					if flush == zeroloss.FlushAsync && repl == zeroloss.ReplicateSync {
						c.FlushInterval = asyncReplicaSyncInterval
					}
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// Label returns c.Name, or the name built from c's fields, such as
// "flush=sync", "flush=sync/repl=sync/producer=strict" or
// "flush=sync/ack=on-receive". Fields at their zero value (no follower,
// Queue.Send, no consumer) are left out.
func (c Config) Label() string {
	if c.Name != "" {
		return c.Name
	}
	label := "flush=" + c.Flush.String()
	if c.FlushInterval != 0 {
		label += fmt.Sprintf("/interval=%v", c.FlushInterval)
	}
	if c.Replication != zeroloss.ReplicateNone {
		label += "/repl=" + c.Replication.String()
	}
	if c.Producer != ProducerPlain {
		label += "/producer=" + c.Producer.String()
	}
	if c.Ack != AckNone {
		label += "/ack=" + c.Ack.String()
	}
	return label
}

// queueOptions returns the queue options of c, for the child and for recovery.
func (c Config) queueOptions() *zeroloss.Options {
	// Checkpoint files every segment's worth of log: a child killed after
	// a few seconds has written several, and recovery reads from one.
	o := &zeroloss.Options{Flush: c.Flush, FlushInterval: c.FlushInterval, Replication: c.Replication,
		SegmentSize: segmentSize, MaxMessageSize: maxMessageSize, CheckpointBytes: segmentSize}
	if c.DedupOff {
		o.DedupWindow = -1
	}
	return o
}

// recoveryOptions returns the options the parent opens a queue with after
// the failure: c's, alone (no follower is attached to a restarted leader or
// a promoted follower; the log on disk does not depend on the mode).
func (c Config) recoveryOptions() *zeroloss.Options {
	o := c.queueOptions()
	o.Replication = zeroloss.ReplicateNone
	return o
}

// args returns the child's command-line flags that carry c.
func (c Config) args() []string {
	args := []string{"--flush", c.Flush.String()}
	if c.FlushInterval != 0 {
		args = append(args, "--flush-interval", c.FlushInterval.String())
	}
	if c.Replication != zeroloss.ReplicateNone {
		args = append(args, "--repl", c.Replication.String())
	}
	if c.Producer != ProducerPlain && c.Producer != ProducerTx { // tx is --workload tx
		args = append(args, "--producer", c.Producer.String())
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
	diskLoss                             // workload "produce", with a follower
	consumerCrash                        // workload "consume"
	queueOutage                          // workload "produce", with a fault injected under the queue
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
// page cache held: before recovery, every file of the queue (and of the
// follower and the producer's spool, when there are) is cut back to what its
// last completed fdatasync made durable, and every directory entry to its
// last completed directory fsync (see the package comment for the model).
var PowerLoss = Failure{
	Name:    "power-loss",
	Summary: "SIGKILL, then every byte and directory entry not made durable by a completed sync is dropped, torn or zeroed (leader, follower and spool alike)",
	kind:    powerLoss,
}

// DiskLoss kills a child that runs a leader and its follower, destroys the
// leader's directory, and promotes the follower: its directory is opened as
// the queue, and the acknowledged messages missing from it are lost. The
// follower's machine keeps its page cache (only the leader's disk failed).
// It applies to configurations with replication.
var DiskLoss = Failure{
	Name:    "leader-disk-loss",
	Summary: "SIGKILL of leader and follower, the leader's directory destroyed, the follower's opened as the queue (failover)",
	kind:    diskLoss,
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

// QueueOutage makes the queue's disk fail under the producers (a failed
// fdatasync, which poisons the queue, or a full disk, in alternate runs)
// through the fault injector, ends the fault after a while (reopening a
// poisoned queue), then kills the child like ProcessCrash. It counts what
// the producer was told is safe; the sends the queue refused are counted
// apart (refused), not as lost.
var QueueOutage = Failure{
	Name:    "queue-outage",
	Summary: "the queue's fdatasync fails (poisoned, reopened) or its disk is full for a while under load, then SIGKILL",
	kind:    queueOutage,
}

// TxCrash kills, with SIGKILL, a child that sends transactional messages
// whose local transactions live in an fsynced file, some decided only by
// the TxChecker; the parent restarts the queue with a checker reading that
// file, waits until no half is pending, drains a consumer group and counts
// the messages of committed transactions not delivered, and the messages
// delivered whose transaction did not commit (phantoms). It applies to the
// transactional producer.
var TxCrash = Failure{
	Name:    "tx-crash",
	Summary: "SIGKILL in the middle of transactions; the TxChecker decides the pending halves after restart",
	kind:    txCrash,
}

// Failures returns every failure the lab can inject, in the order of the
// issue that specified them.
func Failures() []Failure {
	return []Failure{ProcessCrash, PowerLoss, DiskLoss, ConsumerCrash, QueueOutage, TxCrash}
}

// Promises reports whether the library's documentation promises that c loses
// no acknowledged message under f.
//
//   - A process crash keeps the page cache: every configuration.
//   - A power loss: FlushSync, or ReplicateSync (whose SendOK waits for the
//     leader's fdatasync too: its sender streams only synced frames).
//     FlushAsync alone loses what it acknowledged after its last background
//     sync.
//   - A leader disk loss: ReplicateSync only (SendOK once the follower has
//     the message fdatasynced); ReplicateAsync loses the replication lag.
//   - A consumer crash: ack after handling (ordered or not, and then no
//     order violation either); acking on receive may lose what was acked
//     and not yet handled.
//   - A queue outage: the strict producer (Sent and Spooled are both
//     durable), and Queue.Send under FlushSync (a SendOK was fdatasynced
//     before the fault; the refused sends are not acknowledged). FlushAsync
//     with Queue.Send is only measured: its SendOK precedes the fdatasync
//     that fails, and a real failed fdatasync may drop those pages (the
//     injected one does not).
//   - A crash during transactions: no committed transaction's message lost,
//     none other delivered.
func (f Failure) Promises(c Config) bool {
	switch f.kind {
	case killProcess, txCrash:
		return true
	case powerLoss:
		return c.Flush == zeroloss.FlushSync || c.Replication == zeroloss.ReplicateSync
	case diskLoss:
		return c.Replication == zeroloss.ReplicateSync
	case consumerCrash:
		return c.Ack == AckAfterHandling || c.Ack == AckOrdered
	case queueOutage:
		return c.Producer == ProducerStrict || c.Flush == zeroloss.FlushSync
	}
	return false
}

// Applies reports whether f can be run on c (see SkipReason).
func (f Failure) Applies(c Config) bool { return f.SkipReason(c) == "" }

// SkipReason returns "" if f can be run on c, or why the pair is not
// measured:
//
//   - consumer-crash needs a consumer (and measures it with Queue.Send);
//     every other failure runs a child without one;
//   - tx-crash needs the transactional producer, which no other failure
//     runs;
//   - leader-disk-loss needs a follower, and is not run with the strict
//     producer, whose spool would burn with the leader's disk;
//   - queue-outage is not run with a follower: recovering from it reopens
//     the leader, and attaching a follower again to a reopened leader needs
//     the epoch handshake, not built yet.
func (f Failure) SkipReason(c Config) string {
	switch {
	case f.kind == consumerCrash && c.Ack == AckNone:
		return "consumer-crash needs a consumer (ack=after-handling, ack=on-receive or ack=ordered)"
	case f.kind == consumerCrash && c.Producer != ProducerPlain:
		return "consumer-crash sends with Queue.Send; the producer axis is measured without a consumer"
	case f.kind != consumerCrash && c.Ack != AckNone:
		return "a configuration with a consumer is measured under consumer-crash only"
	case f.kind == txCrash && c.Producer != ProducerTx:
		return "tx-crash needs the transactional producer (producer=tx)"
	case f.kind != txCrash && f.kind != consumerCrash && c.Producer == ProducerTx:
		return "the transactional producer is measured under tx-crash only"
	case f.kind == diskLoss && c.Replication == zeroloss.ReplicateNone:
		return "leader-disk-loss needs a follower (repl=async or repl=sync)"
	case f.kind == diskLoss && c.Producer == ProducerStrict:
		return "the strict producer's spool is on the leader's disk, which leader-disk-loss destroys; it is measured under queue-outage"
	case f.kind == queueOutage && c.Replication != zeroloss.ReplicateNone:
		return "recovering from the outage reopens the leader, and re-attaching a follower to it needs the epoch handshake (not built yet)"
	}
	return ""
}

// killScale divides the kill point drawn from Options.MinAcks and MaxAcks:
// the workloads of ConsumerCrash and TxCrash acknowledge one or two orders of
// magnitude slower (an fsync per handled message; three per transaction, of
// which only one in four prints an ack), and their recovery does more (a
// drain; check-backs). The others run at the queue's speed.
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

// Skipped is a (configuration, failure) pair left out of a run, and why.
type Skipped struct {
	Config  string `json:"config"`
	Failure string `json:"failure"`
	Reason  string `json:"reason"`
}

// Scenarios returns every pair of configs and failures that applies (see
// Failure.Applies), configuration by configuration.
func Scenarios(configs []Config, failures []Failure) []Scenario {
	out, _ := ScenariosAndSkipped(configs, failures)
	return out
}

// ScenariosAndSkipped is Scenarios, also returning the pairs left out with
// the reason of each.
func ScenariosAndSkipped(configs []Config, failures []Failure) ([]Scenario, []Skipped) {
	var out []Scenario
	var skipped []Skipped
	for _, c := range configs {
		for _, f := range failures {
			if reason := f.SkipReason(c); reason != "" {
				skipped = append(skipped, Skipped{c.Label(), f.Name, reason})
				continue
			}
			out = append(out, Scenario{c, f})
		}
	}
	return out, skipped
}

// DefaultScenarios returns the curated set the lab command runs: every row
// of the guarantee table (both flush modes under a process crash and a power
// loss), replication (a power loss of leader and follower under
// ReplicateSync, and a leader disk loss with failover under ReplicateSync
// and ReplicateAsync), a consumer crash under each way of acking, a queue
// outage seen by Queue.Send and by the strict producer, and a crash during
// transactions, all with FlushSync where the flush mode is not the point.
func DefaultScenarios() []Scenario {
	sync := zeroloss.FlushSync
	return append(Scenarios(DefaultConfigs(), []Failure{ProcessCrash, PowerLoss}),
		Scenario{Config{Flush: sync, Replication: zeroloss.ReplicateSync}, PowerLoss},
		Scenario{Config{Flush: sync, Replication: zeroloss.ReplicateSync}, DiskLoss},
		Scenario{Config{Flush: sync, Replication: zeroloss.ReplicateAsync}, DiskLoss},
		Scenario{Config{Flush: sync, Ack: AckAfterHandling}, ConsumerCrash},
		Scenario{Config{Flush: sync, Ack: AckOnReceive}, ConsumerCrash},
		Scenario{Config{Flush: sync, Ack: AckOrdered}, ConsumerCrash},
		Scenario{Config{Flush: sync}, QueueOutage},
		Scenario{Config{Flush: sync, Producer: ProducerStrict}, QueueOutage},
		Scenario{Config{Flush: sync, Producer: ProducerTx}, TxCrash},
	)
}

// AllScenarios returns the full cross product of AllConfigs and Failures,
// less the pairs that do not apply; AllSkipped lists those, with reasons.
func AllScenarios() []Scenario { return Scenarios(AllConfigs(), Failures()) }

// AllSkipped returns the pairs of AllConfigs and Failures that AllScenarios
// leaves out, each with the reason.
func AllSkipped() []Skipped {
	_, skipped := ScenariosAndSkipped(AllConfigs(), Failures())
	return skipped
}
