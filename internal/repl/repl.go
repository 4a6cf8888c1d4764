// Package repl is the replication wire protocol between a leader queue and a
// follower: a handshake, then log frames from the leader and acks from the
// follower. It does no I/O of its own beyond reading and writing messages on
// the link it is given, and keeps no state.
//
// # Messages
//
// Every message, in both directions, is
//
//	0  4  length L of the body, little endian (1 <= L <= the reader's limit)
//	4  4  CRC-32C (Castagnoli) of the body
//	8  L  body: a type byte, then the type's payload
//
// Types and payloads (integers little endian):
//
//	1 Hello    follower → leader, first message:
//	             0  6  magic "ZLREPL"
//	             6  2  protocol version (3)
//	             8 32  the follower's nonce: fresh random bytes
//	7 Auth     leader → follower, answer to Hello:
//	             0  2  protocol version
//	             2 16  the queue's ID (its IDENTITY file)
//	            18 32  the leader's nonce: fresh random bytes
//	            50 32  the leader's latest epoch (Epoch)
//	            82 32  the leader's proof: LeaderMAC
//	8 Position follower → leader, answer to Auth:
//	             0 32  the follower's proof: FollowerMAC
//	            32  4  largest frame the follower accepts, bytes
//	            36  8  follower's last durable seq (0: empty)
//	            44  2  number N of epochs that follow (at most MaxEpochs)
//	            46 32N the follower's latest epochs, oldest first (Epoch)
//	2 Welcome  leader → follower, answer to Position:
//	             0  2  protocol version
//	             2  8  first seq the leader will send: the last seq the two
//	                   logs share (Common) + 1; the follower first cuts
//	                   everything at or above it
//	            10  2  number N of epochs that follow (at most MaxEpochs)
//	            12 32N the leader's latest epochs, oldest first: the
//	                   follower's history from now on
//
// The proofs are HMAC-SHA256 under a secret both ends hold (auth.go), over
// both nonces and every field of the handshake, with a different label for
// each direction: each side proves it holds the secret without sending it,
// a recorded or reflected proof fails, and no field can be changed on the
// way. Without a secret the key is empty and the proofs prove nothing: the
// link must then be authenticated by other means (a Unix socket's mode,
// mutual TLS). The follower checks the Auth (version, proof, queue ID, a
// leader epoch not older than its own) before the connection may disturb
// anything; the leader checks the Position's proof before it attaches.
//
// An Epoch is 0 8 number, 8 8 random id, 16 8 start (seq of its epoch
// record), 24 8 last seq before it.
//
//	3 Frames   leader → follower: one or more whole log frames, back to back,
//	           exactly as the leader's log stores them (32-byte header with its
//	           own CRC-32C, then payload), seqs strictly increasing
//	4 Ack      follower → leader: 0 8 the follower's last durable seq
//	6 Trim     leader → follower: 0 8 seq: the leader deleted its segments
//	           below seq (retention), or holds none of the seqs the next
//	           frames jump over; the follower marks such a jump as a gap and
//	           may delete its segments below min(seq, its latest durable
//	           checkpoint record, that checkpoint's lowest group floor)
//	9 Checkpoint leader → follower, before the Trim of a jump over deleted
//	           records: the leader's latest whole checkpoint as its
//	           TypeCheckpoint frames (as Frames: whole, checked, seqs
//	           increasing, each at most maxFrame bytes), in one or more
//	           messages of at most MaxBody(maxFrame) bytes; the follower keeps
//	           it (its CATCHUP file) once it has every part, before the frames
//	           after the jump
//	5 Error    either way, then the link is closed: a UTF-8 reason, at most
//	           1024 bytes
//
// After the handshake the leader sends only Frames, Checkpoints and Trims (or Error), the
// follower only Acks (or Error). A Frames body is at most MaxBody(maxFrame)
// bytes, where maxFrame is the follower's limit from Hello; every frame in it
// is at most maxFrame bytes. Frames across messages have increasing seqs
// (gaps are allowed: the leader's log skips seqs after an unclean restart),
// and acks never go down. Anything else — a bad length or checksum, an unknown
// type, a payload of the wrong size, a damaged frame, a frame above the limit,
// a seq out of order, a message of the wrong type for the moment — is an error
// that closes the link; the follower writes nothing of the message.
package repl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// Version is the protocol version this package speaks.
const Version = 3

// Magic opens a Hello.
const Magic = "ZLREPL"

// Type is a message type. The values are part of the protocol.
type Type uint8

// Message types.
const (
	TypeHello    Type = 1
	TypeWelcome  Type = 2
	TypeFrames   Type = 3
	TypeAck      Type = 4
	TypeError    Type = 5
	TypeTrim     Type = 6
	TypeAuth     Type = 7
	TypePosition Type = 8
	// TypeCheckpoint: the parts of the leader's latest whole checkpoint,
	// sent ahead of a jump over deleted records.
	TypeCheckpoint Type = 9
)

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeWelcome:
		return "welcome"
	case TypeFrames:
		return "frames"
	case TypeAck:
		return "ack"
	case TypeError:
		return "error"
	case TypeTrim:
		return "trim"
	case TypeAuth:
		return "auth"
	case TypePosition:
		return "position"
	case TypeCheckpoint:
		return "checkpoint"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

const (
	// EnvelopeSize is the length and checksum ahead of every body.
	EnvelopeSize = 8
	// BatchBytes is how many bytes of frames a leader may put in one Frames
	// message when the follower's frame limit is smaller.
	BatchBytes = 1 << 20
	// ControlBody bounds the body of every message but Frames: what a leader
	// reads from a follower.
	ControlBody = 1 + max(MaxErrorText, helloSize, authSize, positionSize+MaxEpochs*EpochSize)
	// MaxErrorText bounds an Error's reason.
	MaxErrorText = 1024

	helloSize    = 8 + NonceSize
	authSize     = 2 + 16 + NonceSize + EpochSize + MACSize
	positionSize = MACSize + 14 // without the epochs
	welcomeSize  = 12
	ackSize      = 8
)

// MaxBody is the largest body a follower accepting frames of up to maxFrame
// bytes reads.
func MaxBody(maxFrame int) int { return 1 + max(maxFrame, BatchBytes) }

// Errors. Every error of ReadMessage and of the checks wraps one of them.
var (
	ErrMalformed  = errors.New("repl: malformed message")
	ErrTooLarge   = errors.New("repl: message too large")
	ErrChecksum   = errors.New("repl: message checksum mismatch")
	ErrOutOfOrder = errors.New("repl: message out of order")
	ErrVersion    = errors.New("repl: unsupported protocol version")
	// ErrRemote wraps the reason an Error message carried.
	ErrRemote = errors.New("repl: the other side closed the link")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Hello is the follower's opening message.
type Hello struct {
	Version uint16
	Nonce   [NonceSize]byte
}

// Welcome is the leader's answer to Hello.
type Welcome struct {
	Version uint16
	From    uint64  // the first seq it will send
	Epochs  []Epoch // its latest epochs
}

// Message is one decoded message; the field of its Type is set.
type Message struct {
	Type     Type
	Hello    Hello
	Auth     Auth
	Position Position
	Welcome  Welcome
	// Frames holds whole frames (TypeFrames, TypeCheckpoint); FirstSeq, LastSeq and Count
	// describe them (set by ReadMessage and CheckFrames).
	Frames   []byte
	FirstSeq uint64
	LastSeq  uint64
	Count    int
	Seq      uint64 // TypeAck, TypeTrim
	Text     string // TypeError
}

// AppendMessage encodes m, envelope included, and appends it to dst.
func AppendMessage(dst []byte, m *Message) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, EnvelopeSize)...)
	dst = append(dst, byte(m.Type))
	switch m.Type {
	case TypeHello:
		dst = append(dst, Magic...)
		dst = binary.LittleEndian.AppendUint16(dst, m.Hello.Version)
		dst = append(dst, m.Hello.Nonce[:]...)
	case TypeAuth:
		dst = m.Auth.appendSigned(dst)
		dst = append(dst, m.Auth.MAC[:]...)
	case TypePosition:
		dst = append(dst, m.Position.MAC[:]...)
		dst = m.Position.appendSigned(dst)
	case TypeWelcome:
		dst = binary.LittleEndian.AppendUint16(dst, m.Welcome.Version)
		dst = binary.LittleEndian.AppendUint64(dst, m.Welcome.From)
		dst = appendEpochs(dst, m.Welcome.Epochs)
	case TypeFrames, TypeCheckpoint:
		dst = append(dst, m.Frames...)
	case TypeAck, TypeTrim:
		dst = binary.LittleEndian.AppendUint64(dst, m.Seq)
	case TypeError:
		text := m.Text
		if len(text) > MaxErrorText {
			text = text[:MaxErrorText]
		}
		dst = append(dst, text...)
	}
	body := dst[start+EnvelopeSize:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(body, castagnoli))
	return dst
}

// WriteMessage writes m to w with one Write.
func WriteMessage(w io.Writer, m *Message) error {
	_, err := w.Write(AppendMessage(nil, m))
	return err
}

// ReadMessage reads one message from r. maxBody bounds the body (MaxBody for
// a follower, ControlBody for a leader); a larger length is ErrTooLarge and
// nothing more is read. Frames are checked whole (each frame's own CRC-32C,
// at most maxBody-1 bytes, seqs strictly increasing). io.EOF means the link
// was closed cleanly between messages; a message cut short is
// io.ErrUnexpectedEOF.
func ReadMessage(r io.Reader, maxBody int) (Message, error) {
	var env [EnvelopeSize]byte
	if _, err := io.ReadFull(r, env[:]); err != nil {
		return Message{}, err
	}
	n := binary.LittleEndian.Uint32(env[0:4])
	if n == 0 {
		return Message{}, fmt.Errorf("%w: empty body", ErrMalformed)
	}
	if uint64(n) > uint64(maxBody) {
		return Message{}, fmt.Errorf("%w: body of %d bytes, limit %d", ErrTooLarge, n, maxBody)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Message{}, err
	}
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(env[4:8]) {
		return Message{}, fmt.Errorf("%w (%d-byte body)", ErrChecksum, n)
	}
	return decodeBody(body, maxBody-1)
}

func decodeBody(body []byte, maxFrame int) (Message, error) {
	m := Message{Type: Type(body[0])}
	p := body[1:]
	size := func(want int) error {
		if len(p) != want {
			return fmt.Errorf("%w: %v payload of %d bytes, want %d", ErrMalformed, m.Type, len(p), want)
		}
		return nil
	}
	switch m.Type {
	case TypeHello:
		if len(p) >= 8 && bytes.Equal(p[0:6], []byte(Magic)) {
			if v := binary.LittleEndian.Uint16(p[6:8]); v != Version {
				// Report the version before any size check: an older
				// follower's hello has another layout.
				return Message{}, fmt.Errorf("%w: follower speaks protocol version %d, leader %d", ErrVersion, v, Version)
			}
		}
		if err := size(helloSize); err != nil {
			return Message{}, err
		}
		if !bytes.Equal(p[0:6], []byte(Magic)) {
			return Message{}, fmt.Errorf("%w: bad magic %q in hello", ErrMalformed, p[0:6])
		}
		m.Hello.Version = binary.LittleEndian.Uint16(p[6:8])
		copy(m.Hello.Nonce[:], p[8:])
	case TypeAuth:
		if len(p) >= 2 {
			if v := binary.LittleEndian.Uint16(p[0:2]); v != Version {
				return Message{}, fmt.Errorf("%w: leader speaks protocol version %d, follower %d", ErrVersion, v, Version)
			}
		}
		if err := size(authSize); err != nil {
			return Message{}, err
		}
		a := &m.Auth
		a.Version = binary.LittleEndian.Uint16(p[0:2])
		copy(a.Queue[:], p[2:18])
		copy(a.Nonce[:], p[18:18+NonceSize])
		a.Epoch = DecodeEpoch(p[18+NonceSize:])
		copy(a.MAC[:], p[authSize-MACSize:])
		if err := CheckHistory([]Epoch{a.Epoch}); err != nil {
			return Message{}, fmt.Errorf("%v: %w", m.Type, err)
		}
	case TypePosition:
		epochs, err := decodeEpochs(p, positionSize, m.Type)
		if err != nil {
			return Message{}, err
		}
		ps := &m.Position
		copy(ps.MAC[:], p[0:MACSize])
		ps.MaxFrame = binary.LittleEndian.Uint32(p[MACSize : MACSize+4])
		ps.LastSeq = binary.LittleEndian.Uint64(p[MACSize+4 : MACSize+12])
		ps.Epochs = epochs
	case TypeWelcome:
		if len(p) >= 2 {
			if v := binary.LittleEndian.Uint16(p[0:2]); v != Version {
				return Message{}, fmt.Errorf("%w: leader speaks protocol version %d, follower %d", ErrVersion, v, Version)
			}
		}
		epochs, err := decodeEpochs(p, welcomeSize, m.Type)
		if err != nil {
			return Message{}, err
		}
		m.Welcome = Welcome{
			Version: binary.LittleEndian.Uint16(p[0:2]),
			From:    binary.LittleEndian.Uint64(p[2:10]),
			Epochs:  epochs,
		}
	case TypeFrames, TypeCheckpoint:
		m.Frames = p
		var err error
		if m.FirstSeq, m.LastSeq, m.Count, err = CheckFrames(p, maxFrame, 0); err != nil {
			return Message{}, err
		}
	case TypeAck, TypeTrim:
		if err := size(ackSize); err != nil {
			return Message{}, err
		}
		m.Seq = binary.LittleEndian.Uint64(p)
	case TypeError:
		if len(p) > MaxErrorText {
			return Message{}, fmt.Errorf("%w: error text of %d bytes, limit %d", ErrMalformed, len(p), MaxErrorText)
		}
		m.Text = string(p)
	default:
		return Message{}, fmt.Errorf("%w: unknown type %d", ErrMalformed, body[0])
	}
	return m, nil
}

// CheckFrames checks that buf is one or more whole, undamaged frames of at
// most maxFrame bytes each, with seqs strictly increasing and above after. It
// returns the first and last seq and the count.
func CheckFrames(buf []byte, maxFrame int, after uint64) (first, last uint64, count int, err error) {
	if len(buf) == 0 {
		return 0, 0, 0, fmt.Errorf("%w: frames message without frames", ErrMalformed)
	}
	last = after
	for off := 0; off < len(buf); {
		rec, n, err := record.Decode(buf[off:], maxFrame)
		if err != nil {
			if errors.Is(err, record.ErrInvalid) && maxFrame > 0 {
				if size, serr := record.FrameSize(buf[off:], 0); serr == nil && size > maxFrame {
					return 0, 0, 0, fmt.Errorf("%w: frame of %d bytes at byte %d, limit %d", ErrTooLarge, size, off, maxFrame)
				}
			}
			return 0, 0, 0, fmt.Errorf("%w: frame %d at byte %d of %d: %w", ErrMalformed, count, off, len(buf), err)
		}
		if rec.Seq <= last {
			return 0, 0, 0, fmt.Errorf("%w: frame seq %d at byte %d follows seq %d", ErrOutOfOrder, rec.Seq, off, last)
		}
		if count == 0 {
			first = rec.Seq
		}
		last = rec.Seq
		count++
		off += n
	}
	return first, last, count, nil
}

// Expect returns an error unless m is of type want. An Error message becomes
// an error wrapping ErrRemote with its reason.
func Expect(m *Message, want Type) error {
	if m.Type == want {
		return nil
	}
	if m.Type == TypeError {
		return fmt.Errorf("%w: %s", ErrRemote, m.Text)
	}
	return fmt.Errorf("%w: got %v, want %v", ErrOutOfOrder, m.Type, want)
}

func appendEpochs(dst []byte, h []Epoch) []byte {
	h = Tail(h)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(h)))
	for _, e := range h {
		dst = AppendEpoch(dst, e)
	}
	return dst
}

// decodeEpochs decodes the epoch list that follows fixed bytes of p (its
// count at p[fixed-2:fixed]) and checks the payload's size and the history.
func decodeEpochs(p []byte, fixed int, t Type) ([]Epoch, error) {
	if len(p) < fixed {
		return nil, fmt.Errorf("%w: %v payload of %d bytes, want at least %d", ErrMalformed, t, len(p), fixed)
	}
	n := int(binary.LittleEndian.Uint16(p[fixed-2 : fixed]))
	if n > MaxEpochs {
		return nil, fmt.Errorf("%w: %v carries %d epochs, limit %d", ErrMalformed, t, n, MaxEpochs)
	}
	if want := fixed + n*EpochSize; len(p) != want {
		return nil, fmt.Errorf("%w: %v payload of %d bytes, want %d", ErrMalformed, t, len(p), want)
	}
	var h []Epoch
	for i := range n {
		h = append(h, DecodeEpoch(p[fixed+i*EpochSize:]))
	}
	if err := CheckHistory(h); err != nil {
		return nil, fmt.Errorf("%v: %w", t, err)
	}
	return h, nil
}
