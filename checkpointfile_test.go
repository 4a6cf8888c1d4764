package zeroloss

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// removeCheckpointFiles deletes dir's checkpoint files: the next Open reads
// the whole log.
func removeCheckpointFiles(t *testing.T, fs vfs.FS, dir string) {
	t.Helper()
	names, err := fs.List(dir)
	require.NoError(t, err)
	for _, name := range names {
		if isCheckpointFile(name) {
			require.NoError(t, fs.Remove(filepath.Join(dir, name)))
		}
	}
	require.NoError(t, fs.SyncDir(dir))
}

// replayedState describes, in a form two queues can be compared by, what
// Open rebuilt from the log: the ledger, the dedup entries, the pending and
// resolved halves, the topic index (its retained runs) and every group's
// cursor and what it owes. Call it right after Open. Dedup entries appended
// before dedupSince are left out (a clock that went back may bring back in
// a replay of the whole log what the running queue had forgotten).
func replayedState(q *Queue, dedupSince time.Time) string {
	var b strings.Builder
	cp := q.ledger.checkpoint()
	for i := range cp.Groups {
		slices.Sort(cp.Groups[i].Acked)
	}
	fmt.Fprintf(&b, "ledger %x\n", record.AppendCheckpoint(nil, &cp))
	if q.dedup != nil {
		var kept []record.DedupEntry
		for _, e := range q.dedup.snapshot(q.opts.now()) {
			if e.Time >= dedupSince.UnixNano() {
				kept = append(kept, e)
			}
		}
		fmt.Fprintf(&b, "dedup %v\n", kept)
	}
	fmt.Fprintf(&b, "halves %v\ndone %x\nnext group id %d\n", q.tx.snapshot(), q.tx.appendDone(nil), q.nextGroupID)
	x := q.topics
	x.mu.RLock()
	fmt.Fprintf(&b, "indexed %d\n", x.indexed)
	for _, name := range slices.Sorted(maps.Keys(x.topics)) {
		e := x.topics[name]
		describeRuns(&b, "topic "+name, &e.all)
		for _, tag := range slices.Sorted(maps.Keys(e.tags)) {
			describeRuns(&b, "topic "+name+" tag "+tag, e.tags[tag])
		}
	}
	x.mu.RUnlock()
	q.groupsMu.Lock()
	defer q.groupsMu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(q.groups)) {
		g := q.groups[name]
		g.mu.Lock()
		fmt.Fprintf(&b, "group %s id %d %v cursor %d floored %d skip %v\n", name, g.id, g.sel, g.cursor, g.floored, slices.Sorted(maps.Keys(g.skip)))
		for _, pos := range slices.Sorted(maps.Keys(g.pending)) {
			u := g.pending[pos]
			fmt.Fprintf(&b, "  owes %d seq %d attempt %d due %v delayed %v body %q\n", pos, u.seq, u.attempt, u.due.UnixNano(), u.delayed, u.msg.Body)
		}
		g.mu.Unlock()
	}
	return b.String()
}

// describeRuns writes the runs still retained (a topic whose runs were all
// deleted is the same as one never seen).
func describeRuns(b *strings.Builder, what string, rs *runs) {
	if len(rs.list) == 0 {
		return
	}
	fmt.Fprintf(b, "%s:", what)
	for _, r := range rs.list {
		fmt.Fprintf(b, " %d+%d@%d/%d", r.first, r.n, r.off, r.bytes)
	}
	fmt.Fprintf(b, " (%d from the first)\n", rs.from(rs.list[0].first))
}

// cloneMem copies dir of src (what reads see now) into a new MemFS, durably;
// without checkpoint files unless withFiles.
func cloneMem(src *vfs.MemFS, dir string, withFiles bool) (*vfs.MemFS, error) {
	dst := vfs.NewMem()
	if err := dst.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	names, err := src.List(dir)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if name == "LOCK" || (!withFiles && isCheckpointFile(name)) {
			continue
		}
		data, err := src.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if err := dst.WriteFile(filepath.Join(dir, name), data); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// fullReplayState opens a copy of dir without its checkpoint files (Open
// reads the whole log) and returns replayedState; opts are the options the
// queue is opened with (their fs is replaced).
func fullReplayState(src *vfs.MemFS, dir string, opts Options, dedupSince time.Time) (string, error) {
	fs, err := cloneMem(src, dir, false)
	if err != nil {
		return "", err
	}
	opts.fs = fs
	q, err := Open(dir, &opts)
	if err != nil {
		return "", fmt.Errorf("open without checkpoint files: %w", err)
	}
	defer q.Close()
	return replayedState(q, dedupSince), nil
}

// checkpointOptions: small segments on a MemFS, no ticking background loops
// (retention and checkpoint files are steps of the test), a fixed clock.
func checkpointOptions(fs *vfs.MemFS, clock *fakeClock) Options {
	return Options{SegmentSize: 16 << 10, MaxMessageSize: 2 << 10, fs: fs, now: clock.Now, manualTicks: true}
}

// checkpointWorkload sends n messages over three topics (one in two tags),
// with IDs, and has group "a" (topic a) ack every other one it receives and
// group "b" (topic b, tag x) ack all; it returns the IDs SendOK'd.
func checkpointWorkload(t *testing.T, q *Queue, prefix string, n int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for i := range n {
		m := &Message{ID: fmt.Sprintf("%s-%d", prefix, i), Topic: []string{"a", "b", "c"}[i%3], Body: []byte(strings.Repeat("x", 50+i%200))}
		if m.Topic == "b" {
			m.Tag = []string{"x", "y"}[i%2]
		}
		res, err := q.Send(ctx, m)
		require.NoError(t, err)
		require.Equal(t, SendOK, res.Status)
		ids = append(ids, m.ID)
	}
	a, err := q.Consumer("a", &ConsumerOptions{Topic: "a"})
	require.NoError(t, err)
	b, err := q.Consumer("b", &ConsumerOptions{Topic: "b", Tags: []string{"x"}})
	require.NoError(t, err)
	for i, d := range receiveNow(t, a) {
		if i%2 == 0 {
			require.NoError(t, d.Ack())
		}
	}
	for _, d := range receiveNow(t, b) {
		require.NoError(t, d.Ack())
	}
	require.NoError(t, a.Close())
	require.NoError(t, b.Close())
	return ids
}

// receiveNow receives everything the consumer's group has now, without
// acking it.
func receiveNow(t testing.TB, c *Consumer) []*Delivery {
	t.Helper()
	var out []*Delivery
	for {
		d, err := c.Receive(doneContext)
		if err != nil {
			require.ErrorIs(t, err, context.Canceled)
			return out
		}
		out = append(out, d)
	}
}

// requireSameAsFullReplay opens dir of fs (Open reads its newest checkpoint
// file) and checks that it rebuilt what a replay of the whole log rebuilds;
// it returns the open queue.
func requireSameAsFullReplay(t *testing.T, fs *vfs.MemFS, opts Options, label string) *Queue {
	t.Helper()
	full, err := fullReplayState(fs, "/q", opts, time.Time{})
	require.NoError(t, err, label)
	opts.fs = fs
	q, err := Open("/q", &opts)
	require.NoError(t, err, label)
	require.Equal(t, full, replayedState(q, time.Time{}), "%s: Open from the checkpoint file differs from a replay of the whole log", label)
	return q
}

// TestOpenReadsOnlyAfterItsCheckpointFile: after a clean Close, Open reads
// nothing of the log but its own epoch record; after a kill, what was written
// since the last checkpoint file; and rebuilds the same state either way.
func TestOpenReadsOnlyAfterItsCheckpointFile(t *testing.T) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	checkpointWorkload(t, q, "m", 600)
	total := q.Stats().LastSeq
	require.NoError(t, q.Close())

	q = requireSameAsFullReplay(t, fs, opts, "after a clean Close")
	assert.LessOrEqual(t, q.Stats().OpenFramesRead, uint64(1), "only the record Open itself wrote (its epoch), of %d", total)
	checkpointWorkload(t, q, "n", 60)
	since := q.Stats().LastSeq - q.files.written
	fs.SetOpLimit(fs.OpCount()) // kill -9: nothing more reaches the files
	q.Close()
	fs.Kill()

	q = requireSameAsFullReplay(t, fs, opts, "after a kill")
	read := q.Stats().OpenFramesRead
	assert.Equal(t, recordsAfter(t, q, q.files.written), read, "the records after the checkpoint file")
	assert.LessOrEqual(t, read, since+1, "the records after the checkpoint file, and Open's own")
	assert.Greater(t, read, uint64(60), "everything since the last file")
	require.NoError(t, q.Close())
}

// TestOpenDirectoryWrittenBeforeCheckpointFiles: a directory written before
// checkpoint files (testdata/v3-queue-before-checkpoint-files, by b5d87da:
// o1-o4 on topic orders (tags eu, us), p1 on payments, d1 on the default
// topic, transactions tx1 (committed), tx2 (rolled back), tx3 (pending),
// group "eu" (orders, tag eu) acked o1 and nacked o3, group "pay" holding p1
// unacked) opens by reading its whole log; its Close writes the first
// checkpoint file, and the next Open reads from it the same state.
func TestOpenDirectoryWrittenBeforeCheckpointFiles(t *testing.T) {
	dir := copyDir(t, filepath.Join("testdata", "v3-queue-before-checkpoint-files"))
	written := func() time.Time { return time.Date(2026, 12, 7, 1, 44, 0, 0, time.UTC) }
	opts := &Options{SegmentSize: 64 << 10, MaxMessageSize: 1 << 10, now: written, manualTicks: true}
	q := openQueue(t, dir, opts)
	assert.Greater(t, q.Stats().OpenFramesRead, uint64(15), "the whole log")
	require.NoError(t, q.Close())
	names, err := os.ReadDir(dir)
	require.NoError(t, err)
	var files []string
	for _, e := range names {
		if isCheckpointFile(e.Name()) {
			files = append(files, e.Name())
		}
	}
	require.Len(t, files, 1, "Close wrote a checkpoint file")

	whole := copyDir(t, dir)
	require.NoError(t, os.Remove(filepath.Join(whole, files[0])))
	q = openQueue(t, whole, opts)
	full := replayedState(q, time.Time{})
	require.NoError(t, q.Close())
	q = openQueue(t, dir, opts)
	defer q.Close()
	assert.LessOrEqual(t, q.Stats().OpenFramesRead, uint64(1))
	assert.Equal(t, full, replayedState(q, time.Time{}), "the same state from the file as from the whole log")
	eu, err := q.Consumer("eu", &ConsumerOptions{Topic: "orders", Tags: []string{"eu"}})
	require.NoError(t, err)
	var got []string
	for _, d := range drainNow(t, eu) {
		got = append(got, d.Message.ID)
	}
	assert.ElementsMatch(t, []string{"o3", "o4", "tx1"}, got)
	pay, err := q.Consumer("pay", &ConsumerOptions{Topic: "payments"})
	require.NoError(t, err)
	owed := drainNow(t, pay)
	require.Len(t, owed, 1)
	assert.Equal(t, "p1", owed[0].Message.ID)
	res, err := q.Send(context.Background(), &Message{ID: "o2", Topic: "orders", Body: []byte("again")})
	require.NoError(t, err)
	assert.True(t, res.Duplicate, "dedup IDs come back from the file")
	pending, _, _, _, _ := q.tx.counts()
	assert.Equal(t, 1, pending, "tx3 is still pending")
}

// TestCheckpointFileIgnored: a checkpoint file that is damaged, of an
// unknown version, ahead of the log, or taken at a record the log does not
// hold is ignored and logged, and Open falls back to the older file, or to
// the whole log; either way it rebuilds what a replay of the whole log does.
func TestCheckpointFileIgnored(t *testing.T) {
	clock := newFakeClock()
	base := vfs.NewMem()
	opts := checkpointOptions(base, clock)
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	checkpointWorkload(t, q, "m", 100)
	require.NoError(t, q.Close())
	q, err = Open("/q", &opts)
	require.NoError(t, err)
	checkpointWorkload(t, q, "n", 100)
	require.NoError(t, q.Close())
	seqs, err := checkpointFiles(base, "/q")
	require.NoError(t, err)
	require.Len(t, seqs, 2, "two files kept")
	newest, older := "/q/"+checkpointFileName(seqs[0]), "/q/"+checkpointFileName(seqs[1])

	// A file from a copy of the queue that went on, and one from a copy
	// that went on differently from the same point.
	laterFile := func(prefix string) (string, []byte) {
		fs, err := cloneMem(base, "/q", true)
		require.NoError(t, err)
		o := checkpointOptions(fs, clock)
		q, err := Open("/q", &o)
		require.NoError(t, err)
		checkpointWorkload(t, q, prefix, 5)
		require.NoError(t, q.Close())
		seqs, err := checkpointFiles(fs, "/q")
		require.NoError(t, err)
		name := "/q/" + checkpointFileName(seqs[0])
		data, err := fs.ReadFile(name)
		require.NoError(t, err)
		return name, data
	}
	aheadName, ahead := laterFile("later")

	damage := func(name string, change func([]byte) []byte) func(*vfs.MemFS) {
		return func(fs *vfs.MemFS) {
			data, err := fs.ReadFile(name)
			require.NoError(t, err)
			require.NoError(t, fs.WriteFile(name, change(data)))
		}
	}
	flip := func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }
	for _, tc := range []struct {
		name     string
		change   func(*vfs.MemFS)
		ignored  int    // warnings
		readFrom uint64 // the seq of the file Open read from (0: the whole log)
	}{
		{"newest damaged", damage(newest, flip), 1, seqs[1]},
		{"newest cut short", damage(newest, func(b []byte) []byte { return b[:len(b)-9] }), 1, seqs[1]},
		{"both damaged", func(fs *vfs.MemFS) { damage(newest, flip)(fs); damage(older, flip)(fs) }, 2, 0},
		{"unknown version", damage(newest, func(b []byte) []byte {
			b[len(checkpointFileMagic)] = 2
			return binary.LittleEndian.AppendUint32(b[:len(b)-4], crc32.Checksum(b[:len(b)-4], epochCRC))
		}), 1, seqs[1]},
		{"named for another seq", func(fs *vfs.MemFS) {
			data, err := fs.ReadFile(older)
			require.NoError(t, err)
			require.NoError(t, fs.Remove(newest))
			require.NoError(t, fs.WriteFile(newest, data))
		}, 1, seqs[1]},
		{"ahead of the log", func(fs *vfs.MemFS) { require.NoError(t, fs.WriteFile(aheadName, ahead)) }, 1, seqs[0]},
		{"another record at its seq", func(fs *vfs.MemFS) {
			// This copy goes on with other records, past the seq the
			// ahead file was taken at: that file is then of another
			// history.
			o := checkpointOptions(fs, clock)
			q, err := Open("/q", &o)
			require.NoError(t, err)
			checkpointWorkload(t, q, "other", 5)
			fs.SetOpLimit(fs.OpCount())
			q.Close()
			fs.Kill()
			require.GreaterOrEqual(t, q.Stats().LastSeq, seqs[0]+10)
			require.NoError(t, fs.WriteFile(aheadName, ahead))
		}, 1, seqs[0]},
		{"a temporary file left", func(fs *vfs.MemFS) {
			require.NoError(t, fs.WriteFile("/q/"+checkpointFileName(seqs[0]+1)+".new", []byte("cut short")))
		}, 0, seqs[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := cloneMem(base, "/q", true)
			require.NoError(t, err)
			tc.change(fs)
			st, err := readDirState(fs, "/q") // what inspect shows
			require.NoError(t, err)
			problems := 0
			for _, f := range st.CheckpointFiles {
				if f.Problem != "" {
					problems++
				}
			}
			assert.Equal(t, tc.ignored, problems, "inspect: %+v", st.CheckpointFiles)
			var logged strings.Builder
			o := checkpointOptions(fs, clock)
			o.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
			q := requireSameAsFullReplay(t, fs, o, tc.name)
			defer q.Close()
			assert.Equal(t, tc.ignored, strings.Count(logged.String(), "checkpoint file ignored"), logged.String())
			assert.Equal(t, recordsAfter(t, q, tc.readFrom), q.Stats().OpenFramesRead, "Open read the records after seq %d", tc.readFrom)
			names, err := fs.List("/q")
			require.NoError(t, err)
			for _, name := range names {
				assert.False(t, strings.HasSuffix(name, ".new"), "temporary file %s removed", name)
			}
		})
	}
}

// recordsAfter counts the log's records above seq.
func recordsAfter(t *testing.T, q *Queue, seq uint64) uint64 {
	t.Helper()
	r := q.log.NewUncappedReader(seq + 1)
	defer r.Close()
	var n uint64
	for {
		_, err := r.Next()
		if err == io.EOF {
			return n
		}
		require.NoError(t, err)
		n++
	}
}

// TestCheckpointFileKeepsTransactions: pending halves (with their check
// counts) and resolved ones (for idempotent answers) come back from a
// checkpoint file as from the whole log.
func TestCheckpointFileKeepsTransactions(t *testing.T) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	opts.TxChecker = func(context.Context, *Message) TxState { return TxUnknown }
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	ctx := context.Background()
	var committed []SendResult
	var rolledBack, pending []uint64
	for i := range 12 {
		h, res, err := q.SendHalf(ctx, &Message{ID: fmt.Sprintf("tx%d", i), Topic: "orders", Body: []byte("half")})
		require.NoError(t, err)
		switch i % 3 {
		case 0:
			c, err := h.Commit(ctx)
			require.NoError(t, err)
			committed = append(committed, c)
		case 1:
			require.NoError(t, h.Rollback(ctx))
			rolledBack = append(rolledBack, res.Seq)
		default:
			pending = append(pending, res.Seq)
		}
	}
	require.NoError(t, q.Close())
	q = requireSameAsFullReplay(t, fs, opts, "reopened")
	defer q.Close()
	assert.LessOrEqual(t, q.Stats().OpenFramesRead, uint64(1))
	n, _, _, _, _ := q.tx.counts()
	assert.Equal(t, len(pending), n)
	for _, c := range committed {
		again, err := q.resolveHalf(ctx, c.Seq-1, TxCommit) // each half was appended right before its commit
		require.NoError(t, err)
		assert.Equal(t, c.Seq, again.Seq, "a committed half answers with its commit")
	}
	for _, seq := range rolledBack {
		_, err := q.resolveHalf(ctx, seq, TxCommit)
		require.ErrorIs(t, err, ErrTxRolledBack)
	}
}

// TestCheckpointFilesAcrossRetention: a running queue whose consumers keep
// up writes checkpoint files as its log grows (CheckpointBytes) and before
// retention deletes segments; at most two are kept; a kill then costs Open
// only the records after the newest.
func TestCheckpointFilesAcrossRetention(t *testing.T) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	opts.CheckpointBytes = 8 << 10
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	ctx := context.Background()
	ca, err := q.Consumer("a", &ConsumerOptions{Topic: "a"})
	require.NoError(t, err)
	cb, err := q.Consumer("b", &ConsumerOptions{Topic: "b"})
	require.NoError(t, err)
	for round := range 40 {
		for i := range 20 {
			_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("r%d-%d", round, i), Topic: []string{"a", "b"}[i%2], Body: make([]byte, 300)})
			require.NoError(t, err)
		}
		if round%5 == 0 {
			clock.Advance(time.Minute) // some dedup IDs expire
		}
		for _, d := range append(receiveNow(t, ca), receiveNow(t, cb)...) {
			if round == 39 || d.Seq%7 != 0 || d.Attempt > 1 { // some stay owed a while
				require.NoError(t, d.Ack())
			}
		}
		require.NoError(t, q.flushMarks(ctx))
		require.NoError(t, q.retain())
		q.checkpointState(false) // markLoop's tick
		names, err := fs.List("/q")
		require.NoError(t, err)
		files := 0
		for _, name := range names {
			if isCheckpointFile(name) {
				files++
			}
		}
		require.LessOrEqual(t, files, checkpointFilesKept)
	}
	stats := q.Stats()
	assert.Positive(t, stats.SegmentsDeleted, "retention deleted segments")
	assert.Greater(t, stats.CheckpointFiles, uint64(10), "files written as the log grew")
	fs.SetOpLimit(fs.OpCount())
	q.Close()
	fs.Kill()
	q = requireSameAsFullReplay(t, fs, opts, "after a kill")
	defer q.Close()
	assert.Less(t, q.Stats().OpenFramesRead, uint64(100), "at most about CheckpointBytes of records")
}

// TestCrashAtEveryOperationOfCheckpointFile crashes (every crash mode) at
// every file operation of writing a checkpoint file, after a workload whose
// records it covers: Open then rebuilds what a replay of the whole log does,
// and every SendOK message is there.
func TestCrashAtEveryOperationOfCheckpointFile(t *testing.T) {
	run := func(limit int, mode vfs.CrashMode, rng *rand.Rand) (ops int, fs *vfs.MemFS, ids []string) {
		fs, clock := vfs.NewMem(), newFakeClock()
		opts := checkpointOptions(fs, clock)
		q, err := Open("/q", &opts)
		require.NoError(t, err)
		ids = checkpointWorkload(t, q, "m", 40)
		require.NoError(t, q.Close())
		q, err = Open("/q", &opts)
		require.NoError(t, err)
		ids = append(ids, checkpointWorkload(t, q, "n", 40)...)
		start := fs.OpCount()
		if limit >= 0 {
			fs.SetOpLimit(start + limit)
		}
		q.checkpointState(true)
		ops = fs.OpCount() - start
		if limit >= 0 {
			fs.SetOpLimit(fs.OpCount())
			q.Close()
			fs.Crash(mode, rng)
		} else {
			require.NoError(t, q.Close())
		}
		return ops, fs, ids
	}
	total, _, _ := run(-1, 0, nil)
	require.Greater(t, total, 3, "a checkpoint file takes several operations")
	rng := rand.New(rand.NewPCG(7, 11))
	for limit := 0; limit <= total; limit++ {
		for _, mode := range vfs.CrashModes {
			label := fmt.Sprintf("crash after op %d/%d of the checkpoint file, %v", limit, total, mode)
			_, fs, ids := run(limit, mode, rng)
			q := requireSameAsFullReplay(t, fs, checkpointOptions(fs, newFakeClock()), label)
			present := map[string]bool{}
			for _, s := range readBack(t, q) {
				present[s.Msg.ID] = true
			}
			for _, id := range ids {
				require.True(t, present[id], "%s: SendOK message %s lost", label, id)
			}
			require.NoError(t, q.Close(), label)
		}
	}
}

// fullReplayStateOS is fullReplayState for a directory of the operating
// system's file system (it opens a copy).
func fullReplayStateOS(t *testing.T, dir string, opts *Options, dedupSince time.Time) string {
	t.Helper()
	whole := copyDir(t, dir)
	removeCheckpointFiles(t, vfs.OS, whole)
	q := openQueue(t, whole, opts)
	defer q.Close()
	return replayedState(q, dedupSince)
}

// TestCheckpointFileKeepsTheNewestDedupEntries: with more IDs than
// DedupEntries, IDs sent again once forgotten, and checkpoint files taken
// along the way, Open from the newest file remembers the same IDs as a
// replay of the whole log: for each ID its latest seq, the newest
// DedupEntries of them.
func TestCheckpointFileKeepsTheNewestDedupEntries(t *testing.T) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	opts.DedupEntries, opts.DedupWindow = 64, time.Hour
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(3, 5))
	appended := 0
	for i := range 1500 {
		topic := []string{"", "a"}[rng.IntN(2)]
		res, err := q.Send(context.Background(), &Message{ID: fmt.Sprintf("id-%d", rng.IntN(150)), Topic: topic, Body: []byte("x")})
		require.NoError(t, err)
		if !res.Duplicate {
			appended++
		}
		if i%97 == 0 {
			q.checkpointState(true)
		}
	}
	require.Greater(t, appended, 800, "IDs forgotten and sent again")
	fs.SetOpLimit(fs.OpCount())
	q.Close()
	fs.Kill()
	q = requireSameAsFullReplay(t, fs, opts, "after a kill")
	defer q.Close()
	assert.Positive(t, q.files.written)
	entries, _, _ := q.dedup.counts()
	assert.Equal(t, 64, entries)
}

// FuzzCheckpointFile feeds decodeState checkpoint files changed at random,
// their checksum made right again (so the fuzzer reaches the sections):
// decoding never panics, fails only with ErrCorrupt, and whatever decodes
// is what encodeState would write for it (the decoder reads what the
// encoder writes, and nothing else).
func FuzzCheckpointFile(f *testing.F) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	q, err := Open("/q", &opts)
	require.NoError(f, err)
	ctx := context.Background()
	for i := range 20 {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprint("id", i), Topic: []string{"", "a", "b"}[i%3], Tag: []string{"", "x"}[i%2], Body: []byte("body")})
		require.NoError(f, err)
	}
	h, _, err := q.SendHalf(ctx, &Message{ID: "tx", Body: []byte("half")})
	require.NoError(f, err)
	require.NoError(f, h.Rollback(ctx))
	_, _, err = q.SendHalf(ctx, &Message{ID: "tx2", Body: []byte("half")})
	require.NoError(f, err)
	c, err := q.Consumer("g", &ConsumerOptions{Topic: "a", MaxDeliveries: 1})
	require.NoError(f, err)
	for _, d := range receiveNow(f, c) {
		require.NoError(f, d.Nack(0)) // dead letters, with their messages
	}
	require.NoError(f, q.Close())
	seqs, err := checkpointFiles(fs, "/q")
	require.NoError(f, err)
	file, err := fs.ReadFile("/q/" + checkpointFileName(seqs[0]))
	require.NoError(f, err)
	f.Add(file)
	f.Add([]byte(checkpointFileMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) >= len(checkpointFileMagic)+4 {
			b = binary.LittleEndian.AppendUint32(b[:len(b)-4:len(b)-4], crc32.Checksum(b[:len(b)-4], epochCRC))
		}
		sf, err := decodeState("fuzz", b)
		if err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			return
		}
		require.NotNil(t, sf.index)
	})
}
