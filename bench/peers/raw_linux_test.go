//go:build linux

package peers

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

const (
	rawSize     = 1 << 10  // one 1 KiB message per op
	rawFileSize = 64 << 20 // one zeroloss segment
)

// BenchmarkRawFsync is the disk's own limit for a producer that waits for
// each message to be durable: per op, one pwrite(2) of 1 KiB and one
// fdatasync(2), on a file preallocated with fallocate(2) to 64 MiB and
// fsynced before the timer starts. Offsets wrap to 0 at 64 MiB, so the file
// never grows. It is bench/'s BenchmarkRaw op=write+fdatasync/producers=1,
// repeated here so that every peer's msgs/s reads as a ratio to it in the
// same run.
func BenchmarkRawFsync(b *testing.B) {
	b.Run("op=write+fdatasync/size=1KiB/producers=1", func(b *testing.B) {
		f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		fd := int(f.Fd())
		if err := retryEINTR(func() error { return unix.Fallocate(fd, 0, 0, rawFileSize) }); err != nil {
			b.Fatalf("fallocate: %v", err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		buf := filledBody(rawSize)
		b.SetBytes(rawSize)
		b.ReportAllocs()
		startTimer(b)
		var offset int64
		for range b.N {
			if offset+rawSize > rawFileSize {
				offset = 0
			}
			if _, err := f.WriteAt(buf, offset); err != nil {
				b.Fatal(err)
			}
			if err := retryEINTR(func() error { return unix.Fdatasync(fd) }); err != nil {
				b.Fatal(err)
			}
			offset += rawSize
		}
		stopTimer(b)
		reportRate(b)
	})
}

func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}
