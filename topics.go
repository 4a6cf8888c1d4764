package zeroloss

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
)

// Topics.
//
// Every topic lives in the one log: a batch of Sends to many topics is one
// write and one fdatasync. A consumer group reads one topic (the default
// topic "" unless ConsumerOptions.Topic names another), optionally only the
// messages whose tag it lists. The topic index below says where each topic's
// messages are, so that a group skips the others' records without reading
// them.

const (
	// MaxTopicLength is the longest topic name, in bytes.
	MaxTopicLength = 128
	// MaxTagLength is the longest tag, in bytes.
	MaxTagLength = 128
	// MaxGroupTags is the most tags a group's filter may list.
	MaxGroupTags = 64
)

// checkName says why name is not a valid topic name or tag (what says which):
// 1 to max bytes of ASCII letters, digits and . _ - : / (so that a name maps
// to a JetStream subject token or a file name without escaping).
func checkName(what, name string, max int, sentinel error) error {
	if name == "" {
		return fmt.Errorf("%s is empty: %w", what, sentinel)
	}
	if len(name) > max {
		return fmt.Errorf("%s %.40q... is %d bytes, limit %d: %w", what, name, len(name), max, sentinel)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == '-' || c == ':' || c == '/') {
			return fmt.Errorf("%s %q: byte %d (%q) is not a letter, digit or one of . _ - : /: %w", what, name, i, c, sentinel)
		}
	}
	return nil
}

// checkRoute checks a message's topic and tag (either may be empty).
func checkRoute(topic, tag string) error {
	if topic != "" {
		if err := checkName("Message.Topic", topic, MaxTopicLength, ErrInvalidMessage); err != nil {
			return err
		}
	}
	if tag != "" {
		if err := checkName("Message.Tag", tag, MaxTagLength, ErrInvalidMessage); err != nil {
			return err
		}
	}
	return nil
}

// selection is what a consumer group reads: a topic, and the tags it takes
// (sorted, no repeats; none: every message of the topic).
type selection struct {
	topic string
	tags  []string
}

// newSelection checks a group's topic and tags and returns them as stored.
func newSelection(topic string, tags []string) (selection, error) {
	if topic != "" {
		if err := checkName("ConsumerOptions.Topic", topic, MaxTopicLength, ErrInvalidOptions); err != nil {
			return selection{}, err
		}
	}
	if len(tags) > MaxGroupTags {
		return selection{}, fmt.Errorf("ConsumerOptions.Tags lists %d tags, limit %d: %w", len(tags), MaxGroupTags, ErrInvalidOptions)
	}
	for _, t := range tags {
		if err := checkName("ConsumerOptions.Tags: tag", t, MaxTagLength, ErrInvalidOptions); err != nil {
			return selection{}, err
		}
	}
	sorted := slices.Compact(slices.Sorted(slices.Values(tags)))
	if len(sorted) == 0 {
		sorted = nil
	}
	return selection{topic: topic, tags: sorted}, nil
}

// matches says whether a message with this topic and tag is the group's.
func (s *selection) matches(topic, tag []byte) bool {
	if string(topic) != s.topic {
		return false
	}
	if len(s.tags) == 0 {
		return true
	}
	_, found := slices.BinarySearch(s.tags, string(tag))
	return found
}

func (s selection) equal(o selection) bool {
	return s.topic == o.topic && slices.Equal(s.tags, o.tags)
}

func (s selection) String() string {
	t := s.topic
	if t == "" {
		t = `"" (the default topic)`
	}
	if len(s.tags) == 0 {
		return "topic " + t
	}
	return fmt.Sprintf("topic %s, tags %q", t, s.tags)
}

// The topic index: for every topic, and for every tag of a topic, the runs of
// consecutive log positions holding its messages. A run is a stretch of
// messages with consecutive seqs, all of one topic and tag, in one segment;
// its first frame's offset lets a reader seek to it. A log written by one
// producer to one topic is a run per Send batch; the index costs memory in
// proportion to how often the topic changes from one message to the next,
// not to the number of messages.
//
// It is derived data: built from the log by recovery (Open reads every
// record anyway), extended by the committer after each write, and trimmed
// by retention. It holds only main-stream messages (TypeMessage on stream
// 0, which includes committed transactional messages); half messages and
// consumer records are not in it. Readers never trust it past the log:
// Reader.Seek checks that the frame it names is there, and a group reads
// the message itself before delivering it.
type topicIndex struct {
	mu      sync.RWMutex
	topics  map[string]*topicEntry
	indexed uint64 // every main-stream message up to this seq is in the index

	// The run the last message went into: the next one extends it if it
	// follows it directly (next seq, next offset) with the same topic and tag.
	lastAll, lastTag *runs
	lastEnd          int64

	// times remembers, by topic, the append time of the oldest retained
	// message TopicStats read last (a seq's record never changes): a
	// TopicStats call reads only the topics whose oldest message changed.
	timesMu sync.Mutex
	times   map[string]appended
}

// appended is when the message at seq was appended.
type appended struct {
	seq uint64
	at  time.Time
}

// topicEntry is one topic's part of the index.
type topicEntry struct {
	name string
	all  runs             // every message of the topic
	tags map[string]*runs // the messages of each non-empty tag
}

// runs is the index of one topic, or one tag of a topic.
type runs struct {
	list  []run  // ascending
	total uint64 // messages ever added
	bytes uint64 // frame bytes of the runs in list (kept as they change: TopicStats does not walk the list)
}

// run is n messages at seqs first..first+n-1, the first at offset off of its
// segment; cum is how many messages of its runs came before it (since the
// index began), bytes the frames' total size.
type run struct {
	first, cum uint64
	off        int64
	n, bytes   uint32
}

func newTopicIndex() *topicIndex {
	return &topicIndex{topics: map[string]*topicEntry{"": {name: "", tags: map[string]*runs{}}}}
}

// entry returns the topic's entry, creating it (the caller holds mu).
func (x *topicIndex) entry(topic []byte) *topicEntry {
	e := x.topics[string(topic)]
	if e == nil {
		e = &topicEntry{name: string(topic), tags: map[string]*runs{}}
		x.topics[e.name] = e
	}
	return e
}

// add indexes the main-stream message at seq, whose frame of size bytes
// starts at off in its segment (the caller holds mu; seqs ascend).
func (x *topicIndex) add(topic, tag []byte, seq uint64, off int64, size int) {
	e := x.entry(topic)
	var tr *runs
	if len(tag) > 0 {
		tr = e.tags[string(tag)]
		if tr == nil {
			tr = &runs{}
			e.tags[string(tag)] = tr
		}
	}
	follows := seq == x.indexed+1 && off == x.lastEnd
	x.lastAll = e.all.add(x.lastAll == &e.all && follows, seq, off, size)
	if tr != nil {
		x.lastTag = tr.add(x.lastTag == tr && follows, seq, off, size)
	} else {
		x.lastTag = nil
	}
	x.indexed, x.lastEnd = seq, off+int64(size)
}

// add appends the message at seq to rs, extending its last run if extend.
func (rs *runs) add(extend bool, seq uint64, off int64, size int) *runs {
	if extend && rs.extends(seq, size) {
		rs.grow(size)
		return rs
	}
	rs.list = append(rs.list, run{first: seq, cum: rs.total, off: off, n: 1, bytes: uint32(size)})
	rs.total++
	rs.bytes += uint64(size)
	return rs
}

// extends says whether the message at seq, of size bytes, can join the last
// run of rs (the caller knows it follows that run's last frame directly).
func (rs *runs) extends(seq uint64, size int) bool {
	k := len(rs.list)
	if k == 0 {
		return false
	}
	last := &rs.list[k-1]
	return last.first+uint64(last.n) == seq && uint64(last.bytes)+uint64(size) < 1<<32 && last.n < 1<<31
}

// grow adds a message of size bytes to the last run of rs (extends said it
// can).
func (rs *runs) grow(size int) {
	last := &rs.list[len(rs.list)-1]
	last.n++
	last.bytes += uint32(size)
	rs.total++
	rs.bytes += uint64(size)
}

// extendLast adds the message at seq, at off and of size bytes, to the runs
// the last message went into, without looking its topic and tag up, if it
// directly follows that message (next seq, next offset). The caller knows it
// has the same topic and tag. It reports whether it did; if not, the caller
// adds it with add.
func (x *topicIndex) extendLast(seq uint64, off int64, size int) bool {
	if x.lastAll == nil || seq != x.indexed+1 || off != x.lastEnd ||
		!x.lastAll.extends(seq, size) || x.lastTag != nil && !x.lastTag.extends(seq, size) {
		return false
	}
	x.lastAll.grow(size)
	if x.lastTag != nil {
		x.lastTag.grow(size)
	}
	x.indexed, x.lastEnd = seq, off+int64(size)
	return true
}

// passed notes that the log took seqs up to last (records that are not
// main-stream messages): a message after them does not extend a run.
func (x *topicIndex) passed(last uint64) {
	if last > x.indexed {
		x.indexed, x.lastAll, x.lastTag = last, nil, nil
	}
}

// find returns the run holding the first message at or after seq (ok false
// if there is none).
func (rs *runs) find(seq uint64) (r run, ok bool) {
	i := sort.Search(len(rs.list), func(i int) bool {
		r := rs.list[i]
		return r.first+uint64(r.n) > seq
	})
	if i == len(rs.list) {
		return run{}, false
	}
	return rs.list[i], true
}

// from counts the messages of rs at or after seq.
func (rs *runs) from(seq uint64) uint64 {
	r, ok := rs.find(seq)
	if !ok {
		return 0
	}
	before := r.cum
	if seq > r.first {
		before += seq - r.first
	}
	return rs.total - before
}

// trim drops the runs below seq (retention deleted their segments).
func (rs *runs) trim(seq uint64) {
	i := sort.Search(len(rs.list), func(i int) bool {
		r := rs.list[i]
		return r.first+uint64(r.n) > seq
	})
	for _, r := range rs.list[:i] {
		rs.bytes -= uint64(r.bytes)
	}
	if i > len(rs.list)/2 {
		rs.list = append([]run(nil), rs.list[i:]...)
	} else {
		rs.list = rs.list[i:]
	}
}

// hit is where a group's next message is: seq, and a frame at or before it
// whose offset is known (at, off), to seek to.
type hit struct {
	seq, at uint64
	off     int64
}

// next returns where the first message of sel at or after seq is, or ok
// false if the index holds none; indexed is the last seq the index covers.
func (x *topicIndex) next(sel *selection, seq uint64) (h hit, ok bool, indexed uint64) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e := x.topics[sel.topic]
	if e == nil {
		return hit{}, false, x.indexed
	}
	consider := func(rs *runs) {
		r, found := rs.find(seq)
		if !found {
			return
		}
		s := max(r.first, seq)
		if !ok || s < h.seq {
			h, ok = hit{seq: s, at: r.first, off: r.off}, true
		}
	}
	if len(sel.tags) == 0 {
		consider(&e.all)
	} else {
		for _, t := range sel.tags {
			if rs := e.tags[t]; rs != nil {
				consider(rs)
			}
		}
	}
	return h, ok, x.indexed
}

// count returns how many messages of sel are at or after seq.
func (x *topicIndex) count(sel *selection, seq uint64) uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e := x.topics[sel.topic]
	if e == nil {
		return 0
	}
	if len(sel.tags) == 0 {
		return e.all.from(seq)
	}
	var n uint64
	for _, t := range sel.tags {
		if rs := e.tags[t]; rs != nil {
			n += rs.from(seq)
		}
	}
	return n
}

// countBetween returns how many messages of sel are at seqs in [from, to).
func (x *topicIndex) countBetween(sel *selection, from, to uint64) uint64 {
	if to <= from {
		return 0
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	e := x.topics[sel.topic]
	if e == nil {
		return 0
	}
	between := func(rs *runs) uint64 { return rs.from(from) - rs.from(to) }
	if len(sel.tags) == 0 {
		return between(&e.all)
	}
	var n uint64
	for _, t := range sel.tags {
		if rs := e.tags[t]; rs != nil {
			n += between(rs)
		}
	}
	return n
}

// trim drops what lies below seq: retention deleted the segments.
func (x *topicIndex) trim(seq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range x.topics {
		e.all.trim(seq)
		for _, rs := range e.tags {
			rs.trim(seq)
		}
	}
}

// oldest returns the seq of the oldest retained message of every topic that
// has one.
func (x *topicIndex) oldest() map[string]uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make(map[string]uint64, len(x.topics))
	for name, e := range x.topics {
		if len(e.all.list) > 0 {
			out[name] = e.all.list[0].first
		}
	}
	return out
}

// topicCounts is what the index says of one topic.
type topicCounts struct {
	messages, bytes uint64
	oldest          uint64 // seq of its oldest retained message (0: none)
	oldestOff       int64  // the offset of its frame in its segment
}

// counts returns the retained messages, bytes and oldest seq of every topic:
// a pass over the topics, not their runs, so that a scrape holds the index
// (which the committer locks after each write) for that long only.
func (x *topicIndex) counts() map[string]topicCounts {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make(map[string]topicCounts, len(x.topics))
	for name, e := range x.topics {
		c := topicCounts{bytes: e.all.bytes}
		if len(e.all.list) > 0 {
			c.oldest, c.oldestOff = e.all.list[0].first, e.all.list[0].off
			c.messages = e.all.total - e.all.list[0].cum
		}
		out[name] = c
	}
	return out
}

// indexFrames adds the main-stream messages among the first n frames of buf,
// appended from seq first on at offsets, to the topic index (the committer,
// right after the write; the FlushAsync syncer may have published them
// already, and commit then wakes the Receives that looked meanwhile).
func (q *Queue) indexFrames(buf []byte, first uint64, n int, offsets []int64) {
	if n == 0 {
		return
	}
	x := q.topics
	x.mu.Lock()
	defer x.mu.Unlock()
	// The route of the message indexed last in this batch: a batch to one
	// topic extends the same runs frame after frame, with no lookups.
	var lastTopic, lastTag []byte
	routed := false
	for i, pos := 0, 0; i < n; i++ {
		size := record.HeaderSize + int(binary.LittleEndian.Uint32(buf[pos:pos+4]))
		frame := buf[pos : pos+size]
		if record.Type(frame[9]) == record.TypeMessage && binary.LittleEndian.Uint16(frame[10:12]) == 0 {
			// The payload was encoded by this process: it decodes.
			topic, tag, _ := record.MessageRoute(frame[record.HeaderSize:])
			seq := first + uint64(i)
			if !routed || string(topic) != string(lastTopic) || string(tag) != string(lastTag) ||
				!x.extendLast(seq, offsets[i], size) {
				x.add(topic, tag, seq, offsets[i], size)
			}
			lastTopic, lastTag, routed = topic, tag, true
		}
		pos += size
	}
	x.passed(first + uint64(n) - 1)
}

// indexRecord adds rec, read at off by recovery, to the index if it is a
// main-stream message.
func (x *topicIndex) indexRecord(rec *record.Record, off int64) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if rec.Type == record.TypeMessage && rec.Stream == 0 {
		topic, tag, err := record.MessageRoute(rec.Payload)
		if err != nil {
			return fmt.Errorf("zeroloss: message at seq %d: %w", rec.Seq, err)
		}
		x.add(topic, tag, rec.Seq, off, record.HeaderSize+len(rec.Payload))
	}
	x.passed(rec.Seq)
	return nil
}

// TopicStats describes one topic at one moment.
type TopicStats struct {
	Topic string // "" is the default topic
	// Messages and Bytes (whole frames) are the topic's retained messages:
	// sent and not deleted by retention yet, acked or not.
	Messages, Bytes uint64
	// Groups counts the consumer groups reading the topic. A topic with
	// none keeps its messages (within RetentionBytes and RetentionAge) for
	// a group declared later with StartOldest.
	Groups int
	// OldestSeq and Oldest are the seq and append time of the oldest
	// retained message (zero if none).
	OldestSeq uint64
	Oldest    time.Time
}

// TopicStats returns the stats of every topic that holds a retained message
// or has a consumer group, by name (the default topic "" first).
func (q *Queue) TopicStats() []TopicStats {
	counts := q.topics.counts()
	groups := map[string]int{}
	for _, g := range q.groupList() {
		groups[g.sel.topic]++
	}
	var out []TopicStats
	for name, c := range counts {
		if c.messages == 0 && groups[name] == 0 {
			continue
		}
		out = append(out, TopicStats{Topic: name, Messages: c.messages, Bytes: c.bytes, Groups: groups[name], OldestSeq: c.oldest})
	}
	for name, n := range groups {
		if _, ok := counts[name]; !ok {
			out = append(out, TopicStats{Topic: name, Groups: n})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	x := q.topics
	x.timesMu.Lock() // serializes TopicStats calls only
	defer x.timesMu.Unlock()
	known := make(map[string]appended, len(out))
	for i := range out {
		st := &out[i]
		if st.OldestSeq == 0 {
			continue
		}
		if a, ok := x.times[st.Topic]; ok && a.seq == st.OldestSeq {
			st.Oldest = a.at
		} else {
			st.Oldest = q.appendTime(st.OldestSeq, counts[st.Topic].oldestOff)
		}
		if !st.Oldest.IsZero() {
			known[st.Topic] = appended{st.OldestSeq, st.Oldest}
		}
	}
	x.times = known // topics gone since are forgotten
	return out
}

// appendTime returns when the record at seq, whose frame starts at off in
// its segment, was appended (zero if it is not readable, e.g. deleted
// since). It reads that one frame.
func (q *Queue) appendTime(seq uint64, off int64) time.Time {
	r := q.log.NewUncappedReader(seq)
	defer r.Close()
	r.Seek(seq, seq, off)
	rec, err := r.Next()
	if err != nil || rec.Seq != seq {
		return time.Time{}
	}
	return unixTime(rec.Time)
}
