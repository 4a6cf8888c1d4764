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

// BenchmarkCheckpointFiles measures what checkpoint files cost a running
// queue: building one replays the log written since the last (in the
// background, every Options.CheckpointBytes, 64 MiB by default), so its cost
// grows with the log written. It sends 1 KiB messages (FlushAsync from 16
// producers, the cheapest Sends per byte; FlushSync from 64), with caller-set
// IDs (each replayed into the dedup table) or without, and reports the time
// spent on checkpoint files against the time the Sends took:
//
//	ckpt-share   Stats.CheckpointFileTime / the Sends' wall time (the
//	             replay runs beside them, on another core if there is one)
//	ckpt-ns/msg  checkpoint file time per message sent
//
//	go test -run '^$' -bench BenchmarkCheckpointFiles -benchtime 200000x ./bench
func BenchmarkCheckpointFiles(b *testing.B) {
	for _, c := range []struct {
		flush     zeroloss.FlushMode
		producers int
	}{{zeroloss.FlushAsync, 16}, {zeroloss.FlushSync, 64}} {
		for _, ids := range []bool{false, true} {
			b.Run(fmt.Sprintf("flush=%v/p%d/ids=%v", c.flush, c.producers, ids), func(b *testing.B) {
				q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{Flush: c.flush})
				require.NoError(b, err)
				defer q.Close()
				body := filledBody(rawSize)
				ctx := context.Background()
				b.ResetTimer()
				start := time.Now()
				errs := make(chan error, c.producers)
				for p := range c.producers {
					go func() {
						n := share(b.N, c.producers, p)
						var err error
						for i := 0; i < n && err == nil; i++ {
							m := &zeroloss.Message{Body: body}
							if ids {
								m.ID = fmt.Sprintf("p%02d-%010d", p, i)
							}
							_, err = q.Send(ctx, m)
						}
						errs <- err
					}()
				}
				for range c.producers {
					require.NoError(b, <-errs)
				}
				sending := time.Since(start)
				b.StopTimer()
				spent := q.Stats().CheckpointFileTime
				b.ReportMetric(spent.Seconds()/sending.Seconds(), "ckpt-share")
				b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "ckpt-ns/msg")
				b.ReportMetric(float64(q.Stats().CheckpointFiles), "files")
			})
		}
	}
}
