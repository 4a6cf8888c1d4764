package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// lifeFrame is a frame whose payload names its life (which use of a file
// wrote it) and seq. Every life frame has the same size, so a frame left by
// an earlier life of a recycled file sits exactly where the next frame of the
// new life would: the most plausible stale frame there is.
func lifeFrame(life int, seq uint64) []byte {
	r := record.Record{Type: record.TypeMessage, Seq: seq, Time: int64(seq),
		Payload: fmt.Appendf(nil, "life %d seq %08d %s", life, seq, strings.Repeat("x", 40))}
	return record.Append(nil, &r)
}

var lifeFrameSize = int64(len(lifeFrame(1, 1)))

// recycleOptions makes segments of four life frames and keeps up to spares
// deleted segments.
func recycleOptions(fs vfs.FS, spares int) Options {
	return Options{FS: fs, SegmentSize: dataStart + 4*lifeFrameSize, LeaseChunk: 8, Recycle: spares}
}

// appendLife appends life frames one at a time, syncing after each if sync.
func appendLife(t *testing.T, l *Log, life int, from, to uint64, sync bool) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		first, _, err := l.Append(lifeFrame(life, seq))
		require.NoError(t, err)
		require.Equal(t, seq, first)
		if sync {
			_, err = l.Sync()
			require.NoError(t, err)
		}
	}
}

// lifeFrames reads every durable frame and returns, by seq order, "life
// L seq S" for each, checking that the frame's own seq matches its payload.
func lifeFrames(t *testing.T, l *Log) []string {
	t.Helper()
	seqs, payloads := readAll(t, l)
	var out []string
	for i, p := range payloads {
		var life int
		var seq uint64
		_, err := fmt.Sscanf(string(p), "life %d seq %d", &life, &seq)
		require.NoError(t, err)
		require.Equal(t, seqs[i], seq, "frame %d carries the payload of seq %d", seqs[i], seq)
		out = append(out, fmt.Sprintf("life %d seq %d", life, seq))
	}
	return out
}

func lives(life int, from, to uint64) []string {
	var out []string
	for seq := from; seq <= to; seq++ {
		out = append(out, fmt.Sprintf("life %d seq %d", life, seq))
	}
	return out
}

// recycledLog writes life 1 (seqs 1..12, three segments, synced), deletes
// the first two segments, which become spares, and appends life 2 (13, 14,
// synced) in a segment that reuses the newest spare: its file then holds
// life 1's frames 7 and 8 right after frame 14. It returns the log open and
// the path of the recycled segment.
func recycledLog(t *testing.T, fs vfs.FS) (*Log, string) {
	t.Helper()
	l, _, err := Open("/q", recycleOptions(fs, 2))
	require.NoError(t, err)
	appendLife(t, l, 1, 1, 12, true)
	n, err := l.RemoveBefore(9)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	names, err := fs.List("/q")
	require.NoError(t, err)
	assert.Contains(t, names, "spare-1.tmp", "a deleted segment is kept as a spare")
	assert.Contains(t, names, "spare-2.tmp")
	appendLife(t, l, 2, 13, 14, true)
	require.Equal(t, uint64(1), l.Stats().RecycledRolls, "the roll reused a spare")
	return l, filepath.Join("/q", segmentName(13))
}

func TestRecycledSegmentIsFlaggedAndReadsOnlyItsOwnFrames(t *testing.T) {
	fs := vfs.NewMem()
	l, path := recycledLog(t, fs)
	assert.Equal(t, append(lives(1, 9, 12), lives(2, 13, 14)...), lifeFrames(t, l))
	require.NoError(t, l.Close())
	names, err := fs.List("/q")
	require.NoError(t, err)
	assert.NotContains(t, names, "spare-1.tmp", "Close removes the unused spare")

	res, err := Scan(fs, "/q")
	require.NoError(t, err)
	require.Len(t, res.Segments, 2)
	assert.Equal(t, segmentName(13), res.Segments[1].Name)
	assert.True(t, res.Segments[1].Recycled, "the header says the file is recycled")
	assert.False(t, res.Segments[0].Recycled)
	assert.Equal(t, 2, res.Segments[1].Frames)
	assert.Nil(t, res.Torn, "leftovers of the earlier life are no torn tail")

	// The old frames are there, right after the new ones.
	data, err := fs.ReadFile(path)
	require.NoError(t, err)
	at := dataStart + 2*lifeFrameSize
	assert.Equal(t, lifeFrame(1, 7), data[at:at+lifeFrameSize], "life 1's frame 7 follows frame 14")
}

// TestRecoveryTellsStaleFramesFromTornTailsAndCorruption reopens a log whose
// last segment is recycled after each way it can end: stale frames of the
// earlier life are a clean end wherever they start, a frame of this life cut
// short above the synced offset is a torn tail, and damage below the synced
// offset is ErrCorrupt naming the file and offset.
// With TrustSeals (the queue's Open) Open reads no frame below the synced
// offset: damage there is the ErrCorrupt of the reader that reaches it, and
// after a clean Close Open reads one frame header at most (the stale one at
// the synced offset).
func TestRecoveryTellsStaleFramesFromTornTailsAndCorruption(t *testing.T) {
	for _, tc := range []staleCase{
		{name: "clean close", end: func(t *testing.T, fs *vfs.MemFS, l *Log, path string) {
			require.NoError(t, l.Close())
		}, want: append(lives(1, 9, 12), lives(2, 13, 14)...)},
		{name: "process crash", end: func(t *testing.T, fs *vfs.MemFS, l *Log, path string) {
			l.abandon()
		}, want: append(lives(1, 9, 12), lives(2, 13, 14)...), wantUnclean: true},
		{name: "power loss with an unsynced frame", end: func(t *testing.T, fs *vfs.MemFS, l *Log, path string) {
			appendLife(t, l, 2, 15, 15, false)
			l.abandon()
			fs.Crash(vfs.DropUnsynced, nil) // life 1's frame 7 is back after 14
		}, want: append(lives(1, 9, 12), lives(2, 13, 14)...), wantUnclean: true},
		{name: "torn frame of this life", end: func(t *testing.T, fs *vfs.MemFS, l *Log, path string) {
			appendLife(t, l, 2, 15, 15, false)
			l.abandon()
			overwrite(t, fs, path, dataStart+3*lifeFrameSize-1, []byte{'?'}) // the last byte of 15
		}, want: append(lives(1, 9, 12), lives(2, 13, 14)...), wantUnclean: true, wantTorn: dataStart + 2*lifeFrameSize},
		{name: "damage below the synced offset", end: func(t *testing.T, fs *vfs.MemFS, l *Log, path string) {
			appendLife(t, l, 2, 15, 15, true) // the slot now records 14's end
			l.abandon()
			overwrite(t, fs, path, dataStart+lifeFrameSize+40, []byte{'?'}) // in 14
		}, wantCorrupt: dataStart + lifeFrameSize},
		{name: "stale frame below the synced offset", end: func(t *testing.T, fs *vfs.MemFS, l *Log, path string) {
			appendLife(t, l, 2, 15, 15, true)
			l.abandon()
			// 14 replaced by the old frame at its place: valid, seq 6.
			overwrite(t, fs, path, dataStart+lifeFrameSize, lifeFrame(1, 6))
		}, wantCorrupt: dataStart + lifeFrameSize},
	} {
		for _, trust := range []bool{false, true} {
			name := tc.name
			if trust {
				name += "/TrustSeals"
			}
			t.Run(name, func(t *testing.T) { tc.run(t, trust) })
		}
	}
}

type staleCase struct {
	name string
	// end stops the log (l is open, life 2 holds seqs 13 and 14, synced)
	// and may damage path.
	end         func(t *testing.T, fs *vfs.MemFS, l *Log, path string)
	want        []string
	wantUnclean bool
	wantTorn    int64 // offset of the torn tail, 0 for none
	wantCorrupt int64 // offset named by ErrCorrupt, 0 for none
}

func (tc staleCase) run(t *testing.T, trust bool) {
	fs := vfs.NewMem()
	l, path := recycledLog(t, fs)
	tc.end(t, fs, l, path)
	counting := &readCountingFS{FS: fs}
	l, rec, err := Open("/q", trusting(recycleOptions(counting, 2), trust))
	if tc.wantCorrupt != 0 {
		if trust {
			require.NoError(t, err, "Open reads no frame below the synced offset")
			defer l.Close()
			r := l.NewReader(0)
			defer r.Close()
			for err == nil {
				_, err = r.Next()
			}
		}
		require.ErrorIs(t, err, ErrCorrupt)
		var ce *CorruptError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, path, ce.File)
		assert.Equal(t, tc.wantCorrupt, ce.Offset)
		return
	}
	require.NoError(t, err)
	defer l.Close()
	if trust && !rec.Unclean {
		assert.LessOrEqual(t, counting.bytesRead(path, dataStart, dataStart+4*lifeFrameSize), int64(record.HeaderSize),
			"a clean Open reads one frame header at most")
	}
	assert.Equal(t, tc.want, lifeFrames(t, l))
	assert.Equal(t, tc.wantUnclean, rec.Unclean)
	if tc.wantTorn == 0 {
		assert.Nil(t, rec.Torn)
	} else {
		require.NotNil(t, rec.Torn)
		assert.Equal(t, path, rec.Torn.File)
		assert.Equal(t, tc.wantTorn, rec.Torn.Offset)
		assert.Equal(t, 1, rec.Torn.Frames)
		assert.Equal(t, lifeFrameSize, rec.Torn.Bytes)
	}
	// The log goes on: after an unclean stop in a new segment, after a
	// clean one in the recycled segment, over the old frames.
	next := rec.NextSeq
	appendLife(t, l, 3, next, next+1, true)
	require.NoError(t, l.Close())
	l, rec, err = Open("/q", trusting(recycleOptions(fs, 2), trust))
	require.NoError(t, err)
	assert.False(t, rec.Unclean)
	assert.Equal(t, append(tc.want, lives(3, next, next+1)...), lifeFrames(t, l))
}

// overwrite writes b at off in the file at path, as damage would.
func overwrite(t *testing.T, fs vfs.FS, path string, off int64, b []byte) {
	t.Helper()
	f, err := fs.OpenRW(path)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
}

// TestRecycledSegmentInAnOlderBuild opens a recycled segment as a build that
// does not know the recycled flag would (the flag cleared): it reads no stale
// frame either, since none carries the seq expected where it lies; it takes
// the old frames after a clean close for a torn tail and cuts them. So the
// format version stays 1.
func TestRecycledSegmentInAnOlderBuild(t *testing.T) {
	fs := vfs.NewMem()
	l, path := recycledLog(t, fs)
	require.NoError(t, l.Close())
	page := make([]byte, 64)
	f, err := fs.OpenRW(path)
	require.NoError(t, err)
	_, err = f.ReadAt(page, 0)
	require.NoError(t, err)
	flags := binary.LittleEndian.Uint32(page[12:16])
	require.Equal(t, uint32(flagRecycled), flags)
	binary.LittleEndian.PutUint32(page[12:16], 0)
	binary.LittleEndian.PutUint32(page[60:64], crc32.Checksum(page[0:60], castagnoli))
	_, err = f.WriteAt(page, 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	l, rec, err := Open("/q", recycleOptions(fs, 2))
	require.NoError(t, err)
	defer l.Close()
	assert.Equal(t, append(lives(1, 9, 12), lives(2, 13, 14)...), lifeFrames(t, l))
	require.NotNil(t, rec.Torn, "without the flag the old frames look torn")
	assert.Contains(t, rec.Torn.Reason, "seq 7 where 15 was expected")
}

// TestSpareWhoseSeqsCameBackIsNotReused: a follower's TruncateAfter hands
// seqs out again, so a spare may hold valid frames with the very seqs a new
// segment would expect at the very offsets its frames take. Such a spare is
// deleted, not reused.
func TestSpareWhoseSeqsCameBackIsNotReused(t *testing.T) {
	fs := vfs.NewMem()
	l, _, err := Open("/q", recycleOptions(fs, 2))
	require.NoError(t, err)
	var life1 []byte
	for seq := uint64(1); seq <= 16; seq++ {
		life1 = append(life1, lifeFrame(1, seq)...)
	}
	_, err = l.AppendFrames(life1)
	require.NoError(t, err)
	_, err = l.Sync()
	require.NoError(t, err)
	n, err := l.RemoveBefore(13) // spares: the files of 1..4 and 5..8
	require.NoError(t, err)
	require.Equal(t, 3, n)
	_, err = l.TruncateAfter(4) // below every segment left: the log is empty
	require.NoError(t, err)
	// The new leader's frames 5 and 6: the spare of 5..8 holds life 1's 7
	// right after them.
	_, err = l.AppendFrames(append(lifeFrame(2, 5), lifeFrame(2, 6)...))
	require.NoError(t, err)
	_, err = l.Sync()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), l.Stats().RecycledRolls, "the spare of 1..4 was reused")
	assert.Equal(t, lives(2, 5, 6), lifeFrames(t, l))
	require.NoError(t, l.Close())

	l, rec, err := Open("/q", recycleOptions(fs, 2))
	require.NoError(t, err)
	defer l.Close()
	assert.False(t, rec.Unclean)
	assert.Equal(t, lives(2, 5, 6), lifeFrames(t, l), "no frame of life 1 comes back")
	assert.Equal(t, uint64(7), rec.NextSeq)
}

// TestSegmentAReaderHoldsIsNotRecycled: a reader that lags behind retention
// reads a deleted segment by its own handle; the file must not become a new
// segment under it. Segments are larger than a reader's read-ahead, so that
// the reader reads the file again after the deletion.
func TestSegmentAReaderHoldsIsNotRecycled(t *testing.T) {
	const perSegment = 1400 // frames: 2 x 64 KiB of read-ahead
	fs := vfs.NewMem()
	l, _, err := Open("/q", Options{FS: fs, SegmentSize: dataStart + perSegment*lifeFrameSize, Recycle: 1})
	require.NoError(t, err)
	defer l.Close()
	appendBatch := func(life int, from, to uint64) {
		var buf []byte
		for seq := from; seq <= to; seq++ {
			buf = append(buf, lifeFrame(life, seq)...)
		}
		_, _, err := l.Append(buf)
		require.NoError(t, err)
		_, err = l.Sync()
		require.NoError(t, err)
	}
	appendBatch(1, 1, 3*perSegment)
	r := l.NewReader(0)
	defer r.Close()
	rec, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, uint64(1), rec.Seq)
	n, err := l.RemoveBefore(2*perSegment + 1) // the reader's segment goes, and the next
	require.NoError(t, err)
	require.Equal(t, 2, n)
	appendBatch(2, 3*perSegment+1, 4*perSegment)
	assert.Equal(t, uint64(1), l.Stats().RecycledRolls, "the second segment's file was reused")
	var want, got []string
	for seq := uint64(2); seq <= 4*perSegment; seq++ {
		switch {
		case seq <= perSegment:
			want = append(want, fmt.Sprintf("life 1 seq %d", seq))
		case seq > 3*perSegment:
			want = append(want, fmt.Sprintf("life 2 seq %d", seq))
		case seq > 2*perSegment:
			want = append(want, fmt.Sprintf("life 1 seq %d", seq))
		}
	}
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		var life int
		var seq uint64
		_, err = fmt.Sscanf(string(rec.Payload), "life %d seq %d", &life, &seq)
		require.NoError(t, err)
		require.Equal(t, rec.Seq, seq)
		got = append(got, fmt.Sprintf("life %d seq %d", life, seq))
	}
	assert.Equal(t, want, got, "the reader finishes the deleted segment, then goes on at the oldest left")
}

func TestRecycleIsBounded(t *testing.T) {
	fs := vfs.NewMem()
	l, _, err := Open("/q", recycleOptions(fs, 2))
	require.NoError(t, err)
	appendLife(t, l, 1, 1, 24, false)
	_, err = l.Sync()
	require.NoError(t, err)
	n, err := l.RemoveBefore(21)
	require.NoError(t, err)
	require.Equal(t, 5, n)
	names, err := fs.List("/q")
	require.NoError(t, err)
	var spares int
	for _, name := range names {
		if strings.HasPrefix(name, "spare-") {
			spares++
		}
	}
	assert.Equal(t, 2, spares, "two kept, three unlinked")
	assert.Equal(t, 3*(dataStart+4*lifeFrameSize), l.Stats().DiskBytes, "the active segment and the two spares")
	appendLife(t, l, 2, 25, 36, true)
	assert.Equal(t, uint64(2), l.Stats().RecycledRolls)
	assert.Equal(t, uint64(9), l.Stats().SegmentsRolls, "the third new segment is created")
	require.NoError(t, l.Close())
	_, _, err = Open("/q", Options{FS: fs, Recycle: -1})
	require.Error(t, err)
}

// lifeFrameOf is lifeFrame padded to span slots frames of lifeFrame's size.
func lifeFrameOf(life int, seq uint64, slots int) []byte {
	pad := int(lifeFrameSize)*slots - len(lifeFrame(life, seq))
	r := record.Record{Type: record.TypeMessage, Seq: seq, Time: int64(seq),
		Payload: fmt.Appendf(nil, "life %d seq %08d %s%s", life, seq, strings.Repeat("x", 40), strings.Repeat("y", pad))}
	return record.Append(nil, &r)
}

// logWithCutFramesOnDisk opens a follower's log on fs that appended life 1's
// seqs 1-8, cut them after 6 (TruncateAfter), found 7 and 8 back on disk
// past 6's end after a crash (the truncation did not reach the disk), and
// appended and synced life 2's seqs 7-12 after it.
func logWithCutFramesOnDisk(t *testing.T, fs *vfs.MemFS) *Log {
	t.Helper()
	l, _, err := Open("/q", recycleOptions(fs, 2))
	require.NoError(t, err)
	var life1 []byte
	for seq := uint64(1); seq <= 8; seq++ {
		life1 = append(life1, lifeFrame(1, seq)...)
	}
	_, err = l.AppendFrames(life1)
	require.NoError(t, err)
	_, err = l.TruncateAfter(6)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	overwrite(t, fs, filepath.Join("/q", segmentName(5)), dataStart+2*lifeFrameSize, append(lifeFrame(1, 7), lifeFrame(1, 8)...))
	l, _, err = Open("/q", recycleOptions(fs, 2))
	require.NoError(t, err)
	var life2 []byte
	for seq := uint64(7); seq <= 12; seq++ {
		life2 = append(life2, lifeFrame(2, seq)...)
	}
	_, err = l.AppendFrames(life2)
	require.NoError(t, err)
	_, err = l.Sync()
	require.NoError(t, err)
	return l
}

// TestSpareIsCutAtItsEndBeforeReuse: a crash between the sealed slot and the
// truncation of a follower's TruncateAfter leaves the cut frames in the file
// past its sealed end. When a later TruncateAfter hands those seqs out again
// and the file is reused for a segment based just above its last seq, a cut
// frame may lie exactly where the new segment expects that very seq: the
// spare is cut at its end first, so it is not there to be read.
func TestSpareIsCutAtItsEndBeforeReuse(t *testing.T) {
	fs := vfs.NewMem()
	l := logWithCutFramesOnDisk(t, fs)
	n, err := l.RemoveBefore(7) // the files of 1..4 and 5..6 become spares
	require.NoError(t, err)
	require.Equal(t, 2, n)
	_, err = l.TruncateAfter(6) // a new leader again: the log is empty
	require.NoError(t, err)
	// Its seq 7 spans three slots: life 1's 8 lies where 8 is expected.
	_, err = l.AppendFrames(lifeFrameOf(3, 7, 3))
	require.NoError(t, err)
	_, err = l.Sync()
	require.NoError(t, err)
	require.Equal(t, uint64(1), l.Stats().RecycledRolls, "the file of 5..6 was reused")
	require.NoError(t, l.Close())

	l, _, err = Open("/q", recycleOptions(fs, 2))
	require.NoError(t, err)
	defer l.Close()
	assert.Equal(t, lives(3, 7, 7), lifeFrames(t, l), "life 1's 8 is not read")
}

// TestRecyclingConcurrentWithAppendsAndReaders runs RemoveBefore in one
// goroutine while another appends and syncs (rolling into reused files) and
// a reader follows: the reader sees every seq once, in order, each frame with
// its own payload. Run it with -race.
func TestRecyclingConcurrentWithAppendsAndReaders(t *testing.T) {
	fs := vfs.NewMem()
	l, _, err := Open("/q", recycleOptions(fs, 2))
	require.NoError(t, err)
	defer l.Close()
	const total = 400
	synced := make(chan uint64) // the writer waits for the deletions, as a queue whose consumers keep up
	go func() {
		defer close(synced)
		for seq := uint64(1); seq <= total; seq++ {
			if _, _, err := l.Append(lifeFrame(1, seq)); err != nil {
				return
			}
			s, err := l.Sync()
			if err != nil {
				return
			}
			synced <- s
		}
	}()
	r := l.NewReader(0)
	defer r.Close()
	next := uint64(1)
	for s := range synced {
		for next <= s {
			rec, err := r.Next()
			require.NoError(t, err)
			require.Equal(t, next, rec.Seq)
			require.Equal(t, lifeFrame(1, next)[record.HeaderSize:], rec.Payload)
			next++
		}
		// Delete what the reader has read, a segment behind as retention
		// is (it runs every second): the segment the reader still holds,
		// having read to its end, is not reused.
		_, err := l.RemoveBefore(max(next, 4) - 4)
		require.NoError(t, err)
	}
	require.Equal(t, uint64(total+1), next)
	assert.Greater(t, l.Stats().RecycledRolls, uint64(50), "most rolls reuse a deleted segment")
}
