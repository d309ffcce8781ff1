/* SPDX-License-Identifier: MIT */
/*
 * The bounce DMA mode against a real device side. The shared memory is exactly the bounce window
 * (as a confidential guest shares only its swiotlb window), and the device maps it a second time
 * through a memory table; the driver's buffers are private memory the device cannot reach.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

#include <virtue/dma.h>
#include <virtue/memtable.h>

#include "harness.h"

#define WINDOW_GPA  (1ULL << 32)
#define WINDOW_SIZE (64ULL << 10)

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

struct fixture {
	struct vt_shm *shm;
	struct vt_dma *dma;
	struct vt_memtable *table;
	void *device_map;
	struct vt_as dev; /* the device's address space */
	struct log_capture log_seen;
	struct vt_log log;
};

static int setup(struct fixture *f)
{
	*f = (struct fixture){ 0 };
	f->log =
	    (struct vt_log){ .fn = capture_log, .opaque = &f->log_seen, .max_level = VT_LOG_DEBUG };
	const struct vt_shm_region *r;
	int ret = vt_shm_new(&f->shm);
	if (ret == 0)
		ret = vt_shm_add_memfd(f->shm, WINDOW_SIZE, WINDOW_GPA, &r);
	if (ret < 0)
		return ret;

	f->table = vt_memtable_new(NULL);
	if (!f->table)
		return -ENOMEM;
	f->device_map =
	    mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, (off_t)r->fd_offset);
	if (f->device_map == MAP_FAILED) {
		f->device_map = NULL;
		return -errno;
	}
	struct vt_mem_region mr = {
		.gpa = r->gpa,
		.size = r->size,
		.hva = f->device_map,
		.uaddr = (uint64_t)(uintptr_t)r->hva,
	};
	ret = vt_memtable_add(f->table, &mr);
	if (ret < 0)
		return ret;
	f->dev = vt_memtable_as(f->table);

	struct vt_dma_params params = {
		.mode = VT_DMA_BOUNCE,
		.shm = f->shm,
		.log = &f->log,
		.bounce_window_size = WINDOW_SIZE,
	};
	return vt_dma_new(&params, &f->dma);
}

static void teardown(struct fixture *f)
{
	vt_dma_free(f->dma);
	if (f->device_map)
		munmap(f->device_map, WINDOW_SIZE);
	vt_memtable_free(f->table);
	vt_shm_free(f->shm);
}

static void fill(void *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i++)
		((uint8_t *)p)[i] = (uint8_t)(seed + i * 31);
}

static bool in_window(uint64_t bus, size_t len)
{
	return bus >= WINDOW_GPA && bus + len <= WINDOW_GPA + WINDOW_SIZE;
}

static bool device_sees(struct fixture *f, uint64_t bus, const void *expect, size_t len)
{
	uint8_t *seen = malloc(len);
	bool same = seen && vt_as_read(&f->dev, bus, seen, len, NULL) == 0 &&
		    memcmp(seen, expect, len) == 0;

	free(seen);
	return same;
}

static uint8_t private_memory[3][16384]; /* the driver's own: never shared */

VT_TEST(bounce_device_reads_what_the_driver_wrote)
{
	struct fixture f;
	uint8_t *p = private_memory[0];
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	fill(p, 1000, 1);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 1000, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK(in_window(bus, 1000));
	CHECK(device_sees(&f, bus, p, 1000));
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 1000, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(bounce_driver_reads_what_the_device_wrote_after_unmap)
{
	struct fixture f;
	static const char reply[] = "copied out of the window";
	char *p = (char *)private_memory[0];
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	memset(p, 0, 64);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_FROM_DEVICE, &bus), 0);
	CHECK_EQ(vt_as_write(&f.dev, bus, reply, sizeof(reply), NULL), 0);
	CHECK_EQ(p[0], 0); /* nothing reaches the driver's buffer before the copy */
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_FROM_DEVICE), 0);
	CHECK_STR(p, reply);
	/* Counted as copied: out at unmap, never in. */
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.bounce_bytes_out, 64);
	CHECK_EQ(st.bounce_bytes_in, 0);
	teardown(&f);
}

VT_TEST(bounce_sync_for_cpu_copies_device_writes_before_unmap)
{
	struct fixture f;
	char *p = (char *)private_memory[0];
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	memset(p, 0, 256);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 256, VT_DMA_FROM_DEVICE, &bus), 0);
	CHECK_EQ(vt_as_write(&f.dev, bus + 100, "part", 4, NULL), 0);
	CHECK_EQ(vt_dma_sync_for_cpu(f.dma, bus + 100, 4, VT_DMA_FROM_DEVICE), 0);
	CHECK(memcmp(p + 100, "part", 4) == 0);
	CHECK_EQ(vt_dma_sync_for_cpu(f.dma, bus + 250, 8, VT_DMA_FROM_DEVICE), -ENOENT);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 256, VT_DMA_FROM_DEVICE), 0);
	/* The sync's 4 bytes, then the unmap's 256; the refused sync copied nothing. */
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.bounce_bytes_out, 4 + 256);
	teardown(&f);
}

VT_TEST(bounce_sync_for_device_copies_new_driver_writes)
{
	struct fixture f;
	uint8_t *p = private_memory[0];
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	fill(p, 512, 2);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 512, VT_DMA_TO_DEVICE, &bus), 0);
	fill(p, 512, 3);
	CHECK(!device_sees(&f, bus, p, 512)); /* the window still holds the first contents */
	CHECK_EQ(vt_dma_sync_for_device(f.dma, bus, 512, VT_DMA_TO_DEVICE), 0);
	CHECK(device_sees(&f, bus, p, 512));
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 512, VT_DMA_TO_DEVICE), 0);
	/* In at the map and again at the sync; nothing out. */
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.bounce_bytes_in, 2 * 512);
	CHECK_EQ(st.bounce_bytes_out, 0);
	teardown(&f);
}

VT_TEST(bounce_to_device_unmap_does_not_write_back)
{
	struct fixture f;
	uint8_t *p = private_memory[0];
	uint8_t before[128];
	struct vt_dma_stats st;
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	fill(p, 128, 4);
	memcpy(before, p, 128);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 128, VT_DMA_TO_DEVICE, &bus), 0);
	/* A misbehaving device scribbles on a buffer it was only meant to read. */
	CHECK_EQ(vt_as_write(&f.dev, bus, "scribble", 8, NULL), 0);
	CHECK_EQ(vt_dma_sync_for_cpu(f.dma, bus, 128, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 128, VT_DMA_TO_DEVICE), 0);
	CHECK(memcmp(p, before, 128) == 0);
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.bounce_bytes_in, 128);
	CHECK_EQ(st.bounce_bytes_out, 0);
	teardown(&f);
}

VT_TEST(bounce_from_device_map_does_not_copy_in)
{
	struct fixture f;
	uint8_t *p = private_memory[0];
	static const uint8_t zeros[128];
	struct vt_dma_stats st;
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	/* Leave old data in the window first: neither it nor the driver's bytes may show. */
	fill(p, 128, 5);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 128, VT_DMA_TO_DEVICE, &bus), 0);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 128, VT_DMA_TO_DEVICE), 0);

	fill(p, 128, 6);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 128, VT_DMA_FROM_DEVICE, &bus), 0);
	CHECK(device_sees(&f, bus, zeros, 128));
	CHECK_EQ(vt_dma_sync_for_device(f.dma, bus, 128, VT_DMA_FROM_DEVICE), 0);
	CHECK(device_sees(&f, bus, zeros, 128));
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.bounce_bytes_in, 128); /* the first, to-device mapping only */
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 128, VT_DMA_FROM_DEVICE), 0);
	teardown(&f);
}

VT_TEST(bounce_bidirectional_copies_both_ways)
{
	struct fixture f;
	uint8_t *p = private_memory[0];
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	fill(p, 64, 7);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_BIDIRECTIONAL, &bus), 0);
	CHECK(device_sees(&f, bus, p, 64));
	CHECK_EQ(vt_as_write(&f.dev, bus + 60, "back", 4, NULL), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_BIDIRECTIONAL), 0);
	CHECK(memcmp(p + 60, "back", 4) == 0);
	teardown(&f);
}

VT_TEST(bounce_device_cannot_reach_outside_the_window)
{
	struct fixture f;
	uint8_t *p = private_memory[0];
	uint8_t seen[8];
	uint64_t bus[3];

	REQUIRE_EQ(setup(&f), 0);
	for (int i = 0; i < 3; i++) {
		REQUIRE_EQ(
		    vt_dma_map(f.dma, private_memory[i], 16384, VT_DMA_BIDIRECTIONAL, &bus[i]), 0);
		CHECK(in_window(bus[i], 16384));
	}
	/* Neither the driver's private buffer nor anything around the window translates. */
	CHECK_EQ(vt_as_read(&f.dev, (uint64_t)(uintptr_t)p, seen, 8, NULL), -EFAULT);
	CHECK_EQ(vt_as_read(&f.dev, WINDOW_GPA - 8, seen, 8, NULL), -EFAULT);
	CHECK_EQ(vt_as_read(&f.dev, WINDOW_GPA + WINDOW_SIZE, seen, 8, NULL), -EFAULT);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(vt_dma_unmap(f.dma, bus[i], 16384, VT_DMA_BIDIRECTIONAL), 0);
	teardown(&f);
}

VT_TEST(bounce_window_exhaustion_is_enospc_and_recovers)
{
	struct fixture f;
	uint8_t *p = private_memory[0];
	uint64_t bus[17];

	REQUIRE_EQ(setup(&f), 0);
	for (int i = 0; i < 16; i++)
		REQUIRE_EQ(vt_dma_map(f.dma, p, 4096, VT_DMA_TO_DEVICE, &bus[i]), 0);
	CHECK_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &bus[16]), -ENOSPC);
	CHECK_EQ(f.log_seen.warnings, 1);
	CHECK(strstr(f.log_seen.last, "window full") != NULL);
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.map_failures, 1);
	CHECK_EQ(vt_dma_unmap(f.dma, bus[5], 4096, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_map(f.dma, private_memory[1], 4096, VT_DMA_TO_DEVICE, &bus[5]), 0);
	for (int i = 0; i < 16; i++)
		CHECK_EQ(vt_dma_unmap(f.dma, bus[i], 4096, VT_DMA_TO_DEVICE), 0);
	/* Everything back: the whole window maps at once. */
	static uint8_t large[WINDOW_SIZE];
	CHECK_EQ(vt_dma_map(f.dma, large, WINDOW_SIZE, VT_DMA_TO_DEVICE, &bus[0]), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus[0], WINDOW_SIZE, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

/*
 * Unmapped small slots are kept for the next map of their size: the same bus address comes back,
 * for a shorter length of the same size too, filled as any new slot is; a kept slot is not mapped
 * (unmap and sync refuse it); and when the window runs out they all go back to the allocator,
 * so the whole window maps at once again.
 */
VT_TEST(bounce_unmapped_slots_are_reused_by_size_and_given_back_when_the_window_runs_out)
{
	struct fixture f;
	uint8_t *p = private_memory[0];
	static const uint8_t zeros[128];
	uint64_t bus, again, other;

	REQUIRE_EQ(setup(&f), 0);
	fill(p, 100, 7);
	REQUIRE_EQ(vt_dma_map(f.dma, p, 100, VT_DMA_TO_DEVICE, &bus), 0);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus, 100, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 100, VT_DMA_TO_DEVICE), -ENOENT);
	CHECK_EQ(vt_dma_sync_for_cpu(f.dma, bus, 100, VT_DMA_TO_DEVICE), -ENOENT);

	/* 70 bytes take the same two granules: the same slot, zeroed for the device. */
	REQUIRE_EQ(vt_dma_map(f.dma, p, 70, VT_DMA_FROM_DEVICE, &again), 0);
	CHECK_EQ(again, bus);
	CHECK(device_sees(&f, again, zeros, 70));
	/* Another size does not get it. */
	REQUIRE_EQ(vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &other), 0);
	CHECK(other != bus);
	CHECK_EQ(vt_dma_unmap(f.dma, other, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, again, 70, VT_DMA_FROM_DEVICE), 0);

	/* Every granule mapped in 64-byte slots, then all unmapped: many are kept. */
	static uint64_t small[WINDOW_SIZE / 64];
	unsigned int n = 0;
	while (n < WINDOW_SIZE / 64 && vt_dma_map(f.dma, p, 64, VT_DMA_TO_DEVICE, &small[n]) == 0)
		n++;
	CHECK_EQ(n, (unsigned int)(WINDOW_SIZE / 64));
	for (unsigned int i = 0; i < n; i++)
		CHECK_EQ(vt_dma_unmap(f.dma, small[i], 64, VT_DMA_TO_DEVICE), 0);
	static uint8_t large[WINDOW_SIZE];
	CHECK_EQ(vt_dma_map(f.dma, large, WINDOW_SIZE, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, WINDOW_SIZE, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(bounce_unmap_checks_length_direction_and_address)
{
	struct fixture f;
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	REQUIRE_EQ(vt_dma_map(f.dma, private_memory[0], 100, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 99, VT_DMA_TO_DEVICE), -EINVAL);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 100, VT_DMA_BIDIRECTIONAL), -EINVAL);
	CHECK_EQ(vt_dma_unmap(f.dma, bus + 64, 36, VT_DMA_TO_DEVICE), -ENOENT);
	CHECK_EQ(vt_dma_unmap(f.dma, 0x1000, 100, VT_DMA_TO_DEVICE), -ENOENT);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 100, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 100, VT_DMA_TO_DEVICE), -ENOENT);
	teardown(&f);
}

VT_TEST(bounce_map_sg_failure_leaves_nothing_mapped)
{
	struct fixture f;
	static uint8_t large[48 << 10];
	struct iovec sg[3] = {
		{ private_memory[0], 16384 },
		{ private_memory[1], 16384 },
		{ large, sizeof(large) }, /* only 32 KiB of window left */
	};
	uint64_t bus[3];

	REQUIRE_EQ(setup(&f), 0);
	CHECK_EQ(vt_dma_map_sg(f.dma, sg, 3, VT_DMA_TO_DEVICE, bus), -ENOSPC);
	static uint8_t whole[WINDOW_SIZE];
	CHECK_EQ(vt_dma_map(f.dma, whole, WINDOW_SIZE, VT_DMA_TO_DEVICE, &bus[0]), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus[0], WINDOW_SIZE, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

/* What vt_dma_map_burst must leave alone when it maps every buffer. */
#define ERROR_UNTOUCHED 12345

VT_TEST(bounce_map_burst_copies_each_buffer_in_and_out_of_its_own_slot)
{
	static const size_t lens[3] = { 1000, 16384, 70 };
	struct fixture f;
	struct iovec bufs[3];
	uint64_t bus[3];
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup(&f), 0);
	for (unsigned int i = 0; i < 3; i++) {
		bufs[i] = (struct iovec){ private_memory[i], lens[i] };
		fill(private_memory[i], lens[i], 10 * i + 1);
	}
	REQUIRE_EQ(vt_dma_map_burst(f.dma, bufs, 3, VT_DMA_TO_DEVICE, bus, &error), 3);
	CHECK_EQ(error, ERROR_UNTOUCHED);
	for (unsigned int i = 0; i < 3; i++) {
		CHECK(in_window(bus[i], lens[i]));
		CHECK(device_sees(&f, bus[i], private_memory[i], lens[i]));
		for (unsigned int j = 0; j < i; j++)
			CHECK(bus[i] + lens[i] <= bus[j] || bus[j] + lens[j] <= bus[i]);
	}
	for (unsigned int i = 0; i < 3; i++)
		CHECK_EQ(vt_dma_unmap(f.dma, bus[i], lens[i], VT_DMA_TO_DEVICE), 0);

	/* From the device: each buffer gets its own slot's bytes back at its unmap. */
	REQUIRE_EQ(vt_dma_map_burst(f.dma, bufs, 3, VT_DMA_FROM_DEVICE, bus, &error), 3);
	for (unsigned int i = 0; i < 3; i++) {
		char reply[16];
		snprintf(reply, sizeof(reply), "reply %u", i);
		CHECK_EQ(vt_as_write(&f.dev, bus[i], reply, strlen(reply) + 1, NULL), 0);
	}
	for (unsigned int i = 0; i < 3; i++) {
		char reply[16];
		snprintf(reply, sizeof(reply), "reply %u", i);
		CHECK_EQ(vt_dma_unmap(f.dma, bus[i], lens[i], VT_DMA_FROM_DEVICE), 0);
		CHECK_STR((const char *)private_memory[i], reply);
	}
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.maps, 6);
	CHECK_EQ(st.bounce_bytes_in, lens[0] + lens[1] + lens[2]);
	teardown(&f);
}

VT_TEST(bounce_map_burst_stops_at_the_buffer_the_window_has_no_room_for)
{
	enum { N = 5 };
	static uint8_t memory[N][16384];
	struct fixture f;
	struct iovec bufs[N];
	uint64_t bus[N];
	int error = ERROR_UNTOUCHED;

	REQUIRE_EQ(setup(&f), 0);
	for (unsigned int i = 0; i < N; i++) {
		bufs[i] = (struct iovec){ memory[i], sizeof(memory[i]) };
		fill(memory[i], sizeof(memory[i]), i + 1);
	}
	/* The 64 KiB window holds four. */
	CHECK_EQ(vt_dma_map_burst(f.dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), 4);
	CHECK_EQ(error, -ENOSPC);
	for (unsigned int i = 0; i < 4; i++)
		CHECK(device_sees(&f, bus[i], memory[i], sizeof(memory[i])));
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.maps, 4);
	CHECK_EQ(st.map_failures, 1);
	for (unsigned int i = 0; i < 4; i++)
		CHECK_EQ(vt_dma_unmap(f.dma, bus[i], sizeof(memory[i]), VT_DMA_TO_DEVICE), 0);
	/* Nothing left behind: the whole window maps at once. */
	static uint8_t whole[WINDOW_SIZE];
	CHECK_EQ(vt_dma_map(f.dma, whole, WINDOW_SIZE, VT_DMA_TO_DEVICE, &bus[0]), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus[0], WINDOW_SIZE, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(bounce_alloc_coherent_lives_in_the_window_without_copies)
{
	struct fixture f;
	static const uint8_t zeros[1024];
	struct vt_dma_stats st;
	void *cpu;
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	/* Dirty the window first, so the zeroes are the allocation's. */
	static uint8_t dirty[WINDOW_SIZE];
	memset(dirty, 0xee, sizeof(dirty));
	REQUIRE_EQ(vt_dma_map(f.dma, dirty, WINDOW_SIZE, VT_DMA_TO_DEVICE, &bus), 0);
	REQUIRE_EQ(vt_dma_unmap(f.dma, bus, WINDOW_SIZE, VT_DMA_TO_DEVICE), 0);
	vt_dma_get_stats(f.dma, &st);

	REQUIRE_EQ(vt_dma_alloc_coherent(f.dma, sizeof(zeros), &cpu, &bus), 0);
	CHECK(in_window(bus, sizeof(zeros)));
	CHECK_EQ((uintptr_t)cpu % 4096, 0);
	CHECK(device_sees(&f, bus, zeros, sizeof(zeros)));
	/* Both sides share the bytes: no sync, no copy. */
	CHECK_EQ(vt_as_write(&f.dev, bus + 4, "ring", 4, NULL), 0);
	CHECK(memcmp((uint8_t *)cpu + 4, "ring", 4) == 0);
	memcpy(cpu, "idx", 3);
	CHECK(device_sees(&f, bus, "idx", 3));
	struct vt_dma_stats after;
	vt_dma_get_stats(f.dma, &after);
	CHECK_EQ(after.bounce_bytes_in, st.bounce_bytes_in);
	CHECK_EQ(after.bounce_bytes_out, st.bounce_bytes_out);
	/* Coherent memory is not a streaming mapping. */
	CHECK_EQ(vt_dma_unmap(f.dma, bus, sizeof(zeros), VT_DMA_BIDIRECTIONAL), -EINVAL);
	vt_dma_free_coherent(f.dma, sizeof(zeros), cpu, bus);
	CHECK_EQ(vt_dma_map(f.dma, dirty, WINDOW_SIZE, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK_EQ(vt_dma_unmap(f.dma, bus, WINDOW_SIZE, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(bounce_window_that_does_not_fit_in_shared_memory_is_enomem)
{
	struct vt_shm *shm;
	struct vt_dma *dma;
	struct log_capture seen = { 0 };
	struct vt_log log = { .fn = capture_log, .opaque = &seen, .max_level = VT_LOG_DEBUG };

	REQUIRE_EQ(vt_shm_new(&shm), 0);
	REQUIRE_EQ(vt_shm_add_memfd(shm, WINDOW_SIZE, WINDOW_GPA, NULL), 0);
	struct vt_dma_params params = {
		.mode = VT_DMA_BOUNCE,
		.shm = shm,
		.log = &log,
		.bounce_window_size = 2 * WINDOW_SIZE,
	};
	CHECK_EQ(vt_dma_new(&params, &dma), -ENOMEM);
	CHECK_EQ(seen.errors, 1);
	/* The default window (4 MiB) does not fit either. */
	params.bounce_window_size = 0;
	CHECK_EQ(vt_dma_new(&params, &dma), -ENOMEM);
	vt_shm_free(shm);
}

VT_TEST(bounce_free_returns_the_window_to_shared_memory)
{
	struct fixture f;
	void *p;

	REQUIRE_EQ(setup(&f), 0);
	CHECK_EQ(vt_shm_alloc(f.shm, 64, 0, &p), -ENOMEM);
	vt_dma_free(f.dma);
	f.dma = NULL;
	CHECK_EQ(vt_shm_alloc(f.shm, WINDOW_SIZE, 0, &p), 0);
	teardown(&f);
}

/* A window carved from memory the driver used before shows the device none of that data. */
VT_TEST(bounce_window_starts_empty_even_in_reused_shared_memory)
{
	struct fixture f;
	void *p;
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	vt_dma_free(f.dma);
	f.dma = NULL;
	/* The driver's data in the shared memory, then given back. */
	REQUIRE_EQ(vt_shm_alloc(f.shm, WINDOW_SIZE, 0, &p), 0);
	memset(p, 0xa5, WINDOW_SIZE);
	vt_shm_release(f.shm, p, WINDOW_SIZE);
	struct vt_dma_params params = { .mode = VT_DMA_BOUNCE,
					.shm = f.shm,
					.log = &f.log,
					.bounce_window_size = WINDOW_SIZE };
	REQUIRE_EQ(vt_dma_new(&params, &f.dma), 0);
	fill(private_memory[0], 16, 3);
	REQUIRE_EQ(vt_dma_map(f.dma, private_memory[0], 16, VT_DMA_TO_DEVICE, &bus), 0);
	/* All the window but the 16 bytes mapped is zero, for a device that reads it all. */
	static uint8_t seen[WINDOW_SIZE];
	REQUIRE_EQ(vt_as_read(&f.dev, WINDOW_GPA, seen, WINDOW_SIZE, NULL), 0);
	size_t nonzero = 0;
	for (size_t i = 0; i < WINDOW_SIZE; i++)
		nonzero += seen[i] != 0 && (WINDOW_GPA + i < bus || WINDOW_GPA + i >= bus + 16);
	CHECK_EQ(nonzero, 0);
	CHECK(device_sees(&f, bus, private_memory[0], 16));
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 16, VT_DMA_TO_DEVICE), 0);
	teardown(&f);
}

VT_TEST(bounce_randomized_traffic_round_trips)
{
	struct fixture f;
	uint64_t state = vt_test_seed() ^ 0xb0b0;
	static uint8_t driver[8][2048], device_data[2048];
	struct {
		uint64_t bus;
		size_t len;
		enum vt_dma_dir dir;
	} live[8] = { { 0 } };

	REQUIRE_EQ(setup(&f), 0);
	uint64_t iterations = vt_test_scaled(20000);
	for (uint64_t it = 0; it < iterations; it++) {
		uint64_t r = vt_test_rand(&state);
		unsigned int i = (unsigned int)(r % 8);
		if (live[i].len == 0) {
			size_t len = 1 + (size_t)((r >> 8) % sizeof(driver[i]));
			enum vt_dma_dir dir = (enum vt_dma_dir)(1 + (r >> 20) % 3);
			fill(driver[i], len, (unsigned int)r);
			REQUIRE_EQ(vt_dma_map(f.dma, driver[i], len, dir, &live[i].bus), 0);
			REQUIRE(in_window(live[i].bus, len));
			if (dir & VT_DMA_TO_DEVICE)
				REQUIRE(device_sees(&f, live[i].bus, driver[i], len));
			live[i].len = len;
			live[i].dir = dir;
		} else {
			uint8_t expect[2048];
			memcpy(expect, driver[i], live[i].len);
			if (live[i].dir & VT_DMA_FROM_DEVICE) {
				size_t len = live[i].len;
				fill(device_data, len, (unsigned int)(r >> 32));
				int ret = vt_as_write(&f.dev, live[i].bus, device_data, len, NULL);
				REQUIRE_EQ(ret, 0);
				memcpy(expect, device_data, len);
			}
			REQUIRE_EQ(vt_dma_unmap(f.dma, live[i].bus, live[i].len, live[i].dir), 0);
			if (memcmp(driver[i], expect, live[i].len) != 0) {
				VT_FAIL_AT("step %llu: unmap left the wrong bytes",
					   (unsigned long long)it);
				return;
			}
			live[i].len = 0;
		}
	}
	for (unsigned int i = 0; i < 8; i++)
		if (live[i].len)
			CHECK_EQ(vt_dma_unmap(f.dma, live[i].bus, live[i].len, live[i].dir), 0);
	CHECK_EQ(f.log_seen.errors + f.log_seen.warnings, 0);
	teardown(&f);
}

struct worker {
	struct fixture *f;
	uint8_t *buffer;
	unsigned int seed;
	bool batched;	       /* each round trip inside a DMA batch, as a ring burst makes them */
	unsigned int failures; /* counted here: the harness's counters are not thread-safe */
};

static void *bounce_loop(void *arg)
{
	struct worker *w = arg;
	uint64_t iterations = vt_test_scaled(5000);
	uint8_t reply[64];

	for (uint64_t it = 0; it < iterations; it++) {
		size_t len = 64 + (it * 977 + w->seed) % 3000;
		uint64_t bus;
		fill(w->buffer, len, w->seed + (unsigned int)it);
		fill(reply, sizeof(reply), w->seed + (unsigned int)it + 1);
		if (w->batched)
			vt_dma_batch_begin(w->f->dma);
		if (vt_dma_map(w->f->dma, w->buffer, len, VT_DMA_BIDIRECTIONAL, &bus) < 0 ||
		    !device_sees(w->f, bus, w->buffer, len) ||
		    vt_as_write(&w->f->dev, bus, reply, sizeof(reply), NULL) < 0 ||
		    vt_dma_unmap(w->f->dma, bus, len, VT_DMA_BIDIRECTIONAL) < 0 ||
		    memcmp(w->buffer, reply, sizeof(reply)) != 0)
			w->failures++;
		if (w->batched && vt_dma_batch_end(w->f->dma) != 0)
			w->failures++;
	}
	return NULL;
}

VT_TEST(bounce_concurrent_mappings_each_round_trip_their_own_bytes)
{
	static uint8_t buffers[4][4096];
	struct fixture f;
	struct worker workers[4];
	pthread_t threads[4];

	REQUIRE_EQ(setup(&f), 0);
	for (unsigned int i = 0; i < 4; i++)
		workers[i] = (struct worker){
			.f = &f, .buffer = buffers[i], .seed = i * 1000, .batched = i >= 2
		};
	for (unsigned int i = 0; i < 4; i++)
		REQUIRE_EQ(pthread_create(&threads[i], NULL, bounce_loop, &workers[i]), 0);
	for (unsigned int i = 0; i < 4; i++) {
		pthread_join(threads[i], NULL);
		CHECK_EQ(workers[i].failures, 0);
	}
	struct vt_dma_stats st;
	vt_dma_get_stats(f.dma, &st);
	CHECK_EQ(st.unmaps, 4 * vt_test_scaled(5000));
	teardown(&f);
}

struct batch_waiter {
	struct fixture *f;
	atomic_bool mapped;
	int ret;
};

static void *map_during_batch(void *arg)
{
	struct batch_waiter *w = arg;
	uint64_t bus;
	w->ret = vt_dma_map(w->f->dma, private_memory[2], 64, VT_DMA_TO_DEVICE, &bus);
	atomic_store(&w->mapped, true);
	if (w->ret == 0)
		w->ret = vt_dma_unmap(w->f->dma, bus, 64, VT_DMA_TO_DEVICE);
	return NULL;
}

/*
 * A batch holds the lock from its begin to its end: its own thread maps and unmaps inside it (no
 * second lock), another thread's map waits for its end.
 */
VT_TEST(bounce_batch_lets_its_thread_map_and_makes_another_wait)
{
	struct fixture f;
	struct batch_waiter w = { .f = &f };
	pthread_t t;
	uint64_t bus;

	REQUIRE_EQ(setup(&f), 0);
	fill(private_memory[0], 64, 9);
	vt_dma_batch_begin(f.dma);
	REQUIRE_EQ(vt_dma_map(f.dma, private_memory[0], 64, VT_DMA_TO_DEVICE, &bus), 0);
	CHECK(device_sees(&f, bus, private_memory[0], 64));
	REQUIRE_EQ(pthread_create(&t, NULL, map_during_batch, &w), 0);
	for (int i = 0; i < 50; i++) {
		sched_yield();
		usleep(1000);
	}
	CHECK(!atomic_load(&w.mapped));
	CHECK_EQ(vt_dma_unmap(f.dma, bus, 64, VT_DMA_TO_DEVICE), 0);
	CHECK_EQ(vt_dma_batch_end(f.dma), 0);
	pthread_join(t, NULL);
	CHECK(atomic_load(&w.mapped));
	CHECK_EQ(w.ret, 0);
	teardown(&f);
}

VT_TEST(a_batch_end_without_a_batch_is_refused_and_leaves_the_lock_free)
{
	struct fixture f;
	struct batch_waiter w = { .f = &f };
	pthread_t t;

	REQUIRE_EQ(setup(&f), 0);
	CHECK_EQ(vt_dma_batch_end(f.dma), -EINVAL);
	vt_dma_batch_begin(f.dma);
	CHECK_EQ(vt_dma_batch_end(f.dma), 0);
	CHECK_EQ(vt_dma_batch_end(f.dma), -EINVAL);
	/* Another thread maps at once: no batch holds the lock. */
	REQUIRE_EQ(pthread_create(&t, NULL, map_during_batch, &w), 0);
	pthread_join(t, NULL);
	CHECK(atomic_load(&w.mapped));
	CHECK_EQ(w.ret, 0);
	teardown(&f);
}
