package zeroloss

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// Idempotent send. A message whose ID the caller set is remembered for
// Options.DedupWindow (at most Options.DedupEntries IDs, oldest evicted
// first and counted); sending the same ID again within the window appends
// nothing and answers with the original seq, Duplicate set and the
// original's real durability status. The table is rebuilt on Open from the
// log itself (messages appended within the window, read in the same pass as
// the consumer records) and from the last checkpoint (for messages whose
// segments retention deleted), so it never holds an ID the log lost: a
// resend after a power loss is appended again, not dropped.
//
// Two Sends of one ID at once: the first claims the ID and the second waits
// for its outcome; if the first was not appended, the second sends.

type dedupTable struct {
	window time.Duration
	max    int

	mu    sync.Mutex
	byID  map[string]*dedupEntry
	order []*dedupEntry // by claim time, oldest first, from head
	head  int

	evictions  uint64 // entries dropped for DedupEntries before their window ended
	duplicates uint64 // Sends answered as duplicates
}

type dedupEntry struct {
	id      string
	seq     uint64        // set once appended
	at      time.Time     // when appended (or claimed, until then)
	pending bool          // the claiming Send does not know yet whether it appended
	wait    chan struct{} // made by the first Send waiting on a pending entry; closed when it is decided
	gone    bool          // not appended: the entry was dropped
}

func newDedupTable(window time.Duration, max int) *dedupTable {
	return &dedupTable{window: window, max: max, byID: map[string]*dedupEntry{}}
}

// claim returns the entry for id if the window still holds it, or claims id
// for the caller (new = true), who must settle or drop the entry.
func (t *dedupTable) claim(id string, now time.Time) (e *dedupEntry, new bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(now)
	if e := t.byID[id]; e != nil {
		t.duplicates++
		return e, false
	}
	e = &dedupEntry{id: id, at: now, pending: true}
	t.add(e)
	return e, true
}

// add appends e (the caller holds mu), evicting the oldest entry if full.
func (t *dedupTable) add(e *dedupEntry) {
	for len(t.byID) >= t.max && t.head < len(t.order) {
		old := t.order[t.head]
		t.order[t.head] = nil
		t.head++
		if t.byID[old.id] == old {
			delete(t.byID, old.id)
			t.evictions++
		}
	}
	t.byID[e.id] = e
	t.order = append(t.order, e)
	if t.head > len(t.order)/2 && t.head > 1024 {
		t.order = append(t.order[:0], t.order[t.head:]...)
		t.head = 0
	}
}

// expire drops entries older than the window (the caller holds mu). An
// entry still being sent is kept.
func (t *dedupTable) expire(now time.Time) {
	limit := now.Add(-t.window)
	for t.head < len(t.order) {
		e := t.order[t.head]
		if !e.at.Before(limit) || e.pending {
			return
		}
		t.order[t.head] = nil
		t.head++
		if t.byID[e.id] == e {
			delete(t.byID, e.id)
		}
	}
}

// settle records that e's message was appended at seq.
func (t *dedupTable) settle(e *dedupEntry, seq uint64, at time.Time) {
	t.mu.Lock()
	e.seq, e.at = seq, at
	t.decided(e)
	t.mu.Unlock()
}

// decided marks e decided and wakes its waiters (the caller holds mu).
func (t *dedupTable) decided(e *dedupEntry) {
	e.pending = false
	if e.wait != nil {
		close(e.wait)
	}
}

// drop records that e's message was not appended.
func (t *dedupTable) drop(e *dedupEntry) {
	t.mu.Lock()
	e.gone = true
	if t.byID[e.id] == e {
		delete(t.byID, e.id)
	}
	t.decided(e)
	t.mu.Unlock()
}

// waitFor returns a channel closed once e is decided, or nil if it is.
func (t *dedupTable) waitFor(e *dedupEntry) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !e.pending {
		return nil
	}
	if e.wait == nil {
		e.wait = make(chan struct{})
	}
	return e.wait
}

// recovered adds an entry read back on Open.
func (t *dedupTable) recovered(id string, seq uint64, at time.Time, now time.Time) {
	if at.Before(now.Add(-t.window)) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.byID[id]; old != nil && old.seq <= seq {
		return
	}
	t.add(&dedupEntry{id: id, seq: seq, at: at})
}

// sortRecovered orders the entries read back by seq, oldest first, so that
// expiry and eviction see them in order (a checkpoint's entries come after
// the log's older messages in a scan).
func (t *dedupTable) sortRecovered() {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := t.order[:0]
	for _, e := range t.order[t.head:] {
		if t.byID[e.id] == e {
			live = append(live, e)
		}
	}
	slices.SortFunc(live, func(a, b *dedupEntry) int { return compareSeq(a.seq, b.seq) })
	clear(t.order[len(live):])
	t.order, t.head = live, 0
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// snapshot returns the appended entries still in the window, for a checkpoint.
func (t *dedupTable) snapshot(now time.Time) []record.DedupEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(now)
	var out []record.DedupEntry
	for _, e := range t.order[t.head:] {
		if t.byID[e.id] == e && e.seq != 0 && !e.pending {
			out = append(out, record.DedupEntry{ID: e.id, Seq: e.seq, Time: e.at.UnixNano()})
		}
	}
	return out
}

func (t *dedupTable) counts() (entries int, evictions, duplicates uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID), t.evictions, t.duplicates
}

// duplicate answers a Send of a message whose ID e holds: the original seq
// and its durability now, waiting for it like a Send would. ok is false if
// the original was not appended after all (the caller sends it).
func (q *Queue) duplicate(ctx context.Context, e *dedupEntry) (res SendResult, ok bool, err error) {
	if wait := q.dedup.waitFor(e); wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return SendResult{}, false, ctx.Err()
		}
	}
	q.dedup.mu.Lock()
	gone := e.gone
	q.dedup.mu.Unlock()
	if gone {
		return SendResult{}, false, nil
	}
	return SendResult{Seq: e.seq, ID: e.id, Status: q.durableStatus(ctx, e.seq), Duplicate: true}, true, nil
}

// durableStatus is the status a Send of seq would report now: SendOK once it
// is durable as the flush and replication modes promise (FlushAsync alone:
// written, which it is). Otherwise it waits for that, at most FlushTimeout
// (plus ReplicaTimeout under ReplicateSync), then reports FlushDiskTimeout,
// or FlushReplicaTimeout if the leader has it and the follower does not;
// ReplicaNotAvailable at once if no follower is attached; FlushDiskTimeout at
// once if the queue is poisoned; WaitCanceled if ctx ends first.
func (q *Queue) durableStatus(ctx context.Context, seq uint64) SendStatus {
	replicated := q.opts.Replication == ReplicateSync
	if q.opts.Flush == FlushAsync && !replicated {
		return SendOK
	}
	onLeader := func() bool { return q.log.SyncedSeq() >= seq || q.opts.Flush == FlushAsync }
	// Like a Send: FlushTimeout for the leader's fdatasync, then
	// ReplicaTimeout for the follower's ack.
	replPhase := replicated && onLeader()
	timer := time.NewTimer(q.opts.FlushTimeout)
	if replPhase {
		timer.Reset(q.opts.ReplicaTimeout)
	}
	defer timer.Stop()
	for {
		changed := q.committedChanged()
		var replChanged <-chan struct{}
		if q.committedSeq() >= seq {
			return SendOK
		}
		if q.log.Err() != nil {
			return FlushDiskTimeout // poisoned: the sync will never come
		}
		if replicated && onLeader() {
			if !replPhase {
				replPhase = true
				timer.Stop()
				timer.Reset(q.opts.ReplicaTimeout)
			}
			var attached bool
			replChanged, attached = q.repl.watch()
			if !attached {
				return ReplicaNotAvailable
			}
		}
		select {
		case <-changed:
			continue
		case <-replChanged:
			continue
		case <-timer.C:
		case <-ctx.Done():
			q.stats.waitsCanceled.Add(1)
			return WaitCanceled
		case <-q.done:
		}
		if replPhase {
			return FlushReplicaTimeout
		}
		return FlushDiskTimeout
	}
}
