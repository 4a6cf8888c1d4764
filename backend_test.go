package zeroloss_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// TestBackendInterfaces checks the interface forms of the embedded queue's
// methods: errors come back as nil interfaces (not typed nils, which would
// compare unequal to nil), Next returns the *Delivery Receive would, Handle
// hands the handler the *Delivery, and Info mirrors its fields. The
// behaviour behind them is the conformance suite's (package conformance).
func TestBackendInterfaces(t *testing.T) {
	q, err := zeroloss.Open(t.TempDir(), nil)
	require.NoError(t, err)
	defer q.Close()
	var b zeroloss.Backend = q
	ctx := context.Background()

	sub, err := b.Subscribe("", nil)
	require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)
	assert.True(t, sub == nil, "Subscribe's error comes with a nil interface")

	sub, err = b.Subscribe("g", &zeroloss.ConsumerOptions{AckTimeout: time.Minute})
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	r, err := sub.Next(short) // nothing sent yet
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.True(t, r == nil, "Next's error comes with a nil interface")

	res, err := b.Send(ctx, &zeroloss.Message{ID: "a", Key: "k", Body: []byte("x")})
	require.NoError(t, err)

	r, err = sub.Next(ctx)
	require.NoError(t, err)
	d, ok := r.(*zeroloss.Delivery)
	require.True(t, ok, "Next returns a *Delivery")
	assert.Equal(t, zeroloss.DeliveryInfo{Message: d.Message, Seq: d.Seq, Attempt: d.Attempt, FirstDelivered: d.FirstDelivered}, r.Info())
	assert.Equal(t, res.Seq, r.Info().Seq)
	require.NoError(t, r.Nack(time.Nanosecond))

	hctx, stop := context.WithCancel(ctx)
	var handled zeroloss.Received
	err = sub.Handle(hctx, func(_ context.Context, r zeroloss.Received) error {
		handled = r
		stop()
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.IsType(t, (*zeroloss.Delivery)(nil), handled)
	assert.Equal(t, 2, handled.Info().Attempt)
	assert.Equal(t, "a", handled.Info().Message.ID)
}

// handleOrders is application code written against the interfaces: it runs
// unchanged on the embedded queue and on the JetStream adapter.
func handleOrders(ctx context.Context, b zeroloss.Backend) error {
	if _, err := b.Send(ctx, &zeroloss.Message{ID: "order-42", Body: []byte("paid")}); err != nil {
		return err
	}
	sub, err := b.Subscribe("billing", &zeroloss.ConsumerOptions{AckTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	err = sub.Handle(ctx, func(_ context.Context, d zeroloss.Received) error {
		fmt.Printf("%s: %s\n", d.Info().Message.ID, d.Info().Message.Body)
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
