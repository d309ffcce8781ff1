/* SPDX-License-Identifier: MIT */
/*
 * vt_vq_drv_add_burst and vt_vq_drv_get_burst: a burst posts and collects exactly what the same
 * number of single calls would. The device sees each buffer's bytes in posting order, the driver
 * gets every token back once with the length the device reported; a burst stops at a full ring,
 * at a buffer vt_vq_drv_add would refuse (which the next call then meets), and at a hostile used
 * entry (the buffers before it returned, the queue broken). Both formats, IN_ORDER batches too.
 */
#include <errno.h>
#include <string.h>

#include "harness.h"
#include "vq_pair.h"

#include <virtue/spec/virtio_config.h>
#include <virtue/spec/virtio_ring.h>
#include <virtue/iotlb.h>
#include <virtue/iotlb_feed.h>
#include <virtue/virtqueue.h>

#define QSIZE 32
#define LEN   VQ_PAIR_PAYLOAD

/* Buffers first .. first + n - 1 of the rig: iovecs and their tokens (the buffer records). */
static void make_bufs(struct vq_pair *r, unsigned int first, unsigned int n, bool writable,
		      struct iovec *sg, void **tokens)
{
	for (unsigned int i = 0; i < n; i++) {
		struct vq_pair_buf *b = &r->bufs[first + i];
		b->seed = ++r->next_seed;
		for (unsigned int k = 0; k < LEN; k++)
			b->mem[k] = writable ? 0 : (uint8_t)(b->seed * 7 + k);
		sg[i] = (struct iovec){ b->mem, LEN };
		tokens[i] = b;
	}
}

/* The chain is buffer @b, one segment the way asked, with @b's bytes when readable. */
static bool chain_is_buf(const struct vt_vq_chain *c, const struct iovec *iov,
			 const struct vq_pair_buf *b, bool writable)
{
	if (iov[0].iov_base != b->mem || iov[0].iov_len != LEN)
		return false;
	if (writable)
		return c->nreadable == 0 && c->nwritable == 1 && c->writable_bytes == LEN;
	if (c->nreadable != 1 || c->nwritable != 0 || c->readable_bytes != LEN)
		return false;
	for (unsigned int k = 0; k < LEN; k++)
		if (b->mem[k] != (uint8_t)(b->seed * 7 + k))
			return false;
	return true;
}

/*
 * Buffers first .. first + n - 1 posted in one add burst, made available, and taken by the
 * device in one pop burst (one iovec per chain): how many it took, or the first error.
 */
static int post_and_take(struct vq_pair *r, unsigned int first, unsigned int n, bool writable,
			 struct iovec *sg, void **tokens, struct vt_vq_chain *chains,
			 struct iovec *iov)
{
	make_bufs(r, first, n, writable, sg, tokens);
	int ret = vt_vq_drv_add_burst(r->drv, sg, n, writable, tokens);
	if (ret != (int)n)
		return ret < 0 ? ret : -ENOSPC;
	vt_vq_drv_kick_prepare(r->drv);
	return vt_vq_dev_pop_burst(r->dev, chains, iov, 1, n);
}

/*
 * Posts @n buffers in one burst; the device takes them (one chain each, in posting order) and
 * returns them reversed, writing @seed-derived bytes into writable ones. Collected in one burst:
 * each token once, in the order used, with its length and bytes.
 */
static void round_trip(struct vq_pair *r, unsigned int first, unsigned int n, bool writable)
{
	struct iovec sg[QSIZE], iov[QSIZE];
	void *tokens[QSIZE], *got[QSIZE + 1];
	uint32_t lens[QSIZE + 1];
	struct vt_vq_chain chains[QSIZE];

	REQUIRE_EQ(post_and_take(r, first, n, writable, sg, tokens, chains, iov), (int)n);
	/* Exactly those: nothing more is available. */
	REQUIRE_EQ(vt_vq_dev_pop_burst(r->dev, chains + n, iov + n, 1, QSIZE - n), 0);
	for (unsigned int i = 0; i < n; i++)
		CHECK(chain_is_buf(&chains[i], &iov[i], &r->bufs[first + i], writable));
	for (unsigned int i = n; i-- > 0;) {
		uint32_t written = 0;
		if (writable) {
			written = LEN - i; /* distinct per buffer */
			memset(iov[i].iov_base, (int)(0xa0 + i), written);
		}
		REQUIRE_EQ(vt_vq_dev_push(r->dev, &chains[i], written), 0);
	}
	vt_vq_dev_flush(r->dev);
	REQUIRE_EQ(vt_vq_drv_get_burst(r->drv, got, lens, QSIZE + 1), (int)n);
	for (unsigned int j = 0; j < n; j++) {
		unsigned int i = n - 1 - j; /* used in reverse */
		CHECK(got[j] == tokens[i]);
		CHECK_EQ(lens[j], writable ? LEN - i : 0u);
		if (writable) {
			const uint8_t *m = r->bufs[first + i].mem;
			CHECK(m[0] == (uint8_t)(0xa0 + i) && m[LEN - i - 1] == (uint8_t)(0xa0 + i));
		}
	}
	CHECK_EQ(vt_vq_drv_get_burst(r->drv, got, lens, QSIZE), 0);
}

static void bursts_round_trip(bool packed)
{
	struct vq_pair r;

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
	/* Bursts of 13 over laps of the 32-entry ring, so that bursts cross its end. */
	for (unsigned int round = 0; round < 8; round++)
		round_trip(&r, 0, 13, round & 1);
	struct vt_vq_drv_stats st;
	vt_vq_drv_get_stats(r.drv, &st);
	CHECK_EQ(st.added, 8u * 13);
	CHECK_EQ(st.used, 8u * 13);
	CHECK(!vt_vq_drv_is_broken(r.drv) && !vt_vq_dev_is_broken(r.dev));
	vq_pair_destroy(&r);
}

VT_TEST(split_drv_bursts_post_and_collect_every_buffer_with_its_bytes)
{
	bursts_round_trip(false);
}

VT_TEST(packed_drv_bursts_post_and_collect_every_buffer_with_its_bytes)
{
	bursts_round_trip(true);
}

static void burst_stops_at_full_ring(bool packed)
{
	struct vq_pair r;
	struct iovec sg[QSIZE + 8];
	void *tokens[QSIZE + 8], *got[QSIZE];
	uint32_t lens[QSIZE];
	struct vt_vq_chain chains[QSIZE];
	struct iovec iov[QSIZE];

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
	make_bufs(&r, 0, QSIZE + 8, false, sg, tokens);
	/* 40 asked, 32 fit: the burst posts those and reports how many. */
	REQUIRE_EQ(vt_vq_drv_add_burst(r.drv, sg, QSIZE + 8, false, tokens), QSIZE);
	CHECK_EQ(vt_vq_drv_add_burst(r.drv, sg + QSIZE, 8, false, tokens + QSIZE), -ENOSPC);
	vt_vq_drv_kick_prepare(r.drv);
	REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, 1, QSIZE), QSIZE);
	/* Five come back: the remaining eight no longer fit, five do. */
	for (unsigned int i = 0; i < 5; i++)
		REQUIRE_EQ(vt_vq_dev_push(r.dev, &chains[i], 0), 0);
	vt_vq_dev_flush(r.dev);
	REQUIRE_EQ(vt_vq_drv_get_burst(r.drv, got, lens, QSIZE), 5);
	for (unsigned int i = 0; i < 5; i++)
		CHECK(got[i] == tokens[i]);
	CHECK_EQ(vt_vq_drv_add_burst(r.drv, sg + QSIZE, 8, false, tokens + QSIZE), 5);
	vt_vq_drv_kick_prepare(r.drv);
	REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, 1, QSIZE), 5);
	for (unsigned int i = 0; i < 5; i++)
		CHECK(chain_is_buf(&chains[i], &iov[i], &r.bufs[QSIZE + i], false));
	CHECK(!vt_vq_drv_is_broken(r.drv));
	vq_pair_destroy(&r);
}

VT_TEST(split_add_burst_posts_what_fits_then_enospc)
{
	burst_stops_at_full_ring(false);
}

VT_TEST(packed_add_burst_posts_what_fits_then_enospc)
{
	burst_stops_at_full_ring(true);
}

/* A zero-length buffer, a NULL token and an unmappable one each end the burst before them. */
static void burst_stops_before_refused_buffer(bool packed)
{
	struct vq_pair r;
	struct iovec sg[8];
	void *tokens[8];
	uint8_t outside[LEN]; /* on the stack: not in shared memory, the DMA API cannot map it */
	struct vt_vq_chain chains[8];
	struct iovec iov[8];

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
	make_bufs(&r, 0, 8, false, sg, tokens);
	sg[2].iov_len = 0;
	REQUIRE_EQ(vt_vq_drv_add_burst(r.drv, sg, 8, false, tokens), 2);
	CHECK_EQ(vt_vq_drv_add_burst(r.drv, sg + 2, 6, false, tokens + 2), -EINVAL);
	sg[2].iov_len = LEN;
	tokens[4] = NULL;
	CHECK_EQ(vt_vq_drv_add_burst(r.drv, sg + 2, 6, false, tokens + 2), 2);
	CHECK_EQ(vt_vq_drv_add_burst(r.drv, sg + 4, 4, false, tokens + 4), -EINVAL);
	tokens[4] = &r.bufs[4];
	/* The DMA API's refusal is vt_vq_drv_add's, and nothing of the buffer is posted. */
	struct iovec bad = { outside, LEN };
	int single = vt_vq_drv_add(r.drv, &bad, 1, 0, tokens[4]);
	CHECK(single < 0);
	sg[5] = bad;
	CHECK_EQ(vt_vq_drv_add_burst(r.drv, sg + 4, 4, false, tokens + 4), 1);
	CHECK_EQ(vt_vq_drv_add_burst(r.drv, sg + 5, 3, false, tokens + 5), single);
	vt_vq_drv_kick_prepare(r.drv);
	/* The device sees exactly buffers 0 .. 4, in order. */
	REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, 1, 8), 5);
	for (unsigned int i = 0; i < 5; i++)
		CHECK(chain_is_buf(&chains[i], &iov[i], &r.bufs[i], false));
	CHECK(!vt_vq_drv_is_broken(r.drv));
	vq_pair_destroy(&r);
}

VT_TEST(split_add_burst_stops_before_a_buffer_add_would_refuse)
{
	burst_stops_before_refused_buffer(false);
}

VT_TEST(packed_add_burst_stops_before_a_buffer_add_would_refuse)
{
	burst_stops_before_refused_buffer(true);
}

/*
 * Four buffers used; the device's entry @bad names a buffer that is not outstanding. The burst
 * returns the buffers before it; the one that meets it breaks the queue with USED_ID and
 * returns -EPROTO when it collected nothing.
 */
static void get_burst_stops_at_hostile_entry(bool packed, unsigned int bad)
{
	struct vq_pair r;
	struct iovec sg[4], iov[4];
	void *tokens[4], *got[4];
	uint32_t lens[4];
	struct vt_vq_chain chains[4];
	uint64_t desc, driver, device;

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
	REQUIRE_EQ(post_and_take(&r, 0, 4, false, sg, tokens, chains, iov), 4);
	REQUIRE_EQ(vt_vq_dev_push_burst(r.dev, chains, NULL, 4), 0);
	vt_vq_dev_flush(r.dev);
	vt_vq_drv_addrs(r.drv, &desc, &driver, &device);
	if (packed) {
		struct pvirtq_desc *d = vq_pair_hva(&r, desc);
		d[bad].id = vt_cpu_to_le16(QSIZE + 3);
	} else {
		struct virtq_used *u = vq_pair_hva(&r, device);
		u->ring[bad].id = vt_cpu_to_le32(QSIZE + 3);
	}
	if (bad) {
		REQUIRE_EQ(vt_vq_drv_get_burst(r.drv, got, lens, 4), (int)bad);
		for (unsigned int i = 0; i < bad; i++)
			CHECK(got[i] == tokens[i]);
		/* Met by the burst that collected them: broken already. */
		CHECK(vt_vq_drv_is_broken(r.drv));
	}
	CHECK_EQ(vt_vq_drv_get_burst(r.drv, got, lens, 4), -EPROTO);
	CHECK(vt_vq_drv_is_broken(r.drv));
	CHECK_EQ(vt_vq_drv_error(r.drv), VT_VQ_ERR_USED_ID);
	/* Broken: both bursts refuse. */
	CHECK_EQ(vt_vq_drv_add_burst(r.drv, sg, 1, false, tokens), -EPROTO);
	CHECK_EQ(vt_vq_drv_get_burst(r.drv, got, lens, 4), -EPROTO);
	vq_pair_destroy(&r);
}

VT_TEST(split_get_burst_returns_buffers_before_a_hostile_used_id)
{
	get_burst_stops_at_hostile_entry(false, 3);
}

VT_TEST(packed_get_burst_returns_buffers_before_a_hostile_used_id)
{
	get_burst_stops_at_hostile_entry(true, 3);
}

VT_TEST(split_get_burst_meeting_a_hostile_used_id_first_is_eproto)
{
	get_burst_stops_at_hostile_entry(false, 0);
}

VT_TEST(packed_get_burst_meeting_a_hostile_used_id_first_is_eproto)
{
	get_burst_stops_at_hostile_entry(true, 0);
}

/* A writable buffer the device claims to have overfilled: clamped and counted in a burst too. */
static void get_burst_clamps_length(bool packed)
{
	struct vq_pair r;
	struct iovec sg[2], iov[2];
	void *tokens[2], *got[2];
	uint32_t lens[2];
	struct vt_vq_chain chains[2];

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
	REQUIRE_EQ(post_and_take(&r, 0, 2, true, sg, tokens, chains, iov), 2);
	uint32_t written[2] = { 10, LEN + 100 };
	REQUIRE_EQ(vt_vq_dev_push_burst(r.dev, chains, written, 2), 0);
	vt_vq_dev_flush(r.dev);
	REQUIRE_EQ(vt_vq_drv_get_burst(r.drv, got, lens, 2), 2);
	CHECK_EQ(lens[0], 10u);
	CHECK_EQ(lens[1], (uint32_t)LEN);
	struct vt_vq_drv_stats st;
	vt_vq_drv_get_stats(r.drv, &st);
	CHECK_EQ(st.used_len_clamped, 1u);
	CHECK(!vt_vq_drv_is_broken(r.drv));
	vq_pair_destroy(&r);
}

VT_TEST(split_get_burst_clamps_an_overstated_length)
{
	get_burst_clamps_length(false);
}

VT_TEST(packed_get_burst_clamps_an_overstated_length)
{
	get_burst_clamps_length(true);
}

/* Both halves again, with IN_ORDER negotiated. */
static void make_in_order(struct vq_pair *r)
{
	vt_vq_dev_free(r->dev);
	vt_vq_drv_free(r->drv);
	r->features |= VT_BIT(VIRTIO_F_IN_ORDER);
	struct vt_vq_drv_params p = { .num = r->qsize, .features = r->features, .dma = r->dma };
	r->drv = NULL;
	r->dev = NULL;
	REQUIRE_EQ(vt_vq_drv_new(&p, &r->drv), 0);
	REQUIRE_EQ(vq_pair_dev_start(r, r->packed ? VT_VQ_PACKED_START : 0), 0);
}

/*
 * One used entry for a batch of 9: the burst hands out all 9, the length on the last only; in the
 * last round an overstated one, clamped to what the last buffer could hold.
 */
static void get_burst_in_order_batch(bool packed)
{
	struct vq_pair r;
	struct iovec sg[9], iov[9];
	void *tokens[9], *got[12];
	uint32_t lens[12];
	struct vt_vq_chain chains[9];

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
	make_in_order(&r);
	for (unsigned int round = 0; round < 6; round++) {
		REQUIRE_EQ(post_and_take(&r, 0, 9, true, sg, tokens, chains, iov), 9);
		uint32_t written = round == 5 ? LEN + 100 : 33, expect = round == 5 ? LEN : 33;
		REQUIRE_EQ(vt_vq_dev_push_in_order_batch(r.dev, &chains[8], written), 0);
		vt_vq_dev_flush(r.dev);
		/* Asked in two bursts: the batch carries over from one to the next. */
		REQUIRE_EQ(vt_vq_drv_get_burst(r.drv, got, lens, 4), 4);
		REQUIRE_EQ(vt_vq_drv_get_burst(r.drv, got + 4, lens + 4, 8), 5);
		for (unsigned int i = 0; i < 9; i++) {
			CHECK(got[i] == tokens[i]);
			CHECK_EQ(lens[i], i == 8 ? expect : 0u);
		}
		CHECK_EQ(vt_vq_drv_get_burst(r.drv, got, lens, 4), 0);
	}
	struct vt_vq_drv_stats st;
	vt_vq_drv_get_stats(r.drv, &st);
	CHECK_EQ(st.used_len_clamped, 1u);
	CHECK(!vt_vq_drv_is_broken(r.drv));
	vq_pair_destroy(&r);
}

VT_TEST(split_get_burst_hands_out_an_in_order_batch)
{
	get_burst_in_order_batch(false);
}

VT_TEST(packed_get_burst_hands_out_an_in_order_batch)
{
	get_burst_in_order_batch(true);
}

VT_TEST(empty_bursts_do_nothing)
{
	struct vq_pair r;
	void *got[1];
	uint32_t lens[1];

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, false, false, false), 0);
	CHECK_EQ(vt_vq_drv_add_burst(r.drv, NULL, 0, false, NULL), 0);
	CHECK_EQ(vt_vq_drv_get_burst(r.drv, got, lens, 1), 0);
	CHECK_EQ(vt_vq_drv_get_burst(r.drv, got, lens, 0), 0);
	CHECK(!vt_vq_drv_kick_prepare(r.drv));
	vq_pair_destroy(&r);
}

/* ---------------------------------------------------------------- strict DMA */

/*
 * How many pages of the IOVA space the DMA API allocates from (its default base, 1 MiB) the
 * device can reach that lead into [mem, mem + len).
 */
static unsigned int buffers_reachable(struct vt_iotlb *iotlb, const uint8_t *mem, size_t len)
{
	unsigned int n = 0;
	for (uint64_t iova = 1u << 20; iova < (1u << 20) + 4096ull * 4096; iova += 4096) {
		struct vt_iotlb_entry e;
		if (vt_iotlb_lookup(iotlb, iova, &e) == 0 && (uint8_t *)e.hva >= mem &&
		    (uint8_t *)e.hva < mem + len)
			n++;
	}
	return n;
}

struct log_count {
	unsigned int errors;
};

static void count_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_count *c = opaque;

	(void)message;
	c->errors += level == VT_LOG_ERROR;
}

static void drop_log(void *opaque, enum vt_log_level level, const char *message)
{
}

/* For the IOTLB a test fills on purpose. */
static const struct vt_log quiet = { .fn = drop_log };

/*
 * Both halves over strict IOMMU DMA (or lazy: iommu_pair_init), the device translating through an
 * IOTLB the DMA feeds.
 */
struct strict_pair {
	struct vt_shm *shm;
	const struct vt_shm_region *region;
	struct log_count log_seen;
	struct vt_log log;
	struct vt_iotlb_feed feed;
	struct vt_dma *dma;
	struct vt_vq_drv *drv;
	struct vt_vq_dev *dev;
};

enum { STRICT_SHM = 1u << 20 };

/*
 * A pair of @num entries over @mode, its IOTLB of @iotlb_entries (0: the default; a full one
 * refuses updates, quietly). Set up when p->dev is.
 */
/* With @extra features (INDIRECT_DESC) on top of the ring's. */
static void iommu_pair_init_with(struct strict_pair *p, bool packed, enum vt_dma_mode mode,
				 unsigned int num, unsigned int iotlb_entries, uint64_t extra)
{
	uint64_t features = VT_BIT(VIRTIO_F_VERSION_1) | VT_BIT(VIRTIO_F_ACCESS_PLATFORM) |
			    (packed ? VT_BIT(VIRTIO_F_RING_PACKED) : 0) | extra;

	*p = (struct strict_pair){ 0 };
	p->log =
	    (struct vt_log){ .fn = count_log, .opaque = &p->log_seen, .max_level = VT_LOG_ERROR };
	REQUIRE_EQ(vt_shm_new(&p->shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(p->shm, STRICT_SHM, 0x100000000ull, &p->region), 0);
	p->feed.table = vt_memtable_new(NULL);
	REQUIRE(p->feed.table != NULL);
	REQUIRE_EQ(vt_memtable_add_shm(p->feed.table, p->shm), 0);
	/* A bounded IOTLB fills up only without the page table, which its bound does not cover. */
	struct vt_iotlb_params ip = { .max_entries = iotlb_entries,
				      .page_table_pages =
					  iotlb_entries ? VT_IOTLB_NO_PAGE_TABLE : 0,
				      .log = iotlb_entries ? &quiet : NULL };
	REQUIRE_EQ(vt_iotlb_new(&ip, &p->feed.iotlb), 0);
	struct vt_dma_params dp = { .mode = mode,
				    .shm = p->shm,
				    .log = &p->log,
				    .iotlb_ops = &vt_iotlb_feed_ops,
				    .iotlb_opaque = &p->feed };
	REQUIRE_EQ(vt_dma_new(&dp, &p->dma), 0);
	struct vt_vq_drv_params drp = {
		.num = num, .features = features, .dma = p->dma, .log = &p->log
	};
	REQUIRE_EQ(vt_vq_drv_new(&drp, &p->drv), 0);
	struct vt_vq_dev_params dvp = { .num = num,
					.features = features,
					.as = vt_iotlb_as(p->feed.iotlb),
					.next_avail = packed ? VT_VQ_PACKED_START : 0,
					.log = &p->log };
	vt_vq_drv_addrs(p->drv, &dvp.desc_addr, &dvp.driver_addr, &dvp.device_addr);
	REQUIRE_EQ(vt_vq_dev_new(&dvp, &p->dev), 0);
}

static void iommu_pair_init(struct strict_pair *p, bool packed, enum vt_dma_mode mode,
			    unsigned int num, unsigned int iotlb_entries)
{
	iommu_pair_init_with(p, packed, mode, num, iotlb_entries, 0);
}

static void strict_pair_init(struct strict_pair *p, bool packed)
{
	iommu_pair_init(p, packed, VT_DMA_IOMMU_STRICT, QSIZE, 0);
}

static void strict_pair_destroy(struct strict_pair *p)
{
	vt_vq_dev_free(p->dev);
	vt_vq_drv_free(p->drv);
	vt_dma_free(p->dma);
	vt_iotlb_free(p->feed.iotlb);
	vt_memtable_free(p->feed.table);
	vt_shm_free(p->shm);
}

/*
 * Posts @n readable buffers in one burst and kicks: how many maps the DMA statistics gained, or
 * -1 when the burst did not post them all.
 */
static long long post_counting_maps(struct strict_pair *p, const struct iovec *sg, unsigned int n,
				    void *const *tokens)
{
	struct vt_dma_stats before, after;

	vt_dma_get_stats(p->dma, &before);
	if (vt_vq_drv_add_burst(p->drv, sg, n, false, tokens) != (int)n)
		return -1;
	vt_vq_drv_kick_prepare(p->drv);
	vt_dma_get_stats(p->dma, &after);
	return (long long)(after.maps - before.maps);
}

/*
 * Strict DMA under bursts: a burst's maps and unmaps form one DMA batch. The device reaches
 * every buffer through the IOTLB while it is posted; once vt_vq_drv_get_burst returns, no
 * collected buffer's IOVA translates any more, and the burst's invalidations left together
 * (adjacent IOVAs merged: fewer invalidations than buffers).
 */
static void strict_bursts(bool packed)
{
	enum { N = 16 };
	struct strict_pair p;

	strict_pair_init(&p, packed);
	uint8_t *mem = (uint8_t *)p.region->hva + STRICT_SHM / 2;
	for (unsigned int round = 0; round < 6 && !vt_test_failed; round++) {
		struct iovec sg[N], iov[N];
		struct vt_vq_chain chains[N];
		void *tokens[N], *got[N];
		uint32_t lens[N];
		for (unsigned int i = 0; i < N; i++) {
			uint8_t *b = mem + (size_t)i * 4096;
			memset(b, (int)(round * N + i), LEN);
			sg[i] = (struct iovec){ b, LEN };
			tokens[i] = b;
		}
		REQUIRE_EQ(post_counting_maps(&p, sg, N, tokens), N); /* each counted once */
		struct vt_dma_stats before, after;
		REQUIRE_EQ(vt_vq_dev_pop_burst(p.dev, chains, iov, 1, N), N);
		for (unsigned int i = 0; i < N; i++)
			/* The device reads the driver's bytes through its IOTLB mapping. */
			CHECK_EQ(((uint8_t *)iov[i].iov_base)[LEN - 1], (uint8_t)(round * N + i));
		CHECK_EQ(buffers_reachable(p.feed.iotlb, mem, N * 4096), N);
		REQUIRE_EQ(vt_vq_dev_push_burst(p.dev, chains, (uint32_t[N]){ 0 }, N), 0);
		vt_vq_dev_flush(p.dev);
		vt_dma_get_stats(p.dma, &before);
		REQUIRE_EQ(vt_vq_drv_get_burst(p.drv, got, lens, N), N);
		vt_dma_get_stats(p.dma, &after);
		for (unsigned int i = 0; i < N; i++)
			CHECK(got[i] == tokens[i]);
		CHECK_EQ(buffers_reachable(p.feed.iotlb, mem, N * 4096), 0);
		CHECK_EQ(after.unmaps - before.unmaps, N);
		CHECK(after.iotlb_invalidations - before.iotlb_invalidations < N);
		CHECK_EQ(after.flushes - before.flushes, 1);
	}
	CHECK(!vt_vq_drv_is_broken(p.drv) && !vt_vq_dev_is_broken(p.dev));
	strict_pair_destroy(&p);
}

/*
 * A burst whose fourth buffer the DMA cannot map (outside shared memory): the three before it
 * are posted and reach the device, the map's error is logged once and returned by the next
 * burst, which starts at that buffer, and the queue is not broken: the rest posts after it.
 */
static void strict_burst_map_failure(bool packed)
{
	enum { N = 8 };
	static uint8_t private_buffer[LEN]; /* the driver's own: not shared */
	struct strict_pair p;
	struct iovec sg[N], iov[N];
	struct vt_vq_chain chains[N];
	void *tokens[N];

	strict_pair_init(&p, packed);
	uint8_t *mem = (uint8_t *)p.region->hva + STRICT_SHM / 2;
	for (unsigned int i = 0; i < N; i++) {
		sg[i] = (struct iovec){ mem + (size_t)i * 4096, LEN };
		tokens[i] = sg[i].iov_base;
	}
	sg[3] = (struct iovec){ private_buffer, LEN };
	tokens[3] = private_buffer;
	REQUIRE_EQ(vt_vq_drv_add_burst(p.drv, sg, N, false, tokens), 3);
	CHECK_EQ(vt_vq_drv_add_burst(p.drv, sg + 3, N - 3, false, tokens + 3), -EFAULT);
	CHECK_EQ(p.log_seen.errors, 2); /* one per refused map, never two for one */
	CHECK(!vt_vq_drv_is_broken(p.drv));
	REQUIRE_EQ(vt_vq_drv_add_burst(p.drv, sg + 4, N - 4, false, tokens + 4), N - 4);
	vt_vq_drv_kick_prepare(p.drv);
	REQUIRE_EQ(vt_vq_dev_pop_burst(p.dev, chains, iov, 1, N), N - 1);
	struct vt_dma_stats st;
	vt_dma_get_stats(p.dma, &st);
	CHECK_EQ(st.maps, (uint64_t)(N - 1)); /* each posted buffer once */
	CHECK(!vt_vq_dev_is_broken(p.dev));
	strict_pair_destroy(&p);
}

VT_TEST(strict_burst_posts_up_to_a_buffer_the_dma_cannot_map_and_reports_it)
{
	strict_burst_map_failure(false);
	strict_burst_map_failure(true);
}

VT_TEST(strict_bursts_revoke_every_collected_buffer_before_returning_it)
{
	strict_bursts(false);
	strict_bursts(true);
}

/*
 * Buffers of three segments (no INDIRECT: chains), which bursts leave to the general path:
 * every segment is unmapped and counted once, whether the buffer is collected by a single get,
 * by a burst, or detached unused at reset, and none stays reachable through the IOTLB.
 */
static void strict_chains_unmapped_and_counted(bool packed)
{
	enum { BUFS = 3, SEGS = 3 };
	struct strict_pair p;
	struct iovec iov[BUFS * SEGS];
	struct vt_vq_chain chains[BUFS];
	void *got[BUFS];
	uint32_t lens[BUFS];

	strict_pair_init(&p, packed);
	uint8_t *mem = (uint8_t *)p.region->hva + STRICT_SHM / 2;
	for (unsigned int b = 0; b < BUFS; b++) {
		struct iovec sg[SEGS];
		for (unsigned int s = 0; s < SEGS; s++)
			sg[s] = (struct iovec){ mem + (size_t)(b * SEGS + s) * 4096, LEN };
		REQUIRE_EQ(vt_vq_drv_add(p.drv, sg, SEGS, 0, sg[0].iov_base), 0);
	}
	vt_vq_drv_kick_prepare(p.drv);
	CHECK_EQ(buffers_reachable(p.feed.iotlb, mem, BUFS * SEGS * 4096), BUFS * SEGS);
	/* The device returns the first two; the third stays posted. */
	REQUIRE_EQ(vt_vq_dev_pop_burst(p.dev, chains, iov, SEGS, 2), 2);
	REQUIRE_EQ(vt_vq_dev_push_burst(p.dev, chains, NULL, 2), 0);
	vt_vq_dev_flush(p.dev);

	struct vt_dma_stats st;
	REQUIRE_EQ(vt_vq_drv_get(p.drv, &got[0], &lens[0]), 0);
	vt_dma_get_stats(p.dma, &st);
	CHECK_EQ(st.unmaps, SEGS); /* the single get's buffer */
	REQUIRE_EQ(vt_vq_drv_get_burst(p.drv, &got[1], &lens[1], BUFS), 1);
	vt_dma_get_stats(p.dma, &st);
	CHECK_EQ(st.unmaps, 2 * SEGS); /* and the burst's */
	CHECK(got[0] == mem && got[1] == mem + SEGS * 4096);
	CHECK(vt_vq_drv_detach_unused(p.drv) == mem + 2 * SEGS * 4096);
	vt_dma_get_stats(p.dma, &st);
	CHECK_EQ(st.unmaps, BUFS * SEGS); /* and the detached one's */
	CHECK_EQ(st.maps, st.unmaps);
	CHECK_EQ(buffers_reachable(p.feed.iotlb, mem, BUFS * SEGS * 4096), 0);
	strict_pair_destroy(&p);
}

VT_TEST(strict_chains_are_unmapped_and_counted_by_every_way_of_collecting_them)
{
	strict_chains_unmapped_and_counted(false);
	strict_chains_unmapped_and_counted(true);
}

/* ---------------------------------------------------------------- IOMMU DMA, long bursts */

/*
 * The modes that map per buffer map a burst's run in groups (32 at a time): a burst of 80, more
 * than two groups, in strict and lazy mode. Every buffer is posted, counted once, and read by
 * the device with its own bytes through the IOTLB; collected, none stays reachable (lazy: after
 * the flush). Twice, so that the second burst maps into IOVAs the first one gave back.
 */
static void long_iommu_bursts(bool packed, enum vt_dma_mode mode)
{
	enum { NUM = 128, N = 80 };
	struct strict_pair p;
	static struct iovec sg[N], iov[N];
	static struct vt_vq_chain chains[N];
	void *tokens[N], *got[N];
	uint32_t lens[N];

	iommu_pair_init(&p, packed, mode, NUM, 0);
	REQUIRE(p.dev != NULL);
	uint8_t *mem = (uint8_t *)p.region->hva + STRICT_SHM / 2;
	for (unsigned int round = 0; round < 2 && !vt_test_failed; round++) {
		for (unsigned int i = 0; i < N; i++) {
			uint8_t *b = mem + (size_t)i * 4096;
			for (unsigned int k = 0; k < LEN; k++)
				b[k] = (uint8_t)(round * 131 + i * 7 + k);
			sg[i] = (struct iovec){ b, LEN };
			tokens[i] = b;
		}
		REQUIRE_EQ(post_counting_maps(&p, sg, N, tokens), N);
		CHECK_EQ(buffers_reachable(p.feed.iotlb, mem, N * 4096), N);
		REQUIRE_EQ(vt_vq_dev_pop_burst(p.dev, chains, iov, 1, N), N);
		unsigned int wrong = 0;
		for (unsigned int i = 0; i < N; i++)
			wrong += iov[i].iov_len != LEN ||
				 memcmp(iov[i].iov_base, sg[i].iov_base, LEN) != 0;
		CHECK_EQ(wrong, 0);
		REQUIRE_EQ(vt_vq_dev_push_burst(p.dev, chains, NULL, N), 0);
		vt_vq_dev_flush(p.dev);
		REQUIRE_EQ(vt_vq_drv_get_burst(p.drv, got, lens, N), N);
		for (unsigned int i = 0; i < N; i++)
			CHECK(got[i] == tokens[i]);
		if (mode == VT_DMA_IOMMU_LAZY)
			CHECK_EQ(vt_dma_flush(p.dma), 0);
		CHECK_EQ(buffers_reachable(p.feed.iotlb, mem, N * 4096), 0);
	}
	CHECK_EQ(p.log_seen.errors, 0);
	CHECK(!vt_vq_drv_is_broken(p.drv) && !vt_vq_dev_is_broken(p.dev));
	strict_pair_destroy(&p);
}

VT_TEST(iommu_bursts_longer_than_a_map_group_post_every_buffer_with_its_bytes)
{
	long_iommu_bursts(false, VT_DMA_IOMMU_STRICT);
	long_iommu_bursts(true, VT_DMA_IOMMU_STRICT);
	long_iommu_bursts(false, VT_DMA_IOMMU_LAZY);
	long_iommu_bursts(true, VT_DMA_IOMMU_LAZY);
}

/*
 * A burst of 50 whose 41st buffer the DMA cannot map (outside shared memory), in the second
 * group of maps: the 40 before it are posted and reach the device, the next burst meets the
 * error, and the rest posts after the buffer.
 */
static void long_iommu_burst_map_failure(bool packed, enum vt_dma_mode mode)
{
	enum { NUM = 64, N = 50, BAD = 40 };
	static uint8_t private_buffer[LEN]; /* the driver's own: not shared */
	struct strict_pair p;
	static struct iovec sg[N], iov[N];
	static struct vt_vq_chain chains[N];
	void *tokens[N];

	iommu_pair_init(&p, packed, mode, NUM, 0);
	REQUIRE(p.dev != NULL);
	uint8_t *mem = (uint8_t *)p.region->hva + STRICT_SHM / 2;
	for (unsigned int i = 0; i < N; i++) {
		sg[i] = (struct iovec){ mem + (size_t)i * 4096, LEN };
		memset(sg[i].iov_base, (int)i, LEN);
		tokens[i] = sg[i].iov_base;
	}
	sg[BAD] = (struct iovec){ private_buffer, LEN };
	tokens[BAD] = private_buffer;
	REQUIRE_EQ(vt_vq_drv_add_burst(p.drv, sg, N, false, tokens), BAD);
	CHECK_EQ(vt_vq_drv_add_burst(p.drv, sg + BAD, N - BAD, false, tokens + BAD), -EFAULT);
	CHECK(!vt_vq_drv_is_broken(p.drv));
	vt_vq_drv_kick_prepare(p.drv);
	REQUIRE_EQ(vt_vq_dev_pop_burst(p.dev, chains, iov, 1, N), BAD);
	unsigned int wrong = 0;
	for (unsigned int i = 0; i < BAD; i++)
		wrong += ((uint8_t *)iov[i].iov_base)[LEN - 1] != (uint8_t)i;
	CHECK_EQ(wrong, 0);
	struct vt_dma_stats st;
	vt_dma_get_stats(p.dma, &st);
	CHECK_EQ(st.maps, BAD);
	CHECK_EQ(st.map_failures, 2); /* the burst's, then the next one's */
	CHECK_EQ(buffers_reachable(p.feed.iotlb, mem, N * 4096), BAD);
	REQUIRE_EQ(vt_vq_drv_add_burst(p.drv, sg + BAD + 1, N - BAD - 1, false, tokens + BAD + 1),
		   N - BAD - 1);
	vt_vq_drv_kick_prepare(p.drv);
	REQUIRE_EQ(vt_vq_dev_pop_burst(p.dev, chains, iov, 1, N), N - BAD - 1);
	CHECK_EQ(((uint8_t *)iov[0].iov_base)[0], BAD + 1);
	CHECK(!vt_vq_dev_is_broken(p.dev));
	strict_pair_destroy(&p);
}

VT_TEST(iommu_burst_posts_the_buffers_before_one_the_dma_cannot_map_past_the_first_group)
{
	long_iommu_burst_map_failure(false, VT_DMA_IOMMU_STRICT);
	long_iommu_burst_map_failure(true, VT_DMA_IOMMU_STRICT);
	long_iommu_burst_map_failure(false, VT_DMA_IOMMU_LAZY);
	long_iommu_burst_map_failure(true, VT_DMA_IOMMU_LAZY);
}

/*
 * The device's IOTLB (fed a burst's maps in one update_burst) full midway through a burst: the
 * buffers whose translations it took are posted and reach the device; the one it refused is
 * not, the next burst meets -ENOSPC, and once collected buffers make room the rest posts.
 */
static void iotlb_full_midway(bool packed)
{
	enum { NUM = 64, CAPACITY = 48 };
	struct strict_pair p;
	static struct iovec sg[NUM], iov[NUM];
	static struct vt_vq_chain chains[NUM];
	void *tokens[NUM], *got[NUM];
	uint32_t lens[NUM];

	iommu_pair_init(&p, packed, VT_DMA_IOMMU_STRICT, NUM, CAPACITY);
	REQUIRE(p.dev != NULL);
	struct vt_iotlb_stats is;
	vt_iotlb_get_stats(p.feed.iotlb, &is);
	unsigned int room = CAPACITY - is.entries; /* the rings took the others */
	unsigned int n = room + 5;
	REQUIRE(n <= NUM);
	uint8_t *mem = (uint8_t *)p.region->hva + STRICT_SHM / 2;
	for (unsigned int i = 0; i < n; i++) {
		sg[i] = (struct iovec){ mem + (size_t)i * 4096, LEN };
		memset(sg[i].iov_base, (int)i, LEN);
		tokens[i] = sg[i].iov_base;
	}
	REQUIRE_EQ(vt_vq_drv_add_burst(p.drv, sg, n, false, tokens), (int)room);
	CHECK_EQ(vt_vq_drv_add_burst(p.drv, sg + room, n - room, false, tokens + room), -ENOSPC);
	CHECK(!vt_vq_drv_is_broken(p.drv));
	vt_vq_drv_kick_prepare(p.drv);
	REQUIRE_EQ(vt_vq_dev_pop_burst(p.dev, chains, iov, 1, NUM), (int)room);
	unsigned int wrong = 0;
	for (unsigned int i = 0; i < room; i++)
		wrong += ((uint8_t *)iov[i].iov_base)[LEN - 1] != (uint8_t)i;
	CHECK_EQ(wrong, 0);
	CHECK_EQ(buffers_reachable(p.feed.iotlb, mem, n * 4096), room);
	struct vt_dma_stats st;
	vt_dma_get_stats(p.dma, &st);
	CHECK_EQ(st.maps, room);
	/* Five collected: room for the five refused. */
	REQUIRE_EQ(vt_vq_dev_push_burst(p.dev, chains, NULL, 5), 0);
	vt_vq_dev_flush(p.dev);
	REQUIRE_EQ(vt_vq_drv_get_burst(p.drv, got, lens, NUM), 5);
	REQUIRE_EQ(vt_vq_drv_add_burst(p.drv, sg + room, n - room, false, tokens + room),
		   (int)(n - room));
	vt_vq_drv_kick_prepare(p.drv);
	REQUIRE_EQ(vt_vq_dev_pop_burst(p.dev, chains, iov, 1, NUM), (int)(n - room));
	CHECK_EQ(((uint8_t *)iov[0].iov_base)[0], (uint8_t)room);
	CHECK(!vt_vq_dev_is_broken(p.dev));
	strict_pair_destroy(&p);
}

VT_TEST(strict_burst_the_device_iotlb_fills_up_in_posts_the_buffers_it_took)
{
	iotlb_full_midway(false);
	iotlb_full_midway(true);
}

/*
 * A buffer of three readable and two writable segments whose segment @bad the DMA cannot map
 * (outside shared memory), as a chain or (@indirect) an indirect table, whose segments are
 * mapped a direction's run at a time: the add fails with -EFAULT, and every segment mapped
 * before it is unmapped again (strict: the device no longer reaches it).
 */
static void chain_map_failure(bool packed, bool indirect, unsigned int bad)
{
	enum { NR = 3, NW = 2, N = NR + NW };
	static uint8_t private_buffer[LEN]; /* the driver's own: not shared */
	struct strict_pair p;
	struct iovec sg[N];

	iommu_pair_init_with(&p, packed, VT_DMA_IOMMU_STRICT, QSIZE, 0,
			     indirect ? VT_BIT(VIRTIO_F_INDIRECT_DESC) : 0);
	REQUIRE(p.dev != NULL);
	uint8_t *mem = (uint8_t *)p.region->hva + STRICT_SHM / 2;
	for (unsigned int i = 0; i < N; i++)
		sg[i] = (struct iovec){ mem + (size_t)i * 4096, LEN };
	sg[bad] = (struct iovec){ private_buffer, LEN };
	CHECK_EQ(vt_vq_drv_add(p.drv, sg, NR, NW, mem), -EFAULT);
	CHECK(!vt_vq_drv_is_broken(p.drv));
	struct vt_dma_stats st;
	vt_dma_get_stats(p.dma, &st);
	CHECK_EQ(st.maps, bad);
	CHECK_EQ(st.unmaps, bad);
	CHECK_EQ(buffers_reachable(p.feed.iotlb, mem, N * 4096), 0);
	/* Whole again, the chain posts, each run with its direction's permission. */
	sg[bad] = (struct iovec){ mem + (size_t)bad * 4096, LEN };
	REQUIRE_EQ(vt_vq_drv_add(p.drv, sg, NR, NW, mem), 0);
	CHECK_EQ(buffers_reachable(p.feed.iotlb, mem, N * 4096), N);
	vt_vq_drv_kick_prepare(p.drv);
	struct vt_vq_chain chain;
	struct iovec iov[N];
	REQUIRE_EQ(vt_vq_dev_pop(p.dev, &chain, iov, N), 0);
	CHECK_EQ(chain.nreadable, NR);
	CHECK_EQ(chain.nwritable, NW);
	CHECK_EQ(chain.ndesc, indirect ? 1 : N); /* an indirect table: one descriptor */
	CHECK(!vt_vq_dev_is_broken(p.dev));
	strict_pair_destroy(&p);
}

VT_TEST(a_buffer_the_dma_cannot_map_whole_is_refused_with_nothing_left_mapped)
{
	for (int packed = 0; packed < 2; packed++) {
		for (int indirect = 0; indirect < 2; indirect++) {
			chain_map_failure(packed, indirect, 1); /* in the readable run */
			/* In the writable run, after the readable one was mapped. */
			chain_map_failure(packed, indirect, 4);
		}
	}
}
