/* SPDX-License-Identifier: MIT */
/*
 * The DMA API's common half (mode names, the choice from negotiation, argument checks,
 * scatter-gather, statistics) and the direct mode, checked from a real device side: a memory
 * table over a second mapping of each shared memory region, as a device process would have.
 */
#include <errno.h>
#include <sys/mman.h>

#include <virtue/dma.h>
#include <virtue/iotlb_feed.h>
#include <virtue/memtable.h>
#include <virtue/spec/virtio_config.h>

#include "harness.h"

/* Counts what the library logs and keeps the last line, instead of printing it. */
struct log_capture {
	unsigned int errors;
	char last[512];
};

static void capture_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_capture *c = opaque;

	if (level == VT_LOG_ERROR)
		c->errors++;
	snprintf(c->last, sizeof(c->last), "%s", message);
}

/* The device's view of the shared memory: its own mapping of every region. */
struct device_side {
	struct vt_memtable *table;
	void *maps[VT_SHM_MAX_REGIONS];
	uint64_t sizes[VT_SHM_MAX_REGIONS];
	unsigned int count;
	struct vt_as as;
};

static int device_attach(struct device_side *dev, const struct vt_shm *shm)
{
	*dev = (struct device_side){ .table = vt_memtable_new(NULL) };
	if (!dev->table)
		return -ENOMEM;
	for (unsigned int i = 0; i < vt_shm_count(shm); i++) {
		const struct vt_shm_region *r = vt_shm_region(shm, i);
		void *hva = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd,
				 (off_t)r->fd_offset);
		if (hva == MAP_FAILED)
			return -errno;
		dev->maps[dev->count] = hva;
		dev->sizes[dev->count++] = r->size;
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
	dev->as = vt_memtable_as(dev->table);
	return 0;
}

static void device_detach(struct device_side *dev)
{
	for (unsigned int i = 0; i < dev->count; i++)
		munmap(dev->maps[i], dev->sizes[i]);
	vt_memtable_free(dev->table);
}

/* One 1 MiB memfd region at driver-physical 1 GiB, a direct DMA over it and the device. */
struct fixture {
	struct vt_shm *shm;
	struct vt_dma *dma;
	struct device_side dev;
	struct log_capture log_seen;
	struct vt_log log;
};

static int setup(struct fixture *f)
{
	*f = (struct fixture){ 0 };
	f->log =
	    (struct vt_log){ .fn = capture_log, .opaque = &f->log_seen, .max_level = VT_LOG_DEBUG };
	int ret = vt_shm_new(&f->shm);
	if (ret == 0)
		ret = vt_shm_add_memfd(f->shm, 1 << 20, 1ULL << 30, NULL);
	if (ret == 0)
		ret = device_attach(&f->dev, f->shm);
	struct vt_dma_params params = { .mode = VT_DMA_DIRECT, .shm = f->shm, .log = &f->log };
	if (ret == 0)
		ret = vt_dma_new(&params, &f->dma);
	return ret;
}

static void teardown(struct fixture *f)
{
	vt_dma_free(f->dma);
	device_detach(&f->dev);
	vt_shm_free(f->shm);
}

static void *shm_buffer(struct fixture *f, size_t len)
{
	void *p = NULL;
	return vt_shm_alloc(f->shm, len, 0, &p) == 0 ? p : NULL;
}

VT_TEST(mode_names_round_trip_through_parse)
{
	static const enum vt_dma_mode modes[] = { VT_DMA_DIRECT, VT_DMA_IOMMU_STRICT,
						  VT_DMA_IOMMU_LAZY, VT_DMA_IOMMU_PREMAPPED,
						  VT_DMA_BOUNCE };

	for (unsigned int i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		enum vt_dma_mode m = VT_DMA_BOUNCE + 1;
		CHECK_EQ(vt_dma_mode_parse(vt_dma_mode_name(modes[i]), &m), 0);
		CHECK_EQ(m, modes[i]);
	}
}

VT_TEST(mode_parse_accepts_the_short_names)
{
	enum vt_dma_mode m;

	CHECK(vt_dma_mode_parse("direct", &m) == 0 && m == VT_DMA_DIRECT);
	CHECK(vt_dma_mode_parse("strict", &m) == 0 && m == VT_DMA_IOMMU_STRICT);
	CHECK(vt_dma_mode_parse("lazy", &m) == 0 && m == VT_DMA_IOMMU_LAZY);
	CHECK(vt_dma_mode_parse("premapped", &m) == 0 && m == VT_DMA_IOMMU_PREMAPPED);
	CHECK(vt_dma_mode_parse("bounce", &m) == 0 && m == VT_DMA_BOUNCE);
	CHECK(vt_dma_mode_parse("iommu-lazy", &m) == 0 && m == VT_DMA_IOMMU_LAZY);
}

VT_TEST(mode_parse_rejects_unknown_names)
{
	enum vt_dma_mode m = VT_DMA_BOUNCE;

	CHECK_EQ(vt_dma_mode_parse("iommu", &m), -EINVAL);
	CHECK_EQ(vt_dma_mode_parse("", &m), -EINVAL);
	CHECK_EQ(vt_dma_mode_parse(NULL, &m), -EINVAL);
	CHECK_EQ(m, VT_DMA_BOUNCE);
	CHECK_STR(vt_dma_mode_name((enum vt_dma_mode)42), "unknown");
}

VT_TEST(mode_for_picks_direct_without_access_platform)
{
	uint64_t features = VT_BIT(VIRTIO_F_VERSION_1) | VT_BIT(VIRTIO_F_ORDER_PLATFORM);

	CHECK_EQ(vt_dma_mode_for(features, VT_DMA_IOMMU_STRICT), VT_DMA_DIRECT);
	CHECK_EQ(vt_dma_mode_for(features, VT_DMA_BOUNCE), VT_DMA_DIRECT);
	CHECK_EQ(vt_dma_mode_for(~VT_BIT(33), VT_DMA_IOMMU_LAZY), VT_DMA_DIRECT);
}

VT_TEST(mode_for_picks_the_platform_mode_with_access_platform)
{
	uint64_t features = VT_BIT(VIRTIO_F_VERSION_1) | VT_BIT(33);

	CHECK_EQ(VIRTIO_F_ACCESS_PLATFORM, 33);
	CHECK_EQ(vt_dma_mode_for(features, VT_DMA_IOMMU_STRICT), VT_DMA_IOMMU_STRICT);
	CHECK_EQ(vt_dma_mode_for(features, VT_DMA_IOMMU_PREMAPPED), VT_DMA_IOMMU_PREMAPPED);
	CHECK_EQ(vt_dma_mode_for(features, VT_DMA_BOUNCE), VT_DMA_BOUNCE);
}

VT_TEST(new_rejects_missing_shared_memory)
{
	struct log_capture seen = { 0 };
	struct vt_log log = { .fn = capture_log, .opaque = &seen, .max_level = VT_LOG_DEBUG };
	struct vt_dma_params params = { .mode = VT_DMA_DIRECT, .log = &log };
	struct vt_dma *dma;

	CHECK_EQ(vt_dma_new(&params, &dma), -EINVAL);
	CHECK_EQ(vt_dma_new(NULL, &dma), -EINVAL);
	CHECK_EQ(seen.errors, 1);
}

/* Never called: vt_dma_new refuses the ops it is in. */
static int sync_without_invalidate_nowait(void *opaque)
{
	return 0;
}

VT_TEST(new_rejects_an_iommu_mode_without_iotlb_ops)
{
	struct log_capture seen = { 0 };
	struct vt_log log = { .fn = capture_log, .opaque = &seen, .max_level = VT_LOG_DEBUG };
	struct vt_shm *shm;
	struct vt_dma *dma;

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	struct vt_dma_params params = { .mode = VT_DMA_IOMMU_STRICT, .shm = shm, .log = &log };
	CHECK_EQ(vt_dma_new(&params, &dma), -EINVAL);
	params.mode = (enum vt_dma_mode)17;
	CHECK_EQ(vt_dma_new(&params, &dma), -EINVAL);
	CHECK_EQ(seen.errors, 2);
	/* The optional pairs come both or neither. */
	struct vt_dma_iotlb_ops half = vt_iotlb_feed_ops;
	half.batch_end = NULL;
	params = (struct vt_dma_params){
		.mode = VT_DMA_IOMMU_STRICT, .shm = shm, .log = &log, .iotlb_ops = &half
	};
	CHECK_EQ(vt_dma_new(&params, &dma), -EINVAL);
	half = vt_iotlb_feed_ops;
	half.batch_begin = NULL;
	CHECK_EQ(vt_dma_new(&params, &dma), -EINVAL);
	half = vt_iotlb_feed_ops;
	half.invalidate_nowait = half.invalidate;
	CHECK_EQ(vt_dma_new(&params, &dma), -EINVAL);
	half = vt_iotlb_feed_ops;
	half.sync = sync_without_invalidate_nowait;
	CHECK_EQ(vt_dma_new(&params, &dma), -EINVAL);
	CHECK_EQ(seen.errors, 6);
	vt_shm_free(shm);
}

VT_TEST(direct_bus_address_is_the_driver_physical_address)
{
	struct fixture f;
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	CHECK_EQ(vt_dma_mode(f.dma), VT_DMA_DIRECT);
	const struct vt_shm_region *r = vt_shm_region(f.shm, 0);
	uint8_t *p = (uint8_t *)r->hva + 4096 + 5;
	REQUIRE_EQ(vt_dma_map(f.dma, p, 100, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(bus, (1ULL << 30) + 4096 + 5);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 100, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(direct_device_reads_what_the_driver_wrote)
{
	struct fixture f;
	uint8_t seen[300];
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	uint8_t *p = shm_buffer(&f, sizeof(seen));
	REQUIRE(p != NULL);
	for (unsigned int i = 0; i < sizeof(seen); i++)
		p[i] = (uint8_t)(i * 7 + 1);
	REQUIRE_EQ(vt_dma_map(f.dma, p, sizeof(seen), VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(vt_as_read(&f.dev.as, bus, seen, sizeof(seen), NULL), 0);
	CHECK(memcmp(seen, p, sizeof(seen)) == 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, sizeof(seen), VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(direct_driver_reads_what_the_device_wrote)
{
	struct fixture f;
	static const char reply[] = "written by the device";
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	char *p = shm_buffer(&f, 64);
	REQUIRE(p != NULL);
	memset(p, 0, 64);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_FROM_DEVICE, &bus), 0);
	CHECK_EQ(vt_as_write(&f.dev.as, bus, reply, sizeof(reply), NULL), 0);
	CHECK_EQ(vt_dma_sync_for_cpu(f.dma, bus, 64, VT_DMA_FROM_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_FROM_DEVICE), 0);
	CHECK_STR(p, reply);
	teardown(&f);
}

VT_TEST(direct_map_outside_shared_memory_is_efault_and_logged)
{
	struct fixture f;
	uint8_t private_buffer[64];
	uint64_t bus = 0x1234;

	REQUIRE_EQ(setup(&f), 0);
	CHECK_EQ(vt_dma_map(f.dma, private_buffer, sizeof(private_buffer), VT_DMA_TO_DEVICE, &bus),
		 -EFAULT);
	CHECK_EQ(bus, 0x1234);
	CHECK_EQ(f.log_seen.errors, 1);
	CHECK(strstr(f.log_seen.last, "not inside one shared memory region") != NULL);
	teardown(&f);
}

VT_TEST(direct_map_leaving_its_region_is_efault)
{
	struct fixture f;
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	const struct vt_shm_region *r = vt_shm_region(f.shm, 0);
	CHECK_EQ(vt_dma_map(f.dma, (uint8_t *)r->hva + r->size - 8, 16, VT_DMA_TO_DEVICE, &bus),
		 -EFAULT);
	teardown(&f);
}

VT_TEST(map_rejects_empty_null_and_bad_directions)
{
	struct fixture f;
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	void *p = shm_buffer(&f, 64);
	REQUIRE(p != NULL);
	CHECK_EQ(vt_dma_map(f.dma, p, 0, VT_DMA_TO_DEVICE, &bus), -EINVAL);
	CHECK_EQ(vt_dma_map(f.dma, p, 64, (enum vt_dma_dir)0, &bus), -EINVAL);
	CHECK_EQ(vt_dma_map(f.dma, p, 64, (enum vt_dma_dir)4, &bus), -EINVAL);
	CHECK_EQ(vt_dma_map(f.dma, NULL, 64, VT_DMA_TO_DEVICE, &bus), -EINVAL);
	CHECK_EQ(
	    vt_dma_map(f.dma, (void *)(uintptr_t)(UINTPTR_MAX - 10), 64, VT_DMA_TO_DEVICE, &bus),
	    -EINVAL);
	CHECK_EQ(f.log_seen.errors, 5);
	teardown(&f);
}

VT_TEST(direct_unmap_outside_shared_memory_is_enoent)
{
	struct fixture f;

	REQUIRE_EQ(setup(&f), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, 0x1000, 64, VT_DMA_TO_DEVICE), -ENOENT);
	CHECK_EQ(vt_dma_unmap(f.dma, (1ULL << 30) + (1 << 20) - 8, 64, VT_DMA_TO_DEVICE), -ENOENT);
	CHECK_EQ(vt_dma_sync_for_cpu(f.dma, 0x1000, 64, VT_DMA_FROM_DEVICE), -ENOENT);
	teardown(&f);
}

VT_TEST(direct_alloc_coherent_is_zeroed_and_reachable_by_the_device)
{
	struct fixture f;
	void *cpu;
	uint64_t bus;
	uint8_t seen[256];

	REQUIRE_EQ(setup(&f), 0);
	/* Dirty the memory first, so zeroing is the allocator's doing. */
	void *dirty = shm_buffer(&f, 1 << 19);
	REQUIRE(dirty != NULL);
	memset(dirty, 0xee, 1 << 19);
	vt_shm_release(f.shm, dirty, 1 << 19);

	REQUIRE_EQ(vt_dma_alloc_coherent(f.dma, sizeof(seen), &cpu, &bus), 0);
	CHECK_EQ((uintptr_t)cpu % 4096, 0);
	CHECK_EQ(vt_as_read(&f.dev.as, bus, seen, sizeof(seen), NULL), 0);
	static const uint8_t zeros[256];
	CHECK(memcmp(seen, zeros, sizeof(seen)) == 0);
	memcpy(cpu, "ring", 4);
	CHECK_EQ(vt_as_read(&f.dev.as, bus, seen, 4, NULL), 0);
	CHECK(memcmp(seen, "ring", 4) == 0);
	vt_dma_free_coherent(f.dma, sizeof(seen), cpu, bus);
	CHECK_EQ(f.log_seen.errors, 0);
	teardown(&f);
}

VT_TEST(direct_alloc_coherent_beyond_shared_memory_is_enomem)
{
	struct fixture f;
	void *cpu;
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	CHECK_EQ(vt_dma_alloc_coherent(f.dma, 2 << 20, &cpu, &bus), -ENOMEM);
	CHECK_EQ(vt_dma_alloc_coherent(f.dma, 0, &cpu, &bus), -EINVAL);
	teardown(&f);
}

VT_TEST(direct_map_sg_maps_every_element)
{
	struct fixture f;
	struct iovec sg[3];
	uint64_t bus[3];

	REQUIRE_EQ(setup(&f), 0);
	for (unsigned int i = 0; i < 3; i++) {
		sg[i].iov_len = 100 + i;
		sg[i].iov_base = shm_buffer(&f, sg[i].iov_len);
		REQUIRE(sg[i].iov_base != NULL);
		memset(sg[i].iov_base, 'a' + (int)i, sg[i].iov_len);
	}
	REQUIRE_EQ(vt_dma_map_sg(f.dma, sg, 3, VT_DMA_TO_DEVICE, bus), 0);
	for (unsigned int i = 0; i < 3; i++) {
		char seen[102];
		CHECK_EQ(vt_as_read(&f.dev.as, bus[i], seen, sg[i].iov_len, NULL), 0);
		CHECK(memcmp(seen, sg[i].iov_base, sg[i].iov_len) == 0);
	}
	vt_dma_unmap_sg(f.dma, sg, 3, VT_DMA_TO_DEVICE, bus);
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.maps, 3);
	CHECK_EQ(st.unmaps, 3);
	teardown(&f);
}

VT_TEST(direct_map_sg_failure_leaves_nothing_mapped)
{
	struct fixture f;
	uint8_t private_buffer[32];
	struct iovec sg[4];
	uint64_t bus[4];

	REQUIRE_EQ(setup(&f), 0);
	sg[0] = (struct iovec){ shm_buffer(&f, 64), 64 };
	sg[1] = (struct iovec){ shm_buffer(&f, 64), 64 };
	sg[2] = (struct iovec){ private_buffer, sizeof(private_buffer) };
	sg[3] = (struct iovec){ shm_buffer(&f, 64), 64 };
	CHECK_EQ(vt_dma_map_sg(f.dma, sg, 4, VT_DMA_TO_DEVICE, bus), -EFAULT);
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.maps, 2);
	CHECK_EQ(st.unmaps, 2); /* the two that succeeded were undone */
	CHECK_EQ(st.map_failures, 1);
	teardown(&f);
}

VT_TEST(stats_count_maps_unmaps_and_failures)
{
	struct fixture f;
	struct vt_dma_stats st;
	uint64_t bus;
	int local;

	REQUIRE_EQ(setup(&f), 0);
	void *p = shm_buffer(&f, 64);
	REQUIRE(p != NULL);
	for (int i = 0; i < 5; i++) {
		REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_BIDIRECTIONAL, &bus), 0);
		REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_BIDIRECTIONAL), 0);
	}
	CHECK_EQ(vt_dma_map(f.dma, &local, sizeof(local), VT_DMA_TO_DEVICE, &bus), -EFAULT);
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.maps, 5);
	CHECK_EQ(st.unmaps, 5);
	CHECK_EQ(st.map_failures, 1);
	CHECK_EQ(st.iotlb_updates, 0);
	CHECK_EQ(st.bounce_bytes_in, 0);
	teardown(&f);
}

/* What vt_dma_map_burst must leave alone when it maps every buffer. */
#define ERROR_UNTOUCHED 12345

VT_TEST(direct_map_burst_gives_each_buffer_the_bus_address_map_gives)
{
	enum { N = 4 };
	struct fixture f;
	struct iovec bufs[N];
	uint64_t bus[N], single;
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup(&f), 0);
	for (unsigned int i = 0; i < N; i++) {
		bufs[i].iov_len = 100 + 1000 * i;
		bufs[i].iov_base = shm_buffer(&f, bufs[i].iov_len);
		REQUIRE(bufs[i].iov_base != NULL);
		memset(bufs[i].iov_base, 'a' + (int)i, bufs[i].iov_len);
	}
	REQUIRE_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), N);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	const struct vt_shm_region *r = vt_shm_region(f.shm, 0);
	for (unsigned int i = 0; i < N; i++) {
		uint8_t seen[3100];
		REQUIRE_EQ(
		    vt_dma_map(f.dma, bufs[i].iov_base, bufs[i].iov_len, VT_DMA_TO_DEVICE, &single),
		    0);
		CHECK_EQ(bus[i], single);
		CHECK_EQ(bus[i], r->gpa + ((uint8_t *)bufs[i].iov_base - (uint8_t *)r->hva));
		CHECK_EQ(vt_as_read(&f.dev.as, bus[i], seen, bufs[i].iov_len, NULL), 0);
		CHECK(memcmp(seen, bufs[i].iov_base, bufs[i].iov_len) == 0);
	}
	for (unsigned int i = 0; i < N; i++)
		CHECK_EQ(vt_dma_unmap(f.dma, bus[i], bufs[i].iov_len, VT_DMA_TO_DEVICE), 0);
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.maps, 2 * N);
	CHECK_EQ(st.map_failures, 0);
	teardown(&f);
}

VT_TEST(direct_map_burst_stops_at_the_first_buffer_map_refuses_with_its_error)
{
	enum { N = 4 };
	struct fixture f;
	uint8_t private_buffer[64];
	struct iovec bufs[N];
	uint64_t bus[N];
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup(&f), 0);
	for (unsigned int i = 0; i < N; i++) {
		bufs[i] = (struct iovec){ shm_buffer(&f, 64), 64 };
		REQUIRE(bufs[i].iov_base != NULL);
	}
	struct iovec good = bufs[2];
	bufs[2] = (struct iovec){ private_buffer, sizeof(private_buffer) };
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), 2);
	CHECK_EQ(error, -EFAULT);
	bufs[2] = good;
	bufs[1].iov_len = 0;
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), 1);
	CHECK_EQ(error, -EINVAL);
	bufs[1].iov_len = 64;
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, (enum vt_dma_dir)0, bus, &error), 0);
	CHECK_EQ(error, -EINVAL);
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.maps, 3);
	CHECK_EQ(st.map_failures, 3);
	CHECK_EQ(f.log_seen.errors, 3);
	teardown(&f);
}
