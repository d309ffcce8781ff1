/* SPDX-License-Identifier: MIT */
/*
 * Device-side address space: how an address written by the driver becomes bytes the device can
 * touch. Two implementations: the memory table (driver-physical addresses, memtable.h) and the
 * IOTLB (bus addresses under VIRTIO_F_ACCESS_PLATFORM, iotlb.h). Ring and device code hold a
 * struct vt_as and never learn which one it is.
 */
#ifndef VIRTUE_AS_H
#define VIRTUE_AS_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* What the device does with the bytes. Mappings carry the same bits as permissions. */
enum vt_access {
	VT_ACCESS_READ = 1,  /* device reads driver memory (driver-to-device buffer) */
	VT_ACCESS_WRITE = 2, /* device writes driver memory (device-to-driver buffer) */
	VT_ACCESS_RW = 3,
};

/* Where and why a translation failed, for -EFAULT and -EACCES. */
struct vt_as_fault {
	uint64_t addr;	     /* first address that is not mapped or not permitted */
	unsigned int access; /* the access that was asked for (enum vt_access bits) */
	/*
	 * Last byte of the range being translated: what lies between addr and end was not looked
	 * at, so a transport can ask for all of it at once instead of one miss per page.
	 */
	uint64_t end;
};

/*
 * A miss in this address space can be filled later (an IOTLB asks the driver and waits for an
 * UPDATE), so a ring that meets one parks the queue instead of declaring the driver broken. Without
 * it (the memory table), an unmapped address is final: the driver broke the rules.
 */
#define VT_AS_F_MISS_RETRYABLE 1u

/* A range of the address space that translates linearly to host memory with one permission. */
struct vt_as_extent {
	uint64_t addr;	   /* first byte */
	uint64_t last;	   /* last byte (inclusive) */
	uint64_t hva;	   /* host address of @addr */
	unsigned int perm; /* VT_ACCESS_* bits allowed on every byte of it */
};

struct vt_as_ops {
	unsigned int flags; /* VT_AS_F_* */
	int (*translate)(void *impl, uint64_t addr, uint64_t len, unsigned int access,
			 struct iovec *iov, unsigned int iov_max, unsigned int *iov_count,
			 struct vt_as_fault *fault);
	uint64_t (*generation)(const void *impl);
	/* Optional (NULL: not offered): see vt_as_extent. */
	int (*extent)(void *impl, uint64_t addr, struct vt_as_extent *extent, uint64_t *generation);
	/* Optional (NULL: not offered): see vt_as_unchanged_since. */
	int (*unchanged_since)(const void *impl, uint64_t since, uint64_t addr, uint64_t len,
			       uint64_t *now);
};

/*
 * A page table an address space lets its readers walk themselves, as an IOMMU's hardware walks
 * its own (vt_as_page_entry): one level of VT_AS_PAGE_SIZE pages from IOVA @base, @pages of them,
 * each entry one word, 0 for a page it does not map, else the host address of the page ORed with
 * its VT_ACCESS_* bits. What it does not map, the address space may still map by other means.
 */
#define VT_AS_PAGE_SHIFT    12
#define VT_AS_PAGE_SIZE	    (1ULL << VT_AS_PAGE_SHIFT)
#define VT_AS_PTE_PERM_MASK ((uint64_t)VT_ACCESS_RW)

struct vt_as_page_table {
	const uint64_t *entries; /* fixed, as is @allocated, the room it has */
	unsigned int allocated;
	/*
	 * The window: 0 pages until the owner places it, then fixed, at most @allocated. The
	 * owner stores @base first and @pages with release; a reader loads @pages with acquire
	 * first.
	 */
	unsigned int pages;
	uint64_t base;
};

struct vt_as {
	const struct vt_as_ops *ops;
	void *impl;
	/*
	 * Optional: the counter ops->generation returns, read directly (acquire) by
	 * vt_as_generation. Rings check it at every pop; a load is cheaper than a call.
	 */
	const _Atomic uint64_t *generation_word;
	/* Optional (NULL: none): see vt_as_page_entry. */
	const struct vt_as_page_table *page_table;
};

/*
 * vt_as_translate - turn [addr, addr + len) into host iovecs the device may access as @access.
 *
 * Ranges that are adjacent in both address spaces are merged into one iovec; a buffer crossing
 * regions or mappings that are not contiguous on the host yields several. len 0 yields no iovec and
 * succeeds. Returns 0 with *iov_count set, or:
 *   -EFAULT    some byte is not mapped; fault->addr is the first such byte (a transport can ask the
 *              driver for it, as vhost-user's IOTLB miss does);
 *   -EACCES    mapped, but not with @access; fault->addr is the first such byte;
 *   -EOVERFLOW addr + len wraps past 2^64;
 *   -ENOBUFS   the buffer needs more than @iov_max iovecs; the first @iov_max are filled (a
 *              valid prefix, *iov_count == @iov_max) so a caller can go on in pieces;
 *   -EINVAL    @access is not a valid combination.
 * @fault may be NULL.
 */
static inline int vt_as_translate(const struct vt_as *as, uint64_t addr, uint64_t len,
				  unsigned int access, struct iovec *iov, unsigned int iov_max,
				  unsigned int *iov_count, struct vt_as_fault *fault)
{
	return as->ops->translate(as->impl, addr, len, access, iov, iov_max, iov_count, fault);
}

/*
 * Generation of the address space's contents: it changes whenever a translation may have been
 * removed or changed (region removal, IOTLB invalidation, eviction, overlapping update). A cached
 * host pointer is valid only while the generation it was taken under is current.
 */
static inline uint64_t vt_as_generation(const struct vt_as *as)
{
	if (as->generation_word)
		return atomic_load_explicit(as->generation_word, memory_order_acquire);
	return as->ops->generation(as->impl);
}

/*
 * vt_as_extent - the extent holding @addr, for a caller that caches translations: any
 * [a, a + len) inside it may be accessed as extent->perm allows at extent->hva + (a - extent->addr)
 * for as long as vt_as_generation returns *generation. Returns 0, -EFAULT when @addr is not mapped
 * (vt_as_translate then says why), or -EOPNOTSUPP when the address space does not offer it.
 */
static inline int vt_as_extent(const struct vt_as *as, uint64_t addr, struct vt_as_extent *extent,
			       uint64_t *generation)
{
	if (!as->ops->extent)
		return -EOPNOTSUPP;
	return as->ops->extent(as->impl, addr, extent, generation);
}

/*
 * vt_as_page_entry - the page table's entry for @addr's page (struct vt_as_page_table), for a
 * caller that translates in a few loads, as a ring does a burst's one-page buffers under an
 * IOMMU: 0 when the address space has no page table, @addr's page lies outside it, or the table
 * does not map it (vt_as_extent or vt_as_translate then say whether something else does). Like an
 * extent, an entry is good for as long as the generation, loaded (acquire) before it, is current:
 * the entry is loaded with acquire, so it is at least as new as that generation.
 */
static inline uint64_t vt_as_page_entry(const struct vt_as *as, uint64_t addr)
{
	const struct vt_as_page_table *pt = as->page_table;
	if (!pt)
		return 0;
	unsigned int pages = __atomic_load_n(&pt->pages, __ATOMIC_ACQUIRE);
	uint64_t page = (addr - __atomic_load_n(&pt->base, __ATOMIC_RELAXED)) >> VT_AS_PAGE_SHIFT;
	/* Clamped to the room as well: the load stays inside the array whatever the owner did. */
	if (page >= pages || page >= pt->allocated)
		return 0;
	return __atomic_load_n(&pt->entries[page], __ATOMIC_ACQUIRE);
}

/*
 * vt_as_unchanged_since - whether a host pointer into [addr, addr + len) taken under generation
 * @since is still good: 0 when no translation of a byte in the range changed between @since and
 * *now (the current generation, to cache in place of @since); -ESTALE when one did or the address
 * space cannot tell (then translate again). An address space that keeps no record of what its
 * changes touched (-EOPNOTSUPP here) makes every generation change a re-translation.
 */
static inline int vt_as_unchanged_since(const struct vt_as *as, uint64_t since, uint64_t addr,
					uint64_t len, uint64_t *now)
{
	if (!as->ops->unchanged_since)
		return -EOPNOTSUPP;
	return as->ops->unchanged_since(as->impl, since, addr, len, now);
}

/*
 * Resolve [addr, addr + len) to one contiguous host range, for ring metadata. Errors as
 * vt_as_translate, and -ENOBUFS when the range is mapped but not contiguous on the host.
 */
int vt_as_map_contig(const struct vt_as *as, uint64_t addr, uint64_t len, unsigned int access,
		     void **hva, struct vt_as_fault *fault);

/* Copy between a host buffer and the address space, checked as vt_as_translate. */
int vt_as_read(const struct vt_as *as, uint64_t addr, void *buf, size_t len,
	       struct vt_as_fault *fault);
int vt_as_write(const struct vt_as *as, uint64_t addr, const void *buf, size_t len,
		struct vt_as_fault *fault);

#endif
