#!/usr/bin/env python3
"""The virtue CLI (tools/virtue) against two vhost-user-blk back-ends: qemu-storage-daemon's
export (no ACCESS_PLATFORM) and virtue-blk (file-backed, ACCESS_PLATFORM offered).

Each back-end runs on a unix socket in a temp dir, on an image file this script creates; every
byte virtue writes is the documented pattern of `virtue blk --help` (a function of the seed and
the byte offset, reimplemented here as pattern()), so after a write pass the image on the host
must equal pattern(seed) exactly. Cases (one PASS/FAIL line each; exit 1 on any failure):

  qsd            write --verify (every block read back), image == pattern, randrw --verify on 2
                 queues, read --verify on 2 queues; then one byte of the image corrupted on the
                 host: read --verify exits 1 naming that byte
  unreachable    a socket nobody listens on: exit 1, "cannot reach", within the timeout
  virtue-info    `virtue info` names ACCESS_PLATFORM among the offered features
  virtue-<mode>  for direct, strict, lazy, premapped, bounce: write --verify with a seed of its
                 own, ACCESS_PLATFORM negotiated exactly when the mode is not direct, the DMA
                 mode reported, image == pattern, read --verify on 2 queues
  restricted-qsd     --restricted against qemu-storage-daemon: exit 1, a message naming
                     ACCESS_PLATFORM, no I/O done
  restricted-virtue  --restricted against virtue-blk: ACCESS_PLATFORM negotiated, data verified
  reconnect-virtue   `virtue blk --reconnect` writing the pattern over and over on 2 queues while
                     virtue-blk kills itself with requests in flight (VIRTUE_BLK_TEST_CRASH_AT);
                     a new virtue-blk takes over from the inflight buffer: every request
                     completes, one reconnect, every block read back, image == pattern
  reconnect-qsd      the same with qemu-storage-daemon SIGKILLed mid-run and restarted; it keeps
                     no inflight records, so the front-end's rebased rings alone must do it

usage: cli_blk.py --virtue BUILD/tools/virtue --virtue-blk BUILD/tools/virtue-blk [-v] [--keep]
Exit 77 (meson: skipped) when qemu-storage-daemon is not installed. Only processes this script
started are ever signalled.
"""
import argparse
import array
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

M64 = (1 << 64) - 1
IMAGE_SIZE = 4 << 20
STEP_TIMEOUT = 30
SANITIZER_MARK = "Sanitizer"  # seconds for any one virtue run
MODES = [("direct", "direct"), ("strict", "iommu-strict"), ("lazy", "iommu-lazy"),
         ("premapped", "iommu-premapped"), ("bounce", "bounce")]


def pattern(seed, size):
    """The bytes `virtue blk --verify --seed SEED` writes at [0, size): see its --help."""
    base = (seed * 0x9E3779B97F4A7C15) & M64
    words = array.array("Q", bytes(size))
    for i in range(size // 8):
        x = (base + 8 * i) & M64
        x = ((x ^ (x >> 31)) * 0xBF58476D1CE4E5B9) & M64
        words[i] = x ^ (x >> 29)
    if sys.byteorder != "little":
        words.byteswap()
    return words.tobytes()


class Failed(Exception):
    pass


class Rig:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.procs = []

    def log(self, msg):
        if self.args.verbose:
            print("  " + msg, flush=True)

    def start(self, name, cmd, sock, env=None):
        self.log("$ " + " ".join(cmd))
        out = open(os.path.join(self.tmp, name + ".log"), "wb")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, **env) if env else None)
        out.close()
        self.procs.append(p)
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if p.poll() is not None:
                raise Failed(f"{name} exited with {p.returncode}: {self.backend_log(name)}")
            if time.monotonic() > deadline:
                raise Failed(f"{name} did not create {sock} within 10 s")
            time.sleep(0.02)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)

    def backend_log(self, name):
        try:
            with open(os.path.join(self.tmp, name + ".log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def image(self, name):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.truncate(IMAGE_SIZE)
        return path

    def qsd(self, image, sock, name="qsd"):
        return self.start(name, [
            "qemu-storage-daemon",
            "--blockdev", f"driver=file,node-name=file0,filename={image}",
            "--export", "type=vhost-user-blk,id=exp0,node-name=file0,addr.type=unix,"
            f"addr.path={sock},num-queues=2,writable=on"], sock)

    def virtue_blk(self, image, sock, name="virtue-blk", env=None):
        return self.start(name, [
            self.args.virtue_blk, "--socket-path", sock, "--blk-file", image,
            "--num-queues", "2", "--iothreads", "2"], sock, env)

    def virtue(self, *argv, expect=0):
        """Runs the CLI; returns (stdout, stderr). Fails unless it exits with @expect."""
        cmd = [self.args.virtue] + list(argv)
        self.log("$ " + " ".join(cmd))
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=STEP_TIMEOUT,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Failed(f"`{' '.join(cmd)}` still running after {STEP_TIMEOUT} s")
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        self.log(f"  exit {r.returncode} in {time.monotonic() - t0:.2f} s")
        if SANITIZER_MARK in err or "runtime error:" in err:
            raise Failed(f"`{' '.join(cmd)}`: sanitizer report:\n{err}")
        if r.returncode != expect:
            raise Failed(f"`{' '.join(cmd)}` exited {r.returncode}, expected {expect}\n"
                         f"stdout:\n{out}\nstderr:\n{err}")
        return out, err

    def blk_json(self, sock, *argv, expect=0):
        out, err = self.virtue("blk", "--socket", sock, "--json", *argv, expect=expect)
        try:
            return json.loads(out), err
        except ValueError:
            raise Failed(f"not one JSON object on stdout: {out!r}\nstderr:\n{err}")


def check(cond, what):
    if not cond:
        raise Failed(what)


def check_image(path, seed, what):
    with open(path, "rb") as f:
        data = f.read()
    want = pattern(seed, IMAGE_SIZE)
    if data != want:
        first = next(i for i in range(len(want)) if i >= len(data) or data[i] != want[i])
        raise Failed(f"{what}: the image differs from the pattern (seed {seed}) first at byte "
                     f"{first}")


def write_and_verify(rig, sock, seed, dma=None):
    """A write pass with --verify, every block read back; returns its JSON summary."""
    extra = ["--dma", dma] if dma else []
    s, _ = rig.blk_json(sock, "--rw", "write", "--bs", "64k", "--iodepth", "8", "--verify",
                        "--seed", str(seed), *extra)
    blocks = IMAGE_SIZE // 65536
    check(s["write"]["ops"] == blocks, f"write pass: {s['write']['ops']} writes, want {blocks}")
    check(s["io_errors"] == 0 and s["error"] is None, f"write pass failed: {s}")
    check(s["verify"]["read_back"] == blocks and s["verify"]["mismatches"] == 0,
          f"write pass read-back: {s['verify']}")
    check(s["write"]["lat_us"]["p50"] > 0 and s["write"]["iops"] > 0, f"no latency: {s}")
    return s


def read_verify(rig, sock, seed, dma=None):
    extra = ["--dma", dma] if dma else []
    s, _ = rig.blk_json(sock, "--rw", "read", "--bs", "4k", "--iodepth", "16", "--queues", "2",
                        "--verify", "--seed", str(seed), *extra)
    blocks = IMAGE_SIZE // 4096
    check(s["read"]["ops"] == blocks and s["verify"]["checked"] == blocks,
          f"read pass: {s['read']['ops']} reads, {s['verify']['checked']} checked, want {blocks}")
    check(s["verify"]["mismatches"] == 0 and s["io_errors"] == 0, f"read pass: {s}")
    return s


# ---------------------------------------------------------------------------------------------

def case_qsd(rig):
    image, sock = rig.image("qsd.img"), os.path.join(rig.tmp, "qsd.sock")
    p = rig.qsd(image, sock)
    seed = 11
    s = write_and_verify(rig, sock, seed)
    check("ACCESS_PLATFORM" not in s["features"].split() and s["dma"] == "direct",
          f"qemu-storage-daemon negotiated {s['features']} / {s['dma']}")
    check_image(image, seed, "after the write pass")
    s, _ = rig.blk_json(sock, "--rw", "randrw", "--bs", "4k", "--iodepth", "16", "--queues", "2",
                        "--count", "3000", "--verify", "--seed", str(seed))
    check(s["all"]["ops"] == 3000 and s["read"]["ops"] > 0 and s["write"]["ops"] > 0,
          f"randrw: {s['read']['ops']} reads + {s['write']['ops']} writes, want 3000")
    # randrw checks the reads of blocks it wrote earlier in the run, then reads back them all.
    check(0 < s["verify"]["checked"] <= s["read"]["ops"] and s["verify"]["read_back"] > 0
          and s["verify"]["mismatches"] == 0, f"randrw verify: {s['verify']}")
    read_verify(rig, sock, seed)
    check_image(image, seed, "after randrw")

    # Corruption on the host must be caught, at the byte it happened.
    bad = 3 * 65536 + 4097
    with open(image, "r+b") as f:
        f.seek(bad)
        old = f.read(1)
        f.seek(bad)
        f.write(bytes([old[0] ^ 0x5A]))
    s, err = rig.blk_json(sock, "--rw", "read", "--bs", "64k", "--verify", "--seed", str(seed),
                          expect=1)
    check(s["verify"]["mismatches"] == 1, f"corruption: {s['verify']}")
    check(f"mismatch at byte {bad}" in err, f"corruption not located: {err}")
    # A wrong seed fails every block.
    s, _ = rig.blk_json(sock, "--rw", "read", "--bs", "64k", "--verify", "--seed", "12",
                        "--quiet", expect=1)
    check(s["verify"]["mismatches"] == IMAGE_SIZE // 65536, f"wrong seed: {s['verify']}")
    rig.stop(p)
    return f"write/read-back/randrw/read verified on 2 queues, image == pattern, corruption " \
           f"caught at byte {bad}"


def case_unreachable(rig):
    sock = os.path.join(rig.tmp, "nobody.sock")
    t0 = time.monotonic()
    _, err = rig.virtue("blk", "--socket", sock, "--connect-timeout", "500", expect=1)
    took = time.monotonic() - t0
    check("cannot reach" in err and sock in err, f"message: {err}")
    check(took < 5, f"took {took:.1f} s")
    _, err = rig.virtue("info", "--socket", sock, "--connect-timeout", "200", expect=1)
    check("cannot reach" in err, f"info message: {err}")
    return f"exit 1 in {took:.1f} s: {err.strip().splitlines()[-1]}"


def virtue_backend(rig):
    if not hasattr(rig, "vblk"):
        rig.vimage = rig.image("virtue.img")
        rig.vsock = os.path.join(rig.tmp, "virtue.sock")
        rig.vblk = rig.virtue_blk(rig.vimage, rig.vsock)
    return rig.vimage, rig.vsock


def case_virtue_info(rig):
    _, sock = virtue_backend(rig)
    out, _ = rig.virtue("info", "--socket", sock)
    offered = [ln for ln in out.splitlines() if ln.startswith("features offered:")]
    check(offered and "ACCESS_PLATFORM" in offered[0].split(), f"info:\n{out}")
    check("capacity: %d bytes" % IMAGE_SIZE in out, f"capacity not shown:\n{out}")
    check("queues: 2" in out, f"queues not shown:\n{out}")
    neg = [ln for ln in out.splitlines() if ln.startswith("negotiated:")]
    check(neg and "ACCESS_PLATFORM" not in neg[0].split(), f"direct negotiated bit 33:\n{out}")
    out, _ = rig.virtue("info", "--socket", sock, "--dma", "strict", "--quiet")
    check("negotiated:" not in out, f"--quiet still printed the negotiated features:\n{out}")
    return offered[0]


def case_virtue_mode(rig, mode, name, seed):
    image, sock = virtue_backend(rig)
    s = write_and_verify(rig, sock, seed, mode)
    platform = "ACCESS_PLATFORM" in s["features"].split()
    check(platform == (mode != "direct"), f"--dma {mode}: negotiated {s['features']}")
    check(s["dma"] == name, f"--dma {mode}: ran in {s['dma']}")
    check_image(image, seed, f"--dma {mode}")
    r = read_verify(rig, sock, seed, mode)
    return f"{s['write']['iops']:.0f} write IOPS (64k QD8), {r['read']['iops']:.0f} read IOPS " \
           f"(4k QD16 x2), p99 {r['read']['lat_us']['p99']:.0f} us, image == pattern"


def case_restricted_qsd(rig):
    image, sock = rig.image("qsd-r.img"), os.path.join(rig.tmp, "qsd-r.sock")
    p = rig.qsd(image, sock)
    t0 = time.monotonic()
    out, err = rig.virtue("blk", "--socket", sock, "--restricted", "--rw", "write", expect=1)
    check("ACCESS_PLATFORM" in err and "restricted" in err, f"message:\n{err}")
    check("Traceback" not in err and "AddressSanitizer" not in err, f"stderr:\n{err}")
    check(out.strip() == "", f"a refused run printed a result:\n{out}")
    with open(image, "rb") as f:
        check(not any(f.read()), "the image changed")
    rig.stop(p)
    line = [ln for ln in err.splitlines() if "restricted-memory policy:" in ln
            and "does not offer" in ln]
    return f"exit 1 in {time.monotonic() - t0:.1f} s: " + (line[0] if line else err.strip())


def case_restricted_virtue(rig):
    image, sock = virtue_backend(rig)
    seed = 99
    s, _ = rig.blk_json(sock, "--restricted", "--rw", "write", "--bs", "64k", "--iodepth", "4",
                        "--verify", "--seed", str(seed))
    check(s["restricted"] and "ACCESS_PLATFORM" in s["features"].split(), f"{s}")
    check(s["dma"] == "iommu-strict" and s["verify"]["mismatches"] == 0, f"{s}")
    check_image(image, seed, "--restricted")
    return "ACCESS_PLATFORM negotiated, iommu-strict, data verified"


RECONNECT_TIMEOUT = 60
LOGS = ("qsd", "virtue-blk", "virtue-blk-rc1", "virtue-blk-rc2", "qsd-rc1", "qsd-rc2")


def reconnect_run(rig, name, start, crash, count):
    """`virtue blk --reconnect` writing the pattern over the image @count times a block, while
    crash(backend) takes the first back-end down; a second one is started on the same socket and
    image. Returns the JSON summary and the CLI's stderr, after checking the data."""
    image, sock = rig.image(name + ".img"), os.path.join(rig.tmp, name + ".sock")
    seed = 41
    first = start(image, sock, 1)
    cmd = [rig.args.virtue, "blk", "--socket", sock, "--json", "--rw", "write", "--bs", "4k",
           "--iodepth", "16", "--queues", "2", "--count", str(count), "--verify", "--seed",
           str(seed), "--reconnect", "--connect-timeout", "20000"]
    rig.log("$ " + " ".join(cmd))
    cli = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL)
    try:
        crash(first, cli)
        if cli.poll() is not None:
            raise Failed(f"the run ended before the back-end went down: {cli.communicate()}")
        # A killed back-end leaves its socket file: the new one's must be awaited.
        if os.path.exists(sock):
            os.unlink(sock)
        second = start(image, sock, 2)
        out, err = cli.communicate(timeout=RECONNECT_TIMEOUT)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    check(cli.returncode == 0, f"exit {cli.returncode}\nstdout:\n{out}\nstderr:\n{err}")
    check(SANITIZER_MARK not in err and "runtime error:" not in err, f"sanitizer:\n{err}")
    try:
        s = json.loads(out)
    except ValueError:
        raise Failed(f"not one JSON object on stdout: {out!r}\nstderr:\n{err}")
    blocks = IMAGE_SIZE // 4096
    check(s["reconnects"] == 1, f"{s['reconnects']} reconnects, want 1\n{err}")
    check(s["write"]["ops"] == count and s["io_errors"] == 0 and s["error"] is None,
          f"{s['write']['ops']} writes of {count}: {s}")
    check(s["verify"]["read_back"] == blocks and s["verify"]["mismatches"] == 0,
          f"read-back: {s['verify']}")
    check_image(image, seed, "after the reconnect")
    rig.stop(second)
    return s, err


def case_reconnect_virtue(rig):
    def start(image, sock, n):
        # The first one dies, like a crash, once 3000 requests completed and some are in flight.
        env = {"VIRTUE_BLK_TEST_CRASH_AT": "3000"} if n == 1 else None
        return rig.virtue_blk(image, sock, f"virtue-blk-rc{n}", env)

    def crash(first, cli):
        try:
            first.wait(RECONNECT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Failed("virtue-blk did not crash")
        rig.procs.remove(first)

    s, _ = reconnect_run(rig, "rc-virtue", start, crash, 20000)
    log = rig.backend_log("virtue-blk-rc1")
    check("test crash with" in log, f"virtue-blk log: {log}")
    inflight = log.split("test crash with ")[1].split()[0]
    return f"crashed with {inflight} requests in flight; 20000 writes, 1 reconnect, " \
           f"{s['verify']['read_back']} blocks read back, image == pattern"


def case_reconnect_qsd(rig):
    def start(image, sock, n):
        return rig.qsd(image, sock, f"qsd-rc{n}")

    def crash(first, cli):
        time.sleep(0.5)
        first.kill()
        first.wait()
        rig.procs.remove(first)

    s, _ = reconnect_run(rig, "rc-qsd", start, crash, 150000)
    return f"SIGKILLed mid-run; 150000 writes, 1 reconnect, {s['verify']['read_back']} blocks " \
           f"read back, image == pattern"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--virtue", required=True)
    ap.add_argument("--virtue-blk", required=True)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("cases", nargs="*", help="run only these cases")
    args = ap.parse_args()
    if not shutil.which("qemu-storage-daemon"):
        print("SKIP: qemu-storage-daemon not installed (Debian: qemu-system-common)")
        return 77

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="virtue-cli-blk-", dir=base)
    rig = Rig(args, tmp)
    cases = [("qsd", case_qsd), ("unreachable", case_unreachable),
             ("virtue-info", case_virtue_info)]
    for i, (mode, name) in enumerate(MODES):
        cases.append((f"virtue-{mode}",
                      lambda r, m=mode, n=name, s=21 + i: case_virtue_mode(r, m, n, s)))
    cases += [("restricted-qsd", case_restricted_qsd),
              ("restricted-virtue", case_restricted_virtue),
              ("reconnect-virtue", case_reconnect_virtue), ("reconnect-qsd", case_reconnect_qsd)]
    failed = 0
    t_all = time.monotonic()
    try:
        for name, fn in cases:
            if args.cases and name not in args.cases:
                continue
            t0 = time.monotonic()
            try:
                detail = fn(rig)
                print(f"PASS {name} ({time.monotonic() - t0:.1f} s): {detail}", flush=True)
            except Failed as e:
                failed += 1
                print(f"FAIL {name}: {e}", flush=True)
                for log in LOGS:
                    text = rig.backend_log(log)
                    if text:
                        print(f"--- {log}.log (tail)\n{text}", flush=True)
    finally:
        rig.stop_all()
        # A sanitized back-end reports on its way out.
        for log in LOGS:
            text = rig.backend_log(log)
            if SANITIZER_MARK in text or "runtime error:" in text:
                failed += 1
                print(f"FAIL {log}: sanitizer report:\n{text}", flush=True)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'FAIL' if failed else 'PASS'}: {failed} case(s) failed "
          f"({time.monotonic() - t_all:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
