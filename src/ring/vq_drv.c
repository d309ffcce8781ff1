/* SPDX-License-Identifier: MIT */
/*
 * The driver half's format-independent part: creation and ring allocation through the DMA API,
 * segment mapping, the broken latch, used-length checks, and dispatch to vq_split_drv.c or
 * vq_packed_drv.c on a flag cached at creation.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/spec/virtio_config.h>

#include "vq_impl.h"

#define VQ_DEFAULT_INDIRECT_MAX 32

int vq_drv_break(struct vt_vq_drv *vq, enum vt_vq_error error, const char *fmt, ...)
{
	if (vq->broken)
		return -EPROTO;
	vq->broken = true;
	vq->error = error;
	va_list ap;
	va_start(ap, fmt);
	vq_log_broken(vq->log, vq->name, error, fmt, ap);
	va_end(ap);
	return -EPROTO;
}

static void free_coherent(struct vt_vq_drv *vq, void *mem, size_t size, uint64_t bus)
{
	if (mem)
		vt_dma_free_coherent(vq->dma, size, mem, bus);
}

void vt_vq_drv_free(struct vt_vq_drv *vq)
{
	if (!vq)
		return;
	vq_drv_count_maps(vq);
	free_coherent(vq, vq->desc_mem, vq->desc_size, vq->desc_bus);
	free_coherent(vq, vq->driver_mem, vq->driver_size, vq->driver_bus);
	free_coherent(vq, vq->device_mem, vq->device_size, vq->device_bus);
	free_coherent(vq, vq->indirect_mem, vq->indirect_size, vq->indirect_bus);
	free(vq->shadow);
	free(vq->indirect_shadow);
	free(vq->buffers);
	free(vq->order);
	free(vq);
}

int vt_vq_drv_new(const struct vt_vq_drv_params *params, struct vt_vq_drv **out)
{
	bool packed = (params->features & VT_BIT(VIRTIO_F_RING_PACKED)) != 0;

	if (params->num == 0 || params->num > VIRTQ_SPLIT_MAX_SIZE || !params->dma)
		return -EINVAL;
	if (!packed && (params->num & (params->num - 1)))
		return -EINVAL;
	struct vt_vq_drv *vq = aligned_alloc(VQ_CACHELINE, sizeof(*vq));
	if (!vq)
		return -ENOMEM;
	memset(vq, 0, sizeof(*vq));
	vq->packed = packed;
	vq->event_idx = (params->features & VT_BIT(VIRTIO_F_EVENT_IDX)) != 0;
	vq->indirect = (params->features & VT_BIT(VIRTIO_F_INDIRECT_DESC)) != 0;
	vq->in_order = (params->features & VT_BIT(VIRTIO_F_IN_ORDER)) != 0;
	vq->barriers = vt_barrier_kind(params->features);
	vq->num = params->num;
	vq->indirect_max = params->indirect_max ? params->indirect_max : VQ_DEFAULT_INDIRECT_MAX;
	if (vq->indirect_max > vq->num)
		vq->indirect_max = vq->num;
	vq->dma = params->dma;
	vq->need_unmap = vt_dma_need_unmap(params->dma);
	vq->prefetch_for_write = cpu_prefetches_for_write();
	vq->name = params->name ? params->name : "vq";
	vq->log = params->log;
	vq->cb_enabled = true;

	int ret = 0;
	vq->shadow = vq_calloc_lines(vq->num, sizeof(vq->shadow[0]));
	vq->buffers = vq_calloc_lines(vq->num, sizeof(vq->buffers[0]));
	vq->order = vq_order_ring(vq->num, &vq->order_mask);
	if (!vq->shadow || !vq->buffers || !vq->order)
		ret = -ENOMEM;
	if (ret == 0 && vq->indirect) {
		/* One table per buffer: a buffer never waits for a table. */
		vq->indirect_size = (size_t)vq->num * vq->indirect_max * sizeof(struct virtq_desc);
		vq->indirect_shadow =
		    calloc((size_t)vq->num * vq->indirect_max, sizeof(vq->indirect_shadow[0]));
		ret = vq->indirect_shadow
			  ? vt_dma_alloc_coherent(vq->dma, vq->indirect_size, &vq->indirect_mem,
						  &vq->indirect_bus)
			  : -ENOMEM;
	}
	if (ret == 0)
		ret = packed ? vq_packed_drv_init(vq) : vq_split_drv_init(vq);
	if (ret < 0) {
		vt_vq_drv_free(vq);
		return ret;
	}
	*out = vq;
	return 0;
}

void vt_vq_drv_addrs(const struct vt_vq_drv *vq, uint64_t *desc_addr, uint64_t *driver_addr,
		     uint64_t *device_addr)
{
	*desc_addr = vq->desc_bus;
	*driver_addr = vq->driver_bus;
	*device_addr = vq->device_bus;
}

void vq_drv_unmap_segments(struct vt_vq_drv *vq, const struct vq_desc_shadow *shadow,
			   unsigned int count)
{
	if (!vq->need_unmap)
		return;
	unsigned int unmapped = 0;
	for (unsigned int i = 0; i < count; i++)
		unmapped += vq_drv_unmap_one(vq->dma, &shadow[i]);
	if (unmapped)
		vt_dma_count(&vq->dma->stats.unmaps, unmapped);
}

/*
 * Maps @sg[0..count) into @shadow, all in one direction, in bursts (the modes that publish a
 * translation per map then publish a run of segments at once): how many were mapped, the first
 * ones; on fewer, *@error says why.
 */
static unsigned int map_run(struct vt_vq_drv *vq, const struct iovec *sg, unsigned int count,
			    bool writable, struct vq_desc_shadow *shadow, int *error)
{
	uint64_t bus[VQ_DRV_MAP_BURST];
	unsigned int done = 0;

	while (done < count) {
		unsigned int n = count - done < VQ_DRV_MAP_BURST ? count - done : VQ_DRV_MAP_BURST;
		unsigned int mapped =
		    vt_dma_map_burst(vq->dma, &sg[done], n,
				     writable ? VT_DMA_FROM_DEVICE : VT_DMA_TO_DEVICE, bus, error);
		for (unsigned int i = 0; i < mapped; i++) {
			struct vq_desc_shadow *sh = &shadow[done + i];
			sh->bus = bus[i];
			sh->len = (uint32_t)sg[done + i].iov_len;
			sh->flags = writable ? VIRTQ_DESC_F_WRITE : 0;
		}
		done += mapped;
		if (mapped < n)
			break;
	}
	return done;
}

int vq_drv_map_segments(struct vt_vq_drv *vq, const struct iovec *sg, unsigned int nreadable,
			unsigned int nwritable, struct vq_desc_shadow *shadow)
{
	unsigned int count = nreadable + nwritable;

	/* The linear modes map inline, segment by segment. */
	if (vq->dma->linear_count) {
		for (unsigned int i = 0; i < count; i++) {
			int ret = vq_drv_map_one(vq, &sg[i], i >= nreadable, &shadow[i]);
			if (ret < 0) {
				vq_drv_unmap_segments(vq, shadow, i);
				return ret;
			}
		}
		return 0;
	}
	/* The others map each direction's run together. */
	int error = 0;
	unsigned int mapped = map_run(vq, sg, nreadable, false, shadow, &error);
	if (mapped == nreadable)
		mapped += map_run(vq, sg + nreadable, nwritable, true, shadow + nreadable, &error);
	if (mapped < count) {
		vq_drv_unmap_segments(vq, shadow, mapped);
		return error;
	}
	return 0;
}

uint32_t vq_drv_clamp_len(struct vt_vq_drv *vq, uint16_t id, uint32_t len)
{
	uint32_t max = vq->buffers[id].writable_bytes;
	/* Reported, not fatal: the caller must never believe more bytes arrived than fit. */
	if (vq->stats.used_len_clamped++ == 0)
		vt_log(vq->log, VT_LOG_WARN,
		       "%s: device reported %u bytes written into a buffer of %u writable bytes",
		       vq->name, len, max);
	return max;
}

static int check_segments(const struct iovec *sg, unsigned int count, void *token)
{
	if (count == 0 || !token)
		return -EINVAL;
	for (unsigned int i = 0; i < count; i++)
		if (!vq_drv_seg_len_ok(&sg[i]))
			return -EINVAL;
	return 0;
}

/* @n buffers were posted (by one add or a burst) / collected (by gets or a burst). */
static void count_posted(struct vt_vq_drv *vq, unsigned int n)
{
	vq->stats.added += n;
	vq->outstanding += n;
	vq->added_since_kick += n;
}

static void count_collected(struct vt_vq_drv *vq, unsigned int n)
{
	vq->stats.used += n;
	vq->outstanding -= n;
}

int vt_vq_drv_add(struct vt_vq_drv *vq, const struct iovec *sg, unsigned int nreadable,
		  unsigned int nwritable, void *token)
{
	if (vq->broken)
		return -EPROTO;
	int ret = check_segments(sg, nreadable + nwritable, token);
	if (ret < 0)
		return ret;
	ret = vq->packed ? vq_packed_drv_add(vq, sg, nreadable, nwritable, token)
			 : vq_split_drv_add(vq, sg, nreadable, nwritable, token);
	if (ret == 0)
		count_posted(vq, 1);
	return ret;
}

int vt_vq_drv_add_burst(struct vt_vq_drv *vq, const struct iovec *bufs, unsigned int n,
			bool writable, void *const *tokens)
{
	if (vq->broken)
		return -EPROTO;
	if (n == 0)
		return 0;
	/*
	 * A buffer vt_vq_drv_add would refuse ends the burst before it (the formats check each
	 * as they take it); the first is checked here, so that it is refused as such even when
	 * the ring is full.
	 */
	if (!vq_drv_burst_buf_ok(&bufs[0], tokens[0]))
		return -EINVAL;
	/*
	 * One DMA batch per burst (one lock for its maps, in the modes that have one; the DMA
	 * API decides which). Nothing is unmapped in it, so its end has nothing to publish.
	 */
	vt_dma_batch_begin(vq->dma);
	int ret = vq->packed ? vq_packed_drv_add_burst(vq, bufs, n, writable, tokens)
			     : vq_split_drv_add_burst(vq, bufs, n, writable, tokens);
	vt_dma_batch_end(vq->dma);
	if (ret == 0)
		return -ENOSPC;
	if (ret > 0)
		count_posted(vq, (unsigned int)ret);
	return ret;
}

bool vt_vq_drv_kick_prepare(struct vt_vq_drv *vq)
{
	if (vq->broken || vq->added_since_kick == 0)
		return false;
	bool kick = vq->packed ? vq_packed_drv_kick_prepare(vq) : vq_split_drv_kick_prepare(vq);
	vq->added_since_kick = 0;
	vq_drv_count_maps(vq);
	/* Only now may the device return them: anything posted later is not its to name. */
	vq->kicked_seq = vq->add_seq;
	if (kick)
		vq->stats.kicks++;
	else
		vq->stats.kicks_suppressed++;
	return kick;
}

int vt_vq_drv_get(struct vt_vq_drv *vq, void **token, uint32_t *len)
{
	if (vq->broken)
		return -EPROTO;
	/*
	 * A burst of one, so every rule is checked by the same code either way; without a DMA
	 * batch, as one unmap is published at once anyway.
	 */
	int ret = vq->packed ? vq_packed_drv_get_burst(vq, token, len, 1)
			     : vq_split_drv_get_burst(vq, token, len, 1);
	if (ret > 0)
		count_collected(vq, 1);
	return ret == 1 ? 0 : ret == 0 ? -EAGAIN : ret;
}

void vt_vq_drv_collect_begin(struct vt_vq_drv *vq)
{
	vt_dma_batch_begin(vq->dma);
}

int vt_vq_drv_collect_end(struct vt_vq_drv *vq)
{
	return vt_dma_batch_end(vq->dma);
}

int vt_vq_drv_get_burst(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max)
{
	if (vq->broken)
		return -EPROTO;
	vt_dma_batch_begin(vq->dma);
	int ret = vq->packed ? vq_packed_drv_get_burst(vq, tokens, lens, max)
			     : vq_split_drv_get_burst(vq, tokens, lens, max);
	/*
	 * The batch ends before the tokens reach the caller: in strict mode the device can no
	 * longer reach any of their buffers by then. A failed invalidation was logged by the DMA
	 * API, which keeps those IOVAs reserved; the buffers were used all the same.
	 */
	vt_dma_batch_end(vq->dma);
	if (ret > 0)
		count_collected(vq, (unsigned int)ret);
	return ret;
}

void vt_vq_drv_disable_cb(struct vt_vq_drv *vq)
{
	vq->cb_enabled = false;
	if (vq->packed)
		vq_packed_drv_disable_cb(vq);
	else
		vq_split_drv_disable_cb(vq);
}

bool vt_vq_drv_enable_cb(struct vt_vq_drv *vq)
{
	vq->cb_enabled = true;
	if (vq->broken)
		return false;
	return vq->packed ? vq_packed_drv_enable_cb(vq) : vq_split_drv_enable_cb(vq);
}

void *vt_vq_drv_detach_unused(struct vt_vq_drv *vq)
{
	void *token = vq->packed ? vq_packed_drv_detach_unused(vq) : vq_split_drv_detach_unused(vq);
	if (token)
		vq->outstanding--;
	return token;
}

struct seq_id {
	uint64_t seq;
	uint16_t id;
};

static int by_seq(const void *a, const void *b)
{
	uint64_t x = ((const struct seq_id *)a)->seq, y = ((const struct seq_id *)b)->seq;
	return x < y ? -1 : x > y;
}

int vt_vq_drv_rebase(struct vt_vq_drv *vq, uint32_t *base)
{
	if (vq->broken)
		return -EPROTO;
	struct seq_id *order = malloc(((size_t)vq->outstanding + 1) * sizeof(*order));
	uint16_t *ids = malloc(((size_t)vq->outstanding + 1) * sizeof(*ids));
	int ret = order && ids ? 0 : -ENOMEM;
	unsigned int count = 0;
	for (unsigned int id = 0; ret == 0 && id < vq->num; id++) {
		if (!vq->buffers[id].token)
			continue;
		if (count == vq->outstanding) {
			ret =
			    vq_drv_break(vq, VT_VQ_ERR_USED_ID, "rebase: more buffers than posted");
			break;
		}
		order[count++] = (struct seq_id){ .seq = vq->buffers[id].seq, .id = (uint16_t)id };
	}
	if (ret == 0) {
		qsort(order, count, sizeof(*order), by_seq);
		for (unsigned int i = 0; i < count; i++)
			ids[i] = order[i].id;
		ret = vq->packed ? vq_packed_drv_rebase(vq, ids, count, base)
				 : vq_split_drv_rebase(vq, ids, count, base);
	}
	if (ret == 0) {
		/* Everything posted is now the device's: it may name any of it. */
		vq->added_since_kick = 0;
		vq->kicked_seq = vq->add_seq;
		vq_drv_count_maps(vq);
	}
	free(order);
	free(ids);
	return ret;
}

unsigned int vt_vq_drv_free_descs(const struct vt_vq_drv *vq)
{
	return vq->num_free;
}

bool vt_vq_drv_is_broken(const struct vt_vq_drv *vq)
{
	return vq->broken;
}

enum vt_vq_error vt_vq_drv_error(const struct vt_vq_drv *vq)
{
	return vq->error;
}

void vt_vq_drv_get_stats(const struct vt_vq_drv *vq, struct vt_vq_drv_stats *stats)
{
	*stats = vq->stats;
}
