//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkInterleaved puts each target of the issues next to its raw
// baseline in rounds that take turns on the disk (a round of one, then a
// round of the other, and so on), so that the drift of a shared virtual
// disk, which moves absolute figures 2x within minutes here, hits both alike.
// It reports the queue's throughput over the baseline's as "ratio":
//
//	pair=sync-p1       flush=sync, 1 producer       / raw write+fdatasync, 1 KiB each
//	pair=sync-p64      flush=sync, 64 producers     / raw 64 x 1 KiB + one fdatasync, written blocks
//	pair=async-p16     flush=async, 16 producers    / raw write(2) of 1 KiB, one goroutine
//	pair=consume-c16   FlushSync consume+ack, 16 consumers acking one at a time
//	                   / raw 16 x 48 bytes (an ack record's size) + one
//	                   fdatasync, written blocks
//
// b.N is the number of messages of each side.
func BenchmarkInterleaved(b *testing.B) {
	b.Run("pair=sync-p1", func(b *testing.B) {
		f, fd := writtenFile(b)
		q := openBench(b, zeroloss.FlushSync)
		interleave(b, 50, rawSyncRound(f, fd, 1, rawSize), sendRound(q, 1))
	})
	b.Run("pair=sync-p64", func(b *testing.B) {
		f, fd := writtenFile(b)
		q := openBench(b, zeroloss.FlushSync)
		interleave(b, 64*20, rawSyncRound(f, fd, 64, rawSize), sendRound(q, 64))
	})
	b.Run("pair=async-p16", func(b *testing.B) {
		w, err := os.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		require.NoError(b, err)
		b.Cleanup(func() { w.Close() })
		buf := filledBody(rawSize)
		raw := func(n int) error {
			for range n {
				if _, err := w.Write(buf); err != nil {
					return err
				}
			}
			return nil
		}
		q := openBench(b, zeroloss.FlushAsync)
		interleave(b, 16*200, raw, sendRound(q, 16))
	})
	b.Run("pair=consume-c16", func(b *testing.B) {
		f, fd := writtenFile(b)
		q := openBench(b, zeroloss.FlushSync)
		b.StopTimer()
		require.NoError(b, sendAll(context.Background(), q, b.N, 64, filledBody(rawSize)))
		c, err := q.Consumer("bench", &zeroloss.ConsumerOptions{AckTimeout: time.Hour})
		require.NoError(b, err)
		b.StartTimer()
		interleave(b, 16*20, rawSyncRound(f, fd, 16, ackSize), consumeRound(c, 16))
	})
}

// interleave runs raw and queue rounds of round messages in turn until each
// has done b.N, and reports the queue's rate over raw's.
func interleave(b *testing.B, round int, raw, queue func(n int) error) {
	rawTime, queueTime := alternate(b, round, raw, queue)
	b.ReportMetric(rawTime.Seconds()/queueTime.Seconds(), "ratio")
	b.ReportMetric(float64(b.N)/queueTime.Seconds(), "queue-msgs/s")
	b.ReportMetric(float64(b.N)/rawTime.Seconds(), "raw-msgs/s")
}

// writtenFile is a preallocated file whose blocks are all written once, so
// that fdatasyncs on it flush data only (the blocks=written baseline).
func writtenFile(b *testing.B) (*os.File, int) {
	f, fd := preallocatedFile(b)
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < rawFileSize; off += int64(len(zeros)) {
		_, err := f.WriteAt(zeros, off)
		require.NoError(b, err)
	}
	require.NoError(b, fdatasync(fd))
	return f, fd
}

// ackSize is about the size of an ack record acking one message (a 32-byte
// frame header, the group's floor and mark, one position): the "small
// records" of the consume+ack baseline.
const ackSize = 48

// rawSyncRound writes n records of size bytes in batches of batch, one pwrite
// and one fdatasync per batch, wrapping at the end of the file.
func rawSyncRound(f *os.File, fd, batch, size int) func(n int) error {
	buf := filledBody(batch * size)
	var offset int64
	return func(n int) error {
		for n > 0 {
			k := min(batch, n)
			if offset+int64(k*size) > rawFileSize {
				offset = 0
			}
			if _, err := f.WriteAt(buf[:k*size], offset); err != nil {
				return err
			}
			if err := fdatasync(fd); err != nil {
				return err
			}
			offset += int64(k * size)
			n -= k
		}
		return nil
	}
}

func openBench(b *testing.B, flush zeroloss.FlushMode) *zeroloss.Queue {
	q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{Flush: flush})
	require.NoError(b, err)
	b.Cleanup(func() { q.Close() })
	return q
}

// sendRound sends n messages of 1 KiB from producers goroutines.
func sendRound(q *zeroloss.Queue, producers int) func(n int) error {
	body := filledBody(rawSize)
	return func(n int) error { return sendAll(context.Background(), q, n, producers, body) }
}

// consumeRound receives and acks n messages from consumers goroutines, one
// Ack each.
func consumeRound(c *zeroloss.Consumer, consumers int) func(n int) error {
	return func(n int) error {
		var left atomic.Int64
		left.Store(int64(n))
		errs := make(chan error, consumers)
		var wg sync.WaitGroup
		for range consumers {
			wg.Go(func() {
				for left.Add(-1) >= 0 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					d, err := c.Receive(ctx)
					cancel()
					if err == nil {
						err = d.Ack()
					}
					if err != nil {
						errs <- fmt.Errorf("consume: %w", err)
						return
					}
				}
			})
		}
		wg.Wait()
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	}
}

// warmupSegmentSize is the segment size of BenchmarkWarmup: small, so that
// its queues roll several times within a run and most of their messages land
// in segments after the first (which SegmentWarmup cannot have prepared).
const warmupSegmentSize = 8 << 20

// BenchmarkWarmup puts a queue with SegmentWarmup next to one without, in
// rounds that take turns on the disk, both FlushSync with 8 MiB segments;
// ratio is the warm queue's throughput over the cold one's (reported as
// queue-msgs/s and raw-msgs/s respectively). SegmentWarmup writes every
// segment twice (zeros ahead, then the log): its gain is fdatasyncs that
// flush data only, its cost the zero-fill competing for the disk.
//
//	BenchmarkWarmup/producers=1|16|64|256
func BenchmarkWarmup(b *testing.B) {
	for _, p := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("producers=%d", p), func(b *testing.B) {
			open := func(warm bool) *zeroloss.Queue {
				q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{
					Flush: zeroloss.FlushSync, SegmentSize: warmupSegmentSize, SegmentWarmup: warm})
				require.NoError(b, err)
				b.Cleanup(func() { q.Close() })
				return q
			}
			cold, warm := open(false), open(true)
			interleave(b, p*50, sendRound(cold, p), sendRound(warm, p))
			st := warm.Stats()
			b.ReportMetric(float64(st.WarmRolls), "warmrolls")
			b.ReportMetric(float64(st.SegmentRolls), "rolls")
		})
	}
}
