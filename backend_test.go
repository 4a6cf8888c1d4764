package zeroloss_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// fakeDriver is a backend beneath *Consumer and *Delivery that records what
// reaches it. Receive hands out what is put on its deliveries channel.
type fakeDriver struct {
	deliveries chan *zeroloss.Delivery
	mu         sync.Mutex
	calls      []string // "Ack 1", "Nack 2 5s", ...: method, seq, argument
	fail       map[string]error
	closed     bool
}

func newFakeDriver() *fakeDriver {
	return &fakeDriver{deliveries: make(chan *zeroloss.Delivery, 16), fail: map[string]error{}}
}

func (f *fakeDriver) Receive(ctx context.Context) (*zeroloss.Delivery, error) {
	select {
	case d := <-f.deliveries:
		return d, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeDriver) ReceiveBatch(ctx context.Context, max int) ([]*zeroloss.Delivery, error) {
	d, err := f.Receive(ctx)
	if err != nil {
		return nil, err
	}
	out := []*zeroloss.Delivery{d}
	for len(out) < max && len(f.deliveries) > 0 {
		out = append(out, <-f.deliveries)
	}
	return out, nil
}

func (f *fakeDriver) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// send puts a delivery of seq (ID "m<seq>") on the channel.
func (f *fakeDriver) send(seq uint64, attempt int) {
	m := zeroloss.Message{ID: fmt.Sprintf("m%d", seq), Body: []byte("x")}
	f.deliveries <- zeroloss.NewDriverDelivery(m, seq, attempt, time.Unix(1, 0), &fakeDelivery{f: f, seq: seq})
}

func (f *fakeDriver) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.fail[call]
}

func (f *fakeDriver) recorded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

type fakeDelivery struct {
	f   *fakeDriver
	seq uint64
}

func (d *fakeDelivery) Ack() error      { return d.f.record(fmt.Sprintf("Ack %d", d.seq)) }
func (d *fakeDelivery) AckAsync() error { return d.f.record(fmt.Sprintf("AckAsync %d", d.seq)) }
func (d *fakeDelivery) Nack(delay time.Duration) error {
	return d.f.record(fmt.Sprintf("Nack %d %v", d.seq, delay))
}
func (d *fakeDelivery) NackNow() error { return d.f.record(fmt.Sprintf("NackNow %d", d.seq)) }
func (d *fakeDelivery) Release() error {
	d.f.record(fmt.Sprintf("Release %d", d.seq))
	return fmt.Errorf("fake: release: %w", zeroloss.ErrUnsupported)
}
func (d *fakeDelivery) Extend(by time.Duration) error {
	return d.f.record(fmt.Sprintf("Extend %d %v", d.seq, by))
}

func receive(t *testing.T, c *zeroloss.Consumer) *zeroloss.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.Receive(ctx)
	require.NoError(t, err)
	return d
}

// TestDriverDelivery: a *Delivery built by a driver carries its fields,
// and each of its methods reaches the driver's, after the argument checks
// that do not depend on the backend; the driver's ErrUnsupported comes
// back as is.
func TestDriverDelivery(t *testing.T) {
	tests := []struct {
		name string
		call func(d *zeroloss.Delivery) error
		want []string // the driver's calls; nil: none
		err  error
	}{
		{"Ack", (*zeroloss.Delivery).Ack, []string{"Ack 7"}, nil},
		{"AckAsync", (*zeroloss.Delivery).AckAsync, []string{"AckAsync 7"}, nil},
		{"Nack", func(d *zeroloss.Delivery) error { return d.Nack(5 * time.Second) }, []string{"Nack 7 5s"}, nil},
		{"NackBackoff", func(d *zeroloss.Delivery) error { return d.Nack(0) }, []string{"Nack 7 0s"}, nil},
		{"NackNegative", func(d *zeroloss.Delivery) error { return d.Nack(-time.Second) }, nil, zeroloss.ErrInvalidOptions},
		{"NackNow", (*zeroloss.Delivery).NackNow, []string{"NackNow 7"}, nil},
		{"Release", (*zeroloss.Delivery).Release, []string{"Release 7"}, zeroloss.ErrUnsupported},
		{"Extend", func(d *zeroloss.Delivery) error { return d.Extend(time.Minute) }, []string{"Extend 7 1m0s"}, nil},
		{"ExtendTooShort", func(d *zeroloss.Delivery) error { return d.Extend(time.Millisecond) }, nil, zeroloss.ErrInvalidOptions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeDriver()
			c := zeroloss.NewDriverConsumer("g", zeroloss.ConsumerOptions{Concurrency: 1}, f, nil)
			assert.Equal(t, "g", c.Group())
			f.send(7, 3)
			d := receive(t, c)
			assert.Equal(t, "m7", d.Message.ID)
			assert.Equal(t, uint64(7), d.Seq)
			assert.Equal(t, 3, d.Attempt)
			assert.Equal(t, time.Unix(1, 0), d.FirstDelivered)
			err := tt.call(d)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.want, f.recorded())
		})
	}
}

// TestDriverConsumer: ReceiveBatch, AckBatch, Consume and Close of a
// *Consumer on a driver run on it; AckBatch refuses to mix backends.
func TestDriverConsumer(t *testing.T) {
	ctx := context.Background()
	f := newFakeDriver()
	c := zeroloss.NewDriverConsumer("g", zeroloss.ConsumerOptions{Concurrency: 2}, f, nil)

	_, err := c.ReceiveBatch(ctx, 0)
	require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)
	f.send(1, 1)
	f.send(2, 1)
	f.send(3, 1)
	ds, err := c.ReceiveBatch(ctx, 2)
	require.NoError(t, err)
	require.Len(t, ds, 2)
	f.fail["Ack 2"] = errors.New("ack 2 failed")
	err = c.AckBatch(ds...)
	require.ErrorContains(t, err, "ack 2 failed", "AckBatch reports the driver's failure")
	assert.Equal(t, []string{"Ack 1", "Ack 2"}, f.recorded(), "every delivery acked, past a failure")

	// A delivery of the embedded queue is not acked by a driver's consumer,
	// nor a driver's delivery by the queue's.
	q, err := zeroloss.Open(t.TempDir(), nil)
	require.NoError(t, err)
	defer q.Close()
	_, err = q.Send(ctx, &zeroloss.Message{ID: "e", Body: []byte("x")})
	require.NoError(t, err)
	qc, err := q.Consumer("g", nil)
	require.NoError(t, err)
	qd := receive(t, qc)
	require.ErrorIs(t, c.AckBatch(qd), zeroloss.ErrInvalidOptions)
	d3 := receive(t, c)
	require.ErrorIs(t, qc.AckBatch(d3), zeroloss.ErrInvalidOptions)
	assert.Equal(t, []string{"Ack 1", "Ack 2"}, f.recorded(), "nothing reached the driver")
	require.NoError(t, c.AckBatch(d3), "Receive's delivery is its consumer's")
	assert.Equal(t, []string{"Ack 1", "Ack 2", "Ack 3"}, f.recorded())
	require.NoError(t, qd.Ack())

	// Consume: nil acks, an error or a panic nacks with the backoff, a
	// failed ack is in its error.
	f.calls = nil
	f.send(10, 1)
	f.send(11, 1)
	f.send(12, 1)
	f.fail["Ack 10"] = errors.New("ack 10 failed")
	cctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	handled := 0
	err = c.Consume(cctx, func(_ context.Context, d *zeroloss.Delivery) error {
		mu.Lock()
		handled++
		if handled == 3 {
			cancel()
		}
		mu.Unlock()
		switch d.Seq {
		case 11:
			return errors.New("handler failed")
		case 12:
			panic("handler panicked")
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "ack 10 failed")
	assert.ElementsMatch(t, []string{"Ack 10", "Nack 11 0s", "Nack 12 0s"}, f.recorded())

	require.NoError(t, c.Close())
	assert.True(t, f.closed, "Close reaches the driver")
}

// handleOrders is application code written against Backend, *Consumer and
// *Delivery: it runs unchanged on the embedded queue and on the JetStream
// adapter.
func handleOrders(ctx context.Context, b zeroloss.Backend) error {
	if _, err := b.Send(ctx, &zeroloss.Message{ID: "order-42", Body: []byte("paid")}); err != nil {
		return err
	}
	c, err := b.Consumer("billing", &zeroloss.ConsumerOptions{AckTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := context.WithCancel(ctx)
	err = c.Consume(ctx, func(_ context.Context, d *zeroloss.Delivery) error {
		fmt.Printf("%s: %s\n", d.Message.ID, d.Message.Body)
		stop() // one message is enough for the example
		return nil
	})
	if err == context.Canceled {
		return nil
	}
	return err
}

func ExampleBackend() {
	dir, err := os.MkdirTemp("", "zeroloss-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	q, err := zeroloss.Open(dir, nil)
	if err != nil {
		panic(err)
	}
	defer q.Close()
	if err := handleOrders(context.Background(), q); err != nil { // or a *jetstream.Backend
		panic(err)
	}
	// Output: order-42: paid
}
