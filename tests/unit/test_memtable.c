/* SPDX-License-Identifier: MIT */
/* The memory table: regions, lookups and translation of driver-physical addresses. */
#include <errno.h>
#include <stdlib.h>

#include <virtue/memtable.h>
#include <virtue/shm.h>

#include "harness.h"

static uint8_t backing[1 << 20];

static struct vt_mem_region region(uint64_t gpa, uint64_t size, uint64_t host_off)
{
	return (struct vt_mem_region){ .gpa = gpa,
				       .size = size,
				       .hva = backing + host_off,
				       .uaddr = 0x7f0000000000ULL + host_off };
}

static int logged_errors;

static void count_errors(void *opaque, enum vt_log_level level, const char *msg)
{
	(void)opaque;
	(void)msg;
	logged_errors += level == VT_LOG_ERROR;
}

static const struct vt_log quiet_log = { .fn = count_errors, .max_level = VT_LOG_DEBUG };

static struct vt_memtable *table_with(const struct vt_mem_region *r, unsigned int n)
{
	struct vt_memtable *t = vt_memtable_new(&quiet_log);
	for (unsigned int i = 0; t && i < n; i++)
		if (vt_memtable_add(t, &r[i]) < 0)
			return NULL;
	return t;
}

VT_TEST(translate_inside_one_region_gives_one_iovec)
{
	struct vt_mem_region r = region(0x10000, 0x1000, 0);
	struct vt_memtable *t = table_with(&r, 1);
	REQUIRE(t);
	struct iovec iov[4];
	unsigned int n = 9;
	CHECK_EQ(vt_memtable_translate(t, 0x10010, 0x20, VT_ACCESS_READ, iov, 4, &n, NULL), 0);
	REQUIRE_EQ(n, 1);
	CHECK(iov[0].iov_base == backing + 0x10);
	CHECK_EQ(iov[0].iov_len, 0x20);
	/* Last byte of the region exactly. */
	CHECK_EQ(vt_memtable_translate(t, 0x10fff, 1, VT_ACCESS_WRITE, iov, 4, &n, NULL), 0);
	CHECK(iov[0].iov_base == backing + 0xfff);
	vt_memtable_free(t);
}

VT_TEST(buffer_across_host_contiguous_regions_merges)
{
	struct vt_mem_region r[2] = { region(0x0, 0x1000, 0), region(0x1000, 0x1000, 0x1000) };
	struct vt_memtable *t = table_with(r, 2);
	REQUIRE(t);
	struct iovec iov[4];
	unsigned int n = 0;
	CHECK_EQ(vt_memtable_translate(t, 0xff0, 0x20, VT_ACCESS_RW, iov, 4, &n, NULL), 0);
	REQUIRE_EQ(n, 1);
	CHECK(iov[0].iov_base == backing + 0xff0);
	CHECK_EQ(iov[0].iov_len, 0x20);
	vt_memtable_free(t);
}

VT_TEST(buffer_across_adjacent_regions_elsewhere_on_the_host_splits)
{
	struct vt_mem_region r[2] = { region(0x0, 0x1000, 0x8000), region(0x1000, 0x1000, 0x2000) };
	struct vt_memtable *t = table_with(r, 2);
	REQUIRE(t);
	struct iovec iov[4];
	unsigned int n = 0;
	CHECK_EQ(vt_memtable_translate(t, 0xff0, 0x20, VT_ACCESS_READ, iov, 4, &n, NULL), 0);
	REQUIRE_EQ(n, 2);
	CHECK(iov[0].iov_base == backing + 0x8ff0);
	CHECK_EQ(iov[0].iov_len, 0x10);
	CHECK(iov[1].iov_base == backing + 0x2000);
	CHECK_EQ(iov[1].iov_len, 0x10);
	/* One iovec is not enough: -ENOBUFS with the prefix filled. */
	CHECK_EQ(vt_memtable_translate(t, 0xff0, 0x20, VT_ACCESS_READ, iov, 1, &n, NULL), -ENOBUFS);
	CHECK_EQ(n, 1);
	CHECK_EQ(iov[0].iov_len, 0x10);
	vt_memtable_free(t);
}

VT_TEST(unmapped_bytes_fault_at_the_first_missing_address)
{
	struct vt_mem_region r[2] = { region(0x0, 0x1000, 0), region(0x2000, 0x1000, 0x2000) };
	struct vt_memtable *t = table_with(r, 2);
	REQUIRE(t);
	struct iovec iov[4];
	unsigned int n;
	struct vt_as_fault f = { 0 };
	CHECK_EQ(vt_memtable_translate(t, 0xf00, 0x1200, VT_ACCESS_WRITE, iov, 4, &n, &f), -EFAULT);
	CHECK(f.addr == 0x1000);
	CHECK_EQ(f.access, VT_ACCESS_WRITE);
	CHECK_EQ(vt_memtable_translate(t, 0x5000, 1, VT_ACCESS_READ, iov, 4, &n, &f), -EFAULT);
	CHECK(f.addr == 0x5000);
	vt_memtable_free(t);
}

VT_TEST(zero_length_overflow_and_bad_access)
{
	struct vt_mem_region r = region(0x0, 0x1000, 0);
	struct vt_memtable *t = table_with(&r, 1);
	REQUIRE(t);
	struct iovec iov[2];
	unsigned int n = 7;
	/* Zero length touches nothing, even at an unmapped address. */
	CHECK_EQ(vt_memtable_translate(t, 0x99999, 0, VT_ACCESS_READ, iov, 2, &n, NULL), 0);
	CHECK_EQ(n, 0);
	CHECK_EQ(vt_memtable_translate(t, UINT64_MAX - 4, 16, VT_ACCESS_READ, iov, 2, &n, NULL),
		 -EOVERFLOW);
	CHECK_EQ(vt_memtable_translate(t, 0, 16, 0, iov, 2, &n, NULL), -EINVAL);
	CHECK_EQ(vt_memtable_translate(t, 0, 16, 4, iov, 2, &n, NULL), -EINVAL);
	vt_memtable_free(t);
}

VT_TEST(overlapping_empty_and_wrapping_regions_are_refused)
{
	struct vt_mem_region r = region(0x1000, 0x1000, 0);
	struct vt_memtable *t = table_with(&r, 1);
	REQUIRE(t);
	struct vt_mem_region bad[] = {
		region(0x1800, 0x1000, 0), /* overlaps the end */
		region(0x0800, 0x1000, 0), /* overlaps the start */
		region(0x1100, 0x10, 0),   /* inside */
		region(0x0, 0x4000, 0),	   /* around */
	};
	logged_errors = 0;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ(vt_memtable_add(t, &bad[i]), -EEXIST);
	/* Each refusal says why, once. */
	CHECK_EQ(logged_errors, 4);
	struct vt_mem_region empty = region(0x9000, 0, 0);
	CHECK_EQ(vt_memtable_add(t, &empty), -EINVAL);
	struct vt_mem_region wrap = region(UINT64_MAX - 0xff, 0x1000, 0);
	CHECK_EQ(vt_memtable_add(t, &wrap), -EINVAL);
	/* Touching regions are fine, including the very top of the address space. */
	struct vt_mem_region touch = region(0x2000, 0x10, 0);
	CHECK_EQ(vt_memtable_add(t, &touch), 0);
	struct vt_mem_region top = region(UINT64_MAX - 0xfff, 0x1000, 0);
	CHECK_EQ(vt_memtable_add(t, &top), 0);
	CHECK_EQ(vt_memtable_count(t), 3);
	vt_memtable_free(t);
}

VT_TEST(remove_needs_the_exact_region_and_bumps_generation)
{
	struct vt_mem_region r[2] = { region(0x0, 0x1000, 0), region(0x4000, 0x1000, 0x1000) };
	struct vt_memtable *t = table_with(r, 2);
	REQUIRE(t);
	uint64_t gen = vt_memtable_generation(t);
	CHECK_EQ(vt_memtable_remove(t, 0x4000, 0x800), -ENOENT);
	CHECK_EQ(vt_memtable_remove(t, 0x4800, 0x800), -ENOENT);
	CHECK(vt_memtable_generation(t) == gen);
	CHECK_EQ(vt_memtable_remove(t, 0x4000, 0x1000), 0);
	CHECK(vt_memtable_generation(t) != gen);
	CHECK(vt_memtable_find(t, 0x4000) == NULL);
	CHECK(vt_memtable_find(t, 0x10) != NULL);
	/* The freed range can be added again, at a different host address. */
	struct vt_mem_region again = region(0x4000, 0x1000, 0x3000);
	CHECK_EQ(vt_memtable_add(t, &again), 0);
	CHECK(vt_memtable_find(t, 0x4000)->hva == backing + 0x3000);
	vt_memtable_clear(t);
	CHECK_EQ(vt_memtable_count(t), 0);
	vt_memtable_free(t);
}

VT_TEST(holds_509_regions_and_refuses_the_510th)
{
	struct vt_memtable *t = table_with(NULL, 0);
	REQUIRE(t);
	/* Added in a scrambled order so that insertion has to keep them sorted. */
	for (unsigned int k = 0; k < VT_MEMTABLE_MAX_REGIONS; k++) {
		unsigned int i = (k * 263) % VT_MEMTABLE_MAX_REGIONS;
		struct vt_mem_region r = region((uint64_t)i * 0x10000, 0x1000, i * 0x800);
		REQUIRE_EQ(vt_memtable_add(t, &r), 0);
	}
	CHECK_EQ(vt_memtable_count(t), VT_MEMTABLE_MAX_REGIONS);
	struct vt_mem_region extra = region(0x10000000, 0x1000, 0);
	CHECK_EQ(vt_memtable_add(t, &extra), -ENOSPC);
	/* Every region answers for its own bytes and the gaps fault, in any lookup order. */
	uint64_t seed = vt_test_seed();
	for (unsigned int k = 0; k < 20000; k++) {
		unsigned int i = (unsigned int)(vt_test_rand(&seed) % VT_MEMTABLE_MAX_REGIONS);
		uint64_t off = vt_test_rand(&seed) % 0x2000;
		uint64_t gpa = (uint64_t)i * 0x10000 + off;
		struct iovec iov;
		unsigned int n;
		int ret = vt_memtable_translate(t, gpa, 1, VT_ACCESS_READ, &iov, 1, &n, NULL);
		if (off < 0x1000) {
			if (ret != 0 || iov.iov_base != backing + i * 0x800 + off)
				VT_FAIL_AT("gpa 0x%llx wrong", (unsigned long long)gpa);
		} else if (ret != -EFAULT) {
			VT_FAIL_AT("gap 0x%llx translated", (unsigned long long)gpa);
		}
	}
	vt_memtable_free(t);
}

/* Two regions whose driver addresses are in the other order than their guest-physical ones. */
static struct vt_memtable *crossed_pair(void)
{
	struct vt_mem_region r[2] = { region(0x0, 0x1000, 0x4000),
				      region(0x10000, 0x1000, 0x1000) };
	return table_with(r, 2);
}

VT_TEST(uaddr_converts_within_one_region_only)
{
	struct vt_memtable *t = crossed_pair();
	REQUIRE(t);
	void *hva = NULL;
	CHECK_EQ(vt_memtable_uaddr_to_hva(t, 0x7f0000004010ULL, 0x10, &hva), 0);
	CHECK(hva == backing + 0x4010);
	CHECK_EQ(vt_memtable_uaddr_to_hva(t, 0x7f0000001ff0ULL, 0x10, &hva), 0);
	CHECK(hva == backing + 0x1ff0);
	/* Runs past the end of its region. */
	CHECK_EQ(vt_memtable_uaddr_to_hva(t, 0x7f0000001ff0ULL, 0x20, &hva), -EFAULT);
	CHECK_EQ(vt_memtable_uaddr_to_hva(t, 0x7f0000003000ULL, 1, &hva), -EFAULT);
	CHECK_EQ(vt_memtable_uaddr_to_hva(t, UINT64_MAX, 2, &hva), -EOVERFLOW);
	vt_memtable_free(t);
}

/* The region itself, for a caller that converts many addresses of one region (an IOTLB burst). */
VT_TEST(find_uaddr_returns_the_region_holding_the_whole_range)
{
	struct vt_memtable *t = crossed_pair();
	REQUIRE(t);
	int err = 0;
	const struct vt_mem_region *r = vt_memtable_find_uaddr(t, 0x7f0000004010ULL, 0x10, &err);
	REQUIRE(r != NULL);
	CHECK_EQ(r->gpa, 0x0);
	CHECK(r->hva == backing + 0x4000);
	r = vt_memtable_find_uaddr(t, 0x7f0000001ff0ULL, 0x10, &err);
	REQUIRE(r != NULL);
	CHECK_EQ(r->gpa, 0x10000);
	/* Past the end of its region, between regions, and wrapping: none, and why. */
	CHECK(vt_memtable_find_uaddr(t, 0x7f0000001ff0ULL, 0x20, &err) == NULL);
	CHECK_EQ(err, -EFAULT);
	err = 0;
	CHECK(vt_memtable_find_uaddr(t, 0x7f0000003000ULL, 1, &err) == NULL);
	CHECK_EQ(err, -EFAULT);
	CHECK(vt_memtable_find_uaddr(t, UINT64_MAX, 2, &err) == NULL);
	CHECK_EQ(err, -EOVERFLOW);
	vt_memtable_free(t);
}

/* The last region a uaddr hit is remembered; a removal must not leave it answering. */
VT_TEST(a_uaddr_of_a_removed_region_faults_and_the_others_still_convert)
{
	struct vt_memtable *t = crossed_pair();
	REQUIRE(t);
	void *hva = NULL;
	/* Twice: the second answer comes from the remembered region. */
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(vt_memtable_uaddr_to_hva(t, 0x7f0000004010ULL, 0x10, &hva), 0);
		CHECK(hva == backing + 0x4010);
	}
	REQUIRE_EQ(vt_memtable_remove(t, 0x0, 0x1000), 0);
	/* Its slot now holds the other region, which does not hold this address. */
	CHECK_EQ(vt_memtable_uaddr_to_hva(t, 0x7f0000004010ULL, 0x10, &hva), -EFAULT);
	CHECK_EQ(vt_memtable_uaddr_to_hva(t, 0x7f0000001010ULL, 0x10, &hva), 0);
	CHECK(hva == backing + 0x1010);
	vt_memtable_free(t);
}

/* Two memfd regions of a shm, at driver-physical 1 MiB and 4 MiB. */
static int two_region_shm(struct vt_shm **shm, const struct vt_shm_region **a,
			  const struct vt_shm_region **b)
{
	int ret = vt_shm_new(shm);
	if (ret == 0)
		ret = vt_shm_add_memfd(*shm, 0x10000, 0x100000, a);
	if (ret == 0)
		ret = vt_shm_add_memfd(*shm, 0x10000, 0x400000, b);
	return ret;
}

VT_TEST(add_shm_shows_each_memfd_region_at_the_drivers_own_address)
{
	struct vt_shm *shm = NULL;
	const struct vt_shm_region *a, *b;
	REQUIRE_EQ(two_region_shm(&shm, &a, &b), 0);
	struct vt_memtable *t = vt_memtable_new(&quiet_log);
	REQUIRE(t);
	REQUIRE_EQ(vt_memtable_add_shm(t, shm), 0);
	CHECK_EQ(vt_memtable_count(t), 2);
	struct iovec iov;
	unsigned int n = 0;
	CHECK_EQ(vt_memtable_translate(t, 0x100123, 1, VT_ACCESS_RW, &iov, 1, &n, NULL), 0);
	CHECK(n == 1 && iov.iov_base == (uint8_t *)a->hva + 0x123);
	CHECK_EQ(vt_memtable_translate(t, 0x40ffff, 1, VT_ACCESS_RW, &iov, 1, &n, NULL), 0);
	CHECK(n == 1 && iov.iov_base == (uint8_t *)b->hva + 0xffff);
	/* uaddr is the same pointer: the device is this process. */
	void *hva = NULL;
	CHECK_EQ(vt_memtable_uaddr_to_hva(t, (uint64_t)(uintptr_t)b->hva + 8, 1, &hva), 0);
	CHECK(hva == (uint8_t *)b->hva + 8);
	vt_memtable_free(t);
	vt_shm_free(shm);
}

VT_TEST(add_shm_leaves_out_caller_memory)
{
	struct vt_shm *shm = NULL;
	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_host(shm, backing, 0x1000, 0x0, NULL), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 0x10000, 0x100000, NULL), 0);
	struct vt_memtable *t = vt_memtable_new(&quiet_log);
	REQUIRE(t);
	CHECK_EQ(vt_memtable_add_shm(t, shm), 0);
	CHECK_EQ(vt_memtable_count(t), 1);
	CHECK(vt_memtable_find(t, 0x0) == NULL);
	CHECK(vt_memtable_find(t, 0x100000) != NULL);
	vt_memtable_free(t);
	vt_shm_free(shm);
}

VT_TEST(add_shm_of_an_empty_shm_succeeds_and_adds_nothing)
{
	struct vt_shm *shm = NULL;
	REQUIRE_EQ(vt_shm_new(&shm), 0);
	struct vt_memtable *t = vt_memtable_new(&quiet_log);
	REQUIRE(t);
	uint64_t gen = vt_memtable_generation(t);
	CHECK_EQ(vt_memtable_add_shm(t, shm), 0);
	CHECK_EQ(vt_memtable_count(t), 0);
	CHECK(vt_memtable_generation(t) == gen);
	vt_memtable_free(t);
	vt_shm_free(shm);
}

VT_TEST(add_shm_that_fails_takes_back_the_regions_it_added)
{
	struct vt_shm *shm = NULL;
	const struct vt_shm_region *a, *b;
	REQUIRE_EQ(two_region_shm(&shm, &a, &b), 0);
	/* Already present where the second shm region would go. */
	struct vt_mem_region mine = region(0x400000, 0x1000, 0);
	struct vt_memtable *t = table_with(&mine, 1);
	REQUIRE(t);
	logged_errors = 0;
	CHECK_EQ(vt_memtable_add_shm(t, shm), -EEXIST);
	CHECK_EQ(logged_errors, 1);
	CHECK_EQ(vt_memtable_count(t), 1);
	CHECK(vt_memtable_find(t, 0x100000) == NULL);
	CHECK(vt_memtable_find(t, 0x400000)->hva == backing);
	vt_memtable_free(t);
	vt_shm_free(shm);
}
