/* SPDX-License-Identifier: MIT */
/*
 * Feeding a device-side IOTLB from a driver-side DMA layer in the same process: what a vhost-user
 * backend does with IOTLB UPDATE and INVALIDATE messages, without the socket. The driver's
 * addresses (uaddr) are converted through the device's memory table, as the backend converts the
 * frontend's. For tests, benchmarks and demonstrations; transports bring their own channel.
 */
#ifndef VIRTUE_IOTLB_FEED_H
#define VIRTUE_IOTLB_FEED_H

#include "dma.h"
#include "iotlb.h"
#include "memtable.h"

struct vt_iotlb_feed {
	struct vt_memtable *table; /* the driver's memory as the device maps it */
	struct vt_iotlb *iotlb;	   /* what the device translates bus addresses with */
};

/* Give as vt_dma_params.iotlb_ops with a struct vt_iotlb_feed as iotlb_opaque. */
extern const struct vt_dma_iotlb_ops vt_iotlb_feed_ops;

#endif
