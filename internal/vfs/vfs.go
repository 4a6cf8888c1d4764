// Package vfs is the small file-system interface the log is written against,
// with three implementations: the operating system's (OS), a crashable
// in-memory file system that can forget whatever was not synced (MemFS), and a
// fault injector that wraps any FS and fails chosen operations (FaultFS).
//
// The interface is deliberately narrow: positional reads and writes only (no
// file offset), explicit durability calls, and nothing the log does not use.
package vfs

import (
	"errors"
	"io"
	"os"
)

// ErrLocked is matched (errors.Is) by the error Lock returns when another
// holder has the lock. That error says which: another process, or this one
// (the file is locked twice here: a directory opened twice, the first not
// closed yet).
var ErrLocked = errors.New("vfs: locked")

// lockedError is Lock's ErrLocked, saying where the holder is.
type lockedError struct{ here bool }

func (e lockedError) Error() string {
	if e.here {
		return "vfs: locked: already open in this process (a Queue, Producer or follower on it is not closed yet)"
	}
	return "vfs: locked by another process"
}

func (e lockedError) Is(target error) bool { return target == ErrLocked }

var (
	errLockedHere      error = lockedError{here: true}
	errLockedElsewhere error = lockedError{}
)

// FS is a file system. Implementations are safe for concurrent use.
type FS interface {
	// Create creates a new file for reading and writing; it fails if the file
	// exists. The directory entry is durable only after SyncDir.
	Create(name string) (File, error)
	// Open opens an existing file for reading only.
	Open(name string) (File, error)
	// OpenRW opens an existing file for reading and writing.
	OpenRW(name string) (File, error)
	// Remove removes a file. Durable only after SyncDir of its directory.
	Remove(name string) error
	// Rename renames a file, replacing newname if it exists. Durable only
	// after SyncDir of the directory.
	Rename(oldname, newname string) error
	// MkdirAll creates a directory and its parents.
	MkdirAll(dir string, perm os.FileMode) error
	// List returns the names (not paths) of the entries in dir, sorted.
	List(dir string) ([]string, error)
	// SyncDir makes the directory's entries (creates, renames, removes) durable.
	SyncDir(dir string) error
	// Lock takes an exclusive lock on the file name (created if missing),
	// without blocking: if another holder has it, it returns an error
	// matching ErrLocked that says whether the holder is in this process.
	// Closing the returned io.Closer releases the lock.
	Lock(name string) (io.Closer, error)
}

// File is an open file. ReadAt may be called concurrently with everything;
// WriteAt, Truncate and Allocate are called by one goroutine at a time, which
// may run concurrently with Sync.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes the file's data, and the metadata needed to read it back
	// (its size), durable: fdatasync on Linux, F_FULLFSYNC on macOS,
	// FlushFileBuffers on Windows.
	Sync() error
	// Truncate changes the file's size; durable after Sync.
	Truncate(size int64) error
	// Allocate reserves disk space so that the file is at least size bytes
	// long and writes below size cannot fail for lack of space; the new bytes
	// read as zeros. It returns an error matching syscall.ENOSPC (see
	// IsNoSpace) when the disk is full.
	Allocate(size int64) error
	// Size returns the file's current size.
	Size() (int64, error)
	// Name returns the name the file was opened with.
	Name() string
}

// DataFinder is implemented by files that can tell, without reading them,
// where bytes that may be non-zero lie: preallocated space never written, and
// holes, read as zeros and need not be read (SEEK_DATA and SEEK_HOLE on
// Linux). Recovery uses it to find a torn tail past zeros without reading a
// segment's free space.
type DataFinder interface {
	// NextData returns the first range [start, end) at or after off that
	// may hold non-zero bytes (start >= off), or ok == false when every
	// byte from off to the end of the file reads as zeros. An error means
	// the file system cannot tell: read the bytes.
	NextData(off int64) (start, end int64, ok bool, err error)
}
