package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkAckAsync measures one sequential consumer (Receive, then ack, one
// message at a time) acking ackBatchOf messages of 1 KiB per op under
// FlushSync, with Ack (each waits for its own fdatasync: nothing else is in
// flight to share it) against AckAsync (the caller goes on; the acks made
// while one record is being synced share the next record and fdatasync).
// The messages are sent before each op's timer starts. An async op ends
// with an Ack of its last delivery, which returns once the record holding
// it is durable; the group writes its async records one after the other,
// so every ack of the op is durable by then and both forms end with the
// same guarantee. msgs/fsync is the fdatasyncs the acks cost.
//
// The figure (10,000 Acks in 2.7-3.9 s on its machine) is one op of
// ack=sync: go test -run '^$' -bench BenchmarkAckAsync -benchtime 3x ./bench
//
//	BenchmarkAckAsync/ack=sync|async
func BenchmarkAckAsync(b *testing.B) {
	for _, async := range []bool{false, true} {
		name := "ack=sync"
		if async {
			name = "ack=async"
		}
		b.Run(name, func(b *testing.B) { benchmarkAckAsync(b, async) })
	}
}

// ackBatchOf is how many messages one op of BenchmarkAckAsync acks.
const ackBatchOf = 10_000

func benchmarkAckAsync(b *testing.B, async bool) {
	q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{Flush: zeroloss.FlushSync})
	require.NoError(b, err)
	b.Cleanup(func() { q.Close() })
	c, err := q.Consumer("bench", &zeroloss.ConsumerOptions{AckTimeout: time.Hour})
	require.NoError(b, err)
	body := filledBody(1 << 10)
	b.SetBytes(ackBatchOf << 10)
	b.ReportAllocs()
	var fsyncs uint64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		require.NoError(b, sendAll(b.Context(), q, ackBatchOf, 64, body))
		before := q.Stats().Fsyncs
		b.StartTimer()
		var last *zeroloss.Delivery
		for i := range ackBatchOf {
			d, err := c.Receive(b.Context())
			if err != nil {
				b.Fatalf("receive %d: %v", i, err)
			}
			if async {
				err = d.AckAsync()
			} else {
				err = d.Ack()
			}
			if err != nil {
				b.Fatalf("ack %d: %v", i, err)
			}
			last = d
		}
		if err := last.Ack(); err != nil { // async: waits until the last record is durable
			b.Fatal(err)
		}
		b.StopTimer()
		fsyncs += q.Stats().Fsyncs - before
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*ackBatchOf)/b.Elapsed().Seconds(), "msgs/s")
	if fsyncs > 0 {
		b.ReportMetric(float64(b.N*ackBatchOf)/float64(fsyncs), "msgs/fsync")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Receive(ctx)
	require.ErrorIs(b, err, context.DeadlineExceeded, fmt.Sprintf("a message is left after %d were acked", b.N*ackBatchOf))
}
