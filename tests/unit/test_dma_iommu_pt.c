/* SPDX-License-Identifier: MIT */
/*
 * IOMMU DMA over its own page table (vt_dma_params.page_table): what the driver maps, the device
 * reaches through vt_dma_device_as with the permission of the direction, and nothing else; an
 * unmap takes effect (entry gone, generation moved on) when strict says it does, and lazy only at
 * a flush; IOVA pages are handed out in order and reused only once their entry is cleared; and
 * every misuse gets its specific error.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/as.h>
#include <virtue/dma.h>

#include "harness.h"

#define GPA_BASE (1ULL << 30)
#define SHM_SIZE (4ULL << 20)
#define PAGE	 4096ULL

struct log_capture {
	unsigned int errors, warnings;
};

static void capture_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_capture *c = opaque;

	(void)message;
	c->errors += level == VT_LOG_ERROR;
	c->warnings += level == VT_LOG_WARN;
}

struct rig {
	struct vt_shm *shm;
	const struct vt_shm_region *region;
	struct vt_dma *dma;
	struct vt_as as;
	struct log_capture log;
	struct vt_log hook;
};

static int rig_init_sized(struct rig *g, enum vt_dma_mode mode, uint64_t iova_size,
			  unsigned int lazy_batch)
{
	memset(g, 0, sizeof(*g));
	g->hook = (struct vt_log){ .fn = capture_log, .opaque = &g->log, .max_level = VT_LOG_WARN };
	int ret = vt_shm_new(&g->shm);
	if (ret == 0)
		ret = vt_shm_add_memfd(g->shm, SHM_SIZE, GPA_BASE, &g->region);
	struct vt_dma_params p = { .mode = mode,
				   .shm = g->shm,
				   .log = &g->hook,
				   .page_table = true,
				   .iova_size = iova_size,
				   .lazy_batch = lazy_batch };
	if (ret == 0)
		ret = vt_dma_new(&p, &g->dma);
	if (ret == 0)
		ret = vt_dma_device_as(g->dma, &g->as);
	return ret;
}

static int rig_init(struct rig *g, enum vt_dma_mode mode)
{
	return rig_init_sized(g, mode, 0, 0);
}

static void rig_destroy(struct rig *g)
{
	vt_dma_free(g->dma);
	vt_shm_free(g->shm);
}

static uint8_t *mem(struct rig *g, uint64_t offset)
{
	return (uint8_t *)g->region->hva + offset;
}

/* What the device reaches at [bus, bus + len) for @access: one iovec's host pointer, or NULL. */
static void *device_ptr(struct rig *g, uint64_t bus, uint64_t len, unsigned int access, int *err)
{
	struct iovec iov[4];
	unsigned int n = 0;
	*err = vt_as_translate(&g->as, bus, len, access, iov, 4, &n, NULL);
	return *err == 0 && n == 1 && iov[0].iov_len == len ? iov[0].iov_base : NULL;
}

VT_TEST(a_mapped_buffer_is_the_same_bytes_for_the_device_with_the_permission_of_its_direction)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, VT_DMA_IOMMU_STRICT), 0);
	uint8_t *out = mem(&g, 3 * PAGE + 100), *in = mem(&g, 5 * PAGE + 7);
	uint64_t bout, bin;
	int err;

	REQUIRE_EQ(vt_dma_map(g.dma, out, 300, VT_DMA_TO_DEVICE, &bout), 0);
	REQUIRE_EQ(vt_dma_map(g.dma, in, 200, VT_DMA_FROM_DEVICE, &bin), 0);
	/* Bus addresses keep the in-page offset; pages come in order. */
	CHECK_EQ(bout & (PAGE - 1), 100);
	CHECK_EQ(bin & (PAGE - 1), 7);
	CHECK_EQ((bin >> 12) - (bout >> 12), 1);

	CHECK(device_ptr(&g, bout, 300, VT_ACCESS_READ, &err) == out);
	CHECK(device_ptr(&g, bout, 1, VT_ACCESS_WRITE, &err) == NULL);
	CHECK_EQ(err, -EACCES);
	CHECK(device_ptr(&g, bin, 200, VT_ACCESS_WRITE, &err) == in);
	CHECK(device_ptr(&g, bin, 1, VT_ACCESS_READ, &err) == NULL);
	CHECK_EQ(err, -EACCES);

	/* The page table, as the ring walks it. */
	uint64_t e = vt_as_page_entry(&g.as, bout);
	CHECK_EQ(e & VT_AS_PTE_PERM_MASK, VT_ACCESS_READ);
	CHECK_EQ(e & ~(PAGE - 1), (uint64_t)(uintptr_t)out & ~(PAGE - 1));

	CHECK_EQ(vt_dma_unmap(g.dma, bout, 300, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(g.dma, bin, 200, VT_DMA_FROM_DEVICE), 0);
	CHECK_EQ(g.log.errors, 0);
	rig_destroy(&g);
}

VT_TEST(a_buffer_over_several_pages_is_one_run_of_iova_pages)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, VT_DMA_IOMMU_STRICT), 0);
	uint8_t *buf = mem(&g, 8 * PAGE + 4000);
	uint64_t bus;
	int err;

	REQUIRE_EQ(vt_dma_map(g.dma, buf, 3 * PAGE, VT_DMA_BIDIRECTIONAL, &bus), 0);
	CHECK(device_ptr(&g, bus, 3 * PAGE, VT_ACCESS_RW, &err) == buf);
	/* The whole pages are reachable, the next one not. */
	CHECK(device_ptr(&g, bus - 4000, 4 * PAGE, VT_ACCESS_READ, &err) == buf - 4000);
	CHECK(device_ptr(&g, bus - 4000, 4 * PAGE + 1, VT_ACCESS_READ, &err) == NULL);
	CHECK_EQ(err, -EFAULT);

	struct vt_as_extent x;
	uint64_t gen;
	REQUIRE_EQ(vt_as_extent(&g.as, bus + PAGE, &x, &gen), 0);
	CHECK_EQ(x.addr, bus - 4000);
	CHECK_EQ(x.last, bus - 4000 + 4 * PAGE - 1);
	CHECK_EQ(x.hva, (uint64_t)(uintptr_t)(buf - 4000));
	CHECK_EQ(x.perm, VT_ACCESS_RW);

	/* sync inside it is fine; past it, or in the other direction, is not. */
	CHECK_EQ(vt_dma_sync_for_cpu(g.dma, bus + PAGE, 100, VT_DMA_BIDIRECTIONAL), 0);
	CHECK_EQ(vt_dma_sync_for_cpu(g.dma, bus + 3 * PAGE - 1, 2, VT_DMA_BIDIRECTIONAL), -EINVAL);
	CHECK_EQ(vt_dma_sync_for_cpu(g.dma, bus, 1, VT_DMA_FROM_DEVICE), -EINVAL);
	CHECK_EQ(vt_dma_unmap(g.dma, bus, 3 * PAGE, VT_DMA_BIDIRECTIONAL), 0);
	CHECK(device_ptr(&g, bus, 1, VT_ACCESS_READ, &err) == NULL);
	CHECK_EQ(err, -EFAULT);

	/* Unmapped in a batch, its pages not yet cleared: a sync in a later page is refused too. */
	vt_dma_batch_begin(g.dma);
	REQUIRE_EQ(vt_dma_map(g.dma, buf, 3 * PAGE, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(vt_dma_sync_for_device(g.dma, bus + PAGE, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(g.dma, bus, 3 * PAGE, VT_DMA_TO_DEVICE), 0);
	CHECK(vt_as_page_entry(&g.as, bus + PAGE) != 0);
	CHECK_EQ(vt_dma_sync_for_device(g.dma, bus + PAGE, 64, VT_DMA_TO_DEVICE), -ENOENT);
	CHECK_EQ(vt_dma_batch_end(g.dma), 0);
	rig_destroy(&g);
}

VT_TEST(strict_unmap_takes_the_page_away_and_moves_the_generation_before_it_returns)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, VT_DMA_IOMMU_STRICT), 0);
	uint64_t bus;
	int err;

	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 0), 64, VT_DMA_TO_DEVICE, &bus), 0);
	struct vt_as_extent x;
	uint64_t gen;
	REQUIRE_EQ(vt_as_extent(&g.as, bus, &x, &gen), 0);
	CHECK_EQ(vt_as_generation(&g.as), gen);
	CHECK_EQ(vt_dma_unmap(g.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	/* A device that cached the extent sees the generation move; a walk finds nothing. */
	CHECK(vt_as_generation(&g.as) != gen);
	CHECK_EQ(vt_as_page_entry(&g.as, bus), 0);
	CHECK(device_ptr(&g, bus, 64, VT_ACCESS_READ, &err) == NULL);
	CHECK_EQ(err, -EFAULT);
	CHECK_EQ(vt_as_extent(&g.as, bus, &x, &gen), -EFAULT);
	rig_destroy(&g);
}

VT_TEST(strict_in_a_batch_keeps_unmapped_pages_until_the_batch_ends)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, VT_DMA_IOMMU_STRICT), 0);
	uint64_t bus[4];
	int err;

	vt_dma_batch_begin(g.dma);
	for (unsigned int i = 0; i < 4; i++)
		REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, i * PAGE), 64, VT_DMA_TO_DEVICE, &bus[i]), 0);
	uint64_t gen = vt_as_generation(&g.as);
	for (unsigned int i = 0; i < 4; i++)
		CHECK_EQ(vt_dma_unmap(g.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	/* Unmapped for the driver (a second unmap is refused), still reachable for the device. */
	CHECK_EQ(vt_dma_unmap(g.dma, bus[0], 64, VT_DMA_TO_DEVICE), -ENOENT);
	CHECK(device_ptr(&g, bus[3], 64, VT_ACCESS_READ, &err) == mem(&g, 3 * PAGE));
	CHECK_EQ(vt_as_generation(&g.as), gen);
	CHECK_EQ(vt_dma_batch_end(g.dma), 0);
	CHECK(vt_as_generation(&g.as) != gen);
	for (unsigned int i = 0; i < 4; i++)
		CHECK_EQ(vt_as_page_entry(&g.as, bus[i]), 0);
	struct vt_dma_stats st;
	vt_dma_get_stats(g.dma, &st);
	CHECK_EQ(st.flushes, 1);
	CHECK_EQ(st.iotlb_invalidations, 4);
	CHECK_EQ(vt_dma_batch_end(g.dma), -EINVAL); /* none open */
	rig_destroy(&g);
}

/*
 * What a ring asks at every generation change: whether the pages its pointers point into kept
 * their translation. A flush that cleared other pages leaves them good; one that cleared any of
 * theirs, even a page mapped again since, does not.
 */
VT_TEST(unchanged_since_vouches_for_pages_no_flush_cleared)
{
	struct rig g;
	REQUIRE_EQ(rig_init_sized(&g, VT_DMA_IOMMU_STRICT, 8 * PAGE, 0), 0);
	void *ring;
	uint64_t ring_bus, buf, now;

	/* A two-page coherent area (at the top: pages 6-7) and a buffer (page 0). */
	REQUIRE_EQ(vt_dma_alloc_coherent(g.dma, 2 * PAGE, &ring, &ring_bus), 0);
	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 40 * PAGE), 64, VT_DMA_TO_DEVICE, &buf), 0);
	uint64_t since = vt_as_generation(&g.as);
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, buf, 64, &now), 0);
	CHECK_EQ(now, since);

	CHECK_EQ(vt_dma_unmap(g.dma, buf, 64, VT_DMA_TO_DEVICE), 0);
	uint64_t after = vt_as_generation(&g.as);
	REQUIRE(after != since);
	/* The area: good up to the current generation, which the caller caches. */
	now = 0;
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, ring_bus, 2 * PAGE, &now), 0);
	CHECK_EQ(now, after);
	/* The buffer's page, and any range that reaches it, changed. */
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, buf, 64, &now), -ESTALE);
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, ring_bus + PAGE, PAGE + 1, &now), -ESTALE);
	/* Since the unmap, nothing changed at all. */
	CHECK_EQ(vt_as_unchanged_since(&g.as, after, buf, 64, &now), 0);

	/* The page handed out again (the table has eight): a new mapping there is a change too. */
	uint64_t again[6];
	for (unsigned int i = 0; i < 6; i++)
		REQUIRE_EQ(
		    vt_dma_map(g.dma, mem(&g, (50 + i) * PAGE), 64, VT_DMA_TO_DEVICE, &again[i]),
		    0);
	CHECK_EQ(again[5], buf);
	CHECK(vt_as_page_entry(&g.as, buf) != 0);
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, buf, 64, &now), -ESTALE);
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, ring_bus, 2 * PAGE, &now), 0);

	/* Outside the table, empty or wrapping: nothing it can vouch for. */
	CHECK_EQ(ring_bus, buf + 6 * PAGE);
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, ring_bus + 2 * PAGE, 1, &now), -ESTALE);
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, buf - 1, 2, &now), -ESTALE);
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, ring_bus, 0, &now), -ESTALE);
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, UINT64_MAX, 2, &now), -ESTALE);

	for (unsigned int i = 0; i < 6; i++)
		CHECK_EQ(vt_dma_unmap(g.dma, again[i], 64, VT_DMA_TO_DEVICE), 0);
	/* It vouches for the last seven flushes: after more, it cannot tell, even for the area. */
	uint64_t recent = vt_as_generation(&g.as), one;
	for (unsigned int i = 0; i < 7; i++) {
		CHECK_EQ(vt_as_unchanged_since(&g.as, recent, ring_bus, 2 * PAGE, &now), 0);
		REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 60 * PAGE), 64, VT_DMA_TO_DEVICE, &one), 0);
		REQUIRE_EQ(vt_dma_unmap(g.dma, one, 64, VT_DMA_TO_DEVICE), 0);
	}
	CHECK_EQ(vt_as_generation(&g.as), recent + 7);
	CHECK_EQ(vt_as_unchanged_since(&g.as, recent + 1, ring_bus, 2 * PAGE, &now), 0);
	CHECK_EQ(vt_as_unchanged_since(&g.as, recent, ring_bus, 2 * PAGE, &now), -ESTALE);

	/* Freed, the area changed. */
	uint64_t before_free = vt_as_generation(&g.as);
	vt_dma_free_coherent(g.dma, 2 * PAGE, ring, ring_bus);
	CHECK_EQ(vt_as_unchanged_since(&g.as, before_free, ring_bus + PAGE, 1, &now), -ESTALE);
	CHECK_EQ(g.log.errors, 0);
	rig_destroy(&g);
}

/* A flush knows the lowest and highest page it cleared: one around the area counts as a change. */
VT_TEST(unchanged_since_is_cautious_about_a_flush_around_the_pages)
{
	struct rig g;
	REQUIRE_EQ(rig_init_sized(&g, VT_DMA_IOMMU_LAZY, 16 * PAGE, 0), 0);
	void *top, *ring;
	uint64_t top_bus, ring_bus, buf, now;

	REQUIRE_EQ(vt_dma_alloc_coherent(g.dma, PAGE, &top, &top_bus), 0);
	REQUIRE_EQ(vt_dma_alloc_coherent(g.dma, PAGE, &ring, &ring_bus), 0);
	/* A flush of the page above alone leaves it be. */
	uint64_t before = vt_as_generation(&g.as);
	vt_dma_free_coherent(g.dma, PAGE, top, top_bus);
	CHECK_EQ(vt_as_unchanged_since(&g.as, before, ring_bus, PAGE, &now), 0);
	CHECK_EQ(now, before + 1);
	REQUIRE_EQ(vt_dma_alloc_coherent(g.dma, PAGE, &top, &top_bus), 0);
	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 40 * PAGE), 64, VT_DMA_TO_DEVICE, &buf), 0);
	uint64_t since = vt_as_generation(&g.as);
	/* Lazy: the buffer waits, and freeing the top page flushes it along (pages 0 and 15). */
	CHECK_EQ(vt_dma_unmap(g.dma, buf, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_as_generation(&g.as), since);
	vt_dma_free_coherent(g.dma, PAGE, top, top_bus);
	CHECK_EQ(vt_as_generation(&g.as), since + 1);
	CHECK(vt_as_page_entry(&g.as, ring_bus) != 0);
	CHECK_EQ(vt_as_unchanged_since(&g.as, since, ring_bus, PAGE, &now), -ESTALE);
	/* A flush of the bottom page alone leaves it be. */
	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 40 * PAGE), 64, VT_DMA_TO_DEVICE, &buf), 0);
	CHECK_EQ(vt_dma_unmap(g.dma, buf, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_flush(g.dma), 0);
	CHECK_EQ(vt_as_unchanged_since(&g.as, since + 1, ring_bus, PAGE, &now), 0);
	CHECK_EQ(now, since + 2);
	vt_dma_free_coherent(g.dma, PAGE, ring, ring_bus);
	CHECK_EQ(g.log.errors, 0);
	rig_destroy(&g);
}

VT_TEST(lazy_keeps_unmapped_pages_reachable_until_a_flush_or_a_full_queue)
{
	struct rig g;
	REQUIRE_EQ(rig_init_sized(&g, VT_DMA_IOMMU_LAZY, 0, 4), 0);
	uint64_t bus[4];

	for (unsigned int i = 0; i < 3; i++) {
		REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, i * PAGE), 64, VT_DMA_TO_DEVICE, &bus[i]), 0);
		CHECK_EQ(vt_dma_unmap(g.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	}
	for (unsigned int i = 0; i < 3; i++)
		CHECK(vt_as_page_entry(&g.as, bus[i]) != 0);
	CHECK_EQ(vt_dma_flush(g.dma), 0);
	for (unsigned int i = 0; i < 3; i++)
		CHECK_EQ(vt_as_page_entry(&g.as, bus[i]), 0);

	/* The fourth unmap fills the queue, which flushes it. */
	for (unsigned int i = 0; i < 4; i++)
		REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, i * PAGE), 64, VT_DMA_TO_DEVICE, &bus[i]), 0);
	for (unsigned int i = 0; i < 3; i++)
		CHECK_EQ(vt_dma_unmap(g.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	CHECK(vt_as_page_entry(&g.as, bus[0]) != 0);
	CHECK_EQ(vt_dma_unmap(g.dma, bus[3], 64, VT_DMA_TO_DEVICE), 0);
	for (unsigned int i = 0; i < 4; i++)
		CHECK_EQ(vt_as_page_entry(&g.as, bus[i]), 0);
	rig_destroy(&g);
}

VT_TEST(an_iova_page_comes_back_only_after_its_entry_was_cleared)
{
	/* Eight pages of IOVA: the ninth map must wait for a lazy flush, and gets a cleared page.
	 */
	struct rig g;
	REQUIRE_EQ(rig_init_sized(&g, VT_DMA_IOMMU_LAZY, 8 * PAGE, 64), 0);
	uint64_t bus[8], more;

	for (unsigned int i = 0; i < 8; i++)
		REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, i * PAGE), 64, VT_DMA_FROM_DEVICE, &bus[i]),
			   0);
	CHECK_EQ(vt_dma_map(g.dma, mem(&g, 9 * PAGE), 64, VT_DMA_FROM_DEVICE, &more), -ENOSPC);
	CHECK_EQ(g.log.errors, 1);
	CHECK_EQ(vt_dma_unmap(g.dma, bus[5], 64, VT_DMA_FROM_DEVICE), 0);
	uint64_t gen = vt_as_generation(&g.as);
	/* Page 5 is free only once flushed: this map flushes, then takes it. */
	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 9 * PAGE), 64, VT_DMA_FROM_DEVICE, &more), 0);
	CHECK_EQ(more, bus[5]);
	CHECK(vt_as_generation(&g.as) != gen);
	int err;
	CHECK(device_ptr(&g, more, 64, VT_ACCESS_WRITE, &err) == mem(&g, 9 * PAGE));
	for (unsigned int i = 0; i < 8; i++)
		if (i != 5)
			CHECK_EQ(vt_dma_unmap(g.dma, bus[i], 64, VT_DMA_FROM_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(g.dma, more, 64, VT_DMA_FROM_DEVICE), 0);
	/* A run of three needs three free pages in a row, and finds them across the wrap. */
	uint64_t run;
	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 20 * PAGE), 3 * PAGE, VT_DMA_TO_DEVICE, &run), 0);
	int e2;
	CHECK(device_ptr(&g, run, 3 * PAGE, VT_ACCESS_READ, &e2) == mem(&g, 20 * PAGE));
	CHECK_EQ(vt_dma_unmap(g.dma, run, 3 * PAGE, VT_DMA_TO_DEVICE), 0);
	rig_destroy(&g);
}

VT_TEST(pages_cycle_through_a_small_arena_that_grows_only_when_full)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, VT_DMA_IOMMU_STRICT), 0);
	uint64_t lowest = UINT64_MAX, highest = 0, bus;

	/* Maps and unmaps one at a time: the cursor goes round, never far. */
	for (unsigned int i = 0; i < 5000; i++) {
		REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, (i % 512) * PAGE), 64, VT_DMA_TO_DEVICE, &bus),
			   0);
		lowest = bus < lowest ? bus : lowest;
		highest = bus > highest ? bus : highest;
		REQUIRE_EQ(vt_dma_unmap(g.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	}
	CHECK((highest - lowest) / PAGE < 512);
	/* 1000 live at once do not fit in 512 pages: the arena grows and every one maps. */
	static uint64_t many[1000];
	for (unsigned int i = 0; i < 1000; i++)
		REQUIRE_EQ(
		    vt_dma_map(g.dma, mem(&g, (i % 512) * PAGE), 64, VT_DMA_TO_DEVICE, &many[i]),
		    0);
	for (unsigned int i = 0; i < 1000; i++) {
		int err;
		CHECK(device_ptr(&g, many[i], 64, VT_ACCESS_READ, &err) ==
		      mem(&g, (i % 512) * PAGE));
		CHECK_EQ(vt_dma_unmap(g.dma, many[i], 64, VT_DMA_TO_DEVICE), 0);
	}
	CHECK_EQ(g.log.errors, 0);
	rig_destroy(&g);
}

/* A region that ends inside a page: the device would reach past its end through that page. */
VT_TEST(a_page_that_runs_past_the_end_of_its_region_is_refused)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, VT_DMA_IOMMU_STRICT), 0);
	uint8_t *host = aligned_alloc(PAGE, 3 * PAGE);
	REQUIRE(host != NULL);
	REQUIRE_EQ(vt_shm_add_host(g.shm, host, 2 * PAGE + 100, 1ULL << 40, NULL), 0);
	uint64_t bus, past;

	/* The region is the last one mapped from, so the next map asks it first. */
	REQUIRE_EQ(vt_dma_map(g.dma, host + 10, 16, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(vt_dma_map(g.dma, host + 2 * PAGE + 10, 16, VT_DMA_TO_DEVICE, &past), -EFAULT);
	CHECK_EQ(g.log.errors, 1);
	CHECK_EQ(vt_dma_unmap(g.dma, bus, 16, VT_DMA_TO_DEVICE), 0);
	rig_destroy(&g);
	free(host);
}

/*
 * A burst maps what single maps would: each buffer in a page of its own, in order, one that spans
 * pages as a run, and it stops at the first it cannot map, with that one's error. Each burst
 * below starts with a buffer the quick path takes and then meets one it must hand on.
 */
VT_TEST(a_burst_maps_each_buffer_as_a_single_map_would_and_stops_at_a_refused_one)
{
	struct rig g;
	REQUIRE_EQ(rig_init_sized(&g, VT_DMA_IOMMU_STRICT, 16 * PAGE, 0), 0);
	uint8_t *host = aligned_alloc(PAGE, 2 * PAGE);
	REQUIRE(host != NULL);
	REQUIRE_EQ(vt_shm_add_host(g.shm, host, PAGE + 100, 1ULL << 40, NULL), 0);
	uint64_t bus[6];
	int err = 0, e;

	/* The quick path needs the region of a map before it: page 0 mapped once. */
	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 0), 64, VT_DMA_TO_DEVICE, &bus[0]), 0);
	REQUIRE_EQ(vt_dma_unmap(g.dma, bus[0], 64, VT_DMA_TO_DEVICE), 0);
	/* In a page, then across two; in a page, then in another region. */
	struct iovec bufs[6] = { { mem(&g, 100), 64 },	    { mem(&g, PAGE + 4000), 200 },
				 { mem(&g, 4 * PAGE), 10 }, { host + 8, 32 },
				 { host + 100, 16 },	    { host + PAGE + 8, 16 } };
	CHECK_EQ(vt_dma_map_burst(g.dma, bufs, 2, VT_DMA_TO_DEVICE, bus, &err), 2);
	CHECK_EQ(vt_dma_map_burst(g.dma, bufs + 2, 2, VT_DMA_TO_DEVICE, bus + 2, &err), 2);
	/* In that region's first page, then in its last, which the region covers in part. */
	CHECK_EQ(vt_dma_map_burst(g.dma, bufs + 4, 2, VT_DMA_TO_DEVICE, bus + 4, &err), 1);
	CHECK_EQ(err, -EFAULT);
	for (unsigned int i = 0; i < 5; i++) {
		CHECK(device_ptr(&g, bus[i], bufs[i].iov_len, VT_ACCESS_READ, &e) ==
		      bufs[i].iov_base);
		CHECK_EQ(bus[i] & (PAGE - 1), (uint64_t)(uintptr_t)bufs[i].iov_base & (PAGE - 1));
	}
	/* Pages in order: one, a run of two, then one each. */
	CHECK_EQ((bus[1] >> 12) - (bus[0] >> 12), 1);
	CHECK_EQ((bus[2] >> 12) - (bus[1] >> 12), 2);
	CHECK_EQ((bus[4] >> 12) - (bus[2] >> 12), 2);

	/*
	 * The table full. One map brings back the region of the buffers (page 7), so that the
	 * burst's quick loop takes pages 8-15 and goes round to 0; page 1 busy, the search finds
	 * no other, and the burst stops with -ENOSPC.
	 */
	uint64_t more[16];
	struct iovec many[16];
	for (unsigned int i = 0; i < 16; i++)
		many[i] = (struct iovec){ mem(&g, (20 + i) * PAGE), 64 };
	REQUIRE_EQ(vt_dma_map(g.dma, many[0].iov_base, 64, VT_DMA_FROM_DEVICE, &more[0]), 0);
	CHECK_EQ(vt_dma_map_burst(g.dma, many + 1, 15, VT_DMA_FROM_DEVICE, more + 1, &err), 9);
	CHECK_EQ(err, -ENOSPC);
	CHECK_EQ(more[9], bus[0] - 100 - PAGE);
	for (unsigned int i = 0; i < 10; i++)
		CHECK(device_ptr(&g, more[i], 64, VT_ACCESS_WRITE, &e) == many[i].iov_base);
	for (unsigned int i = 0; i < 5; i++)
		CHECK_EQ(vt_dma_unmap(g.dma, bus[i], bufs[i].iov_len, VT_DMA_TO_DEVICE), 0);
	/* Pages 1-6 again, found round the table from the cursor. */
	CHECK_EQ(vt_dma_map_burst(g.dma, many + 10, 6, VT_DMA_FROM_DEVICE, more + 10, &err), 6);
	CHECK_EQ(more[10], bus[0] - 100);
	/* The page at the cursor (7) still busy, the ones after it free: the burst goes past it. */
	for (unsigned int i = 1; i < 10; i++)
		CHECK_EQ(vt_dma_unmap(g.dma, more[i], 64, VT_DMA_FROM_DEVICE), 0);
	uint64_t last[3];
	CHECK_EQ(vt_dma_map_burst(g.dma, many + 1, 3, VT_DMA_FROM_DEVICE, last, &err), 3);
	for (unsigned int i = 0; i < 3; i++)
		CHECK_EQ(last[i], more[1 + i]);
	for (unsigned int i = 0; i < 3; i++)
		CHECK_EQ(vt_dma_unmap(g.dma, last[i], 64, VT_DMA_FROM_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(g.dma, more[0], 64, VT_DMA_FROM_DEVICE), 0);
	for (unsigned int i = 10; i < 16; i++)
		CHECK_EQ(vt_dma_unmap(g.dma, more[i], 64, VT_DMA_FROM_DEVICE), 0);
	CHECK_EQ(g.log.errors, 2);
	rig_destroy(&g);
	free(host);
}

VT_TEST(misuse_gets_its_error_and_changes_nothing)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, VT_DMA_IOMMU_STRICT), 0);
	uint64_t bus;
	static uint8_t outside[64];

	CHECK_EQ(vt_dma_map(g.dma, outside, sizeof(outside), VT_DMA_TO_DEVICE, &bus), -EFAULT);
	/* A buffer whose last page runs past the region's end. */
	CHECK_EQ(vt_dma_map(g.dma, mem(&g, SHM_SIZE - 10), 20, VT_DMA_TO_DEVICE, &bus), -EFAULT);
	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 100), 64, VT_DMA_TO_DEVICE, &bus), 0);
	/* Outside shared memory after a map inside it, and the page after the region's last. */
	uint64_t other;
	CHECK_EQ(vt_dma_map(g.dma, outside, sizeof(outside), VT_DMA_TO_DEVICE, &other), -EFAULT);
	CHECK_EQ(vt_dma_map(g.dma, mem(&g, SHM_SIZE), 16, VT_DMA_TO_DEVICE, &other), -EFAULT);
	unsigned int before = g.log.errors;
	CHECK_EQ(vt_dma_unmap(g.dma, bus, 63, VT_DMA_TO_DEVICE), -EINVAL);
	CHECK_EQ(vt_dma_unmap(g.dma, bus + 1, 63, VT_DMA_TO_DEVICE), -EINVAL);
	CHECK_EQ(vt_dma_unmap(g.dma, bus + 1, 64, VT_DMA_TO_DEVICE), -EINVAL);
	CHECK_EQ(vt_dma_unmap(g.dma, bus, 64, VT_DMA_FROM_DEVICE), -EINVAL);
	CHECK_EQ(vt_dma_unmap(g.dma, bus + PAGE, 64, VT_DMA_TO_DEVICE), -ENOENT);
	CHECK_EQ(vt_dma_unmap(g.dma, 0, 64, VT_DMA_TO_DEVICE), -ENOENT);
	CHECK_EQ(vt_dma_unmap(g.dma, UINT64_MAX - 100, 64, VT_DMA_TO_DEVICE), -ENOENT);
	CHECK_EQ(g.log.errors, before + 7);
	/* None of them unmapped it. */
	CHECK(vt_as_page_entry(&g.as, bus) != 0);
	CHECK_EQ(vt_dma_unmap(g.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(g.dma, bus, 64, VT_DMA_TO_DEVICE), -ENOENT);

	/* The device side refuses what a translation must. */
	struct iovec iov[2];
	unsigned int n;
	CHECK_EQ(vt_as_translate(&g.as, 0, 16, VT_ACCESS_READ, iov, 2, &n, NULL), -EFAULT);
	CHECK_EQ(vt_as_translate(&g.as, UINT64_MAX, 2, VT_ACCESS_READ, iov, 2, &n, NULL),
		 -EOVERFLOW);
	CHECK_EQ(vt_as_translate(&g.as, bus, 16, 4, iov, 2, &n, NULL), -EINVAL);
	CHECK_EQ(vt_as_translate(&g.as, bus, 0, VT_ACCESS_READ, iov, 2, &n, NULL), 0);
	CHECK_EQ(n, 0);
	rig_destroy(&g);
}

VT_TEST(a_translation_split_on_the_host_fills_iovecs_up_to_the_limit)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, VT_DMA_IOMMU_STRICT), 0);
	uint64_t a, b;
	/* Two maps of the same host page land on adjacent IOVA pages: not adjacent on the host. */
	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 0), PAGE, VT_DMA_TO_DEVICE, &a), 0);
	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 0), PAGE, VT_DMA_TO_DEVICE, &b), 0);
	REQUIRE_EQ(b, a + PAGE);
	struct iovec iov[2];
	unsigned int n;
	struct vt_as_fault f;
	CHECK_EQ(vt_as_translate(&g.as, a + 10, PAGE, VT_ACCESS_READ, iov, 2, &n, &f), 0);
	CHECK_EQ(n, 2);
	CHECK(iov[0].iov_base == mem(&g, 10) && iov[0].iov_len == PAGE - 10);
	CHECK(iov[1].iov_base == mem(&g, 0) && iov[1].iov_len == 10);
	CHECK_EQ(vt_as_translate(&g.as, a + 10, PAGE, VT_ACCESS_READ, iov, 1, &n, &f), -ENOBUFS);
	CHECK_EQ(n, 1);
	/* Past the second page: the fault names the first byte not mapped. */
	CHECK_EQ(vt_as_translate(&g.as, a, 2 * PAGE + 1, VT_ACCESS_READ, iov, 2, &n, &f), -EFAULT);
	CHECK_EQ(f.addr, a + 2 * PAGE);
	CHECK_EQ(f.end, a + 2 * PAGE);
	/* The extent is one page: the next does not continue it on the host. */
	struct vt_as_extent x;
	uint64_t gen;
	REQUIRE_EQ(vt_as_extent(&g.as, b + 5, &x, &gen), 0);
	CHECK_EQ(x.addr, b);
	CHECK_EQ(x.last, b + PAGE - 1);
	CHECK_EQ(vt_dma_unmap(g.dma, a, PAGE, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(g.dma, b, PAGE, VT_DMA_TO_DEVICE), 0);
	rig_destroy(&g);
}

VT_TEST(coherent_memory_is_mapped_read_write_and_gone_once_freed)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, VT_DMA_IOMMU_LAZY), 0);
	void *cpu;
	uint64_t bus;
	int err;

	REQUIRE_EQ(vt_dma_alloc_coherent(g.dma, 3 * PAGE + 10, &cpu, &bus), 0);
	CHECK_EQ(bus & (PAGE - 1), 0);
	CHECK(device_ptr(&g, bus, 3 * PAGE + 10, VT_ACCESS_RW, &err) == cpu);
	CHECK_EQ(((uint8_t *)cpu)[3 * PAGE + 9], 0);
	vt_dma_free_coherent(g.dma, 3 * PAGE + 10, cpu, bus);
	/* Freed even in lazy mode: the memory may become anything. */
	CHECK_EQ(vt_as_page_entry(&g.as, bus), 0);
	CHECK_EQ(vt_as_page_entry(&g.as, bus + 3 * PAGE), 0);
	CHECK_EQ(g.log.errors, 0);
	rig_destroy(&g);
}

/*
 * Coherent memory (a ring's areas) comes from the top of the table down, buffers from the bottom
 * up, so that no line of entries holds both; where the two meet, the table is full.
 */
VT_TEST(coherent_memory_sits_at_the_top_of_the_table_and_buffers_at_the_bottom)
{
	struct rig g;
	REQUIRE_EQ(rig_init_sized(&g, VT_DMA_IOMMU_STRICT, 8 * PAGE, 0), 0);
	void *a, *b;
	uint64_t abus, bbus, buf[4], more;

	REQUIRE_EQ(vt_dma_map(g.dma, mem(&g, 40 * PAGE), 64, VT_DMA_TO_DEVICE, &buf[0]), 0);
	REQUIRE_EQ(vt_dma_alloc_coherent(g.dma, 2 * PAGE, &a, &abus), 0);
	REQUIRE_EQ(vt_dma_alloc_coherent(g.dma, 10, &b, &bbus), 0);
	CHECK_EQ(abus, buf[0] + 6 * PAGE);
	CHECK_EQ(bbus, buf[0] + 5 * PAGE);
	for (unsigned int i = 1; i < 4; i++)
		REQUIRE_EQ(
		    vt_dma_map(g.dma, mem(&g, (40 + i) * PAGE), 64, VT_DMA_TO_DEVICE, &buf[i]), 0);
	CHECK_EQ(buf[3], buf[0] + 3 * PAGE);
	/* Page 4 is the last one; a run of two fits nowhere. */
	CHECK_EQ(vt_dma_map(g.dma, mem(&g, 50 * PAGE), PAGE + 1, VT_DMA_TO_DEVICE, &more), -ENOSPC);
	void *c;
	uint64_t cbus;
	CHECK_EQ(vt_dma_alloc_coherent(g.dma, 2 * PAGE, &c, &cbus), -ENOSPC);
	REQUIRE_EQ(vt_dma_alloc_coherent(g.dma, PAGE, &c, &cbus), 0);
	CHECK_EQ(cbus, buf[0] + 4 * PAGE);
	CHECK_EQ(g.log.errors, 2);
	vt_dma_free_coherent(g.dma, PAGE, c, cbus);
	vt_dma_free_coherent(g.dma, 10, b, bbus);
	vt_dma_free_coherent(g.dma, 2 * PAGE, a, abus);
	for (unsigned int i = 0; i < 4; i++)
		CHECK_EQ(vt_dma_unmap(g.dma, buf[i], 64, VT_DMA_TO_DEVICE), 0);
	rig_destroy(&g);
}

VT_TEST(a_page_table_is_for_strict_and_lazy_and_excludes_iotlb_ops)
{
	struct vt_shm *shm;
	struct vt_dma *dma = NULL;
	struct log_capture c = { 0 };
	struct vt_log hook = { .fn = capture_log, .opaque = &c, .max_level = VT_LOG_WARN };
	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, SHM_SIZE, GPA_BASE, NULL), 0);

	struct vt_dma_params p = {
		.mode = VT_DMA_IOMMU_PREMAPPED, .shm = shm, .log = &hook, .page_table = true
	};
	CHECK_EQ(vt_dma_new(&p, &dma), -EINVAL);
	static const struct vt_dma_iotlb_ops ops = { 0 };
	p = (struct vt_dma_params){ .mode = VT_DMA_IOMMU_STRICT,
				    .shm = shm,
				    .log = &hook,
				    .page_table = true,
				    .iotlb_ops = &ops };
	CHECK_EQ(vt_dma_new(&p, &dma), -EINVAL);
	p = (struct vt_dma_params){ .mode = VT_DMA_IOMMU_STRICT,
				    .shm = shm,
				    .log = &hook,
				    .page_table = true,
				    .iova_base = 100 };
	CHECK_EQ(vt_dma_new(&p, &dma), -EINVAL);
	p.iova_base = 0;
	p.iova_size = 1ULL << 40; /* more pages than a table may have */
	CHECK_EQ(vt_dma_new(&p, &dma), -EINVAL);
	CHECK_EQ(c.errors, 4);
	/* Nor is it ignored by the modes that have none. */
	p = (struct vt_dma_params){
		.mode = VT_DMA_DIRECT, .shm = shm, .log = &hook, .page_table = true
	};
	CHECK_EQ(vt_dma_new(&p, &dma), -EINVAL);
	p.mode = VT_DMA_BOUNCE;
	CHECK_EQ(vt_dma_new(&p, &dma), -EINVAL);
	CHECK_EQ(c.errors, 6);

	/* Other DMA objects have no device address space to give. */
	p = (struct vt_dma_params){ .mode = VT_DMA_DIRECT, .shm = shm, .log = &hook };
	REQUIRE_EQ(vt_dma_new(&p, &dma), 0);
	struct vt_as as;
	CHECK_EQ(vt_dma_device_as(dma, &as), -EOPNOTSUPP);
	vt_dma_free(dma);
	vt_shm_free(shm);
}

/*
 * The rule a device relies on, across threads: a walker that loads the generation, then an
 * entry, then the generation again and finds it unchanged, has an entry that was not cleared in
 * between: it never holds the host page of a mapping unmapped (strict) before its walk ended.
 */
struct walker {
	struct rig *g;
	_Atomic uint64_t bus; /* the page being walked, 0 for none */
	atomic_bool stop;
	_Atomic uint64_t walks, hits, stale;
	_Atomic uint64_t expected_host; /* the host page mapped at @bus, while it is */
};

static void *walk_thread(void *arg)
{
	struct walker *w = arg;
	while (!atomic_load(&w->stop)) {
		uint64_t bus = atomic_load(&w->bus);
		if (!bus)
			continue;
		uint64_t want = atomic_load(&w->expected_host);
		uint64_t gen = vt_as_generation(&w->g->as);
		uint64_t e = vt_as_page_entry(&w->g->as, bus);
		bool current = vt_as_generation(&w->g->as) == gen;
		if (e && current) {
			atomic_fetch_add(&w->hits, 1);
			/* Good under an unchanged generation: the mapping still published. */
			if ((e & ~(PAGE - 1)) != want)
				atomic_fetch_add(&w->stale, 1);
		}
		/* Counted last: the writer's next round waits for this walk to end. */
		atomic_fetch_add(&w->walks, 1);
	}
	return NULL;
}

VT_TEST(a_walker_on_another_thread_never_trusts_an_entry_cleared_under_it)
{
	struct rig g;
	REQUIRE_EQ(rig_init_sized(&g, VT_DMA_IOMMU_STRICT, 2 * PAGE, 0), 0);
	struct walker w = { .g = &g };
	pthread_t t;
	REQUIRE_EQ(pthread_create(&t, NULL, walk_thread, &w), 0);

	/* Two IOVA pages: each one is remapped to a different host page every other round. */
	for (unsigned int round = 0; round < 4000 && !vt_test_failed; round++) {
		uint64_t bus;
		uint8_t *host = mem(&g, (round % 64) * PAGE);
		atomic_store(&w.expected_host, (uint64_t)(uintptr_t)host);
		REQUIRE_EQ(vt_dma_map(g.dma, host, 64, VT_DMA_TO_DEVICE, &bus), 0);
		atomic_store(&w.bus, bus);
		for (uint64_t seen = atomic_load(&w.walks); atomic_load(&w.walks) < seen + 2;)
			;
		atomic_store(&w.bus, 0);
		REQUIRE_EQ(vt_dma_unmap(g.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	}
	atomic_store(&w.stop, true);
	pthread_join(t, NULL);
	CHECK(atomic_load(&w.hits) > 0);
	CHECK_EQ(atomic_load(&w.stale), 0);
	rig_destroy(&g);
}

/*
 * What a ring relies on at every flush, across threads: when unchanged_since vouches for its
 * area up to a generation, and the generation is still that one, the area's entry is still the
 * one it cached. The writer moves the area to new pages now and then, between bursts of buffer
 * maps and unmaps that leave it alone (some longer than the flush log).
 */
struct ring_reader {
	struct rig *g;
	_Atomic uint64_t area; /* the area's bus address */
	atomic_bool stop;
	_Atomic uint64_t vouched, checked, wrong;
	_Atomic uint64_t loops; /* the writer waits for a few between its rounds */
};

static void *ring_reader_thread(void *arg)
{
	struct ring_reader *r = arg;
	uint64_t since = 0, bus = 0, cached = 0;

	while (!atomic_load(&r->stop)) {
		uint64_t now;
		if (!cached || vt_as_unchanged_since(&r->g->as, since, bus, PAGE, &now) < 0) {
			/* Resolve again, as a ring does: the generation, then the entry. */
			since = vt_as_generation(&r->g->as);
			bus = atomic_load(&r->area);
			cached = vt_as_page_entry(&r->g->as, bus);
			atomic_fetch_add(&r->loops, 1);
			continue;
		}
		atomic_fetch_add(&r->vouched, 1);
		uint64_t entry = vt_as_page_entry(&r->g->as, bus);
		/*
		 * An entry cleared may show before the generation that publishes the clear moves
		 * (a device then refuses it, rightly): only another mapping is a wrong answer.
		 */
		if (vt_as_generation(&r->g->as) == now && entry) {
			atomic_fetch_add(&r->checked, 1);
			if (entry != cached)
				atomic_fetch_add(&r->wrong, 1);
		}
		since = now;
		atomic_fetch_add(&r->loops, 1);
	}
	return NULL;
}

VT_TEST(unchanged_since_on_another_thread_never_vouches_for_a_moved_area)
{
	struct rig g;
	REQUIRE_EQ(rig_init_sized(&g, VT_DMA_IOMMU_STRICT, 32 * PAGE, 0), 0);
	struct ring_reader r = { .g = &g };
	void *area;
	uint64_t area_bus;
	REQUIRE_EQ(vt_dma_alloc_coherent(g.dma, PAGE, &area, &area_bus), 0);
	atomic_store(&r.area, area_bus);
	pthread_t t;
	REQUIRE_EQ(pthread_create(&t, NULL, ring_reader_thread, &r), 0);

	/*
	 * The host pages the area left, held a while: shared memory would hand the page just
	 * freed straight back, and an area that moves between the same two pages and IOVAs looks
	 * unmoved to a reader that compares entries.
	 */
	void *held[5] = { 0 };
	unsigned int next_held = 0;
	uint64_t rng = 1;
	bool ok = true;
	for (unsigned int round = 0; round < 10000 && ok && !vt_test_failed; round++) {
		rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
		/* 0 to 11 buffer flushes, then, one round in four, the area moves. */
		for (unsigned int i = 0; i < (rng >> 60) % 12 && ok; i++) {
			uint64_t bus;
			ok = vt_dma_map(g.dma, mem(&g, (i + 1) * PAGE), 64, VT_DMA_TO_DEVICE,
					&bus) == 0 &&
			     vt_dma_unmap(g.dma, bus, 64, VT_DMA_TO_DEVICE) == 0;
		}
		if (ok && (rng >> 40) % 4 == 0) {
			void *next;
			uint64_t next_bus;
			ok = vt_dma_alloc_coherent(g.dma, PAGE, &next, &next_bus) == 0;
			if (!ok)
				break;
			atomic_store(&r.area, next_bus);
			vt_dma_free_coherent(g.dma, PAGE, area, area_bus);
			area = next;
			area_bus = next_bus;
			if (held[next_held])
				vt_shm_release(g.shm, held[next_held], PAGE);
			ok = vt_shm_alloc(g.shm, PAGE, PAGE, &held[next_held]) == 0;
			next_held = (next_held + 1) % 5;
		}
		for (uint64_t seen = atomic_load(&r.loops); atomic_load(&r.loops) < seen + 3;)
			;
	}
	CHECK(ok);
	atomic_store(&r.stop, true);
	pthread_join(t, NULL);
	vt_dma_free_coherent(g.dma, PAGE, area, area_bus);
	for (unsigned int i = 0; i < 5; i++)
		if (held[i])
			vt_shm_release(g.shm, held[i], PAGE);
	CHECK(atomic_load(&r.checked) > 0);
	CHECK_EQ(atomic_load(&r.wrong), 0);
	CHECK_EQ(g.log.errors, 0);
	rig_destroy(&g);
}
