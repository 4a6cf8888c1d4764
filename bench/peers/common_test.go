package peers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
)

// store is one peer opened in one configuration, as the generic benchmarks
// and TestPeersSmoke drive it. Every peer file implements it with a small
// adapter over the peer's own API.
type store interface {
	// Send stores one message and returns once the peer has acknowledged
	// it, in whatever sense the peer's acknowledgement has (see README.md).
	// It is safe for concurrent use.
	Send(ctx context.Context, body []byte) error
	// Fill stores n messages the fastest way the peer offers (batches,
	// pipelining, syncs off); it runs before the timer starts.
	Fill(ctx context.Context, body []byte, n int) error
	// Consume receives n messages one at a time and acknowledges (or
	// deletes) each before taking the next, failing if a body is not size
	// bytes long or fewer than n messages come.
	Consume(ctx context.Context, n, size int) error
	// Held returns how many messages the peer holds that were not consumed.
	// Embedded peers close and reopen their files to answer, so the figure
	// is what is on disk, not what an in-memory counter says.
	Held(ctx context.Context) (int, error)
	// Close releases the store; called once, from the benchmark's cleanup.
	Close() error
}

// opener opens a store of one peer configuration in dir, an empty directory.
// It registers nothing with tb: the caller closes the store.
type opener func(tb testing.TB, dir string) (store, error)

// config is one named configuration of a peer, e.g. {"mode=safe", ...}.
type config struct {
	name string
	open opener
	// consumeOp names the consume sub-benchmark: "consume+ack" for peers
	// with an acknowledgement or delete step, "read" for a plain log.
	consumeOp string
	// maxProducers limits op=send to producers <= maxProducers when non-zero.
	maxProducers int
}

// Workload matrix shared by every peer. Names follow bench/: key=value.
var (
	sendSizes     = []int{128, 1 << 10} // size=128B only with producers=1
	sendProducers = []int{1, 16}
	consumeSize   = 1 << 10
)

// runPeer runs every workload of a peer's configurations as sub-benchmarks:
//
//	CONFIG/op=send/size=128B|1KiB/producers=1|16   (128B with producers=1 only)
//	CONFIG/op=consume+ack/size=1KiB/consumers=1    (or op=read)
//	CONFIG/op=consume+ack/size=1KiB/consumers=16   (concurrentConsumers only)
func runPeer(b *testing.B, configs []config) {
	for _, c := range configs {
		for _, size := range sendSizes {
			for _, p := range sendProducers {
				if size != 1<<10 && p != 1 {
					continue
				}
				if c.maxProducers > 0 && p > c.maxProducers {
					continue
				}
				name := fmt.Sprintf("%s/op=send/size=%s/producers=%d", c.name, sizeName(size), p)
				b.Run(name, func(b *testing.B) { benchSend(b, c.open, size, p) })
			}
		}
		op := c.consumeOp
		if op == "" {
			op = "consume+ack"
		}
		for _, consumers := range consumerCounts(b, c) {
			name := fmt.Sprintf("%s/op=%s/size=%s/consumers=%d", c.name, op, sizeName(consumeSize), consumers)
			if consumers == 1 {
				b.Run(name, func(b *testing.B) { benchConsume(b, c.open, consumeSize) })
			} else {
				b.Run(name, func(b *testing.B) { benchConsumeConcurrently(b, c.open, consumeSize, consumers) })
			}
		}
	}
}

// openStore opens a store in a new b.TempDir() and closes it in cleanup.
func openStore(tb testing.TB, open opener) store {
	tb.Helper()
	s, err := open(tb, tb.TempDir())
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	var once sync.Once
	tb.Cleanup(func() {
		once.Do(func() {
			if err := s.Close(); err != nil {
				tb.Errorf("close: %v", err)
			}
		})
	})
	return s
}

// benchSend is op=send: b.N messages of size bytes split across producers
// goroutines, each waiting for its acknowledgement before the next. After
// the timed part it checks that the peer holds exactly b.N messages.
func benchSend(b *testing.B, open opener, size, producers int) {
	s := openStore(b, open)
	body := filledBody(size)
	ctx := b.Context()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	startTimer(b)

	err := produce(ctx, b.N, producers, func() error { return s.Send(ctx, body) })

	stopTimer(b)
	if err != nil {
		b.Fatal(err)
	}
	reportRate(b)
	checkHeld(b, s, b.N)
}

// benchConsume is op=consume+ack (or op=read): b.N messages are stored with
// Fill before the timer starts, then one consumer receives and acknowledges
// them one at a time. After the timed part it checks that nothing is left.
func benchConsume(b *testing.B, open opener, size int) {
	s := openStore(b, open)
	ctx := b.Context()
	if err := s.Fill(ctx, filledBody(size), b.N); err != nil {
		b.Fatalf("fill: %v", err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	startTimer(b)

	err := s.Consume(ctx, b.N, size)

	stopTimer(b)
	if err != nil {
		b.Fatal(err)
	}
	reportRate(b)
	checkHeld(b, s, 0)
}

// checkHeld fails tb unless the store holds exactly want messages.
func checkHeld(tb testing.TB, s store, want int) {
	tb.Helper()
	got, err := s.Held(context.Background())
	if err != nil {
		tb.Fatalf("held: %v", err)
	}
	if got != want {
		tb.Fatalf("the peer holds %d messages, want %d", got, want)
	}
}

// produce runs total calls of send split across producers goroutines, each
// making its calls one after the other. A producer stops at its first error.
func produce(ctx context.Context, total, producers int, send func() error) error {
	errs := make([]error, producers)
	var wg sync.WaitGroup
	for p := range producers {
		n := share(total, producers, p)
		wg.Go(func() {
			for i := range n {
				if err := send(); err != nil {
					errs[p] = fmt.Errorf("producer %d, send %d of %d: %w", p, i+1, n, err)
					return
				}
				if ctx.Err() != nil {
					errs[p] = ctx.Err()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// share is how many of total operations producer p of producers performs:
// total/producers, plus one for the first total%producers producers.
func share(total, producers, p int) int {
	n := total / producers
	if p < total%producers {
		n++
	}
	return n
}

// reportRate reports msgs/s, one message per op, from the timed part only.
func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// sizeName spells a byte count the way benchmark names do: 128B, 1KiB.
func sizeName(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// filledBody returns n bytes of a repeating non-zero pattern.
func filledBody(n int) []byte {
	body := make([]byte, n)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	return body
}

// checkBody fails unless body is size bytes long.
func checkBody(i int, body []byte, size int) error {
	if len(body) != size {
		return fmt.Errorf("message %d: body of %d bytes, want %d", i+1, len(body), size)
	}
	return nil
}

// markEnv turns on the timed-part markers that fsyncs.sh counts between.
const markEnv = "PEERS_STRACE_MARK"

var marking = os.Getenv(markEnv) != ""

// mark makes one stat(2) of a path that cannot exist,
// /peers-strace-mark/WHAT/N, when PEERS_STRACE_MARK is set, so that an
// strace of the run can count the fsyncs between the start and stop marks
// of the timed part of the b.N=N run. It does nothing otherwise.
func mark(what string, n int) {
	if marking {
		_, _ = os.Stat("/peers-strace-mark/" + what + "/" + strconv.Itoa(n))
	}
}

// startTimer resets the benchmark timer and marks the start of the timed part.
func startTimer(b *testing.B) {
	mark("start", b.N)
	b.ResetTimer()
}

// stopTimer stops the benchmark timer and marks the end of the timed part.
func stopTimer(b *testing.B) {
	b.StopTimer()
	mark("stop", b.N)
}
