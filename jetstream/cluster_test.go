package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/jetstream"
)

// clusterEnv names the environment variable that runs TestClusterNodeStop.
const clusterEnv = "ZEROLOSS_JS_CLUSTER"

// TestClusterNodeStop starts a 3-node JetStream cluster on loopback in the
// test process (sync_interval: always on each node), opens the adapter with
// R3 streams under Strict options requiring 3 replicas and a verified sync
// setting, and runs a strict send loop: 4 producers, each message resent
// with its ID until it is confirmed with SendOK. When a third of the
// messages are confirmed, the node leading the stream is stopped; when two
// thirds are, it is started again. Afterwards a new consumer group must
// receive every message that was confirmed, and nothing that was never sent.
//
// It takes about a minute and runs only when ZEROLOSS_JS_CLUSTER is set:
//
//	cd jetstream && ZEROLOSS_JS_CLUSTER=1 go test -race -run TestClusterNodeStop -v .
func TestClusterNodeStop(t *testing.T) {
	if os.Getenv(clusterEnv) == "" {
		t.Skipf("set %s=1 to run the 3-node JetStream cluster test", clusterEnv)
	}
	const (
		producers   = 4
		perProducer = 500
		total       = producers * perProducer
	)
	dir := t.TempDir()
	ports := freePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	var nodes []*testServer
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, p := range ports {
		name := fmt.Sprintf("n%d", i+1)
		cluster := fmt.Sprintf("cluster { name: zl, listen: 127.0.0.1:%d, routes: [%s] }", p, strings.Join(routes, ", "))
		conf := serverConfig(name, filepath.Join(dir, name), true, cluster)
		// Start the three together: each waits for its routes.
		wg.Go(func() {
			s := startServer(t, name, dir, conf)
			mu.Lock()
			nodes = append(nodes, s)
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Len(t, nodes, 3)
	nc, sys := connect(t, "app", nodes...), connect(t, "sys", nodes...)

	// The meta leader takes a moment to be elected: retry Open.
	var b *jetstream.Backend
	require.Eventually(t, func() bool {
		var err error
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b, err = jetstream.Open(ctx, nc, &jetstream.Options{
			Stream:     "CLUSTER",
			Replicas:   3,
			Require:    jetstream.Requirement{Replicas: 3},
			Strict:     true,
			SystemConn: sys,
		})
		if err != nil {
			t.Logf("open: %v", err)
		}
		return err == nil
	}, time.Minute, 500*time.Millisecond)
	defer b.Close()
	g := b.Guarantee()
	require.Equal(t, 3, g.Replicas)
	require.True(t, g.SyncVerified)
	require.Len(t, g.Servers, 3, "every node reported its sync setting")

	// The strict send loop.
	start := time.Now()
	var (
		confirmed   sync.Map // ID → seq, for each SendOK
		count       = make(chan struct{}, total)
		unconfirmed int
		unconfMu    sync.Mutex
	)
	send := func(id string) {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			res, err := b.Send(ctx, &zeroloss.Message{ID: id, Body: []byte("body of " + id)})
			cancel()
			if err == nil && res.Status == zeroloss.SendOK {
				confirmed.Store(id, res.Seq)
				count <- struct{}{}
				return
			}
			if err != nil && !errors.Is(err, jetstream.ErrUnconfirmed) && !errors.Is(err, jetstream.ErrNotStored) {
				t.Errorf("send %s: %v", id, err)
				return
			}
			unconfMu.Lock()
			unconfirmed++
			unconfMu.Unlock()
			time.Sleep(50 * time.Millisecond) // a leader election is under way
		}
	}
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				send(fmt.Sprintf("p%d-%04d", p, i))
			}
		})
	}
	// The chaos: stop the stream's leader at a third, restart it at two thirds.
	js, err := natsjs.New(nc)
	require.NoError(t, err)
	var stopped *testServer
	for n := 1; n <= total; n++ {
		select {
		case <-count:
		case <-time.After(time.Minute):
			t.Fatalf("only %d of %d messages confirmed after a minute without progress", n-1, total)
		}
		switch n {
		case total / 3:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s, err := js.Stream(ctx, "CLUSTER")
			require.NoError(t, err)
			leader := s.CachedInfo().Cluster.Leader
			cancel()
			for _, node := range nodes {
				if node.name == leader {
					stopped = node
				}
			}
			require.NotNil(t, stopped, "leader %q", leader)
			t.Logf("%d confirmed after %v: stopping the stream leader %s", n, time.Since(start).Round(time.Millisecond), leader)
			stopped.stop()
		case 2 * total / 3:
			t.Logf("%d confirmed after %v: starting %s again", n, time.Since(start).Round(time.Millisecond), stopped.name)
			stopped.start(t)
		}
	}
	wg.Wait()
	t.Logf("%d messages confirmed in %v; %d sends were not confirmed and were resent", total, time.Since(start).Round(time.Millisecond), unconfirmed)

	// Every confirmed message is delivered.
	sub, err := b.Consumer("verify", &zeroloss.ConsumerOptions{AckTimeout: 30 * time.Second})
	require.NoError(t, err)
	delivered := map[string]int{}
	deadline := time.Now().Add(2 * time.Minute)
	for len(delivered) < total {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		d, err := sub.Receive(ctx)
		cancel()
		require.NoError(t, err, "%d of %d confirmed messages delivered", len(delivered), total)
		info := d
		seq, ok := confirmed.Load(info.Message.ID)
		require.True(t, ok, "delivered %q, which was never confirmed", info.Message.ID)
		assert.Equal(t, "body of "+info.Message.ID, string(info.Message.Body))
		if delivered[info.Message.ID] == 0 {
			assert.Equal(t, seq, info.Seq, "%s: delivered at the seq its SendOK named", info.Message.ID)
		}
		delivered[info.Message.ID]++
		require.NoError(t, d.Ack())
	}
	duplicates := 0
	for _, n := range delivered {
		duplicates += n - 1
	}
	t.Logf("all %d confirmed messages delivered (%d duplicates) in %v", total, duplicates, time.Since(start).Round(time.Millisecond))
	assert.Zero(t, duplicates, "the dedup window covers every resend")
}
