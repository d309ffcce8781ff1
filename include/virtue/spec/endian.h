/* SPDX-License-Identifier: MIT */
/*
 * Little-endian wire types. Every multi-byte field that crosses between driver and device is
 * little-endian (virtio 1.x, "Structure Size and Alignment"); these typedefs mark such fields and
 * the helpers are the only way code should read or write them.
 */
#ifndef VIRTUE_SPEC_ENDIAN_H
#define VIRTUE_SPEC_ENDIAN_H

#include <endian.h>
#include <stdint.h>

typedef uint16_t vt_le16;
typedef uint32_t vt_le32;
typedef uint64_t vt_le64;

static inline uint16_t vt_le16_to_cpu(vt_le16 v)
{
	return le16toh(v);
}

static inline uint32_t vt_le32_to_cpu(vt_le32 v)
{
	return le32toh(v);
}

static inline uint64_t vt_le64_to_cpu(vt_le64 v)
{
	return le64toh(v);
}

static inline vt_le16 vt_cpu_to_le16(uint16_t v)
{
	return htole16(v);
}

static inline vt_le32 vt_cpu_to_le32(uint32_t v)
{
	return htole32(v);
}

static inline vt_le64 vt_cpu_to_le64(uint64_t v)
{
	return htole64(v);
}

#endif
