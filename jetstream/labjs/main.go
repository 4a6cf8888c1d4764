// Command labjs runs the loss lab's process-crash scenario (internal/lab)
// against the JetStream adapter: `zeroloss lab --jetstream` runs it with
// `go run`, here, in the jetstream module, so that the library's go.mod
// never requires NATS.
//
//	go run ./labjs [--runs N] [--seed S] [--dir D] [--min-acks N] [--max-acks N] [--json FILE] [--keep]
//
// It prints the lab's table, one row per JetStream configuration:
//
//	jetstream/sync=default  the nats-server default: a PubAck after the
//	                        write(2), fsync in the background (every 2
//	                        minutes); the adapter opened with
//	                        Require.AcceptBackgroundSync, under Strict
//	jetstream/sync=always   sync_interval: always: fsync before every
//	                        PubAck; the adapter opened under Strict with
//	                        the default Requirement, which checks the
//	                        server's setting through the system account
//
// Both rows are promised zero loss: jetstream/README.md says that a SendOK
// under either configuration survives a crash of the nats-server process.
//
// # A run
//
// The failure is the queue process dying, as in the embedded lab's
// process-crash row: there the queue runs in the child that is killed, and
// here the queue is nats-server, so the child (this program re-executed,
// see serverMain) runs one nats-server, in-process, on loopback, with file
// storage in the run directory. The producers are not in the child: they
// are the lab itself (the parent), 8 goroutines sending through
// jetstream.Backend, as an application sends to a server that is a process
// of its own. That makes the set of acknowledged messages exact: every
// Send that returned SendOK is recorded (ID and seq; the body is derived
// from the ID), where the embedded lab only learns the SendOKs its child
// printed before it died.
//
//  1. The parent starts the child, which prints "ready URL" once its server
//     accepts connections; the parent opens the adapter on that server
//     (which creates the stream) and starts the producers.
//  2. After a random number of SendOKs (drawn from a math/rand/v2 PCG seeded
//     by --seed, so a seed reproduces the kill points, though not the
//     timing) it kills the child with SIGKILL. The producers stop: a Send in
//     flight at the kill fails (ErrUnconfirmed) and counts as refused (not
//     acknowledged, so never lost; counted in "unacked" if found anyway).
//  3. It starts a new nats-server, in the lab's own process this time (the
//     producers are done), on the same store directory and configuration
//     (RecoveryTime: until it accepts connections, its streams recovered),
//     and counts twice. The cross-check, first, so that nothing has touched
//     the stream: every sequence from the stream's first to its last, read
//     directly with the nats.go JetStream API (Stream.GetMsg: the server's
//     message-get API), by its Nats-Msg-Id header and the SHA-256 of its
//     body. The main count, through the adapter, as an application reads: a
//     fresh consumer group (jetstream.Backend.Consumer, which starts at the
//     oldest message) receiving and acking every message the stream holds.
//     Both count, against the acknowledged set, what is lost (acknowledged,
//     not found), duplicated (an ID found more than once), corrupt (a body
//     that is not the one derived from its ID), unacknowledged but present,
//     and phantom (a message without an ID: nobody here sent it). The two
//     counts must agree.
//
// A run that lost or corrupted data, whose counts disagree, or that failed
// keeps its directory (store and server.conf) for inspection; the others
// are removed unless --keep is set.
//
// # What it does not do
//
// There is no power-loss row. The embedded lab simulates a power loss by
// cutting each file back to what its last completed fdatasync covered,
// which it knows because the queue writes through a file system the lab
// wraps. nats-server has no such hook: it opens and syncs its files itself,
// so the lab cannot know what it fsynced, and cutting its files at a guess
// would measure the guess. An honest power-loss row needs a real power cut
// (a VM or a device-mapper flakey target), which this program does not do.
//
// Both counts go through the restarted server: JetStream's block files are
// an internal format with no reader outside nats-server, so the cross-check
// is independent of the adapter and of the consumer path, not of the
// server's recovery.
//
// Exit status: 0 the lab ran (whatever it measured: the verdict column says
// whether a promise broke), 1 it could not measure, 2 a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/zerolossmq/zeroloss/internal/lab"
)

// Default bounds of the kill point, in SendOKs: smaller than the embedded
// lab's (500 to 8000), because sync=always acknowledges one fsync at a time.
const (
	defaultMinAcks = 200
	defaultMaxAcks = 3000
)

func main() {
	if isServerChild(os.Args[1:]) {
		os.Exit(serverMain(os.Args[1:]))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("labjs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runs := fs.Int("runs", lab.DefaultRuns, "runs of each configuration")
	seed := fs.Uint64("seed", 0, "seed of the kill points (0: from the clock; the report prints the seed used)")
	dir := fs.String("dir", os.TempDir(), "directory for the run directories")
	minAcks := fs.Int("min-acks", defaultMinAcks, "fewest acknowledged messages before the kill")
	maxAcks := fs.Int("max-acks", defaultMaxAcks, "most acknowledged messages before the kill")
	jsonFile := fs.String("json", "", "also write the report as JSON to `FILE`")
	keep := fs.Bool("keep", false, "keep every run's directory")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *runs < 1 || *minAcks < 1 || *maxAcks < *minAcks {
		fmt.Fprintf(stderr, "labjs: want [--runs N>0] [--seed S] [--dir D] [--min-acks N>0] [--max-acks N>=min] [--json FILE] [--keep]\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := lab.Options{Runs: *runs, Seed: *seed, Dir: *dir, MinAcks: *minAcks, MaxAcks: *maxAcks, KeepDirs: *keep}
	rep, err := runSetups(ctx, opts, setups())
	if rep != nil && len(rep.Rows) > 0 {
		if werr := rep.WriteTableAndJSON(stdout, *jsonFile); werr != nil && err == nil {
			err = werr
		}
		for _, row := range rep.Rows {
			for _, res := range row.Results {
				if res.Dir != "" {
					fmt.Fprintf(stderr, "labjs: %s run %d: kept %s\n", row.Config, res.Run, res.Dir)
				}
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "labjs: %v\n", err)
		return 1
	}
	return 0
}
