/* SPDX-License-Identifier: MIT */
/*
 * Device half of the split virtqueue (virtio 1.3 section 2.7). Every value read from the
 * driver's areas is read once into a local and checked before use; ring pointers come from the
 * address space and are refreshed when its generation moves (vq_dev.c).
 */
#include <errno.h>

#include "ring_access.h"
#include "vq_impl.h"

int vq_split_dev_init(struct vt_vq_dev *vq)
{
	vq->area_len[0] = virtq_split_desc_size(vq->num);
	vq->area_len[1] = virtq_split_avail_size(vq->num);
	vq->area_len[2] = virtq_split_used_size(vq->num);
	return 0;
}

int vq_split_dev_resolve(struct vt_vq_dev *vq)
{
	void *desc, *avail, *used;
	int ret = vq_dev_map_area(vq, vq->desc_addr, virtq_split_desc_size(vq->num), VT_ACCESS_READ,
				  VIRTQ_DESC_ALIGN, &desc, "descriptor table");
	if (ret == 0)
		ret = vq_dev_map_area(vq, vq->driver_addr, virtq_split_avail_size(vq->num),
				      VT_ACCESS_READ, VIRTQ_AVAIL_ALIGN, &avail, "available ring");
	/* The device writes the used ring and reads nothing back from it. */
	if (ret == 0)
		ret = vq_dev_map_area(vq, vq->device_addr, virtq_split_used_size(vq->num),
				      VT_ACCESS_WRITE, VIRTQ_USED_ALIGN, &used, "used ring");
	if (ret < 0)
		return ret;
	vq->ring.split.desc = desc;
	vq->ring.split.avail = avail;
	vq->ring.split.used = used;
	return 0;
}

/* A descriptor, read once (two 8-byte loads: the table is 16-byte aligned). */
struct split_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

/* Decodes the two little-endian words of a descriptor: addr, then len | flags | next. */
static inline struct split_desc decode_desc(const uint64_t w[2])
{
	return (struct split_desc){
		.addr = w[0],
		.len = (uint32_t)w[1],
		.flags = (uint16_t)(w[1] >> 32),
		.next = (uint16_t)(w[1] >> 48),
	};
}

static inline struct split_desc read_desc(const struct virtq_desc *d)
{
	uint64_t w[2];
	ring_read_desc_words(d, w);
	return decode_desc(w);
}

/* Walks the indirect table @ind refers to (2.7.5.3). */
static int walk_indirect(struct vt_vq_dev *vq, struct vq_chain_builder *b,
			 const struct split_desc *ind)
{
	unsigned int count = ind->len / sizeof(struct virtq_desc);
	struct vq_table table;
	int ret = vq_dev_table_open(vq, ind->addr, ind->len, &table);
	if (ret < 0)
		return ret;
	unsigned int i = 0, seen = 0;
	for (;;) {
		uint64_t w[2];
		ret = vq_dev_table_read(vq, &table, i, w);
		if (ret < 0)
			return ret;
		struct split_desc d = decode_desc(w);
		if (++seen > count)
			return vq_dev_break(vq, VT_VQ_ERR_CHAIN_TOO_LONG,
					    "indirect chain loops (more than %u descriptors)",
					    count);
		if (d.flags & VIRTQ_DESC_F_INDIRECT)
			return vq_dev_break(vq, VT_VQ_ERR_INDIRECT_NESTED, "entry %u of the table",
					    i);
		ret = vq_chain_add(b, d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE);
		if (ret < 0)
			return ret;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		if (d.next >= count)
			return vq_dev_break(vq, VT_VQ_ERR_NEXT_RANGE,
					    "indirect next %u in a table of %u", d.next, count);
		i = d.next;
	}
}

/*
 * The general walk of the chain whose head descriptor @d was read from @head: every rule checked.
 * Out of line, so that the one-descriptor path keeps a small frame. *@seen: descriptors walked.
 */
static __attribute__((noinline)) int walk_chain(struct vt_vq_dev *vq, uint16_t head,
						struct split_desc d, struct vt_vq_chain *chain,
						struct iovec *iov, unsigned int iov_max,
						unsigned int *seen)
{
	const struct virtq_desc *desc = vq->ring.split.desc;
	struct vq_chain_builder b;
	vq_chain_begin(&b, vq, chain, iov, iov_max);
	unsigned int i = head, n = 0;
	int ret;
	for (;;) {
		if (n)
			d = read_desc(&desc[i]);
		if (++n > vq->max_chain)
			return vq_dev_break(vq, VT_VQ_ERR_CHAIN_TOO_LONG,
					    "chain from head %u exceeds %u descriptors", head,
					    vq->max_chain);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!vq->indirect)
				return vq_dev_break(vq, VT_VQ_ERR_INDIRECT_NOT_NEGOTIATED,
						    "descriptor %u", i);
			if (d.flags & VIRTQ_DESC_F_NEXT)
				return vq_dev_break(vq, VT_VQ_ERR_INDIRECT_WITH_NEXT,
						    "descriptor %u", i);
			/* 2.7.5.3.2: the table ends the chain; its WRITE flag is ignored. */
			ret = walk_indirect(vq, &b, &d);
			if (ret < 0)
				return ret;
			break;
		}
		ret = vq_chain_add(&b, d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE);
		if (ret < 0)
			return ret;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= vq->num)
			return vq_dev_break(vq, VT_VQ_ERR_NEXT_RANGE, "next %u, queue size %u",
					    d.next, vq->num);
		i = d.next;
	}
	*seen = n;
	return 0;
}

/* Takes the chain at @head into @chain and marks it in flight; nothing is consumed on error. */
static inline int take_chain(struct vt_vq_dev *vq, uint16_t head, struct vt_vq_chain *chain,
			     struct iovec *iov, unsigned int iov_max)
{
	if (head >= vq->num)
		return vq_dev_break(vq, VT_VQ_ERR_HEAD_RANGE, "head %u, queue size %u", head,
				    vq->num);
	if (vq->in_flight_ndesc[head])
		return vq_dev_break(vq, VT_VQ_ERR_BUFFER_ID_IN_FLIGHT,
				    "head %u made available again while in flight", head);

	/* Read once: both the one-descriptor path and the walk use this copy of the head. */
	struct split_desc d = read_desc(&vq->ring.split.desc[head]);
	unsigned int seen = 1;
	if ((d.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) ||
	    !vq_chain_single(vq, chain, iov, iov_max, d.addr, d.len,
			     d.flags & VIRTQ_DESC_F_WRITE)) {
		int ret = walk_chain(vq, head, d, chain, iov, iov_max, &seen);
		if (ret < 0)
			return ret;
	}
	chain->id = head;
	chain->ndesc = (uint16_t)seen;
	vq->in_flight_ndesc[head] = (uint16_t)seen;
	vq->in_flight++;
	if (vq->in_order)
		vq_dev_order_push(vq, head);
	return 0;
}

/*
 * Reads the heads of the entries from next_avail up to the available index last seen (at most
 * VQ_AVAIL_CACHE) into avail_cache, each once: pop validates and uses these copies. Their lines
 * are read in one go, and the loads of the descriptors they name start together (masked into
 * the table: a prefetch never faults) instead of one pop at a time behind each head.
 */
static void read_heads(struct vt_vq_dev *vq)
{
	const struct virtq_avail *avail = vq->ring.split.avail;
	const struct virtq_desc *desc = vq->ring.split.desc;
	uint16_t mask = (uint16_t)(vq->num - 1);
	unsigned int n = (uint16_t)(vq->shadow_avail_idx - vq->next_avail);

	if (n > VQ_AVAIL_CACHE)
		n = VQ_AVAIL_CACHE;
	for (unsigned int i = 0; i < n; i++) {
		uint16_t pos = (uint16_t)(vq->next_avail + i);
		uint16_t head = ring_read16(&avail->ring[pos & mask]);
		vq->avail_cache[pos % VQ_AVAIL_CACHE] = head;
		__builtin_prefetch(&desc[head & mask]);
	}
	vq->avail_cached = (uint16_t)n;
}

/*
 * Makes sure avail_cache holds heads: when it is empty, reads the available index (only once
 * the heads it exposed last time are all taken) and the heads it exposes. 0, -EAGAIN when
 * nothing is available, -EPROTO for an index that moved too far.
 */
static inline int fill_heads(struct vt_vq_dev *vq)
{
	if (vq->avail_cached)
		return 0;
	if (vq->shadow_avail_idx == vq->next_avail) {
		/* Acquire: the ring entries and descriptors it exposes are read after it. */
		struct virtq_avail *avail = vq->ring.split.avail;
		uint16_t idx = ring_consume16(vq->barriers, &avail->idx);
		if ((uint16_t)(idx - vq->next_avail) > vq->num)
			return vq_dev_break(vq, VT_VQ_ERR_AVAIL_IDX,
					    "avail idx %u, %u already taken, queue size %u", idx,
					    vq->next_avail, vq->num);
		vq->shadow_avail_idx = idx;
		if (idx == vq->next_avail)
			return -EAGAIN;
	}
	read_heads(vq);
	return 0;
}

/* One pop, every rule checked: the entries a run leaves, and resubmissions. */
static int pop_one(struct vt_vq_dev *vq, struct vt_vq_chain *chain, struct iovec *iov,
		   unsigned int iov_max)
{
	int ret;

	/* After a restart, what the earlier back-end had taken comes first (vq_inflight.c). */
	if (vq->resubmit_pos < vq->resubmit_count) {
		ret = take_chain(vq, vq->resubmit[vq->resubmit_pos], chain, iov, iov_max);
		if (ret == 0)
			vq->resubmit_pos++;
		return ret;
	}
	ret = fill_heads(vq);
	if (ret < 0)
		return ret;
	uint16_t head = vq->avail_cache[vq->next_avail % VQ_AVAIL_CACHE];
	ret = take_chain(vq, head, chain, iov, iov_max);
	if (ret < 0)
		return ret;
	if (vq->inflight)
		vq_inflight_taken(vq, head);
	vq->next_avail++;
	vq->avail_cached--;
	return 0;
}

/*
 * A burst's common case in one tight loop: heads already read ahead, each naming a chain of one
 * descriptor inside one extent of the address space (the cached one, nearly always). The loop keeps
 * the queue's fields in locals, which pop_one cannot (to the compiler, a store through an iovec or
 * a chain may change them), and applies take_chain's rules. It stops before the first entry that
 * needs more (a chain, an indirect table, an address no extent allows, a head the rules refuse, a
 * generation that moved) and takes nothing of it: pop_one then takes that entry from the start. Its
 * descriptor is read again there, which is no double fetch, as nothing read here decides anything
 * there.
 */
static unsigned int pop_run(struct vt_vq_dev *vq, struct vt_vq_chain *chains, struct iovec *iov,
			    unsigned int iov_per_chain, unsigned int max)
{
	const _Atomic uint64_t *generation_word = vq->as.generation_word;
	struct vq_run_extent extent;

	if (!generation_word || !iov_per_chain || vq->inflight ||
	    vq->resubmit_pos < vq->resubmit_count)
		return 0;
	vq_run_extent_load(vq, &extent);
	const struct virtq_desc *desc = vq->ring.split.desc;
	uint16_t *in_flight = vq->in_flight_ndesc;
	const uint64_t generation = vq->ring_generation;
	const unsigned int num = vq->num;
	const uint16_t next = vq->next_avail;
	const bool in_order = vq->in_order;
	unsigned int n;

	if (max > vq->avail_cached)
		max = vq->avail_cached;
	for (n = 0; n < max; n++, iov += iov_per_chain) {
		uint16_t head = vq->avail_cache[(uint16_t)(next + n) % VQ_AVAIL_CACHE];
		/* Checked per chain, as pop_one does: an IOTLB change ends the run. */
		if (head >= num || in_flight[head] ||
		    atomic_load_explicit(generation_word, memory_order_acquire) != generation)
			break;
		struct split_desc d = read_desc(&desc[head]);
		void *hva;
		if ((d.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) || !d.len ||
		    !vq_run_translate(vq, &extent, d.addr, d.len, d.flags, &hva))
			break;
		bool writable = d.flags & VIRTQ_DESC_F_WRITE;
		iov->iov_base = hva;
		iov->iov_len = d.len;
		chains[n] = (struct vt_vq_chain){ .id = head,
						  .ndesc = 1,
						  .nreadable = !writable,
						  .nwritable = writable,
						  .readable_bytes = writable ? 0 : d.len,
						  .writable_bytes = writable ? d.len : 0 };
		in_flight[head] = 1;
		if (in_order)
			vq_dev_order_push(vq, head);
	}
	vq->next_avail = (uint16_t)(next + n);
	vq->avail_cached = (uint16_t)(vq->avail_cached - n);
	vq->in_flight += n;
	return n;
}

unsigned int vq_split_dev_pop_burst(struct vt_vq_dev *vq, struct vt_vq_chain *chains,
				    struct iovec *iov, unsigned int iov_per_chain, unsigned int max,
				    int *err)
{
	unsigned int n = 0;

	/* Runs of the common case; pop_one for resubmissions and whatever ends a run. */
	while (n < max && vq_dev_rings_hold(vq)) {
		int ret = 0;
		if (vq->resubmit_pos == vq->resubmit_count && (ret = fill_heads(vq)) == 0) {
			unsigned int got = pop_run(vq, &chains[n], iov + (size_t)n * iov_per_chain,
						   iov_per_chain, max - n);
			n += got;
			if (got)
				continue;
		}
		if (ret == 0)
			ret =
			    pop_one(vq, &chains[n], iov + (size_t)n * iov_per_chain, iov_per_chain);
		if (ret < 0) {
			*err = ret;
			break;
		}
		n++;
	}
	return n;
}

void vq_split_dev_write_used(struct vt_vq_dev *vq)
{
	struct virtq_used_elem *ring = vq->ring.split.used->ring;
	const struct vq_used_pending *pending = vq->pending;
	const unsigned int count = vq->npending;
	const uint16_t mask = (uint16_t)(vq->num - 1);
	uint16_t idx = vq->used_idx;

	for (unsigned int i = 0; i < count; i++) {
		struct virtq_used_elem *e = &ring[idx & mask];
		ring_write32(&e->id, pending[i].id);
		ring_write32(&e->len, pending[i].written);
		/* An in-order batch is one entry for the last buffer, the index skipping the rest.
		 */
		idx = (uint16_t)(idx + pending[i].batch);
	}
	vq->used_idx = idx;
}

/* vring_used_event / vring_avail_event: the fields after the rings (2.7.7.2, 2.7.10). */
static inline vt_le16 *used_event_field(struct vt_vq_dev *vq)
{
	return &vq->ring.split.avail->ring[vq->num];
}

static inline vt_le16 *avail_event_field(struct vt_vq_dev *vq)
{
	return (vt_le16 *)&vq->ring.split.used->ring[vq->num];
}

bool vq_split_dev_flush(struct vt_vq_dev *vq)
{
	uint16_t old = vq->published_used, new = vq->used_idx;
	if (old == new)
		return false;
	/* Release: the used entries (and the buffer contents) before the index. */
	ring_publish16(vq->barriers, &vq->ring.split.used->idx, new);
	vq->published_used = new;
	/* Full barrier: the index store before reading the driver's suppression (2.7.7). */
	vt_mb(vq->barriers);
	if (vq->event_idx)
		return vring_need_event(ring_read16(used_event_field(vq)), new, old);
	return !(ring_read16(&vq->ring.split.avail->flags) & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

void vq_split_dev_disable_notify(struct vt_vq_dev *vq)
{
	/* With EVENT_IDX the driver only kicks when it passes avail_event: leaving it behind
	 * is enough. Without, the flag asks it to stop. */
	if (!vq->event_idx)
		ring_write16(&vq->ring.split.used->flags, VIRTQ_USED_F_NO_NOTIFY);
}

bool vq_split_dev_enable_notify(struct vt_vq_dev *vq)
{
	if (vq->event_idx)
		ring_write16(avail_event_field(vq), vq->next_avail);
	else
		ring_write16(&vq->ring.split.used->flags, 0);
	/* Full barrier: publish the request before re-reading avail idx, or a kick is lost. */
	vt_mb(vq->barriers);
	uint16_t idx = ring_consume16(vq->barriers, &vq->ring.split.avail->idx);
	return idx != vq->next_avail;
}
