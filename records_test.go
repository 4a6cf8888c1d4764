package zeroloss

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// Tests of the records the queue writes about the messages it holds
// (acks carrying attempt counts, retries, dead letters): each must fit, fail
// alone, and leave nothing lost when its write fails.

// fillSegment sends messages of decreasing sizes while the disk is full,
// until even a small one no longer fits in the active segment: after it, any
// record of more than about 40 bytes needs a new segment.
func fillSegment(t *testing.T, q *Queue, prefix string) {
	t.Helper()
	for _, size := range []int{900, 200, 40, 4} {
		for i := 0; ; i++ {
			_, err := q.Send(context.Background(), &Message{ID: fmt.Sprintf("%s%d.%d", prefix, size, i), Body: make([]byte, size)})
			if err != nil {
				require.ErrorIs(t, err, ErrDiskFull)
				break
			}
			require.Less(t, i, 100, "the active segment never filled")
		}
	}
}

// TestFailedMarkWriteKeepsAttemptCounts: the ack record that carries a
// group's attempt counts and delivered mark fails on a full disk (a segment
// roll), without poisoning the queue; the counts must not be lost with it,
// or after a restart the messages come back with their attempts reset.
func TestFailedMarkWriteKeepsAttemptCounts(t *testing.T) {
	mem := vfs.NewMem()
	fault := vfs.NewFault(mem)
	clock := newFakeClock()
	opts := &Options{SegmentSize: 8192, MaxMessageSize: 1024, fs: fault, now: clock.Now}
	q, err := Open("/q", opts)
	require.NoError(t, err)
	copts := &ConsumerOptions{AckTimeout: time.Minute, MaxDeliveries: 10, Backoff: []time.Duration{time.Second}}
	c, err := q.Consumer("g", copts)
	require.NoError(t, err)
	ids := sendN(t, q, "m", 20)
	for range ids {
		require.NoError(t, receive(t, c).Nack(time.Second)) // failed first delivery: waits in memory
	}

	fault.SetDiskFull(true)
	fillSegment(t, q, "fill")
	clock.Advance(time.Second)
	for range ids {
		d := receive(t, c)
		require.Equal(t, 2, d.Attempt)
	}
	err = q.flushMarks(context.Background())
	require.ErrorIs(t, err, ErrDiskFull, "the ack record carrying the counts needs a new segment")
	require.NoError(t, q.Err(), "a full disk does not poison the queue")

	fault.SetDiskFull(false)
	require.NoError(t, q.Close())
	q, err = Open("/q", opts)
	require.NoError(t, err)
	defer q.Close()
	c, err = q.Consumer("g", copts)
	require.NoError(t, err)
	seen := map[string]int{}
	for len(seen) < len(ids) {
		d := receive(t, c)
		if strings.HasPrefix(d.Message.ID, "m-") {
			seen[d.Message.ID] = d.Attempt
		}
		require.NoError(t, d.Ack())
	}
	for _, id := range ids {
		require.Equal(t, 3, seen[id], "%s: its second delivery was counted before the restart", id)
	}
}

// waitUntil spins (yielding) until cond holds, failing the test after 5s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		runtime.Gosched()
	}
}

// TestOversizedRecordFailsAlone: a record that cannot fit in a segment
// joins the pending batch with innocent Sends; it must fail alone, with
// ErrRecordTooLarge, and the Sends must succeed.
func TestOversizedRecordFailsAlone(t *testing.T) {
	q := memQueue(t, vfs.NewMem(), Options{SegmentSize: 16 << 10, MaxMessageSize: 1024})
	defer q.Close()

	q.mu.Lock()
	q.committing = true // hold the batch back until everyone joined it
	q.mu.Unlock()
	const sends = 5
	errs := make(chan error, sends)
	for i := 0; i < sends; i++ {
		go func() {
			res, err := q.Send(context.Background(), &Message{ID: fmt.Sprintf("innocent-%d", i), Body: []byte("x")})
			if err == nil && res.Status != SendOK {
				err = fmt.Errorf("status %v", res.Status)
			}
			errs <- err
		}()
	}
	waitUntil(t, "the Sends joined the batch", func() bool { return q.pendingLive.Load() == sends })
	big := make(chan error, 1)
	go func() {
		_, err := q.appendRecord(context.Background(), record.TypeNoop, internalStream, make([]byte, 16<<10))
		big <- err
	}()
	waitUntil(t, "the oversized record joined the batch or failed", func() bool {
		return q.pendingLive.Load() == sends+1 || len(big) == 1
	})
	q.mu.Lock()
	q.committing = false
	q.mu.Unlock()
	q.committerWaiting.Store(true)
	q.nudge()

	for i := 0; i < sends; i++ {
		require.NoError(t, <-errs, "a Send that shared a batch with the oversized record")
	}
	require.ErrorIs(t, <-big, ErrRecordTooLarge)
	require.NoError(t, q.Err())
}

// smallestSegment returns the smallest SegmentSize Open accepts with
// MaxMessageSize max.
func smallestSegment(t *testing.T, max int) int64 {
	t.Helper()
	for size := int64(max) + segmentOverhead; size < int64(max)+segmentOverhead+4096; size++ {
		o := Options{SegmentSize: size, MaxMessageSize: max}
		if _, err := o.withDefaults(); err == nil {
			return size
		}
	}
	t.Fatal("no SegmentSize accepted")
	return 0
}

// TestMessageOfMaxSizeNeverWedgesItsGroup: with the smallest segments the
// options allow, a message of exactly MaxMessageSize goes through every
// record the queue writes about it (retry, dead letter, redrive, and a
// transaction's commit) and its group goes on delivering, across a restart.
func TestMessageOfMaxSizeNeverWedgesItsGroup(t *testing.T) {
	const max = 8192
	clock := newFakeClock()
	opts := &Options{SegmentSize: smallestSegment(t, max), MaxMessageSize: max, fs: vfs.NewMem(), now: clock.Now}
	q, err := Open("/q", opts)
	require.NoError(t, err)
	big := &Message{ID: "big", Headers: map[string]string{}, Body: make([]byte, max)}
	big.Body = big.Body[:max-frameSize(&record.Message{ID: big.ID})]
	require.Equal(t, max, frameSize(&record.Message{ID: big.ID, Body: big.Body}))
	_, err = q.Send(context.Background(), big)
	require.NoError(t, err)
	half, _, err := q.SendHalf(context.Background(), &Message{ID: "half", Body: big.Body[:len(big.Body)-1]})
	require.NoError(t, err)
	_, err = half.Commit(context.Background())
	require.NoError(t, err, "the commit of a half of MaxMessageSize carries the half's seq too")
	sendN(t, q, "after", 1)

	c, err := q.Consumer("g", &ConsumerOptions{MaxDeliveries: 3, Backoff: []time.Duration{time.Second}})
	require.NoError(t, err)
	d := receive(t, c)
	require.Equal(t, "big", d.Message.ID)
	require.NoError(t, d.Nack(0))
	clock.Advance(time.Second)
	d = receive(t, c)
	require.Equal(t, "big", d.Message.ID)
	require.NoError(t, d.Nack(0), "its second failure moves it to the retry stream")
	clock.Advance(time.Second)
	d = receive(t, c)
	require.Equal(t, "big", d.Message.ID)
	require.Equal(t, 3, d.Attempt)
	require.NoError(t, d.Nack(0), "its last failure moves it to the dead letters")
	for _, want := range []string{"half", "after-000"} {
		d = receive(t, c)
		require.Equal(t, want, d.Message.ID, "the group goes on")
		require.NoError(t, d.Ack())
	}

	require.NoError(t, q.Close())
	q, err = Open("/q", opts)
	require.NoError(t, err)
	defer q.Close()
	dls, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, big.Body, dls[0].Message.Body)
	n, err := q.RedriveDeadLetters(context.Background(), "g")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	d = receive(t, c)
	require.Equal(t, "big", d.Message.ID)
	require.NoError(t, d.Ack())
}

// TestAckOfADeadLetteredDeliveryIsExpired: a delivery whose ack deadline
// passed on its last allowed attempt moves to the dead letters; its late
// Ack must say so (ErrDeliveryExpired), not return nil as if it were acked.
func TestAckOfADeadLetteredDeliveryIsExpired(t *testing.T) {
	clock, q, c := clockedConsumer(t, 2, &ConsumerOptions{AckTimeout: 10 * time.Second, MaxDeliveries: 1})
	d := receive(t, c)
	clock.Advance(time.Minute)
	next := receive(t, c) // moves the first message to the dead letters on its way
	require.NoError(t, next.Ack())
	dls, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.ErrorIs(t, d.Ack(), ErrDeliveryExpired, "the message is a dead letter, not acked")
	require.ErrorIs(t, d.Nack(0), ErrDeliveryExpired)
	require.NoError(t, next.Ack(), "acking an acked delivery again is fine")
}

// TestDelayedMessageDeliveredKeepsItsAttemptWhenTheClockGoesBack: a message
// whose DeliverAt had passed when it was read is delivered at its main-stream
// position; if the clock then goes back before its DeliverAt, a restart must
// still count that delivery, not take it for a delayed message never read.
func TestDelayedMessageDeliveredKeepsItsAttemptWhenTheClockGoesBack(t *testing.T) {
	clock := newFakeClock()
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, clock)
	_, err := q.Send(context.Background(), &Message{ID: "later", Body: []byte("x"), DeliverAt: clock.Now().Add(10 * time.Second)})
	require.NoError(t, err)
	clock.Advance(20 * time.Second)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	d := receive(t, c)
	require.Equal(t, 1, d.Attempt)
	require.NoError(t, q.flushMarks(context.Background()))
	clock.Advance(-30 * time.Second) // its DeliverAt is ahead again
	require.NoError(t, q.Close())

	q = consumerQueue(t, fs, clock)
	defer q.Close()
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	clock.Advance(time.Minute)
	d = receive(t, c)
	require.Equal(t, "later", d.Message.ID)
	require.Equal(t, 2, d.Attempt, "its first delivery was counted before the restart")
}
