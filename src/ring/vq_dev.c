/* SPDX-License-Identifier: MIT */
/*
 * The device half's format-independent part: creation, the broken latch, the chain builder both
 * formats feed descriptors into, ring-area mapping, and dispatch to vq_split_dev.c or
 * vq_packed_dev.c on a flag cached at creation.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/spec/endian.h>
#include <virtue/spec/virtio_config.h>

#include "ring_access.h"
#include "vq_impl.h"

void vq_log_broken(const struct vt_log *log, const char *name, enum vt_vq_error error,
		   const char *fmt, va_list ap)
{
	char detail[256];
	vsnprintf(detail, sizeof(detail), fmt, ap);
	vt_log(log, VT_LOG_ERROR, "%s: queue broken: %s: %s", name, vt_vq_error_str(error), detail);
}

int vq_dev_break(struct vt_vq_dev *vq, enum vt_vq_error error, const char *fmt, ...)
{
	if (vq->broken)
		return -EPROTO;
	vq->broken = true;
	vq->error = error;
	va_list ap;
	va_start(ap, fmt);
	vq_log_broken(vq->log, vq->name, error, fmt, ap);
	va_end(ap);
	return -EPROTO;
}

int vt_vq_dev_new(const struct vt_vq_dev_params *params, struct vt_vq_dev **out)
{
	bool packed = (params->features & VT_BIT(VIRTIO_F_RING_PACKED)) != 0;

	if (params->num == 0 || params->num > VIRTQ_SPLIT_MAX_SIZE || !params->as.ops ||
	    params->max_chain > VIRTQ_SPLIT_MAX_SIZE)
		return -EINVAL;
	if (!packed && (params->num & (params->num - 1)))
		return -EINVAL;
	struct vt_vq_dev *vq = aligned_alloc(VQ_CACHELINE, sizeof(*vq));
	if (!vq)
		return -ENOMEM;
	memset(vq, 0, sizeof(*vq));
	vq->packed = packed;
	vq->event_idx = (params->features & VT_BIT(VIRTIO_F_EVENT_IDX)) != 0;
	vq->indirect = (params->features & VT_BIT(VIRTIO_F_INDIRECT_DESC)) != 0;
	vq->in_order = (params->features & VT_BIT(VIRTIO_F_IN_ORDER)) != 0;
	vq->barriers = vt_barrier_kind(params->features);
	vq->num = params->num;
	vq->max_chain =
	    params->max_chain && params->max_chain < params->num ? params->max_chain : params->num;
	/*
	 * An indirect table is bounded by its own length, not by the ring: a device that advertised
	 * seg_max may accept tables of that many segments even in a smaller ring (Linux sizes its
	 * tables from seg_max alone).
	 */
	vq->max_indirect = params->max_chain ? params->max_chain : params->num;
	vq->as = params->as;
	vq->miss_retryable = (params->as.ops->flags & VT_AS_F_MISS_RETRYABLE) != 0;
	vq->desc_addr = params->desc_addr;
	vq->driver_addr = params->driver_addr;
	vq->device_addr = params->device_addr;
	vq->name = params->name ? params->name : "vq";
	vq->log = params->log;
	vq->notify_enabled = true;
	vq->in_flight_ndesc = vq_calloc_lines(vq->num, sizeof(vq->in_flight_ndesc[0]));
	vq->order = vq_order_ring(vq->num, &vq->order_mask);
	vq->pending = vq_calloc_lines(vq->num, sizeof(vq->pending[0]));
	int ret = (!vq->in_flight_ndesc || !vq->order || !vq->pending) ? -ENOMEM : 0;
	if (ret == 0)
		ret = packed ? vq_packed_dev_init(vq) : vq_split_dev_init(vq);
	if (ret == 0) {
		if (packed) {
			vq->next_avail = params->next_avail & PVIRTQ_EVENT_OFF_MASK;
			vq->avail_wrap = (params->next_avail >> PVIRTQ_EVENT_WRAP_SHIFT) & 1;
			if (vq->next_avail >= vq->num)
				ret = -EINVAL;
			vq->used_idx = vq->next_avail;
			vq->used_wrap = vq->avail_wrap;
			vq->published_used = vq->used_idx;
			vq->published_wrap = vq->used_wrap;
		} else {
			vq->next_avail = params->next_avail;
			vq->shadow_avail_idx = params->next_avail;
			vq->used_idx = params->next_avail;
			vq->published_used = params->next_avail;
		}
	}
	/* After the resume point: a fresh region starts where the ring does. */
	if (ret == 0)
		ret = vq_inflight_init(vq, params->inflight);
	if (ret < 0) {
		vt_vq_dev_free(vq);
		return ret;
	}
	*out = vq;
	return 0;
}

void vt_vq_dev_free(struct vt_vq_dev *vq)
{
	if (!vq)
		return;
	free(vq->in_flight_ndesc);
	free(vq->order);
	free(vq->pending);
	free(vq->resubmit);
	free(vq->inflight_entry);
	free(vq->inflight_scratch);
	free(vq);
}

int vq_dev_map_area(struct vt_vq_dev *vq, uint64_t addr, uint64_t len, unsigned int access,
		    unsigned int align, void **hva, const char *what)
{
	if (addr & (align - 1))
		return vq_dev_break(vq, VT_VQ_ERR_RING_UNMAPPED, "%s at 0x%llx not aligned to %u",
				    what, (unsigned long long)addr, align);
	int ret = vt_as_map_contig(&vq->as, addr, len, access, hva, &vq->fault);
	if (ret == -EFAULT && vq->miss_retryable)
		return -EFAULT;
	if (ret < 0)
		return vq_dev_break(vq, VT_VQ_ERR_RING_UNMAPPED, "%s at 0x%llx size %llu: %s", what,
				    (unsigned long long)addr, (unsigned long long)len,
				    ret == -ENOBUFS ? "not contiguous" : strerror(-ret));
	/* Accessed with atomics: the host side must keep the alignment the bus address had. */
	if ((uintptr_t)*hva & (align - 1))
		return vq_dev_break(vq, VT_VQ_ERR_RING_UNMAPPED, "%s mapped misaligned", what);
	return 0;
}

/* A translation failure of driver-written metadata: park on a retryable miss, else break. */
static int vq_dev_fault(struct vt_vq_dev *vq, int ret, uint64_t addr, const char *what)
{
	if (ret == -EFAULT && vq->miss_retryable)
		return -EFAULT;
	if (ret == -EACCES)
		return vq_dev_break(vq, VT_VQ_ERR_PERMISSION, "%s at 0x%llx not readable", what,
				    (unsigned long long)addr);
	return vq_dev_break(vq, VT_VQ_ERR_UNMAPPED, "%s at 0x%llx: %s", what,
			    (unsigned long long)addr,
			    ret == -EFAULT ? "not mapped" : strerror(-ret));
}

int vq_dev_table_open(struct vt_vq_dev *vq, uint64_t addr, uint32_t len, struct vq_table *t)
{
	/* Both formats: a table holds whole 16-byte descriptors, at most a chain's worth. */
	if (len == 0 || len % 16)
		return vq_dev_break(vq, VT_VQ_ERR_INDIRECT_LEN, "indirect table of %u bytes", len);
	if (len / 16 > vq->max_indirect)
		return vq_dev_break(vq, VT_VQ_ERR_INDIRECT_LEN,
				    "indirect table of %u descriptors, limit %u", len / 16,
				    vq->max_indirect);
	void *hva = NULL;
	t->addr = addr;
	t->count = len / 16;
	t->hva = NULL;
	int ret = vt_as_map_contig(&vq->as, addr, len, VT_ACCESS_READ, &hva, &vq->fault);
	if (ret == -ENOBUFS)
		return 0; /* mapped, but in pieces: read entry by entry */
	if (ret < 0)
		return vq_dev_fault(vq, ret, addr, "indirect table");
	/* Whole-word loads need 8-byte alignment; anything else takes the slow path. */
	if (((uintptr_t)hva & 7) == 0)
		t->hva = hva;
	return 0;
}

int vq_dev_table_read(struct vt_vq_dev *vq, const struct vq_table *t, unsigned int i,
		      uint64_t word[2])
{
	if (t->hva) {
		ring_read_desc_words(t->hva + 16 * (size_t)i, word);
		return 0;
	}
	uint64_t raw[2];
	uint64_t addr = t->addr + 16 * (uint64_t)i;
	/* Copied once into a local: the driver changing it afterwards changes nothing here. */
	int ret = vt_as_read(&vq->as, addr, raw, sizeof(raw), &vq->fault);
	if (ret < 0)
		return vq_dev_fault(vq, ret, addr, "indirect table entry");
	word[0] = vt_le64_to_cpu(raw[0]);
	word[1] = vt_le64_to_cpu(raw[1]);
	return 0;
}

/*
 * Whether the address space can vouch that none of the three ring areas changed since
 * ring_generation (an IOTLB invalidating a buffer's IOVA, say); if so ring_generation moves on.
 */
static bool vq_dev_rings_unchanged(struct vt_vq_dev *vq)
{
	const uint64_t addr[3] = { vq->desc_addr, vq->driver_addr, vq->device_addr };
	uint64_t valid_to = UINT64_MAX;

	for (unsigned int i = 0; i < 3; i++) {
		uint64_t now;
		if (vt_as_unchanged_since(&vq->as, vq->ring_generation, addr[i], vq->area_len[i],
					  &now) < 0)
			return false;
		/* Each area is vouched for up to its own "now": the earliest holds for all. */
		if (now < valid_to)
			valid_to = now;
	}
	vq->ring_generation = valid_to;
	return true;
}

bool vq_dev_rings_revalidate(struct vt_vq_dev *vq)
{
	if (!vq->rings_resolved || !vq_dev_rings_unchanged(vq))
		return false;
	/* The cached extent was taken under the old generation: the change may have hit it. */
	vq->extent_valid = false;
	return true;
}

/* vq_dev_ensure_rings when the generation moved: out of line, as it is rare. */
static __attribute__((noinline)) int vq_dev_refresh_rings(struct vt_vq_dev *vq, uint64_t gen)
{
	if (vq_dev_rings_revalidate(vq))
		return 0;
	vq->extent_valid = false;
	vq->rings_resolved = false;
	int ret = vq->packed ? vq_packed_dev_resolve(vq) : vq_split_dev_resolve(vq);
	if (ret < 0)
		return ret;
	vq->rings_resolved = true;
	vq->ring_generation = gen;
	if (vq->inflight_recover)
		vq_inflight_recover(vq);
	return 0;
}

/* Makes sure the ring pointers are valid for the current address-space generation. */
static inline int vq_dev_ensure_rings(struct vt_vq_dev *vq)
{
	if (__builtin_expect(vq_dev_rings_current(vq), 1))
		return 0;
	return vq_dev_refresh_rings(vq, vt_as_generation(&vq->as));
}

/*
 * Caches the extent holding @addr, taken only under the generation the rings were checked under
 * at this pop; false when the address space has none (or none it vouches for).
 */
static bool cache_extent(struct vt_vq_dev *vq, uint64_t addr)
{
	struct vt_as_extent e;
	uint64_t gen;

	if (vt_as_extent(&vq->as, addr, &e, &gen) < 0 || gen != vq->ring_generation)
		return false;
	vq->extent = e;
	vq->extent_valid = true;
	return true;
}

bool vq_run_extent_find(struct vt_vq_dev *vq, uint64_t addr, struct vq_run_extent *r)
{
	if (!cache_extent(vq, addr))
		return false;
	vq_run_extent_load(vq, r);
	return r->valid;
}

int vq_chain_add_slow(struct vq_chain_builder *b, uint64_t addr, uint32_t len, bool writable)
{
	struct vt_vq_dev *vq = b->vq;

	if (!writable && b->seen_writable)
		return vq_dev_break(vq, VT_VQ_ERR_READABLE_AFTER_WRITABLE,
				    "readable descriptor at 0x%llx after a writable one",
				    (unsigned long long)addr);
	b->seen_writable |= writable;
	b->total += len;
	/*
	 * 2.7.5.2 forbids more than 2^32 bytes; exactly 2^32 is refused as well, since chain
	 * byte counts (like the used length) are 32-bit.
	 */
	if (b->total > UINT32_MAX)
		return vq_dev_break(vq, VT_VQ_ERR_TOTAL_LEN, "chain reaches %llu bytes",
				    (unsigned long long)b->total);
	unsigned int n = 0;
	unsigned int access = writable ? VT_ACCESS_WRITE : VT_ACCESS_READ;
	bool cached = vq_extent_covers(vq, addr, len, access);
	if (!cached && len && cache_extent(vq, addr))
		cached = vq_extent_covers(vq, addr, len, access);
	if (cached && b->n < b->iov_max) {
		b->iov[b->n].iov_base = vq_extent_hva(vq, addr);
		b->iov[b->n].iov_len = len;
		n = 1;
		goto translated;
	}
	int ret = vt_as_translate(&vq->as, addr, len, access, b->iov + b->n, b->iov_max - b->n, &n,
				  &vq->fault);
	if (ret == -ENOBUFS)
		return -ENOBUFS;
	if (ret == -EFAULT && vq->miss_retryable)
		return -EFAULT;
	if (ret == -EACCES)
		return vq_dev_break(
		    vq, VT_VQ_ERR_PERMISSION, "%s descriptor at 0x%llx len %u: mapping forbids it",
		    writable ? "writable" : "readable", (unsigned long long)addr, len);
	if (ret < 0)
		return vq_dev_break(vq, VT_VQ_ERR_UNMAPPED, "descriptor at 0x%llx len %u: %s",
				    (unsigned long long)addr, len,
				    ret == -EFAULT ? "not mapped" : strerror(-ret));
translated:
	b->n += n;
	if (writable) {
		b->chain->nwritable += n;
		b->chain->writable_bytes += len;
	} else {
		b->chain->nreadable += n;
		b->chain->readable_bytes += len;
	}
	return 0;
}

int vt_vq_dev_pop(struct vt_vq_dev *vq, struct vt_vq_chain *chain, struct iovec *iov,
		  unsigned int iov_max)
{
	/* A burst of one: one path, so every rule is checked by the same code either way. */
	int ret = vt_vq_dev_pop_burst(vq, chain, iov, iov_max, 1);
	return ret == 1 ? 0 : ret == 0 ? -EAGAIN : ret;
}

int vt_vq_dev_pop_burst(struct vt_vq_dev *vq, struct vt_vq_chain *chains, struct iovec *iov,
			unsigned int iov_per_chain, unsigned int max)
{
	if (vq->broken)
		return -EPROTO;
	int err = vq_dev_ensure_rings(vq);
	if (err < 0)
		return err;
	unsigned int n = vq->packed
			     ? vq_packed_dev_pop_burst(vq, chains, iov, iov_per_chain, max, &err)
			     : vq_split_dev_pop_burst(vq, chains, iov, iov_per_chain, max, &err);
	/* What was taken counts; an error waits for the next call, which meets it first. */
	if (n || err == -EAGAIN)
		return (int)n;
	return err;
}

/* IN_ORDER: records a used entry for the next flush, retiring the @batch oldest buffers. */
static inline int vq_dev_push_in_order(struct vt_vq_dev *vq, uint16_t id, uint16_t ndesc,
				       uint32_t written, unsigned int batch)
{
	/* In locals: to the compiler, a store to in_flight_ndesc may change the queue's fields. */
	const uint16_t *order = vq->order;
	uint16_t *in_flight = vq->in_flight_ndesc;
	const unsigned int order_mask = vq->order_mask;
	unsigned int head = vq->order_head;

	vq->pending[vq->npending++] = (struct vq_used_pending){ id, ndesc, written, batch };
	for (unsigned int i = 0; i < batch; i++) {
		in_flight[order[head]] = 0;
		head = (head + 1) & order_mask;
	}
	vq->order_head = head;
	vq->order_count -= batch;
	vq->in_flight -= batch;
	return 0;
}

/*
 * Records @n used entries for the next flush, without IN_ORDER: each one buffer, retired now.
 * The queue's fields are held in locals (to the compiler, a store to the pending entries may
 * change them). The first chain not in flight (a duplicate in the burst included) breaks the
 * queue; those before it stay pushed.
 */
static int push_run(struct vt_vq_dev *vq, const struct vt_vq_chain *chains, const uint32_t *written,
		    unsigned int n)
{
	uint16_t *in_flight = vq->in_flight_ndesc;
	struct vq_used_pending *pending = vq->pending + vq->npending;
	const unsigned int num = vq->num;
	unsigned int i;

	for (i = 0; i < n; i++) {
		uint16_t id = chains[i].id;
		if (id >= num || in_flight[id] == 0)
			break;
		pending[i] =
		    (struct vq_used_pending){ id, in_flight[id], written ? written[i] : 0, 1 };
		in_flight[id] = 0;
	}
	vq->npending += i;
	vq->in_flight -= i;
	if (i < n)
		return vq_dev_break(vq, VT_VQ_ERR_NOT_IN_FLIGHT, "id %u", chains[i].id);
	return 0;
}

/* IN_ORDER: one buffer, which must be the oldest in flight. */
static int push_one_in_order(struct vt_vq_dev *vq, const struct vt_vq_chain *chain,
			     uint32_t written)
{
	if (chain->id >= vq->num || vq->in_flight_ndesc[chain->id] == 0)
		return vq_dev_break(vq, VT_VQ_ERR_NOT_IN_FLIGHT, "id %u", chain->id);
	/* In order means exactly that: the oldest buffer first. */
	if (vq->order_count == 0 || vq->order[vq->order_head] != chain->id)
		return vq_dev_break(vq, VT_VQ_ERR_NOT_IN_FLIGHT,
				    "IN_ORDER: id %u returned before older buffers", chain->id);
	return vq_dev_push_in_order(vq, chain->id, vq->in_flight_ndesc[chain->id], written, 1);
}

int vt_vq_dev_push(struct vt_vq_dev *vq, const struct vt_vq_chain *chain, uint32_t written)
{
	return vt_vq_dev_push_burst(vq, chain, &written, 1);
}

int vt_vq_dev_push_burst(struct vt_vq_dev *vq, const struct vt_vq_chain *chains,
			 const uint32_t *written, unsigned int n)
{
	if (vq->broken)
		return -EPROTO;
	if (!vq->in_order)
		return push_run(vq, chains, written, n);
	for (unsigned int i = 0; i < n; i++) {
		int ret = push_one_in_order(vq, &chains[i], written ? written[i] : 0);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int vt_vq_dev_push_in_order_batch(struct vt_vq_dev *vq, const struct vt_vq_chain *last,
				  uint32_t written)
{
	if (vq->broken)
		return -EPROTO;
	if (!vq->in_order)
		return -EINVAL;
	if (last->id >= vq->num || vq->in_flight_ndesc[last->id] == 0)
		return vq_dev_break(vq, VT_VQ_ERR_NOT_IN_FLIGHT, "id %u", last->id);
	const uint16_t last_id = last->id, *order = vq->order, *in_flight = vq->in_flight_ndesc;
	const unsigned int order_mask = vq->order_mask, count = vq->order_count;
	unsigned int batch = 0, ndesc = 0, pos = vq->order_head;
	for (;;) {
		if (batch == count)
			return vq_dev_break(vq, VT_VQ_ERR_NOT_IN_FLIGHT, "id %u not in order",
					    last_id);
		uint16_t id = order[pos];
		pos = (pos + 1) & order_mask;
		ndesc += in_flight[id];
		batch++;
		if (id == last_id)
			break;
	}
	return vq_dev_push_in_order(vq, last_id, (uint16_t)ndesc, written, batch);
}

bool vt_vq_dev_flush(struct vt_vq_dev *vq)
{
	if (vq->broken || vq->npending == 0)
		return false;
	/*
	 * The used ring may have been invalidated or moved since the pushes (IOTLB): resolve it
	 * now. On a miss the entries wait for the next flush, after the driver mapped it again.
	 */
	if (vq_dev_ensure_rings(vq) < 0)
		return false;
	if (vq->packed)
		vq_packed_dev_write_used(vq);
	else
		vq_split_dev_write_used(vq);
	if (vq_inflight_on(vq))
		vq_inflight_before_publish(vq);
	bool notify = vq->packed ? vq_packed_dev_flush(vq) : vq_split_dev_flush(vq);
	if (vq_inflight_on(vq))
		vq_inflight_after_publish(vq);
	vq->npending = 0;
	return notify;
}

void vt_vq_dev_disable_notify(struct vt_vq_dev *vq)
{
	vq->notify_enabled = false;
	if (vq->broken || vq_dev_ensure_rings(vq) < 0)
		return;
	if (vq->packed)
		vq_packed_dev_disable_notify(vq);
	else
		vq_split_dev_disable_notify(vq);
}

bool vt_vq_dev_enable_notify(struct vt_vq_dev *vq)
{
	vq->notify_enabled = true;
	if (vq->broken)
		return false;
	/* A miss resolving the rings: report "more to do" so the caller pops and sees it. */
	if (vq_dev_ensure_rings(vq) < 0)
		return true;
	return vq->packed ? vq_packed_dev_enable_notify(vq) : vq_split_dev_enable_notify(vq);
}

bool vt_vq_dev_is_broken(const struct vt_vq_dev *vq)
{
	return vq->broken;
}

enum vt_vq_error vt_vq_dev_error(const struct vt_vq_dev *vq)
{
	return vq->error;
}

struct vt_as_fault vt_vq_dev_fault(const struct vt_vq_dev *vq)
{
	return vq->fault;
}

uint16_t vt_vq_dev_next_avail(const struct vt_vq_dev *vq)
{
	if (vq->packed)
		return (uint16_t)(vq->next_avail | (vq->avail_wrap << PVIRTQ_EVENT_WRAP_SHIFT));
	return vq->next_avail;
}

unsigned int vt_vq_dev_in_flight(const struct vt_vq_dev *vq)
{
	return vq->in_flight;
}
