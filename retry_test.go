package zeroloss

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// groupFloor returns the group's floor as the ledger (the log) has it.
func groupFloor(t *testing.T, q *Queue, name string) uint64 {
	t.Helper()
	g, err := q.groupByName(name)
	require.NoError(t, err)
	q.ledger.mu.Lock()
	defer q.ledger.mu.Unlock()
	return q.ledger.groups[g.id].floor
}

func TestRetriesMoveToTheRetryStreamAndDoNotPinTheGroup(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	q := consumerQueue(t, fs, clock)
	ids := sendN(t, q, "m", 3)
	c, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Minute, Backoff: []time.Duration{time.Second, 10 * time.Second}})
	require.NoError(t, err)

	d := receive(t, c)
	require.Equal(t, ids[0], d.Message.ID)
	first := d.Seq
	// A first failure waits in memory, at its position.
	require.NoError(t, d.Nack(0))
	assert.Equal(t, 0, q.GroupStats()[0].Retrying)
	for _, want := range ids[1:] { // the others go ahead meanwhile
		d := receive(t, c)
		require.Equal(t, want, d.Message.ID)
		require.NoError(t, d.Ack())
	}
	clock.Advance(time.Second)
	d = receive(t, c)
	require.Equal(t, ids[0], d.Message.ID)
	require.Equal(t, 2, d.Attempt)
	// The ack records so far name the first message's position as the floor.
	require.NoError(t, q.flushMarks(context.Background()))
	assert.Equal(t, first, groupFloor(t, q, "g"))

	// A failed redelivery moves it to the retry stream: its position is
	// acked and the floor moves past every message.
	require.NoError(t, d.Nack(0))
	st := q.GroupStats()[0]
	assert.Equal(t, 1, st.Retrying)
	assert.Equal(t, 1, st.Waiting)
	require.NoError(t, q.flushMarks(context.Background()))
	assert.Greater(t, groupFloor(t, q, "g"), first+2, "the retry does not pin the group")

	// It survives a restart with its due time and attempt count.
	require.NoError(t, q.Close())
	q = consumerQueue(t, fs, clock)
	defer q.Close()
	c, err = q.Consumer("g", &ConsumerOptions{AckTimeout: time.Minute, Backoff: []time.Duration{time.Second, 10 * time.Second}})
	require.NoError(t, err)
	clock.Advance(9 * time.Second)
	nothing(t, c)
	clock.Advance(time.Second)
	d = receive(t, c)
	assert.Equal(t, ids[0], d.Message.ID)
	assert.Equal(t, first, d.Seq, "a retry keeps the message's seq")
	assert.Equal(t, 3, d.Attempt)
	require.NoError(t, d.Ack())
	nothing(t, c)
	clock.Advance(time.Hour)
	nothing(t, c)

	// And once acked from the retry stream, it stays acked after a restart.
	require.NoError(t, q.Close())
	q = consumerQueue(t, fs, clock)
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	nothing(t, c)
	assert.Equal(t, 0, q.GroupStats()[0].Retrying)
}

func TestRetryDeliveredBeforeACrashComesBackAtOnce(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	q := consumerQueue(t, fs, clock)
	opts := &ConsumerOptions{AckTimeout: time.Minute, Backoff: []time.Duration{time.Second}}
	c, err := q.Consumer("g", opts)
	require.NoError(t, err)
	sendN(t, q, "m", 1)
	for i := 0; i < 2; i++ {
		require.NoError(t, receive(t, c).Nack(0))
		clock.Advance(time.Second)
	}
	d := receive(t, c) // from the retry stream
	require.Equal(t, 3, d.Attempt)
	require.NoError(t, q.flushMarks(context.Background()))
	fs.Crash(vfs.DropUnsynced, nil)

	q = consumerQueue(t, fs, clock)
	defer q.Close()
	c, err = q.Consumer("g", opts)
	require.NoError(t, err)
	d = receive(t, c)
	assert.Equal(t, 4, d.Attempt, "the delivery before the crash is counted")
}

func TestDelayedMessagesDoNotPinTheGroup(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	q := consumerQueue(t, fs, clock)
	defer q.Close()
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	later, err := q.Send(context.Background(), &Message{ID: "later", Body: []byte("x"), DeliverAt: clock.Now().Add(time.Hour)})
	require.NoError(t, err)
	ids := sendN(t, q, "now", 2)
	for _, want := range ids {
		d := receive(t, c)
		require.Equal(t, want, d.Message.ID)
		require.NoError(t, d.Ack())
	}
	require.NoError(t, q.flushMarks(context.Background()))
	assert.Greater(t, groupFloor(t, q, "g"), later.Seq+2, "floor past the delayed message and the rest")
	assert.Equal(t, 1, q.GroupStats()[0].Retrying)
	clock.Advance(time.Hour)
	d := receive(t, c)
	assert.Equal(t, "later", d.Message.ID)
	assert.Equal(t, 1, d.Attempt)
}

func TestDeadLettersRedriveAndPurge(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	q := consumerQueue(t, fs, clock)
	opts := &ConsumerOptions{AckTimeout: time.Minute, MaxDeliveries: 2, Backoff: []time.Duration{time.Second}}
	c, err := q.Consumer("g", opts)
	require.NoError(t, err)
	ids := sendN(t, q, "m", 2)
	for round := 0; round < 2; round++ {
		for range ids {
			require.NoError(t, receive(t, c).Nack(0))
		}
		clock.Advance(time.Second)
	}
	nothing(t, c)
	dead, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, 2)
	assert.Equal(t, ids[0], dead[0].Message.ID)
	assert.Equal(t, 2, dead[0].Attempts)
	assert.Equal(t, "nacked on the last allowed delivery", dead[0].Reason)

	// Re-drive the first: delivered again as new, and gone from the dead
	// letters, also after a restart.
	n, err := q.RedriveDeadLetters(context.Background(), "g", dead[0].Pos)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, q.Close())
	q = consumerQueue(t, fs, clock)
	c, err = q.Consumer("g", opts)
	require.NoError(t, err)
	d := receive(t, c)
	assert.Equal(t, ids[0], d.Message.ID)
	assert.Equal(t, 1, d.Attempt)
	assert.Equal(t, bodyFor(ids[0]), d.Message.Body)
	require.NoError(t, d.Ack())
	nothing(t, c)
	left, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, left, 1)
	assert.Equal(t, ids[1], left[0].Message.ID)

	// Purge the other.
	n, err = q.PurgeDeadLetters(context.Background(), "g")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	require.NoError(t, q.Close())
	q = consumerQueue(t, fs, clock)
	defer q.Close()
	left, err = q.DeadLetters("g")
	require.NoError(t, err)
	assert.Empty(t, left)
	_, err = q.DeadLetters("nope")
	assert.ErrorIs(t, err, ErrInvalidOptions)
}

// TestRetentionKeepsDiskBounded is the retention run: 10x SegmentSize
// produced and consumed, 1% of the messages always failing into the retry
// stream and then the dead letters; the disk stays within a few segments, and
// after a restart the dead letters and the group are intact.
func TestRetentionKeepsDiskBounded(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	const segment = 64 << 10
	open := func() *Queue {
		q, err := Open("/q", &Options{SegmentSize: segment, MaxMessageSize: 4 << 10, fs: fs, now: clock.Now})
		require.NoError(t, err)
		return q
	}
	q := open()
	opts := &ConsumerOptions{AckTimeout: time.Minute, MaxDeliveries: 3, Backoff: []time.Duration{time.Second}}
	c, err := q.Consumer("g", opts)
	require.NoError(t, err)
	ctx := context.Background()
	body := make([]byte, 512)
	total := 10 * segment / len(body)
	failing := map[string]bool{}
	maxSegments := 0
	for i := 0; i < total; i++ {
		id := fmt.Sprintf("m-%05d", i)
		if i%100 == 7 {
			failing[id] = true
		}
		_, err := q.Send(ctx, &Message{ID: id, Body: body})
		require.NoError(t, err)
		d := receive(t, c)
		if failing[d.Message.ID] {
			require.NoError(t, d.Nack(0))
		} else {
			require.NoError(t, d.Ack())
		}
		if i%50 == 0 {
			clock.Advance(time.Second) // failing messages come back among the new
			require.NoError(t, q.flushMarks(ctx))
			require.NoError(t, q.retain())
			maxSegments = max(maxSegments, q.Stats().Segments)
		}
	}
	// Drain the retries.
	for {
		clock.Advance(time.Second)
		ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		d, err := c.Receive(ctx)
		cancel()
		if err != nil {
			break
		}
		if failing[d.Message.ID] {
			require.NoError(t, d.Nack(0))
		} else {
			require.NoError(t, d.Ack())
		}
	}
	require.NoError(t, q.flushMarks(ctx))
	require.NoError(t, q.retain())
	st := q.Stats()
	t.Logf("segments now %d, at most %d; deleted %d; checkpoints %d", st.Segments, maxSegments, st.SegmentsDeleted, st.Checkpoints)
	assert.LessOrEqual(t, maxSegments, 4, "disk stays within a few segments")
	assert.GreaterOrEqual(t, st.SegmentsDeleted, uint64(8))
	dead, err := q.DeadLetters("g")
	require.NoError(t, err)
	assert.Len(t, dead, len(failing), "every failing message is a dead letter")

	require.NoError(t, q.Close())
	q = open()
	defer q.Close()
	dead, err = q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, len(failing), "dead letters survive retention and restart")
	for _, dl := range dead {
		assert.True(t, failing[dl.Message.ID])
		assert.Len(t, dl.Message.Body, len(body))
	}
	c, err = q.Consumer("g", opts)
	require.NoError(t, err)
	nothing(t, c)
	id := "after"
	_, err = q.Send(ctx, &Message{ID: id, Body: body})
	require.NoError(t, err)
	assert.Equal(t, id, receive(t, c).Message.ID)
}

// TestRetentionWaitsForEveryGroup: a segment is not deleted while one group
// still needs a message in it, and the messages a group still needs are all
// there after retention, also after a restart.
func TestRetentionWaitsForEveryGroup(t *testing.T) {
	fs := vfs.NewMem()
	open := func() *Queue {
		q, err := Open("/q", &Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10, fs: fs})
		require.NoError(t, err)
		return q
	}
	q := open()
	fast, err := q.Consumer("fast", nil)
	require.NoError(t, err)
	slow, err := q.Consumer("slow", nil)
	require.NoError(t, err)
	var ids []string
	for i := 0; i < 80; i++ { // about 10 segments
		id := fmt.Sprintf("m-%03d", i)
		_, err := q.Send(context.Background(), &Message{ID: id, Body: make([]byte, 2000)})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.Greater(t, q.Stats().Segments, 5)
	for range ids {
		require.NoError(t, receive(t, fast).Ack())
	}
	require.NoError(t, q.retain())
	assert.Zero(t, q.Stats().SegmentsDeleted, "slow still needs every segment")
	for _, want := range ids[:20] { // slow is done with the first 20 only
		d := receive(t, slow)
		require.Equal(t, want, d.Message.ID)
		require.NoError(t, d.Ack())
	}
	require.NoError(t, q.flushMarks(context.Background()))
	require.NoError(t, q.retain())
	deleted := q.Stats().SegmentsDeleted
	assert.NotZero(t, deleted, "the segments wholly below slow's floor go")
	for _, want := range ids[20:40] {
		d := receive(t, slow)
		require.Equal(t, want, d.Message.ID, "nothing slow still needs was deleted")
		require.NoError(t, d.Ack())
	}
	require.NoError(t, q.Close())
	q = open()
	defer q.Close()
	slow, err = q.Consumer("slow", nil)
	require.NoError(t, err)
	for _, want := range ids[40:] {
		d := receive(t, slow)
		require.Equal(t, want, d.Message.ID, "and after a restart")
		require.NoError(t, d.Ack())
	}
	nothing(t, slow)
}

// A message waiting in the retry stream for hours does not hold back
// retention: the segment holding its retry record is deleted, the
// checkpoint carries it, and it is delivered when due, also after a restart.
func TestLongRetryDoesNotHoldBackRetention(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	open := func() *Queue {
		q, err := Open("/q", &Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10, fs: fs, now: clock.Now})
		require.NoError(t, err)
		return q
	}
	q := open()
	opts := &ConsumerOptions{AckTimeout: time.Minute, Backoff: []time.Duration{time.Second, 2 * time.Hour}}
	c, err := q.Consumer("g", opts)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = q.Send(ctx, &Message{ID: "slow", Body: []byte("retry me")})
	require.NoError(t, err)
	require.NoError(t, receive(t, c).Nack(0))
	clock.Advance(time.Second)
	require.NoError(t, receive(t, c).Nack(0)) // into the retry stream, due in 2h
	for i := 0; i < 40; i++ {
		_, err := q.Send(ctx, &Message{Body: make([]byte, 2000)})
		require.NoError(t, err)
		require.NoError(t, receive(t, c).Ack())
	}
	require.NoError(t, q.flushMarks(ctx))
	require.NoError(t, q.retain())
	deleted := q.Stats().SegmentsDeleted
	require.GreaterOrEqual(t, deleted, uint64(3), "segments after the retry record are deleted too")
	require.NoError(t, q.Close())

	q = open()
	defer q.Close()
	c, err = q.Consumer("g", opts)
	require.NoError(t, err)
	nothing(t, c)
	clock.Advance(2 * time.Hour)
	d := receive(t, c)
	assert.Equal(t, "slow", d.Message.ID)
	assert.Equal(t, []byte("retry me"), d.Message.Body)
	assert.Equal(t, 3, d.Attempt)
}

// A group that stops consuming cannot fill the disk once RetentionBytes is
// set: the oldest segments go anyway, and what the group loses is counted.
func TestRetentionLimitsSkipAStalledGroup(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	const segment = 16 << 10
	open := func(o Options) *Queue {
		o.SegmentSize, o.MaxMessageSize, o.fs, o.now = segment, 4<<10, fs, clock.Now
		q, err := Open("/q", &o)
		require.NoError(t, err)
		return q
	}
	q := open(Options{RetentionBytes: 3 * segment})
	ctx := context.Background()
	stalled, err := q.Consumer("stalled", nil)
	require.NoError(t, err)
	first := receiveAfterSend(t, q, stalled, "m-000") // delivered, never acked
	for i := 1; i < 80; i++ {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("m-%03d", i), Body: make([]byte, 2000)})
		require.NoError(t, err)
	}
	require.NoError(t, q.retain())
	st := q.Stats()
	assert.LessOrEqual(t, st.Segments, 4)
	assert.Greater(t, st.RetentionSkipped, uint64(10), "counted")
	// The group goes on after the cut, and its old delivery is gone.
	d := receive(t, stalled)
	assert.Greater(t, d.Seq, first.Seq+10)
	assert.ErrorIs(t, first.Ack(), nil, "acking a skipped delivery is harmless")
	require.NoError(t, d.Ack())
	require.NoError(t, q.Close())

	// Age limit, with no group at all: the old segments go, the new stay.
	fs2 := vfs.NewMem()
	q, err = Open("/q", &Options{SegmentSize: segment, MaxMessageSize: 4 << 10, fs: fs2, now: clock.Now, RetentionAge: time.Hour})
	require.NoError(t, err)
	defer q.Close()
	for i := 0; i < 30; i++ {
		_, err := q.Send(ctx, &Message{Body: make([]byte, 2000)})
		require.NoError(t, err)
	}
	require.NoError(t, q.retain())
	assert.Zero(t, q.Stats().SegmentsDeleted, "nothing is an hour old yet")
	clock.Advance(2 * time.Hour)
	_, err = q.Send(ctx, &Message{Body: make([]byte, 2000)})
	require.NoError(t, err)
	require.NoError(t, q.retain())
	assert.NotZero(t, q.Stats().SegmentsDeleted)

	_, err = Open(t.TempDir(), &Options{SegmentSize: segment, MaxMessageSize: 4 << 10, RetentionBytes: segment})
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "RetentionBytes")
}

func receiveAfterSend(t *testing.T, q *Queue, c *Consumer, id string) *Delivery {
	t.Helper()
	_, err := q.Send(context.Background(), &Message{ID: id, Body: make([]byte, 2000)})
	require.NoError(t, err)
	d := receive(t, c)
	require.Equal(t, id, d.Message.ID)
	return d
}

// TestFloorIndexMatchesTheLowestOwedPosition checks group.floor, which keeps
// an index of main-stream positions instead of walking pending, against the
// walk: random deliveries in seq order, acks in any order, retries (whose
// positions are not main-stream ones) and acks in flight, enough of them
// out of order for the index to be rebuilt many times.
func TestFloorIndexMatchesTheLowestOwedPosition(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	g := newGroup(nil, 1, "g", selection{}, 1)
	walk := func(acking []uint64) uint64 {
		f := g.cursor
		for pos, u := range g.pending {
			if pos < f && pos == u.seq && !slices.Contains(acking, pos) {
				f = pos
			}
		}
		return f
	}
	next := uint64(1_000_000) // retry record positions, above every message seq
	checks := 0
	for range 20000 {
		switch r := rng.IntN(10); {
		case r < 4: // a first delivery
			g.owe(&unacked{pos: g.cursor, seq: g.cursor})
			g.cursor++
		case r < 7 && len(g.pending) > 0: // an ack, usually not of the oldest
			for pos := range g.pending {
				delete(g.pending, pos)
				break
			}
		case r < 8 && len(g.pending) > 0: // a message moves to the retry stream
			for pos, u := range g.pending {
				if pos == u.seq {
					delete(g.pending, pos)
					u.pos, next = next, next+1
					g.pending[u.pos] = u
				}
				break
			}
		default: // an ack record: its floor, with some positions being acked
			var acking []uint64
			for pos := range g.pending {
				if rng.IntN(3) == 0 {
					acking = append(acking, pos)
				}
			}
			require.Equal(t, walk(acking), g.floor(acking))
			require.LessOrEqual(t, len(g.order), 2*len(g.pending)+64, "the index stays bounded")
			checks++
		}
	}
	require.Greater(t, checks, 1000)
}

// TestConcurrentRedriveOfOneDeadLetterRedrivesItOnce: many goroutines
// redrive (or purge) the same dead letter at once; it must come back at most
// once, or the message would be held by two consumers at a time.
func TestConcurrentRedriveOfOneDeadLetterRedrivesItOnce(t *testing.T) {
	for _, purgers := range []int{0, 4} {
		t.Run(fmt.Sprintf("purgers=%d", purgers), func(t *testing.T) {
			clock, q, c := clockedConsumer(t, 1, &ConsumerOptions{MaxDeliveries: 1, AckTimeout: time.Minute})
			require.NoError(t, receive(t, c).Nack(0)) // MaxDeliveries 1: dead letter
			dead, err := q.DeadLetters("g")
			require.NoError(t, err)
			require.Len(t, dead, 1)

			const redrivers = 16
			start := make(chan struct{})
			var redriven, purged atomic.Int64
			var wg sync.WaitGroup
			for i := 0; i < redrivers+purgers; i++ {
				wg.Add(1)
				go func(purge bool) {
					defer wg.Done()
					<-start
					var n int
					var err error
					if purge {
						n, err = q.PurgeDeadLetters(context.Background(), "g", dead[0].Pos)
						purged.Add(int64(n))
					} else {
						n, err = q.RedriveDeadLetters(context.Background(), "g", dead[0].Pos)
						redriven.Add(int64(n))
					}
					assert.NoError(t, err)
				}(i >= redrivers)
			}
			close(start)
			wg.Wait()
			require.Equal(t, int64(1), redriven.Load()+purged.Load(), "the dead letter left the dead letters once")
			left, err := q.DeadLetters("g")
			require.NoError(t, err)
			assert.Empty(t, left)

			// Count deliveries: one if it was redriven, none if purged.
			clock.Advance(time.Second)
			deliveries := 0
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				d, err := c.Receive(ctx)
				cancel()
				if err != nil {
					require.ErrorIs(t, err, context.DeadlineExceeded)
					break
				}
				require.Equal(t, dead[0].Message.ID, d.Message.ID)
				deliveries++
			}
			assert.Equal(t, int(redriven.Load()), deliveries, "the message is held by one consumer at a time")
			assert.Equal(t, int(redriven.Load()), q.GroupStats()[0].Retrying)
		})
	}
}
