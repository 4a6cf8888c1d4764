package record

import (
	"encoding/binary"
)

// A TypeCheckpoint record holds the queue's whole internal state as of its
// position in the log, so that the segments before it can be deleted
// (retention) and recovery can start from it. Its payload is a sequence of
// sections, each a tag and a length-prefixed body (uvarints):
//
//	tag 1  a consumer group, as GroupState below
//	tag 2  the dedup table: count n, n × (ID (uvarint length + bytes), seq, time (varint))
//	tag 3  pending transactional half messages: count n, n × (seq, time (varint),
//	       checks, length, message payload)
//
// An unknown tag is an error: a reader that skipped state it does not
// understand would lose it. The group section is:
//
//	id, name (uvarint length + bytes), start, floor, mark
//	attempt count n, n × (position, count)
//	acked count m, m positions (uvarint deltas, ascending)
//	retry count r, r × (position, length, TypeRetry payload)
//	dead count d, d × (position, time (varint), length, TypeDeadLetter payload)

// Checkpoint is the payload of a TypeCheckpoint record.
type Checkpoint struct {
	Groups []GroupState
	Dedup  []DedupEntry
	Halves []HalfState
}

// HalfState is a transactional half message not yet committed or rolled
// back, at log position Seq.
type HalfState struct {
	Seq     uint64
	Time    int64 // Unix nanoseconds of the half's append
	Checks  uint64
	Message Message
}

// DedupEntry is a message ID the queue remembers for deduplication.
type DedupEntry struct {
	ID   string
	Seq  uint64
	Time int64 // Unix nanoseconds of the append
}

// GroupState is one consumer group's durable state.
type GroupState struct {
	ID                 uint16
	Name               string
	Start, Floor, Mark uint64
	Attempts           []Attempts
	Acked              []uint64 // positions at or above Floor, ascending
	Retries            []RetryState
	Dead               []DeadState
}

// RetryState is a message in a group's retry stream, at log position Pos.
type RetryState struct {
	Pos   uint64
	Retry Retry
}

// DeadState is a dead letter of a group, first written at log position Pos.
type DeadState struct {
	Pos        uint64
	Time       int64 // Unix nanoseconds when it was dead-lettered
	DeadLetter DeadLetter
}

const (
	sectionGroup = 1
	sectionDedup = 2
	sectionHalf  = 3
)

// AppendCheckpoint encodes c; slices in it are sorted in place.
func AppendCheckpoint(dst []byte, c *Checkpoint) []byte {
	var body []byte
	for i := range c.Groups {
		body = appendGroupState(body[:0], &c.Groups[i])
		dst = binary.AppendUvarint(dst, sectionGroup)
		dst = binary.AppendUvarint(dst, uint64(len(body)))
		dst = append(dst, body...)
	}
	if len(c.Dedup) > 0 {
		body = binary.AppendUvarint(body[:0], uint64(len(c.Dedup)))
		for _, e := range c.Dedup {
			body = appendString(body, e.ID)
			body = binary.AppendUvarint(body, e.Seq)
			body = binary.AppendVarint(body, e.Time)
		}
		dst = binary.AppendUvarint(dst, sectionDedup)
		dst = binary.AppendUvarint(dst, uint64(len(body)))
		dst = append(dst, body...)
	}
	if len(c.Halves) > 0 {
		body = binary.AppendUvarint(body[:0], uint64(len(c.Halves)))
		var item []byte
		for i := range c.Halves {
			h := &c.Halves[i]
			body = binary.AppendUvarint(body, h.Seq)
			body = binary.AppendVarint(body, h.Time)
			body = binary.AppendUvarint(body, h.Checks)
			item = AppendMessage(item[:0], &h.Message)
			body = binary.AppendUvarint(body, uint64(len(item)))
			body = append(body, item...)
		}
		dst = binary.AppendUvarint(dst, sectionHalf)
		dst = binary.AppendUvarint(dst, uint64(len(body)))
		dst = append(dst, body...)
	}
	return dst
}

func appendGroupState(dst []byte, g *GroupState) []byte {
	dst = binary.AppendUvarint(dst, uint64(g.ID))
	dst = appendString(dst, g.Name)
	dst = binary.AppendUvarint(dst, g.Start)
	dst = binary.AppendUvarint(dst, g.Floor)
	dst = binary.AppendUvarint(dst, g.Mark)
	dst = appendAttemptsAndAcked(dst, g.Attempts, g.Acked)
	var item []byte
	dst = binary.AppendUvarint(dst, uint64(len(g.Retries)))
	for i := range g.Retries {
		r := &g.Retries[i]
		dst = binary.AppendUvarint(dst, r.Pos)
		item = AppendRetry(item[:0], &r.Retry)
		dst = binary.AppendUvarint(dst, uint64(len(item)))
		dst = append(dst, item...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(g.Dead)))
	for i := range g.Dead {
		d := &g.Dead[i]
		dst = binary.AppendUvarint(dst, d.Pos)
		dst = binary.AppendVarint(dst, d.Time)
		item = AppendDeadLetter(item[:0], &d.DeadLetter)
		dst = binary.AppendUvarint(dst, uint64(len(item)))
		dst = append(dst, item...)
	}
	return dst
}

// DecodeCheckpoint decodes a TypeCheckpoint payload.
func DecodeCheckpoint(p []byte) (Checkpoint, error) {
	var c Checkpoint
	dec := decoder{p: p}
	for len(dec.p) > 0 && !dec.bad {
		tag := dec.uvarint()
		body := dec.bytes()
		if dec.bad {
			break
		}
		if tag == sectionDedup {
			d := decoder{p: body}
			for n := d.count(3); n > 0 && !d.bad; n-- {
				c.Dedup = append(c.Dedup, DedupEntry{ID: d.string(), Seq: d.uvarint(), Time: d.varint()})
			}
			if d.bad || len(d.p) != 0 {
				return c, ErrBadConsumerRecord
			}
			continue
		}
		if tag == sectionHalf {
			d := decoder{p: body}
			for n := d.count(4); n > 0 && !d.bad; n-- {
				h := HalfState{Seq: d.uvarint(), Time: d.varint(), Checks: d.uvarint()}
				item := d.bytes()
				if d.bad {
					break
				}
				m, err := DecodeMessage(item)
				if err != nil {
					return c, ErrBadConsumerRecord
				}
				h.Message = m
				c.Halves = append(c.Halves, h)
			}
			if d.bad || len(d.p) != 0 {
				return c, ErrBadConsumerRecord
			}
			continue
		}
		if tag != sectionGroup {
			return c, ErrBadConsumerRecord
		}
		g, err := decodeGroupState(body)
		if err != nil {
			return c, err
		}
		c.Groups = append(c.Groups, g)
	}
	if dec.bad {
		return c, ErrBadConsumerRecord
	}
	return c, nil
}

func decodeGroupState(p []byte) (GroupState, error) {
	var g GroupState
	dec := decoder{p: p}
	id := dec.uvarint()
	if id > 0xffff {
		return g, ErrBadConsumerRecord
	}
	g.ID = uint16(id)
	g.Name = dec.string()
	g.Start, g.Floor, g.Mark = dec.uvarint(), dec.uvarint(), dec.uvarint()
	for n := dec.count(2); n > 0; n-- {
		g.Attempts = append(g.Attempts, Attempts{Seq: dec.uvarint(), Count: dec.uvarint()})
	}
	var prev uint64
	for n := dec.count(1); n > 0; n-- {
		prev += dec.uvarint()
		g.Acked = append(g.Acked, prev)
	}
	for n := dec.count(3); n > 0 && !dec.bad; n-- {
		pos := dec.uvarint()
		item := dec.bytes()
		if dec.bad {
			break
		}
		r, err := DecodeRetry(item)
		if err != nil {
			return g, ErrBadConsumerRecord
		}
		g.Retries = append(g.Retries, RetryState{Pos: pos, Retry: r})
	}
	for n := dec.count(4); n > 0 && !dec.bad; n-- {
		pos, t := dec.uvarint(), dec.varint()
		item := dec.bytes()
		if dec.bad {
			break
		}
		d, err := DecodeDeadLetter(item)
		if err != nil {
			return g, ErrBadConsumerRecord
		}
		g.Dead = append(g.Dead, DeadState{Pos: pos, Time: t, DeadLetter: d})
	}
	if dec.bad || len(dec.p) != 0 {
		return g, ErrBadConsumerRecord
	}
	return g, nil
}
