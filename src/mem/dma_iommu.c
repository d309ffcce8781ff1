/* SPDX-License-Identifier: MIT */
/*
 * IOMMU DMA: bus addresses are IOVAs from a range allocator, and the device learns each
 * translation through the caller's update / invalidate callbacks (vhost-user IOTLB messages, or a
 * vt_iotlb in tests). Strict invalidates at unmap; lazy queues unmapped ranges and invalidates them
 * in batches; premapped maps each shared memory region once at creation. The invariant of every
 * mode: an IOVA goes back to the allocator only after its invalidation was published, so a reused
 * IOVA can never reach the previous buffer through a stale device translation.
 *
 * Threading: map, unmap, sync and flush may run on several threads at once (one lock,
 * dma_lock.h; the callbacks run under it, so the device sees updates and invalidations in
 * allocation order). A batch holds it from its begin to its end.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/as.h>

#include "mem/dma_impl.h"
#include "mem/dma_lock.h"

#define IOVA_DEFAULT_BASE  (1ULL << 20)
#define IOVA_DEFAULT_SIZE  (1ULL << 40)
#define LAZY_DEFAULT_BATCH 256u
#define PAGE_MASK	   ((uint64_t)VT_DMA_IOMMU_PAGE - 1)

/*
 * Unmapped IOVA blocks of up to IDLE_PAGES pages are kept, with their records, up to IDLE_DEPTH
 * per size (at least a lazy batch, which a flush releases at once: with 64 kept, lazy mode took
 * the rest from the allocator again, found their dead IOTLB entries by search, and ran 13%
 * slower than strict), and handed to the next map of that size: a buffer unmapped and another
 * mapped skips the allocator both ways, and the IOTLB revives the entry in place. Kept only once
 * invalidated, as every IOVA freed; given back to the allocator when it runs out.
 */
#define IDLE_PAGES 16u
_Static_assert(IDLE_PAGES <= VT_DMA_IDLE_CLASSES_MAX,
	       "more size classes than struct vt_dma_idle has");
#define IDLE_DEPTH 64u

/* A region mapped once, RW, at creation (premapped mode). */
struct premapped_region {
	uint64_t hva;
	uint64_t size;
	uint64_t iova;
};

/* An unmapped IOVA block waiting for its invalidation (lazy mode). */
struct pending_range {
	uint64_t iova;
	uint64_t bytes; /* the whole allocator block: nothing else lives in it */
	uint32_t tag;	/* its record, RETIRING until the invalidation is published */
};

struct dma_iommu {
	struct vt_dma dma; /* first: the ops get a struct vt_dma * */
	struct vt_dma_lock lock;
	const struct vt_dma_iotlb_ops *iotlb;
	void *iotlb_opaque;
	struct vt_range_alloc iova;
	struct vt_dma_record_pool records;

	/* Unmapped ranges waiting for their invalidation: lazy mode, and strict inside a batch. */
	struct pending_range *pending;
	unsigned int pending_count, lazy_batch;

	struct premapped_region premapped[VT_SHM_MAX_REGIONS]; /* sorted by hva */
	unsigned int premapped_count;

	/* IDLE records by block pages - 1. */
	struct vt_dma_idle idle;

	/* The record last mapped at each bus address, by its IOMMU page: a guess for unmap. */
	struct vt_dma_tag_hints hints;
};

static inline struct dma_iommu *to_iommu(struct vt_dma *dma)
{
	return (struct dma_iommu *)dma;
}

static const char *mode_name(const struct dma_iommu *m)
{
	return vt_dma_mode_name(m->dma.mode);
}

static int publish_update(struct dma_iommu *m, uint64_t iova, uint64_t size, uint64_t uaddr,
			  unsigned int perm)
{
	int ret = m->iotlb->update(m->iotlb_opaque, iova, size, uaddr, perm);
	if (ret < 0) {
		vt_log(m->dma.log, VT_LOG_ERROR,
		       "dma(%s): IOTLB update of iova 0x%llx size 0x%llx failed (%d)", mode_name(m),
		       (unsigned long long)iova, (unsigned long long)size, ret);
		return ret;
	}
	vt_dma_count_locked(&m->dma.stats.iotlb_updates, 1);
	return 0;
}

static int publish_invalidate_with(struct dma_iommu *m, uint64_t iova, uint64_t size,
				   int (*invalidate)(void *, uint64_t, uint64_t))
{
	int ret = invalidate(m->iotlb_opaque, iova, size);
	if (ret < 0) {
		vt_log(m->dma.log, VT_LOG_ERROR,
		       "dma(%s): IOTLB invalidation of iova 0x%llx size 0x%llx failed (%d); the "
		       "IOVA stays reserved",
		       mode_name(m), (unsigned long long)iova, (unsigned long long)size, ret);
		return ret;
	}
	vt_dma_count_locked(&m->dma.stats.iotlb_invalidations, 1);
	return 0;
}

static int publish_invalidate(struct dma_iommu *m, uint64_t iova, uint64_t size)
{
	return publish_invalidate_with(m, iova, size, m->iotlb->invalidate);
}

/* Returns a retired record's IOVA for reuse: its invalidation has been published. */
static void release_record(struct dma_iommu *m, uint32_t tag)
{
	struct vt_dma_record *rec = vt_dma_record_at(&m->records, tag);

	if (vt_dma_idle_put(&m->idle, &m->records, tag, rec->bus_size / VT_DMA_IOMMU_PAGE - 1))
		return;
	vt_range_alloc_free(&m->iova, rec->bus_block, rec->bus_size);
	vt_dma_record_put(&m->records, tag);
}

/*
 * Sorts the queue by IOVA, descending, in place: a heapsort, because flushing runs on the unmap
 * path, which must not allocate (glibc's qsort may). Descending is the order the queue usually
 * has already: the idle lists hand out the blocks freed last first, and flush_locked frees them
 * lowest first, so a run of maps takes descending IOVAs and its unmaps queue them so.
 */
static void sift_down(struct pending_range *a, unsigned int root, unsigned int n)
{
	for (unsigned int child; (child = 2 * root + 1) < n; root = child) {
		if (child + 1 < n && a[child + 1].iova < a[child].iova)
			child++;
		if (a[root].iova <= a[child].iova)
			return;
		struct pending_range t = a[root];
		a[root] = a[child];
		a[child] = t;
	}
}

/*
 * Merges the descending runs a[0, k) and a[k, n) into a[0, n), through @tmp (room for the first
 * run): linear, and its branches follow the data instead of mispredicting as a heap's do.
 */
static void merge_two_runs(struct pending_range *a, unsigned int k, unsigned int n,
			   struct pending_range *tmp)
{
	unsigned int i = 0, j = k, w = 0;

	memcpy(tmp, a, k * sizeof(*a));
	while (i < k && j < n)
		a[w++] = tmp[i].iova >= a[j].iova ? tmp[i++] : a[j++];
	while (i < k)
		a[w++] = tmp[i++];
}

/* Runs short enough to merge through a buffer on the stack: a strict batch's. */
#define MERGE_MAX 64u

static void sort_pending(struct pending_range *a, unsigned int n)
{
	/*
	 * One pass finds either order a run of maps leaves, and the two descending runs that
	 * completions across two runs of maps leave (a strict batch, one time in ten in
	 * virtue-bench ring); the heapsort is for the rest.
	 */
	unsigned int ascents = 0, last_ascent = 0;
	bool up = true;
	for (unsigned int i = 1; i < n; i++) {
		up &= a[i - 1].iova <= a[i].iova;
		if (a[i - 1].iova < a[i].iova) {
			ascents++;
			last_ascent = i;
		}
	}
	if (ascents == 0)
		return;
	if (up) {
		for (unsigned int i = 0, j = n - 1; i < j; i++, j--) {
			struct pending_range t = a[i];
			a[i] = a[j];
			a[j] = t;
		}
		return;
	}
	if (ascents == 1 && last_ascent <= MERGE_MAX) {
		struct pending_range tmp[MERGE_MAX];
		merge_two_runs(a, last_ascent, n, tmp);
		return;
	}
	/* A min-heap, its least moved to the end each round: descending. */
	for (unsigned int i = n / 2; i-- > 0;)
		sift_down(a, i, n);
	while (n-- > 1) {
		struct pending_range t = a[0];
		a[0] = a[n];
		a[n] = t;
		sift_down(a, 0, n);
	}
}

/*
 * Publishes the queued invalidations, adjacent blocks merged into one, and only then frees their
 * IOVAs, lowest first (from the end of the descending queue). On a failed publish the ranges not
 * yet invalidated (the highest, at the start of the queue) stay queued, and reserved.
 */
static int flush_locked(struct dma_iommu *m)
{
	struct pending_range *a = m->pending;
	unsigned int n = m->pending_count, i = n;

	if (n == 0)
		return 0;
	sort_pending(a, n);
	if (m->iotlb->invalidate_nowait && m->iotlb->sync) {
		/* The whole batch out, then one wait; only then is any IOVA free again. */
		int ret = 0;
		while (i > 0 && ret == 0) {
			uint64_t start = a[i - 1].iova, end = start + a[i - 1].bytes;
			while (--i > 0 && a[i - 1].iova == end)
				end += a[i - 1].bytes;
			ret = publish_invalidate_with(m, start, end - start,
						      m->iotlb->invalidate_nowait);
		}
		if (ret == 0)
			ret = m->iotlb->sync(m->iotlb_opaque);
		if (ret < 0)
			return ret; /* all stay queued: which ones took effect is unknown */
		for (i = n; i > 0; i--)
			release_record(m, a[i - 1].tag);
		m->pending_count = 0;
		vt_dma_count_locked(&m->dma.stats.flushes, 1);
		return 0;
	}
	while (i > 0) {
		uint64_t start = a[i - 1].iova, end = start + a[i - 1].bytes;
		unsigned int j = i - 1;
		while (j > 0 && a[j - 1].iova == end)
			end += a[--j].bytes;
		int ret = publish_invalidate(m, start, end - start);
		if (ret < 0) {
			m->pending_count = i;
			return ret;
		}
		for (; i > j; i--)
			release_record(m, a[i - 1].tag);
	}
	m->pending_count = 0;
	vt_dma_count_locked(&m->dma.stats.flushes, 1);
	return 0;
}

static bool lazy(const struct dma_iommu *m)
{
	return m->dma.mode == VT_DMA_IOMMU_LAZY;
}

/*
 * A new record and an IOVA block of @size bytes from the allocator. When either runs out while
 * unmapped ranges are queued, those are flushed and the allocation retried: queued IOVAs are
 * free space that only waits for its invalidation. Out of line: the kept blocks serve most maps.
 */
static __attribute__((noinline)) int reserve_new_iova(struct dma_iommu *m, uint64_t size,
						      uint32_t *tag, uint64_t *iova)
{
	for (int attempt = 0;; attempt++) {
		int ret = -ENOSPC;
		*tag = vt_dma_record_get(&m->records);
		if (*tag) {
			ret = vt_range_alloc_alloc(&m->iova, size, VT_DMA_IOMMU_PAGE, *tag, iova);
			if (ret == 0)
				return 0;
			vt_dma_record_put(&m->records, *tag);
		}
		if (ret != -ENOSPC || attempt > 0 ||
		    (m->pending_count == 0 && m->idle.total == 0) || flush_locked(m) < 0) {
			vt_log(m->dma.log, VT_LOG_ERROR,
			       "dma(%s): no IOVA space or mapping record for 0x%llx bytes (%u "
			       "mappings live)",
			       mode_name(m), (unsigned long long)size,
			       m->records.live - m->idle.total);
			return ret;
		}
		/* After the flush: it may have made more blocks idle. */
		vt_dma_idle_drain(&m->idle, &m->records, &m->iova);
	}
}

/*
 * A record and an IOVA block of @size bytes (whole pages) for it: a kept one of that size
 * inline, else from the allocator (reserve_new_iova).
 */
static inline int reserve_iova(struct dma_iommu *m, uint64_t size, uint32_t *tag, uint64_t *iova)
{
	*tag = vt_dma_idle_take(&m->idle, &m->records, size / VT_DMA_IOMMU_PAGE - 1);
	if (*tag) {
		*iova = vt_dma_record_at(&m->records, *tag)->bus_block;
		return 0;
	}
	return reserve_new_iova(m, size, tag, iova);
}

/*
 * The device can reach shared memory only. Whole IOMMU pages are published when they all lie in
 * it (fewer, mergeable translations); otherwise just the bytes asked for, so the device is never
 * given memory outside shared memory. The IOVA block covers the pages in both cases, so the bus
 * address keeps the in-page offset.
 */
struct map_plan {
	uint64_t offset; /* of the first byte in its IOMMU page */
	uint64_t span;	 /* whole pages from that page to the one of the last byte */
	bool whole_pages;
};

/*
 * How [ptr, ptr + len) is mapped, or -EFAULT (logged) when it is not inside shared memory.
 * *@region is the region of the buffer planned before (NULL for none), tried before a search
 * (a burst's buffers mostly share one), and becomes this buffer's.
 */
static int plan_map(const struct dma_iommu *m, void *ptr, size_t len,
		    const struct vt_shm_region **region, struct map_plan *plan)
{
	uint64_t p = (uint64_t)(uintptr_t)ptr;
	const struct vt_shm_region *r = *region;

	plan->offset = p & PAGE_MASK;
	plan->span = (plan->offset + len + PAGE_MASK) & ~PAGE_MASK;
	if (!r || !vt_dma_region_holds(r, p, 1)) {
		r = vt_shm_find(m->dma.shm, ptr);
		*region = r;
	}
	/*
	 * Both tests in the region of the first byte: a range inside one region holds that byte.
	 * dma.c refused wrapping ranges and NULL, so span cannot wrap for shared memory.
	 */
	plan->whole_pages = r && plan->span >= plan->offset + len &&
			    vt_dma_region_holds(r, p - plan->offset, plan->span);
	if (!plan->whole_pages && (!r || !vt_dma_region_holds(r, p, len))) {
		vt_log(m->dma.log, VT_LOG_ERROR,
		       "dma(%s): map of [%p, +%zu) refused: not inside one shared memory region",
		       mode_name(m), ptr, len);
		return -EFAULT;
	}
	return 0;
}

/* The translation a map of [ptr, ptr + len) planned as @plan publishes, its block at @iova. */
static struct vt_dma_iotlb_map plan_translation(const struct map_plan *plan, void *ptr, size_t len,
						uint64_t iova, enum vt_dma_dir dir)
{
	uint64_t p = (uint64_t)(uintptr_t)ptr;

	if (plan->whole_pages)
		return (struct vt_dma_iotlb_map){ iova, plan->span, p - plan->offset,
						  vt_dma_access_for(dir) };
	return (struct vt_dma_iotlb_map){ iova + plan->offset, len, p, vt_dma_access_for(dir) };
}

/* Record @tag becomes the live mapping of [ptr, ptr + len) in the block at @iova. */
static uint64_t record_mapping(struct dma_iommu *m, uint32_t tag, void *ptr, size_t len,
			       const struct map_plan *plan, uint64_t iova, enum vt_dma_dir dir)
{
	struct vt_dma_record *rec = vt_dma_record_at(&m->records, tag);
	*rec = (struct vt_dma_record){
		.cpu = ptr,
		.len = len,
		.bus = iova + plan->offset,
		.bus_block = iova,
		.bus_size = plan->span,
		.dir = (uint8_t)dir,
		.state = VT_DMA_RECORD_LIVE,
	};
	vt_dma_tag_hint_set(&m->hints, rec->bus / VT_DMA_IOMMU_PAGE, tag);
	return rec->bus;
}

/*
 * A block reserved for a map whose update was refused: such an update is taken to have changed
 * nothing, so the IOVA is clean and goes straight back, with its record.
 */
static void unreserve(struct dma_iommu *m, uint32_t tag, uint64_t iova, uint64_t span)
{
	vt_range_alloc_free(&m->iova, iova, span);
	vt_dma_record_put(&m->records, tag);
}

static int iommu_map(struct vt_dma *dma, void *ptr, size_t len, enum vt_dma_dir dir, uint64_t *bus)
{
	struct dma_iommu *m = to_iommu(dma);
	const struct vt_shm_region *region = NULL;
	struct map_plan plan;
	int ret = plan_map(m, ptr, len, &region, &plan);
	if (ret < 0)
		return ret;

	bool locked = vt_dma_lock(&m->lock);
	uint32_t tag;
	uint64_t iova;
	ret = reserve_iova(m, plan.span, &tag, &iova);
	if (ret < 0)
		goto out;
	struct vt_dma_iotlb_map t = plan_translation(&plan, ptr, len, iova, dir);
	ret = publish_update(m, t.iova, t.size, t.uaddr, t.perm);
	if (ret < 0) {
		unreserve(m, tag, iova, plan.span);
		goto out;
	}
	*bus = record_mapping(m, tag, ptr, len, &plan, iova, dir);
out:
	vt_dma_unlock(&m->lock, locked);
	return ret;
}

/* A burst's translations go to the transport in groups of this many (on the stack). */
#define MAP_BURST_GROUP 32u

/*
 * Publishes @n translations in order: how many were, the first ones; on fewer, the next one's
 * error is in *@error (logged), and it changed nothing.
 */
static unsigned int publish_updates(struct dma_iommu *m, const struct vt_dma_iotlb_map *t,
				    unsigned int n, int *error)
{
	unsigned int done = 0;
	int ret = 0;

	if (!m->iotlb->update_burst) {
		for (; done < n; done++) {
			ret = publish_update(m, t[done].iova, t[done].size, t[done].uaddr,
					     t[done].perm);
			if (ret < 0) {
				*error = ret;
				break;
			}
		}
		return done;
	}
	done = m->iotlb->update_burst(m->iotlb_opaque, t, n, &ret);
	vt_dma_count_locked(&m->dma.stats.iotlb_updates, done);
	if (done < n && ret >= 0)
		ret = -EIO; /* a transport that stopped without saying why: still an error */
	if (done < n) {
		vt_log(m->dma.log, VT_LOG_ERROR,
		       "dma(%s): IOTLB update of iova 0x%llx size 0x%llx failed (%d)", mode_name(m),
		       (unsigned long long)t[done].iova, (unsigned long long)t[done].size, ret);
		*error = ret;
	}
	return done;
}

/*
 * A burst under one lock: for each group, the blocks and records first, then the group's
 * translations in one publication, then the bus addresses. A buffer that cannot be planned or
 * given a block ends the burst there, after the group before it is published; a refused update
 * ends it at that buffer, whose block and those after it go back unpublished.
 */
static unsigned int iommu_map_burst(struct vt_dma *dma, const struct iovec *bufs,
				    unsigned int count, enum vt_dma_dir dir, uint64_t *bus,
				    int *error)
{
	struct dma_iommu *m = to_iommu(dma);
	struct vt_dma_iotlb_map t[MAP_BURST_GROUP];
	uint32_t tags[MAP_BURST_GROUP];
	const struct vt_shm_region *region = NULL;
	unsigned int done = 0;
	int ret = 0;

	bool locked = vt_dma_lock(&m->lock);
	while (done < count && ret == 0) {
		unsigned int want = count - done < MAP_BURST_GROUP ? count - done : MAP_BURST_GROUP;
		unsigned int n;
		for (n = 0; n < want; n++) {
			const struct iovec *b = &bufs[done + n];
			struct map_plan plan;
			uint64_t iova;
			ret = plan_map(m, b->iov_base, b->iov_len, &region, &plan);
			if (ret == 0)
				ret = reserve_iova(m, plan.span, &tags[n], &iova);
			if (ret < 0)
				break;
			t[n] = plan_translation(&plan, b->iov_base, b->iov_len, iova, dir);
			/* Recorded before it is published: under the lock nobody can name it. */
			bus[done + n] =
			    record_mapping(m, tags[n], b->iov_base, b->iov_len, &plan, iova, dir);
		}
		int stop = ret;
		unsigned int published = publish_updates(m, t, n, &ret);
		for (unsigned int i = published; i < n; i++) {
			const struct vt_dma_record *rec = vt_dma_record_at(&m->records, tags[i]);
			unreserve(m, tags[i], rec->bus_block, rec->bus_size);
		}
		done += published;
		if (published == n && stop < 0)
			ret = stop;
	}
	vt_dma_unlock(&m->lock, locked);
	if (ret < 0)
		*error = ret;
	return done;
}

static int find_live(struct dma_iommu *m, const char *op, uint64_t bus, size_t len,
		     enum vt_dma_dir dir, int exact, uint32_t *tag)
{
	return vt_dma_record_find(&m->dma, &m->iova, &m->records, bus, op, bus, len, dir, exact,
				  tag);
}

/* Retires mapping @tag (@rec) to the queue of unmapped ranges; there is room for it. */
static inline void queue_unmap(struct dma_iommu *m, uint32_t tag, struct vt_dma_record *rec)
{
	rec->state = VT_DMA_RECORD_RETIRING;
	m->pending[m->pending_count++] = (struct pending_range){
		.iova = rec->bus_block,
		.bytes = vt_range_alloc_block_bytes(&m->iova, rec->bus_size, VT_DMA_IOMMU_PAGE),
		.tag = tag,
	};
}

static int unmap_locked(struct dma_iommu *m, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	uint32_t tag =
	    vt_dma_tag_hint_get(&m->hints, &m->records, bus / VT_DMA_IOMMU_PAGE, bus, len, dir);
	int ret;
	if (!tag && (ret = find_live(m, "unmap", bus, len, dir, 1, &tag)) < 0)
		return ret;
	struct vt_dma_record *rec = vt_dma_record_at(&m->records, tag);

	if (!lazy(m) && m->lock.batch_depth == 0) {
		/* Strict: the device loses the translation before the IOVA can be reused. */
		ret = publish_invalidate(m, rec->bus_block, rec->bus_size);
		if (ret == 0)
			release_record(m, tag);
		return ret;
	}
	/*
	 * Queued: lazy, or strict inside a batch, whose end publishes the queue. A full queue
	 * that cannot be flushed leaves the mapping live rather than lose track.
	 */
	if (m->pending_count == m->lazy_batch) {
		ret = flush_locked(m);
		if (ret < 0)
			return ret;
	}
	queue_unmap(m, tag, rec);
	/* The unmap itself is done; a failed flush stays queued and is retried (and logged). */
	if (m->pending_count == m->lazy_batch)
		flush_locked(m);
	return 0;
}

static __attribute__((noinline)) int unmap_slow(struct dma_iommu *m, uint64_t bus, size_t len,
						enum vt_dma_dir dir)
{
	bool locked = vt_dma_lock(&m->lock);
	int ret = unmap_locked(m, bus, len, dir);
	vt_dma_unlock(&m->lock, locked);
	return ret;
}

static int iommu_unmap(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	struct dma_iommu *m = to_iommu(dma);

	/*
	 * The common case of a ring burst, without a call: inside this thread's batch (so
	 * queued, in either mode), the record found by its hint, and room in the queue to spare.
	 * Everything else, with the frame that its calls need, out of line.
	 */
	if (vt_dma_lock_in_batch(&m->lock) && m->pending_count + 1 < m->lazy_batch) {
		uint32_t tag = vt_dma_tag_hint_get(&m->hints, &m->records, bus / VT_DMA_IOMMU_PAGE,
						   bus, len, dir);
		if (tag) {
			queue_unmap(m, tag, vt_dma_record_at(&m->records, tag));
			return 0;
		}
	}
	return unmap_slow(m, bus, len, dir);
}

/* The IOMMU keeps both sides coherent: a sync only checks that it names a live mapping. */
static int iommu_sync(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	struct dma_iommu *m = to_iommu(dma);
	uint32_t tag;

	bool locked = vt_dma_lock(&m->lock);
	int ret = find_live(m, "sync", bus, len, dir, 0, &tag);
	vt_dma_unlock(&m->lock, locked);
	return ret;
}

static void iommu_batch_begin(struct vt_dma *dma)
{
	struct dma_iommu *m = to_iommu(dma);

	/* A batch opened inside this thread's own batch only counts. */
	vt_dma_lock_batch_begin(&m->lock);
	if (m->lock.batch_depth == 1 && m->iotlb->batch_begin)
		m->iotlb->batch_begin(m->iotlb_opaque);
}

static int iommu_batch_end(struct vt_dma *dma)
{
	struct dma_iommu *m = to_iommu(dma);
	int ret = 0;

	int closing = vt_dma_lock_batch_closing(&m->lock);
	if (closing < 0)
		return vt_dma_batch_end_unopened(dma);
	/* Strict: nothing unmapped in the batch is reachable once it ends. */
	if (!closing)
		return 0;
	if (!lazy(m))
		ret = flush_locked(m);
	if (m->iotlb->batch_end)
		m->iotlb->batch_end(m->iotlb_opaque);
	vt_dma_lock_batch_release(&m->lock);
	return ret;
}

static int iommu_flush(struct vt_dma *dma)
{
	struct dma_iommu *m = to_iommu(dma);

	bool locked = vt_dma_lock(&m->lock);
	int ret = flush_locked(m);
	vt_dma_unlock(&m->lock, locked);
	return ret;
}

/* The premapped region holding [p, p + len), by binary search over host addresses. */
static const struct premapped_region *premapped_by_hva(const struct dma_iommu *m, uint64_t p,
						       uint64_t len)
{
	unsigned int lo = 0, hi = m->premapped_count;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;
		if (m->premapped[mid].hva <= p)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	const struct premapped_region *r = &m->premapped[lo - 1];
	return vt_dma_span_inside(r->hva, r->size, p, len) ? r : NULL;
}

static int premapped_map(struct vt_dma *dma, void *ptr, size_t len, enum vt_dma_dir dir,
			 uint64_t *bus)
{
	struct dma_iommu *m = to_iommu(dma);
	uint64_t p = (uint64_t)(uintptr_t)ptr;
	const struct premapped_region *r = premapped_by_hva(m, p, len);

	if (!r) {
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(%s): map of [%p, +%zu) refused: not inside one region premapped at "
		       "creation",
		       mode_name(m), ptr, len);
		return -EFAULT;
	}
	*bus = r->iova + (p - r->hva);
	return 0;
}

/* Premapped unmap and sync: the range must lie in a premapped region (at most 32: a scan). */
static int premapped_check(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir)
{
	struct dma_iommu *m = to_iommu(dma);

	for (unsigned int i = 0; i < m->premapped_count; i++) {
		const struct premapped_region *r = &m->premapped[i];
		if (bus >= r->iova && bus - r->iova < r->size && len <= r->size - (bus - r->iova))
			return 0;
	}
	vt_log(dma->log, VT_LOG_ERROR, "dma(%s): iova 0x%llx len %zu is not premapped",
	       mode_name(m), (unsigned long long)bus, len);
	return -ENOENT;
}

static int premapped_flush(struct vt_dma *dma)
{
	return 0;
}

static int iommu_alloc_coherent(struct vt_dma *dma, size_t size, void **cpu, uint64_t *bus)
{
	void *p;
	int ret = vt_shm_alloc(dma->shm, size, VT_DMA_COHERENT_ALIGN, &p);
	if (ret < 0) {
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(%s): no room in shared memory for %zu coherent bytes",
		       vt_dma_mode_name(dma->mode), size);
		return ret;
	}
	memset(p, 0, size);
	ret = dma->ops->map(dma, p, size, VT_DMA_BIDIRECTIONAL, bus);
	if (ret < 0) {
		vt_shm_release(dma->shm, p, size);
		return ret;
	}
	*cpu = p;
	return 0;
}

static void iommu_free_coherent(struct vt_dma *dma, size_t size, void *cpu, uint64_t bus)
{
	struct dma_iommu *m = to_iommu(dma);
	int ret;

	bool locked = vt_dma_lock(&m->lock);
	ret = unmap_locked(m, bus, size, VT_DMA_BIDIRECTIONAL);
	/*
	 * The memory goes back to the shared pool, where it may become anything: unlike a
	 * streaming buffer the driver keeps, it must not stay reachable through a lazy IOVA.
	 */
	if (ret == 0)
		ret = flush_locked(m);
	vt_dma_unlock(&m->lock, locked);
	if (ret < 0) {
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(%s): coherent memory at %p not released: it may still be reachable",
		       mode_name(m), cpu);
		return;
	}
	vt_shm_release(dma->shm, cpu, size);
}

static void premapped_free_coherent(struct vt_dma *dma, size_t size, void *cpu, uint64_t bus)
{
	uint64_t expect;

	if (premapped_map(dma, cpu, size, VT_DMA_BIDIRECTIONAL, &expect) < 0 || expect != bus) {
		vt_log(dma->log, VT_LOG_ERROR,
		       "dma(%s): free_coherent of %p does not match bus 0x%llx; ignored",
		       vt_dma_mode_name(dma->mode), cpu, (unsigned long long)bus);
		return;
	}
	vt_shm_release(dma->shm, cpu, size);
}

static void iommu_destroy(struct vt_dma *dma)
{
	struct dma_iommu *m = to_iommu(dma);
	unsigned int left = 0;

	bool locked = vt_dma_lock(&m->lock);
	flush_locked(m);
	/*
	 * Mappings never unmapped are a caller bug, but the device must not keep them either; nor
	 * the retiring ones a failed flush left queued. Best effort: nothing is reused after this.
	 */
	for (uint32_t i = 1; i <= m->records.high_water; i++) {
		struct vt_dma_record *rec = vt_dma_record_at(&m->records, i);
		if (rec->state == VT_DMA_RECORD_UNUSED || rec->state == VT_DMA_RECORD_IDLE)
			continue; /* an idle block's invalidation was published */
		left += rec->state == VT_DMA_RECORD_LIVE;
		publish_invalidate(m, rec->bus_block, rec->bus_size);
	}
	for (unsigned int i = 0; i < m->premapped_count; i++)
		publish_invalidate(m, m->premapped[i].iova, m->premapped[i].size);
	vt_dma_unlock(&m->lock, locked);
	if (left)
		vt_log(dma->log, VT_LOG_WARN, "dma(%s): freed with %u mappings still live",
		       mode_name(m), left);

	vt_dma_record_pool_destroy(&m->records);
	vt_range_alloc_destroy(&m->iova);
	free(m->pending);
	vt_dma_lock_destroy(&m->lock);
	free(m);
}

static const struct vt_dma_ops iommu_ops = {
	.map = iommu_map,
	.map_burst = iommu_map_burst,
	.unmap = iommu_unmap,
	.sync_for_device = iommu_sync,
	.sync_for_cpu = iommu_sync,
	.alloc_coherent = iommu_alloc_coherent,
	.free_coherent = iommu_free_coherent,
	.flush = iommu_flush,
	.batch_begin = iommu_batch_begin,
	.batch_end = iommu_batch_end,
	.destroy = iommu_destroy,
};

static const struct vt_dma_ops premapped_ops = {
	.map = premapped_map,
	.unmap = premapped_check,
	.sync_for_device = premapped_check,
	.sync_for_cpu = premapped_check,
	.alloc_coherent = iommu_alloc_coherent,
	.free_coherent = premapped_free_coherent,
	.flush = premapped_flush,
	.destroy = iommu_destroy,
};

/* Publishes one RW translation per shared memory region present now. */
static int premap_regions(struct dma_iommu *m)
{
	const struct vt_shm *shm = m->dma.shm;

	for (unsigned int i = 0; i < vt_shm_count(shm); i++) {
		const struct vt_shm_region *r = vt_shm_region(shm, i);
		struct premapped_region pr = { .hva = (uint64_t)(uintptr_t)r->hva,
					       .size = r->size };
		int ret = vt_range_alloc_alloc(&m->iova, r->size, VT_DMA_IOMMU_PAGE, 0, &pr.iova);
		if (ret < 0) {
			vt_log(m->dma.log, VT_LOG_ERROR,
			       "dma(%s): IOVA space too small to premap region %u (0x%llx bytes)",
			       mode_name(m), i, (unsigned long long)r->size);
			return ret;
		}
		ret = publish_update(m, pr.iova, pr.size, pr.hva, VT_ACCESS_RW);
		if (ret < 0)
			return ret;
		unsigned int pos = m->premapped_count++;
		while (pos > 0 && m->premapped[pos - 1].hva > pr.hva) {
			m->premapped[pos] = m->premapped[pos - 1];
			pos--;
		}
		m->premapped[pos] = pr;
	}
	return 0;
}

int vt_dma_iommu_create(const struct vt_dma_params *params, struct vt_dma **out)
{
	const char *name = vt_dma_mode_name(params->mode);
	uint64_t base = params->iova_base ? params->iova_base : IOVA_DEFAULT_BASE;
	uint64_t size = params->iova_size ? params->iova_size : IOVA_DEFAULT_SIZE;
	unsigned int batch = params->lazy_batch ? params->lazy_batch : LAZY_DEFAULT_BATCH;

	if ((base & PAGE_MASK) || (size & PAGE_MASK) || base + (size - 1) < base ||
	    batch > VT_DMA_MAX_MAPPINGS) {
		vt_log(params->log, VT_LOG_ERROR,
		       "dma(%s): IOVA space 0x%llx+0x%llx must be whole %u-byte pages without "
		       "wrapping, and lazy_batch (%u) at most %u",
		       name, (unsigned long long)base, (unsigned long long)size, VT_DMA_IOMMU_PAGE,
		       batch, VT_DMA_MAX_MAPPINGS);
		return -EINVAL;
	}

	struct dma_iommu *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	bool premapped = params->mode == VT_DMA_IOMMU_PREMAPPED;
	vt_dma_init_common(&m->dma, premapped ? &premapped_ops : &iommu_ops, params);
	m->iotlb = params->iotlb_ops;
	m->iotlb_opaque = params->iotlb_opaque;
	m->lazy_batch = batch;
	m->idle.classes = IDLE_PAGES;
	m->idle.depth = batch > IDLE_DEPTH ? batch : IDLE_DEPTH;

	/* Records for live and queued mappings; blocks for those plus the free blocks between. */
	uint32_t records = premapped ? 0 : VT_DMA_MAX_MAPPINGS + batch;
	int ret = vt_dma_lock_init(&m->lock);
	if (ret) {
		free(m);
		return -ret;
	}
	ret = vt_range_alloc_init(&m->iova, base, size, VT_DMA_IOMMU_PAGE,
				  premapped ? VT_SHM_MAX_REGIONS * 2 : 2 * records);
	if (ret == 0)
		ret = vt_dma_record_pool_init(&m->records, records);
	if (ret == 0 && !premapped) {
		m->pending = calloc(batch, sizeof(*m->pending));
		if (!m->pending)
			ret = -ENOMEM;
	}
	if (ret == 0 && premapped)
		ret = premap_regions(m);
	/* Premapped translations are fixed until destroy: map is arithmetic (vt_dma_map_linear). */
	for (unsigned int i = 0; ret == 0 && i < m->premapped_count; i++)
		vt_dma_add_linear(&m->dma, m->premapped[i].hva, m->premapped[i].size,
				  m->premapped[i].iova);
	if (ret < 0) {
		if (ret == -ENOMEM)
			vt_log(params->log, VT_LOG_ERROR, "dma(%s): out of memory", name);
		iommu_destroy(&m->dma);
		return ret;
	}
	*out = &m->dma;
	return 0;
}
