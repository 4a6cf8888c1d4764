package record

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConsumerRecordsRoundTrip(t *testing.T) {
	g := Group{Name: "billing", StartSeq: 42}
	gotG, err := DecodeGroup(AppendGroup(nil, &g))
	require.NoError(t, err)
	assert.Equal(t, g, gotG)

	a := Ack{Floor: 10, Mark: 99, Attempts: []Attempts{{Seq: 12, Count: 3}}, Acked: []uint64{50, 11, 1 << 40}}
	gotA, err := DecodeAck(AppendAck(nil, &a))
	require.NoError(t, err)
	assert.Equal(t, Ack{Floor: 10, Mark: 99, Attempts: []Attempts{{Seq: 12, Count: 3}}, Acked: []uint64{11, 50, 1 << 40}}, gotA)

	d := DeadLetter{Seq: 7, Attempts: 16, Reason: "max deliveries", Message: Message{ID: "x", Body: []byte("b")}}
	gotD, err := DecodeDeadLetter(AppendDeadLetter(nil, &d))
	require.NoError(t, err)
	assert.Equal(t, d, gotD)

	frame := AppendFrame(nil, TypeAck, 3, 5, AppendAck(nil, &a))
	SetSeq(frame, 8)
	rec, _, err := Decode(frame, 0)
	require.NoError(t, err)
	assert.Equal(t, TypeAck, rec.Type)
	assert.Equal(t, uint16(3), rec.Stream)
}

func TestConsumerRecordsRejectGarbage(t *testing.T) {
	a := Ack{Floor: 1, Mark: 2, Attempts: []Attempts{{1, 2}}, Acked: []uint64{1, 2, 3}}
	buf := AppendAck(nil, &a)
	for i := 0; i < len(buf); i++ {
		_, err := DecodeAck(buf[:i])
		assert.Error(t, err, "prefix of %d bytes", i)
	}
	_, err := DecodeAck(append(buf, 0))
	assert.ErrorIs(t, err, ErrBadConsumerRecord, "trailing bytes")
	_, err = DecodeAck([]byte{0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	assert.ErrorIs(t, err, ErrBadConsumerRecord, "attempt count beyond payload")
	_, err = DecodeGroup([]byte{5, 'a'})
	assert.ErrorIs(t, err, ErrBadConsumerRecord)
	_, err = DecodeDeadLetter([]byte{1})
	assert.Error(t, err)
}

func FuzzConsumerRecords(f *testing.F) {
	a := Ack{Floor: 1, Mark: 9, Attempts: []Attempts{{3, 2}}, Acked: []uint64{3, 4}}
	f.Add(AppendAck(nil, &a))
	f.Add(AppendGroup(nil, &Group{Name: "g", StartSeq: 1}))
	f.Fuzz(func(t *testing.T, p []byte) {
		if a, err := DecodeAck(p); err == nil {
			again, err := DecodeAck(AppendAck(nil, &a))
			if err != nil || again.Floor != a.Floor || len(again.Acked) != len(a.Acked) {
				t.Fatalf("ack round trip: %v", err)
			}
		}
		_, _ = DecodeGroup(p)
		_, _ = DecodeDeadLetter(p)
	})
}
