package zeroloss

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// idsIn returns how many times each message ID is in the queue's log, and
// the IDs in order of first occurrence.
func idsIn(t *testing.T, q *Queue) (map[string]int, []string) {
	t.Helper()
	count := map[string]int{}
	var order []string
	for _, s := range readBack(t, q) {
		if count[s.Msg.ID] == 0 {
			order = append(order, s.Msg.ID)
		}
		count[s.Msg.ID]++
	}
	return count, order
}

// The replication statuses lead a strict producer to spool and resend, like
// FlushDiskTimeout: no follower (ReplicaNotAvailable) or a follower that does
// not ack in time (FlushReplicaTimeout). Once a follower is attached the
// spool drains, and with dedup every message is once on the leader and once
// on the follower, in order.
func TestStrictProducerSpoolsOnReplicaStatuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status SendStatus
	}{{"no-follower", ReplicaNotAvailable}, {"follower-not-acking", FlushReplicaTimeout}} {
		t.Run(tc.name, func(t *testing.T) {
			q := openLeader(t, Options{Replication: ReplicateSync, ReplicaTimeout: 100 * time.Millisecond})
			p, err := NewProducer(q, &ProducerOptions{Strict: true, SpoolDir: t.TempDir(), Attempts: 2,
				Backoff: 10 * time.Millisecond, ResendInterval: 20 * time.Millisecond})
			require.NoError(t, err)
			defer p.Close()
			ctx := context.Background()
			var silent net.Conn
			if tc.status == FlushReplicaTimeout {
				a, b := net.Pipe()
				startFakeFollower(t, b, DefaultMaxMessageSize+record.MaxMoveOverhead) // reads, never acks
				require.NoError(t, q.AttachReplica(a))
				silent = b
			}
			res, err := p.Send(ctx, &Message{ID: "a", Body: []byte("a")})
			require.NoError(t, err)
			require.Equal(t, Spooled, res.Outcome)
			require.ErrorContains(t, res.Cause, tc.status.String())
			res, err = p.Send(ctx, &Message{ID: "b", Body: []byte("b")})
			require.NoError(t, err)
			require.Equal(t, Spooled, res.Outcome, "behind the spool")
			time.Sleep(100 * time.Millisecond) // the resender is refused meanwhile
			require.Equal(t, 2, p.Spooled())

			if silent != nil {
				silent.Close() // the leader drops the silent follower
				require.Eventually(t, func() bool { return !q.Stats().ReplicaAttached }, 5*time.Second, time.Millisecond)
			}
			dir := t.TempDir()
			a, b := net.Pipe()
			f := startFollower(t, dir, b, nil)
			require.NoError(t, q.AttachReplica(a))
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			require.NoError(t, p.Flush(fctx))
			require.Zero(t, p.Spooled())

			count, order := idsIn(t, q)
			assert.Equal(t, map[string]int{"a": 1, "b": 1}, count, "on the leader, once each")
			assert.Equal(t, []string{"a", "b"}, order)
			require.NoError(t, p.Close())
			require.NoError(t, q.Close())
			f.stop()
			copyQ, err := Open(dir, nil)
			require.NoError(t, err)
			defer copyQ.Close()
			count, order = idsIn(t, copyQ)
			assert.Equal(t, map[string]int{"a": 1, "b": 1}, count, "on the follower, once each")
			assert.Equal(t, []string{"a", "b"}, order)
		})
	}
}
