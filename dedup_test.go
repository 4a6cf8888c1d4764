package zeroloss

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

func dedupQueue(t *testing.T, fs vfs.FS, clock *fakeClock, o Options) *Queue {
	t.Helper()
	o.fs = fs
	if o.SegmentSize == 0 {
		o.SegmentSize, o.MaxMessageSize = 64<<10, 4<<10
	}
	if clock != nil {
		o.now = clock.Now
	}
	q, err := Open("/q", &o)
	require.NoError(t, err)
	return q
}

// messagesWithID counts the messages with id in the log.
func messagesWithID(t *testing.T, q *Queue, id string) int {
	t.Helper()
	n := 0
	for _, s := range readBack(t, q) {
		if s.Msg.ID == id {
			n++
		}
	}
	return n
}

func TestDuplicateSendAppendsNothingAndReportsTheOriginal(t *testing.T) {
	q := dedupQueue(t, vfs.NewMem(), nil, Options{})
	defer q.Close()
	ctx := context.Background()
	first, err := q.Send(ctx, &Message{ID: "order-1", Body: []byte("a")})
	require.NoError(t, err)
	require.False(t, first.Duplicate)
	again, err := q.Send(ctx, &Message{ID: "order-1", Body: []byte("different body, same ID")})
	require.NoError(t, err)
	assert.True(t, again.Duplicate)
	assert.Equal(t, first.Seq, again.Seq)
	assert.Equal(t, SendOK, again.Status)
	assert.Equal(t, 1, messagesWithID(t, q, "order-1"))
	st := q.Stats()
	assert.Equal(t, uint64(1), st.Duplicates)
	assert.Equal(t, 1, st.DedupEntries)

	// Generated IDs are not remembered.
	for i := 0; i < 3; i++ {
		_, err := q.Send(ctx, &Message{Body: []byte("x")})
		require.NoError(t, err)
	}
	assert.Equal(t, 1, q.Stats().DedupEntries)
}

func TestDedupWindowExpiresAndSurvivesRestart(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	q := dedupQueue(t, fs, clock, Options{DedupWindow: time.Minute})
	ctx := context.Background()
	first, err := q.Send(ctx, &Message{ID: "a", Body: []byte("1")})
	require.NoError(t, err)
	require.NoError(t, q.Close())

	q = dedupQueue(t, fs, clock, Options{DedupWindow: time.Minute})
	again, err := q.Send(ctx, &Message{ID: "a", Body: []byte("1")})
	require.NoError(t, err)
	assert.True(t, again.Duplicate, "rebuilt from the log on Open")
	assert.Equal(t, first.Seq, again.Seq)

	clock.Advance(time.Minute + time.Second)
	later, err := q.Send(ctx, &Message{ID: "a", Body: []byte("1")})
	require.NoError(t, err)
	assert.False(t, later.Duplicate, "past the window it is a new message")
	assert.Greater(t, later.Seq, first.Seq)
	require.NoError(t, q.Close())

	// On Open, messages older than the window are not read into the table.
	clock.Advance(2 * time.Minute)
	q = dedupQueue(t, fs, clock, Options{DedupWindow: time.Minute})
	defer q.Close()
	assert.Zero(t, q.Stats().DedupEntries)
}

// A power loss that takes an acknowledged-as-written (FlushAsync) message
// also takes its dedup entry: the resend is appended, not dropped.
func TestDedupNeverRemembersALostMessage(t *testing.T) {
	fs := vfs.NewMem()
	q := dedupQueue(t, fs, nil, Options{Flush: FlushAsync, FlushInterval: time.Hour})
	res, err := q.Send(context.Background(), &Message{ID: "lost", Body: []byte("x")})
	require.NoError(t, err)
	require.Equal(t, SendOK, res.Status) // written, not synced
	fs.Crash(vfs.DropUnsynced, nil)
	_ = q.Close()

	q = dedupQueue(t, fs, nil, Options{Flush: FlushAsync, FlushInterval: time.Hour})
	defer q.Close()
	require.Zero(t, messagesWithID(t, q, "lost"), "the crash took it")
	again, err := q.Send(context.Background(), &Message{ID: "lost", Body: []byte("x")})
	require.NoError(t, err)
	assert.False(t, again.Duplicate)
}

func TestDedupEntriesBoundEvictsOldest(t *testing.T) {
	q := dedupQueue(t, vfs.NewMem(), nil, Options{DedupEntries: 2})
	defer q.Close()
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		_, err := q.Send(ctx, &Message{ID: id, Body: []byte(id)})
		require.NoError(t, err)
	}
	st := q.Stats()
	assert.Equal(t, 2, st.DedupEntries)
	assert.Equal(t, uint64(1), st.DedupEvictions)
	r, err := q.Send(ctx, &Message{ID: "c", Body: []byte("c")})
	require.NoError(t, err)
	assert.True(t, r.Duplicate)
	r, err = q.Send(ctx, &Message{ID: "a", Body: []byte("a")})
	require.NoError(t, err)
	assert.False(t, r.Duplicate, "evicted early, and counted")
}

func TestConcurrentSendsOfOneIDAppendOnce(t *testing.T) {
	q := dedupQueue(t, vfs.NewMem(), nil, Options{})
	defer q.Close()
	var wg sync.WaitGroup
	results := make([]SendResult, 16)
	for i := range results {
		wg.Go(func() {
			r, err := q.Send(context.Background(), &Message{ID: "same", Body: []byte("x")})
			require.NoError(t, err)
			results[i] = r
		})
	}
	wg.Wait()
	dups := 0
	for _, r := range results {
		assert.Equal(t, results[0].Seq, r.Seq)
		assert.Equal(t, SendOK, r.Status)
		if r.Duplicate {
			dups++
		}
	}
	assert.Equal(t, len(results)-1, dups)
	assert.Equal(t, 1, messagesWithID(t, q, "same"))
}

func TestSendBatchDeduplicates(t *testing.T) {
	q := dedupQueue(t, vfs.NewMem(), nil, Options{})
	defer q.Close()
	ctx := context.Background()
	old, err := q.Send(ctx, &Message{ID: "old", Body: []byte("o")})
	require.NoError(t, err)
	rs, err := q.SendBatch(ctx, []*Message{
		{ID: "x", Body: []byte("1")}, {ID: "old", Body: []byte("o")}, {ID: "x", Body: []byte("1")}, {Body: []byte("2")},
	})
	require.NoError(t, err)
	require.Len(t, rs, 4)
	assert.False(t, rs[0].Duplicate)
	assert.True(t, rs[1].Duplicate)
	assert.Equal(t, old.Seq, rs[1].Seq)
	assert.True(t, rs[2].Duplicate)
	assert.Equal(t, rs[0].Seq, rs[2].Seq)
	assert.False(t, rs[3].Duplicate)
	assert.Equal(t, rs[0].Seq+1, rs[3].Seq, "the new ones are appended together")
	assert.Equal(t, 1, messagesWithID(t, q, "x"))
}

func TestDedupOffAndOptions(t *testing.T) {
	q := dedupQueue(t, vfs.NewMem(), nil, Options{DedupWindow: -1})
	defer q.Close()
	for i := 0; i < 2; i++ {
		r, err := q.Send(context.Background(), &Message{ID: "a", Body: []byte("x")})
		require.NoError(t, err)
		assert.False(t, r.Duplicate)
	}
	assert.Equal(t, 2, messagesWithID(t, q, "a"))
	_, err := Open(t.TempDir(), &Options{DedupEntries: -1})
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "DedupEntries")
}

// Retention deletes the segment holding a message; its dedup entry survives
// in the checkpoint and across a restart.
func TestDedupSurvivesRetention(t *testing.T) {
	fs := vfs.NewMem()
	q := dedupQueue(t, fs, nil, Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10})
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	ctx := context.Background()
	first, err := q.Send(ctx, &Message{ID: "keep-me", Body: make([]byte, 2000)})
	require.NoError(t, err)
	for i := 0; i < 40; i++ {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("fill-%d", i), Body: make([]byte, 2000)})
		require.NoError(t, err)
	}
	for i := 0; i < 41; i++ {
		require.NoError(t, receive(t, c).Ack())
	}
	require.NoError(t, q.flushMarks(ctx))
	require.NoError(t, q.retain())
	require.NotZero(t, q.Stats().SegmentsDeleted)
	require.Zero(t, messagesWithID(t, q, "keep-me"), "its segment is gone")
	require.NoError(t, q.Close())

	q = dedupQueue(t, fs, nil, Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10})
	defer q.Close()
	again, err := q.Send(ctx, &Message{ID: "keep-me", Body: make([]byte, 2000)})
	require.NoError(t, err)
	assert.True(t, again.Duplicate)
	assert.Equal(t, first.Seq, again.Seq)
}

// dedupContents lists the dedup table as "id@seq/time", oldest (next
// evicted) first.
func dedupContents(q *Queue) []string {
	t := q.dedup
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, e := range t.order[t.head:] {
		if t.byID[e.key] == e {
			out = append(out, fmt.Sprintf("%s@%d/%d", e.key.id, e.seq, e.at.UnixNano()))
		}
	}
	return out
}

// After a restart the dedup table holds exactly what the running queue held,
// in the same order and with the same times (so the same IDs expire when),
// whether or not it was full (DedupEntries) and whether
// the IDs come from the log or from a checkpoint whose segments retention
// deleted.
func TestDedupAfterRestartHoldsWhatTheRunningQueueHeld(t *testing.T) {
	for _, tc := range []struct {
		name          string
		entries       int
		before, after int  // IDs sent before the checkpoint and after it
		resend        bool // resend the first ID after it was evicted
	}{
		{name: "below DedupEntries", entries: 20, before: 12, after: 3},
		{name: "at DedupEntries", entries: 15, before: 12, after: 3},
		{name: "one above", entries: 14, before: 12, after: 3},
		{name: "above, all in the log after the checkpoint", entries: 4, before: 12, after: 4},
		{name: "above, some from the checkpoint", entries: 4, before: 12, after: 2},
		{name: "above, none after the checkpoint", entries: 4, before: 12, after: 0},
		{name: "far above", entries: 4, before: 20, after: 9},
		{name: "an evicted ID sent again", entries: 4, before: 12, after: 2, resend: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			clock := newFakeClock()
			o := Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10, DedupEntries: tc.entries}
			q := dedupQueue(t, fs, clock, o)
			q.opts.now = func() time.Time { // time passes during a Send too
				clock.Advance(time.Microsecond)
				return clock.Now()
			}
			c, err := q.Consumer("g", nil)
			require.NoError(t, err)
			ctx := context.Background()
			send := func(id string) {
				t.Helper()
				clock.Advance(time.Millisecond)
				r, err := q.Send(ctx, &Message{ID: id, Body: make([]byte, 2000)})
				require.NoError(t, err)
				require.False(t, r.Duplicate, id)
			}
			for i := range tc.before {
				send(fmt.Sprintf("b%d", i))
			}
			require.Len(t, drain(t, c), tc.before)
			require.NoError(t, q.flushMarks(ctx))
			require.NoError(t, q.retain())
			require.NotZero(t, q.Stats().SegmentsDeleted, "the checkpoint carries IDs the log no longer has")
			for i := range tc.after {
				send(fmt.Sprintf("a%d", i))
			}
			if tc.resend {
				send("b0")
			}
			running := dedupContents(q)
			require.Len(t, running, min(tc.entries, tc.before+tc.after+btoi(tc.resend)))
			require.NoError(t, q.Close())

			q = dedupQueue(t, fs, clock, o)
			defer q.Close()
			assert.Equal(t, running, dedupContents(q))
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A Send that claims an ID and is then not appended (its ctx ended first)
// evicts nothing: the table keeps what a restart would rebuild.
func TestDedupClaimNotAppendedEvictsNothing(t *testing.T) {
	table := newDedupTable(time.Minute, 2)
	now := time.Unix(1_700_000_000, 0)
	for i, id := range []string{"a", "b"} {
		e, isNew := claimOne(table, id, now)
		require.True(t, isNew)
		table.settle(e, uint64(i+1), now)
	}
	e, isNew := claimOne(table, "c", now)
	require.True(t, isNew)
	table.drop(e)
	entries, evictions, _ := table.counts()
	assert.Equal(t, 2, entries)
	assert.Zero(t, evictions)
	for _, id := range []string{"a", "b"} {
		_, isNew := claimOne(table, id, now)
		assert.False(t, isNew, "%s is still remembered", id)
	}
}

// A SendBatch one of whose IDs a concurrent Send has claimed, and which that
// Send then withdraws (its ctx ends before its batch is written), still
// appends the whole batch in order with consecutive seqs.
func TestSendBatchKeepsItsOrderWhenAClaimingSendIsWithdrawn(t *testing.T) {
	fs := &slowSyncFS{FS: vfs.NewMem(), armed: make(chan struct{}), release: make(chan struct{})}
	q := dedupQueue(t, fs, nil, Options{FlushTimeout: time.Hour})
	defer q.Close()
	warm, err := q.Send(context.Background(), &Message{ID: "warm", Body: []byte("w")})
	require.NoError(t, err)

	close(fs.armed)
	go func() { // its batch's commit hangs in fdatasync; later batches wait
		_, _ = q.Send(context.Background(), &Message{ID: "first", Body: []byte("1")})
	}()
	require.Eventually(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.committing && q.log.LastSeq() > warm.Seq
	}, 5*time.Second, time.Millisecond, "the first batch is being committed")

	ctx, cancel := context.WithCancel(context.Background())
	withdrawn := make(chan error, 1)
	go func() { // claims "x", joins the pending batch, then gives up
		_, err := q.Send(ctx, &Message{ID: "x", Body: []byte("alone")})
		withdrawn <- err
	}()
	require.Eventually(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.pending.live == 1
	}, 5*time.Second, time.Millisecond, "the Send of x joined the pending batch")

	type batchResult struct {
		rs  []SendResult
		err error
	}
	batch := make(chan batchResult, 1)
	go func() {
		rs, err := q.SendBatch(context.Background(), []*Message{
			{ID: "b1", Body: []byte("1")}, {ID: "x", Body: []byte("batch")}, {ID: "b2", Body: []byte("2")},
		})
		batch <- batchResult{rs, err}
	}()
	require.Eventually(t, func() bool {
		q.mu.Lock()
		joined := q.pending.live == 2
		q.mu.Unlock()
		q.dedup.mu.Lock()
		defer q.dedup.mu.Unlock()
		e := q.dedup.byID[dedupKey{id: "x"}]
		return joined || (e != nil && e.wait != nil)
	}, 5*time.Second, time.Millisecond, "the SendBatch is waiting")
	cancel()
	require.ErrorIs(t, <-withdrawn, context.Canceled)
	close(fs.release)

	got := <-batch
	require.NoError(t, got.err)
	require.Len(t, got.rs, 3)
	for i, r := range got.rs {
		assert.False(t, r.Duplicate, "message %d: the Send of x was withdrawn", i)
		assert.Equal(t, got.rs[0].Seq+uint64(i), r.Seq, "message %d: consecutive seqs", i)
	}
	var ids []string
	for _, s := range readBack(t, q) {
		ids = append(ids, s.Msg.ID)
	}
	assert.Equal(t, []string{"warm", "first", "b1", "x", "b2"}, ids)
}

// A commit's claim hides the entry of an earlier Send of its ID; if the
// commit is not appended the entry comes back, else the commit replaces it.
func TestDedupCommitClaimReplacesOrRestores(t *testing.T) {
	table := newDedupTable(time.Minute, 10)
	now := time.Unix(1_700_000_000, 0)
	e, _ := claimOne(table, "x", now)
	table.settle(e, 5, now)

	c, wait := table.claimCommit(dedupKey{id: "x"}, now)
	require.Nil(t, wait)
	got, isNew := claimOne(table, "x", now)
	require.False(t, isNew)
	assert.Same(t, c, got, "Sends of x wait for the commit")
	table.drop(c)
	got, _ = claimOne(table, "x", now)
	assert.Equal(t, uint64(5), got.seq, "not appended: the earlier entry is back")

	c, _ = table.claimCommit(dedupKey{id: "x"}, now)
	table.settle(c, 9, now)
	got, _ = claimOne(table, "x", now)
	assert.Equal(t, uint64(9), got.seq)
	entries, _, _ := table.counts()
	assert.Equal(t, 1, entries)
}

// claimOne claims id alone, as a Send does: the entry of its original if it
// has one (new false; pending if that Send is not decided yet), or its claim.
func claimOne(t *dedupTable, id string, now time.Time) (e *dedupEntry, new bool) {
	var entries [1]*dedupEntry
	var fresh [1]bool
	if wait := t.claimAll([]dedupKey{{id: id}}, now, entries[:], fresh[:]); wait != nil {
		return wait, false
	}
	return entries[0], fresh[0]
}
