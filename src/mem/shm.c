/* SPDX-License-Identifier: MIT */
/*
 * Driver-side shared memory: up to VT_SHM_MAX_REGIONS regions, memfd-backed (so a device in
 * another process can map them) or registered by the caller, each with a range allocator for the
 * buffers and rings the driver will hand to a device.
 *
 * Threading: vt_shm_gpa and vt_shm_alloc/vt_shm_release may run on several threads at once (the
 * allocators are behind a mutex); adding regions must not run concurrently with anything else.
 */
#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <virtue/shm.h>

#include "mem/range_alloc.h"

/* vt_shm_alloc's unit: a cache line, so two buffers never share one. */
#define SHM_ALLOC_GRANULE 64u

struct shm_region {
	struct vt_shm_region pub;
	bool owned;	/* created here: unmapped and closed by vt_shm_free */
	bool has_alloc; /* large enough to carve allocations from */
	struct vt_range_alloc alloc;
};

struct vt_shm {
	struct shm_region regions[VT_SHM_MAX_REGIONS]; /* in the order they were added */
	uint8_t by_hva[VT_SHM_MAX_REGIONS];	       /* indices into regions[], sorted by hva */
	unsigned int count;
	/*
	 * Index (into regions[]) of the region that answered last: nearly every lookup of a
	 * driver's buffers lands in the same region. A hint, re-checked; relaxed atomic because
	 * several driver threads share it, stored only when it changes.
	 */
	_Atomic unsigned int hint;
	uint64_t page_size;
	pthread_mutex_t alloc_lock; /* the regions' allocators */
};

int vt_shm_new(struct vt_shm **out)
{
	struct vt_shm *shm = calloc(1, sizeof(*shm));
	if (!shm)
		return -ENOMEM;
	long page = sysconf(_SC_PAGESIZE);
	shm->page_size = page > 0 ? (uint64_t)page : 4096;
	int ret = pthread_mutex_init(&shm->alloc_lock, NULL);
	if (ret) {
		free(shm);
		return -ret;
	}
	*out = shm;
	return 0;
}

void vt_shm_free(struct vt_shm *shm)
{
	if (!shm)
		return;
	for (unsigned int i = 0; i < shm->count; i++) {
		struct shm_region *r = &shm->regions[i];
		if (r->has_alloc)
			vt_range_alloc_destroy(&r->alloc);
		if (r->owned) {
			munmap(r->pub.hva, r->pub.size);
			close(r->pub.fd);
		}
	}
	pthread_mutex_destroy(&shm->alloc_lock);
	free(shm);
}

unsigned int vt_shm_count(const struct vt_shm *shm)
{
	return shm->count;
}

const struct vt_shm_region *vt_shm_region(const struct vt_shm *shm, unsigned int index)
{
	return index < shm->count ? &shm->regions[index].pub : NULL;
}

/* Inclusive last bytes, so that a region ending at 2^64 does not wrap in the comparison. */
static bool ranges_overlap(uint64_t a, uint64_t a_last, uint64_t b, uint64_t b_last)
{
	return a <= b_last && b <= a_last;
}

/*
 * Checks that a new region fits: 0, -EINVAL (empty or wrapping), -ENOSPC or -EEXIST. The device
 * must never see two meanings for one address, and a pointer must have one address: both the
 * driver-physical and (when known, @hva not NULL) the host ranges stay disjoint.
 */
static int check_new_region(const struct vt_shm *shm, const void *hva, uint64_t size, uint64_t gpa)
{
	uint64_t h = (uint64_t)(uintptr_t)hva;

	if (size == 0 || gpa + (size - 1) < gpa || (hva && h + (size - 1) < h))
		return -EINVAL;
	if (shm->count == VT_SHM_MAX_REGIONS)
		return -ENOSPC;
	for (unsigned int i = 0; i < shm->count; i++) {
		const struct vt_shm_region *r = &shm->regions[i].pub;
		uint64_t rh = (uint64_t)(uintptr_t)r->hva;
		if (ranges_overlap(gpa, gpa + (size - 1), r->gpa, r->gpa + (r->size - 1)) ||
		    (hva && ranges_overlap(h, h + (size - 1), rh, rh + (r->size - 1))))
			return -EEXIST;
	}
	return 0;
}

/* Appends region @r (already mapped) and gives it an allocator when it is big enough. */
static int insert_region(struct vt_shm *shm, const struct shm_region *r,
			 const struct vt_shm_region **out)
{
	unsigned int idx = shm->count;
	struct shm_region *slot = &shm->regions[idx];

	*slot = *r;
	/* Allocations are carved from page-aligned memory so that alignments up to a page hold. */
	uint64_t hva = (uint64_t)(uintptr_t)slot->pub.hva;
	uint64_t start = (hva + shm->page_size - 1) & ~(shm->page_size - 1);
	uint64_t end = hva + slot->pub.size;
	if (start >= hva && start < end && end - start >= SHM_ALLOC_GRANULE) {
		int ret =
		    vt_range_alloc_init(&slot->alloc, start, end - start, SHM_ALLOC_GRANULE, 0);
		if (ret < 0)
			return ret;
		slot->has_alloc = true;
	}

	unsigned int pos = idx;
	while (pos > 0 && shm->regions[shm->by_hva[pos - 1]].pub.hva > slot->pub.hva) {
		shm->by_hva[pos] = shm->by_hva[pos - 1];
		pos--;
	}
	shm->by_hva[pos] = (uint8_t)idx;
	shm->count++;
	if (out)
		*out = &slot->pub;
	return 0;
}

int vt_shm_add_memfd(struct vt_shm *shm, uint64_t size, uint64_t gpa,
		     const struct vt_shm_region **out)
{
	if (size == 0 || size > (uint64_t)SIZE_MAX - shm->page_size)
		return -EINVAL;
	size = (size + shm->page_size - 1) & ~(shm->page_size - 1);
	/* The mapping does not exist yet, so only the driver-physical range can collide. */
	int ret = check_new_region(shm, NULL, size, gpa);
	if (ret < 0)
		return ret;

	int fd = memfd_create("virtue-shm", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	void *hva = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (hva == MAP_FAILED) {
		ret = -errno;
		close(fd);
		return ret;
	}
	struct shm_region r = {
		.pub = { .hva = hva, .size = size, .gpa = gpa, .fd = fd, .fd_offset = 0 },
		.owned = true,
	};
	ret = insert_region(shm, &r, out);
	if (ret < 0) {
		munmap(hva, size);
		close(fd);
	}
	return ret;
}

int vt_shm_add_host(struct vt_shm *shm, void *hva, uint64_t size, uint64_t gpa,
		    const struct vt_shm_region **out)
{
	if (!hva)
		return -EINVAL;
	int ret = check_new_region(shm, hva, size, gpa);
	if (ret < 0)
		return ret;
	struct shm_region r = {
		.pub = { .hva = hva, .size = size, .gpa = gpa, .fd = -1, .fd_offset = 0 },
	};
	return insert_region(shm, &r, out);
}

/*
 * region_of when the hint missed: binary search over the hva order. Out of line, so that a
 * hit stays a few instructions.
 */
static __attribute__((noinline)) const struct shm_region *region_search(const struct vt_shm *shm,
									uint64_t p)
{
	struct vt_shm *mut = (struct vt_shm *)shm;
	unsigned int lo = 0, hi = shm->count;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;
		if ((uint64_t)(uintptr_t)shm->regions[shm->by_hva[mid]].pub.hva <= p)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	const struct shm_region *r = &shm->regions[shm->by_hva[lo - 1]];
	if (p - (uint64_t)(uintptr_t)r->pub.hva >= r->pub.size)
		return NULL;
	atomic_store_explicit(&mut->hint, shm->by_hva[lo - 1], memory_order_relaxed);
	return r;
}

/* The region holding the byte at @p, or NULL: the one that answered last, else a search. */
static inline const struct shm_region *region_of(const struct vt_shm *shm, uint64_t p)
{
	struct vt_shm *mut = (struct vt_shm *)shm;
	unsigned int h = atomic_load_explicit(&mut->hint, memory_order_relaxed);
	if (h < shm->count &&
	    p - (uint64_t)(uintptr_t)shm->regions[h].pub.hva < shm->regions[h].pub.size)
		return &shm->regions[h];
	return region_search(shm, p);
}

const struct vt_shm_region *vt_shm_find(const struct vt_shm *shm, const void *ptr)
{
	const struct shm_region *r = region_of(shm, (uint64_t)(uintptr_t)ptr);
	return r ? &r->pub : NULL;
}

int vt_shm_gpa(const struct vt_shm *shm, const void *ptr, size_t len, uint64_t *gpa)
{
	uint64_t p = (uint64_t)(uintptr_t)ptr;
	const struct shm_region *r = region_of(shm, p);

	if (!r)
		return -EFAULT;
	uint64_t off = p - (uint64_t)(uintptr_t)r->pub.hva;
	if (len > r->pub.size - off)
		return -EFAULT;
	*gpa = r->pub.gpa + off;
	return 0;
}

int vt_shm_alloc(struct vt_shm *shm, size_t size, size_t align, void **ptr)
{
	if (align == 0)
		align = SHM_ALLOC_GRANULE;
	if (size == 0 || (align & (align - 1)) || align > shm->page_size)
		return -EINVAL;

	int ret = -ENOMEM;
	pthread_mutex_lock(&shm->alloc_lock);
	for (unsigned int i = 0; i < shm->count; i++) {
		struct shm_region *r = &shm->regions[i];
		uint64_t addr;
		if (r->has_alloc && vt_range_alloc_alloc(&r->alloc, size, align, 0, &addr) == 0) {
			*ptr = (void *)(uintptr_t)addr;
			ret = 0;
			break;
		}
	}
	pthread_mutex_unlock(&shm->alloc_lock);
	return ret;
}

void vt_shm_release(struct vt_shm *shm, void *ptr, size_t size)
{
	struct shm_region *r = (struct shm_region *)region_of(shm, (uint64_t)(uintptr_t)ptr);

	if (!r || !r->has_alloc)
		return;
	pthread_mutex_lock(&shm->alloc_lock);
	/* A bad release is refused by the allocator and changes nothing. */
	(void)vt_range_alloc_free(&r->alloc, (uint64_t)(uintptr_t)ptr, size);
	pthread_mutex_unlock(&shm->alloc_lock);
}
