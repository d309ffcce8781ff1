/* SPDX-License-Identifier: MIT */
/*
 * The DMA API's front: mode names, the one place the mode follows from negotiation, argument
 * checks common to every mode, dispatch through the mode's ops table, the all-or-nothing
 * scatter-gather mapping and the statistics.
 */
#include <errno.h>
#include <stdlib.h>
#include <strings.h>

#include <virtue/platform.h>

#include "mem/dma_impl.h"

static const struct {
	enum vt_dma_mode mode;
	const char *name; /* what vt_dma_mode_name gives */
	const char *short_name;
} mode_names[] = {
	{ VT_DMA_DIRECT, "direct", "direct" },
	{ VT_DMA_IOMMU_STRICT, "iommu-strict", "strict" },
	{ VT_DMA_IOMMU_LAZY, "iommu-lazy", "lazy" },
	{ VT_DMA_IOMMU_PREMAPPED, "iommu-premapped", "premapped" },
	{ VT_DMA_BOUNCE, "bounce", "bounce" },
};

#define MODE_COUNT (sizeof(mode_names) / sizeof(mode_names[0]))

const char *vt_dma_mode_name(enum vt_dma_mode mode)
{
	for (size_t i = 0; i < MODE_COUNT; i++)
		if (mode_names[i].mode == mode)
			return mode_names[i].name;
	return "unknown";
}

int vt_dma_mode_parse(const char *name, enum vt_dma_mode *mode)
{
	if (!name)
		return -EINVAL;
	for (size_t i = 0; i < MODE_COUNT; i++) {
		if (strcasecmp(name, mode_names[i].name) == 0 ||
		    strcasecmp(name, mode_names[i].short_name) == 0) {
			*mode = mode_names[i].mode;
			return 0;
		}
	}
	return -EINVAL;
}

enum vt_dma_mode vt_dma_mode_for(uint64_t negotiated, enum vt_dma_mode platform_mode)
{
	return vt_uses_platform_dma(negotiated) ? platform_mode : VT_DMA_DIRECT;
}

static int known_mode(enum vt_dma_mode mode)
{
	return mode >= VT_DMA_DIRECT && mode <= VT_DMA_BOUNCE;
}

void vt_dma_init_common(struct vt_dma *dma, const struct vt_dma_ops *ops,
			const struct vt_dma_params *params)
{
	dma->ops = ops;
	dma->mode = params->mode;
	dma->shm = params->shm;
	dma->log = params->log;
}

int vt_dma_new(const struct vt_dma_params *params, struct vt_dma **out)
{
	if (!params || !out)
		return -EINVAL;
	const struct vt_log *log = params->log;
	if (!known_mode(params->mode)) {
		vt_log(log, VT_LOG_ERROR, "dma: unknown mode %d", (int)params->mode);
		return -EINVAL;
	}
	const char *name = vt_dma_mode_name(params->mode);
	if (!params->shm) {
		vt_log(log, VT_LOG_ERROR, "dma(%s): no shared memory given", name);
		return -EINVAL;
	}
	if (params->page_table) {
		/* Asked for and not served is an error, whatever the mode. */
		if (params->mode != VT_DMA_IOMMU_STRICT && params->mode != VT_DMA_IOMMU_LAZY) {
			vt_log(log, VT_LOG_ERROR,
			       "dma(%s): a page table serves the strict and lazy modes only", name);
			return -EINVAL;
		}
		if (params->iotlb_ops) {
			vt_log(log, VT_LOG_ERROR,
			       "dma(%s): translations go to a page table or to iotlb_ops, not both",
			       name);
			return -EINVAL;
		}
		return vt_dma_iommu_pt_create(params, out);
	}
	switch (params->mode) {
	case VT_DMA_DIRECT:
		return vt_dma_direct_create(params, out);
	case VT_DMA_IOMMU_STRICT:
	case VT_DMA_IOMMU_LAZY:
	case VT_DMA_IOMMU_PREMAPPED:
		if (!params->iotlb_ops || !params->iotlb_ops->update ||
		    !params->iotlb_ops->invalidate) {
			vt_log(log, VT_LOG_ERROR,
			       "dma(%s): an IOMMU mode needs iotlb_ops with update and invalidate",
			       name);
			return -EINVAL;
		}
		if (!params->iotlb_ops->invalidate_nowait != !params->iotlb_ops->sync ||
		    !params->iotlb_ops->batch_begin != !params->iotlb_ops->batch_end) {
			vt_log(
			    log, VT_LOG_ERROR,
			    "dma(%s): iotlb_ops needs invalidate_nowait with sync and batch_begin "
			    "with batch_end, each pair whole or not at all",
			    name);
			return -EINVAL;
		}
		return vt_dma_iommu_create(params, out);
	case VT_DMA_BOUNCE:
		return vt_dma_bounce_create(params, out);
	}
	return -EINVAL;
}

int vt_dma_device_as(struct vt_dma *dma, struct vt_as *as)
{
	if (!dma || !as || !dma->ops->device_as)
		return -EOPNOTSUPP;
	*as = dma->ops->device_as(dma);
	return 0;
}

void vt_dma_free(struct vt_dma *dma)
{
	if (dma)
		dma->ops->destroy(dma);
}

enum vt_dma_mode vt_dma_mode(const struct vt_dma *dma)
{
	return dma->mode;
}

bool vt_dma_need_unmap(const struct vt_dma *dma)
{
	/* Strict and lazy invalidate, bounce copies back; the others have nothing to undo. */
	return dma->mode == VT_DMA_IOMMU_STRICT || dma->mode == VT_DMA_IOMMU_LAZY ||
	       dma->mode == VT_DMA_BOUNCE;
}

static int valid_dir(enum vt_dma_dir dir)
{
	return dir == VT_DMA_TO_DEVICE || dir == VT_DMA_FROM_DEVICE || dir == VT_DMA_BIDIRECTIONAL;
}

/* Checks shared by map, unmap and sync: a non-empty, non-wrapping range and a real direction. */
static int check_range(const struct vt_dma *dma, const char *op, uint64_t addr, size_t len,
		       enum vt_dma_dir dir)
{
	if (len == 0 || !valid_dir(dir) || addr + (len - 1) < addr) {
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(%s): %s of 0x%llx len %zu dir %d refused: empty, wrapping or bad "
		       "direction",
		       vt_dma_mode_name(dma->mode), op, (unsigned long long)addr, len, (int)dir);
		return -EINVAL;
	}
	return 0;
}

int vt_dma_map_uncounted(struct vt_dma *dma, void *ptr, size_t len, enum vt_dma_dir dir,
			 uint64_t *bus)
{
	/* A window hit is what the mode's map would answer (and NULL is in no window). */
	if (len && valid_dir(dir) && vt_dma_map_linear(dma, ptr, len, bus))
		return 0;
	int ret = check_range(dma, "map", (uint64_t)(uintptr_t)ptr, len, dir);
	if (ret == 0 && !ptr) {
		vt_log(dma->log, VT_LOG_ERROR, "dma(%s): map of a NULL pointer",
		       vt_dma_mode_name(dma->mode));
		ret = -EINVAL;
	}
	if (ret == 0)
		ret = dma->ops->map(dma, ptr, len, dir, bus);
	if (ret < 0)
		vt_dma_count(&dma->stats.map_failures, 1);
	return ret;
}

int vt_dma_map(struct vt_dma *dma, void *ptr, size_t len, enum vt_dma_dir dir, uint64_t *bus)
{
	int ret = vt_dma_map_uncounted(dma, ptr, len, dir, bus);
	if (ret == 0)
		vt_dma_count(&dma->stats.maps, 1);
	return ret;
}

/*
 * How many of the @count buffers from the first on pass map's checks (the mode's map_burst
 * takes them checked); the next one, if any, is refused through vt_dma_map_uncounted's path.
 */
static unsigned int checked_prefix(const struct iovec *bufs, unsigned int count)
{
	unsigned int i;

	for (i = 0; i < count; i++) {
		uint64_t p = (uint64_t)(uintptr_t)bufs[i].iov_base;
		size_t len = bufs[i].iov_len;
		if (len == 0 || p == 0 || p + (len - 1) < p)
			break;
	}
	return i;
}

unsigned int vt_dma_map_burst_uncounted(struct vt_dma *dma, const struct iovec *bufs,
					unsigned int count, enum vt_dma_dir dir, uint64_t *bus,
					int *error)
{
	unsigned int done = 0, ok = 0;

	if (dma->ops->map_burst && valid_dir(dir)) {
		ok = checked_prefix(bufs, count);
		if (ok) {
			int ret = 0;
			done = dma->ops->map_burst(dma, bufs, ok, dir, bus, &ret);
			if (done < ok) {
				vt_dma_count(&dma->stats.map_failures, 1);
				*error = ret;
				return done;
			}
		}
	}
	/* The rest one by one: a mode without map_burst, or the buffer the checks stopped at. */
	for (; done < count; done++) {
		int ret = vt_dma_map_uncounted(dma, bufs[done].iov_base, bufs[done].iov_len, dir,
					       &bus[done]);
		if (ret < 0) {
			*error = ret;
			break;
		}
	}
	return done;
}

unsigned int vt_dma_map_burst(struct vt_dma *dma, const struct iovec *bufs, unsigned int count,
			      enum vt_dma_dir dir, uint64_t *bus, int *error)
{
	unsigned int done = vt_dma_map_burst_uncounted(dma, bufs, count, dir, bus, error);
	if (done)
		vt_dma_count(&dma->stats.maps, done);
	return done;
}

int vt_dma_unmap_uncounted(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	int ret = check_range(dma, "unmap", bus, len, dir);
	return ret < 0 ? ret : dma->ops->unmap(dma, bus, len, dir);
}

int vt_dma_unmap(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	int ret = vt_dma_unmap_uncounted(dma, bus, len, dir);
	if (ret == 0)
		vt_dma_count(&dma->stats.unmaps, 1);
	return ret;
}

int vt_dma_sync_for_device(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	int ret = check_range(dma, "sync_for_device", bus, len, dir);
	return ret < 0 ? ret : dma->ops->sync_for_device(dma, bus, len, dir);
}

int vt_dma_sync_for_cpu(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	int ret = check_range(dma, "sync_for_cpu", bus, len, dir);
	return ret < 0 ? ret : dma->ops->sync_for_cpu(dma, bus, len, dir);
}

int vt_dma_map_sg(struct vt_dma *dma, const struct iovec *sg, unsigned int count,
		  enum vt_dma_dir dir, uint64_t *bus)
{
	for (unsigned int i = 0; i < count; i++) {
		int ret = vt_dma_map(dma, sg[i].iov_base, sg[i].iov_len, dir, &bus[i]);
		if (ret == 0)
			continue;
		while (i-- > 0)
			vt_dma_unmap(dma, bus[i], sg[i].iov_len, dir);
		/*
		 * The caller never saw these bus addresses, so the device has no business with
		 * them: a lazy mode publishes their invalidations now rather than leaving them
		 * reachable after a call that mapped nothing.
		 */
		dma->ops->flush(dma);
		return ret;
	}
	return 0;
}

void vt_dma_unmap_sg(struct vt_dma *dma, const struct iovec *sg, unsigned int count,
		     enum vt_dma_dir dir, const uint64_t *bus)
{
	for (unsigned int i = 0; i < count; i++)
		vt_dma_unmap(dma, bus[i], sg[i].iov_len, dir);
}

int vt_dma_alloc_coherent(struct vt_dma *dma, size_t size, void **cpu, uint64_t *bus)
{
	if (size == 0 || !cpu || !bus) {
		vt_log(dma->log, VT_LOG_ERROR, "dma(%s): coherent allocation of %zu bytes refused",
		       vt_dma_mode_name(dma->mode), size);
		return -EINVAL;
	}
	return dma->ops->alloc_coherent(dma, size, cpu, bus);
}

void vt_dma_free_coherent(struct vt_dma *dma, size_t size, void *cpu, uint64_t bus)
{
	if (size == 0 || !cpu)
		return;
	dma->ops->free_coherent(dma, size, cpu, bus);
}

int vt_dma_flush(struct vt_dma *dma)
{
	return dma->ops->flush(dma);
}

void vt_dma_batch_begin(struct vt_dma *dma)
{
	if (dma->ops->batch_begin)
		dma->ops->batch_begin(dma);
}

int vt_dma_batch_end_unopened(struct vt_dma *dma)
{
	vt_log(dma->log, VT_LOG_ERROR,
	       "dma(%s): batch end without a batch of this thread open; ignored",
	       vt_dma_mode_name(dma->mode));
	return -EINVAL;
}

int vt_dma_batch_end(struct vt_dma *dma)
{
	return dma->ops->batch_end ? dma->ops->batch_end(dma) : 0;
}

void vt_dma_get_stats(const struct vt_dma *dma, struct vt_dma_stats *stats)
{
	struct vt_dma_counters *c = (struct vt_dma_counters *)&dma->stats;

	*stats = (struct vt_dma_stats){
		.maps = atomic_load_explicit(&c->maps, memory_order_relaxed),
		.unmaps = atomic_load_explicit(&c->unmaps, memory_order_relaxed),
		.iotlb_updates = atomic_load_explicit(&c->iotlb_updates, memory_order_relaxed),
		.iotlb_invalidations =
		    atomic_load_explicit(&c->iotlb_invalidations, memory_order_relaxed),
		.flushes = atomic_load_explicit(&c->flushes, memory_order_relaxed),
		.bounce_bytes_in = atomic_load_explicit(&c->bounce_bytes_in, memory_order_relaxed),
		.bounce_bytes_out =
		    atomic_load_explicit(&c->bounce_bytes_out, memory_order_relaxed),
		.map_failures = atomic_load_explicit(&c->map_failures, memory_order_relaxed),
	};
}

int vt_dma_record_pool_init(struct vt_dma_record_pool *pool, uint32_t capacity)
{
	*pool = (struct vt_dma_record_pool){ 0 };
	/* calloc: records are touched only as far as the pool is used. */
	pool->records = calloc((size_t)capacity + 1, sizeof(*pool->records));
	if (!pool->records)
		return -ENOMEM;
	pool->capacity = capacity;
	return 0;
}

void vt_dma_record_pool_destroy(struct vt_dma_record_pool *pool)
{
	free(pool->records);
	*pool = (struct vt_dma_record_pool){ 0 };
}

uint32_t vt_dma_record_get(struct vt_dma_record_pool *pool)
{
	uint32_t i = pool->unused;

	if (i != 0)
		pool->unused = pool->records[i].next_unused;
	else if (pool->high_water < pool->capacity)
		i = ++pool->high_water;
	else
		return 0;
	pool->records[i] = (struct vt_dma_record){ 0 };
	pool->live++;
	return i;
}

void vt_dma_record_put(struct vt_dma_record_pool *pool, uint32_t index)
{
	struct vt_dma_record *rec = &pool->records[index];

	rec->state = VT_DMA_RECORD_UNUSED;
	rec->next_unused = pool->unused;
	pool->unused = index;
	pool->live--;
}

void vt_dma_idle_drain(struct vt_dma_idle *idle, struct vt_dma_record_pool *pool,
		       struct vt_range_alloc *ra)
{
	for (unsigned int c = 0; c < idle->classes; c++) {
		while (idle->head[c]) {
			uint32_t tag = idle->head[c];
			struct vt_dma_record *rec = vt_dma_record_at(pool, tag);
			idle->head[c] = rec->next_unused;
			vt_range_alloc_free(ra, rec->bus_block, rec->bus_size);
			vt_dma_record_put(pool, tag);
		}
		idle->count[c] = 0;
	}
	idle->total = 0;
}

int vt_dma_record_find(const struct vt_dma *dma, const struct vt_range_alloc *ra,
		       struct vt_dma_record_pool *pool, uint64_t block_addr, const char *op,
		       uint64_t bus, size_t len, enum vt_dma_dir dir, int exact, uint32_t *tag)
{
	struct vt_range_block_info info;
	const struct vt_dma_record *rec = NULL;

	if (vt_range_alloc_find(ra, block_addr, &info) == 0 && info.tag != 0)
		rec = vt_dma_record_at(pool, info.tag);
	if (rec && rec->state == VT_DMA_RECORD_LIVE &&
	    (exact ? rec->bus == bus
		   : bus >= rec->bus && bus - rec->bus < rec->len &&
			 len <= rec->len - (bus - rec->bus))) {
		if ((!exact || rec->len == len) && rec->dir == dir) {
			*tag = info.tag;
			return 0;
		}
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(%s): %s of bus 0x%llx len %zu dir %d does not match its mapping (len "
		       "%llu dir %d)",
		       vt_dma_mode_name(dma->mode), op, (unsigned long long)bus, len, (int)dir,
		       (unsigned long long)rec->len, rec->dir);
		return -EINVAL;
	}
	vt_log(dma->log, VT_LOG_ERROR, "dma(%s): %s of bus 0x%llx len %zu: not mapped",
	       vt_dma_mode_name(dma->mode), op, (unsigned long long)bus, len);
	return -ENOENT;
}
