package zeroloss

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
