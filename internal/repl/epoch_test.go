package repl

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCommon(t *testing.T) {
	e1 := Epoch{Num: 1, ID: 11, Start: 1}
	e2 := Epoch{Num: 2, ID: 22, Start: 1<<32 + 101, PrevLast: 100} // promoted follower after seq 100
	e2x := Epoch{Num: 2, ID: 99, Start: 111, PrevLast: 110}        // the old leader reopened as leader instead
	e3 := Epoch{Num: 3, ID: 33, Start: 1<<32 + 501, PrevLast: 1<<32 + 500}
	for _, tc := range []struct {
		name         string
		leader       []Epoch
		leaderLast   uint64
		follower     []Epoch
		followerLast uint64
		want         uint64
		wantErr      error
	}{
		{"empty follower", []Epoch{e1}, 50, nil, 0, 0, nil},
		{"behind in the same term", []Epoch{e1}, 100, []Epoch{e1}, 50, 50, nil},
		{"caught up", []Epoch{e1}, 100, []Epoch{e1}, 100, 100, nil},
		{"old leader rejoins: its tail past the failover point is cut", []Epoch{e1, e2}, 1<<32 + 300, []Epoch{e1}, 110, 100, nil},
		{"old leader that reopened as leader rejoins", []Epoch{e1, e2}, 1<<32 + 300, []Epoch{e1, e2x}, 120, 100, nil},
		{"follower behind the failover point keeps everything", []Epoch{e1, e2}, 1<<32 + 300, []Epoch{e1}, 90, 90, nil},
		{"several terms later", []Epoch{e1, e2, e3}, 1<<32 + 600, []Epoch{e1, e2}, 1<<32 + 400, 1<<32 + 400, nil},
		{"stale leader", []Epoch{e1}, 110, []Epoch{e1, e2}, 1<<32 + 300, 0, ErrStaleLeader},
		// An empty follower that has taken a later leader's history (its
		// handshake done, no frame yet) must not take a stale leader either.
		{"stale leader, empty follower", []Epoch{e1}, 110, []Epoch{e1, e2}, 0, 0, ErrStaleLeader},
		{"leader lost synced records of its own term", []Epoch{e1}, 80, []Epoch{e1}, 100, 0, ErrDiverged},
		{"no shared term", []Epoch{e2}, 1<<32 + 300, []Epoch{e2x}, 120, 0, ErrDiverged},
		{"records without history", []Epoch{e1}, 100, nil, 10, 0, ErrDiverged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Common(tc.leader, tc.leaderLast, tc.follower, tc.followerLast)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestHandshakeChecks(t *testing.T) {
	read := func(m *Message) error {
		_, err := ReadMessage(bytes.NewReader(AppendMessage(nil, m)), ControlBody)
		return err
	}
	require.NoError(t, read(&Message{Type: TypeHello, Hello: Hello{Version: Version}}))
	require.NoError(t, read(&Message{Type: TypePosition, Position: Position{Epochs: make([]Epoch, 0)}}))

	for _, v := range []uint16{1, 2} {
		// An older hello: magic, version, then 14 bytes of another layout.
		body := append([]byte{byte(TypeHello)}, Magic...)
		body = binary.LittleEndian.AppendUint16(body, v)
		body = append(body, make([]byte, 14)...)
		old := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
		old = binary.LittleEndian.AppendUint32(old, crc(body))
		_, err := ReadMessage(bytes.NewReader(append(old, body...)), ControlBody)
		assert.ErrorIs(t, err, ErrVersion, "a version-%d follower is told so", v)
	}
	older := AppendMessage(nil, &Message{Type: TypeAuth, Auth: Auth{Version: 2, Epoch: Epoch{Num: 1, Start: 1}}})
	_, err := ReadMessage(bytes.NewReader(older), ControlBody)
	assert.ErrorIs(t, err, ErrVersion, "an older leader's answer is told so")

	bad := []Epoch{{Num: 2, ID: 1, Start: 10, PrevLast: 9}, {Num: 1, ID: 2, Start: 20, PrevLast: 19}}
	assert.ErrorIs(t, read(&Message{Type: TypePosition, Position: Position{Epochs: bad}}), ErrMalformed, "epoch numbers must grow")
	bad = []Epoch{{Num: 1, ID: 1, Start: 10, PrevLast: 10}}
	assert.ErrorIs(t, read(&Message{Type: TypeWelcome, Welcome: Welcome{Version: Version, Epochs: bad}}), ErrMalformed, "a term starts above its previous last seq")
	assert.ErrorIs(t, read(&Message{Type: TypeAuth, Auth: Auth{Version: Version, Epoch: bad[0]}}), ErrMalformed, "the leader's epoch is checked")
	assert.ErrorIs(t, read(&Message{Type: TypeAuth, Auth: Auth{Version: Version}}), ErrMalformed, "a leader has an epoch")

	many := make([]Epoch, MaxEpochs+10)
	for i := range many {
		many[i] = Epoch{Num: uint64(i + 1), Start: uint64(i + 1), PrevLast: uint64(i)}
	}
	var m Message
	m, err = ReadMessage(bytes.NewReader(AppendMessage(nil, &Message{Type: TypePosition, Position: Position{Epochs: many}})), ControlBody)
	require.NoError(t, err, "the encoder sends only the latest MaxEpochs")
	assert.Equal(t, many[10:], m.Position.Epochs)

	huge := AppendMessage(nil, &Message{Type: TypePosition})
	binary.LittleEndian.PutUint16(huge[EnvelopeSize+1+MACSize+12:], MaxEpochs+1)
	binary.LittleEndian.PutUint32(huge[4:8], crc(huge[EnvelopeSize:]))
	_, err = ReadMessage(bytes.NewReader(huge), ControlBody)
	assert.ErrorIs(t, err, ErrMalformed, "an epoch count above the limit")
}
