package wal

import (
	"io"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// framesAt encodes frame(i) with seq s for each s in seqs.
func framesAt(seqs ...uint64) []byte {
	var buf []byte
	for _, s := range seqs {
		f := frame(int(s))
		record.SetSeq(f, s)
		buf = append(buf, f...)
	}
	return buf
}

func TestAppendFramesKeepsSeqsAndStartsASegmentAtAJump(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	src := framesAt(1, 2, 3, 4, 5)
	n, err := l.AppendFrames(src)
	require.NoError(t, err)
	assert.Equal(t, 5, n)
	segs := l.Stats().Segments
	jump := framesAt(40, 41, 42) // the other log skipped 6..39
	n, err = l.AppendFrames(jump)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.Equal(t, segs+1, l.Stats().Segments, "a seq jump starts a new segment")
	assert.Equal(t, uint64(42), l.LastSeq())

	// Nothing is written for frames out of order or damaged.
	_, err = l.AppendFrames(framesAt(42))
	require.ErrorIs(t, err, ErrOutOfOrder)
	_, err = l.AppendFrames(framesAt(43, 43))
	require.ErrorIs(t, err, ErrOutOfOrder)
	bad := framesAt(43, 44)
	bad[len(bad)-1] ^= 1
	_, err = l.AppendFrames(bad)
	require.ErrorIs(t, err, record.ErrChecksum)
	assert.Equal(t, uint64(42), l.LastSeq(), "nothing written")

	_, err = l.Sync()
	require.NoError(t, err)
	require.NoError(t, l.Close())

	l, rec := openTest(t, dir)
	defer l.Close()
	assert.False(t, rec.Unclean)
	assert.Equal(t, uint64(43), rec.NextSeq)
	r := l.NewReader(0)
	defer r.Close()
	var got []byte
	var seqs []uint64
	for {
		rc, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		seqs = append(seqs, rc.Seq)
		got = record.Append(got, &rc)
	}
	assert.Equal(t, []uint64{1, 2, 3, 4, 5, 40, 41, 42}, seqs)
	assert.Equal(t, append(src, jump...), got, "the frames are kept byte for byte")
	first, _, err := l.Append(frame(7))
	require.NoError(t, err)
	assert.Equal(t, uint64(43), first, "Append continues after the copied frames")
}

func TestAppendFramesIntoEmptyLogStartingLate(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	_, err := l.AppendFrames(framesAt(500, 501))
	require.NoError(t, err)
	assert.True(t, l.Trimmed(), "a copy that starts past seq 1 reads as a trimmed log")
	require.NoError(t, l.Close())
	l, rec := openTest(t, dir)
	defer l.Close()
	assert.Equal(t, uint64(500), rec.FirstSeq)
	assert.Equal(t, uint64(501), rec.LastSeq)
}

func TestAppendFramesAfterUncleanStop(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir) // LeaseChunk 100
	_, err := l.AppendFrames(framesAt(1, 2, 3))
	require.NoError(t, err)
	_, err = l.Sync()
	require.NoError(t, err)
	l.abandon()
	l, rec := openTest(t, dir)
	assert.True(t, rec.Unclean)
	assert.Greater(t, rec.NextSeq, uint64(4), "the lease is above the last frame")
	// The copied log decides the seqs: 4 follows 3 even though the lease
	// is higher, in a new segment.
	_, err = l.AppendFrames(framesAt(4, 5))
	require.NoError(t, err)
	_, err = l.Sync()
	require.NoError(t, err)
	require.NoError(t, l.Close())
	l, rec = openTest(t, dir)
	defer l.Close()
	assert.Equal(t, uint64(5), rec.LastSeq)
	seqs, _ := readAll(t, l)
	assert.Equal(t, []uint64{1, 2, 3, 4, 5}, seqs)
}

func TestCapReadersLimitsAllButUncappedReaders(t *testing.T) {
	l, _ := openTest(t, t.TempDir())
	defer l.Close()
	appendN(t, l, 0, 10)
	_, err := l.Sync()
	require.NoError(t, err)
	l.CapReaders(4)
	l.CapReaders(2) // the cap never goes down
	r := l.NewReader(0)
	defer r.Close()
	var seqs []uint64
	next := func(r *Reader) error {
		rec, err := r.Next()
		if err == nil {
			seqs = append(seqs, rec.Seq)
		}
		return err
	}
	for next(r) == nil {
	}
	assert.Equal(t, []uint64{1, 2, 3, 4}, seqs)
	require.Equal(t, io.EOF, next(r), "still capped")
	l.CapReaders(6)
	for next(r) == nil {
	}
	assert.Equal(t, []uint64{1, 2, 3, 4, 5, 6}, seqs, "the same reader resumes at the frame it stopped before")

	seqs = nil
	u := l.NewUncappedReader(0)
	defer u.Close()
	for next(u) == nil {
	}
	assert.Len(t, seqs, 10, "an uncapped reader sees every synced frame")
}

// A jump from below the seq given to LostBelow marks the new segment as
// following a gap, durably; a jump over seqs the other log never used does
// not. Lost says which jumps a reader of this log crosses lost records in.
func TestAppendFramesMarksAGapOverLostRecords(t *testing.T) {
	for _, tc := range []struct {
		name      string
		held      []uint64 // appended before the jump
		lostBelow uint64
		after     []uint64
		gaps      []uint64
	}{
		{"skipped seqs", []uint64{1, 2, 3}, 0, []uint64{40, 41}, nil},
		{"deleted seqs", []uint64{1, 2, 3}, 40, []uint64{40, 41}, []uint64{40}},
		{"deleted below what it holds", []uint64{1, 2, 3}, 3, []uint64{40, 41}, nil},
		{"new copy", nil, 40, []uint64{40, 41}, []uint64{40}},
		{"new copy of a log starting at 1", nil, 0, []uint64{1, 2}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _ := openTest(t, dir)
			if len(tc.held) > 0 {
				_, err := l.AppendFrames(framesAt(tc.held...))
				require.NoError(t, err)
			}
			if tc.lostBelow > 0 {
				l.LostBelow(tc.lostBelow)
			}
			_, err := l.AppendFrames(framesAt(tc.after...))
			require.NoError(t, err)
			assert.Equal(t, tc.gaps, l.Gaps())
			_, err = l.Sync()
			require.NoError(t, err)
			require.NoError(t, l.Close())

			l, _ = openTest(t, dir)
			defer l.Close()
			assert.Equal(t, tc.gaps, l.Gaps(), "the flag is in the segment's header")
			last := tc.after[0]
			if len(tc.held) > 0 {
				assert.Equal(t, tc.gaps != nil, l.Lost(tc.held[len(tc.held)-1]+1, last))
			} else {
				assert.Equal(t, tc.gaps != nil, l.Lost(1, last))
			}
			assert.False(t, l.Lost(last+1, last+1), "nothing lost after the jump")
		})
	}
}

// The gap flag survives a crash at every I/O operation of the jump, in every
// crash mode: the copier appends again from what the log holds after the
// crash, and the segment holding the frames after the jump is flagged.
func TestAppendFramesGapSurvivesACrash(t *testing.T) {
	for _, mode := range vfs.CrashModes {
		for limit := 0; ; limit++ {
			fs := vfs.NewMem()
			opts := Options{FS: fs, SegmentSize: testSegment, LeaseChunk: 100}
			l, _, err := Open("/q", opts)
			require.NoError(t, err)
			_, err = l.AppendFrames(framesAt(1, 2, 3))
			require.NoError(t, err)
			_, err = l.Sync()
			require.NoError(t, err)
			fs.SetOpLimit(fs.OpCount() + limit)
			l.LostBelow(40)
			_, err = l.AppendFrames(framesAt(40, 41))
			if err == nil {
				_, err = l.Sync()
			}
			finished := err == nil
			fs.Crash(mode, rand.New(rand.NewPCG(uint64(limit), 7)))

			l, _, err = Open("/q", opts)
			require.NoError(t, err, "mode %v, crash after %d ops", mode, limit)
			var rest []uint64
			for _, s := range []uint64{40, 41} {
				if s > l.LastSeq() {
					rest = append(rest, s)
				}
			}
			l.LostBelow(40)
			if len(rest) > 0 {
				_, err = l.AppendFrames(framesAt(rest...))
				require.NoError(t, err, "mode %v, crash after %d ops", mode, limit)
			}
			_, err = l.Sync()
			require.NoError(t, err)
			require.NoError(t, l.Close())
			l, _, err = Open("/q", opts)
			require.NoError(t, err, "mode %v, crash after %d ops", mode, limit)
			seqs, _ := readAll(t, l)
			assert.Equal(t, []uint64{1, 2, 3, 40, 41}, seqs, "mode %v, crash after %d ops", mode, limit)
			gaps := l.Gaps()
			require.NotEmpty(t, gaps, "mode %v, crash after %d ops: the jump is flagged", mode, limit)
			assert.LessOrEqual(t, gaps[len(gaps)-1], uint64(40), "mode %v, crash after %d ops: before the frames after the jump", mode, limit)
			l.Close()
			if finished {
				break
			}
		}
	}
}
