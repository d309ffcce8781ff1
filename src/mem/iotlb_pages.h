/* SPDX-License-Identifier: MIT */
/*
 * The IOTLB's page table: a window of IOVA pages, each holding at most one entry that lies within
 * the page, found by indexing instead of a search. The sorted table (iotlb.c) holds every other
 * entry. A DMA API maps a buffer at a time and a vIOMMU a page at a time, so most entries fit a
 * page, and their translation costs one entry's load instead of a walk down the index.
 */
#ifndef VIRTUE_MEM_IOTLB_PAGES_H
#define VIRTUE_MEM_IOTLB_PAGES_H

#include <stdbool.h>
#include <stdint.h>

#define IOTLB_PAGE_SHIFT 12
#define IOTLB_PAGE_SIZE	 (1ULL << IOTLB_PAGE_SHIFT)
#define IOTLB_PAGE_MASK	 (IOTLB_PAGE_SIZE - 1)

/*
 * The entry of one IOVA page, but for its permission: its bytes [first, last] of the page
 * translate to hva + offset. The permission, a VT_ACCESS_* value or 0 for none (no entry), is a
 * byte in an array of its own, as the sorted array's are, so that an invalidation of a DMA burst
 * stores into a line or two that the device read, not one per four pages. It is stored last with
 * release by a writer that fills the page, and loaded first with acquire by a reader.
 */
struct iotlb_pte {
	uint64_t
	    hva; /* host address of the page's byte 0 (modulo 2^64: only its offsets are used) */
	uint16_t first, last;
};

_Static_assert(IOTLB_PAGE_SIZE - 1 <= UINT16_MAX, "a page offset must fit its field");

/* A translated run of IOVA bytes: [start, last] at host address hva, with perm. */
struct iotlb_piece {
	uint64_t start, last, hva;
	unsigned int perm;
};

/*
 * The page table's entry holding @addr as a piece, read as the sorted table's entries are: false
 * when its page is outside the window (@base, @pages: 0 pages until a writer places it) or holds
 * no entry with that byte. Between read_begin and read_retry: all of it may be torn, so the page
 * index is clamped to what was allocated (@allocated) and host addresses are only added to.
 */
static inline bool iotlb_pte_piece(const struct iotlb_pte *table, const uint8_t *perms,
				   unsigned int allocated, uint64_t base, unsigned int pages,
				   uint64_t addr, struct iotlb_piece *piece)
{
	uint64_t page = (addr - base) >> IOTLB_PAGE_SHIFT;

	if (page >= pages || page >= allocated)
		return false;
	/* Acquire, before the rest of the entry: pairs with the release of iotlb_pte_fill. */
	unsigned int perm = __atomic_load_n(&perms[page], __ATOMIC_ACQUIRE);
	if (perm == 0)
		return false;
	const struct iotlb_pte *e = &table[page];
	unsigned int off = (unsigned int)(addr & IOTLB_PAGE_MASK);
	unsigned int first = __atomic_load_n(&e->first, __ATOMIC_RELAXED);
	unsigned int last = __atomic_load_n(&e->last, __ATOMIC_RELAXED);
	if (off < first || off > last)
		return false;
	uint64_t page_addr = addr - off;
	piece->start = page_addr + first;
	piece->last = page_addr + last;
	piece->hva = __atomic_load_n(&e->hva, __ATOMIC_RELAXED) + first;
	piece->perm = perm;
	return true;
}

/*
 * Under the writer lock: the empty entry @e, permission @perm_byte, becomes [iova, last] (one
 * page) at @host with @perm. The caller has ordered it after the write section that emptied the
 * entry (a release fence): a reader that loaded the old permission and then one of these stores
 * retries.
 */
static inline void iotlb_pte_fill(struct iotlb_pte *e, uint8_t *perm_byte, uint64_t iova,
				  uint64_t last, uint64_t host, unsigned int perm)
{
	uint64_t off = iova & IOTLB_PAGE_MASK;

	__atomic_store_n(&e->hva, host - off, __ATOMIC_RELAXED);
	__atomic_store_n(&e->first, (uint16_t)off, __ATOMIC_RELAXED);
	__atomic_store_n(&e->last, (uint16_t)(last & IOTLB_PAGE_MASK), __ATOMIC_RELAXED);
	/* Release: publishes the fields above to a reader that loads the permission (acquire). */
	__atomic_store_n(perm_byte, (uint8_t)perm, __ATOMIC_RELEASE);
}

/* A live entry as a piece, for a writer (under the lock: plain values). @page_addr: its page. */
static inline struct iotlb_piece iotlb_pte_value(const struct iotlb_pte *e, unsigned int perm,
						 uint64_t page_addr)
{
	return (struct iotlb_piece){ .start = page_addr + e->first,
				     .last = page_addr + e->last,
				     .hva = e->hva + e->first,
				     .perm = perm };
}

#endif
