package wal

// OldestSealed returns the last seq of the oldest segment that RemoveBefore
// could delete (sealed, not the active one), and false if there is none.
func (l *Log) OldestSealed() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.segments) < 2 || !l.segments[0].sealed || l.segments[0] == l.active {
		return 0, false
	}
	return l.segments[0].lastSeq, true
}

// Trimmed reports whether segments at the start of the log were deleted
// (RemoveBefore): the oldest segment left chains to an earlier one.
func (l *Log) Trimmed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.segments) > 0 && l.segments[0].prevLastSeq > 0
}

// FirstSeq returns the base seq of the oldest segment left, 0 if there is
// none: every seq below it was deleted (RemoveBefore) or never used.
func (l *Log) FirstSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.segments) == 0 {
		return 0
	}
	return l.segments[0].baseSeq
}

// SegmentSpan is a segment as retention sees it: its last seq and the bytes
// of its frames.
type SegmentSpan struct {
	LastSeq uint64
	Bytes   int64
}

// Removable returns the segments RemoveBefore could delete (sealed, not the
// active one), oldest first.
func (l *Log) Removable() []SegmentSpan {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []SegmentSpan
	for _, s := range l.segments {
		if !s.sealed || s == l.active {
			break
		}
		out = append(out, SegmentSpan{LastSeq: s.lastSeq, Bytes: s.end - dataStart})
	}
	if len(out) == len(l.segments) && len(out) > 0 {
		out = out[:len(out)-1] // the last segment is never deleted (OldestSealed)
	}
	return out
}
