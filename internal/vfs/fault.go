package vfs

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// Op names an operation that FaultFS counts and can make fail.
type Op int

const (
	// OpWrite is File.WriteAt.
	OpWrite Op = iota
	// OpSync is File.Sync.
	OpSync
	// OpRename is FS.Rename.
	OpRename
	// OpCreate is FS.Create.
	OpCreate
	// OpAllocate is File.Allocate.
	OpAllocate
	// OpTruncate is File.Truncate.
	OpTruncate
	// OpRemove is FS.Remove.
	OpRemove
	// OpSyncDir is FS.SyncDir.
	OpSyncDir
	opLimit // number of ops; not an op
)

// String returns the op's name, such as "write".
func (op Op) String() string {
	switch op {
	case OpWrite:
		return "write"
	case OpSync:
		return "sync"
	case OpRename:
		return "rename"
	case OpCreate:
		return "create"
	case OpAllocate:
		return "allocate"
	case OpTruncate:
		return "truncate"
	case OpRemove:
		return "remove"
	case OpSyncDir:
		return "syncdir"
	}
	return fmt.Sprintf("Op(%d)", int(op))
}

// FaultFS wraps an FS and makes chosen calls fail, to test error paths. It is
// safe for concurrent use; rules may be changed while the wrapped file system
// is in use. Files it opens are wrapped too, and count towards its rules.
// Operations not named by an Op (Open, OpenRW, MkdirAll, List, Lock, ReadAt,
// Size, Close) are passed through untouched.
//
// A failed call has no effect on the inner file system, except a short write,
// which writes its first half.
type FaultFS struct {
	inner FS

	mu       sync.Mutex
	counts   [opLimit]int
	rules    []*faultRule
	diskFull bool
}

// faultRule makes the call of op numbered at (as counted in FaultFS.counts)
// fail with err, or every call from it on if from is set. A shortWrite rule
// makes that call write only half of its bytes instead.
type faultRule struct {
	op         Op
	at         int
	from       bool
	shortWrite bool
	lose       bool // a failed Sync loses the file's unsynced writes (FailSyncLosingWrites)
	err        error
}

// NewFault returns a FaultFS over inner with no rules.
func NewFault(inner FS) *FaultFS {
	return &FaultFS{inner: inner}
}

// FailNth makes the n-th call of op from now on (n = 1 is the next one) fail
// once with err, returned as given, and without effect. It panics if n < 1.
func (f *FaultFS) FailNth(op Op, n int, err error) { f.addRule(op, n, false, false, err) }

// FailFrom makes the n-th call of op from now on and every later one fail with
// err, returned as given, and without effect. It panics if n < 1.
func (f *FaultFS) FailFrom(op Op, n int, err error) { f.addRule(op, n, true, false, err) }

// FailSyncLosingWrites makes the n-th File.Sync from now on fail once with
// err as Linux fails an fsync whose writeback failed: when the inner file is
// a MemFS file, its unsynced writes stay readable (the page cache keeps them,
// clean) but never reach the disk, not even through a later Sync that
// succeeds; only writing those bytes again does. Over other file systems it
// is FailNth(OpSync, n, err). It panics if n < 1.
func (f *FaultFS) FailSyncLosingWrites(n int, err error) {
	f.addRule(OpSync, n, false, false, err)
	f.mu.Lock()
	f.rules[len(f.rules)-1].lose = true
	f.mu.Unlock()
}

// ShortWriteNth makes the n-th WriteAt from now on write only the first half of
// its bytes (rounded down) to the inner file and return that count with
// io.ErrShortWrite. It panics if n < 1.
func (f *FaultFS) ShortWriteNth(n int) { f.addRule(OpWrite, n, false, true, io.ErrShortWrite) }

func (f *FaultFS) addRule(op Op, n int, from, shortWrite bool, err error) {
	if n < 1 {
		panic(fmt.Sprintf("vfs: FaultFS rule for call %d of %v: calls are numbered from 1", n, op))
	}
	if op < 0 || op >= opLimit {
		panic(fmt.Sprintf("vfs: FaultFS rule for unknown %v", op))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	rule := &faultRule{op: op, at: f.counts[op] + n, from: from, shortWrite: shortWrite, err: err}
	f.rules = append(f.rules, rule)
}

// SetDiskFull sets whether the disk is full. While it is, an Allocate that
// would grow a file and a WriteAt that would extend a file past its current
// size fail, without effect, with an *os.PathError wrapping syscall.ENOSPC
// (see IsNoSpace). Other calls, Create included, still work.
func (f *FaultFS) SetDiskFull(full bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.diskFull = full
}

// Clear removes every rule and ends the disk-full state. Counts are kept.
func (f *FaultFS) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
	f.diskFull = false
}

// Count returns how many calls of op have been made since NewFault, including
// the ones that failed.
func (f *FaultFS) Count(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[op]
}

// before counts a call of op and returns the rule that applies to it, or nil.
// Failing rules win over a short write; a spent one-shot rule is dropped. It
// also reports whether the disk is full.
func (f *FaultFS) before(op Op) (rule *faultRule, diskFull bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[op]++
	call := f.counts[op]
	kept := f.rules[:0]
	for _, candidate := range f.rules {
		matches := candidate.op == op && (call == candidate.at || candidate.from && call > candidate.at)
		if matches && (rule == nil || rule.shortWrite) {
			rule = candidate
		}
		if !matches || candidate.from {
			kept = append(kept, candidate)
		}
	}
	clear(f.rules[len(kept):])
	f.rules = kept
	return rule, f.diskFull
}

// check counts a call of op and returns the error it must fail with, if any.
func (f *FaultFS) check(op Op) error {
	if rule, _ := f.before(op); rule != nil && !rule.shortWrite {
		return rule.err
	}
	return nil
}

// Create creates a file through the inner FS, unless a rule fails it.
func (f *FaultFS) Create(name string) (File, error) {
	if err := f.check(OpCreate); err != nil {
		return nil, err
	}
	return f.wrap(f.inner.Create(name))
}

// Open opens a file for reading through the inner FS.
func (f *FaultFS) Open(name string) (File, error) { return f.wrap(f.inner.Open(name)) }

// OpenRW opens a file for reading and writing through the inner FS.
func (f *FaultFS) OpenRW(name string) (File, error) { return f.wrap(f.inner.OpenRW(name)) }

func (f *FaultFS) wrap(file File, err error) (File, error) {
	if err != nil {
		return nil, err
	}
	return &faultFile{fs: f, inner: file}, nil
}

// Remove removes a file through the inner FS, unless a rule fails it.
func (f *FaultFS) Remove(name string) error {
	if err := f.check(OpRemove); err != nil {
		return err
	}
	return f.inner.Remove(name)
}

// Rename renames a file through the inner FS, unless a rule fails it.
func (f *FaultFS) Rename(oldname, newname string) error {
	if err := f.check(OpRename); err != nil {
		return err
	}
	return f.inner.Rename(oldname, newname)
}

// MkdirAll creates directories through the inner FS.
func (f *FaultFS) MkdirAll(dir string, perm os.FileMode) error { return f.inner.MkdirAll(dir, perm) }

// List lists a directory through the inner FS.
func (f *FaultFS) List(dir string) ([]string, error) { return f.inner.List(dir) }

// SyncDir syncs a directory through the inner FS, unless a rule fails it.
func (f *FaultFS) SyncDir(dir string) error {
	if err := f.check(OpSyncDir); err != nil {
		return err
	}
	return f.inner.SyncDir(dir)
}

// Lock takes a lock through the inner FS.
func (f *FaultFS) Lock(name string) (io.Closer, error) { return f.inner.Lock(name) }

// faultFile wraps a File of the inner FS.
type faultFile struct {
	fs    *FaultFS
	inner File
}

// ReadAt reads through the inner file.
func (f *faultFile) ReadAt(p []byte, off int64) (int, error) { return f.inner.ReadAt(p, off) }

// Size returns the inner file's size.
func (f *faultFile) Size() (int64, error) { return f.inner.Size() }

// Name returns the inner file's name.
func (f *faultFile) Name() string { return f.inner.Name() }

// Close closes the inner file.
func (f *faultFile) Close() error { return f.inner.Close() }

// WriteAt writes through the inner file, unless a rule fails it, makes it
// short, or the full disk refuses to extend the file.
func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	rule, diskFull := f.fs.before(OpWrite)
	if rule != nil && !rule.shortWrite {
		return 0, rule.err
	}
	if diskFull {
		if err := f.checkSpace("write", off+int64(len(p))); err != nil {
			return 0, err
		}
	}
	if rule != nil { // a short write
		half := len(p) / 2
		if half > 0 {
			if n, err := f.inner.WriteAt(p[:half], off); err != nil {
				return n, err
			}
		}
		return half, io.ErrShortWrite
	}
	return f.inner.WriteAt(p, off)
}

// Sync syncs the inner file, unless a rule fails it.
func (f *faultFile) Sync() error {
	if rule, _ := f.fs.before(OpSync); rule != nil {
		if l, ok := f.inner.(writebackLoser); ok && rule.lose {
			l.loseUnsynced()
		}
		return rule.err
	}
	return f.inner.Sync()
}

// writebackLoser is a file that can lose its unsynced writes as a failed
// writeback does (MemFS files).
type writebackLoser interface{ loseUnsynced() }

// Truncate truncates the inner file, unless a rule fails it.
func (f *faultFile) Truncate(size int64) error {
	if err := f.fs.check(OpTruncate); err != nil {
		return err
	}
	return f.inner.Truncate(size)
}

// Allocate allocates through the inner file, unless a rule fails it or the
// full disk refuses to grow the file.
func (f *faultFile) Allocate(size int64) error {
	rule, diskFull := f.fs.before(OpAllocate)
	if rule != nil {
		return rule.err
	}
	if diskFull {
		if err := f.checkSpace("allocate", size); err != nil {
			return err
		}
	}
	return f.inner.Allocate(size)
}

// checkSpace returns ENOSPC, as the full disk makes it, if the file would
// have to grow to be end bytes long.
func (f *faultFile) checkSpace(op string, end int64) error {
	size, err := f.inner.Size()
	if err != nil {
		return err
	}
	if end > size {
		return &os.PathError{Op: op, Path: f.inner.Name(), Err: syscall.ENOSPC}
	}
	return nil
}
