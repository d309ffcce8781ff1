/* SPDX-License-Identifier: MIT */
/*
 * Driver half of the split virtqueue (virtio 1.3 section 2.7). The driver writes descriptors and
 * the available ring, and trusts nothing it reads back: used entries are checked against its own
 * record of what it posted (vq_desc_shadow, vq_buffer_state), never against ring memory.
 */
#include <errno.h>
#include <string.h>

#include "ring_access.h"
#include "vq_impl.h"

#define SPLIT_NO_DESC 0xffff

static struct virtq_desc *ring_desc(struct vt_vq_drv *vq)
{
	return vq->desc_mem;
}

static struct virtq_avail *ring_avail(struct vt_vq_drv *vq)
{
	return vq->driver_mem;
}

static struct virtq_used *ring_used(struct vt_vq_drv *vq)
{
	return vq->device_mem;
}

int vq_split_drv_init(struct vt_vq_drv *vq)
{
	vq->desc_size = virtq_split_desc_size(vq->num);
	vq->driver_size = virtq_split_avail_size(vq->num);
	vq->device_size = virtq_split_used_size(vq->num);
	/* Coherent memory is zeroed: flags 0 and indices 0 are the spec's initial state. */
	int ret = vt_dma_alloc_coherent(vq->dma, vq->desc_size, &vq->desc_mem, &vq->desc_bus);
	if (ret == 0)
		ret = vt_dma_alloc_coherent(vq->dma, vq->driver_size, &vq->driver_mem,
					    &vq->driver_bus);
	if (ret == 0)
		ret = vt_dma_alloc_coherent(vq->dma, vq->device_size, &vq->device_mem,
					    &vq->device_bus);
	if (ret < 0)
		return ret;
	for (unsigned int i = 0; i < vq->num; i++)
		vq->shadow[i].next = (uint16_t)(i + 1 < vq->num ? i + 1 : SPLIT_NO_DESC);
	vq->free_head = 0;
	vq->num_free = vq->num;
	return 0;
}

static void write_desc(struct virtq_desc *d, uint64_t addr, uint32_t len, uint16_t flags,
		       uint16_t next)
{
	ring_write64(&d->addr, addr);
	/* len, flags and next in one store (the table is 16-byte aligned). */
	uint64_t tail = len | (uint64_t)flags << 32 | (uint64_t)next << 48;
	__atomic_store_n((uint64_t *)&d->len, vt_cpu_to_le64(tail), __ATOMIC_RELAXED);
}

/* Posts @n segments through an indirect table: one ring descriptor. */
static int add_indirect(struct vt_vq_drv *vq, uint16_t head, const struct iovec *sg,
			unsigned int nreadable, unsigned int nwritable)
{
	unsigned int n = nreadable + nwritable;
	size_t offset = (size_t)head * vq->indirect_max;
	struct vq_desc_shadow *ts = vq_drv_table_shadow(vq, head);
	struct virtq_desc *table = (struct virtq_desc *)vq->indirect_mem + offset;

	int ret = vq_drv_map_segments(vq, sg, nreadable, nwritable, ts);
	if (ret < 0)
		return ret;
	for (unsigned int i = 0; i < n; i++) {
		uint16_t flags = ts[i].flags | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
		/* IN_ORDER or not, sequential indices are what 2.7.5.3.1 asks for in-order. */
		write_desc(&table[i], ts[i].bus, ts[i].len, flags,
			   (uint16_t)(i + 1 < n ? i + 1 : 0));
	}
	uint64_t table_bus = vq->indirect_bus + offset * sizeof(struct virtq_desc);
	uint32_t table_len = n * (uint32_t)sizeof(struct virtq_desc);
	vq->shadow[head].bus = table_bus;
	vq->shadow[head].len = table_len;
	vq->shadow[head].flags = VIRTQ_DESC_F_INDIRECT;
	write_desc(&ring_desc(vq)[head], table_bus, table_len, VIRTQ_DESC_F_INDIRECT, 0);
	return 0;
}

/*
 * Maps and writes a buffer of several segments: an indirect table, or a chain of descriptors
 * from @head. *@last: its last ring descriptor. Out of line: the one-segment path stays small.
 */
static __attribute__((noinline)) int add_segments(struct vt_vq_drv *vq, uint16_t head,
						  const struct iovec *sg, unsigned int nreadable,
						  unsigned int nwritable, bool indirect,
						  uint16_t *last)
{
	unsigned int n = nreadable + nwritable;
	uint16_t mask = (uint16_t)(vq->num - 1);
	int ret;

	*last = head;
	if (indirect)
		return add_indirect(vq, head, sg, nreadable, nwritable);
	/* Map into the shadows of the descriptors the chain will occupy. */
	uint16_t d = head;
	for (unsigned int i = 0; i < n; i++) {
		ret = vq_drv_map_one(vq, &sg[i], i >= nreadable, &vq->shadow[d]);
		if (ret < 0) {
			for (uint16_t u = head, k = 0; k < i; k++) {
				vq_drv_unmap_segments(vq, &vq->shadow[u], 1);
				u = vq->in_order ? (uint16_t)((u + 1) & mask) : vq->shadow[u].next;
			}
			return ret;
		}
		*last = d;
		if (vq->in_order)
			vq->shadow[d].next = (uint16_t)((d + 1) & mask);
		d = vq->shadow[d].next;
	}
	/* Write them, linked; the descriptors are not visible before avail idx moves. */
	d = head;
	for (unsigned int i = 0; i < n; i++) {
		uint16_t flags = vq->shadow[d].flags | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
		write_desc(&ring_desc(vq)[d], vq->shadow[d].bus, vq->shadow[d].len, flags,
			   i + 1 < n ? vq->shadow[d].next : 0);
		d = vq->shadow[d].next;
	}
	return 0;
}

/* Takes buffer @head, of @ndesc descriptors ending at @last, off the free descriptors and makes
 * it the next avail entry (published by kick_prepare). */
static inline void post_buffer(struct vt_vq_drv *vq, uint16_t head, unsigned int ndesc,
			       uint16_t last)
{
	uint16_t mask = (uint16_t)(vq->num - 1);

	if (vq->in_order)
		vq->in_order_next = (uint16_t)((head + ndesc) & mask);
	else
		vq->free_head = vq->shadow[last].next;
	vq->num_free -= ndesc;
	if (vq->in_order)
		vq_drv_order_push(vq, head);

	ring_write16(&ring_avail(vq)->ring[vq->avail_idx_shadow & mask], head);
	vq->avail_idx_shadow++;
}

/* One segment, one descriptor: the common case, without the chain loops. The caller checked
 * that a descriptor is free. */
static inline int add_one_segment(struct vt_vq_drv *vq, const struct iovec *sg, bool writable,
				  void *token)
{
	uint16_t head = vq->in_order ? vq->in_order_next : vq->free_head;
	struct vq_desc_shadow *sh = &vq->shadow[head];

	int ret = vq_drv_map_one(vq, sg, writable, sh);
	if (ret < 0)
		return ret;
	if (vq->in_order)
		sh->next = (uint16_t)((head + 1) & (vq->num - 1));
	write_desc(&ring_desc(vq)[head], sh->bus, sh->len, sh->flags, 0);
	vq_drv_record(vq, head, token, 1, sg, !writable, 1, false, head);
	post_buffer(vq, head, 1, head);
	return 0;
}

int vq_split_drv_add(struct vt_vq_drv *vq, const struct iovec *sg, unsigned int nreadable,
		     unsigned int nwritable, void *token)
{
	unsigned int n = nreadable + nwritable;
	bool indirect = vq_drv_wants_indirect(vq, n);
	unsigned int need = indirect ? 1 : n;

	if (need > vq->num_free)
		return -ENOSPC;
	if (n == 1)
		return add_one_segment(vq, sg, nwritable != 0, token);

	uint16_t head = vq->in_order ? vq->in_order_next : vq->free_head;
	uint16_t last = head;
	int ret = add_segments(vq, head, sg, nreadable, nwritable, indirect, &last);
	if (ret < 0)
		return ret;
	vq_drv_record(vq, head, token, need, sg, nreadable, n, indirect, last);
	post_buffer(vq, head, need, last);
	return 0;
}

/*
 * A burst's common case in one loop: what add_one_segment does for each buffer, with the queue's
 * fields in locals (to the compiler, a store to a descriptor or a record may change them). It
 * stops before a buffer vt_vq_drv_add would refuse (the caller then refuses it) and before one
 * outside the linear windows of a DMA object that has them, which add_one_segment takes. A DMA
 * object without them maps the run first, together (vq_drv_run_map_burst); a map that fails ends
 * the run before its buffer, with the error in *@err. The caller checked that @n descriptors are
 * free.
 */
static inline __attribute__((always_inline)) unsigned int
add_run_with(struct vt_vq_drv *vq, const struct iovec *bufs, unsigned int n, bool writable,
	     void *const *tokens, int *err, const bool in_order, const bool linear)
{
	struct vt_dma *dma = vq->dma;
	struct vt_dma_linear win = { 0 };
	struct virtq_desc *desc = ring_desc(vq);
	vt_le16 *avail = ring_avail(vq)->ring;
	struct vq_desc_shadow *shadow = vq->shadow;
	struct vq_buffer_state *buffers = vq->buffers;
	const uint16_t mask = (uint16_t)(vq->num - 1);
	const uint16_t flags = writable ? VIRTQ_DESC_F_WRITE : 0;
	const uint32_t writable_mask = writable ? UINT32_MAX : 0;
	/* IN_ORDER hands descriptors out in ring order, the free list otherwise. */
	uint16_t head = in_order ? vq->in_order_next : vq->free_head;
	uint16_t avail_idx = vq->avail_idx_shadow;
	uint64_t seq = vq->add_seq;
	unsigned int i;
	/* The modes that map per buffer map the run first, together. */
	uint64_t burst_bus[VQ_DRV_MAP_BURST];

	if (!linear)
		n = vq_drv_run_map_burst(dma, bufs, tokens, n, writable, burst_bus, err);

	/*
	 * IN_ORDER writes the descriptors in ring order, which the device read last: see
	 * vq_prefetch_descs_for_write. The free list's were asked for when get_run freed them.
	 */
	if (in_order && vq->prefetch_for_write)
		vq_prefetch_descs_for_write(desc, sizeof(*desc), vq->num, head, n);
	for (i = 0; i < n; i++) {
		uint32_t len = (uint32_t)bufs[i].iov_len;
		uint64_t bus;
		if (!linear)
			bus = burst_bus[i];
		else if (vq_drv_run_map_linear(dma, &win, &bufs[i], tokens[i], &bus))
			break;
		struct vq_desc_shadow *sh = &shadow[head];
		sh->bus = bus;
		sh->len = len;
		sh->flags = flags;
		write_desc(&desc[head], bus, len, flags, 0);
		vq_drv_record_one(&buffers[head], tokens[i], seq++, len & writable_mask, head);
		ring_write16(&avail[avail_idx & mask], head);
		avail_idx++;
		if (in_order) {
			sh->next = (uint16_t)((head + 1) & mask);
			vq_drv_order_push(vq, head);
		}
		head = sh->next;
	}
	if (in_order)
		vq->in_order_next = head;
	else
		vq->free_head = head;
	vq->avail_idx_shadow = avail_idx;
	vq->add_seq = seq;
	vq->num_free -= i;
	/* Linear maps are counted at the kick, the others once per run. */
	if (linear)
		vq->maps_uncounted += i;
	else if (i)
		vt_dma_count(&dma->stats.maps, i);
	return i;
}

/*
 * add_run_with compiled once per descriptor order and per kind of DMA map (linear windows or a map
 * per buffer): each loop carries only its own bookkeeping.
 */
static inline __attribute__((always_inline)) unsigned int add_run(struct vt_vq_drv *vq,
								  const struct iovec *bufs,
								  unsigned int n, bool writable,
								  void *const *tokens, int *err)
{
	bool linear = vq->dma->linear_count;
	if (vq->in_order)
		return linear ? add_run_with(vq, bufs, n, writable, tokens, err, true, true)
			      : add_run_with(vq, bufs, n, writable, tokens, err, true, false);
	return linear ? add_run_with(vq, bufs, n, writable, tokens, err, false, true)
		      : add_run_with(vq, bufs, n, writable, tokens, err, false, false);
}

int vq_split_drv_add_burst(struct vt_vq_drv *vq, const struct iovec *bufs, unsigned int n,
			   bool writable, void *const *tokens)
{
	return vq_drv_add_burst_with(vq, bufs, n, writable, tokens, add_run, add_one_segment);
}

bool vq_split_drv_kick_prepare(struct vt_vq_drv *vq)
{
	uint16_t old = vq->kicked_avail, new = vq->avail_idx_shadow;
	/* Release: descriptors and ring entries before the index that exposes them. */
	ring_publish16(vq->barriers, &ring_avail(vq)->idx, new);
	vq->kicked_avail = new;
	/* Full barrier: the index store before reading the device's suppression (2.7.13.4). */
	vt_mb(vq->barriers);
	if (vq->event_idx) {
		uint16_t event = ring_read16((vt_le16 *)&ring_used(vq)->ring[vq->num]);
		return vring_need_event(event, new, old);
	}
	return !(ring_read16(&ring_used(vq)->flags) & VIRTQ_USED_F_NO_NOTIFY);
}

/* Unmaps the segments of a posted buffer (the modes that map per buffer). */
static __attribute__((noinline)) void unmap_buffer(struct vt_vq_drv *vq, uint16_t head)
{
	const struct vq_buffer_state *buf = &vq->buffers[head];
	uint16_t mask = (uint16_t)(vq->num - 1);

	if (buf->indirect) {
		vq_drv_unmap_segments(vq, vq_drv_table_shadow(vq, head), buf->nsegs);
		return;
	}
	uint16_t d = head;
	for (unsigned int i = 0; i < buf->nsegs; i++) {
		vq_drv_unmap_segments(vq, &vq->shadow[d], 1);
		d = vq->in_order ? (uint16_t)((d + 1) & mask) : vq->shadow[d].next;
	}
}

/* Unmaps a posted buffer and returns its descriptors; the caller got its token already. */
static inline void detach_buffer(struct vt_vq_drv *vq, uint16_t head)
{
	struct vq_buffer_state *buf = &vq->buffers[head];

	/* Direct and premapped: nothing to undo per segment. */
	if (vq->need_unmap)
		unmap_buffer(vq, head);
	if (!vq->in_order) {
		/* Most recently freed first: its descriptors are warm in the cache. */
		vq->shadow[buf->last].next = vq->free_head;
		vq->free_head = head;
	}
	vq->num_free += buf->ndesc;
	buf->token = NULL;
}

/*
 * Makes sure used entries are pending: when every entry the index exposed last time is
 * collected, reads it again (one read of the line the device writes per batch, not one per
 * buffer). 0, -EAGAIN when nothing new is used, -EPROTO for an index that moved too far.
 */
static inline int read_used_idx(struct vt_vq_drv *vq)
{
	uint16_t mask = (uint16_t)(vq->num - 1);

	if (vq->shadow_used_idx != vq->last_used)
		return 0;
	/* Acquire: the used entries and the written buffer contents after the index. */
	uint16_t used_idx = ring_consume16(vq->barriers, &ring_used(vq)->idx);
	uint16_t pending = (uint16_t)(used_idx - vq->last_used);
	if (pending == 0)
		return -EAGAIN;
	/* Only buffers made available can come back: those posted since the kick cannot. */
	unsigned int given = vq->outstanding - vq->added_since_kick;
	if (pending > given)
		return vq_drv_break(vq, VT_VQ_ERR_USED_IDX,
				    "used idx %u, %u collected, %u made available and outstanding",
				    used_idx, vq->last_used, given);
	vq->shadow_used_idx = used_idx;
	/*
	 * Start the loads of every line of used entries this index exposed at once: each is a line
	 * the device's CPU just wrote, and read one get at a time they would be fetched one after
	 * another.
	 */
	for (uint16_t i = 0; i < pending; i += VQ_CACHELINE / sizeof(struct virtq_used_elem))
		__builtin_prefetch(&ring_used(vq)->ring[(uint16_t)(vq->last_used + i) & mask]);
	return 0;
}

/*
 * One used buffer, every rule checked: the entry a run leaves, or the one that completes an
 * in-order batch. Never called inside a batch (vq_drv_batch_run hands those out).
 */
static int get_one(struct vt_vq_drv *vq, void **token, uint32_t *len)
{
	uint16_t mask = (uint16_t)(vq->num - 1);

	int ret = read_used_idx(vq);
	if (ret < 0)
		return ret;
	uint16_t pending = (uint16_t)(vq->shadow_used_idx - vq->last_used);

	const struct virtq_used_elem *e = &ring_used(vq)->ring[vq->last_used & mask];
	uint32_t id = ring_read32(&e->id);
	uint32_t used_len = ring_read32(&e->len);
	if (!vq_drv_id_outstanding(vq, id))
		return vq_drv_break(vq, VT_VQ_ERR_USED_ID, "used id %u", id);

	if (vq->in_order && vq->order[vq->order_head] != id) {
		/* One entry for a batch (2.7.9): every older buffer up to @id is done. */
		unsigned int k = 1;
		while (k < vq->order_count &&
		       vq->order[(vq->order_head + k) & vq->order_mask] != id)
			k++;
		if (k == vq->order_count)
			return vq_drv_break(vq, VT_VQ_ERR_USED_ID, "used id %u is not in flight",
					    id);
		k++;
		if (k > pending)
			return vq_drv_break(vq, VT_VQ_ERR_USED_IDX,
					    "in-order batch of %u, used idx moved by %u", k,
					    pending);
		vq->last_used = (uint16_t)(vq->last_used + k);
		vq->in_batch = true;
		vq->batch_last_id = (uint16_t)id;
		vq->batch_last_len = used_len;
		/* Its first buffer now, the rest by the caller's next batch runs. */
		vq_drv_batch_run(vq, token, len, 1, false, unmap_buffer);
		return 0;
	}

	vq->last_used++;
	if (vq->in_order) {
		vq->order_head = (vq->order_head + 1) & vq->order_mask;
		vq->order_count--;
	}
	*token = vq->buffers[id].token;
	*len = vq_drv_check_len(vq, (uint16_t)id, used_len);
	detach_buffer(vq, (uint16_t)id);
	return 0;
}

/*
 * A burst's common case in one loop: used entries already exposed by the index get_one read,
 * each naming one outstanding buffer, without IN_ORDER. The queue's fields are held in locals (to
 * the compiler, a store to a token or a record may change them). It stops before an entry it
 * does not take (an id out of range or not outstanding), taking nothing of it: get_one then
 * reads that entry again and breaks the queue, and nothing read here decided anything there.
 */
static inline __attribute__((always_inline)) unsigned int
get_run_with(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max,
	     const bool need_unmap)
{
	const struct virtq_used_elem *ring = ring_used(vq)->ring;
	struct vq_desc_shadow *shadow = vq->shadow;
	struct vq_buffer_state *buffers = vq->buffers;
	const unsigned int num = vq->num;
	const uint16_t mask = (uint16_t)(num - 1);
	const uint64_t kicked_seq = vq->kicked_seq;
	const bool prefetch_for_write = vq->prefetch_for_write;
	struct vt_dma *dma = vq->dma;
	unsigned int unmapped = 0;
	struct virtq_desc *desc = ring_desc(vq);
	const uint16_t last_used = vq->last_used;
	uint16_t free_head = vq->free_head;
	unsigned int freed = 0, i;

	if (max > (uint16_t)(vq->shadow_used_idx - last_used))
		max = (uint16_t)(vq->shadow_used_idx - last_used);
	for (i = 0; i < max; i++) {
		const struct virtq_used_elem *e = &ring[(uint16_t)(last_used + i) & mask];
		uint32_t id = ring_read32(&e->id);
		uint32_t len = ring_read32(&e->len);
		if (id >= num)
			break;
		struct vq_buffer_state *buf = &buffers[id];
		if (!buf->token || buf->seq >= kicked_seq)
			break;
		tokens[i] = buf->token;
		lens[i] = __builtin_expect(len <= buf->writable_bytes, 1)
			      ? len
			      : vq_drv_clamp_len(vq, (uint16_t)id, len);
		if (need_unmap) {
			/* One segment: unmapped here and counted once per run. */
			if (buf->nsegs == 1 && !buf->indirect)
				unmapped += vq_drv_unmap_one(dma, &shadow[id]);
			else
				unmap_buffer(vq, (uint16_t)id);
		}
		/*
		 * Most recently freed first, as detach_buffer does: the next add writes this
		 * descriptor, which the device read last (see vq_prefetch_descs_for_write).
		 */
		if (prefetch_for_write)
			prefetch_line_for_write(&desc[id]);
		shadow[buf->last].next = free_head;
		free_head = (uint16_t)id;
		freed += buf->ndesc;
		buf->token = NULL;
	}
	vq->free_head = free_head;
	vq->num_free += freed;
	vq->last_used = (uint16_t)(last_used + i);
	if (need_unmap && unmapped)
		vt_dma_count(&dma->stats.unmaps, unmapped);
	return i;
}

/* get_run_with compiled once per need_unmap: a loop of the modes that unmap nothing has no call. */
static unsigned int get_run(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max)
{
	if (vq->in_order)
		return 0;
	return vq->need_unmap ? get_run_with(vq, tokens, lens, max, true)
			      : get_run_with(vq, tokens, lens, max, false);
}

int vq_split_drv_get_burst(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max)
{
	unsigned int n = 0;

	/*
	 * Runs of the common case, and of an in-order batch get_one found; get_one for the entry
	 * that ends a run.
	 */
	while (n < max) {
		int ret = 0;
		if (vq->in_batch) {
			n += vq_drv_batch_run(vq, &tokens[n], &lens[n], max - n, false,
					      unmap_buffer);
			continue;
		}
		if ((ret = read_used_idx(vq)) == 0) {
			unsigned int got = get_run(vq, &tokens[n], &lens[n], max - n);
			n += got;
			if (got)
				continue;
		}
		if (ret == 0)
			ret = get_one(vq, &tokens[n], &lens[n]);
		if (ret < 0)
			return n || ret == -EAGAIN ? (int)n : ret;
		n++;
	}
	return (int)n;
}

void vq_split_drv_disable_cb(struct vt_vq_drv *vq)
{
	/* With EVENT_IDX, used_event left behind already silences the device. */
	if (!vq->event_idx)
		ring_write16(&ring_avail(vq)->flags, VIRTQ_AVAIL_F_NO_INTERRUPT);
}

bool vq_split_drv_enable_cb(struct vt_vq_drv *vq)
{
	if (vq->event_idx)
		ring_write16(&ring_avail(vq)->ring[vq->num], vq->last_used);
	else
		ring_write16(&ring_avail(vq)->flags, 0);
	/* Full barrier: publish the request before re-reading the used index. */
	vt_mb(vq->barriers);
	return vq->in_batch || ring_consume16(vq->barriers, &ring_used(vq)->idx) != vq->last_used;
}

void *vq_split_drv_detach_unused(struct vt_vq_drv *vq)
{
	for (unsigned int id = 0; id < vq->num; id++) {
		void *token = vq->buffers[id].token;
		if (!token)
			continue;
		detach_buffer(vq, (uint16_t)id);
		return token;
	}
	/*
	 * Everything is back: the ring starts over, as a device reset left it, so that a device
	 * set up again at index 0 and this driver agree.
	 */
	memset(vq->desc_mem, 0, vq->desc_size);
	memset(vq->driver_mem, 0, vq->driver_size);
	memset(vq->device_mem, 0, vq->device_size);
	for (unsigned int i = 0; i < vq->num; i++)
		vq->shadow[i].next = (uint16_t)(i + 1 < vq->num ? i + 1 : SPLIT_NO_DESC);
	vq->free_head = 0;
	vq->num_free = vq->num;
	vq->avail_idx_shadow = vq->kicked_avail = vq->last_used = vq->shadow_used_idx = 0;
	vq->in_order_next = 0;
	vq->added_since_kick = 0;
	vq->order_head = vq->order_count = 0;
	vq->in_batch = false;
	return NULL;
}

int vq_split_drv_rebase(struct vt_vq_drv *vq, const uint16_t *ids, unsigned int count,
			uint32_t *base)
{
	uint16_t mask = (uint16_t)(vq->num - 1);

	if (vq->in_batch || ring_consume16(vq->barriers, &ring_used(vq)->idx) != vq->last_used)
		return -EBUSY; /* a new device would complete those a second time */
	/* Every posted buffer has one avail entry; those not collected follow the used index. */
	if ((uint16_t)(vq->avail_idx_shadow - vq->last_used) != count)
		return vq_drv_break(vq, VT_VQ_ERR_USED_IDX,
				    "rebase: %u buffers outstanding, avail %u, used %u", count,
				    vq->avail_idx_shadow, vq->last_used);
	/*
	 * Completed out of order, the entries from the used index on still name buffers already
	 * returned; lay the outstanding heads out there instead, in the order they were posted
	 * (the descriptors they point at are unchanged). A device reading from the used index
	 * then sees each outstanding buffer exactly once. One that tracked inflight buffers
	 * resumes at used + in flight: the same entries, as it takes buffers in ring order.
	 */
	for (unsigned int i = 0; i < count; i++)
		ring_write16(&ring_avail(vq)->ring[(vq->last_used + i) & mask], ids[i]);
	/* Release: the entries before the index that exposes them (no device runs now). */
	ring_publish16(vq->barriers, &ring_avail(vq)->idx, vq->avail_idx_shadow);
	vq->kicked_avail = vq->avail_idx_shadow;
	*base = vq->last_used;
	return 0;
}
