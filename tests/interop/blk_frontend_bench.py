#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""blk benchmark: virtue's front-end (`virtue blk`) on virtue-blk vs on qemu-storage-daemon.

    blk_frontend_bench.py [--virtue BUILD/tools/virtue] [--virtue-blk BUILD/tools/virtue-blk]
                          [--bench-bin BUILD/tools/virtue-bench] [--size 256M] [--runtime 3]
                          [--runs 3] [--fe-cpus LIST] [--be-cpus LIST] [--no-dma] [--json] [-v]

No guest: the front-end is the virtue CLI, the same binary against both back-ends, so the
back-ends are what differs. Both serve the same RAM-backed data: virtue-blk a RAM disk of --size,
qemu-storage-daemon (its vhost-user-blk export in an iothread, driver=file with aio=io_uring: its
fast configuration, not its defaults of the main loop and a thread pool, which are 4x slower
here) a raw image of the same size in /dev/shm; before any measurement both are filled with the same pattern by one
sequential write pass of the front-end (so no read lands on a hole). The back-end runs under
`taskset -c BE`, the front-end under `taskset -c FE`, FE and BE disjoint (default: the first
half of this process's CPUs for the front-end, the rest for the back-end).

Table 1 (issue 5, "blk"): 4k randread and randwrite at iodepth 1 and 32, on 1 queue (virtue-blk
--num-queues 1 --iothreads 1; qsd num-queues=1) and 2 queues (virtue-blk --num-queues 2
--iothreads 2; qsd num-queues=2; the front-end runs one thread per queue). Per row: --runs runs of
--runtime seconds on each back-end, interleaved A B B A A B ..., medians of IOPS, p50 and p99;
the ratios virtue-blk/qsd (IOPS: higher is better for virtue-blk; p99: lower is) and the
cache-line ping-pong (`virtue-bench pingpong`) measured just before and just after the row: this
machine's vCPUs change placement every few minutes, so compare ratios within one run only.

Table 2 (issue 5, "the price of platform DMA"): 4k randread at iodepth 32 on 1 queue against
virtue-blk, front-end DMA modes direct, premapped, lazy, strict, bounce (every mode but direct
negotiates ACCESS_PLATFORM), --runs rounds in forward then reverse order, medians, ratio to
direct.

Then the goals of issue 5 next to this run's figures: virtue-blk >= 1.5x qsd IOPS at iodepth 32;
p99 at iodepth 1 no worse than qsd's; premapped within 10% of direct. A missed goal is reported,
not an error: the exit status is 1 only when a back-end or a run failed (2 for a bad command
line, 77 when qemu-storage-daemon is not installed). --json prints one object per row (table
"blk" or "dma") and one for the goals. Only processes this script started are ever signalled.
About 4 minutes with the defaults.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build-bench")
DMA_MODES = ["direct", "premapped", "lazy", "strict", "bounce"]
GOAL_IOPS = 1.5      # virtue-blk / qsd IOPS at iodepth 32, at least
GOAL_PREMAPPED = 0.9  # premapped / direct IOPS, at least


class Failed(Exception):
    pass


def log(args, msg):
    """Progress on stderr (stdout carries the tables or the JSON)."""
    if not args.quiet_progress:
        print(msg, file=sys.stderr, flush=True)


def parse_size(s):
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", s)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {s!r}")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def cpu_list(s):
    out = set()
    for part in s.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return sorted(out)


def cpu_str(cpus):
    return ",".join(str(c) for c in cpus)


def pingpong(args):
    """One-way cache-line ping-pong in ns, or None when virtue-bench is not there."""
    if not args.bench_bin or not os.access(args.bench_bin, os.X_OK):
        return None
    try:
        p = subprocess.run([args.bench_bin, "pingpong", "--json"], capture_output=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        return float(json.loads(p.stdout.decode())["pingpong_ns"])
    except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None


class Backend:
    """One back-end process on a unix socket in @tmp, pinned to the back-end CPUs."""

    def __init__(self, args, tmp, kind, queues):
        self.args, self.tmp, self.kind, self.queues = args, tmp, kind, queues
        self.name = f"{kind}-q{queues}"
        self.sock = os.path.join(tmp, self.name + ".sock")
        self.logpath = os.path.join(tmp, self.name + ".log")
        self.image = None
        if kind == "virtue-blk":
            cmd = [args.virtue_blk, "--socket-path", self.sock, "--size", str(args.size),
                   "--num-queues", str(queues), "--iothreads", str(queues)]
        else:
            self.image = os.path.join(tmp, self.name + ".img")
            with open(self.image, "wb") as f:
                f.truncate(args.size)
            # Its fast configuration, not its defaults: an iothread (which polls 32 us before
            # sleeping, as virtue-blk --poll-us does) and io_uring instead of the thread pool.
            cmd = ["qemu-storage-daemon", "--object", "iothread,id=io0",
                   "--blockdev", f"driver=file,node-name=file0,filename={self.image},"
                   "aio=io_uring",
                   "--export", "type=vhost-user-blk,id=exp0,node-name=file0,addr.type=unix,"
                   f"addr.path={self.sock},num-queues={queues},writable=on,iothread=io0"]
        cmd = ["taskset", "-c", cpu_str(args.be_cpus)] + cmd
        if args.verbose:
            log(args, "  $ " + " ".join(cmd))
        out = open(self.logpath, "wb")
        self.p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            if self.p.poll() is not None:
                raise Failed(f"{self.name} exited with {self.p.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise Failed(f"{self.name} did not create {self.sock} within 10 s")
            time.sleep(0.02)

    def tail(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read()[-1500:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        if self.image:
            try:
                os.unlink(self.image)
            except OSError:
                pass


def virtue_blk_run(args, be, *argv):
    """One `virtue blk --json` run on the front-end CPUs; returns its summary."""
    cmd = ["taskset", "-c", cpu_str(args.fe_cpus), args.virtue, "blk", "--socket", be.sock,
           "--json", "--quiet"] + list(argv)
    if args.verbose:
        log(args, "  $ " + " ".join(cmd))
    limit = args.runtime + 30
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=limit, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Failed(f"`{' '.join(cmd)}` still running after {limit:.0f} s")
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    if r.returncode != 0:
        raise Failed(f"`{' '.join(cmd)}` exited {r.returncode}\n{out}{err}\n"
                     f"--- {be.name} log (tail)\n{be.tail()}")
    try:
        s = json.loads(out)
    except ValueError:
        raise Failed(f"`{' '.join(cmd)}`: not one JSON object on stdout: {out!r}")
    if s.get("io_errors") or s.get("error"):
        raise Failed(f"`{' '.join(cmd)}`: {s.get('io_errors')} I/O errors, {s.get('error')}")
    return s


def fill(args, be):
    """The same bytes on every back-end: one sequential pass of the pattern (seed 1)."""
    virtue_blk_run(args, be, "--rw", "write", "--bs", "1M", "--iodepth", "4", "--seed", "1")


def measure(args, be, rw, iodepth, queues, dma="direct"):
    s = virtue_blk_run(args, be, "--rw", rw, "--bs", "4k", "--iodepth", str(iodepth),
                       "--queues", str(queues), "--runtime", str(args.runtime), "--dma", dma)
    a = s["all"]
    return {"iops": a["iops"], "p50_us": a["lat_us"]["p50"], "p99_us": a["lat_us"]["p99"],
            "dma": s["dma"], "access_platform": "ACCESS_PLATFORM" in s["features"].split()}


def medians(runs):
    return {k: statistics.median(r[k] for r in runs) for k in ("iops", "p50_us", "p99_us")}


def blk_rows(args, tmp):
    rows = []
    for queues in (1, 2):
        bes = {}
        try:
            for kind in ("virtue-blk", "qsd"):
                bes[kind] = Backend(args, tmp, kind, queues)
                fill(args, bes[kind])
            for rw in ("randread", "randwrite"):
                for qd in (1, 32):
                    pp0 = pingpong(args)
                    runs = {"virtue-blk": [], "qsd": []}
                    for i in range(args.runs):
                        order = ["virtue-blk", "qsd"] if i % 2 == 0 else ["qsd", "virtue-blk"]
                        for kind in order:
                            runs[kind].append(measure(args, bes[kind], rw, qd, queues))
                    pp1 = pingpong(args)
                    v, q = medians(runs["virtue-blk"]), medians(runs["qsd"])
                    row = {"table": "blk", "rw": rw, "bs": 4096, "iodepth": qd,
                           "queues": queues, "virtue_blk": v, "qsd": q,
                           "iops_ratio": v["iops"] / q["iops"] if q["iops"] else None,
                           "p99_ratio": v["p99_us"] / q["p99_us"] if q["p99_us"] else None,
                           "pingpong_ns_before": pp0, "pingpong_ns_after": pp1,
                           "runs": runs}
                    rows.append(row)
                    log(args, f"  {rw} QD{qd} {queues}q: virtue-blk {v['iops']:.0f} IOPS, "
                              f"qsd {q['iops']:.0f} IOPS ({row['iops_ratio']:.2f}x)")
        finally:
            for be in bes.values():
                be.stop()
    return rows


def dma_rows(args, tmp):
    be = Backend(args, tmp, "virtue-blk", 1)
    runs = {m: [] for m in DMA_MODES}
    pps = []
    try:
        fill(args, be)
        for i in range(args.runs):
            pps.append(pingpong(args))
            for mode in (DMA_MODES if i % 2 == 0 else DMA_MODES[::-1]):
                r = measure(args, be, "randread", 32, 1, mode)
                if r["access_platform"] != (mode != "direct"):
                    raise Failed(f"--dma {mode}: ACCESS_PLATFORM negotiated: "
                                 f"{r['access_platform']}")
                runs[mode].append(r)
        pps.append(pingpong(args))
    finally:
        be.stop()
    direct = medians(runs["direct"])["iops"]
    rows = []
    for mode in DMA_MODES:
        m = medians(runs[mode])
        rows.append({"table": "dma", "mode": mode, "dma": runs[mode][0]["dma"],
                     "access_platform": runs[mode][0]["access_platform"], "rw": "randread",
                     "bs": 4096, "iodepth": 32, "queues": 1, **m,
                     "ratio_to_direct": m["iops"] / direct if direct else None,
                     "pingpong_ns": pps, "runs": runs[mode]})
        log(args, f"  dma {mode}: {m['iops']:.0f} IOPS")
    return rows


def goals(blk, dma):
    qd32 = [r for r in blk if r["iodepth"] == 32]
    qd1 = [r for r in blk if r["iodepth"] == 1]
    g = {"table": "goals",
         "iops_qd32": {"goal": f"virtue-blk >= {GOAL_IOPS}x qsd IOPS at iodepth 32",
                       "ratios": {f"{r['rw']} {r['queues']}q": r["iops_ratio"] for r in qd32},
                       "met": all(r["iops_ratio"] and r["iops_ratio"] >= GOAL_IOPS
                                  for r in qd32)},
         "p99_qd1": {"goal": "virtue-blk p99 <= qsd p99 at iodepth 1",
                     "ratios": {f"{r['rw']} {r['queues']}q": r["p99_ratio"] for r in qd1},
                     "met": all(r["p99_ratio"] is not None and r["p99_ratio"] <= 1.0
                                for r in qd1)}}
    pm = [r for r in dma if r["mode"] == "premapped"]
    if pm:
        g["premapped"] = {"goal": f"premapped >= {GOAL_PREMAPPED:.2f}x direct IOPS "
                                  "(within 10%)",
                          "ratio": pm[0]["ratio_to_direct"],
                          "met": pm[0]["ratio_to_direct"] >= GOAL_PREMAPPED}
    return g


def fmt_pp(x):
    return f"{x:.0f}" if x is not None else "-"


def print_tables(args, blk, dma, g, seconds):
    print(f"blk: virtue front-end (`virtue blk`, taskset -c {cpu_str(args.fe_cpus)}) -> "
          f"back-end (taskset -c {cpu_str(args.be_cpus)}); 4k random, RAM-backed "
          f"{args.size >> 20} MiB (virtue-blk --size; qsd: raw image in /dev/shm, iothread, "
          "aio=io_uring), "
          f"both pre-filled; median of {args.runs} x {args.runtime:g} s runs per back-end, "
          f"ABBA order")
    print(f"{'rw':<10} {'QD':>3} {'q':>2} | {'virtue-blk':>10} {'p50 us':>7} {'p99 us':>7} | "
          f"{'qsd IOPS':>10} {'p50 us':>7} {'p99 us':>7} | {'IOPS v/q':>8} {'p99 v/q':>7} | "
          f"{'ping-pong ns':>12}")
    for r in blk:
        v, q = r["virtue_blk"], r["qsd"]
        print(f"{r['rw']:<10} {r['iodepth']:>3} {r['queues']:>2} | {v['iops']:>10.0f} "
              f"{v['p50_us']:>7.1f} {v['p99_us']:>7.1f} | {q['iops']:>10.0f} "
              f"{q['p50_us']:>7.1f} {q['p99_us']:>7.1f} | {r['iops_ratio']:>7.2f}x "
              f"{r['p99_ratio']:>6.2f}x | "
              f"{fmt_pp(r['pingpong_ns_before']):>5} / {fmt_pp(r['pingpong_ns_after']):<5}")
    print("(IOPS column under virtue-blk; ratios virtue-blk / qsd: IOPS higher is better, "
          "p99 lower is better)")
    if dma:
        print()
        print(f"the price of platform DMA: 4k randread, iodepth 32, 1 queue, virtue-blk; "
              f"median of {args.runs} rounds (forward, reverse, ...) of {args.runtime:g} s")
        print(f"{'mode':<10} {'negotiated':<17} {'IOPS':>10} {'p50 us':>7} {'p99 us':>7} "
              f"{'vs direct':>9}")
        for r in dma:
            neg = "ACCESS_PLATFORM" if r["access_platform"] else "-"
            print(f"{r['mode']:<10} {neg:<17} {r['iops']:>10.0f} {r['p50_us']:>7.1f} "
                  f"{r['p99_us']:>7.1f} {r['ratio_to_direct']:>8.2f}x")
        print("ping-pong ns around the rounds: " +
              " / ".join(fmt_pp(x) for x in dma[0]["pingpong_ns"]))
    print()
    print("issue 5 goals, this run:")

    def ratios(d):
        return ", ".join(f"{k} {v:.2f}x" if v is not None else f"{k} -" for k, v in d.items())
    for key in ("iops_qd32", "p99_qd1"):
        print(f"  {g[key]['goal']}: {ratios(g[key]['ratios'])}: "
              f"{'met' if g[key]['met'] else 'NOT met'}")
    if "premapped" in g:
        print(f"  {g['premapped']['goal']}: {g['premapped']['ratio']:.2f}x: "
              f"{'met' if g['premapped']['met'] else 'NOT met'}")
    print(f"({seconds:.0f} s in all; this machine's vCPUs move: compare ratios within one run)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--virtue", default=os.path.join(BUILD, "tools", "virtue"))
    ap.add_argument("--virtue-blk", default=os.path.join(BUILD, "tools", "virtue-blk"))
    ap.add_argument("--bench-bin", default=os.path.join(BUILD, "tools", "virtue-bench"),
                    help="virtue-bench, for the ping-pong (skipped when absent)")
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"))
    ap.add_argument("--runtime", type=float, default=3.0, help="seconds per run (default 3)")
    ap.add_argument("--runs", type=int, default=3, help="runs per back-end and row (median)")
    ap.add_argument("--fe-cpus", type=cpu_list, help="front-end CPUs (taskset list)")
    ap.add_argument("--be-cpus", type=cpu_list, help="back-end CPUs (taskset list)")
    ap.add_argument("--no-dma", action="store_true", help="skip the DMA-mode table")
    ap.add_argument("--json", action="store_true", help="one JSON object per row on stdout")
    ap.add_argument("-q", "--quiet-progress", action="store_true", help="no progress on stderr")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command")
    args = ap.parse_args()
    if args.size % 4096 or args.size < (1 << 20) or args.runs < 1 or args.runtime <= 0:
        ap.error("--size: a multiple of 4k, at least 1M; --runs >= 1; --runtime > 0")
    if not shutil.which("qemu-storage-daemon"):
        print("SKIP: qemu-storage-daemon not installed (Debian: qemu-system-common)")
        return 77
    for b in (args.virtue, args.virtue_blk):
        if not os.access(b, os.X_OK):
            print(f"no {b}: build it (meson setup build-bench --buildtype=release; "
                  "ninja -C build-bench) or pass --virtue/--virtue-blk", file=sys.stderr)
            return 1
    cpus = sorted(os.sched_getaffinity(0))
    if args.fe_cpus is None and args.be_cpus is None:
        if len(cpus) < 2:
            print("need 2 CPUs to pin the front-end and the back-end apart", file=sys.stderr)
            return 1
        half = len(cpus) // 2
        args.fe_cpus, args.be_cpus = cpus[:half], cpus[half:]
    elif args.fe_cpus is None or args.be_cpus is None:
        ap.error("--fe-cpus and --be-cpus go together")
    if set(args.fe_cpus) & set(args.be_cpus):
        ap.error("--fe-cpus and --be-cpus overlap")

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="virtue-fe-bench-", dir=base)
    t0 = time.monotonic()
    log(args, f"blk_frontend_bench: front-end on CPU {cpu_str(args.fe_cpus)}, back-ends on CPU "
              f"{cpu_str(args.be_cpus)}, {args.runs} x {args.runtime:g} s per back-end and row")
    try:
        blk = blk_rows(args, tmp)
        dma = [] if args.no_dma else dma_rows(args, tmp)
    except Failed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    g = goals(blk, dma)
    if args.json:
        for r in blk + dma + [g]:
            r = dict(r)
            r["fe_cpus"], r["be_cpus"] = args.fe_cpus, args.be_cpus
            print(json.dumps(r))
    else:
        print_tables(args, blk, dma, g, time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
