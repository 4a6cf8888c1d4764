//go:build linux

package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkInterleavedReplicate is the replication target of BenchmarkInterleaved:
// a leader with a follower and a queue without one, both FlushSync on the
// same disk, take turns in rounds of 20 Sends per producer, so the disk's
// drift hits both alike. It reports the replicated leader's throughput over
// the plain queue's as "ratio":
//
//	pair=sync-p64/follower=tmpfs   ReplicateSync, 64 producers, follower on /dev/shm
//	                               (protocol overhead) / ReplicateNone, 64 producers
//	pair=sync-p64/follower=disk    the same with the follower on the leader's disk
//	pair=async-p64/follower=tmpfs|disk  ReplicateAsync / ReplicateNone
//
// b.N is the number of messages of each side. Under ReplicateAsync the
// follower may still be catching up while the plain queue's round runs, so
// with follower=disk its syncs land partly on the other side's time: read
// the async ratios as approximate. Afterwards both leaders, and
// the follower, must hold exactly b.N messages (replicated.verify).
func BenchmarkInterleavedReplicate(b *testing.B) {
	const producers = 64
	for _, mode := range []zeroloss.ReplicationMode{zeroloss.ReplicateSync, zeroloss.ReplicateAsync} {
		for _, follower := range []string{followerTmpfs, followerDisk} {
			name := fmt.Sprintf("pair=%s-p%d/follower=%s", mode, producers, follower)
			b.Run(name, func(b *testing.B) {
				repl := openReplicated(b, mode, follower)
				none := openReplicated(b, zeroloss.ReplicateNone, "")
				noneTime, replTime := alternate(b, producers*20, sendRound(none.leader, producers), sendRound(repl.leader, producers))
				b.ReportMetric(noneTime.Seconds()/replTime.Seconds(), "ratio")
				b.ReportMetric(float64(b.N)/replTime.Seconds(), "repl-msgs/s")
				b.ReportMetric(float64(b.N)/noneTime.Seconds(), "none-msgs/s")
				b.ReportMetric(repl.leader.Stats().GroupAvg, "repl-msgs/fsync")
				require.NoError(b, none.verify(b.N, replicaSize), "repl=none")
				require.NoError(b, repl.verify(b.N, replicaSize), "repl=%s", mode)
			})
		}
	}
}

// alternate runs rounds of round messages of base and test in turn until
// each has done b.N, and returns the time each took. The timer stops when
// it returns.
func alternate(b *testing.B, round int, base, test func(n int) error) (baseTime, testTime time.Duration) {
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(round, b.N-done)
		start := time.Now()
		require.NoError(b, base(n))
		baseTime += time.Since(start)
		start = time.Now()
		require.NoError(b, test(n))
		testTime += time.Since(start)
		done += n
	}
	b.StopTimer()
	return baseTime, testTime
}

// tmpfsDir returns /dev/shm if it is a tmpfs, or "" and why not.
func tmpfsDir() (dir, why string) {
	const shm = "/dev/shm"
	var st unix.Statfs_t
	if err := unix.Statfs(shm, &st); err != nil {
		return "", fmt.Sprintf("%s: %v", shm, err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		return "", fmt.Sprintf("%s is not a tmpfs (file system type %#x)", shm, st.Type)
	}
	return shm, ""
}
