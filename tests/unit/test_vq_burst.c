/* SPDX-License-Identifier: MIT */
/*
 * vt_vq_dev_pop_burst and vt_vq_dev_push_burst: a burst takes exactly what the same number of
 * single pops would, in the same order, with the same bytes; it stops at @max, at an empty ring,
 * and at the first chain that cannot be taken, which the next call then meets (the queue broken
 * for a hostile one, nothing consumed for one that needs more iovecs). Both formats, direct and
 * indirect chains. The driver half is real and posts through a memory table on a memfd.
 */
#include <errno.h>

#include "harness.h"
#include "vq_pair.h"

#include <virtue/memtable.h>
#include <virtue/spec/virtio_ring.h>
#include <virtue/virtqueue.h>

#define QSIZE	64
#define MAX_IOV 4

/* Buffers first .. first + count - 1, segments cycling 1, 2, 3; then made available. */
static int post_range(struct vq_pair *r, unsigned int first, unsigned int count)
{
	for (unsigned int i = first; i < first + count; i++) {
		int ret = vq_pair_post(r, i, 1 + i % 3);
		if (ret < 0)
			return ret;
	}
	vt_vq_drv_kick_prepare(r->drv);
	return 0;
}

static bool chain_is(struct vq_pair *r, const struct vt_vq_chain *c, const struct iovec *iov,
		     unsigned int i)
{
	return vq_pair_check(r, c, iov, i) == 0;
}

/* A burst of everything posted, answered with one push burst; the driver sees every answer. */
static void burst_round_trip(bool packed, bool indirect)
{
	struct vq_pair r;
	struct vt_vq_chain chains[QSIZE];
	struct iovec iov[QSIZE * MAX_IOV];
	uint32_t written[QSIZE];

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, indirect, false), 0);
	/* Two laps of the ring in bursts of 19, so that bursts cross its end. */
	for (unsigned int round = 0; round < 7; round++) {
		REQUIRE_EQ(post_range(&r, 0, 19), 0);
		int n = vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, QSIZE);
		REQUIRE_EQ(n, 19);
		for (int i = 0; i < n; i++) {
			CHECK(chain_is(&r, &chains[i], iov + i * MAX_IOV, (unsigned int)i));
			written[i] = vq_pair_answer(&chains[i], iov + i * MAX_IOV);
		}
		REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, QSIZE), 0);
		REQUIRE_EQ(vt_vq_dev_push_burst(r.dev, chains, written, (unsigned int)n), 0);
		vt_vq_dev_flush(r.dev);
		for (int i = 0; i < n; i++)
			CHECK_EQ(vq_pair_collect(&r, (unsigned int)i), 0);
	}
	CHECK(!vt_vq_dev_is_broken(r.dev));
	vq_pair_destroy(&r);
}

VT_TEST(split_burst_takes_what_single_pops_would_and_answers_them_all)
{
	burst_round_trip(false, false);
}

VT_TEST(split_burst_with_indirect_tables)
{
	burst_round_trip(false, true);
}

VT_TEST(packed_burst_takes_what_single_pops_would_and_answers_them_all)
{
	burst_round_trip(true, false);
}

VT_TEST(packed_burst_with_indirect_tables)
{
	burst_round_trip(true, true);
}

/* @max bounds a burst; the next one continues where it stopped, single pops too. */
static void burst_stops_at_max(bool packed)
{
	struct vq_pair r;
	struct vt_vq_chain chains[8];
	struct iovec iov[8 * MAX_IOV];

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
	REQUIRE_EQ(post_range(&r, 0, 12), 0);
	REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 5), 5);
	for (unsigned int i = 0; i < 5; i++)
		CHECK(chain_is(&r, &chains[i], iov + i * MAX_IOV, i));
	REQUIRE_EQ(vt_vq_dev_pop(r.dev, &chains[5], iov + 5 * MAX_IOV, MAX_IOV), 0);
	CHECK(chain_is(&r, &chains[5], iov + 5 * MAX_IOV, 5));
	REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 8), 6);
	for (unsigned int i = 0; i < 6; i++)
		CHECK(chain_is(&r, &chains[i], iov + i * MAX_IOV, 6 + i));
	CHECK_EQ(vt_vq_dev_in_flight(r.dev), 12u);
	vq_pair_destroy(&r);
}

VT_TEST(split_burst_stops_at_max)
{
	burst_stops_at_max(false);
}

VT_TEST(packed_burst_stops_at_max)
{
	burst_stops_at_max(true);
}

VT_TEST(a_burst_on_an_empty_ring_takes_nothing)
{
	for (int packed = 0; packed < 2; packed++) {
		struct vq_pair r;
		struct vt_vq_chain chains[4];
		struct iovec iov[4 * MAX_IOV];
		REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
		CHECK_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 4), 0);
		CHECK(!vt_vq_dev_is_broken(r.dev));
		vq_pair_destroy(&r);
	}
}

/*
 * A chain needing more iovecs than a burst gives each ends it before itself: nothing of it is
 * consumed, the next burst says -ENOBUFS, and a pop with room takes it.
 */
static void burst_stops_before_a_chain_too_long(bool packed)
{
	struct vq_pair r;
	struct vt_vq_chain chains[8];
	struct iovec iov[8 * MAX_IOV];

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
	/* Buffers 0 and 1 of one segment, 2 of three (a chain: no indirect), 3 of one. */
	REQUIRE_EQ(vq_pair_post(&r, 0, 1), 0);
	REQUIRE_EQ(vq_pair_post(&r, 1, 1), 0);
	REQUIRE_EQ(vq_pair_post(&r, 2, 3), 0);
	REQUIRE_EQ(vq_pair_post(&r, 3, 1), 0);
	vt_vq_drv_kick_prepare(r.drv);
	REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, 1, 8), 2);
	CHECK(chain_is(&r, &chains[0], iov, 0));
	CHECK(chain_is(&r, &chains[1], iov + 1, 1));
	CHECK_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, 1, 8), -ENOBUFS);
	CHECK(!vt_vq_dev_is_broken(r.dev));
	REQUIRE_EQ(vt_vq_dev_pop(r.dev, &chains[2], iov, MAX_IOV), 0);
	CHECK(chain_is(&r, &chains[2], iov, 2));
	REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, 1, 8), 1);
	CHECK(chain_is(&r, &chains[0], iov, 3));
	vq_pair_destroy(&r);
}

VT_TEST(split_burst_stops_before_a_chain_that_needs_more_iovecs)
{
	burst_stops_before_a_chain_too_long(false);
}

VT_TEST(packed_burst_stops_before_a_chain_that_needs_more_iovecs)
{
	burst_stops_before_a_chain_too_long(true);
}

/* A hostile entry in the middle: the burst returns the chains before it, broken at it. */
VT_TEST(split_burst_returns_the_chains_before_a_head_out_of_range_and_breaks_at_it)
{
	struct vq_pair r;
	struct vt_vq_chain chains[8];
	struct iovec iov[8 * MAX_IOV];
	uint64_t desc, driver, device;

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, false, false, false), 0);
	REQUIRE_EQ(post_range(&r, 0, 4), 0);
	vt_vq_drv_addrs(r.drv, &desc, &driver, &device);
	struct virtq_avail *avail = vq_pair_hva(&r, driver);
	avail->ring[2] = vt_cpu_to_le16(QSIZE + 5);
	REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 8), 2);
	CHECK(chain_is(&r, &chains[0], iov, 0));
	CHECK(chain_is(&r, &chains[1], iov + MAX_IOV, 1));
	/* Broken on meeting it, as a single pop would be; the next call says so. */
	CHECK(vt_vq_dev_is_broken(r.dev));
	CHECK_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 8), -EPROTO);
	CHECK_EQ(vt_vq_dev_error(r.dev), VT_VQ_ERR_HEAD_RANGE);
	CHECK_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 8), -EPROTO);
	vq_pair_destroy(&r);
}

VT_TEST(packed_burst_returns_the_chains_before_a_buffer_id_out_of_range_and_breaks_at_it)
{
	struct vq_pair r;
	struct vt_vq_chain chains[8];
	struct iovec iov[8 * MAX_IOV];
	uint64_t desc, driver, device;

	REQUIRE_EQ(vq_pair_init(&r, QSIZE, true, false, false), 0);
	/* One-segment buffers: one descriptor each, so buffer 2 is slot 2. */
	for (unsigned int i = 0; i < 4; i++)
		REQUIRE_EQ(vq_pair_post(&r, i, 1), 0);
	vt_vq_drv_kick_prepare(r.drv);
	vt_vq_drv_addrs(r.drv, &desc, &driver, &device);
	struct pvirtq_desc *ring = vq_pair_hva(&r, desc);
	ring[2].id = vt_cpu_to_le16(QSIZE + 5);
	REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 8), 2);
	CHECK(chain_is(&r, &chains[0], iov, 0));
	CHECK(chain_is(&r, &chains[1], iov + MAX_IOV, 1));
	CHECK_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 8), -EPROTO);
	CHECK_EQ(vt_vq_dev_error(r.dev), VT_VQ_ERR_BUFFER_ID);
	vq_pair_destroy(&r);
}

/* A push burst stops at a chain the queue never handed out: the queue breaks, as for one. */
VT_TEST(a_push_burst_with_a_chain_not_in_flight_breaks_the_queue)
{
	for (int packed = 0; packed < 2; packed++) {
		struct vq_pair r;
		struct vt_vq_chain chains[4];
		struct iovec iov[4 * MAX_IOV];
		REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
		REQUIRE_EQ(post_range(&r, 0, 2), 0);
		REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 4), 2);
		chains[1].id = chains[0].id; /* the first is pushed by then: no longer in flight */
		CHECK_EQ(vt_vq_dev_push_burst(r.dev, chains, NULL, 2), -EPROTO);
		CHECK_EQ(vt_vq_dev_error(r.dev), VT_VQ_ERR_NOT_IN_FLIGHT);
		vq_pair_destroy(&r);
	}
}

/* A region removed moves the address space's generation: the next burst re-resolves. */
VT_TEST(a_burst_after_the_address_space_changed_works_on_the_new_generation)
{
	for (int packed = 0; packed < 2; packed++) {
		struct vq_pair r;
		struct vt_vq_chain chains[8];
		struct iovec iov[8 * MAX_IOV];
		static uint8_t extra[4096];
		REQUIRE_EQ(vq_pair_init(&r, QSIZE, packed, false, false), 0);
		REQUIRE_EQ(post_range(&r, 0, 3), 0);
		REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 1), 1);
		uint64_t before = vt_memtable_generation(r.table);
		struct vt_mem_region extra_region = { .gpa = 0x1000,
						      .size = sizeof(extra),
						      .hva = extra };
		REQUIRE_EQ(vt_memtable_add(r.table, &extra_region), 0);
		REQUIRE_EQ(vt_memtable_remove(r.table, extra_region.gpa, extra_region.size), 0);
		CHECK(vt_memtable_generation(r.table) != before);
		REQUIRE_EQ(vt_vq_dev_pop_burst(r.dev, chains, iov, MAX_IOV, 8), 2);
		CHECK(chain_is(&r, &chains[0], iov, 1));
		CHECK(chain_is(&r, &chains[1], iov + MAX_IOV, 2));
		vq_pair_destroy(&r);
	}
}

/*
 * An address space that moves its generation right after the device's first extent lookup from
 * the moment it is armed, as an IOTLB does when a strict DMA driver invalidates the buffers it
 * collected while the device pops the next ones. @rings_hit: whether that change touched the ring
 * areas (what unchanged_since answers). Extents are the memory table's, under this generation.
 */
struct moving_as {
	struct vt_as inner;
	_Atomic uint64_t generation;
	unsigned int extents; /* lookups since armed */
	bool armed, rings_hit;
};

static int moving_translate(void *impl, uint64_t addr, uint64_t len, unsigned int access,
			    struct iovec *iov, unsigned int iov_max, unsigned int *iov_count,
			    struct vt_as_fault *fault)
{
	struct moving_as *m = impl;
	return vt_as_translate(&m->inner, addr, len, access, iov, iov_max, iov_count, fault);
}

static uint64_t moving_generation(const void *impl)
{
	return atomic_load(&((const struct moving_as *)impl)->generation);
}

static int moving_extent(void *impl, uint64_t addr, struct vt_as_extent *extent,
			 uint64_t *generation)
{
	struct moving_as *m = impl;
	uint64_t inner_generation;
	*generation = atomic_load(&m->generation);
	int ret = vt_as_extent(&m->inner, addr, extent, &inner_generation);
	if (m->armed && ++m->extents == 1)
		atomic_fetch_add(&m->generation, 1);
	return ret;
}

static int moving_unchanged_since(const void *impl, uint64_t since, uint64_t addr, uint64_t len,
				  uint64_t *now)
{
	const struct moving_as *m = impl;
	(void)since, (void)addr, (void)len;
	if (m->rings_hit)
		return -ESTALE;
	*now = atomic_load(&m->generation);
	return 0;
}

static const struct vt_as_ops moving_ops = {
	.translate = moving_translate,
	.generation = moving_generation,
	.extent = moving_extent,
	.unchanged_since = moving_unchanged_since,
};

/*
 * The pair's device half again, on @m (wrapping the pair's memory table), its rings resolved by
 * a first pop of an empty ring, so that what follows is the burst's own.
 */
static void restart_device_on(struct vq_pair *r, struct moving_as *m)
{
	struct vt_vq_chain chain;
	struct iovec iov[MAX_IOV];

	*m = (struct moving_as){ .inner = vt_memtable_as(r->table) };
	vt_vq_dev_free(r->dev);
	r->dev = NULL;
	struct vt_vq_dev_params p = {
		.num = r->qsize,
		.features = r->features,
		.as = { .ops = &moving_ops, .impl = m, .generation_word = &m->generation },
		.next_avail = r->packed ? VT_VQ_PACKED_START : 0,
		.name = "moving-device",
		.log = &r->log,
	};
	vt_vq_drv_addrs(r->drv, &p.desc_addr, &p.driver_addr, &p.device_addr);
	REQUIRE_EQ(vt_vq_dev_new(&p, &r->dev), 0);
	REQUIRE_EQ(vt_vq_dev_pop_burst(r->dev, &chain, iov, MAX_IOV, 1), 0);
}

/* Pops bursts until @count chains came, checking each is the next buffer; the bursts it took. */
static unsigned int pop_in_bursts(struct vq_pair *r, unsigned int count, unsigned int *first)
{
	struct vt_vq_chain chains[QSIZE];
	struct iovec iov[QSIZE * MAX_IOV];
	unsigned int got = 0, bursts = 0;

	while (got < count && bursts < count) {
		int n = vt_vq_dev_pop_burst(r->dev, chains, iov, MAX_IOV, QSIZE);
		if (n < 0) {
			VT_FAIL_AT("pop burst: %d", n);
			break;
		}
		if (bursts++ == 0)
			*first = (unsigned int)n;
		for (int i = 0; i < n; i++, got++)
			CHECK(chain_is(r, &chains[i], iov + i * MAX_IOV, got));
	}
	CHECK_EQ(got, count);
	return bursts;
}

/*
 * One-segment buffers, so that after the first chain the burst runs on its cached extent; the
 * change comes right after the first chain's extent was looked up.
 */
static void post_one_segment_buffers(struct vq_pair *r, unsigned int count)
{
	for (unsigned int i = 0; i < count; i++)
		REQUIRE_EQ(vq_pair_post(r, i, 1), 0);
	vt_vq_drv_kick_prepare(r->drv);
}

/*
 * Six one-segment buffers popped in bursts, with the change that @rings_hit says coming right
 * after the first chain's extent lookup. The bursts it took; the first one's size in *@first,
 * the extent lookups in *@extents.
 */
static unsigned int pop_across_a_change(bool packed, bool rings_hit, unsigned int *first,
					unsigned int *extents)
{
	struct vq_pair r;
	struct moving_as m;
	if (vq_pair_init(&r, QSIZE, packed, false, false) != 0) {
		VT_FAIL_AT("vq_pair_init failed");
		return 0;
	}
	restart_device_on(&r, &m);
	post_one_segment_buffers(&r, 6);
	m.armed = true;
	m.rings_hit = rings_hit;
	unsigned int bursts = pop_in_bursts(&r, 6, first);
	CHECK_EQ(atomic_load(&m.generation), 1);
	CHECK(!vt_vq_dev_is_broken(r.dev));
	*extents = m.extents;
	vq_pair_destroy(&r);
	return bursts;
}

VT_TEST(a_burst_goes_on_past_an_address_space_change_that_left_the_rings_alone)
{
	for (int packed = 0; packed < 2; packed++) {
		unsigned int first = 0, extents = 0;
		CHECK_EQ(pop_across_a_change(packed, false, &first, &extents), 1);
		CHECK_EQ(first, 6);
		/* The extent cached under the old generation was looked up again, not trusted. */
		CHECK_EQ(extents, 2);
	}
}

VT_TEST(a_burst_ends_at_an_address_space_change_that_hit_the_rings_and_the_next_resolves_them)
{
	for (int packed = 0; packed < 2; packed++) {
		unsigned int first = 0, extents = 0;
		CHECK_EQ(pop_across_a_change(packed, true, &first, &extents), 2);
		/* The chain it had taken when the change came, and no more. */
		CHECK_EQ(first, 1);
	}
}
