/* SPDX-License-Identifier: MIT */
/*
 * Driver-side shared memory: memfd regions another process can map, caller memory, the rules on
 * overlapping regions, pointer to driver-physical address conversion, and the allocator.
 */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <virtue/shm.h>

#include "harness.h"

static uint64_t page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

VT_TEST(memfd_region_is_seen_by_a_second_mapping)
{
	struct vt_shm *shm;
	const struct vt_shm_region *r;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x100000, &r), 0);
	CHECK(r->fd >= 0);
	CHECK_EQ(r->gpa, 0x100000);
	/* As a device in another process would map it. */
	uint8_t *other =
	    mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, (off_t)r->fd_offset);
	REQUIRE(other != MAP_FAILED);
	CHECK(other != (uint8_t *)r->hva);
	memcpy((uint8_t *)r->hva + 100, "driver", 6);
	CHECK(memcmp(other + 100, "driver", 6) == 0);
	memcpy(other + 200, "device", 6);
	CHECK(memcmp((uint8_t *)r->hva + 200, "device", 6) == 0);
	munmap(other, r->size);
	vt_shm_free(shm);
}

VT_TEST(memfd_size_rounds_up_to_the_page_size)
{
	struct vt_shm *shm;
	const struct vt_shm_region *r;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 100, 0, &r), 0);
	CHECK_EQ(r->size, page_size());
	CHECK_EQ(vt_shm_add_memfd(shm, 0, 1 << 30, NULL), -EINVAL);
	vt_shm_free(shm);
}

VT_TEST(overlapping_driver_physical_ranges_are_refused)
{
	struct vt_shm *shm;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x100000, NULL), 0);
	CHECK_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x100000 + 0x8000, NULL), -EEXIST);
	CHECK_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x100000 - 0x8000, NULL), -EEXIST);
	CHECK_EQ(vt_shm_add_memfd(shm, 2 << 20, 0, NULL), -EEXIST);  /* covers it */
	CHECK_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x110000, NULL), 0); /* adjacent is fine */
	CHECK_EQ(vt_shm_count(shm), 2);
	vt_shm_free(shm);
}

VT_TEST(registering_host_memory_twice_is_refused)
{
	struct vt_shm *shm;
	static uint8_t memory[8192];

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_host(shm, memory, 4096, 0x1000, NULL), 0);
	/* Another driver-physical address for the same bytes would give a pointer two. */
	CHECK_EQ(vt_shm_add_host(shm, memory + 2048, 4096, 0x100000, NULL), -EEXIST);
	CHECK_EQ(vt_shm_add_host(shm, memory + 4096, 4096, 0x100000, NULL), 0);
	vt_shm_free(shm);
}

VT_TEST(regions_beyond_the_maximum_are_refused)
{
	struct vt_shm *shm;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	for (unsigned int i = 0; i < VT_SHM_MAX_REGIONS; i++)
		REQUIRE_EQ(vt_shm_add_memfd(shm, 4096, (uint64_t)i << 20, NULL), 0);
	CHECK_EQ(vt_shm_add_memfd(shm, 4096, 1ULL << 40, NULL), -ENOSPC);
	CHECK_EQ(vt_shm_count(shm), VT_SHM_MAX_REGIONS);
	CHECK(vt_shm_region(shm, VT_SHM_MAX_REGIONS) == NULL);
	vt_shm_free(shm);
}

VT_TEST(empty_or_wrapping_regions_are_refused)
{
	struct vt_shm *shm;
	static uint8_t memory[4096];

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	CHECK_EQ(vt_shm_add_host(shm, memory, 0, 0, NULL), -EINVAL);
	CHECK_EQ(vt_shm_add_host(shm, NULL, 4096, 0, NULL), -EINVAL);
	CHECK_EQ(vt_shm_add_host(shm, memory, 4096, UINT64_MAX - 100, NULL), -EINVAL);
	CHECK_EQ(vt_shm_add_memfd(shm, 4096, UINT64_MAX - 100, NULL), -EINVAL);
	CHECK_EQ(vt_shm_count(shm), 0);
	vt_shm_free(shm);
}

VT_TEST(host_region_has_no_fd)
{
	struct vt_shm *shm;
	const struct vt_shm_region *r;
	static uint8_t memory[4096];

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_host(shm, memory, sizeof(memory), 0x5000, &r), 0);
	CHECK_EQ(r->fd, -1);
	CHECK(r->hva == memory);
	CHECK(vt_shm_region(shm, 0) == r);
	vt_shm_free(shm);
}

VT_TEST(gpa_of_a_pointer_is_its_offset_in_the_region)
{
	struct vt_shm *shm;
	const struct vt_shm_region *a, *b;
	uint64_t gpa;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x100000, &a), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x900000, &b), 0);
	CHECK_EQ(vt_shm_gpa(shm, (uint8_t *)a->hva + 123, 10, &gpa), 0);
	CHECK_EQ(gpa, 0x100000 + 123);
	CHECK_EQ(vt_shm_gpa(shm, (uint8_t *)b->hva + b->size - 1, 1, &gpa), 0);
	CHECK_EQ(gpa, 0x900000 + (1 << 16) - 1);
	CHECK_EQ(vt_shm_gpa(shm, b->hva, b->size, &gpa), 0);
	vt_shm_free(shm);
}

VT_TEST(gpa_of_a_range_leaving_its_region_is_efault)
{
	struct vt_shm *shm;
	const struct vt_shm_region *r;
	uint64_t gpa;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x100000, &r), 0);
	CHECK_EQ(vt_shm_gpa(shm, (uint8_t *)r->hva + r->size - 4, 5, &gpa), -EFAULT);
	CHECK_EQ(vt_shm_gpa(shm, (uint8_t *)r->hva + r->size, 1, &gpa), -EFAULT);
	vt_shm_free(shm);
}

VT_TEST(find_returns_the_region_of_a_pointer_or_null)
{
	struct vt_shm *shm;
	const struct vt_shm_region *a, *b;
	static uint8_t host[8192];
	int local = 0;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	CHECK(vt_shm_find(shm, &local) == NULL);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x100000, &a), 0);
	REQUIRE_EQ(vt_shm_add_host(shm, host + 100, 4000, 0x200000, &b), 0);
	CHECK(vt_shm_find(shm, (uint8_t *)a->hva + 5) == a);
	CHECK(vt_shm_find(shm, host + 100) == b);
	CHECK(vt_shm_find(shm, host + 4099) == b);
	/* Just outside each end of the host region, and outside both. */
	CHECK(vt_shm_find(shm, host + 99) == NULL);
	CHECK(vt_shm_find(shm, host + 4100) == NULL);
	CHECK(vt_shm_find(shm, &local) == NULL);
	/* A region found stays that region as more are added. */
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x300000, NULL), 0);
	CHECK(vt_shm_find(shm, (uint8_t *)a->hva + 5) == a);
	CHECK_EQ(a->gpa, 0x100000);
	vt_shm_free(shm);
}

VT_TEST(gpa_of_a_pointer_outside_every_region_is_efault)
{
	struct vt_shm *shm;
	uint64_t gpa;
	int local = 0;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	CHECK_EQ(vt_shm_gpa(shm, &local, sizeof(local), &gpa), -EFAULT);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x100000, NULL), 0);
	CHECK_EQ(vt_shm_gpa(shm, &local, sizeof(local), &gpa), -EFAULT);
	vt_shm_free(shm);
}

VT_TEST(alloc_returns_aligned_memory_inside_a_region)
{
	struct vt_shm *shm;
	const struct vt_shm_region *r;
	void *p, *q;
	uint64_t gpa;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x100000, &r), 0);
	REQUIRE_EQ(vt_shm_alloc(shm, 10, 0, &p), 0);
	CHECK_EQ((uintptr_t)p % 64, 0);
	CHECK_EQ(vt_shm_gpa(shm, p, 10, &gpa), 0);
	REQUIRE_EQ(vt_shm_alloc(shm, 10, 4096, &q), 0);
	CHECK_EQ((uintptr_t)q % 4096, 0);
	CHECK(p != q);
	memset(p, 0xaa, 10);
	memset(q, 0xbb, 10);
	CHECK_EQ(((uint8_t *)p)[9], 0xaa);
	vt_shm_release(shm, q, 10);
	vt_shm_release(shm, p, 10);
	vt_shm_free(shm);
}

VT_TEST(alloc_rejects_bad_sizes_and_alignments)
{
	struct vt_shm *shm;
	void *p;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0, NULL), 0);
	CHECK_EQ(vt_shm_alloc(shm, 0, 0, &p), -EINVAL);
	CHECK_EQ(vt_shm_alloc(shm, 64, 48, &p), -EINVAL);
	CHECK_EQ(vt_shm_alloc(shm, 64, page_size() * 2, &p), -EINVAL);
	vt_shm_free(shm);
}

VT_TEST(alloc_exhaustion_is_enomem_and_release_recovers)
{
	struct vt_shm *shm;
	const struct vt_shm_region *r;
	void *whole, *p;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_alloc(shm, 64, 0, &p), -ENOMEM); /* no region at all */
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0, &r), 0);
	REQUIRE_EQ(vt_shm_alloc(shm, r->size, 0, &whole), 0);
	CHECK(whole == r->hva);
	CHECK_EQ(vt_shm_alloc(shm, 64, 0, &p), -ENOMEM);
	vt_shm_release(shm, whole, r->size);
	CHECK_EQ(vt_shm_alloc(shm, 64, 0, &p), 0);
	vt_shm_free(shm);
}

VT_TEST(release_with_a_wrong_size_changes_nothing)
{
	struct vt_shm *shm;
	const struct vt_shm_region *r;
	void *whole, *p;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0, &r), 0);
	REQUIRE_EQ(vt_shm_alloc(shm, r->size, 0, &whole), 0);
	vt_shm_release(shm, whole, 64);
	vt_shm_release(shm, (uint8_t *)whole + 64, 64);
	CHECK_EQ(vt_shm_alloc(shm, 64, 0, &p), -ENOMEM);
	vt_shm_release(shm, whole, r->size);
	vt_shm_release(shm, whole, r->size); /* a double release is ignored */
	CHECK_EQ(vt_shm_alloc(shm, r->size, 0, &p), 0);
	vt_shm_free(shm);
}

VT_TEST(alloc_spills_into_the_next_region)
{
	struct vt_shm *shm;
	const struct vt_shm_region *a, *b;
	void *p, *q;
	uint64_t gpa;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x100000, &a), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, 1 << 16, 0x200000, &b), 0);
	REQUIRE_EQ(vt_shm_alloc(shm, a->size, 0, &p), 0);
	REQUIRE_EQ(vt_shm_alloc(shm, 64, 0, &q), 0);
	CHECK_EQ(vt_shm_gpa(shm, q, 64, &gpa), 0);
	CHECK(gpa >= 0x200000 && gpa < 0x200000 + b->size);
	vt_shm_free(shm);
}

VT_TEST(alloc_from_unaligned_host_memory_keeps_alignment)
{
	struct vt_shm *shm;
	void *p;
	uint64_t pg = page_size();
	uint8_t *memory = aligned_alloc(pg, 4 * pg);

	REQUIRE(memory != NULL);
	REQUIRE_EQ(vt_shm_new(&shm), 0);
	/* Starts 100 bytes into a page: allocations begin at the next page boundary. */
	REQUIRE_EQ(vt_shm_add_host(shm, memory + 100, 3 * pg, 0, NULL), 0);
	REQUIRE_EQ(vt_shm_alloc(shm, 64, pg, &p), 0);
	CHECK_EQ((uintptr_t)p % pg, 0);
	CHECK((uint8_t *)p >= memory + 100 && (uint8_t *)p + 64 <= memory + 100 + 3 * pg);
	vt_shm_free(shm);
	free(memory);
}
