package zeroloss

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// A seeded model-based simulation of the queue: random sends, resends of
// an ID, batches, receives, acks (and async ones), nacks (and NackNow),
// releases, consumer closes, extends, clock jumps, redrives,
// purges, mark flushes, retention, power losses in every MemFS crash mode,
// process kills (the page cache survives), clean restarts, disk-full
// episodes and messages of MaxMessageSize, on two consumer groups, "h"
// of them Ordered (messages carry one of three keys, or none). After
// every step each group is checked against a model of what was promised:
//
//   - no loss: every SendOK'd message not acked is owed by the group:
//     in flight or waiting (pending), a dead letter, or not read yet and
//     in the log;
//   - no resurrection: a message whose Ack (or PurgeDeadLetters) returned
//     nil is never delivered, pending or a dead letter again;
//   - no phantom: whatever is delivered was sent, with its body;
//   - attempts never go back: a delivery's Attempt is above every count
//     the queue had made durable (a crash may forget the counts of
//     deliveries since the last record that carried them, not more; a
//     count an async ack record took is carried by that record alone, not
//     by the records written while it waits), and never above
//     MaxDeliveries;
//   - no undocumented error: each call fails only as its documentation
//     allows in the situation (ErrDiskFull while the disk is full...);
//   - key order (the Ordered group): per key, first deliveries follow seq
//     order, and no two deliveries of a key are held at once.
//
// A seed is deterministic (TestSimulationDeterministic): nothing runs by
// the wall clock (Options.manualTicks: mark flushes, retention and the
// FlushAsync syncer's ticks are steps), and AckAsync's writer takes its
// record's counts at once but writes it only when a step lets it
// (sim_async_test.go), so a rerun or a shrink of a seed replays it.
//
// The run ends with a clean restart and a drain that must deliver every
// message owed. ZEROLOSS_SIM_SEEDS=N runs seeds 1..N (default 500, 100
// under the race detector: sim_norace_test.go), A-B seeds A to B,
// ZEROLOSS_SIM_SEED=S only seed S, ZEROLOSS_SIM_STEPS the steps per seed
// (default 150). A failing seed is shrunk to the fewest steps that still
// fail, and its steps are printed.

const (
	simDefaultSteps = 150
	simMaxMessage   = 2048
)

func TestSimulation(t *testing.T) {
	steps := simEnvInt(t, "ZEROLOSS_SIM_STEPS", simDefaultSteps)
	var seeds []uint64
	if s := os.Getenv("ZEROLOSS_SIM_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ZEROLOSS_SIM_SEED=%q: %v", s, err)
		}
		seeds = []uint64{seed}
	} else {
		first, last := 1, simDefaultSeeds
		if s := os.Getenv("ZEROLOSS_SIM_SEEDS"); s != "" {
			a, b, isRange := strings.Cut(s, "-") // N, or a range A-B
			var err error
			if last, err = strconv.Atoi(a); err == nil && isRange {
				first = last
				last, err = strconv.Atoi(b)
			}
			if err != nil || first < 1 || last < first {
				t.Fatalf("ZEROLOSS_SIM_SEEDS=%q: want N or A-B", s)
			}
		}
		for seed := first; seed <= last; seed++ {
			seeds = append(seeds, uint64(seed))
		}
	}
	totalSteps := 0
	for _, seed := range seeds {
		trace, done, err := runSim(seed, steps)
		totalSteps += done
		if err == nil {
			continue
		}
		// Shrink: the fewest steps of this seed that still fail.
		best, bestTrace, bestErr := done, trace, err
		lo, hi := 0, done-1 // runs of lo steps pass (assumed), of hi+1 fail
		for lo < hi {
			mid := (lo + hi + 1) / 2
			if tr, _, err := runSim(seed, mid); err != nil {
				best, bestTrace, bestErr, hi = mid, tr, err, mid-1
			} else {
				lo = mid
			}
		}
		t.Fatalf("simulation seed %d fails (shrunk to %d steps; rerun with ZEROLOSS_SIM_SEED=%d ZEROLOSS_SIM_STEPS=%d):\n%v\nsteps:\n%s",
			seed, best, seed, best, bestErr, strings.Join(bestTrace, "\n"))
	}
	t.Logf("%d seeds, %d steps", len(seeds), totalSteps)
}

func simEnvInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
}

// simMessage is what the model knows of a message at a seq.
type simMessage struct {
	id string
	ok bool // SendOK'd: must never be lost
}

type sim struct {
	rng    *rand.Rand
	mem    *vfs.MemFS
	fault  *vfs.FaultFS
	clock  *fakeClock
	opts   Options
	copts  ConsumerOptions
	q      *Queue
	opened bool // the directory exists: Open recovers it
	// highClock is the latest time the clock showed: dedup IDs older than
	// DedupWindow before it may have been forgotten by the running queue
	// (and its checkpoint files) while a replay of the whole log with the
	// clock gone back since would remember them.
	highClock time.Time
	groups    []*simGroup // "g" and "h": each receives every message
	gr        *simGroup   // the group of the current step
	trace     []string

	ids      []string              // every ID sent, for resends
	nextID   int                   //
	sent     map[uint64]simMessage // by seq
	maybeIDs map[string]bool       // sends that failed: they may be in the log anyway
	diskFull int                   // steps the disk stays full
	crashing bool                  // the file system is about to freeze

	// The async ack writers wait at gate (Options.asyncAckGate) with their
	// first record's counts and mark taken, until landAsync opens it; each
	// says on arrived that it is there. So they write at a step the seed
	// chooses, never racing the steps.
	gate    chan struct{}
	arrived chan struct{}
}

// simGroup is what the model knows of one consumer group.
type simGroup struct {
	name    string
	ordered bool
	c       *Consumer
	held    []*Delivery
	given   []*Delivery       // every delivery through c (Close releases those still held)
	acked   map[uint64]bool   // Ack or purge returned nil
	maybe   map[uint64]bool   // an ack or purge failed uncertainly: may be gone
	last    map[uint64]int    // highest Attempt delivered
	durable map[uint64]int    // attempts the queue made durable
	seen    map[uint64]bool   // ordered: delivered at least once, over every restart
	lastKey map[string]uint64 // ordered: by key, the highest seq delivered
	// async are the deliveries acked with AckAsync whose record is not
	// written yet (its writer waits at the gate); inflight is last when the
	// writer took its record's counts and mark (nil: no writer waiting).
	// A record written meanwhile does not carry those: they are not
	// durable until that record lands, and a crash before may forget them.
	async    []*Delivery
	inflight map[uint64]int
}

// runSim runs seed for steps steps and the final check. It returns the
// steps it did (trace) and how many, and the first violation.
func runSim(seed uint64, steps int) (trace []string, done int, err error) {
	s := newSim(seed)
	if err := s.open(); err != nil {
		return s.trace, 0, err
	}
	defer s.close()
	for done = 1; done <= steps; done++ {
		if err := s.randomStep(); err != nil {
			return s.trace, done, fmt.Errorf("step %d: %w", done, err)
		}
		if err := s.check(); err != nil {
			return s.trace, done, fmt.Errorf("after step %d: %w", done, err)
		}
	}
	done--
	if err := s.finish(); err != nil {
		return s.trace, done, fmt.Errorf("final check: %w", err)
	}
	return s.trace, done, nil
}

// newSim returns the simulation of seed, its options drawn, not open yet.
// Nothing in it runs by the clock: markLoop and the FlushAsync syncer do not
// tick (manualTicks: flushMarks, retain and syncTick are steps), and the
// async ack writers write when a step lets them (landAsync).
func newSim(seed uint64) *sim {
	s := &sim{rng: rand.New(rand.NewPCG(seed, 0x5eed)), mem: vfs.NewMem(), clock: newFakeClock(),
		sent: map[uint64]simMessage{}, maybeIDs: map[string]bool{}}
	for _, name := range []string{"g", "h"} {
		s.groups = append(s.groups, &simGroup{name: name, ordered: name == "h", acked: map[uint64]bool{}, maybe: map[uint64]bool{},
			last: map[uint64]int{}, durable: map[uint64]int{}, seen: map[uint64]bool{}, lastKey: map[string]uint64{}})
	}
	s.gr = s.groups[0]
	s.fault = vfs.NewFault(s.mem)
	segment := []int64{simSmallestSegment(), 16 << 10, 64 << 10}[s.rng.IntN(3)]
	s.gate, s.arrived = make(chan struct{}), make(chan struct{}, 1)
	s.opts = Options{SegmentSize: segment, MaxMessageSize: simMaxMessage, fs: s.fault, now: s.clock.Now,
		manualTicks: true, asyncAckGate: s.asyncAckGate}
	if s.rng.IntN(4) == 0 {
		s.opts.Flush = FlushAsync
	}
	s.copts = ConsumerOptions{AckTimeout: 30 * time.Second, MaxDeliveries: 2 + s.rng.IntN(4),
		Backoff: []time.Duration{time.Second, 10 * time.Second}}
	s.opts.CheckpointBytes = int64(1+s.rng.IntN(4)) << 10
	s.highClock = s.clock.Now()
	s.step("open: segment %d, %v, MaxDeliveries %d, CheckpointBytes %d", segment, s.opts.Flush, s.copts.MaxDeliveries, s.opts.CheckpointBytes)
	return s
}

// close closes the queue, if open, once the async ack writers are done.
func (s *sim) close() {
	if s.q != nil {
		s.landAsync()
		s.q.Close()
	}
}

// simSmallestSegment returns the smallest SegmentSize the options accept
// for simMaxMessage: the records about a message must fit in it.
func simSmallestSegment() int64 {
	for size := int64(simMaxMessage + segmentOverhead); ; size++ {
		o := Options{SegmentSize: size, MaxMessageSize: simMaxMessage}
		if _, err := o.withDefaults(); err == nil {
			return size
		}
	}
}

func (s *sim) step(format string, args ...any) {
	s.trace = append(s.trace, fmt.Sprintf("%4d  ", len(s.trace))+fmt.Sprintf(format, args...))
}

func (s *sim) open() error {
	// What a replay of the whole log rebuilds, from a copy of the directory
	// without its checkpoint files: Open from the newest one must rebuild
	// the same.
	var full string
	if s.opened {
		var err error
		if full, err = fullReplayState(s.mem, "/q", s.opts, s.dedupSince()); err != nil {
			return err
		}
	}
	q, err := Open("/q", &s.opts)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	s.opened = true
	if got := replayedState(q, s.dedupSince()); s.opened && full != "" && got != full {
		q.Close()
		return fmt.Errorf("Open from its checkpoint file (read %d records) rebuilt another state than a replay of the whole log:\n%s\nwhole log:\n%s",
			q.Stats().OpenFramesRead, got, full)
	}
	s.step("opened: read %d records after the checkpoint file at seq %d", q.Stats().OpenFramesRead, q.files.written)
	for _, sg := range s.groups {
		copts := s.copts
		copts.Ordered = sg.ordered
		c, err := q.Consumer(sg.name, &copts)
		if err != nil {
			q.Close()
			return fmt.Errorf("consumer %s: %w", sg.name, err)
		}
		sg.c, sg.held, sg.given = c, nil, nil
	}
	s.q = q
	if os.Getenv("SIMDEBUG") != "" {
		for _, lg := range q.ledger.groups {
			s.step("DEBUG ledger %s floor %d mark %d attempts %v acked %v", lg.name, lg.floor, lg.mark, lg.attempts, lg.acked)
		}
	}
	return nil
}

// dedupSince is the append time from which on the dedup IDs Open rebuilds
// must be the same with or without checkpoint files (see highClock).
func (s *sim) dedupSince() time.Time {
	window := s.opts.DedupWindow
	if window == 0 {
		window = DefaultDedupWindow
	}
	return s.highClock.Add(-window)
}

// simBody derives a message's body from its ID: an ID starting with "L"
// makes a message of exactly MaxMessageSize.
func simBody(id string) []byte {
	sum := sha256.Sum256([]byte(id))
	if strings.HasPrefix(id, "L") {
		return []byte(strings.Repeat(string(sum[:1]), simMaxMessage-frameSize(&record.Message{ID: id, Key: simKey(id)})))
	}
	return []byte(strings.Repeat(fmt.Sprintf("%x", sum), 1+int(sum[0])%6))
}

// simKey derives a message's key from its ID (a resend has the same key):
// one of three, or none.
func simKey(id string) string {
	sum := sha256.Sum256([]byte("key " + id))
	return []string{"", "k1", "k2", "k3"}[sum[0]%4]
}

func (s *sim) newMessage() *Message {
	var id string
	if len(s.ids) > 0 && s.rng.IntN(4) == 0 {
		id = s.ids[s.rng.IntN(len(s.ids))] // a resend
	} else {
		s.nextID++
		prefix := []string{"m", "m", "m", "m", "L", "d"}[s.rng.IntN(6)]
		id = fmt.Sprintf("%s%d", prefix, s.nextID)
		s.ids = append(s.ids, id)
	}
	m := &Message{ID: id, Key: simKey(id), Body: simBody(id)}
	if strings.HasPrefix(id, "d") {
		m.DeliverAt = s.clock.Now().Add(time.Duration(1+s.rng.IntN(120)) * time.Second)
	}
	return m
}

func (s *sim) randomStep() error {
	if s.diskFull > 0 {
		if s.diskFull--; s.diskFull == 0 {
			s.fault.SetDiskFull(false)
			s.step("disk has space again")
		}
	}
	ctx := context.Background()
	s.gr = s.groups[0]
	if s.rng.IntN(3) == 0 {
		s.gr = s.groups[1]
	}
	switch n := s.rng.IntN(103); {
	case n >= 100:
		return s.crashDuring()
	case n < 22:
		return s.send(ctx, []*Message{s.newMessage()})
	case n < 27:
		batch := make([]*Message, 2+s.rng.IntN(4))
		for i := range batch {
			batch[i] = s.newMessage()
		}
		return s.send(ctx, batch)
	case n < 45:
		return s.receive(1 + s.rng.IntN(3)*s.rng.IntN(2))
	case n < 60:
		return s.ack()
	case n < 67:
		switch s.rng.IntN(5) {
		case 0:
			return s.release()
		case 1:
			return s.closeConsumer()
		}
		return s.nack()
	case n < 70:
		if d := s.pick(); d != nil {
			by := time.Duration(1+s.rng.IntN(120)) * time.Second
			err := d.Extend(by)
			s.step("%s extend seq %d by %v: %v", s.gr.name, d.Seq, by, err)
			return s.allowed("extend", err, ErrDeliveryExpired)
		}
	case n < 78:
		d := []time.Duration{time.Second, 5 * time.Second, 31 * time.Second, 3 * time.Minute, -time.Minute, time.Hour}[s.rng.IntN(6)]
		s.clock.Advance(d)
		if now := s.clock.Now(); now.After(s.highClock) {
			s.highClock = now
		}
		s.step("clock %+v", d)
	case n < 81:
		return s.redrive(ctx)
	case n < 83:
		return s.purge(ctx)
	case n < 86:
		err := s.q.flushMarks(ctx)
		s.step("flush marks: %v", err)
		if err == nil {
			s.everyGroupDurable()
		}
		return s.allowed("flushMarks", err)
	case n < 88:
		err := s.q.retain()
		s.step("retain: %v (segments %d, deleted %d)", err, s.q.Stats().Segments, s.q.Stats().SegmentsDeleted)
		return s.allowed("retain", err)
	case n < 90:
		force := s.rng.IntN(2) == 0
		s.q.checkpointState(force) // markLoop's step (failures are logged)
		s.step("checkpoint file (force %v): base at seq %d, files written %d", force, s.q.files.at.seq, s.q.Stats().CheckpointFiles)
	case n < 92:
		s.diskFull = 1 + s.rng.IntN(8)
		s.fault.SetDiskFull(true)
		s.step("disk full for %d steps", s.diskFull)
	case n < 94:
		return s.restart("clean restart", func() error {
			s.landAsync()
			err := s.q.Close()
			if err == nil {
				s.everyGroupDurable()
			}
			return err
		})
	case n < 97:
		return s.restart("kill -9", s.kill)
	case n < 100:
		if s.opts.Flush == FlushAsync {
			return nil // SendOK means written only: a power loss may take it
		}
		mode := vfs.CrashModes[s.rng.IntN(len(vfs.CrashModes))]
		return s.restart("power loss "+mode.String(), func() error {
			s.mem.SetOpLimit(s.mem.OpCount())
			s.landAsync()
			s.q.Close()
			s.mem.Crash(mode, s.rng)
			return nil
		})
	}
	return nil
}

// crashDuring cuts the power (a kill under FlushAsync) a few file
// operations into a send, an ack or a retention pass (with its checkpoint),
// then restarts.
func (s *sim) crashDuring() error {
	within := 1 + s.rng.IntN(8)
	s.mem.SetOpLimit(s.mem.OpCount() + within)
	s.step("crash within the next %d file operations", within)
	s.crashing = true
	var err error
	switch s.rng.IntN(5) {
	case 4:
		s.q.checkpointState(true)
		s.step("checkpoint file: base at seq %d", s.q.files.at.seq)
	case 0:
		err = s.send(context.Background(), []*Message{s.newMessage()})
	case 1:
		err = s.send(context.Background(), []*Message{s.newMessage(), s.newMessage(), s.newMessage()})
	case 2:
		err = s.ack()
	case 3:
		rerr := s.q.retain()
		s.step("retain: %v", rerr)
		err = s.allowed("retain", rerr)
	}
	if err == nil {
		s.landAsync() // within the same few file operations
	}
	s.crashing = false
	if err != nil {
		return err
	}
	if s.opts.Flush == FlushAsync {
		return s.restart("kill -9 mid-operation", s.kill)
	}
	mode := vfs.CrashModes[s.rng.IntN(len(vfs.CrashModes))]
	return s.restart("power loss mid-operation "+mode.String(), func() error {
		s.mem.SetOpLimit(s.mem.OpCount())
		s.landAsync()
		s.q.Close()
		s.mem.Crash(mode, s.rng)
		return nil
	})
}

// kill stops the process: the file system takes no more operations (an
// async ack writer waiting at the gate fails), the page cache survives.
func (s *sim) kill() error {
	s.mem.SetOpLimit(s.mem.OpCount())
	s.landAsync()
	s.q.Close()
	s.mem.Kill()
	return nil
}

// allowed returns nil if err is nil, matches one of ok, or is ErrDiskFull
// while the disk is full, or anything while the machine is going down;
// otherwise a violation.
func (s *sim) allowed(what string, err error, ok ...error) error {
	if err == nil || s.crashing || (s.diskFull > 0 && errors.Is(err, ErrDiskFull)) {
		return nil
	}
	for _, e := range ok {
		if errors.Is(err, e) {
			return nil
		}
	}
	return fmt.Errorf("%s: undocumented error here: %w", what, err)
}

func (s *sim) send(ctx context.Context, msgs []*Message) error {
	results, err := s.q.SendBatch(ctx, msgs)
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	s.step("send %v: %d results, %v", ids, len(results), err)
	for i, m := range msgs {
		if i >= len(results) {
			s.maybeIDs[m.ID] = true
			continue
		}
		r := results[i]
		if r.ID != m.ID {
			return fmt.Errorf("send of %s answered for ID %s", m.ID, r.ID)
		}
		known, ok := s.sent[r.Seq]
		if ok && known.id != m.ID {
			return fmt.Errorf("send of %s answered with seq %d, which holds %s", m.ID, r.Seq, known.id)
		}
		s.sent[r.Seq] = simMessage{id: m.ID, ok: known.ok || r.Status == SendOK}
	}
	return s.allowed("send", err)
}

// receive takes up to max deliveries at once, without waiting.
func (s *sim) receive(max int) error {
	if s.opts.Flush == FlushAsync && s.rng.IntN(2) == 0 {
		// The syncer's tick (manualTicks: it does not tick by itself):
		// what it makes durable becomes visible to consumers.
		s.q.syncTick()
		s.step("sync tick: committed %d", s.q.committedSeq())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // deliver what is due now, wait for nothing
	ds, err := s.gr.c.ReceiveBatch(ctx, max)
	var got []string
	for _, d := range ds {
		got = append(got, fmt.Sprintf("%d#%d", d.Seq, d.Attempt))
		if verr := s.delivered(d); verr != nil {
			s.step("%s receive %d: %v", s.gr.name, max, got)
			return verr
		}
		s.gr.held = append(s.gr.held, d)
		s.gr.given = append(s.gr.given, d)
	}
	s.step("%s receive %d: %v %v", s.gr.name, max, got, err)
	return s.allowed("receive", err, context.Canceled)
}

func (s *sim) delivered(d *Delivery) error {
	known, ok := s.sent[d.Seq]
	switch {
	case !ok && !s.maybeIDs[d.Message.ID]:
		return fmt.Errorf("phantom: seq %d (%s) was never sent", d.Seq, d.Message.ID)
	case ok && known.id != d.Message.ID:
		return fmt.Errorf("phantom: seq %d delivered as %s, sent as %s", d.Seq, d.Message.ID, known.id)
	case string(d.Message.Body) != string(simBody(d.Message.ID)):
		return fmt.Errorf("seq %d (%s) delivered with another body", d.Seq, d.Message.ID)
	case s.gr.acked[d.Seq]:
		return fmt.Errorf("resurrected: seq %d (%s) delivered again after its ack returned nil", d.Seq, d.Message.ID)
	case d.Attempt <= s.gr.durable[d.Seq]:
		return fmt.Errorf("attempts went back: seq %d (%s) delivered as attempt %d, the queue had made %d durable",
			d.Seq, d.Message.ID, d.Attempt, s.gr.durable[d.Seq])
	case d.Attempt > s.copts.MaxDeliveries:
		return fmt.Errorf("seq %d delivered as attempt %d, above MaxDeliveries %d", d.Seq, d.Attempt, s.copts.MaxDeliveries)
	}
	if s.gr.ordered && d.Message.Key != "" {
		if err := s.inKeyOrder(d); err != nil {
			return err
		}
	}
	if !ok {
		s.sent[d.Seq] = simMessage{id: d.Message.ID}
	}
	s.gr.last[d.Seq] = max(s.gr.last[d.Seq], d.Attempt)
	delete(s.gr.inflight, d.Seq) // its count is the group's again: the next record carries it
	return nil
}

// inKeyOrder checks a delivery of the Ordered group: no other delivery of
// its key is held (current, and not past its deadline or nacked), and a
// first delivery comes after every message of its key delivered before.
func (s *sim) inKeyOrder(d *Delivery) error {
	key := d.Message.Key
	g := s.gr.c.g
	g.mu.Lock()
	for _, other := range s.gr.held {
		if other.Message.Key == key && other.held("check") == nil {
			g.mu.Unlock()
			return fmt.Errorf("key order: seq %d of key %s delivered while seq %d of it is held", d.Seq, key, other.Seq)
		}
	}
	g.mu.Unlock()
	if s.gr.seen[d.Seq] {
		return nil
	}
	s.gr.seen[d.Seq] = true
	if last, ok := s.gr.lastKey[key]; ok && last > d.Seq {
		return fmt.Errorf("key order: seq %d of key %s first delivered after seq %d", d.Seq, key, last)
	}
	s.gr.lastKey[key] = max(s.gr.lastKey[key], d.Seq)
	return nil
}

// everyGroupDurable is allDurable for every group (Close writes them all).
func (s *sim) everyGroupDurable() {
	for _, sg := range s.groups {
		sg.allDurable()
	}
}

// allDurable notes that a record carrying every attempt count and the
// delivered mark of the step's group was written: every count but those an
// async ack record waiting at the gate took (it carries them, not this one).
func (s *sim) allDurable() { s.gr.allDurable() }

func (sg *simGroup) allDurable() {
	for seq, n := range sg.last {
		if _, taken := sg.inflight[seq]; !taken {
			sg.durable[seq] = max(sg.durable[seq], n)
		}
	}
}

// pick removes and returns a random held delivery, nil if none.
func (s *sim) pick() *Delivery {
	if len(s.gr.held) == 0 {
		return nil
	}
	i := s.rng.IntN(len(s.gr.held))
	d := s.gr.held[i]
	s.gr.held = append(s.gr.held[:i], s.gr.held[i+1:]...)
	return d
}

func (s *sim) ack() error {
	if s.rng.IntN(4) == 0 {
		return s.ackAsync()
	}
	var ds []*Delivery
	for n := 1 + s.rng.IntN(3); n > 0; n-- {
		if d := s.pick(); d != nil {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return nil
	}
	// Which of them are no longer their message's current delivery, as
	// AckBatch will judge (one goroutine: nothing changes in between).
	g := s.gr.c.g
	expired := make([]bool, len(ds))
	g.mu.Lock()
	for i, d := range ds {
		_, err := d.stale("ack")
		expired[i] = err != nil
	}
	g.mu.Unlock()
	err := s.gr.c.AckBatch(ds...)
	var seqs []uint64
	for _, d := range ds {
		seqs = append(seqs, d.Seq)
	}
	s.step("%s ack %v: %v", s.gr.name, seqs, err)
	switch {
	case err == nil:
		for _, d := range ds {
			if !s.gr.acked[d.Seq] {
				// An ack of deliveries all acked already writes nothing;
				// otherwise its record carries every count.
				s.allDurable()
			}
		}
		for _, d := range ds {
			s.gr.acked[d.Seq] = true
		}
	case errors.Is(err, ErrDiskFull):
		// Nothing was written: they are still owed.
	case errors.Is(err, ErrDeliveryExpired):
		// Those no longer current (moved to the retry stream or the dead
		// letters, delivered again) were not acked, the others were (with
		// one record, if any was not acked already).
		for i, d := range ds {
			if !expired[i] {
				if !s.gr.acked[d.Seq] {
					s.allDurable()
				}
				s.gr.acked[d.Seq] = true
			}
		}
	default:
		for _, d := range ds {
			s.gr.maybe[d.Seq] = true
		}
	}
	return s.allowed("ack", err, ErrDeliveryExpired)
}

func (s *sim) nack() error {
	d := s.pick()
	if d == nil {
		return nil
	}
	if s.rng.IntN(3) == 0 {
		err := d.NackNow()
		s.step("%s nack now seq %d attempt %d: %v", s.gr.name, d.Seq, d.Attempt, err)
		return s.allowed("nack now", err, ErrDeliveryExpired)
	}
	delay := []time.Duration{0, time.Second, time.Minute}[s.rng.IntN(3)]
	err := d.Nack(delay)
	s.step("%s nack seq %d attempt %d delay %v: %v", s.gr.name, d.Seq, d.Attempt, delay, err)
	return s.allowed("nack", err, ErrDeliveryExpired)
}

// release gives one held delivery back without a failed attempt.
func (s *sim) release() error {
	d := s.pick()
	if d == nil {
		return nil
	}
	err := d.Release()
	s.step("%s release seq %d attempt %d: %v", s.gr.name, d.Seq, d.Attempt, err)
	if err == nil {
		s.released(d)
	}
	return s.allowed("release", err, ErrDeliveryExpired)
}

// released notes that d was released: its attempt is taken back, so the
// next delivery may have the same Attempt, also over a count already
// durable (which a restart still counts).
func (s *sim) released(d *Delivery) {
	s.gr.last[d.Seq] = d.Attempt - 1
	s.gr.durable[d.Seq] = min(s.gr.durable[d.Seq], d.Attempt-1)
	delete(s.gr.inflight, d.Seq)
}

// closeConsumer closes the step's group's consumer, which releases every
// delivery it holds, and opens another.
func (s *sim) closeConsumer() error {
	g := s.gr.c.g
	var held []*Delivery
	g.mu.Lock()
	for _, d := range s.gr.given {
		if d.held("release") == nil {
			held = append(held, d)
		}
	}
	g.mu.Unlock()
	err := s.gr.c.Close()
	s.step("%s close consumer, releasing %d: %v", s.gr.name, len(held), err)
	if err != nil {
		return fmt.Errorf("consumer close: %w", err)
	}
	for _, d := range held {
		s.released(d)
	}
	copts := s.copts
	copts.Ordered = s.gr.ordered
	c, err := s.q.Consumer(s.gr.name, &copts)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", s.gr.name, err)
	}
	s.gr.c, s.gr.given = c, nil
	return nil
}

func (s *sim) redrive(ctx context.Context) error {
	dead, err := s.q.DeadLetters(s.gr.name)
	if err != nil || len(dead) == 0 {
		return err
	}
	var chosen []DeadLetter
	var positions []uint64
	if s.rng.IntN(2) == 0 {
		chosen = dead
	} else {
		dl := dead[s.rng.IntN(len(dead))]
		chosen, positions = []DeadLetter{dl}, []uint64{dl.Pos}
	}
	n, err := s.q.RedriveDeadLetters(ctx, s.gr.name, positions...)
	s.step("%s redrive %d of %d: %d, %v", s.gr.name, len(chosen), len(dead), n, err)
	for _, dl := range chosen { // their attempt counts start again
		s.gr.last[dl.Seq], s.gr.durable[dl.Seq] = 0, 0
		delete(s.gr.inflight, dl.Seq)
	}
	return s.allowed("redrive", err)
}

func (s *sim) purge(ctx context.Context) error {
	dead, err := s.q.DeadLetters(s.gr.name)
	if err != nil || len(dead) == 0 {
		return err
	}
	dl := dead[s.rng.IntN(len(dead))]
	n, err := s.q.PurgeDeadLetters(ctx, s.gr.name, dl.Pos)
	s.step("%s purge seq %d at %d: %d, %v", s.gr.name, dl.Seq, dl.Pos, n, err)
	switch {
	case err == nil && n == 1:
		s.gr.acked[dl.Seq] = true
		s.allDurable()
	case err != nil && !errors.Is(err, ErrDiskFull):
		s.gr.maybe[dl.Seq] = true
	}
	return s.allowed("purge", err)
}

func (s *sim) restart(how string, stop func() error) error {
	s.diskFull = 0
	s.fault.SetDiskFull(false)
	err := stop()
	s.step("%s: %v", how, err)
	if err != nil {
		return fmt.Errorf("%s: %w", how, err)
	}
	s.q = nil
	if !strings.HasPrefix(how, "clean") && !strings.HasPrefix(how, "final") {
		// What the queue knows of attempts now is what it made durable.
		for _, sg := range s.groups {
			for seq := range sg.last {
				sg.last[seq] = sg.durable[seq]
			}
		}
	}
	return s.open()
}

// check compares the queue's state with the model: every message SendOK'd
// and not acked is owed, nothing acked is, and every message not read yet
// is in the log.
func (s *sim) check() error {
	for _, sg := range s.groups {
		s.gr = sg
		if err := s.checkGroup(); err != nil {
			return fmt.Errorf("group %s: %w", sg.name, err)
		}
	}
	return nil
}

func (s *sim) checkGroup() error {
	g := s.gr.c.g
	owed := map[uint64]bool{}
	g.mu.Lock()
	cursor := g.cursor
	for _, u := range g.pending {
		owed[u.seq] = true
	}
	for _, u := range g.blocked { // Ordered: behind their keys' heads
		owed[u.seq] = true
	}
	skip := map[uint64]bool{}
	for seq := range g.skip {
		skip[seq] = true
	}
	g.mu.Unlock()
	for _, dl := range s.q.ledger.deadLetters(g.id) {
		if _, ok := s.sent[dl.Seq]; !ok && !s.maybeIDs[dl.Message.ID] {
			return fmt.Errorf("phantom dead letter: seq %d (%s)", dl.Seq, dl.Message.ID)
		}
		owed[dl.Seq] = true
	}
	for seq := range owed {
		if s.gr.acked[seq] {
			return fmt.Errorf("resurrected: seq %d (%s) is owed again after its ack returned nil", seq, s.sent[seq].id)
		}
	}
	synced := s.q.log.SyncedSeq() // before reading: readers see synced frames only
	inLog, err := s.unread(cursor)
	if err != nil {
		return err
	}
	for seq, m := range s.sent {
		if !m.ok || s.gr.acked[seq] || s.gr.maybe[seq] || owed[seq] {
			continue
		}
		if seq < cursor || skip[seq] {
			return fmt.Errorf("lost: seq %d (%s) was SendOK'd and never acked, but the group does not owe it (cursor %d)",
				seq, m.id, cursor)
		}
		if seq <= synced && inLog[seq] != m.id {
			return fmt.Errorf("lost: seq %d (%s) was SendOK'd and not read yet, but the log holds %q there",
				seq, m.id, inLog[seq])
		}
	}
	return nil
}

// unread returns the IDs of the main-stream messages in the log from seq on.
func (s *sim) unread(from uint64) (map[uint64]string, error) {
	out := map[uint64]string{}
	r := s.q.log.NewUncappedReader(from)
	defer r.Close()
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading the log: %w", err)
		}
		if rec.Type == record.TypeMessage && rec.Stream == 0 {
			id, _, err := record.MessageID(rec.Payload)
			if err != nil {
				return nil, fmt.Errorf("message at seq %d: %w", rec.Seq, err)
			}
			out[rec.Seq] = id
		}
	}
}

// finish restarts the queue cleanly and drains it: every message owed must
// come, or be a dead letter.
func (s *sim) finish() error {
	if err := s.restart("final clean restart", func() error {
		s.landAsync()
		err := s.q.Close()
		if err == nil {
			s.everyGroupDurable()
		}
		return err
	}); err != nil {
		return err
	}
	if err := s.check(); err != nil {
		return err
	}
	for _, sg := range s.groups {
		s.gr = sg
		if err := s.drain(); err != nil {
			return fmt.Errorf("group %s: %w", sg.name, err)
		}
	}
	return nil
}

// drain receives and acks everything the step's group owes, and checks
// that it is every message SendOK'd and not acked.
func (s *sim) drain() error {
	drained := map[uint64]bool{}
	for quiet := 0; quiet < 3; {
		s.clock.Advance(3 * time.Hour) // past every backoff, deadline and DeliverAt
		if err := s.receive(16); err != nil {
			return err
		}
		if len(s.gr.held) == 0 {
			quiet++
			continue
		}
		quiet = 0
		for _, d := range s.gr.held {
			drained[d.Seq] = true
		}
		err := s.gr.c.AckBatch(s.gr.held...)
		s.step("%s drain: ack %d: %v", s.gr.name, len(s.gr.held), err)
		if err != nil {
			return fmt.Errorf("drain: ack: %w", err)
		}
		for _, d := range s.gr.held {
			s.gr.acked[d.Seq] = true
		}
		s.gr.held = nil
	}
	for _, dl := range s.q.ledger.deadLetters(s.gr.c.g.id) {
		drained[dl.Seq] = true
	}
	for seq, m := range s.sent {
		if m.ok && !drained[seq] && !s.gr.acked[seq] && !s.gr.maybe[seq] {
			return fmt.Errorf("lost: seq %d (%s) was SendOK'd, never acked, and the drain did not deliver it", seq, m.id)
		}
	}
	return nil
}
