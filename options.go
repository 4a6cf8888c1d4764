package zeroloss

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/zerolossmq/zeroloss/internal/hook"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// FlushMode says when Send returns relative to the data reaching the disk.
type FlushMode int

const (
	// FlushSync: Send returns SendOK only after fdatasync (F_FULLFSYNC on
	// macOS, FlushFileBuffers on Windows) has made the message durable.
	// Concurrent Sends share one fdatasync (group commit). The default.
	FlushSync FlushMode = iota
	// FlushAsync: Send returns SendOK after write(2): the message is in the
	// operating system's page cache and survives a crash of the process, but
	// not a power loss or kernel crash before the next background flush
	// (every FlushInterval, and on Close) has completed: a power loss can
	// take the SendOKs of up to FlushInterval plus the duration of one
	// background fdatasync (an independent run measured 569ms with the
	// 500ms default).
	FlushAsync
)

// String returns "sync" or "async".
func (m FlushMode) String() string {
	switch m {
	case FlushSync:
		return "sync"
	case FlushAsync:
		return "async"
	}
	return fmt.Sprintf("FlushMode(%d)", int(m))
}

// ReplicationMode says whether Sends wait for a follower (see AttachReplica).
type ReplicationMode int

const (
	// ReplicateNone: no follower; AttachReplica is refused. The default.
	ReplicateNone ReplicationMode = iota
	// ReplicateAsync: an attached follower receives the log as it becomes
	// durable on the leader; Sends do not wait for it.
	ReplicateAsync
	// ReplicateSync: a Send returns SendOK only once the follower has
	// acknowledged the message as durable on its side (FlushReplicaTimeout
	// after ReplicaTimeout, ReplicaNotAvailable with no follower attached),
	// and consumers see only messages the follower acknowledged.
	ReplicateSync
)

// String returns "none", "async" or "sync".
func (m ReplicationMode) String() string {
	switch m {
	case ReplicateNone:
		return "none"
	case ReplicateAsync:
		return "async"
	case ReplicateSync:
		return "sync"
	}
	return fmt.Sprintf("ReplicationMode(%d)", int(m))
}

// Defaults for Options fields left zero.
const (
	DefaultReplicaTimeout  = 5 * time.Second
	DefaultFlushInterval   = 500 * time.Millisecond
	DefaultFlushTimeout    = 5 * time.Second
	DefaultSegmentSize     = wal.DefaultSegmentSize
	DefaultMaxMessageSize  = 4 << 20
	DefaultMaxPending      = 4096
	DefaultDedupWindow     = 2 * time.Minute
	DefaultDedupEntries    = 100_000
	DefaultTxTimeout       = 6 * time.Second
	DefaultTxCheckInterval = 60 * time.Second
	DefaultTxCheckMax      = 15
	DefaultRecycleSegments = 2
	// DefaultCheckpointBytes is Options.CheckpointBytes left zero.
	DefaultCheckpointBytes = 64 << 20
	// MinMessageSizeLimit is the smallest MaxMessageSize accepted.
	MinMessageSizeLimit = 64
	// DefaultShutdownTimeout leaves a process stopped with a 30s grace
	// period (Kubernetes' default) time to close after its handlers.
	DefaultShutdownTimeout = 10 * time.Second
	// MaxIDLength bounds a message ID, in bytes. The dedup table keeps up
	// to DedupEntries IDs in memory and in every retention checkpoint: at
	// 256 bytes the default 100,000 entries take at most 26 MiB, well
	// within one frame of the default 64 MiB segment.
	MaxIDLength = 256
	// MaxKeyLength bounds a message key, in bytes.
	MaxKeyLength = 1024
	// segmentOverhead is the segment header block ahead of the first frame.
	segmentOverhead = 4096
	// The sync slot, which records how far the active segment was synced, is
	// written at most every 50ms or 1 MiB of synced data: each write adds a
	// second range to an fdatasync. Damage to data synced since the last slot
	// write cannot be told from a torn tail.
	defaultSlotInterval = 50 * time.Millisecond
	defaultSlotBytes    = 1 << 20
)

// Options configure a Queue. The zero value, like a nil *Options, means every
// default.
type Options struct {
	// Flush is FlushSync (default) or FlushAsync.
	Flush FlushMode
	// FlushInterval is how often FlushAsync syncs in the background.
	// Default 500ms. The loss window of a power loss is FlushInterval plus
	// one background fdatasync.
	FlushInterval time.Duration
	// FlushTimeout is how long a FlushSync Send waits for its fdatasync
	// before returning FlushDiskTimeout. Default 5s.
	FlushTimeout time.Duration
	// SegmentSize is the size of each preallocated segment file.
	// Default 64 MiB; it must hold a header block of 4 KiB plus one message
	// of MaxMessageSize plus the 95 bytes by which a retry or dead-letter
	// record may exceed the message it carries.
	SegmentSize int64
	// MaxMessageSize bounds the encoded size of one message: frame header,
	// ID, key, headers and body. Default 4 MiB.
	MaxMessageSize int
	// MaxBytes bounds the bytes of records held in the log; Send returns
	// ErrQueueFull instead of going above it. 0 means no limit; otherwise
	// at least SegmentSize.
	MaxBytes int64
	// MaxPending bounds the Sends waiting for the writer goroutine; further
	// Sends block (honouring their context). Default 4096.
	MaxPending int
	// SegmentWarmup writes zeros over the next segment file in the
	// background before it is used, so that appends land on blocks already
	// written and an fdatasync flushes data only; on fresh preallocated
	// extents (ext4, XFS) an fdatasync must also commit their conversion to
	// written extents in the journal. It writes every segment twice, and the
	// zero-fill competes with the log's own fdatasyncs for the disk: on the
	// development machine BenchmarkWarmup measured +2% to +18% with 1 to 64
	// producers and -20% to +4% with 256, where the log needs the disk's
	// bandwidth (see bench/). Off by default: it only ever serves segments
	// that find no recycled one to reuse (RecycleSegments), and on those
	// BenchmarkRecycle measured +4% to +6% with 1 producer, against +13% to
	// +18% for reuse, while BenchmarkWarmup measured -3% to -24% with 64 and
	// 256 producers in the same session.
	SegmentWarmup bool
	// RecycleSegments is how many segments deleted by retention are kept
	// (renamed, not unlinked) to become later segments, instead of creating
	// and preallocating new files: writes then land on blocks already
	// written, which spares an fdatasync the journal commit of fresh
	// extents, as SegmentWarmup does but at no cost. A reused segment is
	// flagged, and recovery never reads what is left of its earlier life as
	// records (internal/wal/doc.go). Kept segments take disk space until
	// used; Close removes them. Default 2 (DefaultRecycleSegments);
	// negative: none.
	RecycleSegments int
	// CheckpointBytes is how much a running queue appends to its log
	// between two checkpoint files (checkpointfile.go): the state Open
	// would rebuild (consumer groups, dedup IDs, transactions, the topic
	// index) as of a seq, so that Open reads that file and only the log
	// after it. Close writes one too. Building one replays the log written
	// since the last, in the background, as Open would: its cost grows
	// with the log written, not with the backlog. After a crash, Open
	// reads at most about this much log plus what was written in the last
	// second. Default 64 MiB (DefaultCheckpointBytes).
	CheckpointBytes int64
	// RetentionBytes and RetentionAge bound the log for consumer groups that
	// fall behind: while the log holds more bytes, or its oldest segment
	// older messages, the oldest segment is deleted even if a group has not
	// acked its messages. Each such message is logged and counted
	// (Stats.RetentionSkipped); the group moves past it. With no group at
	// all they bound the log too; dedup IDs and pending halves outlive the
	// segments deleted (a checkpoint carries them). 0 means no limit:
	// segments go only once every group acked them (and, with no group,
	// never). RetentionBytes, if set, is at least 2 × SegmentSize.
	RetentionBytes int64
	RetentionAge   time.Duration
	// DedupWindow is how long the ID of a message is remembered, when the
	// caller set it: a Send of the same ID within the window appends nothing
	// and reports the original (SendResult.Duplicate). Default 2 minutes;
	// negative turns deduplication off. A producer that resends after a
	// failure must resend within it.
	DedupWindow time.Duration
	// DedupEntries bounds the IDs remembered; past it the oldest are
	// forgotten early (Stats.DedupEvictions). Default 100,000 (about 27
	// MiB of heap with 36-byte IDs: 270 bytes per entry, measured by
	// bench.TestDedupMemoryPerEntry).
	DedupEntries int
	// TxChecker is asked about a transactional half message whose local
	// transaction has not answered (see SendHalf): first TxTimeout after
	// the half was sent, then every TxCheckInterval, at most TxCheckMax
	// times, after which the half is rolled back and logged. Nil: pending
	// halves wait, reported in Stats and the log, and are never rolled back.
	//
	// Checks run in goroutines of their own, up to 8 at once, so the
	// checker must be safe for concurrent use; a slow call holds back no
	// other half. ctx ends after TxCheckInterval and at Close, which waits
	// at most TxCloseWait (1s) for calls in progress and then returns
	// anyway: a call that ignores ctx is abandoned, its answer is not
	// recorded, and its half is checked again after the next Open.
	TxChecker func(ctx context.Context, m *Message) TxState
	// TxTimeout is how long a half waits before its first check. Default 6s.
	TxTimeout time.Duration
	// TxCheckInterval is the time between checks. Default 60s.
	TxCheckInterval time.Duration
	// TxCheckMax is how many unknown answers roll a half back. Default 15.
	TxCheckMax int
	// Replication is ReplicateNone (default), ReplicateAsync or
	// ReplicateSync; see AttachReplica.
	Replication ReplicationMode
	// ReplicaTimeout is how long a Send waits, under ReplicateSync, for the
	// follower to acknowledge it (from the write of its batch) before
	// returning FlushReplicaTimeout; also the time a follower has for the
	// handshake. Default 5s.
	ReplicaTimeout time.Duration
	// ShutdownTimeout bounds how long Close waits for the handlers that
	// Consume is running to return (and ack or nack). Default 10s
	// (DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// ReplicaSecret is a key the leader shares with its follower
	// (FollowOptions.Secret; `zeroloss follow --secret-file`), at least
	// MinSecretSize random bytes. In the handshake each end proves that it
	// holds it (HMAC-SHA256 over fresh nonces of both ends; the key is never
	// sent), and a follower that does not is refused. Required to replicate
	// over plain TCP (ReplicateTo with a tcp: address and no tls.Config);
	// optional, as a second check, over a Unix socket or TLS. Both ends must
	// agree: set on one end only, every handshake fails.
	ReplicaSecret []byte
	// Logger receives recovery reports, poisoning and flush timeouts.
	// Default: discard.
	Logger *slog.Logger

	fs         vfs.FS           // tests: crashable or faulty file systems
	now        func() time.Time // tests: fake clock
	realClock  bool             // now is time.Now (set by withDefaults): Send reads it once for its latency and its records
	leaseChunk uint64           // tests: seqs per durable lease extension
	// tests: called by a transaction check before it reads the half it
	// checks (a window for a Commit to race it)
	beforeCheck func(halfSeq uint64)
	txCloseWait time.Duration // tests: TxCloseWait
	// slotInterval and slotBytes throttle the wal's sync slot (see
	// wal.Options); tests set slotEverySync to record every sync.
	slotInterval  time.Duration
	slotBytes     int64
	slotEverySync bool
	// beforeGroupLock (tests) is called by Receive after its closed check,
	// before it takes the group's lock: a seam for a race with Close.
	beforeGroupLock func()
	// manualTicks (tests): markLoop and the FlushAsync syncer do not tick;
	// the test calls flushMarks, retain and syncTick itself, so that no
	// background record or sync races its steps (sim_test.go).
	manualTicks bool
	// asyncAckGate (tests) is called by writeAsyncAcks after it took an ack
	// record's counts and mark, before it writes the record: a seam to hold
	// an async ack record in flight while the test goes on.
	asyncAckGate func()
	// afterAppend (tests) is called by the committer between a batch's
	// write and its indexing (indexFrames): a seam for the FlushAsync
	// syncer publishing frames the topic index does not hold yet.
	afterAppend func()
	// afterCheckpoint (tests) is called by retention between its
	// checkpoint and the deletion of segments.
	afterCheckpoint func()
}

func (o *Options) withDefaults() (Options, error) {
	var out Options
	if o != nil {
		out = *o
	}
	if out.Flush != FlushSync && out.Flush != FlushAsync {
		return out, invalid("Flush", "is %d, want FlushSync or FlushAsync", int(out.Flush))
	}
	if err := defaulted("FlushInterval", &out.FlushInterval, DefaultFlushInterval); err != nil {
		return out, err
	}
	if err := defaulted("FlushTimeout", &out.FlushTimeout, DefaultFlushTimeout); err != nil {
		return out, err
	}
	if out.Replication < ReplicateNone || out.Replication > ReplicateSync {
		return out, invalid("Replication", "is %d, want ReplicateNone, ReplicateAsync or ReplicateSync", int(out.Replication))
	}
	if err := defaulted("ReplicaTimeout", &out.ReplicaTimeout, DefaultReplicaTimeout); err != nil {
		return out, err
	}
	if err := defaulted("ShutdownTimeout", &out.ShutdownTimeout, DefaultShutdownTimeout); err != nil {
		return out, err
	}
	if err := checkSecret("ReplicaSecret", out.ReplicaSecret); err != nil {
		return out, err
	}
	out.ReplicaSecret = bytes.Clone(out.ReplicaSecret)
	if err := defaulted("MaxMessageSize", &out.MaxMessageSize, DefaultMaxMessageSize); err != nil {
		return out, err
	}
	if out.MaxMessageSize < MinMessageSizeLimit {
		return out, invalid("MaxMessageSize", "is %d, below the minimum %d", out.MaxMessageSize, MinMessageSizeLimit)
	}
	if out.SegmentSize < 0 {
		return out, invalid("SegmentSize", "is negative (%d)", out.SegmentSize)
	}
	// A segment must hold its header and the largest record the queue
	// writes: a retry or dead-letter record of a message of MaxMessageSize.
	minSegment := int64(out.MaxMessageSize) + segmentOverhead + record.MaxMoveOverhead
	if out.SegmentSize == 0 {
		out.SegmentSize = max(DefaultSegmentSize, minSegment)
	}
	if out.SegmentSize < minSegment {
		return out, invalid("SegmentSize", "is %d, too small for MaxMessageSize %d plus the %d-byte segment header and the %d bytes a retry or dead-letter record adds to a message (minimum %d)",
			out.SegmentSize, out.MaxMessageSize, segmentOverhead, record.MaxMoveOverhead, minSegment)
	}
	if out.MaxBytes < 0 {
		return out, invalid("MaxBytes", "is negative (%d)", out.MaxBytes)
	}
	if out.MaxBytes > 0 && out.MaxBytes < out.SegmentSize {
		return out, invalid("MaxBytes", "is %d, below SegmentSize %d", out.MaxBytes, out.SegmentSize)
	}
	switch {
	case out.TxTimeout < 0:
		return out, invalid("TxTimeout", "is negative (%v)", out.TxTimeout)
	case out.TxCheckInterval < 0:
		return out, invalid("TxCheckInterval", "is negative (%v)", out.TxCheckInterval)
	case out.TxCheckMax < 0:
		return out, invalid("TxCheckMax", "is negative (%d)", out.TxCheckMax)
	}
	if out.TxTimeout == 0 {
		out.TxTimeout = DefaultTxTimeout
	}
	if out.TxCheckInterval == 0 {
		out.TxCheckInterval = DefaultTxCheckInterval
	}
	if out.TxCheckMax == 0 {
		out.TxCheckMax = DefaultTxCheckMax
	}
	switch {
	case out.RetentionBytes < 0:
		return out, invalid("RetentionBytes", "is negative (%d)", out.RetentionBytes)
	case out.RetentionBytes > 0 && out.RetentionBytes < 2*out.SegmentSize:
		return out, invalid("RetentionBytes", "is %d, below 2 × SegmentSize (%d)", out.RetentionBytes, 2*out.SegmentSize)
	case out.RetentionAge < 0:
		return out, invalid("RetentionAge", "is negative (%v)", out.RetentionAge)
	}
	if err := defaulted("CheckpointBytes", &out.CheckpointBytes, DefaultCheckpointBytes); err != nil {
		return out, err
	}
	if err := defaulted("DedupEntries", &out.DedupEntries, DefaultDedupEntries); err != nil {
		return out, err
	}
	if out.DedupWindow == 0 {
		out.DedupWindow = DefaultDedupWindow
	}
	if out.RecycleSegments == 0 {
		out.RecycleSegments = DefaultRecycleSegments
	}
	if err := defaulted("MaxPending", &out.MaxPending, DefaultMaxPending); err != nil {
		return out, err
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
	if out.now == nil {
		out.now, out.realClock = time.Now, true
	}
	if !out.slotEverySync && out.slotInterval == 0 && out.slotBytes == 0 {
		out.slotInterval, out.slotBytes = defaultSlotInterval, defaultSlotBytes
	}
	return out, nil
}

// defaulted checks that the option *v named field is not negative and
// replaces zero, which means the default, by def.
func defaulted[T int | int64 | time.Duration](field string, v *T, def T) error {
	if *v < 0 {
		return invalid(field, "is negative (%v)", *v)
	}
	if *v == 0 {
		*v = def
	}
	return nil
}

// checkSecret checks a replication secret: none, or at least MinSecretSize
// bytes.
func checkSecret(field string, secret []byte) error {
	if len(secret) > 0 && len(secret) < MinSecretSize {
		return invalid(field, "is %d bytes, want at least %d (random bytes, the same at both ends)", len(secret), MinSecretSize)
	}
	return nil
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("zeroloss: %w: %s %s", ErrInvalidOptions, field, fmt.Sprintf(format, args...))
}

// frameSize is the encoded size of a message record.
func frameSize(m *record.Message) int { return record.HeaderSize + record.MessageSize(m) }

// walRecycle is wal.Options.Recycle for RecycleSegments (after withDefaults).
func (o *Options) walRecycle() int { return max(o.RecycleSegments, 0) }
