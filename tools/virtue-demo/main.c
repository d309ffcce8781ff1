/* SPDX-License-Identifier: MIT */
/*
 * virtue-demo: the platform rule end to end, in one process. A device and a driver negotiate with
 * and without VIRTIO_F_ACCESS_PLATFORM; then the driver hands the device a buffer in each DMA
 * mode and the demo prints what the device sees through its own address space (the memory table
 * for driver-physical addresses, the IOTLB for bus addresses), what it may not do, and what an
 * unmap takes away. `make run` runs it until the vhost-user daemon takes over that role.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/device.h>
#include <virtue/dma.h>
#include <virtue/driver.h>
#include <virtue/features.h>
#include <virtue/iotlb.h>
#include <virtue/iotlb_feed.h>
#include <virtue/memtable.h>
#include <virtue/platform.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_blk.h>
#include <virtue/spec/virtio_config.h>

static const struct vt_log quiet = { .max_level = VT_LOG_ERROR };

static void print_log(void *opaque, enum vt_log_level level, const char *msg)
{
	(void)opaque;
	(void)level;
	printf("      log: %s\n", msg);
}

static const struct vt_log shown = { .fn = print_log, .max_level = VT_LOG_ERROR };

static void negotiate(const char *title, uint64_t device_offers, uint64_t driver_supports,
		      bool restricted)
{
	char names[512];
	struct vt_device *dev = NULL;
	struct vt_driver *drv = NULL;
	struct vt_device_params dp = {
		.device_id = VIRTIO_ID_BLOCK,
		.name = "demo-blk",
		.offered = device_offers,
		.log = &shown,
	};
	printf("  %s\n", title);
	if (vt_device_new(&dp, &dev) < 0)
		return;
	struct vt_driver_params p = {
		.ops = &vt_local_transport_ops,
		.transport = dev,
		.supported = driver_supports,
		.restricted_memory = restricted,
		.platform_dma = VT_DMA_IOMMU_STRICT,
		.log = &shown,
	};
	if (vt_driver_new(&p, &drv) == 0) {
		vt_features_str(VIRTIO_ID_BLOCK, vt_device_offered_features(dev), names,
				sizeof(names));
		printf("    device offers:  %s\n", names);
		int r = vt_driver_negotiate(drv);
		if (r < 0) {
			printf("    negotiation failed: %s\n", strerror(-r));
		} else {
			vt_features_str(VIRTIO_ID_BLOCK, vt_driver_features(drv), names,
					sizeof(names));
			printf("    negotiated:     %s\n", names);
			printf("    platform DMA:   %s -> driver uses DMA mode \"%s\"\n",
			       vt_uses_platform_dma(vt_driver_features(drv)) ? "yes" : "no",
			       vt_dma_mode_name(vt_driver_dma_mode(drv)));
		}
		vt_status_str(vt_device_status(dev), names, sizeof(names));
		printf("    device status:  %s\n", names);
		vt_driver_free(drv);
	}
	vt_device_free(dev);
}

/* The device's side of the world: its own address space, fed by the driver's DMA layer. */
struct device_view {
	/* table: driver-physical -> host, as SET_MEM_TABLE would build it; iotlb: IOVA -> host,
	 * as IOTLB UPDATE messages would fill it. */
	struct vt_iotlb_feed feed;
};

/* The feed, with each message printed as a vhost-user backend would receive it. */
static int on_update(void *opaque, uint64_t iova, uint64_t size, uint64_t uaddr, unsigned int perm)
{
	struct device_view *v = opaque;
	printf("      -> IOTLB UPDATE iova 0x%llx size 0x%llx perm %s\n", (unsigned long long)iova,
	       (unsigned long long)size,
	       perm == VT_IOTLB_PERM_RW	  ? "RW"
	       : perm == VT_IOTLB_PERM_RO ? "RO"
					  : "WO");
	return vt_iotlb_feed_ops.update(&v->feed, iova, size, uaddr, perm);
}

static int on_invalidate(void *opaque, uint64_t iova, uint64_t size)
{
	struct device_view *v = opaque;
	printf("      -> IOTLB INVALIDATE iova 0x%llx size 0x%llx\n", (unsigned long long)iova,
	       (unsigned long long)size);
	return vt_iotlb_feed_ops.invalidate(&v->feed, iova, size);
}

static const struct vt_dma_iotlb_ops publish = { .update = on_update, .invalidate = on_invalidate };

static void device_reads(const struct vt_as *as, uint64_t bus, size_t len)
{
	char seen[64] = { 0 };
	struct vt_as_fault f = { 0 };
	int r = vt_as_read(as, bus, seen, len < sizeof(seen) - 1 ? len : sizeof(seen) - 1, &f);
	if (r == 0)
		printf("      device reads 0x%llx: \"%s\"\n", (unsigned long long)bus, seen);
	else
		printf("      device reads 0x%llx: %s (at 0x%llx)\n", (unsigned long long)bus,
		       r == -EFAULT ? "not mapped" : strerror(-r), (unsigned long long)f.addr);
}

static void device_writes(const struct vt_as *as, uint64_t bus)
{
	int r = vt_as_write(as, bus, "X", 1, NULL);
	printf("      device writes 0x%llx: %s\n", (unsigned long long)bus,
	       r == 0	      ? "allowed"
	       : r == -EACCES ? "permission denied"
			      : strerror(-r));
}

static int dma_mode_demo(enum vt_dma_mode mode)
{
	struct vt_shm *shm = NULL;
	struct device_view view = { 0 };
	struct vt_dma *dma = NULL;
	int r;

	printf("  mode \"%s\"\n", vt_dma_mode_name(mode));
	r = vt_shm_new(&shm);
	if (r == 0)
		r = vt_shm_add_memfd(shm, 8 << 20, 0x40000000, NULL);
	if (r < 0)
		goto out;
	/* The device maps the driver's memory the way a vhost-user backend does. */
	view.feed.table = vt_memtable_new(&quiet);
	r = view.feed.table ? vt_memtable_add_shm(view.feed.table, shm) : -ENOMEM;
	if (r == 0)
		r = vt_iotlb_new(&(struct vt_iotlb_params){ .log = &quiet }, &view.feed.iotlb);
	if (r < 0)
		goto out;
	struct vt_dma_params p = {
		.mode = mode,
		.shm = shm,
		.log = &shown,
		.iotlb_ops = &publish,
		.iotlb_opaque = &view,
	};
	r = vt_dma_new(&p, &dma);
	if (r < 0)
		goto out;
	bool iommu = mode == VT_DMA_IOMMU_STRICT || mode == VT_DMA_IOMMU_LAZY ||
		     mode == VT_DMA_IOMMU_PREMAPPED;
	struct vt_as as = iommu ? vt_iotlb_as(view.feed.iotlb) : vt_memtable_as(view.feed.table);

	static const char msg[] = "hello from the driver";
	char *buf = NULL;
	char private_buf[sizeof(msg)];
	if (mode == VT_DMA_BOUNCE) {
		/* Bounce buffers exist for memory the device must never see. */
		buf = private_buf;
	} else if ((r = vt_shm_alloc(shm, sizeof(msg), 64, (void **)&buf)) < 0) {
		goto out;
	}
	memcpy(buf, msg, sizeof(msg));
	uint64_t bus;
	r = vt_dma_map(dma, buf, sizeof(msg), VT_DMA_TO_DEVICE, &bus);
	if (r < 0)
		goto out;
	printf("      driver maps %p (%zu bytes, to-device) -> bus address 0x%llx\n", (void *)buf,
	       sizeof(msg), (unsigned long long)bus);
	device_reads(&as, bus, sizeof(msg));
	device_writes(&as, bus);
	r = vt_dma_unmap(dma, bus, sizeof(msg), VT_DMA_TO_DEVICE);
	printf("      driver unmaps\n");
	device_reads(&as, bus, sizeof(msg));
	if (mode == VT_DMA_IOMMU_LAZY) {
		vt_dma_flush(dma);
		printf("      driver flushes its lazy invalidations\n");
		device_reads(&as, bus, sizeof(msg));
	}
	if (buf == private_buf)
		printf("      driver's own buffer still holds: \"%s\" (the device only ever had a "
		       "copy)\n",
		       private_buf);
	else
		vt_shm_release(shm, buf, sizeof(msg));
out:
	if (r < 0)
		printf("      failed: %s\n", strerror(-r));
	if (dma)
		vt_dma_free(dma);
	vt_iotlb_free(view.feed.iotlb);
	vt_memtable_free(view.feed.table);
	vt_shm_free(shm);
	return r;
}

int main(void)
{
	const uint64_t flush = VT_BIT(VIRTIO_BLK_F_FLUSH);
	const uint64_t access_platform = VT_BIT(VIRTIO_F_ACCESS_PLATFORM); /* offered below */

	printf("virtue demo: VIRTIO_F_ACCESS_PLATFORM decides how a device reaches memory\n\n");
	printf("1. Negotiation (device and driver objects over the in-process transport)\n");
	negotiate("device without ACCESS_PLATFORM, ordinary driver:", flush, flush, false);
	negotiate("device offering ACCESS_PLATFORM, driver accepting it:", flush | access_platform,
		  flush | access_platform, false); /* offer */
	negotiate("device without ACCESS_PLATFORM, driver with the restricted-memory policy:",
		  flush, flush | access_platform, true); /* offer */
	negotiate("device offering ACCESS_PLATFORM, driver with the restricted-memory policy:",
		  flush | access_platform, flush | access_platform, true); /* offer */

	printf("\n2. The DMA API in each mode: what the device sees of one buffer\n");
	static const enum vt_dma_mode modes[] = { VT_DMA_DIRECT, VT_DMA_IOMMU_STRICT,
						  VT_DMA_IOMMU_LAZY, VT_DMA_IOMMU_PREMAPPED,
						  VT_DMA_BOUNCE };
	int failures = 0;
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		failures += dma_mode_demo(modes[i]) < 0;
	printf(
	    "\n(direct: bus address = driver-physical, the device sees all shared memory;\n"
	    " iommu: bus address = IOVA with permissions, gone after unmap (lazy: after flush);\n"
	    " bounce: the device sees only a copy in the bounce window.)\n");
	return failures ? 1 : 0;
}
