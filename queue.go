package zeroloss

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// Message is what producers send and consumers receive.
type Message struct {
	// ID identifies the message. Send fills an empty ID with a unique one.
	ID string
	// Key is an application key (for ordering or routing); optional.
	Key string
	// Headers are application metadata; optional.
	Headers map[string]string
	// Body is the payload.
	Body []byte
}

// SendStatus says how far a message appended by Send is guaranteed. Only
// SendOK means every guarantee of the queue's configuration holds; the other
// statuses mean the message was appended but one guarantee was not confirmed
// in time. A strict producer treats everything but SendOK as not sent.
type SendStatus int

const (
	// SendOK: appended and as durable as the configuration promises (see the
	// package documentation's table).
	SendOK SendStatus = iota + 1
	// FlushDiskTimeout: appended (written to the operating system) but the
	// fdatasync did not complete within FlushTimeout, or failed (the queue is
	// then poisoned; see Queue.Err). The message may or may not survive a
	// power loss.
	FlushDiskTimeout
	// FlushReplicaTimeout: appended and durable locally, but the follower did
	// not confirm it within the replica timeout (replication).
	FlushReplicaTimeout
	// ReplicaNotAvailable: appended and durable locally, but no follower was
	// attached to confirm it (replication).
	ReplicaNotAvailable
)

var statusNames = [...]string{
	SendOK: "SendOK", FlushDiskTimeout: "FlushDiskTimeout",
	FlushReplicaTimeout: "FlushReplicaTimeout", ReplicaNotAvailable: "ReplicaNotAvailable",
}

// String returns the status's Go name, e.g. "SendOK".
func (s SendStatus) String() string {
	if s >= SendOK && s <= ReplicaNotAvailable {
		return statusNames[s]
	}
	return "SendStatus(" + strconv.Itoa(int(s)) + ")"
}

// SendResult is the outcome of appending one message.
type SendResult struct {
	Seq    uint64 // position in the log; strictly increasing, never reused
	ID     string // the message's ID (generated if it was empty)
	Status SendStatus
}

// Queue is a durable message queue in one directory. All methods are safe for
// concurrent use.
type Queue struct {
	opts   Options
	log    *wal.Log
	logger *slog.Logger

	// mu orders enqueueing against Close: Sends hold it shared while they
	// hand a request to the writer, Close takes it exclusively to stop them.
	mu       sync.RWMutex
	closed   bool
	requests chan *sendRequest // Send -> writer goroutine

	syncJobs   chan []*sendRequest // writer -> syncer goroutine (FlushSync)
	stopSyncer chan struct{}
	writerDone chan struct{}
	syncerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	committed atomic.Uint64 // last durable seq: what readers may see
	idPrefix  string
	idCounter atomic.Uint64
	stats     queueStats
}

// Open opens the queue in dir, creating it if needed, and recovers it: a torn
// tail left by a crash is cut and logged; damage to durable data fails with
// ErrCorrupt. A nil opts means defaults. Open fails with ErrLocked if the
// directory is open elsewhere, and with ErrInvalidOptions naming the field.
func Open(dir string, opts *Options) (*Queue, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	log, rec, err := wal.Open(dir, wal.Options{FS: o.fs, SegmentSize: o.SegmentSize, Logger: o.Logger, Now: o.now, LeaseChunk: o.leaseChunk})
	if err != nil {
		return nil, fmt.Errorf("zeroloss: open %s: %w", dir, err)
	}
	var prefix [8]byte
	if _, err := rand.Read(prefix[:]); err != nil {
		log.Close()
		return nil, err
	}
	q := &Queue{
		opts:       o,
		log:        log,
		logger:     o.Logger,
		requests:   make(chan *sendRequest, o.MaxPending),
		syncJobs:   make(chan []*sendRequest, 1024),
		stopSyncer: make(chan struct{}),
		writerDone: make(chan struct{}),
		syncerDone: make(chan struct{}),
		idPrefix:   hex.EncodeToString(prefix[:]) + "-",
	}
	q.committed.Store(log.SyncedSeq())
	q.logger.Info("zeroloss: opened", "dir", dir, "segments", rec.Segments, "first_seq", rec.FirstSeq,
		"last_seq", rec.LastSeq, "next_seq", rec.NextSeq, "unclean", rec.Unclean, "flush", o.Flush)
	go q.writeLoop()
	go q.syncLoop()
	return q, nil
}

// Send appends m and returns its seq and status. It blocks until the message
// is written (FlushAsync) or durable (FlushSync, at most FlushTimeout, then
// FlushDiskTimeout).
//
// err != nil means the message was not appended: ErrClosed,
// ErrMessageTooLarge, ErrInvalidMessage, ErrQueueFull, ErrDiskFull,
// ErrPoisoned, or ctx's error if ctx ended before the writer took the message.
// (After a write error that poisons the queue, a message reported as not
// appended may still be found after a restart, if the failed write partly
// reached the disk.) Once the writer has taken the message, Send no longer
// gives up on ctx before the write completes; if ctx ends while waiting for
// the fdatasync, it returns the result with FlushDiskTimeout.
//
// Send does not modify m; an empty ID is filled in the returned result only.
func (q *Queue) Send(ctx context.Context, m *Message) (SendResult, error) {
	results, err := q.send(ctx, []*Message{m})
	if len(results) == 0 {
		return SendResult{}, err
	}
	return results[0], err
}

// SendBatch appends msgs in order as one write, sharing one fdatasync under
// FlushSync. It returns a result for every message appended; if err != nil,
// only the first len(results) messages were appended. The statuses are those
// of Send, and are the same for the whole batch.
func (q *Queue) SendBatch(ctx context.Context, msgs []*Message) ([]SendResult, error) {
	return q.send(ctx, msgs)
}

func (q *Queue) send(ctx context.Context, msgs []*Message) ([]SendResult, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	req := &sendRequest{frames: make([][]byte, len(msgs)), ids: make([]string, len(msgs)), done: make(chan struct{}, 2)}
	now := q.opts.now().UnixNano()
	for i, m := range msgs {
		if m == nil {
			return nil, fmt.Errorf("zeroloss: message %d is nil: %w", i, ErrInvalidMessage)
		}
		rm := record.Message{ID: m.ID, Key: m.Key, Headers: m.Headers, Body: m.Body}
		if rm.ID == "" {
			rm.ID = q.newID()
		}
		size := frameSize(&rm)
		if size > q.opts.MaxMessageSize {
			return nil, fmt.Errorf("zeroloss: message %q encodes to %d bytes, above MaxMessageSize %d: %w",
				rm.ID, size, q.opts.MaxMessageSize, ErrMessageTooLarge)
		}
		req.frames[i] = record.AppendMessageFrame(make([]byte, 0, size), 0, 0, now, &rm)
		req.ids[i] = rm.ID
		req.size += size
	}
	if err := q.enqueue(ctx, req); err != nil {
		return nil, err
	}
	return q.await(ctx, req)
}

// newID returns a unique message ID: a random per-Open prefix and a counter.
func (q *Queue) newID() string {
	return q.idPrefix + strconv.FormatUint(q.idCounter.Add(1), 36)
}

// enqueue hands req to the writer goroutine.
func (q *Queue) enqueue(ctx context.Context, req *sendRequest) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return fmt.Errorf("zeroloss: send: %w", ErrClosed)
	}
	if err := q.log.Err(); err != nil {
		return fmt.Errorf("zeroloss: send: %w", err)
	}
	select {
	case q.requests <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// await waits for req's write and, under FlushSync, for its fdatasync.
func (q *Queue) await(ctx context.Context, req *sendRequest) ([]SendResult, error) {
	select {
	case <-req.done:
	case <-ctx.Done():
		if req.state.CompareAndSwap(stateQueued, stateCancelled) {
			return nil, ctx.Err() // the writer will skip it
		}
		<-req.done // taken: the write is under way and ends soon
	}
	results := make([]SendResult, req.appended)
	status := SendOK
	if req.appended > 0 && q.opts.Flush == FlushSync {
		status = q.awaitSync(ctx, req)
	}
	for i := range results {
		results[i] = SendResult{Seq: req.first + uint64(i), ID: req.ids[i], Status: status}
	}
	if req.err != nil {
		return results, fmt.Errorf("zeroloss: send: %w", req.err)
	}
	return results, nil
}

func (q *Queue) awaitSync(ctx context.Context, req *sendRequest) SendStatus {
	timer := time.NewTimer(q.opts.FlushTimeout)
	defer timer.Stop()
	select {
	case <-req.done:
		if req.syncErr == nil {
			return SendOK
		}
	case <-timer.C:
	case <-ctx.Done():
	}
	q.stats.flushTimeouts.Add(1)
	return FlushDiskTimeout
}

// Err returns the error that poisoned the queue (matching ErrPoisoned), or nil.
func (q *Queue) Err() error { return q.log.Err() }

// Close stops accepting Sends, gives every pending Send a definite result,
// flushes what was written, records a clean end and releases the directory.
// It is idempotent and returns the same error each time.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		close(q.requests) // the writer drains what is queued, then exits
		<-q.writerDone
		close(q.stopSyncer) // the syncer answers its waiters, then exits
		<-q.syncerDone
		q.closeErr = q.log.Close()
	})
	return q.closeErr
}
