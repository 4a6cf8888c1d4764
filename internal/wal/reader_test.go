package wal

import (
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// openGateFS wraps an FS: while armed, a read-only Open says so on entered
// and waits for release before it opens. It counts the read-only handles
// still open.
type openGateFS struct {
	vfs.FS
	armed   chan struct{}
	entered chan struct{}
	release chan struct{}

	mu   sync.Mutex
	open int
}

type countedFile struct {
	vfs.File
	fs   *openGateFS
	once sync.Once
}

func (c *countedFile) Close() error {
	c.once.Do(func() {
		c.fs.mu.Lock()
		c.fs.open--
		c.fs.mu.Unlock()
	})
	return c.File.Close()
}

func (g *openGateFS) Open(name string) (vfs.File, error) {
	select {
	case <-g.armed:
		g.entered <- struct{}{}
		<-g.release
	default:
	}
	f, err := g.FS.Open(name)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.open++
	g.mu.Unlock()
	return &countedFile{File: f, fs: g}, nil
}

func (g *openGateFS) handles() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

// TestReaderOpeningAcrossCloseHoldsNoFile: a Reader that opens its segment
// while the Log closes (it looked before Close, opened after) returns
// ErrClosed and holds no file, rather than reading a closed log with a
// handle nobody will close.
func TestReaderOpeningAcrossCloseHoldsNoFile(t *testing.T) {
	fs := &openGateFS{FS: vfs.NewMem(), armed: make(chan struct{}), entered: make(chan struct{}, 1), release: make(chan struct{})}
	l, _, err := Open("/w", Options{FS: fs, SegmentSize: testSegment, LeaseChunk: 100})
	require.NoError(t, err)
	appendN(t, l, 0, 3)
	_, err = l.Sync()
	require.NoError(t, err)

	close(fs.armed)
	r := l.NewReader(0)
	done := make(chan error, 1)
	go func() {
		_, err := r.Next()
		done <- err
	}()
	select {
	case <-fs.entered: // it found the log open and is opening the segment
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not open its segment")
	}
	require.NoError(t, l.Close())
	close(fs.release)
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not return")
	}
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, r.Close())
	require.Zero(t, fs.handles(), "no file handle left open")
}

// TestReaderJumpsOverSegmentsRemovedAhead pins down what a Reader does when
// RemoveBefore deletes segments it has not reached yet: it finishes the
// segment it holds, then goes on at the oldest segment left, without an
// error. The queue never removes segments above a group's floor, so its
// group readers never see this; a test that reads the log of an open queue
// (whose retention runs every second) does, and then finds ack records of
// messages it never read (TestKillNineDuringSendReceiveAck read the log
// that way, and failed on loaded machines).
func TestReaderJumpsOverSegmentsRemovedAhead(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	defer l.Close()
	appendN(t, l, 0, 1000)
	_, err := l.Sync()
	require.NoError(t, err)
	l.mu.Lock()
	require.Greater(t, len(l.segments), 3, "the test needs segments to remove")
	firstEnd := l.segments[0].lastSeq
	keptBase := l.segments[2].baseSeq
	l.mu.Unlock()

	r := l.NewReader(0)
	defer r.Close()
	rec, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, uint64(1), rec.Seq)
	n, err := l.RemoveBefore(keptBase) // the segment it reads, and the next
	require.NoError(t, err)
	require.Equal(t, 2, n)

	var seqs []uint64
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		seqs = append(seqs, rec.Seq)
	}
	require.Equal(t, firstEnd, seqs[firstEnd-2], "it reads the segment it holds to its end")
	require.Equal(t, keptBase, seqs[firstEnd-1], "then it goes on at the oldest segment left")
	require.Equal(t, uint64(1000), seqs[len(seqs)-1])
}
