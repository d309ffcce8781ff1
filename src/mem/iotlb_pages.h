/* SPDX-License-Identifier: MIT */
/*
 * The IOTLB's page table: a window of IOVA pages, each of which may be mapped whole to one host
 * page, found by indexing instead of a search. The sorted array (iotlb.c) holds every other entry.
 * A DMA API maps the pages of a buffer and a vIOMMU a page at a time, so most entries are pages,
 * and their translation costs one word's load instead of a walk down the index.
 */
#ifndef VIRTUE_MEM_IOTLB_PAGES_H
#define VIRTUE_MEM_IOTLB_PAGES_H

#include <stdbool.h>
#include <stdint.h>

#define IOTLB_PAGE_SHIFT 12
#define IOTLB_PAGE_SIZE	 (1ULL << IOTLB_PAGE_SHIFT)
#define IOTLB_PAGE_MASK	 (IOTLB_PAGE_SIZE - 1)

/*
 * A page table entry is one word: the host address of the page (page aligned) ORed with its
 * VT_ACCESS_* permission, or 0 for none. One word, so a reader loads an entry whole, never half
 * of an old one and half of a new one; eight to a cache line, so a DMA burst's entries share a
 * few lines with their permissions.
 */
#define IOTLB_PTE_PERM_MASK 3ULL

_Static_assert(IOTLB_PTE_PERM_MASK < IOTLB_PAGE_SIZE, "a permission must fit below the page");

/* The entry of host page @hva (page aligned) with @perm (VT_ACCESS_*, not 0). */
static inline uint64_t iotlb_pte(uint64_t hva, unsigned int perm)
{
	return hva | perm;
}

/* A translated run of IOVA bytes: [start, last] at host address hva, with perm. */
struct iotlb_piece {
	uint64_t start, last, hva;
	unsigned int perm;
};

/* Entry @pte (not 0) of the page at IOVA @page_addr as a piece. */
static inline struct iotlb_piece iotlb_pte_value(uint64_t pte, uint64_t page_addr)
{
	return (struct iotlb_piece){ .start = page_addr,
				     .last = page_addr + IOTLB_PAGE_MASK,
				     .hva = pte & ~IOTLB_PAGE_MASK,
				     .perm = (unsigned int)(pte & IOTLB_PTE_PERM_MASK) };
}

/*
 * The page table's entry holding @addr as a piece: false when its page is outside the window
 * (@base, @pages: 0 pages until a writer places it) or is not mapped. A reader racing a writer
 * may see the window torn (it retries on the IOTLB's sequence): the page index is clamped to what
 * was allocated (@allocated), so the load stays inside the table.
 */
static inline bool iotlb_pte_piece(const uint64_t *table, unsigned int allocated, uint64_t base,
				   unsigned int pages, uint64_t addr, struct iotlb_piece *piece)
{
	uint64_t page = (addr - base) >> IOTLB_PAGE_SHIFT;

	if (page >= pages || page >= allocated)
		return false;
	/*
	 * Acquire: pairs with the release of the fill, as the sorted array's permissions do; the
	 * entry itself is whole in the one load.
	 */
	uint64_t pte = __atomic_load_n(&table[page], __ATOMIC_ACQUIRE);
	if (!pte)
		return false;
	*piece = iotlb_pte_value(pte, addr & ~IOTLB_PAGE_MASK);
	return true;
}

#endif
