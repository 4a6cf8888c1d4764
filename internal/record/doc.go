// Package record is the frame format of every record the log holds: messages,
// and the acks, retries, dead letters, transaction records and checkpoints that
// later parts of the queue write into the same log.
//
// A frame is a fixed 32-byte header followed by the payload. All integers are
// little-endian.
//
//	 0       4       8   9   10      12      16              24              32
//	 +-------+-------+---+---+-------+-------+---------------+---------------+----------
//	 |length | crc   |ver|typ|stream | epoch |      seq      |  time (ns)    | payload…
//	 +-------+-------+---+---+-------+-------+---------------+---------------+----------
//
//	length   uint32  payload bytes that follow the header
//	crc      uint32  CRC-32C (Castagnoli) of bytes [0,4) and [8, 32+length):
//	                 everything in the frame except the crc field itself
//	ver      uint8   frame version, 1; 0 never appears in a valid frame
//	typ      uint8   record Type (message, ack, retry, …); 0 is invalid
//	stream   uint16  stream the record belongs to: 0 is the main stream, other
//	                 ids are the queue's internal streams (retry, dead letter, …)
//	epoch    uint32  leadership term that wrote the record (replication)
//	seq      uint64  position in the log, assigned by the log, strictly increasing
//	time     int64   append time, Unix nanoseconds (wall clock)
//
// Because version and type are never zero, a header of 32 zero bytes cannot be a
// frame: it is how preallocated, never-written space reads, and the decoder
// reports it as ErrCleanEnd. A frame whose header or payload runs past the end
// of the available bytes is ErrTruncated; one whose checksum does not match is
// ErrChecksum; one with an unknown version or type, or a length above the limit,
// is ErrInvalid. The decoder does not decide whether such damage is a torn tail
// (a write cut short by a crash) or corruption: only the log knows which bytes
// were synced, so it makes that call.
//
// A message record (TypeMessage) carries an encoded Message as its payload:
//
//	+-------+--------+----+--------+-----+---------+------------------------+------+
//	| flags | idLen  | id | keyLen | key | nHeader | (kLen k vLen v) × n    | body |
//	+-------+--------+----+--------+-----+---------+------------------------+------+
//	flags    uint8    bit 0: a DeliverAt time follows (int64 Unix ns);
//	                  bit 1: the queue generated the ID (not deduplicated);
//	                  bit 2: a committed transactional message: the seq of the
//	                  half message it commits follows (uvarint, after DeliverAt);
//	                  bit 3: the message has a topic or a tag: topic and tag
//	                  follow (each uvarint length + bytes, after the half's seq);
//	                  without it the message is in the default topic ("") with
//	                  no tag, as every message written before topics existed;
//	                  others 0
//	idLen, keyLen, nHeader, kLen, vLen: unsigned varints (encoding/binary)
//	body     the rest of the payload
//
// Record types are listed in record.go (Type). A type is never renumbered;
// new ones are added at the end, and a reader refuses a type it does not
// know (ErrInvalid) rather than skip it. TypeGroupDeleted (12) was added
// after the first release of frame version 1: an older library refuses a log
// holding one, so a deleted consumer group cannot come back under it. The
// consumer record payloads are described in consumer.go.
//
// The size limit a queue enforces (MaxMessageSize) counts the whole frame:
// header, flags, every length prefix, ID, key, headers and body.
package record
