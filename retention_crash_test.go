package zeroloss

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

var retentionCrashOptions = Options{Flush: FlushSync, SegmentSize: 4096 + 2048 + record.MaxMoveOverhead, MaxMessageSize: 2048, leaseChunk: 5, slotEverySync: true}

// consumeOutcome is what the consume workload was told before the crash.
type consumeOutcome struct {
	sent        map[string]uint64 // SendOK: ID → seq
	acked       map[string]bool   // Ack returned nil
	dead        map[string]bool   // Nack returned nil on the last allowed delivery
	unconfirmed string            // the ack or nack under way when the machine died
}

// consumeWorkload sends, receives and acks one message at a time, sends every
// 7th to the dead letters (MaxDeliveries 1), and runs retention every 5
// messages, so that checkpoints are written and segments deleted.
func consumeWorkload(q *Queue) consumeOutcome {
	out := consumeOutcome{sent: map[string]uint64{}, acked: map[string]bool{}, dead: map[string]bool{}}
	ctx := context.Background()
	c, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour, MaxDeliveries: 1})
	if err != nil {
		return out
	}
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("c%03d", i)
		res, err := q.Send(ctx, &Message{ID: id, Body: bodyFor(id)[:100+i*5]})
		if err != nil || res.Status != SendOK {
			return out
		}
		out.sent[id] = res.Seq
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		d, err := c.Receive(rctx)
		cancel()
		if err != nil {
			return out
		}
		out.unconfirmed = d.Message.ID
		if i%7 == 3 {
			if d.Nack(0) != nil {
				return out
			}
			out.dead[d.Message.ID] = true
		} else {
			if d.Ack() != nil {
				return out
			}
			out.acked[d.Message.ID] = true
		}
		out.unconfirmed = ""
		if i%5 == 4 {
			if q.flushMarks(ctx) != nil || q.retain() != nil {
				return out
			}
		}
	}
	return out
}

// checkConsumeRecovered reopens fs after a crash and checks: Open succeeds;
// no message whose Ack returned is delivered again; every dead letter whose
// Nack returned is still a dead letter; every other SendOK message is
// delivered again or a dead letter, except that the one ack or nack under way
// at the crash may have landed.
func checkConsumeRecovered(t *testing.T, fs *vfs.MemFS, out consumeOutcome, label string) {
	t.Helper()
	opts := retentionCrashOptions
	opts.fs = fs
	q, err := Open("/q", &opts)
	require.NoError(t, err, "%s: reopen after crash", label)
	defer q.Close()
	c, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour, MaxDeliveries: 100})
	require.NoError(t, err, label)
	delivered := map[string]bool{}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Millisecond)
		d, err := c.Receive(ctx)
		cancel()
		if err != nil {
			break
		}
		id := d.Message.ID
		require.False(t, out.acked[id], "%s: acked message %s delivered again", label, id)
		require.False(t, out.dead[id], "%s: dead letter %s delivered again", label, id)
		require.False(t, delivered[id], "%s: %s delivered twice after the crash", label, id)
		require.Equal(t, bodyFor(id)[:len(d.Message.Body)], d.Message.Body, "%s: body of %s", label, id)
		delivered[id] = true
		require.NoError(t, d.Ack(), label)
	}
	dead, err := q.DeadLetters("g")
	require.NoError(t, err, label)
	deadIDs := map[string]bool{}
	for _, dl := range dead {
		deadIDs[dl.Message.ID] = true
	}
	for id := range out.dead {
		require.True(t, deadIDs[id], "%s: dead letter %s lost", label, id)
	}
	for id, seq := range out.sent {
		if out.acked[id] || out.dead[id] || id == out.unconfirmed {
			continue
		}
		require.True(t, delivered[id] || deadIDs[id], "%s: SendOK message %s (seq %d) neither acked, delivered again nor a dead letter", label, id, seq)
	}
}

// TestCrashDuringConsumeAndRetention enumerates crash points over a
// send/receive/ack/dead-letter workload that also writes checkpoints and
// deletes segments, in every crash mode.
func TestCrashDuringConsumeAndRetention(t *testing.T) {
	fs := vfs.NewMem()
	opts := retentionCrashOptions
	opts.fs = fs
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	out := consumeWorkload(q)
	require.NoError(t, q.Close())
	require.Len(t, out.sent, 40, "without a crash everything is sent")
	require.NotZero(t, q.Stats().SegmentsDeleted, "the workload deletes segments")
	require.NotZero(t, q.Stats().RecycledRolls, "and reuses them (RecycleSegments): crashes hit every step of it")
	total := fs.OpCount()

	step := 1
	if testing.Short() {
		step = 5
	}
	rng := rand.New(rand.NewPCG(13, 17))
	points := 0
	for limit := 0; limit <= total; limit += step {
		for _, mode := range vfs.CrashModes {
			fs := vfs.NewMem()
			opts := retentionCrashOptions
			opts.fs = fs
			fs.SetOpLimit(limit)
			var out consumeOutcome
			q, err := Open("/q", &opts)
			if err == nil {
				out = consumeWorkload(q)
				_ = q.Close()
			}
			fs.Crash(mode, rng)
			fs.SetOpLimit(-1)
			checkConsumeRecovered(t, fs, out, fmt.Sprintf("crash after op %d/%d, %v", limit, total, mode))
			points++
		}
	}
	t.Logf("%d crash points (%d operations, every %d, x %d modes)", points, total+1, step, len(vfs.CrashModes))
}
