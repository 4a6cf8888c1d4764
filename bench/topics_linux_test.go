//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkTopics measures topics on the one shared log, each pair in rounds
// that take turns on the disk (FlushSync, 1 KiB messages). "ratio" is the
// first side's time over the second's: above 1, the second is faster.
//
//	pair=topics8-vs-topic1     16 producers over 8 topics / 16 producers on one topic (target: within 10%)
//	pair=queues8-vs-shared     8 queues in 8 directories, 2 producers each / the same 16
//	                           producers over 8 topics of one queue (the shared log's gain)
//	pair=alone-vs-rare         a group consuming (16 consumers, one Ack each) a topic alone
//	                           in its queue / the same group on a topic with 1% of a
//	                           queue's messages (target: the rare topic at most 2x slower)
//
// b.N is the number of messages of each side.
func BenchmarkTopics(b *testing.B) {
	const producers = 16
	b.Run("pair=topics8-vs-topic1", func(b *testing.B) {
		spread, one := openBench(b, zeroloss.FlushSync), openBench(b, zeroloss.FlushSync)
		rawTime, queueTime := alternate(b, producers*20,
			topicRound(spread, producers, 8), topicRound(one, producers, 1))
		b.ReportMetric(rawTime.Seconds()/queueTime.Seconds(), "ratio")
		b.ReportMetric(float64(b.N)/queueTime.Seconds(), "topic1-msgs/s")
		b.ReportMetric(float64(b.N)/rawTime.Seconds(), "topics8-msgs/s")
	})
	b.Run("pair=queues8-vs-shared", func(b *testing.B) {
		queues := make([]*zeroloss.Queue, 8)
		for i := range queues {
			queues[i] = openBench(b, zeroloss.FlushSync)
		}
		shared := openBench(b, zeroloss.FlushSync)
		separate := func(n int) error {
			errs := make([]error, len(queues))
			var wg sync.WaitGroup
			for i, q := range queues {
				wg.Go(func() { errs[i] = topicRound(q, producers/len(queues), 1)(share(n, len(queues), i)) })
			}
			wg.Wait()
			return errors.Join(errs...)
		}
		separateTime, sharedTime := alternate(b, producers*20, separate, topicRound(shared, producers, 8))
		b.ReportMetric(separateTime.Seconds()/sharedTime.Seconds(), "ratio")
		b.ReportMetric(float64(b.N)/sharedTime.Seconds(), "shared-msgs/s")
		b.ReportMetric(float64(b.N)/separateTime.Seconds(), "queues8-msgs/s")
	})
	b.Run("pair=alone-vs-rare", func(b *testing.B) {
		b.StopTimer()
		body := filledBody(rawSize)
		alone := openBench(b, zeroloss.FlushSync)
		mixed := openBench(b, zeroloss.FlushSync)
		ctx := context.Background()
		require.NoError(b, sendTopic(ctx, alone, b.N, "rare", body))
		// 99 busy messages, then one rare one, in batches as producers send them.
		for sent := 0; sent < b.N; {
			n := min(10, b.N-sent)
			require.NoError(b, sendTopic(ctx, mixed, 99*n, "busy", body))
			require.NoError(b, sendTopic(ctx, mixed, n, "rare", body))
			sent += n
		}
		opts := &zeroloss.ConsumerOptions{Topic: "rare", AckTimeout: time.Hour}
		ca, err := alone.Consumer("g", opts)
		require.NoError(b, err)
		cm, err := mixed.Consumer("g", opts)
		require.NoError(b, err)
		b.StartTimer()
		aloneTime, rareTime := alternate(b, 16*20, consumeRound(ca, 16), consumeRound(cm, 16))
		b.ReportMetric(rareTime.Seconds()/aloneTime.Seconds(), "ratio")
		b.ReportMetric(float64(b.N)/rareTime.Seconds(), "rare-msgs/s")
		b.ReportMetric(float64(b.N)/aloneTime.Seconds(), "alone-msgs/s")
	})
}

// topicRound sends n messages of 1 KiB from producers goroutines, producer p
// to topic p mod topics.
func topicRound(q *zeroloss.Queue, producers, topics int) func(n int) error {
	body := filledBody(rawSize)
	return func(n int) error {
		errs := make([]error, producers)
		var wg sync.WaitGroup
		for p := range producers {
			wg.Go(func() {
				errs[p] = sendTopic(context.Background(), q, share(n, producers, p), fmt.Sprint("topic-", p%topics), body)
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	}
}

// sendTopic sends n messages to topic in batches of up to 64.
func sendTopic(ctx context.Context, q *zeroloss.Queue, n int, topic string, body []byte) error {
	batch := make([]*zeroloss.Message, 0, 64)
	for n > 0 {
		batch = batch[:0]
		for range min(64, n) {
			batch = append(batch, &zeroloss.Message{Topic: topic, Body: body})
		}
		if _, err := q.SendBatch(ctx, batch); err != nil {
			return err
		}
		n -= len(batch)
	}
	return nil
}

// BenchmarkTopicsOpen measures Open (and Close) of a queue holding 1,000
// topics with 100 messages each, sent interleaved, and 1,000 groups, one per
// topic, each having acked half of its topic; it reports the heap the open
// queue holds.
func BenchmarkTopicsOpen(b *testing.B) {
	const topics, perTopic = 1000, 100
	dir := b.TempDir()
	q, err := zeroloss.Open(dir, &zeroloss.Options{Flush: zeroloss.FlushAsync})
	require.NoError(b, err)
	body := filledBody(256)
	ctx := context.Background()
	batch := make([]*zeroloss.Message, 0, topics)
	for range perTopic {
		batch = batch[:0]
		for t := range topics {
			batch = append(batch, &zeroloss.Message{Topic: fmt.Sprint("topic-", t), Body: body})
		}
		_, err := q.SendBatch(ctx, batch)
		require.NoError(b, err)
	}
	for t := range topics {
		c, err := q.Consumer(fmt.Sprint("group-", t), &zeroloss.ConsumerOptions{Topic: fmt.Sprint("topic-", t)})
		require.NoError(b, err)
		ds, err := c.ReceiveBatch(ctx, perTopic/2)
		require.NoError(b, err)
		require.NoError(b, c.AckBatch(ds...))
	}
	require.NoError(b, q.Close())

	var heap uint64
	b.ResetTimer()
	for range b.N {
		var before, after runtime.MemStats
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.StartTimer()
		q, err := zeroloss.Open(dir, nil)
		require.NoError(b, err)
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
		require.Len(b, q.GroupStats(), topics)
		require.NoError(b, q.Close())
		b.StartTimer()
	}
	b.ReportMetric(float64(heap)/float64(b.N)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(topics*perTopic), "messages")
}
