package zeroloss

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// A message with a future DeliverAt moves to the retry stream when its group
// first reads it. If the group's delivered mark reaches the log before that
// move (the mark flush then a crash, or a clean Close whose mark flush runs
// before the move gets ErrClosed), a restart must still know the message was
// never delivered: its first delivery reports Attempt 1 and MaxDeliveries 1
// does not dead-letter it. And a delayed message that was delivered counts
// that delivery even if the clock went back across the restart.
func TestDelayedMessageReadButNotMovedIsNotCountedAsDelivered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stop    func(t *testing.T, q *Queue, c *Consumer, fs *vfs.MemFS) // after the read, before the move
		reopen  time.Duration                                            // clock change across the restart
		attempt int                                                      // of its next delivery
	}{
		{name: "mark flushed, then a crash", reopen: 2 * time.Hour, attempt: 1,
			stop: func(t *testing.T, q *Queue, c *Consumer, fs *vfs.MemFS) {
				require.NoError(t, q.flushMarks(context.Background()))
				fs.Crash(vfs.DropUnsynced, nil)
				_ = q.Close()
			}},
		{name: "clean Close", reopen: 2 * time.Hour, attempt: 1,
			stop: func(t *testing.T, q *Queue, c *Consumer, fs *vfs.MemFS) {
				require.NoError(t, q.Close())
			}},
		{name: "clean Close, reopened before DeliverAt", reopen: 10 * time.Minute, attempt: 1,
			stop: func(t *testing.T, q *Queue, c *Consumer, fs *vfs.MemFS) {
				require.NoError(t, q.Close())
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			fs := vfs.NewMem()
			q := consumerQueue(t, fs, clock)
			deliverAt := clock.Now().Add(time.Hour)
			_, err := q.Send(context.Background(), &Message{ID: "later", Body: []byte("l"), DeliverAt: deliverAt})
			require.NoError(t, err)
			opts := &ConsumerOptions{MaxDeliveries: 1}
			c, err := q.Consumer("g", opts)
			require.NoError(t, err)

			// What Receive does, stopped between reading the message and
			// writing its move.
			c.g.mu.Lock()
			d, moves, _, err := c.next(clock.Now())
			c.g.mu.Unlock()
			require.NoError(t, err)
			require.Nil(t, d)
			require.Len(t, moves, 1, "the delayed message is to move to the retry stream")
			tc.stop(t, q, c, fs)
			require.ErrorIs(t, c.moveAll(context.Background(), moves), ErrClosed, "the move comes too late")

			clock.Advance(tc.reopen)
			q = consumerQueue(t, fs, clock)
			defer q.Close()
			c, err = q.Consumer("g", opts)
			require.NoError(t, err)
			if clock.Now().Before(deliverAt) {
				nothing(t, c)
				clock.Advance(deliverAt.Sub(clock.Now()))
			}
			d = receive(t, c)
			require.Equal(t, "later", d.Message.ID, "delivered, not dead-lettered")
			require.Equal(t, tc.attempt, d.Attempt)
			require.NoError(t, d.Ack())
			dead, err := q.DeadLetters("g")
			require.NoError(t, err)
			require.Empty(t, dead)
		})
	}
}

// A delayed message delivered (its DeliverAt had passed when it was read),
// not acked, then a crash, and the clock is back before its DeliverAt on the
// restart: the delivery still counts.
func TestDelayedMessageDeliveredCountsAcrossAClockJumpBack(t *testing.T) {
	clock := newFakeClock()
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, clock)
	_, err := q.Send(context.Background(), &Message{ID: "soon", Body: []byte("s"), DeliverAt: clock.Now().Add(time.Second)})
	require.NoError(t, err)
	opts := &ConsumerOptions{MaxDeliveries: 2, AckTimeout: time.Minute}
	c, err := q.Consumer("g", opts)
	require.NoError(t, err)
	clock.Advance(2 * time.Second)
	d := receive(t, c)
	require.Equal(t, 1, d.Attempt)
	require.NoError(t, q.flushMarks(context.Background()))
	fs.Crash(vfs.DropUnsynced, nil)
	_ = q.Close()

	clock.Advance(-time.Hour)
	q = consumerQueue(t, fs, clock)
	defer q.Close()
	c, err = q.Consumer("g", opts)
	require.NoError(t, err)
	d = receive(t, c)
	require.Equal(t, "soon", d.Message.ID, "delivered and not acked before the crash: due again at once")
	require.Equal(t, 2, d.Attempt)
}

// A delayed message whose move failed waits at its main-stream position and
// is delivered from there: that delivery counts across a crash, over the
// count of 0 its read wrote.
func TestDelayedMessageNotMovedThenDeliveredCountsItsDelivery(t *testing.T) {
	clock := newFakeClock()
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, clock)
	_, err := q.Send(context.Background(), &Message{ID: "later", Body: []byte("l"), DeliverAt: clock.Now().Add(time.Hour)})
	require.NoError(t, err)
	opts := &ConsumerOptions{MaxDeliveries: 2, AckTimeout: time.Minute}
	c, err := q.Consumer("g", opts)
	require.NoError(t, err)
	c.g.mu.Lock()
	_, moves, _, err := c.next(clock.Now())
	c.g.mu.Unlock()
	require.NoError(t, err)
	require.Len(t, moves, 1)
	require.NoError(t, q.flushMarks(context.Background())) // the mark and the count of 0
	c.g.release(moves)                                     // as if its record could not be written
	clock.Advance(time.Hour)
	d := receive(t, c)
	require.Equal(t, 1, d.Attempt)
	require.NoError(t, q.flushMarks(context.Background()))
	fs.Crash(vfs.DropUnsynced, nil)
	_ = q.Close()

	q = consumerQueue(t, fs, clock)
	defer q.Close()
	c, err = q.Consumer("g", opts)
	require.NoError(t, err)
	d = receive(t, c)
	require.Equal(t, "later", d.Message.ID)
	require.Equal(t, 2, d.Attempt, "its delivery before the crash counts")
}
