#!/bin/sh
# Runs one libFuzzer target for a bounded time from a copy of its seed corpus (libFuzzer writes
# new inputs into its first corpus directory; the source tree stays untouched).
# usage: run-fuzzer.sh BINARY SEED_DIR SECONDS
set -eu
bin=$1 seeds=$2 seconds=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$seeds"/. "$work"/ 2>/dev/null || true
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$work"
