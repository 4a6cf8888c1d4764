package lab

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// stored builds the records of a fabricated log: ids in seq order, each with
// its right body.
func stored(ids ...string) []storedMessage {
	out := make([]storedMessage, len(ids))
	for i, id := range ids {
		out[i] = storedMessage{Seq: uint64(i + 1), ID: id, Body: bodyFor(id)}
	}
	return out
}

// digests turns fabricated records into what scanDigests would find.
func digests(msgs []storedMessage) (map[string][]digest, int) {
	found := map[string][]digest{}
	undecodable := 0
	for _, m := range msgs {
		if m.Bad {
			undecodable++
			continue
		}
		found[m.ID] = append(found[m.ID], sha256.Sum256(m.Body))
	}
	return found, undecodable
}

func ackedSet(ids ...string) map[string]uint64 {
	acked := map[string]uint64{}
	for i, id := range ids {
		acked[id] = uint64(i + 1)
	}
	return acked
}

// TestCount shows that both counts can fail: each fabricated log has one
// thing wrong, and both the main count and the cross-check must see it.
func TestCount(t *testing.T) {
	tests := []struct {
		name   string
		acked  map[string]uint64
		stored []storedMessage
		want   Counts
	}{
		{
			name:   "all present",
			acked:  ackedSet("a", "b", "c"),
			stored: stored("a", "b", "c"),
			want:   Counts{Recovered: 3},
		},
		{
			name:   "acknowledged but not in the log",
			acked:  ackedSet("a", "b", "c", "missing"),
			stored: stored("a", "b", "c"),
			want:   Counts{Recovered: 3, Lost: 1},
		},
		{
			name:   "duplicate",
			acked:  ackedSet("a", "b"),
			stored: stored("a", "b", "a"),
			want:   Counts{Recovered: 3, Duplicates: 1},
		},
		{
			name:   "three copies",
			acked:  ackedSet("a"),
			stored: stored("a", "a", "a"),
			want:   Counts{Recovered: 3, Duplicates: 2},
		},
		{
			name:  "wrong body",
			acked: ackedSet("a", "b"),
			stored: append(stored("a"),
				storedMessage{Seq: 2, ID: "b", Body: bodyFor("c")}),
			want: Counts{Recovered: 2, Corrupt: 1},
		},
		{
			name:  "body cut short",
			acked: ackedSet("a"),
			stored: []storedMessage{
				{Seq: 1, ID: "a", Body: bodyFor("a")[:len(bodyFor("a"))-1]}},
			want: Counts{Recovered: 1, Corrupt: 1},
		},
		{
			name:   "payload does not decode",
			acked:  ackedSet("a"),
			stored: append(stored("a"), storedMessage{Seq: 2, Bad: true}),
			want:   Counts{Recovered: 2, Corrupt: 1},
		},
		{
			name:   "present but never acknowledged (allowed)",
			acked:  ackedSet("a"),
			stored: stored("a", "b", "c"),
			want:   Counts{Recovered: 3, UnackedPresent: 2},
		},
		{
			name:   "everything at once",
			acked:  ackedSet("a", "b", "gone"),
			stored: append(stored("a", "a", "extra"), storedMessage{Seq: 4, ID: "b", Body: []byte("x")}),
			want:   Counts{Recovered: 4, Lost: 1, Duplicates: 1, Corrupt: 1, UnackedPresent: 1},
		},
		{
			name:  "empty log",
			acked: ackedSet("a", "b"),
			want:  Counts{Lost: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, count(tt.acked, tt.stored), "main count")
			found, undecodable := digests(tt.stored)
			assert.Equal(t, tt.want, crossCheck(tt.acked, found, undecodable), "cross-check")
		})
	}
}

// TestReadBack writes a known log of several segments through the queue and
// checks that both ways of reading it back find every message, in order, with
// its body.
func TestReadBack(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Flush: zeroloss.FlushAsync}
	q, err := zeroloss.Open(dir, cfg.queueOptions())
	require.NoError(t, err)
	acked := map[string]uint64{}
	var ids []string
	for i := range 8000 { // about 2.5 MiB of frames
		id := messageID(0, i%producers, i)
		res, err := q.Send(context.Background(), &zeroloss.Message{ID: id, Body: bodyFor(id)})
		require.NoError(t, err)
		require.Equal(t, zeroloss.SendOK, res.Status)
		acked[id] = res.Seq
		ids = append(ids, id)
	}
	require.NoError(t, q.Close())
	segments, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	require.NoError(t, err)
	require.Greater(t, len(segments), 1, "the log must span several segments")

	got, err := readLog(dir)
	require.NoError(t, err)
	require.Len(t, got, len(ids))
	for i, m := range got {
		assert.Equal(t, ids[i], m.ID)
		assert.Equal(t, acked[m.ID], m.Seq)
	}
	assert.Equal(t, Counts{Recovered: len(ids)}, count(acked, got))
	found, _, undecodable, err := scanDigests(dir)
	require.NoError(t, err)
	assert.Equal(t, Counts{Recovered: len(ids)}, crossCheck(acked, found, undecodable))

	delete(acked, ids[10])
	acked["never-sent"] = 1 << 40
	assert.Equal(t, Counts{Recovered: len(ids), Lost: 1, UnackedPresent: 1}, count(acked, got))
}

func TestBodyFor(t *testing.T) {
	a, b := bodyFor("r1-p0-1"), bodyFor("r1-p0-2")
	assert.NotEqual(t, a, b)
	assert.Equal(t, a, bodyFor("r1-p0-1"), "deterministic")
	lengths := map[int]bool{}
	for i := range 200 {
		body := bodyFor(messageID(1, 0, i))
		assert.Zero(t, len(body)%64)
		assert.True(t, len(body) >= 64 && len(body) <= 512, len(body))
		assert.Equal(t, strings.Repeat(string(body[:64]), len(body)/64), string(body))
		lengths[len(body)] = true
	}
	assert.Len(t, lengths, 8, "every length from 64 to 512 bytes occurs")
}

func TestParseAck(t *testing.T) {
	kind, id, seq, ok := parseAck("ok r1-p2-3 42\n")
	assert.True(t, ok)
	assert.Equal(t, "ok", kind)
	assert.Equal(t, "r1-p2-3", id)
	assert.Equal(t, uint64(42), seq)
	kind, id, seq, ok = parseAck("sp r1-p0-7\n")
	assert.True(t, ok)
	assert.Equal(t, []any{"sp", "r1-p0-7", uint64(0)}, []any{kind, id, seq}, "spooled: acknowledged, no seq yet")
	kind, id, _, ok = parseAck("rf r1-p0-8\n")
	assert.True(t, ok)
	assert.Equal(t, []any{"rf", "r1-p0-8"}, []any{kind, id})
	for _, bad := range []string{"", "ok\n", "ok a\n", "ok a b\n", "ok a 0\n", "ok a 1 2\n", "err a 1\n", "PASS\n",
		"sp\n", "sp a 1\n", "rf\n"} {
		_, _, _, ok := parseAck(bad)
		assert.False(t, ok, "%q", bad)
	}
}

// TestLostBelowKept tells a lost tail (a follower's lag) from holes.
func TestLostBelowKept(t *testing.T) {
	tests := []struct {
		name   string
		acked  map[string]uint64
		stored []storedMessage
		want   int
	}{
		{name: "nothing lost", acked: ackedSet("a", "b", "c"), stored: stored("a", "b", "c"), want: 0},
		{name: "the tail lost", acked: ackedSet("a", "b", "c", "d"), stored: stored("a", "b"), want: 0},
		{name: "everything lost", acked: ackedSet("a", "b"), stored: nil, want: 0},
		{name: "a hole", acked: ackedSet("a", "b", "c"), stored: []storedMessage{stored("a")[0], {Seq: 3, ID: "c", Body: bodyFor("c")}}, want: 1},
		{name: "a hole and the tail", acked: ackedSet("a", "b", "c", "d"), stored: []storedMessage{{Seq: 3, ID: "c", Body: bodyFor("c")}}, want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, lostBelowKept(tt.acked, tt.stored))
		})
	}
}
