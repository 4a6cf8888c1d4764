package zeroloss

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// recycleKillSegment is the segment size of TestKillNineWithRecycledSegments:
// about a hundred of consumeChild's messages, so that retention (every
// second) deletes segments and later rolls reuse them within a run.
const recycleKillSegment = 32 << 10

// recycledReporter returns a function that prints "recycled N" when q's
// Stats.RecycledRolls has grown since it last printed.
func recycledReporter(q *Queue, say func(string)) func() {
	var last atomic.Uint64
	return func() {
		n := q.Stats().RecycledRolls
		if prev := last.Load(); n > prev && last.CompareAndSwap(prev, n) {
			say(fmt.Sprintf("recycled %d\n", n))
		}
	}
}

// TestKillNineWithRecycledSegments kills a child that sends and consumes
// with small segments, once retention has deleted segments and rolls have
// reused them (the child says so), several times on one directory: after
// each reopen no acked message is delivered again, every other SendOK
// message is delivered again exactly once with its own body, and recovery
// finds no damage in the recycled files.
func TestKillNineWithRecycledSegments(t *testing.T) {
	runs := 4
	if testing.Short() {
		runs = 2
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(21, 5))
	sent := map[string]uint64{}
	acked := map[string]bool{}
	for run := 0; run < runs; run++ {
		killAfter := 20 + rng.IntN(200) // acks to see after the first reuse
		// The acks after the first reuse count; a child that never reuses
		// a segment is killed after two minutes, and the run fails.
		recycled := false
		killChildAfter(t, dir, "consume", "x"+strconv.Itoa(run), killAfter,
			[]string{killChildDir + "_SEGMENT=" + strconv.Itoa(recycleKillSegment)}, func(f []string) bool {
				switch {
				case len(f) == 3 && f[0] == "ok":
					seq, err := strconv.ParseUint(f[2], 10, 64)
					require.NoError(t, err)
					sent[f[1]] = seq
				case len(f) == 2 && f[0] == "acked":
					require.False(t, acked[f[1]], "run %d: %s acked twice", run, f[1])
					acked[f[1]] = true
					return recycled
				case len(f) == 2 && f[0] == "recycled":
					recycled = true
				case len(f) == 2 && f[0] == "corrupt":
					t.Fatalf("run %d: corrupt body for %s", run, f[1])
				}
				return false
			})

		ackedInLog, first := ackedIDs(t, dir) // before Open: see ackedIDs
		res, err := wal.Scan(vfs.OS, dir)
		require.NoError(t, err)
		reused := 0
		for _, seg := range res.Segments {
			if seg.Recycled {
				reused++
			}
		}
		require.NotZero(t, reused, "run %d: recycled segments are in the log\n%s", run, segmentTable(res))
		// A frame left by a recycled file's earlier life has a seq below
		// those before it.
		var prev uint64
		for _, seg := range res.Segments {
			require.NoError(t, wal.ReadFrames(vfs.OS, dir, seg, func(off int64, rec *record.Record) error {
				if rec.Seq <= prev {
					return fmt.Errorf("%s at offset %d: seq %d after seq %d", seg.Name, off, rec.Seq, prev)
				}
				prev = rec.Seq
				return nil
			}), "run %d", run)
		}
		for id, seq := range sent {
			if seq < first {
				require.True(t, acked[id] || ackedInLog[id], "run %d: %s (seq %d) deleted by retention but never acked", run, id, seq)
			}
		}
		q := openQueue(t, dir, &Options{SegmentSize: recycleKillSegment, MaxMessageSize: 4 << 10})
		c, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Minute})
		require.NoError(t, err)
		owed := map[string]bool{}
		for id := range sent {
			if !acked[id] && !ackedInLog[id] {
				owed[id] = true
			}
		}
		drainOwed(t, c, run, owed, func(id string) bool { return acked[id] || ackedInLog[id] }, func(id string) { acked[id] = true })
		require.Empty(t, owed, "run %d: SendOK messages neither acked nor delivered again", run)
		for id := range ackedInLog {
			acked[id] = true
		}
		require.NoError(t, q.Close())
	}
}
