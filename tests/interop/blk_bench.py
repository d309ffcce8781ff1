#!/usr/bin/env python3
"""Guest benchmark: the same Linux guest workload on virtue-blk and on qemu-storage-daemon.

    blk_bench.py --kit DIR [--kit-script tests/interop/guest-kit.sh] --backend-bin PATH
                 [--bench-bin PATH] [--seconds S] [--rounds N] [--jobs N] [--image-mb N]
                 [--mq4] [--no-iommu] [--runs a,b] [--only a,b] [--qsd-aio io_uring]
                 [--json] [--keep] [-v]

One RAM-backed image (/dev/shm, random bytes) is shared by every run. Each run starts one
back-end on it and boots the guest of blk_guest.py (same kit, same QEMU options: TCG, q35, 512 MiB
of shared memfd memory, 2 vCPUs, vhost-user-blk-pci) with vt.workload=bench: guest/blk-bench.sh
runs time-bounded O_DIRECT workloads on /dev/vda and prints VT-BENCH lines. Runs, in this order:

    virtue        virtue-blk (--backend-bin), num-queues=1
    qsd           qemu-storage-daemon's vhost-user-blk export, num-queues=1
    virtue+viommu virtue-blk behind intel-iommu (iommu_platform=on, guest iommu.strict=1): the
                  price of ACCESS_PLATFORM (qsd cannot attach this way)
    with --mq4:   virtue-mq4, qsd-mq4: num-queues=4, 4 vCPUs, virtue on 2 I/O threads

--rounds N repeats that list N times, every other round in reverse order (ABC CBA ...), and
reports the median of each figure over the rounds.

Around every run `virtue-bench pingpong` measures the host's cache-line ping-pong (this machine's
vCPUs change placement every few minutes: a figure means something only beside it, and ratios only
within one run of this script). The table gives, per workload and run, IOPS, MB/s and µs per
operation (1 / IOPS: with several jobs that is the inverse of the throughput, not a latency): the
guest's view, which TCG dominates, so it compares whole request paths. Beside it the back-end's
own cost: its CPU time (read from /proc while the guest is quiet, --settle seconds around each
workload) per request the device completed. Ratios virtue/qsd and virtue+viommu/virtue of both.
Exit status 1 if a run failed (its logs are printed).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import blk_guest  # noqa: E402  (Boot, BACKENDS, CaseFailed, tail, bits_str, the feature bits)

WORKLOADS = ["seq-read-64k", "seq-write-64k", "seq-read-4k", "seq-write-4k", "rand-read-4k",
             "rand-write-4k", "rand-spawn-4k"]


def runs_for(args):
    runs = [("virtue", "virtue", dict(nq=1, iommu=False)),
            ("qsd", "qsd", dict(nq=1, iommu=False))]
    if not args.no_iommu:
        runs.append(("virtue+viommu", "virtue", dict(nq=1, iommu=True)))
    if args.mq4:
        runs += [("virtue-mq4", "virtue", dict(nq=4, iommu=False)),
                 ("qsd-mq4", "qsd", dict(nq=4, iommu=False))]
    if args.runs:
        runs = [r for r in runs if r[0] in args.runs.split(",")]
    return runs


class BenchBoot(blk_guest.Boot):
    """blk_guest's boot, with qemu-storage-daemon's AIO engine selectable (--qsd-aio)."""

    def backend_cmd(self, nq, ro):
        cmd = super().backend_cmd(nq, ro)
        if self.args.backend == "qsd" and self.args.qsd_aio:
            i = cmd.index("--blockdev") + 1
            cmd[i] += f",aio={self.args.qsd_aio}"
        return cmd


def pingpong(args):
    """One-way cache-line ping-pong in ns, or None when virtue-bench is not there."""
    if not args.bench_bin or not os.access(args.bench_bin, os.X_OK):
        return None
    try:
        r = subprocess.run([args.bench_bin, "pingpong", "--json", "--quick"], capture_output=True,
                           text=True, timeout=60)
        return json.loads(r.stdout.strip().splitlines()[-1])["pingpong_ns"]
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def cpu_seconds(pid):
    """User + system CPU time of a process (its exited threads included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(args, label, backend, spec, tmp, image, log):
    """Boots the guest once on one back-end (files in tmp); returns the parsed results."""
    rargs = argparse.Namespace(**vars(args))
    rargs.backend = backend
    cfg = dict(nq=spec["nq"], iommu=spec["iommu"], packed=False, ro=False,
               cpus=4 if spec["nq"] > 1 else 2, workload="bench",
               cmdline=f"vt.bench.ms={int(args.seconds * 1000)} vt.bench.jobs={args.jobs} "
               f"vt.bench.settle={args.settle:g}"
               + (f" vt.bench.only={args.only}" if args.only else ""))
    pp_before = pingpong(args)
    boot = BenchBoot(rargs, tmp, label, log)
    boot.image = image
    boot.initrd = os.path.join(args.kit, "initramfs.gz")
    t0 = time.monotonic()
    cpu = {}  # workload -> [back-end CPU s at VT-MARK start, at its VT-BENCH line]

    def watch(data, elapsed):
        # The guest is quiet for --settle seconds after each of these lines: the back-end idles.
        # A mark first seen together with its VT-BENCH line was seen too late: no figure.
        for name in re.findall(rb"VT-MARK start (\S+)", data):
            if name.decode() not in cpu:
                late = b"VT-BENCH name=" + name + b" " in data
                cpu[name.decode()] = [None if late else cpu_seconds(boot.bproc.pid), None]
        for name in re.findall(rb"VT-BENCH name=(\S+)", data):
            c = cpu.get(name.decode())
            if c and c[0] is not None and c[1] is None:
                c[1] = cpu_seconds(boot.bproc.pid)

    try:
        boot.start_backend(cfg["nq"], False)
        qrc, qerr = boot.run_qemu(cfg, watch)
        if qrc != 0:
            raise blk_guest.CaseFailed(f"QEMU exited with {qrc}: {qerr}")
        if boot.bproc.poll() is not None:
            raise blk_guest.CaseFailed(f"backend died (exit {boot.bproc.returncode}): "
                                       + blk_guest.tail(boot.blog, 10))
    finally:
        boot.close()
    wall = time.monotonic() - t0
    pp_after = pingpong(args)
    out = open(boot.serial, errors="replace").read()
    problems = [f"guest: {e}" for e in re.findall(r"VT-ERR (.*)", out)]
    m = re.search(r"VT-END rc=(\d+)", out)
    if not m:
        problems.append("no VT-END marker (guest crashed or hung)")
    elif m.group(1) != "0":
        problems.append(f"workload exit status {m.group(1)}")
    dev = re.search(r"VT-DEV \S+ virtio=\S+ features=([01]+) queues=(\d+) .* iommu_group=(\S+)",
                    out)
    if not dev:
        problems.append("no VT-DEV line")
    else:
        feat, queues, group = dev.group(1), int(dev.group(2)), dev.group(3)
        ap = len(feat) > blk_guest.F_ACCESS_PLATFORM and feat[blk_guest.F_ACCESS_PLATFORM] == "1"
        if ap != spec["iommu"]:
            problems.append(f"ACCESS_PLATFORM {'not ' if spec['iommu'] else ''}negotiated")
        if queues != min(cfg["nq"], cfg["cpus"]):
            problems.append(f"{queues} queues, expected {min(cfg['nq'], cfg['cpus'])}")
    results = {}
    for line in re.findall(r"VT-BENCH (.*)", out):
        kv = dict(f.split("=", 1) for f in line.split())
        x = results[kv["name"]] = {k: (v if k == "name" else float(v)) for k, v in kv.items()}
        c = cpu.get(kv["name"])
        x["backend_cpu_s"] = c[1] - c[0] if c and None not in c else None
    want = [w for w in WORKLOADS if not args.only or w in args.only.split(",")]
    missing = [w for w in want if w not in results]
    if missing:
        problems.append(f"no VT-BENCH line for {', '.join(missing)}")
    if problems:
        raise blk_guest.CaseFailed("; ".join(problems))
    return dict(label=label, backend=backend, nq=cfg["nq"], cpus=cfg["cpus"], iommu=spec["iommu"],
                features=blk_guest.bits_str(feat), queues=queues, iommu_group=group,
                pingpong_before=pp_before, pingpong_after=pp_after, wall=wall, results=results)


def median(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def aggregate(label, rounds):
    """One run's rounds -> medians per workload, every ping-pong measured around them."""
    first = rounds[0]
    res = {}
    for w in WORKLOADS:
        xs = [r["results"][w] for r in rounds if w in r["results"]]
        if not xs:
            continue
        iops = median([x["iops"] for x in xs])
        cpu = [x["backend_cpu_s"] for x in xs if x["backend_cpu_s"] is not None]
        res[w] = dict(bs=int(xs[0]["bs"]), jobs=int(xs[0]["jobs"]), iops=iops,
                      mbps=median([x["mbps"] for x in xs]) if xs[0]["bytes"] else None,
                      us_per_op=1e6 / iops if iops else None, iops_rounds=[x["iops"] for x in xs],
                      device_requests=[int(x["reqs"]) for x in xs],
                      backend_cpu_s=[x["backend_cpu_s"] for x in xs],
                      # the back-end's own cost: its CPU time per request the device completed
                      backend_cpu_us_per_req=median([1e6 * x["backend_cpu_s"] / x["reqs"]
                                                     for x in xs if x["reqs"] and
                                                     x["backend_cpu_s"] is not None]),
                      # with no request (rand-spawn-4k): the share of a CPU it uses idle
                      backend_cpu_idle=median([x["backend_cpu_s"] / x["seconds"] for x in xs
                                               if not x["reqs"] and
                                               x["backend_cpu_s"] is not None]))
        if not cpu:
            res[w]["backend_cpu_us_per_req"] = res[w]["backend_cpu_idle"] = None
    pps = [p for r in rounds for p in (r["pingpong_before"], r["pingpong_after"])]
    return dict(label=label, backend=first["backend"], queues=first["queues"],
                features=first["features"], pingpong=pps, wall=[r["wall"] for r in rounds],
                results=res)


def fmt_pp(pps):
    v = [p for p in pps if p is not None]
    if not v:
        return "-"
    return f"{min(v):.0f}-{max(v):.0f}" if len(v) > 1 else f"{v[0]:.0f}"


def ratio(a, b):
    return a / b if a and b else None


RATIOS = [("virtue", "qsd", "virtue/qsd"), ("virtue+viommu", "virtue", "viommu/virtue"),
          ("virtue-mq4", "qsd-mq4", "virtue/qsd")]


def fmt(v, spec, width):
    return f"{'-' if v is None else format(v, spec):>{width}}"


def print_table(args, agg):
    print(f"guest benchmark: Linux guest under QEMU TCG, O_DIRECT on vhost-user-blk, "
          f"{args.image_mb} MiB image in /dev/shm,\n{args.seconds:g} s per workload, random I/O "
          f"with {args.jobs} jobs; qsd aio={args.qsd_aio or 'threads'}; median of {args.rounds} "
          f"round(s), one boot per run and round")
    print(f"{'run':<14} {'ping-pong ns (min-max)':>23} {'boot+bench s':>13} {'idle CPU':>8} "
          f"{'queues':>6}  negotiated")
    for a in agg.values():
        idle = a["results"].get("rand-spawn-4k", {}).get("backend_cpu_idle")
        print(f"{a['label']:<14} {fmt_pp(a['pingpong']):>23} "
              f"{'/'.join(f'{w:.0f}' for w in a['wall']):>13} "
              f"{'-' if idle is None else f'{100 * idle:.1f}%':>8} {a['queues']:>6}  "
              f"{a['features']}")
    groups = [["virtue", "qsd", "virtue+viommu"], ["virtue-mq4", "qsd-mq4"]]
    for g in groups:
        cols = [c for c in g if c in agg]
        if not cols:
            continue
        rts = [(a, b, n) for a, b, n in RATIOS if a in cols and b in cols]
        print()
        h1, h2 = f"{'':<14}", f"{'workload':<14}"
        for c in cols:
            h1 += f" | {c:^29}"
            h2 += f" | {'IOPS':>6} {'MB/s':>6} {'µs/op':>6} {'cpu µs':>7}"
        for a, b, n in rts:
            h1 += f" | {n:^13}"
            h2 += f" | {'IOPS':>6} {'cpu':>6}"
        print(h1)
        print(h2)
        print("-" * len(h2))
        for w in WORKLOADS:
            if not any(w in agg[c]["results"] for c in cols):
                continue
            line = f"{w:<14}"
            for c in cols:
                x = agg[c]["results"].get(w, {})
                line += (f" | {fmt(x.get('iops'), '.0f', 6)} {fmt(x.get('mbps'), '.1f', 6)} "
                         f"{fmt(x.get('us_per_op'), '.0f', 6)} "
                         f"{fmt(x.get('backend_cpu_us_per_req'), '.1f', 7)}")
            for a, b, n in rts:
                xa, xb = agg[a]["results"].get(w, {}), agg[b]["results"].get(w, {})
                qi = ratio(xa.get("iops"), xb.get("iops"))
                qc = ratio(xa.get("backend_cpu_us_per_req"), xb.get("backend_cpu_us_per_req"))
                line += f" | {fmt(qi, '.2f', 6)} {fmt(qc, '.2f', 6)}"
            print(line)
    print("""
µs/op: 1 / IOPS (one job: the time per request; several jobs: inverse throughput), the guest's
view, which TCG dominates. cpu µs: the back-end process's own CPU time (user + system, all its
threads) per request the device completed: its cost per operation. idle CPU: its CPU use during
rand-spawn-4k, the dd loop without I/O. rand-* run one dd process per request (shell-bound);
rand-spawn-4k's IOPS is the shell's share and the noise floor (the same guest work in every
column). Ratios a/b: IOPS (>1: a is faster) and cpu µs (<1: a costs less).""", flush=True)


def print_json(args, agg):
    for a in agg.values():
        for w, x in a["results"].items():
            o = dict(bench="guest-blk", run=a["label"], backend=a["backend"], workload=w,
                     queues=a["queues"], rounds=args.rounds, seconds=args.seconds, **x,
                     pingpong_ns=a["pingpong"])
            for ra, rb, n in RATIOS:
                if a["label"] == ra and rb in agg:
                    y = agg[rb]["results"].get(w, {})
                    key = "viommu_virtue" if "viommu" in n else "virtue_qsd"
                    o["iops_ratio_" + key] = ratio(x["iops"], y.get("iops"))
                    o["cpu_ratio_" + key] = ratio(x["backend_cpu_us_per_req"],
                                                  y.get("backend_cpu_us_per_req"))
            print(json.dumps(o), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kit", required=True, help="guest kit directory (guest-kit.sh OUTDIR)")
    ap.add_argument("--kit-script", help="build the kit first with this guest-kit.sh")
    ap.add_argument("--backend-bin", required=True, help="the virtue-blk binary")
    ap.add_argument("--bench-bin", help="virtue-bench, for the ping-pong (default: beside "
                    "--backend-bin, ../virtue-bench)")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--qsd-aio", choices=["threads", "io_uring"],
                    help="qemu-storage-daemon's file AIO (default: its own, threads)")
    ap.add_argument("--seconds", type=float, default=1.5, help="per workload (default 1.5)")
    ap.add_argument("--rounds", type=int, default=2, help="boots per run (ABC CBA ...), median")
    ap.add_argument("--jobs", type=int, default=4, help="parallel jobs for random I/O")
    ap.add_argument("--settle", type=float, default=0.5, help="guest's quiet seconds around each "
                    "workload, when the back-end's CPU time is read (default 0.5)")
    ap.add_argument("--image-mb", type=int, default=256)
    ap.add_argument("--mq4", action="store_true", help="also num-queues=4 runs (4 vCPUs)")
    ap.add_argument("--no-iommu", action="store_true", help="no virtue+viommu run")
    ap.add_argument("--runs", help="comma-separated runs to do (virtue,qsd,virtue+viommu,"
                    "virtue-mq4,qsd-mq4)")
    ap.add_argument("--only", help="comma-separated workloads (" + ",".join(WORKLOADS) + ")")
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds per guest boot")
    ap.add_argument("--append", help="more guest kernel command line")
    ap.add_argument("--json", action="store_true", help="one JSON object per run and workload")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.bench_bin is None:
        args.bench_bin = os.path.join(os.path.dirname(os.path.abspath(args.backend_bin)),
                                      "virtue-bench")
    if args.only:
        bad = [w for w in args.only.split(",") if w not in WORKLOADS]
        if bad:
            ap.error(f"unknown workload {', '.join(bad)} (known: {', '.join(WORKLOADS)})")

    def log(msg):
        if args.verbose:
            print(f"# {msg}", file=sys.stderr, flush=True)

    if args.kit_script:
        if subprocess.run(["sh", args.kit_script, args.kit], timeout=900).returncode != 0:
            print("the guest kit could not be built", file=sys.stderr)
            return 1
    for f in ("vmlinuz", "initramfs.gz"):
        if not os.path.exists(os.path.join(args.kit, f)):
            print(f"no {f} in {args.kit}: run tests/interop/guest-kit.sh {args.kit}",
                  file=sys.stderr)
            return 1

    base = tempfile.mkdtemp(prefix="vt-bench-",
                            dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    image = os.path.join(base, "disk.img")
    failed = 0
    rounds = {}
    try:
        block = os.urandom(1 << 20)
        with open(image, "wb") as f:
            for _ in range(args.image_mb):
                f.write(block)
        plan = runs_for(args)
        for n in range(args.rounds):
            for label, backend, spec in (plan if n % 2 == 0 else plan[::-1]):
                tmp = tempfile.mkdtemp(prefix=f"{label}-{n}-", dir=base)
                try:
                    r = run_one(args, label, backend, spec, tmp, image, log)
                    log(f"{label}: round {n + 1}: {r['wall']:.1f} s, ping-pong "
                        f"{fmt_pp([r['pingpong_before'], r['pingpong_after']])} ns")
                    rounds.setdefault(label, []).append(r)
                    if not args.keep:
                        shutil.rmtree(tmp, ignore_errors=True)
                except (blk_guest.CaseFailed, OSError, subprocess.SubprocessError) as e:
                    failed += 1
                    print(f"FAIL {label} (round {n + 1}): {e}", flush=True)
                    for what, fn, k in (("guest serial", "serial.log", 60),
                                        ("QEMU", "qemu.log", 30), ("backend", "backend.log", 30)):
                        p = os.path.join(tmp, fn)
                        if os.path.exists(p):
                            print(f"--- {what} ({p}), last {k} lines:")
                            print(blk_guest.tail(p, k))
                    print(f"--- end of logs for {label}", flush=True)
        agg = {label: aggregate(label, rounds[label]) for label, _, _ in runs_for(args)
               if label in rounds}
        if agg:
            (print_json if args.json else print_table)(args, agg)
    finally:
        if args.keep:
            print(f"# kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
