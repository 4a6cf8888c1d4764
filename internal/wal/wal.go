package wal

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// Errors returned by the log. The root package re-exports them.
var (
	ErrCorrupt  = errors.New("corrupt log")
	ErrLocked   = vfs.ErrLocked
	ErrDiskFull = errors.New("disk full")
	ErrClosed   = errors.New("log closed")
	ErrPoisoned = errors.New("log poisoned by an earlier write or sync failure")
	ErrTooLarge = errors.New("frame larger than a segment")
)

// PoisonError is returned by every write after the first failed write or
// sync. It matches both ErrPoisoned and the original error with errors.Is.
type PoisonError struct{ Cause error }

func (e *PoisonError) Error() string   { return fmt.Sprintf("wal: poisoned: %v", e.Cause) }
func (e *PoisonError) Unwrap() []error { return []error{ErrPoisoned, e.Cause} }

// Options configure a Log.
type Options struct {
	FS          vfs.FS       // default vfs.OS
	SegmentSize int64        // bytes per segment file, header included; default 64 MiB
	Logger      *slog.Logger // default: discard
	// LeaseChunk is how many seqs each durable lease extension covers; it
	// bounds the gap in seqs after an unclean stop. Default 65536.
	LeaseChunk uint64
	// SlotInterval and SlotBytes throttle the sync slot: a sync writes it
	// only if SlotInterval has passed since the last one, or the synced
	// offset has moved SlotBytes past what it records (leases and seals
	// always write it). Zero for both: every sync writes it. Damage to data
	// synced since the last slot cannot be told from a torn tail, so these
	// bound that window.
	SlotInterval time.Duration
	SlotBytes    int64
	// Prepare makes a background goroutine create the next segment ahead
	// of time, once the active one is a sixteenth full, and write zeros over all of
	// it. A roll then only writes a header and renames, and appends land on
	// blocks that are already written, so an fdatasync need not also commit
	// the allocation of fresh (unwritten) extents to the file system's
	// journal. It costs writing each segment twice. A roll that can reuse
	// a recycled segment (Recycle) does not ask for one.
	Prepare bool
	// Recycle is how many segments RemoveBefore keeps, renamed to spare
	// names, to become later segments instead of creating and
	// preallocating new files: their blocks are already written, like a
	// prepared spare's, at no cost. The header of a reused file says so,
	// and recovery never reads what is left of its earlier life (see the
	// package comment). 0: none, every deleted segment is unlinked. Spares
	// take disk space until used, and are removed by Close and Open.
	Recycle int

	// TrustSeals: Open reads no frame below a segment's synced offset:
	// the sealed segments' slots give their ends and last seqs, and the
	// last segment's slot where its durable frames end and their last seq;
	// Open decodes the last segment from there on only (after a clean
	// Close, one frame header). Damage among the frames not read is
	// ErrCorrupt when a Reader reaches it (Scan still reads everything).
	// For a caller that reads the log after Open anyway (the queue's
	// replay), or can wait for a read to find damage. Without it, Open
	// reads every frame and refuses a damaged log.
	TrustSeals bool

	// Claim, if set, is called once the directory is locked and before
	// recovery removes or changes anything in it; an error ends Open with
	// that error and the directory untouched (but for LOCK). The queue
	// checks and writes the directory's identity there.
	Claim func() error

	onPrepared func()           // tests: called when a spare is ready
	Now        func() time.Time // default time.Now
}

const (
	DefaultSegmentSize = 64 << 20
	MinSegmentSize     = dataStart + 2*record.HeaderSize
	defaultLeaseChunk  = 1 << 16
)

// Recovery says what Open found and did.
type Recovery struct {
	Segments int
	FirstSeq uint64 // first seq in the log, 0 if empty
	LastSeq  uint64 // last seq recovered
	NextSeq  uint64 // seq the next Append gets
	Torn     *TornTail
	Unclean  bool // the log was not closed cleanly
}

// Stats are counters since Open.
type Stats struct {
	Frames        uint64 // frames appended
	Bytes         uint64 // bytes appended
	Syncs         uint64 // data syncs (fdatasync) on segments
	SyncNanos     uint64 // total time spent in them
	Segments      int
	DiskBytes     int64 // bytes the segment files take, preallocation and recycled spares included
	SegmentsRolls uint64
	WarmRolls     uint64 // rolls that used a prepared, zero-filled segment
	RecycledRolls uint64 // rolls that reused a deleted segment's file (Options.Recycle)
	// SyncLatency counts the data syncs by duration: SyncLatency[i] those
	// that took at most SyncBounds[i] (and more than the bound before), the
	// last entry those above every bound.
	SyncLatency [SyncBuckets]uint64
}

// Log is an append-only log of frames in segment files.
//
// Concurrency: Append is called by one goroutine at a time (the queue's
// writer). Sync may run concurrently with Append from another goroutine.
// Readers, LastSeq, SyncedSeq and Stats are safe from any goroutine.
type Log struct {
	fs     vfs.FS
	dir    string
	opts   Options
	logger *slog.Logger
	lock   io.Closer

	// syncMu serializes everything that writes a slot or syncs: Sync, the
	// lease extension, rolling and Close.
	syncMu sync.Mutex
	lease  atomic.Uint64 // durable seq lease; raised under syncMu

	mu           sync.Mutex // guards the fields below
	segments     []*segment // oldest first
	active       *segment   // last segment while it takes appends; nil when sealed
	written      int64      // end of appended frames in active
	lastSeq      uint64     // last seq appended
	syncedOffset int64      // durable end in active
	syncedSeq    uint64     // last seq durable
	err          error      // poison
	closed       bool

	// Owned by the appending goroutine.
	nextSeq   uint64
	lostBelow uint64 // the copied log lost its records below this seq (LostBelow)
	rollGap   bool   // the next roll starts a segment after a gap (flagGap)
	epoch     uint32 // stamped on every frame Append writes (SetEpoch)
	sizes     []int
	offsets   []int64 // where the last Append put each frame (Offsets)

	// Slot throttling (under syncMu): when the last slot was written.
	slotWritten time.Time

	// Segment preparation (Options.Prepare) and recycling (Options.Recycle).
	spareMu      sync.Mutex
	recycled     []recycledSpare // under spareMu, newest last
	sparesClosed bool            // under spareMu: Close dropped the spares
	spareSeq     atomic.Uint64   // numbers spare-N.tmp names
	spare        vfs.File        // a zero-filled file ready to become the next segment
	sparePath    string
	spareSize    int64
	prepWanted   chan struct{} // asks the preparer for a spare
	prepQuit     chan struct{}
	prepDone     chan struct{}
	prepRunning  bool // the writer asked and no spare was taken since

	frames, bytes, syncs, syncNanos, rolls, warmRolls, recycledRolls atomic.Uint64
	seekMisses                                                       atomic.Uint64 // Reader.Seek hints that named no frame
	framesRead                                                       atomic.Uint64 // frames decoded by Readers
	syncLatency                                                      latency

	// Readers' cap (CapReaders).
	capped  atomic.Bool
	readCap atomic.Uint64
}

// Open opens or creates the log in dir, recovers it and returns what recovery
// found. It fails with ErrLocked if another Log has dir open, and with
// ErrCorrupt (a *CorruptError naming file and offset) if the log is damaged
// below what was durably recorded.
func Open(dir string, opts Options) (*Log, *Recovery, error) {
	if opts.FS == nil {
		opts.FS = vfs.OS
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.SegmentSize < MinSegmentSize {
		return nil, nil, fmt.Errorf("wal: segment size %d below the minimum %d", opts.SegmentSize, MinSegmentSize)
	}
	if opts.Recycle < 0 {
		return nil, nil, fmt.Errorf("wal: negative Recycle %d", opts.Recycle)
	}
	if opts.LeaseChunk == 0 {
		opts.LeaseChunk = defaultLeaseChunk
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Log{fs: opts.FS, dir: dir, opts: opts, logger: opts.Logger}
	if err := l.fs.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	lock, err := l.fs.Lock(filepath.Join(dir, lockName))
	if err != nil {
		if errors.Is(err, vfs.ErrLocked) {
			return nil, nil, fmt.Errorf("wal: %s: %w", dir, err) // says whether this process holds it
		}
		return nil, nil, err
	}
	l.lock = lock
	if opts.Claim != nil {
		if err := opts.Claim(); err != nil {
			lock.Close()
			return nil, nil, err
		}
	}
	rec, err := l.recover()
	if err != nil {
		lock.Close()
		return nil, nil, err
	}
	if opts.Prepare {
		l.prepWanted = make(chan struct{}, 1)
		l.prepQuit = make(chan struct{})
		l.prepDone = make(chan struct{})
		go l.prepareLoop()
	}
	return l, rec, nil
}

func (l *Log) recover() (*Recovery, error) {
	_, temps, err := listSegments(l.fs, l.dir)
	if err != nil {
		return nil, err
	}
	for _, t := range temps {
		if err := l.fs.Remove(t); err != nil {
			return nil, err
		}
	}
	if len(temps) > 0 {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return nil, err
		}
	}
	segs, torn, err := scanDir(l.fs, l.dir, l.opts.TrustSeals, func(path string, last bool) (vfs.File, error) {
		if last {
			return l.fs.OpenRW(path)
		}
		return l.fs.Open(path)
	}, nil)
	if err != nil {
		return nil, err
	}
	rec := &Recovery{Segments: len(segs), Torn: torn}
	var lastRecovered uint64
	if len(segs) > 0 {
		// Leases only grow, except that a clean Close tightens the last
		// segment's: the last segment's slot is the one that counts.
		l.lease.Store(segs[len(segs)-1].slot.lease)
	}
	for i, s := range segs {
		if i < len(segs)-1 {
			s.file.Close() // sealed: readers open their own handles
			s.file = nil
		}
		lastRecovered = s.lastSeq
		if rec.FirstSeq == 0 && s.frames > 0 {
			rec.FirstSeq = s.lastSeq - uint64(s.frames) + 1
		}
	}
	l.segments = segs
	l.lastSeq, l.syncedSeq = lastRecovered, lastRecovered
	// floor is the highest seq known to be taken: the last frame, or just
	// below the base of an empty last segment.
	floor := lastRecovered
	if n := len(segs); n > 0 && segs[n-1].baseSeq-1 > floor {
		floor = segs[n-1].baseSeq - 1
	}
	l.nextSeq = max(floor, l.lease.Load()) + 1
	rec.LastSeq, rec.NextSeq = lastRecovered, l.nextSeq
	rec.Unclean = torn != nil || l.lease.Load() > floor

	if len(segs) == 0 {
		return rec, nil
	}
	last := segs[len(segs)-1]
	// If an fdatasync of this file failed earlier in this process (at run
	// time or in an earlier recovery), what it should have written may be
	// clean in the page cache and not on the disk: write it again first
	// (writeback.go).
	durable, failed := failedSync(l.fs, last.path)
	if failed {
		if err := l.redirty(last, durable); err != nil {
			return nil, err
		}
	}
	// What was just read may be in the page cache only: a process crash
	// keeps what it wrote without syncing (frames, a slot, a seal, a
	// tightened lease). Sync it before writing anything that builds on it:
	// the seal below claims those frames, and its slot goes over the other
	// slot, which must be durable for a torn slot write to be harmless.
	if err := l.timedSync(last.file); err != nil {
		if !failed {
			// Only what the slot records is known to be on the disk; the
			// next recovery in this process writes the rest again.
			durable = last.slot.syncedOffset
		}
		rememberFailedSync(l.fs, last.path, durable)
		return nil, fmt.Errorf("wal: sync %s: %w", last.path, err)
	}
	forgetFailedSync(l.fs, last.path)
	if last.sealed {
		last.file.Close()
		last.file = nil
		return rec, nil
	}
	if rec.Unclean {
		// Seal at the last good frame: cut whatever follows, and start the
		// next seq above the lease in a new segment.
		if err := l.seal(last); err != nil {
			rememberFailedSync(l.fs, last.path, last.end) // the frames were synced above
			return nil, err
		}
		last.file.Close()
		last.file = nil
		if torn != nil {
			l.logger.Warn("wal: cut torn tail", "file", torn.File, "offset", torn.Offset,
				"frames", torn.Frames, "bytes", torn.Bytes, "reason", torn.Reason)
		}
		return rec, nil
	}
	// Clean end: continue appending here (synced above).
	l.active = last
	l.written, l.syncedOffset = last.end, last.end
	l.slotWritten = time.Now()
	return rec, nil
}

// seal makes seg end at its last good frame: a sealed slot, the file cut to
// that size, and a sync. Everything up to seg.end must already be durable.
func (l *Log) seal(seg *segment) error {
	if err := seg.writeSlot(slot{syncedOffset: seg.end, syncedSeq: seg.lastSeq, lease: l.lease.Load(), sealed: true}); err != nil {
		return err
	}
	if err := seg.file.Truncate(seg.end); err != nil {
		return err
	}
	if err := l.timedSync(seg.file); err != nil {
		return err
	}
	l.mu.Lock()
	seg.sealed = true
	l.mu.Unlock()
	return nil
}

func (l *Log) timedSync(f vfs.File) error {
	start := time.Now()
	err := f.Sync()
	took := time.Since(start)
	l.syncs.Add(1)
	l.syncNanos.Add(uint64(took))
	l.syncLatency.record(took)
	return err
}

// usable returns the poison or closed error, if any.
func (l *Log) usable() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return l.err
}

// poison records the first write or sync failure and returns the error every
// later call will get.
func (l *Log) poison(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = &PoisonError{Cause: err}
		l.logger.Error("wal: poisoned, no further writes", "error", err)
	}
	return l.err
}

// MaxFrameSize is the largest frame that fits in a segment.
func (l *Log) MaxFrameSize() int { return int(l.opts.SegmentSize - dataStart) }

// Append writes buf, a run of whole frames back to back (encoded with
// record.Append or record.AppendMessageFrame; their seq fields are
// overwritten in place, with their checksums), at the end of the log,
// assigning consecutive seqs. It does not sync and does not copy buf: the
// caller may reuse buf once Append returns. It returns the seq given to the
// first frame and how many frames were appended: all of them unless
// err != nil. A frame is never split across segments.
func (l *Log) Append(buf []byte) (first uint64, n int, err error) {
	if err := l.usable(); err != nil {
		return 0, 0, err
	}
	if len(buf) == 0 {
		return l.nextSeq, 0, nil
	}
	sizes, err := l.frameSizes(buf)
	if err != nil {
		return 0, 0, err
	}
	total := int64(len(buf))
	// Roll before writing anything if the frames do not fit but would fit
	// in a fresh segment, so a disk-full roll fails them as a whole.
	if l.active == nil || (l.written+total > l.opts.SegmentSize && total <= l.opts.SegmentSize-dataStart) {
		if err := l.roll(); err != nil {
			return 0, 0, err
		}
	}
	if last := l.nextSeq + uint64(len(sizes)) - 1; last > l.lease.Load() {
		if err := l.extendLease(last + l.opts.LeaseChunk); err != nil {
			return 0, 0, err
		}
	}
	first = l.nextSeq
	n, err = l.write(buf, sizes, true)
	return first, n, err
}

// SeekMisses counts the Reader.Seek hints that did not name the frame
// sought (each cost a scan from its segment's start).
func (l *Log) SeekMisses() uint64 { return l.seekMisses.Load() }

// FramesRead counts the frames Readers decoded (skipped ones included).
func (l *Log) FramesRead() uint64 { return l.framesRead.Load() }

// Offsets returns the offset of each frame the last Append wrote, in its
// segment (the one holding its seq), in order: valid until the next Append,
// and only on the appending goroutine. A Reader's Seek takes them.
func (l *Log) Offsets() []int64 { return l.offsets }

// write appends the frames of buf (sizes as frameSizes returned them) from
// l.nextSeq on, rolling to new segments as needed; assign says whether to
// set each frame's seq (Append) or keep the one it carries (AppendFrames).
// The lease must already cover them.
func (l *Log) write(buf []byte, sizes []int, assign bool) (n int, err error) {
	l.offsets = l.offsets[:0]
	for start := 0; n < len(sizes); {
		if l.written+int64(sizes[n]) > l.opts.SegmentSize {
			if err := l.roll(); err != nil {
				return n, err
			}
		}
		// Take the frames that fit in the active segment.
		seq, end, j := l.nextSeq, start, n
		for ; j < len(sizes) && l.written+int64(end-start+sizes[j]) <= l.opts.SegmentSize; j++ {
			if assign {
				record.SetSeqEpoch(buf[end:end+sizes[j]], seq, l.epoch)
			}
			l.offsets = append(l.offsets, l.written+int64(end-start))
			seq++
			end += sizes[j]
		}
		chunk := buf[start:end]
		if wn, err := l.active.file.WriteAt(chunk, l.written); err != nil {
			return n, l.poison(fmt.Errorf("wal: write %s at offset %d (%d of %d bytes written): %w",
				l.active.path, l.written, wn, len(chunk), err))
		}
		l.mu.Lock()
		l.written += int64(len(chunk))
		l.lastSeq = seq - 1
		l.active.end = l.written
		l.active.lastSeq = seq - 1
		l.mu.Unlock()
		l.frames.Add(uint64(j - n))
		l.bytes.Add(uint64(len(chunk)))
		l.nextSeq = seq
		n, start = j, end
	}
	if l.prepWanted != nil && !l.prepRunning && l.written > l.opts.SegmentSize/16 && l.recycledSpares() == 0 {
		l.prepRunning = true
		select {
		case l.prepWanted <- struct{}{}:
		default:
		}
	}
	return n, nil
}

// frameSizes splits buf into frames by their length fields.
func (l *Log) frameSizes(buf []byte) ([]int, error) {
	sizes := l.sizes[:0]
	for off := 0; off < len(buf); {
		size, err := record.FrameSize(buf[off:], 0)
		if err != nil || off+size > len(buf) {
			return nil, fmt.Errorf("wal: append: bad frame at byte %d of %d: %v", off, len(buf), err)
		}
		if size > l.MaxFrameSize() {
			return nil, fmt.Errorf("wal: frame of %d bytes, limit %d: %w", size, l.MaxFrameSize(), ErrTooLarge)
		}
		sizes = append(sizes, size)
		off += size
	}
	l.sizes = sizes
	return sizes, nil
}

// Sync makes everything appended so far durable and returns the last durable
// seq. It may run concurrently with Append.
func (l *Log) Sync() (uint64, error) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if err := l.syncLocked(0); err != nil {
		return 0, err
	}
	return l.SyncedSeq(), nil
}

// syncLocked syncs the active segment, first writing a slot that records what
// the previous sync made durable and, if lease is above the current lease,
// the new lease. The caller holds syncMu.
func (l *Log) syncLocked(lease uint64) error {
	l.mu.Lock()
	seg, target, targetSeq := l.active, l.written, l.lastSeq
	synced, syncedSeq, err := l.syncedOffset, l.syncedSeq, l.err
	if l.closed && err == nil {
		err = ErrClosed
	}
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if seg == nil || (target == synced && lease <= l.lease.Load()) {
		return nil
	}
	newLease := max(lease, l.lease.Load())
	if newLease != seg.slot.lease || (seg.slot.syncedOffset != synced && l.slotDue(seg, synced)) {
		if err := seg.writeSlot(slot{syncedOffset: synced, syncedSeq: syncedSeq, lease: newLease}); err != nil {
			return l.poison(fmt.Errorf("wal: write slot of %s: %w", seg.path, err))
		}
	}
	if err := l.timedSync(seg.file); err != nil {
		rememberFailedSync(l.fs, seg.path, synced)
		return l.poison(fmt.Errorf("wal: sync %s: %w", seg.path, err))
	}
	if newLease > l.lease.Load() {
		l.lease.Store(newLease)
	}
	l.mu.Lock()
	l.syncedOffset, l.syncedSeq = target, targetSeq
	l.mu.Unlock()
	return nil
}

// slotDue reports whether a sync should record synced in seg's slot now.
func (l *Log) slotDue(seg *segment, synced int64) bool {
	if l.opts.SlotInterval == 0 && l.opts.SlotBytes == 0 {
		return true
	}
	now := time.Now()
	if (l.opts.SlotInterval > 0 && now.Sub(l.slotWritten) >= l.opts.SlotInterval) ||
		(l.opts.SlotBytes > 0 && synced-seg.slot.syncedOffset >= l.opts.SlotBytes) {
		l.slotWritten = now
		return true
	}
	return false
}

// extendLease durably raises the seq lease before seqs above the old one are
// handed out.
func (l *Log) extendLease(lease uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return l.syncLocked(lease)
}

// roll starts a new segment for l.nextSeq: create and preallocate it under a
// temporary name, seal the active segment, then rename the new one into place
// and sync the directory. Failing before the seal (a full disk, typically)
// leaves the log as it was.
func (l *Log) roll() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	base := l.nextSeq
	lease := max(l.lease.Load(), base-1+l.opts.LeaseChunk)
	final := filepath.Join(l.dir, segmentName(base))
	tmp := final + tmpExt
	h := header{baseSeq: base, prevLastSeq: l.lastSeq, created: l.opts.Now().UnixNano(), gap: l.rollGap}
	f, tmp, err := l.takeSpare(tmp, &h, lease)
	if err != nil {
		return err
	}
	seg := &segment{path: final, baseSeq: base, prevLastSeq: l.lastSeq, file: f, lastSeq: l.lastSeq, end: dataStart, gap: h.gap,
		recycled: h.recycled,
		slot:     slot{generation: 1, syncedOffset: dataStart, syncedSeq: l.lastSeq, lease: lease}}

	if old := l.active; old != nil {
		// The sealed slot claims everything written is durable: sync the
		// data first, then seal.
		if err := l.syncLocked(0); err != nil {
			f.Close()
			return err
		}
		if err := l.seal(old); err != nil {
			f.Close()
			rememberFailedSync(l.fs, old.path, old.end) // the frames were synced above
			return l.poison(fmt.Errorf("wal: seal %s: %w", old.path, err))
		}
		old.file.Close()
		l.mu.Lock()
		old.file = nil
		l.mu.Unlock()
	}
	if err := l.fs.Rename(tmp, final); err != nil {
		f.Close()
		return l.poison(fmt.Errorf("wal: rename %s: %w", tmp, err))
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		f.Close()
		return l.poison(fmt.Errorf("wal: sync directory %s: %w", l.dir, err))
	}
	l.lease.Store(lease)
	l.slotWritten = time.Now()
	l.mu.Lock()
	l.segments = append(l.segments, seg)
	l.active = seg
	l.written, l.syncedOffset, l.syncedSeq = dataStart, dataStart, l.lastSeq
	l.mu.Unlock()
	l.rolls.Add(1)
	return nil
}

// createSegment creates a segment file under a temporary name with its header
// and first slot, preallocated and synced. A full disk gives ErrDiskFull; no
// failure here poisons the log, since nothing durable depends on the file yet.
func (l *Log) createSegment(tmp string, h header, lease uint64) (f vfs.File, err error) {
	fail := func(op string, err error) (vfs.File, error) {
		if f != nil {
			f.Close()
			l.fs.Remove(tmp)
		}
		if vfs.IsNoSpace(err) {
			return nil, fmt.Errorf("wal: %s %s: %w (%v)", op, tmp, ErrDiskFull, err)
		}
		return nil, fmt.Errorf("wal: %s %s: %w", op, tmp, err)
	}
	f, err = l.fs.Create(tmp)
	if err != nil {
		if l.fs.Remove(tmp) == nil { // a leftover of an earlier failed roll
			f, err = l.fs.Create(tmp)
		}
		if err != nil {
			return fail("create", err)
		}
	}
	if err := f.Allocate(l.opts.SegmentSize); err != nil {
		return fail("preallocate", err)
	}
	if err := l.writeHeader(f, h, lease); err != nil {
		return fail("write header of", err)
	}
	return f, nil
}

// writeHeader writes a new segment's header block with its first slot, and
// syncs the file.
func (l *Log) writeHeader(f vfs.File, h header, lease uint64) error {
	page := make([]byte, dataStart)
	copy(page, h.encode())
	first := slot{generation: 1, syncedOffset: dataStart, syncedSeq: h.prevLastSeq, lease: lease}
	copy(page[slotOffset(1):], first.encode())
	if _, err := f.WriteAt(page, 0); err != nil {
		return err
	}
	return l.timedSync(f)
}

// takeSpare returns the prepared spare file with h written into it, or, when
// there is none (or it does not fit), a recycled one (which sets
// h.recycled), or else a segment created now under tmp. It returns the file
// and its temporary path.
func (l *Log) takeSpare(tmp string, h *header, lease uint64) (vfs.File, string, error) {
	l.spareMu.Lock()
	f, path, size := l.spare, l.sparePath, l.spareSize
	l.spare = nil
	l.spareMu.Unlock()
	l.prepRunning = false
	if f != nil {
		if size == l.opts.SegmentSize {
			if err := l.writeHeader(f, *h, lease); err == nil {
				l.warmRolls.Add(1)
				return f, path, nil
			}
		}
		f.Close()
		l.fs.Remove(path)
	}
	if f, path, ok := l.takeRecycled(h, lease); ok {
		l.recycledRolls.Add(1)
		return f, path, nil
	}
	f, err := l.createSegment(tmp, *h, lease)
	return f, tmp, err
}

// prepareLoop is the preparer goroutine: when asked, it creates a spare
// segment file and writes zeros over it (Options.Prepare).
func (l *Log) prepareLoop() {
	defer close(l.prepDone)
	for {
		select {
		case <-l.prepWanted:
		case <-l.prepQuit:
			return
		}
		path := l.spareName()
		f, err := l.prepareSpare(path)
		if err != nil {
			l.logger.Warn("wal: could not prepare the next segment; the roll will create it", "error", err)
			continue
		}
		l.spareMu.Lock()
		if l.spare != nil { // not taken: keep the older one
			f.Close()
			l.fs.Remove(path)
		} else {
			l.spare, l.sparePath, l.spareSize = f, path, l.opts.SegmentSize
		}
		l.spareMu.Unlock()
		if l.opts.onPrepared != nil {
			l.opts.onPrepared()
		}
	}
}

// prepareSpare creates path, preallocates it and writes zeros over it.
func (l *Log) prepareSpare(path string) (vfs.File, error) {
	f, err := l.fs.Create(path)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (vfs.File, error) {
		f.Close()
		l.fs.Remove(path)
		return nil, err
	}
	if err := f.Allocate(l.opts.SegmentSize); err != nil {
		return fail(err)
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < l.opts.SegmentSize; off += int64(len(zeros)) {
		select {
		case <-l.prepQuit:
			return fail(ErrClosed)
		default:
		}
		chunk := zeros[:min(int64(len(zeros)), l.opts.SegmentSize-off)]
		if _, err := f.WriteAt(chunk, off); err != nil {
			return fail(err)
		}
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	return f, nil
}

// Close syncs what was appended, records a clean end (the lease tightened to
// the last seq, so the next Open continues without a gap) and releases the
// directory lock. It is idempotent. A poisoned log is closed without syncing
// and Close returns the poison error.
func (l *Log) Close() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	poisoned := l.err != nil
	err := l.err
	l.mu.Unlock()
	if seg := l.active; seg != nil && !poisoned {
		if err = l.syncLocked(0); err == nil {
			err = seg.writeSlot(slot{syncedOffset: l.syncedOffset, syncedSeq: l.syncedSeq, lease: l.nextSeq - 1})
			if err == nil {
				if err = l.timedSync(seg.file); err != nil {
					rememberFailedSync(l.fs, seg.path, l.syncedOffset)
				}
			}
		}
	}
	if l.prepQuit != nil {
		close(l.prepQuit)
		<-l.prepDone
		l.prepQuit = nil
		l.spareMu.Lock()
		if l.spare != nil {
			l.spare.Close()
			l.fs.Remove(l.sparePath)
			l.spare = nil
		}
		l.spareMu.Unlock()
	}
	l.removeRecycled()
	l.mu.Lock()
	l.closed = true
	for _, s := range l.segments {
		if s.file != nil {
			s.file.Close()
			s.file = nil
		}
	}
	l.mu.Unlock()
	if lerr := l.lock.Close(); err == nil {
		err = lerr
	}
	return err
}

// LastSeq returns the last seq appended (written, maybe not durable).
func (l *Log) LastSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastSeq
}

// SyncedSeq returns the last durable seq.
func (l *Log) SyncedSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.syncedSeq
}

// Err returns the poison error, or nil.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// AvgSyncTime returns the average duration of the data syncs so far (0 before
// the first). It takes no lock.
func (l *Log) AvgSyncTime() time.Duration {
	n := l.syncs.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(l.syncNanos.Load() / n)
}

// DataBytes returns the bytes of frames held in the log's segments, without
// headers and preallocated free space.
func (l *Log) DataBytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, seg := range l.segments {
		n += seg.end - dataStart
	}
	return n
}

// Stats returns counters since Open.
func (l *Log) Stats() Stats {
	var spares int64
	l.spareMu.Lock()
	for _, spare := range l.recycled {
		spares += spare.end
	}
	l.spareMu.Unlock()
	s := Stats{Frames: l.frames.Load(), Bytes: l.bytes.Load(), Syncs: l.syncs.Load(), DiskBytes: spares,
		SyncNanos: l.syncNanos.Load(), SyncLatency: l.syncLatency.snapshot(), SegmentsRolls: l.rolls.Load(), WarmRolls: l.warmRolls.Load(),
		RecycledRolls: l.recycledRolls.Load()}
	l.mu.Lock()
	defer l.mu.Unlock()
	s.Segments = len(l.segments)
	for _, seg := range l.segments {
		if seg == l.active {
			s.DiskBytes += l.opts.SegmentSize
		} else {
			s.DiskBytes += seg.end
		}
	}
	return s
}
