package lab

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss"
)

// Topics in the produce workload (process-crash, power-loss,
// leader-disk-loss, queue-outage). Every message goes to one of labTopics
// and, on tagTopic, carries one of its tags, both drawn from the SHA-256 of
// its ID (as its body is), so the parent knows every message's topic and tag
// from its ID alone. The child declares labGroups before it sends: a group
// per topic, and one on tagTopic that takes only the tags it lists. After
// the failure the parent drains every group and counts, per group, the
// acknowledged messages of its topic and tags that it did not receive, and
// what it received that was not its own (see countGroups).
var (
	// labTopics are the topics sent to: the default topic and three named.
	labTopics = []string{"", "orders", "emails", "audit"}
	// tagTopic is the topic whose messages carry tags: one of topicTags,
	// "" (no tag) included.
	tagTopic  = "orders"
	topicTags = []string{"", "new", "paid", "shipped"}
	// labGroups are the consumer groups the child declares and the parent
	// drains.
	labGroups = []groupSpec{
		{Name: "default", Topic: ""},
		{Name: "orders", Topic: "orders"},
		{Name: "emails", Topic: "emails"},
		{Name: "audit", Topic: "audit"},
		{Name: "orders-paid-shipped", Topic: "orders", Tags: []string{"paid", "shipped"}},
	}
)

// groupSpec is a consumer group of the produce workload: its name, topic
// and tag filter (none: every message of the topic).
type groupSpec struct {
	Name  string
	Topic string
	Tags  []string
}

// takes reports whether the group must receive a message with this topic
// and tag: its topic, and a listed tag if it lists any.
func (g groupSpec) takes(r route) bool {
	return r.Topic == g.Topic && (len(g.Tags) == 0 || slices.Contains(g.Tags, r.Tag))
}

// options returns the group's consumer options. A group the failure erased
// (its declaration not yet durable) is declared again from the oldest
// message, so that it still owes every message of its topic. The ack
// deadline outlasts any drain: the parent never acks (so that a directory
// kept for inspection keeps every message), and nothing must come back.
func (g groupSpec) options() *zeroloss.ConsumerOptions {
	return &zeroloss.ConsumerOptions{Topic: g.Topic, Tags: g.Tags, Start: zeroloss.StartOldest,
		AckTimeout: 2 * drainTimeout}
}

// route is a message's topic and tag.
type route struct{ Topic, Tag string }

// routed is a message's ID and the route the queue stored or delivered it
// with.
type routed struct {
	ID string
	route
}

// routeFor derives a message's topic and tag from its ID.
func routeFor(id string) route {
	sum := sha256.Sum256([]byte(id))
	r := route{Topic: labTopics[int(sum[1])%len(labTopics)]}
	if r.Topic == tagTopic {
		r.Tag = topicTags[int(sum[2])%len(topicTags)]
	}
	return r
}

// messageFor is the message the produce workload sends under id: its body
// (bodyFor) and its route (routeFor).
func messageFor(id string) *zeroloss.Message {
	r := routeFor(id)
	return &zeroloss.Message{ID: id, Topic: r.Topic, Tag: r.Tag, Body: bodyFor(id)}
}

// declareGroups declares labGroups on q, before the first send.
func declareGroups(q *zeroloss.Queue) error {
	for _, g := range labGroups {
		if _, err := q.Consumer(g.Name, g.options()); err != nil {
			return fmt.Errorf("declaring group %q: %w", g.Name, err)
		}
	}
	return nil
}

// GroupCount is what one consumer group of the produce workload received
// after the failure (for a row: summed over its runs).
type GroupCount struct {
	Group string   `json:"group"`
	Topic string   `json:"topic"`
	Tags  []string `json:"tags,omitempty"`
	// Acknowledged is the number of acknowledged messages of the group's
	// topic (and listed tags): those it owes.
	Acknowledged int `json:"acknowledged"`
	// Received is the number of deliveries the drain got, duplicates and
	// unacknowledged messages included.
	Received int `json:"received"`
	// Undelivered is the number of acknowledged messages of the group's
	// topic and tags that the recovered log holds but the group did not
	// deliver. A message missing from the log counts as lost instead.
	Undelivered int `json:"undelivered"`
	// Isolation is the number of deliveries of a message of another topic,
	// or of a tag the group does not list (by the message's ID, or by the
	// topic and tag it came with): isolation violations. Promised 0.
	Isolation int `json:"isolation"`
}

// countGroups is the main count of the groups: acked are the acknowledged
// IDs, stored the records read back from the recovered log, and received
// what each group (by name) delivered. It returns one count per group of
// labGroups.
func countGroups(acked map[string]uint64, stored []storedMessage, received map[string][]routed) []GroupCount {
	inLog := make(map[string]bool, len(stored))
	for _, m := range stored {
		if !m.Bad {
			inLog[m.ID] = true
		}
	}
	out := make([]GroupCount, len(labGroups))
	for i, g := range labGroups {
		c := GroupCount{Group: g.Name, Topic: g.Topic, Tags: g.Tags, Received: len(received[g.Name])}
		got := make(map[string]bool, len(received[g.Name]))
		for _, d := range received[g.Name] {
			got[d.ID] = true
			if !g.takes(routeFor(d.ID)) || !g.takes(d.route) {
				c.Isolation++
			}
		}
		for id := range acked {
			if !g.takes(routeFor(id)) {
				continue
			}
			c.Acknowledged++
			if inLog[id] && !got[id] {
				c.Undelivered++
			}
		}
		out[i] = c
	}
	return out
}

// crossCheckGroups is the independent count of the groups, from the raw
// records (every decodable message record's ID and stored route): a group
// owes an acknowledged message of its topic and tags found in the log, and
// delivers every record stored with its topic and a listed tag. It returns
// the totals over labGroups, to compare with countGroups'.
func crossCheckGroups(acked map[string]uint64, records []routed) (undelivered, isolation int) {
	inLog := make(map[string]bool, len(records))
	for _, r := range records {
		inLog[r.ID] = true
	}
	for _, g := range labGroups {
		has := map[string]bool{}
		for _, r := range records {
			if !g.takes(r.route) {
				continue
			}
			has[r.ID] = true
			if !g.takes(routeFor(r.ID)) {
				isolation++
			}
		}
		for id := range acked {
			if g.takes(routeFor(id)) && inLog[id] && !has[id] {
				undelivered++
			}
		}
	}
	return undelivered, isolation
}

// groupTotals sums the undelivered and isolation counts of groups.
func groupTotals(groups []GroupCount) (undelivered, isolation int) {
	for _, g := range groups {
		undelivered += g.Undelivered
		isolation += g.Isolation
	}
	return undelivered, isolation
}

// drainGroups opens the queue in dir and receives, from every group of
// labGroups at once, every message it delivers, without acking (so that
// retention deletes nothing of a directory kept for inspection). It returns
// what each group received, by group name.
func drainGroups(dir string, cfg Config) (map[string][]routed, error) {
	q, err := zeroloss.Open(dir, cfg.recoveryOptions())
	if err != nil {
		return nil, err
	}
	received := make([][]routed, len(labGroups))
	errs := make([]error, len(labGroups))
	var wg sync.WaitGroup
	for i, g := range labGroups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = drainGroup(q, g.Name, g.options(), false, func(d *zeroloss.Delivery) error {
				m := &d.Message
				received[i] = append(received[i], routed{m.ID, route{m.Topic, m.Tag}})
				return nil
			})
		}()
	}
	wg.Wait()
	err = errors.Join(errs...)
	if cerr := q.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string][]routed, len(labGroups))
	for i, g := range labGroups {
		out[g.Name] = received[i]
	}
	return out, nil
}

// drainIdle is how long a drain waits for a delivery before it asks the
// group whether it owes anything more. After recovery nothing is being
// sent, so a group with a deliverable message returns it at once.
const drainIdle = 50 * time.Millisecond

// drainGroup receives from group (created with opts if it is new) until it
// has nothing left to deliver, calling take for every message delivered.
// With ack it acks each batch once take has seen it; without, the
// deliveries stay in flight, and are not delivered again within the drain.
func drainGroup(q *zeroloss.Queue, group string, opts *zeroloss.ConsumerOptions, ack bool, take func(*zeroloss.Delivery) error) error {
	c, err := q.Consumer(group, opts)
	if err != nil {
		return err
	}
	held := 0 // deliveries in flight, not acked
	deadline := time.Now().Add(drainTimeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), drainIdle)
		ds, err := c.ReceiveBatch(ctx, drainBatch)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			if groupDone(q, group, held) {
				return nil
			}
			continue
		}
		if err != nil {
			return err
		}
		for _, d := range ds {
			if err := take(d); err != nil {
				return err
			}
		}
		if !ack {
			held += len(ds)
			continue
		}
		// Every message of the batch is taken: one ack record for all.
		if err := c.AckBatch(ds...); err != nil {
			return err
		}
	}
	return fmt.Errorf("group %q still owed messages after %v", group, drainTimeout)
}
