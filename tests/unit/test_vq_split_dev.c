/* SPDX-License-Identifier: MIT */
/*
 * The device half of the split virtqueue against a mock driver (vq_mock.h) that writes any ring
 * state: every rule of virtio 1.3 section 2.7 the device must enforce, as one test per violation
 * (the queue breaks with the named error, is logged once, stays broken, and nothing outside the
 * address space changes), and the friendly behaviour the same helpers build.
 */
#include <errno.h>
#include <sys/mman.h>

#include <virtue/spec/virtio_config.h>
#include <virtue/virtqueue.h>

#include "harness.h"
#include "vq_mock.h"

#define QSIZE  16
#define IOV_N  64
#define F(bit) VT_BIT(VIRTIO_F_##bit)

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

/* The mock ring and the parameters a device would be given; the queue comes with start(). */
static int setup_mock(struct fixture *f, enum vq_mock_space space, uint64_t features)
{
	memset(f, 0, sizeof(*f));
	f->log =
	    (struct vt_log){ .fn = capture_log, .opaque = &f->seen, .max_level = VT_LOG_DEBUG };
	struct vq_mock_params mp = { .num = QSIZE, .space = space };
	int ret = vq_mock_init(&f->m, &mp);
	if (ret < 0)
		return ret;
	vq_mock_dev_params(&f->m, features, &f->params);
	f->params.log = &f->log;
	return 0;
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

/*
 * A violation: @ret is -EPROTO, the queue is broken with @error, every later call finds the latch,
 * the log heard of it exactly once, nothing was consumed or returned, and nothing outside the
 * address space (canaries) or in the driver's areas changed.
 */
#define CHECK_BROKEN(f, ret, error) check_broken(f, ret, error, __LINE__)

static void check_broken(struct fixture *f, int ret, enum vt_vq_error error, int line)
{
	unsigned int in_flight = vt_vq_dev_in_flight(f->vq);
	uint16_t next_avail = vt_vq_dev_next_avail(f->vq);
	uint16_t used_idx = vq_mock_used_idx(&f->m);

	if (ret != -EPROTO)
		VT_FAIL_AT("line %d: pop returned %d, expected -EPROTO", line, ret);
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
	if (vt_vq_dev_error(f->vq) != error)
		VT_FAIL_AT("line %d: the error changed after breaking", line);

	if (f->seen.calls != 1 || f->seen.errors != 1)
		VT_FAIL_AT("line %d: log called %u times (%u errors), expected once", line,
			   f->seen.calls, f->seen.errors);
	if (vt_vq_dev_in_flight(f->vq) != in_flight || vt_vq_dev_next_avail(f->vq) != next_avail)
		VT_FAIL_AT("line %d: a broken queue consumed a buffer", line);
	if (vq_mock_used_idx(&f->m) != used_idx)
		VT_FAIL_AT("line %d: used idx moved", line);
	if (!vq_mock_canaries_intact(&f->m))
		VT_FAIL_AT("line %d: memory outside the address space was written", line);
	long changed = vq_mock_first_change(&f->m, true);
	if (changed >= 0)
		VT_FAIL_AT("line %d: driver memory at offset %ld changed", line, changed);
}

static const struct vq_mock_seg three_mixed[] = { { 64, false }, { 32, false }, { 128, true } };

/* ---------------------------------------------------------------- the available ring */

VT_TEST(head_index_out_of_range_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	vq_mock_set_avail_ring(&f.m, 0, QSIZE);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_HEAD_RANGE);
	teardown(&f);
}

VT_TEST(avail_idx_moved_by_more_than_the_queue_size_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	vq_mock_set_avail_idx(&f.m, QSIZE + 1);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_AVAIL_IDX);
	teardown(&f);
}

VT_TEST(avail_idx_moved_backwards_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	/* One behind what was taken is 65535 ahead in 16-bit arithmetic. */
	vq_mock_set_avail_idx(&f.m, 0);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_AVAIL_IDX);
	teardown(&f);
}

VT_TEST(avail_idx_may_move_by_exactly_the_queue_size)
{
	static const struct vq_mock_seg one = { 8, false };
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	for (int i = 0; i < QSIZE; i++)
		REQUIRE_EQ(vq_mock_add(&f.m, &one, 1, 0, &c), 0);
	for (int i = 0; i < QSIZE; i++)
		CHECK_EQ(pop(&f), 0);
	CHECK_EQ(pop(&f), -EAGAIN);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), QSIZE);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(head_made_available_again_while_in_flight_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	/* The same head again, before the device returned it. */
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_BUFFER_ID_IN_FLIGHT);
	teardown(&f);
}

/*
 * Chains of one descriptor, as nearly every network buffer is, take a shorter path (the burst's
 * run); every rule holds there too. Each case first pops a good one, so that the path has a
 * translation cached, then meets the violation in a one-descriptor chain.
 */
static const struct vq_mock_seg one_readable[] = { { 64, false } };
static const struct vq_mock_seg one_writable[] = { { 64, true } };

VT_TEST(one_descriptor_chain_with_a_head_out_of_range_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, one_readable, 1, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, one_readable, 1, 0, &b), 0);
	vq_mock_set_avail_ring(&f.m, 1, QSIZE);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_HEAD_RANGE);
	teardown(&f);
}

VT_TEST(one_descriptor_chain_made_available_again_while_in_flight_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain a;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, one_readable, 1, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);
	vq_mock_publish(&f.m, &a);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_BUFFER_ID_IN_FLIGHT);
	teardown(&f);
}

/* The same head twice in one burst: the first is taken, the second breaks the queue. */
VT_TEST(one_descriptor_chain_twice_in_one_burst_breaks_the_queue_at_the_second)
{
	struct fixture f;
	struct vq_mock_chain a, b;
	struct vt_vq_chain chains[4];
	struct iovec iov[4];

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, one_readable, 1, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, one_readable, 1, 0, &b), 0);
	vq_mock_publish(&f.m, &b);
	REQUIRE_EQ(vt_vq_dev_pop_burst(f.vq, chains, iov, 1, 4), 1);
	CHECK_EQ(chains[0].id, b.id);
	CHECK(vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(vt_vq_dev_error(f.vq), VT_VQ_ERR_BUFFER_ID_IN_FLIGHT);
	CHECK_EQ(vt_vq_dev_pop_burst(f.vq, chains, iov, 1, 4), -EPROTO);
	CHECK_EQ(f.seen.errors, 1u);
	teardown(&f);
}

/* At @addr: past the end of the memory, or straddling it. */
static void one_descriptor_at(uint64_t (*where)(const struct vq_mock *m))
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, one_readable, 1, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, one_readable, 1, 0, &b), 0);
	struct vq_mock_desc d = vq_mock_get_desc(&f.m, b.head);
	d.addr = where(&f.m);
	vq_mock_set_desc(&f.m, b.head, d);
	vq_mock_publish(&f.m, &b);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_UNMAPPED);
	teardown(&f);
}

static uint64_t past_the_end(const struct vq_mock *m)
{
	return vq_mock_unmapped_addr(m);
}

static uint64_t straddling_the_end(const struct vq_mock *m)
{
	return vq_mock_unmapped_addr(m) - 16;
}

VT_TEST(one_descriptor_chain_past_the_end_of_memory_breaks_the_queue)
{
	one_descriptor_at(past_the_end);
}

VT_TEST(one_descriptor_chain_straddling_the_end_of_memory_breaks_the_queue)
{
	one_descriptor_at(straddling_the_end);
}

/* ---------------------------------------------------------------- chains */

VT_TEST(descriptor_loop_breaks_with_chain_too_long)
{
	struct fixture f;
	struct vq_mock_chain c;

	static const struct vq_mock_seg segs[] = { { 16, false }, { 16, true }, { 16, true } };
	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, segs, 3, 0, &c), 0);
	/* The last links back to the second: writable to writable, valid but for the loop. */
	struct vq_mock_desc last = vq_mock_get_desc(&f.m, c.desc[2]);
	last.flags |= VIRTQ_DESC_F_NEXT;
	last.next = c.desc[1];
	vq_mock_set_desc(&f.m, c.desc[2], last);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_CHAIN_TOO_LONG);
	teardown(&f);
}

VT_TEST(zero_length_descriptor_looping_on_itself_breaks_with_chain_too_long)
{
	static const struct vq_mock_seg empty = { 0, false };
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, &empty, 1, 0, &c), 0);
	struct vq_mock_desc d = vq_mock_get_desc(&f.m, c.head);
	d.flags |= VIRTQ_DESC_F_NEXT;
	d.next = c.head;
	vq_mock_set_desc(&f.m, c.head, d);
	vq_mock_publish(&f.m, &c);
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

VT_TEST(chain_using_every_descriptor_is_accepted)
{
	struct vq_mock_seg segs[QSIZE];
	struct fixture f;
	struct vq_mock_chain c;
	char why[160];

	for (int i = 0; i < QSIZE; i++)
		segs[i] = (struct vq_mock_seg){ (uint32_t)(i + 1), i >= QSIZE / 2 };
	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, segs, QSIZE, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.ndesc, QSIZE);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	teardown(&f);
}

VT_TEST(next_out_of_range_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, 0, &c), 0);
	struct vq_mock_desc d = vq_mock_get_desc(&f.m, c.desc[1]);
	d.next = QSIZE;
	vq_mock_set_desc(&f.m, c.desc[1], d);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_NEXT_RANGE);
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
	vq_mock_set_desc(
	    &f.m, c.desc[0],
	    (struct vq_mock_desc){ BIG_GPA, UINT32_MAX, VIRTQ_DESC_F_NEXT, c.desc[1] });
	vq_mock_set_desc(&f.m, c.desc[1], (struct vq_mock_desc){ BIG_GPA, 2, 0, 0 });
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
	vq_mock_write_desc_at(
	    &f.m, c.table + 16,
	    (struct vq_mock_desc){ c.table, 3 * 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 2 });
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_INDIRECT_NESTED);
	teardown(&f);
}

VT_TEST(indirect_together_with_next_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	struct vq_mock_desc d = vq_mock_get_desc(&f.m, c.head);
	d.flags |= VIRTQ_DESC_F_NEXT;
	d.next = (uint16_t)((c.head + 1) % QSIZE);
	vq_mock_set_desc(&f.m, c.head, d);
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
	struct vq_mock_desc d = vq_mock_get_desc(&f.m, c.head);
	d.len = len;
	vq_mock_set_desc(&f.m, c.head, d);
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

VT_TEST(indirect_next_out_of_the_table_breaks_the_queue)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	/* Entry 0 links to entry 3 of a three-entry table: within the queue, outside the table. */
	vq_mock_write_desc_at(&f.m, c.table,
			      (struct vq_mock_desc){ c.addr[0], c.len[0], VIRTQ_DESC_F_NEXT, 3 });
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_NEXT_RANGE);
	teardown(&f);
}

VT_TEST(loop_inside_an_indirect_table_breaks_with_chain_too_long)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, F(INDIRECT_DESC)), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	vq_mock_write_desc_at(&f.m, c.table + 2 * 16,
			      (struct vq_mock_desc){ c.addr[2], c.len[2],
						     VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2 });
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_CHAIN_TOO_LONG);
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
	struct vq_mock_desc d = vq_mock_get_desc(&f.m, c.head);
	/* Straddling the end of the region: its first bytes are mapped, the rest is canary. */
	d.addr = vq_mock_unmapped_addr(&f.m) - 16;
	vq_mock_set_desc(&f.m, c.head, d);
	vq_mock_publish(&f.m, &c);
	/* The first entry is readable; the next one is not mapped. */
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
	 * host: a table straddling the two is valid for the driver, contiguous only for it. */
	uint64_t end = vq_mock_unmapped_addr(&f.m);
	struct vt_mem_region r = { .gpa = end, .size = sizeof(elsewhere), .hva = elsewhere };
	REQUIRE_EQ(vt_memtable_add(f.m.table, &r), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, VQ_MOCK_INDIRECT, &c), 0);
	struct virtq_desc table[3];
	REQUIRE_EQ(vt_as_read(&f.m.as, c.table, table, sizeof(table), NULL), 0);
	REQUIRE_EQ(vt_as_write(&f.m.as, end - 16, table, sizeof(table), NULL), 0);
	struct vq_mock_desc d = vq_mock_get_desc(&f.m, c.head);
	d.addr = end - 16;
	vq_mock_set_desc(&f.m, c.head, d);
	vq_mock_publish(&f.m, &c);
	int ret = pop(&f);
	CHECK_EQ(ret, 0);
	if (ret == 0)
		CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	teardown(&f);
}

/* ---------------------------------------------------------------- translation */

VT_TEST(buffer_outside_the_memory_table_breaks_with_unmapped)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, 0, &c), 0);
	struct vq_mock_desc d = vq_mock_get_desc(&f.m, c.desc[1]);
	d.addr = vq_mock_unmapped_addr(&f.m);
	vq_mock_set_desc(&f.m, c.desc[1], d);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_UNMAPPED);
	teardown(&f);
}

VT_TEST(buffer_straddling_the_end_of_memory_breaks_with_unmapped)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, 0, &c), 0);
	/* The writable buffer's last bytes would be the canary after the region. */
	struct vq_mock_desc d = vq_mock_get_desc(&f.m, c.desc[2]);
	d.addr = vq_mock_unmapped_addr(&f.m) - 8;
	vq_mock_set_desc(&f.m, c.desc[2], d);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_UNMAPPED);
	teardown(&f);
}

VT_TEST(buffer_address_wrapping_past_2_64_breaks_with_unmapped)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_build(&f.m, three_mixed, 3, 0, &c), 0);
	struct vq_mock_desc d = vq_mock_get_desc(&f.m, c.desc[0]);
	d.addr = UINT64_MAX - 7;
	vq_mock_set_desc(&f.m, c.desc[0], d);
	vq_mock_publish(&f.m, &c);
	CHECK_BROKEN(&f, pop_hostile(&f), VT_VQ_ERR_UNMAPPED);
	teardown(&f);
}

VT_TEST(iotlb_miss_is_retryable_and_consumes_nothing)
{
	struct fixture f;
	struct vq_mock_chain c;
	char why[160] = "";

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, c.addr[2], c.len[2]), 0);
	uint16_t next_avail = vt_vq_dev_next_avail(f.vq);

	CHECK_EQ(pop(&f), -EFAULT);
	struct vt_as_fault fault = vt_vq_dev_fault(f.vq);
	CHECK(fault.addr == c.addr[2]);
	CHECK_EQ(fault.access, VT_ACCESS_WRITE);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(vt_vq_dev_error(f.vq), VT_VQ_OK);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 0);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), next_avail);
	CHECK_EQ(f.seen.errors, 0);
	/* Asking again before the update changes nothing. */
	CHECK_EQ(pop(&f), -EFAULT);

	/* The transport got the UPDATE: the very same chain comes out. */
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, c.addr[2], c.len[2], VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 1);
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
 * One mapping holds two one-descriptor buffers and allows what the first needs, not what the
 * second does: the first's pop finds (and caches) it, the second must not go through it.
 */
static void second_buffer_denied_by_a_shared_mapping(const struct vq_mock_seg *first,
						     const struct vq_mock_seg *second,
						     unsigned int perm, int line)
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, first, 1, 0, &a), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, second, 1, 0, &b), 0);
	uint64_t lo = a.addr[0] < b.addr[0] ? a.addr[0] : b.addr[0];
	uint64_t hi = a.addr[0] < b.addr[0] ? b.addr[0] + 64 : a.addr[0] + 64;
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, lo, hi - lo, perm), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, a.id);
	check_broken(&f, pop_hostile(&f), VT_VQ_ERR_PERMISSION, line);
	teardown(&f);
}

VT_TEST(readable_descriptor_in_a_write_only_mapping_a_writable_one_used_breaks_with_permission)
{
	second_buffer_denied_by_a_shared_mapping(one_writable, one_readable, VT_IOTLB_PERM_WO,
						 __LINE__);
}

VT_TEST(buffer_invalidated_after_a_pop_is_not_reached_through_a_cached_translation)
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 0), 0);
	vt_vq_dev_flush(f.vq);

	/* b lies where a's translation was found; that translation is then taken away. */
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &b), 0);
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, b.addr[0], b.len[0]), 0);
	CHECK_EQ(pop(&f), -EFAULT);
	CHECK(vt_vq_dev_fault(f.vq).addr == b.addr[0]);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, b.addr[0], b.len[0], VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, b.id);
	teardown(&f);
}

VT_TEST(writable_descriptor_in_a_read_only_mapping_a_readable_one_used_breaks_with_permission)
{
	second_buffer_denied_by_a_shared_mapping(one_readable, one_writable, VT_IOTLB_PERM_RO,
						 __LINE__);
}

VT_TEST(iotlb_invalidation_away_from_the_rings_keeps_them_resolved)
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);
	/* The rings were translated once; a buffer's invalidation must not make them again. */
	struct vt_iotlb_stats before, after;
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, a.addr[0], a.len[0]), 0);
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, a.addr[0], a.len[0], VT_IOTLB_PERM_RO), 0);
	vt_iotlb_get_stats(f.m.iotlb, &before);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &b), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, b.id);
	vt_iotlb_get_stats(f.m.iotlb, &after);
	CHECK_EQ(after.misses, before.misses);
	/* No ring area was translated again (buffers come through extents, not translate). */
	CHECK_EQ(after.hits, before.hits);
	teardown(&f);
}

/* ---------------------------------------------------------------- ring areas */

enum area { AREA_DESC, AREA_AVAIL, AREA_USED };

static uint64_t *area_param(struct fixture *f, enum area a)
{
	return a == AREA_DESC	 ? &f->params.desc_addr
	       : a == AREA_AVAIL ? &f->params.driver_addr
				 : &f->params.device_addr;
}

/* A valid chain waits, but one ring area is at @addr, which the memory table does not map. */
static void check_area_unmapped_breaks(enum area a, uint64_t addr, int line)
{
	struct fixture f;
	struct vq_mock_chain c;

	if (setup_mock(&f, VQ_MOCK_MEMTABLE, 0) < 0) {
		VT_FAIL_AT("line %d: setup failed", line);
		return;
	}
	*area_param(&f, a) = addr;
	if (start(&f) < 0 || vq_mock_add(&f.m, three_mixed, 3, 0, &c) < 0) {
		VT_FAIL_AT("line %d: setup failed", line);
		vq_mock_destroy(&f.m);
		return;
	}
	check_broken(&f, pop_hostile(&f), VT_VQ_ERR_RING_UNMAPPED, line);
	teardown(&f);
}

VT_TEST(descriptor_table_unmapped_breaks_with_ring_unmapped)
{
	struct vq_mock m;
	struct vq_mock_params mp = { .num = QSIZE };
	REQUIRE_EQ(vq_mock_init(&m, &mp), 0);
	uint64_t outside = vq_mock_unmapped_addr(&m);
	vq_mock_destroy(&m);
	check_area_unmapped_breaks(AREA_DESC, outside, __LINE__);
}

VT_TEST(available_ring_unmapped_breaks_with_ring_unmapped)
{
	struct vq_mock m;
	struct vq_mock_params mp = { .num = QSIZE };
	REQUIRE_EQ(vq_mock_init(&m, &mp), 0);
	uint64_t outside = vq_mock_unmapped_addr(&m);
	vq_mock_destroy(&m);
	check_area_unmapped_breaks(AREA_AVAIL, outside, __LINE__);
}

VT_TEST(used_ring_straddling_the_end_of_memory_breaks_with_ring_unmapped)
{
	struct vq_mock m;
	struct vq_mock_params mp = { .num = QSIZE };
	REQUIRE_EQ(vq_mock_init(&m, &mp), 0);
	/* Its first entries inside, its avail_event in the canary. */
	uint64_t straddling = vq_mock_unmapped_addr(&m) - 64;
	vq_mock_destroy(&m);
	check_area_unmapped_breaks(AREA_USED, straddling, __LINE__);
}

VT_TEST(misaligned_descriptor_table_breaks_with_ring_unmapped)
{
	struct vq_mock m;
	struct vq_mock_params mp = { .num = QSIZE };
	REQUIRE_EQ(vq_mock_init(&m, &mp), 0);
	uint64_t misaligned = m.desc_addr + 8; /* 2.7: 16-byte alignment */
	vq_mock_destroy(&m);
	check_area_unmapped_breaks(AREA_DESC, misaligned, __LINE__);
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

	/* The available ring's translation goes away: the cached pointer must not be used. */
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, f.m.driver_addr, VQ_MOCK_PAGE), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &b), 0);
	CHECK_EQ(pop(&f), -EFAULT);
	struct vt_as_fault fault = vt_vq_dev_fault(f.vq);
	CHECK(fault.addr >= f.m.driver_addr && fault.addr < f.m.driver_addr + VQ_MOCK_PAGE);
	CHECK(!vt_vq_dev_is_broken(f.vq));

	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, f.m.driver_addr, VQ_MOCK_PAGE, VT_IOTLB_PERM_RO), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, b.id);
	teardown(&f);
}

VT_TEST(push_while_the_used_ring_is_out_of_the_iotlb_waits_for_a_flush_after_remap)
{
	struct fixture f;
	struct vq_mock_chain c;
	uint32_t id, len;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, f.m.device_addr, VQ_MOCK_PAGE), 0);
	vq_mock_snapshot(&f.m);
	/* Push only records the entry: ring memory is written at flush time. */
	CHECK_EQ(vt_vq_dev_push(f.vq, &f.chain, 5), 0);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 0);
	CHECK(!vt_vq_dev_flush(f.vq));
	CHECK(vt_vq_dev_fault(f.vq).addr == f.m.device_addr);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(vq_mock_first_change(&f.m, false), -1);

	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, f.m.device_addr, VQ_MOCK_PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_EQ(vq_mock_used_idx(&f.m), 1);
	vq_mock_used_elem(&f.m, 0, &id, &len);
	CHECK_EQ(id, c.head);
	CHECK_EQ(len, 5);
	teardown(&f);
}

VT_TEST(flush_after_the_used_ring_left_the_iotlb_does_not_write_it)
{
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 5), 0);
	/* Between push and flush the used ring's translation goes away: its host pages are no
	 * longer the device's to write (they may be the driver's for something else by now). */
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, f.m.device_addr, VQ_MOCK_PAGE), 0);
	vq_mock_snapshot(&f.m);
	CHECK(!vt_vq_dev_flush(f.vq));
	CHECK_EQ(vq_mock_first_change(&f.m, false), -1);
	CHECK(!vt_vq_dev_is_broken(f.vq));

	/* Mapped again, the entry pushed before is published. */
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, f.m.device_addr, VQ_MOCK_PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_EQ(vq_mock_used_idx(&f.m), 1);
	teardown(&f);
}

VT_TEST(ring_moved_in_the_iotlb_is_followed_to_its_new_host_pages)
{
	struct fixture f;
	struct vq_mock_chain a, b;

	REQUIRE_EQ(setup_iotlb(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &a), 0);
	REQUIRE_EQ(pop(&f), 0);

	/* b is published in a copy of the available ring on other host pages... */
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &b), 0);
	uint64_t copy = vq_mock_alloc(&f.m, VQ_MOCK_PAGE, VQ_MOCK_PAGE);
	REQUIRE(copy != 0);
	memcpy(vq_mock_ptr(&f.m, copy), vq_mock_ptr(&f.m, f.m.driver_addr), VQ_MOCK_PAGE);
	/* ...while the old pages still say only a is there. */
	vq_mock_set_avail_idx(&f.m, 1);
	REQUIRE_EQ(vt_iotlb_update(f.m.iotlb, f.m.driver_addr, VQ_MOCK_PAGE,
				   vq_mock_ptr(&f.m, copy), VT_IOTLB_PERM_RW),
		   0);

	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, b.id);
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

VT_TEST(new_rejects_bad_sizes)
{
	struct fixture f;
	struct vt_vq_dev *vq = NULL;

	REQUIRE_EQ(setup_mock(&f, VQ_MOCK_MEMTABLE, 0), 0);
	static const unsigned int bad[] = { 0, 3, 24, 65536 };
	for (unsigned int i = 0; i < 4; i++) {
		f.params.num = bad[i];
		CHECK_EQ(vt_vq_dev_new(&f.params, &vq), -EINVAL);
	}
	vq_mock_destroy(&f.m);
}

VT_TEST(empty_ring_pop_is_eagain)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, 0), 0);
	CHECK_EQ(pop(&f), -EAGAIN);
	CHECK_EQ(pop(&f), -EAGAIN);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(f.seen.calls, 0);
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
	CHECK_EQ(f.chain.id, c.head);
	CHECK_EQ(f.chain.ndesc, 5);
	CHECK_EQ(f.chain.nreadable, 3);
	CHECK_EQ(f.chain.nwritable, 2);
	CHECK_EQ(f.chain.readable_bytes, 3101);
	CHECK_EQ(f.chain.writable_bytes, 507);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, why, sizeof(why)));
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 1);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), 1);
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

VT_TEST(push_and_flush_write_the_used_entry)
{
	struct fixture f;
	struct vq_mock_chain c;
	uint32_t id, len;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 99), 0);
	/* Not visible before the flush. */
	CHECK_EQ(vq_mock_used_idx(&f.m), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_EQ(vq_mock_used_idx(&f.m), 1);
	vq_mock_used_elem(&f.m, 0, &id, &len);
	CHECK_EQ(id, c.head);
	CHECK_EQ(len, 99);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 0);
	/* Nothing new: nothing to publish, nobody to notify. */
	CHECK(!vt_vq_dev_flush(f.vq));
	teardown(&f);
}

VT_TEST(buffers_returned_out_of_order_carry_their_own_ids)
{
	struct fixture f;
	struct vq_mock_chain c[3];
	struct vt_vq_chain popped[3];
	uint32_t id, len;

	REQUIRE_EQ(setup(&f, 0), 0);
	for (int i = 0; i < 3; i++)
		REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c[i]), 0);
	for (int i = 0; i < 3; i++) {
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[2], 2), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[0], 0), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[1], 1), 0);
	vt_vq_dev_flush(f.vq);
	CHECK_EQ(vq_mock_used_idx(&f.m), 3);
	static const int order[3] = { 2, 0, 1 };
	for (int i = 0; i < 3; i++) {
		vq_mock_used_elem(&f.m, (uint16_t)i, &id, &len);
		CHECK_EQ(id, c[order[i]].head);
		CHECK_EQ(len, order[i]);
	}
	/* Their descriptors can be made available again. */
	for (int i = 0; i < 3; i++)
		vq_mock_publish(&f.m, &c[i]);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(pop(&f), 0);
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
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), 0);
	CHECK_EQ(vt_vq_dev_pop(f.vq, &f.chain, f.iov, 3), 0);
	CHECK_EQ(f.chain.id, c.head);
	CHECK(vq_mock_check_iov(&f.m, &c, &f.chain, f.iov, NULL, 0));
	teardown(&f);
}

VT_TEST(pop_resumes_at_params_next_avail)
{
	struct fixture f;
	struct vq_mock_chain c;
	uint32_t id, len;

	REQUIRE_EQ(setup_mock(&f, VQ_MOCK_MEMTABLE, 0), 0);
	/* As after SET_VRING_BASE 5: the driver's ring and used idx already stand at 5. */
	f.params.next_avail = 5;
	REQUIRE_EQ(start(&f), 0);
	vq_mock_set_avail_idx(&f.m, 5);
	vq_mock_set_avail_ring(&f.m, 4, QSIZE + 3); /* taken long ago: must not be read */
	CHECK_EQ(pop(&f), -EAGAIN);
	REQUIRE_EQ(vq_mock_add(&f.m, three_mixed, 3, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	CHECK_EQ(f.chain.id, c.head);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), 6);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 3), 0);
	vt_vq_dev_flush(f.vq);
	CHECK_EQ(vq_mock_used_idx(&f.m), 6);
	vq_mock_used_elem(&f.m, 5, &id, &len);
	CHECK_EQ(id, c.head);
	CHECK_EQ(len, 3);
	teardown(&f);
}

VT_TEST(indices_wrap_at_2_16)
{
	static const struct vq_mock_seg one = { 8, true };
	struct fixture f;
	struct vq_mock_chain c[5];
	uint32_t id, len;

	REQUIRE_EQ(setup_mock(&f, VQ_MOCK_MEMTABLE, 0), 0);
	f.params.next_avail = 65533;
	REQUIRE_EQ(start(&f), 0);
	vq_mock_set_avail_idx(&f.m, 65533);
	for (int i = 0; i < 5; i++)
		REQUIRE_EQ(vq_mock_add(&f.m, &one, 1, 0, &c[i]), 0);
	for (int i = 0; i < 5; i++) {
		REQUIRE_EQ(pop(&f), 0);
		CHECK_EQ(f.chain.id, c[i].head);
		REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, (uint32_t)i), 0);
	}
	vt_vq_dev_flush(f.vq);
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), 2);
	CHECK_EQ(vq_mock_used_idx(&f.m), 2);
	vq_mock_used_elem(&f.m, 1, &id, &len); /* 65537 mod 2^16, the fifth */
	CHECK_EQ(id, c[4].head);
	CHECK_EQ(len, 4);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	teardown(&f);
}

/* ---------------------------------------------------------------- notifications */

VT_TEST(event_idx_flush_notifies_exactly_when_used_event_is_crossed)
{
	static const struct vq_mock_seg one = { 8, true };
	struct fixture f;
	struct vq_mock_chain c;
	struct vt_vq_chain popped[6];

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	for (int i = 0; i < 6; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, &one, 1, 0, &c), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	/* "Interrupt me when the used idx passes 2", i.e. at the third entry (2.7.10). */
	vq_mock_set_used_event(&f.m, 2);
	static const bool expect[3] = { false, false, true };
	for (int i = 0; i < 3; i++) {
		REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[i], 0), 0);
		CHECK_EQ(vt_vq_dev_flush(f.vq), expect[i]);
	}
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[3], 0), 0);
	CHECK(!vt_vq_dev_flush(f.vq)); /* already past: the driver has not asked again */
	/* Two entries in one flush that jump over used_event: one notification. */
	vq_mock_set_used_event(&f.m, 4);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[4], 0), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[5], 0), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_EQ(vq_mock_used_idx(&f.m), 6);
	teardown(&f);
}

VT_TEST(event_idx_ignores_the_no_interrupt_flag)
{
	static const struct vq_mock_seg one = { 8, true };
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, &one, 1, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	vq_mock_set_used_event(&f.m, 0);
	vq_mock_set_avail_flags(&f.m, VIRTQ_AVAIL_F_NO_INTERRUPT);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 0), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	teardown(&f);
}

VT_TEST(event_idx_enable_notify_writes_avail_event_and_rechecks)
{
	static const struct vq_mock_seg one = { 8, false };
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, F(EVENT_IDX)), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, &one, 1, 0, &c), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, &one, 1, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(pop(&f), 0);
	vt_vq_dev_disable_notify(f.vq);
	/* Nothing new: "kick me when you make entry 2 available". */
	CHECK(!vt_vq_dev_enable_notify(f.vq));
	CHECK_EQ(vq_mock_avail_event(&f.m), 2);
	/* A buffer arrived while notifications were off: the recheck reports it. */
	vt_vq_dev_disable_notify(f.vq);
	REQUIRE_EQ(vq_mock_add(&f.m, &one, 1, 0, &c), 0);
	CHECK(vt_vq_dev_enable_notify(f.vq));
	CHECK_EQ(vq_mock_avail_event(&f.m), 2);
	REQUIRE_EQ(pop(&f), 0);
	CHECK(!vt_vq_dev_enable_notify(f.vq));
	CHECK_EQ(vq_mock_avail_event(&f.m), 3);
	teardown(&f);
}

VT_TEST(no_interrupt_flag_suppresses_used_notifications)
{
	static const struct vq_mock_seg one = { 8, true };
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, &one, 1, 0, &c), 0);
	REQUIRE_EQ(vq_mock_add(&f.m, &one, 1, 0, &c), 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 0), 0);
	vq_mock_set_avail_flags(&f.m, VIRTQ_AVAIL_F_NO_INTERRUPT);
	CHECK(!vt_vq_dev_flush(f.vq));
	CHECK_EQ(vq_mock_used_idx(&f.m), 1); /* published all the same */
	vq_mock_set_avail_flags(&f.m, 0);
	REQUIRE_EQ(pop(&f), 0);
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &f.chain, 0), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	teardown(&f);
}

VT_TEST(disable_notify_sets_no_notify_and_enable_clears_it_and_rechecks)
{
	static const struct vq_mock_seg one = { 8, false };
	struct fixture f;
	struct vq_mock_chain c;

	REQUIRE_EQ(setup(&f, 0), 0);
	vt_vq_dev_disable_notify(f.vq);
	CHECK_EQ(vq_mock_used_flags(&f.m), VIRTQ_USED_F_NO_NOTIFY);
	CHECK(!vt_vq_dev_enable_notify(f.vq));
	CHECK_EQ(vq_mock_used_flags(&f.m), 0);
	vt_vq_dev_disable_notify(f.vq);
	REQUIRE_EQ(vq_mock_add(&f.m, &one, 1, 0, &c), 0);
	CHECK(vt_vq_dev_enable_notify(f.vq));
	CHECK_EQ(vq_mock_used_flags(&f.m), 0);
	teardown(&f);
}

/* ---------------------------------------------------------------- in order */

VT_TEST(in_order_batch_writes_one_used_entry_for_the_last_buffer)
{
	static const struct vq_mock_seg two[] = { { 8, false }, { 8, true } };
	struct fixture f;
	struct vq_mock_chain c[4];
	struct vt_vq_chain popped[4];
	uint32_t id, len;

	REQUIRE_EQ(setup(&f, F(IN_ORDER)), 0);
	for (int i = 0; i < 4; i++) {
		REQUIRE_EQ(vq_mock_add(&f.m, two, 2, 0, &c[i]), 0);
		REQUIRE_EQ(pop(&f), 0);
		popped[i] = f.chain;
	}
	vq_mock_snapshot(&f.m);
	/* Buffers 0..2 in one entry: at the batch's first slot, with the last one's id (2.7.9). */
	REQUIRE_EQ(vt_vq_dev_push_in_order_batch(f.vq, &popped[2], 42), 0);
	CHECK(vt_vq_dev_flush(f.vq));
	CHECK_EQ(vq_mock_used_idx(&f.m), 3);
	vq_mock_used_elem(&f.m, 0, &id, &len);
	CHECK_EQ(id, c[2].head);
	CHECK_EQ(len, 42);
	/* The slots the batch skipped are not written. */
	uint8_t *used = vq_mock_ptr(&f.m, f.m.device_addr);
	CHECK(memcmp(used + 4 + 8, f.m.snapshot + (f.m.device_addr - f.m.gpa) + 4 + 8, 16) == 0);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 1);

	/* The next buffer goes to the slot after the batch. */
	REQUIRE_EQ(vt_vq_dev_push(f.vq, &popped[3], 7), 0);
	vt_vq_dev_flush(f.vq);
	CHECK_EQ(vq_mock_used_idx(&f.m), 4);
	vq_mock_used_elem(&f.m, 3, &id, &len);
	CHECK_EQ(id, c[3].head);
	CHECK_EQ(len, 7);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 0);
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
	struct vt_vq_chain forged = { .id = (uint16_t)(c.head + 3), .ndesc = 1 };
	CHECK_BROKEN(&f, vt_vq_dev_push_in_order_batch(f.vq, &forged, 0), VT_VQ_ERR_NOT_IN_FLIGHT);
	teardown(&f);
}

/*
 * ------------------------------------------------ bursts through the IOTLB's page table
 *
 * Under an IOMMU each buffer of a burst is a page of its own, which the burst's run reads from the
 * address space's page table (vt_as_page_entry). What it takes from there must obey the rules
 * every other path does: the page's permission for the descriptor's direction, and all of the
 * buffer inside the page; anything else goes the general way, which says what is wrong.
 */

/*
 * The IOTLB's own address space, but for its extent lookups, which are counted: a burst that
 * finds its buffers in the page table asks for none past its first chain (pop_one's).
 */
static const struct vt_as_ops *iotlb_as_ops;
static struct vt_as_ops counting_as_ops;
static unsigned int extent_lookups;

static int counting_extent(void *impl, uint64_t addr, struct vt_as_extent *extent,
			   uint64_t *generation)
{
	extent_lookups++;
	return iotlb_as_ops->extent(impl, addr, extent, generation);
}

/* A queue of either format over the mock's IOTLB, which maps the whole region RW. */
static int setup_pages(struct fixture *f, bool packed)
{
	memset(f, 0, sizeof(*f));
	f->log =
	    (struct vt_log){ .fn = capture_log, .opaque = &f->seen, .max_level = VT_LOG_DEBUG };
	struct vq_mock_params mp = { .num = QSIZE, .packed = packed, .space = VQ_MOCK_IOTLB };
	int ret = vq_mock_init(&f->m, &mp);
	if (ret < 0)
		return ret;
	vq_mock_dev_params(&f->m, packed ? F(RING_PACKED) : 0, &f->params);
	f->params.log = &f->log;
	iotlb_as_ops = f->params.as.ops;
	counting_as_ops = *iotlb_as_ops;
	counting_as_ops.extent = counting_extent;
	f->params.as.ops = &counting_as_ops;
	extent_lookups = 0;
	return start(f);
}

/*
 * A page of the heap cut out of the region's mapping and mapped again on its own with @perm, in
 * the page table (checked): its address, or 0.
 */
static uint64_t page_alone(struct fixture *f, unsigned int perm)
{
	struct vt_iotlb_stats before, after;
	uint64_t page = vq_mock_alloc(&f->m, VQ_MOCK_PAGE, VQ_MOCK_PAGE);

	vt_iotlb_get_stats(f->m.iotlb, &before);
	if (!page || vq_mock_iotlb_unmap(&f->m, page, VQ_MOCK_PAGE) < 0 ||
	    vq_mock_iotlb_map(&f->m, page, VQ_MOCK_PAGE, perm) < 0)
		return 0;
	vt_iotlb_get_stats(f->m.iotlb, &after);
	return after.page_table_entries == before.page_table_entries + 1 ? page : 0;
}

/* Builds and publishes a one-segment chain of @len bytes at @addr. */
static bool add_at(struct fixture *f, uint64_t addr, uint32_t len, bool writable,
		   struct vq_mock_chain *c)
{
	const struct vq_mock_seg seg = { len, writable };
	if (vq_mock_build(&f->m, &seg, 1, 0, c) < 0 || vq_mock_move_segment(&f->m, c, 0, addr) < 0)
		return false;
	vq_mock_publish(&f->m, c);
	return true;
}

static int pop_burst(struct fixture *f, struct vt_vq_chain *chains, unsigned int max)
{
	return vt_vq_dev_pop_burst(f->vq, chains, f->iov, 1, max);
}

static void burst_takes_buffers_from_their_pages(bool packed)
{
	struct fixture f;
	struct vq_mock_chain c[3];
	struct vt_vq_chain chains[3];
	char why[160] = "";

	REQUIRE_EQ(setup_pages(&f, packed), 0);
	uint64_t ro = page_alone(&f, VT_IOTLB_PERM_RO), wo = page_alone(&f, VT_IOTLB_PERM_WO);
	uint64_t rw = page_alone(&f, VT_IOTLB_PERM_RW);
	REQUIRE(ro && wo && rw);
	/* Inside a page, up to its last byte, and all of one. */
	REQUIRE(add_at(&f, ro + 100, 64, false, &c[0]));
	REQUIRE(add_at(&f, wo + VQ_MOCK_PAGE - 64, 64, true, &c[1]));
	REQUIRE(add_at(&f, rw, VQ_MOCK_PAGE, false, &c[2]));
	REQUIRE_EQ(pop_burst(&f, chains, 3), 3);
	/* None: with no extent cached yet, the run found all three in the page table. */
	CHECK_EQ(extent_lookups, 0);
	for (unsigned int i = 0; i < 3; i++) {
		CHECK(f.iov[i].iov_base == vq_mock_ptr(&f.m, c[i].addr[0]));
		CHECK(vq_mock_check_iov(&f.m, &c[i], &chains[i], &f.iov[i], why, sizeof(why)));
	}
	if (why[0])
		fprintf(stderr, "  %s\n", why);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	teardown(&f);
}

VT_TEST(split_burst_takes_one_page_buffers_from_the_page_table)
{
	burst_takes_buffers_from_their_pages(false);
}

VT_TEST(packed_burst_takes_one_page_buffers_from_the_page_table)
{
	burst_takes_buffers_from_their_pages(true);
}

/*
 * The device may not write a page mapped read-only, nor read one mapped write-only: the queue
 * breaks, at that buffer.
 */
static void burst_refuses_what_a_page_forbids(bool packed, bool write_read_only)
{
	struct fixture f;
	struct vq_mock_chain c[2];
	struct vt_vq_chain chains[2];

	REQUIRE_EQ(setup_pages(&f, packed), 0);
	uint64_t ro = page_alone(&f, VT_IOTLB_PERM_RO), wo = page_alone(&f, VT_IOTLB_PERM_WO);
	REQUIRE(ro && wo);
	if (write_read_only) {
		REQUIRE(add_at(&f, ro + 64, 64, false, &c[0]));
		REQUIRE(add_at(&f, ro + 256, 64, true, &c[1]));
	} else {
		REQUIRE(add_at(&f, ro + 64, 64, false, &c[0]));
		REQUIRE(add_at(&f, wo + 256, 64, false, &c[1]));
	}
	CHECK_EQ(pop_burst(&f, chains, 2), 1);
	CHECK_EQ(chains[0].id, c[0].id);
	CHECK_EQ(pop_burst(&f, chains, 2), -EPROTO);
	CHECK(vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(vt_vq_dev_error(f.vq), VT_VQ_ERR_PERMISSION);
	CHECK_EQ(f.seen.errors, 1);
	CHECK(vq_mock_canaries_intact(&f.m));
	teardown(&f);
}

VT_TEST(split_burst_refuses_a_writable_buffer_in_a_read_only_page)
{
	burst_refuses_what_a_page_forbids(false, true);
}

VT_TEST(packed_burst_refuses_a_writable_buffer_in_a_read_only_page)
{
	burst_refuses_what_a_page_forbids(true, true);
}

VT_TEST(split_burst_refuses_a_readable_buffer_in_a_write_only_page)
{
	burst_refuses_what_a_page_forbids(false, false);
}

VT_TEST(packed_burst_refuses_a_readable_buffer_in_a_write_only_page)
{
	burst_refuses_what_a_page_forbids(true, false);
}

/*
 * A buffer that runs from its page into one nothing maps is a miss there (retryable, nothing
 * consumed), not a buffer its first page holds.
 */
static void burst_misses_past_the_end_of_a_page(bool packed, uint32_t inside, uint32_t len)
{
	struct fixture f;
	struct vq_mock_chain first, c;
	struct vt_vq_chain chain[2];

	REQUIRE_EQ(setup_pages(&f, packed), 0);
	uint64_t page = page_alone(&f, VT_IOTLB_PERM_RO);
	uint64_t next = vq_mock_alloc(&f.m, VQ_MOCK_PAGE, VQ_MOCK_PAGE);
	REQUIRE(page && next == page + VQ_MOCK_PAGE);
	REQUIRE_EQ(vq_mock_iotlb_unmap(&f.m, next, VQ_MOCK_PAGE), 0);
	/* One before it, so that it comes second in a burst (a burst's first takes the general
	 * way). */
	REQUIRE(add_at(&f, page + 64, 64, false, &first));
	REQUIRE(add_at(&f, page + VQ_MOCK_PAGE - inside, len, false, &c));
	CHECK_EQ(pop_burst(&f, chain, 2), 1);
	CHECK_EQ(chain[0].id, first.id);
	uint16_t next_avail = vt_vq_dev_next_avail(f.vq);
	CHECK_EQ(pop_burst(&f, chain, 1), -EFAULT);
	CHECK(vt_vq_dev_fault(f.vq).addr == next);
	CHECK(!vt_vq_dev_is_broken(f.vq));
	CHECK_EQ(vt_vq_dev_next_avail(f.vq), next_avail);
	CHECK_EQ(vt_vq_dev_in_flight(f.vq), 1);
	/* Mapped, the buffer comes out whole: two pieces, each from its own page. */
	REQUIRE_EQ(vq_mock_iotlb_map(&f.m, next, VQ_MOCK_PAGE, VT_IOTLB_PERM_RO), 0);
	struct iovec iov[2];
	CHECK_EQ(vt_vq_dev_pop_burst(f.vq, chain, iov, 2, 1), 1);
	CHECK_EQ(chain[0].id, c.id);
	CHECK_EQ(chain[0].readable_bytes, len);
	teardown(&f);
}

VT_TEST(split_burst_misses_where_a_buffer_leaves_its_page_for_an_unmapped_one)
{
	burst_misses_past_the_end_of_a_page(false, 32, 64);
	burst_misses_past_the_end_of_a_page(false, 1, 2); /* by one byte */
}

VT_TEST(packed_burst_misses_where_a_buffer_leaves_its_page_for_an_unmapped_one)
{
	burst_misses_past_the_end_of_a_page(true, 32, 64);
	burst_misses_past_the_end_of_a_page(true, 1, 2);
}
