package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunServesMetrics: run serves the collector's metrics over HTTP while
// the workload runs, and returns nil when its context ends.
func TestRunServesMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, t.TempDir(), "127.0.0.1:0", 200, func(a net.Addr) { addrs <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("run returned before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not listen within 10s")
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, want := range []string{
		`zeroloss_send_duration_seconds_bucket{queue="example",le="0.001"}`,
		`zeroloss_fsync_duration_seconds_count{queue="example"}`,
		`zeroloss_group_lag_messages{group="billing",queue="example",topic="orders"}`,
		`zeroloss_group_dead_letters{group="audit-log",queue="example",topic="audit"}`,
		`zeroloss_topic_groups{queue="example",topic="orders"} 1`,
		`go_goroutines`,
	} {
		assert.True(t, strings.Contains(string(body), want), "no %s in the scrape", want)
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within 10s of its context's end")
	}
}
