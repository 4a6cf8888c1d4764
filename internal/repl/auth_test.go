package repl

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestProofs(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	hello := [NonceSize]byte{1, 31: 1}
	a := Auth{Version: Version, Queue: [16]byte{9}, Nonce: [NonceSize]byte{2, 31: 2}, Epoch: Epoch{Num: 2, ID: 5, Start: 10, PrevLast: 9}}
	a.MAC = LeaderMAC(key, hello, &a)
	require.True(t, VerifyLeader(key, hello, &a))
	p := Position{MaxFrame: 1 << 20, LastSeq: 8, Epochs: []Epoch{{Num: 1, ID: 3, Start: 1}}}
	p.MAC = FollowerMAC(key, hello, &a, &p)
	require.True(t, VerifyFollower(key, hello, &a, &p))

	other := bytes.Repeat([]byte{8}, 32)
	assert.False(t, VerifyLeader(other, hello, &a), "another key")
	assert.False(t, VerifyFollower(other, hello, &a, &p), "another key")
	assert.False(t, VerifyLeader(nil, hello, &a), "no key")
	assert.False(t, VerifyLeader(key, [NonceSize]byte{}, &a), "a replayed proof: another hello's nonce")

	// A proof reflected to the other direction fails: the labels differ.
	reflected := Position{MAC: a.MAC}
	assert.False(t, VerifyFollower(key, hello, &a, &reflected))

	// Every field is covered.
	for name, change := range map[string]func(*Auth){
		"version": func(a *Auth) { a.Version++ },
		"queue":   func(a *Auth) { a.Queue[15] ^= 1 },
		"nonce":   func(a *Auth) { a.Nonce[0] ^= 1 },
		"epoch":   func(a *Auth) { a.Epoch.Num++ },
	} {
		changed := a
		change(&changed)
		assert.False(t, VerifyLeader(key, hello, &changed), name)
		assert.False(t, VerifyFollower(key, hello, &changed, &p), "the follower's proof covers the leader's %s", name)
	}
	for name, change := range map[string]func(*Position){
		"max frame": func(p *Position) { p.MaxFrame++ },
		"last seq":  func(p *Position) { p.LastSeq++ },
		"epochs":    func(p *Position) { p.Epochs = nil },
	} {
		changed := p
		change(&changed)
		assert.False(t, VerifyFollower(key, hello, &a, &changed), name)
	}
}

// FuzzHandshake: the handshake decoder never panics and never reads past
// ControlBody; what it accepts encodes back to the bytes it read, and
// checking its proofs never panics.
func FuzzHandshake(f *testing.F) {
	key := bytes.Repeat([]byte{7}, 32)
	for _, m := range samples() {
		switch m.Type {
		case TypeHello, TypeAuth, TypePosition, TypeWelcome:
			f.Add(AppendMessage(nil, &m))
		}
	}
	a := Auth{Version: Version, Epoch: Epoch{Num: 1, Start: 1}}
	a.MAC = LeaderMAC(key, [NonceSize]byte{}, &a)
	f.Add(AppendMessage(nil, &Message{Type: TypeAuth, Auth: a}))
	f.Add(AppendMessage(nil, &Message{Type: TypePosition, Position: Position{Epochs: make([]Epoch, 3)}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		m, err := ReadMessage(r, ControlBody)
		if err != nil {
			return
		}
		consumed := data[:len(data)-r.Len()]
		if len(consumed) > EnvelopeSize+ControlBody {
			t.Fatalf("read %d bytes, above the limit", len(consumed))
		}
		enc := AppendMessage(nil, &m)
		if !bytes.Equal(enc, consumed) {
			t.Fatalf("round trip differs:\n in  %x\n out %x", consumed, enc)
		}
		again, err := ReadMessage(bytes.NewReader(enc), ControlBody)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-read: %v, %+v vs %+v", err, again, m)
		}
		switch m.Type {
		case TypeAuth:
			if CheckHistory([]Epoch{m.Auth.Epoch}) != nil || m.Auth.Version != Version {
				t.Fatalf("accepted an auth with a bad epoch or version: %+v", m.Auth)
			}
			VerifyLeader(key, [NonceSize]byte{}, &m.Auth)
		case TypePosition:
			if len(m.Position.Epochs) > MaxEpochs || CheckHistory(m.Position.Epochs) != nil {
				t.Fatalf("accepted a position with a bad history: %+v", m.Position)
			}
			VerifyFollower(key, [NonceSize]byte{}, &a, &m.Position)
		case TypeHello:
			if m.Hello.Version != Version {
				t.Fatalf("accepted a hello of version %d", m.Hello.Version)
			}
		}
	})
}
