package zeroloss

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// A follower that catches up across segments its leader's retention deleted
// (issue 15, path 1) must, promoted after any prefix of its catch-up, open
// and deliver every message it holds a copy of (in the main stream, a retry
// or a dead letter) that the leader never acked. The leader here declares a
// group, moves messages to the retry stream and the dead letters while the
// follower is away, and deletes those segments; the catch-up it sends the
// follower is recorded once, then given to a copy of the follower's
// directory cut after every frame in turn, and each copy is promoted.
// Redeliveries of messages the leader acked are allowed (at least once) and
// counted.
func TestFollowerPromotedDuringCatchUpAcrossDeletedSegments(t *testing.T) {
	const segment = 16 << 10
	clock := newFakeClock()
	fsys := vfs.NewMem() // the leader's directory and every copy of the follower's
	q, err := Open("/q", &Options{Replication: ReplicateAsync, SegmentSize: segment, MaxMessageSize: 4096,
		fs: fsys, now: clock.Now})
	require.NoError(t, err)
	defer q.Close()
	copts := &ConsumerOptions{AckTimeout: time.Hour, MaxDeliveries: 4, Backoff: []time.Duration{time.Second}}
	acked := map[string]map[string]bool{"g": {}, "h": {}, "k": {}} // by group: IDs the leader acked
	ctx := context.Background()
	send := func(prefix string, n int) {
		for i := range n {
			id := fmt.Sprintf("%s-%03d", prefix, i)
			res, err := q.Send(ctx, &Message{ID: id, Body: bytes.Repeat([]byte{'x'}, 300)})
			require.NoError(t, err)
			require.Equal(t, SendOK, res.Status)
		}
	}
	// handle receives messages of group name until it has seen every ID in
	// want, nacking those in nack (with the delay given) and acking the rest.
	handle := func(c *Consumer, name string, nack map[string]time.Duration, want ...string) {
		t.Helper()
		left := map[string]bool{}
		for _, id := range want {
			left[id] = true
		}
		for len(left) > 0 {
			d := receive(t, c)
			delete(left, d.Message.ID)
			if delay, ok := nack[d.Message.ID]; ok {
				require.NoError(t, d.Nack(delay))
				continue
			}
			require.NoError(t, d.Ack())
			acked[name][d.Message.ID] = true
		}
	}
	ids := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s-%03d", prefix, i))
		}
		return out
	}

	// The follower holds the first part of the log: a-003 and a-013 in the
	// retry stream, a-023 delivered once and nacked.
	preGap := "/pregap"
	g, err := q.Consumer("g", copts)
	require.NoError(t, err)
	send("a", 30)
	handle(g, "g", map[string]time.Duration{"a-003": time.Second, "a-013": time.Second, "a-023": time.Hour}, ids("a", 30)...)
	clock.Advance(2 * time.Second)
	handle(g, "g", map[string]time.Duration{"a-003": 90 * time.Minute, "a-013": 90 * time.Minute}, "a-003", "a-013")
	require.NoError(t, q.flushMarks(ctx))
	a, b := net.Pipe()
	f := startFollower(t, preGap, b, &FollowOptions{SegmentSize: segment, fs: fsys})
	require.NoError(t, q.AttachReplica(a))
	waitFollowerAcked(t, q, q.Stats().LastSeq, f)
	require.ErrorIs(t, f.stop(), context.Canceled)
	require.Eventually(t, func() bool { return !q.Stats().ReplicaAttached }, 10*time.Second, time.Millisecond,
		"the leader noticed the follower left (retention waits for an attached one)")

	// While it is away (in segments retention deletes): group h is
	// declared; a-003, a-013, a-023 move on in the retry stream; b-010 and
	// b-020 move to it.
	h, err := q.Consumer("h", copts)
	require.NoError(t, err)
	clock.Advance(2 * time.Hour)
	handle(g, "g", map[string]time.Duration{"a-003": 5 * time.Hour, "a-013": 5 * time.Hour, "a-023": 48 * time.Hour},
		"a-003", "a-013", "a-023")
	send("b", 80)
	handle(g, "g", map[string]time.Duration{"b-010": time.Second, "b-020": time.Second}, ids("b", 80)...)
	clock.Advance(2 * time.Second)
	handle(g, "g", map[string]time.Duration{"b-010": 3 * time.Hour, "b-020": 3 * time.Hour}, "b-010", "b-020")
	// h moves b-030 and b-040 to its retry stream, here.
	handle(h, "h", map[string]time.Duration{"b-030": time.Second, "b-040": time.Second}, append(ids("a", 30), ids("b", 80)...)...)
	clock.Advance(2 * time.Second)
	handle(h, "h", map[string]time.Duration{"b-030": 90 * time.Minute, "b-040": 90 * time.Minute}, "b-030", "b-040")
	// What retention keeps starts here: c-000 holds g back. After it, before
	// the checkpoint: group k is declared, b-010 and b-020 move on in the
	// retry stream, a-003 and a-013 to the dead letters, h retries c-005.
	send("c", 20)
	handle(g, "g", map[string]time.Duration{"c-000": 24 * time.Hour}, "c-000")
	k, err := q.Consumer("k", &ConsumerOptions{AckTimeout: time.Hour, MaxDeliveries: 4,
		Backoff: []time.Duration{time.Second}, Start: StartLatest})
	require.NoError(t, err)
	send("d", 10)
	handle(k, "k", map[string]time.Duration{"d-004": time.Second}, ids("d", 10)...)
	clock.Advance(4 * time.Hour)
	handle(g, "g", map[string]time.Duration{"b-010": time.Hour, "b-020": time.Hour}, "b-010", "b-020")
	clock.Advance(2 * time.Hour)
	handle(g, "g", map[string]time.Duration{"a-003": 0, "a-013": 0, "b-010": time.Hour, "b-020": time.Hour}, "a-003", "a-013")
	// h, declared in the deleted segments, retries b-030 (its main-stream
	// record deleted) and c-005 here, and b-040 goes to its dead letters.
	handle(h, "h", map[string]time.Duration{"c-005": time.Second, "b-030": 10 * time.Hour, "b-040": time.Hour},
		append(ids("c", 20), append(ids("d", 10), "b-030", "b-040")...)...)
	clock.Advance(2 * time.Second)
	handle(h, "h", map[string]time.Duration{"c-005": 10 * time.Hour}, "c-005")
	clock.Advance(time.Hour)
	handle(h, "h", map[string]time.Duration{"b-040": 0}, "b-040")
	require.NoError(t, q.flushMarks(ctx))
	require.NoError(t, q.retain())
	require.Greater(t, q.log.FirstSeq(), uint64(1), "retention deleted segments")
	send("e", 5)
	handle(g, "g", map[string]time.Duration{"a-023": 48 * time.Hour, "b-010": time.Hour, "b-020": time.Hour, "c-000": 24 * time.Hour},
		ids("e", 5)...)
	require.NoError(t, q.flushMarks(ctx))
	dead, err := q.DeadLetters("h")
	require.NoError(t, err)
	require.Len(t, dead, 1, "h's dead letter")
	groups := leaderGroups(q)

	for _, tc := range []struct {
		name string
		base string // the follower's directory before the catch-up
	}{
		{"prefix", preGap},
		{"empty", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			welcome, msgs := recordCatchUp(t, q, fsys, tc.base, segment)
			var frames, trims, checkpoints int
			for _, m := range msgs {
				switch m.Type {
				case repl.TypeTrim:
					trims++
				case repl.TypeCheckpoint:
					checkpoints++
				default:
					frames += len(splitFrames(t, m.Frames))
				}
			}
			require.Positive(t, checkpoints, "the leader sends its checkpoint ahead of the jump")
			t.Logf("catch-up: %d frames in %d messages, %d trims, %d checkpoint messages; the leader's log starts at seq %d",
				frames, len(msgs)-trims-checkpoints, trims, checkpoints, q.log.FirstSeq())
			duplicates := 0
			cuts := forEachCut(t, msgs, func(prefix []repl.Message) {
				duplicates += promoteAfter(t, fsys, tc.base, welcome, prefix, segment, acked, groups)
			})
			t.Logf("%d cuts; %d redeliveries of messages the leader had acked", cuts, duplicates)
			first := slices.IndexFunc(msgs, func(m repl.Message) bool { return m.Type == repl.TypeFrames })
			require.GreaterOrEqual(t, first, 0)
			crashDuringCatchUp(t, fsys, tc.base, welcome, msgs, segment, acked, groups)
			restartAfterPromotion(t, fsys, tc.base, welcome, msgs[:first+1], segment)
			catchUpFromPromoted(t, fsys, tc.base, welcome, beforeCheckpoint(t, msgs), segment, acked, groups)
		})
	}
}

// leaderGroups returns q's groups by id (the names and starts of the
// groups a copy may not name).
func leaderGroups(q *Queue) map[uint16]record.Group {
	groups := map[uint16]record.Group{}
	q.ledger.mu.Lock()
	defer q.ledger.mu.Unlock()
	for id, lg := range q.ledger.groups {
		groups[id] = record.Group{Name: lg.name, StartSeq: lg.start}
	}
	return groups
}

// beforeCheckpoint returns msgs up to the first checkpoint frame, without it.
func beforeCheckpoint(t *testing.T, msgs []repl.Message) []repl.Message {
	t.Helper()
	for i, m := range msgs {
		if m.Type != repl.TypeFrames {
			continue
		}
		for n, f := range splitFrames(t, m.Frames) {
			rec, _, err := record.Decode(f, 0)
			require.NoError(t, err)
			if rec.Type == record.TypeCheckpoint {
				if n == 0 {
					return slices.Clone(msgs[:i])
				}
				return append(slices.Clone(msgs[:i]), cutMessage(t, m, n))
			}
		}
	}
	t.Fatal("no checkpoint in the catch-up")
	return nil
}

// catchUpFromPromoted promotes a copy of base given msgs (a catch-up cut
// past the gap, before the leader's checkpoint), then has a new follower
// catch up from it, cut after every frame: the promoted queue's sender tells
// the new follower about the gap it holds, so that each of its copies opens
// and delivers what it holds as well.
func catchUpFromPromoted(t *testing.T, fsys *vfs.MemFS, base string, welcome repl.Message, msgs []repl.Message, segment int64, acked map[string]map[string]bool, groups map[uint16]record.Group) {
	t.Helper()
	dir := copyMemDir(t, fsys, base)
	replayOnCopy(t, fsys, dir, welcome, msgs, segment)
	clock := newFakeClock()
	clock.Advance(30 * 24 * time.Hour)
	p, err := Open(dir, &Options{Replication: ReplicateAsync, SegmentSize: segment, MaxMessageSize: 4096, fs: fsys, now: clock.Now})
	require.NoError(t, err)
	defer p.Close()
	require.NotEmpty(t, p.log.Gaps(), "the promoted copy holds a gap")
	welcome2, msgs2 := recordCatchUp(t, p, fsys, "", segment)
	require.True(t, slices.ContainsFunc(msgs2, func(m repl.Message) bool { return m.Type == repl.TypeTrim }),
		"the sender tells the new follower about the gap")
	cuts := forEachCut(t, msgs2, func(prefix []repl.Message) {
		promoteAfter(t, fsys, "", welcome2, prefix, segment, acked, groups)
	})
	t.Logf("a new follower of the promoted copy: %d cuts", cuts)
}

// restartAfterPromotion promotes a copy cut after the first frame of its
// catch-up (past the gap, before any checkpoint), has
// group g receive one message and not ack it, and restarts the promoted
// queue: the delivery counts (the promoted queue wrote a checkpoint when it
// opened, so its own ack records are applied in full, not as records after a
// gap).
func restartAfterPromotion(t *testing.T, fsys *vfs.MemFS, base string, welcome repl.Message, msgs []repl.Message, segment int64) {
	t.Helper()
	require.NotEmpty(t, msgs)
	last := msgs[len(msgs)-1]
	if last.Type == repl.TypeFrames {
		msgs = append(slices.Clone(msgs[:len(msgs)-1]), cutMessage(t, last, 1))
	}
	dir := copyMemDir(t, fsys, base)
	replayOnCopy(t, fsys, dir, welcome, msgs, segment)
	clock := newFakeClock()
	clock.Advance(30 * 24 * time.Hour)
	opts := &Options{SegmentSize: segment, MaxMessageSize: 4096, fs: fsys, now: clock.Now}
	p, err := Open(dir, opts)
	require.NoError(t, err)
	if !slices.Contains(p.Groups(), "g") {
		require.NoError(t, p.Close())
		return // a new follower's copy knows no group yet
	}
	assert.Equal(t, uint64(1), p.Stats().Checkpoints, "the promoted copy writes a checkpoint when it opens")
	c, err := p.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour})
	require.NoError(t, err)
	d := receive(t, c)
	require.NoError(t, p.Close())
	p, err = Open(dir, opts)
	require.NoError(t, err)
	defer p.Close()
	c, err = p.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour})
	require.NoError(t, err)
	for {
		again := receive(t, c)
		if again.Message.ID == d.Message.ID {
			assert.Equal(t, d.Attempt+1, again.Attempt, "the delivery before the restart counts")
			return
		}
	}
}

// recordCatchUp runs a real follower on a copy of base (empty if "") against
// q until it has caught up, and returns the leader's welcome and the
// messages it sent after it.
func recordCatchUp(t *testing.T, q *Queue, fsys *vfs.MemFS, base string, segment int64) (repl.Message, []repl.Message) {
	t.Helper()
	require.Eventually(t, func() bool { return !q.Stats().ReplicaAttached }, 10*time.Second, time.Millisecond,
		"the last follower detached")
	dir := copyMemDir(t, fsys, base)
	a, b := net.Pipe()
	rec := &recordingLink{ReadWriteCloser: b}
	last := q.Stats().LastSeq
	caughtUp := make(chan struct{})
	var once sync.Once
	f := startFollower(t, dir, rec, &FollowOptions{SegmentSize: segment, fs: fsys, OnAck: func(seq uint64) {
		if seq >= last {
			once.Do(func() { close(caughtUp) })
		}
	}})
	require.NoError(t, q.AttachReplica(a))
	select {
	case <-caughtUp:
	case err := <-f.done:
		f.done <- err
		t.Fatalf("the follower stopped before catching up: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("the follower did not catch up to seq %d", last)
	}
	require.ErrorIs(t, f.stop(), context.Canceled)
	br := bufio.NewReader(bytes.NewReader(rec.bytes()))
	welcome := readAuthAndWelcome(t, br)
	var msgs []repl.Message
	for {
		m, err := repl.ReadMessage(br, repl.MaxBody(int(segment)))
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return welcome, msgs // the last may have been cut short by the stop
		}
		require.NoError(t, err)
		m.Frames = slices.Clone(m.Frames)
		msgs = append(msgs, m)
	}
}

// recordingLink keeps what the follower reads.
type recordingLink struct {
	io.ReadWriteCloser
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *recordingLink) Read(p []byte) (int, error) {
	n, err := l.ReadWriteCloser.Read(p)
	l.mu.Lock()
	l.buf.Write(p[:n])
	l.mu.Unlock()
	return n, err
}

func (l *recordingLink) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.buf.Bytes())
}

// discardLink takes the follower's acks.
type discardLink struct{}

func (discardLink) Read([]byte) (int, error)    { return 0, io.EOF }
func (discardLink) Write(p []byte) (int, error) { return len(p), nil }
func (discardLink) Close() error                { return nil }

func splitFrames(t *testing.T, frames []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for off := 0; off < len(frames); {
		n, err := record.FrameSize(frames[off:], 0)
		require.NoError(t, err)
		out = append(out, frames[off:off+n])
		off += n
	}
	return out
}

// cutMessage returns m with only its first n frames (a Trim as it is).
func cutMessage(t *testing.T, m repl.Message, n int) repl.Message {
	t.Helper()
	if m.Type != repl.TypeFrames {
		return m
	}
	parts := splitFrames(t, m.Frames)
	cut := m
	cut.Frames = bytes.Join(parts[:n], nil)
	rec, _, err := record.Decode(parts[n-1], 0)
	require.NoError(t, err)
	cut.LastSeq = rec.Seq
	return cut
}

var copies int

// copyMemDir copies src (nothing if "") to a new directory of fsys.
func copyMemDir(t *testing.T, fsys *vfs.MemFS, src string) string {
	t.Helper()
	copies++
	dst := fmt.Sprintf("/copy-%d", copies)
	require.NoError(t, fsys.MkdirAll(dst, 0o700))
	if src == "" {
		return dst
	}
	names, err := fsys.List(src)
	require.NoError(t, err)
	for _, name := range names {
		if name == "LOCK" {
			continue
		}
		b, err := fsys.ReadFile(filepath.Join(src, name))
		require.NoError(t, err)
		require.NoError(t, fsys.WriteFile(filepath.Join(dst, name), b))
	}
	return dst
}

// promoteAfter gives a copy of base the leader's welcome and msgs, as the
// follower's session does when the link fails right after them, promotes
// the copy and checks that every message it holds that the leader never
// acked is delivered or a dead letter, for every group the copy knows. It
// returns how many messages the leader had acked were delivered again.
func promoteAfter(t *testing.T, fsys *vfs.MemFS, base string, welcome repl.Message, msgs []repl.Message, segment int64, acked map[string]map[string]bool, groups map[uint16]record.Group) int {
	t.Helper()
	dir := copyMemDir(t, fsys, base)
	replayOnCopy(t, fsys, dir, welcome, msgs, segment)
	at := ""
	if n := len(msgs); n > 0 {
		at = fmt.Sprintf("after %d messages, the last up to seq %d", n, msgs[n-1].LastSeq)
	}
	return checkPromoted(t, fsys, dir, at, segment, acked, groups)
}

// checkPromoted promotes dir and checks that every message it holds that
// the leader never acked is delivered or a dead letter, for every group
// the copy knows. It returns how many messages the leader had acked were
// delivered again.
func checkPromoted(t *testing.T, fsys *vfs.MemFS, dir, at string, segment int64, acked map[string]map[string]bool, groups map[uint16]record.Group) int {
	t.Helper()
	held := heldMessages(t, fsys, dir, groups)
	clock := newFakeClock()
	clock.Advance(30 * 24 * time.Hour) // every retry is due
	p, err := Open(dir, &Options{SegmentSize: segment, MaxMessageSize: 4096, fs: fsys, now: clock.Now})
	require.NoError(t, err, "the promoted copy opens (%s)", at)
	defer p.Close()
	duplicates := 0
	names := p.Groups()
	for name := range held {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	for _, name := range names {
		must := map[string]bool{}
		for id := range held[name] {
			if !acked[name][id] {
				must[id] = true
			}
		}
		if len(must) > 0 && !slices.Contains(p.Groups(), name) {
			t.Fatalf("the copy promoted %s does not know group %s, whose messages %v it holds", at, name, slices.Sorted(maps.Keys(must)))
		}
		if !slices.Contains(p.Groups(), name) {
			continue
		}
		dead, err := p.DeadLetters(name)
		require.NoError(t, err)
		for _, d := range dead {
			delete(must, d.Message.ID)
		}
		c, err := p.Consumer(name, &ConsumerOptions{AckTimeout: time.Hour})
		require.NoError(t, err)
		for len(must) > 0 {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			d, err := c.Receive(rctx)
			cancel()
			if err != nil {
				missing := slices.Sorted(func(yield func(string) bool) {
					for id := range must {
						if !yield(id) {
							return
						}
					}
				})
				t.Fatalf("group %s of the copy promoted %s does not deliver %v: %v", name, at, missing, err)
			}
			if acked[name][d.Message.ID] {
				duplicates++
			}
			delete(must, d.Message.ID)
			require.NoError(t, d.Ack())
		}
	}
	return duplicates
}

// heldMessages reads dir's log as stored and returns, by group name, the
// IDs of the messages it holds a copy of for that group: every main-stream
// message from the group's start on, and the messages in the group's retry and dead-letter records and
// in its checkpointed retries and dead letters. A group the copy cannot
// name (its declaration is in records the copy jumped over) is named by
// groups, the leader's groups by id (ids are not reused here).
func heldMessages(t *testing.T, fsys vfs.FS, dir string, groups map[uint16]record.Group) map[string]map[string]bool {
	t.Helper()
	res, err := wal.Scan(fsys, dir)
	require.NoError(t, err)
	type message struct {
		seq uint64
		id  string
	}
	var main []message
	names := map[uint16]string{}
	starts := map[uint16]uint64{}
	copies := map[uint16][]string{}
	var parts record.CheckpointJoiner
	for _, seg := range res.Segments {
		require.NoError(t, wal.ReadFrames(fsys, dir, seg, func(_ int64, rec *record.Record) error {
			switch rec.Type {
			case record.TypeMessage:
				if rec.Stream == 0 {
					m, err := record.DecodeMessage(rec.Payload)
					require.NoError(t, err)
					main = append(main, message{rec.Seq, m.ID})
				}
			case record.TypeGroup:
				gr, err := record.DecodeGroup(rec.Payload)
				require.NoError(t, err)
				names[rec.Stream], starts[rec.Stream] = gr.Name, gr.StartSeq
			case record.TypeRetry:
				r, err := record.DecodeRetry(rec.Payload)
				require.NoError(t, err)
				copies[rec.Stream] = append(copies[rec.Stream], r.Message.ID)
			case record.TypeDeadLetter:
				d, err := record.DecodeDeadLetter(rec.Payload)
				require.NoError(t, err)
				copies[rec.Stream] = append(copies[rec.Stream], d.Message.ID)
			case record.TypeCheckpoint:
				payload, _, whole, err := parts.Add(rec.Seq, rec.Payload)
				require.NoError(t, err)
				if !whole {
					break
				}
				c, err := record.DecodeCheckpoint(payload)
				require.NoError(t, err)
				for _, gs := range c.Groups {
					names[gs.ID], starts[gs.ID] = gs.Name, gs.Start
					for _, r := range gs.Retries {
						copies[gs.ID] = append(copies[gs.ID], r.Retry.Message.ID)
					}
					for _, d := range gs.Dead {
						copies[gs.ID] = append(copies[gs.ID], d.DeadLetter.Message.ID)
					}
				}
			}
			return nil
		}))
	}
	for id, g := range groups {
		if _, ok := names[id]; !ok {
			names[id], starts[id] = g.Name, g.StartSeq
		}
	}
	out := map[string]map[string]bool{}
	for id, name := range names {
		set := map[string]bool{}
		for _, m := range main {
			if m.seq >= starts[id] {
				set[m.id] = true
			}
		}
		for _, m := range copies[id] {
			set[m] = true
		}
		out[name] = set
	}
	return out
}

// A Trim lets the follower delete its segments only below what a durable
// checkpoint it holds has every group done with: a Trim may now come before
// the leader's checkpoint reaches the follower, and deleting what the
// follower's own checkpoint still owes would lose those messages if it were
// promoted then.
func TestFollowerTrimKeepsWhatItsCheckpointOwes(t *testing.T) {
	const segment = 8 << 10
	for _, tc := range []struct {
		name      string
		floor     uint64 // the checkpoint's group floor
		wantFirst uint64 // the first message delivered after promotion
	}{
		{"checkpoint owes older messages", 5, 5},
		{"checkpoint done with the trimmed ones", 21, 21},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := vfs.NewMem()
			var frames []byte
			for seq := uint64(1); seq <= 20; seq++ {
				m := record.Message{ID: fmt.Sprint("id-", seq), Body: bytes.Repeat([]byte{'x'}, 1000)}
				f := record.AppendMessageFrame(nil, 0, 0, 1, &m)
				record.SetSeq(f, seq)
				frames = append(frames, f...)
			}
			cp := record.AppendCheckpoint(nil, &record.Checkpoint{Groups: []record.GroupState{
				{ID: 1, Name: "g", Floor: tc.floor, Mark: tc.floor}}})
			ckpt := record.AppendFrame(nil, record.TypeCheckpoint, internalStream, 1, cp)
			record.SetSeq(ckpt, 21)
			frames = append(frames, ckpt...)

			fl, err := openFollower("/f", &FollowOptions{SegmentSize: segment, fs: fsys})
			require.NoError(t, err)
			term := repl.Epoch{Num: 1, ID: 1, Start: 1}
			fw := &follower{followerLog: fl, ctx: context.Background(), link: discardLink{},
				hs: &handshake{auth: repl.Auth{Version: repl.Version, Queue: [16]byte{1}, Epoch: term}}}
			require.NoError(t, fw.welcome(&repl.Welcome{Version: repl.Version, From: 1, Epochs: []repl.Epoch{term}}))
			for _, m := range []repl.Message{
				{Type: repl.TypeFrames, Frames: frames, LastSeq: 21},
				{Type: repl.TypeTrim, Seq: 21}, // the leader deleted everything below its checkpoint
			} {
				require.NoError(t, fw.apply(readResult{m: m}))
				require.NoError(t, fw.ack())
			}
			first := fl.log.FirstSeq()
			require.NoError(t, fl.close())
			if tc.floor > 20 {
				assert.Greater(t, first, uint64(1), "segments the checkpoint is done with are deleted")
			}

			p, err := Open("/f", &Options{SegmentSize: segment, MaxMessageSize: 4000, fs: fsys})
			require.NoError(t, err)
			defer p.Close()
			c, err := p.Consumer("g", nil)
			require.NoError(t, err)
			if tc.floor > 20 {
				nothing(t, c)
				return
			}
			for seq := tc.wantFirst; seq <= 20; seq++ {
				d := receive(t, c)
				require.Equal(t, seq, d.Seq, "every message the checkpoint owes is kept")
				require.NoError(t, d.Ack())
			}
		})
	}
}

// gateLink is the follower's end of a link whose reads can be held back: the
// leader's sender then blocks on its writes and falls behind. It records what
// the follower reads.
type gateLink struct {
	recordingLink
	mu   sync.Mutex
	gate chan struct{} // closed while reads may go on
}

func newGateLink(inner io.ReadWriteCloser) *gateLink {
	l := &gateLink{recordingLink: recordingLink{ReadWriteCloser: inner}, gate: make(chan struct{})}
	close(l.gate)
	return l
}

func (l *gateLink) hold() {
	l.mu.Lock()
	l.gate = make(chan struct{})
	l.mu.Unlock()
}

func (l *gateLink) release() {
	l.mu.Lock()
	close(l.gate)
	l.mu.Unlock()
}

// Read waits while held, before and after reading (what a read in
// progress gets is held back too).
func (l *gateLink) Read(p []byte) (int, error) {
	l.wait()
	n, err := l.ReadWriteCloser.Read(p)
	l.wait()
	l.recordingLink.mu.Lock()
	l.buf.Write(p[:n])
	l.recordingLink.mu.Unlock()
	return n, err
}

func (l *gateLink) wait() {
	l.mu.Lock()
	gate := l.gate
	l.mu.Unlock()
	<-gate
}

// sentSeq returns the last seq q's sender handed to the attached follower's
// link, 0 if none is attached.
func sentSeq(q *Queue) uint64 {
	q.repl.mu.Lock()
	defer q.repl.mu.Unlock()
	if q.repl.cur == nil {
		return 0
	}
	return q.repl.cur.sent.Load()
}

// A follower attached but behind when RetentionBytes forces the deletion of
// segments it has not received jumps over them in the middle of its session:
// the sender sends what it had read, a Trim, then the frames after the jump,
// and every prefix of the session leaves a copy that opens and delivers what
// it holds.
func TestFollowerBehindForcedRetentionJumpsOverTheGap(t *testing.T) {
	const segment = 16 << 10
	clock := newFakeClock()
	fsys := vfs.NewMem()
	q, err := Open("/q", &Options{Replication: ReplicateAsync, SegmentSize: segment, MaxMessageSize: 4096,
		RetentionBytes: 3 * segment, fs: fsys, now: clock.Now})
	require.NoError(t, err)
	defer q.Close()
	ctx := context.Background()
	acked := map[string]map[string]bool{"g": {}}
	g, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Hour, MaxDeliveries: 4, Backoff: []time.Duration{time.Second}})
	require.NoError(t, err)
	// send sends n messages and has g receive them, acking all but those
	// in retry, which it nacks twice: they move to the retry stream.
	send := func(prefix string, n int, retry ...string) {
		t.Helper()
		for i := range n {
			id := fmt.Sprintf("%s-%03d", prefix, i)
			res, err := q.Send(ctx, &Message{ID: id, Body: bytes.Repeat([]byte{'x'}, 300)})
			require.NoError(t, err)
			require.Equal(t, SendOK, res.Status)
		}
		for range n {
			d := receive(t, g)
			if slices.Contains(retry, d.Message.ID) {
				require.NoError(t, d.Nack(time.Second))
				continue
			}
			require.NoError(t, d.Ack())
			acked["g"][d.Message.ID] = true
		}
		clock.Advance(2 * time.Second)
		for range retry {
			require.NoError(t, receive(t, g).Nack(time.Hour))
		}
	}

	a, b := net.Pipe()
	link := newGateLink(b)
	f := startFollower(t, "/f", link, &FollowOptions{SegmentSize: segment, fs: fsys})
	require.NoError(t, q.AttachReplica(a))
	send("a", 20, "a-003")
	waitFollowerAcked(t, q, q.Stats().LastSeq, f)
	// The follower stops reading: the read it has in progress takes the
	// next message, the sender blocks writing the one after.
	link.hold()
	for i := range 2 {
		_, err := q.Send(ctx, &Message{ID: fmt.Sprint("x-", i), Body: []byte("x")})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return sentSeq(q) == q.Stats().LastSeq }, 10*time.Second, time.Millisecond)
	}
	behind := q.Stats().LastSeq
	// While the sender is stuck: group h is declared and acks, x-0, which
	// the follower holds, moves to the retry stream; then retention deletes
	// what the sender has not read.
	for range 2 {
		d := receive(t, g)
		if d.Message.ID == "x-0" {
			require.NoError(t, d.Nack(time.Second))
			continue
		}
		require.NoError(t, d.Ack())
		acked["g"][d.Message.ID] = true
	}
	send("b", 60) // past the segment the sender has open (it reads that one to its end)
	h, err := q.Consumer("h", &ConsumerOptions{AckTimeout: time.Hour, Start: StartLatest})
	require.NoError(t, err)
	acked["h"] = map[string]bool{}
	d := receive(t, g)
	require.Equal(t, "x-0", d.Message.ID)
	require.NoError(t, d.Nack(time.Hour))
	send("c", 150, "c-010", "c-100")
	for range 150 {
		d := receive(t, h)
		require.NoError(t, d.Ack())
		acked["h"][d.Message.ID] = true
	}
	require.NoError(t, q.flushMarks(ctx))
	require.NoError(t, q.retain())
	require.Greater(t, q.log.FirstSeq(), behind+10, "forced retention deleted segments the sender has not read")
	link.release()
	waitFollowerAcked(t, q, q.Stats().LastSeq, f)
	require.ErrorIs(t, f.stop(), context.Canceled)

	res, err := wal.Scan(fsys, "/f")
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(res.Segments, func(s wal.SegmentInfo) bool { return s.Gap }),
		"the follower's copy marks the gap")
	br := bufio.NewReader(bytes.NewReader(link.bytes()))
	welcome := readAuthAndWelcome(t, br)
	var msgs []repl.Message
	var last uint64
	jumped := false
	for {
		m, err := repl.ReadMessage(br, repl.MaxBody(segment))
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		require.NoError(t, err)
		m.Frames = slices.Clone(m.Frames)
		if m.Type == repl.TypeFrames {
			for n, f := range splitFrames(t, m.Frames) {
				rec, _, err := record.Decode(f, 0)
				require.NoError(t, err)
				if last > 0 && rec.Seq > last+1 {
					require.Zero(t, n, "the frames after a jump start a message")
					require.Equal(t, repl.TypeTrim, msgs[len(msgs)-1].Type, "a Trim comes before the frames after a jump")
					jumped = true
				}
				last = rec.Seq
			}
		}
		msgs = append(msgs, m)
	}
	require.True(t, jumped, "the session jumped over deleted records")
	require.True(t, slices.ContainsFunc(msgs, func(m repl.Message) bool { return m.Type == repl.TypeCheckpoint }),
		"the leader sends its checkpoint ahead of the jump")
	groups := leaderGroups(q)
	cuts := forEachCut(t, msgs, func(prefix []repl.Message) {
		promoteAfter(t, fsys, "", welcome, prefix, segment, acked, groups)
	})
	t.Logf("%d messages in the session, %d cuts; the leader's log starts at seq %d", len(msgs), cuts, q.log.FirstSeq())
}

// readAuthAndWelcome reads the start of what a leader sent a follower: its
// Auth, then its Welcome, returned with the Auth's fields in Auth (replaying
// the welcome needs the handshake it answered).
func readAuthAndWelcome(t *testing.T, br *bufio.Reader) repl.Message {
	t.Helper()
	auth, err := repl.ReadMessage(br, repl.ControlBody)
	require.NoError(t, err)
	require.Equal(t, repl.TypeAuth, auth.Type)
	welcome, err := repl.ReadMessage(br, repl.ControlBody)
	require.NoError(t, err)
	require.Equal(t, repl.TypeWelcome, welcome.Type)
	welcome.Auth = auth.Auth
	return welcome
}

// replayOnCopy has a follower on dir (in fsys) take welcome and then msgs,
// acking after each as its session would, and closes it: what the copy
// holds when the link fails right after them.
func replayOnCopy(t *testing.T, fsys *vfs.MemFS, dir string, welcome repl.Message, msgs []repl.Message, segment int64) {
	t.Helper()
	fl, err := openFollower(dir, &FollowOptions{SegmentSize: segment, fs: fsys})
	require.NoError(t, err)
	fw := &follower{followerLog: fl, ctx: context.Background(), link: discardLink{}, hs: &handshake{auth: welcome.Auth}}
	fw.last = fl.log.LastSeq()
	fw.acked = fw.last
	require.NoError(t, fw.welcome(&welcome.Welcome))
	for _, m := range msgs {
		require.NoError(t, fw.apply(readResult{m: m}))
		require.NoError(t, fw.ack())
	}
	require.NoError(t, fl.close())
}

// forEachCut calls f with every prefix of msgs a link failure can leave:
// each message whole, and a Frames message cut after each of its frames.
// It returns how many prefixes there were.
func forEachCut(t *testing.T, msgs []repl.Message, f func(prefix []repl.Message)) int {
	t.Helper()
	cuts := 0
	for i := range msgs {
		steps := []int{0}
		if msgs[i].Type == repl.TypeFrames {
			steps = nil
			for n := range splitFrames(t, msgs[i].Frames) {
				steps = append(steps, n+1)
			}
		}
		for _, n := range steps {
			f(append(slices.Clone(msgs[:i]), cutMessage(t, msgs[i], n)))
			cuts++
		}
	}
	return cuts
}
