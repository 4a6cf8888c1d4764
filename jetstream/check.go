package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// Guarantee is what a PubAck means under the configuration Check found, and
// what falls short of Options.Require.
type Guarantee struct {
	// Replicas is the smaller replica count of the two streams (messages
	// and dead letters). A PubAck means a quorum of them stored it.
	Replicas int
	// FileStorage says both streams are on disk (not memory).
	FileStorage bool
	// PersistAsync says a stream uses persist_mode async (PubAck before
	// the write).
	PersistAsync bool
	// Servers maps each server holding a stream to whether it fsyncs every
	// write before answering (sync_interval: always), as it reported
	// through Options.SystemConn; empty without SystemConn.
	Servers map[string]bool
	// SyncVerified says every server holding the streams answered and
	// fsyncs every write.
	SyncVerified bool
	// KeepsMessages says both streams keep every message they acknowledge
	// until it is read, deduplicate resends for at least
	// Options.DedupWindow, and store it on the subject the adapter reads:
	// limits retention, no limit that evicts (or only with
	// Require.AcceptEviction), no subject transform, not sealed, and a
	// PubAck for every publish. See streamShortfalls.
	KeepsMessages bool
	// Shortfalls lists, in words, what falls short of Options.Require,
	// and the stream settings that keep KeepsMessages false, each naming
	// its stream. Empty means SendOK carries the required guarantee.
	Shortfalls []string
	// Checked is when the check ran.
	Checked time.Time

	syncShort, replicasShort, keepShort bool
}

// Guarantee returns the result of the last configuration check (Open, or a
// later Check).
func (b *Backend) Guarantee() Guarantee { return *b.guarantee.Load() }

// Check reads the configuration of both streams (see streamShortfalls for
// the settings that make a PubAck mean less than kept until read) and, with
// Options.SystemConn, the sync setting of every server holding them, and
// compares them with Options.Require. The result replaces the one Send
// statuses are derived from. It does not fail for a shortfall, only when it
// cannot read the streams.
func (b *Backend) Check(ctx context.Context) (Guarantee, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	g := Guarantee{FileStorage: true, Checked: time.Now()}
	servers := map[string]bool{} // names of the servers holding a stream
	var keep []string            // what makes a PubAck mean less than kept until read
	for i, s := range []natsjs.Stream{b.stream, b.dlq} {
		info, err := s.Info(ctx)
		if err != nil {
			return g, fmt.Errorf("jetstream: checking the stream: %w", err)
		}
		cfg := info.Config
		keep = append(keep, streamShortfalls(cfg, i == 0, b.opts.DedupWindow, b.opts.Require.AcceptEviction)...)
		if g.Replicas == 0 || cfg.Replicas < g.Replicas {
			g.Replicas = max(cfg.Replicas, 1)
		}
		if cfg.Storage != natsjs.FileStorage {
			g.FileStorage = false
		}
		if cfg.PersistMode == natsjs.AsyncPersistMode {
			g.PersistAsync = true
		}
		if c := info.Cluster; c != nil {
			if c.Leader != "" {
				servers[c.Leader] = true
			}
			for _, p := range c.Replicas {
				servers[p.Name] = true
			}
		}
	}
	req := b.opts.Require
	if g.Replicas < req.Replicas {
		g.replicasShort = true
		g.Shortfalls = append(g.Shortfalls, fmt.Sprintf("the streams have %d replica(s), %d required", g.Replicas, req.Replicas))
	}
	g.KeepsMessages = len(keep) == 0
	if len(keep) > 0 {
		g.keepShort = true
		g.Shortfalls = append(g.Shortfalls, keep...)
	}
	if b.opts.SystemConn != nil {
		reported, err := askSync(ctx, b.opts.SystemConn, servers)
		if err != nil {
			b.logger.Warn("jetstream: could not ask the servers for their sync setting", "error", err)
		}
		g.Servers = reported
		g.SyncVerified = len(reported) > 0
		for name := range servers {
			if _, ok := reported[name]; !ok {
				g.SyncVerified = false
			}
		}
		for _, always := range reported {
			g.SyncVerified = g.SyncVerified && always
		}
	}
	if !req.AcceptBackgroundSync {
		var short []string
		if !g.FileStorage {
			short = append(short, "a stream uses memory storage")
		}
		if g.PersistAsync {
			short = append(short, "a stream uses persist_mode async (PubAck before the write)")
		}
		switch {
		case b.opts.SystemConn == nil:
			short = append(short, "the servers' sync setting cannot be verified without Options.SystemConn")
		case !g.SyncVerified:
			short = append(short, fmt.Sprintf("not every server holding the streams reported sync_interval: always (reported: %v, expected: %v)",
				g.Servers, sortedNames(servers)))
		}
		if len(short) > 0 {
			g.syncShort = true
			g.Shortfalls = append(g.Shortfalls, short...)
		}
	}
	b.guarantee.Store(&g)
	return g, nil
}

// varzReply is the part of a $SYS.REQ.SERVER.PING.VARZ answer the check
// reads.
type varzReply struct {
	Server struct {
		Name string `json:"name"`
	} `json:"server"`
	Data struct {
		JetStream struct {
			Config *struct {
				SyncAlways   bool          `json:"sync_always"`
				SyncInterval time.Duration `json:"sync_interval"`
			} `json:"config"`
		} `json:"jetstream"`
	} `json:"data"`
}

// askSync asks every server for its VARZ and returns, for each server that
// answered with a JetStream configuration, whether it fsyncs every write.
// It waits until every name in want answered, or, with want empty, for the
// first answer and a short while more; at most until ctx ends.
func askSync(ctx context.Context, sys *nats.Conn, want map[string]bool) (map[string]bool, error) {
	inbox := sys.NewRespInbox()
	sub, err := sys.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := sys.PublishRequest("$SYS.REQ.SERVER.PING.VARZ", inbox, nil); err != nil {
		return nil, err
	}
	got := map[string]bool{}
	wait := ctx
	for {
		if len(want) == 0 && len(got) > 0 && wait == ctx {
			// No names to wait for (a server outside a cluster): give
			// other servers a moment to answer too.
			var cancel context.CancelFunc
			wait, cancel = context.WithTimeout(ctx, 250*time.Millisecond)
			defer cancel()
		}
		msg, err := sub.NextMsgWithContext(wait)
		if err != nil {
			if len(got) > 0 && errors.Is(err, context.DeadlineExceeded) {
				return got, nil
			}
			return got, err
		}
		var r varzReply
		if err := json.Unmarshal(msg.Data, &r); err != nil || r.Data.JetStream.Config == nil {
			continue // not a JetStream server, or not an answer we read
		}
		got[r.Server.Name] = r.Data.JetStream.Config.SyncAlways
		done := len(want) > 0
		for name := range want {
			if _, ok := got[name]; !ok {
				done = false
			}
		}
		if done {
			return got, nil
		}
	}
}

func sortedNames(set map[string]bool) []string {
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// streamShortfalls lists the settings of a stream that make its PubAck mean
// less than "stored, kept until every consumer group read it, and found
// again by a resend within dedup": main is the messages' stream (false: the
// dead letters'), dedup the window Options.DedupWindow promises,
// acceptEviction Requirement.AcceptEviction.
//
// Not listed, because they do not weaken an acknowledged message: a
// DiscardNew limit (MaxMsgs, MaxBytes, or MaxMsgsPerSubject with
// DiscardNewPerSubject) refuses the publish, which Send reports as
// ErrNotStored; MaxMsgSize and MaxConsumers refuse too; AllowMsgTTL,
// AllowMsgSchedules and AllowRollup act only on messages carrying a Nats-
// header, which the adapter never sends (it refuses them in
// Message.Headers); RePublish copies a message after storing it; Sources add
// messages (a source without its own Duplicates window turns deduplication
// off, which the window check catches); DenyDelete and DenyPurge guard
// against deliberate deletion through the API, which is not a failure the
// adapter can check for; a Mirror has no subjects, which Open refuses.
func streamShortfalls(cfg natsjs.StreamConfig, main bool, dedup time.Duration, acceptEviction bool) []string {
	var short []string
	name := cfg.Name
	switch cfg.Retention {
	case natsjs.LimitsPolicy:
	case natsjs.InterestPolicy:
		short = append(short, fmt.Sprintf("the stream %s has interest retention: a message no consumer is interested in when it arrives is acknowledged and not stored (its ID is remembered, so a resend is a duplicate), and one is deleted once the consumers that exist acked it", name))
	case natsjs.WorkQueuePolicy:
		short = append(short, fmt.Sprintf("the stream %s has work-queue retention: a message is deleted once one consumer acked it, so not every group receives it", name))
	default:
		short = append(short, fmt.Sprintf("the stream %s has an unknown retention policy %v", name, cfg.Retention))
	}
	if !acceptEviction {
		if cfg.MaxAge > 0 {
			short = append(short, fmt.Sprintf("the stream %s deletes messages older than %v (MaxAge), read or not (Require.AcceptEviction accepts it)", name, cfg.MaxAge))
		}
		if cfg.Discard != natsjs.DiscardNew && (cfg.MaxMsgs > 0 || cfg.MaxBytes > 0) {
			short = append(short, fmt.Sprintf("the stream %s discards its oldest messages, read or not, past MaxMsgs %d or MaxBytes %d (DiscardOld; DiscardNew refuses new messages instead; Require.AcceptEviction accepts it)", name, cfg.MaxMsgs, cfg.MaxBytes))
		}
		if cfg.MaxMsgsPerSubject > 0 && !(cfg.Discard == natsjs.DiscardNew && cfg.DiscardNewPerSubject) {
			short = append(short, fmt.Sprintf("the stream %s deletes the oldest message of a subject, read or not, past MaxMsgsPerSubject %d (without DiscardNew and DiscardNewPerSubject; Require.AcceptEviction accepts it)", name, cfg.MaxMsgsPerSubject))
		}
	}
	if cfg.Duplicates < dedup {
		short = append(short, fmt.Sprintf("the stream %s remembers message IDs for %v (Duplicates), less than Options.DedupWindow %v: a resend after ErrUnconfirmed may be stored twice", name, cfg.Duplicates, dedup))
	}
	if t := cfg.SubjectTransform; t != nil && (t.Source != "" || t.Destination != "") {
		short = append(short, fmt.Sprintf("the stream %s rewrites the subjects of incoming messages (%q to %q): a message may be stored where the adapter does not read", name, t.Source, t.Destination))
	}
	if cfg.Sealed {
		short = append(short, fmt.Sprintf("the stream %s is sealed: it refuses every message", name))
	}
	if cfg.NoAck {
		short = append(short, fmt.Sprintf("the stream %s does not acknowledge publishes (NoAck): no message can be confirmed", name))
	}
	if main && cfg.ConsumerLimits.InactiveThreshold > 0 {
		short = append(short, fmt.Sprintf("the stream %s deletes a consumer inactive for %v (ConsumerLimits.InactiveThreshold): a group whose processes are away that long loses its position", name, cfg.ConsumerLimits.InactiveThreshold))
	}
	return short
}
