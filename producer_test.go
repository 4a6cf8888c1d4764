package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// Small segments for the queue and the spool, so tests roll segments and
// remove drained spool segments.
var producerQueueOptions = Options{SegmentSize: 8192, MaxMessageSize: 1024}

func memQueue(t *testing.T, fs vfs.FS, o Options) *Queue {
	t.Helper()
	o.fs = fs
	q, err := Open("/q", &o)
	require.NoError(t, err)
	return q
}

// testStrict returns strict producer options with the spool on fs, fast
// retries and small spool segments; adjust changes them.
func testStrict(fs vfs.FS, adjust ...func(*ProducerOptions)) *ProducerOptions {
	o := &ProducerOptions{Strict: true, SpoolDir: "/spool", Attempts: 2, Backoff: time.Millisecond,
		ResendInterval: 10 * time.Millisecond, MaxMessageSize: 1024, fs: fs, spoolSegmentSize: 4096 + 2048}
	for _, f := range adjust {
		f(o)
	}
	return o
}

func newProducer(t *testing.T, q *Queue, o *ProducerOptions) *Producer {
	t.Helper()
	p, err := NewProducer(q, o)
	require.NoError(t, err)
	return p
}

func produce(t *testing.T, p *Producer, id string) ProduceResult {
	t.Helper()
	res, err := p.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)[:64]})
	require.NoError(t, err, "send %s", id)
	require.Equal(t, id, res.ID)
	return res
}

func flush(t *testing.T, p *Producer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Flush(ctx))
	require.Zero(t, p.Spooled())
}

// firstOccurrences returns the IDs of the queue's messages in the order of
// their first occurrence, and how often each occurs. It checks every body.
func firstOccurrences(t *testing.T, q *Queue) ([]string, map[string]int) {
	t.Helper()
	var order []string
	count := map[string]int{}
	for _, s := range readBack(t, q) {
		require.Equal(t, bodyFor(s.Msg.ID)[:len(s.Msg.Body)], s.Msg.Body, "body of %s", s.Msg.ID)
		if count[s.Msg.ID] == 0 {
			order = append(order, s.Msg.ID)
		}
		count[s.Msg.ID]++
	}
	return order, count
}

// requireSentInOrder checks that the queue holds exactly the messages sent
// (no phantoms), every one of them, with first occurrences in send order, and
// at most maxCopies of each.
func requireSentInOrder(t *testing.T, q *Queue, sent []string, maxCopies int) map[string]int {
	t.Helper()
	order, count := firstOccurrences(t, q)
	require.Equal(t, sent, order, "every message sent is in the queue, first occurrences in send order")
	for id, n := range count {
		require.LessOrEqual(t, n, maxCopies, "copies of %s", id)
	}
	return count
}

// TestStrictProducerSpoolsWhileQueueClosed: the queue is closed in the middle
// of a stream of Sends; the strict producer keeps answering Spooled, and after
// Attach of the reopened queue and Flush every message is in the queue exactly
// once, in send order.
func TestStrictProducerSpoolsWhileQueueClosed(t *testing.T) {
	mem := vfs.NewMem()
	q := memQueue(t, mem, producerQueueOptions)
	p := newProducer(t, q, testStrict(vfs.NewMem()))
	defer p.Close()

	var sent []string
	outcomes := map[Outcome]int{}
	for i := 0; i < 60; i++ {
		if i == 20 {
			require.NoError(t, q.Close())
		}
		id := fmt.Sprintf("m%03d", i)
		res := produce(t, p, id)
		sent = append(sent, id)
		outcomes[res.Outcome]++
		if i < 20 {
			require.Equal(t, Sent, res.Outcome, "%s: queue open", id)
			require.Equal(t, SendOK, res.Status)
			continue
		}
		require.Equal(t, Spooled, res.Outcome, "%s: queue closed", id)
		require.Zero(t, res.Seq, "a spooled message has no seq yet")
		if i == 20 {
			require.ErrorIs(t, res.Cause, ErrClosed, "the first one says why")
		} else {
			require.NoError(t, res.Cause, "the others queue behind it")
		}
	}
	require.Equal(t, 40, p.Spooled())
	require.Equal(t, map[Outcome]int{Sent: 20, Spooled: 40}, outcomes)

	q = memQueue(t, mem, producerQueueOptions)
	defer q.Close()
	p.Attach(q)
	flush(t, p)
	requireSentInOrder(t, q, sent, 1)

	res := produce(t, p, "after")
	require.Equal(t, Sent, res.Outcome, "with an empty spool, Sends go to the queue again")
	require.NoError(t, p.Close())
}

// TestStrictProducerPoisonedQueue: a failed fdatasync poisons the queue; the
// message in flight and the following ones are spooled, and replayed to the
// queue reopened after the fault is gone.
func TestStrictProducerPoisonedQueue(t *testing.T) {
	mem := vfs.NewMem()
	fault := vfs.NewFault(mem)
	q := memQueue(t, fault, producerQueueOptions)
	p := newProducer(t, q, testStrict(vfs.NewMem())) // the spool is on another disk
	defer p.Close()

	var sent []string
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("before-%d", i)
		require.Equal(t, Sent, produce(t, p, id).Outcome)
		sent = append(sent, id)
	}
	fault.FailNth(vfs.OpSync, 1, errInjected)
	res := produce(t, p, "victim")
	sent = append(sent, "victim")
	require.Equal(t, Spooled, res.Outcome, "a failed fdatasync is not SendOK: spooled")
	require.ErrorIs(t, res.Cause, ErrPoisoned, "the retry met the poisoned queue")
	require.ErrorIs(t, q.Err(), ErrPoisoned)
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("after-%d", i)
		require.Equal(t, Spooled, produce(t, p, id).Outcome)
		sent = append(sent, id)
	}
	require.Eventually(t, func() bool { return p.refusals.Load() > 0 }, 5*time.Second, time.Millisecond,
		"the resender tried the poisoned queue")
	require.Equal(t, 11, p.Spooled(), "a poisoned queue takes nothing")

	require.Error(t, q.Close())
	fault.Clear()

	// The replay's own fdatasync fails, then the queue's disk loses power:
	// what the replay wrote was never confirmed, so it must still be
	// spooled.
	q = memQueue(t, fault, producerQueueOptions)
	refusals := p.refusals.Load()
	// The reopened queue's Open wrote its epoch record in a new segment, so
	// its next fdatasync is the replay's.
	fault.FailNth(vfs.OpSync, 1, errInjected)
	p.Attach(q)
	require.Eventually(t, func() bool { return p.refusals.Load() > refusals }, 5*time.Second, time.Millisecond,
		"the replay met the failed fdatasync")
	require.ErrorIs(t, q.Err(), ErrPoisoned)
	// "victim" may be confirmed: the reopened queue recovered it (and made it
	// durable), so dedup answers its resend with SendOK. The others' only
	// copy is the replay whose fdatasync failed.
	require.GreaterOrEqual(t, p.Spooled(), 10, "a replay without SendOK confirms nothing")
	require.Error(t, q.Close())
	mem.Crash(vfs.DropUnsynced, nil)
	fault.Clear()

	q = memQueue(t, fault, producerQueueOptions)
	defer q.Close()
	p.Attach(q)
	flush(t, p)
	// "victim" was written before its fdatasync failed and may be in the
	// log twice: once from the failed attempt, once from the replay.
	count := requireSentInOrder(t, q, sent, 2)
	for id, n := range count {
		if id != "victim" {
			require.Equal(t, 1, n, "%s", id)
		}
	}
}

// delaySyncFS makes every file Sync take delay (while set): a slow disk.
type delaySyncFS struct {
	vfs.FS
	delay atomic.Int64 // nanoseconds
}

type delaySyncFile struct {
	vfs.File
	fs *delaySyncFS
}

func (d *delaySyncFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return delaySyncFile{f, d}, nil
}

func (d *delaySyncFS) Create(name string) (vfs.File, error) { return d.wrap(d.FS.Create(name)) }
func (d *delaySyncFS) OpenRW(name string) (vfs.File, error) { return d.wrap(d.FS.OpenRW(name)) }

func (f delaySyncFile) Sync() error {
	time.Sleep(time.Duration(f.fs.delay.Load()))
	return f.File.Sync()
}

// TestProducerFlushDiskTimeout: every fdatasync outlasts FlushTimeout. The
// strict producer spools the message after its attempts and resends it, with
// the same ID, until a resend gets SendOK; the non-strict producer returns
// FlushDiskTimeout after its attempts. With the queue's dedup on, the resends
// append nothing: every message is in the queue once. With dedup off, each
// attempt and resend appends a copy under the same ID.
func TestProducerFlushDiskTimeout(t *testing.T) {
	slowQueue := func(t *testing.T, dedupWindow time.Duration) (*delaySyncFS, *Queue, Options) {
		fs := &delaySyncFS{FS: vfs.NewMem()}
		o := producerQueueOptions
		o.FlushTimeout = 20 * time.Millisecond
		o.DedupWindow = dedupWindow
		return fs, memQueue(t, fs, o), o
	}
	// countOf reopens the queue once every sync has completed and counts.
	countOf := func(t *testing.T, fs vfs.FS, q *Queue, o Options) (*Queue, []string, map[string]int) {
		require.NoError(t, q.Close())
		q = memQueue(t, fs, o)
		order, count := firstOccurrences(t, q)
		return q, order, count
	}
	for _, dedup := range []bool{true, false} {
		window := time.Duration(-1) // off
		if dedup {
			window = 0 // default
		}
		t.Run(fmt.Sprintf("strict/dedup=%v", dedup), func(t *testing.T) {
			fs, q, o := slowQueue(t, window)
			p := newProducer(t, q, testStrict(vfs.NewMem(), func(o *ProducerOptions) { o.Attempts = 3 }))
			defer p.Close()
			require.Equal(t, Sent, produce(t, p, "warm").Outcome)

			fs.delay.Store(int64(300 * time.Millisecond))
			res := produce(t, p, "slow")
			require.Equal(t, Spooled, res.Outcome, "FlushDiskTimeout is not SendOK")
			require.ErrorContains(t, res.Cause, "FlushDiskTimeout")
			res = produce(t, p, "next")
			require.Equal(t, Spooled, res.Outcome)
			require.NoError(t, res.Cause, "queued behind the spool")
			require.Eventually(t, func() bool { return p.refusals.Load() > 0 }, 5*time.Second, time.Millisecond,
				"the resender got FlushDiskTimeout too")
			// Both are spooled, unless a 300ms sync already finished and a
			// resend of "slow" was confirmed (a loaded machine): then "next"
			// still waits behind it.
			require.NotZero(t, p.Spooled())

			fs.delay.Store(0) // the disk is fast again
			flush(t, p)
			require.NoError(t, p.Close())
			q, order, count := countOf(t, fs, q, o)
			defer q.Close()
			require.Equal(t, []string{"warm", "slow", "next"}, order)
			require.Equal(t, 1, count["warm"])
			if dedup {
				require.Equal(t, map[string]int{"warm": 1, "slow": 1, "next": 1}, count,
					"the resends were answered as duplicates: exactly once")
			} else {
				require.GreaterOrEqual(t, count["slow"], 4, "3 attempts, each appended, and at least one resend with SendOK")
			}
		})
		t.Run(fmt.Sprintf("non-strict/dedup=%v", dedup), func(t *testing.T) {
			fs, q, o := slowQueue(t, window)
			p := newProducer(t, q, &ProducerOptions{Attempts: 3, Backoff: time.Millisecond})
			defer p.Close()
			fs.delay.Store(int64(300 * time.Millisecond))
			res, err := p.Send(context.Background(), &Message{ID: "slow", Body: bodyFor("slow")[:64]})
			require.NoError(t, err, "appended: the status says the rest")
			require.Equal(t, Sent, res.Outcome)
			require.Equal(t, FlushDiskTimeout, res.Status, "the last attempt's status")
			require.NotZero(t, res.Seq)
			require.Equal(t, dedup, res.Duplicate, "the last attempt resent the same ID")
			fs.delay.Store(0)
			require.NoError(t, p.Close())
			q, _, count := countOf(t, fs, q, o)
			defer q.Close()
			if dedup {
				require.Equal(t, 1, count["slow"], "the retries were answered as duplicates")
			} else {
				require.Equal(t, 3, count["slow"], "each of the 3 attempts appended the message, with the same ID")
			}
		})
	}
}

// TestStrictProducerNewSendsQueueBehindSpool: while the spool holds messages,
// a new Send is spooled behind them even though the queue would accept it, so
// the queue's order of first occurrences is the send order.
func TestStrictProducerNewSendsQueueBehindSpool(t *testing.T) {
	mem := vfs.NewMem()
	fault := vfs.NewFault(mem)
	q := memQueue(t, fault, producerQueueOptions)
	defer q.Close()
	p := newProducer(t, q, testStrict(vfs.NewMem(), func(o *ProducerOptions) {
		o.Attempts = 1
		o.ResendInterval = time.Hour // only Flush makes the resender try again
	}))
	defer p.Close()

	var sent []string
	require.Equal(t, Sent, produce(t, p, "first").Outcome) // creates the first segment
	sent = append(sent, "first")
	fault.SetDiskFull(true) // the active segment fills, then a new one cannot be made
	firstSpooled := -1
	for i := 0; i < 100 && firstSpooled < 0; i++ {
		id := fmt.Sprintf("full-%03d", i)
		res := produce(t, p, id)
		sent = append(sent, id)
		if res.Outcome == Spooled {
			require.ErrorIs(t, res.Cause, ErrDiskFull)
			firstSpooled = i
		}
	}
	require.Greater(t, firstSpooled, 0, "the segment filled up")
	require.Eventually(t, func() bool { return p.refusals.Load() > 0 }, 5*time.Second, time.Millisecond,
		"the resender tried the full queue and waits its ResendInterval")

	fault.SetDiskFull(false) // the queue accepts again; the resender does not know yet
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("behind-%02d", i)
		res := produce(t, p, id)
		sent = append(sent, id)
		require.Equal(t, Spooled, res.Outcome, "%s must queue behind the spool, not overtake it", id)
		require.NoError(t, res.Cause)
	}
	require.Equal(t, 21, p.Spooled())
	flush(t, p)
	requireSentInOrder(t, q, sent, 1)
}

// TestSpoolSurvivesPowerLoss: after Spooled returned, a power loss on the
// spool's disk (each crash mode) loses nothing: a producer opened on the same
// spool replays every spooled message, and not those a Flush had confirmed.
func TestSpoolSurvivesPowerLoss(t *testing.T) {
	for _, mode := range vfs.CrashModes {
		t.Run(mode.String(), func(t *testing.T) {
			spoolFS := vfs.NewMem()
			queueFS := vfs.NewMem()
			q := memQueue(t, queueFS, producerQueueOptions)
			defer q.Close()
			p := newProducer(t, nil, testStrict(spoolFS))
			var sent []string
			for i := 0; i < 30; i++ { // several spool segments
				id := fmt.Sprintf("a%02d", i)
				require.Equal(t, Spooled, produce(t, p, id).Outcome)
				sent = append(sent, id)
			}
			p.Attach(q)
			flush(t, p) // confirmed, and the progress durable: must not come back
			rng := rand.New(rand.NewPCG(1, uint64(mode)))
			spoolFS.Crash(mode, rng)
			_ = p.Close() // the spool's handles are dead

			p = newProducer(t, nil, testStrict(spoolFS))
			require.Zero(t, p.Spooled(), "a Flush's progress survives a power loss")
			for i := 0; i < 30; i++ {
				id := fmt.Sprintf("b%02d", i)
				require.Equal(t, Spooled, produce(t, p, id).Outcome)
				sent = append(sent, id)
			}

			spoolFS.Crash(mode, rng)
			_ = p.Close()

			p = newProducer(t, nil, testStrict(spoolFS))
			defer p.Close()
			require.Equal(t, 30, p.Spooled(), "every spooled message survived, and the confirmed ones are not spooled")
			p.Attach(q)
			flush(t, p)
			requireSentInOrder(t, q, sent, 1)
		})
	}
}

// TestSpoolCrashAtEveryOperation stops the spool's disk after every single
// I/O operation of a workload (spool, drain to a queue, spool again), then
// simulates a power loss in each mode: a producer opened on the spool replays
// every message that Send reported Spooled, in order.
func TestSpoolCrashAtEveryOperation(t *testing.T) {
	workload := func(t *testing.T, spoolFS *vfs.MemFS, q *Queue) (spooled []string, attempted []string) {
		p, err := NewProducer(nil, testStrict(spoolFS))
		if err != nil {
			return nil, nil
		}
		defer p.Close()
		send := func(prefix string, n int) {
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("%s%02d", prefix, i)
				attempted = append(attempted, id)
				res, err := p.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)[:64]})
				if err == nil {
					require.Equal(t, Spooled, res.Outcome)
					spooled = append(spooled, id)
				}
			}
		}
		send("a", 12)
		p.Attach(q)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = p.Flush(ctx) // fails once the disk is "dead"
		cancel()
		p.Attach(nil)
		send("b", 12)
		return spooled, attempted
	}

	// Count the operations of a full run first.
	spoolFS := vfs.NewMem()
	q := memQueue(t, vfs.NewMem(), producerQueueOptions)
	spooled, _ := workload(t, spoolFS, q)
	require.Len(t, spooled, 24)
	require.NoError(t, q.Close())
	total := spoolFS.OpCount()

	rng := rand.New(rand.NewPCG(9, 4))
	for limit := 0; limit <= total; limit++ {
		for _, mode := range vfs.CrashModes {
			label := fmt.Sprintf("crash after op %d/%d, %v", limit, total, mode)
			spoolFS := vfs.NewMem()
			spoolFS.SetOpLimit(limit)
			q := memQueue(t, vfs.NewMem(), producerQueueOptions)
			spooled, attempted := workload(t, spoolFS, q)
			spoolFS.Crash(mode, rng)

			p, err := NewProducer(q, testStrict(spoolFS))
			require.NoError(t, err, label)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			require.NoError(t, p.Flush(ctx), label)
			cancel()
			require.NoError(t, p.Close(), label)

			order, _ := firstOccurrences(t, q)
			pos := map[string]int{}
			for i, id := range order {
				pos[id] = i
			}
			for _, id := range spooled {
				_, ok := pos[id]
				require.True(t, ok, "%s: Spooled message %s lost", label, id)
			}
			last := -1
			for _, id := range attempted { // unconfirmed ones may be there too, in order
				if i, ok := pos[id]; ok {
					require.Greater(t, i, last, "%s: %s out of order", label, id)
					last = i
				}
			}
			require.Len(t, order, len(pos))
			for _, id := range order {
				require.Contains(t, attempted, id, "%s: phantom message", label)
			}
			require.NoError(t, q.Close(), label)
		}
	}
	t.Logf("%d crash points", (total+1)*len(vfs.CrashModes))
}

// produceChild runs a strict producer with no queue (the queue is down) on
// DIR/spool from 4 goroutines, printing "spooled ID" after every Spooled
// outcome, until it is killed.
func produceChild(dir string) {
	p, err := NewProducer(nil, &ProducerOptions{Strict: true, SpoolDir: filepath.Join(dir, "spool"),
		MaxMessageSize: 4 << 10, spoolSegmentSize: 256 << 10})
	if err != nil {
		fmt.Fprintln(os.Stdout, "producer-error", err)
		os.Exit(3)
	}
	run := os.Getenv(killChildDir + "_RUN")
	var out sync.Mutex
	for g := 0; g < 4; g++ {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%s-g%d-%d", run, g, i)
				res, err := p.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)})
				if err != nil || res.Outcome != Spooled {
					fmt.Fprintln(os.Stdout, "unexpected", id, res.Outcome, err)
					continue
				}
				out.Lock()
				os.Stdout.WriteString("spooled " + id + "\n") // one write(2) per line
				out.Unlock()
			}
		}()
	}
	select {}
}

// TestKillNineLosesNoSpooledMessage kills a strict producer whose queue is
// down at a random moment, 6 times on the same spool, and checks after each
// kill that a producer opened on the spool delivers every message the child
// saw Spooled for to the queue, once, in each goroutine's order.
func TestKillNineLosesNoSpooledMessage(t *testing.T) {
	runs := 6
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(4, 2))
	printed := map[string]bool{}
	for run := 0; run < runs; run++ {
		killAfter := 20 + rng.IntN(300)
		killChildAfter(t, dir, "produce", strconv.Itoa(run), killAfter, nil, func(f []string) bool {
			if len(f) > 0 && (f[0] == "unexpected" || f[0] == "producer-error") {
				t.Fatalf("run %d: child: %s", run, strings.Join(f, " "))
			}
			if len(f) != 2 || f[0] != "spooled" {
				return false
			}
			require.False(t, printed[f[1]], "%s spooled twice", f[1])
			printed[f[1]] = true
			return true
		})

		// The queue is back: a new producer on the same spool drains it.
		q := openQueue(t, filepath.Join(dir, "q"), &Options{SegmentSize: 256 << 10, MaxMessageSize: 4 << 10})
		p, err := NewProducer(nil, &ProducerOptions{Strict: true, SpoolDir: filepath.Join(dir, "spool"),
			MaxMessageSize: 4 << 10, spoolSegmentSize: 256 << 10})
		require.NoError(t, err)
		require.GreaterOrEqual(t, p.Spooled(), killAfter, "run %d: spool holds at least what was printed", run)
		p.Attach(q)
		flush(t, p)
		require.NoError(t, p.Close())

		order, count := firstOccurrences(t, q)
		for id := range printed {
			require.Equal(t, 1, count[id], "run %d: Spooled message %s must be in the queue once", run, id)
		}
		for id, n := range count {
			require.Equal(t, 1, n, "run %d: %s duplicated", run, id)
		}
		next := map[string]int{} // per run and goroutine: the next index expected at least
		for _, id := range order {
			k := strings.LastIndexByte(id, '-')
			i, err := strconv.Atoi(id[k+1:])
			require.NoError(t, err, id)
			require.GreaterOrEqual(t, i, next[id[:k]], "run %d: %s out of its goroutine's order", run, id)
			next[id[:k]] = i + 1
		}
		require.NoError(t, q.Close())
	}
	assert.Greater(t, len(printed), runs*20)
}

func TestProducerOptionsNameTheField(t *testing.T) {
	tests := []struct {
		field string
		opts  ProducerOptions
	}{
		{"SpoolDir", ProducerOptions{Strict: true}},
		{"SpoolDir", ProducerOptions{SpoolDir: "/spool"}},
		{"Attempts", ProducerOptions{Attempts: -1}},
		{"Backoff", ProducerOptions{Backoff: -time.Second}},
		{"MaxBackoff", ProducerOptions{MaxBackoff: -time.Second}},
		{"MaxBackoff", ProducerOptions{Backoff: time.Second, MaxBackoff: time.Millisecond}},
		{"ResendInterval", ProducerOptions{ResendInterval: -time.Second}},
		{"MaxSpoolBytes", ProducerOptions{MaxSpoolBytes: -1}},
		{"MaxMessageSize", ProducerOptions{MaxMessageSize: -1}},
		{"MaxMessageSize", ProducerOptions{MaxMessageSize: 10}},
	}
	for _, tt := range tests {
		o := tt.opts
		o.fs = vfs.NewMem()
		_, err := NewProducer(nil, &o)
		require.ErrorIs(t, err, ErrInvalidOptions, "%+v", tt.opts)
		require.ErrorContains(t, err, tt.field)
	}
	p, err := NewProducer(nil, nil)
	require.NoError(t, err, "nil options: a non-strict producer")
	_, err = p.Send(context.Background(), &Message{Body: []byte("x")})
	require.ErrorIs(t, err, ErrClosed, "non-strict, no queue: an error, nothing spooled")
	require.NoError(t, p.Close())
}

// TestProducerRefusesBadMessages: a message that can never be sent is
// returned as an error, never spooled.
func TestProducerRefusesBadMessages(t *testing.T) {
	mem := vfs.NewMem()
	q := memQueue(t, mem, producerQueueOptions) // MaxMessageSize 1024
	defer q.Close()
	p := newProducer(t, q, testStrict(vfs.NewMem(), func(o *ProducerOptions) { o.MaxMessageSize = 2048 }))
	defer p.Close()

	big := &Message{ID: "big", Body: make([]byte, 1500)}
	res, err := p.Send(context.Background(), big)
	require.ErrorIs(t, err, ErrMessageTooLarge, "above the queue's limit")
	require.Equal(t, Failed, res.Outcome)
	_, err = p.Send(context.Background(), nil)
	require.ErrorIs(t, err, ErrInvalidMessage)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = p.Send(ctx, &Message{ID: "cancelled", Body: []byte("x")})
	require.ErrorIs(t, err, context.Canceled, "a context ended before anything happened is returned")

	p.Attach(nil)
	_, err = p.Send(context.Background(), &Message{ID: "huge", Body: make([]byte, 3000)})
	require.ErrorIs(t, err, ErrMessageTooLarge, "above the producer's limit, with no queue")
	require.Zero(t, p.Spooled(), "nothing was spooled")
	p.Attach(q)
	require.Empty(t, readBack(t, q))

	// A spooled message the attached queue refuses as too large stops the
	// drain, visibly, and is not dropped.
	p.Attach(nil)
	res = produce(t, p, "fits-producer")
	require.Equal(t, Spooled, res.Outcome)
	_, err = p.Send(context.Background(), &Message{ID: "big-spooled", Body: make([]byte, 1500)})
	require.NoError(t, err)
	p.Attach(q)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = p.Flush(ctx)
	require.ErrorIs(t, err, ErrMessageTooLarge)
	require.ErrorContains(t, err, "big-spooled")
	require.Equal(t, 1, p.Spooled(), "the refused message stays in the spool")
	require.NoError(t, p.Close())
	p = newProducer(t, nil, testStrict(p.opts.fs, func(o *ProducerOptions) { o.MaxMessageSize = 2048 }))
	require.Equal(t, 1, p.Spooled(), "and survives a restart")
	require.NoError(t, p.Close())
}

// TestSpoolFullAndSpoolFailures: a full spool and a failed spool fdatasync are
// errors, never a Spooled outcome.
func TestSpoolFullAndSpoolFailures(t *testing.T) {
	p := newProducer(t, nil, testStrict(vfs.NewMem(), func(o *ProducerOptions) { o.MaxSpoolBytes = 1000 }))
	var n int
	var err error
	for ; n < 100; n++ {
		var res ProduceResult
		res, err = p.Send(context.Background(), &Message{ID: fmt.Sprint("m", n), Body: make([]byte, 100)})
		if err != nil {
			require.Equal(t, Failed, res.Outcome)
			break
		}
		require.Equal(t, Spooled, res.Outcome)
	}
	require.ErrorIs(t, err, ErrSpoolFull)
	frame := frameSize(&record.Message{ID: "m1", Body: make([]byte, 100)})
	require.Equal(t, 1000/frame, n, "spooled up to MaxSpoolBytes, not beyond")
	require.Equal(t, n, p.Spooled())
	require.NoError(t, p.Close())
	p = newProducer(t, nil, testStrict(p.opts.fs))
	require.Equal(t, n, p.Spooled(), "the refused message is not in the spool")
	require.NoError(t, p.Close())

	fault := vfs.NewFault(vfs.NewMem())
	p = newProducer(t, nil, testStrict(fault))
	require.Equal(t, Spooled, produce(t, p, "ok").Outcome)
	fault.FailNth(vfs.OpSync, 1, errInjected)
	res, err := p.Send(context.Background(), &Message{ID: "lost-sync", Body: []byte("x")})
	require.ErrorIs(t, err, errInjected, "a spool whose fdatasync failed does not report Spooled")
	require.Equal(t, Failed, res.Outcome)
	_, err = p.Send(context.Background(), &Message{ID: "later", Body: []byte("x")})
	require.ErrorIs(t, err, ErrPoisoned, "the spool never retries a failed fdatasync")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	require.ErrorIs(t, p.Flush(ctx), ErrPoisoned)
	require.Error(t, p.Close())
}

// TestProducerCloseKeepsSpool: Close with messages spooled leaves them in the
// spool, also one whose Send was waiting to retry; a new producer on the
// spool replays them. Nothing keeps running after Close.
func TestProducerCloseKeepsSpool(t *testing.T) {
	before := runtime.NumGoroutine()
	spoolFS := vfs.NewMem()
	mem := vfs.NewMem()
	fault := vfs.NewFault(mem)
	q := memQueue(t, fault, producerQueueOptions)
	p := newProducer(t, q, testStrict(spoolFS, func(o *ProducerOptions) {
		o.Attempts = 5
		o.Backoff = time.Hour // a Send that must retry waits until Close
	}))
	sent := []string{}
	for i := 0; i < 3; i++ {
		id := fmt.Sprint("sent-", i)
		require.Equal(t, Sent, produce(t, p, id).Outcome)
		sent = append(sent, id)
	}
	fault.SetDiskFull(true)
	// Fill the queue's active segment directly, so the producer's next Send
	// meets ErrDiskFull and waits to retry.
	for i := 0; ; i++ {
		require.Less(t, i, 1000, "the segment must fill up")
		id := fmt.Sprint("filler-", i) // distinct IDs: dedup would append nothing
		_, err := q.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)[:1]})
		if err != nil {
			require.ErrorIs(t, err, ErrDiskFull)
			break
		}
	}
	done := make(chan ProduceResult)
	go func() {
		res, err := p.Send(context.Background(), &Message{ID: "retrying", Body: bodyFor("retrying")[:64]})
		assert.NoError(t, err)
		done <- res
	}()
	time.Sleep(20 * time.Millisecond) // in its backoff (1h)
	require.NoError(t, p.Close())
	res := <-done
	require.Equal(t, Spooled, res.Outcome, "Close spools a Send waiting to retry")
	require.ErrorIs(t, res.Cause, ErrDiskFull)
	sent = append(sent, "retrying")
	_, err := p.Send(context.Background(), &Message{Body: []byte("x")})
	require.ErrorIs(t, err, ErrClosed, "Send after Close")
	require.NoError(t, p.Close(), "Close is idempotent")

	p = newProducer(t, nil, testStrict(spoolFS))
	require.Equal(t, 1, p.Spooled(), "the spool outlived the producer")
	for i := 0; i < 4; i++ {
		id := fmt.Sprint("spooled-", i)
		require.Equal(t, Spooled, produce(t, p, id).Outcome)
		sent = append(sent, id)
	}
	require.NoError(t, p.Close())

	fault.SetDiskFull(false)
	p = newProducer(t, nil, testStrict(spoolFS)) // attached below: it would start draining at once
	require.Equal(t, 5, p.Spooled())
	p.Attach(q)
	flush(t, p)
	require.NoError(t, p.Close())
	order, count := firstOccurrences(t, q)
	var got []string
	for _, id := range order {
		if !strings.HasPrefix(id, "filler-") {
			got = append(got, id)
			require.Equal(t, 1, count[id], id)
		}
	}
	require.Equal(t, sent, got)
	require.NoError(t, q.Close())
	// Poll here: Eventually would run its condition on a goroutine of its own.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("Close must stop every goroutine: %d before, %d now:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// TestProducerCloseWaitsForSendsInProgress: Close waits for a strict Send
// stuck in the queue (a hung fdatasync), which then spools its message at
// once instead of retrying; the spool is closed only after that.
func TestProducerCloseWaitsForSendsInProgress(t *testing.T) {
	fs := &slowSyncFS{FS: vfs.NewMem(), armed: make(chan struct{}), release: make(chan struct{})}
	o := producerQueueOptions
	o.FlushTimeout = 100 * time.Millisecond
	q := memQueue(t, fs, o)
	spoolFS := vfs.NewMem()
	p := newProducer(t, q, testStrict(spoolFS, func(o *ProducerOptions) { o.Attempts, o.Backoff = 3, time.Hour }))
	require.Equal(t, Sent, produce(t, p, "warm").Outcome)

	close(fs.armed) // fdatasync hangs
	type result struct {
		res ProduceResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := p.Send(context.Background(), &Message{ID: "stuck", Body: bodyFor("stuck")[:64]})
		done <- result{res, err}
	}()
	time.Sleep(20 * time.Millisecond) // in the queue, waiting for its fdatasync
	require.NoError(t, p.Close())
	r := <-done
	require.NoError(t, r.err, "the spool was still open for it")
	require.Equal(t, Spooled, r.res.Outcome)
	require.ErrorContains(t, r.res.Cause, "FlushDiskTimeout")

	close(fs.release)
	require.NoError(t, q.Close())
	p = newProducer(t, nil, testStrict(spoolFS))
	require.Equal(t, 1, p.Spooled())
	require.NoError(t, p.Close())
}

// TestStrictProducerContextEnds: a Send whose context ends before the queue
// took its message returns the context's error and spools nothing; one whose
// context ends after its message was appended, unconfirmed, spools it.
func TestStrictProducerContextEnds(t *testing.T) {
	hungQueue := func(t *testing.T, maxPending int) (*slowSyncFS, *Queue) {
		fs := &slowSyncFS{FS: vfs.NewMem(), armed: make(chan struct{}), release: make(chan struct{})}
		o := producerQueueOptions
		o.FlushTimeout = time.Hour
		o.MaxPending = maxPending
		q := memQueue(t, fs, o)
		_, err := q.Send(context.Background(), &Message{ID: "warm", Body: bodyFor("warm")[:64]})
		require.NoError(t, err)
		close(fs.armed) // fdatasync hangs
		return fs, q
	}
	t.Run("never taken", func(t *testing.T) {
		fs, q := hungQueue(t, 1)
		warm := q.log.LastSeq()
		blocked := make(chan error, 1)
		go func() { // holds the queue's only pending slot while its fdatasync hangs
			_, err := q.Send(context.Background(), &Message{ID: "blocker", Body: bodyFor("blocker")[:64]})
			blocked <- err
		}()
		require.Eventually(t, func() bool { return q.log.LastSeq() > warm }, 5*time.Second, time.Millisecond,
			"the blocker is written; it waits for its fdatasync")
		p := newProducer(t, q, testStrict(vfs.NewMem()))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		res, err := p.Send(ctx, &Message{ID: "never-taken", Body: bodyFor("never-taken")[:64]})
		require.ErrorIs(t, err, context.DeadlineExceeded, "nothing was appended: the caller's decision stands; got %+v", res)
		require.Equal(t, Failed, res.Outcome)
		require.Zero(t, p.Spooled())
		require.NoError(t, p.Close())
		close(fs.release)
		require.NoError(t, <-blocked)
		require.NoError(t, q.Close())
	})
	t.Run("appended", func(t *testing.T) {
		fs, q := hungQueue(t, 0)
		p := newProducer(t, q, testStrict(vfs.NewMem()))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		res, err := p.Send(ctx, &Message{ID: "appended", Body: bodyFor("appended")[:64]})
		require.NoError(t, err)
		require.Equal(t, Spooled, res.Outcome, "appended without confirmation: spooled although ctx ended")
		require.ErrorContains(t, res.Cause, "WaitCanceled", "the caller gave up: not a disk timeout")
		require.Equal(t, 1, p.Spooled())
		close(fs.release)
		flush(t, p)
		require.NoError(t, p.Close())
		require.NoError(t, q.Close())
	})
}

// TestStrictProducerConcurrentSendsWhileQueueRestarts: 4 goroutines send while
// the queue is closed and reopened 8 times; every message Sent or Spooled ends
// up in the queue once, in each goroutine's order.
func TestStrictProducerConcurrentSendsWhileQueueRestarts(t *testing.T) {
	mem := vfs.NewMem()
	q := memQueue(t, mem, producerQueueOptions)
	p := newProducer(t, q, testStrict(vfs.NewMem(), func(o *ProducerOptions) { o.spoolSegmentSize = 64 << 10 }))
	const senders = 4
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var sentCount, spooledCount atomic.Int64
	sentBy := make([]int, senders)
	for g := 0; g < senders; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					sentBy[g] = i
					return
				default:
				}
				id := fmt.Sprintf("g%d-%05d", g, i)
				res, err := p.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)[:64]})
				if !assert.NoError(t, err) {
					sentBy[g] = i
					return
				}
				switch res.Outcome {
				case Sent:
					sentCount.Add(1)
				case Spooled:
					spooledCount.Add(1)
				}
			}
		}()
	}
	for r := 0; r < 8; r++ {
		time.Sleep(time.Duration(5+r*3) * time.Millisecond)
		require.NoError(t, q.Close())
		time.Sleep(5 * time.Millisecond)
		q = memQueue(t, mem, producerQueueOptions)
		p.Attach(q)
	}
	time.Sleep(10 * time.Millisecond)
	close(stop)
	wg.Wait()
	flush(t, p)
	require.NoError(t, p.Close())
	defer q.Close()
	t.Logf("sent %d, spooled %d", sentCount.Load(), spooledCount.Load())
	require.NotZero(t, sentCount.Load())
	require.NotZero(t, spooledCount.Load())

	order, count := firstOccurrences(t, q)
	total := 0
	for _, n := range sentBy {
		total += n
	}
	require.Equal(t, int64(total), sentCount.Load()+spooledCount.Load())
	require.Len(t, order, total, "every message is in the queue")
	next := map[string]int{}
	for _, id := range order {
		require.Equal(t, 1, count[id], "%s once", id)
		g, i, _ := strings.Cut(id, "-")
		n, err := strconv.Atoi(i)
		require.NoError(t, err)
		require.Equal(t, next[g], n, "%s in its goroutine's order", id)
		next[g] = n + 1
	}
}

func TestOutcomeString(t *testing.T) {
	assert.Equal(t, "Failed", Failed.String())
	assert.Equal(t, "Sent", Sent.String())
	assert.Equal(t, "Spooled", Spooled.String())
	assert.Equal(t, "Outcome(7)", Outcome(7).String())
	assert.True(t, errors.Is(errQueueDetached, ErrClosed))
}

// Flush returns nil only once the spool's progress record is durable: when
// the record cannot be written (a full disk, a failed fdatasync) Flush says
// so, and a later Flush writes it if the spool still can. After a nil Flush
// the progress survives a power loss.
func TestFlushReturnsOnlyOnceTheProgressIsDurable(t *testing.T) {
	// Two messages fill the spool's first segment but for less than a
	// progress record, so that the progress record must start a new segment.
	progress := record.HeaderSize + len(record.AppendAck(nil, &record.Ack{Floor: 3, Mark: 3}))
	half := (2048 - progress + 1) / 2
	message := func(id string, fill bool) *Message {
		m := &Message{ID: id, Body: []byte("x")}
		for fill && frameSize(&record.Message{ID: id, Body: m.Body}) < half {
			m.Body = append(m.Body, 'x')
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		fill   bool // the progress record starts a new segment
		fail   func(*vfs.FaultFS)
		want   error
		heals  func(*vfs.FaultFS)
		reopen int // messages spooled after the power loss
	}{
		{name: "disk full at the progress record's segment", fill: true, fail: func(f *vfs.FaultFS) { f.SetDiskFull(true) },
			want: ErrDiskFull, heals: func(f *vfs.FaultFS) { f.SetDiskFull(false) }},
		{name: "failed fdatasync of the progress record", fail: func(f *vfs.FaultFS) { f.FailNth(vfs.OpSync, 1, errInjected) },
			want: errInjected, reopen: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			fault := vfs.NewFault(mem)
			q := memQueue(t, vfs.NewMem(), producerQueueOptions)
			defer q.Close()
			p := newProducer(t, nil, testStrict(fault))
			// Bind the spool to q (its IDENTITY names q) before the fault,
			// so that the Attach below writes nothing but the progress.
			p.Attach(q)
			p.Attach(nil)
			for _, id := range []string{"m0", "m1"} {
				res, err := p.Send(context.Background(), message(id, tc.fill))
				require.NoError(t, err)
				require.Equal(t, Spooled, res.Outcome)
			}
			tc.fail(fault)
			p.Attach(q)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := p.Flush(ctx)
			require.ErrorIs(t, err, tc.want, "the progress record was not written")
			require.Zero(t, p.Spooled(), "the queue has both messages")
			if tc.heals != nil {
				tc.heals(fault)
				require.NoError(t, p.Flush(ctx), "the progress record is written now")
			}
			mem.Crash(vfs.DropUnsynced, nil)
			_ = p.Close()

			p = newProducer(t, nil, testStrict(mem))
			defer p.Close()
			require.Equal(t, tc.reopen, p.Spooled(), "what a nil Flush confirmed is not spooled again")
			p.Attach(q)
			flush(t, p)
			var ids []string
			for _, s := range readBack(t, q) {
				ids = append(ids, s.Msg.ID)
			}
			require.Equal(t, []string{"m0", "m1"}, ids, "resends are deduplicated")
		})
	}
}
