/* SPDX-License-Identifier: MIT */
/*
 * What the DMA modes share, internal to the library: the ops table each mode fills, the common
 * head of every struct vt_dma (embedded first in each mode's own struct), statistics, and a
 * bounded pool of mapping records for the modes that remember their mappings.
 */
#ifndef VIRTUE_MEM_DMA_IMPL_H
#define VIRTUE_MEM_DMA_IMPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <virtue/as.h>
#include <virtue/dma.h>

#include "mem/range_alloc.h"

/*
 * Internal to the library though named vt_ (which libvirtue.map exports): hidden, so that the
 * ring's calls, a map or unmap per buffer, are direct rather than through the PLT.
 */
#pragma GCC visibility push(hidden)

/* The IOMMU's page: the unit of IOVA allocation and of the translations published. */
#define VT_DMA_IOMMU_PAGE 4096u

/* Live mappings a mode that remembers them can hold (iommu strict and lazy, bounce). */
#define VT_DMA_MAX_MAPPINGS 65536u

/* Alignment of coherent allocations, as the Linux DMA API gives: rings may need a page. */
#define VT_DMA_COHERENT_ALIGN 4096u

/*
 * Arguments reach the ops already checked by dma.c: len > 0, dir valid, ptr not NULL and
 * [ptr, ptr + len) not wrapping, size > 0. Each op logs its own failures.
 */
struct vt_dma_ops {
	int (*map)(struct vt_dma *dma, void *ptr, size_t len, enum vt_dma_dir dir, uint64_t *bus);
	/*
	 * Optional: vt_dma_map_burst of buffers each already checked as map's are. Without it,
	 * dma.c maps them one by one.
	 */
	unsigned int (*map_burst)(struct vt_dma *dma, const struct iovec *bufs, unsigned int count,
				  enum vt_dma_dir dir, uint64_t *bus, int *error);
	int (*unmap)(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir);
	int (*sync_for_device)(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir);
	int (*sync_for_cpu)(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir);
	int (*alloc_coherent)(struct vt_dma *dma, size_t size, void **cpu, uint64_t *bus);
	void (*free_coherent)(struct vt_dma *dma, size_t size, void *cpu, uint64_t bus);
	int (*flush)(struct vt_dma *dma);
	/* Optional, both or neither: vt_dma_batch_begin and vt_dma_batch_end. */
	void (*batch_begin)(struct vt_dma *dma);
	int (*batch_end)(struct vt_dma *dma);
	/* Optional: vt_dma_device_as. */
	struct vt_as (*device_as)(struct vt_dma *dma);
	/* Publishes what is pending, releases everything, frees the object. */
	void (*destroy)(struct vt_dma *dma);
};

/* struct vt_dma_stats as counters that map and unmap on several threads can bump. */
struct vt_dma_counters {
	_Atomic uint64_t maps, unmaps;
	_Atomic uint64_t iotlb_updates, iotlb_invalidations, flushes;
	_Atomic uint64_t bounce_bytes_in, bounce_bytes_out;
	_Atomic uint64_t map_failures;
};

/* Linear windows a mode can declare: at most this many, scanned in order. */
#define VT_DMA_LINEAR_MAX 4

/* bus = ptr - hva + bus for every [ptr, ptr + len) inside [hva, hva + size). */
struct vt_dma_linear {
	uint64_t hva;
	uint64_t size;
	uint64_t bus;
};

struct vt_dma {
	const struct vt_dma_ops *ops;
	enum vt_dma_mode mode;
	struct vt_shm *shm;
	const struct vt_log *log;
	/*
	 * Windows where mapping is arithmetic for the object's whole life and needs no record and
	 * no unmap (direct: the shared memory regions present at creation; premapped: the regions
	 * mapped at creation). Written by the constructor only, so any thread may map through them
	 * without the ops (vt_dma_map_linear).
	 */
	struct vt_dma_linear linear[VT_DMA_LINEAR_MAX];
	unsigned int linear_count;
	struct vt_dma_counters stats;
};

/*
 * The map of a mode with linear windows, inline: true with *bus set when [ptr, ptr + len) lies
 * inside one window (exactly what that mode's map would answer), false when the caller must take
 * vt_dma_map. @len must not be 0. Counts nothing: the caller adds to stats.maps. The window
 * mapped through is copied to @win, for a caller that tries it first on the next buffer.
 */
static inline bool vt_dma_map_linear_window(const struct vt_dma *dma, const void *ptr, size_t len,
					    uint64_t *bus, struct vt_dma_linear *win)
{
	uint64_t p = (uint64_t)(uintptr_t)ptr;

	for (unsigned int i = 0; i < dma->linear_count; i++) {
		const struct vt_dma_linear *w = &dma->linear[i];
		uint64_t off = p - w->hva;
		if (off < w->size && len <= w->size - off) {
			*win = *w;
			*bus = w->bus + off;
			return true;
		}
	}
	return false;
}

/* vt_dma_map_linear_window without the window. */
static inline bool vt_dma_map_linear(const struct vt_dma *dma, const void *ptr, size_t len,
				     uint64_t *bus)
{
	struct vt_dma_linear win;
	return vt_dma_map_linear_window(dma, ptr, len, bus, &win);
}

/* Adds a linear window (constructors only); beyond VT_DMA_LINEAR_MAX the ops alone map. */
static inline void vt_dma_add_linear(struct vt_dma *dma, uint64_t hva, uint64_t size, uint64_t bus)
{
	if (dma->linear_count < VT_DMA_LINEAR_MAX)
		dma->linear[dma->linear_count++] = (struct vt_dma_linear){ hva, size, bus };
}

/*
 * Whether [p, p + len) lies inside the @size bytes at @base: an offset below the size and a
 * length within the rest, which cannot overflow where base + offset would.
 */
static inline bool vt_dma_span_inside(uint64_t base, uint64_t size, uint64_t p, uint64_t len)
{
	uint64_t off = p - base;
	return off < size && len <= size - off;
}

/* Whether [p, p + len) lies inside shared memory region @r. */
static inline bool vt_dma_region_holds(const struct vt_shm_region *r, uint64_t p, uint64_t len)
{
	return vt_dma_span_inside((uint64_t)(uintptr_t)r->hva, r->size, p, len);
}

/* The device's permission for a mapping made for @dir (VT_ACCESS_* bits). */
static inline unsigned int vt_dma_access_for(enum vt_dma_dir dir)
{
	switch (dir) {
	case VT_DMA_TO_DEVICE:
		return VT_ACCESS_READ;
	case VT_DMA_FROM_DEVICE:
		return VT_ACCESS_WRITE;
	case VT_DMA_BIDIRECTIONAL:
		break;
	}
	return VT_ACCESS_RW;
}

static inline void vt_dma_count(_Atomic uint64_t *counter, uint64_t n)
{
	/* Statistics only: nothing is ordered by them. */
	atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

/*
 * For a counter only bumped with the object's lock held (or before the object is shared): a
 * plain read and write, without the locked instruction, and still whole to the stats' readers.
 */
static inline void vt_dma_count_locked(_Atomic uint64_t *counter, uint64_t n)
{
	atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

/*
 * vt_dma_map and vt_dma_unmap without the maps and unmaps statistics (failures are counted as
 * ever), for a caller that makes many in a row and adds them up once: each vt_dma_count is a
 * locked read-modify-write, which on x86 also waits for every store before it, a ring burst's
 * descriptor stores included.
 */
int vt_dma_map_uncounted(struct vt_dma *dma, void *ptr, size_t len, enum vt_dma_dir dir,
			 uint64_t *bus);
int vt_dma_unmap_uncounted(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir);
unsigned int vt_dma_map_burst_uncounted(struct vt_dma *dma, const struct iovec *bufs,
					unsigned int count, enum vt_dma_dir dir, uint64_t *bus,
					int *error);

/* A mode's batch_end called by a thread without a batch open: logs it, returns -EINVAL. */
int vt_dma_batch_end_unopened(struct vt_dma *dma);

/* Fills the common head; the mode's constructor calls it first. */
void vt_dma_init_common(struct vt_dma *dma, const struct vt_dma_ops *ops,
			const struct vt_dma_params *params);

/* The per-mode constructors vt_dma_new dispatches to; params already checked for the mode. */
int vt_dma_direct_create(const struct vt_dma_params *params, struct vt_dma **out);
int vt_dma_iommu_pt_create(const struct vt_dma_params *params, struct vt_dma **out);
int vt_dma_iommu_create(const struct vt_dma_params *params, struct vt_dma **out);
int vt_dma_bounce_create(const struct vt_dma_params *params, struct vt_dma **out);

/*
 * A mapping remembered by a mode: what was mapped and how, so that unmap and sync can check
 * their arguments and bounce can copy. Records are found through the range allocator's tag.
 */
enum vt_dma_record_state {
	VT_DMA_RECORD_UNUSED = 0,
	VT_DMA_RECORD_LIVE,	/* mapped; unmap and sync accept it */
	VT_DMA_RECORD_RETIRING, /* unmapped, but its bus addresses are not yet reusable */
	VT_DMA_RECORD_IDLE,	/* unmapped and invalidated; kept with its block for reuse */
};

struct vt_dma_record {
	void *cpu; /* the driver's pointer */
	uint64_t len;
	uint64_t bus;	    /* what map returned */
	uint64_t bus_block; /* start of the range-allocator block behind it */
	uint64_t bus_size;  /* the size that block was allocated with */
	uint32_t next_unused;
	uint8_t dir;
	uint8_t state;
	uint8_t flags; /* the mode's own */
};

/* A fixed pool of records, indices 1..capacity (0 is "none", as range_alloc tags). */
struct vt_dma_record_pool {
	struct vt_dma_record *records;
	uint32_t capacity;
	uint32_t high_water;
	uint32_t unused; /* records given back, linked through next_unused */
	uint32_t live;	 /* records not UNUSED */
};

int vt_dma_record_pool_init(struct vt_dma_record_pool *pool, uint32_t capacity);
void vt_dma_record_pool_destroy(struct vt_dma_record_pool *pool);
/* A zeroed record's index, or 0 when the pool is exhausted. */
uint32_t vt_dma_record_get(struct vt_dma_record_pool *pool);
void vt_dma_record_put(struct vt_dma_record_pool *pool, uint32_t index);

static inline struct vt_dma_record *vt_dma_record_at(struct vt_dma_record_pool *pool,
						     uint32_t index)
{
	return &pool->records[index];
}

/*
 * Unmapped blocks kept, with their records (state IDLE), for the next map of their size class,
 * up to @depth per class: a buffer unmapped and another mapped then skip the range allocator
 * both ways. A mode numbers its classes (IOMMU pages, bounce granules, minus one) below
 * @classes and sets both fields at creation; a kept block is not mapped, and a mode keeps one
 * only once nothing can reach it any more (for IOMMU, once its invalidation was published).
 */
#define VT_DMA_IDLE_CLASSES_MAX 32u

struct vt_dma_idle {
	uint32_t head[VT_DMA_IDLE_CLASSES_MAX]; /* linked through next_unused */
	unsigned int count[VT_DMA_IDLE_CLASSES_MAX];
	unsigned int total;
	unsigned int classes, depth;
};

/* Keeps record @tag, unmapped, in @class: false when @class is out of range or full. */
static inline bool vt_dma_idle_put(struct vt_dma_idle *idle, struct vt_dma_record_pool *pool,
				   uint32_t tag, uint64_t class)
{
	if (class >= idle->classes || idle->count[class] >= idle->depth)
		return false;
	struct vt_dma_record *rec = vt_dma_record_at(pool, tag);
	rec->state = VT_DMA_RECORD_IDLE;
	rec->next_unused = idle->head[class];
	idle->head[class] = tag;
	idle->count[class]++;
	idle->total++;
	return true;
}

/* A record kept in @class, no longer kept (still IDLE until the caller fills it), or 0. */
static inline uint32_t vt_dma_idle_take(struct vt_dma_idle *idle, struct vt_dma_record_pool *pool,
					uint64_t class)
{
	if (class >= idle->classes || !idle->head[class])
		return 0;
	uint32_t tag = idle->head[class];
	idle->head[class] = vt_dma_record_at(pool, tag)->next_unused;
	idle->count[class]--;
	idle->total--;
	return tag;
}

/*
 * The record last mapped at each bus address, by a key the mode derives from it (its IOMMU page,
 * its bounce granule) folded into VT_DMA_TAG_HINTS entries: unmaps mostly follow their maps
 * closely, so this guess spares the allocator search; it is trusted only when checked.
 */
#define VT_DMA_TAG_HINTS 256u /* a power of two */

struct vt_dma_tag_hints {
	uint32_t tag[VT_DMA_TAG_HINTS];
};

static inline void vt_dma_tag_hint_set(struct vt_dma_tag_hints *h, uint64_t key, uint32_t tag)
{
	h->tag[key & (VT_DMA_TAG_HINTS - 1)] = tag;
}

/*
 * The hinted record at @key when it is the LIVE mapping of exactly @bus, @len and @dir, else 0
 * (the caller then searches, which also says what is wrong).
 */
static inline uint32_t vt_dma_tag_hint_get(const struct vt_dma_tag_hints *h,
					   struct vt_dma_record_pool *pool, uint64_t key,
					   uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	uint32_t tag = h->tag[key & (VT_DMA_TAG_HINTS - 1)];
	const struct vt_dma_record *rec = tag ? vt_dma_record_at(pool, tag) : NULL;
	return rec && rec->state == VT_DMA_RECORD_LIVE && rec->bus == bus && rec->len == len &&
		       rec->dir == dir
		   ? tag
		   : 0;
}

/* Gives every kept block back to @ra, and its record to @pool. */
void vt_dma_idle_drain(struct vt_dma_idle *idle, struct vt_dma_record_pool *pool,
		       struct vt_range_alloc *ra);

/*
 * The LIVE record of the mapping at @bus, found through the allocator block holding @block_addr
 * (@bus in the allocator's own terms) and its tag. @exact (unmap): the mapping must start at @bus
 * with @len; otherwise (sync) [bus, bus + len) must lie inside it. The direction must match.
 * Returns 0 with *tag set, -ENOENT (no such live mapping) or -EINVAL (mismatch), logged.
 */
int vt_dma_record_find(const struct vt_dma *dma, const struct vt_range_alloc *ra,
		       struct vt_dma_record_pool *pool, uint64_t block_addr, const char *op,
		       uint64_t bus, size_t len, enum vt_dma_dir dir, int exact, uint32_t *tag);

#pragma GCC visibility pop

#endif
