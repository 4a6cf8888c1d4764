package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// A consumer group's run-time state. Every group receives every message of
// the main stream; the consumers of one group share its messages. The
// group's durable state is its records in the log (record.TypeGroup,
// TypeAck, TypeRetry, TypeDeadLetter on the group's stream id, and the
// checkpoints that retention writes), mirrored by the queue's ledger; this
// run-time state is rebuilt from the ledger on Open (recoverGroups).
type group struct {
	q       *Queue
	id      uint16
	name    string
	sel     selection   // the topic (and tags) it reads; fixed for its life
	deleted atomic.Bool // DeleteGroup: no record is written for it any more

	mu       sync.Mutex
	cursor   uint64              // next main-stream seq to consider for a first delivery
	reader   *wal.Reader         // nil until needed
	readerAt uint64              // the seq the reader's next frame is at or after
	closed   bool                // Close closed reader: none may be opened again
	pending  map[uint64]*unacked // by position: delivered (or due again), not acked
	attempts map[uint64]uint64   // by position: attempt counts not yet written in an ack record
	marked   uint64              // the cursor last written in an ack record
	unmarked bool                // the cursor passed a message the group owes since
	lastOwn  uint64              // the seq after the last message of the group's read
	floored  uint64              // the floor last written in an ack record
	skip     map[uint64]bool     // main-stream seqs at or above cursor already done (acked or moved before a restart)
	order    []uint64            // main-stream positions as they entered pending, ascending; some may have left it since (floor's index)
	changed  chan struct{}       // closed and replaced when pending changes
	claimed  map[uint64]bool     // dead-letter positions a redrive or purge is writing a record about (claimDead)

	asyncAcks    []*Delivery // acked by AckAsync, not in a record yet (their messages busy and acking)
	asyncWriting bool        // writeAsyncAcks is running for the group

	// Ordered delivery (ordered.go): set by the group's first Consumer.
	modeSet, ordered bool
	lines            map[string]*keyLine // ordered: by key, the keys with something owed
	blocked          map[uint64]*unacked // ordered: by position, messages waiting behind their key's head

	// What the last look through pending found (Consumer.next): while
	// quiet, nothing in pending is to be delivered or has an expired ack
	// deadline before quietUntil (zero: no time set), so Receive need not
	// look through every message in flight again. notify ends it; a
	// delivery or Extend pulls quietUntil in (expect).
	quiet      bool
	quietUntil time.Time
	scanned    time.Time // when it looked: a clock that went back makes it look again
}

// expect notes that something in pending needs a look at t (the caller holds
// g.mu).
func (g *group) expect(t time.Time) {
	if g.quiet && (g.quietUntil.IsZero() || t.Before(g.quietUntil)) {
		g.quietUntil = t
	}
}

// unacked is a message the group owes: delivered and not acked yet, waiting
// to be delivered again, or delayed.
type unacked struct {
	pos      uint64 // log position holding it: its main-stream seq or its retry record's seq
	seq      uint64 // its main-stream seq
	msg      Message
	attempt  int           // deliveries so far
	first    time.Time     // first delivery
	out      bool          // held by a consumer until deadline
	deadline time.Time     // ack deadline while out
	due      time.Time     // when not out: when to deliver again
	wait     time.Duration // the delay that set due; a clock jump back cannot stretch it
	timeout  time.Duration // the ack timeout that set deadline, likewise
	token    uint64        // changes on every delivery: stale Delivery handles
	busy     bool          // a record about it (ack, retry, dead letter) is being written
	acking   bool          // that record is an Ack's (busy too): a second Ack waits for it
	dead     bool          // dead-lettered (and out of pending): an Ack of its delivery is expired
	// delayed: read with a future DeliverAt and not delivered then, or
	// its first delivery released (giveBack); the group's ack records say
	// so (an attempt count of 0) until it moves or is delivered again
	delayed bool
}

func newGroup(q *Queue, id uint16, name string, sel selection, cursor uint64) *group {
	return &group{q: q, id: id, name: name, sel: sel, cursor: cursor, marked: cursor, floored: cursor, pending: map[uint64]*unacked{},
		attempts: map[uint64]uint64{}, changed: make(chan struct{})}
}

// dueAgain makes u, a message of pending that no consumer holds, due for
// delivery again at due, wait after now (the caller holds g.mu and calls
// notify). Every message given back at its position passes here: a failed
// first delivery (Nack, NackNow, an ack deadline that passed) and a
// released one (Delivery.Release, Consumer.Close); one given back from the
// retry stream gets its due time when its move is written (moveOne).
func (g *group) dueAgain(u *unacked, due time.Time, wait time.Duration) {
	u.due, u.wait = due, wait
}

// giveBack undoes the delivery of u, held by a consumer and not busy
// (Delivery.Release, Consumer.Close; the caller holds g.mu and calls
// notify): u is due again at once and its attempt is taken back, so it
// does not count towards MaxDeliveries. The attempt count the group's next
// ack record carries for it is taken back too: a first delivery's becomes
// 0 (read, never delivered, as for a delayed message: a restart does not
// count it, and its next delivery writes its count again), a redelivery's
// the attempts before it. A count already written cannot be taken back
// (the ledger keeps the larger of two counts): a restart then counts the
// released delivery as one attempt, as it counts a delivery held at a
// crash. So a crash counts at most one attempt more than were failed.
func (g *group) giveBack(u *unacked, now time.Time) {
	counted := u.attempt > 1 || u.pos != u.seq || u.delayed || !u.msg.DeliverAt.IsZero() // as deliver
	u.out = false
	u.attempt--
	switch {
	case u.pos == u.seq && u.attempt == 0:
		u.delayed = true
		g.attempts[u.pos] = 0
	case counted:
		g.attempts[u.pos] = uint64(u.attempt)
	}
	g.dueAgain(u, now, 0)
}

// notify wakes the Receives waiting on g, and makes the next one look
// through pending again (the caller holds g.mu).
func (g *group) notify() {
	g.quiet = false
	g.wakeReceivers()
}

// wakeReceivers is notify for a change that cannot make anything in pending
// due sooner (messages leaving it): a group that had nothing due stays so.
func (g *group) wakeReceivers() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// floor is the lowest main-stream seq the group may still need, not counting
// the positions being acked (the caller holds g.mu): every main-stream
// message below it is acked or moved to the retry stream or the dead
// letters. Retries do not count: the ledger holds them, and checkpoints
// carry them past the deletion of the segment their record is in, so a
// message retried for hours does not hold back retention.
func (g *group) floor(acking []uint64) uint64 {
	owed := func(pos uint64) bool {
		u := g.owes(pos)
		return u != nil && u.seq == pos
	}
	for len(g.order) > 0 && !owed(g.order[0]) {
		g.order = g.order[1:]
	}
	if len(g.order) > 2*(len(g.pending)+len(g.blocked))+64 {
		// Mostly positions acked out of order: rebuild the index.
		order := g.order[:0:0]
		for _, owed := range []map[uint64]*unacked{g.pending, g.blocked} {
			for pos, u := range owed {
				if pos == u.seq {
					order = append(order, pos)
				}
			}
		}
		slices.Sort(order)
		g.order = order
	}
	for _, pos := range g.order {
		if owed(pos) && !slices.Contains(acking, pos) {
			return min(pos, g.cursor)
		}
	}
	return g.cursor
}

// owe puts the main-stream message u in pending, or in an ordered group
// behind its key's head (the caller holds g.mu and adds messages in seq
// order). It reports whether u can be delivered (put).
func (g *group) owe(u *unacked) bool {
	g.order = append(g.order, u.seq)
	return g.put(u)
}

// ackPayload encodes an ack record for positions (the caller holds g.mu) and
// takes the attempt counts and the delivered mark it carries. The record's
// floor leaves out the positions it acks: the one record does both. If the
// record's write fails, the caller gives what it took back with untake.
func (g *group) ackPayload(positions []uint64) ([]byte, taken) {
	a := record.Ack{Floor: g.floor(positions), Mark: g.cursor, Acked: append([]uint64(nil), positions...)}
	for s, n := range g.attempts {
		a.Attempts = append(a.Attempts, record.Attempts{Seq: s, Count: n})
	}
	clear(g.attempts)
	took := taken{attempts: a.Attempts, marked: g.marked, floored: g.floored, unmarked: g.unmarked}
	g.marked, g.floored, g.unmarked = g.cursor, a.Floor, false
	return record.AppendAck(nil, &a), took
}

// taken is what an ack record took from the group's unwritten state: the
// attempt counts, and the mark and floor written before it.
type taken struct {
	attempts        []record.Attempts
	marked, floored uint64
	unmarked        bool
}

// untake gives back what an ack record whose write failed took (the caller
// holds g.mu): its attempt counts are written by a later record (a count
// only grows: the larger one wins), and its mark and floor count as not
// written, so flushMarks writes them again. Counts of messages that left
// meanwhile are dropped.
func (g *group) untake(t taken) {
	for _, at := range t.attempts {
		if g.owes(at.Seq) != nil {
			g.attempts[at.Seq] = max(g.attempts[at.Seq], at.Count)
		}
	}
	g.marked, g.floored = min(g.marked, t.marked), min(g.floored, t.floored)
	g.unmarked = g.unmarked || t.unmarked
}

// flushMarks writes an ack record, acking nothing, for every group whose
// delivered mark or attempt counts are not written yet, so that a restart
// counts their deliveries, or whose floor moved past messages of the group
// or the end of a segment retention could delete. Close calls it, and
// markLoop every second: a crash can undercount only the deliveries of the
// last second. A floor that only passed records that are not the group's
// (other topics' messages, consumer records: its own ack records among
// them) needs no record unless retention waits for it.
func (q *Queue) flushMarks(ctx context.Context) error {
	var segments []wal.SegmentSpan
	removable := func() []wal.SegmentSpan {
		if segments == nil {
			segments = q.log.Removable()
		}
		return segments
	}
	for _, g := range q.groupList() {
		g.mu.Lock()
		if !g.closed && !g.deleted.Load() {
			// A group nobody reads (after a restart, say) still passes
			// other topics' records: its floor must not hold their
			// segments.
			g.passOthers()
		}
		if !g.marksDue(removable) {
			g.mu.Unlock()
			continue
		}
		payload, took := g.ackPayload(nil)
		g.mu.Unlock()
		if _, err := g.writeTaken(ctx, payload, took); err != nil {
			return err
		}
	}
	return nil
}

// marksDue says whether the group has marks to write (the caller holds g.mu;
// see flushMarks): attempt counts, a mark past messages it owes, or a floor
// past its messages or past the end of one of the removable segments.
func (g *group) marksDue(removable func() []wal.SegmentSpan) bool {
	if g.unmarked || len(g.attempts) > 0 {
		return true
	}
	floor := g.floor(nil)
	switch {
	case floor <= g.floored:
		return false
	case g.floored < g.lastOwn:
		return true
	}
	return frees(removable(), g.floored, floor)
}

// frees says whether a floor moving from old to new passes the last seq of
// one of segments.
func frees(segments []wal.SegmentSpan, old, new uint64) bool {
	for _, s := range segments {
		if old <= s.LastSeq && s.LastSeq < new {
			return true
		}
	}
	return false
}

// writeTaken writes an ack record whose payload took what took names from
// the group (ackPayload). If the write fails, the group gets it back, so
// that a later record carries it. A deleted group's record is not written
// and is no error: written reports whether it was.
func (g *group) writeTaken(ctx context.Context, payload []byte, took taken) (written bool, err error) {
	_, err = g.writeRecord(ctx, record.TypeAck, payload)
	switch {
	case errors.Is(err, ErrGroupDeleted):
		return false, nil
	case err != nil:
		g.mu.Lock()
		g.untake(took)
		g.mu.Unlock()
		return false, err
	}
	return true, nil
}

// groupList returns the groups, in no particular order.
func (q *Queue) groupList() []*group {
	q.groupsMu.Lock()
	defer q.groupsMu.Unlock()
	groups := make([]*group, 0, len(q.groups))
	for _, g := range q.groups {
		groups = append(groups, g)
	}
	return groups
}

// markLoop flushes delivered marks every second until Close, and deletes
// the segments every group is done with (retain).
func (q *Queue) markLoop() {
	defer close(q.markerDone)
	var tick <-chan time.Time
	if !q.opts.manualTicks {
		ticker := time.NewTicker(time.Second)
		defer ticker.Stop()
		tick = ticker.C
	}
	for {
		select {
		case <-tick:
			if err := q.flushMarks(context.Background()); err != nil && !errors.Is(err, ErrClosed) {
				q.logger.Warn("zeroloss: could not write consumer marks", "error", err)
			}
			if err := q.retain(); err != nil && !errors.Is(err, ErrClosed) {
				q.logger.Warn("zeroloss: retention failed", "error", err)
			}
			q.checkpointState(false)
		case <-q.done:
			return
		}
	}
}

// writeRecord appends one consumer record of the group, applies it to the
// ledger and waits until it is as durable as the queue's flush mode
// promises. It returns the record's seq if it was appended (even with an
// error: then it was appended but not confirmed durable), else 0.
func (g *group) writeRecord(ctx context.Context, typ record.Type, payload []byte) (uint64, error) {
	g.q.recMu.RLock()
	defer g.q.recMu.RUnlock()
	if g.deleted.Load() { // set under recMu's write lock: nothing may follow the deletion record
		return 0, fmt.Errorf("zeroloss: %v record for group %q: %w", typ, g.name, ErrGroupDeleted)
	}
	return g.q.appendRecord(ctx, typ, g.id, payload)
}

// DeleteGroup deletes the consumer group called name, durably: a deletion
// record is appended and made as durable as the flush mode promises, the
// group's hold on retention goes (its floor no longer counts; its retries and
// dead letters are dropped), and after a restart the group is gone. Its open
// Consumers get ErrGroupDeleted from Receive, Consume, Ack, Nack and Extend.
// Queue.Consumer with the same name declares a new group, starting as
// ConsumerOptions.Start says. A name that is no group is ErrNoSuchGroup.
//
// If the record was appended but not confirmed durable (ErrNotDurable), the
// group is deleted in this process and the error says so; after a crash it
// may be back.
func (q *Queue) DeleteGroup(name string) error {
	// Lock order as in groupNamed: groupsMu, then recMu.
	q.groupsMu.Lock()
	defer q.groupsMu.Unlock()
	g := q.groups[name]
	if g == nil {
		return fmt.Errorf("zeroloss: delete group: no consumer group %q: %w (%w)", name, ErrNoSuchGroup, ErrInvalidOptions)
	}
	// recMu exclusively: no record of the group is in flight, and every
	// later writeRecord sees deleted (the ledger drops the group when the
	// record lands; a record of it after that would fail recovery).
	q.recMu.Lock()
	g.deleted.Store(true)
	seq, err := q.appendRecord(context.Background(), record.TypeGroupDeleted, g.id, record.AppendGroupDeleted(nil, name))
	if seq == 0 {
		g.deleted.Store(false)
	}
	q.recMu.Unlock()
	if seq == 0 {
		return fmt.Errorf("zeroloss: delete group %q: %w", name, err)
	}
	delete(q.groups, name)
	g.mu.Lock()
	if g.reader != nil {
		g.reader.Close()
		g.reader = nil
	}
	clear(g.pending)
	clear(g.blocked)
	clear(g.lines)
	clear(g.attempts)
	g.notify() // waiting Receives return ErrGroupDeleted
	g.mu.Unlock()
	q.logger.Info("zeroloss: consumer group deleted", "group", name, "seq", seq)
	if err != nil {
		return fmt.Errorf("zeroloss: delete group %q: %w", name, err)
	}
	return nil
}

// appendRecord appends one internal record (stream != 0) and applies it to
// the ledger; see writeRecord. Internal records are never withdrawn once
// submitted (the ledger would disagree with the log): ctx is not honoured.
func (q *Queue) appendRecord(ctx context.Context, typ record.Type, stream uint16, payload []byte) (uint64, error) {
	now := q.opts.now().UnixNano()
	size := int64(record.HeaderSize + len(payload))
	first, n, status, err := q.submit(context.WithoutCancel(ctx), size, 1, false, func(buf []byte) []byte {
		return record.AppendFrame(buf, typ, stream, now, payload)
	})
	if n != 1 {
		return 0, err
	}
	if stream != internalStream {
		rec := record.Record{Type: typ, Stream: stream, Seq: first, Time: now, Payload: payload}
		if aerr := q.ledger.apply(&rec); aerr != nil {
			return first, aerr
		}
	}
	if err != nil {
		return first, err
	}
	if status != SendOK {
		return first, fmt.Errorf("zeroloss: %v record at seq %d written but not confirmed durable (%v): %w",
			typ, first, status, ErrNotDurable)
	}
	return first, nil
}

// recoverGroups rebuilds the ledger from the log, then every group's run-time
// state from the ledger: every message delivered and not acked before the
// stop is due again at once, with its attempts counted; retries keep their
// due times. afterGap says the log ends after a gap with no checkpoint
// after it (replayState).
func (q *Queue) recoverGroups(dir string) (afterGap bool, err error) {
	gaps := q.log.Gaps()
	rs := q.newReplay(q.log.Trimmed(), q.log.FirstSeq(), gaps, nil)
	// The newest checkpoint file the log confirms holds the state up to
	// its record (checkpointfile.go): only the records after it are read.
	r, from, file, err := q.openState(dir, rs)
	if err != nil {
		return false, err
	}
	defer r.Close()
	for len(rs.gaps) > 0 && rs.gaps[0] <= from.seq {
		rs.gaps = rs.gaps[1:] // the file's state is the state after them
	}
	gapsAfter := len(rs.gaps) > 0
	if rs.catchup, err = catchupFor(q.opts.fs, dir, rs.gaps); err != nil {
		return false, err
	}
	last, lastOff := from.seq, from.off
	var read, readBytes uint64
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, fmt.Errorf("zeroloss: recovering consumer groups: %w", err)
		}
		read++
		readBytes += uint64(rec.Size())
		if err := q.replay(rs, &rec); err != nil {
			return false, err
		}
		if err := q.topics.indexRecord(&rec, r.Offset()); err != nil {
			return false, err
		}
		last, lastOff = rec.Seq, r.Offset()
	}
	q.stats.openFramesRead = read
	if err := q.finishReplay(rs); err != nil {
		return false, err
	}
	now := rs.now
	if q.dedup != nil {
		q.dedup.finishRecovery()
	}
	q.tx.recovered(now, q.opts.TxTimeout, q.opts.TxCheckInterval/txChecksPerRound)
	if n, _, _, _, _ := q.tx.counts(); n > 0 {
		q.logger.Info("zeroloss: transactional half messages pending a decision", "count", n)
	}
	q.topics.trim(q.log.FirstSeq()) // a file's runs of segments deleted since
	if rs.plain() {
		// The state just rebuilt is the base of the next checkpoint file
		// (taken before the groups below raise nextGroupID). When few
		// records followed the file (a clean Close: only Open's epoch
		// record), the file itself is the base, and the next checkpoint
		// replays them again: cheaper than encoding the state now.
		q.files.written, q.files.bytes = from.seq, q.log.Stats().Bytes
		if file != nil && !gapsAfter && readBytes <= uint64(len(file)) {
			q.files.base, q.files.at = file, from
		} else {
			at := from
			if last != from.seq {
				if at, err = q.frameAt(last, lastOff); err != nil {
					return false, err
				}
			}
			q.files.base, q.files.at = q.encodeState(at), at
			q.files.encoded = q.files.base // not a file yet
		}
	}
	q.ledger.mu.Lock()
	defer q.ledger.mu.Unlock()
	for _, lg := range q.ledger.groups {
		g := newGroup(q, lg.id, lg.name, lg.sel, lg.mark)
		g.floored = lg.floor
		// A retry or dead-letter record acks the position it leaves without
		// moving the mark: those positions must not be read as new.
		for pos := range lg.acked {
			if pos >= lg.mark {
				if g.skip == nil {
					g.skip = map[uint64]bool{}
				}
				g.skip[pos] = true
			}
		}
		q.groups[lg.name] = g
		q.nextGroupID = max(q.nextGroupID, lg.id+1)
		if err := g.recoverPending(lg, now); err != nil {
			return false, err
		}
		for pos, rt := range lg.retries {
			u := &unacked{pos: pos, seq: rt.Seq, msg: fromRecord(rt.Message), attempt: int(rt.Attempts), first: now}
			if rt.First != 0 {
				u.first = unixTime(rt.First)
			}
			if n := lg.attempts[pos]; n > rt.Attempts {
				// Delivered from the retry stream and not acked: due now.
				u.attempt, u.due = int(n), now
			} else {
				u.due = unixTime(rt.Due)
				u.wait = max(u.due.Sub(now), 0)
			}
			g.pending[pos] = u
		}
		if n := len(g.pending); n > 0 {
			q.logger.Info("zeroloss: unacked messages will be delivered again", "group", g.name, "count", n)
		}
	}
	return rs.afterGap || rs.fromCatchup, nil
}

// replayState is the state of a replay of the log's records (recovery, or
// ReadDirState).
//
// Consumer records are applied in log order, with two exceptions:
//   - Once retention has deleted the log's first segments (trimmed), the
//     consumer records before the first checkpoint left may refer to groups
//     declared in deleted segments: the checkpoint holds their effect, so
//     they are skipped, and a trimmed log without a checkpoint is corrupt.
//   - A follower's copy may jump over records its leader deleted before the
//     follower got them (a gap: wal.Log.Gaps). Until the first checkpoint
//     after the last gap, the consumer records after it describe a state the
//     copy never saw: groups declared in the gap, floors that moved past
//     messages that went to the retry stream in the gap. What the copy held
//     before the gap stays the consumer state, and after the gap only what
//     cannot drop a message it holds is applied (ledger.applyAfterGap):
//     messages, group declarations, retries and dead letters of known
//     groups (they carry their message), acked positions. Messages the
//     leader acked may then be delivered again; none the copy holds is lost.
//     But when the copy holds the checkpoint its leader sent ahead of the
//     jump (its CATCHUP file, catchup.go), that checkpoint replaces the
//     state at the last gap: the consumer records after the gap below the
//     checkpoint's seq are skipped, those at or above it applied in full,
//     as a trimmed log does at its first checkpoint. A checkpoint in the
//     log after the gap replaces it in turn.
type replayState struct {
	trimmed, seenCheckpoint bool
	gaps                    []uint64 // base seqs of the segments after a gap not passed yet
	afterGap                bool     // past a gap, before a checkpoint
	catchup                 *catchup // the leader's checkpoint for the last gap, not loaded yet
	skipBelow               uint64   // loaded: consumer records below its seq are skipped
	fromCatchup             bool     // the state is the catch-up checkpoint's, no checkpoint of the log since
	unknown                 map[uint16]int
	now, dedupSince         time.Time
	checkpoint              record.CheckpointJoiner
}

// newReplay starts a replay of a log whose first segment chains to deleted
// ones (firstChained) and whose segments at gaps start at the given seqs;
// cu is the leader's checkpoint sent ahead of the last gap (catchupFor), or
// nil.
func (q *Queue) newReplay(firstChained bool, firstSeq uint64, gaps []uint64, cu *catchup) *replayState {
	rs := &replayState{gaps: gaps, now: q.opts.now(), catchup: cu}
	// A copy that starts past deleted records starts after a gap, with no
	// state: it is not a log whose own retention lost its checkpoint.
	rs.trimmed = firstChained && (len(gaps) == 0 || gaps[0] != firstSeq)
	if q.dedup != nil {
		rs.dedupSince = rs.now.Add(-q.dedup.window)
	}
	return rs
}

// replay applies one record, in log order, to the ledger, the dedup table
// and the transaction table.
func (q *Queue) replay(rs *replayState, rec *record.Record) error {
	for len(rs.gaps) > 0 && rec.Seq >= rs.gaps[0] {
		rs.gaps = rs.gaps[1:]
		rs.afterGap = true
		if len(rs.gaps) == 0 && rs.catchup != nil {
			q.loadCheckpoint(rs, &rs.catchup.c)
			rs.afterGap, rs.fromCatchup, rs.skipBelow = false, true, rs.catchup.seq
			rs.catchup = nil
		}
	}
	if rec.Stream == 0 || (rec.Stream == internalStream && rec.Type == record.TypeTxOp) {
		return q.recoverMainRecord(rec, rs.now, rs.dedupSince)
	}
	if rec.Type == record.TypeEpoch {
		return nil // the history file holds the terms (epoch.go)
	}
	if rec.Type == record.TypeCheckpoint {
		// A checkpoint is written in parts (record.SplitCheckpoint) and
		// counts once its last part is read; one cut short by a crash
		// does not count.
		payload, start, done, err := rs.checkpoint.Add(rec.Seq, rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: checkpoint part at seq %d: %w", rec.Seq, err)
		}
		if !done {
			return nil
		}
		rs.seenCheckpoint, rs.afterGap = true, false
		rs.fromCatchup, rs.skipBelow = false, 0
		c, err := record.DecodeCheckpoint(payload)
		if err != nil {
			return fmt.Errorf("zeroloss: checkpoint at seq %d: %w", start, err)
		}
		q.loadCheckpoint(rs, &c)
		return nil
	} else if rec.Seq < rs.skipBelow {
		return nil // the catch-up checkpoint holds its effect
	} else if rs.afterGap {
		known, err := q.ledger.applyAfterGap(rec)
		if !known {
			if rs.unknown == nil {
				rs.unknown = map[uint16]int{}
			}
			rs.unknown[rec.Stream]++
		}
		return err
	} else if rs.trimmed && !rs.seenCheckpoint {
		return nil
	}
	return q.ledger.apply(rec)
}

// loadCheckpoint makes c the consumer state and adds its dedup entries and
// pending halves.
func (q *Queue) loadCheckpoint(rs *replayState, c *record.Checkpoint) {
	if q.dedup != nil {
		q.dedup.recoveredAll(c.Dedup, rs.now)
	}
	for _, h := range c.Halves {
		q.tx.recoverHalf(h.Seq, h.Message, unixTime(h.Time), int(h.Checks))
	}
	q.ledger.load(c)
}

// finishReplay ends a replay: it checks that a trimmed log had a checkpoint,
// and reports the records of groups the copy never saw declared (past a
// gap), whose ids it keeps from being given to new groups.
func (q *Queue) finishReplay(rs *replayState) error {
	if rs.trimmed && !rs.seenCheckpoint {
		return fmt.Errorf("zeroloss: the log's first segments were deleted but no checkpoint of the consumer state is left: %w", ErrCorrupt)
	}
	if len(rs.unknown) > 0 {
		n := 0
		for id, c := range rs.unknown {
			n += c
			q.nextGroupID = max(q.nextGroupID, id+1) // never reuse their ids
		}
		q.logger.Warn("zeroloss: consumer records of groups declared in records the leader deleted before this copy got them were ignored (a checkpoint written after the gap would name the groups)",
			"groups", len(rs.unknown), "records", n)
	}
	return nil
}

// recoverMainRecord handles a main-stream record (or a transaction op) on
// Open: messages within the dedup window go into the dedup table, half
// messages and the records that resolve them into the transaction table.
func (q *Queue) recoverMainRecord(rec *record.Record, now, dedupSince time.Time) error {
	switch rec.Type {
	case record.TypeMessage:
		id, generated, half, err := record.MessageMeta(rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: message at seq %d: %w", rec.Seq, err)
		}
		if half != 0 {
			q.tx.recoverCommit(half, SendResult{Seq: rec.Seq, ID: id, Status: SendOK})
		}
		if q.dedup != nil && !generated && !unixTime(rec.Time).Before(dedupSince) {
			topic, _, err := record.MessageRoute(rec.Payload)
			if err != nil {
				return fmt.Errorf("zeroloss: message at seq %d: %w", rec.Seq, err)
			}
			q.dedup.recovered(dedupKey{string(topic), id}, rec.Seq, unixTime(rec.Time), now)
		}
	case record.TypeHalf:
		m, err := record.DecodeMessage(rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: half message at seq %d: %w", rec.Seq, err)
		}
		q.tx.recoverHalf(rec.Seq, m, unixTime(rec.Time), 0)
	case record.TypeTxOp:
		op, err := record.DecodeTxOp(rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: transaction op at seq %d: %w", rec.Seq, err)
		}
		q.tx.recoverOp(op.Half, op)
	}
	return nil
}

// recoverPending reads back the main-stream messages in [floor, mark) that
// lg has not acked: delivered before the stop, they are due again now.
func (g *group) recoverPending(lg *ledgerGroup, now time.Time) error {
	if lg.mark <= lg.floor {
		return nil
	}
	r := g.q.log.NewUncappedReader(lg.floor)
	defer r.Close()
	for {
		rec, err := r.Next()
		if err == io.EOF || (err == nil && rec.Seq >= lg.mark) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("zeroloss: recovering group %q: %w", g.name, err)
		}
		if rec.Type != record.TypeMessage || rec.Stream != 0 || rec.Seq < lg.floor || lg.acked[rec.Seq] {
			continue
		}
		m, err := record.DecodeMessage(rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: message at seq %d: %w", rec.Seq, err)
		}
		if !lg.sel.matches([]byte(m.Topic), []byte(m.Tag)) {
			continue // another topic's (or a tag the group does not take)
		}
		n, counted := lg.attempts[rec.Seq]
		u := &unacked{pos: rec.Seq, seq: rec.Seq, msg: fromRecord(m), attempt: int(max(n, 1)), first: now, due: now}
		if counted && n == 0 {
			// A delayed message read but not moved to the retry stream
			// before the stop, and never delivered: below the mark, but
			// due at DeliverAt (now if it passed), as if first read now.
			u.attempt, u.delayed = 0, true
			if m.DeliverAt.After(now) {
				u.due, u.wait = m.DeliverAt, m.DeliverAt.Sub(now)
			}
		}
		g.owe(u)
	}
}

func unixTime(ns int64) time.Time { return time.Unix(0, ns) }

// groupNamed returns the group called name, declaring it durably if it is new.
// A group reads one topic, and only the tags it listed, for its whole life:
// asking for an existing group with another topic or tags is an error naming
// the option (DeleteGroup, then declare it anew, to change them).
func (q *Queue) groupNamed(ctx context.Context, name string, sel selection, start StartPosition) (*group, error) {
	q.groupsMu.Lock()
	defer q.groupsMu.Unlock()
	if g := q.groups[name]; g != nil {
		if g.sel.topic != sel.topic {
			return nil, fmt.Errorf("zeroloss: ConsumerOptions.Topic: consumer group %q reads topic %q, not %q (delete the group to change it): %w",
				name, g.sel.topic, sel.topic, ErrInvalidOptions)
		}
		if !g.sel.equal(sel) {
			return nil, fmt.Errorf("zeroloss: ConsumerOptions.Tags: consumer group %q takes tags %q, not %q (delete the group to change them): %w",
				name, g.sel.tags, sel.tags, ErrInvalidOptions)
		}
		return g, nil
	}
	if q.nextGroupID == 0 || q.nextGroupID == ^uint16(0) {
		return nil, fmt.Errorf("zeroloss: too many consumer groups: %w", ErrInvalidOptions)
	}
	startSeq := uint64(0)
	if start == StartLatest {
		startSeq = q.log.LastSeq() + 1
	}
	g := newGroup(q, q.nextGroupID, name, sel, startSeq)
	decl := record.Group{Name: name, StartSeq: startSeq, Topic: sel.topic, Tags: sel.tags}
	if _, err := g.writeRecord(ctx, record.TypeGroup, record.AppendGroup(nil, &decl)); err != nil {
		return nil, err
	}
	q.nextGroupID++
	q.groups[name] = g
	return g, nil
}

// Groups returns the names of the consumer groups, sorted.
func (q *Queue) Groups() []string {
	q.groupsMu.Lock()
	defer q.groupsMu.Unlock()
	names := make([]string, 0, len(q.groups))
	for n := range q.groups {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func fromRecord(m record.Message) Message {
	return Message{ID: m.ID, Topic: m.Topic, Tag: m.Tag, Key: m.Key, Headers: m.Headers, Body: m.Body, DeliverAt: m.DeliverAt}
}

// GroupStats describes a consumer group at one moment.
type GroupStats struct {
	Group string
	// Topic and Tags are what the group reads (ConsumerOptions).
	Topic string
	Tags  []string
	// Lag is how many messages of the group's topic (and tags) it has not
	// acked yet: not delivered, in flight, waiting or retrying (dead
	// letters are not counted). 0 when the group is caught up.
	Lag uint64
	// Behind is how many log positions lie between the group's cursor and
	// the committed seq: an upper bound on the messages not yet delivered
	// (other topics' messages and consumer records take positions too).
	Behind uint64
	// InFlight counts messages held by consumers until their ack deadline.
	InFlight int
	// Waiting counts messages waiting to be delivered again (or, for a
	// DeliverAt in the future, for the first time), and in an Ordered
	// group those read and waiting behind an earlier message of their key.
	Waiting int
	// Retrying counts messages held in the group's retry stream (waiting or
	// in flight): failed more than once, or delayed.
	Retrying int
	// DeadLetters counts the group's dead letters.
	DeadLetters int
	// Floor is the group's durable floor: every main-stream message below
	// it is acked or moved. Retention deletes a segment once every group's
	// floor is above its last seq.
	Floor uint64
	// HoldsOldest says the group's floor is the lowest and the oldest
	// segment is kept for it (it, or a group tied with it, holds
	// retention back). PinnedSegments and PinnedBytes (frame bytes) are
	// the segments kept for this group alone: retention would delete them
	// if it acked up to the next lowest group's floor, or were deleted
	// (DeleteGroup). A group declared and never read pins every segment
	// from its topic's first message on (markLoop moves it over other
	// topics' records, read or not).
	HoldsOldest    bool
	PinnedSegments int
	PinnedBytes    int64
	// BlockedKeys counts, in an Ordered group, the keys whose head (the
	// message of the key being handled) has failed a delivery and is not
	// acked yet: waiting for its backoff, or delivered again. Their later
	// messages wait. BlockedKeyAge is how long the longest blocked of them
	// has been: the time since its head was first delivered.
	BlockedKeys   int
	BlockedKeyAge time.Duration
}

// pinned fills the retention fields of st from the floors of every group
// and the segments retention could delete (oldest first).
func (st *GroupStats) pinned(floors map[string]uint64, segments []wal.SegmentSpan) {
	st.Floor, st.HoldsOldest, st.PinnedSegments, st.PinnedBytes = pinnedBy(st.Group, floors, segments)
}

// pinnedBy says how far group name holds retention back: its floor, whether
// it holds the oldest segment, and the segments (and their frame bytes) kept
// for it alone, given every group's floor and the segments retention could
// delete, oldest first.
func pinnedBy(name string, floors map[string]uint64, segments []wal.SegmentSpan) (floor uint64, oldest bool, n int, bytes int64) {
	floor, ok := floors[name]
	if !ok {
		return 0, false, 0, 0
	}
	lowest, others := floor, uint64(math.MaxUint64)
	for other, f := range floors {
		lowest = min(lowest, f)
		if other != name {
			others = min(others, f)
		}
	}
	oldest = floor == lowest && len(segments) > 0 && segments[0].LastSeq >= floor
	for _, s := range segments {
		if s.LastSeq >= floor && s.LastSeq < others {
			n++
			bytes += s.Bytes
		}
	}
	return floor, oldest, n, bytes
}

// stats reads g's counters.
func (g *group) stats(committed uint64) GroupStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := GroupStats{Group: g.name, Topic: g.sel.topic, Tags: slices.Clone(g.sel.tags), DeadLetters: g.q.ledger.deadCount(g.id)}
	if committed >= g.cursor {
		st.Behind = committed - g.cursor + 1
	}
	// Unread: the group's messages from the cursor up to the committed seq
	// (those appended and not yet durable are not counted).
	st.Lag = uint64(len(g.pending)+len(g.blocked)) + g.q.topics.countBetween(&g.sel, g.cursor, g.q.committedSeq()+1)
	for s := range g.skip {
		if s >= g.cursor && st.Lag > 0 {
			st.Lag-- // done before a restart: not owed
		}
	}
	for _, u := range g.pending {
		if u.pos != u.seq {
			st.Retrying++
		}
		if u.out {
			st.InFlight++
		} else {
			st.Waiting++
		}
	}
	for _, u := range g.blocked { // ordered: behind their keys' heads
		if u.pos != u.seq {
			st.Retrying++
		}
		st.Waiting++
	}
	st.BlockedKeys, st.BlockedKeyAge = g.blockedKeys(g.q.opts.now())
	return st
}

// GroupStats returns the stats of every consumer group, by name.
func (q *Queue) GroupStats() []GroupStats {
	q.groupsMu.Lock()
	groups := make([]*group, 0, len(q.groups))
	for _, g := range q.groups {
		groups = append(groups, g)
	}
	q.groupsMu.Unlock()
	sort.Slice(groups, func(i, j int) bool { return groups[i].name < groups[j].name })
	out := make([]GroupStats, len(groups))
	floors, segments := q.ledger.floors(), q.log.Removable()
	for i, g := range groups {
		out[i] = g.stats(q.committedSeq())
		out[i].pinned(floors, segments)
	}
	return out
}
