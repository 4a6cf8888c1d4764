package zeroloss

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// The scenario: a group declared under a typo'd name and never read
// pins every segment; once DeleteGroup deletes it, retention deletes them,
// and after a restart the group is still gone and the segments too.
func TestDeleteGroupReleasesRetention(t *testing.T) {
	fs := vfs.NewMem()
	open := func() *Queue {
		q, err := Open("/q", &Options{SegmentSize: 16 << 10, MaxMessageSize: 2 << 10, fs: fs})
		require.NoError(t, err)
		return q
	}
	q := open()
	ctx := context.Background()
	c, err := q.Consumer("workers", nil)
	require.NoError(t, err)
	_, err = q.Consumer("wokrers", nil) // the typo: declared, never read
	require.NoError(t, err)
	body := make([]byte, 1000)
	for i := range 100 {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprintf("m%03d", i), Body: body})
		require.NoError(t, err)
		require.NoError(t, receive(t, c).Ack())
	}
	require.NoError(t, q.flushMarks(ctx))
	require.NoError(t, q.retain())
	pinned := q.Stats().Segments
	require.GreaterOrEqual(t, pinned, 6, "the unread group keeps every segment")

	stats := groupStatsByName(q)
	typo, workers := stats["wokrers"], stats["workers"]
	assert.True(t, typo.HoldsOldest, "the unread group holds the oldest segment")
	assert.False(t, workers.HoldsOldest)
	assert.Equal(t, pinned-1, typo.PinnedSegments, "every sealed segment is kept for it alone")
	assert.Greater(t, typo.PinnedBytes, int64(50*1000))
	assert.Zero(t, workers.PinnedSegments)
	assert.Zero(t, typo.Floor)
	assert.Greater(t, workers.Floor, uint64(100))

	st, err := readDirState(fs, "/q") // what inspect shows
	require.NoError(t, err)
	require.Len(t, st.Groups, 2)
	for _, g := range st.Groups {
		if g.Name == "wokrers" {
			assert.True(t, g.HoldsOldest)
			assert.Equal(t, typo.PinnedSegments, g.PinnedSegments)
			assert.Equal(t, typo.PinnedBytes, g.PinnedBytes)
		} else {
			assert.False(t, g.HoldsOldest)
			assert.Zero(t, g.PinnedSegments)
		}
	}

	require.NoError(t, q.DeleteGroup("wokrers"))
	assert.Equal(t, []string{"workers"}, q.Groups())
	require.NoError(t, q.retain())
	assert.LessOrEqual(t, q.Stats().Segments, 2, "retention deletes what the deleted group held")
	err = q.DeleteGroup("wokrers")
	require.ErrorIs(t, err, ErrNoSuchGroup, "deleting it twice")
	assert.Contains(t, err.Error(), `"wokrers"`)
	require.NoError(t, q.Close())

	q = open()
	assert.Equal(t, []string{"workers"}, q.Groups(), "the deletion survives a restart")
	assert.LessOrEqual(t, q.Stats().Segments, 2)
	// Checkpoints after the deletion do not bring it back.
	sendIDs(t, q, "after", 30, SendOK)
	c, err = q.Consumer("workers", nil)
	require.NoError(t, err)
	for range 30 {
		require.NoError(t, receive(t, c).Ack())
	}
	require.NoError(t, q.flushMarks(ctx))
	require.NoError(t, q.retain())
	require.NoError(t, q.Close())
	q = open()
	defer q.Close()
	assert.Equal(t, []string{"workers"}, q.Groups())

	err = q.DeleteGroup("nope")
	require.ErrorIs(t, err, ErrNoSuchGroup)
	assert.Contains(t, err.Error(), `"nope"`)
}

func groupStatsByName(q *Queue) map[string]GroupStats {
	out := map[string]GroupStats{}
	for _, st := range q.GroupStats() {
		out[st.Group] = st
	}
	return out
}

// A deleted group's consumers fail with ErrGroupDeleted (a waiting Receive
// too); declared again, the group starts fresh as ConsumerOptions.Start says.
func TestDeletedGroupConsumersAndRedeclaration(t *testing.T) {
	for _, start := range []StartPosition{StartOldest, StartLatest} {
		t.Run(fmt.Sprint(start), func(t *testing.T) {
			q := openQueue(t, t.TempDir(), nil)
			defer q.Close()
			sendIDs(t, q, "m", 3, SendOK)
			c, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour})
			require.NoError(t, err)
			d := receive(t, c)
			require.NoError(t, d.Ack())
			held := receive(t, c)
			waiter, err := q.Consumer("g", nil)
			require.NoError(t, err)
			require.NoError(t, receive(t, waiter).Ack()) // m-2: nothing left for the waiter
			waiting := make(chan error, 1)
			go func() {
				_, err := waiter.Receive(context.Background())
				waiting <- err
			}()

			require.NoError(t, q.DeleteGroup("g"))
			select {
			case err := <-waiting:
				require.ErrorIs(t, err, ErrGroupDeleted, "a waiting Receive returns")
			case <-time.After(10 * time.Second):
				t.Fatal("a Receive waiting on the deleted group did not return")
			}
			_, err = c.Receive(context.Background())
			require.ErrorIs(t, err, ErrGroupDeleted)
			require.ErrorIs(t, held.Ack(), ErrGroupDeleted)
			require.ErrorIs(t, held.Nack(0), ErrGroupDeleted)
			require.ErrorIs(t, held.Extend(time.Minute), ErrGroupDeleted)
			_, err = q.DeadLetters("g")
			require.ErrorIs(t, err, ErrNoSuchGroup)

			sendIDs(t, q, "n", 1, SendOK)
			fresh, err := q.Consumer("g", &ConsumerOptions{Start: start})
			require.NoError(t, err)
			want := []string{"m-0", "m-1", "m-2", "n-0"}
			if start == StartLatest {
				sendIDs(t, q, "o", 1, SendOK)
				want = []string{"o-0"}
			}
			var got []string
			for range want {
				d := receive(t, fresh)
				got = append(got, d.Message.ID)
				require.NoError(t, d.Ack())
			}
			assert.Equal(t, want, got, "the group declared again starts fresh")
		})
	}
}

// DeleteGroup is durable when it returns: after a power loss right then, and
// with no retention since, the group does not come back (nor its hold).
func TestDeleteGroupSurvivesPowerLoss(t *testing.T) {
	for _, mode := range vfs.CrashModes {
		t.Run(mode.String(), func(t *testing.T) {
			fs := vfs.NewMem()
			q := memQueue(t, fs, Options{SegmentSize: 16 << 10, MaxMessageSize: 2 << 10})
			for _, name := range []string{"a", "b", "c"} {
				_, err := q.Consumer(name, nil)
				require.NoError(t, err)
			}
			sendIDs(t, q, "m", 5, SendOK)
			require.NoError(t, q.DeleteGroup("b"))
			fs.Crash(mode, rand.New(rand.NewPCG(1, uint64(mode))))
			q.Close()
			q = memQueue(t, fs, Options{SegmentSize: 16 << 10, MaxMessageSize: 2 << 10})
			defer q.Close()
			assert.Equal(t, []string{"a", "c"}, q.Groups())
		})
	}
}

func TestPinnedByCountsWhatOnlyThatGroupHolds(t *testing.T) {
	spans := func(lasts ...uint64) []wal.SegmentSpan {
		var out []wal.SegmentSpan
		for _, l := range lasts {
			out = append(out, wal.SegmentSpan{LastSeq: l, Bytes: 100})
		}
		return out
	}
	floors := map[string]uint64{"a": 10, "b": 50, "c": 100}
	for _, c := range []struct {
		name     string
		group    string
		segments []wal.SegmentSpan
		oldest   bool
		pinned   int
	}{
		{"lowest floor", "a", spans(15, 20, 40, 60, 90), true, 3},
		{"oldest segment already free", "a", spans(9, 20, 40, 60, 90), false, 2},
		{"behind another group", "b", spans(15, 20, 40, 60, 90), false, 0},
		{"no segment to delete", "a", nil, false, 0},
		{"no such group", "x", spans(15), false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, oldest, n, bytes := pinnedBy(c.group, floors, c.segments)
			assert.Equal(t, c.oldest, oldest)
			assert.Equal(t, c.pinned, n)
			assert.Equal(t, int64(100*c.pinned), bytes)
		})
	}
	_, oldest, n, _ := pinnedBy("only", map[string]uint64{"only": 30}, spans(30, 40, 60))
	assert.True(t, oldest)
	assert.Equal(t, 3, n, "a lone group pins every segment whose last seq is at or above its floor")
}

// DeleteGroup while the group's consumers ack and the marker writes its
// marks: no record of the group may follow the deletion record, or the
// next Open would fail on a record of an undeclared group.
func TestDeleteGroupWhileConsumersAck(t *testing.T) {
	for round := range 20 {
		fs := vfs.NewMem()
		o := Options{SegmentSize: 64 << 10, MaxMessageSize: 2 << 10}
		q := memQueue(t, fs, o)
		c, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour})
		require.NoError(t, err)
		done := make(chan error, 3)
		acked := make(chan struct{}, 1000)
		for range 3 {
			go func() {
				for {
					d, err := c.Receive(context.Background())
					if err == nil {
						err = d.Ack()
					}
					if err != nil {
						done <- err
						return
					}
					select { // not drained after the deletion: never block on it
					case acked <- struct{}{}:
					default:
					}
				}
			}()
		}
		stop := make(chan struct{})
		marker := make(chan error, 2)
		go func() { // the marker
			for {
				select {
				case <-stop:
					marker <- nil
					return
				default:
				}
				if err := q.flushMarks(context.Background()); err != nil {
					marker <- err
					return
				}
			}
		}()
		go func() { // a producer, so that acks are under way at the deletion
			for {
				select {
				case <-stop:
					marker <- nil
					return
				default:
				}
				if _, err := q.Send(context.Background(), &Message{Body: []byte("x")}); err != nil {
					marker <- err
					return
				}
			}
		}()
		for range 20 + round {
			<-acked
		}
		require.NoError(t, q.DeleteGroup("g"), "round %d", round)
		for range 3 {
			require.ErrorIs(t, <-done, ErrGroupDeleted, "round %d", round)
		}
		close(stop)
		require.NoError(t, <-marker, "round %d", round)
		require.NoError(t, <-marker, "round %d", round)
		require.NoError(t, q.Close())
		q = memQueue(t, fs, o)
		require.NoError(t, q.Close(), "round %d", round)
	}
}

// TestReceiveBatchOnADeletedGroupOpensNoReader: ReceiveBatch takes the
// messages after its first one under the group's lock, past Receive's
// deleted check. If DeleteGroup ran in between (it closed the group's reader
// and dropped its pending messages), it must neither deliver the deleted
// group's messages nor open a reader again: nobody would close it (Close
// closes the readers of the groups it holds), and its file would stay open.
func TestReceiveBatchOnADeletedGroupOpensNoReader(t *testing.T) {
	fs := &handleFS{heldSyncFS: newHeldSyncFS()}
	q, err := Open("/q", &Options{SegmentSize: 64 << 10, MaxMessageSize: 1024, fs: fs})
	require.NoError(t, err)
	sendIDs(t, q, "m", 3, SendOK)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	receive(t, c) // the group's reader is open
	require.NoError(t, q.DeleteGroup("g"))

	// What ReceiveBatch does once its first Receive returned, with the
	// deletion in between.
	c.g.mu.Lock()
	d, _, _, err := c.next(q.opts.now())
	c.g.mu.Unlock()
	assert.ErrorIs(t, err, ErrGroupDeleted)
	assert.True(t, d == nil, "a message of the deleted group delivered")
	require.NoError(t, q.Close())
	assert.Zero(t, fs.handles(), "a reader of the deleted group left open after Close")
}
