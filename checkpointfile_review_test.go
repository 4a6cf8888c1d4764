package zeroloss

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestCheckpointFileDedupOptionsChanged: a checkpoint file holds the dedup
// IDs the options it was written under kept. Reopened with dedup turned on,
// a longer DedupWindow or more DedupEntries, Open must still remember every
// ID a replay of the whole log remembers (the file is not enough: it is
// ignored), and a resend of such an ID is a duplicate.
func TestCheckpointFileDedupOptionsChanged(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after func(*Options)
		ignored       bool // the file cannot serve the new options
		duplicate     bool // a resend of the first ID is a duplicate
	}{
		{"dedup turned on", func(o *Options) { o.DedupWindow = -1 }, func(o *Options) {}, true, true},
		{"longer window", func(o *Options) { o.DedupWindow = 30 * time.Second }, func(o *Options) { o.DedupWindow = time.Hour }, true, true},
		{"more entries", func(o *Options) { o.DedupEntries = 10 }, func(o *Options) { o.DedupEntries = 1000 }, true, true},
		{"shorter window", func(o *Options) { o.DedupWindow = time.Hour }, func(o *Options) { o.DedupWindow = 20 * time.Minute }, false, true},
		{"fewer entries", func(o *Options) { o.DedupEntries = 1000 }, func(o *Options) { o.DedupEntries = 10 }, false, false},
		{"dedup turned off", func(o *Options) {}, func(o *Options) { o.DedupWindow = -1 }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, clock := vfs.NewMem(), newFakeClock()
			opts := checkpointOptions(fs, clock)
			tc.before(&opts)
			q, err := Open("/q", &opts)
			require.NoError(t, err)
			ctx := context.Background()
			for i := range 40 {
				_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("m%d", i), Body: []byte("x")})
				require.NoError(t, err)
			}
			clock.Advance(time.Minute) // past the short window, within the others
			require.NoError(t, q.Close())
			written := q.files.written
			require.Positive(t, written, "Close wrote a checkpoint file")

			opts = checkpointOptions(fs, clock)
			tc.after(&opts)
			q = requireSameAsFullReplay(t, fs, opts, tc.name)
			defer q.Close()
			if tc.ignored {
				assert.Greater(t, q.Stats().OpenFramesRead, uint64(40), "the whole log")
			} else {
				assert.LessOrEqual(t, q.Stats().OpenFramesRead, uint64(1), "from the file")
			}
			res, err := q.Send(ctx, &Message{ID: "m0", Body: []byte("again")})
			require.NoError(t, err)
			assert.Equal(t, tc.duplicate, res.Duplicate, "a resend of m0")
		})
	}
}

// TestCheckpointFileResolvedHalvesAcrossRetention: transactions resolved in
// segments retention deleted since. A replay of what is left of the log has
// forgotten them (a Commit or Rollback of one is ErrTxNotFound); Open from
// the checkpoint file remembers them, as the running queue did, and answers
// them truly (the commit's result; a rolled-back half's error). Everything
// else it rebuilds as that replay does.
func TestCheckpointFileResolvedHalvesAcrossRetention(t *testing.T) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	ctx := context.Background()
	c, err := q.Consumer("a", nil)
	require.NoError(t, err)
	var halves []*Half
	var commits []SendResult
	for i := range 6 {
		h, _, err := q.SendHalf(ctx, &Message{ID: fmt.Sprintf("tx%d", i), Body: []byte("half")})
		require.NoError(t, err)
		halves = append(halves, h)
		if i%2 == 0 {
			res, err := h.Commit(ctx)
			require.NoError(t, err)
			commits = append(commits, res)
		} else {
			require.NoError(t, h.Rollback(ctx))
		}
	}
	for round := range 20 {
		for i := range 20 {
			_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("r%d-%d", round, i), Body: make([]byte, 300)})
			require.NoError(t, err)
		}
		for _, d := range receiveNow(t, c) {
			require.NoError(t, d.Ack())
		}
		require.NoError(t, q.flushMarks(ctx))
		require.NoError(t, q.retain())
		q.checkpointState(false)
	}
	require.Greater(t, q.log.FirstSeq(), commits[len(commits)-1].Seq, "retention deleted the transactions' segments")
	require.NoError(t, c.Close())
	require.NoError(t, q.Close())

	whole, err := cloneMem(fs, "/q", false)
	require.NoError(t, err)
	full, err := fullReplayState(fs, "/q", checkpointOptions(fs, clock), time.Time{})
	require.NoError(t, err)
	for _, from := range []struct {
		name string
		fs   *vfs.MemFS
	}{{"the checkpoint file", fs}, {"the whole log", whole}} {
		o := checkpointOptions(from.fs, clock)
		q, err := Open("/q", &o)
		require.NoError(t, err, from.name)
		if from.fs == fs {
			assert.Equal(t, withoutDone(full), withoutDone(replayedState(q, time.Time{})), "but the resolved halves")
		}
		for i, h := range halves {
			h := &Half{q: q, Seq: h.Seq, ID: h.ID}
			var err error
			if i%2 == 0 {
				var res SendResult
				res, err = h.Commit(ctx)
				if from.fs == fs {
					require.NoError(t, err, "%s: commit of tx%d again", from.name, i)
					assert.Equal(t, commits[i/2].Seq, res.Seq, "%s: the commit's seq", from.name)
				}
			} else {
				_, err = h.Commit(ctx)
				if from.fs == fs {
					require.ErrorIs(t, err, ErrTxRolledBack, "%s: commit of rolled-back tx%d", from.name, i)
				}
			}
			if from.fs == whole {
				require.ErrorIs(t, err, ErrTxNotFound, "%s: tx%d forgotten", from.name, i)
			}
		}
		require.NoError(t, q.Close())
	}
}

// TestCheckpointFileBaseAtTheEndOfADeletedSegment: the record the base was
// taken at is the last of the oldest segment, and retention deletes that
// segment (forced by RetentionBytes: it deletes below the segment's last
// seq + 1). The next checkpoint file must still be written, and Open read
// only the records after it.
func TestCheckpointFileBaseAtTheEndOfADeletedSegment(t *testing.T) {
	ctx := context.Background()
	found := false
	for filler := 0; filler < 200 && !found; filler++ {
		fs, clock := vfs.NewMem(), newFakeClock()
		opts := checkpointOptions(fs, clock)
		q, err := Open("/q", &opts)
		require.NoError(t, err)
		for i := range filler {
			_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("f%d", i), Body: make([]byte, 100)})
			require.NoError(t, err)
		}
		require.NoError(t, q.Close())
		q, err = Open("/q", &opts)
		require.NoError(t, err)
		at := q.files.at.seq // Open's own epoch record
		_, err = q.Send(ctx, &Message{ID: "big", Body: make([]byte, 1900)})
		require.NoError(t, err)
		if last, ok := q.log.OldestSealed(); !ok || last != at || q.log.FirstSeq() == last {
			require.NoError(t, q.Close())
			continue
		}
		found = true
		q.opts.RetentionBytes = 1
		require.NoError(t, q.retain())
		require.Greater(t, q.log.FirstSeq(), at, "retention deleted the segment of the base's record")
		for i := range 20 {
			_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("n%d", i), Body: make([]byte, 10)})
			require.NoError(t, err)
		}
		require.NoError(t, q.Close())
		q = requireSameAsFullReplay(t, fs, opts, "reopened")
		assert.LessOrEqual(t, q.Stats().OpenFramesRead, uint64(1), "Close wrote a checkpoint file at its last record (filler %d)", filler)
		require.NoError(t, q.Close())
	}
	require.True(t, found, "no filler made the base's record the last of the oldest segment")
}

// TestCheckpointFileMixedWorkload: a workload the simulation does not run
// (deleted groups, one declared again, NoDedup messages, dead letters and
// a redrive, pending, committed and rolled-back halves, delayed messages,
// an ordered group, forced retention) with checkpoint files written in
// between: after a clean Close and after a kill at each round, Open from the
// newest file rebuilds what a replay of the whole log does (but the resolved
// halves retention deleted, which it remembers).
func TestCheckpointFileMixedWorkload(t *testing.T) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	opts.CheckpointBytes = 4 << 10
	opts.RetentionBytes = 32 << 10 // forced retention deletes what groups still owe
	opts.TxChecker = func(context.Context, *Message) TxState { return TxUnknown }
	ctx := context.Background()
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	copts := &ConsumerOptions{MaxDeliveries: 2, Backoff: []time.Duration{time.Second}}
	dead := 0
	for round := range 12 {
		for _, name := range []string{"x", "y", "z"} {
			c, err := q.Consumer(name, copts)
			require.NoError(t, err)
			require.NoError(t, c.Close())
		}
		o, err := q.Consumer("o", &ConsumerOptions{Ordered: true, Topic: "k"})
		require.NoError(t, err)
		for i := range 12 {
			m := &Message{ID: fmt.Sprintf("r%d-%d", round, i%8), Body: []byte(strings.Repeat("b", 150*i)), NoDedup: i%5 == 0}
			if i%4 == 0 {
				m.DeliverAt = clock.Now().Add(time.Duration(i) * time.Second)
			}
			if i%3 == 0 {
				m.Topic, m.Key = "k", fmt.Sprint(i%2)
			}
			_, err := q.Send(ctx, m)
			require.NoError(t, err)
		}
		h, _, err := q.SendHalf(ctx, &Message{ID: fmt.Sprintf("tx%d", round), Body: []byte("half")})
		require.NoError(t, err)
		switch round % 3 {
		case 0:
			_, err = h.Commit(ctx)
			require.NoError(t, err)
		case 1:
			require.NoError(t, h.Rollback(ctx))
		}
		for _, name := range []string{"x", "y"} {
			c, err := q.Consumer(name, copts)
			require.NoError(t, err)
			for i, d := range receiveNow(t, c) {
				switch i % 3 {
				case 0:
					require.NoError(t, d.Ack())
				case 1:
					require.NoError(t, d.NackNow())
				}
			}
			require.NoError(t, c.Close())
		}
		for i, d := range receiveNow(t, o) {
			if i%2 == 0 {
				require.NoError(t, d.Ack())
			}
		}
		require.NoError(t, o.Close())
		if round%3 == 2 {
			if dead, err := q.DeadLetters("x"); err == nil && len(dead) > 0 {
				_, err := q.RedriveDeadLetters(ctx, "x")
				require.NoError(t, err)
			}
			require.NoError(t, q.DeleteGroup("z"))
		}
		clock.Advance(30 * time.Second)
		require.NoError(t, q.flushMarks(ctx))
		require.NoError(t, q.retain())
		q.checkpointState(false)
		if round%2 == 0 {
			require.NoError(t, q.Close())
		} else {
			for i := range 3 { // records after the newest file
				_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("late%d-%d", round, i), Body: []byte("late")})
				require.NoError(t, err)
			}
			require.NoError(t, q.DeleteGroup("y"))
			fs.SetOpLimit(fs.OpCount()) // kill -9
			q.Close()
			fs.Kill()
		}
		full, err := fullReplayState(fs, "/q", opts, time.Time{})
		require.NoError(t, err)
		q, err = Open("/q", &opts)
		require.NoError(t, err)
		require.Equal(t, withoutDone(full), withoutDone(replayedState(q, time.Time{})), "round %d", round)
		dead = max(dead, q.ledger.deadCount(1))
	}
	assert.Greater(t, q.log.FirstSeq(), uint64(1000), "forced retention deleted segments")
	assert.Positive(t, dead, "dead letters")
	n, _, _, _, _ := q.tx.counts()
	assert.Positive(t, n, "pending halves")
	require.NoError(t, q.Close())
}

// withoutDone is replayedState but the resolved halves, which Open from a
// checkpoint file remembers past retention and a replay of the trimmed log
// does not (TestCheckpointFileResolvedHalvesAcrossRetention).
func withoutDone(state string) string {
	var kept []string
	for _, line := range strings.Split(state, "\n") {
		if !strings.HasPrefix(line, "done ") {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

// TestCheckpointFilesWhileTheQueueRuns: markLoop's work (marks, retention,
// checkpoint files) runs on its own goroutine, as markLoop does, while
// Sends, acks, group declarations and deletions go on; after a kill, Open
// from the newest file rebuilds what a replay of the whole log does and
// every SendOK message is in the log. (Run it with -race too.)
func TestCheckpointFilesWhileTheQueueRuns(t *testing.T) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	opts.CheckpointBytes = 2 << 10
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	ctx := context.Background()
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() { // markLoop's tick, over and over
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := q.flushMarks(ctx); err != nil {
				t.Errorf("flushMarks: %v", err)
			}
			if err := q.retain(); err != nil {
				t.Errorf("retain: %v", err)
			}
			q.checkpointState(false)
		}
	}()
	sent := map[string]uint64{}
	for round := range 30 {
		name := fmt.Sprintf("g%d", round%4)
		c, err := q.Consumer(name, &ConsumerOptions{MaxDeliveries: 2})
		require.NoError(t, err)
		for i := range 10 {
			m := &Message{ID: fmt.Sprintf("r%d-%d", round, i), Body: make([]byte, 200+i*50)}
			res, err := q.Send(ctx, m)
			require.NoError(t, err)
			require.Equal(t, SendOK, res.Status)
			sent[m.ID] = res.Seq
		}
		for i, d := range receiveNow(t, c) {
			if i%4 != 3 {
				require.NoError(t, d.Ack())
			}
		}
		require.NoError(t, c.Close())
		if round%7 == 6 {
			require.NoError(t, q.DeleteGroup(name))
		}
	}
	close(stop)
	<-stopped
	require.Positive(t, q.Stats().CheckpointFiles, "files written while it ran")
	fs.SetOpLimit(fs.OpCount()) // kill -9
	q.Close()
	fs.Kill()
	q = requireSameAsFullReplay(t, fs, opts, "after a kill")
	defer q.Close()
	present := map[string]bool{}
	for _, s := range readBack(t, q) {
		present[s.Msg.ID] = true
	}
	for id, seq := range sent {
		if seq >= q.log.FirstSeq() { // not deleted by retention
			require.True(t, present[id], "SendOK message %s lost", id)
		}
	}
}

// TestCheckpointFileTakenInsideACheckpoint: a checkpoint of many parts is
// written across a segment roll (the roll syncs the first segment: the
// synced seq stops between its parts until the next sync) and a checkpoint
// file is taken then, at a part that is not the last. Open from it reads the
// rest of the parts as pieces of a checkpoint it never saw start, so it does
// not load that checkpoint, where a replay of the whole log does: the state
// must come out the same all the same (the checkpoint holds what the records
// before it built).
func TestCheckpointFileTakenInsideACheckpoint(t *testing.T) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	opts.Flush = FlushAsync // with manualTicks, nothing syncs but a roll and Log.Sync
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	ctx := context.Background()
	c, err := q.Consumer("g", &ConsumerOptions{MaxDeliveries: 1})
	require.NoError(t, err)
	for i := range 24 {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("d%d", i), Body: make([]byte, 1800)})
		require.NoError(t, err)
	}
	q.syncTick() // consumers see what is synced
	for _, d := range receiveNow(t, c) {
		require.NoError(t, d.NackNow()) // a dead letter, carried by checkpoints with its message
	}
	require.NoError(t, c.Close())
	q.syncTick()
	dead, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, 24)

	// What retention's checkpoint writes, without its Log.Sync.
	q.recMu.Lock()
	cp := q.ledger.checkpoint()
	cp.Dedup = q.dedup.snapshot(clock.Now())
	cp.Halves = q.tx.snapshot()
	parts := record.SplitCheckpoint(record.AppendCheckpoint(nil, &cp), 7, min(q.opts.MaxMessageSize, q.log.MaxFrameSize())-record.HeaderSize)
	var size int64
	for _, p := range parts {
		size += int64(record.HeaderSize + len(p))
	}
	first, n, _, err := q.submit(ctx, size, len(parts), false, func(buf []byte) []byte {
		for _, p := range parts {
			buf = record.AppendFrame(buf, record.TypeCheckpoint, internalStream, clock.Now().UnixNano(), p)
		}
		return buf
	})
	q.recMu.Unlock()
	require.NoError(t, err)
	require.Equal(t, len(parts), n)
	synced := q.log.SyncedSeq()
	require.True(t, first <= synced && synced < first+uint64(n)-1, "synced seq %d between the parts %d..%d", synced, first, first+uint64(n)-1)

	q.checkpointState(true)
	require.Equal(t, synced, q.files.written, "a file taken at a part that is not the last")
	_, err = q.log.Sync()
	require.NoError(t, err)
	for i := range 5 {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("after%d", i), Body: []byte("x")})
		require.NoError(t, err)
	}
	_, err = q.log.Sync()
	require.NoError(t, err)
	fs.SetOpLimit(fs.OpCount()) // kill -9: the file inside the checkpoint is the newest
	q.Close()
	fs.Kill()
	q = requireSameAsFullReplay(t, fs, opts, "reopened")
	dead, err = q.DeadLetters("g")
	require.NoError(t, err)
	assert.Len(t, dead, 24)
	require.NoError(t, q.Close())
}

// TestCloseWritesTheLastCheckpointFileUnderFlushAsync: under FlushAsync the
// records Close itself appends (consumer marks) and those the syncer had not
// synced yet are synced only when the log closes; the last checkpoint file
// must still cover them, so that the next Open reads nothing of the log but
// its own epoch record.
func TestCloseWritesTheLastCheckpointFileUnderFlushAsync(t *testing.T) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	opts.Flush = FlushAsync
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	checkpointWorkload(t, q, "m", 100)
	q.syncTick()
	for i := range 5 { // written, not synced: no tick of the syncer
		_, err := q.Send(context.Background(), &Message{ID: fmt.Sprintf("late%d", i), Body: []byte("x")})
		require.NoError(t, err)
	}
	require.NoError(t, q.Close())
	q = requireSameAsFullReplay(t, fs, opts, "reopened")
	defer q.Close()
	assert.LessOrEqual(t, q.Stats().OpenFramesRead, uint64(1), "only the record Open itself wrote")
}

// TestCheckpointFileNames: the names a directory may hold as checkpoint
// files (claimDir accepts them as the library's own) are exactly those it
// writes: CHECKPOINT- and 20 digits of a seq above 0, and its temporary
// file; anything else is a file it did not create (ErrWrongDirectory).
func TestCheckpointFileNames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		owned bool
	}{
		{checkpointFileName(1), true},
		{checkpointFileName(1<<64 - 1), true},
		{checkpointFileName(42) + ".new", true},
		{"CHECKPOINT-00000000000000000000", false},  // seq 0: never written
		{"CHECKPOINT-0000000000000000042", false},   // 19 digits
		{"CHECKPOINT-000000000000000000042", false}, // 21 digits
		{"CHECKPOINT-99999999999999999999", false},  // above the largest seq
		{"CHECKPOINT-0000000000000000004x", false},
		{checkpointFileName(42) + ".new.new", false},
		{checkpointFileName(42) + ".old", false},
		{"checkpoint-00000000000000000042", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.owned, ownedFile(tc.name))
			fs := vfs.NewMem()
			require.NoError(t, fs.MkdirAll("/q", 0o755))
			require.NoError(t, fs.WriteFile("/q/"+tc.name, []byte("x")))
			opts := checkpointOptions(fs, newFakeClock())
			q, err := Open("/q", &opts)
			if !tc.owned {
				require.ErrorIs(t, err, ErrWrongDirectory)
				return
			}
			require.NoError(t, err, "a damaged checkpoint file is ignored")
			require.NoError(t, q.Close())
		})
	}
}
