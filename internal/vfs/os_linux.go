//go:build linux

package vfs

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// datasync is fdatasync(2): the data and the metadata needed to read it (the
// size), without the timestamps.
func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

// allocate is fallocate(2) mode 0: blocks are reserved and the size grows, so
// later writes below size cannot fail with ENOSPC. File systems without
// fallocate fall back to growing the file with ftruncate.
func allocate(f *os.File, size int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), 0, 0, size)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS):
			return growTo(f, size)
		default:
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
		}
	}
}

func growTo(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	return f.Truncate(size)
}

// NextData implements DataFinder with lseek SEEK_DATA and SEEK_HOLE: ext4
// and XFS report preallocated, never written extents as holes (pages written
// and not yet flushed are data). A file system without them reports the
// whole file as data. Both lseeks take absolute offsets and each returns its
// own result, so calls may run concurrently; the file offset they move is
// used by nothing else (reads and writes are positional).
func (f osFile) NextData(off int64) (start, end int64, ok bool, err error) {
	fd := int(f.Fd())
	start, err = unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return 0, 0, false, nil // only holes from off on
	}
	if err != nil {
		return 0, 0, false, &os.PathError{Op: "lseek SEEK_DATA", Path: f.Name(), Err: err}
	}
	end, err = unix.Seek(fd, start, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, false, &os.PathError{Op: "lseek SEEK_HOLE", Path: f.Name(), Err: err}
	}
	return start, end, true, nil
}
