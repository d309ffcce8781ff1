/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user front-end against the real virtue back-end, in one process: the back-end serves
 * the other end of a socketpair (or a unix socket) on a thread, with the echo model
 * (tests/vu_echo.c: each buffer's readable bytes come back XORed in its writable part). Every DMA
 * mode, both ring formats, one and two queues, with every byte and used length checked;
 * ACCESS_PLATFORM negotiated exactly in the iommu and bounce modes. The front-end is the
 * back-end's IOMMU: a descriptor pointing at an IOVA it never mapped is not read (the miss goes
 * unanswered and the wait reports the fault), a write through a read-only mapping fails on the
 * back-end's side and is reported. The restricted-memory policy refuses a back-end without
 * ACCESS_PLATFORM. Hostile back-ends are in test_vhost_user_frontend_fake.c.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <virtue/dma.h>
#include <virtue/shm.h>
#include <virtue/spec/vhost_user.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/vhost_user_frontend.h>
#include <virtue/virtqueue.h>

#include "harness.h"
#include "vu_echo.h"
#include "vu_peer.h"

#define F(bit) VT_BIT(VIRTIO_F_##bit)
#define P(bit) VT_BIT(VHOST_USER_PROTOCOL_F_##bit)

#define SHM_GPA	 0x100000000ull
#define SHM_SIZE (8u << 20)
#define QSIZE	 64
#define BATCH	 24
#define ROUNDS	 6
#define WAIT_MS	 5000
#define POISON	 0xee
/* An IOVA no mode ever hands out (the allocator starts at 1 MiB and grows upwards). */
#define NEVER_MAPPED 0x7ff000000000ull

/* ---------------------------------------------------------------- the rig */

struct rig {
	struct vt_vhost_backend *be;
	struct vu_echo echo;
	pthread_t serve_thread;
	bool serving;
	int serve_fd, serve_rc;
	struct vt_shm *shm;
	struct vt_vu_frontend *fe;
	unsigned int released;
	int fds_before, maps_before;
};

static void *serve_main(void *arg)
{
	struct rig *g = arg;
	g->serve_rc = vt_vhost_backend_serve(g->be, g->serve_fd);
	return NULL;
}

/* @poll_us: vt_vhost_backend_params.poll_us (the I/O thread polls before it sleeps). */
static int rig_backend_polling(struct rig *g, unsigned int nqueues, uint64_t excluded,
			       unsigned int poll_us)
{
	memset(g, 0, sizeof(*g));
	g->fds_before = vu_count_fds();
	g->maps_before = vu_count_memfd_maps();
	struct vt_vhost_backend_params params = {
		.device_id = VIRTIO_ID_RNG,
		.name = "echo",
		.transport_features_excluded = excluded,
		.num_queues = nqueues,
		.max_queue_size = 256,
		.queue_ops = &vu_echo_ops,
		.opaque = &g->echo,
		/*
		 * One I/O thread: with two, a buffer slot one queue's thread wrote and another's
		 * read after the front-end reused it is ordered only through the kernel (eventfds
		 * passed as other fd numbers, memory mapped twice), which ThreadSanitizer cannot
		 * follow. The back-end's own tests cover its threads.
		 */
		.num_threads = 1,
		.poll_us = poll_us,
	};
	const struct vt_shm_region *r;
	int rc = vt_shm_new(&g->shm);
	if (rc == 0)
		rc = vt_shm_add_memfd(g->shm, SHM_SIZE, SHM_GPA, &r);
	if (rc == 0)
		rc = vt_vhost_backend_new(&params, &g->be);
	return rc;
}

static int rig_backend(struct rig *g, unsigned int nqueues, uint64_t excluded)
{
	return rig_backend_polling(g, nqueues, excluded, 0);
}

static struct vt_vu_frontend_params fe_params(struct rig *g, enum vt_dma_mode mode,
					      uint64_t supported)
{
	return (struct vt_vu_frontend_params){
		.fd = -1,
		.timeout_ms = WAIT_MS,
		.device_id = VIRTIO_ID_RNG,
		.supported = supported,
		.platform_dma = mode == VT_DMA_DIRECT ? VT_DMA_IOMMU_STRICT : mode,
		.shm = g->shm,
		.bounce_window_size = 2u << 20,
		.name = "fe",
	};
}

/* A socketpair: the back-end serves one end on a thread, the front-end connects the other. */
static int rig_connect(struct rig *g, struct vt_vu_frontend_params *p)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	g->serve_fd = sv[1];
	int rc = pthread_create(&g->serve_thread, NULL, serve_main, g);
	if (rc) {
		close(sv[0]);
		close(sv[1]);
		return -rc;
	}
	g->serving = true;
	p->fd = sv[0];
	return vt_vu_frontend_connect(p, &g->fe);
}

static void count_release(void *opaque, void *token)
{
	struct rig *g = opaque;
	g->released++;
}

static void rig_destroy(struct rig *g)
{
	if (g->fe)
		vt_vu_frontend_close(g->fe);
	if (g->serving) {
		pthread_join(g->serve_thread, NULL);
		CHECK_EQ(g->serve_rc, 0);
	}
	vt_vhost_backend_free(g->be);
	vt_shm_free(g->shm);
	CHECK_EQ(vu_count_fds(), g->fds_before);
	CHECK_EQ(vu_count_memfd_maps(), g->maps_before);
}

/* ---------------------------------------------------------------- buffers */

struct buffer {
	uint8_t *in, *out;
	uint32_t in_len, out_len;
	bool heap; /* bounce: the driver's buffers need not be shared at all */
	bool done;
};

static uint8_t *buf_alloc(struct rig *g, size_t len, bool heap)
{
	void *p = NULL;
	if (heap)
		return malloc(len);
	return vt_shm_alloc(g->shm, len, 64, &p) == 0 ? p : NULL;
}

static void buf_free(struct rig *g, struct buffer *b)
{
	if (b->heap) {
		free(b->in);
		free(b->out);
	} else {
		if (b->in)
			vt_shm_release(g->shm, b->in, b->in_len);
		if (b->out)
			vt_shm_release(g->shm, b->out, b->out_len);
	}
	b->in = b->out = NULL;
}

static int buf_make(struct rig *g, struct buffer *b, uint64_t *seed, bool heap)
{
	b->heap = heap;
	b->done = false;
	b->in_len = 1 + (uint32_t)(vt_test_rand(seed) % 3000);
	b->out_len = 1 + (uint32_t)(vt_test_rand(seed) % 3000);
	b->in = buf_alloc(g, b->in_len, heap);
	b->out = buf_alloc(g, b->out_len, heap);
	if (!b->in || !b->out)
		return -ENOMEM;
	for (uint32_t i = 0; i < b->in_len; i++)
		b->in[i] = (uint8_t)vt_test_rand(seed);
	memset(b->out, POISON, b->out_len);
	return 0;
}

/*
 * The echo model's answer, byte for byte, and nothing past it. Bounce copies the whole slot back,
 * which the DMA layer zeroed at map: past the answer the driver reads zeros, never stale data.
 */
static bool buf_check(const struct buffer *b, uint32_t len)
{
	uint8_t past = b->heap ? 0 : POISON;
	uint32_t want = b->in_len < b->out_len ? b->in_len : b->out_len;
	if (len != want)
		return false;
	for (uint32_t i = 0; i < want; i++)
		if (b->out[i] != (b->in[i] ^ VU_ECHO_XOR))
			return false;
	for (uint32_t i = want; i < b->out_len; i++)
		if (b->out[i] != past)
			return false;
	return true;
}

/* Posts @n buffers on queue @q (split across two readable segments when long). */
static int post(struct rig *g, unsigned int q, struct buffer *bufs, unsigned int n)
{
	struct vt_vq_drv *vq = vt_vu_frontend_vq(g->fe, q);
	for (unsigned int i = 0; i < n; i++) {
		struct buffer *b = &bufs[i];
		int rc = vu_echo_post(vq, b->in, b->in_len, b->out, b->out_len, 8, b);
		if (rc < 0)
			return rc;
	}
	return vt_vu_frontend_kick(g->fe, q);
}

/* Collects @n buffers from queue @q, each checked; every wait bounded. */
static int collect(struct rig *g, unsigned int q, unsigned int n)
{
	struct vt_vq_drv *vq = vt_vu_frontend_vq(g->fe, q);
	unsigned int got = 0;

	while (got < n) {
		void *token;
		uint32_t len;
		int rc;
		while ((rc = vt_vq_drv_get(vq, &token, &len)) == 0) {
			struct buffer *b = token;
			if (b->done || !buf_check(b, len))
				return -EBADMSG;
			b->done = true;
			got++;
		}
		if (rc != -EAGAIN)
			return rc;
		if (got == n)
			break;
		if (vt_vq_drv_enable_cb(vq))
			continue;
		rc = vt_vu_frontend_wait(g->fe, q, WAIT_MS);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---------------------------------------------------------------- the echo matrix */

/* One configuration end to end: negotiate, queues, ROUNDS x BATCH buffers per queue, reset. */
static void echo_run(enum vt_dma_mode mode, bool packed, unsigned int nqueues)
{
	struct rig g;
	uint64_t seed = vt_test_seed() ^ (mode * 131 + packed * 7 + nqueues);
	bool platform = mode != VT_DMA_DIRECT;
	uint64_t supported = F(VERSION_1) | F(EVENT_IDX) | F(INDIRECT_DESC) |
			     (packed ? F(RING_PACKED) : 0) | (platform ? F(ACCESS_PLATFORM) : 0);

	/* The two-queue rows with a polling I/O thread: invalidations and resets meet it busy. */
	unsigned int poll_us = nqueues == 2 ? 50 : 0;
	fprintf(stderr, "  row: %s, %s, %u queue(s)%s\n", vt_dma_mode_name(mode),
		packed ? "packed" : "split", nqueues, poll_us ? ", polling back-end" : "");
	REQUIRE_EQ(rig_backend_polling(&g, nqueues, 0, poll_us), 0);
	struct vt_vu_frontend_params p = fe_params(&g, mode, supported);
	REQUIRE_EQ(rig_connect(&g, &p), 0);
	CHECK_EQ(vt_vu_frontend_num_queues(g.fe), nqueues);
	REQUIRE_EQ(vt_vu_frontend_negotiate(g.fe), 0);

	uint64_t features = vt_vu_frontend_features(g.fe);
	CHECK_EQ((features & F(ACCESS_PLATFORM)) != 0, platform);
	CHECK_EQ((features & F(RING_PACKED)) != 0, packed);
	CHECK_EQ(vt_dma_mode(vt_vu_frontend_dma(g.fe)), mode);
	struct vt_vhost_backend_stats bs;
	vt_vhost_backend_get_stats(g.be, &bs);
	CHECK_EQ(bs.features, features);

	for (unsigned int q = 0; q < nqueues; q++)
		REQUIRE_EQ(vt_vu_frontend_queue_start(g.fe, q, QSIZE, 0), 0);
	REQUIRE_EQ(vt_vu_frontend_ready(g.fe), 0);

	struct buffer bufs[2][BATCH];
	memset(bufs, 0, sizeof(bufs));
	bool heap = mode == VT_DMA_BOUNCE;
	for (unsigned int round = 0; round < ROUNDS; round++) {
		for (unsigned int q = 0; q < nqueues; q++) {
			for (unsigned int i = 0; i < BATCH; i++)
				REQUIRE_EQ(buf_make(&g, &bufs[q][i], &seed, heap), 0);
			REQUIRE_EQ(post(&g, q, bufs[q], BATCH), 0);
		}
		for (unsigned int q = 0; q < nqueues; q++) {
			int rc = collect(&g, q, BATCH);
			if (rc)
				fprintf(stderr, "  round %u queue %u: %d\n", round, q, rc);
			/* Buffers may still be posted: leave them (and the rig) rather than free
			 * them. */
			REQUIRE_EQ(rc, 0);
			for (unsigned int i = 0; i < BATCH; i++)
				buf_free(&g, &bufs[q][i]);
		}
		if (vt_test_failed)
			break;
	}
	CHECK_EQ(atomic_load(&g.echo.buffers), (uint64_t)ROUNDS * BATCH * nqueues);
	for (unsigned int q = 0; q < nqueues; q++)
		CHECK_EQ(atomic_load(&g.echo.queue_buffers[q]), (uint64_t)ROUNDS * BATCH);

	struct vt_vu_frontend_stats st;
	vt_vu_frontend_get_stats(g.fe, &st);
	struct vt_dma_stats ds;
	vt_dma_get_stats(vt_vu_frontend_dma(g.fe), &ds);
	if (platform) {
		CHECK(st.iotlb_updates > 0);
		CHECK_EQ(st.misses_denied, 0);
		CHECK_EQ(st.access_fails, 0);
	} else {
		CHECK_EQ(st.iotlb_updates, 0);
		CHECK_EQ(st.mappings, 0);
	}
	if (mode == VT_DMA_IOMMU_STRICT)
		CHECK(st.iotlb_invalidations >= (uint64_t)ROUNDS * BATCH * nqueues);
	if (mode == VT_DMA_IOMMU_PREMAPPED || mode == VT_DMA_BOUNCE)
		CHECK(st.iotlb_updates <= 4); /* mapped once, however many buffers went */

	CHECK_EQ(vt_vu_frontend_reset(g.fe, count_release, &g), 0);
	CHECK_EQ(g.released, 0);
	rig_destroy(&g);
}

static void echo_matrix(enum vt_dma_mode mode)
{
	for (int packed = 0; packed < 2; packed++)
		for (unsigned int nq = 1; nq <= 2; nq++)
			echo_run(mode, packed, nq);
}

VT_TEST(direct_mode_without_access_platform_echoes_every_byte)
{
	echo_matrix(VT_DMA_DIRECT);
}

VT_TEST(strict_iommu_mode_publishes_each_mapping_and_echoes_every_byte)
{
	echo_matrix(VT_DMA_IOMMU_STRICT);
}

VT_TEST(lazy_iommu_mode_echoes_every_byte)
{
	echo_matrix(VT_DMA_IOMMU_LAZY);
}

VT_TEST(premapped_iommu_mode_maps_once_and_echoes_every_byte)
{
	echo_matrix(VT_DMA_IOMMU_PREMAPPED);
}

VT_TEST(bounce_mode_shares_only_the_window_and_echoes_every_byte)
{
	echo_matrix(VT_DMA_BOUNCE);
}

/* ---------------------------------------------------------------- the IOMMU refuses */

/*
 * Posts one buffer (64 readable, 64 writable bytes) on queue 0, lets @corrupt rewrite its
 * descriptors in ring memory (what a buggy or hostile driver could publish), then kicks.
 */
static void post_corrupted(struct rig *g, struct buffer *b, bool packed,
			   void (*corrupt)(uint8_t *desc))
{
	uint64_t seed = 1;
	REQUIRE_EQ(buf_make(g, b, &seed, false), 0);
	b->in_len = b->out_len = 64; /* smaller than allocated: release with the allocated size */
	struct iovec sg[2] = { { b->in, 64 }, { b->out, 64 } };
	struct vt_vq_drv *vq = vt_vu_frontend_vq(g->fe, 0);
	REQUIRE_EQ(vt_vq_drv_add(vq, sg, 1, 1, b), 0);
	uint64_t desc, driver, device;
	vt_vq_drv_addrs(vq, &desc, &driver, &device);
	void *hva;
	REQUIRE_EQ(vt_vu_frontend_bus_to_hva(g->fe, desc, 32, VT_ACCESS_RW, &hva), 0);
	corrupt(hva); /* split and packed descriptors both start with the 64-bit address */
	(void)packed;
	REQUIRE_EQ(vt_vu_frontend_kick(g->fe, 0), 0);
}

static void point_readable_at_unmapped(uint8_t *desc)
{
	uint64_t addr = NEVER_MAPPED;
	memcpy(desc, &addr, sizeof(addr));
}

static void point_writable_at_readable(uint8_t *desc)
{
	memcpy(desc + 16, desc, sizeof(uint64_t));
}

static void start_strict(struct rig *g, bool packed)
{
	uint64_t supported = F(VERSION_1) | F(ACCESS_PLATFORM) | (packed ? F(RING_PACKED) : 0);
	REQUIRE_EQ(rig_backend(g, 1, 0), 0);
	struct vt_vu_frontend_params p = fe_params(g, VT_DMA_IOMMU_STRICT, supported);
	REQUIRE_EQ(rig_connect(g, &p), 0);
	REQUIRE_EQ(vt_vu_frontend_negotiate(g->fe), 0);
	REQUIRE_EQ(vt_vu_frontend_queue_start(g->fe, 0, QSIZE, 0), 0);
	REQUIRE_EQ(vt_vu_frontend_ready(g->fe), 0);
}

VT_TEST(a_buffer_at_an_iova_never_mapped_is_not_read_and_the_wait_reports_the_fault)
{
	for (int packed = 0; packed < 2; packed++) {
		struct rig g;
		struct buffer b = { 0 };
		start_strict(&g, packed);
		REQUIRE(g.fe);
		uint32_t in_alloc, out_alloc;
		post_corrupted(&g, &b, packed, point_readable_at_unmapped);
		in_alloc = b.in_len, out_alloc = b.out_len;
		CHECK_EQ(vt_vu_frontend_wait(g.fe, 0, WAIT_MS), -EFAULT);

		struct vt_vu_frontend_stats st;
		vt_vu_frontend_get_stats(g.fe, &st);
		CHECK(st.misses_denied >= 1);
		CHECK_EQ(st.misses_answered, 0);
		CHECK_EQ(st.last_fault_iova, NEVER_MAPPED);
		CHECK_EQ(st.last_fault_perm, VHOST_ACCESS_RO);
		/* Nothing was read or written: the echo model never saw the buffer. */
		CHECK_EQ(atomic_load(&g.echo.buffers), 0);
		for (int i = 0; i < 64; i++)
			CHECK_EQ(b.out[i], POISON);
		struct vt_vhost_backend_queue_stats qs;
		REQUIRE_EQ(vt_vhost_backend_get_queue_stats(g.be, 0, &qs), 0);
		CHECK(qs.parked || qs.broken);
		CHECK(qs.misses >= 1);
		/* Still sticky: the device must be reset. */
		CHECK_EQ(vt_vu_frontend_wait(g.fe, 0, 10), -EFAULT);

		CHECK_EQ(vt_vu_frontend_reset(g.fe, count_release, &g), 0);
		CHECK_EQ(g.released, 1);
		CHECK_EQ(vt_vu_frontend_wait(g.fe, 0, 0), -EINVAL); /* no queue any more */
		b.in_len = in_alloc, b.out_len = out_alloc;
		buf_free(&g, &b);
		rig_destroy(&g);
	}
}

VT_TEST(a_write_through_a_read_only_mapping_fails_on_the_backend_and_is_reported)
{
	for (int packed = 0; packed < 2; packed++) {
		struct rig g;
		struct buffer b = { 0 };
		start_strict(&g, packed);
		REQUIRE(g.fe);
		post_corrupted(&g, &b, packed, point_writable_at_readable);
		uint32_t in_alloc = b.in_len, out_alloc = b.out_len;
		int rc = vt_vu_frontend_wait(g.fe, 0, WAIT_MS);
		CHECK(rc == -EIO || rc == -EFAULT);
		/* The ACCESS_FAIL travels on the channel: give it the same bounded time. */
		struct vt_vu_frontend_stats st;
		for (int i = 0; i < WAIT_MS; i += 10) {
			vt_vu_frontend_get_stats(g.fe, &st);
			if (st.access_fails)
				break;
			struct timespec ten = { .tv_nsec = 10000000 };
			nanosleep(&ten, NULL);
		}
		CHECK_EQ(st.access_fails, 1);
		CHECK_EQ(st.last_fault_perm, VHOST_ACCESS_WO);
		CHECK_EQ(atomic_load(&g.echo.buffers), 0);
		struct vt_vhost_backend_queue_stats qs;
		REQUIRE_EQ(vt_vhost_backend_get_queue_stats(g.be, 0, &qs), 0);
		CHECK(qs.broken);

		CHECK_EQ(vt_vu_frontend_reset(g.fe, count_release, &g), 0);
		CHECK_EQ(g.released, 1);
		b.in_len = in_alloc, b.out_len = out_alloc;
		buf_free(&g, &b);
		rig_destroy(&g);
	}
}

/* ---------------------------------------------------------------- policy and lifecycle */

VT_TEST(restricted_memory_refuses_a_backend_without_access_platform)
{
	struct rig g;
	REQUIRE_EQ(rig_backend(&g, 1, F(ACCESS_PLATFORM)), 0);
	struct vt_vu_frontend_params p =
	    fe_params(&g, VT_DMA_IOMMU_STRICT, F(VERSION_1) | F(ACCESS_PLATFORM));
	p.restricted_memory = true;
	REQUIRE_EQ(rig_connect(&g, &p), 0);
	CHECK_EQ(vt_vu_frontend_offered_features(g.fe) & F(ACCESS_PLATFORM), 0);
	CHECK_EQ(vt_vu_frontend_negotiate(g.fe), -EPERM);
	CHECK_EQ(vt_vu_frontend_features(g.fe), 0);
	CHECK(vt_vu_frontend_dma(g.fe) == NULL);
	CHECK_EQ(vt_vu_frontend_queue_start(g.fe, 0, QSIZE, 0), -EINVAL);
	rig_destroy(&g);
}

VT_TEST(restricted_memory_accepts_a_backend_with_access_platform)
{
	struct rig g;
	REQUIRE_EQ(rig_backend(&g, 1, 0), 0);
	struct vt_vu_frontend_params p =
	    fe_params(&g, VT_DMA_BOUNCE, F(VERSION_1) | F(ACCESS_PLATFORM));
	p.restricted_memory = true;
	REQUIRE_EQ(rig_connect(&g, &p), 0);
	CHECK_EQ(vt_vu_frontend_negotiate(g.fe), 0);
	CHECK(vt_vu_frontend_features(g.fe) & F(ACCESS_PLATFORM));
	rig_destroy(&g);
}

VT_TEST(direct_mode_is_refused_as_the_platform_mode)
{
	struct rig g;
	REQUIRE_EQ(rig_backend(&g, 1, 0), 0);
	struct vt_vu_frontend_params p =
	    fe_params(&g, VT_DMA_IOMMU_STRICT, F(VERSION_1) | F(ACCESS_PLATFORM));
	p.platform_dma = VT_DMA_DIRECT;
	int sv[2];
	REQUIRE_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	p.fd = sv[0]; /* taken over even when refused */
	struct vt_vu_frontend *fe = NULL;
	CHECK_EQ(vt_vu_frontend_connect(&p, &fe), -EINVAL);
	CHECK(fe == NULL);
	close(sv[1]);
	rig_destroy(&g);
}

VT_TEST(handshake_learns_queues_protocol_and_memory_slots)
{
	struct rig g;
	REQUIRE_EQ(rig_backend(&g, 2, 0), 0);
	struct vt_vu_frontend_params p = fe_params(&g, VT_DMA_DIRECT, F(VERSION_1));
	REQUIRE_EQ(rig_connect(&g, &p), 0);
	uint64_t want = P(MQ) | P(REPLY_ACK) | P(BACKEND_REQ) | P(CONFIG) | P(CONFIGURE_MEM_SLOTS) |
			P(STATUS) | P(RESET_DEVICE) | P(INFLIGHT_SHMFD);
	CHECK_EQ(vt_vu_frontend_protocol_features(g.fe), want);
	CHECK_EQ(vt_vu_frontend_num_queues(g.fe), 2);
	CHECK(vt_vu_frontend_max_mem_slots(g.fe) >= 8);
	CHECK(vt_vu_frontend_offered_features(g.fe) & F(VERSION_1));
	CHECK_EQ(vt_vu_frontend_offered_features(g.fe) & VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES), 0);
	struct vt_vhost_backend_stats bs;
	vt_vhost_backend_get_stats(g.be, &bs);
	CHECK_EQ(bs.protocol_features, want);
	rig_destroy(&g);
}

VT_TEST(set_mem_table_without_reply_ack_or_mem_slots_still_works)
{
	struct rig g;
	REQUIRE_EQ(rig_backend(&g, 1, 0), 0);
	struct vt_vu_frontend_params p =
	    fe_params(&g, VT_DMA_IOMMU_LAZY, F(VERSION_1) | F(ACCESS_PLATFORM));
	p.protocol_excluded = P(REPLY_ACK) | P(CONFIGURE_MEM_SLOTS) | P(STATUS);
	REQUIRE_EQ(rig_connect(&g, &p), 0);
	REQUIRE_EQ(vt_vu_frontend_negotiate(g.fe), 0);
	struct vt_vhost_backend_stats bs;
	vt_vhost_backend_get_stats(g.be, &bs);
	CHECK_EQ(bs.mem_regions, 1);
	REQUIRE_EQ(vt_vu_frontend_queue_start(g.fe, 0, QSIZE, 0), 0);
	REQUIRE_EQ(vt_vu_frontend_ready(g.fe), 0);
	struct buffer bufs[BATCH / 2]; /* no INDIRECT_DESC: three descriptors each */
	uint64_t seed = 42;
	for (unsigned int i = 0; i < BATCH / 2; i++)
		REQUIRE_EQ(buf_make(&g, &bufs[i], &seed, false), 0);
	REQUIRE_EQ(post(&g, 0, bufs, BATCH / 2), 0);
	REQUIRE_EQ(collect(&g, 0, BATCH / 2), 0);
	for (unsigned int i = 0; i < BATCH / 2; i++)
		buf_free(&g, &bufs[i]);
	rig_destroy(&g);
}

VT_TEST(reset_hands_back_posted_buffers_and_the_device_negotiates_again)
{
	struct rig g;
	REQUIRE_EQ(rig_backend(&g, 1, 0), 0);
	struct vt_vu_frontend_params p =
	    fe_params(&g, VT_DMA_IOMMU_STRICT, F(VERSION_1) | F(ACCESS_PLATFORM) | F(RING_PACKED));
	REQUIRE_EQ(rig_connect(&g, &p), 0);
	for (int pass = 0; pass < 2; pass++) {
		REQUIRE_EQ(vt_vu_frontend_negotiate(g.fe), 0);
		REQUIRE_EQ(vt_vu_frontend_queue_start(g.fe, 0, QSIZE, 0), 0);
		REQUIRE_EQ(vt_vu_frontend_ready(g.fe), 0);
		struct buffer bufs[4];
		uint64_t seed = 7;
		for (unsigned int i = 0; i < 4; i++)
			REQUIRE_EQ(buf_make(&g, &bufs[i], &seed, false), 0);
		REQUIRE_EQ(post(&g, 0, bufs, 4), 0);
		CHECK_EQ(collect(&g, 0, 4), 0);
		/* Posted, never kicked: the reset hands these back. */
		struct vt_vq_drv *vq = vt_vu_frontend_vq(g.fe, 0);
		struct iovec sg[2] = { { bufs[0].in, bufs[0].in_len },
				       { bufs[0].out, bufs[0].out_len } };
		CHECK_EQ(vt_vq_drv_add(vq, sg, 1, 1, &bufs[0]), 0);
		CHECK_EQ(vt_vq_drv_add(vq, sg, 1, 1, &bufs[1]), 0);
		uint32_t base = 0;
		CHECK_EQ(vt_vu_frontend_queue_stop(g.fe, 0, &base), 0);
		/* Four buffers of three descriptors: 12 slots, wrap counter 1 (used index above).
		 */
		CHECK_EQ(base & 0xffff, VT_VQ_PACKED_START + 12);
		g.released = 0;
		CHECK_EQ(vt_vu_frontend_reset(g.fe, count_release, &g), 0);
		CHECK_EQ(g.released, 2);
		struct vt_vu_frontend_stats st;
		vt_vu_frontend_get_stats(g.fe, &st);
		CHECK_EQ(st.mappings, 0); /* every translation invalidated */
		for (unsigned int i = 0; i < 4; i++)
			buf_free(&g, &bufs[i]);
	}
	rig_destroy(&g);
}

VT_TEST(config_space_reads_through_get_config)
{
	struct rig g;
	REQUIRE_EQ(rig_backend(&g, 1, 0), 0);
	static const uint8_t config[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
	vt_vhost_backend_free(g.be);
	struct vt_vhost_backend_params params = {
		.device_id = VIRTIO_ID_RNG,
		.num_queues = 1,
		.max_queue_size = 256,
		.config = config,
		.config_size = sizeof(config),
		.queue_ops = &vu_echo_ops,
		.opaque = &g.echo,
	};
	REQUIRE_EQ(vt_vhost_backend_new(&params, &g.be), 0);
	struct vt_vu_frontend_params p = fe_params(&g, VT_DMA_DIRECT, F(VERSION_1));
	REQUIRE_EQ(rig_connect(&g, &p), 0);
	uint8_t got[8];
	CHECK_EQ(vt_vu_frontend_config_read(g.fe, 4, got, sizeof(got)), 0);
	CHECK(memcmp(got, config + 4, sizeof(got)) == 0);
	CHECK_EQ(vt_vu_frontend_config_read(g.fe, 250, got, sizeof(got)), -EINVAL);
	/* The echo model's config is read-only: the back-end refuses, the ack says so. */
	CHECK_EQ(vt_vu_frontend_config_write(g.fe, 0, got, 1), -EPROTO);
	rig_destroy(&g);
}

/* ---------------------------------------------------------------- unix sockets */

struct listener {
	struct rig *g;
	int lfd;
};

static void *accept_main(void *arg)
{
	struct listener *l = arg;
	struct pollfd pfd = { .fd = l->lfd, .events = POLLIN };
	if (poll(&pfd, 1, WAIT_MS) == 1) {
		int fd = accept4(l->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			l->g->serve_rc = vt_vhost_backend_serve(l->g->be, fd);
	}
	return NULL;
}

VT_TEST(connects_by_path_and_times_out_when_nobody_listens)
{
	char dir[] = "/tmp/vt-fe-XXXXXX";
	REQUIRE(mkdtemp(dir));
	char path[108];
	snprintf(path, sizeof(path), "%s/sock", dir);

	struct rig g;
	REQUIRE_EQ(rig_backend(&g, 1, 0), 0);
	struct vt_vu_frontend_params p = fe_params(&g, VT_DMA_DIRECT, F(VERSION_1));
	p.socket_path = path;
	p.connect_timeout_ms = 100;
	struct vt_vu_frontend *fe = NULL;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = vt_vu_frontend_connect(&p, &fe);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK(rc == -ENOENT || rc == -ECONNREFUSED);
	CHECK(t1.tv_sec - t0.tv_sec < 3);

	struct listener l = { .g = &g };
	l.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	strcpy(addr.sun_path, path);
	REQUIRE_EQ(bind(l.lfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	REQUIRE_EQ(listen(l.lfd, 1), 0);
	REQUIRE_EQ(pthread_create(&g.serve_thread, NULL, accept_main, &l), 0);
	g.serving = true;
	p.connect_timeout_ms = WAIT_MS;
	REQUIRE_EQ(vt_vu_frontend_connect(&p, &g.fe), 0);
	REQUIRE_EQ(vt_vu_frontend_negotiate(g.fe), 0);
	REQUIRE_EQ(vt_vu_frontend_queue_start(g.fe, 0, QSIZE, 0), 0);
	REQUIRE_EQ(vt_vu_frontend_ready(g.fe), 0);
	struct buffer b;
	uint64_t seed = 3;
	REQUIRE_EQ(buf_make(&g, &b, &seed, false), 0);
	REQUIRE_EQ(post(&g, 0, &b, 1), 0);
	CHECK_EQ(collect(&g, 0, 1), 0);
	buf_free(&g, &b);
	vt_vu_frontend_close(g.fe);
	g.fe = NULL;
	close(l.lfd);
	unlink(path);
	rmdir(dir);
	rig_destroy(&g);
}

/* A back-end that dials the front-end (server mode), once the path exists. */
struct dialer {
	struct rig *g;
	const char *path;
};

static void *dial_main(void *arg)
{
	struct dialer *d = arg;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	strcpy(addr.sun_path, d->path);
	for (int tries = 0; tries < WAIT_MS / 10; tries++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return NULL;
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
			d->g->serve_rc = vt_vhost_backend_serve(d->g->be, fd);
			return NULL;
		}
		close(fd);
		struct timespec pause = { .tv_nsec = 10 * 1000000L };
		nanosleep(&pause, NULL);
	}
	return NULL;
}

VT_TEST(server_mode_waits_for_the_back_end_and_times_out_without_one)
{
	char dir[] = "/tmp/vt-fe-XXXXXX";
	REQUIRE(mkdtemp(dir));
	char path[108];
	snprintf(path, sizeof(path), "%s/sock", dir);

	struct rig g;
	REQUIRE_EQ(rig_backend(&g, 1, 0), 0);
	struct vt_vu_frontend_params p = fe_params(&g, VT_DMA_DIRECT, F(VERSION_1));
	p.socket_path = path;
	p.server = true;
	p.connect_timeout_ms = 100;
	struct vt_vu_frontend *fe = NULL;
	CHECK_EQ(vt_vu_frontend_connect(&p, &fe), -ETIMEDOUT);
	CHECK(access(path, F_OK) != 0); /* the socket is not left behind */

	struct dialer d = { .g = &g, .path = path };
	REQUIRE_EQ(pthread_create(&g.serve_thread, NULL, dial_main, &d), 0);
	g.serving = true;
	p.connect_timeout_ms = WAIT_MS;
	REQUIRE_EQ(vt_vu_frontend_connect(&p, &g.fe), 0);
	CHECK(access(path, F_OK) != 0);
	REQUIRE_EQ(vt_vu_frontend_negotiate(g.fe), 0);
	REQUIRE_EQ(vt_vu_frontend_queue_start(g.fe, 0, QSIZE, 0), 0);
	REQUIRE_EQ(vt_vu_frontend_ready(g.fe), 0);
	struct buffer b;
	uint64_t seed = 5;
	REQUIRE_EQ(buf_make(&g, &b, &seed, false), 0);
	REQUIRE_EQ(post(&g, 0, &b, 1), 0);
	CHECK_EQ(collect(&g, 0, 1), 0);
	buf_free(&g, &b);
	vt_vu_frontend_close(g.fe);
	g.fe = NULL;
	rmdir(dir);
	rig_destroy(&g);
}
