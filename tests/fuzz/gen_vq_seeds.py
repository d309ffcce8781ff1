#!/usr/bin/env python3
"""Writes seed inputs for fuzz_vq_dev (tests/fuzz/corpus/vq_dev/): ring images a correct driver
would produce (split and packed, direct and indirect, mixed readable/writable chains) plus a few
classic violations, so the fuzzer starts from the shapes the unit tests exercise.

Input layout (see fuzz_vq_dev.c): mode byte, address-space byte, [IOTLB windows], memory image
with the descriptor area at 0x0, the driver area at 0x1000, the device area at 0x2000.
"""
import os
import struct
import sys

GPA = 0x100000
QUEUE = 16
NEXT, WRITE, INDIRECT = 1, 2, 4
AVAIL, USED = 1 << 7, 1 << 15
F_PACKED, F_INDIRECT, F_EVENT, F_INORDER = 1, 2, 4, 8
BURST = 0x40  # the harness takes buffers in bursts


def image():
    return bytearray(0x8000)


def split_desc(mem, i, addr, length, flags, nxt, base=0x0):
    struct.pack_into("<QIHH", mem, base + 16 * i, addr, length, flags, nxt)


def split_avail(mem, heads):
    struct.pack_into("<HH", mem, 0x1000, 0, len(heads))
    for k, h in enumerate(heads):
        struct.pack_into("<H", mem, 0x1004 + 2 * k, h)


def packed_desc(mem, slot, addr, length, ident, flags):
    struct.pack_into("<QIHH", mem, 16 * slot, addr, length, ident, flags)


def seeds():
    out = {}
    # split: one chain of 3 (2 readable, 1 writable), then a single-descriptor buffer.
    m = image()
    split_desc(m, 0, GPA + 0x4000, 16, NEXT, 1)
    split_desc(m, 1, GPA + 0x4100, 512, NEXT, 2)
    split_desc(m, 2, GPA + 0x4400, 1, WRITE, 0)
    split_desc(m, 3, GPA + 0x5000, 64, WRITE, 0)
    split_avail(m, [0, 3])
    out["split_two_chains"] = bytes([0, 0]) + m
    out["split_two_chains_event_idx"] = bytes([F_EVENT, 0]) + m
    out["split_two_chains_iotlb"] = bytes([0, 1 | 1 << 1, 0x10, 0, 0x10, 0, 3]) + m
    # split: indirect table of 3 at 0x3000.
    m = image()
    split_desc(m, 0, GPA + 0x3000, 48, INDIRECT, 0)
    split_desc(m, 0, GPA + 0x4000, 16, NEXT, 1, base=0x3000)
    split_desc(m, 1, GPA + 0x4100, 100, NEXT, 2, base=0x3000)
    split_desc(m, 2, GPA + 0x4200, 4, WRITE, 0, base=0x3000)
    split_avail(m, [0])
    out["split_indirect"] = bytes([F_INDIRECT, 0]) + m
    # split: a loop, a readable after writable, an out-of-range head.
    m = image()
    split_desc(m, 0, GPA + 0x4000, 0, NEXT, 1)
    split_desc(m, 1, GPA + 0x4000, 0, NEXT, 0)
    split_avail(m, [0])
    out["split_loop"] = bytes([0, 0]) + m
    m = image()
    split_desc(m, 0, GPA + 0x4000, 8, WRITE | NEXT, 1)
    split_desc(m, 1, GPA + 0x4100, 8, 0, 0)
    split_avail(m, [0, 17])
    out["split_readable_after_writable"] = bytes([0, 0]) + m
    # split in order: four single-descriptor buffers in ring order.
    m = image()
    for i in range(4):
        split_desc(m, i, GPA + 0x4000 + 0x100 * i, 32, WRITE if i % 2 else 0, 0)
    split_avail(m, [0, 1, 2, 3])
    out["split_in_order"] = bytes([F_INORDER, 0]) + m
    # packed: wrap counter 1, AVAIL set, USED clear; a chain of two then a single.
    m = image()
    packed_desc(m, 0, GPA + 0x4000, 16, 0, AVAIL | NEXT)
    packed_desc(m, 1, GPA + 0x4100, 64, 0, AVAIL | WRITE)
    packed_desc(m, 2, GPA + 0x4200, 32, 1, AVAIL)
    out["packed_two_buffers"] = bytes([F_PACKED, 0]) + m
    out["packed_two_buffers_event_in_order"] = bytes([F_PACKED | F_EVENT | F_INORDER, 0]) + m
    m = image()
    packed_desc(m, 0, GPA + 0x3000, 32, 5, AVAIL | INDIRECT)
    struct.pack_into("<QIHH", m, 0x3000, GPA + 0x4000, 8, 0, 0)
    struct.pack_into("<QIHH", m, 0x3010, GPA + 0x4100, 8, 0, WRITE)
    out["packed_indirect"] = bytes([F_PACKED | F_INDIRECT, 0]) + m
    # Bursts of single-descriptor buffers, the ring's shorter path: a good run, a run over an
    # IOTLB window, a head made available twice, an address past the memory; then packed.
    singles = image()
    for i in range(8):
        split_desc(singles, i, GPA + 0x4000 + 0x100 * i, 32, WRITE if i % 3 == 2 else 0, 0)
    m = bytearray(singles)
    split_avail(m, list(range(8)))
    out["split_singles_burst"] = bytes([BURST, 0]) + m
    out["split_singles_burst_iotlb"] = bytes([BURST, 1 | 1 << 1, 0x10, 0, 0x04, 0, 1]) + m
    m = bytearray(singles)
    split_avail(m, [0, 1, 1, 2])
    out["split_singles_burst_head_twice"] = bytes([BURST, 0]) + m
    m = bytearray(singles)
    split_desc(m, 3, GPA + 0x10000 - 16, 32, 0, 0)
    split_avail(m, list(range(8)))
    out["split_singles_burst_past_memory"] = bytes([BURST, 0]) + m
    m = image()
    for i in range(8):
        packed_desc(m, i, GPA + 0x4000 + 0x100 * i, 32, i, AVAIL | (WRITE if i % 3 == 2 else 0))
    out["packed_singles_burst"] = bytes([F_PACKED | BURST, 0]) + m
    out["packed_singles_burst_in_order"] = bytes([F_PACKED | F_INORDER | BURST, 0]) + m
    # Bursts over whole-page windows (window byte 4, bit 2), which the IOTLB keeps in its page
    # table: a read-only page at 0x4000 and a write-only one at 0x5000, the page at 0x6000 a
    # hole; buffers inside a page, up to its end, across into the hole, and one writable buffer
    # in the read-only page.
    pages = bytes([BURST, 1 | 3 << 1, 0x10, 0, 0, 0, 1 | 4, 0x20, 0, 0, 0, 2 | 4,
                   0x30, 0, 0, 0, 0 | 4])
    good = [(0x4000 + 0x100, 64, 0), (0x5000 + 0x200, 64, WRITE), (0x4000 + 0xfc0, 64, 0)]
    for name, last in (("pages_into_a_hole", (0x5000 + 0xfe0, 64, WRITE)),
                       ("pages_one_byte_into_a_hole", (0x5000 + 0xfff, 2, WRITE)),
                       ("pages_write_to_read_only", (0x4000 + 0x800, 32, WRITE)),
                       ("pages_read_from_write_only", (0x5000 + 0x800, 32, 0))):
        bufs = good + [last]
        m = image()
        for i, (off, length, flags) in enumerate(bufs):
            split_desc(m, i, GPA + off, length, flags, 0)
        split_avail(m, list(range(len(bufs))))
        out["split_singles_burst_" + name] = pages + m
        # The rings mapped a page at a time (address-space bit 7): the quickest fills.
        out["split_singles_burst_" + name + "_ring_pages"] = (pages[:1] + bytes([pages[1] | 0x80])
                                                              + pages[2:] + m)
        m = image()
        for i, (off, length, flags) in enumerate(bufs):
            packed_desc(m, i, GPA + off, length, i, AVAIL | flags)
        out["packed_singles_burst_" + name] = bytes([pages[0] | F_PACKED]) + pages[1:] + m
    return out


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "vq_dev")
    os.makedirs(d, exist_ok=True)
    for name, blob in seeds().items():
        # Trailing zeros add nothing: the harness zero-fills.
        with open(os.path.join(d, name), "wb") as f:
            f.write(blob.rstrip(b"\0") or b"\0\0")


if __name__ == "__main__":
    main()
