//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// BenchmarkOpenBacklog times Open after a clean Close of a queue holding a
// backlog of unconsumed 1 KiB messages with caller-set IDs (so the dedup
// table has every one to rebuild) and no consumer group. The backlog is 1 GiB;
// ZEROLOSS_OPEN_GIB names others, comma-separated (e.g. "1,4,16"). Each
// directory is built once, before the timers, and then opened:
//
//	warm        with the log in the page cache (right after it was written)
//	cold        after posix_fadvise(DONTNEED) on every file of the directory:
//	            it drops their clean pages from the page cache, as
//	            `echo 1 > /proc/sys/vm/drop_caches` would, without root
//	wal-warm    only wal.Open (the log's own recovery, with TrustSeals as the
//	            queue's Open), page cache warm
//	wal-cold    the same, after dropping the files' pages
//
//	go test -run '^$' -bench BenchmarkOpenBacklog -benchtime 3x ./bench
func BenchmarkOpenBacklog(b *testing.B) {
	sizes := []int{1}
	if s := os.Getenv("ZEROLOSS_OPEN_GIB"); s != "" {
		sizes = sizes[:0]
		for _, field := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(field))
			require.NoError(b, err, "ZEROLOSS_OPEN_GIB")
			sizes = append(sizes, n)
		}
	}
	for _, gib := range sizes {
		dir, err := os.MkdirTemp("", "zeroloss-open-")
		require.NoError(b, err)
		b.Cleanup(func() { os.RemoveAll(dir) })
		fillBacklog(b, dir, int64(gib)<<30)
		openQueue := func(b *testing.B) {
			q, err := zeroloss.Open(dir, nil)
			require.NoError(b, err)
			b.StopTimer()
			require.NoError(b, q.Close())
			b.StartTimer()
		}
		openLog := func(b *testing.B) {
			l, _, err := wal.Open(dir, wal.Options{TrustSeals: true}) // as the queue opens it
			require.NoError(b, err)
			b.StopTimer()
			require.NoError(b, l.Close())
			b.StartTimer()
		}
		for _, side := range []struct {
			name string
			cold bool
			open func(*testing.B)
		}{
			{"warm", false, openQueue},
			{"cold", true, openQueue},
			{"wal-warm", false, openLog},
			{"wal-cold", true, openLog},
		} {
			b.Run(fmt.Sprintf("GiB=%d/%s", gib, side.name), func(b *testing.B) {
				var total time.Duration
				for range b.N {
					if side.cold {
						b.StopTimer()
						dropPageCache(b, dir)
						b.StartTimer()
					}
					start := time.Now()
					side.open(b)
					total += time.Since(start)
				}
				b.ReportMetric(total.Seconds()/float64(b.N), "s/open")
			})
		}
	}
}

// fillBacklog writes size bytes of 1 KiB messages with caller-set IDs into a
// new queue in dir, FlushAsync in batches of 1000, and closes it cleanly.
func fillBacklog(b *testing.B, dir string, size int64) {
	q, err := zeroloss.Open(dir, &zeroloss.Options{Flush: zeroloss.FlushAsync})
	require.NoError(b, err)
	body := filledBody(1024)
	batch := make([]*zeroloss.Message, 1000)
	for i := range batch {
		batch[i] = &zeroloss.Message{Body: body}
	}
	ctx := context.Background()
	n := 0
	for written := int64(0); written < size; written += int64(len(batch) * len(body)) {
		for _, m := range batch {
			m.ID = fmt.Sprintf("backlog-%d", n)
			n++
		}
		_, err := q.SendBatch(ctx, batch)
		require.NoError(b, err)
	}
	require.NoError(b, q.Close())
}

// dropPageCache evicts the clean pages of every file in dir from the page
// cache (posix_fadvise DONTNEED after an fdatasync, which needs no root).
func dropPageCache(b *testing.B, dir string) {
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
