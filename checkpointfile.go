package zeroloss

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// Checkpoint files: Open without reading the whole log.
//
// Open rebuilds from the log the consumer groups' ledger, the dedup table,
// the transactional halves (pending and resolved) and the topic index. A
// checkpoint file holds all of that as of one record of the log, at seq S,
// so that Open loads the file and replays only the records after S. It is
// derived data, never trusted past the log:
//
//   - It names the record at S (offset, type, stream, epoch, time and the
//     CRC-32C of its payload). Open reads that record first; if the log does
//     not hold it (a log cut below S, a segment deleted, another record at
//     S), the file is ignored. So is a file whose checksum fails or whose S
//     is above the log's last seq, or whose dedup entries were kept under
//     options that remember fewer IDs than the queue's (dedup off, a shorter
//     DedupWindow, fewer DedupEntries). Each ignored file is logged, and Open
//     falls back to the older file (two are kept), then to reading the
//     whole log.
//   - It is built by the same code that replays the log at Open: Open
//     leaves the state it rebuilt as the base (the file it loaded, or its
//     replay encoded); the first checkpoint decodes it into a queue of its
//     own (a shadow holding only the replayed tables), and each checkpoint
//     replays into the shadow the records since the last, up to the synced
//     seq, and encodes it. What Open builds
//     from a file and the records after it is then what a replay of the
//     whole log builds (checkpointfile_test.go compares the two).
//   - S is at or below the synced seq when the file is written (temporary
//     file, fdatasync, rename, directory fdatasync): a crash never leaves a
//     file ahead of what the log keeps.
//
// The markLoop goroutine advances the base once the log grew by
// CheckpointBytes since the last, and before retention deletes a segment
// (the records below the base are then no longer needed); Close advances
// it to the end and writes the last file.
//
// The file CHECKPOINT-<S, 20 digits> (its temporary file has ".new"
// appended): magic "ZLSTATE1", then uvarints unless said otherwise:
//
//	version (1)
//	the record at S: seq, offset in its segment, type (1 byte), stream,
//	epoch, time (varint), payload CRC-32C (4 bytes LE)
//	next group id: the lowest id a new consumer group may take, from the
//	records of groups the log never declared (a follower's gap; 1 if none)
//	the DedupWindow (varint, nanoseconds; -1: dedup off) and DedupEntries
//	the dedup entries were kept under
//	length, the ledger, dedup entries and pending halves (record.AppendCheckpoint)
//	length, resolved halves: count, count × (seq, state, commit seq, ID
//	(length + bytes)), oldest first
//	length, the topic index (appendIndex)
//	CRC-32C of everything above (4 bytes LE)
//
// An older build refuses a directory holding such a file (a file it did not
// create; ErrWrongDirectory names it) rather than append to a log whose
// checkpoint files it would not keep up to date.

const (
	checkpointFilePrefix  = "CHECKPOINT-"
	checkpointFileMagic   = "ZLSTATE1"
	checkpointFileVersion = 1
	checkpointFilesKept   = 2
)

func checkpointFileName(seq uint64) string {
	return fmt.Sprintf("%s%020d", checkpointFilePrefix, seq)
}

// parseCheckpointFileName returns the seq a checkpoint file's name holds.
func parseCheckpointFileName(name string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, checkpointFilePrefix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil && seq > 0
}

// isCheckpointFile says whether name is a checkpoint file or its temporary
// file.
func isCheckpointFile(name string) bool {
	_, ok := parseCheckpointFileName(strings.TrimSuffix(name, ".new"))
	return ok
}

// frameID names one record of the log.
type frameID struct {
	seq    uint64
	off    int64
	typ    record.Type
	stream uint16
	epoch  uint32
	time   int64
	crc    uint32 // CRC-32C of the payload
}

func frameIDOf(rec *record.Record, off int64) frameID {
	return frameID{seq: rec.Seq, off: off, typ: rec.Type, stream: rec.Stream, epoch: rec.Epoch, time: rec.Time,
		crc: crc32.Checksum(rec.Payload, epochCRC)}
}

// sameRecord says whether two IDs name the same record (wherever it was
// found: a segment's frames do not move, but a difference of offset alone
// does not make it another record).
func (f frameID) sameRecord(o frameID) bool {
	f.off, o.off = 0, 0
	return f == o
}

// stateFile is a checkpoint file's content.
type stateFile struct {
	at          frameID
	nextGroupID uint16
	// The dedup options the file's entries were kept under (window < 0:
	// dedup off, no entries).
	dedupWindow  time.Duration
	dedupEntries uint64
	cp           record.Checkpoint
	done         []*halfState
	index        *topicIndex
}

// encodeState encodes the replayed tables of q (the queue at the end of its
// recovery, or a shadow) as a checkpoint file whose last record is at.
func (q *Queue) encodeState(at frameID) []byte {
	cp := q.ledger.checkpoint()
	if q.dedup != nil {
		cp.Dedup = q.dedup.checkpointEntries(q.opts.now())
	}
	cp.Halves = q.tx.snapshot()
	b := append([]byte(nil), checkpointFileMagic...)
	b = binary.AppendUvarint(b, checkpointFileVersion)
	b = binary.AppendUvarint(b, at.seq)
	b = binary.AppendUvarint(b, uint64(at.off))
	b = append(b, byte(at.typ))
	b = binary.AppendUvarint(b, uint64(at.stream))
	b = binary.AppendUvarint(b, uint64(at.epoch))
	b = binary.AppendVarint(b, at.time)
	b = binary.LittleEndian.AppendUint32(b, at.crc)
	b = binary.AppendUvarint(b, uint64(q.nextGroupID))
	window, entries := time.Duration(-1), uint64(0)
	if q.dedup != nil {
		window, entries = q.dedup.window, uint64(q.dedup.max)
	}
	b = binary.AppendVarint(b, int64(window))
	b = binary.AppendUvarint(b, entries)
	b = appendSection(b, record.AppendCheckpoint(nil, &cp))
	b = appendSection(b, q.tx.appendDone(nil))
	b = appendSection(b, q.topics.appendIndex(nil))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, epochCRC))
}

func appendSection(dst, body []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...)
}

// decodeState decodes a checkpoint file (path is for errors).
func decodeState(path string, b []byte) (*stateFile, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("zeroloss: checkpoint file %s: %s: %w", path, fmt.Sprintf(format, args...), ErrCorrupt)
	}
	if len(b) < len(checkpointFileMagic)+4 || !bytes.Equal(b[:len(checkpointFileMagic)], []byte(checkpointFileMagic)) {
		return nil, bad("not a checkpoint file (%d bytes)", len(b))
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, epochCRC) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, bad("checksum mismatch")
	}
	d := fileDecoder{p: body[len(checkpointFileMagic):]}
	if v := d.uvarint(); d.err == nil && v != checkpointFileVersion {
		return nil, bad("version %d, this build reads version %d", v, checkpointFileVersion)
	}
	sf := &stateFile{}
	sf.at.seq = d.uvarint()
	sf.at.off = int64(d.uvarint())
	sf.at.typ = record.Type(d.byte())
	sf.at.stream = uint16(d.uvarint())
	sf.at.epoch = uint32(d.uvarint())
	sf.at.time = d.varint()
	sf.at.crc = d.uint32()
	sf.nextGroupID = uint16(d.uvarint())
	sf.dedupWindow = time.Duration(d.varint())
	sf.dedupEntries = d.uvarint()
	ledger, done, index := d.section(), d.section(), d.section()
	if d.err == nil && len(d.p) != 0 {
		d.err = fmt.Errorf("%d bytes after the last section", len(d.p))
	}
	if d.err != nil {
		return nil, bad("%v", d.err)
	}
	var err error
	if sf.cp, err = record.DecodeCheckpoint(ledger); err != nil {
		return nil, bad("state: %v", err)
	}
	if sf.done, err = decodeDone(done); err != nil {
		return nil, bad("resolved halves: %v", err)
	}
	if sf.index, err = decodeIndex(index); err != nil {
		return nil, bad("topic index: %v", err)
	}
	return sf, nil
}

// loadState makes sf the replayed tables of q, as loadCheckpoint does for a
// checkpoint record (the caller then replays the records after sf.at).
func (q *Queue) loadState(sf *stateFile, rs *replayState) {
	q.loadCheckpoint(rs, &sf.cp)
	q.tx.loadDone(sf.done)
	q.topics = sf.index
	q.nextGroupID = max(q.nextGroupID, sf.nextGroupID)
	rs.seenCheckpoint = true
}

// readStateFile reads and decodes one checkpoint file.
func readStateFile(fsys vfs.FS, path string) (*stateFile, error) {
	sf, _, err := readStateFileBytes(fsys, path)
	return sf, err
}

// readStateFileBytes is readStateFile that also returns the file's bytes.
func readStateFileBytes(fsys vfs.FS, path string) (*stateFile, []byte, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, nil, err
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); n < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, nil, fmt.Errorf("zeroloss: reading %s: %w", path, err)
	}
	sf, err := decodeState(path, b)
	return sf, b, err
}

// checkpointFiles returns the seqs of dir's checkpoint files, newest first,
// and removes the temporary files a crash left.
func checkpointFiles(fsys vfs.FS, dir string) ([]uint64, error) {
	names, err := fsys.List(dir)
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, name := range names {
		if seq, ok := parseCheckpointFileName(name); ok {
			seqs = append(seqs, seq)
		} else if isCheckpointFile(name) { // name.new: cut short by a crash, never renamed
			if err := fsys.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	slices.Sort(seqs)
	slices.Reverse(seqs)
	return seqs, nil
}

// openState loads the newest checkpoint file that the log confirms into q
// (Open, before any goroutine runs) and returns a reader positioned after its
// record, that record's ID and the file's bytes; with none, a reader at the
// log's start, a zero ID and nil.
func (q *Queue) openState(dir string, rs *replayState) (*wal.Reader, frameID, []byte, error) {
	seqs, err := checkpointFiles(q.opts.fs, dir)
	if err != nil {
		return nil, frameID{}, nil, fmt.Errorf("zeroloss: listing checkpoint files in %s: %w", dir, err)
	}
	for _, seq := range seqs {
		path := filepath.Join(dir, checkpointFileName(seq))
		sf, raw, err := readStateFileBytes(q.opts.fs, path)
		if err == nil && sf.at.seq != seq {
			err = fmt.Errorf("zeroloss: checkpoint file %s holds seq %d: %w", path, sf.at.seq, ErrCorrupt)
		}
		if err == nil && seq > q.log.LastSeq() {
			err = fmt.Errorf("zeroloss: checkpoint file %s is ahead of the log (last seq %d)", path, q.log.LastSeq())
		}
		if err == nil && q.dedup != nil && (sf.dedupWindow < q.dedup.window || sf.dedupEntries < uint64(q.dedup.max)) {
			// Its dedup entries are fewer than the log's records give
			// these options: a replay of the whole log remembers more.
			err = fmt.Errorf("zeroloss: checkpoint file %s was written with DedupWindow %v and DedupEntries %d (-1: off), now %v and %d",
				path, sf.dedupWindow, sf.dedupEntries, q.dedup.window, q.dedup.max)
		}
		if err != nil {
			q.logger.Warn("zeroloss: checkpoint file ignored", "file", path, "error", err)
			continue
		}
		r := q.log.NewUncappedReader(0)
		r.Seek(seq, seq, sf.at.off)
		rec, err := r.Next()
		if err != nil && err != io.EOF {
			r.Close()
			return nil, frameID{}, nil, fmt.Errorf("zeroloss: recovering from %s: %w", path, err)
		}
		if err == io.EOF || !frameIDOf(&rec, r.Offset()).sameRecord(sf.at) {
			r.Close()
			q.logger.Warn("zeroloss: checkpoint file ignored: the log does not hold the record it was taken at",
				"file", path, "seq", seq)
			continue
		}
		q.loadState(sf, rs)
		return r, sf.at, raw, nil
	}
	return q.log.NewUncappedReader(0), frameID{}, nil, nil
}

// frameAt returns the ID of the record at seq, whose frame starts at off.
func (q *Queue) frameAt(seq uint64, off int64) (frameID, error) {
	r := q.log.NewUncappedReader(0)
	defer r.Close()
	r.Seek(seq, seq, off)
	rec, err := r.Next()
	if err == nil && rec.Seq != seq {
		err = fmt.Errorf("found seq %d", rec.Seq)
	}
	if err != nil {
		return frameID{}, fmt.Errorf("zeroloss: reading the record at seq %d again: %w", seq, err)
	}
	return frameIDOf(&rec, r.Offset()), nil
}

// plain says whether a replay's state is the whole state at its last record:
// not after a gap (a follower's copy) with only part of the records applied,
// not a trimmed log's state before its first checkpoint.
func (rs *replayState) plain() bool {
	return !rs.afterGap && !rs.fromCatchup && rs.catchup == nil && len(rs.gaps) == 0 &&
		(!rs.trimmed || rs.seenCheckpoint)
}

// stateCheckpoints is what the queue keeps to write checkpoint files (used
// by markLoop, then by Close; tests also run retention from their own
// goroutine, hence mu). The state as of the record at `at` is either
// encoded (base: as Open left it, the file it loaded or its own replay
// encoded) or live in a shadow queue whose replay goes on from there
// (after the first advance); with neither, the next advance replays the
// whole log.
type stateCheckpoints struct {
	mu      sync.Mutex
	base    []byte
	shadow  *Queue
	rs      *replayState
	at      frameID
	encoded []byte // the state at `at`, encoded and not written yet as a file
	written uint64 // seq of the newest checkpoint file written or loaded
	bytes   uint64 // the log's Stats().Bytes when `at` was reached
}

func (c *stateCheckpoints) has() bool { return c.base != nil || c.shadow != nil }

// drop forgets the state: the next advance replays the whole log.
func (c *stateCheckpoints) drop() {
	c.base, c.shadow, c.rs, c.encoded, c.at = nil, nil, nil, nil, frameID{}
}

// shadow returns a queue holding only empty replay tables, with q's options:
// a replay into it builds what Open would.
func (q *Queue) shadow() *Queue {
	s := &Queue{opts: q.opts, logger: q.logger, ledger: newLedger(), topics: newTopicIndex(), tx: newTxTable(), nextGroupID: 1}
	if q.dedup != nil {
		s.dedup = newDedupTable(q.opts.DedupWindow, q.opts.DedupEntries)
		s.dedup.logOnly = true
	}
	return s
}

// advanceState replays the records from the state's record up to the
// log's synced seq into the shadow (made from the base, or from nothing,
// first) and encodes the result, unless the replay's state is not whole
// (plain). The caller holds q.files.mu. On an error the state is dropped.
func (q *Queue) advanceState(dir string) error {
	c := &q.files
	to := q.log.SyncedSeq()
	if c.has() && to <= c.at.seq {
		return nil
	}
	err := q.replayShadow(dir, to)
	if err != nil {
		c.drop()
	}
	return err
}

func (q *Queue) replayShadow(dir string, to uint64) error {
	c := &q.files
	bytesNow := q.log.Stats().Bytes
	if c.shadow == nil {
		s := q.shadow()
		if c.base == nil {
			gaps := q.log.Gaps()
			cu, err := catchupFor(q.opts.fs, dir, gaps)
			if err != nil {
				return err
			}
			c.rs = s.newReplay(q.log.Trimmed(), q.log.FirstSeq(), gaps, cu)
			c.at = frameID{}
		} else {
			sf, err := decodeState("(in memory)", c.base)
			if err != nil {
				return err // a bug: it was encoded by this process
			}
			c.rs = s.newReplay(false, 0, nil, nil)
			s.loadState(sf, c.rs)
		}
		c.shadow, c.base = s, nil
	}
	s, rs := c.shadow, c.rs
	r := q.log.NewUncappedReader(0)
	defer r.Close()
	if c.at.seq > 0 {
		r.Seek(c.at.seq, c.at.seq, c.at.off)
	}
	skipFirst := c.at.seq > 0
	last, lastOff := c.at.seq, c.at.off
	for last < to {
		rec, err := r.Next()
		if err == io.EOF {
			return fmt.Errorf("zeroloss: checkpoint file: the log ends at seq %d, below its synced seq %d", last, to)
		}
		if err != nil {
			return fmt.Errorf("zeroloss: checkpoint file: %w", err)
		}
		if skipFirst {
			skipFirst = false
			if !frameIDOf(&rec, r.Offset()).sameRecord(c.at) {
				return fmt.Errorf("zeroloss: checkpoint file: the log no longer holds seq %d where the last checkpoint was taken", c.at.seq)
			}
			continue
		}
		if err := s.replay(rs, &rec); err != nil {
			return err
		}
		if err := s.topics.indexRecord(&rec, r.Offset()); err != nil {
			return err
		}
		last, lastOff = rec.Seq, r.Offset()
	}
	if err := s.finishReplay(rs); err != nil {
		return err
	}
	if last != c.at.seq {
		at, err := q.frameAt(last, lastOff)
		if err != nil {
			return err
		}
		c.at = at
	}
	c.encoded = nil
	if !rs.plain() {
		return nil // wait for a checkpoint record after the gap (Open writes one)
	}
	s.topics.trim(q.log.FirstSeq())
	c.encoded, c.bytes = s.encodeState(c.at), bytesNow
	return nil
}

// writeState makes the base a checkpoint file (the caller holds
// q.files.mu), if it is newer than the last one, and removes the files
// older than the newest checkpointFilesKept.
func (q *Queue) writeState(dir string) error {
	c := &q.files
	if c.encoded == nil || c.at.seq <= c.written {
		return nil
	}
	if err := replaceFile(q.opts.fs, dir, checkpointFileName(c.at.seq), c.encoded); err != nil {
		return err
	}
	c.written, c.encoded = c.at.seq, nil
	q.stats.checkpointFiles.Add(1)
	seqs, err := checkpointFiles(q.opts.fs, dir)
	if err != nil {
		return err
	}
	for _, seq := range seqs[min(len(seqs), checkpointFilesKept):] {
		if err := q.opts.fs.Remove(filepath.Join(dir, checkpointFileName(seq))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// checkpointState advances the base and writes it as a file if the log grew
// by CheckpointBytes since the last (or always, if force), logging a failure:
// the files are an optimisation of Open, which reads the whole log without
// them.
func (q *Queue) checkpointState(force bool) {
	q.files.mu.Lock()
	defer q.files.mu.Unlock()
	if q.log.Err() != nil {
		return
	}
	if !force && q.log.Stats().Bytes-q.files.bytes < uint64(q.opts.CheckpointBytes) {
		return // (also after a failure: the next try waits for as much log)
	}
	start := time.Now()
	defer func() { q.stats.checkpointTime.Add(int64(time.Since(start))) }()
	err := q.advanceState(q.dir)
	if err == nil {
		err = q.writeState(q.dir)
	}
	if err != nil {
		q.files.bytes = q.log.Stats().Bytes
		q.logger.Warn("zeroloss: could not write a checkpoint file (the next Open reads more of the log)", "error", err)
	}
}

// beforeRemove advances the base past the records about to be deleted
// (retention, below seq), so that the next advance finds its record in the
// log, and writes it as a file. If it cannot, the base is dropped: the next
// advance replays the whole log (its first checkpoint record on).
func (q *Queue) beforeRemove(below uint64) {
	q.files.mu.Lock()
	defer q.files.mu.Unlock()
	if !q.files.has() || !q.recordGoes(q.files.at.seq, below) || q.log.Err() != nil {
		return
	}
	start := time.Now()
	defer func() { q.stats.checkpointTime.Add(int64(time.Since(start))) }()
	err := q.advanceState(q.dir)
	if err == nil && q.recordGoes(q.files.at.seq, below) {
		err = fmt.Errorf("the base stays at seq %d", q.files.at.seq)
	}
	if err != nil {
		q.files.drop()
		q.logger.Warn("zeroloss: could not advance the checkpoint file's state before deleting segments", "error", err)
		return
	}
	if err := q.writeState(q.dir); err != nil {
		q.logger.Warn("zeroloss: could not write a checkpoint file (the next Open reads more of the log)", "error", err)
	}
}

// recordGoes says whether the record at seq may be deleted by retention
// deleting the segments wholly below below: it is below below-1, or it is
// below-1 and ends a segment (forced retention cuts right after the last
// seq of the oldest segment).
func (q *Queue) recordGoes(seq, below uint64) bool {
	if seq+1 != below {
		return seq+1 < below
	}
	for _, s := range q.log.Removable() {
		if s.LastSeq == seq {
			return true
		}
	}
	return false
}

// appendDone encodes the resolved halves remembered for idempotent answers,
// oldest first.
func (t *txTable) appendDone(dst []byte) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	dst = binary.AppendUvarint(dst, uint64(len(t.doneAge)))
	for _, seq := range t.doneAge {
		st := t.done[seq]
		dst = binary.AppendUvarint(dst, seq)
		dst = binary.AppendUvarint(dst, uint64(st.state))
		dst = binary.AppendUvarint(dst, st.commit.Seq)
		dst = binary.AppendUvarint(dst, uint64(len(st.commit.ID)))
		dst = append(dst, st.commit.ID...)
	}
	return dst
}

func decodeDone(p []byte) ([]*halfState, error) {
	d := fileDecoder{p: p}
	n := d.count(3)
	out := make([]*halfState, 0, n)
	for range n {
		st := &halfState{seq: d.uvarint(), state: TxState(d.uvarint())}
		st.commit.Seq = d.uvarint()
		st.commit.ID = string(d.bytes())
		if st.state == TxCommit {
			st.commit.Status = SendOK
		}
		if d.err == nil && st.state != TxCommit && st.state != TxRollback {
			d.err = fmt.Errorf("half at seq %d resolved as %d", st.seq, st.state)
		}
		out = append(out, st)
	}
	if d.err == nil && len(d.p) != 0 {
		d.err = fmt.Errorf("%d bytes after the last entry", len(d.p))
	}
	return out, d.err
}

// loadDone remembers resolved halves read from a checkpoint file, oldest
// first.
func (t *txTable) loadDone(done []*halfState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range done {
		if t.done[st.seq] == nil && t.pending[st.seq] == nil {
			t.done[st.seq] = st
			t.doneAge = append(t.doneAge, st.seq)
		}
	}
}

// appendIndex encodes the topic index: indexed, the end of the last frame
// indexed, the run the next message may extend (a flag: 0 none, 1 a topic's,
// 2 a topic's and one of its tags', then the topic and the tag), then each
// topic by name: name, its runs, its tags by name with their runs. Runs are
// total, bytes, count, then count × (first, cum, off, n, bytes).
func (x *topicIndex) appendIndex(dst []byte) []byte {
	x.mu.RLock()
	defer x.mu.RUnlock()
	dst = binary.AppendUvarint(dst, x.indexed)
	dst = binary.AppendUvarint(dst, uint64(x.lastEnd))
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range x.topics {
			if !yield(name) {
				return
			}
		}
	})
	flag, lastTopic, lastTag := 0, "", ""
	for _, name := range names {
		e := x.topics[name]
		if x.lastAll == &e.all {
			flag, lastTopic = 1, name
			for tag, rs := range e.tags {
				if x.lastTag == rs {
					flag, lastTag = 2, tag
				}
			}
		}
	}
	dst = binary.AppendUvarint(dst, uint64(flag))
	if flag > 0 {
		dst = appendString(dst, lastTopic)
	}
	if flag > 1 {
		dst = appendString(dst, lastTag)
	}
	dst = binary.AppendUvarint(dst, uint64(len(names)))
	for _, name := range names {
		e := x.topics[name]
		dst = appendString(dst, name)
		dst = e.all.appendRuns(dst)
		tags := slices.Sorted(func(yield func(string) bool) {
			for tag := range e.tags {
				if !yield(tag) {
					return
				}
			}
		})
		dst = binary.AppendUvarint(dst, uint64(len(tags)))
		for _, tag := range tags {
			dst = appendString(dst, tag)
			dst = e.tags[tag].appendRuns(dst)
		}
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func (rs *runs) appendRuns(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, rs.total)
	dst = binary.AppendUvarint(dst, rs.bytes)
	dst = binary.AppendUvarint(dst, uint64(len(rs.list)))
	for _, r := range rs.list {
		dst = binary.AppendUvarint(dst, r.first)
		dst = binary.AppendUvarint(dst, r.cum)
		dst = binary.AppendUvarint(dst, uint64(r.off))
		dst = binary.AppendUvarint(dst, uint64(r.n))
		dst = binary.AppendUvarint(dst, uint64(r.bytes))
	}
	return dst
}

func decodeIndex(p []byte) (*topicIndex, error) {
	d := fileDecoder{p: p}
	x := &topicIndex{topics: map[string]*topicEntry{}}
	x.indexed = d.uvarint()
	x.lastEnd = int64(d.uvarint())
	flag := d.uvarint()
	var lastTopic, lastTag string
	if flag > 0 {
		lastTopic = string(d.bytes())
	}
	if flag > 1 {
		lastTag = string(d.bytes())
	}
	if flag > 2 {
		d.fail("last-run flag %d", flag)
	}
	n := d.count(3)
	for range n {
		e := &topicEntry{name: string(d.bytes()), tags: map[string]*runs{}}
		e.all = d.runs()
		tags := d.count(4)
		for range tags {
			tag := string(d.bytes())
			rs := d.runs()
			e.tags[tag] = &rs
		}
		x.topics[e.name] = e
	}
	if d.err == nil && len(d.p) != 0 {
		d.fail("%d bytes after the last topic", len(d.p))
	}
	if d.err != nil {
		return nil, d.err
	}
	if x.topics[""] == nil {
		x.topics[""] = &topicEntry{name: "", tags: map[string]*runs{}}
	}
	if flag > 0 {
		e := x.topics[lastTopic]
		if e == nil {
			return nil, fmt.Errorf("the last run's topic %q is not in the index", lastTopic)
		}
		x.lastAll = &e.all
		if flag > 1 {
			if x.lastTag = e.tags[lastTag]; x.lastTag == nil {
				return nil, fmt.Errorf("the last run's tag %q is not in topic %q", lastTag, lastTopic)
			}
		}
	}
	return x, nil
}

// fileDecoder reads a checkpoint file's fields; the first error sticks.
type fileDecoder struct {
	p   []byte
	err error
}

func (d *fileDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *fileDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *fileDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.p)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *fileDecoder) byte() byte {
	if d.err != nil || len(d.p) < 1 {
		d.fail("truncated")
		return 0
	}
	b := d.p[0]
	d.p = d.p[1:]
	return b
}

func (d *fileDecoder) uint32() uint32 {
	if d.err != nil || len(d.p) < 4 {
		d.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint32(d.p)
	d.p = d.p[4:]
	return v
}

// bytes reads a length-prefixed field.
func (d *fileDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.p)) {
		d.fail("field of %d bytes with %d left", n, len(d.p))
		return nil
	}
	b := d.p[:n]
	d.p = d.p[n:]
	return b
}

// section reads a length-prefixed section.
func (d *fileDecoder) section() []byte { return d.bytes() }

// count reads a count of entries of at least min bytes each, refusing one
// the rest of the input cannot hold (so that a damaged count allocates
// nothing large).
func (d *fileDecoder) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.p)/min) {
		d.fail("count %d in %d bytes", n, len(d.p))
		return 0
	}
	return int(n)
}

func (d *fileDecoder) runs() runs {
	var rs runs
	rs.total = d.uvarint()
	rs.bytes = d.uvarint()
	n := d.count(5)
	rs.list = make([]run, 0, n)
	for range n {
		r := run{first: d.uvarint(), cum: d.uvarint(), off: int64(d.uvarint())}
		r.n, r.bytes = uint32(d.uvarint()), uint32(d.uvarint())
		rs.list = append(rs.list, r)
	}
	return rs
}
