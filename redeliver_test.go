package zeroloss

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestNackNowRedeliversAtOnce: on a fake clock that never moves, a NackNow
// delivers the message again at once, before newer messages, with the
// attempt counted (after a failed redelivery it goes through the retry
// stream, due at once; on the last allowed delivery to the dead letters),
// while Nack(0) still waits for the backoff.
func TestNackNowRedeliversAtOnce(t *testing.T) {
	clock, q, c := clockedConsumer(t, 3, &ConsumerOptions{AckTimeout: time.Minute, MaxDeliveries: 4,
		Backoff: []time.Duration{10 * time.Second}})

	d := receive(t, c)
	require.Equal(t, "m-000", d.Message.ID)
	require.NoError(t, d.NackNow())
	require.ErrorIs(t, d.NackNow(), ErrDeliveryExpired, "a nacked delivery is no longer held")
	require.ErrorIs(t, d.Release(), ErrDeliveryExpired)
	for attempt := 2; attempt <= 3; attempt++ {
		d = receive(t, c)
		require.Equal(t, "m-000", d.Message.ID, "redelivered at once, before the newer m-001")
		require.Equal(t, attempt, d.Attempt, "a NackNow counts the attempt")
		require.NoError(t, d.NackNow())
	}
	st := q.GroupStats()[0]
	assert.Equal(t, 1, st.Retrying, "a failed redelivery moved to the retry stream, due at once")
	d = receive(t, c)
	require.Equal(t, "m-000", d.Message.ID)
	require.Equal(t, 4, d.Attempt)
	require.NoError(t, d.NackNow(), "the last allowed delivery fails: dead letter")
	dls, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dls, 1)
	assert.Equal(t, 4, dls[0].Attempts)

	d = receive(t, c)
	require.Equal(t, "m-001", d.Message.ID)
	require.NoError(t, d.Nack(0))
	d = receive(t, c)
	require.Equal(t, "m-002", d.Message.ID, "Nack(0) still means the backoff")
	require.NoError(t, d.Ack())
	nothing(t, c)
	clock.Advance(10 * time.Second)
	d = receive(t, c)
	require.Equal(t, "m-001", d.Message.ID)
	require.Equal(t, 2, d.Attempt)
}

// TestReleaseGivesBackWithoutAnAttempt: on a fake clock that never moves
// while it releases, a released message is due again at once, before newer
// ones, with the same Attempt: releases never reach MaxDeliveries, while a
// failed delivery still counts.
func TestReleaseGivesBackWithoutAnAttempt(t *testing.T) {
	clock, q, c := clockedConsumer(t, 2, &ConsumerOptions{AckTimeout: time.Minute, MaxDeliveries: 2,
		Backoff: []time.Duration{time.Second}})

	d := receive(t, c)
	for range 5 {
		require.Equal(t, "m-000", d.Message.ID, "released: due at once, before the newer m-001")
		require.Equal(t, 1, d.Attempt, "a release is not an attempt")
		require.NoError(t, d.Release())
		require.ErrorIs(t, d.Release(), ErrDeliveryExpired, "a released delivery is no longer held")
		require.ErrorIs(t, d.Nack(0), ErrDeliveryExpired)
		require.ErrorIs(t, d.Extend(time.Minute), ErrDeliveryExpired)
		d = receive(t, c)
	}
	require.NoError(t, d.Nack(0), "a failed delivery still counts")
	other := receive(t, c)
	require.Equal(t, "m-001", other.Message.ID)
	require.NoError(t, other.Ack())
	clock.Advance(time.Second)
	for range 3 {
		d = receive(t, c)
		require.Equal(t, "m-000", d.Message.ID)
		require.Equal(t, 2, d.Attempt, "the last allowed delivery, released: not dead-lettered")
		require.NoError(t, d.Release())
	}
	dls, err := q.DeadLetters("g")
	require.NoError(t, err)
	assert.Empty(t, dls)
	d = receive(t, c)
	require.NoError(t, d.Ack())
	nothing(t, c)
}

// TestReleaseIsNotCountedAfterARestart: the durable side of a release. The
// attempt counts ride on the group's ack records; a released first
// delivery's is written as 0 (read, never delivered) by the next ack record
// (here Close's), so a restart does not count it. A crash before that
// record counts it as one attempt, as a delivery held at the crash is
// counted: never more.
func TestReleaseIsNotCountedAfterARestart(t *testing.T) {
	ctx := context.Background()
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	sendN(t, q, "m", 2)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	for range 2 {
		require.NoError(t, receive(t, c).Release())
	}
	require.NoError(t, q.Close())

	q = consumerQueue(t, fs, nil)
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	d := receive(t, c)
	require.Equal(t, "m-000", d.Message.ID)
	require.Equal(t, 1, d.Attempt, "released before a clean stop: not counted")
	// The mark (m-000 delivered) is durable before the release; the
	// release's count of 0 is not when the power goes.
	require.NoError(t, q.flushMarks(ctx))
	require.NoError(t, d.Release())
	fs.Crash(vfs.DropUnsynced, nil)
	q.Close()

	q = consumerQueue(t, fs, nil)
	defer q.Close()
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	seen := map[string]int{}
	for range 2 {
		d := receive(t, c)
		seen[d.Message.ID] = d.Attempt
		require.NoError(t, d.Ack())
	}
	assert.Equal(t, 1, seen["m-001"], "released before a clean stop, untouched since: not counted")
	assert.Contains(t, []int{1, 2}, seen["m-000"], "released right before a crash: counted at most once")
	nothing(t, c)
}

// TestConsumerCloseReleasesWhatItHolds: Close of one consumer gives every
// delivery it holds back to the group at once (no ack timeout, no attempt
// counted), makes its Receives (a waiting one too) and Consume return
// ErrConsumerClosed, and leaves the queue and the group's other consumers
// working. An Ack through a released delivery counts unless the message
// was delivered again meanwhile.
func TestConsumerCloseReleasesWhatItHolds(t *testing.T) {
	_, q, c1 := clockedConsumer(t, 4, &ConsumerOptions{AckTimeout: time.Hour})
	c2, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour})
	require.NoError(t, err)

	held := []*Delivery{receive(t, c1), receive(t, c1), receive(t, c1)}
	require.NoError(t, held[1].Ack())
	require.Equal(t, "m-003", receive(t, c2).Message.ID)
	waiting := make(chan error, 1)
	go func() {
		_, err := c1.Receive(context.Background()) // nothing due: waits
		waiting <- err
	}()

	require.NoError(t, c1.Close())
	select {
	case err := <-waiting:
		require.ErrorIs(t, err, ErrConsumerClosed)
		require.NotErrorIs(t, err, ErrClosed, "the queue is not closed")
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting Receive did not return on Consumer.Close")
	}
	require.NoError(t, c1.Close(), "Close is idempotent")
	_, err = c1.Receive(context.Background())
	require.ErrorIs(t, err, ErrConsumerClosed)
	_, err = c1.ReceiveBatch(context.Background(), 4)
	require.ErrorIs(t, err, ErrConsumerClosed)
	require.ErrorIs(t, c1.Consume(context.Background(), func(context.Context, *Delivery) error { return nil }), ErrConsumerClosed)

	again := receive(t, c2)
	require.Equal(t, "m-000", again.Message.ID, "released at once: the fake clock did not move")
	require.Equal(t, 1, again.Attempt, "a released delivery is not a failed attempt")
	require.ErrorIs(t, held[0].Ack(), ErrDeliveryExpired, "delivered again since the release")
	require.NoError(t, held[2].Ack(), "released, not delivered again: the Ack still counts")
	require.NoError(t, again.Ack())
	nothing(t, c2)
	sendN(t, q, "after", 1)
	require.Equal(t, "after-000", receive(t, c2).Message.ID, "the queue and the group go on")
}

// TestConsumerCloseStopsConsume: Close of a consumer running Consume makes
// Consume return ErrConsumerClosed and releases the delivery its handler
// holds, so another consumer gets it at once.
func TestConsumerCloseStopsConsume(t *testing.T) {
	_, q, c1 := clockedConsumer(t, 1, &ConsumerOptions{AckTimeout: time.Hour})
	c2, err := q.Consumer("g", nil)
	require.NoError(t, err)
	handling := make(chan *Delivery)
	finish := make(chan struct{})
	consumed := make(chan error, 1)
	go func() {
		consumed <- c1.Consume(context.Background(), func(_ context.Context, d *Delivery) error {
			handling <- d
			<-finish
			return nil
		})
	}()
	var d *Delivery
	select {
	case d = <-handling:
	case <-time.After(5 * time.Second):
		t.Fatal("Consume did not deliver")
	}
	require.NoError(t, c1.Close())
	again := receive(t, c2)
	require.Equal(t, d.Message.ID, again.Message.ID, "the handler's delivery was released")
	require.Equal(t, 1, again.Attempt)
	close(finish)
	select {
	case err := <-consumed:
		require.ErrorIs(t, err, ErrConsumerClosed)
		require.ErrorIs(t, err, ErrDeliveryExpired, "the handler's Ack came after the message was delivered again")
	case <-time.After(5 * time.Second):
		t.Fatal("Consume did not return on Consumer.Close")
	}
	require.NoError(t, again.Ack())
}

// TestConsumerForgetsStaleDeliveries: what a consumer keeps for Close
// stays bounded by what it holds: acks, nacks and releases drop their
// entries, and entries of deliveries that expired and went to another
// consumer are swept out as it delivers more (once its entries have
// doubled since the last sweep), so rounds of expiries do not pile up.
func TestConsumerForgetsStaleDeliveries(t *testing.T) {
	const rounds, perRound = 6, 100
	noBackoff := []time.Duration{0}
	clock, q, c1 := clockedConsumer(t, rounds*perRound+30, &ConsumerOptions{AckTimeout: time.Second, Backoff: noBackoff})
	c2, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour, Backoff: noBackoff})
	require.NoError(t, err)
	held := func(c *Consumer) int {
		c.g.mu.Lock()
		defer c.g.mu.Unlock()
		return len(c.held)
	}
	for range rounds {
		for range perRound { // to expire and go to c2
			receive(t, c1)
		}
		clock.Advance(2 * time.Second)
		for range perRound {
			require.NoError(t, receive(t, c2).Ack())
		}
		assert.Zero(t, held(c2), "acked deliveries are forgotten")
	}
	assert.LessOrEqual(t, held(c1), 2*perRound+minSweep, "expired deliveries of earlier rounds were swept out")
	for i := range 30 {
		d := receive(t, c1)
		switch i % 3 {
		case 0:
			require.NoError(t, d.Ack())
		case 1:
			require.NoError(t, d.Release())
			require.NoError(t, receive(t, c1).Ack())
		case 2:
			require.NoError(t, d.NackNow())
			require.NoError(t, receive(t, c1).Ack())
		}
	}
	nothing(t, c1)
	c1.g.mu.Lock()
	for u, token := range c1.held {
		assert.False(t, u.token == token && u.out, "seq %d: nothing is held, yet an entry is current", u.seq)
	}
	c1.g.mu.Unlock()
}

// TestExpiredRedeliveriesMoveInPositionOrder: when one Receive finds many
// failed redeliveries at once (their ack deadlines passed together), their
// retry records are written in position order, not in the order of a map,
// so that the same calls write the same log on every run (the seeded
// simulation reruns a seed and expects the same steps).
func TestExpiredRedeliveriesMoveInPositionOrder(t *testing.T) {
	const n = 16
	clock, q, c := clockedConsumer(t, n, &ConsumerOptions{AckTimeout: time.Minute, MaxDeliveries: 5,
		Backoff: []time.Duration{time.Second}})
	var first []*Delivery
	for range n {
		first = append(first, receive(t, c))
	}
	for _, d := range first {
		require.NoError(t, d.NackNow()) // a failed first delivery waits at its position
	}
	for range n {
		require.Equal(t, 2, receive(t, c).Attempt)
	}
	clock.Advance(2 * time.Minute) // every second delivery fails at once: each moves
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Receive(ctx)
	require.ErrorIs(t, err, context.Canceled)

	q.ledger.mu.Lock()
	retries := q.ledger.groups[c.g.id].retries
	var seqs []uint64
	for _, pos := range slices.Sorted(maps.Keys(retries)) {
		seqs = append(seqs, retries[pos].Seq)
	}
	q.ledger.mu.Unlock()
	require.Len(t, seqs, n)
	require.True(t, slices.IsSorted(seqs), "retry records by position hold seqs %v", seqs)
}
