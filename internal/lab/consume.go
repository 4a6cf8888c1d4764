package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss"
)

// The consumer-crash workload (--workload consume): the child sends as the
// produce workload does, and consumes in the same process, in the consumer
// group labGroup, with consumers goroutines. Handling a message means
// appending "ID HASH SEQ\n" (HASH: the hex SHA-256 of the body received; SEQ
// its seq) to the processed file next to the queue and fsyncing it. The file
// is written by one handler at a time, as a handler that updates a local
// store would, so its lines are in the order of the handlings. With
// ack=ordered the messages carry one of orderedKeys keys (labKey) and the
// group is Ordered, consumed by Consume with orderedConcurrency handlers.
const (
	labGroup      = "lab"
	processedFile = "processed"
	consumers     = 4
	// consumeWindow bounds the messages the child has sent and not yet
	// handled: the producers wait for the consumers, so the group's backlog
	// (what the parent drains after the kill) stays small.
	consumeWindow = 128
	// drainTimeout bounds the parent's drain of the group after the kill.
	drainTimeout = 60 * time.Second
	// drainBatch is how many messages the drain receives, handles, then
	// acks with one record.
	drainBatch = 256
	// orderedKeys and orderedConcurrency shape the ack=ordered workload.
	orderedKeys        = 100
	orderedConcurrency = 8
	// orderedBackoff is the ack=ordered group's backoff: the child fails
	// the first delivery of one message in orderedFailEvery on purpose, so
	// that retries are under way while the later messages of their keys
	// wait.
	orderedBackoff   = 10 * time.Millisecond
	orderedFailEvery = 4
)

// labKey is the key of the message id in the ack=ordered workload.
func labKey(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	return fmt.Sprintf("k%02d", h.Sum32()%orderedKeys)
}

// consumerOptions are the options of labGroup's consumers under mode, in
// the child and in the drain.
func consumerOptions(mode AckMode) *zeroloss.ConsumerOptions {
	if mode != AckOrdered {
		return nil
	}
	return &zeroloss.ConsumerOptions{Ordered: true, Concurrency: orderedConcurrency, Backoff: []time.Duration{orderedBackoff}}
}

// processedLog is a consumer's record of the messages it handled.
type processedLog struct {
	mu  sync.Mutex
	f   *os.File
	buf []byte
}

func openProcessed(path string) (*processedLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &processedLog{f: f}, nil
}

// skipHandling, when set (by the tests, to plant a fault), makes handle
// return without handling the messages it picks.
var skipHandling func(id string) bool

// handle handles m, at seq: one line, written and fsynced before handle
// returns.
func (p *processedLog) handle(m *zeroloss.Message, seq uint64) error {
	if skipHandling != nil && skipHandling(m.ID) {
		return nil
	}
	sum := sha256.Sum256(m.Body)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(append(append(p.buf[:0], m.ID...), ' '), hex.EncodeToString(sum[:])...)
	p.buf = append(strconv.AppendUint(append(p.buf, ' '), seq, 10), '\n')
	if _, err := p.f.Write(p.buf); err != nil {
		return fmt.Errorf("handling %s: %w", m.ID, err)
	}
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("handling %s: %w", m.ID, err)
	}
	return nil
}

func (p *processedLog) Close() error { return p.f.Close() }

// consumeChild starts the consume workload on q: producers goroutines that
// send (and print an ack per SendOK) while fewer than consumeWindow of their
// messages wait to be handled, and consumers goroutines that receive in
// labGroup and ack as mode says. Errors of the goroutines go to failed.
func consumeChild(q *zeroloss.Queue, runDir string, mode AckMode, run int, acks *ackWriter, failed chan<- error) error {
	proc, err := openProcessed(filepath.Join(runDir, processedFile))
	if err != nil {
		return err
	}
	c, err := q.Consumer(labGroup, consumerOptions(mode))
	if err != nil {
		return err
	}
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	slots := make(chan struct{}, consumeWindow)
	handled := func(m *zeroloss.Message, seq uint64) error {
		if err := proc.handle(m, seq); err != nil {
			return err
		}
		<-slots
		return nil
	}
	for p := range producers {
		go func() {
			for i := 0; ; i++ {
				slots <- struct{}{}
				id := messageID(run, p, i)
				m := &zeroloss.Message{ID: id, Body: bodyFor(id)}
				if mode == AckOrdered {
					m.Key = labKey(id)
				}
				res, err := q.Send(context.Background(), m)
				if err != nil {
					fail(fmt.Errorf("send %s: %w", id, err))
					return
				}
				if res.Status == zeroloss.SendOK {
					if err := acks.ack(id, res.Seq); err != nil {
						fail(err)
						return
					}
				}
			}
		}()
	}
	if mode == AckOrdered {
		// Consume acks after the handler returns nil; a failed handling
		// ends the child's usefulness, as for the other modes.
		go func() {
			err := c.Consume(context.Background(), func(_ context.Context, d *zeroloss.Delivery) error {
				if d.Attempt == 1 && d.Seq%orderedFailEvery == 0 {
					return errors.New("fails its first delivery on purpose")
				}
				if err := handled(&d.Message, d.Seq); err != nil {
					fail(err)
					return err
				}
				return nil
			})
			fail(fmt.Errorf("consume: %w", err))
		}()
		return nil
	}
	for range consumers {
		go func() {
			for {
				d, err := c.Receive(context.Background())
				if err != nil {
					fail(fmt.Errorf("receive: %w", err))
					return
				}
				switch mode {
				case AckAfterHandling:
					if err := handled(&d.Message, d.Seq); err != nil {
						fail(err)
						return
					}
					if err := d.Ack(); err != nil {
						fail(fmt.Errorf("ack %s: %w", d.Message.ID, err))
						return
					}
				case AckOnReceive:
					// The anti-pattern: the ack is durable before the
					// handling starts, so a crash in between loses the
					// message.
					if err := d.Ack(); err != nil {
						fail(fmt.Errorf("ack %s: %w", d.Message.ID, err))
						return
					}
					go func() {
						if err := handled(&d.Message, d.Seq); err != nil {
							fail(err)
						}
					}()
				}
			}
		}()
	}
	return nil
}

// recoverConsumer is the parent's side of a consumer-crash run, after the
// kill: it opens the queue, drains labGroup, handling every message as the
// child would (then acking it), and counts twice (see the package comment).
func recoverConsumer(res *RunResult, runDir string, cfg Config, acked map[string]uint64) error {
	path := filepath.Join(runDir, processedFile)
	before, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	start := time.Now()
	q, err := zeroloss.Open(queueDir(runDir, workloadConsume), cfg.recoveryOptions())
	if err != nil {
		res.RecoveryTime = time.Since(start)
		res.RecoveryError = err.Error()
		res.Lost, res.CrossCheck.Lost = len(acked), len(acked)
		return nil
	}
	proc, err := openProcessed(path)
	if err != nil {
		q.Close()
		return err
	}
	var handlings []handling // what the drain handled, in order: the cross-check's
	drained, err := drain(q, cfg.Ack, func(d *zeroloss.Delivery) error {
		handlings = append(handlings, handling{id: d.Message.ID, seq: d.Seq})
		return proc.handle(&d.Message, d.Seq)
	})
	if cerr := q.Close(); err == nil {
		err = cerr
	}
	if cerr := proc.Close(); err == nil {
		err = cerr
	}
	res.RecoveryTime = time.Since(start)
	if err != nil {
		return fmt.Errorf("draining the group after the crash: %w", err)
	}
	after, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}

	// Main count: the processed file as it ends up, each line's hash
	// checked against the body its ID must have.
	found, bad := parseProcessed(after)
	res.Counts = crossCheck(acked, found, bad)
	if cfg.Ack == AckOrdered {
		res.Counts.OrderViolations = orderViolations(parseHandlings(after))
	}
	// Cross-check: what the child had handled when it died, plus what the
	// drain received, recorded in memory.
	found, bad = parseProcessed(before)
	for id, digests := range drained {
		found[id] = append(found[id], digests...)
	}
	res.CrossCheck = crossCheck(acked, found, bad)
	if cfg.Ack == AckOrdered {
		res.CrossCheck.OrderViolations = orderViolations(append(parseHandlings(before), handlings...))
	}
	return nil
}

// drain receives every message labGroup still owes (creating the group if
// it is new: it then starts at the oldest message), with the consumer
// options of mode, handles it (if handle is not nil) and acks it. It returns
// what it received: the digests of the bodies, by ID.
func drain(q *zeroloss.Queue, mode AckMode, handle func(*zeroloss.Delivery) error) (map[string][]digest, error) {
	got := map[string][]digest{}
	err := drainGroup(q, labGroup, consumerOptions(mode), true, func(d *zeroloss.Delivery) error {
		if handle != nil {
			if err := handle(d); err != nil {
				return err
			}
		}
		got[d.Message.ID] = append(got[d.Message.ID], sha256.Sum256(d.Message.Body))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return got, nil
}

// groupDone reports whether group holds no message waiting for a delivery,
// and no delivery in flight but the held ones the caller did not ack
// (called when a Receive found nothing to deliver).
func groupDone(q *zeroloss.Queue, group string, held int) bool {
	for _, st := range q.GroupStats() {
		if st.Group == group {
			return st.InFlight == held && st.Waiting == 0
		}
	}
	return false
}

// parseProcessed reads a processed file: for each ID, the digests its lines
// name. bad counts the complete lines that do not parse; a last line without
// its newline (a write cut short) is not a handling and is skipped. A line's
// seq (parseHandlings) is optional here.
func parseProcessed(data []byte) (found map[string][]digest, bad int) {
	found = map[string][]digest{}
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		line := data[:i]
		data = data[i+1:]
		id, sum, ok := bytes.Cut(line, []byte{' '})
		sum, _, _ = bytes.Cut(sum, []byte{' '})
		var d digest
		if !ok || len(id) == 0 || len(sum) != 2*len(d) {
			bad++
			continue
		}
		if _, err := hex.Decode(d[:], sum); err != nil {
			bad++
			continue
		}
		found[string(id)] = append(found[string(id)], d)
	}
	return found, bad
}

// handling is one line of a processed file: a message handled, in order.
type handling struct {
	id  string
	seq uint64
}

// parseHandlings reads the complete lines of a processed file that name a
// seq, in order (the lines that do not parse are counted by parseProcessed).
func parseHandlings(data []byte) []handling {
	var out []handling
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		fields := strings.Fields(string(data[:i]))
		data = data[i+1:]
		if len(fields) != 3 {
			continue
		}
		seq, err := strconv.ParseUint(fields[2], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, handling{id: fields[0], seq: seq})
	}
	return out
}

// orderViolations counts, in handlings in the order they happened, the
// first handlings of a message after a later message of its key (labKey)
// had been handled: a later message of a key handled before an earlier one
// was handled at least once.
func orderViolations(handlings []handling) int {
	n := 0
	done := map[uint64]bool{}
	last := map[string]uint64{} // by key: the highest seq handled
	for _, h := range handlings {
		if done[h.seq] {
			continue
		}
		done[h.seq] = true
		key := labKey(h.id)
		if l, ok := last[key]; ok && l > h.seq {
			n++
		}
		last[key] = max(last[key], h.seq)
	}
	return n
}
