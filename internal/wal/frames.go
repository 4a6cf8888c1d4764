package wal

import (
	"errors"
	"fmt"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// ErrOutOfOrder is returned by AppendFrames for a frame whose seq is not
// above the last seq in the log (or below the previous frame's).
var ErrOutOfOrder = errors.New("frame seq out of order")

// AppendFrames appends buf, a run of whole frames whose seqs are already set
// (a copy of another log, frame for frame), keeping their seqs and bytes. Each
// frame's checksum is verified and its seq must be above the log's last seq
// and the previous frame's; where the seqs jump (the other log skipped seqs,
// e.g. after its unclean restart), a new segment starts at the new seq, so
// that seqs within a segment stay consecutive from its base. Nothing is
// written if a frame is invalid or out of order. A jump from below the seq
// given to LostBelow crosses records the other log deleted before this one
// got them: the new segment is flagged as following a gap (Gaps). Like
// Append it does not sync and does not keep buf. It returns how many frames
// were appended: all of them unless err != nil.
func (l *Log) AppendFrames(buf []byte) (n int, err error) {
	if err := l.usable(); err != nil {
		return 0, err
	}
	if len(buf) == 0 {
		return 0, nil
	}
	// Check everything before writing anything.
	var sizes []int
	var seqs []uint64
	prev := l.floorSeq()
	for off := 0; off < len(buf); {
		rec, size, err := record.Decode(buf[off:], l.MaxFrameSize())
		if err != nil {
			return 0, fmt.Errorf("wal: append frames: bad frame at byte %d of %d: %w", off, len(buf), err)
		}
		if rec.Seq <= prev {
			return 0, fmt.Errorf("wal: append frames: seq %d at byte %d is not above %d: %w", rec.Seq, off, prev, ErrOutOfOrder)
		}
		sizes = append(sizes, size)
		seqs = append(seqs, rec.Seq)
		prev = rec.Seq
		off += size
	}
	// Write runs of consecutive seqs.
	for start, off := 0, 0; start < len(sizes); {
		end, bytes := start+1, sizes[start]
		for end < len(sizes) && seqs[end] == seqs[end-1]+1 {
			bytes += sizes[end]
			end++
		}
		first := seqs[start]
		l.mu.Lock()
		active, lastFrame, noSegments := l.active, l.lastSeq, len(l.segments) == 0
		l.mu.Unlock()
		if active != nil && first != l.nextSeq && active.baseSeq == first && lastFrame < first {
			// The active segment starts at first and holds no frame: the
			// copier resumes after a crash that followed a jump (recovery
			// moved nextSeq above the lease). Fill it: it may carry the gap
			// flag, and rolling would replace it under the same name.
			l.nextSeq = first
		}
		if first != l.nextSeq || active == nil {
			// A jump (or no active segment): start a segment at first, after
			// a gap if the other log deleted records this one lacks.
			l.rollGap = first > lastFrame+1 && lastFrame+1 < l.lostBelow
			if noSegments && first > 1 {
				// The copy starts past the other log's deleted segments:
				// chain to them as a trimmed log does.
				l.mu.Lock()
				l.lastSeq = first - 1
				l.mu.Unlock()
			}
			l.nextSeq = first
			err := l.roll()
			l.rollGap = false
			if err != nil {
				return n, err
			}
		}
		if last := seqs[end-1]; last > l.lease.Load() {
			if err := l.extendLease(last + l.opts.LeaseChunk); err != nil {
				return n, err
			}
		}
		m, err := l.write(buf[off:off+bytes], sizes[start:end], false)
		n += m
		if err != nil {
			return n, err
		}
		start, off = end, off+bytes
	}
	return n, nil
}

// floorSeq is the highest seq taken in the log: its last frame's, or just
// below the base of an empty last segment.
func (l *Log) floorSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	floor := l.lastSeq
	if n := len(l.segments); n > 0 && l.segments[n-1].baseSeq-1 > floor {
		floor = l.segments[n-1].baseSeq - 1
	}
	return floor
}

// LostBelow tells the log that the log it copies (AppendFrames) no longer
// holds its records below seq (its retention deleted them): a later jump
// from below seq to a frame above it marks the new segment as following a
// gap. The copier calls it before appending the frames past the jump.
func (l *Log) LostBelow(seq uint64) {
	l.lostBelow = max(l.lostBelow, seq)
}

// Gaps returns the base seqs of the segments that follow a gap (records the
// copied log deleted before this one got them), oldest first. The first
// segment is among them when the copy started past deleted records.
func (l *Log) Gaps() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []uint64
	for _, s := range l.segments {
		if s.gap {
			out = append(out, s.baseSeq)
		}
	}
	return out
}

// Lost reports whether records at seqs in [from, to) that this log does not
// hold were ever written: deleted here by retention (below the oldest
// segment), or missing from the log this one copies (a segment that follows
// a gap starts in (from, to]). A jump over seqs that were never used (leased
// seqs skipped after an unclean restart) is not lost.
func (l *Log) Lost(from, to uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.segments) == 0 {
		return false
	}
	if first := l.segments[0]; from < first.baseSeq && (first.prevLastSeq > 0 || first.gap) {
		return true
	}
	for _, s := range l.segments {
		if s.gap && s.baseSeq > from && s.baseSeq <= to {
			return true
		}
	}
	return false
}
