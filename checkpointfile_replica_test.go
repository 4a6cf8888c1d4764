package zeroloss

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckpointFilesOfALeaderThatFollowedAndWasPromoted: directory A leads
// and writes checkpoint files, the newest at records its follower B never
// got; B is promoted and goes on; A follows B, which cuts A's divergent
// tail (the newest file's record with it) and sends B's records; then A is
// promoted again. Its Open must not take the state of the cut records from
// that file: it rebuilds what a replay of its whole log does, holds every
// message B sent and none of the cut ones, and its files are kept up to
// date from there on.
func TestCheckpointFilesOfALeaderThatFollowedAndWasPromoted(t *testing.T) {
	ctx := context.Background()
	opts := &Options{Replication: ReplicateAsync, SegmentSize: 64 << 10, MaxMessageSize: 4 << 10, now: newFakeClock().Now}
	fopts := &FollowOptions{SegmentSize: 64 << 10}
	send := func(q *Queue, prefix string, n int) []uint64 {
		var seqs []uint64
		for i := range n {
			res, err := q.Send(ctx, &Message{ID: fmt.Sprintf("%s%d", prefix, i), Topic: []string{"a", "b"}[i%2], Body: make([]byte, 100+i)})
			require.NoError(t, err)
			seqs = append(seqs, res.Seq)
		}
		return seqs
	}
	ackSome := func(q *Queue) {
		c, err := q.Consumer("g", &ConsumerOptions{Topic: "a"})
		require.NoError(t, err)
		for i, d := range receiveNow(t, c) {
			if i%3 != 2 {
				require.NoError(t, d.Ack())
			}
		}
		require.NoError(t, c.Close())
	}

	dirA, dirB := t.TempDir(), t.TempDir()
	a, err := Open(dirA, opts)
	require.NoError(t, err)
	send(a, "shared", 60)
	ackSome(a)
	la, lb := net.Pipe()
	f := startFollower(t, dirB, lb, fopts)
	require.NoError(t, a.AttachReplica(la))
	waitAcked(t, a, a.Stats().LastSeq)
	require.ErrorIs(t, f.stop(), context.Canceled)
	cut := send(a, "cut", 40) // B never gets these
	ackSome(a)
	require.NoError(t, a.Close())
	newest := a.files.written
	require.GreaterOrEqual(t, newest, cut[len(cut)-1], "A's newest file is at a record B does not hold")

	b, err := Open(dirB, opts) // promotion
	require.NoError(t, err)
	send(b, "b", 50)
	ackSome(b)
	la, lb = net.Pipe()
	f = startFollower(t, dirA, lb, fopts)
	require.NoError(t, b.AttachReplica(la))
	waitAcked(t, b, b.Stats().LastSeq)
	require.ErrorIs(t, f.stop(), context.Canceled)
	require.NoError(t, b.Close())
	_, err = os.Stat(dirA + "/" + checkpointFileName(newest))
	require.NoError(t, err, "A's file of the cut records is still there")

	full := fullReplayStateOS(t, dirA, opts, time.Time{})
	var logged strings.Builder
	promoted := *opts
	promoted.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err = Open(dirA, &promoted) // A promoted
	require.NoError(t, err)
	assert.Contains(t, logged.String(), "the log does not hold the record it was taken at", "the file of the cut records is ignored")
	assert.Equal(t, full, replayedState(a, time.Time{}), "Open from A's files rebuilt what a replay of its whole log does")
	present := map[string]bool{}
	for _, s := range readBackUncapped(t, a) {
		present[s.Msg.ID] = true
	}
	for i := range 50 {
		assert.True(t, present[fmt.Sprintf("b%d", i)], "b%d", i)
	}
	for i := range 40 {
		assert.False(t, present[fmt.Sprintf("cut%d", i)], "cut%d was cut", i)
	}
	send(a, "again", 10)
	require.NoError(t, a.Close())
	full = fullReplayStateOS(t, dirA, opts, time.Time{})
	a, err = Open(dirA, opts)
	require.NoError(t, err)
	defer a.Close()
	assert.LessOrEqual(t, a.Stats().OpenFramesRead, uint64(1), "the file Close wrote")
	assert.Equal(t, full, replayedState(a, time.Time{}))
}
