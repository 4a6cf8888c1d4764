package zeroloss

import (
	"errors"

	"github.com/zerolossmq/zeroloss/internal/wal"
)

// Errors returned by the queue. Match them with errors.Is: the returned errors
// wrap them with details such as the field, the size, or the file and offset.
var (
	// ErrClosed: the queue was closed. Returned by Send and SendBatch after
	// Close; the message was not appended.
	ErrClosed = wal.ErrClosed
	// ErrLocked: Open found the directory open by another Queue (or
	// Producer, or follower), in this process or another; the error says
	// which ("already open in this process", "locked by another process").
	ErrLocked = wal.ErrLocked
	// ErrCorrupt: Open found damage in data that had been made durable. The
	// error is a *CorruptError naming the file and byte offset. Nothing was
	// repaired or skipped.
	ErrCorrupt = wal.ErrCorrupt
	// ErrMessageTooLarge: the encoded message exceeds Options.MaxMessageSize.
	// Nothing was appended.
	ErrMessageTooLarge = errors.New("message too large")
	// ErrRecordTooLarge: a record the queue writes about the messages it
	// holds (an ack, a retry, a dead letter, a transaction's commit or
	// check) would not fit in a segment. Only that record fails: nothing of
	// it was appended, other writes are not affected and the queue is not
	// poisoned. The options reserve room for every record about one message
	// (see Options.SegmentSize), so only a huge AckBatch can meet it.
	ErrRecordTooLarge = errors.New("record larger than a segment")
	// ErrInvalidOptions: an option is out of range; the error names the field.
	ErrInvalidOptions = errors.New("invalid options")
	// ErrInvalidMessage: Send was given a nil message, or one whose ID is
	// longer than MaxIDLength or whose key is longer than MaxKeyLength (the
	// error names the field). Nothing was appended.
	ErrInvalidMessage = errors.New("invalid message")
	// ErrDiskFull: a new segment could not be created or preallocated for
	// lack of space. Nothing was appended and the queue is not poisoned:
	// Send works again once space is freed.
	ErrDiskFull = wal.ErrDiskFull
	// ErrQueueFull: appending would take the log above Options.MaxBytes.
	// Nothing was appended.
	ErrQueueFull = errors.New("queue full: MaxBytes reached")
	// ErrPoisoned: an earlier write or fdatasync failed. The queue never
	// retries a failed fdatasync (the kernel may have dropped the data and
	// cleared the error), so every later Send fails with an error matching
	// both ErrPoisoned and the first failure. Close and Open again to recover
	// what was durable.
	ErrPoisoned = wal.ErrPoisoned
	// ErrReplication: the replication link failed the protocol: a malformed,
	// oversized or out-of-order message, a failed handshake, or a follower
	// refused by the leader. The link is closed; a follower writes nothing
	// of the message it rejected. The error says what was wrong.
	ErrReplication = errors.New("replication protocol error")
	// ErrWrongDirectory: Open, NewProducer (SpoolDir), Follow or
	// ServeFollower was given a directory of another kind (its IDENTITY
	// file says a producer spool where a queue was expected, or a queue
	// where a spool was), or one holding a file zeroloss did not create, or
	// a spool holding messages for another queue. Nothing in the directory
	// was changed or removed, except that it may now hold the empty LOCK
	// file Open locks it with. The error names the directory, what it is,
	// and the first foreign file.
	ErrWrongDirectory = errors.New("wrong directory")
	// ErrNoSuchGroup: no consumer group has that name (DeleteGroup,
	// DeadLetters, RedriveDeadLetters, PurgeDeadLetters). Such errors also
	// match ErrInvalidOptions, as they did before ErrNoSuchGroup existed.
	ErrNoSuchGroup = errors.New("no such consumer group")
	// ErrGroupDeleted: the consumer's group was deleted (Queue.DeleteGroup).
	// Receive, Consume, Ack, Nack and Extend of its consumers return it;
	// nothing more is written for the group. Queue.Consumer with the same
	// name declares a new group, which starts as ConsumerOptions.Start says.
	ErrGroupDeleted = errors.New("consumer group deleted")
	// ErrConsumerClosed: the Consumer was closed (Consumer.Close). Its
	// Receive, ReceiveBatch and Consume return it; the queue and the group
	// go on (another Consumer of the group receives what it released).
	// It is not ErrClosed, which says the queue itself is closed.
	ErrConsumerClosed = errors.New("consumer closed")
)

// CorruptError is the error Open returns for damaged durable data: the file
// and byte offset of the damage and what was wrong.
type CorruptError = wal.CorruptError
