package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
)

type visited struct {
	offset  int64
	seq     uint64
	payload []byte
}

func readFrames(t *testing.T, dir string, seg SegmentInfo) []visited {
	t.Helper()
	var out []visited
	err := ReadFrames(osFS(), dir, seg, func(off int64, rec *record.Record) error {
		out = append(out, visited{off, rec.Seq, bytes.Clone(rec.Payload)})
		return nil
	})
	require.NoError(t, err)
	return out
}

func TestReadFramesVisitsEveryScannedFrameInOrder(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 600)
	require.NoError(t, l.Close())
	res, err := Scan(osFS(), dir)
	require.NoError(t, err)
	require.Greater(t, len(res.Segments), 1, "the workload must span segments")

	next := uint64(1)
	for _, seg := range res.Segments {
		frames := readFrames(t, dir, seg)
		assert.Len(t, frames, seg.Frames, seg.Name)
		off := int64(dataStart)
		for _, v := range frames {
			want := frame(int(next - 1))
			assert.Equal(t, off, v.offset, "frames are contiguous from the data start")
			assert.Equal(t, next, v.seq)
			assert.Equal(t, want[record.HeaderSize:], v.payload, "seq %d", v.seq)
			off += int64(len(want))
			next++
		}
		assert.Equal(t, int64(dataStart)+seg.DataBytes, off, "%s: visited every data byte", seg.Name)
	}
	assert.Equal(t, res.LastSeq+1, next)
}

func TestReadFramesSkipsTornTail(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 10)
	require.NoError(t, l.Close())
	paths := segmentFiles(t, dir)
	// A well-formed frame with the wrong seq after the clean end: Scan
	// reports it as a torn tail, so ReadFrames must not hand it out.
	stray := frame(99)
	record.SetSeq(stray, 1000)
	res, err := Scan(osFS(), dir)
	require.NoError(t, err)
	last := res.Segments[len(res.Segments)-1]
	f, err := os.OpenFile(paths[len(paths)-1], os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(stray, dataStart+last.DataBytes)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	res, err = Scan(osFS(), dir)
	require.NoError(t, err)
	require.NotNil(t, res.Torn)
	frames := readFrames(t, dir, res.Segments[len(res.Segments)-1])
	require.Len(t, frames, 10)
	assert.Equal(t, uint64(10), frames[9].seq)
}

func TestReadFramesStopsAtVisitError(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 10)
	require.NoError(t, l.Close())
	res, err := Scan(osFS(), dir)
	require.NoError(t, err)

	stop := errors.New("stop")
	calls := 0
	err = ReadFrames(osFS(), dir, res.Segments[0], func(int64, *record.Record) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	assert.Equal(t, 3, calls)
}

func TestReadFramesReportsDamageAfterScan(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 10)
	require.NoError(t, l.Close())
	res, err := Scan(osFS(), dir)
	require.NoError(t, err)
	paths := segmentFiles(t, dir)
	second := int64(dataStart + len(frame(0)))
	flipByte(t, paths[0], second+40) // inside the second frame's payload

	var seqs []uint64
	err = ReadFrames(osFS(), dir, res.Segments[0], func(_ int64, rec *record.Record) error {
		seqs = append(seqs, rec.Seq)
		return nil
	})
	require.ErrorIs(t, err, record.ErrChecksum)
	assert.Contains(t, err.Error(), paths[0])
	assert.Contains(t, err.Error(), fmt.Sprintf("at offset %d:", second))
	assert.Equal(t, []uint64{1}, seqs, "the frame before the damage was visited")
}

func TestReadDurable(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 20)
	require.NoError(t, l.Close())

	var seqs []uint64
	rec, err := ReadDurable(dir, Options{SegmentSize: testSegment}, func(r record.Record) error {
		seqs = append(seqs, r.Seq)
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, uint64(20), rec.LastSeq)
	require.Len(t, seqs, 20)
	assert.Equal(t, uint64(1), seqs[0])

	stop := errors.New("stop")
	var n int
	_, err = ReadDurable(dir, Options{SegmentSize: testSegment}, func(record.Record) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop, "visit's error stops the read and is returned")
	assert.Equal(t, 3, n)
	l, _ = openTest(t, dir) // ReadDurable released the directory lock
	require.NoError(t, l.Close())
}
