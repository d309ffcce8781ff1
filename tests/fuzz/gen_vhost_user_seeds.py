#!/usr/bin/env python3
"""Writes seed inputs for fuzz_vhost_user (tests/fuzz/corpus/vhost_user/): front-end message
streams a well-behaved front-end sends (handshake, memory table, rings, IOTLB, config, status,
reset) and a few hostile ones (wrong version, oversized payload, unknown codes, bad sizes, out of
order), so the fuzzer starts from the shapes test_vhost_user_msg exercises.

Input layout (see fuzz_vhost_user.c): a mode byte (bit 0: the harness attaches fds to requests
that carry them), then messages: request, flags, size (u32 each, little-endian on the hosts we
run on) and the payload.
"""
import os
import struct
import sys

V1, NEED_REPLY = 0x1, 0x8
(GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE, SET_LOG_BASE, SET_LOG_FD,
 SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_KICK, SET_VRING_CALL,
 SET_VRING_ERR, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE,
 SEND_RARP, NET_SET_MTU, SET_BACKEND_REQ_FD, IOTLB_MSG, SET_VRING_ENDIAN, GET_CONFIG,
 SET_CONFIG) = range(1, 26)
RESET_DEVICE, GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG, SET_STATUS, GET_STATUS = (
    34, 36, 37, 38, 39, 40)

VERSION_1, ACCESS_PLATFORM, PACKED, EVENT_IDX = 1 << 32, 1 << 33, 1 << 34, 1 << 29
PROTOCOL_FEATURES = 1 << 30
PROTOCOL = (1 << 0) | (1 << 3) | (1 << 5) | (1 << 9) | (1 << 13) | (1 << 15) | (1 << 16)

GPA, UADDR, MEM = 0x100000000, 0x7f0000000000, 0x10000
UPDATE, INVALIDATE = 2, 3


def msg(request, payload=b"", flags=V1 | NEED_REPLY, size=None):
    return struct.pack("<III", request, flags, len(payload) if size is None else size) + payload


def u64(v):
    return struct.pack("<Q", v)


def state(index, num):
    return struct.pack("<II", index, num)


def region(gpa=GPA, size=MEM, uaddr=UADDR, offset=0):
    return struct.pack("<QQQQ", gpa, size, uaddr, offset)


def mem_table(*regions):
    return struct.pack("<II", len(regions), 0) + b"".join(regions)


def vring_addr(index, desc, used, avail, flags=0):
    return struct.pack("<IIQQQQ", index, flags, desc, used, avail, 0)


def iotlb(kind, iova, size, uaddr, perm):
    return struct.pack("<QQQBB6x", iova, size, uaddr, perm, kind)


def config(offset, size, data=b""):
    return struct.pack("<III", offset, size, 0) + data.ljust(size, b"\0")


def handshake(features=VERSION_1, protocol=PROTOCOL):
    return (msg(GET_FEATURES, flags=V1) + msg(GET_PROTOCOL_FEATURES, flags=V1) +
            msg(SET_PROTOCOL_FEATURES, u64(protocol), flags=V1) + msg(SET_OWNER) +
            msg(SET_FEATURES, u64(features | PROTOCOL_FEATURES)) + msg(GET_QUEUE_NUM, flags=V1) +
            msg(GET_MAX_MEM_SLOTS, flags=V1))


def ring(index, num=8, base=0, with_kick=True):
    out = (msg(SET_VRING_NUM, state(index, num)) +
           msg(SET_VRING_ADDR, vring_addr(index, UADDR, UADDR + 0x2000, UADDR + 0x1000)) +
           msg(SET_VRING_BASE, state(index, base)) + msg(SET_VRING_CALL, u64(index)) +
           msg(SET_VRING_ERR, u64(index)) + msg(SET_VRING_ENABLE, state(index, 1)))
    if with_kick:
        out += msg(SET_VRING_KICK, u64(index))
    return out


def seeds():
    out = {}
    out["handshake"] = bytes([0]) + handshake()
    out["handshake_config_status"] = bytes([0]) + (
        handshake() + msg(GET_CONFIG, config(0, 16), flags=V1) +
        msg(SET_CONFIG, config(4, 4, b"\1\2\3\4")) + msg(SET_STATUS, u64(0x0f)) +
        msg(GET_STATUS, flags=V1) + msg(RESET_DEVICE) + msg(GET_STATUS, flags=V1))
    out["mem_and_rings"] = bytes([1]) + (
        handshake(VERSION_1 | EVENT_IDX) + msg(SET_MEM_TABLE, mem_table(region())) + ring(0) +
        ring(1) + msg(GET_VRING_BASE, state(0, 0), flags=V1) + ring(0, base=0) +
        msg(RESET_OWNER))
    out["mem_slots"] = bytes([1]) + (
        handshake() + msg(ADD_MEM_REG, u64(0) + region()) +
        msg(ADD_MEM_REG, u64(0) + region(gpa=GPA + MEM, uaddr=UADDR + MEM)) +
        msg(REM_MEM_REG, u64(0) + region()) + msg(SET_MEM_TABLE, mem_table(region(), region(
            gpa=GPA + MEM, uaddr=UADDR + MEM))))
    out["packed_ring"] = bytes([1]) + (
        handshake(VERSION_1 | PACKED) + msg(SET_MEM_TABLE, mem_table(region())) +
        ring(0, num=10, base=0x8000) + msg(GET_VRING_BASE, state(0, 0), flags=V1))
    out["iotlb"] = bytes([1]) + (
        handshake(VERSION_1 | ACCESS_PLATFORM) + msg(SET_BACKEND_REQ_FD) +
        msg(SET_MEM_TABLE, mem_table(region())) + ring(0) +
        msg(IOTLB_MSG, iotlb(UPDATE, UADDR, MEM, UADDR, 3)) +
        msg(IOTLB_MSG, iotlb(INVALIDATE, UADDR + 0x1000, 0x1000, 0, 0)) +
        msg(IOTLB_MSG, iotlb(UPDATE, 0, 0x1000, UADDR, 1)))
    # Hostile streams.
    out["bad_version"] = bytes([0]) + handshake() + msg(GET_FEATURES, flags=2)
    out["oversized"] = bytes([0]) + msg(SET_FEATURES, u64(VERSION_1), size=4096)
    out["unknown_codes"] = bytes([0]) + (
        msg(SET_PROTOCOL_FEATURES, u64(PROTOCOL), flags=V1) + msg(99, b"\0" * 16) +
        msg(SET_LOG_BASE, u64(0)) + msg(0) + msg(GET_FEATURES, flags=V1))
    out["wrong_sizes"] = bytes([0]) + (
        handshake() + msg(SET_FEATURES, b"\0" * 4) + msg(SET_VRING_NUM, b"\0" * 12) +
        msg(SET_MEM_TABLE, mem_table(region()), size=40 + 32) +
        msg(GET_CONFIG, config(200, 100), flags=V1))
    out["before_owner"] = bytes([1]) + (
        msg(SET_PROTOCOL_FEATURES, u64(PROTOCOL), flags=V1) +
        msg(SET_FEATURES, u64(VERSION_1)) + msg(SET_MEM_TABLE, mem_table(region())) +
        ring(0) + msg(GET_VRING_BASE, state(0, 0), flags=V1))
    out["bad_memory"] = bytes([1]) + (
        handshake() + msg(SET_MEM_TABLE, mem_table()) +
        msg(SET_MEM_TABLE, mem_table(region(offset=(1 << 64) - 0x1000))) +
        msg(SET_MEM_TABLE, mem_table(region(size=MEM * 4))) +
        msg(SET_MEM_TABLE, mem_table(region(), region(gpa=GPA + 0x1000))) +
        msg(REM_MEM_REG, u64(0) + region()))
    out["bad_rings"] = bytes([1]) + (
        handshake() + msg(SET_MEM_TABLE, mem_table(region())) +
        msg(SET_VRING_NUM, state(5, 8)) + msg(SET_VRING_NUM, state(0, 0)) +
        msg(SET_VRING_NUM, state(0, 100)) + msg(SET_VRING_KICK, u64(0)) +
        msg(SET_VRING_ADDR, vring_addr(0, UADDR + MEM, UADDR, UADDR)) +
        msg(GET_VRING_BASE, state(7, 0), flags=V1))
    out["bad_iotlb"] = bytes([0]) + (
        handshake() + msg(IOTLB_MSG, iotlb(UPDATE, 0, 0x1000, UADDR, 3)) +
        msg(SET_FEATURES, u64(VERSION_1 | ACCESS_PLATFORM | PROTOCOL_FEATURES)) +
        msg(IOTLB_MSG, iotlb(UPDATE, 0, 0x1000, UADDR, 0)) +
        msg(IOTLB_MSG, iotlb(UPDATE, 0, 0, UADDR, 3)) +
        msg(IOTLB_MSG, iotlb(1, 0, 0x1000, UADDR, 3)))
    out["truncated"] = bytes([0]) + handshake() + msg(SET_FEATURES, u64(VERSION_1))[:15]
    return out


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "vhost_user")
    os.makedirs(outdir, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds())} seeds to {outdir}")


if __name__ == "__main__":
    main()
