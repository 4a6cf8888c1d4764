//go:build windows

package vfs

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/windows"
)

// datasync is FlushFileBuffers, which writes the file's data and metadata and
// asks the drive to flush its cache.
func datasync(f *os.File) error { return f.Sync() }

// allocate sets the end of file (SetEndOfFile), which reserves the space on
// NTFS; the new bytes read as zeros.
func allocate(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	return f.Truncate(size)
}

// syncDir does nothing on Windows: NTFS journals directory changes itself and
// a directory cannot be flushed like a file.
func syncDir(string) error { return nil }

type winLock struct{ f *os.File }

func lockFile(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	ol := new(windows.Overlapped)
	err = windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	if err != nil {
		f.Close()
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
			return nil, ErrLocked
		}
		return nil, &os.PathError{Op: "LockFileEx", Path: name, Err: err}
	}
	return winLock{f}, nil
}

func (l winLock) Close() error { return l.f.Close() }

func isPlatformNoSpace(err error) bool {
	return errors.Is(err, windows.ERROR_DISK_FULL) || errors.Is(err, windows.ERROR_HANDLE_DISK_FULL)
}
