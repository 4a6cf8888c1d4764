package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkConsume measures consume+ack throughput: b.N messages of 1 KiB are
// sent before the timer starts; then the consumers of one group Receive and
// Ack them one at a time (ack=single) or Receive up to 64 and ack them with
// one AckBatch (ack=batch), until all are acked. Under FlushSync every Ack
// waits for an fdatasync, shared with the other consumers' acks (group
// commit); compare consumers=16 ack=single with BenchmarkRaw's
// op=batch+fdatasync batch=16, the limit for 16 waiting acks.
//
// After the timed part it checks that the group has nothing left to deliver.
func BenchmarkConsume(b *testing.B) {
	for _, flush := range []zeroloss.FlushMode{zeroloss.FlushSync, zeroloss.FlushAsync} {
		for _, consumers := range []int{1, 16} {
			for _, batch := range []bool{false, true} {
				ack := "single"
				if batch {
					ack = "batch"
				}
				name := fmt.Sprintf("flush=%s/size=1KiB/consumers=%d/ack=%s", flush, consumers, ack)
				b.Run(name, func(b *testing.B) { benchmarkConsume(b, flush, consumers, batch) })
			}
		}
	}
}

func benchmarkConsume(b *testing.B, flush zeroloss.FlushMode, consumers int, batch bool) {
	q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{Flush: flush, FlushInterval: 20 * time.Millisecond})
	require.NoError(b, err)
	b.Cleanup(func() { q.Close() })
	require.NoError(b, sendAll(b.Context(), q, b.N, 64, filledBody(1<<10)))
	c, err := q.Consumer("bench", &zeroloss.ConsumerOptions{AckTimeout: time.Hour})
	require.NoError(b, err)
	b.SetBytes(1 << 10)
	b.ReportAllocs()
	before := q.Stats()
	b.ResetTimer()

	var acked atomic.Int64
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, consumers)
	for i := 0; i < consumers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for acked.Load() < int64(b.N) {
				var (
					ds  []*zeroloss.Delivery
					err error
				)
				if batch {
					ds, err = c.ReceiveBatch(ctx, 64)
				} else {
					var d *zeroloss.Delivery
					d, err = c.Receive(ctx)
					ds = []*zeroloss.Delivery{d}
				}
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				if err := c.AckBatch(ds...); err != nil {
					errs <- err
					return
				}
				if acked.Add(int64(len(ds))) >= int64(b.N) {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
	reportRate(b)
	if st := q.Stats(); flush == zeroloss.FlushSync && st.Fsyncs > before.Fsyncs {
		b.ReportMetric(float64(b.N)/float64(st.Fsyncs-before.Fsyncs), "msgs/fsync")
	}
	// Nothing is left to deliver: every message was acked exactly once.
	require.Equal(b, int64(b.N), acked.Load())
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	_, err = c.Receive(ctx2)
	require.ErrorIs(b, err, context.DeadlineExceeded, "a message is left after every one was acked")
}

// BenchmarkConsumeInFlight measures one Receive and one Ack with a steady
// number of deliveries held (FlushAsync, one goroutine): it keeps inflight
// deliveries and acks the oldest for each new one it receives. Their cost
// should not grow with what is in flight.
//
//	BenchmarkConsumeInFlight/inflight=16|1000|10000
func BenchmarkConsumeInFlight(b *testing.B) {
	for _, inflight := range []int{16, 1000, 10000} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{Flush: zeroloss.FlushAsync})
			require.NoError(b, err)
			b.Cleanup(func() { q.Close() })
			require.NoError(b, sendAll(b.Context(), q, b.N+inflight, 64, filledBody(1<<10)))
			c, err := q.Consumer("bench", &zeroloss.ConsumerOptions{AckTimeout: time.Hour})
			require.NoError(b, err)
			held := make([]*zeroloss.Delivery, 0, inflight)
			for range inflight {
				d, err := c.Receive(b.Context())
				require.NoError(b, err)
				held = append(held, d)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				d, err := c.Receive(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				if err := held[i%inflight].Ack(); err != nil {
					b.Fatal(err)
				}
				held[i%inflight] = d
			}
			b.StopTimer()
			reportRate(b)
			for _, d := range held {
				require.NoError(b, d.Ack())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			_, err = c.Receive(ctx)
			require.ErrorIs(b, err, context.DeadlineExceeded, "a message is left after every one was acked")
		})
	}
}
