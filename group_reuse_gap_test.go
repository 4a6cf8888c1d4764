package zeroloss

import (
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// A group's stream id is given again after the group was deleted and the
// queue restarted (only the groups the ledger holds count). A follower that
// knew the deleted group and jumps over the records its leader deleted (a
// gap holding the deletion and the new group's declaration) then sees
// records of the new group under the id of the one it knows: the copy,
// promoted before a checkpoint after the gap, must still open.
func TestGroupIDReusedAcrossAGapInAFollowersCopy(t *testing.T) {
	t.Run("the id is given again after a restart", func(t *testing.T) {
		dir := t.TempDir()
		q, err := Open(dir, nil)
		require.NoError(t, err)
		_, err = q.Consumer("g", nil)
		require.NoError(t, err)
		id := q.groups["g"].id
		require.NoError(t, q.DeleteGroup("g"))
		require.NoError(t, q.Close())
		q, err = Open(dir, nil)
		require.NoError(t, err)
		defer q.Close()
		_, err = q.Consumer("h", nil)
		require.NoError(t, err)
		require.Equal(t, id, q.groups["h"].id, "this test's premise: the id is reused")
	})

	t.Run("a copy that jumped over the reuse opens", func(t *testing.T) {
		consumer := func(seq uint64, typ record.Type, stream uint16, payload []byte) []byte {
			f := record.AppendFrame(nil, typ, stream, 1, payload)
			record.SetSeq(f, seq)
			return f
		}
		const id = 1
		before := append(consumer(1, record.TypeGroup, id, record.AppendGroup(nil, &record.Group{Name: "g"})), testFrame(2, "two")...)
		// In the leader's deleted segments: g deleted, a restart, h declared
		// with g's id. After them, h is deleted.
		after := append(testFrame(10, "ten"), consumer(11, record.TypeGroupDeleted, id, record.AppendGroupDeleted(nil, "h"))...)
		fsys := vfs.NewMem()
		err := followScript(fsys, "/f", 1, 11,
			framesMsg(before),
			repl.AppendMessage(nil, &repl.Message{Type: repl.TypeTrim, Seq: 10}),
			framesMsg(after))
		require.ErrorIs(t, err, io.EOF) // the leader closed the link once 11 was acked
		q, err := Open("/f", &Options{fs: fsys, SegmentSize: truncateCrashSegment, MaxMessageSize: 4000})
		require.NoError(t, err, "the promoted copy opens")
		require.NoError(t, q.Close())
	})

	// With the leader's checkpoint sent ahead of the jump, the copy knows
	// the id is h's: h's retry after the gap goes to h, not to g.
	t.Run("the leader's checkpoint names the new group", func(t *testing.T) {
		consumer := func(seq uint64, typ record.Type, stream uint16, payload []byte) []byte {
			f := record.AppendFrame(nil, typ, stream, 1, payload)
			record.SetSeq(f, seq)
			return f
		}
		const id = 1
		before := append(consumer(1, record.TypeGroup, id, record.AppendGroup(nil, &record.Group{Name: "g"})), testFrame(2, "two")...)
		held := record.Retry{Seq: 5, Attempts: 2, Due: 1, Message: record.Message{ID: "held", Body: []byte("held")}}
		// The leader's latest checkpoint, at seq 12: h (g's id) retries
		// "held" at position 11.
		c := record.Checkpoint{Groups: []record.GroupState{{ID: id, Name: "h", Start: 3, Floor: 12, Mark: 12,
			Retries: []record.RetryState{{Pos: 11, Retry: held}}}}}
		after := append(testFrame(10, "ten"), consumer(11, record.TypeRetry, id, record.AppendRetry(nil, &held))...)
		fsys := vfs.NewMem()
		err := followScript(fsys, "/f", 1, 11,
			framesMsg(before),
			repl.AppendMessage(nil, &repl.Message{Type: repl.TypeCheckpoint, Frames: checkpointFrames(&c, 12, 1000)}),
			repl.AppendMessage(nil, &repl.Message{Type: repl.TypeTrim, Seq: 10}),
			framesMsg(after))
		require.ErrorIs(t, err, io.EOF)
		q, err := Open("/f", &Options{fs: fsys, SegmentSize: truncateCrashSegment, MaxMessageSize: 4000})
		require.NoError(t, err, "the promoted copy opens")
		defer q.Close()
		require.Equal(t, []string{"h"}, q.Groups())
		h, err := q.Consumer("h", nil)
		require.NoError(t, err)
		d := receive(t, h)
		require.Equal(t, "held", d.Message.ID)
	})
}
