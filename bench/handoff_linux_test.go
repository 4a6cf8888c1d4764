//go:build linux

package bench

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkHandoff measures the least a group commit costs in Go when the
// fdatasync runs on a goroutine other than the Sends' own, as it must for a
// Send to give up on FlushTimeout or its context while the disk hangs. The
// bare committer (handoffLog) has no encoding, no checksums, no deadline
// and no timer: producers copy their record into a shared buffer under a
// mutex and wait on the batch's channel; once every producer has joined,
// one committer goroutine writes the batch with one pwrite, fdatasyncs and
// closes the channel. Three ratios, each from rounds that take turns on the
// disk (see BenchmarkInterleaved):
//
//	pair=bare-vs-raw/blocks=written    the bare committer over the raw loop of
//	                                   as many records per fdatasync, both on
//	                                   written blocks: the goroutine hand-offs
//	pair=bare-vs-raw/blocks=fresh      the same, the bare committer appending
//	                                   into fresh preallocated extents as a
//	                                   new segment does: the best any such
//	                                   design can score in BenchmarkInterleaved
//	                                   without zero-filled segments
//	pair=queue-vs-bare/blocks=fresh    the queue (FlushSync) over the bare
//	                                   committer, both on fresh extents: what
//	                                   the queue costs beyond the hand-offs
//
// Records are 1 KiB messages, and for 16 producers also 48-byte records,
// the size of an ack (the ceiling of BenchmarkInterleaved's consume-c16).
// The product of the last two ratios is about BenchmarkInterleaved's sync-pN.
// The files wrap at 64 MiB, so blocks=fresh holds for runs that write less
// (-benchtime 20000x writes 20 MiB of 1 KiB records); after that the bare
// committer overwrites its own written blocks.
func BenchmarkHandoff(b *testing.B) {
	type load struct{ producers, size int }
	for _, l := range []load{{1, rawSize}, {16, rawSize}, {64, rawSize}, {16, ackSize}} {
		p, size := l.producers, l.size
		suffix := fmt.Sprintf("size=%s/producers=%d", sizeName(size), p)
		b.Run("pair=bare-vs-raw/blocks=written/"+suffix, func(b *testing.B) {
			f, fd := writtenFile(b)
			h := newHandoffLog(b, writtenFile)
			interleave(b, p*50, rawSyncRound(f, fd, p, size), h.round(p, size))
		})
		b.Run("pair=bare-vs-raw/blocks=fresh/"+suffix, func(b *testing.B) {
			f, fd := writtenFile(b)
			h := newHandoffLog(b, preallocatedFile)
			interleave(b, p*50, rawSyncRound(f, fd, p, size), h.round(p, size))
		})
		if size != rawSize {
			continue // the queue's records are messages
		}
		b.Run("pair=queue-vs-bare/blocks=fresh/"+suffix, func(b *testing.B) {
			h := newHandoffLog(b, preallocatedFile)
			q := openBench(b, zeroloss.FlushSync)
			interleave(b, p*50, h.round(p, size), sendRound(q, p))
		})
	}
}

// handoffLog is the bare group commit of BenchmarkHandoff.
type handoffLog struct {
	f   *os.File
	fd  int
	off int64 // committer only

	mu      sync.Mutex
	buf     []byte
	joined  int           // producers in buf
	active  int           // producers of the running round not yet done
	kicked  bool          // the committer was told to take buf
	done    chan struct{} // closed once buf is synced
	err     error         // of the last write or fdatasync
	ready   chan struct{} // tells the committer to take buf
	stopped chan struct{}
}

// newHandoffLog starts a bare committer on the file that file makes.
func newHandoffLog(b *testing.B, file func(*testing.B) (*os.File, int)) *handoffLog {
	h := startHandoffLog(file(b))
	b.Cleanup(h.stop)
	return h
}

func startHandoffLog(f *os.File, fd int) *handoffLog {
	h := &handoffLog{f: f, fd: fd, done: make(chan struct{}), ready: make(chan struct{}, 1), stopped: make(chan struct{})}
	go h.commitLoop()
	return h
}

func (h *handoffLog) stop() {
	close(h.ready)
	<-h.stopped
}

func (h *handoffLog) commitLoop() {
	defer close(h.stopped)
	var spare []byte
	for range h.ready {
		h.mu.Lock()
		buf, done := h.buf, h.done
		h.buf, h.done, h.joined, h.kicked = spare[:0], make(chan struct{}), 0, false
		h.mu.Unlock()
		if h.off+int64(len(buf)) > rawFileSize {
			h.off = 0
		}
		_, err := h.f.WriteAt(buf, h.off)
		if err == nil {
			err = fdatasync(h.fd)
		}
		h.off += int64(len(buf))
		h.mu.Lock()
		h.err = err
		h.mu.Unlock()
		close(done)
		spare = buf
	}
}

// kick tells the committer to take buf once every active producer joined
// it. The caller holds h.mu.
func (h *handoffLog) kick() {
	if !h.kicked && h.joined > 0 && h.joined >= h.active {
		h.kicked = true
		h.ready <- struct{}{}
	}
}

// append adds msg to the batch and waits until it is synced.
func (h *handoffLog) append(msg []byte) error {
	h.mu.Lock()
	h.buf = append(h.buf, msg...)
	h.joined++
	done := h.done
	h.kick()
	h.mu.Unlock()
	<-done
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// leave is called by a producer that has sent its share.
func (h *handoffLog) leave() {
	h.mu.Lock()
	h.active--
	h.kick()
	h.mu.Unlock()
}

// round sends n records of size bytes from producers goroutines.
func (h *handoffLog) round(producers, size int) func(n int) error {
	body := filledBody(size)
	return func(n int) error {
		h.mu.Lock()
		h.active = min(producers, n) // the others have no share
		h.mu.Unlock()
		return runProducers(producers, n, func(p, i int) error {
			err := h.append(body)
			if err != nil || i == share(n, producers, p)-1 {
				h.leave()
			}
			return err
		})
	}
}

// TestHandoffLogWritesEveryMessage checks the bare committer: every message
// of a round is written, and rounds that do not divide evenly among the
// producers finish (a producer done early must not hold a batch back).
func TestHandoffLogWritesEveryMessage(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "handoff")
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	h := startHandoffLog(f, int(f.Fd()))
	defer h.stop()
	require.NoError(t, h.round(16, rawSize)(1000))
	require.NoError(t, h.round(7, rawSize)(100))
	require.NoError(t, h.round(1, rawSize)(3))
	require.NoError(t, h.round(8, rawSize)(5)) // three producers without a share
	st, err := f.Stat()
	require.NoError(t, err)
	require.Equal(t, int64(1108*rawSize), st.Size())
}
