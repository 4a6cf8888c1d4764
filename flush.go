package zeroloss

import (
	"time"
)

// The write path.
//
// In short: Sends join a pending batch; whoever finds it ready and no commit
// running (the Send itself, or else the committer goroutine) writes it.
//
//	Send ─┐ encode into the pending batch        committer goroutine
//	Send ─┼──────────────────────────────▶ pending ──swap──▶ one pwrite of the
//	Send ─┘ (under q.mu), then wait on the                   whole batch; under
//	         batch's channels                                FlushSync one fdatasync;
//	                                                         then close the channels
//
// Sends encode their frames straight into the pending batch under q.mu, so a
// message is copied once, on the caller's goroutine. The committer goroutine
// swaps the pending batch for an empty one, writes it with one pwrite
// (wal.Log.Append), closes its written channel and, under FlushSync, calls
// fdatasync and closes its synced channel: every Send of the batch wakes on
// one channel close. While the committer waits on the disk, the next batch
// fills: group commit.
//
// The committer does not swap a batch while Sends that are in flight have not
// joined it yet (it waits at most commitDelay): Sends just answered come
// straight back, and without the wait the groups would alternate between two
// halves of the producers (FlushSync) or shrink to one or two messages per
// write (FlushAsync). A lone producer never waits. Under FlushAsync a syncer
// goroutine calls fdatasync every FlushInterval.
//
// Leader commit: a Send that joins a ready batch while no commit is running
// starts the commit itself on a fresh goroutine (q.committing marks a commit
// in progress, by a leader or by the committer), so a lone producer does not
// wait for the parked committer to be woken; when the commit is done it
// goes on with the pending batch if that is ready, and otherwise nudges the
// committer if Sends are pending. The committer sleeps on q.wake and on
// q.commitTimer, which the first Send of each batch sets to the batch's
// deadline.

// batch gathers the Sends that arrive between two writes.
type batch struct {
	buf       []byte       // their frames, back to back
	entries   []batchEntry // one per Send, in arrival order
	live      int          // Sends not cancelled
	cancelled bool         // an entry was cancelled: compact buf before writing
	deadline  time.Time    // once set: write it by then even if Sends are missing

	written  chan struct{} // closed once the write is done and entries are set
	synced   chan struct{} // closed once the fdatasync is done (FlushSync)
	timedOut chan struct{} // closed if the fdatasync outlasts FlushTimeout
	err      error         // the write error, for entries not (fully) appended
	syncErr  error         // the fdatasync error

	// replTimedOut (ReplicateSync) is closed ReplicaTimeout after the write.
	replTimedOut chan struct{}
}

// batchEntry is one Send's part of a batch.
type batchEntry struct {
	start, end int // byte range of its frames in buf
	frames     int
	cancelled  bool   // its Send gave up on its context before the swap
	first      uint64 // set by the committer: seq of its first frame
	appended   int    // set by the committer: how many of its frames were appended
}

func (q *Queue) newBatch() *batch {
	b := &batch{written: make(chan struct{}), buf: q.spareBuf[:0], entries: q.spareEntries[:0]}
	q.spareBuf, q.spareEntries = nil, nil
	if q.opts.Flush == FlushSync {
		b.synced = make(chan struct{})
		b.timedOut = make(chan struct{})
	}
	return b
}

// nudge wakes the committer if it waits for Sends.
func (q *Queue) nudge() {
	if q.committerWaiting.CompareAndSwap(true, false) {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

func (q *Queue) commitLoop() {
	defer close(q.committerDone)
	for {
		b := q.nextBatch()
		if b == nil {
			return
		}
		q.commit(b)
		q.mu.Lock()
		q.committing = false
		q.mu.Unlock()
	}
}

// batchReady says whether b should be written now (the caller holds q.mu):
// once every Send in flight has joined it, or the queue is closing. (The
// committer also writes it at its deadline; see commitDelay.)
func (q *Queue) batchReady(b *batch) bool {
	return q.closing || q.readyCount(int64(b.live), q.inFlight.Load())
}

// readyCount says whether a batch of live Sends is ready with inFlight
// Sends in flight.
func (q *Queue) readyCount(live, inFlight int64) bool {
	// FlushAsync too: writing when half the producers had joined, so that
	// one half gathers while the other writes, measured 0.73x the raw
	// write(2) loop with 16 producers against 0.93x for whole groups. On
	// this 2-core VM the second processor rarely wakes in time to take part
	// in such short cycles, so gathering and writing run one after the other
	// anyway, and bigger writes cost fewer syscalls per message.
	return live > 0 && live >= inFlight
}

// lead is called by a Send that just joined b, holding q.mu. If no commit is
// running and b is ready, it starts committing b on a new goroutine, which
// the scheduler runs on this Send's processor as soon as the Send waits: far
// cheaper than waking the parked committer, and the Send stays free to give
// up on FlushTimeout or its context while the fdatasync runs. Otherwise it
// arms b's deadline if b has none yet. It releases q.mu in every case.
func (q *Queue) lead(b *batch) {
	if q.committing {
		// Whoever commits looks at the pending batch when done.
		q.mu.Unlock()
		return
	}
	if !q.batchReady(b) {
		// The first Send of a batch arms its deadline on the committer's
		// timer: cheaper than waking the committer to do it.
		q.armDeadline(b, time.Now())
		q.mu.Unlock()
		return
	}
	q.startLead(b)
}

// armDeadline gives b, the pending batch, its deadline unless it has one,
// and sets the committer's timer to it. The caller holds q.mu. The timer
// always holds the pending batch's deadline, or is stopped: only the
// pending batch is armed, and swapping it out stops the timer.
func (q *Queue) armDeadline(b *batch, now time.Time) {
	if b.deadline.IsZero() {
		d := q.commitDelay()
		b.deadline = now.Add(d)
		q.commitTimer.Reset(d)
	}
}

// startLead swaps b, the pending batch, for an empty one and commits it on a
// new goroutine. The caller holds q.mu; startLead releases it.
func (q *Queue) startLead(b *batch) {
	q.committing = true
	q.pending = q.newBatch()
	q.pendingLive.Store(0)
	q.commitTimer.Stop()
	q.mu.Unlock()
	q.leaders.Add(1)
	go q.leadCommit(b)
}

// leave is called by a Send that is done, after it left inFlight: the
// pending batch may now hold every Send still in flight. It wakes the
// committer rather than committing: a producer that sends again is back
// before the committer runs, and its Send then completes the group.
// (Sequential consistency of the two atomics: either this load sees a
// Send that joined meanwhile, or that Send's readiness check sees this
// departure.)
func (q *Queue) leave() {
	if q.readyCount(q.pendingLive.Load(), q.inFlight.Load()) {
		q.nudge()
	}
}

// leadCommit commits b for a leading Send, then goes on with the pending
// batch while one is ready when a commit ends (Sends that joined during the
// write or the fdatasync), so that a steady stream needs no hand-off between
// goroutines; what is left is handed to the committer goroutine.
func (q *Queue) leadCommit(b *batch) {
	defer q.leaders.Done()
	for {
		q.commit(b)
		q.mu.Lock()
		if next := q.pending; next.live > 0 && q.batchReady(next) {
			q.pending = q.newBatch()
			q.pendingLive.Store(0)
			q.commitTimer.Stop()
			q.mu.Unlock()
			b = next
			continue
		}
		q.committing = false
		more := q.pending.live > 0 || q.closing
		q.mu.Unlock()
		if more {
			q.committerWaiting.Store(true)
			q.nudge()
		}
		return
	}
}

// nextBatch waits until the pending batch should be written, swaps it for an
// empty one and returns it; nil once the queue is closing and nothing is left.
func (q *Queue) nextBatch() *batch {
	q.mu.Lock()
	for {
		// Set before looking, so a Send that changes what we look at after
		// we looked is sure to wake us.
		q.committerWaiting.Store(true)
		b := q.pending
		if b.live == 0 && len(b.entries) > 0 {
			// Every Send in it gave up: nobody waits on it.
			b.buf, b.entries, b.cancelled, b.deadline = b.buf[:0], b.entries[:0], false, time.Time{}
			q.commitTimer.Stop()
		}
		if q.committing {
			// A Send is committing a batch itself; it nudges us when done.
		} else if b.live > 0 {
			ready := q.batchReady(b)
			if !ready {
				now := time.Now()
				q.armDeadline(b, now)
				ready = !now.Before(b.deadline)
			}
			if ready {
				q.committerWaiting.Store(false)
				q.committing = true
				q.pending = q.newBatch()
				q.pendingLive.Store(0)
				q.commitTimer.Stop()
				q.mu.Unlock()
				return b
			}
		} else if q.closing {
			q.mu.Unlock()
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-q.commitTimer.C:
		}
		q.mu.Lock()
	}
}

// commitDelay bounds how long the committer waits for in-flight Sends to join
// a batch: under FlushSync half the average fdatasync, between 20µs and 2ms;
// under FlushAsync 20µs, about the time of a few writes.
func (q *Queue) commitDelay() time.Duration {
	if q.opts.Flush == FlushAsync {
		return 20 * time.Microsecond
	}
	avg := q.log.AvgSyncTime() // atomics only: this runs under q.mu
	if avg == 0 {
		return 100 * time.Microsecond
	}
	return min(max(avg/2, 20*time.Microsecond), 2*time.Millisecond)
}

// commit writes b, answers its Sends' writes and, under FlushSync, syncs and
// answers their fdatasync.
func (q *Queue) commit(b *batch) {
	if b.cancelled {
		b.buf = compact(b.buf, b.entries)
	}
	first, n, err := q.log.Append(b.buf)
	b.err = err
	if q.opts.afterAppend != nil {
		q.opts.afterAppend()
	}
	q.indexFrames(b.buf, first, n, q.log.Offsets())
	if n > 0 && q.committedSeq() >= first {
		// The FlushAsync syncer published some of these frames before
		// they were in the index: a group that looked then found nothing
		// of its own, and waits for the committed seq to move. (A sync
		// that publishes them after this look finds them indexed.)
		q.wakeCommitted()
	}
	seq, index := first, 0
	for i := range b.entries {
		e := &b.entries[i]
		if e.cancelled {
			continue
		}
		e.first = seq
		e.appended = min(e.frames, max(n-index, 0))
		seq += uint64(e.appended)
		index += e.frames
	}
	if q.opts.MaxBytes > 0 {
		q.usedBytes.Store(q.log.DataBytes())
	}
	q.stats.batches.Add(1)
	// The buffer is free once written; keep it for the next batch.
	q.mu.Lock()
	if cap(b.buf) <= maxSpareBuffer {
		q.spareBuf = b.buf[:0]
	}
	q.mu.Unlock()
	b.buf = nil
	if q.opts.Replication == ReplicateSync && n > 0 {
		// One timer per batch: its Sends wait for the follower's ack together.
		b.replTimedOut = make(chan struct{})
		time.AfterFunc(q.opts.ReplicaTimeout, func() { close(b.replTimedOut) })
	}
	close(b.written)
	if b.synced == nil {
		return
	}
	if n > 0 {
		// One watchdog per batch, not a timer per Send: it tells the
		// waiting Sends when the fdatasync outlasts FlushTimeout.
		watchdog := time.AfterFunc(q.opts.FlushTimeout, func() { close(b.timedOut) })
		synced, err := q.log.Sync()
		watchdog.Stop()
		b.syncErr = err
		if err == nil {
			q.setSynced(synced)
		} else {
			q.logger.Error("zeroloss: fdatasync failed; the queue is poisoned", "error", err)
		}
		q.stats.recordGroup(b.live)
	}
	close(b.synced)
}

// maxSpareBuffer is the largest batch buffer kept for reuse.
const maxSpareBuffer = 8 << 20

// compact removes the frames of cancelled entries from buf, in place.
func compact(buf []byte, entries []batchEntry) []byte {
	out := buf[:0]
	for i := range entries {
		e := &entries[i]
		if e.cancelled {
			continue
		}
		start := len(out)
		out = append(out, buf[e.start:e.end]...) // never ahead of what it copies
		e.start, e.end = start, len(out)
	}
	return out
}

// syncLoop is the FlushAsync syncer: fdatasync every FlushInterval.
func (q *Queue) syncLoop() {
	defer close(q.syncerDone)
	var tick <-chan time.Time
	if !q.opts.manualTicks {
		ticker := time.NewTicker(q.opts.FlushInterval)
		defer ticker.Stop()
		tick = ticker.C
	}
	for {
		select {
		case <-tick:
			q.syncTick()
		case <-q.stopSyncer:
			return
		}
	}
}

// syncTick is one tick of the FlushAsync syncer: an fdatasync, and the
// committed seq moves to what it made durable.
func (q *Queue) syncTick() {
	if synced, err := q.log.Sync(); err == nil {
		q.setSynced(synced)
	}
}

// setCommitted publishes a new committed seq and wakes waiting Receives. The
// committed seq only moves up, whoever calls first (committer, syncer).
func (q *Queue) setCommitted(seq uint64) {
	for {
		cur := q.committed.Load()
		if seq <= cur {
			return
		}
		if q.committed.CompareAndSwap(cur, seq) {
			break
		}
	}
	if q.opts.Replication == ReplicateSync {
		q.log.CapReaders(seq) // consumers' readers stop at the committed mark
	}
	q.wakeCommitted()
}

// wakeCommitted wakes the Receives waiting for the committed seq to move.
func (q *Queue) wakeCommitted() {
	q.commitMu.Lock()
	close(q.commitCh)
	q.commitCh = make(chan struct{})
	q.commitMu.Unlock()
}

// committedChanged returns a channel closed when the committed seq next moves.
func (q *Queue) committedChanged() <-chan struct{} {
	q.commitMu.Lock()
	defer q.commitMu.Unlock()
	return q.commitCh
}

// committedSeq is the last durable seq: the most a reader may see.
func (q *Queue) committedSeq() uint64 { return q.committed.Load() }
