package prometheus

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/zerolossmq/zeroloss"
)

// BenchmarkSendWithScrape measures Send with and without a goroutine
// scraping the collector in a loop: a scrape must not hold a lock Send
// waits on for long. FlushAsync, so that Send's cost is the queue's own and
// not the disk's, and a lock held by the scrape would show.
func BenchmarkSendWithScrape(b *testing.B) {
	for _, scrape := range []bool{false, true} {
		name := "scrape=off"
		if scrape {
			name = "scrape=on"
		}
		b.Run(name, func(b *testing.B) {
			q := openQueue(b, &zeroloss.Options{Flush: zeroloss.FlushAsync})
			c, err := q.Consumer("g", nil)
			require.NoError(b, err)
			send(b, q, 100)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for range 100 { // a pending set for the scrape to walk
				_, err := c.Receive(ctx)
				require.NoError(b, err)
			}
			reg := prom.NewRegistry()
			reg.MustRegister(NewCollector(q, nil))

			var scrapes atomic.Int64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			if scrape {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := reg.Gather(); err != nil {
							panic(err)
						}
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
		})
	}
}
