package record

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

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

	d := DeadLetter{Seq: 7, Source: 90, Attempts: 16, Reason: "max deliveries", Message: Message{ID: "x", Body: []byte("b")}}
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
	f.Add(AppendGroup(nil, &Group{Name: "g", StartSeq: 1, Topic: "orders", Tags: []string{"a", "b"}}))
	cp := sampleCheckpoint()
	f.Add(AppendCheckpoint(nil, &cp))
	f.Add(AppendRetry(nil, &cp.Groups[0].Retries[0].Retry))
	for _, part := range SplitCheckpoint(AppendCheckpoint(nil, &cp), 7, 100) {
		f.Add(part)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if part, ok, err := DecodeCheckpointPart(p); ok && err == nil {
			// A part that is a whole checkpoint by itself decodes as the
			// payload it carries.
			var j CheckpointJoiner
			payload, _, done, err := j.Add(5, p)
			if err != nil || done != (part.Count == 1 && part.Index == 0) {
				t.Fatalf("joining a lone part: done %v, %v", done, err)
			}
			if done && !bytes.Equal(payload, part.Data) {
				t.Fatal("a lone part's payload differs")
			}
		}
		if a, err := DecodeAck(p); err == nil {
			again, err := DecodeAck(AppendAck(nil, &a))
			if err != nil || again.Floor != a.Floor || len(again.Acked) != len(a.Acked) {
				t.Fatalf("ack round trip: %v", err)
			}
		}
		if g, err := DecodeGroup(p); err == nil {
			again, err := DecodeGroup(AppendGroup(nil, &g))
			if err != nil || again.Name != g.Name || again.StartSeq != g.StartSeq || again.Topic != g.Topic || !slices.Equal(again.Tags, g.Tags) {
				t.Fatalf("group round trip: %+v, %v; was %+v", again, err, g)
			}
		}
		_, _ = DecodeDeadLetter(p)
		if r, err := DecodeRetry(p); err == nil {
			again, err := DecodeRetry(AppendRetry(nil, &r))
			if err != nil || again.Seq != r.Seq || again.Due != r.Due || !bytes.Equal(again.Message.Body, r.Message.Body) {
				t.Fatalf("retry round trip: %v", err)
			}
		}
		if c, err := DecodeCheckpoint(p); err == nil {
			again, err := DecodeCheckpoint(AppendCheckpoint(nil, &c))
			if err != nil || len(again.Groups) != len(c.Groups) || len(again.Dedup) != len(c.Dedup) {
				t.Fatalf("checkpoint round trip: %v", err)
			}
			for i := range c.Groups {
				if again.Groups[i].Topic != c.Groups[i].Topic || !slices.Equal(again.Groups[i].Tags, c.Groups[i].Tags) {
					t.Fatalf("checkpoint round trip: group %d's subscription differs", i)
				}
			}
		}
	})
}

func sampleCheckpoint() Checkpoint {
	return Checkpoint{Groups: []GroupState{
		{ID: 1, Name: "billing", Start: 1, Floor: 10, Mark: 20,
			Attempts: []Attempts{{Seq: 12, Count: 2}}, Acked: []uint64{11, 15},
			Retries: []RetryState{{Pos: 30, Retry: Retry{Seq: 10, Source: 25, Attempts: 3, Due: 1e18, First: -5,
				Message: Message{ID: "r", Body: []byte("retry")}}}},
			Dead: []DeadState{{Pos: 28, Time: 77, DeadLetter: DeadLetter{Seq: 9, Source: 9, Attempts: 16, Reason: "max",
				Message: Message{ID: "d", Key: "k", Body: []byte("dead")}}}}},
		{ID: 2, Name: "audit", Start: 5, Floor: 5, Mark: 5},
		{ID: 3, Name: "paid", Topic: "orders", Tags: []string{"paid", "void"}, Start: 5, Floor: 6, Mark: 7},
	}, Dedup: []DedupEntry{{ID: "order-1", Seq: 3, Time: 99}, {ID: "order-2", Seq: 4, Time: -1}, {Topic: "orders", ID: "order-1", Seq: 6, Time: 100}},
		Halves: []HalfState{{Seq: 8, Time: 5, Checks: 2, Message: Message{ID: "tx-1", Body: []byte("pay")}}}}
}

func TestRetryAndCheckpointRoundTrip(t *testing.T) {
	r := Retry{Seq: 4, Source: 4, Attempts: 2, Due: 1234567, First: 1000, Message: Message{ID: "m", Body: []byte("x")}}
	gotR, err := DecodeRetry(AppendRetry(nil, &r))
	require.NoError(t, err)
	assert.Equal(t, r, gotR)

	c := sampleCheckpoint()
	buf := AppendCheckpoint(nil, &c)
	got, err := DecodeCheckpoint(buf)
	require.NoError(t, err)
	assert.Equal(t, c, got)

	empty, err := DecodeCheckpoint(AppendCheckpoint(nil, &Checkpoint{}))
	require.NoError(t, err)
	assert.Empty(t, empty.Groups)

	// Every strict prefix is refused except the one ending exactly between
	// sections, and trailing garbage or an unknown section is refused.
	between := map[int]bool{}
	for i := range c.Groups {
		between[len(AppendCheckpoint(nil, &Checkpoint{Groups: c.Groups[:i+1]}))] = true
	}
	var defaultTopic []DedupEntry // the default topic's dedup entries come first, in a section of their own
	for _, e := range c.Dedup {
		if e.Topic == "" {
			defaultTopic = append(defaultTopic, e)
		}
	}
	between[len(AppendCheckpoint(nil, &Checkpoint{Groups: c.Groups, Dedup: defaultTopic}))] = true
	between[len(AppendCheckpoint(nil, &Checkpoint{Groups: c.Groups, Dedup: c.Dedup}))] = true
	for i := 1; i < len(buf); i++ {
		_, err := DecodeCheckpoint(buf[:i])
		if between[i] {
			assert.NoError(t, err, "prefix of %d bytes is whole sections", i)
		} else {
			assert.Error(t, err, "prefix of %d bytes", i)
		}
	}
	_, err = DecodeCheckpoint(append(append([]byte(nil), buf...), 9, 0))
	assert.ErrorIs(t, err, ErrBadConsumerRecord, "unknown section")
	_, err = DecodeCheckpoint([]byte{1, 3, 0xff, 0xff, 0xff})
	assert.ErrorIs(t, err, ErrBadConsumerRecord)
	_, err = DecodeRetry([]byte{1, 2})
	assert.Error(t, err)

	op := TxOp{Half: 9, Op: TxChecked, Checks: 3}
	gotOp, err := DecodeTxOp(AppendTxOp(nil, &op))
	require.NoError(t, err)
	assert.Equal(t, op, gotOp)
	_, err = DecodeTxOp([]byte{9, 7, 0})
	assert.ErrorIs(t, err, ErrBadConsumerRecord, "unknown op")
	half := Message{ID: "c", HalfSeq: 1 << 33, Body: []byte("b"), DeliverAt: time.Unix(9, 0).UTC()}
	p := AppendMessage(nil, &half)
	assert.Len(t, p, MessageSize(&half))
	gotHalf, err := DecodeMessage(p)
	require.NoError(t, err)
	assert.Equal(t, half, gotHalf)
	id, _, err := MessageID(p)
	require.NoError(t, err)
	assert.Equal(t, "c", id)
}

func TestGroupDeletedPayload(t *testing.T) {
	p := AppendGroupDeleted(nil, "wokrers")
	name, err := DecodeGroupDeleted(p)
	require.NoError(t, err)
	require.Equal(t, "wokrers", name)
	for _, bad := range [][]byte{nil, p[:len(p)-1], append(append([]byte(nil), p...), 0)} {
		_, err := DecodeGroupDeleted(bad)
		require.ErrorIs(t, err, ErrBadConsumerRecord, "%x", bad)
	}
	require.True(t, TypeGroupDeleted.Valid())
	require.Equal(t, "group-deleted", TypeGroupDeleted.String())
}

// TestMaxMoveOverhead: the records the queue writes about a message exceed
// its frame by at most MaxMoveOverhead, with every varint at its longest.
func TestMaxMoveOverhead(t *testing.T) {
	m := Message{ID: "id", Body: []byte("body"), DeliverAt: time.Unix(0, -1), HalfSeq: math.MaxUint64}
	plain := m
	plain.HalfSeq = 0
	reason := strings.Repeat("r", MaxReasonSize)
	retry := AppendRetry(nil, &Retry{Seq: math.MaxUint64, Source: math.MaxUint64, Attempts: math.MaxUint64,
		Due: math.MinInt64, First: math.MinInt64, Message: plain})
	dead := AppendDeadLetter(nil, &DeadLetter{Seq: math.MaxUint64, Source: math.MaxUint64, Attempts: math.MaxUint64,
		Reason: reason, Message: plain})
	size := MessageSize(&plain)
	require.LessOrEqual(t, len(retry)-size, MaxMoveOverhead)
	require.Equal(t, MaxMoveOverhead, len(dead)-size, "the dead letter is the largest")
	require.LessOrEqual(t, MessageSize(&m)-size, MaxMoveOverhead, "a commit carries its half's seq")
}

// TestCheckpointParts: a checkpoint cut into parts of any size joins back
// into its payload, only once every part is there in order; a format-1
// checkpoint is read as before.
func TestCheckpointParts(t *testing.T) {
	cp := sampleCheckpoint()
	payload := AppendCheckpoint(nil, &cp)
	for _, maxPart := range []int{64, 100, len(payload) / 2, len(payload) + partHeaderMax, 1 << 20} {
		parts := SplitCheckpoint(payload, 42, maxPart)
		require.Equal(t, max((len(payload)+maxPart-partHeaderMax-1)/(maxPart-partHeaderMax), 1), len(parts))
		var j CheckpointJoiner
		for i, p := range parts {
			require.LessOrEqual(t, len(p), maxPart)
			got, start, done, err := j.Add(uint64(100+i), p)
			require.NoError(t, err)
			require.Equal(t, i == len(parts)-1, done, "part %d of %d", i, len(parts))
			if done {
				require.Equal(t, uint64(100), start, "a checkpoint is at its first part")
				c, err := DecodeCheckpoint(got)
				require.NoError(t, err)
				require.Equal(t, cp, c)
			}
		}
	}

	parts := SplitCheckpoint(payload, 1, 64)
	require.Greater(t, len(parts), 2)
	second := SplitCheckpoint(payload, 2, 64)
	cases := []struct {
		name string
		feed [][]byte
	}{
		{"torn: the last part missing", parts[:len(parts)-1]},
		{"a part missing", append(append([][]byte{}, parts[:1]...), parts[2:]...)},
		{"parts of two checkpoints", append(append([][]byte{}, parts[:2]...), second[2:]...)},
		{"no first part", parts[1:]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var j CheckpointJoiner
			for i, p := range tc.feed {
				_, _, done, err := j.Add(uint64(i+1), p)
				require.NoError(t, err)
				require.False(t, done)
			}
			// The next whole checkpoint counts.
			for i, p := range second {
				_, start, done, err := j.Add(uint64(50+i), p)
				require.NoError(t, err)
				require.Equal(t, i == len(second)-1, done)
				if done {
					require.Equal(t, uint64(50), start)
				}
			}
		})
	}

	j := CheckpointJoiner{HeadersOnly: true}
	got, start, done, err := j.Add(9, payload) // format 1
	require.NoError(t, err)
	require.True(t, done)
	require.Equal(t, uint64(9), start)
	require.Nil(t, got)
	var k CheckpointJoiner
	got, _, done, err = k.Add(9, payload)
	require.NoError(t, err)
	require.True(t, done)
	require.Equal(t, payload, got)
	_, _, _, err = k.Add(10, []byte{partMarker, 1, 3, 3})
	require.ErrorIs(t, err, ErrBadConsumerRecord, "index beyond count")
	_, _, _, err = k.Add(10, []byte{partMarker, 1})
	require.ErrorIs(t, err, ErrBadConsumerRecord, "truncated header")
}
