/* SPDX-License-Identifier: MIT */
/*
 * The virtio-blk device model (virtio 1.3 section 5.2), transport-agnostic: a disk (struct vt_blk:
 * backing, features, configuration space) and one request engine per virtqueue (struct
 * vt_blk_queue), which takes requests from a device-half virtqueue (virtqueue.h), executes them
 * against the backing and returns them used. A transport (vhost-user backend, shared-memory
 * transport) creates the queues and calls vt_blk_queue_poll when the driver kicks or when the
 * queue's completion eventfd fires.
 *
 * Backing: a regular file or a block device, driven through io_uring with many requests in flight
 * per queue (data moves straight between the backing and the chain's iovecs), or a RAM disk
 * served synchronously. Requests: IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES; anything else is
 * answered VIRTIO_BLK_S_UNSUPP.
 *
 * Malformed requests. The spec leaves the layout of a chain to the driver (2.7.4: the header,
 * data and status may share or straddle descriptors), so requests are parsed by byte offset over
 * the readable and writable parts: the 16-byte header is the first 16 readable bytes, the status
 * is the last writable byte, the data lies between. A chain that breaks a rule of 5.2.6 but has a
 * writable byte for the status (header shorter than 16 bytes, IN data that is device-readable,
 * OUT data that is device-writable, a length that is not a multiple of 512, a range past the
 * capacity, a DISCARD or WRITE_ZEROES payload beyond the advertised limits) is returned used
 * with VIRTIO_BLK_S_IOERR having touched nothing, and counted in `malformed`. A chain without any
 * writable byte cannot be answered at all: the queue is broken (-EPROTO, logged once), and the
 * transport sets DEVICE_NEEDS_RESET.
 *
 * `written` in the used entry counts the bytes the device wrote to the writable part: the data of
 * a successful IN or GET_ID plus the status byte; 1 for every other completion.
 *
 * Threading: a vt_blk is shared by its queues, each of which is used by one thread at a time
 * (different queues may run on different threads). vt_blk_config, vt_blk_config_write,
 * vt_blk_features_ok and vt_blk_queue_stats may be called from any thread.
 */
#ifndef VIRTUE_BLK_H
#define VIRTUE_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "spec/virtio_blk.h"
#include "virtqueue.h"

#define VT_BLK_MAX_QUEUES	  16
#define VT_BLK_MAX_QUEUE_SIZE	  1024 /* the largest queue a request engine accepts */
#define VT_BLK_DEFAULT_QUEUE_SIZE 256
#define VT_BLK_DEFAULT_SERIAL	  "virtue-blk"

/* Limits advertised in the configuration space and enforced on every request. */
#define VT_BLK_SIZE_MAX		   (1u << 20) /* size_max: bytes per segment (not enforced) */
#define VT_BLK_MAX_DISCARD_SECTORS (1u << 22) /* per segment, DISCARD and WRITE_ZEROES */
#define VT_BLK_MAX_DISCARD_SEG	   16	      /* segments per DISCARD or WRITE_ZEROES request */

struct vt_blk_params {
	/*
	 * Backing file or block device, opened read-write unless @read_only; NULL: a RAM disk of
	 * @size bytes (zeroed). The capacity of a file is its size rounded down to 512 bytes.
	 */
	const char *path;
	uint64_t size;	/* RAM disk size: a non-zero multiple of 512; 0 with @path */
	bool read_only; /* offers VIRTIO_BLK_F_RO; writes complete with IOERR */
	bool direct;	/* O_DIRECT on the backing (-EINVAL if the file system refuses it) */
	bool sync_io;	/* file backing without io_uring: one request at a time, inline */
	unsigned int num_queues;  /* 1..VT_BLK_MAX_QUEUES (0: 1); MQ is offered when > 1 */
	unsigned int queue_size;  /* 3..VT_BLK_MAX_QUEUE_SIZE (0: 256); seg_max = queue_size - 2 */
	const char *serial;	  /* GET_ID answer, at most 20 bytes; NULL: VT_BLK_DEFAULT_SERIAL */
	const struct vt_log *log; /* must outlive the disk; NULL: stderr */
};

struct vt_blk;

/*
 * vt_blk_new - open the backing and build the disk.
 *
 * Returns 0 with *out set, or -EINVAL (bad parameters, a backing that is neither a regular file
 * nor a block device, or O_DIRECT refused), -ENOMEM, or the -errno of open/fstat/ioctl.
 */
int vt_blk_new(const struct vt_blk_params *params, struct vt_blk **out);

/*
 * vt_blk_free - close the backing. Every queue must have been freed first. NULL is ignored.
 */
void vt_blk_free(struct vt_blk *blk);

/*
 * vt_blk_offered_features - the device-specific feature bits (0..23) the disk offers: SIZE_MAX,
 * SEG_MAX, BLK_SIZE, FLUSH, TOPOLOGY, and as applicable MQ (num_queues > 1), RO (read-only),
 * DISCARD, WRITE_ZEROES and CONFIG_WCE (writable disks). Transport bits (VERSION_1, EVENT_IDX,
 * RING_PACKED, IN_ORDER, ...) are the transport's to add; the engine supports all of them.
 */
uint64_t vt_blk_offered_features(const struct vt_blk *blk);

/*
 * vt_blk_features_ok - the driver set FEATURES_OK with @negotiated (a vt_device_ops.features_ok
 * hook). Resets the cache mode: `writeback` becomes 0 when CONFIG_WCE was negotiated without
 * FLUSH (5.2.5), 1 otherwise. Returns 0.
 */
int vt_blk_features_ok(struct vt_blk *blk, uint64_t negotiated);

/*
 * vt_blk_config - the configuration space (struct virtio_blk_config, little-endian, padding and
 * fields of features not offered zeroed), with the current `writeback`.
 */
void vt_blk_config(const struct vt_blk *blk, struct virtio_blk_config *config);

/*
 * vt_blk_config_write - the driver writes @len bytes at @offset of the configuration space (a
 * vt_device_ops.config_write hook). Only `writeback` is writable, and only when CONFIG_WCE was
 * negotiated: 0 selects writethrough (every later write is stable before it completes), 1
 * writeback. Returns 0, -EPERM (another field, or CONFIG_WCE not negotiated) or -EINVAL (a
 * value other than 0 or 1).
 */
int vt_blk_config_write(struct vt_blk *blk, uint32_t offset, const void *buf, uint32_t len);

/* vt_blk_capacity - the disk's size in 512-byte sectors. */
uint64_t vt_blk_capacity(const struct vt_blk *blk);

/* vt_blk_num_queues - the number of request queues (num_queues). */
unsigned int vt_blk_num_queues(const struct vt_blk *blk);

/*
 * vt_blk_flush_all - make every completed write stable (fdatasync of the backing), e.g. before
 * the backend exits. Synchronous. Returns 0 or -errno.
 */
int vt_blk_flush_all(struct vt_blk *blk);

/* ---------------------------------------------------------------- request queues */

struct vt_blk_queue;

struct vt_blk_queue_stats {
	uint64_t requests; /* completed, whatever their status */
	uint64_t reads, writes, flushes, discards, write_zeroes, get_ids;
	uint64_t bytes_read, bytes_written;
	uint64_t io_errors;   /* completed with VIRTIO_BLK_S_IOERR (malformed ones included) */
	uint64_t unsupported; /* completed with VIRTIO_BLK_S_UNSUPP */
	uint64_t malformed;   /* chains that broke a rule of 5.2.6 */
	uint64_t in_flight;   /* taken from the ring and not yet returned */
};

/*
 * vt_blk_queue_new - a request engine for one virtqueue of @blk.
 *
 * @vq is the device half the transport created (its size at most the disk's queue_size) with
 * the same @negotiated features; it stays the caller's and must outlive the queue. @name is for
 * log lines (copied). With a file backing (and not sync_io) the queue gets its own io_uring;
 * if the kernel refuses io_uring, the queue falls back to inline I/O with a warning.
 *
 * Returns 0 with *out set, or -EINVAL, -ENOMEM, or io_uring's -errno.
 */
int vt_blk_queue_new(struct vt_blk *blk, struct vt_vq_dev *vq, uint64_t negotiated,
		     const char *name, struct vt_blk_queue **out);

/*
 * vt_blk_queue_poll - do everything there is to do on the queue, without blocking.
 *
 * Reaps finished I/O, pops every available request (until the ring is empty or every request
 * slot is busy), executes it (RAM, inline I/O) or submits it (io_uring), returns completed
 * requests used (in order if VIRTIO_F_IN_ORDER was negotiated) and publishes them. Available
 * buffer notifications are disabled while the ring is being drained and re-enabled before
 * returning with the ring re-checked, so a request posted meanwhile is never missed; they stay
 * disabled while every slot is busy (the completion eventfd brings the caller back).
 *
 * Call it when the driver kicks, when vt_blk_queue_event_fd() is readable, and after an
 * address-space miss was resolved. *@notify is set when the driver must get a used-buffer
 * notification.
 *
 * Returns the number of requests completed (>= 0), or
 *   -EPROTO  the queue is broken (the driver violated the ring or request rules; logged once):
 *            the caller sets DEVICE_NEEDS_RESET; every later call returns -EPROTO;
 *   -EFAULT  the ring parked on an address-space miss (vt_vq_dev_fault() says where): the caller
 *            asks for a translation and polls again once it arrived. Completions were still
 *            returned (check *@notify).
 */
int vt_blk_queue_poll(struct vt_blk_queue *q, bool *notify);

/*
 * vt_blk_queue_event_fd - an eventfd (non-blocking) that becomes readable when submitted I/O
 * completes; the caller polls the queue then (vt_blk_queue_poll reads it). -1 when the queue
 * completes everything inline (RAM disk, sync_io).
 */
int vt_blk_queue_event_fd(const struct vt_blk_queue *q);

/*
 * vt_blk_queue_drain - wait (at most @timeout_ms) for every submitted request to finish, return
 * them used and publish them, without taking new ones: before stopping the queue (vhost-user
 * GET_VRING_BASE) or resetting the device. *@notify as for vt_blk_queue_poll.
 *
 * Returns 0 when nothing is in flight any more, -ETIMEDOUT otherwise.
 */
int vt_blk_queue_drain(struct vt_blk_queue *q, int timeout_ms, bool *notify);

/* vt_blk_queue_stats - counters of the queue; may be read from any thread. */
void vt_blk_queue_stats(const struct vt_blk_queue *q, struct vt_blk_queue_stats *stats);

/*
 * vt_blk_queue_free - drain (up to 5 s; a request the kernel still holds after that is logged
 * and abandoned), then free. Requests that finish are returned used. NULL is ignored.
 */
void vt_blk_queue_free(struct vt_blk_queue *q);

#endif
