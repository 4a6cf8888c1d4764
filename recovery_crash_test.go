package zeroloss

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// crashFullEnv, set to any value, makes the recovery crash test try every
// crash point of its workloads and every mode of the first failure, instead of
// a spread of them (minutes instead of seconds).
const crashFullEnv = "ZEROLOSS_CRASH_FULL"

// recoveryWorkload is a workload of the crash tests, with the check that
// must hold after any crash.
type recoveryWorkload struct {
	name string
	opts Options
	// points is about how many crash points the test spreads over the
	// workload (every operation with ZEROLOSS_CRASH_FULL set).
	points int
	// run runs the workload on q (nil if Open failed) and returns what it
	// was told.
	run func(q *Queue) any
	// check reopens fs and checks what was told against what is there.
	check func(t *testing.T, fs *vfs.MemFS, told any, label string)
}

var recoveryWorkloads = []recoveryWorkload{
	{
		name:   "send",
		opts:   crashOptions,
		points: 24,
		run: func(q *Queue) any {
			if q == nil {
				return [2]any{map[string]uint64{}, map[string][]byte{}}
			}
			ok, attempted := crashWorkload(q)
			return [2]any{ok, attempted}
		},
		check: func(t *testing.T, fs *vfs.MemFS, told any, label string) {
			pair := told.([2]any)
			// checkRecovered adds its own Send to the maps: give it copies.
			checkRecovered(t, fs, maps.Clone(pair[0].(map[string]uint64)), maps.Clone(pair[1].(map[string][]byte)), label)
		},
	},
	{
		name: "retention",
		opts: retentionCrashOptions,
		// Each check waits a few milliseconds for a Receive that finds
		// nothing: fewer points.
		points: 8,
		run: func(q *Queue) any {
			if q == nil {
				return consumeOutcome{}
			}
			return consumeWorkload(q)
		},
		check: func(t *testing.T, fs *vfs.MemFS, told any, label string) {
			checkConsumeRecovered(t, fs, told.(consumeOutcome), label)
		},
	},
}

// openFrozen opens the queue in fs with the workload's options and, if it
// opened, stops it without letting it make another operation, as a crash at
// the moment Open returned would.
func openFrozen(fs *vfs.MemFS, w recoveryWorkload) (*Queue, error) {
	opts := w.opts
	opts.fs = fs
	q, err := Open("/q", &opts)
	if err == nil {
		fs.SetOpLimit(fs.OpCount())
		_ = q.Close()
	}
	return q, err
}

// TestCrashDuringRecovery crashes a workload at a spread of operations (every
// one with ZEROLOSS_CRASH_FULL set), first as a process crash (what was not
// synced stays in the page cache) and as a power loss, then runs Open on what
// is left and crashes it at every I/O operation of its repair, in every crash
// mode, then opens again: that Open must succeed with every SendOK message
// (and, for the retention workload, every consumer outcome) there.
func TestCrashDuringRecovery(t *testing.T) {
	full := os.Getenv(crashFullEnv) != ""
	for _, w := range recoveryWorkloads {
		t.Run(w.name, func(t *testing.T) {
			fs := vfs.NewMem()
			opts := w.opts
			opts.fs = fs
			q, err := Open("/q", &opts)
			require.NoError(t, err)
			w.run(q)
			require.NoError(t, q.Close())
			total := fs.OpCount()

			// A spread of crash points, never the same distance apart, so
			// that they fall at every kind of operation.
			step := max(total/w.points, 1)
			if full {
				step = 1
			}
			rng := rand.New(rand.NewPCG(19, 23))
			points, repairs := 0, 0
			for limit := 1; limit <= total; limit += step + points%3 {
				if full {
					limit = points + 1
				}
				fs := vfs.NewMem()
				fs.SetOpLimit(limit)
				opts := w.opts
				opts.fs = fs
				var told any
				if q, err := Open("/q", &opts); err == nil {
					told = w.run(q)
					_ = q.Close()
				} else {
					told = w.run(nil)
				}
				// The first failure: a process crash, and a power loss in
				// one mode (every mode with ZEROLOSS_CRASH_FULL set).
				firsts := []string{"process crash", "power loss " + vfs.CrashModes[points%len(vfs.CrashModes)].String()}
				if full {
					firsts = firsts[:1]
					for _, mode := range vfs.CrashModes {
						firsts = append(firsts, "power loss "+mode.String())
					}
				}
				for i, first := range firsts {
					base := fs.Clone()
					if i == 0 {
						base.ProcessCrash()
					} else {
						mode := vfs.CrashModes[points%len(vfs.CrashModes)]
						if full {
							mode = vfs.CrashModes[i-1]
						}
						base.Crash(mode, rng)
					}
					// Count the operations of Open's repair.
					probe := base.Clone()
					start := probe.OpCount()
					_, err := openFrozen(probe, w)
					require.NoError(t, err, "op %d/%d, %s: Open", limit, total, first)
					repair := probe.OpCount() - start
					for k := 0; k < repair; k++ {
						for _, mode := range vfs.CrashModes {
							c := base.Clone()
							c.SetOpLimit(c.OpCount() + k)
							_, _ = openFrozen(c, w)
							c.Crash(mode, rng)
							w.check(t, c, told, fmt.Sprintf("crash after op %d/%d, %s, then after op %d/%d of Open, %v",
								limit, total, first, k, repair, mode))
							repairs++
						}
					}
				}
				points++
			}
			t.Logf("%d crash points of %d operations, %d crashes during Open", points, total, repairs)
		})
	}
}
