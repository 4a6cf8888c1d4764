package lab

import (
	"fmt"
	"time"

	"github.com/zerolossmq/zeroloss"
)

// Queue settings every run uses: small segments, so a run of a few thousand
// messages rolls over several of them and recovery crosses segment
// boundaries.
const (
	segmentSize    = 1 << 20
	maxMessageSize = 64 << 10
)

// Config is one queue configuration the lab measures. Only the flush mode
// varies for now; replication, consumers and a strict producer will be further
// fields, each carried to the child by args and parsed back by parseConfig.
type Config struct {
	// Name labels the configuration in the report; empty means one built
	// from the fields, such as "flush=sync".
	Name string
	// Flush is the queue's flush mode.
	Flush zeroloss.FlushMode
	// FlushInterval is the queue's FlushInterval (how often FlushAsync
	// syncs in the background); 0 means the queue's default.
	FlushInterval time.Duration
	// DedupOff turns the queue's deduplication of resent IDs off (the lab's
	// self-test plants duplicates with it).
	DedupOff bool
}

// DefaultConfigs returns the configurations the lab command measures:
// flush=sync and flush=async.
func DefaultConfigs() []Config {
	return []Config{{Flush: zeroloss.FlushSync}, {Flush: zeroloss.FlushAsync}}
}

// Label returns c.Name, or the name built from c's fields.
func (c Config) Label() string {
	if c.Name != "" {
		return c.Name
	}
	if c.FlushInterval != 0 {
		return fmt.Sprintf("flush=%s/interval=%v", c.Flush, c.FlushInterval)
	}
	return "flush=" + c.Flush.String()
}

// queueOptions returns the queue options of c, for the child and for recovery.
func (c Config) queueOptions() *zeroloss.Options {
	o := &zeroloss.Options{Flush: c.Flush, FlushInterval: c.FlushInterval,
		SegmentSize: segmentSize, MaxMessageSize: maxMessageSize}
	if c.DedupOff {
		o.DedupWindow = -1
	}
	return o
}

// args returns the child's command-line flags that carry c.
func (c Config) args() []string {
	args := []string{"--flush", c.Flush.String()}
	if c.FlushInterval != 0 {
		args = append(args, "--flush-interval", c.FlushInterval.String())
	}
	if c.DedupOff {
		args = append(args, "--dedup-off")
	}
	return args
}

// parseFlush is the inverse of FlushMode.String.
func parseFlush(s string) (zeroloss.FlushMode, error) {
	for _, m := range []zeroloss.FlushMode{zeroloss.FlushSync, zeroloss.FlushAsync} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown flush mode %q, want sync or async", s)
}

// failureKind tells the runner how to inject a failure.
type failureKind int

const (
	killProcess failureKind = iota + 1
	powerLoss
)

// Failure is one way a run ends badly. The known failures are listed by
// Failures; the zero value is not a failure.
type Failure struct {
	// Name labels the failure in the report, e.g. "process-crash".
	Name string
	// Summary says in one line what the lab does.
	Summary string
	kind    failureKind
}

// ProcessCrash kills the child process with SIGKILL (TerminateProcess on
// Windows) after a random number of acknowledged messages, while its
// producers are still sending. The operating system and its page cache
// survive.
var ProcessCrash = Failure{
	Name:    "process-crash",
	Summary: "SIGKILL of the sending process at a random moment under load; the page cache survives",
	kind:    killProcess,
}

// PowerLoss kills the child like ProcessCrash, then takes away what the
// page cache held: before recovery, every file of the queue is cut back to
// what its last completed fdatasync made durable, and every directory entry
// to its last completed directory fsync (see the package comment for the
// model).
var PowerLoss = Failure{
	Name:    "power-loss",
	Summary: "SIGKILL, then every byte and directory entry not made durable by a completed sync is dropped, torn or zeroed",
	kind:    powerLoss,
}

// Failures returns every failure the lab can inject.
func Failures() []Failure { return []Failure{ProcessCrash, PowerLoss} }

// Promises reports whether the library's documentation promises that c loses
// no acknowledged message under f. A process crash keeps the page cache, so
// both flush modes promise zero loss; a power loss is promised only to
// FlushSync (FlushAsync loses what it acknowledged after its last background
// sync).
func (f Failure) Promises(c Config) bool {
	switch f.kind {
	case killProcess:
		return true
	case powerLoss:
		return c.Flush == zeroloss.FlushSync
	}
	return false
}

func (f Failure) valid() bool { return f.kind == killProcess || f.kind == powerLoss }
