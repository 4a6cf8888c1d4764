package zeroloss

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// crashDuringCatchUp gives a copy of base (in a clone of fsys) the leader's
// welcome and msgs up to the first Frames message after the jump, crashing
// the machine at every file-system operation from the first message (the
// leader's checkpoint, written to CATCHUP) on, in every crash mode, and
// promotes each crashed copy: it opens and delivers every message it holds
// that the leader never acked, for every group, those declared in the
// deleted segments included.
func crashDuringCatchUp(t *testing.T, fsys *vfs.MemFS, base string, welcome repl.Message, msgs []repl.Message, segment int64, acked map[string]map[string]bool, groups map[uint16]record.Group) {
	t.Helper()
	jump := slices.IndexFunc(msgs, func(m repl.Message) bool { return m.Type == repl.TypeTrim })
	require.GreaterOrEqual(t, jump, 1, "a Trim, after the leader's checkpoint")
	require.Equal(t, repl.TypeCheckpoint, msgs[jump-1].Type)
	first := slices.IndexFunc(msgs, func(m repl.Message) bool { return m.Type == repl.TypeCheckpoint })
	msgs = msgs[:jump+2]
	require.Equal(t, repl.TypeFrames, msgs[len(msgs)-1].Type)

	origin := fsys.Clone()
	dir := copyMemDir(t, origin, base)
	// run replays the session on a clone of origin; with limit >= 0 the
	// power goes out after that many operations from the first message of
	// the catch-up on. It returns the clone and how many operations the
	// messages took.
	run := func(limit int) (*vfs.MemFS, int) {
		fs := origin.Clone()
		fl, err := openFollower(dir, &FollowOptions{SegmentSize: segment, fs: fs})
		require.NoError(t, err)
		fw := &follower{followerLog: fl, ctx: context.Background(), link: discardLink{}, hs: &handshake{auth: welcome.Auth}}
		fw.last = fl.log.LastSeq()
		fw.acked = fw.last
		require.NoError(t, fw.welcome(&welcome.Welcome))
		for _, m := range msgs[:first] {
			require.NoError(t, fw.apply(readResult{m: m}))
			require.NoError(t, fw.ack())
		}
		start := fs.OpCount()
		if limit >= 0 {
			fs.SetOpLimit(start + limit)
		}
		for _, m := range msgs[first:] {
			err := fw.apply(readResult{m: m})
			if err == nil {
				err = fw.ack()
			}
			if err != nil {
				require.GreaterOrEqual(t, limit, 0, "only a crash fails the session: %v", err)
				break
			}
		}
		ops := fs.OpCount() - start
		_ = fl.close()
		return fs, ops
	}
	_, total := run(-1)
	require.Positive(t, total)
	rng := rand.New(rand.NewPCG(7, 11))
	for n := 0; n <= total; n++ {
		for _, mode := range vfs.CrashModes {
			fs, _ := run(n)
			fs.Crash(mode, rng)
			checkPromoted(t, fs, dir, fmt.Sprintf("after a crash at operation %d of %d (%v)", n, total, mode), segment, acked, groups)
		}
	}
	t.Logf("crashed at each of %d operations of the catch-up's start, in %d modes", total+1, len(vfs.CrashModes))
}
