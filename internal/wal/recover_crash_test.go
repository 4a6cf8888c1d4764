package wal

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// recoverCrashOptions makes small segments (a roll every few frames) and
// short leases, so that a short workload writes every kind of slot.
func recoverCrashOptions(fs vfs.FS) Options {
	return Options{FS: fs, SegmentSize: dataStart + 400, LeaseChunk: 7}
}

// syncWorkload appends frames one or three at a time and syncs after each
// append, and returns the last seq a Sync returned, until the first error.
func syncWorkload(l *Log) (synced uint64) {
	for i := 0; i < 24; i++ {
		buf := frame(i)
		if i%4 == 3 {
			buf = append(append(buf, frame(i+100)...), frame(i+200)...)
		}
		if _, _, err := l.Append(buf); err != nil {
			return synced
		}
		s, err := l.Sync()
		if err != nil {
			return synced
		}
		synced = s
	}
	return synced
}

// trusting returns opts with TrustSeals set to trust.
func trusting(opts Options, trust bool) Options {
	opts.TrustSeals = trust
	return opts
}

// withAndWithoutTrust runs test as two subtests, with TrustSeals off and on.
func withAndWithoutTrust(t *testing.T, test func(t *testing.T, trust bool)) {
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprintf("TrustSeals=%v", trust), func(t *testing.T) { test(t, trust) })
	}
}

// openAndAppend opens the log in fs, as a queue's Open does, appends and
// syncs a frame (a queue's first record after recovery), and abandons it. It
// returns the frame's seq once its Sync returned (0 before).
func openAndAppend(fs vfs.FS, trust bool) (synced uint64, err error) {
	l, _, err := Open("/q", trusting(recoverCrashOptions(fs), trust))
	if err != nil {
		return 0, err
	}
	defer l.abandon()
	seq, _, err := l.Append(frame(999))
	if err == nil {
		_, err = l.Sync()
	}
	if err != nil {
		return 0, err
	}
	return seq, nil
}

// TestRecoveryCrashAtEveryOp stops a workload after each of its operations,
// as a process crash (what it wrote and did not sync stays readable), then
// runs Open on it (and a first append) and crashes the machine after each
// operation of that, in every mode: the next Open must succeed and hold every frame
// whose Sync returned. With ZEROLOSS_CRASH_FULL set it tries every point of
// the workload (two in three otherwise) and draws more crashes per point.
// Every Open runs with and without TrustSeals (the queue's Open reads no frame
// below the last segment's synced offset): the reader must then find every
// synced frame, no damage among those Open did not read.
func TestRecoveryCrashAtEveryOp(t *testing.T) {
	withAndWithoutTrust(t, recoveryCrashAtEveryOp)
}

func recoveryCrashAtEveryOp(t *testing.T, trust bool) {
	options := func(fs vfs.FS) Options { return trusting(recoverCrashOptions(fs), trust) }
	fs := vfs.NewMem()
	l, _, err := Open("/q", options(fs))
	require.NoError(t, err)
	syncWorkload(l)
	require.NoError(t, l.Close())
	require.Greater(t, l.Stats().SegmentsRolls, uint64(3), "the workload rolls segments")
	total := fs.OpCount()

	full := os.Getenv("ZEROLOSS_CRASH_FULL") != ""
	repairs, points := 0, 0
	for limit := 1; limit <= total; limit++ {
		if !full && limit%3 == 0 {
			continue // two points in three (the workload's pattern of operations is longer than 3)
		}
		points++
		base := vfs.NewMem()
		base.SetOpLimit(limit)
		var synced uint64
		if l, _, err := Open("/q", options(base)); err == nil {
			synced = syncWorkload(l)
			l.Close()
		}
		base.ProcessCrash()
		for k := 0; ; k++ {
			for _, mode := range vfs.CrashModes {
				seeds := 1 // the seed changes with the crash points anyway
				if full && (mode == vfs.TornPrefix || mode == vfs.RandomPages) {
					seeds = 4 // the modes that draw at random
				}
				for seed := range seeds {
					fs := base.Clone()
					fs.SetOpLimit(fs.OpCount() + k)
					appended, _ := openAndAppend(fs, trust)
					fs.Crash(mode, rand.New(rand.NewPCG(uint64(limit), uint64(k*16+seed))))
					label := fmt.Sprintf("process crash after op %d/%d, Open crashed after op %d, %v, seed %d", limit, total, k, mode, seed)
					l, _, err := Open("/q", options(fs))
					require.NoError(t, err, label)
					seqs, _ := readAll(t, l)
					require.GreaterOrEqual(t, uint64(len(seqs)), synced, "%s: every synced frame is there", label)
					for i, s := range seqs[:synced] {
						require.Equal(t, uint64(i+1), s, "%s: every synced frame is there", label)
					}
					if appended != 0 {
						require.Contains(t, seqs, appended, "%s: the frame synced after recovery is there", label)
					}
					l.abandon()
					repairs++
				}
			}
			// Stop once the limit no longer stops the repair.
			fs := base.Clone()
			fs.SetOpLimit(fs.OpCount() + k)
			if _, err := openAndAppend(fs, trust); err == nil {
				break
			}
		}
	}
	t.Logf("%d crash points of %d, %d crashes during Open", points, total, repairs)
}

// TestReopenAfterLostWriteback fails an fdatasync as Linux fails a writeback
// (the page cache keeps the bytes, clean, and a later fdatasync does not
// write them), then opens the log again: the new Open reads those bytes and
// must not claim them durable unless it made them so. After a power loss the
// log must open with every frame a successful Sync returned.
func TestReopenAfterLostWriteback(t *testing.T) {
	errEIO := errors.New("injected EIO")
	for _, tc := range []struct {
		name string
		// fail leaves the log in fs closed after a lost writeback, and
		// returns the last seq a Sync returned.
		fail func(t *testing.T, fault *vfs.FaultFS) uint64
	}{
		{"sync fails while running", func(t *testing.T, fault *vfs.FaultFS) uint64 {
			l, _, err := Open("/q", recoverCrashOptions(fault))
			require.NoError(t, err)
			appendN(t, l, 0, 3)
			synced, err := l.Sync()
			require.NoError(t, err)
			appendN(t, l, 3, 2)
			fault.FailSyncLosingWrites(1, errEIO)
			_, err = l.Sync()
			require.ErrorIs(t, err, errEIO)
			require.ErrorIs(t, l.Close(), ErrPoisoned)
			return synced
		}},
		{"sync fails during recovery", func(t *testing.T, fault *vfs.FaultFS) uint64 {
			l, _, err := Open("/q", recoverCrashOptions(fault))
			require.NoError(t, err)
			appendN(t, l, 0, 3)
			synced, err := l.Sync()
			require.NoError(t, err)
			appendN(t, l, 3, 2)
			l.abandon() // a process crash: the two frames are in the page cache only
			fault.FailSyncLosingWrites(1, errEIO)
			_, _, err = Open("/q", recoverCrashOptions(fault))
			require.ErrorIs(t, err, errEIO, "recovery's fdatasync fails")
			return synced
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			fault := vfs.NewFault(mem)
			synced := tc.fail(t, fault)
			_, err := openAndAppend(fault, false)
			require.NoError(t, err, "the second Open")
			mem.Crash(vfs.DropUnsynced, nil)
			l, _, err := Open("/q", recoverCrashOptions(mem))
			require.NoError(t, err, "open after the power loss")
			defer l.abandon()
			seqs, _ := readAll(t, l)
			require.GreaterOrEqual(t, uint64(len(seqs)), synced)
			for i, s := range seqs[:synced] {
				require.Equal(t, uint64(i+1), s)
			}
		})
	}
}
