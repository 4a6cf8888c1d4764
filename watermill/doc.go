// Package zlwatermill is a Watermill Pub/Sub (message.Publisher and
// message.Subscriber) over an embedded zeroloss queue.
//
// The Queue is the broker: the caller opens it (zeroloss.Open), builds
// Publishers and Subscribers on it, closes them, and closes the queue last.
// A Watermill topic is a zeroloss topic (Message.Topic, ConsumerOptions.Topic)
// of the one log: no directory per topic.
//
// Publish appends with SendBatch (one write and one fdatasync for all the
// messages of a call, in order) and returns nil only when every message was
// SendOK: durable as the queue's flush mode promises. The message's UUID is
// the zeroloss ID, its metadata the headers, its payload the body. Each send
// is NoDedup, because Watermill may publish one UUID again on purpose; with
// PublisherConfig.DedupByUUID a Publish of a UUID already sent to the topic
// within the queue's DedupWindow appends nothing.
//
// Subscribe reads the topic through a durable consumer group named by
// SubscriberConfig.ConsumerGroup: the Subscribers of one group share its
// messages, every group receives every message. A message is acked
// (Delivery.Ack, durable before the subscription hands out another in its
// place) when Watermill's Ack is called, and failed with Delivery.NackNow
// on Nack: Watermill's Nack
// means "deliver it again", so it comes back at once, ahead of newer
// messages in an ordered group, and goes to the group's dead letters after
// MaxDeliveries. Close, or the end of Subscribe's context, stops at once:
// the messages handed out and not acked are released (delivered again to
// the group, their attempt not counted) and their contexts cancelled.
//
// Delivery is at least once, never exactly once: a message whose handler
// ran but whose Ack did not become durable (a crash, a Close, an expired
// AckTimeout) is delivered again. Handlers must be idempotent.
package zlwatermill
