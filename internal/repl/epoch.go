package repl

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Epoch is one leadership term of a log: every Open of a queue as leader
// begins one, and its first record (an epoch record) has seq Start. PrevLast
// is the last seq the log held before it: the end of the previous terms. ID
// is random, so two terms that got the same Num on two machines (both opened
// as leader after a failover) still differ.
type Epoch struct {
	Num      uint64
	ID       uint64
	Start    uint64
	PrevLast uint64
}

// EpochSize is an Epoch's encoded size.
const EpochSize = 32

// MaxEpochs bounds the history a Hello or Welcome carries: the latest terms.
const MaxEpochs = 128

// AppendEpoch encodes e.
func AppendEpoch(dst []byte, e Epoch) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, e.Num)
	dst = binary.LittleEndian.AppendUint64(dst, e.ID)
	dst = binary.LittleEndian.AppendUint64(dst, e.Start)
	return binary.LittleEndian.AppendUint64(dst, e.PrevLast)
}

// DecodeEpoch decodes an Epoch from the first EpochSize bytes of b.
func DecodeEpoch(b []byte) Epoch {
	return Epoch{
		Num:      binary.LittleEndian.Uint64(b[0:8]),
		ID:       binary.LittleEndian.Uint64(b[8:16]),
		Start:    binary.LittleEndian.Uint64(b[16:24]),
		PrevLast: binary.LittleEndian.Uint64(b[24:32]),
	}
}

// CheckHistory checks that h is a plausible history: numbers and starts
// strictly increasing, each term starting above the end of the previous ones.
func CheckHistory(h []Epoch) error {
	for i, e := range h {
		if e.Num == 0 || e.Start <= e.PrevLast {
			return fmt.Errorf("%w: epoch %d starts at seq %d after seq %d", ErrMalformed, e.Num, e.Start, e.PrevLast)
		}
		if i > 0 && (e.Num <= h[i-1].Num || e.PrevLast < h[i-1].PrevLast || e.Start <= h[i-1].Start) {
			return fmt.Errorf("%w: epoch %d (start %d) follows epoch %d (start %d)", ErrMalformed, e.Num, e.Start, h[i-1].Num, h[i-1].Start)
		}
	}
	return nil
}

// Tail returns the latest MaxEpochs terms of h.
func Tail(h []Epoch) []Epoch {
	if len(h) > MaxEpochs {
		return h[len(h)-MaxEpochs:]
	}
	return h
}

// Errors of Common.
var (
	// ErrStaleLeader: the follower has seen a later term than the leader's.
	ErrStaleLeader = errors.New("repl: the leader is stale")
	// ErrDiverged: the two logs cannot be reconciled by cutting the
	// follower's unacknowledged tail.
	ErrDiverged = errors.New("repl: the logs cannot be reconciled")
)

// Common returns the last seq the follower's log (history follower, last seq
// followerLast) shares with the leader's (history leader, last seq
// leaderLast): the follower keeps its records up to it and cuts the rest,
// then the leader streams from the next seq. As with Kafka's leader epochs:
// the latest term both histories hold, identically, is the common term; the
// shared prefix ends where the first of the two logs left that term.
//
// It fails with ErrStaleLeader if the follower has seen a later term than
// the leader's latest, empty or not (the leader must rejoin as a follower, not serve its
// stale tail), and with ErrDiverged if they share no term in their windows,
// or if the follower holds records of the leader's current term beyond the
// leader's last seq (the leader lost records it had synced: cutting them
// from the follower could lose acknowledged messages).
func Common(leader []Epoch, leaderLast uint64, follower []Epoch, followerLast uint64) (uint64, error) {
	// The stale check comes first: an empty follower that has taken a
	// later leader's history must not take a stale leader's log either.
	var latest Epoch
	if len(leader) > 0 {
		latest = leader[len(leader)-1]
	}
	if len(follower) > 0 && follower[len(follower)-1].Num > latest.Num {
		return 0, fmt.Errorf("%w: the follower has seen epoch %d, the leader's latest is %d; restart the leader as a follower",
			ErrStaleLeader, follower[len(follower)-1].Num, latest.Num)
	}
	if followerLast == 0 {
		return 0, nil
	}
	if len(leader) == 0 {
		return 0, fmt.Errorf("%w: the leader has no epoch history", ErrDiverged)
	}
	for fi := len(follower) - 1; fi >= 0; fi-- {
		f := follower[fi]
		for li := len(leader) - 1; li >= 0; li-- {
			if leader[li] != f {
				continue
			}
			endF := followerLast
			if fi+1 < len(follower) {
				endF = min(endF, follower[fi+1].PrevLast)
			}
			if li+1 < len(leader) {
				return min(endF, leader[li+1].PrevLast), nil
			}
			if endF > leaderLast {
				return 0, fmt.Errorf("%w: the follower holds seq %d of epoch %d, the leader's current epoch, but the leader's log ends at seq %d",
					ErrDiverged, endF, f.Num, leaderLast)
			}
			return endF, nil
		}
	}
	return 0, fmt.Errorf("%w: the follower holds seqs up to %d but shares no epoch with the leader's latest %d; empty its directory to copy the log afresh",
		ErrDiverged, followerLast, len(leader))
}
