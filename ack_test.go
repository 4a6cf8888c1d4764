package zeroloss

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStaleDeliveryIsExpired: an Ack, Nack or Extend through a delivery that
// is no longer its message's current one (the message was delivered again,
// moved to the retry stream, or dead-lettered) is ErrDeliveryExpired and
// changes nothing; in particular it never acks the message's later delivery.
func TestStaleDeliveryIsExpired(t *testing.T) {
	opts := &ConsumerOptions{AckTimeout: 10 * time.Second, Backoff: []time.Duration{time.Second}, MaxDeliveries: 5}
	stale := func(t *testing.T, d *Delivery) {
		t.Helper()
		require.ErrorIs(t, d.Ack(), ErrDeliveryExpired, "Ack")
		require.ErrorIs(t, d.Nack(0), ErrDeliveryExpired, "Nack")
		require.ErrorIs(t, d.Extend(time.Minute), ErrDeliveryExpired, "Extend")
	}
	t.Run("delivered again", func(t *testing.T) {
		clock, _, c := clockedConsumer(t, 1, opts)
		d1 := receive(t, c)
		clock.Advance(10 * time.Second) // deadline: a failed first delivery waits in memory
		nothing(t, c)
		clock.Advance(time.Second)
		d2 := receive(t, c)
		require.Equal(t, 2, d2.Attempt)
		stale(t, d1)
		require.NoError(t, d2.Extend(time.Minute), "the current delivery is still held")
		require.NoError(t, d2.Ack())
		clock.Advance(time.Hour)
		nothing(t, c)
	})
	t.Run("moved to the retry stream", func(t *testing.T) {
		clock, q, c := clockedConsumer(t, 1, opts)
		receive(t, c)
		clock.Advance(10 * time.Second)
		nothing(t, c)
		clock.Advance(time.Second)
		d2 := receive(t, c)
		clock.Advance(10 * time.Second) // a failed redelivery: it moves
		nothing(t, c)
		require.Equal(t, 1, q.GroupStats()[0].Retrying)
		stale(t, d2)
		clock.Advance(time.Second)
		d3 := receive(t, c) // not acked by the stale Ack: delivered again
		require.Equal(t, 3, d3.Attempt)
		require.NoError(t, d3.Ack())
		nothing(t, c)
	})
	t.Run("dead-lettered", func(t *testing.T) {
		_, q, c := clockedConsumer(t, 1, &ConsumerOptions{MaxDeliveries: 1})
		d := receive(t, c)
		require.NoError(t, d.Nack(0))
		stale(t, d)
		dead, err := q.DeadLetters("g")
		require.NoError(t, err)
		assert.Len(t, dead, 1, "a stale Ack does not purge the dead letter")
	})
}

// TestDoubleAckIsIdempotent: acking the current delivery again returns nil
// and acks nothing else; an Ack after the deadline but before another
// delivery still counts.
func TestDoubleAckIsIdempotent(t *testing.T) {
	clock, q, c := clockedConsumer(t, 2, &ConsumerOptions{AckTimeout: 10 * time.Second, Backoff: []time.Duration{time.Second}})
	d1 := receive(t, c)
	d2 := receive(t, c)
	require.NoError(t, d1.Ack())
	require.NoError(t, d1.Ack(), "a second Ack of the same delivery")
	require.NoError(t, c.AckBatch(d1, d1))
	assert.Equal(t, 1, q.GroupStats()[0].InFlight, "the other message is still held")
	clock.Advance(10 * time.Second) // d2's deadline passes...
	nothing(t, c)
	require.NoError(t, c.AckBatch(d2, d2), "...but it was not delivered again: the Ack counts, once")
	require.ErrorIs(t, d2.Nack(0), ErrDeliveryExpired)
	clock.Advance(time.Hour)
	nothing(t, c)
}

// TestConcurrentAckOfOneDeliveryIsIdempotent: a second Ack of a delivery
// whose first Ack is still being written (waiting for its fdatasync) waits
// for that Ack and returns nil, as a second Ack after it does; it used to
// return ErrDeliveryExpired ("nothing was changed", as if the message would
// come back) while the first Ack acked it.
func TestConcurrentAckOfOneDeliveryIsIdempotent(t *testing.T) {
	fs := newHeldSyncFS()
	q := consumerQueue(t, fs, nil)
	defer q.Close()
	sendN(t, q, "m", 1)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	d := receive(t, c)
	close(fs.armed) // the first Ack's fdatasync holds
	first := make(chan error, 1)
	go func() { first <- d.Ack() }()
	within(t, fs.entered, "the first Ack's fdatasync")
	second := make(chan error, 1)
	go func() { second <- c.AckBatch(d) }()
	early := false
	select {
	case err := <-second:
		early = true
		second <- err
	case <-time.After(50 * time.Millisecond):
	}
	close(fs.release)
	require.NoError(t, within(t, first, "the first Ack"))
	require.NoError(t, within(t, second, "the second Ack"), "the message was acked")
	assert.False(t, early, "the second Ack returned while the first was being written")
	nothing(t, c)
}
