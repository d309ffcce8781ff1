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
	.invalidate = feed_invalidate,
	.batch_begin = feed_batch_begin,
	.batch_end = feed_batch_end,
};
