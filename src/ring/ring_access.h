/* SPDX-License-Identifier: MIT */
/*
 * Loads and stores of shared ring memory. Every access to a field the other side may write at the
 * same time is a single atomic access (no tearing, no compiler re-fetch: a value is read once
 * and then only the local copy is used). Publication and consumption pair a release store with an
 * acquire load for weak barriers, and use the platform's explicit fences under ORDER_PLATFORM.
 */
#ifndef VIRTUE_RING_ACCESS_H
#define VIRTUE_RING_ACCESS_H

#include <stdint.h>

#include <virtue/barrier.h>
#include <virtue/spec/endian.h>

static inline uint16_t ring_read16(const vt_le16 *p)
{
	return vt_le16_to_cpu(__atomic_load_n(p, __ATOMIC_RELAXED));
}

static inline uint32_t ring_read32(const vt_le32 *p)
{
	return vt_le32_to_cpu(__atomic_load_n(p, __ATOMIC_RELAXED));
}

static inline uint64_t ring_read64(const vt_le64 *p)
{
	return vt_le64_to_cpu(__atomic_load_n(p, __ATOMIC_RELAXED));
}

static inline void ring_write16(vt_le16 *p, uint16_t v)
{
	__atomic_store_n(p, vt_cpu_to_le16(v), __ATOMIC_RELAXED);
}

static inline void ring_write32(vt_le32 *p, uint32_t v)
{
	__atomic_store_n(p, vt_cpu_to_le32(v), __ATOMIC_RELAXED);
}

static inline void ring_write64(vt_le64 *p, uint64_t v)
{
	__atomic_store_n(p, vt_cpu_to_le64(v), __ATOMIC_RELAXED);
}

/*
 * A 16-byte descriptor (either format) as two little-endian words, each loaded once: the address,
 * then the word holding len and the format's two 16-bit fields. Rings and descriptor tables are
 * 16-byte aligned, so both loads are single aligned accesses.
 */
static inline void ring_read_desc_words(const void *desc, uint64_t word[2])
{
	const uint64_t *p = desc;
	word[0] = vt_le64_to_cpu(__atomic_load_n(&p[0], __ATOMIC_RELAXED));
	word[1] = vt_le64_to_cpu(__atomic_load_n(&p[1], __ATOMIC_RELAXED));
}

/*
 * ThreadSanitizer sees no ordering in a standalone fence, so TSan builds also make the platform
 * path's load an acquire and its store a release: the same order, in a form it can check.
 */
#ifdef VT_BARRIER_TSAN
#define RING_PLATFORM_LOAD  __ATOMIC_ACQUIRE
#define RING_PLATFORM_STORE __ATOMIC_RELEASE
#else
#define RING_PLATFORM_LOAD  __ATOMIC_RELAXED
#define RING_PLATFORM_STORE __ATOMIC_RELAXED
#endif

/* Reads an index or flag the peer publishes; later reads of what it guards see its writes. */
static inline uint16_t ring_consume16(enum vt_barrier_kind kind, const vt_le16 *p)
{
	if (kind == VT_BARRIERS_WEAK)
		return vt_le16_to_cpu(__atomic_load_n(p, __ATOMIC_ACQUIRE));
	uint16_t v = vt_le16_to_cpu(__atomic_load_n(p, RING_PLATFORM_LOAD));
	vt_rmb(kind); /* pairs with the peer's ring_publish16 */
	return v;
}

/* Publishes an index or flag: everything written before it is visible first. */
static inline void ring_publish16(enum vt_barrier_kind kind, vt_le16 *p, uint16_t v)
{
	if (kind == VT_BARRIERS_WEAK) {
		__atomic_store_n(p, vt_cpu_to_le16(v), __ATOMIC_RELEASE);
		return;
	}
	vt_wmb(kind); /* pairs with the peer's ring_consume16 */
	__atomic_store_n(p, vt_cpu_to_le16(v), RING_PLATFORM_STORE);
}

#endif
