/* SPDX-License-Identifier: MIT */
/*
 * The virtio-blk driver's request engine for one virtqueue: requests checked against the decoded
 * configuration, laid out as header (+ segment payload), data, status (5.2.6) in slots of shared
 * memory allocated once, posted on the caller's driver-half virtqueue, and checked again when the
 * device returns them: the status byte must be a VIRTIO_BLK_S_* value and the used length must be
 * one the request can have.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/blk_driver.h>

#include "devices/slot_pool.h"

#define BLK_F(bit)	 VT_BIT(VIRTIO_BLK_F_##bit)
#define HEADER_BYTES	 ((uint32_t)sizeof(struct virtio_blk_outhdr))
#define SEGMENT_BYTES	 ((uint32_t)sizeof(struct virtio_blk_discard_write_zeroes))
#define STATUS_UNWRITTEN 0xffu	    /* what a status byte holds until the device writes it */
#define MAX_DATA_BYTES	 (1u << 31) /* per request: the used length must stay in 32 bits */
#define SECTORS(bytes)	 ((bytes) >> VIRTIO_BLK_SECTOR_SHIFT)

/* One request's memory and what it expects back. */
struct blk_slot {
	uint8_t *header; /* struct virtio_blk_outhdr, then DISCARD / WRITE_ZEROES segments */
	uint8_t *status;
	void *cookie;
	uint32_t type;
	uint32_t data_in;  /* bytes the device writes before the status (IN, GET_ID) */
	uint32_t data_out; /* bytes the device reads after the header (OUT) */
	bool busy;
};

struct vt_blk_driver_queue {
	struct vt_vq_drv *vq;
	struct vt_shm *shm;
	struct vt_blk_info info;
	const char *name;
	const struct vt_log *log;
	unsigned int num;
	unsigned int max_segments; /* data segments per read or write */
	unsigned int max_ranges;   /* segments the payload area of a slot holds */
	uint32_t block_sectors;	   /* blk_size in sectors: every range is aligned to it */
	bool in_order;		   /* the device may report 0 bytes for all but a batch's last */

	struct slot_pool pool; /* header, payload and status bytes of each request */
	struct blk_slot *slots;
	struct iovec *sg; /* scratch for the chain being posted: num entries */

	uint64_t clamped_seen; /* the virtqueue's used_len_clamped as last seen */
	bool logged_bad_status, logged_bad_length;
	struct vt_blk_driver_queue_stats stats;
};

static unsigned int min_u(unsigned int a, unsigned int b)
{
	return a < b ? a : b;
}

void vt_blk_driver_queue_free(struct vt_blk_driver_queue *q)
{
	if (!q)
		return;
	slot_pool_fini(&q->pool);
	free(q->slots);
	free(q->sg);
	free(q);
}

int vt_blk_driver_queue_new(const struct vt_blk_driver_queue_params *p,
			    struct vt_blk_driver_queue **out)
{
	*out = NULL;
	if (!p || !p->vq || !p->shm || !p->info || p->num < 3 || p->num > 32768)
		return -EINVAL;
	struct vt_blk_driver_queue *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->vq = p->vq;
	q->shm = p->shm;
	q->info = *p->info;
	q->name = p->name ? p->name : "blk";
	q->log = p->log;
	q->num = p->num;
	q->in_order = (q->info.features & VT_BIT(VIRTIO_F_IN_ORDER)) != 0;
	q->block_sectors = q->info.blk_size >> VIRTIO_BLK_SECTOR_SHIFT;
	if (q->block_sectors == 0)
		q->block_sectors = 1;
	/* The header and the status take a descriptor each (as seg_max counts, 5.2.4). */
	q->max_segments = q->num - 2;
	if (q->info.seg_max)
		q->max_segments = min_u(q->max_segments, q->info.seg_max);
	unsigned int ranges = 0;
	if (q->info.discard)
		ranges = q->info.max_discard_seg;
	if (q->info.write_zeroes && q->info.max_write_zeroes_seg > ranges)
		ranges = q->info.max_write_zeroes_seg;
	q->max_ranges = min_u(ranges, VT_BLK_DRIVER_MAX_RANGES);

	size_t payload = HEADER_BYTES + (size_t)q->max_ranges * SEGMENT_BYTES;
	q->slots = calloc(q->num, sizeof(*q->slots));
	q->sg = calloc(q->num, sizeof(*q->sg));
	int ret = q->slots && q->sg ? 0 : -ENOMEM;
	if (ret == 0)
		ret = slot_pool_init(&q->pool, q->shm, q->num, payload + 1);
	if (ret < 0) {
		vt_blk_driver_queue_free(q);
		return ret;
	}
	for (unsigned int i = 0; i < q->num; i++) {
		struct blk_slot *s = &q->slots[i];
		s->header = slot_pool_mem(&q->pool, i);
		s->status = s->header + payload;
	}
	struct vt_vq_drv_stats vs;
	vt_vq_drv_get_stats(q->vq, &vs);
	q->clamped_seen = vs.used_len_clamped;
	*out = q;
	return 0;
}

/* ---------------------------------------------------------------- checks */

static int reject(struct vt_blk_driver_queue *q, int err)
{
	q->stats.rejected++;
	return err;
}

/* [sector, sector + sectors) inside the disk, without overflowing. */
static bool in_capacity(const struct vt_blk_driver_queue *q, uint64_t sector, uint64_t sectors)
{
	return sector <= q->info.capacity_sectors && sectors <= q->info.capacity_sectors - sector;
}

/* A read or write: 0 and the data length, or -EINVAL. */
static int check_rw(const struct vt_blk_driver_queue *q, uint64_t sector, const struct iovec *iov,
		    unsigned int iovcnt, uint32_t *bytes)
{
	if (!iov || iovcnt == 0 || iovcnt > q->max_segments)
		return -EINVAL;
	uint64_t total = 0;
	for (unsigned int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len == 0 || !iov[i].iov_base)
			return -EINVAL;
		if (q->info.size_max && iov[i].iov_len > q->info.size_max)
			return -EINVAL;
		if (iov[i].iov_len > MAX_DATA_BYTES)
			return -EINVAL;
		total += iov[i].iov_len;
	}
	uint64_t block = (uint64_t)q->block_sectors << VIRTIO_BLK_SECTOR_SHIFT;
	if (total > MAX_DATA_BYTES || total % block || sector % q->block_sectors)
		return -EINVAL;
	if (!in_capacity(q, sector, SECTORS(total)))
		return -EINVAL;
	*bytes = (uint32_t)total;
	return 0;
}

/* A DISCARD or WRITE_ZEROES payload: 0 or -EINVAL. */
static int check_ranges(const struct vt_blk_driver_queue *q, bool discard,
			const struct vt_blk_range *ranges, unsigned int count)
{
	uint32_t max_seg = discard ? q->info.max_discard_seg : q->info.max_write_zeroes_seg;
	uint32_t max_sectors =
	    discard ? q->info.max_discard_sectors : q->info.max_write_zeroes_sectors;
	uint32_t align = q->block_sectors;

	if (!ranges || count == 0 || count > max_seg || count > q->max_ranges)
		return -EINVAL;
	for (unsigned int i = 0; i < count; i++) {
		const struct vt_blk_range *r = &ranges[i];
		if (r->num_sectors == 0 || r->num_sectors > max_sectors)
			return -EINVAL;
		/* 5.2.6.2: the unmap flag belongs to WRITE_ZEROES. */
		if (discard && r->unmap)
			return -EINVAL;
		if (r->sector % align || r->num_sectors % align)
			return -EINVAL;
		if (discard && q->info.discard_sector_alignment &&
		    (r->sector % q->info.discard_sector_alignment ||
		     r->num_sectors % q->info.discard_sector_alignment))
			return -EINVAL;
		if (!in_capacity(q, r->sector, r->num_sectors))
			return -EINVAL;
	}
	return 0;
}

/* ---------------------------------------------------------------- posting */

static struct blk_slot *slot_get(struct vt_blk_driver_queue *q)
{
	unsigned int i;
	if (!slot_pool_take(&q->pool, &i))
		return NULL;
	struct blk_slot *s = &q->slots[i];
	s->busy = true;
	return s;
}

static void slot_put(struct vt_blk_driver_queue *q, struct blk_slot *s)
{
	s->busy = false;
	s->cookie = NULL;
	slot_pool_put(&q->pool, (unsigned int)(s - q->slots));
}

/* The slot a virtqueue token names, or NULL when it is none of this engine's busy slots. */
static struct blk_slot *slot_of(const struct vt_blk_driver_queue *q, void *token)
{
	unsigned int i;

	if (!slot_index_of(q->slots, sizeof(*q->slots), q->num, token, &i))
		return NULL;
	return q->slots[i].busy ? &q->slots[i] : NULL;
}

/*
 * Writes the header, then posts header (+ @payload bytes of segments already written), the data
 * and the status. On failure the slot is released.
 */
static int post(struct vt_blk_driver_queue *q, struct blk_slot *s, uint32_t type, uint64_t sector,
		uint32_t payload, const struct iovec *data, unsigned int ndata, bool data_in,
		uint32_t data_bytes, void *cookie)
{
	struct virtio_blk_outhdr hdr = {
		.type = vt_cpu_to_le32(type),
		.reserved = 0,
		.sector = vt_cpu_to_le64(sector),
	};
	memcpy(s->header, &hdr, sizeof(hdr));
	/* Whatever the device leaves unwritten must not read as VIRTIO_BLK_S_OK. */
	*s->status = STATUS_UNWRITTEN;
	s->type = type;
	s->cookie = cookie;
	s->data_in = data_in ? data_bytes : 0;
	s->data_out = data_in ? 0 : data_bytes;

	unsigned int n = 0;
	q->sg[n++] = (struct iovec){ s->header, HEADER_BYTES + payload };
	for (unsigned int i = 0; i < ndata; i++)
		q->sg[n++] = data[i];
	q->sg[n++] = (struct iovec){ s->status, 1 };
	unsigned int nreadable = 1 + (data_in ? 0 : ndata);

	int ret = vt_vq_drv_add(q->vq, q->sg, nreadable, n - nreadable, s);
	if (ret < 0) {
		slot_put(q, s);
		if (ret == -ENOSPC) {
			/* Descriptors or DMA space come back with completions, if any are due. */
			if (q->stats.in_flight > 0) {
				q->stats.ring_full++;
				return -EAGAIN;
			}
			return -ENOSPC;
		}
		return ret;
	}
	q->stats.submitted++;
	q->stats.in_flight++;
	return 0;
}

/* The checks every type shares before its own: a live ring and a free slot. */
static int begin(struct vt_blk_driver_queue *q, struct blk_slot **s)
{
	if (vt_vq_drv_is_broken(q->vq))
		return -EPROTO;
	*s = slot_get(q);
	if (!*s) {
		q->stats.ring_full++;
		return -EAGAIN;
	}
	return 0;
}

static int submit_rw(struct vt_blk_driver_queue *q, bool in, uint64_t sector,
		     const struct iovec *iov, unsigned int iovcnt, void *cookie)
{
	uint32_t bytes = 0;

	if (!in && q->info.read_only)
		return reject(q, -EROFS);
	int ret = check_rw(q, sector, iov, iovcnt, &bytes);
	if (ret < 0)
		return reject(q, ret);
	struct blk_slot *s;
	if ((ret = begin(q, &s)) < 0)
		return ret;
	ret = post(q, s, in ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT, sector, 0, iov, iovcnt, in, bytes,
		   cookie);
	if (ret == 0) {
		if (in)
			q->stats.reads++;
		else
			q->stats.writes++;
	}
	return ret;
}

int vt_blk_driver_queue_read(struct vt_blk_driver_queue *q, uint64_t sector,
			     const struct iovec *iov, unsigned int iovcnt, void *cookie)
{
	return submit_rw(q, true, sector, iov, iovcnt, cookie);
}

int vt_blk_driver_queue_write(struct vt_blk_driver_queue *q, uint64_t sector,
			      const struct iovec *iov, unsigned int iovcnt, void *cookie)
{
	return submit_rw(q, false, sector, iov, iovcnt, cookie);
}

int vt_blk_driver_queue_flush(struct vt_blk_driver_queue *q, void *cookie)
{
	/* Without FLUSH the device may not know the type; it is writethrough anyway (5.2.5). */
	if (!q->info.flush)
		return reject(q, -ENOTSUP);
	struct blk_slot *s;
	int ret = begin(q, &s);
	if (ret == 0)
		ret = post(q, s, VIRTIO_BLK_T_FLUSH, 0, 0, NULL, 0, false, 0, cookie);
	if (ret == 0)
		q->stats.flushes++;
	return ret;
}

static int submit_ranges(struct vt_blk_driver_queue *q, bool discard,
			 const struct vt_blk_range *ranges, unsigned int count, void *cookie)
{
	if (!(discard ? q->info.discard : q->info.write_zeroes))
		return reject(q, -ENOTSUP);
	if (q->info.read_only)
		return reject(q, -EROFS);
	int ret = check_ranges(q, discard, ranges, count);
	if (ret < 0)
		return reject(q, ret);
	struct blk_slot *s;
	if ((ret = begin(q, &s)) < 0)
		return ret;
	for (unsigned int i = 0; i < count; i++) {
		struct virtio_blk_discard_write_zeroes seg = {
			.sector = vt_cpu_to_le64(ranges[i].sector),
			.num_sectors = vt_cpu_to_le32(ranges[i].num_sectors),
			.flags = vt_cpu_to_le32(ranges[i].unmap ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
								: 0),
		};
		memcpy(s->header + HEADER_BYTES + (size_t)i * SEGMENT_BYTES, &seg, sizeof(seg));
	}
	ret = post(q, s, discard ? VIRTIO_BLK_T_DISCARD : VIRTIO_BLK_T_WRITE_ZEROES, 0,
		   count * SEGMENT_BYTES, NULL, 0, false, 0, cookie);
	if (ret == 0) {
		if (discard)
			q->stats.discards++;
		else
			q->stats.write_zeroes++;
	}
	return ret;
}

int vt_blk_driver_queue_discard(struct vt_blk_driver_queue *q, const struct vt_blk_range *ranges,
				unsigned int count, void *cookie)
{
	return submit_ranges(q, true, ranges, count, cookie);
}

int vt_blk_driver_queue_write_zeroes(struct vt_blk_driver_queue *q,
				     const struct vt_blk_range *ranges, unsigned int count,
				     void *cookie)
{
	return submit_ranges(q, false, ranges, count, cookie);
}

int vt_blk_driver_queue_get_id(struct vt_blk_driver_queue *q, void *id, void *cookie)
{
	if (!id)
		return reject(q, -EINVAL);
	struct blk_slot *s;
	int ret = begin(q, &s);
	struct iovec data = { id, VIRTIO_BLK_ID_BYTES };
	if (ret == 0)
		ret = post(q, s, VIRTIO_BLK_T_GET_ID, 0, 0, &data, 1, true, VIRTIO_BLK_ID_BYTES,
			   cookie);
	if (ret == 0)
		q->stats.get_ids++;
	return ret;
}

bool vt_blk_driver_queue_kick(struct vt_blk_driver_queue *q)
{
	return vt_vq_drv_kick_prepare(q->vq);
}

/* ---------------------------------------------------------------- completions */

static void device_violation(struct vt_blk_driver_queue *q, bool *logged, uint64_t *counter,
			     const struct blk_slot *s, const char *what, uint32_t value)
{
	(*counter)++;
	if (*logged)
		return;
	*logged = true;
	vt_log(q->log, VT_LOG_ERROR,
	       "%s: device broke virtio-blk 5.2.6: %s (%u) for a request of type %u; completed "
	       "with -EIO (logged once)",
	       q->name, what, value, s->type);
}

/*
 * What a used buffer says. @over: the device reported more bytes than the writable part holds
 * (the virtqueue clamped it). The used length counts every byte written, the status included
 * (2.7.8); with IN_ORDER only a batch's last buffer carries one, the others report 0.
 */
static void complete(struct vt_blk_driver_queue *q, struct blk_slot *s, uint32_t len, bool over,
		     struct vt_blk_completion *c)
{
	/* Read once: a hostile device may still be writing it. */
	uint8_t status = *(volatile uint8_t *)s->status;
	bool len_unknown = len == 0 && q->in_order;

	*c = (struct vt_blk_completion){
		.cookie = s->cookie,
		.result = -EIO,
		.status = status,
		.type = s->type,
	};
	if (over) {
		device_violation(q, &q->logged_bad_length, &q->stats.bad_length, s,
				 "used length longer than the writable part", len);
	} else if (len == 0 && !len_unknown) {
		device_violation(q, &q->logged_bad_length, &q->stats.bad_length, s,
				 "used length 0: the status byte was not written", len);
	} else if (status > VIRTIO_BLK_S_UNSUPP) {
		device_violation(q, &q->logged_bad_status, &q->stats.bad_status, s,
				 "status byte is no VIRTIO_BLK_S_* value", status);
	} else if (status == VIRTIO_BLK_S_IOERR) {
		q->stats.io_errors++;
	} else if (status == VIRTIO_BLK_S_UNSUPP) {
		q->stats.unsupported++;
		c->result = -ENOTSUP;
	} else if (s->type == VIRTIO_BLK_T_IN && !len_unknown && len != s->data_in + 1) {
		device_violation(q, &q->logged_bad_length, &q->stats.bad_length, s,
				 "successful read with a used length other than its data + 1", len);
	} else {
		c->result = 0;
		if (s->type == VIRTIO_BLK_T_IN) {
			c->bytes = s->data_in;
			q->stats.bytes_read += s->data_in;
		} else if (s->type == VIRTIO_BLK_T_GET_ID) {
			c->bytes = len_unknown ? s->data_in : len - 1;
		} else if (s->type == VIRTIO_BLK_T_OUT) {
			c->bytes = s->data_out;
			q->stats.bytes_written += s->data_out;
		}
	}
	q->stats.completed++;
	q->stats.in_flight--;
	slot_put(q, s);
}

/* Completions collected at a time: a chunk's buffers are invalidated together (strict DMA). */
#define POLL_CHUNK 32u

int vt_blk_driver_queue_poll(struct vt_blk_driver_queue *q, struct vt_blk_completion *out,
			     unsigned int max)
{
	struct vt_vq_drv_stats vs;
	unsigned int n = 0;
	int err = 0;

	while (n < max && !err) {
		struct {
			struct blk_slot *s;
			uint32_t len;
			bool over;
		} got[POLL_CHUNK];
		unsigned int k = 0, want = min_u(max - n, POLL_CHUNK);
		/*
		 * Collected first, completed after: with strict IOMMU DMA the device may reach a
		 * buffer until the collection ends (its invalidation published with the others'),
		 * so no request goes back to its caller, nor its slot to the pool, before then.
		 */
		vt_vq_drv_collect_begin(q->vq);
		while (k < want) {
			void *token;
			uint32_t len;
			int ret = vt_vq_drv_get(q->vq, &token, &len);
			if (ret == -EAGAIN)
				break;
			if (ret < 0) {
				err = ret;
				break;
			}
			struct blk_slot *s = slot_of(q, token);
			if (!s) {
				/* Someone else posted on this ring: nothing of ours to report. */
				vt_log(q->log, VT_LOG_ERROR,
				       "%s: a used buffer that this engine did not post (token %p)",
				       q->name, token);
				continue;
			}
			/* The virtqueue clamps an over-long length and counts it: a rise is this
			 * one. */
			vt_vq_drv_get_stats(q->vq, &vs);
			got[k].over = vs.used_len_clamped != q->clamped_seen;
			q->clamped_seen = vs.used_len_clamped;
			got[k].s = s;
			got[k++].len = len;
		}
		vt_vq_drv_collect_end(q->vq);
		for (unsigned int i = 0; i < k; i++)
			complete(q, got[i].s, got[i].len, got[i].over, &out[n++]);
		if (k < want)
			break;
	}
	return n || !err ? (int)n : err;
}

static void cancelled(struct vt_blk_driver_queue *q, struct blk_slot *s,
		      struct vt_blk_completion *c)
{
	*c = (struct vt_blk_completion){
		.cookie = s->cookie,
		.result = -ECANCELED,
		.status = STATUS_UNWRITTEN,
		.type = s->type,
	};
	q->stats.cancelled++;
	q->stats.completed++;
	q->stats.in_flight--;
	slot_put(q, s);
}

int vt_blk_driver_queue_cancel(struct vt_blk_driver_queue *q, struct vt_blk_completion *out,
			       unsigned int max)
{
	unsigned int n = 0;

	while (n < max) {
		void *token = vt_vq_drv_detach_unused(q->vq);
		if (!token)
			break;
		struct blk_slot *s = slot_of(q, token);
		if (s)
			cancelled(q, s, &out[n++]);
	}
	return (int)n;
}

int vt_blk_driver_queue_forget(struct vt_blk_driver_queue *q, void *token,
			       struct vt_blk_completion *out)
{
	struct blk_slot *s = slot_of(q, token);
	if (!s)
		return -EINVAL;
	cancelled(q, s, out);
	return 0;
}

unsigned int vt_blk_driver_queue_in_flight(const struct vt_blk_driver_queue *q)
{
	return q->stats.in_flight;
}

unsigned int vt_blk_driver_queue_max_segments(const struct vt_blk_driver_queue *q)
{
	return q->max_segments;
}

const struct vt_blk_info *vt_blk_driver_queue_info(const struct vt_blk_driver_queue *q)
{
	return &q->info;
}

void vt_blk_driver_queue_get_stats(const struct vt_blk_driver_queue *q,
				   struct vt_blk_driver_queue_stats *stats)
{
	*stats = q->stats;
	struct vt_vq_drv_stats vs; /* the ring counts kicks; a second count could only drift */
	vt_vq_drv_get_stats(q->vq, &vs);
	stats->kicks = vs.kicks, stats->kicks_suppressed = vs.kicks_suppressed;
}
