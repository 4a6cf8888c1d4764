package conformance

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// The topic tests. The names they use cover the whole alphabet zeroloss
// allows (letters, digits and . _ - : /), including names a backend must
// not confuse with its own markers: "_" next to the default topic and to no
// tag, and names holding a '.'.

// sendBatch sends msgs in one SendBatch and requires SendOK for each.
func sendBatch(t *testing.T, b zeroloss.Backend, msgs []*zeroloss.Message) []zeroloss.SendResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	results, err := b.SendBatch(ctx, msgs)
	require.NoError(t, err)
	require.Len(t, results, len(msgs))
	for i, r := range results {
		require.Equal(t, zeroloss.SendOK, r.Status, "status of message %d (%q)", i, msgs[i].ID)
	}
	return results
}

// topicOptions returns the suite's consumer options for a group on topic
// taking tags (none: all of the topic).
func topicOptions(topic string, tags ...string) *zeroloss.ConsumerOptions {
	o := options(5)
	o.Topic, o.Tags = topic, tags
	return o
}

// route is a message's topic and tag, as the tests name them.
type route struct{ topic, tag string }

func (r route) String() string { return fmt.Sprintf("topic %q tag %q", r.topic, r.tag) }

// receiveUntil receives and acks the group's messages up to and including
// the one with ID last, and returns their IDs with their topics and tags in
// the order received. The tests send a last message to each group after
// everything else, so that what a group must not receive would arrive
// before it: no quiet wait is needed.
func receiveUntil(t *testing.T, s *zeroloss.Consumer, last string) (ids []string, routes []route) {
	t.Helper()
	for len(ids) < 1000 {
		d := next(t, s)
		m := d.Message
		require.NoError(t, d.Ack())
		ids = append(ids, m.ID)
		routes = append(routes, route{m.Topic, m.Tag})
		if m.ID == last {
			return ids, routes
		}
	}
	t.Fatalf("group %s: %q not received among the first 1000 messages", s.Group(), last)
	return nil, nil
}

// testTopicIsolation sends messages of several topics interleaved in one
// SendBatch: a group on each topic receives exactly that topic's, in order,
// with Topic and Tag as sent.
func testTopicIsolation(t *testing.T, b zeroloss.Backend) {
	topics := []string{"", "orders", "audit.log", "_", "a:b/c-d.E_9"}
	var batch []*zeroloss.Message
	want := map[string][]string{} // topic → its IDs in order
	wantRoutes := map[string][]route{}
	for i := range 4 * len(topics) {
		topic := topics[i%len(topics)]
		tag := []string{"", "x", "_"}[i%3]
		id := fmt.Sprintf("m%d", i)
		batch = append(batch, &zeroloss.Message{ID: id, Topic: topic, Tag: tag, Body: []byte(id)})
		want[topic] = append(want[topic], id)
		wantRoutes[topic] = append(wantRoutes[topic], route{topic, tag})
	}
	sendBatch(t, b, batch)
	subs := map[string]*zeroloss.Consumer{}
	for i, topic := range topics {
		subs[topic] = subscribe(t, b, fmt.Sprintf("g%d", i), topicOptions(topic))
	}
	// The last messages: one per topic, sent after the batch.
	var ends []*zeroloss.Message
	for _, topic := range topics {
		id := "end:" + topic
		ends = append(ends, &zeroloss.Message{ID: id, Topic: topic, Body: []byte(id)})
		want[topic] = append(want[topic], id)
		wantRoutes[topic] = append(wantRoutes[topic], route{topic, ""})
	}
	sendBatch(t, b, ends)
	for _, topic := range topics {
		ids, routes := receiveUntil(t, subs[topic], "end:"+topic)
		assert.Equal(t, want[topic], ids, "the messages of topic %q", topic)
		assert.Equal(t, wantRoutes[topic], routes, "topics and tags delivered on topic %q", topic)
	}
}

// testTopicTwoGroups: two groups on one topic each receive all of it, and
// a group on the default topic none of it.
func testTopicTwoGroups(t *testing.T, b zeroloss.Backend) {
	first := subscribe(t, b, "first", topicOptions("shared.topic"))
	var batch []*zeroloss.Message
	var want []string
	for i := range 6 {
		id := fmt.Sprintf("s%d", i)
		batch = append(batch, &zeroloss.Message{ID: id, Topic: "shared.topic", Tag: []string{"", "a"}[i%2], Body: []byte(id)})
		want = append(want, id)
		batch = append(batch, &zeroloss.Message{ID: fmt.Sprintf("other%d", i), Topic: "shared", Body: []byte("x")})
	}
	sendBatch(t, b, batch)
	second := subscribe(t, b, "second", topicOptions("shared.topic"))
	defaultTopic := subscribe(t, b, "default", nil)
	send(t, b, &zeroloss.Message{ID: "end", Topic: "shared.topic", Body: []byte("end")})
	send(t, b, &zeroloss.Message{ID: "end of default", Body: []byte("end")})
	want = append(want, "end")
	for _, s := range []*zeroloss.Consumer{first, second} {
		ids, _ := receiveUntil(t, s, "end")
		assert.Equal(t, want, ids, "group %s", s.Group())
	}
	ids, _ := receiveUntil(t, defaultTopic, "end of default")
	assert.Equal(t, []string{"end of default"}, ids, "the default topic's group")
}

// testTagFilter: a group listing tags receives exactly the messages of its
// topic carrying one of them; messages with other tags, with no tag, or of
// another topic with a listed tag are not delivered to it.
func testTagFilter(t *testing.T, b zeroloss.Backend) {
	groups := []struct {
		name string
		tags []string
	}{
		{"red-and-dotted", []string{"red", "x.y"}},
		{"underscore", []string{"_"}}, // the tag "_", not the absence of a tag
		{"all", nil},
	}
	subs := make([]*zeroloss.Consumer, len(groups))
	for i, g := range groups {
		subs[i] = subscribe(t, b, g.name, topicOptions("paint", g.tags...))
	}
	tags := []string{"red", "blue", "", "x.y", "x", "_", "RED", "red.x"}
	var batch []*zeroloss.Message
	want := make([][]string, len(groups))
	for i := range 3 * len(tags) {
		tag := tags[i%len(tags)]
		id := fmt.Sprintf("p%d", i)
		batch = append(batch, &zeroloss.Message{ID: id, Topic: "paint", Tag: tag, Body: []byte(id)})
		batch = append(batch, &zeroloss.Message{ID: "o" + id, Topic: "other", Tag: tag, Body: []byte(id)})
		batch = append(batch, &zeroloss.Message{ID: "d" + id, Tag: tag, Body: []byte(id)})
		for j, g := range groups {
			if len(g.tags) == 0 || contains(g.tags, tag) {
				want[j] = append(want[j], id)
			}
		}
	}
	sendBatch(t, b, batch)
	var ends []*zeroloss.Message
	for _, g := range groups {
		tag := ""
		if len(g.tags) > 0 {
			tag = g.tags[0]
		}
		ends = append(ends, &zeroloss.Message{ID: "end of " + g.name, Topic: "paint", Tag: tag, Body: []byte("end")})
		for k, other := range groups {
			if len(other.tags) == 0 || contains(other.tags, tag) {
				want[k] = append(want[k], "end of "+g.name)
			}
		}
	}
	sendBatch(t, b, ends)
	for j, g := range groups {
		last := want[j][len(want[j])-1]
		ids, routes := receiveUntil(t, subs[j], last)
		assert.Equal(t, want[j], ids, "group %s, tags %q", g.name, g.tags)
		for _, r := range routes {
			assert.Equal(t, "paint", r.topic)
			if len(g.tags) > 0 {
				assert.Contains(t, g.tags, r.tag, "group %s", g.name)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// testTopicReopen: a group's topic and tags are part of it. Reopening it
// with another topic or other tags fails with ErrInvalidOptions naming the
// field; with the same ones (tags in any order, repeated) it works. Bad
// names in ConsumerOptions fail the same way.
func testTopicReopen(t *testing.T, b zeroloss.Backend) {
	subscribe(t, b, "on-a", topicOptions("a"))
	subscribe(t, b, "on-default", nil)
	subscribe(t, b, "tagged", topicOptions("a", "x", "y"))
	tests := []struct {
		name  string
		group string
		opts  *zeroloss.ConsumerOptions
		field string // "": no error
	}{
		{"same topic", "on-a", topicOptions("a"), ""},
		{"another topic", "on-a", topicOptions("b"), "ConsumerOptions.Topic"},
		{"default topic for a topic", "on-a", nil, "ConsumerOptions.Topic"},
		{"a topic for the default", "on-default", topicOptions("a"), "ConsumerOptions.Topic"},
		{"tags added", "on-a", topicOptions("a", "x"), "ConsumerOptions.Tags"},
		{"same tags reordered and repeated", "tagged", topicOptions("a", "y", "x", "y"), ""},
		{"a tag removed", "tagged", topicOptions("a", "x"), "ConsumerOptions.Tags"},
		{"tags removed", "tagged", topicOptions("a"), "ConsumerOptions.Tags"},
		{"another tag", "tagged", topicOptions("a", "x", "z"), "ConsumerOptions.Tags"},
		{"topic with a space", "new", topicOptions("a b"), "ConsumerOptions.Topic"},
		{"topic too long", "new", topicOptions(strings.Repeat("t", zeroloss.MaxTopicLength+1)), "ConsumerOptions.Topic"},
		{"tag with a star", "new", topicOptions("a", "x*"), "ConsumerOptions.Tags"},
		{"empty tag", "new", topicOptions("a", ""), "ConsumerOptions.Tags"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := b.Consumer(tt.group, tt.opts)
			if tt.field == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.group, s.Group())
				return
			}
			require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)
			assert.Contains(t, err.Error(), tt.field)
		})
	}
	// The refused reopenings changed nothing: the group on "a" still reads
	// "a" only.
	send(t, b, &zeroloss.Message{ID: "to b", Topic: "b", Body: []byte("b")})
	send(t, b, &zeroloss.Message{ID: "to a", Topic: "a", Body: []byte("a")})
	ids, _ := receiveUntil(t, subscribe(t, b, "on-a", topicOptions("a")), "to a")
	assert.Equal(t, []string{"to a"}, ids)
}

// testInvalidTopic: a topic or tag outside the allowed names is refused with
// ErrInvalidMessage naming Message.Topic or Message.Tag, by Send and by
// SendBatch.
func testInvalidTopic(t *testing.T, b zeroloss.Backend) {
	tests := []struct {
		name       string
		topic, tag string
		field      string
	}{
		{"space in topic", "bad topic", "", "Message.Topic"},
		{"star in topic", "a.*", "", "Message.Topic"},
		{"greater-than in topic", "a.>", "", "Message.Topic"},
		{"non-ASCII topic", "caf\u00e9", "", "Message.Topic"},
		{"topic too long", strings.Repeat("t", zeroloss.MaxTopicLength+1), "", "Message.Topic"},
		{"space in tag", "t", "bad tag", "Message.Tag"},
		{"tag too long", "t", strings.Repeat("g", zeroloss.MaxTagLength+1), "Message.Tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			m := &zeroloss.Message{ID: "bad", Topic: tt.topic, Tag: tt.tag, Body: []byte("x")}
			_, err := b.Send(ctx, m)
			require.ErrorIs(t, err, zeroloss.ErrInvalidMessage)
			assert.Contains(t, err.Error(), tt.field)
			_, err = b.SendBatch(ctx, []*zeroloss.Message{m})
			require.ErrorIs(t, err, zeroloss.ErrInvalidMessage)
			assert.Contains(t, err.Error(), tt.field)
		})
	}
	// The longest names are accepted.
	long := &zeroloss.Message{ID: "long", Topic: strings.Repeat("t.", zeroloss.MaxTopicLength/2),
		Tag: strings.Repeat("g.", zeroloss.MaxTagLength/2), Body: []byte("x")}
	res := send(t, b, long)
	d := next(t, subscribe(t, b, "long", topicOptions(long.Topic, long.Tag)))
	assert.Equal(t, res.Seq, d.Seq)
	assert.Equal(t, long.Topic, d.Message.Topic)
	assert.Equal(t, long.Tag, d.Message.Tag)
	require.NoError(t, d.Ack())
}

// testTopicDedup: dedup is per topic. The same ID sent to two topics is two
// messages; resent to the same topic it is a duplicate with the original's
// seq, in a Send and in a SendBatch.
func testTopicDedup(t *testing.T, b zeroloss.Backend) {
	a := send(t, b, &zeroloss.Message{ID: "same", Topic: "a", Body: []byte("a1")})
	other := send(t, b, &zeroloss.Message{ID: "same", Topic: "b", Body: []byte("b1")})
	assert.False(t, other.Duplicate, "the same ID on another topic is another message")
	assert.NotEqual(t, a.Seq, other.Seq)
	def := send(t, b, &zeroloss.Message{ID: "same", Body: []byte("default1")})
	assert.False(t, def.Duplicate, "the same ID on the default topic is another message")
	again := send(t, b, &zeroloss.Message{ID: "same", Topic: "a", Tag: "t", Body: []byte("a2")})
	assert.True(t, again.Duplicate, "resent to the same topic (another tag)")
	assert.Equal(t, a.Seq, again.Seq)
	results := sendBatch(t, b, []*zeroloss.Message{
		{ID: "pair", Topic: "a", Body: []byte("a")},
		{ID: "pair", Topic: "b", Body: []byte("b")},
		{ID: "pair", Topic: "a", Body: []byte("a again")},
		{ID: "same", Topic: "b", Body: []byte("b2")},
		{ID: "same", Topic: "a.b", Body: []byte("ab")},
	})
	assert.False(t, results[0].Duplicate)
	assert.False(t, results[1].Duplicate)
	assert.True(t, results[2].Duplicate)
	assert.Equal(t, results[0].Seq, results[2].Seq)
	assert.True(t, results[3].Duplicate)
	assert.Equal(t, other.Seq, results[3].Seq)
	assert.False(t, results[4].Duplicate, `topic "a.b" is neither "a" nor "b"`)
	send(t, b, &zeroloss.Message{ID: "end", Topic: "a", Body: []byte("end")})
	send(t, b, &zeroloss.Message{ID: "end", Topic: "b", Body: []byte("end")})
	for _, tt := range []struct {
		topic  string
		bodies []string
	}{
		{"a", []string{"a1", "a", "end"}},
		{"b", []string{"b1", "b", "end"}},
	} {
		s := subscribe(t, b, "g-"+tt.topic, topicOptions(tt.topic))
		var bodies []string
		for range tt.bodies {
			d := next(t, s)
			assert.Equal(t, tt.topic, d.Message.Topic)
			bodies = append(bodies, string(d.Message.Body))
			require.NoError(t, d.Ack())
		}
		assert.Equal(t, tt.bodies, bodies, "topic %q", tt.topic)
	}
}

// testTopicDeadLetter: a dead letter keeps its message's topic and tag.
func testTopicDeadLetter(t *testing.T, b zeroloss.Backend) {
	res := send(t, b, &zeroloss.Message{ID: "poison", Topic: "t.x", Tag: "_", Body: []byte("bad")})
	o := topicOptions("t.x")
	o.MaxDeliveries = 1
	s := subscribe(t, b, "g", o)
	d := next(t, s)
	require.NoError(t, d.Nack(0))
	dead, err := b.DeadLetters("g")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, res.Seq, dead[0].Seq)
	assert.Equal(t, "poison", dead[0].Message.ID)
	assert.Equal(t, "t.x", dead[0].Message.Topic)
	assert.Equal(t, "_", dead[0].Message.Tag)
}
