/* SPDX-License-Identifier: MIT */
/*
 * A bounded allocator of address ranges, internal to the library: shared-memory bytes (vt_shm),
 * IOVA space (the IOMMU DMA modes) and bounce-window slots all come from one. A buddy system over
 * [base, base + size) in units of a power-of-two granule, whose metadata is a fixed pool of block
 * records allocated at init, so its size follows the number of blocks in use rather than the size
 * of the range (a 1 TiB IOVA space costs what its live mappings cost).
 */
#ifndef VIRTUE_MEM_RANGE_ALLOC_H
#define VIRTUE_MEM_RANGE_ALLOC_H

#include <stdbool.h>
#include <stdint.h>

/* Block records when the caller does not say (also capped by the number of granules). */
#define VT_RANGE_ALLOC_DEFAULT_BLOCKS 65536u

#define VT_RANGE_ALLOC_ORDERS 64

struct vt_range_block;

/* Opaque in spirit: embedded by its users, touched only through the functions below. */
struct vt_range_alloc {
	uint64_t base;
	uint64_t granules; /* usable granules: size / granule */
	uint64_t free_granules;
	unsigned int granule_shift;
	struct vt_range_block *blocks; /* [1, capacity]; index 0 means "none" */
	uint32_t capacity;
	uint32_t in_use;     /* records holding a free or allocated block */
	uint32_t high_water; /* records ever handed out; beyond it the pool is untouched */
	uint32_t recycled;   /* records given back, linked through hash_next */
	uint32_t *buckets;   /* block start -> record index, chained */
	unsigned int bucket_bits;
	uint32_t free_head[VT_RANGE_ALLOC_ORDERS]; /* per-order free lists */
	uint64_t free_orders;			   /* bit k set: free_head[k] is not empty */
};

/* What vt_range_alloc_find reports about the allocation containing an address. */
struct vt_range_block_info {
	uint64_t addr;	      /* first byte of the allocation */
	uint64_t size;	      /* the size it was asked for with */
	uint64_t block_bytes; /* what it really holds: size rounded up to a power-of-two block */
	uint32_t tag;	      /* the caller's tag given at allocation */
};

/*
 * Manages [base, base + size) in blocks of a power of two of @granule (itself a power of two);
 * a tail shorter than a granule is not used. @max_blocks bounds the free and allocated blocks that
 * can exist at once (0: VT_RANGE_ALLOC_DEFAULT_BLOCKS); a buddy system never needs more than one
 * per granule, so small ranges never run out. Returns 0, -EINVAL or -ENOMEM.
 */
int vt_range_alloc_init(struct vt_range_alloc *ra, uint64_t base, uint64_t size, uint64_t granule,
			uint32_t max_blocks);
void vt_range_alloc_destroy(struct vt_range_alloc *ra);

/*
 * Allocates @size bytes: a block of the smallest power of two of granules holding max(@size,
 * @align), aligned (relative to base) to its own size, so any alignment up to the block size comes
 * free. @align is 0 or a power of two; @tag is kept with the block for vt_range_alloc_find.
 * Returns 0 with *addr set, -EINVAL (size 0, bad align) or -ENOSPC (no free block big enough, or
 * no block record left to split one).
 */
int vt_range_alloc_alloc(struct vt_range_alloc *ra, uint64_t size, uint64_t align, uint32_t tag,
			 uint64_t *addr);

/*
 * Returns an allocation: @addr and @size exactly as allocated. Anything else (a double free, an
 * address inside or outside an allocation, another size) is refused with -EINVAL and changes
 * nothing. Freed blocks merge with their free buddies.
 */
int vt_range_alloc_free(struct vt_range_alloc *ra, uint64_t addr, uint64_t size);

/* The allocation whose block contains @addr: 0, or -ENOENT (free, or outside the range). */
int vt_range_alloc_find(const struct vt_range_alloc *ra, uint64_t addr,
			struct vt_range_block_info *info);

uint64_t vt_range_alloc_free_bytes(const struct vt_range_alloc *ra);

/* Whether a request of @size and @align can be asked at all: size not 0, align 0 or a power of 2.
 */
static inline bool vt_range_alloc_valid_request(uint64_t size, uint64_t align)
{
	return size != 0 && (align & (align - 1)) == 0;
}

/*
 * The order of the block a valid request takes (its size in granules is 1 << order), or -1 when
 * no block of the range could hold it. Inline: a caller with a constant @align gets a few
 * instructions (the IOMMU DMA's unmap asks it per buffer).
 */
static inline int vt_range_alloc_request_order(const struct vt_range_alloc *ra, uint64_t size,
					       uint64_t align)
{
	uint64_t mask = (1ULL << ra->granule_shift) - 1;
	uint64_t need = (size >> ra->granule_shift) + ((size & mask) != 0);
	uint64_t align_granules = align >> ra->granule_shift;

	if (align_granules > need)
		need = align_granules;
	if (need == 0 || need > ra->granules)
		return -1;
	if (need == 1)
		return 0;
	int order = 64 - __builtin_clzll(need - 1);
	if (order >= VT_RANGE_ALLOC_ORDERS || (1ULL << order) > ra->granules)
		return -1;
	return order;
}

/* Bytes an allocation of @size and @align takes out of the range (0 if it can never fit). */
static inline uint64_t vt_range_alloc_block_bytes(const struct vt_range_alloc *ra, uint64_t size,
						  uint64_t align)
{
	/* A power of two of granules, at least as aligned: the block is the request itself. */
	if ((size & (size - 1)) == 0 && align <= size && (size >> ra->granule_shift) != 0 &&
	    (size >> ra->granule_shift) <= ra->granules)
		return size;
	if (!vt_range_alloc_valid_request(size, align))
		return 0;
	int order = vt_range_alloc_request_order(ra, size, align);
	return order < 0 ? 0 : (1ULL << order) << ra->granule_shift;
}

#endif
