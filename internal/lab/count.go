package lab

import (
	"bytes"
	"crypto/sha256"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// Counts is what one count of a run found. Both counts of a run (the main one
// and the cross-check) fill every field, so they can be compared as a whole.
type Counts struct {
	// Recovered is the number of message records read back.
	Recovered int `json:"recovered"`
	// Lost is the number of acknowledged IDs with no record in the log.
	Lost int `json:"lost"`
	// Duplicates is the number of records beyond the first with the same ID.
	Duplicates int `json:"duplicates"`
	// Corrupt is the number of records whose body does not match their ID,
	// plus the message payloads that do not decode.
	Corrupt int `json:"corrupt"`
	// OrderViolations is, for consumer-crash with ack=ordered, the number
	// of handlings of a message first handled after a later message of its
	// key was (see orderViolations). Always 0 for the others.
	OrderViolations int `json:"order_violations"`
	// UnackedPresent is the number of distinct IDs found that were never
	// acknowledged: sent, then killed before the ack was printed. Allowed.
	UnackedPresent int `json:"unacked_present"`
	// Undelivered and Isolation are, for the produce workload's topics,
	// the sums over its consumer groups of GroupCount's: acknowledged
	// messages in the log that a group of their topic (and tag) did not
	// deliver, and deliveries of a message of another topic or of an
	// unlisted tag. Always 0 for the other workloads.
	Undelivered int `json:"undelivered"`
	Isolation   int `json:"isolation"`
	// Phantom is, for tx-crash, the number of distinct IDs delivered though
	// their local transaction did not commit (they are not counted in
	// UnackedPresent). Always 0 for the other failures.
	Phantom int `json:"phantom"`
}

// storedMessage is one message record read back from the log.
type storedMessage struct {
	Seq  uint64
	ID   string
	Body []byte
	route
	Bad bool // the payload did not decode: ID, Body and route are empty
}

// readLog reads every message record of the log in dir through the log's
// reader, the way the queue will serve them: wal.Open (the directory was
// recovered by zeroloss.Open just before) and a Reader from the start.
func readLog(dir string) ([]storedMessage, error) {
	var out []storedMessage
	_, err := wal.ReadDurable(dir, wal.Options{SegmentSize: segmentSize}, func(rec record.Record) error {
		if rec.Type != record.TypeMessage {
			return nil
		}
		m, err := record.DecodeMessage(rec.Payload)
		if err != nil {
			out = append(out, storedMessage{Seq: rec.Seq, Bad: true})
			return nil
		}
		out = append(out, storedMessage{Seq: rec.Seq, ID: m.ID, Body: bytes.Clone(m.Body), route: route{m.Topic, m.Tag}})
		return nil
	})
	return out, err
}

// count is the main count: it checks every acknowledged ID against the
// records read back, and every record's body against bodyFor of its ID.
// acked maps each acknowledged ID to the seq its SendOK reported.
func count(acked map[string]uint64, stored []storedMessage) Counts {
	c := Counts{Recovered: len(stored)}
	seen := make(map[string]int, len(stored))
	for _, m := range stored {
		if m.Bad {
			c.Corrupt++
			continue
		}
		seen[m.ID]++
		if seen[m.ID] > 1 {
			c.Duplicates++
		}
		if !bytes.Equal(m.Body, bodyFor(m.ID)) {
			c.Corrupt++
		}
	}
	for id := range acked {
		if seen[id] == 0 {
			c.Lost++
		}
	}
	for id := range seen {
		if _, ok := acked[id]; !ok {
			c.UnackedPresent++
		}
	}
	return c
}

// lostBelowKept counts the acknowledged IDs missing from stored whose seq
// (the one their SendOK reported) is below the last seq stored: the ones a
// lost tail does not explain.
func lostBelowKept(acked map[string]uint64, stored []storedMessage) int {
	var last uint64
	seen := make(map[string]bool, len(stored))
	for _, m := range stored {
		last = max(last, m.Seq)
		if !m.Bad {
			seen[m.ID] = true
		}
	}
	n := 0
	for id, seq := range acked {
		if !seen[id] && seq < last {
			n++
		}
	}
	return n
}

// digest is the SHA-256 of a message body.
type digest [sha256.Size]byte

// scanDigests reads the log in dir a second way, for the cross-check: with the
// read-only scanner (no lock, no recovery, no Log), collecting for every
// message ID the digests of the bodies found under it, and every record's ID
// and stored route, in log order. undecodable counts the message payloads
// that do not decode.
func scanDigests(dir string) (found map[string][]digest, records []routed, undecodable int, err error) {
	scan, err := wal.Scan(vfs.OS, dir)
	if err != nil {
		return nil, nil, 0, err
	}
	found = map[string][]digest{}
	for _, seg := range scan.Segments {
		err := wal.ReadFrames(vfs.OS, dir, seg, func(_ int64, rec *record.Record) error {
			if rec.Type != record.TypeMessage {
				return nil
			}
			m, err := record.DecodeMessage(rec.Payload)
			if err != nil {
				undecodable++
				return nil
			}
			found[m.ID] = append(found[m.ID], sha256.Sum256(m.Body))
			records = append(records, routed{m.ID, route{m.Topic, m.Tag}})
			return nil
		})
		if err != nil {
			return nil, nil, 0, err
		}
	}
	return found, records, undecodable, nil
}

// crossCheck is the independent count: it compares the set of (ID, body
// digest) pairs found against the set the acknowledgements imply, as sets,
// without looking at seqs or at the order of the records.
func crossCheck(acked map[string]uint64, found map[string][]digest, undecodable int) Counts {
	c := Counts{Recovered: undecodable, Corrupt: undecodable}
	for id, digests := range found {
		c.Recovered += len(digests)
		c.Duplicates += len(digests) - 1
		want := digest(sha256.Sum256(bodyFor(id)))
		for _, d := range digests {
			if d != want {
				c.Corrupt++
			}
		}
		if _, ok := acked[id]; !ok {
			c.UnackedPresent++
		}
	}
	for id := range acked {
		if len(found[id]) == 0 {
			c.Lost++
		}
	}
	return c
}
