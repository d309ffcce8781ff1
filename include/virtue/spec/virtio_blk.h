/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk (virtio 1.3 section 5.2): feature bits, configuration layout and request format.
 */
#ifndef VIRTUE_SPEC_VIRTIO_BLK_H
#define VIRTUE_SPEC_VIRTIO_BLK_H

#include <stdint.h>

#include "endian.h"

/* Feature bits (5.2.3). */
#define VIRTIO_BLK_F_BARRIER	  0 /* legacy */
#define VIRTIO_BLK_F_SIZE_MAX	  1
#define VIRTIO_BLK_F_SEG_MAX	  2
#define VIRTIO_BLK_F_GEOMETRY	  4
#define VIRTIO_BLK_F_RO		  5
#define VIRTIO_BLK_F_BLK_SIZE	  6
#define VIRTIO_BLK_F_SCSI	  7 /* legacy */
#define VIRTIO_BLK_F_FLUSH	  9
#define VIRTIO_BLK_F_TOPOLOGY	  10
#define VIRTIO_BLK_F_CONFIG_WCE	  11
#define VIRTIO_BLK_F_MQ		  12
#define VIRTIO_BLK_F_DISCARD	  13
#define VIRTIO_BLK_F_WRITE_ZEROES 14
#define VIRTIO_BLK_F_LIFETIME	  15
#define VIRTIO_BLK_F_SECURE_ERASE 16
#define VIRTIO_BLK_F_ZONED	  17

/* Sectors are always 512 bytes on the wire, whatever blk_size says (5.2.6). */
#define VIRTIO_BLK_SECTOR_SIZE	512
#define VIRTIO_BLK_SECTOR_SHIFT 9

struct virtio_blk_geometry {
	vt_le16 cylinders;
	uint8_t heads;
	uint8_t sectors;
};

struct virtio_blk_topology {
	uint8_t physical_block_exp;
	uint8_t alignment_offset;
	vt_le16 min_io_size;
	vt_le32 opt_io_size;
};

struct virtio_blk_zoned_characteristics {
	vt_le32 zone_sectors;
	vt_le32 max_open_zones;
	vt_le32 max_active_zones;
	vt_le32 max_append_sectors;
	vt_le32 write_granularity;
	uint8_t model;
	uint8_t unused2[3];
};

/* 5.2.4 Device configuration layout. */
struct virtio_blk_config {
	vt_le64 capacity; /* in 512-byte sectors */
	vt_le32 size_max;
	vt_le32 seg_max;
	struct virtio_blk_geometry geometry;
	vt_le32 blk_size;
	struct virtio_blk_topology topology;
	uint8_t writeback;
	uint8_t unused0;
	vt_le16 num_queues;
	vt_le32 max_discard_sectors;
	vt_le32 max_discard_seg;
	vt_le32 discard_sector_alignment;
	vt_le32 max_write_zeroes_sectors;
	vt_le32 max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
	uint8_t unused1[3];
	vt_le32 max_secure_erase_sectors;
	vt_le32 max_secure_erase_seg;
	vt_le32 secure_erase_sector_alignment;
	struct virtio_blk_zoned_characteristics zoned;
};

/* 5.2.6 Device operation: request types. */
#define VIRTIO_BLK_T_IN		  0
#define VIRTIO_BLK_T_OUT	  1
#define VIRTIO_BLK_T_FLUSH	  4
#define VIRTIO_BLK_T_GET_ID	  8
#define VIRTIO_BLK_T_GET_LIFETIME 10
#define VIRTIO_BLK_T_DISCARD	  11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_T_SECURE_ERASE 14

/* Status byte, the last device-writable byte of every request. */
#define VIRTIO_BLK_S_OK	    0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

/* GET_ID answers with up to this many bytes, not NUL-terminated when full. */
#define VIRTIO_BLK_ID_BYTES 20

/* The device-readable header at the start of every request. */
struct virtio_blk_outhdr {
	vt_le32 type;
	vt_le32 reserved;
	vt_le64 sector;
};

/* One segment of a DISCARD, WRITE_ZEROES or SECURE_ERASE payload. */
struct virtio_blk_discard_write_zeroes {
	vt_le64 sector;
	vt_le32 num_sectors;
	vt_le32 flags;
};

#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 0x1

#endif
