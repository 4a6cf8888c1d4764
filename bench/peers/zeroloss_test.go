package peers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// BenchmarkZeroloss runs the peers' workloads on zeroloss itself through its
// public API, so the peers read against it in the same run:
//
//	flush=sync   Send returns SendOK after an fdatasync (group commit)
//	flush=async  Send returns SendOK after write(2); background flush
//
// op=consume+ack is one Consumer doing Receive then Delivery.Ack, one
// message at a time (bench/'s BenchmarkConsume consumers=1 ack=single).
func BenchmarkZeroloss(b *testing.B) {
	runPeer(b, zerolossConfigs())
}

func zerolossConfigs() []config {
	var cs []config
	for _, flush := range []zeroloss.FlushMode{zeroloss.FlushSync, zeroloss.FlushAsync} {
		cs = append(cs, config{
			name: "flush=" + flush.String(),
			open: func(_ testing.TB, dir string) (store, error) { return openZeroloss(dir, flush) },
		})
	}
	return cs
}

type zerolossStore struct {
	dir   string
	flush zeroloss.FlushMode
	q     *zeroloss.Queue
	c     *zeroloss.Consumer // created by the first Consume
}

const zerolossGroup = "bench"

func openZeroloss(dir string, flush zeroloss.FlushMode) (*zerolossStore, error) {
	q, err := zeroloss.Open(dir, &zeroloss.Options{Flush: flush})
	if err != nil {
		return nil, err
	}
	return &zerolossStore{dir: dir, flush: flush, q: q}, nil
}

func (s *zerolossStore) Send(ctx context.Context, body []byte) error {
	res, err := s.q.Send(ctx, &zeroloss.Message{Body: body})
	if err != nil {
		return err
	}
	if res.Status != zeroloss.SendOK {
		return fmt.Errorf("status %v, want SendOK", res.Status)
	}
	return nil
}

func (s *zerolossStore) Fill(ctx context.Context, body []byte, n int) error {
	const chunk = 256
	msgs := make([]*zeroloss.Message, 0, chunk)
	for done := 0; done < n; done += len(msgs) {
		msgs = msgs[:0]
		for range min(chunk, n-done) {
			msgs = append(msgs, &zeroloss.Message{Body: body})
		}
		res, err := s.q.SendBatch(ctx, msgs)
		if err != nil {
			return err
		}
		for _, r := range res {
			if r.Status != zeroloss.SendOK {
				return fmt.Errorf("status %v, want SendOK", r.Status)
			}
		}
	}
	// Consumers get only committed messages; under FlushAsync that is after
	// the next background flush (FlushInterval, 500ms by default). Wait for
	// it here, so the timed Consume does not start with that wait.
	for deadline := time.Now().Add(10 * time.Second); ; {
		st := s.q.Stats()
		if st.CommittedSeq >= st.LastSeq {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("committed seq %d, last seq %d after 10s", st.CommittedSeq, st.LastSeq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *zerolossStore) consumer() (*zeroloss.Consumer, error) {
	if s.c == nil {
		c, err := s.q.Consumer(zerolossGroup, &zeroloss.ConsumerOptions{AckTimeout: time.Hour})
		if err != nil {
			return nil, err
		}
		s.c = c
	}
	return s.c, nil
}

// Consume is ConsumeConcurrently with one consumer.
func (s *zerolossStore) Consume(ctx context.Context, n, size int) error {
	return s.ConsumeConcurrently(ctx, n, size, 1)
}

// Held: before any Consume, the queue is closed, the message records of its
// log are counted (the log also holds records of other types, such as one
// epoch record per Open), and the queue is reopened. After a Consume, it is
// what the group still has in flight or waiting, plus one if a Receive
// finds a message within 100ms.
func (s *zerolossStore) Held(ctx context.Context) (int, error) {
	if s.c == nil {
		if err := s.q.Close(); err != nil {
			return 0, err
		}
		messages := 0
		_, err := wal.ReadDurable(s.dir, wal.Options{}, func(r record.Record) error {
			if r.Type == record.TypeMessage {
				messages++
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		q, err := zeroloss.Open(s.dir, &zeroloss.Options{Flush: s.flush})
		if err != nil {
			return 0, err
		}
		s.q = q
		return messages, nil
	}
	held := 0
	for _, g := range s.q.GroupStats() {
		if g.Group == zerolossGroup {
			held += g.InFlight + g.Waiting + g.DeadLetters
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.c.Receive(ctx); err == nil {
		held++
	} else if !errors.Is(err, context.DeadlineExceeded) {
		return 0, err
	}
	return held, nil
}

func (s *zerolossStore) Close() error { return s.q.Close() }
