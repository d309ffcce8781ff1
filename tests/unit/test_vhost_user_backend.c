/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user back-end's data path, end to end: the real driver half (vt_vq_drv over direct
 * DMA in memfd memory) posts buffers, the memory goes to the back-end with SET_MEM_TABLE, kicks
 * and calls travel through eventfds, and the echo model (tests/vu_echo.c) answers each buffer
 * with its readable bytes XORed. Every byte and every used length is checked. With
 * VIRTIO_F_ACCESS_PLATFORM the back-end starts with an empty IOTLB: the test answers each MISS on
 * the back-end channel with an UPDATE (iova = driver-physical address, uaddr = this process's
 * address) and sees the queue resume; a read-only mapping of a buffer the device must write is
 * reported as ACCESS_FAIL and breaks the queue. Also: two I/O threads for four queues, reconnect,
 * and GET_VRING_BASE / SET_VRING_BASE. Every wait is bounded (VU_PEER_WAIT_MS).
 */
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <virtue/dma.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/virtqueue.h>

#include "harness.h"
#include "vu_echo.h"
#include "vu_peer.h"

#define F(bit) VT_BIT(VIRTIO_F_##bit)
#define P(bit) VT_BIT(VHOST_USER_PROTOCOL_F_##bit)
#define PROTOCOL_ALL                                                                               \
	(P(MQ) | P(REPLY_ACK) | P(BACKEND_REQ) | P(CONFIG) | P(RESET_DEVICE) |                     \
	 P(CONFIGURE_MEM_SLOTS) | P(STATUS))

#define MAX_QUEUES 4
#define QSIZE	   64
#define SHM_GPA	   0x100000000ull
#define SHM_SIZE   (4u << 20)
#define PAGE	   4096u
#define BATCH	   16 /* buffers per round: 3 descriptors each */
#define ROUNDS	   8

/* ---------------------------------------------------------------- the rig */

struct buffer {
	uint8_t *in[2], *out[2];
	uint32_t in_len[2], out_len[2];
	uint32_t readable, writable;
	bool collected;
};

/*
 * Each queue's buffers come from an arena of its own, reused round after round: memory never
 * passes from one queue (one back-end I/O thread) to another. The back-end reaches it through a
 * second mapping of the memfd, so ThreadSanitizer could not see the ordering the test's own
 * thread provides between two I/O threads touching the same bytes.
 */
#define ARENA_SIZE (64u << 10)

struct driver_queue {
	struct vt_vq_drv *drv;
	int kick, call;
	uint8_t *arena;
	size_t arena_used;
	struct buffer bufs[BATCH];
	unsigned int posted, collected;
	uint64_t total_buffers; /* posted since the ring was created */
	uint64_t total_descs;	/* descriptors those took */
};

/* How the test answers IOTLB misses. */
enum miss_policy {
	MISS_MAP_REGION, /* the whole shared region, read-write */
	MISS_MAP_PAGE,	 /* the page that missed, read-write, except the read-only page */
};

struct rig {
	struct vt_vhost_backend *be;
	struct vu_echo echo;
	struct vu_peer peer;
	struct vt_shm *shm;
	const struct vt_shm_region *region;
	struct vt_dma *dma;
	uint64_t features;
	unsigned int nqueues;
	struct driver_queue q[MAX_QUEUES];

	enum miss_policy policy;
	uint64_t ro_page; /* MISS_MAP_PAGE: this page is mapped read-only (0: none) */
	unsigned int misses;
	struct vhost_iotlb_msg first_miss;
	bool access_failed;
	struct vhost_iotlb_msg access_fail;
	uint64_t seed;
	int fds_before, maps_before;
};

static int rig_init(struct rig *g, unsigned int nqueues, unsigned int threads)
{
	memset(g, 0, sizeof(*g));
	g->fds_before = vu_count_fds();
	g->maps_before = vu_count_memfd_maps();
	g->nqueues = nqueues;
	g->seed = vt_test_seed();
	g->peer.sock = g->peer.chan = -1;
	for (unsigned int i = 0; i < MAX_QUEUES; i++)
		g->q[i].kick = g->q[i].call = -1;
	int rc = vt_shm_new(&g->shm);
	if (rc == 0)
		rc = vt_shm_add_memfd(g->shm, SHM_SIZE, SHM_GPA, &g->region);
	if (rc < 0)
		return rc;
	struct vt_dma_params dp = { .mode = VT_DMA_DIRECT, .shm = g->shm };
	rc = vt_dma_new(&dp, &g->dma);
	if (rc < 0)
		return rc;
	struct vt_vhost_backend_params params = {
		.device_id = VIRTIO_ID_RNG,
		.name = "echo",
		.num_queues = nqueues,
		.max_queue_size = 256,
		.queue_ops = &vu_echo_ops,
		.opaque = &g->echo,
		.num_threads = threads,
	};
	return vt_vhost_backend_new(&params, &g->be);
}

static void driver_queue_free(struct rig *g, struct driver_queue *q)
{
	if (q->drv) {
		while (vt_vq_drv_detach_unused(q->drv)) {
		}
		vt_vq_drv_free(q->drv);
	}
	if (q->arena)
		vt_shm_release(g->shm, q->arena, ARENA_SIZE);
	if (q->kick >= 0)
		close(q->kick);
	if (q->call >= 0)
		close(q->call);
	memset(q, 0, sizeof(*q));
	q->kick = q->call = -1;
}

/* Connects a front-end: handshake with @features, back-end channel, memory table. */
static int rig_connect(struct rig *g, uint64_t features)
{
	g->features = F(VERSION_1) | features;
	int rc = vu_peer_connect(&g->peer, g->be);
	if (rc == 0)
		rc = vu_peer_handshake(&g->peer, g->features, PROTOCOL_ALL);
	if (rc == 0)
		rc = vu_peer_open_channel(&g->peer);
	if (rc == 0)
		rc = vu_peer_set_mem_table(&g->peer, g->shm);
	return rc > 0 ? -EPROTO : rc;
}

/* Ring addresses as the front-end gives them: IOVAs under ACCESS_PLATFORM, else its own. */
static uint64_t ring_addr(struct rig *g, uint64_t bus)
{
	return (g->features & F(ACCESS_PLATFORM)) ? bus : vu_peer_uaddr(g->shm, bus);
}

static uint16_t fresh_base(const struct rig *g)
{
	return (g->features & F(RING_PACKED)) ? VT_VQ_PACKED_START : 0;
}

/* Creates the driver half of queue @i (unless it exists) and starts the ring at @base. */
static int queue_start(struct rig *g, unsigned int i, uint32_t base)
{
	struct driver_queue *q = &g->q[i];
	int rc;

	if (!q->drv) {
		struct vt_vq_drv_params p = {
			.num = QSIZE, .features = g->features, .dma = g->dma, .name = "test-driver"
		};
		rc = vt_vq_drv_new(&p, &q->drv);
		if (rc < 0)
			return rc;
		q->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		q->call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (q->kick < 0 || q->call < 0)
			return -errno;
	}
	uint64_t desc, driver, device;
	vt_vq_drv_addrs(q->drv, &desc, &driver, &device);
	struct vhost_vring_addr a = { .index = i,
				      .desc_user_addr = ring_addr(g, desc),
				      .avail_user_addr = ring_addr(g, driver),
				      .used_user_addr = ring_addr(g, device) };
	uint64_t index = i;
	if ((rc = vu_peer_ack_state(&g->peer, VHOST_USER_SET_VRING_NUM, i, QSIZE)) != 0 ||
	    (rc = vu_peer_ack(&g->peer, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0)) != 0 ||
	    (rc = vu_peer_ack_state(&g->peer, VHOST_USER_SET_VRING_BASE, i, base)) != 0 ||
	    (rc = vu_peer_ack(&g->peer, VHOST_USER_SET_VRING_CALL, &index, 8, &q->call, 1)) != 0 ||
	    (rc = vu_peer_ack_state(&g->peer, VHOST_USER_SET_VRING_ENABLE, i, 1)) != 0 ||
	    (rc = vu_peer_ack(&g->peer, VHOST_USER_SET_VRING_KICK, &index, 8, &q->kick, 1)) != 0)
		return rc > 0 ? -EPROTO : rc;
	return 0;
}

static void rig_destroy(struct rig *g)
{
	if (g->peer.serving) {
		CHECK_EQ(vu_peer_disconnect(&g->peer), 0);
	}
	for (unsigned int i = 0; i < MAX_QUEUES; i++)
		driver_queue_free(g, &g->q[i]);
	vt_vhost_backend_free(g->be);
	vt_dma_free(g->dma);
	vt_shm_free(g->shm);
	CHECK_EQ(vu_count_fds(), g->fds_before);
	CHECK_EQ(vu_count_memfd_maps(), g->maps_before);
}

/* ---------------------------------------------------------------- IOTLB answers */

static int iotlb_update(struct rig *g, uint64_t iova, uint64_t size, uint8_t perm)
{
	struct vhost_iotlb_msg m = { .iova = iova,
				     .size = size,
				     .uaddr = vu_peer_uaddr(g->shm, iova),
				     .perm = perm,
				     .type = VHOST_IOTLB_UPDATE };

	return vu_peer_ack(&g->peer, VHOST_USER_IOTLB_MSG, &m, sizeof(m), NULL, 0);
}

static int iotlb_invalidate(struct rig *g, uint64_t iova, uint64_t size)
{
	struct vhost_iotlb_msg m = { .iova = iova, .size = size, .type = VHOST_IOTLB_INVALIDATE };

	return vu_peer_ack(&g->peer, VHOST_USER_IOTLB_MSG, &m, sizeof(m), NULL, 0);
}

/* Reads one back-end message: answers a MISS, records an ACCESS_FAIL. 0 or -errno. */
static int serve_channel(struct rig *g)
{
	struct vhost_iotlb_msg m;
	int rc = vu_peer_recv_iotlb(&g->peer, &m, VU_PEER_WAIT_MS);

	if (rc < 0)
		return rc;
	if (m.type == VHOST_IOTLB_ACCESS_FAIL) {
		g->access_failed = true;
		g->access_fail = m;
		return -EACCES;
	}
	if (m.type != VHOST_IOTLB_MISS)
		return -EBADMSG;
	if (g->misses++ == 0)
		g->first_miss = m;
	if (m.iova < SHM_GPA || m.iova - SHM_GPA >= SHM_SIZE)
		return -EFAULT; /* the back-end asked for something the driver never gave it */
	if (g->policy == MISS_MAP_REGION)
		return iotlb_update(g, SHM_GPA, SHM_SIZE, VHOST_ACCESS_RW) ? -EPROTO : 0;
	uint64_t page = m.iova & ~(uint64_t)(PAGE - 1);
	uint8_t perm = page == g->ro_page ? VHOST_ACCESS_RO : VHOST_ACCESS_RW;
	return iotlb_update(g, page, PAGE, perm) ? -EPROTO : 0;
}

/*
 * Waits for a call on any queue that still has buffers out, serving the back-end channel
 * meanwhile. 0 when a call came, -ETIMEDOUT, -EACCES (an ACCESS_FAIL arrived), or -errno.
 */
static int wait_calls(struct rig *g)
{
	struct pollfd pfd[MAX_QUEUES + 1];
	unsigned int n = 0;

	for (unsigned int i = 0; i < g->nqueues; i++)
		if (g->q[i].drv && g->q[i].collected < g->q[i].posted)
			pfd[n++] = (struct pollfd){ .fd = g->q[i].call, .events = POLLIN };
	pfd[n++] = (struct pollfd){ .fd = g->peer.chan, .events = POLLIN };
	for (;;) {
		int r = poll(pfd, n, VU_PEER_WAIT_MS);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		if (pfd[n - 1].revents) {
			int rc = serve_channel(g);
			if (rc < 0)
				return rc;
		}
		bool called = false;
		for (unsigned int i = 0; i + 1 < n; i++) {
			uint64_t v;
			if (pfd[i].revents && read(pfd[i].fd, &v, sizeof(v)) == sizeof(v))
				called = true;
		}
		if (called)
			return 0;
	}
}

/* ---------------------------------------------------------------- traffic */

/* @len bytes aligned to @align (a power of two, at most PAGE) from queue @q's arena. */
static uint8_t *alloc_bytes(struct rig *g, struct driver_queue *q, uint32_t len, size_t align)
{
	if (!q->arena) {
		void *p = NULL;
		if (vt_shm_alloc(g->shm, ARENA_SIZE, PAGE, &p) < 0)
			return NULL;
		q->arena = p;
	}
	size_t at = (q->arena_used + align - 1) & ~(align - 1);
	if (at + len > ARENA_SIZE)
		return NULL;
	q->arena_used = at + len;
	return q->arena + at;
}

/*
 * Posts BATCH buffers on queue @qi: two readable segments of random bytes and one or two
 * writable ones (sometimes smaller than what is read), and kicks if the ring asks for it.
 * @out_page: the first buffer's writable part gets a page of its own (returned), for the
 * read-only mapping test.
 */
static int post_batch(struct rig *g, unsigned int qi, uint64_t *out_page)
{
	struct driver_queue *q = &g->q[qi];

	for (unsigned int i = 0; i < BATCH; i++) {
		struct buffer *b = &q->bufs[i];
		uint64_t r = vt_test_rand(&g->seed);
		b->in_len[0] = 1 + (uint32_t)(r % 200);
		b->in_len[1] = 1 + (uint32_t)((r >> 8) % 300);
		b->readable = b->in_len[0] + b->in_len[1];
		b->out_len[0] = 1 + (uint32_t)((r >> 20) % (b->readable + 40));
		b->out_len[1] = (r >> 40) & 1 ? 1 + (uint32_t)((r >> 32) % 64) : 0;
		bool own_page = out_page && i == 0;
		if (own_page)
			b->out_len[0] = PAGE, b->out_len[1] = 0;
		b->writable = b->out_len[0] + b->out_len[1];
		b->collected = false;
		struct iovec sg[4];
		unsigned int n = 0;
		for (int k = 0; k < 2; k++) {
			b->in[k] = alloc_bytes(g, q, b->in_len[k], 64);
			if (!b->in[k])
				return -ENOMEM;
			for (uint32_t j = 0; j < b->in_len[k]; j++)
				b->in[k][j] = (uint8_t)(vt_test_rand(&g->seed) >> 56);
			sg[n++] = (struct iovec){ b->in[k], b->in_len[k] };
		}
		for (int k = 0; k < 2 && b->out_len[k]; k++) {
			b->out[k] = alloc_bytes(g, q, b->out_len[k], own_page ? PAGE : 64);
			if (!b->out[k])
				return -ENOMEM;
			memset(b->out[k], 0xee, b->out_len[k]);
			sg[n++] = (struct iovec){ b->out[k], b->out_len[k] };
		}
		if (own_page)
			*out_page = SHM_GPA + (uint64_t)(b->out[0] - (uint8_t *)g->region->hva);
		int rc = vt_vq_drv_add(q->drv, sg, 2, n - 2, b);
		if (rc < 0)
			return rc;
		q->posted++;
		q->total_buffers++;
		q->total_descs += n;
	}
	if (vt_vq_drv_kick_prepare(q->drv)) {
		uint64_t one = 1;
		if (write(q->kick, &one, sizeof(one)) != sizeof(one))
			return -errno;
	}
	return 0;
}

/* Checks a used buffer: the echo of what was read, and nothing past it written. */
static bool check_buffer(const struct buffer *b, uint32_t len)
{
	uint32_t want = b->readable < b->writable ? b->readable : b->writable;
	if (len != want) {
		fprintf(stderr, "  used length %u, expected %u\n", len, want);
		return false;
	}
	uint32_t pos = 0;
	for (int k = 0; k < 2; k++) {
		for (uint32_t j = 0; j < b->out_len[k]; j++, pos++) {
			uint8_t got = b->out[k][j];
			uint8_t expect = 0xee;
			if (pos < want) {
				uint32_t at = pos < b->in_len[0] ? pos : pos - b->in_len[0];
				expect = b->in[pos < b->in_len[0] ? 0 : 1][at] ^ VU_ECHO_XOR;
			}
			if (got != expect) {
				fprintf(stderr, "  byte %u: 0x%02x, expected 0x%02x\n", pos, got,
					expect);
				return false;
			}
		}
	}
	return true;
}

/* The round's buffers are done with: the queue's arena is free again. */
static void release_batch(struct driver_queue *q)
{
	for (unsigned int i = 0; i < BATCH; i++)
		for (int k = 0; k < 2; k++)
			q->bufs[i].in[k] = q->bufs[i].out[k] = NULL;
	q->arena_used = 0;
	q->posted = q->collected = 0;
}

/* Collects every posted buffer of every queue, checking each. 0 or -errno. */
static int collect_all(struct rig *g)
{
	for (;;) {
		bool pending = false;
		for (unsigned int i = 0; i < g->nqueues; i++) {
			struct driver_queue *q = &g->q[i];
			void *token;
			uint32_t len;
			while (q->drv && q->collected < q->posted) {
				int rc = vt_vq_drv_get(q->drv, &token, &len);
				if (rc == -EAGAIN) {
					if (vt_vq_drv_enable_cb(q->drv))
						continue;
					pending = true;
					break;
				}
				if (rc < 0)
					return rc;
				struct buffer *b = token;
				if (b->collected || !check_buffer(b, len))
					return -EBADMSG;
				b->collected = true;
				q->collected++;
			}
		}
		if (!pending)
			break;
		int rc = wait_calls(g);
		if (rc < 0)
			return rc;
	}
	for (unsigned int i = 0; i < g->nqueues; i++)
		release_batch(&g->q[i]);
	return 0;
}

/* @rounds rounds of a batch on every started queue. */
static int traffic(struct rig *g, unsigned int rounds)
{
	for (unsigned int r = 0; r < rounds; r++) {
		for (unsigned int i = 0; i < g->nqueues; i++) {
			if (!g->q[i].drv)
				continue;
			int rc = post_batch(g, i, NULL);
			if (rc < 0)
				return rc;
		}
		int rc = collect_all(g);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---------------------------------------------------------------- echo in every format */

static void run_echo(uint64_t features)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 1, 1), 0);
	REQUIRE_EQ(rig_connect(&g, features), 0);
	REQUIRE_EQ(queue_start(&g, 0, fresh_base(&g)), 0);
	CHECK_EQ(traffic(&g, ROUNDS), 0);
	CHECK_EQ(g.echo.buffers, ROUNDS * BATCH);
	CHECK_EQ(g.echo.features, g.features);
	struct vt_vhost_backend_queue_stats qs;
	CHECK_EQ(vt_vhost_backend_get_queue_stats(g.be, 0, &qs), 0);
	CHECK(qs.running && qs.enabled && !qs.broken && !qs.parked);
	CHECK(qs.kicks >= 1);
	CHECK(qs.calls >= 1);
	CHECK_EQ(qs.misses, 0);
	rig_destroy(&g);
}

VT_TEST(split_ring_echoes_every_byte)
{
	run_echo(0);
}

VT_TEST(split_ring_with_event_idx_echoes_every_byte)
{
	run_echo(F(EVENT_IDX));
}

VT_TEST(packed_ring_echoes_every_byte)
{
	run_echo(F(RING_PACKED));
}

VT_TEST(packed_ring_with_event_idx_echoes_every_byte)
{
	run_echo(F(RING_PACKED) | F(EVENT_IDX));
}

/* ---------------------------------------------------------------- IOTLB */

static void run_miss_then_resume(uint64_t features)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 1, 1), 0);
	REQUIRE_EQ(rig_connect(&g, F(ACCESS_PLATFORM) | features), 0);
	REQUIRE_EQ(queue_start(&g, 0, fresh_base(&g)), 0);
	CHECK_EQ(traffic(&g, ROUNDS), 0);
	/* Nothing was mapped: the first access (a ring) missed, once, and one UPDATE did it. */
	CHECK_EQ(g.misses, 1);
	CHECK_EQ(g.first_miss.type, VHOST_IOTLB_MISS);
	uint64_t desc, driver, device;
	vt_vq_drv_addrs(g.q[0].drv, &desc, &driver, &device);
	CHECK(g.first_miss.iova == desc || g.first_miss.iova == driver ||
	      g.first_miss.iova == device);
	CHECK(g.first_miss.perm != 0);
	struct vt_vhost_backend_queue_stats qs;
	CHECK_EQ(vt_vhost_backend_get_queue_stats(g.be, 0, &qs), 0);
	CHECK_EQ(qs.misses, 1);
	CHECK(!qs.parked && !qs.broken);
	struct vt_vhost_backend_stats st;
	vt_vhost_backend_get_stats(g.be, &st);
	CHECK_EQ(st.iotlb_updates, 1);
	CHECK(st.iotlb_hits > 0);
	CHECK_EQ(g.echo.buffers, ROUNDS * BATCH);

	/* Invalidated: the next round misses again, and resumes again. */
	CHECK_EQ(iotlb_invalidate(&g, SHM_GPA, SHM_SIZE), 0);
	CHECK_EQ(traffic(&g, 2), 0);
	CHECK_EQ(g.misses, 2);
	CHECK_EQ(vt_vhost_backend_get_queue_stats(g.be, 0, &qs), 0);
	CHECK_EQ(qs.misses, 2);
	vt_vhost_backend_get_stats(g.be, &st);
	CHECK_EQ(st.iotlb_invalidates, 1);
	CHECK_EQ(g.echo.buffers, (ROUNDS + 2) * BATCH);
	rig_destroy(&g);
}

VT_TEST(iotlb_miss_on_the_ring_is_answered_and_the_split_queue_resumes)
{
	run_miss_then_resume(F(EVENT_IDX));
}

VT_TEST(iotlb_miss_on_the_ring_is_answered_and_the_packed_queue_resumes)
{
	run_miss_then_resume(F(RING_PACKED));
}

VT_TEST(iotlb_misses_page_by_page_are_each_answered)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 1, 1), 0);
	g.policy = MISS_MAP_PAGE;
	REQUIRE_EQ(rig_connect(&g, F(ACCESS_PLATFORM)), 0);
	REQUIRE_EQ(queue_start(&g, 0, 0), 0);
	CHECK_EQ(traffic(&g, 2), 0);
	/* The rings and the buffers span several pages: one miss each, all answered. */
	CHECK(g.misses >= 3);
	struct vt_vhost_backend_stats st;
	vt_vhost_backend_get_stats(g.be, &st);
	CHECK_EQ(st.iotlb_updates, g.misses);
	CHECK_EQ(g.echo.buffers, 2 * BATCH);
	rig_destroy(&g);
}

VT_TEST(read_only_mapping_of_a_device_writable_buffer_reports_access_fail)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 1, 1), 0);
	g.policy = MISS_MAP_PAGE;
	REQUIRE_EQ(rig_connect(&g, F(ACCESS_PLATFORM)), 0);
	REQUIRE_EQ(queue_start(&g, 0, 0), 0);
	uint64_t page = 0;
	REQUIRE_EQ(post_batch(&g, 0, &page), 0);
	REQUIRE(page != 0 && (page & (PAGE - 1)) == 0);
	g.ro_page = page;
	CHECK_EQ(collect_all(&g), -EACCES);
	CHECK(g.access_failed);
	CHECK_EQ(g.access_fail.type, VHOST_IOTLB_ACCESS_FAIL);
	CHECK(g.access_fail.iova >= page && g.access_fail.iova < page + PAGE);
	CHECK(g.access_fail.perm & VHOST_ACCESS_WO);
	/* The queue is broken, the device needs a reset, and nothing was used. */
	struct vt_vhost_backend_queue_stats qs;
	CHECK_EQ(vt_vhost_backend_get_queue_stats(g.be, 0, &qs), 0);
	CHECK(qs.broken);
	uint64_t status = 0;
	CHECK_EQ(vu_peer_get_u64(&g.peer, VHOST_USER_GET_STATUS, &status), 0);
	CHECK(status & VIRTIO_CONFIG_S_NEEDS_RESET);
	CHECK_EQ(g.echo.buffers, 0);
	rig_destroy(&g);
}

/* ---------------------------------------------------------------- queues and threads */

VT_TEST(two_io_threads_serve_four_queues_at_once)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 4, 2), 0);
	REQUIRE_EQ(rig_connect(&g, F(EVENT_IDX)), 0);
	for (unsigned int i = 0; i < 4; i++)
		REQUIRE_EQ(queue_start(&g, i, 0), 0);
	CHECK_EQ(traffic(&g, ROUNDS), 0);
	for (unsigned int i = 0; i < 4; i++)
		CHECK_EQ(g.echo.queue_buffers[i], ROUNDS * BATCH);
	rig_destroy(&g);
}

VT_TEST(a_disabled_queue_waits_for_set_vring_enable)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 1, 1), 0);
	REQUIRE_EQ(rig_connect(&g, 0), 0);
	REQUIRE_EQ(queue_start(&g, 0, 0), 0);
	CHECK_EQ(vu_peer_ack_state(&g.peer, VHOST_USER_SET_VRING_ENABLE, 0, 0), 0);
	REQUIRE_EQ(post_batch(&g, 0, NULL), 0);
	/* Kicked, but disabled: nothing comes back. */
	struct pollfd pfd = { .fd = g.q[0].call, .events = POLLIN };
	CHECK_EQ(poll(&pfd, 1, 100), 0);
	CHECK_EQ(g.echo.buffers, 0);
	CHECK_EQ(vu_peer_ack_state(&g.peer, VHOST_USER_SET_VRING_ENABLE, 0, 1), 0);
	CHECK_EQ(collect_all(&g), 0);
	CHECK_EQ(g.echo.buffers, BATCH);
	rig_destroy(&g);
}

/* ---------------------------------------------------------------- connection life */

VT_TEST(reconnect_serves_a_new_front_end)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 1, 1), 0);
	REQUIRE_EQ(rig_connect(&g, F(EVENT_IDX)), 0);
	REQUIRE_EQ(queue_start(&g, 0, 0), 0);
	CHECK_EQ(traffic(&g, 2), 0);
	/* The front-end goes away: serve returns 0 with the queue stopped and memory unmapped. */
	CHECK_EQ(vu_peer_disconnect(&g.peer), 0);
	struct vt_vhost_backend_stats st;
	vt_vhost_backend_get_stats(g.be, &st);
	CHECK_EQ(st.mem_regions, 0);
	CHECK_EQ(g.echo.starts, 1);
	CHECK_EQ(g.echo.stops, 1);
	struct vt_vhost_backend_queue_stats qs;
	CHECK_EQ(vt_vhost_backend_get_queue_stats(g.be, 0, &qs), 0);
	CHECK(!qs.running);
	/* A new front-end, new rings, another format: traffic again. */
	driver_queue_free(&g, &g.q[0]);
	REQUIRE_EQ(rig_connect(&g, F(RING_PACKED)), 0);
	REQUIRE_EQ(queue_start(&g, 0, fresh_base(&g)), 0);
	CHECK_EQ(traffic(&g, 2), 0);
	CHECK_EQ(g.echo.starts, 2);
	CHECK_EQ(g.echo.buffers, 4 * BATCH);
	rig_destroy(&g);
	CHECK_EQ(g.echo.stops, 2);
}

/* What GET_VRING_BASE says after queue 0's traffic so far (a fresh ring at the start). */
static uint32_t expected_base(const struct rig *g)
{
	if (!(g->features & F(RING_PACKED)))
		return (uint32_t)(g->q[0].total_buffers & 0xffff);
	uint64_t descs = g->q[0].total_descs;
	uint32_t slot = (uint32_t)(descs % QSIZE);
	uint32_t wrap = 1 ^ (uint32_t)((descs / QSIZE) & 1);
	uint32_t avail = slot | wrap << 15;
	return avail | avail << 16;
}

static void run_vring_base(uint64_t features)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 1, 1), 0);
	REQUIRE_EQ(rig_connect(&g, features), 0);
	REQUIRE_EQ(queue_start(&g, 0, fresh_base(&g)), 0);
	CHECK_EQ(traffic(&g, 3), 0);
	struct vhost_vring_state s = { .index = 0 }, r = { 0 };
	CHECK_EQ(vu_peer_call(&g.peer, VHOST_USER_GET_VRING_BASE, &s, sizeof(s), &r, sizeof(r)),
		 sizeof(r));
	CHECK_EQ(r.index, 0);
	CHECK_EQ(r.num, expected_base(&g));
	struct vt_vhost_backend_queue_stats qs;
	CHECK_EQ(vt_vhost_backend_get_queue_stats(g.be, 0, &qs), 0);
	CHECK(!qs.running);
	CHECK_EQ(g.echo.stops, 1);
	/* Resume where it stopped, with the same driver ring: traffic goes on. */
	REQUIRE_EQ(queue_start(&g, 0, r.num & 0xffff), 0);
	CHECK_EQ(traffic(&g, 3), 0);
	CHECK_EQ(vu_peer_call(&g.peer, VHOST_USER_GET_VRING_BASE, &s, sizeof(s), &r, sizeof(r)),
		 sizeof(r));
	CHECK_EQ(r.num, expected_base(&g));
	CHECK_EQ(g.echo.buffers, 6 * BATCH);
	rig_destroy(&g);
}

VT_TEST(get_vring_base_returns_the_next_split_index_and_set_vring_base_resumes)
{
	run_vring_base(F(EVENT_IDX));
}

VT_TEST(get_vring_base_returns_the_next_packed_position_and_set_vring_base_resumes)
{
	run_vring_base(F(RING_PACKED));
}
