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
// for its outcome before it claims anything; if the first was not appended,
// the second sends (a SendBatch its whole batch, in order).

type dedupTable struct {
	window time.Duration
	max    int

	mu      sync.Mutex
	byID    map[dedupKey]*dedupEntry
	order   []*dedupEntry // by claim time, oldest first, from head
	head    int
	pending int // entries of byID whose Send is not decided yet

	// recovering holds the entries recovered added, in the order it met
	// them (mostly by seq: the log's messages), some since replaced in
	// byID; nil once finishRecovery ran.
	recovering []*dedupEntry
	// logOnly: a checkpoint file's shadow (checkpointfile.go), which only
	// ever recovers and then says what it holds. recovered appends to
	// recovering without looking up byID; checkpointEntries sorts out
	// which entries count. A map lookup per message was most of the cost
	// of building a checkpoint file.
	logOnly bool

	evictions  uint64 // entries dropped for DedupEntries before their window ended
	duplicates uint64 // Sends answered as duplicates
}

// dedupKey is what the table deduplicates by: a message's ID within its
// topic (the same ID on two topics is two messages).
type dedupKey struct{ topic, id string }

type dedupEntry struct {
	key      dedupKey
	seq      uint64        // set once appended
	at       time.Time     // when appended (or claimed, until then)
	pending  bool          // the claiming Send does not know yet whether it appended
	wait     chan struct{} // made by the first Send waiting on a pending entry; closed when it is decided
	replaced *dedupEntry   // a commit's claim: the entry it hides, restored if it is dropped
	popped   bool          // out of order (expired, evicted or hidden when its turn came)
}

func newDedupTable(window time.Duration, max int) *dedupTable {
	return &dedupTable{window: window, max: max, byID: map[dedupKey]*dedupEntry{}}
}

// claimAll claims the IDs of one Send or SendBatch under one hold of the
// lock. An empty ids[i].id stands for a message that is not deduplicated here.
// entries[i] receives a new claim (fresh[i] set), which the caller must
// settle or drop, or the entry of an ID appended before (a duplicate).
//
// If one of the IDs is held by a Send not decided yet, claimAll claims
// nothing and returns that entry: the caller waits until it is decided
// (waitFor) and tries again. Otherwise a batch would have to append that
// message on its own, after the rest, if the other Send was withdrawn;
// and since a caller waits holding no claim, two batches cannot wait for
// each other.
func (t *dedupTable) claimAll(ids []dedupKey, now time.Time, entries []*dedupEntry, fresh []bool) (wait *dedupEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(now)
	for _, id := range ids {
		if e := t.byID[id]; id.id != "" && e != nil && e.pending {
			return e
		}
	}
	for i, id := range ids {
		entries[i], fresh[i] = nil, false
		if id.id == "" {
			continue
		}
		if e := t.byID[id]; e != nil {
			t.duplicates++
			entries[i] = e
			continue
		}
		entries[i], fresh[i] = &dedupEntry{key: id, at: now, pending: true}, true
		t.add(entries[i])
	}
	return nil
}

// claimCommit claims id for the commit of a transactional half, which is
// appended whatever the table holds (the commit record resolves the half):
// from its commit on, a committed half answers the Sends of its ID, as it
// does after a restart. An entry appended before is hidden by the claim and
// restored if the commit is not appended. If a Send not decided yet holds
// id, claimCommit claims nothing and returns that entry to wait for.
func (t *dedupTable) claimCommit(id dedupKey, now time.Time) (e, wait *dedupEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(now)
	old := t.byID[id]
	if old != nil && old.pending {
		return nil, old
	}
	e = &dedupEntry{key: id, at: now, pending: true, replaced: old}
	t.add(e)
	return e, nil
}

// add appends e (the caller holds mu). It evicts nothing: a claim that is
// not appended must not make the table forget an ID the log still holds (a
// restart would remember it), so the table evicts when an entry is settled
// (evict).
func (t *dedupTable) add(e *dedupEntry) {
	t.byID[e.key] = e
	t.order = append(t.order, e)
	if e.pending {
		t.pending++
	}
	if t.head > len(t.order)/2 && t.head > 1024 {
		t.order = append(t.order[:0], t.order[t.head:]...)
		t.head = 0
	}
}

// evict drops the oldest entries while the table holds more than max
// appended ones (the caller holds mu). It stops at an entry still being
// sent: the table may then hold a few more until that Send is decided.
func (t *dedupTable) evict() {
	for len(t.byID)-t.pending > t.max && t.head < len(t.order) {
		old := t.order[t.head]
		if t.byID[old.key] == old {
			if old.pending {
				return
			}
			delete(t.byID, old.key)
			t.evictions++
		}
		old.popped = true
		t.order[t.head] = nil
		t.head++
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
		e.popped = true
		t.order[t.head] = nil
		t.head++
		if t.byID[e.key] == e {
			delete(t.byID, e.key)
		}
	}
}

// settle records that e's message was appended at seq.
func (t *dedupTable) settle(e *dedupEntry, seq uint64, at time.Time) {
	t.mu.Lock()
	e.seq, e.at = seq, at
	t.decided(e)
	t.evict()
	t.mu.Unlock()
}

// decided marks e decided and wakes its waiters (the caller holds mu).
func (t *dedupTable) decided(e *dedupEntry) {
	e.pending = false
	t.pending--
	if e.wait != nil {
		close(e.wait)
	}
}

// drop records that e's message was not appended.
func (t *dedupTable) drop(e *dedupEntry) {
	t.mu.Lock()
	if t.byID[e.key] == e {
		if r := e.replaced; r != nil && !r.popped {
			t.byID[e.key] = r
		} else {
			delete(t.byID, e.key)
		}
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

// recovered adds an entry read back on Open: a message record of the log or
// an entry of a checkpoint, in the order recovery meets them (a checkpoint's
// entries are older than the messages after it, and may be older than the
// messages before it). Of two entries for one ID the later seq is kept, as
// the running table held it. finishRecovery then puts them in order.
func (t *dedupTable) recovered(id dedupKey, seq uint64, at time.Time, now time.Time) {
	if at.Before(now.Add(-t.window)) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recover(&dedupEntry{key: id, seq: seq, at: at})
}

// recoveredAll is recovered for each of a checkpoint's entries, in order,
// with the entries allocated together (Open loads up to DedupEntries of
// them from a checkpoint file).
func (t *dedupTable) recoveredAll(entries []record.DedupEntry, now time.Time) {
	since := now.Add(-t.window)
	block := make([]dedupEntry, len(entries))
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byID) == 0 && t.recovering == nil {
		t.byID = make(map[dedupKey]*dedupEntry, len(entries))
		t.recovering = make([]*dedupEntry, 0, len(entries))
	}
	for i, e := range entries {
		at := unixTime(e.Time)
		if at.Before(since) {
			continue
		}
		block[i] = dedupEntry{key: dedupKey{e.Topic, e.ID}, seq: e.Seq, at: at}
		t.recover(&block[i])
	}
}

// recover adds e, read back on Open (the caller holds mu).
func (t *dedupTable) recover(e *dedupEntry) {
	if t.logOnly {
		t.recovering = append(t.recovering, e)
		if len(t.recovering)/2 >= t.max {
			t.recovering = t.newestOfLog()
		}
		return
	}
	if old := t.byID[e.key]; old != nil && old.seq >= e.seq {
		return
	}
	t.byID[e.key] = e
	t.recovering = append(t.recovering, e)
	if len(t.recovering)/2 >= t.max { // (ReadDirState's max is 1<<62: no 2*max)
		t.recovering = t.keepNewest()
	}
}

// keepNewest keeps the DedupEntries entries read back with the highest seqs
// and returns them in seq order (the caller holds mu). recovered calls it
// whenever twice that many were added, so that Open holds and sorts a
// bounded number of IDs however many messages the log holds; finishRecovery
// keeps the same entries as without it: an entry dropped here had
// DedupEntries entries of other IDs above it, whose seqs only grow, and an
// entry of its ID read later with a lower seq is below them too. The entries
// are sorted in the order recovered met them, nearly sorted already.
func (t *dedupTable) keepNewest() []*dedupEntry {
	live := t.recovering[:0]
	for _, e := range t.recovering {
		if t.byID[e.key] == e {
			live = append(live, e)
		}
	}
	clear(t.recovering[len(live):])
	slices.SortFunc(live, func(a, b *dedupEntry) int { return compareSeq(a.seq, b.seq) })
	if over := len(live) - t.max; over > 0 {
		for _, e := range live[:over] {
			delete(t.byID, e.key)
		}
		live = live[over:]
	}
	return live
}

// finishRecovery orders the entries read back by seq, oldest first, and
// keeps the newest DedupEntries of them: what the running table held, since
// it evicted the oldest first too. (The running table's order is that of
// the claims: of Sends claiming at the same moment, the one appended first
// may be the one claimed second, so at the eviction boundary the two can
// differ by such a pair.)
func (t *dedupTable) finishRecovery() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.order, t.head = t.keepNewest(), 0
	t.recovering = nil
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

// newestOfLog is keepNewest for a logOnly table (the caller holds mu): of
// the entries recovered, for each ID the one with the highest seq, the
// DedupEntries with the highest seqs of those, in seq order.
func (t *dedupTable) newestOfLog() []*dedupEntry {
	slices.SortStableFunc(t.recovering, func(a, b *dedupEntry) int { return compareSeq(b.seq, a.seq) })
	seen := make(map[dedupKey]bool, min(len(t.recovering), t.max))
	keep := make([]*dedupEntry, 0, min(len(t.recovering), t.max))
	for _, e := range t.recovering {
		if len(keep) == t.max {
			break
		}
		if !seen[e.key] {
			seen[e.key] = true
			keep = append(keep, e)
		}
	}
	slices.Reverse(keep)
	return keep
}

// checkpointEntries returns what a checkpoint file holds of the table: the
// appended entries still in the window, oldest first. A table still
// recovering (a checkpoint file's shadow, whose replay goes on) gives the
// newest DedupEntries of those it recovered, as finishRecovery would keep.
func (t *dedupTable) checkpointEntries(now time.Time) []record.DedupEntry {
	t.mu.Lock()
	if t.recovering == nil {
		t.mu.Unlock()
		return t.snapshot(now)
	}
	defer t.mu.Unlock()
	if t.logOnly {
		t.recovering = t.newestOfLog()
	} else {
		t.recovering = t.keepNewest()
	}
	since := now.Add(-t.window)
	out := make([]record.DedupEntry, 0, len(t.recovering))
	for _, e := range t.recovering {
		if !e.at.Before(since) {
			out = append(out, record.DedupEntry{Topic: e.key.topic, ID: e.key.id, Seq: e.seq, Time: e.at.UnixNano()})
		}
	}
	return out
}

// snapshot returns the appended entries still in the window, for a checkpoint.
func (t *dedupTable) snapshot(now time.Time) []record.DedupEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(now)
	var out []record.DedupEntry
	for _, e := range t.order[t.head:] {
		if t.byID[e.key] == e && e.seq != 0 && !e.pending {
			out = append(out, record.DedupEntry{Topic: e.key.topic, ID: e.key.id, Seq: e.seq, Time: e.at.UnixNano()})
		}
	}
	return out
}

func (t *dedupTable) counts() (entries int, evictions, duplicates uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID), t.evictions, t.duplicates
}

// duplicate answers a Send of a message whose ID e holds (appended before):
// the original seq and its durability now, waiting for it like a Send would.
func (q *Queue) duplicate(ctx context.Context, e *dedupEntry) SendResult {
	return SendResult{Seq: e.seq, ID: e.key.id, Status: q.durableStatus(ctx, e.seq), Duplicate: true}
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
