/* SPDX-License-Identifier: MIT */
/*
 * libvirtue, all of it: include this, or the one header you need. Layers, bottom up: the wire
 * (spec/), the platform rule (platform.h, barrier.h), memory (as.h, memtable.h, iotlb.h, shm.h,
 * dma.h, iotlb_feed.h), virtqueues (virtqueue.h), device and driver objects (device.h, driver.h),
 * device models (blk.h) and drivers (blk_driver.h, net_driver.h), the vhost-user front-end
 * (vhost_user_frontend.h).
 */
#ifndef VIRTUE_VIRTUE_H
#define VIRTUE_VIRTUE_H

#include "spec/endian.h"
#include "spec/virtio_blk.h"
#include "spec/virtio_config.h"
#include "spec/virtio_net.h"
#include "spec/virtio_ring.h"

#include "log.h"
#include "features.h"
#include "platform.h"
#include "barrier.h"

#include "as.h"
#include "memtable.h"
#include "iotlb.h"
#include "shm.h"
#include "dma.h"
#include "iotlb_feed.h"

#include "virtqueue.h"

#include "device.h"
#include "driver.h"

#include "vhost_user_frontend.h"

#include "blk.h"
#include "blk_driver.h"
#include "net_driver.h"

#endif
