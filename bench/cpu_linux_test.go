//go:build linux

package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkSendCPU reports the CPU time the process spends per message
// (user and system, from getrusage) while producers goroutines send b.N
// messages of 1 KiB with FlushAsync, after 20000 untimed ones: the cost per
// Send that BenchmarkInterleaved's async-p16 ratio hangs on, as a figure
// that other processes' load and the disk move much less than wall time.
// Run it with TMPDIR on a tmpfs and GOMAXPROCS=1 to compare two commits'
// code (the writes then cost no I/O wait, and no processor idles).
//
//	BenchmarkSendCPU/flush=async/producers=1|16
func BenchmarkSendCPU(b *testing.B) {
	for _, producers := range []int{1, 16} {
		b.Run(fmt.Sprintf("flush=async/producers=%d", producers), func(b *testing.B) {
			q := openBench(b, zeroloss.FlushAsync)
			body := filledBody(rawSize)
			require.NoError(b, sendAll(context.Background(), q, 20000, producers, body))
			b.ResetTimer()
			before := processCPU(b)
			err := sendAll(context.Background(), q, b.N, producers, body)
			used := processCPU(b) - before
			b.StopTimer()
			require.NoError(b, err)
			b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/msg")
		})
	}
}

// processCPU is the user and system time the process has used.
func processCPU(b *testing.B) time.Duration {
	var usage unix.Rusage
	require.NoError(b, unix.Getrusage(unix.RUSAGE_SELF, &usage))
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
