package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/lab"
	"github.com/zerolossmq/zeroloss/jetstream"
)

// producers is how many goroutines send, as in the embedded lab.
const producers = 8

// sendTimeout bounds one Send (the adapter's Options.Timeout), and so how
// long the producers take to notice the kill at worst.
const sendTimeout = 5 * time.Second

// setup is one JetStream configuration: one row of the report.
type setup struct {
	// Name labels the row.
	Name string
	// SyncAlways sets sync_interval: always on the server; without it the
	// server fsyncs in the background (its default) and the adapter is
	// opened with Require.AcceptBackgroundSync.
	SyncAlways bool
}

// setups returns the rows labjs measures.
func setups() []setup {
	return []setup{
		{Name: "jetstream/sync=default", SyncAlways: false},
		{Name: "jetstream/sync=always", SyncAlways: true},
	}
}

// backendOptions are the adapter's options for s: Strict, so that Open
// fails rather than let SendOK mean less than s requires; the sync setting
// checked through sys.
func (s setup) backendOptions(sys *nats.Conn) *jetstream.Options {
	return &jetstream.Options{
		Strict:     true,
		Require:    jetstream.Requirement{AcceptBackgroundSync: !s.SyncAlways},
		SystemConn: sys,
		Timeout:    sendTimeout,
	}
}

// runSetups runs o.Runs process-crash runs of each setup, one at a time,
// the child being o.Executable (default: this program), and returns one row
// per setup, each promised zero loss. It returns an error, with the rows
// completed so far, when the lab could not measure.
func runSetups(ctx context.Context, o lab.Options, ss []setup) (*lab.Report, error) {
	if o.Runs < 1 || o.MinAcks < 1 || o.MaxAcks < o.MinAcks {
		return nil, fmt.Errorf("runs %d, acks %d to %d: want runs >= 1 and 1 <= min <= max", o.Runs, o.MinAcks, o.MaxAcks)
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if o.RunTimeout == 0 {
		o.RunTimeout = lab.DefaultRunTimeout
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	if o.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the program to run as the server child: %w", err)
		}
		o.Executable = exe
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	labDir, err := os.MkdirTemp(o.Dir, "zeroloss-lab-js-")
	if err != nil {
		return nil, err
	}
	start := time.Now()
	rep := &lab.Report{Seed: o.Seed, RunsPerRow: o.Runs}
	var runErr error
rows:
	for _, s := range ss {
		row := lab.Row{Config: s.Name, Failure: lab.ProcessCrash.Name, Promised: true}
		rowStart := time.Now()
		for n := 1; n <= o.Runs; n++ {
			res, err := runOnce(ctx, o, labDir, s, n)
			if err != nil {
				runErr = fmt.Errorf("%s run %d: %w (directory kept: %s)", s.Name, n, err, res.Dir)
				break rows
			}
			row.Results = append(row.Results, res)
		}
		row.Elapsed = time.Since(rowStart)
		rep.AddRow(row)
	}
	rep.Elapsed = time.Since(start)
	if !o.KeepDirs {
		os.Remove(labDir) // fails, as it should, if a run kept its directory
	}
	return rep, runErr
}

// killPoint draws the number of SendOKs after which run n of the row called
// name kills the server: uniform in [minAcks, maxAcks], from a PCG seeded by
// seed and the row and run, so that a seed reproduces every kill point.
func killPoint(seed uint64, name string, n, minAcks, maxAcks int) int {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%s/%d", name, lab.ProcessCrash.Name, n)
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	return minAcks + rng.IntN(maxAcks-minAcks+1)
}

// runOnce is one run: start the server child, send until the kill point,
// kill it, restart a server on its store and count.
func runOnce(ctx context.Context, o lab.Options, labDir string, s setup, n int) (res lab.RunResult, err error) {
	res.Run = n
	res.KillAfter = killPoint(o.Seed, s.Name, n, o.MinAcks, o.MaxAcks)
	dir := filepath.Join(labDir, fmt.Sprintf("%s-%s-%03d", strings.NewReplacer("/", "_", "=", "-").Replace(s.Name), lab.ProcessCrash.Name, n))
	res.Dir = dir
	defer func() {
		if err == nil && !o.KeepDirs && res.Lost == 0 && res.Corrupt == 0 && res.Phantom == 0 &&
			res.RecoveryError == "" && res.CrossCheckAgrees() {
			os.RemoveAll(dir)
			res.Dir = ""
		}
	}()
	conf := filepath.Join(dir, "server.conf")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	if err := os.WriteFile(conf, []byte(serverConfig(filepath.Join(dir, "store"), s.SyncAlways)), 0o600); err != nil {
		return res, err
	}
	child, err := startChild(ctx, o.Executable, conf, o.RunTimeout+30*time.Second)
	if err != nil {
		return res, err
	}
	sent, err := sendUntilKilled(ctx, o, child, s, n, res.KillAfter)
	if err != nil {
		child.kill()
		return res, err
	}
	res.Acknowledged, res.Refused = len(sent.acked), sent.refused
	if elapsed := sent.last.Sub(sent.first); elapsed > 0 {
		res.Throughput = float64(len(sent.acked)-1) / elapsed.Seconds()
	}

	recoverStart := time.Now()
	srv, err := startServer(conf)
	res.RecoveryTime = time.Since(recoverStart)
	if err != nil {
		// The server refuses its own store: every acknowledged message is
		// out of reach. A finding, not a lab failure.
		res.RecoveryError = err.Error()
		res.Lost, res.CrossCheck.Lost = len(sent.acked), len(sent.acked)
		return res, nil
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	// The cross-check first: it only reads, while the adapter's Open would
	// create a stream that the crash had lost.
	cross, err := readBySeq(ctx, srv.ClientURL())
	if err != nil {
		return res, fmt.Errorf("the cross-check: %w", err)
	}
	main, err := readThroughAdapter(ctx, srv.ClientURL(), s)
	if err != nil {
		return res, fmt.Errorf("the main count: %w", err)
	}
	res.Counts = main.Count(sent.acked)
	res.CrossCheck = cross.Count(sent.acked)
	return res, nil
}

// sendLog is what the producers were told.
type sendLog struct {
	mu          sync.Mutex
	acked       map[string]uint64 // ID → seq of its SendOK
	refused     int               // an error or another status than SendOK
	first, last time.Time         // of the first and the last SendOK
	killAfter   int
	killPoint   chan struct{} // closed at the killAfter-th SendOK
}

func (l *sendLog) ack(id string, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[id] = seq
	now := time.Now()
	if l.first.IsZero() {
		l.first = now
	}
	l.last = now
	if len(l.acked) == l.killAfter {
		close(l.killPoint)
	}
}

func (l *sendLog) refuse() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refused++
}

// sendUntilKilled opens the adapter on the child's server and sends from
// producers goroutines; at the killAfter-th SendOK it kills the child with
// SIGKILL, waits for the producers to stop, and returns what they were
// told. The message IDs are lab.MessageID(run, i), their bodies derived
// from them.
func sendUntilKilled(ctx context.Context, o lab.Options, child *serverChild, s setup, run, killAfter int) (*sendLog, error) {
	// No reconnection: after the kill a Send must fail, not wait for a
	// server that the lab restarts only once the producers are done.
	nc, err := nats.Connect(child.url, nats.UserInfo("app", "app"), nats.NoReconnect())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	sys, err := nats.Connect(child.url, nats.UserInfo("sys", "sys"), nats.NoReconnect())
	if err != nil {
		return nil, err
	}
	defer sys.Close()
	b, err := jetstream.Open(ctx, nc, s.backendOptions(sys))
	if err != nil {
		return nil, err
	}
	defer b.Close()

	sent := &sendLog{acked: make(map[string]uint64, killAfter+1024), killAfter: killAfter, killPoint: make(chan struct{})}
	var next atomic.Int64
	var killed atomic.Bool
	var wg sync.WaitGroup
	failed := make(chan error, producers)
	for range producers {
		wg.Go(func() {
			for !killed.Load() {
				id := lab.MessageID(run, int(next.Add(1)))
				r, err := b.Send(ctx, &zeroloss.Message{ID: id, Body: bodyOf(id)})
				switch {
				case err == nil && r.Status == zeroloss.SendOK:
					sent.ack(id, r.Seq)
				case err == nil:
					sent.refuse() // stored, but SendOK not confirmed: not promised
				case killed.Load():
					sent.refuse() // in flight at the kill
					return
				default:
					failed <- fmt.Errorf("send %s before the kill: %w", id, err)
					return
				}
			}
		})
	}
	stopped := make(chan struct{})
	go func() {
		wg.Wait()
		close(stopped)
	}()
	timer := time.NewTimer(o.RunTimeout)
	defer timer.Stop()
	var runErr error
	select {
	case <-sent.killPoint:
	case <-stopped:
		runErr = <-failed
	case <-timer.C:
		sent.mu.Lock()
		runErr = fmt.Errorf("%d of %d SendOKs within %v", len(sent.acked), killAfter, o.RunTimeout)
		sent.mu.Unlock()
	case <-ctx.Done():
		runErr = ctx.Err()
	}
	killed.Store(true)
	if runErr != nil {
		wg.Wait()
		return nil, runErr
	}
	if err := child.kill(); err != nil {
		return nil, err
	}
	wg.Wait()
	return sent, nil
}

// bodyOf is the body the lab derives from a message ID (lab.EntryData
// without its "ID\n" prefix).
func bodyOf(id string) []byte { return lab.EntryData(id)[len(id)+1:] }
