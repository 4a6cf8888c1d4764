package jetstream

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/zerolossmq/zeroloss"
)

// Topics and tags.
//
// A message of topic T with tag G is published on the subject
// "<Stream>.messages.<token(T)>.<token(G)>", which the messages' stream
// captures with "<Stream>.messages.*.*". A group's durable consumer filters
// on "<Stream>.messages.<token(T)>.*", or, with tags, on one subject per
// tag: the server selects a group's messages, so a group never receives,
// holds or acks another topic's or tag's, and its pending count is its own.
// Tags are a subject token rather than a header because JetStream consumers
// filter on subjects only: a header filter would be applied by the client,
// after the server delivered (and counted a delivery attempt of) every
// message of the topic to every group.
//
// token maps the names zeroloss allows (letters, digits and . _ - : /) to
// subject tokens one to one: '.' separates tokens in NATS and becomes
// "%2E"; the default topic and the absence of a tag become "_", so the
// name "_" itself becomes "%5F". No allowed name holds a '%', so nothing
// else is changed and untoken undoes it. '*', '>' and white space, which a
// subject cannot hold, are outside the allowed names and refused.
//
// Dedup: the stream deduplicates Nats-Msg-Id across all its subjects, and
// zeroloss deduplicates an ID within its topic. The adapter sends
// "<token(T)>.<ID>" as the Nats-Msg-Id (the token holds no '.', so the first
// '.' ends it): the same ID on two topics is two messages, and resent to the
// same topic (any tag) a duplicate.

const (
	// noName is the token of the default topic and of no tag.
	noName = "_"
	// escapedDot and escapedNoName are the tokens' escapes of '.' and of the
	// name "_".
	escapedDot    = "%2E"
	escapedNoName = "%5F"
)

// token returns the subject token of a topic or tag name (valid: see
// checkName).
func token(name string) string {
	switch name {
	case "":
		return noName
	case noName:
		return escapedNoName
	}
	return strings.ReplaceAll(name, ".", escapedDot)
}

// untoken returns the name whose token is tok.
func untoken(tok string) string {
	switch tok {
	case noName:
		return ""
	case escapedNoName:
		return noName
	}
	return strings.ReplaceAll(tok, escapedDot, ".")
}

// checkName says why name is not a valid topic or tag name (field names
// it): the embedded queue's rule, 1 to max bytes of ASCII letters, digits
// and . _ - : /. Every such name maps to a subject token.
func checkName(field, name string, max int, sentinel error) error {
	if name == "" {
		return fmt.Errorf("jetstream: %s is empty: %w", field, sentinel)
	}
	if len(name) > max {
		return fmt.Errorf("jetstream: %s %.40q... is %d bytes, limit %d: %w", field, name, len(name), max, sentinel)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == '-' || c == ':' || c == '/') {
			return fmt.Errorf("jetstream: %s %q: byte %d (%q) is not a letter, digit or one of . _ - : /: %w",
				field, name, i, c, sentinel)
		}
	}
	return nil
}

// checkRoute checks a message's topic and tag (either may be empty).
func checkRoute(m *zeroloss.Message) error {
	if m.Topic != "" {
		if err := checkName("Message.Topic", m.Topic, zeroloss.MaxTopicLength, zeroloss.ErrInvalidMessage); err != nil {
			return err
		}
	}
	if m.Tag != "" {
		return checkName("Message.Tag", m.Tag, zeroloss.MaxTagLength, zeroloss.ErrInvalidMessage)
	}
	return nil
}

// messageSubject is the subject a message of topic and tag is published on.
func (b *Backend) messageSubject(topic, tag string) string {
	return b.subjectPrefix + token(topic) + "." + token(tag)
}

// route returns the topic and tag of a message stored on subject (ok false
// if the subject is not one the adapter publishes on).
func (b *Backend) route(subject string) (topic, tag string, ok bool) {
	rest, found := strings.CutPrefix(subject, b.subjectPrefix)
	if !found {
		return "", "", false
	}
	t, g, found := strings.Cut(rest, ".")
	if !found || t == "" || g == "" || strings.Contains(g, ".") {
		return "", "", false
	}
	return untoken(t), untoken(g), true
}

// msgID is the Nats-Msg-Id of a message of topic with ID id.
func msgID(topic, id string) string { return token(topic) + "." + id }

// SplitMsgID returns the topic and the zeroloss Message.ID that a
// Nats-Msg-Id header written by the adapter holds ("<topic token>.<ID>",
// see README.md, Topics); ok is false for a header the adapter did not
// write. It is for tools that read the stream without the adapter.
func SplitMsgID(natsMsgID string) (topic, id string, ok bool) {
	t, id, found := strings.Cut(natsMsgID, ".")
	if !found || t == "" {
		return "", natsMsgID, false
	}
	return untoken(t), id, true
}

// filters returns the filter subjects of a group reading topic and tags
// (sorted, no repeats, as zeroloss.ConsumerOptions.WithDefaults returns
// them).
func (b *Backend) filters(topic string, tags []string) []string {
	if len(tags) == 0 {
		return []string{b.subjectPrefix + token(topic) + ".*"}
	}
	out := make([]string, len(tags))
	for i, tag := range tags {
		out[i] = b.messageSubject(topic, tag)
	}
	slices.Sort(out)
	return out
}

// setFilters puts filters in cfg: FilterSubject for one (any server),
// FilterSubjects for more (nats-server 2.10 and later).
func setFilters(cfg *natsjs.ConsumerConfig, filters []string) {
	if len(filters) == 1 {
		cfg.FilterSubject = filters[0]
		return
	}
	cfg.FilterSubjects = filters
}

// selectionOf returns the topic and tags an existing consumer's filters
// select (ok false if they are not filters the adapter sets).
func (b *Backend) selectionOf(cfg natsjs.ConsumerConfig) (topic string, tags []string, ok bool) {
	filters := cfg.FilterSubjects
	if cfg.FilterSubject != "" {
		filters = append([]string{cfg.FilterSubject}, filters...)
	}
	if len(filters) == 0 {
		return "", nil, false
	}
	for i, f := range filters {
		rest, found := strings.CutPrefix(f, b.subjectPrefix)
		if !found {
			return "", nil, false
		}
		t, g, found := strings.Cut(rest, ".")
		if !found || t == "" || g == "" || strings.ContainsAny(g, ".>") || strings.Contains(t, "*") {
			return "", nil, false
		}
		if i > 0 && untoken(t) != topic {
			return "", nil, false
		}
		topic = untoken(t)
		if g == "*" {
			if len(filters) > 1 {
				return "", nil, false
			}
			return topic, nil, true
		}
		tags = append(tags, untoken(g))
	}
	slices.Sort(tags)
	return topic, slices.Compact(tags), true
}

// checkSelection compares what an existing consumer selects with what a
// Consumer call asks for: a group's topic and tags are part of it, as on
// the embedded queue. The error names the field that differs.
func (b *Backend) checkSelection(existing natsjs.ConsumerConfig, o *zeroloss.ConsumerOptions) error {
	topic, tags, ok := b.selectionOf(existing)
	switch {
	case !ok:
		filters := append([]string{existing.FilterSubject}, existing.FilterSubjects...)
		return fmt.Errorf("jetstream: ConsumerOptions.Topic: the consumer %s filters on %q, not on a topic's subjects (a consumer created before topics, or by another client): %w",
			existing.Durable, filters, zeroloss.ErrInvalidOptions)
	case topic != o.Topic:
		return fmt.Errorf("jetstream: ConsumerOptions.Topic: consumer group %q reads topic %q, not %q (delete the group to change it): %w",
			existing.Durable, topic, o.Topic, zeroloss.ErrInvalidOptions)
	case !slices.Equal(tags, o.Tags):
		return fmt.Errorf("jetstream: ConsumerOptions.Tags: consumer group %q takes tags %q, not %q (delete the group to change them): %w",
			existing.Durable, tags, o.Tags, zeroloss.ErrInvalidOptions)
	}
	return nil
}

// checkMultiFilter refuses a group with more than one tag on a server older
// than 2.10, which would ignore FilterSubjects and deliver the whole stream.
func checkMultiFilter(nc *nats.Conn, tags []string) error {
	if len(tags) < 2 {
		return nil
	}
	v := nc.ConnectedServerVersion()
	if atLeast(v, 2, 10) {
		return nil
	}
	return fmt.Errorf("%w: ConsumerOptions.Tags with %d tags needs FilterSubjects, nats-server 2.10 or later; the server is %q",
		ErrUnsupported, len(tags), v)
}

// atLeast says whether the version "major.minor.patch..." is at least
// major.minor.
func atLeast(version string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
