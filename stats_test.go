package zeroloss

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
