package wal

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// Reader iterates the durable frames of a Log in seq order. It is not safe for
// concurrent use; each goroutine uses its own. It never returns a frame above
// the log's synced seq, so it cannot hand out what a crash could take back.
// Segments RemoveBefore deletes before the reader reaches them are skipped
// without an error: it goes on at the oldest segment left.
type Reader struct {
	log  *Log
	next uint64 // lowest seq still wanted

	seg  *segment
	file vfs.File
	rd   *record.Reader

	uncapped bool // ignores CapReaders (NewUncappedReader)

	last int64 // offset of the frame Next returned last, in its segment

	// A Seek's hint: the frame with seq hintSeq starts at hintOff in its
	// segment. It is checked, never trusted: a frame that is not there
	// sends the reader back to the segment's start.
	hintSeq uint64
	hintOff int64

	// expect is the seq the next frame read in seg must carry, 0 when not
	// known: frames follow each other from the segment's base seq. Open
	// does not read a sealed segment's frames (scanSegment), so the reader
	// checks what the scan would have: a frame out of place (a valid frame
	// of an earlier life of a recycled file, say) is ErrCorrupt, not
	// skipped, and a sealed segment must end at the seq its seal records.
	expect uint64
}

// NewReader returns a Reader positioned at the first durable frame with seq >=
// from (the oldest retained frame if from is older).
func (l *Log) NewReader(from uint64) *Reader {
	return &Reader{log: l, next: from}
}

// NewUncappedReader is NewReader for a reader that CapReaders does not limit
// (it still returns only synced frames): the replication sender's.
func (l *Log) NewUncappedReader(from uint64) *Reader {
	return &Reader{log: l, next: from, uncapped: true}
}

// CapReaders limits what readers (but uncapped ones) return to frames with
// seqs up to seq, on top of the synced limit; from the first call on, the cap
// only moves up. The queue uses it to keep consumers below what a follower
// acknowledged (ReplicateSync).
func (l *Log) CapReaders(seq uint64) {
	for {
		cur := l.readCap.Load()
		if l.capped.Load() && seq <= cur {
			return
		}
		if l.readCap.CompareAndSwap(cur, seq) {
			l.capped.Store(true)
			return
		}
	}
}

// Offset returns the offset, in its segment, of the frame Next returned last.
func (r *Reader) Offset() int64 { return r.last }

// Seek positions the reader at seq: Next returns the first durable frame with
// a seq >= seq, as a new reader from seq would. The frame with seq at (at <=
// seq, in the segment holding seq) starts at off, as Log.Offsets or Offset
// gave it: the reader starts decoding there instead of at the segment's
// start. A wrong hint costs a scan of the segment, never a wrong frame: the
// frame at off must decode and carry seq at.
func (r *Reader) Seek(seq, at uint64, off int64) {
	r.next, r.hintSeq, r.hintOff = seq, at, off
	if r.rd != nil && !r.log.holds(r.seg, at) {
		r.closeSegment()
	}
	if r.rd != nil {
		r.rd.SetOffset(off)
		r.expect = at // checked with the hint
	}
}

// Next returns the next durable frame. Its Payload is valid until the next
// call. It returns io.EOF when it has caught up with the synced end of the
// log; calling it again later returns frames synced since. Damage in durable
// data returns ErrCorrupt.
func (r *Reader) Next() (record.Record, error) {
	for {
		if r.rd == nil {
			ok, err := r.openSegment()
			if err != nil || !ok {
				if err == nil {
					err = io.EOF
				}
				return record.Record{}, err
			}
		}
		off := r.rd.Offset()
		rec, err := r.rd.Next()
		if err == nil {
			r.log.framesRead.Add(1)
		}
		if r.hintSeq != 0 && err != io.EOF {
			// (At io.EOF the frame is not durable yet: the hint waits.)
			hinted := r.hintSeq
			r.hintSeq = 0
			if off == r.hintOff && (err != nil || rec.Seq != hinted) {
				// Not the frame the hint named: read the segment from
				// its start instead.
				r.log.seekMisses.Add(1)
				limit, _, _ := r.log.segmentLimit(r.seg)
				r.rd = record.NewReader(r.file, dataStart, limit, 0)
				r.expect = r.seg.baseSeq
				continue
			}
		}
		if err == nil {
			if r.expect != 0 && rec.Seq != r.expect {
				return record.Record{}, corrupt(r.seg.path, off, "seq %d where %d was expected in durable data", rec.Seq, r.expect)
			}
			if rec.Seq < r.next {
				r.expect = rec.Seq + 1
				continue
			}
			if !r.uncapped && r.log.capped.Load() && rec.Seq > r.log.readCap.Load() {
				// Above the cap: step back to this frame for the next call.
				limit, _, _ := r.log.segmentLimit(r.seg)
				r.rd = record.NewReader(r.file, off, limit, 0)
				return record.Record{}, io.EOF
			}
			r.next = rec.Seq + 1
			r.expect = rec.Seq + 1
			r.last = off
			return rec, nil
		}
		if err != io.EOF {
			return record.Record{}, r.damage(off, err)
		}
		// End of what this segment had durable when we looked: see whether
		// more was synced, or whether the segment is sealed and we move on.
		limit, sealed, hasNext := r.log.segmentLimit(r.seg)
		if limit > off {
			r.rd.SetLimit(limit)
			continue
		}
		if !sealed || !hasNext {
			return record.Record{}, io.EOF
		}
		if err := r.checkEnd(off); err != nil {
			return record.Record{}, err
		}
		// Read to its end: never pick it again (an empty sealed segment
		// would otherwise be chosen for r.next over and over).
		r.next = max(r.next, r.seg.lastSeq+1)
		r.closeSegment()
	}
}

func (r *Reader) damage(off int64, err error) error {
	if errors.Is(err, record.ErrChecksum) || errors.Is(err, record.ErrInvalid) ||
		errors.Is(err, record.ErrTruncated) || errors.Is(err, record.ErrCleanEnd) {
		return corrupt(r.seg.path, off, "%v in durable data", err)
	}
	return fmt.Errorf("wal: reading %s at offset %d: %w", r.seg.path, off, err)
}

// checkEnd checks, at off, the end of the sealed segment r.seg, that the last
// frame read carries the last seq its seal records.
func (r *Reader) checkEnd(off int64) error {
	if r.expect == 0 || r.hintSeq != 0 {
		return nil // not read from its start or from a checked hint
	}
	got := r.expect - 1
	if r.expect == r.seg.baseSeq {
		got = r.seg.prevLastSeq // no frame
	}
	if got != r.seg.lastSeq {
		return corrupt(r.seg.path, off, "durable data ends at seq %d, the seal records %d", got, r.seg.lastSeq)
	}
	return nil
}

// openSegment opens the segment holding r.next, or the first one after it.
func (r *Reader) openSegment() (bool, error) {
	l := r.log
	for {
		l.mu.Lock()
		var seg *segment
		for i, s := range l.segments {
			if s.lastSeq >= r.next || i == len(l.segments)-1 {
				seg = s
				break
			}
		}
		closed := l.closed
		if seg != nil && !closed {
			seg.readers++ // RemoveBefore must not recycle it under us
		}
		l.mu.Unlock()
		if closed {
			return false, ErrClosed
		}
		if seg == nil {
			return false, nil
		}
		f, err := l.fs.Open(seg.path)
		if err != nil {
			l.unread(seg)
			if errors.Is(err, fs.ErrNotExist) && l.removed(seg) {
				continue // retention deleted it since: the next one
			}
			return false, err
		}
		// Close may have run while the file was being opened (l.mu is not
		// held across the open): a reader of a closed log must hold no file.
		l.mu.Lock()
		closed = l.closed
		l.mu.Unlock()
		if closed {
			f.Close()
			l.unread(seg)
			return false, ErrClosed
		}
		limit, _, _ := l.segmentLimit(seg)
		r.seg, r.file = seg, f
		start := int64(dataStart)
		if r.hintSeq != 0 && r.hintSeq <= r.next && seg.baseSeq <= r.hintSeq && r.hintOff >= dataStart && r.hintOff < limit {
			start = r.hintOff
		} else {
			r.hintSeq = 0
		}
		r.expect = seg.baseSeq
		if start != dataStart {
			r.expect = r.hintSeq
		}
		r.rd = record.NewReader(f, start, limit, 0)
		return true, nil
	}
}

// holds says whether seq belongs in seg: seg is the last segment at or
// below it.
func (l *Log) holds(seg *segment, seq uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq < seg.baseSeq {
		return false
	}
	i := slices.Index(l.segments, seg)
	return i >= 0 && (i == len(l.segments)-1 || l.segments[i+1].baseSeq > seq)
}

// removed says whether seg is no longer one of the log's segments
// (RemoveBefore takes it out of the list before deleting its file).
func (l *Log) removed(seg *segment) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !slices.Contains(l.segments, seg)
}

// segmentLimit returns how far seg may be read (its durable end), whether it
// is sealed, and whether a segment follows it.
func (l *Log) segmentLimit(seg *segment) (limit int64, sealed, hasNext bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	hasNext = len(l.segments) > 0 && l.segments[len(l.segments)-1] != seg
	if seg == l.active {
		return l.syncedOffset, false, hasNext
	}
	return seg.end, seg.sealed, hasNext
}

func (r *Reader) closeSegment() {
	if r.file != nil {
		r.file.Close()
	}
	if r.seg != nil {
		r.log.unread(r.seg)
	}
	r.seg, r.file, r.rd = nil, nil, nil
}

// unread undoes the count of a reader that picked seg (openSegment).
func (l *Log) unread(seg *segment) {
	l.mu.Lock()
	seg.readers--
	l.mu.Unlock()
}

// Close releases the reader's file handle.
func (r *Reader) Close() error {
	r.closeSegment()
	return nil
}
