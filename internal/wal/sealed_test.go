package wal

import (
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// sealedFrames returns the offset and seq of every frame of the segment at
// path, up to end.
func sealedFrames(t *testing.T, path string, end int64) (offsets []int64, seqs []uint64) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	rd := record.NewReader(f, dataStart, end, 0)
	for {
		off := rd.Offset()
		rec, err := rd.Next()
		if err == io.EOF {
			return offsets, seqs
		}
		require.NoError(t, err)
		offsets = append(offsets, off)
		seqs = append(seqs, rec.Seq)
	}
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
}

// frameOfSize encodes a valid frame with seq whose size is exactly size.
func frameOfSize(t *testing.T, seq uint64, size int64) []byte {
	t.Helper()
	require.Greater(t, size, int64(record.HeaderSize))
	b := record.Append(nil, &record.Record{Type: record.TypeMessage, Seq: seq, Payload: make([]byte, size-record.HeaderSize)})
	require.Len(t, b, int(size))
	return b
}

// TestOpenTrustsSealsAndReadersFindDamage damages a sealed segment in the
// middle of the log in each way its frames can be wrong. Open does not read
// a sealed segment's frames, so it opens, with the same recovery as an intact
// log; the reader that reaches the damage gets ErrCorrupt naming the file and
// the damaged frame's offset, having returned every frame before it; Scan
// (zeroloss verify) still reports the damage without opening.
func TestOpenTrustsSealsAndReadersFindDamage(t *testing.T) {
	for _, tc := range []struct {
		name string
		// damage changes the segment at path, whose frames start at
		// offsets and carry seqs, and returns the frame index ErrCorrupt
		// names.
		damage func(t *testing.T, path string, offsets []int64, seqs []uint64) int
	}{
		frameDamages[0], frameDamages[1], frameDamages[2],
		{name: "last two frames merged", damage: func(t *testing.T, path string, offsets []int64, seqs []uint64) int {
			// One valid frame where the seal records two: the data ends
			// at the sealed offset one seq short.
			n := len(offsets)
			info, err := os.Stat(path)
			require.NoError(t, err)
			end := info.Size() // sealed: cut at its last frame's end
			writeAt(t, path, offsets[n-2], frameOfSize(t, seqs[n-2], end-offsets[n-2]))
			return -1 // at the end of the segment
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _ := openTest(t, dir)
			appendN(t, l, 0, 1000)
			require.NoError(t, l.Close())
			l, intact, err := Open(dir, Options{SegmentSize: testSegment, TrustSeals: true})
			require.NoError(t, err)
			require.NoError(t, l.Close())
			scanned, err := Scan(osFS(), dir)
			require.NoError(t, err)
			assert.Equal(t, scanned.FirstSeq, intact.FirstSeq, "the seal gives what reading every frame gave")
			assert.Equal(t, scanned.LastSeq, intact.LastSeq)
			paths := segmentFiles(t, dir)
			require.Greater(t, len(paths), 3)
			victim := paths[1]
			info, err := os.Stat(victim)
			require.NoError(t, err)
			offsets, seqs := sealedFrames(t, victim, info.Size())
			require.Greater(t, len(offsets), 4)
			at := tc.damage(t, victim, offsets, seqs)
			wantOffset := info.Size()
			if at >= 0 {
				wantOffset = offsets[at]
			}

			l, rec, err := Open(dir, Options{SegmentSize: testSegment, TrustSeals: true})
			require.NoError(t, err, "Open reads no frame of a sealed segment but the last")
			defer l.Close()
			assert.Equal(t, intact, rec, "the same recovery as the intact log's")
			r := l.NewReader(0)
			defer r.Close()
			want := uint64(1)
			for {
				got, err := r.Next()
				if err != nil {
					require.ErrorIs(t, err, ErrCorrupt)
					var ce *CorruptError
					require.ErrorAs(t, err, &ce)
					assert.Equal(t, victim, ce.File)
					assert.Equal(t, wantOffset, ce.Offset)
					break
				}
				require.Equal(t, want, got.Seq, "every frame before the damage, in order")
				want++
			}
			if at >= 0 {
				assert.Equal(t, seqs[at], want, "stopped at the damaged frame")
			}
			_, err = Scan(osFS(), dir)
			require.ErrorIs(t, err, ErrCorrupt, "Scan still reads every frame")
		})
	}
}

// TestReaderSeekIntoSealedSegmentChecksSeqs seeks with a hint into a sealed
// segment whose next frame was replaced by a valid frame of another seq: the
// reader must report it rather than return or skip it.
func TestReaderSeekIntoSealedSegmentChecksSeqs(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 1000)
	require.NoError(t, l.Close())
	paths := segmentFiles(t, dir)
	require.Greater(t, len(paths), 3)
	victim := paths[1]
	info, err := os.Stat(victim)
	require.NoError(t, err)
	offsets, seqs := sealedFrames(t, victim, info.Size())
	require.Greater(t, len(offsets), 4)
	writeAt(t, victim, offsets[3], frameOfSize(t, seqs[3]+1, offsets[4]-offsets[3]))

	l, _, err = Open(dir, Options{SegmentSize: testSegment, TrustSeals: true})
	require.NoError(t, err)
	defer l.Close()
	r := l.NewReader(0)
	defer r.Close()
	r.Seek(seqs[2], seqs[2], offsets[2])
	got, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, seqs[2], got.Seq)
	_, err = r.Next()
	require.ErrorIs(t, err, ErrCorrupt)
	var ce *CorruptError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, offsets[3], ce.Offset)
}

// frameDamage changes the segment at path, whose frames start at offsets
// and carry seqs, and returns the index of the frame ErrCorrupt names.
type frameDamage = struct {
	name   string
	damage func(t *testing.T, path string, offsets []int64, seqs []uint64) int
}

// frameDamages are the damages readers must report in frames Open trusts
// without reading them (a sealed segment's, or the last segment's below its
// synced offset).
var frameDamages = []frameDamage{
	{name: "flipped bit", damage: func(t *testing.T, path string, offsets []int64, seqs []uint64) int {
		flipByte(t, path, offsets[3]+40)
		return 3
	}},
	{name: "zeroed frames", damage: func(t *testing.T, path string, offsets []int64, seqs []uint64) int {
		writeAt(t, path, offsets[2], make([]byte, offsets[4]-offsets[2]))
		return 2
	}},
	{name: "valid frame with another seq", damage: func(t *testing.T, path string, offsets []int64, seqs []uint64) int {
		// As a recycled file's earlier life would leave it: valid, and
		// below the seq expected, so a reader must not skip it.
		writeAt(t, path, offsets[3], frameOfSize(t, seqs[0]-5, offsets[4]-offsets[3]))
		return 3
	}},
}
