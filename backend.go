package zeroloss

import (
	"context"
	"time"
)

// Backends.
//
// The interfaces below are the part of the API that does not depend on where
// the messages live. The embedded queue (*Queue, *Consumer, *Delivery)
// satisfies them, and so does the NATS JetStream adapter (module
// github.com/zerolossmq/zeroloss/jetstream), so application code written
// against them runs on either:
//
//	Backend       Sender + Subscribe + DeadLetters + Close   *Queue
//	Subscription  Next, Handle, Group                        *Consumer
//	Received      Info, Ack, Nack, Extend                    *Delivery
//
// The concrete methods (Queue.Consumer, Consumer.Receive, Consumer.Consume)
// return and take the concrete types, which Go does not let an interface
// method abstract over; Subscribe, Next and Handle are the same operations
// returning and taking the interfaces. They add no behaviour of their own:
// Next is Receive, Handle is Consume.
//
// What each backend promises for a status differs (the embedded queue's
// SendOK is an fdatasync on this machine; JetStream's is a PubAck from a
// quorum of the stream's replicas): each backend documents its table, and the
// JetStream adapter checks its server's configuration against what its
// options require.

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
	// Subscribe returns a consumer of the group called group, creating the
	// group if it does not exist (opts.Start then says where it starts).
	// Every group receives every message; the subscriptions of one group
	// share its messages. It fails with ErrInvalidOptions for bad options
	// or a group name the backend cannot hold.
	Subscribe(group string, opts *ConsumerOptions) (Subscription, error)
	// DeadLetters returns the dead letters of the group, oldest first.
	DeadLetters(group string) ([]DeadLetter, error)
	// Close releases the backend. Later Sends and Receives fail with
	// ErrClosed.
	Close() error
}

// Subscription receives the messages of one consumer group. Safe for
// concurrent use.
type Subscription interface {
	// Group returns the group's name.
	Group() string
	// Next blocks until a delivery is available, ctx ends (ctx's error) or
	// the backend is closed (ErrClosed). The caller must Ack or Nack it;
	// otherwise it is delivered again after the ack timeout.
	Next(ctx context.Context) (Received, error)
	// Handle calls h for each message, with up to ConsumerOptions.Concurrency
	// calls at once, until ctx ends or the backend closes. A message is
	// acked only after h returns nil; an error or a panic (recovered) is a
	// failed delivery, delivered again after its backoff (or dead-lettered
	// after MaxDeliveries). When ctx ends Handle stops receiving, waits for
	// the running calls (their context is not cancelled with ctx) and
	// returns ctx's error.
	Handle(ctx context.Context, h Handler) error
}

// Handler handles one delivery for Subscription.Handle: nil acks it, an
// error or a panic means it is delivered again.
type Handler func(ctx context.Context, d Received) error

// Received is one delivery of a message to a consumer, from any backend.
// Ack, Nack and Extend are safe for concurrent use.
type Received interface {
	// Info returns the message and where this delivery stands.
	Info() DeliveryInfo
	// Ack acknowledges the message: the group will not receive it again.
	// It returns once the backend confirmed the ack.
	Ack() error
	// Nack reports a failed handling: the message is delivered again after
	// delay (0: the consumer's backoff for this attempt), or goes to the
	// dead letters on its last allowed delivery. ErrDeliveryExpired if the
	// delivery is no longer held.
	Nack(delay time.Duration) error
	// Extend keeps the delivery for at least by from now, for long work.
	// ErrDeliveryExpired if the delivery is no longer held.
	Extend(by time.Duration) error
}

// DeliveryInfo describes one delivery.
type DeliveryInfo struct {
	Message Message
	// Seq is the message's position in the backend: its seq in the log's
	// main stream (embedded), its stream sequence (JetStream). It equals
	// SendResult.Seq.
	Seq uint64
	// Attempt is 1 for the first delivery.
	Attempt int
	// FirstDelivered is when the message was first delivered to the group
	// (embedded), or when it was stored (JetStream, which does not record
	// first deliveries): never after the first delivery, and the same on
	// every redelivery.
	FirstDelivered time.Time
}

// Compile-time checks that the embedded queue satisfies the interfaces.
var (
	_ Backend      = (*Queue)(nil)
	_ Subscription = (*Consumer)(nil)
	_ Received     = (*Delivery)(nil)
)

// Subscribe is Consumer returning the Subscription interface (see Backend).
func (q *Queue) Subscribe(group string, opts *ConsumerOptions) (Subscription, error) {
	c, err := q.Consumer(group, opts)
	if err != nil {
		return nil, err // not a typed nil
	}
	return c, nil
}

// Next is Receive returning the Received interface (see Subscription).
func (c *Consumer) Next(ctx context.Context) (Received, error) {
	d, err := c.Receive(ctx)
	if err != nil {
		return nil, err // not a typed nil
	}
	return d, nil
}

// Handle is Consume with a handler that takes the Received interface (see
// Subscription); h is given the *Delivery.
func (c *Consumer) Handle(ctx context.Context, h Handler) error {
	return c.Consume(ctx, func(ctx context.Context, d *Delivery) error { return h(ctx, d) })
}

// Info returns the delivery's fields as a DeliveryInfo (see Received).
func (d *Delivery) Info() DeliveryInfo {
	return DeliveryInfo{Message: d.Message, Seq: d.Seq, Attempt: d.Attempt, FirstDelivered: d.FirstDelivered}
}
