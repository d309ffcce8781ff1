/* SPDX-License-Identifier: MIT */
/*
 * The range allocator: a buddy system whose blocks (free and allocated) are records in a pool
 * sized once at init, found by their start through a chained hash. Allocation pops the smallest
 * free order that fits and splits it down; free checks the record, then merges with the buddy
 * while the buddy is a free block of the same order. Every operation is O(orders).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "mem/range_alloc.h"

struct vt_range_block {
	uint64_t start; /* in granules from base; the hash key */
	uint64_t size;	/* allocated: the bytes asked for, which free must repeat */
	union {
		struct {
			uint32_t prev, next; /* free: the order's list */
		} list;
		uint32_t tag; /* allocated: the caller's tag */
	};
	uint32_t hash_next; /* in a bucket chain, or in the recycled list */
	uint8_t order;
	bool allocated;
};

#define NONE 0u

static inline uint64_t order_granules(unsigned int order)
{
	return 1ULL << order;
}

static uint32_t bucket_of(const struct vt_range_alloc *ra, uint64_t start)
{
	/* Fibonacci hashing: block starts are multiples of powers of two, which it spreads well. */
	return (uint32_t)((start * 0x9E3779B97F4A7C15ULL) >> (64 - ra->bucket_bits));
}

static uint32_t hash_find(const struct vt_range_alloc *ra, uint64_t start)
{
	uint32_t i = ra->buckets[bucket_of(ra, start)];

	while (i != NONE && ra->blocks[i].start != start)
		i = ra->blocks[i].hash_next;
	return i;
}

static void hash_insert(struct vt_range_alloc *ra, uint32_t i)
{
	uint32_t *head = &ra->buckets[bucket_of(ra, ra->blocks[i].start)];

	ra->blocks[i].hash_next = *head;
	*head = i;
}

static void hash_remove(struct vt_range_alloc *ra, uint32_t i)
{
	uint32_t *link = &ra->buckets[bucket_of(ra, ra->blocks[i].start)];

	while (*link != i)
		link = &ra->blocks[*link].hash_next;
	*link = ra->blocks[i].hash_next;
}

static void list_push(struct vt_range_alloc *ra, uint32_t i)
{
	struct vt_range_block *b = &ra->blocks[i];
	uint32_t head = ra->free_head[b->order];

	b->allocated = false;
	b->list.prev = NONE;
	b->list.next = head;
	if (head != NONE)
		ra->blocks[head].list.prev = i;
	ra->free_head[b->order] = i;
	ra->free_orders |= 1ULL << b->order;
}

static void list_remove(struct vt_range_alloc *ra, uint32_t i)
{
	struct vt_range_block *b = &ra->blocks[i];

	if (b->list.prev != NONE)
		ra->blocks[b->list.prev].list.next = b->list.next;
	else
		ra->free_head[b->order] = b->list.next;
	if (b->list.next != NONE)
		ra->blocks[b->list.next].list.prev = b->list.prev;
	if (ra->free_head[b->order] == NONE)
		ra->free_orders &= ~(1ULL << b->order);
}

/* A record from the pool; the caller has checked that one is left. */
static uint32_t record_get(struct vt_range_alloc *ra)
{
	uint32_t i = ra->recycled;

	if (i != NONE)
		ra->recycled = ra->blocks[i].hash_next;
	else
		i = ++ra->high_water;
	ra->in_use++;
	return i;
}

static void record_put(struct vt_range_alloc *ra, uint32_t i)
{
	ra->blocks[i].hash_next = ra->recycled;
	ra->recycled = i;
	ra->in_use--;
}

/* Adds a free block; the caller has checked that a record is left. */
static void add_free_block(struct vt_range_alloc *ra, uint64_t start, unsigned int order)
{
	uint32_t i = record_get(ra);

	ra->blocks[i].start = start;
	ra->blocks[i].order = (uint8_t)order;
	hash_insert(ra, i);
	list_push(ra, i);
}

int vt_range_alloc_init(struct vt_range_alloc *ra, uint64_t base, uint64_t size, uint64_t granule,
			uint32_t max_blocks)
{
	*ra = (struct vt_range_alloc){ 0 };
	if (granule == 0 || (granule & (granule - 1)) || size < granule || base + (size - 1) < base)
		return -EINVAL;
	ra->base = base;
	ra->granule_shift = (unsigned int)__builtin_ctzll(granule);
	ra->granules = size >> ra->granule_shift;

	/*
	 * A buddy system has at most one block per granule. The initial blocks (one per set bit of
	 * the granule count) always fit, since max(max_blocks, 64) >= popcount.
	 */
	uint64_t want = max_blocks ? max_blocks : VT_RANGE_ALLOC_DEFAULT_BLOCKS;
	if (want < VT_RANGE_ALLOC_ORDERS)
		want = VT_RANGE_ALLOC_ORDERS;
	if (want > ra->granules)
		want = ra->granules;
	ra->capacity = (uint32_t)want;
	ra->bucket_bits = 1;
	while ((1ULL << ra->bucket_bits) < want)
		ra->bucket_bits++;

	/* calloc: both arrays are touched only as far as they are used (index 0 is "none"). */
	ra->blocks = calloc((size_t)ra->capacity + 1, sizeof(*ra->blocks));
	ra->buckets = calloc((size_t)1 << ra->bucket_bits, sizeof(*ra->buckets));
	if (!ra->blocks || !ra->buckets) {
		vt_range_alloc_destroy(ra);
		return -ENOMEM;
	}

	/* Largest blocks first: each starts at the sum of the larger ones, so it is aligned. */
	uint64_t start = 0;
	for (int order = VT_RANGE_ALLOC_ORDERS - 1; order >= 0; order--) {
		if (ra->granules & order_granules((unsigned int)order)) {
			add_free_block(ra, start, (unsigned int)order);
			start += order_granules((unsigned int)order);
		}
	}
	ra->free_granules = ra->granules;
	return 0;
}

void vt_range_alloc_destroy(struct vt_range_alloc *ra)
{
	free(ra->blocks);
	free(ra->buckets);
	*ra = (struct vt_range_alloc){ 0 };
}

int vt_range_alloc_alloc(struct vt_range_alloc *ra, uint64_t size, uint64_t align, uint32_t tag,
			 uint64_t *addr)
{
	if (!vt_range_alloc_valid_request(size, align))
		return -EINVAL;
	int want = vt_range_alloc_request_order(ra, size, align);
	if (want < 0)
		return -ENOSPC;
	uint64_t fits = ra->free_orders & (~0ULL << want);
	if (fits == 0)
		return -ENOSPC;
	unsigned int order = (unsigned int)__builtin_ctzll(fits);
	/* Each split leaves a free upper half that needs a record of its own. */
	if (order - (unsigned int)want > ra->capacity - ra->in_use)
		return -ENOSPC;

	uint32_t i = ra->free_head[order];
	list_remove(ra, i);
	struct vt_range_block *b = &ra->blocks[i];
	while (order > (unsigned int)want) {
		order--;
		add_free_block(ra, b->start + order_granules(order), order);
	}
	b->order = (uint8_t)order;
	b->allocated = true;
	b->size = size;
	b->tag = tag;
	ra->free_granules -= order_granules(order);
	*addr = ra->base + (b->start << ra->granule_shift);
	return 0;
}

int vt_range_alloc_free(struct vt_range_alloc *ra, uint64_t addr, uint64_t size)
{
	uint64_t mask = (1ULL << ra->granule_shift) - 1;

	if (addr < ra->base || ((addr - ra->base) & mask) ||
	    ((addr - ra->base) >> ra->granule_shift) >= ra->granules)
		return -EINVAL;
	uint64_t start = (addr - ra->base) >> ra->granule_shift;
	uint32_t i = hash_find(ra, start);
	if (i == NONE || !ra->blocks[i].allocated || ra->blocks[i].size != size)
		return -EINVAL;

	struct vt_range_block *b = &ra->blocks[i];
	unsigned int order = b->order;
	ra->free_granules += order_granules(order);
	while (order + 1 < VT_RANGE_ALLOC_ORDERS) {
		uint64_t buddy_start = b->start ^ order_granules(order);
		uint32_t j = hash_find(ra, buddy_start);
		/*
		 * A free block of the same order at the buddy's place is the buddy itself. Where
		 * the buddy would lie past the end of the range no block ever starts, so merging
		 * never leaves the range.
		 */
		if (j == NONE || ra->blocks[j].allocated || ra->blocks[j].order != order)
			break;
		list_remove(ra, j);
		hash_remove(ra, j);
		record_put(ra, j);
		if (buddy_start < b->start) {
			hash_remove(ra, i);
			b->start = buddy_start;
			hash_insert(ra, i);
		}
		order++;
	}
	b->order = (uint8_t)order;
	list_push(ra, i);
	return 0;
}

int vt_range_alloc_find(const struct vt_range_alloc *ra, uint64_t addr,
			struct vt_range_block_info *info)
{
	if (addr < ra->base || ((addr - ra->base) >> ra->granule_shift) >= ra->granules)
		return -ENOENT;
	uint64_t granule = (addr - ra->base) >> ra->granule_shift;

	/*
	 * Blocks tile the range, so the first block found starting at @granule rounded down to
	 * ever larger powers of two is the one holding it: nothing starts strictly inside a block.
	 */
	for (unsigned int order = 0; order < VT_RANGE_ALLOC_ORDERS; order++) {
		uint64_t start = granule & ~(order_granules(order) - 1);
		uint32_t i = hash_find(ra, start);
		if (i == NONE)
			continue;
		const struct vt_range_block *b = &ra->blocks[i];
		if (granule - b->start >= order_granules(b->order) || !b->allocated)
			return -ENOENT;
		info->addr = ra->base + (b->start << ra->granule_shift);
		info->size = b->size;
		info->block_bytes = order_granules(b->order) << ra->granule_shift;
		info->tag = b->tag;
		return 0;
	}
	return -ENOENT;
}

uint64_t vt_range_alloc_free_bytes(const struct vt_range_alloc *ra)
{
	return ra->free_granules << ra->granule_shift;
}
