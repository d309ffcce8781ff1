/* SPDX-License-Identifier: MIT */
/*
 * Private state of both virtqueue halves, shared by the format-specific files (vq_split_*.c,
 * vq_packed_*.c). The format and every negotiated option are decided once at creation and cached
 * here, so hot paths branch on a field, never on a feature lookup.
 */
#ifndef VIRTUE_VQ_IMPL_H
#define VIRTUE_VQ_IMPL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/platform.h>
#include <virtue/spec/vhost_user.h>
#include <virtue/spec/virtio_ring.h>
#include <virtue/virtqueue.h>

#include "mem/dma_impl.h"
#include "util/prefetch_write.h"

#define VQ_CACHELINE 64
/* Split device half: available-ring entries read ahead per batch (a power of two). */
#define VQ_AVAIL_CACHE 64

/*
 * Zeroed per-queue state of @n elements of @size bytes on cache lines of its own: one half's
 * arrays never share a line with the other half's, which another CPU may be writing.
 */
static inline void *vq_calloc_lines(size_t n, size_t size)
{
	size_t bytes = (n * size + VQ_CACHELINE - 1) & ~(size_t)(VQ_CACHELINE - 1);
	void *p = aligned_alloc(VQ_CACHELINE, bytes);
	if (p)
		memset(p, 0, bytes);
	return p;
}

/*
 * @i, below twice @num, brought into [0, num): a position in a ring of @num entries one lap on at
 * most, without the division a modulo costs (packed sizes need not be powers of two).
 */
static inline unsigned int vq_wrap(unsigned int num, unsigned int i)
{
	return i < num ? i : i - num;
}

/*
 * The IN_ORDER id ring of a queue of @num entries (either half): @num ids at most, in a ring of
 * the power of two at or above it, so that a position wraps with a mask (*@mask) rather than the
 * compare and subtract of vq_wrap, on paths that move it once per buffer. NULL without memory.
 */
static inline uint16_t *vq_order_ring(unsigned int num, unsigned int *mask)
{
	unsigned int size = 1;
	while (size < num)
		size <<= 1;
	*mask = size - 1;
	return vq_calloc_lines(size, sizeof(uint16_t));
}

/* ------------------------------------------------------------------ packed positions */

/* Descriptors from (@from, @from_wrap) up to (@to, @to_wrap), @to being at most one ring ahead. */
static inline unsigned int vq_packed_distance(unsigned int num, uint16_t from, bool from_wrap,
					      uint16_t to, bool to_wrap)
{
	return (unsigned int)to + (from_wrap != to_wrap ? num : 0) - from;
}

/* Moves a ring position @count descriptors on, flipping its wrap counter at each ring end. */
static inline void vq_packed_advance(unsigned int num, uint16_t *idx, bool *wrap,
				     unsigned int count)
{
	unsigned int i = *idx + count;
	while (i >= num) {
		i -= num;
		*wrap = !*wrap;
	}
	*idx = (uint16_t)i;
}

/*
 * Starts the loads of the ring lines holding the @count descriptors from @slot, the first's
 * excepted (it was just read). For a run that has seen the first descriptor of a batch its peer
 * published: the peer stores that one's flags last, so the rest is written by then, and one line
 * waited for after another (four descriptors each) would make the run as slow as the line
 * transfers in a row. A prefetch never faults, and only ring lines are named.
 */
static inline void vq_packed_prefetch_lines(const struct pvirtq_desc *ring, unsigned int num,
					    uint16_t slot, unsigned int count)
{
	const unsigned int per_line = VQ_CACHELINE / sizeof(*ring);
	for (unsigned int k = per_line - slot % per_line; k < count; k += per_line) {
		__builtin_prefetch(&ring[vq_wrap(num, slot + k)]);
	}
}

/*
 * Asks for the ring lines of the @count descriptors from @slot in a state this CPU can write them
 * in (prefetch_line_for_write), for an add run about to write them: the peer read them last, and
 * written one after another they would wait for one line transfer after another.
 */
static inline void vq_prefetch_descs_for_write(void *ring, size_t desc_size, unsigned int num,
					       unsigned int slot, unsigned int count)
{
	const unsigned int per_line = VQ_CACHELINE / desc_size;
	char *base = ring;

	prefetch_line_for_write(base + (size_t)slot * desc_size);
	for (unsigned int k = per_line - slot % per_line; k < count; k += per_line)
		prefetch_line_for_write(base + (size_t)vq_wrap(num, slot + k) * desc_size);
}

/*
 * vring_need_event for the packed ring (event suppression in DESC mode, 2.8.10): true when the
 * descriptor @off_wrap names is one of the @count that end just before (@new_idx, @new_wrap). As
 * Linux's virtqueue_kick_prepare_packed does, an offset in the other lap is moved one ring back so
 * that the 16-bit arithmetic of vring_need_event holds.
 */
static inline bool vq_packed_need_event(unsigned int num, uint16_t off_wrap, uint16_t new_idx,
					bool new_wrap, unsigned int count)
{
	uint16_t event = off_wrap & PVIRTQ_EVENT_OFF_MASK;
	if ((bool)(off_wrap >> PVIRTQ_EVENT_WRAP_SHIFT) != new_wrap)
		event = (uint16_t)(event - num);
	return vring_need_event(event, new_idx, (uint16_t)(new_idx - count));
}

/* ------------------------------------------------------------------ device half */

struct vt_vq_dev {
	/* Read-mostly: configuration and resolved ring pointers. */
	bool packed;
	bool event_idx;
	bool indirect;
	bool in_order;
	enum vt_barrier_kind barriers;
	unsigned int num;
	unsigned int max_chain;
	unsigned int max_indirect; /* descriptors an indirect table may hold */
	bool miss_retryable;	   /* the address space's misses can be filled later */
	struct vt_as as;
	uint64_t desc_addr, driver_addr, device_addr;
	const char *name;
	const struct vt_log *log;

	/* Ring areas, resolved through the address space under ring_generation. */
	bool rings_resolved;
	uint64_t ring_generation;
	uint64_t area_len[3]; /* bytes of the descriptor, driver and device areas */
	/*
	 * The extent the last descriptor was found in, valid while ring_generation is (reset
	 * whenever it moves): descriptors inside it translate without a call.
	 */
	bool extent_valid;
	struct vt_as_extent extent;
	union {
		struct {
			struct virtq_desc *desc;
			struct virtq_avail *avail;
			struct virtq_used *used;
		} split;
		struct {
			struct pvirtq_desc *desc;
			struct pvirtq_event_suppress *driver; /* written by the driver */
			struct pvirtq_event_suppress *device; /* written by us */
		} packed;
	} ring;

	/* Consumer state, private to the device thread: its own cache line. */
	_Alignas(VQ_CACHELINE) uint16_t next_avail; /* split: avail index; packed: slot */
	bool avail_wrap;			    /* packed: wrap counter of next_avail */
	uint16_t shadow_avail_idx;		    /* split: last avail->idx read */
	uint16_t avail_cached;	 /* split: heads read ahead into avail_cache, from next_avail */
	uint16_t used_idx;	 /* split: next used index; packed: next used slot */
	bool used_wrap;		 /* packed */
	uint16_t published_used; /* split: used->idx last published (event-idx "old") */
	bool published_wrap;	 /* packed: wrap of the slot last published */
	uint16_t pending_used;	 /* packed: descriptors written since the last flush */
	uint16_t pending_first;	 /* packed: slot of the first of them */
	bool pending_first_wrap;
	uint16_t pending_first_flags; /* packed: its flags, stored last (publication) */
	uint16_t device_event_flags;  /* packed: flags last written to the device area */
	unsigned int in_flight;
	bool notify_enabled;
	/*
	 * Split: the heads of entries next_avail onwards, read once each, a batch at a time, so
	 * that the available ring's lines (which the driver keeps writing) are read in one go and
	 * the descriptors they name are fetched together. Indexed by avail index modulo the size.
	 */
	uint16_t avail_cache[VQ_AVAIL_CACHE];

	/*
	 * Used entries pushed and not yet written: they go to ring memory at flush time, after
	 * the ring is resolved under the current generation, so a used ring the IOTLB lost or
	 * moved since the push is never written at its old host address.
	 */
	struct vq_used_pending {
		uint16_t id;
		uint16_t ndesc;
		uint32_t written;
		unsigned int batch;
	} * pending;
	unsigned int npending;

	/* Per buffer id: the descriptors it occupies while in flight, 0 when not in flight. */
	uint16_t *in_flight_ndesc;
	/* IN_ORDER: ids in the order they were popped, to complete batches (vq_order_ring). */
	uint16_t *order;
	unsigned int order_mask, order_head, order_count;

	/* vhost-user inflight tracking (vq_inflight.c): one of the two regions, or neither. */
	struct vhost_user_inflight_split *inflight;
	struct vhost_user_inflight_packed *inflight_packed;
	uint64_t inflight_counter;
	bool inflight_recover; /* a region from an earlier back-end: recover at first resolve */
	uint16_t *resubmit;    /* split: heads, packed: head entries, oldest first */
	unsigned int resubmit_count, resubmit_pos;
	uint16_t *inflight_entry; /* packed: buffer id -> its head entry */
	struct vq_inflight_copy {
		uint64_t addr;
		uint32_t len;
		uint16_t id, flags;
	} * inflight_scratch; /* packed: the descriptors of the chain being taken */

	bool broken;
	enum vt_vq_error error;
	struct vt_as_fault fault;
};

/*
 * Whether the ring pointers resolved at the last pop still hold: a burst checks it before each
 * chain, as single pops do, so an IOTLB change in the middle of one ends it.
 */
static inline bool vq_dev_rings_current(const struct vt_vq_dev *vq)
{
	return vq->rings_resolved && vt_as_generation(&vq->as) == vq->ring_generation;
}

/* vq_dev.c: an IOTLB change seen in a burst left the ring areas alone; see vq_dev_rings_hold. */
bool vq_dev_rings_revalidate(struct vt_vq_dev *vq);

/*
 * Whether a burst may go on: the ring pointers are current, or the IOTLB change that moved the
 * generation touched none of the ring areas (a strict DMA driver invalidates the buffers it
 * collected while the device pops the next ones: ending the burst there would cut every burst
 * short).
 */
static inline bool vq_dev_rings_hold(struct vt_vq_dev *vq)
{
	return vq_dev_rings_current(vq) || vq_dev_rings_revalidate(vq);
}

/* vq_inflight.c */
int vq_inflight_init(struct vt_vq_dev *vq, void *region);
void vq_inflight_recover(struct vt_vq_dev *vq);
static inline bool vq_inflight_on(const struct vt_vq_dev *vq)
{
	return vq->inflight || vq->inflight_packed;
}
static inline void vq_inflight_taken(struct vt_vq_dev *vq, uint16_t head)
{
	vq->inflight->desc[head].counter = vq->inflight_counter++;
	vq->inflight->desc[head].inflight = 1;
}
/* Packed: records the @n descriptors in inflight_scratch as buffer @id, taken. */
void vq_inflight_packed_taken(struct vt_vq_dev *vq, uint16_t id, unsigned int n);
/* Packed: copies the descriptor recorded in entry *@entry and moves *@entry to the next one. */
int vq_inflight_packed_next(struct vt_vq_dev *vq, uint16_t *entry, struct vq_inflight_copy *d);
/* Around the publication of pushed entries: before (entries written, index not yet), after. */
void vq_inflight_before_publish(struct vt_vq_dev *vq);
void vq_inflight_after_publish(struct vt_vq_dev *vq);

/* The one log line of a broken queue (either half). */
void vq_log_broken(const struct vt_log *log, const char *name, enum vt_vq_error error,
		   const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

/* Breaks the queue with @error; the first violation is logged with @detail. Returns -EPROTO. */
int vq_dev_break(struct vt_vq_dev *vq, enum vt_vq_error error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Builds a chain's iovecs one descriptor at a time, applying the rules both formats share
 * (readable before writable, 2^32 total, translation with the right permission).
 */
struct vq_chain_builder {
	struct vt_vq_dev *vq;
	struct vt_vq_chain *chain;
	struct iovec *iov;
	unsigned int iov_max;
	unsigned int n;
	uint64_t total;
	bool seen_writable;
};

static inline void vq_chain_begin(struct vq_chain_builder *b, struct vt_vq_dev *vq,
				  struct vt_vq_chain *chain, struct iovec *iov,
				  unsigned int iov_max)
{
	*b = (struct vq_chain_builder){ .vq = vq, .chain = chain, .iov = iov, .iov_max = iov_max };
	chain->nreadable = chain->nwritable = 0;
	chain->readable_bytes = chain->writable_bytes = 0;
}

/* [addr, addr + len), len > 0, lies in the cached extent, which allows @access. */
static inline bool vq_extent_covers(const struct vt_vq_dev *vq, uint64_t addr, uint32_t len,
				    unsigned int access)
{
	const struct vt_as_extent *e = &vq->extent;
	return vq->extent_valid && len && addr - e->addr <= e->last - e->addr &&
	       len - 1 <= e->last - addr && (e->perm & access) == access;
}

/* The host address of @addr, which the cached extent covers. */
static inline void *vq_extent_hva(const struct vt_vq_dev *vq, uint64_t addr)
{
	return (void *)(uintptr_t)(vq->extent.hva + (addr - vq->extent.addr));
}

/*
 * The cached extent as a burst's run holds it, in locals: a descriptor lies in it when it is
 * @valid, the descriptor's offset from @base is at most @span, its last byte's too, and its flags
 * have none of @deny (WRITE, when the extent is read-only).
 */
struct vq_run_extent {
	uint64_t base, span, hva;
	uint16_t deny;
	bool valid;
};

/*
 * Loads the cached extent into @r, valid when one is cached that the device may read (@deny
 * cannot express a write-only one). A run goes on without one: it finds a page of the page table
 * (vq_run_page) or caches the extent its descriptor needs (vq_run_extent_find).
 */
static inline void vq_run_extent_load(const struct vt_vq_dev *vq, struct vq_run_extent *r)
{
	const struct vt_as_extent *e = &vq->extent;
	*r = (struct vq_run_extent){ e->addr, e->last - e->addr, e->hva,
				     e->perm & VT_ACCESS_WRITE ? 0 : VIRTQ_DESC_F_WRITE,
				     vq->extent_valid && (e->perm & VT_ACCESS_READ) };
}

/* *@hva for descriptor [@addr, @addr + @len), len > 0, with @flags, when @r allows it. */
static inline bool vq_run_extent_has(const struct vq_run_extent *r, uint64_t addr, uint32_t len,
				     uint16_t flags, void **hva)
{
	uint64_t offset = addr - r->base;
	if (!r->valid || offset > r->span || len - 1 > r->span - offset || (flags & r->deny))
		return false;
	*hva = (void *)(uintptr_t)(r->hva + offset);
	return true;
}

/*
 * Caches the extent holding @addr when the address space has one under the rings' generation,
 * and loads it into @r (vq_dev.c: out of line, as only IOTLB modes meet a new extent often).
 */
bool vq_run_extent_find(struct vt_vq_dev *vq, uint64_t addr, struct vq_run_extent *r);

/*
 * *@hva for descriptor [@addr, @addr + @len), len > 0, with @flags, when one entry of the address
 * space's page table maps all of it as the flags need: a run's buffers under an IOMMU are a page
 * each, which this finds in a few loads where the extent cache would miss every time. The run
 * checked the rings' generation (acquire) before this descriptor, so the entry is as good as an
 * extent cached under it.
 */
static inline bool vq_run_page(const struct vt_vq_dev *vq, uint64_t addr, uint32_t len,
			       uint16_t flags, void **hva)
{
	uint64_t pte = vt_as_page_entry(&vq->as, addr);
	uint64_t need = flags & VIRTQ_DESC_F_WRITE ? VT_ACCESS_WRITE : VT_ACCESS_READ;
	uint64_t offset = addr & (VT_AS_PAGE_SIZE - 1);

	if (!(pte & need) || len - 1 > VT_AS_PAGE_SIZE - 1 - offset)
		return false;
	*hva = (void *)(uintptr_t)((pte & ~(VT_AS_PAGE_SIZE - 1)) + offset);
	return true;
}

/*
 * Where a run's descriptor is on the host: in the cached extent, in a page of the address space's
 * page table, or in the extent found for it.
 */
static inline bool vq_run_translate(struct vt_vq_dev *vq, struct vq_run_extent *r, uint64_t addr,
				    uint32_t len, uint16_t flags, void **hva)
{
	return vq_run_extent_has(r, addr, len, flags, hva) ||
	       vq_run_page(vq, addr, len, flags, hva) ||
	       (vq_run_extent_find(vq, addr, r) && vq_run_extent_has(r, addr, len, flags, hva));
}

/*
 * A chain of one descriptor (no NEXT, no INDIRECT) inside the cached extent, as nearly every
 * network buffer is: fills iov[0] and the chain's counts without the builder. False when the
 * general path must take it; that path checks everything, this descriptor included. No rule
 * can fail here: one descriptor has no order to break, and its 32-bit length no total to pass.
 */
static inline bool vq_chain_single(struct vt_vq_dev *vq, struct vt_vq_chain *chain,
				   struct iovec *iov, unsigned int iov_max, uint64_t addr,
				   uint32_t len, bool writable)
{
	if (!iov_max ||
	    !vq_extent_covers(vq, addr, len, writable ? VT_ACCESS_WRITE : VT_ACCESS_READ))
		return false;
	iov[0].iov_base = vq_extent_hva(vq, addr);
	iov[0].iov_len = len;
	chain->nreadable = !writable;
	chain->nwritable = writable;
	chain->readable_bytes = writable ? 0 : len;
	chain->writable_bytes = writable ? len : 0;
	return true;
}

/* Every rule checked, any translation: vq_chain_add's path for all it does not take inline. */
int vq_chain_add_slow(struct vq_chain_builder *b, uint64_t addr, uint32_t len, bool writable);

/*
 * Adds one descriptor: 0, or the pop return code (-EFAULT, -ENOBUFS, -EPROTO after breaking the
 * queue). Inline, the case of nearly every descriptor: in the cached extent, room for its iovec,
 * no rule near its limit. Anything else, violations included, goes to vq_chain_add_slow, which
 * checks every rule again from the start.
 */
static inline int vq_chain_add(struct vq_chain_builder *b, uint64_t addr, uint32_t len,
			       bool writable)
{
	struct vt_vq_dev *vq = b->vq;
	uint64_t total = b->total + len;

	if (__builtin_expect(
		b->n < b->iov_max && (writable || !b->seen_writable) && total <= UINT32_MAX &&
		    vq_extent_covers(vq, addr, len, writable ? VT_ACCESS_WRITE : VT_ACCESS_READ),
		1)) {
		b->iov[b->n].iov_base = vq_extent_hva(vq, addr);
		b->iov[b->n].iov_len = len;
		b->n++;
		b->total = total;
		b->seen_writable |= writable;
		if (writable) {
			b->chain->nwritable++;
			b->chain->writable_bytes += len;
		} else {
			b->chain->nreadable++;
			b->chain->readable_bytes += len;
		}
		return 0;
	}
	return vq_chain_add_slow(b, addr, len, writable);
}

/* Maps a ring area (or an indirect table) contiguously; pop-style return codes. */
int vq_dev_map_area(struct vt_vq_dev *vq, uint64_t addr, uint64_t len, unsigned int access,
		    unsigned int align, void **hva, const char *what);

/*
 * An indirect table (both formats use 16-byte entries). Mapped in one piece when the host has it
 * contiguous; otherwise (a table across two memory regions or IOTLB entries, which is legal) each
 * entry is read through the address space.
 */
struct vq_table {
	const uint8_t *hva; /* NULL: read entry by entry */
	uint64_t addr;
	unsigned int count;
};

/* Pop-style return codes; an unreachable table breaks the queue with VT_VQ_ERR_UNMAPPED. */
int vq_dev_table_open(struct vt_vq_dev *vq, uint64_t addr, uint32_t len, struct vq_table *t);
/* Entry @i as two little-endian words, each read once: 0 or a pop-style code. */
int vq_dev_table_read(struct vt_vq_dev *vq, const struct vq_table *t, unsigned int i,
		      uint64_t word[2]);

/* IN_ORDER bookkeeping shared by both formats: @id taken after every id recorded before. */
static inline void vq_dev_order_push(struct vt_vq_dev *vq, uint16_t id)
{
	vq->order[(vq->order_head + vq->order_count) & vq->order_mask] = id;
	vq->order_count++;
}

int vq_split_dev_init(struct vt_vq_dev *vq);
int vq_split_dev_resolve(struct vt_vq_dev *vq);
/* Pops up to @max chains while the rings stay current; the first error ends it in *@err. */
unsigned int vq_split_dev_pop_burst(struct vt_vq_dev *vq, struct vt_vq_chain *chains,
				    struct iovec *iov, unsigned int iov_per_chain, unsigned int max,
				    int *err);
/* Writes the used entries pushed since the last flush (vq->pending) to ring memory. */
void vq_split_dev_write_used(struct vt_vq_dev *vq);
bool vq_split_dev_flush(struct vt_vq_dev *vq);
void vq_split_dev_disable_notify(struct vt_vq_dev *vq);
bool vq_split_dev_enable_notify(struct vt_vq_dev *vq);

int vq_packed_dev_init(struct vt_vq_dev *vq);
int vq_packed_dev_resolve(struct vt_vq_dev *vq);
/* Pops up to @max chains while the rings stay current; the first error ends it in *@err. */
unsigned int vq_packed_dev_pop_burst(struct vt_vq_dev *vq, struct vt_vq_chain *chains,
				     struct iovec *iov, unsigned int iov_per_chain,
				     unsigned int max, int *err);
/* Writes the used entries pushed since the last flush (vq->pending) to ring memory. */
void vq_packed_dev_write_used(struct vt_vq_dev *vq);
bool vq_packed_dev_flush(struct vt_vq_dev *vq);
void vq_packed_dev_disable_notify(struct vt_vq_dev *vq);
bool vq_packed_dev_enable_notify(struct vt_vq_dev *vq);

/* ------------------------------------------------------------------ driver half */

/* The driver's own copy of a descriptor it posted: never re-read from ring memory. */
struct vq_desc_shadow {
	uint64_t bus; /* mapped address (0 for the indirect-table descriptor) */
	uint32_t len;
	uint16_t flags;
	uint16_t next; /* chain link / free list */
};

/* Per buffer (split: per head index; packed: per buffer id). */
struct vq_buffer_state {
	void *token;	/* NULL: not posted */
	uint64_t seq;	/* order of posting: given to the device once below kicked_seq */
	uint16_t ndesc; /* ring descriptors it occupies */
	uint16_t nsegs; /* segments mapped (== ndesc unless indirect) */
	uint32_t writable_bytes;
	bool indirect;
	uint16_t last; /* its last descriptor (packed: last shadow entry, not a ring slot) */
};

/*
 * The record of a buffer of one segment, one descriptor (@id: that descriptor), as an add run
 * posts it: field by field, as a whole-record store also zeroes the padding, which is more
 * stores in the loop that posts every buffer.
 */
static inline void vq_drv_record_one(struct vq_buffer_state *buf, void *token, uint64_t seq,
				     uint32_t writable_bytes, uint16_t id)
{
	buf->token = token;
	buf->seq = seq;
	buf->ndesc = 1;
	buf->nsegs = 1;
	buf->writable_bytes = writable_bytes;
	buf->indirect = false;
	buf->last = id;
}

struct vt_vq_drv {
	bool packed;
	bool event_idx;
	bool indirect;
	bool in_order;
	enum vt_barrier_kind barriers;
	unsigned int num;
	unsigned int indirect_max;
	struct vt_dma *dma;
	bool need_unmap;	 /* vt_dma_need_unmap, asked once */
	bool prefetch_for_write; /* cpu_prefetches_for_write, asked once */
	const char *name;
	const struct vt_log *log;

	/* Ring memory (coherent) and its bus addresses. */
	void *desc_mem, *driver_mem, *device_mem;
	size_t desc_size, driver_size, device_size;
	uint64_t desc_bus, driver_bus, device_bus;
	/* Indirect tables: one of indirect_max entries per buffer id / head. */
	void *indirect_mem;
	size_t indirect_size;
	uint64_t indirect_bus;

	/*
	 * Per descriptor: split: per table entry; packed: records taken from a free list, the
	 * buffer id being its first record's index. Not per packed slot: a slot is reused as soon
	 * as the device has moved past it, which can be before an older buffer is used.
	 */
	struct vq_desc_shadow *shadow;
	struct vq_desc_shadow *indirect_shadow; /* per indirect entry: num * indirect_max */
	struct vq_buffer_state *buffers;	/* per id */

	/* Producer state. */
	_Alignas(VQ_CACHELINE) uint16_t free_head; /* split: free list / packed: free id list */
	unsigned int num_free;			   /* free ring descriptors */
	uint16_t avail_idx_shadow; /* split: avail->idx we will publish; packed: next slot */
	bool avail_wrap;	   /* packed */
	uint16_t kicked_avail;	   /* split: avail idx at the last kick_prepare (event "old") */
	bool kicked_wrap;	   /* packed */
	unsigned int added_since_kick;
	uint64_t add_seq;	/* posting counter */
	uint64_t kicked_seq;	/* buffers with seq below it have been made available */
	uint16_t pending_first; /* packed: slot whose flags publish the batch */
	uint16_t pending_first_flags;
	bool pending;		/* packed: a batch waits for publication */
	uint16_t in_order_next; /* split IN_ORDER: next descriptor to hand out */

	/* Consumer state. */
	_Alignas(VQ_CACHELINE) uint16_t last_used; /* split: used index; packed: slot */
	uint16_t shadow_used_idx;		   /* split: used->idx last read, checked */
	bool used_wrap;				   /* packed */
	unsigned int outstanding;		   /* buffers posted and not yet collected */
	bool cb_enabled;
	uint16_t driver_event_flags; /* packed: flags last written to the driver area */
	/* IN_ORDER: posted ids in order (vq_order_ring), and the batch being handed out. */
	uint16_t *order;
	unsigned int order_mask, order_head, order_count;
	uint16_t batch_last_id; /* last id of the current in-order batch */
	uint32_t batch_last_len;
	bool in_batch;

	struct vt_vq_drv_stats stats;
	/* Maps made inline (vq_drv_map) not yet added to the DMA statistics: once per kick. */
	uint64_t maps_uncounted;
	bool broken;
	enum vt_vq_error error;
};

/*
 * Maps one segment for the device: inline through the DMA object's linear windows when it has
 * them (direct, premapped), else through vt_dma_map. Its statistic is added at the next kick
 * (vq_drv_count_maps), so the hot path does no atomic read-modify-write per buffer.
 */
static inline int vq_drv_map(struct vt_vq_drv *vq, void *ptr, size_t len, enum vt_dma_dir dir,
			     uint64_t *bus)
{
	if (vt_dma_map_linear(vq->dma, ptr, len, bus)) {
		vq->maps_uncounted++;
		return 0;
	}
	return vt_dma_map(vq->dma, ptr, len, dir, bus);
}

/* What vt_vq_drv_add refuses in a segment: a length of 0 or over 32 bits. */
static inline bool vq_drv_seg_len_ok(const struct iovec *sg)
{
	return sg->iov_len - 1 < UINT32_MAX;
}

/* A burst's buffer (one segment) that vt_vq_drv_add would take: a token, a length it allows. */
static inline bool vq_drv_burst_buf_ok(const struct iovec *sg, const void *token)
{
	return token && vq_drv_seg_len_ok(sg);
}

/* The rule for indirect tables: with INDIRECT_DESC, a buffer of 2 to indirect_max segments. */
static inline bool vq_drv_wants_indirect(const struct vt_vq_drv *vq, unsigned int nsegs)
{
	return vq->indirect && nsegs > 1 && nsegs <= vq->indirect_max;
}

/* The records of the indirect table of buffer @id (split: head), one per table entry. */
static inline struct vq_desc_shadow *vq_drv_table_shadow(struct vt_vq_drv *vq, uint16_t id)
{
	return vq->indirect_shadow + (size_t)id * vq->indirect_max;
}

/* Maps one segment into @sh: readable TO_DEVICE, writable FROM_DEVICE. */
static inline int vq_drv_map_one(struct vt_vq_drv *vq, const struct iovec *sg, bool writable,
				 struct vq_desc_shadow *sh)
{
	int ret = vq_drv_map(vq, sg->iov_base, sg->iov_len,
			     writable ? VT_DMA_FROM_DEVICE : VT_DMA_TO_DEVICE, &sh->bus);
	if (ret < 0)
		return ret;
	sh->len = (uint32_t)sg->iov_len;
	sh->flags = writable ? VIRTQ_DESC_F_WRITE : 0;
	return 0;
}

/* Records buffer @id as posted: @ndesc ring descriptors for @nsegs segments ending at @last. */
static inline void vq_drv_record(struct vt_vq_drv *vq, uint16_t id, void *token, unsigned int ndesc,
				 const struct iovec *sg, unsigned int nreadable, unsigned int nsegs,
				 bool indirect, uint16_t last)
{
	struct vq_buffer_state *buf = &vq->buffers[id];
	buf->token = token;
	buf->seq = vq->add_seq++;
	buf->ndesc = (uint16_t)ndesc;
	buf->nsegs = (uint16_t)nsegs;
	buf->indirect = indirect;
	buf->last = last;
	buf->writable_bytes = 0;
	for (unsigned int i = nreadable; i < nsegs; i++)
		buf->writable_bytes += (uint32_t)sg[i].iov_len;
}

static inline void vq_drv_count_maps(struct vt_vq_drv *vq)
{
	if (vq->maps_uncounted) {
		vt_dma_count(&vq->dma->stats.maps, vq->maps_uncounted);
		vq->maps_uncounted = 0;
	}
}

int vq_drv_break(struct vt_vq_drv *vq, enum vt_vq_error error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Maps @sg into @shadow[0..count) (readable TO_DEVICE, writable FROM_DEVICE); all or nothing. */
int vq_drv_map_segments(struct vt_vq_drv *vq, const struct iovec *sg, unsigned int nreadable,
			unsigned int nwritable, struct vq_desc_shadow *shadow);
void vq_drv_unmap_segments(struct vt_vq_drv *vq, const struct vq_desc_shadow *shadow,
			   unsigned int count);
/* True when @id names a buffer the device was given and has not returned. */
static inline bool vq_drv_id_outstanding(const struct vt_vq_drv *vq, uint32_t id)
{
	return id < vq->num && vq->buffers[id].token && vq->buffers[id].seq < vq->kicked_seq;
}

/*
 * An add run's next buffer (@sg, @token) for a DMA object with linear windows (direct,
 * premapped): checked as vt_vq_drv_add would check it, and mapped through @win, the last window
 * the run used (in its locals: the DMA object's fields would be loaded again after every ring
 * store; empty at first), or through the DMA object's linear window that holds it, which then
 * becomes @win. Such a run holds no call, so its fields stay in registers. 0, or 1 when the run
 * must end before the buffer (the general path then takes or refuses it).
 */
static inline __attribute__((always_inline)) int vq_drv_run_map_linear(struct vt_dma *dma,
								       struct vt_dma_linear *win,
								       const struct iovec *sg,
								       void *token, uint64_t *bus)
{
	if (!vq_drv_burst_buf_ok(sg, token))
		return 1;
	uint64_t off = (uint64_t)(uintptr_t)sg->iov_base - win->hva;
	if (off < win->size && sg->iov_len <= win->size - off) {
		*bus = win->bus + off;
		return 0;
	}
	return vt_dma_map_linear_window(dma, sg->iov_base, sg->iov_len, bus, win) ? 0 : 1;
}

/* What an add run of a DMA object that maps per buffer maps at once (bus addresses on the stack).
 */
#define VQ_DRV_MAP_BURST 32u

/*
 * The start of an add run of a DMA object without linear windows (the modes that map per
 * buffer): the first of @n buffers that vt_vq_drv_add would take (vq_drv_burst_buf_ok), at most
 * VQ_DRV_MAP_BURST, mapped together (device-writable when @writable) into @bus by
 * vt_dma_map_burst_uncounted, which publishes their translations at once. Returns how many were
 * mapped, the run's length; when a map failed, its error (logged there) is in *@err and ends the
 * burst.
 */
static inline unsigned int vq_drv_run_map_burst(struct vt_dma *dma, const struct iovec *bufs,
						void *const *tokens, unsigned int n, bool writable,
						uint64_t *bus, int *err)
{
	unsigned int ok = 0;

	if (n > VQ_DRV_MAP_BURST)
		n = VQ_DRV_MAP_BURST;
	while (ok < n && vq_drv_burst_buf_ok(&bufs[ok], tokens[ok]))
		ok++;
	if (ok == 0)
		return 0;
	return vt_dma_map_burst_uncounted(
	    dma, bufs, ok, writable ? VT_DMA_FROM_DEVICE : VT_DMA_TO_DEVICE, bus, err);
}

/*
 * Unmaps the segment the driver's record @sh holds, in the direction its flags say (the modes
 * that map per buffer): 1 when it was unmapped, for the caller to add to the statistics once for
 * all it unmaps (vq_drv_unmap_segments, a get run).
 */
static inline unsigned int vq_drv_unmap_one(struct vt_dma *dma, const struct vq_desc_shadow *sh)
{
	enum vt_dma_dir dir =
	    (sh->flags & VIRTQ_DESC_F_WRITE) ? VT_DMA_FROM_DEVICE : VT_DMA_TO_DEVICE;
	return vt_dma_unmap_uncounted(dma, sh->bus, sh->len, dir) == 0;
}

/*
 * A driver burst of one-segment buffers, per format: runs of the common case (@run, the format's
 * add_run), and @one (its add_one_segment) for the buffer that ends a run, refused with -EINVAL
 * when vt_vq_drv_add would refuse it. Inline, so that both are called directly. Returns how many
 * were posted, or the first buffer's error.
 */
static inline __attribute__((always_inline)) int
vq_drv_add_burst_with(struct vt_vq_drv *vq, const struct iovec *bufs, unsigned int n, bool writable,
		      void *const *tokens,
		      unsigned int (*run)(struct vt_vq_drv *, const struct iovec *, unsigned int,
					  bool, void *const *, int *),
		      int (*one)(struct vt_vq_drv *, const struct iovec *, bool, void *))
{
	unsigned int done = 0;

	if (n > vq->num_free)
		n = vq->num_free;
	while (done < n) {
		int err = 0;
		done += run(vq, &bufs[done], n - done, writable, &tokens[done], &err);
		if (err < 0)
			return done ? (int)done : err;
		if (done == n)
			break;
		int ret = vq_drv_burst_buf_ok(&bufs[done], tokens[done])
			      ? one(vq, &bufs[done], writable, tokens[done])
			      : -EINVAL;
		if (ret < 0)
			return done ? (int)done : ret;
		done++;
	}
	return (int)done;
}

/* vq_drv_check_len's path for a length over the limit: counts and logs it, returns the limit. */
uint32_t vq_drv_clamp_len(struct vt_vq_drv *vq, uint16_t id, uint32_t len);

/* Clamps the used length to the writable bytes posted, counting the violation. */
static inline uint32_t vq_drv_check_len(struct vt_vq_drv *vq, uint16_t id, uint32_t len)
{
	if (__builtin_expect(len <= vq->buffers[id].writable_bytes, 1))
		return len;
	return vq_drv_clamp_len(vq, id, len);
}

/* IN_ORDER: @id posted after every id recorded before. */
static inline void vq_drv_order_push(struct vt_vq_drv *vq, uint16_t id)
{
	vq->order[(vq->order_head + vq->order_count) & vq->order_mask] = id;
	vq->order_count++;
}

/*
 * IN_ORDER: up to @max buffers of the batch one used entry completed (from the oldest posted on,
 * up to batch_last_id), handed out in one loop with the queue's fields in locals and detached as
 * the format's detach_buffer does: @free_list, whether freed ids go back on the free list
 * (packed; split IN_ORDER hands descriptors out in ring order), and @unmap, the format's unmap of
 * a buffer, called for the modes that map per buffer. Returns how many.
 */
static inline __attribute__((always_inline)) unsigned int
vq_drv_batch_run(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max,
		 bool free_list, void (*unmap)(struct vt_vq_drv *, uint16_t))
{
	const uint16_t *order = vq->order;
	struct vq_buffer_state *buffers = vq->buffers;
	struct vq_desc_shadow *shadow = vq->shadow;
	const unsigned int order_mask = vq->order_mask;
	const uint16_t last_id = vq->batch_last_id;
	const bool need_unmap = vq->need_unmap;
	unsigned int head = vq->order_head, freed = 0, i;
	uint16_t free_head = vq->free_head;
	bool last = false;

	for (i = 0; i < max && !last; i++) {
		uint16_t id = order[head];
		struct vq_buffer_state *buf = &buffers[id];
		head = (head + 1) & order_mask;
		tokens[i] = buf->token;
		last = id == last_id;
		/* Only the batch's last buffer has a length on the wire; 0 never overstates. */
		lens[i] = last ? vq_drv_check_len(vq, id, vq->batch_last_len) : 0;
		if (need_unmap)
			unmap(vq, id);
		if (free_list) {
			/* Most recently freed first, as detach_buffer does. */
			shadow[buf->last].next = free_head;
			free_head = id;
		}
		freed += buf->ndesc;
		buf->token = NULL;
	}
	vq->order_head = head;
	vq->order_count -= i;
	vq->num_free += freed;
	if (free_list)
		vq->free_head = free_head;
	if (last)
		vq->in_batch = false;
	return i;
}

int vq_split_drv_init(struct vt_vq_drv *vq);
int vq_split_drv_add(struct vt_vq_drv *vq, const struct iovec *sg, unsigned int nreadable,
		     unsigned int nwritable, void *token);
bool vq_split_drv_kick_prepare(struct vt_vq_drv *vq);
int vq_split_drv_add_burst(struct vt_vq_drv *vq, const struct iovec *bufs, unsigned int n,
			   bool writable, void *const *tokens);
int vq_split_drv_get_burst(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max);
void vq_split_drv_disable_cb(struct vt_vq_drv *vq);
bool vq_split_drv_enable_cb(struct vt_vq_drv *vq);
void *vq_split_drv_detach_unused(struct vt_vq_drv *vq);
/* vt_vq_drv_rebase: @ids are the outstanding buffers, oldest first. */
int vq_split_drv_rebase(struct vt_vq_drv *vq, const uint16_t *ids, unsigned int count,
			uint32_t *base);

int vq_packed_drv_init(struct vt_vq_drv *vq);
int vq_packed_drv_add(struct vt_vq_drv *vq, const struct iovec *sg, unsigned int nreadable,
		      unsigned int nwritable, void *token);
bool vq_packed_drv_kick_prepare(struct vt_vq_drv *vq);
int vq_packed_drv_add_burst(struct vt_vq_drv *vq, const struct iovec *bufs, unsigned int n,
			    bool writable, void *const *tokens);
int vq_packed_drv_get_burst(struct vt_vq_drv *vq, void **tokens, uint32_t *lens, unsigned int max);
void vq_packed_drv_disable_cb(struct vt_vq_drv *vq);
bool vq_packed_drv_enable_cb(struct vt_vq_drv *vq);
void *vq_packed_drv_detach_unused(struct vt_vq_drv *vq);
int vq_packed_drv_rebase(struct vt_vq_drv *vq, const uint16_t *ids, unsigned int count,
			 uint32_t *base);

#endif
