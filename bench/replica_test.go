package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// BenchmarkReplicate measures Send throughput, FlushSync, 1 KiB, with a
// follower attached over a Unix socket in the same process: the leader's
// Queue.AttachReplica on one end, zeroloss.Follow (FlushSync, its default)
// on the other.
//
//	repl=none/follower=none    no follower: the baseline of the two others
//	repl=async/follower=...    SendOK after the leader's fdatasync; the follower trails
//	repl=sync/follower=...     SendOK after the leader's and the follower's fdatasync
//
//	follower=tmpfs  the follower's directory is on /dev/shm, where fdatasync
//	                is free: what the protocol itself costs (skipped when
//	                /dev/shm is not a tmpfs)
//	follower=disk   the follower's directory is on the leader's disk
//	                (b.TempDir()): the two fdatasyncs compete for one device
//
// b.N messages in total from producers=1|64 goroutines, each waiting for its
// own result. After the timed part, under ReplicateAsync it waits until the
// follower has acknowledged everything (the lag at the end of the timed part
// is reported as lag-seqs), then closes the leader, which ends Follow, and
// reads both directories back: each must hold exactly b.N messages of 1 KiB
// with consecutive seqs.
//
// Read repl=sync against repl=none of the same run, or better
// BenchmarkInterleavedReplicate, which alternates the two on the same disk.
func BenchmarkReplicate(b *testing.B) {
	for _, mode := range []zeroloss.ReplicationMode{zeroloss.ReplicateNone, zeroloss.ReplicateAsync, zeroloss.ReplicateSync} {
		followers := []string{followerTmpfs, followerDisk}
		if mode == zeroloss.ReplicateNone {
			followers = []string{"none"}
		}
		for _, follower := range followers {
			for _, producers := range []int{1, 64} {
				name := fmt.Sprintf("repl=%s/follower=%s/producers=%d", mode, follower, producers)
				b.Run(name, func(b *testing.B) { benchmarkReplicate(b, mode, follower, producers) })
			}
		}
	}
}

// replicaSize is the body size of the replication benchmarks.
const replicaSize = 1 << 10

// Where a follower keeps its directory.
const (
	followerTmpfs = "tmpfs" // /dev/shm: fdatasync is free, protocol overhead only
	followerDisk  = "disk"  // the leader's disk
)

func benchmarkReplicate(b *testing.B, mode zeroloss.ReplicationMode, follower string, producers int) {
	r := openReplicated(b, mode, follower)
	body := filledBody(replicaSize)
	b.SetBytes(replicaSize)
	b.ReportAllocs()
	b.ResetTimer()

	err := sendAll(context.Background(), r.leader, b.N, producers, body)

	b.StopTimer()
	require.NoError(b, err)
	st := r.leader.Stats()
	require.Equal(b, uint64(b.N), st.Messages, "Stats().Messages")
	reportRate(b)
	b.ReportMetric(st.GroupAvg, "msgs/fsync")
	b.ReportMetric(float64(st.FsyncAvg.Nanoseconds())/1e3, "us/fsync")
	if mode != zeroloss.ReplicateNone {
		b.ReportMetric(float64(st.ReplicaLag), "lag-seqs")
	}
	require.NoError(b, r.verify(b.N, replicaSize))
}

// replicated is a FlushSync leader queue and, unless its mode is
// ReplicateNone, a follower attached to it over a Unix socket.
type replicated struct {
	leader      *zeroloss.Queue
	leaderDir   string
	followerDir string     // "" without a follower
	followed    chan error // Follow's result
	cancel      context.CancelFunc

	finishOnce sync.Once
	once       sync.Once
	stopErr    error
}

// openReplicated opens a leader in tb.TempDir() with the given replication
// mode and, unless it is ReplicateNone, starts Follow in a directory on
// follower (followerTmpfs or followerDisk) and attaches it over a Unix
// socket. It skips tb when follower is followerTmpfs and there is no tmpfs.
// Cleanup stops both.
func openReplicated(tb testing.TB, mode zeroloss.ReplicationMode, follower string) *replicated {
	tb.Helper()
	r := &replicated{leaderDir: tb.TempDir()}
	q, err := zeroloss.Open(r.leaderDir, &zeroloss.Options{Flush: zeroloss.FlushSync, Replication: mode})
	require.NoError(tb, err)
	r.leader = q
	tb.Cleanup(func() { r.stop() })
	if mode == zeroloss.ReplicateNone {
		return r
	}
	switch follower {
	case followerTmpfs:
		shm, why := tmpfsDir()
		if shm == "" {
			tb.Skipf("follower=tmpfs (protocol overhead, the follower's fdatasync free) skipped: %s", why)
		}
		dir, err := os.MkdirTemp(shm, "zeroloss-bench-follower-")
		require.NoError(tb, err)
		tb.Cleanup(func() { os.RemoveAll(dir) })
		r.followerDir = dir
	case followerDisk:
		r.followerDir = tb.TempDir()
	default:
		tb.Fatalf("follower %q: want %q or %q", follower, followerTmpfs, followerDisk)
	}

	// A short socket path: b.TempDir() names can pass the 108-byte limit.
	sockDir, err := os.MkdirTemp("", "zlb")
	require.NoError(tb, err)
	tb.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "s")
	ln, err := net.Listen("unix", sock)
	require.NoError(tb, err)
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.followed = make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			r.followed <- fmt.Errorf("accept: %w", err)
			return
		}
		r.followed <- zeroloss.Follow(ctx, r.followerDir, conn, nil)
	}()
	// Cleanups run last in first out: stop both sides before the
	// follower's directory is removed (stop does its work once).
	tb.Cleanup(func() { r.stop() })
	conn, err := net.Dial("unix", sock)
	require.NoError(tb, err)
	require.NoError(tb, q.AttachReplica(conn))
	require.True(tb, q.Stats().ReplicaAttached)
	return r
}

// stop closes the leader, which closes the link and so ends Follow, and
// waits for Follow to return. It returns the first error of either; a
// Follow that ends because the leader closed the link is no error. Only
// the first call does anything.
func (r *replicated) stop() error {
	r.once.Do(func() {
		err := r.leader.Close()
		if r.followed == nil {
			r.stopErr = err
			return
		}
		select {
		case ferr := <-r.followed:
			if ferr != nil && !errors.Is(ferr, io.EOF) {
				err = errors.Join(err, fmt.Errorf("follower: %w", ferr))
			}
		case <-time.After(30 * time.Second):
			r.cancel()
			<-r.followed
			err = errors.Join(err, errors.New("the follower did not stop within 30s of the leader's Close"))
		}
		r.cancel()
		r.stopErr = err
	})
	return r.stopErr
}

// caughtUp waits until the follower has acknowledged every seq of the
// leader's log (what ReplicateAsync leaves outstanding when Send returns),
// for at most timeout. Without a follower it returns at once.
func (r *replicated) caughtUp(timeout time.Duration) error {
	if r.followed == nil {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		st := r.leader.Stats()
		if !st.ReplicaAttached {
			return errors.New("the follower detached")
		}
		if st.ReplicaLag == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the follower still lags %d seqs behind seq %d after %v", st.ReplicaLag, st.LastSeq, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// verify waits for the follower to catch up, stops both sides, and checks
// that the leader's directory and the follower's each hold exactly want
// messages of bodySize bytes (verifyLog).
func (r *replicated) verify(want, bodySize int) error {
	if err := r.finish(); err != nil {
		return err
	}
	return r.check(want, bodySize)
}

// finish waits for the follower to acknowledge everything (at most a
// minute), then stops both sides. Only the first call waits.
func (r *replicated) finish() error {
	var err error
	r.finishOnce.Do(func() { err = r.caughtUp(time.Minute) })
	return errors.Join(err, r.stop())
}

// check reads the stopped leader's and follower's directories back with
// verifyLog.
func (r *replicated) check(want, bodySize int) error {
	if err := verifyLog(r.leaderDir, want, bodySize); err != nil {
		return fmt.Errorf("leader: %w", err)
	}
	if r.followerDir != "" {
		if err := verifyLog(r.followerDir, want, bodySize); err != nil {
			return fmt.Errorf("follower: %w", err)
		}
	}
	return nil
}

// TestReplicatedVerify runs the replication benchmarks' harness on a few
// messages, with the follower on the same disk: after verify passes with the
// count Send acknowledged, check must fail with any other count, on the
// leader and on the follower alike, or the benchmarks' checks prove nothing.
func TestReplicatedVerify(t *testing.T) {
	const messages, size = 50, 100
	for _, mode := range []zeroloss.ReplicationMode{zeroloss.ReplicateNone, zeroloss.ReplicateAsync, zeroloss.ReplicateSync} {
		t.Run("repl="+mode.String(), func(t *testing.T) {
			r := openReplicated(t, mode, followerDisk)
			require.NoError(t, sendAll(t.Context(), r.leader, messages, 4, filledBody(size)))
			require.NoError(t, r.verify(messages, size))
			for _, want := range []int{messages - 1, messages + 1} {
				require.ErrorContains(t, r.check(want, size), "leader: ", "want %d", want)
			}
			if mode == zeroloss.ReplicateNone {
				require.Empty(t, r.followerDir)
				return
			}
			for _, want := range []int{messages - 1, messages + 1} {
				require.Error(t, verifyLog(r.followerDir, want, size), "follower, want %d", want)
			}
		})
	}
}
