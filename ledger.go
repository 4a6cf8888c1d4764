package zeroloss

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// The ledger is the consumer state the log holds: what recovery would rebuild
// from the log right now. It is built by applying consumer records (group
// declarations, acks, retries, dead letters, checkpoints) one by one: at Open
// in log order, and at run time as each record is appended (group.writeRecord).
//
// At run time records are applied as their writes complete, which need not
// be log order; applying is built to be order-insensitive for records that
// can be in flight together (floors and marks only rise, acked sets and
// attempt counts merge by max, and a retry or dead-letter record moves a
// message that no other record can touch while it moves). The one record
// that must see everything before it is the checkpoint: it is written under
// recMu's write lock, so no other consumer record is in flight while it is
// taken and written (see retain.go).
//
// A group deletion record (Queue.DeleteGroup) drops the group: it is written
// with recMu held exclusively, like a checkpoint, so no record of the group
// is in flight around it and none follows it.
//
// Positions: every message a group still owes is at a log position: its
// main-stream seq, or the seq of the retry or dead-letter record that holds
// it. Acks name positions, so one ack record can ack main-stream messages,
// retries and (purging them) dead letters alike.
type ledger struct {
	mu     sync.Mutex
	groups map[uint16]*ledgerGroup
}

// ledgerGroup is one group's durable state.
type ledgerGroup struct {
	id                 uint16
	name               string
	sel                selection // the topic and tags it reads
	start, floor, mark uint64
	attempts           map[uint64]uint64 // position → deliveries, at or above floor
	acked              map[uint64]bool   // main-stream positions acked, at or above floor
	retries            map[uint64]*record.Retry
	dead               map[uint64]*deadEntry
}

type deadEntry struct {
	time int64 // Unix nanoseconds
	dl   record.DeadLetter
}

func newLedger() *ledger { return &ledger{groups: map[uint16]*ledgerGroup{}} }

func newLedgerGroup(id uint16, name string, sel selection, start uint64) *ledgerGroup {
	return &ledgerGroup{id: id, name: name, sel: sel, start: start, floor: start, mark: start,
		attempts: map[uint64]uint64{}, acked: map[uint64]bool{},
		retries: map[uint64]*record.Retry{}, dead: map[uint64]*deadEntry{}}
}

// apply applies one consumer record (stream != 0) to the ledger.
func (l *ledger) apply(rec *record.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rec.Type == record.TypeGroup {
		gr, err := record.DecodeGroup(rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: group record at seq %d: %w", rec.Seq, err)
		}
		l.groups[rec.Stream] = newLedgerGroup(rec.Stream, gr.Name, selection{topic: gr.Topic, tags: gr.Tags}, gr.StartSeq)
		return nil
	}
	g := l.groups[rec.Stream]
	if g == nil {
		return fmt.Errorf("zeroloss: %v record at seq %d for undeclared group %d: %w", rec.Type, rec.Seq, rec.Stream, ErrCorrupt)
	}
	switch rec.Type {
	case record.TypeGroupDeleted:
		name, err := record.DecodeGroupDeleted(rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: group deletion record at seq %d: %w", rec.Seq, err)
		}
		if name != g.name {
			return fmt.Errorf("zeroloss: group deletion record at seq %d names group %q, but stream %d is group %q: %w",
				rec.Seq, name, rec.Stream, g.name, ErrCorrupt)
		}
		delete(l.groups, rec.Stream)
	case record.TypeAck:
		a, err := record.DecodeAck(rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: ack record at seq %d: %w", rec.Seq, err)
		}
		g.mark = max(g.mark, a.Mark)
		if a.Floor > g.floor {
			g.floor = a.Floor
			maps.DeleteFunc(g.acked, func(s uint64, _ bool) bool { return s < g.floor })
			// Retry positions may lie below the floor: their counts stay.
			maps.DeleteFunc(g.attempts, func(s uint64, _ uint64) bool { return s < g.floor && g.retries[s] == nil })
		}
		for _, at := range a.Attempts {
			if at.Seq >= g.floor || g.retries[at.Seq] != nil {
				g.attempts[at.Seq] = max(g.attempts[at.Seq], at.Count)
			}
		}
		for _, s := range a.Acked {
			g.leave(s)
		}
	case record.TypeRetry:
		r, err := record.DecodeRetry(rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: retry record at seq %d: %w", rec.Seq, err)
		}
		g.leave(r.Source)
		g.retries[rec.Seq] = &r
	case record.TypeDeadLetter:
		d, err := record.DecodeDeadLetter(rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: dead letter at seq %d: %w", rec.Seq, err)
		}
		g.leave(d.Source)
		g.dead[rec.Seq] = &deadEntry{time: rec.Time, dl: d}
	default:
		return fmt.Errorf("zeroloss: unexpected %v record at seq %d on group stream %d: %w", rec.Type, rec.Seq, rec.Stream, ErrCorrupt)
	}
	return nil
}

// applyAfterGap applies a consumer record that follows a gap in a
// follower's copy (records its leader deleted before the copy got them), before
// any checkpoint after the gap (see replayState). Only what cannot drop a
// message the copy holds is applied: a group declaration; a retry or dead
// letter of a known group (the message moves to a record the copy holds);
// the positions an ack record acks (the message there is done). An ack
// record's floor, mark and attempt counts are not: a floor may have moved
// past messages that went to the retry stream in the gap. It returns false
// for a record of a group the copy does not know (declared in the gap),
// which it ignores. A deletion naming another group than the one the copy
// knows under its id is such a record: the known group was deleted in the
// gap and, after a restart of the leader, its id given to a new one.
func (l *ledger) applyAfterGap(rec *record.Record) (known bool, err error) {
	l.mu.Lock()
	g := l.groups[rec.Stream]
	l.mu.Unlock()
	switch {
	case rec.Type == record.TypeGroup:
		return true, l.apply(rec)
	case g == nil:
		return false, nil
	case rec.Type == record.TypeGroupDeleted:
		name, err := record.DecodeGroupDeleted(rec.Payload)
		if err != nil {
			return true, fmt.Errorf("zeroloss: group deletion record at seq %d: %w", rec.Seq, err)
		}
		if name != g.name {
			return false, nil
		}
		return true, l.apply(rec)
	case rec.Type != record.TypeAck:
		return true, l.apply(rec)
	}
	a, err := record.DecodeAck(rec.Payload)
	if err != nil {
		return true, fmt.Errorf("zeroloss: ack record at seq %d: %w", rec.Seq, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range a.Acked {
		g.leave(s)
	}
	return true, nil
}

// leave records that the group is done with position pos: a retry or dead
// letter held there goes, a main-stream message there is acked.
func (g *ledgerGroup) leave(pos uint64) {
	switch {
	case pos == 0:
	case g.retries[pos] != nil:
		delete(g.retries, pos)
		delete(g.attempts, pos)
	case g.dead[pos] != nil:
		delete(g.dead, pos)
	case pos >= g.floor:
		g.acked[pos] = true
	}
}

// checkpoint returns the whole ledger as a checkpoint payload.
func (l *ledger) checkpoint() record.Checkpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	var c record.Checkpoint
	for _, id := range slices.Sorted(maps.Keys(l.groups)) {
		g := l.groups[id]
		gs := record.GroupState{ID: g.id, Name: g.name, Topic: g.sel.topic, Tags: g.sel.tags, Start: g.start, Floor: g.floor, Mark: g.mark,
			Acked: slices.Collect(maps.Keys(g.acked))}
		for _, s := range slices.Sorted(maps.Keys(g.attempts)) {
			gs.Attempts = append(gs.Attempts, record.Attempts{Seq: s, Count: g.attempts[s]})
		}
		for _, pos := range slices.Sorted(maps.Keys(g.retries)) {
			gs.Retries = append(gs.Retries, record.RetryState{Pos: pos, Retry: *g.retries[pos]})
		}
		for _, pos := range slices.Sorted(maps.Keys(g.dead)) {
			d := g.dead[pos]
			gs.Dead = append(gs.Dead, record.DeadState{Pos: pos, Time: d.time, DeadLetter: d.dl})
		}
		c.Groups = append(c.Groups, gs)
	}
	return c
}

// load replaces the ledger with a checkpoint's state (replay joins its
// parts; see record.CheckpointJoiner).
func (l *ledger) load(c *record.Checkpoint) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.restore(c)
}

// restore replaces the ledger with a checkpoint's state (the caller holds mu).
func (l *ledger) restore(c *record.Checkpoint) {
	clear(l.groups)
	for i := range c.Groups {
		gs := &c.Groups[i]
		g := newLedgerGroup(gs.ID, gs.Name, selection{topic: gs.Topic, tags: gs.Tags}, gs.Start)
		g.floor, g.mark = gs.Floor, gs.Mark
		for _, a := range gs.Attempts {
			g.attempts[a.Seq] = a.Count
		}
		for _, s := range gs.Acked {
			g.acked[s] = true
		}
		for j := range gs.Retries {
			r := gs.Retries[j].Retry
			g.retries[gs.Retries[j].Pos] = &r
		}
		for _, d := range gs.Dead {
			g.dead[d.Pos] = &deadEntry{time: d.Time, dl: d.DeadLetter}
		}
		l.groups[g.id] = g
	}
}

// minFloor returns the lowest floor of all groups, and false if there are
// no groups.
func (l *ledger) minFloor() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var floor uint64
	ok := false
	for _, g := range l.groups {
		if !ok || g.floor < floor {
			floor, ok = g.floor, true
		}
	}
	return floor, ok
}

// topics returns the topics the groups read.
func (l *ledger) topics() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]bool, len(l.groups))
	for _, g := range l.groups {
		out[g.sel.topic] = true
	}
	return out
}

// floors returns every group's floor, by name.
func (l *ledger) floors() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]uint64, len(l.groups))
	for _, g := range l.groups {
		out[g.name] = g.floor
	}
	return out
}

// deadLetters returns the dead letters of group id, by position.
func (l *ledger) deadLetters(id uint16) []DeadLetter {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.groups[id]
	if g == nil {
		return nil
	}
	out := make([]DeadLetter, 0, len(g.dead))
	for _, pos := range slices.Sorted(maps.Keys(g.dead)) {
		d := g.dead[pos]
		out = append(out, DeadLetter{Pos: pos, Seq: d.dl.Seq, Attempts: int(d.dl.Attempts), Reason: d.dl.Reason,
			Message: fromRecord(d.dl.Message), Time: unixTime(d.time)})
	}
	return out
}

// deadCount returns how many dead letters group id holds.
func (l *ledger) deadCount(id uint16) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.groups[id]; g != nil {
		return len(g.dead)
	}
	return 0
}
