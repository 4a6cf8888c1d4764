#!/usr/bin/env bash
# fsyncs.sh counts the fsync(2) and fdatasync(2) calls each peer benchmark
# makes per message, in its timed part only, by running it under strace.
#
#   ./fsyncs.sh                      every sub-benchmark
#   ./fsyncs.sh 'Dque|Goqite'        those whose name matches (a -bench regex)
#   N=2000 ./fsyncs.sh               messages per run (default 1000)
#
# Each sub-benchmark runs alone with -benchtime ${N}x under
# `strace -f -e trace=fsync,fdatasync,openat,newfstatat`
# (-f follows every thread and the redis-server child). The benchmarks mark
# the start and end of their timed part with a stat(2) of
# /peers-strace-mark/{start,stop}/N when PEERS_STRACE_MARK is set, and only
# the calls between the two marks of the b.N=N run are counted, so pre-fills,
# setup and Close are left out. Columns, per message:
#
#   fsync fdatasync   the calls
#   osync_opens       openat(2) with O_SYNC or O_DSYNC: writes through such
#                     a descriptor are synchronous without any fsync call
#
# Needs strace (apt-get install strace). strace slows every traced call, so
# peers that share one sync among concurrent callers (group commit) can show
# a different count than without it; and syncs on a timer (every N seconds)
# depend on how long the run took.
set -euo pipefail
cd "$(dirname "$0")"

N=${N:-1000}
FILTER=${1:-.}
if ! command -v strace >/dev/null; then
	echo "strace not installed: apt-get install strace" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/peers.test" . >&2

# The sub-benchmark names: one quick run of each (-benchtime 1x).
"$tmp/peers.test" -test.run '^$' -test.bench "$FILTER" -test.benchtime 1x |
	awk '/^Benchmark/ { sub(/-[0-9]+$/, "", $1); print $1 }' >"$tmp/names"

# anchored turns a benchmark name into a -bench regex matching only it: each
# /-separated element escaped and wrapped in ^...$.
anchored() {
	local IFS=/ out="" part
	for part in $1; do
		part=$(printf '%s' "$part" | sed 's/[][\.*^$+?(){}|]/\\&/g')
		out+="${out:+/}^${part}\$"
	done
	printf '%s' "$out"
}

printf '%-84s %9s %9s %11s\n' "benchmark (N=$N)" fsync fdatasync osync_opens
while read -r name; do
	PEERS_STRACE_MARK=1 strace -f -qq -o "$tmp/trace" \
		-e trace=fsync,fdatasync,openat,newfstatat \
		"$tmp/peers.test" -test.run '^$' -test.bench "$(anchored "$name")" -test.benchtime "${N}x" \
		>"$tmp/out" 2>&1 || { echo "$name: failed" >&2; cat "$tmp/out" >&2; continue; }
	if grep -q -- '--- SKIP' "$tmp/out"; then
		printf '%-84s %s\n' "$name" skipped
		continue
	fi
	awk -v n="$N" -v name="$name" '
		index($0, "/peers-strace-mark/start/" n "\"") { on = 1; marks++; next }
		index($0, "/peers-strace-mark/stop/" n "\"")  { on = 0; next }
		!on { next }
		/[^a-z_]fsync\(/ || /^fsync\(/ { fsync++ }
		/fdatasync\(/ { fdatasync++ }
		/openat\(/ && /O_D?SYNC/ { osync++ }
		END {
			if (marks != 1) { printf "%-84s no timed part found (%d marks)\n", name, marks; exit }
			printf "%-84s %9.3f %9.3f %11.3f\n", name, fsync / n, fdatasync / n, osync / n
		}' "$tmp/trace"
done <"$tmp/names"
