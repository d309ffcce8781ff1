/* SPDX-License-Identifier: MIT */
/*
 * A pool of fixed-size slots in the driver's shared memory, for the per-request bytes a driver
 * posts besides the caller's buffers (virtio-blk headers and status bytes, virtio-net headers and
 * receive buffers). Slots are cache-line aligned and zeroed at creation; free ones are kept on a
 * stack, slot 0 on top, so a lightly used queue keeps reusing the same few lines.
 */
#ifndef VIRTUE_DEVICES_SLOT_POOL_H
#define VIRTUE_DEVICES_SLOT_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtue/shm.h"

struct slot_pool {
	struct vt_shm *shm;
	uint8_t *mem;
	size_t stride, mem_size;
	unsigned int num, nfree;
	unsigned int *free; /* stack of free slot indices */
};

/* @num slots of at least @bytes each from @shm: 0, -ENOMEM, or vt_shm_alloc's error. */
int slot_pool_init(struct slot_pool *p, struct vt_shm *shm, unsigned int num, size_t bytes);
/* Returns the memory; a pool that failed or was never initialized is fine too. */
void slot_pool_fini(struct slot_pool *p);

static inline uint8_t *slot_pool_mem(const struct slot_pool *p, unsigned int i)
{
	return p->mem + (size_t)i * p->stride;
}

/* The slot a take would hand out, without taking it: false when none is free. */
static inline bool slot_pool_peek(const struct slot_pool *p, unsigned int *i)
{
	if (p->nfree == 0)
		return false;
	*i = p->free[p->nfree - 1];
	return true;
}

static inline bool slot_pool_take(struct slot_pool *p, unsigned int *i)
{
	if (!slot_pool_peek(p, i))
		return false;
	p->nfree--;
	return true;
}

/* The slots the next takes would hand out, in that order, without taking them: how many (up to
 * @max) went into @idx. */
static inline unsigned int slot_pool_peek_n(const struct slot_pool *p, unsigned int *idx,
					    unsigned int max)
{
	unsigned int n = max < p->nfree ? max : p->nfree;

	for (unsigned int k = 0; k < n; k++)
		idx[k] = p->free[p->nfree - 1 - k];
	return n;
}

/* Takes the first @n slots slot_pool_peek_n named (n at most what it returned). */
static inline void slot_pool_take_n(struct slot_pool *p, unsigned int n)
{
	p->nfree -= n;
}

static inline void slot_pool_put(struct slot_pool *p, unsigned int i)
{
	p->free[p->nfree++] = i;
}

/*
 * Which element of @array (@count elements of @size bytes) @p points at: false when it is none
 * (outside the array, or inside one element). A driver's ring tokens are its slot records; one
 * coming back is checked this way before it is trusted.
 */
static inline bool slot_index_of(const void *array, size_t size, unsigned int count, const void *p,
				 unsigned int *index)
{
	uintptr_t t = (uintptr_t)p, base = (uintptr_t)array;

	if (t < base || t >= base + (size_t)count * size || (t - base) % size != 0)
		return false;
	*index = (unsigned int)((t - base) / size);
	return true;
}

#endif
