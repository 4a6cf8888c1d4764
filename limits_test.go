package zeroloss

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestNackAndExtendRefuseBadDurations: a negative Nack delay, and an Extend
// below MinAckTimeout, are refused with an error naming the value, and the
// delivery is left as it was.
func TestNackAndExtendRefuseBadDurations(t *testing.T) {
	clock, _, c := clockedConsumer(t, 1, &ConsumerOptions{AckTimeout: 10 * time.Second, Backoff: []time.Duration{time.Second}})
	d := receive(t, c)
	for name, call := range map[string]func() error{
		"Nack -1s":     func() error { return d.Nack(-time.Second) },
		"Extend -1s":   func() error { return d.Extend(-time.Second) },
		"Extend 0s":    func() error { return d.Extend(0) },
		"Extend 1ns":   func() error { return d.Extend(time.Nanosecond) },
		"Extend 99ms":  func() error { return d.Extend(99 * time.Millisecond) },
		"Nack -1ns":    func() error { return d.Nack(-time.Nanosecond) },
		"Extend -10ms": func() error { return d.Extend(-10 * time.Millisecond) },
	} {
		t.Run(name, func(t *testing.T) {
			err := call()
			require.ErrorIs(t, err, ErrInvalidOptions)
			value := strings.Fields(name)[1]
			assert.Contains(t, err.Error(), value, "the error names the value")
		})
	}
	require.NoError(t, d.Extend(MinAckTimeout), "the minimum itself is accepted")
	require.NoError(t, d.Nack(0), "the delivery is still held")
	clock.Advance(time.Second)
	require.NoError(t, receive(t, c).Ack())
}

// TestAckTimeoutHasAMinimum: an AckTimeout below MinAckTimeout would deliver
// a message again while its handler still runs (many handlers at once for
// one message).
func TestAckTimeoutHasAMinimum(t *testing.T) {
	q := consumerQueue(t, vfs.NewMem(), nil)
	defer q.Close()
	for _, timeout := range []time.Duration{time.Nanosecond, time.Millisecond, MinAckTimeout - 1} {
		_, err := q.Consumer("g", &ConsumerOptions{AckTimeout: timeout})
		require.ErrorIs(t, err, ErrInvalidOptions, "AckTimeout %v", timeout)
		assert.Contains(t, err.Error(), "AckTimeout")
		assert.Contains(t, err.Error(), timeout.String())
	}
	_, err := q.Consumer("g", &ConsumerOptions{AckTimeout: MinAckTimeout})
	require.NoError(t, err)
}

// TestStatsMessagesCountsMessagesOnly: consumer records (group declarations,
// acks) are records, not messages.
func TestStatsMessagesCountsMessagesOnly(t *testing.T) {
	_, q, c := clockedConsumer(t, 3, nil)
	require.NoError(t, receive(t, c).Ack())
	_, err := q.SendBatch(context.Background(), []*Message{{ID: "b1"}, {ID: "b2"}, {ID: "m-000"}}) // m-000: a duplicate
	require.NoError(t, err)
	assert.Equal(t, uint64(5), q.Stats().Messages)
}

// TestLongIDsAndKeysAreRefused: IDs above MaxIDLength and keys above
// MaxKeyLength are refused at Send, naming the field, before anything is
// appended or remembered; the other messages of a batch before it are kept.
func TestLongIDsAndKeysAreRefused(t *testing.T) {
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	ok := strings.Repeat("i", MaxIDLength)
	_, err := q.Send(context.Background(), &Message{ID: ok, Key: strings.Repeat("k", MaxKeyLength)})
	require.NoError(t, err, "the limits themselves are accepted")
	for field, m := range map[string]*Message{
		"ID":  {ID: strings.Repeat("i", MaxIDLength+1)},
		"Key": {ID: "key", Key: strings.Repeat("k", MaxKeyLength+1)},
	} {
		t.Run(field, func(t *testing.T) {
			before := q.log.LastSeq()
			_, err := q.Send(context.Background(), m)
			require.ErrorIs(t, err, ErrInvalidMessage)
			assert.Contains(t, err.Error(), field)
			results, err := q.SendBatch(context.Background(), []*Message{{ID: "fine-" + field}, m})
			require.ErrorIs(t, err, ErrInvalidMessage)
			assert.Empty(t, results, "a batch with a bad message appends nothing")
			_, _, err = q.SendHalf(context.Background(), m)
			require.ErrorIs(t, err, ErrInvalidMessage)
			assert.Equal(t, before, q.log.LastSeq(), "nothing appended")
			if q.dedup != nil {
				e, _, _ := q.dedup.counts()
				assert.Equal(t, 1, e, "nothing remembered but the first message's ID")
			}
		})
	}
	require.NoError(t, q.Close())
	q = consumerQueue(t, fs, nil)
	defer q.Close()
	var ids []string
	for _, s := range readBack(t, q) {
		ids = append(ids, s.Msg.ID)
	}
	assert.Equal(t, []string{ok}, ids)
}
