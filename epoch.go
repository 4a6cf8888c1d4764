package zeroloss

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math"
	"path/filepath"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// Epochs (see ARCHITECTURE.md, "Epochs and failover").
//
// Every Open of a queue begins a leadership term: a new epoch, numbered one
// above the last the directory knows, with a random ID, written first to the
// directory's history file and then as an epoch record in the log. A
// follower's directory holds its leader's history, as of the last handshake.
// The handshake compares the two histories (repl.Common) to find where the
// logs part; the follower cuts what lies beyond and the leader streams from
// there.
//
// Promotion: Follow leaves a marker file in its directory. An Open that finds
// it starts the new term promotionSeqGap seqs above the log's last seq, so
// that the seqs the old leader may have used beyond what it replicated are
// never given to other messages, then removes the marker once the epoch
// record is durable.

const (
	epochsFile   = "EPOCHS"
	followerFile = "FOLLOWER"
	epochsMagic  = "ZLEPOCH1"

	// promotionSeqGap is how far above its last seq a promoted follower
	// starts: an old leader's unreplicated tail would have to be longer than
	// this for a seq to name two messages.
	promotionSeqGap = 1 << 32
)

var epochCRC = crc32.MakeTable(crc32.Castagnoli)

// readEpochs reads dir's history file and drops the terms whose epoch record
// is not in the log (start above last): the file is written before the
// record, so a crash can leave such a term behind. A missing file is an empty
// history; a damaged one is ErrCorrupt naming the file and offset.
func readEpochs(fsys vfs.FS, dir string, last uint64) ([]repl.Epoch, error) {
	path := filepath.Join(dir, epochsFile)
	f, err := fsys.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	const fixed = len(epochsMagic) + 4
	corrupt := func(off int64, format string, args ...any) error {
		return &wal.CorruptError{File: path, Offset: off, Reason: fmt.Sprintf(format, args...)}
	}
	if size < int64(fixed)+4 || size > int64(fixed)+4+1<<20 {
		return nil, corrupt(0, "epoch history file of %d bytes", size)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, err
	}
	body := b[:size-4]
	if crc32.Checksum(body, epochCRC) != binary.LittleEndian.Uint32(b[size-4:]) {
		return nil, corrupt(size-4, "epoch history checksum mismatch")
	}
	if string(b[:len(epochsMagic)]) != epochsMagic {
		return nil, corrupt(0, "bad magic %q", b[:len(epochsMagic)])
	}
	n := int(binary.LittleEndian.Uint32(b[len(epochsMagic):]))
	if len(body) != fixed+n*repl.EpochSize {
		return nil, corrupt(int64(len(epochsMagic)), "%d epochs in %d bytes", n, len(body))
	}
	h := make([]repl.Epoch, 0, n)
	for i := range n {
		e := repl.DecodeEpoch(body[fixed+i*repl.EpochSize:])
		if e.Start > last {
			break
		}
		h = append(h, e)
	}
	if err := repl.CheckHistory(h); err != nil {
		return nil, corrupt(int64(fixed), "%v", err)
	}
	return h, nil
}

// writeEpochs replaces dir's history file with h: a temporary file, synced,
// renamed over it, and the directory synced.
func writeEpochs(fsys vfs.FS, dir string, h []repl.Epoch) error {
	b := append([]byte(epochsMagic), make([]byte, 4)...)
	binary.LittleEndian.PutUint32(b[len(epochsMagic):], uint32(len(h)))
	for _, e := range h {
		b = repl.AppendEpoch(b, e)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, epochCRC))
	return replaceFile(fsys, dir, epochsFile, b)
}

// beginEpoch starts the queue's leadership term on Open: the history file
// gets the new epoch, the log its epoch record, synced. A directory marked by
// Follow is promoted: the term starts promotionSeqGap seqs up, and the
// marker goes once the record is durable.
func (q *Queue) beginEpoch(dir string) error {
	fsys := q.opts.fs
	last := q.log.LastSeq()
	h, err := readEpochs(fsys, dir, last)
	if err != nil {
		return fmt.Errorf("zeroloss: open %s: %w", dir, err)
	}
	marker := filepath.Join(dir, followerFile)
	// A follower's copy is promoted whether its marker or its identity says
	// so: Follow writes the identity first, and promotion rewrites it last.
	promote, err := exists(fsys, marker)
	if err != nil {
		return err
	}
	promote = promote || q.identity.Kind == kindFollower
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	e := repl.Epoch{Num: 1, ID: binary.LittleEndian.Uint64(id[:]), PrevLast: last, Start: q.log.NextSeq()}
	if n := len(h); n > 0 {
		e.Num = h[n-1].Num + 1
	}
	if promote {
		e.Start = max(e.Start, last+1+promotionSeqGap)
	}
	if e.Num > math.MaxUint32 {
		return fmt.Errorf("zeroloss: open %s: epoch %d does not fit a frame's 32-bit epoch field", dir, e.Num)
	}
	h = append(h, e)
	if err := writeEpochs(fsys, dir, h); err != nil {
		return err
	}
	if err := q.log.SkipTo(e.Start); err != nil {
		return fmt.Errorf("zeroloss: open %s: starting epoch %d at seq %d: %w", dir, e.Num, e.Start, err)
	}
	q.log.SetEpoch(uint32(e.Num))
	frame := record.Append(nil, &record.Record{Type: record.TypeEpoch, Stream: internalStream,
		Time: q.opts.now().UnixNano(), Payload: repl.AppendEpoch(nil, e)})
	if first, _, err := q.log.Append(frame); err != nil {
		return fmt.Errorf("zeroloss: open %s: appending the epoch record: %w", dir, err)
	} else if first != e.Start {
		return fmt.Errorf("zeroloss: open %s: epoch record got seq %d, want %d", dir, first, e.Start)
	}
	if _, err := q.log.Sync(); err != nil {
		return fmt.Errorf("zeroloss: open %s: syncing the epoch record: %w", dir, err)
	}
	if promote {
		// The gap is durable (the epoch record above it is synced): only now
		// may the identity say queue, keeping the follower's queue ID (a
		// follower that never met its leader gets a new one). Then the
		// marker goes; a crash between the two promotes again, harmlessly.
		id := identity{Kind: kindQueue, Queue: q.identity.Queue}
		if id.Queue.isZero() {
			if id.Queue, err = newQueueID(); err != nil {
				return err
			}
		}
		if err := writeIdentity(fsys, dir, id); err != nil {
			return err
		}
		q.identity = id
		if err := fsys.Remove(marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := fsys.SyncDir(dir); err != nil {
			return err
		}
		q.logger.Info("zeroloss: promoted a follower's directory", "dir", dir, "epoch", e.Num,
			"last_seq", last, "first_seq", e.Start, "queue_id", q.identity.Queue)
	}
	q.epochs = h
	return nil
}

// markFollower records in dir that it holds a follower's copy, so that the
// Open that promotes it starts its term above any seq the old leader used.
func markFollower(fsys vfs.FS, dir string) error {
	marker := filepath.Join(dir, followerFile)
	f, err := fsys.Open(marker)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if f, err = fsys.Create(marker); err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.SyncDir(dir)
	}
	return err
}
