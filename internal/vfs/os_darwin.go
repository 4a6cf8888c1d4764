//go:build darwin

package vfs

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// datasync is fcntl(F_FULLFSYNC): on macOS plain fsync(2) only hands the data
// to the drive, whose cache may still lose it on power loss; F_FULLFSYNC asks
// the drive to flush its cache too. File systems that do not support it (some
// network mounts) fall back to fsync.
func datasync(f *os.File) error {
	for {
		_, err := unix.FcntlInt(f.Fd(), unix.F_FULLFSYNC, 0)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL):
			return f.Sync()
		default:
			return &os.PathError{Op: "fcntl F_FULLFSYNC", Path: f.Name(), Err: err}
		}
	}
}

// allocate reserves blocks with F_PREALLOCATE (contiguous first, then any),
// then sets the size with ftruncate so the space reads as zeros.
func allocate(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	store := unix.Fstore_t{Flags: unix.F_ALLOCATECONTIG | unix.F_ALLOCATEALL, Posmode: unix.F_PEOFPOSMODE, Length: size - fi.Size()}
	if err := unix.FcntlFstore(f.Fd(), unix.F_PREALLOCATE, &store); err != nil {
		store.Flags = unix.F_ALLOCATEALL
		if err := unix.FcntlFstore(f.Fd(), unix.F_PREALLOCATE, &store); err != nil && errors.Is(err, unix.ENOSPC) {
			return &os.PathError{Op: "fcntl F_PREALLOCATE", Path: f.Name(), Err: err}
		}
	}
	return f.Truncate(size)
}
