/* SPDX-License-Identifier: MIT */
/* The in-process IOTLB feed (iotlb_feed.h): uaddr -> host through the memory table, then the IOTLB.
 */
#include <virtue/iotlb_feed.h>

static int feed_update(void *opaque, uint64_t iova, uint64_t size, uint64_t uaddr,
		       unsigned int perm)
{
	struct vt_iotlb_feed *feed = opaque;
	void *hva;
	int ret = vt_memtable_uaddr_to_hva(feed->table, uaddr, size, &hva);
	return ret < 0 ? ret : vt_iotlb_update(feed->iotlb, iova, size, hva, perm);
}

/* The driver's addresses converted in groups of this many (on the stack). */
#define FEED_GROUP 32u

static unsigned int feed_update_burst(void *opaque, const struct vt_dma_iotlb_map *maps,
				      unsigned int count, int *error)
{
	struct vt_iotlb_feed *feed = opaque;
	struct vt_iotlb_entry e[FEED_GROUP];
	/* The region the last one was in: a DMA burst maps buffer after buffer from one. */
	const struct vt_mem_region *r = NULL;
	unsigned int done = 0;

	while (done < count) {
		unsigned int n, want = count - done < FEED_GROUP ? count - done : FEED_GROUP;
		int ret = 0;
		for (n = 0; n < want; n++) {
			const struct vt_dma_iotlb_map *m = &maps[done + n];
			/* Inside r: an offset below its size and a size within the rest of it. */
			if (!r || m->uaddr - r->uaddr >= r->size ||
			    m->size > r->size - (m->uaddr - r->uaddr)) {
				int err;
				r = vt_memtable_find_uaddr(feed->table, m->uaddr, m->size, &err);
				if (!r) {
					ret = err;
					break;
				}
			}
			e[n].hva = (uint8_t *)r->hva + (m->uaddr - r->uaddr);
			e[n].iova = m->iova;
			e[n].size = m->size;
			e[n].perm = m->perm;
		}
		unsigned int made = vt_iotlb_update_burst(feed->iotlb, e, n, error);
		done += made;
		if (made < n)
			return done;
		if (ret < 0) {
			*error = ret;
			return done;
		}
	}
	return done;
}

static int feed_invalidate(void *opaque, uint64_t iova, uint64_t size)
{
	struct vt_iotlb_feed *feed = opaque;
	return vt_iotlb_invalidate(feed->iotlb, iova, size);
}

/* A ring burst's maps or unmaps: the IOTLB's writer lock once for them all. */
static void feed_batch_begin(void *opaque)
{
	struct vt_iotlb_feed *feed = opaque;
	vt_iotlb_batch_begin(feed->iotlb);
}

static void feed_batch_end(void *opaque)
{
	struct vt_iotlb_feed *feed = opaque;
	(void)vt_iotlb_batch_end(feed->iotlb); /* the DMA API ends only what it began */
}

const struct vt_dma_iotlb_ops vt_iotlb_feed_ops = {
	.update = feed_update,
	.update_burst = feed_update_burst,
	.invalidate = feed_invalidate,
	.batch_begin = feed_batch_begin,
	.batch_end = feed_batch_end,
};
