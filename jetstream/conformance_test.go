package jetstream_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/conformance"
	"github.com/zerolossmq/zeroloss/jetstream"
)

// TestConformance runs the conformance suite, the same as the embedded
// queue's, against one nats-server in the test process (sync_interval:
// always), each subtest on streams of its own, with Strict options: the
// adapter verified the configuration before the first Send.
func TestConformance(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "n1", dir, serverConfig("n1", dir, true, ""))
	nc, sys := connect(t, "app", s), connect(t, "sys", s)
	var n atomic.Int64
	conformance.Run(t, func(t *testing.T) zeroloss.Backend {
		b, err := jetstream.Open(context.Background(), nc, &jetstream.Options{
			Stream:     fmt.Sprintf("T%d", n.Add(1)),
			SystemConn: sys,
			Strict:     true,
		})
		require.NoError(t, err)
		return b
	}, "Release")
}
