package zlwatermill_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zerolossmq/zeroloss"
	zlwatermill "github.com/zerolossmq/zeroloss/watermill"
)

// wait is how long a test waits for something that should happen at once.
const wait = 10 * time.Second

// never is a timeout no test may wait for: a message delivered again after
// it is not delivered again "at once".
const never = time.Hour

func newPublisher(t *testing.T, q *zeroloss.Queue, config zlwatermill.PublisherConfig) *zlwatermill.Publisher {
	t.Helper()
	pub, err := zlwatermill.NewPublisher(q, config)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

func newSubscriber(t *testing.T, q *zeroloss.Queue, config zlwatermill.SubscriberConfig) *zlwatermill.Subscriber {
	t.Helper()
	if config.ConsumerGroup == nil {
		config.ConsumerGroup = zlwatermill.GroupPerTopic("service")
	}
	sub, err := zlwatermill.NewSubscriber(q, config)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// next returns the next message of msgs, failing the test after wait.
func next(t *testing.T, msgs <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-msgs:
		require.True(t, ok, "messages channel closed")
		return msg
	case <-time.After(wait):
		require.FailNow(t, "no message within the deadline")
		return nil
	}
}

// done fails the test unless ctx ends within wait.
func done(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(wait):
		require.FailNow(t, what)
	}
}

// closed fails the test unless msgs is closed within wait (messages still
// in it are drained).
func closed(t *testing.T, msgs <-chan *message.Message) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-msgs:
			if !ok {
				return
			}
		case <-deadline:
			require.FailNow(t, "messages channel not closed")
		}
	}
}

// receiveRaw receives the next delivery of group straight from the queue.
func receiveRaw(t *testing.T, q *zeroloss.Queue, group, topic string) *zeroloss.Delivery {
	t.Helper()
	c, err := q.Consumer(group, &zeroloss.ConsumerOptions{Topic: topic, AckTimeout: never})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	d, err := c.Receive(ctx)
	require.NoError(t, err)
	return d
}

func groupStats(t *testing.T, q *zeroloss.Queue, group string) zeroloss.GroupStats {
	t.Helper()
	for _, s := range q.GroupStats() {
		if s.Group == group {
			return s
		}
	}
	require.FailNow(t, "no such group", group)
	return zeroloss.GroupStats{}
}

func TestRoundTrip(t *testing.T) {
	q := openQueue(t)
	pub := newPublisher(t, q, zlwatermill.PublisherConfig{Key: zlwatermill.KeyFromMetadata("order")})
	sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{})
	msg := message.NewMessage("uuid-1", []byte("payload \x00\xff"))
	msg.Metadata.Set("order", "42")
	msg.Metadata.Set("trace", "abc")
	require.NoError(t, pub.Publish("orders.v1", msg))

	// As zeroloss holds it: ID, topic, headers, body, key.
	d := receiveRaw(t, q, "raw", "orders.v1")
	assert.Equal(t, "uuid-1", d.Message.ID)
	assert.Equal(t, "orders.v1", d.Message.Topic)
	assert.Equal(t, map[string]string{"order": "42", "trace": "abc"}, d.Message.Headers)
	assert.Equal(t, []byte("payload \x00\xff"), d.Message.Body)
	assert.Equal(t, "42", d.Message.Key)

	// As Watermill receives it.
	msgs, err := sub.Subscribe(context.Background(), "orders.v1")
	require.NoError(t, err)
	got := next(t, msgs)
	assert.Equal(t, msg.UUID, got.UUID)
	assert.Equal(t, msg.Metadata, got.Metadata)
	assert.Equal(t, msg.Payload, got.Payload)
	require.True(t, got.Ack())
}

func TestPublishBatchInOrder(t *testing.T) {
	q := openQueue(t)
	pub := newPublisher(t, q, zlwatermill.PublisherConfig{})
	var batch []*message.Message
	for i := range 5 {
		batch = append(batch, message.NewMessage(fmt.Sprintf("m%d", i), nil))
	}
	require.NoError(t, pub.Publish("t", batch...))
	c, err := q.Consumer("raw", &zeroloss.ConsumerOptions{Topic: "t"})
	require.NoError(t, err)
	ds, err := c.ReceiveBatch(context.Background(), 5)
	require.NoError(t, err)
	require.Len(t, ds, 5)
	for i, d := range ds {
		assert.Equal(t, fmt.Sprintf("m%d", i), d.Message.ID)
		if i > 0 {
			assert.Equal(t, ds[i-1].Seq+1, d.Seq, "one SendBatch: consecutive seqs")
		}
	}
}

func TestConfigRefused(t *testing.T) {
	q := openQueue(t)
	group := zlwatermill.GroupPerTopic("g")
	for _, tc := range []struct {
		name   string
		queue  *zeroloss.Queue
		config zlwatermill.SubscriberConfig
		field  string
	}{
		{"no queue", nil, zlwatermill.SubscriberConfig{ConsumerGroup: group}, "queue is nil"},
		{"no group", q, zlwatermill.SubscriberConfig{}, "ConsumerGroup"},
		{"topic set", q, zlwatermill.SubscriberConfig{ConsumerGroup: group, Consumer: zeroloss.ConsumerOptions{Topic: "x"}}, "Consumer.Topic"},
		{"bad option", q, zlwatermill.SubscriberConfig{ConsumerGroup: group, Consumer: zeroloss.ConsumerOptions{MaxDeliveries: -1}}, "MaxDeliveries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := zlwatermill.NewSubscriber(tc.queue, tc.config)
			require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)
			assert.Contains(t, err.Error(), tc.field)
		})
	}
	_, err := zlwatermill.NewPublisher(nil, zlwatermill.PublisherConfig{})
	require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)
}

func TestTopicRefused(t *testing.T) {
	q := openQueue(t)
	pub := newPublisher(t, q, zlwatermill.PublisherConfig{})
	sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{})
	for _, topic := range []string{"", "has space", "star*"} {
		t.Run(fmt.Sprintf("%q", topic), func(t *testing.T) {
			err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), nil))
			require.ErrorIs(t, err, zeroloss.ErrInvalidMessage)
			assert.Contains(t, err.Error(), "opic")
			_, err = sub.Subscribe(context.Background(), topic)
			require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)
			assert.Contains(t, err.Error(), "opic")
			require.ErrorIs(t, sub.SubscribeInitialize(topic), zeroloss.ErrInvalidOptions)
		})
	}
	assert.Zero(t, q.Stats().Messages, "nothing sent")
}

func TestGroupOfAnotherTopicRefused(t *testing.T) {
	q := openQueue(t)
	sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{ConsumerGroup: func(string) string { return "one" }})
	_, err := sub.Subscribe(context.Background(), "a")
	require.NoError(t, err)
	_, err = sub.Subscribe(context.Background(), "b")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Topic")
	assert.Contains(t, err.Error(), `"one"`)
}

func TestDedupByUUID(t *testing.T) {
	for _, tc := range []struct {
		dedup bool
		lag   uint64
	}{
		{dedup: false, lag: 2}, // Watermill's default: a UUID published again is a new message
		{dedup: true, lag: 1},
	} {
		t.Run(fmt.Sprintf("dedup=%v", tc.dedup), func(t *testing.T) {
			q := openQueue(t)
			sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{})
			require.NoError(t, sub.SubscribeInitialize("t"))
			pub := newPublisher(t, q, zlwatermill.PublisherConfig{DedupByUUID: tc.dedup})
			msg := message.NewMessage("same-uuid", []byte("x"))
			require.NoError(t, pub.Publish("t", msg))
			require.NoError(t, pub.Publish("t", msg))
			// Another topic is another dedup key.
			require.NoError(t, pub.Publish("u", msg))
			assert.Equal(t, tc.lag, groupStats(t, q, "service@t").Lag)
		})
	}
}

func TestNotConfirmed(t *testing.T) {
	// ReplicateSync with no follower attached: appended and durable
	// locally, ReplicaNotAvailable.
	q, err := zeroloss.Open(t.TempDir(), &zeroloss.Options{Replication: zeroloss.ReplicateSync})
	require.NoError(t, err)
	t.Cleanup(func() { _ = q.Close() })
	msg := message.NewMessage("u1", nil)

	err = newPublisher(t, q, zlwatermill.PublisherConfig{}).Publish("t", msg)
	require.ErrorIs(t, err, zlwatermill.ErrNotConfirmed)
	assert.Contains(t, err.Error(), "ReplicaNotAvailable")
	assert.Contains(t, err.Error(), "u1")

	require.NoError(t, newPublisher(t, q, zlwatermill.PublisherConfig{AcceptUnconfirmed: true}).Publish("t", msg))
}

func TestClosed(t *testing.T) {
	q := openQueue(t)
	pub := newPublisher(t, q, zlwatermill.PublisherConfig{})
	sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{})
	msgs, err := sub.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	require.NoError(t, pub.Close())
	require.NoError(t, pub.Close())
	require.ErrorIs(t, pub.Publish("t", message.NewMessage("x", nil)), zlwatermill.ErrPublisherClosed)
	require.NoError(t, sub.Close())
	require.NoError(t, sub.Close())
	select {
	case _, ok := <-msgs:
		assert.False(t, ok)
	default:
		t.Fatal("Close returned before the channel was closed")
	}
	_, err = sub.Subscribe(context.Background(), "t")
	require.ErrorIs(t, err, zlwatermill.ErrSubscriberClosed)
	require.ErrorIs(t, sub.SubscribeInitialize("t"), zlwatermill.ErrSubscriberClosed)
	// The queue is the caller's: still open.
	_, err = q.Send(context.Background(), &zeroloss.Message{Topic: "t"})
	require.NoError(t, err)
}

// TestNackRedeliversAtOnce: Watermill's Nack means "deliver it again", so it
// is NackNow, not a Nack waiting for the group's backoff (an hour here),
// and it counts a failed delivery.
func TestNackRedeliversAtOnce(t *testing.T) {
	q := openQueue(t)
	pub := newPublisher(t, q, zlwatermill.PublisherConfig{})
	sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{Consumer: zeroloss.ConsumerOptions{
		Backoff: []time.Duration{never}, AckTimeout: never, MaxDeliveries: 3,
	}})
	require.NoError(t, pub.Publish("t", message.NewMessage("poison", nil), message.NewMessage("fine", nil)))
	msgs, err := sub.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	var handled []string
	for range 4 {
		msg := next(t, msgs)
		handled = append(handled, msg.UUID)
		if msg.UUID == "poison" {
			require.True(t, msg.Nack())
		} else {
			require.True(t, msg.Ack())
		}
		done(t, msg.Context(), "message context not cancelled after Ack or Nack")
	}
	// Three deliveries of poison (MaxDeliveries), then its dead letter.
	assert.ElementsMatch(t, []string{"poison", "poison", "poison", "fine"}, handled)
	dead, err := q.DeadLetters("service@t")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, "poison", dead[0].Message.ID)
}

// TestCloseReleasesAtOnce: a message handed out and not acked when the
// subscription ends (Close, or Subscribe's context) goes back to the group
// at once, its attempt not counted, though AckTimeout is an hour.
func TestCloseReleasesAtOnce(t *testing.T) {
	for _, how := range []string{"Close", "context"} {
		t.Run(how, func(t *testing.T) {
			q := openQueue(t)
			pub := newPublisher(t, q, zlwatermill.PublisherConfig{})
			sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{Consumer: zeroloss.ConsumerOptions{AckTimeout: never}})
			require.NoError(t, pub.Publish("t", message.NewMessage("held", nil)))
			ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "value"))
			defer cancel()
			msgs, err := sub.Subscribe(ctx, "t")
			require.NoError(t, err)
			msg := next(t, msgs)
			assert.Equal(t, "value", msg.Context().Value(ctxKey{}), "message context derives from Subscribe's")
			if how == "Close" {
				require.NoError(t, sub.Close())
			} else {
				cancel()
			}
			done(t, msg.Context(), "message context not cancelled when the subscription ended")
			closed(t, msgs)
			require.NoError(t, sub.Close())
			d := receiveRaw(t, q, "service@t", "t")
			assert.Equal(t, "held", d.Message.ID)
			assert.Equal(t, 1, d.Attempt, "a release is not a failed attempt")
		})
	}
}

type ctxKey struct{}

// TestAckDurable: a message acked through Watermill is not delivered again
// after the queue is closed and opened again; with AckAsync neither, since
// Close writes the async acks.
func TestAckDurable(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("AckAsync=%v", async), func(t *testing.T) {
			dir := t.TempDir()
			q, err := zeroloss.Open(dir, nil)
			require.NoError(t, err)
			pub := newPublisher(t, q, zlwatermill.PublisherConfig{})
			sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{AckAsync: async})
			require.NoError(t, pub.Publish("t", message.NewMessage("first", nil), message.NewMessage("second", nil)))
			msgs, err := sub.Subscribe(context.Background(), "t")
			require.NoError(t, err)
			msg := next(t, msgs)
			require.Equal(t, "first", msg.UUID)
			require.True(t, msg.Ack())
			done(t, msg.Context(), "message context not cancelled after Ack")
			require.NoError(t, sub.Close())
			require.NoError(t, pub.Close())
			require.NoError(t, q.Close())

			q, err = zeroloss.Open(dir, nil)
			require.NoError(t, err)
			defer q.Close()
			sub = newSubscriber(t, q, zlwatermill.SubscriberConfig{})
			msgs, err = sub.Subscribe(context.Background(), "t")
			require.NoError(t, err)
			assert.Equal(t, "second", next(t, msgs).UUID, "the acked message came back")
			require.NoError(t, sub.Close())
		})
	}
}

// TestConcurrency: a Subscribe hands out Consumer.Concurrency messages
// before the first is acked, and no more.
func TestConcurrency(t *testing.T) {
	q := openQueue(t)
	pub := newPublisher(t, q, zlwatermill.PublisherConfig{})
	sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{Consumer: zeroloss.ConsumerOptions{Concurrency: 3}})
	for i := range 5 {
		require.NoError(t, pub.Publish("t", message.NewMessage(fmt.Sprint(i), nil)))
	}
	msgs, err := sub.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	var out []*message.Message
	for range 3 {
		out = append(out, next(t, msgs))
	}
	select {
	case msg := <-msgs:
		t.Fatalf("a 4th message (%s) handed out before an ack", msg.UUID)
	case <-time.After(200 * time.Millisecond):
	}
	assert.Equal(t, 3, groupStats(t, q, "service@t").InFlight)
	require.True(t, out[0].Ack())
	out = append(out, next(t, msgs))
	for _, msg := range out[1:] {
		require.True(t, msg.Ack())
	}
	require.True(t, next(t, msgs).Ack())
}

// captured is a watermill.LoggerAdapter keeping the errors logged.
type captured struct {
	watermill.NopLogger
	mu     sync.Mutex
	errors []error
}

func (c *captured) Error(msg string, err error, _ watermill.LogFields) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errors = append(c.errors, fmt.Errorf("%s: %w", msg, err))
}

func (c *captured) With(watermill.LogFields) watermill.LoggerAdapter { return c }

func (c *captured) logged() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errors...)
}

// TestSubscriptionEndsWithGroup: when the queue stops delivering to a
// subscription (its group deleted), its channel is closed and the reason
// logged.
func TestSubscriptionEndsWithGroup(t *testing.T) {
	q := openQueue(t)
	logger := &captured{}
	sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{Logger: logger})
	msgs, err := sub.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	require.NoError(t, q.DeleteGroup("service@t"))
	closed(t, msgs)
	errs := logger.logged()
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], zeroloss.ErrGroupDeleted)
}

// TestOrderedAcrossSubscribers: with KeyByTopic and Ordered groups, five
// subscribers of a group handing out up to 4 messages each still handle
// the topic one message at a time in publication order, and a nacked
// message comes back before any later one.
func TestOrderedAcrossSubscribers(t *testing.T) {
	q := openQueue(t)
	pub := newPublisher(t, q, zlwatermill.PublisherConfig{Key: zlwatermill.KeyByTopic})
	const count = 30
	var published []string
	for i := range count {
		published = append(published, fmt.Sprintf("m%02d", i))
		require.NoError(t, pub.Publish("t", message.NewMessage(published[i], nil)))
	}
	merged := make(chan *message.Message)
	for range 5 {
		sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{Consumer: zeroloss.ConsumerOptions{Ordered: true, Concurrency: 4}})
		msgs, err := sub.Subscribe(context.Background(), "t")
		require.NoError(t, err)
		go func() {
			for msg := range msgs {
				merged <- msg
			}
		}()
	}
	var handled, want []string
	seen := map[string]bool{}
	for range 2 * count {
		msg := next(t, merged)
		handled = append(handled, msg.UUID)
		if !seen[msg.UUID] {
			seen[msg.UUID] = true
			require.True(t, msg.Nack())
		} else {
			require.True(t, msg.Ack())
		}
	}
	for _, id := range published {
		want = append(want, id, id)
	}
	assert.Equal(t, want, handled)
}

// TestQueueClosedFirstEndsTheSubscription: when the queue closes while a
// message is handed out and neither acked nor nacked, the subscription ends
// at once (its message context too) instead of waiting for the handler.
func TestQueueClosedFirstEndsTheSubscription(t *testing.T) {
	q := openQueue(t)
	pub := newPublisher(t, q, zlwatermill.PublisherConfig{})
	sub := newSubscriber(t, q, zlwatermill.SubscriberConfig{})
	msgs, err := sub.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	require.NoError(t, pub.Publish("t", message.NewMessage("held", []byte("x"))))
	msg := next(t, msgs) // held: neither acked nor nacked
	require.NoError(t, q.Close())
	done(t, msg.Context(), "the handed-out message's context did not end with the queue")
	closed(t, msgs)
}
