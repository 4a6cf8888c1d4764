package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/lab"
	"github.com/zerolossmq/zeroloss/jetstream"
)

// TestMain hands the server child (this test binary re-executed by
// startChild) to serverMain before the testing flags are parsed.
func TestMain(m *testing.M) {
	if isServerChild(os.Args[1:]) {
		os.Exit(serverMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestProcessCrash runs one process-crash run of each configuration, the
// server child being this test binary: every SendOK must be found by both
// counts, and the two counts must agree.
func TestProcessCrash(t *testing.T) {
	dir := t.TempDir()
	jsonFile := filepath.Join(t.TempDir(), "report.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"--runs", "1", "--seed", "7", "--min-acks", "100", "--max-acks", "300", "--dir", dir, "--json", jsonFile}, &stdout, &stderr)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout.String(), stderr.String())
	assert.Empty(t, stderr.String())
	for _, want := range []string{
		`jetstream/sync=default +process-crash +1 +\d+ +\d+ +0 +0 +0 +0 .* agrees +ok: zero loss, as promised`,
		`jetstream/sync=always +process-crash +1 +\d+ +\d+ +0 +0 +0 +0 .* agrees +ok: zero loss, as promised`,
	} {
		assert.Regexp(t, "(?m)^"+want+"$", stdout.String())
	}
	assert.Contains(t, stdout.String(), "seed 7, 1 runs per row")

	data, err := os.ReadFile(jsonFile)
	require.NoError(t, err)
	var rep lab.Report
	require.NoError(t, json.Unmarshal(data, &rep))
	require.Len(t, rep.Rows, 2)
	for _, row := range rep.Rows {
		require.Len(t, row.Results, 1, row.Config)
		res := row.Results[0]
		assert.True(t, row.Promised, row.Config)
		assert.Equal(t, killPoint(7, row.Config, 1, 100, 300), res.KillAfter, "the seed sets the kill point")
		assert.GreaterOrEqual(t, res.Acknowledged, res.KillAfter, "%s: killed at the kill point, not before", row.Config)
		assert.Equal(t, res.Acknowledged+res.UnackedPresent, res.Recovered, "%s: every message found is an acked or unacked one, once", row.Config)
		assert.Positive(t, res.RecoveryTime, row.Config)
		assert.Empty(t, res.RecoveryError, row.Config)
		assert.Empty(t, res.Dir, "%s: a clean run's directory is removed", row.Config)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "clean runs leave nothing in --dir")
}

// TestCounts checks that both counts find what the crash runs must find:
// on a server in this process, ten messages sent through the adapter (their
// SendOKs are the acknowledged set), then one of them deleted (lost), one
// sent but not acknowledged (unacked), one with a body that is not its ID's
// (corrupt, and unacked), and one without an ID (a phantom). A count that
// could not see these would pass every crash run. (Duplicates are not made
// here: the stream's dedup window refuses a second message with an ID it
// holds, which is why the crash runs cannot produce one either.)
func TestCounts(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.conf")
	require.NoError(t, os.WriteFile(conf, []byte(serverConfig(filepath.Join(dir, "store"), true)), 0o600))
	srv, err := startServer(conf)
	require.NoError(t, err)
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	ctx := context.Background()
	nc, err := connect(srv.ClientURL(), "app")
	require.NoError(t, err)
	defer nc.Close()
	sys, err := connect(srv.ClientURL(), "sys")
	require.NoError(t, err)
	defer sys.Close()
	s := setup{Name: "test", SyncAlways: true}
	b, err := jetstream.Open(ctx, nc, s.backendOptions(sys))
	require.NoError(t, err)
	defer b.Close()

	acked := map[string]uint64{}
	for i := 1; i <= 10; i++ {
		id := lab.MessageID(1, i)
		r, err := b.Send(ctx, &zeroloss.Message{ID: id, Body: bodyOf(id)})
		require.NoError(t, err)
		require.Equal(t, zeroloss.SendOK, r.Status)
		acked[id] = r.Seq
	}
	unacked := lab.MessageID(1, 11)
	_, err = b.Send(ctx, &zeroloss.Message{ID: unacked, Body: bodyOf(unacked)})
	require.NoError(t, err)
	_, err = b.Send(ctx, &zeroloss.Message{ID: lab.MessageID(1, 12), Body: []byte("not its body")})
	require.NoError(t, err)
	js, err := natsjs.New(nc)
	require.NoError(t, err)
	_, err = js.Publish(ctx, jetstream.DefaultStream+".messages._._", []byte("nobody sent this")) // no Nats-Msg-Id
	require.NoError(t, err)
	stream, err := js.Stream(ctx, jetstream.DefaultStream)
	require.NoError(t, err)
	require.NoError(t, stream.DeleteMsg(ctx, acked[lab.MessageID(1, 5)]))

	want := lab.Counts{Recovered: 12, Lost: 1, Corrupt: 1, UnackedPresent: 2, Phantom: 1}
	cross, err := readBySeq(ctx, srv.ClientURL())
	require.NoError(t, err)
	assert.Equal(t, want, cross.Count(acked), "cross-check")
	main, err := readThroughAdapter(ctx, srv.ClientURL(), s)
	require.NoError(t, err)
	assert.Equal(t, want, main.Count(acked), "main count")
}

// TestKillPoint: a seed reproduces the kill points, which stay within the
// bounds and differ between rows and runs.
func TestKillPoint(t *testing.T) {
	seen := map[int]bool{}
	for n := 1; n <= 20; n++ {
		for _, s := range setups() {
			k := killPoint(42, s.Name, n, 200, 3000)
			assert.Equal(t, k, killPoint(42, s.Name, n, 200, 3000))
			assert.GreaterOrEqual(t, k, 200)
			assert.LessOrEqual(t, k, 3000)
			seen[k] = true
		}
	}
	assert.Greater(t, len(seen), 30, "40 draws in [200, 3000] should rarely repeat")
	assert.NotEqual(t, killPoint(1, "a", 1, 1, 1<<30), killPoint(2, "a", 1, 1, 1<<30), "the seed matters")
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--runs", "0"},
		{"--min-acks", "10", "--max-acks", "5"},
		{"somewhere"},
		{"--seed", "minus-one"},
	} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, 2, run(args, &stdout, &stderr), "%q", args)
		assert.Empty(t, stdout.String())
		assert.NotEmpty(t, stderr.String())
	}
}

// TestServerChild: the server child refuses bad arguments, and exits when
// its stdin ends (its parent is gone) rather than outliving it.
func TestServerChild(t *testing.T) {
	assert.Equal(t, serverUsage, serverMain([]string{serverCommand}))
	assert.Equal(t, serverUsage, serverMain([]string{serverCommand, "--conf"}))
	_, err := startChild(context.Background(), filepath.Join(t.TempDir(), "missing"), "x.conf", time.Minute)
	require.Error(t, err)

	dir := t.TempDir()
	conf := filepath.Join(dir, "server.conf")
	require.NoError(t, os.WriteFile(conf, []byte(serverConfig(filepath.Join(dir, "store"), false)), 0o600))
	exe, err := os.Executable()
	require.NoError(t, err)
	c, err := startChild(context.Background(), exe, conf, time.Minute)
	require.NoError(t, err)
	assert.Regexp(t, `^nats://127\.0\.0\.1:\d+$`, c.url)
	require.NoError(t, c.stdin.Close())
	select {
	case <-c.done:
		assert.Equal(t, 0, c.cmd.ProcessState.ExitCode(), "stderr: %s", c.stderr.String())
	case <-time.After(30 * time.Second):
		c.kill()
		t.Fatal("the server child outlived its stdin")
	}
	assert.Error(t, c.kill(), "killing a child that exited by itself is reported")
}
