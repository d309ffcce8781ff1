/* SPDX-License-Identifier: MIT */
/*
 * vhost-user inflight tracking on the split ring (vq_inflight.c): a device half records in a
 * shared region which buffers it took and returned; a device half started later on the same
 * region (a back-end restarted after a crash) hands the unfinished ones out again, oldest first,
 * and then carries on with the ring where the first one stopped. The "crash" is freeing the
 * first device half without returning its buffers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "vq_mock.h"

#include <virtue/spec/vhost_user.h>
#include <virtue/spec/virtio_config.h>

#define QSIZE 16

struct fixture {
	struct vq_mock m;
	struct vt_vq_dev_params params;
	struct vhost_user_inflight_split *region;
	struct vt_log log;
};

static const struct vq_mock_seg request[] = { { 16, false }, { 512, true }, { 1, true } };

static int setup_format(struct fixture *f, bool packed)
{
	memset(f, 0, sizeof(*f));
	f->log = (struct vt_log){ .max_level = VT_LOG_ERROR };
	struct vq_mock_params mp = { .num = QSIZE, .packed = packed };
	int ret = vq_mock_init(&f->m, &mp);
	if (ret < 0)
		return ret;
	uint64_t features = VT_BIT(VIRTIO_F_VERSION_1) | VT_BIT(VIRTIO_F_INDIRECT_DESC);
	if (packed)
		features |= VT_BIT(VIRTIO_F_RING_PACKED);
	vq_mock_dev_params(&f->m, features, &f->params);
	f->params.log = &f->log;
	/* Zero-filled, as a fresh GET_INFLIGHT_FD buffer is. */
	f->region = calloc(1, vt_vq_inflight_size(QSIZE));
	f->params.inflight = f->region;
	return f->region ? 0 : -ENOMEM;
}

static int setup(struct fixture *f)
{
	return setup_format(f, false);
}

static void teardown(struct fixture *f)
{
	free(f->region);
	vq_mock_destroy(&f->m);
}

static int pop(struct vt_vq_dev *vq, struct vt_vq_chain *chain)
{
	struct iovec iov[8];
	return vt_vq_dev_pop(vq, chain, iov, 8);
}

VT_TEST(a_fresh_region_is_initialized_for_the_queue)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	REQUIRE(setup(&f) == 0);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	CHECK_EQ(f.region->version, 1);
	CHECK_EQ(f.region->desc_num, QSIZE);
	vt_vq_dev_free(vq);
	teardown(&f);
}

VT_TEST(taken_buffers_are_marked_and_used_ones_cleared)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	struct vq_mock_chain c[3];
	struct vt_vq_chain got[3];
	REQUIRE(setup(&f) == 0);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	for (int i = 0; i < 3; i++)
		REQUIRE_EQ(vq_mock_add(&f.m, request, 3, 0, &c[i]), 0);
	for (int i = 0; i < 3; i++) {
		REQUIRE_EQ(pop(vq, &got[i]), 0);
		CHECK_EQ(f.region->desc[got[i].id].inflight, 1);
	}
	CHECK(f.region->desc[got[0].id].counter < f.region->desc[got[1].id].counter);
	CHECK(f.region->desc[got[1].id].counter < f.region->desc[got[2].id].counter);
	REQUIRE_EQ(vt_vq_dev_push(vq, &got[1], 1), 0);
	vt_vq_dev_flush(vq);
	CHECK_EQ(f.region->desc[got[1].id].inflight, 0);
	CHECK_EQ(f.region->desc[got[0].id].inflight, 1);
	CHECK_EQ(f.region->used_idx, 1);
	CHECK_EQ(f.region->used_idx, vq_mock_used_idx(&f.m));
	vt_vq_dev_free(vq);
	teardown(&f);
}

VT_TEST(a_restarted_device_resubmits_unfinished_buffers_oldest_first)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	struct vq_mock_chain c[5];
	struct vt_vq_chain got[5], again;
	REQUIRE(setup(&f) == 0);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	for (int i = 0; i < 4; i++)
		REQUIRE_EQ(vq_mock_add(&f.m, request, 3, 0, &c[i]), 0);
	for (int i = 0; i < 4; i++)
		REQUIRE_EQ(pop(vq, &got[i]), 0);
	/* Out of order: the third completes, the others are still in flight at the crash. */
	REQUIRE_EQ(vt_vq_dev_push(vq, &got[2], 1), 0);
	vt_vq_dev_flush(vq);
	vt_vq_dev_free(vq); /* the crash */

	/* A buffer made available while the back-end was down. */
	REQUIRE_EQ(vq_mock_add(&f.m, request, 3, 0, &c[4]), 0);
	/* QEMU resumes at the used index it last saw, not at what the back-end had taken. */
	f.params.next_avail = vq_mock_used_idx(&f.m);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	const int order[] = { 0, 1, 3 };
	for (int k = 0; k < 3; k++) {
		REQUIRE_EQ(pop(vq, &again), 0);
		CHECK_EQ(again.id, c[order[k]].id);
		CHECK_EQ(again.writable_bytes, 513);
	}
	/* Then the ring goes on after what the first device had taken. */
	REQUIRE_EQ(pop(vq, &again), 0);
	CHECK_EQ(again.id, c[4].id);
	CHECK_EQ(pop(vq, &again), -EAGAIN);
	CHECK_EQ(vt_vq_dev_in_flight(vq), 4);
	vt_vq_dev_free(vq);
	teardown(&f);
}

VT_TEST(a_batch_published_but_not_cleared_is_not_resubmitted)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	struct vq_mock_chain c[2];
	struct vt_vq_chain got[2], again;
	REQUIRE(setup(&f) == 0);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	for (int i = 0; i < 2; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, request, 3, 0, &c[i]), 0);
		REQUIRE_EQ(pop(vq, &got[i]), 0);
	}
	REQUIRE_EQ(vt_vq_dev_push(vq, &got[0], 1), 0);
	vt_vq_dev_flush(vq);
	vt_vq_dev_free(vq);
	/* Die between publishing used->idx and clearing the batch: undo the clearing by hand. */
	f.region->desc[got[0].id].inflight = 1;
	f.region->used_idx = 0;

	f.params.next_avail = vq_mock_used_idx(&f.m);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	REQUIRE_EQ(pop(vq, &again), 0);
	CHECK_EQ(again.id, c[1].id); /* only the one never used */
	CHECK_EQ(pop(vq, &again), -EAGAIN);
	CHECK_EQ(f.region->desc[got[0].id].inflight, 0);
	CHECK_EQ(f.region->used_idx, 1);
	vt_vq_dev_free(vq);
	teardown(&f);
}

VT_TEST(a_region_for_another_queue_size_starts_afresh)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	struct vq_mock_chain c;
	struct vt_vq_chain got;
	REQUIRE(setup(&f) == 0);
	f.region->version = 1;
	f.region->desc_num = QSIZE / 2;
	f.region->desc[3].inflight = 1;
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	CHECK_EQ(f.region->desc_num, QSIZE);
	CHECK_EQ(f.region->desc[3].inflight, 0);
	REQUIRE_EQ(vq_mock_add(&f.m, request, 3, 0, &c), 0);
	REQUIRE_EQ(pop(vq, &got), 0);
	CHECK_EQ(got.id, c.id);
	vt_vq_dev_free(vq);
	teardown(&f);
}

VT_TEST(an_inconsistent_region_is_not_trusted)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	struct vq_mock_chain c;
	struct vt_vq_chain got;
	REQUIRE(setup(&f) == 0);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	vt_vq_dev_free(vq);
	/* A hostile or corrupted region: used_idx far from the ring's, a loop in the batch list. */
	f.region->used_idx = 1000;
	f.region->last_batch_head = 2;
	f.region->desc[2].next = 2;
	f.region->desc[5].inflight = 1;
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, request, 3, 0, &c), 0);
	REQUIRE_EQ(pop(vq, &got), 0);
	CHECK_EQ(got.id, c.id); /* nothing resubmitted from the garbage */
	CHECK_EQ(f.region->desc[5].inflight, 0);
	vt_vq_dev_free(vq);
	teardown(&f);
}

VT_TEST(in_order_queues_ignore_the_region)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	REQUIRE(setup(&f) == 0);
	f.params.features |= VT_BIT(VIRTIO_F_IN_ORDER);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	CHECK_EQ(f.region->version, 0);
	vt_vq_dev_free(vq);
	teardown(&f);
}

/* ------------------------------------------------------------------ packed layout */

static struct vhost_user_inflight_packed *packed_region(struct fixture *f)
{
	return (struct vhost_user_inflight_packed *)(void *)f->region;
}

VT_TEST(packed_a_fresh_region_holds_every_entry_free)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	REQUIRE(setup_format(&f, true) == 0);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	struct vhost_user_inflight_packed *r = packed_region(&f);
	CHECK_EQ(r->version, 1);
	CHECK_EQ(r->desc_num, QSIZE);
	CHECK_EQ(r->free_head, 0);
	CHECK_EQ(r->used_wrap_counter, 1);
	for (unsigned int i = 0; i < QSIZE; i++)
		CHECK_EQ(r->desc[i].next, i + 1);
	vt_vq_dev_free(vq);
	teardown(&f);
}

VT_TEST(packed_taken_buffers_keep_copies_of_their_descriptors)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	struct vq_mock_chain c;
	struct vt_vq_chain got;
	REQUIRE(setup_format(&f, true) == 0);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, request, 3, 0, &c), 0);
	REQUIRE_EQ(pop(vq, &got), 0);
	struct vhost_user_inflight_packed *r = packed_region(&f);
	CHECK_EQ(r->desc[0].inflight, 1);
	CHECK_EQ(r->desc[0].num, 3);
	CHECK_EQ(r->desc[0].last, 2);
	CHECK_EQ(r->free_head, 3);
	CHECK_EQ(r->old_free_head, 3);
	for (unsigned int i = 0; i < 3; i++) {
		CHECK_EQ(r->desc[i].len, c.len[i]);
		CHECK_EQ(r->desc[i].addr, vq_mock_get_packed_desc(&f.m, (uint16_t)i).addr);
	}
	CHECK_EQ(r->desc[2].id, c.id);
	REQUIRE_EQ(vt_vq_dev_push(vq, &got, 1), 0);
	vt_vq_dev_flush(vq);
	CHECK_EQ(r->desc[0].inflight, 0);
	CHECK_EQ(r->free_head, 0); /* the entries are free again, head first */
	CHECK_EQ(r->old_used_idx, 3);
	vt_vq_dev_free(vq);
	teardown(&f);
}

static void packed_restart(bool indirect)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	struct vq_mock_chain c[5];
	struct vt_vq_chain got[4], again;
	REQUIRE(setup_format(&f, true) == 0);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	for (int i = 0; i < 4; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, request, 3, indirect ? VQ_MOCK_INDIRECT : 0, &c[i]),
			   0);
		REQUIRE_EQ(pop(vq, &got[i]), 0);
	}
	/* The third completes: its used descriptor overwrites the first buffer's ring slot. */
	REQUIRE_EQ(vt_vq_dev_push(vq, &got[2], 1), 0);
	vt_vq_dev_flush(vq);
	vt_vq_dev_free(vq); /* the crash */

	REQUIRE_EQ(vq_mock_add(&f.m, request, 3, indirect ? VQ_MOCK_INDIRECT : 0, &c[4]), 0);
	f.params.next_avail = VT_VQ_PACKED_START; /* whatever the front-end says: the region wins */
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	const int order[] = { 0, 1, 3 };
	for (int k = 0; k < 3; k++) {
		REQUIRE_EQ(pop(vq, &again), 0);
		CHECK_EQ(again.id, c[order[k]].id);
		CHECK_EQ(again.readable_bytes, 16);
		CHECK_EQ(again.writable_bytes, 513);
	}
	REQUIRE_EQ(pop(vq, &again), 0);
	CHECK_EQ(again.id, c[4].id);
	CHECK_EQ(pop(vq, &again), -EAGAIN);
	/* Returning them all leaves the region with nothing in flight. */
	vt_vq_dev_free(vq);
	teardown(&f);
}

VT_TEST(packed_a_restarted_device_resubmits_from_the_copies)
{
	packed_restart(false);
}

VT_TEST(packed_a_restarted_device_resubmits_indirect_buffers)
{
	packed_restart(true);
}

VT_TEST(packed_a_batch_published_but_not_committed_is_not_resubmitted)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	struct vq_mock_chain c[2];
	struct vt_vq_chain got[2], again;
	REQUIRE(setup_format(&f, true) == 0);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	for (int i = 0; i < 2; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, request, 3, 0, &c[i]), 0);
		REQUIRE_EQ(pop(vq, &got[i]), 0);
	}
	struct vhost_user_inflight_packed *r = packed_region(&f);
	struct vhost_user_inflight_packed before = *r;
	uint8_t head_inflight = r->desc[0].inflight;
	REQUIRE_EQ(vt_vq_dev_push(vq, &got[0], 1), 0);
	vt_vq_dev_flush(vq);
	vt_vq_dev_free(vq);
	/* Die after the used descriptor was written, before the batch was committed. */
	r->old_free_head = before.old_free_head;
	r->old_used_idx = before.old_used_idx;
	r->old_used_wrap_counter = before.old_used_wrap_counter;
	r->desc[0].inflight = head_inflight;

	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	REQUIRE_EQ(pop(vq, &again), 0);
	CHECK_EQ(again.id, c[1].id); /* the used one is not handed out twice */
	CHECK_EQ(pop(vq, &again), -EAGAIN);
	vt_vq_dev_free(vq);
	teardown(&f);
}

VT_TEST(packed_an_inconsistent_region_is_not_trusted)
{
	struct fixture f;
	struct vt_vq_dev *vq;
	struct vq_mock_chain c;
	struct vt_vq_chain got;
	REQUIRE(setup_format(&f, true) == 0);
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	vt_vq_dev_free(vq);
	struct vhost_user_inflight_packed *r = packed_region(&f);
	/* A head claiming more descriptors than the ring has, and a looping free list. */
	r->desc[4].inflight = 1;
	r->desc[4].num = QSIZE + 1;
	r->desc[7].next = 7;
	REQUIRE_EQ(vt_vq_dev_new(&f.params, &vq), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, request, 3, 0, &c), 0);
	REQUIRE_EQ(pop(vq, &got), 0);
	CHECK_EQ(got.id, c.id);
	CHECK(!vt_vq_dev_is_broken(vq));
	vt_vq_dev_free(vq);
	teardown(&f);
}
