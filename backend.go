package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Backends.
//
// The user-facing API is one set of concrete types, the same for every
// backend, as database/sql's is: *Consumer (Group, Receive, ReceiveBatch,
// Consume, AckBatch, Close) and *Delivery (its fields; Ack, AckAsync, Nack,
// NackNow, Release, Extend). Backend is what a place messages live in offers:
// the embedded queue (*Queue) and the NATS JetStream adapter (module
// github.com/zerolossmq/zeroloss/jetstream) both satisfy it, so application
// code written against Backend, *Consumer and *Delivery runs on either.
//
// The embedded queue's Consumers and Deliveries run its own code directly.
// Another backend plugs in beneath them as a driver (ConsumerDriver,
// DeliveryDriver, NewDriverConsumer, NewDriverDelivery); what a driver
// cannot do fails with an error matching ErrUnsupported, which the backend
// documents.
//
// What each backend promises for a status differs (the embedded queue's
// SendOK is an fdatasync on this machine; JetStream's is a PubAck from a
// quorum of the stream's replicas): each backend documents its table, and the
// JetStream adapter checks its server's configuration against what its
// options require.

// ErrUnsupported: the backend cannot do what was asked (a driver's missing
// feature, such as Release on JetStream, which counts every redelivery). The
// backend documents which operations return it; nothing was changed. It
// matches errors.ErrUnsupported too.
var ErrUnsupported = fmt.Errorf("zeroloss: %w", errors.ErrUnsupported)

// Sender sends messages and reports how far each is guaranteed.
//
// err != nil means the message was not confirmed. On the embedded queue it
// was not appended; on a networked backend it may have been stored if the
// error is the loss of the confirmation (the backend documents which errors
// leave the outcome unknown). In every case resending the same message with
// the same Message.ID within the backend's dedup window is safe: a message
// that did land is answered with SendResult.Duplicate set and nothing is
// stored twice.
//
// A result with a Status other than SendOK means the message was stored but a
// guarantee was not confirmed; the status names which one. Safe for
// concurrent use.
type Sender interface {
	// Send sends m and blocks until it is stored with its status, or fails.
	// m is not modified; an empty ID is generated and returned in the result.
	Send(ctx context.Context, m *Message) (SendResult, error)
	// SendBatch sends msgs in order. It returns a result for every message
	// up to the first that was not confirmed; if err != nil, the messages
	// after len(results) are not confirmed (on the embedded queue: not
	// appended; elsewhere possibly stored: resend them with their IDs).
	SendBatch(ctx context.Context, msgs []*Message) ([]SendResult, error)
}

// Backend is a place messages are sent to and consumed from: the embedded
// queue or a networked engine. Safe for concurrent use.
type Backend interface {
	Sender
	// Consumer returns a consumer of the group called group, creating the
	// group if it does not exist (opts.Start then says where it starts).
	// A group receives every message of its topic (and tags); the
	// Consumers of one group share its messages. It fails with
	// ErrInvalidOptions for bad options or a group name the backend cannot
	// hold.
	Consumer(group string, opts *ConsumerOptions) (*Consumer, error)
	// DeadLetters returns the dead letters of the group, oldest first.
	DeadLetters(group string) ([]DeadLetter, error)
	// Close releases the backend. Later Sends and Receives fail with
	// ErrClosed.
	Close() error
}

// Compile-time check that the embedded queue is a Backend.
var _ Backend = (*Queue)(nil)

// ConsumerDriver is a consumer of one group on a backend other than the
// embedded queue, beneath a *Consumer (NewDriverConsumer). It is for backend
// implementations, not for applications, which use *Consumer.
//
// Consumer checks what does not depend on the backend before calling it
// (ReceiveBatch's max), sets the returned Deliveries' consumer, and runs
// Consume and AckBatch on top of Receive and Delivery.Ack. Each method has
// the contract of the Consumer method of the same name; one the backend
// cannot offer returns an error matching ErrUnsupported. Safe for concurrent
// use.
type ConsumerDriver interface {
	// Receive returns the next delivery, built with NewDriverDelivery.
	Receive(ctx context.Context) (*Delivery, error)
	// ReceiveBatch returns 1 to max deliveries (max ≥ 1).
	ReceiveBatch(ctx context.Context, max int) ([]*Delivery, error)
	// Close stops the consumer; its later Receives fail with an error
	// matching ErrConsumerClosed.
	Close() error
}

// DeliveryDriver is one delivery on a backend other than the embedded queue,
// beneath a *Delivery (NewDriverDelivery). It is for backend
// implementations, not for applications, which use *Delivery.
//
// Delivery checks its arguments before calling it (Nack's delay is not
// negative, Extend's is at least MinAckTimeout). Each method has the
// contract of the Delivery method of the same name; one the backend cannot
// offer returns an error matching ErrUnsupported. Safe for concurrent use.
type DeliveryDriver interface {
	Ack() error
	AckAsync() error
	Nack(delay time.Duration) error
	NackNow() error
	Release() error
	Extend(by time.Duration) error
}

// NewDriverConsumer returns the *Consumer of group that runs on d: a
// backend's implementation of Backend.Consumer returns it. opts are the
// consumer's options with their defaults (ConsumerOptions.WithDefaults):
// Consume runs opts.Concurrency handlers. logger (nil: discard) reports
// Consume's failed handlers and acks.
func NewDriverConsumer(group string, opts ConsumerOptions, d ConsumerDriver, logger *slog.Logger) *Consumer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Consumer{drv: d, group: group, opts: opts, logger: logger}
}

// NewDriverDelivery returns a *Delivery of message m that runs on d: a
// ConsumerDriver's Receive returns it. seq is the message's position in the
// backend (SendResult.Seq), attempt 1 for the first delivery,
// firstDelivered when the message was first delivered to the group (or
// earlier, never later; the same on every redelivery).
func NewDriverDelivery(m Message, seq uint64, attempt int, firstDelivered time.Time, d DeliveryDriver) *Delivery {
	return &Delivery{Message: m, Seq: seq, Attempt: attempt, FirstDelivered: firstDelivered, drv: d}
}

// receiveDriver is Receive on a driver.
func (c *Consumer) receiveDriver(ctx context.Context) (*Delivery, error) {
	d, err := c.drv.Receive(ctx)
	if err != nil {
		return nil, err
	}
	d.c = c
	return d, nil
}

// receiveBatchDriver is ReceiveBatch on a driver (max ≥ 1).
func (c *Consumer) receiveBatchDriver(ctx context.Context, max int) ([]*Delivery, error) {
	ds, err := c.drv.ReceiveBatch(ctx, max)
	if err != nil {
		return nil, err
	}
	for _, d := range ds {
		d.c = c
	}
	return ds, nil
}

// ackBatchDriver is AckBatch on a driver: each delivery acked in turn. The
// error joins every failure.
func (c *Consumer) ackBatchDriver(ds []*Delivery) error {
	for _, d := range ds {
		if d.drv == nil || d.c == nil || d.c.group != c.group {
			return fmt.Errorf("zeroloss: ack of a delivery of another group or backend on group %q: %w", c.group, ErrInvalidOptions)
		}
	}
	var errs []error
	for _, d := range ds {
		if err := d.drv.Ack(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
