//go:build unix && !linux && !darwin

package vfs

import "os"

// datasync falls back to fsync(2) on Unix systems other than Linux and macOS.
func datasync(f *os.File) error { return f.Sync() }

// allocate grows the file with ftruncate; the space is not reserved.
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
