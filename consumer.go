package zeroloss

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"slices"
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

// MinAckTimeout is the shortest AckTimeout, and the shortest Extend,
// accepted. An Ack waits for an fdatasync (milliseconds, tens of them on a
// loaded disk); an ack deadline shorter than a few of those delivers messages
// again while their handlers still run and ack, so one message runs in many
// handlers at once. A shorter value is almost always a unit mistake.
const MinAckTimeout = 100 * time.Millisecond

// ConsumerOptions configure a Consumer. The zero value, like nil, means every
// default.
type ConsumerOptions struct {
	// AckTimeout is how long a delivery may stay unacknowledged before it is
	// delivered again (after its backoff). Default 30s; at least
	// MinAckTimeout.
	AckTimeout time.Duration
	// MaxDeliveries is how many times a message is delivered before it goes
	// to the group's dead letters. Default 16.
	MaxDeliveries int
	// Backoff is the redelivery delay after each failed delivery; the last
	// entry repeats. Default DefaultBackoff.
	Backoff []time.Duration
	// Concurrency is how many handlers Consume runs at once. Default 1.
	Concurrency int
	// Ordered hands out the messages of the group that share a non-empty
	// Message.Key one at a time, in seq order: the next message of a key is
	// not delivered until the previous one is acked, or dead-lettered after
	// MaxDeliveries (logged; the key then moves on). A failed delivery is
	// retried after its backoff ahead of the key's later messages, and
	// holds back only its own key: other keys are handled in parallel, up
	// to Concurrency per Consume and by any number of Consumers of the
	// group. Messages with an empty Key are not ordered. A message with a
	// future DeliverAt holds back its key's later messages until it is
	// delivered and acked (order is by seq; DeliverAt only delays). A
	// re-driven dead letter (Queue.RedriveDeadLetters) rejoins its key
	// right behind the key's current head, ahead of its later messages.
	// The order holds across restarts and crashes: a message delivered and
	// not acked is delivered again before any later message of its key.
	// Keys with nothing owed take no memory; at most 4096 messages read
	// past wait in memory behind keys that are held back, and once that
	// many wait the group reads no further (other keys then wait too)
	// until one of those keys moves on.
	//
	// Ordered is not stored with the group: it changes the order in which
	// the group hands out what it owes, never what it owes, so it may
	// change across restarts. Within one process, every Consumer of a group
	// must agree with the first (ErrInvalidOptions naming Ordered).
	Ordered bool
	// Start says where a group that does not exist yet starts. Default
	// StartOldest.
	Start StartPosition
	// Topic is the topic the group reads ("", the default, is the default
	// topic: every message sent without a Topic). Names: 1 to
	// MaxTopicLength bytes of ASCII letters, digits and . _ - : /.
	Topic string
	// Tags, if not empty, limits the group to the messages of its topic
	// whose Message.Tag is listed (at most MaxGroupTags, each a name as
	// for Topic; order and repeats do not matter). Empty: every message of
	// the topic, with or without a tag.
	//
	// For retention a tag-filtered group reads its topic: a topic whose
	// only groups filter by tag does not keep the other tags' messages
	// for a group declared later (a topic with no group at all does).
	//
	// Topic and Tags are part of the group's durable declaration: a
	// Consumer of an existing group must ask for the same ones (an error
	// naming the field otherwise). To change them, DeleteGroup and declare
	// the group anew.
	Tags []string
}

// WithDefaults returns a copy of o (nil: the zero value) with every zero
// field set to its default, or an error matching ErrInvalidOptions naming
// the first invalid field. Consumer applies it; another Backend applies it to
// get the same defaults and checks.
func (o *ConsumerOptions) WithDefaults() (ConsumerOptions, error) {
	var out ConsumerOptions
	if o != nil {
		out = *o
	}
	switch {
	case out.AckTimeout < 0:
		return out, invalid("AckTimeout", "is negative (%v)", out.AckTimeout)
	case out.AckTimeout > 0 && out.AckTimeout < MinAckTimeout:
		return out, invalid("AckTimeout", "is %v, below MinAckTimeout %v", out.AckTimeout, MinAckTimeout)
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
	sel, err := newSelection(out.Topic, out.Tags)
	if err != nil {
		return out, fmt.Errorf("zeroloss: %w", err)
	}
	out.Tags = sel.tags
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
// every message of its topic (and tags); the Consumers of one group, in any number of goroutines,
// share its messages, and a message is never held by two of them at once
// while its ack deadline is live. A Consumer is safe for concurrent use.
//
// Ordering: first deliveries follow the log's order; redeliveries, and
// messages with a DeliverAt in the future, come later, out of order, unless
// the group is Ordered (ConsumerOptions.Ordered): then the messages of one
// key are handled one at a time, in seq order.
//
// The Consumers of another Backend are the same type, run by its driver
// (NewDriverConsumer); that backend documents what differs, and what it
// cannot do fails with ErrUnsupported.
type Consumer struct {
	q    *Queue
	g    *group
	opts ConsumerOptions

	// Set instead of q and g on another backend's Consumer (NewDriverConsumer).
	drv    ConsumerDriver
	group  string
	logger *slog.Logger

	done chan struct{} // closed by Close: its Receives return
	// Guarded by g.mu:
	closed bool                // Close ran: nothing more is delivered through it
	held   map[*unacked]uint64 // its deliveries by token, for Close to release; some stale (sweepHeld)
	sweep  int                 // len(held) at which deliver sweeps stale entries out
}

// Consumer returns a consumer of the group called name, creating the group
// (durably, as the queue's flush mode promises) if it does not exist. It
// returns ErrInvalidOptions naming the field for bad options.
func (q *Queue) Consumer(name string, opts *ConsumerOptions) (*Consumer, error) {
	o, err := opts.WithDefaults()
	if err != nil {
		return nil, err
	}
	if name == "" || len(name) > 255 {
		return nil, fmt.Errorf("zeroloss: %w: group name must be 1 to 255 bytes, got %d", ErrInvalidOptions, len(name))
	}
	g, err := q.groupNamed(context.Background(), name, selection{topic: o.Topic, tags: o.Tags}, o.Start)
	if err != nil {
		return nil, err
	}
	if err := g.setOrdered(o.Ordered); err != nil {
		return nil, err
	}
	return &Consumer{q: q, g: g, opts: o, done: make(chan struct{}), held: map[*unacked]uint64{}, sweep: minSweep}, nil
}

// minSweep is the fewest held entries at which deliver sweeps stale ones.
const minSweep = 64

// Close stops the consumer, not the group nor the queue: its Receives
// (and ReceiveBatch, Consume) return an error matching ErrConsumerClosed,
// now and later, and every delivery it handed out that is not acked is
// released at once (see Delivery.Release: due again for the group's other
// consumers, its attempt not counted as a failed one). A delivery whose Ack
// or Nack is being written is left to it (if that Ack fails, the message is
// released then). An Ack of a released delivery still counts unless the
// message was delivered again meanwhile (ErrDeliveryExpired then, as after
// an ack deadline). To let running Consume handlers finish and ack first,
// cancel Consume's context and wait for it to return before Close. Close is
// idempotent and returns nil.
func (c *Consumer) Close() error {
	if c.drv != nil {
		return c.drv.Close()
	}
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.done)
	now := c.q.opts.now()
	released := false
	for u, token := range c.held {
		if u.token == token && u.out && !u.busy && g.pending[u.pos] == u {
			g.giveBack(u, now)
			released = true
		}
	}
	clear(c.held)
	if released {
		g.notify()
	}
	return nil
}

// sweepHeld drops the entries of held that are no longer deliveries this
// consumer holds (acked, nacked, expired, delivered again), once held has
// doubled since the last sweep (the caller holds g.mu).
func (c *Consumer) sweepHeld() {
	if len(c.held) < c.sweep {
		return
	}
	for u, token := range c.held {
		if u.token != token || !u.out || c.g.pending[u.pos] != u {
			delete(c.held, u)
		}
	}
	c.sweep = max(minSweep, 2*len(c.held))
}

// Group returns the consumer's group name.
func (c *Consumer) Group() string {
	if c.drv != nil {
		return c.group
	}
	return c.g.name
}

// Receive returns the next message for the group, blocking until one is
// available (durable, as the queue's flush mode promises, and due), ctx ends
// (ctx's error), the queue is closed (ErrClosed) or the consumer is
// (ErrConsumerClosed). The caller must Ack the
// delivery after handling it, or Nack it; otherwise it is delivered again
// after AckTimeout. Once the group is deleted (Queue.DeleteGroup) it returns
// ErrGroupDeleted.
func (c *Consumer) Receive(ctx context.Context) (*Delivery, error) {
	if c.drv != nil {
		return c.receiveDriver(ctx)
	}
	g := c.g
	for {
		select {
		case <-c.q.done:
			return nil, fmt.Errorf("zeroloss: receive: %w", ErrClosed)
		case <-c.done:
			return nil, c.closedError()
		default:
		}
		// Take the channel before looking at the log, so a commit that lands
		// after the look wakes us.
		committed := c.q.committedChanged()
		if c.q.opts.beforeGroupLock != nil {
			c.q.opts.beforeGroupLock()
		}
		g.mu.Lock()
		if g.deleted.Load() {
			g.mu.Unlock()
			return nil, fmt.Errorf("zeroloss: receive: group %q: %w", g.name, ErrGroupDeleted)
		}
		now := c.q.opts.now()
		d, moves, wake, err := c.next(now)
		changed := g.changed
		g.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if d != nil {
			return d, nil
		}
		if len(moves) > 0 {
			// The queue's bookkeeping, not this caller's: a short Receive
			// deadline must not cut it (FlushTimeout bounds it).
			if err := c.moveAll(context.WithoutCancel(ctx), moves); err != nil {
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
		case <-c.done:
			err = c.closedError()
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
// messages that must first move to the retry stream or the dead letters
// (marked busy; the caller writes their records with moveAll), or when to
// look again (zero: when something changes).
func (c *Consumer) next(now time.Time) (d *Delivery, moves []move, wake time.Time, err error) {
	g := c.g
	if g.closed {
		// Close has closed the group's reader; a Receive that passed its
		// own closed check before Close began must not open another.
		return nil, nil, wake, fmt.Errorf("zeroloss: receive: %w", ErrClosed)
	}
	if c.closed {
		// Consumer.Close has released what it held: nothing more goes
		// out through it (a Receive past its check, a ReceiveBatch).
		return nil, nil, wake, c.closedError()
	}
	if g.deleted.Load() {
		// DeleteGroup has closed the reader and dropped pending; a
		// ReceiveBatch past Receive's deleted check must not open another
		// reader (nothing would close it) nor deliver the group's messages.
		return nil, nil, wake, fmt.Errorf("zeroloss: receive: group %q: %w", g.name, ErrGroupDeleted)
	}
	if g.quiet && !now.Before(g.scanned) && (g.quietUntil.IsZero() || now.Before(g.quietUntil)) {
		// Nothing in pending needs a look yet: straight to the main
		// stream, without going through every message in flight.
		return c.nextNew(now, g.quietUntil)
	}
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
		case u.busy:
		case u.out && now.Before(u.deadline):
			earliest(u.deadline)
		default:
			if u.out { // its ack deadline passed: a failed delivery
				u.out = false
				if m, ok := c.failed(u, 0, now, "ack timeout on the last allowed delivery"); ok {
					moves = append(moves, m)
					continue
				}
				g.notify()
			}
			if u.attempt >= c.opts.MaxDeliveries {
				// Delivered as often as allowed before a restart.
				u.busy = true
				moves = append(moves, move{u: u, dead: true, reason: "delivered MaxDeliveries times"})
				continue
			}
			if now.Before(u.due) {
				earliest(u.due)
			} else if best == nil || u.due.Before(best.due) || (u.due.Equal(best.due) && u.pos < best.pos) {
				best = u
			}
		}
	}
	if len(moves) > 0 {
		// In position order, not pending's: the records land in the same
		// order on every run of the same calls.
		slices.SortFunc(moves, func(a, b move) int { return cmp.Compare(a.u.pos, b.u.pos) })
		return nil, moves, wake, nil
	}
	if best != nil {
		// Others may be due now too: look again next time.
		return c.deliver(best, now), nil, wake, nil
	}
	g.quiet, g.quietUntil, g.scanned = true, wake, now
	return c.nextNew(now, wake)
}

// nextNew is next once nothing in pending is due: the next message of the
// main stream, if one is durable (the caller holds g.mu).
func (c *Consumer) nextNew(now, wake time.Time) (d *Delivery, moves []move, _ time.Time, err error) {
	g := c.g
	var u *unacked
	for u == nil {
		if len(g.blocked) >= maxBlocked {
			// Ordered: enough messages wait behind slow keys; read on
			// once a key moves on (drop notifies).
			return nil, nil, wake, nil
		}
		read, err := g.readNext(now)
		if err != nil || read == nil {
			return nil, nil, wake, err
		}
		if g.pending[read.pos] == read {
			u = read
		} else {
			g.blockedBehind(read, now) // its key's head is owed: read on for other keys
		}
	}
	if u.msg.DeliverAt.After(now) {
		// Delayed delivery: the message moves to the retry stream, due
		// at DeliverAt, so that it does not hold the group's floor back.
		// The cursor has passed it: until the move is written, the
		// group's ack records carry an attempt count of 0 for it, so
		// that a restart does not count it delivered.
		u.busy, u.delayed = true, true
		g.attempts[u.pos] = 0
		wait := u.msg.DeliverAt.Sub(now)
		return nil, []move{{u: u, due: u.msg.DeliverAt, wait: wait}}, wake, nil
	}
	return c.deliver(u, now), nil, wake, nil
}

// failed handles a failed delivery of u (the caller holds g.mu and has
// cleared u.out): after its last allowed delivery u goes to the dead
// letters, after a failed redelivery to the retry stream (returned as a
// move, u marked busy); after a failed first delivery it waits in memory,
// at its position. delay 0 means the backoff for the attempt,
// redeliverNow no delay at all.
func (c *Consumer) failed(u *unacked, delay time.Duration, now time.Time, reason string) (move, bool) {
	switch {
	case delay == redeliverNow:
		delay = 0
	case delay <= 0:
		delay = c.backoff(u.attempt)
	}
	if u.attempt >= c.opts.MaxDeliveries {
		u.busy = true
		return move{u: u, dead: true, reason: reason}, true
	}
	if u.attempt >= 2 {
		u.busy = true
		return move{u: u, due: now.Add(delay), wait: delay}, true
	}
	c.g.dueAgain(u, now.Add(delay), delay)
	return move{}, false
}

// readNext reads the next message of the group's topic (and tags) at or
// after the cursor that is durable, and adds it to pending (the caller holds
// g.mu). The topic index says where the group's messages are: the reader
// seeks to the next one, and the cursor passes the positions in between
// (other topics' messages, consumer records) without reading them.
func (g *group) readNext(now time.Time) (*unacked, error) {
	for {
		h, found := g.passOthers()
		if !found || h.seq > g.cursor {
			return nil, nil
		}
		if g.reader == nil {
			g.reader = g.q.log.NewReader(h.seq)
			g.readerAt = 0
		}
		if g.readerAt != h.seq {
			g.reader.Seek(h.seq, h.at, h.off)
			g.readerAt = h.seq
		}
		rec, err := g.reader.Next()
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("zeroloss: group %q reading the log: %w", g.name, err)
		}
		g.readerAt = rec.Seq + 1
		if rec.Seq < g.cursor {
			continue
		}
		g.cursor = rec.Seq + 1
		if rec.Type != record.TypeMessage || rec.Stream != 0 {
			continue // (the index never names one: Seek checks the frame)
		}
		topic, tag, err := record.MessageRoute(rec.Payload)
		if err != nil {
			return nil, fmt.Errorf("zeroloss: message at seq %d: %w", rec.Seq, err)
		}
		if !g.sel.matches(topic, tag) {
			continue
		}
		if g.skip[rec.Seq] {
			delete(g.skip, rec.Seq)
			continue
		}
		m, err := record.DecodeMessage(rec.Payload)
		if err != nil {
			return nil, fmt.Errorf("zeroloss: message at seq %d: %w", rec.Seq, err)
		}
		u := &unacked{pos: rec.Seq, seq: rec.Seq, msg: fromRecord(m), first: now}
		g.owe(u)
		g.unmarked, g.lastOwn = true, rec.Seq+1
		return u, nil
	}
}

// closedError is what a closed consumer's Receive returns.
func (c *Consumer) closedError() error {
	return fmt.Errorf("zeroloss: receive: consumer of group %q: %w", c.g.name, ErrConsumerClosed)
}

// passOthers moves the cursor over the positions before the group's next
// message that the topic index says hold nothing of the group's (other
// topics' messages, consumer records), up to what is committed, without
// reading them (the caller holds g.mu). It returns where that next message
// is, if the index holds one.
func (g *group) passOthers() (h hit, found bool) {
	h, found, indexed := g.q.topics.next(&g.sel, g.cursor)
	to := min(indexed, g.q.committedSeq()) + 1
	if found {
		to = min(h.seq, to)
	}
	g.cursor = max(g.cursor, to)
	return h, found
}

// deliver hands u to a consumer (the caller holds g.mu).
func (c *Consumer) deliver(u *unacked, now time.Time) *Delivery {
	u.attempt++
	u.out = true
	u.deadline = now.Add(c.opts.AckTimeout)
	u.timeout = c.opts.AckTimeout
	c.g.expect(u.deadline)
	u.token++
	c.sweepHeld()
	c.held[u] = u.token
	if u.attempt > 1 || u.pos != u.seq || u.delayed || !u.msg.DeliverAt.IsZero() {
		// Counted lazily in the next ack record (a delivery from the
		// retry stream always, so that recovery knows it was delivered;
		// a delayed message never moved too, over its count of 0; and any
		// message with a DeliverAt, so that recovery never has to judge by
		// a clock that may have gone back).
		c.g.attempts[u.pos] = uint64(u.attempt)
	}
	return &Delivery{Message: u.msg, Seq: u.seq, Attempt: u.attempt, FirstDelivered: u.first, c: c, u: u, token: u.token, pos: u.pos}
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
	if c.drv != nil {
		return c.receiveBatchDriver(ctx, max)
	}
	d, err := c.Receive(ctx)
	if err != nil {
		return nil, err
	}
	out := []*Delivery{d}
	g := c.g
	var moves []move
	g.mu.Lock()
	for len(out) < max {
		d, ms, _, err := c.next(c.q.opts.now())
		moves = append(moves, ms...)
		if err != nil || (d == nil && len(ms) == 0) {
			break
		}
		if d != nil {
			out = append(out, d)
		}
	}
	g.mu.Unlock()
	if err := c.moveAll(context.WithoutCancel(ctx), moves); err != nil {
		// The deliveries taken are the caller's; the moves are retried by
		// the next Receive.
		c.q.logger.Warn("zeroloss: could not move messages to the retry stream or dead letters", "group", g.name, "error", err)
	}
	return out, nil
}

// Consume receives messages and calls handler for each, with up to
// Concurrency handlers at once, until ctx ends or the queue closes. A message
// is acked only after its handler returns nil; an error or a panic (recovered
// and logged) means a failed delivery, redelivered after its backoff. When ctx
// ends, Consume stops taking messages, waits for the running handlers (their
// context is not cancelled with it) and returns ctx's error. Close stops it
// the same way, waiting for the running handlers up to the queue's
// ShutdownTimeout; Consume then returns an error matching ErrClosed.
//
// If acking (or nacking) a handled message failed, for instance because the
// queue closed before a slow handler returned, the message will be delivered
// again; each failure is logged, and Consume's error then also says how many
// there were and wraps the first (errors.Is finds it).
func (c *Consumer) Consume(ctx context.Context, handler func(context.Context, *Delivery) error) error {
	if c.drv == nil && !c.q.startHandlers(c.opts.Concurrency) {
		return fmt.Errorf("zeroloss: consume: %w", ErrClosed)
	}
	logger, group := c.log(), c.Group()
	hctx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	failed := make(chan error, 1)
	var ackMu sync.Mutex
	var ackFailures int
	var firstAckFailure error
	ackFailed := func(err error) {
		ackMu.Lock()
		defer ackMu.Unlock()
		if ackFailures == 0 {
			firstAckFailure = err
		}
		ackFailures++
	}
	for i := 0; i < c.opts.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.drv == nil {
				defer c.q.handlers.Done()
			}
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
					logger.Warn("zeroloss: handler failed; the message will be delivered again",
						"group", group, "seq", d.Seq, "attempt", d.Attempt, "error", err)
					if err := d.Nack(0); err != nil && !errors.Is(err, ErrDeliveryExpired) {
						logger.Error("zeroloss: nack failed", "group", group, "seq", d.Seq, "error", err)
						ackFailed(err)
					}
				} else if err := d.Ack(); err != nil {
					logger.Error("zeroloss: ack failed; the message will be delivered again",
						"group", group, "seq", d.Seq, "error", err)
					ackFailed(err)
				}
			}
		}()
	}
	wg.Wait()
	var stop error
	select {
	case stop = <-failed:
	default:
		stop = ctx.Err()
	}
	if ackFailures > 0 {
		noun := "message"
		if ackFailures > 1 {
			noun = "messages"
		}
		return errors.Join(fmt.Errorf("zeroloss: consume: %d handled %s could not be acked and will be delivered again; the first: %w",
			ackFailures, noun, firstAckFailure), stop)
	}
	return stop
}

// startHandlers counts n Consume workers in, or returns false once Close
// has begun.
func (q *Queue) startHandlers(n int) bool {
	q.handlersMu.Lock()
	defer q.handlersMu.Unlock()
	if q.handlersClosed {
		return false
	}
	q.handlers.Add(n)
	return true
}

// waitHandlers is Close's wait for the Consume workers (their Receives
// return once q.done is closed; running handlers finish and ack), at most
// ShutdownTimeout.
func (q *Queue) waitHandlers() {
	q.handlersMu.Lock()
	q.handlersClosed = true
	q.handlersMu.Unlock()
	stopped := make(chan struct{})
	go func() {
		q.handlers.Wait()
		close(stopped)
	}()
	timer := time.NewTimer(q.opts.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		q.logger.Warn("zeroloss: closing with Consume handlers still running after ShutdownTimeout; "+
			"their acks will fail and their messages be delivered again", "shutdown_timeout", q.opts.ShutdownTimeout)
	}
}

// log is the consumer's logger: its queue's, or its driver's.
func (c *Consumer) log() *slog.Logger {
	if c.drv != nil {
		return c.logger
	}
	return c.q.logger
}

func (c *Consumer) handle(ctx context.Context, handler func(context.Context, *Delivery) error, d *Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return handler(ctx, d)
}
