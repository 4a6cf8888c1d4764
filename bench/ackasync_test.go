package bench

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkAckAsync measures one sequential consumer under FlushSync:
// Receive, then ack, one message (1 KiB) at a time, with Ack (each waits
// for its own fdatasync: nothing else is in flight to share it) against
// AckAsync (the caller goes on; the acks made while one record is being
// synced share the next record and fdatasync). b.N messages are sent
// before the timer starts. The async run ends, timed, with an Ack of its
// last delivery, which returns once the record holding it is durable; the
// group writes its async records one after the other, so every ack is
// durable by then and both forms end with the same guarantee. msgs/fsync
// is how many acks shared an fdatasync.
//
// The figure (10,000 Acks in 2.7-3.9 s on its machine) is
//
//	go test -run '^$' -bench BenchmarkAckAsync -benchtime 10000x -count 3 ./bench/
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

func benchmarkAckAsync(b *testing.B, async bool) {
	q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{Flush: zeroloss.FlushSync})
	require.NoError(b, err)
	b.Cleanup(func() { q.Close() })
	require.NoError(b, sendAll(b.Context(), q, b.N, 64, filledBody(1<<10)))
	c, err := q.Consumer("bench", &zeroloss.ConsumerOptions{AckTimeout: time.Hour})
	require.NoError(b, err)
	b.SetBytes(1 << 10)
	b.ReportAllocs()
	before := q.Stats().Fsyncs
	b.ResetTimer()
	var last *zeroloss.Delivery
	for i := range b.N {
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
	if err := last.Ack(); err != nil { // async: returns once the last record is durable
		b.Fatal(err)
	}
	b.StopTimer()
	reportRate(b)
	if fsyncs := q.Stats().Fsyncs - before; fsyncs > 0 {
		b.ReportMetric(float64(b.N)/float64(fsyncs), "msgs/fsync")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Receive(ctx)
	require.ErrorIs(b, err, context.DeadlineExceeded, "a message is left after every one was acked")
}
