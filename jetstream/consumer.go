package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/zerolossmq/zeroloss"
)

// pollWait bounds one pull request, so that a Receive notices Close and its
// ctx without relying on the server.
const pollWait = 5 * time.Second

// consumer is the zeroloss.ConsumerDriver of one group's *zeroloss.Consumer:
// a durable pull consumer named after the group. Safe for concurrent use;
// the Consumers of one group, in any number of processes, share its
// messages.
type consumer struct {
	b       *Backend
	group   string
	opts    zeroloss.ConsumerOptions
	cons    natsjs.Consumer
	ackWait []time.Duration // the server's ack wait of delivery n is ackWait[min(n, len)-1]

	stopping context.Context // cancelled by Close, and with the Backend's
	stop     context.CancelFunc

	mu     sync.Mutex
	latest map[uint64]*delivery // stream seq → the last delivery of it by this consumer
}

var _ zeroloss.ConsumerDriver = (*consumer)(nil)

// Consumer returns a consumer of the group called group, creating its
// durable consumer if it does not exist (opts.Start: DeliverAll or
// DeliverNew; filtered on opts.Topic and opts.Tags, see topics.go) and
// updating its AckWait, MaxDeliver and BackOff from opts otherwise: those
// are the group's, so the last Consumer call of a group sets them for every
// process. Its topic and tags are part of the group, as on the embedded
// queue: asking an existing group for others fails with
// zeroloss.ErrInvalidOptions naming ConsumerOptions.Topic or
// ConsumerOptions.Tags. More than one tag needs nats-server 2.10 or later
// (FilterSubjects); an older server is refused with ErrUnsupported. It also
// subscribes to the group's max-deliveries advisory, which dead-letters
// messages whose last delivery timed out. It fails with zeroloss.ErrInvalidOptions for bad options or a
// group name JetStream cannot hold.
func (b *Backend) Consumer(group string, opts *zeroloss.ConsumerOptions) (*zeroloss.Consumer, error) {
	if b.closed() {
		return nil, fmt.Errorf("jetstream: consumer: %w", zeroloss.ErrClosed)
	}
	if !validName(group) {
		return nil, invalid("group", "%q is not a valid consumer name (no spaces, '.', '*', '>', '/' or '\\', at most 200 bytes)", group)
	}
	o, err := opts.WithDefaults() // the embedded queue's defaults and checks, tags sorted
	if err != nil {
		return nil, err
	}
	if o.Ordered {
		// A shared durable consumer hands a subject's messages to any
		// subscriber, redelivers a failed one after later ones, and has no
		// per-key lock: per-key order cannot be offered honestly.
		return nil, invalid("Ordered", "is not supported: JetStream has no per-key ordering for a shared durable consumer (see README.md)")
	}
	if err := checkMultiFilter(b.nc, o.Tags); err != nil {
		return nil, err
	}
	c := &consumer{b: b, group: group, opts: o, latest: map[uint64]*delivery{}}
	// JetStream's BackOff replaces AckWait: BackOff[n-1] is the ack wait of
	// delivery n, after which it is redelivered at once. AckTimeout plus
	// Backoff[n-1] therefore redelivers when the embedded queue does (the
	// deadline, then the backoff). The last entry repeats; JetStream wants
	// no more entries than MaxDeliver.
	for i := 0; i < min(len(o.Backoff), o.MaxDeliveries-1); i++ {
		c.ackWait = append(c.ackWait, o.AckTimeout+o.Backoff[i])
	}
	if len(c.ackWait) == 0 {
		c.ackWait = []time.Duration{o.AckTimeout}
	}
	cfg := natsjs.ConsumerConfig{
		Durable:       group,
		AckPolicy:     natsjs.AckExplicitPolicy,
		AckWait:       c.ackWait[0],
		MaxDeliver:    o.MaxDeliveries,
		DeliverPolicy: natsjs.DeliverAllPolicy,
	}
	setFilters(&cfg, b.filters(o.Topic, o.Tags))
	if o.MaxDeliveries > 1 {
		cfg.BackOff = c.ackWait
	}
	if o.Start == zeroloss.StartLatest {
		cfg.DeliverPolicy = natsjs.DeliverNewPolicy
	}
	ctx, cancel := b.bound(context.Background())
	defer cancel()
	if c.cons, err = b.createOrUpdate(ctx, cfg, &o); err != nil {
		return nil, err
	}
	if err := b.watchMaxDeliveries(group); err != nil {
		return nil, err
	}
	c.stopping, c.stop = context.WithCancel(b.closing)
	return zeroloss.NewDriverConsumer(group, o, c, b.logger), nil
}

// createOrUpdate creates the durable consumer, or updates an existing one
// keeping its deliver policy (where a group starts is decided once) if it
// selects the topic and tags o asks for.
func (b *Backend) createOrUpdate(ctx context.Context, cfg natsjs.ConsumerConfig, o *zeroloss.ConsumerOptions) (natsjs.Consumer, error) {
	for range 2 {
		existing, err := b.stream.Consumer(ctx, cfg.Durable)
		if err == nil {
			if err := b.checkSelection(existing.CachedInfo().Config, o); err != nil {
				return nil, err
			}
			cfg.DeliverPolicy = existing.CachedInfo().Config.DeliverPolicy
			cfg.OptStartSeq, cfg.OptStartTime = existing.CachedInfo().Config.OptStartSeq, existing.CachedInfo().Config.OptStartTime
			cons, err := b.stream.UpdateConsumer(ctx, cfg)
			if err != nil {
				return nil, fmt.Errorf("jetstream: updating the consumer %s: %w", cfg.Durable, err)
			}
			return cons, nil
		}
		if !errors.Is(err, natsjs.ErrConsumerNotFound) {
			return nil, fmt.Errorf("jetstream: consumer %s: %w", cfg.Durable, err)
		}
		cons, err := b.stream.CreateConsumer(ctx, cfg)
		if err == nil {
			return cons, nil
		}
		if errors.Is(err, natsjs.ErrConsumerMultipleFilterSubjectsNotSupported) {
			// The server created it without the filters: it would
			// deliver every topic. Remove it.
			if derr := b.stream.DeleteConsumer(ctx, cfg.Durable); derr != nil {
				err = fmt.Errorf("%w; deleting the unfiltered consumer %s it created: %w", err, cfg.Durable, derr)
			}
			return nil, fmt.Errorf("%w: ConsumerOptions.Tags with %d tags needs FilterSubjects, nats-server 2.10 or later: %w",
				ErrUnsupported, len(o.Tags), err)
		}
		if !errors.Is(err, natsjs.ErrConsumerExists) {
			return nil, fmt.Errorf("jetstream: creating the consumer %s: %w", cfg.Durable, err)
		}
		// Created meanwhile by another process: update it.
	}
	return nil, fmt.Errorf("jetstream: consumer %s: created and deleted concurrently", cfg.Durable)
}

// maxDeliveriesAdvisory is the part of the server's advisory the adapter
// reads.
type maxDeliveriesAdvisory struct {
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// watchMaxDeliveries subscribes, once per group, to the advisory the server
// publishes when a message's last allowed delivery timed out, and
// dead-letters that message. The subscription is in a queue group, so one
// process of the group handles each advisory.
func (b *Backend) watchMaxDeliveries(group string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.advisories[group] != nil {
		return nil
	}
	subject := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", b.opts.Stream, group)
	sub, err := b.nc.QueueSubscribe(subject, "zeroloss-dlq-"+group, func(msg *nats.Msg) {
		var adv maxDeliveriesAdvisory
		if err := json.Unmarshal(msg.Data, &adv); err != nil || adv.StreamSeq == 0 {
			b.logger.Error("jetstream: unreadable max-deliveries advisory", "group", group, "error", err)
			return
		}
		ctx, cancel := b.bound(b.closing)
		defer cancel()
		raw, err := b.stream.GetMsg(ctx, adv.StreamSeq)
		if err == nil {
			err = b.deadLetter(ctx, group, adv.StreamSeq, raw.Subject, raw.Header, raw.Data, int(adv.Deliveries),
				"not acked on the last allowed delivery")
		}
		if err != nil {
			b.logger.Error("jetstream: could not dead-letter a message after its last delivery; it is no longer delivered",
				"group", group, "seq", adv.StreamSeq, "error", err)
		}
	})
	if err != nil {
		return fmt.Errorf("jetstream: subscribing to the max-deliveries advisories of %s: %w", group, err)
	}
	b.advisories[group] = sub
	return nil
}

// Receive returns the next message for the group, blocking until one is
// available, ctx ends (ctx's error) or the adapter is closed
// (zeroloss.ErrClosed). Each wait is a pull request of one message, renewed
// every few seconds. The caller must Ack or Nack the delivery; otherwise it
// is delivered again after AckTimeout plus the backoff.
func (c *consumer) Receive(ctx context.Context) (*zeroloss.Delivery, error) {
	for {
		if c.b.closed() {
			return nil, fmt.Errorf("jetstream: receive: %w", zeroloss.ErrClosed)
		}
		if c.stopping.Err() != nil {
			return nil, fmt.Errorf("jetstream: receive: consumer of group %q: %w", c.group, zeroloss.ErrConsumerClosed)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		wait := pollWait
		if deadline, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(deadline))
		}
		if wait < 10*time.Millisecond { // too short for a pull request
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-c.stopping.Done():
				continue
			}
		}
		fetchCtx, cancel := context.WithTimeout(ctx, wait)
		stop := context.AfterFunc(c.stopping, cancel)
		msg, err := c.cons.Next(natsjs.FetchContext(fetchCtx))
		stop()
		cancel()
		if err == nil {
			return c.newDelivery(msg)
		}
		if c.stopping.Err() != nil || ctx.Err() != nil {
			continue // reported at the top
		}
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, natsjs.ErrNoMessages) ||
			errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			continue // the pull request expired empty
		}
		return nil, fmt.Errorf("jetstream: receive from %s: %w", c.group, err)
	}
}

// ReceiveBatch returns up to max deliveries: it waits for the first as
// Receive does, then takes what the server has at once (one pull request
// that does not wait).
func (c *consumer) ReceiveBatch(ctx context.Context, max int) ([]*zeroloss.Delivery, error) {
	first, err := c.Receive(ctx)
	if err != nil {
		return nil, err
	}
	out := []*zeroloss.Delivery{first}
	if max == 1 {
		return out, nil
	}
	batch, err := c.cons.FetchNoWait(max - 1)
	if err != nil {
		return out, nil // the first is the caller's; the rest waits for the next Receive
	}
	for msg := range batch.Messages() {
		if d, err := c.newDelivery(msg); err == nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// Close stops the consumer: its Receives return an error matching
// zeroloss.ErrConsumerClosed, now and later. The deliveries it handed out
// are not released (JetStream cannot give a message back without counting
// an attempt): their Ack, Nack and Extend still work, and those not acked
// are delivered again after their ack wait, as after a crash. Idempotent;
// returns nil.
func (c *consumer) Close() error {
	c.stop()
	return nil
}

func (c *consumer) newDelivery(msg natsjs.Msg) (*zeroloss.Delivery, error) {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Nak()
		return nil, fmt.Errorf("jetstream: receive from %s: %w", c.group, err)
	}
	now := time.Now()
	d := &delivery{
		seq:     meta.Sequence.Stream,
		attempt: int(meta.NumDelivered),
		c:       c,
		msg:     msg,
	}
	d.deadline = now.Add(c.ackWaitOf(d.attempt))
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.latest[d.seq]; old != nil {
		old.supersede()
	}
	if len(c.latest) >= 1024 { // forget deliveries long expired
		for seq, old := range c.latest {
			if now.After(old.expiry()) {
				delete(c.latest, seq)
			}
		}
	}
	c.latest[d.seq] = d
	// FirstDelivered: the message's stored time; JetStream does not record
	// when it was first delivered. Never after the first delivery, and the
	// same on every redelivery.
	return zeroloss.NewDriverDelivery(c.b.decodeStored(msg.Subject(), msg.Headers(), msg.Data()),
		d.seq, d.attempt, meta.Timestamp, d), nil
}

func (c *consumer) forget(d *delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.latest[d.seq] == d {
		delete(c.latest, d.seq)
	}
}

// ackWaitOf is how long the server waits for an ack of delivery attempt.
func (c *consumer) ackWaitOf(attempt int) time.Duration {
	return c.ackWait[min(max(attempt, 1), len(c.ackWait))-1]
}

func (c *consumer) backoff(attempt int) time.Duration {
	b := c.opts.Backoff
	return b[min(max(attempt-1, 0), len(b)-1)]
}
