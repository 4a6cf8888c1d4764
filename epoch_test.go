package zeroloss

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// messagesByID returns the messages a queue's log holds, by ID, with their
// seqs; an ID held twice fails the test.
func messagesByID(t *testing.T, q *Queue) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, s := range readBackUncapped(t, q) {
		_, dup := out[s.Msg.ID]
		require.False(t, dup, "message %s twice", s.Msg.ID)
		out[s.Msg.ID] = s.Seq
	}
	return out
}

// checkEpochStamps checks that every frame of q's log carries the epoch of
// the term its seq falls in.
func checkEpochStamps(t *testing.T, q *Queue) {
	t.Helper()
	r := q.log.NewUncappedReader(0)
	defer r.Close()
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return
		}
		require.NoError(t, err)
		var want uint64
		for _, e := range q.epochs {
			if e.Start <= rec.Seq {
				want = e.Num
			}
		}
		require.Equal(t, uint32(want), rec.Epoch, "%v record at seq %d", rec.Type, rec.Seq)
	}
}

// leaderWithFollower opens a leader with opts in a new directory and attaches
// a follower (Follow) keeping its copy in another.
func leaderWithFollower(t *testing.T, opts Options) (dirL, dirF string, l *Queue, f *testFollower) {
	t.Helper()
	dirL, dirF = t.TempDir(), t.TempDir()
	l, err := Open(dirL, &opts)
	require.NoError(t, err)
	a, b := net.Pipe()
	f = startFollower(t, dirF, b, nil)
	require.NoError(t, l.AttachReplica(a))
	return dirL, dirF, l, f
}

func sendIDs(t *testing.T, q *Queue, prefix string, n int, want SendStatus) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		res, err := q.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)})
		require.NoError(t, err)
		require.Equal(t, want, res.Status, "send %s", id)
		ids = append(ids, id)
	}
	return ids
}

// The old leader comes back after its follower was promoted: it rejoins as
// the new leader's follower, cuts the tail it wrote after the follower
// stopped (never acknowledged under ReplicateSync: ReplicaNotAvailable),
// copies the new term, and no seq names two messages.
func TestOldLeaderRejoinsAsFollowerOfThePromotedOne(t *testing.T) {
	opts := Options{Replication: ReplicateSync, SegmentSize: 256 << 10, MaxMessageSize: 64 << 10}
	dirL, dirF, l, f := leaderWithFollower(t, opts)
	acked := sendIDs(t, l, "acked", 50, SendOK)
	require.ErrorIs(t, f.stop(), context.Canceled)
	require.Eventually(t, func() bool { return !l.Stats().ReplicaAttached }, 5*time.Second, time.Millisecond)
	stale := sendIDs(t, l, "stale", 10, ReplicaNotAvailable)
	oldLast := l.Stats().LastSeq
	require.NoError(t, l.Close())

	// Failover: the follower's directory opens as the leader of epoch 2,
	// its seqs starting above anything the old leader could have used.
	p, err := Open(dirF, &opts)
	require.NoError(t, err)
	defer p.Close()
	require.Len(t, p.epochs, 2)
	assert.Equal(t, uint64(2), p.epochs[1].Num)
	assert.Greater(t, p.epochs[1].Start, oldLast+promotionSeqGap-100, "the new term skips the old leader's possible seqs")
	have := messagesByID(t, p)
	for _, id := range acked {
		require.Contains(t, have, id, "every SendOK message survives the failover")
	}
	for _, id := range stale {
		require.NotContains(t, have, id)
	}
	fresh := sendIDs(t, p, "fresh", 20, ReplicaNotAvailable)

	// The old leader rejoins as a follower.
	var logs bytes.Buffer
	a, b := net.Pipe()
	rejoin := startFollower(t, dirL, b, &FollowOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, p.AttachReplica(a))
	waitAcked(t, p, p.Stats().LastSeq)
	assert.Contains(t, logs.String(), fmt.Sprintf("records=%d", len(stale)), "the follower logs how many records it cut")
	more := sendIDs(t, p, "more", 5, SendOK)
	require.ErrorIs(t, rejoin.stop(), context.Canceled)

	wantSeqs, wantFrames := rawFrames(t, p)
	back, err := Open(dirL, &opts)
	require.NoError(t, err)
	defer back.Close()
	gotSeqs, gotFrames := rawFrames(t, back)
	gotSeqs, gotFrames = dropLastFrame(t, gotSeqs, gotFrames)
	require.Equal(t, wantSeqs, gotSeqs, "the old leader's log is now the new leader's, seq for seq")
	require.Equal(t, wantFrames, gotFrames, "byte for byte")
	have = messagesByID(t, back)
	for _, id := range append(append(acked, fresh...), more...) {
		require.Contains(t, have, id)
	}
	for _, id := range stale {
		require.NotContains(t, have, id, "the old leader's stale tail is not resurrected")
	}
	assert.Equal(t, uint64(3), back.epochs[len(back.epochs)-1].Num)
	checkEpochStamps(t, back)
}

// A leader that missed a failover (it reopened on its own) has an older
// epoch than a follower that saw the failover: it refuses the follower, and
// the follower's log is left alone.
func TestStaleLeaderRefusesAFollowerFromALaterEpoch(t *testing.T) {
	opts := Options{Replication: ReplicateSync}
	dirL, dirF, l, f := leaderWithFollower(t, opts)
	sendIDs(t, l, "m", 5, SendOK)
	require.ErrorIs(t, f.stop(), context.Canceled)
	require.NoError(t, l.Close())

	// The follower is promoted (epoch 2) and restarted (epoch 3).
	for i := range 2 {
		p, err := Open(dirF, &opts)
		require.NoError(t, err)
		sendIDs(t, p, fmt.Sprint("p", i), 2, ReplicaNotAvailable)
		require.NoError(t, p.Close())
	}
	// The old leader reopens by mistake (epoch 2, its own) and the promoted
	// one is pointed at it as a follower.
	l, err := Open(dirL, &opts)
	require.NoError(t, err)
	defer l.Close()
	a, b := net.Pipe()
	f = startFollower(t, dirF, b, nil)
	err = l.AttachReplica(a)
	require.ErrorIs(t, err, ErrReplication)
	assert.Contains(t, err.Error(), "stale")
	ferr := <-f.doneOnce()
	require.ErrorIs(t, ferr, ErrReplication)
	assert.Contains(t, ferr.Error(), "restart the leader as a follower")

	p, err := Open(dirF, &opts)
	require.NoError(t, err)
	defer p.Close()
	assert.Len(t, messagesByID(t, p), 5+2+2, "the refused follower kept its log")
}

// FlushAsync leader, ReplicateSync, and the leader loses power: the promoted
// follower holds every SendOK message, and the old leader, rejoining as a
// follower after the crash, neither resurrects its unreplicated tail nor
// reuses a seq.
func TestLeaderPowerLossFlushAsyncReplicateSync(t *testing.T) {
	runs := 8 // two per crash mode; each rejoin copies the whole log onto a MemFS
	if testing.Short() {
		runs = 4
	}
	for run := range runs {
		mode := vfs.CrashModes[run%len(vfs.CrashModes)]
		t.Run(fmt.Sprintf("%d-%v", run, mode), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(run), 42))
			lfs := vfs.NewMem()
			opts := Options{Flush: FlushAsync, Replication: ReplicateSync, fs: lfs, SegmentSize: 128 << 10, MaxMessageSize: 64 << 10,
				FlushInterval: 5 * time.Millisecond, ReplicaTimeout: 300 * time.Millisecond}
			l, err := Open("/leader", &opts)
			require.NoError(t, err)
			dirF := t.TempDir()
			a, b := net.Pipe()
			f := startFollower(t, dirF, b, nil)
			require.NoError(t, l.AttachReplica(a))

			var mu sync.Mutex
			acked := map[string]uint64{}
			var wg sync.WaitGroup
			stop := make(chan struct{})
			// The power goes out after a random number of SendOKs, not after
			// a sleep: on a loaded machine the handshake and the first
			// follower acks can outlast any fixed sleep, and a cut with no
			// SendOK checks nothing.
			cutAfter := 1 + rng.IntN(100)
			enough := make(chan struct{})
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						id := fmt.Sprintf("g%d-%d", g, i)
						res, err := l.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)})
						if err != nil {
							return
						}
						if res.Status == SendOK {
							mu.Lock()
							acked[id] = res.Seq
							if len(acked) == cutAfter {
								close(enough)
							}
							mu.Unlock()
						}
					}
				}()
			}
			select {
			case <-enough:
			case <-time.After(30 * time.Second):
				t.Errorf("fewer than %d SendOKs in 30s", cutAfter)
			}
			lfs.SetOpLimit(lfs.OpCount()) // the power goes out
			close(stop)
			wg.Wait()
			_ = l.Close()
			lfs.Crash(mode, rng)
			f.stop() // the leader closed the link: io.EOF

			mu.Lock()
			require.NotEmpty(t, acked)
			mu.Unlock()

			// Failover.
			popts := Options{Replication: ReplicateSync, SegmentSize: 128 << 10, MaxMessageSize: 64 << 10}
			p, err := Open(dirF, &popts)
			require.NoError(t, err)
			defer p.Close()
			have := messagesByID(t, p)
			for id, seq := range acked {
				require.Equal(t, seq, have[id], "SendOK message %s (seq %d) is on the promoted follower", id, seq)
			}
			sendIDs(t, p, "after", 10, ReplicaNotAvailable)

			// The old leader's directory, after the power loss, rejoins.
			a, b = net.Pipe()
			rejoin := startFollower(t, "/leader", b, &FollowOptions{fs: lfs})
			require.NoError(t, p.AttachReplica(a))
			waitFollowerAcked(t, p, p.Stats().LastSeq, rejoin)
			require.ErrorIs(t, rejoin.stop(), context.Canceled)

			wantSeqs, wantFrames := rawFrames(t, p)
			back, err := Open("/leader", &Options{fs: lfs, SegmentSize: 128 << 10, MaxMessageSize: 64 << 10})
			require.NoError(t, err)
			defer back.Close()
			gotSeqs, gotFrames := rawFrames(t, back)
			gotSeqs, gotFrames = dropLastFrame(t, gotSeqs, gotFrames)
			require.Equal(t, wantSeqs, gotSeqs, "the old leader holds the new leader's log, nothing else")
			require.Equal(t, wantFrames, gotFrames)
			checkEpochStamps(t, back)
		})
	}
}

// Consumer group state is replicated with the messages: after a failover the
// group receives again only what was in flight or never delivered, not what
// it had acked on the old leader.
func TestFailoverKeepsConsumerGroupState(t *testing.T) {
	opts := Options{Replication: ReplicateSync}
	dirL, dirF, l, f := leaderWithFollower(t, opts)
	c, err := l.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour})
	require.NoError(t, err)
	ids := sendIDs(t, l, "m", 20, SendOK)
	acked := map[string]bool{}
	inFlight := map[string]bool{}
	for i := range 13 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d, err := c.Receive(ctx)
		cancel()
		require.NoError(t, err)
		if i < 10 {
			require.NoError(t, d.Ack()) // durable on the leader; replicated with the stream
			acked[d.Message.ID] = true
		} else {
			inFlight[d.Message.ID] = true
		}
	}
	waitAcked(t, l, l.Stats().LastSeq) // the follower holds the ack records too
	require.ErrorIs(t, f.stop(), context.Canceled)
	require.NoError(t, l.Close())
	require.NoError(t, os.RemoveAll(dirL)) // the leader's disk is gone

	// Promoted alone: ReplicateAsync, so its consumers need no follower.
	p, err := Open(dirF, &Options{Replication: ReplicateAsync})
	require.NoError(t, err)
	defer p.Close()
	pc, err := p.Consumer("g", nil)
	require.NoError(t, err)
	var again []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		d, err := pc.Receive(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		require.NoError(t, err)
		require.False(t, acked[d.Message.ID], "%s was acked on the old leader", d.Message.ID)
		again = append(again, d.Message.ID)
		require.NoError(t, d.Ack())
	}
	var want []string
	for _, id := range ids {
		if !acked[id] {
			want = append(want, id)
		}
	}
	assert.ElementsMatch(t, want, again, "in flight (%d) and never delivered (%d), nothing else", len(inFlight), 20-13)
}
