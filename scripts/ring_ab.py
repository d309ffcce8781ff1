#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Paired A/B of two virtue-bench builds on `virtue-bench ring` rows.

This machine's vCPUs change placement every few minutes, and a placement change moves the ring
figures by 2-3x, far more than most code changes do. So two long runs of two builds, one after
the other, compare placements more than code. This script runs the builds alternately in short
runs (A B B A ...), a fraction of a second each, so that both halves of a pair almost always
share a placement, and reports the median of the per-pair ratios B/A with its quartiles. A
median under 1 with p75 under 1 is a real gain.

  scripts/ring_ab.py OLD/tools/virtue-bench NEW/tools/virtue-bench \\
      --only "packed direct 64 32" --pairs 100

Each run is `virtue-bench ring --json --runs 1 --buffers N --only TEXT`: every row that --only
selects is compared on its own.
"""
import argparse
import collections
import json
import statistics
import subprocess
import sys


def run(binary, only, buffers):
    out = subprocess.run(
        [binary, "ring", "--json", "--runs", "1", "--buffers", str(buffers), "--only", only],
        check=True, capture_output=True, text=True, timeout=600).stdout
    rows = {}
    for line in out.splitlines():
        obj = json.loads(line)
        if obj.get("bench") != "ring":
            continue
        label = "%s %s %d %d %s" % (obj["fmt"], obj["dma"], obj["size"], obj["batch"],
                                    "in-order" if obj["in_order"] else "")
        rows[label.strip()] = (obj["ns_per_buf"], obj["pingpong_ns"])
    return rows


def quartiles(values):
    values = sorted(values)
    n = len(values)
    return values[n // 4], statistics.median(values), values[(3 * n) // 4]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="virtue-bench binary A (the reference)")
    ap.add_argument("b", help="virtue-bench binary B (the change)")
    ap.add_argument("--only", default=" 64 32 ", help="row selector, as virtue-bench --only")
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--buffers", type=int, default=200000, help="buffers per run")
    args = ap.parse_args()

    ratios = collections.defaultdict(list)
    ns = collections.defaultdict(lambda: ([], []))
    pps = []
    for i in range(args.pairs):
        # A B, then B A: neither build always runs first after a placement change.
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        binary = {"a": args.a, "b": args.b}
        got = {side: run(binary[side], args.only, args.buffers) for side in order}
        for label, (a_ns, a_pp) in got["a"].items():
            if label not in got["b"]:
                continue
            b_ns = got["b"][label][0]
            ratios[label].append(b_ns / a_ns)
            ns[label][0].append(a_ns)
            ns[label][1].append(b_ns)
            pps.append(a_pp)
    if not ratios:
        print("ring_ab: no row ran in both builds (check --only)", file=sys.stderr)
        return 1
    print("%-32s %7s %7s %7s %9s %9s %5s" % ("row", "p25", "B/A", "p75", "A ns", "B ns", "pairs"))
    for label in sorted(ratios):
        p25, med, p75 = quartiles(ratios[label])
        print("%-32s %7.3f %7.3f %7.3f %9.2f %9.2f %5d" %
              (label, p25, med, p75, statistics.median(ns[label][0]),
               statistics.median(ns[label][1]), len(ratios[label])))
    p25, med, p75 = quartiles(pps)
    print("cache-line ping-pong over the pairs: median %.0f ns one way (p25 %.0f, p75 %.0f)" %
          (med, p25, p75))
    return 0


if __name__ == "__main__":
    sys.exit(main())
