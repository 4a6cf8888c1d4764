package jetstream

import (
	"math/rand/v2"
	"strings"
	"testing"

	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// TestTopicMapping checks the names-to-subjects mapping of topics.go: every
// allowed name maps to one valid subject token and back, and no two names
// to the same token; filters map back to the selection they were made
// from, and filters the adapter did not write are not taken for one.
func TestTopicMapping(t *testing.T) {
	const alphabet = "abcXYZ019._-:/"
	names := []string{"", "_", "__", "._", "_.", ".", "..", "a.b", "a_b", "%", "orders", "a:b/c-d.E_9",
		strings.Repeat(".", zeroloss.MaxTopicLength), strings.Repeat("_", zeroloss.MaxTopicLength)}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, 1+rng.IntN(6))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		names = append(names, string(b))
	}
	byToken := map[string]string{}
	for _, name := range names {
		if name == "%" {
			require.Error(t, checkName("Message.Topic", name, zeroloss.MaxTopicLength, zeroloss.ErrInvalidMessage),
				"'%' is not an allowed name: the escapes rely on it")
			continue
		}
		tok := token(name)
		require.NotEmpty(t, tok)
		require.False(t, strings.ContainsAny(tok, ".*> \t\r\n"), "token %q of %q is not one subject token", tok, name)
		require.Equal(t, name, untoken(tok), "token %q", tok)
		if other, seen := byToken[tok]; seen {
			require.Equal(t, other, name, "two names, one token %q", tok)
		}
		byToken[tok] = name
	}
	assert.Equal(t, "_", token(""))
	assert.Equal(t, "%5F", token("_"))
	assert.Equal(t, "orders%2Eeu", token("orders.eu"))

	b := &Backend{subjectPrefix: "S.messages."}
	t.Run("route", func(t *testing.T) {
		for _, r := range [][2]string{{"", ""}, {"_", "_"}, {"a.b", "c.d"}, {"x", ""}, {"", "y"}} {
			topic, tag, ok := b.route(b.messageSubject(r[0], r[1]))
			require.True(t, ok)
			assert.Equal(t, r, [2]string{topic, tag})
		}
		for _, s := range []string{"S.messages", "S.messages.a", "S.messages.a.b.c", "T.messages.a.b", "S.dlq.g"} {
			_, _, ok := b.route(s)
			assert.False(t, ok, s)
		}
	})
	t.Run("selection", func(t *testing.T) {
		for _, sel := range []struct {
			topic string
			tags  []string
		}{{"", nil}, {"_", nil}, {"a.b", nil}, {"", []string{"_"}}, {"t", []string{"a", "b.c", "_"}}} {
			var cfg natsjs.ConsumerConfig
			setFilters(&cfg, b.filters(sel.topic, sortedCopy(sel.tags)))
			topic, tags, ok := b.selectionOf(cfg)
			require.True(t, ok, "%+v", cfg)
			assert.Equal(t, sel.topic, topic)
			assert.Equal(t, sortedCopy(sel.tags), tags)
		}
		for _, cfg := range []natsjs.ConsumerConfig{
			{},                                  // no filter: the whole stream
			{FilterSubject: "S.messages"},       // before topics
			{FilterSubject: "S.messages.>"},     // every topic
			{FilterSubject: "S.messages.*.*"},   // every topic
			{FilterSubject: "S.messages.a.b.c"}, // not a subject the adapter writes
			{FilterSubjects: []string{"S.messages.a.x", "S.messages.b.y"}}, // two topics
			{FilterSubjects: []string{"S.messages.a.*", "S.messages.a.y"}}, // all and a tag
			{FilterSubject: "T.messages.a.*"},                              // another stream
		} {
			_, _, ok := b.selectionOf(cfg)
			assert.False(t, ok, "%+v", cfg)
		}
	})
	t.Run("SplitMsgID", func(t *testing.T) {
		for _, tt := range []struct{ topic, id string }{{"", "m"}, {"a.b", "x.y"}, {"_", ""}, {"t", " lead"}} {
			topic, id, ok := SplitMsgID(msgID(tt.topic, tt.id))
			require.True(t, ok)
			assert.Equal(t, tt, struct{ topic, id string }{topic, id})
		}
		_, id, ok := SplitMsgID("no-topic")
		assert.False(t, ok)
		assert.Equal(t, "no-topic", id)
	})
	t.Run("server version", func(t *testing.T) {
		for v, want := range map[string]bool{"2.10.0": true, "2.15.2": true, "v2.10.1-beta": true, "3.0.0": true,
			"2.9.25": false, "1.99.0": false, "": false, "junk": false} {
			assert.Equal(t, want, atLeast(v, 2, 10), v)
		}
	})
}

// TestNamesAgree: the adapter refuses exactly the topic and tag names the
// embedded queue refuses (its checkName copies the rule, so that a message
// is refused before it is published; this keeps the copy honest).
func TestNamesAgree(t *testing.T) {
	const alphabet = "aZ9._-:/ *>%\t\u00e9\x00"
	rng := rand.New(rand.NewPCG(3, 4))
	names := []string{strings.Repeat("t", zeroloss.MaxTopicLength), strings.Repeat("t", zeroloss.MaxTopicLength+1)}
	for range 3000 {
		b := make([]byte, 1+rng.IntN(5))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		names = append(names, string(b))
	}
	for _, name := range names {
		_, embedded := (&zeroloss.ConsumerOptions{Topic: name}).WithDefaults()
		adapter := checkName("Message.Topic", name, zeroloss.MaxTopicLength, zeroloss.ErrInvalidMessage)
		require.Equal(t, embedded == nil, adapter == nil, "name %q: embedded %v, adapter %v", name, embedded, adapter)
	}
}

func sortedCopy(tags []string) []string {
	if len(tags) == 0 {
		return nil
	}
	o, err := (&zeroloss.ConsumerOptions{Tags: tags}).WithDefaults()
	if err != nil {
		panic(err)
	}
	return o.Tags
}
