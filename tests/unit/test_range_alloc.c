/* SPDX-License-Identifier: MIT */
/*
 * The range allocator behind shared memory, IOVA space and bounce slots: bounds, rounding,
 * alignment, exhaustion, coalescing, refusal of bad frees, and a randomized run against a model.
 */
#include <errno.h>

#include "harness.h"
#include "mem/range_alloc.h"

#define BASE	0x100000ULL
#define GRANULE 64ULL

VT_TEST(init_rejects_bad_parameters)
{
	struct vt_range_alloc ra;

	CHECK_EQ(vt_range_alloc_init(&ra, BASE, 4096, 0, 0), -EINVAL);
	CHECK_EQ(vt_range_alloc_init(&ra, BASE, 4096, 48, 0), -EINVAL);
	CHECK_EQ(vt_range_alloc_init(&ra, BASE, 32, 64, 0), -EINVAL);
	CHECK_EQ(vt_range_alloc_init(&ra, UINT64_MAX - 100, 4096, 64, 0), -EINVAL);
}

VT_TEST(fresh_range_is_all_free)
{
	struct vt_range_alloc ra;

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 1 << 20, GRANULE, 0), 0);
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), 1 << 20);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(range_ending_at_the_top_of_the_address_space_is_usable)
{
	struct vt_range_alloc ra;
	uint64_t addr;

	REQUIRE_EQ(vt_range_alloc_init(&ra, UINT64_MAX - 4095, 4096, GRANULE, 0), 0);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 4096, 0, 0, &addr), 0);
	CHECK(addr == UINT64_MAX - 4095);
	CHECK_EQ(vt_range_alloc_free(&ra, addr, 4096), 0);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(sizes_round_up_to_a_power_of_two_of_granules)
{
	struct vt_range_alloc ra;
	uint64_t a, b, c;

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 1 << 16, GRANULE, 0), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 1, 0, 0, &a), 0);
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), (1 << 16) - 64);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 65, 0, 0, &b), 0);
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), (1 << 16) - 64 - 128);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 3 * 64, 0, 0, &c), 0);
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), (1 << 16) - 64 - 128 - 256);
	CHECK_EQ(vt_range_alloc_block_bytes(&ra, 3 * 64, 0), 256);
	CHECK_EQ(vt_range_alloc_free(&ra, c, 3 * 64), 0);
	CHECK_EQ(vt_range_alloc_free(&ra, b, 65), 0);
	CHECK_EQ(vt_range_alloc_free(&ra, a, 1), 0);
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), 1 << 16);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(blocks_are_aligned_to_their_size)
{
	struct vt_range_alloc ra;
	static const uint64_t sizes[] = { 64, 4096, 128, 1000, 64, 65536, 200, 8192 };

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 1 << 20, GRANULE, 0), 0);
	for (unsigned int i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t addr;
		REQUIRE_EQ(vt_range_alloc_alloc(&ra, sizes[i], 0, 0, &addr), 0);
		uint64_t block = vt_range_alloc_block_bytes(&ra, sizes[i], 0);
		CHECK_EQ((addr - BASE) % block, 0);
		CHECK(addr >= BASE && addr + block <= BASE + (1 << 20));
	}
	vt_range_alloc_destroy(&ra);
}

VT_TEST(alignment_larger_than_the_size_is_honoured)
{
	struct vt_range_alloc ra;
	uint64_t small, aligned;

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 1 << 20, GRANULE, 0), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 64, 0, 0, &small), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 64, 4096, 0, &aligned), 0);
	CHECK_EQ(aligned % 4096, 0);
	CHECK(aligned != small);
	/* Freed with the size it was asked for; the alignment is the allocator's business. */
	CHECK_EQ(vt_range_alloc_free(&ra, aligned, 64), 0);
	CHECK_EQ(vt_range_alloc_free(&ra, small, 64), 0);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(alignment_that_is_not_a_power_of_two_is_refused)
{
	struct vt_range_alloc ra;
	uint64_t addr;

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 1 << 16, GRANULE, 0), 0);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 64, 96, 0, &addr), -EINVAL);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 0, 0, 0, &addr), -EINVAL);
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), 1 << 16);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(exhaustion_returns_enospc_and_a_free_recovers)
{
	struct vt_range_alloc ra;
	uint64_t addr, last = 0;

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 64 * 64, GRANULE, 0), 0);
	for (int i = 0; i < 64; i++) {
		REQUIRE_EQ(vt_range_alloc_alloc(&ra, 64, 0, 0, &addr), 0);
		last = addr;
	}
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), 0);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 64, 0, 0, &addr), -ENOSPC);
	CHECK_EQ(vt_range_alloc_free(&ra, last, 64), 0);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 64, 0, 0, &addr), 0);
	CHECK(addr == last);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(request_larger_than_the_range_returns_enospc)
{
	struct vt_range_alloc ra;
	uint64_t addr;

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 4096, GRANULE, 0), 0);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 4097, 0, 0, &addr), -ENOSPC);
	CHECK_EQ(vt_range_alloc_alloc(&ra, UINT64_MAX, 0, 0, &addr), -ENOSPC);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 64, 1ULL << 63, 0, &addr), -ENOSPC);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 4096, 0, 0, &addr), 0);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(frees_coalesce_back_into_the_whole_range)
{
	struct vt_range_alloc ra;
	uint64_t addr[256];

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 256 * 64, GRANULE, 0), 0);
	for (int i = 0; i < 256; i++)
		REQUIRE_EQ(vt_range_alloc_alloc(&ra, 64, 0, 0, &addr[i]), 0);
	/* A stride coprime with 256 frees in an order that is neither ascending nor LIFO. */
	for (int i = 0; i < 256; i++)
		REQUIRE_EQ(vt_range_alloc_free(&ra, addr[(i * 37) % 256], 64), 0);
	uint64_t whole;
	CHECK_EQ(vt_range_alloc_alloc(&ra, 256 * 64, 0, 0, &whole), 0);
	CHECK(whole == BASE);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(double_free_is_refused_and_changes_nothing)
{
	struct vt_range_alloc ra;
	uint64_t a, b;

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 4096, GRANULE, 0), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 64, 0, 0, &a), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 64, 0, 0, &b), 0);
	REQUIRE_EQ(vt_range_alloc_free(&ra, a, 64), 0);
	uint64_t before = vt_range_alloc_free_bytes(&ra);
	CHECK_EQ(vt_range_alloc_free(&ra, a, 64), -EINVAL);
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), before);
	/* b is still allocated: the whole range cannot be had. */
	uint64_t whole;
	CHECK_EQ(vt_range_alloc_alloc(&ra, 4096, 0, 0, &whole), -ENOSPC);
	CHECK_EQ(vt_range_alloc_free(&ra, b, 64), 0);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 4096, 0, 0, &whole), 0);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(free_with_another_size_is_refused)
{
	struct vt_range_alloc ra;
	uint64_t a;

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 4096, GRANULE, 0), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 100, 0, 0, &a), 0);
	CHECK_EQ(vt_range_alloc_free(&ra, a, 128), -EINVAL);
	CHECK_EQ(vt_range_alloc_free(&ra, a, 64), -EINVAL);
	CHECK_EQ(vt_range_alloc_free(&ra, a, 100), 0);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(free_of_an_address_that_was_not_allocated_is_refused)
{
	struct vt_range_alloc ra;
	uint64_t a;

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 4096, GRANULE, 0), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 256, 0, 0, &a), 0);
	CHECK_EQ(vt_range_alloc_free(&ra, a + 64, 64), -EINVAL);      /* inside an allocation */
	CHECK_EQ(vt_range_alloc_free(&ra, a + 1, 256), -EINVAL);      /* misaligned */
	CHECK_EQ(vt_range_alloc_free(&ra, BASE - 64, 64), -EINVAL);   /* below the range */
	CHECK_EQ(vt_range_alloc_free(&ra, BASE + 4096, 64), -EINVAL); /* above it */
	CHECK_EQ(vt_range_alloc_free(&ra, a + 256, 256), -EINVAL);    /* a free block */
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), 4096 - 256);
	CHECK_EQ(vt_range_alloc_free(&ra, a, 256), 0);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(range_that_is_not_a_power_of_two_is_fully_usable)
{
	struct vt_range_alloc ra;
	uint64_t a, b, c, d;

	/* 7 granules and a 10-byte tail, which is not usable. */
	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 7 * 64 + 10, GRANULE, 0), 0);
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), 7 * 64);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 4 * 64, 0, 0, &a), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 2 * 64, 0, 0, &b), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 64, 0, 0, &c), 0);
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), 0);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 64, 0, 0, &d), -ENOSPC);
	CHECK(c + 64 <= BASE + 7 * 64);
	/* Freed, the pieces merge no further than the range: 8 granules never fit. */
	CHECK_EQ(vt_range_alloc_free(&ra, c, 64), 0);
	CHECK_EQ(vt_range_alloc_free(&ra, a, 4 * 64), 0);
	CHECK_EQ(vt_range_alloc_free(&ra, b, 2 * 64), 0);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 8 * 64, 0, 0, &d), -ENOSPC);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 4 * 64, 0, 0, &d), 0);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(find_reports_the_allocation_holding_an_address)
{
	struct vt_range_alloc ra;
	struct vt_range_block_info info;
	uint64_t a, b;

	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 4096, GRANULE, 0), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 64, 0, 3, &a), 0);
	REQUIRE_EQ(vt_range_alloc_alloc(&ra, 100, 0, 7, &b), 0);
	REQUIRE_EQ(vt_range_alloc_find(&ra, b + 99, &info), 0);
	CHECK(info.addr == b);
	CHECK_EQ(info.size, 100);
	CHECK_EQ(info.block_bytes, 128);
	CHECK_EQ(info.tag, 7);
	REQUIRE_EQ(vt_range_alloc_find(&ra, a, &info), 0);
	CHECK_EQ(info.tag, 3);
	CHECK_EQ(vt_range_alloc_find(&ra, BASE + 2048, &info), -ENOENT); /* free */
	CHECK_EQ(vt_range_alloc_find(&ra, BASE + 4096, &info), -ENOENT); /* outside */
	CHECK_EQ(vt_range_alloc_free(&ra, b, 100), 0);
	CHECK_EQ(vt_range_alloc_find(&ra, b, &info), -ENOENT);
	vt_range_alloc_destroy(&ra);
}

VT_TEST(huge_range_costs_only_the_block_records_asked_for)
{
	struct vt_range_alloc ra;
	uint64_t addr[64];
	unsigned int n = 0;

	/*
	 * 1 TiB of 4 KiB pages with 64 records: the first allocation splits 28 times, and then
	 * records, not space, run out. That is -ENOSPC too, and nothing is corrupted.
	 */
	REQUIRE_EQ(vt_range_alloc_init(&ra, BASE, 1ULL << 40, 4096, 64), 0);
	while (n < 64 && vt_range_alloc_alloc(&ra, 4096 << (n % 3), 0, 0, &addr[n]) == 0)
		n++;
	CHECK(n > 1 && n < 64);
	uint64_t extra;
	CHECK_EQ(vt_range_alloc_alloc(&ra, 4096, 0, 0, &extra), -ENOSPC);
	while (n-- > 0)
		REQUIRE_EQ(vt_range_alloc_free(&ra, addr[n], 4096 << (n % 3)), 0);
	CHECK_EQ(vt_range_alloc_free_bytes(&ra), 1ULL << 40);
	CHECK_EQ(vt_range_alloc_alloc(&ra, 1ULL << 40, 0, 0, &extra), 0);
	vt_range_alloc_destroy(&ra);
}

/* The model: live allocations and which granules their blocks cover. */
#define MODEL_GRANULES 4096
#define MODEL_MAX_LIVE 512

struct model {
	struct vt_range_alloc ra;
	struct {
		uint64_t addr, size, align;
	} live[MODEL_MAX_LIVE];
	unsigned int count;
	uint8_t used[MODEL_GRANULES];
	uint64_t free_bytes;
	uint64_t allocs, refusals;
};

/* Marks a new block's granules, failing if any is already covered. */
static int model_cover(struct model *m, uint64_t addr, uint64_t block)
{
	for (uint64_t g = (addr - BASE) / GRANULE; g < (addr - BASE + block) / GRANULE; g++) {
		if (m->used[g])
			return -1;
		m->used[g] = 1;
	}
	return 0;
}

static int model_alloc(struct model *m, uint64_t r, uint64_t *state)
{
	/* Sizes from 1 byte to 16 KiB, log-distributed; an alignment now and then. */
	uint64_t size = 1 + (vt_test_rand(state) % (1ULL << ((r >> 8) % 15)));
	uint64_t align = (r >> 16) % 4 == 0 ? 1ULL << ((r >> 20) % 13) : 0;
	uint64_t addr, block = vt_range_alloc_block_bytes(&m->ra, size, align);

	int ret = vt_range_alloc_alloc(&m->ra, size, align, m->count + 1, &addr);
	if (ret == -ENOSPC) {
		m->refusals++;
		return 0;
	}
	if (ret < 0)
		return ret;
	if (addr < BASE || addr + block > BASE + MODEL_GRANULES * GRANULE ||
	    (addr - BASE) % block || (align && (addr - BASE) % align) ||
	    model_cover(m, addr, block) < 0)
		return -1;
	m->live[m->count].addr = addr;
	m->live[m->count].size = size;
	m->live[m->count++].align = align;
	m->free_bytes -= block;
	m->allocs++;
	return 0;
}

static int model_free(struct model *m, uint64_t r)
{
	unsigned int i = (unsigned int)((r >> 8) % m->count);
	uint64_t addr = m->live[i].addr, size = m->live[i].size;

	/* Now and then a bad free around the good one: refused, and changing nothing. */
	if ((r >> 40) % 8 == 0 && vt_range_alloc_free(&m->ra, addr, size + 1) != -EINVAL)
		return -1;
	if (vt_range_alloc_free(&m->ra, addr, size) != 0)
		return -1;
	if ((r >> 44) % 8 == 0 && vt_range_alloc_free(&m->ra, addr, size) != -EINVAL)
		return -1;
	uint64_t block = vt_range_alloc_block_bytes(&m->ra, size, m->live[i].align);
	memset(&m->used[(addr - BASE) / GRANULE], 0, block / GRANULE);
	m->free_bytes += block;
	m->live[i] = m->live[--m->count];
	return 0;
}

VT_TEST(randomized_allocations_match_a_model)
{
	static struct model m;
	uint64_t seed = vt_test_seed(), state = seed;

	memset(&m, 0, sizeof(m));
	m.free_bytes = MODEL_GRANULES * GRANULE;
	REQUIRE_EQ(vt_range_alloc_init(&m.ra, BASE, MODEL_GRANULES * GRANULE, GRANULE, 0), 0);
	uint64_t iterations = vt_test_scaled(200000);
	for (uint64_t it = 0; it < iterations; it++) {
		uint64_t r = vt_test_rand(&state);
		int ret = 0;
		if ((r & 1) && m.count < MODEL_MAX_LIVE)
			ret = model_alloc(&m, r, &state);
		else if (m.count > 0)
			ret = model_free(&m, r);
		if (ret < 0 || vt_range_alloc_free_bytes(&m.ra) != m.free_bytes) {
			VT_FAIL_AT("seed 0x%llx, step %llu: the allocator left the model",
				   (unsigned long long)seed, (unsigned long long)it);
			return;
		}
	}
	/* The run reached both a full range and plenty of successful allocations. */
	CHECK(m.allocs > iterations / 8);
	CHECK(iterations < 100000 || m.refusals > 0); /* only the full run gets that far */
	while (m.count > 0) {
		m.count--;
		int ret = vt_range_alloc_free(&m.ra, m.live[m.count].addr, m.live[m.count].size);
		REQUIRE_EQ(ret, 0);
	}
	uint64_t whole;
	CHECK_EQ(vt_range_alloc_alloc(&m.ra, MODEL_GRANULES * GRANULE, 0, 0, &whole), 0);
	vt_range_alloc_destroy(&m.ra);
}
