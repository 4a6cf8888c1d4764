package conformance_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/conformance"
)

// TestEmbeddedQueue runs the conformance suite against the embedded queue,
// a new one in a temporary directory for each subtest.
func TestEmbeddedQueue(t *testing.T) {
	conformance.Run(t, func(t *testing.T) zeroloss.Backend {
		q, err := zeroloss.Open(t.TempDir(), nil)
		require.NoError(t, err)
		return q
	})
}
