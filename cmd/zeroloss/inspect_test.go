package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

func TestInspectSummary(t *testing.T) {
	dir, segments := newQueue(t, 300)
	before := snapshot(t, dir)

	r := runTool("inspect", dir)
	require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
	assert.Empty(t, r.stderr)

	// One line per segment file, in seq order, all sealed but the last.
	lines := regexp.MustCompile(`(?m)^(\d{20}\.wal) +(\d+) +(\d+) +(\d+) +\d+ +\d+ +(sealed|active) +\d+ +\d+$`).FindAllStringSubmatch(r.stdout, -1)
	require.Len(t, lines, len(segments), r.stdout)
	next, frames := 1, 0
	for i, l := range lines {
		assert.Equal(t, filepath.Base(segments[i]), l[1])
		assert.Equal(t, fmt.Sprint(next), l[2], "base seq of %s", l[1])
		var last, n int
		fmt.Sscan(l[3], &last)
		fmt.Sscan(l[4], &n)
		assert.Equal(t, last-next+1, n, "frames of %s", l[1])
		want := "sealed"
		if i == len(lines)-1 {
			want = "active"
		}
		assert.Equal(t, want, l[5], l[1])
		next, frames = last+1, frames+n
	}
	assert.Equal(t, 301, frames, "the epoch record and 300 messages")

	for _, want := range []string{
		fmt.Sprintf("segments:  %d\n", len(segments)),
		"seqs:      1..301\n",
		"frames:    301 (message 300, epoch 1)\n",
		"messages:  300\n",
		"torn tail: none\n",
		"epoch:     1, since seq 1; a leader's (Open begins the next epoch)\n",
	} {
		assert.Contains(t, r.stdout, want)
	}
	assert.Regexp(t, `disk use: +\d+ bytes \(\d+\.\d KiB\)`, r.stdout)
	assert.Equal(t, before, snapshot(t, dir), "inspect must not change the directory")
}

func TestInspectJSON(t *testing.T) {
	dir, segments := newQueue(t, 300)
	for _, args := range [][]string{{"inspect", "--json", dir}, {"inspect", dir, "-json"}} {
		t.Run(strings.Join(args[1:], " "), func(t *testing.T) {
			r := runTool(args...)
			require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
			var rep inspectReport
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)

			assert.Equal(t, dir, rep.Dir)
			require.Len(t, rep.Segments, len(segments))
			assert.Equal(t, len(segments), rep.Totals.Segments)
			assert.Equal(t, uint64(1), rep.Totals.FirstSeq)
			assert.Equal(t, uint64(301), rep.Totals.LastSeq)
			assert.Equal(t, 301, rep.Totals.Frames)
			assert.Equal(t, 300, rep.Totals.Messages)
			assert.Equal(t, map[string]int{"message": 300, "epoch": 1}, rep.Totals.FramesByType)
			assert.Nil(t, rep.TornTail)
			assert.Nil(t, rep.Corrupt)
			assert.Empty(t, rep.Error)

			var frames int
			var disk int64
			prevLast := uint64(0)
			for i, s := range rep.Segments {
				assert.Equal(t, filepath.Base(segments[i]), s.Name)
				assert.Equal(t, prevLast, s.PrevLastSeq)
				assert.Equal(t, prevLast+1, s.BaseSeq)
				assert.Equal(t, int(s.LastSeq-s.BaseSeq+1), s.Frames)
				assert.Equal(t, i < len(segments)-1, s.Sealed)
				info, err := os.Stat(segments[i])
				require.NoError(t, err)
				assert.Equal(t, info.Size(), s.FileBytes)
				frames += s.Frames
				disk += s.FileBytes
				prevLast = s.LastSeq
			}
			assert.Equal(t, 301, frames, "the epoch record and 300 messages")
			assert.Equal(t, disk, rep.Totals.DiskBytes)
		})
	}
}

// addTornTail writes junk just above the synced end of the last segment, as a
// write cut short by a crash would leave, and returns the segment's path and
// the junk's offset.
func addTornTail(t *testing.T, dir string, segments []string, junk int) (string, int64) {
	t.Helper()
	r := runTool("inspect", "--json", dir)
	require.Equal(t, exitOK, r.code, r.stderr)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	last := rep.Segments[len(rep.Segments)-1]
	require.False(t, last.Sealed)
	path := segments[len(segments)-1]
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt([]byte(strings.Repeat("\xab", junk)), last.SyncedOffset)
	require.NoError(t, err)
	return path, last.SyncedOffset
}

func TestInspectTornTail(t *testing.T) {
	dir, segments := newQueue(t, 300)
	path, offset := addTornTail(t, dir, segments, 100)
	before := snapshot(t, dir)

	r := runTool("inspect", dir)
	require.Equal(t, exitOK, r.code, "a torn tail is not an error: %s", r.stderr)
	assert.Contains(t, r.stdout, fmt.Sprintf("torn tail at %s offset %d: 1 frame, 100 bytes would be cut on open (", path, offset))
	assert.NotContains(t, r.stdout, "torn tail: none")
	assert.Contains(t, r.stdout, "seqs:      1..301\n", "the torn junk holds no frames")

	r = runTool("inspect", "--json", dir)
	require.Equal(t, exitOK, r.code)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.NotNil(t, rep.TornTail)
	assert.Equal(t, tornReport{File: path, Offset: offset, Frames: 1, Bytes: 100, Reason: rep.TornTail.Reason}, *rep.TornTail)
	assert.NotEmpty(t, rep.TornTail.Reason)

	assert.Equal(t, before, snapshot(t, dir), "inspect must not cut the torn tail")
}

func TestInspectCorruptPrintsWhatWasScanned(t *testing.T) {
	dir, segments := newQueue(t, 300)
	victim := segments[1]
	flipByte(t, victim, 4096+500)

	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", asJSON), func(t *testing.T) {
			args := []string{"inspect", dir}
			if asJSON {
				args = []string{"inspect", "--json", dir}
			}
			r := runTool(args...)
			assert.Equal(t, exitFailure, r.code)
			assert.Regexp(t, `^corrupt: `+regexp.QuoteMeta(victim)+` at offset \d+: .+\n$`, r.stderr)
			if !asJSON {
				assert.Regexp(t, `(?m)^`+filepath.Base(segments[0])+` +1 `, r.stdout, "the intact first segment is listed")
				return
			}
			var rep inspectReport
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
			require.NotNil(t, rep.Corrupt)
			assert.Equal(t, victim, rep.Corrupt.File)
			assert.LessOrEqual(t, rep.Corrupt.Offset, int64(4096+500))
			assert.GreaterOrEqual(t, rep.Corrupt.Offset, int64(4096))
			require.GreaterOrEqual(t, len(rep.Segments), 1)
			assert.Equal(t, filepath.Base(segments[0]), rep.Segments[0].Name)
			assert.True(t, rep.Segments[0].Sealed)
		})
	}
}

func TestInspectMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	r := runTool("inspect", dir)
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "error: ")
	assert.Contains(t, r.stderr, "nope")
	_, err := os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "inspect must not create the directory")
}

// inspect shows the state a restart rebuilds: groups with their lag,
// unacked, retry and dead-letter depth, pending transactions, dedup IDs.
func TestInspectState(t *testing.T) {
	dir := t.TempDir()
	q, err := zeroloss.Open(dir, &zeroloss.Options{SegmentSize: 64 << 10, MaxMessageSize: 4 << 10})
	require.NoError(t, err)
	ctx := context.Background()
	c, err := q.Consumer("billing", &zeroloss.ConsumerOptions{MaxDeliveries: 1})
	require.NoError(t, err)
	_, err = q.Consumer("audit", nil)
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		_, err := q.Send(ctx, &zeroloss.Message{ID: fmt.Sprintf("m%d", i), Body: []byte("x")})
		require.NoError(t, err)
	}
	_, _, err = q.SendHalf(ctx, &zeroloss.Message{ID: "tx", Body: []byte("y")})
	require.NoError(t, err)
	d, err := c.Receive(ctx)
	require.NoError(t, err)
	require.NoError(t, d.Nack(0)) // the last allowed delivery: a dead letter
	d, err = c.Receive(ctx)
	require.NoError(t, err)
	require.NoError(t, d.Ack())
	_, err = c.Receive(ctx) // delivered, not acked
	require.NoError(t, err)
	require.NoError(t, q.Close())

	before := snapshot(t, dir)
	r := runTool("inspect", "--json", dir)
	require.Equal(t, exitOK, r.code, r.stderr)
	var rep struct {
		State struct {
			Groups    []zeroloss.DirGroup `json:"groups"`
			PendingTx int                 `json:"pending_transactions"`
			DedupIDs  int                 `json:"dedup_ids"`
		} `json:"state"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.Equal(t, 1, rep.State.PendingTx)
	assert.Equal(t, 5, rep.State.DedupIDs)
	require.Len(t, rep.State.Groups, 2)
	billing, audit := rep.State.Groups[0], rep.State.Groups[1]
	assert.Equal(t, "billing", billing.Name)
	assert.Equal(t, 1, billing.DeadLetters)
	assert.Equal(t, 1, billing.Unacked)
	assert.Equal(t, "audit", audit.Name)
	assert.Zero(t, audit.Unacked)
	assert.Greater(t, audit.Behind, billing.Behind)
	assert.Equal(t, before, snapshot(t, dir), "inspect changes nothing")

	r = runTool("inspect", dir)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "pending tx:")
	assert.Regexp(t, `billing +\(default\) +3 +\d+ +\d+ +\d+ +1 +0 +1`, r.stdout)
	assert.Regexp(t, `audit +\(default\) +5 +0 +0 `, r.stdout, "a group never read lags by every message")
	assert.Regexp(t, `\(default\) +5 +\d+ bytes +2 +`, r.stdout, "the topics table")
}

// inspect shows the keys an Ordered group holds back on a retry, and how
// long the oldest of them has waited.
func TestInspectShowsRetryKeys(t *testing.T) {
	dir := t.TempDir()
	q, err := zeroloss.Open(dir, &zeroloss.Options{SegmentSize: 64 << 10, MaxMessageSize: 4 << 10})
	require.NoError(t, err)
	ctx := context.Background()
	c, err := q.Consumer("orders", &zeroloss.ConsumerOptions{Ordered: true, Backoff: []time.Duration{time.Hour}})
	require.NoError(t, err)
	for _, key := range []string{"a", "a", "b", ""} {
		_, err := q.Send(ctx, &zeroloss.Message{Key: key, Body: []byte("x")})
		require.NoError(t, err)
	}
	for range 3 { // a's and b's heads and the keyless one fail
		d, err := c.Receive(ctx)
		require.NoError(t, err)
		require.NoError(t, d.Nack(time.Millisecond))
	}
	for range 3 { // and fail again: to the retry stream
		d, err := c.Receive(ctx)
		require.NoError(t, err)
		require.NoError(t, d.Nack(0))
	}
	require.NoError(t, q.Close())

	r := runTool("inspect", "--json", dir)
	require.Equal(t, exitOK, r.code, r.stderr)
	var rep struct {
		State struct {
			Groups []zeroloss.DirGroup `json:"groups"`
		} `json:"state"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Len(t, rep.State.Groups, 1)
	g := rep.State.Groups[0]
	assert.Equal(t, 3, g.Retrying)
	assert.Equal(t, 2, g.RetryKeys, "the keyless message holds no key")
	assert.Positive(t, g.RetryKeyAge)

	r = runTool("inspect", dir)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Regexp(t, `orders +\(default\) +4 +\d+ +\d+ +\d+ +0 +3 +0 +2 +\d+m?s`, r.stdout)
	assert.Contains(t, r.stdout, "RETRY KEYS")
}

// inspect on a strict producer's spool shows how many messages wait in it.
func TestInspectSpool(t *testing.T) {
	spool := t.TempDir()
	p, err := zeroloss.NewProducer(nil, &zeroloss.ProducerOptions{Strict: true, SpoolDir: spool})
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		res, err := p.Send(context.Background(), &zeroloss.Message{Body: []byte("x")})
		require.NoError(t, err)
		require.Equal(t, zeroloss.Spooled, res.Outcome)
	}
	require.NoError(t, p.Close())
	r := runTool("inspect", spool)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "3 messages spooled")

	// Drained into a queue: depth 0.
	q, err := zeroloss.Open(t.TempDir(), nil)
	require.NoError(t, err)
	defer q.Close()
	p, err = zeroloss.NewProducer(q, &zeroloss.ProducerOptions{Strict: true, SpoolDir: spool})
	require.NoError(t, err)
	require.NoError(t, p.Flush(context.Background()))
	require.NoError(t, p.Close())
	r = runTool("inspect", "--json", spool)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"spool_depth": 0`)
}

// inspect says whose directory it is: a leader's, or a follower's copy that
// an Open would promote.
func TestInspectFollowerCopy(t *testing.T) {
	leader, err := zeroloss.Open(t.TempDir(), &zeroloss.Options{Replication: zeroloss.ReplicateSync})
	require.NoError(t, err)
	defer leader.Close()
	fdir := t.TempDir()
	a, b := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- zeroloss.Follow(ctx, fdir, b, nil) }()
	require.NoError(t, leader.AttachReplica(a))
	res, err := leader.Send(context.Background(), &zeroloss.Message{Body: []byte("x")})
	require.NoError(t, err)
	require.Equal(t, zeroloss.SendOK, res.Status)
	cancel()
	<-done

	r := runTool("inspect", fdir)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "epoch:     1, since seq 1; a follower's copy (Open promotes it")
	r = runTool("inspect", "--json", fdir)
	require.Equal(t, exitOK, r.code, r.stderr)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.True(t, rep.State.Follower)
	assert.Equal(t, uint64(1), rep.State.Epoch)
}

func TestInspectShowsWhatTheDirectoryIs(t *testing.T) {
	dir, _ := newQueue(t, 300)
	id, err := zeroloss.ReadDirIdentity(dir)
	require.NoError(t, err)
	require.Equal(t, "queue", id.Kind)
	require.Len(t, id.QueueID, 32)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600))
	r := runTool("inspect", dir)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "directory: queue, queue "+id.QueueID+"\n")
	assert.Contains(t, r.stdout, "foreign:   notes.txt")

	r = runTool("inspect", "--json", dir)
	require.Equal(t, exitOK, r.code, r.stderr)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.Equal(t, "queue", rep.Kind)
	assert.Equal(t, id.QueueID, rep.QueueID)
	assert.Equal(t, []string{"notes.txt"}, rep.Foreign)

	r = runTool("inspect", filepath.Join("..", "..", "testdata", "v1-queue"))
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "directory: no IDENTITY file")
}

// A follower's copy that starts past records its leader deleted (no
// checkpoint received yet, records of a group it never saw declared) is
// inspected without error, its first segment shown as following a gap.
func TestInspectCopyAfterAGap(t *testing.T) {
	dir := t.TempDir()
	l, _, err := wal.Open(dir, wal.Options{SegmentSize: 64 << 10})
	require.NoError(t, err)
	l.LostBelow(40)
	var frames []byte
	for seq := uint64(40); seq <= 41; seq++ {
		f := record.AppendMessageFrame(nil, 0, 0, 1, &record.Message{ID: fmt.Sprint(seq), Body: []byte("x")})
		record.SetSeq(f, seq)
		frames = append(frames, f...)
	}
	// A group declared after the gap, and an ack of one declared in what the
	// leader deleted.
	group := record.AppendFrame(nil, record.TypeGroup, 6, 1, record.AppendGroup(nil, &record.Group{Name: "k", StartSeq: 42}))
	record.SetSeq(group, 42)
	ack := record.AppendFrame(nil, record.TypeAck, 5, 1, record.AppendAck(nil, &record.Ack{Floor: 41, Mark: 41, Acked: []uint64{40}}))
	record.SetSeq(ack, 43)
	frames = append(append(frames, group...), ack...)
	_, err = l.AppendFrames(frames)
	require.NoError(t, err)
	_, err = l.Sync()
	require.NoError(t, err)
	require.NoError(t, l.Close())

	r := runTool("inspect", dir)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "active, after a gap")
	r = runTool("inspect", "--json", dir)
	require.Equal(t, exitOK, r.code, r.stderr)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Len(t, rep.Segments, 1)
	assert.True(t, rep.Segments[0].AfterGap)
	require.NotNil(t, rep.State)
	require.Len(t, rep.State.Groups, 1, "the group declared after the gap")
	assert.Equal(t, "k", rep.State.Groups[0].Name)
}

// A segment that reuses a deleted one's file is shown recycled, and what its
// earlier life left past the data is no torn tail (wal.Scan, the report).
func TestInspectRecycledSegment(t *testing.T) {
	dir := t.TempDir()
	msg := func(i int) []byte {
		return record.AppendMessageFrame(nil, 0, 0, 1, &record.Message{ID: fmt.Sprint(i), Body: []byte("body")})
	}
	l, _, err := wal.Open(dir, wal.Options{SegmentSize: 4096 + 4*int64(len(msg(10))), Recycle: 1})
	require.NoError(t, err)
	for i := 10; i < 22; i++ {
		_, _, err := l.Append(msg(i))
		require.NoError(t, err)
	}
	_, err = l.Sync()
	require.NoError(t, err)
	_, err = l.RemoveBefore(9) // the first segment, 1..4, is kept
	require.NoError(t, err)
	_, _, err = l.Append(msg(22)) // rolls into it
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.Equal(t, uint64(1), l.Stats().RecycledRolls)

	res, err := wal.Scan(vfs.OS, dir)
	require.NoError(t, err)
	rep := newInspectReport(dir, res, nil)
	require.Len(t, rep.Segments, 2)
	assert.False(t, rep.Segments[0].Recycled)
	assert.True(t, rep.Segments[1].Recycled)
	assert.Equal(t, 1, rep.Segments[1].Frames)
	assert.Nil(t, rep.TornTail, "the old frames past the data are no torn tail")
	var out strings.Builder
	rep.print(&out)
	assert.Contains(t, out.String(), "active, recycled")
}

// inspect names the checkpoint files and says which the next Open starts
// from, and why it would ignore a damaged one.
func TestInspectCheckpointFiles(t *testing.T) {
	dir, _ := newQueue(t, 300) // Close wrote one, at seq 301
	name := "CHECKPOINT-00000000000000000301"
	r := runTool("inspect", dir)
	require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
	assert.Regexp(t, `restart: +`+name+` \(.*\): the next Open starts from it and reads only the log after seq 301`, r.stdout)

	path := filepath.Join(dir, name)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[len(data)/2] ^= 1
	require.NoError(t, os.WriteFile(path, data, 0o600))
	r = runTool("inspect", "--json", dir)
	require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
	var report struct {
		State struct {
			CheckpointFiles []zeroloss.DirCheckpointFile `json:"checkpoint_files"`
		} `json:"state"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &report))
	require.Len(t, report.State.CheckpointFiles, 1)
	assert.Equal(t, uint64(301), report.State.CheckpointFiles[0].Seq)
	assert.Contains(t, report.State.CheckpointFiles[0].Problem, "checksum mismatch")
	r = runTool("inspect", dir)
	assert.Contains(t, r.stdout, name)
	assert.Contains(t, r.stdout, "ignored by Open")
}
