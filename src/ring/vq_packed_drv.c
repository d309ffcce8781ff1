/* SPDX-License-Identifier: MIT */
/*
 * Driver half of the packed virtqueue (virtio 1.3 section 2.8). The driver writes descriptors in
 * ring order and trusts nothing it reads back: a used descriptor's id is checked against its own
 * record of what it posted (vq_desc_shadow, vq_buffer_state), never against ring memory.
 */
#include <errno.h>
#include <string.h>

#include "ring_access.h"
#include "vq_impl.h"

#define PACKED_NO_DESC 0xffff

static struct pvirtq_desc *ring_desc(struct vt_vq_drv *vq)
{
	return vq->desc_mem;
}

static struct pvirtq_event_suppress *driver_event(struct vt_vq_drv *vq)
{
	return vq->driver_mem;
}

static const struct pvirtq_event_suppress *device_event(struct vt_vq_drv *vq)
{
	return vq->device_mem;
}

/* Ring positions and records as at queue creation: both wrap counters start at 1 (2.8.1). */
static void reset_state(struct vt_vq_drv *vq)
{
	for (unsigned int i = 0; i < vq->num; i++)
		vq->shadow[i].next = (uint16_t)(i + 1 < vq->num ? i + 1 : PACKED_NO_DESC);
	vq->free_head = 0;
	vq->num_free = vq->num;
	vq->avail_idx_shadow = 0;
	vq->avail_wrap = true;
	vq->kicked_avail = 0;
	vq->kicked_wrap = true;
	vq->added_since_kick = 0;
	vq->pending = false;
	vq->last_used = 0;
	vq->used_wrap = true;
	vq->order_head = vq->order_count = 0;
	vq->in_batch = false;
}

int vq_packed_drv_init(struct vt_vq_drv *vq)
{
	if (vq->num > VIRTQ_PACKED_MAX_SIZE)
		return -EINVAL;
	vq->desc_size = sizeof(struct pvirtq_desc) * vq->num;
	vq->driver_size = sizeof(struct pvirtq_event_suppress);
	vq->device_size = sizeof(struct pvirtq_event_suppress);
	/*
	 * Coherent memory is zeroed: with the wrap counters at 1 a zero descriptor is neither
	 * available nor used, and zero event flags are ENABLE, as cb_enabled starts.
	 */
	int ret = vt_dma_alloc_coherent(vq->dma, vq->desc_size, &vq->desc_mem, &vq->desc_bus);
	if (ret == 0)
		ret = vt_dma_alloc_coherent(vq->dma, vq->driver_size, &vq->driver_mem,
					    &vq->driver_bus);
	if (ret == 0)
		ret = vt_dma_alloc_coherent(vq->dma, vq->device_size, &vq->device_mem,
					    &vq->device_bus);
	if (ret < 0)
		return ret;
	vq->driver_event_flags = RING_EVENT_FLAGS_ENABLE;
	reset_state(vq);
	return 0;
}

/* The AVAIL and USED bits that make a descriptor available in the lap @wrap (2.8.1). */
static inline uint16_t avail_bits(bool wrap)
{
	return (uint16_t)(wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);
}

/* Posts @n segments through the indirect table of buffer @id: one ring descriptor. */
static int add_indirect(struct vt_vq_drv *vq, uint16_t id, const struct iovec *sg,
			unsigned int nreadable, unsigned int nwritable)
{
	unsigned int n = nreadable + nwritable;
	size_t offset = (size_t)id * vq->indirect_max;
	struct vq_desc_shadow *ts = vq_drv_table_shadow(vq, id);
	struct pvirtq_desc *table = (struct pvirtq_desc *)vq->indirect_mem + offset;

	int ret = vq_drv_map_segments(vq, sg, nreadable, nwritable, ts);
	if (ret < 0)
		return ret;
	/* Used in order, no NEXT; WRITE is the only flag and the id is ignored (2.8.7). */
	for (unsigned int i = 0; i < n; i++) {
		ring_write64(&table[i].addr, ts[i].bus);
		ring_write32(&table[i].len, ts[i].len);
		ring_write16(&table[i].id, 0);
		ring_write16(&table[i].flags, ts[i].flags);
	}
	vq->shadow[id].bus = vq->indirect_bus + offset * sizeof(struct pvirtq_desc);
	vq->shadow[id].len = n * (uint32_t)sizeof(struct pvirtq_desc);
	vq->shadow[id].flags = VIRTQ_DESC_F_INDIRECT;
	return 0;
}

/* Unmaps the first @count segments of a direct buffer whose records start at @id. */
static void unmap_direct(struct vt_vq_drv *vq, uint16_t id, unsigned int count)
{
	for (unsigned int i = 0; i < count; i++) {
		vq_drv_unmap_segments(vq, &vq->shadow[id], 1);
		id = vq->shadow[id].next;
	}
}

/*
 * Writes descriptor @d at @slot: the batch's first keeps its flags back for kick_prepare
 * (2.8.21.1); the others get len, id and flags in one store, published by it.
 */
static inline void write_slot(struct vt_vq_drv *vq, struct pvirtq_desc *d, uint16_t slot,
			      uint64_t bus, uint32_t len, uint16_t id, uint16_t flags)
{
	ring_write64(&d->addr, bus);
	if (!vq->pending) {
		ring_write32(&d->len, len);
		ring_write16(&d->id, id);
		vq->pending_first = slot;
		vq->pending_first_flags = flags;
		vq->pending = true;
	} else {
		uint64_t tail = len | (uint64_t)id << 32 | (uint64_t)flags << 48;
		__atomic_store_n((uint64_t *)&d->len, vt_cpu_to_le64(tail), __ATOMIC_RELAXED);
	}
}

/* Writes the descriptor at the next slot (write_slot) and moves on. */
static inline void write_next_slot(struct vt_vq_drv *vq, uint64_t bus, uint32_t len, uint16_t id,
				   uint16_t flags)
{
	uint16_t slot = vq->avail_idx_shadow;

	write_slot(vq, &ring_desc(vq)[slot], slot, bus, len, id,
		   flags | avail_bits(vq->avail_wrap));
	if (++slot == vq->num) {
		slot = 0;
		vq->avail_wrap = !vq->avail_wrap;
	}
	vq->avail_idx_shadow = slot;
}

/*
 * Maps a buffer of several segments into the records from @id and writes its descriptors in ring
 * order (an indirect table: one). *@last: its last record. Out of line: the one-segment path
 * stays small.
 */
static __attribute__((noinline)) int add_segments(struct vt_vq_drv *vq, uint16_t id,
						  const struct iovec *sg, unsigned int nreadable,
						  unsigned int nwritable, bool indirect,
						  uint16_t *last)
{
	unsigned int n = nreadable + nwritable;
	unsigned int need = indirect ? 1 : n;
	int ret;

	*last = id;
	if (indirect) {
		ret = add_indirect(vq, id, sg, nreadable, nwritable);
		if (ret < 0)
			return ret;
	} else {
		uint16_t e = id;
		for (unsigned int i = 0; i < n; i++) {
			struct vq_desc_shadow *sh = &vq->shadow[e];
			ret = vq_drv_map_one(vq, &sg[i], i >= nreadable, sh);
			if (ret < 0) {
				unmap_direct(vq, id, i);
				return ret;
			}
			*last = e;
			e = sh->next;
		}
	}
	/* The id goes in each descriptor (2.8.6 asks for the last). */
	uint16_t e = id;
	for (unsigned int i = 0; i < need; i++) {
		const struct vq_desc_shadow *sh = &vq->shadow[e];
		write_next_slot(vq, sh->bus, sh->len, id,
				sh->flags | (i + 1 < need ? VIRTQ_DESC_F_NEXT : 0));
		e = sh->next;
	}
	return 0;
}

/* Takes buffer @id, of @ndesc descriptors whose records end at @last, off the free lists. */
static inline void post_buffer(struct vt_vq_drv *vq, uint16_t id, unsigned int ndesc, uint16_t last)
{
	vq->free_head = vq->shadow[last].next;
	vq->num_free -= ndesc;
	if (vq->in_order)
		vq_drv_order_push(vq, id);
}

/* One segment, one descriptor: the common case, without the loops. The caller checked that a
 * descriptor is free. */
static inline int add_one_segment(struct vt_vq_drv *vq, const struct iovec *sg, bool writable,
				  void *token)
{
	/* The buffer id is its first record; records, not slots, hold what was posted. */
	uint16_t id = vq->free_head;
	struct vq_desc_shadow *sh = &vq->shadow[id];

	int ret = vq_drv_map_one(vq, sg, writable, sh);
	if (ret < 0)
		return ret;
	write_next_slot(vq, sh->bus, sh->len, id, sh->flags);
	vq_drv_record(vq, id, token, 1, sg, !writable, 1, false, id);
	post_buffer(vq, id, 1, id);
	return 0;
}

int vq_packed_drv_add(struct vt_vq_drv *vq, const struct iovec *sg, unsigned int nreadable,
		      unsigned int nwritable, void *token)
{
	unsigned int n = nreadable + nwritable;
	bool indirect = vq_drv_wants_indirect(vq, n);
	unsigned int need = indirect ? 1 : n;

	if (need > vq->num_free)
		return -ENOSPC;
	if (n == 1)
		return add_one_segment(vq, sg, nwritable != 0, token);

	uint16_t id = vq->free_head;
	uint16_t last = id;
	int ret = add_segments(vq, id, sg, nreadable, nwritable, indirect, &last);
	if (ret < 0)
		return ret;
	vq_drv_record(vq, id, token, need, sg, nreadable, n, indirect, last);
	post_buffer(vq, id, need, last);
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
	struct pvirtq_desc *ring = ring_desc(vq);
	struct vq_desc_shadow *shadow = vq->shadow;
	struct vq_buffer_state *buffers = vq->buffers;
	const unsigned int num = vq->num;
	const uint16_t dir = writable ? VIRTQ_DESC_F_WRITE : 0;
	const uint32_t writable_mask = writable ? UINT32_MAX : 0;
	uint16_t slot = vq->avail_idx_shadow, id = vq->free_head;
	bool wrap = vq->avail_wrap;
	uint64_t seq = vq->add_seq;
	unsigned int i;
	/* The modes that map per buffer map the run first, together. */
	uint64_t burst_bus[VQ_DRV_MAP_BURST];

	if (!linear)
		n = vq_drv_run_map_burst(dma, bufs, tokens, n, writable, burst_bus, err);

	/* The device used these slots last, and read them: see vq_prefetch_descs_for_write. */
	if (vq->prefetch_for_write)
		vq_prefetch_descs_for_write(ring, sizeof(*ring), num, slot, n);
	for (i = 0; i < n; i++) {
		uint32_t len = (uint32_t)bufs[i].iov_len;
		uint64_t bus;
		if (!linear)
			bus = burst_bus[i];
		else if (vq_drv_run_map_linear(dma, &win, &bufs[i], tokens[i], &bus))
			break;
		/* The buffer id is its first record; records, not slots, hold what was posted. */
		struct vq_desc_shadow *sh = &shadow[id];
		sh->bus = bus;
		sh->len = len;
		sh->flags = dir;
		write_slot(vq, &ring[slot], slot, bus, len, id, dir | avail_bits(wrap));
		vq_drv_record_one(&buffers[id], tokens[i], seq++, len & writable_mask, id);
		if (in_order)
			vq_drv_order_push(vq, id);
		id = sh->next;
		if (++slot == num) {
			slot = 0;
			wrap = !wrap;
		}
	}
	vq->avail_idx_shadow = slot;
	vq->avail_wrap = wrap;
	vq->free_head = id;
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
 * add_run_with compiled once per IN_ORDER and per kind of DMA map (linear windows or a map per
 * buffer): each loop carries only its own bookkeeping, and a run of the linear modes holds no call.
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

int vq_packed_drv_add_burst(struct vt_vq_drv *vq, const struct iovec *bufs, unsigned int n,
			    bool writable, void *const *tokens)
{
	return vq_drv_add_burst_with(vq, bufs, n, writable, tokens, add_run, add_one_segment);
}

bool vq_packed_drv_kick_prepare(struct vt_vq_drv *vq)
{
	unsigned int added = vq_packed_distance(vq->num, vq->kicked_avail, vq->kicked_wrap,
						vq->avail_idx_shadow, vq->avail_wrap);
	if (vq->pending) {
		/* Release: the batch's other descriptors and the buffer contents before the flags
		 * that expose its first one; pairs with the device's ring_consume16 in pop. */
		ring_publish16(vq->barriers, &ring_desc(vq)[vq->pending_first].flags,
			       vq->pending_first_flags);
		vq->pending = false;
	}
	vq->kicked_avail = vq->avail_idx_shadow;
	vq->kicked_wrap = vq->avail_wrap;

	/* Full barrier: the flags store before reading the device's suppression (2.8.21.2); pairs
	 * with the device's barrier in enable_notify. */
	vt_mb(vq->barriers);
	const struct pvirtq_event_suppress *ev = device_event(vq);
	/* Acquire: desc is read after the flags that say it is meaningful (pairs with the
	 * device's release of the flags after desc). */
	uint16_t mode = ring_consume16(vq->barriers, &ev->flags) & 3;
	if (mode == RING_EVENT_FLAGS_DISABLE)
		return false;
	/* DESC is only meaningful with EVENT_IDX; otherwise, and for the reserved value, kick. */
	if (mode != RING_EVENT_FLAGS_DESC || !vq->event_idx)
		return true;
	return vq_packed_need_event(vq->num, ring_read16(&ev->desc), vq->avail_idx_shadow,
				    vq->avail_wrap, added);
}

/* Unmaps the segments of a posted buffer (the modes that map per buffer). */
static __attribute__((noinline)) void unmap_buffer(struct vt_vq_drv *vq, uint16_t id)
{
	const struct vq_buffer_state *buf = &vq->buffers[id];

	if (buf->indirect)
		vq_drv_unmap_segments(vq, vq_drv_table_shadow(vq, id), buf->nsegs);
	else
		unmap_direct(vq, id, buf->nsegs);
}

/* Unmaps a posted buffer and returns its records; the caller got its token already. */
static inline void detach_buffer(struct vt_vq_drv *vq, uint16_t id)
{
	struct vq_buffer_state *buf = &vq->buffers[id];

	/* Direct and premapped: nothing to undo per segment. */
	if (vq->need_unmap)
		unmap_buffer(vq, id);
	/* Most recently freed first: its records are warm in the cache. */
	vq->shadow[buf->last].next = vq->free_head;
	vq->free_head = id;
	vq->num_free += buf->ndesc;
	buf->token = NULL;
}

/*
 * What the descriptor at last_used says: 1 used, 0 not yet (still as we made it available),
 * -1 neither (bits no device writes). Only slots the device was given are looked at: others may
 * hold a previous lap's flags, or a batch's first descriptor not yet published.
 */
static int used_state(struct vt_vq_drv *vq, uint16_t *flags)
{
	if (vq->last_used == vq->kicked_avail && vq->used_wrap == vq->kicked_wrap)
		return 0;
	/* Acquire: the used descriptor's id and len, and the buffer contents, after its flags
	 * (pairs with the device's release of the batch's first flags in flush). */
	*flags = ring_consume16(vq->barriers, &ring_desc(vq)[vq->last_used].flags);
	bool avail = *flags & VIRTQ_DESC_F_AVAIL, used = *flags & VIRTQ_DESC_F_USED;
	if (avail == vq->used_wrap && used == vq->used_wrap)
		return 1;
	if (avail == vq->used_wrap && used != vq->used_wrap)
		return 0;
	return -1;
}

/*
 * One used buffer, every rule checked: the descriptor a run leaves, or the one that completes an
 * in-order batch. Never called inside a batch (vq_drv_batch_run hands those out).
 */
static int get_one(struct vt_vq_drv *vq, void **token, uint32_t *len)
{

	uint16_t flags = 0;
	int state = used_state(vq, &flags);
	if (state == 0)
		return -EAGAIN;
	if (state < 0)
		return vq_drv_break(vq, VT_VQ_ERR_USED_WRAP,
				    "slot %u flags 0x%04x, used wrap counter %u", vq->last_used,
				    flags, vq->used_wrap);

	const struct pvirtq_desc *d = &ring_desc(vq)[vq->last_used];
	uint64_t tail =
	    vt_le64_to_cpu(__atomic_load_n((const uint64_t *)&d->len, __ATOMIC_RELAXED));
	uint16_t id = (uint16_t)(tail >> 32);
	/* A used descriptor without WRITE has a reserved length, ignored by drivers (2.8.4). */
	uint32_t used_len = (flags & VIRTQ_DESC_F_WRITE) ? (uint32_t)tail : 0;
	if (!vq_drv_id_outstanding(vq, id))
		return vq_drv_break(vq, VT_VQ_ERR_USED_ID, "used id %u at slot %u", id,
				    vq->last_used);
	/* The device was given the descriptors up to the last kick, no more. */
	unsigned int given = vq_packed_distance(vq->num, vq->last_used, vq->used_wrap,
						vq->kicked_avail, vq->kicked_wrap);

	if (vq->in_order && vq->order[vq->order_head] != id) {
		/* One used descriptor for a batch (2.8.8): every older buffer up to @id is done. */
		unsigned int k = 0, ndesc = 0;
		for (;;) {
			if (k == vq->order_count)
				return vq_drv_break(vq, VT_VQ_ERR_USED_ID,
						    "used id %u is not in flight", id);
			uint16_t older = vq->order[(vq->order_head + k) & vq->order_mask];
			ndesc += vq->buffers[older].ndesc;
			k++;
			if (older == id)
				break;
		}
		if (ndesc > given)
			return vq_drv_break(
			    vq, VT_VQ_ERR_USED_IDX,
			    "in-order batch of %u descriptors, %u given to the device", ndesc,
			    given);
		vq_packed_advance(vq->num, &vq->last_used, &vq->used_wrap, ndesc);
		vq->in_batch = true;
		vq->batch_last_id = id;
		vq->batch_last_len = used_len;
		/* Its first buffer now, the rest by the caller's next batch runs. */
		vq_drv_batch_run(vq, token, len, 1, true, unmap_buffer);
		return 0;
	}

	unsigned int ndesc = vq->buffers[id].ndesc;
	if (ndesc > given)
		return vq_drv_break(vq, VT_VQ_ERR_USED_IDX,
				    "used id %u skips %u descriptors, %u given to the device", id,
				    ndesc, given);
	vq_packed_advance(vq->num, &vq->last_used, &vq->used_wrap, ndesc);
	if (vq->in_order) {
		vq->order_head = (vq->order_head + 1) & vq->order_mask;
		vq->order_count--;
	}
	*token = vq->buffers[id].token;
	*len = vq_drv_check_len(vq, id, used_len);
	detach_buffer(vq, id);
	return 0;
}

/*
 * A burst's common case in one loop: used descriptors each naming one outstanding buffer,
 * without IN_ORDER. The queue's fields are held in locals (to the compiler, a store to a token
 * or a record may change them). It stops before a descriptor it does not take (not used yet,
 * bits no device writes, an id not outstanding, a buffer longer than what the device was given),
 * taking nothing of it: get_one then reads it again and decides, and nothing read here decided
 * anything there. *@empty: it stopped at a descriptor not used yet.
 */
static inline __attribute__((always_inline)) unsigned int
get_run_with(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max, bool *empty,
	     const bool need_unmap)
{
	const struct pvirtq_desc *ring = ring_desc(vq);
	struct vq_desc_shadow *shadow = vq->shadow;
	struct vq_buffer_state *buffers = vq->buffers;
	const enum vt_barrier_kind barriers = vq->barriers;
	const unsigned int num = vq->num;
	const uint64_t kicked_seq = vq->kicked_seq;
	struct vt_dma *dma = vq->dma;
	unsigned int unmapped = 0;
	uint16_t slot = vq->last_used, free_head = vq->free_head;
	bool wrap = vq->used_wrap;
	unsigned int freed = 0, i;
	/* The descriptors given to the device (up to the last kick) and not used yet. */
	unsigned int given = vq_packed_distance(num, slot, wrap, vq->kicked_avail, vq->kicked_wrap);

	for (i = 0; i < max; i++) {
		if (given == 0) {
			*empty = true;
			break;
		}
		/* Acquire: id, len and the buffer contents after the flags (as get_one). */
		uint16_t flags = ring_consume16(barriers, &ring[slot].flags);
		bool avail = flags & VIRTQ_DESC_F_AVAIL, used = flags & VIRTQ_DESC_F_USED;
		if (avail != wrap || used != wrap) {
			/* Still as we made it available: not used yet. Anything else: get_one. */
			*empty = avail == wrap;
			break;
		}
		if (i == 0)
			vq_packed_prefetch_lines(ring, num, slot, max < given ? max : given);
		uint64_t tail = vt_le64_to_cpu(
		    __atomic_load_n((const uint64_t *)&ring[slot].len, __ATOMIC_RELAXED));
		uint16_t id = (uint16_t)(tail >> 32);
		if (id >= num)
			break;
		struct vq_buffer_state *buf = &buffers[id];
		if (!buf->token || buf->seq >= kicked_seq || buf->ndesc > given)
			break;
		/* A used descriptor without WRITE has a reserved length, ignored (2.8.4). */
		uint32_t len = (flags & VIRTQ_DESC_F_WRITE) ? (uint32_t)tail : 0;
		tokens[i] = buf->token;
		lens[i] = __builtin_expect(len <= buf->writable_bytes, 1)
			      ? len
			      : vq_drv_clamp_len(vq, id, len);
		if (need_unmap) {
			/* One segment: unmapped here and counted once per run. */
			if (buf->nsegs == 1 && !buf->indirect)
				unmapped += vq_drv_unmap_one(dma, &shadow[id]);
			else
				unmap_buffer(vq, id);
		}
		given -= buf->ndesc;
		vq_packed_advance(num, &slot, &wrap, buf->ndesc);
		/* Most recently freed first, as detach_buffer does. */
		shadow[buf->last].next = free_head;
		free_head = id;
		freed += buf->ndesc;
		buf->token = NULL;
	}
	vq->last_used = slot;
	vq->used_wrap = wrap;
	vq->free_head = free_head;
	vq->num_free += freed;
	if (need_unmap && unmapped)
		vt_dma_count(&dma->stats.unmaps, unmapped);
	return i;
}

/* get_run_with compiled once per need_unmap: a loop of the modes that unmap nothing has no call. */
static unsigned int get_run(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max,
			    bool *empty)
{
	if (vq->in_order)
		return 0;
	return vq->need_unmap ? get_run_with(vq, tokens, lens, max, empty, true)
			      : get_run_with(vq, tokens, lens, max, empty, false);
}

int vq_packed_drv_get_burst(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max)
{
	unsigned int n = 0;

	/*
	 * Runs of the common case, and of an in-order batch get_one found; get_one for the
	 * descriptor that ends a run.
	 */
	while (n < max) {
		bool empty = false;
		if (vq->in_batch) {
			n +=
			    vq_drv_batch_run(vq, &tokens[n], &lens[n], max - n, true, unmap_buffer);
			continue;
		}
		unsigned int got = get_run(vq, &tokens[n], &lens[n], max - n, &empty);
		n += got;
		if (empty)
			break;
		if (got)
			continue;
		int ret = get_one(vq, &tokens[n], &lens[n]);
		if (ret < 0)
			return n || ret == -EAGAIN ? (int)n : ret;
		n++;
	}
	return (int)n;
}

/* Writes the driver area's flags when they change: the device reads this line at every flush. */
static void set_event_flags(struct vt_vq_drv *vq, uint16_t flags)
{
	if (vq->driver_event_flags == flags)
		return;
	vq->driver_event_flags = flags;
	/* Release: the desc field written before it (pairs with the device's ring_consume16 of
	 * these flags in flush). */
	ring_publish16(vq->barriers, &driver_event(vq)->flags, flags);
}

void vq_packed_drv_disable_cb(struct vt_vq_drv *vq)
{
	set_event_flags(vq, RING_EVENT_FLAGS_DISABLE);
}

bool vq_packed_drv_enable_cb(struct vt_vq_drv *vq)
{
	if (vq->event_idx) {
		/* A notification when the device uses the slot we read next, not before. */
		ring_write16(&driver_event(vq)->desc,
			     (uint16_t)(vq->last_used | vq->used_wrap << PVIRTQ_EVENT_WRAP_SHIFT));
		set_event_flags(vq, RING_EVENT_FLAGS_DESC);
	} else {
		set_event_flags(vq, RING_EVENT_FLAGS_ENABLE);
	}
	/* Full barrier: publish the request before re-reading the next used slot, or a
	 * notification is lost (pairs with the device's barrier in flush). */
	vt_mb(vq->barriers);
	uint16_t flags;
	return vq->in_batch || used_state(vq, &flags) != 0;
}

void *vq_packed_drv_detach_unused(struct vt_vq_drv *vq)
{
	for (unsigned int id = 0; id < vq->num; id++) {
		void *token = vq->buffers[id].token;
		if (!token)
			continue;
		detach_buffer(vq, (uint16_t)id);
		return token;
	}
	/* Everything is back: the ring starts over, zeroed, as a reset device expects (2.8.13). */
	memset(vq->desc_mem, 0, vq->desc_size);
	reset_state(vq);
	return NULL;
}

int vq_packed_drv_rebase(struct vt_vq_drv *vq, const uint16_t *ids, unsigned int count,
			 uint32_t *base)
{
	uint16_t flags;

	if (vq->in_batch || used_state(vq, &flags) != 0)
		return -EBUSY; /* a new device would complete those a second time */
	/*
	 * Used descriptors are written in completion order, so from the used slot on the ring
	 * still holds buffers made available in posting order, some of them already returned.
	 * Write the outstanding buffers there again from the records, oldest first: they fill
	 * exactly the slots up to the next free one (a buffer occupies the same number of slots
	 * whoever completes it).
	 */
	struct pvirtq_desc *ring = ring_desc(vq);
	uint16_t slot = vq->last_used;
	bool wrap = vq->used_wrap;
	unsigned int slots = vq_packed_distance(vq->num, vq->last_used, vq->used_wrap,
						vq->avail_idx_shadow, vq->avail_wrap);
	unsigned int written = 0;
	for (unsigned int k = 0; k < count; k++) {
		uint16_t id = ids[k], e = id;
		unsigned int ndesc = vq->buffers[id].ndesc;
		if (written + ndesc > slots)
			break;
		for (unsigned int i = 0; i < ndesc; i++) {
			const struct vq_desc_shadow *s = &vq->shadow[e];
			uint16_t f = (uint16_t)(s->flags | avail_bits(wrap) |
						(i + 1 < ndesc ? VIRTQ_DESC_F_NEXT : 0));
			ring_write64(&ring[slot].addr, s->bus);
			ring_write32(&ring[slot].len, s->len);
			ring_write16(&ring[slot].id, id);
			ring_write16(&ring[slot].flags, f);
			e = s->next;
			if (++slot == vq->num) {
				slot = 0;
				wrap = !wrap;
			}
		}
		written += ndesc;
	}
	if (written != slots)
		return vq_drv_break(vq, VT_VQ_ERR_USED_IDX,
				    "rebase: %u buffers outstanding do not fill the %u slots from "
				    "slot %u",
				    count, slots, vq->last_used);
	/* Release: every descriptor above before what follows (no device runs now). */
	vt_wmb(vq->barriers);
	vq->pending = false;
	vq->kicked_avail = vq->avail_idx_shadow;
	vq->kicked_wrap = vq->avail_wrap;
	*base = (uint32_t)(vq->last_used | (uint32_t)vq->used_wrap << PVIRTQ_EVENT_WRAP_SHIFT);
	return 0;
}
