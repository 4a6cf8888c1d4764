package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/zerolossmq/zeroloss"
)

// delivery is the zeroloss.DeliveryDriver of one *zeroloss.Delivery, which
// holds the message, Seq, Attempt and FirstDelivered. Safe for concurrent
// use.
type delivery struct {
	c       *consumer
	msg     natsjs.Msg
	seq     uint64 // the message's stream sequence (SendResult.Seq)
	attempt int    // JetStream's delivery count: 1 for the first delivery

	mu          sync.Mutex
	state       deliveryState
	deadline    time.Time   // when the server gives up on this delivery (seen from here, a little late)
	extendUntil time.Time   // Extend's target
	keepAlive   *time.Timer // renews the ack wait until extendUntil
}

type deliveryState int

const (
	held deliveryState = iota
	acked
	nacked     // or dead-lettered
	superseded // this Consumer received the message again
)

var _ zeroloss.DeliveryDriver = (*delivery)(nil)

// redeliverNow, as nack's delay, is NackNow's: a NAK without a delay.
const redeliverNow time.Duration = -1

// Ack acknowledges the message and waits for the server to confirm it
// (DoubleAck), at most Options.Timeout. The consumer's state is replicated
// like the stream's; see the package documentation for its fsync. An ack
// after the ack wait still counts if the message was not dead-lettered
// meanwhile. Acking an acked delivery does nothing.
func (d *delivery) Ack() error {
	d.mu.Lock()
	if d.state == acked {
		d.mu.Unlock()
		return nil
	}
	d.stopKeepAlive()
	d.mu.Unlock()
	ctx, cancel := d.c.b.bound(context.Background())
	defer cancel()
	if err := d.msg.DoubleAck(ctx); err != nil && !errors.Is(err, natsjs.ErrMsgAlreadyAckd) {
		return fmt.Errorf("jetstream: ack of seq %d: %w", d.seq, err)
	}
	d.mu.Lock()
	d.state = acked
	d.mu.Unlock()
	d.c.forget(d)
	return nil
}

// AckAsync acknowledges the message without waiting for the server to
// confirm it (a plain ACK). If the ack is lost the message is delivered
// again after its ack wait; it is never lost. Acking an acked delivery does
// nothing.
func (d *delivery) AckAsync() error {
	d.mu.Lock()
	if d.state == acked {
		d.mu.Unlock()
		return nil
	}
	d.stopKeepAlive()
	d.mu.Unlock()
	if err := d.msg.Ack(); err != nil && !errors.Is(err, natsjs.ErrMsgAlreadyAckd) {
		return fmt.Errorf("jetstream: ack of seq %d: %w", d.seq, err)
	}
	d.mu.Lock()
	d.state = acked
	d.mu.Unlock()
	d.c.forget(d)
	return nil
}

// Nack reports that handling failed: the message is delivered again after
// delay (0: the consumer's Backoff for this attempt) through a NAK with that
// delay. On the last allowed delivery (Attempt ≥ MaxDeliveries) it is
// published to the group's dead letters, confirmed, then terminated (AckTerm)
// instead. It returns zeroloss.ErrDeliveryExpired if the delivery is no
// longer held: acked, nacked, past its ack wait, or received again by this
// Consumer.
func (d *delivery) Nack(delay time.Duration) error { return d.nack("nack", delay) }

// NackNow is Nack with no delay: a NAK without one, which the server
// redelivers at once. On the last allowed delivery the message is
// dead-lettered as by Nack.
func (d *delivery) NackNow() error { return d.nack("nack now", redeliverNow) }

// Release is not offered: JetStream counts every delivery of a message
// towards MaxDeliver, so it cannot give a message back without a failed
// attempt. It returns an error matching ErrUnsupported (and
// zeroloss.ErrUnsupported) and changes nothing; NackNow gives the message
// back at once, counting the attempt.
func (d *delivery) Release() error {
	return fmt.Errorf("%w: Release of seq %d: JetStream counts every delivery as an attempt (NackNow gives it back, counted)",
		ErrUnsupported, d.seq)
}

// nack is Nack and NackNow (delay redeliverNow).
func (d *delivery) nack(op string, delay time.Duration) error {
	defer d.c.forget(d) // after d.mu is released: Consumer.mu comes first
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.heldLocked(op); err != nil {
		return err
	}
	d.stopKeepAlive()
	if d.attempt >= d.c.opts.MaxDeliveries {
		ctx, cancel := d.c.b.bound(context.Background())
		defer cancel()
		if err := d.c.b.deadLetter(ctx, d.c.group, d.seq, d.msg.Subject(), d.msg.Headers(), d.msg.Data(), d.attempt,
			"nacked on the last allowed delivery"); err != nil {
			return err // still held: the ack wait ends it, and the advisory dead-letters it
		}
		d.state = nacked
		if err := d.msg.TermWithReason("dead-lettered"); err != nil {
			return fmt.Errorf("jetstream: terminating seq %d after dead-lettering it: %w", d.seq, err)
		}
		return nil
	}
	d.state = nacked
	var err error
	switch {
	case delay == redeliverNow:
		err = d.msg.Nak()
	case delay == 0:
		err = d.msg.NakWithDelay(d.c.backoff(d.attempt))
	default:
		err = d.msg.NakWithDelay(delay)
	}
	if err != nil {
		return fmt.Errorf("jetstream: %s of seq %d: %w", op, d.seq, err)
	}
	return nil
}

// Extend keeps the delivery for at least by from now. JetStream cannot set
// an ack deadline, only restart the ack wait (a progress ack, +WPI); Extend
// sends one now and, while by is not covered, again every half ack wait, until
// the delivery is acked or nacked, by has passed, or the adapter closes. The
// delivery may thus be held up to one ack wait longer than by. It returns
// zeroloss.ErrDeliveryExpired if the delivery is no longer held.
func (d *delivery) Extend(by time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.heldLocked("extend"); err != nil {
		return err
	}
	d.extendUntil = time.Now().Add(by)
	return d.renewLocked()
}

// renewLocked sends a progress ack and schedules the next one if
// extendUntil is beyond the ack wait it restarts.
func (d *delivery) renewLocked() error {
	if err := d.msg.InProgress(); err != nil {
		return fmt.Errorf("jetstream: extend of seq %d: %w", d.seq, err)
	}
	wait := d.c.ackWaitOf(d.attempt)
	d.deadline = time.Now().Add(wait)
	if d.deadline.Before(d.extendUntil) {
		d.stopKeepAlive()
		d.keepAlive = time.AfterFunc(wait/2, func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.state != held || d.c.b.closed() || d.keepAlive == nil {
				return
			}
			if err := d.renewLocked(); err != nil {
				d.c.b.logger.Warn("jetstream: could not extend a delivery", "group", d.c.group, "seq", d.seq, "error", err)
			}
		})
	}
	return nil
}

func (d *delivery) stopKeepAlive() {
	if d.keepAlive != nil {
		d.keepAlive.Stop()
		d.keepAlive = nil
	}
}

// heldLocked returns ErrDeliveryExpired unless the delivery is still held.
func (d *delivery) heldLocked(op string) error {
	if d.state != held || time.Now().After(d.deadline) {
		return fmt.Errorf("jetstream: %s of seq %d: %w", op, d.seq, zeroloss.ErrDeliveryExpired)
	}
	return nil
}

func (d *delivery) supersede() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == held {
		d.state = superseded
		d.stopKeepAlive()
	}
}

func (d *delivery) expiry() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deadline
}
