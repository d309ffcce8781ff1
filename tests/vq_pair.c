/* SPDX-License-Identifier: MIT */
/* A driver half and a device half of one virtqueue in one process (vq_pair.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/spec/virtio_config.h>

#include "vq_pair.h"

#define SHM_SIZE (1u << 20)
#define GPA_BASE 0x100000000ull
#define PAYLOAD	 VQ_PAIR_PAYLOAD

int vq_pair_dev_start(struct vq_pair *r, uint32_t base)
{
	struct vt_vq_dev_params p = {
		.num = r->qsize,
		.features = r->features,
		.as = vt_memtable_as(r->table),
		.next_avail = (uint16_t)base,
		.name = "pair-device",
		.log = &r->log,
		.inflight = r->inflight,
	};
	vt_vq_drv_addrs(r->drv, &p.desc_addr, &p.driver_addr, &p.device_addr);
	return vt_vq_dev_new(&p, &r->dev);
}

int vq_pair_init(struct vq_pair *r, unsigned int qsize, bool packed, bool indirect, bool inflight)
{
	memset(r, 0, sizeof(*r));
	r->qsize = qsize;
	r->packed = packed;
	r->log = (struct vt_log){ .max_level = VT_LOG_ERROR };
	r->features = VT_BIT(VIRTIO_F_VERSION_1) | (packed ? VT_BIT(VIRTIO_F_RING_PACKED) : 0) |
		      (indirect ? VT_BIT(VIRTIO_F_INDIRECT_DESC) : 0);
	int ret = vt_shm_new(&r->shm);
	if (ret == 0)
		ret = vt_shm_add_memfd(r->shm, SHM_SIZE, GPA_BASE, &r->region);
	if (ret < 0)
		return ret;
	r->table = vt_memtable_new(NULL);
	if (!r->table)
		return -ENOMEM;
	ret = vt_memtable_add_shm(r->table, r->shm);
	if (ret < 0)
		return ret;
	struct vt_dma_params dp = { .mode = VT_DMA_DIRECT, .shm = r->shm, .log = &r->log };
	ret = vt_dma_new(&dp, &r->dma);
	if (ret < 0)
		return ret;
	struct vt_vq_drv_params drp = { .num = qsize,
					.features = r->features,
					.dma = r->dma,
					.name = "pair-driver",
					.log = &r->log };
	ret = vt_vq_drv_new(&drp, &r->drv);
	if (ret < 0)
		return ret;
	/* Buffers in the top half of the region, away from the rings the DMA API allocated. */
	for (unsigned int i = 0; i < VQ_PAIR_BUFS; i++)
		r->bufs[i].mem = (uint8_t *)r->region->hva + SHM_SIZE / 2 + (size_t)i * 2 * PAYLOAD;
	if (inflight) {
		r->inflight = calloc(1, vt_vq_inflight_size(qsize));
		if (!r->inflight)
			return -ENOMEM;
	}
	return vq_pair_dev_start(r, packed ? VT_VQ_PACKED_START : 0);
}

void vq_pair_destroy(struct vq_pair *r)
{
	vt_vq_dev_free(r->dev);
	if (r->drv) {
		while (vt_vq_drv_detach_unused(r->drv))
			;
		vt_vq_drv_free(r->drv);
	}
	if (r->dma)
		vt_dma_free(r->dma);
	if (r->table)
		vt_memtable_free(r->table);
	if (r->shm)
		vt_shm_free(r->shm);
	free(r->inflight);
}

void *vq_pair_hva(struct vq_pair *r, uint64_t gpa)
{
	return (uint8_t *)r->region->hva + (gpa - GPA_BASE);
}

static uint8_t pattern(uint32_t seed, unsigned int k)
{
	return (uint8_t)(seed * 31 + k);
}

int vq_pair_post(struct vq_pair *r, unsigned int i, unsigned int segs)
{
	struct vq_pair_buf *b = &r->bufs[i];
	struct iovec sg[3];
	unsigned int nr, nw;

	b->segs = segs;
	b->seed = ++r->next_seed;
	for (unsigned int k = 0; k < PAYLOAD; k++)
		b->mem[k] = pattern(b->seed, k);
	memset(b->mem + PAYLOAD, 0, PAYLOAD);
	if (segs == 1) {
		sg[0] = (struct iovec){ b->mem, PAYLOAD };
		nr = 1, nw = 0;
	} else if (segs == 2) {
		sg[0] = (struct iovec){ b->mem, PAYLOAD };
		sg[1] = (struct iovec){ b->mem + PAYLOAD, PAYLOAD };
		nr = 1, nw = 1;
	} else {
		sg[0] = (struct iovec){ b->mem, PAYLOAD / 2 };
		sg[1] = (struct iovec){ b->mem + PAYLOAD / 2, PAYLOAD / 2 };
		sg[2] = (struct iovec){ b->mem + PAYLOAD, PAYLOAD };
		nr = 2, nw = 1;
	}
	int ret = vt_vq_drv_add(r->drv, sg, nr, nw, b);
	if (ret == 0)
		b->posted = true;
	return ret;
}

/* Copies the first PAYLOAD readable bytes of a chain into @out; how many there were. */
static size_t gather(const struct vt_vq_chain *c, const struct iovec *iov, uint8_t *out)
{
	size_t at = 0;
	for (unsigned int k = 0; k < c->nreadable && at < PAYLOAD; k++) {
		size_t n = iov[k].iov_len < PAYLOAD - at ? iov[k].iov_len : PAYLOAD - at;
		memcpy(out + at, iov[k].iov_base, n);
		at += n;
	}
	return at;
}

int vq_pair_check(const struct vq_pair *r, const struct vt_vq_chain *c, const struct iovec *iov,
		  unsigned int i)
{
	const struct vq_pair_buf *b = &r->bufs[i];
	uint8_t got[PAYLOAD];
	if (gather(c, iov, got) != PAYLOAD || c->readable_bytes != PAYLOAD ||
	    c->writable_bytes != (b->segs == 1 ? 0 : PAYLOAD))
		return -EBADMSG;
	for (unsigned int k = 0; k < PAYLOAD; k++)
		if (got[k] != pattern(b->seed, k))
			return -EBADMSG;
	return 0;
}

uint32_t vq_pair_answer(const struct vt_vq_chain *c, const struct iovec *iov)
{
	if (!c->nwritable)
		return 0;
	uint8_t in[PAYLOAD];
	gather(c, iov, in);
	uint8_t *out = iov[c->nreadable].iov_base;
	for (unsigned int k = 0; k < PAYLOAD; k++)
		out[k] = in[PAYLOAD - 1 - k];
	return PAYLOAD;
}

int vq_pair_collect(struct vq_pair *r, unsigned int i)
{
	void *token;
	uint32_t len;
	int ret = vt_vq_drv_get(r->drv, &token, &len);
	if (ret < 0)
		return ret;
	struct vq_pair_buf *b = &r->bufs[i];
	if (token != b || len != (b->segs == 1 ? 0 : PAYLOAD))
		return -EBADMSG;
	if (b->segs != 1)
		for (unsigned int k = 0; k < PAYLOAD; k++)
			if (b->mem[PAYLOAD + k] != pattern(b->seed, PAYLOAD - 1 - k))
				return -EBADMSG;
	b->posted = false;
	return 0;
}
