package wal

import (
	"fmt"
	"path/filepath"
	"reflect"
	"sync"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// Failed writebacks. When an fdatasync fails, Linux (since 4.13) reports the
// error once and marks the pages it could not write clean: they stay readable
// in the page cache, may never reach the disk, and a later fdatasync of the
// file succeeds without writing them. A Log that opens the file again reads
// those bytes, and if it sealed them (or appended after them), it would claim
// durable what the disk may not hold: a power loss would then leave zeros
// below a synced offset (ErrCorrupt).
//
// Within one process the package remembers, per segment file, the offset up
// to which an earlier fdatasync did succeed when a later one failed. The next
// recovery of that file writes the bytes above it again (they were never
// durable, so writing them over risks nothing that was) and its slot in
// place, so that its own fdatasync really writes them. When the failed
// fdatasync was a recovery's own, only the offset its slot records is known
// durable; the bytes above it may have been made durable by the crashed
// process, and are written over with the same bytes. Across processes
// nothing is remembered: ARCHITECTURE.md says what that leaves.

type writebackKey struct {
	fs   vfs.FS
	path string
}

var failedWritebacks struct {
	mu      sync.Mutex
	durable map[writebackKey]int64 // offset an fdatasync made durable before one failed
}

// writebackKeyFor returns the registry key of path on fsys, and false if
// fsys cannot be a map key.
func writebackKeyFor(fsys vfs.FS, path string) (writebackKey, bool) {
	if t := reflect.TypeOf(fsys); t == nil || !t.Comparable() {
		return writebackKey{}, false
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return writebackKey{fs: fsys, path: filepath.Clean(path)}, true
}

// rememberFailedSync records that an fdatasync of path failed while every
// byte below durable had been made durable by earlier ones.
func rememberFailedSync(fsys vfs.FS, path string, durable int64) {
	key, ok := writebackKeyFor(fsys, path)
	if !ok {
		return
	}
	failedWritebacks.mu.Lock()
	defer failedWritebacks.mu.Unlock()
	if failedWritebacks.durable == nil {
		failedWritebacks.durable = map[writebackKey]int64{}
	}
	if old, ok := failedWritebacks.durable[key]; ok {
		durable = min(old, durable)
	}
	failedWritebacks.durable[key] = durable
}

// failedSync returns the durable offset rememberFailedSync recorded for path.
func failedSync(fsys vfs.FS, path string) (int64, bool) {
	key, ok := writebackKeyFor(fsys, path)
	if !ok {
		return 0, false
	}
	failedWritebacks.mu.Lock()
	defer failedWritebacks.mu.Unlock()
	durable, ok := failedWritebacks.durable[key]
	return durable, ok
}

// forgetFailedSync drops what rememberFailedSync recorded for path: its bytes
// were made durable again, or the file is gone.
func forgetFailedSync(fsys vfs.FS, path string) {
	if key, ok := writebackKeyFor(fsys, path); ok {
		failedWritebacks.mu.Lock()
		delete(failedWritebacks.durable, key)
		failedWritebacks.mu.Unlock()
	}
}

// redirty writes seg's bytes from durable to its end over themselves, and its
// current slot over itself, so that the next fdatasync writes them even if an
// earlier failed one left their pages clean but not on the disk. The slot is
// written in place, not as a new generation: the other slot, durable, must
// stay as it is in case this write is torn. Both claim only bytes below
// durable, which are on the disk.
func (l *Log) redirty(seg *segment, durable int64) error {
	rewrite := func(buf []byte, off int64) error {
		if _, err := seg.file.ReadAt(buf, off); err != nil {
			return fmt.Errorf("wal: reading %s at offset %d: %w", seg.path, off, err)
		}
		if _, err := seg.file.WriteAt(buf, off); err != nil {
			return fmt.Errorf("wal: writing %s at offset %d again: %w", seg.path, off, err)
		}
		return nil
	}
	buf := make([]byte, 1<<20)
	for off := max(durable, dataStart); off < seg.end; {
		n := min(int64(len(buf)), seg.end-off)
		if err := rewrite(buf[:n], off); err != nil {
			return err
		}
		off += n
	}
	return rewrite(buf[:slotSize], slotOffset(seg.slot.generation))
}
