package zeroloss

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
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
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), killChildDir+"="+dir, killChildDir+"_RUN="+strconv.Itoa(run))
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		scanner := bufio.NewScanner(stdout)
		seen, killed := 0, false
		for scanner.Scan() {
			fields := strings.Fields(scanner.Text())
			if len(fields) != 3 || fields[0] != "ok" {
				continue // e.g. test framework output
			}
			seq, err := strconv.ParseUint(fields[2], 10, 64)
			require.NoError(t, err)
			_, dup := acked[fields[1]]
			require.False(t, dup, "ID %s acknowledged twice", fields[1])
			acked[fields[1]] = seq
			seen++
			if seen == killAfter && !killed {
				require.NoError(t, cmd.Process.Kill()) // SIGKILL
				killed = true
			}
		}
		_ = cmd.Wait()
		require.True(t, killed, "run %d: the child stopped before %d SendOKs", run, killAfter)

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
// after every Ack returned nil, until it is killed.
func consumeChild(dir string) {
	q, err := Open(dir, &Options{Flush: FlushSync, SegmentSize: 256 << 10, MaxMessageSize: 4 << 10})
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
				if d.Seq%7 == 0 {
					continue // "crashes" mid-handler: never acked, must come back
				}
				if d.Ack() == nil {
					say("acked " + d.Message.ID + "\n")
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
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), killChildDir+"="+dir, killChildDir+"_RUN="+strconv.Itoa(run), killChildDir+"_MODE=consume")
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		scanner := bufio.NewScanner(stdout)
		acks, killed := 0, false
		for scanner.Scan() {
			f := strings.Fields(scanner.Text())
			switch {
			case len(f) == 3 && f[0] == "ok":
				sent[f[1]] = true
				seq, err := strconv.ParseUint(f[2], 10, 64)
				require.NoError(t, err)
				sentSeq[f[1]] = seq
			case len(f) == 2 && f[0] == "acked":
				require.False(t, acked[f[1]], "run %d: %s acked twice: it was delivered again after its ack", run, f[1])
				acked[f[1]] = true
				acks++
				if acks == killAfter && !killed {
					require.NoError(t, cmd.Process.Kill())
					killed = true
				}
			case len(f) == 2 && f[0] == "corrupt":
				t.Fatalf("run %d: corrupt body for %s", run, f[1])
			}
		}
		_ = cmd.Wait()
		require.True(t, killed, "run %d: the child stopped before %d acks", run, killAfter)

		// Reopen: drain the group; nothing acked may come back. An ack can
		// be durable although the child was killed before it printed it, so
		// the acks are also read from the log itself.
		q := openQueue(t, dir, &Options{SegmentSize: 256 << 10, MaxMessageSize: 4 << 10})
		ackedInLog, first := ackedIDs(t, q)
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
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			d, err := c.Receive(ctx)
			cancel()
			if err != nil {
				require.ErrorIs(t, err, context.DeadlineExceeded)
				break
			}
			require.False(t, ackedInLog[d.Message.ID], "run %d: acked message %s delivered again", run, d.Message.ID)
			require.Equal(t, bodyFor(d.Message.ID), d.Message.Body)
			require.NoError(t, d.Ack())
			acked[d.Message.ID] = true
		}
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

// ackedIDs returns the IDs of the messages that an ack record in the log
// acknowledges, for any group, and the first seq the log holds (retention
// deletes segments).
func ackedIDs(t *testing.T, q *Queue) (map[string]bool, uint64) {
	t.Helper()
	idBySeq := map[uint64]string{}
	out := map[string]bool{}
	r := q.log.NewReader(0)
	defer r.Close()
	first := uint64(0)
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return out, first
		}
		require.NoError(t, err)
		if first == 0 {
			first = rec.Seq
		}
		switch rec.Type {
		case record.TypeMessage:
			m, err := record.DecodeMessage(rec.Payload)
			require.NoError(t, err)
			idBySeq[rec.Seq] = m.ID
		case record.TypeAck:
			a, err := record.DecodeAck(rec.Payload)
			require.NoError(t, err)
			for _, s := range a.Acked {
				if s < first {
					continue // its segment is deleted
				}
				require.Contains(t, idBySeq, s, "ack of seq %d, which is no message before it", s)
				out[idBySeq[s]] = true
			}
		}
	}
}
