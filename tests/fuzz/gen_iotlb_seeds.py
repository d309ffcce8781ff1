#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Writes the seed corpus of fuzz_iotlb.c: small op lists that reach splits, both full policies,
# the top of the address space and the error paths, so the fuzzer starts from there.
# usage: gen_iotlb_seeds.py [OUT_DIR]   (default: corpus/iotlb beside this script)
import os
import random
import struct
import sys

WINDOW = 1024  # as in fuzz_iotlb.c
PAGE = 4096
PAGES = 4  # the window of the page table runs, in pages (PAGE_TABLE_WINDOW)
RO, WO, RW = 1, 2, 3


def header(capacity, evict=False, top=False, pages=False):
    return bytes([(capacity - 8) % 57,
                  (1 if evict else 0) | (2 if top else 0) | (4 if pages else 0)])


def op(kind, a, b, x=0, y=0):
    return struct.pack('<BHHBB', kind, a & 0xffff, b & 0xffff, x, y)


def update(off, size, perm=RW, host=None):
    # host None: host offset equals the IOVA offset, so neighbours merge; else the k of k*61 % n
    y = 1 if host is None else (host << 1) & 0xff
    x = perm - 1 if perm in (RO, WO, RW) else 0xf8 | perm
    return op(0, off, size, x, y)


def update_page(page, host_page, perm=RW):
    # a whole page of the window onto whole host page host_page (page table runs only)
    return op(0, page, 0, perm - 1, 2 | host_page << 2)


def invalidate(off, size):
    # offsets relative to the window base; the target subtracts 64 to reach below it
    return op(6, off + 64, size)


def invalidate_all():
    return op(10, 0, 0)


def translate(off, length, access=RO, iov_max=8):
    x = access - 1 if access in (RO, WO, RW) else 0xf8 | access
    return op(11, off + 64, length, x, iov_max)


def seeds():
    w = WINDOW
    s = {}
    s['map-translate'] = header(16) + update(0x100, 0x100) + translate(0x100, 0x100) + \
        translate(0x180, 0x100) + translate(0xff, 2)
    s['split-update'] = header(16) + update(0, 512) + update(128, 128, RO, host=5) + \
        translate(0, 512) + translate(100, 100, RW)
    s['split-invalidate'] = header(16) + update(0, 512, WO) + invalidate(200, 1) + \
        translate(0, 512, WO) + translate(201, 300, WO)
    s['replace-several'] = header(16) + b''.join(update(i * 128, 64, RO, host=i)
                                                 for i in range(6)) + \
        update(32, 600, RW, host=40) + translate(0, 768, RO)
    s['merge-adjacent'] = header(16) + update(0, 100) + update(100, 100, RO) + \
        update(200, 100) + translate(50, 200, RO) + translate(50, 200, RO, iov_max=1)
    s['denied'] = header(16) + update(0, 256, RO) + update(256, 256, WO) + \
        translate(128, 256, RO) + translate(128, 256, WO) + translate(0, 512, RW)
    s['enobufs'] = header(16) + b''.join(update(i * 64, 64, RW, host=100 - i)
                                         for i in range(10)) + \
        translate(0, 640, RO, 2) + translate(0, 640, RO, 0) + translate(0, 640, RO, 8)
    # Eight entries of 80 bytes every 120: a split of one needs two slots more, a hole one.
    eight = b''.join(update(i * 120, 80) for i in range(8))
    s['refuse-full'] = header(8) + b''.join(update(i * 100, 50) for i in range(10)) + \
        translate(0, w)
    s['refuse-full-split'] = header(8) + eight + update(130, 10, RO, host=3) + \
        invalidate(500, 10) + translate(480, 80)
    s['evict-full'] = header(8, evict=True) + b''.join(update(i * 50, 40) for i in range(20)) + \
        translate(0, w)
    s['evict-split'] = header(8, evict=True) + eight + update(130, 10, RO, host=3) + \
        update(370, 10, WO, host=9) + translate(120, 80)
    s['evict-invalidate-split'] = header(8, evict=True) + eight + invalidate(500, 10) + \
        translate(480, 80)
    s['evict-lone-split'] = header(8, evict=True) + update(0, w) + \
        b''.join(update(50 + i * 160, 10, RO, host=i) for i in range(6)) + translate(0, w)
    # Window at 2^64 - WINDOW: offset w - 1 is the last byte of the address space.
    s['top-map'] = header(16, top=True) + update(w - 24, 24) + translate(w - 1, 1) + \
        translate(w - 24, 24, RW) + translate(w - 24, 25) + translate(w - 6, 200)
    s['top-overflow-update'] = header(16, top=True) + update(w - 24, 100) + \
        update(0, w) + translate(0, w)
    s['top-split'] = header(16, top=True) + update(w // 2, w // 2, RW, host=17) + \
        update(w - 2, 1, RO, host=2) + invalidate(800, 50) + translate(w // 2, w // 2) + \
        invalidate(w - 1, 100)
    # Window at 0: just below it is the top of the address space, so these end at or wrap 2^64.
    s['low-wrap'] = header(16) + update(0, 64) + translate(-64, 100) + \
        translate(-10, 10) + invalidate(-64, 64) + invalidate(-64, 70) + translate(0, 64)
    s['invalidate-all'] = header(16) + update(0, 100) + update(500, 100) + invalidate_all() + \
        translate(0, 100) + update(0, 100) + translate(0, 100)
    s['bad-arguments'] = header(16) + update(10, 0) + update(10, 10, perm=0) + \
        update(10, 10, perm=4) + translate(10, 10, access=0) + translate(10, 10, access=4) + \
        translate(10, 0) + invalidate(10, 0)
    # With the page table: whole pages there, the rest in the sorted array, and ops across both.
    pw = PAGES * PAGE
    s['pages-map-translate'] = header(8, pages=True) + update_page(0, 3) + update_page(1, 4) + \
        translate(PAGE - 8, 16) + translate(0, 2 * PAGE, RW) + translate(2 * PAGE - 1, 2)
    s['pages-partial-invalidate'] = header(8, pages=True) + update_page(1, 2) + \
        invalidate(PAGE + 100, 50) + translate(PAGE, PAGE) + translate(PAGE + 150, 100)
    s['pages-overlapping-update'] = header(8, pages=True) + update_page(0, 1) + \
        update_page(1, 2, RO) + update(PAGE - 10, 20, WO, host=7) + translate(0, 2 * PAGE) + \
        update_page(1, 2, RO) + invalidate(0, 2 * PAGE) + update_page(1, 5) + translate(0, pw)
    s['pages-mixed-in-a-page'] = header(8, pages=True) + update(2 * PAGE + 64, 64) + \
        update_page(2, 0) + translate(2 * PAGE, PAGE) + invalidate(2 * PAGE + 64, 64) + \
        update_page(2, 0) + translate(2 * PAGE, PAGE)
    s['pages-top'] = header(8, top=True, pages=True) + update_page(PAGES - 1, 1) + \
        translate(pw - 1, 1) + translate(pw - 16, 100) + invalidate_all() + translate(pw - 1, 1)
    rng = random.Random(0x5eed)
    for i in range(4):
        data = header(8 + rng.randrange(57), evict=i % 2 == 1, top=i >= 2)
        data += bytes(rng.randrange(256) for _ in range(7 * 150))
        s['random-%d' % i] = data
    pages_rng = random.Random(0x9a9e5)
    for i in range(4):
        data = header(8, top=i >= 2, pages=True)
        data += bytes(pages_rng.randrange(256) for _ in range(7 * 150))
        s['pages-random-%d' % i] = data
    return s


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, 'corpus', 'iotlb')
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(seeds().items()):
        with open(os.path.join(out, name), 'wb') as f:
            f.write(data)
    print('wrote %d seeds to %s' % (len(seeds()), out))


if __name__ == '__main__':
    main()
