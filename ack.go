package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// Consumer errors.
var (
	// ErrDeliveryExpired: Ack, Nack or Extend through a delivery that is no
	// longer its message's current one: the message was delivered again
	// since, or moved to the retry stream or the dead letters; or Nack or
	// Extend after the ack deadline passed, or after an Ack. Nothing was
	// changed. (A second Ack of the current delivery is not an error: Ack is
	// idempotent and returns nil; so is an Ack of a message that forced
	// retention skipped, which the group will not deliver again either.)
	ErrDeliveryExpired = errors.New("delivery expired")
	// ErrNotDurable: an ack or another consumer record was written but not
	// confirmed durable in time (the fdatasync timed out or failed). The
	// message may be delivered again.
	ErrNotDurable = errors.New("consumer record not confirmed durable")
)

// Delivery is one delivery of a message to a consumer.
type Delivery struct {
	Message        Message
	Seq            uint64    // the message's seq in the log's main stream
	Attempt        int       // 1 for the first delivery
	FirstDelivered time.Time // when it was first delivered

	c     *Consumer
	u     *unacked
	token uint64 // u.token when delivered: a later delivery changes it
	pos   uint64 // u.pos when delivered: a move to the retry stream changes it

	drv DeliveryDriver // another backend's delivery (NewDriverDelivery): c is its Consumer, u nil
}

// stale returns why d is no longer its message's current delivery (the
// caller holds the group's lock), or nil. acked says d's message left the
// group with nothing more to ack: acked through d, or skipped by forced
// retention.
func (d *Delivery) stale(op string) (acked bool, err error) {
	u := d.u
	var why string
	switch {
	case u.token != d.token:
		why = fmt.Sprintf("it was delivered again since (attempt %d)", u.attempt)
	case u.pos != d.pos:
		why = "it moved to the retry stream"
	case d.c.g.pending[u.pos] != u:
		if !u.dead {
			// Acked, or skipped by forced retention: either way the group
			// will not deliver it again, which is all an Ack promises.
			return true, nil
		}
		why = "it was dead-lettered"
	case u.busy:
		why = "a record about it (an ack, or a move to the retry stream or the dead letters) is being written"
	default:
		return false, nil
	}
	return false, fmt.Errorf("zeroloss: %s of seq %d (attempt %d): %s: %w", op, d.Seq, d.Attempt, why, ErrDeliveryExpired)
}

// Ack acknowledges the message: it will not be delivered to the group again.
// It returns after the ack is durable as the queue's flush mode promises
// (under FlushSync after an fdatasync shared with other acks and sends). An
// ack after the ack deadline still counts unless the message has meanwhile
// been delivered again, or moved to the retry stream or the dead letters:
// then it is ErrDeliveryExpired and acks nothing. Acking the same delivery
// again returns nil (Ack is idempotent). Safe for concurrent use.
func (d *Delivery) Ack() error {
	if d.drv != nil {
		return d.drv.Ack()
	}
	return d.c.AckBatch(d)
}

// AckBatch acknowledges several deliveries of this consumer's group with one
// record. Deliveries already acked are skipped; if some are no longer their
// message's current delivery (ErrDeliveryExpired, as for Ack), the others
// are still acked. A batch so large that its record would not fit in a
// segment acks nothing (ErrRecordTooLarge).
func (c *Consumer) AckBatch(ds ...*Delivery) error {
	if c.drv != nil {
		return c.ackBatchDriver(ds)
	}
	for _, d := range ds {
		if d.drv != nil {
			return fmt.Errorf("zeroloss: ack of another backend's delivery on group %q: %w", c.g.name, ErrInvalidOptions)
		}
	}
	g := c.g
	g.mu.Lock()
	for g.acking(ds) {
		// Another Ack of one of these deliveries is being written: its
		// outcome decides (acked: nil, as for a second Ack; failed: ack it
		// here). Its end closes changed.
		changed := g.changed
		g.mu.Unlock()
		<-changed
		g.mu.Lock()
	}
	if g.deleted.Load() {
		g.mu.Unlock()
		return fmt.Errorf("zeroloss: ack: group %q: %w", g.name, ErrGroupDeleted)
	}
	var us []*unacked
	var expired error
	for _, d := range ds {
		if d.c.g != g {
			g.mu.Unlock()
			return fmt.Errorf("zeroloss: ack of a delivery from group %q on group %q: %w", d.c.g.name, g.name, ErrInvalidOptions)
		}
		u := d.u
		acked, err := d.stale("ack")
		switch {
		case acked: // acked already, through this delivery
		case u.busy && slices.Contains(us, u): // named twice in this call
		case err != nil:
			expired = err
		default:
			u.busy, u.acking = true, true
			us = append(us, u)
		}
	}
	if len(us) == 0 {
		g.mu.Unlock()
		return expired
	}
	positions := make([]uint64, len(us))
	for i, u := range us {
		positions[i] = u.pos
	}
	payload, took := g.ackPayload(positions)
	g.mu.Unlock()
	_, err := g.writeRecord(context.Background(), record.TypeAck, payload)
	g.mu.Lock()
	if err != nil {
		g.untake(took)
	}
	for _, u := range us {
		u.busy, u.acking = false, false
		if err == nil {
			g.drop(u) // an ordered key's next message becomes due
		}
	}
	g.ackWritten(ds, err)
	g.mu.Unlock()
	if err != nil {
		return err
	}
	return expired
}

// ackWritten ends the write of an ack record for ds (the caller holds g.mu):
// with err nil, the acked messages have left pending and their consumers'
// held entries go; otherwise a delivery whose consumer closed meanwhile is
// released, as Close would have. Either way the Receives are woken.
func (g *group) ackWritten(ds []*Delivery, err error) {
	now := g.q.opts.now()
	for _, d := range ds {
		u := d.u
		if u.acking && u.token == d.token { // an async ack's (AckBatch cleared its own)
			u.busy, u.acking = false, false
			if err == nil {
				delete(g.pending, u.pos)
			}
		}
		switch {
		case err == nil:
			if d.c.held[u] == d.token {
				delete(d.c.held, u)
			}
		case d.c.closed && u.out && u.token == d.token && !u.busy && g.pending[u.pos] == u:
			g.giveBack(u, now)
		}
	}
	if err == nil {
		g.wakeReceivers() // acked messages leave pending: nothing new is due
	} else {
		g.notify()
	}
}

// acking says whether one of ds is its message's current delivery and an
// Ack of it is being written (the caller holds g.mu).
func (g *group) acking(ds []*Delivery) bool {
	for _, d := range ds {
		u := d.u
		if d.c.g == g && u.acking && u.token == d.token && u.pos == d.pos && g.pending[u.pos] == u {
			return true
		}
	}
	return false
}

// Nack reports that handling failed: the message is delivered again after
// delay, or after the consumer's backoff for this attempt when delay is 0
// (NackNow delivers it again at once); on its last allowed delivery it goes
// to the dead letters instead. A message that fails more than once moves to
// the group's retry stream, so it does not hold back retention. It returns
// ErrDeliveryExpired if the delivery is no longer held, and an error
// matching ErrInvalidOptions for a negative delay.
func (d *Delivery) Nack(delay time.Duration) error {
	if delay < 0 {
		return invalid("Nack delay", "is negative (%v)", delay)
	}
	if d.drv != nil {
		return d.drv.Nack(delay)
	}
	return d.nack("nack", delay)
}

// NackNow is Nack with no delay at all: handling failed and the message is
// to be delivered again at once, not after the backoff. It is a failed
// delivery like any Nack: the attempt counts towards MaxDeliveries (on the
// last allowed delivery the message goes to the dead letters), and a
// message that fails more than once moves to the retry stream, due at once.
// To give a message back without counting a failed attempt, use Release.
//
// It is a method rather than a value of Nack's delay because Nack(0) already
// means "the backoff", and a sentinel duration would be easy to pass by
// accident (a computed delay that came out negative) and would have to be
// understood by every Backend.
func (d *Delivery) NackNow() error {
	if d.drv != nil {
		return d.drv.NackNow()
	}
	return d.nack("nack now", redeliverNow)
}

// redeliverNow, as the delay of Consumer.failed, means at once: not the
// backoff that a delay of 0 means there.
const redeliverNow time.Duration = -1

// nack is Nack and NackNow: a failed delivery, redelivered after delay
// (redeliverNow: at once; 0: the backoff).
func (d *Delivery) nack(op string, delay time.Duration) error {
	c := d.c
	g := c.g
	g.mu.Lock()
	if g.deleted.Load() {
		g.mu.Unlock()
		return fmt.Errorf("zeroloss: %s of seq %d: group %q: %w", op, d.Seq, g.name, ErrGroupDeleted)
	}
	u := d.u
	if err := d.held(op); err != nil {
		g.mu.Unlock()
		return err
	}
	u.out = false
	delete(c.held, u)
	m, ok := c.failed(u, delay, c.q.opts.now(), "nacked on the last allowed delivery")
	g.notify()
	g.mu.Unlock()
	if !ok {
		return nil
	}
	return c.moveAll(context.Background(), []move{m})
}

// Release gives the message back at once without a failed attempt: the
// consumer did not handle it (it is stopping, or the message came too soon)
// rather than failed to. The message is due again at once for the group's
// consumers, before newer messages, and the attempt is taken back: it does
// not count towards MaxDeliveries and the next delivery has the same
// Attempt. Nothing is written: a release is noted in the group's next ack
// record (at most a second later, or at Close). A crash before that, or
// after a redelivery's count was already written, makes the restart count
// the released delivery as one attempt, exactly as it counts a delivery held
// at the crash; never more than that one. It returns ErrDeliveryExpired if
// the delivery is no longer held (acked, nacked, released, past its ack
// deadline, delivered again). Consumer.Close releases every delivery its
// consumer holds.
func (d *Delivery) Release() error {
	if d.drv != nil {
		return d.drv.Release()
	}
	c := d.c
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.deleted.Load() {
		return fmt.Errorf("zeroloss: release of seq %d: group %q: %w", d.Seq, g.name, ErrGroupDeleted)
	}
	if err := d.held("release"); err != nil {
		return err
	}
	g.giveBack(d.u, c.q.opts.now())
	delete(c.held, d.u)
	g.notify()
	return nil
}

// Extend moves the ack deadline to by from now, for long work. It returns
// ErrDeliveryExpired if the delivery is no longer held, and an error
// matching ErrInvalidOptions if by is below MinAckTimeout.
func (d *Delivery) Extend(by time.Duration) error {
	if by < MinAckTimeout {
		return invalid("Extend", "by %v is below MinAckTimeout %v", by, MinAckTimeout)
	}
	if d.drv != nil {
		return d.drv.Extend(by)
	}
	g := d.c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.deleted.Load() {
		return fmt.Errorf("zeroloss: extend of seq %d: group %q: %w", d.Seq, g.name, ErrGroupDeleted)
	}
	u := d.u
	if err := d.held("extend"); err != nil {
		return err
	}
	u.deadline, u.timeout = d.c.q.opts.now().Add(by), by
	g.expect(u.deadline)
	return nil
}

// held returns nil if d is its message's current delivery and its ack
// deadline has not passed (the caller holds the group's lock), else
// ErrDeliveryExpired saying why.
func (d *Delivery) held(op string) error {
	acked, err := d.stale(op)
	switch {
	case err != nil:
		return err
	case acked:
		return fmt.Errorf("zeroloss: %s of seq %d: it was acked (or skipped by retention): %w", op, d.Seq, ErrDeliveryExpired)
	case !d.u.out:
		return fmt.Errorf("zeroloss: %s of seq %d: its ack deadline passed, or it was nacked: %w", op, d.Seq, ErrDeliveryExpired)
	}
	return nil
}

// move is a message leaving its position: to the retry stream, due at due
// (wait after it was decided), or to the dead letters.
type move struct {
	u      *unacked
	dead   bool
	reason string
	due    time.Time
	wait   time.Duration
}

// moveAll writes the records of moves (their messages are marked busy) and
// updates the group; it stops at the first error.
func (c *Consumer) moveAll(ctx context.Context, moves []move) error {
	for i, m := range moves {
		if err := c.g.moveOne(ctx, m); err != nil {
			c.g.release(moves[i+1:])
			return err
		}
	}
	return nil
}

// release gives up moves not made: their messages wait in memory instead.
func (g *group) release(moves []move) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range moves {
		m.u.busy = false
		if !m.dead {
			m.u.due, m.u.wait = m.due, m.wait
		}
	}
	g.notify()
}

// moveOne writes one retry or dead-letter record; the record also acks the
// position the message leaves.
func (g *group) moveOne(ctx context.Context, m move) error {
	u := m.u // busy: nothing else changes it until we clear busy
	msg := toRecord(&u.msg)
	var typ record.Type
	var payload []byte
	if m.dead {
		typ = record.TypeDeadLetter
		if len(m.reason) > record.MaxReasonSize { // the options reserve room for so much
			m.reason = m.reason[:record.MaxReasonSize]
		}
		payload = record.AppendDeadLetter(nil, &record.DeadLetter{Seq: u.seq, Source: u.pos,
			Attempts: uint64(u.attempt), Reason: m.reason, Message: msg})
	} else {
		typ = record.TypeRetry
		r := record.Retry{Seq: u.seq, Source: u.pos, Attempts: uint64(u.attempt), Due: m.due.UnixNano(), Message: msg}
		if u.attempt > 0 {
			r.First = u.first.UnixNano()
		}
		payload = record.AppendRetry(nil, &r)
	}
	pos, err := g.writeRecord(ctx, typ, payload)
	g.mu.Lock()
	defer g.mu.Unlock()
	u.busy = false
	if pos == 0 { // not written: it stays where it is
		if !m.dead {
			u.due, u.wait = m.due, m.wait
		}
		g.notify()
		return err
	}
	delete(g.attempts, u.pos)
	if m.dead {
		g.drop(u) // an ordered key moves on to its next message
		u.dead = true
		if g.keyed(u) {
			g.q.logger.Warn("zeroloss: message dead-lettered; its key moves on", "group", g.name, "seq", u.seq, "key", u.msg.Key,
				"attempts", u.attempt, "reason", m.reason)
		} else {
			g.q.logger.Warn("zeroloss: message dead-lettered", "group", g.name, "seq", u.seq, "attempts", u.attempt, "reason", m.reason)
		}
	} else {
		// The message moves, and stays its key's head in an ordered
		// group: the line holds the message, not its position.
		delete(g.pending, u.pos)
		u.pos, u.due, u.wait = pos, m.due, m.wait
		g.pending[pos] = u
	}
	g.notify()
	return err
}

func toRecord(m *Message) record.Message {
	return record.Message{ID: m.ID, Topic: m.Topic, Tag: m.Tag, Key: m.Key, Headers: m.Headers, Body: m.Body, DeliverAt: m.DeliverAt}
}

// DeadLetter is a message a group gave up on.
type DeadLetter struct {
	Pos      uint64 // where the dead letter is held: names it to RedriveDeadLetters and PurgeDeadLetters
	Seq      uint64 // the message's seq in the main stream
	Attempts int
	Reason   string
	Message  Message
	Time     time.Time // when it was dead-lettered
}

// DeadLetters returns the dead letters of the group called name, oldest
// first. They are kept, across retention, until re-driven or purged.
func (q *Queue) DeadLetters(name string) ([]DeadLetter, error) {
	g, err := q.groupByName(name)
	if err != nil {
		return nil, err
	}
	return q.ledger.deadLetters(g.id), nil
}

func (q *Queue) groupByName(name string) (*group, error) {
	q.groupsMu.Lock()
	defer q.groupsMu.Unlock()
	g := q.groups[name]
	if g == nil {
		return nil, fmt.Errorf("zeroloss: no consumer group %q: %w (%w)", name, ErrNoSuchGroup, ErrInvalidOptions)
	}
	return g, nil
}

// RedriveDeadLetters sends dead letters of the group called name back to it:
// each is appended to the group's retry stream, due at once, with its attempt
// count reset, and leaves the dead letters. With no positions it re-drives
// all of them; otherwise those at the given DeadLetter.Pos. It returns how
// many it re-drove. A dead letter is re-driven at most once: concurrent
// calls (or a concurrent PurgeDeadLetters) naming the same one skip it while
// another call writes its record, and find it gone afterwards.
func (q *Queue) RedriveDeadLetters(ctx context.Context, name string, positions ...uint64) (int, error) {
	g, err := q.groupByName(name)
	if err != nil {
		return 0, err
	}
	dead := g.claimDead(positions)
	defer g.unclaimDead(dead)
	n := 0
	for _, dl := range dead {
		now := q.opts.now()
		payload := record.AppendRetry(nil, &record.Retry{Seq: dl.Seq, Source: dl.Pos, Due: now.UnixNano(), Message: toRecord(&dl.Message)})
		pos, err := g.writeRecord(ctx, record.TypeRetry, payload)
		if pos != 0 {
			g.mu.Lock()
			// In an ordered group it waits behind its key's head, if the
			// key has one, ahead of the key's later messages.
			g.put(&unacked{pos: pos, seq: dl.Seq, msg: dl.Message, first: now, due: now})
			g.notify()
			g.mu.Unlock()
			n++
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// PurgeDeadLetters deletes dead letters of the group called name: all of
// them with no positions, otherwise those at the given DeadLetter.Pos. It
// returns how many it deleted. Like RedriveDeadLetters, it skips dead
// letters another call is re-driving or purging.
func (q *Queue) PurgeDeadLetters(ctx context.Context, name string, positions ...uint64) (int, error) {
	g, err := q.groupByName(name)
	if err != nil {
		return 0, err
	}
	dead := g.claimDead(positions)
	defer g.unclaimDead(dead)
	if len(dead) == 0 {
		return 0, nil
	}
	positions = positions[:0:0]
	for _, dl := range dead {
		positions = append(positions, dl.Pos)
	}
	g.mu.Lock()
	payload, took := g.ackPayload(positions)
	g.mu.Unlock()
	pos, err := g.writeRecord(ctx, record.TypeAck, payload)
	if err != nil {
		g.mu.Lock()
		g.untake(took)
		g.mu.Unlock()
	}
	if pos == 0 {
		return 0, err
	} else if err != nil {
		return len(dead), err
	}
	return len(dead), nil
}

// claimDead returns g's dead letters at positions (all with none) that no
// other redrive or purge is writing a record about, and claims them until
// unclaimDead. A record written for a claimed dead letter takes it out of
// the ledger before the claim ends, so each is re-driven or purged once.
func (g *group) claimDead(positions []uint64) []DeadLetter {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []DeadLetter
	for _, dl := range g.q.selectDead(g, positions) {
		if g.claimed[dl.Pos] {
			continue
		}
		if g.claimed == nil {
			g.claimed = map[uint64]bool{}
		}
		g.claimed[dl.Pos] = true
		out = append(out, dl)
	}
	return out
}

// unclaimDead ends the claims of claimDead.
func (g *group) unclaimDead(dead []DeadLetter) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, dl := range dead {
		delete(g.claimed, dl.Pos)
	}
}

// selectDead returns g's dead letters at positions, or all with none.
func (q *Queue) selectDead(g *group, positions []uint64) []DeadLetter {
	all := q.ledger.deadLetters(g.id)
	if len(positions) == 0 {
		return all
	}
	want := map[uint64]bool{}
	for _, p := range positions {
		want[p] = true
	}
	var out []DeadLetter
	for _, dl := range all {
		if want[dl.Pos] {
			out = append(out, dl)
		}
	}
	return out
}
