package vfs

import (
	"bytes"
	"io"
	"io/fs"
	"slices"
	"syscall"
)

// memLock is a lock held in MemFS.locks.
type memLock struct {
	fs       *MemFS
	key      string
	epoch    int
	released bool
}

// Close releases the lock. It returns nil for a lock killed by a Crash and
// fs.ErrClosed if the lock was already released.
func (l *memLock) Close() error {
	l.fs.mu.Lock()
	defer l.fs.mu.Unlock()
	if l.epoch != l.fs.epoch {
		return nil
	}
	if l.released {
		return pathError("unlock", l.key, fs.ErrClosed)
	}
	l.released = true
	delete(l.fs.locks, l.key)
	return nil
}

// memFile is a handle on a MemFS file. Its fields other than closed never
// change; closed is guarded by fs.mu.
type memFile struct {
	fs       *MemFS
	node     *memNode
	name     string
	writable bool
	epoch    int
	closed   bool
}

// check returns the error an operation on the handle must fail with, if any:
// ErrCrashed for a dead handle, fs.ErrClosed for a closed one, EBADF for a
// write through a read-only one. Callers hold f.fs.mu.
func (f *memFile) check(op string, write bool) error {
	switch {
	case f.epoch != f.fs.epoch:
		return pathError(op, f.name, ErrCrashed)
	case f.closed:
		return pathError(op, f.name, fs.ErrClosed)
	case write && !f.writable:
		return pathError(op, f.name, syscall.EBADF)
	}
	return nil
}

// ReadAt reads from the current content like os.File.ReadAt: fewer than
// len(p) bytes come with io.EOF.
func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, pathError("read", f.name, syscall.EINVAL)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at off, growing the file with zeros if off is past its end.
func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	if err := f.fs.begin("write", f.name); err != nil {
		return 0, err
	}
	switch {
	case off < 0:
		return 0, pathError("write", f.name, syscall.EINVAL)
	case off+int64(len(p)) > maxMemFileSize:
		return 0, pathError("write", f.name, syscall.EFBIG)
	case len(p) == 0:
		return 0, nil
	}
	f.node.apply(memOp{offset: off, data: bytes.Clone(p)})
	f.node.unlose(off, off+int64(len(p)))
	return len(p), nil
}

// Truncate sets the size, cutting the file or growing it with zeros.
func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("truncate", true); err != nil {
		return err
	}
	if err := f.fs.begin("truncate", f.name); err != nil {
		return err
	}
	switch {
	case size < 0:
		return pathError("truncate", f.name, syscall.EINVAL)
	case size > maxMemFileSize:
		return pathError("truncate", f.name, syscall.EFBIG)
	}
	f.node.apply(memOp{resize: true, size: size})
	f.node.unlose(size, maxMemFileSize)
	return nil
}

// Allocate grows the file with zeros to at least size bytes; it never shrinks
// it and never runs out of space.
func (f *memFile) Allocate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("allocate", true); err != nil {
		return err
	}
	if err := f.fs.begin("allocate", f.name); err != nil {
		return err
	}
	if size > maxMemFileSize {
		return pathError("allocate", f.name, syscall.EFBIG)
	}
	if size > int64(len(f.node.data)) {
		f.node.apply(memOp{resize: true, size: size})
	}
	return nil
}

// Sync makes the current content durable. It works on read-only handles too,
// as fsync does.
func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("sync", false); err != nil {
		return err
	}
	if err := f.fs.begin("sync", f.name); err != nil {
		return err
	}
	f.node.durable = bytes.Clone(f.node.data)
	f.node.pending = nil
	for _, l := range f.node.lost { // clean pages: not written again
		copy(f.node.durable[min(l.offset, int64(len(f.node.durable))):], l.old)
	}
	return nil
}

// loseUnsynced makes the file's unsynced writes lost as a failed writeback
// loses them: reads still see them, the disk keeps its old bytes there (its
// size changes are kept), and only writing them again makes them durable.
func (f *memFile) loseUnsynced() {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.check("sync", false) != nil {
		return
	}
	n := f.node
	disk := resize(bytes.Clone(n.durable), len(n.data))
	for _, op := range n.pending {
		end := min(op.offset+int64(len(op.data)), int64(len(disk)))
		if op.resize || op.offset >= end {
			continue
		}
		n.lost = append(n.lost, memLost{offset: op.offset, old: bytes.Clone(disk[op.offset:end])})
	}
	n.durable = disk
	n.pending = nil
}

// unlose drops [from, to) from the lost ranges: it was written again or cut.
func (n *memNode) unlose(from, to int64) {
	if len(n.lost) == 0 {
		return
	}
	var kept []memLost
	for _, l := range n.lost {
		end := l.offset + int64(len(l.old))
		if end <= from || l.offset >= to {
			kept = append(kept, l)
			continue
		}
		if l.offset < from {
			kept = append(kept, memLost{offset: l.offset, old: l.old[:from-l.offset]})
		}
		if end > to {
			kept = append(kept, memLost{offset: to, old: l.old[to-l.offset:]})
		}
	}
	n.lost = kept
}

// Size returns the current size.
func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("stat", false); err != nil {
		return 0, err
	}
	return int64(len(f.node.data)), nil
}

// Name returns the name the file was opened with.
func (f *memFile) Name() string { return f.name }

// Close closes the handle. It returns nil for a handle killed by a Crash and
// fs.ErrClosed if the handle was already closed.
func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.epoch != f.fs.epoch {
		return nil
	}
	if f.closed {
		return pathError("close", f.name, fs.ErrClosed)
	}
	f.closed = true
	return nil
}

// apply makes op on the current content and records it as unsynced.
func (n *memNode) apply(op memOp) {
	n.data = applyOp(n.data, op, false)
	n.pending = append(n.pending, op)
}

// applyOp returns content with op made on it, reusing content's memory. With
// zeroData, a write puts zeros instead of its bytes.
func applyOp(content []byte, op memOp, zeroData bool) []byte {
	if op.resize {
		return resize(content, int(op.size))
	}
	end := int(op.offset) + len(op.data)
	if end > len(content) {
		content = resize(content, end)
	}
	if zeroData {
		clear(content[op.offset:end])
	} else {
		copy(content[op.offset:], op.data)
	}
	return content
}

// resize returns content cut or grown with zeros to size bytes.
func resize(content []byte, size int) []byte {
	if size <= len(content) {
		return content[:size]
	}
	old := len(content)
	content = slices.Grow(content, size-old)[:size]
	clear(content[old:])
	return content
}
