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
