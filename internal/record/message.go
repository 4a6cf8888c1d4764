package record

import (
	"encoding/binary"
	"errors"
	"time"
)

// Message is the content of a TypeMessage record. See the package comment for
// its encoding.
type Message struct {
	ID        string
	Topic     string // "" is the default topic
	Tag       string
	Key       string
	Headers   map[string]string
	Body      []byte
	DeliverAt time.Time // zero: deliver at once
	// GeneratedID says the ID is not remembered for deduplication (flag
	// bit 1): the queue made it up, or the sender opted the message out
	// (zeroloss.Message.NoDedup).
	GeneratedID bool
	// HalfSeq, on a TypeMessage record, is the seq of the transactional
	// half message this record commits (flag bit 2); 0 otherwise.
	HalfSeq uint64
}

const (
	flagDeliverAt   = 1 << 0
	flagGeneratedID = 1 << 1 // the queue made the ID up: no deduplication by it
	flagHalf        = 1 << 2 // a committed transactional message: the half's seq follows
	flagRoute       = 1 << 3 // topic and tag follow (after the half's seq)
	knownFlags      = flagDeliverAt | flagGeneratedID | flagHalf | flagRoute
)

// ErrBadMessage means a message payload does not decode.
var ErrBadMessage = errors.New("record: malformed message payload")

// MessageSize returns the encoded size of m's payload, without the frame header.
func MessageSize(m *Message) int {
	n := 1 + uvarintLen(uint64(len(m.ID))) + len(m.ID) +
		uvarintLen(uint64(len(m.Key))) + len(m.Key) +
		uvarintLen(uint64(len(m.Headers)))
	for k, v := range m.Headers {
		n += uvarintLen(uint64(len(k))) + len(k) + uvarintLen(uint64(len(v))) + len(v)
	}
	if !m.DeliverAt.IsZero() {
		n += 8
	}
	if m.HalfSeq != 0 {
		n += uvarintLen(m.HalfSeq)
	}
	if m.Topic != "" || m.Tag != "" {
		n += uvarintLen(uint64(len(m.Topic))) + len(m.Topic) + uvarintLen(uint64(len(m.Tag))) + len(m.Tag)
	}
	return n + len(m.Body)
}

// AppendMessage encodes m and appends it to dst.
func AppendMessage(dst []byte, m *Message) []byte {
	var flags byte
	if !m.DeliverAt.IsZero() {
		flags |= flagDeliverAt
	}
	if m.GeneratedID {
		flags |= flagGeneratedID
	}
	if m.HalfSeq != 0 {
		flags |= flagHalf
	}
	if m.Topic != "" || m.Tag != "" {
		flags |= flagRoute
	}
	dst = append(dst, flags)
	if flags&flagDeliverAt != 0 {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(m.DeliverAt.UnixNano()))
	}
	if flags&flagHalf != 0 {
		dst = binary.AppendUvarint(dst, m.HalfSeq)
	}
	if flags&flagRoute != 0 {
		dst = appendString(dst, m.Topic)
		dst = appendString(dst, m.Tag)
	}
	dst = appendString(dst, m.ID)
	dst = appendString(dst, m.Key)
	dst = binary.AppendUvarint(dst, uint64(len(m.Headers)))
	for k, v := range m.Headers {
		dst = appendString(dst, k)
		dst = appendString(dst, v)
	}
	return append(dst, m.Body...)
}

// MessageID returns the ID of a message payload without decoding the rest,
// and whether the queue generated it.
func MessageID(payload []byte) (id string, generated bool, err error) {
	id, generated, _, err = MessageMeta(payload)
	return id, generated, err
}

// MessageMeta returns the ID of a message payload, whether the queue
// generated it and the half message it commits (0 if none), without
// decoding the rest.
func MessageMeta(payload []byte) (id string, generated bool, half uint64, err error) {
	h, err := readHead(payload)
	if err != nil {
		return "", false, 0, err
	}
	id, _, err = readString(h.rest)
	return id, h.flags&flagGeneratedID != 0, h.half, err
}

// MessageRoute returns the topic and tag of a message payload without
// decoding the rest. The slices alias payload.
func MessageRoute(payload []byte) (topic, tag []byte, err error) {
	h, err := readHead(payload)
	return h.topic, h.tag, err
}

// head is the fixed part of a message payload before its ID.
type head struct {
	flags      byte
	deliverAt  int64
	half       uint64
	topic, tag []byte
	rest       []byte // from the ID on
}

func readHead(payload []byte) (head, error) {
	var h head
	if len(payload) < 1 || payload[0]&^knownFlags != 0 {
		return h, ErrBadMessage
	}
	h.flags = payload[0]
	p := payload[1:]
	if h.flags&flagDeliverAt != 0 {
		if len(p) < 8 {
			return h, ErrBadMessage
		}
		h.deliverAt = int64(binary.LittleEndian.Uint64(p))
		p = p[8:]
	}
	if h.flags&flagHalf != 0 {
		v, n := binary.Uvarint(p)
		if n <= 0 || v == 0 {
			return h, ErrBadMessage
		}
		h.half, p = v, p[n:]
	}
	if h.flags&flagRoute != 0 {
		var err error
		if h.topic, p, err = readBytes(p); err != nil {
			return h, err
		}
		if h.tag, p, err = readBytes(p); err != nil {
			return h, err
		}
		if len(h.topic) == 0 && len(h.tag) == 0 {
			return h, ErrBadMessage // one encoding per message: no empty route
		}
	}
	h.rest = p
	return h, nil
}

// DecodeMessage decodes a message payload. Strings and Body are copied, so the
// result does not alias payload.
func DecodeMessage(payload []byte) (Message, error) {
	var m Message
	h, err := readHead(payload)
	if err != nil {
		return m, err
	}
	m.GeneratedID = h.flags&flagGeneratedID != 0
	if h.flags&flagDeliverAt != 0 {
		m.DeliverAt = time.Unix(0, h.deliverAt).UTC()
	}
	m.HalfSeq = h.half
	m.Topic, m.Tag = string(h.topic), string(h.tag)
	p := h.rest
	if m.ID, p, err = readString(p); err != nil {
		return m, err
	}
	if m.Key, p, err = readString(p); err != nil {
		return m, err
	}
	count, n := binary.Uvarint(p)
	if n <= 0 {
		return m, ErrBadMessage
	}
	p = p[n:]
	// Each header takes at least two bytes, which bounds the map allocation.
	if count > uint64(len(p)/2) {
		return m, ErrBadMessage
	}
	if count > 0 {
		m.Headers = make(map[string]string, count)
		for i := uint64(0); i < count; i++ {
			var k, v string
			if k, p, err = readString(p); err != nil {
				return m, err
			}
			if v, p, err = readString(p); err != nil {
				return m, err
			}
			m.Headers[k] = v
		}
	}
	if len(p) > 0 {
		m.Body = append([]byte(nil), p...)
	}
	return m, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func readBytes(p []byte) ([]byte, []byte, error) {
	l, n := binary.Uvarint(p)
	if n <= 0 || l > uint64(len(p)-n) {
		return nil, nil, ErrBadMessage
	}
	end := n + int(l)
	return p[n:end], p[end:], nil
}

func readString(p []byte) (string, []byte, error) {
	l, n := binary.Uvarint(p)
	if n <= 0 || l > uint64(len(p)-n) {
		return "", nil, ErrBadMessage
	}
	end := n + int(l)
	return string(p[n:end]), p[end:], nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// AppendMessageFrame appends a whole TypeMessage frame for m to dst in one
// pass: header, then the encoded message. The seq is left 0 and the checksum
// is not computed: the log assigns the seq with SetSeq, which also writes the
// checksum.
func AppendMessageFrame(dst []byte, stream uint16, epoch uint32, t int64, m *Message) []byte {
	return AppendMessageFrameType(dst, TypeMessage, stream, epoch, t, m)
}

// AppendMessageFrameType is AppendMessageFrame for another record type that
// carries a message (TypeHalf).
func AppendMessageFrameType(dst []byte, typ Type, stream uint16, epoch uint32, t int64, m *Message) []byte {
	start := len(dst)
	dst = grow(dst, HeaderSize)
	dst = AppendMessage(dst, m)
	h := dst[start : start+HeaderSize]
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(dst)-start-HeaderSize))
	binary.LittleEndian.PutUint32(h[4:8], 0)
	h[8] = Version
	h[9] = byte(typ)
	binary.LittleEndian.PutUint16(h[10:12], stream)
	binary.LittleEndian.PutUint32(h[12:16], epoch)
	binary.LittleEndian.PutUint64(h[16:24], 0)
	binary.LittleEndian.PutUint64(h[24:32], uint64(t))
	return dst
}
