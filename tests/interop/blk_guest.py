#!/usr/bin/env python3
"""Interop test: a real Linux guest under QEMU (TCG) drives a vhost-user-blk backend.

    blk_guest.py --kit DIR [--kit-script tests/interop/guest-kit.sh]
                 --backend qsd | --backend virtue --backend-bin PATH
                 [--seed N] [--timeout S] [--keep] CASE... | all

For each case it makes a temp dir (in /dev/shm when it can), a RAM-backed image file filled with
seeded bytes, starts the backend on a unix socket there, boots QEMU with shared memfd memory and a
vhost-user-blk-pci device, and boots the kit's kernel with an initramfs: a small per-run cpio (the
plan and the data to write, made here from the seed) in front of the kit's own archive. The guest
(guest/blk-workload.sh) prints the negotiated feature bits and queue count, writes the plan's
extents with O_DIRECT and through the page cache, syncs, drops caches and reads them back
comparing MD5s. Then this script checks: the expected feature bits, the queue count, the guest's
verdict, and the backing file byte for byte against its own model of what the guest wrote.

One line per case: "PASS case (N.N s)" or "FAIL case: reason"; exit status 1 if any failed.
Only the processes this script starts are ever signalled; the temp dir is removed (--keep leaves
it). The backend is a parameter: BACKENDS below says how to start each kind and what it supports.
"""
import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# Feature bits (the guest's /sys/bus/virtio/devices/*/features: character i is bit i).
BITS = {
    1: "SIZE_MAX", 2: "SEG_MAX", 4: "GEOMETRY", 5: "RO", 6: "BLK_SIZE", 9: "FLUSH",
    10: "TOPOLOGY", 11: "CONFIG_WCE", 12: "MQ", 13: "DISCARD", 14: "WRITE_ZEROES",
    15: "LIFETIME", 16: "SECURE_ERASE", 17: "ZONED",
    28: "INDIRECT_DESC", 29: "EVENT_IDX", 32: "VERSION_1", 33: "ACCESS_PLATFORM",
    34: "RING_PACKED", 35: "IN_ORDER", 36: "ORDER_PLATFORM", 37: "SR_IOV",
    38: "NOTIFICATION_DATA", 39: "NOTIF_CONFIG_DATA", 40: "RING_RESET",
}
F_RO, F_MQ, F_EVENT_IDX, F_VERSION_1 = 5, 12, 29, 32
F_ACCESS_PLATFORM, F_RING_PACKED = 33, 34

IOMMU_REFUSED = "iommu_platform=true is not supported by the device"

# nq: num-queues; packed: packed=on; iommu: vIOMMU + iommu_platform=on,ats=on; ro: read-only
# backend; reconnect: chardev reconnect=1, the backend is frozen mid-writes (requests pile up in
# the ring), SIGKILLed and restarted.
CASES = {
    "q35": dict(nq=1, packed=False, iommu=False, ro=False),
    "iommu": dict(nq=1, packed=False, iommu=True, ro=False),
    "mq4": dict(nq=4, packed=False, iommu=False, ro=False),
    "packed": dict(nq=1, packed=True, iommu=False, ro=False),
    "iommu-packed-mq4": dict(nq=4, packed=True, iommu=True, ro=False),
    "readonly": dict(nq=1, packed=False, iommu=False, ro=True),
    "reconnect": dict(nq=1, packed=False, iommu=False, ro=False, reconnect=True),
    "reconnect-packed": dict(nq=1, packed=True, iommu=False, ro=False, reconnect=True),
    # virtue only: virtue-blk kills itself with requests in flight (VIRTUE_BLK_TEST_CRASH_AT);
    # the restarted one must resubmit them from the inflight buffer QEMU kept.
    "crash-inflight": dict(nq=1, packed=False, iommu=False, ro=False, reconnect=True,
                           crash=True),
    "crash-inflight-packed": dict(nq=1, packed=True, iommu=False, ro=False, reconnect=True,
                                  crash=True),
}
# Requests virtue-blk completes before its test crash: well inside the write phase.
CRASH_AT = 24


def qsd_cmd(args, sock, image, nq, ro):
    return ["qemu-storage-daemon",
            "--blockdev", f"driver=file,node-name=file0,filename={image}"
            + (",read-only=on" if ro else ""),
            "--export", "type=vhost-user-blk,id=exp0,node-name=file0,addr.type=unix,"
            f"addr.path={sock},num-queues={nq},writable={'off' if ro else 'on'}"]


def virtue_cmd(args, sock, image, nq, ro):
    # Two I/O threads when there are several queues: queues then run concurrently.
    return [args.backend_bin, "--socket-path", sock, "--blk-file", image,
            "--num-queues", str(nq), "--iothreads", "2" if nq > 1 else "1",
            "--verbose"] + (["--read-only"] if ro else [])


# What each backend is expected to do. "iommu": QEMU accepts iommu_platform=on (the backend offers
# ACCESS_PLATFORM); when False, QEMU must refuse with IOMMU_REFUSED. "packed": RING_PACKED is
# negotiated when the device has packed=on (when False it must not be: the backend does not offer
# it and the guest falls back to split rings).
BACKENDS = {
    "qsd": dict(cmd=qsd_cmd, iommu=False, packed=False, event_idx=True),
    "virtue": dict(cmd=virtue_cmd, iommu=True, packed=True, event_idx=True),
}


class CaseFailed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# The plan: what the guest writes and reads, and the host's model of the resulting image.

def make_plan(seed, size, pattern_len, ro, nwrites=40):
    rnd = random.Random(seed)
    writes = []  # (kind, off, len, poff, cpu)

    def direct():
        ln = rnd.choice([4096, 8192, 65536, 131072, 1 << 20, 512 * rnd.randint(8, 600)])
        off = rnd.randrange(0, (size - ln) // 512 + 1) * 512
        return ("direct", off, ln)

    def cached():
        ln = rnd.choice([1, 511, 4096, 5000, rnd.randint(1, 300000)])
        off = rnd.randrange(0, size - ln + 1)
        return ("cached", off, ln)

    shapes = [("direct", 0, 4096), ("direct", size - 65536, 65536), ("cached", 4093, 7),
              ("cached", size - 3, 3)]
    while len(shapes) < nwrites:
        shapes.append(direct() if rnd.random() < 0.5 else cached())
    rnd.shuffle(shapes)
    for kind, off, ln in shapes:
        poff = rnd.randrange(0, pattern_len - ln + 1)
        writes.append((kind, off, ln, poff, rnd.randrange(4)))
    if ro:
        writes = [w for w in writes if w[0] == "direct"][:3] + \
                 [w for w in writes if w[0] == "cached"][:3]
    return writes


def apply_writes(image, pattern, writes):
    for kind, off, ln, poff, cpu in writes:
        image[off:off + ln] = pattern[poff:poff + ln]


def make_reads(model, writes, size):
    """Read-back checks: every written extent (in turn a cached read of the exact bytes or a
    direct read of the 512-aligned cover), then the whole device."""
    reads = []

    def md5(off, ln):
        return hashlib.md5(model[off:off + ln]).hexdigest()

    for i, (kind, off, ln, poff, cpu) in enumerate(writes):
        if i % 2:
            reads.append(("cached", off, ln, md5(off, ln)))
            continue
        a = off // 512 * 512
        e = min(size, -(-(off + ln) // 512) * 512)
        if e - a < 4096:  # direct reads need a buffer of at least a page (busybox dd aligns it)
            e = min(size, a + 4096)
            a = e - 4096
        reads.append(("direct", a, e - a, md5(a, e - a)))
    reads.append(("direct", 0, size, md5(0, size)))
    return reads


def newc(entries):
    """A cpio newc archive from (path, mode, data) entries."""
    out = bytearray()
    ino = 1000
    for path, mode, data in entries + [("TRAILER!!!", 0, b"")]:
        name = path.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name), 0))
        ino += 1
        out += hdr.encode() + name
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    out += b"\0" * (-len(out) % 512)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Processes.

def stop(proc, grace=5.0):
    """Ends a process this script started (and only that one)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def wait_socket(path, proc, logpath, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise CaseFailed(f"backend exited with {proc.returncode} before creating its socket: "
                             + tail(logpath, 10))
        time.sleep(0.05)
    raise CaseFailed(f"backend did not create {path} within {timeout:.0f} s")


def kernel_path(kit):
    """The decompressed ELF kernel when the kit has one (QEMU boots it through its PVH entry,
    skipping the bzImage decompression that takes seconds under TCG), else the bzImage."""
    v = os.path.join(kit, "vmlinux")
    return v if os.path.exists(v) else os.path.join(kit, "vmlinuz")


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def tail(path, n):
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def bits_str(features):
    names = [f"{BITS.get(i, 'bit')}({i})" for i, c in enumerate(features) if c == "1"]
    return " ".join(names)


# ---------------------------------------------------------------------------------------------

class Boot:
    """One backend + one QEMU boot of the guest in a temp dir. Starts only its own processes and
    ends them in close()."""

    def __init__(self, args, tmp, name, log):
        self.args, self.tmp, self.name, self.log = args, tmp, name, log
        self.sock = os.path.join(tmp, "blk.sock")
        self.serial = os.path.join(tmp, "serial.log")
        self.blog = os.path.join(tmp, "backend.log")
        self.qlog = os.path.join(tmp, "qemu.log")
        self.image = os.path.join(tmp, "disk.img")
        self.initrd = os.path.join(tmp, "initrd")
        self.bproc = self.qproc = None
        self.files = []

    def backend_cmd(self, nq, ro):
        return BACKENDS[self.args.backend]["cmd"](self.args, self.sock, self.image, nq, ro)

    def start_backend(self, nq, ro, env=None):
        bcmd = self.backend_cmd(nq, ro)
        self.log(f"{self.name}: backend: {' '.join(bcmd)}" + (f" (env {env})" if env else ""))
        out = open(self.blog, "ab")
        self.files.append(out)
        self.bproc = subprocess.Popen(bcmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                      env=dict(os.environ, **env) if env else None)
        wait_socket(self.sock, self.bproc, self.blog)

    def kill_backend(self):
        """SIGKILL, as a crash would; the socket file stays behind as it would."""
        if self.bproc is not None and self.bproc.poll() is None:
            self.bproc.kill()
            self.bproc.wait(timeout=10)
        if os.path.exists(self.sock):
            os.unlink(self.sock)

    def run_qemu(self, cfg, watch=None):
        """Boots the guest with cfg and waits for QEMU to exit. watch(serial_bytes, elapsed) is
        called about 5 times a second while it runs. Returns (exit status, QEMU's output)."""
        nq = cfg["nq"]
        iommu_machine = cfg["iommu"] or cfg.get("bypass", False)
        machine = "q35,memory-backend=mem" + (",kernel-irqchip=split" if iommu_machine else "")
        dev = f"vhost-user-blk-pci,chardev=c0,num-queues={nq}"
        if cfg["packed"]:
            dev += ",packed=on"
        if cfg["iommu"]:
            dev += ",iommu_platform=on,ats=on,disable-legacy=on"
        elif iommu_machine:
            dev += ",ats=on"
        # cfg may name another guest workload (blk_bench.py: "bench") and add to the command line.
        # loglevel=5: warnings reach the serial log, so a soft lockup or hung task prints its
        # stack there (shown when a case fails), not only its one-line summary.
        cmdline = ("console=ttyS0 panic=-1 loglevel=5 edd=off "
                   f"vt.workload={cfg.get('workload', 'blk')}")
        if cfg.get("cmdline"):
            cmdline += " " + cfg["cmdline"]
        if iommu_machine:
            cmdline += " intel_iommu=on iommu.strict=1"
        if self.args.append:
            cmdline += " " + self.args.append
        chardev = f"socket,id=c0,path={self.sock}" + (",reconnect=1" if cfg.get("reconnect") else "")
        qemu = [self.args.qemu, "-accel", "tcg", "-machine", machine, "-m", "512M",
                "-smp", str(cfg["cpus"]),
                "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-serial", f"file:{self.serial}", "-monitor", "none"]
        if iommu_machine:
            qemu += ["-device", "intel-iommu,intremap=on,device-iotlb=on"]
        qemu += ["-chardev", chardev, "-device", dev,
                 "-kernel", kernel_path(self.args.kit), "-initrd", self.initrd,
                 "-append", cmdline]
        self.log(f"{self.name}: qemu: {' '.join(qemu)}")
        out = open(self.qlog, "ab")
        self.files.append(out)
        t0 = time.monotonic()
        self.qproc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        booted = None
        while True:
            try:
                qrc = self.qproc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - t0
            data = read_bytes(self.serial)
            if booted is None and b"VT-BEGIN" in data:
                booted = elapsed
            if watch:
                watch(data, elapsed)
            if elapsed > self.args.timeout:
                raise CaseFailed(f"QEMU still running after {self.args.timeout:.0f} s "
                                 "(guest hung?)")
        self.log(f"{self.name}: QEMU ran {time.monotonic() - t0:.1f} s (workload started at "
                 f"{'-' if booted is None else round(booted, 1)} s), exit {qrc}")
        return qrc, tail(self.qlog, 20)

    def close(self):
        stop(self.qproc)
        stop(self.bproc)
        for f in self.files:
            f.close()


def prepare(boot, seed, size, ro, nwrites):
    """Writes the image and the initrd; returns the plan and the model of the final image."""
    pattern_len = 4 << 20
    pattern = random.Random(seed ^ 0x5A5A).randbytes(pattern_len)
    initial = random.Random(seed ^ 0xA5A5).randbytes(size)
    with open(boot.image, "wb") as f:
        f.write(initial)
    writes = make_plan(seed, size, pattern_len, ro, nwrites)
    model = bytearray(initial)
    if not ro:
        apply_writes(model, pattern, writes)
    reads = make_reads(model, writes, size)
    plan = [f"mode {'ro' if ro else 'rw'}", "dev vda"]
    plan += [f"w vda {k} {o} {n} {p} {c}" for k, o, n, p, c in writes]
    plan += [f"r vda {k} {o} {n} {m}" for k, o, n, m in reads]
    with open(boot.initrd, "wb") as f:
        f.write(newc([("vt", 0o40755, b""),
                      ("vt/plan", 0o100644, ("\n".join(plan) + "\n").encode()),
                      ("vt/pattern", 0o100644, pattern)]))
        with open(os.path.join(boot.args.kit, "initramfs.gz"), "rb") as k:
            shutil.copyfileobj(k, f)
    return writes, reads, bytes(model)


def run_case(args, name, spec, tmp, log):
    backend = BACKENDS[args.backend]
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    log(f"{name}: seed {seed}")
    size = args.image_mb << 20
    cfg = dict(spec)
    cfg["cpus"] = 4 if cfg["nq"] > 1 else 2
    notes = []

    if cfg["iommu"] and not backend["iommu"]:
        # The backend does not offer ACCESS_PLATFORM: QEMU must refuse the device...
        boot = Boot(args, tmp, name, log)
        try:
            prepare(boot, seed, size, cfg["ro"], 4)
            boot.start_backend(cfg["nq"], cfg["ro"])
            qrc, qerr = boot.run_qemu(cfg)
        finally:
            boot.close()
        if qrc == 0 or IOMMU_REFUSED not in qerr:
            raise CaseFailed(f"expected QEMU to refuse iommu_platform=on ({IOMMU_REFUSED!r}); "
                             f"exit {qrc}: {qerr}")
        notes.append(f"expected-unsupported by {args.backend}: QEMU refused: {IOMMU_REFUSED}")
        # ...and the same machine (vIOMMU, intremap, device-iotlb, ats) must still work with the
        # device outside the IOMMU: the command line is proven for the backend that can do it.
        cfg = dict(cfg, iommu=False, bypass=True)
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))

    boot = Boot(args, tmp, name, log)
    try:
        writes, reads, model = prepare(boot, seed, size, cfg["ro"],
                                       60 if cfg.get("reconnect") else 40)
        if cfg.get("crash") and args.backend != "virtue":
            raise CaseFailed("the crash cases need virtue-blk's test hook")
        boot.start_backend(cfg["nq"], cfg["ro"],
                           {"VIRTUE_BLK_TEST_CRASH_AT": str(CRASH_AT)} if cfg.get("crash") else None)
        watch = None
        events = {}
        if cfg.get("crash"):
            def watch(data, elapsed):
                # The backend dies by itself mid-writes; restart it a second later.
                if "killed" not in events and boot.bproc.poll() is not None:
                    events["writes_done_before_kill"] = b"VT-PHASE writes done" in data
                    events["killed"] = elapsed
                    if os.path.exists(boot.sock):
                        os.unlink(boot.sock)
                    log(f"{name}: backend crashed at {elapsed:.1f} s")
                elif "killed" in events and "restarted" not in events and \
                        elapsed > events["killed"] + 1.0:
                    boot.start_backend(cfg["nq"], cfg["ro"])
                    events["restarted"] = elapsed
                    log(f"{name}: backend restarted at {elapsed:.1f} s")
        elif cfg.get("reconnect"):
            def watch(data, elapsed):
                # Once the guest is writing: freeze the backend (SIGSTOP) for a second so that
                # the guest's next O_DIRECT write is left outstanding in the ring, kill it
                # (SIGKILL) with those requests unanswered, restart it a second later.
                if "killed" not in events and b"VT-PHASE writes start" in data:
                    time.sleep(0.3)
                    boot.bproc.send_signal(signal.SIGSTOP)
                    time.sleep(1.0)
                    events["writes_done_before_kill"] = b"VT-PHASE writes done" in \
                        read_bytes(boot.serial)
                    boot.kill_backend()
                    events["killed"] = elapsed
                    log(f"{name}: backend killed at {elapsed:.1f} s")
                elif "killed" in events and "restarted" not in events and \
                        elapsed > events["killed"] + 1.0:
                    boot.start_backend(cfg["nq"], cfg["ro"])
                    events["restarted"] = elapsed
                    log(f"{name}: backend restarted at {elapsed:.1f} s")
        qrc, qerr = boot.run_qemu(cfg, watch)
        if qrc != 0:
            raise CaseFailed(f"QEMU exited with {qrc}: {qerr}")
        if boot.bproc.poll() is not None:
            raise CaseFailed(f"backend died (exit {boot.bproc.returncode}): {tail(boot.blog, 10)}")
        if cfg.get("reconnect"):
            if "restarted" not in events:
                raise CaseFailed("the guest never started writing: backend not killed")
            if events["writes_done_before_kill"]:
                raise CaseFailed("the writes ended before the backend was killed (inconclusive)")
            killed = (f"backend {'crashed' if cfg.get('crash') else 'frozen and killed'} at "
                      f"{events['killed']:.1f} s mid-writes, restarted at "
                      f"{events['restarted']:.1f} s")
            if cfg.get("crash"):
                blog = open(boot.blog, errors="replace").read()
                m = re.search(r"test crash with (\d+) requests in flight", blog)
                r = re.search(r"(\d+) buffers in flight before a restart: resubmitting", blog)
                if not m or not r:
                    raise CaseFailed("no requests were resubmitted after the crash: "
                                     f"{tail(boot.blog, 10)}")
                killed += f"; {m.group(1)} in flight at the crash, {r.group(1)} resubmitted"
        out = open(boot.serial, errors="replace").read()
        notes.append(check_guest(name, cfg, backend, out, writes, reads, boot.image, model,
                                    size))
        if cfg.get("reconnect"):
            notes.append(killed)
        if args.backend == "virtue":
            # SIGTERM: in-flight requests finished, the disk flushed, exit 0 (and, in the
            # sanitizer builds, no leak or error report on the way out).
            boot.bproc.terminate()
            try:
                brc = boot.bproc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise CaseFailed("backend did not exit within 30 s of SIGTERM")
            if brc != 0:
                raise CaseFailed(f"backend exited {brc} after SIGTERM: {tail(boot.blog, 20)}")
            notes.append("backend exited 0 on SIGTERM")
    finally:
        boot.close()
    return "; ".join(notes)


def check_guest(name, cfg, backend, out, writes, reads, image_path, model, size):
    nq, packed, iommu, ro, cpus = cfg["nq"], cfg["packed"], cfg["iommu"], cfg["ro"], cfg["cpus"]
    iommu_machine = iommu or cfg.get("bypass", False)
    if "VT-BEGIN blk" not in out:
        raise CaseFailed("the guest never started the workload")
    m = re.search(r"VT-END rc=(\d+)", out)
    if not m:
        raise CaseFailed("no VT-END marker (guest crashed or hung)")
    devs = re.findall(r"VT-DEV (\S+) virtio=(\S+) features=([01]+) queues=(\d+) size=(\d+) "
                      r"ro=(\d) lbs=(\d+) iommu_group=(\S+)", out)
    if len(devs) != 1:
        raise CaseFailed(f"expected one VT-DEV line, got {len(devs)}")
    dname, vdev, feat, queues, dsize, dro, lbs, group = devs[0]
    queues, dsize = int(queues), int(dsize)
    info = f"features {feat} = {bits_str(feat)}; queues={queues}"
    print(f"# {name}: {dname} {vdev} {info} size={dsize} ro={dro} iommu_group={group}"
          + (" (vIOMMU, device bypasses it)" if cfg.get("bypass") else ""), flush=True)

    def bit(i):
        return i < len(feat) and feat[i] == "1"

    problems = []

    def expect(i, want, why):
        if bit(i) != want:
            problems.append(f"bit {i} {BITS.get(i, '')} {'missing' if want else 'negotiated'}"
                            f" ({why})")

    expect(F_VERSION_1, True, "modern device")
    expect(F_ACCESS_PLATFORM, iommu, "iommu_platform" + ("=on" if iommu else " off"))
    expect(F_RING_PACKED, packed and backend["packed"],
           "packed=on" if packed and backend["packed"] else
           ("backend does not offer it" if packed else "packed off"))
    expect(F_MQ, nq > 1, f"num-queues={nq}")
    expect(F_RO, ro, "read-only" if ro else "writable")
    if backend["event_idx"]:
        expect(F_EVENT_IDX, True, "backend offers it")
    want_q = min(nq, cpus)
    if queues != want_q:
        problems.append(f"{queues} queues, expected {want_q} (num-queues={nq}, {cpus} vCPUs)")
    if dsize != size:
        problems.append(f"device size {dsize}, expected {size}")
    if int(dro) != int(ro):
        problems.append(f"/sys/block/{dname}/ro is {dro}")
    if iommu_machine and group == "none":
        problems.append("the vIOMMU does not translate the device (no iommu_group)")
    if not iommu_machine and group != "none":
        problems.append(f"iommu_group {group} without a vIOMMU")
    problems += [f"guest: {e}" for e in re.findall(r"VT-ERR (.*)", out)]
    m = re.search(r"VT-RESULT writes=(\d+) reads=(\d+) errors=(\d+)", out)
    if not m:
        problems.append("no VT-RESULT line")
    else:
        w, r, e = map(int, m.groups())
        if w != (0 if ro else len(writes)) or r != len(reads) or e != 0:
            problems.append(f"guest did writes={w} reads={r} errors={e}, expected "
                            f"writes={0 if ro else len(writes)} reads={len(reads)} errors=0")
    refused = re.findall(r"VT-RO-WRITE \S+ (\S+) refused: (.*)", out)
    if ro:
        if len(refused) != len(writes):
            problems.append(f"{len(refused)} of {len(writes)} writes were refused")
        for kind, msg in refused:
            if "Operation not permitted" not in msg and "I/O error" not in msg:
                problems.append(f"{kind} write refused with an unexpected error: {msg}")
    rc = int(re.search(r"VT-END rc=(\d+)", out).group(1))
    if rc != 0:
        problems.append(f"workload exit status {rc}")

    with open(image_path, "rb") as f:
        got = f.read()
    if got != model:
        n = min(len(got), len(model))
        first = next((i for i in range(n) if got[i] != model[i]), n)
        problems.append(f"backing file differs from the expected image at byte {first}"
                        + (" (read-only: it was modified)" if ro else ""))
    if problems:
        raise CaseFailed("; ".join(problems))
    if ro:
        msgs = sorted(set(m for _, m in refused))
        return f"{info}; every write refused ({' | '.join(msgs)}), image unchanged"
    what = f"{info}; {len(writes)} writes, {len(reads)} reads verified, image matches"
    if cfg.get("bypass"):
        what += f" (vIOMMU machine, device outside it, iommu_group={group})"
    elif iommu:
        what += f" (iommu_group={group})"
    return what


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kit", required=True, help="guest kit directory (guest-kit.sh OUTDIR)")
    ap.add_argument("--kit-script", help="build the kit first with this guest-kit.sh "
                    "(a no-op when it is up to date)")
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="qsd")
    ap.add_argument("--backend-bin", help="the virtue-blk binary (--backend virtue)")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--seed", type=int, help="plan and data seed (default: random, printed)")
    ap.add_argument("--timeout", type=float, default=50.0, help="seconds per guest boot")
    ap.add_argument("--image-mb", type=int, default=16)
    ap.add_argument("--append", help="more guest kernel command line (e.g. loglevel=7)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("cases", nargs="+", metavar="CASE", help=f"{', '.join(CASES)} or all")
    args = ap.parse_args()
    if args.backend == "virtue" and not args.backend_bin:
        ap.error("--backend virtue needs --backend-bin PATH")
    cases = list(CASES) if args.cases == ["all"] else args.cases
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c} (known: {', '.join(CASES)})")

    def log(msg):
        if args.verbose:
            print(f"# {msg}", flush=True)

    if args.kit_script:
        r = subprocess.run(["sh", args.kit_script, args.kit], timeout=900)
        if r.returncode != 0:
            for c in cases:
                print(f"FAIL {c}: the guest kit could not be built")
            return 1
    for f in ("vmlinuz", "initramfs.gz"):
        if not os.path.exists(os.path.join(args.kit, f)):
            print(f"no {f} in {args.kit}: run tests/interop/guest-kit.sh {args.kit}",
                  file=sys.stderr)
            return 1

    failed = 0
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    for c in cases:
        tmp = tempfile.mkdtemp(prefix=f"vt-interop-{c}-", dir=base)
        t0 = time.monotonic()
        try:
            note = run_case(args, c, CASES[c], tmp, log)
            print(f"PASS {c} ({time.monotonic() - t0:.1f} s): {note}", flush=True)
        except (CaseFailed, OSError, subprocess.SubprocessError) as e:
            failed += 1
            print(f"FAIL {c}: {e} ({time.monotonic() - t0:.1f} s)", flush=True)
            for what, fn, n in (("guest serial", "serial.log", 200), ("QEMU", "qemu.log", 30),
                                ("backend", "backend.log", 30)):
                p = os.path.join(tmp, fn)
                if os.path.exists(p):
                    print(f"--- {what} ({p}), last {n} lines:")
                    print(tail(p, n))
            print(f"--- end of logs for {c}", flush=True)
        finally:
            if args.keep:
                print(f"# {c}: kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
