package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// HeaderSize is the size of a frame header in bytes.
const HeaderSize = 32

// Version is the frame version this package writes and reads.
const Version = 1

// Type says what a record is. The values are part of the on-disk format.
type Type uint8

// Record types. Values are fixed forever; new types are added at the end.
const (
	TypeMessage    Type = 1  // a message on a stream
	TypeAck        Type = 2  // a consumer group acknowledged messages
	TypeRetry      Type = 3  // a message re-appended to a group's retry stream
	TypeDeadLetter Type = 4  // a message moved to a group's dead-letter stream
	TypeHalf       Type = 5  // a transactional half message
	TypeTxOp       Type = 6  // a transaction's commit or rollback
	TypeCheckpoint Type = 7  // saved state (group positions, dedup snapshot)
	TypeGroup      Type = 8  // a consumer group or internal stream declared
	TypeDelivered  Type = 9  // a group's "delivered up to" mark
	TypeEpoch      Type = 10 // a new leadership epoch began
	TypeNoop       Type = 11 // carries nothing; used to fill or to test
	// TypeGroupDeleted: a consumer group was deleted (Queue.DeleteGroup).
	// Added after version 1's first types: a library that predates it
	// refuses a log holding one (unknown type) rather than bring the
	// group back.
	TypeGroupDeleted Type = 12

	maxType = TypeGroupDeleted
)

var typeNames = [...]string{
	TypeMessage: "message", TypeAck: "ack", TypeRetry: "retry",
	TypeDeadLetter: "dead-letter", TypeHalf: "half", TypeTxOp: "tx-op",
	TypeCheckpoint: "checkpoint", TypeGroup: "group", TypeDelivered: "delivered",
	TypeEpoch: "epoch", TypeNoop: "noop", TypeGroupDeleted: "group-deleted",
}

// String returns the type's name.
func (t Type) String() string {
	if t >= 1 && t <= maxType {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Valid reports whether t is a type this version knows.
func (t Type) Valid() bool { return t >= 1 && t <= maxType }

// Decoder errors. The log turns them into a torn tail or ErrCorrupt depending
// on where they occur.
var (
	// ErrCleanEnd means the header is all zeros: the end of written data in a
	// preallocated file.
	ErrCleanEnd = errors.New("record: clean end (zeroed header)")
	// ErrTruncated means the header or the payload runs past the available bytes.
	ErrTruncated = errors.New("record: truncated frame")
	// ErrChecksum means the CRC-32C does not match the frame's bytes.
	ErrChecksum = errors.New("record: checksum mismatch")
	// ErrInvalid means a header field is impossible: unknown version or type,
	// or a length above the limit.
	ErrInvalid = errors.New("record: invalid frame header")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one decoded frame. Payload aliases the buffer it was decoded from
// unless the caller copies it.
type Record struct {
	Type    Type
	Stream  uint16
	Epoch   uint32
	Seq     uint64
	Time    int64
	Payload []byte
}

// Size returns the encoded size of r in bytes.
func (r *Record) Size() int { return HeaderSize + len(r.Payload) }

// Append encodes r and appends the frame to dst.
func Append(dst []byte, r *Record) []byte {
	start := len(dst)
	dst = grow(dst, HeaderSize+len(r.Payload))
	h := dst[start : start+HeaderSize]
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(r.Payload)))
	h[8] = Version
	h[9] = byte(r.Type)
	binary.LittleEndian.PutUint16(h[10:12], r.Stream)
	binary.LittleEndian.PutUint32(h[12:16], r.Epoch)
	binary.LittleEndian.PutUint64(h[16:24], r.Seq)
	binary.LittleEndian.PutUint64(h[24:32], uint64(r.Time))
	copy(dst[start+HeaderSize:], r.Payload)
	binary.LittleEndian.PutUint32(h[4:8], checksum(dst[start:]))
	return dst
}

// SetSeq rewrites the seq of an encoded frame in place and fixes its checksum.
// The log uses it to assign seqs to frames a caller encoded ahead of time.
func SetSeq(frame []byte, seq uint64) {
	binary.LittleEndian.PutUint64(frame[16:24], seq)
	binary.LittleEndian.PutUint32(frame[4:8], checksum(frame))
}

// SetSeqEpoch sets an encoded frame's seq and epoch in place and updates its
// checksum: one pass over the frame, as SetSeq.
func SetSeqEpoch(frame []byte, seq uint64, epoch uint32) {
	binary.LittleEndian.PutUint32(frame[12:16], epoch)
	SetSeq(frame, seq)
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

func checksum(frame []byte) uint32 {
	c := crc32.Update(0, castagnoli, frame[0:4])
	return crc32.Update(c, castagnoli, frame[8:])
}

// Decode decodes the frame at the start of buf. maxSize bounds the frame size
// (header plus payload); 0 means no bound beyond len(buf). It returns the
// record, whose Payload aliases buf, and the frame's size.
func Decode(buf []byte, maxSize int) (Record, int, error) {
	if len(buf) < HeaderSize {
		if allZero(buf) {
			// Fewer than HeaderSize zero bytes at the very end of a file are
			// still unwritten space, not a torn frame.
			return Record{}, 0, ErrCleanEnd
		}
		return Record{}, 0, ErrTruncated
	}
	n, err := checkHeader(buf[:HeaderSize], maxSize)
	if err != nil {
		return Record{}, 0, err
	}
	if n > len(buf) {
		return Record{}, 0, ErrTruncated
	}
	frame := buf[:n]
	if binary.LittleEndian.Uint32(frame[4:8]) != checksum(frame) {
		return Record{}, 0, ErrChecksum
	}
	return Record{
		Type:    Type(frame[9]),
		Stream:  binary.LittleEndian.Uint16(frame[10:12]),
		Epoch:   binary.LittleEndian.Uint32(frame[12:16]),
		Seq:     binary.LittleEndian.Uint64(frame[16:24]),
		Time:    int64(binary.LittleEndian.Uint64(frame[24:32])),
		Payload: frame[HeaderSize:n:n],
	}, n, nil
}

// FrameSize checks a header and returns the size of the whole frame it
// announces, without verifying the checksum. It returns ErrCleanEnd for a zero
// header and ErrInvalid for an impossible one.
func FrameSize(header []byte, maxSize int) (int, error) {
	if len(header) < HeaderSize {
		return 0, ErrTruncated
	}
	return checkHeader(header[:HeaderSize], maxSize)
}

func checkHeader(h []byte, maxSize int) (int, error) {
	if allZero(h) {
		return 0, ErrCleanEnd
	}
	if h[8] != Version || !Type(h[9]).Valid() {
		return 0, ErrInvalid
	}
	length := uint64(binary.LittleEndian.Uint32(h[0:4]))
	if maxSize > 0 && length+HeaderSize > uint64(maxSize) {
		return 0, ErrInvalid
	}
	// On 32-bit platforms a 4 GiB length must not overflow int.
	if length > uint64(^uint(0)>>1)-HeaderSize {
		return 0, ErrInvalid
	}
	return int(length) + HeaderSize, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Reader decodes frames one after another from an io.ReaderAt between a start
// offset and a limit (normally the file's size), reading ahead in chunks. It
// never allocates more than the bytes that remain before the limit, so a
// corrupt length cannot make it allocate gigabytes.
type Reader struct {
	r       io.ReaderAt
	offset  int64 // next frame
	limit   int64
	maxSize int
	window  []byte // bytes of the file starting at windowOff
	winOff  int64
	buf     []byte
}

// readAhead is how much a Reader reads at once when frames are small.
const readAhead = 64 << 10

// NewReader returns a Reader that decodes frames from r starting at offset and
// never reads at or past limit. maxSize bounds a single frame (0: no bound).
func NewReader(r io.ReaderAt, offset, limit int64, maxSize int) *Reader {
	return &Reader{r: r, offset: offset, limit: limit, maxSize: maxSize}
}

// Offset returns the offset of the next frame Next will decode.
func (rd *Reader) Offset() int64 { return rd.offset }

// SetOffset makes offset the next frame's; bytes already read ahead are kept.
func (rd *Reader) SetOffset(offset int64) { rd.offset = offset }

// SetLimit moves the limit, for a file that has grown since.
func (rd *Reader) SetLimit(limit int64) { rd.limit = limit }

// Next decodes the frame at the current offset and advances past it. The
// returned Payload is valid until the next call. At the limit it returns
// io.EOF. On a decode error the offset stays at the bad frame.
func (rd *Reader) Next() (Record, error) {
	remaining := rd.limit - rd.offset
	if remaining <= 0 {
		return Record{}, io.EOF
	}
	hlen := int64(HeaderSize)
	if remaining < hlen {
		hlen = remaining
	}
	h, err := rd.bytes(int(hlen))
	if err != nil {
		return Record{}, err
	}
	if len(h) < HeaderSize {
		_, _, err := Decode(h, rd.maxSize)
		return Record{}, err
	}
	size, err := checkHeader(h, rd.maxSize)
	if err != nil {
		return Record{}, err
	}
	if int64(size) > remaining {
		return Record{}, ErrTruncated
	}
	frame, err := rd.bytes(size)
	if err != nil {
		return Record{}, err
	}
	rec, n, err := Decode(frame, rd.maxSize)
	if err != nil {
		return Record{}, err
	}
	rd.offset += int64(n)
	return rec, nil
}

// bytes returns n bytes at rd.offset, refilling the window when needed. The
// caller guarantees rd.offset+n <= rd.limit.
func (rd *Reader) bytes(n int) ([]byte, error) {
	start := rd.offset - rd.winOff
	if rd.window != nil && start >= 0 && start+int64(n) <= int64(len(rd.window)) {
		return rd.window[start : start+int64(n)], nil
	}
	want := int64(n)
	if want < readAhead {
		want = readAhead
	}
	if rest := rd.limit - rd.offset; want > rest {
		want = rest
	}
	if int64(cap(rd.buf)) < want {
		rd.buf = make([]byte, want)
	}
	b := rd.buf[:want]
	m, err := rd.r.ReadAt(b, rd.offset)
	if m < n {
		rd.window = nil
		if err == nil || err == io.EOF {
			return nil, fmt.Errorf("short read at offset %d: %w", rd.offset, io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	rd.window, rd.winOff = b[:m], rd.offset
	return rd.window[:n], nil
}
