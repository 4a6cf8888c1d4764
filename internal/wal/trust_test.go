package wal

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// readCountingFS is a vfs.FS that records every read of a file opened
// through it: which file, where and how many bytes.
type readCountingFS struct {
	vfs.FS
	mu    sync.Mutex
	reads []fileRead
}

type fileRead struct {
	path string
	off  int64
	n    int64
}

func (c *readCountingFS) Open(name string) (vfs.File, error) {
	f, err := c.FS.Open(name)
	return c.wrap(name, f, err)
}

func (c *readCountingFS) OpenRW(name string) (vfs.File, error) {
	f, err := c.FS.OpenRW(name)
	return c.wrap(name, f, err)
}

func (c *readCountingFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &readCountedFile{File: f, fs: c, path: name}, nil
}

// bytesRead returns how many bytes were read from path in [from, to).
func (c *readCountingFS) bytesRead(path string, from, to int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var total int64
	for _, r := range c.reads {
		if r.path != path {
			continue
		}
		if lo, hi := max(r.off, from), min(r.off+r.n, to); hi > lo {
			total += hi - lo
		}
	}
	return total
}

type readCountedFile struct {
	vfs.File
	fs   *readCountingFS
	path string
}

// NextData passes vfs.DataFinder through, when the file implements it.
func (f *readCountedFile) NextData(off int64) (start, end int64, ok bool, err error) {
	if finder, is := f.File.(vfs.DataFinder); is {
		return finder.NextData(off)
	}
	return 0, 0, false, errors.ErrUnsupported
}

func (f *readCountedFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	f.fs.mu.Lock()
	f.fs.reads = append(f.fs.reads, fileRead{path: f.path, off: off, n: int64(n)})
	f.fs.mu.Unlock()
	return n, err
}

// stopLog ends a log of several segments whose last one holds frames below
// its slot's synced offset: a clean Close, or a kill -9 after two more syncs
// (the slot records the first one's offset; the frames the second made
// durable, and a batch never synced, lie above it).
func stopLog(t *testing.T, l *Log, kill bool) {
	t.Helper()
	if !kill {
		require.NoError(t, l.Close())
		return
	}
	appendN(t, l, 0, 20)
	_, err := l.Sync()
	require.NoError(t, err)
	appendN(t, l, 20, 10)
	_, err = l.Sync()
	require.NoError(t, err)
	appendN(t, l, 30, 5)
	l.abandon()
}

// trustedLog writes a log of several 64 KiB segments in dir and stops it
// (stopLog), and returns what Scan (which reads every frame) found.
func trustedLog(t *testing.T, dir string, kill bool) *ScanResult {
	t.Helper()
	l, _ := openTest(t, dir)
	appendN(t, l, 0, 1000)
	stopLog(t, l, kill)
	res, err := Scan(osFS(), dir)
	require.NoError(t, err)
	require.Greater(t, len(res.Segments), 3)
	last := res.Segments[len(res.Segments)-1]
	require.Greater(t, last.SyncedOffset, int64(dataStart+4*1000), "the last segment holds frames below its synced offset")
	if !kill {
		require.Equal(t, dataStart+last.DataBytes, last.SyncedOffset, "a clean Close leaves the slot exact")
	}
	return res
}

// TestOpenReadsNoFrameBelowTheLastSegmentsSyncedOffset opens, with
// TrustSeals, a log stopped cleanly or killed, through a file system that
// counts what is read: no byte of a frame below the last segment's synced
// offset is read (nor of a sealed segment's frames), after a clean Close at
// most one frame header is, and the recovery is the one reading every frame
// gives.
func TestOpenReadsNoFrameBelowTheLastSegmentsSyncedOffset(t *testing.T) {
	for _, stop := range []string{"clean close", "kill"} {
		t.Run(stop, func(t *testing.T) {
			dir := t.TempDir()
			kill := stop == "kill"
			res := trustedLog(t, dir, kill)
			last := res.Segments[len(res.Segments)-1]
			lastPath := segmentFiles(t, dir)[len(res.Segments)-1]

			counting := &readCountingFS{FS: osFS()}
			l, rec, err := Open(dir, Options{FS: counting, SegmentSize: testSegment, LeaseChunk: 100, TrustSeals: true})
			require.NoError(t, err)
			defer l.Close()
			assert.Equal(t, res.FirstSeq, rec.FirstSeq)
			assert.Equal(t, res.LastSeq, rec.LastSeq)
			assert.Equal(t, kill, rec.Unclean)
			assert.Nil(t, rec.Torn)
			for _, path := range segmentFiles(t, dir)[:len(res.Segments)-1] {
				assert.Zero(t, counting.bytesRead(path, dataStart, testSegment), "no frame of sealed %s is read", path)
			}
			assert.Zero(t, counting.bytesRead(lastPath, dataStart, last.SyncedOffset), "no frame below the synced offset is read")
			if !kill {
				assert.LessOrEqual(t, counting.bytesRead(lastPath, dataStart, testSegment), int64(record.HeaderSize),
					"a clean Open reads one frame header at most")
			}
			seqs, _ := readAll(t, l)
			require.Len(t, seqs, int(res.LastSeq))
			for i, seq := range seqs {
				require.Equal(t, uint64(i+1), seq)
			}
		})
	}
}

// TestDamageBelowTheLastSegmentsSyncedOffsetIsFoundByReaders damages a frame
// of the last segment below its synced offset: Open without TrustSeals
// refuses the log, with it Open succeeds (it does not read there) and the
// reader that reaches the frame gets ErrCorrupt naming the file and the
// frame's offset, having returned every frame before it; Scan reports it.
func TestDamageBelowTheLastSegmentsSyncedOffsetIsFoundByReaders(t *testing.T) {
	for _, tc := range frameDamages {
		for _, stop := range []string{"clean close", "kill"} {
			t.Run(tc.name+"/"+stop, func(t *testing.T) {
				dir := t.TempDir()
				kill := stop == "kill"
				res := trustedLog(t, dir, kill)
				last := res.Segments[len(res.Segments)-1]
				victim := segmentFiles(t, dir)[len(res.Segments)-1]
				offsets, seqs := sealedFrames(t, victim, last.SyncedOffset)
				require.Greater(t, len(offsets), 4)
				at := tc.damage(t, victim, offsets, seqs)

				_, _, err := Open(dir, Options{SegmentSize: testSegment, LeaseChunk: 100})
				require.ErrorIs(t, err, ErrCorrupt, "reading every frame finds it")
				_, err = Scan(osFS(), dir)
				require.ErrorIs(t, err, ErrCorrupt, "Scan reads every frame")

				l, rec, err := Open(dir, Options{SegmentSize: testSegment, LeaseChunk: 100, TrustSeals: true})
				require.NoError(t, err, "Open reads no frame below the synced offset")
				defer l.Close()
				assert.Equal(t, res.LastSeq, rec.LastSeq)
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
						assert.Equal(t, offsets[at], ce.Offset)
						break
					}
					require.Equal(t, want, got.Seq, "every frame before the damage, in order")
					want++
				}
				assert.Equal(t, seqs[at], want, "stopped at the damaged frame")
			})
		}
	}
}

// TestTornTailAboveTheSyncedOffsetIsCutWithTrustSeals damages the last
// segment above its slot's synced offset after a kill: with TrustSeals as
// without, it is a torn tail, cut and logged, and the frames before it stay;
// with TrustSeals nothing below the synced offset is read.
func TestTornTailAboveTheSyncedOffsetIsCutWithTrustSeals(t *testing.T) {
	for _, tc := range []struct {
		name string
		// damage changes path, whose frames from the synced offset on start
		// at above, and returns the index in above where the tail is cut.
		damage func(t *testing.T, path string, above []int64) int
	}{
		{"flipped bit at the synced offset", func(t *testing.T, path string, above []int64) int {
			flipByte(t, path, above[0]+40)
			return 0
		}},
		{"flipped bit above it", func(t *testing.T, path string, above []int64) int {
			flipByte(t, path, above[4]+40)
			return 4
		}},
		{"zeroed header above it", func(t *testing.T, path string, above []int64) int {
			writeAt(t, path, above[2], make([]byte, record.HeaderSize))
			return 2
		}},
		{"frame cut short above it", func(t *testing.T, path string, above []int64) int {
			writeAt(t, path, above[6]+record.HeaderSize, make([]byte, above[7]-above[6]-record.HeaderSize))
			return 6
		}},
	} {
		for _, trust := range []bool{false, true} {
			name := tc.name
			if trust {
				name += "/TrustSeals"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				res := trustedLog(t, dir, true)
				last := res.Segments[len(res.Segments)-1]
				path := segmentFiles(t, dir)[len(res.Segments)-1]
				offsets, seqs := sealedFrames(t, path, dataStart+last.DataBytes)
				var above []int64
				var firstAbove int
				for i, off := range offsets {
					if off >= last.SyncedOffset {
						if above == nil {
							firstAbove = i
						}
						above = append(above, off)
					}
				}
				require.Equal(t, last.SyncedOffset, above[0], "the synced offset is a frame's start")
				require.Greater(t, len(above), 7)
				cut := tc.damage(t, path, above)

				var logs bytes.Buffer
				counting := &readCountingFS{FS: osFS()}
				l, rec, err := Open(dir, Options{FS: counting, SegmentSize: testSegment, LeaseChunk: 100, TrustSeals: trust,
					Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				require.NoError(t, err)
				defer l.Close()
				require.NotNil(t, rec.Torn)
				assert.Equal(t, path, rec.Torn.File)
				assert.Equal(t, above[cut], rec.Torn.Offset)
				assert.Contains(t, logs.String(), "cut torn tail")
				wantLast := seqs[firstAbove+cut] - 1
				assert.Equal(t, wantLast, rec.LastSeq)
				if trust {
					assert.Zero(t, counting.bytesRead(path, dataStart, last.SyncedOffset), "nothing below the synced offset is read")
				}
				got, _ := readAll(t, l)
				require.Len(t, got, int(wantLast))
			})
		}
	}
}

// TestKilledOpenReadsNoFreeSpace kills a log whose last segment (8 MiB) holds
// a few frames: Open decodes the frames above the synced offset and, to tell
// a torn tail from a clean end, looks past them only where the file system
// says data lies (vfs.DataFinder), not through the preallocated free space;
// non-zero bytes written far past the end are still found as a torn tail.
func TestKilledOpenReadsNoFreeSpace(t *testing.T) {
	const segmentSize = 8 << 20
	probe, err := osFS().Create(filepath.Join(t.TempDir(), "probe"))
	require.NoError(t, err)
	require.NoError(t, probe.Allocate(segmentSize))
	finder, ok := probe.(vfs.DataFinder)
	if ok {
		_, _, ok, err = finder.NextData(0)
		ok = err == nil && !ok
	}
	probe.Close()
	if !ok {
		t.Skip("this file system does not report preallocated space as a hole")
	}
	for _, tc := range []struct {
		name    string
		garbage int64 // where non-zero bytes are written past the end (0: none)
	}{
		{name: "clean end past the frames"},
		{name: "torn bytes far past the frames", garbage: 3 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _, err := Open(dir, Options{SegmentSize: segmentSize, LeaseChunk: 100})
			require.NoError(t, err)
			appendN(t, l, 0, 200)
			stopLog(t, l, true)
			res, err := Scan(osFS(), dir)
			require.NoError(t, err)
			require.Len(t, res.Segments, 1)
			end := dataStart + res.Segments[0].DataBytes
			path := segmentFiles(t, dir)[0]
			if tc.garbage != 0 {
				writeAt(t, path, end+tc.garbage, []byte("torn"))
			}

			counting := &readCountingFS{FS: osFS()}
			l, rec, err := Open(dir, Options{FS: counting, SegmentSize: segmentSize, LeaseChunk: 100, TrustSeals: true})
			require.NoError(t, err)
			defer l.Close()
			assert.Equal(t, res.LastSeq, rec.LastSeq)
			assert.Less(t, counting.bytesRead(path, end, segmentSize), int64(256<<10), "the free space is not read")
			if tc.garbage == 0 {
				assert.Nil(t, rec.Torn)
				return
			}
			require.NotNil(t, rec.Torn, "bytes past zeros are a torn tail")
			assert.Equal(t, end, rec.Torn.Offset)
			assert.Equal(t, tc.garbage+4, rec.Torn.Bytes)
			info, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, end, info.Size(), "cut at the last good frame")
		})
	}
}

// handleCountingFS is a vfs.FS that counts the files opened through it and
// not closed yet.
type handleCountingFS struct {
	vfs.FS
	open atomic.Int64
}

func (c *handleCountingFS) Open(name string) (vfs.File, error) {
	f, err := c.FS.Open(name)
	return c.count(f, err)
}

func (c *handleCountingFS) OpenRW(name string) (vfs.File, error) {
	f, err := c.FS.OpenRW(name)
	return c.count(f, err)
}

func (c *handleCountingFS) count(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	c.open.Add(1)
	return &handleCountedFile{File: f, fs: c}, nil
}

type handleCountedFile struct {
	vfs.File
	fs     *handleCountingFS
	closed atomic.Bool
}

func (f *handleCountedFile) Close() error {
	if f.closed.CompareAndSwap(false, true) {
		f.fs.open.Add(-1)
	}
	return f.File.Close()
}

// TestOpenOfManySegmentsNamesTheFirstDamagedHeaderAndClosesEveryFile opens,
// with TrustSeals, logs of many sealed segments whose headers Open reads
// (several at a time): the damage it reports is the first segment's in seq
// order, and it leaves no file open, whether it fails or not.
func TestOpenOfManySegmentsNamesTheFirstDamagedHeaderAndClosesEveryFile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damaged []int // segments whose header checksum is broken
	}{
		{name: "intact"},
		{name: "one damaged header", damaged: []int{5}},
		{name: "two damaged headers", damaged: []int{2, 7}},
		{name: "the first header", damaged: []int{0, 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _ := openTest(t, dir)
			appendN(t, l, 0, 1500)
			require.NoError(t, l.Close())
			paths := segmentFiles(t, dir)
			require.Greater(t, len(paths), 10)
			for _, i := range tc.damaged {
				flipByte(t, paths[i], 40) // reserved bytes: only the checksum tells
			}
			counting := &handleCountingFS{FS: osFS()}
			l, rec, err := Open(dir, Options{FS: counting, SegmentSize: testSegment, LeaseChunk: 100, TrustSeals: true})
			if len(tc.damaged) == 0 {
				require.NoError(t, err)
				assert.Equal(t, len(paths), rec.Segments)
				assert.Equal(t, int64(1), counting.open.Load(), "only the last segment stays open")
				require.NoError(t, l.Close())
				assert.Zero(t, counting.open.Load())
				return
			}
			require.ErrorIs(t, err, ErrCorrupt)
			var ce *CorruptError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, paths[tc.damaged[0]], ce.File, "the first damage in seq order")
			assert.Zero(t, counting.open.Load(), "no file left open")
		})
	}
}

// TestFramesAfterASeqJumpSurviveAKillWithTrustSeals: after an unclean stop
// the next seq jumps above the lease, in a new segment whose base is above
// the previous segment's last seq plus one. Frames synced there while its
// slot still records no frame (the slot lags by one sync) must be read
// from the base seq on, not cut as a torn tail.
func TestFramesAfterASeqJumpSurviveAKillWithTrustSeals(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: testSegment, LeaseChunk: 100, TrustSeals: true}
	l, _, err := Open(dir, opts)
	require.NoError(t, err)
	appendN(t, l, 0, 10)
	_, err = l.Sync()
	require.NoError(t, err)
	l.abandon()

	l, rec, err := Open(dir, opts)
	require.NoError(t, err)
	require.Greater(t, rec.NextSeq, uint64(11), "the seqs jump over the lease")
	jumped := appendN(t, l, 10, 3)
	synced, err := l.Sync()
	require.NoError(t, err)
	require.Equal(t, jumped[2], synced)
	l.abandon()

	l, rec, err = Open(dir, opts)
	require.NoError(t, err)
	defer l.Close()
	assert.Nil(t, rec.Torn)
	assert.Equal(t, jumped[2], rec.LastSeq)
	seqs, _ := readAll(t, l)
	assert.Equal(t, append([]uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, jumped...), seqs)
}
