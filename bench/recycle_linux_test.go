//go:build linux

package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// recycleSegmentSize and recycleRetention are BenchmarkRecycle's queue
// segments and retention limit: 8 MiB segments as in BenchmarkWarmup, and
// retention that deletes the oldest once the log holds two of them.
const (
	recycleSegmentSize = 8 << 20
	recycleRetention   = 2 * recycleSegmentSize
)

// BenchmarkRecycle compares, for FlushSync and 1 KiB messages, where a new
// segment's blocks come from, in rounds that take turns on the disk (five
// sides, round-robin, b.N messages each):
//
//	raw-written   pwrite + fdatasync (of 1 KiB, or of 64 x 1 KiB for 64
//	              producers) on blocks written before
//	raw-fresh     the same on fresh fallocated blocks (a new file at 64 MiB)
//	recycled      a queue whose new segments reuse the ones retention
//	              deleted (RecycleSegments, the default)
//	fresh         a queue that creates and fallocates each new segment
//	              (RecycleSegments -1)
//	warmup        a queue that zero-fills its next segment in the
//	              background (SegmentWarmup, RecycleSegments -1)
//
// The three queues have 8 MiB segments and RetentionBytes of two segments,
// so retention deletes a segment (writing a checkpoint first) about every
// roll on each. Before the timer, each is filled with three segments' worth
// by 64 producers and waits for retention to delete, so that the recycled
// queue has spares from its first timed roll on. Metrics: msgs/s of each
// side, and ratios: recycled/raw-written, fresh/raw-fresh,
// warmup/raw-written, recycled/fresh, warmup/fresh, raw-written/raw-fresh.
//
//	BenchmarkRecycle/producers=1|64
func BenchmarkRecycle(b *testing.B) {
	for _, p := range []int{1, 64} {
		b.Run(fmt.Sprintf("producers=%d", p), func(b *testing.B) { benchmarkRecycle(b, p) })
	}
}

func benchmarkRecycle(b *testing.B, producers int) {
	written, writtenFd := writtenFile(b)
	fresh := freshRound(b, producers)
	open := func(recycle int, warmup bool) *zeroloss.Queue {
		q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{Flush: zeroloss.FlushSync,
			SegmentSize: recycleSegmentSize, RetentionBytes: recycleRetention,
			RecycleSegments: recycle, SegmentWarmup: warmup})
		require.NoError(b, err)
		b.Cleanup(func() { q.Close() })
		fill := 3 * recycleSegmentSize / (rawSize + 64)
		require.NoError(b, sendAll(context.Background(), q, fill, 64, filledBody(rawSize)))
		waitDeleted(b, q)
		return q
	}
	recycled, cold, warm := open(0, false), open(-1, false), open(-1, true)
	round := 50
	if producers > 1 {
		round = producers * 20
	}
	times := alternateAll(b, round, rawSyncRound(written, writtenFd, producers, rawSize), fresh,
		sendRound(recycled, producers), sendRound(cold, producers), sendRound(warm, producers))
	rate := func(i int) float64 { return float64(b.N) / times[i].Seconds() }
	for i, name := range []string{"raw-written", "raw-fresh", "recycled", "fresh", "warmup"} {
		b.ReportMetric(rate(i), name+"-msgs/s")
	}
	b.ReportMetric(rate(2)/rate(0), "recycled/raw-written")
	b.ReportMetric(rate(3)/rate(1), "fresh/raw-fresh")
	b.ReportMetric(rate(4)/rate(0), "warmup/raw-written")
	b.ReportMetric(rate(2)/rate(3), "recycled/fresh")
	b.ReportMetric(rate(4)/rate(3), "warmup/fresh")
	b.ReportMetric(rate(0)/rate(1), "raw-written/raw-fresh")
	b.ReportMetric(float64(recycled.Stats().RecycledRolls), "recycled-rolls")
	b.ReportMetric(float64(recycled.Stats().SegmentRolls), "rolls")
	b.ReportMetric(float64(warm.Stats().WarmRolls), "warm-rolls")
}

// freshRound is raw write+fdatasync of 1 KiB records in batches of batch
// (one pwrite and one fdatasync each) on fresh fallocated blocks: a new
// preallocated file whenever one is full.
func freshRound(b *testing.B, batch int) func(n int) error {
	f, fd := preallocatedFile(b)
	buf := filledBody(batch * rawSize)
	var offset int64
	return func(n int) error {
		for n > 0 {
			k := min(batch, n)
			if offset+int64(k*rawSize) > rawFileSize {
				f, fd = preallocatedFile(b)
				offset = 0
			}
			if _, err := f.WriteAt(buf[:k*rawSize], offset); err != nil {
				return err
			}
			if err := fdatasync(fd); err != nil {
				return err
			}
			offset += int64(k * rawSize)
			n -= k
		}
		return nil
	}
}

// waitDeleted waits, up to 10s, until retention (every second) has deleted
// a segment of q.
func waitDeleted(b *testing.B, q *zeroloss.Queue) {
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for q.Stats().SegmentsDeleted == 0 {
		select {
		case <-deadline:
			b.Fatal("retention deleted no segment within 10s")
		case <-tick.C:
		}
	}
}

// alternateAll runs rounds of round messages of each side in turn until
// each has done b.N, and returns the time each side took.
func alternateAll(b *testing.B, round int, sides ...func(n int) error) []time.Duration {
	times := make([]time.Duration, len(sides))
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(round, b.N-done)
		for i, side := range sides {
			start := time.Now()
			require.NoError(b, side(n))
			times[i] += time.Since(start)
		}
		done += n
	}
	b.StopTimer()
	return times
}
