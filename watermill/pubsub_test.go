package zlwatermill_test

import (
	"os"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/require"
	"github.com/zerolossmq/zeroloss"
	zlwatermill "github.com/zerolossmq/zeroloss/watermill"
)

// suiteFeatures are the features the backend has, as Watermill's universal
// suite understands them (see README.md for each).
var suiteFeatures = tests.Features{
	ConsumerGroups: true,
	// Delivery is at least once: an ack that is not durable when the
	// process dies, or that comes after AckTimeout, delivers the message
	// again. DedupByUUID covers publishing, not consumption.
	ExactlyOnceDelivery: false,
	// Through ordered consumption: every message is keyed by its topic
	// (KeyByTopic) and the groups are Ordered, so a group hands out its
	// topic's messages one at a time, across all its subscribers.
	GuaranteedOrder:                     true,
	GuaranteedOrderWithSingleSubscriber: false,
	// Every Publisher and Subscriber of the suite is built on one Queue:
	// the queue is the broker, and a new Subscriber of a group continues
	// where the group stopped.
	Persistent: true,
	// There is no broker process to restart: the queue is in the test's
	// process (TestReconnect is skipped).
	RestartServiceCommand: nil,
	// A group continues where it stopped: a new Subscriber of the same
	// group does not read what the group acked. A group per Subscriber
	// does: TestNewSubscriberReceivesOldMessages runs apart below.
	NewSubscriberReceivesOldMessages: false,
}

// suiteConsumer fits the suite: TestContinueAfterErrors nacks one message
// up to 300 times (each Nack counts a delivery), so MaxDeliveries is above
// that; Nack redelivers at once, so no backoff is waited for. Each
// Subscribe hands out up to 4 messages at once: TestPublishSubscribeInOrder
// has 10 subscribers and 16 interleaved kinds of message, so with one
// message out per subscriber it could not see a reordering; with 40 it
// fails at once if the groups are not Ordered.
var suiteConsumer = zeroloss.ConsumerOptions{MaxDeliveries: 1000, Ordered: true, Concurrency: 4}

// unorderedConsumer is suiteConsumer without order: the messages of a
// group are handed out to all its subscribers at once, as most
// applications run it.
var unorderedConsumer = zeroloss.ConsumerOptions{MaxDeliveries: 1000, Concurrency: 4}

// openQueue opens a queue in a temporary directory, closed after the test
// and its subtests.
func openQueue(t *testing.T) *zeroloss.Queue {
	t.Helper()
	q, err := zeroloss.Open(t.TempDir(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, q.Close()) })
	return q
}

// pubSubOn builds a Publisher and a Subscriber on q, reading through the
// groups that groups names; both are closed at the end of t at the latest.
// The publisher keys every message by its topic if the consumer is
// Ordered.
func pubSubOn(t *testing.T, q *zeroloss.Queue, groups zlwatermill.GroupFunc, consumer zeroloss.ConsumerOptions) (message.Publisher, message.Subscriber) {
	logger := watermill.NewStdLogger(false, false)
	var key zlwatermill.KeyFunc
	if consumer.Ordered {
		key = zlwatermill.KeyByTopic
	}
	pub, err := zlwatermill.NewPublisher(q, zlwatermill.PublisherConfig{Key: key, Logger: logger})
	require.NoError(t, err)
	sub, err := zlwatermill.NewSubscriber(q, zlwatermill.SubscriberConfig{ConsumerGroup: groups, Consumer: consumer, Logger: logger})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = pub.Close()
		_ = sub.Close()
	})
	return pub, sub
}

// constructors returns the suite's constructors over one new queue: the
// plain one reads through the group "test" of each topic, the other
// through the group it is given.
func constructors(t *testing.T, consumer zeroloss.ConsumerOptions) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	q := openQueue(t)
	plain := func(t *testing.T) (message.Publisher, message.Subscriber) {
		return pubSubOn(t, q, zlwatermill.GroupPerTopic("test"), consumer)
	}
	grouped := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		return pubSubOn(t, q, zlwatermill.GroupPerTopic(group), consumer)
	}
	return plain, grouped
}

// TestPubSub runs Watermill's universal Pub/Sub suite, with ordered
// groups.
func TestPubSub(t *testing.T) {
	plain, grouped := constructors(t, suiteConsumer)
	tests.TestPubSub(t, suiteFeatures, plain, grouped)
}

// TestPubSubUnordered runs the suite again without order (GuaranteedOrder
// false: TestPublishSubscribeInOrder and TestNoAck are skipped): each
// group's messages go out to all its subscribers at once, up to 4 each
// (200 at once in TestConcurrentSubscribe), which the ordered run, one
// message of a topic at a time, never does.
func TestPubSubUnordered(t *testing.T) {
	features := suiteFeatures
	features.GuaranteedOrder = false
	plain, grouped := constructors(t, unorderedConsumer)
	tests.TestPubSub(t, features, plain, grouped)
}

// TestPubSubStress runs the suite's stress test (the suite 10 times at
// once; STRESS_TEST_COUNT changes that) when ZEROLOSS_WATERMILL_STRESS=1.
func TestPubSubStress(t *testing.T) {
	if os.Getenv("ZEROLOSS_WATERMILL_STRESS") != "1" {
		t.Skip("set ZEROLOSS_WATERMILL_STRESS=1 to run Watermill's stress test")
	}
	plain, grouped := constructors(t, suiteConsumer)
	tests.TestPubSubStressTest(t, suiteFeatures, plain, grouped)
}

// TestNewSubscriberReceivesOldMessages runs the suite's test of that
// feature with a new group per Subscriber, starting at the oldest message:
// what a Subscriber needs to read a topic's history.
func TestNewSubscriberReceivesOldMessages(t *testing.T) {
	q := openQueue(t)
	features := suiteFeatures
	features.NewSubscriberReceivesOldMessages = true
	fresh := func(t *testing.T) (message.Publisher, message.Subscriber) {
		group := "reader-" + watermill.NewUUID()
		return pubSubOn(t, q, zlwatermill.GroupPerTopic(group), zeroloss.ConsumerOptions{Start: zeroloss.StartOldest})
	}
	tests.TestNewSubscriberReceivesOldMessages(t, tests.TestContext{TestID: tests.NewTestID(), Features: features}, fresh)
}
