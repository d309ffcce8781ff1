/* SPDX-License-Identifier: MIT */
/*
 * The memory table: driver-physical regions kept sorted by address in a fixed array of at most
 * VT_MEMTABLE_MAX_REGIONS, found by binary search after a check of the region that answered last
 * (consecutive descriptors nearly always land in the same region). A second index sorted by the
 * driver process's addresses (uaddr) serves vhost-user's address conversions in O(log n) as well.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/memtable.h>
#include <virtue/shm.h>

struct vt_memtable {
	struct vt_mem_region regions[VT_MEMTABLE_MAX_REGIONS]; /* sorted by gpa */
	uint16_t by_uaddr[VT_MEMTABLE_MAX_REGIONS]; /* indices into regions[], sorted by uaddr */
	unsigned int count;
	/*
	 * Index of the region that answered last. A hint only: always re-checked, so a stale value
	 * after add/remove costs one binary search. Relaxed atomic because lookups on several queue
	 * threads share it; it is stored only when it changes, to keep the line shared-clean.
	 */
	_Atomic unsigned int hint;
	/*
	 * The same for lookups by driver address (an IOTLB update names its memory by uaddr, and a
	 * DMA API maps buffer after buffer from one region): an index into regions[].
	 */
	_Atomic unsigned int uaddr_hint;
	_Atomic uint64_t generation;
	const struct vt_log *log;
};

static inline uint64_t region_last(const struct vt_mem_region *r)
{
	return r->gpa + r->size - 1;
}

struct vt_memtable *vt_memtable_new(const struct vt_log *log)
{
	struct vt_memtable *t = calloc(1, sizeof(*t));
	if (t)
		t->log = log;
	return t;
}

void vt_memtable_free(struct vt_memtable *table)
{
	free(table);
}

unsigned int vt_memtable_count(const struct vt_memtable *table)
{
	return table->count;
}

uint64_t vt_memtable_generation(const struct vt_memtable *table)
{
	return atomic_load_explicit(&table->generation, memory_order_acquire);
}

/*
 * Index of the first region whose start is above @gpa (0..count). Branch-free halving: the
 * comparison becomes a conditional move, so random lookups pay no mispredictions.
 */
static unsigned int upper_bound(const struct vt_memtable *t, uint64_t gpa)
{
	unsigned int n = t->count, base = 0;
	if (n == 0)
		return 0;
	while (n > 1) {
		unsigned int half = n / 2;
		base = t->regions[base + half].gpa <= gpa ? base + half : base;
		n -= half;
	}
	return base + (t->regions[base].gpa <= gpa);
}

static const struct vt_mem_region *find_region(const struct vt_memtable *t, uint64_t gpa)
{
	struct vt_memtable *mt = (struct vt_memtable *)t;
	unsigned int h = atomic_load_explicit(&mt->hint, memory_order_relaxed);

	if (h < t->count && gpa - t->regions[h].gpa < t->regions[h].size)
		return &t->regions[h];
	unsigned int i = upper_bound(t, gpa);
	if (i == 0)
		return NULL;
	const struct vt_mem_region *r = &t->regions[i - 1];
	if (gpa > region_last(r))
		return NULL;
	atomic_store_explicit(&mt->hint, i - 1, memory_order_relaxed);
	return r;
}

const struct vt_mem_region *vt_memtable_find(const struct vt_memtable *table, uint64_t gpa)
{
	return find_region(table, gpa);
}

static void rebuild_uaddr_index(struct vt_memtable *t)
{
	/* Insertion sort: at most 509 entries, run only when the table changes. */
	for (unsigned int i = 0; i < t->count; i++) {
		uint16_t idx = (uint16_t)i;
		unsigned int j = i;
		while (j > 0 && t->regions[t->by_uaddr[j - 1]].uaddr > t->regions[idx].uaddr) {
			t->by_uaddr[j] = t->by_uaddr[j - 1];
			j--;
		}
		t->by_uaddr[j] = idx;
	}
}

int vt_memtable_add(struct vt_memtable *table, const struct vt_mem_region *region)
{
	struct vt_memtable *t = table;

	if (region->size == 0 || region->gpa + region->size - 1 < region->gpa ||
	    region->hva == NULL) {
		vt_log(t->log, VT_LOG_ERROR,
		       "memory region gpa 0x%llx size 0x%llx refused: empty, wrapping or unmapped",
		       (unsigned long long)region->gpa, (unsigned long long)region->size);
		return -EINVAL;
	}
	if (t->count == VT_MEMTABLE_MAX_REGIONS) {
		vt_log(t->log, VT_LOG_ERROR, "memory table full (%u regions)",
		       VT_MEMTABLE_MAX_REGIONS);
		return -ENOSPC;
	}
	unsigned int i = upper_bound(t, region->gpa);
	/* Overlap with the region before (it may extend over the new start) or after. */
	if ((i > 0 && region_last(&t->regions[i - 1]) >= region->gpa) ||
	    (i < t->count && t->regions[i].gpa <= region_last(region))) {
		vt_log(t->log, VT_LOG_ERROR,
		       "memory region gpa 0x%llx size 0x%llx overlaps an existing region",
		       (unsigned long long)region->gpa, (unsigned long long)region->size);
		return -EEXIST;
	}
	memmove(&t->regions[i + 1], &t->regions[i], (t->count - i) * sizeof(t->regions[0]));
	t->regions[i] = *region;
	t->count++;
	rebuild_uaddr_index(t);
	return 0;
}

int vt_memtable_add_shm(struct vt_memtable *table, const struct vt_shm *shm)
{
	unsigned int count = vt_shm_count(shm);

	for (unsigned int i = 0; i < count; i++) {
		const struct vt_shm_region *r = vt_shm_region(shm, i);
		if (r->fd < 0)
			continue;
		struct vt_mem_region mr = {
			.gpa = r->gpa,
			.size = r->size,
			.hva = r->hva,
			.uaddr = (uint64_t)(uintptr_t)r->hva,
		};
		int ret = vt_memtable_add(table, &mr);
		if (ret < 0) {
			/*
			 * Every earlier memfd region went in with exactly its gpa and size, and shm
			 * regions never overlap, so removing those takes out what this call added
			 * and nothing that was there before.
			 */
			while (i-- > 0) {
				r = vt_shm_region(shm, i);
				if (r->fd >= 0)
					vt_memtable_remove(table, r->gpa, r->size);
			}
			return ret;
		}
	}
	return 0;
}

int vt_memtable_remove(struct vt_memtable *table, uint64_t gpa, uint64_t size)
{
	struct vt_memtable *t = table;
	unsigned int i = upper_bound(t, gpa);

	if (i == 0 || t->regions[i - 1].gpa != gpa || t->regions[i - 1].size != size)
		return -ENOENT;
	i--;
	memmove(&t->regions[i], &t->regions[i + 1], (t->count - i - 1) * sizeof(t->regions[0]));
	t->count--;
	rebuild_uaddr_index(t);
	/* Translations into the removed region are gone: cached pointers must re-resolve. */
	atomic_fetch_add_explicit(&t->generation, 1, memory_order_release);
	return 0;
}

void vt_memtable_clear(struct vt_memtable *table)
{
	table->count = 0;
	atomic_fetch_add_explicit(&table->generation, 1, memory_order_release);
}

/* The region holding all of [uaddr, uaddr + len) in the driver process's addresses, or NULL. */
static const struct vt_mem_region *find_by_uaddr(const struct vt_memtable *t, uint64_t uaddr,
						 uint64_t len, int *err)
{
	if (len == 0)
		len = 1;
	/* The hint first: its test cannot overflow, and a range it holds does not wrap. */
	struct vt_memtable *mt = (struct vt_memtable *)t; /* the hint is the readers' own field */
	unsigned int h = atomic_load_explicit(&mt->uaddr_hint, memory_order_relaxed);
	if (h < t->count && uaddr - t->regions[h].uaddr < t->regions[h].size &&
	    len <= t->regions[h].size - (uaddr - t->regions[h].uaddr))
		return &t->regions[h];
	if (uaddr + len - 1 < uaddr) {
		*err = -EOVERFLOW;
		return NULL;
	}
	*err = -EFAULT;
	/* Last region (in uaddr order) starting at or below uaddr. */
	unsigned int lo = 0, hi = t->count;
	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;
		if (t->regions[t->by_uaddr[mid]].uaddr <= uaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	const struct vt_mem_region *r = &t->regions[t->by_uaddr[lo - 1]];
	uint64_t off = uaddr - r->uaddr;
	if (off >= r->size || len > r->size - off)
		return NULL;
	if (t->by_uaddr[lo - 1] != h)
		atomic_store_explicit(&mt->uaddr_hint, t->by_uaddr[lo - 1], memory_order_relaxed);
	return r;
}

const struct vt_mem_region *vt_memtable_find_uaddr(const struct vt_memtable *table, uint64_t uaddr,
						   uint64_t len, int *err)
{
	return find_by_uaddr(table, uaddr, len, err);
}

int vt_memtable_uaddr_to_hva(const struct vt_memtable *table, uint64_t uaddr, uint64_t len,
			     void **hva)
{
	int err;
	const struct vt_mem_region *r = find_by_uaddr(table, uaddr, len, &err);

	if (!r)
		return err;
	*hva = (uint8_t *)r->hva + (uaddr - r->uaddr);
	return 0;
}

int vt_memtable_uaddr_to_gpa(const struct vt_memtable *table, uint64_t uaddr, uint64_t len,
			     uint64_t *gpa)
{
	int err;
	const struct vt_mem_region *r = find_by_uaddr(table, uaddr, len, &err);

	if (!r)
		return err;
	*gpa = r->gpa + (uaddr - r->uaddr);
	return 0;
}

int vt_memtable_translate(const struct vt_memtable *table, uint64_t gpa, uint64_t len,
			  unsigned int access, struct iovec *iov, unsigned int iov_max,
			  unsigned int *iov_count, struct vt_as_fault *fault)
{
	unsigned int n = 0;

	*iov_count = 0;
	if (access == 0 || (access & ~(unsigned int)VT_ACCESS_RW))
		return -EINVAL;
	if (len == 0)
		return 0;
	if (gpa + len - 1 < gpa)
		return -EOVERFLOW;
	while (len) {
		const struct vt_mem_region *r = find_region(table, gpa);
		if (!r) {
			if (fault) {
				fault->addr = gpa;
				fault->access = access;
				fault->end = gpa + len - 1;
			}
			return -EFAULT;
		}
		uint64_t off = gpa - r->gpa;
		uint64_t piece = r->size - off < len ? r->size - off : len;
		uint8_t *base = (uint8_t *)r->hva + off;
		if (n && (uint8_t *)iov[n - 1].iov_base + iov[n - 1].iov_len == base) {
			iov[n - 1].iov_len += piece;
		} else {
			if (n == iov_max) {
				*iov_count = n;
				return -ENOBUFS;
			}
			iov[n].iov_base = base;
			iov[n].iov_len = piece;
			n++;
		}
		gpa += piece;
		len -= piece;
	}
	*iov_count = n;
	return 0;
}

static int memtable_as_translate(void *impl, uint64_t addr, uint64_t len, unsigned int access,
				 struct iovec *iov, unsigned int iov_max, unsigned int *iov_count,
				 struct vt_as_fault *fault)
{
	return vt_memtable_translate(impl, addr, len, access, iov, iov_max, iov_count, fault);
}

static uint64_t memtable_as_generation(const void *impl)
{
	return vt_memtable_generation(impl);
}

/* A region is one extent: linear, and the memory table has no permissions (both allowed). */
static int memtable_as_extent(void *impl, uint64_t addr, struct vt_as_extent *extent,
			      uint64_t *generation)
{
	const struct vt_memtable *t = impl;
	/* Read before the region: a change in between makes the pair stale, never wrong. */
	*generation = vt_memtable_generation(t);
	const struct vt_mem_region *r = find_region(t, addr);
	if (!r)
		return -EFAULT;
	*extent = (struct vt_as_extent){ .addr = r->gpa,
					 .last = region_last(r),
					 .hva = (uint64_t)(uintptr_t)r->hva,
					 .perm = VT_ACCESS_RW };
	return 0;
}

static const struct vt_as_ops memtable_as_ops = {
	.flags = 0, /* an unmapped driver-physical address is final */
	.translate = memtable_as_translate,
	.generation = memtable_as_generation,
	.extent = memtable_as_extent,
};

struct vt_as vt_memtable_as(struct vt_memtable *table)
{
	return (struct vt_as){ .ops = &memtable_as_ops,
			       .impl = table,
			       .generation_word = &table->generation };
}
