package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkSend measures Send throughput: b.N messages in total, split evenly
// across the producer goroutines, each Send waiting for its own result. Every
// sub-benchmark opens a fresh queue with default options (64 MiB segments)
// except Flush, and after the timed part closes it, reopens the log and checks
// that it holds exactly b.N messages of the right size.
//
// Compare it with BenchmarkRaw of the same run (see the package comment).
func BenchmarkSend(b *testing.B) {
	for _, flush := range []zeroloss.FlushMode{zeroloss.FlushSync, zeroloss.FlushAsync} {
		for _, size := range []int{128, 1 << 10, 16 << 10} {
			producers := []int{1, 16, 64}
			if flush == zeroloss.FlushSync && size == 1<<10 {
				producers = append(producers, 256)
			}
			for _, p := range producers {
				name := fmt.Sprintf("flush=%s/size=%s/producers=%d", flush, sizeName(size), p)
				b.Run(name, func(b *testing.B) { benchmarkSend(b, flush, size, p) })
			}
		}
	}
}

func benchmarkSend(b *testing.B, flush zeroloss.FlushMode, size, producers int) {
	dir := b.TempDir()
	q, err := zeroloss.Open(dir, &zeroloss.Options{Flush: flush})
	require.NoError(b, err)
	b.Cleanup(func() { q.Close() }) // idempotent; frees the queue if a check below fails
	body := filledBody(size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()

	err = sendAll(b.Context(), q, b.N, producers, body)

	b.StopTimer()
	require.NoError(b, err)
	st := q.Stats()
	require.Equal(b, uint64(b.N), st.Messages, "Stats().Messages")
	reportRate(b)
	if st.Writes > 0 {
		b.ReportMetric(float64(st.Messages)/float64(st.Writes), "msgs/write")
	}
	if flush == zeroloss.FlushSync {
		b.ReportMetric(st.GroupAvg, "msgs/fsync")
		b.ReportMetric(float64(st.Fsyncs)/float64(b.N), "fsyncs/op")
		b.ReportMetric(float64(st.FsyncAvg.Nanoseconds())/1e3, "us/fsync")
		b.ReportMetric(float64(st.SegmentRolls), "rolls")
		b.ReportMetric(float64(st.WarmRolls), "warmrolls")
	}
	require.NoError(b, q.Close())
	require.NoError(b, verifyLog(dir, b.N, size))
}

// sendAll sends total messages with the given body from producers goroutines,
// each sending its share one Send at a time, and returns once all are done.
// A Send that fails or returns a status other than SendOK is an error; the
// producer that got it stops.
func sendAll(ctx context.Context, q *zeroloss.Queue, total, producers int, body []byte) error {
	errs := make([]error, producers)
	var wg sync.WaitGroup
	for p := range producers {
		n := share(total, producers, p)
		wg.Go(func() {
			m := &zeroloss.Message{Body: body}
			for i := range n {
				res, err := q.Send(ctx, m)
				if err != nil {
					errs[p] = fmt.Errorf("producer %d, send %d of %d: %w", p, i+1, n, err)
					return
				}
				if res.Status != zeroloss.SendOK {
					errs[p] = fmt.Errorf("producer %d, send %d of %d: status %v, want SendOK", p, i+1, n, res.Status)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// share is how many of total operations producer p of producers performs:
// total/producers, plus one for the first total%producers producers.
func share(total, producers, p int) int {
	n := total / producers
	if p < total%producers {
		n++
	}
	return n
}

// reportRate reports msgs/s, one message per op, from the timed part only.
func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// sizeName spells a byte count the way benchmark names do: 128B, 1KiB, 16KiB.
func sizeName(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// filledBody returns n bytes of a repeating non-zero pattern, so a frame of
// zeros can never pass for a message.
func filledBody(n int) []byte {
	body := make([]byte, n)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	return body
}

func TestShare(t *testing.T) {
	for _, tc := range []struct{ total, producers int }{{0, 1}, {1, 16}, {100, 1}, {100, 16}, {1000, 64}, {7, 3}} {
		sum, lo, hi := 0, tc.total, 0
		for p := range tc.producers {
			n := share(tc.total, tc.producers, p)
			sum += n
			lo, hi = min(lo, n), max(hi, n)
		}
		require.Equal(t, tc.total, sum, "total=%d producers=%d", tc.total, tc.producers)
		require.LessOrEqual(t, hi-lo, 1, "total=%d producers=%d: uneven split", tc.total, tc.producers)
	}
}
