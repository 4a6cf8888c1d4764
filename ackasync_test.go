package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestAckAsyncAcks: AckAsync acks like Ack (no redelivery however far the
// fake clock moves, none after a clean restart) without waiting; a second
// AckAsync or an Ack after it are no errors, and the Ack returns once the
// ack is written; a delivery no longer held is refused as Ack refuses it.
func TestAckAsyncAcks(t *testing.T) {
	fs := vfs.NewMem()
	clock := newFakeClock()
	q := consumerQueue(t, fs, clock)
	sendN(t, q, "m", 10)
	opts := &ConsumerOptions{AckTimeout: time.Second, Backoff: []time.Duration{time.Second}}
	c, err := q.Consumer("g", opts)
	require.NoError(t, err)

	var last *Delivery
	for i := range 9 {
		last = receive(t, c)
		require.Equal(t, fmt.Sprintf("m-%03d", i), last.Message.ID)
		require.NoError(t, last.AckAsync())
		require.NoError(t, last.AckAsync(), "a second AckAsync is no error")
	}
	require.NoError(t, last.Ack(), "Ack after AckAsync: nil once the ack is written")
	expired := receive(t, c)
	require.Equal(t, "m-009", expired.Message.ID)
	clock.Advance(time.Second) // its ack deadline passes
	nothing(t, c)              // and its backoff runs
	clock.Advance(time.Second)
	d := receive(t, c)
	require.Equal(t, "m-009", d.Message.ID)
	require.ErrorIs(t, expired.AckAsync(), ErrDeliveryExpired, "delivered again since")
	require.NoError(t, d.AckAsync())
	clock.Advance(time.Hour)
	nothing(t, c)
	require.NoError(t, q.Close(), "Close writes the async acks still queued")

	q = consumerQueue(t, fs, clock)
	defer q.Close()
	c, err = q.Consumer("g", opts)
	require.NoError(t, err)
	nothing(t, c)
}

// TestAckAsyncCrashRedeliversNeverLoses: a power loss right after AckAsync
// returns, in every MemFS crash mode, delivers every unacked message again
// and nothing that was not sent; the async-acked ones may come back. With
// the disk frozen before the AckAsyncs (their record cannot be written) they
// do come back. An Ack after AckAsync is durable: those never come back.
func TestAckAsyncCrashRedeliversNeverLoses(t *testing.T) {
	const n = 20
	type run struct {
		name   string
		mode   vfs.CrashMode
		freeze bool // the disk dies before the AckAsyncs
		wait   bool // Ack after AckAsync, before the crash
	}
	var runs []run
	for _, mode := range vfs.CrashModes {
		runs = append(runs, run{name: mode.String(), mode: mode})
		runs = append(runs, run{name: mode.String() + "/frozen", mode: mode, freeze: true})
		runs = append(runs, run{name: mode.String() + "/waited", mode: mode, wait: true})
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			fs := vfs.NewMem()
			q := consumerQueue(t, fs, nil)
			ids := sendN(t, q, "m", n)
			c, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour})
			require.NoError(t, err)
			var held []*Delivery
			for range n {
				held = append(held, receive(t, c))
			}
			if r.freeze {
				fs.SetOpLimit(fs.OpCount())
			}
			for i, d := range held {
				if i%2 == 0 {
					require.NoError(t, d.AckAsync())
				}
			}
			if r.wait {
				for i, d := range held {
					if i%2 == 0 {
						require.NoError(t, d.Ack())
					}
				}
			}
			fs.Crash(r.mode, nil)
			q.Close()

			q = consumerQueue(t, fs, nil)
			defer q.Close()
			c, err = q.Consumer("g", nil)
			require.NoError(t, err)
			got := map[string]int{}
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				d, err := c.Receive(ctx)
				cancel()
				if err != nil {
					require.ErrorIs(t, err, context.DeadlineExceeded)
					break
				}
				got[d.Message.ID]++
				require.Equal(t, bodyFor(d.Message.ID), d.Message.Body)
				require.NoError(t, d.Ack())
			}
			for i, id := range ids {
				switch {
				case i%2 == 1:
					assert.Equal(t, 1, got[id], "unacked %s must come back once", id)
				case r.freeze:
					assert.Equal(t, 1, got[id], "%s: AckAsync whose record was never written: delivered again", id)
				case r.wait:
					assert.Zero(t, got[id], "%s: Ack after AckAsync is durable", id)
				default:
					assert.LessOrEqual(t, got[id], 1, "%s: async-acked, may come back", id)
				}
				delete(got, id)
			}
			assert.Empty(t, got, "nothing that was not sent")
		})
	}
}

// TestAckAsyncAfterClose: once the queue is closed, AckAsync writes (and
// fails) at once, as Ack does, rather than queueing an ack nothing will
// write.
func TestAckAsyncAfterClose(t *testing.T) {
	_, q, c := clockedConsumer(t, 1, nil)
	d := receive(t, c)
	require.NoError(t, q.Close())
	require.ErrorIs(t, d.AckAsync(), ErrClosed)
}

// TestAckAsyncFailingOnAClosedConsumer: an AckAsync whose record cannot be
// written (every write fails) leaves the message owed; if its consumer was
// closed meanwhile (Close skips a delivery whose ack is being written), the
// failure releases it at once, for the group's other consumers, instead of
// leaving it to its ack timeout.
func TestAckAsyncFailingOnAClosedConsumer(t *testing.T) {
	fault := vfs.NewFault(vfs.NewMem())
	q := consumerQueue(t, fault, nil)
	defer q.Close()
	sendN(t, q, "m", 1)
	c1, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour})
	require.NoError(t, err)
	c2, err := q.Consumer("g", nil)
	require.NoError(t, err)
	d := receive(t, c1)
	fault.FailFrom(vfs.OpWrite, 1, errors.New("injected write failure"))
	require.NoError(t, d.AckAsync(), "AckAsync does not wait for the write")
	require.NoError(t, c1.Close())
	again := receive(t, c2)
	require.Equal(t, "m-000", again.Message.ID, "not acked: owed, and released at once")
	assert.Equal(t, 1, again.Attempt)
}
