/* SPDX-License-Identifier: MIT */
/*
 * Bounce DMA: the device reaches only a window of shared memory (as a confidential guest shares
 * only a swiotlb window with its host), so every mapping is a slot in the window and the bytes
 * travel by copy, in the mapping's direction only: in at map and sync_for_device for to-device,
 * out at unmap and sync_for_cpu for from-device. The driver's own buffer can be anywhere.
 *
 * Threading: map, unmap and sync may run on several threads at once. The lock (dma_lock.h)
 * covers the slot allocator and the records; copies run outside it, on slots their mapping owns,
 * except inside a batch, which holds it from its begin to its end.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mem/dma_impl.h"
#include "mem/dma_lock.h"

#define BOUNCE_DEFAULT_WINDOW (4ULL << 20)
/* Slots are cache lines, so two mappings never share one. */
#define BOUNCE_SLOT_GRANULE 64u

/* Record flag: memory from alloc_coherent, which lives in the window and is never copied. */
#define RECORD_COHERENT 1u

/*
 * Unmapped slots of up to IDLE_GRANULES granules (2 KiB: a full-size frame) are kept, with
 * their records, up to IDLE_DEPTH per size, and handed to the next map of that size: a buffer
 * unmapped and another mapped then skip the slot allocator both ways, as in the IOMMU mode. They
 * go back to the allocator when it runs out. Nothing but a map ever exposes a slot again, and a
 * map fills it (copy or zeroes) before it returns the bus address.
 */
#define IDLE_GRANULES 32u
_Static_assert(IDLE_GRANULES <= VT_DMA_IDLE_CLASSES_MAX,
	       "more size classes than struct vt_dma_idle has");
#define IDLE_DEPTH 64u

struct dma_bounce {
	struct vt_dma dma; /* first: the ops get a struct vt_dma * */
	struct vt_dma_lock lock;
	uint8_t *window;
	uint64_t window_size;
	uint64_t window_gpa;
	struct vt_range_alloc slots; /* offsets into the window */
	struct vt_dma_record_pool records;

	/* IDLE records by slot granules - 1. */
	struct vt_dma_idle idle;

	/* The record last mapped at each slot, by its granule: a guess for unmap. */
	struct vt_dma_tag_hints hints;
};

static inline struct dma_bounce *to_bounce(struct vt_dma *dma)
{
	return (struct dma_bounce *)dma;
}

/* Granules a slot of @len bytes takes. */
static inline uint64_t slot_granules(uint64_t len)
{
	return (len + BOUNCE_SLOT_GRANULE - 1) / BOUNCE_SLOT_GRANULE;
}

/* Gives an unmapped slot back: kept idle for the next map of its size, or freed. */
static void release_slot(struct dma_bounce *b, uint32_t tag)
{
	struct vt_dma_record *rec = vt_dma_record_at(&b->records, tag);

	if (!(rec->flags & RECORD_COHERENT) &&
	    vt_dma_idle_put(&b->idle, &b->records, tag, slot_granules(rec->bus_size) - 1))
		return;
	vt_range_alloc_free(&b->slots, rec->bus_block, rec->bus_size);
	vt_dma_record_put(&b->records, tag);
}

/* A new record and a slot of @len bytes for it, from the allocator. */
static int alloc_slot(struct dma_bounce *b, uint64_t len, uint64_t align, uint32_t *tag,
		      uint64_t *off)
{
	int ret = -ENOSPC;

	*tag = vt_dma_record_get(&b->records);
	if (*tag) {
		ret = vt_range_alloc_alloc(&b->slots, len, align, *tag, off);
		if (ret < 0)
			vt_dma_record_put(&b->records, *tag);
		else
			vt_dma_record_at(&b->records, *tag)->bus_size = len;
	}
	return ret;
}

/*
 * A record and a slot of @len bytes for it: an idle one of its size when there is one, else a new
 * one, the idle slots drained first when the window is full; either way the record's bus_size is
 * the size the slot was allocated with. Logged when the window is full all the same.
 */
static int reserve_slot(struct dma_bounce *b, uint64_t len, uint64_t align, uint32_t *tag,
			uint64_t *off)
{
	*tag = align == BOUNCE_SLOT_GRANULE
		   ? vt_dma_idle_take(&b->idle, &b->records, slot_granules(len) - 1)
		   : 0;
	if (*tag) {
		*off = vt_dma_record_at(&b->records, *tag)->bus_block;
		return 0;
	}
	int ret = alloc_slot(b, len, align, tag, off);
	if (ret < 0 && b->idle.total) {
		vt_dma_idle_drain(&b->idle, &b->records, &b->slots);
		ret = alloc_slot(b, len, align, tag, off);
	}
	if (ret < 0)
		vt_log(b->dma.log, VT_LOG_WARN,
		       "dma(bounce): window full: no slot for %llu bytes (%llu of %llu bytes free, "
		       "%u mappings live)",
		       (unsigned long long)len,
		       (unsigned long long)vt_range_alloc_free_bytes(&b->slots),
		       (unsigned long long)b->window_size, b->records.live - b->idle.total);
	return ret;
}

static int bounce_map(struct vt_dma *dma, void *ptr, size_t len, enum vt_dma_dir dir, uint64_t *bus)
{
	struct dma_bounce *b = to_bounce(dma);
	uint32_t tag;
	uint64_t off;

	bool locked = vt_dma_lock(&b->lock);
	int ret = reserve_slot(b, len, BOUNCE_SLOT_GRANULE, &tag, &off);
	if (ret == 0) {
		struct vt_dma_record *rec = vt_dma_record_at(&b->records, tag);
		uint64_t allocated = rec->bus_size; /* reserve_slot's */
		*rec = (struct vt_dma_record){
			.cpu = ptr,
			.len = len,
			.bus = b->window_gpa + off,
			.bus_block = off,
			.bus_size = allocated,
			.dir = (uint8_t)dir,
			.state = VT_DMA_RECORD_LIVE,
		};
		vt_dma_tag_hint_set(&b->hints, off / BOUNCE_SLOT_GRANULE, tag);
		/* Counted under the lock (vt_dma_count_locked), as every bounce byte count is. */
		if (dir & VT_DMA_TO_DEVICE)
			vt_dma_count_locked(&dma->stats.bounce_bytes_in, len);
	}
	vt_dma_unlock(&b->lock, locked);
	if (ret < 0)
		return ret;

	/*
	 * The bus address is not out yet, so the slot is ours to fill. A from-device slot is
	 * zeroed, not copied into: the device must see no driver data it was not given, and
	 * bytes it leaves unwritten must not carry an earlier mapping's data back at unmap.
	 */
	if (dir & VT_DMA_TO_DEVICE)
		memcpy(b->window + off, ptr, len);
	else
		memset(b->window + off, 0, len);
	*bus = b->window_gpa + off;
	return 0;
}

/* @bus as an offset into the window, or UINT64_MAX (never a slot) when outside it. */
static uint64_t window_offset(const struct dma_bounce *b, uint64_t bus)
{
	return bus >= b->window_gpa && bus - b->window_gpa < b->window_size ? bus - b->window_gpa
									    : UINT64_MAX;
}

static int find_live(struct dma_bounce *b, const char *op, uint64_t bus, size_t len,
		     enum vt_dma_dir dir, int exact, uint32_t *tag)
{
	return vt_dma_record_find(&b->dma, &b->slots, &b->records, window_offset(b, bus), op, bus,
				  len, dir, exact, tag);
}

static int bounce_unmap(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	struct dma_bounce *b = to_bounce(dma);
	uint32_t tag;

	bool locked = vt_dma_lock(&b->lock);
	/* Outside the window, the key names no slot, and no record there has that bus address. */
	tag = vt_dma_tag_hint_get(&b->hints, &b->records,
				  window_offset(b, bus) / BOUNCE_SLOT_GRANULE, bus, len, dir);
	int ret = tag ? 0 : find_live(b, "unmap", bus, len, dir, 1, &tag);
	struct vt_dma_record *rec = ret ? NULL : vt_dma_record_at(&b->records, tag);
	if (rec && (rec->flags & RECORD_COHERENT)) {
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(bounce): unmap of bus 0x%llx: coherent memory is freed with "
		       "vt_dma_free_coherent",
		       (unsigned long long)bus);
		rec = NULL;
		ret = -EINVAL;
	}
	/* Retiring: a second unmap or a sync now fails, while the slot is still ours to read. */
	if (rec) {
		rec->state = VT_DMA_RECORD_RETIRING;
		if (dir & VT_DMA_FROM_DEVICE)
			vt_dma_count_locked(&dma->stats.bounce_bytes_out, len);
	}
	vt_dma_unlock(&b->lock, locked);
	if (!rec)
		return ret;

	if (dir & VT_DMA_FROM_DEVICE)
		memcpy(rec->cpu, b->window + rec->bus_block, len);
	locked = vt_dma_lock(&b->lock);
	release_slot(b, tag);
	vt_dma_unlock(&b->lock, locked);
	return 0;
}

/* Copies [bus, bus + len) of a live mapping in (to_device) or out, if its direction says so. */
static int bounce_sync(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir,
		       int to_device)
{
	struct dma_bounce *b = to_bounce(dma);
	const char *op = to_device ? "sync_for_device" : "sync_for_cpu";
	uint32_t tag;

	bool locked = vt_dma_lock(&b->lock);
	int ret = find_live(b, op, bus, len, dir, 0, &tag);
	struct vt_dma_record rec;
	bool copy_in = false, copy_out = false;
	if (ret == 0) {
		rec = *vt_dma_record_at(&b->records, tag);
		bool coherent = rec.flags & RECORD_COHERENT;
		copy_in = !coherent && to_device && (dir & VT_DMA_TO_DEVICE);
		copy_out = !coherent && !to_device && (dir & VT_DMA_FROM_DEVICE);
		if (copy_in)
			vt_dma_count_locked(&dma->stats.bounce_bytes_in, len);
		if (copy_out)
			vt_dma_count_locked(&dma->stats.bounce_bytes_out, len);
	}
	vt_dma_unlock(&b->lock, locked);
	if (ret)
		return ret;

	uint8_t *slot = b->window + rec.bus_block + (bus - rec.bus);
	uint8_t *cpu = (uint8_t *)rec.cpu + (bus - rec.bus);
	if (copy_in)
		memcpy(slot, cpu, len);
	else if (copy_out)
		memcpy(cpu, slot, len);
	return 0;
}

static int bounce_sync_for_device(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	return bounce_sync(dma, bus, len, dir, 1);
}

static int bounce_sync_for_cpu(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	return bounce_sync(dma, bus, len, dir, 0);
}

/* Coherent memory lives in the window itself: both sides use the same bytes, nothing copies. */
static int bounce_alloc_coherent(struct vt_dma *dma, size_t size, void **cpu, uint64_t *bus)
{
	struct dma_bounce *b = to_bounce(dma);
	uint32_t tag;
	uint64_t off;

	bool locked = vt_dma_lock(&b->lock);
	int ret = reserve_slot(b, size, VT_DMA_COHERENT_ALIGN, &tag, &off);
	if (ret == 0)
		*vt_dma_record_at(&b->records, tag) = (struct vt_dma_record){
			.cpu = b->window + off,
			.len = size,
			.bus = b->window_gpa + off,
			.bus_block = off,
			.bus_size = size,
			.dir = VT_DMA_BIDIRECTIONAL,
			.state = VT_DMA_RECORD_LIVE,
			.flags = RECORD_COHERENT,
		};
	vt_dma_unlock(&b->lock, locked);
	if (ret < 0)
		return ret;
	memset(b->window + off, 0, size);
	*cpu = b->window + off;
	*bus = b->window_gpa + off;
	return 0;
}

static void bounce_free_coherent(struct vt_dma *dma, size_t size, void *cpu, uint64_t bus)
{
	struct dma_bounce *b = to_bounce(dma);
	uint32_t tag;

	bool locked = vt_dma_lock(&b->lock);
	int ret = find_live(b, "free_coherent", bus, size, VT_DMA_BIDIRECTIONAL, 1, &tag);
	struct vt_dma_record *rec = ret == 0 ? vt_dma_record_at(&b->records, tag) : NULL;
	if (rec && (rec->flags & RECORD_COHERENT) && rec->cpu == cpu) {
		vt_range_alloc_free(&b->slots, rec->bus_block, rec->bus_size);
		vt_dma_record_put(&b->records, tag);
	} else if (rec) {
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(bounce): free_coherent of %p at bus 0x%llx is not a coherent "
		       "allocation; ignored",
		       cpu, (unsigned long long)bus);
	}
	vt_dma_unlock(&b->lock, locked);
}

static int bounce_flush(struct vt_dma *dma)
{
	return 0;
}

static void bounce_batch_begin(struct vt_dma *dma)
{
	vt_dma_lock_batch_begin(&to_bounce(dma)->lock);
}

/* Nothing waits for a batch's end: slots are given back at each unmap. */
static int bounce_batch_end(struct vt_dma *dma)
{
	struct dma_bounce *b = to_bounce(dma);

	int closing = vt_dma_lock_batch_closing(&b->lock);
	if (closing < 0)
		return vt_dma_batch_end_unopened(dma);
	if (closing)
		vt_dma_lock_batch_release(&b->lock);
	return 0;
}

static void bounce_destroy(struct vt_dma *dma)
{
	struct dma_bounce *b = to_bounce(dma);

	if (b->records.live > b->idle.total)
		vt_log(dma->log, VT_LOG_WARN, "dma(bounce): freed with %u mappings still live",
		       b->records.live - b->idle.total);
	vt_dma_record_pool_destroy(&b->records);
	vt_range_alloc_destroy(&b->slots);
	if (b->window)
		vt_shm_release(dma->shm, b->window, b->window_size);
	vt_dma_lock_destroy(&b->lock);
	free(b);
}

static const struct vt_dma_ops bounce_ops = {
	.map = bounce_map,
	.unmap = bounce_unmap,
	.sync_for_device = bounce_sync_for_device,
	.sync_for_cpu = bounce_sync_for_cpu,
	.alloc_coherent = bounce_alloc_coherent,
	.free_coherent = bounce_free_coherent,
	.flush = bounce_flush,
	.batch_begin = bounce_batch_begin,
	.batch_end = bounce_batch_end,
	.destroy = bounce_destroy,
};

int vt_dma_bounce_create(const struct vt_dma_params *params, struct vt_dma **out)
{
	uint64_t size =
	    params->bounce_window_size ? params->bounce_window_size : BOUNCE_DEFAULT_WINDOW;

	if (size < BOUNCE_SLOT_GRANULE || size > SIZE_MAX) {
		vt_log(params->log, VT_LOG_ERROR, "dma(bounce): window of %llu bytes refused",
		       (unsigned long long)size);
		return -EINVAL;
	}
	struct dma_bounce *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	vt_dma_init_common(&b->dma, &bounce_ops, params);
	b->idle.classes = IDLE_GRANULES;
	b->idle.depth = IDLE_DEPTH;
	int ret = vt_dma_lock_init(&b->lock);
	if (ret) {
		free(b);
		return -ret;
	}

	void *window;
	ret = vt_shm_alloc(params->shm, size, VT_DMA_COHERENT_ALIGN, &window);
	if (ret < 0) {
		vt_log(params->log, VT_LOG_ERROR,
		       "dma(bounce): no room in shared memory for a %llu-byte window",
		       (unsigned long long)size);
		bounce_destroy(&b->dma);
		return ret;
	}
	/*
	 * The device can read all of the window, slot tails and free slots included: it starts
	 * with nothing in it, so that what it ever holds is what the device was given or wrote
	 * (shared memory hands back released blocks as they were).
	 */
	memset(window, 0, size);
	b->window = window;
	b->window_size = size;
	/* Memory from vt_shm_alloc is in one shared memory region by construction. */
	vt_shm_gpa(params->shm, window, size, &b->window_gpa);

	uint64_t slots = size / BOUNCE_SLOT_GRANULE;
	ret = vt_dma_record_pool_init(
	    &b->records, slots < VT_DMA_MAX_MAPPINGS ? (uint32_t)slots : VT_DMA_MAX_MAPPINGS);
	if (ret == 0)
		ret = vt_range_alloc_init(&b->slots, 0, size, BOUNCE_SLOT_GRANULE,
					  2 * VT_DMA_MAX_MAPPINGS);
	if (ret < 0) {
		vt_log(params->log, VT_LOG_ERROR, "dma(bounce): out of memory");
		bounce_destroy(&b->dma);
		return ret;
	}
	*out = &b->dma;
	return 0;
}
