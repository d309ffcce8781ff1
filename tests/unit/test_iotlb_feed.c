/* SPDX-License-Identifier: MIT */
/*
 * The in-process IOTLB feed (iotlb_feed.h): each translation's driver address converted through
 * the device's memory table, a burst stopping at the first one it cannot convert, with what came
 * before it published and nothing after.
 */
#include <errno.h>

#include <virtue/iotlb_feed.h>

#include "harness.h"

#define PAGE 4096u

/* Where the device maps the driver's two regions: apart, and in the other order. */
static uint8_t device_memory[8 * PAGE] __attribute__((aligned(PAGE)));

#define UADDR_A 0x7f0000100000ULL /* 2 pages, at device_memory + 4 pages */
#define UADDR_B 0x7f0000200000ULL /* 3 pages, at device_memory */

struct rig {
	struct vt_iotlb_feed feed;
};

static bool rig_new(struct rig *r)
{
	const struct vt_mem_region a = {
		.gpa = 0x100000, .size = 2 * PAGE, .hva = device_memory + 4 * PAGE, .uaddr = UADDR_A
	};
	const struct vt_mem_region b = {
		.gpa = 0x200000, .size = 3 * PAGE, .hva = device_memory, .uaddr = UADDR_B
	};
	*r = (struct rig){ .feed.table = vt_memtable_new(NULL) };
	return r->feed.table && vt_memtable_add(r->feed.table, &a) == 0 &&
	       vt_memtable_add(r->feed.table, &b) == 0 && vt_iotlb_new(NULL, &r->feed.iotlb) == 0;
}

static void rig_free(struct rig *r)
{
	vt_iotlb_free(r->feed.iotlb);
	vt_memtable_free(r->feed.table);
}

/* Whether the device translates @iova to @hva with @perm. */
static bool device_maps(struct rig *r, uint64_t iova, const void *hva, unsigned int perm)
{
	struct vt_iotlb_entry e;
	if (vt_iotlb_lookup(r->feed.iotlb, iova, &e) < 0)
		return false;
	return (const uint8_t *)e.hva + (iova - e.iova) == hva && e.perm == perm;
}

static unsigned int entries(struct rig *r)
{
	struct vt_iotlb_stats st;
	vt_iotlb_get_stats(r->feed.iotlb, &st);
	return st.entries;
}

static unsigned int update_burst(struct rig *r, const struct vt_dma_iotlb_map *maps, unsigned int n,
				 int *error)
{
	return vt_iotlb_feed_ops.update_burst(&r->feed, maps, n, error);
}

/* A burst that goes back and forth between the regions: each one converted through its own. */
VT_TEST(burst_converts_each_translation_through_its_own_region)
{
	struct rig r;
	REQUIRE(rig_new(&r));
	const struct vt_dma_iotlb_map maps[] = {
		{ 0x10000, PAGE, UADDR_A, VT_ACCESS_READ },
		{ 0x11000, PAGE, UADDR_B + 2 * PAGE, VT_ACCESS_WRITE },
		{ 0x12000, PAGE, UADDR_A + PAGE, VT_ACCESS_RW },
		{ 0x13000, 100, UADDR_B + 10, VT_ACCESS_READ },
		{ 0x14000, PAGE, UADDR_B, VT_ACCESS_READ },
	};
	int error = 12345;
	CHECK_EQ(update_burst(&r, maps, 5, &error), 5);
	CHECK_EQ(error, 12345);
	CHECK(device_maps(&r, 0x10000, device_memory + 4 * PAGE, VT_ACCESS_READ));
	CHECK(device_maps(&r, 0x11000, device_memory + 2 * PAGE, VT_ACCESS_WRITE));
	CHECK(device_maps(&r, 0x12000, device_memory + 5 * PAGE, VT_ACCESS_RW));
	CHECK(device_maps(&r, 0x13000 + 99, device_memory + 10 + 99, VT_ACCESS_READ));
	CHECK(!device_maps(&r, 0x13000 + 100, device_memory + 10 + 100, VT_ACCESS_READ));
	CHECK(device_maps(&r, 0x14000, device_memory, VT_ACCESS_READ));
	CHECK_EQ(entries(&r), 5);
	rig_free(&r);
}

/*
 * A translation its region holds only in part, or that no region holds, ends the burst with
 * -EFAULT: the ones before it are published, it and those after it are not. The region the one
 * before came from must not answer for it.
 */
VT_TEST(burst_stops_at_a_translation_no_region_holds_whole)
{
	static const uint64_t bad_uaddr[] = {
		UADDR_A + PAGE + 1,	/* a page from inside A's last page: past A's end */
		UADDR_A + 2 * PAGE,	/* just past A */
		UADDR_A - PAGE,		/* just before A */
		UADDR_B + 3 * PAGE - 8, /* B's last bytes and beyond */
	};
	for (unsigned int k = 0; k < sizeof(bad_uaddr) / sizeof(bad_uaddr[0]); k++) {
		struct rig r;
		REQUIRE(rig_new(&r));
		const struct vt_dma_iotlb_map maps[] = {
			{ 0x10000, PAGE, UADDR_A, VT_ACCESS_READ },
			{ 0x11000, PAGE, bad_uaddr[k], VT_ACCESS_READ },
			{ 0x12000, PAGE, UADDR_B, VT_ACCESS_READ },
		};
		int error = 0;
		CHECK_EQ(update_burst(&r, maps, 3, &error), 1);
		CHECK_EQ(error, -EFAULT);
		CHECK(device_maps(&r, 0x10000, device_memory + 4 * PAGE, VT_ACCESS_READ));
		CHECK_EQ(entries(&r), 1);
		rig_free(&r);
	}
}

/* The IOTLB refusing one (a zero size) stops the burst there with its error, the same way. */
VT_TEST(burst_stops_where_the_iotlb_refuses)
{
	struct rig r;
	REQUIRE(rig_new(&r));
	const struct vt_dma_iotlb_map maps[] = {
		{ 0x10000, PAGE, UADDR_A, VT_ACCESS_READ },
		{ 0x11000, PAGE, UADDR_B, VT_ACCESS_READ },
		{ 0x12000, 0, UADDR_B, VT_ACCESS_READ },
		{ 0x13000, PAGE, UADDR_A, VT_ACCESS_READ },
	};
	int error = 0;
	CHECK_EQ(update_burst(&r, maps, 4, &error), 2);
	CHECK_EQ(error, -EINVAL);
	CHECK_EQ(entries(&r), 2);
	CHECK(!device_maps(&r, 0x13000, device_memory + 4 * PAGE, VT_ACCESS_READ));
	rig_free(&r);
}

/* More than the feed converts at once (its groups): all of them, each where it belongs. */
VT_TEST(burst_longer_than_a_group_converts_every_translation)
{
	enum { N = 100 };
	struct rig r;
	REQUIRE(rig_new(&r));
	struct vt_dma_iotlb_map maps[N];
	for (unsigned int i = 0; i < N; i++) {
		uint64_t uaddr = i % 3 ? UADDR_B + (i % 3) * PAGE : UADDR_A + (i % 2) * PAGE;
		maps[i] = (struct vt_dma_iotlb_map){ 0x100000 + (uint64_t)i * PAGE, PAGE, uaddr,
						     VT_ACCESS_READ };
	}
	int error = 0;
	CHECK_EQ(update_burst(&r, maps, N, &error), N);
	unsigned int wrong = 0;
	for (unsigned int i = 0; i < N; i++) {
		const uint8_t *hva =
		    i % 3 ? device_memory + (i % 3) * PAGE : device_memory + (4 + i % 2) * PAGE;
		wrong += !device_maps(&r, maps[i].iova, hva, VT_ACCESS_READ);
	}
	CHECK_EQ(wrong, 0);
	CHECK_EQ(entries(&r), N);
	rig_free(&r);
}
