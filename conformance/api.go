package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// held is the consumer options of the subtests that must tell a message
// given back at once from one redelivered after its ack deadline: an
// AckTimeout and a Backoff far beyond patience.
func held() *zeroloss.ConsumerOptions {
	return &zeroloss.ConsumerOptions{AckTimeout: 4 * patience, Backoff: []time.Duration{4 * patience}, MaxDeliveries: 5}
}

// testReceiveBatch: ReceiveBatch returns 1 to max deliveries, AckBatch acks
// them, and a max below 1 is ErrInvalidOptions.
func testReceiveBatch(t *testing.T, b zeroloss.Backend) {
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		send(t, b, &zeroloss.Message{ID: id, Body: []byte(id)})
	}
	s := subscribe(t, b, "g", held())
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, err := s.ReceiveBatch(ctx, 0)
	require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)
	var got []string
	for len(got) < len(ids) {
		ds, err := s.ReceiveBatch(ctx, len(ids))
		require.NoError(t, err, "received %v", got)
		require.NotEmpty(t, ds)
		require.LessOrEqual(t, len(ds), len(ids)-len(got))
		for _, d := range ds {
			got = append(got, d.Message.ID)
		}
		require.NoError(t, s.AckBatch(ds...))
	}
	assert.Equal(t, ids, got, "in the order sent")
	nothing(t, subscribe(t, b, "g", options(5)), quiet)
}

// testNackNow: NackNow delivers the message again at once, not after the
// backoff, and counts the attempt.
func testNackNow(t *testing.T, b zeroloss.Backend) {
	res := send(t, b, &zeroloss.Message{ID: "now", Body: []byte("x")})
	s := subscribe(t, b, "g", held())
	d := next(t, s)
	require.NoError(t, d.NackNow())
	require.ErrorIs(t, d.NackNow(), zeroloss.ErrDeliveryExpired, "a nacked delivery is no longer held")
	d = next(t, s) // within patience: neither the backoff nor the ack deadline
	assert.Equal(t, res.Seq, d.Seq)
	assert.Equal(t, 2, d.Attempt)
	require.NoError(t, d.Ack())
}

// testAckAsync: an AckAsync acks the message (not delivered again after
// its ack deadline), and a second one is nil.
func testAckAsync(t *testing.T, b zeroloss.Backend) {
	send(t, b, &zeroloss.Message{ID: "async", Body: []byte("x")})
	s := subscribe(t, b, "g", options(5))
	d := next(t, s)
	require.NoError(t, d.AckAsync())
	require.NoError(t, d.AckAsync(), "AckAsync of an acked delivery")
	nothing(t, s, quiet)
}

// testRelease: Release gives the message back at once without counting
// the attempt, or, on a backend that lists Release as unsupported, fails
// with ErrUnsupported and leaves the delivery held.
func testRelease(t *testing.T, b zeroloss.Backend, unsupported bool) {
	res := send(t, b, &zeroloss.Message{ID: "back", Body: []byte("x")})
	s := subscribe(t, b, "g", held())
	d := next(t, s)
	err := d.Release()
	if unsupported {
		require.ErrorIs(t, err, zeroloss.ErrUnsupported)
		require.NoError(t, d.Ack(), "still held after an unsupported Release")
		nothing(t, s, quiet)
		return
	}
	require.NoError(t, err)
	d = next(t, s)
	assert.Equal(t, res.Seq, d.Seq)
	assert.Equal(t, 1, d.Attempt, "a release is not a failed attempt")
	require.NoError(t, d.Ack())
}

// testConsumerClose: a closed Consumer's Receives fail with
// ErrConsumerClosed and Close is idempotent; what it held is given back at
// once (or, where Release is unsupported, stays held and can be acked).
func testConsumerClose(t *testing.T, b zeroloss.Backend, releases bool) {
	res := send(t, b, &zeroloss.Message{ID: "closing", Body: []byte("x")})
	s := subscribe(t, b, "g", held())
	other := subscribe(t, b, "g", held())
	d := next(t, s)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, err := s.Receive(ctx)
	require.ErrorIs(t, err, zeroloss.ErrConsumerClosed)
	if !releases {
		require.NoError(t, d.Ack(), "a closed consumer's delivery is still held")
		nothing(t, other, quiet)
		return
	}
	again := next(t, other)
	assert.Equal(t, res.Seq, again.Seq)
	require.NoError(t, again.Ack())
}
