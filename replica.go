package zeroloss

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss/internal/hook"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// Replication (first step; see ARCHITECTURE.md, "Replication").
//
// Leader: AttachReplica does the handshake, then two goroutines serve the
// follower: the sender reads the leader's log with a wal.Reader from the
// follower's position (synced frames only) and writes them as Frames
// messages, then waits for the leader's synced seq to move; the ack reader
// reads the follower's acks and raises q.repl.acked. Under ReplicateSync a
// Send, once its batch is written (and synced under FlushSync), waits for
// acked to reach its last seq, at most ReplicaTimeout from the write of its
// batch (one timer per batch, one broadcast channel for all: never a round
// trip per message), and the committed mark that consumers read up to is
// min(leader synced, follower acked).
//
// Follower: Follow keeps a copy of the leader's log in its own directory,
// frame for frame with the same seqs (wal.Log.AppendFrames), and acks once
// per fdatasync, after the fdatasync.

// replState is the leader's replication state.
type replState struct {
	mu     sync.Mutex
	cur    *replica      // the attached follower, nil if none
	ch     chan struct{} // closed and replaced when acked moves or cur changes
	syncCh chan struct{} // closed and replaced when synced moves
	closed bool          // the queue is closing: no more followers

	acked  atomic.Uint64 // highest seq a follower acknowledged as durable
	synced atomic.Uint64 // the leader's last synced seq

	timeouts, notAvailable atomic.Uint64
}

func (s *replState) init(synced uint64) {
	s.ch = make(chan struct{})
	s.syncCh = make(chan struct{})
	s.synced.Store(synced)
}

// broadcast wakes the Sends waiting for acks. The caller holds s.mu.
func (s *replState) broadcast() {
	close(s.ch)
	s.ch = make(chan struct{})
}

// watch returns a channel closed at the next change of acked or of the
// attached follower, and whether a follower is attached.
func (s *replState) watch() (<-chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch, s.cur != nil
}

// syncedChanged returns a channel closed when the leader's synced seq next moves.
func (s *replState) syncedChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncCh
}

// setSynced publishes the log's new synced seq: to the follower's sender and,
// as the committed mark, to readers (under ReplicateSync only as far as the
// follower acknowledged). Called by the committer and the syncer.
func (q *Queue) setSynced(seq uint64) {
	if q.opts.Replication == ReplicateNone {
		q.setCommitted(seq)
		return
	}
	s := &q.repl
	s.mu.Lock()
	if seq > s.synced.Load() {
		s.synced.Store(seq)
		close(s.syncCh)
		s.syncCh = make(chan struct{})
	}
	s.mu.Unlock()
	if q.opts.Replication == ReplicateSync {
		seq = min(seq, s.acked.Load())
	}
	q.setCommitted(seq)
}

// setAcked records that the follower holds everything up to seq durably.
func (q *Queue) setAcked(seq uint64) {
	s := &q.repl
	s.mu.Lock()
	if seq > s.acked.Load() {
		s.acked.Store(seq)
		s.broadcast()
	}
	s.mu.Unlock()
	if q.opts.Replication == ReplicateSync {
		q.setCommitted(min(seq, s.synced.Load()))
	}
}

// awaitReplica waits, under ReplicateSync, until the follower acknowledged
// seq, the batch's ReplicaTimeout passed, ctx ended (WaitCanceled), or no
// follower is attached.
func (q *Queue) awaitReplica(ctx context.Context, b *batch, seq uint64) SendStatus {
	s := &q.repl
	for {
		changed, attached := s.watch()
		if s.acked.Load() >= seq {
			return SendOK
		}
		if !attached {
			s.notAvailable.Add(1)
			return ReplicaNotAvailable
		}
		select {
		case <-changed:
		case <-b.replTimedOut:
			s.timeouts.Add(1)
			return FlushReplicaTimeout
		case <-ctx.Done():
			q.stats.waitsCanceled.Add(1)
			return WaitCanceled
		}
	}
}

// replica is one attached follower, seen from the leader.
type replica struct {
	q        *Queue
	link     io.ReadWriteCloser
	br       *bufio.Reader
	maxFrame int
	from     uint64        // first seq to send
	sent     atomic.Uint64 // last seq handed to the link (stored before the write)
	stop     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

// AttachReplica attaches a follower (Follow running at the other end of
// link) and returns once the handshake is done (both ends proving they hold
// Options.ReplicaSecret, see the package repl comment); the leader then streams its
// log to the follower from the follower's position, from disk while it is
// behind, then live, until the link fails or the queue is closed. The queue
// owns link from then on and closes it, also when AttachReplica fails. One
// follower at a time; the options must enable replication. The handshake
// must complete within DefaultHandshakeTimeout or ReplicaTimeout, whichever
// is longer: a follower opening a large log takes a while to say hello.
//
// Any io.ReadWriteCloser works: net.Pipe, a Unix socket or TCP connection, a
// pair of os.Pipes.
func (q *Queue) AttachReplica(link io.ReadWriteCloser) error {
	fail := func(err error) error {
		link.Close()
		return fmt.Errorf("zeroloss: attach replica: %w", err)
	}
	if q.opts.Replication == ReplicateNone {
		return fail(fmt.Errorf("%w: Replication is ReplicateNone", ErrInvalidOptions))
	}
	br := bufio.NewReaderSize(link, 4096)
	// The whole handshake is bounded: a follower that stalls in it is
	// dropped (closing the link ends a blocked read or write).
	wait := max(q.opts.ReplicaTimeout, DefaultHandshakeTimeout)
	var timedOut atomic.Bool
	timer := time.AfterFunc(wait, func() {
		timedOut.Store(true)
		link.Close()
	})
	defer timer.Stop()
	readErr := func(doing string, err error) error {
		if timedOut.Load() {
			return fail(fmt.Errorf("%w: handshake not done within %v (%s)", ErrReplication, wait, doing))
		}
		return fail(fmt.Errorf("%w: %s: %w", ErrReplication, doing, err))
	}
	refuse := func(format string, args ...any) error {
		reason := fmt.Sprintf(format, args...)
		tellBriefly(link, reason)
		return fail(fmt.Errorf("%w: %s", ErrReplication, reason))
	}
	hello, err := repl.ReadMessage(br, repl.ControlBody)
	if err == nil {
		err = repl.Expect(&hello, repl.TypeHello)
	}
	if errors.Is(err, repl.ErrVersion) {
		return refuse("%v", err)
	}
	if err != nil {
		return readErr("reading the follower's hello", err)
	}
	nonce, err := repl.NewNonce()
	if err != nil {
		return fail(err)
	}
	auth := repl.Auth{Version: repl.Version, Queue: q.identity.Queue, Nonce: nonce, Epoch: q.epochs[len(q.epochs)-1]}
	auth.MAC = repl.LeaderMAC(q.opts.ReplicaSecret, hello.Hello.Nonce, &auth)
	if err := repl.WriteMessage(link, &repl.Message{Type: repl.TypeAuth, Auth: auth}); err != nil {
		return readErr("writing the auth", err)
	}
	pos, err := repl.ReadMessage(br, repl.ControlBody)
	if err == nil {
		err = repl.Expect(&pos, repl.TypePosition)
	}
	if err != nil {
		return readErr("reading the follower's position", err)
	}
	h := pos.Position
	switch {
	case !repl.VerifyFollower(q.opts.ReplicaSecret, hello.Hello.Nonce, &auth, &h):
		return refuse("the follower did not prove it holds the leader's secret (Options.ReplicaSecret and FollowOptions.Secret must be the same key, or both unset)")
	case int(h.MaxFrame) < q.opts.MaxMessageSize+record.MaxMoveOverhead:
		return refuse("follower accepts frames of at most %d bytes, below the leader's MaxMessageSize %d plus %d for a retry or dead-letter record",
			h.MaxFrame, q.opts.MaxMessageSize, record.MaxMoveOverhead)
	}
	common, err := repl.Common(q.epochs, q.log.LastSeq(), h.Epochs, h.LastSeq)
	if err != nil {
		return refuse("%v", err)
	}
	if !timer.Stop() {
		return readErr("checking the follower's position", io.ErrClosedPipe)
	}
	r := &replica{q: q, link: link, br: br, maxFrame: int(h.MaxFrame), from: common + 1, stop: make(chan struct{})}
	r.sent.Store(common)
	s := &q.repl
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return fail(ErrClosed)
	case s.cur != nil:
		s.mu.Unlock()
		return refuse("a follower is already attached")
	}
	s.cur = r
	s.broadcast()
	s.mu.Unlock()
	if err := repl.WriteMessage(link, &repl.Message{Type: repl.TypeWelcome,
		Welcome: repl.Welcome{Version: repl.Version, From: r.from, Epochs: q.epochs}}); err != nil {
		r.fail(fmt.Errorf("%w: writing the welcome: %w", ErrReplication, err))
		return fmt.Errorf("zeroloss: attach replica: %w: writing the welcome: %w", ErrReplication, err)
	}
	q.setAcked(common) // the follower holds it durably
	if common < h.LastSeq {
		q.logger.Warn("zeroloss: follower attached; it cuts its tail the leader does not have",
			"follower_last_seq", h.LastSeq, "from_seq", r.from)
	}
	q.logger.Info("zeroloss: follower attached", "from_seq", r.from, "max_frame", r.maxFrame)
	r.wg.Add(2)
	go r.sendLoop()
	go r.ackLoop()
	return nil
}

// tellBriefly sends reason as an Error message, waiting at most a second for
// the other side to take it.
func tellBriefly(link io.ReadWriteCloser, reason string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		repl.WriteMessage(link, &repl.Message{Type: repl.TypeError, Text: reason})
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		link.Close()
		<-done
	}
}

// fail detaches r: the link is closed, its goroutines end, and Sends
// waiting for its acks get ReplicaNotAvailable.
func (r *replica) fail(err error) {
	r.once.Do(func() {
		close(r.stop)
		r.link.Close()
		s := &r.q.repl
		s.mu.Lock()
		if s.cur == r {
			s.cur = nil
			s.broadcast()
		}
		closing := s.closed
		s.mu.Unlock()
		if !closing {
			r.q.logger.Warn("zeroloss: follower detached", "error", err, "acked", s.acked.Load())
		}
	})
}

// sendLoop streams the log to the follower: whatever is synced from r.from
// on, in messages of up to max(maxFrame, repl.BatchBytes) bytes of frames.
func (r *replica) sendLoop() {
	defer r.wg.Done()
	rd := r.q.log.NewUncappedReader(r.from)
	defer rd.Close()
	limit := max(r.maxFrame, repl.BatchBytes)
	var frames, msg []byte
	var last, carryLast uint64
	var trimmed uint64 = 1 // what the follower was told was deleted: at first, nothing
	next := r.from         // the seq after the last one read
	send := func(n int, lastSeq uint64) bool {
		r.sent.Store(lastSeq) // before the write: an ack may come back before Write returns
		msg = repl.AppendMessage(msg[:0], &repl.Message{Type: repl.TypeFrames, Frames: frames[:n]})
		if _, err := r.link.Write(msg); err != nil {
			r.fail(fmt.Errorf("writing frames: %w", err))
			return false
		}
		return true
	}
	trim := func(seq uint64) bool {
		msg = repl.AppendMessage(msg[:0], &repl.Message{Type: repl.TypeTrim, Seq: seq})
		if _, err := r.link.Write(msg); err != nil {
			r.fail(fmt.Errorf("writing a trim: %w", err))
			return false
		}
		trimmed = max(trimmed, seq)
		return true
	}
	// catchUp sends the leader's latest whole checkpoint ahead of a jump:
	// the follower keeps it and recovers from it until a checkpoint of its
	// log follows the jump (catchup.go).
	catchUp := func() bool {
		cp, err := r.q.latestCheckpoint()
		if err != nil {
			r.fail(fmt.Errorf("reading the latest checkpoint for the follower: %w", err))
			return false
		}
		for off := 0; off < len(cp); {
			n := 0
			for off+n < len(cp) {
				size, err := record.FrameSize(cp[off+n:], 0)
				if err != nil {
					r.fail(fmt.Errorf("reading the latest checkpoint for the follower: %w", err))
					return false
				}
				if n > 0 && n+size > limit {
					break
				}
				n += size
			}
			msg = repl.AppendMessage(msg[:0], &repl.Message{Type: repl.TypeCheckpoint, Frames: cp[off : off+n]})
			if _, err := r.link.Write(msg); err != nil {
				r.fail(fmt.Errorf("writing a checkpoint: %w", err))
				return false
			}
			off += n
		}
		return true
	}
	for {
		changed := r.q.repl.syncedChanged()
		for len(frames) < limit {
			rec, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				r.fail(fmt.Errorf("reading the log for the follower: %w", err))
				return
			}
			if size := rec.Size(); size > r.maxFrame {
				reason := fmt.Sprintf("frame at seq %d has %d bytes, above the follower's limit %d", rec.Seq, size, r.maxFrame)
				tellBriefly(r.link, reason)
				r.fail(errors.New(reason))
				return
			}
			if rec.Seq > next && r.q.log.Lost(next, rec.Seq) {
				// The follower jumps over records deleted here (or missing
				// from this log, a copy itself): it must know before the
				// frames after the jump, so that its copy marks the gap
				// (recovery then does not apply the consumer records after
				// it to a state that never saw the deleted ones), and it
				// gets the leader's latest checkpoint first: the consumer
				// state that names the groups declared in what it jumps.
				if len(frames) > 0 {
					if !send(len(frames), last) {
						return
					}
					frames = frames[:0]
				}
				if !catchUp() || !trim(rec.Seq) {
					return
				}
			}
			next = rec.Seq + 1
			// Decode checked the stored CRC, so re-encoding the record
			// yields the stored bytes exactly, CRC included.
			prev := len(frames)
			frames = record.Append(frames, &rec)
			if len(frames) > limit && prev > 0 {
				// Send what fits; this frame opens the next message.
				carryLast = rec.Seq
				if !send(prev, last) {
					return
				}
				frames = frames[:copy(frames, frames[prev:])]
				last = carryLast
				continue
			}
			last = rec.Seq
		}
		if len(frames) > 0 {
			if !send(len(frames), last) {
				return
			}
			frames = frames[:0]
			continue
		}
		if first := r.q.log.FirstSeq(); first > trimmed {
			// Retention deleted segments: the follower may too.
			if !trim(first) {
				return
			}
		}
		select {
		case <-changed:
		case <-r.stop:
			return
		}
	}
}

// wakeSender wakes the follower's sender, for a change other than a sync
// (retention deleted segments).
func (q *Queue) wakeSender() {
	s := &q.repl
	s.mu.Lock()
	close(s.syncCh)
	s.syncCh = make(chan struct{})
	s.mu.Unlock()
}

// ackLoop reads the follower's acks.
func (r *replica) ackLoop() {
	defer r.wg.Done()
	prev := r.from - 1
	for {
		m, err := repl.ReadMessage(r.br, repl.ControlBody)
		if err == nil {
			err = repl.Expect(&m, repl.TypeAck)
		}
		if err == nil && (m.Seq < prev || m.Seq > r.sent.Load()) {
			err = fmt.Errorf("%w: ack of seq %d after ack of %d, with seqs up to %d sent", repl.ErrOutOfOrder, m.Seq, prev, r.sent.Load())
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the follower closed the link")
			}
			r.fail(err)
			return
		}
		prev = m.Seq
		r.q.setAcked(m.Seq)
	}
}

// detachReplica stops replication for Close.
func (q *Queue) detachReplica() {
	s := &q.repl
	s.mu.Lock()
	s.closed = true
	r := s.cur
	s.mu.Unlock()
	if r != nil {
		r.fail(ErrClosed)
		r.wg.Wait()
	}
}

// replicaStats fills the replication fields of Stats.
func (q *Queue) replicaStats(st *Stats) {
	s := &q.repl
	s.mu.Lock()
	st.ReplicaAttached = s.cur != nil
	s.mu.Unlock()
	st.ReplicaAckedSeq = s.acked.Load()
	if st.LastSeq > st.ReplicaAckedSeq {
		st.ReplicaLag = st.LastSeq - st.ReplicaAckedSeq
	}
	st.ReplicaTimeouts = s.timeouts.Load()
	st.ReplicaNotAvailable = s.notAvailable.Load()
}

// FollowOptions configure Follow. The zero value, like nil, means every
// default.
type FollowOptions struct {
	// Flush is FlushSync (default): each ack follows the fdatasync of
	// everything it covers. FlushAsync acks after write(2): the follower's
	// copy then survives its process crashing but not its power failing.
	Flush FlushMode
	// SegmentSize is the size of the follower's segment files; the largest
	// frame it accepts is SegmentSize minus the 4 KiB header, and it must be
	// at least the leader's MaxMessageSize plus 95 bytes (the most a retry or
	// dead-letter record adds to a message). Default 64 MiB.
	SegmentSize int64
	// Logger receives recovery reports. Default: discard.
	Logger *slog.Logger
	// Secret is the key shared with the leader (Options.ReplicaSecret), at
	// least MinSecretSize bytes: each end proves in the handshake that it
	// holds it, and a leader that does not is refused before it can disturb
	// anything. Required by ServeFollower on plain TCP; optional elsewhere.
	Secret []byte
	// OnAck, if set, is called with the follower's durable seq: when the
	// log is opened, when a handshake cuts it back, and after each ack.
	// It runs on the follower's goroutine and must not block.
	OnAck func(seq uint64)

	fs vfs.FS // tests
}

// Follow runs a follower: it opens (or creates) the log in dir, tells the
// leader at the other end of link (Queue.AttachReplica) how far it got, and
// appends what the leader sends, frame for frame with the leader's seqs,
// acknowledging after each fdatasync (one ack per fdatasync, however many
// frames it covers). Before the first frame it cuts what it holds beyond
// the last seq its log shares with the leader's (the epoch handshake,
// epoch.go), logging how many records it cut. Before anything else it
// checks the leader's answer to its hello, and refuses (ErrReplication,
// nothing in dir changed) a leader that does not prove it holds Secret,
// that is another queue than the one dir holds a copy of (its IDENTITY
// file; an empty dir takes its first leader's queue ID), or whose epoch is
// older than the latest dir has seen. It returns when ctx ends
// (ctx's error), when the leader closes the link (an error matching io.EOF)
// or the link fails (the link's error: the follower may reconnect), on an
// I/O error of its own log, or on a protocol error or refusal (matching
// ErrReplication: a message that is malformed, oversized or out of order is
// rejected whole: nothing of it is written; a leader that cannot be
// reconciled says why). It closes link
// and the log before returning; everything it acknowledged is then durable
// in dir, which opens as a normal Queue (promotion).
func Follow(ctx context.Context, dir string, link io.ReadWriteCloser, opts *FollowOptions) (err error) {
	fl, err := openFollower(dir, opts)
	if err != nil {
		link.Close()
		return err
	}
	defer func() {
		if cerr := fl.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	return fl.serve(ctx, link, nil)
}

// followerLog is a follower's copy of the log, open across links: Follow
// serves one link on it, ServeFollower (transport.go) one after another.
type followerLog struct {
	fs       vfs.FS
	dir      string
	logger   *slog.Logger
	log      *wal.Log
	sync     bool
	maxFrame int
	onAck    func(seq uint64)
	secret   []byte

	// mu guards what a connection's handshake reads while a session may
	// be changing it (ServeFollower checks new connections concurrently).
	mu       sync.Mutex
	epochs   []repl.Epoch // the history as of the last handshake (epoch.go)
	seen     uint64       // the latest epoch number dir's history names, reached by the log or not
	identity identity     // dir's IDENTITY (claimDir); a zero Queue until the first handshake
	marked   bool         // dir is marked as a follower's copy (markFollower)
}

// openFollower opens (or creates) the follower's log in dir, reads its epoch
// history and marks dir as a follower's copy. It refuses (ErrWrongDirectory)
// a producer's spool and a directory holding files zeroloss did not create;
// a queue's directory is taken (an old leader rejoining as a follower).
func openFollower(dir string, opts *FollowOptions) (*followerLog, error) {
	var o FollowOptions
	if opts != nil {
		o = *opts
	}
	if o.Flush != FlushSync && o.Flush != FlushAsync {
		return nil, fmt.Errorf("zeroloss: follow: %w: Flush is %d", ErrInvalidOptions, int(o.Flush))
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if err := checkSecret("Secret", o.Secret); err != nil {
		return nil, fmt.Errorf("zeroloss: follow: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.fs == nil {
		o.fs = hook.FS
	}
	if o.fs == nil {
		o.fs = vfs.OS
	}
	var id identity
	claim := func() (err error) {
		id, err = claimDir(o.fs, dir, kindFollower)
		return err
	}
	log, _, err := wal.Open(dir, wal.Options{FS: o.fs, SegmentSize: o.SegmentSize, Logger: o.Logger,
		SlotInterval: defaultSlotInterval, SlotBytes: defaultSlotBytes, Recycle: DefaultRecycleSegments, Claim: claim})
	if err != nil {
		return nil, fmt.Errorf("zeroloss: follow: open %s: %w", dir, err)
	}
	fl := &followerLog{fs: o.fs, dir: dir, logger: o.Logger, log: log, sync: o.Flush == FlushSync,
		maxFrame: log.MaxFrameSize(), onAck: o.OnAck, identity: id, secret: bytes.Clone(o.Secret)}
	if fl.epochs, err = readEpochs(o.fs, dir, log.LastSeq()); err != nil {
		log.Close()
		return nil, fmt.Errorf("zeroloss: follow: %w", err)
	}
	// A leader's history is written before its frames arrive: terms the
	// log has not reached were still announced by a leader, and a leader
	// older than them is stale.
	all, err := readEpochs(o.fs, dir, math.MaxUint64)
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("zeroloss: follow: %w", err)
	}
	if n := len(all); n > 0 {
		fl.seen = all[n-1].Num
	}
	// The directory is marked as a follower's (and takes its leader's
	// queue ID) only after a leader's handshake is done (adopt): a
	// connection that fails it changes nothing in it.
	if f, err := o.fs.Open(filepath.Join(dir, followerFile)); err == nil {
		f.Close()
		fl.marked = true
	}
	fl.reportAck(log.LastSeq()) // recovery synced everything it kept
	return fl, nil
}

func (fl *followerLog) reportAck(seq uint64) {
	if fl.onAck != nil {
		fl.onAck(seq)
	}
}

// serve runs one link until it ends (see Follow) and closes it. hs is the
// first half of the handshake, done and checked (ServeFollower does it
// before the connection replaces the current one); nil: serve does it.
func (fl *followerLog) serve(ctx context.Context, link io.ReadWriteCloser, hs *handshake) error {
	defer link.Close()
	stop := context.AfterFunc(ctx, func() { link.Close() })
	defer stop()
	if hs == nil {
		var err error
		if hs, err = fl.greet(link); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
	if fl.sync {
		// What a previous link appended without its ack's fdatasync must be
		// durable before the position calls it held.
		if _, err := fl.log.Sync(); err != nil {
			return fmt.Errorf("zeroloss: follow: %w", err)
		}
	}
	f := &follower{followerLog: fl, ctx: ctx, link: link, hs: hs}
	if err := f.run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

func (fl *followerLog) close() error {
	if err := fl.log.Close(); err != nil {
		return fmt.Errorf("zeroloss: follow: close %s: %w", fl.dir, err)
	}
	return nil
}

// follower is one link's session on a followerLog.
type follower struct {
	*followerLog
	ctx   context.Context
	link  io.ReadWriteCloser
	hs    *handshake
	last  uint64 // last seq appended
	acked uint64
	trim  uint64 // the leader deleted its segments below this seq (Trim)
	// ckpt is the seq of the first part of the latest whole checkpoint
	// appended, ckptEnd that of its last part; ckpts joins the parts. done:
	// every group of that checkpoint is done with the seqs below it.
	ckpt, ckptEnd, done uint64
	ckpts               record.CheckpointJoiner
	// snap joins the parts of a checkpoint the leader sends ahead of a
	// jump (repl.TypeCheckpoint); snapping: some of its parts arrived, not
	// all.
	snap     record.CheckpointJoiner
	snapping bool
}

type readResult struct {
	m   repl.Message
	err error
}

func protoErr(format string, args ...any) error {
	return fmt.Errorf("zeroloss: follow: %w: %s", ErrReplication, fmt.Sprintf(format, args...))
}

func (f *follower) run() error {
	f.last = f.log.LastSeq()
	f.acked = f.last
	pos := repl.Position{MaxFrame: uint32(min(f.maxFrame, 1<<31)), LastSeq: f.last, Epochs: f.epochs}
	pos.MAC = repl.FollowerMAC(f.secret, f.hs.nonce, &f.hs.auth, &pos)
	if err := repl.WriteMessage(f.link, &repl.Message{Type: repl.TypePosition, Position: pos}); err != nil {
		return linkErr("writing the position", err)
	}
	br := f.hs.br
	m, err := repl.ReadMessage(br, repl.ControlBody)
	if err == nil {
		err = repl.Expect(&m, repl.TypeWelcome)
	}
	if err != nil {
		if !isProtocolError(err) {
			return linkErr("reading the leader's welcome", err)
		}
		return protoErr("reading the leader's welcome: %v", fmtErr(err))
	}
	if err := f.welcome(&m.Welcome); err != nil {
		return err
	}

	msgs := make(chan readResult, 16)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := repl.ReadMessage(br, repl.MaxBody(f.maxFrame))
			select {
			case msgs <- readResult{m, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(done)
		f.link.Close()
		wg.Wait()
	}()
	for {
		var res readResult
		select {
		case res = <-msgs:
		case <-f.ctx.Done():
			return f.ctx.Err()
		}
		err := f.apply(res)
		// Take whatever else already arrived into the same fdatasync.
	drain:
		for err == nil {
			select {
			case res = <-msgs:
				err = f.apply(res)
			default:
				break drain
			}
		}
		if aerr := f.ack(); aerr != nil && err == nil {
			err = aerr
		}
		if err != nil {
			return err
		}
	}
}

// welcome applies the leader's answer to the position: the follower cuts what it
// holds beyond the last seq the two logs share (records its leader never
// had, so never acknowledged under ReplicateSync), then takes the leader's
// history as its own. The history file is written before any frame of the
// leader's is appended, and reading it back drops the terms the log has not
// reached, so it always describes the log.
func (f *follower) welcome(w *repl.Welcome) error {
	if w.Version != repl.Version || w.From == 0 || w.From > f.last+1 {
		return protoErr("the leader's welcome (version %d, from seq %d) does not answer the position (version %d, last seq %d)",
			w.Version, w.From, repl.Version, f.last)
	}
	if err := repl.CheckHistory(w.Epochs); err != nil || len(w.Epochs) == 0 || w.Epochs[len(w.Epochs)-1] != f.hs.auth.Epoch {
		return protoErr("the leader's welcome carries a history that does not end with the epoch of its auth (%d)", f.hs.auth.Epoch.Num)
	}
	if err := f.checkEpoch(f.hs.auth.Epoch); err != nil {
		// Greeted while an earlier session ran, which met a later leader.
		tellBriefly(f.link, err.Error())
		return protoErr("%v", err)
	}
	if err := f.adopt(queueID(f.hs.auth.Queue)); err != nil {
		return err
	}
	if keep := w.From - 1; keep < f.last {
		cut, err := f.log.TruncateAfter(keep)
		if err != nil {
			return fmt.Errorf("zeroloss: follow: cutting the log after seq %d: %w", keep, err)
		}
		f.logger.Warn("zeroloss: follow: cut records the leader does not have", "records", cut,
			"after_seq", keep, "was_last_seq", f.last)
		f.last, f.acked = keep, keep
		f.reportAck(keep)
	}
	h := w.Epochs
	if len(h) == repl.MaxEpochs {
		// The leader sent its latest terms only: keep the older ones.
		var older []repl.Epoch
		for _, e := range f.epochs {
			if e.Num < h[0].Num {
				older = append(older, e)
			}
		}
		h = append(older, h...)
	}
	if !slices.Equal(h, f.epochs) {
		if err := writeEpochs(f.fs, f.dir, h); err != nil {
			return fmt.Errorf("zeroloss: follow: %w", err)
		}
		f.mu.Lock()
		f.epochs = h
		f.seen = max(f.seen, h[len(h)-1].Num)
		f.mu.Unlock()
	}
	return nil
}

// apply checks one message from the leader and appends its frames.
func (f *follower) apply(res readResult) error {
	if res.err != nil {
		if res.err == io.EOF {
			return fmt.Errorf("zeroloss: follow: the leader closed the link: %w", io.EOF)
		}
		if !isProtocolError(res.err) {
			return linkErr("reading from the leader", res.err)
		}
		return protoErr("message from the leader rejected, nothing of it written: %v", fmtErr(res.err))
	}
	m := &res.m
	if m.Type == repl.TypeCheckpoint {
		return f.catchUp(m.Frames)
	}
	if f.snapping && m.Type != repl.TypeError {
		return protoErr("%v from the leader before the rest of its checkpoint, nothing of it written", m.Type)
	}
	if m.Type == repl.TypeTrim {
		f.trim = max(f.trim, m.Seq)
		// Frames that jump from below it cross records the leader deleted
		// before this copy got them: the copy marks the gap (wal.Log.Gaps).
		f.log.LostBelow(m.Seq)
		return nil
	}
	if err := repl.Expect(m, repl.TypeFrames); err != nil {
		return protoErr("message from the leader rejected, nothing of it written: %v", fmtErr(err))
	}
	if _, _, _, err := repl.CheckFrames(m.Frames, f.maxFrame, f.last); err != nil {
		return protoErr("frames from the leader rejected, nothing of them written: %v", err)
	}
	if _, err := f.log.AppendFrames(m.Frames); err != nil {
		return fmt.Errorf("zeroloss: follow: append: %w", err)
	}
	f.noteCheckpoints(m.Frames)
	f.last = m.LastSeq
	return nil
}

// ack makes what was appended durable (FlushSync) and tells the leader.
func (f *follower) ack() error {
	if f.last == f.acked {
		return f.retain()
	}
	seq := f.last
	if f.sync {
		synced, err := f.log.Sync()
		if err != nil {
			return fmt.Errorf("zeroloss: follow: %w", err)
		}
		seq = synced
	}
	f.reportAck(seq) // durable already; reported before the leader can answer a Send
	if err := repl.WriteMessage(f.link, &repl.Message{Type: repl.TypeAck, Seq: seq}); err != nil {
		return linkErr("writing an ack", err)
	}
	f.acked = seq
	return f.retain()
}

// retain deletes the segments the leader deleted (Trim), once the copy holds
// a durable whole checkpoint that has every group done with them: below the
// Trim's seq, the checkpoint's lowest group floor and the checkpoint's first
// part. Recovery starts at the first whole checkpoint of a trimmed log, so
// the segments below must hold nothing that checkpoint still owes; and until
// the copy holds such a checkpoint, its own older records are the only
// consumer state it has (a Trim comes before the frames of a catch-up that
// jumps over deleted segments, ahead of the leader's checkpoint). Under
// FlushAsync acked is only written: the checkpoint is synced before anything
// is deleted.
func (f *follower) retain() error {
	if f.trim == 0 || f.ckpt == 0 || f.ckptEnd > f.acked {
		return nil
	}
	if f.log.SyncedSeq() < f.ckptEnd {
		if _, err := f.log.Sync(); err != nil {
			return fmt.Errorf("zeroloss: follow: syncing checkpoint %d before deleting segments: %w", f.ckpt, err)
		}
	}
	below := min(f.trim, f.ckpt, f.done)
	n, err := f.log.RemoveBefore(below)
	if err != nil {
		return fmt.Errorf("zeroloss: follow: deleting segments below seq %d: %w", below, err)
	}
	if n > 0 {
		f.logger.Info("zeroloss: follow: deleted segments the leader deleted", "segments", n, "below_seq", below)
	}
	return nil
}

// noteCheckpoints follows the checkpoint parts among frames (already
// checked, in log order) and notes where the latest whole checkpoint starts
// and ends, and the lowest floor of its groups (every group is done with the
// main-stream seqs below it; retries and dead letters are in the checkpoint).
func (f *follower) noteCheckpoints(frames []byte) {
	for off := 0; off+record.HeaderSize <= len(frames); {
		size, err := record.FrameSize(frames[off:], 0)
		if err != nil || off+size > len(frames) {
			return
		}
		if h := frames[off : off+record.HeaderSize]; record.Type(h[9]) == record.TypeCheckpoint {
			seq := binary.LittleEndian.Uint64(h[16:24])
			// A malformed part counts as no checkpoint: the follower
			// then keeps more, never less.
			payload, start, whole, err := f.ckpts.Add(seq, frames[off+record.HeaderSize:off+size])
			if err == nil && whole {
				if c, err := record.DecodeCheckpoint(payload); err == nil {
					done := uint64(math.MaxUint64)
					for _, g := range c.Groups {
						done = min(done, g.Floor)
					}
					f.ckpt, f.ckptEnd, f.done = start, seq, done
				}
			}
		}
		off += size
	}
}

// isProtocolError reports whether err is the other side breaking the
// protocol (or refusing, with an Error message), as opposed to the link
// failing under it.
func isProtocolError(err error) bool {
	for _, e := range []error{repl.ErrMalformed, repl.ErrTooLarge, repl.ErrChecksum, repl.ErrOutOfOrder, repl.ErrVersion, repl.ErrRemote} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// errLink marks the link failing (closed, reset, broken) under a follower:
// not a protocol error, so it does not match ErrReplication, and the
// follower may serve the next link.
var errLink = errors.New("the link to the leader failed")

func linkErr(doing string, err error) error {
	return fmt.Errorf("zeroloss: follow: %w %s: %w", errLink, doing, err)
}

// fmtErr names a clean end of the link for what it is.
func fmtErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("link closed (%w)", err)
	}
	return err
}
