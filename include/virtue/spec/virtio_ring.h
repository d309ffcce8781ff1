/* SPDX-License-Identifier: MIT */
/*
 * Virtqueue layouts of virtio 1.3: the split ring (section 2.7) and the packed ring (section 2.8),
 * with their flags and event-suppression structures. Fields are little-endian (endian.h).
 */
#ifndef VIRTUE_SPEC_VIRTIO_RING_H
#define VIRTUE_SPEC_VIRTIO_RING_H

#include <stddef.h>
#include <stdint.h>

#include "endian.h"

/* Split ring limits: queue size is a power of two no larger than 32768 (2.7). */
#define VIRTQ_SPLIT_MAX_SIZE  32768
#define VIRTQ_PACKED_MAX_SIZE 32768

/* Descriptor flags, shared by both formats. */
#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4
/* Packed only: ownership flags (2.8.1), masks like the three above. */
#define VIRTQ_DESC_F_AVAIL (1 << 7)
#define VIRTQ_DESC_F_USED  (1 << 15)

/* Split ring flags for suppressing notifications when EVENT_IDX is not negotiated. */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY	   1

/* 2.7.5 The Virtqueue Descriptor Table. */
struct virtq_desc {
	vt_le64 addr;
	vt_le32 len;
	vt_le16 flags;
	vt_le16 next;
};

/* 2.7.6 The Virtqueue Available Ring; ring[] has queue size entries, then used_event. */
struct virtq_avail {
	vt_le16 flags;
	vt_le16 idx;
	vt_le16 ring[];
};

/* 2.7.8 The Virtqueue Used Ring. */
struct virtq_used_elem {
	vt_le32 id;
	vt_le32 len;
};

struct virtq_used {
	vt_le16 flags;
	vt_le16 idx;
	struct virtq_used_elem ring[];
};

/* Alignment of each split-ring part (2.7, table "Virtqueue Part Alignment"). */
#define VIRTQ_DESC_ALIGN  16
#define VIRTQ_AVAIL_ALIGN 2
#define VIRTQ_USED_ALIGN  4

/* Sizes of the three split-ring areas for a queue of num entries, event fields included. */
static inline size_t virtq_split_desc_size(unsigned int num)
{
	return sizeof(struct virtq_desc) * num;
}

static inline size_t virtq_split_avail_size(unsigned int num)
{
	return sizeof(struct virtq_avail) + sizeof(vt_le16) * num + sizeof(vt_le16);
}

static inline size_t virtq_split_used_size(unsigned int num)
{
	return sizeof(struct virtq_used) + sizeof(struct virtq_used_elem) * num + sizeof(vt_le16);
}

/*
 * 2.7.7.2 / 2.7.10: with EVENT_IDX, used_event trails the avail ring and avail_event trails the
 * used ring. Notify when new_idx has passed event_idx since old_idx (wrapping 16-bit arithmetic).
 */
static inline int vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx)
{
	return (uint16_t)(new_idx - event_idx - 1) < (uint16_t)(new_idx - old_idx);
}

/* 2.8.13 Packed virtqueue descriptor. */
struct pvirtq_desc {
	vt_le64 addr;
	vt_le32 len;
	vt_le16 id;
	vt_le16 flags;
};

/* 2.8.14 Event suppression structure (driver area and device area of a packed ring). */
struct pvirtq_event_suppress {
	vt_le16 desc;  /* bits 0-14: offset, bit 15: wrap counter */
	vt_le16 flags; /* RING_EVENT_FLAGS_* */
};

#define RING_EVENT_FLAGS_ENABLE	 0x0
#define RING_EVENT_FLAGS_DISABLE 0x1
#define RING_EVENT_FLAGS_DESC	 0x2

#define PVIRTQ_EVENT_OFF_MASK	0x7fff
#define PVIRTQ_EVENT_WRAP_SHIFT 15

/* Alignment of packed-ring parts (2.8.10.1). */
#define PVIRTQ_DESC_ALIGN  16
#define PVIRTQ_EVENT_ALIGN 4

#endif
