package zeroloss

import (
	"cmp"
	"slices"
	"sort"
	"time"
)

// Ordered consumption (ConsumerOptions.Ordered).
//
// An ordered group keeps one keyLine per key that has something pending:
// its messages in seq order. Only the line's head is in g.pending, so only
// it can be delivered; the messages behind it wait in g.blocked, where
// Receive does not look. When the head leaves (acked, dead-lettered, or
// skipped by forced retention) the next message of the key becomes the head
// and the group is notified. A failed head stays the head wherever it is
// held (at its main-stream position, or moved to the retry stream: the line
// follows the message, not its position), so the key's later messages wait
// behind its retries. A key whose line empties is forgotten: keys with
// nothing pending cost nothing.
//
// The group reads the main stream past blocked keys, for other keys, but
// holds at most maxBlocked messages behind heads: past that it reads no
// further until a key moves on, which bounds the memory a slow key takes.

// maxBlocked is how many messages an ordered group holds behind their keys'
// heads before it stops reading the main stream ahead.
const maxBlocked = 4096

// keyLine is one key's messages in an ordered group, in seq order.
type keyLine struct {
	head   *unacked   // in g.pending: the one message of the key that may be delivered
	behind []*unacked // in g.blocked, by seq
}

// keyed says whether u's delivery is ordered by its key.
func (g *group) keyed(u *unacked) bool { return g.ordered && u.msg.Key != "" }

// put adds u to what the group owes at u.pos (the caller holds g.mu). In an
// ordered group a message whose key has a head already waits behind it, in
// seq order (a re-driven dead letter with an older seq goes right behind
// the head, which may be in a consumer's hands); put reports whether u can
// be delivered (it is in pending).
func (g *group) put(u *unacked) bool {
	if !g.keyed(u) {
		g.pending[u.pos] = u
		return true
	}
	l := g.lines[u.msg.Key]
	if l == nil {
		g.lines[u.msg.Key] = &keyLine{head: u}
		g.pending[u.pos] = u
		return true
	}
	i := sort.Search(len(l.behind), func(i int) bool { return l.behind[i].seq > u.seq })
	l.behind = slices.Insert(l.behind, i, u)
	g.blocked[u.pos] = u
	return false
}

// drop takes u out of what the group owes (the caller holds g.mu). If u was
// its key's head, the next message of the key becomes the head and due.
func (g *group) drop(u *unacked) {
	delete(g.pending, u.pos)
	if !g.keyed(u) {
		return
	}
	l := g.lines[u.msg.Key]
	if l == nil {
		return
	}
	if l.head != u {
		if i := slices.Index(l.behind, u); i >= 0 {
			l.behind = slices.Delete(l.behind, i, i+1)
			delete(g.blocked, u.pos)
		}
		return
	}
	if len(l.behind) == 0 {
		delete(g.lines, u.msg.Key)
		return
	}
	next := l.behind[0]
	l.behind[0] = nil
	l.behind = l.behind[1:]
	delete(g.blocked, next.pos)
	l.head = next
	g.pending[next.pos] = next
	g.notify()
}

// owes returns the message the group owes at pos, delivered or blocked
// behind its key's head (the caller holds g.mu).
func (g *group) owes(pos uint64) *unacked {
	if u := g.pending[pos]; u != nil {
		return u
	}
	return g.blocked[pos]
}

// setOrdered sets whether the group delivers in key order. The group's
// first Consumer in this process decides (none can have delivered before
// it); a later one asking otherwise is refused. Ordered is not part of the
// group's durable declaration: it changes the order in which the group hands
// out what it owes, never what it owes, so it may change across restarts.
// The messages the group owes when it becomes ordered (rebuilt by
// recoverGroups, or re-driven) are put in key order here.
func (g *group) setOrdered(ordered bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.modeSet {
		if g.ordered != ordered {
			return invalid("Ordered", "is %v, but group %q already has a consumer in this process with Ordered %v", ordered, g.name, g.ordered)
		}
		return nil
	}
	g.modeSet, g.ordered = true, ordered
	if !ordered {
		return nil
	}
	g.lines, g.blocked = map[string]*keyLine{}, map[uint64]*unacked{}
	owed := make([]*unacked, 0, len(g.pending))
	for _, u := range g.pending {
		owed = append(owed, u)
	}
	slices.SortFunc(owed, func(a, b *unacked) int { return cmp.Compare(a.seq, b.seq) })
	clear(g.pending)
	for _, u := range owed {
		g.put(u)
	}
	g.notify()
	return nil
}

// blockedBehind marks u, just read from the main stream and blocked behind
// its key's head (the caller holds g.mu), as never delivered: like a
// delayed message, the group's ack records carry an attempt count of 0 for
// it until it is delivered, so that a restart does not count a delivery it
// never had. A future DeliverAt is its due time once it is the head.
func (g *group) blockedBehind(u *unacked, now time.Time) {
	u.delayed = true
	g.attempts[u.pos] = 0
	if u.msg.DeliverAt.After(now) {
		u.due, u.wait = u.msg.DeliverAt, u.msg.DeliverAt.Sub(now)
	}
}

// blockedKeys counts the keys whose head has failed a delivery and is not
// acked yet (waiting for its backoff, or delivered again), and the age of
// the oldest of them: how long since its head was first delivered (the
// caller holds g.mu).
func (g *group) blockedKeys(now time.Time) (n int, oldest time.Duration) {
	for _, l := range g.lines {
		h := l.head
		if h.attempt == 0 || (h.attempt == 1 && h.out) {
			continue // not failed yet
		}
		n++
		oldest = max(oldest, now.Sub(h.first))
	}
	return n, oldest
}
