package peers

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tidwall/wal"
)

// BenchmarkTidwallWAL runs github.com/tidwall/wal, a segmented append-only
// log (not a queue: no consumer position, no acknowledgement):
//
//	sync=each   NoSync:false, one Log.Write per message: write(2) + fsync(2)
//	sync=batch  NoSync:false, one Log.WriteBatch of batch=64 messages per
//	            write(2) + fsync(2); producers=1 only, and the one producer
//	            waits for the batch's fsync, not for each message's
//
// The log needs consecutive indexes and has a single writer, so with
// producers=16 the adapter takes a mutex around "next index, Write" (the
// log's own lock only guards the Write). op=read reads the messages back by
// index with Log.Read: there is nothing to acknowledge.
func BenchmarkTidwallWAL(b *testing.B) {
	runPeer(b, walConfigs())
	b.Run("sync=batch/batch=64/op=send/size=1KiB/producers=1", func(b *testing.B) {
		benchWALBatch(b, 64, 1<<10)
	})
}

func walConfigs() []config {
	return []config{{
		name:      "sync=each",
		open:      func(_ testing.TB, dir string) (store, error) { return openWAL(dir) },
		consumeOp: "read",
	}}
}

type walStore struct {
	path string
	mu   sync.Mutex // serialises producers: next index + Write
	log  *wal.Log
	last uint64 // last index written
	read uint64 // last index read by Consume
}

func walOptions() *wal.Options {
	opts := *wal.DefaultOptions
	opts.NoSync = false // fsync after every Write and WriteBatch (the default)
	return &opts
}

func openWAL(dir string) (*walStore, error) {
	path := filepath.Join(dir, "wal")
	l, err := wal.Open(path, walOptions())
	if err != nil {
		return nil, err
	}
	return &walStore{path: path, log: l}, nil
}

func (s *walStore) Send(_ context.Context, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.log.Write(s.last+1, body); err != nil {
		return err
	}
	s.last++
	return nil
}

// sendBatch writes len(bodies) messages with one WriteBatch (one fsync).
func (s *walStore) sendBatch(batch *wal.Batch, bodies [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch.Clear()
	for i, body := range bodies {
		batch.Write(s.last+1+uint64(i), body)
	}
	if err := s.log.WriteBatch(batch); err != nil {
		return err
	}
	s.last += uint64(len(bodies))
	return nil
}

func (s *walStore) Fill(_ context.Context, body []byte, n int) error {
	return s.fillBatches(body, n, 1024)
}

func (s *walStore) fillBatches(body []byte, n, batchSize int) error {
	var batch wal.Batch
	bodies := make([][]byte, 0, batchSize)
	for done := 0; done < n; done += len(bodies) {
		bodies = bodies[:0]
		for range min(batchSize, n-done) {
			bodies = append(bodies, body)
		}
		if err := s.sendBatch(&batch, bodies); err != nil {
			return err
		}
	}
	return nil
}

func (s *walStore) Consume(_ context.Context, n, size int) error {
	for i := range n {
		data, err := s.log.Read(s.read + 1)
		if err != nil {
			return fmt.Errorf("read index %d: %w", s.read+1, err)
		}
		if err := checkBody(i, data, size); err != nil {
			return err
		}
		s.read++
	}
	return nil
}

// Held reopens the log and returns its last index less what Consume read.
func (s *walStore) Held(context.Context) (int, error) {
	if err := s.log.Close(); err != nil {
		return 0, err
	}
	l, err := wal.Open(s.path, walOptions())
	if err != nil {
		return 0, err
	}
	s.log = l
	last, err := l.LastIndex()
	if err != nil {
		return 0, err
	}
	if last != s.last {
		return 0, fmt.Errorf("reopened log ends at index %d, %d were written", last, s.last)
	}
	return int(last - s.read), nil
}

func (s *walStore) Close() error { return s.log.Close() }

// benchWALBatch is sync=batch: one producer writes b.N messages as
// WriteBatch calls of batch messages each (the last may be short), one
// fsync per call: what bench/'s BenchmarkRaw op=batch+fdatasync is to
// op=write+fdatasync.
func benchWALBatch(b *testing.B, batch, size int) {
	s := openStore(b, func(_ testing.TB, dir string) (store, error) { return openWAL(dir) }).(*walStore)
	body := filledBody(size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	startTimer(b)

	err := s.fillBatches(body, b.N, batch)

	stopTimer(b)
	if err != nil {
		b.Fatal(err)
	}
	reportRate(b)
	checkHeld(b, s, b.N)
}
