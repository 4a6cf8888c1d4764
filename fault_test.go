package zeroloss

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

var errInjected = errors.New("injected I/O error")

func faultQueue(t *testing.T, mem *vfs.MemFS, fault *vfs.FaultFS) *Queue {
	t.Helper()
	opts := Options{SegmentSize: 4096 + 4096, MaxMessageSize: 1024}
	opts.fs = fault
	if fault == nil {
		opts.fs = mem
	}
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	return q
}

// sendAll sends n messages and returns the IDs acknowledged with SendOK and
// the first error.
func sendAll(q *Queue, prefix string, n int) (ok []string, err error) {
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		res, err := q.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)})
		if err != nil {
			return ok, err
		}
		if res.Status == SendOK {
			ok = append(ok, id)
		}
	}
	return ok, nil
}

func requireAllPresent(t *testing.T, q *Queue, ids []string) {
	t.Helper()
	have := map[string][]byte{}
	for _, s := range readBack(t, q) {
		have[s.Msg.ID] = s.Msg.Body
	}
	for _, id := range ids {
		require.Equal(t, bodyFor(id), have[id], "acknowledged message %s", id)
	}
}

func TestFailedFsyncPoisonsAndNeverRetries(t *testing.T) {
	mem := vfs.NewMem()
	fault := vfs.NewFault(mem)
	q := faultQueue(t, mem, fault)
	acked, err := sendAll(q, "before", 5)
	require.NoError(t, err)
	require.Len(t, acked, 5)

	fault.FailNth(vfs.OpSync, 1, errInjected)
	res, err := q.Send(context.Background(), &Message{ID: "victim", Body: []byte("v")})
	require.NoError(t, err, "the message was appended; only its sync failed")
	assert.Equal(t, FlushDiskTimeout, res.Status, "a failed fdatasync is not SendOK")
	require.ErrorIs(t, q.Err(), ErrPoisoned)
	require.ErrorIs(t, q.Err(), errInjected)

	syncs := fault.Count(vfs.OpSync)
	for i := 0; i < 3; i++ {
		_, err = q.Send(context.Background(), &Message{Body: []byte("later")})
		require.ErrorIs(t, err, ErrPoisoned, "later Sends fail")
		require.ErrorIs(t, err, errInjected, "with the first error")
	}
	assert.Equal(t, syncs, fault.Count(vfs.OpSync), "no fdatasync is retried after a failure")
	require.Error(t, q.Close(), "Close reports the poison")

	// Close and reopen recovers everything that was acknowledged.
	fault.Clear()
	q = faultQueue(t, mem, fault)
	requireAllPresent(t, q, acked)
	more, err := sendAll(q, "after", 3)
	require.NoError(t, err)
	require.Len(t, more, 3)
	require.NoError(t, q.Close())
}

func TestWriteFailuresPoison(t *testing.T) {
	tests := map[string]func(f *vfs.FaultFS){
		"failed write": func(f *vfs.FaultFS) { f.FailNth(vfs.OpWrite, 1, errInjected) },
		"short write":  func(f *vfs.FaultFS) { f.ShortWriteNth(1) },
	}
	for name, inject := range tests {
		t.Run(name, func(t *testing.T) {
			mem := vfs.NewMem()
			fault := vfs.NewFault(mem)
			q := faultQueue(t, mem, fault)
			acked, err := sendAll(q, "before", 3)
			require.NoError(t, err)
			inject(fault)
			_, err = q.Send(context.Background(), &Message{Body: []byte("x")})
			require.ErrorIs(t, err, ErrPoisoned)
			_, err = q.Send(context.Background(), &Message{Body: []byte("y")})
			require.ErrorIs(t, err, ErrPoisoned)
			_ = q.Close()
			fault.Clear()
			q = faultQueue(t, mem, fault)
			requireAllPresent(t, q, acked)
			require.NoError(t, q.Close())
		})
	}
}

func TestFailedRenameWhileRollingPoisons(t *testing.T) {
	mem := vfs.NewMem()
	fault := vfs.NewFault(mem)
	q := faultQueue(t, mem, fault)
	fault.FailFrom(vfs.OpRename, 1, errInjected)
	acked, err := sendAll(q, "m", 100) // 8 KiB segments: rolls soon
	require.ErrorIs(t, err, ErrPoisoned)
	require.ErrorIs(t, err, errInjected)
	_ = q.Close()
	fault.Clear()
	q = faultQueue(t, mem, fault)
	requireAllPresent(t, q, acked)
	require.NoError(t, q.Close())
}

func TestDiskFullOnNewSegmentIsRetryable(t *testing.T) {
	mem := vfs.NewMem()
	fault := vfs.NewFault(mem)
	q := faultQueue(t, mem, fault)
	defer q.Close()
	acked, err := sendAll(q, "before", 3)
	require.NoError(t, err)

	fault.SetDiskFull(true)
	more, err := sendAll(q, "full", 100) // fills the active segment, then needs a new one
	acked = append(acked, more...)
	require.ErrorIs(t, err, ErrDiskFull)
	require.NoError(t, q.Err(), "a full disk does not poison the queue")
	_, err = q.Send(context.Background(), &Message{Body: make([]byte, 900)})
	require.ErrorIs(t, err, ErrDiskFull, "still refused while the disk is full")

	fault.SetDiskFull(false) // space freed
	more, err = sendAll(q, "after", 20)
	require.NoError(t, err, "Send works again once space is freed")
	acked = append(acked, more...)
	requireAllPresent(t, q, acked)

	require.NoError(t, q.Close())
	q = faultQueue(t, mem, fault)
	requireAllPresent(t, q, acked)
}

// Damage to durable data is reported with file and offset, never skipped:
// by Open when it lies in what Open reads (the whole log without a
// checkpoint file), otherwise by the reader that reaches it.
func TestCorruptionIsReported(t *testing.T) {
	for _, withFile := range []bool{false, true} {
		t.Run(fmt.Sprintf("checkpoint file %v", withFile), func(t *testing.T) {
			mem := vfs.NewMem()
			q := faultQueue(t, mem, nil)
			_, err := sendAll(q, "m", 60)
			require.NoError(t, err)
			require.NoError(t, q.Close())
			data, err := mem.ReadFile("/q/00000000000000000001.wal")
			require.NoError(t, err)
			data[4096+100] ^= 1
			require.NoError(t, mem.WriteFile("/q/00000000000000000001.wal", data))
			if !withFile {
				removeCheckpointFiles(t, mem, "/q")
			}

			q, err = Open("/q", &Options{SegmentSize: 8192, MaxMessageSize: 1024, fs: mem})
			if withFile {
				// Open read nothing below its checkpoint file: a consumer
				// reading from the oldest message meets the damage.
				require.NoError(t, err)
				defer q.Close()
				c, cerr := q.Consumer("g", &ConsumerOptions{Start: StartOldest})
				require.NoError(t, cerr)
				_, err = c.Receive(context.Background())
			}
			require.ErrorIs(t, err, ErrCorrupt)
			var ce *CorruptError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, "/q/00000000000000000001.wal", ce.File)
			assert.LessOrEqual(t, ce.Offset, int64(4096+100))
		})
	}
}
