package zeroloss

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// crashFullEnv, set to any value, makes the recovery crash test try every
// crash point of its workloads and every mode of the first failure, instead of
// a spread of them (minutes instead of seconds).
const crashFullEnv = "ZEROLOSS_CRASH_FULL"

// recoveryWorkload is a workload of the crash tests, with the check that
// must hold after any crash.
type recoveryWorkload struct {
	name string
	opts Options
	// points is about how many crash points the test spreads over the
	// workload (every operation with ZEROLOSS_CRASH_FULL set).
	points int
	// run runs the workload on q (nil if Open failed) and returns what it
	// was told.
	run func(q *Queue) any
	// check reopens fs and checks what was told against what is there.
	check func(t *testing.T, fs *vfs.MemFS, told any, label string)
}

var recoveryWorkloads = []recoveryWorkload{
	{
		name:   "send",
		opts:   crashOptions,
		points: 24,
		run: func(q *Queue) any {
			if q == nil {
				return [2]any{map[string]uint64{}, map[string][]byte{}}
			}
			ok, attempted := crashWorkload(q)
			return [2]any{ok, attempted}
		},
		check: func(t *testing.T, fs *vfs.MemFS, told any, label string) {
			pair := told.([2]any)
			// checkRecovered adds its own Send to the maps: give it copies.
			checkRecovered(t, fs, maps.Clone(pair[0].(map[string]uint64)), maps.Clone(pair[1].(map[string][]byte)), label)
		},
	},
	{
		name: "retention",
		opts: retentionCrashOptions,
		// Each check waits a few milliseconds for a Receive that finds
		// nothing: fewer points.
		points: 8,
		run: func(q *Queue) any {
			if q == nil {
				return consumeOutcome{}
			}
			return consumeWorkload(q)
		},
		check: func(t *testing.T, fs *vfs.MemFS, told any, label string) {
			checkConsumeRecovered(t, fs, told.(consumeOutcome), label)
		},
	},
}

// openFrozen opens the queue in fs with the workload's options and, if it
// opened, stops it without letting it make another operation, as a crash at
// the moment Open returned would.
func openFrozen(fs *vfs.MemFS, w recoveryWorkload) (*Queue, error) {
	opts := w.opts
	opts.fs = fs
	q, err := Open("/q", &opts)
	if err == nil {
		fs.SetOpLimit(fs.OpCount())
		_ = q.Close()
	}
	return q, err
}

// TestCrashDuringRecovery crashes a workload at a spread of operations (every
// one with ZEROLOSS_CRASH_FULL set), first as a process crash (what was not
// synced stays in the page cache) and as a power loss, then runs Open on what
// is left and crashes it at every I/O operation of its repair, in every crash
// mode, then opens again: that Open must succeed with every SendOK message
// (and, for the retention workload, every consumer outcome) there.
func TestCrashDuringRecovery(t *testing.T) {
	full := os.Getenv(crashFullEnv) != ""
	for _, w := range recoveryWorkloads {
		t.Run(w.name, func(t *testing.T) {
			fs := vfs.NewMem()
			opts := w.opts
			opts.fs = fs
			q, err := Open("/q", &opts)
			require.NoError(t, err)
			w.run(q)
			require.NoError(t, q.Close())
			total := fs.OpCount()

			// A spread of crash points, never the same distance apart, so
			// that they fall at every kind of operation.
			step := max(total/w.points, 1)
			next := func(limit, points int) int {
				if full {
					return limit + 1
				}
				return limit + step + points%3
			}
			rng := rand.New(rand.NewPCG(19, 23))
			points, repairs := 0, 0
			for limit := 1; limit <= total; limit = next(limit, points) {
				fs := vfs.NewMem()
				fs.SetOpLimit(limit)
				opts := w.opts
				opts.fs = fs
				var told any
				if q, err := Open("/q", &opts); err == nil {
					told = w.run(q)
					_ = q.Close()
				} else {
					told = w.run(nil)
				}
				// The first failure: a process crash, and a power loss in
				// one mode (every mode with ZEROLOSS_CRASH_FULL set).
				firsts := []string{"process crash", "power loss " + vfs.CrashModes[points%len(vfs.CrashModes)].String()}
				if full {
					firsts = firsts[:1]
					for _, mode := range vfs.CrashModes {
						firsts = append(firsts, "power loss "+mode.String())
					}
				}
				for i, first := range firsts {
					base := fs.Clone()
					if i == 0 {
						base.ProcessCrash()
					} else {
						mode := vfs.CrashModes[points%len(vfs.CrashModes)]
						if full {
							mode = vfs.CrashModes[i-1]
						}
						base.Crash(mode, rng)
					}
					// Count the operations of Open's repair.
					probe := base.Clone()
					start := probe.OpCount()
					_, err := openFrozen(probe, w)
					require.NoError(t, err, "op %d/%d, %s: Open", limit, total, first)
					repair := probe.OpCount() - start
					for k := 0; k < repair; k++ {
						for _, mode := range vfs.CrashModes {
							c := base.Clone()
							c.SetOpLimit(c.OpCount() + k)
							_, _ = openFrozen(c, w)
							c.Crash(mode, rng)
							w.check(t, c, told, fmt.Sprintf("crash after op %d/%d, %s, then after op %d/%d of Open, %v",
								limit, total, first, k, repair, mode))
							repairs++
						}
					}
				}
				points++
			}
			t.Logf("%d crash points of %d operations, %d crashes during Open", points, total, repairs)
		})
	}
}

// TestCrashDuringPromotion builds a follower's directory on the crashable file
// system under ReplicateSync, with a group that acked some messages, kills the
// follower's process, then opens the directory as a queue (a promotion: new
// segment 2^32 seqs up, epoch record, marker removed) and crashes that Open
// at every operation in every mode: the next Open must succeed. A follower
// run with FlushSync synced every SendOK message and ack, so they must all be
// there; one run with FlushAsync only wrote them, so its page cache held them
// when its process died, and the promotion must not claim them durable before
// they are (what is left is a prefix of what was sent).
func TestCrashDuringPromotion(t *testing.T) {
	for _, flush := range []FlushMode{FlushSync, FlushAsync} {
		t.Run(fmt.Sprint(flush), func(t *testing.T) { crashDuringPromotion(t, flush) })
	}
}

func crashDuringPromotion(t *testing.T, followerFlush FlushMode) {
	const segment = 16 << 10
	ffs := vfs.NewMem()
	l, err := Open(t.TempDir(), &Options{Replication: ReplicateSync, SegmentSize: segment, MaxMessageSize: 4 << 10})
	require.NoError(t, err)
	a, b := net.Pipe()
	f := startFollower(t, "/f", b, &FollowOptions{fs: ffs, SegmentSize: segment, Flush: followerFlush})
	require.NoError(t, l.AttachReplica(a))
	c, err := l.Consumer("g", nil)
	require.NoError(t, err)
	sent := sendIDs(t, l, "m", 30, SendOK)
	acked := map[string]bool{}
	for range 10 {
		d := receive(t, c)
		require.NoError(t, d.Ack())
		acked[d.Message.ID] = true
	}
	sendIDs(t, l, "n", 1, SendOK) // the acks reach the follower before it
	waitFollowerAcked(t, l, l.Stats().LastSeq, f)
	ffs.SetOpLimit(ffs.OpCount()) // the follower's process dies
	_ = f.stop()
	require.NoError(t, l.Close())
	base := ffs.Clone()
	base.ProcessCrash()

	promote := func(fs *vfs.MemFS) (*Queue, error) {
		return Open("/f", &Options{fs: fs, Replication: ReplicateAsync, SegmentSize: segment, MaxMessageSize: 4 << 10})
	}
	rng := rand.New(rand.NewPCG(29, 31))
	crashes := 0
	for k := 0; ; k++ {
		for _, mode := range vfs.CrashModes {
			fs := base.Clone()
			fs.SetOpLimit(fs.OpCount() + k)
			if q, err := promote(fs); err == nil {
				fs.SetOpLimit(fs.OpCount())
				_ = q.Close()
			}
			fs.Crash(mode, rng)
			label := fmt.Sprintf("promotion crashed after op %d, %v", k, mode)
			q, err := promote(fs)
			require.NoError(t, err, label)
			have := messagesByID(t, q)
			for i, id := range sent {
				if followerFlush == FlushSync {
					require.Contains(t, have, id, "%s: SendOK message %s", label, id)
				} else if _, ok := have[id]; !ok {
					for _, later := range sent[i:] {
						require.NotContains(t, have, later, "%s: %s is there but %s is not", label, later, id)
					}
					break
				}
			}
			if followerFlush == FlushSync {
				pc, err := q.Consumer("g", nil)
				require.NoError(t, err, label)
				for range len(sent) - len(acked) {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					d, err := pc.Receive(ctx)
					cancel()
					require.NoError(t, err, label)
					require.False(t, acked[d.Message.ID], "%s: %s was acked", label, d.Message.ID)
				}
			}
			require.NoError(t, q.Close(), label)
			crashes++
		}
		fs := base.Clone()
		fs.SetOpLimit(fs.OpCount() + k)
		if q, err := promote(fs); err == nil {
			fs.SetOpLimit(fs.OpCount())
			_ = q.Close()
			break
		}
	}
	t.Logf("%d crashes during the promotion", crashes)
}

// A follower run with FlushAsync acknowledges after write(2). Its deletion of
// the segments the leader deleted (Trim) must wait until the checkpoint that
// replaces them is durable: a power loss after the deletion must leave a
// directory that opens.
func TestFollowerTrimWaitsForADurableCheckpoint(t *testing.T) {
	const segment = 16 << 10
	ffs := vfs.NewMem()
	l, err := Open(t.TempDir(), &Options{Replication: ReplicateAsync, SegmentSize: segment, MaxMessageSize: 4 << 10})
	require.NoError(t, err)
	defer l.Close()
	a, b := net.Pipe()
	f := startFollower(t, "/f", b, &FollowOptions{fs: ffs, SegmentSize: segment, Flush: FlushAsync})
	require.NoError(t, l.AttachReplica(a))
	c, err := l.Consumer("g", nil)
	require.NoError(t, err)
	segments := func() int {
		names, err := ffs.List("/f")
		require.NoError(t, err)
		n := 0
		for _, name := range names {
			if filepath.Ext(name) == ".wal" {
				n++
			}
		}
		return n
	}
	sendAndAckAll(t, l, c, 100)
	waitAcked(t, l, l.Stats().LastSeq)
	before := segments()
	require.NoError(t, l.retain())
	_, err = l.Send(context.Background(), &Message{Body: []byte("after")}) // the follower deletes on its next ack
	require.NoError(t, err)
	require.Eventually(t, func() bool { return segments() < before }, 5*time.Second, time.Millisecond,
		"the follower deleted segments (%d before)", before)
	ffs.SetOpLimit(ffs.OpCount()) // the power goes out
	_ = f.stop()
	ffs.Crash(vfs.DropUnsynced, nil)

	p, err := Open("/f", &Options{fs: ffs, Replication: ReplicateAsync, SegmentSize: segment, MaxMessageSize: 4 << 10})
	require.NoError(t, err, "the follower's directory opens after the power loss")
	require.NoError(t, p.Close())
}

// An fdatasync fails as Linux fails a writeback: the bytes stay readable in
// the page cache and never reach the disk. The queue reopened in the same
// process must not build on them as if durable: after its Close and a power
// loss it opens again, with every SendOK message and everything the reopened
// queue read, in both flush modes.
func TestReopenAfterFailedFsyncThenPowerLoss(t *testing.T) {
	for _, flush := range []FlushMode{FlushSync, FlushAsync} {
		t.Run(fmt.Sprint(flush), func(t *testing.T) {
			mem := vfs.NewMem()
			fault := vfs.NewFault(mem)
			opts := Options{Flush: flush, SegmentSize: 4096 + 4096, MaxMessageSize: 1024, fs: fault}
			q, err := Open("/q", &opts)
			require.NoError(t, err)
			acked, err := sendAll(q, "before", 5)
			require.NoError(t, err)
			if flush == FlushAsync {
				_, err = q.log.Sync() // what the background fdatasync does
				require.NoError(t, err)
			}
			fault.FailSyncLosingWrites(1, errInjected)
			_, _ = q.Send(context.Background(), &Message{ID: "victim", Body: bodyFor("victim")})
			if flush == FlushAsync {
				_, err = q.log.Sync()
				require.ErrorIs(t, err, errInjected)
			}
			require.ErrorIs(t, q.Err(), ErrPoisoned)
			_ = q.Close()

			q, err = Open("/q", &opts) // same process: it knows of the failure
			require.NoError(t, err)
			more, err := sendAll(q, "after", 3)
			require.NoError(t, err)
			acked = append(acked, more...)
			var recovered []string // what the reopened queue read, the victim included
			for _, s := range readBack(t, q) {
				recovered = append(recovered, s.Msg.ID)
			}
			require.Contains(t, recovered, "victim", "the page cache still shows it")
			require.NoError(t, q.Close())

			mem.Crash(vfs.DropUnsynced, nil)
			opts.fs = mem
			q, err = Open("/q", &opts)
			require.NoError(t, err, "open after the power loss")
			defer q.Close()
			requireAllPresent(t, q, acked)
			requireAllPresent(t, q, recovered) // its Close made them durable
		})
	}
}
