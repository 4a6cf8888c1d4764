package zeroloss

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestRecycleSegmentsOption: by default retention keeps deleted segments
// and later rolls reuse them; RecycleSegments -1 unlinks them.
func TestRecycleSegmentsOption(t *testing.T) {
	segment := int64(4096 + 2048 + record.MaxMoveOverhead)
	for _, tc := range []struct {
		recycle      int
		wantRecycled bool
	}{
		{recycle: 0, wantRecycled: true},
		{recycle: -1, wantRecycled: false},
	} {
		t.Run(fmt.Sprintf("RecycleSegments=%d", tc.recycle), func(t *testing.T) {
			fs := vfs.NewMem()
			opts := &Options{Flush: FlushSync, SegmentSize: segment, MaxMessageSize: 2048,
				RetentionBytes: 2 * segment, RecycleSegments: tc.recycle, fs: fs}
			q, err := Open("/q", opts)
			require.NoError(t, err)
			ctx := context.Background()
			send := func(from, to int) {
				for i := from; i < to; i++ {
					res, err := q.Send(ctx, &Message{Body: []byte(strings.Repeat("x", 1000))})
					require.NoError(t, err)
					require.Equal(t, SendOK, res.Status)
				}
			}
			send(0, 40)
			require.NoError(t, q.retain())
			require.NotZero(t, q.Stats().SegmentsDeleted)
			names, err := fs.List("/q")
			require.NoError(t, err)
			spares := 0
			for _, name := range names {
				if strings.HasPrefix(name, "spare-") {
					spares++
				}
			}
			send(40, 60)
			st := q.Stats()
			require.NoError(t, q.Close())
			if tc.wantRecycled {
				assert.Equal(t, DefaultRecycleSegments, spares, "deleted segments kept")
				assert.NotZero(t, st.RecycledRolls, "and reused")
			} else {
				assert.Zero(t, spares)
				assert.Zero(t, st.RecycledRolls)
			}
			names, err = fs.List("/q")
			require.NoError(t, err)
			for _, name := range names {
				assert.False(t, strings.HasPrefix(name, "spare-"), "Close removes spare %s", name)
			}
		})
	}
}
