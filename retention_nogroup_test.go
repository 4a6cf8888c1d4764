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

// Forced retention (RetentionBytes, RetentionAge) deletes segments even when
// no consumer group exists. Every deletion must follow a durable checkpoint,
// so the directory reopens, and a pending half message and the dedup IDs
// within their window that lived in the deleted segments survive.
func TestForcedRetentionWithoutGroupReopens(t *testing.T) {
	const segment = 16 << 10
	for _, tc := range []struct {
		name    string
		opts    Options
		advance time.Duration // clock moves before the last Send, to age the first segments
	}{
		{name: "RetentionBytes", opts: Options{RetentionBytes: 3 * segment}},
		{name: "RetentionAge", opts: Options{RetentionAge: time.Hour}, advance: 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			clock := newFakeClock()
			open := func() *Queue {
				o := tc.opts
				o.SegmentSize, o.MaxMessageSize, o.fs, o.now = segment, 4<<10, fs, clock.Now
				o.DedupWindow = 24 * time.Hour
				q, err := Open("/q", &o)
				require.NoError(t, err)
				return q
			}
			ctx := context.Background()
			q := open()
			half, res, err := q.SendHalf(ctx, &Message{ID: "half", Body: []byte("pending")})
			require.NoError(t, err)
			require.Equal(t, SendOK, res.Status)
			first, err := q.Send(ctx, &Message{ID: "dup", Body: []byte("once")})
			require.NoError(t, err)
			require.Equal(t, SendOK, first.Status)
			for i := 0; i < 40; i++ {
				if i == 39 {
					clock.Advance(tc.advance)
				}
				res, err := q.Send(ctx, &Message{ID: fmt.Sprintf("m-%03d", i), Body: make([]byte, 2000)})
				require.NoError(t, err)
				require.Equal(t, SendOK, res.Status)
			}
			require.NoError(t, q.retain())
			require.NotZero(t, q.Stats().SegmentsDeleted, "retention deleted the first segments")
			require.Greater(t, q.log.FirstSeq(), first.Seq, "the half and the dup ID were in deleted segments")
			require.NoError(t, q.Close())

			q = open()
			defer q.Close()
			assert.Equal(t, 1, q.Stats().TxPending, "the pending half survives its segment")
			again, err := q.Send(ctx, &Message{ID: "dup", Body: []byte("once")})
			require.NoError(t, err)
			assert.True(t, again.Duplicate, "the dedup ID survives its segment")
			assert.Equal(t, first.Seq, again.Seq)
			committed, err := (&Half{q: q, Seq: half.Seq, ID: half.ID}).Commit(ctx)
			require.NoError(t, err, "the recovered half can be committed")
			assert.Equal(t, SendOK, committed.Status)
		})
	}
}
