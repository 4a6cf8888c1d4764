package zeroloss

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestStatsFsyncLatencyCountsEverySync: the fsync latency buckets in Stats
// sum to Fsyncs, and their bounds ascend.
func TestStatsFsyncLatencyCountsEverySync(t *testing.T) {
	q := openQueue(t, t.TempDir(), &Options{SegmentSize: 64 << 10, MaxMessageSize: 8 << 10})
	defer q.Close()
	for range 5 {
		_, err := q.Send(context.Background(), &Message{Body: []byte("x")})
		require.NoError(t, err)
	}
	st := q.Stats()
	var sum uint64
	for _, n := range st.FsyncLatency {
		sum += n
	}
	require.GreaterOrEqual(t, st.Fsyncs, uint64(5), "FlushSync: a sync per Send here")
	assert.Equal(t, st.Fsyncs, sum)
	require.Len(t, FsyncBounds, FsyncBuckets-1)
	for i := 1; i < len(FsyncBounds); i++ {
		assert.Less(t, FsyncBounds[i-1], FsyncBounds[i])
	}
}

// TestStatsSendLatency: every Send and SendBatch call that returns a nil
// error is counted once in SendLatency, by the time from its call to its
// return (under FlushSync, its fdatasync included); a refused call is not.
func TestStatsSendLatency(t *testing.T) {
	const delay = 30 * time.Millisecond
	q := openQueue(t, t.TempDir(), &Options{SegmentSize: 64 << 10, MaxMessageSize: 8 << 10})
	defer q.Close()
	ctx := context.Background()
	require.Zero(t, q.Stats().SendLatency, "nothing sent yet")

	for range 3 {
		_, err := q.Send(ctx, &Message{Body: []byte("x")})
		require.NoError(t, err)
	}
	_, err := q.SendBatch(ctx, []*Message{{Body: []byte("a")}, {Body: []byte("b")}})
	require.NoError(t, err)
	_, err = q.Send(ctx, &Message{ID: "dup", Body: []byte("x")})
	require.NoError(t, err)
	res, err := q.Send(ctx, &Message{ID: "dup", Body: []byte("x")})
	require.NoError(t, err)
	require.True(t, res.Duplicate)
	_, err = q.Send(ctx, nil)
	require.ErrorIs(t, err, ErrInvalidMessage)

	st := q.Stats()
	assert.Equal(t, uint64(6), sum(st.SendLatency[:]), "3 Sends, a SendBatch, a Send and its duplicate; not the refused one")
	assert.Positive(t, st.SendTime)

	t.Run("a slow fdatasync", func(t *testing.T) {
		fs := &slowSyncFS{FS: vfs.NewMem(), armed: make(chan struct{}), release: make(chan struct{})}
		q := openQueue(t, "/q", &Options{SegmentSize: 64 << 10, MaxMessageSize: 8 << 10, fs: fs})
		defer q.Close()
		close(fs.armed) // the Send's fdatasync hangs until release, delay from now
		called := time.Now()
		time.AfterFunc(delay, func() { close(fs.release) })
		_, err := q.Send(ctx, &Message{Body: []byte("x")})
		require.NoError(t, err)
		took := time.Since(called)
		st := q.Stats()
		require.Equal(t, uint64(1), sum(st.SendLatency[:]))
		assert.GreaterOrEqual(t, st.SendTime, delay-time.Millisecond, "the wait for the fdatasync is in")
		assert.LessOrEqual(t, st.SendTime, took)
		for i, n := range st.SendLatency {
			if n > 0 {
				require.Less(t, i, len(SendBounds), "not above every bound")
				assert.GreaterOrEqual(t, SendBounds[i], delay, "counted in the bucket of a Send that waited %v", st.SendTime)
			}
		}
	})

	require.Len(t, SendBounds, SendBuckets-1)
	for i := 1; i < len(SendBounds); i++ {
		assert.Less(t, SendBounds[i-1], SendBounds[i])
	}
}

func TestSendLatencyBuckets(t *testing.T) {
	last := len(SendBounds)
	for _, tc := range []struct {
		took time.Duration
		want int
	}{
		{-time.Microsecond, 0},
		{0, 0},
		{time.Microsecond, 0}, // a bound is "at most": its own bucket
		{time.Microsecond + 1, 1},
		{time.Millisecond, 9},
		{time.Millisecond + 1, 10},
		{10 * time.Second, last - 1},
		{10*time.Second + 1, last},
	} {
		t.Run(fmt.Sprint(tc.took), func(t *testing.T) {
			var h durationBuckets
			h.record(tc.took)
			counts, total := h.snapshot()
			assert.Equal(t, uint64(1), counts[tc.want], "counts %v", counts)
			assert.Equal(t, max(tc.took, 0), total)
		})
	}
}

func sum(counts []uint64) uint64 {
	var n uint64
	for _, c := range counts {
		n += c
	}
	return n
}
