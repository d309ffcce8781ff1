/* SPDX-License-Identifier: MIT */
/*
 * The IOTLB against the byte-by-byte model of iotlb_model.h, with random updates, invalidations
 * and translations in windows low and at the top of the address space, in tables roomy and full.
 * A failure prints the model's complaint, the seed (VT_TEST_SEED reruns it) and the operation.
 */
#include <virtue/iotlb.h>

#include "harness.h"
#include "iotlb_model.h"

/* Ranges recently updated, which the DMA API's unmap + map of a reused IOVA repeat exactly. */
#define RECENT 8

struct model_run {
	struct iotlb_model m;
	uint64_t seed, rng, op;
	struct {
		uint32_t lo;
		uint64_t size;
	} recent[RECENT];
	unsigned int recent_count;
};

static uint64_t rnd(struct model_run *r, uint64_t bound)
{
	return vt_test_rand(&r->rng) % bound;
}

/* Mostly short, sometimes up to the whole window: short ones hit edges, long ones span entries. */
static uint64_t rnd_len(struct model_run *r)
{
	uint64_t k = rnd(r, 100);
	if (k < 45)
		return 1 + rnd(r, 64);
	if (k < 80)
		return 1 + rnd(r, 1024);
	if (k < 97)
		return 1 + rnd(r, r->m.size / 8);
	return 1 + rnd(r, r->m.size);
}

/* An address in the window or up to 64 bytes either side (wrapping at 0 and 2^64). */
static uint64_t rnd_addr(struct model_run *r)
{
	return r->m.base - 64 + rnd(r, r->m.size + 128);
}

static void op_update(struct model_run *r)
{
	struct iotlb_model *m = &r->m;
	uint32_t lo = (uint32_t)rnd(r, m->size);
	uint64_t size = rnd_len(r);
	unsigned int perm = 1 + (unsigned int)rnd(r, 3);
	int past_top = 0;

	if (rnd(r, 200) == 0)
		size = 0;
	else if (rnd(r, 100) == 0)
		perm = rnd(r, 2) ? 0 : 4 + (unsigned int)rnd(r, 4);
	if (size > m->size - lo) {
		/* Past the window: at the top that is past 2^64, elsewhere it is cut to fit. */
		if (m->base + m->size == 0 && rnd(r, 4) == 0)
			past_top = 1;
		else
			size = m->size - lo;
	}
	/*
	 * An eighth of the time, a whole page of a page-aligned window onto a whole host page: what
	 * the page table holds.
	 */
	if (m->base % 4096 == 0 && m->size >= 2 * 4096 && rnd(r, 8) == 0) {
		lo = (uint32_t)rnd(r, m->size / 4096) * 4096;
		size = 4096;
		past_top = 0;
	}
	/* A quarter of the time, exactly a range updated before (an IOVA mapped again). */
	if (r->recent_count && size && !past_top && rnd(r, 4) == 0) {
		unsigned int i = (unsigned int)rnd(r, r->recent_count);
		lo = r->recent[i].lo;
		size = r->recent[i].size;
	}
	/* Host offset: half the time the same as the IOVA's, so neighbours merge. */
	uint64_t h = rnd(r, 2) ? lo : rnd(r, 2ull * m->size - size + 1);
	if (size == 4096 && lo % 4096 == 0 && rnd(r, 4))
		h = rnd(r, 2ull * m->size / 4096) * 4096; /* a whole host page, mostly */
	if (past_top)
		h = 0;
	iotlb_model_update(m, lo, size, perm, h);
	if (size && !past_top) {
		unsigned int i =
		    r->recent_count < RECENT ? r->recent_count++ : (unsigned int)rnd(r, RECENT);
		r->recent[i].lo = lo;
		r->recent[i].size = size;
	}
}

static void op_invalidate(struct model_run *r)
{
	uint64_t iova = rnd_addr(r), size = rnd(r, 100) == 0 ? 0 : rnd_len(r);

	/* A third of the time, exactly a range updated before (a DMA unmap). */
	if (r->recent_count && rnd(r, 3) == 0) {
		unsigned int i = (unsigned int)rnd(r, r->recent_count);
		iova = r->m.base + r->recent[i].lo;
		size = r->recent[i].size;
	}

	iotlb_model_invalidate(&r->m, iova, size);
}

static void op_translate(struct model_run *r)
{
	uint64_t iova = rnd_addr(r), len = rnd(r, 50) == 0 ? 0 : rnd_len(r);
	unsigned int access = 1 + (unsigned int)rnd(r, 3);
	unsigned int iov_max = rnd(r, 4) ? IOTLB_MODEL_IOV_MAX : (unsigned int)rnd(r, 3);

	if (rnd(r, 100) == 0)
		access = rnd(r, 2) ? 0 : 4 + (unsigned int)rnd(r, 4);
	iotlb_model_translate(&r->m, iova, len, access, iov_max);
}

static void drop_log(void *opaque, enum vt_log_level level, const char *message)
{
}

static void run_model(uint64_t base, uint32_t window, unsigned int capacity,
		      enum vt_iotlb_full_policy policy, int page_table, uint64_t salt)
{
	static const struct vt_log quiet = { .fn = drop_log };
	struct model_run r = { .seed = vt_test_seed() };
	uint64_t ops = vt_test_scaled(1000000) / 4;

	r.rng = r.seed ^ salt;
	REQUIRE_EQ(iotlb_model_init(&r.m, base, window, capacity, policy, page_table, &quiet), 0);
	for (r.op = 0; r.op < ops && !r.m.failed; r.op++) {
		uint64_t k = rnd(&r, 1000);
		if (k < 400)
			op_update(&r);
		else if (k < 600)
			op_invalidate(&r);
		else if (k < 999)
			op_translate(&r);
		else
			iotlb_model_invalidate_all(&r.m);
	}
	if (r.m.failed) {
		VT_FAIL_AT("%s", r.m.failure);
		fprintf(stderr, "  seed 0x%" PRIx64 " (VT_TEST_SEED), op %" PRIu64 "\n", r.seed,
			r.op - 1);
	}
	iotlb_model_destroy(&r.m);
}

/* With the page table: entries within a page go there, the others to the sorted array. */
VT_TEST(agrees_with_byte_model_in_a_low_window)
{
	run_model(0x12345000, 64 * 1024, VT_IOTLB_DEFAULT_MAX_ENTRIES, VT_IOTLB_FULL_REFUSE, 1, 1);
}

VT_TEST(agrees_with_byte_model_at_top_of_address_space)
{
	run_model(0 - (uint64_t)64 * 1024, 64 * 1024, VT_IOTLB_DEFAULT_MAX_ENTRIES,
		  VT_IOTLB_FULL_REFUSE, 1, 2);
}

/*
 * Half the window below a 64 MiB boundary, half above: the page table's window (64 MiB, aligned
 * to its size) covers one half, whichever the first whole-page update falls in, and entries of
 * the same size lie on both sides of its edge, and ranges across it.
 */
VT_TEST(agrees_with_byte_model_across_the_edge_of_the_page_table)
{
	uint64_t edge = (uint64_t)VT_IOTLB_DEFAULT_PAGE_TABLE_PAGES * 4096;
	run_model(edge - 32 * 1024, 64 * 1024, VT_IOTLB_DEFAULT_MAX_ENTRIES, VT_IOTLB_FULL_REFUSE,
		  1, 5);
}

VT_TEST(agrees_with_byte_model_without_a_page_table)
{
	run_model(0x12345000, 64 * 1024, VT_IOTLB_DEFAULT_MAX_ENTRIES, VT_IOTLB_FULL_REFUSE, 0, 6);
}

/* The sorted array full: capacity bounds it alone, so these run without the page table. */
VT_TEST(agrees_with_byte_model_when_full_and_refusing)
{
	run_model(0, 16 * 1024, 24, VT_IOTLB_FULL_REFUSE, 0, 3);
}

VT_TEST(agrees_with_byte_model_when_full_and_evicting)
{
	run_model(0 - (uint64_t)8 * 1024, 8 * 1024, 24, VT_IOTLB_FULL_EVICT, 0, 4);
}
