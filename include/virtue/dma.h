/* SPDX-License-Identifier: MIT */
/*
 * Driver-side DMA API: turning the driver's pointers into the bus addresses it writes into
 * descriptors, in the style of the Linux DMA API. Which implementation a device gets follows from
 * negotiation alone (vt_dma_mode_for): without VIRTIO_F_ACCESS_PLATFORM the device uses
 * driver-physical addresses (direct); with it, the platform's mode (IOMMU or bounce).
 *
 *   direct     bus address = driver-physical address inside the shared memory (vt_shm).
 *   iommu      an IOVA allocator; each map publishes an IOTLB update with permissions from the
 *              direction, each unmap an invalidation: strict (at once), lazy (batched, always
 *              before the IOVA is reused), or premapped (the shared memory mapped once, RW).
 *   bounce     the device reaches only a fixed window (as under SEV or TDX): map copies in for
 *              to-device, unmap and sync_for_cpu copy out for from-device.
 */
#ifndef VIRTUE_DMA_H
#define VIRTUE_DMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "log.h"
#include "shm.h"

enum vt_dma_dir {
	VT_DMA_TO_DEVICE = 1,	  /* device reads: IOTLB permission RO */
	VT_DMA_FROM_DEVICE = 2,	  /* device writes: WO */
	VT_DMA_BIDIRECTIONAL = 3, /* RW */
};

enum vt_dma_mode {
	VT_DMA_DIRECT = 0,
	VT_DMA_IOMMU_STRICT,
	VT_DMA_IOMMU_LAZY,
	VT_DMA_IOMMU_PREMAPPED,
	VT_DMA_BOUNCE,
};

const char *vt_dma_mode_name(enum vt_dma_mode mode);
/* "direct", "strict", "lazy", "premapped", "bounce" (also the full names); -EINVAL if unknown. */
int vt_dma_mode_parse(const char *name, enum vt_dma_mode *mode);

/*
 * The mode a device uses: @platform_mode when @negotiated has VIRTIO_F_ACCESS_PLATFORM (asked
 * through vt_uses_platform_dma), VT_DMA_DIRECT otherwise. The only place this choice is made.
 */
enum vt_dma_mode vt_dma_mode_for(uint64_t negotiated, enum vt_dma_mode platform_mode);

/* One translation to publish: what vt_dma_iotlb_ops.update takes, for update_burst. */
struct vt_dma_iotlb_map {
	uint64_t iova;
	uint64_t size;
	uint64_t uaddr;
	unsigned int perm;
};

/*
 * How the IOMMU modes tell the device side about translations. @uaddr is the driver process's
 * address of the first byte (what a vhost-user IOTLB UPDATE carries); @perm uses the VT_ACCESS_*
 * bits. Both return 0 or -errno; a failed publish fails the map.
 */
struct vt_dma_iotlb_ops {
	int (*update)(void *opaque, uint64_t iova, uint64_t size, uint64_t uaddr,
		      unsigned int perm);
	/*
	 * Optional: update of each of @count translations in order (a burst's maps, so that the
	 * receiving side pays its per-call work once). Returns how many were published, the
	 * first ones; when fewer, *@error holds the next one's error, and it changed nothing.
	 */
	unsigned int (*update_burst)(void *opaque, const struct vt_dma_iotlb_map *maps,
				     unsigned int count, int *error);
	/* Returns once the device can no longer reach the range. */
	int (*invalidate)(void *opaque, uint64_t iova, uint64_t size);
	/*
	 * Optional, both or neither: an invalidation that need not have taken effect on return,
	 * and the wait until every one published so far has. Lazy mode's flush publishes its
	 * whole batch this way and then waits once (a transport with round trips overlaps them).
	 */
	int (*invalidate_nowait)(void *opaque, uint64_t iova, uint64_t size);
	int (*sync)(void *opaque);
	/*
	 * Optional, both or neither: bracket the calls of one DMA batch (vt_dma_batch_begin),
	 * all made by the thread that holds it, so that the receiving side can take its own lock
	 * once for them all. Each call still takes effect when it returns. They run under the
	 * DMA object's lock, so whatever they hold is held for the batch: with vt_iotlb_feed_ops,
	 * one IOTLB's writer lock (see vt_iotlb_batch_begin for the rules that follow).
	 */
	void (*batch_begin)(void *opaque);
	void (*batch_end)(void *opaque);
};

struct vt_dma_params {
	enum vt_dma_mode mode;
	/* Memory the device can be given (direct, iommu) or that holds the bounce window. */
	struct vt_shm *shm;
	const struct vt_log *log;

	/*
	 * iommu modes: where the translations go. Either @iotlb_ops, for a device that learns them
	 * by message and caches them (vhost-user's IOTLB; a vt_iotlb through vt_iotlb_feed_ops),
	 * or, with @page_table set and no @iotlb_ops (strict and lazy only), a one-level page table
	 * that this object writes and a device in the same process walks itself, as a hardware
	 * IOMMU walks its tables: the device's address space is vt_dma_device_as.
	 */
	const struct vt_dma_iotlb_ops *iotlb_ops;
	void *iotlb_opaque;
	bool page_table;
	uint64_t iova_base;	 /* 0: 1 MiB */
	uint64_t iova_size;	 /* 0: 1 TiB; with @page_table 256 MiB, at most 64 GiB */
	unsigned int lazy_batch; /* lazy: unmaps queued before a flush; 0: 256 */

	/* bounce: the window is carved out of @shm's region 0 unless given here */
	uint64_t bounce_window_size; /* 0: 4 MiB */
};

struct vt_dma_stats {
	uint64_t maps, unmaps;
	uint64_t iotlb_updates, iotlb_invalidations, flushes;
	uint64_t bounce_bytes_in, bounce_bytes_out;
	uint64_t map_failures;
};

struct vt_dma;

int vt_dma_new(const struct vt_dma_params *params, struct vt_dma **out);
/* Publishes pending invalidations; every mapping should have been unmapped. */
void vt_dma_free(struct vt_dma *dma);

enum vt_dma_mode vt_dma_mode(const struct vt_dma *dma);

/*
 * Whether unmapping does anything in this mode (as Linux's dma_need_unmap): false for direct and
 * premapped, where vt_dma_unmap only checks its arguments, so a hot path may skip it.
 */
bool vt_dma_need_unmap(const struct vt_dma *dma);

/*
 * Maps [ptr, ptr + len) for the device. Returns 0 with *bus set, or -EINVAL (len 0, bad dir),
 * -EFAULT (ptr not in shared memory, for modes that need it), -ENOSPC (IOVA space or bounce
 * window exhausted), or the publish callback's error.
 */
int vt_dma_map(struct vt_dma *dma, void *ptr, size_t len, enum vt_dma_dir dir, uint64_t *bus);
/*
 * Maps each of @count buffers @bufs for the device, as vt_dma_map would one after the other:
 * each its own mapping, ended by vt_dma_unmap, its bus address in @bus[i]. The modes that
 * publish translations (strict, lazy) publish the burst's at once. Returns how many were mapped,
 * the first ones; when fewer than @count, *@error holds the error vt_dma_map would have returned
 * for the next one (logged), which is not mapped. *@error is left alone otherwise, and the
 * entries of @bus past the mapped ones are unspecified.
 */
unsigned int vt_dma_map_burst(struct vt_dma *dma, const struct iovec *bufs, unsigned int count,
			      enum vt_dma_dir dir, uint64_t *bus, int *error);
/* Ends a mapping made by vt_dma_map with the same len and dir; -ENOENT if there is none. */
int vt_dma_unmap(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir);

/* Make CPU writes visible to the device / device writes visible to the CPU (bounce copies). */
int vt_dma_sync_for_device(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir);
int vt_dma_sync_for_cpu(struct vt_dma *dma, uint64_t bus, size_t len, enum vt_dma_dir dir);

/* Maps every element of @sg; on failure nothing stays mapped. */
int vt_dma_map_sg(struct vt_dma *dma, const struct iovec *sg, unsigned int count,
		  enum vt_dma_dir dir, uint64_t *bus);
void vt_dma_unmap_sg(struct vt_dma *dma, const struct iovec *sg, unsigned int count,
		     enum vt_dma_dir dir, const uint64_t *bus);

/*
 * Memory both sides access without copies (rings): allocated from shared memory (the bounce
 * window in bounce mode) and mapped bidirectionally. *cpu is zeroed.
 */
int vt_dma_alloc_coherent(struct vt_dma *dma, size_t size, void **cpu, uint64_t *bus);
void vt_dma_free_coherent(struct vt_dma *dma, size_t size, void *cpu, uint64_t bus);

/* Lazy mode: publish queued invalidations now. Other modes: no-op. */
int vt_dma_flush(struct vt_dma *dma);

/*
 * vt_dma_batch_begin, vt_dma_batch_end - bracket the maps and unmaps one thread makes for a
 * batch of buffers (a ring burst), as an IOMMU driver gathers a scatter list's invalidations.
 * The strict and lazy modes hold their lock across the batch (other threads' calls wait for its
 * end), and strict mode queues the batch's invalidations and publishes them at the end, adjacent
 * ranges merged, with one wait where the transport offers invalidate_nowait and sync. So strict
 * stays strict for the batch as a whole: vt_dma_batch_end returns once the device can no longer
 * reach anything unmapped in the batch, and a buffer unmapped inside a batch must not go back to
 * whoever fills or reads it before then. Batches nest; the other modes ignore them.
 * vt_dma_batch_end returns 0, or the publication's error: the ranges not invalidated stay
 * reserved (never reused) and are retried by the next flush or batch end; or -EINVAL (logged,
 * nothing changed) from a thread that has no batch of this DMA object open.
 */
void vt_dma_batch_begin(struct vt_dma *dma);
int vt_dma_batch_end(struct vt_dma *dma);

void vt_dma_get_stats(const struct vt_dma *dma, struct vt_dma_stats *stats);

/*
 * vt_dma_device_as - the address space a device in this process reads through: for a DMA object
 * made with vt_dma_params.page_table, a walk of its page table (struct vt_as_page_table, offered
 * to readers), whose generation moves on at every invalidation. It stays valid for as long as
 * @dma does. Returns 0 with *@as set, or -EOPNOTSUPP for any other DMA object (its device has an
 * address space of its own: a memory table, an IOTLB, a bounce window's).
 */
struct vt_as;
int vt_dma_device_as(struct vt_dma *dma, struct vt_as *as);

#endif
