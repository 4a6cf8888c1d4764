//go:build linux

package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zerolossmq/zeroloss"
)

// rawSize is the message size of the raw baselines: the 1 KiB of the
// BenchmarkSend cases they are compared with.
const rawSize = 1 << 10

// rawFileSize is the size of the preallocated file of the fdatasync
// baselines: one queue segment.
const rawFileSize = zeroloss.DefaultSegmentSize

// BenchmarkRaw measures what the disk gives without the queue, in the same run
// as BenchmarkSend so its figures read as ratios. One op is one 1 KiB message
// in every sub-benchmark, batched ones included. Linux only: it calls
// fallocate(2) and fdatasync(2) directly.
func BenchmarkRaw(b *testing.B) {
	size := sizeName(rawSize)
	b.Run("op=write/size="+size, benchmarkRawWrite)
	for _, p := range []int{1, 16} {
		b.Run(fmt.Sprintf("op=write+fdatasync/size=%s/producers=%d", size, p), func(b *testing.B) {
			benchmarkRawWriteSync(b, p)
		})
	}
	for _, n := range []int{16, 64} {
		for _, fresh := range []bool{false, true} {
			blocks := "written"
			if fresh {
				blocks = "fresh"
			}
			b.Run(fmt.Sprintf("op=batch+fdatasync/size=%s/batch=%d/blocks=%s", size, n, blocks), func(b *testing.B) {
				benchmarkRawBatchSync(b, n, fresh)
			})
		}
	}
}

// benchmarkRawWrite is op=write: one goroutine calls os.File.Write (one
// write(2)) with 1 KiB, b.N times, on a new file in b.TempDir() opened with
// O_APPEND, so the file grows by 1 KiB per op. Nothing is synced: this is the
// cost of putting a message in the page cache, what FlushAsync promises.
func benchmarkRawWrite(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	require.NoError(b, err)
	b.Cleanup(func() { f.Close() })
	buf := filledBody(rawSize)
	b.SetBytes(rawSize)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b)
}

// benchmarkRawWriteSync is op=write+fdatasync: per op, one pwrite(2) of 1 KiB
// (os.File.WriteAt) then one unix.Fdatasync on the same descriptor. The file
// is created in b.TempDir(), preallocated to 64 MiB with unix.Fallocate (mode
// 0, as a queue segment is) and fsynced before the timer starts; writes go at
// increasing offsets and wrap to 0 at 64 MiB, so the size never changes and
// each fdatasync pays for the data, not for file growth.
//
// Caveat when reading ratios: fallocate(2) leaves unwritten extents, so until
// the first wrap each fdatasync also commits their conversion (a journal
// commit on ext4 and XFS); once the benchmark has wrapped (b.N above 64 Ki
// messages) it overwrites written blocks and syncs data alone, which is
// cheaper. With Options.SegmentWarmup (off by default, and off in
// BenchmarkSend) the queue writes zeros over each next segment in the
// background so that it too syncs data alone, except in its first segment;
// by default it appends into fresh preallocated extents, like blocks=fresh.
//
// With producers > 1, that many goroutines each do their share of the b.N ops
// on the one shared descriptor, taking offsets from an atomic counter: what as
// many naive producers, each syncing its own message, would get.
func benchmarkRawWriteSync(b *testing.B, producers int) {
	f, fd := preallocatedFile(b)
	buf := filledBody(rawSize)
	var next atomic.Int64 // next 1 KiB slot to write, before wrapping
	slots := int64(rawFileSize / rawSize)
	errs := make([]error, producers)
	b.SetBytes(rawSize)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for p := range producers {
		n := share(b.N, producers, p)
		wg.Go(func() {
			for range n {
				offset := (next.Add(1) - 1) % slots * rawSize
				if _, err := f.WriteAt(buf, offset); err != nil {
					errs[p] = err
					return
				}
				if err := fdatasync(fd); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	for _, err := range errs {
		require.NoError(b, err)
	}
	reportRate(b)
}

// benchmarkRawBatchSync is op=batch+fdatasync: one goroutine writes batch
// messages of 1 KiB as one pwrite(2) of batch KiB, then calls unix.Fdatasync
// once, until b.N messages are written (the last batch may be short). The
// file is preallocated and wrapped as for op=write+fdatasync (64 MiB is 64 Ki
// messages, so a long run is mostly overwrites; see the caveat there). This is
// the physical limit for batch producers waiting on one fdatasync, the best
// group commit can do; ns/op is per message.
//
// blocks=written wraps to offset 0 of the same file at 64 MiB, so past the
// first 64 Ki messages it overwrites written blocks: the limit for a log that
// recycles its files. blocks=fresh starts a new preallocated file instead,
// so every fdatasync also commits the conversion of fresh extents: the limit
// for a log that appends into new preallocated segments, as zeroloss does
// (without SegmentWarmup).
func benchmarkRawBatchSync(b *testing.B, batch int, fresh bool) {
	f, fd := preallocatedFile(b)
	buf := filledBody(batch * rawSize)
	b.SetBytes(rawSize)
	b.ReportAllocs()
	b.ResetTimer()
	var offset int64
	for done := 0; done < b.N; {
		n := min(batch, b.N-done)
		if offset+int64(n*rawSize) > rawFileSize {
			offset = 0
			if fresh {
				b.StopTimer()
				f, fd = preallocatedFile(b)
				b.StartTimer()
			}
		}
		if _, err := f.WriteAt(buf[:n*rawSize], offset); err != nil {
			b.Fatal(err)
		}
		if err := fdatasync(fd); err != nil {
			b.Fatal(err)
		}
		offset += int64(n * rawSize)
		done += n
	}
	b.StopTimer()
	reportRate(b)
}

// preallocatedFile creates a file of rawFileSize bytes in b.TempDir(),
// reserved with fallocate(2) and fsynced, and returns it with its descriptor.
func preallocatedFile(b *testing.B) (*os.File, int) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	require.NoError(b, err)
	b.Cleanup(func() { f.Close() })
	fd := int(f.Fd())
	for {
		err = unix.Fallocate(fd, 0, 0, rawFileSize)
		if err != unix.EINTR {
			break
		}
	}
	require.NoError(b, err, "fallocate")
	require.NoError(b, f.Sync())
	return f, fd
}

// fdatasync is unix.Fdatasync, retried on EINTR as the queue's own is.
func fdatasync(fd int) error {
	for {
		if err := unix.Fdatasync(fd); err != unix.EINTR {
			return err
		}
	}
}
