package bench

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkGuarantees measures what the producer-side guarantees cost next
// to a plain Send in the same run, FlushSync, 1 KiB, 16 producers:
//
//	BenchmarkGuarantees/op=send/ids=generated   plain Send, the queue makes IDs up (not deduplicated)
//	BenchmarkGuarantees/op=send/ids=set         every message has a caller-set ID: dedup claims it
//	BenchmarkGuarantees/op=strict               a strict Producer (spool on the same disk, unused while the queue says SendOK)
//	BenchmarkGuarantees/op=tx                   SendHalf + Commit per message (two appends, two fdatasyncs shared)
//
// TestDedupMemoryPerEntry measures the dedup table's memory per entry.
func BenchmarkGuarantees(b *testing.B) {
	const producers = 16
	b.Run("op=send/ids=generated", func(b *testing.B) { benchmarkIDs(b, producers, false) })
	b.Run("op=send/ids=set", func(b *testing.B) { benchmarkIDs(b, producers, true) })
	b.Run("op=strict", func(b *testing.B) { benchmarkStrict(b, producers) })
	b.Run("op=interleaved", func(b *testing.B) { benchmarkInterleaved(b, producers) })
	b.Run("op=tx", func(b *testing.B) { benchmarkTx(b, producers) })
}

// guaranteeQueue opens a FlushSync queue with room for every ID of a run in
// its dedup table, and a strict producer over it spooling to another dir.
func guaranteeQueue(b *testing.B) (*zeroloss.Queue, *zeroloss.Producer) {
	q, err := zeroloss.Open(b.TempDir(), &zeroloss.Options{DedupEntries: 1 << 22})
	require.NoError(b, err)
	b.Cleanup(func() { q.Close() })
	p, err := zeroloss.NewProducer(q, &zeroloss.ProducerOptions{Strict: true, SpoolDir: b.TempDir()})
	require.NoError(b, err)
	b.Cleanup(func() { p.Close() })
	return q, p
}

// plainSend returns a send function (for runProducers) of one 1 KiB message
// with Queue.Send, with a caller-set ID unique per call if setIDs.
func plainSend(q *zeroloss.Queue, setIDs bool) func(p, i int) error {
	body := filledBody(1 << 10)
	var next atomic.Int64
	return func(int, int) error {
		m := &zeroloss.Message{Body: body}
		if setIDs {
			m.ID = "id-" + strconv.FormatInt(next.Add(1), 10)
		}
		res, err := q.Send(context.Background(), m)
		if err == nil && (res.Status != zeroloss.SendOK || res.Duplicate) {
			err = fmt.Errorf("send: status %v, duplicate %v", res.Status, res.Duplicate)
		}
		return err
	}
}

// strictSend is plainSend through the strict producer p, which must answer
// Sent.
func strictSend(p *zeroloss.Producer) func(int, int) error {
	body := filledBody(1 << 10)
	return func(int, int) error {
		res, err := p.Send(context.Background(), &zeroloss.Message{Body: body})
		if err == nil && res.Outcome != zeroloss.Sent {
			err = fmt.Errorf("strict send: outcome %v", res.Outcome)
		}
		return err
	}
}

func benchmarkStrict(b *testing.B, producers int) {
	q, p := guaranteeQueue(b)
	b.SetBytes(1 << 10)
	b.ReportAllocs()
	b.ResetTimer()
	err := runProducers(producers, b.N, strictSend(p))
	b.StopTimer()
	require.NoError(b, err)
	reportRate(b)
	require.Zero(b, p.Spooled())
	require.Equal(b, uint64(b.N), q.Stats().Messages)
}

func benchmarkIDs(b *testing.B, producers int, setIDs bool) {
	q, _ := guaranteeQueue(b)
	b.SetBytes(1 << 10)
	b.ReportAllocs()
	b.ResetTimer()
	err := runProducers(producers, b.N, plainSend(q, setIDs))
	b.StopTimer()
	require.NoError(b, err)
	reportRate(b)
	if setIDs {
		require.Equal(b, min(b.N, 1<<22), q.Stats().DedupEntries)
	}
}

// benchmarkInterleaved is op=interleaved: the three ways of sending take
// turns in rounds of 200 messages per producer on one disk (plain Send with
// generated IDs, Send with caller-set IDs, a strict Producer), so that the
// disk's drift, which moves absolute figures by 2x within minutes here, hits
// them alike. It reports each one's throughput over plain Send's (set/plain,
// strict/plain): the cost of dedup and of the strict producer.
func benchmarkInterleaved(b *testing.B, producers int) {
	q, p := guaranteeQueue(b)
	ways := []func(int, int) error{plainSend(q, false), plainSend(q, true), strictSend(p)}
	const round = 200
	var elapsed [3]time.Duration
	var sent [3]int
	b.ResetTimer()
	for done := 0; done < b.N; {
		for way, send := range ways {
			n := min(round*producers, b.N-done)
			if n <= 0 {
				break
			}
			start := time.Now()
			require.NoError(b, runProducers(producers, n, send))
			elapsed[way] += time.Since(start)
			sent[way] += n
			done += n
		}
	}
	b.StopTimer()
	rate := func(way int) float64 { return float64(sent[way]) / elapsed[way].Seconds() }
	if sent[0] > 0 && sent[1] > 0 && sent[2] > 0 {
		b.ReportMetric(rate(1)/rate(0), "set/plain")
		b.ReportMetric(rate(2)/rate(0), "strict/plain")
	}
	require.Equal(b, uint64(b.N), q.Stats().Messages)
}

func benchmarkTx(b *testing.B, producers int) {
	q, err := zeroloss.Open(b.TempDir(), nil)
	require.NoError(b, err)
	b.Cleanup(func() { q.Close() })
	body := filledBody(1 << 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	err = runProducers(producers, b.N, func(p, i int) error {
		res, state, err := q.SendInTransaction(context.Background(), &zeroloss.Message{Body: body},
			func(context.Context) zeroloss.TxState { return zeroloss.TxCommit })
		if err == nil && (res.Status != zeroloss.SendOK || state != zeroloss.TxCommit) {
			err = fmt.Errorf("transaction: status %v, state %v", res.Status, state)
		}
		return err
	})
	b.StopTimer()
	require.NoError(b, err)
	reportRate(b)
	st := q.Stats()
	require.Equal(b, uint64(b.N), st.TxCommitted)
	require.Zero(b, st.TxPending)
}

// TestDedupMemoryPerEntry reports the heap the dedup table takes per entry,
// with 36-byte IDs (a UUID's length), and checks it stays under 400 bytes.
func TestDedupMemoryPerEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 100k entries")
	}
	q, err := zeroloss.Open(t.TempDir(), &zeroloss.Options{Flush: zeroloss.FlushAsync})
	require.NoError(t, err)
	defer q.Close()
	const n = 100_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	msgs := make([]*zeroloss.Message, 0, 1000)
	for i := 0; i < n; i += 1000 {
		msgs = msgs[:0]
		for j := i; j < i+1000; j++ {
			msgs = append(msgs, &zeroloss.Message{ID: fmt.Sprintf("%036d", j), Body: []byte("x")})
		}
		_, err := q.SendBatch(context.Background(), msgs)
		require.NoError(t, err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	require.Equal(t, n, q.Stats().DedupEntries)
	perEntry := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("dedup table: %.0f bytes of heap per entry (36-byte IDs)", perEntry)
	require.Less(t, perEntry, 400.0)
}

// runProducers calls send(p, i) for i in producer p's share of total, from
// producers goroutines, and returns the first error.
func runProducers(producers, total int, send func(p, i int) error) error {
	errs := make([]error, producers)
	var wg sync.WaitGroup
	for p := range producers {
		n := share(total, producers, p)
		wg.Go(func() {
			for i := range n {
				if err := send(p, i); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
