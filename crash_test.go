package zeroloss

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// crashWorkload sends a fixed sequence of single messages and batches, large
// enough to roll segments, and returns the IDs that got SendOK and every ID it
// attempted (with its body).
func crashWorkload(q *Queue) (ok map[string]uint64, attempted map[string][]byte) {
	ok = map[string]uint64{}
	attempted = map[string][]byte{}
	ctx := context.Background()
	n := 0
	next := func() *Message {
		n++
		id := fmt.Sprintf("m%03d", n)
		body := bodyFor(id)[:(n*37)%300+1]
		attempted[id] = body
		return &Message{ID: id, Body: body}
	}
	for round := 0; round < 24; round++ {
		if round%4 == 3 {
			batch := []*Message{next(), next(), next()}
			results, _ := q.SendBatch(ctx, batch)
			for _, r := range results {
				if r.Status == SendOK {
					ok[r.ID] = r.Seq
				}
			}
			continue
		}
		if res, err := q.Send(ctx, next()); err == nil && res.Status == SendOK {
			ok[res.ID] = res.Seq
		}
	}
	return ok, attempted
}

var crashOptions = Options{Flush: FlushSync, SegmentSize: 4096 + 2048 + record.MaxMoveOverhead, MaxMessageSize: 2048, leaseChunk: 5, slotEverySync: true}

// checkRecovered reopens fs and checks what must hold after a crash: Open
// succeeds, every SendOK message is present with its body, nothing appears
// that was not sent, no seq or ID repeats, and Send continues above every
// recovered seq.
func checkRecovered(t *testing.T, fs *vfs.MemFS, ok map[string]uint64, attempted map[string][]byte, label string) {
	t.Helper()
	opts := crashOptions
	opts.fs = fs
	q, err := Open("/q", &opts)
	require.NoError(t, err, "%s: reopen after crash", label)
	got := readBack(t, q)
	seen := map[string]bool{}
	bySeq := map[uint64]string{}
	var maxSeq uint64
	for _, s := range got {
		body, known := attempted[s.Msg.ID]
		require.True(t, known, "%s: phantom message %q at seq %d", label, s.Msg.ID, s.Seq)
		require.Equal(t, body, s.Msg.Body, "%s: body of %s", label, s.Msg.ID)
		require.False(t, seen[s.Msg.ID], "%s: %s recovered twice", label, s.Msg.ID)
		seen[s.Msg.ID] = true
		bySeq[s.Seq] = s.Msg.ID
		require.Greater(t, s.Seq, maxSeq, "%s: seqs increase", label)
		maxSeq = s.Seq
	}
	for id, seq := range ok {
		require.Equal(t, id, bySeq[seq], "%s: SendOK message %s (seq %d) lost", label, id, seq)
	}
	afterID := fmt.Sprintf("after-%d", len(attempted))
	res, err := q.Send(context.Background(), &Message{ID: afterID, Body: bodyFor(afterID)})
	require.NoError(t, err, label)
	require.Equal(t, SendOK, res.Status, label)
	require.Greater(t, res.Seq, maxSeq, "%s: Send continues above recovered seqs", label)
	for _, seq := range ok {
		require.NotEqual(t, seq, res.Seq, "%s: seq reused", label)
	}
	require.NoError(t, q.Close(), label)
	if ok != nil {
		ok[afterID] = res.Seq
	}
	attempted[afterID] = bodyFor(afterID)
}

// TestCrashAtEveryOperation runs a small workload on the crashable memory file
// system, stops the "machine" after every single I/O operation in turn, then
// simulates a power loss in each crash mode and checks recovery.
func TestCrashAtEveryOperation(t *testing.T) {
	// Count the operations of a full run first.
	fs := vfs.NewMem()
	opts := crashOptions
	opts.fs = fs
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	ok, _ := crashWorkload(q)
	require.NoError(t, q.Close())
	require.Len(t, ok, 36, "without a crash every Send is SendOK")
	total := fs.OpCount()
	require.Greater(t, total, 30)
	require.GreaterOrEqual(t, q.Stats().SegmentRolls, uint64(2), "the workload rolls segments")

	rng := rand.New(rand.NewPCG(7, 11))
	points := 0
	for limit := 0; limit <= total; limit++ {
		for _, mode := range vfs.CrashModes {
			fs := vfs.NewMem()
			opts := crashOptions
			opts.fs = fs
			fs.SetOpLimit(limit)
			q, err := Open("/q", &opts)
			var ok map[string]uint64
			attempted := map[string][]byte{}
			if err == nil {
				ok, attempted = crashWorkload(q)
				_ = q.Close() // fails once the machine is "dead"; that is the point
			}
			fs.Crash(mode, rng)
			checkRecovered(t, fs, ok, attempted, fmt.Sprintf("crash after op %d/%d, %v", limit, total, mode))
			points++
		}
	}
	t.Logf("%d crash points (%d operations x %d modes)", points, total+1, len(vfs.CrashModes))
}

// TestRepeatedCrashesOnOneDirectory crashes the same file system many times in
// a row, mixing modes, so recovery runs on logs that earlier recoveries cut.
func TestRepeatedCrashesOnOneDirectory(t *testing.T) {
	fs := vfs.NewMem()
	rng := rand.New(rand.NewPCG(3, 5))
	ok := map[string]uint64{}
	attempted := map[string][]byte{}
	ctx := context.Background()
	n := 0
	for round := 0; round < 40; round++ {
		opts := crashOptions
		opts.fs = fs
		opts.SegmentWarmup = round%2 == 1 // odd rounds crash with a spare being prepared
		fs.SetOpLimit(fs.OpCount() + 5 + rng.IntN(60))
		q, err := Open("/q", &opts)
		if err == nil {
			for i := 0; i < 10; i++ {
				n++
				id := fmt.Sprintf("r%d-%d", round, n)
				attempted[id] = bodyFor(id)
				if res, err := q.Send(ctx, &Message{ID: id, Body: attempted[id]}); err == nil && res.Status == SendOK {
					ok[id] = res.Seq
				}
			}
			_ = q.Close()
		}
		fs.Crash(vfs.CrashModes[rng.IntN(len(vfs.CrashModes))], rng)
		fs.SetOpLimit(-1)
		checkRecovered(t, fs, ok, attempted, fmt.Sprintf("round %d", round))
	}
}
