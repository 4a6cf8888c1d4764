package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss"
)

// The tx-crash workload (--workload tx): producers goroutines run
// SendInTransaction flows whose local transaction is a line "commit ID" or
// "rollback ID" appended to the file txDBFile next to the queue and fsynced
// (group-committed, as a database would) before it counts. Transaction i of
// a producer:
//
//	i%4 == 0  the local transaction commits; Commit; "ok ID SEQ" is printed
//	          for its SendOK
//	i%4 == 1  the local transaction rolls back; Rollback
//	i%4 == 2  the local transaction commits but answers unknown (a lost
//	          reply): the TxChecker must find the commit
//	i%4 == 3  the local transaction answers unknown and decides afterwards:
//	          commit if i%8 == 3, rollback if i%8 == 7
//
// The child's TxChecker (after childTxTimeout) answers from the lines known
// durable, and unknown for an ID without one (its transaction may still be
// running). After the kill, the parent's checker reads the file: an ID
// without a line never committed (its process is gone), so rollback.
const (
	txDBFile       = "txdb"
	childTxTimeout = 50 * time.Millisecond
	// txResolveTimeout bounds the parent's wait for the TxChecker to
	// resolve every pending half after the kill.
	txResolveTimeout = 60 * time.Second
)

// txDB is the local database of the tx workload.
type txDB struct {
	mu      sync.Mutex // serializes writes
	f       *os.File
	written uint64
	syncMu  sync.Mutex // one fsync at a time; it covers every write before it
	synced  uint64

	stateMu sync.Mutex
	state   map[string]zeroloss.TxState // lines known durable
}

func openTxDB(path string) (*txDB, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &txDB{f: f, state: map[string]zeroloss.TxState{}}, nil
}

// write appends the decision of id's local transaction and returns once it
// is fsynced.
func (db *txDB) write(id string, state zeroloss.TxState) error {
	line := []byte(state.String() + " " + id + "\n")
	db.mu.Lock()
	_, err := db.f.Write(line)
	db.written++
	n := db.written
	db.mu.Unlock()
	if err != nil {
		return fmt.Errorf("local transaction %s: %w", id, err)
	}
	db.syncMu.Lock()
	if db.synced < n {
		db.mu.Lock()
		upTo := db.written
		db.mu.Unlock()
		if err = db.f.Sync(); err == nil {
			db.synced = upTo
		}
	}
	db.syncMu.Unlock()
	if err != nil {
		return fmt.Errorf("local transaction %s: %w", id, err)
	}
	db.stateMu.Lock()
	db.state[id] = state
	db.stateMu.Unlock()
	return nil
}

// liveChecker is the child's TxChecker.
func (db *txDB) liveChecker(_ context.Context, m *zeroloss.Message) zeroloss.TxState {
	db.stateMu.Lock()
	defer db.stateMu.Unlock()
	return db.state[m.ID] // TxUnknown without a line
}

// produceTx is one producer of the tx workload. It returns only on an error.
// Tests replace it to make the child misbehave.
var produceTx = func(q *zeroloss.Queue, db *txDB, run, producer int, acks *ackWriter) error {
	ctx := context.Background()
	for i := 0; ; i++ {
		id := messageID(run, producer, i)
		var localErr error
		res, state, err := q.SendInTransaction(ctx, &zeroloss.Message{ID: id, Body: bodyFor(id)}, func(context.Context) zeroloss.TxState {
			switch i % 4 {
			case 0:
				localErr = db.write(id, zeroloss.TxCommit)
				return zeroloss.TxCommit
			case 1:
				localErr = db.write(id, zeroloss.TxRollback)
				return zeroloss.TxRollback
			case 2:
				localErr = db.write(id, zeroloss.TxCommit)
			}
			return zeroloss.TxUnknown
		})
		switch {
		case localErr != nil:
			return localErr
		case err != nil:
			return fmt.Errorf("transaction %s: %w", id, err)
		case state == zeroloss.TxCommit && res.Status == zeroloss.SendOK:
			if err := acks.ack(id, res.Seq); err != nil {
				return err
			}
		case state == zeroloss.TxUnknown && i%4 == 3:
			decision := zeroloss.TxCommit
			if i%8 == 7 {
				decision = zeroloss.TxRollback
			}
			if err := db.write(id, decision); err != nil {
				return err
			}
		}
	}
}

// readTxDB reads the local transactions' file: the decision of each ID
// with a line. A last line without its newline never counted.
func readTxDB(path string) (map[string]zeroloss.TxState, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	out := map[string]zeroloss.TxState{}
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		fields := bytes.Fields(data[:i])
		data = data[i+1:]
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s: malformed line %q", path, fields)
		}
		id := string(fields[1])
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("%s: two decisions for %s", path, id)
		}
		switch string(fields[0]) {
		case "commit":
			out[id] = zeroloss.TxCommit
		case "rollback":
			out[id] = zeroloss.TxRollback
		default:
			return nil, fmt.Errorf("%s: malformed line %q", path, fields)
		}
	}
	return out, nil
}

// recoverTx is the parent's side of a tx-crash run, after the kill: it
// restarts the queue with a TxChecker reading the local transactions' file,
// waits until no half is pending, and counts twice: the main count drains a
// consumer group, the cross-check reads the raw log (the message records of
// the main stream, which are the committed ones), before the group exists.
// The acknowledged messages are those whose local transaction committed; a
// message found whose local transaction did not commit is a phantom.
func recoverTx(res *RunResult, runDir string, cfg Config, acked map[string]uint64) error {
	db, err := readTxDB(filepath.Join(runDir, txDBFile))
	if err != nil {
		return err
	}
	committed := map[string]uint64{}
	for id, state := range db {
		if state == zeroloss.TxCommit {
			committed[id] = 0
		}
	}
	for id, seq := range acked {
		if _, ok := committed[id]; !ok {
			return fmt.Errorf("the child acknowledged the commit of %s, whose local transaction did not commit", id)
		}
		committed[id] = seq
	}
	res.Acknowledged = len(committed)

	opts := cfg.recoveryOptions()
	opts.TxChecker = func(_ context.Context, m *zeroloss.Message) zeroloss.TxState {
		if db[m.ID] == zeroloss.TxCommit {
			return zeroloss.TxCommit
		}
		return zeroloss.TxRollback
	}
	opts.TxTimeout, opts.TxCheckInterval = 5*time.Millisecond, 5*time.Millisecond
	qdir := queueDir(runDir, workloadTx)
	start := time.Now()
	q, err := zeroloss.Open(qdir, opts)
	if err != nil {
		res.RecoveryTime = time.Since(start)
		res.RecoveryError = err.Error()
		res.Lost, res.CrossCheck.Lost = len(committed), len(committed)
		return nil
	}
	res.TxPending = q.Stats().TxPending
	deadline := time.Now().Add(txResolveTimeout)
	for q.Stats().TxPending > 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	pending := q.Stats().TxPending
	if err := q.Close(); err != nil {
		return err
	}
	res.RecoveryTime = time.Since(start)
	if pending > 0 {
		return fmt.Errorf("%d halves still pending %v after the restart", pending, txResolveTimeout)
	}

	found, _, undecodable, err := scanDigests(qdir)
	if err != nil {
		return fmt.Errorf("scanning the log for the cross-check: %w", err)
	}
	res.CrossCheck = txCounts(committed, found, undecodable)

	q, err = zeroloss.Open(qdir, opts)
	if err != nil {
		return fmt.Errorf("reopening the queue to drain it: %w", err)
	}
	drained, err := drain(q, AckNone, nil)
	if cerr := q.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("draining the group: %w", err)
	}
	res.Counts = txCounts(committed, drained, 0)
	return nil
}

// txCounts counts a tx-crash run: as crossCheck, except that a message found
// whose local transaction did not commit is a phantom, not an allowed
// unacknowledged one.
func txCounts(committed map[string]uint64, found map[string][]digest, undecodable int) Counts {
	c := crossCheck(committed, found, undecodable)
	c.Phantom, c.UnackedPresent = c.UnackedPresent, 0
	return c
}
