package zeroloss

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// blockingHandler is a Consume handler that says when it starts and returns
// nil once released.
type blockingHandler struct {
	once    sync.Once
	started chan struct{}
	release chan struct{}
}

func newBlockingHandler() *blockingHandler {
	return &blockingHandler{started: make(chan struct{}), release: make(chan struct{})}
}

func (h *blockingHandler) handle(context.Context, *Delivery) error {
	h.once.Do(func() { close(h.started) })
	<-h.release
	return nil
}

// TestCloseWaitsForRunningHandlers: Close while Consume runs stops the
// Consume loops and waits for the running handler, whose Ack then lands
// before the queue closes: the message is not delivered again.
func TestCloseWaitsForRunningHandlers(t *testing.T) {
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	sendN(t, q, "m", 1)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	h := newBlockingHandler()
	consumed := make(chan error, 1)
	go func() { consumed <- c.Consume(context.Background(), h.handle) }()
	within(t, h.started, "the handler")

	closed := make(chan error, 1)
	go func() { closed <- q.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a handler was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(h.release)
	require.NoError(t, within(t, closed, "Close, once the handler returned"))
	err = within(t, consumed, "Consume to return")
	require.ErrorIs(t, err, ErrClosed)
	assert.NotContains(t, err.Error(), "could not be acked")

	q = consumerQueue(t, fs, nil)
	defer q.Close()
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	nothing(t, c) // acked before Close
	require.NoError(t, q.Close())
	err = c.Consume(context.Background(), h.handle)
	require.ErrorIs(t, err, ErrClosed, "Consume on a closed queue")
}

// TestCloseGivesUpOnHandlersAfterShutdownTimeout: a handler still running
// after ShutdownTimeout does not hold Close; its Ack fails, and Consume
// returns an error saying so (the message is delivered again after a
// restart).
func TestCloseGivesUpOnHandlersAfterShutdownTimeout(t *testing.T) {
	fs := vfs.NewMem()
	opts := &Options{SegmentSize: 256 << 10, MaxMessageSize: 4 << 10, fs: fs, ShutdownTimeout: 50 * time.Millisecond}
	q, err := Open("/q", opts)
	require.NoError(t, err)
	sendN(t, q, "m", 1)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	h := newBlockingHandler()
	consumed := make(chan error, 1)
	go func() { consumed <- c.Consume(context.Background(), h.handle) }()
	within(t, h.started, "the handler")

	closed := make(chan error, 1)
	go func() { closed <- q.Close() }()
	require.NoError(t, within(t, closed, "Close, after ShutdownTimeout"))
	close(h.release) // the handler returns after Close: its Ack fails
	err = within(t, consumed, "Consume to return")
	require.ErrorIs(t, err, ErrClosed)
	assert.ErrorContains(t, err, "1 handled message could not be acked")

	q, err = Open("/q", opts)
	require.NoError(t, err)
	defer q.Close()
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	d := receive(t, c)
	assert.Equal(t, 2, d.Attempt, "not acked: delivered again")
}
