package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkConsumeOrdered measures consume+ack throughput of an Ordered
// group against an unordered one in the same run (FlushSync, 1 KiB, one
// Receive and one Ack at a time): b.N messages spread round-robin over keys
// are sent before the timer starts, then the consumers handle them all.
//
//	ordered=false/keys=1000/consumers=16  the baseline
//	ordered=true/keys=1000/consumers=16   the target: within 20% of it
//	ordered=true/keys=1/consumers=16      one key: one message at a time, whatever the consumers
//	ordered=false/keys=1/consumers=1      what that should match: one consumer, one at a time
func BenchmarkConsumeOrdered(b *testing.B) {
	for _, tc := range []struct {
		ordered         bool
		keys, consumers int
	}{
		{false, 1000, 16},
		{true, 1000, 16},
		{true, 1, 16},
		{false, 1, 1},
	} {
		name := fmt.Sprintf("ordered=%v/keys=%d/consumers=%d", tc.ordered, tc.keys, tc.consumers)
		b.Run(name, func(b *testing.B) { benchmarkConsumeOrdered(b, tc.ordered, tc.keys, tc.consumers) })
	}
}

func benchmarkConsumeOrdered(b *testing.B, ordered bool, keys, consumers int) {
	q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{Flush: zeroloss.FlushSync})
	require.NoError(b, err)
	b.Cleanup(func() { q.Close() })
	require.NoError(b, sendKeyed(b.Context(), q, b.N, func(i int) string { return fmt.Sprintf("key-%d", i%keys) }, filledBody(1<<10)))
	c, err := q.Consumer("bench", &zeroloss.ConsumerOptions{AckTimeout: time.Hour, Ordered: ordered})
	require.NoError(b, err)
	b.SetBytes(1 << 10)
	b.ReportAllocs()
	b.ResetTimer()
	require.NoError(b, consumeAll(b.Context(), c, b.N, consumers))
	b.StopTimer()
	reportRate(b)
}

// BenchmarkOrderedDistinctKeys passes b.N messages, each with a key of its
// own, through an Ordered group (FlushAsync, 16 consumers) and reports the
// heap in use once they are all acked, after a GC, next to the heap before
// they were consumed: keys with nothing owed cost nothing, so it must not
// grow with b.N. -benchtime=1000000x is the million keys.
func BenchmarkOrderedDistinctKeys(b *testing.B) {
	q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{Flush: zeroloss.FlushAsync})
	require.NoError(b, err)
	b.Cleanup(func() { q.Close() })
	require.NoError(b, sendKeyed(b.Context(), q, b.N, func(i int) string { return fmt.Sprintf("key-%d", i) }, filledBody(128)))
	c, err := q.Consumer("bench", &zeroloss.ConsumerOptions{AckTimeout: time.Hour, Ordered: true})
	require.NoError(b, err)
	before := heapInUse()
	b.ResetTimer()
	require.NoError(b, consumeAll(b.Context(), c, b.N, 16))
	b.StopTimer()
	reportRate(b)
	after := heapInUse()
	b.ReportMetric(float64(before)/(1<<20), "heap-before-MiB")
	b.ReportMetric(float64(after)/(1<<20), "heap-after-MiB")
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// sendKeyed sends total messages with body in batches of 256, the i'th
// with key(i).
func sendKeyed(ctx context.Context, q *zeroloss.Queue, total int, key func(int) string, body []byte) error {
	batch := make([]*zeroloss.Message, 0, 256)
	for i := 0; i < total; {
		batch = batch[:0]
		for ; len(batch) < cap(batch) && i < total; i++ {
			batch = append(batch, &zeroloss.Message{Key: key(i), Body: body})
		}
		results, err := q.SendBatch(ctx, batch)
		if err != nil {
			return err
		}
		for _, r := range results {
			if r.Status != zeroloss.SendOK {
				return fmt.Errorf("seq %d: status %v, want SendOK", r.Seq, r.Status)
			}
		}
	}
	return nil
}

// consumeAll receives and acks total messages with consumers goroutines,
// one message at a time each.
func consumeAll(ctx context.Context, c *zeroloss.Consumer, total, consumers int) error {
	var acked atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, consumers)
	var wg sync.WaitGroup
	for range consumers {
		wg.Go(func() {
			for acked.Load() < int64(total) {
				d, err := c.Receive(ctx)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				if err := d.Ack(); err != nil {
					errs <- err
					return
				}
				if acked.Add(1) >= int64(total) {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
