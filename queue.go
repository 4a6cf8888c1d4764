package zeroloss

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// Message is what producers send and consumers receive.
type Message struct {
	// ID identifies the message. Send fills an empty ID with a unique one.
	// At most MaxIDLength bytes.
	ID string
	// Topic is the topic the message is sent to: the consumer groups of
	// that topic receive it. Empty: the default topic. At most
	// MaxTopicLength bytes of ASCII letters, digits and . _ - : /.
	Topic string
	// Tag is an optional label within the topic (RocketMQ's tag): a group
	// may take only the tags it lists (ConsumerOptions.Tags). At most
	// MaxTagLength bytes, of the characters a Topic may hold.
	Tag string
	// Key is an application key (for ordering or routing); optional. At
	// most MaxKeyLength bytes.
	Key string
	// Headers are application metadata; optional.
	Headers map[string]string
	// Body is the payload.
	Body []byte
	// DeliverAt, if set and in the future, holds the message back from
	// consumers until then (delayed delivery). It is stored with the
	// message as a wall-clock time and survives restarts.
	DeliverAt time.Time
	// NoDedup opts this one send out of deduplication: the message is
	// appended even if its ID was sent within the dedup window, and its ID
	// is not remembered, now or after a restart, so a later Send of the
	// same ID is not answered from it. Set it when the ID names the message
	// rather than the attempt to send it (an event's UUID that may be
	// published again on purpose, as Watermill does). A resend of a NoDedup
	// message after an unconfirmed status may store it twice. Other
	// messages of the queue, and other sends of the same ID without
	// NoDedup, are deduplicated as usual. A Producer refuses it (its
	// resends rely on deduplication). Consumers receive it false.
	NoDedup bool
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
	// WaitCanceled: appended (written to the operating system), but the
	// Send's ctx ended while it waited for the confirmation (the fdatasync,
	// or under ReplicateSync the follower's ack), so it was not awaited: the
	// message may or may not survive a power loss, or reach the follower.
	// The caller gave up; it says nothing about the disk or the follower
	// (Stats counts it as WaitsCanceled, apart from FlushTimeouts and
	// ReplicaTimeouts).
	WaitCanceled
)

var statusNames = [...]string{
	SendOK: "SendOK", FlushDiskTimeout: "FlushDiskTimeout",
	FlushReplicaTimeout: "FlushReplicaTimeout", ReplicaNotAvailable: "ReplicaNotAvailable",
	WaitCanceled: "WaitCanceled",
}

// String returns the status's Go name, e.g. "SendOK".
func (s SendStatus) String() string {
	if s >= SendOK && s <= WaitCanceled {
		return statusNames[s]
	}
	return "SendStatus(" + strconv.Itoa(int(s)) + ")"
}

// SendResult is the outcome of appending one message.
type SendResult struct {
	Seq    uint64 // position in the log; strictly increasing, never reused
	ID     string // the message's ID (generated if it was empty)
	Status SendStatus
	// Duplicate says a message with this ID was appended before, within
	// the dedup window: nothing was appended, Seq is the original's and
	// Status its durability now.
	Duplicate bool
}

// Queue is a durable message queue in one directory. All methods are safe for
// concurrent use.
type Queue struct {
	opts   Options
	log    *wal.Log
	logger *slog.Logger

	mu           sync.Mutex // guards pending, closing, committing and the spares
	pending      *batch     // the batch Sends are joining
	closing      bool
	committing   bool   // a batch is being written (by a Send or the committer)
	spareBuf     []byte // a written batch's buffer, for the next batch
	spareEntries []batchEntry

	slots            chan struct{} // MaxPending Sends at a time
	inFlight         atomic.Int64  // Sends between joining and returning
	pendingLive      atomic.Int64  // pending.live, for leave to look at without q.mu
	committerWaiting atomic.Bool
	wake             chan struct{} // nudges the waiting committer
	commitTimer      *time.Timer   // the pending batch's deadline (armDeadline), or stopped
	committerDone    chan struct{}
	leaders          sync.WaitGroup // commits started by leading Sends
	stopSyncer       chan struct{}
	syncerDone       chan struct{}
	closeOnce        sync.Once
	closeErr         error

	handlersMu     sync.Mutex     // guards handlersClosed and Adds to handlers
	handlersClosed bool           // Close began: Consume starts no more workers
	handlers       sync.WaitGroup // Consume workers running (consumer.go)
	asyncAckers    sync.WaitGroup // writeAsyncAcks goroutines running (ackasync.go); Adds under handlersMu

	groupsMu    sync.Mutex
	groups      map[string]*group
	ledger      *ledger     // consumer state as the log holds it (ledger.go)
	topics      *topicIndex // where each topic's messages are (topics.go)
	dedup       *dedupTable // IDs sent within the dedup window (dedup.go); nil if off
	tx          *txTable    // pending transactional half messages (tx.go)
	txDone      chan struct{}
	recMu       sync.RWMutex  // consumer records hold it shared, a checkpoint exclusive
	nextGroupID uint16        // stream id of the next group (groups start at 1)
	commitMu    sync.Mutex    // guards commitCh
	commitCh    chan struct{} // closed and replaced when the committed seq moves
	done        chan struct{} // closed by Close: blocked Receives return
	markerDone  chan struct{}

	usedBytes atomic.Int64  // log bytes after the last write, for MaxBytes
	committed atomic.Uint64 // last durable seq: what readers may see
	idPrefix  string
	idCounter atomic.Uint64
	stats     queueStats
	repl      replState    // replication (replica.go)
	epochs    []repl.Epoch // this directory's leadership terms, the current one last (epoch.go)
	identity  identity     // what the directory is and its queue ID (identity.go); kindQueue once open
	dir       string
	files     stateCheckpoints // the checkpoint files (checkpointfile.go): markLoop's, then Close's
}

// Open opens the queue in dir, creating it if needed, and recovers it: a torn
// tail left by a crash is cut and logged; damage to durable data fails with
// ErrCorrupt. A nil opts means defaults. Open fails with ErrLocked if the
// directory is open elsewhere, and with ErrInvalidOptions naming the field.
//
// A directory Open creates gets an IDENTITY file naming it a queue, with a
// new random queue ID, before anything else is written in it (but the LOCK
// it holds). Open fails with ErrWrongDirectory, changing nothing (but that
// LOCK), on a directory that is not a queue's (a producer's spool) or that
// holds a file zeroloss did not create. A follower's copy opens as a queue: that is
// promotion, and it keeps its queue ID. A directory written before
// directory identity gets its IDENTITY file and opens as before.
func Open(dir string, opts *Options) (*Queue, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var id identity
	claim := func() (err error) {
		id, err = claimDir(o.fs, dir, kindQueue)
		return err
	}
	log, rec, err := wal.Open(dir, wal.Options{FS: o.fs, SegmentSize: o.SegmentSize, Logger: o.Logger, Now: o.now,
		LeaseChunk: o.leaseChunk, SlotInterval: o.slotInterval, SlotBytes: o.slotBytes, Prepare: o.SegmentWarmup,
		Recycle: o.walRecycle(), Claim: claim, TrustSeals: true})
	if err != nil {
		return nil, fmt.Errorf("zeroloss: open %s: %w", dir, err)
	}
	var prefix [8]byte
	if _, err := rand.Read(prefix[:]); err != nil {
		log.Close()
		return nil, err
	}
	q := &Queue{
		opts:          o,
		log:           log,
		logger:        o.Logger,
		slots:         make(chan struct{}, o.MaxPending),
		wake:          make(chan struct{}, 1),
		commitTimer:   time.NewTimer(time.Hour),
		committerDone: make(chan struct{}),
		stopSyncer:    make(chan struct{}),
		syncerDone:    make(chan struct{}),
		idPrefix:      hex.EncodeToString(prefix[:]) + "-",
		groups:        map[string]*group{},
		nextGroupID:   1,
		ledger:        newLedger(),
		topics:        newTopicIndex(),
		dedup:         newDedupTable(o.DedupWindow, o.DedupEntries),
		tx:            newTxTable(),
		txDone:        make(chan struct{}),
		commitCh:      make(chan struct{}),
		done:          make(chan struct{}),
		markerDone:    make(chan struct{}),
		identity:      id,
		dir:           dir,
	}
	if o.DedupWindow < 0 {
		q.dedup = nil
	}
	q.pending = q.newBatch()
	if err := q.beginEpoch(dir); err != nil {
		log.Close()
		return nil, err
	}
	q.repl.init(log.SyncedSeq())
	if o.Replication == ReplicateSync {
		// Nothing is committed until a follower says, in its handshake, how
		// much of the log it holds: after a restart the leader cannot know,
		// and consumers must never see a record a failover could take back.
		// (Replay reads past the cap: it rebuilds this node's own state.)
		log.CapReaders(0)
	} else {
		q.committed.Store(log.SyncedSeq())
	}
	afterGap, err := q.recoverGroups(dir)
	if err != nil {
		log.Close()
		return nil, err
	}
	q.usedBytes.Store(log.DataBytes())
	q.logger.Info("zeroloss: opened", "dir", dir, "segments", rec.Segments, "first_seq", rec.FirstSeq,
		"last_seq", rec.LastSeq, "next_seq", rec.NextSeq, "unclean", rec.Unclean, "flush", o.Flush)
	q.commitTimer.Stop() // armed per batch (armDeadline)
	go q.commitLoop()
	go q.markLoop()
	go q.txLoop()
	if o.Flush == FlushAsync {
		go q.syncLoop()
	} else {
		close(q.syncerDone)
	}
	if afterGap {
		// The records after a gap in a follower's copy were applied only in
		// part (group.go: replayState): a checkpoint makes the state recovery
		// rebuilt the state from here on, so that this queue's own records
		// count in full after its next restart.
		if _, _, err := q.checkpoint(context.Background()); err != nil {
			q.Close()
			return nil, fmt.Errorf("zeroloss: open %s: %w", dir, err)
		}
	}
	return q, nil
}

// Send appends m and returns its seq and status. It blocks until the message
// is written (FlushAsync) or durable (FlushSync, at most FlushTimeout, then
// FlushDiskTimeout).
//
// err != nil means the message was not appended: ErrClosed,
// ErrMessageTooLarge, ErrInvalidMessage, ErrQueueFull, ErrDiskFull,
// ErrPoisoned, or ctx's error if ctx ended before the message was taken for
// writing. (After a write error that poisons the queue, a message reported as
// not appended may still be found after a restart, if the failed write partly
// reached the disk.) Once the message is taken for writing, Send no longer
// gives up on ctx before the write completes; if ctx ends while it waits for
// the fdatasync (or, under ReplicateSync, the follower's ack), it returns the
// result with WaitCanceled and a nil error: appended, durability not
// awaited.
//
// Send does not modify m; an empty ID is filled in the returned result only.
//
// Stats.SendLatency counts the calls that return a nil error, by the time
// from the call to the return.
func (q *Queue) Send(ctx context.Context, m *Message) (SendResult, error) {
	start := time.Now()
	results, err := q.sendMessages(ctx, []*Message{m}, q.recordTime(start))
	if err == nil {
		q.stats.sendLatency.record(time.Since(start))
	}
	if len(results) == 0 {
		return SendResult{}, err
	}
	return results[0], err
}

// SendBatch appends msgs in order with one write, sharing one fdatasync under
// FlushSync; the messages appended get consecutive seqs. It returns a result
// for every message up to the first that was not appended; if err != nil,
// the messages after len(results) were not appended. The statuses are those
// of Send; a message whose ID was sent before within the dedup window gets
// the original's result with Duplicate set. If a concurrent Send is sending
// one of the IDs, SendBatch first waits until that Send is decided, so the
// messages it appends keep their order even if that Send is withdrawn.
func (q *Queue) SendBatch(ctx context.Context, msgs []*Message) ([]SendResult, error) {
	start := time.Now()
	results, err := q.sendMessages(ctx, msgs, q.recordTime(start))
	if err == nil {
		q.stats.sendLatency.record(time.Since(start)) // one call, however many messages
	}
	return results, err
}

// recordTime returns start, the clock reading that times a Send, as the time
// its records carry, so that a Send reads the clock twice (start, end) and
// not three times: a reading costs 40-90ns on the development VM, 4% of a
// FlushAsync Send's CPU. With a test's clock (Options.now) it returns the
// zero time: the records carry that clock's time.
func (q *Queue) recordTime(start time.Time) time.Time {
	if !q.opts.realClock {
		return time.Time{}
	}
	return start
}

// sendMessages claims the caller-set IDs of msgs in the dedup table, appends
// the messages not sent before as one batch entry, and answers every message
// in order. Their records carry the time now, unless a claim in the dedup
// table reads the clock again (zero: the clock's time).
func (q *Queue) sendMessages(ctx context.Context, msgs []*Message, now time.Time) ([]SendResult, error) {
	for i, m := range msgs {
		if err := checkMessage(i, m); err != nil {
			return nil, err
		}
	}
	var (
		ids     []dedupKey    // per message: its topic and ID to claim, or none
		entries []*dedupEntry // per message: its claim, or the entry of the original
		fresh   []bool        // per message: entries[i] is its own claim
		earlier map[int]int   // message index → index of an earlier message with its ID in this call
		oneID   [1]dedupKey
		oneE    [1]*dedupEntry
		oneF    [1]bool
	)
	if q.dedup != nil {
		byID := map[dedupKey]int(nil)
		for i, m := range msgs {
			if m.ID == "" || m.NoDedup {
				continue
			}
			if ids == nil {
				if len(msgs) == 1 {
					ids, entries, fresh = oneID[:], oneE[:], oneF[:]
				} else {
					ids, entries, fresh = make([]dedupKey, len(msgs)), make([]*dedupEntry, len(msgs)), make([]bool, len(msgs))
				}
			}
			key := dedupKey{m.Topic, m.ID}
			if len(msgs) > 1 {
				if j, ok := byID[key]; ok {
					if earlier == nil {
						earlier = map[int]int{}
					}
					earlier[i] = j
					continue
				}
				if byID == nil {
					byID = map[dedupKey]int{}
				}
				byID[key] = i
			}
			ids[i] = key
		}
	}
	if ids != nil {
		for {
			now = q.opts.now()
			wait := q.dedup.claimAll(ids, now, entries, fresh)
			if wait == nil {
				break
			}
			if ch := q.dedup.waitFor(wait); ch != nil {
				select {
				case <-ch:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
		}
	}
	send := msgs
	var claimed []*dedupEntry // per message of send: its claim, or nil
	dups := 0
	for i, e := range entries {
		if e != nil && !fresh[i] {
			dups++
		}
	}
	if ids != nil && dups == 0 && earlier == nil {
		claimed = entries // every message is sent; entries holds their claims
	} else if ids != nil {
		send = make([]*Message, 0, len(msgs))
		claimed = make([]*dedupEntry, 0, len(msgs))
		for i, m := range msgs {
			switch {
			case fresh[i]:
				claimed = append(claimed, entries[i])
			case entries[i] != nil || hasKey(earlier, i):
				continue // answered from an earlier send
			default:
				claimed = append(claimed, nil)
			}
			send = append(send, m)
		}
	}
	sent := make([]string, len(send))
	first, n, status, err := q.send(ctx, send, sent, now)
	q.stats.messages.Add(uint64(n))
	for k, e := range claimed {
		if e == nil {
			continue
		}
		if k < n {
			// At the time its record carries, as a restart reads it back.
			q.dedup.settle(e, first+uint64(k), now)
		} else {
			q.dedup.drop(e)
		}
	}
	results := make([]SendResult, 0, len(msgs))
	k := 0
	for i := range msgs {
		var r SendResult
		switch {
		case entries != nil && entries[i] != nil && !fresh[i]:
			r = q.duplicate(ctx, entries[i])
		case hasKey(earlier, i):
			j := earlier[i]
			if j >= len(results) {
				return results, err
			}
			r = results[j]
			r.Duplicate = true
		default:
			if k >= n {
				return results, err
			}
			r = SendResult{Seq: first + uint64(k), ID: sent[k], Status: status}
			k++
		}
		results = append(results, r)
	}
	return results, err
}

// checkMessage refuses message i of a Send (nil, or an ID or key above
// MaxIDLength or MaxKeyLength) with an error matching ErrInvalidMessage that
// names the field.
func checkMessage(i int, m *Message) error {
	switch {
	case m == nil:
		return fmt.Errorf("zeroloss: message %d is nil: %w", i, ErrInvalidMessage)
	case len(m.ID) > MaxIDLength:
		return fmt.Errorf("zeroloss: message %d: ID of %d bytes (%.32q...), above MaxIDLength %d: %w",
			i, len(m.ID), m.ID, MaxIDLength, ErrInvalidMessage)
	case len(m.Key) > MaxKeyLength:
		return fmt.Errorf("zeroloss: message %d (ID %q): Key of %d bytes, above MaxKeyLength %d: %w",
			i, m.ID, len(m.Key), MaxKeyLength, ErrInvalidMessage)
	}
	if err := checkRoute(m.Topic, m.Tag); err != nil {
		return fmt.Errorf("zeroloss: message %d (ID %q): %w", i, m.ID, err)
	}
	return nil
}

func hasKey(m map[int]int, k int) bool {
	_, ok := m[k]
	return ok
}

// send appends msgs as one entry of the pending batch and waits for it. ids
// receives the messages' IDs. Their records carry the time now (zero: the
// clock's time). It returns the first seq, how many messages were appended
// and their status.
func (q *Queue) send(ctx context.Context, msgs []*Message, ids []string, now time.Time) (uint64, int, SendStatus, error) {
	if len(msgs) == 0 {
		return 0, 0, 0, nil
	}
	var one [1]record.Message
	encoded := one[:]
	if len(msgs) > 1 {
		encoded = make([]record.Message, len(msgs))
	}
	var size int64
	for i, m := range msgs {
		if m == nil {
			return 0, 0, 0, fmt.Errorf("zeroloss: message %d is nil: %w", i, ErrInvalidMessage)
		}
		// A NoDedup message carries the flag of a generated ID: neither
		// is remembered for deduplication, also when Open rebuilds the
		// table from the log.
		encoded[i] = toRecord(m)
		encoded[i].GeneratedID = m.NoDedup
		if encoded[i].ID == "" {
			encoded[i].ID, encoded[i].GeneratedID = q.newID(), true
		}
		ids[i] = encoded[i].ID
		n := frameSize(&encoded[i])
		if n > q.opts.MaxMessageSize {
			return 0, 0, 0, fmt.Errorf("zeroloss: message %q encodes to %d bytes, above MaxMessageSize %d: %w",
				encoded[i].ID, n, q.opts.MaxMessageSize, ErrMessageTooLarge)
		}
		size += int64(n)
	}
	if now.IsZero() {
		now = q.opts.now()
	}
	at := now.UnixNano()
	return q.submit(ctx, size, len(encoded), true, func(buf []byte) []byte {
		for i := range encoded {
			buf = record.AppendMessageFrame(buf, 0, 0, at, &encoded[i])
		}
		return buf
	})
}

// submit appends count frames of size bytes in all, which encode writes into
// the pending batch (under q.mu), and waits for the write and, under
// FlushSync, the fdatasync: the path of every record the queue appends,
// messages and consumer records alike. limited says whether MaxBytes applies
// (it does not to acks, which must get through to drain a full queue). It
// returns the first seq, how many frames were appended and their status. A
// single record larger than a segment is refused (ErrRecordTooLarge) before it
// joins a batch, so that it fails alone.
//
// Under ReplicateSync, records of the main stream (messages, transactional
// halves and commits) also wait for the follower's ack; consumer and internal
// records (other streams) are replicated without waiting.
func (q *Queue) submit(ctx context.Context, size int64, count int, limited bool, encode func([]byte) []byte) (uint64, int, SendStatus, error) {
	if limit := int64(q.log.MaxFrameSize()); count == 1 && size > limit {
		// Refused before it joins a batch: the log would fail the whole
		// batch with it. (Messages are refused above MaxMessageSize, which
		// the options keep below a segment's room.)
		return 0, 0, 0, fmt.Errorf("zeroloss: a record of %d bytes does not fit in a segment (at most %d): %w",
			size, limit, ErrRecordTooLarge)
	}
	select {
	case q.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, 0, 0, ctx.Err()
	}
	q.inFlight.Add(1)
	defer func() {
		<-q.slots
		q.inFlight.Add(-1)
		q.leave()
	}()

	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return 0, 0, 0, fmt.Errorf("zeroloss: send: %w", ErrClosed)
	}
	if err := q.log.Err(); err != nil {
		q.mu.Unlock()
		return 0, 0, 0, fmt.Errorf("zeroloss: send: %w", err)
	}
	b := q.pending
	if max := q.opts.MaxBytes; max > 0 && limited {
		if used := q.usedBytes.Load() + int64(len(b.buf)); used+size > max {
			q.mu.Unlock()
			return 0, 0, 0, fmt.Errorf("zeroloss: send: %w (%d of %d bytes used)", ErrQueueFull, used, max)
		}
	}
	index := len(b.entries)
	e := batchEntry{start: len(b.buf), frames: count}
	b.buf = encode(b.buf)
	e.end = len(b.buf)
	// The stream of the entry's first frame (header bytes 10-12; see internal/record).
	replica := e.end-e.start >= record.HeaderSize && binary.LittleEndian.Uint16(b.buf[e.start+10:]) == 0
	b.entries = append(b.entries, e)
	b.live++
	q.pendingLive.Store(int64(b.live))
	q.lead(b) // releases q.mu

	// Under FlushSync a Send wakes once, at the fdatasync (or when it
	// outlasts FlushTimeout); the write is done by then. Waking every Send
	// at the write as well would delay the fdatasync by the wake-ups.
	wait := b.written
	if b.synced != nil {
		wait = b.synced
	}
	done := ctx.Done()
	if done == nil && b.timedOut == nil {
		// FlushAsync and a context that never ends (Background): only
		// the write can answer, and a plain receive costs less than a
		// select.
		<-wait
	} else {
		select {
		case <-wait:
		case <-b.timedOut:
		case <-done:
			q.mu.Lock()
			if q.pending == b { // not taken for writing yet: withdraw it
				b.entries[index].cancelled = true
				b.cancelled = true
				b.live--
				q.pendingLive.Store(int64(b.live))
				q.mu.Unlock()
				return 0, 0, 0, ctx.Err()
			}
			q.mu.Unlock()
			<-b.written // taken: the write is under way and ends soon
		}
	}
	ent := b.entries[index]
	var err error
	if ent.appended < ent.frames {
		err = fmt.Errorf("zeroloss: send: %w", b.err)
	}
	if ent.appended == 0 {
		return 0, 0, 0, err
	}
	status := SendOK
	if b.synced != nil {
		status = q.awaitSync(ctx, b)
	}
	if status == SendOK && replica && b.replTimedOut != nil {
		status = q.awaitReplica(ctx, b, ent.first+uint64(ent.appended)-1)
	}
	return ent.first, ent.appended, status, err
}

// newID returns a unique message ID: a random per-Open prefix and a counter.
func (q *Queue) newID() string {
	return makeID(q.idPrefix, q.idCounter.Add(1))
}

// makeID returns prefix followed by n in base 36, with one allocation
// (concatenating strconv.FormatUint's result takes two).
func makeID(prefix string, n uint64) string {
	var buf [48]byte
	b := append(buf[:0], prefix...)
	return string(strconv.AppendUint(b, n, 36))
}

// awaitSync waits for b's fdatasync, at most FlushTimeout (b's watchdog) or
// until ctx ends (WaitCanceled). A sync already done wins over ctx.
func (q *Queue) awaitSync(ctx context.Context, b *batch) SendStatus {
	select {
	case <-b.synced:
	default:
		select {
		case <-b.synced:
		case <-b.timedOut:
			q.stats.flushTimeouts.Add(1)
			return FlushDiskTimeout
		case <-ctx.Done():
			q.stats.waitsCanceled.Add(1)
			return WaitCanceled
		}
	}
	if b.syncErr != nil {
		q.stats.flushTimeouts.Add(1)
		return FlushDiskTimeout
	}
	return SendOK
}

// Err returns the error that poisoned the queue (matching ErrPoisoned), or nil.
func (q *Queue) Err() error { return q.log.Err() }

// Done returns a channel that is closed when Close begins: Receives return
// ErrClosed from then on. Code that hands deliveries on and waits for them
// (an adapter such as the Watermill one) selects on it to stop waiting.
func (q *Queue) Done() <-chan struct{} { return q.done }

// Close stops Receives and the Consume loops, waits for the handlers Consume
// is running to return and ack (at most ShutdownTimeout; the Ack of a handler
// that returns later fails, and its Consume returns an error saying so),
// stops accepting Sends, gives every pending Send a definite result, flushes
// what was written, records a clean end and releases the directory. It is
// idempotent and returns the same error each time (the poison error if the
// queue was poisoned). Close called from a handler waits out ShutdownTimeout.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		close(q.done) // Receives return: Consume loops stop taking messages
		q.waitHandlers()
		q.asyncAckers.Wait() // AckAsync's records land before the committer stops
		<-q.markerDone
		<-q.txDone
		if err := q.flushMarks(context.Background()); err != nil {
			q.logger.Warn("zeroloss: could not write consumer marks on close", "error", err)
		}
		q.mu.Lock()
		q.closing = true
		q.mu.Unlock()
		q.committerWaiting.Store(true)
		q.nudge()
		<-q.committerDone // the committer writes what is pending, then exits
		q.leaders.Wait()
		close(q.stopSyncer)
		<-q.syncerDone
		q.detachReplica()
		q.groupsMu.Lock()
		for _, g := range q.groups {
			g.mu.Lock()
			if g.reader != nil {
				g.reader.Close()
				g.reader = nil
			}
			g.closed = true
			g.mu.Unlock()
		}
		q.groupsMu.Unlock()
		// FlushAsync: what the syncer had not synced (and the marks
		// above) is synced now rather than by the log's Close, so that
		// the last checkpoint file covers it.
		if _, err := q.log.Sync(); err == nil {
			q.checkpointState(true) // the next Open reads it and nothing of the log
		}
		q.closeErr = q.log.Close()
	})
	return q.closeErr
}
