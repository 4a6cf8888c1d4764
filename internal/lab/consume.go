package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss"
)

// The consumer-crash workload (--workload consume): the child sends as the
// produce workload does, and consumes in the same process, in the consumer
// group labGroup, with consumers goroutines. Handling a message means
// appending "ID HASH\n" (HASH: the hex SHA-256 of the body received) to the
// processed file next to the queue and fsyncing it. The file is written by
// one handler at a time, as a handler that updates a local store would.
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
)

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

// handle handles m: one line, written and fsynced before handle returns.
func (p *processedLog) handle(m *zeroloss.Message) error {
	if skipHandling != nil && skipHandling(m.ID) {
		return nil
	}
	sum := sha256.Sum256(m.Body)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(append(append(p.buf[:0], m.ID...), ' '), hex.EncodeToString(sum[:])...)
	p.buf = append(p.buf, '\n')
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
	c, err := q.Consumer(labGroup, nil)
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
	handled := func(m *zeroloss.Message) error {
		if err := proc.handle(m); err != nil {
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
				res, err := q.Send(context.Background(), &zeroloss.Message{ID: id, Body: bodyFor(id)})
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
					if err := handled(&d.Message); err != nil {
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
						if err := handled(&d.Message); err != nil {
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
	drained, err := drain(q, proc.handle)
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
	// Cross-check: what the child had handled when it died, plus what the
	// drain received, recorded in memory.
	found, bad = parseProcessed(before)
	for id, digests := range drained {
		found[id] = append(found[id], digests...)
	}
	res.CrossCheck = crossCheck(acked, found, bad)
	return nil
}

// drain receives every message labGroup still owes (creating the group if
// it is new: it then starts at the oldest message), handles it (if handle is
// not nil) and acks it. It returns what it received: the digests of the
// bodies, by ID.
func drain(q *zeroloss.Queue, handle func(*zeroloss.Message) error) (map[string][]digest, error) {
	got := map[string][]digest{}
	err := drainGroup(q, labGroup, nil, true, func(m *zeroloss.Message) error {
		if handle != nil {
			if err := handle(m); err != nil {
				return err
			}
		}
		got[m.ID] = append(got[m.ID], sha256.Sum256(m.Body))
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
// its newline (a write cut short) is not a handling and is skipped.
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
