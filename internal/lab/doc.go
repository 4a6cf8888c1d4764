// Package lab is the loss lab: it measures what each queue configuration loses
// when something fails under load, by doing it for real and counting.
//
// # A run
//
// One run puts one configuration (Config) through one failure (Failure);
// the pair is a Scenario, one row of the Report. The steps below are those
// of process-crash and power-loss; consumer-crash and tx-crash change the
// child's workload and the count (see their sections):
//
//  1. The lab starts a child process (the running program re-executed with
//     ChildCommand and ChildEnv; see ChildMain) that opens a queue in a fresh
//     directory, declares a consumer group per topic and a tag-filtered one
//     (see Topics below), and sends from 8 goroutines to 4 topics. Every
//     message's body, topic and tag are derived from its ID (a SHA-256 of the
//     ID), so a wrong body or a message in the wrong place is detectable.
//     For every Send that returns SendOK the child prints one line "ok ID
//     SEQ" on its stdout, in one write.
//  2. The parent reads those lines: each is an acknowledged message. After a
//     random number of them (drawn from a math/rand/v2 PCG seeded by
//     Options.Seed, so a seed reproduces the kill points, though not the
//     timing) it injects the failure, then reads the lines still in the pipe.
//  3. It recovers the directory with zeroloss.Open and Close, reads every
//     message back through internal/wal, and counts: acknowledged, lost
//     (acknowledged but missing), duplicates (an ID found more than once),
//     corrupt (a body that does not match its ID, or a payload that does not
//     decode), unacknowledged but present (allowed: the child was killed
//     between the write and its print), and throughput (acks per second
//     between the first and the last ack).
//  4. A second count, independent of the first, reads the files again with
//     the read-only scanner (wal.Scan and wal.ReadFrames) and compares the set
//     of (ID, SHA-256 of the body) found against the acknowledged set. The two
//     counts must agree; if they do not, the lab itself is wrong.
//  5. It opens the queue again and drains every consumer group, and counts
//     per group what it delivered against what it owes (see Topics); the
//     records the scanner read, with the topic and tag each was stored
//     with, are the second count of that.
//
// A run that lost data its configuration was promised to keep, corrupted
// data, mixed up topics, or failed, keeps its directory for inspection (zeroloss inspect,
// zeroloss verify); the others are removed unless Options.KeepDirs is set.
//
// # Failures
//
//	process-crash  SIGKILL of the child (TerminateProcess on Windows) at a
//	               random moment under load. The kernel keeps the process's
//	               written pages in its page cache and writes them out later,
//	               so a process crash takes away only what had not reached
//	               write(2) yet: not even FlushAsync, which acknowledges after
//	               write(2) and before fdatasync, loses an acknowledged
//	               message. Both flush modes promise zero loss here, and the
//	               lab holds them to it.
//
//	power-loss     The same kill, then the page cache goes too: before
//	               recovery the lab cuts the files back to what the disk is
//	               sure to hold (the model below). FlushSync promises zero
//	               loss; FlushAsync is only measured, and loses the messages
//	               it acknowledged after its last background sync
//	               (FlushInterval, 500ms by default).
//
//	leader-disk-loss
//	               SIGKILL of a child that runs a leader queue and, in the
//	               same process, a follower (zeroloss.Follow over a
//	               net.Pipe, in its own directory); then the leader's
//	               directory is destroyed and the follower's is opened as the
//	               queue (promotion) and counted. The follower's page cache
//	               survives (only the leader's disk failed). Only for a
//	               configuration with replication: ReplicateSync promises
//	               zero loss (SendOK waits for the follower's fdatasync),
//	               ReplicateAsync is only measured and loses the replication
//	               lag: what the follower had not written at the kill.
//
//	consumer-crash SIGKILL of a child that sends and consumes, in the
//	               middle of its handlers; the parent drains the group. Only
//	               for a configuration with a consumer (Config.Ack):
//	               ack=after-handling promises zero loss, ack=on-receive is
//	               only measured.
//
//	queue-outage   The queue's disk fails under the producers, through the
//	               fault injector (vfs.FaultFS, for the queue's directory
//	               only): every fdatasync fails (odd runs: the queue is
//	               poisoned, and reopened when the fault ends) or the disk
//	               is full (even runs: ErrDiskFull once the active segment
//	               is full), for 200ms after a producer first meets it; then
//	               SIGKILL. Queue.Send callers see errors or other statuses
//	               than SendOK: refused, not acknowledged, never lost. The
//	               strict producer (Producer with Strict and a spool) counts
//	               Sent and Spooled as acknowledged; after the kill the
//	               parent reopens it on its spool and flushes it into the
//	               recovered queue, as a restarted application would.
//	               Promised to the strict producer, and to Queue.Send under
//	               FlushSync.
//
//	tx-crash       SIGKILL of a child in the middle of transactional sends;
//	               the parent restarts the queue with a TxChecker. Promised
//	               to both flush modes: no committed transaction's message
//	               lost, no other delivered.
//
// Replication and the producer are fields of Config too: with Replication
// set the child of every failure runs a follower attached to its queue (a
// power loss then cuts both directories back, and the leader is counted),
// and with ProducerStrict its producers send through a strict Producer
// whose spool is in its own directory (a power loss cuts it back too).
//
// Failure.SkipReason says which pairs make sense, and why the others do
// not: consumer-crash needs a configuration with a consumer, the other
// failures one without; tx-crash needs the transactional producer, and
// only it; leader-disk-loss needs a follower; queue-outage is not run with
// one (reattaching a follower to a reopened leader needs the epoch
// handshake). DefaultScenarios is the curated set the lab command runs
// (every row of the guarantee table, replication under power loss and disk
// loss, consumer-crash under each AckMode, the outage under each producer
// and tx-crash, with FlushSync); AllScenarios, for its --all flag, is every
// configuration of AllConfigs (flush × replication × consumer × producer)
// under every failure that applies, and AllSkipped the rest, with reasons.
// Options.MinAcks and MaxAcks bound the kill point; consumer-crash divides
// the number drawn by 20, and tx-crash by 80, because their workloads
// acknowledge that much slower.
//
// # Topics
//
// The produce workload (every failure but consumer-crash and tx-crash)
// sends each message to one of 4 topics: the default topic "" and orders,
// emails and audit; an orders message also carries one of the tags new,
// paid and shipped, or none. Both are drawn from the SHA-256 of the ID
// (routeFor), so about a quarter of the messages go to each topic. Before
// its first send the child declares 5 consumer groups: default, orders,
// emails and audit, each reading its topic, and orders-paid-shipped,
// reading orders with the tags paid and shipped only. Nobody consumes in the
// child. After the counts above, the parent opens the queue once more and
// drains the 5 groups concurrently, without acking (so that retention
// leaves a kept directory whole); a group the failure erased (its
// declaration not durable yet: only FlushAsync under power-loss) is declared
// again from the oldest message. It counts, per group (GroupCount, in
// RunResult.Groups and summed in Row.Groups):
//
//   - acknowledged: the acknowledged messages of its topic and tags;
//   - undelivered: those of them the recovered log holds (by ID) that the
//     group did not deliver; a message missing from the log is lost, not
//     undelivered;
//   - isolation: the deliveries of a message of another topic or of a tag
//     the group does not list, judged both by the ID's route and by the
//     topic and tag the message was delivered with.
//
// The cross-check takes the records of the raw scan with their stored topic
// and tag: a group owes an acknowledged message of its topic and tags found
// in the log, and delivers every record stored on its topic with a tag it
// takes. A read path that hands a group another topic's record shows as an
// isolation in the main count only, so as a disagreement too. Undelivered
// and Isolation (the sums over the groups, in Counts) are promised 0 by
// every configuration under every failure, whatever its loss: a row with
// either is Broken.
//
// # consumer-crash
//
// The child (--workload consume) opens its queue in the subdirectory "q" of
// the run directory and creates the consumer group "lab". 8 producers send
// as above, but to the default topic only, printing an ack per SendOK, and
// wait while 128 of their messages are not handled yet, so the group's
// backlog stays small. 4 consumers
// receive. Handling a message means appending "ID HASH SEQ" (HASH: the hex
// SHA-256 of the body received) to the file "processed" of the run
// directory and fsyncing it, one line at a time. With ack=after-handling a
// consumer handles, then acks; with ack=on-receive (the anti-pattern) it
// acks as soon as it receives, then handles in a new goroutine; with
// ack=ordered the messages carry one of 100 keys, the group is Ordered
// (backoff 10ms) and Consume runs 8 handlers that handle, then ack (the
// first delivery of every fourth seq fails on purpose, unhandled, so that
// retries are under way), and both counts also count
// order violations (the column order): the first handlings of a message
// after a later message of its key was handled, in the order of the file's
// lines (the drain, Ordered too, appends to it). The parent
// kills the child after a random number of SendOKs, keeps a copy of the
// processed file, reopens the queue and drains the group: it receives
// every message the group still owes, handles it into the processed file
// like the child, and acks it (after handling). A message acknowledged by
// its SendOK is lost if no line of the processed file names it, before the
// crash or after; duplicates count the lines beyond the first for an ID,
// expected now and then from ack=after-handling (at least once: killed
// between the handling and the ack); corrupt counts the lines whose hash is
// not that of the body the ID must have, and the lines that do not parse;
// unacked counts the IDs handled whose SendOK the child did not live to
// print. The main count reads the processed file as the drain left it; the
// cross-check, the copy taken before the drain plus the bodies the drain
// received, recorded in memory: two sets gathered independently, counted
// alike.
//
// # tx-crash
//
// The child (--workload tx) runs, in 8 goroutines, SendInTransaction flows
// whose local transaction is a line "commit ID" or "rollback ID" in the file
// "txdb" of the run directory, fsynced (group-committed) before it counts.
// One transaction in four commits, one rolls back, one commits but answers
// unknown (its reply was lost: the TxChecker must find the commit) and one
// answers unknown and decides afterwards (half commit, half roll back). Its
// TxChecker (TxTimeout 50ms) answers from the lines written, and unknown
// for an ID without one: its local transaction may still be running. The
// child prints an ack for each Commit that returned SendOK; the parent kills
// it after a random number of them, then reopens the queue with a TxChecker
// reading txdb, where an ID without a line never committed (its process is
// gone), waits until Stats().TxPending is 0 (RunResult.TxPending records how
// many halves it found pending), and closes it. The acknowledged messages
// are those whose local transaction committed (every printed ack among
// them; the lab fails otherwise). The cross-check reads the raw log: its
// message records, which are the committed messages (halves are records of
// another type). The main count then reopens the queue and drains a new
// consumer group, which starts at the oldest message. Both count as lost a
// committed transaction's message not found, as duplicates and corrupt as
// above, and as phantom (a column of its own) a message found whose local
// transaction did not commit; unacked stays 0.
//
// # The power-loss model
//
// The child of a power-loss run opens its queue on a file system that wraps
// the real one (set through internal/hook) and reports on its stdout, as
// "fs …" lines between the acks, every create, rename, remove and WriteAt
// (path, offset, length) before doing it, every Sync with the file's size at
// the moment it is issued, and every SyncDir with the directory's entries at
// that moment. For a Sync or a SyncDir it waits for the parent's one-byte
// acknowledgement on its stdin before the real call, and reports its
// completion after it returns. The parent replays the reports in order, so
// it knows, for every file (followed across renames), the size at its last
// completed sync and the byte ranges written since, and for every directory
// the entries at its last completed SyncDir. After the kill, on the real
// files:
//
//   - Directory entries: a file whose name was not listed by the last
//     completed SyncDir of its directory is removed (created, or renamed in,
//     since); a file renamed away since gets its durable name back; a file
//     removed since stays lost (its contents are gone: the lab never
//     invents data). A directory never synced loses every entry.
//   - A file never synced (no completed Sync) is cut to zero length.
//   - Below its synced size, a file keeps its contents, except the ranges
//     written since the sync (the log rewrites its sync slots at offsets 512
//     and 1024 in place, and writes frames into preallocated space): their
//     old contents are unknown, so they are only ever kept or zeroed.
//   - Above its synced size (written or allocated since), the bytes are
//     unsynced.
//
// Each run draws one mode for all the unsynced bytes: drop (the tail is cut
// at the synced size; unsynced ranges below it read as zeros), torn (a random
// prefix of each unsynced range or tail survives, the rest is cut or zeroed),
// zero (every unsynced byte reads as zero, lengths stay) or pages (each
// unsynced 4 KiB page survives or reads as zeros, at random). The mode is in
// RunResult.PowerLoss.
//
// The model is conservative: a Sync or SyncDir counts only once its
// completion was reported, so one cut short by the kill counts as not done;
// a write reported but cut short by the kill counts as possibly done; data
// written while a sync is in flight counts as not covered by it. What it
// does not model: a file truncated below its synced size since keeps its
// current size (the cut-off bytes cannot be brought back); the run
// directory's own entry in its parent is left alone; and a real disk may
// also reorder or lose writes a completed fsync covered (a lying disk),
// which no software can survive.
//
// # References
//
// RunReferences puts another log through the same power-loss harness: its
// own program (bench/peers/labref, for github.com/tidwall/wal, which the
// library's go.mod must not require) is the parent and, re-executed, the
// child, which writes with the log's API and reports with a ReferenceChild
// what it knows to be durable (see reference.go). Its rows are measured,
// never promised.
//
// # Promises
//
// Failure.Promises says whether the library's documentation promises that a
// configuration loses nothing under a failure. A row of the Report whose
// configuration was promised zero loss and lost or corrupted an acknowledged
// message, or delivered a phantom, is Broken, as is any row whose consumer
// groups missed a message of their topic that the log holds or delivered one
// of another topic or tag; a row without a promise is only measured. Every run, whatever its failure, also has its two counts
// compared: a disagreement makes the report not OK.
package lab
