/* SPDX-License-Identifier: MIT */
/*
 * Virtqueues, split (virtio 1.3 section 2.7) and packed (2.8), each with two halves:
 *
 *   device half (struct vt_vq_dev): takes available buffers as readable and writable iovecs,
 *     returns them used; reads ring memory only through an address space (as.h), so the same code
 *     serves driver-physical addresses (memory table) and bus addresses (IOTLB) without knowing
 *     which. Everything the driver wrote is validated; a violation breaks the queue (the device
 *     layer then sets DEVICE_NEEDS_RESET), is logged once, and never touches memory outside the
 *     address space.
 *   driver half (struct vt_vq_drv): posts buffers from scatter lists, mapping them with the DMA
 *     API (dma.h), and collects them used; ring memory comes from vt_dma_alloc_coherent. It keeps
 *     its own copy of every descriptor it posted and validates everything the device wrote.
 *
 * Negotiated features select the behaviour once, at creation: RING_PACKED, EVENT_IDX,
 * INDIRECT_DESC, IN_ORDER, and ORDER_PLATFORM (barrier strength, via vt_barrier_kind()).
 *
 * Threading: each half is used by one thread at a time; the two halves may run on different
 * threads (or processes) and meet only in ring memory.
 */
#ifndef VIRTUE_VIRTQUEUE_H
#define VIRTUE_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "as.h"
#include "dma.h"
#include "log.h"

/* Why a queue broke: the rule the other side violated. */
enum vt_vq_error {
	VT_VQ_OK = 0,
	/* Device half: what the driver wrote. */
	VT_VQ_ERR_RING_UNMAPPED,  /* a ring area is not mapped (or not contiguous) */
	VT_VQ_ERR_AVAIL_IDX,	  /* avail idx moved by more than the queue size (2.7.6) */
	VT_VQ_ERR_HEAD_RANGE,	  /* head index not below the queue size */
	VT_VQ_ERR_NEXT_RANGE,	  /* next index not below the table size */
	VT_VQ_ERR_CHAIN_TOO_LONG, /* more descriptors than the queue size: a loop (2.7.5) */
	VT_VQ_ERR_INDIRECT_NOT_NEGOTIATED, /* INDIRECT without VIRTIO_F_INDIRECT_DESC */
	VT_VQ_ERR_INDIRECT_NESTED,	   /* INDIRECT inside an indirect table (2.7.5.3.1) */
	VT_VQ_ERR_INDIRECT_WITH_NEXT,	   /* INDIRECT together with NEXT (2.7.5.3.1) */
	VT_VQ_ERR_INDIRECT_LEN,		   /* table length 0, not a multiple of 16, or too large */
	VT_VQ_ERR_READABLE_AFTER_WRITABLE, /* device-readable after device-writable (2.7.4.2) */
	VT_VQ_ERR_TOTAL_LEN,		   /* chain longer than 2^32 bytes in total (2.7.5.2) */
	VT_VQ_ERR_UNMAPPED,		   /* buffer address not in the address space */
	VT_VQ_ERR_PERMISSION,		   /* mapping lacks the access the descriptor needs */
	VT_VQ_ERR_BUFFER_ID,		   /* packed: buffer id not below the queue size */
	VT_VQ_ERR_BUFFER_ID_IN_FLIGHT, /* buffer id (packed) or head (split) already in flight */
	/* Driver half: what the device wrote. */
	VT_VQ_ERR_USED_IDX,  /* used idx moved by more than the buffers outstanding */
	VT_VQ_ERR_USED_ID,   /* used id out of range or not an outstanding buffer */
	VT_VQ_ERR_USED_WRAP, /* packed: used descriptor with inconsistent AVAIL/USED bits */
	/* Either half: the local caller misused the queue. */
	VT_VQ_ERR_NOT_IN_FLIGHT, /* device model returned a chain the queue did not hand out */
	VT_VQ_ERR__COUNT,
};

/* A sentence naming the violated rule. */
const char *vt_vq_error_str(enum vt_vq_error error);

/* ---------------------------------------------------------------- device half */

/* Where a new packed ring starts: descriptor 0 with the wrap counter at 1 (2.8.1). */
#define VT_VQ_PACKED_START (1u << 15)

struct vt_vq_dev_params {
	unsigned int num;     /* queue size: split a power of two, packed any, at most 32768 */
	uint64_t features;    /* negotiated */
	uint64_t desc_addr;   /* descriptor area */
	uint64_t driver_addr; /* split: available ring; packed: driver event suppression */
	uint64_t device_addr; /* split: used ring; packed: device event suppression */
	struct vt_as as;      /* how addresses become bytes */
	/*
	 * Where to resume (vhost-user SET_VRING_BASE): split: the next avail index to read;
	 * packed: bits 0-14 the next descriptor, bit 15 its wrap counter. The used side resumes
	 * at the same point (every buffer taken before was returned). A new ring starts at 0
	 * (split) or VT_VQ_PACKED_START (packed: slot 0, wrap counter 1, 2.8.1).
	 */
	uint16_t next_avail;
	/*
	 * Most descriptors accepted per chain (0: the queue size; at most 32768). A chain in the
	 * ring never exceeds the queue size; an indirect table may hold up to max_chain even when
	 * that is more, for devices whose advertised limits (virtio-blk seg_max) exceed the ring.
	 */
	unsigned int max_chain;
	const char *name; /* for log lines */
	const struct vt_log *log;
	/*
	 * vhost-user inflight tracking (split or packed layout, as the ring; not with IN_ORDER;
	 * NULL: off): this queue's region of the front-end's inflight buffer,
	 * vt_vq_inflight_size(num) bytes, 8-byte
	 * aligned. A region left by an earlier back-end is recovered at the first pop: buffers it
	 * had taken and not returned are handed out again first, in the order it took them, and
	 * @next_avail is derived from the used ring instead.
	 */
	void *inflight;
};

/* Bytes of a queue's inflight region, enough for either layout. */
size_t vt_vq_inflight_size(unsigned int num);

/* One available buffer, as vt_vq_dev_pop hands it out. */
struct vt_vq_chain {
	uint16_t id;	/* split: head index; packed: buffer id. The used entry carries it. */
	uint16_t ndesc; /* descriptors the chain occupies in the ring (packed: slots to skip) */
	unsigned int nreadable; /* iov[0 .. nreadable) device-readable */
	unsigned int nwritable; /* iov[nreadable .. nreadable + nwritable) device-writable */
	uint32_t readable_bytes;
	uint32_t writable_bytes;
};

struct vt_vq_dev;

/* -EINVAL for bad parameters; ring areas are resolved at the first pop. */
int vt_vq_dev_new(const struct vt_vq_dev_params *params, struct vt_vq_dev **out);
void vt_vq_dev_free(struct vt_vq_dev *vq);

/*
 * Takes the next available buffer. Returns
 *   0        *chain and iov[] describe it; it is the device's until pushed;
 *   -EAGAIN  nothing available;
 *   -EFAULT  an address missed in an address space whose misses are retryable (the IOTLB):
 *            nothing was consumed; vt_vq_dev_fault() says where; pop again once the address
 *            space changed;
 *   -ENOBUFS the chain needs more than @iov_max iovecs: nothing consumed;
 *   -EPROTO  the queue is broken (vt_vq_dev_error() says why); every later call returns it.
 */
int vt_vq_dev_pop(struct vt_vq_dev *vq, struct vt_vq_chain *chain, struct iovec *iov,
		  unsigned int iov_max);

/*
 * Takes up to @max available buffers at once, as @max calls of vt_vq_dev_pop would, with the
 * per-call work done once: chains[i] gets iovecs iov[i * iov_per_chain ...] (at most
 * @iov_per_chain each). Returns how many were taken (0: none available). A chain that cannot be
 * taken ends the burst: the ones before it are returned, and the next call meets its error
 * first (the codes of vt_vq_dev_pop other than -EAGAIN, returned when nothing was taken); a
 * violation has broken the queue by then, as it would have on the single pop that met it. A
 * change of the address space's generation also ends a burst, so that every chain is taken
 * under current ring pointers.
 */
int vt_vq_dev_pop_burst(struct vt_vq_dev *vq, struct vt_vq_chain *chains, struct iovec *iov,
			unsigned int iov_per_chain, unsigned int max);

/*
 * Returns a buffer used, @written bytes having been written to its writable part. Only recorded:
 * ring memory is written at the next vt_vq_dev_flush. Only chain->id is read, so a device may
 * keep a copy of the chain rather than the chain itself. -EPROTO if the queue is broken or the
 * chain is not in flight (VT_VQ_ERR_NOT_IN_FLIGHT).
 */
int vt_vq_dev_push(struct vt_vq_dev *vq, const struct vt_vq_chain *chain, uint32_t written);

/*
 * vt_vq_dev_push for chains[0 .. n), written[i] bytes each (@written NULL: 0 for all). Stops at
 * the first that fails (-EPROTO, the queue broken), the ones before it pushed.
 */
int vt_vq_dev_push_burst(struct vt_vq_dev *vq, const struct vt_vq_chain *chains,
			 const uint32_t *written, unsigned int n);

/*
 * IN_ORDER only: returns every buffer in flight up to and including @last used, with a single
 * used entry ("In-order use of descriptors", both formats): the driver learns only @written for
 * @last (the others report 0).
 * Chains must have been popped in order, as IN_ORDER guarantees.
 */
int vt_vq_dev_push_in_order_batch(struct vt_vq_dev *vq, const struct vt_vq_chain *last,
				  uint32_t written);

/*
 * Writes the pushed used entries and publishes them. Returns true when the driver must be
 * notified. If the used ring cannot be reached right now (an IOTLB miss: vt_vq_dev_fault says
 * where), nothing is written, false is returned, and the entries wait for the next flush.
 */
bool vt_vq_dev_flush(struct vt_vq_dev *vq);

/* Available-buffer notification suppression (the device polls meanwhile). */
void vt_vq_dev_disable_notify(struct vt_vq_dev *vq);
/* Re-enables notifications, then re-checks: true when buffers arrived meanwhile (pop again). */
bool vt_vq_dev_enable_notify(struct vt_vq_dev *vq);

bool vt_vq_dev_is_broken(const struct vt_vq_dev *vq);
enum vt_vq_error vt_vq_dev_error(const struct vt_vq_dev *vq);
/* Where the last -EFAULT happened. */
struct vt_as_fault vt_vq_dev_fault(const struct vt_vq_dev *vq);
/* The next index to read, in the SET_VRING_BASE encoding (for GET_VRING_BASE). */
uint16_t vt_vq_dev_next_avail(const struct vt_vq_dev *vq);
/* Buffers popped and not yet pushed. */
unsigned int vt_vq_dev_in_flight(const struct vt_vq_dev *vq);

/* ---------------------------------------------------------------- driver half */

struct vt_vq_drv_params {
	unsigned int num;   /* queue size */
	uint64_t features;  /* negotiated */
	struct vt_dma *dma; /* rings are allocated and buffers mapped through it */
	/*
	 * Most segments an indirect table holds (0: 32). With INDIRECT_DESC negotiated, a buffer of
	 * more than one and at most this many segments goes into an indirect table.
	 */
	unsigned int indirect_max;
	const char *name;
	const struct vt_log *log;
};

struct vt_vq_drv_stats {
	uint64_t added, used, kicks, kicks_suppressed;
	uint64_t used_len_clamped; /* device reported more bytes than the buffer could hold */
};

struct vt_vq_drv;

int vt_vq_drv_new(const struct vt_vq_drv_params *params, struct vt_vq_drv **out);
/* Unmaps and frees; buffers still posted are forgotten (detach them first). */
void vt_vq_drv_free(struct vt_vq_drv *vq);

/* Bus addresses of the three ring areas, to tell the device (same meaning as the dev params). */
void vt_vq_drv_addrs(const struct vt_vq_drv *vq, uint64_t *desc_addr, uint64_t *driver_addr,
		     uint64_t *device_addr);

/*
 * Posts one buffer: sg[0 .. nreadable) for the device to read, then sg[nreadable ..
 * nreadable + nwritable) for it to write. Each element is mapped with the DMA API. @token (not
 * NULL) comes back from vt_vq_drv_get. Not visible to the device before vt_vq_drv_kick_prepare.
 * -ENOSPC: not enough free descriptors; -EINVAL: no segment, a zero-length one, or NULL token;
 * DMA errors pass through (nothing stays mapped).
 */
int vt_vq_drv_add(struct vt_vq_drv *vq, const struct iovec *sg, unsigned int nreadable,
		  unsigned int nwritable, void *token);

/*
 * Posts bufs[0 .. n) as @n buffers of one segment each, all for the device to read (@writable
 * false) or all for it to write, with tokens[i]: as @n calls of vt_vq_drv_add would, the
 * per-call work done once. Returns how many were posted. A buffer that cannot be posted ends
 * the burst; its error (the codes of vt_vq_drv_add: -ENOSPC once the ring is full) is returned
 * only when it is the first, and nothing of it stays mapped.
 */
int vt_vq_drv_add_burst(struct vt_vq_drv *vq, const struct iovec *bufs, unsigned int n,
			bool writable, void *const *tokens);

/* Publishes posted buffers. Returns true when the device must be notified. */
bool vt_vq_drv_kick_prepare(struct vt_vq_drv *vq);

/*
 * Collects a used buffer: 0 with its token and the bytes the device wrote (clamped to the
 * writable size posted, counted in used_len_clamped); -EAGAIN if none; -EPROTO if broken.
 */
int vt_vq_drv_get(struct vt_vq_drv *vq, void **token, uint32_t *len);

/*
 * vt_vq_drv_collect_begin, vt_vq_drv_collect_end - bracket several vt_vq_drv_get calls made by
 * one thread (a caller that checks each buffer as it collects it), as vt_vq_drv_get_burst
 * brackets its own: the queue's DMA batch (vt_dma_batch_begin), so that strict IOMMU mode
 * invalidates their buffers together, with one wait, at the end. Until collect_end returns, the
 * device may still reach those buffers: none may be reused or read as the device's answer
 * before then. collect_end returns vt_dma_batch_end's result (a failed invalidation leaves the
 * IOVAs reserved, and was logged).
 */
void vt_vq_drv_collect_begin(struct vt_vq_drv *vq);
int vt_vq_drv_collect_end(struct vt_vq_drv *vq);

/*
 * Collects up to @max used buffers as @max calls of vt_vq_drv_get would: tokens[i] and lens[i].
 * Returns how many (0: none used). A violation ends the burst: the buffers before it are
 * returned, the queue is broken, and -EPROTO comes back when nothing was collected.
 */
int vt_vq_drv_get_burst(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max);

void vt_vq_drv_disable_cb(struct vt_vq_drv *vq);
/* Re-enables used-buffer notifications, then re-checks: true when buffers are pending. */
bool vt_vq_drv_enable_cb(struct vt_vq_drv *vq);

/* After a device reset: hands back one posted buffer's token (unmapped), NULL when none left. */
void *vt_vq_drv_detach_unused(struct vt_vq_drv *vq);

/*
 * Prepares the ring for a device that starts over on it, as a vhost-user back-end restarted
 * after a crash does: every buffer posted and not yet used (made available or not) is laid out
 * again in the order it was posted, from the position after the last used one, and everything
 * is made available. *base is where such a device starts (SET_VRING_BASE): split, the used
 * index; packed, the used slot with its wrap counter in bit 15. It then sees each outstanding
 * buffer exactly once, whether or not it kept inflight records (vhost-user INFLIGHT_SHMFD).
 * No device may be running on the ring. -EBUSY: used buffers wait to be collected (collect them
 * first: they would be completed twice); -EPROTO: broken.
 */
int vt_vq_drv_rebase(struct vt_vq_drv *vq, uint32_t *base);

unsigned int vt_vq_drv_free_descs(const struct vt_vq_drv *vq);
bool vt_vq_drv_is_broken(const struct vt_vq_drv *vq);
enum vt_vq_error vt_vq_drv_error(const struct vt_vq_drv *vq);
void vt_vq_drv_get_stats(const struct vt_vq_drv *vq, struct vt_vq_drv_stats *stats);

#endif
