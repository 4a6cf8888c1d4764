package zeroloss

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestCheckpointLargerThanASegment: dead letters of nearly MaxMessageSize
// make the checkpoint several segments long; retention must go on deleting
// the segments every group acked, the disk stay bounded, and the dead
// letters survive retention, restarts and a power loss.
func TestCheckpointLargerThanASegment(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	const segment, maxMessage = 32 << 10, 16 << 10
	opts := &Options{SegmentSize: segment, MaxMessageSize: maxMessage, fs: fs, now: clock.Now}
	q, err := Open("/q", opts)
	require.NoError(t, err)
	copts := &ConsumerOptions{MaxDeliveries: 1}
	c, err := q.Consumer("g", copts)
	require.NoError(t, err)
	ctx := context.Background()
	const deadLetters = 12 // about 6 segments of checkpoint
	big := make([]byte, maxMessage-200)
	for i := 0; i < deadLetters; i++ {
		big[0] = byte(i)
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("dead-%02d", i), Body: big})
		require.NoError(t, err)
		require.NoError(t, receive(t, c).Nack(0), "its only delivery failed: a dead letter")
	}
	maxSegments := 0
	for round := 0; round < 30; round++ {
		for i := 0; i < 20; i++ {
			_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("m-%d-%d", round, i), Body: make([]byte, 1000)})
			require.NoError(t, err)
			require.NoError(t, receive(t, c).Ack())
		}
		require.NoError(t, q.flushMarks(ctx))
		require.NoError(t, q.retain(), "round %d", round)
		maxSegments = max(maxSegments, q.Stats().Segments)
	}
	st := q.Stats()
	t.Logf("segments now %d, at most %d; deleted %d; checkpoints %d", st.Segments, maxSegments, st.SegmentsDeleted, st.Checkpoints)
	assert.LessOrEqual(t, maxSegments, 18, "two checkpoints and a few segments of messages")
	assert.GreaterOrEqual(t, st.SegmentsDeleted, uint64(20))

	check := func(q *Queue, label string) {
		t.Helper()
		dead, err := q.DeadLetters("g")
		require.NoError(t, err)
		require.Len(t, dead, deadLetters, label)
		for i, dl := range dead {
			require.Equal(t, fmt.Sprintf("dead-%02d", i), dl.Message.ID, label)
			require.Len(t, dl.Message.Body, len(big), label)
			require.Equal(t, byte(i), dl.Message.Body[0], label)
		}
	}
	check(q, "running")
	require.NoError(t, q.Close())
	q, err = Open("/q", opts)
	require.NoError(t, err)
	check(q, "after a restart")
	c, err = q.Consumer("g", copts)
	require.NoError(t, err)
	nothing(t, c)
	for mode := range vfs.CrashModes {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("crash-%d", mode), Body: []byte("x")})
		require.NoError(t, err)
		require.NoError(t, receive(t, c).Ack())
		require.NoError(t, q.flushMarks(ctx))
		require.NoError(t, q.retain())
		fs.Crash(vfs.CrashModes[mode], nil)
		q.Close()
		q, err = Open("/q", opts)
		require.NoError(t, err)
		check(q, vfs.CrashModes[mode].String())
		c, err = q.Consumer("g", copts)
		require.NoError(t, err)
	}
	require.NoError(t, q.Close())
}

// TestFollowerKeepsTheWholeLatestCheckpoint: with checkpoints of several
// parts, a follower deleting what the leader deleted keeps the segment of
// the first part of its latest whole checkpoint, so its directory opens
// (promotion) with the dead letters and the group's acks.
func TestFollowerKeepsTheWholeLatestCheckpoint(t *testing.T) {
	const segment, maxMessage = 32 << 10, 16 << 10
	q := openLeader(t, Options{Replication: ReplicateSync, SegmentSize: segment, MaxMessageSize: maxMessage})
	fdir := t.TempDir()
	a, b := net.Pipe()
	f := startFollower(t, fdir, b, &FollowOptions{SegmentSize: segment})
	require.NoError(t, q.AttachReplica(a))
	c, err := q.Consumer("g", &ConsumerOptions{MaxDeliveries: 1})
	require.NoError(t, err)
	ctx := context.Background()
	const deadLetters = 8 // a checkpoint of about 5 segments
	for i := 0; i < deadLetters; i++ {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("dead-%d", i), Body: make([]byte, maxMessage-200)})
		require.NoError(t, err)
		require.NoError(t, receive(t, c).Nack(0))
	}
	segments := func(dir string) int {
		m, err := filepath.Glob(filepath.Join(dir, "*.wal"))
		require.NoError(t, err)
		return len(m)
	}
	for round := 0; round < 3; round++ {
		sendAndAckAll(t, q, c, 100)
		require.NoError(t, q.flushMarks(ctx))
		require.NoError(t, q.retain())
	}
	require.Greater(t, q.Stats().SegmentsDeleted, uint64(10))
	_, err = q.Send(ctx, &Message{Body: []byte("after")})
	require.NoError(t, err)
	leader := q.log.Stats().Segments
	require.Eventually(t, func() bool { return segments(fdir) <= leader+1 }, 5*time.Second, 10*time.Millisecond,
		"the follower deletes what the leader deleted")
	require.ErrorIs(t, f.stop(), context.Canceled)

	p, err := Open(fdir, &Options{Replication: ReplicateAsync, SegmentSize: segment, MaxMessageSize: maxMessage})
	require.NoError(t, err)
	defer p.Close()
	dead, err := p.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, deadLetters)
	pc, err := p.Consumer("g", nil)
	require.NoError(t, err)
	assert.Equal(t, "after", string(receive(t, pc).Message.Body), "the group's acks survived the follower's trim")
}

// TestFollowerNotesWhereTheWholeCheckpointStarts: the follower's retention
// keeps the segment of the first part of its latest whole checkpoint; the
// parts may arrive in several Frames messages, and a checkpoint cut short
// does not count.
func TestFollowerNotesWhereTheWholeCheckpointStarts(t *testing.T) {
	cp := record.Checkpoint{Groups: []record.GroupState{{ID: 1, Name: "g", Dead: []record.DeadState{{Pos: 3,
		DeadLetter: record.DeadLetter{Seq: 2, Message: record.Message{ID: "d", Body: make([]byte, 500)}}}}}}}
	frames := func(first uint64, payloads ...[]byte) []byte {
		var buf []byte
		for i, p := range payloads {
			buf = record.Append(buf, &record.Record{Type: record.TypeCheckpoint, Stream: internalStream, Seq: first + uint64(i), Payload: p})
		}
		return buf
	}
	parts := record.SplitCheckpoint(record.AppendCheckpoint(nil, &cp), 1, 200)
	n := uint64(len(parts))
	require.Greater(t, n, uint64(2))
	var f follower
	f.noteCheckpoints(frames(10, parts[:2]...))
	require.Zero(t, f.ckpt, "not whole yet")
	f.noteCheckpoints(frames(12, parts[2:]...))
	require.Equal(t, uint64(10), f.ckpt, "the first part")
	require.Equal(t, 10+n-1, f.ckptEnd)

	next := record.SplitCheckpoint(record.AppendCheckpoint(nil, &cp), 2, 200)
	f.noteCheckpoints(frames(20, next[0], next[1])) // cut short: the leader crashed
	require.Equal(t, uint64(10), f.ckpt)
	f.noteCheckpoints(frames(30, next...))
	require.Equal(t, uint64(30), f.ckpt)
	require.Equal(t, 30+n-1, f.ckptEnd)
	f.noteCheckpoints(frames(40, record.AppendCheckpoint(nil, &cp))) // format 1
	require.Equal(t, uint64(40), f.ckpt)
	require.Equal(t, uint64(40), f.ckptEnd)
}

// TestFormatOneCheckpointIsStillRead: a log trimmed behind a checkpoint of
// the old format (one record holding the whole payload) opens with its state.
func TestFormatOneCheckpointIsStillRead(t *testing.T) {
	fs := vfs.NewMem()
	opts := &Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10, fs: fs}
	q, err := Open("/q", opts)
	require.NoError(t, err)
	c, err := q.Consumer("g", &ConsumerOptions{MaxDeliveries: 1})
	require.NoError(t, err)
	ctx := context.Background()
	_, err = q.Send(ctx, &Message{ID: "dead", Body: []byte("letter")})
	require.NoError(t, err)
	require.NoError(t, receive(t, c).Nack(0))
	sendAndAckAll(t, q, c, 60)
	require.NoError(t, q.flushMarks(ctx))

	q.recMu.Lock()
	cp := q.ledger.checkpoint()
	seq, err := q.appendRecord(ctx, record.TypeCheckpoint, internalStream, record.AppendCheckpoint(nil, &cp))
	q.recMu.Unlock()
	require.NoError(t, err)
	floor, _ := q.ledger.minFloor()
	require.NoError(t, q.remove(floor, seq))
	require.Positive(t, q.Stats().SegmentsDeleted)
	require.NoError(t, q.Close())

	q, err = Open("/q", opts)
	require.NoError(t, err)
	defer q.Close()
	dead, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "letter", string(dead[0].Message.Body))
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	nothing(t, c)
}
