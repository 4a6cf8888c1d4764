#!/usr/bin/env bash
# ratios.sh reads Go benchmark output (run.sh's) on stdin or from the files
# named, and prints a Markdown table of each benchmark's msgs/s and its ratio
# to BenchmarkRawFsync's msgs/s in the same input (one write+fdatasync per
# message on the same disk). With -count above 1 it uses the mean of each
# benchmark's runs.
#
#   ./run.sh | tee peers.txt | ./ratios.sh
#   ./ratios.sh peers.txt
set -euo pipefail
awk '
	/^Benchmark/ {
		name = $1
		sub(/-[0-9]+$/, "", name)
		for (i = 2; i < NF; i++) {
			if ($(i + 1) == "msgs/s") {
				if (!(name in sum)) order[++n] = name
				sum[name] += $i
				runs[name]++
			}
		}
	}
	END {
		raw = ""
		for (k = 1; k <= n; k++) if (order[k] ~ /^BenchmarkRawFsync\//) raw = order[k]
		if (raw == "") { print "ratios.sh: no BenchmarkRawFsync in the input" > "/dev/stderr"; exit 1 }
		rawRate = sum[raw] / runs[raw]
		print "| benchmark | msgs/s | x raw fsync |"
		print "| --- | ---: | ---: |"
		for (k = 1; k <= n; k++) {
			rate = sum[order[k]] / runs[order[k]]
			printf "| %s | %.0f | %.2f |\n", order[k], rate, rate / rawRate
		}
	}' "$@"
