package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// stored is a message as read back from the log.
type stored struct {
	Seq uint64
	Msg record.Message
}

// readBack returns every durable message in the queue's log, in seq order.
func readBack(t testing.TB, q *Queue) []stored {
	t.Helper()
	return readMessages(t, q.log.NewReader(0))
}

// readBackUncapped is readBack past the committed mark: every synced
// message, acknowledged by a follower or not.
func readBackUncapped(t testing.TB, q *Queue) []stored {
	t.Helper()
	return readMessages(t, q.log.NewUncappedReader(0))
}

// readMessages reads r to its end and returns the messages, and closes it.
func readMessages(t testing.TB, r *wal.Reader) []stored {
	t.Helper()
	defer r.Close()
	var out []stored
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		if rec.Type != record.TypeMessage {
			continue
		}
		m, err := record.DecodeMessage(rec.Payload)
		require.NoError(t, err)
		out = append(out, stored{Seq: rec.Seq, Msg: m})
	}
}

func openQueue(t testing.TB, dir string, opts *Options) *Queue {
	t.Helper()
	q, err := Open(dir, opts)
	require.NoError(t, err)
	return q
}

func TestSendReopenRead(t *testing.T) {
	for _, mode := range []FlushMode{FlushSync, FlushAsync} {
		t.Run("flush="+mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			q := openQueue(t, dir, &Options{Flush: mode, SegmentSize: 64 << 10, MaxMessageSize: 8 << 10})
			ctx := context.Background()
			var results []SendResult
			for i := 0; i < 300; i++ {
				res, err := q.Send(ctx, &Message{Key: fmt.Sprint("k", i%7), Headers: map[string]string{"i": fmt.Sprint(i)},
					Body: []byte(fmt.Sprintf("body %d %0*d", i, i%500, 0))})
				require.NoError(t, err)
				require.Equal(t, SendOK, res.Status)
				require.NotEmpty(t, res.ID, "an empty ID is filled in")
				if len(results) > 0 {
					require.Greater(t, res.Seq, results[len(results)-1].Seq)
				}
				results = append(results, res)
			}
			res, err := q.Send(ctx, &Message{ID: "mine", Body: []byte("x")})
			require.NoError(t, err)
			assert.Equal(t, "mine", res.ID)
			results = append(results, res)
			require.NoError(t, q.Close())
			require.NoError(t, q.Close(), "Close is idempotent")
			_, err = q.Send(ctx, &Message{Body: []byte("late")})
			require.ErrorIs(t, err, ErrClosed)

			q = openQueue(t, dir, &Options{Flush: mode, SegmentSize: 64 << 10, MaxMessageSize: 8 << 10})
			defer q.Close()
			got := readBack(t, q)
			require.Len(t, got, len(results))
			for i, r := range results {
				assert.Equal(t, r.Seq, got[i].Seq)
				assert.Equal(t, r.ID, got[i].Msg.ID)
			}
			assert.Equal(t, fmt.Sprint("k", 5), got[5].Msg.Key)
			assert.Equal(t, "5", got[5].Msg.Headers["i"])
			assert.Equal(t, fmt.Sprintf("body %d %0*d", 5, 5, 0), string(got[5].Msg.Body))
			assert.Greater(t, q.Stats().Segments, 1, "the messages span several segments")
			next, err := q.Send(ctx, &Message{Body: []byte("after reopen")})
			require.NoError(t, err)
			// The reopen's epoch record (epoch.go) takes the next seq.
			assert.Equal(t, results[len(results)-1].Seq+2, next.Seq, "a clean reopen continues without a gap")
		})
	}
}

func TestConcurrentSendsShareFsyncs(t *testing.T) {
	q := openQueue(t, t.TempDir(), nil)
	const producers, each = 16, 40
	var wg sync.WaitGroup
	seqs := make(chan uint64, producers*each)
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				res, err := q.Send(context.Background(), &Message{Body: make([]byte, 1024)})
				if !assert.NoError(t, err) || !assert.Equal(t, SendOK, res.Status) {
					return
				}
				seqs <- res.Seq
			}
		}()
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for s := range seqs {
		require.False(t, seen[s], "seq %d given twice", s)
		seen[s] = true
	}
	require.Len(t, seen, producers*each)
	st := q.Stats()
	assert.Equal(t, uint64(producers*each), st.Messages)
	assert.Less(t, st.Fsyncs, uint64(producers*each), "group commit: fewer fsyncs than Sends")
	assert.Greater(t, st.GroupMax, uint64(1))
	var last uint64
	for s := range seen {
		last = max(last, s)
	}
	assert.Equal(t, last, st.CommittedSeq, "every SendOK is committed")
	require.NoError(t, q.Close())
}

func TestSendBatch(t *testing.T) {
	q := openQueue(t, t.TempDir(), nil)
	defer q.Close()
	msgs := []*Message{{Body: []byte("a")}, {Body: []byte("b")}, {Body: []byte("c")}}
	results, err := q.SendBatch(context.Background(), msgs)
	require.NoError(t, err)
	require.Len(t, results, 3)
	for i, r := range results {
		assert.Equal(t, SendOK, r.Status)
		assert.Equal(t, results[0].Seq+uint64(i), r.Seq, "a batch takes consecutive seqs")
	}
	got := readBack(t, q)
	require.Len(t, got, 3)
	assert.Equal(t, "c", string(got[2].Msg.Body))
	_, err = q.SendBatch(context.Background(), []*Message{{}, nil})
	require.ErrorIs(t, err, ErrInvalidMessage)
	assert.Len(t, readBack(t, q), 3, "a rejected batch appends nothing")
}

func TestInvalidOptionsNameTheField(t *testing.T) {
	tests := []struct {
		field string
		opts  Options
	}{
		{"Flush", Options{Flush: 7}},
		{"FlushInterval", Options{FlushInterval: -time.Second}},
		{"FlushTimeout", Options{FlushTimeout: -1}},
		{"MaxMessageSize", Options{MaxMessageSize: -1}},
		{"MaxMessageSize", Options{MaxMessageSize: 10}},
		{"SegmentSize", Options{SegmentSize: -5}},
		{"SegmentSize", Options{SegmentSize: 64 << 10, MaxMessageSize: 1 << 20}},
		{"MaxBytes", Options{MaxBytes: -1}},
		{"MaxBytes", Options{SegmentSize: 1 << 20, MaxMessageSize: 1 << 10, MaxBytes: 1000}},
		{"MaxPending", Options{MaxPending: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Open(dir, &tt.opts)
			require.ErrorIs(t, err, ErrInvalidOptions)
			assert.Contains(t, err.Error(), tt.field)
		})
	}
}

func TestOversizedMessageIsRefused(t *testing.T) {
	q := openQueue(t, t.TempDir(), &Options{MaxMessageSize: 1024})
	defer q.Close()
	_, err := q.Send(context.Background(), &Message{ID: "big", Body: make([]byte, 1024)})
	require.ErrorIs(t, err, ErrMessageTooLarge)
	assert.Contains(t, err.Error(), "1024")
	assert.Contains(t, err.Error(), "big")
	// The limit counts the whole frame: header, ID, key, headers and body.
	_, err = q.Send(context.Background(), &Message{ID: "h", Headers: map[string]string{"k": string(make([]byte, 1000))}})
	require.ErrorIs(t, err, ErrMessageTooLarge)
	res, err := q.Send(context.Background(), &Message{ID: "fits", Body: make([]byte, 900)})
	require.NoError(t, err)
	assert.Equal(t, SendOK, res.Status)
	assert.Len(t, readBack(t, q), 1, "refused messages were not appended")
}

func TestSecondOpenFailsWithErrLocked(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, nil)
	_, err := Open(dir, nil)
	require.ErrorIs(t, err, ErrLocked)
	// It says what happened: this process has it open, not another one.
	require.ErrorContains(t, err, "already open in this process")
	require.NotContains(t, err.Error(), "another process")
	require.NoError(t, q.Close())
	q = openQueue(t, dir, nil)
	require.NoError(t, q.Close())
}

func TestMaxBytes(t *testing.T) {
	q := openQueue(t, t.TempDir(), &Options{SegmentSize: 64 << 10, MaxMessageSize: 4 << 10, MaxBytes: 64 << 10})
	defer q.Close()
	var sent int
	var err error
	for i := 0; i < 100; i++ {
		if _, err = q.Send(context.Background(), &Message{Body: make([]byte, 2000)}); err != nil {
			break
		}
		sent++
	}
	require.ErrorIs(t, err, ErrQueueFull)
	assert.Greater(t, sent, 20)
	assert.Len(t, readBack(t, q), sent, "the refused message was not appended")
}

func TestSendHonoursContext(t *testing.T) {
	q := openQueue(t, t.TempDir(), nil)
	defer q.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := q.Send(ctx, &Message{Body: []byte("x")})
	// Either the writer never took it (context error, not appended), or it
	// did and the result says how far it got; never an error with an append.
	if err != nil {
		require.True(t, errors.Is(err, context.Canceled))
		assert.Len(t, readBack(t, q), 0)
	}
}

func TestCloseAnswersPendingSendsAndLeaksNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	q := openQueue(t, t.TempDir(), nil)
	var wg sync.WaitGroup
	results := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := q.Send(context.Background(), &Message{Body: []byte("x")})
			if err == nil && res.Status != SendOK {
				err = fmt.Errorf("status %v", res.Status)
			}
			results <- err
		}()
	}
	require.NoError(t, q.Close())
	wg.Wait()
	close(results)
	var ok int
	for err := range results {
		if err == nil {
			ok++
		} else {
			require.ErrorIs(t, err, ErrClosed, "a Send racing Close either lands or is refused as closed")
		}
	}
	q2 := openQueue(t, q.log.Dir(), nil)
	assert.Len(t, readBack(t, q2), ok, "every SendOK is in the log")
	require.NoError(t, q2.Close())
	assert.LessOrEqual(t, runtime.NumGoroutine(), before, "Close stops every goroutine")
}

func TestStatusString(t *testing.T) {
	assert.Equal(t, "SendOK", SendOK.String())
	assert.Equal(t, "FlushDiskTimeout", FlushDiskTimeout.String())
	assert.Equal(t, "FlushReplicaTimeout", FlushReplicaTimeout.String())
	assert.Equal(t, "ReplicaNotAvailable", ReplicaNotAvailable.String())
	assert.Equal(t, "WaitCanceled", WaitCanceled.String())
	assert.Equal(t, "SendStatus(0)", SendStatus(0).String())
	assert.Equal(t, "sync", FlushSync.String())
	assert.Equal(t, "async", FlushAsync.String())
}

func TestDoneClosesWithClose(t *testing.T) {
	q := openQueue(t, t.TempDir(), nil)
	select {
	case <-q.Done():
		t.Fatal("Done is closed before Close")
	default:
	}
	require.NoError(t, q.Close())
	select {
	case <-q.Done():
	default:
		t.Fatal("Done is not closed after Close")
	}
}
