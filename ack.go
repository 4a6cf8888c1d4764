package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// Consumer errors.
var (
	// ErrDeliveryExpired: Nack or Extend on a delivery whose ack deadline
	// passed (the message may already be with another consumer) or that was
	// acked.
	ErrDeliveryExpired = errors.New("delivery expired")
	// ErrNotDurable: an ack or another consumer record was written but not
	// confirmed durable in time (the fdatasync timed out or failed). The
	// message may be delivered again.
	ErrNotDurable = errors.New("consumer record not confirmed durable")
)

// Delivery is one delivery of a message to a consumer.
type Delivery struct {
	Message        Message
	Seq            uint64    // the message's seq in the log
	Attempt        int       // 1 for the first delivery
	FirstDelivered time.Time // when it was first delivered

	c     *Consumer
	token uint64
}

// Ack acknowledges the message: it will not be delivered to the group again.
// It returns after the ack is durable as the queue's flush mode promises
// (under FlushSync after an fdatasync shared with other acks and sends). An
// ack after the ack deadline still counts. Safe for concurrent use.
func (d *Delivery) Ack() error { return d.c.AckBatch(d) }

// AckBatch acknowledges several deliveries of this consumer's group with one
// record.
func (c *Consumer) AckBatch(ds ...*Delivery) error {
	g := c.g
	g.mu.Lock()
	seqs := make([]uint64, 0, len(ds))
	for _, d := range ds {
		if d.c.g != g {
			g.mu.Unlock()
			return fmt.Errorf("zeroloss: ack of a delivery from group %q on group %q: %w", d.c.g.name, g.name, ErrInvalidOptions)
		}
		if u := g.pending[d.Seq]; u != nil && !u.dying {
			seqs = append(seqs, d.Seq)
		}
	}
	if len(seqs) == 0 {
		g.mu.Unlock()
		return nil // already acked
	}
	payload := g.ackPayload(seqs)
	g.mu.Unlock()
	if err := g.writeRecord(context.Background(), record.TypeAck, payload); err != nil {
		return err
	}
	g.mu.Lock()
	for _, s := range seqs {
		delete(g.pending, s)
	}
	g.notify()
	g.mu.Unlock()
	return nil
}

// Nack reports that handling failed: the message is delivered again after
// delay, or after the consumer's backoff for this attempt when delay is 0;
// on its last allowed delivery it goes to the dead letters instead. It
// returns ErrDeliveryExpired if the delivery is no longer held.
func (d *Delivery) Nack(delay time.Duration) error {
	g := d.c.g
	g.mu.Lock()
	u := g.pending[d.Seq]
	if u == nil || u.token != d.token || !u.out || u.dying {
		g.mu.Unlock()
		return fmt.Errorf("zeroloss: nack of seq %d: %w", d.Seq, ErrDeliveryExpired)
	}
	u.out = false
	if u.attempt >= d.c.opts.MaxDeliveries {
		u.dying = true
		g.mu.Unlock()
		return d.c.deadLetter(context.Background(), []*unacked{u}, "nacked on the last allowed delivery")
	}
	if delay <= 0 {
		delay = d.c.backoff(u.attempt)
	}
	u.due, u.wait = d.c.q.opts.now().Add(delay), delay
	g.notify()
	g.mu.Unlock()
	return nil
}

// Extend moves the ack deadline to d from now, for long work. It returns
// ErrDeliveryExpired if the delivery is no longer held.
func (d *Delivery) Extend(by time.Duration) error {
	g := d.c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	u := g.pending[d.Seq]
	if u == nil || u.token != d.token || !u.out || u.dying {
		return fmt.Errorf("zeroloss: extend of seq %d: %w", d.Seq, ErrDeliveryExpired)
	}
	u.deadline, u.timeout = d.c.q.opts.now().Add(by), by
	return nil
}

// deadLetter moves messages to the group's dead letters: a dead-letter record
// with the message, then an ack record, so the group moves past them.
func (c *Consumer) deadLetter(ctx context.Context, us []*unacked, reason string) error {
	g := c.g
	for _, u := range us {
		dl := record.DeadLetter{Seq: u.seq, Attempts: uint64(u.attempt), Reason: reason,
			Message: record.Message{ID: u.msg.ID, Key: u.msg.Key, Headers: u.msg.Headers, Body: u.msg.Body, DeliverAt: u.msg.DeliverAt}}
		if err := g.writeRecord(ctx, record.TypeDeadLetter, record.AppendDeadLetter(nil, &dl)); err != nil {
			g.mu.Lock()
			u.dying = false
			g.mu.Unlock()
			return err
		}
		g.mu.Lock()
		g.dead++
		g.mu.Unlock()
		c.q.logger.Warn("zeroloss: message dead-lettered", "group", g.name, "seq", u.seq, "attempts", u.attempt, "reason", reason)
		g.mu.Lock()
		payload := g.ackPayload([]uint64{u.seq})
		g.mu.Unlock()
		if err := g.writeRecord(ctx, record.TypeAck, payload); err != nil {
			return err
		}
		g.mu.Lock()
		delete(g.pending, u.seq)
		g.notify()
		g.mu.Unlock()
	}
	return nil
}

// DeadLetter is a message a group gave up on.
type DeadLetter struct {
	Seq      uint64 // the message's seq in the main stream
	Attempts int
	Reason   string
	Message  Message
	Time     time.Time // when it was dead-lettered
}

// DeadLetters returns the dead letters of the group called name, oldest
// first, by reading the log.
func (q *Queue) DeadLetters(name string) ([]DeadLetter, error) {
	q.groupsMu.Lock()
	g := q.groups[name]
	q.groupsMu.Unlock()
	if g == nil {
		return nil, fmt.Errorf("zeroloss: no consumer group %q: %w", name, ErrInvalidOptions)
	}
	r := q.log.NewReader(0)
	defer r.Close()
	var out []DeadLetter
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if rec.Type != record.TypeDeadLetter || rec.Stream != g.id {
			continue
		}
		dl, err := record.DecodeDeadLetter(rec.Payload)
		if err != nil {
			return out, fmt.Errorf("zeroloss: dead letter at seq %d: %w", rec.Seq, err)
		}
		out = append(out, DeadLetter{Seq: dl.Seq, Attempts: int(dl.Attempts), Reason: dl.Reason,
			Message: fromRecord(dl.Message), Time: time.Unix(0, rec.Time)})
	}
}
