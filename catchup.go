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

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// Catching up across deleted segments (ARCHITECTURE.md, "Replication"): a
// follower that jumps over records its leader deleted first receives the
// leader's latest whole checkpoint (repl.TypeCheckpoint) and keeps it in its
// CATCHUP file before it appends the frames after the jump. Until a whole
// checkpoint follows the last gap in its log, recovery takes the file's
// checkpoint as the consumer state in place of what the copy held before the
// gap: it names the groups declared in the gap and holds their retries and
// dead letters.
//
// The file: magic "ZLCATCH1", u64 seq of the checkpoint's first part, u64
// length N, N bytes of checkpoint (record.AppendCheckpoint), CRC-32C of all
// that; written whole by replaceFile (temporary file, fdatasync, rename).

const (
	catchupFile  = "CATCHUP"
	catchupMagic = "ZLCATCH1"
)

// catchup is a CATCHUP file's checkpoint.
type catchup struct {
	seq uint64
	c   record.Checkpoint
}

func encodeCatchup(seq uint64, payload []byte) []byte {
	b := make([]byte, 0, len(catchupMagic)+16+len(payload)+4)
	b = append(b, catchupMagic...)
	b = binary.LittleEndian.AppendUint64(b, seq)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(payload)))
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, epochCRC))
}

// writeCatchup makes the checkpoint whose first part is at seq durable as
// dir's CATCHUP file.
func writeCatchup(fsys vfs.FS, dir string, seq uint64, payload []byte) error {
	return replaceFile(fsys, dir, catchupFile, encodeCatchup(seq, payload))
}

// readCatchup reads dir's CATCHUP file; nil if there is none.
func readCatchup(fsys vfs.FS, dir string) (*catchup, error) {
	path := filepath.Join(dir, catchupFile)
	f, err := fsys.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("zeroloss: reading %s: %w", path, err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, fmt.Errorf("zeroloss: reading %s: %w", path, err)
	}
	const fixed = len(catchupMagic) + 16
	if size < int64(fixed)+4 {
		return nil, fmt.Errorf("zeroloss: %s: not a catch-up checkpoint (%d bytes): %w", path, size, ErrCorrupt)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("zeroloss: reading %s: %w", path, err)
	}
	if len(b) < fixed+4 || !bytes.Equal(b[:len(catchupMagic)], []byte(catchupMagic)) {
		return nil, fmt.Errorf("zeroloss: %s: not a catch-up checkpoint (%d bytes): %w", path, len(b), ErrCorrupt)
	}
	n := binary.LittleEndian.Uint64(b[len(catchupMagic)+8:])
	if n != uint64(len(b)-fixed-4) {
		return nil, fmt.Errorf("zeroloss: %s: checkpoint of %d bytes in a %d-byte file: %w", path, n, len(b), ErrCorrupt)
	}
	if crc32.Checksum(b[:len(b)-4], epochCRC) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("zeroloss: %s: checksum mismatch: %w", path, ErrCorrupt)
	}
	c, err := record.DecodeCheckpoint(b[fixed : len(b)-4])
	if err != nil {
		return nil, fmt.Errorf("zeroloss: %s: %w", path, err)
	}
	return &catchup{seq: binary.LittleEndian.Uint64(b[len(catchupMagic):]), c: c}, nil
}

// catchupFor returns dir's CATCHUP checkpoint if it belongs to the last of
// the gaps (its seq at or above that gap's base): written before the frames
// after that gap. Without gaps, or with a file from an earlier jump, nil.
func catchupFor(fsys vfs.FS, dir string, gaps []uint64) (*catchup, error) {
	if len(gaps) == 0 {
		return nil, nil
	}
	cu, err := readCatchup(fsys, dir)
	if err != nil || cu == nil || cu.seq < gaps[len(gaps)-1] {
		return nil, err
	}
	return cu, nil
}

// latestCheckpoint returns the frames (the TypeCheckpoint parts, as stored)
// of the latest whole checkpoint in the log, nil if it holds none. The
// leader's latest checkpoint is at or above its first segment: retention
// writes one before it deletes anything.
func (q *Queue) latestCheckpoint() ([]byte, error) {
	rd := q.log.NewUncappedReader(q.log.FirstSeq())
	defer rd.Close()
	j := record.CheckpointJoiner{HeadersOnly: true}
	var cur, best []byte
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			return best, nil
		}
		if err != nil {
			return nil, err
		}
		if rec.Type != record.TypeCheckpoint {
			continue
		}
		if part, ok, err := record.DecodeCheckpointPart(rec.Payload); err == nil && (!ok || part.Index == 0) {
			cur = cur[:0]
		}
		cur = record.Append(cur, &rec)
		if _, _, done, err := j.Add(rec.Seq, rec.Payload); err == nil && done {
			best = append(best[:0], cur...)
			cur = cur[:0]
		}
	}
}

// catchUp takes parts of the leader's latest checkpoint, sent ahead of a
// jump over records the leader deleted, and once it has them all makes the
// checkpoint durable in dir's CATCHUP file (catchup.go), before any frame
// after the jump is appended: recovery takes it as the consumer state after
// the gap until a checkpoint of the log follows the gap.
func (f *follower) catchUp(frames []byte) error {
	for off := 0; off < len(frames); {
		rec, n, err := record.Decode(frames[off:], f.maxFrame)
		if err != nil || rec.Type != record.TypeCheckpoint {
			return protoErr("the leader's checkpoint rejected: a %v frame at byte %d (%v)", rec.Type, off, err)
		}
		off += n
		f.snapping = true
		payload, start, whole, err := f.snap.Add(rec.Seq, rec.Payload)
		if err != nil {
			return protoErr("the leader's checkpoint rejected: part at seq %d: %v", rec.Seq, err)
		}
		if !whole {
			continue
		}
		f.snapping = false
		if _, err := record.DecodeCheckpoint(payload); err != nil {
			return protoErr("the leader's checkpoint at seq %d rejected: %v", start, err)
		}
		if err := writeCatchup(f.fs, f.dir, start, payload); err != nil {
			return fmt.Errorf("zeroloss: follow: %w", err)
		}
		f.logger.Info("zeroloss: follow: took the leader's checkpoint ahead of a jump over deleted records", "checkpoint_seq", start)
	}
	return nil
}
