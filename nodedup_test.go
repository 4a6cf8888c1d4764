package zeroloss

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestNoDedupOptsOneSendOut: a Send with NoDedup is appended whatever the
// dedup table holds and leaves the table as it was, in this process and
// after a restart (the flag rides on the message record); sends of the same
// ID without it are deduplicated as before.
func TestNoDedupOptsOneSendOut(t *testing.T) {
	ctx := context.Background()
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	send := func(m *Message) SendResult {
		t.Helper()
		res, err := q.Send(ctx, m)
		require.NoError(t, err)
		require.Equal(t, SendOK, res.Status)
		return res
	}

	strict := send(&Message{ID: "order-1", Body: []byte("a")})
	again := send(&Message{ID: "order-1", Body: []byte("b"), NoDedup: true})
	assert.False(t, again.Duplicate, "a NoDedup send of a known ID is appended")
	assert.NotEqual(t, strict.Seq, again.Seq)
	dup := send(&Message{ID: "order-1", Body: []byte("c")})
	assert.True(t, dup.Duplicate, "a plain resend is still deduplicated")
	assert.Equal(t, strict.Seq, dup.Seq, "answered from the first send, not the NoDedup one")

	uuid := send(&Message{ID: "uuid-1", Body: []byte("d"), NoDedup: true})
	uuidAgain := send(&Message{ID: "uuid-1", Body: []byte("e"), NoDedup: true})
	assert.False(t, uuidAgain.Duplicate)
	assert.Greater(t, uuidAgain.Seq, uuid.Seq)

	results, err := q.SendBatch(ctx, []*Message{
		{ID: "batch", Body: []byte("f"), NoDedup: true},
		{ID: "batch", Body: []byte("g"), NoDedup: true},
	})
	require.NoError(t, err)
	require.Len(t, results, 2)
	assert.False(t, results[0].Duplicate || results[1].Duplicate, "one ID twice in a batch, both NoDedup: both appended")
	assert.Equal(t, results[0].Seq+1, results[1].Seq)
	require.NoError(t, q.Close())

	// After a restart the table is rebuilt from the log: the NoDedup
	// records are not in it, the plain one is.
	q = consumerQueue(t, fs, nil)
	defer q.Close()
	plain := send(&Message{ID: "uuid-1", Body: []byte("h")})
	assert.False(t, plain.Duplicate, "an ID only ever sent with NoDedup is not remembered across a restart")
	dup = send(&Message{ID: "order-1", Body: []byte("i")})
	assert.True(t, dup.Duplicate, "the plain send's ID still is")
	assert.Equal(t, strict.Seq, dup.Seq)

	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	var bodies []string
	for range 7 {
		d := receive(t, c)
		assert.False(t, d.Message.NoDedup, "NoDedup is a send-side choice: consumers receive it false")
		bodies = append(bodies, d.Message.ID+":"+string(d.Message.Body))
		require.NoError(t, d.Ack())
	}
	assert.Equal(t, []string{"order-1:a", "order-1:b", "uuid-1:d", "uuid-1:e", "batch:f", "batch:g", "uuid-1:h"}, bodies)
	nothing(t, c)
}

// TestNoDedupHalfCommitClaimsNothing: a committed transactional half sent
// with NoDedup does not answer later Sends of its ID.
func TestNoDedupHalfCommitClaimsNothing(t *testing.T) {
	ctx := context.Background()
	q := txQueue(t, vfs.NewMem(), Options{})
	defer q.Close()
	h, _, err := q.SendHalf(ctx, &Message{ID: "event", Body: []byte("x"), NoDedup: true})
	require.NoError(t, err)
	committed, err := h.Commit(ctx)
	require.NoError(t, err)
	res, err := q.Send(ctx, &Message{ID: "event", Body: []byte("y")})
	require.NoError(t, err)
	assert.False(t, res.Duplicate)
	assert.Greater(t, res.Seq, committed.Seq)
}

// TestProducerRefusesNoDedup: the strict producer's resends rely on the
// queue deduplicating them; a NoDedup message would break that, so it is
// refused, naming the field, and nothing is sent or spooled.
func TestProducerRefusesNoDedup(t *testing.T) {
	q := consumerQueue(t, vfs.NewMem(), nil)
	defer q.Close()
	p := newProducer(t, q, testStrict(vfs.NewMem()))
	defer p.Close()
	_, err := p.Send(context.Background(), &Message{ID: "x", Body: []byte("x"), NoDedup: true})
	require.ErrorIs(t, err, ErrInvalidMessage)
	require.ErrorContains(t, err, "NoDedup")
	assert.Zero(t, p.Spooled())
	assert.Zero(t, q.Stats().Messages)
}
