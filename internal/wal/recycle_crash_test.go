package wal

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// recycleCrashOptions makes segments of four life frames, short leases, and
// keeps two deleted segments as spares.
func recycleCrashOptions(fs vfs.FS) Options {
	opts := recycleOptions(fs, 2)
	opts.LeaseChunk = 7
	return opts
}

// recycleWorkload appends life frames one at a time, syncing each, and every
// fourth frame deletes the segments wholly below the last six synced seqs, so
// that most rolls reuse a deleted segment. It returns the last seq a Sync
// returned and the last seq given to RemoveBefore (frames at or above it are
// never deleted), until the first error.
func recycleWorkload(l *Log) (synced, floor uint64) {
	for i := 0; i < 28; i++ {
		if _, _, err := l.Append(lifeFrame(1, l.NextSeq())); err != nil {
			return synced, floor
		}
		s, err := l.Sync()
		if err != nil {
			return synced, floor
		}
		synced = s
		if i%4 == 3 && synced > 6 {
			floor = synced - 6
			if _, err := l.RemoveBefore(floor); err != nil {
				return synced, floor
			}
		}
	}
	return synced, floor
}

// openAndAppendLife opens the log in fs as a queue's Open does, appends and
// syncs a frame, and abandons it. It returns the frame's seq once its Sync
// returned (0 before).
func openAndAppendLife(fs vfs.FS, trust bool) (synced uint64, err error) {
	l, _, err := Open("/q", trusting(recycleCrashOptions(fs), trust))
	if err != nil {
		return 0, err
	}
	defer l.abandon()
	seq, _, err := l.Append(lifeFrame(9, l.NextSeq()))
	if err == nil {
		_, err = l.Sync()
	}
	if err != nil {
		return 0, err
	}
	return seq, nil
}

// checkRecycledLog checks that l holds increasing seqs (consecutive but
// where an unclean stop skipped leased ones), each frame with the payload
// written for its seq (a frame of a file's earlier life would carry another
// seq, below the frames before it), and every seq from floor (1 if 0) to
// synced.
func checkRecycledLog(t *testing.T, l *Log, synced, floor uint64, label string) {
	t.Helper()
	frames := lifeFrames(t, l) // checks each payload against its frame's seq
	seqs, _ := readAll(t, l)
	for i := 1; i < len(seqs); i++ {
		require.Less(t, seqs[i-1], seqs[i], "%s: increasing seqs %v", label, frames)
	}
	first := max(floor, 1)
	if synced >= first {
		require.NotEmpty(t, seqs, label)
		require.LessOrEqual(t, seqs[0], first, "%s: frames from %d on survive", label, first)
		for seq := first; seq <= synced; seq++ {
			require.Contains(t, seqs, seq, "%s: every synced frame survives", label)
		}
	}
}

// TestRecyclingCrashAtEveryOp stops a workload that deletes segments and
// reuses their files after each of its operations (renaming a deleted
// segment to a spare, cutting, preallocating, giving it a header and a slot,
// syncing it, sealing the segment before it, renaming it into place, syncing
// the directory), as a process crash, then crashes Open (and a first append)
// after each of its operations, in every mode: the next Open must succeed,
// hold every synced frame that was not deleted, and return no frame of a
// file's earlier life. ZEROLOSS_CRASH_FULL tries every point of the workload
// (two in three otherwise). Every Open runs with and without TrustSeals.
func TestRecyclingCrashAtEveryOp(t *testing.T) {
	withAndWithoutTrust(t, recyclingCrashAtEveryOp)
}

func recyclingCrashAtEveryOp(t *testing.T, trust bool) {
	options := func(fs vfs.FS) Options { return trusting(recycleCrashOptions(fs), trust) }
	fs := vfs.NewMem()
	l, _, err := Open("/q", options(fs))
	require.NoError(t, err)
	recycleWorkload(l)
	require.NoError(t, l.Close())
	require.Greater(t, l.Stats().RecycledRolls, uint64(3), "the workload reuses deleted segments")
	total := fs.OpCount()

	full := os.Getenv("ZEROLOSS_CRASH_FULL") != ""
	opens := 0
	for limit := 1; limit <= total; limit++ {
		if !full && limit%3 == 0 {
			continue
		}
		base := vfs.NewMem()
		base.SetOpLimit(limit)
		var synced, floor uint64
		if l, _, err := Open("/q", options(base)); err == nil {
			synced, floor = recycleWorkload(l)
			l.Close()
		}
		base.ProcessCrash()
		for k := 0; ; k++ {
			for _, mode := range vfs.CrashModes {
				fs := base.Clone()
				fs.SetOpLimit(fs.OpCount() + k)
				appended, _ := openAndAppendLife(fs, trust)
				fs.Crash(mode, rand.New(rand.NewPCG(uint64(limit), uint64(k))))
				label := fmt.Sprintf("process crash after op %d/%d, Open crashed after op %d, %v", limit, total, k, mode)
				l, _, err := Open("/q", options(fs))
				require.NoError(t, err, label)
				checkRecycledLog(t, l, synced, floor, label)
				if appended != 0 {
					seqs, _ := readAll(t, l)
					require.Contains(t, seqs, appended, "%s: the frame synced after recovery is there", label)
				}
				l.abandon()
				opens++
			}
			fs := base.Clone()
			fs.SetOpLimit(fs.OpCount() + k)
			if _, err := openAndAppendLife(fs, trust); err == nil {
				break
			}
		}
	}
	t.Logf("%d ops in the workload, %d crashed opens checked", total, opens)
}

// TestRecyclingPowerLossAtEveryOp crashes the machine right after each
// operation of the workload, in every mode, and checks the log as
// TestRecyclingCrashAtEveryOp does, with and without TrustSeals.
func TestRecyclingPowerLossAtEveryOp(t *testing.T) {
	withAndWithoutTrust(t, recyclingPowerLossAtEveryOp)
}

func recyclingPowerLossAtEveryOp(t *testing.T, trust bool) {
	options := func(fs vfs.FS) Options { return trusting(recycleCrashOptions(fs), trust) }
	fs := vfs.NewMem()
	l, _, err := Open("/q", options(fs))
	require.NoError(t, err)
	recycleWorkload(l)
	require.NoError(t, l.Close())
	total := fs.OpCount()
	for limit := 1; limit <= total; limit++ {
		for _, mode := range vfs.CrashModes {
			fs := vfs.NewMem()
			fs.SetOpLimit(limit)
			var synced, floor uint64
			if l, _, err := Open("/q", options(fs)); err == nil {
				synced, floor = recycleWorkload(l)
				l.abandon()
			}
			fs.Crash(mode, rand.New(rand.NewPCG(uint64(limit), 3)))
			label := fmt.Sprintf("power loss after op %d/%d, %v", limit, total, mode)
			l, _, err := Open("/q", options(fs))
			require.NoError(t, err, label)
			checkRecycledLog(t, l, synced, floor, label)
			require.NoError(t, l.Close(), label)
		}
	}
}

// TestStaleFramesOfAReusedFollowerSegmentCrashAtEveryOp replays
// TestSpareIsCutAtItsEndBeforeReuse (a spare holding, past its end, cut
// frames whose seqs a follower hands out again, one at the very offset where
// the reusing segment expects it) and crashes the machine after each
// operation of the deletion, the second truncation, the reuse and the sync,
// in every mode: the log must open, with increasing seqs, each frame with its
// own payload, and never one of the cut frames.
func TestStaleFramesOfAReusedFollowerSegmentCrashAtEveryOp(t *testing.T) {
	setup := func(t *testing.T) (*vfs.MemFS, *Log) {
		fs := vfs.NewMem()
		l := logWithCutFramesOnDisk(t, fs)
		return fs, l
	}
	workload := func(l *Log) (finished bool) {
		if _, err := l.RemoveBefore(7); err != nil {
			return false
		}
		if _, err := l.TruncateAfter(6); err != nil {
			return false
		}
		if _, err := l.AppendFrames(lifeFrameOf(3, 7, 3)); err != nil {
			return false
		}
		if _, err := l.Sync(); err != nil {
			return false
		}
		return l.Close() == nil
	}
	fs, l := setup(t)
	start := fs.OpCount()
	require.True(t, workload(l))
	total := fs.OpCount() - start
	for limit := 0; limit <= total; limit++ {
		for _, mode := range vfs.CrashModes {
			fs, l := setup(t)
			fs.SetOpLimit(fs.OpCount() + limit)
			finished := workload(l)
			l.abandon()
			fs.Crash(mode, rand.New(rand.NewPCG(uint64(limit), 5)))
			label := fmt.Sprintf("power loss after op %d/%d, %v", limit, total, mode)
			l, _, err := Open("/q", recycleOptions(fs, 2))
			require.NoError(t, err, label)
			frames := lifeFrames(t, l) // each payload matches its frame's seq
			seqs, _ := readAll(t, l)
			for i := 1; i < len(seqs); i++ {
				require.Less(t, seqs[i-1], seqs[i], "%s: %v", label, frames)
			}
			require.NotContains(t, frames, "life 1 seq 7", label)
			require.NotContains(t, frames, "life 1 seq 8", label)
			if finished {
				require.Equal(t, lives(3, 7, 7), frames, label)
			}
			require.NoError(t, l.Close(), label)
		}
	}
}
