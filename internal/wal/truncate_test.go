package wal

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// truncateLog builds a log of seqs 1..600 over several segments, with a jump
// to 1000..1049 in a segment of its own, synced, and returns it open.
func truncateLog(t *testing.T, fs vfs.FS, dir string) *Log {
	t.Helper()
	l, _, err := Open(dir, Options{FS: fs, SegmentSize: testSegment, LeaseChunk: 100})
	require.NoError(t, err)
	appendN(t, l, 0, 600)
	var jump []uint64
	for s := uint64(1000); s < 1050; s++ {
		jump = append(jump, s)
	}
	_, err = l.AppendFrames(framesAt(jump...))
	require.NoError(t, err)
	_, err = l.Sync()
	require.NoError(t, err)
	require.Greater(t, l.Stats().Segments, 3)
	return l
}

func TestTruncateAfter(t *testing.T) {
	for _, tc := range []struct {
		seq      uint64
		wantLast uint64
		wantCut  int
	}{
		{seq: 1049, wantLast: 1049, wantCut: 0},
		{seq: 1020, wantLast: 1020, wantCut: 29},     // inside the active segment
		{seq: 800, wantLast: 600, wantCut: 50},       // in the gap: the jumped segment goes
		{seq: 300, wantLast: 300, wantCut: 300 + 50}, // inside a sealed segment
		{seq: 0, wantLast: 0, wantCut: 650},
	} {
		t.Run(fmt.Sprint(tc.seq), func(t *testing.T) {
			dir := t.TempDir()
			l := truncateLog(t, vfs.OS, dir)
			cut, err := l.TruncateAfter(tc.seq)
			require.NoError(t, err)
			assert.Equal(t, tc.wantCut, cut)
			assert.Equal(t, tc.wantLast, l.LastSeq())
			seqs, _ := readAll(t, l)
			if tc.wantLast == 0 {
				assert.Empty(t, seqs)
			} else {
				assert.Equal(t, tc.wantLast, seqs[len(seqs)-1])
			}
			// Appending continues above seq; frames above it come back only
			// as new frames.
			_, err = l.AppendFrames(framesAt(tc.seq+1, tc.seq+2))
			require.NoError(t, err)
			_, err = l.Sync()
			require.NoError(t, err)
			want := append(seqs, tc.seq+1, tc.seq+2)
			got, _ := readAll(t, l)
			assert.Equal(t, want, got)
			require.NoError(t, l.Close())

			l, rec, err := Open(dir, Options{SegmentSize: testSegment, LeaseChunk: 100})
			require.NoError(t, err)
			defer l.Close()
			assert.Nil(t, rec.Torn)
			got, _ = readAll(t, l)
			assert.Equal(t, want, got, "the truncated log reopens as it was left")
		})
	}
}

// TestTruncateAfterCrashAtEveryOp crashes the file system after every I/O
// operation of a truncation, in every crash mode: the log must reopen with a
// prefix of the old log that still holds everything up to the cut point.
func TestTruncateAfterCrashAtEveryOp(t *testing.T) {
	const seq = 300
	for _, mode := range vfs.CrashModes {
		for limit := 0; ; limit++ {
			fs := vfs.NewMem()
			l := truncateLog(t, fs, "/q")
			before, payloads := readAll(t, l)
			fs.SetOpLimit(fs.OpCount() + limit)
			_, err := l.TruncateAfter(seq)
			finished := err == nil
			fs.Crash(mode, rand.New(rand.NewPCG(uint64(limit), 7)))
			l2, _, err := Open("/q", Options{FS: fs, SegmentSize: testSegment, LeaseChunk: 100})
			require.NoError(t, err, "mode %v, crash after %d ops", mode, limit)
			got, gotPayloads := readAll(t, l2)
			require.GreaterOrEqual(t, len(got), seq, "mode %v, crash after %d ops: seqs up to the cut point survive", mode, limit)
			assert.Equal(t, before[:len(got)], got, "mode %v, crash after %d ops: a prefix of the old log", mode, limit)
			assert.Equal(t, payloads[:len(got)], gotPayloads)
			if finished {
				assert.Equal(t, before[:seq], got, "mode %v: a finished truncation is durable", mode)
			}
			l2.Close()
			if finished {
				break
			}
		}
	}
}

// TestTruncateAfterUnsyncedFramesCrashAtEveryOp truncates a log whose active
// segment holds frames that were appended but not synced (a follower whose
// link broke between its append and its fdatasync), at a seq among them, and
// crashes at every operation in every mode: the seal must not claim those
// frames before they are durable, so the log always reopens, with every
// frame synced before the truncation, and a finished truncation keeps every
// frame up to the cut point.
func TestTruncateAfterUnsyncedFramesCrashAtEveryOp(t *testing.T) {
	const seq = 1070
	for _, mode := range vfs.CrashModes {
		// Several seeds per crash point: RandomPages keeps the slot's page
		// and loses the frames' pages in only some draws.
		for point := 0; ; point++ {
			limit := point / 8
			fs := vfs.NewMem()
			l := truncateLog(t, fs, "/q")
			synced, _ := readAll(t, l)
			var tail []uint64
			for s := uint64(1050); s < 1080; s++ {
				tail = append(tail, s)
			}
			_, err := l.AppendFrames(framesAt(tail...))
			require.NoError(t, err)
			fs.SetOpLimit(fs.OpCount() + limit)
			_, err = l.TruncateAfter(seq)
			finished := err == nil
			fs.Crash(mode, rand.New(rand.NewPCG(uint64(point), 11)))
			l2, _, err := Open("/q", Options{FS: fs, SegmentSize: testSegment, LeaseChunk: 100})
			require.NoError(t, err, "mode %v, crash after %d ops", mode, limit)
			got, _ := readAll(t, l2)
			require.GreaterOrEqual(t, len(got), len(synced), "mode %v, crash after %d ops: synced frames survive", mode, limit)
			assert.Equal(t, synced, got[:len(synced)], "mode %v, crash after %d ops", mode, limit)
			if finished {
				assert.Equal(t, uint64(seq), got[len(got)-1], "mode %v: a finished truncation keeps every frame up to the cut", mode)
			}
			l2.Close()
			if finished && point%8 == 7 {
				break
			}
		}
	}
}

func TestSkipToLeavesADurableGap(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 5)
	require.Error(t, l.SkipTo(3), "cannot skip backwards")
	require.NoError(t, l.SkipTo(1<<32))
	l.abandon() // crash before anything lands in the new segment

	l, rec := openTest(t, dir)
	assert.GreaterOrEqual(t, rec.NextSeq, uint64(1<<32+1), "the skipped seqs stay skipped after a crash")
	first, _, err := l.Append(frame(9))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, first, uint64(1<<32+1))
	require.NoError(t, l.Close())
}
