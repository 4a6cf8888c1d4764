package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// CorruptError reports damage that recovery must not repair: it names the
// file and the byte offset. It matches ErrCorrupt with errors.Is.
type CorruptError struct {
	File   string
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("wal: corrupt log: %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func corrupt(path string, offset int64, format string, args ...any) error {
	return &CorruptError{File: path, Offset: offset, Reason: fmt.Sprintf(format, args...)}
}

// TornTail describes the unsynced end of the last segment that recovery cut.
type TornTail struct {
	File   string
	Offset int64  // where the cut starts: the end of the last good frame
	Bytes  int64  // non-zero bytes from Offset to the last non-zero byte
	Frames int    // frames that could be made out in the cut region (at least 1)
	Reason string // what stopped the scan
}

// SegmentInfo describes one segment file, for inspect and verify.
type SegmentInfo struct {
	Name         string
	BaseSeq      uint64 // seq of the first frame it may hold
	LastSeq      uint64 // seq of its last frame (PrevLastSeq if empty)
	PrevLastSeq  uint64
	Frames       int
	DataBytes    int64 // bytes of frames
	FileBytes    int64 // size on disk, with the header and preallocated space
	Sealed       bool
	SyncedOffset int64 // recorded in its slot
	Lease        uint64
	// Gap: records of the log this one copies were deleted there before
	// this log got them, somewhere between PrevLastSeq and BaseSeq (or, for
	// the first segment, below BaseSeq). See Log.Gaps.
	Gap bool
	// Recycled: the file held an earlier segment (Options.Recycle).
	Recycled bool
}

// ScanResult is what Scan found in a log directory.
type ScanResult struct {
	Segments []SegmentInfo
	Torn     *TornTail // nil when the last segment ends cleanly
	Frames   map[record.Type]int
	FirstSeq uint64 // 0 when the log is empty
	LastSeq  uint64
}

// Scan reads every segment in dir and checks every frame's checksum and the
// chain of seqs, without locking or changing anything. It returns ErrCorrupt
// (a *CorruptError) for damage recovery would refuse, and reports a torn tail
// that recovery would cut. It is safe to run on the directory of an open
// queue, but then the last segment may be caught mid-write.
func Scan(fsys vfs.FS, dir string) (*ScanResult, error) {
	res := &ScanResult{Frames: map[record.Type]int{}}
	segs, torn, err := scanDir(fsys, dir, false, func(path string, last bool) (vfs.File, error) {
		return fsys.Open(path)
	}, func(r *record.Record) {
		res.Frames[r.Type]++
		if res.FirstSeq == 0 {
			res.FirstSeq = r.Seq
		}
	})
	for _, s := range segs {
		size, _ := s.file.Size()
		res.Segments = append(res.Segments, SegmentInfo{
			Name: s.name(), BaseSeq: s.baseSeq, LastSeq: s.lastSeq, PrevLastSeq: s.prevLastSeq,
			Frames: s.frames, DataBytes: s.end - dataStart, FileBytes: size, Sealed: s.sealed,
			SyncedOffset: s.slot.syncedOffset, Lease: s.slot.lease, Gap: s.gap, Recycled: s.recycled,
		})
		res.LastSeq = s.lastSeq
		s.file.Close()
	}
	res.Torn = torn
	return res, err
}

// listSegments returns the segment paths in dir in seq order, and the paths of
// leftover temporary files.
func listSegments(fsys vfs.FS, dir string) (segments, temps []string, err error) {
	names, err := fsys.List(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, name := range names {
		if isTempName(name) {
			temps = append(temps, filepath.Join(dir, name))
		} else if _, ok := parseSegmentName(name); ok {
			segments = append(segments, filepath.Join(dir, name))
		}
	}
	return segments, temps, nil // zero-padded names sort in seq order
}

// scanDir opens and scans every segment in order and checks the chain between
// them. With trustSeals, no segment's frames are read below its slot's synced
// offset (scanSegment): a sealed one's are not read at all, and the segments
// before the last are opened and their header pages read several at a time
// (openHeaders), since then those reads are most of what Open waits for. The
// returned segments keep their files open; on error every file is closed.
func scanDir(fsys vfs.FS, dir string, trustSeals bool, open func(path string, last bool) (vfs.File, error), visit func(*record.Record)) (segs []*segment, torn *TornTail, err error) {
	paths, _, err := listSegments(fsys, dir)
	if err != nil {
		return nil, nil, err
	}
	var early []openedSegment // paths[i] for i < len(early), opened ahead
	if trustSeals && len(paths) > 2 {
		early = openHeaders(paths[:len(paths)-1], open)
	}
	defer func() {
		for _, o := range early {
			if o.file != nil { // not taken: the scan stopped before it
				o.file.Close()
			}
		}
		if err != nil {
			for _, s := range segs {
				s.file.Close()
			}
		}
	}()
	for i, path := range paths {
		last := i == len(paths)-1
		var f vfs.File
		var page *headerPage
		if i < len(early) {
			f, err, page = early[i].file, early[i].err, &early[i].page
			early[i].file = nil
		} else {
			f, err = open(path, last)
		}
		if err != nil {
			return segs, nil, err
		}
		seg, t, err := scanSegment(f, path, last, trustSeals, visit, page)
		if seg != nil {
			segs = append(segs, seg)
		} else {
			f.Close()
		}
		if err != nil {
			return segs, nil, err
		}
		if seg.baseSeq <= seg.prevLastSeq {
			return segs, nil, corrupt(path, 16, "base seq %d is not above the previous segment's last seq %d", seg.baseSeq, seg.prevLastSeq)
		}
		if i > 0 && seg.prevLastSeq != segs[i-1].lastSeq {
			return segs, nil, corrupt(path, 24, "previous segment should end at seq %d but %s ends at seq %d (a segment is missing or cut short)",
				seg.prevLastSeq, segs[i-1].name(), segs[i-1].lastSeq)
		}
		torn = t
	}
	return segs, torn, nil
}

// headerPage is a segment's first dataStart bytes (header and slots) as a
// read returned them: n bytes, and the read's error.
type headerPage struct {
	buf []byte
	n   int
	err error
}

func readHeaderPage(f vfs.File) *headerPage {
	page := &headerPage{buf: make([]byte, dataStart)}
	page.n, page.err = f.ReadAt(page.buf, 0)
	return page
}

// openedSegment is a segment opened ahead of the scan, with its header page
// read, or the error opening it returned.
type openedSegment struct {
	file vfs.File
	err  error
	page headerPage
}

// headerReaders is how many segments openHeaders opens and reads at once:
// a cold header read waits for the disk (~0.1 ms each here), and a disk
// serves several at a time.
const headerReaders = 16

// openHeaders opens the sealed segments at paths and reads their header
// pages, headerReaders at a time. Each entry holds its file (the caller
// closes it) or the error opening it; the caller reports errors in seq
// order.
func openHeaders(paths []string, open func(path string, last bool) (vfs.File, error)) []openedSegment {
	out := make([]openedSegment, len(paths))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(headerReaders, len(paths)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(paths) {
					return
				}
				f, err := open(paths[i], false)
				out[i] = openedSegment{file: f, err: err}
				if err == nil {
					out[i].page = *readHeaderPage(f)
				}
			}
		})
	}
	wg.Wait()
	return out
}

// scanSegment reads a segment's header and slots and decodes every frame,
// applying the recovery rules of the package comment. With trust, the frames
// below the best slot's synced offset are not read: the slot gives where they
// end and the last seq among them (bySlot checks it against the header, and
// scanDir a sealed segment's against the next segment's header), and the scan
// decodes from the synced offset on, under the rules above it; a sealed
// segment ends there. Damage among the frames not read is found by the Reader
// that reaches it, as ErrCorrupt naming file and offset, and by Scan.
func scanSegment(f vfs.File, path string, last, trust bool, visit func(*record.Record), read *headerPage) (*segment, *TornTail, error) {
	size, err := f.Size()
	if err != nil {
		return nil, nil, err
	}
	var data []dataRegion // where a torn tail may lie, asked before any read
	if last {
		data = dataRegions(f, dataStart, size)
	}
	if read == nil {
		read = readHeaderPage(f)
	}
	page := read.buf
	if read.n < dataStart {
		if read.err == nil || read.err == io.EOF {
			return nil, nil, corrupt(path, int64(read.n), "file is %d bytes, shorter than the segment header", size)
		}
		return nil, nil, read.err
	}
	h, reason := decodeHeader(page)
	if reason != "" {
		return nil, nil, corrupt(path, 0, "%s", reason)
	}
	base, _ := parseSegmentName(filepath.Base(path))
	if h.baseSeq != base {
		return nil, nil, corrupt(path, 16, "header base seq %d does not match the file name", h.baseSeq)
	}
	sl, ok := bestSlot(page)
	if !ok {
		return nil, nil, corrupt(path, slotAOffset, "no valid sync slot")
	}
	seg := &segment{path: path, baseSeq: h.baseSeq, prevLastSeq: h.prevLastSeq, file: f, slot: sl,
		sealed: sl.sealed, lastSeq: h.prevLastSeq, end: dataStart, gap: h.gap, recycled: h.recycled}
	if !sl.sealed && !last {
		return seg, nil, corrupt(path, slotAOffset, "segment is not sealed but another segment follows it")
	}
	if sl.syncedOffset > size {
		return seg, nil, corrupt(path, size, "file is %d bytes but its slot records %d bytes as synced", size, sl.syncedOffset)
	}
	start, expected := int64(dataStart), h.baseSeq
	if trust {
		if err := bySlot(seg, path); err != nil || sl.sealed {
			return seg, nil, err
		}
		if sl.syncedOffset > dataStart {
			// Else the first frame is the base's, which is above the
			// previous segment's last seq+1 after a jump (an unclean stop
			// skips the leased seqs).
			start, expected = sl.syncedOffset, sl.syncedSeq+1
		}
		clean, err := cleanAtSyncedOffset(f, path, h, sl, expected)
		if err != nil || clean {
			return seg, nil, err
		}
	}
	limit := size
	if sl.sealed {
		limit = sl.syncedOffset
	}
	// strict: damage here is corruption, not a torn tail.
	strict := func(off int64) bool { return sl.sealed || off < sl.syncedOffset }
	rd := record.NewReader(f, start, limit, 0)
	for {
		off := rd.Offset()
		if off == sl.syncedOffset && seg.lastSeq != sl.syncedSeq {
			return seg, nil, corrupt(path, off, "last seq at the synced offset is %d, slot records %d", seg.lastSeq, sl.syncedSeq)
		}
		if off < sl.syncedOffset && off+record.HeaderSize > sl.syncedOffset {
			return seg, nil, corrupt(path, off, "synced offset %d falls inside a frame", sl.syncedOffset)
		}
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err == nil && rec.Seq != expected {
			err = fmt.Errorf("seq %d where %d was expected", rec.Seq, expected)
		} else if err != nil && !isDecodeError(err) {
			return seg, nil, fmt.Errorf("wal: reading %s at offset %d: %w", path, off, err)
		}
		if err != nil && h.recycled && !strict(off) {
			// In a recycled file the frames of its earlier life follow this
			// one's: whatever is not the expected frame ends the data.
			t, err := recycledTail(f, path, off, limit, expected, err)
			return seg, t, err
		}
		if err != nil {
			if errors.Is(err, record.ErrCleanEnd) {
				if strict(off) {
					return seg, nil, corrupt(path, off, "zeros where synced data should be (synced offset %d)", sl.syncedOffset)
				}
				t, err := tornAfter(f, path, off, limit, "zeroed frame header", data)
				return seg, t, err
			}
			if strict(off) {
				return seg, nil, corrupt(path, off, "%v (below the synced offset %d)", err, sl.syncedOffset)
			}
			reason := err.Error()
			t, err := tornAfter(f, path, off, limit, reason, data)
			if t == nil && err == nil {
				t = &TornTail{File: path, Offset: off, Frames: 1, Reason: reason}
			}
			return seg, t, err
		}
		seg.end = rd.Offset()
		seg.lastSeq = rec.Seq
		seg.frames++
		expected++
		if visit != nil {
			visit(&rec)
		}
	}
	if seg.end < sl.syncedOffset {
		return seg, nil, corrupt(path, seg.end, "data ends before the synced offset %d", sl.syncedOffset)
	}
	return seg, nil, nil
}

// bySlot fills in a segment's end, last seq and frame count from its best
// slot, for the frames below its synced offset (all of them in a sealed
// segment), without reading them, after the checks that need no frame: no
// frame below the synced offset means the previous segment's last seq, some
// means a last seq at or above the base and room for every frame's header.
// The frames start at the base seq and follow each other (recovery and
// appends never leave a hole inside a segment), and a slot records an offset
// only once an fdatasync made everything below it durable.
func bySlot(seg *segment, path string) error {
	sl := seg.slot
	switch {
	case sl.syncedOffset < dataStart:
		return corrupt(path, slotAOffset, "slot records offset %d, inside the header", sl.syncedOffset)
	case sl.syncedOffset == dataStart && sl.syncedSeq != seg.prevLastSeq:
		return corrupt(path, slotAOffset, "slot records last seq %d with no frame, its header %d", sl.syncedSeq, seg.prevLastSeq)
	case sl.syncedOffset > dataStart && sl.syncedSeq < seg.baseSeq:
		return corrupt(path, slotAOffset, "slot records last seq %d below the base seq %d", sl.syncedSeq, seg.baseSeq)
	}
	if sl.syncedOffset > dataStart {
		frames := sl.syncedSeq - seg.baseSeq + 1
		if uint64(sl.syncedOffset-dataStart)/record.HeaderSize < frames {
			return corrupt(path, slotAOffset, "slot records %d frames in %d bytes", frames, sl.syncedOffset-dataStart)
		}
		seg.frames = int(frames)
	}
	seg.end, seg.lastSeq = sl.syncedOffset, sl.syncedSeq
	return nil
}

// cleanAtSyncedOffset reads the frame header at the synced offset of the
// last segment (h its header, sl its best slot, not sealed, expected the seq
// of the frame that may start there) and says whether
// the data ends there cleanly without reading further, as decoding from there
// would conclude:
//
//   - In a recycled segment, a header not carrying the next seq (leftovers of
//     the earlier life, zeros) is a clean end (recycledTail).
//   - A zero header where the slot is the one a clean Close writes (exact,
//     its lease the last seq) is a clean end: every frame of this life has a
//     seq at or below the lease, so none lies past it; the free space after
//     it is not read for the torn tail that only an unclean stop leaves.
//
// Otherwise (the next frame, a torn one, zeros after an unclean stop) the
// caller decodes from the synced offset under today's rules.
func cleanAtSyncedOffset(f vfs.File, path string, h header, sl slot, expected uint64) (bool, error) {
	header := make([]byte, record.HeaderSize)
	n, err := f.ReadAt(header, sl.syncedOffset)
	if n < len(header) && err != nil && err != io.EOF {
		return false, fmt.Errorf("wal: reading %s at offset %d: %w", path, sl.syncedOffset, err)
	}
	if h.recycled {
		return n < 24 || binary.LittleEndian.Uint64(header[16:24]) != expected, nil
	}
	return n == len(header) && bytes.Equal(header, zeroHeader[:]) && sl.lease == sl.syncedSeq, nil
}

var zeroHeader [record.HeaderSize]byte

// recycledTail decides what ends the data of a recycled segment above its
// synced offset, at off, where the frame with seq expected was not found
// (why says what was found instead). The file's earlier life left frames
// there whose seqs are all below this segment's base (takeRecycled), so a
// frame header carrying the expected seq can only be this life's frame cut
// short by a crash: a torn tail of one frame. Anything else (a whole frame
// of the earlier life, part of one, zeros) is where the data ends cleanly.
// Either way nothing from off on is read as a frame.
func recycledTail(f vfs.File, path string, off, limit int64, expected uint64, why error) (*TornTail, error) {
	header := make([]byte, record.HeaderSize)
	n, err := f.ReadAt(header, off)
	if n < len(header) && err != nil && err != io.EOF {
		return nil, fmt.Errorf("wal: reading %s at offset %d: %w", path, off, err)
	}
	if n < 24 || binary.LittleEndian.Uint64(header[16:24]) != expected {
		return nil, nil
	}
	size := int64(record.HeaderSize) + int64(binary.LittleEndian.Uint32(header[0:4]))
	return &TornTail{File: path, Offset: off, Bytes: min(size, limit-off), Frames: 1,
		Reason: why.Error()}, nil
}

func isDecodeError(err error) bool {
	return errors.Is(err, record.ErrTruncated) || errors.Is(err, record.ErrChecksum) ||
		errors.Is(err, record.ErrInvalid) || errors.Is(err, record.ErrCleanEnd)
}

// tornAfter measures the region after the last good frame: it returns nil if
// it is all zeros (a clean end), else a TornTail counting the frames whose
// headers can still be walked. It reads only the data regions (nil: the
// file system cannot tell, read every byte): a segment's preallocated free
// space is not read.
func tornAfter(f vfs.File, path string, off, limit int64, reason string, data []dataRegion) (*TornTail, error) {
	if data == nil {
		data = []dataRegion{{off, limit}}
	}
	lastNonZero := int64(-1)
	buf := make([]byte, 64<<10)
	for _, region := range data {
		for pos, end := max(region.start, off), min(region.end, limit); pos < end; {
			n := min(int64(len(buf)), end-pos)
			m, err := f.ReadAt(buf[:n], pos)
			if int64(m) < n && err != nil && err != io.EOF {
				return nil, fmt.Errorf("wal: reading %s at offset %d: %w", path, pos, err)
			}
			if i := lastNonZeroByte(buf[:m]); i >= 0 {
				lastNonZero = pos + int64(i)
			}
			if m == 0 {
				break // past the end of the file
			}
			pos += int64(m)
		}
	}
	if lastNonZero < 0 {
		return nil, nil
	}
	t := &TornTail{File: path, Offset: off, Bytes: lastNonZero + 1 - off, Reason: reason}
	// Walk frame headers through the cut region to count what is lost.
	header := make([]byte, record.HeaderSize)
	for pos := off; pos <= lastNonZero; {
		t.Frames++
		if _, err := f.ReadAt(header, pos); err != nil && err != io.EOF {
			break
		}
		size, err := record.FrameSize(header, 0)
		if err != nil || pos+int64(size) > limit {
			break
		}
		pos += int64(size)
	}
	return t, nil
}

// dataRegion is a range [start, end) of a file that may hold non-zero bytes.
type dataRegion struct{ start, end int64 }

// maxDataRegions bounds dataRegions' answer: past it, read every byte.
const maxDataRegions = 64

// dataRegions returns the ranges of f in [from, to) that may hold non-zero
// bytes, as the file system tells (vfs.DataFinder: on Linux, written extents
// and pages in the page cache), or nil when it cannot. It must run before the
// segment's data is read: a read brings zero pages of the free space into the
// page cache (with the kernel's readahead, megabytes of them), and cached
// pages count as data.
func dataRegions(f vfs.File, from, to int64) []dataRegion {
	finder, ok := f.(vfs.DataFinder)
	if !ok {
		return nil
	}
	regions := []dataRegion{}
	for pos := from; pos < to; {
		start, end, ok, err := finder.NextData(pos)
		if err != nil || len(regions) == maxDataRegions {
			return nil
		}
		if !ok || start >= to {
			break
		}
		end = min(max(end, start+1), to)
		regions = append(regions, dataRegion{max(start, pos), end})
		pos = end
	}
	return regions
}

func lastNonZeroByte(b []byte) int {
	for len(b) > 0 {
		if i := len(b) - 1; b[i] != 0 {
			return i
		}
		// Trim whole zero words quickly.
		if len(b) >= 8 && bytes.Equal(b[len(b)-8:], zero8[:]) {
			b = b[:len(b)-8]
			continue
		}
		b = b[:len(b)-1]
	}
	return -1
}

var zero8 [8]byte
