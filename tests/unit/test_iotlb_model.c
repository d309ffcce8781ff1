/* SPDX-License-Identifier: MIT */
/*
 * The IOTLB against a reference simple enough to be obviously right: a byte-by-byte model of a
 * small IOVA window (mapped by which update, host offset, permission). Random updates,
 * invalidations and translations; every result, fault address, iovec, generation change and
 * entry count must agree. A failure prints the seed (VT_TEST_SEED reruns it) and the operation.
 */
#include <errno.h>

#include <virtue/iotlb.h>

#include "harness.h"

#define MODEL_IOV_MAX 8

/*
 * Entries of the IOTLB are exactly the maximal runs of bytes mapped by the same update: each
 * update gets a fresh id and whatever is left of an entry after a cut is one contiguous run.
 */
struct model {
	uint64_t base; /* IOVA of window byte 0; bytes outside the window are never mapped */
	uint32_t size;
	uint32_t *id;	/* 0: unmapped */
	uint32_t *host; /* offset of the byte's translation in the host buffer */
	uint8_t *perm;
	uint32_t next_id;
	unsigned int entries;
};

struct model_run {
	struct vt_iotlb *t;
	struct model m;
	uint8_t *host; /* 2 * window bytes; never touched, only pointed into */
	unsigned int capacity;
	enum vt_iotlb_full_policy policy;
	uint64_t seed, rng, op;
	uint64_t generation;
	struct vt_iotlb_stats stats;
	int failed;
};

#define MISMATCH(r, ...)                                                                           \
	do {                                                                                       \
		VT_FAIL_AT(__VA_ARGS__);                                                           \
		fprintf(stderr, "  seed 0x%" PRIx64 " (VT_TEST_SEED), op %" PRIu64 "\n",           \
			(r)->seed, (r)->op);                                                       \
		(r)->failed = 1;                                                                   \
		return;                                                                            \
	} while (0)

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

static int model_mapped(const struct model *m, uint64_t iova, uint32_t *idx)
{
	uint64_t i = iova - m->base;
	if (i >= m->size || !m->id[i])
		return 0;
	*idx = (uint32_t)i;
	return 1;
}

/* What cutting window bytes [lo, hi] out of the model would do. */
struct model_cut {
	unsigned int covered; /* runs with a byte in [lo, hi] */
	int head, tail;	      /* a run continues below lo / above hi */
	int mapped;	      /* some byte in [lo, hi] is mapped */
	uint32_t head_id, tail_id;
};

static struct model_cut model_cut(const struct model *m, uint32_t lo, uint32_t hi)
{
	struct model_cut c = {0};

	for (uint32_t x = lo; x <= hi; x++) {
		if (m->id[x] && (x == lo || m->id[x - 1] != m->id[x]))
			c.covered++;
	}
	c.mapped = c.covered != 0;
	c.head = lo > 0 && m->id[lo] && m->id[lo - 1] == m->id[lo];
	c.tail = hi + 1 < m->size && m->id[hi] && m->id[hi + 1] == m->id[hi];
	c.head_id = c.head ? m->id[lo] : 0;
	c.tail_id = c.tail ? m->id[hi] : 0;
	return c;
}

/* Clears the run of @id that starts at window byte @x (an entry dropped or evicted). */
static void model_clear_run(struct model *m, uint32_t x, uint32_t id)
{
	while (x < m->size && m->id[x] == id)
		m->id[x++] = 0;
}

static void refresh(struct model_run *r, uint64_t *evictions)
{
	uint64_t before = r->stats.evictions;
	vt_iotlb_get_stats(r->t, &r->stats);
	*evictions = r->stats.evictions - before;
}

/*
 * After evictions the model cannot know which entries went; it asks the IOTLB, and accepts only
 * an answer where each run is present exactly or absent entirely, @evicted of them absent, the
 * one it was told to keep (@keep_id, the new entry) present, and the head and tail of a split
 * entry present while other victims were available (@outside of them).
 */
static void model_resync(struct model_run *r, uint64_t evicted, uint32_t keep_id,
			 unsigned int outside, const struct model_cut *c, uint32_t lo, uint32_t hi)
{
	struct model *m = &r->m;
	uint64_t gone = 0;
	uint32_t x = 0;

	while (x < m->size) {
		if (!m->id[x]) {
			x++;
			continue;
		}
		uint32_t id = m->id[x], end = x;
		while (end + 1 < m->size && m->id[end + 1] == id)
			end++;
		struct vt_iotlb_entry e;
		int ret = vt_iotlb_lookup(r->t, m->base + x, &e);
		if (ret == 0) {
			if (e.iova != m->base + x || e.size != end - x + 1u ||
			    e.hva != r->host + m->host[x] || e.perm != m->perm[x])
				MISMATCH(r, "entry at window byte %u is not the model's run", x);
		} else {
			if (ret != -ENOENT || vt_iotlb_lookup(r->t, m->base + end, &e) != -ENOENT)
				MISMATCH(r, "run at window byte %u half evicted", x);
			if (id == keep_id)
				MISMATCH(r, "the new entry was evicted");
			model_clear_run(m, x, id);
			gone++;
		}
		x = end + 1;
	}
	if (gone != evicted)
		MISMATCH(r, "%" PRIu64 " entries gone, %" PRIu64 " evictions counted", gone,
			 evicted);
	m->entries -= (unsigned int)gone;
	if (outside >= evicted &&
	    ((c->head && m->id[lo - 1] != c->head_id) || (c->tail && m->id[hi + 1] != c->tail_id)))
		MISMATCH(r, "part of the entry being cut was evicted while others were available");
}

static void check_after_change(struct model_run *r, int expect_bump, const char *what)
{
	uint64_t gen = vt_iotlb_generation(r->t);
	if ((gen != r->generation) != expect_bump)
		MISMATCH(r, "%s: generation %s", what, expect_bump ? "kept" : "bumped");
	r->generation = gen;
	if (r->stats.entries != r->m.entries)
		MISMATCH(r, "%s: %u entries, model has %u", what, r->stats.entries, r->m.entries);
}

static void op_update(struct model_run *r)
{
	struct model *m = &r->m;
	uint32_t lo = (uint32_t)rnd(r, m->size);
	uint64_t size = rnd_len(r);
	unsigned int perm = 1 + (unsigned int)rnd(r, 3);
	uint64_t evicted;
	int expect = 0;

	if (rnd(r, 200) == 0)
		size = 0;
	else if (rnd(r, 100) == 0)
		perm = rnd(r, 2) ? 0 : 4 + (unsigned int)rnd(r, 4);
	if (size > m->size - lo) {
		/* Past the window: at the top that is past 2^64, elsewhere it is cut to fit. */
		if (m->base + m->size == 0 && rnd(r, 4) == 0)
			expect = -EOVERFLOW;
		else
			size = m->size - lo;
	}
	if (size == 0 || perm == 0 || perm > 3)
		expect = -EINVAL;
	/* Host offset: half the time the same as the IOVA's, so neighbours merge. */
	uint64_t h = rnd(r, 2) ? lo : rnd(r, 2ull * m->size - size + 1);
	if (expect == -EOVERFLOW)
		h = 0;

	uint32_t hi = expect ? lo : lo + (uint32_t)size - 1;
	struct model_cut c = model_cut(m, lo, hi);
	unsigned int need =
	    m->entries - c.covered + (unsigned int)c.head + (unsigned int)c.tail + 1;
	if (!expect && need > r->capacity && r->policy == VT_IOTLB_FULL_REFUSE)
		expect = -ENOSPC;

	int ret = vt_iotlb_update(r->t, m->base + lo, size, r->host + h, perm);
	if (ret != expect)
		MISMATCH(r, "update window byte %u size %" PRIu64 " perm %u: %d, model says %d", lo,
			 size, perm, ret, expect);
	refresh(r, &evicted);
	if (ret) {
		if (evicted)
			MISMATCH(r, "failed update evicted");
		check_after_change(r, 0, "failed update");
		return;
	}

	int changed = 0;
	uint32_t id = ++m->next_id;
	for (uint32_t x = lo; x <= hi; x++) {
		uint32_t hx = (uint32_t)(h + (x - lo));
		changed |= m->id[x] && (m->host[x] != hx || m->perm[x] != perm);
		m->id[x] = id;
		m->host[x] = hx;
		m->perm[x] = (uint8_t)perm;
	}
	m->entries = need;
	uint64_t expect_evicted = need > r->capacity ? need - r->capacity : 0;
	if (evicted != expect_evicted)
		MISMATCH(r, "update evicted %" PRIu64 ", model says %" PRIu64, evicted,
			 expect_evicted);
	if (evicted) {
		model_resync(r, evicted, id, need - 1 - (unsigned int)c.head - (unsigned int)c.tail,
			     &c, lo, hi);
		if (r->failed)
			return;
	}
	check_after_change(r, changed || evicted, "update");
}

static void op_invalidate(struct model_run *r)
{
	struct model *m = &r->m;
	uint64_t iova = rnd_addr(r), size = rnd(r, 100) == 0 ? 0 : rnd_len(r);
	uint64_t evicted;
	int expect = size && iova + size - 1 < iova ? -EOVERFLOW : 0;

	int ret = vt_iotlb_invalidate(r->t, iova, size);
	if (ret != expect)
		MISMATCH(r, "invalidate 0x%" PRIx64 "+%" PRIu64 ": %d, model says %d", iova, size,
			 ret, expect);
	refresh(r, &evicted);

	/* The part of the range inside the window. */
	uint64_t first = iova - m->base, last = iova + size - 1 - m->base;
	if (ret || size == 0 || (first >= m->size && last >= m->size && first <= last)) {
		check_after_change(r, 0, "invalidate outside");
		return;
	}
	uint32_t lo = first < m->size ? (uint32_t)first : 0;
	uint32_t hi = last < m->size ? (uint32_t)last : m->size - 1;
	struct model_cut c = model_cut(m, lo, hi);
	unsigned int need = m->entries - c.covered + (unsigned int)c.head + (unsigned int)c.tail;
	unsigned int outside = m->entries - c.covered;
	uint64_t expect_evicted = need > r->capacity ? need - r->capacity : 0;

	if (evicted != expect_evicted)
		MISMATCH(r, "invalidate evicted %" PRIu64 ", model says %" PRIu64, evicted,
			 expect_evicted);
	/* A full table with no slot for the split: refuse drops the part above the hole. */
	if (evicted && r->policy == VT_IOTLB_FULL_REFUSE) {
		model_clear_run(m, hi + 1, c.tail_id);
		need--;
		evicted = 0;
	}
	for (uint32_t x = lo; x <= hi; x++)
		m->id[x] = 0;
	m->entries = need;
	if (evicted) {
		model_resync(r, evicted, 0, outside, &c, lo, hi);
		if (r->failed)
			return;
	}
	check_after_change(r, c.mapped, "invalidate");
}

static void op_invalidate_all(struct model_run *r)
{
	uint64_t evicted;

	vt_iotlb_invalidate_all(r->t);
	memset(r->m.id, 0, r->m.size * sizeof(r->m.id[0]));
	r->m.entries = 0;
	refresh(r, &evicted);
	check_after_change(r, 1, "invalidate_all");
}

static void op_translate(struct model_run *r)
{
	struct model *m = &r->m;
	uint64_t iova = rnd_addr(r), len = rnd(r, 50) == 0 ? 0 : rnd_len(r);
	unsigned int access = 1 + (unsigned int)rnd(r, 3);
	unsigned int iov_max = rnd(r, 4) ? MODEL_IOV_MAX : (unsigned int)rnd(r, 3);
	struct iovec want[MODEL_IOV_MAX], got[MODEL_IOV_MAX];
	struct vt_as_fault fault = {0};
	unsigned int n = 0, got_n = 99;
	uint64_t fault_addr = 0, evicted;
	int expect = 0;

	if (rnd(r, 100) == 0)
		access = rnd(r, 2) ? 0 : 4 + (unsigned int)rnd(r, 4);
	if (access == 0 || access > 3)
		expect = -EINVAL;
	else if (len && iova + len - 1 < iova)
		expect = -EOVERFLOW;
	for (uint64_t i = 0; !expect && i < len; i++) {
		uint32_t x;
		if (!model_mapped(m, iova + i, &x)) {
			expect = -EFAULT;
		} else if ((m->perm[x] & access) != access) {
			expect = -EACCES;
		} else {
			uint8_t *p = r->host + m->host[x];
			if (n && (uint8_t *)want[n - 1].iov_base + want[n - 1].iov_len == p) {
				want[n - 1].iov_len++;
				continue;
			}
			if (n == iov_max) {
				expect = -ENOBUFS;
				break;
			}
			want[n].iov_base = p;
			want[n++].iov_len = 1;
			continue;
		}
		fault_addr = iova + i;
	}

	struct vt_iotlb_stats before = r->stats;
	int ret = vt_iotlb_translate(r->t, iova, len, access, got, iov_max, &got_n, &fault);
	if (ret != expect)
		MISMATCH(r, "translate 0x%" PRIx64 "+%" PRIu64 " access %u: %d, model says %d",
			 iova, len, access, ret, expect);
	if ((ret == -EFAULT || ret == -EACCES) &&
	    (fault.addr != fault_addr || fault.access != access))
		MISMATCH(r,
			 "translate 0x%" PRIx64 "+%" PRIu64 ": fault at 0x%" PRIx64
			 ", model says 0x%" PRIx64,
			 iova, len, fault.addr, fault_addr);
	if (ret == 0 || ret == -ENOBUFS) {
		if (got_n != n)
			MISMATCH(r, "translate 0x%" PRIx64 "+%" PRIu64 ": %u iovecs, model says %u",
				 iova, len, got_n, n);
		for (unsigned int i = 0; i < n; i++) {
			if (got[i].iov_base != want[i].iov_base ||
			    got[i].iov_len != want[i].iov_len)
				MISMATCH(r, "translate 0x%" PRIx64 "+%" PRIu64 ": iovec %u differs",
					 iova, len, i);
		}
	} else if (got_n != 0) {
		MISMATCH(r, "translate failed with %d but reported %u iovecs", ret, got_n);
	}

	refresh(r, &evicted);
	if (r->stats.hits - before.hits != (ret == 0 && len) ||
	    r->stats.misses - before.misses != (ret == -EFAULT) ||
	    r->stats.denied - before.denied != (ret == -EACCES))
		MISMATCH(r, "translate returning %d counted wrong", ret);
	check_after_change(r, 0, "translate");
}

static void drop_log(void *opaque, enum vt_log_level level, const char *message)
{
}

static void run_model(uint64_t base, uint32_t window, unsigned int capacity,
		      enum vt_iotlb_full_policy policy, uint64_t salt)
{
	static const struct vt_log quiet = {.fn = drop_log};
	struct vt_iotlb_params p = {.max_entries = capacity, .full_policy = policy, .log = &quiet};
	struct model_run r = {.capacity = capacity, .policy = policy, .seed = vt_test_seed()};
	uint64_t ops = vt_test_scaled(1000000) / 4;

	r.rng = r.seed ^ salt;
	r.m.base = base;
	r.m.size = window;
	r.m.id = calloc(window, sizeof(r.m.id[0]));
	r.m.host = calloc(window, sizeof(r.m.host[0]));
	r.m.perm = calloc(window, 1);
	r.host = malloc(2ull * window);
	REQUIRE(r.m.id && r.m.host && r.m.perm && r.host);
	REQUIRE_EQ(vt_iotlb_new(&p, &r.t), 0);

	for (r.op = 0; r.op < ops && !r.failed; r.op++) {
		uint64_t k = rnd(&r, 1000);
		if (k < 400)
			op_update(&r);
		else if (k < 600)
			op_invalidate(&r);
		else if (k < 999)
			op_translate(&r);
		else
			op_invalidate_all(&r);
	}
	vt_iotlb_free(r.t);
	free(r.m.id);
	free(r.m.host);
	free(r.m.perm);
	free(r.host);
}

VT_TEST(agrees_with_byte_model_in_a_low_window)
{
	run_model(0x12345000, 64 * 1024, VT_IOTLB_DEFAULT_MAX_ENTRIES, VT_IOTLB_FULL_REFUSE, 1);
}

VT_TEST(agrees_with_byte_model_at_top_of_address_space)
{
	run_model(0 - (uint64_t)64 * 1024, 64 * 1024, VT_IOTLB_DEFAULT_MAX_ENTRIES,
		  VT_IOTLB_FULL_REFUSE, 2);
}

VT_TEST(agrees_with_byte_model_when_full_and_refusing)
{
	run_model(0, 16 * 1024, 24, VT_IOTLB_FULL_REFUSE, 3);
}

VT_TEST(agrees_with_byte_model_when_full_and_evicting)
{
	run_model(0 - (uint64_t)8 * 1024, 8 * 1024, 24, VT_IOTLB_FULL_EVICT, 4);
}
