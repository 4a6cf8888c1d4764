package wal

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSyncLatencyBuckets(t *testing.T) {
	last := len(SyncBounds)
	for _, tc := range []struct {
		took time.Duration
		want int
	}{
		{0, 0},
		{5 * time.Microsecond, 0}, // a bound is "at most": its own bucket
		{5*time.Microsecond + 1, 1},
		{time.Millisecond, 7},
		{time.Millisecond + 1, 8},
		{10 * time.Second, last - 1},
		{10*time.Second + 1, last},
		{time.Hour, last},
	} {
		t.Run(fmt.Sprint(tc.took), func(t *testing.T) {
			assert.Equal(t, tc.want, bucketOf(tc.took))
		})
	}
	for i := 1; i < len(SyncBounds); i++ {
		require.Less(t, SyncBounds[i-1], SyncBounds[i], "bounds ascend")
	}
}

// TestSyncLatencyCountsEverySync: the buckets sum to Syncs.
func TestSyncLatencyCountsEverySync(t *testing.T) {
	l, _ := openTest(t, t.TempDir())
	defer l.Close()
	for i := range 5 {
		appendN(t, l, i*10, 10)
		_, err := l.Sync()
		require.NoError(t, err)
	}
	st := l.Stats()
	var sum uint64
	for _, n := range st.SyncLatency {
		sum += n
	}
	require.Positive(t, st.Syncs)
	assert.Equal(t, st.Syncs, sum)
}
