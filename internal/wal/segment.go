package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

const (
	magic         = "ZEROLOSS"
	formatVersion = 1
	// dataStart is where the first frame of a segment begins.
	dataStart   = 4096
	slotSize    = 64
	slotAOffset = 512
	slotBOffset = 1024
	flagSealed  = 1
	segmentExt  = ".wal"
	tmpExt      = ".tmp"

	// flagGap, in a header's flags: the seqs between the previous segment's
	// last and this one's base held records in the log this one copies
	// (AppendFrames) that were deleted there before this log got them.
	flagGap = 1
	// flagRecycled, in a header's flags: the file held an earlier segment of
	// this log (RemoveBefore kept it as a spare), whose frames may still lie
	// past this one's data. They all have seqs below this segment's base.
	flagRecycled = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is the fixed part at the start of a segment.
type header struct {
	baseSeq     uint64
	prevLastSeq uint64
	created     int64
	gap         bool // flagGap
	recycled    bool // flagRecycled
}

func (h header) encode() []byte {
	b := make([]byte, slotAOffset)
	copy(b[0:8], magic)
	binary.LittleEndian.PutUint32(b[8:12], formatVersion)
	var flags uint32
	if h.gap {
		flags |= flagGap
	}
	if h.recycled {
		flags |= flagRecycled
	}
	binary.LittleEndian.PutUint32(b[12:16], flags)
	binary.LittleEndian.PutUint64(b[16:24], h.baseSeq)
	binary.LittleEndian.PutUint64(b[24:32], h.prevLastSeq)
	binary.LittleEndian.PutUint64(b[32:40], uint64(h.created))
	binary.LittleEndian.PutUint32(b[60:64], crc32.Checksum(b[0:60], castagnoli))
	return b
}

func decodeHeader(b []byte) (header, string) {
	if len(b) < 64 {
		return header{}, "segment shorter than its header"
	}
	if string(b[0:8]) != magic {
		return header{}, "bad magic"
	}
	if crc32.Checksum(b[0:60], castagnoli) != binary.LittleEndian.Uint32(b[60:64]) {
		return header{}, "header checksum mismatch"
	}
	if v := binary.LittleEndian.Uint32(b[8:12]); v != formatVersion {
		return header{}, fmt.Sprintf("unknown format version %d", v)
	}
	return header{
		baseSeq:     binary.LittleEndian.Uint64(b[16:24]),
		prevLastSeq: binary.LittleEndian.Uint64(b[24:32]),
		created:     int64(binary.LittleEndian.Uint64(b[32:40])),
		gap:         binary.LittleEndian.Uint32(b[12:16])&flagGap != 0,
		recycled:    binary.LittleEndian.Uint32(b[12:16])&flagRecycled != 0,
	}, ""
}

// slot records what is known to be durable in a segment.
type slot struct {
	generation   uint64
	syncedOffset int64
	syncedSeq    uint64 // last seq at syncedOffset
	lease        uint64
	sealed       bool
}

func (s slot) encode() []byte {
	b := make([]byte, slotSize)
	binary.LittleEndian.PutUint64(b[0:8], s.generation)
	binary.LittleEndian.PutUint64(b[8:16], uint64(s.syncedOffset))
	binary.LittleEndian.PutUint64(b[16:24], s.syncedSeq)
	binary.LittleEndian.PutUint64(b[24:32], s.lease)
	if s.sealed {
		binary.LittleEndian.PutUint32(b[32:36], flagSealed)
	}
	binary.LittleEndian.PutUint32(b[60:64], crc32.Checksum(b[0:60], castagnoli))
	return b
}

func decodeSlot(b []byte) (slot, bool) {
	if len(b) < slotSize || crc32.Checksum(b[0:60], castagnoli) != binary.LittleEndian.Uint32(b[60:64]) {
		return slot{}, false
	}
	s := slot{
		generation:   binary.LittleEndian.Uint64(b[0:8]),
		syncedOffset: int64(binary.LittleEndian.Uint64(b[8:16])),
		syncedSeq:    binary.LittleEndian.Uint64(b[16:24]),
		lease:        binary.LittleEndian.Uint64(b[24:32]),
		sealed:       binary.LittleEndian.Uint32(b[32:36])&flagSealed != 0,
	}
	if s.generation == 0 || s.syncedOffset < dataStart {
		return slot{}, false
	}
	return s, true
}

// slotOffset returns where a slot of the given generation is written: odd
// generations in slot A, even in slot B.
func slotOffset(generation uint64) int64 {
	if generation%2 == 1 {
		return slotAOffset
	}
	return slotBOffset
}

// bestSlot returns the valid slot with the highest generation.
func bestSlot(page []byte) (slot, bool) {
	a, okA := decodeSlot(page[slotAOffset : slotAOffset+slotSize])
	b, okB := decodeSlot(page[slotBOffset : slotBOffset+slotSize])
	switch {
	case okA && okB:
		if b.generation > a.generation {
			return b, true
		}
		return a, true
	case okA:
		return a, true
	case okB:
		return b, true
	}
	return slot{}, false
}

func segmentName(baseSeq uint64) string {
	return fmt.Sprintf("%020d%s", baseSeq, segmentExt)
}

// lockName is the file a Log holds flock'ed while open.
const lockName = "LOCK"

// isTempName says whether name is a temporary file the log creates: a
// segment being created (its final name plus ".tmp") or a spare
// ("spare-N.tmp"). Open removes these, and only these: any other *.tmp is
// not the log's.
func isTempName(name string) bool {
	base, ok := strings.CutSuffix(name, tmpExt)
	if !ok {
		return false
	}
	if _, ok := parseSegmentName(base); ok {
		return true
	}
	n, ok := strings.CutPrefix(base, "spare-")
	if !ok || n == "" {
		return false
	}
	_, err := strconv.ParseUint(n, 10, 64)
	return err == nil
}

// OwnsFile says whether name (a file name, not a path) is one the log creates
// in its directory: LOCK, a segment, or one of its temporary files.
func OwnsFile(name string) bool {
	if name == lockName || isTempName(name) {
		return true
	}
	_, ok := parseSegmentName(name)
	return ok
}

// parseSegmentName returns the base seq of a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	if !strings.HasSuffix(name, segmentExt) || len(name) != 20+len(segmentExt) {
		return 0, false
	}
	base, err := strconv.ParseUint(strings.TrimSuffix(name, segmentExt), 10, 64)
	return base, err == nil
}

// segment is one file of the log. Fields other than file are immutable once
// the segment is sealed; for the active segment the Log's mutex guards them.
type segment struct {
	path        string
	baseSeq     uint64
	prevLastSeq uint64
	file        vfs.File // read-write for the active segment; nil once closed
	slot        slot     // last slot written or read
	end         int64    // end of the last good frame
	lastSeq     uint64   // seq of the last frame (prevLastSeq when empty)
	frames      int      // frames found when the segment was scanned
	sealed      bool
	gap         bool // records before it are missing (flagGap)
	recycled    bool // the file held an earlier segment (flagRecycled)
	// readers counts the Readers that picked this segment and have not
	// closed it yet (under the Log's mutex): RemoveBefore does not recycle a
	// file a reader may still read, since its new life would overwrite what
	// the reader takes for this segment's frames.
	readers int
}

func (s *segment) name() string { return filepath.Base(s.path) }

// writeSlot writes the next generation of the slot and remembers it. The
// caller syncs.
func (s *segment) writeSlot(next slot) error {
	next.generation = s.slot.generation + 1
	if _, err := s.file.WriteAt(next.encode(), slotOffset(next.generation)); err != nil {
		return err
	}
	s.slot = next
	return nil
}
