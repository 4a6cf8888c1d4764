package vfs

import (
	"errors"
	"io"
	"os"
	"sort"
	"sync"
	"syscall"
)

// OS is the operating system's file system.
var OS FS = osFS{}

type osFS struct{}

type osFile struct{ *os.File }

func (osFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Open(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) OpenRW(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Remove(name string) error                 { return os.Remove(name) }
func (osFS) Rename(oldname, newname string) error     { return os.Rename(oldname, newname) }
func (osFS) MkdirAll(dir string, p os.FileMode) error { return os.MkdirAll(dir, p) }

func (osFS) List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	sort.Strings(names)
	return names, nil
}

func (osFS) SyncDir(dir string) error { return syncDir(dir) }

// Lock takes the operating system's lock (flock, LockFileEx). Those locks
// belong to an open file, so a second Lock in the same process conflicts
// like one from another process; the locks this process holds are kept in
// heldLocks, by file identity, so that the error can say which it was.
func (osFS) Lock(name string) (io.Closer, error) {
	l, err := lockFile(name)
	if errors.Is(err, ErrLocked) {
		if heldHere(name) {
			return nil, errLockedHere
		}
		return nil, errLockedElsewhere
	}
	if err != nil {
		return nil, err
	}
	info, err := os.Stat(name)
	if err != nil {
		l.Close()
		return nil, err
	}
	h := &heldLock{Closer: l, info: info}
	heldMu.Lock()
	heldLocks[h] = true
	heldMu.Unlock()
	return h, nil
}

var (
	heldMu    sync.Mutex
	heldLocks = map[*heldLock]bool{} // the OS locks this process holds
)

// heldLock is an OS lock this process holds, with the identity of its file.
type heldLock struct {
	io.Closer
	info os.FileInfo
}

// Close releases the lock.
func (h *heldLock) Close() error {
	heldMu.Lock()
	delete(heldLocks, h)
	heldMu.Unlock()
	return h.Closer.Close()
}

// heldHere says whether this process holds a lock on the file name (the
// same file under any path: os.SameFile).
func heldHere(name string) bool {
	info, err := os.Stat(name)
	if err != nil {
		return false
	}
	heldMu.Lock()
	defer heldMu.Unlock()
	for h := range heldLocks {
		if os.SameFile(h.info, info) {
			return true
		}
	}
	return false
}

func (f osFile) Sync() error               { return datasync(f.File) }
func (f osFile) Allocate(size int64) error { return allocate(f.File, size) }

func (f osFile) Size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// IsNoSpace reports whether err means the disk is full.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || isPlatformNoSpace(err)
}
