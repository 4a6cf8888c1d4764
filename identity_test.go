package zeroloss

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

func TestIdentityRoundTripAndDamage(t *testing.T) {
	dir := t.TempDir()
	_, ok, err := readIdentity(vfs.OS, dir)
	require.NoError(t, err)
	assert.False(t, ok, "a new directory has no identity")

	qid, err := newQueueID()
	require.NoError(t, err)
	require.False(t, qid.isZero())
	want := identity{Kind: kindFollower, Queue: qid}
	require.NoError(t, writeIdentity(vfs.OS, dir, want))
	got, ok, err := readIdentity(vfs.OS, dir)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, want, got)

	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, off := range []int{0, len(identityMagic), len(identityMagic) + 5, identitySize - 1} {
		bad := append([]byte(nil), b...)
		bad[off] ^= 0x40
		require.NoError(t, os.WriteFile(path, bad, 0o644))
		_, _, err := readIdentity(vfs.OS, dir)
		require.ErrorIs(t, err, ErrCorrupt, "flipped byte %d", off)
		var ce interface{ Error() string }
		require.True(t, errors.As(err, &ce))
		assert.Contains(t, err.Error(), path)
	}
	require.NoError(t, os.WriteFile(path, b[:10], 0o644))
	_, _, err = readIdentity(vfs.OS, dir)
	require.ErrorIs(t, err, ErrCorrupt, "a short file")
}
