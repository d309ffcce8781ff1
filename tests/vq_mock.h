/* SPDX-License-Identifier: MIT */
/*
 * Mock peers for virtqueue tests, in the spirit of rust-vmm's MockSplitQueue.
 *
 * struct vq_mock is a mock *driver*: it lays out split or packed ring memory inside a region that
 * a vt_memtable (or a vt_iotlb) exposes to a vt_vq_dev, and writes any ring state into it, valid
 * or not. Friendly helpers build a chain from (len, writable) segments filled with a seeded
 * pattern; hostile cases are the same chains with one field changed afterwards, so a test reads
 * as "a valid chain, except ...". The region sits between canary pages (mapped but outside the
 * address space) and PROT_NONE guard pages, so a device that strays outside the address space is
 * caught either way.
 *
 * struct vq_mock_dev is the mirror, a mock *device* for a vt_vq_drv: it finds the rings the driver
 * allocated (vt_vq_drv_addrs, resolved through the driver's shared memory) and reads what the
 * driver posted or writes any used state back.
 *
 * Everything here runs on the test's thread; the ring fields are accessed with relaxed atomics
 * and the index / flag stores that publish are release stores, as a real peer would.
 */
#ifndef VIRTUE_TESTS_VQ_MOCK_H
#define VIRTUE_TESTS_VQ_MOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <virtue/as.h>
#include <virtue/iotlb.h>
#include <virtue/memtable.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_ring.h>
#include <virtue/virtqueue.h>

#define VQ_MOCK_PAGE 4096u
/* Most segments a mock chain (or a mock device's view of one) holds. */
#define VQ_MOCK_MAX_SEGS 512
/* Bytes around the region: written with this pattern, checked by vq_mock_canaries_intact. */
#define VQ_MOCK_CANARY	    0xa5
#define VQ_MOCK_CANARY_SIZE VQ_MOCK_PAGE
/* What writable buffers hold before the device writes them. */
#define VQ_MOCK_POISON 0xee

/* ---------------------------------------------------------------- common */

/* One descriptor, in CPU byte order; next is the packed format's buffer id. */
struct vq_mock_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

/* A segment of a buffer: its length and whether the device writes it. */
struct vq_mock_seg {
	uint32_t len;
	bool writable;
};

/* Byte @i of the readable stream of a buffer seeded with @seed. */
static inline uint8_t vq_mock_pattern(uint32_t seed, uint64_t i)
{
	return (uint8_t)(seed + i * (((seed >> 8) & 0xfe) | 1) + (i >> 8));
}

/* Packed ring: the AVAIL and USED bits of a descriptor made available in wrap @wrap (2.8.1). */
static inline uint16_t vq_mock_packed_avail_bits(bool wrap)
{
	return (uint16_t)((wrap ? VIRTQ_DESC_F_AVAIL : 0) | (!wrap ? VIRTQ_DESC_F_USED : 0));
}

/* Packed ring: the bits of a descriptor the device used in wrap @wrap. */
static inline uint16_t vq_mock_packed_used_bits(bool wrap)
{
	return (uint16_t)((wrap ? VIRTQ_DESC_F_AVAIL : 0) | (wrap ? VIRTQ_DESC_F_USED : 0));
}

/* ---------------------------------------------------------------- mock driver */

enum vq_mock_space {
	VQ_MOCK_MEMTABLE = 0, /* one memory-table region: misses are final */
	VQ_MOCK_IOTLB, /* an IOTLB with IOVA == driver-physical address, the region mapped RW */
};

struct vq_mock_params {
	unsigned int num; /* queue size */
	bool packed;
	enum vq_mock_space space;
	uint64_t gpa; /* where the region starts in the device's address space; 0: 1 GiB */
	size_t size;  /* bytes of the region (rings, then a heap); 0: 1 MiB */
	const struct vt_log *log; /* for the memtable / IOTLB */
};

/* A chain as vq_mock_build wrote it. */
struct vq_mock_chain {
	uint16_t head;	/* split: first descriptor index; packed: first slot */
	uint16_t id;	/* what the used entry must carry: split the head, packed the buffer id */
	uint16_t ndesc; /* ring descriptors (slots) it occupies */
	bool indirect;
	uint64_t table; /* indirect: address of the table */
	uint32_t seed;	/* of the readable pattern */
	unsigned int nsegs;
	uint16_t desc[VQ_MOCK_MAX_SEGS]; /* where each segment's descriptor is: index or slot */
	uint64_t addr[VQ_MOCK_MAX_SEGS];
	uint32_t len[VQ_MOCK_MAX_SEGS];
	bool writable[VQ_MOCK_MAX_SEGS];
	uint32_t readable_bytes, writable_bytes;
	bool wrap;	      /* packed: wrap counter of the first slot */
	uint16_t first_flags; /* packed: written last, by vq_mock_publish */
};

/* Chain options. */
#define VQ_MOCK_INDIRECT 1u /* all segments in one indirect table */

struct vq_mock {
	unsigned int num;
	bool packed;
	enum vq_mock_space space;

	uint8_t *map; /* guard | canary | region | canary | guard */
	size_t map_size;
	uint8_t *mem; /* the region */
	size_t size;
	uint64_t gpa;

	struct vt_memtable *table;
	struct vt_iotlb *iotlb;
	struct vt_as as;

	/* Ring areas (addresses as the device is told them). */
	uint64_t desc_addr, driver_addr, device_addr;
	uint64_t rings_end; /* first address after the ring pages: the heap starts here */
	uint64_t heap_next;

	/* Friendly-helper state: what a well-behaved driver would be at. */
	uint16_t next_desc; /* split: next descriptor index a chain starts at */
	uint16_t avail_idx; /* split: the avail idx vq_mock_publish writes next */
	uint16_t next_slot; /* packed: next slot to fill */
	bool wrap;	    /* packed: its wrap counter */
	uint16_t next_id;   /* packed: next buffer id */
	uint32_t next_seed;

	uint8_t *snapshot; /* copy of the region, for vq_mock_first_change */
};

/* Lays out a fresh ring: 0 or -errno. Areas start on pages of their own (IOTLB tests unmap one). */
int vq_mock_init(struct vq_mock *m, const struct vq_mock_params *params);
void vq_mock_destroy(struct vq_mock *m);

/* Device-half parameters for this ring: sizes, areas and the address space. */
void vq_mock_dev_params(const struct vq_mock *m, uint64_t features,
			struct vt_vq_dev_params *params);

/* Bytes from the heap after the rings: the address, or 0 when the region is full. */
uint64_t vq_mock_alloc(struct vq_mock *m, size_t size, size_t align);
/* Host pointer of a region address (NULL outside the region). */
void *vq_mock_ptr(const struct vq_mock *m, uint64_t addr);
/* An address just past the region: never mapped, its host bytes are the canary. */
uint64_t vq_mock_unmapped_addr(const struct vq_mock *m);

/* IOTLB spaces only: map (VT_IOTLB_PERM_*) or unmap part of the region, IOVA == address. */
int vq_mock_iotlb_map(struct vq_mock *m, uint64_t addr, uint64_t size, unsigned int perm);
int vq_mock_iotlb_unmap(struct vq_mock *m, uint64_t addr, uint64_t size);

/* The canary bytes around the region are as vq_mock_init left them. */
bool vq_mock_canaries_intact(const struct vq_mock *m);
/* Remembers the region's bytes; vq_mock_first_change reports the first byte that differs since,
 * or -1. With @except_device_area, the area the device writes (split: used ring) is skipped. */
void vq_mock_snapshot(struct vq_mock *m);
long vq_mock_first_change(const struct vq_mock *m, bool except_device_area);

/* Split ring, raw. Indices are taken modulo nothing: a hostile index is written as given. */
void vq_mock_set_desc(struct vq_mock *m, uint16_t index, struct vq_mock_desc d);
struct vq_mock_desc vq_mock_get_desc(const struct vq_mock *m, uint16_t index);
void vq_mock_set_avail_ring(struct vq_mock *m, uint16_t slot, uint16_t head); /* slot mod num */
void vq_mock_set_avail_idx(struct vq_mock *m, uint16_t idx);
void vq_mock_set_avail_flags(struct vq_mock *m, uint16_t flags);
void vq_mock_set_used_event(struct vq_mock *m, uint16_t event);
uint16_t vq_mock_used_idx(const struct vq_mock *m);
uint16_t vq_mock_used_flags(const struct vq_mock *m);
uint16_t vq_mock_avail_event(const struct vq_mock *m);
/* The used entry at @slot (mod num). */
void vq_mock_used_elem(const struct vq_mock *m, uint16_t slot, uint32_t *id, uint32_t *len);

/* A descriptor at any address of the region (an indirect table entry). */
void vq_mock_write_desc_at(struct vq_mock *m, uint64_t addr, struct vq_mock_desc d);
/* Allocates a table of @n descriptors, writes them: the table's address (0: region full). */
uint64_t vq_mock_write_table(struct vq_mock *m, const struct vq_mock_desc *d, unsigned int n);

/* Packed ring, raw. */
void vq_mock_set_packed_desc(struct vq_mock *m, uint16_t slot, struct vq_mock_desc d);
struct vq_mock_desc vq_mock_get_packed_desc(const struct vq_mock *m, uint16_t slot);
void vq_mock_set_driver_event(struct vq_mock *m, uint16_t desc, uint16_t flags);
void vq_mock_get_device_event(const struct vq_mock *m, uint16_t *desc, uint16_t *flags);
/* Packed: the friendly helpers go on at @slot in the lap @wrap (a ring resumed there). */
void vq_mock_packed_resume(struct vq_mock *m, uint16_t slot, bool wrap);

/*
 * Builds a chain of @n segments: buffers from the heap, readable ones filled with the pattern of a
 * fresh seed, writable ones with VQ_MOCK_POISON; descriptors written (split: from next_desc on,
 * linked by NEXT; packed: from next_slot on, every flag but the first's). Nothing is published:
 * change what you like, then vq_mock_publish. 0, or -ENOSPC (heap full), -EINVAL (n out of range).
 */
int vq_mock_build(struct vq_mock *m, const struct vq_mock_seg *segs, unsigned int n,
		  unsigned int options, struct vq_mock_chain *c);
/*
 * Packed: ring descriptor @i (below c->ndesc) of a chain built and not yet published, as it will
 * be published (the first one's flags are c->first_flags, not what the slot holds yet); and the
 * same descriptor rewritten, the first one's flags going to c->first_flags. A hostile chain is a
 * valid one with a field changed through these.
 */
struct vq_mock_desc vq_mock_packed_chain_desc(const struct vq_mock *m,
					      const struct vq_mock_chain *c, unsigned int i);
void vq_mock_packed_set_chain_desc(struct vq_mock *m, struct vq_mock_chain *c, unsigned int i,
				   struct vq_mock_desc d);
/*
 * Moves segment @i of chain @c, built and not yet published, not INDIRECT, to @addr in the
 * region: its bytes copied there, its descriptor and c->addr[i] pointed at them. 0, or -EINVAL.
 */
int vq_mock_move_segment(struct vq_mock *m, struct vq_mock_chain *c, unsigned int i, uint64_t addr);
/* Makes the chain available: split avail ring entry then avail idx; packed the first's flags. */
void vq_mock_publish(struct vq_mock *m, const struct vq_mock_chain *c);
/* Build then publish. */
int vq_mock_add(struct vq_mock *m, const struct vq_mock_seg *segs, unsigned int n,
		unsigned int options, struct vq_mock_chain *c);

/*
 * Checks iovecs a device got for @c: readable iovecs hold the pattern, byte counts match, and the
 * writable iovecs cover exactly the writable buffers in order. A description of the first
 * difference goes to @why (if not NULL); returns true when everything matches.
 */
bool vq_mock_check_iov(const struct vq_mock *m, const struct vq_mock_chain *c,
		       const struct vt_vq_chain *chain, const struct iovec *iov, char *why,
		       size_t why_size);

/* ---------------------------------------------------------------- mock device */

/* A chain as the mock device found it. */
struct vq_mock_dev_chain {
	uint16_t id;	/* split: head; packed: buffer id */
	uint16_t ndesc; /* ring descriptors (slots) */
	bool indirect;
	struct vq_mock_desc ring_desc; /* the first ring descriptor, as read */
	unsigned int nsegs;
	struct vq_mock_desc seg[VQ_MOCK_MAX_SEGS]; /* segments, table entries if indirect */
	void *host[VQ_MOCK_MAX_SEGS];		   /* where each segment's bytes are */
	uint32_t readable_bytes, writable_bytes;
};

struct vq_mock_dev {
	unsigned int num;
	bool packed;
	struct vt_memtable *table; /* the driver's shared memory, at its own addresses */
	struct vt_as as;
	uint64_t desc_addr, driver_addr, device_addr;

	struct virtq_desc *desc;
	struct virtq_avail *avail;
	struct virtq_used *used;
	struct pvirtq_desc *pdesc;
	struct pvirtq_event_suppress *driver_event, *device_event;

	/* Friendly-helper state: what a well-behaved device would be at. */
	uint16_t last_avail; /* split: next avail entry to take */
	uint16_t used_idx;   /* split: next used entry to write */
	uint16_t next_slot;  /* packed: next slot to read */
	bool wrap;
	uint16_t used_slot; /* packed: next slot to write used */
	bool used_wrap;
};

/*
 * Finds the rings of @drv (direct DMA over @shm: bus address == driver-physical address) as a
 * device would. @packed and @num must be what the driver was created with. 0 or -errno.
 */
int vq_mock_dev_attach(struct vq_mock_dev *d, const struct vt_vq_drv *drv, unsigned int num,
		       bool packed, const struct vt_shm *shm);
void vq_mock_dev_detach(struct vq_mock_dev *d);

/* Split, raw reads of what the driver wrote. */
uint16_t vq_mock_dev_avail_idx(const struct vq_mock_dev *d);
uint16_t vq_mock_dev_avail_flags(const struct vq_mock_dev *d);
uint16_t vq_mock_dev_avail_ring(const struct vq_mock_dev *d, uint16_t slot);
uint16_t vq_mock_dev_used_event(const struct vq_mock_dev *d);
struct vq_mock_desc vq_mock_dev_desc(const struct vq_mock_dev *d, uint16_t index);
/* Split, raw writes of any used state. */
void vq_mock_dev_set_used_elem(struct vq_mock_dev *d, uint16_t slot, uint32_t id, uint32_t len);
void vq_mock_dev_set_used_idx(struct vq_mock_dev *d, uint16_t idx);
void vq_mock_dev_set_used_flags(struct vq_mock_dev *d, uint16_t flags);
void vq_mock_dev_set_avail_event(struct vq_mock_dev *d, uint16_t event);

/* Packed, raw. */
struct vq_mock_desc vq_mock_dev_packed_desc(const struct vq_mock_dev *d, uint16_t slot);
void vq_mock_dev_set_packed_desc(struct vq_mock_dev *d, uint16_t slot, struct vq_mock_desc desc);
void vq_mock_dev_get_driver_event(const struct vq_mock_dev *d, uint16_t *desc, uint16_t *flags);
void vq_mock_dev_set_device_event(struct vq_mock_dev *d, uint16_t desc, uint16_t flags);

/*
 * Takes the next available chain as a friendly device would (following NEXT and one level of
 * INDIRECT, checking nothing but staying inside the memory): 0, -EAGAIN when none is available,
 * -EFAULT when an address is not in shared memory, -E2BIG when it has too many segments.
 */
int vq_mock_dev_take(struct vq_mock_dev *d, struct vq_mock_dev_chain *c);
/*
 * Returns a chain used: split: the entry at used_idx, then used idx; packed: the used
 * descriptor at used_slot, skipping @ndesc slots.
 */
void vq_mock_dev_complete(struct vq_mock_dev *d, uint16_t id, uint16_t ndesc, uint32_t len);

#endif
