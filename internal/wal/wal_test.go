package wal

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

const testSegment = 64 << 10

func frame(i int) []byte {
	r := record.Record{Type: record.TypeMessage, Time: int64(i), Payload: []byte(fmt.Sprintf("payload-%05d-%s", i, strings.Repeat("x", i%900)))}
	return record.Append(nil, &r)
}

func openTest(t *testing.T, dir string, logs ...*bytes.Buffer) (*Log, *Recovery) {
	t.Helper()
	opts := Options{SegmentSize: testSegment, LeaseChunk: 100}
	if len(logs) > 0 {
		opts.Logger = slog.New(slog.NewTextHandler(logs[0], nil))
	}
	l, rec, err := Open(dir, opts)
	require.NoError(t, err)
	return l, rec
}

func appendN(t *testing.T, l *Log, from, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := from; i < from+n; i++ {
		first, cnt, err := l.Append(frame(i))
		require.NoError(t, err)
		require.Equal(t, 1, cnt)
		seqs = append(seqs, first)
	}
	return seqs
}

// readAll returns every durable frame's payload keyed by seq, in order.
func readAll(t *testing.T, l *Log) ([]uint64, [][]byte) {
	t.Helper()
	r := l.NewReader(0)
	defer r.Close()
	var seqs []uint64
	var payloads [][]byte
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return seqs, payloads
		}
		require.NoError(t, err)
		seqs = append(seqs, rec.Seq)
		payloads = append(payloads, bytes.Clone(rec.Payload))
	}
}

// abandon drops the log as a crash would: no final sync, no clean slot.
func (l *Log) abandon() {
	l.mu.Lock()
	for _, s := range l.segments {
		if s.file != nil {
			s.file.Close()
		}
	}
	l.closed = true
	l.mu.Unlock()
	l.lock.Close()
}

func TestAppendSyncReopenAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	l, rec := openTest(t, dir)
	assert.Equal(t, uint64(1), rec.NextSeq)
	seqs := appendN(t, l, 0, 1000)
	for i, s := range seqs {
		require.Equal(t, uint64(i+1), s, "seqs are consecutive from 1")
	}
	synced, err := l.Sync()
	require.NoError(t, err)
	assert.Equal(t, uint64(1000), synced)
	got, payloads := readAll(t, l)
	require.Len(t, got, 1000)
	assert.Equal(t, record.Append(nil, &record.Record{}), record.Append(nil, &record.Record{}))
	assert.Greater(t, l.Stats().Segments, 2, "1000 frames of up to 900 bytes span several 64 KiB segments")
	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "Close is idempotent")

	l, rec = openTest(t, dir)
	defer l.Close()
	assert.False(t, rec.Unclean)
	assert.Equal(t, uint64(1000), rec.LastSeq)
	assert.Equal(t, uint64(1001), rec.NextSeq, "a clean close continues without a gap")
	got2, payloads2 := readAll(t, l)
	assert.Equal(t, got, got2)
	assert.Equal(t, payloads, payloads2)
	first, _, err := l.Append(frame(1))
	require.NoError(t, err)
	assert.Equal(t, uint64(1001), first)
}

func TestReaderSeesOnlySyncedFrames(t *testing.T) {
	l, _ := openTest(t, t.TempDir())
	defer l.Close()
	appendN(t, l, 0, 10)
	seqs, _ := readAll(t, l)
	assert.Empty(t, seqs, "nothing is synced yet")
	_, err := l.Sync()
	require.NoError(t, err)
	r := l.NewReader(4)
	defer r.Close()
	rec, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, uint64(4), rec.Seq, "reader starts at the requested seq")
	for i := 5; i <= 10; i++ {
		rec, err = r.Next()
		require.NoError(t, err)
		assert.Equal(t, uint64(i), rec.Seq)
	}
	_, err = r.Next()
	assert.Equal(t, io.EOF, err)
	appendN(t, l, 10, 3)
	_, err = r.Next()
	assert.Equal(t, io.EOF, err, "appended but not synced")
	_, err = l.Sync()
	require.NoError(t, err)
	rec, err = r.Next()
	require.NoError(t, err, "the same reader picks up newly synced frames")
	assert.Equal(t, uint64(11), rec.Seq)
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	_, _, err := Open(dir, Options{SegmentSize: testSegment})
	require.ErrorIs(t, err, ErrLocked)
	require.NoError(t, l.Close())
	l2, _ := openTest(t, dir)
	require.NoError(t, l2.Close())
}

func TestUncleanStopNeverReusesSeqs(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir) // LeaseChunk 100
	appendN(t, l, 0, 30)
	_, err := l.Sync()
	require.NoError(t, err)
	appendN(t, l, 30, 5) // handed out (seqs 31..35), written, never synced
	l.abandon()

	l, rec := openTest(t, dir)
	assert.True(t, rec.Unclean)
	assert.GreaterOrEqual(t, rec.LastSeq, uint64(30))
	assert.Greater(t, rec.NextSeq, uint64(35), "seqs handed out before the crash are never reused")
	seqs := appendN(t, l, 100, 1)
	assert.Equal(t, rec.NextSeq, seqs[0])
	_, err = l.Sync()
	require.NoError(t, err)
	require.NoError(t, l.Close())

	l, rec = openTest(t, dir)
	defer l.Close()
	assert.False(t, rec.Unclean)
	all, _ := readAll(t, l)
	for i := 1; i < len(all); i++ {
		require.Greater(t, all[i], all[i-1])
	}
	assert.Equal(t, seqs[0], all[len(all)-1])
}

func TestCloseOfEmptySegmentAfterUncleanStop(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 3)
	l.abandon()
	l, rec := openTest(t, dir)
	next := rec.NextSeq
	// Roll into a new segment and close without appending to it.
	require.NoError(t, l.roll())
	require.NoError(t, l.Close())
	l, rec = openTest(t, dir)
	defer l.Close()
	assert.False(t, rec.Unclean, "closing an empty segment is clean")
	seqs := appendN(t, l, 0, 1)
	assert.Equal(t, next, seqs[0])
	_, err := l.Sync()
	require.NoError(t, err)
}

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	paths, _, err := listSegments(osFS(), dir)
	require.NoError(t, err)
	return paths
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	b[0] ^= 0x04
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
}

func TestFlippedBitInSealedSegmentIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 1000)
	require.NoError(t, l.Close())
	paths := segmentFiles(t, dir)
	require.Greater(t, len(paths), 2)
	victim := paths[1]
	flipByte(t, victim, dataStart+700)

	_, _, err := Open(dir, Options{SegmentSize: testSegment})
	require.ErrorIs(t, err, ErrCorrupt)
	var ce *CorruptError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, victim, ce.File)
	assert.LessOrEqual(t, ce.Offset, int64(dataStart+700), "offset points at the damaged frame")
	assert.Greater(t, ce.Offset, int64(dataStart+700-400))
	assert.Contains(t, err.Error(), filepath.Base(victim))

	res, err := Scan(osFS(), dir)
	require.ErrorIs(t, err, ErrCorrupt, "Scan reports the same corruption")
	assert.NotNil(t, res)
}

func TestFlippedBitBelowSyncedOffsetIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 20)
	_, err := l.Sync()
	require.NoError(t, err)
	appendN(t, l, 20, 20)
	_, err = l.Sync() // records the first sync's offset in the slot
	require.NoError(t, err)
	l.abandon()
	paths := segmentFiles(t, dir)
	flipByte(t, paths[len(paths)-1], dataStart+50)

	_, _, err = Open(dir, Options{SegmentSize: testSegment})
	require.ErrorIs(t, err, ErrCorrupt)
	var ce *CorruptError
	require.ErrorAs(t, err, &ce)
	assert.LessOrEqual(t, ce.Offset, int64(dataStart+50), "offset of the frame holding the flipped byte")
	assert.Greater(t, ce.Offset, int64(dataStart+50-len(frame(1))))
}

func TestDamageAboveSyncedOffsetIsCutAndLogged(t *testing.T) {
	for _, damage := range []string{"flip", "zero-page", "torn"} {
		t.Run(damage, func(t *testing.T) {
			dir := t.TempDir()
			l, _ := openTest(t, dir)
			appendN(t, l, 0, 10)
			_, err := l.Sync()
			require.NoError(t, err)
			syncedEnd := l.written
			appendN(t, l, 10, 10) // not synced: above the recorded offset
			end := l.written
			l.abandon()
			path := segmentFiles(t, dir)[0]
			switch damage {
			case "flip":
				flipByte(t, path, syncedEnd+40)
			case "zero-page":
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				require.NoError(t, err)
				_, err = f.WriteAt(make([]byte, 100), syncedEnd)
				require.NoError(t, err)
				f.Close()
			case "torn":
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				require.NoError(t, err)
				_, err = f.WriteAt(make([]byte, end-syncedEnd-10), syncedEnd+10)
				require.NoError(t, err)
				f.Close()
			}
			var logs bytes.Buffer
			l, rec := openTest(t, dir, &logs)
			defer l.Close()
			require.NotNil(t, rec.Torn)
			assert.Equal(t, syncedEnd, rec.Torn.Offset)
			assert.GreaterOrEqual(t, rec.Torn.Frames, 1)
			assert.Equal(t, uint64(10), rec.LastSeq, "the ten synced frames survive")
			assert.Contains(t, logs.String(), "cut torn tail")
			assert.Contains(t, logs.String(), "frames=")
			seqs, _ := readAll(t, l)
			assert.Len(t, seqs, 10)
			next := appendN(t, l, 0, 1)[0]
			assert.Greater(t, next, uint64(20))
		})
	}
}

func TestMissingMiddleSegmentIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 1000)
	require.NoError(t, l.Close())
	paths := segmentFiles(t, dir)
	require.Greater(t, len(paths), 2)
	require.NoError(t, os.Remove(paths[1]))
	_, _, err := Open(dir, Options{SegmentSize: testSegment})
	require.ErrorIs(t, err, ErrCorrupt)
	var ce *CorruptError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, paths[2], ce.File)
}

func TestRemoveBefore(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	defer l.Close()
	appendN(t, l, 0, 1000)
	_, err := l.Sync()
	require.NoError(t, err)
	before := len(segmentFiles(t, dir))
	n, err := l.RemoveBefore(500)
	require.NoError(t, err)
	assert.Greater(t, n, 0)
	assert.Equal(t, before-n, len(segmentFiles(t, dir)))
	seqs, _ := readAll(t, l)
	assert.LessOrEqual(t, seqs[0], uint64(500), "nothing at or above the bound was removed")
	assert.Equal(t, uint64(1000), seqs[len(seqs)-1])
	n, err = l.RemoveBefore(1 << 60)
	require.NoError(t, err)
	seqs, _ = readAll(t, l)
	assert.Equal(t, uint64(1000), seqs[len(seqs)-1], "the active segment is never removed")
}

func TestAppendRejectsOversizedFrame(t *testing.T) {
	l, _ := openTest(t, t.TempDir())
	defer l.Close()
	big := record.Append(nil, &record.Record{Type: record.TypeMessage, Payload: make([]byte, testSegment)})
	_, n, err := l.Append(big)
	require.ErrorIs(t, err, ErrTooLarge)
	assert.Equal(t, 0, n)
	appendN(t, l, 0, 1)
}

func TestAppendOneBufferAcrossSegments(t *testing.T) {
	l, _ := openTest(t, t.TempDir())
	defer l.Close()
	var buf []byte
	for i := 0; i < 600; i++ {
		buf = append(buf, frame(i)...)
	}
	require.Greater(t, len(buf), 3*testSegment, "the buffer spans several segments")
	first, n, err := l.Append(buf)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), first)
	assert.Equal(t, 600, n)
	_, err = l.Sync()
	require.NoError(t, err)
	seqs, payloads := readAll(t, l)
	require.Len(t, seqs, 600)
	for i, s := range seqs {
		require.Equal(t, uint64(i+1), s)
		require.Equal(t, frame(i)[record.HeaderSize:], payloads[i])
	}
	_, _, err = l.Append(buf[:10])
	require.Error(t, err, "a buffer that does not hold whole frames is refused")
}

func TestSlotThrottle(t *testing.T) {
	for _, tt := range []struct {
		name  string
		opts  Options
		grows bool
	}{
		{"every sync", Options{}, true},
		{"interval not reached", Options{SlotInterval: time.Hour}, false},
		{"bytes reached", Options{SlotInterval: time.Hour, SlotBytes: 100}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.SegmentSize = testSegment
			l, _, err := Open(t.TempDir(), tt.opts)
			require.NoError(t, err)
			defer l.Close()
			appendN(t, l, 0, 1)
			_, err = l.Sync()
			require.NoError(t, err)
			gen := l.active.slot.generation
			for i := 0; i < 5; i++ {
				appendN(t, l, i, 1)
				_, err = l.Sync()
				require.NoError(t, err)
			}
			if tt.grows {
				assert.Greater(t, l.active.slot.generation, gen)
			} else {
				assert.Equal(t, gen, l.active.slot.generation)
			}
		})
	}
}

func TestPreparedSegmentIsUsedByTheRoll(t *testing.T) {
	dir := t.TempDir()
	prepared := make(chan struct{}, 10)
	l, _, err := Open(dir, Options{SegmentSize: testSegment, Prepare: true, onPrepared: func() { prepared <- struct{}{} }})
	require.NoError(t, err)
	// Fill a sixteenth of the first segment: the preparer starts.
	var n int
	for l.written <= testSegment/16 {
		appendN(t, l, n, 1)
		n++
	}
	select {
	case <-prepared:
	case <-time.After(10 * time.Second):
		t.Fatal("no spare prepared")
	}
	spare := l.sparePath
	require.FileExists(t, spare)
	for len(segmentFiles(t, dir)) < 2 {
		appendN(t, l, n, 1)
		n++
	}
	assert.NoFileExists(t, spare, "the roll renamed the spare into place")
	_, err = l.Sync()
	require.NoError(t, err)
	require.NoError(t, l.Close())

	l, rec := openTest(t, dir)
	defer l.Close()
	assert.False(t, rec.Unclean)
	seqs, payloads := readAll(t, l)
	require.Len(t, seqs, n)
	for i := range seqs {
		require.Equal(t, frame(i)[record.HeaderSize:], payloads[i])
	}
}

func TestLeftoverSpareIsRemovedOnOpen(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 3)
	require.NoError(t, l.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "spare-0.tmp"), make([]byte, 8192), 0o600))
	l, rec := openTest(t, dir)
	defer l.Close()
	assert.Equal(t, uint64(3), rec.LastSeq)
	assert.NoFileExists(t, filepath.Join(dir, "spare-0.tmp"))
}

func TestOpenRemovesOnlyItsOwnTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 3)
	require.NoError(t, l.Close())
	own := []string{"spare-7.tmp", segmentName(4) + tmpExt}
	foreign := []string{"report.tmp", "spare-.tmp", "spare-x.tmp", "notes.wal.tmp", ".tmp"}
	for _, name := range append(append([]string(nil), own...), foreign...) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600))
	}
	l, rec := openTest(t, dir)
	defer l.Close()
	assert.Equal(t, uint64(3), rec.LastSeq)
	for _, name := range own {
		assert.NoFileExists(t, filepath.Join(dir, name))
		assert.True(t, OwnsFile(name), name)
	}
	for _, name := range foreign {
		assert.FileExists(t, filepath.Join(dir, name), "Open removed a file that is not the log's")
		assert.False(t, OwnsFile(name), name)
	}
	for _, name := range []string{"LOCK", segmentName(1)} {
		assert.True(t, OwnsFile(name), name)
	}
}

// openHookFS runs before(name) ahead of every Open.
type openHookFS struct {
	vfs.FS
	before func(name string)
}

func (f *openHookFS) Open(name string) (vfs.File, error) {
	f.before(name)
	return f.FS.Open(name)
}

// A reader that picked a segment retention deletes before it could open it
// goes on with the next segment (the replication sender reads while forced
// retention deletes what it has not read).
func TestReaderSkipsASegmentDeletedAsItOpensIt(t *testing.T) {
	hook := &openHookFS{FS: vfs.NewMem(), before: func(string) {}}
	l, _, err := Open("/q", Options{FS: hook, SegmentSize: testSegment, LeaseChunk: 100})
	require.NoError(t, err)
	defer l.Close()
	appendN(t, l, 0, 1000)
	_, err = l.Sync()
	require.NoError(t, err)
	l.mu.Lock()
	first, second := l.segments[0], l.segments[1]
	l.mu.Unlock()
	hook.before = func(name string) {
		if name == first.path {
			hook.before = func(string) {}
			n, err := l.RemoveBefore(second.baseSeq)
			require.NoError(t, err)
			require.Equal(t, 1, n)
		}
	}
	r := l.NewUncappedReader(1)
	defer r.Close()
	rec, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, second.baseSeq, rec.Seq, "the reader jumps to the next segment")
}
