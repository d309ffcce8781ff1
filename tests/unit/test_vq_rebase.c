/* SPDX-License-Identifier: MIT */
/*
 * vt_vq_drv_rebase: a driver keeps its ring while the device behind it dies and a new one starts
 * on the same memory (a vhost-user back-end restarted after a crash). Whatever the first device
 * completed out of order, the second must see each outstanding buffer exactly once, oldest
 * first, then the ones posted while it was down, and the ring must go on working across laps.
 * Both formats, direct and indirect chains, with and without the device's inflight records.
 * The device halves are real (vq_dev) over the driver's memfd through a memory table.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#include <virtue/dma.h>
#include <virtue/memtable.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/virtqueue.h>

#define QSIZE	 16
#define SHM_SIZE (1u << 20)
#define GPA_BASE 0x100000000ull
#define NBUFS	 32 /* buffers the test owns, reused; more than the ring holds */
#define PAYLOAD	 64
#define MAX_IOV	 8

struct buf {
	uint8_t *mem; /* PAYLOAD readable bytes, then PAYLOAD writable */
	unsigned int segs;
	uint32_t seed;
	bool posted;
};

struct rig {
	bool packed;
	uint64_t features;
	struct vt_shm *shm;
	const struct vt_shm_region *region;
	struct vt_memtable *table;
	struct vt_dma *dma;
	struct vt_vq_drv *drv;
	struct vt_vq_dev *dev;
	void *inflight; /* NULL: the devices keep no records */
	struct vt_log log;
	struct buf bufs[NBUFS];
	uint32_t next_seed;
};

static int dev_start(struct rig *r, uint32_t base)
{
	struct vt_vq_dev_params p = {
		.num = QSIZE,
		.features = r->features,
		.as = vt_memtable_as(r->table),
		.next_avail = (uint16_t)base,
		.name = "rebase-device",
		.log = &r->log,
		.inflight = r->inflight,
	};
	vt_vq_drv_addrs(r->drv, &p.desc_addr, &p.driver_addr, &p.device_addr);
	return vt_vq_dev_new(&p, &r->dev);
}

static int rig_init(struct rig *r, bool packed, bool indirect, bool inflight)
{
	memset(r, 0, sizeof(*r));
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
	struct vt_vq_drv_params drp = { .num = QSIZE,
					.features = r->features,
					.dma = r->dma,
					.name = "rebase-driver",
					.log = &r->log };
	ret = vt_vq_drv_new(&drp, &r->drv);
	if (ret < 0)
		return ret;
	/* Buffers at the top of the region, away from the rings the DMA API allocated. */
	for (unsigned int i = 0; i < NBUFS; i++)
		r->bufs[i].mem = (uint8_t *)r->region->hva + SHM_SIZE / 2 + (size_t)i * 2 * PAYLOAD;
	if (inflight) {
		r->inflight = calloc(1, vt_vq_inflight_size(QSIZE));
		if (!r->inflight)
			return -ENOMEM;
	}
	return dev_start(r, packed ? VT_VQ_PACKED_START : 0);
}

static void rig_destroy(struct rig *r)
{
	if (r->dev)
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

/* Posts buffer @i: 1 segment (readable only), 2 (one each way) or 3 (two readable, one not). */
static int post(struct rig *r, unsigned int i, unsigned int segs)
{
	struct buf *b = &r->bufs[i];
	struct iovec sg[3];
	unsigned int nr, nw;

	b->segs = segs;
	b->seed = ++r->next_seed;
	for (unsigned int k = 0; k < PAYLOAD; k++)
		b->mem[k] = (uint8_t)(b->seed * 31 + k);
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

/* The device takes one buffer and checks it is the one expected, bytes and shape. */
static int take(struct rig *r, struct vt_vq_chain *c, struct iovec *iov, unsigned int expect)
{
	int ret = vt_vq_dev_pop(r->dev, c, iov, MAX_IOV);
	if (ret < 0)
		return ret;
	const struct buf *b = &r->bufs[expect];
	uint8_t got[PAYLOAD];
	size_t at = 0;
	for (unsigned int k = 0; k < c->nreadable && at < PAYLOAD; k++) {
		size_t n = iov[k].iov_len < PAYLOAD - at ? iov[k].iov_len : PAYLOAD - at;
		memcpy(got + at, iov[k].iov_base, n);
		at += n;
	}
	if (at != PAYLOAD || c->readable_bytes != PAYLOAD ||
	    c->writable_bytes != (b->segs == 1 ? 0 : PAYLOAD))
		return -EBADMSG;
	for (unsigned int k = 0; k < PAYLOAD; k++)
		if (got[k] != (uint8_t)(b->seed * 31 + k))
			return -EBADMSG;
	return 0;
}

/* The device answers: the readable bytes reversed into the writable part. */
static int answer(struct rig *r, const struct vt_vq_chain *c, const struct iovec *iov)
{
	uint32_t written = 0;
	if (c->nwritable) {
		uint8_t *out = iov[c->nreadable].iov_base;
		const uint8_t *in = iov[0].iov_base;
		size_t first = iov[0].iov_len;
		for (unsigned int k = 0; k < PAYLOAD; k++) {
			size_t src = PAYLOAD - 1 - k;
			out[k] = src < first ? in[src] : ((uint8_t *)iov[1].iov_base)[src - first];
		}
		written = PAYLOAD;
	}
	int ret = vt_vq_dev_push(r->dev, c, written);
	vt_vq_dev_flush(r->dev);
	return ret;
}

/* The driver collects one buffer and checks it is @expect with the device's answer. */
static int collect(struct rig *r, unsigned int expect)
{
	void *token;
	uint32_t len;
	int ret = vt_vq_drv_get(r->drv, &token, &len);
	if (ret < 0)
		return ret;
	struct buf *b = &r->bufs[expect];
	if (token != b || len != (b->segs == 1 ? 0 : PAYLOAD))
		return -EBADMSG;
	if (b->segs != 1)
		for (unsigned int k = 0; k < PAYLOAD; k++)
			if (b->mem[PAYLOAD + k] != (uint8_t)(b->seed * 31 + (PAYLOAD - 1 - k)))
				return -EBADMSG;
	b->posted = false;
	return 0;
}

/* In-order traffic to move the ring around: @rounds buffers through the current device. */
static int churn(struct rig *r, unsigned int rounds)
{
	struct vt_vq_chain c;
	struct iovec iov[MAX_IOV];
	for (unsigned int i = 0; i < rounds; i++) {
		unsigned int b = 20 + i % 4;
		int ret = post(r, b, 1 + i % 3);
		if (ret == 0) {
			vt_vq_drv_kick_prepare(r->drv);
			ret = take(r, &c, iov, b);
		}
		if (ret == 0)
			ret = answer(r, &c, iov);
		if (ret == 0)
			ret = collect(r, b);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * The scenario: five buffers posted and kicked (mixed shapes); the device takes four; it
 * completes the second and fourth (out of order) and dies with the first and third in flight
 * and the fifth never taken. The driver collects what was completed and posts a sixth while no
 * device runs. After the rebase a new device must see 0, 2, 4, 5 in that order.
 */
static void crash_and_resume(bool packed, bool indirect, bool inflight, unsigned int laps)
{
	struct rig r;
	struct vt_vq_chain c[4], again;
	struct iovec iov[4][MAX_IOV], iov2[MAX_IOV];
	uint32_t base = 0;

	REQUIRE_EQ(rig_init(&r, packed, indirect, inflight), 0);
	REQUIRE_EQ(churn(&r, laps), 0);
	const unsigned int shapes[6] = { 3, 1, 2, 3, 1, 2 };
	for (unsigned int i = 0; i < 5; i++)
		REQUIRE_EQ(post(&r, i, shapes[i]), 0);
	vt_vq_drv_kick_prepare(r.drv);
	for (unsigned int i = 0; i < 4; i++)
		REQUIRE_EQ(take(&r, &c[i], iov[i], i), 0);
	REQUIRE_EQ(answer(&r, &c[1], iov[1]), 0);
	REQUIRE_EQ(answer(&r, &c[3], iov[3]), 0);
	vt_vq_dev_free(r.dev); /* the crash */
	r.dev = NULL;

	/* Completions not collected yet: a new device would complete them again. */
	CHECK_EQ(vt_vq_drv_rebase(r.drv, &base), -EBUSY);
	CHECK(!vt_vq_drv_is_broken(r.drv));
	CHECK_EQ(collect(&r, 1), 0);
	CHECK_EQ(collect(&r, 3), 0);
	REQUIRE_EQ(post(&r, 5, shapes[5]), 0);

	REQUIRE_EQ(vt_vq_drv_rebase(r.drv, &base), 0);
	REQUIRE_EQ(dev_start(&r, base), 0);
	const unsigned int expect[4] = { 0, 2, 4, 5 };
	for (unsigned int k = 0; k < 4; k++) {
		REQUIRE_EQ(take(&r, &again, iov2, expect[k]), 0);
		REQUIRE_EQ(answer(&r, &again, iov2), 0);
	}
	CHECK_EQ(vt_vq_dev_pop(r.dev, &again, iov2, MAX_IOV), -EAGAIN);
	/* In the order completed, with the device's answers in them. */
	for (unsigned int k = 0; k < 4; k++)
		CHECK_EQ(collect(&r, expect[k]), 0);
	void *token;
	uint32_t len;
	CHECK_EQ(vt_vq_drv_get(r.drv, &token, &len), -EAGAIN);
	/* The ring goes on, several laps, with the new device. */
	CHECK_EQ(churn(&r, 5 * QSIZE + 3), 0);
	CHECK(!vt_vq_drv_is_broken(r.drv));
	CHECK(!vt_vq_dev_is_broken(r.dev));
	rig_destroy(&r);
}

VT_TEST(split_rebase_hands_each_outstanding_buffer_out_once)
{
	crash_and_resume(false, false, false, 0);
}

VT_TEST(split_rebase_after_laps_and_with_indirect_tables)
{
	crash_and_resume(false, false, false, 3 * QSIZE + 5);
	crash_and_resume(false, true, false, 2 * QSIZE + 3);
}

VT_TEST(split_rebase_agrees_with_a_device_that_kept_inflight_records)
{
	crash_and_resume(false, false, true, 0);
	crash_and_resume(false, true, true, QSIZE + 1);
}

VT_TEST(packed_rebase_hands_each_outstanding_buffer_out_once)
{
	crash_and_resume(true, false, false, 0);
}

VT_TEST(packed_rebase_after_laps_and_with_indirect_tables)
{
	crash_and_resume(true, false, false, 3 * QSIZE + 5);
	crash_and_resume(true, true, false, 2 * QSIZE + 3);
}

VT_TEST(packed_rebase_agrees_with_a_device_that_kept_inflight_records)
{
	crash_and_resume(true, false, true, 0);
	crash_and_resume(true, true, true, QSIZE + 1);
}

VT_TEST(rebase_of_an_idle_ring_resumes_where_it_stopped)
{
	for (int packed = 0; packed < 2; packed++) {
		struct rig r;
		uint32_t base = 99;
		REQUIRE_EQ(rig_init(&r, packed, false, false), 0);
		REQUIRE_EQ(churn(&r, QSIZE + 3), 0);
		vt_vq_dev_free(r.dev);
		r.dev = NULL;
		REQUIRE_EQ(vt_vq_drv_rebase(r.drv, &base), 0);
		/*
		 * Split: the used index. Packed: the slot after the last used one, its wrap
		 * counter in bit 15; churn's buffers take 1, 2, 3, 1, ... slots (no indirect).
		 */
		unsigned int slots = 0;
		for (unsigned int i = 0; i < QSIZE + 3; i++)
			slots += 1 + i % 3;
		unsigned int wrap = 1 ^ ((slots / QSIZE) & 1);
		CHECK_EQ(base, packed ? (slots % QSIZE) | wrap << 15 : QSIZE + 3u);
		REQUIRE_EQ(dev_start(&r, base), 0);
		CHECK_EQ(churn(&r, QSIZE), 0);
		rig_destroy(&r);
	}
}
