#!/usr/bin/env python3
"""Adds up the test results of several Meson build directories into one closing line.

A unit-test binary prints PASS/FAIL per case; every case counts. Any other test (a lint script, a
fuzzer, a replayer) counts as one case with Meson's verdict. A binary that crashed after some
PASS lines counts one extra failure, so a crash can never read as success.
"""
import json
import os
import re
import sys

PASS = re.compile(r"^PASS (\S+)", re.M)
FAIL = re.compile(r"^FAIL (\S+)", re.M)


def summarize(build_dir):
    path = os.path.join(build_dir, "meson-logs", "testlog.json")
    passed = failed = 0
    failures = []
    if not os.path.exists(path):
        return 0, 1, [f"{build_dir}: no test log (build or setup failed)"]
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            t = json.loads(line)
            out = t.get("stdout") or ""
            ok = t.get("result") in ("OK", "EXPECTEDFAIL", "SKIP")
            p = PASS.findall(out)
            fl = FAIL.findall(out)
            if p or fl:
                passed += len(p)
                failed += len(fl)
                failures += [f"{build_dir}: {t['name']}: {n}" for n in fl]
                if not ok and not fl:
                    failed += 1
                    failures.append(f"{build_dir}: {t['name']}: {t.get('result')}")
            elif ok:
                passed += 1
            else:
                failed += 1
                failures.append(f"{build_dir}: {t['name']}: {t.get('result')}")
    return passed, failed, failures


def main():
    total_p = total_f = 0
    all_failures = []
    for d in sys.argv[1:]:
        p, f, fl = summarize(d)
        print(f"{d}: {p} passed, {f} failed")
        total_p += p
        total_f += f
        all_failures += fl
    for x in all_failures:
        print(f"FAILED {x}")
    print(f"{total_p} passed, {total_f} failed")
    return 1 if total_f else 0


if __name__ == "__main__":
    sys.exit(main())
