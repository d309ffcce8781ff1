/* SPDX-License-Identifier: MIT */
/*
 * Device half of the packed virtqueue (virtio 1.3 section 2.8). One ring carries both directions:
 * the driver's available descriptors and, written over them, the device's used ones. Every
 * descriptor is read once into a local and checked before use; ring pointers come from the
 * address space and are refreshed when its generation moves (vq_dev.c).
 */
#include <errno.h>

#include "ring_access.h"
#include "vq_impl.h"

/* No flags have been written to the device area yet: the first write must happen. */
#define EVENT_FLAGS_UNKNOWN 0xffff

int vq_packed_dev_init(struct vt_vq_dev *vq)
{
	if (vq->num > VIRTQ_PACKED_MAX_SIZE)
		return -EINVAL;
	vq->device_event_flags = EVENT_FLAGS_UNKNOWN;
	vq->area_len[0] = sizeof(struct pvirtq_desc) * (uint64_t)vq->num;
	vq->area_len[1] = sizeof(struct pvirtq_event_suppress);
	vq->area_len[2] = sizeof(struct pvirtq_event_suppress);
	return 0;
}

int vq_packed_dev_resolve(struct vt_vq_dev *vq)
{
	void *desc, *driver, *device;
	/* The device reads available descriptors and writes used ones over them. */
	int ret = vq_dev_map_area(vq, vq->desc_addr, sizeof(struct pvirtq_desc) * (uint64_t)vq->num,
				  VT_ACCESS_RW, PVIRTQ_DESC_ALIGN, &desc, "descriptor ring");
	if (ret == 0)
		ret = vq_dev_map_area(vq, vq->driver_addr, sizeof(struct pvirtq_event_suppress),
				      VT_ACCESS_READ, PVIRTQ_EVENT_ALIGN, &driver,
				      "driver event suppression");
	/* The device writes its own suppression area and reads nothing back from it. */
	if (ret == 0)
		ret = vq_dev_map_area(vq, vq->device_addr, sizeof(struct pvirtq_event_suppress),
				      VT_ACCESS_WRITE, PVIRTQ_EVENT_ALIGN, &device,
				      "device event suppression");
	if (ret < 0)
		return ret;
	vq->ring.packed.desc = desc;
	vq->ring.packed.driver = driver;
	vq->ring.packed.device = device;
	return 0;
}

/* Available in the lap @wrap: AVAIL matches the driver's wrap counter and USED does not (2.8.1). */
static inline bool desc_is_avail(uint16_t flags, bool wrap)
{
	return (bool)(flags & VIRTQ_DESC_F_AVAIL) == wrap &&
	       (bool)(flags & VIRTQ_DESC_F_USED) != wrap;
}

/* A descriptor, read once into a local. */
struct packed_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t id;
	uint16_t flags;
};

/* Decodes the two little-endian words of a descriptor: addr, then len | id | flags. */
static inline struct packed_desc decode_desc(const uint64_t w[2])
{
	return (struct packed_desc){
		.addr = w[0],
		.len = (uint32_t)w[1],
		.id = (uint16_t)(w[1] >> 32),
		.flags = (uint16_t)(w[1] >> 48),
	};
}

/* Two 8-byte loads: the ring is 16-byte aligned. */
static inline struct packed_desc read_desc(const struct pvirtq_desc *d)
{
	uint64_t w[2];
	ring_read_desc_words(d, w);
	return decode_desc(w);
}

/* Walks the indirect table @ind refers to: entries used in order, no NEXT (2.8.7). */
static int walk_indirect(struct vt_vq_dev *vq, struct vq_chain_builder *b,
			 const struct packed_desc *ind)
{
	unsigned int count = ind->len / sizeof(struct pvirtq_desc);
	struct vq_table table;
	int ret = vq_dev_table_open(vq, ind->addr, ind->len, &table);
	if (ret < 0)
		return ret;
	for (unsigned int i = 0; i < count; i++) {
		uint64_t w[2];
		ret = vq_dev_table_read(vq, &table, i, w);
		if (ret < 0)
			return ret;
		struct packed_desc d = decode_desc(w);
		/*
		 * WRITE is the only valid flag in a table and the device ignores the others and the
		 * id (2.8.7), except INDIRECT: a nested table is a driver violation (2.8.19).
		 */
		if (d.flags & VIRTQ_DESC_F_INDIRECT)
			return vq_dev_break(vq, VT_VQ_ERR_INDIRECT_NESTED, "entry %u of the table",
					    i);
		ret = vq_chain_add(b, d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * The buffer id the driver gave a chain of @ndesc descriptors becomes the device's: checked to
 * be in range and not already in flight (@again: a resubmission, for the log line).
 */
static int claim_id(struct vt_vq_dev *vq, struct vt_vq_chain *chain, uint16_t id,
		    unsigned int ndesc, bool again)
{
	if (id >= vq->num)
		return vq_dev_break(vq, VT_VQ_ERR_BUFFER_ID, "buffer id %u, queue size %u", id,
				    vq->num);
	if (vq->in_flight_ndesc[id])
		return vq_dev_break(vq, VT_VQ_ERR_BUFFER_ID_IN_FLIGHT, "%sbuffer id %u %s",
				    again ? "resubmitted " : "", id,
				    again ? "already in flight"
					  : "made available again while in flight");
	chain->id = id;
	chain->ndesc = (uint16_t)ndesc;
	vq->in_flight_ndesc[id] = (uint16_t)ndesc;
	vq->in_flight++;
	return 0;
}

/*
 * After a restart: hands out again a buffer the earlier back-end had taken, from the copies of
 * its descriptors in the inflight region (vq_inflight.c). Checked as if read from the ring.
 */
static int take_resubmitted(struct vt_vq_dev *vq, uint16_t head, struct vt_vq_chain *chain,
			    struct iovec *iov, unsigned int iov_max)
{
	unsigned int n = vq->inflight_packed->desc[head].num; /* checked at recovery: 1..num */
	uint16_t entry = head, id = 0;
	struct vq_chain_builder b;
	int ret;

	vq_chain_begin(&b, vq, chain, iov, iov_max);
	for (unsigned int k = 0; k < n; k++) {
		struct vq_inflight_copy c;
		if (vq_inflight_packed_next(vq, &entry, &c) < 0)
			return vq_dev_break(vq, VT_VQ_ERR_NEXT_RANGE, "inflight entry list broken");
		struct packed_desc d = {
			.addr = c.addr, .len = c.len, .id = c.id, .flags = c.flags
		};
		bool last = k + 1 == n;
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!vq->indirect || (d.flags & VIRTQ_DESC_F_NEXT) || k > 0 || !last)
				return vq_dev_break(vq, VT_VQ_ERR_INDIRECT_WITH_NEXT,
						    "resubmitted buffer: misplaced indirect table");
			ret = walk_indirect(vq, &b, &d);
			if (ret < 0)
				return ret;
			id = d.id;
			break;
		}
		ret = vq_chain_add(&b, d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE);
		if (ret < 0)
			return ret;
		if (!(d.flags & VIRTQ_DESC_F_NEXT) != last)
			return vq_dev_break(vq, VT_VQ_ERR_CHAIN_TOO_LONG,
					    "resubmitted buffer: NEXT flags disagree with its %u "
					    "recorded descriptors",
					    n);
		id = d.id;
	}
	ret = claim_id(vq, chain, id, n, true);
	if (ret == 0)
		vq->inflight_entry[id] = head;
	return ret;
}

/* One pop, every rule checked: the descriptors a run leaves, and resubmissions. */
static int pop_one(struct vt_vq_dev *vq, struct vt_vq_chain *chain, struct iovec *iov,
		   unsigned int iov_max)
{
	const struct pvirtq_desc *ring = vq->ring.packed.desc;
	uint16_t slot = vq->next_avail;
	bool wrap = vq->avail_wrap;

	if (vq->resubmit_pos < vq->resubmit_count) {
		int ret = take_resubmitted(vq, vq->resubmit[vq->resubmit_pos], chain, iov, iov_max);
		if (ret == 0)
			vq->resubmit_pos++;
		return ret;
	}

	/* Acquire: the chain the driver exposed with these flags is read after them (pairs with
	 * the release of the first descriptor's flags in the driver's publication). */
	uint16_t first_flags = ring_consume16(vq->barriers, &ring[slot].flags);
	if (!desc_is_avail(first_flags, wrap))
		return -EAGAIN;

	/*
	 * The slots from used_idx to next_avail belong to buffers in flight: a chain reaching them
	 * is longer than the ring the driver owns (a loop, or slots it gave away twice).
	 */
	unsigned int owned =
	    vq->num - vq_packed_distance(vq->num, vq->used_idx, vq->used_wrap, slot, wrap);
	unsigned int limit = vq->max_chain < owned ? vq->max_chain : owned;

	/* Read once: both the fast path and the walk below use this copy of the first. */
	struct packed_desc d = read_desc(&ring[slot]);
	/* Its flags are the value the ownership check saw, not a re-read. */
	d.flags = first_flags;
	unsigned int seen = 1;
	uint16_t id = d.id;
	int ret;
	/* Not with inflight records: they take a copy of each descriptor (the walk's job). */
	if (!(d.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) && limit &&
	    !vq->inflight_packed &&
	    vq_chain_single(vq, chain, iov, iov_max, d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE))
		goto taken;

	struct vq_chain_builder b;
	vq_chain_begin(&b, vq, chain, iov, iov_max);
	seen = 0;
	for (;;) {
		if (seen)
			d = read_desc(&ring[slot]);
		if (++seen > limit)
			return vq_dev_break(
			    vq, VT_VQ_ERR_CHAIN_TOO_LONG,
			    "chain from slot %u exceeds %u descriptors (%u in flight)",
			    vq->next_avail, limit, vq->num - owned);
		if (vq->inflight_packed) /* recorded only once the whole chain checked out */
			vq->inflight_scratch[seen - 1] = (struct vq_inflight_copy){
				.addr = d.addr, .len = d.len, .id = d.id, .flags = d.flags
			};
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!vq->indirect)
				return vq_dev_break(vq, VT_VQ_ERR_INDIRECT_NOT_NEGOTIATED,
						    "slot %u", slot);
			/* 2.8.19: no INDIRECT descriptor in a list linked by NEXT. */
			if ((d.flags & VIRTQ_DESC_F_NEXT) || seen > 1)
				return vq_dev_break(vq, VT_VQ_ERR_INDIRECT_WITH_NEXT,
						    "slot %u, descriptor %u of its list", slot,
						    seen);
			/* Its WRITE flag is reserved and ignored (2.8.7). */
			ret = walk_indirect(vq, &b, &d);
			if (ret < 0)
				return ret;
			id = d.id;
			break;
		}
		ret = vq_chain_add(&b, d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE);
		if (ret < 0)
			return ret;
		if (!(d.flags & VIRTQ_DESC_F_NEXT)) {
			/* The buffer id is the last descriptor's (2.8.6). */
			id = d.id;
			break;
		}
		if (++slot == vq->num) {
			slot = 0;
			wrap = !wrap;
		}
	}

taken:
	ret = claim_id(vq, chain, id, seen, false);
	if (ret < 0)
		return ret;
	if (vq->in_order)
		vq_dev_order_push(vq, id);
	if (vq->inflight_packed)
		vq_inflight_packed_taken(vq, id, seen);
	vq_packed_advance(vq->num, &vq->next_avail, &vq->avail_wrap, seen);
	return 0;
}

/* Used: AVAIL and USED both at our wrap counter; WRITE if bytes were written (2.8.3). */
static inline uint16_t used_flags(bool wrap, uint32_t written)
{
	return (uint16_t)((wrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0) |
			  (written ? VIRTQ_DESC_F_WRITE : 0));
}

/*
 * A burst's common case in one tight loop: available descriptors that are chains of their own
 * (no NEXT, no INDIRECT) inside one extent of the address space (the cached one, nearly always).
 * The loop keeps the queue's fields in locals, which pop_one cannot (to the compiler, a store
 * through an iovec or a chain may change them), and applies pop_one's rules. It stops before the
 * first descriptor that needs more (a chain, a table, an address no extent allows, an id the
 * rules refuse, a generation that moved) and takes nothing of it: pop_one then takes it from the
 * start, reading it again, which is no double fetch, as nothing read here decides anything there.
 * *@empty: it stopped at a descriptor not available.
 */
static unsigned int pop_run(struct vt_vq_dev *vq, struct vt_vq_chain *chains, struct iovec *iov,
			    unsigned int iov_per_chain, unsigned int max, bool *empty)
{
	const _Atomic uint64_t *generation_word = vq->as.generation_word;
	struct vq_run_extent extent;

	if (!generation_word || !iov_per_chain || vq->inflight_packed ||
	    vq->resubmit_pos < vq->resubmit_count)
		return 0;
	vq_run_extent_load(vq, &extent);
	const struct pvirtq_desc *ring = vq->ring.packed.desc;
	uint16_t *in_flight = vq->in_flight_ndesc;
	const enum vt_barrier_kind barriers = vq->barriers;
	const uint64_t generation = vq->ring_generation;
	const unsigned int num = vq->num;
	const bool in_order = vq->in_order;
	uint16_t slot = vq->next_avail;
	bool wrap = vq->avail_wrap;
	unsigned int n;

	/* The slots the driver owns: a chain of one needs one (pop_one's limit). */
	unsigned int owned = num - vq_packed_distance(num, vq->used_idx, vq->used_wrap, slot, wrap);
	if (max > owned)
		max = owned;
	for (n = 0; n < max; n++, iov += iov_per_chain) {
		/* Acquire: the descriptor is read after the flags that expose it (as pop_one). */
		uint16_t flags = ring_consume16(barriers, &ring[slot].flags);
		if (!desc_is_avail(flags, wrap)) {
			*empty = true;
			break;
		}
		if (n == 0)
			vq_packed_prefetch_lines(ring, num, slot, max);
		/* Checked per chain, as pop_one does: an IOTLB change ends the run. */
		if (atomic_load_explicit(generation_word, memory_order_acquire) != generation)
			break;
		struct packed_desc d = read_desc(&ring[slot]);
		void *hva;
		/* The flags the ownership check saw, not a re-read. */
		if ((flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) || !d.len ||
		    d.id >= num || in_flight[d.id] ||
		    !vq_run_translate(vq, &extent, d.addr, d.len, flags, &hva))
			break;
		bool writable = flags & VIRTQ_DESC_F_WRITE;
		iov->iov_base = hva;
		iov->iov_len = d.len;
		chains[n] = (struct vt_vq_chain){ .id = d.id,
						  .ndesc = 1,
						  .nreadable = !writable,
						  .nwritable = writable,
						  .readable_bytes = writable ? 0 : d.len,
						  .writable_bytes = writable ? d.len : 0 };
		in_flight[d.id] = 1;
		if (in_order)
			vq_dev_order_push(vq, d.id);
		if (++slot == num) {
			slot = 0;
			wrap = !wrap;
		}
	}
	vq->next_avail = slot;
	vq->avail_wrap = wrap;
	vq->in_flight += n;
	return n;
}

unsigned int vq_packed_dev_pop_burst(struct vt_vq_dev *vq, struct vt_vq_chain *chains,
				     struct iovec *iov, unsigned int iov_per_chain,
				     unsigned int max, int *err)
{
	unsigned int n = 0;

	/* Runs of the common case; pop_one for resubmissions and whatever ends a run. */
	while (n < max && vq_dev_rings_hold(vq)) {
		bool empty = false;
		unsigned int got = pop_run(vq, &chains[n], iov + (size_t)n * iov_per_chain,
					   iov_per_chain, max - n, &empty);
		n += got;
		if (empty) {
			*err = -EAGAIN;
			break;
		}
		if (got)
			continue;
		int ret = pop_one(vq, &chains[n], iov + (size_t)n * iov_per_chain, iov_per_chain);
		if (ret < 0) {
			*err = ret;
			break;
		}
		n++;
	}
	return n;
}

void vq_packed_dev_write_used(struct vt_vq_dev *vq)
{
	struct pvirtq_desc *ring = vq->ring.packed.desc;
	const struct vq_used_pending *pending = vq->pending;
	const unsigned int count = vq->npending, num = vq->num;
	uint16_t slot = vq->used_idx;
	bool wrap = vq->used_wrap;
	unsigned int i = 0;

	if (count == 0)
		return;
	if (vq->pending_used == 0) {
		/* The first of a batch: its flags, stored at flush, expose all the others. */
		const struct vq_used_pending *u = &pending[i++];
		ring_write32(&ring[slot].len, u->written);
		ring_write16(&ring[slot].id, u->id);
		vq->pending_first = slot;
		vq->pending_first_wrap = wrap;
		vq->pending_first_flags = used_flags(wrap, u->written);
		vq_packed_advance(num, &slot, &wrap, u->ndesc);
	}
	/* One used descriptor for a chain or an in-order batch skips all it occupied (2.8.2). */
	for (; i < count; i++) {
		/* len, id and flags in one store; published by the first one's flags. */
		const struct vq_used_pending *u = &pending[i];
		uint64_t tail = u->written | (uint64_t)u->id << 32 |
				(uint64_t)used_flags(wrap, u->written) << 48;
		__atomic_store_n((uint64_t *)&ring[slot].len, vt_cpu_to_le64(tail),
				 __ATOMIC_RELAXED);
		vq_packed_advance(num, &slot, &wrap, u->ndesc);
	}
	vq->pending_used = (uint16_t)(vq->pending_used + count);
	vq->used_idx = slot;
	vq->used_wrap = wrap;
}

bool vq_packed_dev_flush(struct vt_vq_dev *vq)
{
	if (vq->pending_used == 0)
		return false;
	/* Release: the batch's other used descriptors and the buffer contents before the flags
	 * that expose its first one (2.8.9); pairs with the driver's ring_consume16 in get. */
	ring_publish16(vq->barriers, &vq->ring.packed.desc[vq->pending_first].flags,
		       vq->pending_first_flags);
	vq->pending_used = 0;
	unsigned int count = vq_packed_distance(vq->num, vq->published_used, vq->published_wrap,
						vq->used_idx, vq->used_wrap);
	vq->published_used = vq->used_idx;
	vq->published_wrap = vq->used_wrap;

	/* Full barrier: the flags store before reading the driver's suppression, or a request the
	 * driver makes in enable_cb is missed (pairs with the barrier there). */
	vt_mb(vq->barriers);
	const struct pvirtq_event_suppress *ev = vq->ring.packed.driver;
	/* Acquire: desc is read after the flags that say it is meaningful (pairs with the
	 * driver's release of the flags after desc). */
	uint16_t mode = ring_consume16(vq->barriers, &ev->flags) & 3;
	if (mode == RING_EVENT_FLAGS_DISABLE)
		return false;
	/* DESC is only meaningful with EVENT_IDX; otherwise, and for the reserved value, notify. */
	if (mode != RING_EVENT_FLAGS_DESC || !vq->event_idx)
		return true;
	return vq_packed_need_event(vq->num, ring_read16(&ev->desc), vq->used_idx, vq->used_wrap,
				    count);
}

/* Writes the device area's flags when they change: the driver reads this line at every kick. */
static void set_event_flags(struct vt_vq_dev *vq, uint16_t flags)
{
	if (vq->device_event_flags == flags)
		return;
	vq->device_event_flags = flags;
	/* Release: the desc field written before it (pairs with the driver's ring_consume16 of
	 * these flags in kick_prepare). */
	ring_publish16(vq->barriers, &vq->ring.packed.device->flags, flags);
}

void vq_packed_dev_disable_notify(struct vt_vq_dev *vq)
{
	set_event_flags(vq, RING_EVENT_FLAGS_DISABLE);
}

bool vq_packed_dev_enable_notify(struct vt_vq_dev *vq)
{
	if (vq->event_idx) {
		/* A notification when the driver makes our next slot available, not before. */
		uint16_t off_wrap =
		    (uint16_t)(vq->next_avail | vq->avail_wrap << PVIRTQ_EVENT_WRAP_SHIFT);
		ring_write16(&vq->ring.packed.device->desc, off_wrap);
		set_event_flags(vq, RING_EVENT_FLAGS_DESC);
	} else {
		set_event_flags(vq, RING_EVENT_FLAGS_ENABLE);
	}
	/* Full barrier: publish the request before re-reading the next slot, or a kick is lost
	 * (pairs with the driver's barrier between publishing and reading our suppression). */
	vt_mb(vq->barriers);
	uint16_t flags = ring_consume16(vq->barriers, &vq->ring.packed.desc[vq->next_avail].flags);
	return desc_is_avail(flags, vq->avail_wrap);
}
