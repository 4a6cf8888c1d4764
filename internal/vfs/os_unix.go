//go:build unix

package vfs

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync() // fsync(2) on the directory makes its entries durable
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

type flock struct{ f *os.File }

func lockFile(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, &os.PathError{Op: "flock", Path: name, Err: err}
	}
	return flock{f}, nil
}

// Close releases the lock by closing the descriptor.
func (l flock) Close() error { return l.f.Close() }

func isPlatformNoSpace(error) bool { return false }
