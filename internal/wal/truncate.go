package wal

import (
	"errors"
	"fmt"
	"io"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// TruncateAfter cuts the log back so that its last frame is the one with seq
// (or, if no frame at or below seq is left, so that it is empty), and returns
// how many frames it cut. A follower uses it to drop a tail that its new
// leader does not have. Whole segments above seq are removed newest first and
// the directory is synced; the segment holding seq is sealed right after it
// (its frames synced, a sealed slot, synced, then the file cut to that size
// and synced: frames appended and not synced are never claimed before they
// are durable), so a crash at any point leaves a log that opens at a prefix
// of the old one, at or above seq. The next append starts a new segment. It
// must not run concurrently with appends or readers.
func (l *Log) TruncateAfter(seq uint64) (cut int, err error) {
	if err := l.usable(); err != nil {
		return 0, err
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	segs := l.segments
	last := l.lastSeq
	l.mu.Unlock()
	if seq >= last {
		return 0, nil
	}
	keep := len(segs)
	for keep > 0 && segs[keep-1].baseSeq > seq {
		keep--
	}
	// Count, then remove, the whole segments above seq, newest first.
	for i := len(segs) - 1; i >= keep; i-- {
		s := segs[i]
		n, _, err := l.framesAfter(s, 0)
		if err != nil {
			return cut, err
		}
		if s.file != nil {
			s.file.Close()
			s.file = nil
		}
		if err := l.fs.Remove(s.path); err != nil {
			return cut, l.poison(fmt.Errorf("wal: truncate: remove %s: %w", s.path, err))
		}
		forgetFailedSync(l.fs, s.path)
		cut += n
	}
	if keep < len(segs) {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return cut, l.poison(fmt.Errorf("wal: truncate: sync directory %s: %w", l.dir, err))
		}
	}
	newLast := seq
	if keep == 0 {
		newLast = 0
	} else if s := segs[keep-1]; s.lastSeq > seq {
		n, off, err := l.framesAfter(s, seq)
		if err != nil {
			return cut, err
		}
		if s.file == nil {
			if s.file, err = l.fs.OpenRW(s.path); err != nil {
				return cut, err
			}
		}
		l.mu.Lock()
		s.end, s.lastSeq = off, seq
		l.mu.Unlock()
		// The frames the sealed slot claims may have been appended and not
		// synced yet (a follower's link broke between the two): sync them
		// first, so that the slot never reaches the disk before them. The
		// sealed slot must then be durable before the file shrinks below the
		// synced offset the old slot records.
		durable := s.slot.syncedOffset // of the old slot
		if s == l.active {
			durable = l.syncedOffset
		}
		err = l.timedSync(s.file)
		if err == nil {
			durable = off
			err = s.writeSlot(slot{syncedOffset: off, syncedSeq: seq, lease: l.lease.Load(), sealed: true})
		}
		if err == nil {
			err = l.timedSync(s.file)
		}
		if err == nil {
			err = s.file.Truncate(off)
		}
		if err == nil {
			err = l.timedSync(s.file)
		}
		if err != nil {
			rememberFailedSync(l.fs, s.path, min(durable, off))
			return cut, l.poison(fmt.Errorf("wal: truncate: seal %s at offset %d: %w", s.path, off, err))
		}
		l.mu.Lock()
		s.sealed = true
		l.mu.Unlock()
		s.file.Close()
		s.file = nil
		cut += n
	} else {
		newLast = s.lastSeq
		if s.file != nil && s != l.active {
			s.file.Close()
			s.file = nil
		}
	}
	l.mu.Lock()
	l.segments = segs[:keep]
	if l.active != nil && (keep == 0 || l.active != segs[keep-1] || segs[keep-1].sealed) {
		l.active = nil
	}
	l.lastSeq, l.syncedSeq = newLast, newLast
	if l.active == nil {
		l.written, l.syncedOffset = 0, 0
	}
	l.mu.Unlock()
	l.nextSeq = max(newLast, l.lease.Load()) + 1
	return cut, nil
}

// framesAfter reads segment s and returns how many of its frames have a seq
// above seq, and the offset where the first of them starts.
func (l *Log) framesAfter(s *segment, seq uint64) (n int, off int64, err error) {
	f := s.file
	if f == nil {
		if f, err = l.fs.Open(s.path); err != nil {
			return 0, 0, err
		}
		defer f.Close()
	}
	rd := record.NewReader(f, dataStart, s.end, 0)
	off = dataStart
	for {
		at := rd.Offset()
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return n, off, nil
		}
		if err != nil {
			return n, off, fmt.Errorf("wal: truncate: reading %s at offset %d: %w", s.path, at, err)
		}
		if rec.Seq <= seq {
			off = rd.Offset()
		} else {
			n++
		}
	}
}

// SkipTo makes next the seq of the next frame appended, by starting a new
// segment based at next: the skipped seqs are never used, and the gap stays
// after a crash (an empty segment's base counts as taken). next must be above
// every seq used so far.
func (l *Log) SkipTo(next uint64) error {
	if err := l.usable(); err != nil {
		return err
	}
	if next == l.nextSeq {
		return nil
	}
	if next <= l.floorSeq() || next < l.nextSeq {
		return fmt.Errorf("wal: skip to seq %d: not above the next seq %d", next, l.nextSeq)
	}
	l.nextSeq = next
	return l.roll()
}

// NextSeq returns the seq the next Append gives its first frame. Like Append,
// it belongs to the appending goroutine.
func (l *Log) NextSeq() uint64 { return l.nextSeq }

// SetEpoch sets the epoch that Append stamps on the frames it writes (with
// their seqs). Like Append, it belongs to the appending goroutine.
func (l *Log) SetEpoch(epoch uint32) { l.epoch = epoch }
