package zeroloss

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// topicMessage is what a test sent: its ID, topic and tag.
type topicMessage struct{ id, topic, tag string }

// sendTopics sends msgs in batches of random sizes (1 to 16), so that one
// batch (one write, one fdatasync) carries many topics.
func sendTopics(t *testing.T, q *Queue, rng *rand.Rand, msgs []topicMessage) {
	t.Helper()
	for i := 0; i < len(msgs); {
		n := min(1+rng.IntN(16), len(msgs)-i)
		batch := make([]*Message, n)
		for j := range batch {
			m := msgs[i+j]
			batch[j] = &Message{ID: m.id, Topic: m.topic, Tag: m.tag, Body: []byte(m.id)}
		}
		res, err := q.SendBatch(context.Background(), batch)
		require.NoError(t, err)
		for _, r := range res {
			require.Equal(t, SendOK, r.Status)
		}
		i += n
	}
}

// randomTopicMessages returns n messages spread over topics (the default
// topic among them) and tags a, b, c or none.
func randomTopicMessages(rng *rand.Rand, n int, topics []string) []topicMessage {
	tags := []string{"", "a", "b", "c"}
	out := make([]topicMessage, n)
	for i := range out {
		topic := topics[rng.IntN(len(topics))]
		out[i] = topicMessage{id: fmt.Sprintf("%s-%05d", topic, i), topic: topic, tag: tags[rng.IntN(len(tags))]}
	}
	return out
}

// want returns the IDs of msgs a group on topic with tags (none: all)
// receives, in order.
func want(msgs []topicMessage, topic string, tags ...string) []string {
	var out []string
	for _, m := range msgs {
		if m.topic == topic && (len(tags) == 0 || slices.Contains(tags, m.tag)) {
			out = append(out, m.id)
		}
	}
	return out
}

// drainIDs receives and acks everything the consumer has now, checking each
// message's topic and tag against the group's, and returns the IDs in order.
func drainIDs(t *testing.T, c *Consumer, topic string, tags ...string) []string {
	t.Helper()
	var ids []string
	for _, d := range drain(t, c) {
		m := d.Message
		require.Equal(t, topic, m.Topic, "group %s got message %s of another topic", c.Group(), m.ID)
		if len(tags) > 0 {
			require.Contains(t, tags, m.Tag, "group %s got message %s with an unlisted tag", c.Group(), m.ID)
		}
		ids = append(ids, m.ID)
	}
	return ids
}

func TestTopicsAreIsolated(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	topics := []string{""}
	for i := range 11 {
		topics = append(topics, fmt.Sprintf("topic.%02d", i))
	}
	q := consumerQueue(t, vfs.NewMem(), nil)
	defer q.Close()
	msgs := randomTopicMessages(rng, 3000, topics)
	sendTopics(t, q, rng, msgs)
	for _, topic := range topics {
		for _, group := range []string{"one", "two"} { // two groups on a topic each get all of it
			c, err := q.Consumer(group+"@"+topic, &ConsumerOptions{Topic: topic})
			require.NoError(t, err)
			assert.Equal(t, want(msgs, topic), drainIDs(t, c, topic), "group %s", c.Group())
		}
		c, err := q.Consumer("tagged@"+topic, &ConsumerOptions{Topic: topic, Tags: []string{"c", "a", "a"}})
		require.NoError(t, err)
		assert.Equal(t, want(msgs, topic, "a", "c"), drainIDs(t, c, topic, "a", "c"))
	}
	for _, st := range q.GroupStats() {
		assert.Zero(t, st.Lag, "group %s is caught up", st.Group)
	}
}

func TestTopicsAfterRestart(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	topics := []string{"", "orders", "emails", "audit"}
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	first := randomTopicMessages(rng, 1200, topics)
	sendTopics(t, q, rng, first)
	got := map[string][]string{}
	consumers := map[string]*ConsumerOptions{}
	for _, topic := range topics {
		consumers["g@"+topic] = &ConsumerOptions{Topic: topic, AckTimeout: time.Minute}
	}
	consumers["tagged"] = &ConsumerOptions{Topic: "orders", Tags: []string{"b"}, AckTimeout: time.Minute}
	// Each group takes some of its messages, acks half of what it took
	// and holds the rest when the queue closes.
	for name, opts := range consumers {
		c, err := q.Consumer(name, opts)
		require.NoError(t, err)
		for i := 0; i < 40; i++ {
			d := receive(t, c)
			require.Equal(t, opts.Topic, d.Message.Topic)
			if i%2 == 0 {
				require.NoError(t, d.Ack())
				got[name] = append(got[name], d.Message.ID)
			}
		}
	}
	require.NoError(t, q.Close())

	q = consumerQueue(t, fs, nil)
	defer q.Close()
	second := randomTopicMessages(rng, 600, topics)
	for i := range second {
		second[i].id += "-after"
	}
	sendTopics(t, q, rng, second)
	all := append(append([]topicMessage(nil), first...), second...)
	for name, opts := range consumers {
		c, err := q.Consumer(name, opts)
		require.NoError(t, err)
		got[name] = append(got[name], drainIDs(t, c, opts.Topic, opts.Tags...)...)
		slices.Sort(got[name])
		wanted := want(all, opts.Topic, opts.Tags...)
		slices.Sort(wanted)
		assert.Equal(t, wanted, got[name], "group %s: every message of its topic once (the held ones again)", name)
	}
	// A group declared now, from the oldest, gets its whole topic.
	c, err := q.Consumer("late", &ConsumerOptions{Topic: "emails"})
	require.NoError(t, err)
	assert.Equal(t, want(all, "emails"), drainIDs(t, c, "emails"))
}

func TestGroupKeepsItsTopicAndTags(t *testing.T) {
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	_, err := q.Consumer("g", &ConsumerOptions{Topic: "orders", Tags: []string{"paid", "new"}})
	require.NoError(t, err)
	fresh := 0
	check := func(q *Queue) {
		t.Helper()
		fresh++
		_, err := q.Consumer("g", &ConsumerOptions{Topic: "orders", Tags: []string{"new", "paid", "new"}})
		require.NoError(t, err, "the same tags in another order")
		_, err = q.Consumer("g", &ConsumerOptions{Topic: "emails", Tags: []string{"paid", "new"}})
		require.ErrorIs(t, err, ErrInvalidOptions)
		assert.ErrorContains(t, err, "ConsumerOptions.Topic")
		_, err = q.Consumer("g", &ConsumerOptions{Topic: "orders"})
		require.ErrorIs(t, err, ErrInvalidOptions)
		assert.ErrorContains(t, err, "ConsumerOptions.Tags")
		_, err = q.Consumer("g", nil)
		require.ErrorIs(t, err, ErrInvalidOptions)
		assert.ErrorContains(t, err, "ConsumerOptions.Topic")
	}
	check(q)
	require.NoError(t, q.Close())
	q = consumerQueue(t, fs, nil) // the declaration is durable
	check(q)
	// A checkpoint carries it too: force one and reopen.
	_, _, err = q.checkpoint(context.Background())
	require.NoError(t, err)
	require.NoError(t, q.Close())
	q = consumerQueue(t, fs, nil)
	defer q.Close()
	check(q)
	// Deleting the group frees the name for another topic.
	require.NoError(t, q.DeleteGroup("g"))
	_, err = q.Consumer("g", &ConsumerOptions{Topic: "emails"})
	require.NoError(t, err)
}

func TestTopicAndTagNames(t *testing.T) {
	q := consumerQueue(t, vfs.NewMem(), nil)
	defer q.Close()
	long := string(make([]byte, MaxTopicLength+1))
	for i := range []byte(long) {
		long = long[:i] + "x" + long[i+1:]
	}
	for _, tc := range []struct {
		name, topic, tag, field string
	}{
		{"space in topic", "a b", "", "Message.Topic"},
		{"wildcard in topic", "orders.*", "", "Message.Topic"},
		{"long topic", long, "", "Message.Topic"},
		{"non-ASCII tag", "", "é", "Message.Tag"},
		{"NUL in tag", "t", "a\x00", "Message.Tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := q.Send(context.Background(), &Message{Topic: tc.topic, Tag: tc.tag, Body: []byte("x")})
			require.ErrorIs(t, err, ErrInvalidMessage)
			assert.ErrorContains(t, err, tc.field)
		})
	}
	res, err := q.Send(context.Background(), &Message{Topic: "Orders/eu-1:v2.x_y", Tag: "t.1", Body: []byte("x")})
	require.NoError(t, err)
	assert.Equal(t, SendOK, res.Status)

	for _, tc := range []struct {
		name  string
		opts  ConsumerOptions
		field string
	}{
		{"bad topic", ConsumerOptions{Topic: "a>b"}, "ConsumerOptions.Topic"},
		{"empty tag", ConsumerOptions{Topic: "t", Tags: []string{""}}, "ConsumerOptions.Tags"},
		{"bad tag", ConsumerOptions{Topic: "t", Tags: []string{"ok", "not ok"}}, "ConsumerOptions.Tags"},
		{"too many tags", ConsumerOptions{Tags: manyTags(MaxGroupTags + 1)}, "ConsumerOptions.Tags"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := q.Consumer("g-"+tc.name, &tc.opts)
			require.ErrorIs(t, err, ErrInvalidOptions)
			assert.ErrorContains(t, err, tc.field)
		})
	}
	assert.Empty(t, q.Groups(), "no group was declared by a refused Consumer")
}

func manyTags(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint("t", i)
	}
	return out
}

func TestDedupIsPerTopic(t *testing.T) {
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	ctx := context.Background()
	a, err := q.Send(ctx, &Message{ID: "same", Topic: "a", Body: []byte("1")})
	require.NoError(t, err)
	b, err := q.Send(ctx, &Message{ID: "same", Topic: "b", Body: []byte("2")})
	require.NoError(t, err)
	assert.False(t, b.Duplicate, "the same ID on another topic is another message")
	assert.NotEqual(t, a.Seq, b.Seq)
	again, err := q.Send(ctx, &Message{ID: "same", Topic: "a", Body: []byte("1")})
	require.NoError(t, err)
	assert.True(t, again.Duplicate)
	assert.Equal(t, a.Seq, again.Seq)
	fresh := 0
	check := func(q *Queue) {
		t.Helper()
		fresh++
		for topic, seq := range map[string]uint64{"a": a.Seq, "b": b.Seq} {
			res, err := q.Send(ctx, &Message{ID: "same", Topic: topic, Body: []byte("x")})
			require.NoError(t, err)
			assert.True(t, res.Duplicate, "topic %s", topic)
			assert.Equal(t, seq, res.Seq, "topic %s", topic)
		}
		res, err := q.Send(ctx, &Message{ID: "same", Topic: fmt.Sprint("c", fresh), Body: []byte("x")})
		require.NoError(t, err)
		assert.False(t, res.Duplicate, "a new topic")
	}
	require.NoError(t, q.Close())
	q = consumerQueue(t, fs, nil) // rebuilt from the log
	check(q)
	_, _, err = q.checkpoint(ctx) // and from a checkpoint
	require.NoError(t, err)
	var topics []string
	for _, e := range q.dedup.snapshot(time.Now()) {
		if e.ID == "same" {
			topics = append(topics, e.Topic)
		}
	}
	assert.ElementsMatch(t, []string{"a", "b", "c1"}, topics, "the checkpoint's dedup entries name their topics")
	require.NoError(t, q.Close())
	q = consumerQueue(t, fs, nil)
	defer q.Close()
	check(q)
}

func TestRareTopicSeeksToItsMessages(t *testing.T) {
	q := consumerQueue(t, vfs.NewMem(), nil)
	defer q.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	var msgs []topicMessage
	for i := range 20000 {
		topic := "busy"
		if rng.IntN(100) == 0 {
			topic = "rare"
		}
		msgs = append(msgs, topicMessage{id: fmt.Sprint(i), topic: topic})
	}
	sendTopics(t, q, rng, msgs)
	c, err := q.Consumer("g", &ConsumerOptions{Topic: "rare"})
	require.NoError(t, err)
	before := q.log.FramesRead()
	got := drainIDs(t, c, "rare")
	require.Equal(t, want(msgs, "rare"), got)
	read := q.log.FramesRead() - before
	// Each message is read once; its ack record may be read once too (the
	// reader passes it on the way to the next run), nothing of "busy".
	assert.LessOrEqual(t, read, uint64(2*len(got)+2), "frames read for %d messages of 1%% of the log", len(got))
	assert.Zero(t, q.log.SeekMisses())
}

// TestTopicIndexAgreesWithTheLog checks the index against a scan of the log,
// for every selection and cursor, after sends mixed with consumer records,
// restarts and retention.
func TestTopicIndexAgreesWithTheLog(t *testing.T) {
	fs := vfs.NewMem()
	rng := rand.New(rand.NewPCG(7, 8))
	topics := []string{"", "x", "y"}
	open := func() *Queue {
		q, err := Open("/q", &Options{SegmentSize: 32 << 10, MaxMessageSize: 4 << 10, fs: fs})
		require.NoError(t, err)
		return q
	}
	q := open()
	selections := []selection{{topic: ""}, {topic: "x"}, {topic: "y"}, {topic: "x", tags: []string{"a"}}, {topic: "y", tags: []string{"b", "c"}}, {topic: "none"}}
	for round := range 6 {
		msgs := randomTopicMessages(rng, 400, topics)
		for i := range msgs {
			msgs[i].id = fmt.Sprint(round, "-", msgs[i].id)
		}
		sendTopics(t, q, rng, msgs)
		for _, topic := range topics {
			c, err := q.Consumer("reader@"+topic, &ConsumerOptions{Topic: topic})
			require.NoError(t, err)
			drain(t, c) // ack records between the messages
		}
		checkIndex(t, q, selections)
		if round >= 3 {
			// Every topic has a group that acked everything: retention
			// deletes the old segments, and the index drops their runs.
			require.NoError(t, q.flushMarks(context.Background()))
			require.NoError(t, q.retain())
			require.Greater(t, q.log.FirstSeq(), uint64(1000), "retention deleted segments")
			checkIndex(t, q, selections)
		}
		if round%2 == 1 {
			require.NoError(t, q.Close())
			q = open()
			checkIndex(t, q, selections)
		}
	}
	require.NoError(t, q.Close())
}

// checkIndex compares q's topic index with a scan of its log. Retention
// may delete segments meanwhile (markLoop runs every second): a check
// during which the first retained seq moved is made again.
func checkIndex(t *testing.T, q *Queue, selections []selection) {
	t.Helper()
	for {
		first := q.log.FirstSeq()
		mismatches := indexMismatches(t, q, selections, first)
		if q.log.FirstSeq() == first {
			require.Empty(t, mismatches)
			return
		}
	}
}

// indexMismatches lists where the index and a scan of the log disagree, for
// cursors from first on.
func indexMismatches(t *testing.T, q *Queue, selections []selection, first uint64) []string {
	type entry struct {
		seq        uint64
		topic, tag string
	}
	var log []entry
	want := map[string]topicCounts{} // by topic, from the log
	appended := map[uint64]time.Time{}
	r := q.log.NewUncappedReader(first)
	defer r.Close()
	for {
		rec, err := r.Next()
		if err != nil {
			break
		}
		if rec.Type == record.TypeMessage && rec.Stream == 0 && rec.Seq >= first {
			topic, tag, err := record.MessageRoute(rec.Payload)
			require.NoError(t, err)
			log = append(log, entry{rec.Seq, string(topic), string(tag)})
			c := want[string(topic)]
			if c.oldest == 0 {
				c.oldest = rec.Seq
				appended[rec.Seq] = unixTime(rec.Time)
			}
			c.messages++
			c.bytes += uint64(record.HeaderSize + len(rec.Payload))
			want[string(topic)] = c
		}
	}
	var out []string
	// What TopicStats reports: the retained messages, bytes and oldest
	// message of every topic.
	counts := q.topics.counts()
	for topic, c := range want {
		got := counts[topic]
		if got := (topicCounts{messages: got.messages, bytes: got.bytes, oldest: got.oldest}); got != c {
			out = append(out, fmt.Sprintf("topic %q: counts %+v, want %+v", topic, got, c))
		}
	}
	for _, st := range q.TopicStats() {
		if w := want[st.Topic]; w.messages != st.Messages || w.bytes != st.Bytes || !appended[st.OldestSeq].Equal(st.Oldest) {
			out = append(out, fmt.Sprintf("topic %q: TopicStats %+v, want %+v appended at %v", st.Topic, st, w, appended[st.OldestSeq]))
		}
	}
	last := q.log.LastSeq()
	for _, sel := range selections {
		for c := first; c <= last+1; c++ {
			var wantSeq, wantCount, wantWindow uint64
			for _, e := range log {
				if e.seq >= c && sel.matches([]byte(e.topic), []byte(e.tag)) {
					if wantSeq == 0 {
						wantSeq = e.seq
					}
					wantCount++
					if e.seq < c+37 {
						wantWindow++
					}
				}
			}
			if n := q.topics.countBetween(&sel, c, c+37); n != wantWindow {
				out = append(out, fmt.Sprintf("%v in [%d, %d): countBetween %d, want %d", sel, c, c+37, n, wantWindow))
			}
			h, ok, _ := q.topics.next(&sel, c)
			if ok != (wantSeq != 0) || ok && h.seq != wantSeq {
				out = append(out, fmt.Sprintf("%v from %d: next %d (%v), want %d", sel, c, h.seq, ok, wantSeq))
			}
			if n := q.topics.count(&sel, c); n != wantCount {
				out = append(out, fmt.Sprintf("%v from %d: count %d, want %d", sel, c, n, wantCount))
			}
		}
	}
	return out
}

// A directory written before topics (testdata/v2-queue-before-topics, by the
// code of 72b1c42: messages m1-m5, a committed transaction tx1, group
// "workers" that acked m1 and dead-lettered m2) opens with every message in
// the default topic, and its group reads the default topic.
func TestOpenDirectoryWrittenBeforeTopics(t *testing.T) {
	dir := copyDir(t, filepath.Join("testdata", "v2-queue-before-topics"))
	// A minute after it was written: its IDs are within the dedup window.
	written := func() time.Time { return time.Date(2026, 12, 6, 23, 37, 55, 0, time.UTC) }
	q := openQueue(t, dir, &Options{SegmentSize: 64 << 10, MaxMessageSize: 1 << 10, now: written})
	_, err := q.Consumer("workers", &ConsumerOptions{Topic: "orders"})
	require.ErrorIs(t, err, ErrInvalidOptions, "the old group reads the default topic")
	c, err := q.Consumer("workers", nil)
	require.NoError(t, err)
	var got []string
	for _, d := range drainNow(t, c) {
		assert.Empty(t, d.Message.Topic)
		got = append(got, d.Message.ID)
	}
	assert.Equal(t, []string{"m3", "m4", "tx1", "m5"}, got)
	dead, err := q.DeadLetters("workers")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, "m2", dead[0].Message.ID)
	res, err := q.Send(context.Background(), &Message{ID: "m4", Body: []byte("again")})
	require.NoError(t, err)
	assert.True(t, res.Duplicate, "old IDs deduplicate in the default topic")
	res, err = q.Send(context.Background(), &Message{ID: "m4", Topic: "orders", Body: []byte("new")})
	require.NoError(t, err)
	assert.False(t, res.Duplicate)
	fresh, err := q.Consumer("fresh", nil)
	require.NoError(t, err)
	assert.Len(t, drainNow(t, fresh), 6, "a new group on the default topic gets every old message")
	orders, err := q.Consumer("orders", &ConsumerOptions{Topic: "orders"})
	require.NoError(t, err)
	only := drainNow(t, orders)
	require.Len(t, only, 1)
	assert.Equal(t, "new", string(only[0].Message.Body))
	stats := q.TopicStats()
	require.Len(t, stats, 2)
	assert.Equal(t, TopicStats{Topic: "", Messages: 6, Bytes: stats[0].Bytes, Groups: 2, OldestSeq: stats[0].OldestSeq, Oldest: stats[0].Oldest}, stats[0])
	assert.Equal(t, uint64(1), stats[1].Messages)
	assert.False(t, stats[0].Oldest.IsZero())
	require.NoError(t, q.Close())
}

// TestRetentionWithSeveralTopics: segments go once every group of every
// topic is done with them; a lagging group holds them (nothing it needs is
// deleted) until it catches up; a topic with no group keeps its messages
// until RetentionAge.
func TestRetentionWithSeveralTopics(t *testing.T) {
	clock := newFakeClock()
	q, err := Open("/q", &Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10, RetentionAge: time.Hour, fs: vfs.NewMem(), now: clock.Now})
	require.NoError(t, err)
	defer q.Close()
	ctx := context.Background()
	fast, err := q.Consumer("fast", &ConsumerOptions{Topic: "a"})
	require.NoError(t, err)
	slow, err := q.Consumer("slow", &ConsumerOptions{Topic: "b"})
	require.NoError(t, err)
	retain := func() int {
		t.Helper()
		require.NoError(t, q.flushMarks(ctx))
		require.NoError(t, q.retain())
		return q.Stats().Segments
	}
	send := func(topic string, n int) {
		t.Helper()
		for i := range n {
			_, err := q.Send(ctx, &Message{Topic: topic, Body: make([]byte, 500+i%7)})
			require.NoError(t, err)
		}
	}
	// The slow group's first message, in the first segment, holds it all.
	send("b", 1)
	for range 10 {
		send("a", 40)
		drainNow(t, fast)
	}
	held := retain()
	require.Greater(t, held, 10, "the slow group needs the first segment: nothing is deleted")
	got := drainNow(t, slow)
	require.Len(t, got, 1, "the message the slow group needed is there")
	assert.LessOrEqual(t, retain(), 2, "once it caught up only the active segment (and maybe one) is left")

	// Topic c has no group: its messages stay, with the others flowing.
	send("c", 3)
	for range 10 {
		send("a", 40)
		drainNow(t, fast)
		drainNow(t, slow)
	}
	assert.Greater(t, retain(), 10, "topic c's messages are kept for a group declared later")
	late, err := q.Consumer("late", &ConsumerOptions{Topic: "c"})
	require.NoError(t, err)
	assert.Len(t, drainNow(t, late), 3, "it gets them")
	assert.LessOrEqual(t, retain(), 2)

	// A group deleted while it lags leaves a topic with no group: its
	// messages go at RetentionAge, like any message no group reads.
	send("b", 2)
	for range 10 {
		send("a", 40)
		drainNow(t, fast)
	}
	require.NoError(t, q.DeleteGroup("slow"))
	require.NoError(t, q.DeleteGroup("late"))
	assert.Greater(t, retain(), 10)
	clock.Advance(2 * time.Hour)
	assert.LessOrEqual(t, retain(), 2, "past RetentionAge")
	stats := q.TopicStats()
	for _, st := range stats {
		if st.Topic == "b" {
			assert.Zero(t, st.Messages, "b's messages went with their segments")
		}
	}
}

// TopicStats reads a topic's oldest message once: a scrape of an unchanged
// queue reads no frame, and one after retention reads only the topics whose
// oldest message changed.
func TestTopicStatsReadsEachOldestOnce(t *testing.T) {
	clock := newFakeClock()
	q, err := Open("/q", &Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10, RetentionAge: time.Hour, fs: vfs.NewMem(), now: clock.Now})
	require.NoError(t, err)
	defer q.Close()
	ctx := context.Background()
	send := func(topic string, n int) {
		t.Helper()
		for range n {
			_, err := q.Send(ctx, &Message{Topic: topic, Body: make([]byte, 1000)})
			require.NoError(t, err)
		}
	}
	start := clock.Now()
	send("old", 40) // fills the first segments
	clock.Advance(2 * time.Hour)
	send("kept", 1)
	send("new", 40)
	reads := func() uint64 {
		t.Helper()
		before := q.log.FramesRead()
		stats := q.TopicStats()
		for _, st := range stats {
			require.False(t, st.Oldest.IsZero(), "topic %q", st.Topic)
		}
		return q.log.FramesRead() - before
	}
	assert.EqualValues(t, 3, reads(), "the first call reads each topic's oldest message")
	assert.Zero(t, reads(), "nothing changed: nothing read")
	send("other", 1)
	assert.EqualValues(t, 1, reads(), "a new topic: its message only")

	require.NoError(t, q.retain()) // "old" is past RetentionAge, and no group reads it
	require.Positive(t, q.Stats().SegmentsDeleted)
	assert.EqualValues(t, 1, reads(), "only the oldest message of topic old changed")
	for _, st := range q.TopicStats() {
		if st.Topic == "old" {
			assert.Less(t, st.Messages, uint64(40), "some deleted")
			assert.Greater(t, st.OldestSeq, uint64(1))
			assert.True(t, start.Equal(st.Oldest), "%v", st.Oldest)
		}
	}
}

// TestUnreadGroupDoesNotHoldOtherTopics: a group nobody reads (here, after
// a restart) holds only segments with messages of its own topic; the
// markLoop's pass moves it over the others'.
func TestUnreadGroupDoesNotHoldOtherTopics(t *testing.T) {
	fs := vfs.NewMem()
	open := func() *Queue {
		q, err := Open("/q", &Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10, fs: fs})
		require.NoError(t, err)
		return q
	}
	q := open()
	ctx := context.Background()
	_, err := q.Consumer("idle", &ConsumerOptions{Topic: "quiet"})
	require.NoError(t, err)
	_, err = q.Send(ctx, &Message{Topic: "quiet", Body: []byte("held")})
	require.NoError(t, err)
	require.NoError(t, q.Close())

	q = open()
	defer q.Close()
	busy, err := q.Consumer("busy", &ConsumerOptions{Topic: "busy"})
	require.NoError(t, err)
	// busyRound sends about 200 KiB to the busy topic, its group acks it
	// all, and retention runs: it returns the segments left.
	busyRound := func() int {
		t.Helper()
		for range 10 {
			for range 40 {
				_, err := q.Send(ctx, &Message{Topic: "busy", Body: make([]byte, 500)})
				require.NoError(t, err)
			}
			drainNow(t, busy)
		}
		require.NoError(t, q.flushMarks(ctx))
		require.NoError(t, q.retain())
		return q.Stats().Segments
	}
	assert.Greater(t, busyRound(), 10, "the idle group's message, in the first segment, is held")

	// Once its message is acked, the unread group holds nothing.
	idle, err := q.Consumer("idle", &ConsumerOptions{Topic: "quiet"})
	require.NoError(t, err)
	require.Len(t, drainNow(t, idle), 1)
	assert.LessOrEqual(t, busyRound(), 2, "the idle group, never read again, does not hold the busy topic's segments")
}

// TestPromotedFollowerKeepsTopics: a follower's copy holds the topics, tags,
// group subscriptions and dedup keys as the leader wrote them; promoted, its
// groups go on reading their own topics.
func TestPromotedFollowerKeepsTopics(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync})
	fdir := t.TempDir()
	la, lb := linkKinds[0].pair(t)
	f := startFollower(t, fdir, lb, nil)
	require.NoError(t, q.AttachReplica(la))
	rng := rand.New(rand.NewPCG(23, 29))
	msgs := randomTopicMessages(rng, 300, []string{"", "orders", "audit"})
	groups := map[string]*ConsumerOptions{
		"g-orders": {Topic: "orders", AckTimeout: time.Minute},
		"g-paid":   {Topic: "orders", Tags: []string{"b"}, AckTimeout: time.Minute},
		"g-audit":  {Topic: "audit", AckTimeout: time.Minute},
	}
	got := map[string][]string{}
	for name, opts := range groups {
		_, err := q.Consumer(name, opts)
		require.NoError(t, err)
	}
	sendTopics(t, q, rng, msgs[:200])
	for name, opts := range groups { // each acks what it has so far
		c, err := q.Consumer(name, opts)
		require.NoError(t, err)
		got[name] = drainIDs(t, c, opts.Topic, opts.Tags...)
	}
	sendTopics(t, q, rng, msgs[200:])
	require.NoError(t, q.flushMarks(context.Background()))
	waitFollowerAcked(t, q, q.Stats().LastSeq, f)
	require.ErrorIs(t, f.stop(), context.Canceled)

	promoted, err := Open(fdir, nil)
	require.NoError(t, err)
	defer promoted.Close()
	for name, opts := range groups {
		_, err := promoted.Consumer(name, &ConsumerOptions{Topic: "audit", Tags: []string{"zz"}})
		require.ErrorIs(t, err, ErrInvalidOptions, "the group's subscription came with the copy")
		c, err := promoted.Consumer(name, opts)
		require.NoError(t, err)
		all := append(got[name], drainIDs(t, c, opts.Topic, opts.Tags...)...)
		assert.Equal(t, want(msgs, opts.Topic, opts.Tags...), all, "group %s: its topic once, in order", name)
	}
	// Dedup keys came with the copy too: the same ID is a duplicate on its
	// own topic only.
	m := msgs[len(msgs)-1]
	res, err := promoted.Send(context.Background(), &Message{ID: m.id, Topic: m.topic, Body: []byte("again")})
	require.NoError(t, err)
	assert.True(t, res.Duplicate, "%s on its topic %q", m.id, m.topic)
	res, err = promoted.Send(context.Background(), &Message{ID: m.id, Topic: "elsewhere", Body: []byte("again")})
	require.NoError(t, err)
	assert.False(t, res.Duplicate, "%s on another topic", m.id)
}
