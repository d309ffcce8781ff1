/* SPDX-License-Identifier: MIT */
/*
 * The reference the IOTLB is checked against, simple enough to be obviously right: a byte-by-byte
 * model of a window of IOVA space. The unit test drives it with random operations, the fuzz target
 * with operations decoded from its input; each operation runs on the IOTLB and the model, and
 * every result, fault address, iovec, generation change, statistic and entry count must agree.
 * The first disagreement is written to @failure and stops all further checking of that model.
 */
#ifndef VIRTUE_TESTS_IOTLB_MODEL_H
#define VIRTUE_TESTS_IOTLB_MODEL_H

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/iotlb.h>

/* Most iovecs a translation may be given (iov_max) and checked for. */
#define IOTLB_MODEL_IOV_MAX 8u

/*
 * Per window byte: which update mapped it (0: none), where in the host buffer and with which
 * permission. Entries of the IOTLB are exactly the maximal runs of bytes mapped by the same
 * update: each update gets a fresh id and whatever is left of an entry after a cut is one
 * contiguous run.
 */
struct iotlb_model {
	struct vt_iotlb *t;
	uint64_t base; /* IOVA of window byte 0; bytes outside the window are never mapped */
	uint32_t size;
	unsigned int capacity;
	enum vt_iotlb_full_policy policy;
	uint8_t *host; /* 2 * size bytes; never touched, only pointed into */
	uint32_t *id;
	uint32_t *hoff; /* offset of the byte's translation in host */
	uint8_t *perm;
	uint32_t next_id;
	unsigned int entries;
	uint64_t generation;	     /* as last seen, to tell whether an operation bumped it */
	struct vt_iotlb_stats stats; /* as last seen */
	int failed;
	char failure[256];
};

/* What cutting window bytes [lo, hi] out of the model would do. */
struct iotlb_model_cut {
	unsigned int covered; /* runs with a byte in [lo, hi] */
	int head, tail;	      /* a run continues below lo / above hi */
	int mapped;	      /* some byte in [lo, hi] is mapped */
	uint32_t head_id, tail_id;
};

__attribute__((format(printf, 3, 4))) static inline void
iotlb_model_fail(struct iotlb_model *m, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (m->failed++)
		return;
	n = snprintf(m->failure, sizeof(m->failure), "iotlb_model.h:%d: ", line);
	va_start(ap, fmt);
	vsnprintf(m->failure + n, sizeof(m->failure) - (size_t)n, fmt, ap);
	va_end(ap);
}

/* Records the disagreement and leaves the operation: the model no longer says anything. */
#define IOTLB_MODEL_FAIL(m, ...)                                                                   \
	do {                                                                                       \
		iotlb_model_fail((m), __LINE__, __VA_ARGS__);                                      \
		return;                                                                            \
	} while (0)

static inline void iotlb_model_destroy(struct iotlb_model *m)
{
	vt_iotlb_free(m->t);
	free(m->host);
	free(m->id);
	free(m->hoff);
	free(m->perm);
	memset(m, 0, sizeof(*m));
}

/*
 * An empty IOTLB and model of the window [base, base + size). The model bounds the entries by
 * @capacity, which bounds only the sorted array: a model of an IOTLB that fills has no page
 * table (@page_table false), one that never fills may. Returns 0 or -errno.
 */
static inline int iotlb_model_init(struct iotlb_model *m, uint64_t base, uint32_t size,
				   unsigned int capacity, enum vt_iotlb_full_policy policy,
				   int page_table, const struct vt_log *log)
{
	struct vt_iotlb_params p = { .max_entries = capacity,
				     .full_policy = policy,
				     .page_table_pages = page_table ? 0 : VT_IOTLB_NO_PAGE_TABLE,
				     .log = log };
	int ret;

	memset(m, 0, sizeof(*m));
	m->base = base;
	m->size = size;
	m->capacity = capacity;
	m->policy = policy;
	/* Page aligned, and whole pages: a page of it can back a page table entry. */
	m->host = aligned_alloc(4096, (2ull * size + 4095) & ~4095ull);
	m->id = calloc(size, sizeof(m->id[0]));
	m->hoff = calloc(size, sizeof(m->hoff[0]));
	m->perm = calloc(size, sizeof(m->perm[0]));
	if (!m->host || !m->id || !m->hoff || !m->perm) {
		iotlb_model_destroy(m);
		return -ENOMEM;
	}
	ret = vt_iotlb_new(&p, &m->t);
	if (ret)
		iotlb_model_destroy(m);
	return ret;
}

static inline struct iotlb_model_cut iotlb_model_cut(const struct iotlb_model *m, uint32_t lo,
						     uint32_t hi)
{
	struct iotlb_model_cut c = { 0 };

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
static inline void iotlb_model_clear_run(struct iotlb_model *m, uint32_t x, uint32_t id)
{
	while (x < m->size && m->id[x] == id)
		m->id[x++] = 0;
}

/* Reads the statistics again; returns how many evictions happened since the last time. */
static inline uint64_t iotlb_model_refresh(struct iotlb_model *m)
{
	uint64_t before = m->stats.evictions;

	vt_iotlb_get_stats(m->t, &m->stats);
	return m->stats.evictions - before;
}

static inline void iotlb_model_check_after_change(struct iotlb_model *m, int expect_bump,
						  const char *what)
{
	uint64_t gen = vt_iotlb_generation(m->t);

	if ((gen != m->generation) != expect_bump)
		IOTLB_MODEL_FAIL(m, "%s: generation %s", what, expect_bump ? "kept" : "bumped");
	m->generation = gen;
	if (m->stats.entries != m->entries)
		IOTLB_MODEL_FAIL(m, "%s: %u entries, model has %u", what, m->stats.entries,
				 m->entries);
}

/*
 * After evictions the model cannot know which entries went; it asks the IOTLB, and accepts only
 * an answer where each run is present exactly or absent entirely, @evicted of them absent, the
 * one it was told to keep (@keep_id, the new entry) present, and the head and tail of a split
 * entry present while other victims were available (@outside of them).
 */
static inline void iotlb_model_resync(struct iotlb_model *m, uint64_t evicted, uint32_t keep_id,
				      unsigned int outside, const struct iotlb_model_cut *c,
				      uint32_t lo, uint32_t hi)
{
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
		int ret = vt_iotlb_lookup(m->t, m->base + x, &e);
		if (ret == 0) {
			if (e.iova != m->base + x || e.size != end - x + 1u ||
			    e.hva != m->host + m->hoff[x] || e.perm != m->perm[x])
				IOTLB_MODEL_FAIL(m, "entry at window byte %u differs", x);
		} else {
			if (ret != -ENOENT || vt_iotlb_lookup(m->t, m->base + end, &e) != -ENOENT)
				IOTLB_MODEL_FAIL(m, "run at window byte %u half evicted", x);
			if (id == keep_id)
				IOTLB_MODEL_FAIL(m, "the new entry was evicted");
			iotlb_model_clear_run(m, x, id);
			gone++;
		}
		x = end + 1;
	}
	if (gone != evicted)
		IOTLB_MODEL_FAIL(m, "%" PRIu64 " entries gone, %" PRIu64 " evictions counted", gone,
				 evicted);
	m->entries -= (unsigned int)gone;
	/* Victims come from elsewhere while there is an elsewhere. */
	if (outside >= evicted &&
	    ((c->head && m->id[lo - 1] != c->head_id) || (c->tail && m->id[hi + 1] != c->tail_id)))
		IOTLB_MODEL_FAIL(m, "part of the entry being cut was evicted while others were "
				    "available");
}

/*
 * Maps window bytes [lo, lo + size) to host bytes [hoff, hoff + size) with @perm, which may be
 * invalid, as may a size of 0. The range must stay in the window, except at the top of the address
 * space, where running past it must fail with -EOVERFLOW.
 */
static inline void iotlb_model_update(struct iotlb_model *m, uint32_t lo, uint64_t size,
				      unsigned int perm, uint64_t hoff)
{
	uint64_t iova = m->base + lo;
	int expect = 0;

	if (m->failed)
		return;
	if (lo >= m->size)
		IOTLB_MODEL_FAIL(m, "test bug: update at window byte %u", lo);
	if (size == 0 || perm == 0 || (perm & ~(unsigned int)VT_IOTLB_PERM_RW))
		expect = -EINVAL;
	else if (iova + size - 1 < iova)
		expect = -EOVERFLOW;
	else if (size > m->size - lo || hoff + size > 2ull * m->size)
		IOTLB_MODEL_FAIL(m, "test bug: update at %u size %" PRIu64 " leaves the window", lo,
				 size);

	uint32_t hi = expect ? lo : lo + (uint32_t)size - 1;
	struct iotlb_model_cut c = iotlb_model_cut(m, lo, hi);
	unsigned int need =
	    m->entries - c.covered + (unsigned int)c.head + (unsigned int)c.tail + 1;
	if (!expect && need > m->capacity && m->policy == VT_IOTLB_FULL_REFUSE)
		expect = -ENOSPC;

	int ret = vt_iotlb_update(m->t, iova, size, m->host + hoff, perm);
	if (ret != expect)
		IOTLB_MODEL_FAIL(m, "update at %u size %" PRIu64 " perm %u: %d, model says %d", lo,
				 size, perm, ret, expect);
	uint64_t evicted = iotlb_model_refresh(m);
	if (ret) {
		if (evicted)
			IOTLB_MODEL_FAIL(m, "failed update evicted");
		iotlb_model_check_after_change(m, 0, "failed update");
		return;
	}

	int changed = 0;
	uint32_t id = ++m->next_id;
	for (uint32_t x = lo; x <= hi; x++) {
		uint32_t hx = (uint32_t)(hoff + (x - lo));
		changed |= m->id[x] && (m->hoff[x] != hx || m->perm[x] != perm);
		m->id[x] = id;
		m->hoff[x] = hx;
		m->perm[x] = (uint8_t)perm;
	}
	m->entries = need;
	uint64_t expect_evicted = need > m->capacity ? need - m->capacity : 0;
	if (evicted != expect_evicted)
		IOTLB_MODEL_FAIL(m, "update evicted %" PRIu64 ", model says %" PRIu64, evicted,
				 expect_evicted);
	if (evicted) {
		iotlb_model_resync(m, evicted, id,
				   need - 1 - (unsigned int)c.head - (unsigned int)c.tail, &c, lo,
				   hi);
		if (m->failed)
			return;
	}
	iotlb_model_check_after_change(m, changed || evicted, "update");
}

/* Invalidates [iova, iova + size), anywhere in the address space. */
static inline void iotlb_model_invalidate(struct iotlb_model *m, uint64_t iova, uint64_t size)
{
	int expect = size && iova + size - 1 < iova ? -EOVERFLOW : 0;

	if (m->failed)
		return;
	int ret = vt_iotlb_invalidate(m->t, iova, size);
	if (ret != expect)
		IOTLB_MODEL_FAIL(m, "invalidate 0x%" PRIx64 "+%" PRIu64 ": %d, model says %d", iova,
				 size, ret, expect);
	uint64_t evicted = iotlb_model_refresh(m);

	/* The part of the range inside the window. */
	uint64_t first = iova - m->base, last = iova + size - 1 - m->base;
	if (ret || size == 0 || (first >= m->size && last >= m->size && first <= last)) {
		if (evicted)
			IOTLB_MODEL_FAIL(m, "invalidate outside the window evicted");
		iotlb_model_check_after_change(m, 0, "invalidate outside");
		return;
	}
	uint32_t lo = first < m->size ? (uint32_t)first : 0;
	uint32_t hi = last < m->size ? (uint32_t)last : m->size - 1;
	struct iotlb_model_cut c = iotlb_model_cut(m, lo, hi);
	unsigned int need = m->entries - c.covered + (unsigned int)c.head + (unsigned int)c.tail;
	unsigned int outside = m->entries - c.covered;
	uint64_t expect_evicted = need > m->capacity ? need - m->capacity : 0;

	if (evicted != expect_evicted)
		IOTLB_MODEL_FAIL(m, "invalidate evicted %" PRIu64 ", model says %" PRIu64, evicted,
				 expect_evicted);
	/* A full table with no slot for the split: refuse drops the part above the hole. */
	if (evicted && m->policy == VT_IOTLB_FULL_REFUSE) {
		iotlb_model_clear_run(m, hi + 1, c.tail_id);
		need--;
		evicted = 0;
	}
	for (uint32_t x = lo; x <= hi; x++)
		m->id[x] = 0;
	m->entries = need;
	if (evicted) {
		iotlb_model_resync(m, evicted, 0, outside, &c, lo, hi);
		if (m->failed)
			return;
	}
	iotlb_model_check_after_change(m, c.mapped, "invalidate");
}

static inline void iotlb_model_invalidate_all(struct iotlb_model *m)
{
	if (m->failed)
		return;
	vt_iotlb_invalidate_all(m->t);
	memset(m->id, 0, m->size * sizeof(m->id[0]));
	m->entries = 0;
	if (iotlb_model_refresh(m))
		IOTLB_MODEL_FAIL(m, "invalidate_all evicted");
	iotlb_model_check_after_change(m, 1, "invalidate_all");
}

static inline int iotlb_model_mapped(const struct iotlb_model *m, uint64_t iova, uint32_t *x)
{
	uint64_t i = iova - m->base;

	if (i >= m->size || !m->id[i])
		return 0;
	*x = (uint32_t)i;
	return 1;
}

/*
 * Translates [iova, iova + len) for @access (either may be invalid) into at most @iov_max
 * (at most IOTLB_MODEL_IOV_MAX) iovecs.
 */
static inline void iotlb_model_translate(struct iotlb_model *m, uint64_t iova, uint64_t len,
					 unsigned int access, unsigned int iov_max)
{
	struct iovec want[IOTLB_MODEL_IOV_MAX], got[IOTLB_MODEL_IOV_MAX];
	struct vt_as_fault fault = { 0 };
	unsigned int n = 0, got_n = 99;
	uint64_t fault_addr = 0;
	int expect = 0;

	if (m->failed)
		return;
	if (iov_max > IOTLB_MODEL_IOV_MAX)
		IOTLB_MODEL_FAIL(m, "test bug: iov_max %u", iov_max);
	if (access == 0 || (access & ~(unsigned int)VT_ACCESS_RW))
		expect = -EINVAL;
	else if (len && iova + len - 1 < iova)
		expect = -EOVERFLOW;
	for (uint64_t i = 0; !expect && i < len; i++) {
		uint32_t x;
		if (!iotlb_model_mapped(m, iova + i, &x)) {
			expect = -EFAULT;
		} else if ((m->perm[x] & access) != access) {
			expect = -EACCES;
		} else {
			uint8_t *p = m->host + m->hoff[x];
			if (n && (uint8_t *)want[n - 1].iov_base + want[n - 1].iov_len == p) {
				want[n - 1].iov_len++;
			} else if (n == iov_max) {
				expect = -ENOBUFS;
			} else {
				want[n].iov_base = p;
				want[n++].iov_len = 1;
			}
			continue;
		}
		fault_addr = iova + i;
	}

	struct vt_iotlb_stats before = m->stats;
	int ret = vt_iotlb_translate(m->t, iova, len, access, got, iov_max, &got_n, &fault);
	if (ret != expect)
		IOTLB_MODEL_FAIL(m, "translate 0x%" PRIx64 "+%" PRIu64 " for %u: %d, model says %d",
				 iova, len, access, ret, expect);
	if ((ret == -EFAULT || ret == -EACCES) &&
	    (fault.addr != fault_addr || fault.access != access))
		IOTLB_MODEL_FAIL(m,
				 "translate 0x%" PRIx64 "+%" PRIu64 ": fault at 0x%" PRIx64
				 " access %u, model says 0x%" PRIx64,
				 iova, len, fault.addr, fault.access, fault_addr);
	if (ret == 0 || ret == -ENOBUFS) {
		if (got_n != n)
			IOTLB_MODEL_FAIL(m,
					 "translate 0x%" PRIx64 "+%" PRIu64 ": %u iovecs, not %u",
					 iova, len, got_n, n);
		for (unsigned int i = 0; i < n; i++) {
			if (got[i].iov_base != want[i].iov_base ||
			    got[i].iov_len != want[i].iov_len)
				IOTLB_MODEL_FAIL(
				    m, "translate 0x%" PRIx64 "+%" PRIu64 ": iovec %u differs",
				    iova, len, i);
		}
	} else if (got_n != 0) {
		IOTLB_MODEL_FAIL(m, "translate failed with %d but reported %u iovecs", ret, got_n);
	}

	if (iotlb_model_refresh(m))
		IOTLB_MODEL_FAIL(m, "translate evicted");
	if (m->stats.hits - before.hits != (ret == 0 && len) ||
	    m->stats.misses - before.misses != (ret == -EFAULT) ||
	    m->stats.denied - before.denied != (ret == -EACCES))
		IOTLB_MODEL_FAIL(m, "translate returning %d counted wrong", ret);
	iotlb_model_check_after_change(m, 0, "translate");
}

#endif
