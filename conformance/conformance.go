// Package conformance is the test suite every zeroloss backend must pass:
// the embedded queue (its test in this package) and the NATS JetStream
// adapter (github.com/zerolossmq/zeroloss/jetstream, which runs it against
// an in-process nats-server). It uses only the API every backend shares
// (zeroloss.Backend, *zeroloss.Consumer, *zeroloss.Delivery), so passing it
// means application code written against them behaves the same on both.
//
// What it checks, one subtest each:
//
//	SendReceiveAck         fields round-trip; Seq = SendResult.Seq; every group gets every message;
//	                       an acked message is never delivered again
//	GeneratedID            an empty ID is filled in and delivered
//	AckTimeoutRedelivers   an unacked delivery comes back after AckTimeout, Attempt 2,
//	                       same FirstDelivered; the stale delivery's Nack/Extend fail
//	NackDelay              Nack(d) holds the message back at least d; Nack(0) uses Backoff
//	Extend                 Extend(by) keeps a message from other consumers past AckTimeout
//	DeadLetterOnNack       the last allowed delivery, nacked, goes to the dead letters
//	DeadLetterOnTimeout    the last allowed delivery, timed out, goes to the dead letters
//	Dedup                  a resent ID stores nothing and returns the original seq
//	ConsumeRetries         Consume acks on nil; an error or a panic means a redelivery
//	ConsumeAcksAfterReturn a message is not acked while its handler runs
//	ConsumeWaitsOnCancel   ctx's end waits for running handlers, whose ctx stays live
//	StartLatest            a new group with StartLatest skips earlier messages
//	Closed                 Send and Receive after Close fail with ErrClosed
//	SendOKKept             CheckSendOK: a message confirmed with SendOK reaches groups created
//	                       after it, and its resend is a duplicate
//	TopicIsolation         topics interleaved in one SendBatch: a group on a topic receives
//	                       exactly its messages, in order, with Topic and Tag as sent
//	TopicTwoGroups         two groups on one topic each receive all of it
//	TagFilter              a group listing tags receives exactly its topic's messages with
//	                       one of them (not other tags, no tag, or another topic's)
//	TopicReopen            reopening a group with another Topic or Tags fails with
//	                       ErrInvalidOptions naming the field; bad names in ConsumerOptions too
//	InvalidTopic           a bad topic or tag name fails with ErrInvalidMessage naming
//	                       Message.Topic or Message.Tag; the longest names work
//	TopicDedup             dedup is per topic: one ID on two topics is two messages, resent to
//	                       one topic a duplicate
//	TopicDeadLetter        a dead letter keeps its message's topic and tag
//	ReceiveBatch           1 to max deliveries per call, in order; AckBatch acks them
//	NackNow                delivered again at once (not after the backoff), Attempt 2
//	AckAsync               acks: nothing is delivered again past the ack deadline
//	Release                given back at once with the same Attempt; or, listed as
//	                       unsupported, ErrUnsupported with the delivery still held
//	ConsumerClose          Receive after Consumer.Close fails with ErrConsumerClosed; what
//	                       it held is given back at once (kept held without Release)
//
// Timings are short (AckTimeout 400ms, Backoff 100ms) and the subtests run in
// parallel, each on a backend of its own, so the suite takes seconds.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// Factory returns a new, empty backend for one subtest. The suite closes it
// (Backend.Close must be idempotent); anything else the factory starts it
// cleans up with t.Cleanup.
type Factory func(t *testing.T) zeroloss.Backend

// Timings of the suite.
const (
	ackTimeout = 400 * time.Millisecond
	backoff    = 100 * time.Millisecond
	// redelivered is when an unacked message is due again.
	redelivered = ackTimeout + backoff
	// quiet is how long the suite waits to see that nothing is delivered:
	// twice the redelivery time.
	quiet = 2 * redelivered
	// patience bounds every wait for something that must happen.
	patience = 15 * time.Second
)

// options returns the consumer options of the suite with maxDeliveries.
func options(maxDeliveries int) *zeroloss.ConsumerOptions {
	return &zeroloss.ConsumerOptions{
		AckTimeout:    ackTimeout,
		Backoff:       []time.Duration{backoff},
		MaxDeliveries: maxDeliveries,
	}
}

// Run runs the suite against the backends open returns. unsupported lists
// the operations the backend documents as failing with
// zeroloss.ErrUnsupported, of those the suite can check: "Release"
// (Delivery.Release, and Consumer.Close then leaves its deliveries held).
// Every other operation must work.
func Run(t *testing.T, open Factory, unsupported ...string) {
	noRelease := slices.Contains(unsupported, "Release")
	tests := []struct {
		name string
		run  func(t *testing.T, b zeroloss.Backend)
	}{
		{"SendReceiveAck", testSendReceiveAck},
		{"GeneratedID", testGeneratedID},
		{"AckTimeoutRedelivers", testAckTimeoutRedelivers},
		{"NackDelay", testNackDelay},
		{"Extend", testExtend},
		{"DeadLetterOnNack", testDeadLetterOnNack},
		{"DeadLetterOnTimeout", testDeadLetterOnTimeout},
		{"Dedup", testDedup},
		{"ConsumeRetries", testConsumeRetries},
		{"ConsumeAcksAfterReturn", testConsumeAcksAfterReturn},
		{"ConsumeWaitsOnCancel", testConsumeWaitsOnCancel},
		{"StartLatest", testStartLatest},
		{"Closed", testClosed},
		{"SendOKKept", func(t *testing.T, b zeroloss.Backend) { CheckSendOK(t, b, 0) }},
		{"TopicIsolation", testTopicIsolation},
		{"TopicTwoGroups", testTopicTwoGroups},
		{"TagFilter", testTagFilter},
		{"TopicReopen", testTopicReopen},
		{"InvalidTopic", testInvalidTopic},
		{"TopicDedup", testTopicDedup},
		{"TopicDeadLetter", testTopicDeadLetter},
		{"ReceiveBatch", testReceiveBatch},
		{"NackNow", testNackNow},
		{"AckAsync", testAckAsync},
		{"Release", func(t *testing.T, b zeroloss.Backend) { testRelease(t, b, noRelease) }},
		{"ConsumerClose", func(t *testing.T, b zeroloss.Backend) { testConsumerClose(t, b, !noRelease) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			t.Cleanup(func() { _ = b.Close() })
			tt.run(t, b)
		})
	}
}

// send sends m and requires SendOK.
func send(t *testing.T, b zeroloss.Backend, m *zeroloss.Message) zeroloss.SendResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	res, err := b.Send(ctx, m)
	require.NoError(t, err)
	require.Equal(t, zeroloss.SendOK, res.Status, "status of %q", m.ID)
	return res
}

func subscribe(t *testing.T, b zeroloss.Backend, group string, opts *zeroloss.ConsumerOptions) *zeroloss.Consumer {
	t.Helper()
	s, err := b.Consumer(group, opts)
	require.NoError(t, err)
	return s
}

// next requires a delivery within patience.
func next(t *testing.T, s *zeroloss.Consumer) *zeroloss.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	d, err := s.Receive(ctx)
	require.NoError(t, err, "no delivery within %v", patience)
	require.NotNil(t, d)
	return d
}

// nothing requires that s delivers nothing for wait.
func nothing(t *testing.T, s *zeroloss.Consumer, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	d, err := s.Receive(ctx)
	if err == nil {
		t.Fatalf("unexpected delivery of %s", describe(d))
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func testSendReceiveAck(t *testing.T, b zeroloss.Backend) {
	sent := []*zeroloss.Message{
		{ID: "m1", Key: "k1", Headers: map[string]string{"trace": "a", "Mixed-Case": "b"}, Body: []byte("one")},
		{ID: "m2", Body: []byte("two")},
		{ID: "m3", Key: "k3", Body: []byte{0, 1, 2, 255}},
	}
	var seqs []uint64
	for _, m := range sent {
		res := send(t, b, m)
		assert.Equal(t, m.ID, res.ID)
		assert.False(t, res.Duplicate)
		if len(seqs) > 0 {
			assert.Greater(t, res.Seq, seqs[len(seqs)-1], "seqs increase")
		}
		seqs = append(seqs, res.Seq)
	}
	for _, group := range []string{"g1", "g2"} { // every group receives every message
		s := subscribe(t, b, group, options(5))
		assert.Equal(t, group, s.Group())
		for i, m := range sent {
			d := next(t, s)
			info := d
			assert.Equal(t, m.ID, info.Message.ID)
			assert.Equal(t, m.Key, info.Message.Key)
			assert.Equal(t, m.Body, info.Message.Body)
			if len(m.Headers) == 0 {
				assert.Empty(t, info.Message.Headers)
			} else {
				assert.Equal(t, m.Headers, info.Message.Headers)
			}
			assert.Equal(t, seqs[i], info.Seq, "Seq is SendResult.Seq")
			assert.Equal(t, 1, info.Attempt)
			assert.False(t, info.FirstDelivered.IsZero())
			assert.False(t, info.FirstDelivered.After(time.Now()), "FirstDelivered is not in the future")
			require.NoError(t, d.Ack())
		}
		nothing(t, s, quiet) // acked: never delivered again
	}
}

func testGeneratedID(t *testing.T, b zeroloss.Backend) {
	res := send(t, b, &zeroloss.Message{Body: []byte("anonymous")})
	require.NotEmpty(t, res.ID)
	res2 := send(t, b, &zeroloss.Message{Body: []byte("anonymous")})
	require.NotEqual(t, res.ID, res2.ID, "generated IDs are unique")
	assert.False(t, res2.Duplicate)
	s := subscribe(t, b, "g", options(5))
	for _, r := range []zeroloss.SendResult{res, res2} {
		d := next(t, s)
		assert.Equal(t, r.ID, d.Message.ID)
		assert.Equal(t, r.Seq, d.Seq)
		require.NoError(t, d.Ack())
	}
}

func testAckTimeoutRedelivers(t *testing.T, b zeroloss.Backend) {
	res := send(t, b, &zeroloss.Message{ID: "late", Body: []byte("x")})
	s := subscribe(t, b, "g", options(5))
	first := next(t, s)
	delivered := time.Now()
	// Not acked: it comes back once AckTimeout (and the backoff) passed.
	again := next(t, s)
	assert.GreaterOrEqual(t, time.Since(delivered), ackTimeout, "redelivered before AckTimeout")
	assert.Equal(t, res.Seq, again.Seq)
	assert.Equal(t, "late", again.Message.ID)
	assert.Equal(t, 1, first.Attempt)
	assert.Equal(t, 2, again.Attempt)
	assert.True(t, first.FirstDelivered.Equal(again.FirstDelivered), "FirstDelivered %v then %v", first.FirstDelivered, again.FirstDelivered)
	// The first delivery is no longer held.
	require.ErrorIs(t, first.Nack(0), zeroloss.ErrDeliveryExpired)
	require.ErrorIs(t, first.Extend(time.Minute), zeroloss.ErrDeliveryExpired)
	require.NoError(t, again.Ack())
	nothing(t, s, quiet)
}

func testNackDelay(t *testing.T, b zeroloss.Backend) {
	send(t, b, &zeroloss.Message{ID: "n", Body: []byte("x")})
	s := subscribe(t, b, "g", options(5))
	d := next(t, s)
	const delay = 4 * redelivered // well above anything AckTimeout or Backoff would give
	nacked := time.Now()
	require.NoError(t, d.Nack(delay))
	d = next(t, s)
	assert.GreaterOrEqual(t, time.Since(nacked), delay, "redelivered before the Nack's delay")
	assert.Equal(t, 2, d.Attempt)
	// Nack(0): the consumer's backoff (100ms), far below patience.
	require.NoError(t, d.Nack(0))
	d = next(t, s)
	assert.Equal(t, 3, d.Attempt)
	assert.Equal(t, "n", d.Message.ID)
	require.NoError(t, d.Ack())
	require.ErrorIs(t, d.Nack(0), zeroloss.ErrDeliveryExpired, "Nack after Ack")
	nothing(t, s, quiet)
}

func testExtend(t *testing.T, b zeroloss.Backend) {
	send(t, b, &zeroloss.Message{ID: "long", Body: []byte("x")})
	s := subscribe(t, b, "g", options(5))
	other := subscribe(t, b, "g", options(5))
	d := next(t, s)
	const by = 6 * ackTimeout
	require.NoError(t, d.Extend(by))
	// Three AckTimeouts later the message is still held by d.
	nothing(t, other, 3*ackTimeout)
	require.NoError(t, d.Ack())
	nothing(t, other, quiet)
}

func testDeadLetterOnNack(t *testing.T, b zeroloss.Backend) {
	res := send(t, b, &zeroloss.Message{ID: "poison", Key: "k", Body: []byte("bad")})
	send(t, b, &zeroloss.Message{ID: "fine", Body: []byte("good")})
	s := subscribe(t, b, "g", options(2))
	seen := map[string]int{}
	for deliveries := 0; deliveries < 3; deliveries++ { // poison twice, fine once
		d := next(t, s)
		info := d
		seen[info.Message.ID]++
		if info.Message.ID == "fine" {
			require.NoError(t, d.Ack())
			continue
		}
		assert.Equal(t, seen["poison"], info.Attempt)
		require.NoError(t, d.Nack(0)) // the second is the last allowed delivery
	}
	assert.Equal(t, map[string]int{"poison": 2, "fine": 1}, seen)
	nothing(t, s, quiet)
	dead, err := b.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, res.Seq, dead[0].Seq)
	assert.Equal(t, 2, dead[0].Attempts)
	assert.Equal(t, "poison", dead[0].Message.ID)
	assert.Equal(t, "k", dead[0].Message.Key)
	assert.Equal(t, []byte("bad"), dead[0].Message.Body)
	assert.False(t, dead[0].Time.IsZero())
	// Another group is not affected.
	other := subscribe(t, b, "other", options(2))
	require.NoError(t, next(t, other).Ack())
	require.NoError(t, next(t, other).Ack())
	dead, err = b.DeadLetters("other")
	require.NoError(t, err)
	assert.Empty(t, dead)
}

func testDeadLetterOnTimeout(t *testing.T, b zeroloss.Backend) {
	res := send(t, b, &zeroloss.Message{ID: "stuck", Body: []byte("x")})
	s := subscribe(t, b, "g", options(2))
	for attempt := 1; attempt <= 2; attempt++ {
		d := next(t, s) // never acked
		require.Equal(t, attempt, d.Attempt)
	}
	// The second delivery's ack timeout moves it to the dead letters. The
	// backends do that while a consumer is receiving, so keep receiving;
	// a third delivery would be a failure.
	deadline := time.Now().Add(patience)
	for {
		dead, err := b.DeadLetters("g")
		require.NoError(t, err)
		if len(dead) > 0 {
			require.Len(t, dead, 1)
			assert.Equal(t, res.Seq, dead[0].Seq)
			assert.Equal(t, "stuck", dead[0].Message.ID)
			assert.Equal(t, 2, dead[0].Attempts)
			break
		}
		require.True(t, time.Now().Before(deadline), "not dead-lettered within %v", patience)
		nothing(t, s, redelivered/2)
	}
	nothing(t, s, quiet)
}

func testDedup(t *testing.T, b zeroloss.Backend) {
	first := send(t, b, &zeroloss.Message{ID: "once", Body: []byte("original")})
	again := send(t, b, &zeroloss.Message{ID: "once", Body: []byte("resent")})
	assert.True(t, again.Duplicate)
	assert.Equal(t, first.Seq, again.Seq, "a duplicate returns the original's seq")
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	results, err := b.SendBatch(ctx, []*zeroloss.Message{
		{ID: "once", Body: []byte("resent in a batch")},
		{ID: "twice", Body: []byte("new")},
		{ID: "twice", Body: []byte("new, repeated in the batch")},
	})
	require.NoError(t, err)
	require.Len(t, results, 3)
	assert.True(t, results[0].Duplicate)
	assert.Equal(t, first.Seq, results[0].Seq)
	assert.False(t, results[1].Duplicate)
	assert.True(t, results[2].Duplicate)
	assert.Equal(t, results[1].Seq, results[2].Seq)
	for _, r := range results {
		assert.Equal(t, zeroloss.SendOK, r.Status)
	}
	s := subscribe(t, b, "g", options(5))
	for _, want := range []struct {
		id, body string
		seq      uint64
	}{{"once", "original", first.Seq}, {"twice", "new", results[1].Seq}} {
		d := next(t, s)
		assert.Equal(t, want.id, d.Message.ID)
		assert.Equal(t, want.body, string(d.Message.Body))
		assert.Equal(t, want.seq, d.Seq)
		require.NoError(t, d.Ack())
	}
	nothing(t, s, quiet)
}

func testConsumeRetries(t *testing.T, b zeroloss.Backend) {
	for _, id := range []string{"ok", "error", "panic"} {
		send(t, b, &zeroloss.Message{ID: id, Body: []byte(id)})
	}
	s := subscribe(t, b, "g", &zeroloss.ConsumerOptions{
		AckTimeout: ackTimeout, Backoff: []time.Duration{backoff}, MaxDeliveries: 5, Concurrency: 2,
	})
	var mu sync.Mutex
	attempts := map[string][]int{}
	handled := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Consume(ctx, func(_ context.Context, d *zeroloss.Delivery) error {
			info := d
			mu.Lock()
			attempts[info.Message.ID] = append(attempts[info.Message.ID], info.Attempt)
			mu.Unlock()
			switch {
			case info.Message.ID == "error" && info.Attempt == 1:
				return errors.New("first attempt fails")
			case info.Message.ID == "panic" && info.Attempt == 1:
				panic("first attempt panics")
			}
			handled <- info.Message.ID
			return nil
		})
	}()
	got := map[string]bool{}
	timeout := time.After(patience)
	for len(got) < 3 {
		select {
		case id := <-handled:
			got[id] = true
		case <-timeout:
			t.Fatalf("handled only %v within %v", got, patience)
		}
	}
	// Acked after returning nil: nothing comes back.
	select {
	case id := <-handled:
		t.Fatalf("%q handled again after its handler returned nil", id)
	case <-time.After(quiet):
	}
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[string][]int{"ok": {1}, "error": {1, 2}, "panic": {1, 2}}, attempts)
}

func testConsumeAcksAfterReturn(t *testing.T, b zeroloss.Backend) {
	send(t, b, &zeroloss.Message{ID: "slow", Body: []byte("x")})
	s := subscribe(t, b, "g", options(5))
	other := subscribe(t, b, "g", options(5))
	started := make(chan *zeroloss.Delivery, 1)
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- s.Consume(ctx, func(_ context.Context, d *zeroloss.Delivery) error {
			started <- d
			<-release
			return nil
		})
	}()
	var info *zeroloss.Delivery
	select {
	case info = <-started:
	case <-time.After(patience):
		t.Fatal("handler not called")
	}
	// While the handler runs (without Extend) the message is not acked:
	// after AckTimeout another consumer of the group gets it again.
	d := next(t, other)
	assert.Equal(t, info.Seq, d.Seq)
	assert.Equal(t, 2, d.Attempt)
	require.NoError(t, d.Ack())
	close(release)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	nothing(t, other, quiet)
}

func testConsumeWaitsOnCancel(t *testing.T, b zeroloss.Backend) {
	send(t, b, &zeroloss.Message{ID: "w", Body: []byte("x")})
	s := subscribe(t, b, "g", options(5))
	started := make(chan struct{})
	release := make(chan struct{})
	handlerCtxErr := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Consume(ctx, func(hctx context.Context, d *zeroloss.Delivery) error {
			close(started)
			<-release
			handlerCtxErr <- hctx.Err()
			assert.NoError(t, d.Extend(time.Minute)) // still held
			return nil
		})
	}()
	select {
	case <-started:
	case <-time.After(patience):
		t.Fatal("handler not called")
	}
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Consume returned (%v) while a handler was running", err)
	case <-time.After(ackTimeout / 2):
	}
	close(release)
	require.ErrorIs(t, <-done, context.Canceled)
	assert.NoError(t, <-handlerCtxErr, "the handler's context is not cancelled with Consume's")
	// The handler returned nil after the cancel: the message was acked.
	nothing(t, subscribe(t, b, "g", options(5)), quiet)
}

func testStartLatest(t *testing.T, b zeroloss.Backend) {
	send(t, b, &zeroloss.Message{ID: "before", Body: []byte("x")})
	s := subscribe(t, b, "late", &zeroloss.ConsumerOptions{
		AckTimeout: ackTimeout, Backoff: []time.Duration{backoff}, Start: zeroloss.StartLatest,
	})
	send(t, b, &zeroloss.Message{ID: "after", Body: []byte("y")})
	d := next(t, s)
	assert.Equal(t, "after", d.Message.ID)
	require.NoError(t, d.Ack())
	nothing(t, s, quiet)
}

func testClosed(t *testing.T, b zeroloss.Backend) {
	s := subscribe(t, b, "g", options(5))
	require.NoError(t, b.Close())
	_, err := b.Send(context.Background(), &zeroloss.Message{ID: "late", Body: []byte("x")})
	require.ErrorIs(t, err, zeroloss.ErrClosed)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, err = s.Receive(ctx)
	require.ErrorIs(t, err, zeroloss.ErrClosed)
	require.NoError(t, b.Close(), "Close is idempotent")
}

// describe names a delivery in failure messages.
func describe(i *zeroloss.Delivery) string {
	return fmt.Sprintf("%q seq %d attempt %d", i.Message.ID, i.Seq, i.Attempt)
}
