/* SPDX-License-Identifier: MIT */
/*
 * The driver half of the packed virtqueue against a mock device (vq_mock.h) that reads what the
 * driver posted and writes any used state back: every rule the driver enforces on a device as one
 * test per violation (the queue breaks with the named error, is logged once and stays broken, or,
 * for an oversized length, the length is clamped and counted), and the friendly behaviour built
 * with the same helpers: wrap counters, indirect tables, event suppression, IN_ORDER batches.
 * The DMA is direct over shared memory, so the mock finds the ring at the driver-physical
 * addresses vt_vq_drv_addrs gives.
 */
#include <errno.h>

#include <virtue/dma.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/virtqueue.h>

#include "harness.h"
#include "vq_mock.h"

#define QSIZE	 16
#define GPA_BASE (1ULL << 30)
#define SHM_SIZE (1ULL << 20)
#define F(bit)	 VT_BIT(VIRTIO_F_##bit)
/* A descriptor-ring position in the event-suppression encoding (2.8.14). */
#define POS(slot, wrap) ((uint16_t)((slot) | (unsigned int)(wrap) << PVIRTQ_EVENT_WRAP_SHIFT))

struct log_capture {
	unsigned int calls, errors, warnings;
	char last[512];
};

static void capture_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_capture *c = opaque;

	c->calls++;
	c->errors += level == VT_LOG_ERROR;
	c->warnings += level == VT_LOG_WARN;
	snprintf(c->last, sizeof(c->last), "%s", message);
}

struct fixture {
	struct vt_shm *shm;
	struct vt_dma *dma;
	struct vt_vq_drv_params params;
	struct vt_vq_drv *vq;
	struct vq_mock_dev d; /* the device */
	struct log_capture seen, dma_seen;
	struct vt_log log, dma_log;
};

/* Shared memory and direct DMA; the queue comes with start(). */
static int setup_memory(struct fixture *f, uint64_t features)
{
	memset(f, 0, sizeof(*f));
	f->log =
	    (struct vt_log){ .fn = capture_log, .opaque = &f->seen, .max_level = VT_LOG_DEBUG };
	f->dma_log =
	    (struct vt_log){ .fn = capture_log, .opaque = &f->dma_seen, .max_level = VT_LOG_DEBUG };
	int ret = vt_shm_new(&f->shm);
	if (ret == 0)
		ret = vt_shm_add_memfd(f->shm, SHM_SIZE, GPA_BASE, NULL);
	struct vt_dma_params dp = { .mode = VT_DMA_DIRECT, .shm = f->shm, .log = &f->dma_log };
	if (ret == 0)
		ret = vt_dma_new(&dp, &f->dma);
	f->params = (struct vt_vq_drv_params){
		.num = QSIZE,
		.features = features | F(RING_PACKED),
		.dma = f->dma,
		.name = "mock",
		.log = &f->log,
	};
	return ret;
}

static int start(struct fixture *f)
{
	int ret = vt_vq_drv_new(&f->params, &f->vq);
	return ret < 0 ? ret : vq_mock_dev_attach(&f->d, f->vq, f->params.num, true, f->shm);
}

static int setup(struct fixture *f, uint64_t features)
{
	int ret = setup_memory(f, features);
	return ret < 0 ? ret : start(f);
}

static void teardown(struct fixture *f)
{
	vq_mock_dev_detach(&f->d);
	vt_vq_drv_free(f->vq);
	vt_dma_free(f->dma);
	vt_shm_free(f->shm);
}

static void *buffer(struct fixture *f, size_t len, uint8_t fill)
{
	void *p = NULL;

	if (vt_shm_alloc(f->shm, len, 0, &p) < 0)
		return NULL;
	memset(p, fill, len);
	return p;
}

static uint64_t gpa_of(struct fixture *f, const void *p, size_t len)
{
	uint64_t gpa = 0;

	vt_shm_gpa(f->shm, p, len, &gpa);
	return gpa;
}

/* Posts one buffer of @nr readable and @nw writable segments of @len bytes each. */
static int post(struct fixture *f, unsigned int nr, unsigned int nw, size_t len, void *token)
{
	struct iovec sg[64];

	for (unsigned int i = 0; i < nr + nw && i < 64; i++)
		sg[i] = (struct iovec){ buffer(f, len, (uint8_t)i), len };
	return vt_vq_drv_add(f->vq, sg, nr, nw, token);
}

/* Posts and publishes @n buffers of one readable and one writable segment. */
static int post_kicked(struct fixture *f, unsigned int n, void **tokens)
{
	for (unsigned int i = 0; i < n; i++) {
		int ret = post(f, 1, 1, 32, tokens[i]);
		if (ret < 0)
			return ret;
	}
	vt_vq_drv_kick_prepare(f->vq);
	return 0;
}

/* The mock device writes a used descriptor with exactly these fields at @slot. */
static void write_used(struct fixture *f, uint16_t slot, uint16_t id, uint32_t len, uint16_t flags)
{
	vq_mock_dev_set_packed_desc(&f->d, slot, (struct vq_mock_desc){ 0, len, flags, id });
}

/*
 * A violation: @ret is -EPROTO, the queue is broken with @error, every later call finds the
 * latch, and the log heard of it exactly once.
 */
#define CHECK_BROKEN(f, ret, error) check_broken(f, ret, error, __LINE__)

static void check_broken(struct fixture *f, int ret, enum vt_vq_error error, int line)
{
	void *token;
	uint32_t len;

	if (ret != -EPROTO)
		VT_FAIL_AT("line %d: get returned %d, expected -EPROTO", line, ret);
	if (!vt_vq_drv_is_broken(f->vq))
		VT_FAIL_AT("line %d: queue not broken", line);
	enum vt_vq_error seen = vt_vq_drv_error(f->vq);
	if (seen != error)
		VT_FAIL_AT("line %d: error %d (%s), expected %d (%s)", line, seen,
			   vt_vq_error_str(seen), error, vt_vq_error_str(error));
	for (int i = 0; i < 3; i++)
		if (vt_vq_drv_get(f->vq, &token, &len) != -EPROTO)
			VT_FAIL_AT("line %d: a later get did not return -EPROTO", line);
	if (post(f, 1, 0, 8, f) != -EPROTO)
		VT_FAIL_AT("line %d: add on a broken queue did not return -EPROTO", line);
	if (vt_vq_drv_kick_prepare(f->vq))
		VT_FAIL_AT("line %d: a broken queue asks for a kick", line);
	if (vt_vq_drv_enable_cb(f->vq))
		VT_FAIL_AT("line %d: enable_cb on a broken queue reports work", line);
	if (vt_vq_drv_error(f->vq) != error)
		VT_FAIL_AT("line %d: the error changed after breaking", line);
	if (f->seen.calls != 1 || f->seen.errors != 1)
		VT_FAIL_AT("line %d: log called %u times (%u errors), expected once", line,
			   f->seen.calls, f->seen.errors);
}

static int tokens_storage[QSIZE * 4];

static void *token_n(unsigned int n)
{
	return &tokens_storage[n];
}

/* ---------------------------------------------------------------- round trip */

VT_TEST(buffer_goes_to_the_device_and_comes_back_with_its_token_and_length)
{
	static const char request[] = "read sector 7";
	static const char reply[] = "sector 7 bytes";
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	char *out = buffer(&f, sizeof(request), 0);
	char *in = buffer(&f, 64, 0);
	REQUIRE(out && in);
	memcpy(out, request, sizeof(request));
	struct iovec sg[2] = { { out, sizeof(request) }, { in, 64 } };
	REQUIRE_EQ(vt_vq_drv_add(f.vq, sg, 1, 1, token_n(1)), 0);
	CHECK(vt_vq_drv_kick_prepare(f.vq));

	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	REQUIRE_EQ(c.nsegs, 2);
	CHECK_EQ(c.readable_bytes, sizeof(request));
	CHECK_EQ(c.writable_bytes, 64);
	CHECK(memcmp(c.host[0], request, sizeof(request)) == 0);
	memcpy(c.host[1], reply, sizeof(reply));
	CHECK_EQ(vt_vq_drv_get(f.vq, &token, &len), -EAGAIN); /* not used yet */
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, sizeof(reply));

	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK(token == token_n(1));
	CHECK_EQ(len, sizeof(reply));
	CHECK(memcmp(in, reply, sizeof(reply)) == 0);
	CHECK_EQ(vt_vq_drv_get(f.vq, &token, &len), -EAGAIN);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE);

	struct vt_vq_drv_stats st;
	vt_vq_drv_get_stats(f.vq, &st);
	CHECK_EQ(st.added, 1);
	CHECK_EQ(st.used, 1);
	CHECK_EQ(st.kicks, 1);
	CHECK_EQ(st.used_len_clamped, 0);
	CHECK_EQ(f.seen.calls, 0);
	CHECK_EQ(f.dma_seen.calls, 0);
	teardown(&f);
}

VT_TEST(chain_descriptors_carry_bus_addresses_flags_and_the_buffer_id)
{
	struct fixture f;
	struct iovec sg[3];
	struct vq_mock_dev_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	sg[0] = (struct iovec){ buffer(&f, 10, 1), 10 };
	sg[1] = (struct iovec){ buffer(&f, 20, 2), 20 };
	sg[2] = (struct iovec){ buffer(&f, 30, 3), 30 };
	REQUIRE_EQ(vt_vq_drv_add(f.vq, sg, 2, 1, token_n(0)), 0);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE - 3);
	/* Not visible before kick_prepare: the first descriptor's flags hand the chain over. */
	CHECK_EQ(vq_mock_dev_take(&f.d, &c), -EAGAIN);
	vt_vq_drv_kick_prepare(f.vq);

	uint16_t id = vq_mock_dev_packed_desc(&f.d, 2).next;
	for (uint16_t k = 0; k < 3; k++) {
		struct vq_mock_desc d = vq_mock_dev_packed_desc(&f.d, k);
		CHECK(d.addr == gpa_of(&f, sg[k].iov_base, sg[k].iov_len));
		CHECK_EQ(d.len, sg[k].iov_len);
		/* Available in wrap 1: AVAIL set, USED clear (2.8.1). */
		uint16_t flags =
		    (uint16_t)(vq_mock_packed_avail_bits(true) | (k == 2 ? VIRTQ_DESC_F_WRITE : 0) |
			       (k < 2 ? VIRTQ_DESC_F_NEXT : 0));
		CHECK_EQ(d.flags, flags);
	}
	CHECK(id < QSIZE);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	CHECK_EQ(c.id, id);
	CHECK_EQ(c.ndesc, 3);
	CHECK(!c.indirect);
	teardown(&f);
}

VT_TEST(buffers_completed_out_of_order_return_their_own_tokens)
{
	struct fixture f;
	struct vq_mock_dev_chain c[3];
	void *tokens[3] = { token_n(0), token_n(1), token_n(2) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 3, tokens), 0);
	for (int i = 0; i < 3; i++)
		REQUIRE_EQ(vq_mock_dev_take(&f.d, &c[i]), 0);
	static const int order[3] = { 1, 2, 0 };
	for (int i = 0; i < 3; i++)
		vq_mock_dev_complete(&f.d, c[order[i]].id, c[order[i]].ndesc, (uint32_t)order[i]);
	for (int i = 0; i < 3; i++) {
		REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
		CHECK(token == tokens[order[i]]);
		CHECK_EQ(len, order[i]);
	}
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(buffers_go_round_the_ring_with_the_wrap_counter_flipping)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	uint16_t slot = 0;
	bool wrap = true;
	/* Chains of 2 to 4 descriptors, four times round: each lap with its own AVAIL/USED bits. */
	for (unsigned int i = 0; i < 24; i++) {
		unsigned int n = 2 + i % 3;
		REQUIRE_EQ(post(&f, n - 1, 1, 16, token_n(i)), 0);
		CHECK(vt_vq_drv_kick_prepare(f.vq));
		struct vq_mock_desc first = vq_mock_dev_packed_desc(&f.d, slot);
		CHECK_EQ(first.flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED),
			 vq_mock_packed_avail_bits(wrap));
		REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
		CHECK_EQ(c.ndesc, n);
		CHECK_EQ(vt_vq_drv_get(f.vq, &token, &len), -EAGAIN);
		vq_mock_dev_complete(&f.d, c.id, c.ndesc, 16);
		REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
		CHECK(token == token_n(i));
		CHECK_EQ(len, 16);
		slot = (uint16_t)(slot + n);
		if (slot >= QSIZE) {
			slot = (uint16_t)(slot - QSIZE);
			wrap = !wrap;
		}
	}
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(queue_size_of_100_goes_round_the_ring)
{
	struct fixture f;
	struct vq_mock_dev_chain c[4];
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup_memory(&f, 0), 0);
	f.params.num = 100;
	REQUIRE_EQ(start(&f), 0);
	/* Four buffers of 1 to 7 descriptors in flight at a time, returned newest first. */
	unsigned int next = 0;
	for (unsigned int round = 0; round < 40; round++) {
		for (unsigned int k = 0; k < 4; k++) {
			unsigned int n = 1 + (next + k) % 7;
			REQUIRE_EQ(post(&f, n / 2, n - n / 2, 8, token_n((next + k) % 64)), 0);
		}
		vt_vq_drv_kick_prepare(f.vq);
		for (unsigned int k = 0; k < 4; k++)
			REQUIRE_EQ(vq_mock_dev_take(&f.d, &c[k]), 0);
		for (unsigned int k = 4; k-- > 0;)
			vq_mock_dev_complete(&f.d, c[k].id, c[k].ndesc, 1);
		for (unsigned int k = 4; k-- > 0;) {
			REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
			CHECK(token == token_n((next + k) % 64));
		}
		next += 4;
	}
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), 100);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(add_rejects_empty_zero_length_and_tokenless_buffers)
{
	struct fixture f;
	uint8_t *p;

	REQUIRE_EQ(setup(&f, 0), 0);
	p = buffer(&f, 16, 0);
	struct iovec sg[2] = { { p, 16 }, { p, 0 } };
	CHECK_EQ(vt_vq_drv_add(f.vq, sg, 0, 0, token_n(0)), -EINVAL);
	CHECK_EQ(vt_vq_drv_add(f.vq, sg, 1, 1, token_n(0)), -EINVAL);
	CHECK_EQ(vt_vq_drv_add(f.vq, sg, 1, 0, NULL), -EINVAL);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(add_of_memory_the_device_cannot_reach_fails_and_keeps_nothing)
{
	struct fixture f;
	static uint8_t private_memory[32];

	REQUIRE_EQ(setup(&f, 0), 0);
	struct iovec sg[2] = { { buffer(&f, 16, 0), 16 },
			       { private_memory, sizeof(private_memory) } };
	CHECK_EQ(vt_vq_drv_add(f.vq, sg, 1, 1, token_n(0)), -EFAULT);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE);
	CHECK(!vt_vq_drv_kick_prepare(f.vq));
	CHECK_EQ(vt_vq_drv_detach_unused(f.vq), NULL);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	/* The DMA layer refused the map, and was asked to unmap nothing it had not mapped. */
	CHECK_EQ(f.dma_seen.errors, 1);
	if (f.dma_seen.errors != 1)
		fprintf(stderr, "  last: %s\n", f.dma_seen.last);
	teardown(&f);
}

VT_TEST(full_ring_is_enospc_until_a_buffer_comes_back)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	for (unsigned int i = 0; i < QSIZE / 2; i++)
		REQUIRE_EQ(post(&f, 1, 1, 8, token_n(i)), 0);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), 0);
	CHECK_EQ(post(&f, 1, 0, 8, token_n(QSIZE)), -ENOSPC);
	vt_vq_drv_kick_prepare(f.vq);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), 2);
	CHECK_EQ(post(&f, 2, 1, 8, token_n(QSIZE)), -ENOSPC); /* three do not fit in two */
	CHECK_EQ(post(&f, 1, 1, 8, token_n(QSIZE)), 0);
	/* It went to the slots the device gave back: 0 and 1 of wrap 0. */
	vt_vq_drv_kick_prepare(f.vq);
	struct vq_mock_desc d = vq_mock_dev_packed_desc(&f.d, 0);
	CHECK_EQ(d.flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED),
		 vq_mock_packed_avail_bits(false));
	CHECK(!vt_vq_drv_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(detach_unused_returns_every_posted_token)
{
	struct fixture f;
	bool seen[6] = { false };
	void *token;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	/* Published or not, direct or indirect, all of them come back. */
	for (unsigned int i = 0; i < 3; i++)
		REQUIRE_EQ(post(&f, 1, i, 8, token_n(i)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	for (unsigned int i = 3; i < 6; i++)
		REQUIRE_EQ(post(&f, 2, 1, 8, token_n(i)), 0);
	unsigned int count = 0;
	while ((token = vt_vq_drv_detach_unused(f.vq)) != NULL && count < 10) {
		int n = (int *)token - tokens_storage;
		REQUIRE(n >= 0 && n < 6);
		CHECK(!seen[n]);
		seen[n] = true;
		count++;
	}
	CHECK_EQ(count, 6);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE);
	CHECK_EQ(f.dma_seen.errors, 0);
	teardown(&f);
}

VT_TEST(after_detaching_everything_the_ring_starts_over_at_slot_0_in_wrap_1)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[5] = { token_n(0), token_n(1), token_n(2), token_n(3), token_n(4) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 5, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	/* The device is reset: the rest comes back unused. */
	unsigned int count = 0;
	while (vt_vq_drv_detach_unused(f.vq) != NULL && count < 10)
		count++;
	CHECK_EQ(count, 4);
	/* A reset device starts at slot 0 in wrap 1 over a ring with nothing available (2.8.1). */
	for (uint16_t s = 0; s < QSIZE; s++) {
		struct vq_mock_desc d = vq_mock_dev_packed_desc(&f.d, s);
		if (d.flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED))
			VT_FAIL_AT("slot %u keeps flags 0x%04x", s, d.flags);
	}
	vq_mock_dev_detach(&f.d);
	REQUIRE_EQ(vq_mock_dev_attach(&f.d, f.vq, QSIZE, true, f.shm), 0);
	REQUIRE_EQ(post(&f, 1, 1, 8, token_n(7)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 8);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK(token == token_n(7));
	CHECK_EQ(len, 8);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	teardown(&f);
}

/* ---------------------------------------------------------------- indirect */

VT_TEST(multi_segment_buffer_goes_into_an_indirect_table_when_negotiated)
{
	struct fixture f;
	struct iovec sg[3];
	struct vq_mock_dev_chain c;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	sg[0] = (struct iovec){ buffer(&f, 11, 1), 11 };
	sg[1] = (struct iovec){ buffer(&f, 22, 2), 22 };
	sg[2] = (struct iovec){ buffer(&f, 33, 3), 33 };
	REQUIRE_EQ(vt_vq_drv_add(f.vq, sg, 1, 2, token_n(0)), 0);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE - 1);
	vt_vq_drv_kick_prepare(f.vq);

	struct vq_mock_desc ring = vq_mock_dev_packed_desc(&f.d, 0);
	CHECK_EQ(ring.flags, VIRTQ_DESC_F_INDIRECT | vq_mock_packed_avail_bits(true));
	CHECK_EQ(ring.len, 3 * sizeof(struct pvirtq_desc));
	struct pvirtq_desc table[3];
	REQUIRE_EQ(vt_as_read(&f.d.as, ring.addr, table, sizeof(table), NULL), 0);
	for (int k = 0; k < 3; k++) {
		uint16_t flags = vt_le16_to_cpu(table[k].flags);
		CHECK(vt_le64_to_cpu(table[k].addr) == gpa_of(&f, sg[k].iov_base, sg[k].iov_len));
		CHECK_EQ(vt_le32_to_cpu(table[k].len), sg[k].iov_len);
		/* Used in order, WRITE the only flag (2.8.7). */
		CHECK_EQ(flags, k > 0 ? VIRTQ_DESC_F_WRITE : 0);
	}
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	CHECK(c.indirect);
	CHECK_EQ(c.ndesc, 1);
	CHECK_EQ(c.nsegs, 3);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 40);
	void *token;
	uint32_t len;
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK(token == token_n(0));
	CHECK_EQ(len, 40);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE);
	CHECK_EQ(f.dma_seen.errors, 0);
	teardown(&f);
}

VT_TEST(single_segment_buffer_is_not_indirect)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(post(&f, 0, 1, 64, token_n(0)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	struct vq_mock_desc d = vq_mock_dev_packed_desc(&f.d, 0);
	CHECK_EQ(d.flags, VIRTQ_DESC_F_WRITE | vq_mock_packed_avail_bits(true));
	CHECK_EQ(d.len, 64);
	teardown(&f);
}

VT_TEST(buffer_larger_than_indirect_max_is_a_plain_chain)
{
	struct fixture f;
	struct vq_mock_dev_chain c;

	REQUIRE_EQ(setup_memory(&f, F(INDIRECT_DESC)), 0);
	f.params.indirect_max = 4;
	REQUIRE_EQ(start(&f), 0);
	REQUIRE_EQ(post(&f, 3, 2, 8, token_n(0)), 0);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE - 5);
	vt_vq_drv_kick_prepare(f.vq);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	CHECK(!c.indirect);
	CHECK_EQ(c.ndesc, 5);
	teardown(&f);
}

VT_TEST(without_indirect_negotiated_no_table_is_used)
{
	struct fixture f;
	struct vq_mock_dev_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post(&f, 2, 2, 8, token_n(0)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	CHECK(!c.indirect);
	CHECK_EQ(c.ndesc, 4);
	teardown(&f);
}

/* ---------------------------------------------------------------- notifications */

VT_TEST(kick_prepare_without_new_buffers_asks_for_no_kick)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, 0), 0);
	CHECK(!vt_vq_drv_kick_prepare(f.vq));
	REQUIRE_EQ(post(&f, 1, 0, 8, token_n(0)), 0);
	CHECK(vt_vq_drv_kick_prepare(f.vq));
	CHECK(!vt_vq_drv_kick_prepare(f.vq));
	teardown(&f);
}

VT_TEST(disable_in_the_device_area_suppresses_kicks)
{
	struct fixture f;
	struct vt_vq_drv_stats st;
	struct vq_mock_dev_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	vq_mock_dev_set_device_event(&f.d, 0, RING_EVENT_FLAGS_DISABLE);
	REQUIRE_EQ(post(&f, 1, 0, 8, token_n(0)), 0);
	CHECK(!vt_vq_drv_kick_prepare(f.vq));
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0); /* published all the same */
	vq_mock_dev_set_device_event(&f.d, 0, RING_EVENT_FLAGS_ENABLE);
	REQUIRE_EQ(post(&f, 1, 0, 8, token_n(1)), 0);
	CHECK(vt_vq_drv_kick_prepare(f.vq));
	vt_vq_drv_get_stats(f.vq, &st);
	CHECK_EQ(st.kicks, 1);
	CHECK_EQ(st.kicks_suppressed, 1);
	teardown(&f);
}

VT_TEST(desc_mode_without_event_idx_kicks_every_time)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, 0), 0);
	/* DESC is only for EVENT_IDX (2.8.14): without it the request names nothing. */
	vq_mock_dev_set_device_event(&f.d, POS(10, true), RING_EVENT_FLAGS_DESC);
	for (unsigned int i = 0; i < 3; i++) {
		REQUIRE_EQ(post(&f, 1, 0, 8, token_n(i)), 0);
		CHECK(vt_vq_drv_kick_prepare(f.vq));
	}
	teardown(&f);
}

VT_TEST(event_idx_kicks_exactly_when_the_event_descriptor_is_made_available)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	/* "Kick me when you make the descriptor at slot 2, wrap 1, available" (2.8.10). */
	vq_mock_dev_set_device_event(&f.d, POS(2, true), RING_EVENT_FLAGS_DESC);
	static const bool expect[4] = { false, false, true, false };
	for (unsigned int i = 0; i < 4; i++) {
		REQUIRE_EQ(post(&f, 1, 0, 8, token_n(i)), 0);
		CHECK_EQ(vt_vq_drv_kick_prepare(f.vq), expect[i]);
	}
	/* Several buffers in one publication that pass the event: one kick. */
	vq_mock_dev_set_device_event(&f.d, POS(5, true), RING_EVENT_FLAGS_DESC);
	for (unsigned int i = 4; i < 8; i++)
		REQUIRE_EQ(post(&f, 1, 0, 8, token_n(i)), 0);
	CHECK(vt_vq_drv_kick_prepare(f.vq));
	teardown(&f);
}

/* Posts, publishes, and has the mock device use and the driver collect @n buffers of two
 * descriptors, with kicks suppressed: the driver moves 2n slots on. */
static int go_round(struct fixture *f, unsigned int n)
{
	struct vq_mock_dev_chain c;
	void *token;
	uint32_t len;

	for (unsigned int i = 0; i < n; i++) {
		int ret = post(f, 1, 1, 8, token_n(i % QSIZE));
		if (ret == 0)
			vt_vq_drv_kick_prepare(f->vq);
		if (ret == 0)
			ret = vq_mock_dev_take(&f->d, &c);
		if (ret == 0)
			vq_mock_dev_complete(&f->d, c.id, c.ndesc, 0);
		if (ret == 0)
			ret = vt_vq_drv_get(f->vq, &token, &len);
		if (ret < 0)
			return ret;
	}
	return 0;
}

VT_TEST(event_idx_kick_across_the_ring_end_kicks_for_an_event_before_it)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	vq_mock_dev_set_device_event(&f.d, 0, RING_EVENT_FLAGS_DISABLE);
	REQUIRE_EQ(go_round(&f, 7), 0); /* the driver stands at slot 14 of wrap 1 */
	/* One publication of slots 14, 15 and 0: it passes slot 15 of wrap 1 on its way. */
	vq_mock_dev_set_device_event(&f.d, POS(QSIZE - 1, true), RING_EVENT_FLAGS_DESC);
	for (unsigned int i = 0; i < 3; i++)
		REQUIRE_EQ(post(&f, 1, 0, 8, token_n(8 + i)), 0);
	CHECK(vt_vq_drv_kick_prepare(f.vq));
	/* The next descriptor, slot 1 of wrap 0, named as such. */
	vq_mock_dev_set_device_event(&f.d, POS(1, false), RING_EVENT_FLAGS_DESC);
	REQUIRE_EQ(post(&f, 1, 0, 8, token_n(11)), 0);
	CHECK(vt_vq_drv_kick_prepare(f.vq));
	teardown(&f);
}

VT_TEST(event_idx_event_for_the_same_slot_of_the_other_lap_does_not_kick)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	vq_mock_dev_set_device_event(&f.d, 0, RING_EVENT_FLAGS_DISABLE);
	REQUIRE_EQ(go_round(&f, 9), 0); /* the driver stands at slot 2 of wrap 0 */
	/* In wrap 0 the device still names slot 4 of wrap 1: a lap ago, long passed (2.8.14). */
	vq_mock_dev_set_device_event(&f.d, POS(4, true), RING_EVENT_FLAGS_DESC);
	for (unsigned int i = 0; i < 4; i++) {
		REQUIRE_EQ(post(&f, 1, 0, 8, token_n(i)), 0);
		CHECK(!vt_vq_drv_kick_prepare(f.vq)); /* slots 2 to 5, 4 among them */
	}
	/* Named with this lap's wrap counter, the same slot is the event. */
	vq_mock_dev_set_device_event(&f.d, POS(7, false), RING_EVENT_FLAGS_DESC);
	static const bool expect[3] = { false, true, false };
	for (unsigned int i = 0; i < 3; i++) {
		REQUIRE_EQ(post(&f, 1, 0, 8, token_n(4 + i)), 0);
		CHECK_EQ(vt_vq_drv_kick_prepare(f.vq), expect[i]);
	}
	teardown(&f);
}

VT_TEST(event_idx_enable_and_disable_modes_still_apply)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	vq_mock_dev_set_device_event(&f.d, POS(0, true), RING_EVENT_FLAGS_DISABLE);
	REQUIRE_EQ(post(&f, 1, 0, 8, token_n(0)), 0);
	CHECK(!vt_vq_drv_kick_prepare(f.vq)); /* the descriptor is the event's, DISABLE rules */
	vq_mock_dev_set_device_event(&f.d, POS(9, true), RING_EVENT_FLAGS_ENABLE);
	REQUIRE_EQ(post(&f, 1, 0, 8, token_n(1)), 0);
	CHECK(vt_vq_drv_kick_prepare(f.vq)); /* ENABLE: the offset does not matter */
	teardown(&f);
}

VT_TEST(disable_cb_writes_disable_and_enable_cb_writes_enable_and_rechecks)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[1] = { token_n(0) };
	uint16_t desc, flags;

	REQUIRE_EQ(setup(&f, 0), 0);
	vt_vq_drv_disable_cb(f.vq);
	vq_mock_dev_get_driver_event(&f.d, &desc, &flags);
	CHECK_EQ(flags, RING_EVENT_FLAGS_DISABLE);
	CHECK(!vt_vq_drv_enable_cb(f.vq));
	vq_mock_dev_get_driver_event(&f.d, &desc, &flags);
	CHECK_EQ(flags, RING_EVENT_FLAGS_ENABLE);
	vt_vq_drv_disable_cb(f.vq);
	REQUIRE_EQ(post_kicked(&f, 1, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
	/* A buffer came back while callbacks were off: the recheck reports it. */
	CHECK(vt_vq_drv_enable_cb(f.vq));
	vq_mock_dev_get_driver_event(&f.d, &desc, &flags);
	CHECK_EQ(flags, RING_EVENT_FLAGS_ENABLE);
	teardown(&f);
}

VT_TEST(event_idx_enable_cb_asks_for_the_next_used_slot_and_rechecks)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[2] = { token_n(0), token_n(1) };
	void *token;
	uint32_t len;
	uint16_t desc, flags;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	REQUIRE_EQ(post_kicked(&f, 2, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	vt_vq_drv_disable_cb(f.vq);
	vq_mock_dev_get_driver_event(&f.d, &desc, &flags);
	CHECK_EQ(flags, RING_EVENT_FLAGS_DISABLE);
	/* "Notify me when slot 2 of wrap 1 is used": where the next used descriptor goes. */
	CHECK(!vt_vq_drv_enable_cb(f.vq));
	vq_mock_dev_get_driver_event(&f.d, &desc, &flags);
	CHECK_EQ(flags, RING_EVENT_FLAGS_DESC);
	CHECK_EQ(desc, POS(2, true));
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
	CHECK(vt_vq_drv_enable_cb(f.vq));
	teardown(&f);
}

/* ---------------------------------------------------------------- in order */

VT_TEST(in_order_batch_completion_returns_every_token_in_order)
{
	struct fixture f;
	struct vq_mock_dev_chain c[4];
	void *tokens[4] = { token_n(0), token_n(1), token_n(2), token_n(3) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, F(IN_ORDER)), 0);
	REQUIRE_EQ(post_kicked(&f, 4, tokens), 0);
	for (int i = 0; i < 4; i++)
		REQUIRE_EQ(vq_mock_dev_take(&f.d, &c[i]), 0);
	/* One used descriptor for the first three (2.8.8): the last one's id, at the first
	 * one's slot, skipping all their descriptors. */
	vq_mock_dev_complete(&f.d, c[2].id, (uint16_t)(c[0].ndesc + c[1].ndesc + c[2].ndesc), 30);
	for (int i = 0; i < 3; i++) {
		REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
		CHECK(token == tokens[i]);
		CHECK_EQ(len, i == 2 ? 30 : 0);
	}
	CHECK_EQ(vt_vq_drv_get(f.vq, &token, &len), -EAGAIN);
	/* And a plain used descriptor after it, at the slot after the batch. */
	vq_mock_dev_complete(&f.d, c[3].id, c[3].ndesc, 4);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK(token == tokens[3]);
	CHECK_EQ(len, 4);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	struct vt_vq_drv_stats st;
	vt_vq_drv_get_stats(f.vq, &st);
	CHECK_EQ(st.used, 4);
	teardown(&f);
}

VT_TEST(in_order_batch_across_the_ring_end_returns_every_token)
{
	struct fixture f;
	struct vq_mock_dev_chain c[6];
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, F(IN_ORDER)), 0);
	/* Three buffers of three descriptors, collected: the driver stands at slot 9. */
	for (unsigned int i = 0; i < 3; i++) {
		REQUIRE_EQ(post(&f, 2, 1, 8, token_n(i)), 0);
		vt_vq_drv_kick_prepare(f.vq);
		REQUIRE_EQ(vq_mock_dev_take(&f.d, &c[0]), 0);
		vq_mock_dev_complete(&f.d, c[0].id, c[0].ndesc, 0);
		REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	}
	/* Slots 9-11, 12-14, 15-1: one used descriptor at slot 9 for all three. */
	for (unsigned int i = 0; i < 3; i++)
		REQUIRE_EQ(post(&f, 2, 1, 8, token_n(10 + i)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	for (unsigned int i = 0; i < 3; i++)
		REQUIRE_EQ(vq_mock_dev_take(&f.d, &c[i]), 0);
	vq_mock_dev_complete(&f.d, c[2].id, 9, 5);
	for (unsigned int i = 0; i < 3; i++) {
		REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
		CHECK(token == token_n(10 + i));
		CHECK_EQ(len, i == 2 ? 5 : 0);
	}
	/* The next one is used at slot 2 of wrap 0. */
	REQUIRE_EQ(post(&f, 1, 1, 8, token_n(20)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c[0]), 0);
	CHECK_EQ(f.d.used_slot, 2);
	CHECK(!f.d.used_wrap);
	vq_mock_dev_complete(&f.d, c[0].id, c[0].ndesc, 1);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK(token == token_n(20));
	CHECK(!vt_vq_drv_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(in_order_batch_longer_than_what_the_device_was_given_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_dev_chain c[3];
	void *tokens[3] = { token_n(0), token_n(1), token_n(2) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, F(IN_ORDER)), 0);
	REQUIRE_EQ(post_kicked(&f, 2, tokens), 0);
	REQUIRE_EQ(post(&f, 1, 1, 8, tokens[2]), 0); /* posted, not yet made available */
	for (int i = 0; i < 2; i++)
		REQUIRE_EQ(vq_mock_dev_take(&f.d, &c[i]), 0);
	/*
	 * A used descriptor for the third buffer: a batch of three, two of them given. The id it
	 * names is not the device's (never made available), which is how it is caught.
	 */
	uint16_t third = vq_mock_dev_packed_desc(&f.d, 5).next;
	write_used(&f, 0, third, 0, vq_mock_packed_used_bits(true));
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
	teardown(&f);
}

VT_TEST(in_order_used_id_not_outstanding_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[2] = { token_n(0), token_n(1) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, F(IN_ORDER)), 0);
	REQUIRE_EQ(post_kicked(&f, 2, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	/* An id no buffer has. */
	write_used(&f, 0, QSIZE - 1, 0, vq_mock_packed_used_bits(true));
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
	teardown(&f);
}

/* ---------------------------------------------------------------- hostile devices */

VT_TEST(used_id_out_of_range_breaks_the_queue)
{
	struct fixture f;
	void *tokens[1] = { token_n(0) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 1, tokens), 0);
	write_used(&f, 0, QSIZE, 0, vq_mock_packed_used_bits(true));
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
	teardown(&f);
}

VT_TEST(used_id_that_names_no_buffer_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[2] = { token_n(0), token_n(1) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 2, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	/* In range, but not the id of either posted buffer. */
	uint16_t other = vq_mock_dev_packed_desc(&f.d, 2).next;
	uint16_t id = 0;
	while (id == c.id || id == other)
		id++;
	vq_mock_dev_complete(&f.d, id, c.ndesc, 0);
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
	teardown(&f);
}

VT_TEST(used_id_returned_twice_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[2] = { token_n(0), token_n(1) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 2, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	/* The same id again, while another buffer is still outstanding. */
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
	teardown(&f);
}

/* The same, for buffers of one descriptor (the burst's shorter path). */
VT_TEST(used_id_of_a_one_descriptor_buffer_returned_twice_breaks_the_queue)
{
	struct fixture f;
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post(&f, 1, 0, 32, token_n(0)), 0);
	REQUIRE_EQ(post(&f, 1, 0, 32, token_n(1)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	uint16_t first = vq_mock_dev_packed_desc(&f.d, 0).next;
	write_used(&f, 0, first, 0, vq_mock_packed_used_bits(true));
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK(token == token_n(0));
	/* Slot 1 names the first buffer again, while the second is still outstanding. */
	write_used(&f, 1, first, 0, vq_mock_packed_used_bits(true));
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
	teardown(&f);
}

VT_TEST(used_id_of_a_buffer_not_yet_made_available_breaks_the_queue)
{
	struct fixture f;
	void *tokens[1] = { token_n(0) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 1, tokens), 0);
	/* A second buffer of the same size, written to the ring but not published by a kick. */
	REQUIRE_EQ(post(&f, 1, 1, 32, token_n(1)), 0);
	uint16_t unpublished = vq_mock_dev_packed_desc(&f.d, 3).next;
	/* The device returns it, in the place of the one it was given. */
	write_used(&f, 0, unpublished, 0, vq_mock_packed_used_bits(true));
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
	teardown(&f);
}

VT_TEST(used_descriptor_with_avail_and_used_clear_in_wrap_1_breaks_with_used_wrap)
{
	struct fixture f;
	void *tokens[1] = { token_n(0) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 1, tokens), 0);
	uint16_t id = vq_mock_dev_packed_desc(&f.d, 1).next;
	/* Used bits of the other lap: AVAIL == USED, but not the driver's used wrap counter. */
	write_used(&f, 0, id, 0, vq_mock_packed_used_bits(false));
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_WRAP);
	teardown(&f);
}

VT_TEST(used_descriptor_with_avail_bits_of_the_other_lap_breaks_with_used_wrap)
{
	struct fixture f;
	void *tokens[1] = { token_n(0) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 1, tokens), 0);
	uint16_t id = vq_mock_dev_packed_desc(&f.d, 1).next;
	/* AVAIL clear, USED set: neither available in this lap nor used in any. */
	write_used(&f, 0, id, 0, vq_mock_packed_avail_bits(false));
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_WRAP);
	teardown(&f);
}

VT_TEST(stale_used_descriptor_of_the_previous_lap_breaks_with_used_wrap)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[1] = { token_n(20) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	/* Once round the ring: the driver now uses wrap 0. */
	for (unsigned int i = 0; i < QSIZE / 2; i++) {
		REQUIRE_EQ(post(&f, 1, 1, 8, token_n(i)), 0);
		vt_vq_drv_kick_prepare(f.vq);
		REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
		vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
		REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	}
	REQUIRE_EQ(post_kicked(&f, 1, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	/* Slot 0 gets the used bits of wrap 1 again, as it had them a lap ago. */
	write_used(&f, 0, c.id, 0, vq_mock_packed_used_bits(true));
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_WRAP);
	teardown(&f);
}

VT_TEST(descriptor_still_as_the_driver_made_it_available_is_not_used)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[1] = { token_n(0) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 1, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	/* The device rewrites id and len but leaves the available bits: not used yet. */
	write_used(&f, 0, c.id, 4, vq_mock_packed_avail_bits(true));
	CHECK_EQ(vt_vq_drv_get(f.vq, &token, &len), -EAGAIN);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	CHECK_EQ(f.seen.calls, 0);
	teardown(&f);
}

VT_TEST(used_descriptor_in_a_slot_never_given_is_not_read)
{
	struct fixture f;
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	write_used(&f, 0, 0, 0, vq_mock_packed_used_bits(true));
	CHECK_EQ(vt_vq_drv_get(f.vq, &token, &len), -EAGAIN);
	/* Posted but not published: still not the device's. */
	REQUIRE_EQ(post(&f, 1, 1, 8, token_n(0)), 0);
	write_used(&f, 0, 0, 0, vq_mock_packed_used_bits(true));
	CHECK_EQ(vt_vq_drv_get(f.vq, &token, &len), -EAGAIN);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	CHECK_EQ(f.seen.calls, 0);
	teardown(&f);
}

VT_TEST(used_len_larger_than_the_writable_bytes_is_clamped_and_counted)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	struct vt_vq_drv_stats st;
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post(&f, 1, 2, 10, token_n(0)), 0); /* 20 writable bytes */
	vt_vq_drv_kick_prepare(f.vq);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 1000);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK(token == token_n(0));
	CHECK_EQ(len, 20);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	vt_vq_drv_get_stats(f.vq, &st);
	CHECK_EQ(st.used_len_clamped, 1);
	CHECK_EQ(f.seen.calls, 1);
	/* The queue goes on. */
	REQUIRE_EQ(post(&f, 1, 1, 10, token_n(1)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 10);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK_EQ(len, 10);
	teardown(&f);
}

VT_TEST(used_len_for_a_buffer_without_writable_part_is_clamped_to_zero)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	struct vt_vq_drv_stats st;
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post(&f, 2, 0, 10, token_n(0)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 1); /* with WRITE: "1 byte written" */
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK_EQ(len, 0);
	vt_vq_drv_get_stats(f.vq, &st);
	CHECK_EQ(st.used_len_clamped, 1);
	teardown(&f);
}

VT_TEST(used_len_without_the_write_flag_is_ignored)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	struct vt_vq_drv_stats st;
	void *tokens[1] = { token_n(0) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 1, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	/* Element Length is reserved in a used descriptor without WRITE (2.8.4): no bytes. */
	write_used(&f, 0, c.id, 1000, vq_mock_packed_used_bits(true));
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK(token == token_n(0));
	CHECK_EQ(len, 0);
	vt_vq_drv_get_stats(f.vq, &st);
	CHECK_EQ(st.used_len_clamped, 0);
	CHECK_EQ(f.seen.calls, 0);
	teardown(&f);
}

VT_TEST(device_rewriting_descriptors_does_not_change_what_the_driver_unmaps)
{
	struct fixture f;
	struct vq_mock_dev_chain c[2];
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(post(&f, 1, 1, 16, token_n(0)), 0); /* indirect */
	REQUIRE_EQ(post(&f, 0, 1, 16, token_n(1)), 0); /* one ring descriptor */
	vt_vq_drv_kick_prepare(f.vq);
	for (int i = 0; i < 2; i++)
		REQUIRE_EQ(vq_mock_dev_take(&f.d, &c[i]), 0);
	/* Ring memory is the device's to scribble on: the driver must use its own copies. */
	const struct pvirtq_desc junk = {
		.addr = vt_cpu_to_le64(0xdead0000),
		.len = vt_cpu_to_le32(0xffffffff),
		.id = vt_cpu_to_le16(7),
		.flags = vt_cpu_to_le16(VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT),
	};
	struct vq_mock_desc table_desc = c[0].ring_desc;
	for (uint16_t i = 0; i < QSIZE; i++)
		f.d.pdesc[i] = junk;
	for (uint32_t k = 0; k < table_desc.len / sizeof(struct pvirtq_desc); k++)
		REQUIRE_EQ(vt_as_write(&f.d.as, table_desc.addr + k * sizeof(struct pvirtq_desc),
				       &junk, sizeof(junk), NULL),
			   0);
	for (int i = 0; i < 2; i++)
		vq_mock_dev_complete(&f.d, c[i].id, c[i].ndesc, 16);
	for (int i = 0; i < 2; i++) {
		REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
		CHECK(token == token_n((unsigned int)i));
		CHECK_EQ(len, 16);
	}
	/* The unmaps named the real buffers: the DMA layer refused none. */
	CHECK_EQ(f.dma_seen.errors, 0);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	teardown(&f);
}
