package zeroloss

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/hook"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

func TestHookFSIsUsedWhenOptionsNameNone(t *testing.T) {
	mem := vfs.NewMem()
	hook.FS = mem
	defer func() { hook.FS = nil }()
	q, err := Open("/hooked", &Options{SegmentSize: 64 << 10, MaxMessageSize: 1024})
	require.NoError(t, err)
	_, err = q.Send(context.Background(), &Message{Body: []byte("x")})
	require.NoError(t, err)
	require.NoError(t, q.Close())
	names, err := mem.List("/hooked")
	require.NoError(t, err)
	require.Contains(t, names, "00000000000000000001.wal", "the queue wrote to the hooked file system")
}
