/* SPDX-License-Identifier: MIT */
/*
 * The driver half of the split virtqueue against a mock device (vq_mock.h) that reads what the
 * driver posted and writes any used state back: every rule the driver enforces on a device as one
 * test per violation (the queue breaks with the named error, is logged once and stays broken, or,
 * for an oversized length, the length is clamped and counted), and the friendly behaviour built
 * with the same helpers. The DMA is direct over shared memory, so the mock finds the rings at
 * the driver-physical addresses vt_vq_drv_addrs gives.
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
		.features = features,
		.dma = f->dma,
		.name = "mock",
		.log = &f->log,
	};
	return ret;
}

static int start(struct fixture *f)
{
	int ret = vt_vq_drv_new(&f->params, &f->vq);
	return ret < 0 ? ret : vq_mock_dev_attach(&f->d, f->vq, QSIZE, false, f->shm);
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
	if (vt_vq_drv_error(f->vq) != error)
		VT_FAIL_AT("line %d: the error changed after breaking", line);
	if (f->seen.calls != 1 || f->seen.errors != 1)
		VT_FAIL_AT("line %d: log called %u times (%u errors), expected once", line,
			   f->seen.calls, f->seen.errors);
}

static int tokens_storage[QSIZE * 2];

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

VT_TEST(chain_descriptors_carry_the_bus_addresses_and_flags)
{
	struct fixture f;
	struct iovec sg[3];

	REQUIRE_EQ(setup(&f, 0), 0);
	sg[0] = (struct iovec){ buffer(&f, 10, 1), 10 };
	sg[1] = (struct iovec){ buffer(&f, 20, 2), 20 };
	sg[2] = (struct iovec){ buffer(&f, 30, 3), 30 };
	REQUIRE_EQ(vt_vq_drv_add(f.vq, sg, 2, 1, token_n(0)), 0);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE - 3);
	/* Not visible before kick_prepare. */
	CHECK_EQ(vq_mock_dev_avail_idx(&f.d), 0);
	vt_vq_drv_kick_prepare(f.vq);
	CHECK_EQ(vq_mock_dev_avail_idx(&f.d), 1);

	uint16_t i = vq_mock_dev_avail_ring(&f.d, 0);
	for (int k = 0; k < 3; k++) {
		struct vq_mock_desc d = vq_mock_dev_desc(&f.d, i);
		CHECK(d.addr == gpa_of(&f, sg[k].iov_base, sg[k].iov_len));
		CHECK_EQ(d.len, sg[k].iov_len);
		CHECK_EQ(d.flags & VIRTQ_DESC_F_WRITE, k == 2 ? VIRTQ_DESC_F_WRITE : 0);
		CHECK_EQ(d.flags & VIRTQ_DESC_F_NEXT, k < 2 ? VIRTQ_DESC_F_NEXT : 0);
		CHECK_EQ(d.flags & VIRTQ_DESC_F_INDIRECT, 0);
		i = d.next;
	}
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

/* ---------------------------------------------------------------- indirect */

VT_TEST(multi_segment_buffer_goes_into_an_indirect_table_when_negotiated)
{
	struct fixture f;
	struct iovec sg[3];

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	sg[0] = (struct iovec){ buffer(&f, 11, 1), 11 };
	sg[1] = (struct iovec){ buffer(&f, 22, 2), 22 };
	sg[2] = (struct iovec){ buffer(&f, 33, 3), 33 };
	REQUIRE_EQ(vt_vq_drv_add(f.vq, sg, 1, 2, token_n(0)), 0);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE - 1);
	vt_vq_drv_kick_prepare(f.vq);

	struct vq_mock_desc ring = vq_mock_dev_desc(&f.d, vq_mock_dev_avail_ring(&f.d, 0));
	CHECK_EQ(ring.flags, VIRTQ_DESC_F_INDIRECT);
	CHECK_EQ(ring.len, 3 * sizeof(struct virtq_desc));
	struct virtq_desc table[3];
	REQUIRE_EQ(vt_as_read(&f.d.as, ring.addr, table, sizeof(table), NULL), 0);
	for (int k = 0; k < 3; k++) {
		uint16_t flags = vt_le16_to_cpu(table[k].flags);
		CHECK(vt_le64_to_cpu(table[k].addr) == gpa_of(&f, sg[k].iov_base, sg[k].iov_len));
		CHECK_EQ(vt_le32_to_cpu(table[k].len), sg[k].iov_len);
		CHECK_EQ(flags & VIRTQ_DESC_F_WRITE, k > 0 ? VIRTQ_DESC_F_WRITE : 0);
		CHECK_EQ(flags & VIRTQ_DESC_F_INDIRECT, 0);
		if (k < 2) {
			CHECK_EQ(flags & VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_NEXT);
			CHECK_EQ(vt_le16_to_cpu(table[k].next), k + 1);
		} else {
			CHECK_EQ(flags & VIRTQ_DESC_F_NEXT, 0);
		}
	}
	teardown(&f);
}

VT_TEST(single_segment_buffer_is_not_indirect)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(post(&f, 0, 1, 64, token_n(0)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	struct vq_mock_desc d = vq_mock_dev_desc(&f.d, vq_mock_dev_avail_ring(&f.d, 0));
	CHECK_EQ(d.flags, VIRTQ_DESC_F_WRITE);
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

VT_TEST(no_notify_flag_suppresses_kicks)
{
	struct fixture f;
	struct vt_vq_drv_stats st;

	REQUIRE_EQ(setup(&f, 0), 0);
	vq_mock_dev_set_used_flags(&f.d, VIRTQ_USED_F_NO_NOTIFY);
	REQUIRE_EQ(post(&f, 1, 0, 8, token_n(0)), 0);
	CHECK(!vt_vq_drv_kick_prepare(f.vq));
	CHECK_EQ(vq_mock_dev_avail_idx(&f.d), 1); /* published all the same */
	vq_mock_dev_set_used_flags(&f.d, 0);
	REQUIRE_EQ(post(&f, 1, 0, 8, token_n(1)), 0);
	CHECK(vt_vq_drv_kick_prepare(f.vq));
	vt_vq_drv_get_stats(f.vq, &st);
	CHECK_EQ(st.kicks, 1);
	CHECK_EQ(st.kicks_suppressed, 1);
	teardown(&f);
}

VT_TEST(event_idx_kicks_exactly_when_avail_event_is_crossed)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	/* "Kick me when you make entry 2 available" (2.7.10). */
	vq_mock_dev_set_avail_event(&f.d, 2);
	static const bool expect[4] = { false, false, true, false };
	for (unsigned int i = 0; i < 4; i++) {
		REQUIRE_EQ(post(&f, 1, 0, 8, token_n(i)), 0);
		CHECK_EQ(vt_vq_drv_kick_prepare(f.vq), expect[i]);
	}
	/* Several buffers in one publication that jump over avail_event: one kick. */
	vq_mock_dev_set_avail_event(&f.d, 5);
	for (unsigned int i = 4; i < 8; i++)
		REQUIRE_EQ(post(&f, 1, 0, 8, token_n(i)), 0);
	CHECK(vt_vq_drv_kick_prepare(f.vq));
	CHECK_EQ(vq_mock_dev_avail_idx(&f.d), 8);
	teardown(&f);
}

VT_TEST(event_idx_ignores_the_no_notify_flag)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	vq_mock_dev_set_used_flags(&f.d, VIRTQ_USED_F_NO_NOTIFY);
	vq_mock_dev_set_avail_event(&f.d, 0);
	REQUIRE_EQ(post(&f, 1, 0, 8, token_n(0)), 0);
	CHECK(vt_vq_drv_kick_prepare(f.vq));
	teardown(&f);
}

VT_TEST(disable_cb_sets_no_interrupt_and_enable_cb_clears_it_and_rechecks)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[1] = { token_n(0) };

	REQUIRE_EQ(setup(&f, 0), 0);
	vt_vq_drv_disable_cb(f.vq);
	CHECK_EQ(vq_mock_dev_avail_flags(&f.d), VIRTQ_AVAIL_F_NO_INTERRUPT);
	CHECK(!vt_vq_drv_enable_cb(f.vq));
	CHECK_EQ(vq_mock_dev_avail_flags(&f.d), 0);
	vt_vq_drv_disable_cb(f.vq);
	REQUIRE_EQ(post_kicked(&f, 1, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
	/* A buffer came back while callbacks were off: the recheck reports it. */
	CHECK(vt_vq_drv_enable_cb(f.vq));
	CHECK_EQ(vq_mock_dev_avail_flags(&f.d), 0);
	teardown(&f);
}

VT_TEST(event_idx_enable_cb_writes_used_event_and_rechecks)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[2] = { token_n(0), token_n(1) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	REQUIRE_EQ(post_kicked(&f, 2, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	vt_vq_drv_disable_cb(f.vq);
	/* "Interrupt me at the next used entry": used_event is what was collected. */
	CHECK(!vt_vq_drv_enable_cb(f.vq));
	CHECK_EQ(vq_mock_dev_used_event(&f.d), 1);
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
	/* One entry for the first three (2.7.9): the last one's id, the index moved by three. */
	vq_mock_dev_set_used_elem(&f.d, 0, c[2].id, 30);
	vq_mock_dev_set_used_idx(&f.d, 3);
	for (int i = 0; i < 3; i++) {
		REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
		CHECK(token == tokens[i]);
		CHECK_EQ(len, i == 2 ? 30 : 0);
	}
	CHECK_EQ(vt_vq_drv_get(f.vq, &token, &len), -EAGAIN);
	/* And a plain entry after it, in the slot after the batch. */
	vq_mock_dev_set_used_elem(&f.d, 3, c[3].id, 4);
	vq_mock_dev_set_used_idx(&f.d, 4);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK(token == tokens[3]);
	CHECK_EQ(len, 4);
	CHECK_EQ(vt_vq_drv_free_descs(f.vq), QSIZE);
	CHECK(!vt_vq_drv_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(in_order_descriptors_are_used_sequentially)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, F(IN_ORDER)), 0);
	uint16_t expect = 0;
	/* Around the ring twice: each chain starts where the previous one ended (2.7.5.1.1). */
	for (unsigned int i = 0; i < 12; i++) {
		REQUIRE_EQ(post(&f, 1 + i % 3, 1, 8, token_n(i)), 0);
		vt_vq_drv_kick_prepare(f.vq);
		REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
		CHECK_EQ(c.id, expect);
		expect = (uint16_t)((expect + c.ndesc) % QSIZE);
		vq_mock_dev_complete(&f.d, c.id, c.ndesc, 1);
		REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
		CHECK(token == token_n(i));
	}
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
	vq_mock_dev_set_used_elem(&f.d, 0, QSIZE, 0);
	vq_mock_dev_set_used_idx(&f.d, 1);
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
	teardown(&f);
}

VT_TEST(used_id_of_a_descriptor_inside_a_chain_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[1] = { token_n(0) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 1, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	/* The chain's second descriptor: in range, posted, but not a head. */
	uint16_t second = vq_mock_dev_desc(&f.d, c.id).next;
	vq_mock_dev_set_used_elem(&f.d, 0, second, 0);
	vq_mock_dev_set_used_idx(&f.d, 1);
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
	teardown(&f);
}

/* A one-segment buffer posted after the kick: the device was never given it. */
VT_TEST(used_id_of_a_buffer_posted_after_the_kick_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post(&f, 1, 0, 32, token_n(0)), 0);
	vt_vq_drv_kick_prepare(f.vq);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	REQUIRE_EQ(post(&f, 1, 0, 32, token_n(1)), 0);
	/* The head the second buffer took: in range, posted, not made available. */
	uint16_t unkicked = vq_mock_dev_avail_ring(&f.d, 1);
	vq_mock_dev_set_used_elem(&f.d, 0, unkicked, 0);
	vq_mock_dev_set_used_idx(&f.d, 1);
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
	/* The same head again, while another buffer is still outstanding. */
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 0);
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
	teardown(&f);
}

VT_TEST(used_idx_moved_by_more_than_outstanding_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_dev_chain c;
	void *tokens[2] = { token_n(0), token_n(1) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(post_kicked(&f, 2, tokens), 0);
	REQUIRE_EQ(vq_mock_dev_take(&f.d, &c), 0);
	vq_mock_dev_set_used_elem(&f.d, 0, c.id, 0);
	vq_mock_dev_set_used_idx(&f.d, 3);
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_IDX);
	teardown(&f);
}

VT_TEST(used_idx_moved_backwards_breaks_the_queue)
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
	vq_mock_dev_set_used_idx(&f.d, 0); /* 65535 entries ahead */
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_IDX);
	teardown(&f);
}

VT_TEST(used_entry_with_nothing_outstanding_breaks_the_queue)
{
	struct fixture f;
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, 0), 0);
	vq_mock_dev_set_used_elem(&f.d, 0, 0, 0);
	vq_mock_dev_set_used_idx(&f.d, 1);
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_IDX);
	teardown(&f);
}

VT_TEST(in_order_batch_longer_than_the_used_idx_moved_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_dev_chain c[3];
	void *tokens[3] = { token_n(0), token_n(1), token_n(2) };
	void *token;
	uint32_t len;

	REQUIRE_EQ(setup(&f, F(IN_ORDER)), 0);
	REQUIRE_EQ(post_kicked(&f, 3, tokens), 0);
	for (int i = 0; i < 3; i++)
		REQUIRE_EQ(vq_mock_dev_take(&f.d, &c[i]), 0);
	/* An entry for the third buffer (a batch of three), but the index moved by two. */
	vq_mock_dev_set_used_elem(&f.d, 0, c[2].id, 0);
	vq_mock_dev_set_used_idx(&f.d, 2);
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_IDX);
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
	/* A free descriptor after both chains. */
	vq_mock_dev_set_used_elem(&f.d, 0, QSIZE - 1, 0);
	vq_mock_dev_set_used_idx(&f.d, 1);
	CHECK_BROKEN(&f, vt_vq_drv_get(f.vq, &token, &len), VT_VQ_ERR_USED_ID);
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
	vq_mock_dev_complete(&f.d, c.id, c.ndesc, 1);
	REQUIRE_EQ(vt_vq_drv_get(f.vq, &token, &len), 0);
	CHECK_EQ(len, 0);
	vt_vq_drv_get_stats(f.vq, &st);
	CHECK_EQ(st.used_len_clamped, 1);
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
	static const struct vq_mock_desc junk = { 0xdead0000, 0xffffffff,
						  VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT, 7 };
	struct vq_mock_desc table_desc = c[0].ring_desc;
	for (uint16_t i = 0; i < QSIZE; i++) {
		struct virtq_desc *d = &f.d.desc[i];
		d->addr = vt_cpu_to_le64(junk.addr);
		d->len = vt_cpu_to_le32(junk.len);
		d->flags = vt_cpu_to_le16(junk.flags);
		d->next = vt_cpu_to_le16(junk.next);
	}
	for (uint32_t k = 0; k < table_desc.len / sizeof(struct virtq_desc); k++)
		REQUIRE_EQ(vt_as_write(&f.d.as, table_desc.addr + k * sizeof(struct virtq_desc),
				       &(struct virtq_desc){
					   vt_cpu_to_le64(junk.addr), vt_cpu_to_le32(junk.len),
					   vt_cpu_to_le16(junk.flags), vt_cpu_to_le16(junk.next) },
				       sizeof(struct virtq_desc), NULL),
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
