package zlwatermill

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/zerolossmq/zeroloss"
)

// GroupFunc names the zeroloss consumer group that a Subscribe of topic
// reads. A zeroloss group reads one topic, so a GroupFunc must give
// different topics different names (a name already declared for another
// topic makes Subscribe fail with an error naming Topic).
type GroupFunc func(topic string) string

// GroupPerTopic returns the GroupFunc naming a service's group of each
// topic: name + "@" + topic. Every Subscriber built with the same name
// shares each topic's messages (instances of one service); Subscribers
// with different names each receive every message (different services).
// "@" is not allowed in topic names, so two pairs never share a group name.
func GroupPerTopic(name string) GroupFunc {
	return func(topic string) string { return name + "@" + topic }
}

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	// ConsumerGroup names the durable consumer group of each topic
	// subscribed to (GroupPerTopic, or any GroupFunc). Required: a
	// Subscribe reads through a group, and which Subscribers share one
	// (work split between instances) or do not (every service gets every
	// message) is the application's choice, not a default's. A group is
	// durable: it holds retention back until it has acked, so a GroupFunc
	// that invents a new name per Subscribe (Kafka's "a new subscriber
	// reads from the start", with Consumer.Start StartOldest) leaves groups
	// behind that Queue.DeleteGroup must remove.
	ConsumerGroup GroupFunc
	// Consumer configures the consumers: AckTimeout (set it above the
	// longest handler: a message not acked by then is delivered again, and
	// the late Ack is logged as failed), MaxDeliveries (a Nack counts one,
	// a Close does not; then the message goes to the group's dead letters),
	// Backoff (after an AckTimeout only: Nack redelivers at once), Ordered
	// (with a PublisherConfig.Key), Start and Tags. Concurrency is how many
	// messages one Subscribe hands out before the first is acked or
	// nacked (default 1: the next is handed out once the previous is acked
	// or nacked). Topic must be empty: Subscribe sets it to the Watermill
	// topic.
	Consumer zeroloss.ConsumerOptions
	// AckAsync acks with Delivery.AckAsync instead of Delivery.Ack: the
	// next message is handed out without waiting for the ack's fdatasync,
	// and the acks made meanwhile share one. Weaker: a crash before that
	// fdatasync delivers those messages again (none is lost). In an ordered
	// group the key's next message still waits until the ack is durable.
	AckAsync bool
	// Logger receives the adapter's log lines. Default: none.
	Logger watermill.LoggerAdapter
}

// Subscriber is a message.Subscriber reading from a zeroloss Queue. It is
// safe for concurrent use.
type Subscriber struct {
	q       *zeroloss.Queue
	config  SubscriberConfig
	workers int

	mu      sync.Mutex
	closed  bool
	closing chan struct{} // closed by Close
	running sync.WaitGroup
}

// NewSubscriber returns a Subscriber reading from q, or an error matching
// zeroloss.ErrInvalidOptions naming the field of config that is wrong.
// Closing it does not close q.
func NewSubscriber(q *zeroloss.Queue, config SubscriberConfig) (*Subscriber, error) {
	if q == nil {
		return nil, fmt.Errorf("zlwatermill: NewSubscriber: queue is nil: %w", zeroloss.ErrInvalidOptions)
	}
	if config.ConsumerGroup == nil {
		return nil, fmt.Errorf("zlwatermill: NewSubscriber: SubscriberConfig.ConsumerGroup is nil (use GroupPerTopic): %w", zeroloss.ErrInvalidOptions)
	}
	if config.Consumer.Topic != "" {
		return nil, fmt.Errorf("zlwatermill: NewSubscriber: SubscriberConfig.Consumer.Topic is %q; leave it empty, Subscribe sets it: %w",
			config.Consumer.Topic, zeroloss.ErrInvalidOptions)
	}
	opts, err := config.Consumer.WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("zlwatermill: NewSubscriber: SubscriberConfig.Consumer: %w", err)
	}
	if config.Logger == nil {
		config.Logger = watermill.NopLogger{}
	}
	return &Subscriber{q: q, config: config, workers: opts.Concurrency, closing: make(chan struct{})}, nil
}

// consumer returns a zeroloss consumer of topic's group.
func (s *Subscriber) consumer(topic string) (*zeroloss.Consumer, string, error) {
	if topic == "" {
		return nil, "", fmt.Errorf("zlwatermill: subscribe: topic is empty (zeroloss would read its default topic): %w", zeroloss.ErrInvalidOptions)
	}
	group := s.config.ConsumerGroup(topic)
	if group == "" {
		return nil, "", fmt.Errorf("zlwatermill: subscribe to topic %q: ConsumerGroup gave an empty group name: %w", topic, zeroloss.ErrInvalidOptions)
	}
	opts := s.config.Consumer
	opts.Topic = topic
	c, err := s.q.Consumer(group, &opts)
	if err != nil {
		return nil, "", fmt.Errorf("zlwatermill: subscribe to topic %q as group %q: %w", topic, group, err)
	}
	return c, group, nil
}

// start counts a call in, or returns false once Close has begun.
func (s *Subscriber) start() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.running.Add(1)
	return true
}

// SubscribeInitialize declares topic's consumer group (durably) without
// reading: messages published from then on are kept for it even if the
// group starts at StartLatest. It implements message.SubscribeInitializer.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if !s.start() {
		return ErrSubscriberClosed
	}
	defer s.running.Done()
	c, _, err := s.consumer(topic)
	if err != nil {
		return err
	}
	return c.Close()
}

// Subscribe returns the messages of topic's consumer group. The channel is
// closed once ctx ends or Close is called (the messages handed out and not
// acked are then released to the group at once and their contexts
// cancelled), or when the queue stops delivering (closed, the group deleted,
// a write failed: logged). Each message's context derives from ctx and is
// cancelled once it is acked or nacked, or on Close.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if !s.start() {
		return nil, ErrSubscriberClosed
	}
	c, group, err := s.consumer(topic)
	if err != nil {
		s.running.Done()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	sub := &subscription{
		s:        s,
		consumer: c,
		ctx:      ctx,
		out:      make(chan *message.Message),
		fields:   watermill.LogFields{"topic": topic, "group": group},
	}
	go func() {
		select {
		case <-s.closing:
		case <-ctx.Done():
		case <-s.q.Done(): // the queue closed first: stop waiting for acks
		}
		cancel()
	}()
	go func() {
		defer s.running.Done()
		var workers sync.WaitGroup
		for range s.workers {
			workers.Add(1)
			go func() {
				defer workers.Done()
				sub.run()
			}()
		}
		workers.Wait()
		// Release at once what was handed out and not acked: the group's
		// other consumers get it now, not after AckTimeout.
		_ = c.Close()
		cancel()
		close(sub.out)
	}()
	return sub.out, nil
}

// Close ends every subscription (see Subscribe) and waits until their
// channels are closed. It does not close the queue. It is idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.running.Wait()
	return nil
}

// subscription is one Subscribe: its consumer and its workers' channel.
type subscription struct {
	s        *Subscriber
	consumer *zeroloss.Consumer
	ctx      context.Context // ends with Subscribe's ctx, Close or the queue's Close
	out      chan *message.Message
	fields   watermill.LogFields
}

// run hands out messages one at a time until the subscription ends.
func (sub *subscription) run() {
	for {
		d, err := sub.consumer.Receive(sub.ctx)
		if err != nil {
			switch {
			case sub.ctx.Err() != nil:
			case errors.Is(err, zeroloss.ErrClosed):
				sub.s.config.Logger.Info("zlwatermill: the queue is closed; the subscription ends", sub.fields)
			default:
				sub.s.config.Logger.Error("zlwatermill: receive failed; the subscription ends", err, sub.fields)
			}
			return
		}
		if !sub.handOut(d) {
			return
		}
	}
}

// handOut gives d to Watermill and waits for its Ack or Nack. It returns
// false once the subscription ended (d is then left for Consumer.Close to
// release, unless it was acked or nacked just before).
func (sub *subscription) handOut(d *zeroloss.Delivery) bool {
	msg := message.NewMessage(d.Message.ID, d.Message.Body)
	for k, v := range d.Message.Headers {
		msg.Metadata.Set(k, v)
	}
	ctx, cancel := context.WithCancel(sub.ctx)
	defer cancel()
	msg.SetContext(ctx)
	select {
	case sub.out <- msg:
	case <-sub.ctx.Done():
		return false
	}
	select {
	case <-msg.Acked():
		sub.ack(d)
	case <-msg.Nacked():
		sub.nack(d)
	case <-sub.ctx.Done():
		// An Ack or Nack that came with the end still counts.
		select {
		case <-msg.Acked():
			sub.ack(d)
		case <-msg.Nacked():
			sub.nack(d)
		default:
		}
		return false
	}
	return true
}

func (sub *subscription) ack(d *zeroloss.Delivery) {
	var err error
	if sub.s.config.AckAsync {
		err = d.AckAsync()
	} else {
		err = d.Ack()
	}
	if err != nil {
		sub.s.config.Logger.Error("zlwatermill: ack failed; the message will be delivered again", err, sub.deliveryFields(d))
	}
}

func (sub *subscription) nack(d *zeroloss.Delivery) {
	if err := d.NackNow(); err != nil && !errors.Is(err, zeroloss.ErrDeliveryExpired) {
		sub.s.config.Logger.Error("zlwatermill: nack failed", err, sub.deliveryFields(d))
	}
}

func (sub *subscription) deliveryFields(d *zeroloss.Delivery) watermill.LogFields {
	return sub.fields.Add(watermill.LogFields{"message_uuid": d.Message.ID, "seq": d.Seq, "attempt": d.Attempt})
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)
