package zeroloss

import (
	"bufio"
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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		killChild(dir)
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
