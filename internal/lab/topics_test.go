package lab

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// idOn returns the n-th message ID (from 0) of run 1 that routeFor sends
// with route r.
func idOn(t *testing.T, r route, n int) string {
	t.Helper()
	for i := range 10000 {
		id := messageID(1, 0, i)
		if routeFor(id) == r {
			if n == 0 {
				return id
			}
			n--
		}
	}
	t.Fatalf("no message ID routed to %+v", r)
	return ""
}

// TestRouteFor: every topic and every tag of the tag topic is drawn, the
// other topics carry no tag, and the draw depends on the ID alone.
func TestRouteFor(t *testing.T) {
	seen := map[route]int{}
	for i := range 2000 {
		id := messageID(3, i%producers, i)
		r := routeFor(id)
		assert.Equal(t, r, routeFor(id), "deterministic")
		seen[r]++
		m := messageFor(id)
		assert.Equal(t, r, route{m.Topic, m.Tag})
		assert.Equal(t, bodyFor(id), m.Body)
	}
	assert.Len(t, seen, len(labTopics)-1+len(topicTags), "every topic, every tag of %q: %v", tagTopic, seen)
	for r, n := range seen {
		assert.Greater(t, n, 50, "%+v is drawn often enough", r)
		if r.Topic != tagTopic {
			assert.Empty(t, r.Tag, r.Topic)
		}
	}
}

// TestCountGroups feeds both counts of the groups with fabricated logs and
// deliveries, each with one thing wrong, and checks that each sees it: a
// delivery of another topic's message or of an unlisted tag is an isolation
// violation, an acknowledged message of the topic in the log and not
// delivered is undelivered.
func TestCountGroups(t *testing.T) {
	order := func(tag string, n int) string { return idOn(t, route{"orders", tag}, n) }
	on := func(topic string, n int) string { return idOn(t, route{Topic: topic}, n) }
	ids := []string{on("", 0), on("emails", 0), on("audit", 0), order("", 0), order("new", 0), order("paid", 0), order("shipped", 0)}
	// rec is a record of id as stored (or delivered) with its own route.
	rec := func(id string) routed { return routed{id, routeFor(id)} }
	// deliveries is what each group delivers when the queue does it right.
	deliveries := func(ids ...string) map[string][]routed {
		out := map[string][]routed{}
		for _, id := range ids {
			for _, g := range labGroups {
				if g.takes(routeFor(id)) {
					out[g.Name] = append(out[g.Name], rec(id))
				}
			}
		}
		return out
	}
	records := func(ids ...string) []routed {
		out := make([]routed, len(ids))
		for i, id := range ids {
			out[i] = rec(id)
		}
		return out
	}
	type totals struct{ Undelivered, Isolation int }
	tests := []struct {
		name     string
		acked    []string
		log      []routed              // the records, as stored
		received map[string][]routed   // the deliveries; nil: as the log says
		main     totals                // the main count's totals
		cross    *totals               // the cross-check's, if not main's
		byGroup  map[string]GroupCount // expected counts of some groups (Group, Topic, Tags filled in)
	}{
		{
			name:    "every group gets its own",
			acked:   ids,
			log:     records(ids...),
			byGroup: map[string]GroupCount{"orders": {Acknowledged: 4, Received: 4}, "orders-paid-shipped": {Acknowledged: 2, Received: 2}, "default": {Acknowledged: 1, Received: 1}},
		},
		{
			name:  "a cross-topic delivery",
			acked: ids,
			log:   records(ids...),
			received: func() map[string][]routed {
				d := deliveries(ids...)
				d["emails"] = append(d["emails"], rec(order("new", 0))) // the queue read an orders record for the emails group
				return d
			}(),
			main:    totals{Isolation: 1},
			cross:   &totals{}, // the log is right: only the delivery shows it
			byGroup: map[string]GroupCount{"emails": {Acknowledged: 1, Received: 2, Isolation: 1}},
		},
		{
			name:  "a delivery that says another topic",
			acked: ids,
			log:   records(ids...),
			received: func() map[string][]routed {
				d := deliveries(ids...)
				d["audit"][0].Topic = "emails"
				return d
			}(),
			main:    totals{Isolation: 1},
			cross:   &totals{},
			byGroup: map[string]GroupCount{"audit": {Acknowledged: 1, Received: 1, Isolation: 1}},
		},
		{
			name:  "an unlisted tag delivered to the filtered group",
			acked: ids,
			log:   records(ids...),
			received: func() map[string][]routed {
				d := deliveries(ids...)
				d["orders-paid-shipped"] = append(d["orders-paid-shipped"], rec(order("new", 0)), rec(order("", 0)))
				return d
			}(),
			main:    totals{Isolation: 2},
			cross:   &totals{},
			byGroup: map[string]GroupCount{"orders-paid-shipped": {Acknowledged: 2, Received: 4, Isolation: 2}, "orders": {Acknowledged: 4, Received: 4}},
		},
		{
			name:  "stored on the wrong topic",
			acked: ids,
			log: func() []routed {
				r := records(ids...)
				r[1].Topic = "audit" // the emails message
				return r
			}(),
			received: func() map[string][]routed {
				d := deliveries(ids...)
				d["audit"] = append(d["audit"], routed{ids[1], route{Topic: "audit"}})
				d["emails"] = nil
				return d
			}(),
			main:    totals{Undelivered: 1, Isolation: 1},
			byGroup: map[string]GroupCount{"emails": {Acknowledged: 1, Undelivered: 1}, "audit": {Acknowledged: 1, Received: 2, Isolation: 1}},
		},
		{
			name:  "stored with another tag",
			acked: ids,
			log: func() []routed {
				r := records(ids...)
				r[5].Tag = "new" // orders, paid
				return r
			}(),
			received: func() map[string][]routed {
				d := deliveries(ids...)
				d["orders-paid-shipped"] = d["orders-paid-shipped"][1:] // the paid one, not delivered
				d["orders"][2].Tag = "new"
				return d
			}(),
			main:    totals{Undelivered: 1},
			byGroup: map[string]GroupCount{"orders-paid-shipped": {Acknowledged: 2, Received: 1, Undelivered: 1}, "orders": {Acknowledged: 4, Received: 4}},
		},
		{
			name:  "in the log, not delivered",
			acked: ids,
			log:   records(ids...),
			received: func() map[string][]routed {
				d := deliveries(ids...)
				d["orders"] = d["orders"][:3]
				return d
			}(),
			main:    totals{Undelivered: 1},
			cross:   &totals{},
			byGroup: map[string]GroupCount{"orders": {Acknowledged: 4, Received: 3, Undelivered: 1}, "orders-paid-shipped": {Acknowledged: 2, Received: 2}},
		},
		{
			name:    "lost from the log: lost, not undelivered",
			acked:   ids,
			log:     records(ids[1:]...),
			byGroup: map[string]GroupCount{"default": {Acknowledged: 1}},
		},
		{
			name:    "unacknowledged, delivered to its own group (allowed)",
			acked:   ids[1:],
			log:     records(ids...),
			byGroup: map[string]GroupCount{"default": {Received: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acked := ackedSet(tt.acked...)
			received := tt.received
			if received == nil {
				var inLog []string
				for _, r := range tt.log {
					inLog = append(inLog, r.ID)
				}
				received = deliveries(inLog...)
			}
			var stored []storedMessage
			for i, r := range tt.log {
				stored = append(stored, storedMessage{Seq: uint64(i + 1), ID: r.ID, Body: bodyFor(r.ID), route: r.route})
			}
			groups := countGroups(acked, stored, received)
			require.Len(t, groups, len(labGroups))
			undelivered, isolation := groupTotals(groups)
			assert.Equal(t, tt.main, totals{undelivered, isolation}, "main count")
			want := tt.main
			if tt.cross != nil {
				want = *tt.cross
			}
			undelivered, isolation = crossCheckGroups(acked, tt.log)
			assert.Equal(t, want, totals{undelivered, isolation}, "cross-check")
			for i, g := range groups {
				spec := labGroups[i]
				assert.Equal(t, spec.Name, g.Group)
				exp, ok := tt.byGroup[g.Group]
				if !ok {
					continue
				}
				exp.Group, exp.Topic, exp.Tags = spec.Name, spec.Topic, spec.Tags
				assert.Equal(t, exp, g, "group %s", g.Group)
			}
		})
	}
}

// TestDrainGroups declares the lab's groups, sends to every topic through
// the queue, and checks that the drain gets every group exactly its own
// messages, with the route they were sent with, twice in a row (nothing is
// acked, so a reopened queue delivers them all again).
func TestDrainGroups(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Flush: zeroloss.FlushAsync}
	q, err := zeroloss.Open(dir, cfg.queueOptions())
	require.NoError(t, err)
	require.NoError(t, declareGroups(q))
	acked := map[string]uint64{}
	for i := range 1000 {
		id := messageID(2, 0, i)
		res, err := q.Send(context.Background(), messageFor(id))
		require.NoError(t, err)
		require.Equal(t, zeroloss.SendOK, res.Status)
		acked[id] = res.Seq
	}
	require.NoError(t, q.Close())
	stored, err := readLog(dir)
	require.NoError(t, err)
	_, records, _, err := scanDigests(dir)
	require.NoError(t, err)
	for round := range 2 {
		received, err := drainGroups(dir, cfg)
		require.NoError(t, err, "round %d", round)
		groups := countGroups(acked, stored, received)
		total := 0
		for _, g := range groups {
			assert.Equal(t, GroupCount{Group: g.Group, Topic: g.Topic, Tags: g.Tags, Acknowledged: g.Acknowledged, Received: g.Acknowledged}, g,
				"round %d", round)
			assert.Positive(t, g.Acknowledged, g.Group)
			if len(g.Tags) == 0 {
				total += g.Acknowledged
			}
		}
		assert.Equal(t, len(acked), total, "round %d: every message has one topic", round)
		undelivered, isolation := crossCheckGroups(acked, records)
		assert.Zero(t, undelivered+isolation)
		for name, ds := range received {
			for _, d := range ds {
				require.Equal(t, routeFor(d.ID), d.route, fmt.Sprintf("group %s delivered %s", name, d.ID))
			}
		}
	}
}
