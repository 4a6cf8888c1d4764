package zeroloss

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// heldSyncFS wraps an FS so that, once armed, every file Sync says so on
// entered and blocks until release is closed: a disk whose fdatasync hangs,
// with a signal that the batch before it was written.
type heldSyncFS struct {
	vfs.FS
	armed   chan struct{}
	entered chan struct{} // receives once per held Sync
	release chan struct{}
}

type heldSyncFile struct {
	vfs.File
	fs *heldSyncFS
}

func newHeldSyncFS() *heldSyncFS {
	return &heldSyncFS{FS: vfs.NewMem(), armed: make(chan struct{}), entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (s *heldSyncFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return heldSyncFile{f, s}, nil
}

func (s *heldSyncFS) Create(name string) (vfs.File, error) { return s.wrap(s.FS.Create(name)) }
func (s *heldSyncFS) OpenRW(name string) (vfs.File, error) { return s.wrap(s.FS.OpenRW(name)) }

func (f heldSyncFile) Sync() error {
	select {
	case <-f.fs.armed:
		select {
		case f.fs.entered <- struct{}{}:
		default:
		}
		<-f.fs.release
	default:
	}
	return f.File.Sync()
}

// within waits for ch, failing the test after 5s.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

type sendOutcome struct {
	res SendResult
	err error
}

// TestCancelledSendReportsItsOwnStatus: a Send whose ctx ends after its
// message was written, while it waits for the fdatasync, returns no error
// (the message was appended) and WaitCanceled, not FlushDiskTimeout: the
// caller gave up, the disk did not time out. Stats counts it apart.
func TestCancelledSendReportsItsOwnStatus(t *testing.T) {
	fs := newHeldSyncFS()
	opts := &Options{FlushTimeout: time.Hour, SegmentSize: 64 << 10, MaxMessageSize: 1024, fs: fs}
	q, err := Open("/q", opts)
	require.NoError(t, err)

	close(fs.armed)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan sendOutcome, 1)
	go func() {
		res, err := q.Send(ctx, &Message{ID: "gave-up", Body: []byte("x")})
		done <- sendOutcome{res, err}
	}()
	within(t, fs.entered, "the batch's fdatasync") // written: the wait for the sync has begun
	cancel()
	got := within(t, done, "the cancelled Send, while the fdatasync hangs")
	require.NoError(t, got.err, "the message was appended")
	assert.Equal(t, WaitCanceled, got.res.Status)
	assert.Equal(t, "WaitCanceled", got.res.Status.String())
	st := q.Stats()
	assert.Equal(t, uint64(1), st.WaitsCanceled)
	assert.Zero(t, st.FlushTimeouts, "not a disk timeout")

	close(fs.release)
	require.NoError(t, q.Close())
	q, err = Open("/q", opts)
	require.NoError(t, err)
	defer q.Close()
	stored := readBack(t, q)
	require.Len(t, stored, 1)
	assert.Equal(t, "gave-up", stored[0].Msg.ID, "appended, as the status said")
}

// TestCancelledSendUnderReplicateSyncReportsItsOwnStatus: the same while the
// Send waits for the follower's ack.
func TestCancelledSendUnderReplicateSyncReportsItsOwnStatus(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync, ReplicaTimeout: time.Hour})
	a, b := net.Pipe()
	f := startFakeFollower(t, b, DefaultMaxMessageSize+record.MaxMoveOverhead) // never acks
	require.NoError(t, q.AttachReplica(a))
	before := q.Stats().LastSeq
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Once the follower is sent the message, it is synced on the
		// leader and the Send waits for the follower's ack: give up.
		defer cancel()
		for m := range f.frames {
			if m.Type == repl.TypeFrames && m.LastSeq > before {
				return
			}
		}
	}()
	res, err := q.Send(ctx, &Message{ID: "gave-up", Body: []byte("x")})
	require.NoError(t, err)
	assert.Equal(t, WaitCanceled, res.Status)
	st := q.Stats()
	assert.Equal(t, uint64(1), st.WaitsCanceled)
	assert.Zero(t, st.ReplicaTimeouts, "not a replica timeout")
}

// TestStrictProducerSpoolsAWaitCanceledSend: WaitCanceled is not SendOK, so
// a strict producer whose caller gives up spools the message (the queue may
// lose it to a power loss) and resends it, answered by the queue's dedup.
func TestStrictProducerSpoolsAWaitCanceledSend(t *testing.T) {
	fs := newHeldSyncFS()
	o := producerQueueOptions
	o.FlushTimeout = time.Hour
	q := memQueue(t, fs, o)
	p := newProducer(t, q, testStrict(vfs.NewMem()))
	defer p.Close()

	close(fs.armed)
	ctx, cancel := context.WithCancel(context.Background())
	type produced struct {
		res ProduceResult
		err error
	}
	done := make(chan produced, 1)
	go func() {
		res, err := p.Send(ctx, &Message{ID: "gave-up", Body: bodyFor("gave-up")[:64]})
		done <- produced{res, err}
	}()
	within(t, fs.entered, "the batch's fdatasync")
	cancel()
	got := within(t, done, "the producer's Send")
	require.NoError(t, got.err)
	assert.Equal(t, Spooled, got.res.Outcome, "WaitCanceled is not SendOK")
	assert.ErrorContains(t, got.res.Cause, "WaitCanceled")

	close(fs.release)
	flush(t, p)
	require.NoError(t, p.Close())
	require.NoError(t, q.Close())
	q = memQueue(t, fs, o)
	defer q.Close()
	_, count := firstOccurrences(t, q)
	assert.Equal(t, map[string]int{"gave-up": 1}, count, "resent once, answered as a duplicate")
}
