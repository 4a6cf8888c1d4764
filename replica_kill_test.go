package zeroloss

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// The replication kill tests. A leader runs in a child process (the test
// binary re-executed with killChildDir+"_MODE=replica-leader", dispatched in
// TestMain) and sends under FlushSync to a follower that the test process
// runs on a Unix socket. The test kills the leader with SIGKILL, destroys the
// leader's directory, stops the follower and opens the follower's directory
// as a Queue (promotion), then compares it with the SendOKs the leader
// printed.
//
// Some runs stall the follower before the kill: from a moment T on, the
// follower's end of the link hands it nothing more (not even what a Read in
// progress at T returns), so the follower holds only what the leader wrote
// before T. The test then writes a line on the child's stdin and the child
// answers "mark"; every SendOK printed after the mark returned after T. A
// Send started after T has a seq above everything the follower holds, and at
// most one Send per goroutine started before T, so of the SendOKs printed
// after the mark all but at most replicaKillSenders are of messages the
// follower does not have. Under ReplicateSync there must be none of those;
// under ReplicateAsync the loss is then certain, which shows the async test
// can see a loss.

const (
	replicaKillSocket  = killChildDir + "_SOCKET"      // the follower's Unix socket, for the child
	replicaKillMode    = killChildDir + "_REPLICATION" // the child's ReplicationMode, as an int
	replicaKillRunsEnv = "ZEROLOSS_REPLICA_KILL_RUNS"  // runs per test, for a soak (default 20)
	replicaKillSeedEnv = "ZEROLOSS_REPLICA_KILL_SEED"  // seed of the kill times (default: the clock)

	replicaKillSenders = 8  // goroutines sending in the child
	replicaKillMinAcks = 20 // SendOKs before the load time starts
)

// Small segments, so that a run crosses segment boundaries on both sides.
var (
	replicaKillOptions       = Options{Flush: FlushSync, SegmentSize: 256 << 10, MaxMessageSize: 4 << 10}
	replicaKillFollowOptions = FollowOptions{SegmentSize: 256 << 10}
)

// replicaLeaderChild opens a leader in dir with the replication mode in
// replicaKillMode, attaches the follower listening on the Unix socket
// replicaKillSocket, and sends from replicaKillSenders goroutines until it is
// killed. It prints "ok ID SEQ" for every SendOK, "status ID SEQ STATUS" for
// another status, "error ID ERR" for a Send that failed, "replica-acked SEQ"
// when Stats().ReplicaAckedSeq moves, "mark" for every line it reads on
// stdin, and "fatal ..." if it cannot start. Each line is one write(2), so
// lines never interleave and their order is the order of the prints.
func replicaLeaderChild(dir string) {
	fatal := func(what string, err error) {
		fmt.Fprintln(os.Stdout, "fatal", what+":", err)
		os.Exit(3)
	}
	mode, err := strconv.Atoi(os.Getenv(replicaKillMode))
	if err != nil {
		fatal("replication mode", err)
	}
	opts := replicaKillOptions
	opts.Replication = ReplicationMode(mode)
	q, err := Open(dir, &opts)
	if err != nil {
		fatal("open", err)
	}
	link, err := net.Dial("unix", os.Getenv(replicaKillSocket))
	if err != nil {
		fatal("dial", err)
	}
	if err := q.AttachReplica(link); err != nil {
		fatal("attach", err)
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		line := fmt.Sprintf(format+"\n", args...)
		out.Lock()
		os.Stdout.WriteString(line)
		out.Unlock()
	}
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			say("mark")
		}
	}()
	go func() {
		tick := time.NewTicker(time.Millisecond)
		var last uint64
		for range tick.C {
			if acked := q.Stats().ReplicaAckedSeq; acked > last {
				last = acked
				say("replica-acked %d", acked)
			}
		}
	}()
	run := os.Getenv(killChildDir + "_RUN")
	for g := range replicaKillSenders {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%s-g%d-%d", run, g, i)
				res, err := q.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)})
				switch {
				case err != nil:
					say("error %s %v", id, err)
				case res.Status != SendOK:
					say("status %s %d %v", id, res.Seq, res.Status)
				default:
					say("ok %s %d", id, res.Seq)
				}
			}
		}()
	}
	select {}
}

// stallableLink is the follower's end of the link. Once stalled, it hands
// the follower nothing more: a Read returns only when the link is closed, and
// what a Read in progress gets is dropped.
type stallableLink struct {
	net.Conn
	stalled   chan struct{}
	closed    chan struct{}
	stallOnce sync.Once
	closeOnce sync.Once
}

func newStallableLink() *stallableLink {
	return &stallableLink{stalled: make(chan struct{}), closed: make(chan struct{})}
}

func (l *stallableLink) stall() { l.stallOnce.Do(func() { close(l.stalled) }) }

func (l *stallableLink) Read(b []byte) (int, error) {
	if l.isStalled() {
		<-l.closed
		return 0, net.ErrClosed
	}
	n, err := l.Conn.Read(b)
	if l.isStalled() {
		<-l.closed
		return 0, net.ErrClosed
	}
	return n, err
}

func (l *stallableLink) isStalled() bool {
	select {
	case <-l.stalled:
		return true
	default:
		return false
	}
}

func (l *stallableLink) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Conn.Close()
}

// replicaKillPlan says when a run kills the leader.
type replicaKillPlan struct {
	// load is how long the leader sends after its first replicaKillMinAcks
	// SendOKs before the kill, or before the stall.
	load time.Duration
	// stall stalls the follower after load, then kills the leader once the
	// child printed "mark" and, under ReplicateAsync, 2*replicaKillSenders
	// SendOKs after it (a loss of at least replicaKillSenders is then
	// certain); under ReplicateSync, 150ms after the mark.
	stall bool
}

// replicaKillResult is what a run saw and what the promoted follower holds.
type replicaKillResult struct {
	acked        map[string]uint64 // ID -> seq of every SendOK the leader printed
	replicaAcked uint64            // the highest Stats().ReplicaAckedSeq the leader printed
	okAfterMark  int               // SendOKs printed after "mark"
	notOK        int               // Sends printed with another status or an error
	followerLast uint64            // the promoted follower's last seq, as Follow left it
	held         map[uint64]stored // the promoted follower's messages, by seq
}

// replicaKillRuns returns how many runs a test makes and the seed of its
// kill times, logged so that a failure names it.
func replicaKillRuns(t *testing.T) (int, uint64) {
	runs := 20
	if testing.Short() {
		runs = 5
	}
	if s := os.Getenv(replicaKillRunsEnv); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, replicaKillRunsEnv)
		runs = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(replicaKillSeedEnv); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, replicaKillSeedEnv)
		seed = n
	}
	t.Logf("%d runs, seed %d (set %s to repeat the kill times)", runs, seed, replicaKillSeedEnv)
	return runs, seed
}

// runReplicaKill runs one leader child with mode against a follower in this
// process, kills it as plan says, destroys its directory, stops the follower
// and promotes it. It checks what holds in every mode: the promoted follower
// opens, holds each message once with its body, holds everything the leader
// saw it acknowledge, and holds every SendOK message at or below its last
// seq (it holds a prefix of the leader's log); a Send on it continues above
// that seq.
func runReplicaKill(t *testing.T, mode ReplicationMode, run int, plan replicaKillPlan) replicaKillResult {
	t.Helper()
	where := fmt.Sprintf("run %d (%v, load %v, stall %v)", run, mode, plan.load, plan.stall)
	// A short directory for the socket: its path must fit in sun_path.
	sockDir, err := os.MkdirTemp("", "zlrk")
	require.NoError(t, err)
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "s")
	leaderDir, followerDir := t.TempDir(), t.TempDir()

	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	link := newStallableLink()
	ctx, cancel := context.WithCancel(context.Background())
	followDone := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		ln.Close()
		if err != nil {
			followDone <- fmt.Errorf("accept: %w", err)
			return
		}
		link.Conn = conn
		opts := replicaKillFollowOptions
		followDone <- Follow(ctx, followerDir, link, &opts)
	}()
	var followErr error
	stopFollower := sync.OnceFunc(func() {
		ln.Close()
		cancel()
		select {
		case followErr = <-followDone:
		case <-time.After(10 * time.Second):
			followErr = errors.New("Follow did not return within 10s after its ctx ended")
		}
	})
	defer stopFollower()

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), killChildDir+"="+leaderDir, killChildDir+"_MODE=replica-leader",
		killChildDir+"_RUN="+strconv.Itoa(run), replicaKillSocket+"="+sock, replicaKillMode+"="+strconv.Itoa(int(mode)))
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	var planned, timedOut atomic.Bool
	kill := sync.OnceFunc(func() { cmd.Process.Kill() }) // SIGKILL
	defer func() {
		kill()
		cmd.Wait()
	}()
	safety := time.AfterFunc(30*time.Second, func() { timedOut.Store(true); kill() })
	defer safety.Stop()
	killNow := func() { planned.Store(true); kill() }

	res := replicaKillResult{acked: map[string]uint64{}, held: map[uint64]stored{}}
	var fatal string
	loaded, marked := false, false
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		switch {
		case len(f) == 3 && f[0] == "ok":
			seq, err := strconv.ParseUint(f[2], 10, 64)
			require.NoError(t, err, where)
			_, dup := res.acked[f[1]]
			require.False(t, dup, "%s: %s got SendOK twice", where, f[1])
			res.acked[f[1]] = seq
			if marked {
				res.okAfterMark++
				if mode == ReplicateAsync && res.okAfterMark == 2*replicaKillSenders {
					killNow()
				}
			}
			if !loaded && len(res.acked) == replicaKillMinAcks {
				loaded = true
				if plan.stall {
					time.AfterFunc(plan.load, func() {
						link.stall()
						io.WriteString(stdin, "stalled\n") // fails only if the child is gone
					})
				} else {
					time.AfterFunc(plan.load, killNow)
				}
			}
		case len(f) == 2 && f[0] == "replica-acked":
			seq, err := strconv.ParseUint(f[1], 10, 64)
			require.NoError(t, err, where)
			res.replicaAcked = max(res.replicaAcked, seq)
		case len(f) == 1 && f[0] == "mark":
			marked = true
			if mode == ReplicateSync {
				time.AfterFunc(150*time.Millisecond, killNow)
			}
		case len(f) > 0 && (f[0] == "status" || f[0] == "error"):
			res.notOK++
		case len(f) > 0 && f[0] == "fatal" && fatal == "":
			fatal = lines.Text()
			kill()
		}
	}
	require.NoError(t, lines.Err(), where)
	cmd.Wait()
	safety.Stop()
	if stderr.Len() > 0 {
		t.Logf("%s: the leader's stderr:\n%s", where, stderr.String())
	}
	require.Empty(t, fatal, "%s: the leader did not start", where)
	require.NotContains(t, stderr.String(), "DATA RACE", "%s: the race detector fired in the leader", where)
	require.False(t, timedOut.Load(), "%s: the leader was still running after 30s: %d SendOKs, marked %v, %d after the mark",
		where, len(res.acked), marked, res.okAfterMark)
	require.True(t, planned.Load(), "%s: the leader exited before it was killed: %v", where, cmd.ProcessState)

	require.NoError(t, os.RemoveAll(leaderDir), "%s: destroying the leader's directory", where)
	stopFollower()
	// The leader's death ends the link: at a message boundary (EOF), in the
	// middle of one or with the follower's ack unwritten (a link error, the
	// partial message not written), or not yet seen (ctx ended). None of
	// these is a protocol error or damage.
	t.Logf("%s: %d SendOKs, %d other statuses, %d SendOKs after the mark, Follow returned: %v",
		where, len(res.acked), res.notOK, res.okAfterMark, followErr)
	require.Error(t, followErr, where)
	require.False(t, errors.Is(followErr, ErrReplication) || errors.Is(followErr, ErrCorrupt),
		"%s: Follow returned %v", where, followErr)

	// The follower's last seq as Follow left it, read without opening the
	// log: promotion may write records of its own.
	scan, err := wal.Scan(vfs.OS, followerDir)
	require.NoError(t, err, "%s: scanning the follower's log", where)
	res.followerLast = scan.LastSeq
	promoted, err := Open(followerDir, &Options{SegmentSize: replicaKillOptions.SegmentSize, MaxMessageSize: replicaKillOptions.MaxMessageSize})
	require.NoError(t, err, "%s: the follower's directory opens as a Queue", where)
	defer promoted.Close()
	ids := map[string]uint64{}
	for _, s := range readBack(t, promoted) {
		other, dup := ids[s.Msg.ID]
		require.False(t, dup, "%s: %s is on the follower twice, at seqs %d and %d", where, s.Msg.ID, other, s.Seq)
		ids[s.Msg.ID] = s.Seq
		require.Equal(t, bodyFor(s.Msg.ID), s.Msg.Body, "%s: body of %s (seq %d) on the follower", where, s.Msg.ID, s.Seq)
		res.held[s.Seq] = s
	}
	require.GreaterOrEqual(t, res.followerLast, res.replicaAcked,
		"%s: the follower holds seqs up to %d, but the leader saw it acknowledge %d", where, res.followerLast, res.replicaAcked)
	for id, seq := range res.acked {
		if seq > res.followerLast {
			continue // the mode's test decides
		}
		s, ok := res.held[seq]
		require.True(t, ok, "%s: SendOK message %s (seq %d) is missing on the follower, which holds seqs up to %d", where, id, seq, res.followerLast)
		require.Equal(t, id, s.Msg.ID, "%s: seq %d holds another message on the follower", where, seq)
	}

	after, err := promoted.Send(context.Background(), &Message{ID: "promoted", Body: bodyFor("promoted")})
	require.NoError(t, err, where)
	require.Equal(t, SendOK, after.Status, where)
	require.Greater(t, after.Seq, res.followerLast, "%s: the promoted follower continues above its last seq", where)
	require.NoError(t, promoted.Close(), where)
	return res
}

// replicaKillPlans draws each run's plan: a load of 50-350ms, and every
// fourth run stalls the follower after 0-150ms instead.
func replicaKillPlans(runs int, seed uint64, mode ReplicationMode) []replicaKillPlan {
	rng := rand.New(rand.NewPCG(seed, uint64(mode)))
	plans := make([]replicaKillPlan, runs)
	for run := range plans {
		if run%4 == 3 {
			plans[run] = replicaKillPlan{load: time.Duration(rng.IntN(150)) * time.Millisecond, stall: true}
		} else {
			plans[run] = replicaKillPlan{load: time.Duration(50+rng.IntN(300)) * time.Millisecond}
		}
	}
	return plans
}

// TestReplicaKillSyncPromotedFollowerHoldsEverySendOK: under ReplicateSync,
// with the follower in another process than the leader, the leader is killed
// (-9) at a random moment and its directory destroyed; the promoted follower
// holds every message the leader reported SendOK, once, with its body. In
// the runs that stall the follower, no Send started after the stall gets
// SendOK.
func TestReplicaKillSyncPromotedFollowerHoldsEverySendOK(t *testing.T) {
	runs, seed := replicaKillRuns(t)
	total := 0
	for run, plan := range replicaKillPlans(runs, seed, ReplicateSync) {
		res := runReplicaKill(t, ReplicateSync, run, plan)
		where := fmt.Sprintf("run %d (seed %d, load %v, stall %v)", run, seed, plan.load, plan.stall)
		for id, seq := range res.acked {
			s, ok := res.held[seq]
			require.True(t, ok, "%s: SendOK message %s (seq %d) is not on the promoted follower, which holds seqs up to %d",
				where, id, seq, res.followerLast)
			require.Equal(t, id, s.Msg.ID, "%s: seq %d holds another message on the follower", where, seq)
		}
		if plan.stall {
			require.LessOrEqual(t, res.okAfterMark, replicaKillSenders,
				"%s: SendOKs printed after the follower stalled: at most one per sending goroutine can be of a Send started before", where)
		}
		total += len(res.acked)
	}
	t.Logf("%d SendOK messages over %d runs, all on the promoted followers", total, runs)
}

// TestReplicaKillAsyncLossWindow: the same scenario under ReplicateAsync
// shows the loss window. A SendOK message missing on the promoted follower
// must be above the follower's last seq (the loss is a suffix of the log),
// so also above the last ReplicaAckedSeq the leader printed: the loss is at
// most the SendOKs above what the leader knew the follower held. Runs that
// stall the follower must lose messages, which shows the loss is seen.
func TestReplicaKillAsyncLossWindow(t *testing.T) {
	runs, seed := replicaKillRuns(t)
	runsWithLoss, totalLost, totalAcked := 0, 0, 0
	for run, plan := range replicaKillPlans(runs, seed, ReplicateAsync) {
		res := runReplicaKill(t, ReplicateAsync, run, plan)
		where := fmt.Sprintf("run %d (seed %d, load %v, stall %v)", run, seed, plan.load, plan.stall)
		var lost []uint64
		lostID := map[uint64]string{}
		aboveAcked := 0 // SendOKs above the leader's last known ReplicaAckedSeq: the allowed loss
		for id, seq := range res.acked {
			if seq > res.replicaAcked {
				aboveAcked++
			}
			if s, ok := res.held[seq]; ok {
				require.Equal(t, id, s.Msg.ID, "%s: seq %d holds another message on the follower", where, seq)
				continue
			}
			require.Greater(t, seq, res.followerLast, "%s: SendOK message %s (seq %d) lost below the follower's last seq: not a suffix",
				where, id, seq)
			lost = append(lost, seq)
			lostID[seq] = id
		}
		slices.Sort(lost)
		require.LessOrEqual(t, len(lost), aboveAcked, "%s: lost more than the replication lag allowed", where)
		if len(lost) > 0 {
			runsWithLoss++
			var named []string
			for _, seq := range lost {
				named = append(named, fmt.Sprintf("%s@%d", lostID[seq], seq))
			}
			t.Logf("%s: lost %d of %d SendOK messages; follower last seq %d, leader's last ReplicaAckedSeq %d, %d SendOKs above it; lost: %s",
				where, len(lost), len(res.acked), res.followerLast, res.replicaAcked, aboveAcked, strings.Join(named, " "))
		} else {
			t.Logf("%s: lost none of %d SendOK messages; follower last seq %d, leader's last ReplicaAckedSeq %d",
				where, len(res.acked), res.followerLast, res.replicaAcked)
		}
		if plan.stall {
			require.GreaterOrEqual(t, len(lost), res.okAfterMark-replicaKillSenders,
				"%s: the follower stalled, %d SendOKs were printed after it: those of Sends started after the stall must be lost",
				where, res.okAfterMark)
		}
		totalLost += len(lost)
		totalAcked += len(res.acked)
	}
	t.Logf("%d of %d runs lost SendOK messages: %d of %d in all", runsWithLoss, runs, totalLost, totalAcked)
}
