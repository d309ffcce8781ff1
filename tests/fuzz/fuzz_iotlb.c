/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the input is a small IOTLB (capacity, full policy, window at address 0 or at the
 * top of the address space) and a list of updates, invalidations and translations, each checked
 * against a byte-by-byte model of the window; any disagreement traps. Input layout, as written by
 * gen_iotlb_seeds.py:
 *   byte 0  capacity 8 + b % 57;  byte 1  bit 0 evict when full, bit 1 window at the top
 *   then 7-byte operations: kind, a (le16), b (le16), x, y   (see run_op)
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/iotlb.h>

#define WINDOW	1024u
#define IOV_MAX 8u
#define OP_SIZE 7u

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

/*
 * The reference: per window byte, which update mapped it (0: none), where on the host and with
 * which permission. Entries of the IOTLB are exactly the runs of bytes of one update.
 */
struct fuzz {
	struct vt_iotlb *t;
	uint8_t *host; /* 2 * WINDOW, only pointed into */
	uint64_t base;
	unsigned int capacity;
	int evict;
	uint32_t id[WINDOW];
	uint32_t hoff[WINDOW];
	uint8_t perm[WINDOW];
	uint32_t next_id;
	unsigned int entries;
	uint64_t generation;
	struct vt_iotlb_stats stats;
};

struct cut {
	unsigned int covered;
	int head, tail, mapped;
	uint32_t head_id, tail_id;
};

static struct cut cut(const struct fuzz *f, uint32_t lo, uint32_t hi)
{
	struct cut c = {0};

	c.head = lo != 0 && f->id[lo] && f->id[lo - 1] == f->id[lo];
	c.tail = hi + 1 < WINDOW && f->id[hi] && f->id[hi + 1] == f->id[hi];
	c.head_id = c.head ? f->id[lo] : 0;
	c.tail_id = c.tail ? f->id[hi] : 0;
	for (uint32_t x = lo; x <= hi; x++)
		c.covered += f->id[x] && (x == lo || f->id[x - 1] != f->id[x]);
	c.mapped = c.covered != 0;
	return c;
}

static void clear_run(struct fuzz *f, uint32_t x, uint32_t id)
{
	while (x < WINDOW && f->id[x] == id)
		f->id[x++] = 0;
}

static uint64_t refresh(struct fuzz *f)
{
	uint64_t before = f->stats.evictions;
	vt_iotlb_get_stats(f->t, &f->stats);
	return f->stats.evictions - before;
}

static void check_after_change(struct fuzz *f, int bump)
{
	uint64_t gen = vt_iotlb_generation(f->t);
	CHECK((gen != f->generation) == bump);
	f->generation = gen;
	CHECK(f->stats.entries == f->entries);
}

/* After evictions: learn which runs went, each wholly, never @keep_id, as many as counted. */
static void resync(struct fuzz *f, uint64_t evicted, uint32_t keep_id, unsigned int outside,
		   const struct cut *c, uint32_t lo, uint32_t hi)
{
	uint64_t gone = 0;

	for (uint32_t x = 0; x < WINDOW;) {
		if (!f->id[x]) {
			x++;
			continue;
		}
		uint32_t id = f->id[x], end = x;
		while (end + 1 < WINDOW && f->id[end + 1] == id)
			end++;
		struct vt_iotlb_entry e;
		if (vt_iotlb_lookup(f->t, f->base + x, &e) == 0) {
			CHECK(e.iova == f->base + x && e.size == end - x + 1u);
			CHECK(e.hva == f->host + f->hoff[x] && e.perm == f->perm[x]);
		} else {
			CHECK(vt_iotlb_lookup(f->t, f->base + end, &e) == -ENOENT);
			CHECK(id != keep_id);
			clear_run(f, x, id);
			gone++;
		}
		x = end + 1;
	}
	CHECK(gone == evicted);
	f->entries -= (unsigned int)gone;
	/* Victims come from elsewhere while there is an elsewhere. */
	if (outside >= evicted) {
		CHECK(!c->head || f->id[lo - 1] == c->head_id);
		CHECK(!c->tail || f->id[hi + 1] == c->tail_id);
	}
}

static void op_update(struct fuzz *f, uint16_t a, uint16_t b, uint8_t x, uint8_t y)
{
	uint32_t lo = a % WINDOW;
	uint64_t size = b % (WINDOW + 64);
	unsigned int perm = x < 0xf8 ? 1u + x % 3u : x & 7u;
	int expect = 0;

	if (size > WINDOW - lo) {
		if (f->base + WINDOW == 0)
			expect = -EOVERFLOW; /* past 2^64 */
		else
			size = WINDOW - lo;
	}
	if (size == 0 || perm == 0 || perm > 3)
		expect = -EINVAL;
	uint64_t h = 0;
	if (!expect)
		h = y & 1 ? lo : (uint64_t)(y >> 1) * 61 % (2 * WINDOW - size + 1);

	uint32_t hi = expect ? lo : lo + (uint32_t)size - 1;
	struct cut c = cut(f, lo, hi);
	unsigned int need = f->entries - c.covered + (unsigned int)(c.head + c.tail) + 1;
	if (!expect && need > f->capacity && !f->evict)
		expect = -ENOSPC;

	CHECK(vt_iotlb_update(f->t, f->base + lo, size, f->host + h, perm) == expect);
	uint64_t evicted = refresh(f);
	if (expect) {
		CHECK(evicted == 0);
		check_after_change(f, 0);
		return;
	}
	int changed = 0;
	uint32_t id = ++f->next_id;
	for (uint32_t i = lo; i <= hi; i++) {
		uint32_t hx = (uint32_t)(h + (i - lo));
		changed |= f->id[i] && (f->hoff[i] != hx || f->perm[i] != perm);
		f->id[i] = id;
		f->hoff[i] = hx;
		f->perm[i] = (uint8_t)perm;
	}
	f->entries = need;
	CHECK(evicted == (need > f->capacity ? need - f->capacity : 0));
	if (evicted)
		resync(f, evicted, id, need - 1 - (unsigned int)(c.head + c.tail), &c, lo, hi);
	check_after_change(f, changed || evicted);
}

static void op_invalidate(struct fuzz *f, uint16_t a, uint16_t b)
{
	uint64_t iova = f->base + a % (WINDOW + 128) - 64, size = b % (WINDOW + 128);
	int expect = size && iova + size - 1 < iova ? -EOVERFLOW : 0;

	CHECK(vt_iotlb_invalidate(f->t, iova, size) == expect);
	uint64_t evicted = refresh(f);
	uint64_t first = iova - f->base, last = iova + size - 1 - f->base;
	if (expect || size == 0 || (first >= WINDOW && last >= WINDOW && first <= last)) {
		CHECK(evicted == 0);
		check_after_change(f, 0);
		return;
	}
	uint32_t lo = first < WINDOW ? (uint32_t)first : 0;
	uint32_t hi = last < WINDOW ? (uint32_t)last : WINDOW - 1;
	struct cut c = cut(f, lo, hi);
	unsigned int need = f->entries - c.covered + (unsigned int)(c.head + c.tail);
	unsigned int outside = f->entries - c.covered;

	CHECK(evicted == (need > f->capacity ? need - f->capacity : 0));
	if (evicted && !f->evict) {
		/* Refusing table, no slot for the split: the part above the hole goes. */
		clear_run(f, hi + 1, c.tail_id);
		need--;
		evicted = 0;
	}
	for (uint32_t i = lo; i <= hi; i++)
		f->id[i] = 0;
	f->entries = need;
	if (evicted)
		resync(f, evicted, 0, outside, &c, lo, hi);
	check_after_change(f, c.mapped);
}

static void op_translate(struct fuzz *f, uint16_t a, uint16_t b, uint8_t x, uint8_t y)
{
	uint64_t iova = f->base + a % (WINDOW + 128) - 64, len = b % (WINDOW + 128);
	unsigned int access = x < 0xf8 ? 1u + x % 3u : x & 7u;
	unsigned int iov_max = y % (IOV_MAX + 1);
	struct iovec want[IOV_MAX], got[IOV_MAX];
	struct vt_as_fault fault = {0};
	unsigned int n = 0, got_n = 99;
	uint64_t fault_addr = 0;
	int expect = 0;

	if (access == 0 || access > 3)
		expect = -EINVAL;
	else if (len && iova + len - 1 < iova)
		expect = -EOVERFLOW;
	for (uint64_t i = 0; !expect && i < len; i++) {
		uint64_t w = iova + i - f->base;
		if (w >= WINDOW || !f->id[w]) {
			expect = -EFAULT;
		} else if ((f->perm[w] & access) != access) {
			expect = -EACCES;
		} else {
			uint8_t *p = f->host + f->hoff[w];
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

	struct vt_iotlb_stats before = f->stats;
	int ret = vt_iotlb_translate(f->t, iova, len, access, got, iov_max, &got_n, &fault);
	CHECK(ret == expect);
	if (ret == -EFAULT || ret == -EACCES)
		CHECK(fault.addr == fault_addr && fault.access == access);
	if (ret == 0 || ret == -ENOBUFS) {
		CHECK(got_n == n);
		for (unsigned int i = 0; i < n; i++)
			CHECK(got[i].iov_base == want[i].iov_base &&
			      got[i].iov_len == want[i].iov_len);
	} else {
		CHECK(got_n == 0);
	}
	refresh(f);
	CHECK(f->stats.hits - before.hits == (ret == 0 && len));
	CHECK(f->stats.misses - before.misses == (ret == -EFAULT));
	CHECK(f->stats.denied - before.denied == (ret == -EACCES));
	check_after_change(f, 0);
}

static void run_op(struct fuzz *f, const uint8_t *op)
{
	uint16_t a = (uint16_t)(op[1] | op[2] << 8), b = (uint16_t)(op[3] | op[4] << 8);

	unsigned int kind = op[0] % 16;

	if (kind <= 5) {
		op_update(f, a, b, op[5], op[6]);
	} else if (kind <= 9) {
		op_invalidate(f, a, b);
	} else if (kind == 10) {
		vt_iotlb_invalidate_all(f->t);
		memset(f->id, 0, sizeof(f->id));
		f->entries = 0;
		refresh(f);
		check_after_change(f, 1);
	} else {
		op_translate(f, a, b, op[5], op[6]);
	}
}

static void drop_log(void *opaque, enum vt_log_level level, const char *message)
{
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct vt_log quiet = {.fn = drop_log};

	if (size < 2)
		return 0;
	struct fuzz *f = calloc(1, sizeof(*f));
	uint8_t *host = malloc(2 * WINDOW);
	if (!f || !host) {
		free(f);
		free(host);
		return 0;
	}
	f->host = host;
	f->capacity = 8 + data[0] % 57;
	f->evict = data[1] & 1;
	f->base = data[1] & 2 ? 0 - (uint64_t)WINDOW : 0;
	struct vt_iotlb_params p = {.max_entries = f->capacity, .log = &quiet};
	p.full_policy = f->evict ? VT_IOTLB_FULL_EVICT : VT_IOTLB_FULL_REFUSE;
	CHECK(vt_iotlb_new(&p, &f->t) == 0);

	for (size_t off = 2; off + OP_SIZE <= size; off += OP_SIZE)
		run_op(f, data + off);

	vt_iotlb_free(f->t);
	free(f);
	free(host);
	return 0;
}
