#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""net benchmark: virtue's front-end vs DPDK's virtio-user, each sending to DPDK's net_vhost.

One receiver per row: dpdk-testpmd with a net_vhost vdev in rxonly mode (--no-huge, no
iommu-support: neither sender uses ACCESS_PLATFORM, so both run the direct path), its forwarding
lcore on CPU 1. Senders, on CPU 0, 64-byte frames, queue size 256, one queue pair:

  virtue       `virtue net --tx --dma direct [--packed]` (tests/virtue-net-interop, --bin)
  virtio-user  dpdk-testpmd with net_virtio_user (packed_vq=0|1) in txonly mode

Both are measured the same way, at the receiver: testpmd's RX-packets delta over --seconds of
steady state (--warmup after the first frame arrives), read with `show port stats 0` in interactive mode. Rows: split
and packed, in ABBA order, --rounds times; the table gives the median Mpps of each, the ratio
virtue / virtio-user of the medians and the median of the per-round ratios (the two senders of
one round run back to back, so they more often share the vCPUs' placement), the ping-pong
before each round, and the cache-line ping-pong (`virtue-bench pingpong`, if built in
build-bench/) measured before and after in the same run: this machine's vCPUs move, so compare
ratios within one run only. Not part of make check.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dpdk_net import Testpmd  # noqa: E402  (the same interactive driver as the interop test)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pingpong(binary):
    if not binary or not os.path.exists(binary):
        return None
    try:
        p = subprocess.run([binary, "pingpong"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60)
    except subprocess.TimeoutExpired:
        return None
    m = re.search(r"([\d.]+)\s*ns", p.stdout.decode())
    return float(m.group(1)) if m else None


def start_receiver(work, name, args):
    # The receiver's main and forwarding lcores both on CPU 1; no IOMMU.
    pmd = Testpmd(work, name, "rxonly", args.verbose, lcores="0@1,1@1", iommu=False)
    pmd.start(args.timeout)
    return pmd


def measure(pmd, args):
    # Senders take a while to start (EAL zeroes its memory): wait for the first frames.
    deadline = time.monotonic() + args.timeout
    while pmd.stats()[0] == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("no frames reached the receiver within %d s" % args.timeout)
        time.sleep(0.2)
    time.sleep(args.warmup)
    rx0 = pmd.stats()[0]
    t0 = time.monotonic()
    time.sleep(args.seconds)
    rx1 = pmd.stats()[0]
    t1 = time.monotonic()
    return (rx1 - rx0) / (t1 - t0) / 1e6


def stop_proc(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_virtue(args, work, packed):
    pmd = start_receiver(work, "rx-virtue", args)
    try:
        cmd = ["taskset", "-c", "0", args.bin, "--socket", pmd.sock, "--tx", "--count",
               "1000000000000", "--size", "64", "--dma", "direct", "--qsize", "256", "--quiet",
               "--timeout-ms", "5000"] + (["--packed"] if packed else [])
        log = open(os.path.join(work, "virtue.log"), "wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            return measure(pmd, args)
        finally:
            stop_proc(p)
            log.close()
    finally:
        pmd.stop()


def run_virtio_user(args, work, packed):
    pmd = start_receiver(work, "rx-vu", args)
    try:
        cmd = ["dpdk-testpmd", "--lcores", "0@0,1@0", "--no-huge", "-m", "512", "--no-pci",
               "--file-prefix=vtnb-%d-tx" % os.getpid(),
               "--vdev", "net_virtio_user0,path=%s,queues=1,queue_size=256,packed_vq=%d" %
               (pmd.sock, 1 if packed else 0),
               "--", "--total-num-mbufs=8192", "--forward-mode=txonly", "--txpkts=64",
               "--auto-start", "--stats-period", "100"]
        log = open(os.path.join(work, "virtio-user.log"), "wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            return measure(pmd, args)
        finally:
            stop_proc(p)
            log.close()
    finally:
        pmd.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-bench", "tests",
                                                  "virtue-net-interop"))
    ap.add_argument("--bench-bin", default=os.path.join(ROOT, "build-bench", "tools",
                                                        "virtue-bench"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--rings", nargs="+", choices=("split", "packed"), default=["split", "packed"],
                    help="ring formats to measure (default both)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if not shutil.which("dpdk-testpmd"):
        print("SKIP: dpdk-testpmd not installed")
        return 77
    if not os.path.exists(args.bin):
        print("no %s: build it (meson setup build-bench --buildtype=release; ninja -C "
              "build-bench tests/virtue-net-interop) or pass --bin" % args.bin)
        return 1
    pp_before = pingpong(args.bench_bin)
    results = {("split", "virtue"): [], ("split", "virtio-user"): [],
               ("packed", "virtue"): [], ("packed", "virtio-user"): []}
    runners = {"virtue": run_virtue, "virtio-user": run_virtio_user}
    pairs = {"split": [], "packed": []}  # (virtue / virtio-user of one round, ping-pong)
    for rnd in range(args.rounds):
        for ring in args.rings:
            order = ["virtue", "virtio-user"]
            if rnd % 2:
                order.reverse()
            pair = {}
            pp = pingpong(args.bench_bin)
            for who in order:
                work = tempfile.mkdtemp(prefix="vt-net-bench-", dir="/dev/shm")
                try:
                    mpps = runners[who](args, work, ring == "packed")
                    results[(ring, who)].append(mpps)
                    pair[who] = mpps
                    if args.verbose:
                        print("  round %d %s %s: %.3f Mpps" % (rnd, ring, who, mpps), flush=True)
                except RuntimeError as e:
                    print("  %s %s failed: %s" % (ring, who, e), flush=True)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            if pair.get("virtio-user"):
                pairs[ring].append((pair.get("virtue", 0.0) / pair["virtio-user"], pp))
    pp_after = pingpong(args.bench_bin)

    def med(v):
        return statistics.median(v) if v else float("nan")

    rows = []
    for ring in args.rings:
        v, u = med(results[(ring, "virtue")]), med(results[(ring, "virtio-user")])
        rows.append({"ring": ring, "virtue_mpps": v, "virtio_user_mpps": u,
                     "ratio": v / u if u and u == u and u > 0 else float("nan"),
                     "pair_ratio": med([r for r, _ in pairs[ring]]),
                     "pairs": [{"ratio": r, "pingpong_ns": pp} for r, pp in pairs[ring]]})
    if args.json:
        for r in rows:
            r.update({"pingpong_ns_before": pp_before, "pingpong_ns_after": pp_after})
            print(json.dumps(r))
        return 0
    print("net: 64-byte frames, 1 queue pair, qsize 256, receiver DPDK net_vhost rxonly "
          "(testpmd RX-packets, %.1f s, median of %d)" % (args.seconds, args.rounds))
    print("%-8s %14s %18s %10s %12s  %s" % ("ring", "virtue Mpps", "virtio-user Mpps", "ratio",
                                            "pair ratio", "each pair (ping-pong before it)"))
    for r in rows:
        each = ", ".join("%.2fx (%s)" % (p["ratio"], "%.0f ns" % p["pingpong_ns"]
                                         if p["pingpong_ns"] is not None else "-")
                         for p in r["pairs"])
        print("%-8s %14.3f %18.3f %9.2fx %11.2fx  %s" % (r["ring"], r["virtue_mpps"],
                                                        r["virtio_user_mpps"], r["ratio"],
                                                        r["pair_ratio"], each))
    print("(ratio: of the medians; pair ratio: the median of the ratios of the two senders "
          "measured back to back in one round, which share the machine's placement more often)")
    fmt = lambda x: "%.1f ns" % x if x is not None else "skipped (no virtue-bench pingpong)"
    print("ping-pong: %s before, %s after" % (fmt(pp_before), fmt(pp_after)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
