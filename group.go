package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// A consumer group's state. Every group receives every message of the main
// stream; the consumers of one group share its messages. The group's durable
// state is its records in the log (record.TypeGroup, TypeAck,
// TypeDeadLetter, on the group's stream id); what is in memory is rebuilt
// from them on Open (recoverGroups).
type group struct {
	q    *Queue
	id   uint16
	name string

	mu       sync.Mutex
	cursor   uint64              // next main-stream seq to consider for a first delivery
	reader   *wal.Reader         // positioned at cursor; nil until needed
	pending  map[uint64]*unacked // delivered (or due again), not acked
	attempts map[uint64]uint64   // attempt counts not yet written in an ack record
	marked   uint64              // the cursor last written in an ack record
	dead     int                 // dead letters written for the group
	changed  chan struct{}       // closed and replaced when pending changes
}

// unacked is a message of the group that was delivered and not acked yet.
type unacked struct {
	seq      uint64
	msg      Message
	attempt  int           // deliveries so far
	first    time.Time     // first delivery
	out      bool          // held by a consumer until deadline
	deadline time.Time     // ack deadline while out
	due      time.Time     // when not out: when to deliver again
	wait     time.Duration // the delay that set due; a clock jump back cannot stretch it
	timeout  time.Duration // the ack timeout that set deadline, likewise
	token    uint64        // changes on every delivery: stale Delivery handles
	dying    bool          // being dead-lettered
}

func newGroup(q *Queue, id uint16, name string, cursor uint64) *group {
	return &group{q: q, id: id, name: name, cursor: cursor, pending: map[uint64]*unacked{},
		attempts: map[uint64]uint64{}, changed: make(chan struct{})}
}

// notify wakes the Receives waiting on g (the caller holds g.mu).
func (g *group) notify() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// floor is the lowest main-stream seq the group may still deliver (the
// caller holds g.mu): every message below it is acked or dead-lettered.
func (g *group) floor() uint64 {
	f := g.cursor
	for s := range g.pending {
		f = min(f, s)
	}
	return f
}

// ackPayload encodes an ack record for seqs (the caller holds g.mu) and takes
// the attempt counts it carries.
func (g *group) ackPayload(seqs []uint64) []byte {
	a := record.Ack{Floor: g.floor(), Mark: g.cursor, Acked: append([]uint64(nil), seqs...)}
	for s, n := range g.attempts {
		a.Attempts = append(a.Attempts, record.Attempts{Seq: s, Count: n})
	}
	clear(g.attempts)
	g.marked = g.cursor
	return record.AppendAck(nil, &a)
}

// flushMarks writes an ack record, acking nothing, for every group whose
// delivered mark or attempt counts are not written yet, so that a restart
// counts their deliveries. Close calls it, and markLoop every second: a crash
// can undercount only the deliveries of the last second.
func (q *Queue) flushMarks(ctx context.Context) error {
	q.groupsMu.Lock()
	groups := make([]*group, 0, len(q.groups))
	for _, g := range q.groups {
		groups = append(groups, g)
	}
	q.groupsMu.Unlock()
	for _, g := range groups {
		g.mu.Lock()
		if g.cursor == g.marked && len(g.attempts) == 0 {
			g.mu.Unlock()
			continue
		}
		payload := g.ackPayload(nil)
		g.mu.Unlock()
		if err := g.writeRecord(ctx, record.TypeAck, payload); err != nil {
			return err
		}
	}
	return nil
}

// markLoop flushes delivered marks every second until Close.
func (q *Queue) markLoop() {
	defer close(q.markerDone)
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			if err := q.flushMarks(context.Background()); err != nil && !errors.Is(err, ErrClosed) {
				q.logger.Warn("zeroloss: could not write consumer marks", "error", err)
			}
		case <-q.done:
			return
		}
	}
}

// writeRecord appends one consumer record of the group and waits until it is
// as durable as the queue's flush mode promises.
func (g *group) writeRecord(ctx context.Context, typ record.Type, payload []byte) error {
	now := g.q.opts.now().UnixNano()
	size := int64(record.HeaderSize + len(payload))
	_, n, status, err := g.q.submit(ctx, size, 1, false, func(buf []byte) []byte {
		return record.AppendFrame(buf, typ, g.id, now, payload)
	})
	if err != nil {
		return err
	}
	if n == 1 && status != SendOK {
		return fmt.Errorf("zeroloss: group %q: %v record written but not confirmed durable (%v): %w",
			g.name, typ, status, ErrNotDurable)
	}
	return nil
}

// recoverGroups rebuilds every group from the log: the groups declared, and
// for each its delivered mark, its ack floor, what was acked above the floor
// and the attempt counts. Every message delivered and not acked before the
// stop is due again at once, with its attempts counted.
func (q *Queue) recoverGroups() error {
	type state struct {
		g        *group
		floor    uint64
		mark     uint64
		acked    map[uint64]bool
		attempts map[uint64]uint64
	}
	states := map[uint16]*state{}
	r := q.log.NewReader(0)
	defer r.Close()
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("zeroloss: recovering consumer groups: %w", err)
		}
		if rec.Stream == 0 {
			continue
		}
		switch rec.Type {
		case record.TypeGroup:
			gr, err := record.DecodeGroup(rec.Payload)
			if err != nil {
				return fmt.Errorf("zeroloss: group record at seq %d: %w", rec.Seq, err)
			}
			st := &state{g: newGroup(q, rec.Stream, gr.Name, gr.StartSeq), floor: gr.StartSeq, mark: gr.StartSeq,
				acked: map[uint64]bool{}, attempts: map[uint64]uint64{}}
			states[rec.Stream] = st
			q.groups[gr.Name] = st.g
			q.nextGroupID = max(q.nextGroupID, rec.Stream+1)
		case record.TypeDeadLetter:
			if st := states[rec.Stream]; st != nil {
				st.g.dead++
			}
		case record.TypeAck:
			st := states[rec.Stream]
			if st == nil {
				return fmt.Errorf("zeroloss: ack record at seq %d for undeclared group %d: %w", rec.Seq, rec.Stream, ErrCorrupt)
			}
			a, err := record.DecodeAck(rec.Payload)
			if err != nil {
				return fmt.Errorf("zeroloss: ack record at seq %d: %w", rec.Seq, err)
			}
			st.mark = max(st.mark, a.Mark)
			if a.Floor > st.floor {
				st.floor = a.Floor
				for s := range st.acked {
					if s < st.floor {
						delete(st.acked, s)
					}
				}
				for s := range st.attempts {
					if s < st.floor {
						delete(st.attempts, s)
					}
				}
			}
			for _, at := range a.Attempts {
				if at.Seq >= st.floor {
					st.attempts[at.Seq] = max(st.attempts[at.Seq], at.Count)
				}
			}
			for _, s := range a.Acked {
				if s >= st.floor {
					st.acked[s] = true
				}
			}
		}
	}
	// Messages in [floor, mark) not acked were delivered and not acked:
	// read them back and make them due now.
	now := q.opts.now()
	for _, st := range states {
		g := st.g
		g.cursor, g.marked = st.mark, st.mark
		if st.mark <= st.floor {
			continue
		}
		r := q.log.NewReader(st.floor)
		for {
			rec, err := r.Next()
			if err == io.EOF || (err == nil && rec.Seq >= st.mark) {
				break
			}
			if err != nil {
				r.Close()
				return fmt.Errorf("zeroloss: recovering group %q: %w", g.name, err)
			}
			if rec.Type != record.TypeMessage || rec.Stream != 0 || st.acked[rec.Seq] {
				continue
			}
			m, err := record.DecodeMessage(rec.Payload)
			if err != nil {
				r.Close()
				return fmt.Errorf("zeroloss: message at seq %d: %w", rec.Seq, err)
			}
			u := &unacked{seq: rec.Seq, msg: fromRecord(m), attempt: int(max(st.attempts[rec.Seq], 1)), first: now, due: now}
			if m.DeliverAt.After(now) && st.attempts[rec.Seq] == 0 {
				// A delayed message read but never delivered yet.
				u.attempt, u.due, u.wait = 0, m.DeliverAt, m.DeliverAt.Sub(now)
			}
			g.pending[rec.Seq] = u
		}
		r.Close()
		if n := len(g.pending); n > 0 {
			q.logger.Info("zeroloss: unacked messages will be delivered again", "group", g.name, "count", n)
		}
	}
	return nil
}

// groupNamed returns the group called name, declaring it durably if it is new.
func (q *Queue) groupNamed(ctx context.Context, name string, start StartPosition) (*group, error) {
	q.groupsMu.Lock()
	defer q.groupsMu.Unlock()
	if g := q.groups[name]; g != nil {
		return g, nil
	}
	if q.nextGroupID == 0 || q.nextGroupID == ^uint16(0) {
		return nil, fmt.Errorf("zeroloss: too many consumer groups: %w", ErrInvalidOptions)
	}
	startSeq := uint64(0)
	if start == StartLatest {
		startSeq = q.log.LastSeq() + 1
	}
	g := newGroup(q, q.nextGroupID, name, startSeq)
	if err := g.writeRecord(ctx, record.TypeGroup, record.AppendGroup(nil, &record.Group{Name: name, StartSeq: startSeq})); err != nil {
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
	return Message{ID: m.ID, Key: m.Key, Headers: m.Headers, Body: m.Body, DeliverAt: m.DeliverAt}
}

// GroupStats describes a consumer group at one moment.
type GroupStats struct {
	Group string
	// Behind is how many log positions lie between the group's cursor and
	// the committed seq: an upper bound on the messages not yet delivered
	// (consumer records take positions too).
	Behind uint64
	// InFlight counts messages held by consumers until their ack deadline.
	InFlight int
	// Waiting counts messages waiting to be delivered again (or, for a
	// DeliverAt in the future, for the first time).
	Waiting int
	// DeadLetters counts the group's dead letters.
	DeadLetters int
}

// stats reads g's counters.
func (g *group) stats(committed uint64) GroupStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := GroupStats{Group: g.name, DeadLetters: g.dead}
	if committed >= g.cursor {
		st.Behind = committed - g.cursor + 1
	}
	for _, u := range g.pending {
		if u.out {
			st.InFlight++
		} else {
			st.Waiting++
		}
	}
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
	for i, g := range groups {
		out[i] = g.stats(q.committedSeq())
	}
	return out
}
