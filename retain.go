package zeroloss

import (
	"context"
	"fmt"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// Retention. A segment is deleted once every consumer group is done with
// every message in it: its floor (every main-stream message below it acked
// or moved to the retry stream or the dead letters) is above the segment's
// last seq, durably. Before deleting, the queue appends a checkpoint of the
// whole consumer state (the ledger) and syncs it, because the deleted
// segments also hold consumer records (group declarations, dead letters)
// that recovery would otherwise miss; recovery starts from the first
// checkpoint of a trimmed log. With no consumer group, nothing is deleted.
//
// markLoop calls retain every second.

// internalStream is the stream id of queue-wide internal records
// (checkpoints); group ids stop below it.
const internalStream = ^uint16(0)

// retain deletes the segments every group is done with, if any.
func (q *Queue) retain() error {
	last, ok := q.log.OldestSealed()
	if !ok {
		return nil
	}
	if floor, ok := q.ledger.minFloor(); !ok || floor <= last {
		return nil
	}
	floor, seq, err := q.checkpoint(context.Background())
	if err != nil {
		return err
	}
	n, err := q.log.RemoveBefore(floor)
	if err != nil {
		return fmt.Errorf("zeroloss: retention: %w", err)
	}
	if n > 0 {
		q.stats.segmentsDeleted.Add(uint64(n))
		q.logger.Debug("zeroloss: segments deleted", "count", n, "below_seq", floor, "checkpoint_seq", seq)
	}
	return nil
}

// checkpoint appends a checkpoint of the ledger and waits until it is
// durable. It returns the lowest group floor it holds and its seq.
func (q *Queue) checkpoint(ctx context.Context) (floor, seq uint64, err error) {
	q.recMu.Lock() // no other consumer record in flight: the ledger is the log's
	defer q.recMu.Unlock()
	cp := q.ledger.checkpoint()
	if len(cp.Groups) == 0 {
		return 0, 0, nil
	}
	if q.dedup != nil {
		// Messages in the segments about to go keep their dedup entries.
		cp.Dedup = q.dedup.snapshot(q.opts.now())
	}
	cp.Halves = q.tx.snapshot() // pending halves must outlive their segments
	floor = cp.Groups[0].Floor
	for _, g := range cp.Groups {
		floor = min(floor, g.Floor)
	}
	seq, err = q.appendRecord(ctx, record.TypeCheckpoint, internalStream, record.AppendCheckpoint(nil, &cp))
	if err != nil {
		return 0, 0, fmt.Errorf("zeroloss: checkpoint: %w", err)
	}
	if q.opts.Flush == FlushAsync {
		// Appended, not yet synced: sync now, before anything is deleted.
		synced, err := q.log.Sync()
		if err != nil {
			return 0, 0, fmt.Errorf("zeroloss: checkpoint: %w", err)
		}
		if synced < seq {
			return 0, 0, fmt.Errorf("zeroloss: checkpoint at seq %d not synced (synced up to %d)", seq, synced)
		}
	}
	q.stats.checkpoints.Add(1)
	return floor, seq, nil
}
