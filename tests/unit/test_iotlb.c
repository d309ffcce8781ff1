/* SPDX-License-Identifier: MIT */
/*
 * The IOTLB's behaviours one by one: translation with permissions, faults and merging, how
 * updates and invalidations cut entries, the two full policies, statistics and the address-space
 * view. Randomized agreement with a byte model is in test_iotlb_model.c.
 */
#include <errno.h>

#include <virtue/iotlb.h>
#include <virtue/memtable.h>

#include "harness.h"

#define PAGE	 4096u
#define TOP_PAGE (UINT64_MAX - PAGE + 1) /* 2^64 - 4096 */

/* Page aligned: a whole host page can back a page table entry. */
static _Alignas(4096) uint8_t host[64 * PAGE];

static struct vt_iotlb *new_iotlb(unsigned int max_entries, enum vt_iotlb_full_policy policy,
				  const struct vt_log *log)
{
	/*
	 * The tests that bound the table are about the sorted array, which alone the bound
	 * applies to: without the page table, every entry counts.
	 */
	struct vt_iotlb_params p = { .max_entries = max_entries,
				     .full_policy = policy,
				     .page_table_pages = max_entries ? VT_IOTLB_NO_PAGE_TABLE : 0,
				     .log = log };
	struct vt_iotlb *t = NULL;

	if (vt_iotlb_new(&p, &t) != 0)
		return NULL;
	return t;
}

static void drop_log(void *opaque, enum vt_log_level level, const char *message)
{
}

/* For tests that fill the table on purpose. */
static const struct vt_log quiet = { .fn = drop_log };

static struct vt_iotlb *new_default(void)
{
	return new_iotlb(0, VT_IOTLB_FULL_REFUSE, NULL);
}

/* Default but for the page table: @page_table_pages as struct vt_iotlb_params has it. */
static struct vt_iotlb *new_with_pages(unsigned int page_table_pages)
{
	struct vt_iotlb_params p = { .page_table_pages = page_table_pages };
	struct vt_iotlb *t = NULL;

	return vt_iotlb_new(&p, &t) == 0 ? t : NULL;
}

/* Log sink for tests that expect a line, and to keep expected errors off stderr. */
struct log_capture {
	unsigned int lines;
	char last[512];
};

static void capture_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_capture *c = opaque;
	c->lines++;
	snprintf(c->last, sizeof(c->last), "%s", message);
}

/* Translate expecting success; returns the iovec count, or -1 after recording the failure. */
static int translate_ok(struct vt_iotlb *t, uint64_t iova, uint64_t len, unsigned int access,
			struct iovec *iov, unsigned int iov_max)
{
	unsigned int n = 99;
	int ret = vt_iotlb_translate(t, iova, len, access, iov, iov_max, &n, NULL);
	if (ret != 0) {
		VT_FAIL_AT("translate 0x%" PRIx64 "+%" PRIu64 " returned %d", iova, len, ret);
		return -1;
	}
	return (int)n;
}

/* Translate expecting @err; returns the fault address (or UINT64_MAX when @err has none). */
static uint64_t translate_fails(struct vt_iotlb *t, uint64_t iova, uint64_t len,
				unsigned int access, int err)
{
	struct iovec iov[8];
	struct vt_as_fault fault = { .addr = 0xdead, .access = 0 };
	unsigned int n = 99;
	int ret = vt_iotlb_translate(t, iova, len, access, iov, 8, &n, &fault);
	if (ret != err)
		VT_FAIL_AT("translate 0x%" PRIx64 "+%" PRIu64 ": %d, expected %d", iova, len, ret,
			   err);
	if (err == -EFAULT || err == -EACCES) {
		CHECK_EQ(n, 0);
		CHECK_EQ(fault.access, access);
		return fault.addr;
	}
	return UINT64_MAX;
}

static void check_entry(struct vt_iotlb *t, uint64_t iova, uint64_t start, uint64_t size,
			const void *hva, unsigned int perm)
{
	struct vt_iotlb_entry e;
	if (vt_iotlb_lookup(t, iova, &e) != 0) {
		VT_FAIL_AT("no entry at 0x%" PRIx64, iova);
		return;
	}
	if (e.iova != start || e.size != size || e.hva != hva || e.perm != perm)
		VT_FAIL_AT("entry at 0x%" PRIx64 " is 0x%" PRIx64 "+0x%" PRIx64 " at %p perm %u, "
			   "expected 0x%" PRIx64 "+0x%" PRIx64 " at %p perm %u",
			   iova, e.iova, e.size, e.hva, e.perm, start, size, hva, perm);
}

static unsigned int entries(struct vt_iotlb *t)
{
	struct vt_iotlb_stats s;
	vt_iotlb_get_stats(t, &s);
	return s.entries;
}

VT_TEST(new_with_null_params_uses_defaults)
{
	struct vt_iotlb *t = NULL;
	REQUIRE_EQ(vt_iotlb_new(NULL, &t), 0);
	REQUIRE(t != NULL);
	CHECK_EQ(entries(t), 0);
	CHECK_EQ(vt_iotlb_generation(t), 0);
	vt_iotlb_free(t);
	vt_iotlb_free(NULL);
}

VT_TEST(new_rejects_bad_params)
{
	struct vt_iotlb *t = (struct vt_iotlb *)1;
	struct vt_iotlb_params too_big = { .max_entries = VT_IOTLB_MAX_ENTRIES + 1 };
	struct vt_iotlb_params bad_policy = { .full_policy = (enum vt_iotlb_full_policy)2 };

	CHECK_EQ(vt_iotlb_new(&too_big, &t), -EINVAL);
	CHECK(t == NULL);
	CHECK_EQ(vt_iotlb_new(&bad_policy, &t), -EINVAL);
	struct vt_iotlb_params odd_pages = { .page_table_pages = 3 };
	struct vt_iotlb_params too_many_pages = { .page_table_pages =
						      VT_IOTLB_MAX_PAGE_TABLE_PAGES * 2 };
	CHECK_EQ(vt_iotlb_new(&odd_pages, &t), -EINVAL);
	CHECK_EQ(vt_iotlb_new(&too_many_pages, &t), -EINVAL);
}

VT_TEST(update_then_translate_gives_host_address)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[4];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, 2 * PAGE, host, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(translate_ok(t, 0x10100, 0x200, VT_ACCESS_RW, iov, 4), 1);
	CHECK(iov[0].iov_base == host + 0x100);
	CHECK_EQ(iov[0].iov_len, 0x200);
	/* The last byte of the mapping, and the whole of it. */
	CHECK_EQ(translate_ok(t, 0x10000 + 2 * PAGE - 1, 1, VT_ACCESS_READ, iov, 4), 1);
	CHECK(iov[0].iov_base == host + 2 * PAGE - 1);
	CHECK_EQ(translate_ok(t, 0x10000, 2 * PAGE, VT_ACCESS_WRITE, iov, 4), 1);
	CHECK_EQ(iov[0].iov_len, 2 * PAGE);
	vt_iotlb_free(t);
}

VT_TEST(update_rejects_bad_arguments)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	CHECK_EQ(vt_iotlb_update(t, 0x1000, 0, host, VT_IOTLB_PERM_RW), -EINVAL);
	CHECK_EQ(vt_iotlb_update(t, 0x1000, PAGE, host, 0), -EINVAL);
	CHECK_EQ(vt_iotlb_update(t, 0x1000, PAGE, host, 4), -EINVAL);
	CHECK_EQ(vt_iotlb_update(t, 0x1000, PAGE, host, VT_IOTLB_PERM_RW | 8), -EINVAL);
	CHECK_EQ(vt_iotlb_update(t, 0x1000, PAGE, NULL, VT_IOTLB_PERM_RW), -EINVAL);
	/* A host range that would wrap the host address space. */
	CHECK_EQ(vt_iotlb_update(t, 0x1000, PAGE, (void *)(UINTPTR_MAX - 16), VT_IOTLB_PERM_RW),
		 -EINVAL);
	CHECK_EQ(entries(t), 0);
	vt_iotlb_free(t);
}

/*
 * The same checks for a whole page onto a whole host page, once the page table's window is
 * placed: the page table's own quick fill must refuse what the general path refuses.
 */
VT_TEST(update_of_a_whole_page_rejects_bad_arguments_in_the_page_table_too)
{
	struct vt_iotlb *t = new_with_pages(0);
	struct vt_iotlb_stats st;
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x1000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	vt_iotlb_get_stats(t, &st);
	REQUIRE_EQ(st.page_table_entries, 1);
	static const unsigned int bad_perm[] = { 0, 4, VT_IOTLB_PERM_RW | 8 };
	for (unsigned int i = 0; i < 3; i++) {
		CHECK_EQ(vt_iotlb_update(t, 0x2000, PAGE, host + PAGE, bad_perm[i]), -EINVAL);
		struct vt_iotlb_entry e = { 0x2000, PAGE, host + PAGE, bad_perm[i] };
		int error = 0;
		CHECK_EQ(vt_iotlb_update_burst(t, &e, 1, &error), 0);
		CHECK_EQ(error, -EINVAL);
	}
	CHECK_EQ(vt_iotlb_update(t, 0x2000, PAGE, NULL, VT_IOTLB_PERM_RW), -EINVAL);
	CHECK_EQ(entries(t), 1);
	vt_iotlb_free(t);
}

VT_TEST(read_only_mapping_refuses_write)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[2];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x4000, PAGE, host, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(translate_ok(t, 0x4000, PAGE, VT_ACCESS_READ, iov, 2), 1);
	CHECK_EQ(translate_fails(t, 0x4010, 16, VT_ACCESS_WRITE, -EACCES), 0x4010);
	CHECK_EQ(translate_fails(t, 0x4010, 16, VT_ACCESS_RW, -EACCES), 0x4010);
	vt_iotlb_free(t);
}

VT_TEST(write_only_mapping_refuses_read)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[2];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x4000, PAGE, host, VT_IOTLB_PERM_WO), 0);
	CHECK_EQ(translate_ok(t, 0x4000, PAGE, VT_ACCESS_WRITE, iov, 2), 1);
	CHECK_EQ(translate_fails(t, 0x4ff0, 16, VT_ACCESS_READ, -EACCES), 0x4ff0);
	vt_iotlb_free(t);
}

VT_TEST(denial_reports_first_byte_of_the_entry_lacking_permission)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x4000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x5000, PAGE, host + PAGE, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(translate_fails(t, 0x4800, PAGE, VT_ACCESS_WRITE, -EACCES), 0x5000);
	vt_iotlb_free(t);
}

VT_TEST(unmapped_address_faults_at_first_missing_byte)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	CHECK_EQ(translate_fails(t, 0x1234, 10, VT_ACCESS_READ, -EFAULT), 0x1234);
	REQUIRE_EQ(vt_iotlb_update(t, 0x4000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	/* Starts mapped, runs off the end. */
	CHECK_EQ(translate_fails(t, 0x4f00, 0x200, VT_ACCESS_READ, -EFAULT), 0x5000);
	/* Starts unmapped just below. */
	CHECK_EQ(translate_fails(t, 0x3fff, 2, VT_ACCESS_READ, -EFAULT), 0x3fff);
	vt_iotlb_free(t);
}

VT_TEST(hole_between_entries_faults_at_hole_start)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x4000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x5000, 0x800, host + PAGE, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x6000, PAGE, host + 2 * PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(translate_fails(t, 0x4000, 3 * PAGE, VT_ACCESS_READ, -EFAULT), 0x5800);
	vt_iotlb_free(t);
}

VT_TEST(first_problem_in_address_order_decides_the_error)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	/* A read-only entry, then a hole: writing across both is denied, not a miss. */
	REQUIRE_EQ(vt_iotlb_update(t, 0x4000, PAGE, host, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(translate_fails(t, 0x4000, 2 * PAGE, VT_ACCESS_WRITE, -EACCES), 0x4000);
	/* A hole, then a read-only entry: a miss. */
	CHECK_EQ(translate_fails(t, 0x3000, 2 * PAGE, VT_ACCESS_WRITE, -EFAULT), 0x3000);
	vt_iotlb_free(t);
}

VT_TEST(translate_wrapping_past_top_is_overflow)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, TOP_PAGE, PAGE, host, VT_IOTLB_PERM_RW), 0);
	translate_fails(t, UINT64_MAX, 2, VT_ACCESS_READ, -EOVERFLOW);
	translate_fails(t, TOP_PAGE, PAGE + 1, VT_ACCESS_READ, -EOVERFLOW);
	translate_fails(t, 2, UINT64_MAX, VT_ACCESS_READ, -EOVERFLOW);
	vt_iotlb_free(t);
}

VT_TEST(zero_length_translates_to_no_iovecs)
{
	struct vt_iotlb *t = new_default();
	unsigned int n = 99;
	REQUIRE(t);

	/* Even where nothing is mapped, and even at the very top. */
	CHECK_EQ(vt_iotlb_translate(t, 0x1000, 0, VT_ACCESS_READ, NULL, 0, &n, NULL), 0);
	CHECK_EQ(n, 0);
	CHECK_EQ(vt_iotlb_translate(t, UINT64_MAX, 0, VT_ACCESS_RW, NULL, 0, &n, NULL), 0);
	vt_iotlb_free(t);
}

VT_TEST(invalid_access_is_einval)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x4000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	translate_fails(t, 0x4000, 16, 0, -EINVAL);
	translate_fails(t, 0x4000, 16, 4, -EINVAL);
	translate_fails(t, 0x4000, 16, VT_ACCESS_RW | 4, -EINVAL);
	vt_iotlb_free(t);
}

VT_TEST(adjacent_entries_contiguous_on_host_merge_into_one_iovec)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[4];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x4000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x5000, 0x100, host + PAGE, VT_IOTLB_PERM_RO), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x5100, PAGE, host + PAGE + 0x100, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(entries(t), 3);
	CHECK_EQ(translate_ok(t, 0x4800, 0x1000, VT_ACCESS_READ, iov, 4), 1);
	CHECK(iov[0].iov_base == host + 0x800);
	CHECK_EQ(iov[0].iov_len, 0x1000);
	vt_iotlb_free(t);
}

VT_TEST(adjacent_entries_not_contiguous_on_host_give_two_iovecs)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[4];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x4000, PAGE, host + 4 * PAGE, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x5000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(translate_ok(t, 0x4f00, 0x200, VT_ACCESS_READ, iov, 4), 2);
	CHECK(iov[0].iov_base == host + 4 * PAGE + 0xf00);
	CHECK_EQ(iov[0].iov_len, 0x100);
	CHECK(iov[1].iov_base == host);
	CHECK_EQ(iov[1].iov_len, 0x100);
	vt_iotlb_free(t);
}

VT_TEST(too_many_iovecs_gives_enobufs_with_prefix_filled)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[2];
	struct vt_as_fault fault = { .addr = 7 };
	unsigned int n = 99;
	REQUIRE(t);

	/* Three pages, each mapped backwards so that none merges. */
	for (unsigned int i = 0; i < 3; i++)
		REQUIRE_EQ(vt_iotlb_update(t, 0x10000 + i * PAGE, PAGE, host + (8 - i) * PAGE,
					   VT_IOTLB_PERM_RW),
			   0);
	CHECK_EQ(vt_iotlb_translate(t, 0x10000, 3 * PAGE, VT_ACCESS_READ, iov, 2, &n, &fault),
		 -ENOBUFS);
	CHECK_EQ(n, 2);
	CHECK(iov[0].iov_base == host + 8 * PAGE);
	CHECK_EQ(iov[0].iov_len, PAGE);
	CHECK(iov[1].iov_base == host + 7 * PAGE);
	CHECK_EQ(iov[1].iov_len, PAGE);
	CHECK_EQ(fault.addr, 7);
	/* A miss that comes before the iovecs run out is still a miss. */
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x10000 + PAGE, 1), 0);
	CHECK_EQ(translate_fails(t, 0x10000, 3 * PAGE, VT_ACCESS_READ, -EFAULT), 0x10000 + PAGE);
	vt_iotlb_free(t);
}

VT_TEST(update_in_middle_of_entry_splits_it_in_three)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[4];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, 4 * PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x11000, PAGE, host + 10 * PAGE, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(entries(t), 3);
	check_entry(t, 0x10fff, 0x10000, PAGE, host, VT_IOTLB_PERM_RW);
	check_entry(t, 0x11000, 0x11000, PAGE, host + 10 * PAGE, VT_IOTLB_PERM_RO);
	check_entry(t, 0x13fff, 0x12000, 2 * PAGE, host + 2 * PAGE, VT_IOTLB_PERM_RW);
	CHECK_EQ(translate_ok(t, 0x10000, 4 * PAGE, VT_ACCESS_READ, iov, 4), 3);
	CHECK(iov[2].iov_base == host + 2 * PAGE);
	CHECK_EQ(iov[2].iov_len, 2 * PAGE);
	vt_iotlb_free(t);
}

VT_TEST(update_covering_several_entries_replaces_them)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[4];
	REQUIRE(t);

	for (unsigned int i = 0; i < 4; i++)
		REQUIRE_EQ(vt_iotlb_update(t, 0x10000 + i * PAGE, 0x800, host + i * PAGE,
					   VT_IOTLB_PERM_RO),
			   0);
	/* From the middle of the first to the middle of the last. */
	REQUIRE_EQ(vt_iotlb_update(t, 0x10400, 3 * PAGE, host + 20 * PAGE, VT_IOTLB_PERM_WO), 0);
	CHECK_EQ(entries(t), 3);
	check_entry(t, 0x10000, 0x10000, 0x400, host, VT_IOTLB_PERM_RO);
	check_entry(t, 0x12000, 0x10400, 3 * PAGE, host + 20 * PAGE, VT_IOTLB_PERM_WO);
	check_entry(t, 0x13400, 0x13400, 0x400, host + 3 * PAGE + 0x400, VT_IOTLB_PERM_RO);
	CHECK_EQ(translate_ok(t, 0x10400, 3 * PAGE, VT_ACCESS_WRITE, iov, 4), 1);
	vt_iotlb_free(t);
}

VT_TEST(update_with_identical_translation_keeps_generation)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, 4 * PAGE, host, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_iotlb_generation(t);
	/* A repeated update (one per queue that missed) changes no byte's translation. */
	REQUIRE_EQ(vt_iotlb_update(t, 0x11000, PAGE, host + PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(vt_iotlb_generation(t), gen);
	REQUIRE_EQ(vt_iotlb_update(t, 0x11000, PAGE, host + 2 * PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK(vt_iotlb_generation(t) != gen);
	gen = vt_iotlb_generation(t);
	REQUIRE_EQ(vt_iotlb_update(t, 0x11000, PAGE, host + 2 * PAGE, VT_IOTLB_PERM_RO), 0);
	CHECK(vt_iotlb_generation(t) != gen);
	vt_iotlb_free(t);
}

VT_TEST(update_into_a_hole_keeps_generation)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_iotlb_generation(t);
	REQUIRE_EQ(vt_iotlb_update(t, 0x12000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x11000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(vt_iotlb_generation(t), gen);
	vt_iotlb_free(t);
}

VT_TEST(invalidate_trims_partially_covered_entries_at_both_ends)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x11000, PAGE, host + PAGE, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x12000, PAGE, host + 2 * PAGE, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x10c00, 0x1800), 0);
	CHECK_EQ(entries(t), 2);
	check_entry(t, 0x10000, 0x10000, 0xc00, host, VT_IOTLB_PERM_RW);
	check_entry(t, 0x12400, 0x12400, 0xc00, host + 2 * PAGE + 0x400, VT_IOTLB_PERM_RW);
	CHECK_EQ(translate_fails(t, 0x10000, 3 * PAGE, VT_ACCESS_READ, -EFAULT), 0x10c00);
	CHECK_EQ(translate_fails(t, 0x12000, PAGE, VT_ACCESS_READ, -EFAULT), 0x12000);
	vt_iotlb_free(t);
}

static void range_invalidated_whole_then_mapped_again_translates_to_its_new_host_with(
    unsigned int page_table_pages)
{
	struct vt_iotlb *t = new_with_pages(page_table_pages);
	struct vt_iotlb_entry e;
	REQUIRE(t);

	/* The DMA API's unmap + map of a reused IOVA: the entry dies and is revived in place. */
	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x11000, PAGE, host + PAGE, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x10000, PAGE), 0);
	CHECK_EQ(entries(t), 1);
	CHECK_EQ(translate_fails(t, 0x10000, 2 * PAGE, VT_ACCESS_READ, -EFAULT), 0x10000);
	CHECK_EQ(vt_iotlb_lookup(t, 0x10000, &e), -ENOENT);
	uint64_t gen = vt_iotlb_generation(t);
	/* Invalidating it again changes nothing, and bumps no generation. */
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x10000, PAGE), 0);
	CHECK_EQ(vt_iotlb_generation(t), gen);
	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host + 4 * PAGE, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(entries(t), 2);
	check_entry(t, 0x10000, 0x10000, PAGE, host + 4 * PAGE, VT_IOTLB_PERM_RO);
	CHECK_EQ(translate_fails(t, 0x10000, PAGE, VT_ACCESS_WRITE, -EACCES), 0x10000);
	/* A range that cuts the dead entry's place in two maps just what it says. */
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x10000, PAGE), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x10800, PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(entries(t), 2);
	CHECK_EQ(translate_fails(t, 0x10000, PAGE, VT_ACCESS_READ, -EFAULT), 0x10000);
	check_entry(t, 0x10800, 0x10800, PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RW);
	check_entry(t, 0x11800, 0x11800, 0x800, host + PAGE + 0x800, VT_IOTLB_PERM_RW);
	vt_iotlb_free(t);
}

/* Whole pages: in the page table, and without it in the sorted array (a dead sorted entry revived
 * in place). */
VT_TEST(range_invalidated_whole_then_mapped_again_translates_to_its_new_host)
{
	range_invalidated_whole_then_mapped_again_translates_to_its_new_host_with(0);
	range_invalidated_whole_then_mapped_again_translates_to_its_new_host_with(
	    VT_IOTLB_NO_PAGE_TABLE);
}

VT_TEST(invalidate_in_middle_of_entry_splits_it_in_two)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, 3 * PAGE, host, VT_IOTLB_PERM_RO), 0);
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x11000, 1), 0);
	CHECK_EQ(entries(t), 2);
	check_entry(t, 0x10000, 0x10000, PAGE, host, VT_IOTLB_PERM_RO);
	check_entry(t, 0x11001, 0x11001, 2 * PAGE - 1, host + PAGE + 1, VT_IOTLB_PERM_RO);
	CHECK_EQ(translate_fails(t, 0x10000, 3 * PAGE, VT_ACCESS_READ, -EFAULT), 0x11000);
	vt_iotlb_free(t);
}

VT_TEST(invalidate_of_unmapped_range_is_a_noop_without_generation_bump)
{
	struct vt_iotlb *t = new_default();
	struct vt_iotlb_stats s;
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x12000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_iotlb_generation(t);
	CHECK_EQ(vt_iotlb_invalidate(t, 0x11000, PAGE), 0);
	CHECK_EQ(vt_iotlb_invalidate(t, 0x20000, 0x100000), 0);
	CHECK_EQ(vt_iotlb_invalidate(t, 0x10000, 0), 0);
	CHECK_EQ(vt_iotlb_generation(t), gen);
	vt_iotlb_get_stats(t, &s);
	CHECK_EQ(s.entries, 2);
	CHECK_EQ(s.invalidations, 0);
	vt_iotlb_free(t);
}

VT_TEST(invalidate_bumps_generation)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_iotlb_generation(t);
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x10fff, 1), 0);
	CHECK(vt_iotlb_generation(t) != gen);
	vt_iotlb_free(t);
}

VT_TEST(invalidate_wrapping_past_top_is_overflow)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, TOP_PAGE, PAGE, host, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(vt_iotlb_invalidate(t, TOP_PAGE, PAGE + 1), -EOVERFLOW);
	CHECK_EQ(entries(t), 1);
	vt_iotlb_free(t);
}

VT_TEST(invalidate_all_removes_everything)
{
	struct vt_iotlb *t = new_default();
	struct vt_iotlb_stats s;
	REQUIRE(t);

	for (unsigned int i = 0; i < 10; i++)
		REQUIRE_EQ(vt_iotlb_update(t, i * 2 * PAGE, PAGE, host, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_iotlb_generation(t);
	vt_iotlb_invalidate_all(t);
	CHECK(vt_iotlb_generation(t) != gen);
	vt_iotlb_get_stats(t, &s);
	CHECK_EQ(s.entries, 0);
	CHECK_EQ(s.invalidations, 1);
	CHECK_EQ(translate_fails(t, 2 * PAGE, 1, VT_ACCESS_READ, -EFAULT), 2 * PAGE);
	/* The table works on after it. */
	REQUIRE_EQ(vt_iotlb_update(t, 0, PAGE, host, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(entries(t), 1);
	vt_iotlb_free(t);
}

VT_TEST(top_of_address_space_is_mappable)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[2];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, TOP_PAGE, PAGE, host, VT_IOTLB_PERM_RW), 0);
	check_entry(t, UINT64_MAX, TOP_PAGE, PAGE, host, VT_IOTLB_PERM_RW);
	CHECK_EQ(translate_ok(t, UINT64_MAX, 1, VT_ACCESS_WRITE, iov, 2), 1);
	CHECK(iov[0].iov_base == host + PAGE - 1);
	CHECK_EQ(translate_ok(t, TOP_PAGE, PAGE, VT_ACCESS_READ, iov, 2), 1);
	CHECK_EQ(iov[0].iov_len, PAGE);
	/* One byte past the top does not fit. */
	CHECK_EQ(vt_iotlb_update(t, TOP_PAGE, PAGE + 1, host, VT_IOTLB_PERM_RW), -EOVERFLOW);
	/* Trimming and splitting at the top keep the last byte. */
	REQUIRE_EQ(vt_iotlb_update(t, TOP_PAGE + 0x100, 0x100, host + 8 * PAGE, VT_IOTLB_PERM_RO),
		   0);
	CHECK_EQ(entries(t), 3);
	check_entry(t, UINT64_MAX, TOP_PAGE + 0x200, PAGE - 0x200, host + 0x200, VT_IOTLB_PERM_RW);
	REQUIRE_EQ(vt_iotlb_invalidate(t, UINT64_MAX, 1), 0);
	check_entry(t, UINT64_MAX - 1, TOP_PAGE + 0x200, PAGE - 0x201, host + 0x200,
		    VT_IOTLB_PERM_RW);
	CHECK_EQ(translate_fails(t, TOP_PAGE + 0x200, PAGE - 0x200, VT_ACCESS_READ, -EFAULT),
		 UINT64_MAX);
	vt_iotlb_free(t);
}

VT_TEST(address_zero_is_mappable)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[2];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0, PAGE, host, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(translate_ok(t, 0, 1, VT_ACCESS_READ, iov, 2), 1);
	CHECK(iov[0].iov_base == host);
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0, 1), 0);
	CHECK_EQ(translate_fails(t, 0, 2, VT_ACCESS_READ, -EFAULT), 0);
	vt_iotlb_free(t);
}

VT_TEST(full_table_with_refuse_policy_returns_enospc_unchanged)
{
	struct log_capture log_lines = { 0 };
	struct vt_log log = { .fn = capture_log, .opaque = &log_lines, .max_level = VT_LOG_DEBUG };
	struct vt_iotlb *t = new_iotlb(4, VT_IOTLB_FULL_REFUSE, &log);
	struct vt_iotlb_stats s;
	REQUIRE(t);

	for (unsigned int i = 0; i < 4; i++)
		REQUIRE_EQ(
		    vt_iotlb_update(t, i * 2 * PAGE, PAGE, host + i * PAGE, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_iotlb_generation(t);
	CHECK_EQ(vt_iotlb_update(t, 9 * PAGE, PAGE, host, VT_IOTLB_PERM_RW), -ENOSPC);
	CHECK_EQ(vt_iotlb_update(t, 10 * PAGE, PAGE, host, VT_IOTLB_PERM_RW), -ENOSPC);
	CHECK_EQ(vt_iotlb_generation(t), gen);
	for (unsigned int i = 0; i < 4; i++)
		check_entry(t, i * 2 * PAGE, i * 2 * PAGE, PAGE, host + i * PAGE, VT_IOTLB_PERM_RW);
	CHECK_EQ(translate_fails(t, 9 * PAGE, 1, VT_ACCESS_READ, -EFAULT), 9 * PAGE);
	/* One line for the episode, not one per refused update. */
	CHECK_EQ(log_lines.lines, 1);
	CHECK(strstr(log_lines.last, "full") != NULL);
	/* Replacing an entry in place needs no room. */
	CHECK_EQ(vt_iotlb_update(t, 0, PAGE, host + 10 * PAGE, VT_IOTLB_PERM_RO), 0);
	vt_iotlb_get_stats(t, &s);
	CHECK_EQ(s.entries, 4);
	CHECK_EQ(s.evictions, 0);
	vt_iotlb_free(t);
}

VT_TEST(refuse_policy_counts_the_slot_a_split_needs)
{
	struct vt_iotlb *t = new_iotlb(3, VT_IOTLB_FULL_REFUSE, &quiet);
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, 4 * PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x20000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	/* Two entries of three: a split in the middle needs four. */
	CHECK_EQ(vt_iotlb_update(t, 0x11000, PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RO), -ENOSPC);
	check_entry(t, 0x11000, 0x10000, 4 * PAGE, host, VT_IOTLB_PERM_RW);
	CHECK_EQ(entries(t), 2);
	/* Trimming one end needs only three. */
	CHECK_EQ(vt_iotlb_update(t, 0x10000, PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(entries(t), 3);
	vt_iotlb_free(t);
}

VT_TEST(full_table_with_evict_policy_evicts_and_bumps_generation)
{
	struct vt_iotlb *t = new_iotlb(4, VT_IOTLB_FULL_EVICT, &quiet);
	struct vt_iotlb_stats s;
	struct iovec iov[2];
	REQUIRE(t);

	for (unsigned int i = 0; i < 4; i++)
		REQUIRE_EQ(
		    vt_iotlb_update(t, i * 2 * PAGE, PAGE, host + i * PAGE, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_iotlb_generation(t);
	CHECK_EQ(vt_iotlb_update(t, 9 * PAGE, PAGE, host, VT_IOTLB_PERM_RW), 0);
	CHECK(vt_iotlb_generation(t) != gen);
	vt_iotlb_get_stats(t, &s);
	CHECK_EQ(s.entries, 4);
	CHECK_EQ(s.evictions, 1);
	CHECK_EQ(translate_ok(t, 9 * PAGE, PAGE, VT_ACCESS_READ, iov, 2), 1);
	/* Exactly one of the old entries went. */
	unsigned int left = 0;
	for (unsigned int i = 0; i < 4; i++) {
		struct vt_iotlb_entry e;
		left += vt_iotlb_lookup(t, i * 2 * PAGE, &e) == 0;
	}
	CHECK_EQ(left, 3);
	vt_iotlb_free(t);
}

VT_TEST(evict_policy_never_evicts_the_entry_being_split)
{
	struct vt_iotlb *t = new_iotlb(3, VT_IOTLB_FULL_EVICT, &quiet);
	struct vt_iotlb_stats s;
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x20000, 4 * PAGE, host + PAGE, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x21000, PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RO), 0);
	vt_iotlb_get_stats(t, &s);
	CHECK_EQ(s.evictions, 1);
	CHECK_EQ(translate_fails(t, 0x10000, 1, VT_ACCESS_READ, -EFAULT), 0x10000);
	check_entry(t, 0x20000, 0x20000, PAGE, host + PAGE, VT_IOTLB_PERM_RW);
	check_entry(t, 0x21000, 0x21000, PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RO);
	check_entry(t, 0x22000, 0x22000, 2 * PAGE, host + 3 * PAGE, VT_IOTLB_PERM_RW);
	vt_iotlb_free(t);
}

VT_TEST(evict_policy_drops_the_rest_of_a_split_entry_when_nothing_else_is_left)
{
	struct vt_iotlb *t = new_iotlb(1, VT_IOTLB_FULL_EVICT, &quiet);
	struct vt_iotlb_stats s;
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, 4 * PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x11000, PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RO), 0);
	vt_iotlb_get_stats(t, &s);
	CHECK_EQ(s.entries, 1);
	CHECK_EQ(s.evictions, 2);
	check_entry(t, 0x11000, 0x11000, PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RO);
	vt_iotlb_free(t);
}

VT_TEST(invalidate_splitting_an_entry_of_a_full_table_still_removes_the_range)
{
	struct vt_iotlb *t = new_iotlb(2, VT_IOTLB_FULL_REFUSE, &quiet);
	struct vt_iotlb_stats s;
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x20000, 4 * PAGE, host + PAGE, VT_IOTLB_PERM_RW), 0);
	/* No slot for the part above the hole: it goes too, which only costs a miss. */
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x21000, PAGE), 0);
	vt_iotlb_get_stats(t, &s);
	CHECK_EQ(s.entries, 2);
	CHECK_EQ(s.evictions, 1);
	check_entry(t, 0x10000, 0x10000, PAGE, host, VT_IOTLB_PERM_RW);
	check_entry(t, 0x20000, 0x20000, PAGE, host + PAGE, VT_IOTLB_PERM_RW);
	CHECK_EQ(translate_fails(t, 0x21000, 3 * PAGE, VT_ACCESS_READ, -EFAULT), 0x21000);
	vt_iotlb_free(t);
}

VT_TEST(stats_count_hits_misses_denials_and_invalidations)
{
	struct vt_iotlb *t = new_default();
	struct vt_iotlb_stats s;
	struct iovec iov[2];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RO), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x20000, PAGE, host, VT_IOTLB_PERM_RO), 0);
	translate_ok(t, 0x10000, 16, VT_ACCESS_READ, iov, 2);
	translate_ok(t, 0x10010, 16, VT_ACCESS_READ, iov, 2);
	translate_fails(t, 0x30000, 16, VT_ACCESS_READ, -EFAULT);
	translate_fails(t, 0x10000, 16, VT_ACCESS_WRITE, -EACCES);
	/* Neither a hit nor a miss: no lookup happened, or the caller's array ran out. */
	translate_fails(t, 0x10000, 16, 0, -EINVAL);
	translate_fails(t, UINT64_MAX, 16, VT_ACCESS_READ, -EOVERFLOW);
	unsigned int n;
	CHECK_EQ(vt_iotlb_translate(t, 0x10000, 16, VT_ACCESS_READ, iov, 0, &n, NULL), -ENOBUFS);
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x10000, 1), 0);
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x50000, 1), 0); /* removes nothing */
	vt_iotlb_get_stats(t, &s);
	CHECK_EQ(s.hits, 2);
	CHECK_EQ(s.misses, 1);
	CHECK_EQ(s.denied, 1);
	CHECK_EQ(s.evictions, 0);
	CHECK_EQ(s.invalidations, 1);
	CHECK_EQ(s.entries, 2);
	vt_iotlb_free(t);
}

VT_TEST(lookup_returns_the_containing_entry)
{
	struct vt_iotlb *t = new_default();
	struct vt_iotlb_entry e = { 0 };
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, 0x100, host + 0x40, VT_IOTLB_PERM_WO), 0);
	check_entry(t, 0x10000, 0x10000, 0x100, host + 0x40, VT_IOTLB_PERM_WO);
	check_entry(t, 0x100ff, 0x10000, 0x100, host + 0x40, VT_IOTLB_PERM_WO);
	CHECK_EQ(vt_iotlb_lookup(t, 0x10100, &e), -ENOENT);
	CHECK_EQ(vt_iotlb_lookup(t, 0xffff, &e), -ENOENT);
	vt_iotlb_free(t);
}

/* Entry i of the tables below: 16 bytes at IOVA 0x100000 + 32 * i, then a 16-byte hole. */
#define SPACED_IOVA(i) (0x100000 + 32 * (uint64_t)(i))
#define SPACED_HVA(i)  (host + (i) % 4096 * 16)

/* Maps entries [first, end); returns how many updates failed. */
static unsigned int fill_spaced(struct vt_iotlb *t, unsigned int first, unsigned int end)
{
	unsigned int bad = 0;

	for (unsigned int i = first; i < end; i++)
		bad += vt_iotlb_update(t, SPACED_IOVA(i), 16, SPACED_HVA(i), VT_IOTLB_PERM_RW) != 0;
	return bad;
}

/* How many of entries [first, end) lookup gets wrong at their first or last byte or hole. */
static unsigned int spaced_wrong(struct vt_iotlb *t, unsigned int first, unsigned int end)
{
	unsigned int bad = 0;
	struct vt_iotlb_entry e;

	for (unsigned int i = first; i < end; i++) {
		for (uint64_t off = 0; off < 16; off += 15) {
			e = (struct vt_iotlb_entry){ 0 };
			bad += vt_iotlb_lookup(t, SPACED_IOVA(i) + off, &e) != 0 ||
			       e.iova != SPACED_IOVA(i) || e.size != 16 || e.hva != SPACED_HVA(i);
		}
		bad += vt_iotlb_lookup(t, SPACED_IOVA(i) + 16, &e) != -ENOENT;
	}
	return bad;
}

VT_TEST(lookup_finds_every_entry_of_a_table_with_several_index_levels)
{
	/* Over 16^4 entries: a lookup goes down four index levels to a block of 16 starts. */
	const unsigned int n = 70000;
	struct vt_iotlb *t = new_iotlb(n, VT_IOTLB_FULL_REFUSE, NULL);
	struct vt_iotlb_entry e;
	struct iovec iov[2];
	REQUIRE(t);

	REQUIRE_EQ(fill_spaced(t, 0, n), 0);
	CHECK_EQ(spaced_wrong(t, 0, n), 0);
	CHECK_EQ(vt_iotlb_lookup(t, SPACED_IOVA(0) - 1, &e), -ENOENT);
	CHECK_EQ(vt_iotlb_lookup(t, 0, &e), -ENOENT);
	CHECK_EQ(vt_iotlb_lookup(t, UINT64_MAX, &e), -ENOENT);
	CHECK_EQ(translate_ok(t, SPACED_IOVA(n - 1), 16, VT_ACCESS_RW, iov, 2), 1);
	CHECK_EQ(translate_fails(t, SPACED_IOVA(n / 2) + 8, 16, VT_ACCESS_READ, -EFAULT),
		 SPACED_IOVA(n / 2) + 16);

	/* Cuts at the front and in the middle move every entry after them. */
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0, SPACED_IOVA(1000)), 0);
	REQUIRE_EQ(vt_iotlb_invalidate(t, SPACED_IOVA(40000) + 8, 32 * 3000), 0);
	CHECK_EQ(vt_iotlb_lookup(t, SPACED_IOVA(999), &e), -ENOENT);
	CHECK_EQ(spaced_wrong(t, 1000, 40000), 0);
	check_entry(t, SPACED_IOVA(40000), SPACED_IOVA(40000), 8, SPACED_HVA(40000),
		    VT_IOTLB_PERM_RW);
	CHECK_EQ(vt_iotlb_lookup(t, SPACED_IOVA(42999), &e), -ENOENT);
	check_entry(t, SPACED_IOVA(43000) + 15, SPACED_IOVA(43000) + 8, 8, SPACED_HVA(43000) + 8,
		    VT_IOTLB_PERM_RW);
	CHECK_EQ(spaced_wrong(t, 43001, n), 0);
	vt_iotlb_free(t);
}

VT_TEST(lookup_stays_right_as_a_table_shrinks_below_an_index_level_and_grows_back)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	/* 17 entries need an index level, 16 do not: changes made without it, then it is back. */
	REQUIRE_EQ(fill_spaced(t, 0, 17), 0);
	REQUIRE_EQ(vt_iotlb_invalidate(t, SPACED_IOVA(0), 16), 0);
	REQUIRE_EQ(fill_spaced(t, 17, 18), 0);
	CHECK_EQ(spaced_wrong(t, 1, 18), 0);
	REQUIRE_EQ(fill_spaced(t, 0, 1), 0);
	CHECK_EQ(spaced_wrong(t, 0, 18), 0);

	/* The same through invalidate_all, with more levels to lose and regain. */
	REQUIRE_EQ(fill_spaced(t, 18, 5000), 0);
	vt_iotlb_invalidate_all(t);
	REQUIRE_EQ(fill_spaced(t, 100, 120), 0);
	CHECK_EQ(spaced_wrong(t, 100, 120), 0);
	REQUIRE_EQ(fill_spaced(t, 0, 100), 0);
	REQUIRE_EQ(fill_spaced(t, 120, 300), 0);
	CHECK_EQ(spaced_wrong(t, 0, 300), 0);
	vt_iotlb_free(t);
}

VT_TEST(iotlb_as_translates_through_the_address_space_ops)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[2];
	struct vt_as_fault fault;
	unsigned int n;
	uint8_t buf[4];
	REQUIRE(t);

	struct vt_as as = vt_iotlb_as(t);
	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(vt_as_translate(&as, 0x10010, 8, VT_ACCESS_READ, iov, 2, &n, NULL), 0);
	CHECK_EQ(n, 1);
	CHECK(iov[0].iov_base == host + 0x10);
	CHECK_EQ(vt_as_translate(&as, 0x20000, 8, VT_ACCESS_READ, iov, 2, &n, &fault), -EFAULT);
	CHECK_EQ(fault.addr, 0x20000);

	CHECK_EQ(vt_as_write(&as, 0x10020, "abcd", 4, NULL), 0);
	CHECK(memcmp(host + 0x20, "abcd", 4) == 0);
	CHECK_EQ(vt_as_read(&as, 0x10021, buf, 3, NULL), 0);
	CHECK(memcmp(buf, "bcd", 3) == 0);

	uint64_t gen = vt_as_generation(&as);
	CHECK_EQ(gen, vt_iotlb_generation(t));
	vt_iotlb_invalidate_all(t);
	CHECK(vt_as_generation(&as) != gen);
	vt_iotlb_free(t);
}

VT_TEST(iotlb_as_extent_is_the_entry_with_its_permission_and_generation)
{
	struct vt_iotlb *t = new_default();
	struct vt_as_extent e;
	uint64_t gen = 0;
	REQUIRE(t);

	struct vt_as as = vt_iotlb_as(t);
	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, 2 * PAGE, host, VT_IOTLB_PERM_RO), 0);
	REQUIRE_EQ(vt_as_extent(&as, 0x10123, &e, &gen), 0);
	CHECK_EQ(e.addr, 0x10000);
	CHECK_EQ(e.last, 0x11fff);
	CHECK(e.hva == (uint64_t)(uintptr_t)host);
	CHECK_EQ(e.perm, VT_ACCESS_READ);
	CHECK_EQ(gen, vt_iotlb_generation(t));
	CHECK_EQ(vt_as_extent(&as, 0x12000, &e, &gen), -EFAULT);
	vt_iotlb_free(t);
}

/*
 * Lookups start at the entry that answered last and its neighbours: walking the table up, down
 * and in jumps, each extent is still the entry holding the address, a dead entry (unmapped in
 * place) and a hole between entries still fault, whichever entry answered before.
 */
static void extents_walked_up_down_and_in_jumps_are_each_the_entry_holding_the_address_with(
    unsigned int page_table_pages)
{
	enum { N = 40 };
	struct vt_iotlb *t = new_with_pages(page_table_pages);
	struct vt_as_extent e;
	uint64_t gen;
	REQUIRE(t);
	struct vt_as as = vt_iotlb_as(t);
	/* Entry i at 0x100000 + i * 2 pages, one page long: a hole of a page after each. */
	for (unsigned int i = 0; i < N; i++)
		REQUIRE_EQ(vt_iotlb_update(t, 0x100000 + (uint64_t)i * 2 * PAGE, PAGE,
					   host + (i % 64) * PAGE, VT_IOTLB_PERM_RW),
			   0);
	/* Every fifth entry unmapped: it stays in the table, dead. */
	for (unsigned int i = 0; i < N; i += 5)
		REQUIRE_EQ(vt_iotlb_invalidate(t, 0x100000 + (uint64_t)i * 2 * PAGE, PAGE), 0);
	unsigned int order[3 * N];
	for (unsigned int k = 0; k < N; k++) {
		order[k] = k;			 /* up */
		order[N + k] = N - 1 - k;	 /* down */
		order[2 * N + k] = (k * 17) % N; /* jumps */
	}
	for (unsigned int k = 0; k < 3 * N; k++) {
		unsigned int i = order[k];
		uint64_t start = 0x100000 + (uint64_t)i * 2 * PAGE;
		if (i % 5 == 0) {
			CHECK_EQ(vt_as_extent(&as, start + 8, &e, &gen), -EFAULT);
		} else {
			REQUIRE_EQ(vt_as_extent(&as, start + 8, &e, &gen), 0);
			CHECK_EQ(e.addr, start);
			CHECK_EQ(e.last, start + PAGE - 1);
			CHECK(e.hva == (uint64_t)(uintptr_t)(host + (i % 64) * PAGE));
		}
		/* The hole above the entry, reached from the entry just found. */
		CHECK_EQ(vt_as_extent(&as, start + PAGE, &e, &gen), -EFAULT);
		struct iovec iov[1];
		if (i % 5) {
			CHECK_EQ(translate_ok(t, start + 16, 8, VT_ACCESS_READ, iov, 1), 1);
			CHECK(iov[0].iov_base == host + (i % 64) * PAGE + 16);
		}
	}
	vt_iotlb_free(t);
}

/* Whole pages: in the page table, and without it in the sorted array (the sorted array's hint
 * walk). */
VT_TEST(extents_walked_up_down_and_in_jumps_are_each_the_entry_holding_the_address)
{
	extents_walked_up_down_and_in_jumps_are_each_the_entry_holding_the_address_with(0);
	extents_walked_up_down_and_in_jumps_are_each_the_entry_holding_the_address_with(
	    VT_IOTLB_NO_PAGE_TABLE);
}

VT_TEST(unchanged_since_vouches_for_ranges_that_no_change_touched)
{
	struct vt_iotlb *t = new_default();
	uint64_t now = 0;
	REQUIRE(t);

	struct vt_as as = vt_iotlb_as(t);
	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x20000, PAGE, host + PAGE, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_as_generation(&as);
	/* Nothing changed at all. */
	CHECK_EQ(vt_as_unchanged_since(&as, gen, 0x10000, PAGE, &now), 0);
	CHECK_EQ(now, gen);
	/* A change elsewhere: the range is vouched for at the new generation. */
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x20000, PAGE), 0);
	CHECK_EQ(vt_as_unchanged_since(&as, gen, 0x10000, PAGE, &now), 0);
	CHECK_EQ(now, vt_as_generation(&as));
	CHECK(now != gen);
	/* A change touching the range's last byte, or its first: not vouched for. */
	CHECK_EQ(vt_as_unchanged_since(&as, gen, 0x1f000, 0x1001, &now), -ESTALE);
	CHECK_EQ(vt_as_unchanged_since(&as, gen, 0x20fff, 0x10, &now), -ESTALE);
	/* A moved translation is a change too. */
	uint64_t before = vt_as_generation(&as);
	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host + 2 * PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(vt_as_unchanged_since(&as, before, 0x10800, 1, &now), -ESTALE);
	vt_iotlb_free(t);
}

VT_TEST(unchanged_since_gives_up_on_changes_it_no_longer_remembers)
{
	struct vt_iotlb *t = new_default();
	uint64_t now = 0;
	REQUIRE(t);

	struct vt_as as = vt_iotlb_as(t);
	REQUIRE_EQ(vt_iotlb_update(t, 0x10000, PAGE, host, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_as_generation(&as);
	for (unsigned int i = 0; i < 15; i++) {
		REQUIRE_EQ(vt_iotlb_update(t, 0x40000, PAGE, host + PAGE, VT_IOTLB_PERM_RW), 0);
		REQUIRE_EQ(vt_iotlb_invalidate(t, 0x40000, PAGE), 0);
	}
	/*
	 * 15 invalidations of another page are remembered (the updates into a hole change
	 * nothing; the log's 16th slot is the next change's, written before it is published)...
	 */
	CHECK_EQ(vt_as_unchanged_since(&as, gen, 0x10000, PAGE, &now), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x40000, PAGE, host + PAGE, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x40000, PAGE), 0);
	/* ...the 16th pushes the oldest out: from there it cannot tell. */
	CHECK_EQ(vt_as_unchanged_since(&as, gen, 0x10000, PAGE, &now), -ESTALE);
	vt_iotlb_invalidate_all(t);
	CHECK_EQ(vt_as_unchanged_since(&as, now, 0x10000, PAGE, &now), -ESTALE);
	vt_iotlb_free(t);
}

/* ---------------------------------------------------------------- update bursts */

/* Entry @i of the bursts below: a page at 0x100000 + 2 pages * i (a hole after each). */
#define BURST_IOVA(i) (0x100000 + 2 * PAGE * (uint64_t)(i))

/* What vt_iotlb_update_burst must leave alone when every entry is made. */
#define ERROR_UNTOUCHED 12345

VT_TEST(update_burst_makes_every_entry_with_its_host_and_permission)
{
	static const unsigned int perms[4] = { VT_IOTLB_PERM_RW, VT_IOTLB_PERM_RO, VT_IOTLB_PERM_WO,
					       VT_IOTLB_PERM_RW };
	struct vt_iotlb *t = new_default();
	struct vt_iotlb_entry burst[4];
	struct iovec iov[2];
	int error = ERROR_UNTOUCHED;
	REQUIRE(t);

	for (unsigned int i = 0; i < 4; i++)
		burst[i] = (struct vt_iotlb_entry){ BURST_IOVA(i), PAGE - 16 * i,
						    host + (7 - i) * PAGE, perms[i] };
	CHECK_EQ(vt_iotlb_update_burst(t, burst, 4, &error), 4);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	CHECK_EQ(entries(t), 4);
	for (unsigned int i = 0; i < 4; i++) {
		check_entry(t, BURST_IOVA(i), BURST_IOVA(i), PAGE - 16 * i, host + (7 - i) * PAGE,
			    perms[i]);
		unsigned int access =
		    perms[i] == VT_IOTLB_PERM_WO ? VT_ACCESS_WRITE : VT_ACCESS_READ;
		CHECK_EQ(translate_ok(t, BURST_IOVA(i) + 8, 8, access, iov, 2), 1);
		CHECK(iov[0].iov_base == host + (7 - i) * PAGE + 8);
	}
	/* Each with its own permission, and nothing past its size. */
	CHECK_EQ(translate_fails(t, BURST_IOVA(1), 1, VT_ACCESS_WRITE, -EACCES), BURST_IOVA(1));
	CHECK_EQ(translate_fails(t, BURST_IOVA(2), 1, VT_ACCESS_READ, -EACCES), BURST_IOVA(2));
	CHECK_EQ(translate_fails(t, BURST_IOVA(3), PAGE, VT_ACCESS_READ, -EFAULT),
		 BURST_IOVA(3) + PAGE - 48);
	vt_iotlb_free(t);
}

VT_TEST(update_burst_applies_its_entries_in_order)
{
	struct vt_iotlb *t = new_default();
	int error = ERROR_UNTOUCHED;
	REQUIRE(t);

	/* The second cuts the first in three, as the same two updates one after the other do. */
	const struct vt_iotlb_entry burst[3] = {
		{ 0x10000, 4 * PAGE, host, VT_IOTLB_PERM_RW },
		{ 0x11000, PAGE, host + 10 * PAGE, VT_IOTLB_PERM_RO },
		{ 0x13000, PAGE, host + 20 * PAGE, VT_IOTLB_PERM_WO },
	};
	CHECK_EQ(vt_iotlb_update_burst(t, burst, 3, &error), 3);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	CHECK_EQ(entries(t), 4);
	check_entry(t, 0x10000, 0x10000, PAGE, host, VT_IOTLB_PERM_RW);
	check_entry(t, 0x11000, 0x11000, PAGE, host + 10 * PAGE, VT_IOTLB_PERM_RO);
	check_entry(t, 0x12000, 0x12000, PAGE, host + 2 * PAGE, VT_IOTLB_PERM_RW);
	check_entry(t, 0x13000, 0x13000, PAGE, host + 20 * PAGE, VT_IOTLB_PERM_WO);
	vt_iotlb_free(t);
}

/*
 * A burst of five whose entry k is one vt_iotlb_update refuses: it makes the k before it and
 * stops there with that error. Entry k's place held a translation first, which it leaves as it
 * was; the entries after it are not made.
 */
VT_TEST(update_burst_stops_at_an_invalid_entry_with_its_error)
{
	enum { COUNT = 5 };
	static const struct {
		const char *what;
		int error;
	} cases[] = {
		{ "size 0", -EINVAL },	      { "permission 0", -EINVAL },
		{ "permission 4", -EINVAL },  { "NULL host", -EINVAL },
		{ "wrapping host", -EINVAL }, { "wrapping iova", -EOVERFLOW },
	};

	for (unsigned int c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		unsigned int k = c % COUNT; /* the first entry, the last, and between */
		struct vt_iotlb *t = new_default();
		struct vt_iotlb_entry burst[COUNT];
		int error = ERROR_UNTOUCHED;
		REQUIRE(t);
		for (unsigned int i = 0; i < COUNT; i++)
			burst[i] = (struct vt_iotlb_entry){ BURST_IOVA(i), PAGE, host + i * PAGE,
							    VT_IOTLB_PERM_RW };
		struct vt_iotlb_entry *bad = &burst[k];
		switch (c) {
		case 0:
			bad->size = 0;
			break;
		case 1:
			bad->perm = 0;
			break;
		case 2:
			bad->perm = 4;
			break;
		case 3:
			bad->hva = NULL;
			break;
		case 4:
			bad->hva = (void *)(UINTPTR_MAX - 16);
			break;
		default:
			bad->iova = TOP_PAGE;
			bad->size = 2 * PAGE;
			break;
		}
		REQUIRE_EQ(vt_iotlb_update(t, bad->iova, PAGE, host + 40 * PAGE, VT_IOTLB_PERM_RO),
			   0);
		uint64_t gen = vt_iotlb_generation(t);

		unsigned int made = vt_iotlb_update_burst(t, burst, COUNT, &error);
		if (made != k || error != cases[c].error)
			VT_FAIL_AT("%s at entry %u: %u made, error %d; expected %u, %d",
				   cases[c].what, k, made, error, k, cases[c].error);
		for (unsigned int i = 0; i < k; i++)
			check_entry(t, BURST_IOVA(i), BURST_IOVA(i), PAGE, host + i * PAGE,
				    VT_IOTLB_PERM_RW);
		check_entry(t, bad->iova, bad->iova, PAGE, host + 40 * PAGE, VT_IOTLB_PERM_RO);
		for (unsigned int i = k + 1; i < COUNT; i++)
			CHECK_EQ(translate_fails(t, BURST_IOVA(i), 1, VT_ACCESS_READ, -EFAULT),
				 BURST_IOVA(i));
		CHECK_EQ(entries(t), k + 1);
		CHECK_EQ(vt_iotlb_generation(t), gen);
		vt_iotlb_free(t);
	}
}

static void
update_burst_refills_invalidated_ranges_with_their_new_hosts_with(unsigned int page_table_pages)
{
	enum { COUNT = 8 };
	struct vt_iotlb *t = new_with_pages(page_table_pages);
	struct vt_iotlb_entry burst[COUNT];
	struct iovec iov[2];
	int error = ERROR_UNTOUCHED;
	REQUIRE(t);

	/* The DMA API's unmaps then a burst of maps over the same IOVAs: every entry revived. */
	for (unsigned int i = 0; i < COUNT; i++)
		REQUIRE_EQ(
		    vt_iotlb_update(t, BURST_IOVA(i), PAGE, host + i * PAGE, VT_IOTLB_PERM_RW), 0);
	for (unsigned int i = 0; i < COUNT; i++)
		REQUIRE_EQ(vt_iotlb_invalidate(t, BURST_IOVA(i), PAGE), 0);
	for (unsigned int i = 0; i < COUNT; i++)
		burst[i] = (struct vt_iotlb_entry){ BURST_IOVA(i), PAGE, host + (32 + i) * PAGE,
						    i % 2 ? VT_IOTLB_PERM_RO : VT_IOTLB_PERM_RW };
	CHECK_EQ(vt_iotlb_update_burst(t, burst, COUNT, &error), COUNT);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	CHECK_EQ(entries(t), COUNT);
	for (unsigned int i = 0; i < COUNT; i++) {
		check_entry(t, BURST_IOVA(i), BURST_IOVA(i), PAGE, host + (32 + i) * PAGE,
			    burst[i].perm);
		CHECK_EQ(translate_ok(t, BURST_IOVA(i) + 100, 10, VT_ACCESS_READ, iov, 2), 1);
		CHECK(iov[0].iov_base == host + (32 + i) * PAGE + 100);
		if (i % 2)
			CHECK_EQ(translate_fails(t, BURST_IOVA(i), 1, VT_ACCESS_WRITE, -EACCES),
				 BURST_IOVA(i));
	}
	vt_iotlb_free(t);
}

/* Whole pages: in the page table, and without it in the sorted array (dead sorted entries revived
 * in place). */
VT_TEST(update_burst_refills_invalidated_ranges_with_their_new_hosts)
{
	update_burst_refills_invalidated_ranges_with_their_new_hosts_with(0);
	update_burst_refills_invalidated_ranges_with_their_new_hosts_with(VT_IOTLB_NO_PAGE_TABLE);
}

VT_TEST(update_burst_of_no_entries_makes_none_and_leaves_error_alone)
{
	struct vt_iotlb *t = new_default();
	const struct vt_iotlb_entry one = { 0x10000, PAGE, host, VT_IOTLB_PERM_RW };
	int error = ERROR_UNTOUCHED;
	REQUIRE(t);

	uint64_t gen = vt_iotlb_generation(t);
	CHECK_EQ(vt_iotlb_update_burst(t, &one, 0, &error), 0);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	CHECK_EQ(entries(t), 0);
	CHECK_EQ(vt_iotlb_generation(t), gen);
	vt_iotlb_free(t);
}

VT_TEST(update_burst_into_a_full_table_with_refuse_policy_stops_at_the_entry_that_does_not_fit)
{
	struct vt_iotlb *t = new_iotlb(4, VT_IOTLB_FULL_REFUSE, &quiet);
	struct vt_iotlb_entry burst[4];
	int error = ERROR_UNTOUCHED;
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, BURST_IOVA(10), PAGE, host, VT_IOTLB_PERM_RW), 0);
	/* The first replaces that entry in place (no room needed), the next two fill the table. */
	burst[0] = (struct vt_iotlb_entry){ BURST_IOVA(10), PAGE, host + PAGE, VT_IOTLB_PERM_RO };
	for (unsigned int i = 1; i < 4; i++)
		burst[i] = (struct vt_iotlb_entry){ BURST_IOVA(i), PAGE, host + (i + 1) * PAGE,
						    VT_IOTLB_PERM_RW };
	REQUIRE_EQ(vt_iotlb_update(t, BURST_IOVA(20), PAGE, host, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(vt_iotlb_update_burst(t, burst, 4, &error), 3);
	CHECK_EQ(error, -ENOSPC);
	CHECK_EQ(entries(t), 4);
	check_entry(t, BURST_IOVA(10), BURST_IOVA(10), PAGE, host + PAGE, VT_IOTLB_PERM_RO);
	for (unsigned int i = 1; i < 3; i++)
		check_entry(t, BURST_IOVA(i), BURST_IOVA(i), PAGE, host + (i + 1) * PAGE,
			    VT_IOTLB_PERM_RW);
	CHECK_EQ(translate_fails(t, BURST_IOVA(3), 1, VT_ACCESS_READ, -EFAULT), BURST_IOVA(3));
	/* Once there is room, the rest of the burst goes in. */
	REQUIRE_EQ(vt_iotlb_invalidate(t, BURST_IOVA(20), PAGE), 0);
	error = ERROR_UNTOUCHED;
	CHECK_EQ(vt_iotlb_update_burst(t, &burst[3], 1, &error), 1);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	check_entry(t, BURST_IOVA(3), BURST_IOVA(3), PAGE, host + 4 * PAGE, VT_IOTLB_PERM_RW);
	vt_iotlb_free(t);
}

/*
 * vt_iotlb_generation "bumps on every invalidation, eviction and update that changes an existing
 * translation": a burst that maps fresh ranges, refills dead ones or repeats a live translation
 * changes none, and keeps it; one entry that moves a live translation bumps it.
 */
VT_TEST(update_burst_bumps_generation_only_when_it_changes_a_live_translation)
{
	struct vt_iotlb *t = new_default();
	int error = ERROR_UNTOUCHED;
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, BURST_IOVA(0), PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, BURST_IOVA(1), PAGE, host + PAGE, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_invalidate(t, BURST_IOVA(0), PAGE), 0);
	uint64_t gen = vt_iotlb_generation(t);
	const struct vt_iotlb_entry keeps[4] = {
		{ BURST_IOVA(0), PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RO }, /* a dead entry */
		{ BURST_IOVA(1), PAGE, host + PAGE, VT_IOTLB_PERM_RW },	    /* the same again */
		{ BURST_IOVA(2), PAGE, host + 9 * PAGE, VT_IOTLB_PERM_RW }, /* fresh */
		{ BURST_IOVA(3), 0x800, host + 10 * PAGE, VT_IOTLB_PERM_WO },
	};
	CHECK_EQ(vt_iotlb_update_burst(t, keeps, 4, &error), 4);
	CHECK_EQ(vt_iotlb_generation(t), gen);

	const struct vt_iotlb_entry moves[2] = {
		{ BURST_IOVA(4), PAGE, host + 11 * PAGE, VT_IOTLB_PERM_RW }, /* fresh */
		{ BURST_IOVA(1), PAGE, host + 12 * PAGE, VT_IOTLB_PERM_RW }, /* moved */
	};
	CHECK_EQ(vt_iotlb_update_burst(t, moves, 2, &error), 2);
	CHECK(vt_iotlb_generation(t) != gen);
	gen = vt_iotlb_generation(t);
	/* A permission change is a change too. */
	const struct vt_iotlb_entry narrows = { BURST_IOVA(4), PAGE, host + 11 * PAGE,
						VT_IOTLB_PERM_RO };
	CHECK_EQ(vt_iotlb_update_burst(t, &narrows, 1, &error), 1);
	CHECK(vt_iotlb_generation(t) != gen);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	CHECK_EQ(entries(t), 5);
	vt_iotlb_free(t);
}

/* ------------------------------------------------------------------ the page table */

static unsigned int page_table_entries(struct vt_iotlb *t)
{
	struct vt_iotlb_stats s;
	vt_iotlb_get_stats(t, &s);
	return s.page_table_entries;
}

/* IOVA of page @n of a window at 1 GiB, where the first update places the page table. */
#define PT_IOVA(n) (0x40000000ull + (uint64_t)(n)*PAGE)

/* Pages [first, first + count) onto the host pages of the same numbers, read-write. */
static int map_pages(struct vt_iotlb *t, unsigned int first, unsigned int count)
{
	for (unsigned int i = first; i < first + count; i++) {
		int ret = vt_iotlb_update(t, PT_IOVA(i), PAGE, host + i * PAGE, VT_IOTLB_PERM_RW);
		if (ret < 0)
			return ret;
	}
	return 0;
}

VT_TEST(a_whole_page_goes_to_the_page_table_and_anything_else_to_the_sorted_array)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[2];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(0), PAGE, host + PAGE, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(page_table_entries(t), 1);
	/* Part of a page; a page onto a host range that is not a page; more than a page. */
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(1) + 0x40, 0x80, host, VT_IOTLB_PERM_RO), 0);
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(2), PAGE, host + 0x10, VT_IOTLB_PERM_RO), 0);
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(4), 2 * PAGE, host, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(page_table_entries(t), 1);
	CHECK_EQ(entries(t), 4);

	CHECK_EQ(translate_ok(t, PT_IOVA(0) + 0x50, 0x10, VT_ACCESS_READ, iov, 2), 1);
	CHECK(iov[0].iov_base == host + PAGE + 0x50);
	CHECK_EQ(iov[0].iov_len, 0x10);
	check_entry(t, PT_IOVA(0) + 0xfff, PT_IOVA(0), PAGE, host + PAGE, VT_IOTLB_PERM_RO);
	check_entry(t, PT_IOVA(2) + 0xfff, PT_IOVA(2), PAGE, host + 0x10, VT_IOTLB_PERM_RO);
	CHECK_EQ(translate_fails(t, PT_IOVA(0), 1, VT_ACCESS_WRITE, -EACCES), PT_IOVA(0));
	/* The page ends where its entry does: the bytes of the next before its entry are not
	 * mapped. */
	CHECK_EQ(translate_fails(t, PT_IOVA(0) + 0xff0, 0x20, VT_ACCESS_READ, -EFAULT), PT_IOVA(1));
	vt_iotlb_free(t);
}

VT_TEST(a_page_entry_and_a_sorted_entry_next_to_it_in_both_spaces_merge_into_one_iovec)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[2];
	REQUIRE(t);

	/* A page, then the next two pages: one entry in each table. */
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(0), PAGE, host, VT_IOTLB_PERM_RW), 0);
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(1), 2 * PAGE, host + PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(page_table_entries(t), 1);
	CHECK_EQ(translate_ok(t, PT_IOVA(0) + 0x800, 0x800 + 2 * PAGE, VT_ACCESS_RW, iov, 2), 1);
	CHECK(iov[0].iov_base == host + 0x800);
	CHECK_EQ(iov[0].iov_len, 0x800 + 2 * PAGE);
	vt_iotlb_free(t);
}

VT_TEST(invalidating_the_middle_of_a_page_entry_keeps_both_sides_and_bumps_generation)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(0), PAGE, host, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_iotlb_generation(t);
	REQUIRE_EQ(vt_iotlb_invalidate(t, PT_IOVA(0) + 0x100, 0x100), 0);
	CHECK(vt_iotlb_generation(t) != gen);
	/* Cut: the sorted array holds both sides now. */
	CHECK_EQ(page_table_entries(t), 0);
	CHECK_EQ(entries(t), 2);
	check_entry(t, PT_IOVA(0), PT_IOVA(0), 0x100, host, VT_IOTLB_PERM_RW);
	check_entry(t, PT_IOVA(0) + 0x200, PT_IOVA(0) + 0x200, PAGE - 0x200, host + 0x200,
		    VT_IOTLB_PERM_RW);
	CHECK_EQ(translate_fails(t, PT_IOVA(0) + 0xff, 2, VT_ACCESS_READ, -EFAULT),
		 PT_IOVA(0) + 0x100);
	vt_iotlb_free(t);
}

VT_TEST(an_update_over_part_of_a_page_entry_replaces_just_those_bytes)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov[4];
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(0), PAGE, host, VT_IOTLB_PERM_RW), 0);
	uint64_t gen = vt_iotlb_generation(t);
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(0) + 0x100, 0x100, host + 8 * PAGE, VT_IOTLB_PERM_RO),
		   0);
	CHECK(vt_iotlb_generation(t) != gen);
	CHECK_EQ(entries(t), 3);
	CHECK_EQ(translate_ok(t, PT_IOVA(0), PAGE, VT_ACCESS_READ, iov, 4), 3);
	CHECK(iov[0].iov_base == host && iov[0].iov_len == 0x100);
	CHECK(iov[1].iov_base == host + 8 * PAGE && iov[1].iov_len == 0x100);
	CHECK(iov[2].iov_base == host + 0x200 && iov[2].iov_len == PAGE - 0x200);
	CHECK_EQ(translate_fails(t, PT_IOVA(0) + 0x100, 1, VT_ACCESS_WRITE, -EACCES),
		 PT_IOVA(0) + 0x100);
	vt_iotlb_free(t);
}

VT_TEST(a_page_entry_updated_again_the_same_stays_and_keeps_generation)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(2), PAGE, host, VT_IOTLB_PERM_RO), 0);
	uint64_t gen = vt_iotlb_generation(t);
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(2), PAGE, host, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(vt_iotlb_generation(t), gen);
	CHECK_EQ(page_table_entries(t), 1);
	/* Another host is a change, made in the sorted array. */
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(2), PAGE, host + PAGE, VT_IOTLB_PERM_RO), 0);
	CHECK(vt_iotlb_generation(t) != gen);
	check_entry(t, PT_IOVA(2), PT_IOVA(2), PAGE, host + PAGE, VT_IOTLB_PERM_RO);
	CHECK_EQ(entries(t), 1);
	vt_iotlb_free(t);
}

VT_TEST(a_page_emptied_by_invalidation_is_filled_again_without_a_generation_bump)
{
	struct vt_iotlb *t = new_default();
	struct iovec iov;
	REQUIRE(t);

	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(3), PAGE, host, VT_IOTLB_PERM_WO), 0);
	REQUIRE_EQ(vt_iotlb_invalidate(t, PT_IOVA(3), PAGE), 0);
	CHECK_EQ(page_table_entries(t), 0);
	CHECK_EQ(translate_fails(t, PT_IOVA(3), 1, VT_ACCESS_WRITE, -EFAULT), PT_IOVA(3));
	uint64_t gen = vt_iotlb_generation(t);
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(3), PAGE, host + PAGE, VT_IOTLB_PERM_WO), 0);
	CHECK_EQ(vt_iotlb_generation(t), gen);
	CHECK_EQ(page_table_entries(t), 1);
	CHECK_EQ(translate_ok(t, PT_IOVA(3) + 0x40, 0x40, VT_ACCESS_WRITE, &iov, 1), 1);
	CHECK(iov.iov_base == host + PAGE + 0x40);
	vt_iotlb_free(t);
}

VT_TEST(a_page_outside_the_window_the_first_update_placed_goes_to_the_sorted_array)
{
	struct vt_iotlb_params p = { .page_table_pages = 4 };
	struct vt_iotlb *t = NULL;
	REQUIRE_EQ(vt_iotlb_new(&p, &t), 0);

	/* Places the window on pages 0-3 of the 1 GiB mark (aligned to its 16 KiB). */
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(1), PAGE, host, VT_IOTLB_PERM_RO), 0);
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(3), PAGE, host + PAGE, VT_IOTLB_PERM_RO), 0);
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(4), PAGE, host + 2 * PAGE, VT_IOTLB_PERM_RO), 0);
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(0) - PAGE, PAGE, host + 3 * PAGE, VT_IOTLB_PERM_RO),
		   0);
	CHECK_EQ(page_table_entries(t), 2);
	CHECK_EQ(entries(t), 4);
	check_entry(t, PT_IOVA(4), PT_IOVA(4), PAGE, host + 2 * PAGE, VT_IOTLB_PERM_RO);
	check_entry(t, PT_IOVA(0) - 1, PT_IOVA(0) - PAGE, PAGE, host + 3 * PAGE, VT_IOTLB_PERM_RO);
	/* An invalidation across the window's edges reaches both tables. */
	REQUIRE_EQ(vt_iotlb_invalidate(t, PT_IOVA(0) - PAGE, 6 * PAGE), 0);
	CHECK_EQ(entries(t), 0);
	vt_iotlb_free(t);
}

VT_TEST(invalidate_all_empties_the_page_table_too)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(map_pages(t, 0, 8), 0);
	CHECK_EQ(page_table_entries(t), 8);
	uint64_t gen = vt_iotlb_generation(t);
	vt_iotlb_invalidate_all(t);
	CHECK(vt_iotlb_generation(t) != gen);
	CHECK_EQ(entries(t), 0);
	CHECK_EQ(translate_fails(t, PT_IOVA(5), 1, VT_ACCESS_READ, -EFAULT), PT_IOVA(5));
	vt_iotlb_free(t);
}

VT_TEST(an_extent_from_the_page_table_is_its_entry_under_the_current_generation)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);
	struct vt_as as = vt_iotlb_as(t);
	struct vt_as_extent e;
	uint64_t gen = 0;

	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(1), PAGE, host + 2 * PAGE, VT_IOTLB_PERM_WO), 0);
	REQUIRE_EQ(vt_as_extent(&as, PT_IOVA(1) + 0x20, &e, &gen), 0);
	CHECK_EQ(e.addr, PT_IOVA(1));
	CHECK_EQ(e.last, PT_IOVA(1) + PAGE - 1);
	CHECK_EQ(e.hva, (uint64_t)(uintptr_t)(host + 2 * PAGE));
	CHECK_EQ(e.perm, VT_ACCESS_WRITE);
	CHECK_EQ(gen, vt_iotlb_generation(t));
	CHECK_EQ(vt_as_extent(&as, PT_IOVA(2), &e, &gen), -EFAULT);
	vt_iotlb_free(t);
}

/* A sorted array of two entries, full, and two page entries. */
static struct vt_iotlb *full_with_pages(enum vt_iotlb_full_policy policy, const struct vt_log *log)
{
	struct vt_iotlb_params p = { .max_entries = 2, .full_policy = policy, .log = log };
	struct vt_iotlb *t = NULL;

	if (vt_iotlb_new(&p, &t) != 0)
		return NULL;
	if (vt_iotlb_update(t, PT_IOVA(0), PAGE, host, VT_IOTLB_PERM_RW) != 0 ||
	    vt_iotlb_update(t, PT_IOVA(1), PAGE, host + PAGE, VT_IOTLB_PERM_RW) != 0 ||
	    vt_iotlb_update(t, PT_IOVA(4) + 1, 10, host, VT_IOTLB_PERM_RO) != 0 ||
	    vt_iotlb_update(t, PT_IOVA(5) + 1, 10, host, VT_IOTLB_PERM_RO) != 0) {
		vt_iotlb_free(t);
		return NULL;
	}
	return t;
}

VT_TEST(a_page_entry_mapped_again_elsewhere_is_rewritten_in_place_however_full_the_sorted_array)
{
	for (int evict = 0; evict < 2; evict++) {
		struct log_capture seen = { 0 };
		struct vt_log log = { .fn = capture_log, .opaque = &seen };
		struct vt_iotlb *t =
		    full_with_pages(evict ? VT_IOTLB_FULL_EVICT : VT_IOTLB_FULL_REFUSE, &log);
		REQUIRE(t);
		CHECK_EQ(page_table_entries(t), 2);
		CHECK_EQ(entries(t), 4);
		uint64_t gen = vt_iotlb_generation(t);
		CHECK_EQ(vt_iotlb_update(t, PT_IOVA(0), PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RO),
			 0);
		CHECK(vt_iotlb_generation(t) != gen);
		check_entry(t, PT_IOVA(0), PT_IOVA(0), PAGE, host + 8 * PAGE, VT_IOTLB_PERM_RO);
		/* Nothing evicted, nothing refused, nothing logged. */
		CHECK_EQ(entries(t), 4);
		CHECK_EQ(seen.lines, 0);
		check_entry(t, PT_IOVA(4) + 1, PT_IOVA(4) + 1, 10, host, VT_IOTLB_PERM_RO);
		check_entry(t, PT_IOVA(5) + 1, PT_IOVA(5) + 1, 10, host, VT_IOTLB_PERM_RO);
		vt_iotlb_free(t);
	}
}

/*
 * Cutting a page entry needs it in the sorted array; when that is full and refuses, the entry
 * goes whole (a cache may drop a translation: the device misses and asks again), quietly, as the
 * invalidation succeeds.
 */
VT_TEST(invalidating_part_of_a_page_entry_when_the_sorted_array_is_full_and_refuses_drops_it_whole)
{
	struct log_capture seen = { 0 };
	struct vt_log log = { .fn = capture_log, .opaque = &seen };
	struct vt_iotlb *t = full_with_pages(VT_IOTLB_FULL_REFUSE, &log);
	REQUIRE(t);
	struct vt_as as = vt_iotlb_as(t);
	uint64_t gen = vt_iotlb_generation(t), now;

	CHECK_EQ(vt_iotlb_invalidate(t, PT_IOVA(1) + 0x100, 0x100), 0);
	CHECK(vt_iotlb_generation(t) != gen);
	CHECK_EQ(translate_fails(t, PT_IOVA(1), 1, VT_ACCESS_READ, -EFAULT), PT_IOVA(1));
	CHECK_EQ(translate_fails(t, PT_IOVA(1) + 0x200, 1, VT_ACCESS_READ, -EFAULT),
		 PT_IOVA(1) + 0x200);
	CHECK_EQ(entries(t), 3);
	CHECK_EQ(seen.lines, 0);
	/* The whole page changed, and only it. */
	CHECK_EQ(vt_as_unchanged_since(&as, gen, PT_IOVA(1) + PAGE - 1, 1, &now), -ESTALE);
	CHECK_EQ(vt_as_unchanged_since(&as, gen, PT_IOVA(0), PAGE, &now), 0);
	vt_iotlb_free(t);
}

VT_TEST(invalidating_part_of_a_page_entry_when_the_sorted_array_is_full_and_evicts_keeps_the_rest)
{
	struct vt_iotlb *t = full_with_pages(VT_IOTLB_FULL_EVICT, &quiet);
	REQUIRE(t);

	CHECK_EQ(vt_iotlb_invalidate(t, PT_IOVA(1) + 0x100, 0x100), 0);
	check_entry(t, PT_IOVA(1), PT_IOVA(1), 0x100, host + PAGE, VT_IOTLB_PERM_RW);
	check_entry(t, PT_IOVA(1) + 0x200, PT_IOVA(1) + 0x200, PAGE - 0x200, host + PAGE + 0x200,
		    VT_IOTLB_PERM_RW);
	CHECK_EQ(translate_fails(t, PT_IOVA(1) + 0x100, 1, VT_ACCESS_READ, -EFAULT),
		 PT_IOVA(1) + 0x100);
	CHECK_EQ(page_table_entries(t), 1);
	vt_iotlb_free(t);
}

/* Pages an update covers whole are emptied as its sorted entry is made, not moved one by one. */
VT_TEST(an_update_over_page_entries_replaces_them_and_bumps_generation_only_for_a_change)
{
	struct vt_iotlb *t = new_default();
	REQUIRE(t);

	REQUIRE_EQ(map_pages(t, 0, 4), 0);
	uint64_t gen = vt_iotlb_generation(t);
	/* The same translation as one entry: nothing changes for a reader. */
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(0), 4 * PAGE, host, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(vt_iotlb_generation(t), gen);
	CHECK_EQ(page_table_entries(t), 0);
	CHECK_EQ(entries(t), 1);
	check_entry(t, PT_IOVA(3), PT_IOVA(0), 4 * PAGE, host, VT_IOTLB_PERM_RW);

	REQUIRE_EQ(map_pages(t, 4, 4), 0);
	/* Over two of them, elsewhere: a change. */
	REQUIRE_EQ(vt_iotlb_update(t, PT_IOVA(5), 2 * PAGE, host + 16 * PAGE, VT_IOTLB_PERM_RO), 0);
	CHECK(vt_iotlb_generation(t) != gen);
	CHECK_EQ(page_table_entries(t), 2);
	check_entry(t, PT_IOVA(6), PT_IOVA(5), 2 * PAGE, host + 16 * PAGE, VT_IOTLB_PERM_RO);
	check_entry(t, PT_IOVA(7), PT_IOVA(7), PAGE, host + 7 * PAGE, VT_IOTLB_PERM_RW);
	vt_iotlb_free(t);
}

/* ---------------------------------------------------------------- the page table as readers walk
 * it */

/* vt_as_page_entry: a page table entry where the page table maps a page, 0 everywhere else. */
VT_TEST(page_entry_answers_for_pages_of_the_page_table_only)
{
	struct vt_iotlb *t = new_with_pages(16); /* a window of 16 pages, 0x10000 bytes */
	REQUIRE(t);
	struct vt_as as = vt_iotlb_as(t);
	struct vt_as_extent e;
	uint64_t gen;
	REQUIRE(as.page_table != NULL);
	const uint64_t ro = (uint64_t)(uintptr_t)(host + PAGE) | VT_ACCESS_READ;

	/* No window before the first whole page. */
	CHECK_EQ(vt_as_page_entry(&as, 0x12000), 0);
	REQUIRE_EQ(vt_iotlb_update(t, 0x12000, PAGE, host + PAGE, VT_IOTLB_PERM_RO), 0);
	/* The window is [0x10000, 0x20000): the page, its first and last byte. */
	CHECK_EQ(vt_as_page_entry(&as, 0x12000), ro);
	CHECK_EQ(vt_as_page_entry(&as, 0x12fff), ro);
	/* In the window but not mapped; below it; just past it; the ends of the space. */
	CHECK_EQ(vt_as_page_entry(&as, 0x13000), 0);
	CHECK_EQ(vt_as_page_entry(&as, 0x10000 - 1), 0);
	CHECK_EQ(vt_as_page_entry(&as, 0x20000), 0);
	CHECK_EQ(vt_as_page_entry(&as, 0), 0);
	CHECK_EQ(vt_as_page_entry(&as, UINT64_MAX), 0);
	/* A whole page past the window is the sorted array's: mapped, but not a page entry. */
	REQUIRE_EQ(vt_iotlb_update(t, 0x20000, PAGE, host + 2 * PAGE, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(vt_as_page_entry(&as, 0x20000), 0);
	CHECK_EQ(vt_as_extent(&as, 0x20000, &e, &gen), 0);

	/* Part of the page invalidated: the rest moves to the sorted array, out of the walk. */
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x12000, 16), 0);
	CHECK_EQ(vt_as_page_entry(&as, 0x12100), 0);
	CHECK_EQ(vt_as_extent(&as, 0x12100, &e, &gen), 0);
	CHECK(e.addr == 0x12010 && e.last == 0x12fff);
	CHECK(e.hva == (uint64_t)(uintptr_t)(host + PAGE + 16));
	/* A page invalidated whole: nothing. */
	REQUIRE_EQ(vt_iotlb_update(t, 0x14000, PAGE, host + 3 * PAGE, VT_IOTLB_PERM_RW), 0);
	CHECK_EQ(vt_as_page_entry(&as, 0x14000),
		 (uint64_t)(uintptr_t)(host + 3 * PAGE) | VT_ACCESS_RW);
	REQUIRE_EQ(vt_iotlb_invalidate(t, 0x14000, PAGE), 0);
	CHECK_EQ(vt_as_page_entry(&as, 0x14000), 0);
	vt_iotlb_free(t);
}

/* Without a page table (an IOTLB without one, or the memory table) every walk answers 0. */
VT_TEST(page_entry_is_0_where_there_is_no_page_table)
{
	struct vt_iotlb *t = new_with_pages(VT_IOTLB_NO_PAGE_TABLE);
	REQUIRE(t);
	struct vt_as as = vt_iotlb_as(t);
	REQUIRE_EQ(vt_iotlb_update(t, 0x12000, PAGE, host + PAGE, VT_IOTLB_PERM_RO), 0);
	CHECK_EQ(vt_as_page_entry(&as, 0x12000), 0);
	vt_iotlb_free(t);

	struct vt_memtable *table = vt_memtable_new(NULL);
	const struct vt_mem_region r = { .gpa = 0x12000, .size = PAGE, .hva = host };
	REQUIRE(table && vt_memtable_add(table, &r) == 0);
	struct vt_as mas = vt_memtable_as(table);
	CHECK(mas.page_table == NULL);
	CHECK_EQ(vt_as_page_entry(&mas, 0x12000), 0);
	vt_memtable_free(table);
}
