#!/usr/bin/env python3
"""The platform rule (README, include/virtue/platform.h), checked on the source.

Only vt_uses_platform_dma() and vt_barrier_kind() in include/virtue/platform.h may use
VIRTIO_F_ACCESS_PLATFORM and VIRTIO_F_ORDER_PLATFORM in code. Elsewhere the bits may be named in
comments, defined and named in the spec header and the name/dependency tables, and offered by a
device or driver on a line whose comment says "offer". Anything else fails.

usage: platform-rule.py SOURCE_ROOT
"""
import os
import re
import sys

BITS = re.compile(r"\bVIRTIO_F_(ACCESS|ORDER|IOMMU)_PLATFORM\b")
ALLOWED = {
    "include/virtue/platform.h",
    "include/virtue/spec/virtio_config.h",
    "src/spec/features.c",
    "src/core/feature_rules.c",
}
TOKEN = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', re.S)


def split_code_and_comments(text):
    """Returns per line (code, comment): comments and string literals blanked out of code."""
    code = []
    comment = []
    pos = 0
    for m in TOKEN.finditer(text):
        code.append(text[pos:m.start()])
        comment.append(re.sub(r"[^\n]", " ", text[pos:m.start()]))
        tok = m.group(0)
        is_comment = tok.startswith("/")
        blank = re.sub(r"[^\n]", " ", tok)
        code.append(blank)
        comment.append(tok if is_comment else blank)
        pos = m.end()
    code.append(text[pos:])
    comment.append(re.sub(r"[^\n]", " ", text[pos:]))
    return "".join(code).split("\n"), "".join(comment).split("\n")


def self_test():
    """The check must be able to fail: plant a violation in a scratch tree and expect it."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "src"))
        with open(os.path.join(d, "src", "guess.c"), "w") as f:
            f.write("/* VIRTIO_F_ACCESS_PLATFORM in a comment is fine */\n"
                    "int x(unsigned long long f) { return f & (1ULL << VIRTIO_F_ACCESS_PLATFORM); }\n")
        return check(d, quiet=True) == 1


def main():
    if not self_test():
        print("platform rule self-test failed: a planted violation went unnoticed")
        return 1
    return check(sys.argv[1] if len(sys.argv) > 1 else ".")


def check(root, quiet=False):
    bad = []
    users = []
    for top in ("include", "src", "tools"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if not f.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)
                text = open(path, encoding="utf-8").read()
                code, comments = split_code_and_comments(text)
                if any("vt_uses_platform_dma" in c for c in code):
                    users.append(rel)
                if rel in ALLOWED:
                    continue
                for n, (c, k) in enumerate(zip(code, comments), 1):
                    if BITS.search(c) and "offer" not in k:
                        bad.append(f"{rel}:{n}: {text.splitlines()[n - 1].strip()}")
    if bad and quiet:
        return 1
    if bad:
        print("platform rule violated: only include/virtue/platform.h may use these bits in code")
        print("(a device or driver offering them marks the line with an 'offer' comment):")
        print("\n".join(bad))
        return 1
    print("platform rule holds; vt_uses_platform_dma is asked by:")
    print("\n".join("  " + u for u in sorted(users)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
