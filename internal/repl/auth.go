package repl

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
)

// Authentication of the handshake (see the package comment): each side
// proves it holds the shared secret with an HMAC-SHA256 over both nonces and
// the handshake's fields. The labels differ by direction, so a proof sent by
// one side is never valid from the other.

const (
	// NonceSize is the length of each side's nonce.
	NonceSize = 32
	// MACSize is the length of a proof.
	MACSize = sha256.Size

	leaderLabel   = "zeroloss repl v3: leader proof"
	followerLabel = "zeroloss repl v3: follower proof"
)

// Auth is the leader's answer to Hello: who it is, and its proof.
type Auth struct {
	Version uint16
	Queue   [16]byte // the queue's ID
	Nonce   [NonceSize]byte
	Epoch   Epoch // the leader's latest epoch
	MAC     [MACSize]byte
}

// Position is the follower's answer to Auth: how far its log goes, and its
// proof.
type Position struct {
	MAC      [MACSize]byte
	MaxFrame uint32  // the largest frame it accepts
	LastSeq  uint64  // its last durable seq
	Epochs   []Epoch // its latest epochs (Tail of its history)
}

// appendSigned appends a's fields but its MAC, as they are on the wire.
func (a *Auth) appendSigned(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, a.Version)
	dst = append(dst, a.Queue[:]...)
	dst = append(dst, a.Nonce[:]...)
	return AppendEpoch(dst, a.Epoch)
}

// appendSigned appends p's fields but its MAC, as they are on the wire.
func (p *Position) appendSigned(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, p.MaxFrame)
	dst = binary.LittleEndian.AppendUint64(dst, p.LastSeq)
	return appendEpochs(dst, p.Epochs)
}

// NewNonce returns fresh random bytes for a Hello or an Auth.
func NewNonce() ([NonceSize]byte, error) {
	var n [NonceSize]byte
	_, err := rand.Read(n[:])
	return n, err
}

// LeaderMAC is the leader's proof in a: over the follower's nonce (from its
// Hello) and every field of a but the MAC.
func LeaderMAC(key []byte, helloNonce [NonceSize]byte, a *Auth) [MACSize]byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(leaderLabel))
	mac.Write(helloNonce[:])
	mac.Write(a.appendSigned(nil))
	var out [MACSize]byte
	mac.Sum(out[:0])
	return out
}

// FollowerMAC is the follower's proof in p: over the follower's nonce, the
// whole of the leader's Auth it answers (its nonce and proof included) and
// every field of p but the MAC.
func FollowerMAC(key []byte, helloNonce [NonceSize]byte, a *Auth, p *Position) [MACSize]byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(followerLabel))
	mac.Write(helloNonce[:])
	mac.Write(a.appendSigned(nil))
	mac.Write(a.MAC[:])
	mac.Write(p.appendSigned(nil))
	var out [MACSize]byte
	mac.Sum(out[:0])
	return out
}

// VerifyLeader reports whether a carries the proof of a leader holding key,
// answering the Hello with helloNonce. It takes constant time.
func VerifyLeader(key []byte, helloNonce [NonceSize]byte, a *Auth) bool {
	want := LeaderMAC(key, helloNonce, a)
	return hmac.Equal(want[:], a.MAC[:])
}

// VerifyFollower reports whether p carries the proof of a follower holding
// key, answering a (sent to the Hello with helloNonce).
func VerifyFollower(key []byte, helloNonce [NonceSize]byte, a *Auth, p *Position) bool {
	want := FollowerMAC(key, helloNonce, a, p)
	return hmac.Equal(want[:], p.MAC[:])
}
