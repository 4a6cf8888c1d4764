package peers

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// manyConsumers is the consumer count of the concurrent op=consume+ack
// workload:
//
//	CONFIG/op=consume+ack/size=1KiB/consumers=16
//
// b.N messages are stored with Fill before the timer starts, as for
// consumers=1; then manyConsumers goroutines each receive one message and
// acknowledge it (or delete it) before taking the next, until b.N are
// done. Afterwards the benchmark checks that nothing is left (Held).
const manyConsumers = 16

// concurrentConsumers lists the configurations that also run op=consume+ack
// with manyConsumers consumers, by benchmark and configuration name: zeroloss
// in both flush modes, JetStream in both sync settings (issue 7 compares
// zeroloss FlushAsync with its consume+ack), and the peers whose
// consume+ack is durable per message and that take concurrent consumers
// (goqite FULL, Redis AOF always, dque safe). Each one's store implements
// concurrentStore.
var concurrentConsumers = map[string]bool{
	"Zeroloss/flush=sync":             true,
	"Zeroloss/flush=async":            true,
	"JetStream/sync=default":          true,
	"JetStream/sync=always":           true,
	"Goqite/sync=full":                true,
	"RedisStreams/appendfsync=always": true,
	"Dque/mode=safe":                  true,
}

// consumerCounts is the consumers= values of op=consume+ack for config c of
// the peer benchmark b.
func consumerCounts(b *testing.B, c config) []int {
	if concurrentConsumers[benchPeerName(b)+"/"+c.name] {
		return []int{1, manyConsumers}
	}
	return []int{1}
}

// benchPeerName is the peer's benchmark name without "Benchmark": b is the
// top-level benchmark of one peer (BenchmarkZeroloss gives "Zeroloss").
func benchPeerName(b *testing.B) string {
	name := b.Name()
	const prefix = "Benchmark"
	if len(name) > len(prefix) && name[:len(prefix)] == prefix {
		return name[len(prefix):]
	}
	return name
}

// concurrentStore is a store whose consume+ack can run from several
// goroutines at once.
type concurrentStore interface {
	store
	// ConsumeConcurrently receives and acknowledges (or deletes) n
	// messages from consumers goroutines, each one message at a time,
	// failing if a body is not size bytes long or fewer than n come.
	ConsumeConcurrently(ctx context.Context, n, size, consumers int) error
}

// benchConsumeConcurrently is op=consume+ack with consumers > 1: b.N
// messages stored with Fill before the timer starts, then ConsumeConcurrently;
// afterwards nothing may be left.
func benchConsumeConcurrently(b *testing.B, open opener, size, consumers int) {
	st := openStore(b, open)
	s, ok := st.(concurrentStore)
	if !ok {
		b.Fatalf("%T has no ConsumeConcurrently", st)
	}
	ctx := b.Context()
	if err := s.Fill(ctx, filledBody(size), b.N); err != nil {
		b.Fatalf("fill: %v", err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	startTimer(b)

	err := s.ConsumeConcurrently(ctx, b.N, size, consumers)

	stopTimer(b)
	if err != nil {
		b.Fatal(err)
	}
	reportRate(b)
	checkHeld(b, s, 0)
}

// consumeEach calls one(k, i) for i in 0..n-1 from consumers goroutines
// (k is the goroutine's number), each taking the next i when its call
// returns, and returns the first error; a goroutine stops at its error and
// the others at their next call.
func consumeEach(ctx context.Context, n, consumers int, one func(ctx context.Context, k, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	errs := make([]error, consumers)
	var wg sync.WaitGroup
	for k := range consumers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := one(ctx, k, i); err != nil {
					errs[k] = fmt.Errorf("consumer %d: %w", k, err)
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ConsumeConcurrently: consumers goroutines share the group's Consumer,
// each doing Receive then Delivery.Ack.
func (s *zerolossStore) ConsumeConcurrently(ctx context.Context, n, size, consumers int) error {
	c, err := s.consumer()
	if err != nil {
		return err
	}
	return consumeEach(ctx, n, consumers, func(ctx context.Context, _, i int) error {
		d, err := c.Receive(ctx)
		if err != nil {
			return fmt.Errorf("receive %d of %d: %w", i+1, n, err)
		}
		if err := checkBody(i, d.Message.Body, size); err != nil {
			return err
		}
		if err := d.Ack(); err != nil {
			return fmt.Errorf("ack %d of %d: %w", i+1, n, err)
		}
		return nil
	})
}

// ConsumeConcurrently: consumers goroutines share one Consumer.Messages
// iterator of the durable pull consumer (Next is safe for concurrent use:
// it takes the iterator's lock), so the client's prefetch serves all of
// them; each acknowledges its message with DoubleAck, concurrently with
// the others.
func (s *jetstreamStore) ConsumeConcurrently(ctx context.Context, n, size, consumers int) error {
	it, err := s.cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	return consumeEach(ctx, n, consumers, func(ctx context.Context, _, i int) error {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("next %d of %d: %w", i+1, n, err)
		}
		if err := checkBody(i, m.Data(), size); err != nil {
			return err
		}
		if err := m.DoubleAck(ctx); err != nil {
			return fmt.Errorf("ack %d of %d: %w", i+1, n, err)
		}
		return nil
	})
}

// ConsumeConcurrently: consumers goroutines each Receive then Delete. The
// pool has one connection (SQLite has one writer), so their transactions
// queue for it.
func (s *goqiteStore) ConsumeConcurrently(ctx context.Context, n, size, consumers int) error {
	return consumeEach(ctx, n, consumers, func(ctx context.Context, _, i int) error {
		m, err := s.q.Receive(ctx)
		if err != nil {
			return fmt.Errorf("receive %d of %d: %w", i+1, n, err)
		}
		if m == nil {
			return fmt.Errorf("receive %d of %d: the queue is empty", i+1, n)
		}
		if err := checkBody(i, m.Body, size); err != nil {
			return err
		}
		if err := s.q.Delete(ctx, m.ID); err != nil {
			return fmt.Errorf("delete %d of %d: %w", i+1, n, err)
		}
		return nil
	})
}

// ConsumeConcurrently: consumers goroutines, each a consumer of its own
// name (c1, c2, ...) in the group on its own pooled connection, do
// XREADGROUP COUNT 1 then XACK.
func (s *redisStore) ConsumeConcurrently(ctx context.Context, n, size, consumers int) error {
	return consumeEach(ctx, n, consumers, func(ctx context.Context, k, i int) error {
		streams, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group:    redisGroup,
			Consumer: "c" + strconv.Itoa(k+1),
			Streams:  []string{redisStream, ">"},
			Count:    1,
			Block:    5 * time.Second,
		}).Result()
		if err != nil {
			return fmt.Errorf("xreadgroup %d of %d: %w", i+1, n, err)
		}
		if len(streams) != 1 || len(streams[0].Messages) != 1 {
			return fmt.Errorf("xreadgroup %d of %d: got %v", i+1, n, streams)
		}
		m := streams[0].Messages[0]
		body, _ := m.Values[redisField].(string)
		if err := checkBody(i, []byte(body), size); err != nil {
			return err
		}
		if err := s.rdb.XAck(ctx, redisStream, redisGroup, m.ID).Err(); err != nil {
			return fmt.Errorf("xack %d of %d: %w", i+1, n, err)
		}
		return nil
	})
}

// ConsumeConcurrently: consumers goroutines each Dequeue, which dque
// serializes with its mutex (and fsyncs, in safe mode).
func (s *dqueStore) ConsumeConcurrently(ctx context.Context, n, size, consumers int) error {
	return consumeEach(ctx, n, consumers, func(_ context.Context, _, i int) error {
		v, err := s.q.Dequeue()
		if err != nil {
			return fmt.Errorf("dequeue %d of %d: %w", i+1, n, err)
		}
		item, ok := v.(*dqueItem)
		if !ok {
			return fmt.Errorf("dequeue %d of %d: got %T", i+1, n, v)
		}
		return checkBody(i, item.Body, size)
	})
}

// TestConcurrentConsumersSmoke checks the wiring of every configuration in
// concurrentConsumers on 200 messages: Fill, Held, ConsumeConcurrently
// with manyConsumers consumers, Held again. It also checks that every name
// in concurrentConsumers is a configuration that exists, so that a renamed
// one cannot silently lose its consumers=16 case.
func TestConcurrentConsumersSmoke(t *testing.T) {
	const n, size = 200, 1 << 10
	found := map[string]bool{}
	for _, p := range allPeers() {
		for _, c := range p.configs {
			name := p.name + "/" + c.name
			if !concurrentConsumers[name] {
				continue
			}
			found[name] = true
			t.Run(name, func(t *testing.T) {
				if p.name == "RedisStreams" {
					if _, err := exec.LookPath("redis-server"); err != nil {
						t.Skip(redisMissing)
					}
				}
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				st := openStore(t, c.open)
				s, ok := st.(concurrentStore)
				if !ok {
					t.Fatalf("%T has no ConsumeConcurrently", st)
				}
				if err := s.Fill(ctx, filledBody(size), n); err != nil {
					t.Fatalf("fill: %v", err)
				}
				checkHeld(t, s, n)
				if err := s.ConsumeConcurrently(ctx, n, size, manyConsumers); err != nil {
					t.Fatalf("consume: %v", err)
				}
				checkHeld(t, s, 0)
			})
		}
	}
	for name := range concurrentConsumers {
		if !found[name] {
			t.Errorf("concurrentConsumers names %s, which is no peer configuration", name)
		}
	}
}
