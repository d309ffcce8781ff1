/* SPDX-License-Identifier: MIT */
/*
 * The IOMMU DMA modes (strict, lazy, premapped) against a real device side: a vt_iotlb filled by
 * the update / invalidate callbacks, which turn the driver's addresses into the device's own
 * mapping of shared memory through a memory table, as a vhost-user backend does. The callbacks
 * also keep a shadow of what the device holds, to catch an IOVA published again while a stale
 * translation of it is still reachable.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

#include <virtue/dma.h>
#include <virtue/iotlb.h>
#include <virtue/memtable.h>

#include "harness.h"

#define GPA_BASE   (1ULL << 30)
#define SHM_SIZE   (1ULL << 20)
#define PAGE	   4096ULL
#define SHADOW_MAX 1024

struct log_capture {
	unsigned int errors, warnings;
	char last[512];
};

static void capture_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_capture *c = opaque;

	c->errors += level == VT_LOG_ERROR;
	c->warnings += level == VT_LOG_WARN;
	snprintf(c->last, sizeof(c->last), "%s", message);
}

struct published {
	uint64_t iova, size;
};

struct device_side {
	struct vt_memtable *table;
	void *maps[VT_SHM_MAX_REGIONS];
	uint64_t sizes[VT_SHM_MAX_REGIONS];
	unsigned int count;
	struct vt_iotlb *iotlb;
	struct vt_as as;

	/* What the callbacks saw. */
	unsigned int updates, invalidations;
	/* Batch hooks: calls, how deep, and the updates and invalidations made inside one. */
	unsigned int batch_begins, batch_ends, batch_depth, calls_in_batch;
	bool batch_hooks_misnested;
	struct published last_update;
	uint64_t last_uaddr;
	unsigned int last_perm;
	unsigned int stale_updates;	      /* updates of an IOVA the device could still reach */
	int fail_updates, fail_invalidations; /* the next N calls fail with -EIO */
	/* While nonzero: the fail_from_update-th update made (1: the first) and later fail, -EIO.
	 */
	unsigned int fail_from_update;
	/* Calls of update_burst, and of update outside one (device_burst_ops). */
	unsigned int update_bursts, single_updates;
	bool in_update_burst;
	/* While nonzero: update_burst stops after this many updates of a call, saying nothing. */
	unsigned int burst_stops_silently_after;
	/* The next update, once armed, waits (in_held_update) until held_update is cleared. */
	atomic_bool hold_next_update, held_update, in_held_update;

	struct published shadow[SHADOW_MAX]; /* published, not yet invalidated */
	unsigned int shadow_count;
};

static bool overlaps(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size)
{
	return a < b + b_size && b < a + a_size;
}

static void shadow_add(struct device_side *dev, uint64_t iova, uint64_t size)
{
	if (dev->shadow_count < SHADOW_MAX)
		dev->shadow[dev->shadow_count++] = (struct published){ iova, size };
}

static int device_update(void *opaque, uint64_t iova, uint64_t size, uint64_t uaddr,
			 unsigned int perm)
{
	struct device_side *dev = opaque;
	struct vt_iotlb_entry entry;

	if (atomic_exchange(&dev->hold_next_update, false)) {
		atomic_store(&dev->in_held_update, true);
		while (atomic_load(&dev->held_update))
			usleep(100);
	}
	if (dev->fail_updates > 0) {
		dev->fail_updates--;
		return -EIO;
	}
	if (dev->fail_from_update && dev->updates + 1 >= dev->fail_from_update)
		return -EIO;
	dev->single_updates += !dev->in_update_burst;
	/* An IOVA handed out again must not still translate to what it meant before. */
	bool stale = vt_iotlb_lookup(dev->iotlb, iova, &entry) == 0;
	for (uint64_t page = (iova + PAGE - 1) & ~(PAGE - 1); page < iova + size; page += PAGE)
		stale |= vt_iotlb_lookup(dev->iotlb, page, &entry) == 0;
	for (unsigned int i = 0; i < dev->shadow_count; i++)
		stale |= overlaps(iova, size, dev->shadow[i].iova, dev->shadow[i].size);
	if (stale)
		dev->stale_updates++;

	void *hva;
	int ret = vt_memtable_uaddr_to_hva(dev->table, uaddr, size, &hva);
	if (ret == 0)
		ret = vt_iotlb_update(dev->iotlb, iova, size, hva, perm);
	if (ret < 0)
		return ret;
	dev->updates++;
	dev->calls_in_batch += dev->batch_depth > 0;
	dev->last_update = (struct published){ iova, size };
	dev->last_uaddr = uaddr;
	dev->last_perm = perm;
	shadow_add(dev, iova, size);
	return 0;
}

static int device_invalidate(void *opaque, uint64_t iova, uint64_t size)
{
	struct device_side *dev = opaque;

	if (dev->fail_invalidations > 0) {
		dev->fail_invalidations--;
		return -EIO;
	}
	int ret = vt_iotlb_invalidate(dev->iotlb, iova, size);
	if (ret < 0)
		return ret;
	dev->invalidations++;
	dev->calls_in_batch += dev->batch_depth > 0;
	/* The shadow loses whatever the range covers; pieces outside it survive. */
	for (unsigned int i = 0; i < dev->shadow_count;) {
		struct published p = dev->shadow[i];
		if (!overlaps(iova, size, p.iova, p.size)) {
			i++;
			continue;
		}
		dev->shadow[i] = dev->shadow[--dev->shadow_count];
		if (p.iova < iova)
			shadow_add(dev, p.iova, iova - p.iova);
		if (p.iova + p.size > iova + size)
			shadow_add(dev, iova + size, p.iova + p.size - (iova + size));
	}
	return 0;
}

/* The hooks hold the IOTLB's writer lock for the batch, as vt_iotlb_feed_ops does. */
static void device_batch_begin(void *opaque)
{
	struct device_side *dev = opaque;

	dev->batch_hooks_misnested |= dev->batch_depth != 0;
	dev->batch_depth++;
	dev->batch_begins++;
	vt_iotlb_batch_begin(dev->iotlb);
}

static void device_batch_end(void *opaque)
{
	struct device_side *dev = opaque;

	dev->batch_hooks_misnested |= dev->batch_depth != 1;
	dev->batch_depth--;
	dev->batch_ends++;
	vt_iotlb_batch_end(dev->iotlb);
}

static const struct vt_dma_iotlb_ops device_ops = {
	.update = device_update,
	.invalidate = device_invalidate,
	.batch_begin = device_batch_begin,
	.batch_end = device_batch_end,
};

/* The same updates in one call, each as device_update makes it: how many, the first ones. */
static unsigned int device_update_burst(void *opaque, const struct vt_dma_iotlb_map *maps,
					unsigned int count, int *error)
{
	struct device_side *dev = opaque;
	unsigned int i;

	dev->update_bursts++;
	dev->in_update_burst = true;
	for (i = 0; i < count; i++) {
		if (dev->burst_stops_silently_after && i == dev->burst_stops_silently_after)
			break;
		int ret =
		    device_update(opaque, maps[i].iova, maps[i].size, maps[i].uaddr, maps[i].perm);
		if (ret < 0) {
			*error = ret;
			break;
		}
	}
	dev->in_update_burst = false;
	return i;
}

/* device_ops with the optional update_burst: a transport that takes a burst's maps at once. */
static const struct vt_dma_iotlb_ops device_burst_ops = {
	.update = device_update,
	.update_burst = device_update_burst,
	.invalidate = device_invalidate,
	.batch_begin = device_batch_begin,
	.batch_end = device_batch_end,
};

static int device_attach(struct device_side *dev, const struct vt_shm *shm)
{
	*dev = (struct device_side){ .table = vt_memtable_new(NULL) };
	if (!dev->table)
		return -ENOMEM;
	for (unsigned int i = 0; i < vt_shm_count(shm); i++) {
		const struct vt_shm_region *r = vt_shm_region(shm, i);
		void *hva = r->hva; /* caller memory: the device is this process */
		if (r->fd >= 0) {
			hva = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd,
				   (off_t)r->fd_offset);
			if (hva == MAP_FAILED)
				return -errno;
			dev->maps[dev->count] = hva;
			dev->sizes[dev->count++] = r->size;
		}
		struct vt_mem_region mr = {
			.gpa = r->gpa,
			.size = r->size,
			.hva = hva,
			.uaddr = (uint64_t)(uintptr_t)r->hva,
		};
		int ret = vt_memtable_add(dev->table, &mr);
		if (ret < 0)
			return ret;
	}
	int ret = vt_iotlb_new(NULL, &dev->iotlb);
	if (ret < 0)
		return ret;
	dev->as = vt_iotlb_as(dev->iotlb);
	return 0;
}

static void device_detach(struct device_side *dev)
{
	for (unsigned int i = 0; i < dev->count; i++)
		munmap(dev->maps[i], dev->sizes[i]);
	vt_iotlb_free(dev->iotlb);
	vt_memtable_free(dev->table);
}

static unsigned int device_entries(struct device_side *dev)
{
	struct vt_iotlb_stats st;

	vt_iotlb_get_stats(dev->iotlb, &st);
	return st.entries;
}

struct fixture {
	struct vt_shm *shm;
	struct vt_dma *dma;
	struct device_side dev;
	struct log_capture log_seen;
	struct vt_log log;
	struct vt_dma_params params;
};

/* The shared memory (and the device's view of it) first; the DMA once params are final. */
static int setup_memory(struct fixture *f, enum vt_dma_mode mode)
{
	*f = (struct fixture){ 0 };
	f->log =
	    (struct vt_log){ .fn = capture_log, .opaque = &f->log_seen, .max_level = VT_LOG_DEBUG };
	int ret = vt_shm_new(&f->shm);
	if (ret == 0)
		ret = vt_shm_add_memfd(f->shm, SHM_SIZE, GPA_BASE, NULL);
	f->params = (struct vt_dma_params){
		.mode = mode,
		.shm = f->shm,
		.log = &f->log,
		.iotlb_ops = &device_ops,
		.iotlb_opaque = &f->dev,
	};
	return ret;
}

static int setup_dma(struct fixture *f)
{
	int ret = device_attach(&f->dev, f->shm);
	return ret < 0 ? ret : vt_dma_new(&f->params, &f->dma);
}

static int setup(struct fixture *f, enum vt_dma_mode mode)
{
	int ret = setup_memory(f, mode);
	return ret < 0 ? ret : setup_dma(f);
}

static void teardown(struct fixture *f)
{
	vt_dma_free(f->dma); /* may still publish: the device goes last */
	device_detach(&f->dev);
	vt_shm_free(f->shm);
}

static void *shm_buffer(struct fixture *f, size_t len)
{
	void *p = NULL;
	return vt_shm_alloc(f->shm, len, 0, &p) == 0 ? p : NULL;
}

/* A fixture in @mode and a 64-byte buffer of its shared memory, or NULL. */
static uint8_t *setup_with_buffer(struct fixture *f, enum vt_dma_mode mode)
{
	return setup(f, mode) == 0 ? shm_buffer(f, 64) : NULL;
}

/*
 * A 64-byte buffer mapped @n times, to device reads: on a fresh IOVA space, @n consecutive
 * pages. The buffer, or NULL when the buffer or a mapping could not be had.
 */
static uint8_t *map_pages(struct fixture *f, uint64_t *bus, int n)
{
	uint8_t *p = shm_buffer(f, 64);
	for (int i = 0; p && i < n; i++)
		if (vt_dma_map(f->dma, p, 64, VT_DMA_TO_DEVICE, &bus[i]) < 0)
			return NULL;
	return p;
}

static void fill(void *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i++)
		((uint8_t *)p)[i] = (uint8_t)(seed + i * 13);
}

static bool device_sees(struct fixture *f, uint64_t bus, const void *expect, size_t len)
{
	uint8_t seen[8192];

	return len <= sizeof(seen) && vt_as_read(&f->dev.as, bus, seen, len, NULL) == 0 &&
	       memcmp(seen, expect, len) == 0;
}

VT_TEST(strict_device_reads_what_the_driver_wrote)
{
	struct fixture f;
	uint64_t bus;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_STRICT), 0);
	uint8_t *p = shm_buffer(&f, 6000);
	REQUIRE(p != NULL);
	fill(p + 100, 5000, 1);
	REQUIRE_EQ(vt_dma_map(f.dma, p + 100, 5000, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK(device_sees(&f, bus, p + 100, 5000));
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 5000, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(strict_driver_reads_what_the_device_wrote_after_unmap)
{
	struct fixture f;
	static const char reply[] = "from the device, through the IOTLB";
	uint64_t bus;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_STRICT), 0);
	char *p = shm_buffer(&f, 128);
	REQUIRE(p != NULL);
	memset(p, 0, 128);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 128, VT_DMA_FROM_DEVICE, &bus), 0);
	CHECK_EQ(vt_as_write(&f.dev.as, bus, reply, sizeof(reply), NULL), 0);
	CHECK_EQ(vt_dma_sync_for_cpu(f.dma, bus, 128, VT_DMA_FROM_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 128, VT_DMA_FROM_DEVICE), 0);
	CHECK_STR(p, reply);
	teardown(&f);
}

VT_TEST(to_device_mapping_cannot_be_written_by_the_device)
{
	struct fixture f;
	struct vt_as_fault fault = { 0 };
	uint64_t bus;

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_STRICT);
	REQUIRE(p != NULL);
	fill(p, 64, 3);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(f.dev.last_perm, VT_ACCESS_READ);
	CHECK_EQ(vt_as_write(&f.dev.as, bus, "x", 1, &fault), -EACCES);
	CHECK(fault.addr == bus);
	CHECK(device_sees(&f, bus, p, 64));
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(from_device_mapping_cannot_be_read_by_the_device)
{
	struct fixture f;
	uint8_t seen[64];
	uint64_t bus;

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_STRICT);
	REQUIRE(p != NULL);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_FROM_DEVICE, &bus), 0);
	CHECK_EQ(f.dev.last_perm, VT_ACCESS_WRITE);
	CHECK_EQ(vt_as_read(&f.dev.as, bus, seen, sizeof(seen), NULL), -EACCES);
	CHECK_EQ(vt_as_write(&f.dev.as, bus, seen, sizeof(seen), NULL), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_FROM_DEVICE), 0);
	teardown(&f);
}

VT_TEST(bidirectional_mapping_is_read_and_written_by_the_device)
{
	struct fixture f;
	uint64_t bus;

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_STRICT);
	REQUIRE(p != NULL);
	fill(p, 64, 5);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_BIDIRECTIONAL, &bus), 0);
	CHECK_EQ(f.dev.last_perm, VT_ACCESS_RW);
	CHECK(device_sees(&f, bus, p, 64));
	CHECK_EQ(vt_as_write(&f.dev.as, bus + 10, "rw", 2, NULL), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_BIDIRECTIONAL), 0);
	CHECK(memcmp(p + 10, "rw", 2) == 0);
	teardown(&f);
}

VT_TEST(bus_address_keeps_the_offset_in_the_page)
{
	struct fixture f;
	uint64_t bus;

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_STRICT), 0);
	f.params.iova_base = 1ULL << 32;
	f.params.iova_size = 1ULL << 24;
	REQUIRE_EQ(setup_dma(&f), 0);
	uint8_t *p = shm_buffer(&f, 8192);
	REQUIRE(p != NULL);
	REQUIRE_EQ(vt_dma_map(f.dma, p + 1234, 10, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(bus & (PAGE - 1), ((uintptr_t)p + 1234) & (PAGE - 1));
	CHECK(bus >= (1ULL << 32) && bus < (1ULL << 32) + (1ULL << 24));
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 10, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(map_inside_shared_memory_publishes_whole_pages)
{
	struct fixture f;
	uint64_t bus;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_STRICT), 0);
	uint8_t *p = shm_buffer(&f, 3 * PAGE);
	REQUIRE(p != NULL);
	/* 100 bytes straddling a page boundary: two pages published. */
	REQUIRE_EQ(vt_dma_map(f.dma, p + PAGE - 50, 100, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(f.dev.last_update.iova, bus & ~(PAGE - 1));
	CHECK_EQ(f.dev.last_update.size, 2 * PAGE);
	CHECK_EQ(f.dev.last_uaddr, ((uintptr_t)p + PAGE - 50) & ~(PAGE - 1));
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 100, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(map_at_the_edge_of_shared_memory_publishes_only_its_bytes)
{
	struct fixture f;
	struct vt_as_fault fault;
	uint8_t seen[1];
	uint64_t bus;
	uint8_t *memory = aligned_alloc(PAGE, 4 * PAGE);

	REQUIRE(memory != NULL);
	fill(memory, 4 * PAGE, 9);
	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_STRICT), 0);
	/* Caller memory starting and ending inside pages: rounding would leave shared memory. */
	uint8_t *start = memory + 100;
	REQUIRE_EQ(vt_shm_add_host(f.shm, start, 2 * PAGE, 0x10000000, NULL), 0);
	REQUIRE_EQ(setup_dma(&f), 0);
	REQUIRE_EQ(vt_dma_map(f.dma, start, 50, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(f.dev.last_update.iova, bus);
	CHECK_EQ(f.dev.last_update.size, 50);
	CHECK(device_sees(&f, bus, start, 50));
	CHECK_EQ(vt_as_read(&f.dev.as, bus - 1, seen, 1, &fault), -EFAULT);
	CHECK_EQ(vt_as_read(&f.dev.as, bus + 50, seen, 1, &fault), -EFAULT);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 50, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
	free(memory);
}

VT_TEST(strict_unmap_makes_the_iova_unreachable_at_once)
{
	struct fixture f;
	struct vt_as_fault fault = { 0 };
	uint8_t seen[16];
	uint64_t bus;

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_STRICT);
	REQUIRE(p != NULL);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_as_read(&f.dev.as, bus, seen, sizeof(seen), &fault), -EFAULT);
	CHECK(fault.addr == bus);
	CHECK_EQ(device_entries(&f.dev), 0);
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.iotlb_updates, 1);
	CHECK_EQ(st.iotlb_invalidations, 1);
	teardown(&f);
}

VT_TEST(unmap_with_another_length_or_direction_is_einval_and_keeps_the_mapping)
{
	struct fixture f;
	uint64_t bus;

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_STRICT);
	REQUIRE(p != NULL);
	fill(p, 64, 11);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 32, VT_DMA_TO_DEVICE), -EINVAL);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_FROM_DEVICE), -EINVAL);
	CHECK(device_sees(&f, bus, p, 64));
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(unmap_of_an_address_not_mapped_is_enoent)
{
	struct fixture f;
	uint64_t bus;

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_STRICT);
	REQUIRE(p != NULL);
	CHECK_EQ(vt_dma_unmap(f.dma, 1ULL << 20, 64, VT_DMA_TO_DEVICE), -ENOENT);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus + 8, 56, VT_DMA_TO_DEVICE), -ENOENT); /* not its start */
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), -ENOENT); /* twice */
	teardown(&f);
}

VT_TEST(iommu_map_outside_shared_memory_is_efault)
{
	struct fixture f;
	uint8_t private_buffer[64];
	uint64_t bus;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_STRICT), 0);
	CHECK_EQ(vt_dma_map(f.dma, private_buffer, sizeof(private_buffer), VT_DMA_TO_DEVICE, &bus),
		 -EFAULT);
	CHECK_EQ(f.dev.updates, 0);
	CHECK_EQ(f.log_seen.errors, 1);
	teardown(&f);
}

VT_TEST(sync_checks_that_it_names_a_live_mapping)
{
	struct fixture f;
	uint64_t bus;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_STRICT), 0);
	uint8_t *p = shm_buffer(&f, 256);
	REQUIRE(p != NULL);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 256, VT_DMA_FROM_DEVICE, &bus), 0);
	CHECK_EQ(vt_dma_sync_for_cpu(f.dma, bus + 16, 64, VT_DMA_FROM_DEVICE), 0);
	CHECK_EQ(vt_dma_sync_for_cpu(f.dma, bus + 200, 64, VT_DMA_FROM_DEVICE), -ENOENT);
	CHECK_EQ(vt_dma_sync_for_device(f.dma, bus, 256, VT_DMA_TO_DEVICE), -EINVAL);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 256, VT_DMA_FROM_DEVICE), 0);
	CHECK_EQ(vt_dma_sync_for_cpu(f.dma, bus, 256, VT_DMA_FROM_DEVICE), -ENOENT);
	teardown(&f);
}

VT_TEST(iova_space_exhaustion_is_enospc_and_recovers)
{
	struct fixture f;
	uint64_t bus[17];

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_STRICT), 0);
	f.params.iova_size = 16 * PAGE;
	REQUIRE_EQ(setup_dma(&f), 0);
	uint8_t *p = shm_buffer(&f, 64);
	REQUIRE(p != NULL);
	for (int i = 0; i < 16; i++)
		REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus[i]), 0);
	CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus[16]), -ENOSPC);
	CHECK_EQ(vt_dma_unmap(f.dma, bus[3], 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus[3]), 0);
	for (int i = 0; i < 16; i++)
		CHECK_EQ(vt_dma_unmap(f.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(f.dev.stale_updates, 0);
	teardown(&f);
}

VT_TEST(unmapped_iova_is_reused_by_the_next_map_of_its_size_after_its_invalidation)
{
	struct fixture f;
	uint8_t seen[16];
	uint64_t a, b;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_STRICT), 0);
	uint8_t *p = shm_buffer(&f, 64), *q = shm_buffer(&f, 64);
	REQUIRE(p != NULL && q != NULL);
	fill(q, 64, 7);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &a), 0);
	REQUIRE_EQ(vt_dma_unmap(f.dma, a, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_as_read(&f.dev.as, a, seen, sizeof(seen), NULL), -EFAULT);
	/* The old bus address is not live: unmapping it again is refused. */
	CHECK_EQ(vt_dma_unmap(f.dma, a, 64, VT_DMA_TO_DEVICE), -ENOENT);
	REQUIRE_EQ(vt_dma_map(f.dma, q, 64, VT_DMA_TO_DEVICE, &b), 0);
	CHECK_EQ(b & ~(uint64_t)(PAGE - 1), a & ~(uint64_t)(PAGE - 1));
	CHECK(device_sees(&f, b, q, 64));
	CHECK_EQ(vt_dma_unmap(f.dma, b, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(f.dev.stale_updates, 0);
	teardown(&f);
}

VT_TEST(iova_kept_for_reuse_goes_back_when_another_size_needs_the_space)
{
	struct fixture f;
	uint64_t bus[16], big;

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_STRICT), 0);
	f.params.iova_size = 16 * PAGE;
	REQUIRE_EQ(setup_dma(&f), 0);
	uint8_t *p = shm_buffer(&f, 16 * PAGE);
	REQUIRE(p != NULL);
	for (int i = 0; i < 16; i++)
		REQUIRE_EQ(vt_dma_map(f.dma, p + i * PAGE, 64, VT_DMA_TO_DEVICE, &bus[i]), 0);
	for (int i = 0; i < 16; i++)
		REQUIRE_EQ(vt_dma_unmap(f.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	/* Every page is idle, kept for one-page maps: the whole space is still there. */
	CHECK_EQ(vt_dma_map(f.dma, p, 16 * PAGE, VT_DMA_TO_DEVICE, &big), 0);
	CHECK(device_sees(&f, big, p, 64));
	CHECK_EQ(vt_dma_unmap(f.dma, big, 16 * PAGE, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(f.dev.stale_updates, 0);
	teardown(&f);
}

VT_TEST(failed_update_fails_the_map_and_leaves_nothing_behind)
{
	struct fixture f;
	uint64_t bus;

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_STRICT), 0);
	f.params.iova_size = PAGE;
	REQUIRE_EQ(setup_dma(&f), 0);
	uint8_t *p = shm_buffer(&f, 64);
	REQUIRE(p != NULL);
	f.dev.fail_updates = 1;
	CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), -EIO);
	CHECK_EQ(device_entries(&f.dev), 0);
	/* The single page of IOVA space was given back. */
	CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.map_failures, 1);
	teardown(&f);
}

/*
 * Strict mode with one page of IOVA space, and 64 bytes of shared memory (filled from @seed)
 * mapped to the device in it: every other map must wait for that page. The buffer, or NULL.
 */
static uint8_t *one_page_strict_mapping(struct fixture *f, unsigned int seed, uint64_t *bus)
{
	if (setup_memory(f, VT_DMA_IOMMU_STRICT) < 0)
		return NULL;
	f->params.iova_size = PAGE;
	uint8_t *p = setup_dma(f) == 0 ? shm_buffer(f, 64) : NULL;
	if (!p)
		return NULL;
	fill(p, 64, seed);
	return vt_dma_map(f->dma, p, 64, VT_DMA_TO_DEVICE, bus) == 0 ? p : NULL;
}

VT_TEST(failed_invalidation_keeps_the_mapping_and_its_iova)
{
	struct fixture f;
	uint64_t bus, other;

	uint8_t *p = one_page_strict_mapping(&f, 17, &bus);
	REQUIRE(p != NULL);
	f.dev.fail_invalidations = 1;
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), -EIO);
	/* Still mapped, and the IOVA is not handed to anyone else. */
	CHECK(device_sees(&f, bus, p, 64));
	CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &other), -ENOSPC);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(device_entries(&f.dev), 0);
	teardown(&f);
}

VT_TEST(lazy_unmapped_iova_stays_reachable_until_flush)
{
	struct fixture f;
	uint64_t bus;

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_LAZY);
	REQUIRE(p != NULL);
	fill(p, 64, 19);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	/* The lazy window: unmapped for the driver, still translated by the device. */
	CHECK(device_sees(&f, bus, p, 64));
	CHECK_EQ(f.dev.invalidations, 0);
	/* But no longer a mapping the driver can use. */
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), -ENOENT);
	teardown(&f);
}

VT_TEST(lazy_flush_makes_unmapped_iovas_unreachable)
{
	struct fixture f;
	uint8_t seen[8];
	uint64_t bus[3];

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_LAZY);
	REQUIRE(p != NULL);
	for (int i = 0; i < 3; i++)
		REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus[i]), 0);
	for (int i = 0; i < 3; i++)
		REQUIRE_EQ(vt_dma_unmap(f.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(device_entries(&f.dev) > 0, 1);
	CHECK_EQ(vt_dma_flush(f.dma), 0);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(vt_as_read(&f.dev.as, bus[i], seen, sizeof(seen), NULL), -EFAULT);
	CHECK_EQ(device_entries(&f.dev), 0);
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.flushes, 1);
	CHECK_EQ(vt_dma_flush(f.dma), 0); /* nothing left: not a flush */
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.flushes, 1);
	teardown(&f);
}

VT_TEST(lazy_merges_adjacent_ranges_into_one_invalidation)
{
	struct fixture f;
	uint64_t bus[4];

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_LAZY), 0);
	f.params.lazy_batch = 4;
	REQUIRE_EQ(setup_dma(&f), 0);
	REQUIRE(map_pages(&f, bus, 4) != NULL);
	for (int i = 0; i < 3; i++)
		REQUIRE_EQ(vt_dma_unmap(f.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(f.dev.invalidations, 0);
	/* The fourth fills the batch. */
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus[3], 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(f.dev.invalidations, 1);
	CHECK_EQ(device_entries(&f.dev), 0);
	teardown(&f);
}

VT_TEST(lazy_merges_ranges_unmapped_out_of_order)
{
	static const int order[8] = { 5, 2, 7, 0, 3, 6, 1, 4 };
	struct fixture f;
	uint64_t bus[8];

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_LAZY), 0);
	f.params.lazy_batch = 8;
	REQUIRE_EQ(setup_dma(&f), 0);
	REQUIRE(map_pages(&f, bus, 8) != NULL);
	for (int i = 0; i < 8; i++)
		REQUIRE_EQ(vt_dma_unmap(f.dma, bus[order[i]], 64, VT_DMA_TO_DEVICE), 0);
	/* Eight consecutive pages, queued in a scrambled order, leave as one range. */
	CHECK_EQ(f.dev.invalidations, 1);
	CHECK_EQ(device_entries(&f.dev), 0);
	teardown(&f);
}

/*
 * Two descending runs, as completions across two runs of maps leave them: merged, not heap
 * sorted, and still one range. A merge that dropped or doubled an entry would leave a page mapped
 * or invalidate it twice.
 */
VT_TEST(lazy_merges_ranges_unmapped_in_two_descending_runs)
{
	struct fixture f;
	uint64_t bus[8], down[8];

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_LAZY), 0);
	f.params.lazy_batch = 8;
	REQUIRE_EQ(setup_dma(&f), 0);
	REQUIRE(map_pages(&f, bus, 8) != NULL);
	memcpy(down, bus, sizeof(bus));
	for (int i = 1; i < 8; i++)
		for (int j = i; j > 0 && down[j - 1] < down[j]; j--) {
			uint64_t x = down[j];
			down[j] = down[j - 1];
			down[j - 1] = x;
		}
	/* The lower half first, each half from its top: one ascent, in the middle. */
	for (int i = 0; i < 8; i++)
		REQUIRE_EQ(vt_dma_unmap(f.dma, down[(i + 4) % 8], 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(f.dev.invalidations, 1);
	CHECK_EQ(device_entries(&f.dev), 0);
	/* Every block back, once: the next eight maps take the same eight IOVA pages. */
	uint64_t again[8];
	REQUIRE(map_pages(&f, again, 8) != NULL);
	for (int i = 0; i < 8; i++) {
		int found = 0;
		for (int j = 0; j < 8; j++)
			found += again[i] / 4096 == down[j] / 4096;
		CHECK_EQ(found, 1);
		for (int j = 0; j < i; j++)
			CHECK(again[j] / 4096 != again[i] / 4096);
	}
	teardown(&f);
}

/* Ranges a transport was sent without waiting, and the waits (vhost-user's pipelined IOTLB). */
static struct published sent[16];
static unsigned int sent_count, syncs;

static int device_invalidate_nowait(void *opaque, uint64_t iova, uint64_t size)
{
	if (sent_count < 16)
		sent[sent_count++] = (struct published){ iova, size };
	return device_invalidate(opaque, iova, size);
}

static int device_sync(void *opaque)
{
	(void)opaque;
	syncs++;
	return 0;
}

static const struct vt_dma_iotlb_ops pipelined_ops = {
	.update = device_update,
	.invalidate = device_invalidate,
	.invalidate_nowait = device_invalidate_nowait,
	.sync = device_sync,
};

VT_TEST(a_pipelined_flush_sends_each_run_of_adjacent_blocks_once_then_waits_once)
{
	struct fixture f;
	uint64_t bus[8];

	sent_count = syncs = 0;
	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_LAZY), 0);
	f.params.iotlb_ops = &pipelined_ops;
	f.params.lazy_batch = 16;
	f.params.iova_size = 8 * PAGE; /* so that a block the flush does not free shows */
	REQUIRE_EQ(setup_dma(&f), 0);
	uint8_t *p = map_pages(&f, bus, 8);
	REQUIRE(p != NULL);
	/* Eight adjacent pages; 2 and 5 stay mapped, splitting the rest into three runs of two. */
	for (int i = 0; i < 8; i++)
		if (i != 2 && i != 5)
			REQUIRE_EQ(vt_dma_unmap(f.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(sent_count, 0);
	REQUIRE_EQ(vt_dma_flush(f.dma), 0);
	CHECK_EQ(syncs, 1);
	CHECK_EQ(sent_count, 3);
	for (unsigned int i = 0; i < sent_count; i++) {
		CHECK_EQ(sent[i].size, 2 * PAGE);
		CHECK(!overlaps(sent[i].iova, sent[i].size, bus[2], 64));
		CHECK(!overlaps(sent[i].iova, sent[i].size, bus[5], 64));
	}
	struct vt_iotlb_entry entry;
	CHECK_EQ(vt_iotlb_lookup(f.dev.iotlb, bus[2], &entry), 0);
	CHECK_EQ(vt_iotlb_lookup(f.dev.iotlb, bus[5], &entry), 0);
	for (int i = 0; i < 8; i++)
		if (i != 2 && i != 5)
			CHECK_EQ(vt_iotlb_lookup(f.dev.iotlb, bus[i], &entry), -ENOENT);
	/* Every page is free again once the last two are gone too. */
	CHECK_EQ(vt_dma_unmap(f.dma, bus[2], 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus[5], 64, VT_DMA_TO_DEVICE), 0);
	REQUIRE_EQ(vt_dma_flush(f.dma), 0);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus[i]), 0);
	CHECK_EQ(f.dev.stale_updates, 0);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(vt_dma_unmap(f.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(lazy_never_reuses_an_iova_before_its_invalidation)
{
	struct fixture f;
	uint64_t state = vt_test_seed();
	struct {
		uint8_t *p;
		size_t len;
		uint64_t bus;
	} live[8];
	unsigned int count = 0;

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_LAZY), 0);
	/* A small IOVA space and batch so that IOVAs come round again and again. */
	f.params.iova_size = 16 * PAGE;
	f.params.lazy_batch = 5;
	REQUIRE_EQ(setup_dma(&f), 0);
	uint8_t *buffer = shm_buffer(&f, 64 * 1024);
	REQUIRE(buffer != NULL);
	fill(buffer, 64 * 1024, 23);

	uint64_t iterations = vt_test_scaled(20000);
	for (uint64_t it = 0; it < iterations; it++) {
		uint64_t r = vt_test_rand(&state);
		if (count < 8 && (r & 1)) {
			size_t len = 1 + (size_t)((r >> 8) % (2 * PAGE));
			uint8_t *p = buffer + (r >> 24) % (64 * 1024 - len);
			uint64_t bus;
			int ret = vt_dma_map(f.dma, p, len, VT_DMA_TO_DEVICE, &bus);
			if (ret == -ENOSPC)
				continue;
			REQUIRE_EQ(ret, 0);
			/* A fresh mapping shows its own bytes, never an earlier buffer's. */
			if (!device_sees(&f, bus, p, len)) {
				VT_FAIL_AT("step %llu: bus 0x%llx shows other bytes",
					   (unsigned long long)it, (unsigned long long)bus);
				return;
			}
			live[count].p = p;
			live[count].len = len;
			live[count++].bus = bus;
		} else if (count > 0) {
			unsigned int i = (unsigned int)((r >> 8) % count);
			int ret = vt_dma_unmap(f.dma, live[i].bus, live[i].len, VT_DMA_TO_DEVICE);
			REQUIRE_EQ(ret, 0);
			live[i] = live[--count];
		}
		if (f.dev.stale_updates) {
			VT_FAIL_AT("step %llu: an IOVA was published again before its invalidation",
				   (unsigned long long)it);
			return;
		}
	}
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK(st.flushes > 0);
	while (count > 0) {
		count--;
		int ret = vt_dma_unmap(f.dma, live[count].bus, live[count].len, VT_DMA_TO_DEVICE);
		CHECK_EQ(ret, 0);
	}
	CHECK_EQ(vt_dma_flush(f.dma), 0);
	CHECK_EQ(device_entries(&f.dev), 0);
	teardown(&f);
}

VT_TEST(lazy_exhausted_iova_space_flushes_and_retries)
{
	struct fixture f;
	uint64_t bus;

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_LAZY), 0);
	f.params.iova_size = 4 * PAGE;
	REQUIRE_EQ(setup_dma(&f), 0);
	uint8_t *p = shm_buffer(&f, 64);
	REQUIRE(p != NULL);
	for (int i = 0; i < 4; i++) {
		REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
		REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	}
	CHECK_EQ(f.dev.invalidations, 0);
	/* All four pages wait for invalidation: the next map publishes them, then reuses one. */
	CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK(f.dev.invalidations > 0);
	CHECK_EQ(f.dev.stale_updates, 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(lazy_failed_flush_keeps_iovas_reserved)
{
	struct fixture f;
	uint64_t bus, again;

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_LAZY), 0);
	f.params.iova_size = PAGE;
	REQUIRE_EQ(setup_dma(&f), 0);
	uint8_t *p = shm_buffer(&f, 64);
	REQUIRE(p != NULL);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	f.dev.fail_invalidations = 1;
	CHECK_EQ(vt_dma_flush(f.dma), -EIO);
	/* The only page is still queued: it cannot be had until its invalidation is out. */
	f.dev.fail_invalidations = 1;
	CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &again), -ENOSPC);
	CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &again), 0);
	CHECK_EQ(f.dev.stale_updates, 0);
	CHECK_EQ(vt_dma_unmap(f.dma, again, 64, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(lazy_free_publishes_pending_invalidations)
{
	struct fixture f;
	uint8_t seen[8];
	uint64_t bus;

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_LAZY);
	REQUIRE(p != NULL);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	vt_dma_free(f.dma);
	f.dma = NULL;
	CHECK_EQ(vt_as_read(&f.dev.as, bus, seen, sizeof(seen), NULL), -EFAULT);
	CHECK_EQ(device_entries(&f.dev), 0);
	teardown(&f);
}

VT_TEST(free_invalidates_mappings_left_live_and_warns)
{
	struct fixture f;
	uint64_t bus;

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_STRICT);
	REQUIRE(p != NULL);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
	vt_dma_free(f.dma);
	f.dma = NULL;
	CHECK_EQ(device_entries(&f.dev), 0);
	CHECK_EQ(f.log_seen.warnings, 1);
	teardown(&f);
}

VT_TEST(premapped_publishes_one_rw_update_per_region)
{
	struct fixture f;

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_PREMAPPED), 0);
	REQUIRE_EQ(vt_shm_add_memfd(f.shm, 3 * PAGE, 1ULL << 34, NULL), 0);
	REQUIRE_EQ(setup_dma(&f), 0);
	CHECK_EQ(f.dev.updates, 2);
	CHECK_EQ(f.dev.last_perm, VT_ACCESS_RW);
	CHECK_EQ(f.dev.last_update.size, 3 * PAGE);
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.iotlb_updates, 2);
	teardown(&f);
}

VT_TEST(premapped_map_is_arithmetic)
{
	struct fixture f;
	uint64_t a, b;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_PREMAPPED), 0);
	uint8_t *p = shm_buffer(&f, 8192);
	REQUIRE(p != NULL);
	fill(p, 8192, 29);
	unsigned int updates = f.dev.updates;
	REQUIRE_EQ(vt_dma_map(f.dma, p, 100, VT_DMA_TO_DEVICE, &a), 0);
	REQUIRE_EQ(vt_dma_map(f.dma, p + 5000, 100, VT_DMA_FROM_DEVICE, &b), 0);
	CHECK_EQ(b - a, 5000);
	CHECK_EQ(f.dev.updates, updates);
	CHECK(device_sees(&f, a, p, 100));
	CHECK_EQ(vt_as_write(&f.dev.as, b, "premapped", 9, NULL), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, b, 100, VT_DMA_FROM_DEVICE), 0);
	CHECK(memcmp(p + 5000, "premapped", 9) == 0);
	CHECK_EQ(vt_dma_unmap(f.dma, a, 100, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(f.dev.invalidations, 0);
	teardown(&f);
}

VT_TEST(premapped_map_outside_shared_memory_is_efault)
{
	struct fixture f;
	uint8_t private_buffer[64];
	uint64_t bus;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_PREMAPPED), 0);
	CHECK_EQ(vt_dma_map(f.dma, private_buffer, sizeof(private_buffer), VT_DMA_TO_DEVICE, &bus),
		 -EFAULT);
	const struct vt_shm_region *r = vt_shm_region(f.shm, 0);
	CHECK_EQ(vt_dma_map(f.dma, (uint8_t *)r->hva + r->size - 4, 8, VT_DMA_TO_DEVICE, &bus),
		 -EFAULT);
	teardown(&f);
}

VT_TEST(premapped_unmap_outside_the_premapped_space_is_enoent)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_PREMAPPED), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, 0x10, 8, VT_DMA_TO_DEVICE), -ENOENT);
	teardown(&f);
}

VT_TEST(premapped_free_invalidates_the_regions)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_PREMAPPED), 0);
	CHECK_EQ(device_entries(&f.dev), 1);
	vt_dma_free(f.dma);
	f.dma = NULL;
	CHECK_EQ(device_entries(&f.dev), 0);
	teardown(&f);
}

VT_TEST(alloc_coherent_works_in_every_iommu_mode)
{
	static const enum vt_dma_mode modes[] = { VT_DMA_IOMMU_STRICT, VT_DMA_IOMMU_LAZY,
						  VT_DMA_IOMMU_PREMAPPED };
	static const uint8_t zeros[512];

	for (unsigned int m = 0; m < 3; m++) {
		struct fixture f;
		void *cpu;
		uint64_t bus;
		REQUIRE_EQ(setup(&f, modes[m]), 0);
		/* Dirty shared memory first, so the zeroes are the allocation's. */
		void *dirty = shm_buffer(&f, SHM_SIZE / 2);
		REQUIRE(dirty != NULL);
		memset(dirty, 0xee, SHM_SIZE / 2);
		vt_shm_release(f.shm, dirty, SHM_SIZE / 2);

		REQUIRE_EQ(vt_dma_alloc_coherent(f.dma, sizeof(zeros), &cpu, &bus), 0);
		CHECK_EQ((uintptr_t)cpu % PAGE, 0);
		CHECK(device_sees(&f, bus, zeros, sizeof(zeros)));
		CHECK_EQ(vt_as_write(&f.dev.as, bus + 8, "used", 4, NULL), 0);
		CHECK(memcmp((uint8_t *)cpu + 8, "used", 4) == 0);
		vt_dma_free_coherent(f.dma, sizeof(zeros), cpu, bus);
		if (modes[m] != VT_DMA_IOMMU_PREMAPPED) {
			/* Even lazy: freed memory may become anything, so it is cut off at once. */
			uint8_t seen[4];
			CHECK_EQ(vt_as_read(&f.dev.as, bus, seen, 4, NULL), -EFAULT);
		}
		CHECK_EQ(f.log_seen.errors, 0);
		teardown(&f);
	}
}

VT_TEST(map_sg_failure_leaves_nothing_mapped)
{
	static const enum vt_dma_mode modes[] = { VT_DMA_IOMMU_STRICT, VT_DMA_IOMMU_LAZY };

	for (unsigned int m = 0; m < 2; m++) {
		struct fixture f;
		uint8_t private_buffer[32];
		struct iovec sg[4];
		uint64_t bus[4];
		REQUIRE_EQ(setup(&f, modes[m]), 0);
		sg[0] = (struct iovec){ shm_buffer(&f, 64), 64 };
		sg[1] = (struct iovec){ shm_buffer(&f, 5000), 5000 };
		sg[2] = (struct iovec){ private_buffer, sizeof(private_buffer) };
		sg[3] = (struct iovec){ shm_buffer(&f, 64), 64 };
		CHECK_EQ(vt_dma_map_sg(f.dma, sg, 4, VT_DMA_TO_DEVICE, bus), -EFAULT);
		CHECK_EQ(f.dev.updates, 2);
		CHECK_EQ(device_entries(&f.dev), 0);
		CHECK_EQ(f.dev.shadow_count, 0);
		/* And the whole list maps once the bad element is gone. */
		sg[2] = sg[3];
		CHECK_EQ(vt_dma_map_sg(f.dma, sg, 3, VT_DMA_TO_DEVICE, bus), 0);
		CHECK(device_sees(&f, bus[1], sg[1].iov_base, 5000));
		vt_dma_unmap_sg(f.dma, sg, 3, VT_DMA_TO_DEVICE, bus);
		teardown(&f);
	}
}

VT_TEST(iommu_new_rejects_an_unaligned_iova_space)
{
	struct fixture f;

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_STRICT), 0);
	f.params.iova_base = 0x1001;
	CHECK_EQ(setup_dma(&f), -EINVAL);
	device_detach(&f.dev);
	f.params.iova_base = 0;
	f.params.iova_size = PAGE + 1;
	CHECK_EQ(setup_dma(&f), -EINVAL);
	CHECK_EQ(f.log_seen.errors, 2);
	f.dma = NULL;
	teardown(&f);
}

struct worker {
	struct fixture *f;
	uint8_t *buffer;
	unsigned int seed;
	unsigned int failures; /* counted here: the harness's counters are not thread-safe */
};

static void *map_unmap_loop(void *arg)
{
	struct worker *w = arg;
	uint64_t iterations = vt_test_scaled(5000);

	for (uint64_t it = 0; it < iterations; it++) {
		size_t len = 1 + (it * 977 + w->seed) % 3000;
		uint64_t bus;
		fill(w->buffer, len, w->seed + (unsigned int)it);
		if (vt_dma_map(w->f->dma, w->buffer, len, VT_DMA_TO_DEVICE, &bus) < 0 ||
		    !device_sees(w->f, bus, w->buffer, len) ||
		    vt_dma_unmap(w->f->dma, bus, len, VT_DMA_TO_DEVICE) < 0)
			w->failures++;
	}
	return NULL;
}

VT_TEST(concurrent_maps_and_unmaps_each_see_their_own_bytes)
{
	static const enum vt_dma_mode modes[] = { VT_DMA_IOMMU_STRICT, VT_DMA_IOMMU_LAZY };

	for (unsigned int m = 0; m < 2; m++) {
		struct fixture f;
		struct worker workers[4];
		pthread_t threads[4];
		REQUIRE_EQ(setup_memory(&f, modes[m]), 0);
		f.params.lazy_batch = 8;
		REQUIRE_EQ(setup_dma(&f), 0);
		for (unsigned int i = 0; i < 4; i++) {
			workers[i] = (struct worker){ .f = &f,
						      .buffer = shm_buffer(&f, 4096),
						      .seed = i * 1000 };
			REQUIRE(workers[i].buffer != NULL);
		}
		for (unsigned int i = 0; i < 4; i++)
			REQUIRE_EQ(pthread_create(&threads[i], NULL, map_unmap_loop, &workers[i]),
				   0);
		for (unsigned int i = 0; i < 4; i++) {
			pthread_join(threads[i], NULL);
			CHECK_EQ(workers[i].failures, 0);
		}
		CHECK_EQ(f.dev.stale_updates, 0);
		struct vt_dma_stats st;
		vt_dma_get_stats(f.dma, &st);
		CHECK_EQ(st.maps, 4 * vt_test_scaled(5000));
		CHECK_EQ(st.unmaps, st.maps);
		teardown(&f);
	}
}

/* ---------------------------------------------------------------- batches */

VT_TEST(strict_batch_publishes_its_unmaps_at_the_end_merged_and_never_reuses_them_before)
{
	struct fixture f;
	uint64_t bus[8], other;

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_STRICT);
	REQUIRE(p != NULL);
	fill(p, 64, 23);
	for (int i = 0; i < 8; i++)
		REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus[i]), 0);
	vt_dma_batch_begin(f.dma);
	for (int i = 0; i < 8; i++)
		REQUIRE_EQ(vt_dma_unmap(f.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	/* Inside the batch: unmapped for the driver, not yet invalidated, and not reused. */
	CHECK_EQ(f.dev.invalidations, 0);
	CHECK(device_sees(&f, bus[3], p, 64));
	CHECK_EQ(vt_dma_unmap(f.dma, bus[3], 64, VT_DMA_TO_DEVICE), -ENOENT);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &other), 0);
	for (int i = 0; i < 8; i++)
		CHECK(other != bus[i]);
	CHECK_EQ(vt_dma_batch_end(f.dma), 0);
	/* The end: eight consecutive pages in one invalidation, none reachable any more. */
	CHECK_EQ(f.dev.invalidations, 1);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(vt_as_read(&f.dev.as, bus[i], (uint8_t[8]){ 0 }, 8, NULL), -EFAULT);
	CHECK(device_sees(&f, other, p, 64));
	CHECK_EQ(vt_dma_unmap(f.dma, other, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(f.dev.invalidations, 2); /* outside a batch, strict at once */
	CHECK_EQ(f.dev.stale_updates, 0);
	CHECK_EQ(device_entries(&f.dev), 0);
	teardown(&f);
}

VT_TEST(nested_batches_publish_at_the_outermost_end)
{
	struct fixture f;
	uint64_t bus[2];

	uint8_t *p = setup_with_buffer(&f, VT_DMA_IOMMU_STRICT);
	REQUIRE(p != NULL);
	for (int i = 0; i < 2; i++)
		REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_FROM_DEVICE, &bus[i]), 0);
	vt_dma_batch_begin(f.dma);
	vt_dma_batch_begin(f.dma);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus[0], 64, VT_DMA_FROM_DEVICE), 0);
	CHECK_EQ(vt_dma_batch_end(f.dma), 0);
	CHECK_EQ(f.dev.invalidations, 0);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus[1], 64, VT_DMA_FROM_DEVICE), 0);
	CHECK_EQ(vt_dma_batch_end(f.dma), 0);
	CHECK_EQ(f.dev.invalidations, 1);
	CHECK_EQ(device_entries(&f.dev), 0);
	/* The transport's hooks bracket the outermost batch only. */
	CHECK_EQ(f.dev.batch_begins, 1);
	CHECK_EQ(f.dev.batch_ends, 1);
	CHECK(!f.dev.batch_hooks_misnested);
	teardown(&f);
}

VT_TEST(a_batch_end_without_a_batch_is_refused_and_breaks_nothing)
{
	static const enum vt_dma_mode modes[] = { VT_DMA_IOMMU_STRICT, VT_DMA_IOMMU_LAZY };

	for (unsigned int m = 0; m < 2; m++) {
		struct fixture f;
		uint64_t bus;

		uint8_t *p = setup_with_buffer(&f, modes[m]);
		REQUIRE(p != NULL);
		unsigned int errors = f.log_seen.errors;
		CHECK_EQ(vt_dma_batch_end(f.dma), -EINVAL);
		CHECK_EQ(f.log_seen.errors, errors + 1);
		/* One extra end inside a batch does not end it early either. */
		vt_dma_batch_begin(f.dma);
		CHECK_EQ(vt_dma_batch_end(f.dma), 0);
		CHECK_EQ(vt_dma_batch_end(f.dma), -EINVAL);
		/* The lock is free: maps and batches work as before, the hooks still paired. */
		REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
		vt_dma_batch_begin(f.dma);
		CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
		CHECK_EQ(vt_dma_batch_end(f.dma), 0);
		CHECK_EQ(vt_dma_flush(f.dma), 0);
		CHECK_EQ(f.dev.batch_begins, f.dev.batch_ends);
		CHECK(!f.dev.batch_hooks_misnested);
		teardown(&f);
	}
}

VT_TEST(the_transports_batch_hooks_bracket_every_publication_of_a_batch_and_no_other)
{
	static const enum vt_dma_mode modes[] = { VT_DMA_IOMMU_STRICT, VT_DMA_IOMMU_LAZY };

	for (unsigned int m = 0; m < 2; m++) {
		struct fixture f;
		uint64_t bus[4], alone;

		uint8_t *p = setup_with_buffer(&f, modes[m]);
		REQUIRE(p != NULL);
		fill(p, 64, 41);
		/* Outside a batch: no hook. */
		REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &alone), 0);
		CHECK_EQ(f.dev.batch_begins, 0);
		CHECK_EQ(f.dev.calls_in_batch, 0);

		vt_dma_batch_begin(f.dma);
		CHECK_EQ(f.dev.batch_begins, 1);
		for (int i = 0; i < 4; i++)
			REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus[i]), 0);
		/* Each update took effect when its call returned, inside the batch. */
		for (int i = 0; i < 4; i++)
			CHECK(device_sees(&f, bus[i], p, 64));
		CHECK_EQ(vt_dma_batch_end(f.dma), 0);
		CHECK_EQ(f.dev.batch_ends, 1);
		CHECK_EQ(f.dev.calls_in_batch, 4);

		vt_dma_batch_begin(f.dma);
		for (int i = 0; i < 4; i++)
			REQUIRE_EQ(vt_dma_unmap(f.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
		CHECK_EQ(vt_dma_batch_end(f.dma), 0);
		/* Strict published the four, merged, before its hook ended the batch. */
		CHECK_EQ(f.dev.calls_in_batch, modes[m] == VT_DMA_IOMMU_STRICT ? 5u : 4u);
		CHECK_EQ(f.dev.batch_begins, 2);
		CHECK_EQ(f.dev.batch_ends, 2);
		CHECK(!f.dev.batch_hooks_misnested);
		CHECK_EQ(vt_dma_unmap(f.dma, alone, 64, VT_DMA_TO_DEVICE), 0);
		CHECK_EQ(vt_dma_flush(f.dma), 0);
		CHECK_EQ(f.dev.batch_begins, 2);
		CHECK_EQ(device_entries(&f.dev), 0);
		teardown(&f);
	}
}

VT_TEST(a_batch_that_fills_the_queue_publishes_early_and_keeps_strictness)
{
	struct fixture f;
	uint64_t bus[6];

	REQUIRE_EQ(setup_memory(&f, VT_DMA_IOMMU_STRICT), 0);
	f.params.lazy_batch = 4; /* the queue a batch gathers into */
	REQUIRE_EQ(setup_dma(&f), 0);
	uint8_t *p = shm_buffer(&f, 64);
	REQUIRE(p != NULL);
	for (int i = 0; i < 6; i++)
		REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus[i]), 0);
	vt_dma_batch_begin(f.dma);
	for (int i = 0; i < 6; i++)
		REQUIRE_EQ(vt_dma_unmap(f.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(f.dev.invalidations, 1); /* the first four, when the queue filled */
	CHECK_EQ(vt_dma_batch_end(f.dma), 0);
	CHECK_EQ(f.dev.invalidations, 2);
	CHECK_EQ(device_entries(&f.dev), 0);
	teardown(&f);
}

VT_TEST(a_failed_publication_at_batch_end_keeps_the_iovas_reserved_until_a_flush)
{
	struct fixture f;
	uint64_t bus, other;

	uint8_t *p = one_page_strict_mapping(&f, 29, &bus);
	REQUIRE(p != NULL);
	vt_dma_batch_begin(f.dma);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	f.dev.fail_invalidations = 2;
	CHECK_EQ(vt_dma_batch_end(f.dma), -EIO);
	/*
	 * Not invalidated: the only page of IOVA space is not handed out again (the map's own
	 * attempt to publish the queue fails too).
	 */
	CHECK(device_sees(&f, bus, p, 64));
	CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &other), -ENOSPC);
	CHECK(device_sees(&f, bus, p, 64));
	CHECK_EQ(vt_dma_flush(f.dma), 0);
	CHECK_EQ(device_entries(&f.dev), 0);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &other), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, other, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(f.dev.stale_updates, 0);
	teardown(&f);
}

VT_TEST(lazy_batches_leave_invalidations_queued_and_other_modes_ignore_batches)
{
	static const enum vt_dma_mode modes[] = { VT_DMA_IOMMU_LAZY, VT_DMA_IOMMU_PREMAPPED };
	for (unsigned int m = 0; m < 2; m++) {
		struct fixture f;
		uint64_t bus;
		uint8_t *p = setup_with_buffer(&f, modes[m]);
		REQUIRE(p != NULL);
		fill(p, 64, 31);
		unsigned int before = f.dev.invalidations;
		vt_dma_batch_begin(f.dma);
		REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus), 0);
		CHECK(device_sees(&f, bus, p, 64));
		REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
		CHECK_EQ(vt_dma_batch_end(f.dma), 0);
		/* Lazy keeps its window (the flush is its own); premapped has nothing to drop. */
		CHECK_EQ(f.dev.invalidations, before);
		CHECK(device_sees(&f, bus, p, 64));
		teardown(&f);
	}
}

struct batch_waiter {
	struct fixture *f;
	void *buffer;
	atomic_bool mapped;
	int ret;
};

static void *map_during_batch(void *arg)
{
	struct batch_waiter *w = arg;
	uint64_t bus;
	w->ret = vt_dma_map(w->f->dma, w->buffer, 64, VT_DMA_TO_DEVICE, &bus);
	atomic_store(&w->mapped, true);
	if (w->ret == 0)
		w->ret = vt_dma_unmap(w->f->dma, bus, 64, VT_DMA_TO_DEVICE);
	return NULL;
}

VT_TEST(another_threads_map_waits_for_the_end_of_a_batch)
{
	struct fixture f;
	pthread_t t;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_STRICT), 0);
	struct batch_waiter w = { .f = &f, .buffer = shm_buffer(&f, 64) };
	REQUIRE(w.buffer != NULL);
	vt_dma_batch_begin(f.dma);
	REQUIRE_EQ(pthread_create(&t, NULL, map_during_batch, &w), 0);
	/* The other thread gets every chance to run; its map must still be waiting. */
	for (int i = 0; i < 50; i++) {
		sched_yield();
		usleep(1000);
	}
	CHECK(!atomic_load(&w.mapped));
	CHECK_EQ(vt_dma_batch_end(f.dma), 0);
	pthread_join(t, NULL);
	CHECK(atomic_load(&w.mapped));
	CHECK_EQ(w.ret, 0);
	teardown(&f);
}

/* Releases the held update after giving the waiting map every chance to run; what it saw then. */
struct held_update_release {
	struct device_side *dev;
	atomic_bool *mapped;
	bool mapped_while_held;
};

static void *release_held_update(void *arg)
{
	struct held_update_release *r = arg;
	for (int i = 0; i < 50; i++) {
		sched_yield();
		usleep(1000);
	}
	r->mapped_while_held = atomic_load(r->mapped);
	atomic_store(&r->dev->held_update, false);
	return NULL;
}

/*
 * A batch lets its own thread map without taking the lock again; once it ended, that thread
 * waits for the lock like any other: here behind another thread's map, held in its update.
 */
VT_TEST(the_thread_of_an_ended_batch_waits_for_the_lock_like_any_other)
{
	struct fixture f;
	pthread_t other, releaser;
	uint64_t bus;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_STRICT), 0);
	void *mine = shm_buffer(&f, 64);
	struct batch_waiter w = { .f = &f, .buffer = shm_buffer(&f, 64) };
	REQUIRE(mine != NULL && w.buffer != NULL);
	vt_dma_batch_begin(f.dma);
	REQUIRE_EQ(vt_dma_map(f.dma, mine, 64, VT_DMA_TO_DEVICE, &bus), 0);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_batch_end(f.dma), 0);

	atomic_store(&f.dev.held_update, true);
	atomic_store(&f.dev.hold_next_update, true);
	REQUIRE_EQ(pthread_create(&other, NULL, map_during_batch, &w), 0);
	while (!atomic_load(&f.dev.in_held_update))
		usleep(100);
	atomic_bool mapped = false;
	struct held_update_release r = { .dev = &f.dev, .mapped = &mapped };
	REQUIRE_EQ(pthread_create(&releaser, NULL, release_held_update, &r), 0);
	CHECK_EQ(vt_dma_map(f.dma, mine, 64, VT_DMA_TO_DEVICE, &bus), 0);
	atomic_store(&mapped, true);
	pthread_join(releaser, NULL);
	pthread_join(other, NULL);
	CHECK(!r.mapped_while_held);
	CHECK_EQ(w.ret, 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

/* ---------------------------------------------------------------- map bursts */

/* What vt_dma_map_burst must leave alone when it maps every buffer. */
#define ERROR_UNTOUCHED 12345

/* A fixture in @mode publishing through @ops, with @iova_size bytes of IOVA space (0: default). */
static int setup_burst(struct fixture *f, enum vt_dma_mode mode, const struct vt_dma_iotlb_ops *ops,
		       uint64_t iova_size)
{
	int ret = setup_memory(f, mode);
	f->params.iotlb_ops = ops;
	f->params.iova_size = iova_size;
	return ret < 0 ? ret : setup_dma(f);
}

/* @n buffers of shared memory, from 1 byte to 2 pages long, each filled from its index. */
static bool shm_buffers(struct fixture *f, struct iovec *bufs, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		size_t len = 1 + (i * 1237) % (2 * PAGE);
		bufs[i] = (struct iovec){ shm_buffer(f, len), len };
		if (!bufs[i].iov_base)
			return false;
		fill(bufs[i].iov_base, len, i + 1);
	}
	return true;
}

/* @n buffers of 64 bytes, each taking one page of IOVA space; filled as shm_buffers fills. */
static bool small_buffers(struct fixture *f, struct iovec *bufs, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		bufs[i] = (struct iovec){ shm_buffer(f, 64), 64 };
		if (!bufs[i].iov_base)
			return false;
		fill(bufs[i].iov_base, 64, i + 1);
	}
	return true;
}

/* How many of @n mappings overlap another one in bus addresses. */
static unsigned int bus_overlaps(const struct iovec *bufs, const uint64_t *bus, unsigned int n)
{
	unsigned int bad = 0;

	for (unsigned int i = 0; i < n; i++)
		for (unsigned int j = 0; j < i; j++)
			bad += overlaps(bus[i], bufs[i].iov_len, bus[j], bufs[j].iov_len);
	return bad;
}

/* Whether the DMA object counted @maps maps and @failures failed ones, so far. */
static bool map_counts_are(struct fixture *f, uint64_t maps, uint64_t failures)
{
	struct vt_dma_stats st;

	vt_dma_get_stats(f->dma, &st);
	return st.maps == maps && st.map_failures == failures;
}

/* How many of the @n mappings the device does not read as the driver's bytes. */
static unsigned int unseen(struct fixture *f, const struct iovec *bufs, const uint64_t *bus,
			   unsigned int n)
{
	unsigned int wrong = 0;

	for (unsigned int i = 0; i < n; i++)
		wrong += !device_sees(f, bus[i], bufs[i].iov_base, bufs[i].iov_len);
	return wrong;
}

/* Unmaps the @n to-device mappings; how many unmaps failed. */
static unsigned int unmap_all(struct fixture *f, const struct iovec *bufs, const uint64_t *bus,
			      unsigned int n)
{
	unsigned int failed = 0;

	for (unsigned int i = 0; i < n; i++)
		failed += vt_dma_unmap(f->dma, bus[i], bufs[i].iov_len, VT_DMA_TO_DEVICE) != 0;
	return failed;
}

/*
 * Runs @body in strict and lazy mode, publishing through update and through update_burst, and
 * names the one that failed.
 */
static void for_each_burst_variant(void (*body)(enum vt_dma_mode mode,
						const struct vt_dma_iotlb_ops *ops))
{
	static const enum vt_dma_mode modes[] = { VT_DMA_IOMMU_STRICT, VT_DMA_IOMMU_LAZY };
	static const struct vt_dma_iotlb_ops *const ops[] = { &device_ops, &device_burst_ops };

	for (unsigned int m = 0; m < 2; m++) {
		for (unsigned int o = 0; o < 2; o++) {
			int before = vt_test_failed;
			body(modes[m], ops[o]);
			if (vt_test_failed != before)
				fprintf(stderr, "  (in %s mode, publishing through %s)\n",
					vt_dma_mode_name(modes[m]),
					ops[o]->update_burst ? "update_burst" : "update");
		}
	}
}

static void burst_maps_each_buffer_for_the_device(enum vt_dma_mode mode,
						  const struct vt_dma_iotlb_ops *ops)
{
	enum { N = 12 };
	struct fixture f;
	struct iovec bufs[N];
	uint64_t bus[N];
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup_burst(&f, mode, ops, 0), 0);
	REQUIRE(shm_buffers(&f, bufs, N));
	REQUIRE_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), N);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	CHECK_EQ(bus_overlaps(bufs, bus, N), 0);
	for (unsigned int i = 0; i < N; i++) {
		CHECK(device_sees(&f, bus[i], bufs[i].iov_base, bufs[i].iov_len));
		/* To the device: read only. */
		CHECK_EQ(vt_as_write(&f.dev.as, bus[i], "x", 1, NULL), -EACCES);
	}
	CHECK_EQ(f.dev.updates, N);
	if (ops->update_burst) {
		/* The burst's translations in one call. */
		CHECK_EQ(f.dev.update_bursts, 1);
		CHECK_EQ(f.dev.single_updates, 0);
	}
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.maps, N);
	CHECK_EQ(st.map_failures, 0);
	CHECK_EQ(st.iotlb_updates, N);
	CHECK_EQ(unmap_all(&f, bufs, bus, N), 0);
	CHECK_EQ(f.dev.stale_updates, 0);
	teardown(&f);
	CHECK_EQ(f.log_seen.errors, 0);
	CHECK_EQ(f.log_seen.warnings, 0);
}

VT_TEST(map_burst_maps_each_buffer_where_the_device_reads_it_and_cannot_write_it)
{
	for_each_burst_variant(burst_maps_each_buffer_for_the_device);
}

static void burst_gives_each_mapping_its_directions_permission(enum vt_dma_mode mode,
							       const struct vt_dma_iotlb_ops *ops)
{
	enum { N = 3 };
	struct fixture f;
	struct iovec bufs[N];
	uint64_t from[N], both[N];
	uint8_t seen[8];
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup_burst(&f, mode, ops, 0), 0);
	REQUIRE(small_buffers(&f, bufs, N));
	REQUIRE_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_FROM_DEVICE, from, &error), N);
	REQUIRE_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_BIDIRECTIONAL, both, &error), N);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	for (unsigned int i = 0; i < N; i++) {
		/* From the device: written, never read. */
		CHECK_EQ(vt_as_read(&f.dev.as, from[i], seen, sizeof(seen), NULL), -EACCES);
		CHECK_EQ(vt_as_write(&f.dev.as, from[i] + 8, "from", 4, NULL), 0);
		CHECK(memcmp((uint8_t *)bufs[i].iov_base + 8, "from", 4) == 0);
		/* Both ways. */
		CHECK(device_sees(&f, both[i], bufs[i].iov_base, 64));
		CHECK_EQ(vt_as_write(&f.dev.as, both[i] + 16, "both", 4, NULL), 0);
		CHECK(memcmp((uint8_t *)bufs[i].iov_base + 16, "both", 4) == 0);
	}
	for (unsigned int i = 0; i < N; i++) {
		CHECK_EQ(vt_dma_unmap(f.dma, from[i], 64, VT_DMA_FROM_DEVICE), 0);
		CHECK_EQ(vt_dma_unmap(f.dma, both[i], 64, VT_DMA_BIDIRECTIONAL), 0);
	}
	teardown(&f);
	CHECK_EQ(f.log_seen.warnings, 0);
}

VT_TEST(map_burst_gives_each_mapping_the_permission_of_its_direction)
{
	for_each_burst_variant(burst_gives_each_mapping_its_directions_permission);
}

/*
 * Each mapping of a burst is its own: unmapped one at a time (in another order than mapped), it
 * alone leaves the device, at once in strict mode, at the flush in lazy mode.
 */
static void burst_mappings_unmap_one_by_one(enum vt_dma_mode mode,
					    const struct vt_dma_iotlb_ops *ops)
{
	enum { N = 6 };
	static const unsigned int order[N] = { 3, 0, 5, 1, 4, 2 };
	struct fixture f;
	struct iovec bufs[N];
	uint64_t bus[N];
	bool unmapped[N] = { false };
	uint8_t seen[1];
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup_burst(&f, mode, ops, 0), 0);
	REQUIRE(shm_buffers(&f, bufs, N));
	REQUIRE_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), N);
	for (unsigned int k = 0; k < N; k++) {
		unsigned int u = order[k];
		CHECK_EQ(vt_dma_unmap(f.dma, bus[u], bufs[u].iov_len, VT_DMA_TO_DEVICE), 0);
		CHECK_EQ(vt_dma_unmap(f.dma, bus[u], bufs[u].iov_len, VT_DMA_TO_DEVICE), -ENOENT);
		unmapped[u] = true;
		for (unsigned int i = 0; i < N; i++) {
			bool gone = unmapped[i] && mode == VT_DMA_IOMMU_STRICT;
			if (gone)
				CHECK_EQ(vt_as_read(&f.dev.as, bus[i], seen, 1, NULL), -EFAULT);
			else
				CHECK(device_sees(&f, bus[i], bufs[i].iov_base, bufs[i].iov_len));
		}
	}
	CHECK_EQ(vt_dma_flush(f.dma), 0);
	for (unsigned int i = 0; i < N; i++)
		CHECK_EQ(vt_as_read(&f.dev.as, bus[i], seen, 1, NULL), -EFAULT);
	CHECK_EQ(device_entries(&f.dev), 0);
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.unmaps, N);
	teardown(&f);
	CHECK_EQ(f.log_seen.warnings, 0);
}

VT_TEST(map_burst_mappings_are_unmapped_one_by_one_and_then_unreachable)
{
	for_each_burst_variant(burst_mappings_unmap_one_by_one);
}

/* The third of five outside shared memory: two mapped, -EFAULT, the rest not mapped. */
static void burst_stops_at_a_buffer_outside_shared_memory(enum vt_dma_mode mode,
							  const struct vt_dma_iotlb_ops *ops)
{
	enum { N = 5 };
	static uint8_t private_buffer[64]; /* the driver's own: not shared */
	struct fixture f;
	struct iovec bufs[N];
	uint64_t bus[N];
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup_burst(&f, mode, ops, 0), 0);
	REQUIRE(shm_buffers(&f, bufs, N));
	bufs[2] = (struct iovec){ private_buffer, sizeof(private_buffer) };
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), 2);
	CHECK_EQ(error, -EFAULT);
	CHECK_EQ(f.log_seen.errors, 1);
	/* The device was given the two before it, and nothing else. */
	CHECK_EQ(f.dev.updates, 2);
	CHECK_EQ(device_entries(&f.dev), 2);
	for (unsigned int i = 0; i < 2; i++)
		CHECK(device_sees(&f, bus[i], bufs[i].iov_base, bufs[i].iov_len));
	CHECK(map_counts_are(&f, 2, 1));
	CHECK_EQ(unmap_all(&f, bufs, bus, 2), 0);
	CHECK_EQ(vt_dma_flush(f.dma), 0);
	CHECK_EQ(device_entries(&f.dev), 0);
	/* Nothing else is live: freeing warns of no mapping left behind. */
	teardown(&f);
	CHECK_EQ(f.log_seen.warnings, 0);
}

VT_TEST(map_burst_stops_at_a_buffer_outside_shared_memory_with_efault)
{
	for_each_burst_variant(burst_stops_at_a_buffer_outside_shared_memory);
}

/* Whether the device can read the byte at @bus. */
static bool device_reads(struct fixture *f, uint64_t bus)
{
	uint8_t byte;
	return vt_as_read(&f->dev.as, bus, &byte, 1, NULL) == 0;
}

/*
 * A burst going back and forth between two regions, one of them caller memory that starts and
 * ends inside pages: each buffer planned against its own region, whole pages where they lie in
 * it, only the buffer's bytes where its page leaves it.
 */
static void burst_across_two_regions(enum vt_dma_mode mode, const struct vt_dma_iotlb_ops *ops)
{
	enum { N = 6 };
	struct fixture f;
	struct iovec bufs[N];
	uint64_t bus[N];
	int error = ERROR_UNTOUCHED;
	uint8_t *memory = aligned_alloc(PAGE, 4 * PAGE);

	REQUIRE(memory != NULL);
	fill(memory, 4 * PAGE, 5);
	REQUIRE_EQ(setup_memory(&f, mode), 0);
	f.params.iotlb_ops = ops;
	uint8_t *p = shm_buffer(&f, 2 * PAGE); /* before the caller memory joins the allocator */
	REQUIRE(p != NULL);
	fill(p, 2 * PAGE, 6);
	uint8_t *start = memory + 100;
	REQUIRE_EQ(vt_shm_add_host(f.shm, start, 2 * PAGE, 0x10000000, NULL), 0);
	REQUIRE_EQ(setup_dma(&f), 0);
	bufs[0] = (struct iovec){ p + 200, 64 };
	bufs[1] = (struct iovec){ start, 50 }; /* its page starts before the region */
	bufs[2] = (struct iovec){ p + 300, 64 };
	bufs[3] = (struct iovec){ memory + PAGE + 10, 64 };	/* a page inside the region */
	bufs[4] = (struct iovec){ memory + 2 * PAGE + 40, 60 }; /* up to the region's end */
	bufs[5] = (struct iovec){ p + PAGE + 500, 64 };
	static const bool whole[N] = { true, false, true, true, false, true };
	REQUIRE_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), N);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	CHECK_EQ(unseen(&f, bufs, bus, N), 0);
	for (unsigned int i = 0; i < N; i++) {
		/* Every buffer starts inside its page: the byte before it is mapped iff the page
		 * is. */
		CHECK_EQ(device_reads(&f, bus[i] - 1), whole[i]);
		CHECK_EQ(device_reads(&f, bus[i] + bufs[i].iov_len), whole[i]);
	}
	CHECK_EQ(unmap_all(&f, bufs, bus, N), 0);
	CHECK_EQ(vt_dma_flush(f.dma), 0);
	CHECK_EQ(device_entries(&f.dev), 0);
	teardown(&f);
	CHECK_EQ(f.log_seen.errors, 0);
	free(memory);
}

VT_TEST(map_burst_across_two_regions_maps_whole_pages_only_inside_each_buffers_region)
{
	for_each_burst_variant(burst_across_two_regions);
}

/*
 * The device refuses the update of buffer k of a burst of four, in an IOVA space of four pages:
 * k mapped, the device's error, and the refused buffers' IOVAs clean and free again (each of them
 * maps afterwards, in the only pages left), the device never given a translation for them.
 */
static void burst_refused_by_the_device(enum vt_dma_mode mode, const struct vt_dma_iotlb_ops *ops)
{
	enum { N = 4 };
	static const unsigned int refused_at[] = { 0, 2, 3 };

	for (unsigned int r = 0; r < sizeof(refused_at) / sizeof(refused_at[0]); r++) {
		unsigned int k = refused_at[r];
		struct fixture f;
		struct iovec bufs[N];
		uint64_t bus[N];
		int error = ERROR_UNTOUCHED;

		REQUIRE_EQ(setup_burst(&f, mode, ops, N * PAGE), 0);
		REQUIRE(small_buffers(&f, bufs, N));
		f.dev.fail_from_update = f.dev.updates + k + 1;
		CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), k);
		CHECK_EQ(error, -EIO);
		CHECK_EQ(f.dev.updates, k);
		CHECK_EQ(device_entries(&f.dev), k);
		CHECK_EQ(f.dev.shadow_count, k);
		struct vt_dma_stats st;
		vt_dma_get_stats(f.dma, &st);
		CHECK_EQ(st.maps, k);
		CHECK_EQ(st.map_failures, 1);
		CHECK_EQ(st.iotlb_updates, k);

		f.dev.fail_from_update = 0;
		for (unsigned int i = k; i < N; i++) {
			CHECK_EQ(vt_dma_map(f.dma, bufs[i].iov_base, 64, VT_DMA_TO_DEVICE, &bus[i]),
				 0);
		}
		for (unsigned int i = 0; i < N; i++)
			CHECK(device_sees(&f, bus[i], bufs[i].iov_base, 64));
		CHECK_EQ(bus_overlaps(bufs, bus, N), 0);
		CHECK_EQ(f.dev.stale_updates, 0);
		CHECK_EQ(unmap_all(&f, bufs, bus, N), 0);
		teardown(&f);
		CHECK_EQ(f.log_seen.warnings, 0);
	}
}

VT_TEST(map_burst_refused_by_the_device_at_buffer_k_maps_k_and_gives_the_rest_back_clean)
{
	for_each_burst_variant(burst_refused_by_the_device);
}

/*
 * A burst longer than the groups the library publishes in: every buffer mapped and seen by the
 * device; then, the device refusing the 41st update of another such burst, 40 mapped and the 30
 * refused ones' IOVAs free again (the IOVA space holds exactly the 70).
 */
static void long_burst(enum vt_dma_mode mode, const struct vt_dma_iotlb_ops *ops)
{
	enum { N = 70, K = 40 };
	struct fixture f;
	struct iovec bufs[N];
	uint64_t bus[N];
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup_burst(&f, mode, ops, N * PAGE), 0);
	REQUIRE(small_buffers(&f, bufs, N));
	REQUIRE_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), N);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	CHECK_EQ(bus_overlaps(bufs, bus, N), 0);
	CHECK_EQ(unseen(&f, bufs, bus, N), 0);
	CHECK_EQ(f.dev.updates, N);
	CHECK_EQ(unmap_all(&f, bufs, bus, N), 0);
	CHECK_EQ(vt_dma_flush(f.dma), 0);

	f.dev.fail_from_update = f.dev.updates + K + 1;
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), K);
	CHECK_EQ(error, -EIO);
	CHECK_EQ(device_entries(&f.dev), K);
	f.dev.fail_from_update = 0;
	error = ERROR_UNTOUCHED;
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs + K, N - K, VT_DMA_TO_DEVICE, bus + K, &error),
		 N - K);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	CHECK_EQ(unseen(&f, bufs, bus, N), 0);
	CHECK_EQ(f.dev.stale_updates, 0);
	CHECK_EQ(unmap_all(&f, bufs, bus, N), 0);
	teardown(&f);
	CHECK_EQ(f.log_seen.warnings, 0);
}

VT_TEST(map_burst_longer_than_a_publication_group_maps_every_buffer_and_stops_where_refused)
{
	for_each_burst_variant(long_burst);
}

/* An empty buffer, a NULL one and a bad direction: -EINVAL, as vt_dma_map refuses them. */
static void burst_stops_at_a_buffer_map_refuses(enum vt_dma_mode mode,
						const struct vt_dma_iotlb_ops *ops)
{
	enum { N = 4 };
	struct fixture f;
	struct iovec bufs[N];
	uint64_t bus[N];
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup_burst(&f, mode, ops, 0), 0);
	REQUIRE(small_buffers(&f, bufs, N));
	bufs[2].iov_len = 0;
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), 2);
	CHECK_EQ(error, -EINVAL);
	CHECK_EQ(f.dev.updates, 2);
	CHECK_EQ(unmap_all(&f, bufs, bus, 2), 0);

	bufs[2].iov_len = 64;
	bufs[1].iov_base = NULL;
	error = ERROR_UNTOUCHED;
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), 1);
	CHECK_EQ(error, -EINVAL);
	CHECK_EQ(vt_dma_unmap(f.dma, bus[0], 64, VT_DMA_TO_DEVICE), 0);

	error = ERROR_UNTOUCHED;
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs + 2, 2, (enum vt_dma_dir)0, bus, &error), 0);
	CHECK_EQ(error, -EINVAL);
	CHECK_EQ(f.dev.updates, 3);
	CHECK(map_counts_are(&f, 3, 3));
	CHECK_EQ(f.log_seen.errors, 3);
	teardown(&f);
	CHECK_EQ(f.log_seen.warnings, 0);
}

VT_TEST(map_burst_stops_at_an_empty_or_null_buffer_with_einval)
{
	for_each_burst_variant(burst_stops_at_a_buffer_map_refuses);
}

/* Six buffers, four pages of IOVA space: four mapped, -ENOSPC; once unmapped, the rest map. */
static void burst_runs_out_of_iova_space(enum vt_dma_mode mode, const struct vt_dma_iotlb_ops *ops)
{
	enum { N = 6, ROOM = 4 };
	struct fixture f;
	struct iovec bufs[N];
	uint64_t bus[N];
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup_burst(&f, mode, ops, ROOM * PAGE), 0);
	REQUIRE(small_buffers(&f, bufs, N));
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), ROOM);
	CHECK_EQ(error, -ENOSPC);
	CHECK_EQ(f.dev.updates, ROOM);
	for (unsigned int i = 0; i < ROOM; i++)
		CHECK(device_sees(&f, bus[i], bufs[i].iov_base, 64));
	CHECK(map_counts_are(&f, ROOM, 1));
	CHECK_EQ(unmap_all(&f, bufs, bus, ROOM), 0);
	error = ERROR_UNTOUCHED;
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs + ROOM, N - ROOM, VT_DMA_TO_DEVICE, bus, &error),
		 N - ROOM);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	for (unsigned int i = 0; i < N - ROOM; i++) {
		CHECK(device_sees(&f, bus[i], bufs[ROOM + i].iov_base, 64));
		CHECK_EQ(vt_dma_unmap(f.dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	}
	CHECK_EQ(f.dev.stale_updates, 0);
	teardown(&f);
	CHECK_EQ(f.log_seen.warnings, 0);
}

VT_TEST(map_burst_out_of_iova_space_stops_at_the_buffer_that_does_not_fit_with_enospc)
{
	for_each_burst_variant(burst_runs_out_of_iova_space);
}

static void empty_burst(enum vt_dma_mode mode, const struct vt_dma_iotlb_ops *ops)
{
	struct fixture f;
	struct iovec buf;
	uint64_t bus = 0;
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup_burst(&f, mode, ops, 0), 0);
	REQUIRE(small_buffers(&f, &buf, 1));
	CHECK_EQ(vt_dma_map_burst(f.dma, &buf, 0, VT_DMA_TO_DEVICE, &bus, &error), 0);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	CHECK_EQ(f.dev.updates, 0);
	CHECK(map_counts_are(&f, 0, 0));
	teardown(&f);
	CHECK_EQ(f.log_seen.errors, 0);
}

VT_TEST(map_burst_of_no_buffers_maps_none_and_leaves_error_alone)
{
	for_each_burst_variant(empty_burst);
}

VT_TEST(a_transport_that_stops_a_burst_without_an_error_fails_it_with_eio)
{
	enum { N = 5 };
	static const enum vt_dma_mode modes[] = { VT_DMA_IOMMU_STRICT, VT_DMA_IOMMU_LAZY };

	for (unsigned int m = 0; m < 2; m++) {
		struct fixture f;
		struct iovec bufs[N];
		uint64_t bus[N];
		int error = 0;

		REQUIRE_EQ(setup_burst(&f, modes[m], &device_burst_ops, 0), 0);
		REQUIRE(small_buffers(&f, bufs, N));
		f.dev.burst_stops_silently_after = 2;
		/* A contract broken by the transport: the burst ends there, not retried forever. */
		CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), 2);
		CHECK_EQ(error, -EIO);
		CHECK_EQ(f.dev.updates, 2);
		for (unsigned int i = 0; i < 2; i++)
			CHECK(device_sees(&f, bus[i], bufs[i].iov_base, bufs[i].iov_len));
		/* The rest went back clean: mapped now, with no stale translation. */
		f.dev.burst_stops_silently_after = 0;
		CHECK_EQ(
		    vt_dma_map_burst(f.dma, bufs + 2, N - 2, VT_DMA_TO_DEVICE, bus + 2, &error),
		    N - 2);
		CHECK_EQ(f.dev.stale_updates, 0);
		CHECK_EQ(unmap_all(&f, bufs, bus, N), 0);
		CHECK(map_counts_are(&f, N, 1));
		teardown(&f);
	}
}

VT_TEST(premapped_map_burst_gives_the_bus_addresses_map_gives)
{
	enum { N = 4 };
	static uint8_t private_buffer[64];
	struct fixture f;
	struct iovec bufs[N];
	uint64_t bus[N], single;
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup(&f, VT_DMA_IOMMU_PREMAPPED), 0);
	REQUIRE(shm_buffers(&f, bufs, N));
	unsigned int updates = f.dev.updates;
	REQUIRE_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), N);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	for (unsigned int i = 0; i < N; i++) {
		REQUIRE_EQ(
		    vt_dma_map(f.dma, bufs[i].iov_base, bufs[i].iov_len, VT_DMA_TO_DEVICE, &single),
		    0);
		CHECK_EQ(bus[i], single);
		CHECK(device_sees(&f, bus[i], bufs[i].iov_base, bufs[i].iov_len));
	}
	CHECK_EQ(f.dev.updates, updates); /* arithmetic: nothing published */
	bufs[1] = (struct iovec){ private_buffer, sizeof(private_buffer) };
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), 1);
	CHECK_EQ(error, -EFAULT);
	CHECK(map_counts_are(&f, 2 * N + 1, 1));
	teardown(&f);
}
