package peers

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	diskqueue "github.com/nsqio/go-diskqueue"
)

// BenchmarkDiskqueue runs github.com/nsqio/go-diskqueue, the disk-backed
// FIFO behind nsqd's topics and channels:
//
//	syncevery=1     SyncEvery 1: an fsync (and a metadata file rewrite) after
//	                every Put and every read, issued by the queue's goroutine
//	                after Put has already returned (see README.md)
//	syncevery=2500  nsqd's default (--sync-every=2500, --sync-timeout=2s)
//
// Both use nsqd's default file size, 100 MiB. Put serialises through the
// queue's one goroutine, so producers=16 is safe. op=consume+ack reads from
// ReadChan: a message read is removed, there is no separate acknowledgement.
func BenchmarkDiskqueue(b *testing.B) {
	runPeer(b, diskqueueConfigs())
}

const (
	diskqueueFileSize    = 100 << 20 // nsqd --max-bytes-per-file default
	diskqueueSyncTimeout = 2 * time.Second
	diskqueueMaxMsg      = 4 << 20
)

func diskqueueConfigs() []config {
	var cs []config
	for _, every := range []int64{1, 2500} {
		cs = append(cs, config{
			name: fmt.Sprintf("syncevery=%d", every),
			open: func(_ testing.TB, dir string) (store, error) {
				s := &diskqueueStore{dir: dir, syncEvery: every}
				s.open(every)
				return s, nil
			},
		})
	}
	return cs
}

type diskqueueStore struct {
	dir       string
	syncEvery int64
	q         diskqueue.Interface

	mu   sync.Mutex
	errs []string // ERROR and FATAL lines the queue logged
}

func (s *diskqueueStore) open(syncEvery int64) {
	s.q = diskqueue.New("bench", s.dir, diskqueueFileSize, 0, diskqueueMaxMsg, syncEvery, diskqueueSyncTimeout, s.logf)
}

// logf keeps the queue's errors: it reports failed syncs and reads only in
// its log, so Held fails if any were logged.
func (s *diskqueueStore) logf(lvl diskqueue.LogLevel, f string, args ...any) {
	if lvl >= diskqueue.ERROR {
		s.mu.Lock()
		s.errs = append(s.errs, fmt.Sprintf(f, args...))
		s.mu.Unlock()
	}
}

func (s *diskqueueStore) Send(_ context.Context, body []byte) error { return s.q.Put(body) }

// Fill puts n messages with syncs off (SyncEvery above n), then closes the
// queue, which syncs, and reopens it with the configured SyncEvery.
func (s *diskqueueStore) Fill(_ context.Context, body []byte, n int) error {
	if err := s.q.Close(); err != nil {
		return err
	}
	s.open(int64(n) + 1)
	for range n {
		if err := s.q.Put(body); err != nil {
			return err
		}
	}
	if err := s.q.Close(); err != nil {
		return err
	}
	s.open(s.syncEvery)
	return nil
}

func (s *diskqueueStore) Consume(ctx context.Context, n, size int) error {
	ch := s.q.ReadChan()
	for i := range n {
		select {
		case body := <-ch:
			if err := checkBody(i, body, size); err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("read %d of %d: %w", i+1, n, ctx.Err())
		}
	}
	return nil
}

// Held closes the queue (which syncs its data and metadata) and reopens it:
// the depth is then the one read back from the metadata file.
func (s *diskqueueStore) Held(context.Context) (int, error) {
	if err := s.q.Close(); err != nil {
		return 0, err
	}
	s.open(s.syncEvery)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) > 0 {
		return 0, fmt.Errorf("the queue logged %d errors, first: %s", len(s.errs), s.errs[0])
	}
	return int(s.q.Depth()), nil
}

func (s *diskqueueStore) Close() error { return s.q.Close() }
