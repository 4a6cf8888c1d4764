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

	// A Send whose context ends while it waits for the sync gets the same.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	res, err = q.Send(ctx, &Message{ID: "cancelled", Body: []byte("z")})
	if err == nil { // appended: its status says the sync is not confirmed
		assert.Equal(t, FlushDiskTimeout, res.Status)
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
