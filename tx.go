package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// Transactional messages, RocketMQ-style. SendHalf appends a half message
// (record.TypeHalf): durable as a Send, invisible to every consumer group.
// The caller runs its local transaction, then commits or rolls back:
//
//   - Commit appends the message to the main stream with a new seq, as a
//     TypeMessage record that names the half it commits (record.Message
//     HalfSeq). The one record both publishes the message and resolves the
//     half, so a crash cannot leave one without the other.
//   - Rollback appends a TypeTxOp record resolving the half.
//
// A half neither committed nor rolled back (the local transaction answered
// unknown, or the process died in between) stays pending. The queue then asks
// Options.TxChecker: first TxTimeout after the half was appended, then every
// TxCheckInterval, at most TxCheckMax times; each unknown answer is recorded
// (a TypeTxOp check record), so check counts survive a restart; after the
// last it rolls the half back and logs it. Without a TxChecker, pending
// halves wait and are reported in Stats and the log, never rolled back.
//
// Pending halves never hold back a consumer group or retention: retention
// checkpoints carry them.

// TxState is the outcome of a local transaction.
type TxState int

const (
	// TxUnknown: not decided yet; the queue will ask the TxChecker.
	TxUnknown TxState = iota
	// TxCommit: the local transaction committed; the message is published.
	TxCommit
	// TxRollback: the local transaction rolled back; the message is dropped.
	TxRollback
)

func (s TxState) String() string {
	switch s {
	case TxUnknown:
		return "unknown"
	case TxCommit:
		return "commit"
	case TxRollback:
		return "rollback"
	}
	return fmt.Sprintf("TxState(%d)", int(s))
}

// Transaction errors.
var (
	// ErrTxRolledBack: Commit of a half message that was rolled back (by
	// Rollback, or by the checker's answer or its last check).
	ErrTxRolledBack = errors.New("transaction rolled back")
	// ErrTxNotFound: no half message at that seq (never sent, or resolved
	// before the last restart).
	ErrTxNotFound = errors.New("no such half message")
)

// Half is a half message: appended, durable as a Send, invisible until
// committed.
type Half struct {
	q   *Queue
	Seq uint64 // the half message's seq
	ID  string // its message ID
}

type txTable struct {
	mu      sync.Mutex
	pending map[uint64]*halfState
	done    map[uint64]*halfState // resolved, kept for idempotent answers
	doneAge []uint64              // seqs of done, oldest first

	committed, rolledBack, checks, expired uint64
}

type halfState struct {
	seq    uint64
	msg    record.Message
	at     time.Time
	checks int
	next   time.Time     // next check-back
	busy   chan struct{} // non-nil while a decision is being written; closed when done
	// checking: a TxChecker call about it is running (txLoop)
	checking bool
	// Once resolved:
	commit SendResult
	state  TxState
}

// maxTxDone bounds the resolved transactions remembered for idempotent
// Commit and Rollback answers.
const maxTxDone = 100_000

func newTxTable() *txTable {
	return &txTable{pending: map[uint64]*halfState{}, done: map[uint64]*halfState{}}
}

// SendHalf appends m as a half message: durable as Send promises, invisible
// to consumers until Commit. The result's Status is that of Send; err != nil
// means nothing was appended.
func (q *Queue) SendHalf(ctx context.Context, m *Message) (*Half, SendResult, error) {
	if m == nil {
		return nil, SendResult{}, fmt.Errorf("zeroloss: half message is nil: %w", ErrInvalidMessage)
	}
	if err := checkMessage(0, m); err != nil {
		return nil, SendResult{}, fmt.Errorf("zeroloss: half message: %w", err)
	}
	rm := toRecord(m)
	rm.GeneratedID = m.NoDedup // its commit does not claim the ID either
	if rm.ID == "" {
		rm.ID, rm.GeneratedID = q.newID(), true
	}
	size := frameSize(&rm)
	if size > q.opts.MaxMessageSize {
		return nil, SendResult{}, fmt.Errorf("zeroloss: half message %q encodes to %d bytes, above MaxMessageSize %d: %w",
			rm.ID, size, q.opts.MaxMessageSize, ErrMessageTooLarge)
	}
	q.recMu.RLock() // a checkpoint must see every half before it
	defer q.recMu.RUnlock()
	now := q.opts.now()
	first, n, status, err := q.submit(ctx, int64(size), 1, true, func(buf []byte) []byte {
		return record.AppendMessageFrameType(buf, record.TypeHalf, 0, 0, now.UnixNano(), &rm)
	})
	if n == 0 {
		return nil, SendResult{}, err
	}
	q.tx.add(&halfState{seq: first, msg: rm, at: now, next: now.Add(q.opts.TxTimeout)})
	return &Half{q: q, Seq: first, ID: rm.ID}, SendResult{Seq: first, ID: rm.ID, Status: status}, err
}

// Commit publishes the half message: it is appended to the main stream with
// a new seq and delivered to every group. Committing again returns the same
// result; committing a rolled-back half returns ErrTxRolledBack.
//
// A half whose ID the caller set takes part in dedup from its commit: a
// later Send of that ID within DedupWindow is answered as a duplicate of the
// commit, before and after a restart alike. SendHalf itself does not
// consult the dedup table, and the commit is appended even if a message with
// its ID was sent before (it must resolve the half); it then stands for that
// ID.
func (h *Half) Commit(ctx context.Context) (SendResult, error) {
	return h.q.resolveHalf(ctx, h.Seq, TxCommit)
}

// Rollback drops the half message. Rolling back again is a no-op; rolling
// back a committed half returns an error.
func (h *Half) Rollback(ctx context.Context) error {
	_, err := h.q.resolveHalf(ctx, h.Seq, TxRollback)
	return err
}

// SendInTransaction sends m as a half message, runs local (the local
// transaction) and commits or rolls back as it answers; on TxUnknown the
// half stays pending for the TxChecker. If the half is not confirmed durable
// (Status other than SendOK), local is not run and the half is rolled back.
// It returns the committed message's result (or the half's), and the state
// reached.
func (q *Queue) SendInTransaction(ctx context.Context, m *Message, local func(context.Context) TxState) (SendResult, TxState, error) {
	h, res, err := q.SendHalf(ctx, m)
	if err != nil {
		return res, TxUnknown, err
	}
	if res.Status != SendOK {
		return res, TxRollback, h.Rollback(context.WithoutCancel(ctx))
	}
	switch state := local(ctx); state {
	case TxCommit:
		r, err := h.Commit(context.WithoutCancel(ctx))
		return r, TxCommit, err
	case TxRollback:
		return res, TxRollback, h.Rollback(context.WithoutCancel(ctx))
	default:
		return res, TxUnknown, nil
	}
}

// resolveHalf commits or rolls back the half at seq.
func (q *Queue) resolveHalf(ctx context.Context, seq uint64, decision TxState) (SendResult, error) {
	q.recMu.RLock()
	defer q.recMu.RUnlock()
	t := q.tx
	t.mu.Lock()
	var st *halfState
	for {
		if d := t.done[seq]; d != nil {
			t.mu.Unlock()
			return d.answer(decision)
		}
		st = t.pending[seq]
		if st == nil {
			t.mu.Unlock()
			return SendResult{}, fmt.Errorf("zeroloss: half message at seq %d: %w", seq, ErrTxNotFound)
		}
		if st.busy == nil {
			break
		}
		wait := st.busy
		t.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return SendResult{}, ctx.Err()
		}
		t.mu.Lock()
	}
	st.busy = make(chan struct{})
	t.mu.Unlock()

	var res SendResult
	var n int
	var err error
	now := q.opts.now().UnixNano()
	if decision == TxCommit {
		m := st.msg
		m.HalfSeq = seq
		claim, cerr := q.claimCommit(ctx, &m)
		if cerr != nil {
			t.mu.Lock()
			close(st.busy)
			st.busy = nil
			t.mu.Unlock()
			return SendResult{}, cerr
		}
		var first uint64
		var status SendStatus
		first, n, status, err = q.submit(context.WithoutCancel(ctx), int64(frameSize(&m)), 1, false, func(buf []byte) []byte {
			return record.AppendMessageFrame(buf, 0, 0, now, &m)
		})
		res = SendResult{Seq: first, ID: m.ID, Status: status}
		if claim != nil && n == 1 {
			q.dedup.settle(claim, first, unixTime(now))
		} else if claim != nil {
			q.dedup.drop(claim)
		}
	} else {
		payload := record.AppendTxOp(nil, &record.TxOp{Half: seq, Op: record.TxRollback})
		var status SendStatus
		_, n, status, err = q.submit(context.WithoutCancel(ctx), int64(record.HeaderSize+len(payload)), 1, false, func(buf []byte) []byte {
			return record.AppendFrame(buf, record.TypeTxOp, internalStream, now, payload)
		})
		if err == nil && status != SendOK {
			err = fmt.Errorf("zeroloss: rollback of the half at seq %d written but not confirmed durable (%v): %w", seq, status, ErrNotDurable)
		}
	}
	t.mu.Lock()
	close(st.busy)
	st.busy = nil
	if n == 1 {
		t.resolve(st, decision, res)
	}
	t.mu.Unlock()
	return res, err
}

// claimCommit claims the caller-set ID of m, a half about to be committed,
// in the dedup table (dedupTable.claimCommit), waiting for a Send of the
// same ID in flight. It returns nil if m is not deduplicated.
func (q *Queue) claimCommit(ctx context.Context, m *record.Message) (*dedupEntry, error) {
	if q.dedup == nil || m.GeneratedID || m.ID == "" {
		return nil, nil
	}
	for {
		claim, wait := q.dedup.claimCommit(dedupKey{m.Topic, m.ID}, q.opts.now())
		if wait == nil {
			return claim, nil
		}
		if ch := q.dedup.waitFor(wait); ch != nil {
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
}

// answer is what a Commit or Rollback of an already resolved half gets.
func (st *halfState) answer(decision TxState) (SendResult, error) {
	switch {
	case decision == st.state:
		return st.commit, nil
	case st.state == TxRollback:
		return SendResult{}, fmt.Errorf("zeroloss: commit of the half at seq %d: %w", st.seq, ErrTxRolledBack)
	default:
		return st.commit, fmt.Errorf("zeroloss: rollback of the half at seq %d: it was committed as seq %d", st.seq, st.commit.Seq)
	}
}

// add registers a pending half.
func (t *txTable) add(st *halfState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending[st.seq] == nil && t.done[st.seq] == nil {
		t.pending[st.seq] = st
	}
}

// resolve moves st from pending to done (the caller holds mu).
func (t *txTable) resolve(st *halfState, state TxState, res SendResult) {
	if t.pending[st.seq] != st {
		return
	}
	delete(t.pending, st.seq)
	st.state, st.commit = state, res
	st.msg.Body, st.msg.Headers = nil, nil // keep the answer, not the message
	t.done[st.seq] = st
	t.doneAge = append(t.doneAge, st.seq)
	for len(t.doneAge) > maxTxDone {
		delete(t.done, t.doneAge[0])
		t.doneAge = t.doneAge[1:]
	}
	if state == TxCommit {
		t.committed++
	} else {
		t.rolledBack++
	}
}

// recoverHalf registers a half read back on Open.
func (t *txTable) recoverHalf(seq uint64, m record.Message, at time.Time, checks int) {
	t.add(&halfState{seq: seq, msg: m, at: at, checks: checks})
}

// recoverOp applies a commit (a message naming its half) or a TxOp read back
// on Open.
func (t *txTable) recoverOp(seq uint64, op record.TxOp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.pending[seq]
	if st == nil {
		return // resolved in a segment retention deleted
	}
	switch op.Op {
	case record.TxChecked:
		st.checks = max(st.checks, int(op.Checks))
	case record.TxRollback:
		t.resolve(st, TxRollback, SendResult{})
	}
}

func (t *txTable) recoverCommit(half uint64, res SendResult) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.pending[half]; st != nil {
		t.resolve(st, TxCommit, res)
	}
}

// recovered schedules the first check of every half read back on Open:
// TxTimeout from now, and spread out so that a restart with many pending
// halves does not call the checker for all of them at once.
func (t *txTable) recovered(now time.Time, first, spread time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, seq := range slices.Sorted(maps.Keys(t.pending)) {
		t.pending[seq].next = now.Add(first + time.Duration(i/txChecksPerRound)*spread)
	}
	t.committed, t.rolledBack = 0, 0
}

// snapshot returns the pending halves, for a checkpoint.
func (t *txTable) snapshot() []record.HalfState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]record.HalfState, 0, len(t.pending))
	for _, seq := range slices.Sorted(maps.Keys(t.pending)) {
		st := t.pending[seq]
		out = append(out, record.HalfState{Seq: seq, Time: st.at.UnixNano(), Checks: uint64(st.checks), Message: st.msg})
	}
	return out
}

// txChecksPerRound bounds the checker calls started by one round of txLoop.
const txChecksPerRound = 64

// txConcurrentChecks bounds the TxChecker calls running at once: a slow
// check does not hold back the others, and a checker that never returns
// stops the checks only once this many of its calls are stuck.
const txConcurrentChecks = 8

// TxCloseWait is how long Close waits for TxChecker calls in progress after
// cancelling their context; calls still running then are abandoned (see
// Options.TxChecker).
const TxCloseWait = time.Second

// txCheck is a check of one half: the message is copied under the table's
// lock, since a Commit may resolve the half (and drop its body) meanwhile.
type txCheck struct {
	st  *halfState
	msg Message
}

// txLoop asks the TxChecker about pending halves that are due, each in a
// goroutine of its own (at most txConcurrentChecks at once), until Close;
// then it cancels the checks' context and waits for them at most
// TxCloseWait.
func (q *Queue) txLoop() {
	defer close(q.txDone)
	tick := min(max(min(q.opts.TxTimeout, q.opts.TxCheckInterval)/4, time.Millisecond), time.Second)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	defer func() {
		cancel()
		q.awaitChecks(&running)
	}()
	slots := make(chan struct{}, txConcurrentChecks) // taken by this goroutine only
	var reported, reportedFull time.Time
	for {
		select {
		case <-ticker.C:
		case <-q.done:
			return
		}
		now := q.opts.now()
		if q.opts.TxChecker == nil {
			if seq, ok := q.tx.firstDue(now); ok && now.Sub(reported) >= q.opts.TxCheckInterval {
				reported = now
				q.logger.Warn("zeroloss: transactional half messages are waiting for a decision and no TxChecker is set",
					"pending", q.Stats().TxPending, "oldest_seq", seq)
			}
			continue
		}
		free := cap(slots) - len(slots)
		if free == 0 {
			if _, ok := q.tx.firstDue(now); ok && now.Sub(reportedFull) >= q.opts.TxCheckInterval {
				reportedFull = now
				q.logger.Warn("zeroloss: every TxChecker call is still running; due checks wait",
					"running", txConcurrentChecks)
			}
			continue
		}
		for _, c := range q.tx.due(now, min(free, txChecksPerRound)) {
			slots <- struct{}{}
			running.Add(1)
			go func() {
				defer running.Done()
				defer func() { <-slots }()
				q.checkHalf(ctx, c, now)
			}()
		}
	}
}

// awaitChecks waits for the checks in progress, at most TxCloseWait.
func (q *Queue) awaitChecks(running *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		running.Wait()
		close(done)
	}()
	wait := q.opts.txCloseWait
	if wait == 0 {
		wait = TxCloseWait
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		q.logger.Warn("zeroloss: TxChecker calls still running at Close are abandoned; their halves are checked again after the next Open",
			"waited", wait)
	}
}

// due returns up to limit pending halves whose check is due and marks them
// checking, so that none is asked about twice at once.
func (t *txTable) due(now time.Time, limit int) []txCheck {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []txCheck
	for _, seq := range slices.Sorted(maps.Keys(t.pending)) {
		if len(out) == limit {
			break
		}
		st := t.pending[seq]
		if st.busy == nil && !st.checking && !now.Before(st.next) {
			st.checking = true
			out = append(out, txCheck{st: st, msg: fromRecord(st.msg)})
		}
	}
	return out
}

// firstDue returns the seq of the first pending half whose check is due.
func (t *txTable) firstDue(now time.Time) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	first, ok := uint64(0), false
	for seq, st := range t.pending {
		if st.busy == nil && !st.checking && !now.Before(st.next) && (!ok || seq < first) {
			first, ok = seq, true
		}
	}
	return first, ok
}

// checkHalf asks the checker about c's half and acts on the answer. The
// checker's context ends at Close or after TxCheckInterval, when the next
// check would be due.
func (q *Queue) checkHalf(ctx context.Context, c txCheck, now time.Time) {
	st := c.st
	if q.opts.beforeCheck != nil {
		q.opts.beforeCheck(st.seq)
	}
	checkCtx, cancel := context.WithTimeout(ctx, q.opts.TxCheckInterval)
	state := q.askChecker(checkCtx, &c.msg)
	cancel()
	q.tx.mu.Lock()
	st.checking = false
	if q.tx.pending[st.seq] != st {
		q.tx.mu.Unlock()
		return // resolved meanwhile (a Commit or Rollback): nothing to record
	}
	q.tx.checks++
	st.checks++
	checks := st.checks
	st.next = now.Add(q.opts.TxCheckInterval)
	q.tx.mu.Unlock()
	var err error
	switch {
	case state == TxCommit || state == TxRollback:
		_, err = q.resolveHalf(ctx, st.seq, state)
	case checks >= q.opts.TxCheckMax:
		q.logger.Warn("zeroloss: transactional half message rolled back after its last check",
			"seq", st.seq, "id", c.msg.ID, "checks", checks)
		if _, err = q.resolveHalf(ctx, st.seq, TxRollback); err == nil {
			q.tx.mu.Lock()
			q.tx.expired++
			q.tx.mu.Unlock()
		}
	default:
		payload := record.AppendTxOp(nil, &record.TxOp{Half: st.seq, Op: record.TxChecked, Checks: uint64(checks)})
		q.recMu.RLock() // a checkpoint carries the check count
		_, err = q.appendRecord(ctx, record.TypeTxOp, internalStream, payload)
		q.recMu.RUnlock()
	}
	if err != nil && !errors.Is(err, ErrTxNotFound) && !errors.Is(err, ErrTxRolledBack) && ctx.Err() == nil {
		q.logger.Warn("zeroloss: transaction check-back", "seq", st.seq, "error", err)
	}
}

// askChecker calls the TxChecker; a panic counts as unknown.
func (q *Queue) askChecker(ctx context.Context, m *Message) (state TxState) {
	defer func() {
		if p := recover(); p != nil {
			q.logger.Error("zeroloss: TxChecker panicked; counted as unknown", "id", m.ID, "panic", p)
			state = TxUnknown
		}
	}()
	return q.opts.TxChecker(ctx, m)
}

func (t *txTable) counts() (pending int, committed, rolledBack, checks, expired uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending), t.committed, t.rolledBack, t.checks, t.expired
}
