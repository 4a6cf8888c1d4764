package zeroloss

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// handleFS is heldSyncFS that also counts the read-only handles still open.
type handleFS struct {
	*heldSyncFS
	mu   sync.Mutex
	open int
}

type handleFile struct {
	vfs.File
	fs   *handleFS
	once sync.Once
}

func (f *handleFile) Close() error {
	f.once.Do(func() {
		f.fs.mu.Lock()
		f.fs.open--
		f.fs.mu.Unlock()
	})
	return f.File.Close()
}

func (h *handleFS) Open(name string) (vfs.File, error) {
	f, err := h.heldSyncFS.Open(name)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.open++
	h.mu.Unlock()
	return &handleFile{File: f, fs: h}, nil
}

func (h *handleFS) handles() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.open
}

// TestReceiveRacingCloseOpensNoReader: a Receive that passed its closed
// check just before Close began, and takes the group's lock only after
// Close closed the group's reader (while the log is still closing), must
// not open a new reader: nobody would close its file.
func TestReceiveRacingCloseOpensNoReader(t *testing.T) {
	fs := &handleFS{heldSyncFS: newHeldSyncFS()}
	q, err := Open("/q", &Options{SegmentSize: 64 << 10, MaxMessageSize: 1024, fs: fs})
	require.NoError(t, err)
	sendN(t, q, "m", 1)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)

	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	q.opts.beforeGroupLock = func() {
		once.Do(func() {
			close(paused)
			<-resume
		})
	}
	received := make(chan error, 1)
	go func() {
		d, err := c.Receive(context.Background())
		if err == nil {
			_ = d.Ack() // fails: the queue closed
		}
		received <- err
	}()
	within(t, paused, "Receive past its closed check")

	close(fs.armed) // Close's last fdatasync (in the log's Close) holds
	closed := make(chan error, 1)
	go func() { closed <- q.Close() }()
	within(t, fs.entered, "Close to reach the log's close, after the group readers")
	close(resume)
	err = within(t, received, "the racing Receive")
	close(fs.release)
	require.NoError(t, within(t, closed, "Close"))
	assert.Zero(t, fs.handles(), "no reader file left open after Close")
	require.ErrorIs(t, err, ErrClosed)
}
