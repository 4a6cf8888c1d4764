package zeroloss

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// orderedKeys is how many keys the ordered kill test's messages spread over.
const orderedKeys = 100

// orderedKillOptions are the child's and the drain's consumer options: a
// short backoff, since the handlers fail on purpose.
func orderedKillOptions() *ConsumerOptions {
	return &ConsumerOptions{Ordered: true, Concurrency: 8, AckTimeout: time.Minute, Backoff: []time.Duration{20 * time.Millisecond}}
}

// orderedChild sends from 4 goroutines (keys in runs of 3) and consumes
// group "g" with Ordered and Concurrency 8 under FlushSync, until it is
// killed. It prints "ok ID SEQ" for every SendOK, "handle SEQ KEY" when a
// handler starts and "done ID" when a handler succeeds (before its Ack). A
// first delivery of every fifth seq fails.
func orderedChild(dir string) {
	q, err := Open(dir, &Options{Flush: FlushSync, SegmentSize: 256 << 10, MaxMessageSize: 4 << 10})
	if err != nil {
		fmt.Fprintln(os.Stdout, "open-error", err)
		os.Exit(3)
	}
	c, err := q.Consumer("g", orderedKillOptions())
	if err != nil {
		fmt.Fprintln(os.Stdout, "consumer-error", err)
		os.Exit(3)
	}
	run := os.Getenv(killChildDir + "_RUN")
	var out sync.Mutex
	say := func(line string) {
		out.Lock()
		os.Stdout.WriteString(line) // one write(2) per line: atomic on a pipe
		out.Unlock()
	}
	for g := 0; g < 4; g++ {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%s-g%d-%d", run, g, i)
				key := fmt.Sprintf("k%02d", (i/3+g*25)%orderedKeys)
				res, err := q.Send(context.Background(), &Message{ID: id, Key: key, Body: bodyFor(id)})
				if err == nil && res.Status == SendOK {
					say(fmt.Sprintf("ok %s %d\n", id, res.Seq))
				}
			}
		}()
	}
	_ = c.Consume(context.Background(), func(_ context.Context, d *Delivery) error {
		say(fmt.Sprintf("handle %d %s\n", d.Seq, d.Message.Key))
		if d.Attempt == 1 && d.Seq%5 == 0 {
			return fmt.Errorf("fails on purpose")
		}
		say("done " + d.Message.ID + "\n")
		return nil
	})
	os.Exit(0)
}

// orderChecker checks that per key the first handlings follow seq order,
// over every run.
type orderChecker struct {
	mu         sync.Mutex
	handled    map[uint64]bool
	last       map[string]uint64 // by key: the highest seq handled
	violations []string
}

func newOrderChecker() *orderChecker {
	return &orderChecker{handled: map[uint64]bool{}, last: map[string]uint64{}}
}

// handle notes a handling of seq, of key, starting.
func (o *orderChecker) handle(seq uint64, key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.handled[seq] {
		return
	}
	o.handled[seq] = true
	if last, ok := o.last[key]; ok && last > seq {
		o.violations = append(o.violations, fmt.Sprintf("key %s: seq %d first handled after seq %d", key, seq, last))
	}
	o.last[key] = max(o.last[key], seq)
}

// TestKillNineDuringOrderedConsumption kills a child that sends and consumes
// an ordered group at random moments, 20 times on one directory, then
// drains the group: no later message of a key is handled before an earlier
// one was handled once, and every SendOK message is handled successfully.
func TestKillNineDuringOrderedConsumption(t *testing.T) {
	runs := 20
	if testing.Short() {
		runs = 5
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(19, 20))
	order := newOrderChecker()
	sent := map[string]bool{}
	var mu sync.Mutex // done: the drain's handlers add to it
	done := map[string]bool{}
	for run := 0; run < runs; run++ {
		killAfter := 30 + rng.IntN(400) // handlings to see before the kill
		killChildAfter(t, dir, "ordered", strconv.Itoa(run), killAfter, nil, func(f []string) bool {
			switch {
			case len(f) == 3 && f[0] == "ok":
				sent[f[1]] = true
			case len(f) == 3 && f[0] == "handle":
				seq, err := strconv.ParseUint(f[1], 10, 64)
				require.NoError(t, err)
				order.handle(seq, f[2])
				return true
			case len(f) == 2 && f[0] == "done":
				done[f[1]] = true
			case len(f) >= 1 && strings.HasSuffix(f[0], "-error"):
				t.Fatalf("run %d: child: %s", run, strings.Join(f, " "))
			}
			return false
		})
	}

	// Drain: every SendOK message not handled successfully comes back.
	owed := map[string]bool{}
	for id := range sent {
		if !done[id] {
			owed[id] = true
		}
	}
	q := openQueue(t, dir, &Options{SegmentSize: 256 << 10, MaxMessageSize: 4 << 10})
	defer q.Close()
	c, err := q.Consumer("g", orderedKillOptions())
	require.NoError(t, err)
	drained := make(chan struct{})
	if len(owed) == 0 {
		close(drained)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	consumed := make(chan error, 1)
	go func() {
		consumed <- c.Consume(ctx, func(_ context.Context, d *Delivery) error {
			order.handle(d.Seq, d.Message.Key)
			mu.Lock()
			defer mu.Unlock()
			if owed[d.Message.ID] {
				delete(owed, d.Message.ID)
				if len(owed) == 0 {
					close(drained)
				}
			}
			return nil
		})
	}()
	select {
	case <-drained:
	case <-time.After(30 * time.Second):
		mu.Lock()
		n := len(owed)
		mu.Unlock()
		t.Fatalf("%d SendOK messages neither handled before the kills nor delivered again", n)
	}
	cancel()
	require.ErrorIs(t, <-consumed, context.Canceled)
	order.mu.Lock()
	defer order.mu.Unlock()
	assert.Empty(t, order.violations, "order violations")
	assert.Greater(t, len(order.handled), runs*30)
	t.Logf("%d runs, %d messages sent, %d handled", runs, len(sent), len(order.handled))
}
