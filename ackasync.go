package zeroloss

import (
	"context"
	"errors"
	"fmt"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// AckAsync acknowledges the message like Ack but returns without waiting for
// the ack to be written: it is written in the group's next ack record,
// group-committed with the other AckAsyncs of the group (and Sends and
// other records) while the caller goes on, so a consumer acking one message
// at a time shares one fdatasync among all the acks made during the
// previous one, instead of paying one per Ack.
//
// It is weaker than Ack. Until that record is durable as the queue's flush
// mode promises, a crash or power loss delivers the message again after the
// restart; if the record cannot be written (a full disk, a poisoned queue,
// the group deleted), the failure is logged and the message is delivered
// again after its ack deadline in this process too. It never loses a
// message: nothing leaves the group in memory or on disk before the ack
// record that covers it is written, and no record's floor passes it before
// that. Meanwhile the message is not delivered again in this process (not
// even past its ack deadline), and an Ack of the same delivery waits for the
// pending record, so Ack after AckAsync returns once the ack is durable.
//
// It returns the errors Ack returns before writing anything
// (ErrDeliveryExpired, ErrGroupDeleted), and nil for a delivery already
// acked or being acked. Once the queue is closing it writes the record
// itself before returning, as Ack does, and returns its error (ErrClosed
// once the queue is closed).
func (d *Delivery) AckAsync() error {
	if d.drv != nil {
		return d.drv.AckAsync()
	}
	c := d.c
	g := c.g
	g.mu.Lock()
	if g.deleted.Load() {
		g.mu.Unlock()
		return fmt.Errorf("zeroloss: ack of seq %d: group %q: %w", d.Seq, g.name, ErrGroupDeleted)
	}
	if g.acking([]*Delivery{d}) {
		g.mu.Unlock()
		return nil // an Ack or AckAsync of it is being written: it decides
	}
	acked, err := d.stale("ack")
	if acked || err != nil {
		g.mu.Unlock()
		return err
	}
	u := d.u
	u.busy, u.acking = true, true
	g.asyncAcks = append(g.asyncAcks, d)
	start := !g.asyncWriting
	g.asyncWriting = true
	g.mu.Unlock()
	if start {
		if c.q.startAsyncAcker() {
			go func() {
				defer c.q.asyncAckers.Done()
				g.writeAsyncAcks()
			}()
		} else if err := g.writeAsyncAcks(); err != nil { // closing: no goroutine may start
			return err
		}
	}
	return nil
}

// startAsyncAcker counts a writer of async acks in, or returns false once
// Close has begun (Close waits for the writers counted in).
func (q *Queue) startAsyncAcker() bool {
	q.handlersMu.Lock()
	defer q.handlersMu.Unlock()
	if q.handlersClosed {
		return false
	}
	q.asyncAckers.Add(1)
	return true
}

// writeAsyncAcks writes the group's async acks until none is left: each
// record acks every one queued while the previous was written, at most
// maxAsyncAcks of them. One runs per group at a time (asyncWriting). It
// returns the first error (also logged).
func (g *group) writeAsyncAcks() (first error) {
	limit := max(1, min(maxAsyncAcks, g.q.opts.MaxMessageSize/16))
	for {
		g.mu.Lock()
		if len(g.asyncAcks) == 0 {
			g.asyncWriting = false
			g.mu.Unlock()
			return first
		}
		ds := g.asyncAcks[:min(len(g.asyncAcks), limit)]
		g.asyncAcks = append([]*Delivery(nil), g.asyncAcks[len(ds):]...)
		positions := make([]uint64, len(ds))
		for i, d := range ds {
			positions[i] = d.u.pos
		}
		payload, took := g.ackPayload(positions)
		g.mu.Unlock()
		if g.q.opts.asyncAckGate != nil {
			g.q.opts.asyncAckGate()
		}
		_, err := g.writeRecord(context.Background(), record.TypeAck, payload)
		g.mu.Lock()
		if err != nil {
			g.untake(took)
		}
		g.ackWritten(ds, err)
		g.mu.Unlock()
		if err != nil && first == nil {
			first = err
		}
		if err != nil && !errors.Is(err, ErrGroupDeleted) {
			g.q.logger.Warn("zeroloss: async acks not written; their messages will be delivered again",
				"group", g.name, "count", len(ds), "error", err)
		}
	}
}

// maxAsyncAcks bounds the positions of one async ack record (also bounded
// by MaxMessageSize/16, so that the record fits in a segment).
const maxAsyncAcks = 4096
