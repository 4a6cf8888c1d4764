package zeroloss

import (
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// DirState is what a queue directory holds beyond its messages, read without
// opening the queue: the consumer groups, pending transactions and the dedup
// table, as a restart would rebuild them.
type DirState struct {
	LastSeq    uint64
	Groups     []DirGroup
	PendingTx  int // transactional half messages waiting for a decision
	DedupIDs   int // message IDs within the dedup window (DefaultDedupWindow), as of now
	Checkpoint bool
	// SpoolDepth is set when dir is a strict producer's spool rather than a
	// queue: the messages spooled and not yet confirmed by a queue.
	SpoolDepth *int
	// Epoch is the latest leadership term the directory records (epoch.go)
	// and EpochStart the seq of its epoch record; 0 if none. Follower says
	// the directory is a follower's copy (its FOLLOWER marker or its
	// IDENTITY says so): the Open that promotes it starts the next epoch
	// 2^32 seqs up.
	Epoch, EpochStart uint64
	Follower          bool
	// Kind and QueueID are what the directory's IDENTITY file says (see
	// DirIdentity); both "" if it has none.
	Kind, QueueID string
	// Topics are the topics holding a retained message or read by a group,
	// as Queue.TopicStats returns them.
	Topics []TopicStats
	// CheckpointFiles are the directory's checkpoint files, newest first,
	// each with whether the next Open could start from it.
	CheckpointFiles []DirCheckpointFile
}

// DirCheckpointFile is a checkpoint file (Options.CheckpointBytes): the
// state Open would rebuild, as of the record at Seq.
type DirCheckpointFile struct {
	Name  string
	Seq   uint64
	Bytes int64
	// Problem says why Open would ignore it (a failed checksum, an unknown
	// version, a seq above the log's last, another record at its seq);
	// empty if Open can start from it.
	Problem string
}

// DirIdentity says what a directory is, as its IDENTITY file says.
type DirIdentity struct {
	// Kind is "queue", "follower copy" or "producer spool"; "" when the
	// directory has no IDENTITY file (written before directory identity,
	// or not zeroloss's).
	Kind string
	// QueueID names the queue (32 hex digits); "" when none is known (no
	// IDENTITY, or a follower that has not met its leader yet).
	QueueID string
	// Foreign lists the files in the directory that zeroloss did not
	// create, sorted: Open, NewProducer and Follow refuse such a directory.
	Foreign []string
	// Segments says whether the directory holds segment files.
	Segments bool
}

// ReadDirIdentity reads what dir says it is, without locking or changing
// anything. A damaged IDENTITY file is ErrCorrupt.
func ReadDirIdentity(dir string) (DirIdentity, error) {
	return readDirIdentity(vfs.OS, dir)
}

func readDirIdentity(fsys vfs.FS, dir string) (DirIdentity, error) {
	var out DirIdentity
	names, err := fsys.List(dir)
	if err != nil {
		return out, err
	}
	for _, name := range names {
		if !ownedFile(name) {
			out.Foreign = append(out.Foreign, name)
		} else if strings.HasSuffix(name, ".wal") {
			out.Segments = true
		}
	}
	id, ok, err := readIdentity(fsys, dir)
	out.Kind, out.QueueID = identityStrings(id, ok)
	return out, err
}

// DirGroup is one consumer group's durable state.
type DirGroup struct {
	Name string
	// Topic and Tags are what the group reads.
	Topic string
	Tags  []string
	// Lag counts the messages of its topic (and tags) it has not acked, as
	// in GroupStats (as of the last record: messages delivered since the
	// last mark count as not delivered).
	Lag uint64
	// Floor: every main-stream message below it is acked or moved; Mark:
	// every one below it was delivered at least once.
	Floor, Mark uint64
	// Behind is an upper bound on the messages not delivered yet (log
	// positions from Mark to the last seq).
	Behind uint64
	// Unacked counts messages in [Floor, Mark) not acked: delivered and
	// unacked at the last record, due again after a restart (not those
	// read and never delivered: delayed, or behind their key's head).
	Unacked     int
	Retrying    int // messages in the group's retry stream
	DeadLetters int
	// HoldsOldest, PinnedSegments and PinnedBytes say how far the group
	// holds retention back, as in GroupStats.
	HoldsOldest    bool
	PinnedSegments int
	PinnedBytes    int64
	// RetryKeys counts the distinct keys of the messages in the group's
	// retry stream: the keys an Ordered group holds back (a key whose head
	// failed only once waits in memory, not in the log, and is not
	// counted). RetryKeyAge is the time since the oldest of those messages
	// was first delivered (0 if none was: delayed messages).
	RetryKeys   int
	RetryKeyAge time.Duration
}

// ReadDirState reads the log in dir, without locking or changing anything,
// and returns its state. It is safe on the directory of an open queue, but
// then what it reads may be a moment old. Damage is ErrCorrupt.
func ReadDirState(dir string) (DirState, error) {
	return readDirState(vfs.OS, dir)
}

func readDirState(fsys vfs.FS, dir string) (DirState, error) {
	var out DirState
	res, err := wal.Scan(fsys, dir)
	if err != nil {
		return out, err
	}
	id, hasID, err := readIdentity(fsys, dir)
	if err != nil {
		return out, err
	}
	if hasID && id.Kind == kindSpool ||
		!hasID && res.Frames[record.TypeGroup] == 0 && res.Frames[record.TypeCheckpoint] == 0 && res.Frames[record.TypeAck] > 0 {
		out, err := readSpoolState(fsys, dir, res)
		out.Kind, out.QueueID = identityStrings(id, hasID)
		return out, err
	}
	out.Kind, out.QueueID = identityStrings(id, hasID)
	q := &Queue{opts: Options{now: time.Now, TxTimeout: DefaultTxTimeout, TxCheckInterval: DefaultTxCheckInterval},
		ledger: newLedger(), topics: newTopicIndex(), tx: newTxTable(), dedup: newDedupTable(DefaultDedupWindow, 1<<62),
		logger: slog.New(slog.DiscardHandler)}
	var gaps []uint64
	for _, seg := range res.Segments {
		if seg.Gap {
			gaps = append(gaps, seg.BaseSeq)
		}
	}
	var chained bool
	var firstSeq uint64
	if len(res.Segments) > 0 {
		chained, firstSeq = res.Segments[0].PrevLastSeq > 0, res.Segments[0].BaseSeq
	}
	cu, err := catchupFor(fsys, dir, gaps)
	if err != nil {
		return out, err
	}
	rs := q.newReplay(chained, firstSeq, gaps, cu)
	files, taken, err := readCheckpointFiles(fsys, dir, res.LastSeq)
	if err != nil {
		return out, err
	}
	type route struct{ topic, tag string }
	mainSeqs := map[uint64]route{}   // main-stream message seqs, to count unacked ones: their topic and tag
	oldest := map[string]time.Time{} // by topic, the append time of its first message
	for _, seg := range res.Segments {
		err := wal.ReadFrames(fsys, dir, seg, func(off int64, rec *record.Record) error {
			if at, ok := taken[rec.Seq]; ok {
				if frameIDOf(rec, off).sameRecord(at) {
					delete(taken, rec.Seq)
				}
			}
			if rec.Stream == 0 && rec.Type == record.TypeMessage {
				topic, tag, err := record.MessageRoute(rec.Payload)
				if err != nil {
					return fmt.Errorf("zeroloss: message at seq %d: %w", rec.Seq, err)
				}
				r := route{string(topic), string(tag)}
				mainSeqs[rec.Seq] = r
				if _, ok := oldest[r.topic]; !ok {
					oldest[r.topic] = unixTime(rec.Time)
				}
			}
			if err := q.replay(rs, rec); err != nil {
				return err
			}
			return q.topics.indexRecord(rec, off)
		})
		if err != nil {
			return out, fmt.Errorf("zeroloss: reading %s: %w", dir, err)
		}
	}
	if err := q.finishReplay(rs); err != nil {
		return out, err
	}
	out.LastSeq, out.Checkpoint = res.LastSeq, rs.seenCheckpoint
	for i := range files {
		if _, missing := taken[files[i].Seq]; missing && files[i].Problem == "" {
			files[i].Problem = fmt.Sprintf("the log does not hold the record it was taken at (seq %d)", files[i].Seq)
		}
	}
	out.CheckpointFiles = files
	epochs, err := readEpochs(fsys, dir, res.LastSeq)
	if err != nil {
		return out, err
	}
	if n := len(epochs); n > 0 {
		out.Epoch, out.EpochStart = epochs[n-1].Num, epochs[n-1].Start
	}
	if f, err := fsys.Open(filepath.Join(dir, followerFile)); err == nil {
		f.Close()
		out.Follower = true
	}
	// Follow writes the identity before the marker, and promotion removes
	// the marker after rewriting it: either says follower.
	out.Follower = out.Follower || hasID && id.Kind == kindFollower
	out.PendingTx, _, _, _, _ = q.tx.counts()
	out.DedupIDs, _, _ = q.dedup.counts()
	var removable []wal.SegmentSpan // every segment but the last, as retention sees them
	for i, seg := range res.Segments {
		if i < len(res.Segments)-1 {
			removable = append(removable, wal.SegmentSpan{LastSeq: seg.LastSeq, Bytes: seg.DataBytes})
		}
	}
	floors := q.ledger.floors()
	for _, id := range slices.Sorted(maps.Keys(q.ledger.groups)) {
		g := q.ledger.groups[id]
		dg := DirGroup{Name: g.name, Topic: g.sel.topic, Tags: g.sel.tags, Floor: g.floor, Mark: g.mark, Retrying: len(g.retries), DeadLetters: len(g.dead)}
		_, dg.HoldsOldest, dg.PinnedSegments, dg.PinnedBytes = pinnedBy(g.name, floors, removable)
		if res.LastSeq >= g.mark {
			dg.Behind = res.LastSeq - g.mark + 1
		}
		done := 0 // acked at or above the mark (a retry or dead letter left it)
		for s, r := range mainSeqs {
			if !g.sel.matches([]byte(r.topic), []byte(r.tag)) {
				continue
			}
			if s >= g.mark && g.acked[s] {
				done++
			}
			if n, counted := g.attempts[s]; counted && n == 0 {
				if s >= g.floor && s < g.mark && !g.acked[s] {
					dg.Lag++ // read and never delivered: delayed, or behind its key's head
				}
				continue
			}
			if s >= g.floor && s < g.mark && !g.acked[s] {
				dg.Unacked++
			}
		}
		dg.Lag += uint64(dg.Unacked+dg.Retrying) + q.topics.count(&g.sel, g.mark) - uint64(done)
		dg.RetryKeys, dg.RetryKeyAge = retryKeys(g, q.opts.now())
		out.Groups = append(out.Groups, dg)
	}
	groups := map[string]int{}
	for _, g := range q.ledger.groups {
		groups[g.sel.topic]++
	}
	for name, c := range q.topics.counts() {
		if c.messages > 0 || groups[name] > 0 {
			out.Topics = append(out.Topics, TopicStats{Topic: name, Messages: c.messages, Bytes: c.bytes, Groups: groups[name],
				OldestSeq: c.oldest, Oldest: oldest[name]})
		}
	}
	for name, n := range groups {
		if !slices.ContainsFunc(out.Topics, func(t TopicStats) bool { return t.Topic == name }) {
			out.Topics = append(out.Topics, TopicStats{Topic: name, Groups: n})
		}
	}
	slices.SortFunc(out.Topics, func(a, b TopicStats) int { return strings.Compare(a.Topic, b.Topic) })
	return out, nil
}

func identityStrings(id identity, ok bool) (kind, queue string) {
	if !ok {
		return "", ""
	}
	if !id.Queue.isZero() {
		queue = id.Queue.String()
	}
	return id.Kind.String(), queue
}

// readSpoolState reads a producer's spool (producer.go): messages, and
// progress records (acks on spoolProgressStream) whose floor is the next
// spooled message to confirm.
func readSpoolState(fsys vfs.FS, dir string, res *wal.ScanResult) (DirState, error) {
	out := DirState{LastSeq: res.LastSeq}
	var floor uint64
	var seqs []uint64
	for _, seg := range res.Segments {
		err := wal.ReadFrames(fsys, dir, seg, func(_ int64, rec *record.Record) error {
			switch {
			case rec.Type == record.TypeMessage:
				seqs = append(seqs, rec.Seq)
			case rec.Type == record.TypeAck && rec.Stream == spoolProgressStream:
				a, err := record.DecodeAck(rec.Payload)
				if err != nil {
					return fmt.Errorf("zeroloss: spool progress record at seq %d: %w", rec.Seq, err)
				}
				floor = max(floor, a.Floor)
			}
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("zeroloss: reading %s: %w", dir, err)
		}
	}
	depth := 0
	for _, s := range seqs {
		if s >= floor {
			depth++
		}
	}
	out.SpoolDepth = &depth
	return out, nil
}

// retryKeys counts the distinct keys of g's retries, and the time since the
// earliest first delivery among them.
func retryKeys(g *ledgerGroup, now time.Time) (int, time.Duration) {
	keys := map[string]bool{}
	var first int64
	for _, r := range g.retries {
		if r.Message.Key == "" {
			continue
		}
		keys[r.Message.Key] = true
		if r.First != 0 && (first == 0 || r.First < first) {
			first = r.First
		}
	}
	if first == 0 {
		return len(keys), 0
	}
	return len(keys), max(now.Sub(unixTime(first)), 0)
}

// readCheckpointFiles describes dir's checkpoint files, newest first, and
// returns the records the usable ones were taken at, by seq, for the caller
// to find in the log (those it does not find make the file unusable).
func readCheckpointFiles(fsys vfs.FS, dir string, lastSeq uint64) ([]DirCheckpointFile, map[uint64]frameID, error) {
	names, err := fsys.List(dir)
	if err != nil {
		return nil, nil, err
	}
	var out []DirCheckpointFile
	taken := map[uint64]frameID{}
	for _, name := range names {
		seq, ok := parseCheckpointFileName(name)
		if !ok {
			continue
		}
		f := DirCheckpointFile{Name: name, Seq: seq}
		path := filepath.Join(dir, name)
		if size, err := fileSize(fsys, path); err == nil {
			f.Bytes = size
		}
		sf, err := readStateFile(fsys, path)
		switch {
		case err != nil:
			f.Problem = err.Error()
		case sf.at.seq != seq:
			f.Problem = fmt.Sprintf("holds seq %d", sf.at.seq)
		case seq > lastSeq:
			f.Problem = fmt.Sprintf("ahead of the log (last seq %d)", lastSeq)
		default:
			taken[seq] = sf.at
		}
		out = append(out, f)
	}
	slices.Reverse(out) // List sorts by name: oldest first
	return out, taken, nil
}

func fileSize(fsys vfs.FS, path string) (int64, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Size()
}
