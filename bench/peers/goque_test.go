package peers

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/beeker1121/goque"
)

// BenchmarkGoque runs github.com/beeker1121/goque's Queue, a FIFO over
// LevelDB (github.com/syndtr/goleveldb) with one key per item. It opens
// LevelDB with default options and writes with nil WriteOptions, so an
// Enqueue is a journal write(2) without fsync; goque has no setting that
// changes this. The queue locks itself, so producers=16 is safe.
// op=consume+ack is Dequeue (Get then Delete): there is no separate
// acknowledgement.
func BenchmarkGoque(b *testing.B) {
	runPeer(b, goqueConfigs())
}

func goqueConfigs() []config {
	return []config{{
		name: "sync=none",
		open: func(_ testing.TB, dir string) (store, error) {
			s := &goqueStore{path: filepath.Join(dir, "goque")}
			return s, s.open()
		},
	}}
}

type goqueStore struct {
	path string
	q    *goque.Queue
}

func (s *goqueStore) open() error {
	q, err := goque.OpenQueue(s.path)
	if err != nil {
		return err
	}
	s.q = q
	return nil
}

func (s *goqueStore) Send(_ context.Context, body []byte) error {
	_, err := s.q.Enqueue(body)
	return err
}

func (s *goqueStore) Fill(_ context.Context, body []byte, n int) error {
	for range n {
		if _, err := s.q.Enqueue(body); err != nil {
			return err
		}
	}
	return nil
}

func (s *goqueStore) Consume(_ context.Context, n, size int) error {
	for i := range n {
		item, err := s.q.Dequeue()
		if err != nil {
			return fmt.Errorf("dequeue %d of %d: %w", i+1, n, err)
		}
		if err := checkBody(i, item.Value, size); err != nil {
			return err
		}
	}
	return nil
}

// Held closes the LevelDB database and reopens it: goque then finds the
// head and tail by iterating the keys on disk.
func (s *goqueStore) Held(context.Context) (int, error) {
	if err := s.q.Close(); err != nil {
		return 0, err
	}
	if err := s.open(); err != nil {
		return 0, err
	}
	return int(s.q.Length()), nil
}

func (s *goqueStore) Close() error { return s.q.Close() }
