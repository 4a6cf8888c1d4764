package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// StartPosition says where a new consumer group starts reading.
type StartPosition int

const (
	// StartOldest: a new group receives every retained message. The default.
	StartOldest StartPosition = iota
	// StartLatest: a new group receives only messages sent after it was
	// created.
	StartLatest
)

// DefaultBackoff is the redelivery delay after the 1st, 2nd, ... failed
// delivery (a Nack without a delay, or an ack timeout): RocketMQ's retry
// levels from 10s. The last level repeats.
var DefaultBackoff = []time.Duration{
	10 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 3 * time.Minute,
	4 * time.Minute, 5 * time.Minute, 6 * time.Minute, 7 * time.Minute, 8 * time.Minute,
	9 * time.Minute, 10 * time.Minute, 20 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour,
}

// ConsumerOptions configure a Consumer. The zero value, like nil, means every
// default.
type ConsumerOptions struct {
	// AckTimeout is how long a delivery may stay unacknowledged before it is
	// delivered again (after its backoff). Default 30s.
	AckTimeout time.Duration
	// MaxDeliveries is how many times a message is delivered before it goes
	// to the group's dead letters. Default 16.
	MaxDeliveries int
	// Backoff is the redelivery delay after each failed delivery; the last
	// entry repeats. Default DefaultBackoff.
	Backoff []time.Duration
	// Concurrency is how many handlers Consume runs at once. Default 1.
	Concurrency int
	// Start says where a group that does not exist yet starts. Default
	// StartOldest.
	Start StartPosition
}

func (o *ConsumerOptions) withDefaults() (ConsumerOptions, error) {
	var out ConsumerOptions
	if o != nil {
		out = *o
	}
	switch {
	case out.AckTimeout < 0:
		return out, invalid("AckTimeout", "is negative (%v)", out.AckTimeout)
	case out.MaxDeliveries < 0:
		return out, invalid("MaxDeliveries", "is negative (%d)", out.MaxDeliveries)
	case out.Concurrency < 0:
		return out, invalid("Concurrency", "is negative (%d)", out.Concurrency)
	case out.Start != StartOldest && out.Start != StartLatest:
		return out, invalid("Start", "is %d, want StartOldest or StartLatest", int(out.Start))
	}
	for i, b := range out.Backoff {
		if b < 0 {
			return out, invalid("Backoff", "[%d] is negative (%v)", i, b)
		}
	}
	if out.AckTimeout == 0 {
		out.AckTimeout = 30 * time.Second
	}
	if out.MaxDeliveries == 0 {
		out.MaxDeliveries = 16
	}
	if len(out.Backoff) == 0 {
		out.Backoff = DefaultBackoff
	}
	if out.Concurrency == 0 {
		out.Concurrency = 1
	}
	return out, nil
}

// Consumer receives the messages of one consumer group. Every group receives
// every message; the Consumers of one group, in any number of goroutines,
// share its messages, and a message is never held by two of them at once
// while its ack deadline is live. A Consumer is safe for concurrent use.
//
// Ordering: first deliveries follow the log's order; redeliveries, and
// messages with a DeliverAt in the future, come later, out of order.
type Consumer struct {
	q    *Queue
	g    *group
	opts ConsumerOptions
}

// Consumer returns a consumer of the group called name, creating the group
// (durably, as the queue's flush mode promises) if it does not exist. It
// returns ErrInvalidOptions naming the field for bad options.
func (q *Queue) Consumer(name string, opts *ConsumerOptions) (*Consumer, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if name == "" || len(name) > 255 {
		return nil, fmt.Errorf("zeroloss: %w: group name must be 1 to 255 bytes, got %d", ErrInvalidOptions, len(name))
	}
	g, err := q.groupNamed(context.Background(), name, o.Start)
	if err != nil {
		return nil, err
	}
	return &Consumer{q: q, g: g, opts: o}, nil
}

// Group returns the consumer's group name.
func (c *Consumer) Group() string { return c.g.name }

// Receive returns the next message for the group, blocking until one is
// available (durable, as the queue's flush mode promises, and due), ctx ends
// (ctx's error) or the queue is closed (ErrClosed). The caller must Ack the
// delivery after handling it, or Nack it; otherwise it is delivered again
// after AckTimeout.
func (c *Consumer) Receive(ctx context.Context) (*Delivery, error) {
	g := c.g
	for {
		select {
		case <-c.q.done:
			return nil, fmt.Errorf("zeroloss: receive: %w", ErrClosed)
		default:
		}
		// Take the channel before looking at the log, so a commit that lands
		// after the look wakes us.
		committed := c.q.committedChanged()
		g.mu.Lock()
		now := c.q.opts.now()
		d, dying, wake, err := c.next(now)
		changed := g.changed
		g.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if d != nil {
			return d, nil
		}
		if len(dying) > 0 {
			// The queue's bookkeeping, not this caller's: a short Receive
			// deadline must not cut it (FlushTimeout bounds it).
			if err := c.deadLetter(context.WithoutCancel(ctx), dying, "ack timeout on the last allowed delivery"); err != nil {
				return nil, err
			}
			continue
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if !wake.IsZero() {
			timer = time.NewTimer(wake.Sub(now))
			fire = timer.C
		}
		select {
		case <-changed:
		case <-committed:
		case <-fire:
		case <-c.q.done:
			err = fmt.Errorf("zeroloss: receive: %w", ErrClosed)
		case <-ctx.Done():
			err = ctx.Err()
		}
		if timer != nil {
			timer.Stop()
		}
		if err != nil {
			return nil, err
		}
	}
}

// next finds what to deliver now (the caller holds g.mu): a message due
// again, else the next message of the main stream. Otherwise it returns the
// messages to dead-letter, or when to look again (zero: when something
// changes).
func (c *Consumer) next(now time.Time) (d *Delivery, dying []*unacked, wake time.Time, err error) {
	g := c.g
	var best *unacked
	earliest := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	for _, u := range g.pending {
		// A clock jump backwards must not hold a message longer than the
		// timeout or delay that was asked for: clamp.
		if u.out && u.deadline.Sub(now) > u.timeout {
			u.deadline = now.Add(u.timeout)
		}
		if !u.out && u.due.Sub(now) > u.wait {
			u.due = now.Add(u.wait)
		}
		switch {
		case u.dying:
		case u.out && now.Before(u.deadline):
			earliest(u.deadline)
		default:
			if u.out { // its ack deadline passed: a failed delivery
				u.out = false
				u.wait = c.backoff(u.attempt)
				u.due = now.Add(u.wait)
				g.notify()
			}
			if u.attempt >= c.opts.MaxDeliveries {
				u.dying = true
				dying = append(dying, u)
				continue
			}
			if now.Before(u.due) {
				earliest(u.due)
			} else if best == nil || u.due.Before(best.due) || (u.due.Equal(best.due) && u.seq < best.seq) {
				best = u
			}
		}
	}
	if len(dying) > 0 {
		return nil, dying, wake, nil
	}
	if best != nil {
		return c.deliver(best, now), nil, wake, nil
	}
	for {
		u, err := g.readNext(now)
		if err != nil || u == nil {
			return nil, nil, wake, err
		}
		if u.msg.DeliverAt.After(now) {
			// Delayed delivery: it waits in pending, and the main stream
			// goes on past it.
			u.due, u.wait = u.msg.DeliverAt, u.msg.DeliverAt.Sub(now)
			earliest(u.due)
			continue
		}
		return c.deliver(u, now), nil, wake, nil
	}
}

// readNext reads the next main-stream message at or after the cursor that
// is durable, and adds it to pending (the caller holds g.mu).
func (g *group) readNext(now time.Time) (*unacked, error) {
	if g.reader == nil {
		g.reader = g.q.log.NewReader(g.cursor)
	}
	for {
		rec, err := g.reader.Next()
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("zeroloss: group %q reading the log: %w", g.name, err)
		}
		if rec.Seq < g.cursor || rec.Type != record.TypeMessage || rec.Stream != 0 {
			continue
		}
		m, err := record.DecodeMessage(rec.Payload)
		if err != nil {
			return nil, fmt.Errorf("zeroloss: message at seq %d: %w", rec.Seq, err)
		}
		g.cursor = rec.Seq + 1
		u := &unacked{seq: rec.Seq, msg: fromRecord(m), first: now}
		g.pending[rec.Seq] = u
		return u, nil
	}
}

// deliver hands u to a consumer (the caller holds g.mu).
func (c *Consumer) deliver(u *unacked, now time.Time) *Delivery {
	u.attempt++
	u.out = true
	u.deadline = now.Add(c.opts.AckTimeout)
	u.timeout = c.opts.AckTimeout
	u.token++
	if u.attempt > 1 {
		c.g.attempts[u.seq] = uint64(u.attempt)
	}
	return &Delivery{Message: u.msg, Seq: u.seq, Attempt: u.attempt, FirstDelivered: u.first, c: c, token: u.token}
}

func (c *Consumer) backoff(attempt int) time.Duration {
	b := c.opts.Backoff
	return b[min(max(attempt-1, 0), len(b)-1)]
}

// ReceiveBatch returns up to max deliveries: it blocks for the first as
// Receive does, then takes whatever else is available at once.
func (c *Consumer) ReceiveBatch(ctx context.Context, max int) ([]*Delivery, error) {
	if max < 1 {
		return nil, fmt.Errorf("zeroloss: ReceiveBatch max %d: %w", max, ErrInvalidOptions)
	}
	d, err := c.Receive(ctx)
	if err != nil {
		return nil, err
	}
	out := []*Delivery{d}
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(out) < max {
		d, dying, _, err := c.next(c.q.opts.now())
		if err != nil || d == nil {
			for _, u := range dying { // leave them to the next Receive
				u.dying = false
			}
			break
		}
		out = append(out, d)
	}
	return out, nil
}

// Consume receives messages and calls handler for each, with up to
// Concurrency handlers at once, until ctx ends or the queue closes. A message
// is acked only after its handler returns nil; an error or a panic (recovered
// and logged) means a failed delivery, redelivered after its backoff. When ctx
// ends, Consume stops taking messages, waits for the running handlers (their
// context is not cancelled with it) and returns ctx's error.
func (c *Consumer) Consume(ctx context.Context, handler func(context.Context, *Delivery) error) error {
	hctx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	failed := make(chan error, 1)
	for i := 0; i < c.opts.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
				if err := c.handle(hctx, handler, d); err != nil {
					c.q.logger.Warn("zeroloss: handler failed; the message will be delivered again",
						"group", c.g.name, "seq", d.Seq, "attempt", d.Attempt, "error", err)
					if err := d.Nack(0); err != nil && !errors.Is(err, ErrDeliveryExpired) {
						c.q.logger.Error("zeroloss: nack failed", "group", c.g.name, "seq", d.Seq, "error", err)
					}
				} else if err := d.Ack(); err != nil {
					c.q.logger.Error("zeroloss: ack failed; the message will be delivered again",
						"group", c.g.name, "seq", d.Seq, "error", err)
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-failed:
		return err
	default:
		return ctx.Err()
	}
}

func (c *Consumer) handle(ctx context.Context, handler func(context.Context, *Delivery) error, d *Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return handler(ctx, d)
}
