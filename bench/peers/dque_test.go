package peers

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/joncrlsn/dque"
)

// BenchmarkDque runs github.com/joncrlsn/dque, a segmented on-disk FIFO of
// gob-encoded items that keeps its first and last segments in memory:
//
//	mode=safe   the default (turbo off): every Enqueue and Dequeue fsyncs
//	            its segment file before returning
//	mode=turbo  TurboOn: no fsync; the caller may call TurboSync
//
// Items are a struct holding the body, 1000 items per segment. The queue
// takes its own mutex around each call, so producers=16 is safe.
// op=consume+ack is Dequeue: it removes the item, there is no separate
// acknowledgement.
func BenchmarkDque(b *testing.B) {
	runPeer(b, dqueConfigs())
}

const dqueItemsPerSegment = 1000

func dqueConfigs() []config {
	var cs []config
	for _, turbo := range []bool{false, true} {
		mode := "safe"
		if turbo {
			mode = "turbo"
		}
		cs = append(cs, config{
			name: "mode=" + mode,
			open: func(_ testing.TB, dir string) (store, error) {
				s := &dqueStore{dir: dir, turbo: turbo}
				return s, s.open()
			},
		})
	}
	return cs
}

// dqueItem is what the benchmarks enqueue: dque gob-encodes it.
type dqueItem struct {
	Body []byte
}

func newDqueItem() any { return &dqueItem{} }

type dqueStore struct {
	dir   string
	turbo bool
	q     *dque.DQue
}

func (s *dqueStore) open() error {
	q, err := dque.NewOrOpen("bench", s.dir, dqueItemsPerSegment, newDqueItem)
	if err != nil {
		return err
	}
	if s.turbo {
		if err := q.TurboOn(); err != nil {
			q.Close()
			return err
		}
	}
	s.q = q
	return nil
}

func (s *dqueStore) Send(_ context.Context, body []byte) error {
	return s.q.Enqueue(&dqueItem{Body: body})
}

// Fill enqueues n items in turbo mode and then syncs (TurboOff, or
// TurboSync when the configuration is turbo).
func (s *dqueStore) Fill(_ context.Context, body []byte, n int) error {
	if !s.turbo {
		if err := s.q.TurboOn(); err != nil {
			return err
		}
	}
	for range n {
		if err := s.q.Enqueue(&dqueItem{Body: body}); err != nil {
			return err
		}
	}
	if s.turbo {
		return s.q.TurboSync()
	}
	return s.q.TurboOff()
}

func (s *dqueStore) Consume(_ context.Context, n, size int) error {
	for i := range n {
		v, err := s.q.Dequeue()
		if err != nil {
			return fmt.Errorf("dequeue %d of %d: %w", i+1, n, err)
		}
		item, ok := v.(*dqueItem)
		if !ok {
			return fmt.Errorf("dequeue %d of %d: got %T", i+1, n, v)
		}
		if err := checkBody(i, item.Body, size); err != nil {
			return err
		}
	}
	return nil
}

// Held closes the queue and reopens it: the size is then what dque loads
// back from its segment files.
func (s *dqueStore) Held(context.Context) (int, error) {
	if err := s.Close(); err != nil {
		return 0, err
	}
	if err := s.open(); err != nil {
		return 0, err
	}
	return s.q.Size(), nil
}

func (s *dqueStore) Close() error {
	if s.turbo {
		if err := s.q.TurboSync(); err != nil && !errors.Is(err, dque.ErrQueueClosed) {
			return err
		}
	}
	return s.q.Close()
}
