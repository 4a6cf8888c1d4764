package zeroloss

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss/internal/hook"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// The producer.
//
// A Producer sends through a Queue that it does not own, and can be moved to
// another one (Attach) when the queue is closed and opened again. In strict
// mode it keeps a spool: a write-ahead log of its own (internal/wal) in
// SpoolDir, holding the messages the queue did not confirm with SendOK.
//
//	Send ──▶ spool empty and a queue attached? ──yes──▶ Queue.Send, retried with backoff
//	             │ no                                        │ SendOK: Sent
//	             ▼                                           │ otherwise (strict): ─┐
//	         spool: append a message frame, fdatasync ◀─────────────────────────────┘
//	             │ Spooled                      (Sends queue behind a non-empty spool)
//	             ▼
//	         resender goroutine: reads the spool in order, Queue.SendBatch; on
//	         SendOK appends and syncs a progress record ("done below seq F"),
//	         then removes spool segments wholly below F
//
// The spool's frames, like the queue's:
//
//	TypeMessage, stream 0   a spooled message, exactly as the queue encodes it
//	TypeAck, stream 1       progress: record.Ack with Floor = F (and Mark = F):
//	                        every spooled message with a spool seq below F is
//	                        in the queue with SendOK
//
// On open the spool is recovered like any log (a torn tail is cut; a message
// is Spooled only after its fdatasync, so no Spooled message is in a torn
// tail), the highest Floor is taken, and every message at or above it is
// resent. A progress record is synced before the messages it covers stop
// counting as spooled, so after a crash only messages whose SendOK was not yet
// recorded are sent again: duplicates by ID, never losses.

// Defaults for ProducerOptions fields left zero.
const (
	DefaultProducerAttempts = 3
	DefaultProducerBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff       = 5 * time.Second
	DefaultResendInterval   = time.Second
	// minSpoolSegmentSize is the smallest spool segment; a segment also
	// holds at least one message of MaxMessageSize.
	minSpoolSegmentSize = 8 << 20
	// resendBatch and resendBatchBytes bound one SendBatch of the resender.
	resendBatch      = 128
	resendBatchBytes = 1 << 20
	// producerCloseGrace is how long Close lets the resender's Send in
	// flight finish before cancelling it.
	producerCloseGrace = 5 * time.Second
	// spoolProgressStream is the stream of the spool's progress records.
	spoolProgressStream = 1
)

// ErrSpoolFull: spooling the message would take the spool above
// ProducerOptions.MaxSpoolBytes. The message was not spooled, and not
// confirmed by the queue.
var ErrSpoolFull = errors.New("spool full: MaxSpoolBytes reached")

// errQueueDetached is the cause of a Send attempted while no queue is
// attached; it matches ErrClosed.
var errQueueDetached = fmt.Errorf("no queue attached: %w", ErrClosed)

// ProducerOptions configure a Producer. The zero value, like a nil
// *ProducerOptions, is a non-strict producer with the default retries.
type ProducerOptions struct {
	// Strict makes SendOK the only status that counts as sent: a message
	// that is not confirmed with SendOK is written to the spool before Send
	// returns (Outcome Spooled) and resent from there. Requires SpoolDir.
	Strict bool
	// SpoolDir is the directory of the spool, a write-ahead log of its own;
	// it may be on another disk than the queue, must not be the queue's
	// directory, and is locked while the producer is open. Required in
	// strict mode, and only used in strict mode (setting it without Strict
	// is an error rather than a spool silently left unused).
	SpoolDir string
	// Attempts is how many times Send tries the queue with one message
	// before it spools it (strict) or returns the last result or error
	// (non-strict). Default 3; 1 means no retry. Named Attempts rather than
	// Retries so that its zero value (the default) and "no retry" (1) are
	// both expressible.
	Attempts int
	// Backoff is the wait before the second attempt; it doubles with each
	// further attempt, up to MaxBackoff. Defaults 100ms and 5s.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// ResendInterval is how often the resender tries again while the queue
	// refuses the spool's messages (closed, poisoned, full, slow). Attach
	// and Flush make it try at once. Default 1s.
	ResendInterval time.Duration
	// MaxSpoolBytes bounds the bytes of the messages waiting in the spool
	// (their encoded frames); a Send that would go above it returns
	// ErrSpoolFull. 0 means no limit.
	MaxSpoolBytes int64
	// MaxMessageSize bounds the encoded size of one message, as
	// Options.MaxMessageSize does for the queue; Send also applies the
	// attached queue's own limit. It sizes the spool's segments, which must
	// hold the largest message even while no queue is attached. Default 4 MiB.
	MaxMessageSize int
	// Logger receives spooling, replay and resender errors. Default: discard.
	Logger *slog.Logger

	fs               vfs.FS // tests: crashable or faulty file system for the spool
	spoolSegmentSize int64  // tests: small spool segments
}

func (o *ProducerOptions) withDefaults() (ProducerOptions, error) {
	var out ProducerOptions
	if o != nil {
		out = *o
	}
	if out.Strict && out.SpoolDir == "" {
		return out, invalid("SpoolDir", "is required in strict mode")
	}
	if !out.Strict && out.SpoolDir != "" {
		return out, invalid("SpoolDir", "is set (%q) but Strict is false: only a strict producer spools", out.SpoolDir)
	}
	if err := defaulted("Attempts", &out.Attempts, DefaultProducerAttempts); err != nil {
		return out, err
	}
	if err := defaulted("Backoff", &out.Backoff, DefaultProducerBackoff); err != nil {
		return out, err
	}
	if out.MaxBackoff < 0 {
		return out, invalid("MaxBackoff", "is negative (%v)", out.MaxBackoff)
	}
	if out.MaxBackoff == 0 {
		out.MaxBackoff = max(DefaultMaxBackoff, out.Backoff)
	}
	if out.MaxBackoff < out.Backoff {
		return out, invalid("MaxBackoff", "is %v, below Backoff %v", out.MaxBackoff, out.Backoff)
	}
	if err := defaulted("ResendInterval", &out.ResendInterval, DefaultResendInterval); err != nil {
		return out, err
	}
	if out.MaxSpoolBytes < 0 {
		return out, invalid("MaxSpoolBytes", "is negative (%d)", out.MaxSpoolBytes)
	}
	if err := defaulted("MaxMessageSize", &out.MaxMessageSize, DefaultMaxMessageSize); err != nil {
		return out, err
	}
	if out.MaxMessageSize < MinMessageSizeLimit {
		return out, invalid("MaxMessageSize", "is %d, below the minimum %d", out.MaxMessageSize, MinMessageSizeLimit)
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.fs == nil {
		out.fs = hook.FS
	}
	if out.fs == nil {
		out.fs = vfs.OS
	}
	if min := int64(out.MaxMessageSize) + segmentOverhead; out.spoolSegmentSize < min {
		out.spoolSegmentSize = max(min, minSpoolSegmentSize)
	}
	return out, nil
}

// Outcome says where a message given to Producer.Send ended up.
type Outcome int

const (
	// Failed: Send returned an error. The message is neither confirmed by
	// the queue nor spooled. (In non-strict mode an earlier attempt may
	// have appended it without confirmation.)
	Failed Outcome = iota
	// Sent: the queue appended the message; SendResult says where and how
	// far it is guaranteed. A strict producer reports Sent only with SendOK.
	Sent
	// Spooled: the message is durable (fdatasync'ed) in the producer's
	// spool, not yet confirmed by the queue; the resender will send it, in
	// order, with the same ID. It survives a crash of the process or the
	// machine: a producer opened again on the same SpoolDir resends it.
	Spooled
)

// String returns the outcome's Go name, e.g. "Spooled".
func (o Outcome) String() string {
	switch o {
	case Failed:
		return "Failed"
	case Sent:
		return "Sent"
	case Spooled:
		return "Spooled"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// ProduceResult is what Producer.Send did with a message. ID is always set
// (generated if the message had none); Seq, Status and Duplicate are the
// queue's when Outcome is Sent, and zero when it is Spooled (the message has
// no confirmed place in the queue yet).
type ProduceResult struct {
	SendResult
	Outcome Outcome
	// Cause, for Spooled, is why the message was not sent directly: the
	// queue's last error, or an error describing the last non-OK status.
	// It is nil when the message was spooled only to stay behind messages
	// already in the spool.
	Cause error
}

// Producer sends messages to a Queue with retries and, in strict mode,
// spools what the queue does not confirm with SendOK.
//
// Strict mode: Send returns Sent only with SendOK. A message goes to the
// spool, durable before Send returns Spooled, when the spool already holds
// messages (so it stays behind them), when no queue is attached or the queue
// is closed or poisoned (at once), or when the queue still refuses it or
// returns a non-OK status (FlushDiskTimeout, ...) after Attempts. A message
// with a non-OK status may already be in the queue; it is resent with the
// same ID. A background resender sends the spool's messages in order as soon
// as the queue accepts them again, including after Attach of a queue opened
// anew, and after a restart of the process on the same SpoolDir.
//
// Order: if Send(m1) returned before Send(m2) was called, the first
// occurrence of m1 in the queue comes before that of m2.
//
// Duplicates: every attempt and every resend carries the message's ID (Send
// fills an empty ID before the first attempt), so the queue's deduplication
// (Options.DedupWindow) answers a resend of a message that did land with the
// original's seq and SendResult.Duplicate set, appending nothing; a Sent
// result with Duplicate set means an earlier attempt of the same Send landed.
// Messages land more than once only when the dedup window no longer covers
// them: a message appended without confirmation (a non-OK status, or an
// error after a partial write) and spooled, then replayed more than
// DedupWindow later, is appended again. The window must therefore exceed the
// longest outage to be ridden out without duplicates; the resender logs a
// warning when it replays messages older than the window (or with dedup off).
// Messages spooled while the queue refused them outright were never appended
// and cannot be duplicated.
//
// Errors that mean the message itself is bad (ErrMessageTooLarge,
// ErrInvalidMessage) and a context that ends before anything was appended are
// returned, never spooled. A spool that is full (ErrSpoolFull) or whose
// write or fdatasync failed is an error too: a Spooled outcome is only
// reported for a message that is durable in the spool.
//
// All methods are safe for concurrent use. The Producer does not own the
// queue: Close leaves it open.
type Producer struct {
	opts   ProducerOptions
	logger *slog.Logger

	mu     sync.Mutex // guards q, closed, stuck
	q      *Queue
	closed bool
	stuck  error // the resender's last permanent failure, cleared by Attach and progress

	bindMu     sync.Mutex // guards spoolQueue, spoolFile and the spool's IDENTITY (bindSpool)
	spoolQueue queueID    // the queue the spool's messages are for
	spoolFile  queueID    // the queue the spool's IDENTITY names

	sends     sync.WaitGroup // Sends in progress
	stop      chan struct{}  // closed by Close
	closeOnce sync.Once
	closeErr  error

	idPrefix  string
	idCounter atomic.Uint64

	// Strict mode only.
	log          *wal.Log
	spoolMu      sync.Mutex // guards appends to log and the fields below
	spoolBuf     []byte
	spoolCount   int           // messages in the spool not yet confirmed by the queue
	confirmedTo  uint64        // the spool seqs below it are confirmed by the queue
	recordedTo   uint64        // ...and the ones below it recorded by a durable progress record
	progressErr  error         // why the last progress record was not written, while recordedTo < confirmedTo
	spoolBytes   int64         // their frame bytes
	changed      chan struct{} // closed and replaced when spoolCount falls, stuck changes or the spool fails
	startFloor   uint64        // spool seq the resender starts at
	data         chan struct{} // a message was spooled
	retry        chan struct{} // try the queue now (Attach, Flush)
	sendCtx      context.Context
	cancelSends  context.CancelFunc
	resenderDone chan struct{}
	refusals     atomic.Uint64 // resends the queue refused (tests)
}

// NewProducer returns a producer sending to q. q may be nil: a strict
// producer then spools everything until Attach; a non-strict one fails its
// Sends. In strict mode it opens (and recovers) the spool in SpoolDir and
// starts the resender, which resends at once what an earlier producer left
// there. It fails with ErrInvalidOptions naming the field, with
// ErrLocked if the spool is open in another producer, and with
// ErrWrongDirectory if SpoolDir is a queue's directory or a follower's
// copy, holds files zeroloss did not create, or holds messages spooled for
// another queue than q (SpoolDir records the ID of the queue it spools
// for; a promoted follower keeps its leader's).
func NewProducer(q *Queue, opts *ProducerOptions) (*Producer, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var prefix [8]byte
	if _, err := rand.Read(prefix[:]); err != nil {
		return nil, err
	}
	p := &Producer{
		opts:     o,
		logger:   o.Logger,
		q:        q,
		stop:     make(chan struct{}),
		idPrefix: hex.EncodeToString(prefix[:]) + "-",
	}
	if !o.Strict {
		return p, nil
	}
	var id identity
	claim := func() (err error) {
		id, err = claimDir(o.fs, o.SpoolDir, kindSpool)
		return err
	}
	log, rec, err := wal.Open(o.SpoolDir, wal.Options{FS: o.fs, SegmentSize: o.spoolSegmentSize, Logger: o.Logger,
		SlotInterval: defaultSlotInterval, SlotBytes: defaultSlotBytes, Recycle: DefaultRecycleSegments, Claim: claim})
	if err != nil {
		return nil, fmt.Errorf("zeroloss: producer: open spool %s: %w", o.SpoolDir, err)
	}
	p.log = log
	if err := p.recoverSpool(); err != nil {
		log.Close()
		return nil, fmt.Errorf("zeroloss: producer: recover spool %s: %w", o.SpoolDir, err)
	}
	p.spoolQueue, p.spoolFile = id.Queue, id.Queue
	if err := p.bindSpool(q); err != nil {
		log.Close()
		return nil, fmt.Errorf("zeroloss: producer: spool %s: %w", o.SpoolDir, err)
	}
	p.changed = make(chan struct{})
	p.data = make(chan struct{}, 1)
	p.retry = make(chan struct{}, 1)
	p.resenderDone = make(chan struct{})
	p.sendCtx, p.cancelSends = context.WithCancel(context.Background())
	p.logger.Info("zeroloss: producer: spool opened", "dir", o.SpoolDir, "spooled", p.spoolCount,
		"bytes", p.spoolBytes, "unclean", rec.Unclean)
	go p.resendLoop()
	return p, nil
}

// bindSpool checks that the spool (identity id) belongs to the queue the
// producer sends to, and records that queue's ID in it: a spool holding
// messages spooled for another queue is refused, so that they are not resent
// to the wrong one (a promoted follower keeps its queue's ID, so a failover
// does not count as another queue). An empty spool, or one whose queue is
// not known yet (NewProducer with a nil queue), is bound to q.
//
// To resend a spool's messages to another queue on purpose, remove the
// spool's IDENTITY file while no producer has it open.
func (p *Producer) bindSpool(q *Queue) error {
	p.bindMu.Lock()
	defer p.bindMu.Unlock()
	if q == nil {
		return nil
	}
	if p.spoolQueue != q.identity.Queue {
		if n := p.Spooled(); !p.spoolQueue.isZero() && n > 0 {
			return fmt.Errorf("it holds %d messages spooled for queue %s, and the producer sends to queue %s: %w",
				n, p.spoolQueue, q.identity.Queue, ErrWrongDirectory)
		}
		p.spoolQueue = q.identity.Queue
	}
	if p.spoolFile != p.spoolQueue {
		// The check above holds in this process whatever the file says; a
		// failure to record the binding (a full disk) does not stop the
		// producer, and the next bindSpool tries again.
		if err := writeIdentity(p.opts.fs, p.opts.SpoolDir, identity{Kind: kindSpool, Queue: p.spoolQueue}); err != nil {
			p.logger.Warn("zeroloss: producer: could not record the spool's queue", "dir", p.opts.SpoolDir,
				"queue_id", p.spoolQueue, "error", err)
			return nil
		}
		p.spoolFile = p.spoolQueue
	}
	return nil
}

// recoverSpool reads the spool: the highest progress floor, and the messages
// at or above it.
func (p *Producer) recoverSpool() error {
	r := p.log.NewReader(0)
	defer r.Close()
	var floor uint64
	type msg struct {
		seq  uint64
		size int
	}
	var msgs []msg
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		switch {
		case rec.Type == record.TypeMessage:
			msgs = append(msgs, msg{rec.Seq, rec.Size()})
		case rec.Type == record.TypeAck && rec.Stream == spoolProgressStream:
			a, err := record.DecodeAck(rec.Payload)
			if err != nil {
				return fmt.Errorf("progress record at spool seq %d: %w", rec.Seq, err)
			}
			floor = max(floor, a.Floor)
		}
	}
	for _, m := range msgs {
		if m.seq >= floor {
			p.spoolCount++
			p.spoolBytes += int64(m.size)
		}
	}
	p.startFloor = floor
	if p.log.LastSeq() == 0 {
		// A new spool: a first progress record marks the directory as a
		// spool, so that zeroloss inspect reports its depth.
		payload := record.AppendAck(nil, &record.Ack{})
		if _, _, err := p.log.Append(record.AppendFrame(nil, record.TypeAck, spoolProgressStream, time.Now().UnixNano(), payload)); err != nil {
			return err
		}
		if _, err := p.log.Sync(); err != nil {
			return err
		}
	}
	if _, err := p.log.RemoveBefore(floor); err != nil {
		p.logger.Warn("zeroloss: producer: could not remove drained spool segments", "error", err)
	}
	return nil
}

// Send sends m. It returns Sent when the queue appended it (in strict mode:
// with SendOK), Spooled when it is durable in the spool instead (strict mode
// only), and an error otherwise. It retries with backoff up to Attempts on
// errors and non-OK statuses, except for errors about the message itself and
// a context that ended.
//
// Non-strict mode returns the last attempt's result or error: a non-OK
// status with a nil error, as Queue.Send does.
//
// Send does not modify m; an empty ID is filled in, before the first attempt,
// in the message sent and in the result. A message with NoDedup set is
// refused with ErrInvalidMessage: the retries and the spool's replay are
// safe only because the queue deduplicates them by ID.
func (p *Producer) Send(ctx context.Context, m *Message) (ProduceResult, error) {
	if m == nil {
		return ProduceResult{}, fmt.Errorf("zeroloss: producer: nil message: %w", ErrInvalidMessage)
	}
	if m.NoDedup {
		// Resending until SendOK, and replaying the spool after a restart,
		// are safe only because the queue deduplicates the resends.
		return ProduceResult{}, fmt.Errorf("zeroloss: producer: message %q: NoDedup is refused: the producer's resends rely on deduplication by ID: %w",
			m.ID, ErrInvalidMessage)
	}
	if err := p.enter(); err != nil {
		return ProduceResult{}, err
	}
	defer p.sends.Done()
	msg := *m
	if msg.ID == "" {
		msg.ID = p.newID()
	}
	failed := ProduceResult{SendResult: SendResult{ID: msg.ID}}
	if err := p.checkSize(&msg); err != nil {
		return failed, err
	}
	if err := ctx.Err(); err != nil {
		return failed, err
	}
	if p.opts.Strict && p.Spooled() > 0 {
		return p.spool(&msg, nil)
	}
	var (
		res      SendResult
		err      error
		cause    error
		appended bool // an attempt may have put the message in the queue
	)
	for attempt := 1; ; attempt++ {
		q := p.queue()
		switch {
		case q == nil:
			res, err = SendResult{}, fmt.Errorf("zeroloss: producer: %w", errQueueDetached)
		case q.Err() != nil:
			// Poisoned: refused at once. (A resend of an ID the poisoned
			// queue appended but never synced would otherwise wait
			// FlushTimeout for a durability that cannot come.)
			res, err = SendResult{}, fmt.Errorf("zeroloss: producer: %w", q.Err())
		default:
			res, err = q.Send(ctx, &msg)
		}
		switch {
		case err == nil && res.Status == SendOK:
			return ProduceResult{SendResult: res, Outcome: Sent}, nil
		case err == nil:
			appended = true
			cause = fmt.Errorf("zeroloss: producer: queue returned %v for %q (seq %d)", res.Status, res.ID, res.Seq)
		case badMessage(err):
			return failed, err
		case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
			if p.opts.Strict && appended {
				return p.spool(&msg, cause)
			}
			return failed, err
		default:
			cause = err
			if p.opts.Strict && (errors.Is(err, ErrClosed) || errors.Is(err, ErrPoisoned)) {
				return p.spool(&msg, cause) // the queue will not come back by itself
			}
		}
		if attempt >= p.opts.Attempts {
			break
		}
		if p.opts.Strict && p.Spooled() > 0 {
			break // others are spooled already: no point hammering the queue
		}
		if serr := p.sleep(ctx, p.backoff(attempt)); serr != nil {
			// ctx ended or Close: no more attempts. Strict mode spools the
			// message, unless ctx ended and no attempt may have appended
			// it (the caller gave up before anything happened); non-strict
			// mode returns the last result or error.
			if p.opts.Strict && !appended && ctx.Err() != nil {
				return failed, ctx.Err()
			}
			break
		}
	}
	if p.opts.Strict {
		return p.spool(&msg, cause)
	}
	if err != nil {
		return failed, err
	}
	return ProduceResult{SendResult: res, Outcome: Sent}, nil
}

// badMessage reports whether err is about the message itself: sending it
// again cannot succeed.
func badMessage(err error) bool {
	return errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrInvalidMessage)
}

// enter counts a Send in progress, or refuses it after Close.
func (p *Producer) enter() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("zeroloss: producer closed: %w", ErrClosed)
	}
	p.sends.Add(1)
	return nil
}

func (p *Producer) newID() string {
	return makeID(p.idPrefix, p.idCounter.Add(1))
}

func (p *Producer) queue() *Queue {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.q
}

// checkSize refuses a message above the producer's or the attached queue's
// MaxMessageSize, or one the queue would refuse (checkMessage): it is never
// spooled.
func (p *Producer) checkSize(m *Message) error {
	if err := checkMessage(0, m); err != nil {
		return fmt.Errorf("zeroloss: producer: %w", err)
	}
	rm := toRecord(m)
	n := frameSize(&rm)
	limit, whose := p.opts.MaxMessageSize, "ProducerOptions.MaxMessageSize"
	if q := p.queue(); q != nil && q.opts.MaxMessageSize < limit {
		limit, whose = q.opts.MaxMessageSize, "the queue's MaxMessageSize"
	}
	if n > limit {
		return fmt.Errorf("zeroloss: producer: message %q encodes to %d bytes, above %s %d: %w",
			m.ID, n, whose, limit, ErrMessageTooLarge)
	}
	return nil
}

// backoff returns the wait after the given failed attempt (1-based).
func (p *Producer) backoff(attempt int) time.Duration {
	d := p.opts.Backoff
	for i := 1; i < attempt && d < p.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, p.opts.MaxBackoff)
}

// sleep waits d, or until ctx ends (its error) or the producer closes
// (ErrClosed).
func (p *Producer) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.stop:
		return ErrClosed
	}
}

// spool appends m to the spool and waits for its fdatasync.
func (p *Producer) spool(m *Message, cause error) (ProduceResult, error) {
	failed := ProduceResult{SendResult: SendResult{ID: m.ID}}
	rm := toRecord(m)
	size := int64(frameSize(&rm))
	p.spoolMu.Lock()
	if max := p.opts.MaxSpoolBytes; max > 0 && p.spoolBytes+size > max {
		used := p.spoolBytes
		p.spoolMu.Unlock()
		return failed, fmt.Errorf("zeroloss: producer: spool %q: %w (%d of %d bytes used)", m.ID, ErrSpoolFull, used, max)
	}
	p.spoolBuf = record.AppendMessageFrame(p.spoolBuf[:0], 0, 0, time.Now().UnixNano(), &rm)
	seq, _, err := p.log.Append(p.spoolBuf)
	if err != nil {
		p.spoolMu.Unlock()
		return failed, fmt.Errorf("zeroloss: producer: spool %q: %w", m.ID, err)
	}
	first := p.spoolCount == 0
	p.spoolCount++
	p.spoolBytes += size
	p.spoolMu.Unlock()
	// Sync outside spoolMu: concurrent spoolers share one fdatasync, since a
	// Sync covers everything appended before it.
	synced, err := p.log.Sync()
	if err == nil && synced < seq {
		err = fmt.Errorf("spool synced up to seq %d, below %d", synced, seq)
	}
	if err != nil {
		// The spool is poisoned; the frame may or may not be on disk.
		p.spoolMu.Lock()
		p.broadcastLocked() // a waiting Flush returns the error
		p.spoolMu.Unlock()
		return failed, fmt.Errorf("zeroloss: producer: spool %q: %w", m.ID, err)
	}
	if first {
		p.logger.Warn("zeroloss: producer: spooling", "id", m.ID, "cause", cause)
	}
	nudge(p.data)
	return ProduceResult{SendResult: SendResult{ID: m.ID}, Outcome: Spooled, Cause: cause}, nil
}

func nudge(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// broadcastLocked wakes Flush: the spool shrank, the resender is stuck or
// no longer, or the spool failed. The caller holds spoolMu.
func (p *Producer) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Spooled returns how many messages wait in the spool: durable there, not yet
// confirmed by the queue. Always 0 for a non-strict producer.
func (p *Producer) Spooled() int {
	if !p.opts.Strict {
		return 0
	}
	p.spoolMu.Lock()
	defer p.spoolMu.Unlock()
	return p.spoolCount
}

// Attach makes the producer send to q from now on (nil detaches it: a strict
// producer then spools). The resender tries q at once. Sends already talking
// to the previous queue finish with it. The producer does not close the
// previous queue. A strict producer whose spool holds messages for another
// queue (its queue ID differs from q's; a promoted follower keeps its
// leader's) is not attached: it stays detached and Flush returns
// ErrWrongDirectory. An empty spool is rebound to q.
func (p *Producer) Attach(q *Queue) {
	if p.opts.Strict {
		if err := p.bindSpool(q); err != nil {
			err = fmt.Errorf("zeroloss: producer: attach: spool %s: %w", p.opts.SpoolDir, err)
			p.logger.Error("zeroloss: producer: not attached: the spool is another queue's", "error", err)
			p.mu.Lock()
			p.q = nil
			p.mu.Unlock()
			p.setStuck(err)
			return
		}
	}
	p.mu.Lock()
	p.q = q
	p.mu.Unlock()
	if p.opts.Strict {
		p.setStuck(nil)
		nudge(p.retry)
	}
}

// Flush waits until the spool is empty, every spooled message confirmed by
// the queue with SendOK and the progress recorded durably in the spool, or
// until ctx ends. If the progress record could not be written (a full disk,
// a failed fdatasync) it writes it again, or returns the error when the
// spool cannot: the messages are in the queue, but a producer opened on
// the spool later would send them again (duplicates by ID). It
// makes the resender try the queue at once. It returns early with the error
// when the spool cannot be drained as things are: the spool failed, or the
// queue refuses a spooled message as invalid (e.g. ErrMessageTooLarge, when
// the attached queue's MaxMessageSize is below the producer's; nothing is
// dropped: Attach a queue that accepts it). For a non-strict producer it
// returns nil at once.
func (p *Producer) Flush(ctx context.Context) error {
	if !p.opts.Strict {
		return nil
	}
	nudge(p.retry)
	for {
		p.spoolMu.Lock()
		n, ch := p.spoolCount, p.changed
		p.spoolMu.Unlock()
		if n == 0 {
			return p.flushProgress()
		}
		if err := p.log.Err(); err != nil {
			return fmt.Errorf("zeroloss: producer: flush: %d messages spooled: %w", n, err)
		}
		p.mu.Lock()
		stuck, closed := p.stuck, p.closed
		p.mu.Unlock()
		if stuck != nil {
			return fmt.Errorf("zeroloss: producer: flush: %d messages spooled: %w", n, stuck)
		}
		if closed {
			return fmt.Errorf("zeroloss: producer closed with %d messages spooled: %w", n, ErrClosed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("zeroloss: producer: flush: %d messages still spooled: %w", n, ctx.Err())
		case <-p.stop:
		}
	}
}

// flushProgress makes sure the spool's progress is durable once the spool is
// empty: a progress record that could not be written is written again, if
// the spool still can be.
func (p *Producer) flushProgress() error {
	floor, cause := p.unrecorded()
	if floor == 0 {
		return nil
	}
	if p.log.Err() == nil {
		cause = p.writeProgress(floor)
		if cause == nil {
			return nil
		}
	}
	return fmt.Errorf("zeroloss: producer: flush: the spool's progress is not recorded; "+
		"a producer opened on the spool would send the confirmed messages again: %w", cause)
}

func (p *Producer) setStuck(err error) {
	p.mu.Lock()
	changed := p.stuck != err
	p.stuck = err
	p.mu.Unlock()
	if changed && p.opts.Strict {
		p.spoolMu.Lock()
		p.broadcastLocked()
		p.spoolMu.Unlock()
	}
}

// Close stops the producer: it refuses new Sends, waits for those in progress
// (a strict Send waiting to retry spools its message at once), stops the
// resender (letting a resend in flight finish for up to 5s) and closes the
// spool. Messages still spooled stay in SpoolDir and are resent by the next
// producer opened on it. Close does not close the queue. It is idempotent.
func (p *Producer) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		close(p.stop)
		p.mu.Unlock()
		p.sends.Wait()
		if !p.opts.Strict {
			return
		}
		select {
		case <-p.resenderDone:
		case <-time.After(producerCloseGrace):
			p.cancelSends()
			<-p.resenderDone
		}
		p.cancelSends()
		n := p.Spooled()
		if err := p.log.Close(); err != nil {
			p.closeErr = fmt.Errorf("zeroloss: producer: close spool %s: %w", p.opts.SpoolDir, err)
		}
		if n > 0 {
			p.logger.Info("zeroloss: producer: closed with messages spooled", "dir", p.opts.SpoolDir, "spooled", n)
		}
	})
	return p.closeErr
}

// spoolEntry is a spooled message read by the resender.
type spoolEntry struct {
	seq     uint64
	size    int
	spooled time.Time
	msg     *Message
}

// resendLoop is the resender goroutine: it reads the spool in order from the
// recovered floor and sends what it read, in batches, until Close.
func (p *Producer) resendLoop() {
	defer close(p.resenderDone)
	rd := p.log.NewReader(p.startFloor)
	defer rd.Close()
	var pend []spoolEntry // read, not yet confirmed with SendOK
	refused := false
	var lastRefusal string
	staleWarned := false // since the spool was last empty
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		if refused {
			timer.Reset(p.opts.ResendInterval)
			select {
			case <-p.stop:
				return
			case <-p.retry:
			case <-timer.C:
			}
			timer.Stop()
			refused = false
		}
		var err error
		if pend, err = p.fill(rd, pend); err != nil {
			p.logger.Error("zeroloss: producer: cannot read the spool", "error", err)
			p.setStuck(err)
			refused = true
			continue
		}
		q := p.queue()
		if len(pend) == 0 || q == nil {
			select { // new data matters only if there is a queue to send it to
			case <-p.stop:
				return
			case <-p.retry:
			case <-p.dataIf(q != nil):
			}
			continue
		}
		if !staleWarned {
			staleWarned = p.warnStale(q, pend)
		}
		n, err := p.resendBatch(q, pend)
		if n > 0 {
			pend = pend[:copy(pend, pend[n:])]
		}
		if err == nil {
			if lastRefusal != "" {
				p.logger.Info("zeroloss: producer: the queue accepts the spool again")
				lastRefusal = ""
			}
			if p.Spooled() == 0 {
				staleWarned = false // next outage, next warning
			}
			continue
		}
		p.refusals.Add(1)
		refused = true
		if badMessage(err) {
			p.setStuck(fmt.Errorf("queue refuses spooled message %q: %w", pend[0].msg.ID, err))
		}
		if msg := err.Error(); msg != lastRefusal {
			p.logger.Warn("zeroloss: producer: queue refuses the spool; retrying", "error", err,
				"spooled", p.Spooled(), "interval", p.opts.ResendInterval)
			lastRefusal = msg
		}
	}
}

// warnStale logs, and reports, whether pend holds a message spooled longer
// ago than q's dedup window: if an attempt appended it before it was spooled
// (a non-OK status), the queue no longer remembers its ID and the replay
// appends it a second time.
func (p *Producer) warnStale(q *Queue, pend []spoolEntry) bool {
	window := q.opts.DedupWindow
	age := time.Since(pend[0].spooled) // the oldest: the spool is in order
	if window >= 0 && age <= window {
		return false
	}
	p.logger.Warn("zeroloss: producer: replaying spooled messages older than the queue's dedup window; "+
		"those an earlier attempt appended will be duplicated", "oldest_id", pend[0].msg.ID, "age", age,
		"dedup_window", window)
	return true
}

// dataIf returns the spool's data channel, or nil (never ready) if !ok.
func (p *Producer) dataIf(ok bool) chan struct{} {
	if ok {
		return p.data
	}
	return nil
}

// fill reads spooled messages after those in pend, up to a batch.
func (p *Producer) fill(rd *wal.Reader, pend []spoolEntry) ([]spoolEntry, error) {
	bytes := 0
	for _, e := range pend {
		bytes += e.size
	}
	for len(pend) < resendBatch && bytes < resendBatchBytes {
		rec, err := rd.Next()
		if err == io.EOF {
			return pend, nil
		}
		if err != nil {
			return pend, err
		}
		if rec.Type != record.TypeMessage || rec.Seq < p.startFloor {
			continue
		}
		m, err := record.DecodeMessage(rec.Payload)
		if err != nil {
			return pend, fmt.Errorf("spool seq %d: %w", rec.Seq, err)
		}
		pend = append(pend, spoolEntry{seq: rec.Seq, size: rec.Size(), spooled: time.Unix(0, rec.Time),
			msg: &Message{ID: m.ID, Topic: m.Topic, Tag: m.Tag, Key: m.Key, Headers: m.Headers, Body: m.Body, DeliverAt: m.DeliverAt}})
		bytes += rec.Size()
	}
	return pend, nil
}

// resendBatch sends pend with one SendBatch, records the progress of those
// confirmed with SendOK, and returns how many were. err != nil means the rest
// must wait.
func (p *Producer) resendBatch(q *Queue, pend []spoolEntry) (int, error) {
	if err := q.Err(); err != nil {
		return 0, err // poisoned: see Send
	}
	msgs := make([]*Message, len(pend))
	for i, e := range pend {
		msgs[i] = e.msg
	}
	results, err := q.SendBatch(p.sendCtx, msgs)
	if len(results) == 0 && len(msgs) > 1 && badMessage(err) {
		// SendBatch refuses the whole batch for one bad message: send the
		// messages one by one, so those ahead of it get through.
		err = nil
		for _, m := range msgs {
			r, e := q.Send(p.sendCtx, m)
			if e != nil {
				err = e
				break
			}
			results = append(results, r)
			if r.Status != SendOK {
				break
			}
		}
	}
	ok := 0
	for ok < len(results) && results[ok].Status == SendOK {
		ok++
	}
	if ok > 0 {
		p.confirmed(pend[:ok])
	}
	if err == nil && ok < len(pend) {
		r := results[ok]
		err = fmt.Errorf("queue returned %v for spooled message %q (seq %d)", r.Status, r.ID, r.Seq)
	}
	if err == nil {
		p.setStuck(nil)
	}
	return ok, err
}

// confirmed records that done, the oldest spooled messages, are in the queue
// with SendOK: a progress record, synced, then the counts, then the removal
// of drained segments. If the progress record cannot be written, the
// messages are still counted as sent (they are in the queue), and Flush
// reports it (writing the record again if the spool still can); a producer
// opened on the spool later sends them again (duplicates by ID).
func (p *Producer) confirmed(done []spoolEntry) {
	floor := done[len(done)-1].seq + 1
	var bytes int64
	for _, e := range done {
		bytes += int64(e.size)
	}
	err := p.writeProgress(floor)
	if err != nil {
		p.logger.Error("zeroloss: producer: could not record resend progress; a later producer will send these again",
			"through_id", done[len(done)-1].msg.ID, "error", err)
	}
	p.spoolMu.Lock()
	p.spoolCount -= len(done)
	p.spoolBytes -= bytes
	left := p.spoolCount
	p.broadcastLocked()
	p.spoolMu.Unlock()
	if left == 0 {
		p.logger.Info("zeroloss: producer: spool drained")
	}
	if err == nil {
		if _, err := p.log.RemoveBefore(floor); err != nil {
			p.logger.Warn("zeroloss: producer: could not remove drained spool segments", "error", err)
		}
	}
}

// writeProgress appends a progress record saying that the spool seqs below
// floor are confirmed by the queue, and syncs it. It keeps confirmedTo,
// recordedTo and progressErr.
func (p *Producer) writeProgress(floor uint64) error {
	payload := record.AppendAck(nil, &record.Ack{Floor: floor, Mark: floor})
	p.spoolMu.Lock()
	p.confirmedTo = max(p.confirmedTo, floor)
	frame := record.AppendFrame(nil, record.TypeAck, spoolProgressStream, time.Now().UnixNano(), payload)
	seq, _, err := p.log.Append(frame)
	p.spoolMu.Unlock()
	if err == nil {
		var synced uint64
		if synced, err = p.log.Sync(); err == nil && synced < seq {
			err = fmt.Errorf("spool synced up to seq %d, below %d", synced, seq)
		}
	}
	p.spoolMu.Lock()
	defer p.spoolMu.Unlock()
	if err != nil {
		p.progressErr = err
		return err
	}
	p.recordedTo = max(p.recordedTo, floor)
	if p.recordedTo >= p.confirmedTo {
		p.progressErr = nil
	}
	return nil
}

// unrecorded returns the floor of a progress record not written yet (0 if
// every confirmation is recorded) and why it was not.
func (p *Producer) unrecorded() (uint64, error) {
	p.spoolMu.Lock()
	defer p.spoolMu.Unlock()
	if p.recordedTo >= p.confirmedTo {
		return 0, nil
	}
	return p.confirmedTo, p.progressErr
}
