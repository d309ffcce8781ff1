/* SPDX-License-Identifier: MIT */
/*
 * A driver half and a device half of one virtqueue in the test's own process: the driver posts
 * through the DMA API (direct) into a memfd, the device reads it through a memory table. Buffers
 * carry a known pattern, so that the device can tell which one it took and the driver can tell
 * the device's answer is in the one it collected. For tests of whole-ring behaviour (rebase,
 * bursts) rather than of hostile ring states, which vq_mock builds by hand.
 */
#ifndef VIRTUE_TESTS_VQ_PAIR_H
#define VIRTUE_TESTS_VQ_PAIR_H

#include <stdbool.h>
#include <stdint.h>

#include <virtue/dma.h>
#include <virtue/memtable.h>
#include <virtue/shm.h>
#include <virtue/virtqueue.h>

#define VQ_PAIR_BUFS	64 /* buffers the rig owns, reused */
#define VQ_PAIR_PAYLOAD 64 /* readable bytes per buffer; as many writable after them */

struct vq_pair_buf {
	uint8_t *mem; /* VQ_PAIR_PAYLOAD readable bytes, then VQ_PAIR_PAYLOAD writable */
	unsigned int segs;
	uint32_t seed;
	bool posted;
};

struct vq_pair {
	unsigned int qsize;
	bool packed;
	uint64_t features;
	struct vt_shm *shm;
	const struct vt_shm_region *region;
	struct vt_memtable *table;
	struct vt_dma *dma;
	struct vt_vq_drv *drv;
	struct vt_vq_dev *dev;
	void *inflight; /* NULL: the device keeps no records */
	struct vt_log log;
	struct vq_pair_buf bufs[VQ_PAIR_BUFS];
	uint32_t next_seed;
};

/* Both halves (the device from the ring's start); @inflight: the device keeps records. */
int vq_pair_init(struct vq_pair *r, unsigned int qsize, bool packed, bool indirect, bool inflight);
/* A new device half on the driver's ring, resuming at @base (SET_VRING_BASE's encoding). */
int vq_pair_dev_start(struct vq_pair *r, uint32_t base);
void vq_pair_destroy(struct vq_pair *r);

/* Host address of driver-physical @gpa (ring areas, say, to write hostile values into). */
void *vq_pair_hva(struct vq_pair *r, uint64_t gpa);

/* Posts buffer @i: 1 segment (readable), 2 (one each way) or 3 (two readable, one writable). */
int vq_pair_post(struct vq_pair *r, unsigned int i, unsigned int segs);
/* 0 when the chain the device took is buffer @i (its shape and its bytes), else -EBADMSG. */
int vq_pair_check(const struct vq_pair *r, const struct vt_vq_chain *c, const struct iovec *iov,
		  unsigned int i);
/* The device's answer: the readable bytes reversed into the writable part. Bytes written. */
uint32_t vq_pair_answer(const struct vt_vq_chain *c, const struct iovec *iov);
/* The driver collects one buffer: 0 when it is @i with the device's answer in it. */
int vq_pair_collect(struct vq_pair *r, unsigned int i);

#endif
