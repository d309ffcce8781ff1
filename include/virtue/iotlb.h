/* SPDX-License-Identifier: MIT */
/*
 * Device-side IOTLB: translations from bus addresses (IOVAs) to host addresses with permissions,
 * as a device behind an IOMMU sees them when VIRTIO_F_ACCESS_PLATFORM is negotiated. Filled by
 * updates (vhost-user IOTLB UPDATE), emptied by invalidations; a lookup that finds nothing reports
 * the first missing address so the transport can send a MISS.
 *
 * Entries are byte granular and never overlap: an update replaces whatever it covers (splitting
 * partially covered entries), an invalidation removes exactly the range given. An entry that maps
 * one whole 4 KiB page of a window of IOVA space to a whole host page (a page table of
 * page_table_pages pages, placed where the first such update falls) is found by indexing that
 * page, in O(1): a DMA API maps the pages of a buffer, a vIOMMU a page at a time. Every other
 * entry lives in a sorted array under a
 * multi-level index of 16-key blocks (O(log n) lookups with a last-hit fast path; updates move
 * entries and are O(n) in the worst case), which is bounded by max_entries; when full, the
 * configured policy either refuses the update or evicts an entry (the device then misses and asks
 * again, as a hardware IOTLB does). The page table is bounded by its window and never fills.
 *
 * Threading: translate and lookup may run on any number of threads concurrently with update and
 * invalidate. They take no lock and write no shared line but the statistics (a sequence lock:
 * a reader that overlaps a change retries, and waits while a writer is at work; an update that
 * fills the range of an entry invalidated before, the DMA API's unmap + map pair, is published
 * without one, so that readers miss or hit it but never retry, and an invalidation of whole
 * entries holds readers only while it publishes the new generation); writers serialize on a mutex
 * (held across a writer batch, vt_iotlb_batch_begin) and never wait for readers. When
 * vt_iotlb_invalidate returns, no translate that starts afterwards (after, as the memory model
 * orders it: through a lock or an acquire of what the invalidating thread released) can see the
 * range, and one that ran across the invalidation either returned before it or retries on the
 * new table.
 */
#ifndef VIRTUE_IOTLB_H
#define VIRTUE_IOTLB_H

#include <stdint.h>

#include "as.h"
#include "log.h"

/* Permissions of a mapping, the same bits as enum vt_access. */
#define VT_IOTLB_PERM_RO VT_ACCESS_READ
#define VT_IOTLB_PERM_WO VT_ACCESS_WRITE
#define VT_IOTLB_PERM_RW VT_ACCESS_RW

enum vt_iotlb_full_policy {
	VT_IOTLB_FULL_REFUSE = 0, /* update returns -ENOSPC */
	VT_IOTLB_FULL_EVICT = 1,  /* an entry is evicted (generation bumps) */
};

struct vt_iotlb_params {
	unsigned int max_entries; /* of the sorted array; 0: VT_IOTLB_DEFAULT_MAX_ENTRIES */
	enum vt_iotlb_full_policy full_policy;
	/*
	 * Pages of the page table's window, a power of two up to VT_IOTLB_MAX_PAGE_TABLE_PAGES
	 * (8 bytes of memory each); 0: VT_IOTLB_DEFAULT_PAGE_TABLE_PAGES; VT_IOTLB_NO_PAGE_TABLE:
	 * none, every entry in the sorted array.
	 */
	unsigned int page_table_pages;
	const struct vt_log *log;
};

#define VT_IOTLB_DEFAULT_MAX_ENTRIES	  65536u
#define VT_IOTLB_MAX_ENTRIES		  (1u << 22)
#define VT_IOTLB_DEFAULT_PAGE_TABLE_PAGES 16384u /* 64 MiB of IOVA space */
#define VT_IOTLB_MAX_PAGE_TABLE_PAGES	  (1u << 22)
#define VT_IOTLB_NO_PAGE_TABLE		  UINT32_MAX

struct vt_iotlb_entry {
	uint64_t iova;
	uint64_t size;
	void *hva;
	unsigned int perm;
};

struct vt_iotlb_stats {
	uint64_t hits;	 /* translations fully satisfied (not a reader's own page walks) */
	uint64_t misses; /* translations that ended in -EFAULT */
	uint64_t denied; /* translations that ended in -EACCES */
	uint64_t evictions;
	uint64_t invalidations; /* invalidate calls that removed something */
	unsigned int entries;	/* both tables' */
	unsigned int page_table_entries;
};

struct vt_iotlb;

/* NULL params: defaults. Returns 0 or -EINVAL (bad params) / -ENOMEM. */
int vt_iotlb_new(const struct vt_iotlb_params *params, struct vt_iotlb **out);
void vt_iotlb_free(struct vt_iotlb *iotlb);

/*
 * Maps [iova, iova + size) to [hva, hva + size) with @perm (VT_IOTLB_PERM_*), replacing any
 * translation of those bytes. -EINVAL: size 0, perm 0 or invalid; -EOVERFLOW: iova + size wraps
 * (the last byte 2^64 - 1 is reachable: iova + size == 2^64 is allowed); -ENOSPC: full and the
 * policy refuses (nothing changed).
 */
int vt_iotlb_update(struct vt_iotlb *iotlb, uint64_t iova, uint64_t size, void *hva,
		    unsigned int perm);

/*
 * vt_iotlb_update of each of @count entries (their iova, size, hva and perm) in order, taking the
 * writer lock once for them all: a DMA burst's maps. Returns how many were made, the first ones;
 * when fewer than @count, *@error holds what vt_iotlb_update returned for the next one, which
 * changed nothing (and *@error is left alone otherwise).
 */
unsigned int vt_iotlb_update_burst(struct vt_iotlb *iotlb, const struct vt_iotlb_entry *entries,
				   unsigned int count, int *error);

/*
 * vt_iotlb_batch_begin, vt_iotlb_batch_end - hold the writer lock across the updates and
 * invalidations the calling thread makes until the end (a DMA batch feeding the IOTLB, see
 * vt_dma_iotlb_ops.batch_begin), so that each of them skips it. Readers are not held up: each
 * change still takes effect when its call returns. Writers on other threads, and
 * vt_iotlb_get_stats there, wait for the end. Batches nest; each end must be on the thread of
 * its begin, and none may be open at vt_iotlb_free. The writer lock is then no longer a leaf:
 * a thread inside a batch must not wait for another that waits for this IOTLB's writer lock
 * (two DMA objects feeding one IOTLB, a batch of one inside a batch of the other).
 */
void vt_iotlb_batch_begin(struct vt_iotlb *iotlb);
/* 0, or -EINVAL (logged, nothing changed) when this thread has no batch open. */
int vt_iotlb_batch_end(struct vt_iotlb *iotlb);

/* Removes every translation of [iova, iova + size); bytes not mapped are ignored. */
int vt_iotlb_invalidate(struct vt_iotlb *iotlb, uint64_t iova, uint64_t size);

void vt_iotlb_invalidate_all(struct vt_iotlb *iotlb);

/* Translation as vt_as_translate; mappings adjacent in both IOVA and host space merge. */
int vt_iotlb_translate(struct vt_iotlb *iotlb, uint64_t iova, uint64_t len, unsigned int access,
		       struct iovec *iov, unsigned int iov_max, unsigned int *iov_count,
		       struct vt_as_fault *fault);

/* The entry containing @iova, copied to @entry: 0 or -ENOENT. */
int vt_iotlb_lookup(struct vt_iotlb *iotlb, uint64_t iova, struct vt_iotlb_entry *entry);

/* Bumps on every invalidation, eviction and update that changes an existing translation. */
uint64_t vt_iotlb_generation(const struct vt_iotlb *iotlb);

void vt_iotlb_get_stats(struct vt_iotlb *iotlb, struct vt_iotlb_stats *stats);

/* The IOTLB as an address space; valid as long as the IOTLB lives. */
struct vt_as vt_iotlb_as(struct vt_iotlb *iotlb);

#endif
