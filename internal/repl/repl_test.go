package repl

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
)

func frames(seqs ...uint64) []byte {
	var buf []byte
	for _, s := range seqs {
		buf = record.Append(buf, &record.Record{Type: record.TypeMessage, Seq: s, Time: int64(s), Payload: []byte("body")})
	}
	return buf
}

func samples() []Message {
	return []Message{
		{Type: TypeHello, Hello: Hello{Version: Version, Nonce: [NonceSize]byte{1, 2, 3, 31: 9}}},
		{Type: TypeAuth, Auth: Auth{Version: Version, Queue: [16]byte{4, 15: 5}, Nonce: [NonceSize]byte{7, 31: 8},
			Epoch: Epoch{Num: 3, ID: 9, Start: 1 << 32, PrevLast: 40}, MAC: [MACSize]byte{0xaa, 31: 0xbb}}},
		{Type: TypePosition, Position: Position{MAC: [MACSize]byte{1, 31: 2}, MaxFrame: 4 << 20, LastSeq: 42,
			Epochs: []Epoch{{Num: 1, ID: 7, Start: 1}, {Num: 3, ID: 9, Start: 1 << 32, PrevLast: 40}}}},
		{Type: TypeWelcome, Welcome: Welcome{Version: Version, From: 43, Epochs: []Epoch{{Num: 1, ID: 7, Start: 1}}}},
		{Type: TypePosition, Position: Position{MaxFrame: 1 << 10}},
		{Type: TypeFrames, Frames: frames(43, 44, 50), FirstSeq: 43, LastSeq: 50, Count: 3},
		{Type: TypeAck, Seq: 50},
		{Type: TypeTrim, Seq: 20},
		{Type: TypeCheckpoint, Frames: frames(60, 61), FirstSeq: 60, LastSeq: 61, Count: 2},
		{Type: TypeError, Text: "follower accepts frames of 64 bytes, leader needs 4194304"},
	}
}

func TestRoundTrip(t *testing.T) {
	var stream []byte
	for _, m := range samples() {
		stream = AppendMessage(stream, &m)
	}
	r := bytes.NewReader(stream)
	for _, want := range samples() {
		got, err := ReadMessage(r, MaxBody(4<<20))
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := ReadMessage(r, MaxBody(4<<20))
	assert.Equal(t, io.EOF, err, "a clean end between messages")
}

func TestMalformedMessages(t *testing.T) {
	good := AppendMessage(nil, &Message{Type: TypeFrames, Frames: frames(1, 2)})
	read := func(b []byte, limit int) error {
		_, err := ReadMessage(bytes.NewReader(b), limit)
		return err
	}
	require.NoError(t, read(good, MaxBody(1024)))

	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 0x40
	assert.ErrorIs(t, read(flipped, MaxBody(1024)), ErrChecksum)

	assert.ErrorIs(t, read(good, 20), ErrTooLarge, "a body above the reader's limit")
	assert.ErrorIs(t, read(good[:len(good)-3], MaxBody(1024)), io.ErrUnexpectedEOF)

	// A frame damaged inside a message whose envelope is intact: the
	// frame's own CRC catches it (end to end).
	inner := frames(1, 2)
	inner[record.HeaderSize+1] ^= 1
	err := read(AppendMessage(nil, &Message{Type: TypeFrames, Frames: inner}), MaxBody(1024))
	assert.ErrorIs(t, err, ErrMalformed)
	assert.ErrorIs(t, err, record.ErrChecksum)

	err = read(AppendMessage(nil, &Message{Type: TypeFrames, Frames: frames(5, 4)}), MaxBody(1024))
	assert.ErrorIs(t, err, ErrOutOfOrder)
	err = read(AppendMessage(nil, &Message{Type: TypeFrames, Frames: frames(0)}), MaxBody(1024))
	assert.ErrorIs(t, err, ErrOutOfOrder, "seq 0 is never a frame's")

	big := record.Append(nil, &record.Record{Type: record.TypeMessage, Seq: 1, Payload: make([]byte, 100)})
	_, _, _, err = CheckFrames(big, 64, 0)
	assert.ErrorIs(t, err, ErrTooLarge, "a frame above the follower's limit")
	_, _, _, err = CheckFrames(frames(3), 0, 3)
	assert.ErrorIs(t, err, ErrOutOfOrder, "not above what the follower has")
	assert.ErrorIs(t, read(AppendMessage(nil, &Message{Type: TypeFrames}), MaxBody(1024)), ErrMalformed)

	torn := AppendMessage(nil, &Message{Type: TypeFrames, Frames: frames(1)[:20]})
	assert.ErrorIs(t, read(torn, MaxBody(1024)), ErrMalformed)

	ack := AppendMessage(nil, &Message{Type: TypeAck, Seq: 1})
	short := bytes.Clone(ack[:len(ack)-1])
	binary.LittleEndian.PutUint32(short[0:4], uint32(len(short)-EnvelopeSize))
	binary.LittleEndian.PutUint32(short[4:8], crc(short[EnvelopeSize:]))
	assert.ErrorIs(t, read(short, ControlBody), ErrMalformed, "an ack of 7 bytes")

	hello := AppendMessage(nil, &Message{Type: TypeHello, Hello: Hello{Version: Version}})
	hello[EnvelopeSize+1] = 'X'
	binary.LittleEndian.PutUint32(hello[4:8], crc(hello[EnvelopeSize:]))
	assert.ErrorIs(t, read(hello, ControlBody), ErrMalformed, "bad magic")

	unknown := []byte{1, 0, 0, 0, 0, 0, 0, 0, 99}
	binary.LittleEndian.PutUint32(unknown[4:8], crc(unknown[EnvelopeSize:]))
	assert.ErrorIs(t, read(unknown, ControlBody), ErrMalformed)
	assert.ErrorIs(t, read(make([]byte, 8), ControlBody), ErrMalformed, "an empty body")

	m := Message{Type: TypeError, Text: "bye"}
	assert.ErrorIs(t, Expect(&m, TypeAck), ErrRemote)
	assert.Contains(t, Expect(&m, TypeAck).Error(), "bye")
	m = Message{Type: TypeFrames}
	assert.ErrorIs(t, Expect(&m, TypeWelcome), ErrOutOfOrder)
	long := AppendMessage(nil, &Message{Type: TypeError, Text: strings.Repeat("x", 5000)})
	got, err := ReadMessage(bytes.NewReader(long), ControlBody)
	require.NoError(t, err)
	assert.Len(t, got.Text, MaxErrorText, "a long reason is cut to the limit")
}

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// FuzzReadMessage: ReadMessage never panics, never reads past its limit, and
// whatever it accepts encodes back to exactly the bytes it consumed.
func FuzzReadMessage(f *testing.F) {
	for _, m := range samples() {
		f.Add(AppendMessage(nil, &m))
	}
	f.Add([]byte{})
	f.Add(make([]byte, 8))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 16
		r := bytes.NewReader(data)
		m, err := ReadMessage(r, limit)
		if err != nil {
			return
		}
		consumed := data[:len(data)-r.Len()]
		if len(consumed) > EnvelopeSize+limit {
			t.Fatalf("read %d bytes, above the limit", len(consumed))
		}
		enc := AppendMessage(nil, &m)
		if !bytes.Equal(enc, consumed) {
			t.Fatalf("round trip differs:\n in  %x\n out %x", consumed, enc)
		}
		again, err := ReadMessage(bytes.NewReader(enc), limit)
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("re-read differs: %+v vs %+v", again, m)
		}
	})
}
