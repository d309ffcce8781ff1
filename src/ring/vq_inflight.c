/* SPDX-License-Identifier: MIT */
/*
 * vhost-user inflight tracking for the split ring (vhost-user.rst, "Inflight I/O tracking"): the
 * device half records in the front-end's shared buffer which heads it took and which it returned,
 * so that a back-end started after a crash hands the unfinished ones out again, oldest first,
 * instead of the driver waiting forever for them.
 *
 * The stores only need to reach memory in program order as seen by a later process (the one
 * that recovers after this one died), not by another CPU: compiler barriers order them around
 * the used-index publication.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ring_access.h"
#include "vq_impl.h"

size_t vt_vq_inflight_size(unsigned int num)
{
	return sizeof(struct vhost_user_inflight_split) +
	       (size_t)num * sizeof(struct vhost_user_inflight_desc_split);
}

static void region_reset(struct vhost_user_inflight_split *r, unsigned int num)
{
	memset(r->desc, 0, (size_t)num * sizeof(r->desc[0]));
	r->features = 0;
	r->last_batch_head = 0;
	r->used_idx = 0;
	r->desc_num = (uint16_t)num;
	atomic_signal_fence(memory_order_seq_cst); /* the entries before the version says valid */
	r->version = 1;
}

int vq_inflight_init(struct vt_vq_dev *vq, void *region)
{
	struct vhost_user_inflight_split *r = region;

	if (!region || vq->packed || vq->in_order)
		return 0; /* off: the packed layout and in-order batches are not tracked */
	if ((uintptr_t)region & 7)
		return -EINVAL;
	vq->resubmit = calloc(vq->num, sizeof(vq->resubmit[0]));
	if (!vq->resubmit)
		return -ENOMEM;
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
	region_reset(r, vq->num);
	return 0;
}

/* Called once the rings are resolved: the used index is the truth the region is checked against. */
void vq_inflight_recover(struct vt_vq_dev *vq)
{
	struct vhost_user_inflight_split *r = vq->inflight;
	unsigned int num = vq->num;
	/* Our own earlier writes: nobody else moves used->idx. */
	uint16_t used = ring_read16(&vq->ring.split.used->idx);

	vq->inflight_recover = false;
	if (r->used_idx != used) {
		/* A batch was published but not yet cleared when the earlier back-end died. */
		unsigned int batch = (uint16_t)(used - r->used_idx);
		if (batch > num) {
			vt_log(vq->log, VT_LOG_WARN,
			       "%s: inflight region used_idx %u vs used ring %u: starting afresh",
			       vq->name, r->used_idx, used);
			region_reset(r, num);
			return;
		}
		uint16_t i = r->last_batch_head;
		for (unsigned int k = 0; k < batch && i < num; k++) {
			r->desc[i].inflight = 0;
			i = r->desc[i].next;
		}
		r->used_idx = used;
	}
	/* Heads still in flight, oldest (smallest counter) first: insertion sort, num is small. */
	unsigned int count = 0;
	uint64_t newest = 0;
	for (unsigned int i = 0; i < num; i++) {
		if (!r->desc[i].inflight)
			continue;
		uint64_t c = r->desc[i].counter;
		unsigned int at = count++;
		while (at > 0 && r->desc[vq->resubmit[at - 1]].counter > c) {
			vq->resubmit[at] = vq->resubmit[at - 1];
			at--;
		}
		vq->resubmit[at] = (uint16_t)i;
		if (c >= newest)
			newest = c + 1;
	}
	vq->resubmit_count = count;
	vq->resubmit_pos = 0;
	vq->inflight_counter = newest;
	/* Every head taken was either used or is in flight: the next avail entry follows them. */
	vq->used_idx = used;
	vq->published_used = used;
	vq->next_avail = (uint16_t)(used + count);
	vq->shadow_avail_idx = vq->next_avail;
	if (count)
		vt_log(vq->log, VT_LOG_INFO,
		       "%s: %u buffers in flight before a restart: resubmitting", vq->name, count);
}

void vq_inflight_before_publish(struct vt_vq_dev *vq)
{
	struct vhost_user_inflight_split *r = vq->inflight;

	for (unsigned int i = 0; i < vq->npending; i++) {
		uint16_t id = vq->pending[i].id;
		r->desc[id].next = r->last_batch_head;
		r->last_batch_head = id;
	}
	atomic_signal_fence(memory_order_seq_cst); /* the batch list before used->idx moves */
}

void vq_inflight_after_publish(struct vt_vq_dev *vq)
{
	struct vhost_user_inflight_split *r = vq->inflight;

	atomic_signal_fence(memory_order_seq_cst); /* used->idx before the entries are cleared */
	for (unsigned int i = 0; i < vq->npending; i++)
		r->desc[vq->pending[i].id].inflight = 0;
	atomic_signal_fence(memory_order_seq_cst); /* cleared before the region says complete */
	r->used_idx = vq->published_used;
}
