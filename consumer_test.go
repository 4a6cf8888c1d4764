package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// fakeClock is a settable clock for Options.now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func consumerQueue(t *testing.T, fs vfs.FS, clock *fakeClock) *Queue {
	t.Helper()
	opts := &Options{SegmentSize: 256 << 10, MaxMessageSize: 4 << 10, fs: fs}
	if clock != nil {
		opts.now = clock.Now
	}
	q, err := Open("/q", opts)
	require.NoError(t, err)
	return q
}

// clockedConsumer opens a queue on a fake clock, sends n messages (m-000...)
// and returns a consumer of group "g" with opts; the queue closes with t.
func clockedConsumer(t *testing.T, n int, opts *ConsumerOptions) (*fakeClock, *Queue, *Consumer) {
	t.Helper()
	clock := newFakeClock()
	q := consumerQueue(t, vfs.NewMem(), clock)
	t.Cleanup(func() { q.Close() })
	sendN(t, q, "m", n)
	c, err := q.Consumer("g", opts)
	require.NoError(t, err)
	return clock, q, c
}

func sendN(t *testing.T, q *Queue, prefix string, n int) []string {
	t.Helper()
	var ids []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s-%03d", prefix, i)
		res, err := q.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)})
		require.NoError(t, err)
		require.Equal(t, SendOK, res.Status)
		ids = append(ids, id)
	}
	return ids
}

// nothing asserts that Receive has nothing to give right now.
func nothing(t *testing.T, c *Consumer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	d, err := c.Receive(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "unexpected delivery %+v", d)
}

func receive(t *testing.T, c *Consumer) *Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := c.Receive(ctx)
	require.NoError(t, err)
	return d
}

func TestTwoGroupsEachSeeEveryMessageOnceInOrder(t *testing.T) {
	q := consumerQueue(t, vfs.NewMem(), nil)
	defer q.Close()
	ids := sendN(t, q, "m", 50)
	for _, name := range []string{"billing", "audit"} {
		c, err := q.Consumer(name, nil)
		require.NoError(t, err)
		for i, id := range ids {
			d := receive(t, c)
			require.Equal(t, id, d.Message.ID, "group %s, message %d: first deliveries follow log order", name, i)
			require.Equal(t, bodyFor(id), d.Message.Body)
			require.Equal(t, 1, d.Attempt)
			require.NoError(t, d.Ack())
		}
		nothing(t, c)
	}
	assert.Equal(t, []string{"audit", "billing"}, q.Groups())
	// A message sent now reaches a waiting Receive.
	c, err := q.Consumer("billing", nil)
	require.NoError(t, err)
	got := make(chan string, 1)
	go func() {
		d, err := c.Receive(context.Background())
		if err == nil {
			got <- d.Message.ID
			_ = d.Ack()
		}
	}()
	sendN(t, q, "late", 1)
	select {
	case id := <-got:
		assert.Equal(t, "late-000", id)
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked Receive was not woken by a new message")
	}
}

func TestCompetingConsumersShareWithoutOverlap(t *testing.T) {
	q := consumerQueue(t, vfs.NewMem(), nil)
	defer q.Close()
	ids := sendN(t, q, "m", 200)
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var total atomic.Int64
	for i := 0; i < 4; i++ {
		c, err := q.Consumer("workers", &ConsumerOptions{AckTimeout: time.Hour})
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for total.Load() < int64(len(ids)) {
				d, err := c.Receive(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				seen[d.Message.ID]++
				mu.Unlock()
				if !assert.NoError(t, d.Ack()) {
					return
				}
				if total.Add(1) == int64(len(ids)) {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	require.Len(t, seen, len(ids))
	for id, n := range seen {
		require.Equal(t, 1, n, "%s delivered %d times while its deadline was live", id, n)
	}
}

func TestAckTimeoutBackoffAndDeadLetterWithFakeClock(t *testing.T) {
	backoff := []time.Duration{time.Second, 5 * time.Second, time.Minute}
	clock, q, c := clockedConsumer(t, 1, &ConsumerOptions{AckTimeout: 10 * time.Second, MaxDeliveries: 3, Backoff: backoff})

	d := receive(t, c)
	require.Equal(t, 1, d.Attempt)
	first := d.FirstDelivered
	nothing(t, c) // held until its deadline

	clock.Advance(10 * time.Second) // ack deadline passes: failed delivery 1
	nothing(t, c)                   // waits backoff[0]
	clock.Advance(time.Second)
	d = receive(t, c)
	require.Equal(t, 2, d.Attempt)
	require.Equal(t, first, d.FirstDelivered)
	require.ErrorIs(t, func() error {
		clock.Advance(10 * time.Second) // deadline of attempt 2 passes
		nothing(t, c)
		return d.Extend(time.Minute)
	}(), ErrDeliveryExpired, "a delivery past its deadline cannot be extended")

	clock.Advance(4 * time.Second)
	nothing(t, c) // backoff[1] is 5s: one more second to go
	clock.Advance(time.Second)
	d = receive(t, c)
	require.Equal(t, 3, d.Attempt)
	require.NoError(t, d.Nack(0), "the last allowed delivery fails: dead letter")
	nothing(t, c)
	clock.Advance(time.Hour)
	nothing(t, c)

	dls, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dls, 1)
	assert.Equal(t, "m-000", dls[0].Message.ID)
	assert.Equal(t, bodyFor("m-000"), dls[0].Message.Body)
	assert.Equal(t, 3, dls[0].Attempts)
	assert.Contains(t, dls[0].Reason, "last allowed delivery")
}

func TestNackDelayAndExtend(t *testing.T) {
	clock, _, c := clockedConsumer(t, 2, &ConsumerOptions{AckTimeout: 10 * time.Second})
	d := receive(t, c)
	require.Equal(t, "m-000", d.Message.ID)
	require.NoError(t, d.Nack(30*time.Second))
	require.ErrorIs(t, d.Nack(0), ErrDeliveryExpired, "a nacked delivery is no longer held")
	d2 := receive(t, c)
	require.Equal(t, "m-001", d2.Message.ID, "a nacked message does not block the next one")
	clock.Advance(9 * time.Second)
	require.NoError(t, d2.Extend(time.Minute))
	clock.Advance(29 * time.Second) // m-001's original deadline is long past
	d = receive(t, c)
	require.Equal(t, "m-000", d.Message.ID, "redelivered after the nack's delay")
	require.Equal(t, 2, d.Attempt)
	nothing(t, c) // m-001 is still held: Extend moved its deadline
	require.NoError(t, d2.Ack())
	require.NoError(t, d.Ack())
	clock.Advance(time.Hour)
	nothing(t, c)
}

func TestAcksSurviveRestartAndUnackedComeBack(t *testing.T) {
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	ids := sendN(t, q, "m", 10)
	c, err := q.Consumer("g", &ConsumerOptions{MaxDeliveries: 3})
	require.NoError(t, err)
	var acked []string
	for i := range ids {
		d := receive(t, c)
		if i%3 == 0 {
			continue // delivered, never acked
		}
		require.NoError(t, d.Ack())
		acked = append(acked, d.Message.ID)
	}
	require.NoError(t, q.Close())

	for restart := 1; restart <= 3; restart++ {
		q = consumerQueue(t, fs, nil)
		c, err = q.Consumer("g", &ConsumerOptions{MaxDeliveries: 3})
		require.NoError(t, err)
		var got []string
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			d, err := c.Receive(ctx)
			cancel()
			if err != nil {
				require.ErrorIs(t, err, context.DeadlineExceeded)
				break
			}
			got = append(got, d.Message.ID)
			require.Equal(t, restart+1, d.Attempt, "%s: attempts count across restarts", d.Message.ID)
			// Never acked: this consumer "crashes" again.
		}
		if restart < 3 {
			assert.ElementsMatch(t, []string{"m-000", "m-003", "m-006", "m-009"}, got,
				"restart %d: every unacked message comes back, no acked one does", restart)
		} else {
			assert.Empty(t, got, "after MaxDeliveries the messages are dead letters, not deliveries")
			dls, err := q.DeadLetters("g")
			require.NoError(t, err)
			assert.Len(t, dls, 4)
		}
		require.NoError(t, q.Close())
	}
}

func TestStartLatest(t *testing.T) {
	q := consumerQueue(t, vfs.NewMem(), nil)
	defer q.Close()
	sendN(t, q, "old", 3)
	c, err := q.Consumer("fresh", &ConsumerOptions{Start: StartLatest})
	require.NoError(t, err)
	nothing(t, c)
	sendN(t, q, "new", 1)
	d := receive(t, c)
	assert.Equal(t, "new-000", d.Message.ID)
}

func TestConsumeAcksOnlyAfterTheHandlerSucceeds(t *testing.T) {
	clock := newFakeClock()
	q := consumerQueue(t, vfs.NewMem(), clock)
	defer q.Close()
	ids := sendN(t, q, "m", 20)
	c, err := q.Consumer("g", &ConsumerOptions{Concurrency: 4, Backoff: []time.Duration{time.Second}})
	require.NoError(t, err)

	var mu sync.Mutex
	calls := map[string]int{}
	done := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- c.Consume(ctx, func(_ context.Context, d *Delivery) error {
			mu.Lock()
			calls[d.Message.ID]++
			n := calls[d.Message.ID]
			mu.Unlock()
			switch {
			case d.Message.ID == "m-003" && n == 1:
				return errors.New("transient")
			case d.Message.ID == "m-007" && n == 1:
				panic("boom")
			}
			mu.Lock()
			done[d.Message.ID] = true
			mu.Unlock()
			return nil
		})
	}()
	waitFor := func(cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			require.True(t, time.Now().Before(deadline), "timed out")
			clock.Advance(time.Second) // lets the failed ones come back
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(done) == len(ids)
	})
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	mu.Lock()
	assert.Equal(t, 2, calls["m-003"], "an error means another delivery")
	assert.Equal(t, 2, calls["m-007"], "a panic is recovered and means another delivery")
	mu.Unlock()
	nothing(t, c) // everything acked
}

// TestAckOnReceiveLosesMessagesOnCrash documents the anti-pattern: acking on
// receipt and handling later in a goroutine. A crash between the two loses
// the message: it is acked, so it never comes back. Consume acks after the
// handler returns.
func TestAckOnReceiveLosesMessagesOnCrash(t *testing.T) {
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	sendN(t, q, "m", 5)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		d := receive(t, c)
		require.NoError(t, d.Ack()) // "ack on receive"
		// ...the handler would run in a goroutine here; the process dies first.
	}
	require.NoError(t, q.Close()) // stands for the crash: nothing was handled

	q = consumerQueue(t, fs, nil)
	defer q.Close()
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	nothing(t, c) // all five are gone for this group: lost to the application
}

func TestConsumerOptionsValidation(t *testing.T) {
	q := consumerQueue(t, vfs.NewMem(), nil)
	defer q.Close()
	for field, opts := range map[string]*ConsumerOptions{
		"AckTimeout":    {AckTimeout: -1},
		"MaxDeliveries": {MaxDeliveries: -1},
		"Concurrency":   {Concurrency: -2},
		"Backoff":       {Backoff: []time.Duration{time.Second, -time.Second}},
		"Start":         {Start: 9},
	} {
		_, err := q.Consumer("g", opts)
		require.ErrorIs(t, err, ErrInvalidOptions, field)
		assert.Contains(t, err.Error(), field)
	}
	_, err := q.Consumer("", nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
}

func TestReceiveReturnsOnClose(t *testing.T) {
	q := consumerQueue(t, vfs.NewMem(), nil)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Receive(context.Background())
		errc <- err
	}()
	require.NoError(t, q.Close())
	select {
	case err := <-errc:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Receive did not return on Close")
	}
}

func TestDelayedDeliverySurvivesRestart(t *testing.T) {
	clock := newFakeClock()
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, clock)
	_, err := q.Send(context.Background(), &Message{ID: "later", Body: []byte("l"), DeliverAt: clock.Now().Add(time.Hour)})
	require.NoError(t, err)
	sendN(t, q, "now", 1)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	d := receive(t, c)
	require.Equal(t, "now-000", d.Message.ID, "a delayed message does not hold back the ones after it")
	require.NoError(t, d.Ack())
	nothing(t, c)
	assert.Equal(t, 1, q.GroupStats()[0].Waiting)
	require.NoError(t, q.Close())

	q = consumerQueue(t, fs, clock)
	defer q.Close()
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	clock.Advance(59 * time.Minute)
	nothing(t, c) // still delayed after the restart
	clock.Advance(time.Minute)
	d = receive(t, c)
	assert.Equal(t, "later", d.Message.ID)
	assert.Equal(t, 1, d.Attempt, "its first delivery")
	assert.True(t, d.Message.DeliverAt.Equal(clock.Now()), "DeliverAt is kept with the message")
	require.NoError(t, d.Ack())
}

func TestClockJumpsLoseNothing(t *testing.T) {
	clock, _, c := clockedConsumer(t, 2, &ConsumerOptions{AckTimeout: 10 * time.Second, Backoff: []time.Duration{time.Second}})
	d1 := receive(t, c)
	d2 := receive(t, c)
	require.NoError(t, d2.Nack(5*time.Second))

	clock.Advance(-24 * time.Hour) // the wall clock jumps back a day
	nothing(t, c)
	clock.Advance(5 * time.Second)
	d := receive(t, c)
	require.Equal(t, d2.Message.ID, d.Message.ID, "a nack delay is not stretched by a jump back")
	require.NoError(t, d.Ack())
	clock.Advance(5 * time.Second) // d1's 10s ack timeout passes...
	nothing(t, c)                  // ...which starts its 1s backoff
	clock.Advance(time.Second)
	d = receive(t, c)
	require.Equal(t, d1.Message.ID, d.Message.ID, "an ack deadline is not stretched by a jump back")
	assert.Equal(t, 2, d.Attempt)

	clock.Advance(30 * 24 * time.Hour) // and forward a month: its deadline passes...
	nothing(t, c)                      // ...its backoff starts...
	clock.Advance(time.Second)
	d = receive(t, c) // ...and it comes back, not lost
	require.Equal(t, d1.Message.ID, d.Message.ID)
	require.NoError(t, d.Ack())
	nothing(t, c)
}

// Receive skips looking through the messages in flight while none can be
// due (group.quiet); a clock that jumps back while it skips must still not
// stretch an ack deadline.
func TestClockJumpBackWhileNothingIsDue(t *testing.T) {
	clock, _, c := clockedConsumer(t, 3, &ConsumerOptions{AckTimeout: 10 * time.Second, Backoff: []time.Duration{time.Second}})
	d1 := receive(t, c)
	d2 := receive(t, c) // nothing in flight was due: no look through it
	clock.Advance(-24 * time.Hour)
	d3 := receive(t, c) // the first Receive after the jump
	require.Equal(t, "m-002", d3.Message.ID)
	require.NoError(t, d3.Ack())
	clock.Advance(10 * time.Second) // the clamped deadlines of d1 and d2 pass
	nothing(t, c)
	clock.Advance(time.Second) // and their backoff
	got := map[string]int{}
	for range 2 {
		d := receive(t, c)
		got[d.Message.ID] = d.Attempt
		require.NoError(t, d.Ack())
	}
	assert.Equal(t, map[string]int{d1.Message.ID: 2, d2.Message.ID: 2}, got)
	nothing(t, c)
}

// Extend sets the deadline from now, so it can also bring it closer; the
// group must then look at the delivery by the new deadline.
func TestExtendCanShortenTheDeadline(t *testing.T) {
	clock, _, c := clockedConsumer(t, 1, &ConsumerOptions{AckTimeout: time.Hour, Backoff: []time.Duration{time.Second}})
	d := receive(t, c)
	require.NoError(t, d.Extend(5*time.Second))
	clock.Advance(5 * time.Second)
	nothing(t, c) // the deadline passed: its backoff starts
	clock.Advance(time.Second)
	again := receive(t, c)
	require.Equal(t, d.Message.ID, again.Message.ID)
	assert.Equal(t, 2, again.Attempt)
	require.NoError(t, again.Ack())
}

func TestGroupStats(t *testing.T) {
	_, q, c := clockedConsumer(t, 5, &ConsumerOptions{MaxDeliveries: 1})
	st := q.GroupStats()
	require.Len(t, st, 1)
	assert.Equal(t, "g", st[0].Group)
	assert.GreaterOrEqual(t, st[0].Behind, uint64(5))
	d1 := receive(t, c)
	d2 := receive(t, c)
	require.NoError(t, d2.Nack(0)) // MaxDeliveries 1: dead letter
	st = q.GroupStats()
	assert.Equal(t, 1, st[0].InFlight)
	assert.Equal(t, 1, st[0].DeadLetters)
	require.NoError(t, d1.Ack())
	assert.Equal(t, 0, q.GroupStats()[0].InFlight)
}
