/* SPDX-License-Identifier: MIT */
/*
 * The "bare" rings of virtue-bench ring: a split and a packed virtqueue in the spec's layout,
 * driven the way virtue's are in the same bench (the driver posts one-segment buffers a batch at a
 * time and collects what is used, the device takes up to a batch, reads a byte of each payload and
 * returns it; with IN_ORDER, descriptors go out in ring order and the device returns each burst
 * with one used entry), and nothing else: no validation of what the peer wrote, no DMA layer, no
 * notification decisions, no records beyond a token per buffer.
 *
 * They split the distance between virtue and the ideal ring in two: what the format costs (the
 * ideal ring against the bare one: indices, a descriptor table apart from the rings, used entries
 * written back) and what virtue adds to the format (the bare ring against virtue's). The second is
 * what virtue's code can shrink; the first no code of a spec ring can.
 *
 * With @iommu (the rows of strict and lazy IOMMU DMA) the driver maps every buffer before it
 * posts it and unmaps it when it comes back, in the least an IOMMU can be: one level of page
 * table entries indexed by IOVA page, written by the driver and read by the device, an IOVA
 * block per buffer from a stack of free ones, and the entry cleared before its block is free
 * again (strict). No IOTLB, no records, no ranges, no lock: what any strict mapping costs on top
 * of the ring is its entry written, read across the CPUs and cleared.
 *
 * Trusting the peer is what makes them bare, not safe: a head or id is masked into range so that
 * a bug here cannot write outside the rings, and that is all. Both threads are pinned as virtue's
 * are.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/spec/endian.h>
#include <virtue/spec/virtio_ring.h>

#include "bench.h"

#define BARE_NUM  256 /* the ring size of virtue-bench ring */
#define BARE_MASK (BARE_NUM - 1)
#define BARE_POOL 512 /* payload buffers, cycled as virtue's run cycles its pool */

/* One page table entry of the bare IOMMU; perm 0 is unmapped. */
struct bare_pte {
	uint64_t hva;
	uint64_t perm;
};

#define BARE_PAGE_SHIFT 12
#define BARE_PAGE_MASK	((1u << BARE_PAGE_SHIFT) - 1)
/* A block of two pages per buffer in flight, so that one of up to a page fits at any offset. */
#define BARE_PT_PAGES (2 * BARE_NUM)

struct bare_run {
	bool in_order;
	struct bare_pte *pt; /* NULL: direct, the driver's addresses as they are */
	uint64_t faults;     /* device: a buffer it could not translate (a bug of this file) */
	unsigned int batch;
	uint64_t count;
	/* split */
	struct virtq_desc *desc;
	struct virtq_avail *avail;
	struct virtq_used *used;
	/* packed */
	struct pvirtq_desc *pdesc;
};

/* Reads a byte of the payload at @addr, as the device of virtue's run does. */
static inline uint64_t touch(uint64_t addr)
{
	return *(volatile const uint8_t *)(uintptr_t)addr;
}

/*
 * The device's view of [addr, addr + len): through the page table (first and last page mapped
 * readable), or as it is. 0 when not mapped.
 */
static inline uint64_t bare_translate(const struct bare_run *r, uint64_t addr, uint32_t len)
{
	if (!r->pt)
		return addr;
	/* Relaxed: the ring's acquire of what published the buffer orders them. */
	const struct bare_pte *first = &r->pt[(addr >> BARE_PAGE_SHIFT) % BARE_PT_PAGES];
	const struct bare_pte *last = &r->pt[((addr + len - 1) >> BARE_PAGE_SHIFT) % BARE_PT_PAGES];
	if (!(__atomic_load_n(&first->perm, __ATOMIC_RELAXED) & 1) ||
	    !(__atomic_load_n(&last->perm, __ATOMIC_RELAXED) & 1))
		return 0;
	return __atomic_load_n(&first->hva, __ATOMIC_RELAXED) + (addr & BARE_PAGE_MASK);
}

/* Reads a byte of the buffer at bus address @addr, or counts a fault. */
static inline uint64_t device_touch(struct bare_run *r, uint64_t addr, uint32_t len)
{
	uint64_t hva = bare_translate(r, addr, len);
	if (!hva) {
		r->faults++;
		return 0;
	}
	return touch(hva);
}

/* The driver's IOVA blocks (iommu runs): a stack of free ones, the last freed reused first. */
struct bare_iova {
	uint16_t free[BARE_NUM];
	unsigned int nfree;
	uint16_t block_of[BARE_NUM]; /* by head or id */
};

static void bare_iova_init(struct bare_iova *v)
{
	v->nfree = BARE_NUM;
	for (unsigned int i = 0; i < BARE_NUM; i++)
		v->free[i] = (uint16_t)(BARE_NUM - 1 - i);
}

/* The bus address of @size bytes at @b for buffer @slot (a head or id): mapped, or @b itself. */
static inline uint64_t bare_map(struct bare_run *r, struct bare_iova *v, unsigned int slot, char *b,
				size_t size)
{
	uint64_t p = (uint64_t)(uintptr_t)b;
	if (!r->pt)
		return p;
	uint16_t block = v->free[--v->nfree];
	uint64_t off = p & BARE_PAGE_MASK, page = (uint64_t)block * 2;
	v->block_of[slot] = block;
	for (uint64_t i = 0; i <= (off + size - 1) >> BARE_PAGE_SHIFT; i++) {
		struct bare_pte *e = &r->pt[page + i];
		__atomic_store_n(&e->hva, p - off + (i << BARE_PAGE_SHIFT), __ATOMIC_RELAXED);
		__atomic_store_n(&e->perm, 1, __ATOMIC_RELAXED);
	}
	return page << BARE_PAGE_SHIFT | off;
}

/* Buffer @slot is back: its entries cleared (strict) before its block can be reused. */
static inline void bare_unmap(struct bare_run *r, struct bare_iova *v, unsigned int slot)
{
	if (!r->pt)
		return;
	uint16_t block = v->block_of[slot];
	__atomic_store_n(&r->pt[block * 2].perm, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&r->pt[block * 2 + 1].perm, 0, __ATOMIC_RELAXED);
	v->free[v->nfree++] = block;
}

/* ------------------------------------------------------------------ split */

static void *bare_split_device(void *arg)
{
	struct bare_run *r = arg;
	uint16_t next_avail = 0, used_idx = 0;
	uint64_t done = 0, sink = 0;

	bench_pin(1);
	while (done < r->count) {
		/* Acquire: the avail entries and descriptors before the index that exposed them. */
		uint16_t avail_idx =
		    vt_le16_to_cpu(__atomic_load_n(&r->avail->idx, __ATOMIC_ACQUIRE));
		unsigned int n = (uint16_t)(avail_idx - next_avail);
		if (n == 0)
			continue;
		if (n > r->batch)
			n = r->batch;
		uint16_t head = 0;
		for (unsigned int i = 0; i < n; i++) {
			head = vt_le16_to_cpu(r->avail->ring[(next_avail + i) & BARE_MASK]);
			const struct virtq_desc *d = &r->desc[head & BARE_MASK];
			sink += device_touch(r, vt_le64_to_cpu(d->addr), vt_le32_to_cpu(d->len));
			if (!r->in_order) {
				struct virtq_used_elem *e =
				    &r->used->ring[(used_idx + i) & BARE_MASK];
				e->id = vt_cpu_to_le32(head);
				e->len = 0;
			}
		}
		if (r->in_order) {
			/* One entry for the burst, its last buffer's, and the index moved by all.
			 */
			struct virtq_used_elem *e = &r->used->ring[used_idx & BARE_MASK];
			e->id = vt_cpu_to_le32(head);
			e->len = 0;
		}
		next_avail = (uint16_t)(next_avail + n);
		used_idx = (uint16_t)(used_idx + n);
		/* Release: the used entries before the index that exposes them. */
		__atomic_store_n(&r->used->idx, vt_cpu_to_le16(used_idx), __ATOMIC_RELEASE);
		done += n;
	}
	__asm__ __volatile__("" ::"r"(sink));
	return NULL;
}

static uint64_t bare_split_driver(struct bare_run *r, char *pool, size_t size)
{
	uint16_t next[BARE_NUM];
	void *tokens[BARE_NUM];
	uint16_t free_head = 0, avail_idx = 0, last_used = 0, oldest = 0;
	unsigned int num_free = BARE_NUM;
	uint64_t posted = 0, completed = 0, sink = 0;
	struct bare_iova iova;

	bare_iova_init(&iova);
	for (unsigned int i = 0; i < BARE_NUM; i++)
		next[i] = (uint16_t)((i + 1) & BARE_MASK);
	while (completed < r->count) {
		unsigned int want = r->batch;
		if (want > r->count - posted)
			want = (unsigned int)(r->count - posted);
		if (want > num_free)
			want = num_free;
		for (unsigned int i = 0; i < want; i++) {
			char *b = pool + ((posted + i) % BARE_POOL) * size;
			/* IN_ORDER: ring order, as buffers of one descriptor come back in it. */
			uint16_t head = r->in_order ? avail_idx & BARE_MASK : free_head;
			struct virtq_desc *d = &r->desc[head];
			if (!r->in_order)
				free_head = next[head];
			d->addr = vt_cpu_to_le64(bare_map(r, &iova, head, b, size));
			d->len = vt_cpu_to_le32((uint32_t)size);
			d->flags = 0;
			tokens[head] = b;
			r->avail->ring[avail_idx & BARE_MASK] = vt_cpu_to_le16(head);
			avail_idx++;
		}
		if (want) {
			num_free -= want;
			posted += want;
			/* Release: descriptors and avail entries before the index. */
			__atomic_store_n(&r->avail->idx, vt_cpu_to_le16(avail_idx),
					 __ATOMIC_RELEASE);
		}
		/* Until the index shows nothing new, as virtue's run calls get until it gets 0. */
		for (;;) {
			/* Acquire: the used entries after the index that exposed them. */
			uint16_t used_idx =
			    vt_le16_to_cpu(__atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE));
			if (used_idx == last_used)
				break;
			while (last_used != used_idx) {
				const struct virtq_used_elem *e =
				    &r->used->ring[last_used & BARE_MASK];
				uint16_t id = (uint16_t)(vt_le32_to_cpu(e->id) & BARE_MASK);
				unsigned int k = 1;
				if (r->in_order) {
					/* One entry for a batch: the oldest buffers up to @id. */
					k = ((id - oldest) & BARE_MASK) + 1;
					for (unsigned int j = 0; j < k; j++) {
						sink += (uintptr_t)tokens[(oldest + j) & BARE_MASK];
						bare_unmap(r, &iova, (oldest + j) & BARE_MASK);
					}
					oldest = (uint16_t)((oldest + k) & BARE_MASK);
				} else {
					sink += (uintptr_t)tokens[id];
					bare_unmap(r, &iova, id);
					next[id] = free_head;
					free_head = id;
				}
				num_free += k;
				last_used = (uint16_t)(last_used + k);
				completed += k;
			}
		}
	}
	__asm__ __volatile__("" ::"r"(sink));
	return completed;
}

/* ------------------------------------------------------------------ packed */

/* Flags of a descriptor made available (used) in the lap whose wrap counter is @wrap. */
static inline uint16_t avail_flags(bool wrap)
{
	return wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
}

static inline uint16_t used_flags(bool wrap)
{
	return wrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
}

static inline uint16_t load_flags(const struct pvirtq_desc *d)
{
	/* Acquire: the rest of the descriptor after the flags that publish it. */
	return vt_le16_to_cpu(__atomic_load_n(&d->flags, __ATOMIC_ACQUIRE));
}

/* Moves ring position *@slot on by @count slots, flipping *@wrap at the ring's end. */
static inline void advance(unsigned int *slot, bool *wrap, unsigned int count)
{
	*slot += count;
	if (*slot >= BARE_NUM) {
		*slot -= BARE_NUM;
		*wrap = !*wrap;
	}
}

static void *bare_packed_device(void *arg)
{
	struct bare_run *r = arg;
	uint16_t ids[BARE_NUM];
	unsigned int slot = 0;
	bool wrap = true;
	uint64_t done = 0, sink = 0;

	bench_pin(1);
	while (done < r->count) {
		unsigned int n = 0, s = slot;
		bool w = wrap;
		while (n < r->batch) {
			const struct pvirtq_desc *d = &r->pdesc[s];
			if ((load_flags(d) & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED)) !=
			    avail_flags(w))
				break;
			sink += device_touch(r, vt_le64_to_cpu(d->addr), vt_le32_to_cpu(d->len));
			ids[n++] = vt_le16_to_cpu(d->id);
			advance(&s, &w, 1);
		}
		if (n == 0)
			continue;
		/*
		 * Used entries in the same slots, the first one's flags last, publishing them all;
		 * with IN_ORDER one entry, the last buffer's, in the first slot, the rest skipped.
		 */
		uint16_t first_flags = used_flags(wrap);
		struct pvirtq_desc *first = &r->pdesc[slot];
		if (r->in_order) {
			first->id = vt_cpu_to_le16(ids[n - 1]);
			first->len = 0;
			advance(&slot, &wrap, n);
		} else {
			for (unsigned int i = 0; i < n; i++) {
				struct pvirtq_desc *d = &r->pdesc[slot];
				d->id = vt_cpu_to_le16(ids[i]);
				d->len = 0;
				/* Relaxed: read while written; the first one's flags order them. */
				if (i)
					__atomic_store_n(&d->flags,
							 vt_cpu_to_le16(used_flags(wrap)),
							 __ATOMIC_RELAXED);
				advance(&slot, &wrap, 1);
			}
		}
		/* Release: the other entries and their flags before this one. */
		__atomic_store_n(&first->flags, vt_cpu_to_le16(first_flags), __ATOMIC_RELEASE);
		done += n;
	}
	__asm__ __volatile__("" ::"r"(sink));
	return NULL;
}

static uint64_t bare_packed_driver(struct bare_run *r, char *pool, size_t size)
{
	uint16_t free_ids[BARE_NUM];
	void *tokens[BARE_NUM];
	unsigned int nfree = BARE_NUM, avail_slot = 0, used_slot = 0;
	bool avail_wrap = true, used_wrap = true;
	uint64_t posted = 0, completed = 0, sink = 0;
	struct bare_iova iova;

	bare_iova_init(&iova);
	for (unsigned int i = 0; i < BARE_NUM; i++)
		free_ids[i] = (uint16_t)(BARE_NUM - 1 - i);
	while (completed < r->count) {
		unsigned int want = r->batch;
		if (want > r->count - posted)
			want = (unsigned int)(r->count - posted);
		if (want > nfree)
			want = nfree;
		struct pvirtq_desc *first = &r->pdesc[avail_slot];
		uint16_t first_flags = avail_flags(avail_wrap);
		for (unsigned int i = 0; i < want; i++) {
			char *b = pool + ((posted + i) % BARE_POOL) * size;
			/* IN_ORDER: the slot, as buffers of one descriptor come back in ring order.
			 */
			uint16_t id = r->in_order ? (uint16_t)avail_slot : free_ids[nfree - 1];
			struct pvirtq_desc *d = &r->pdesc[avail_slot];
			nfree--;
			d->addr = vt_cpu_to_le64(bare_map(r, &iova, id, b, size));
			d->len = vt_cpu_to_le32((uint32_t)size);
			d->id = vt_cpu_to_le16(id);
			if (i)
				__atomic_store_n(&d->flags, vt_cpu_to_le16(avail_flags(avail_wrap)),
						 __ATOMIC_RELAXED);
			tokens[id] = b;
			advance(&avail_slot, &avail_wrap, 1);
		}
		if (want) {
			posted += want;
			/* Release: the batch's other descriptors before the first one's flags. */
			__atomic_store_n(&first->flags, vt_cpu_to_le16(first_flags),
					 __ATOMIC_RELEASE);
		}
		for (;;) {
			const struct pvirtq_desc *d = &r->pdesc[used_slot];
			if ((load_flags(d) & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED)) !=
			    used_flags(used_wrap))
				break;
			uint16_t id = (uint16_t)(vt_le16_to_cpu(d->id) & BARE_MASK);
			unsigned int k = 1;
			if (r->in_order) {
				/* One entry for a batch: the slots from here up to @id. */
				k = ((id - used_slot) & BARE_MASK) + 1;
				for (unsigned int j = 0; j < k; j++) {
					sink += (uintptr_t)tokens[(used_slot + j) & BARE_MASK];
					bare_unmap(r, &iova, (used_slot + j) & BARE_MASK);
				}
			} else {
				sink += (uintptr_t)tokens[id];
				bare_unmap(r, &iova, id);
				free_ids[nfree] = id;
			}
			nfree += k;
			completed += k;
			advance(&used_slot, &used_wrap, k);
		}
	}
	__asm__ __volatile__("" ::"r"(sink));
	return completed;
}

/* ------------------------------------------------------------------ runs */

double bench_bare_run(bool packed, bool in_order, bool iommu, unsigned int batch, size_t size,
		      uint64_t count)
{
	struct bare_run r = { .in_order = in_order, .batch = batch, .count = count };
	size_t desc_bytes =
	    packed ? sizeof(struct pvirtq_desc) * BARE_NUM : virtq_split_desc_size(BARE_NUM);
	/* Each area on lines of its own, as virtue's driver allocates them. */
	size_t avail_bytes = (virtq_split_avail_size(BARE_NUM) + 63) & ~(size_t)63;
	size_t used_bytes = (virtq_split_used_size(BARE_NUM) + 63) & ~(size_t)63;
	char *rings = aligned_alloc(64, desc_bytes + avail_bytes + used_bytes);
	char *pool = aligned_alloc(64, BARE_POOL * size);
	double result = -1;
	pthread_t t;

	if (iommu)
		r.pt = calloc(BARE_PT_PAGES, sizeof(*r.pt));
	if (!rings || !pool || !batch || (iommu && !r.pt) || size > (1u << BARE_PAGE_SHIFT))
		goto out;
	memset(rings, 0, desc_bytes + avail_bytes + used_bytes);
	for (unsigned int i = 0; i < BARE_POOL; i++)
		memset(pool + i * size, (int)i, size);
	if (packed) {
		r.pdesc = (struct pvirtq_desc *)rings;
	} else {
		r.desc = (struct virtq_desc *)rings;
		r.avail = (struct virtq_avail *)(rings + desc_bytes);
		r.used = (struct virtq_used *)(rings + desc_bytes + avail_bytes);
	}
	if (pthread_create(&t, NULL, packed ? bare_packed_device : bare_split_device, &r) != 0)
		goto out;
	bench_pin(0);
	uint64_t start = bench_now_ns();
	uint64_t completed =
	    packed ? bare_packed_driver(&r, pool, size) : bare_split_driver(&r, pool, size);
	uint64_t elapsed = bench_now_ns() - start;
	pthread_join(t, NULL);
	/* A batch miscounted (IN_ORDER) or a buffer not mapped shows here, not as a figure. */
	if (completed == count && r.faults == 0)
		result = (double)elapsed / (double)count;
out:
	free(r.pt);
	free(rings);
	free(pool);
	return result;
}
