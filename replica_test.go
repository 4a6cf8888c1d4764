package zeroloss

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// linkKinds are the transports every replication test runs over: two ends of
// an io.ReadWriteCloser.
var linkKinds = []struct {
	name string
	pair func(t *testing.T) (leader, follower io.ReadWriteCloser)
}{
	{"pipe", func(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
		a, b := net.Pipe()
		return a, b
	}},
	{"unix", unixPair},
	{"ospipe", osPipePair},
}

// osPipePair joins two os.Pipe pairs into two io.ReadWriteClosers.
func osPipePair(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
	t.Helper()
	r1, w1, err := os.Pipe()
	require.NoError(t, err)
	r2, w2, err := os.Pipe()
	require.NoError(t, err)
	return &pipeRWC{r: r1, w: w2}, &pipeRWC{r: r2, w: w1}
}

type pipeRWC struct{ r, w *os.File }

func (p *pipeRWC) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeRWC) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeRWC) Close() error {
	werr := p.w.Close()
	if err := p.r.Close(); err != nil {
		return err
	}
	return werr
}

// unixPair connects two ends of a Unix socket in a short temporary directory.
func unixPair(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
	t.Helper()
	dir, err := os.MkdirTemp("", "zlr")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	require.NoError(t, err)
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	accepted := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		accepted <- res{c, err}
	}()
	dialed, err := net.Dial("unix", filepath.Join(dir, "s"))
	require.NoError(t, err)
	r := <-accepted
	require.NoError(t, r.err)
	return r.c, dialed
}

// follower runs Follow in the background.
type testFollower struct {
	cancel context.CancelFunc
	done   chan error
}

func startFollower(t *testing.T, dir string, link io.ReadWriteCloser, opts *FollowOptions) *testFollower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &testFollower{cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- Follow(ctx, dir, link, opts) }()
	t.Cleanup(func() { f.stop() })
	return f
}

// stop stops the follower and returns what Follow returned.
func (f *testFollower) stop() error {
	f.cancel()
	return <-f.doneOnce()
}

func (f *testFollower) doneOnce() <-chan error {
	ch := make(chan error, 1)
	select {
	case err, ok := <-f.done:
		if ok {
			close(f.done)
			ch <- err
		} else {
			ch <- nil
		}
	case <-time.After(10 * time.Second):
		ch <- errors.New("follower did not stop within 10s")
	}
	return ch
}

func openLeader(t *testing.T, o Options) *Queue {
	t.Helper()
	q, err := Open(t.TempDir(), &o)
	require.NoError(t, err)
	t.Cleanup(func() { q.Close() })
	return q
}

// rawFrames returns every durable frame of dir's log, encoded, keyed by seq
// order: the bytes as stored.
func rawFrames(t *testing.T, q *Queue) (seqs []uint64, frames []byte) {
	t.Helper()
	r := q.log.NewUncappedReader(0)
	defer r.Close()
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return seqs, frames
		}
		require.NoError(t, err)
		seqs = append(seqs, rec.Seq)
		frames = record.Append(frames, &rec)
	}
}

// dropLastFrame drops the last of frames, which must be an epoch record
// (the one a promoted follower writes when it opens).
func dropLastFrame(t *testing.T, seqs []uint64, frames []byte) ([]uint64, []byte) {
	t.Helper()
	require.NotEmpty(t, seqs)
	var off int
	for rest := frames; ; {
		rec, n, err := record.Decode(rest, 0)
		require.NoError(t, err)
		if n == len(rest) {
			require.Equal(t, record.TypeEpoch, rec.Type)
			return seqs[:len(seqs)-1], frames[:off]
		}
		off += n
		rest = rest[n:]
	}
}

// waitFollowerAcked is waitAcked that fails at once with the follower's
// error if it stops first.
func waitFollowerAcked(t *testing.T, q *Queue, seq uint64, f *testFollower) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for q.Stats().ReplicaAckedSeq < seq {
		select {
		case err := <-f.done:
			f.done <- err
			t.Fatalf("the follower stopped at acked %d (want %d): %v", q.Stats().ReplicaAckedSeq, seq, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("follower acked %d, want %d", q.Stats().ReplicaAckedSeq, seq)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitAcked waits until the follower acknowledged seq.
func waitAcked(t *testing.T, q *Queue, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for q.Stats().ReplicaAckedSeq < seq {
		if time.Now().After(deadline) {
			t.Fatalf("follower acked %d, want %d", q.Stats().ReplicaAckedSeq, seq)
		}
		time.Sleep(time.Millisecond)
	}
}

// Every SendOK under ReplicateSync is in the follower's directory, which
// opens as a normal Queue once the follower stops (promotion).
func TestReplicateSyncEverySendOKIsOnTheFollower(t *testing.T) {
	for _, flush := range []FlushMode{FlushSync, FlushAsync} {
		for _, kind := range linkKinds {
			t.Run(fmt.Sprintf("flush=%v/%s", flush, kind.name), func(t *testing.T) {
				q := openLeader(t, Options{Flush: flush, FlushInterval: 5 * time.Millisecond, Replication: ReplicateSync})
				fdir := t.TempDir()
				la, lb := kind.pair(t)
				f := startFollower(t, fdir, lb, nil)
				require.NoError(t, q.AttachReplica(la))

				const producers, each = 8, 100
				var mu sync.Mutex
				ok := map[uint64]string{}
				var wg sync.WaitGroup
				for p := range producers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range each {
							id := fmt.Sprintf("p%d-%d", p, i)
							res, err := q.Send(context.Background(), &Message{ID: id, Body: []byte(id)})
							if !assert.NoError(t, err) {
								return
							}
							assert.Equal(t, SendOK, res.Status)
							if res.Status == SendOK {
								mu.Lock()
								ok[res.Seq] = id
								mu.Unlock()
							}
						}
					}()
				}
				wg.Wait()
				require.Len(t, ok, producers*each)
				st := q.Stats()
				assert.True(t, st.ReplicaAttached)
				assert.GreaterOrEqual(t, st.ReplicaAckedSeq, st.CommittedSeq, "committed never above the follower's ack")

				require.ErrorIs(t, f.stop(), context.Canceled)
				promoted, err := Open(fdir, nil)
				require.NoError(t, err, "a stopped follower's directory opens as a Queue")
				defer promoted.Close()
				got := map[uint64]string{}
				for _, s := range readBack(t, promoted) {
					got[s.Seq] = s.Msg.ID
				}
				for seq, id := range ok {
					require.Equal(t, id, got[seq], "SendOK message at seq %d on the follower", seq)
				}
				// Sends after the follower stopped: ReplicaNotAvailable.
				require.Eventually(t, func() bool { return !q.Stats().ReplicaAttached }, 5*time.Second, time.Millisecond)
				res, err := q.Send(context.Background(), &Message{Body: []byte("alone")})
				require.NoError(t, err)
				assert.Equal(t, ReplicaNotAvailable, res.Status)
			})
		}
	}
}

func TestReplicateSyncWithoutFollowerIsReplicaNotAvailable(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync})
	res, err := q.Send(context.Background(), &Message{Body: []byte("x")})
	require.NoError(t, err)
	assert.Equal(t, ReplicaNotAvailable, res.Status)
	assert.Equal(t, uint64(1), q.Stats().ReplicaNotAvailable)
	seqs, _ := rawFrames(t, q)
	assert.Equal(t, res.Seq, seqs[len(seqs)-1], "the message stays on the leader (synced)")
	assert.Empty(t, readBack(t, q), "readers of the leader do not see it")
	assert.Less(t, q.committedSeq(), res.Seq, "consumers do not see what no follower acknowledged")

	// ReplicateNone refuses a follower; ReplicateAsync answers SendOK alone.
	none := openLeader(t, Options{})
	a, b := net.Pipe()
	defer b.Close()
	require.ErrorIs(t, none.AttachReplica(a), ErrInvalidOptions)
	async := openLeader(t, Options{Replication: ReplicateAsync})
	res, err = async.Send(context.Background(), &Message{Body: []byte("x")})
	require.NoError(t, err)
	assert.Equal(t, SendOK, res.Status)
}

// fakeFollower does the handshake and then hands the test the messages the
// leader sends; it acks only when told.
type fakeFollower struct {
	link   io.ReadWriteCloser
	frames chan repl.Message
}

func startFakeFollower(t *testing.T, link io.ReadWriteCloser, maxFrame uint32) *fakeFollower {
	t.Helper()
	f := &fakeFollower{link: link, frames: make(chan repl.Message, 1024)}
	go func() {
		br := bufio.NewReader(link)
		defer close(f.frames)
		if err := fakeFollowerHandshake(link, br, nil, repl.Position{MaxFrame: maxFrame}); err != nil {
			return
		}
		for {
			m, err := repl.ReadMessage(br, repl.MaxBody(int(maxFrame)))
			if err != nil {
				return
			}
			f.frames <- m
		}
	}()
	t.Cleanup(func() { link.Close() })
	return f
}

func (f *fakeFollower) ack(seq uint64) error {
	return repl.WriteMessage(f.link, &repl.Message{Type: repl.TypeAck, Seq: seq})
}

// A follower that stops acking: FlushReplicaTimeout after ReplicaTimeout;
// the message stays on the leader.
func TestReplicateSyncFollowerStopsAckingIsFlushReplicaTimeout(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync, ReplicaTimeout: 200 * time.Millisecond})
	a, b := net.Pipe()
	f := startFakeFollower(t, b, DefaultMaxMessageSize+record.MaxMoveOverhead)
	require.NoError(t, q.AttachReplica(a))

	res, err := q.Send(context.Background(), &Message{Body: []byte("acked")})
	require.NoError(t, err)
	_ = res
	// (the fake follower acks nothing yet: the first Send times out too)
	assert.Equal(t, FlushReplicaTimeout, res.Status)
	m := <-f.frames
	require.Equal(t, repl.TypeWelcome, m.Type)
	for m = <-f.frames; m.LastSeq < res.Seq; m = <-f.frames { // the leader's epoch record first
	}
	require.Equal(t, res.Seq, m.LastSeq)
	require.NoError(t, f.ack(m.LastSeq))
	waitAcked(t, q, res.Seq)
	go func() {
		m := <-f.frames
		f.ack(m.LastSeq)
	}()
	res, err = q.Send(context.Background(), &Message{Body: []byte("after the ack")})
	require.NoError(t, err)
	assert.Equal(t, SendOK, res.Status, "acked in time")

	start := time.Now()
	res, err = q.Send(context.Background(), &Message{Body: []byte("never acked")})
	require.NoError(t, err)
	assert.Equal(t, FlushReplicaTimeout, res.Status)
	assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
	assert.Equal(t, res.Seq, q.Stats().LastSeq, "the message stays on the leader")
	assert.Less(t, q.committedSeq(), res.Seq, "consumers do not see it")
	assert.Equal(t, uint64(2), q.Stats().ReplicaTimeouts)
}

// Consumers on the leader under ReplicateSync never see a message the
// follower has not acknowledged.
func TestReplicateSyncConsumersSeeOnlyAcked(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync, ReplicaTimeout: 10 * time.Second})
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	a, b := net.Pipe()
	f := startFakeFollower(t, b, DefaultMaxMessageSize+record.MaxMoveOverhead)
	require.NoError(t, q.AttachReplica(a))
	require.Equal(t, repl.TypeWelcome, (<-f.frames).Type)

	sent := make(chan SendResult, 1)
	go func() {
		res, _ := q.Send(context.Background(), &Message{ID: "m1", Body: []byte("1")})
		sent <- res
	}()
	var last uint64
	for last == 0 { // the group record, then the message
		m := <-f.frames
		for off := 0; off < len(m.Frames); {
			rec, n, err := record.Decode(m.Frames[off:], 0)
			require.NoError(t, err)
			if rec.Type == record.TypeMessage {
				last = rec.Seq
			}
			off += n
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = c.Receive(ctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "synced on the leader, not acked: invisible")
	select {
	case <-sent:
		t.Fatal("Send returned before the follower acked")
	default:
	}
	require.NoError(t, f.ack(last))
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := c.Receive(ctx)
	require.NoError(t, err)
	assert.Equal(t, "m1", d.Message.ID)
	assert.LessOrEqual(t, d.Seq, q.Stats().ReplicaAckedSeq)
	assert.Equal(t, SendOK, (<-sent).Status)
}

// A follower that connects late catches up from the leader's disk, then
// live; a follower that stops and comes back with the same directory
// resumes where it was, without duplicates. Its copy is the leader's log
// byte for byte.
func TestLateFollowerCatchesUpAndResumes(t *testing.T) {
	for _, kind := range linkKinds {
		t.Run(kind.name, func(t *testing.T) {
			q := openLeader(t, Options{Replication: ReplicateAsync, SegmentSize: 256 << 10, MaxMessageSize: 64 << 10})
			send := func(n int) {
				for i := 0; i < n; i += 100 {
					var msgs []*Message
					for j := i; j < min(n, i+100); j++ {
						msgs = append(msgs, &Message{Body: fmt.Appendf(nil, "message %d %0500d", j, j)})
					}
					res, err := q.SendBatch(context.Background(), msgs)
					require.NoError(t, err)
					for _, r := range res {
						require.Equal(t, SendOK, r.Status)
					}
				}
			}
			send(1500) // several segments, before any follower
			_, err := q.Consumer("g", nil)
			require.NoError(t, err)

			fdir := t.TempDir()
			fopts := &FollowOptions{SegmentSize: 256 << 10}
			la, lb := kind.pair(t)
			f := startFollower(t, fdir, lb, fopts)
			require.NoError(t, q.AttachReplica(la))
			waitAcked(t, q, q.Stats().LastSeq)
			send(200) // live
			waitAcked(t, q, q.Stats().LastSeq)
			require.ErrorIs(t, f.stop(), context.Canceled)

			send(300) // while it is away
			la, lb = kind.pair(t)
			f = startFollower(t, fdir, lb, fopts)
			require.NoError(t, q.AttachReplica(la))
			send(100)
			waitAcked(t, q, q.Stats().LastSeq)
			require.ErrorIs(t, f.stop(), context.Canceled)

			wantSeqs, want := rawFrames(t, q)
			promoted, err := Open(fdir, &Options{SegmentSize: 256 << 10, MaxMessageSize: 64 << 10})
			require.NoError(t, err)
			defer promoted.Close()
			gotSeqs, got := rawFrames(t, promoted)
			// The promoted copy ends with its own epoch record.
			gotSeqs, got = dropLastFrame(t, gotSeqs, got)
			// The leader may have written consumer marks since.
			require.LessOrEqual(t, len(gotSeqs), len(wantSeqs))
			require.Equal(t, wantSeqs[:len(gotSeqs)], gotSeqs, "same seqs, no duplicates")
			require.Equal(t, want[:len(got)], got, "same frames byte for byte (consumer records included)")
			assert.Len(t, readBack(t, promoted), 2100)
		})
	}
}

// fakeLeader answers the follower's hello and then sends what the test gives.
func fakeLeader(t *testing.T, link io.ReadWriteCloser, msgs ...[]byte) {
	t.Helper()
	go func() {
		br := bufio.NewReader(link)
		epoch := repl.Epoch{Num: 1, ID: 1, Start: 1}
		pos, err := fakeLeaderHandshake(link, br, nil, queueID{1}, epoch)
		if err != nil {
			return
		}
		repl.WriteMessage(link, &repl.Message{Type: repl.TypeWelcome, Welcome: repl.Welcome{Version: repl.Version, From: pos.LastSeq + 1, Epochs: []repl.Epoch{epoch}}})
		go io.Copy(io.Discard, br) // acks
		for _, msg := range msgs {
			if _, err := link.Write(msg); err != nil {
				return
			}
		}
	}()
}

func framesMsg(frames []byte) []byte {
	return repl.AppendMessage(nil, &repl.Message{Type: repl.TypeFrames, Frames: frames})
}

func testFrame(seq uint64, body string) []byte {
	m := record.Message{ID: fmt.Sprint("id-", seq), Body: []byte(body)}
	f := record.AppendMessageFrame(nil, 0, 0, 1, &m)
	record.SetSeq(f, seq)
	return f
}

// A malformed, oversized or out-of-order message from the leader is rejected
// with a clear error, and nothing of it is written.
func TestFollowerRejectsBadFrames(t *testing.T) {
	good := framesMsg(append(testFrame(1, "one"), testFrame(2, "two")...))
	damaged := append(testFrame(3, "three"), testFrame(4, "four")...)
	damaged[len(damaged)-1] ^= 0x01 // the second frame's body: its own CRC fails, the envelope's is recomputed
	huge := make([]byte, repl.EnvelopeSize)
	huge[3] = 0x7f // a body length of about 2 GiB
	cases := []struct {
		name string
		msg  []byte
		want string
	}{
		{"frame CRC", framesMsg(damaged), "checksum"},
		{"out of order", framesMsg(testFrame(2, "again")), "out of order"},
		{"oversized", huge, "too large"},
		{"envelope CRC", func() []byte { b := framesMsg(testFrame(3, "x")); b[len(b)-1] ^= 1; return b }(), "checksum"},
		{"wrong type", repl.AppendMessage(nil, &repl.Message{Type: repl.TypeAck, Seq: 9}), "out of order"},
	}
	for _, kind := range linkKinds {
		for _, c := range cases {
			t.Run(kind.name+"/"+c.name, func(t *testing.T) {
				dir := t.TempDir()
				la, lb := kind.pair(t)
				fakeLeader(t, la, good, c.msg)
				err := Follow(context.Background(), dir, lb, &FollowOptions{SegmentSize: 1 << 20})
				la.Close()
				require.ErrorIs(t, err, ErrReplication)
				assert.Contains(t, err.Error(), c.want)
				assert.Contains(t, err.Error(), "nothing of")
				q, err := Open(dir, &Options{SegmentSize: 1 << 20, MaxMessageSize: 64 << 10})
				require.NoError(t, err)
				defer q.Close()
				var seqs []uint64
				for _, s := range readBack(t, q) {
					seqs = append(seqs, s.Seq)
				}
				assert.Equal(t, []uint64{1, 2}, seqs, "the good message is kept, nothing of the bad one written")
			})
		}
	}
}

// The leader refuses a follower that cannot hold its largest message, or
// that claims seqs the leader never had; the follower gets the reason.
func TestLeaderRefusesIncompatibleFollower(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync, MaxMessageSize: 1 << 20})
	a, b := net.Pipe()
	f := startFollower(t, t.TempDir(), b, &FollowOptions{SegmentSize: 64 << 10})
	err := q.AttachReplica(a)
	require.ErrorIs(t, err, ErrReplication)
	assert.Contains(t, err.Error(), "below the leader's MaxMessageSize")
	ferr := <-f.doneOnce()
	require.ErrorIs(t, ferr, ErrReplication)
	assert.Contains(t, ferr.Error(), "below the leader's MaxMessageSize")

	a, b = net.Pipe()
	fdir := t.TempDir()
	fq, err := Open(fdir, nil)
	require.NoError(t, err)
	_, err = fq.Send(context.Background(), &Message{Body: []byte("not the leader's")})
	require.NoError(t, err)
	require.NoError(t, fq.Close())
	f = startFollower(t, fdir, b, nil)
	err = q.AttachReplica(a)
	require.ErrorIs(t, err, ErrReplication)
	assert.Contains(t, err.Error(), "holds a copy of queue", "another queue's directory")
	require.ErrorIs(t, <-f.doneOnce(), ErrReplication)

	// The same queue ID, but no shared epoch.
	require.NoError(t, writeIdentity(vfs.OS, fdir, identity{Kind: kindFollower, Queue: q.identity.Queue}))
	a, b = net.Pipe()
	f = startFollower(t, fdir, b, nil)
	err = q.AttachReplica(a)
	require.ErrorIs(t, err, ErrReplication)
	assert.Contains(t, err.Error(), "shares no epoch with the leader's")
	require.ErrorIs(t, <-f.doneOnce(), ErrReplication)
}

// After the leader's unclean restart its seqs jump (leases skipped); the
// follower copies the jump, starting a new segment, and its directory still
// opens as a Queue with the leader's seqs.
func TestFollowerCopiesTheLeadersSeqGap(t *testing.T) {
	fs := vfs.NewMem()
	opts := Options{Replication: ReplicateSync, fs: fs, leaseChunk: 5, SegmentSize: 64 << 10, MaxMessageSize: 4096}
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	var before []uint64
	for i := range 3 {
		res, err := q.Send(context.Background(), &Message{ID: fmt.Sprint("before-", i)})
		require.NoError(t, err)
		before = append(before, res.Seq)
	}
	fs.SetOpLimit(fs.OpCount()) // the machine stops here
	_ = q.Close()
	fs.Crash(vfs.CrashModes[0], rand.New(rand.NewPCG(1, 2)))
	q, err = Open("/q", &opts)
	require.NoError(t, err)
	defer q.Close()

	fdir := t.TempDir()
	a, b := net.Pipe()
	f := startFollower(t, fdir, b, nil)
	require.NoError(t, q.AttachReplica(a))
	var after []uint64
	for i := range 3 {
		res, err := q.Send(context.Background(), &Message{ID: fmt.Sprint("after-", i)})
		require.NoError(t, err)
		require.Equal(t, SendOK, res.Status)
		after = append(after, res.Seq)
	}
	require.Greater(t, after[0], before[2]+2, "the restart skipped leased seqs")
	require.ErrorIs(t, f.stop(), context.Canceled)

	promoted, err := Open(fdir, nil)
	require.NoError(t, err)
	defer promoted.Close()
	var seqs []uint64
	for _, s := range readBack(t, promoted) {
		seqs = append(seqs, s.Seq)
	}
	assert.Equal(t, append(before, after...), seqs)
	res, err := promoted.Send(context.Background(), &Message{Body: []byte("promoted")})
	require.NoError(t, err)
	assert.Greater(t, res.Seq, after[2], "the promoted follower continues above the copied seqs")
}

// One follower at a time; the second is refused and told why.
func TestSecondFollowerIsRefused(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateAsync})
	a, b := net.Pipe()
	startFollower(t, t.TempDir(), b, nil)
	require.NoError(t, q.AttachReplica(a))
	a2, b2 := net.Pipe()
	f2 := startFollower(t, t.TempDir(), b2, nil)
	err := q.AttachReplica(a2)
	require.ErrorIs(t, err, ErrReplication)
	assert.Contains(t, err.Error(), "already attached")
	ferr := <-f2.doneOnce()
	require.ErrorIs(t, ferr, ErrReplication)
	assert.Contains(t, ferr.Error(), "already attached")
	assert.True(t, q.Stats().ReplicaAttached)
}

// After a restart under ReplicateSync the leader cannot know what its
// follower holds: consumers see nothing until a follower attaches and says,
// then what it holds.
func TestReplicateSyncRestartCommitsOnlyWhatAFollowerHolds(t *testing.T) {
	dir, fdir := t.TempDir(), t.TempDir()
	opts := Options{Replication: ReplicateSync, ReplicaTimeout: 200 * time.Millisecond}
	q, err := Open(dir, &opts)
	require.NoError(t, err)
	_, err = q.Consumer("g", nil)
	require.NoError(t, err)
	a, b := net.Pipe()
	f := startFollower(t, fdir, b, nil)
	require.NoError(t, q.AttachReplica(a))
	held := sendIDs(t, q, "held", 5, SendOK)
	require.ErrorIs(t, f.stop(), context.Canceled)
	require.Eventually(t, func() bool { return !q.Stats().ReplicaAttached }, 5*time.Second, time.Millisecond)
	alone := sendIDs(t, q, "alone", 3, ReplicaNotAvailable)
	require.NoError(t, q.Close())

	q, err = Open(dir, &opts)
	require.NoError(t, err)
	defer q.Close()
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = c.Receive(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "no follower yet: nothing is committed")
	assert.Zero(t, q.Stats().CommittedSeq)

	a, b = net.Pipe()
	startFollower(t, fdir, b, nil)
	require.NoError(t, q.AttachReplica(a))
	var got []string
	for range len(held) + len(alone) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d, err := c.Receive(ctx)
		cancel()
		require.NoError(t, err)
		require.LessOrEqual(t, d.Seq, q.Stats().ReplicaAckedSeq, "a consumer sees only what the follower holds")
		got = append(got, d.Message.ID)
		require.NoError(t, d.Ack())
	}
	assert.ElementsMatch(t, append(held, alone...), got)
}

// sendAndAckAll sends n messages of 1000 bytes and has c receive and ack
// every one: the group is then done with all of them.
func sendAndAckAll(t *testing.T, q *Queue, c *Consumer, n int) {
	t.Helper()
	for i := range n {
		_, err := q.Send(context.Background(), &Message{Body: bytes.Repeat([]byte{byte(i)}, 1000)})
		require.NoError(t, err)
	}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d, err := c.Receive(ctx)
		cancel()
		require.NoError(t, err)
		require.NoError(t, d.Ack())
	}
}

// Retention on the leader reaches the follower: it deletes the same
// segments (never the one with its latest checkpoint), and its directory
// still opens as a queue with the group's state.
func TestFollowerDeletesWhatTheLeaderDeleted(t *testing.T) {
	opts := Options{Replication: ReplicateSync, SegmentSize: 64 << 10, MaxMessageSize: 4096}
	q := openLeader(t, opts)
	fdir := t.TempDir()
	a, b := net.Pipe()
	f := startFollower(t, fdir, b, &FollowOptions{SegmentSize: 64 << 10})
	require.NoError(t, q.AttachReplica(a))
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	segments := func(dir string) int {
		m, err := filepath.Glob(filepath.Join(dir, "*.wal"))
		require.NoError(t, err)
		return len(m)
	}
	sendAndAckAll(t, q, c, 400)
	waitAcked(t, q, q.Stats().LastSeq)
	before := segments(fdir) // the marker goroutine may have run retention already
	require.NoError(t, q.retain())
	require.Less(t, q.log.Stats().Segments, 3, "the leader deleted what the group is done with")
	// The follower deletes on its next ack: give it one.
	_, err = q.Send(context.Background(), &Message{Body: []byte("after")})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return segments(fdir) < 3 }, 5*time.Second, 10*time.Millisecond,
		"the follower deleted the same segments (%d before)", before)
	require.ErrorIs(t, f.stop(), context.Canceled)

	p, err := Open(fdir, &Options{Replication: ReplicateAsync, SegmentSize: 64 << 10, MaxMessageSize: 4096})
	require.NoError(t, err)
	defer p.Close()
	pc, err := p.Consumer("g", nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := pc.Receive(ctx)
	require.NoError(t, err)
	assert.Equal(t, "after", string(d.Message.Body), "the group's acks survived the follower's trim")
}

// Under ReplicateAsync groups can ack past the follower; retention keeps the
// segments the attached follower has not acknowledged, so it never has to
// jump over deleted ones, and deletes them once it has.
func TestRetentionWaitsForTheAttachedFollower(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateAsync, SegmentSize: 64 << 10, MaxMessageSize: 4096})
	a, b := net.Pipe()
	f := startFakeFollower(t, b, 4096+record.MaxMoveOverhead) // acks only when told
	require.NoError(t, q.AttachReplica(a))
	var received atomic.Uint64 // the last seq the fake follower was sent
	go func() {
		for m := range f.frames {
			received.Store(max(received.Load(), m.LastSeq))
		}
	}()
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	sendAndAckAll(t, q, c, 400)
	segs := q.log.Stats().Segments
	require.Greater(t, segs, 4)
	require.NoError(t, q.retain())
	assert.Equal(t, segs, q.log.Stats().Segments, "nothing the follower lacks is deleted")

	last := q.Stats().LastSeq
	require.Eventually(t, func() bool { return received.Load() >= last }, 5*time.Second, time.Millisecond)
	require.NoError(t, f.ack(received.Load()))
	waitAcked(t, q, last)
	require.NoError(t, q.retain())
	assert.Less(t, q.log.Stats().Segments, 3, "deleted once the follower has them")
}
