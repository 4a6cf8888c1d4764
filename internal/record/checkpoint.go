package record

import (
	"encoding/binary"
)

// A checkpoint holds the queue's whole internal state as of its position in
// the log, so that the segments before it can be deleted (retention) and
// recovery can start from it. It is written as TypeCheckpoint parts (see
// SplitCheckpoint below); the payload they carry, as AppendCheckpoint
// encodes it (and as a format-1 checkpoint, one record, holds it), is a
// sequence of sections, each a tag and a length-prefixed body (uvarints):
//
//	tag 1  a consumer group, as GroupState below
//	tag 2  the dedup table: count n, n × (ID (uvarint length + bytes), seq, time (varint))
//	tag 3  pending transactional half messages: count n, n × (seq, time (varint),
//	       checks, length, message payload)
//	tag 4  the dedup table's entries on named topics: count n, n × (topic, ID
//	       (each uvarint length + bytes), seq, time (varint)); tag 2 holds the
//	       default topic's
//
// An unknown tag is an error: a reader that skipped state it does not
// understand would lose it. The group section is:
//
//	id, name (uvarint length + bytes), start, floor, mark
//	attempt count n, n × (position, count)
//	acked count m, m positions (uvarint deltas, ascending)
//	retry count r, r × (position, length, TypeRetry payload)
//	dead count d, d × (position, time (varint), length, TypeDeadLetter payload)
//	for a group on a named topic or with a tag filter: topic, tag count, tags
//	(as in a TypeGroup record)

// Checkpoint is a checkpoint's state.
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
	Topic string
	ID    string
	Seq   uint64
	Time  int64 // Unix nanoseconds of the append
}

// GroupState is one consumer group's durable state.
type GroupState struct {
	ID                 uint16
	Name               string
	Topic              string
	Tags               []string // sorted, no repeats; empty: every tag
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
	sectionGroup      = 1
	sectionDedup      = 2
	sectionHalf       = 3
	sectionTopicDedup = 4
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
	for _, section := range []uint64{sectionDedup, sectionTopicDedup} {
		named := section == sectionTopicDedup
		n := 0
		for _, e := range c.Dedup {
			if (e.Topic != "") == named {
				n++
			}
		}
		if n == 0 {
			continue
		}
		body = binary.AppendUvarint(body[:0], uint64(n))
		for _, e := range c.Dedup {
			if (e.Topic != "") != named {
				continue
			}
			if named {
				body = appendString(body, e.Topic)
			}
			body = appendString(body, e.ID)
			body = binary.AppendUvarint(body, e.Seq)
			body = binary.AppendVarint(body, e.Time)
		}
		dst = binary.AppendUvarint(dst, section)
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
	return appendSubscription(dst, g.Topic, g.Tags)
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
		if tag == sectionDedup || tag == sectionTopicDedup {
			d := decoder{p: body}
			for n := d.count(3); n > 0 && !d.bad; n-- {
				var e DedupEntry
				if tag == sectionTopicDedup {
					if e.Topic = d.string(); e.Topic == "" {
						return c, ErrBadConsumerRecord
					}
				}
				e.ID, e.Seq, e.Time = d.string(), d.uvarint(), d.varint()
				c.Dedup = append(c.Dedup, e)
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
	if dec.bad {
		return g, ErrBadConsumerRecord
	}
	var err error
	if g.Topic, g.Tags, err = decodeSubscription(dec.p); err != nil {
		return g, err
	}
	return g, nil
}

// Checkpoint parts (format 2). A checkpoint may outgrow a segment (it holds
// every dead letter and retry with its whole message), and a frame never
// spans segments, so the queue writes its payload, as AppendCheckpoint
// encodes it, cut into parts: consecutive TypeCheckpoint records each
// holding
//
//	0 (the part marker: a format-1 payload starts with a section tag, never 0),
//	checkpoint id, part index, part count (uvarints), then a piece of the payload
//
// A checkpoint counts only once every part is there, in order (index 0 to
// count-1, one id); the state it holds is as of its first part. A format-1
// checkpoint, one record holding the payload itself, is still read.
const partMarker = 0

// partHeaderMax is the most bytes a part's header takes.
const partHeaderMax = 1 + 3*binary.MaxVarintLen64

// SplitCheckpoint cuts payload (AppendCheckpoint's encoding) into the
// payloads of the parts of checkpoint id, each at most maxPart bytes
// (maxPart is at least 64).
func SplitCheckpoint(payload []byte, id uint64, maxPart int) [][]byte {
	room := max(maxPart-partHeaderMax, 1)
	count := max((len(payload)+room-1)/room, 1)
	parts := make([][]byte, 0, count)
	for i := 0; i < count; i++ {
		piece := payload[min(i*room, len(payload)):min((i+1)*room, len(payload))]
		p := make([]byte, 0, partHeaderMax+len(piece))
		p = append(p, partMarker)
		p = binary.AppendUvarint(p, id)
		p = binary.AppendUvarint(p, uint64(i))
		p = binary.AppendUvarint(p, uint64(count))
		parts = append(parts, append(p, piece...))
	}
	return parts
}

// CheckpointPart is a decoded part header; Data aliases the payload.
type CheckpointPart struct {
	ID, Index, Count uint64
	Data             []byte
}

// DecodeCheckpointPart decodes the payload of a TypeCheckpoint record: a
// part (ok), or a format-1 checkpoint (not ok, no error), whose payload
// DecodeCheckpoint reads as it is.
func DecodeCheckpointPart(p []byte) (part CheckpointPart, ok bool, err error) {
	if len(p) == 0 || p[0] != partMarker {
		return part, false, nil
	}
	d := decoder{p: p[1:]}
	part.ID, part.Index, part.Count = d.uvarint(), d.uvarint(), d.uvarint()
	if d.bad || part.Count == 0 || part.Index >= part.Count {
		return part, true, ErrBadConsumerRecord
	}
	part.Data = d.p
	return part, true, nil
}

// CheckpointJoiner puts checkpoints back together from the TypeCheckpoint
// records of a log, fed to Add in log order. A checkpoint whose parts are
// not all there (a crash cut its write short) is dropped when the next one
// starts.
type CheckpointJoiner struct {
	// HeadersOnly: track which checkpoints are whole without keeping
	// their payloads (Add returns a nil payload).
	HeadersOnly bool

	active   bool
	id, next uint64
	count    uint64
	start    uint64
	data     []byte
}

// Add takes the payload of the TypeCheckpoint record at seq. When the record
// completes a checkpoint, Add returns done, the seq of the checkpoint's first
// part, and its payload as AppendCheckpoint encoded it (unless HeadersOnly).
// The payload is only valid until the next call.
func (j *CheckpointJoiner) Add(seq uint64, p []byte) (payload []byte, start uint64, done bool, err error) {
	part, ok, err := DecodeCheckpointPart(p)
	if err != nil {
		j.active = false
		return nil, 0, false, err
	}
	if !ok { // format 1: whole in one record
		j.active = false
		if j.HeadersOnly {
			return nil, seq, true, nil
		}
		return p, seq, true, nil
	}
	switch {
	case part.Index == 0:
		j.active, j.id, j.count, j.next, j.start, j.data = true, part.ID, part.Count, 0, seq, j.data[:0]
	case !j.active || part.ID != j.id || part.Count != j.count || part.Index != j.next:
		j.active = false // a part of a checkpoint that is not whole
		return nil, 0, false, nil
	}
	j.next++
	if !j.HeadersOnly {
		j.data = append(j.data, part.Data...)
	}
	if j.next < j.count {
		return nil, 0, false, nil
	}
	j.active = false
	if j.HeadersOnly {
		return nil, j.start, true, nil
	}
	return j.data, j.start, true, nil
}
