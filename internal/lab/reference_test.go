package lab

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// observeInto runs a reference child's Observe on dir and plays its reports
// into m, as the parent would.
func observeInto(t *testing.T, m *powerModel, dir string, dirSynced bool) {
	t.Helper()
	var out bytes.Buffer
	c := newReferenceChildTo(&out, strings.NewReader(strings.Repeat(".", 64)))
	require.NoError(t, c.Observe(dir, dirSynced))
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		report, ok := strings.CutPrefix(sc.Text(), "fs ")
		require.True(t, ok, sc.Text())
		words, err := parseReport(report)
		require.NoError(t, err)
		_, err = m.handle(words)
		require.NoError(t, err, report)
	}
}

// TestReferenceChildObserve: what a reference child reports makes the
// model keep exactly the bytes observed after a durable write, and, unless
// the directory entries are reported as kept, not even the files.
func TestReferenceChildObserve(t *testing.T) {
	for _, kept := range []bool{false, true} {
		dir := t.TempDir()
		seg := filepath.Join(dir, "00000000000000000001")
		require.NoError(t, os.WriteFile(seg, bytes.Repeat([]byte{'a'}, 100), 0o600))
		m := newPowerModel()
		observeInto(t, m, dir, kept)
		f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		_, err = f.Write(bytes.Repeat([]byte{'b'}, 50)) // written, never observed as durable
		require.NoError(t, err)
		require.NoError(t, f.Close())
		require.NoError(t, m.apply(dir, rand.New(rand.NewPCG(1, 1)), lossDrop))
		data, err := os.ReadFile(seg)
		if !kept {
			assert.True(t, os.IsNotExist(err), "no directory fsync: the file's entry is not durable")
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, bytes.Repeat([]byte{'a'}, 100), data, "the observed size is durable, the rest is cut")
	}
}

func TestReadBackCounts(t *testing.T) {
	var rb ReadBack
	rb.Add(EntryData("a"))
	rb.Add(EntryData("a"))
	rb.Add([]byte("b\nnot b's body"))
	rb.Add(nil) // an empty entry read from zeros
	rb.Add(EntryData("unacked"))
	rb.Undecodable = 1
	assert.Equal(t, [][sha256.Size]byte{sha256.Sum256(bodyFor("a")), sha256.Sum256(bodyFor("a"))}, rb.Bodies["a"])
	got := rb.counts(ackedSet("a", "b", "gone"))
	assert.Equal(t, Counts{Recovered: 6, Lost: 1, Duplicates: 1, Corrupt: 2, UnackedPresent: 1, Phantom: 1}, got)
	assert.Equal(t, "r3-p0-9", MessageID(3, 9))
}
