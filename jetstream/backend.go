package jetstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/zerolossmq/zeroloss"
)

// Errors of the adapter, besides the root package's sentinels
// (zeroloss.ErrClosed, ErrInvalidMessage, ErrInvalidOptions,
// ErrDeliveryExpired), which it returns where the embedded queue would.
var (
	// ErrUnconfirmed: Send did not receive the PubAck (a timeout, a lost
	// connection, ctx). The message may or may not be stored: resend it
	// with the same Message.ID within the dedup window, which stores it at
	// most once.
	ErrUnconfirmed = errors.New("jetstream: publish not confirmed: the message may or may not be stored")
	// ErrNotStored: the server answered the publish with an error (the
	// stream refused it) or nothing listened on the subject (no stream
	// leader, e.g. during an election). The message was not stored; sending
	// it again is safe.
	ErrNotStored = errors.New("jetstream: publish refused: the message was not stored")
	// ErrGuaranteeNotMet: under Options.Strict, Open found the streams or
	// the servers weaker than Options.Require; the error lists what falls
	// short.
	ErrGuaranteeNotMet = errors.New("jetstream: the configuration is weaker than required")
	// ErrUnsupported: a feature the adapter does not offer on JetStream
	// (Message.DeliverAt, Message.NoDedup, Delivery.Release, several tags
	// before nats-server 2.10). Nothing was published or changed. It
	// matches zeroloss.ErrUnsupported and errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("jetstream: %w", zeroloss.ErrUnsupported)
)

// Defaults for Options fields left zero.
const (
	DefaultStream  = "ZEROLOSS"
	DefaultTimeout = 10 * time.Second
)

// Header names the adapter reserves. A Message's own headers must not start
// with "Nats-" or "Zeroloss-".
const (
	headerKey      = "Zeroloss-Key"
	headerID       = "Zeroloss-Id" // dead letters: the original message's ID
	headerSeq      = "Zeroloss-Seq"
	headerAttempts = "Zeroloss-Attempts"
	headerReason   = "Zeroloss-Reason"
	headerTopic    = "Zeroloss-Topic" // dead letters: the original message's topic
	headerTag      = "Zeroloss-Tag"   // and tag
)

// Requirement is what SendOK must mean. Besides it, SendOK always requires
// streams that keep what they acknowledge until every group read it (see
// Guarantee.KeepsMessages); only AcceptEviction relaxes that.
type Requirement struct {
	// Replicas is the least number of replicas the streams must have.
	// Default 1.
	Replicas int
	// AcceptBackgroundSync accepts servers that fsync in the background
	// (the nats-server default: every 2 minutes) or that cannot be checked,
	// and memory storage or persist_mode async. Without it, SendOK requires
	// file storage, the default persist mode, and sync_interval: always on
	// every server holding the streams, checked through
	// Options.SystemConn.
	AcceptBackgroundSync bool
	// AcceptEviction accepts stream limits that delete messages whether or
	// not every group read them: MaxAge, DiscardOld with MaxMsgs or
	// MaxBytes, and MaxMsgsPerSubject without DiscardNewPerSubject, as the
	// embedded queue's RetentionAge and RetentionBytes do. Without it they
	// fall short of SendOK; DiscardNew limits, which refuse a publish
	// (ErrNotStored) rather than delete, are always accepted. Retention
	// other than limits is never accepted.
	AcceptEviction bool
}

// Options configure the adapter. The zero value, like nil, means every
// default.
type Options struct {
	// Stream is the name of the stream holding the messages (subjects
	// "<Stream>.messages.<topic>.<tag>", see topics.go); dead letters go to
	// the stream "<Stream>_DLQ" (subjects "<Stream>.dlq.<group>"). Open
	// creates them if missing. Default "ZEROLOSS".
	Stream string
	// Replicas is the replica count of the streams Open creates (1 to 5).
	// Existing streams keep theirs; Require.Replicas checks it. Default 1.
	Replicas int
	// DedupWindow is the Duplicates window of the streams Open creates:
	// how long a Message.ID is remembered. An existing stream with a
	// shorter window falls short of SendOK. Default
	// zeroloss.DefaultDedupWindow (2 minutes).
	DedupWindow time.Duration
	// Require is what SendOK must mean; see Requirement. A shortfall makes
	// Send report FlushDiskTimeout (fsync not confirmed, or a stream may
	// drop the message) or ReplicaNotAvailable (too few replicas) instead
	// of SendOK, or, under Strict, makes Open fail.
	Require Requirement
	// Strict makes Open fail with ErrGuaranteeNotMet when the
	// configuration is weaker than Require, instead of reporting it in
	// every status.
	Strict bool
	// SystemConn is a connection in the system account, used to ask the
	// servers holding the streams for their JetStream sync setting
	// ($SYS.REQ.SERVER.PING.VARZ). Without it the sync setting cannot be
	// verified. The adapter does not close it.
	SystemConn *nats.Conn
	// Timeout bounds a PubAck, an ack and an API call whose context has
	// no deadline, and the configuration check. Default 10s.
	Timeout time.Duration
	// Logger receives configuration warnings, dead-lettering and handler
	// failures. Default: discard.
	Logger *slog.Logger
}

func (o *Options) withDefaults() (Options, error) {
	var out Options
	if o != nil {
		out = *o
	}
	if out.Stream == "" {
		out.Stream = DefaultStream
	}
	if !validName(out.Stream) {
		return out, invalid("Stream", "%q is not a valid stream name (no spaces, '.', '*', '>', '/' or '\\', at most 200 bytes)", out.Stream)
	}
	switch {
	case out.Replicas < 0 || out.Replicas > 5:
		return out, invalid("Replicas", "is %d, want 1 to 5", out.Replicas)
	case out.Require.Replicas < 0:
		return out, invalid("Require.Replicas", "is negative (%d)", out.Require.Replicas)
	case out.DedupWindow < 0:
		return out, invalid("DedupWindow", "is negative (%v)", out.DedupWindow)
	case out.Timeout < 0:
		return out, invalid("Timeout", "is negative (%v)", out.Timeout)
	}
	if out.Replicas == 0 {
		out.Replicas = 1
	}
	if out.Require.Replicas == 0 {
		out.Require.Replicas = 1
	}
	if out.DedupWindow == 0 {
		out.DedupWindow = zeroloss.DefaultDedupWindow
	}
	if out.Timeout == 0 {
		out.Timeout = DefaultTimeout
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out, nil
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("jetstream: %w: %s %s", zeroloss.ErrInvalidOptions, field, fmt.Sprintf(format, args...))
}

// validName says whether s can be a stream or consumer name and a subject
// token. The limit leaves room for the "_DLQ" suffix.
func validName(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(".*>/\\", r) {
			return false
		}
	}
	return true
}

// Backend is the zeroloss API on NATS JetStream: a zeroloss.Backend. All
// methods are safe for concurrent use.
type Backend struct {
	opts   Options
	nc     *nats.Conn
	js     natsjs.JetStream
	stream natsjs.Stream // the messages
	dlq    natsjs.Stream // the dead letters
	// subjectPrefix is "<Stream>.messages.": a message's subject adds its
	// topic's and tag's tokens (topics.go).
	subjectPrefix string
	guarantee     atomic.Pointer[Guarantee]
	logger        *slog.Logger

	closing   context.Context // cancelled by Close
	close     context.CancelFunc
	closeOnce sync.Once

	mu         sync.Mutex
	advisories map[string]*nats.Subscription // group → max-deliveries advisory subscription

	idPrefix  string
	idCounter atomic.Uint64
}

var _ zeroloss.Backend = (*Backend)(nil)

// Open returns the adapter on nc (which it does not close): it creates the
// streams if missing, checks the configuration against opts.Require (see
// Guarantee) and, under opts.Strict, fails with ErrGuaranteeNotMet if it
// falls short. It fails with zeroloss.ErrInvalidOptions naming the field for
// bad options.
func Open(ctx context.Context, nc *nats.Conn, opts *Options) (*Backend, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	js, err := natsjs.New(nc, natsjs.WithPublishAsyncTimeout(o.Timeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	var prefix [8]byte
	if _, err := rand.Read(prefix[:]); err != nil {
		return nil, err
	}
	b := &Backend{
		opts:          o,
		nc:            nc,
		js:            js,
		subjectPrefix: o.Stream + ".messages.",
		logger:        o.Logger,
		advisories:    map[string]*nats.Subscription{},
		idPrefix:      hex.EncodeToString(prefix[:]) + "-",
	}
	b.closing, b.close = context.WithCancel(context.Background())
	ctx, cancel := b.bound(ctx)
	defer cancel()
	if b.stream, err = b.ensureStream(ctx, o.Stream, b.subjectPrefix+"*.*", b.subjectPrefix+">"); err != nil {
		return nil, err
	}
	if b.dlq, err = b.ensureStream(ctx, o.Stream+"_DLQ", o.Stream+".dlq.*", o.Stream+".dlq.*"); err != nil {
		return nil, err
	}
	g, err := b.Check(ctx)
	if err != nil {
		return nil, err
	}
	if len(g.Shortfalls) > 0 {
		if o.Strict {
			return nil, fmt.Errorf("%w: %s", ErrGuaranteeNotMet, strings.Join(g.Shortfalls, "; "))
		}
		b.logger.Warn("jetstream: the configuration is weaker than required; Sends report it in their status",
			"shortfalls", g.Shortfalls)
	}
	return b, nil
}

// ensureStream returns the stream called name, creating it (file storage,
// opts.Replicas, the dedup window) on subject if it does not exist. An
// existing stream must capture subject or wider, one of its subjects
// being subject or wider.
func (b *Backend) ensureStream(ctx context.Context, name, subject, wider string) (natsjs.Stream, error) {
	s, err := b.js.Stream(ctx, name)
	if errors.Is(err, natsjs.ErrStreamNotFound) {
		s, err = b.js.CreateStream(ctx, natsjs.StreamConfig{
			Name:       name,
			Subjects:   []string{subject},
			Storage:    natsjs.FileStorage,
			Replicas:   b.opts.Replicas,
			Duplicates: b.opts.DedupWindow,
			Retention:  natsjs.LimitsPolicy,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("jetstream: stream %s: %w", name, err)
	}
	for _, sub := range s.CachedInfo().Config.Subjects {
		if sub == subject || sub == wider {
			return s, nil
		}
	}
	return nil, fmt.Errorf("jetstream: %w: the existing stream %s does not capture the subjects %s (a stream created by the adapter before topics captures only %smessages: see README.md, Topics)",
		zeroloss.ErrInvalidOptions, name, subject, b.opts.Stream+".")
}

// bound gives ctx the adapter's Timeout if it has no deadline.
func (b *Backend) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, b.opts.Timeout)
}

func (b *Backend) closed() bool { return b.closing.Err() != nil }

// Send publishes m to the stream, on its topic's and tag's subject, and
// waits for its PubAck. The Nats-Msg-Id header carries m.Topic and m.ID
// (generated if empty), so a resend to the same topic within the dedup
// window stores nothing and returns the original's seq with Duplicate set.
//
// The status is SendOK when the PubAck came (the message is stored by a
// quorum of the stream's replicas) and the configuration meets
// Options.Require; otherwise FlushDiskTimeout (stored, but fsync before the
// PubAck not confirmed, or a stream setting may drop it before every group
// read it: see Guarantee.KeepsMessages) or ReplicaNotAvailable (stored on
// fewer replicas than required). Errors: zeroloss.ErrClosed, zeroloss.ErrInvalidMessage,
// ErrUnsupported and ErrNotStored (not stored); ErrUnconfirmed (maybe
// stored).
func (b *Backend) Send(ctx context.Context, m *zeroloss.Message) (zeroloss.SendResult, error) {
	msg, id, err := b.encode(m)
	if err != nil {
		return zeroloss.SendResult{}, err
	}
	natsID := msgID(m.Topic, id)
	ctx, cancel := b.bound(ctx)
	defer cancel()
	stop := context.AfterFunc(b.closing, cancel)
	defer stop()
	ack, err := b.js.PublishMsg(ctx, msg, natsjs.WithMsgID(natsID), natsjs.WithExpectStream(b.opts.Stream))
	if err != nil {
		return zeroloss.SendResult{}, b.publishError(err)
	}
	return zeroloss.SendResult{Seq: ack.Sequence, ID: id, Status: b.status(), Duplicate: ack.Duplicate}, nil
}

// SendBatch publishes msgs in order without waiting between them, then
// waits for their PubAcks. It returns a result for every message up to the
// first not confirmed; the messages after it may be stored too (they were
// published): resend them with the same IDs. Seqs are increasing but not
// necessarily consecutive (other publishers interleave).
func (b *Backend) SendBatch(ctx context.Context, msgs []*zeroloss.Message) ([]zeroloss.SendResult, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	ids := make([]string, len(msgs))
	futures := make([]natsjs.PubAckFuture, 0, len(msgs))
	var published error
	for i, m := range msgs {
		msg, id, err := b.encode(m)
		if err != nil {
			published = fmt.Errorf("message %d: %w", i, err)
			break
		}
		f, err := b.js.PublishMsgAsync(msg, natsjs.WithMsgID(msgID(m.Topic, id)), natsjs.WithExpectStream(b.opts.Stream))
		if err != nil {
			published = b.publishError(err)
			break
		}
		ids[i] = id
		futures = append(futures, f)
	}
	status := b.status()
	results := make([]zeroloss.SendResult, 0, len(futures))
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			results = append(results, zeroloss.SendResult{Seq: ack.Sequence, ID: ids[i], Status: status, Duplicate: ack.Duplicate})
		case err := <-f.Err():
			return results, b.publishError(err)
		case <-ctx.Done():
			return results, b.publishError(ctx.Err())
		case <-b.closing.Done():
			return results, fmt.Errorf("jetstream: send: %w", zeroloss.ErrClosed)
		}
	}
	return results, published
}

// encode turns m into a NATS message for the stream.
func (b *Backend) encode(m *zeroloss.Message) (*nats.Msg, string, error) {
	if b.closed() {
		return nil, "", fmt.Errorf("jetstream: send: %w", zeroloss.ErrClosed)
	}
	if m == nil {
		return nil, "", fmt.Errorf("jetstream: nil message: %w", zeroloss.ErrInvalidMessage)
	}
	if !m.DeliverAt.IsZero() {
		return nil, "", fmt.Errorf("%w: Message.DeliverAt (delayed delivery)", ErrUnsupported)
	}
	if m.NoDedup {
		// The ID travels as Nats-Msg-Id, which the stream deduplicates by.
		return nil, "", fmt.Errorf("%w: Message.NoDedup (the ID is the stream's dedup key)", ErrUnsupported)
	}
	if err := checkRoute(m); err != nil {
		return nil, "", err
	}
	h := nats.Header{}
	for k, v := range m.Headers {
		if reserved(k) {
			return nil, "", fmt.Errorf("jetstream: header %q: names starting with Nats- or Zeroloss- are reserved: %w", k, zeroloss.ErrInvalidMessage)
		}
		h[k] = []string{v} // as given: NATS headers are case-sensitive
	}
	if m.Key != "" {
		h[headerKey] = []string{m.Key}
	}
	// The ID rides in the Nats-Msg-Id header after the topic's token; a
	// header value loses its trailing white space, and a line break would
	// end it. Such an ID would come back changed, and be deduplicated
	// with another.
	if strings.ContainsAny(m.ID, "\r\n") || strings.TrimRight(m.ID, " \t") != m.ID {
		return nil, "", fmt.Errorf("jetstream: Message.ID %q ends in white space or holds a line break, which a NATS header does not carry: %w",
			m.ID, zeroloss.ErrInvalidMessage)
	}
	id := m.ID
	if id == "" {
		id = b.idPrefix + strconv.FormatUint(b.idCounter.Add(1), 36)
	}
	return &nats.Msg{Subject: b.messageSubject(m.Topic, m.Tag), Header: h, Data: m.Body}, id, nil
}

func reserved(header string) bool {
	h := strings.ToLower(header)
	return strings.HasPrefix(h, "nats-") || strings.HasPrefix(h, "zeroloss-")
}

// publishError sorts a failed publish: an answer from the server means not
// stored; anything else (no answer) means maybe stored.
func (b *Backend) publishError(err error) error {
	var apiErr *natsjs.APIError
	switch {
	case b.closed():
		return fmt.Errorf("jetstream: send: %w (%w; the message may or may not be stored)", zeroloss.ErrClosed, err)
	case errors.As(err, &apiErr), errors.Is(err, natsjs.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		// The server refused it, or nothing was listening on the subject.
		return fmt.Errorf("%w: %w", ErrNotStored, err)
	default:
		return fmt.Errorf("%w: %w", ErrUnconfirmed, err)
	}
}

// status is the status of a PubAck under the last checked configuration.
func (b *Backend) status() zeroloss.SendStatus {
	g := b.guarantee.Load()
	switch {
	case g.syncShort, g.keepShort:
		return zeroloss.FlushDiskTimeout
	case g.replicasShort:
		return zeroloss.ReplicaNotAvailable
	}
	return zeroloss.SendOK
}

// DeadLetters returns the dead letters of group, oldest first: the messages
// of the stream "<Stream>_DLQ" on the subject "<Stream>.dlq.<group>".
// DeadLetter.Pos is the dead letter's sequence in that stream.
func (b *Backend) DeadLetters(group string) ([]zeroloss.DeadLetter, error) {
	if !validName(group) {
		return nil, invalid("group", "%q is not a valid consumer name", group)
	}
	ctx, cancel := b.bound(context.Background())
	defer cancel()
	subject := b.dlqSubject(group)
	var out []zeroloss.DeadLetter
	for seq := uint64(1); ; {
		raw, err := b.dlq.GetMsg(ctx, seq, natsjs.WithGetMsgSubject(subject))
		if errors.Is(err, natsjs.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("jetstream: reading the dead letters of %s: %w", group, err)
		}
		m := decode(raw.Header, raw.Data)
		m.Topic, m.Tag = raw.Header.Get(headerTopic), raw.Header.Get(headerTag)
		_, m.ID, _ = SplitMsgID(raw.Header.Get(headerID))
		origSeq, _ := strconv.ParseUint(raw.Header.Get(headerSeq), 10, 64)
		attempts, _ := strconv.Atoi(raw.Header.Get(headerAttempts))
		out = append(out, zeroloss.DeadLetter{Pos: raw.Sequence, Seq: origSeq, Attempts: attempts,
			Reason: raw.Header.Get(headerReason), Message: m, Time: raw.Time})
		seq = raw.Sequence + 1
	}
}

func (b *Backend) dlqSubject(group string) string { return b.opts.Stream + ".dlq." + group }

// deadLetter publishes the message at stream seq seq (subject, headers and
// body) to the group's dead letters and waits for the PubAck. Its
// Nats-Msg-Id names the group and seq, so the Nack path and the advisory
// path, or two processes, store it once within the dedup window.
func (b *Backend) deadLetter(ctx context.Context, group string, seq uint64, subject string, header nats.Header, body []byte, attempts int, reason string) error {
	h := nats.Header{}
	for k, v := range header {
		if !reserved(k) || k == headerKey {
			h[k] = v
		}
	}
	h[headerID] = []string{header.Get(natsjs.MsgIDHeader)}
	h[headerSeq] = []string{strconv.FormatUint(seq, 10)}
	h[headerAttempts] = []string{strconv.Itoa(attempts)}
	h[headerReason] = []string{reason}
	if topic, tag, ok := b.route(subject); ok {
		h[headerTopic], h[headerTag] = []string{topic}, []string{tag}
	}
	msg := &nats.Msg{Subject: b.dlqSubject(group), Header: h, Data: body}
	id := "dlq-" + group + "-" + strconv.FormatUint(seq, 10)
	if _, err := b.js.PublishMsg(ctx, msg, natsjs.WithMsgID(id), natsjs.WithExpectStream(b.opts.Stream+"_DLQ")); err != nil {
		return fmt.Errorf("jetstream: dead-lettering seq %d of group %s: %w", seq, group, err)
	}
	b.logger.Warn("jetstream: message dead-lettered", "group", group, "seq", seq, "attempts", attempts, "reason", reason)
	return nil
}

// decodeStored turns a message stored on subject back into a
// zeroloss.Message: its topic and tag from the subject, its ID from the
// Nats-Msg-Id.
func (b *Backend) decodeStored(subject string, h nats.Header, body []byte) zeroloss.Message {
	m := decode(h, body)
	m.Topic, m.Tag, _ = b.route(subject)
	return m
}

// decode turns the headers and body of a stored message back into a
// zeroloss.Message (without its topic and tag).
func decode(h nats.Header, body []byte) zeroloss.Message {
	_, id, _ := SplitMsgID(h.Get(natsjs.MsgIDHeader))
	m := zeroloss.Message{ID: id, Key: h.Get(headerKey), Body: body}
	for k, v := range h {
		if reserved(k) || len(v) == 0 {
			continue
		}
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		m.Headers[k] = v[0]
	}
	if m.Body == nil {
		m.Body = []byte{}
	}
	return m
}

// Close stops the adapter: later Sends and Receives fail with
// zeroloss.ErrClosed, blocked Receives return, the max-deliveries advisory
// subscriptions end. It does not close the NATS connection. Idempotent.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for group, sub := range b.advisories {
			if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				b.logger.Warn("jetstream: unsubscribing the advisories", "group", group, "error", err)
			}
		}
	})
	return nil
}
