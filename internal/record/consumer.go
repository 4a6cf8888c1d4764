package record

import (
	"encoding/binary"
	"errors"
	"slices"
)

// Consumer group records. A group's records carry its group id in the frame's
// stream field; their payloads are:
//
//	TypeGroup       name (uvarint length + bytes), start seq (uvarint), and
//	                for a group on a named topic or with a tag filter: topic
//	                (uvarint length + bytes), tag count, tags (each uvarint
//	                length + bytes, sorted, no repeats); without them the group
//	                reads the default topic, every tag (every group declared
//	                before topics existed)
//	TypeGroupDeleted  name (uvarint length + bytes): the group on this stream
//	                is deleted; records of its stream id after this one belong
//	                to a group declared anew (a TypeGroup record first)
//	TypeAck         floor, mark (uvarints), attempt count n, n × (seq, attempts),
//	                acked count m, m seqs (uvarint deltas, ascending)
//	TypeDeadLetter  seq, attempts (uvarints), reason (uvarint length + bytes),
//	                the message as in a TypeMessage payload
//
// In an ack record, floor says every main-stream message below it is acked or
// dead-lettered for the group, and mark that every main-stream message below
// it was delivered at least once: together they bound what recovery must
// look at. The attempt pairs record how often messages were delivered, so
// MaxDeliveries holds across restarts.

// ErrBadConsumerRecord means a consumer record payload does not decode.
var ErrBadConsumerRecord = errors.New("record: malformed consumer record payload")

// Group is the payload of a TypeGroup record.
type Group struct {
	Name     string
	StartSeq uint64
	Topic    string
	Tags     []string // sorted, no repeats; empty: every tag
}

// AppendGroup encodes g.
func AppendGroup(dst []byte, g *Group) []byte {
	dst = appendString(dst, g.Name)
	dst = binary.AppendUvarint(dst, g.StartSeq)
	return appendSubscription(dst, g.Topic, g.Tags)
}

// appendSubscription encodes a group's topic and tags, if it has any.
func appendSubscription(dst []byte, topic string, tags []string) []byte {
	if topic == "" && len(tags) == 0 {
		return dst
	}
	dst = appendString(dst, topic)
	dst = binary.AppendUvarint(dst, uint64(len(tags)))
	for _, t := range tags {
		dst = appendString(dst, t)
	}
	return dst
}

// decodeSubscription decodes what appendSubscription wrote (nothing, or a
// topic and tags); it must use all of p.
func decodeSubscription(p []byte) (topic string, tags []string, err error) {
	if len(p) == 0 {
		return "", nil, nil
	}
	dec := decoder{p: p}
	topic = dec.string()
	for n := dec.count(1); n > 0 && !dec.bad; n-- {
		t := dec.string()
		if len(tags) > 0 && t <= tags[len(tags)-1] {
			return "", nil, ErrBadConsumerRecord // one encoding: sorted, no repeats
		}
		tags = append(tags, t)
	}
	if dec.bad || len(dec.p) != 0 || (topic == "" && len(tags) == 0) {
		return "", nil, ErrBadConsumerRecord
	}
	return topic, tags, nil
}

// DecodeGroup decodes a TypeGroup payload.
func DecodeGroup(p []byte) (Group, error) {
	var g Group
	var err error
	if g.Name, p, err = readString(p); err != nil {
		return g, ErrBadConsumerRecord
	}
	v, n := binary.Uvarint(p)
	if n <= 0 {
		return g, ErrBadConsumerRecord
	}
	g.StartSeq = v
	if g.Topic, g.Tags, err = decodeSubscription(p[n:]); err != nil {
		return g, err
	}
	return g, nil
}

// AppendGroupDeleted encodes the payload of a TypeGroupDeleted record.
func AppendGroupDeleted(dst []byte, name string) []byte { return appendString(dst, name) }

// DecodeGroupDeleted decodes a TypeGroupDeleted payload: the group's name.
func DecodeGroupDeleted(p []byte) (string, error) {
	name, rest, err := readString(p)
	if err != nil || len(rest) != 0 {
		return "", ErrBadConsumerRecord
	}
	return name, nil
}

// Attempts is how many times a message was delivered.
type Attempts struct {
	Seq   uint64
	Count uint64
}

// Ack is the payload of a TypeAck record.
type Ack struct {
	Floor, Mark uint64
	Attempts    []Attempts
	Acked       []uint64 // ascending
}

// AppendAck encodes a; a.Acked is sorted in place.
func AppendAck(dst []byte, a *Ack) []byte {
	dst = binary.AppendUvarint(dst, a.Floor)
	dst = binary.AppendUvarint(dst, a.Mark)
	return appendAttemptsAndAcked(dst, a.Attempts, a.Acked)
}

// appendAttemptsAndAcked encodes attempt pairs and an acked list (sorted in
// place, as deltas): the part that ack records and checkpoints share.
func appendAttemptsAndAcked(dst []byte, attempts []Attempts, acked []uint64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(attempts)))
	for _, at := range attempts {
		dst = binary.AppendUvarint(dst, at.Seq)
		dst = binary.AppendUvarint(dst, at.Count)
	}
	slices.Sort(acked)
	dst = binary.AppendUvarint(dst, uint64(len(acked)))
	var prev uint64
	for _, s := range acked {
		dst = binary.AppendUvarint(dst, s-prev)
		prev = s
	}
	return dst
}

// DecodeAck decodes a TypeAck payload.
func DecodeAck(p []byte) (Ack, error) {
	var a Ack
	vals := func(n int) ([]uint64, bool) {
		out := make([]uint64, 0, n)
		for i := 0; i < n; i++ {
			v, k := binary.Uvarint(p)
			if k <= 0 {
				return nil, false
			}
			out = append(out, v)
			p = p[k:]
		}
		return out, true
	}
	head, ok := vals(3)
	if !ok {
		return a, ErrBadConsumerRecord
	}
	a.Floor, a.Mark = head[0], head[1]
	if head[2] > uint64(len(p)/2) { // each pair takes at least two bytes
		return a, ErrBadConsumerRecord
	}
	pairs, ok := vals(2 * int(head[2]))
	if !ok {
		return a, ErrBadConsumerRecord
	}
	for i := 0; i < len(pairs); i += 2 {
		a.Attempts = append(a.Attempts, Attempts{Seq: pairs[i], Count: pairs[i+1]})
	}
	count, ok := vals(1)
	if !ok || count[0] > uint64(len(p)) {
		return a, ErrBadConsumerRecord
	}
	deltas, ok := vals(int(count[0]))
	if !ok || len(p) != 0 {
		return a, ErrBadConsumerRecord
	}
	var prev uint64
	for _, d := range deltas {
		prev += d
		a.Acked = append(a.Acked, prev)
	}
	return a, nil
}

// DeadLetter is the payload of a TypeDeadLetter record. Source is the log
// position the message leaves (its main-stream seq, or the seq of the retry
// record that held it): the record also acks it for the group.
type DeadLetter struct {
	Seq      uint64 // the message's seq on the main stream
	Source   uint64
	Attempts uint64
	Reason   string
	Message  Message
}

// AppendDeadLetter encodes d.
func AppendDeadLetter(dst []byte, d *DeadLetter) []byte {
	dst = binary.AppendUvarint(dst, d.Seq)
	dst = binary.AppendUvarint(dst, d.Source)
	dst = binary.AppendUvarint(dst, d.Attempts)
	dst = appendString(dst, d.Reason)
	return AppendMessage(dst, &d.Message)
}

// DecodeDeadLetter decodes a TypeDeadLetter payload.
func DecodeDeadLetter(p []byte) (DeadLetter, error) {
	var d DeadLetter
	dec := decoder{p: p}
	d.Seq, d.Source, d.Attempts = dec.uvarint(), dec.uvarint(), dec.uvarint()
	d.Reason = dec.string()
	if dec.bad {
		return d, ErrBadConsumerRecord
	}
	var err error
	if d.Message, err = DecodeMessage(dec.p); err != nil {
		return d, err
	}
	return d, nil
}

// Retry is the payload of a TypeRetry record: a message moved to its
// group's retry stream, to be delivered again at Due. Source is the log
// position it leaves (its main-stream seq, the seq of the retry or dead-letter
// record that held it, or 0): the record also acks it for the group.
type Retry struct {
	Seq      uint64 // the message's seq on the main stream
	Source   uint64
	Attempts uint64 // deliveries so far
	Due      int64  // Unix nanoseconds
	First    int64  // Unix nanoseconds of the first delivery, 0 if none
	Message  Message
}

// AppendRetry encodes r.
func AppendRetry(dst []byte, r *Retry) []byte {
	dst = binary.AppendUvarint(dst, r.Seq)
	dst = binary.AppendUvarint(dst, r.Source)
	dst = binary.AppendUvarint(dst, r.Attempts)
	dst = binary.AppendVarint(dst, r.Due)
	dst = binary.AppendVarint(dst, r.First)
	return AppendMessage(dst, &r.Message)
}

// DecodeRetry decodes a TypeRetry payload.
func DecodeRetry(p []byte) (Retry, error) {
	var r Retry
	dec := decoder{p: p}
	r.Seq, r.Source, r.Attempts = dec.uvarint(), dec.uvarint(), dec.uvarint()
	r.Due, r.First = dec.varint(), dec.varint()
	if dec.bad {
		return r, ErrBadConsumerRecord
	}
	var err error
	if r.Message, err = DecodeMessage(dec.p); err != nil {
		return r, err
	}
	return r, nil
}

// decoder reads varints and strings from p; the first failure sets bad and
// every later read returns zero.
type decoder struct {
	p   []byte
	bad bool
}

func (d *decoder) uvarint() uint64 {
	if d.bad {
		return 0
	}
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.bad {
		return 0
	}
	v, n := binary.Varint(d.p)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decoder) string() string {
	return string(d.bytes())
}

// bytes reads a uvarint length and that many bytes (not copied).
func (d *decoder) bytes() []byte {
	l := d.uvarint()
	if d.bad || l > uint64(len(d.p)) {
		d.bad = true
		return nil
	}
	b := d.p[:l]
	d.p = d.p[l:]
	return b
}

// count reads a uvarint count of items each taking at least min bytes, and
// rejects one that the rest of the payload could not hold: decoding never
// allocates more than the payload justifies.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.p)/min) {
		d.bad = true
		return 0
	}
	return int(n)
}

// AppendFrame appends a whole frame of type typ on stream with the given
// payload; like AppendMessageFrame it leaves seq and checksum for SetSeq.
func AppendFrame(dst []byte, typ Type, stream uint16, t int64, payload []byte) []byte {
	start := len(dst)
	dst = grow(dst, HeaderSize)
	dst = append(dst, payload...)
	h := dst[start : start+HeaderSize]
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:8], 0)
	h[8] = Version
	h[9] = byte(typ)
	binary.LittleEndian.PutUint16(h[10:12], stream)
	binary.LittleEndian.PutUint32(h[12:16], 0)
	binary.LittleEndian.PutUint64(h[16:24], 0)
	binary.LittleEndian.PutUint64(h[24:32], uint64(t))
	return dst
}

// TxOp is the payload of a TypeTxOp record: a decision about the half
// message at seq Half (rollback), or a check-back that found it still
// undecided (check, with the number of checks so far). A commit is not a
// TxOp: it is the TypeMessage record with HalfSeq set, so that appending the
// message and resolving the half are one record.
type TxOp struct {
	Half   uint64
	Op     byte
	Checks uint64
}

// TxOp.Op values.
const (
	TxRollback byte = 1
	TxChecked  byte = 2
)

// AppendTxOp encodes o.
func AppendTxOp(dst []byte, o *TxOp) []byte {
	dst = binary.AppendUvarint(dst, o.Half)
	dst = append(dst, o.Op)
	return binary.AppendUvarint(dst, o.Checks)
}

// DecodeTxOp decodes a TypeTxOp payload.
func DecodeTxOp(p []byte) (TxOp, error) {
	var o TxOp
	d := decoder{p: p}
	o.Half = d.uvarint()
	if d.bad || len(d.p) < 1 {
		return o, ErrBadConsumerRecord
	}
	o.Op, d.p = d.p[0], d.p[1:]
	o.Checks = d.uvarint()
	if d.bad || len(d.p) != 0 || o.Half == 0 || (o.Op != TxRollback && o.Op != TxChecked) {
		return o, ErrBadConsumerRecord
	}
	return o, nil
}

// MaxReasonSize bounds the reason of a dead letter the queue writes.
const MaxReasonSize = 64

// MaxMoveOverhead is the most by which a record the queue writes about a
// message it holds exceeds the message's own frame: a TypeRetry record (five
// varints ahead of the message), a TypeDeadLetter (three uvarints and a
// reason of at most MaxReasonSize bytes with its length), or a committed
// transactional message (its half's seq, one uvarint more than the half). A
// segment that holds a message of the queue's largest size plus this holds
// every record about it.
const MaxMoveOverhead = max(5*binary.MaxVarintLen64,
	3*binary.MaxVarintLen64+1+MaxReasonSize,
	binary.MaxVarintLen64)
