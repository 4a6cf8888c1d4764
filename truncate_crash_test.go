package zeroloss

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// The scripted leader's queue and its one leadership term.
var (
	scriptedQueue = [16]byte{7}
	scriptedTerm  = repl.Epoch{Num: 1, ID: 7, Start: 1}
)

// scriptedLeader answers the follower's hello (protocol 3: an auth without a
// secret, then, after the follower's position, a welcome) naming from as
// the first seq it sends, writes msgs, waits for the follower's ack of last
// (or its failure) and closes the link.
func scriptedLeader(link io.ReadWriteCloser, from, last uint64, msgs ...[]byte) {
	go func() {
		defer link.Close()
		br := bufio.NewReader(link)
		hello, err := repl.ReadMessage(br, repl.ControlBody)
		if err != nil {
			return
		}
		auth := repl.Auth{Version: repl.Version, Queue: scriptedQueue, Epoch: scriptedTerm}
		auth.MAC = repl.LeaderMAC(nil, hello.Hello.Nonce, &auth)
		if err := repl.WriteMessage(link, &repl.Message{Type: repl.TypeAuth, Auth: auth}); err != nil {
			return
		}
		if _, err := repl.ReadMessage(br, repl.ControlBody); err != nil { // the position
			return
		}
		if err := repl.WriteMessage(link, &repl.Message{Type: repl.TypeWelcome,
			Welcome: repl.Welcome{Version: repl.Version, From: from, Epochs: []repl.Epoch{scriptedTerm}}}); err != nil {
			return
		}
		acked := make(chan struct{})
		go func() {
			defer close(acked)
			for {
				m, err := repl.ReadMessage(br, repl.ControlBody)
				if err != nil || m.Type == repl.TypeAck && m.Seq >= last {
					return
				}
			}
		}()
		for _, msg := range msgs {
			if _, err := link.Write(msg); err != nil {
				return
			}
		}
		<-acked
	}()
}

// followScript runs Follow on dir in fsys against a scripted leader sending
// msgs, the last of which ends at seq last, until the leader closes the link
// after the follower acked it (an error matching io.EOF), or until Follow
// fails.
func followScript(fsys vfs.FS, dir string, from, last uint64, msgs ...[]byte) error {
	return followScriptWith(&FollowOptions{fs: fsys, SegmentSize: truncateCrashSegment}, dir, from, last, msgs...)
}

func followScriptWith(opts *FollowOptions, dir string, from, last uint64, msgs ...[]byte) error {
	a, b := net.Pipe()
	scriptedLeader(a, from, last, msgs...)
	return Follow(context.Background(), dir, b, opts)
}

const truncateCrashSegment = 8 << 10

// framesFrom returns a Frames message of the frames seq from..to, with
// bodies that name their version.
func framesFrom(from, to uint64, version string) []byte {
	var frames []byte
	for seq := from; seq <= to; seq++ {
		frames = append(frames, testFrame(seq, fmt.Sprintf("%s-%d", version, seq))...)
	}
	return framesMsg(frames)
}

// TestCrashDuringDivergentTailCut builds a follower's directory holding seqs
// 1..200 over three segments, then has a new leader say the logs part after
// seq keep (the follower cuts keep+1..200) and send its own 20 seqs after
// keep. It crashes that Follow at every operation, in every mode: the
// directory must then open as a queue (a promotion) with every frame up to
// keep that was durable before, as it was, and after them either the old
// tail or the new one, never a mix and never a gap.
func TestCrashDuringDivergentTailCut(t *testing.T) {
	t.Run("after a clean stop", func(t *testing.T) {
		base := vfs.NewMem()
		err := followScript(base, "/f", 1, 200, framesFrom(1, 100, "old"), framesFrom(101, 200, "old"))
		require.ErrorIs(t, err, io.EOF, "the scripted leader closed the link")
		crashDuringDivergentTailCut(t, base, 70) // in the first segment: the two after it go whole
	})
	// A FlushAsync follower acked after write(2); its process dies before it
	// syncs: the frames are in the page cache only when the cutting Follow
	// opens the directory.
	t.Run("after a process crash with unsynced frames", func(t *testing.T) {
		base := vfs.NewMem()
		opts := &FollowOptions{fs: base, SegmentSize: truncateCrashSegment, Flush: FlushAsync, OnAck: func(seq uint64) {
			if seq >= 200 {
				base.SetOpLimit(base.OpCount()) // the process dies
			}
		}}
		_ = followScriptWith(opts, "/f", 1, 200, framesFrom(1, 100, "old"), framesFrom(101, 200, "old"))
		base.ProcessCrash()
		crashDuringDivergentTailCut(t, base, 185) // in the last segment, whose tail was not synced
	})
}

func crashDuringDivergentTailCut(t *testing.T, base *vfs.MemFS, keep uint64) {
	// What a power loss now would leave must survive a crash at any point
	// of the cut, up to keep (the rest was never synced: never acked under
	// FlushSync).
	durable := base.Clone()
	durable.Crash(vfs.DropUnsynced, nil)
	q, err := Open("/f", &Options{fs: durable, SegmentSize: truncateCrashSegment, MaxMessageSize: 4000})
	require.NoError(t, err)
	must := min(uint64(len(readBackUncapped(t, q))), keep)
	require.NoError(t, q.Close())
	require.Greater(t, must, uint64(60))

	names, err := base.List("/f")
	require.NoError(t, err)
	require.Greater(t, len(names), 4, "three segments or more: %v", names)

	// Count the operations of the Follow that cuts.
	probe := base.Clone()
	start := probe.OpCount()
	require.ErrorIs(t, followScript(probe, "/f", keep+1, keep+20, framesFrom(keep+1, keep+20, "new")), io.EOF)
	total := probe.OpCount() - start

	rng := rand.New(rand.NewPCG(37, 41))
	crashes := 0
	// RandomPages is drawn several times per point: it alone can keep a
	// slot's page and lose the pages of the frames the slot claims.
	modes := append(slices.Clone(vfs.CrashModes), vfs.RandomPages, vfs.RandomPages, vfs.RandomPages)
	for k := 0; k <= total; k++ {
		for _, mode := range modes {
			fs := base.Clone()
			fs.SetOpLimit(fs.OpCount() + k)
			_ = followScript(fs, "/f", keep+1, keep+20, framesFrom(keep+1, keep+20, "new"))
			fs.Crash(mode, rng)
			label := fmt.Sprintf("Follow crashed after op %d/%d, %v", k, total, mode)
			q, err := Open("/f", &Options{fs: fs, SegmentSize: truncateCrashSegment, MaxMessageSize: 4000})
			require.NoError(t, err, label)
			got := readBackUncapped(t, q)
			require.GreaterOrEqual(t, uint64(len(got)), must, label)
			version := ""
			for i, s := range got {
				require.Equal(t, uint64(i+1), s.Seq, "%s: no gap", label)
				v := "old"
				if s.Seq > keep && string(s.Msg.Body[:3]) == "new" {
					v = "new"
				}
				if s.Seq > keep {
					if version == "" {
						version = v
					}
					require.Equal(t, version, v, "%s: seq %d is of the other tail", label, s.Seq)
				}
				require.Equal(t, fmt.Sprintf("%s-%d", v, s.Seq), string(s.Msg.Body), label)
			}
			require.NoError(t, q.Close(), label)
			crashes++
		}
	}
	t.Logf("%d crashes during the cut (%d operations)", crashes, total)
}
