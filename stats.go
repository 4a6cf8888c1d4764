package zeroloss

import (
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss/internal/wal"
)

// Stats are counters a user would graph. Counts are since Open.
type Stats struct {
	Messages      uint64        // messages appended by Send and SendBatch (not duplicates, transactional halves, consumer or internal records)
	Bytes         uint64        // bytes appended to the log (all records)
	Fsyncs        uint64        // data syncs of segment files
	FsyncTime     time.Duration // total time spent in them
	FsyncAvg      time.Duration // FsyncTime / Fsyncs
	Writes        uint64        // write batches (one pwrite each, or one per segment)
	GroupCommits  uint64        // syncs that answered waiting Sends (FlushSync)
	GroupAvg      float64       // Sends answered per group commit, on average
	GroupMax      uint64        // the largest group
	FlushTimeouts uint64        // Sends answered with FlushDiskTimeout
	WaitsCanceled uint64        // Sends answered with WaitCanceled: their ctx ended before the confirmation
	Segments      int           // segment files
	SegmentRolls  uint64        // new segments started
	WarmRolls     uint64        // of which used a segment zero-filled ahead (SegmentWarmup)
	RecycledRolls uint64        // of which reused a segment deleted by retention (RecycleSegments)
	DiskBytes     int64         // bytes the segment files take, preallocation and segments kept for reuse (RecycleSegments) included
	// SegmentsDeleted counts segments deleted by retention, Checkpoints the
	// consumer-state checkpoints written before deleting.
	SegmentsDeleted uint64
	Checkpoints     uint64
	// CheckpointFiles counts the checkpoint files written (Open loads the
	// newest and reads only the log after it; Options.CheckpointBytes).
	// OpenFramesRead is how many records Open read from the log: all of
	// them without a checkpoint file, those after it with one.
	CheckpointFiles uint64
	OpenFramesRead  uint64
	// CheckpointFileTime is the time spent building and writing checkpoint
	// files (in the background, and in Close): the replay of the log
	// written since the last one, mostly.
	CheckpointFileTime time.Duration
	// RetentionSkipped counts messages that RetentionBytes or RetentionAge
	// deleted before a consumer group acked them.
	RetentionSkipped uint64
	// DedupEntries is how many IDs the dedup table holds, DedupEvictions
	// how many it forgot before their window ended (DedupEntries full), and
	// Duplicates how many Sends it answered as duplicates.
	DedupEntries   int
	DedupEvictions uint64
	Duplicates     uint64
	// Transactions: half messages pending a decision, committed and rolled
	// back since Open, check-backs made, and halves rolled back after their
	// last check.
	TxPending    int
	TxCommitted  uint64
	TxRolledBack uint64
	TxChecks     uint64
	TxExpired    uint64
	LastSeq      uint64 // last seq appended
	CommittedSeq uint64 // last seq durable (and, under ReplicateSync, acknowledged by the follower): what consumers may read
	// Replication: whether a follower is attached, the highest seq a
	// follower acknowledged as durable, LastSeq minus that, and the Sends
	// answered FlushReplicaTimeout and ReplicaNotAvailable.
	ReplicaAttached     bool
	ReplicaAckedSeq     uint64
	ReplicaLag          uint64
	ReplicaTimeouts     uint64
	ReplicaNotAvailable uint64
	// FsyncLatency counts the data syncs of segment files by duration:
	// FsyncLatency[i] those that took at most FsyncBounds[i] (and more than
	// the bound before), the last entry those above every bound. It sums to
	// Fsyncs, give or take a sync that ends while Stats reads them.
	FsyncLatency [FsyncBuckets]uint64
	// SendLatency counts the Send and SendBatch calls that returned a nil
	// error, whatever their status (SendOK, FlushDiskTimeout, WaitCanceled,
	// a duplicate's), by the time from the call to its return: under
	// FlushSync the wait for the fdatasync (and, under ReplicateSync, the
	// follower) included. SendLatency[i] counts those that took at most
	// SendBounds[i], the last entry those above every bound; SendTime is
	// their total time. A SendBatch is one call however many messages it
	// carries. Calls that return an error (refused, ErrQueueFull, ErrClosed,
	// a context that ended before the message was taken) are not counted:
	// they sent nothing.
	SendLatency [SendBuckets]uint64
	SendTime    time.Duration
}

// SendBounds are the upper bounds of the SendLatency buckets in Stats: 1µs
// and 2.5µs (a FlushAsync Send), then those of FsyncBounds, to 10s.
var SendBounds = [...]time.Duration{
	time.Microsecond, 2500 * time.Nanosecond,
	5 * time.Microsecond, 10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// SendBuckets is the number of SendLatency buckets: one per bound in
// SendBounds and one above them.
const SendBuckets = len(SendBounds) + 1

// durationBuckets counts durations in the buckets of SendBounds with atomics
// only: recording takes no lock (two atomic adds, on counters shared by
// every Send like the message counter), and Stats reads them while Sends go
// on.
type durationBuckets struct {
	counts [SendBuckets]atomic.Uint64
	nanos  atomic.Int64
}

func (h *durationBuckets) record(d time.Duration) {
	d = max(d, 0)
	i := 0 // a linear scan: most Sends stop at the first few bounds
	for i < len(SendBounds) && d > SendBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.nanos.Add(int64(d))
}

// snapshot returns the counts and the total, each read atomically (not all
// at one instant: a call that ends meanwhile may be in one and not the
// other).
func (h *durationBuckets) snapshot() (counts [SendBuckets]uint64, total time.Duration) {
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
	}
	return counts, time.Duration(h.nanos.Load())
}

// FsyncBounds are the upper bounds of the FsyncLatency buckets in Stats,
// from 5µs to 10s.
var FsyncBounds = wal.SyncBounds

// FsyncBuckets is the number of FsyncLatency buckets: one per bound in
// FsyncBounds and one above them.
const FsyncBuckets = wal.SyncBuckets

type queueStats struct {
	messages      atomic.Uint64
	batches       atomic.Uint64
	groups        atomic.Uint64
	groupedSends  atomic.Uint64
	groupMax      atomic.Uint64
	flushTimeouts atomic.Uint64
	waitsCanceled atomic.Uint64

	segmentsDeleted  atomic.Uint64
	retentionSkipped atomic.Uint64
	checkpoints      atomic.Uint64
	checkpointFiles  atomic.Uint64
	checkpointTime   atomic.Int64 // nanoseconds
	openFramesRead   uint64       // set by Open

	sendLatency durationBuckets
}

func (s *queueStats) recordGroup(n int) {
	s.groups.Add(1)
	s.groupedSends.Add(uint64(n))
	for {
		cur := s.groupMax.Load()
		if uint64(n) <= cur || s.groupMax.CompareAndSwap(cur, uint64(n)) {
			return
		}
	}
}

// Stats returns a snapshot of the queue's counters. It does not block on I/O.
func (q *Queue) Stats() Stats {
	ls := q.log.Stats()
	s := Stats{
		Messages:      q.stats.messages.Load(),
		Bytes:         ls.Bytes,
		Fsyncs:        ls.Syncs,
		FsyncTime:     time.Duration(ls.SyncNanos),
		FsyncLatency:  ls.SyncLatency,
		Writes:        q.stats.batches.Load(),
		GroupCommits:  q.stats.groups.Load(),
		GroupMax:      q.stats.groupMax.Load(),
		FlushTimeouts: q.stats.flushTimeouts.Load(),
		WaitsCanceled: q.stats.waitsCanceled.Load(),
		Segments:      ls.Segments,
		SegmentRolls:  ls.SegmentsRolls,
		WarmRolls:     ls.WarmRolls,
		RecycledRolls: ls.RecycledRolls,
		DiskBytes:     ls.DiskBytes,

		SegmentsDeleted:    q.stats.segmentsDeleted.Load(),
		Checkpoints:        q.stats.checkpoints.Load(),
		CheckpointFiles:    q.stats.checkpointFiles.Load(),
		CheckpointFileTime: time.Duration(q.stats.checkpointTime.Load()),
		OpenFramesRead:     q.stats.openFramesRead,

		RetentionSkipped: q.stats.retentionSkipped.Load(),
		LastSeq:          q.log.LastSeq(),
		CommittedSeq:     q.committedSeq(),
	}
	s.SendLatency, s.SendTime = q.stats.sendLatency.snapshot()
	q.replicaStats(&s)
	s.TxPending, s.TxCommitted, s.TxRolledBack, s.TxChecks, s.TxExpired = q.tx.counts()
	if q.dedup != nil {
		s.DedupEntries, s.DedupEvictions, s.Duplicates = q.dedup.counts()
	}
	if s.Fsyncs > 0 {
		s.FsyncAvg = s.FsyncTime / time.Duration(s.Fsyncs)
	}
	if s.GroupCommits > 0 {
		s.GroupAvg = float64(q.stats.groupedSends.Load()) / float64(s.GroupCommits)
	}
	return s
}
