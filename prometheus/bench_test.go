package prometheus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/zerolossmq/zeroloss"
)

// BenchmarkSendWithScrape measures Send with and without a goroutine
// scraping the collector: a scrape must not hold a lock Send waits on for
// long. FlushAsync, so that Send's cost is the queue's own and not the
// disk's, and a lock held by the scrape would show. The queue has 1,000
// topics of 10 messages each, interleaved (10,000 runs in the topic index),
// 20 groups on them and one with 100 messages in flight, so that a scrape
// walks what a busy queue has.
//
// scrape=off sends alone; scrape=10ms scrapes every 10ms (about 1,500 times
// Prometheus's default rate; a scrape that takes longer, as on a loaded
// machine, makes it back to back); scrape=loop scrapes back to back, which
// also takes a CPU from Send on a small machine: the benchmark does not
// separate waiting on a lock from waiting for a CPU. µs/scrape is the
// scrape goroutine's wall time per Gather.
func BenchmarkSendWithScrape(b *testing.B) {
	const topics = 1000
	for _, mode := range []struct {
		name  string
		every time.Duration // 0: no scrape; -1: back to back
	}{{"scrape=off", 0}, {"scrape=10ms", 10 * time.Millisecond}, {"scrape=loop", -1}} {
		b.Run(mode.name, func(b *testing.B) {
			q := openQueue(b, &zeroloss.Options{Flush: zeroloss.FlushAsync})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for round := range 10 {
				batch := make([]*zeroloss.Message, topics)
				for i := range batch {
					batch[i] = &zeroloss.Message{Topic: fmt.Sprintf("topic-%04d", i), Body: []byte(fmt.Sprint(round))}
				}
				_, err := q.SendBatch(ctx, batch)
				require.NoError(b, err)
			}
			for i := range 20 {
				_, err := q.Consumer(fmt.Sprintf("group-%02d", i), &zeroloss.ConsumerOptions{Topic: fmt.Sprintf("topic-%04d", i)})
				require.NoError(b, err)
			}
			c, err := q.Consumer("g", nil)
			require.NoError(b, err)
			send(b, q, 100)
			for range 100 { // a pending set for the scrape to walk
				_, err := c.Receive(ctx)
				require.NoError(b, err)
			}
			reg := prom.NewRegistry()
			reg.MustRegister(NewCollector(q, nil))

			var scrapes, scrapeNanos atomic.Int64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			if mode.every != 0 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var tick <-chan time.Time
					if mode.every > 0 {
						t := time.NewTicker(mode.every)
						defer t.Stop()
						tick = t.C
					}
					for {
						if tick != nil {
							select {
							case <-stop:
								return
							case <-tick:
							}
						} else {
							select {
							case <-stop:
								return
							default:
							}
						}
						start := time.Now()
						if _, err := reg.Gather(); err != nil {
							panic(err)
						}
						scrapeNanos.Add(int64(time.Since(start)))
						scrapes.Add(1)
					}
				}()
			}
			msg := &zeroloss.Message{Body: make([]byte, 128)}
			b.ResetTimer()
			for range b.N {
				if _, err := q.Send(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			b.ReportMetric(float64(scrapes.Load())/float64(b.N), "scrapes/op")
			if n := scrapes.Load(); n > 0 {
				b.ReportMetric(float64(scrapeNanos.Load())/float64(n)/1e3, "µs/scrape")
			}
		})
	}
}
