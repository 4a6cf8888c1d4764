//go:build linux

package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// benchOptions are the queue's wal options (TrustSeals, a slot every 50ms or
// 1 MiB) with the default 64 MiB segments.
func benchOptions() Options {
	return Options{TrustSeals: true, SlotInterval: 50 * time.Millisecond, SlotBytes: 1 << 20}
}

// fillLastSegment writes fill bytes of 1 KiB frames into a new log in dir,
// 256 frames per Append and a Sync after each, and stops it: a clean Close,
// or (kill) as a kill -9 would, the slot lagging as it does at run time.
func fillLastSegment(b *testing.B, dir string, opts Options, fill int64, kill bool) {
	b.Helper()
	l, _, err := Open(dir, opts)
	require.NoError(b, err)
	one := record.Append(nil, &record.Record{Type: record.TypeMessage, Payload: make([]byte, 1024-record.HeaderSize)})
	var batch []byte
	for range 256 {
		batch = append(batch, one...)
	}
	for written := int64(0); written+int64(len(batch)) <= fill; written += int64(len(batch)) {
		_, _, err := l.Append(batch)
		require.NoError(b, err)
		_, err = l.Sync()
		require.NoError(b, err)
	}
	if kill {
		l.abandon()
		return
	}
	require.NoError(b, l.Close())
}

// dropPageCache evicts the clean pages of every file in dir from the page
// cache (posix_fadvise DONTNEED after an fdatasync; no root needed), as
// bench/open_linux_test.go does.
func dropPageCache(b *testing.B, dir string) {
	b.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(b, err)
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		require.NoError(b, err)
		require.NoError(b, unix.Fdatasync(int(f.Fd())))
		require.NoError(b, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
		require.NoError(b, f.Close())
	}
}

// BenchmarkOpenLastSegment times Open (TrustSeals, as the queue opens its
// log) of a log whose only segment (64 MiB) holds fill bytes of frames,
// after a clean Close or a kill -9 (the log is rebuilt before each Open,
// which seals it), with the page cache warm or dropped (cold):
//
//	flock /work/bench.lock go test -run '^$' -bench BenchmarkOpenLastSegment -benchtime 3x ./internal/wal
func BenchmarkOpenLastSegment(b *testing.B) {
	for _, fill := range []int64{1 << 20, 32 << 20, 63 << 20} {
		for _, stop := range []string{"clean", "kill"} {
			for _, cache := range []string{"warm", "cold"} {
				b.Run(fmt.Sprintf("MiB=%d/%s/%s", fill>>20, stop, cache), func(b *testing.B) {
					dir := b.TempDir()
					kill := stop == "kill"
					var total time.Duration
					for i := range b.N {
						b.StopTimer()
						if kill || i == 0 {
							require.NoError(b, os.RemoveAll(dir))
							fillLastSegment(b, dir, benchOptions(), fill, kill)
						}
						if cache == "cold" {
							dropPageCache(b, dir)
						}
						b.StartTimer()
						start := time.Now()
						l, _, err := Open(dir, benchOptions())
						took := time.Since(start)
						require.NoError(b, err)
						b.StopTimer()
						require.NoError(b, l.Close())
						b.StartTimer()
						total += took
					}
					b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/open")
				})
			}
		}
	}
}

// BenchmarkOpenManySegments times Open (TrustSeals) of a log of many small
// sealed segments (64 KiB each, full) after a clean Close, warm and cold,
// to show what each segment costs (opening it, reading its header page):
//
//	flock /work/bench.lock go test -run '^$' -bench BenchmarkOpenManySegments -benchtime 3x ./internal/wal
func BenchmarkOpenManySegments(b *testing.B) {
	for _, n := range []int{256, 1024} {
		dir := b.TempDir()
		opts := benchOptions()
		opts.SegmentSize = 64 << 10
		l, _, err := Open(dir, opts)
		require.NoError(b, err)
		one := record.Append(nil, &record.Record{Type: record.TypeMessage, Payload: make([]byte, 1024-record.HeaderSize)})
		for l.Stats().Segments < n {
			_, _, err := l.Append(one)
			require.NoError(b, err)
		}
		require.NoError(b, l.Close())
		for _, cache := range []string{"warm", "cold"} {
			b.Run(fmt.Sprintf("segments=%d/%s", n, cache), func(b *testing.B) {
				var total time.Duration
				for range b.N {
					if cache == "cold" {
						b.StopTimer()
						dropPageCache(b, dir)
						b.StartTimer()
					}
					start := time.Now()
					l, rec, err := Open(dir, opts)
					took := time.Since(start)
					require.NoError(b, err)
					require.Equal(b, n, rec.Segments)
					b.StopTimer()
					require.NoError(b, l.Close())
					b.StartTimer()
					total += took
				}
				b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/open")
				b.ReportMetric(float64(total.Microseconds())/float64(b.N)/float64(n), "µs/segment")
			})
		}
	}
}
