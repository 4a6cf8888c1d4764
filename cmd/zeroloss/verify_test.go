package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/record"
)

func flipByte(t *testing.T, path string, offset int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, offset)
	require.NoError(t, err)
	b[0] ^= 0x10
	_, err = f.WriteAt(b, offset)
	require.NoError(t, err)
}

// frameOffsets walks the frames of a sealed segment file on its own, without
// the code under test, and returns the offset of each frame and its record.
func frameOffsets(t *testing.T, path string) ([]int64, []record.Record) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	info, err := f.Stat()
	require.NoError(t, err)
	rd := record.NewReader(f, 4096, info.Size(), 0)
	var offsets []int64
	var recs []record.Record
	for {
		off := rd.Offset()
		rec, err := rd.Next()
		if err == io.EOF {
			return offsets, recs
		}
		require.NoError(t, err)
		offsets = append(offsets, off)
		recs = append(recs, rec)
	}
}

// frameAt returns the offset of the frame holding the byte at offset.
func frameAt(offsets []int64, offset int64) int64 {
	start := offsets[0]
	for _, o := range offsets {
		if o > offset {
			break
		}
		start = o
	}
	return start
}

func TestVerifyIntact(t *testing.T) {
	dir, segments := newQueue(t, 300)
	before := snapshot(t, dir)
	for _, args := range [][]string{{"verify", dir}, {"verify", "--strict", dir}} {
		r := runTool(args...)
		require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
		assert.Equal(t, fmt.Sprintf("ok: %d segments, 301 frames, seqs 1..301 (300 messages decoded)\n", len(segments)), r.stdout)
		assert.Empty(t, r.stderr)
	}
	assert.Equal(t, before, snapshot(t, dir), "verify must not change the directory")
}

func TestVerifyFlippedByteInSealedSegment(t *testing.T) {
	dir, segments := newQueue(t, 300)
	victim := segments[0]
	offsets, _ := frameOffsets(t, victim)
	info, err := os.Stat(victim)
	require.NoError(t, err)
	tests := []struct {
		name   string
		offset int64
	}{
		{"first frame's payload", 4096 + 40},
		{"frame header's length", offsets[7] + 1},
		{"frame header's seq", offsets[20] + 16},
		{"middle", 4096 + (info.Size()-4096)/2},
		{"last byte", info.Size() - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flipByte(t, victim, tt.offset)
			defer flipByte(t, victim, tt.offset) // restore for the next case
			r := runTool("verify", dir)
			assert.Equal(t, exitFailure, r.code)
			assert.Empty(t, r.stdout)
			want := fmt.Sprintf("corrupt: %s at offset %d: ", victim, frameAt(offsets, tt.offset))
			assert.Regexp(t, `^`+regexp.QuoteMeta(want)+`.+\n$`, r.stderr)
		})
	}
	r := runTool("verify", dir)
	assert.Equal(t, exitOK, r.code, "the restored log verifies again: %s", r.stderr)
}

// A message frame whose checksum is right but whose payload does not decode
// is caught by the message check, not by the frame scan.
func TestVerifyUndecodableMessage(t *testing.T) {
	dir, segments := newQueue(t, 300)
	victim := segments[1]
	offsets, recs := frameOffsets(t, victim)
	const index = 5
	f, err := os.OpenFile(victim, os.O_RDWR, 0)
	require.NoError(t, err)
	frame := make([]byte, recs[index].Size())
	_, err = f.ReadAt(frame, offsets[index])
	require.NoError(t, err)
	frame[record.HeaderSize] = 0x80       // message flags: an unknown bit
	record.SetSeq(frame, recs[index].Seq) // recompute the checksum
	_, err = f.WriteAt(frame, offsets[index])
	require.NoError(t, err)
	require.NoError(t, f.Close())

	// inspect reads message IDs for the dedup table: it stops there too.
	r := runTool("inspect", dir)
	require.Equal(t, exitFailure, r.code, "the framing is intact but the state cannot be read")
	assert.Contains(t, r.stderr, fmt.Sprintf("message at seq %d", recs[index].Seq))
	assert.Contains(t, r.stdout, "segments:", "the scan is still printed")

	r = runTool("verify", dir)
	assert.Equal(t, exitFailure, r.code)
	assert.Empty(t, r.stdout)
	assert.Equal(t, fmt.Sprintf("corrupt: %s at offset %d: message seq %d does not decode: %v\n",
		victim, offsets[index], recs[index].Seq, record.ErrBadMessage), r.stderr)
}

func TestVerifyTornTail(t *testing.T) {
	dir, segments := newQueue(t, 300)
	path, offset := addTornTail(t, dir, segments, 100)
	before := snapshot(t, dir)
	torn := fmt.Sprintf("torn tail at %s offset %d: 1 frame, 100 bytes would be cut on open (", path, offset)

	r := runTool("verify", dir)
	assert.Equal(t, exitOK, r.code, "a torn tail is only a warning")
	assert.Regexp(t, `^ok: \d+ segments, 301 frames, seqs 1\.\.301 `, r.stdout)
	assert.Contains(t, r.stderr, "warning: "+torn)

	r = runTool("verify", "--strict", dir)
	assert.Equal(t, exitTorn, r.code)
	assert.Empty(t, r.stdout)
	assert.Contains(t, r.stderr, "torn: "+torn)

	assert.Equal(t, before, snapshot(t, dir), "verify must not cut the torn tail")

	// What the warning promises: opening the queue cuts the tail and keeps
	// every message.
	q, err := zeroloss.Open(dir, &zeroloss.Options{SegmentSize: 64 << 10, MaxMessageSize: 4 << 10})
	require.NoError(t, err)
	require.NoError(t, q.Close())
	r = runTool("verify", "--strict", dir)
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Regexp(t, `^ok: \d+ segments, 302 frames, seqs 1\.\.\d+ \(300 messages decoded\)`, r.stdout, "and the reopen's epoch record")
}

// verify checks a queue's directory and nothing else: a directory that is
// not one (empty, missing, foreign files, a spool) exits non-zero saying what
// it found (issue 15: verify printed ok on a directory that is not a queue).
func TestVerifyRefusesWhatIsNotAQueue(t *testing.T) {
	empty := t.TempDir()
	queue, _ := newQueue(t, 300)
	foreign, _ := newQueue(t, 300)
	require.NoError(t, os.WriteFile(filepath.Join(foreign, "report.tmp"), []byte("x"), 0o600))
	spool := t.TempDir()
	p, err := zeroloss.NewProducer(nil, &zeroloss.ProducerOptions{Strict: true, SpoolDir: spool})
	require.NoError(t, err)
	require.NoError(t, p.Close())
	old := filepath.Join("..", "..", "testdata", "v1-queue")

	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"empty", []string{empty}, exitFailure, "is not a queue directory: it has no IDENTITY file and no segment files"},
		{"missing", []string{empty + "/nope"}, exitFailure, "nope"},
		{"foreign file", []string{foreign}, exitFailure, `holds "report.tmp", a file zeroloss did not create`},
		{"spool", []string{spool}, exitFailure, "is a producer spool (queue not known yet), not a queue"},
		{"queue as a spool", []string{"--spool", queue}, exitFailure, "is a queue (queue "},
		{"spool with --spool", []string{"--spool", spool}, exitOK, ""},
		{"queue", []string{queue}, exitOK, ""},
		{"queue written before identity", []string{old}, exitOK, "has no IDENTITY file: written before directory identity"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runTool(append([]string{"verify"}, c.args...)...)
			assert.Equal(t, c.code, r.code, "stderr: %s", r.stderr)
			if c.code != exitOK {
				assert.Empty(t, r.stdout, "no ok line")
			} else {
				assert.Contains(t, r.stdout, "ok: ")
			}
			if c.stderr == "" {
				assert.Empty(t, r.stderr)
			} else {
				assert.Contains(t, r.stderr, c.stderr)
			}
		})
	}
	assert.FileExists(t, filepath.Join(foreign, "report.tmp"))
}
