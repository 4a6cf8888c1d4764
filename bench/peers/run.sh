#!/usr/bin/env bash
# run.sh runs the peer benchmarks and prints the results in Go benchmark
# format on stdout (benchstat reads it as is); build output and errors go to
# stderr. Environment:
#
#   BENCHTIME  -benchtime, default 1s
#   BENCH      -bench regex, default . (every benchmark)
#   COUNT      -count, default 1
#
#   ./run.sh > peers.txt
#   BENCHTIME=2s BENCH='RawFsync|Zeroloss|Dque' ./run.sh
set -euo pipefail
cd "$(dirname "$0")"
exec go test -run '^$' -bench "${BENCH:-.}" -benchtime "${BENCHTIME:-1s}" -count "${COUNT:-1}" ./
