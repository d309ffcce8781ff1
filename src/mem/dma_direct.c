/* SPDX-License-Identifier: MIT */
/*
 * Direct DMA, the mode of a device that does not use the platform (vt_dma_mode_for): the bus
 * address is the driver-physical address of the shared memory holding the buffer. Nothing is
 * remembered per mapping; unmap and sync only check that the address names shared memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mem/dma_impl.h"

static int direct_map(struct vt_dma *dma, void *ptr, size_t len, enum vt_dma_dir dir, uint64_t *bus)
{
	int ret = vt_shm_gpa(dma->shm, ptr, len, bus);
	if (ret < 0)
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(direct): map of [%p, +%zu) refused: not inside one shared memory "
		       "region, so the device cannot reach it",
		       ptr, len);
	return ret;
}

/* [bus, bus + len) lies inside one region's driver-physical range. */
static int in_shared_memory(const struct vt_shm *shm, uint64_t bus, size_t len)
{
	for (unsigned int i = 0; i < vt_shm_count(shm); i++) {
		const struct vt_shm_region *r = vt_shm_region(shm, i);
		if (bus >= r->gpa && bus - r->gpa < r->size && len <= r->size - (bus - r->gpa))
			return 1;
	}
	return 0;
}

static int direct_check(struct vt_dma *dma, const char *op, uint64_t bus, size_t len)
{
	if (in_shared_memory(dma->shm, bus, len))
		return 0;
	vt_log(dma->log, VT_LOG_ERROR,
	       "dma(direct): %s of 0x%llx len %zu refused: not a shared memory address", op,
	       (unsigned long long)bus, len);
	return -ENOENT;
}

static int direct_unmap(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	return direct_check(dma, "unmap", bus, len);
}

/* Shared memory is coherent between the two sides: syncing is only checking. */
static int direct_sync(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	return direct_check(dma, "sync", bus, len);
}

static int direct_alloc_coherent(struct vt_dma *dma, size_t size, void **cpu, uint64_t *bus)
{
	void *p;
	int ret = vt_shm_alloc(dma->shm, size, VT_DMA_COHERENT_ALIGN, &p);
	if (ret < 0) {
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(direct): no room in shared memory for %zu coherent bytes", size);
		return ret;
	}
	/* Memory from vt_shm_alloc is in shared memory by construction. */
	vt_shm_gpa(dma->shm, p, size, bus);
	memset(p, 0, size);
	*cpu = p;
	return 0;
}

static void direct_free_coherent(struct vt_dma *dma, size_t size, void *cpu, uint64_t bus)
{
	uint64_t gpa;

	if (vt_shm_gpa(dma->shm, cpu, size, &gpa) < 0 || gpa != bus) {
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(direct): free_coherent of %p (bus 0x%llx, %zu bytes) does not match an "
		       "allocation; ignored",
		       cpu, (unsigned long long)bus, size);
		return;
	}
	vt_shm_release(dma->shm, cpu, size);
}

static int direct_flush(struct vt_dma *dma)
{
	return 0;
}

static void direct_destroy(struct vt_dma *dma)
{
	free(dma);
}

static const struct vt_dma_ops direct_ops = {
	.map = direct_map,
	.unmap = direct_unmap,
	.sync_for_device = direct_sync,
	.sync_for_cpu = direct_sync,
	.alloc_coherent = direct_alloc_coherent,
	.free_coherent = direct_free_coherent,
	.flush = direct_flush,
	.destroy = direct_destroy,
};

int vt_dma_direct_create(const struct vt_dma_params *params, struct vt_dma **out)
{
	struct vt_dma *dma = calloc(1, sizeof(*dma));
	if (!dma)
		return -ENOMEM;
	vt_dma_init_common(dma, &direct_ops, params);
	/* Regions are never removed from a vt_shm: their translation holds for our lifetime. */
	for (unsigned int i = 0; i < vt_shm_count(params->shm); i++) {
		const struct vt_shm_region *r = vt_shm_region(params->shm, i);
		vt_dma_add_linear(dma, (uint64_t)(uintptr_t)r->hva, r->size, r->gpa);
	}
	*out = dma;
	return 0;
}
