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

#include "harness.h"
#include "vq_pair.h"

#include <virtue/virtqueue.h>

#define QSIZE	16
#define MAX_IOV 8

/* The device takes one buffer and checks it is the one expected, bytes and shape. */
static int take(struct vq_pair *r, struct vt_vq_chain *c, struct iovec *iov, unsigned int expect)
{
	int ret = vt_vq_dev_pop(r->dev, c, iov, MAX_IOV);
	return ret < 0 ? ret : vq_pair_check(r, c, iov, expect);
}

/* The device answers (the readable bytes reversed into the writable part) and publishes. */
static int answer(struct vq_pair *r, const struct vt_vq_chain *c, const struct iovec *iov)
{
	int ret = vt_vq_dev_push(r->dev, c, vq_pair_answer(c, iov));
	vt_vq_dev_flush(r->dev);
	return ret;
}

/* In-order traffic to move the ring around: @rounds buffers through the current device. */
static int churn(struct vq_pair *r, unsigned int rounds)
{
	struct vt_vq_chain c;
	struct iovec iov[MAX_IOV];
	for (unsigned int i = 0; i < rounds; i++) {
		unsigned int b = 20 + i % 4;
		int ret = vq_pair_post(r, b, 1 + i % 3);
		if (ret == 0) {
			vt_vq_drv_kick_prepare(r->drv);
			ret = take(r, &c, iov, b);
		}
		if (ret == 0)
			ret = answer(r, &c, iov);
		if (ret == 0)
			ret = vq_pair_collect(r, b);
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
	struct vq_pair r;
	struct vt_vq_chain c[4], again;
	struct iovec iov[4][MAX_IOV], iov2[MAX_IOV];
	uint32_t base = 0;

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, indirect, inflight), 0);
	REQUIRE_EQ(churn(&r, laps), 0);
	const unsigned int shapes[6] = { 3, 1, 2, 3, 1, 2 };
	for (unsigned int i = 0; i < 5; i++)
		REQUIRE_EQ(vq_pair_post(&r, i, shapes[i]), 0);
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
	CHECK_EQ(vq_pair_collect(&r, 1), 0);
	CHECK_EQ(vq_pair_collect(&r, 3), 0);
	REQUIRE_EQ(vq_pair_post(&r, 5, shapes[5]), 0);

	REQUIRE_EQ(vt_vq_drv_rebase(r.drv, &base), 0);
	REQUIRE_EQ(vq_pair_dev_start(&r, base), 0);
	const unsigned int expect[4] = { 0, 2, 4, 5 };
	for (unsigned int k = 0; k < 4; k++) {
		REQUIRE_EQ(take(&r, &again, iov2, expect[k]), 0);
		REQUIRE_EQ(answer(&r, &again, iov2), 0);
	}
	CHECK_EQ(vt_vq_dev_pop(r.dev, &again, iov2, MAX_IOV), -EAGAIN);
	/* In the order completed, with the device's answers in them. */
	for (unsigned int k = 0; k < 4; k++)
		CHECK_EQ(vq_pair_collect(&r, expect[k]), 0);
	void *token;
	uint32_t len;
	CHECK_EQ(vt_vq_drv_get(r.drv, &token, &len), -EAGAIN);
	/* The ring goes on, several laps, with the new device. */
	CHECK_EQ(churn(&r, 5 * QSIZE + 3), 0);
	CHECK(!vt_vq_drv_is_broken(r.drv));
	CHECK(!vt_vq_dev_is_broken(r.dev));
	vq_pair_destroy(&r);
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
		struct vq_pair r;
		uint32_t base = 99;
		REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
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
		REQUIRE_EQ(vq_pair_dev_start(&r, base), 0);
		CHECK_EQ(churn(&r, QSIZE), 0);
		vq_pair_destroy(&r);
	}
}
