/* SPDX-License-Identifier: MIT */
/*
 * The virtio-blk driver (virtio 1.3 section 5.2), transport-agnostic: the configuration space
 * decoded (struct vt_blk_info), and one request engine per virtqueue (struct
 * vt_blk_driver_queue) over a driver half (virtqueue.h) that a transport created, such as the
 * vhost-user front-end's vt_vu_frontend_vq(). The engine builds requests (header, data, status)
 * and posts them, checks each request against the decoded limits before it reaches the ring,
 * and checks what the device returns (status byte, used length) before reporting a completion.
 *
 * Memory: the data buffers are the caller's, allocated where the DMA mode can map them (shared
 * memory, vt_shm_alloc, for direct and iommu; anywhere for bounce). Request headers, status bytes
 * and DISCARD / WRITE_ZEROES payloads live in shared memory the engine allocates once, at
 * creation, from the same struct vt_shm; the virtqueue maps every segment through the DMA API
 * when it is posted and unmaps it when it comes back, so the same code is right in every DMA
 * mode (in bounce mode the status byte and read data are copied back at that unmap).
 *
 * Sectors are 512 bytes on the wire whatever blk_size says (5.2.6); when BLK_SIZE is negotiated
 * the engine also keeps every request aligned to blk_size, as Linux treats it as the logical
 * block size.
 *
 * Threading: a queue is used by one thread at a time (different queues by different threads);
 * the decoding functions have no state.
 */
#ifndef VIRTUE_BLK_DRIVER_H
#define VIRTUE_BLK_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "log.h"
#include "shm.h"
#include "spec/virtio_blk.h"
#include "spec/virtio_config.h"
#include "virtqueue.h"

/*
 * The device-type feature bits this driver implements: give them (with the transport bits you
 * want) as vt_driver_params.supported or vt_vu_frontend_params.supported.
 */
#define VT_BLK_DRIVER_FEATURES                                                                     \
	(VT_BIT(VIRTIO_BLK_F_SIZE_MAX) | VT_BIT(VIRTIO_BLK_F_SEG_MAX) |                            \
	 VT_BIT(VIRTIO_BLK_F_GEOMETRY) | VT_BIT(VIRTIO_BLK_F_RO) | VT_BIT(VIRTIO_BLK_F_BLK_SIZE) | \
	 VT_BIT(VIRTIO_BLK_F_FLUSH) | VT_BIT(VIRTIO_BLK_F_TOPOLOGY) |                              \
	 VT_BIT(VIRTIO_BLK_F_CONFIG_WCE) | VT_BIT(VIRTIO_BLK_F_MQ) |                               \
	 VT_BIT(VIRTIO_BLK_F_DISCARD) | VT_BIT(VIRTIO_BLK_F_WRITE_ZEROES))

/* Most DISCARD / WRITE_ZEROES segments the engine puts in one request (whatever is advertised). */
#define VT_BLK_DRIVER_MAX_RANGES 64

/* ---------------------------------------------------------------- configuration */

/*
 * The configuration space as the negotiated features let a driver read it. A field whose
 * feature was not negotiated holds its "not advertised" value, given beside it.
 */
struct vt_blk_info {
	uint64_t features;	   /* negotiated, as given to vt_blk_config_decode */
	uint64_t capacity_sectors; /* 512-byte sectors */
	uint64_t capacity_bytes;
	uint32_t size_max;  /* SIZE_MAX: bytes per data segment; 0: no limit */
	uint32_t seg_max;   /* SEG_MAX: data segments per request; 0: no limit but the ring's */
	uint16_t cylinders; /* GEOMETRY; 0 otherwise */
	uint8_t heads, sectors_per_track;
	uint32_t blk_size; /* BLK_SIZE: logical block size, a power of two >= 512; 512 otherwise */
	/* TOPOLOGY; 0 otherwise */
	uint8_t physical_block_exp; /* physical block = blk_size << physical_block_exp */
	uint8_t alignment_offset;   /* in logical blocks */
	uint16_t min_io_size;	    /* in logical blocks */
	uint32_t opt_io_size;	    /* in logical blocks */
	bool read_only;		    /* RO */
	bool flush;		    /* FLUSH: the device takes FLUSH requests */
	bool config_wce;	    /* CONFIG_WCE: `writeback` is the device's and writable */
	bool writeback;	     /* the cache mode: the writeback field with CONFIG_WCE, else FLUSH */
	uint16_t num_queues; /* MQ: request queues; 1 otherwise */
	bool discard;	     /* DISCARD, with its limits */
	uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
	bool write_zeroes; /* WRITE_ZEROES, with its limits */
	uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
	bool write_zeroes_may_unmap;
};

/*
 * vt_blk_config_decode - decode @len bytes of a virtio-blk configuration space (struct
 * virtio_blk_config, little-endian, as read from the device) under the @features negotiated.
 *
 * Only fields whose feature is negotiated are read; a config too short to hold them is refused.
 * Returns 0 with *@info filled, or -EINVAL: @len shorter than `capacity` or than a negotiated
 * feature's field, or a value no request could satisfy (capacity past 2^55 sectors, blk_size not
 * a power of two in [512, 64 KiB], seg_max 0, num_queues 0, a DISCARD or WRITE_ZEROES
 * limit of 0).
 */
int vt_blk_config_decode(const void *config, size_t len, uint64_t features,
			 struct vt_blk_info *info);

/*
 * vt_blk_info_str - @info as "name: value" lines (capacity, block size, limits, cache mode,
 * queues, discard, write zeroes, ...), for `virtue info`. Returns what snprintf returns: the
 * length the whole text needs (it is cut to fit @size, NUL-terminated when @size > 0).
 */
int vt_blk_info_str(const struct vt_blk_info *info, char *buf, size_t size);

/*
 * vt_blk_id_str - the GET_ID answer (@bytes of it, at most VIRTIO_BLK_ID_BYTES, NUL-padded and
 * not terminated when full) as a C string: up to the first NUL, bytes outside printable ASCII
 * replaced by '?'. @out holds VIRTIO_BLK_ID_BYTES + 1 bytes. Returns @out.
 */
char *vt_blk_id_str(const void *id, size_t bytes, char *out);

/* ---------------------------------------------------------------- request queues */

/* One DISCARD or WRITE_ZEROES segment. */
struct vt_blk_range {
	uint64_t sector;      /* 512-byte sectors */
	uint32_t num_sectors; /* at least 1 */
	bool unmap;	      /* WRITE_ZEROES only: the device may deallocate (5.2.6.2) */
};

/* A finished request, as vt_blk_driver_queue_poll reports it. */
struct vt_blk_completion {
	void *cookie; /* as submitted */
	/*
	 * 0 (VIRTIO_BLK_S_OK); -EIO: the device answered VIRTIO_BLK_S_IOERR, or broke the protocol
	 * (a status byte that is no VIRTIO_BLK_S_* value, a used length that contradicts the
	 * request: counted in bad_status / bad_length); -ENOTSUP: VIRTIO_BLK_S_UNSUPP;
	 * -ECANCELED: taken back unanswered (vt_blk_driver_queue_cancel, _forget).
	 */
	int result;
	uint8_t status; /* the status byte as read (0xff when cancelled) */
	uint32_t type;	/* VIRTIO_BLK_T_* */
	/*
	 * Data moved, on success: IN and OUT the data length; GET_ID the id bytes the device
	 * wrote; 0 for the other types and for failures.
	 */
	uint32_t bytes;
};

struct vt_blk_driver_queue_params {
	struct vt_vq_drv *vq; /* the caller's (e.g. vt_vu_frontend_vq); must outlive the engine */
	unsigned int num;     /* the queue size @vq was created with (at least 3) */
	/* Where the engine allocates headers, status bytes and segment payloads. */
	struct vt_shm *shm;
	/* The decoded configuration, with the features negotiated for the device (copied). */
	const struct vt_blk_info *info;
	const char *name; /* for log lines (not copied: must outlive the engine); NULL: "blk" */
	const struct vt_log *log;
};

struct vt_blk_driver_queue_stats {
	uint64_t submitted, completed;
	uint64_t reads, writes, flushes, discards, write_zeroes, get_ids; /* submitted */
	uint64_t bytes_read, bytes_written;				  /* completed with OK */
	uint64_t io_errors;   /* completed with VIRTIO_BLK_S_IOERR */
	uint64_t unsupported; /* completed with VIRTIO_BLK_S_UNSUPP */
	uint64_t bad_status;  /* the device wrote a status byte that is no VIRTIO_BLK_S_* */
	uint64_t bad_length;  /* the device reported a used length the request cannot have */
	uint64_t rejected;    /* submissions refused before reaching the ring (checks) */
	uint64_t ring_full;   /* submissions answered -EAGAIN */
	uint64_t kicks, kicks_suppressed; /* the ring's (vt_vq_drv_stats) */
	uint64_t cancelled;
	unsigned int in_flight; /* submitted, not yet reported */
};

struct vt_blk_driver_queue;

/*
 * vt_blk_driver_queue_new - a request engine for one virtqueue.
 *
 * Allocates @num request slots (header, status, segment payload each) from params->shm, so at
 * most @num requests are in flight. Returns 0 with *@out set, -EINVAL (no vq, shm or info, num
 * below 3), -ENOMEM (including shared memory exhausted).
 */
int vt_blk_driver_queue_new(const struct vt_blk_driver_queue_params *params,
			    struct vt_blk_driver_queue **out);

/*
 * vt_blk_driver_queue_free - free the engine and its shared memory. Requests still posted must
 * have been taken back first (the device stopped, then _cancel or _forget): their tokens point
 * into the engine. NULL is ignored.
 */
void vt_blk_driver_queue_free(struct vt_blk_driver_queue *q);

/*
 * Submitting. Each call checks the request, builds it and posts it, invisible to the device until
 * vt_blk_driver_queue_kick; @cookie (any value, NULL too) comes back in its completion. Returns 0,
 * or with nothing posted:
 *   -EINVAL   the request breaks a limit: no segment or a zero-length one, a data length or
 *             sector not a multiple of blk_size (512 without BLK_SIZE), a range past the
 *             capacity, more data segments than seg_max (or than the ring holds), a segment
 *             longer than size_max, more data than 2 GiB; DISCARD / WRITE_ZEROES: no range or
 *             more than max_*_seg (or VT_BLK_DRIVER_MAX_RANGES), a range of 0 or more than
 *             max_*_sectors sectors, a discard range not aligned to discard_sector_alignment,
 *             unmap on a discard;
 *   -ENOTSUP  the type's feature was not negotiated (FLUSH, DISCARD, WRITE_ZEROES);
 *   -EROFS    a write, discard or write-zeroes on a read-only device (RO);
 *   -EAGAIN   the ring (or a request slot, or DMA space) is full: poll completions, then retry;
 *   -ENOSPC   DMA space is exhausted with nothing in flight: the request can never fit;
 *   -EPROTO   the virtqueue is broken (the device violated the ring rules);
 *   other     the DMA API's error (-EFAULT: a buffer the DMA mode cannot map).
 */
int vt_blk_driver_queue_read(struct vt_blk_driver_queue *q, uint64_t sector,
			     const struct iovec *iov, unsigned int iovcnt, void *cookie);
int vt_blk_driver_queue_write(struct vt_blk_driver_queue *q, uint64_t sector,
			      const struct iovec *iov, unsigned int iovcnt, void *cookie);
int vt_blk_driver_queue_flush(struct vt_blk_driver_queue *q, void *cookie);
int vt_blk_driver_queue_discard(struct vt_blk_driver_queue *q, const struct vt_blk_range *ranges,
				unsigned int count, void *cookie);
int vt_blk_driver_queue_write_zeroes(struct vt_blk_driver_queue *q,
				     const struct vt_blk_range *ranges, unsigned int count,
				     void *cookie);
/* GET_ID: @id is VIRTIO_BLK_ID_BYTES of caller memory the DMA mode can map; see vt_blk_id_str. */
int vt_blk_driver_queue_get_id(struct vt_blk_driver_queue *q, void *id, void *cookie);

/*
 * vt_blk_driver_queue_kick - publish everything submitted since the last kick (one notification
 * decision for a batch). Returns true when the device must be notified (the transport's kick).
 */
bool vt_blk_driver_queue_kick(struct vt_blk_driver_queue *q);

/*
 * vt_blk_driver_queue_poll - collect up to @max finished requests into @out, in the order the
 * device returned them (any order unless IN_ORDER). Returns how many (0: none yet), or -EPROTO
 * when the virtqueue is broken and nothing was collected (the requests still posted can be taken
 * back after the device is stopped or reset: _cancel, _forget).
 */
int vt_blk_driver_queue_poll(struct vt_blk_driver_queue *q, struct vt_blk_completion *out,
			     unsigned int max);

/*
 * vt_blk_driver_queue_cancel - once the device no longer touches the ring (queue stopped or
 * device reset), take back up to @max posted requests that never came back
 * (vt_vq_drv_detach_unused), each reported -ECANCELED. Returns how many; 0 when none is left.
 */
int vt_blk_driver_queue_cancel(struct vt_blk_driver_queue *q, struct vt_blk_completion *out,
			       unsigned int max);

/*
 * vt_blk_driver_queue_forget - a request's virtqueue token a transport handed back (e.g.
 * vt_vu_frontend_reset's release callback) becomes a -ECANCELED completion in *@out. Returns 0,
 * or -EINVAL when @token is not a request of this engine in flight.
 */
int vt_blk_driver_queue_forget(struct vt_blk_driver_queue *q, void *token,
			       struct vt_blk_completion *out);

/* Requests submitted and not yet reported. */
unsigned int vt_blk_driver_queue_in_flight(const struct vt_blk_driver_queue *q);
/* The most data segments one read or write may have (seg_max and the ring). */
unsigned int vt_blk_driver_queue_max_segments(const struct vt_blk_driver_queue *q);
/* The configuration the engine checks against. */
const struct vt_blk_info *vt_blk_driver_queue_info(const struct vt_blk_driver_queue *q);
void vt_blk_driver_queue_get_stats(const struct vt_blk_driver_queue *q,
				   struct vt_blk_driver_queue_stats *stats);

#endif
