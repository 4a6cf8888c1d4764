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

var (
	// ErrPublisherClosed: Publish after Publisher.Close. Nothing was sent.
	ErrPublisherClosed = errors.New("zlwatermill: publisher closed")
	// ErrSubscriberClosed: Subscribe or SubscribeInitialize after
	// Subscriber.Close.
	ErrSubscriberClosed = errors.New("zlwatermill: subscriber closed")
	// ErrNotConfirmed: Publish appended a message but the queue did not
	// confirm it SendOK (FlushDiskTimeout, or a replication status): it is
	// in the log, but the queue's durability promise was not confirmed in
	// time. The error names the message's UUID and the status. Publishing
	// it again may store it twice, unless DedupByUUID is set.
	ErrNotConfirmed = errors.New("zlwatermill: message appended but not confirmed SendOK")
)

// KeyFunc gives the zeroloss Message.Key of a message published to topic.
// An ordered group (ConsumerOptions.Ordered) hands out the messages that
// share a key one at a time, in publication order.
type KeyFunc func(topic string, msg *message.Message) string

// KeyByTopic keys every message by its topic: an ordered group then hands
// out a topic's messages one at a time, in publication order, across all
// its subscribers (Watermill's GuaranteedOrder, at the throughput of one
// consumer).
func KeyByTopic(topic string, _ *message.Message) string { return topic }

// KeyFromMetadata keys a message by its metadata field name (an entity's
// ID, say): order then holds per value, and different values are handled
// in parallel. A message without the field has no key and no order.
func KeyFromMetadata(name string) KeyFunc {
	return func(_ string, msg *message.Message) string { return msg.Metadata.Get(name) }
}

// PublisherConfig configures a Publisher. The zero value is valid.
type PublisherConfig struct {
	// DedupByUUID sends each message with its UUID as a deduplicated ID:
	// a Publish of a UUID already sent to the same topic within the queue's
	// DedupWindow appends nothing (so retrying a Publish that failed or was
	// not confirmed is safe). Off by default: every message is sent with
	// Message.NoDedup, because Watermill may publish one UUID again on
	// purpose (a message forwarded, or re-published by a middleware) and
	// expects it delivered again. Either way delivery is at least once:
	// deduplication covers publishing, not consumption.
	DedupByUUID bool
	// AcceptUnconfirmed makes Publish return nil for a message appended
	// with any status (FlushDiskTimeout, FlushReplicaTimeout,
	// ReplicaNotAvailable), not only SendOK. Off by default: such a
	// status is an error matching ErrNotConfirmed.
	AcceptUnconfirmed bool
	// Key gives each message's zeroloss key (nil: no key). Use KeyByTopic
	// or KeyFromMetadata with ordered subscribers.
	Key KeyFunc
	// Logger receives the adapter's log lines. Default: none.
	Logger watermill.LoggerAdapter
}

// Publisher is a message.Publisher that sends to a zeroloss Queue. It is
// safe for concurrent use.
type Publisher struct {
	q      *zeroloss.Queue
	config PublisherConfig

	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup // Publish calls in progress, for Close
}

// NewPublisher returns a Publisher sending to q. Closing it does not close
// q.
func NewPublisher(q *zeroloss.Queue, config PublisherConfig) (*Publisher, error) {
	if q == nil {
		return nil, fmt.Errorf("zlwatermill: NewPublisher: queue is nil: %w", zeroloss.ErrInvalidOptions)
	}
	if config.Logger == nil {
		config.Logger = watermill.NopLogger{}
	}
	return &Publisher{q: q, config: config}, nil
}

// Publish sends msgs to topic, in order, with one SendBatch: one write, and
// one fdatasync under FlushSync. It returns nil once every message is
// SendOK (or appended with another status, with AcceptUnconfirmed). An
// error matching ErrNotConfirmed says every message was appended and names
// the first not confirmed; any other error says how many of the first
// messages were appended (the rest were not) and wraps the queue's reason
// (an invalid topic, a full disk, a closed queue: the zeroloss sentinel
// matches). It does not use the messages'
// contexts (Watermill's own tests publish with a cancelled one): the
// queue's FlushTimeout bounds the wait for durability.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrPublisherClosed
	}
	p.running.Add(1)
	p.mu.Unlock()
	defer p.running.Done()

	if topic == "" {
		return fmt.Errorf("zlwatermill: publish: topic is empty (zeroloss would send to its default topic): %w", zeroloss.ErrInvalidMessage)
	}
	if len(msgs) == 0 {
		return nil
	}
	batch := make([]*zeroloss.Message, len(msgs))
	for i, msg := range msgs {
		m := &zeroloss.Message{
			ID:      msg.UUID,
			Topic:   topic,
			Body:    msg.Payload,
			NoDedup: !p.config.DedupByUUID,
		}
		if len(msg.Metadata) > 0 {
			m.Headers = make(map[string]string, len(msg.Metadata))
			for k, v := range msg.Metadata {
				m.Headers[k] = v
			}
		}
		if p.config.Key != nil {
			m.Key = p.config.Key(topic, msg)
		}
		batch[i] = m
	}
	results, err := p.q.SendBatch(context.Background(), batch)
	if err != nil {
		return fmt.Errorf("zlwatermill: publish to topic %q: the first %d of %d messages were appended, the rest not: %w",
			topic, len(results), len(msgs), err)
	}
	if p.config.AcceptUnconfirmed {
		return nil
	}
	for i, r := range results {
		if r.Status != zeroloss.SendOK {
			return fmt.Errorf("zlwatermill: publish to topic %q: message %d of %d (UUID %q, seq %d) is %v: %w",
				topic, i, len(msgs), msgs[i].UUID, r.Seq, r.Status, ErrNotConfirmed)
		}
	}
	return nil
}

// Close makes later Publish calls return ErrPublisherClosed and waits for
// those in progress. It does not close the queue. It is idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.running.Wait()
	return nil
}

var _ message.Publisher = (*Publisher)(nil)
