package zeroloss

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// sendKeyed sends one message per key in keys, in order, with IDs
// prefix-000...; it returns the IDs.
func sendKeyed(t *testing.T, q *Queue, prefix string, keys ...string) []string {
	t.Helper()
	var ids []string
	for i, key := range keys {
		id := fmt.Sprintf("%s-%03d", prefix, i)
		res, err := q.Send(context.Background(), &Message{ID: id, Key: key, Body: bodyFor(id)})
		require.NoError(t, err)
		require.Equal(t, SendOK, res.Status)
		ids = append(ids, id)
	}
	return ids
}

// tryReceive returns a delivery available now, or nil.
func tryReceive(t *testing.T, c *Consumer) *Delivery {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := c.Receive(ctx)
	if err != nil {
		require.ErrorIs(t, err, context.Canceled)
		return nil
	}
	return d
}

func TestOrderedHandsOutAKeyOneMessageAtATime(t *testing.T) {
	clock := newFakeClock()
	q := consumerQueue(t, vfs.NewMem(), clock)
	defer q.Close()
	ids := sendKeyed(t, q, "m", "a", "a", "b", "a", "", "")
	c, err := q.Consumer("g", &ConsumerOptions{Ordered: true, AckTimeout: time.Minute, Backoff: []time.Duration{time.Second}})
	require.NoError(t, err)

	a0 := receive(t, c)
	require.Equal(t, ids[0], a0.Message.ID)
	// a's next message waits behind a0; b and the keyless ones go ahead.
	for _, want := range []string{ids[2], ids[4], ids[5]} {
		d := receive(t, c)
		require.Equal(t, want, d.Message.ID)
		require.NoError(t, d.Ack())
	}
	require.Nil(t, tryReceive(t, c), "a's second message must wait for a0's ack")

	// A failed first delivery waits for its backoff in place, ahead of
	// a's later messages.
	require.NoError(t, a0.Nack(0))
	assert.Equal(t, 1, q.GroupStats()[0].BlockedKeys)
	require.Nil(t, tryReceive(t, c))
	clock.Advance(time.Second)
	again := receive(t, c)
	require.Equal(t, ids[0], again.Message.ID)
	require.Equal(t, 2, again.Attempt)
	// A failed redelivery moves to the retry stream: the key stays held.
	require.NoError(t, again.Nack(0))
	st := q.GroupStats()[0]
	assert.Equal(t, 1, st.Retrying)
	assert.Equal(t, 1, st.BlockedKeys)
	assert.Equal(t, time.Second, st.BlockedKeyAge, "since the head's first delivery")
	require.Nil(t, tryReceive(t, c), "a retry in the retry stream still holds its key")
	clock.Advance(time.Second)
	third := receive(t, c)
	require.Equal(t, ids[0], third.Message.ID)
	require.Equal(t, 3, third.Attempt)
	require.Nil(t, tryReceive(t, c))
	assert.Equal(t, 1, q.GroupStats()[0].BlockedKeys, "blocked while its redelivery is handled")
	require.NoError(t, third.Ack())
	assert.Zero(t, q.GroupStats()[0].BlockedKeys)

	for _, want := range []string{ids[1], ids[3]} {
		d := receive(t, c)
		require.Equal(t, want, d.Message.ID)
		require.Nil(t, tryReceive(t, c))
		require.NoError(t, d.Ack())
	}
	require.Nil(t, tryReceive(t, c))
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	assert.Empty(t, g.lines, "keys with nothing owed cost nothing")
	assert.Empty(t, g.blocked)
}

func TestOrderedMustAgreeWithinAProcess(t *testing.T) {
	q := consumerQueue(t, vfs.NewMem(), nil)
	defer q.Close()
	_, err := q.Consumer("g", &ConsumerOptions{Ordered: true})
	require.NoError(t, err)
	_, err = q.Consumer("g", &ConsumerOptions{Ordered: true})
	require.NoError(t, err)
	_, err = q.Consumer("g", nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.ErrorContains(t, err, "Ordered")
	_, err = q.Consumer("other", nil) // another group decides for itself
	require.NoError(t, err)
}

// A dead-lettered head lets its key go on; a re-driven dead letter rejoins
// its key right behind the head.
func TestOrderedDeadLetterMovesTheKeyOnAndRedriveRejoinsIt(t *testing.T) {
	clock := newFakeClock()
	q := consumerQueue(t, vfs.NewMem(), clock)
	defer q.Close()
	ids := sendKeyed(t, q, "m", "a", "a", "a")
	c, err := q.Consumer("g", &ConsumerOptions{Ordered: true, MaxDeliveries: 2, Backoff: []time.Duration{time.Second}})
	require.NoError(t, err)
	require.NoError(t, receive(t, c).Nack(0))
	clock.Advance(time.Second)
	require.NoError(t, receive(t, c).Nack(0)) // its last allowed delivery
	dead, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, ids[0], dead[0].Message.ID)

	head := receive(t, c)
	require.Equal(t, ids[1], head.Message.ID, "the key moves on")
	n, err := q.RedriveDeadLetters(context.Background(), "g")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Nil(t, tryReceive(t, c), "the re-driven message waits for the head in a consumer's hands")
	require.NoError(t, head.Ack())
	for _, want := range []string{ids[0], ids[2]} {
		d := receive(t, c)
		require.Equal(t, want, d.Message.ID)
		require.Nil(t, tryReceive(t, c))
		require.NoError(t, d.Ack())
	}
}

// A message with a future DeliverAt holds back its key's later messages.
func TestOrderedDelayedMessageHoldsItsKey(t *testing.T) {
	clock := newFakeClock()
	q := consumerQueue(t, vfs.NewMem(), clock)
	defer q.Close()
	for i, at := range []time.Time{clock.Now().Add(time.Minute), {}} {
		_, err := q.Send(context.Background(), &Message{ID: fmt.Sprint(i), Key: "a", DeliverAt: at})
		require.NoError(t, err)
	}
	_, err := q.Send(context.Background(), &Message{ID: "b", Key: "b"})
	require.NoError(t, err)
	c, err := q.Consumer("g", &ConsumerOptions{Ordered: true})
	require.NoError(t, err)
	d := receive(t, c)
	require.Equal(t, "b", d.Message.ID)
	require.NoError(t, d.Ack())
	require.Nil(t, tryReceive(t, c))
	clock.Advance(time.Minute)
	for _, want := range []string{"0", "1"} {
		d := receive(t, c)
		require.Equal(t, want, d.Message.ID)
		require.Nil(t, tryReceive(t, c))
		require.NoError(t, d.Ack())
	}
}

// An ack deadline that passes while the handler is slow: the head is
// delivered again (after its backoff), the late Ack of the old delivery is
// ErrDeliveryExpired, and the key's next message waits for the new one.
func TestOrderedAckDeadlineRedeliversTheHead(t *testing.T) {
	clock := newFakeClock()
	q := consumerQueue(t, vfs.NewMem(), clock)
	defer q.Close()
	ids := sendKeyed(t, q, "m", "a", "a", "b")
	c, err := q.Consumer("g", &ConsumerOptions{Ordered: true, AckTimeout: time.Second, Backoff: []time.Duration{time.Second}})
	require.NoError(t, err)
	slow := receive(t, c)
	require.Equal(t, ids[0], slow.Message.ID)
	clock.Advance(time.Second) // the deadline passes: a failed delivery
	b := receive(t, c)
	require.Equal(t, ids[2], b.Message.ID, "other keys go on")
	require.NoError(t, b.Ack())
	require.Nil(t, tryReceive(t, c), "the head waits for its backoff; a's next waits for the head")
	clock.Advance(time.Second)
	again := receive(t, c)
	require.Equal(t, ids[0], again.Message.ID)
	require.Equal(t, 2, again.Attempt)
	require.ErrorIs(t, slow.Ack(), ErrDeliveryExpired)
	require.Nil(t, tryReceive(t, c), "the late ack does not let the key go on")
	require.NoError(t, again.Ack())
	next := receive(t, c)
	require.Equal(t, ids[1], next.Message.ID)
	require.NoError(t, next.Ack())
}

// After a crash, a head delivered and not acked, whether at its main-stream
// position or moved to the retry stream, comes back before any later
// message of its key; a message read behind a head but never delivered is
// not counted as delivered.
func TestOrderedHeadComesBackFirstAfterACrash(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	q := consumerQueue(t, fs, clock)
	ids := sendKeyed(t, q, "m", "a", "b", "a", "b", "a", "b")
	opts := &ConsumerOptions{Ordered: true, AckTimeout: time.Minute, Backoff: []time.Duration{time.Second}}
	c, err := q.Consumer("g", opts)
	require.NoError(t, err)
	a := receive(t, c) // a's head: delivered, left unacked
	require.Equal(t, ids[0], a.Message.ID)
	b := receive(t, c) // b's head: fails twice, so it moves to the retry stream
	require.Equal(t, ids[1], b.Message.ID)
	require.NoError(t, b.Nack(0))
	clock.Advance(time.Second)
	b = receive(t, c)
	require.Equal(t, ids[1], b.Message.ID)
	require.NoError(t, b.Nack(0))
	require.Nil(t, tryReceive(t, c))
	require.NoError(t, q.flushMarks(context.Background()))
	fs.Crash(vfs.DropUnsynced, nil)
	_ = q.Close()

	q = consumerQueue(t, fs, clock)
	defer q.Close()
	c, err = q.Consumer("g", opts)
	require.NoError(t, err)
	clock.Advance(time.Second)
	got := map[string]*Delivery{}
	for range 2 {
		d := receive(t, c)
		got[d.Message.Key] = d
	}
	require.Nil(t, tryReceive(t, c), "one delivery per key")
	require.Equal(t, ids[0], got["a"].Message.ID)
	require.Equal(t, 2, got["a"].Attempt)
	require.Equal(t, ids[1], got["b"].Message.ID)
	require.Equal(t, 3, got["b"].Attempt)
	for _, key := range []string{"a", "b"} {
		require.NoError(t, got[key].Ack())
	}
	for round := 2; round < len(ids); round += 2 {
		var ds []*Delivery
		for range 2 {
			d := receive(t, c)
			require.Equal(t, 1, d.Attempt, "%s was never delivered before the crash", d.Message.ID)
			require.Contains(t, ids[round:round+2], d.Message.ID, "each key's messages come in seq order")
			ds = append(ds, d)
		}
		require.Nil(t, tryReceive(t, c))
		for _, d := range ds {
			require.NoError(t, d.Ack())
		}
	}
}

// The test: Consume with Concurrency 8 over 100 keys, random
// handler failures and a poison message. Per key, the first successful
// handlings follow seq order, no two handlings of a key overlap, the poison
// message reaches the dead letters after MaxDeliveries and its key goes on.
func TestOrderedConsumeUnderFailures(t *testing.T) {
	const keys, perKey, maxDeliveries = 100, 10, 5
	clock := newFakeClock() // never advanced: Backoff 0 retries at once, no ack deadline passes
	q := consumerQueue(t, vfs.NewMem(), clock)
	defer q.Close()
	seqKey := map[uint64]string{}
	var poison uint64
	// Each key's messages come in runs of 1 to 4, the keys in random order,
	// so that consecutive messages often share a key.
	rng := rand.New(rand.NewPCG(19, 19))
	sent := make([]int, keys)
	for left := keys * perKey; left > 0; {
		k := rng.IntN(keys)
		for run := 1 + rng.IntN(4); run > 0 && sent[k] < perKey; run-- {
			id := fmt.Sprintf("k%03d-%02d", k, sent[k])
			res, err := q.Send(context.Background(), &Message{ID: id, Key: fmt.Sprintf("k%03d", k), Body: []byte(id)})
			require.NoError(t, err)
			seqKey[res.Seq] = fmt.Sprintf("k%03d", k)
			if k == 7 && sent[k] == 3 {
				poison = res.Seq
			}
			sent[k]++
			left--
		}
	}
	c, err := q.Consumer("g", &ConsumerOptions{Ordered: true, Concurrency: 8, MaxDeliveries: maxDeliveries,
		Backoff: []time.Duration{0}})
	require.NoError(t, err)

	var mu sync.Mutex
	live := map[string]int{}
	handled := map[string][]uint64{} // by key: seqs of the first successful handlings, in handling order
	done := map[uint64]bool{}
	poisonTries := 0
	var violations []string
	finished, allDone := make(chan struct{}), make(chan struct{})
	// fails says whether the attempt'th handling of seq fails: about one
	// message in four fails once to three times, the poison always.
	fails := func(seq uint64, attempt int) bool {
		h := fnv.New32a()
		fmt.Fprint(h, seq)
		n := int(h.Sum32() % 12)
		return seq == poison || (n < 3 && attempt <= n+1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	consumed := make(chan error, 1)
	go func() {
		consumed <- c.Consume(ctx, func(_ context.Context, d *Delivery) error {
			key := d.Message.Key
			mu.Lock()
			live[key]++
			if live[key] > 1 {
				violations = append(violations, fmt.Sprintf("two deliveries of key %s live at once (seq %d)", key, d.Seq))
			}
			mu.Unlock()
			failed := fails(d.Seq, d.Attempt)
			mu.Lock()
			defer mu.Unlock()
			live[key]--
			if d.Seq == poison {
				poisonTries++
			}
			if failed {
				if d.Seq == poison && poisonTries == maxDeliveries {
					close(finished) // the last success and the poison's end are both needed
				}
				return fmt.Errorf("handler failure on attempt %d", d.Attempt)
			}
			if !done[d.Seq] {
				done[d.Seq] = true
				handled[key] = append(handled[key], d.Seq)
				if len(done) == keys*perKey-1 {
					close(allDone)
				}
			}
			return nil
		})
	}()
	select {
	case <-finished:
	case <-time.After(20 * time.Second):
		t.Fatal("the poison message did not reach MaxDeliveries")
	}
	select { // everything but the poison message is handled in the end
	case <-allDone:
	case <-time.After(20 * time.Second):
		t.Fatal("not every message was handled")
	}
	cancel()
	require.ErrorIs(t, <-consumed, context.Canceled)

	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, violations)
	for key, seqs := range handled {
		for i := 1; i < len(seqs); i++ {
			require.Less(t, seqs[i-1], seqs[i], "key %s: first successful handlings out of seq order: %v", key, seqs)
		}
		want := perKey
		if key == seqKey[poison] {
			want--
		}
		require.Len(t, seqs, want, "key %s", key)
	}
	require.Equal(t, maxDeliveries, poisonTries)
	dead, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, poison, dead[0].Seq)
	assert.Equal(t, maxDeliveries, dead[0].Attempts)
	after := 0 // the poison's key went on: its later messages were handled
	for _, s := range handled[seqKey[poison]] {
		if s > poison {
			after++
		}
	}
	assert.Equal(t, perKey-4, after)
}

// A follower promoted after the leader's ordered group delivered heads and
// moved one to the retry stream continues in the same order: the heads
// first, then each key's later messages.
func TestOrderedPromotedFollowerKeepsTheOrder(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync})
	fdir := t.TempDir()
	la, lb := linkKinds[0].pair(t)
	f := startFollower(t, fdir, lb, nil)
	require.NoError(t, q.AttachReplica(la))
	ids := sendKeyed(t, q, "m", "a", "b", "a", "b")
	opts := &ConsumerOptions{Ordered: true, Backoff: []time.Duration{time.Hour}}
	c, err := q.Consumer("g", opts)
	require.NoError(t, err)
	a := receive(t, c)
	require.Equal(t, ids[0], a.Message.ID)
	require.NoError(t, a.Nack(1)) // due again at once: a's head waits in memory
	a = receive(t, c)
	require.Equal(t, ids[0], a.Message.ID)
	require.NoError(t, a.Nack(time.Hour)) // a failed redelivery: to the retry stream
	b := receive(t, c)
	require.Equal(t, ids[1], b.Message.ID) // delivered, not acked
	require.Nil(t, tryReceive(t, c))
	require.NoError(t, q.flushMarks(context.Background()))
	waitFollowerAcked(t, q, q.Stats().LastSeq, f)
	require.ErrorIs(t, f.stop(), context.Canceled)

	promoted, err := Open(fdir, nil)
	require.NoError(t, err)
	defer promoted.Close()
	pc, err := promoted.Consumer("g", &ConsumerOptions{Ordered: true})
	require.NoError(t, err)
	d := receive(t, pc)
	require.Equal(t, ids[1], d.Message.ID, "b's head first")
	require.Nil(t, tryReceive(t, pc), "a's head waits in the retry stream; b's next waits for b's head")
	require.NoError(t, d.Ack())
	d = receive(t, pc)
	require.Equal(t, ids[3], d.Message.ID)
	require.NoError(t, d.Ack())
	require.Nil(t, tryReceive(t, pc), "a's later message waits for a's head")
	st := promoted.GroupStats()[0]
	assert.Equal(t, 1, st.Retrying)
	assert.Equal(t, 2, st.Waiting)
}

// One slow key holds at most maxBlocked messages in memory: past them the
// group reads no further, and reads on as the key moves on.
func TestOrderedReadAheadIsBounded(t *testing.T) {
	clock := newFakeClock()
	q := consumerQueue(t, vfs.NewMem(), clock)
	defer q.Close()
	var batch []*Message
	for i := range maxBlocked + 2 {
		batch = append(batch, &Message{ID: fmt.Sprintf("a-%d", i), Key: "a"})
	}
	batch = append(batch, &Message{ID: "b", Key: "b"})
	for len(batch) > 0 {
		n := min(len(batch), 512)
		_, err := q.SendBatch(context.Background(), batch[:n])
		require.NoError(t, err)
		batch = batch[n:]
	}
	c, err := q.Consumer("g", &ConsumerOptions{Ordered: true})
	require.NoError(t, err)
	head := receive(t, c)
	require.Equal(t, "a-0", head.Message.ID)
	require.Nil(t, tryReceive(t, c), "b lies past maxBlocked messages of a")
	blocked := func() int {
		c.g.mu.Lock()
		defer c.g.mu.Unlock()
		return len(c.g.blocked)
	}
	require.Equal(t, maxBlocked, blocked())
	for i := 1; i <= 2; i++ {
		require.NoError(t, head.Ack())
		head = receive(t, c)
		require.Equal(t, fmt.Sprintf("a-%d", i), head.Message.ID)
	}
	b := receive(t, c)
	require.Equal(t, "b", b.Message.ID, "read once a moved on")
	require.Equal(t, maxBlocked-1, blocked())
}

// Forced retention skipping an Ordered group's stalled key drops its head
// and the messages read behind it: the key goes on with what is left.
func TestOrderedForcedRetentionMovesTheKeyOn(t *testing.T) {
	const segment = 16 << 10
	q, err := Open("/q", &Options{SegmentSize: segment, MaxMessageSize: 4 << 10, fs: vfs.NewMem(), RetentionBytes: 3 * segment})
	require.NoError(t, err)
	defer q.Close()
	ctx := context.Background()
	c, err := q.Consumer("g", &ConsumerOptions{Ordered: true})
	require.NoError(t, err)
	for i := range 3 {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("a-%d", i), Key: "a"})
		require.NoError(t, err)
	}
	stalled := receive(t, c) // a's head, never acked
	require.Equal(t, "a-0", stalled.Message.ID)
	require.Nil(t, tryReceive(t, c)) // reads a-1 and a-2 behind it
	for i := range 80 {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("x-%d", i), Key: "x", Body: make([]byte, 2000)})
		require.NoError(t, err)
	}
	_, err = q.Send(ctx, &Message{ID: "a-last", Key: "a"})
	require.NoError(t, err)
	require.NoError(t, q.retain())
	require.Greater(t, q.Stats().RetentionSkipped, uint64(10))
	for {
		d := receive(t, c)
		require.NoError(t, d.Ack())
		if d.Message.Key == "a" {
			require.Equal(t, "a-last", d.Message.ID, "a's skipped messages are gone, and the key goes on")
			break
		}
	}
	c.g.mu.Lock()
	defer c.g.mu.Unlock()
	assert.Empty(t, c.g.blocked)
}

// The test again, driven step by step on a fake clock: up to 8
// deliveries held at once over 100 keys, random acks, nacks and deliveries
// left to time out (their late Acks must be ErrDeliveryExpired once the
// message was delivered again), and a poison message. Per key, no two held
// deliveries are live at once and the first acks follow seq order; the poison
// message is dead-lettered after MaxDeliveries and its key goes on.
func TestOrderedFakeClockDriver(t *testing.T) {
	const keys, perKey, concurrency, maxDeliveries = 100, 5, 8, 5
	clock := newFakeClock()
	q := consumerQueue(t, vfs.NewMem(), clock)
	defer q.Close()
	rng := rand.New(rand.NewPCG(7, 19))
	var msgs []*Message
	sent := make([]int, keys)
	for len(msgs) < keys*perKey {
		k := rng.IntN(keys)
		for run := 1 + rng.IntN(3); run > 0 && sent[k] < perKey; run-- {
			msgs = append(msgs, &Message{ID: fmt.Sprintf("k%03d-%d", k, sent[k]), Key: fmt.Sprintf("k%03d", k)})
			sent[k]++
		}
	}
	results, err := q.SendBatch(context.Background(), msgs)
	require.NoError(t, err)
	poison := results[len(results)/3].Seq
	poisonKey := msgs[len(results)/3].Key
	c, err := q.Consumer("g", &ConsumerOptions{Ordered: true, AckTimeout: 10 * time.Second, MaxDeliveries: maxDeliveries,
		Backoff: []time.Duration{time.Second, 2 * time.Second}})
	require.NoError(t, err)

	var held, expired []*Delivery // expired: held past their deadline, not acked
	acked := map[uint64]bool{}
	order := map[string][]uint64{}
	lateAcks := 0
	// Random nacks and timeouts may dead-letter other messages too: the run
	// ends once every message is acked or dead.
	for step := 0; len(acked)+q.GroupStats()[0].DeadLetters < keys*perKey; step++ {
		require.Less(t, step, 100_000, "no progress: %d acked, %d dead of %d", len(acked), q.GroupStats()[0].DeadLetters, keys*perKey)
		for len(held) < concurrency {
			d := tryReceive(t, c)
			if d == nil {
				break
			}
			for _, h := range held {
				require.NotEqual(t, d.Message.Key, h.Message.Key, "seq %d delivered while seq %d of its key is held", d.Seq, h.Seq)
			}
			for i := 0; i < len(expired); i++ {
				if expired[i].Seq == d.Seq { // delivered again: the old delivery's late Ack counts for nothing
					require.ErrorIs(t, expired[i].Ack(), ErrDeliveryExpired)
					lateAcks++
					expired = append(expired[:i], expired[i+1:]...)
					i--
				}
			}
			held = append(held, d)
		}
		if len(held) == 0 {
			clock.Advance(time.Second) // backoffs run out
			continue
		}
		i := rng.IntN(len(held))
		d := held[i]
		switch n := rng.IntN(40); {
		case d.Seq == poison || n < 3:
			require.NoError(t, d.Nack(0))
			held = append(held[:i], held[i+1:]...)
		case n < 4:
			// Left to time out: the deadline passes for every held one.
			clock.Advance(11 * time.Second)
			expired = append(expired, held...)
			held = held[:0]
		default:
			require.NoError(t, d.Ack())
			held = append(held[:i], held[i+1:]...)
			if !acked[d.Seq] {
				acked[d.Seq] = true
				order[d.Message.Key] = append(order[d.Message.Key], d.Seq)
			}
		}
	}
	for key, seqs := range order {
		for i := 1; i < len(seqs); i++ {
			require.Less(t, seqs[i-1], seqs[i], "key %s: first acks out of seq order: %v", key, seqs)
		}
	}
	dead, err := q.DeadLetters("g")
	require.NoError(t, err)
	var poisonDead *DeadLetter
	for i := range dead {
		require.False(t, acked[dead[i].Seq])
		if dead[i].Seq == poison {
			poisonDead = &dead[i]
		}
	}
	require.NotNil(t, poisonDead, "the poison message is dead-lettered")
	assert.Equal(t, maxDeliveries, poisonDead.Attempts)
	after := 0
	for _, s := range order[poisonKey] {
		if s > poison {
			after++
		}
	}
	assert.Positive(t, after, "the poison message's key went on")
	assert.Less(t, len(dead), keys*perKey/10, "few messages beside the poison one fail MaxDeliveries times at random")
	assert.Positive(t, lateAcks, "some late Ack met a redelivery")
	t.Logf("%d acked, %d dead letters, %d late acks", len(acked), len(dead), lateAcks)
}
