package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/zerolossmq/zeroloss/internal/report"
)

// The --peers part of zeroloss bench: it runs the benchmarks of the
// bench/peers module (other queues on the same workloads, in their own
// go.mod so the library's stays small) with `go test`, and adds their
// figures to the report as ratios to that run's raw write+fdatasync loop,
// each labelled with what the peer's acknowledgement guarantees.

// peerResult is one benchmark of the peers module.
type peerResult struct {
	Name       string  `json:"name"` // without the Benchmark prefix and -GOMAXPROCS suffix
	Throughput float64 `json:"throughput"`
	Ratio      float64 `json:"ratio_to_raw_fsync,omitempty"`
	Acks       string  `json:"acknowledgement"`
}

// peerAcks says what each peer configuration's acknowledgement guarantees,
// as bench/peers/README.md establishes from the peers' code and fsync counts.
var peerAcks = []struct{ prefix, acks string }{
	{"RawFsync", "durable (fdatasync each)"},
	{"Zeroloss/flush=sync", "durable (fdatasync, shared)"},
	{"Zeroloss/flush=async", "page cache"},
	{"TidwallWAL/sync=each", "durable (fsync each)"},
	{"TidwallWAL/sync=batch", "durable per batch"},
	{"Diskqueue/", "page cache (fsync after Put returns)"},
	{"Dque/mode=safe", "durable (fsync each)"},
	{"Dque/mode=turbo", "page cache"},
	{"Goque/", "page cache"},
	{"Goqite/sync=full", "durable (SQLite FULL)"},
	{"Goqite/sync=normal", "page cache (SQLite NORMAL, WAL)"},
	{"JetStream/sync=always", "publish durable; consumer acks not"},
	{"JetStream/sync=default", "page cache (synced every 2 min)"},
	{"RedisStreams/appendfsync=always", "durable (AOF always)"},
	{"RedisStreams/appendfsync=everysec", "page cache (AOF everysec)"},
}

func peerAcksOf(name string) string {
	for _, p := range peerAcks {
		if strings.HasPrefix(name, p.prefix) {
			return p.acks
		}
	}
	return "?"
}

// findPeersDir returns dir if it holds the peers module, else an error
// saying how to point at it.
func findPeersDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(abs, "go.mod"))
	if err != nil || !bytes.Contains(data, []byte("module github.com/zerolossmq/zeroloss/bench/peers")) {
		return "", fmt.Errorf("--peers: no peers module in %s (run from the repository root, or give --peers-dir)", abs)
	}
	return abs, nil
}

// runPeers runs the peers' benchmarks for benchtime each and returns their
// results, sorted by name, with ratios to the raw fsync loop of the run.
func runPeers(ctx context.Context, dir string, benchtime time.Duration, progress io.Writer) ([]peerResult, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchtime", benchtime.String(), "./")
	cmd.Dir = dir
	var out bytes.Buffer
	if progress != nil {
		cmd.Stdout = io.MultiWriter(&out, progress)
	} else {
		cmd.Stdout = &out
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test -bench in %s: %v\n%s%s", dir, err, lastLines(out.String(), 10), stderr.String())
	}
	return parsePeers(&out)
}

// benchLine matches a Go benchmark result line.
var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(.*)$`)

// parsePeers reads Go benchmark output.
func parsePeers(r io.Reader) ([]peerResult, error) {
	var results []peerResult
	raw := 0.0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ns, err := strconv.ParseFloat(m[2], 64)
		if err != nil || ns <= 0 {
			continue
		}
		rate := 1e9 / ns
		fields := strings.Fields(m[3])
		for i := 1; i < len(fields); i++ {
			if fields[i] == "msgs/s" {
				if v, err := strconv.ParseFloat(fields[i-1], 64); err == nil {
					rate = v
				}
			}
		}
		res := peerResult{Name: m[1], Throughput: rate, Acks: peerAcksOf(m[1])}
		if strings.HasPrefix(res.Name, "RawFsync/") {
			raw = rate
		}
		results = append(results, res)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return nil, fmt.Errorf("no benchmark results in the peers' output")
	}
	if raw > 0 {
		for i := range results {
			results[i].Ratio = results[i].Throughput / raw
		}
	}
	sort.SliceStable(results, func(i, j int) bool { return results[i].Name < results[j].Name })
	return results, nil
}

// peersTable is the report's table of peer results.
func peersTable(results []peerResult) report.Table {
	t := report.Table{
		Title:   "Peers (bench/peers, same workloads, one run)",
		Columns: []string{"benchmark", "msgs/s", "x raw fsync", "acknowledgement means"},
		Notes: []string{
			"x raw fsync: msgs/s over BenchmarkRawFsync (1 KiB write + fdatasync per message) of the same run.",
			"acknowledgement: durable = on disk when the call returns; page cache = lost on power loss (see bench/peers/README.md).",
		},
	}
	for _, r := range results {
		ratio := "-"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2fx", r.Ratio)
		}
		t.Rows = append(t.Rows, []string{r.Name, fmt.Sprint(int64(math.Round(r.Throughput))), ratio, r.Acks})
	}
	return t
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}
