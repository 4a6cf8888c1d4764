package zeroloss

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// checkpointFrames returns c written as the leader writes it: parts of at
// most maxPart bytes, as frames at seqs from seq on.
func checkpointFrames(c *record.Checkpoint, seq uint64, maxPart int) []byte {
	var frames []byte
	for i, p := range record.SplitCheckpoint(record.AppendCheckpoint(nil, c), 42, maxPart) {
		start := len(frames)
		frames = record.AppendFrame(frames, record.TypeCheckpoint, internalStream, 1, p)
		record.SetSeq(frames[start:], seq+uint64(i))
	}
	return frames
}

func TestCatchupFile(t *testing.T) {
	fsys := vfs.NewMem()
	require.NoError(t, fsys.MkdirAll("/d", 0o700))
	c := record.Checkpoint{Groups: []record.GroupState{{ID: 3, Name: "h", Floor: 10, Mark: 12}}}
	require.NoError(t, writeCatchup(fsys, "/d", 100, record.AppendCheckpoint(nil, &c)))
	assert.True(t, ownedFile(catchupFile), "claimDir accepts the file")

	for _, tc := range []struct {
		name string
		gaps []uint64
		want bool
	}{
		{"no gap", nil, false},
		{"for the last gap", []uint64{50, 100}, true},
		{"from an earlier jump", []uint64{50, 101}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cu, err := catchupFor(fsys, "/d", tc.gaps)
			require.NoError(t, err)
			if !tc.want {
				assert.Nil(t, cu)
				return
			}
			require.NotNil(t, cu)
			assert.Equal(t, uint64(100), cu.seq)
			assert.Equal(t, "h", cu.c.Groups[0].Name)
		})
	}

	b, err := fsys.ReadFile("/d/" + catchupFile)
	require.NoError(t, err)
	b[len(catchupMagic)+20] ^= 1
	require.NoError(t, fsys.WriteFile("/d/"+catchupFile, b))
	_, err = readCatchup(fsys, "/d")
	assert.ErrorIs(t, err, ErrCorrupt)
}

// The follower takes a checkpoint sent in several messages, writes CATCHUP
// once it has every part, and refuses a Trim or Frames while parts are
// missing.
func TestFollowerTakesTheLeadersCheckpointInParts(t *testing.T) {
	c := record.Checkpoint{Groups: []record.GroupState{{ID: 3, Name: strings.Repeat("h", 300), Floor: 10, Mark: 12}}}
	frames := checkpointFrames(&c, 200, 100)
	parts := splitFrames(t, frames)
	require.Greater(t, len(parts), 2)
	msg := func(typ repl.Type, fr ...[]byte) readResult {
		var b []byte
		for _, f := range fr {
			b = append(b, f...)
		}
		return readResult{m: repl.Message{Type: typ, Frames: b}}
	}
	open := func(t *testing.T) (*follower, *vfs.MemFS) {
		fsys := vfs.NewMem()
		fl, err := openFollower("/f", &FollowOptions{fs: fsys})
		require.NoError(t, err)
		t.Cleanup(func() { fl.close() })
		return &follower{followerLog: fl, ctx: context.Background(), link: discardLink{}}, fsys
	}

	t.Run("whole", func(t *testing.T) {
		f, fsys := open(t)
		require.NoError(t, f.apply(msg(repl.TypeCheckpoint, parts[0])))
		cu, err := readCatchup(fsys, "/f")
		require.NoError(t, err)
		assert.Nil(t, cu, "not before the last part")
		require.NoError(t, f.apply(msg(repl.TypeCheckpoint, parts[1:]...)))
		cu, err = readCatchup(fsys, "/f")
		require.NoError(t, err)
		require.NotNil(t, cu)
		assert.Equal(t, uint64(200), cu.seq)
		assert.Equal(t, c.Groups[0].Name, cu.c.Groups[0].Name)
		require.NoError(t, f.apply(readResult{m: repl.Message{Type: repl.TypeTrim, Seq: 150}}))
	})
	t.Run("trim before the last part", func(t *testing.T) {
		f, _ := open(t)
		require.NoError(t, f.apply(msg(repl.TypeCheckpoint, parts[0])))
		assert.ErrorIs(t, f.apply(readResult{m: repl.Message{Type: repl.TypeTrim, Seq: 150}}), ErrReplication)
	})
	t.Run("a frame that is no checkpoint", func(t *testing.T) {
		f, _ := open(t)
		other := record.AppendFrame(nil, record.TypeAck, 3, 1, record.AppendAck(nil, &record.Ack{}))
		record.SetSeq(other, 199)
		assert.ErrorIs(t, f.apply(msg(repl.TypeCheckpoint, other)), ErrReplication)
	})
}
