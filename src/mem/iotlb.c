/* SPDX-License-Identifier: MIT */
/*
 * The device-side IOTLB: IOVA ranges kept sorted in one fixed-capacity array split in three, a
 * dense array of start addresses that lookups search, a parallel array with where each entry ends
 * and what it maps to, and one of permissions, plus an index of every 16th start (and every 16th of
 * those, and so on) so that a lookup reads few, mostly cached, lines at 65,536 entries as at 16;
 * and in front of it a page table (iotlb_pages.h) for the entries that map one whole page. A
 * sequence lock lets data-path threads translate without writing any shared line while the control
 * path updates and invalidates.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <virtue/iotlb.h>

#include "mem/dma_lock.h"
#include "mem/iotlb_pages.h"
#include "util/prefetch_write.h"

#define IOTLB_CACHELINE 64
#define NO_ENTRY	UINT_MAX

/*
 * Keys per block: 16 keys are two cache lines. Each index level holds the first key of every
 * block of the level below, so a lookup reads one block per level, the upper levels (a 16th, a
 * 256th... of the table) stay in cache, and a level is added only when the table grows 16 times:
 * 3 index levels at the default 65,536 entries, 5 at the most.
 */
#define BLOCK_SHIFT  4
#define BLOCK	     (1u << BLOCK_SHIFT)
#define INDEX_LEVELS 5
/* Key of the padding after the last key of a level; a real entry may start there too. */
#define PAD_KEY UINT64_MAX

/*
 * Permission of a dead entry: its bytes are unmapped, but the entry keeps its place in the arrays
 * so that mapping the same range again (the DMA API reusing an IOVA, the common unmap + map pair)
 * writes its host address and permission in place, outside a write section (fill_hole), instead
 * of moving every entry above it twice. Translations treat a dead entry as a hole; the writer drops
 * dead entries whenever an operation cuts through them and compacts them away before it would have
 * to evict or refuse for room.
 */
#define DEAD 0

/* Generation changes remembered with the range they touched. */
#define CHANGE_LOG 16

/*
 * Sequence lock. Readers (translate, lookup) take no lock: they note the sequence, search, and
 * start again if it changed meanwhile or was odd (a writer at work). Writers serialize on a mutex
 * and make the sequence odd around their changes, but for those that move nothing: filling a
 * dead entry (fill_hole), which publishes the entry's permission with release instead, readers
 * loading it first with acquire; and killing whole entries (vt_iotlb_invalidate), whose DEAD
 * permissions and change log slot (log_change) are stored before a write section that only
 * publishes the generation: a reader that sees DEAD misses, as after the invalidation. The fill
 * and the log slot begin with a release fence, and the DEAD stores follow the log slot's, so
 * that a reader that sees any of these stores also sees every sequence change before it, made
 * on whichever writer thread (the writer mutex passes between threads), and retries. So a reader
 * may read the table while a writer changes it: every such access is atomic (relaxed but for that
 * permission; the sequence and the fences order them), and a reader clamps every count and index it
 * reads to what was allocated, bounds every loop, and only does arithmetic with host addresses, so
 * that a torn table costs it a retry and nothing else. The arrays are plain and accessed with the
 * builtins under <stdatomic.h>'s explicit functions: _Atomic arrays would make the writer's own
 * reads sequentially consistent.
 */
#define LOAD(p)	    __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

/*
 * Where an entry ends and what it maps to; its start lives in the array that is searched, its
 * permission in an array of its own (see vt_iotlb.perm). Two words: four slots to a cache line.
 */
struct iotlb_slot {
	uint64_t last; /* inclusive, so that an entry can end at 2^64 - 1 */
	uint64_t hva;  /* host address of the entry's first byte */
};

/* An entry but for its start, as the writer copies and moves it: its slot and its permission. */
struct iotlb_value {
	uint64_t last;
	uint64_t hva;
	uint8_t perm;
};

struct vt_iotlb {
	/*
	 * Read by every translation; written (atomically) inside a write section, but for the
	 * change log slot of the next generation (log_change).
	 */
	_Atomic unsigned int seq; /* odd while a writer changes the table */
	unsigned int count;	  /* dead entries included */
	unsigned int levels;
	/*
	 * index[0][b] = start[b * BLOCK], index[k][b] = index[k - 1][b * BLOCK]; keys[k] in use
	 * at level k, then padding to the end of the block. Levels 0 to levels - 1 are current,
	 * the highest of them one block.
	 */
	unsigned int keys[INDEX_LEVELS];
	_Atomic uint64_t generation;
	/*
	 * What the last CHANGE_LOG - 1 generation changes touched, at [generation % CHANGE_LOG],
	 * and the remaining slot for the next one (log_change): lets a cached pointer outside
	 * every changed range survive them (unchanged_since).
	 */
	struct iotlb_change {
		uint64_t generation;
		uint64_t first, last;
	} changes[CHANGE_LOG];

	/* Fixed at creation: the arrays are never reallocated, so a reader's clamps stay true. */
	uint64_t *start; /* ascending; start[i] > slot[i - 1].last (no overlap); then padding */
	struct iotlb_slot *slot;
	/*
	 * perm[i]: entry i's VT_ACCESS_* bits, or DEAD. A byte per entry, apart from the slots:
	 * an invalidation stores DEAD into the entries the device just used, whose lines it must
	 * take back from the device's CPU; a DMA burst's entries are next to each other, so their
	 * permissions share a line or two where their slots would span a dozen. (Lazy DMA rings
	 * ran 8% faster for it; strict ones the same: their maps now share the lines the device
	 * reads the permissions of the previous burst from.)
	 */
	uint8_t *perm;
	uint64_t *index[INDEX_LEVELS];
	/*
	 * The page table, pt.allocated entries (0: none), at pte (pt.entries, writable). An entry
	 * and the sorted array never both map a byte: an update fills a page's entry only when the
	 * sorted array maps none of its bytes, and an operation on part of a page moves its entry
	 * to the sorted array first (pte_demote). Dead sorted entries may still lie under a page's
	 * entry: a reader tries the page first.
	 *
	 * The window (pt.base, pt.pages) is 0 pages until the first update of a whole page places
	 * it (where that update falls, the window aligned to its size), then fixed. pt is what the
	 * address space offers its readers to walk (vt_as_page_entry): on this read-only line, not
	 * on the sequence's, so a walk reads no line a writer stores to but the entry's own.
	 */
	_Alignas(IOTLB_CACHELINE) uint64_t *pte;
	struct vt_as_page_table pt;
	bool prefetch_for_write; /* cpu_prefetches_for_write, asked once */
	unsigned int capacity;
	unsigned int allocated_levels;
	/* Blocks of the level below index level k (of start for k = 0): the most keys[k] can be. */
	unsigned int max_keys[INDEX_LEVELS];

	/*
	 * Control-path state, written only by the writer holding the mutex (or its batch). On
	 * lines of its own: every invalidation writes some of it, and the device's next
	 * translation would otherwise miss on the line of the page table's window (above) it
	 * shared.
	 */
	_Alignas(IOTLB_CACHELINE) enum vt_iotlb_full_policy full_policy;
	uint64_t rng; /* picks eviction victims */
	uint64_t evictions;
	uint64_t invalidations;
	unsigned int dead;     /* entries of count that are DEAD */
	unsigned int pte_live; /* entries of the page table */
	/* Every live page table entry is in [pte_lo, pte_hi]: what a scan need look at. */
	unsigned int pte_lo, pte_hi;
	/* Where the last change was: DMA mappings come and go near each other (see find_overlap).
	 */
	unsigned int writer_hint;
	bool full_reported; /* one log line per episode of fullness, not one per update */
	const struct vt_log *log;

	/*
	 * Index of the entry that answered last. A hint only: always re-checked, so a stale value
	 * after an update costs one search. Relaxed atomic because translations on several threads
	 * share it; stored only when it changes, and on a line of its own so that those stores do
	 * not take the read-mostly line above from every other reader.
	 */
	_Alignas(IOTLB_CACHELINE) _Atomic unsigned int hint;
	/*
	 * Taken by writers only; keep it off the lines readers read. A writer batch
	 * (vt_iotlb_batch_begin) holds it for its thread, whose writes then skip it.
	 */
	_Alignas(IOTLB_CACHELINE) struct vt_dma_lock writer;
	/* Bumped by concurrent translations, relaxed: statistics order nothing. */
	_Alignas(IOTLB_CACHELINE) _Atomic uint64_t hits;
	_Atomic uint64_t misses;
	_Atomic uint64_t denied;
};

_Static_assert(1ull << BLOCK_SHIFT * (INDEX_LEVELS + 1) >= VT_IOTLB_MAX_ENTRIES,
	       "the highest index level of a full table must fit in one block");
_Static_assert(IOTLB_CACHELINE % BLOCK == 0,
	       "a block's permissions must lie in one line, which upper_bound prefetches");
_Static_assert(VT_ACCESS_RW <= UINT8_MAX, "a permission must fit its byte");
_Static_assert(IOTLB_PAGE_SHIFT == VT_AS_PAGE_SHIFT && IOTLB_PTE_PERM_MASK == VT_AS_PTE_PERM_MASK,
	       "the page table is what struct vt_as_page_table says it is");
_Static_assert(BLOCK * sizeof(struct iotlb_slot) % IOTLB_CACHELINE == 0,
	       "a block's slots must be whole cache lines");

/*
 * The entries of [first, end) hold bytes of the range an update or invalidation covers; the first
 * may keep bytes below the range (head) and the last bytes above it (tail), both of one entry
 * when the range falls inside it, which is why a split needs a slot more than there was.
 */
struct overlap {
	unsigned int first;
	unsigned int end;
	bool head;
	bool tail;
};

/* What to pass to writer_unlock: false inside this thread's own writer batch. */
static bool writer_lock(struct vt_iotlb *t)
{
	return vt_dma_lock(&t->writer);
}

static void writer_unlock(struct vt_iotlb *t, bool locked)
{
	vt_dma_unlock(&t->writer, locked);
}

/* Under the writer mutex: from here to write_end, readers that overlap retry. */
static void write_begin(struct vt_iotlb *t)
{
	unsigned int seq = atomic_load_explicit(&t->seq, memory_order_relaxed);

	atomic_store_explicit(&t->seq, seq + 1, memory_order_relaxed);
	/*
	 * Orders the odd sequence before the table stores that follow: a reader that sees one of
	 * them (its acquire fence in read_retry) then sees the sequence changed.
	 */
	atomic_thread_fence(memory_order_release);
}

static void write_end(struct vt_iotlb *t)
{
	unsigned int seq = atomic_load_explicit(&t->seq, memory_order_relaxed);

	/* Release: publishes the table stores above to readers that load it (read_begin). */
	atomic_store_explicit(&t->seq, seq + 1, memory_order_release);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/* The sequence of a table no writer is changing; waits out one that is. */
static unsigned int read_begin(const struct vt_iotlb *t)
{
	unsigned int spins = 0, seq;

	/* Acquire: pairs with the release in write_end; the table read next is at least as new. */
	while ((seq = atomic_load_explicit(&t->seq, memory_order_acquire)) & 1) {
		/* A write section is short; a writer preempted in one needs the CPU back. */
		if (++spins % 1024 == 0)
			sched_yield();
		else
			cpu_relax();
	}
	return seq;
}

/* Whether what was read since read_begin returned @seq may be torn, and must be read again. */
static bool read_retry(const struct vt_iotlb *t, unsigned int seq)
{
	/*
	 * Orders the table loads above before the sequence load below: a load that saw a writer's
	 * store synchronizes with that writer's release fence (write_begin), so the odd sequence is
	 * seen here.
	 */
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&t->seq, memory_order_relaxed) != seq;
}

static bool valid_access(unsigned int access)
{
	return access != 0 && (access & ~(unsigned int)VT_ACCESS_RW) == 0;
}

/*
 * Records that the next generation changes the translations of [first, last], in the log slot
 * of that generation. Allowed before its write section: unchanged_since reads only the slots of
 * the last CHANGE_LOG - 1 generations up to the one it read, so not this one unless its
 * generation is older; such a reader is torn, and retries on the sequence those newer
 * generations moved.
 */
static void log_change(struct vt_iotlb *t, uint64_t first, uint64_t last)
{
	uint64_t gen = atomic_load_explicit(&t->generation, memory_order_relaxed) + 1;
	struct iotlb_change *c = &t->changes[gen % CHANGE_LOG];

	/*
	 * Release: the last sequence change may have been made on another writer thread, whose
	 * stores reach this one through the writer mutex only. A reader that loads a slot word
	 * stored below synchronizes with this fence (its acquire fence in read_retry) and sees
	 * that change, so it retries instead of trusting a torn slot.
	 */
	atomic_thread_fence(memory_order_release);
	STORE(&c->generation, gen);
	STORE(&c->first, first);
	STORE(&c->last, last);
}

/* Inside a write section: the generation log_change recorded is the current one. */
static void publish_generation(struct vt_iotlb *t)
{
	uint64_t gen = atomic_load_explicit(&t->generation, memory_order_relaxed) + 1;

	/*
	 * Release: publishes the table change made before it (in the write section, or before
	 * it for whole entries killed) to whoever reads the generation (acquire,
	 * vt_iotlb_generation) to validate a cached host pointer.
	 * A plain store, not a read-modify-write: only writers change it, under the writer mutex.
	 */
	atomic_store_explicit(&t->generation, gen, memory_order_release);
}

/* Inside a write section: the translations of [first, last] changed. */
static void bump_generation(struct vt_iotlb *t, uint64_t first, uint64_t last)
{
	log_change(t, first, last);
	publish_generation(t);
}

/*
 * xorshift64*: victims only need to be spread over the table, so that no access pattern keeps
 * evicting the same hot entry; a fixed seed keeps runs reproducible.
 */
static uint64_t next_random(struct vt_iotlb *t)
{
	uint64_t x = t->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	t->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/*
 * How many of the keys of the block at @keys are at or below @addr: as they ascend, also the
 * position of the first one above. Sixteen independent comparisons rather than the four dependent
 * steps of a binary search: the loads issue together, and the sum has no branch to mispredict
 * (a search branching on random addresses mispredicts every other step).
 */
static inline unsigned int count_at_or_below(const uint64_t *keys, uint64_t addr)
{
	unsigned int n = 0;

	/* Unrolled: a loop would spend as many instructions on its counter as on the keys. */
#pragma GCC unroll 16
	for (unsigned int i = 0; i < BLOCK; i++)
		n += LOAD(&keys[i]) <= addr;
	return n;
}

/* @n, or @max if that is less. */
static inline unsigned int clamp(unsigned int n, unsigned int max)
{
	return n < max ? n : max;
}

/*
 * Index of the first entry whose start is above @addr (0..@count). From the top level (one
 * block) down, the last key at or below @addr names the block to count in one level below (block
 * 0 when there is none, where the count then stays 0), so the trip count depends on the table
 * size alone. Padding keys sort after every real one and are counted only when @addr is PAD_KEY,
 * which the clamps to the number of keys make harmless. The clamps to what was allocated keep a
 * reader racing a writer inside the arrays: the level count, and each block, is then in range.
 */
static unsigned int upper_bound(const struct vt_iotlb *t, uint64_t addr, unsigned int count)
{
	unsigned int b = 0, n;

	for (unsigned int k = clamp(LOAD(&t->levels), t->allocated_levels); k-- > 0;) {
		n = (b << BLOCK_SHIFT) + count_at_or_below(&t->index[k][b << BLOCK_SHIFT], addr);
		n = clamp(n, clamp(LOAD(&t->keys[k]), t->max_keys[k]));
		b = n - (n != 0);
	}
	/*
	 * The entry is in this block, and its slot and permission are read right after the
	 * count: fetch the block's slots (whole cache lines, see vt_iotlb_new) and permissions
	 * alongside its starts rather than miss on them afterwards.
	 */
	const char *slots = (const char *)&t->slot[b << BLOCK_SHIFT];
	for (size_t off = 0; off < BLOCK * sizeof(t->slot[0]); off += IOTLB_CACHELINE)
		__builtin_prefetch(slots + off);
	__builtin_prefetch(&t->perm[b << BLOCK_SHIFT]);
	n = (b << BLOCK_SHIFT) + count_at_or_below(&t->start[b << BLOCK_SHIFT], addr);
	return clamp(n, count);
}

/*
 * Pads @keys[@n..] up to the end of its block (of block 0 when @n is 0), as far as a search of
 * the level reads.
 */
static void pad_level(uint64_t *keys, unsigned int n)
{
	unsigned int end = n ? (n + BLOCK - 1) & ~(BLOCK - 1) : BLOCK;

	for (unsigned int i = n; i < end; i++)
		STORE(&keys[i], PAD_KEY);
}

/*
 * Makes the index and the padding right again after the entries from @from on changed: each
 * level from the block that holds the first changed key of the level below, or whole when it was
 * not in use (its keys are from some earlier table).
 */
static void reindex(struct vt_iotlb *t, unsigned int from)
{
	const uint64_t *below = t->start;
	unsigned int n = t->count, k;

	pad_level(t->start, n);
	for (k = 0; n > BLOCK; k++) {
		n = (n + BLOCK - 1) >> BLOCK_SHIFT;
		from = k < t->levels ? from >> BLOCK_SHIFT : 0;
		for (unsigned int b = from; b < n; b++)
			STORE(&t->index[k][b], below[b << BLOCK_SHIFT]);
		pad_level(t->index[k], n);
		STORE(&t->keys[k], n);
		below = t->index[k];
	}
	STORE(&t->levels, k);
}

/*
 * Remembers entry @i as the one that answered last. Stored only when it changes: an unchanged
 * hint keeps its line shared.
 */
static inline void remember_hint(const struct vt_iotlb *t, unsigned int i)
{
	struct vt_iotlb *w = (struct vt_iotlb *)t; /* the hint is the readers' own field */

	if (i != atomic_load_explicit(&w->hint, memory_order_relaxed))
		atomic_store_explicit(&w->hint, i, memory_order_relaxed);
}

/* Whether entry @i of a table of @count entries holds @addr. */
static inline bool entry_holds(const struct vt_iotlb *t, unsigned int i, unsigned int count,
			       uint64_t addr)
{
	return i < count && LOAD(&t->start[i]) <= addr && addr <= LOAD(&t->slot[i].last);
}

/*
 * The entry holding @addr in a table of @count entries (clamped by the caller), or NO_ENTRY.
 * The entry that answered last is tried first, then its neighbours: a DMA API hands out IOVAs
 * of a batch next to each other, and reuses the blocks it freed last first, so a device walking
 * a batch in order moves one entry up or down the table at a time.
 */
static unsigned int find_entry(const struct vt_iotlb *t, uint64_t addr, unsigned int hint,
			       unsigned int count)
{
	if (entry_holds(t, hint, count, addr))
		return hint;
	/* Down first: IOVA allocators hand out top-down (Linux's, and virtue's reusing blocks). */
	if (hint > 0 && entry_holds(t, hint - 1, count, addr))
		return hint - 1;
	if (entry_holds(t, hint + 1, count, addr))
		return hint + 1;
	unsigned int i = upper_bound(t, addr, count);
	if (i == 0 || addr > LOAD(&t->slot[i - 1].last))
		return NO_ENTRY;
	return i - 1;
}

/*
 * upper_bound for a writer: a DMA API maps and unmaps ranges next to the ones it touched last,
 * so the entries around the last change are tried first. Exact either way: a position is taken
 * only when the keys on both sides of it say so.
 */
static unsigned int writer_upper_bound(const struct vt_iotlb *t, uint64_t addr)
{
	unsigned int n = t->count, h = t->writer_hint;

	for (unsigned int i = h ? h - 1 : 0; i <= n && i <= h + 2; i++)
		if ((i == 0 || t->start[i - 1] <= addr) && (i == n || t->start[i] > addr))
			return i;
	return upper_bound(t, addr, n);
}

/* Under the writer mutex, so the table is stable and read plainly from here on. */
static struct overlap find_overlap(struct vt_iotlb *t, uint64_t iova, uint64_t last)
{
	struct overlap o;
	unsigned int i = writer_upper_bound(t, iova), end;

	/* The entry starting at or below @iova overlaps only if it reaches it. */
	if (i > 0 && t->slot[i - 1].last >= iova)
		i--;
	o.first = i;
	/*
	 * The end: the first entry starting above @last, at most a few entries on (a DMA mapping
	 * is one entry), else searched for.
	 */
	for (end = i; end < t->count && t->start[end] <= last; end++) {
		if (end - i == 8) {
			end = upper_bound(t, last, t->count); /* >= i: last >= iova */
			break;
		}
	}
	o.end = end;
	t->writer_hint = end;
	/* What is left of a dead entry outside the range is not kept: its bytes are unmapped. */
	o.head = o.first < o.end && t->start[o.first] < iova && t->perm[o.first] != DEAD;
	o.tail = o.first < o.end && t->slot[o.end - 1].last > last && t->perm[o.end - 1] != DEAD;
	return o;
}

/*
 * The entry of exactly [iova, last] when it is one of the few around the last change, else
 * NO_ENTRY: a DMA API maps again the blocks it just unmapped (dead entries, see DEAD), so an
 * update usually rewrites one of them, and is then spared find_overlap's search.
 */
static unsigned int same_range_near_hint(const struct vt_iotlb *t, uint64_t iova, uint64_t last)
{
	unsigned int h = t->writer_hint, first = h > 2 ? h - 2 : 0;
	unsigned int end = h + 2 < t->count ? h + 2 : t->count;

	for (unsigned int i = first; i < end; i++)
		if (t->start[i] == iova && t->slot[i].last == last)
			return i;
	return NO_ENTRY;
}

/* Whether some entry of @o is mapped (not DEAD). */
static bool overlap_mapped(const struct vt_iotlb *t, const struct overlap *o)
{
	for (unsigned int i = o->first; i < o->end; i++)
		if (t->perm[i] != DEAD)
			return true;
	return false;
}

/* The bytes of a page table of @pages entries, as mapped: whole lines. */
static size_t pte_bytes(unsigned int pages)
{
	return ((size_t)pages * sizeof(uint64_t) + IOTLB_CACHELINE - 1) &
	       ~(size_t)(IOTLB_CACHELINE - 1);
}

static void free_arrays(struct vt_iotlb *t)
{
	free(t->start);
	free(t->slot);
	free(t->perm);
	if (t->pte)
		munmap(t->pte, pte_bytes(t->pt.allocated));
	for (unsigned int k = 0; k < INDEX_LEVELS; k++)
		free(t->index[k]);
}

int vt_iotlb_new(const struct vt_iotlb_params *params, struct vt_iotlb **out)
{
	struct vt_iotlb_params p = params ? *params : (struct vt_iotlb_params){ 0 };
	struct vt_iotlb *t;
	int ret;

	*out = NULL;
	if (p.max_entries == 0)
		p.max_entries = VT_IOTLB_DEFAULT_MAX_ENTRIES;
	if (p.page_table_pages == 0)
		p.page_table_pages = VT_IOTLB_DEFAULT_PAGE_TABLE_PAGES;
	else if (p.page_table_pages == VT_IOTLB_NO_PAGE_TABLE)
		p.page_table_pages = 0;
	else if (p.page_table_pages > VT_IOTLB_MAX_PAGE_TABLE_PAGES ||
		 (p.page_table_pages & (p.page_table_pages - 1)))
		return -EINVAL;
	if (p.max_entries > VT_IOTLB_MAX_ENTRIES ||
	    (p.full_policy != VT_IOTLB_FULL_REFUSE && p.full_policy != VT_IOTLB_FULL_EVICT))
		return -EINVAL;

	/* Rounded up to the alignment, as aligned_alloc asks; the struct's size already is. */
	t = aligned_alloc(IOTLB_CACHELINE, sizeof(*t));
	if (!t)
		return -ENOMEM;
	memset(t, 0, sizeof(*t));
	/*
	 * All the room there will ever be, so that update and translate never allocate. Whole
	 * blocks, each on cache lines of its own: the start keys and index keys of a block are two
	 * lines, its slots the lines that upper_bound prefetches; its 16 permission bytes, which
	 * upper_bound prefetches too, a quarter of a line.
	 */
	size_t keys = (p.max_entries + BLOCK - 1) & ~(size_t)(BLOCK - 1);
	t->start = aligned_alloc(IOTLB_CACHELINE, keys * sizeof(t->start[0]));
	t->slot = aligned_alloc(IOTLB_CACHELINE, keys * sizeof(t->slot[0]));
	/* Whole lines of permissions, as aligned_alloc wants whole multiples of the alignment. */
	t->perm = aligned_alloc(IOTLB_CACHELINE,
				(keys + IOTLB_CACHELINE - 1) & ~(size_t)(IOTLB_CACHELINE - 1));
	/*
	 * Zeroed, so every page starts empty, and mapped anonymous so its memory is touched only
	 * where updates fall; page aligned, so 8 entries share each line, as the invalidations'
	 * prefetch (pte_prefetch_for_kill) and the device's reads count on (calloc put them
	 * 16 bytes into a line).
	 */
	if (p.page_table_pages) {
		void *pte = mmap(NULL, pte_bytes(p.page_table_pages), PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		t->pte = pte == MAP_FAILED ? NULL : pte;
		t->pt = (struct vt_as_page_table){ .entries = t->pte,
						   .allocated = t->pte ? p.page_table_pages : 0 };
	}
	if (!t->start || !t->slot || !t->perm || (p.page_table_pages && !t->pte)) {
		ret = -ENOMEM;
		goto err_free;
	}
	t->prefetch_for_write = cpu_prefetches_for_write();
	for (unsigned int k = 0; keys > BLOCK; k++) {
		t->max_keys[k] = (unsigned int)(keys >> BLOCK_SHIFT);
		keys = ((keys >> BLOCK_SHIFT) + BLOCK - 1) & ~(size_t)(BLOCK - 1);
		t->index[k] = aligned_alloc(IOTLB_CACHELINE, keys * sizeof(t->index[k][0]));
		if (!t->index[k]) {
			ret = -ENOMEM;
			goto err_free;
		}
		t->allocated_levels = k + 1;
	}
	t->capacity = p.max_entries;
	reindex(t, 0);
	t->full_policy = p.full_policy;
	t->rng = 0x9e3779b97f4a7c15ULL;
	t->log = p.log;

	ret = -vt_dma_lock_init(&t->writer);
	if (ret)
		goto err_free;
	*out = t;
	return 0;

err_free:
	free_arrays(t);
	free(t);
	return ret;
}

void vt_iotlb_free(struct vt_iotlb *iotlb)
{
	if (!iotlb)
		return;
	vt_dma_lock_destroy(&iotlb->writer);
	free_arrays(iotlb);
	free(iotlb);
}

void vt_iotlb_batch_begin(struct vt_iotlb *iotlb)
{
	vt_dma_lock_batch_begin(&iotlb->writer);
}

int vt_iotlb_batch_end(struct vt_iotlb *iotlb)
{
	int closing = vt_dma_lock_batch_closing(&iotlb->writer);
	if (closing < 0) {
		vt_log(iotlb->log, VT_LOG_ERROR,
		       "IOTLB batch end without a batch of this thread open; ignored");
		return closing;
	}
	if (closing)
		vt_dma_lock_batch_release(&iotlb->writer);
	return 0;
}

uint64_t vt_iotlb_generation(const struct vt_iotlb *iotlb)
{
	/* Acquire: pairs with the release in publish_generation. */
	return atomic_load_explicit(&iotlb->generation, memory_order_acquire);
}

/* Entries left once the range of @o is cut out and @inserted entries are put in. */
static unsigned int entries_after(const struct vt_iotlb *t, const struct overlap *o,
				  unsigned int inserted)
{
	return t->count - (o->end - o->first) + o->head + o->tail + inserted;
}

/*
 * Whether mapping [iova, ...) as @entry changes what a byte it covers translates to: a peer that
 * repeats an update (one per queue that missed) should not make every cached pointer re-resolve.
 */
static bool changes_translation(const struct vt_iotlb *t, const struct overlap *o, uint64_t iova,
				const struct iotlb_value *entry)
{
	uint64_t delta = (uint64_t)entry->hva - iova;

	for (unsigned int i = o->first; i < o->end; i++) {
		if (t->perm[i] == DEAD)
			continue; /* unmapped bytes: nobody holds a translation of them */
		if (t->perm[i] != entry->perm || t->slot[i].hva - t->start[i] != delta)
			return true;
	}
	return false;
}

/* Entry @i but for its start. */
static struct iotlb_value value_at(const struct vt_iotlb *t, unsigned int i)
{
	return (struct iotlb_value){ t->slot[i].last, t->slot[i].hva, t->perm[i] };
}

/* Inside a write section: entry @i becomes @start, @v, in stores readers may see. */
static void set_entry(struct vt_iotlb *t, unsigned int i, uint64_t start,
		      const struct iotlb_value *v)
{
	STORE(&t->start[i], start);
	STORE(&t->slot[i].last, v->last);
	STORE(&t->slot[i].hva, v->hva);
	STORE(&t->perm[i], v->perm);
}

/*
 * memmove of @n entries from @from to @to, inside a write section. The order of the stores
 * matters to no reader (a reader that sees any of them retries), only to the overlap.
 */
static void move_entries(struct vt_iotlb *t, unsigned int to, unsigned int from, unsigned int n)
{
	if (to < from) {
		for (unsigned int i = 0; i < n; i++) {
			struct iotlb_value v = value_at(t, from + i);
			set_entry(t, to + i, t->start[from + i], &v);
		}
	} else if (to > from) {
		for (unsigned int i = n; i-- > 0;) {
			struct iotlb_value v = value_at(t, from + i);
			set_entry(t, to + i, t->start[from + i], &v);
		}
	}
}

static void remove_entry(struct vt_iotlb *t, unsigned int i)
{
	t->dead -= t->perm[i] == DEAD;
	move_entries(t, i, i + 1, t->count - i - 1);
	STORE(&t->count, t->count - 1);
}

/*
 * Evicts until the result of the operation on @o fits. Victims are random entries outside @o
 * (evicting one that the operation rewrites frees nothing), or with @others false or none left,
 * the tail and then the head that the operation would have kept: removing a translation is always
 * safe for a cache, the device misses and asks again. Returns the number of entries evicted and
 * lowers @moved_from to the first index whose entry moved.
 */
static unsigned int make_room(struct vt_iotlb *t, struct overlap *o, unsigned int need, bool others,
			      unsigned int *moved_from)
{
	unsigned int evicted = 0;

	while (need > t->capacity) {
		unsigned int outside = t->count - (o->end - o->first);
		if (others && outside) {
			/* Multiply-shift: 32 random bits onto [0, outside), no division. */
			unsigned int v = (unsigned int)(((next_random(t) >> 32) * outside) >> 32);
			if (v >= o->first) {
				v += o->end - o->first;
			} else {
				o->first--;
				o->end--;
			}
			remove_entry(t, v);
			if (v < *moved_from)
				*moved_from = v;
		} else if (o->tail) {
			o->tail = false;
		} else if (o->head) {
			o->head = false;
		} else {
			break; /* unreachable: need <= capacity once only the new entry is left */
		}
		need--;
		evicted++;
	}
	return evicted;
}

/*
 * Replaces the entries of @o by what is left of them outside [iova, last], with @entry (NULL for
 * an invalidation) in between. The caller has made sure the result fits.
 */
static void splice(struct vt_iotlb *t, const struct overlap *o, uint64_t iova, uint64_t last,
		   const struct iotlb_value *entry)
{
	unsigned int keep = o->head + (entry != NULL) + o->tail;
	struct iotlb_value head = { 0 }, tail = { 0 };
	uint64_t head_start = 0, tail_start = 0;
	unsigned int w = o->first;

	for (unsigned int i = o->first; i < o->end; i++)
		t->dead -= t->perm[i] == DEAD; /* head and tail are never DEAD */
	/* Saved first: the move below may overwrite them. */
	if (o->head) {
		head_start = t->start[o->first];
		head = value_at(t, o->first);
	}
	if (o->tail) {
		tail_start = t->start[o->end - 1];
		tail = value_at(t, o->end - 1);
	}
	move_entries(t, o->first + keep, o->end, t->count - o->end);
	STORE(&t->count, entries_after(t, o, entry != NULL));

	if (o->head) {
		head.last = iova - 1; /* head_start < iova */
		set_entry(t, w++, head_start, &head);
	}
	if (entry)
		set_entry(t, w++, iova, entry);
	if (o->tail) {
		/* last < tail.last: no wrap */
		tail.hva += last + 1 - tail_start;
		set_entry(t, w, last + 1, &tail);
	}
}

/*
 * Drops the dead entries, in a write section of its own: no translation changes, so the
 * generation does not move.
 */
static void compact(struct vt_iotlb *t)
{
	unsigned int w = 0, from = t->count;

	write_begin(t);
	for (unsigned int i = 0; i < t->count; i++) {
		if (t->perm[i] == DEAD) {
			from = from < w ? from : w;
			continue;
		}
		if (w != i) {
			struct iotlb_value v = value_at(t, i);
			set_entry(t, w, t->start[i], &v);
		}
		w++;
	}
	STORE(&t->count, w);
	t->dead = 0;
	reindex(t, from < w ? from : w);
	write_end(t);
}

static void report_full(struct vt_iotlb *t, uint64_t iova, uint64_t size)
{
	if (t->full_reported)
		return;
	t->full_reported = true;
	if (t->full_policy == VT_IOTLB_FULL_REFUSE)
		vt_log(t->log, VT_LOG_ERROR,
		       "IOTLB full (%u entries): update iova 0x%llx size 0x%llx refused",
		       t->capacity, (unsigned long long)iova, (unsigned long long)size);
	else
		vt_log(t->log, VT_LOG_WARN,
		       "IOTLB full (%u entries): evicting entries to make room", t->capacity);
}

/*
 * Under the writer lock: dead entry @i mapped again over the same range, the DMA API's common
 * unmap + map pair. Outside a write section, so that no reader retries and the sequence line
 * stays with them. No reader uses a DEAD entry's host address: one that loads the DEAD
 * permission stops there, and one that loaded the live permission before the invalidation and
 * then this fill's address retries on the sequence the invalidation moved (the fence below). So
 * the address is stored first and the permission published after it (release; readers load the
 * permission first, acquire). Start and end stay as they were, and no translation changed: the
 * generation stays too.
 */
static inline void fill_hole(struct vt_iotlb *t, unsigned int i, uint64_t host, unsigned int perm)
{
	/*
	 * Release: the invalidation that killed the entry may have run on another thread, whose
	 * sequence stores reach this one through the writer mutex only. A reader that loads the
	 * address stored below then synchronizes with this fence (its acquire fence in read_retry)
	 * and sees that sequence change, even when it loaded the entry's old live permission.
	 */
	atomic_thread_fence(memory_order_release);
	t->dead--;
	STORE(&t->slot[i].hva, host);
	__atomic_store_n(&t->perm[i], (uint8_t)perm, __ATOMIC_RELEASE);
}

static bool pte_span(const struct vt_iotlb *t, uint64_t iova, uint64_t last, unsigned int *first,
		     unsigned int *end);
static uint64_t pte_page_addr(const struct vt_iotlb *t, unsigned int i);
static unsigned int pte_kill(struct vt_iotlb *t, uint64_t lo, uint64_t hi);

/*
 * Whether the page table has a live entry in [iova, last], and whether mapping the range as
 * @entry changes what one of them translates to (*@changes). The caller has moved any entry that
 * the range covers only in part to the sorted array: each one left lies inside it.
 */
static bool pte_covered(const struct vt_iotlb *t, uint64_t iova, uint64_t last,
			const struct iotlb_value *entry, bool *changes)
{
	unsigned int first, end;
	bool live = false;

	if (!pte_span(t, iova, last, &first, &end))
		return false;
	for (unsigned int i = first; i < end; i++) {
		if (!t->pte[i])
			continue;
		live = true;
		uint64_t hva = entry->hva + (pte_page_addr(t, i) - iova);
		*changes |= t->pte[i] != iotlb_pte(hva, entry->perm);
	}
	return live;
}

/*
 * Under the writer lock: an update whose range is not a dead entry next to the last change (the
 * fast path of vt_iotlb_update), which is @same when it is a live one. Whole pages of the range
 * that the page table maps are emptied in the same write section that makes the sorted entry,
 * so that a reader sees the one or the other. Out of line, so that the fast path keeps a short
 * frame.
 */
static __attribute__((noinline)) int update_locked(struct vt_iotlb *t, uint64_t iova, uint64_t last,
						   const struct iotlb_value *entry,
						   unsigned int same)
{
	struct overlap o = { .first = same, .end = same + 1 };
	unsigned int evicted = 0;
	uint64_t size = last - iova + 1; /* for the log line */

	if (same == NO_ENTRY)
		o = find_overlap(t, iova, last);
	bool changed = changes_translation(t, &o, iova, entry);
	bool pages = pte_covered(t, iova, last, entry, &changed);
	if (o.end == o.first + 1 && t->start[o.first] == iova && t->slot[o.first].last == last) {
		/* The range of one entry: rewritten in place, nothing moves. */
		if (t->perm[o.first] == DEAD && !pages) {
			fill_hole(t, o.first, entry->hva, entry->perm);
		} else if (changed || pages) {
			write_begin(t);
			pte_kill(t, iova, last);
			t->dead -= t->perm[o.first] == DEAD;
			STORE(&t->slot[o.first].hva, entry->hva);
			STORE(&t->perm[o.first], entry->perm);
			if (changed)
				bump_generation(t, iova, last);
			write_end(t);
		}
		return 0;
	}
	unsigned int need = entries_after(t, &o, 1);
	if (need > t->capacity && t->dead) {
		compact(t);
		o = find_overlap(t, iova, last);
		need = entries_after(t, &o, 1);
	}
	unsigned int moved_from = o.first;
	if (need > t->capacity) {
		report_full(t, iova, size);
		if (t->full_policy == VT_IOTLB_FULL_REFUSE)
			return -ENOSPC;
	}
	/* Readers were undisturbed so far, the log line included. */
	write_begin(t);
	if (pages)
		pte_kill(t, iova, last);
	if (need > t->capacity) {
		evicted = make_room(t, &o, need, true, &moved_from);
		t->evictions += evicted;
	}
	splice(t, &o, iova, last, entry);
	reindex(t, moved_from < o.first ? moved_from : o.first);
	/* Evicted entries can be anywhere: the change is to everything. */
	if (evicted)
		bump_generation(t, 0, UINT64_MAX);
	else if (changed)
		bump_generation(t, iova, last);
	write_end(t);
	return 0;
}

/*
 * Under the writer lock: the page table's entry for @iova's page, or NO_ENTRY when the page is
 * outside the window. With @place, a window not yet placed is placed around @iova (in a write
 * section: a reader that overlaps it retries rather than index the table with half of it).
 */
static unsigned int pte_of(struct vt_iotlb *t, uint64_t iova, bool place)
{
	if (!t->pt.pages) {
		if (!place || !t->pt.allocated)
			return NO_ENTRY;
		uint64_t span = (uint64_t)t->pt.allocated << IOTLB_PAGE_SHIFT;
		write_begin(t);
		STORE(&t->pt.base, iova & ~(span - 1));
		/* Release: a walker that sees the pages sees the base (vt_as_page_entry). */
		__atomic_store_n(&t->pt.pages, t->pt.allocated, __ATOMIC_RELEASE);
		write_end(t);
	}
	uint64_t page = (iova - t->pt.base) >> IOTLB_PAGE_SHIFT;
	return page < t->pt.pages ? (unsigned int)page : NO_ENTRY;
}

/* The IOVA of page @i of the page table. */
static uint64_t pte_page_addr(const struct vt_iotlb *t, unsigned int i)
{
	return t->pt.base + ((uint64_t)i << IOTLB_PAGE_SHIFT);
}

/* Live page table entry @i as a piece. */
static struct iotlb_piece pte_value(const struct vt_iotlb *t, unsigned int i)
{
	return iotlb_pte_value(t->pte[i], pte_page_addr(t, i));
}

/*
 * Under the writer lock: the page table's entries [*first, *end) that may hold bytes of [iova,
 * last]; false when none can (no live entry, or the range misses the window).
 */
static bool pte_span(const struct vt_iotlb *t, uint64_t iova, uint64_t last, unsigned int *first,
		     unsigned int *end)
{
	if (!t->pte_live)
		return false;
	/* The window is aligned to its size, so its last byte does not wrap. */
	uint64_t base = t->pt.base;
	uint64_t window_last = base + ((uint64_t)t->pt.pages << IOTLB_PAGE_SHIFT) - 1;
	if (last < base || iova > window_last)
		return false;
	uint64_t lo = iova > base ? iova : base, hi = last < window_last ? last : window_last;
	*first = (unsigned int)((lo - base) >> IOTLB_PAGE_SHIFT);
	*end = (unsigned int)((hi - base) >> IOTLB_PAGE_SHIFT) + 1;
	/* No live entry outside [pte_lo, pte_hi]: a scan of a long range stops short. */
	if (*first < t->pte_lo)
		*first = t->pte_lo;
	if (*end > t->pte_hi + 1)
		*end = t->pte_hi + 1;
	return *first < *end;
}

/* Whether the page of page table entry @i lies inside [iova, last] whole. */
static bool pte_inside(const struct vt_iotlb *t, unsigned int i, uint64_t iova, uint64_t last)
{
	uint64_t page = pte_page_addr(t, i);
	return page >= iova && page + IOTLB_PAGE_MASK <= last;
}

/* Under the writer lock: whether the sorted array maps a byte of [iova, last]. */
static bool sorted_mapped(struct vt_iotlb *t, uint64_t iova, uint64_t last)
{
	if (t->count == t->dead)
		return false;
	struct overlap o = find_overlap(t, iova, last);
	return overlap_mapped(t, &o);
}

/*
 * Under the writer lock: live page table entry @i moves to the sorted array, for an operation on
 * part of its page, which only the sorted array can cut. No translation changes: the sorted
 * entry is made and the page emptied in one write section (update_locked), which also orders the
 * emptying before a later fill of the page. 0, or -ENOSPC when the sorted array is full and
 * refuses (then nothing changed).
 */
static int pte_demote(struct vt_iotlb *t, unsigned int i)
{
	struct iotlb_piece p = pte_value(t, i);
	struct iotlb_value v = { .last = p.last, .hva = p.hva, .perm = (uint8_t)p.perm };

	return update_locked(t, p.start, p.last, &v, NO_ENTRY);
}

/*
 * Under the writer lock: pte_demote of the page table's entries that [*lo, *hi] covers in part:
 * those of its first and last pages, when it does not start or end on a page's edge. With @drop
 * (an invalidation, which must not fail), an entry the sorted array is full for and refuses goes
 * whole instead, which only costs the device a miss: [*lo, *hi] widens to it, for pte_kill. (A
 * refused demotion would log the refusal of an update nobody made, so it is not tried.)
 */
static int pte_demote_edges(struct vt_iotlb *t, uint64_t *lo, uint64_t *hi, bool drop)
{
	unsigned int first, end;

	if (!pte_span(t, *lo, *hi, &first, &end))
		return 0;
	unsigned int edge[2] = { first, end - 1 };
	for (unsigned int k = 0; k < 2 && (k == 0 || edge[1] != edge[0]); k++) {
		unsigned int i = edge[k];
		if (!t->pte[i] || pte_inside(t, i, *lo, *hi))
			continue;
		struct iotlb_piece p = pte_value(t, i);
		bool refused = drop && t->full_policy == VT_IOTLB_FULL_REFUSE &&
			       t->count - t->dead >= t->capacity;
		int ret = refused ? -ENOSPC : pte_demote(t, i);
		if (ret == 0)
			continue;
		if (!drop)
			return ret;
		*lo = p.start < *lo ? p.start : *lo;
		*hi = p.last > *hi ? p.last : *hi;
	}
	return 0;
}

/*
 * Under the writer lock: an update of a whole page (@iova, page aligned) to a whole host page
 * (@host, page aligned, not 0) with a valid @perm goes into the page table when the page holds
 * no entry and the sorted array maps none of its bytes: no search, no move, no write section.
 * A page that holds one is rewritten in place (in a write section, as its translation changes).
 * Returns 0 when it went there, 1 when the rest of vt_iotlb_update must see to it.
 */
static inline int pte_update(struct vt_iotlb *t, uint64_t iova, uintptr_t host, unsigned int perm)
{
	uint64_t last = iova + IOTLB_PAGE_MASK;
	unsigned int i = pte_of(t, iova, true);
	if (i == NO_ENTRY)
		return 1;
	uint64_t pte = iotlb_pte(host, perm);
	if (t->pte[i]) {
		/* A peer repeating an update (one per queue that missed) changes nothing. */
		if (t->pte[i] != pte) {
			write_begin(t);
			STORE(&t->pte[i], pte);
			bump_generation(t, iova, last);
			write_end(t);
		}
		return 0;
	}
	if (sorted_mapped(t, iova, last))
		return 1;
	/*
	 * Release: pairs with the reader's acquire (iotlb_pte_piece), so that one that sees the
	 * entry also sees every sequence change before it, made on whichever writer thread (the
	 * writer mutex passes between them): a reader that overlapped the invalidation that emptied
	 * the page retries.
	 */
	__atomic_store_n(&t->pte[i], pte, __ATOMIC_RELEASE);
	if (t->pte_live++ == 0 || i < t->pte_lo)
		t->pte_lo = i;
	if (t->pte_live == 1 || i > t->pte_hi)
		t->pte_hi = i;
	return 0;
}

/* vt_iotlb_update's checks of its arguments: 0 or its error. */
static inline int check_update(uint64_t iova, uint64_t size, uintptr_t host, unsigned int perm)
{
	if (size == 0 || !valid_access(perm))
		return -EINVAL;
	if (iova + size - 1 < iova)
		return -EOVERFLOW;
	/* A host range that wraps cannot be memory; refusing it keeps host arithmetic exact. */
	if (host == 0 || size - 1 > UINTPTR_MAX - host)
		return -EINVAL;
	return 0;
}

/*
 * Under the writer lock: update_one_locked of an update the page table did not take, its
 * arguments checked here. Out of line: a strict DMA map's update is a page the page table takes,
 * and this would crowd the burst's loop.
 */
static __attribute__((noinline)) int update_sorted_locked(struct vt_iotlb *t, uint64_t iova,
							  uint64_t size, uintptr_t host,
							  unsigned int perm)
{
	int ret = check_update(iova, size, host, perm);
	if (ret < 0)
		return ret;
	uint64_t last = iova + size - 1;
	if (t->pt.allocated) {
		/*
		 * The sorted array's, then: a page the range covers in part moves there, to be
		 * cut; pages it covers whole are emptied as the sorted entry is made.
		 */
		uint64_t lo = iova, hi = last;
		ret = pte_demote_edges(t, &lo, &hi, false);
		if (ret < 0)
			return ret;
	}
	/* Mostly the range of a dead entry next to the last change: filled in place. */
	unsigned int same = same_range_near_hint(t, iova, last);
	if (same != NO_ENTRY) {
		t->writer_hint = same + 1; /* as find_overlap leaves it */
		unsigned int first, end;
		if (t->perm[same] == DEAD && !pte_span(t, iova, last, &first, &end)) {
			fill_hole(t, same, host, perm);
			return 0;
		}
	}
	struct iotlb_value entry = { .last = last, .hva = host, .perm = (uint8_t)perm };
	return update_locked(t, iova, last, &entry, same);
}

/*
 * Under the writer lock: vt_iotlb_update, its arguments checked on the way. A whole page onto a
 * whole host page needs only its permission and host checked (page aligned, it cannot wrap), and
 * tries the page table first: the update of a strict DMA map, one per buffer.
 */
static inline int update_one_locked(struct vt_iotlb *t, uint64_t iova, uint64_t size,
				    uintptr_t host, unsigned int perm)
{
	if (t->pt.allocated && size == IOTLB_PAGE_SIZE && !((iova | host) & IOTLB_PAGE_MASK) &&
	    host && valid_access(perm) && pte_update(t, iova, host, perm) == 0)
		return 0;
	return update_sorted_locked(t, iova, size, host, perm);
}

int vt_iotlb_update(struct vt_iotlb *iotlb, uint64_t iova, uint64_t size, void *hva,
		    unsigned int perm)
{
	struct vt_iotlb *t = iotlb;
	uintptr_t host = (uintptr_t)hva;

	bool locked = writer_lock(t);
	int ret = update_one_locked(t, iova, size, host, perm);
	writer_unlock(t, locked);
	return ret;
}

unsigned int vt_iotlb_update_burst(struct vt_iotlb *iotlb, const struct vt_iotlb_entry *entries,
				   unsigned int count, int *error)
{
	struct vt_iotlb *t = iotlb;
	unsigned int i;
	int ret = 0;

	bool locked = writer_lock(t);
	for (i = 0; i < count; i++) {
		const struct vt_iotlb_entry *e = &entries[i];
		ret = update_one_locked(t, e->iova, e->size, (uintptr_t)e->hva, e->perm);
		if (ret < 0) {
			*error = ret;
			break;
		}
	}
	writer_unlock(t, locked);
	return i;
}

/*
 * Under the writer lock: asks for the lines of the page table's entries in [lo, hi] in exclusive
 * state, for an invalidation. pte_kill will store into them, and the device read them last (a
 * strict DMA burst's pages are next to each other): asked for all at once, now, their transfers
 * overlap each other and the work up to the stores instead of following one another.
 */
static void pte_prefetch_for_kill(const struct vt_iotlb *t, uint64_t lo, uint64_t hi)
{
	const unsigned int per_line = IOTLB_CACHELINE / sizeof(t->pte[0]);
	unsigned int first, end;

	if (!t->prefetch_for_write || !pte_span(t, lo, hi, &first, &end))
		return;
	for (unsigned int i = first & ~(per_line - 1); i < end; i += per_line)
		prefetch_line_for_write(&t->pte[i]);
}

/*
 * Under the writer lock: empties the page table's entries inside [lo, hi], before the write
 * section that publishes the generation (or inside it), which orders them before a later fill.
 * Returns how many there were.
 */
static unsigned int pte_kill(struct vt_iotlb *t, uint64_t lo, uint64_t hi)
{
	unsigned int first, end, killed = 0;

	if (!pte_span(t, lo, hi, &first, &end))
		return 0;
	for (unsigned int i = first; i < end && t->pte_live; i++) {
		if (t->pte[i]) {
			STORE(&t->pte[i], 0);
			t->pte_live--;
			killed++;
		}
	}
	return killed;
}

int vt_iotlb_invalidate(struct vt_iotlb *iotlb, uint64_t iova, uint64_t size)
{
	struct vt_iotlb *t = iotlb;

	if (size == 0)
		return 0;
	if (iova + size - 1 < iova)
		return -EOVERFLOW;

	uint64_t last = iova + size - 1;

	bool locked = writer_lock(t);
	/* What changes: [iova, last], or more when a page's entry cut in part had to go whole. */
	uint64_t lo = iova, hi = last;
	unsigned int first, end;
	bool pages = pte_span(t, lo, hi, &first, &end); /* may hold entries */
	if (pages) {
		pte_prefetch_for_kill(t, lo, hi);
		(void)pte_demote_edges(t, &lo, &hi, true); /* with drop, it does not fail */
	}
	struct overlap o = { 0 };
	bool sorted = t->count != t->dead;
	if (sorted) {
		o = find_overlap(t, iova, last);
		sorted = overlap_mapped(t, &o);
	}
	if (!sorted && !pages) {
		writer_unlock(t, locked);
		return 0;
	}
	if (!o.head && !o.tail) {
		/*
		 * Whole entries: they die in place, for an update of the same range to revive.
		 * Before the write section, which then only publishes the generation: nothing
		 * moves, so a reader sees each entry live as it was (and is ordered before this
		 * invalidation, or retries on the sequence below) or dead (a miss, as after it),
		 * never torn. Inside it, readers would wait on the odd sequence while these stores
		 * take back the lines of the entries' permissions (a line per 64 neighbours), which
		 * in a strict DMA burst the device read last.
		 *
		 * The log first: the section is then a store to the line of the sequence, and the
		 * release fence log_change begins with orders the DEAD stores after every sequence
		 * change before them, made on whichever writer thread. So a reader that sees DEAD
		 * where a write section before moved another entry retries on that section's
		 * sequence, rather than take the moved entry's bounds for a miss.
		 */
		log_change(t, lo, hi);
		/*
		 * Nothing mapped in the range after all: the logged change stays unpublished,
		 * which no reader reads (see log_change), and the generation stays.
		 */
		if (!pte_kill(t, lo, hi) && !sorted) {
			writer_unlock(t, locked);
			return 0;
		}
		for (unsigned int i = o.first; i < o.end; i++) {
			if (t->perm[i] != DEAD) {
				STORE(&t->perm[i], DEAD);
				t->dead++;
			}
		}
		t->invalidations++;
		t->full_reported = false;
		write_begin(t);
		publish_generation(t);
		write_end(t);
		writer_unlock(t, locked);
		return 0;
	}
	unsigned int need = entries_after(t, &o, 0);
	if (need > t->capacity && t->dead) {
		compact(t);
		o = find_overlap(t, iova, last);
		need = entries_after(t, &o, 0);
	}
	unsigned int moved_from = o.first;
	write_begin(t);
	pte_kill(t, lo, hi);
	if (need > t->capacity) {
		/*
		 * Cutting a hole in an entry of a full table. An invalidation must not fail (the
		 * driver is about to reuse the memory), so room is made: by eviction when that is
		 * the policy, else by dropping the part above the hole, which only costs a miss.
		 */
		t->evictions +=
		    make_room(t, &o, need, t->full_policy == VT_IOTLB_FULL_EVICT, &moved_from);
	}
	splice(t, &o, iova, last, NULL);
	reindex(t, moved_from < o.first ? moved_from : o.first);
	t->invalidations++;
	if (t->count - t->dead < t->capacity)
		t->full_reported = false;
	/* make_room may have evicted entries outside the range, or cut what lay above it. */
	if (need > t->capacity)
		bump_generation(t, 0, UINT64_MAX);
	else
		bump_generation(t, lo, hi);
	write_end(t);
	writer_unlock(t, locked);
	return 0;
}

void vt_iotlb_invalidate_all(struct vt_iotlb *iotlb)
{
	struct vt_iotlb *t = iotlb;

	bool locked = writer_lock(t);
	if (t->count || t->pte_live)
		t->invalidations++;
	write_begin(t);
	STORE(&t->count, 0);
	t->dead = 0;
	for (unsigned int i = t->pte_lo; t->pte_live && i <= t->pte_hi; i++) {
		if (t->pte[i]) {
			STORE(&t->pte[i], 0);
			t->pte_live--;
		}
	}
	reindex(t, 0);
	bump_generation(t, 0, UINT64_MAX);
	write_end(t);
	t->full_reported = false;
	writer_unlock(t, locked);
}

/*
 * Sorted entry @i as a piece, between read_begin and read_retry: the permission first (acquire,
 * see fill_hole), DEAD for a hole.
 */
static inline void sorted_piece(const struct vt_iotlb *t, unsigned int i, struct iotlb_piece *p)
{
	p->perm = __atomic_load_n(&t->perm[i], __ATOMIC_ACQUIRE);
	p->start = LOAD(&t->start[i]);
	p->last = LOAD(&t->slot[i].last);
	p->hva = LOAD(&t->slot[i].hva);
}

/* The page table's entry holding @addr, between read_begin and read_retry: false for none. */
static inline bool page_piece(const struct vt_iotlb *t, uint64_t addr, struct iotlb_piece *p)
{
	return iotlb_pte_piece(t->pte, t->pt.allocated, LOAD(&t->pt.base), LOAD(&t->pt.pages), addr,
			       p);
}

/*
 * The piece holding @addr, the page table's or else the sorted array's, between read_begin and
 * read_retry. @i is where the sorted entry may be: NO_ENTRY when none can hold @addr, SEARCH when
 * it must be searched for (a hint first); it is left at the sorted entry that answered, or
 * NO_ENTRY. False when nothing holds @addr.
 */
#define SEARCH (NO_ENTRY - 1)
static inline bool find_piece(const struct vt_iotlb *t, uint64_t addr, unsigned int count,
			      unsigned int *i, struct iotlb_piece *p)
{
	if (page_piece(t, addr, p)) {
		*i = SEARCH;
		return true;
	}
	if (*i == SEARCH)
		*i = find_entry(t, addr, atomic_load_explicit(&t->hint, memory_order_relaxed),
				count);
	if (*i == NO_ENTRY)
		return false;
	sorted_piece(t, *i, p);
	return true;
}

/*
 * One attempt at a translation, between read_begin and read_retry: all it reads may be torn, so
 * every index is checked against @count (clamped to the capacity), every step moves to a higher
 * address, and host addresses are only added to. Leaves where it stopped in @addr, and in @entry
 * the sorted entry that answered last (NO_ENTRY or SEARCH: none).
 */
static int translate_once(const struct vt_iotlb *t, uint64_t *addr, uint64_t last,
			  unsigned int access, struct iovec *iov, unsigned int iov_max,
			  unsigned int *iov_count, unsigned int *entry)
{
	unsigned int count = clamp(LOAD(&t->count), t->capacity);
	unsigned int i = SEARCH, answered = NO_ENTRY, n = 0;
	uint64_t a = *addr;
	int ret = 0;

	for (;;) {
		struct iotlb_piece p;
		/*
		 * A piece that does not hold @a was read torn (find_piece checked it did): a miss
		 * for this attempt, which read_retry repeats, so that @a never moves back.
		 */
		if (!find_piece(t, a, count, &i, &p) || p.start > a || p.last < a) {
			ret = -EFAULT;
			break;
		}
		if ((p.perm & access) != access) {
			/* access is not 0: a DEAD entry always stops here, as the hole it is. */
			ret = p.perm == DEAD ? -EFAULT : -EACCES;
			break;
		}
		uint64_t end = p.last < last ? p.last : last;
		uintptr_t base = (uintptr_t)(p.hva + (a - p.start));
		size_t piece = (size_t)(end - a + 1);
		if (n && (uintptr_t)iov[n - 1].iov_base + iov[n - 1].iov_len == base) {
			iov[n - 1].iov_len += piece;
		} else {
			if (n == iov_max) {
				ret = -ENOBUFS;
				break;
			}
			iov[n].iov_base = (void *)base;
			iov[n].iov_len = piece;
			n++;
		}
		if (end == last)
			break;
		a = end + 1;
		if (i != SEARCH) {
			/* Sorted entries do not overlap: the next byte can only be in the next. */
			answered = i++;
			if (i >= count || LOAD(&t->start[i]) != a)
				i = NO_ENTRY;
		}
	}
	*addr = a;
	*entry = i < count ? i : answered;
	*iov_count = n;
	return ret;
}

int vt_iotlb_translate(struct vt_iotlb *iotlb, uint64_t iova, uint64_t len, unsigned int access,
		       struct iovec *iov, unsigned int iov_max, unsigned int *iov_count,
		       struct vt_as_fault *fault)
{
	struct vt_iotlb *t = iotlb;
	unsigned int n, i, seq;
	uint64_t addr;
	int ret;

	*iov_count = 0;
	if (!valid_access(access))
		return -EINVAL;
	if (len == 0)
		return 0;
	if (iova + len - 1 < iova)
		return -EOVERFLOW;

	do {
		seq = read_begin(t);
		addr = iova;
		ret = translate_once(t, &addr, iova + len - 1, access, iov, iov_max, &n, &i);
	} while (read_retry(t, seq));

	switch (ret) {
	case 0:
		*iov_count = n;
		if (i < NO_ENTRY - 1)
			remember_hint(t, i);
		atomic_fetch_add_explicit(&t->hits, 1, memory_order_relaxed);
		break;
	case -ENOBUFS:
		*iov_count = n;
		break;
	case -EFAULT:
	case -EACCES:
		if (fault) {
			fault->addr = addr;
			fault->access = access;
			fault->end = iova + len - 1;
		}
		atomic_fetch_add_explicit(ret == -EFAULT ? &t->misses : &t->denied, 1,
					  memory_order_relaxed);
		break;
	}
	return ret;
}

int vt_iotlb_lookup(struct vt_iotlb *iotlb, uint64_t iova, struct vt_iotlb_entry *entry)
{
	struct vt_iotlb *t = iotlb;
	struct iotlb_piece p;
	unsigned int seq;
	bool found;

	do {
		seq = read_begin(t);
		unsigned int count = clamp(LOAD(&t->count), t->capacity), i = SEARCH;
		found = find_piece(t, iova, count, &i, &p);
	} while (read_retry(t, seq));

	if (!found || p.perm == DEAD)
		return -ENOENT;
	entry->iova = p.start;
	/* Fits: no entry spans all 2^64 addresses, update's size could not express it. */
	entry->size = p.last - p.start + 1;
	entry->hva = (void *)(uintptr_t)p.hva;
	entry->perm = p.perm;
	return 0;
}

void vt_iotlb_get_stats(struct vt_iotlb *iotlb, struct vt_iotlb_stats *stats)
{
	struct vt_iotlb *t = iotlb;

	bool locked = writer_lock(t);
	stats->evictions = t->evictions;
	stats->invalidations = t->invalidations;
	stats->entries = t->count - t->dead + t->pte_live;
	stats->page_table_entries = t->pte_live;
	writer_unlock(t, locked);
	stats->hits = atomic_load_explicit(&t->hits, memory_order_relaxed);
	stats->misses = atomic_load_explicit(&t->misses, memory_order_relaxed);
	stats->denied = atomic_load_explicit(&t->denied, memory_order_relaxed);
}

static int iotlb_as_translate(void *impl, uint64_t addr, uint64_t len, unsigned int access,
			      struct iovec *iov, unsigned int iov_max, unsigned int *iov_count,
			      struct vt_as_fault *fault)
{
	return vt_iotlb_translate(impl, addr, len, access, iov, iov_max, iov_count, fault);
}

static uint64_t iotlb_as_generation(const void *impl)
{
	return vt_iotlb_generation(impl);
}

/* iotlb_as_extent but for its first try at the page table. */
static __attribute__((noinline)) int extent_search(const struct vt_iotlb *t, uint64_t addr,
						   struct vt_as_extent *extent,
						   uint64_t *generation)
{
	struct iotlb_piece p;
	unsigned int i, seq;
	uint64_t gen;
	bool found;

	do {
		seq = read_begin(t);
		/* Relaxed: the sequence lock orders it with the entry. */
		gen = atomic_load_explicit(&t->generation, memory_order_relaxed);
		unsigned int count = clamp(LOAD(&t->count), t->capacity);
		i = SEARCH;
		found = find_piece(t, addr, count, &i, &p);
	} while (read_retry(t, seq));

	if (!found || p.perm == DEAD)
		return -EFAULT;
	/* The next extent asked for is likely next to this one. */
	if (i != SEARCH)
		remember_hint(t, i);
	*extent =
	    (struct vt_as_extent){ .addr = p.start, .last = p.last, .hva = p.hva, .perm = p.perm };
	*generation = gen;
	return 0;
}

/*
 * An entry is one extent (entries are not merged: neighbours may differ in permission). A ring
 * asks for one per buffer that its cached extent does not hold, which under strict DMA is every
 * buffer: a page of the page table is answered here in a single try, in a few loads.
 */
static int iotlb_as_extent(void *impl, uint64_t addr, struct vt_as_extent *extent,
			   uint64_t *generation)
{
	const struct vt_iotlb *t = impl;
	unsigned int seq = read_begin(t);
	/* Relaxed: the sequence lock orders it with the entry. */
	uint64_t gen = atomic_load_explicit(&t->generation, memory_order_relaxed);
	struct iotlb_piece p;

	if (page_piece(t, addr, &p) && !read_retry(t, seq)) {
		*extent = (struct vt_as_extent){
			.addr = p.start, .last = p.last, .hva = p.hva, .perm = p.perm
		};
		*generation = gen;
		return 0;
	}
	return extent_search(t, addr, extent, generation);
}

static int iotlb_as_unchanged_since(const void *impl, uint64_t since, uint64_t addr, uint64_t len,
				    uint64_t *now)
{
	const struct vt_iotlb *t = impl;
	uint64_t last = addr + (len ? len - 1 : 0), gen;
	unsigned int seq;
	bool unchanged;

	do {
		seq = read_begin(t);
		/* Relaxed: the sequence lock orders it with the log. */
		gen = atomic_load_explicit(&t->generation, memory_order_relaxed);
		/* Not the oldest slot: log_change may be writing it for the next generation. */
		unchanged = gen - since < CHANGE_LOG;
		for (uint64_t g = since + 1; unchanged && g != gen + 1; g++) {
			const struct iotlb_change *c = &t->changes[g % CHANGE_LOG];
			unchanged = LOAD(&c->generation) == g &&
				    (LOAD(&c->last) < addr || LOAD(&c->first) > last);
		}
	} while (read_retry(t, seq));

	if (!unchanged)
		return -ESTALE;
	*now = gen;
	return 0;
}

static const struct vt_as_ops iotlb_as_ops = {
	/* A miss is the device asking; the driver can still map the address (IOTLB MISS). */
	.flags = VT_AS_F_MISS_RETRYABLE,
	.translate = iotlb_as_translate,
	.generation = iotlb_as_generation,
	.extent = iotlb_as_extent,
	.unchanged_since = iotlb_as_unchanged_since,
};

struct vt_as vt_iotlb_as(struct vt_iotlb *iotlb)
{
	return (struct vt_as){ .ops = &iotlb_as_ops,
			       .impl = iotlb,
			       .generation_word = &iotlb->generation,
			       .page_table = &iotlb->pt };
}
