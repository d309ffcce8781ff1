/* SPDX-License-Identifier: MIT */
/*
 * vhost-user inflight tracking (vhost-user.rst, "Inflight I/O tracking"): the device half records
 * in the front-end's shared buffer which buffers it took and which it returned, so that a
 * back-end started after a crash hands the unfinished ones out again, oldest first, instead of
 * the driver waiting forever for them. Split rings record heads (the descriptor table keeps the
 * chains); packed rings record copies of the descriptors, since used entries overwrite the ring.
 *
 * The stores only need to reach memory in program order as seen by a later process (the one that
 * recovers after this one died), not by another CPU: compiler barriers order them around the
 * used-index publication. Everything read back from a region is checked (indices below the queue
 * size, lists bounded): a corrupted region costs its requests, never memory safety, and chains
 * handed out again are validated like any other.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ring_access.h"
#include "vq_impl.h"

#define ORDER() atomic_signal_fence(memory_order_seq_cst)

size_t vt_vq_inflight_size(unsigned int num)
{
	size_t split = sizeof(struct vhost_user_inflight_split) +
		       (size_t)num * sizeof(struct vhost_user_inflight_desc_split);
	size_t packed = sizeof(struct vhost_user_inflight_packed) +
			(size_t)num * sizeof(struct vhost_user_inflight_desc_packed);
	return split > packed ? split : packed;
}

/* ------------------------------------------------------------------ both layouts */

/* The counter an entry of a region was taken with (its layout's). */
typedef uint64_t (*counter_fn)(const void *region, unsigned int entry);

/*
 * Adds entry @i to the buffers to hand out again, kept oldest (smallest counter) first by
 * insertion: num is small and this runs once per start. *newest ends past every counter seen.
 */
static void resubmit_add(struct vt_vq_dev *vq, const void *region, counter_fn counter_of,
			 unsigned int *count, uint16_t i, uint64_t *newest)
{
	uint64_t c = counter_of(region, i);
	unsigned int at = (*count)++;

	while (at > 0 && counter_of(region, vq->resubmit[at - 1]) > c) {
		vq->resubmit[at] = vq->resubmit[at - 1];
		at--;
	}
	vq->resubmit[at] = i;
	if (c >= *newest)
		*newest = c + 1;
}

/* The list is complete: handed out first, and counters go on after the newest. */
static void resubmit_start(struct vt_vq_dev *vq, unsigned int count, uint64_t newest)
{
	vq->resubmit_count = count;
	vq->resubmit_pos = 0;
	vq->inflight_counter = newest;
}

/* ------------------------------------------------------------------ split */

static uint64_t split_counter(const void *region, unsigned int entry)
{
	return ((const struct vhost_user_inflight_split *)region)->desc[entry].counter;
}

static void split_reset(struct vhost_user_inflight_split *r, unsigned int num, uint16_t used)
{
	memset(r->desc, 0, (size_t)num * sizeof(r->desc[0]));
	r->features = 0;
	r->last_batch_head = 0;
	r->used_idx = used;
	r->desc_num = (uint16_t)num;
	ORDER(); /* the entries before the version says valid */
	r->version = 1;
}

static void split_recover(struct vt_vq_dev *vq)
{
	struct vhost_user_inflight_split *r = vq->inflight;
	unsigned int num = vq->num;
	/* Our own earlier writes: nobody else moves used->idx. */
	uint16_t used = ring_read16(&vq->ring.split.used->idx);

	if (r->used_idx != used) {
		/* A batch was published but not yet cleared when the earlier back-end died. */
		unsigned int batch = (uint16_t)(used - r->used_idx);
		if (batch > num) {
			vt_log(vq->log, VT_LOG_WARN,
			       "%s: inflight region used_idx %u vs used ring %u: starting afresh",
			       vq->name, r->used_idx, used);
			split_reset(r, num, used);
			return;
		}
		uint16_t i = r->last_batch_head;
		for (unsigned int k = 0; k < batch && i < num; k++) {
			r->desc[i].inflight = 0;
			i = r->desc[i].next;
		}
		r->used_idx = used;
	}
	/* Heads still in flight, oldest first. */
	unsigned int count = 0;
	uint64_t newest = 0;
	for (unsigned int i = 0; i < num; i++)
		if (r->desc[i].inflight)
			resubmit_add(vq, r, split_counter, &count, (uint16_t)i, &newest);
	resubmit_start(vq, count, newest);
	/* Every head taken was either used or is in flight: the next avail entry follows them. */
	vq->used_idx = used;
	vq->published_used = used;
	vq->next_avail = (uint16_t)(used + count);
	vq->shadow_avail_idx = vq->next_avail;
	vq->avail_cached = 0;
	if (count)
		vt_log(vq->log, VT_LOG_INFO,
		       "%s: %u buffers in flight before a restart: resubmitting", vq->name, count);
}

/* ------------------------------------------------------------------ packed */

static uint64_t packed_counter(const void *region, unsigned int entry)
{
	return ((const struct vhost_user_inflight_packed *)region)->desc[entry].counter;
}

static void packed_reset(struct vt_vq_dev *vq)
{
	struct vhost_user_inflight_packed *r = vq->inflight_packed;
	unsigned int num = vq->num;

	memset(r->desc, 0, (size_t)num * sizeof(r->desc[0]));
	for (unsigned int i = 0; i < num; i++)
		r->desc[i].next = (uint16_t)(i + 1); /* the free list: every entry, in order */
	r->features = 0;
	r->free_head = r->old_free_head = 0;
	r->used_idx = r->old_used_idx = vq->used_idx;
	r->used_wrap_counter = r->old_used_wrap_counter = vq->used_wrap;
	r->desc_num = (uint16_t)num;
	ORDER();
	r->version = 1;
}

void vq_inflight_packed_taken(struct vt_vq_dev *vq, uint16_t id, unsigned int n)
{
	struct vhost_user_inflight_packed *r = vq->inflight_packed;
	uint16_t head = r->free_head, cur = head;

	/* Entries come off the free list; a list corrupted under us ends tracking, not safety. */
	for (unsigned int k = 0; k < n; k++) {
		if (cur >= vq->num) {
			vt_log(vq->log, VT_LOG_WARN,
			       "%s: inflight free list broken: tracking reset", vq->name);
			packed_reset(vq);
			return;
		}
		cur = r->desc[cur].next;
	}
	struct vhost_user_inflight_desc_packed *h = &r->desc[head];
	h->num = 0;
	h->counter = vq->inflight_counter++;
	h->inflight = 1;
	cur = head;
	for (unsigned int k = 0; k < n; k++) {
		const struct vq_inflight_copy *d = &vq->inflight_scratch[k];
		struct vhost_user_inflight_desc_packed *e = &r->desc[cur];
		if (k == n - 1)
			h->last = cur;
		h->num++;
		e->addr = d->addr;
		e->len = d->len;
		e->flags = d->flags;
		e->id = d->id;
		cur = e->next;
	}
	r->free_head = cur;
	ORDER(); /* the buffer recorded before the take counts as complete */
	r->old_free_head = cur;
	vq->inflight_entry[id] = head;
}

int vq_inflight_packed_next(struct vt_vq_dev *vq, uint16_t *entry, struct vq_inflight_copy *d)
{
	if (*entry >= vq->num)
		return -EINVAL;
	const struct vhost_user_inflight_desc_packed *e = &vq->inflight_packed->desc[*entry];
	*d = (struct vq_inflight_copy){
		.addr = e->addr, .len = e->len, .id = e->id, .flags = e->flags
	};
	*entry = e->next;
	return 0;
}

static void packed_recover(struct vt_vq_dev *vq)
{
	struct vhost_user_inflight_packed *r = vq->inflight_packed;
	unsigned int num = vq->num;

	if (r->used_idx != r->old_used_idx || r->used_wrap_counter != r->old_used_wrap_counter) {
		/*
		 * A batch was under way. If its first used descriptor was already written (its
		 * flags no longer read "available" in the old lap), the driver has it: commit the
		 * batch; otherwise roll it back.
		 */
		if (r->old_used_idx >= num) {
			packed_reset(vq);
			return;
		}
		uint16_t flags = ring_read16(&vq->ring.packed.desc[r->old_used_idx].flags);
		bool w = r->old_used_wrap_counter != 0;
		uint16_t avail_bits =
		    (uint16_t)((w ? VIRTQ_DESC_F_AVAIL : 0) | (w ? 0 : VIRTQ_DESC_F_USED));
		if ((flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED)) != avail_bits) {
			r->old_free_head = r->free_head;
			r->old_used_idx = r->used_idx;
			r->old_used_wrap_counter = r->used_wrap_counter;
		}
	}
	r->free_head = r->old_free_head;
	r->used_idx = r->old_used_idx;
	r->used_wrap_counter = r->old_used_wrap_counter;
	if (r->used_idx >= num || r->free_head > num) {
		vt_log(vq->log, VT_LOG_WARN, "%s: inflight region inconsistent: starting afresh",
		       vq->name);
		packed_reset(vq);
		return;
	}
	/* What is on the free list is not in flight, whatever its flag says. */
	uint16_t cur = r->free_head;
	for (unsigned int k = 0; k < num && cur < num; k++) {
		r->desc[cur].inflight = 0;
		cur = r->desc[cur].next;
	}
	unsigned int count = 0, slots = 0;
	uint64_t newest = 0;
	for (unsigned int i = 0; i < num; i++) {
		const struct vhost_user_inflight_desc_packed *e = &r->desc[i];
		if (!e->inflight)
			continue;
		if (e->num == 0 || e->num > num || slots + e->num > num) {
			vt_log(vq->log, VT_LOG_WARN,
			       "%s: inflight entry %u inconsistent: starting afresh", vq->name, i);
			packed_reset(vq);
			return;
		}
		slots += e->num;
		resubmit_add(vq, r, packed_counter, &count, (uint16_t)i, &newest);
	}
	resubmit_start(vq, count, newest);
	/* The used position is the region's; the buffers in flight occupy the slots after it. */
	vq->used_idx = r->used_idx;
	vq->used_wrap = r->used_wrap_counter != 0;
	vq->published_used = vq->used_idx;
	vq->published_wrap = vq->used_wrap;
	vq->next_avail = vq->used_idx;
	vq->avail_wrap = vq->used_wrap;
	vq_packed_advance(num, &vq->next_avail, &vq->avail_wrap, slots);
	if (count)
		vt_log(vq->log, VT_LOG_INFO,
		       "%s: %u buffers in flight before a restart: resubmitting", vq->name, count);
}

/* ------------------------------------------------------------------ both */

int vq_inflight_init(struct vt_vq_dev *vq, void *region)
{
	if (!region || vq->in_order)
		return 0; /* off: in-order batches retire buffers the used entries do not name */
	if ((uintptr_t)region & 7)
		return -EINVAL;
	vq->resubmit = calloc(vq->num, sizeof(vq->resubmit[0]));
	if (!vq->resubmit)
		return -ENOMEM;
	if (vq->packed) {
		struct vhost_user_inflight_packed *r = region;
		vq->inflight_entry = calloc(vq->num, sizeof(vq->inflight_entry[0]));
		vq->inflight_scratch = calloc(vq->num, sizeof(vq->inflight_scratch[0]));
		if (!vq->inflight_entry || !vq->inflight_scratch)
			return -ENOMEM;
		vq->inflight_packed = r;
		if (r->version == 1 && r->desc_num == vq->num) {
			vq->inflight_recover = true;
			return 0;
		}
		if (r->version != 0)
			vt_log(vq->log, VT_LOG_WARN,
			       "%s: inflight region version %u for %u: afresh", vq->name,
			       r->version, r->desc_num);
		packed_reset(vq);
		return 0;
	}
	struct vhost_user_inflight_split *r = region;
	vq->inflight = r;
	if (r->version == 1 && r->desc_num == vq->num) {
		vq->inflight_recover = true;
		return 0;
	}
	if (r->version != 0)
		vt_log(
		    vq->log, VT_LOG_WARN,
		    "%s: inflight region version %u for %u descriptors (queue %u): starting afresh",
		    vq->name, r->version, r->desc_num, vq->num);
	split_reset(r, vq->num, vq->used_idx);
	return 0;
}

void vq_inflight_recover(struct vt_vq_dev *vq)
{
	vq->inflight_recover = false;
	if (vq->packed)
		packed_recover(vq);
	else
		split_recover(vq);
}

void vq_inflight_before_publish(struct vt_vq_dev *vq)
{
	if (vq->packed) {
		struct vhost_user_inflight_packed *r = vq->inflight_packed;
		/* Each used buffer's entries go back to the free list, then the new used position.
		 */
		for (unsigned int i = 0; i < vq->npending; i++) {
			uint16_t head = vq->inflight_entry[vq->pending[i].id];
			if (head >= vq->num || r->desc[head].last >= vq->num)
				continue;
			uint16_t last = r->desc[head].last;
			r->desc[last].next = r->free_head;
			r->free_head = head;
		}
		r->used_idx = vq->used_idx;
		r->used_wrap_counter = vq->used_wrap;
	} else {
		struct vhost_user_inflight_split *r = vq->inflight;
		for (unsigned int i = 0; i < vq->npending; i++) {
			uint16_t id = vq->pending[i].id;
			r->desc[id].next = r->last_batch_head;
			r->last_batch_head = id;
		}
	}
	ORDER(); /* the batch recorded before the driver can see it */
}

void vq_inflight_after_publish(struct vt_vq_dev *vq)
{
	ORDER(); /* published before the batch is cleared */
	if (vq->packed) {
		struct vhost_user_inflight_packed *r = vq->inflight_packed;
		for (unsigned int i = 0; i < vq->npending; i++) {
			uint16_t head = vq->inflight_entry[vq->pending[i].id];
			if (head < vq->num)
				r->desc[head].inflight = 0;
		}
		ORDER();
		r->old_free_head = r->free_head;
		r->old_used_idx = r->used_idx;
		r->old_used_wrap_counter = r->used_wrap_counter;
		return;
	}
	struct vhost_user_inflight_split *r = vq->inflight;
	for (unsigned int i = 0; i < vq->npending; i++)
		r->desc[vq->pending[i].id].inflight = 0;
	ORDER(); /* cleared before the region says complete */
	r->used_idx = vq->published_used;
}
