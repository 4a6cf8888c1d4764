package record

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sample() Record {
	return Record{Type: TypeMessage, Stream: 3, Epoch: 7, Seq: 42, Time: 1234567890, Payload: []byte("hello")}
}

func TestRoundTrip(t *testing.T) {
	for _, r := range []Record{sample(), {Type: TypeNoop, Seq: 1}, {Type: TypeAck, Seq: ^uint64(0), Time: -1, Payload: make([]byte, 1000)}} {
		buf := Append(nil, &r)
		require.Len(t, buf, r.Size())
		got, n, err := Decode(buf, 0)
		require.NoError(t, err)
		assert.Equal(t, len(buf), n)
		assert.Equal(t, r.Type, got.Type)
		assert.Equal(t, r.Stream, got.Stream)
		assert.Equal(t, r.Epoch, got.Epoch)
		assert.Equal(t, r.Seq, got.Seq)
		assert.Equal(t, r.Time, got.Time)
		assert.Equal(t, len(r.Payload), len(got.Payload))
		assert.True(t, bytes.Equal(r.Payload, got.Payload))
	}
}

func TestDecodeDistinguishesEndTornAndCorrupt(t *testing.T) {
	r := sample()
	frame := Append(nil, &r)

	_, _, err := Decode(make([]byte, 64), 0)
	assert.ErrorIs(t, err, ErrCleanEnd, "zeroed space is a clean end")
	_, _, err = Decode(make([]byte, 5), 0)
	assert.ErrorIs(t, err, ErrCleanEnd, "a short zero tail is a clean end")

	_, _, err = Decode(frame[:HeaderSize-1], 0)
	assert.ErrorIs(t, err, ErrTruncated, "partial header")
	_, _, err = Decode(frame[:len(frame)-1], 0)
	assert.ErrorIs(t, err, ErrTruncated, "partial payload")

	for i := range frame {
		bad := bytes.Clone(frame)
		bad[i] ^= 0x10
		_, _, err := Decode(bad, 0)
		require.Error(t, err, "flipping a bit in byte %d must be detected", i)
		assert.NotErrorIs(t, err, ErrCleanEnd)
	}

	// A torn write into zeroed space: the header landed, the payload did not.
	torn := make([]byte, len(frame)+16)
	copy(torn, frame[:HeaderSize])
	_, _, err = Decode(torn, 0)
	assert.ErrorIs(t, err, ErrChecksum)
}

func TestDecodeRejectsImpossibleHeaders(t *testing.T) {
	r := sample()
	frame := Append(nil, &r)
	tests := map[string]func(b []byte){
		"version 0":    func(b []byte) { b[8] = 0 },
		"version 2":    func(b []byte) { b[8] = 2 },
		"type 0":       func(b []byte) { b[9] = 0 },
		"unknown type": func(b []byte) { b[9] = 200 },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			b := bytes.Clone(frame)
			mutate(b)
			_, _, err := Decode(b, 0)
			assert.ErrorIs(t, err, ErrInvalid)
		})
	}
	_, _, err := Decode(frame, len(frame)-1)
	assert.ErrorIs(t, err, ErrInvalid, "frame above maxSize")
}

func TestSetSeq(t *testing.T) {
	r := sample()
	frame := Append(nil, &r)
	SetSeq(frame, 99)
	got, _, err := Decode(frame, 0)
	require.NoError(t, err)
	assert.Equal(t, uint64(99), got.Seq)
}

// countingReaderAt records the largest single read, to prove allocations are
// bounded by the file, not by a corrupt length field.
type countingReaderAt struct {
	data    []byte
	maxRead int
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > c.maxRead {
		c.maxRead = len(p)
	}
	if off >= int64(len(c.data)) {
		return 0, io.EOF
	}
	n := copy(p, c.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestReaderSequenceAndBounds(t *testing.T) {
	var file []byte
	for i := 1; i <= 100; i++ {
		r := Record{Type: TypeMessage, Seq: uint64(i), Payload: bytes.Repeat([]byte{byte(i)}, i*50)}
		file = Append(file, &r)
	}
	end := len(file)
	file = append(file, make([]byte, 4096)...) // preallocated zeros

	rd := NewReader(bytes.NewReader(file), 0, int64(len(file)), 0)
	for i := 1; i <= 100; i++ {
		rec, err := rd.Next()
		require.NoError(t, err)
		require.Equal(t, uint64(i), rec.Seq)
		require.Len(t, rec.Payload, i*50)
	}
	assert.Equal(t, int64(end), rd.Offset())
	_, err := rd.Next()
	assert.ErrorIs(t, err, ErrCleanEnd)
	assert.Equal(t, int64(end), rd.Offset(), "offset stays at the end")

	// A header announcing 4 GiB in a small file: truncated, no big allocation.
	r := Record{Type: TypeMessage, Seq: 1, Payload: []byte("x")}
	bad := Append(nil, &r)
	bad[0], bad[1], bad[2], bad[3] = 0xff, 0xff, 0xff, 0xff
	bad = append(bad, make([]byte, 100)...)
	c := &countingReaderAt{data: bad}
	_, err = NewReader(c, 0, int64(len(bad)), 0).Next()
	assert.ErrorIs(t, err, ErrTruncated)
	assert.LessOrEqual(t, c.maxRead, len(bad))
}

func TestMessageRoundTrip(t *testing.T) {
	msgs := []Message{
		{},
		{ID: "id-1", Key: "k", Body: []byte("body")},
		{ID: "x", Headers: map[string]string{"a": "1", "": "", "long": string(make([]byte, 300))}, Body: make([]byte, 70000)},
		{ID: "later", DeliverAt: time.Unix(0, 1700000000123456789).UTC()},
	}
	for _, m := range msgs {
		buf := AppendMessage(nil, &m)
		require.Len(t, buf, MessageSize(&m))
		got, err := DecodeMessage(buf)
		require.NoError(t, err)
		assert.Equal(t, m, got)
	}
}

func TestDecodeMessageRejectsGarbage(t *testing.T) {
	m := Message{ID: "id", Key: "key", Headers: map[string]string{"h": "v"}, Body: []byte("b")}
	buf := AppendMessage(nil, &m)
	for i := 1; i < len(buf)-1; i++ {
		// Every prefix that cuts a length-prefixed field must fail, not panic.
		_, _ = DecodeMessage(buf[:i])
	}
	_, err := DecodeMessage(nil)
	assert.ErrorIs(t, err, ErrBadMessage)
	_, err = DecodeMessage([]byte{0x80})
	assert.ErrorIs(t, err, ErrBadMessage, "unknown flag")
	_, err = DecodeMessage([]byte{0, 0x05, 'a'})
	assert.ErrorIs(t, err, ErrBadMessage, "ID longer than payload")
	_, err = DecodeMessage([]byte{0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	assert.ErrorIs(t, err, ErrBadMessage, "header count beyond payload")
}

func TestAppendMessageFrame(t *testing.T) {
	m := Message{ID: "i", Key: "k", Headers: map[string]string{"a": "b"}, Body: []byte("body")}
	frame := AppendMessageFrame(make([]byte, 0, 8), 2, 3, 99, &m)
	require.Len(t, frame, HeaderSize+MessageSize(&m))
	_, _, err := Decode(frame, 0)
	require.ErrorIs(t, err, ErrChecksum, "the checksum is left for SetSeq")
	SetSeq(frame, 7)
	rec, _, err := Decode(frame, 0)
	require.NoError(t, err)
	assert.Equal(t, TypeMessage, rec.Type)
	assert.Equal(t, uint16(2), rec.Stream)
	assert.Equal(t, uint32(3), rec.Epoch)
	assert.Equal(t, uint64(7), rec.Seq)
	assert.Equal(t, int64(99), rec.Time)
	got, err := DecodeMessage(rec.Payload)
	require.NoError(t, err)
	assert.Equal(t, m, got)
}

func TestMessageIDReadsOnlyTheID(t *testing.T) {
	for _, m := range []Message{
		{ID: "given", Body: []byte("b")},
		{ID: "made-up", GeneratedID: true, DeliverAt: time.Unix(5, 0), Key: "k"},
	} {
		p := AppendMessage(nil, &m)
		id, generated, err := MessageID(p)
		require.NoError(t, err)
		assert.Equal(t, m.ID, id)
		assert.Equal(t, m.GeneratedID, generated)
		back, err := DecodeMessage(p)
		require.NoError(t, err)
		assert.Equal(t, m.GeneratedID, back.GeneratedID)
	}
	_, _, err := MessageID([]byte{0x80})
	assert.ErrorIs(t, err, ErrBadMessage)
	_, _, err = MessageID([]byte{flagDeliverAt, 1})
	assert.ErrorIs(t, err, ErrBadMessage)
}
