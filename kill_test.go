package zeroloss

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// killChildDir is set in the environment of the re-executed test binary.
const killChildDir = "ZEROLOSS_KILL_CHILD_DIR"

// bodyFor derives a message body from its ID, so a reader can check that the
// body it got back is the one that was sent.
func bodyFor(id string) []byte {
	sum := sha256.Sum256([]byte(id))
	return []byte(strings.Repeat(fmt.Sprintf("%x", sum), 1+len(id)%5))
}

// TestMain runs the child half of the kill tests when the test binary is
// re-executed with killChildDir set, and the tests otherwise.
func TestMain(m *testing.M) {
	if dir := os.Getenv(killChildDir); dir != "" {
		if os.Getenv(killChildDir+"_MODE") == "produce" {
			produceChild(dir) // producer_test.go; never returns
		}
		if os.Getenv(killChildDir+"_MODE") == "topics" {
			topicsChild(dir) // topics_kill_test.go; never returns
		}
		if os.Getenv(killChildDir+"_MODE") == "ordered" {
			orderedChild(dir) // ordered_kill_test.go; never returns
		}
		if os.Getenv(killChildDir+"_MODE") == "replica-leader" {
			replicaLeaderChild(dir) // replica_kill_test.go; never returns
		}
		if os.Getenv(killChildDir+"_MODE") == "consume" {
			consumeChild(dir)
		} else {
			killChild(dir)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// killChild sends from 8 goroutines under FlushSync and prints "ok ID SEQ"
// for every SendOK, until it is killed.
func killChild(dir string) {
	q, err := Open(dir, &Options{Flush: FlushSync, SegmentSize: 256 << 10, MaxMessageSize: 4 << 10})
	if err != nil {
		fmt.Fprintln(os.Stdout, "open-error", err)
		os.Exit(3)
	}
	run := os.Getenv(killChildDir + "_RUN")
	var out sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%s-g%d-%d", run, g, i)
				res, err := q.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)})
				if err != nil || res.Status != SendOK {
					continue
				}
				line := fmt.Sprintf("ok %s %d\n", id, res.Seq)
				out.Lock()
				os.Stdout.WriteString(line) // one write(2) per line: atomic on a pipe
				out.Unlock()
			}
		}()
	}
	wg.Wait()
}

// killChildAfter starts this test binary as a kill test's child (TestMain
// runs the child half of mode, "" for killChild, on dir; run tells the runs
// apart in its IDs; env adds variables), hands each line the child prints,
// split into fields, to line, and kills the child with SIGKILL once line has
// counted killAfter lines (line says whether a line counts). It fails the
// test if the child ended before, and kills a child still running after two
// minutes or when the test fails meanwhile.
func killChildAfter(t *testing.T, dir, mode, run string, killAfter int, env []string, line func(f []string) bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), killChildDir+"="+dir, killChildDir+"_RUN="+run, killChildDir+"_MODE="+mode), env...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	deadline := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer func() {
		deadline.Stop()
		cmd.Process.Kill() // (a no-op once it was killed and waited for)
		_ = cmd.Wait()
	}()
	scanner := bufio.NewScanner(stdout)
	seen, killed := 0, false
	for scanner.Scan() {
		if !line(strings.Fields(scanner.Text())) {
			continue
		}
		seen++
		if seen == killAfter && !killed {
			require.NoError(t, cmd.Process.Kill())
			killed = true
		}
	}
	require.True(t, killed, "run %s: the child stopped before %d of its lines", run, killAfter)
}

// TestKillNineLosesNoSendOK kills a child process that sends under FlushSync
// at a random moment, 20 times on the same directory, and checks after each
// reopen that every message the child saw SendOK for is present and intact.
func TestKillNineLosesNoSendOK(t *testing.T) {
	runs := 20
	if testing.Short() {
		runs = 5
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	acked := map[string]uint64{} // ID -> seq, over all runs
	var lastSeq uint64
	for run := 0; run < runs; run++ {
		killAfter := 20 + rng.IntN(400) // SendOKs to see before the kill
		killChildAfter(t, dir, "", strconv.Itoa(run), killAfter, nil, func(fields []string) bool {
			if len(fields) != 3 || fields[0] != "ok" {
				return false // e.g. test framework output
			}
			seq, err := strconv.ParseUint(fields[2], 10, 64)
			require.NoError(t, err)
			_, dup := acked[fields[1]]
			require.False(t, dup, "ID %s acknowledged twice", fields[1])
			acked[fields[1]] = seq
			return true
		})

		q := openQueue(t, dir, &Options{SegmentSize: 256 << 10, MaxMessageSize: 4 << 10})
		got := readBack(t, q)
		bySeq := map[uint64]stored{}
		for i, s := range got {
			if i > 0 {
				require.Greater(t, s.Seq, got[i-1].Seq, "seqs increase")
			}
			bySeq[s.Seq] = s
		}
		for id, seq := range acked {
			s, ok := bySeq[seq]
			require.True(t, ok, "run %d: SendOK message %s (seq %d) lost", run, id, seq)
			require.Equal(t, id, s.Msg.ID, "seq %d holds another message", seq)
			require.Equal(t, bodyFor(id), s.Msg.Body, "body of %s", id)
		}
		afterID := fmt.Sprintf("after-%d", run)
		res, err := q.Send(context.Background(), &Message{ID: afterID, Body: bodyFor(afterID)})
		require.NoError(t, err)
		require.Greater(t, res.Seq, got[len(got)-1].Seq, "Send continues above every recovered seq")
		require.Greater(t, res.Seq, lastSeq)
		lastSeq = res.Seq
		acked[res.ID] = res.Seq
		require.NoError(t, q.Close())
	}
	assert.Greater(t, len(acked), runs*20)
}

// consumeChild sends from 4 goroutines and consumes with 4 handlers of group
// "g" under FlushSync, printing "ok ID SEQ" for every SendOK and "acked ID"
// after every Ack returned nil, until it is killed. With _SEGMENT set (a
// segment size) it acks every message and prints "recycled N" whenever
// Stats.RecycledRolls grows.
func consumeChild(dir string) {
	segment := int64(256 << 10)
	if s := os.Getenv(killChildDir + "_SEGMENT"); s != "" {
		segment, _ = strconv.ParseInt(s, 10, 64)
	}
	q, err := Open(dir, &Options{Flush: FlushSync, SegmentSize: segment, MaxMessageSize: 4 << 10})
	if err != nil {
		fmt.Fprintln(os.Stdout, "open-error", err)
		os.Exit(3)
	}
	c, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Minute})
	if err != nil {
		fmt.Fprintln(os.Stdout, "consumer-error", err)
		os.Exit(3)
	}
	run := os.Getenv(killChildDir + "_RUN")
	var out sync.Mutex
	say := func(line string) {
		out.Lock()
		os.Stdout.WriteString(line) // one write(2) per line
		out.Unlock()
	}
	for g := 0; g < 4; g++ {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%s-g%d-%d", run, g, i)
				res, err := q.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)})
				if err == nil && res.Status == SendOK {
					say(fmt.Sprintf("ok %s %d\n", id, res.Seq))
				}
			}
		}()
	}
	// With small segments every message is acked, so that the group's floor
	// moves and retention deletes segments within the run.
	report, recycle := func() {}, os.Getenv(killChildDir+"_SEGMENT") != ""
	if recycle {
		report = recycledReporter(q, say)
	}
	for h := 0; h < 4; h++ {
		go func() {
			for {
				d, err := c.Receive(context.Background())
				if err != nil {
					continue
				}
				if !bytes.Equal(d.Message.Body, bodyFor(d.Message.ID)) {
					say("corrupt " + d.Message.ID + "\n")
				}
				if d.Seq%7 == 0 && !recycle {
					continue // "crashes" mid-handler: never acked, must come back
				}
				if d.Ack() == nil {
					say("acked " + d.Message.ID + "\n")
					report()
				}
			}
		}()
	}
	select {}
}

// TestKillNineDuringSendReceiveAck kills a child that sends and consumes at
// once, 10 times on one directory: after each reopen, every SendOK message is
// either acked before the kill or delivered again, and no acked message is
// delivered again.
func TestKillNineDuringSendReceiveAck(t *testing.T) {
	runs := 10
	if testing.Short() {
		runs = 3
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 8))
	sent := map[string]bool{}
	sentSeq := map[string]uint64{}
	acked := map[string]bool{}
	for run := 0; run < runs; run++ {
		killAfter := 50 + rng.IntN(500) // acks to see before the kill
		killChildAfter(t, dir, "consume", strconv.Itoa(run), killAfter, nil, func(f []string) bool {
			switch {
			case len(f) == 3 && f[0] == "ok":
				sent[f[1]] = true
				seq, err := strconv.ParseUint(f[2], 10, 64)
				require.NoError(t, err)
				sentSeq[f[1]] = seq
			case len(f) == 2 && f[0] == "acked":
				require.False(t, acked[f[1]], "run %d: %s acked twice: it was delivered again after its ack", run, f[1])
				acked[f[1]] = true
				return true
			case len(f) == 2 && f[0] == "corrupt":
				t.Fatalf("run %d: corrupt body for %s", run, f[1])
			}
			return false
		})

		// Reopen: drain the group; nothing acked may come back. An ack can
		// be durable although the child was killed before it printed it, so
		// the acks are also read from the log itself.
		ackedInLog, first := ackedIDs(t, dir) // before Open: see ackedIDs
		q := openQueue(t, dir, &Options{SegmentSize: 256 << 10, MaxMessageSize: 4 << 10})
		for id := range acked {
			require.True(t, ackedInLog[id] || sentSeq[id] < first, "run %d: %s was reported acked but its ack is not in the log", run, id)
		}
		// Retention deletes a segment only once its messages are acked
		// durably, a second or more after the child printed those acks.
		for id, seq := range sentSeq {
			if seq < first {
				require.True(t, acked[id], "run %d: %s (seq %d) was deleted by retention but never acked", run, id, seq)
			}
		}
		c, err := q.Consumer("g", &ConsumerOptions{AckTimeout: time.Minute})
		require.NoError(t, err)
		owed := map[string]bool{}
		for id := range sent {
			if !acked[id] && !ackedInLog[id] {
				owed[id] = true
			}
		}
		drainOwed(t, c, run, owed, func(id string) bool { return ackedInLog[id] }, func(id string) { acked[id] = true })
		for id := range ackedInLog {
			acked[id] = true
		}
		for id := range sent {
			require.True(t, acked[id], "run %d: SendOK message %s was neither acked nor delivered again", run, id)
		}
		require.NoError(t, q.Close())
	}
	assert.Greater(t, len(acked), runs*50)
}

// drainOwed receives and acks what c's group delivers after a kill test's
// reopen. It ends at the first 300ms without a delivery once nothing in owed
// is missing; while some are, it waits for them up to 30s, so that a starved
// goroutine on a loaded machine does not end it early. Every delivery must
// not be a message acked before (wasAcked) and must carry its body; it is
// acked, handed to got and taken out of owed.
func drainOwed(t *testing.T, c *Consumer, run int, owed map[string]bool, wasAcked func(id string) bool, got func(id string)) {
	t.Helper()
	drainEnd := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		d, err := c.Receive(ctx)
		cancel()
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			if len(owed) == 0 || time.Now().After(drainEnd) {
				return
			}
			continue
		}
		id := d.Message.ID
		require.False(t, wasAcked(id), "run %d: acked message %s (seq %d) delivered again", run, id, d.Seq)
		require.Equal(t, bodyFor(id), d.Message.Body, "run %d: body of %s", run, id)
		require.NoError(t, d.Ack())
		got(id)
		delete(owed, id)
	}
}

// ackedIDs returns the IDs of the messages that an ack record in the log in
// dir acknowledges, for any group, and the first seq the log holds (the
// killed child's retention deleted segments). It reads the directory as the
// killed child left it, without opening it (wal.Scan, wal.ReadFrames), and
// must be called before the queue is reopened: the reopened queue's
// retention, a second after Open, deletes the segments every group's floor
// passed, and a reader of the open log that is still below them then jumps
// over them silently (wal.Reader starts each segment at the next one left),
// so a later ack record acks seqs the reader never saw. A loaded machine
// stretched the read over that second and the test failed with "ack of seq
// N, which is no message before it".
func ackedIDs(t *testing.T, dir string) (map[string]bool, uint64) {
	t.Helper()
	res, err := wal.Scan(vfs.OS, dir)
	require.NoError(t, err)
	idBySeq := map[uint64]string{}
	out := map[string]bool{}
	first := res.FirstSeq
	for _, seg := range res.Segments {
		err := wal.ReadFrames(vfs.OS, dir, seg, func(_ int64, rec *record.Record) error {
			switch rec.Type {
			case record.TypeMessage:
				m, err := record.DecodeMessage(rec.Payload)
				if err != nil {
					return fmt.Errorf("message at seq %d: %w", rec.Seq, err)
				}
				idBySeq[rec.Seq] = m.ID
			case record.TypeAck:
				a, err := record.DecodeAck(rec.Payload)
				if err != nil {
					return fmt.Errorf("ack at seq %d: %w", rec.Seq, err)
				}
				for _, s := range a.Acked {
					if s < first {
						continue // its segment is deleted
					}
					id, ok := idBySeq[s]
					if !ok {
						return fmt.Errorf("ack record at seq %d (stream %d) acks seq %d, which is no message before it\n%s",
							rec.Seq, rec.Stream, s, segmentTable(res))
					}
					out[id] = true
				}
			}
			return nil
		})
		require.NoError(t, err)
	}
	return out, first
}

// segmentTable describes the segments of a scanned log, for failure messages.
func segmentTable(res *wal.ScanResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "first seq %d, last seq %d, torn tail %+v\n", res.FirstSeq, res.LastSeq, res.Torn)
	for _, s := range res.Segments {
		fmt.Fprintf(&b, "  %s base %d prev-last %d last %d frames %d data %d file %d sealed %v synced-offset %d lease %d\n",
			s.Name, s.BaseSeq, s.PrevLastSeq, s.LastSeq, s.Frames, s.DataBytes, s.FileBytes, s.Sealed, s.SyncedOffset, s.Lease)
	}
	return b.String()
}
