package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/zerolossmq/zeroloss"
)

// pollWait bounds one pull request, so that a Receive notices Close and its
// ctx without relying on the server.
const pollWait = 5 * time.Second

// Consumer receives the messages of one consumer group: a durable pull
// consumer named after the group. Safe for concurrent use; the Consumers of
// one group, in any number of processes, share its messages.
type Consumer struct {
	b       *Backend
	group   string
	opts    zeroloss.ConsumerOptions
	cons    natsjs.Consumer
	ackWait []time.Duration // the server's ack wait of delivery n is ackWait[min(n, len)-1]

	mu     sync.Mutex
	latest map[uint64]*Delivery // stream seq → the last delivery of it by this Consumer
}

var _ zeroloss.Subscription = (*Consumer)(nil)

// Subscribe returns a consumer of the group called group (see Consumer).
func (b *Backend) Subscribe(group string, opts *zeroloss.ConsumerOptions) (zeroloss.Subscription, error) {
	c, err := b.Consumer(group, opts)
	if err != nil {
		return nil, err // not a typed nil
	}
	return c, nil
}

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
func (b *Backend) Consumer(group string, opts *zeroloss.ConsumerOptions) (*Consumer, error) {
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
	c := &Consumer{b: b, group: group, opts: o, latest: map[uint64]*Delivery{}}
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
	return c, nil
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

// Group returns the consumer's group name.
func (c *Consumer) Group() string { return c.group }

// Receive returns the next message for the group, blocking until one is
// available, ctx ends (ctx's error) or the adapter is closed
// (zeroloss.ErrClosed). Each wait is a pull request of one message, renewed
// every few seconds. The caller must Ack or Nack the delivery; otherwise it
// is delivered again after AckTimeout plus the backoff.
func (c *Consumer) Receive(ctx context.Context) (*Delivery, error) {
	for {
		if c.b.closed() {
			return nil, fmt.Errorf("jetstream: receive: %w", zeroloss.ErrClosed)
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
			case <-c.b.closing.Done():
				continue
			}
		}
		fetchCtx, cancel := context.WithTimeout(ctx, wait)
		stop := context.AfterFunc(c.b.closing, cancel)
		msg, err := c.cons.Next(natsjs.FetchContext(fetchCtx))
		stop()
		cancel()
		if err == nil {
			return c.newDelivery(msg)
		}
		if c.b.closed() || ctx.Err() != nil {
			continue // reported at the top
		}
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, natsjs.ErrNoMessages) ||
			errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			continue // the pull request expired empty
		}
		return nil, fmt.Errorf("jetstream: receive from %s: %w", c.group, err)
	}
}

func (c *Consumer) newDelivery(msg natsjs.Msg) (*Delivery, error) {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Nak()
		return nil, fmt.Errorf("jetstream: receive from %s: %w", c.group, err)
	}
	now := time.Now()
	d := &Delivery{
		Message:        c.b.decodeStored(msg.Subject(), msg.Headers(), msg.Data()),
		Seq:            meta.Sequence.Stream,
		Attempt:        int(meta.NumDelivered),
		FirstDelivered: meta.Timestamp,
		c:              c,
		msg:            msg,
	}
	d.deadline = now.Add(c.ackWaitOf(d.Attempt))
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.latest[d.Seq]; old != nil {
		old.supersede()
	}
	if len(c.latest) >= 1024 { // forget deliveries long expired
		for seq, old := range c.latest {
			if now.After(old.expiry()) {
				delete(c.latest, seq)
			}
		}
	}
	c.latest[d.Seq] = d
	return d, nil
}

func (c *Consumer) forget(d *Delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.latest[d.Seq] == d {
		delete(c.latest, d.Seq)
	}
}

// ackWaitOf is how long the server waits for an ack of delivery attempt.
func (c *Consumer) ackWaitOf(attempt int) time.Duration {
	return c.ackWait[min(max(attempt, 1), len(c.ackWait))-1]
}

func (c *Consumer) backoff(attempt int) time.Duration {
	b := c.opts.Backoff
	return b[min(max(attempt-1, 0), len(b)-1)]
}

// Next is Receive returning the zeroloss.Received interface.
func (c *Consumer) Next(ctx context.Context) (zeroloss.Received, error) {
	d, err := c.Receive(ctx)
	if err != nil {
		return nil, err // not a typed nil
	}
	return d, nil
}

// Consume receives messages and calls handler for each, with up to
// Concurrency handlers at once, until ctx ends or the adapter closes, as the
// embedded queue's Consumer.Consume does: a message is acked only after its
// handler returns nil; an error or a panic (recovered and logged) is a Nack
// (redelivered after the backoff, dead-lettered on the last allowed
// delivery). When ctx ends Consume stops taking messages, waits for the
// running handlers (their context is not cancelled with it) and returns
// ctx's error.
func (c *Consumer) Consume(ctx context.Context, handler func(context.Context, *Delivery) error) error {
	hctx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	failed := make(chan error, 1)
	for range c.opts.Concurrency {
		wg.Go(func() {
			for {
				d, err := c.Receive(ctx)
				if err != nil {
					if ctx.Err() == nil {
						select {
						case failed <- err:
						default:
						}
					}
					return
				}
				if err := handle(hctx, handler, d); err != nil {
					c.b.logger.Warn("jetstream: handler failed; the message will be delivered again",
						"group", c.group, "seq", d.Seq, "attempt", d.Attempt, "error", err)
					if err := d.Nack(0); err != nil && !errors.Is(err, zeroloss.ErrDeliveryExpired) {
						c.b.logger.Error("jetstream: nack failed", "group", c.group, "seq", d.Seq, "error", err)
					}
				} else if err := d.Ack(); err != nil {
					c.b.logger.Error("jetstream: ack failed; the message will be delivered again",
						"group", c.group, "seq", d.Seq, "error", err)
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-failed:
		return err
	default:
		return ctx.Err()
	}
}

func handle(ctx context.Context, handler func(context.Context, *Delivery) error, d *Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return handler(ctx, d)
}

// Handle is Consume with a handler that takes the zeroloss.Received
// interface; h is given the *Delivery.
func (c *Consumer) Handle(ctx context.Context, h zeroloss.Handler) error {
	return c.Consume(ctx, func(ctx context.Context, d *Delivery) error { return h(ctx, d) })
}
