/* SPDX-License-Identifier: MIT */
/*
 * The device half of the packed virtqueue against a mock driver (vq_mock.h) that writes any ring
 * state: every rule of virtio 1.3 section 2.8 the device must enforce, as one test per violation
 * (the queue breaks with the named error, is logged once, stays broken, and nothing in or around
 * the region changes), and the friendly behaviour the same helpers build: wrap counters, used
 * descriptors, event suppression, IN_ORDER batches, resumption and odd queue sizes.
 */
#include <errno.h>
#include <sys/mman.h>
#if defined(__x86_64__) && defined(__linux__)
#include <signal.h>
#include <ucontext.h>
#endif

#include <virtue/spec/virtio_config.h>
#include <virtue/virtqueue.h>

#include "harness.h"
#include "vq_mock.h"

#define QSIZE  16
#define IOV_N  64
#define F(bit) VT_BIT(VIRTIO_F_##bit)
/* A descriptor-ring position in the event-suppression / SET_VRING_BASE encoding (2.8.14). */
#define POS(slot, wrap) ((uint16_t)((slot) | (unsigned int)(wrap) << PVIRTQ_EVENT_WRAP_SHIFT))

struct log_capture {
	unsigned int calls, errors;
	char last[512];
};

static void capture_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_capture *c = opaque;

	c->calls++;
	c->errors += level == VT_LOG_ERROR;
	snprintf(c->last, sizeof(c->last), "%s", message);
}

struct fixture {
	struct vq_mock m;
	struct vt_vq_dev_params params;
	struct vt_vq_dev *vq;
	struct log_capture seen;
	struct vt_log log;
	struct vt_vq_chain chain;
	struct iovec iov[IOV_N];
};

/* A packed mock ring of @num and the parameters a device would be given; the queue comes later. */
static int setup_mock_num(struct fixture *f, enum vq_mock_space space, uint64_t features,
			  unsigned int num)
{
	memset(f, 0, sizeof(*f));
	f->log =
	    (struct vt_log){ .fn = capture_log, .opaque = &f->seen, .max_level = VT_LOG_DEBUG };
	struct vq_mock_params mp = { .num = num, .packed = true, .space = space };
	int ret = vq_mock_init(&f->m, &mp);
	if (ret < 0)
		return ret;
	vq_mock_dev_params(&f->m, features | F(RING_PACKED), &f->params);
	f->params.log = &f->log;
	return 0;
}

static int setup_mock(struct fixture *f, enum vq_mock_space space, uint64_t features)
{
	return setup_mock_num(f, space, features, QSIZE);
}

static int start(struct fixture *f)
{
	return vt_vq_dev_new(&f->params, &f->vq);
}

static int setup(struct fixture *f, uint64_t features)
{
	int ret = setup_mock(f, VQ_MOCK_MEMTABLE, features);
	return ret < 0 ? ret : start(f);
}

static int setup_iotlb(struct fixture *f, uint64_t features)
{
	int ret = setup_mock(f, VQ_MOCK_IOTLB, features);
	return ret < 0 ? ret : start(f);
}

static void teardown(struct fixture *f)
{
	vt_vq_dev_free(f->vq);
	vq_mock_destroy(&f->m);
}

static int pop(struct fixture *f)
{
	return vt_vq_dev_pop(f->vq, &f->chain, f->iov, IOV_N);
}

/* The pop a hostile case is about: what the region held just before is remembered. */
static int pop_hostile(struct fixture *f)
{
	vq_mock_snapshot(&f->m);
	return pop(f);
}

/* The flags of a used descriptor written in the lap @wrap: AVAIL == USED == wrap (2.8.1). */
static uint16_t used_flags(bool wrap, bool written)
{
	return (uint16_t)(vq_mock_packed_used_bits(wrap) | (written ? VIRTQ_DESC_F_WRITE : 0));
}

/* The descriptor at @slot is a used one for buffer @id, @len bytes, with exactly @flags. */
#define CHECK_USED(f, slot, id, len, flags) check_used(f, slot, id, len, flags, __LINE__)

static void check_used(struct fixture *f, uint16_t slot, uint16_t id, uint32_t len, uint16_t flags,
		       int line)
{
	struct vq_mock_desc d = vq_mock_get_packed_desc(&f->m, slot);

	if (d.next != id || d.len != len || d.flags != flags)
		VT_FAIL_AT("line %d: slot %u holds id %u len %u flags 0x%04x, expected id %u len "
			   "%u flags 0x%04x",
			   line, slot, d.next, d.len, d.flags, id, len, flags);
}

/*
 * A violation: @ret is -EPROTO, the queue is broken with @error, every later call finds the latch,
 * the log heard of it exactly once, nothing was consumed or returned, and nothing in the region
 * (a broken queue writes no used descriptor and no event area) nor around it (canaries) changed.
 */
#define CHECK_BROKEN(f, ret, error) check_broken(f, ret, error, __LINE__)

static void check_broken(struct fixture *f, int ret, enum vt_vq_error error, int line)
{
	unsigned int in_flight = vt_vq_dev_in_flight(f->vq);
	uint16_t next_avail = vt_vq_dev_next_avail(f->vq);

	if (ret != -EPROTO)
		VT_FAIL_AT("line %d: returned %d, expected -EPROTO", line, ret);
	if (!vt_vq_dev_is_broken(f->vq))
		VT_FAIL_AT("line %d: queue not broken", line);
	enum vt_vq_error seen = vt_vq_dev_error(f->vq);
	if (seen != error)
		VT_FAIL_AT("line %d: error %d (%s), expected %d (%s)", line, seen,
			   vt_vq_error_str(seen), error, vt_vq_error_str(error));

	for (int i = 0; i < 3; i++)
		if (pop(f) != -EPROTO)
			VT_FAIL_AT("line %d: a later pop did not return -EPROTO", line);
	struct vt_vq_chain any = { .id = 0, .ndesc = 1 };
	if (vt_vq_dev_push(f->vq, &any, 0) != -EPROTO)
		VT_FAIL_AT("line %d: push on a broken queue did not return -EPROTO", line);
	if (vt_vq_dev_flush(f->vq))
		VT_FAIL_AT("line %d: flush on a broken queue asks for a notification", line);
	vt_vq_dev_disable_notify(f->vq);
	if (vt_vq_dev_enable_notify(f->vq))
		VT_FAIL_AT("line %d: enable_notify on a broken queue reports work", line);
	if (vt_vq_dev_error(f->vq) != error)
		VT_FAIL_AT("line %d: the error changed after breaking", line);

	if (f->seen.calls != 1 || f->seen.errors != 1)
		VT_FAIL_AT("line %d: log called %u times (%u errors), expected once", line,
			   f->seen.calls, f->seen.errors);
	if (vt_vq_dev_in_flight(f->vq) != in_flight || vt_vq_dev_next_avail(f->vq) != next_avail)
		VT_FAIL_AT("line %d: a broken queue consumed a buffer", line);
	if (!vq_mock_canaries_intact(&f->m))
		VT_FAIL_AT("line %d: memory outside the address space was written", line);
	long changed = vq_mock_first_change(&f->m, false);
	if (changed >= 0)
		VT_FAIL_AT("line %d: ring memory at offset %ld changed", line, changed);
}

static const struct vq_mock_seg three_mixed[] = { { 64, false }, { 32, false }, { 128, true } };
static const struct vq_mock_seg one_readable = { 8, false };
static const struct vq_mock_seg one_writable = { 8, true };

/* ---------------------------------------------------------------- buffer ids */

VT_TEST(buffer_id_out_of_range_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, 0, &c), 0);
	/* The buffer id is the last descriptor's (2.8.6). */
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, 2);
	d.next = QSIZE;
	vq_mock_packed_set_chain_desc(&f.m, &c, 2, d);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_BUFFER_ID);
	teardown(&f);
}

VT_TEST(buffer_id_of_a_single_descriptor_out_of_range_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, &one_writable, 1, 0, &c), 0);
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, 0);
	d.next = 0xffff;
	vq_mock_packed_set_chain_desc(&f.m, &c, 0, d);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_BUFFER_ID);
	teardown(&f);
}

VT_TEST(buffer_id_made_available_again_while_in_flight_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(f.chain.id, a.id);
	/* A second buffer in fresh slots, but under the id the device still holds. */
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, 0, &b), 0);
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &b, 2);
	d.next = a.id;
	vq_mock_packed_set_chain_desc(&f.m, &b, 2, d);
	vq_mock_publish(&f.m, &b);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_BUFFER_ID_IN_FLIGHT);
	teardown(&f);
}

VT_TEST(buffer_id_is_taken_from_the_last_descriptor)
{
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, 0, &c), 0);
	/* The others' ids are not read (2.8.6): garbage there is harmless. */
	for (unsigned int i = 0; i < 3; i++) {
		struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, i);
		d.next = i == 2 ? 7 : 0xffff;
		vq_mock_packed_set_chain_desc(&f.m, &c, i, d);
	}
	c.id = 7;
	vq_mock_publish(&f.m, &c);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, 7);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 5), 0);
	vt_vq_dev_flush(f.vq);
	CHECK_USED(&f, 0, 7, 5, used_flags(true, true));
	teardown(&f);
}

/* ---------------------------------------------------------------- chains */

VT_TEST(chain_with_next_in_every_slot_breaks_with_chain_too_long)
{
	struct vq_mock_seg segs[QSIZE];
	struct fixture f;
	struct vq_mock_chain c;

	for (int i = 0; i < QSIZE; i++)
		segs[i] = (struct vq_mock_seg){ 16, i >= QSIZE / 2 };
	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, segs, QSIZE, 0, &c), 0);
	/* The last links on as well: past the ring end, back to the first slot, forever. */
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, QSIZE - 1);
	d.flags |= VIRTQ_DESC_F_NEXT;
	vq_mock_packed_set_chain_desc(&f.m, &c, QSIZE - 1, d);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_CHAIN_TOO_LONG);
	teardown(&f);
}

VT_TEST(zero_length_descriptors_with_next_in_every_slot_break_with_chain_too_long)
{
	struct vq_mock_seg segs[QSIZE];
	struct fixture f;
	struct vq_mock_chain c;

	for (int i = 0; i < QSIZE; i++)
		segs[i] = (struct vq_mock_seg){ 0, false };
	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, segs, QSIZE, 0, &c), 0);
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, QSIZE - 1);
	d.flags |= VIRTQ_DESC_F_NEXT;
	vq_mock_packed_set_chain_desc(&f.m, &c, QSIZE - 1, d);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_CHAIN_TOO_LONG);
	teardown(&f);
}

VT_TEST(chain_running_into_slots_in_flight_breaks_with_chain_too_long)
{
	static const struct vq_mock_seg four[] = {
		{ 8, false }, { 8, false }, { 8, true }, { 8, true }
	};
	struct vq_mock_seg rest[QSIZE - 4];
	struct fixture f;
	struct vq_mock_chain a, b;

	for (int i = 0; i < QSIZE - 4; i++)
		rest[i] = (struct vq_mock_seg){ 8, true };
	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, four, 4, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);
	/* The rest of the ring, then on into slot 0, which the device still holds for a. */
	REQUIRE_EQ(vq_mock_build(&f.m, rest, QSIZE - 4, 0, &b), 0);
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &b, QSIZE - 5);
	d.flags |= VIRTQ_DESC_F_NEXT;
	vq_mock_packed_set_chain_desc(&f.m, &b, QSIZE - 5, d);
	vq_mock_publish(&f.m, &b);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_CHAIN_TOO_LONG);
	teardown(&f);
}

VT_TEST(chain_longer_than_max_chain_breaks_with_chain_too_long)
{
	static const struct vq_mock_seg five[] = {
		{ 8, false }, { 8, false }, { 8, false }, { 8, true }, { 8, true }
	};
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_mock(&f, VQ_MOCK_MEMTABLE, 0), 0);
	f.params.max_chain = 4;
	REQUIRE_EQ(start(&f), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, five, 5, 0, &c), 0);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_CHAIN_TOO_LONG);
	teardown(&f);
}

VT_TEST(chain_using_every_slot_is_accepted)
{
	struct vq_mock_seg segs[QSIZE];
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";

	for (int i = 0; i < QSIZE; i++)
		segs[i] = (struct vq_mock_seg){ (uint32_t)(i + 1), i >= QSIZE / 2 };
	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, QSIZE, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.ndesc, QSIZE);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	/* The whole ring, once around: the next descriptor is slot 0 in the other lap. */
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), POS(0, false));
	teardown(&f);
}

VT_TEST(readable_descriptor_after_a_writable_one_breaks_the_queue)
{
	static const struct vq_mock_seg segs[] = { { 16, false }, { 16, true }, { 16, false } };
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, 3, 0, &c), 0);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_READABLE_AFTER_WRITABLE);
	teardown(&f);
}

/* A memory-table region of 4 GiB + a page whose host side is reserved and never accessible. */
#define BIG_GPA	 (1ULL << 40)
#define BIG_SIZE ((1ULL << 32) + VQ_MOCK_PAGE)

VT_TEST(chain_longer_than_4_gib_in_total_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	/* Translation only computes host addresses: PROT_NONE proves nothing is touched. */
	void *big =
	    mmap(NULL, BIG_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	REQUIRE(big != MAP_FAILED);
	REQUIRE_EQ(setup(&f, 0), 0);
	struct vt_mem_region r = { .gpa = BIG_GPA, .size = BIG_SIZE, .hva = big };
	REQUIRE_EQ(vt_memtable_add(f.m.table, &r), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 2, 0, &c), 0);
	/* 0xffffffff + 2 bytes: one byte more than 2^32. */
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, 0);
	d.addr = BIG_GPA;
	d.len = UINT32_MAX;
	vq_mock_packed_set_chain_desc(&f.m, &c, 0, d);
	d = vq_mock_packed_chain_desc(&f.m, &c, 1);
	d.addr = BIG_GPA;
	d.len = 2;
	vq_mock_packed_set_chain_desc(&f.m, &c, 1, d);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_TOTAL_LEN);
	teardown(&f);
	munmap(big, BIG_SIZE);
}

/* ---------------------------------------------------------------- indirect */

VT_TEST(indirect_without_the_feature_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_INDIRECT_NOT_NEGOTIATED);
	teardown(&f);
}

VT_TEST(indirect_inside_an_indirect_table_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	/* Entry 1 points at the table itself, as an indirect descriptor. */
	vq_mock_write_desc_at(&f.m, c.table + 16,
			      (struct vq_mock_desc){ c.table, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0 });
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_INDIRECT_NESTED);
	teardown(&f);
}

VT_TEST(indirect_together_with_next_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c, next;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	/* A plain descriptor in the following slot for NEXT to lead to. */
	REQUIRE_EQ(vq_mock_build(&f.m, &one_writable, 1, 0, &next), 0);
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, 0);
	d.flags |= VIRTQ_DESC_F_NEXT;
	vq_mock_packed_set_chain_desc(&f.m, &c, 0, d);
	vq_mock_publish(&f.m, &next);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_INDIRECT_WITH_NEXT);
	teardown(&f);
}

VT_TEST(indirect_descriptor_reached_through_next_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 2, 0, &c), 0);
	uint64_t table =
	    vq_mock_write_table(&f.m, &(struct vq_mock_desc){ c.addr[1], c.len[1], 0, 0 }, 1);
	REQUIRE(table != 0);
	/* A list linked by NEXT whose second descriptor is an indirect one (2.8.19). */
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, 1);
	d.addr = table;
	d.len = 16;
	d.flags |= VIRTQ_DESC_F_INDIRECT;
	vq_mock_packed_set_chain_desc(&f.m, &c, 1, d);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_INDIRECT_WITH_NEXT);
	teardown(&f);
}

/* A valid indirect chain whose ring descriptor then claims a table of @len bytes. */
static void check_indirect_len_breaks(uint32_t len, int line)
{
	struct fixture f;
	struct vq_mock_chain c;

	if (setup(&f, F(INDIRECT_DESC)) < 0 ||
	    vq_mock_build(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c) < 0) {
		VT_FAIL_AT("line %d: setup failed", line);
		return;
	}
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, 0);
	d.len = len;
	vq_mock_packed_set_chain_desc(&f.m, &c, 0, d);
	vq_mock_publish(&f.m, &c);
	check_broken(&f, pop_hostile(&f), VT_VQ_ERR_INDIRECT_LEN, line);
	teardown(&f);
}

VT_TEST(indirect_table_of_length_zero_breaks_the_queue)
{
	check_indirect_len_breaks(0, __LINE__);
}

VT_TEST(indirect_table_length_not_a_multiple_of_16_breaks_the_queue)
{
	check_indirect_len_breaks(2 * 16 + 8, __LINE__);
}

VT_TEST(indirect_table_larger_than_the_queue_breaks_the_queue)
{
	struct vq_mock_seg segs[QSIZE + 1];
	struct fixture f;
	struct vq_mock_chain c;

	for (int i = 0; i <= QSIZE; i++)
		segs[i] = (struct vq_mock_seg){ 4, false };
	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, QSIZE + 1, VQ_MOCK_INDIRECT, &c), 0);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_INDIRECT_LEN);
	teardown(&f);
}

VT_TEST(indirect_table_as_large_as_the_queue_is_accepted)
{
	struct vq_mock_seg segs[QSIZE];
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";

	for (int i = 0; i < QSIZE; i++)
		segs[i] = (struct vq_mock_seg){ (uint32_t)(3 * i + 1), i >= 10 };
	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, QSIZE, VQ_MOCK_INDIRECT, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	teardown(&f);
}

VT_TEST(readable_after_writable_inside_an_indirect_table_breaks_the_queue)
{
	static const struct vq_mock_seg segs[] = { { 16, true }, { 16, false } };
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, 2, VQ_MOCK_INDIRECT, &c), 0);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_READABLE_AFTER_WRITABLE);
	teardown(&f);
}

VT_TEST(indirect_table_outside_memory_breaks_with_unmapped)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	/* Straddling the end of the region: its first entry is mapped, the rest is canary. */
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, 0);
	d.addr = vq_mock_unmapped_addr(&f.m) - 16;
	vq_mock_packed_set_chain_desc(&f.m, &c, 0, d);
	vq_mock_publish(&f.m, &c);
	/* A table is driver-written metadata, not a ring area: the split ring's error. */
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_UNMAPPED);
	teardown(&f);
}

VT_TEST(indirect_table_across_two_memory_regions_is_accepted)
{
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";
	static uint8_t elsewhere[VQ_MOCK_PAGE] __attribute__((aligned(64)));

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	/* A second region right after the first in driver-physical addresses, elsewhere on the
	 * host: a table straddling the two is contiguous for the driver only, and valid. */
	uint64_t end = vq_mock_unmapped_addr(&f.m);
	struct vt_mem_region r = { .gpa = end, .size = sizeof(elsewhere), .hva = elsewhere };
	REQUIRE_EQ(vt_memtable_add(f.m.table, &r), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	struct pvirtq_desc table[3];
	REQUIRE_EQ(vt_as_read(&f.m.as, c.table, table, sizeof(table), NULL), 0);
	REQUIRE_EQ(vt_as_write(&f.m.as, end - 16, table, sizeof(table), NULL), 0);
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, 0);
	d.addr = end - 16;
	vq_mock_packed_set_chain_desc(&f.m, &c, 0, d);
	vq_mock_publish(&f.m, &c);
	int ret = pop(&f);
	CHECK_EQ(ret, 0);
	if (ret == 0)
		CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	else
		fprintf(stderr, "  %s\n", f.seen.last);
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	teardown(&f);
}

VT_TEST(indirect_table_at_an_address_aligned_to_4_only_is_accepted)
{
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	/* The spec asks no alignment of an indirect table (2.8.7): move it to 16n + 4. */
	uint64_t moved = vq_mock_alloc(&f.m, 3 * 16 + 16, 16) + 4;
	memmove(vq_mock_ptr(&f.m, moved), vq_mock_ptr(&f.m, c.table), 3 * 16);
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, 0);
	d.addr = moved;
	vq_mock_packed_set_chain_desc(&f.m, &c, 0, d);
	vq_mock_publish(&f.m, &c);
	int ret = pop(&f);
	CHECK_EQ(ret, 0);
	if (ret == 0)
		CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	else
		fprintf(stderr, "  %s\n", f.seen.last);
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	teardown(&f);
}

/* ---------------------------------------------------------------- translation */

/* A valid chain of three_mixed whose segment @seg is then moved to @addr. */
static void check_segment_at_breaks(unsigned int seg, uint64_t addr, enum vt_vq_error error,
				    int line)
{
	struct fixture f;
	struct vq_mock_chain c;

	if (setup(&f, 0) < 0 || vq_mock_build(&f.m, three_mixed, 3, 0, &c) < 0) {
		VT_FAIL_AT("line %d: setup failed", line);
		return;
	}
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &c, seg);
	d.addr = addr;
	vq_mock_packed_set_chain_desc(&f.m, &c, seg, d);
	vq_mock_publish(&f.m, &c);
	check_broken(&f, pop_hostile(&f), error, line);
	teardown(&f);
}

static uint64_t region_end(void)
{
	struct vq_mock m;
	struct vq_mock_params mp = { .num = QSIZE, .packed = true };

	if (vq_mock_init(&m, &mp) < 0)
		return 0;
	uint64_t end = vq_mock_unmapped_addr(&m);
	vq_mock_destroy(&m);
	return end;
}

VT_TEST(buffer_outside_the_memory_table_breaks_with_unmapped)
{
	check_segment_at_breaks(1, region_end(), VT_VQ_ERR_UNMAPPED, __LINE__);
}

VT_TEST(buffer_straddling_the_end_of_memory_breaks_with_unmapped)
{
	/* The writable buffer's last bytes would be the canary after the region. */
	check_segment_at_breaks(2, region_end() - 8, VT_VQ_ERR_UNMAPPED, __LINE__);
}

VT_TEST(buffer_address_wrapping_past_2_64_breaks_with_unmapped)
{
	check_segment_at_breaks(0, UINT64_MAX - 7, VT_VQ_ERR_UNMAPPED, __LINE__);
}

VT_TEST(iotlb_miss_is_retryable_and_consumes_nothing)
{
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, c.addr[2], c.len[2]), 0);
	vq_mock_snapshot(&f.m);

	CHECK_EQ(pop(&f), -EFAULT);
	struct vt_as_fault fault = vt_vq_dev_fault(f.vq);
	CHECK(fault.addr == c.addr[2]);
	CHECK_EQ(fault.access, VT_ACCESS_WRITE);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(vt_vq_dev_error(f.vq), VT_VQ_OK);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 0);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), VT_VQ_PACKED_START);
	CHECK_EQ(f.seen.errors, 0);
	CHECK_EQ(vq_mock_first_change(&f.m, false), -1);
	/* Asking again before the update changes nothing. */
	CHECK_EQ(pop(&f), -EFAULT);

	/* The transport got the UPDATE: the very same chain comes out. */
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, c.addr[2], c.len[2], VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 1);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), POS(3, true));
	teardown(&f);
}

VT_TEST(iotlb_miss_in_an_indirect_table_is_retryable)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_iotlb(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, c.table, 3 * 16), 0);
	CHECK_EQ(pop(&f), -EFAULT);
	CHECK(vt_vq_dev_fault(f.vq).addr == c.table);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 0);
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, c.table, 3 * 16, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, c.id);
	teardown(&f);
}

VT_TEST(read_only_mapping_for_a_writable_descriptor_breaks_with_permission)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, c.addr[2], c.len[2], VT_IOTLB_PERM_RO), 0);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_PERMISSION);
	teardown(&f);
}

VT_TEST(write_only_mapping_for_a_readable_descriptor_breaks_with_permission)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, c.addr[0], c.len[0], VT_IOTLB_PERM_WO), 0);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_PERMISSION);
	teardown(&f);
}

/*
 * Buffers of one descriptor, as nearly every network buffer is, take a shorter path (the burst's
 * run); every rule holds there too. Each case pops a good one first, so that the path has a
 * translation cached, then builds the one it is about into @b, published by the test.
 */
static void good_then_one(struct fixture *f, const struct vq_mock_seg *seg, struct vq_mock_chain *b)
{
	struct vq_mock_chain a;

	REQUIRE_EQ(vq_mock_add(&f->m, &one_readable, 1, 0, &a), 0);
	REQUIRE_EQ(pop(f), 0);
	REQUIRE_EQ(vq_mock_build(&f->m, seg, 1, 0, b), 0);
}

static void one_descriptor_with(uint16_t id, uint64_t addr, enum vt_vq_error error, int line)
{
	struct fixture f;
	struct vq_mock_chain b;

	REQUIRE_EQ(setup(&f, 0), 0);
	good_then_one(&f, &one_readable, &b);
	struct vq_mock_desc d = vq_mock_packed_chain_desc(&f.m, &b, 0);
	if (id != 0xffff)
		d.next = id;
	if (addr)
		d.addr = addr;
	vq_mock_packed_set_chain_desc(&f.m, &b, 0, d);
	vq_mock_publish(&f.m, &b);
	check_broken(&f, pop_hostile(&f), error, line);
	teardown(&f);
}

VT_TEST(one_descriptor_buffer_with_an_id_out_of_range_breaks_the_queue)
{
	one_descriptor_with(QSIZE, 0, VT_VQ_ERR_BUFFER_ID, __LINE__);
}

VT_TEST(one_descriptor_buffer_with_an_id_in_flight_breaks_the_queue)
{
	/* The good buffer popped first took the mock's first id, 0. */
	one_descriptor_with(0, 0, VT_VQ_ERR_BUFFER_ID_IN_FLIGHT, __LINE__);
}

VT_TEST(one_descriptor_buffer_past_the_end_of_memory_breaks_with_unmapped)
{
	one_descriptor_with(0xffff, region_end(), VT_VQ_ERR_UNMAPPED, __LINE__);
}

VT_TEST(one_descriptor_buffer_straddling_the_end_of_memory_breaks_with_unmapped)
{
	one_descriptor_with(0xffff, region_end() - 4, VT_VQ_ERR_UNMAPPED, __LINE__);
}

/* Every slot is in flight in one chain: the driver owns none, not even for one descriptor. */
VT_TEST(one_descriptor_buffer_in_a_slot_still_in_flight_breaks_with_chain_too_long)
{
	struct vq_mock_seg segs[QSIZE];
	struct fixture f;
	struct vq_mock_chain a, b;

	for (int i = 0; i < QSIZE; i++)
		segs[i] = (struct vq_mock_seg){ 8, false };
	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, QSIZE, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);
	/* Slot 0 of the next lap, made available while the device still holds it. */
	REQUIRE_EQ(vq_mock_add(&f.m, &one_readable, 1, 0, &b), 0);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_CHAIN_TOO_LONG);
	teardown(&f);
}

/* One mapping holds both buffers; it allows what the first needs, not what the second does. */
static void one_descriptor_in_mapping(const struct vq_mock_seg *first,
				      const struct vq_mock_seg *second, unsigned int perm, int line)
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, first, 1, 0, &a), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, second, 1, 0, &b), 0);
	uint64_t lo = a.addr[0] < b.addr[0] ? a.addr[0] : b.addr[0];
	uint64_t hi = a.addr[0] < b.addr[0] ? b.addr[0] + b.len[0] : a.addr[0] + a.len[0];
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, lo, hi - lo, perm), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, a.id);
	check_broken(&f, pop_hostile(&f), VT_VQ_ERR_PERMISSION, line);
	teardown(&f);
}

VT_TEST(one_descriptor_writable_buffer_in_a_read_only_mapping_breaks_with_permission)
{
	one_descriptor_in_mapping(&one_readable, &one_writable, VT_IOTLB_PERM_RO, __LINE__);
}

VT_TEST(one_descriptor_readable_buffer_in_a_write_only_mapping_breaks_with_permission)
{
	one_descriptor_in_mapping(&one_writable, &one_readable, VT_IOTLB_PERM_WO, __LINE__);
}

/* ---------------------------------------------------------------- ring areas */

enum area { AREA_DESC, AREA_DRIVER, AREA_DEVICE };

static uint64_t *area_param(struct fixture *f, enum area a)
{
	return a == AREA_DESC	  ? &f->params.desc_addr
	       : a == AREA_DRIVER ? &f->params.driver_addr
				  : &f->params.device_addr;
}

static uint64_t area_addr(const struct vq_mock *m, enum area a)
{
	return a == AREA_DESC ? m->desc_addr : a == AREA_DRIVER ? m->driver_addr : m->device_addr;
}

/* Where a hostile ring area goes: relative to the mock's layout, or to the end of the region. */
enum origin { FROM_LAYOUT, FROM_END };

/* A valid chain waits, but ring area @a is @offset bytes from @origin. */
static void check_area_breaks(enum area a, enum origin origin, int64_t offset, int line)
{
	struct fixture f;
	struct vq_mock_chain c;

	if (setup_mock(&f, VQ_MOCK_MEMTABLE, 0) < 0) {
		VT_FAIL_AT("line %d: setup failed", line);
		return;
	}
	uint64_t base = origin == FROM_END ? vq_mock_unmapped_addr(&f.m) : area_addr(&f.m, a);
	*area_param(&f, a) = base + (uint64_t)offset;
	if (start(&f) < 0 || vq_mock_add(&f.m, three_mixed, 3, 0, &c) < 0) {
		VT_FAIL_AT("line %d: setup failed", line);
		vq_mock_destroy(&f.m);
		return;
	}
	check_broken(&f, pop_hostile(&f), VT_VQ_ERR_RING_UNMAPPED, line);
	teardown(&f);
}

VT_TEST(descriptor_ring_unmapped_breaks_with_ring_unmapped)
{
	check_area_breaks(AREA_DESC, FROM_END, 0, __LINE__);
}

VT_TEST(descriptor_ring_straddling_the_end_of_memory_breaks_with_ring_unmapped)
{
	check_area_breaks(AREA_DESC, FROM_END, -64, __LINE__);
}

VT_TEST(driver_event_area_unmapped_breaks_with_ring_unmapped)
{
	check_area_breaks(AREA_DRIVER, FROM_END, 0, __LINE__);
}

VT_TEST(device_event_area_unmapped_breaks_with_ring_unmapped)
{
	check_area_breaks(AREA_DEVICE, FROM_END, 0, __LINE__);
}

VT_TEST(misaligned_descriptor_ring_breaks_with_ring_unmapped)
{
	check_area_breaks(AREA_DESC, FROM_LAYOUT, 8, __LINE__); /* 2.8.10.1: 16-byte alignment */
}

VT_TEST(misaligned_driver_event_area_breaks_with_ring_unmapped)
{
	check_area_breaks(AREA_DRIVER, FROM_LAYOUT, 2, __LINE__); /* 4-byte alignment */
}

VT_TEST(misaligned_device_event_area_breaks_with_ring_unmapped)
{
	check_area_breaks(AREA_DEVICE, FROM_LAYOUT, 2, __LINE__);
}

VT_TEST(ring_area_missing_from_the_iotlb_is_a_retryable_fault)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, f.m.device_addr, VQ_MOCK_PAGE), 0);
	CHECK_EQ(pop(&f), -EFAULT);
	struct vt_as_fault fault = vt_vq_dev_fault(f.vq);
	CHECK(fault.addr == f.m.device_addr);
	CHECK(fault.access & VT_ACCESS_WRITE);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(f.seen.errors, 0);
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, f.m.device_addr, VQ_MOCK_PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, c.id);
	teardown(&f);
}

VT_TEST(iotlb_invalidation_of_the_ring_after_a_pop_is_noticed_at_the_next_pop)
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 0), 0);
	vt_vq_dev_flush(f.vq);

	/* The descriptor ring's translation goes away: the cached pointer must not be used. */
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, f.m.desc_addr, VQ_MOCK_PAGE), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &b), 0);
	CHECK_EQ(pop(&f), -EFAULT);
	struct vt_as_fault fault = vt_vq_dev_fault(f.vq);
	CHECK(fault.addr >= f.m.desc_addr && fault.addr < f.m.desc_addr + VQ_MOCK_PAGE);
	CHECK(!vt_vq_dev_is_broken(f.vq));

	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, f.m.desc_addr, VQ_MOCK_PAGE, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, b.id);
	teardown(&f);
}

VT_TEST(ring_moved_in_the_iotlb_is_followed_to_its_new_host_pages)
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);

	/* b is published in a copy of the descriptor ring on other host pages... */
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, 0, &b), 0);
	uint16_t unpublished = vq_mock_get_packed_desc(&f.m, b.head).flags;
	vq_mock_publish(&f.m, &b);
	uint64_t copy = vq_mock_alloc(&f.m, VQ_MOCK_PAGE, VQ_MOCK_PAGE);
	REQUIRE(copy != 0);
	memcpy(vq_mock_ptr(&f.m, copy), vq_mock_ptr(&f.m, f.m.desc_addr), VQ_MOCK_PAGE);
	/* ...while the old pages still say only a is there. */
	struct vq_mock_desc d = vq_mock_get_packed_desc(&f.m, b.head);
	d.flags = unpublished;
	vq_mock_set_packed_desc(&f.m, b.head, d);
	REQUIRE_EQ(vt_iotlb_update(f.m.iotlb, f.m.desc_addr, VQ_MOCK_PAGE, vq_mock_ptr(&f.m, copy),
				   VT_IOTLB_PERM_RW),
		   0);

	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, b.id);
	teardown(&f);
}

VT_TEST(push_while_the_ring_is_out_of_the_iotlb_waits_for_a_flush_after_remap)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, f.m.desc_addr, VQ_MOCK_PAGE), 0);
	vq_mock_snapshot(&f.m);
	/* Push only records the used descriptor: ring memory is written at flush time. */
	CHECK_EQ(vt_vq_dev_push(f.vq, &f.chain, 5), 0);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 0);
	CHECK(!vt_vq_dev_flush(f.vq));
	CHECK(vt_vq_dev_fault(f.vq).addr == f.m.desc_addr);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(vq_mock_first_change(&f.m, false), -1);

	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, f.m.desc_addr, VQ_MOCK_PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_USED(&f, 0, c.id, 5, used_flags(true, true));
	teardown(&f);
}

VT_TEST(flush_after_the_ring_left_the_iotlb_does_not_write_it)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 5), 0);
	/* Between push and flush the ring's translation goes away: its host pages are no longer
	 * the device's to write. */
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, f.m.desc_addr, VQ_MOCK_PAGE), 0);
	vq_mock_snapshot(&f.m);
	CHECK(!vt_vq_dev_flush(f.vq));
	CHECK_EQ(vq_mock_first_change(&f.m, false), -1);
	CHECK(!vt_vq_dev_is_broken(f.vq));

	/* Mapped again, the descriptor pushed before is published. */
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, f.m.desc_addr, VQ_MOCK_PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_USED(&f, 0, c.id, 5, used_flags(true, true));
	teardown(&f);
}

/* ---------------------------------------------------------------- returning buffers */

VT_TEST(push_of_a_chain_never_popped_breaks_with_not_in_flight)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	vq_mock_snapshot(&f.m);
	struct vt_vq_chain forged = { .id = 5, .ndesc = 1 };
	CHECK_BROKEN(&f, vt_vq_dev_push(f.vq, &forged, 0), VT_VQ_ERR_NOT_IN_FLIGHT);
	teardown(&f);
}

VT_TEST(push_of_a_chain_twice_breaks_with_not_in_flight)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	struct vt_vq_chain popped = f.chain;
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped, 0), 0);
	vt_vq_dev_flush(f.vq);
	vq_mock_snapshot(&f.m);
	CHECK_BROKEN(&f, vt_vq_dev_push(f.vq, &popped, 0), VT_VQ_ERR_NOT_IN_FLIGHT);
	teardown(&f);
}

VT_TEST(push_of_an_id_out_of_range_breaks_with_not_in_flight)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, 0), 0);
	vq_mock_snapshot(&f.m);
	struct vt_vq_chain forged = { .id = QSIZE, .ndesc = 1 };
	CHECK_BROKEN(&f, vt_vq_dev_push(f.vq, &forged, 0), VT_VQ_ERR_NOT_IN_FLIGHT);
	teardown(&f);
}

/* ---------------------------------------------------------------- friendly behaviour */

VT_TEST(new_rejects_bad_sizes_and_resume_points)
{
	struct fixture f;
	struct vt_vq_dev *vq = NULL;

	REQUIRE_EQ(setup_mock(&f, VQ_MOCK_MEMTABLE, 0), 0);
	static const unsigned int bad[] = { 0, 32769, 65536 };
	for (unsigned int i = 0; i < 3; i++) {
		f.params.num = bad[i];
		CHECK_EQ(vt_vq_dev_new(&f.params, &vq), -EINVAL);
	}
	/* A resume slot must be in the ring, in either lap. */
	f.params.num = QSIZE;
	f.params.next_avail = POS(QSIZE, true);
	CHECK_EQ(vt_vq_dev_new(&f.params, &vq), -EINVAL);
	f.params.next_avail = POS(QSIZE + 1, false);
	CHECK_EQ(vt_vq_dev_new(&f.params, &vq), -EINVAL);
	vq_mock_destroy(&f.m);
}

VT_TEST(new_accepts_any_size_up_to_32768)
{
	struct fixture f;
	struct vt_vq_dev *vq = NULL;

	REQUIRE_EQ(setup_mock(&f, VQ_MOCK_MEMTABLE, 0), 0);
	static const unsigned int good[] = { 1, 3, 24, 100, 1000, 32768 };
	for (unsigned int i = 0; i < 6; i++) {
		f.params.num = good[i];
		vq = NULL;
		CHECK_EQ(vt_vq_dev_new(&f.params, &vq), 0);
		vt_vq_dev_free(vq);
	}
	vq_mock_destroy(&f.m);
}

VT_TEST(new_ring_starts_at_slot_0_in_wrap_1)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_mock(&f, VQ_MOCK_MEMTABLE, 0), 0);
	CHECK_EQ(f.params.next_avail, VT_VQ_PACKED_START);
	REQUIRE_EQ(start(&f), 0);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), VT_VQ_PACKED_START);
	/* A zeroed ring holds nothing available in wrap 1 (AVAIL clear)... */
	CHECK_EQ(pop(&f), -EAGAIN);
	/* ...nor does a descriptor made available in wrap 0 (AVAIL clear, USED set). */
	vq_mock_set_packed_desc(
	    &f.m, 0,
	    (struct vq_mock_desc){ f.m.rings_end, 8, vq_mock_packed_avail_bits(false), 0 });
	CHECK_EQ(pop(&f), -EAGAIN);
	/* Nor a used one of wrap 1 (both set). */
	vq_mock_set_packed_desc(
	    &f.m, 0, (struct vq_mock_desc){ f.m.rings_end, 8, vq_mock_packed_used_bits(true), 0 });
	CHECK_EQ(pop(&f), -EAGAIN);
	CHECK_EQ(f.seen.calls, 0);

	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	CHECK_EQ(c.head, 0);
	CHECK(c.wrap);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, c.id);
	CHECK_EQ(f.chain.ndesc, 3);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), POS(3, true));
	teardown(&f);
}

VT_TEST(mixed_chain_gives_readable_then_writable_iovecs_over_the_drivers_bytes)
{
	static const struct vq_mock_seg segs[] = {
		{ 100, false }, { 1, false }, { 3000, false }, { 500, true }, { 7, true }
	};
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, 5, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, c.id);
	CHECK_EQ(f.chain.ndesc, 5);
	CHECK_EQ(f.chain.nreadable, 3);
	CHECK_EQ(f.chain.nwritable, 2);
	CHECK_EQ(f.chain.readable_bytes, 3101);
	CHECK_EQ(f.chain.writable_bytes, 507);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 1);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), POS(5, true));
	teardown(&f);
}

VT_TEST(indirect_chain_gives_the_tables_segments)
{
	static const struct vq_mock_seg segs[] = {
		{ 10, false }, { 20, false }, { 30, true }, { 40, true }
	};
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, 4, VQ_MOCK_INDIRECT, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.ndesc, 1);
	CHECK_EQ(f.chain.nreadable, 2);
	CHECK_EQ(f.chain.nwritable, 2);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), POS(1, true));
	teardown(&f);
}

VT_TEST(zero_length_descriptors_give_no_iovec)
{
	static const struct vq_mock_seg segs[] = {
		{ 0, false }, { 8, false }, { 0, true }, { 8, true }
	};
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, 4, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.ndesc, 4);
	CHECK_EQ(f.chain.nreadable, 1);
	CHECK_EQ(f.chain.nwritable, 1);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, NULL, 0));
	teardown(&f);
}

VT_TEST(device_writes_land_in_the_drivers_buffers)
{
	static const struct vq_mock_seg segs[] = { { 4, false }, { 5, true }, { 6, true } };
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(f.chain.nwritable, 2);
	memcpy(f.iov[1].iov_base, "hello", 5);
	memcpy(f.iov[2].iov_base, "world!", 6);
	CHECK(memcmp(vq_mock_ptr(&f.m, c.addr[1]), "hello", 5) == 0);
	CHECK(memcmp(vq_mock_ptr(&f.m, c.addr[2]), "world!", 6) == 0);
	teardown(&f);
}

VT_TEST(push_and_flush_write_one_used_descriptor_at_the_chains_first_slot)
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &a), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &b), 0);
	REQUIRE_EQ(pop(&f), 0);
	vq_mock_snapshot(&f.m);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 99), 0);
	/* Not visible before the flush. */
	CHECK_EQ(vq_mock_first_change(&f.m, false), -1);
	CHECK(vt_vq_dev_flush(f.vq));
	/* The buffer id, the bytes written, AVAIL = USED = wrap (2.8.1), WRITE as bytes were
	 * written (2.8.3). */
	CHECK_USED(&f, 0, a.id, 99, used_flags(true, true));
	/* The rest of the chain's slots are skipped, not written (2.8.6). */
	CHECK(memcmp(vq_mock_ptr(&f.m, f.m.desc_addr + 16),
		     f.m.snapshot + (f.m.desc_addr - f.m.gpa) + 16, 2 * 16) == 0);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 0);
	/* Nothing new: nothing to publish, nobody to notify. */
	CHECK(!vt_vq_dev_flush(f.vq));

	/* No bytes written, no WRITE flag; the next used descriptor comes after a's slots. */
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 0), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_USED(&f, 3, b.id, 0, used_flags(true, false));
	teardown(&f);
}

VT_TEST(buffers_returned_out_of_order_are_used_in_ring_order_each_skipping_its_chain)
{
	static const struct vq_mock_seg segs[] = { { 8, false }, { 8, true }, { 8, true } };
	struct fixture f;
	struct vq_mock_chain c[3], next;
	struct vt_vq_chain popped[3];

	REQUIRE_EQ(setup(&f, 0), 0);
	/* Chains of 1, 2 and 3 descriptors at slots 0, 1-2 and 3-5. */
	for (unsigned int i = 0; i < 3; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, segs + 2 - i, i + 1, 0, &c[i]), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[2], 2), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[0], 0), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[1], 1), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	/* Written from the used position on, each skipping the slots its own chain took. */
	CHECK_USED(&f, 0, c[2].id, 2, used_flags(true, true));
	CHECK_USED(&f, 3, c[0].id, 0, used_flags(true, false));
	CHECK_USED(&f, 4, c[1].id, 1, used_flags(true, true));
	/* The slots are the driver's again; the next chain follows at slot 6. */
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &next), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, next.id);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 3), 0);
	vt_vq_dev_flush(f.vq);
	CHECK_USED(&f, 6, next.id, 3, used_flags(true, true));
	CHECK(!vt_vq_dev_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(chains_across_the_ring_end_flip_the_wrap_counter)
{
	static const struct vq_mock_seg segs[] = { { 16, false }, { 16, true }, { 16, true } };
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";

	REQUIRE_EQ(setup(&f, 0), 0);
	/* Chains of three: the sixth takes slots 15, 0 and 1, the seventh starts in wrap 0. */
	uint16_t slot = 0;
	bool wrap = true;
	for (unsigned int i = 0; i < 8; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, segs, 3, 0, &c), 0);
		CHECK_EQ(c.head, slot);
		REQUIRE_EQ(pop(&f), 0);
		CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
		if (why[0])
			fprintf(stderr, "  chain %u: %s\n", i, why);
		why[0] = 0;
		CHECK_EQ(f.chain.ndesc, 3);
		REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, i), 0);
		vt_vq_dev_flush(f.vq);
		/* Used where the chain started, in the lap it started in. */
		CHECK_USED(&f, slot, c.id, i, used_flags(wrap, i != 0));
		slot = (uint16_t)(slot + 3);
		if (slot >= QSIZE) {
			slot = (uint16_t)(slot - QSIZE);
			wrap = !wrap;
		}
		CHECK_EQ(vt_vq_dev_next_avail(f.vq), POS(slot, wrap));
	}
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), POS(8, false));
	CHECK(!vt_vq_dev_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(too_small_iov_array_is_enobufs_and_consumes_nothing)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	CHECK_EQ(vt_vq_dev_pop(f.vq, &f.chain, f.iov, 2), -ENOBUFS);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 0);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), VT_VQ_PACKED_START);
	CHECK_EQ(vt_vq_dev_pop(f.vq, &f.chain, f.iov, 3), 0);
	CHECK_EQ(f.chain.id, c.id);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, NULL, 0));
	teardown(&f);
}

VT_TEST(pop_resumes_at_params_next_avail_slot_and_wrap)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_mock(&f, VQ_MOCK_MEMTABLE, 0), 0);
	/* As after SET_VRING_BASE: slot 5 in wrap 0, the ring around once already. */
	f.params.next_avail = POS(5, false);
	REQUIRE_EQ(start(&f), 0);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), POS(5, false));
	vq_mock_packed_resume(&f.m, 5, false);
	/* Slot 4 was taken long ago: must not be read, hostile as it looks. */
	vq_mock_set_packed_desc(
	    &f.m, 4, (struct vq_mock_desc){ 0, 8, vq_mock_packed_avail_bits(false), 0xffff });
	CHECK_EQ(pop(&f), -EAGAIN);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	CHECK_EQ(c.head, 5);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, c.id);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), POS(8, false));
	/* The used side resumes there too, in the same lap: AVAIL and USED both clear. */
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 3), 0);
	vt_vq_dev_flush(f.vq);
	CHECK_USED(&f, 5, c.id, 3, used_flags(false, true));
	CHECK(!vt_vq_dev_is_broken(f.vq));
	teardown(&f);
}

/* Drives a ring of @num through @laps laps of chains of 1 to 7 descriptors. */
static void check_laps(unsigned int num, unsigned int laps, int line)
{
	struct vq_mock_seg segs[7];
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";

	if (setup_mock_num(&f, VQ_MOCK_MEMTABLE, 0, num) < 0 || start(&f) < 0) {
		VT_FAIL_AT("line %d: setup failed", line);
		return;
	}
	uint16_t slot = 0;
	bool wrap = true;
	unsigned int lap = 0;
	for (unsigned int i = 0; lap < laps && !vt_test_failed; i++) {
		unsigned int n = 1 + i % 7;
		for (unsigned int k = 0; k < n; k++)
			segs[k] = (struct vq_mock_seg){ (uint32_t)(1 + (i + k) % 13), k >= n / 2 };
		if (vq_mock_add(&f.m, segs, n, 0, &c) < 0 || pop(&f) < 0) {
			VT_FAIL_AT("line %d: chain %u not taken: %s", line, i, f.seen.last);
			break;
		}
		if (c.head != slot || c.wrap != wrap)
			VT_FAIL_AT("line %d: chain %u at %u/%d, expected %u/%d", line, i, c.head,
				   c.wrap, slot, wrap);
		if (!vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)))
			VT_FAIL_AT("line %d: chain %u: %s", line, i, why);
		vt_vq_dev_push(f.vq, &f.chain, f.chain.writable_bytes);
		vt_vq_dev_flush(f.vq);
		check_used(&f, slot, c.id, c.writable_bytes, used_flags(wrap, c.writable_bytes),
			   line);
		slot = (uint16_t)(slot + n);
		if (slot >= num) {
			slot = (uint16_t)(slot - num);
			wrap = !wrap;
			lap++;
		}
		if (vt_vq_dev_next_avail(f.vq) != POS(slot, wrap))
			VT_FAIL_AT("line %d: next_avail 0x%04x after chain %u, expected 0x%04x",
				   line, vt_vq_dev_next_avail(f.vq), i, POS(slot, wrap));
	}
	if (vt_vq_dev_is_broken(f.vq))
		VT_FAIL_AT("line %d: broken: %s", line, f.seen.last);
	teardown(&f);
}

VT_TEST(queue_size_of_100_works_lap_after_lap)
{
	check_laps(100, 5, __LINE__);
}

VT_TEST(queue_size_of_1_works_lap_after_lap)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_mock_num(&f, VQ_MOCK_MEMTABLE, 0, 1), 0);
	REQUIRE_EQ(start(&f), 0);
	/* Every chain is the whole ring and flips the wrap counter. */
	for (unsigned int i = 0; i < 4; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, &one_writable, 1, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		CHECK_EQ(vt_vq_dev_next_avail(f.vq), POS(0, i % 2 == 1));
		REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 1), 0);
		vt_vq_dev_flush(f.vq);
		CHECK_USED(&f, 0, 0, 1, used_flags(i % 2 == 0, true));
	}
	teardown(&f);
}

/* ---------------------------------------------------------------- publication order */

#if defined(__x86_64__) && defined(__linux__)
/*
 * Watches one 16-bit field through every store to its page, in program order: the page is
 * read-only, each store faults, the handler opens the page and single-steps the store (the trap
 * flag), and the trap samples the field and closes the page again. x86-64 only; elsewhere the
 * test checks the result, not the order.
 */
#define TRACE_MAX   64
#define EFLAGS_TRAP 0x100
static struct {
	uint8_t *page;
	const volatile uint16_t *watch;
	uint16_t sample[TRACE_MAX]; /* the field after each store */
	unsigned int count;
	struct sigaction old_segv, old_trap;
} trace;

static void trace_segv(int sig, siginfo_t *si, void *context)
{
	ucontext_t *uc = context;
	uint8_t *addr = si->si_addr;

	if (addr < trace.page || addr >= trace.page + VQ_MOCK_PAGE) {
		sigaction(sig, &trace.old_segv, NULL); /* not ours: fault again, for real */
		return;
	}
	mprotect(trace.page, VQ_MOCK_PAGE, PROT_READ | PROT_WRITE);
	uc->uc_mcontext.gregs[REG_EFL] |= EFLAGS_TRAP;
}

static void trace_step(int sig, siginfo_t *si, void *context)
{
	ucontext_t *uc = context;

	(void)sig, (void)si;
	uc->uc_mcontext.gregs[REG_EFL] &= ~(greg_t)EFLAGS_TRAP;
	if (trace.count < TRACE_MAX)
		trace.sample[trace.count] = *trace.watch;
	trace.count++;
	mprotect(trace.page, VQ_MOCK_PAGE, PROT_READ);
}

static void trace_begin(void *page, const void *watch)
{
	struct sigaction segv = { .sa_sigaction = trace_segv, .sa_flags = SA_SIGINFO };
	struct sigaction step = { .sa_sigaction = trace_step, .sa_flags = SA_SIGINFO };

	trace.page = page;
	trace.watch = watch;
	trace.count = 0;
	sigaction(SIGSEGV, &segv, &trace.old_segv);
	sigaction(SIGTRAP, &step, &trace.old_trap);
	mprotect(trace.page, VQ_MOCK_PAGE, PROT_READ);
}

static unsigned int trace_end(void)
{
	mprotect(trace.page, VQ_MOCK_PAGE, PROT_READ | PROT_WRITE);
	sigaction(SIGSEGV, &trace.old_segv, NULL);
	sigaction(SIGTRAP, &trace.old_trap, NULL);
	return trace.count;
}

/* The tracer works here (a sandbox may not deliver single-step traps): two stores to 16 scratch
 * bytes at @off in @page, two samples. */
static bool trace_works(uint8_t *page, size_t off)
{
	uint8_t *scratch = page + off;
	uint8_t saved[16];

	memcpy(saved, scratch, sizeof(saved));
	uint16_t was = (uint16_t)(saved[2] | saved[3] << 8), now = (uint16_t)(was ^ 0xffff);
	trace_begin(page, scratch + 2);
	__atomic_store_n((uint64_t *)(scratch + 8), 1, __ATOMIC_RELAXED);
	__atomic_store_n((uint16_t *)(scratch + 2), now, __ATOMIC_RELEASE);
	unsigned int n = trace_end();
	bool works = n == 2 && trace.sample[0] == was && trace.sample[1] == now;
	memcpy(scratch, saved, sizeof(saved));
	return works;
}
#endif

VT_TEST(flush_publishes_the_first_used_descriptors_flags_last)
{
	static const struct vq_mock_seg two[] = { { 8, false }, { 8, true } };
	struct fixture f;
	struct vq_mock_chain c[6];
	struct vt_vq_chain popped[6];

	REQUIRE_EQ(setup(&f, 0), 0);
	for (unsigned int i = 0; i < 6; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, two, 2, 0, &c[i]), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	/* Two batches: chains 0-2 (used at slots 0, 2, 4), then 3-5 (slots 6, 8, 10). */
	for (unsigned int batch = 0; batch < 2; batch++) {
		unsigned int first = 3 * batch;
		vq_mock_snapshot(&f.m);
		for (unsigned int i = first; i < first + 3; i++)
			REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[i], 10 + i), 0);
		/* Pushes only record. */
		CHECK_EQ(vq_mock_first_change(&f.m, false), -1);
#if defined(__x86_64__) && defined(__linux__)
		uint8_t *ring = vq_mock_ptr(&f.m, f.m.desc_addr);
		uint8_t *first_flags = ring + 16 * (2 * first) + 14;
		uint16_t before = vq_mock_get_packed_desc(&f.m, (uint16_t)(2 * first)).flags;
		if (!trace_works(ring, 16 * (QSIZE - 1))) {
			fprintf(stderr, "  (single-step traps unavailable: order not traced)\n");
			CHECK(vt_vq_dev_flush(f.vq));
		} else {
			trace_begin(ring, first_flags);
			bool notify = vt_vq_dev_flush(f.vq);
			unsigned int n = trace_end();
			CHECK(notify);
			/* Every other used descriptor of the batch (and the first one's id and len)
			 * is stored while the first still holds the driver's flags; the last store
			 * hands them all over (2.8.9). */
			REQUIRE(n >= 2 && n <= TRACE_MAX);
			for (unsigned int k = 0; k + 1 < n; k++)
				if (trace.sample[k] != before)
					VT_FAIL_AT("batch %u: store %u of %u changed the first "
						   "flags to 0x%04x",
						   batch, k + 1, n, trace.sample[k]);
			CHECK_EQ(trace.sample[n - 1], used_flags(true, true));
		}
#else
		fprintf(stderr, "  (not x86-64: order not traced)\n");
		CHECK(vt_vq_dev_flush(f.vq));
#endif
		for (unsigned int i = first; i < first + 3; i++)
			CHECK_USED(&f, (uint16_t)(2 * i), c[i].id, 10 + i, used_flags(true, true));
	}
	teardown(&f);
}

/* ---------------------------------------------------------------- notifications */

VT_TEST(flush_notifies_unless_the_driver_area_says_disable)
{
	struct fixture f;
	struct vq_mock_chain c;
	struct vt_vq_chain popped[3];

	REQUIRE_EQ(setup(&f, 0), 0);
	for (unsigned int i = 0; i < 3; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, &one_writable, 1, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	/* A zeroed driver area is ENABLE (2.8.14). */
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[0], 1), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	vq_mock_set_driver_event(&f.m, 0, RING_EVENT_FLAGS_DISABLE);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[1], 1), 0);
	CHECK(!vt_vq_dev_flush(f.vq));
	CHECK_USED(&f, 1, popped[1].id, 1, used_flags(true, true)); /* published all the same */
	vq_mock_set_driver_event(&f.m, 0, RING_EVENT_FLAGS_ENABLE);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[2], 1), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	teardown(&f);
}

VT_TEST(desc_mode_without_event_idx_notifies_at_every_flush)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	/* DESC is only for EVENT_IDX (2.8.14): without it the request names nothing. */
	vq_mock_set_driver_event(&f.m, POS(10, true), RING_EVENT_FLAGS_DESC);
	for (unsigned int i = 0; i < 3; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, &one_writable, 1, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 1), 0);
		CHECK(vt_vq_dev_flush(f.vq));
	}
	teardown(&f);
}

VT_TEST(event_idx_flush_notifies_exactly_when_the_event_descriptor_is_used)
{
	struct fixture f;
	struct vq_mock_chain c;
	struct vt_vq_chain popped[6];

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	for (int i = 0; i < 6; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, &one_writable, 1, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	/* "Notify me when the descriptor at slot 2, wrap 1, is used" (2.8.10). */
	vq_mock_set_driver_event(&f.m, POS(2, true), RING_EVENT_FLAGS_DESC);
	static const bool expect[3] = { false, false, true };
	for (int i = 0; i < 3; i++) {
		REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[i], 0), 0);
		CHECK_EQ(vt_vq_dev_flush(f.vq), expect[i]);
	}
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[3], 0), 0);
	CHECK(!vt_vq_dev_flush(f.vq)); /* already past: the driver has not asked again */
	/* Two used descriptors in one flush that pass the event: one notification. */
	vq_mock_set_driver_event(&f.m, POS(4, true), RING_EVENT_FLAGS_DESC);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[4], 0), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[5], 0), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_USED(&f, 5, popped[5].id, 0, used_flags(true, false));
	teardown(&f);
}

VT_TEST(event_idx_flush_across_the_ring_end_notifies_for_an_event_before_it)
{
	struct fixture f;
	struct vq_mock_chain c;
	struct vt_vq_chain popped[4];

	REQUIRE_EQ(setup_mock(&f, VQ_MOCK_MEMTABLE, F(EVENT_IDX)), 0);
	f.params.next_avail = POS(QSIZE - 2, true);
	REQUIRE_EQ(start(&f), 0);
	vq_mock_packed_resume(&f.m, QSIZE - 2, true);
	/* Slots 14 and 15 in wrap 1, then 0 and 1 in wrap 0. */
	for (int i = 0; i < 4; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, &one_writable, 1, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	/* One flush of slots 14, 15 and 0: it passes slot 15 of wrap 1 on its way. */
	vq_mock_set_driver_event(&f.m, POS(QSIZE - 1, true), RING_EVENT_FLAGS_DESC);
	for (int i = 0; i < 3; i++)
		REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[i], 1), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_USED(&f, QSIZE - 2, popped[0].id, 1, used_flags(true, true));
	CHECK_USED(&f, QSIZE - 1, popped[1].id, 1, used_flags(true, true));
	CHECK_USED(&f, 0, popped[2].id, 1, used_flags(false, true));
	/* The next descriptor, slot 1 of wrap 0, named as such. */
	vq_mock_set_driver_event(&f.m, POS(1, false), RING_EVENT_FLAGS_DESC);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[3], 1), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	teardown(&f);
}

VT_TEST(event_idx_event_for_the_same_slot_of_the_other_lap_does_not_notify)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_mock(&f, VQ_MOCK_MEMTABLE, F(EVENT_IDX)), 0);
	f.params.next_avail = POS(2, false);
	REQUIRE_EQ(start(&f), 0);
	vq_mock_packed_resume(&f.m, 2, false);
	/* In wrap 0 the driver still names slot 4 of wrap 1: a lap ago, long passed (2.8.14). */
	vq_mock_set_driver_event(&f.m, POS(4, true), RING_EVENT_FLAGS_DESC);
	for (int i = 0; i < 4; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, &one_writable, 1, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 1), 0);
		CHECK(!vt_vq_dev_flush(f.vq)); /* slots 2 to 5, 4 among them */
	}
	/* Named with this lap's wrap counter, the same slot is the event. */
	vq_mock_set_driver_event(&f.m, POS(7, false), RING_EVENT_FLAGS_DESC);
	static const bool expect[3] = { false, true, false };
	for (int i = 0; i < 3; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, &one_writable, 1, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 1), 0);
		CHECK_EQ(vt_vq_dev_flush(f.vq), expect[i]);
	}
	teardown(&f);
}

VT_TEST(event_idx_enable_and_disable_modes_still_apply)
{
	struct fixture f;
	struct vq_mock_chain c;
	struct vt_vq_chain popped[2];

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	for (int i = 0; i < 2; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, &one_writable, 1, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	vq_mock_set_driver_event(&f.m, POS(0, true), RING_EVENT_FLAGS_DISABLE);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[0], 0), 0);
	CHECK(!vt_vq_dev_flush(f.vq)); /* the descriptor is the event's, but DISABLE rules */
	vq_mock_set_driver_event(&f.m, POS(9, true), RING_EVENT_FLAGS_ENABLE);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[1], 0), 0);
	CHECK(vt_vq_dev_flush(f.vq)); /* ENABLE: the offset does not matter */
	teardown(&f);
}

VT_TEST(disable_notify_writes_disable_and_enable_writes_enable_and_rechecks)
{
	struct fixture f;
	struct vq_mock_chain c;
	uint16_t desc, flags;

	REQUIRE_EQ(setup(&f, 0), 0);
	vt_vq_dev_disable_notify(f.vq);
	vq_mock_get_device_event(&f.m, &desc, &flags);
	CHECK_EQ(flags, RING_EVENT_FLAGS_DISABLE);
	CHECK(!vt_vq_dev_enable_notify(f.vq));
	vq_mock_get_device_event(&f.m, &desc, &flags);
	CHECK_EQ(flags, RING_EVENT_FLAGS_ENABLE);
	/* A buffer arrived while notifications were off: the recheck reports it. */
	vt_vq_dev_disable_notify(f.vq);
	REQUIRE_EQ(vq_mock_add(&f.m, &one_readable, 1, 0, &c), 0);
	CHECK(vt_vq_dev_enable_notify(f.vq));
	vq_mock_get_device_event(&f.m, &desc, &flags);
	CHECK_EQ(flags, RING_EVENT_FLAGS_ENABLE);
	REQUIRE_EQ(pop(&f), 0);
	CHECK(!vt_vq_dev_enable_notify(f.vq));
	teardown(&f);
}

VT_TEST(event_idx_enable_notify_asks_for_the_next_slot_and_rechecks)
{
	struct fixture f;
	struct vq_mock_chain c;
	uint16_t desc, flags;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, &one_readable, 1, 0, &c), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(pop(&f), 0);
	vt_vq_dev_disable_notify(f.vq);
	vq_mock_get_device_event(&f.m, &desc, &flags);
	CHECK_EQ(flags, RING_EVENT_FLAGS_DISABLE);
	/* Nothing new: "notify me when you make slot 4 of wrap 1 available". */
	CHECK(!vt_vq_dev_enable_notify(f.vq));
	vq_mock_get_device_event(&f.m, &desc, &flags);
	CHECK_EQ(flags, RING_EVENT_FLAGS_DESC);
	CHECK_EQ(desc, POS(4, true));
	/* A buffer arrived while notifications were off: the recheck reports it. */
	vt_vq_dev_disable_notify(f.vq);
	REQUIRE_EQ(vq_mock_add(&f.m, &one_readable, 1, 0, &c), 0);
	CHECK(vt_vq_dev_enable_notify(f.vq));
	vq_mock_get_device_event(&f.m, &desc, &flags);
	CHECK_EQ(desc, POS(4, true));
	REQUIRE_EQ(pop(&f), 0);
	CHECK(!vt_vq_dev_enable_notify(f.vq));
	vq_mock_get_device_event(&f.m, &desc, &flags);
	CHECK_EQ(desc, POS(5, true));
	CHECK_EQ(flags, RING_EVENT_FLAGS_DESC);
	teardown(&f);
}

/* ---------------------------------------------------------------- in order */

VT_TEST(in_order_batch_writes_one_used_descriptor_for_the_last_buffer)
{
	static const struct vq_mock_seg two[] = { { 8, false }, { 8, true } };
	struct fixture f;
	struct vq_mock_chain c[4];
	struct vt_vq_chain popped[4];

	REQUIRE_EQ(setup(&f, F(IN_ORDER)), 0);
	for (int i = 0; i < 4; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, two, 2, 0, &c[i]), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	vq_mock_snapshot(&f.m);
	/* Buffers 0..2 in one used descriptor: at the batch's first slot, with the last one's id
	 * (2.8.8). */
	REQUIRE_EQ(vt_vq_dev_push_in_order_batch(f.vq, &popped[2], 42), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_USED(&f, 0, c[2].id, 42, used_flags(true, true));
	/* The other slots of the batch are skipped, not written. */
	CHECK(memcmp(vq_mock_ptr(&f.m, f.m.desc_addr + 16),
		     f.m.snapshot + (f.m.desc_addr - f.m.gpa) + 16, 5 * 16) == 0);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 1);

	/* The next used descriptor goes to the slot after the whole batch: 3 chains x 2 slots. */
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[3], 7), 0);
	vt_vq_dev_flush(f.vq);
	CHECK_USED(&f, 6, c[3].id, 7, used_flags(true, true));
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 0);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(in_order_batch_across_the_ring_end_flips_the_used_wrap)
{
	static const struct vq_mock_seg three[] = { { 8, false }, { 8, true }, { 8, true } };
	struct fixture f;
	struct vq_mock_chain c;
	struct vt_vq_chain popped[7];

	REQUIRE_EQ(setup(&f, F(IN_ORDER)), 0);
	/* Seven chains of three: slots 0..20, i.e. through 15 and on to 4 in wrap 0... */
	for (int i = 0; i < 4; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, three, 3, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	REQUIRE_EQ(vt_vq_dev_push_in_order_batch(f.vq, &popped[3], 1), 0);
	vt_vq_dev_flush(f.vq);
	/* ...the first four returned (slots 0..11), then three more from slot 12. */
	for (int i = 4; i < 7; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, three, 3, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	REQUIRE_EQ(vt_vq_dev_push_in_order_batch(f.vq, &popped[6], 9), 0);
	vt_vq_dev_flush(f.vq);
	CHECK_USED(&f, 12, popped[6].id, 9, used_flags(true, true));
	/* 12 + 9 = 21: the next used descriptor is slot 5 of wrap 0. */
	REQUIRE_EQ(vq_mock_add(&f.m, three, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 2), 0);
	vt_vq_dev_flush(f.vq);
	CHECK_USED(&f, 5, c.id, 2, used_flags(false, true));
	CHECK(!vt_vq_dev_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(in_order_batch_without_in_order_is_einval)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(vt_vq_dev_push_in_order_batch(f.vq, &f.chain, 0), -EINVAL);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 1);
	teardown(&f);
}

VT_TEST(in_order_batch_of_a_chain_not_in_flight_breaks_with_not_in_flight)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, F(IN_ORDER)), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	vq_mock_snapshot(&f.m);
	struct vt_vq_chain forged = { .id = (uint16_t)(c.id + 3), .ndesc = 1 };
	CHECK_BROKEN(&f, vt_vq_dev_push_in_order_batch(f.vq, &forged, 0), VT_VQ_ERR_NOT_IN_FLIGHT);
	teardown(&f);
}
