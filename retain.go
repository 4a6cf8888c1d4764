package zeroloss

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// Retention. A segment is deleted once every consumer group is done with
// every message in it: its floor (every main-stream message below it acked
// or moved to the retry stream or the dead letters) is above the segment's
// last seq, durably. Before deleting, the queue appends a checkpoint of the
// whole consumer state (the ledger) and syncs it, because the deleted
// segments also hold consumer records (group declarations, dead letters)
// that recovery would otherwise miss; recovery starts from the first
// checkpoint of a trimmed log. With no consumer group, nothing is deleted
// unless RetentionBytes or RetentionAge force it, and then a checkpoint
// (holding no group) is written first all the same. Likewise a topic that
// has no group keeps its messages (a group declared later with StartOldest
// gets them): its oldest retained message holds retention back as a
// group's floor would, until the limits force it.
//
// markLoop calls retain every second.

// internalStream is the stream id of queue-wide internal records
// (checkpoints); group ids stop below it.
const internalStream = ^uint16(0)

// retain deletes the segments every group is done with, then, while the log
// is over Options.RetentionBytes or its oldest segment over RetentionAge,
// the oldest segments even if groups still need them. One call deletes only
// segments it found full: each forced deletion writes a checkpoint first,
// and a consumer state (dead letters, retries) as large as what it frees
// would otherwise have it delete its own checkpoints forever, the log
// growing, markLoop (and so Close) waiting on it; the next tick goes on.
func (q *Queue) retain() error {
	found := q.log.LastSeq()
	last, ok := q.log.OldestSealed()
	if !ok {
		return nil
	}
	if floor, ok := q.ledger.minFloor(); ok && min(floor, q.replicaFloor(), q.orphanFloor(q.ledger.topics())) > last {
		// The checkpoint's floor bounds the topics without a group too,
		// as its groups say: a group declared since on such a topic (its
		// floor in no checkpoint yet) finds its messages kept.
		floor, seq, err := q.checkpoint(context.Background())
		if err != nil {
			return err
		}
		if q.opts.afterCheckpoint != nil {
			q.opts.afterCheckpoint()
		}
		if err := q.remove(min(floor, q.replicaFloor()), seq); err != nil {
			return err
		}
	}
	for {
		last, ok := q.log.OldestSealed()
		if !ok || last > found || !q.overLimit(last) {
			return nil
		}
		if err := q.forceRetention(last + 1); err != nil {
			return err
		}
	}
}

// orphanFloor bounds retention by the topics no group reads (none in read):
// the seq of the oldest retained message of any of them (MaxUint64 if there
// is none).
func (q *Queue) orphanFloor(read map[string]bool) uint64 {
	floor := uint64(math.MaxUint64)
	for topic, oldest := range q.topics.oldest() {
		if !read[topic] {
			floor = min(floor, oldest)
		}
	}
	return floor
}

// replicaFloor bounds retention by the attached follower: segments it has
// not acknowledged are kept for it (ReplicateAsync lets groups ack past
// it), so it never has to jump over deleted ones. With no follower attached
// retention does not wait: a follower gone for good must not fill the disk.
func (q *Queue) replicaFloor() uint64 {
	if q.opts.Replication == ReplicateNone {
		return math.MaxUint64
	}
	if _, attached := q.repl.watch(); !attached {
		return math.MaxUint64
	}
	return q.repl.acked.Load() + 1
}

// remove deletes the segments wholly below seq.
func (q *Queue) remove(below, checkpointSeq uint64) error {
	q.beforeRemove(below)
	n, err := q.log.RemoveBefore(below)
	if err != nil {
		return fmt.Errorf("zeroloss: retention: %w", err)
	}
	if n > 0 {
		q.topics.trim(q.log.FirstSeq())
		q.stats.segmentsDeleted.Add(uint64(n))
		q.logger.Debug("zeroloss: segments deleted", "count", n, "below_seq", below, "checkpoint_seq", checkpointSeq)
		if q.opts.Replication != ReplicateNone {
			q.wakeSender() // it tells the follower (a Trim)
		}
	}
	return nil
}

// overLimit says whether the retention limits want the oldest segment, whose
// last seq is last, deleted.
func (q *Queue) overLimit(last uint64) bool {
	if max := q.opts.RetentionBytes; max > 0 && q.log.DataBytes() > max {
		return true
	}
	if age := q.opts.RetentionAge; age > 0 {
		r := q.log.NewReader(last)
		defer r.Close()
		if rec, err := r.Next(); err == nil && unixTime(rec.Time).Before(q.opts.now().Add(-age)) {
			return true
		}
	}
	return false
}

// forceRetention deletes the segments below cut although some groups have
// not acked their messages: those groups skip them (durably: an ack record
// moves their floor and mark to cut), and the skipped messages are logged
// and counted. Retries and dead letters are kept (the checkpoint carries
// them).
func (q *Queue) forceRetention(cut uint64) error {
	ctx := context.Background()
	for _, g := range q.groupList() {
		g.mu.Lock()
		skipped := 0
		var gone []*unacked
		for _, owed := range []map[uint64]*unacked{g.pending, g.blocked} {
			for pos, u := range owed {
				if pos == u.seq && pos < cut && !u.busy {
					gone = append(gone, u)
				}
			}
		}
		for _, u := range gone {
			g.drop(u) // an ordered key moves on
			delete(g.attempts, u.pos)
			skipped++
		}
		if g.cursor < cut {
			if g.reader != nil {
				g.reader.Close()
				g.reader = nil
			}
			if g.q.committedSeq() >= cut {
				// The group's messages between the cursor and the cut
				// were never delivered.
				skipped += int(g.q.topics.count(&g.sel, g.cursor) - g.q.topics.count(&g.sel, cut))
			}
			g.cursor = cut
		}
		for s := range g.skip {
			if s < cut {
				delete(g.skip, s)
			}
		}
		var payload []byte
		var took taken
		if skipped > 0 || g.floored < cut {
			payload, took = g.ackPayload(nil)
		}
		g.mu.Unlock()
		if payload == nil {
			continue
		}
		if written, err := g.writeTaken(ctx, payload, took); err != nil {
			return err
		} else if !written {
			continue
		}
		if skipped > 0 {
			q.stats.retentionSkipped.Add(uint64(skipped))
			q.logger.Warn("zeroloss: retention limit reached: messages deleted before this group acked them",
				"group", g.name, "messages", skipped, "below_seq", cut)
		}
	}
	_, seq, err := q.checkpoint(ctx)
	if err != nil {
		return err
	}
	if !q.hasGroups() {
		q.logger.Warn("zeroloss: retention limit reached: oldest segment deleted; no consumer group had read it", "below_seq", cut)
	}
	return q.remove(cut, seq)
}

func (q *Queue) hasGroups() bool {
	_, ok := q.ledger.minFloor()
	return ok
}

// checkpoint appends a checkpoint of the ledger and waits until it is
// durable. It returns the lowest group floor it holds (MaxUint64 with no
// group), lowered to the oldest message of a topic none of its groups reads
// (orphanFloor), and its seq (that of its first part). It writes one with no group
// too: recovery of a trimmed log needs a checkpoint, and the dedup IDs and
// pending halves of the segments about to go live on in it.
func (q *Queue) checkpoint(ctx context.Context) (floor, seq uint64, err error) {
	q.recMu.Lock() // no other consumer record in flight: the ledger is the log's
	defer q.recMu.Unlock()
	cp := q.ledger.checkpoint()
	if q.dedup != nil {
		// Messages in the segments about to go keep their dedup entries.
		cp.Dedup = q.dedup.snapshot(q.opts.now())
	}
	cp.Halves = q.tx.snapshot() // pending halves must outlive their segments
	// With no group, nothing holds retention back.
	floor = math.MaxUint64
	read := make(map[string]bool, len(cp.Groups))
	for _, g := range cp.Groups {
		floor = min(floor, g.Floor)
		read[g.Topic] = true
	}
	floor = min(floor, q.orphanFloor(read))
	// A checkpoint holds every dead letter and retry with its message, so
	// it may outgrow a segment: it is written in parts of at most
	// MaxMessageSize (a frame a follower accepts), all in one write.
	// Recovery counts it only once every part is there.
	maxPart := min(q.opts.MaxMessageSize, q.log.MaxFrameSize()) - record.HeaderSize
	parts := record.SplitCheckpoint(record.AppendCheckpoint(nil, &cp), rand.Uint64(), maxPart)
	var size int64
	for _, p := range parts {
		size += int64(record.HeaderSize + len(p))
	}
	now := q.opts.now().UnixNano()
	seq, n, status, err := q.submit(context.WithoutCancel(ctx), size, len(parts), false, func(buf []byte) []byte {
		for _, p := range parts {
			buf = record.AppendFrame(buf, record.TypeCheckpoint, internalStream, now, p)
		}
		return buf
	})
	if err == nil && status != SendOK {
		err = fmt.Errorf("written but not confirmed durable (%v): %w", status, ErrNotDurable)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("zeroloss: checkpoint (%d parts, %d appended): %w", len(parts), n, err)
	}
	if q.opts.Flush == FlushAsync {
		// Appended, not yet synced: sync now, before anything is deleted.
		synced, err := q.log.Sync()
		if err != nil {
			return 0, 0, fmt.Errorf("zeroloss: checkpoint: %w", err)
		}
		if last := seq + uint64(n) - 1; synced < last {
			return 0, 0, fmt.Errorf("zeroloss: checkpoint at seqs %d-%d not synced (synced up to %d)", seq, last, synced)
		}
	}
	q.stats.checkpoints.Add(1)
	return floor, seq, nil
}
