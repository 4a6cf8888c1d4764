package bench

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// verifyLog checks what a closed queue left in dir: the log reopens cleanly
// (no torn tail, no unclean stop), and its durable records are exactly want
// TypeMessage records with consecutive seqs, each with a body of bodySize
// bytes. The root package has no read API yet, so it reads the log with
// internal/wal directly. dir must not be open elsewhere (wal.ErrLocked).
func verifyLog(dir string, want, bodySize int) error {
	var (
		messages int
		prevSeq  uint64
	)
	rec, err := wal.ReadDurable(dir, wal.Options{}, func(r record.Record) error {
		if prevSeq != 0 && r.Seq != prevSeq+1 {
			return fmt.Errorf("seq %d follows seq %d: the log has a gap", r.Seq, prevSeq)
		}
		prevSeq = r.Seq
		if r.Type != record.TypeMessage {
			return nil
		}
		m, err := record.DecodeMessage(r.Payload)
		if err != nil {
			return fmt.Errorf("seq %d: %w", r.Seq, err)
		}
		if len(m.Body) != bodySize {
			return fmt.Errorf("seq %d: body of %d bytes, want %d", r.Seq, len(m.Body), bodySize)
		}
		messages++
		return nil
	})
	if err != nil {
		return fmt.Errorf("reopen %s: %w", dir, err)
	}
	if rec.Unclean || rec.Torn != nil {
		return fmt.Errorf("reopen %s: recovery after a clean Close found unclean=%v torn=%+v", dir, rec.Unclean, rec.Torn)
	}
	if messages != want {
		return fmt.Errorf("log holds %d messages, want %d", messages, want)
	}
	if rec.LastSeq != prevSeq {
		return fmt.Errorf("recovery reports last seq %d, the reader ended at seq %d", rec.LastSeq, prevSeq)
	}
	return nil
}

// TestBenchmarksVerify exercises the benchmarks' verification on a small
// queue: it must accept exactly what was sent and reject every mismatch, or
// the benchmarks' checks prove nothing.
func TestBenchmarksVerify(t *testing.T) {
	const (
		messages = 100
		size     = 100
	)
	dir := t.TempDir()
	q, err := zeroloss.Open(dir, &zeroloss.Options{Flush: zeroloss.FlushSync})
	require.NoError(t, err)
	t.Cleanup(func() { q.Close() })
	require.NoError(t, sendAll(t.Context(), q, messages, 4, filledBody(size)))

	t.Run("queue still open", func(t *testing.T) {
		require.ErrorIs(t, verifyLog(dir, messages, size), wal.ErrLocked)
	})
	require.NoError(t, q.Close())

	tests := []struct {
		name      string
		want      int
		bodySize  int
		wantError bool
	}{
		{name: "exact", want: messages, bodySize: size},
		{name: "one more expected", want: messages + 1, bodySize: size, wantError: true},
		{name: "one fewer expected", want: messages - 1, bodySize: size, wantError: true},
		{name: "larger body expected", want: messages, bodySize: size + 1, wantError: true},
		{name: "smaller body expected", want: messages, bodySize: size - 1, wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyLog(dir, tt.want, tt.bodySize)
			if tt.wantError {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
			}
		})
	}
}
