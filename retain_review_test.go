package zeroloss

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestForcedRetentionWithALargeCheckpointReturns: the consumer state (here
// dead letters, each holding its message) makes a checkpoint bigger than
// what deleting the oldest segment frees, so the log stays over
// RetentionBytes however many segments go: each forced deletion writes a
// checkpoint first. Retention must still return (markLoop's tick, hence
// Close, waits for it), having deleted what was there when it started.
func TestForcedRetentionWithALargeCheckpointReturns(t *testing.T) {
	fs, clock := vfs.NewMem(), newFakeClock()
	opts := checkpointOptions(fs, clock)
	opts.RetentionBytes = 32 << 10
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	ctx := context.Background()
	c, err := q.Consumer("g", &ConsumerOptions{MaxDeliveries: 1})
	require.NoError(t, err)
	for i := range 24 {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("d%d", i), Body: make([]byte, 1800)})
		require.NoError(t, err)
	}
	for _, d := range receiveNow(t, c) {
		require.NoError(t, d.NackNow()) // its last delivery: a dead letter
	}
	dead, err := q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, 24, "every message dead-lettered")
	firstBefore := q.log.FirstSeq()

	done := make(chan error, 1)
	go func() { done <- q.retain() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("retain has not returned: %d checkpoints written, log at %d bytes", q.Stats().Checkpoints, q.log.DataBytes())
	}
	require.Greater(t, q.log.FirstSeq(), firstBefore, "forced retention deleted segments")
	dead, err = q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, 24, "the dead letters live on in the checkpoint")
	require.NoError(t, c.Close())
	require.NoError(t, q.Close())
	q = requireSameAsFullReplay(t, fs, opts, "reopened")
	dead, err = q.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, 24, "after a restart")
	require.NoError(t, q.Close())
}
