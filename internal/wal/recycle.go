package wal

import (
	"fmt"
	"path/filepath"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// recycledSpare is a segment RemoveBefore deleted from the log and kept, under
// a spare-N.tmp name, to become a later segment (Options.Recycle).
type recycledSpare struct {
	path    string
	end     int64  // end of its frames: the file is cut there before reuse
	lastSeq uint64 // every frame it may still hold has a seq at or below it
}

// spareName returns a new name for a spare file (spare-N.tmp): prepared
// (Options.Prepare) and recycled spares share the numbering. Open removes
// every such file.
func (l *Log) spareName() string {
	return filepath.Join(l.dir, fmt.Sprintf("spare-%d%s", l.spareSeq.Add(1), tmpExt))
}

// RemoveBefore deletes sealed segments whose every seq is below seq (whole
// segments only; the active segment is never removed) and syncs the
// directory. It returns how many segments it removed. Up to Options.Recycle
// of them are not unlinked but renamed to spare names, to become later
// segments (see recycle.go); a segment a Reader still has open is never kept.
func (l *Log) RemoveBefore(seq uint64) (int, error) {
	l.mu.Lock()
	var doomed []*segment
	var reusable []bool
	for len(l.segments) > 1 && l.segments[0].sealed && l.segments[0].lastSeq < seq && l.segments[0] != l.active {
		s := l.segments[0]
		doomed = append(doomed, s)
		// A reader that picked s reads it by its own handle, and would read
		// the file's next life as frames of s: unlink it instead.
		reusable = append(reusable, s.readers == 0 && s.file == nil && s.end <= l.opts.SegmentSize)
		l.segments = l.segments[1:]
	}
	l.mu.Unlock()
	var kept []recycledSpare
	for i, s := range doomed {
		if reusable[i] && l.recycleRoom(len(kept)) {
			spare := recycledSpare{path: l.spareName(), end: s.end, lastSeq: s.lastSeq}
			if err := l.fs.Rename(s.path, spare.path); err == nil {
				forgetFailedSync(l.fs, s.path)
				kept = append(kept, spare)
				continue
			}
			// Could not rename: delete it as if recycling were off.
		}
		if err := l.fs.Remove(s.path); err != nil {
			l.dropSpares(kept)
			return 0, err
		}
		forgetFailedSync(l.fs, s.path)
	}
	if len(doomed) > 0 {
		if err := l.fs.SyncDir(l.dir); err != nil {
			l.dropSpares(kept)
			return 0, err
		}
	}
	l.spareMu.Lock()
	for _, spare := range kept {
		if len(l.recycled) < l.opts.Recycle && !l.sparesClosed {
			l.recycled = append(l.recycled, spare)
		} else {
			l.fs.Remove(spare.path) // a temporary name: Open removes it if this fails
		}
	}
	l.spareMu.Unlock()
	return len(doomed), nil
}

// recycleRoom says whether RemoveBefore may keep one more spare, having kept
// pending so far in this call.
func (l *Log) recycleRoom(pending int) bool {
	l.spareMu.Lock()
	defer l.spareMu.Unlock()
	return len(l.recycled)+pending < l.opts.Recycle
}

// dropSpares removes spare files that will not be used.
func (l *Log) dropSpares(spares []recycledSpare) {
	for _, spare := range spares {
		l.fs.Remove(spare.path)
	}
}

// takeRecycled turns a recycled spare into the segment h describes: the file
// is cut at the end of its old frames (so that nothing past them, such as a
// tail cut by an earlier TruncateAfter whose truncation a crash undid,
// survives), preallocated again to the segment size, given h with the
// recycled flag and a first slot, and synced. The caller renames it into
// place. A spare that may hold a frame with a seq at or above h's base (its
// seqs were handed out again after a TruncateAfter) is deleted instead: every
// frame left in a recycled file must have a seq below its base, which is what
// lets recovery tell them apart (scanSegment). It returns false when there is
// no usable spare.
func (l *Log) takeRecycled(h *header, lease uint64) (vfs.File, string, bool) {
	for {
		l.spareMu.Lock()
		n := len(l.recycled)
		if n == 0 {
			l.spareMu.Unlock()
			return nil, "", false
		}
		spare := l.recycled[n-1]
		l.recycled = l.recycled[:n-1]
		l.spareMu.Unlock()
		if spare.lastSeq >= h.baseSeq {
			l.fs.Remove(spare.path)
			continue
		}
		recycled := *h
		recycled.recycled = true
		f, err := l.reuse(spare, recycled, lease)
		if err != nil {
			l.logger.Warn("wal: could not reuse a deleted segment; creating a new one", "file", spare.path, "error", err)
			l.fs.Remove(spare.path)
			continue
		}
		*h = recycled
		return f, spare.path, true
	}
}

// reuse prepares a recycled spare's file for its new life (takeRecycled).
func (l *Log) reuse(spare recycledSpare, h header, lease uint64) (vfs.File, error) {
	f, err := l.fs.OpenRW(spare.path)
	if err != nil {
		return nil, err
	}
	size, err := f.Size()
	if err == nil && size > spare.end {
		err = f.Truncate(spare.end)
	}
	if err == nil {
		err = f.Allocate(l.opts.SegmentSize)
	}
	if err == nil {
		err = l.writeHeader(f, h, lease)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// removeRecycled deletes the spares kept (Close).
func (l *Log) removeRecycled() {
	l.spareMu.Lock()
	spares := l.recycled
	l.recycled, l.sparesClosed = nil, true
	l.spareMu.Unlock()
	l.dropSpares(spares)
}

// recycledSpares returns how many recycled spares are kept.
func (l *Log) recycledSpares() int {
	l.spareMu.Lock()
	defer l.spareMu.Unlock()
	return len(l.recycled)
}
