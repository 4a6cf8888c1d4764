package zeroloss

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// slowSyncFS wraps an FS so that, while armed, every file Sync blocks until
// release is closed: a disk whose fdatasync hangs.
type slowSyncFS struct {
	vfs.FS
	armed   chan struct{} // closed: syncs block
	release chan struct{}
}

type slowSyncFile struct {
	vfs.File
	fs *slowSyncFS
}

func (s *slowSyncFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return slowSyncFile{f, s}, nil
}

func (s *slowSyncFS) Create(name string) (vfs.File, error) { return s.wrap(s.FS.Create(name)) }
func (s *slowSyncFS) OpenRW(name string) (vfs.File, error) { return s.wrap(s.FS.OpenRW(name)) }

func (f slowSyncFile) Sync() error {
	select {
	case <-f.fs.armed:
		<-f.fs.release
	default:
	}
	return f.File.Sync()
}

func TestSlowFsyncGivesFlushDiskTimeout(t *testing.T) {
	fs := &slowSyncFS{FS: vfs.NewMem(), armed: make(chan struct{}), release: make(chan struct{})}
	q, err := Open("/q", &Options{FlushTimeout: 50 * time.Millisecond, SegmentSize: 64 << 10, MaxMessageSize: 1024, fs: fs})
	require.NoError(t, err)
	res, err := q.Send(context.Background(), &Message{ID: "fast", Body: []byte("x")})
	require.NoError(t, err)
	require.Equal(t, SendOK, res.Status)

	close(fs.armed) // from now on fdatasync hangs
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, err = q.Send(context.Background(), &Message{ID: "slow", Body: []byte("y")})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Send blocked on a hung fdatasync past FlushTimeout")
	}
	require.NoError(t, err, "the message was appended")
	assert.Equal(t, FlushDiskTimeout, res.Status)
	assert.Equal(t, "slow", res.ID)
	assert.Greater(t, res.Seq, uint64(1))
	assert.Equal(t, uint64(1), q.Stats().FlushTimeouts)

	// A Send whose context ends while it waits for the sync says so
	// (TestCancelledSendReportsItsOwnStatus), or was withdrawn.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	res, err = q.Send(ctx, &Message{ID: "cancelled", Body: []byte("z")})
	if err == nil { // appended: its status says the sync is not confirmed
		assert.Equal(t, WaitCanceled, res.Status)
	} else {
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}

	close(fs.release) // the disk comes back: the sync completes
	require.NoError(t, q.Close())
	q, err = Open("/q", &Options{SegmentSize: 64 << 10, MaxMessageSize: 1024, fs: fs})
	require.NoError(t, err)
	defer q.Close()
	ids := map[string]bool{}
	for _, s := range readBack(t, q) {
		ids[s.Msg.ID] = true
	}
	assert.True(t, ids["fast"])
	assert.True(t, ids["slow"], "a FlushDiskTimeout message was appended and, once synced, is kept")
}

// TestCancelledSendIsWithdrawnFromItsBatch: while one batch's fdatasync hangs,
// the next batch fills; a Send in it whose context ends is withdrawn (its
// frame is cut out of the batch before the write) and is never appended,
// while the others in the same batch are.
func TestCancelledSendIsWithdrawnFromItsBatch(t *testing.T) {
	fs := &slowSyncFS{FS: vfs.NewMem(), armed: make(chan struct{}), release: make(chan struct{})}
	opts := &Options{FlushTimeout: time.Hour, SegmentSize: 64 << 10, MaxMessageSize: 1024, fs: fs}
	q, err := Open("/q", opts)
	require.NoError(t, err)
	warm, err := q.Send(context.Background(), &Message{ID: "warm", Body: []byte("w")})
	require.NoError(t, err)

	close(fs.armed)
	results := make(chan error, 3)
	go func() { // its batch's commit hangs in fdatasync
		_, err := q.Send(context.Background(), &Message{ID: "first", Body: []byte("1")})
		results <- err
	}()
	require.Eventually(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		// Written and committing: "warm"'s commit may still be finishing.
		return q.committing && q.log.LastSeq() > warm.Seq
	}, 5*time.Second, time.Millisecond, "the first batch is being committed")

	go func() { // joins the next batch, then stays
		_, err := q.Send(context.Background(), &Message{ID: "kept", Body: []byte("k")})
		results <- err
	}()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // joins the same batch, then gives up
		_, err := q.Send(ctx, &Message{ID: "withdrawn", Body: []byte("x")})
		results <- err
	}()
	require.Eventually(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.pending.live == 2
	}, 5*time.Second, time.Millisecond, "both Sends joined the pending batch")
	cancel()
	require.Eventually(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.pending.live == 1 && q.pending.cancelled
	}, 5*time.Second, time.Millisecond, "the cancelled Send withdrew")

	close(fs.release)
	var errs []error
	for i := 0; i < 3; i++ {
		errs = append(errs, <-results)
	}
	var cancelled int
	for _, err := range errs {
		if err != nil {
			require.ErrorIs(t, err, context.Canceled)
			cancelled++
		}
	}
	assert.Equal(t, 1, cancelled)
	require.NoError(t, q.Close())

	q, err = Open("/q", opts)
	require.NoError(t, err)
	defer q.Close()
	var ids []string
	for _, s := range readBack(t, q) {
		ids = append(ids, s.Msg.ID)
	}
	assert.ElementsMatch(t, []string{"warm", "first", "kept"}, ids, "the withdrawn message was never appended")
}
