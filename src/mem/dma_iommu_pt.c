/* SPDX-License-Identifier: MIT */
/*
 * IOMMU DMA over a page table the device walks itself (vt_dma_params.page_table), as a hardware
 * IOMMU walks the tables its driver writes: a device in this process asks vt_dma_device_as for
 * an address space over the table, and nothing travels between the two sides but the entries.
 * (dma_iommu.c is the other kind, for a device that learns its translations by message and
 * caches them: vhost-user's IOTLB.)
 *
 * The table has one level: an entry per VT_AS_PAGE_SIZE page of IOVA from @base, 0 when the page
 * is not mapped, else the host address of the page ORed with its VT_ACCESS_* bits
 * (struct vt_as_page_table). A mapping takes whole pages, so the pages around a buffer must lie in
 * shared memory too (they do for page-aligned regions, as memfd ones are).
 *
 * IOVA pages for buffers are handed out next-fit from a cursor that goes round an arena at the
 * bottom of the table. A burst of maps then fills whole lines of entries, in order, which the
 * device reads once each; reusing the pages freed last, as a stack does, scatters a burst over
 * lines the device is still reading (virtue-bench ring: 10 ns per buffer more at batch 32).
 * Coherent memory (a ring's areas) comes from the top of the table down, so that, in a table
 * larger than the arena, no line of entries holds both a ring's pages, which the device reads at
 * every flush, and buffers', which every burst writes and clears.
 *
 * Strict: an unmap outside a batch clears the entries and bumps the generation before it
 * returns; inside a batch, the batch's end does that for all of them at once. Lazy: unmapped
 * pages wait, up to lazy_batch, for a flush. Either way a page is handed out again only after its
 * entry was cleared and the generation moved past it, so a device that loaded the old entry
 * sees the generation change before it trusts that entry again (vt_as_page_entry). Each flush
 * also logs the lowest and highest page it cleared, so that a ring can ask whether its areas
 * kept their translations (vt_as_unchanged_since) instead of translating them again.
 *
 * Threading: as dma_iommu.c (one lock, dma_lock.h). The device reads entries, the generation and
 * the flush log without it, and nothing else the driver writes: those sit on lines of their own.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <virtue/as.h>

#include "mem/dma_impl.h"
#include "mem/dma_lock.h"

#define PT_DEFAULT_BASE	      (1ULL << 20)
#define PT_DEFAULT_PAGES      65536u /* 256 MiB of IOVA, 512 KiB of entries */
#define PT_MAX_PAGES	      (1u << 24)
#define PT_FIRST_ARENA	      512u
#define PT_LAZY_DEFAULT_BATCH 256u
#define PT_PAGE		      VT_AS_PAGE_SIZE
#define PT_PAGE_MASK	      (PT_PAGE - 1)
#define PT_FLUSH_LOG	      7u /* with the generation, one line */

enum pt_page_state {
	PT_FREE = 0,
	PT_LIVE,     /* the first page of a live mapping */
	PT_RETIRING, /* the first page of an unmapped one, its entries not yet cleared */
	PT_TAIL,     /* a later page of either */
};

/*
 * The driver's own record of an IOVA page, 8 bytes so that a search for free pages reads few
 * lines; the device never reads it. The length of a mapping is kept apart (struct dma_pt.len).
 */
struct pt_page {
	uint32_t
	    link; /* the first page: how many the mapping has; a later one: the first's index */
	uint16_t offset; /* first page: of the first byte in its page */
	uint8_t dir;	 /* first page: enum vt_dma_dir */
	uint8_t state;	 /* enum pt_page_state */
};

struct dma_pt {
	struct vt_dma dma; /* first: the ops get a struct vt_dma * */
	struct vt_dma_lock lock;
	/*
	 * Pages are searched for in [0, arena), from the cursor round to it: the arena grows
	 * (doubling) only when it has no room, so the pages in use cycle through as few lines of
	 * entries and records as the mappings live at once need (all 256 MiB of the default table
	 * would make each map miss the cache on both).
	 */
	uint32_t arena, cursor; /* cursor < arena */
	struct pt_page *page;
	uint64_t *len;	   /* by first page: the bytes a mapping has */
	uint32_t *pending; /* first pages of mappings unmapped, entries not yet cleared */
	unsigned int pending_count, lazy_batch;
	const struct vt_shm_region *region; /* of the last map: a burst's mostly share one */

	/*
	 * What the device reads, on lines of its own: the driver writes the lines above at every
	 * map and unmap, and a device reading a field there at every flush would take the line
	 * away each time. The generation and the flush log, on a line of their own; then what
	 * never changes after creation.
	 */
	_Alignas(64) _Atomic uint64_t generation;
	/*
	 * Which pages each of the last flushes cleared, for the device to ask whether its ring's
	 * pages kept their translation (as_unchanged_since): slot g % PT_FLUSH_LOG holds the lowest
	 * page generation g cleared (high half) and the highest (low half). On the generation's
	 * line: a device reads the two together.
	 */
	_Atomic uint64_t flush_log[PT_FLUSH_LOG];
	_Alignas(64) uint64_t base;
	uint32_t table_pages;
	uint64_t *entries; /* the table: written here, read by the device */
	struct vt_as_page_table view;
	struct vt_as as;
};

static inline struct dma_pt *to_pt(struct vt_dma *dma)
{
	return (struct dma_pt *)dma;
}

static const char *mode_name(const struct dma_pt *m)
{
	return vt_dma_mode_name(m->dma.mode);
}

/*
 * Clears the entries of every queued mapping and frees their pages, then moves the generation on:
 * a device that loaded an entry before the clear loaded the old generation before it too, and
 * sees it change before it trusts the entry again. (No map can take a freed page before the
 * generation moves: both happen under the lock.)
 */
static void flush_locked(struct dma_pt *m)
{
	const uint32_t *pending = m->pending;
	struct pt_page *page = m->page;
	_Atomic uint64_t *entries = (_Atomic uint64_t *)m->entries;
	unsigned int count = m->pending_count;
	uint32_t lo = UINT32_MAX, hi = 0;

	if (count == 0)
		return;
	/* One writer (under the lock): a load and a store, no locked instruction. */
	uint64_t generation = atomic_load_explicit(&m->generation, memory_order_relaxed) + 1;
	for (unsigned int i = 0; i < count; i++) {
		uint32_t head = pending[i], end = head + page[head].link;
		for (uint32_t p = head; p < end; p++) {
			atomic_store_explicit(&entries[p], 0, memory_order_relaxed);
			page[p].state = PT_FREE;
		}
		lo = head < lo ? head : lo;
		hi = end - 1 > hi ? end - 1 : hi;
	}
	/*
	 * Release, as the generation's below: a device that reads this record sees the
	 * generation before it (as_unchanged_since), and one that sees the generation sees its
	 * record and the cleared entries. Plain stores on x86: a locked instruction would wait
	 * here for every clear above to reach the device's cache.
	 */
	atomic_store_explicit(&m->flush_log[generation % PT_FLUSH_LOG], (uint64_t)lo << 32 | hi,
			      memory_order_release);
	atomic_store_explicit(&m->generation, generation, memory_order_release);
	vt_dma_count_locked(&m->dma.stats.iotlb_invalidations, count);
	vt_dma_count_locked(&m->dma.stats.flushes, 1);
	m->pending_count = 0;
}

/* Whether pages [first, first + n) are all free; else *@next is past the last busy one. */
static bool pages_free(const struct dma_pt *m, uint32_t first, uint32_t n, uint32_t *next)
{
	for (uint32_t i = n; i-- > 0;) {
		if (m->page[first + i].state != PT_FREE) {
			*next = first + i + 1;
			return false;
		}
	}
	return true;
}

/* @n free consecutive pages in the arena, next-fit from the cursor, going round it once. */
static bool find_in_arena(struct dma_pt *m, uint32_t n, uint32_t *first)
{
	uint32_t end = m->arena, p = m->cursor < end ? m->cursor : 0, scanned = 0;

	while (scanned < end) {
		uint32_t next;
		if (p + n > end) { /* no room before the end: wrap */
			scanned += end - p;
			p = 0;
			continue;
		}
		if (pages_free(m, p, n, &next)) {
			*first = p;
			m->cursor = p + n == end ? 0 : p + n;
			return true;
		}
		scanned += next - p;
		p = next == end ? 0 : next;
	}
	return false;
}

/*
 * @n free consecutive pages, the highest there are: coherent memory (a ring's areas), kept at the
 * top of the table, where no entry or record shares a line with the arena's, which every burst
 * writes and clears (until the arena grows that far). First fit down from the top: coherent
 * allocations are few.
 */
static bool find_at_top(const struct dma_pt *m, uint32_t n, uint32_t *first)
{
	uint32_t run = 0;

	for (uint32_t p = m->table_pages; p-- > 0;) {
		run = m->page[p].state == PT_FREE ? run + 1 : 0;
		if (run == n) {
			*first = p;
			return true;
		}
	}
	return false;
}

/*
 * @n free consecutive pages: at the top for coherent memory (@top), else from the arena; when it
 * has none, from the arena grown, up to the whole table; then, when unmapped pages wait for their
 * clear, after a flush of them.
 */
static int find_pages(struct dma_pt *m, uint32_t n, bool top, uint32_t *first)
{
	for (;;) {
		if (top ? find_at_top(m, n, first) : find_in_arena(m, n, first))
			return 0;
		if (!top && m->arena < m->table_pages)
			m->arena = m->arena > m->table_pages / 2 ? m->table_pages : 2 * m->arena;
		else if (m->pending_count > 0)
			flush_locked(m); /* empties the queue: once at most */
		else
			break;
	}
	vt_log(m->dma.log, VT_LOG_ERROR, "dma(%s): no %u free IOVA pages in the page table",
	       mode_name(m), n);
	return -ENOSPC;
}

/*
 * The region holding the whole pages of [p, p + len): @m's last one when it does, else the one
 * holding p; -EFAULT (logged) when those pages are not all inside one region.
 */
static int region_of_pages(struct dma_pt *m, uint64_t p, size_t len, uint64_t *first_page,
			   uint32_t *pages)
{
	uint64_t start = p & ~PT_PAGE_MASK;
	uint64_t span = ((p & PT_PAGE_MASK) + len + PT_PAGE_MASK) & ~PT_PAGE_MASK;
	const struct vt_shm_region *r = m->region;

	for (int attempt = 0; attempt < 2; attempt++) {
		/* span cannot wrap: dma.c refused ranges that do, and NULL. */
		if (r && vt_dma_region_holds(r, start, span) && span / PT_PAGE <= UINT32_MAX) {
			m->region = r;
			*first_page = start;
			*pages = (uint32_t)(span / PT_PAGE);
			return 0;
		}
		r = vt_shm_find(m->dma.shm, (void *)(uintptr_t)p);
	}
	vt_log(m->dma.log, VT_LOG_ERROR,
	       "dma(%s): map of [0x%llx, +%zu) refused: its pages are not inside one shared memory "
	       "region",
	       mode_name(m), (unsigned long long)p, len);
	return -EFAULT;
}

/* Records pages [first, first + pages) as the mapping of @len bytes from host @p, and maps them. */
static uint64_t map_at(struct dma_pt *m, uint32_t first, uint32_t pages, uint64_t host, uint64_t p,
		       size_t len, enum vt_dma_dir dir)
{
	m->page[first] = (struct pt_page){ .link = pages,
					   .offset = (uint16_t)(p & PT_PAGE_MASK),
					   .dir = (uint8_t)dir,
					   .state = PT_LIVE };
	m->len[first] = len;
	for (uint32_t i = 1; i < pages; i++)
		m->page[first + i] = (struct pt_page){ .link = first, .state = PT_TAIL };
	/*
	 * Relaxed: the device learns the bus address only from what the caller publishes after
	 * this returns (a ring's release of its index), which orders these stores before it.
	 */
	uint64_t perm = vt_dma_access_for(dir);
	for (uint32_t i = 0; i < pages; i++)
		atomic_store_explicit((_Atomic uint64_t *)&m->entries[first + i],
				      (host + (uint64_t)i * PT_PAGE) | perm, memory_order_relaxed);
	return m->base + ((uint64_t)first << VT_AS_PAGE_SHIFT) + (p & PT_PAGE_MASK);
}

/*
 * The buffers from the first on that each lie inside one page of the last map's region while the
 * page at the cursor is free: mapped to that page, the one the search would find first, without
 * the search (a ring's buffers, nearly always). The DMA object's fields are held in locals (to
 * the compiler, a store to a record or an entry may change them). Returns how many it took.
 */
static unsigned int map_burst_quick(struct dma_pt *m, const struct iovec *bufs, unsigned int count,
				    enum vt_dma_dir dir, uint64_t *bus)
{
	const struct vt_shm_region *r = m->region;
	if (!r)
		return 0;
	const uint64_t hva = (uint64_t)(uintptr_t)r->hva, size = r->size, base = m->base;
	const uint64_t perm = vt_dma_access_for(dir);
	const uint32_t arena = m->arena;
	struct pt_page *page = m->page;
	uint64_t *lens = m->len;
	_Atomic uint64_t *entries = (_Atomic uint64_t *)m->entries;
	uint32_t c = m->cursor;
	unsigned int i;

	for (i = 0; i < count; i++) {
		uint64_t p = (uint64_t)(uintptr_t)bufs[i].iov_base, len = bufs[i].iov_len;
		uint64_t offset = p & PT_PAGE_MASK, start = p - offset;
		if (offset + len > PT_PAGE || !vt_dma_span_inside(hva, size, start, PT_PAGE) ||
		    page[c].state != PT_FREE)
			break;
		page[c] = (struct pt_page){
			.link = 1, .offset = (uint16_t)offset, .dir = (uint8_t)dir, .state = PT_LIVE
		};
		lens[c] = len;
		/* Relaxed, as map_at's. */
		atomic_store_explicit(&entries[c], start | perm, memory_order_relaxed);
		bus[i] = base + ((uint64_t)c << VT_AS_PAGE_SHIFT) + offset;
		c = c + 1 == arena ? 0 : c + 1;
	}
	m->cursor = c;
	return i;
}

/* Maps [ptr, ptr + len): coherent memory (@top) at the top of the table, the rest in the arena. */
static int map_locked(struct dma_pt *m, void *ptr, size_t len, enum vt_dma_dir dir, bool top,
		      uint64_t *bus)
{
	uint64_t p = (uint64_t)(uintptr_t)ptr, host;
	uint32_t pages, first;

	if (!top && map_burst_quick(m, &(struct iovec){ ptr, len }, 1, dir, bus) == 1)
		return 0;
	int ret = region_of_pages(m, p, len, &host, &pages);
	if (ret == 0 && pages > m->table_pages)
		ret = -ENOSPC;
	if (ret == 0)
		ret = find_pages(m, pages, top, &first);
	if (ret < 0)
		return ret;
	*bus = map_at(m, first, pages, host, p, len, dir);
	return 0;
}

/* map_locked under the lock, counted. */
static int map_one(struct dma_pt *m, void *ptr, size_t len, enum vt_dma_dir dir, bool top,
		   uint64_t *bus)
{
	bool locked = vt_dma_lock(&m->lock);
	int ret = map_locked(m, ptr, len, dir, top, bus);
	if (ret == 0)
		vt_dma_count_locked(&m->dma.stats.iotlb_updates, 1);
	vt_dma_unlock(&m->lock, locked);
	return ret;
}

static int pt_map(struct vt_dma *dma, void *ptr, size_t len, enum vt_dma_dir dir, uint64_t *bus)
{
	return map_one(to_pt(dma), ptr, len, dir, false, bus);
}

static unsigned int pt_map_burst(struct vt_dma *dma, const struct iovec *bufs, unsigned int count,
				 enum vt_dma_dir dir, uint64_t *bus, int *error)
{
	struct dma_pt *m = to_pt(dma);

	bool locked = vt_dma_lock(&m->lock);
	unsigned int done = map_burst_quick(m, bufs, count, dir, bus);
	for (; done < count; done++) {
		int ret =
		    map_locked(m, bufs[done].iov_base, bufs[done].iov_len, dir, false, &bus[done]);
		if (ret < 0) {
			*error = ret;
			break;
		}
	}
	vt_dma_count_locked(&m->dma.stats.iotlb_updates, done);
	vt_dma_unlock(&m->lock, locked);
	return done;
}

/*
 * The first page of the LIVE mapping that holds [bus, bus + len) with @dir: for @exact (unmap)
 * it must be the whole mapping. Returns it, or -ENOENT (no live mapping there) or -EINVAL (one
 * that does not match), logged.
 */
/*
 * find_live's refusal, logged: out of line, so that the unmap of every buffer saves no registers
 * for the log's arguments. @head: the mapping that does not match, for -EINVAL.
 */
static __attribute__((noinline, cold)) int64_t refused(const struct dma_pt *m, const char *op,
						       uint64_t bus, size_t len,
						       enum vt_dma_dir dir, uint32_t head,
						       int64_t err)
{
	if (err == -ENOENT) {
		vt_log(m->dma.log, VT_LOG_ERROR, "dma(%s): %s of 0x%llx: no live mapping there",
		       mode_name(m), op, (unsigned long long)bus);
		return err;
	}
	const struct pt_page *h = &m->page[head];
	vt_log(m->dma.log, VT_LOG_ERROR,
	       "dma(%s): %s of 0x%llx len %zu dir %d does not match the mapping of 0x%llx len %llu "
	       "dir %d",
	       mode_name(m), op, (unsigned long long)bus, len, (int)dir,
	       (unsigned long long)(m->base + ((uint64_t)head << VT_AS_PAGE_SHIFT) + h->offset),
	       (unsigned long long)m->len[head], (int)h->dir);
	return err;
}

/*
 * The first page of the LIVE mapping that holds [bus, bus + len) with @dir: for @exact (unmap)
 * it must be the whole mapping. Returns it, or -ENOENT (no live mapping there) or -EINVAL (one
 * that does not match), logged.
 */
static inline int64_t find_live(const struct dma_pt *m, const char *op, uint64_t bus, size_t len,
				enum vt_dma_dir dir, bool exact)
{
	/* Below the table, rel wraps to a page far past its end. */
	uint64_t rel = bus - m->base, page = rel >> VT_AS_PAGE_SHIFT;
	if (page >= m->table_pages)
		return refused(m, op, bus, len, dir, 0, -ENOENT);
	/* The first page of a live mapping, or a later page of one: its first page's index. */
	uint32_t head = (uint32_t)page;
	if (m->page[page].state != PT_LIVE) {
		head = m->page[page].link;
		if (m->page[page].state != PT_TAIL || m->page[head].state != PT_LIVE)
			return refused(m, op, bus, len, dir, 0, -ENOENT);
	}
	const struct pt_page *h = &m->page[head];
	uint64_t start = ((uint64_t)head << VT_AS_PAGE_SHIFT) + h->offset, have = m->len[head];
	bool fits = exact ? rel == start && len == have
			  : rel >= start && len <= have && rel - start <= have - len;
	if (!fits || h->dir != dir)
		return refused(m, op, bus, len, dir, head, -EINVAL);
	return head;
}

static int unmap_locked(struct dma_pt *m, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	int64_t head = find_live(m, "unmap", bus, len, dir, true);
	if (head < 0)
		return (int)head;
	m->page[head].state = PT_RETIRING;
	m->pending[m->pending_count++] = (uint32_t)head;
	/* Strict outside a batch: the device loses the mapping before unmap returns. */
	if ((m->dma.mode == VT_DMA_IOMMU_STRICT && m->lock.batch_depth == 0) ||
	    m->pending_count == m->lazy_batch)
		flush_locked(m);
	return 0;
}

static int pt_unmap(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	struct dma_pt *m = to_pt(dma);

	bool locked = vt_dma_lock(&m->lock);
	int ret = unmap_locked(m, bus, len, dir);
	vt_dma_unlock(&m->lock, locked);
	return ret;
}

/* The IOMMU keeps both sides coherent: a sync only checks that it names a live mapping. */
static int pt_sync(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	struct dma_pt *m = to_pt(dma);

	bool locked = vt_dma_lock(&m->lock);
	int64_t head = find_live(m, "sync", bus, len, dir, false);
	vt_dma_unlock(&m->lock, locked);
	return head < 0 ? (int)head : 0;
}

static int pt_alloc_coherent(struct vt_dma *dma, size_t size, void **cpu, uint64_t *bus)
{
	void *p;
	/* Page aligned: the pages around it are its own, never another allocation's. */
	int ret = vt_shm_alloc(dma->shm, (size + PT_PAGE_MASK) & ~PT_PAGE_MASK, PT_PAGE, &p);
	if (ret < 0) {
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(%s): no room in shared memory for %zu coherent bytes",
		       vt_dma_mode_name(dma->mode), size);
		return ret;
	}
	memset(p, 0, size);
	ret = map_one(to_pt(dma), p, size, VT_DMA_BIDIRECTIONAL, true, bus);
	if (ret < 0) {
		vt_shm_release(dma->shm, p, (size + PT_PAGE_MASK) & ~PT_PAGE_MASK);
		return ret;
	}
	*cpu = p;
	return 0;
}

static void pt_free_coherent(struct vt_dma *dma, size_t size, void *cpu, uint64_t bus)
{
	struct dma_pt *m = to_pt(dma);

	bool locked = vt_dma_lock(&m->lock);
	int ret = unmap_locked(m, bus, size, VT_DMA_BIDIRECTIONAL);
	/* Back in the shared pool it may become anything: no lazy entry may reach it. */
	if (ret == 0)
		flush_locked(m);
	vt_dma_unlock(&m->lock, locked);
	if (ret == 0)
		vt_shm_release(dma->shm, cpu, (size + PT_PAGE_MASK) & ~PT_PAGE_MASK);
}

static int pt_flush(struct vt_dma *dma)
{
	struct dma_pt *m = to_pt(dma);

	bool locked = vt_dma_lock(&m->lock);
	flush_locked(m);
	vt_dma_unlock(&m->lock, locked);
	return 0;
}

static void pt_batch_begin(struct vt_dma *dma)
{
	vt_dma_lock_batch_begin(&to_pt(dma)->lock);
}

static int pt_batch_end(struct vt_dma *dma)
{
	struct dma_pt *m = to_pt(dma);

	int closing = vt_dma_lock_batch_closing(&m->lock);
	if (closing < 0)
		return vt_dma_batch_end_unopened(dma);
	if (!closing)
		return 0;
	/* Strict: nothing unmapped in the batch is reachable once it ends. */
	if (m->dma.mode == VT_DMA_IOMMU_STRICT)
		flush_locked(m);
	vt_dma_lock_batch_release(&m->lock);
	return 0;
}

static void pt_destroy(struct vt_dma *dma)
{
	struct dma_pt *m = to_pt(dma);
	unsigned int left = 0;

	for (uint32_t p = 0; p < m->table_pages; p++)
		left += m->page[p].state == PT_LIVE;
	if (left)
		vt_log(dma->log, VT_LOG_WARN, "dma(%s): freed with %u mappings still live",
		       mode_name(m), left);
	munmap(m->entries, (size_t)m->table_pages * sizeof(uint64_t));
	free(m->page);
	free(m->len);
	free(m->pending);
	vt_dma_lock_destroy(&m->lock);
	free(m);
}

static struct vt_as pt_device_as(struct vt_dma *dma);

static const struct vt_dma_ops pt_ops = {
	.map = pt_map,
	.map_burst = pt_map_burst,
	.unmap = pt_unmap,
	.sync_for_device = pt_sync,
	.sync_for_cpu = pt_sync,
	.alloc_coherent = pt_alloc_coherent,
	.free_coherent = pt_free_coherent,
	.flush = pt_flush,
	.batch_begin = pt_batch_begin,
	.batch_end = pt_batch_end,
	.device_as = pt_device_as,
	.destroy = pt_destroy,
};

/* ------------------------------------------------------------------ the device's side */

/* The host address of @addr and the permission of its page, or 0 when it is not mapped. */
static uint64_t walk(const struct dma_pt *m, uint64_t addr, unsigned int *perm)
{
	uint64_t e = vt_as_page_entry(&m->as, addr);
	*perm = (unsigned int)(e & VT_AS_PTE_PERM_MASK);
	return e ? (e & ~PT_PAGE_MASK) + (addr & PT_PAGE_MASK) : 0;
}

static int as_translate(void *impl, uint64_t addr, uint64_t len, unsigned int access,
			struct iovec *iov, unsigned int iov_max, unsigned int *iov_count,
			struct vt_as_fault *fault)
{
	const struct dma_pt *m = impl;
	unsigned int n = 0;

	*iov_count = 0;
	if (access == 0 || (access & ~(unsigned int)VT_ACCESS_RW))
		return -EINVAL;
	if (len == 0)
		return 0;
	if (addr + (len - 1) < addr)
		return -EOVERFLOW;
	for (uint64_t a = addr, left = len; left > 0;) {
		unsigned int perm;
		uint64_t host = walk(m, a, &perm);
		if (!host || (perm & access) != access) {
			if (fault)
				*fault = (struct vt_as_fault){ a, access, addr + (len - 1) };
			return host ? -EACCES : -EFAULT;
		}
		uint64_t chunk = PT_PAGE - (a & PT_PAGE_MASK);
		if (chunk > left)
			chunk = left;
		struct iovec *last = n ? &iov[n - 1] : NULL;
		if (last && (uint64_t)(uintptr_t)last->iov_base + last->iov_len == host) {
			last->iov_len += chunk;
		} else {
			if (n == iov_max) {
				*iov_count = n;
				return -ENOBUFS;
			}
			iov[n++] = (struct iovec){ (void *)(uintptr_t)host, chunk };
		}
		a += chunk;
		left -= chunk;
	}
	*iov_count = n;
	return 0;
}

static uint64_t as_generation(const void *impl)
{
	const struct dma_pt *m = impl;
	return atomic_load_explicit(&m->generation, memory_order_acquire);
}

/* The run of pages around @addr mapped contiguously on the host with its permission. */
static int as_extent(void *impl, uint64_t addr, struct vt_as_extent *extent, uint64_t *generation)
{
	const struct dma_pt *m = impl;
	unsigned int perm, next_perm;

	*generation = atomic_load_explicit(&m->generation, memory_order_acquire);
	uint64_t page = addr & ~PT_PAGE_MASK;
	uint64_t host = walk(m, page, &perm);
	if (!host)
		return -EFAULT;
	uint64_t first = page, first_host = host, last = page + PT_PAGE_MASK;
	while (first >= PT_PAGE && walk(m, first - PT_PAGE, &next_perm) == first_host - PT_PAGE &&
	       next_perm == perm && first_host >= PT_PAGE) {
		first -= PT_PAGE;
		first_host -= PT_PAGE;
	}
	while (last != UINT64_MAX &&
	       walk(m, last + 1, &next_perm) == first_host + (last + 1 - first) &&
	       next_perm == perm)
		last += PT_PAGE;
	*extent = (struct vt_as_extent){ first, last, first_host, perm };
	return 0;
}

/*
 * Whether the pages of [addr, addr + len) kept their translations since generation @since: a
 * page's entry changes only when a flush clears it (a map fills only cleared entries), and the
 * flush log says which pages each of the last flushes cleared. A ring's areas, at the top of the
 * table, then survive every burst's flush, which clears buffers at the bottom.
 */
static int as_unchanged_since(const void *impl, uint64_t since, uint64_t addr, uint64_t len,
			      uint64_t *now)
{
	const struct dma_pt *m = impl;

	/* Acquire: the records of the flushes up to *now are read below. */
	*now = atomic_load_explicit(&m->generation, memory_order_acquire);
	if (*now == since)
		return 0;
	uint64_t rel = addr - m->base;
	if (*now - since >= PT_FLUSH_LOG || len == 0 || addr < m->base || addr + (len - 1) < addr ||
	    (rel + (len - 1)) >> VT_AS_PAGE_SHIFT >= m->table_pages)
		return -ESTALE;
	uint64_t first = rel >> VT_AS_PAGE_SHIFT, last = (rel + (len - 1)) >> VT_AS_PAGE_SHIFT;
	for (uint64_t g = since + 1; g != *now + 1; g++) {
		/* Acquire: a record a later flush wrote brings that flush's generation with it. */
		uint64_t r =
		    atomic_load_explicit(&m->flush_log[g % PT_FLUSH_LOG], memory_order_acquire);
		if (r >> 32 <= last && first <= (uint32_t)r)
			return -ESTALE;
	}
	/*
	 * Each slot read was written before *now was published, so it is g's record or a later
	 * flush's, PT_FLUSH_LOG on at least; acquired, that one brought the generation before it,
	 * which shows here.
	 */
	if (atomic_load_explicit(&m->generation, memory_order_relaxed) - since >= PT_FLUSH_LOG)
		return -ESTALE;
	return 0;
}

/* An unmapped IOVA is the driver's bug, as a fault of a hardware IOMMU: not retryable. */
static const struct vt_as_ops pt_as_ops = {
	.flags = 0,
	.translate = as_translate,
	.generation = as_generation,
	.extent = as_extent,
	.unchanged_since = as_unchanged_since,
};

static struct vt_as pt_device_as(struct vt_dma *dma)
{
	return to_pt(dma)->as;
}

/* ------------------------------------------------------------------ creation */

int vt_dma_iommu_pt_create(const struct vt_dma_params *params, struct vt_dma **out)
{
	uint64_t base = params->iova_base ? params->iova_base : PT_DEFAULT_BASE;
	uint64_t pages = params->iova_size ? params->iova_size / PT_PAGE : PT_DEFAULT_PAGES;
	const char *name = vt_dma_mode_name(params->mode);

	if ((base & PT_PAGE_MASK) || pages == 0 || pages > PT_MAX_PAGES ||
	    base + pages * PT_PAGE - 1 < base) {
		vt_log(params->log, VT_LOG_ERROR,
		       "dma(%s): page table IOVA space [0x%llx, +0x%llx) must be page aligned, "
		       "non-empty, at most %u pages and not wrap",
		       name, (unsigned long long)base, (unsigned long long)params->iova_size,
		       PT_MAX_PAGES);
		return -EINVAL;
	}
	struct dma_pt *m = aligned_alloc(64, sizeof(*m));
	if (!m)
		return -ENOMEM;
	memset(m, 0, sizeof(*m));
	m->base = base;
	m->table_pages = (uint32_t)pages;
	m->arena = m->table_pages < PT_FIRST_ARENA ? m->table_pages : PT_FIRST_ARENA;
	m->lazy_batch = params->lazy_batch ? params->lazy_batch : PT_LAZY_DEFAULT_BATCH;
	if (m->lazy_batch > m->table_pages)
		m->lazy_batch = m->table_pages;
	/* Anonymous and page aligned: untouched entries cost nothing and lines do not straddle. */
	void *entries = mmap(NULL, (size_t)pages * sizeof(uint64_t), PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	m->entries = entries == MAP_FAILED ? NULL : entries;
	m->page = calloc(pages, sizeof(*m->page));
	m->len = calloc(pages, sizeof(*m->len));
	m->pending = calloc(m->lazy_batch, sizeof(*m->pending));
	if (!m->entries || !m->page || !m->len || !m->pending || vt_dma_lock_init(&m->lock) != 0) {
		if (m->entries)
			munmap(m->entries, (size_t)pages * sizeof(uint64_t));
		free(m->page);
		free(m->len);
		free(m->pending);
		free(m);
		return -ENOMEM;
	}
	vt_dma_init_common(&m->dma, &pt_ops, params);
	m->view = (struct vt_as_page_table){ .entries = m->entries,
					     .allocated = m->table_pages,
					     .pages = m->table_pages,
					     .base = base };
	m->as = (struct vt_as){ .ops = &pt_as_ops,
				.impl = m,
				.generation_word = &m->generation,
				.page_table = &m->view };
	*out = &m->dma;
	return 0;
}
