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

// Delivery is one delivery of a message to a Consumer. Its fields mirror
// zeroloss.Delivery's; Ack, Nack and Extend are safe for concurrent use.
type Delivery struct {
	Message zeroloss.Message
	Seq     uint64 // the message's stream sequence (SendResult.Seq)
	Attempt int    // JetStream's delivery count: 1 for the first delivery
	// FirstDelivered is when the message was stored: JetStream does not
	// record when it was first delivered. It is never after the first
	// delivery and the same on every redelivery.
	FirstDelivered time.Time

	c   *Consumer
	msg natsjs.Msg

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

var _ zeroloss.Received = (*Delivery)(nil)

// Info returns the delivery's fields as a zeroloss.DeliveryInfo.
func (d *Delivery) Info() zeroloss.DeliveryInfo {
	return zeroloss.DeliveryInfo{Message: d.Message, Seq: d.Seq, Attempt: d.Attempt, FirstDelivered: d.FirstDelivered}
}

// Ack acknowledges the message and waits for the server to confirm it
// (DoubleAck), at most Options.Timeout. The consumer's state is replicated
// like the stream's; see the package documentation for its fsync. An ack
// after the ack wait still counts if the message was not dead-lettered
// meanwhile. Acking an acked delivery does nothing.
func (d *Delivery) Ack() error {
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
		return fmt.Errorf("jetstream: ack of seq %d: %w", d.Seq, err)
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
func (d *Delivery) Nack(delay time.Duration) error {
	defer d.c.forget(d) // after d.mu is released: Consumer.mu comes first
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.heldLocked("nack"); err != nil {
		return err
	}
	d.stopKeepAlive()
	if d.Attempt >= d.c.opts.MaxDeliveries {
		ctx, cancel := d.c.b.bound(context.Background())
		defer cancel()
		if err := d.c.b.deadLetter(ctx, d.c.group, d.Seq, d.msg.Subject(), d.msg.Headers(), d.msg.Data(), d.Attempt,
			"nacked on the last allowed delivery"); err != nil {
			return err // still held: the ack wait ends it, and the advisory dead-letters it
		}
		d.state = nacked
		if err := d.msg.TermWithReason("dead-lettered"); err != nil {
			return fmt.Errorf("jetstream: terminating seq %d after dead-lettering it: %w", d.Seq, err)
		}
		return nil
	}
	if delay <= 0 {
		delay = d.c.backoff(d.Attempt)
	}
	d.state = nacked
	if err := d.msg.NakWithDelay(delay); err != nil {
		return fmt.Errorf("jetstream: nack of seq %d: %w", d.Seq, err)
	}
	return nil
}

// Extend keeps the delivery for at least by from now. JetStream cannot set
// an ack deadline, only restart the ack wait (a progress ack, +WPI); Extend
// sends one now and, while by is not covered, again every half ack wait, until
// the delivery is acked or nacked, by has passed, or the adapter closes. The
// delivery may thus be held up to one ack wait longer than by. It returns
// zeroloss.ErrDeliveryExpired if the delivery is no longer held.
func (d *Delivery) Extend(by time.Duration) error {
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
func (d *Delivery) renewLocked() error {
	if err := d.msg.InProgress(); err != nil {
		return fmt.Errorf("jetstream: extend of seq %d: %w", d.Seq, err)
	}
	wait := d.c.ackWaitOf(d.Attempt)
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
				d.c.b.logger.Warn("jetstream: could not extend a delivery", "group", d.c.group, "seq", d.Seq, "error", err)
			}
		})
	}
	return nil
}

func (d *Delivery) stopKeepAlive() {
	if d.keepAlive != nil {
		d.keepAlive.Stop()
		d.keepAlive = nil
	}
}

// heldLocked returns ErrDeliveryExpired unless the delivery is still held.
func (d *Delivery) heldLocked(op string) error {
	if d.state != held || time.Now().After(d.deadline) {
		return fmt.Errorf("jetstream: %s of seq %d: %w", op, d.Seq, zeroloss.ErrDeliveryExpired)
	}
	return nil
}

func (d *Delivery) supersede() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == held {
		d.state = superseded
		d.stopKeepAlive()
	}
}

func (d *Delivery) expiry() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deadline
}
