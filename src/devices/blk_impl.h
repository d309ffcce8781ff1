/* SPDX-License-Identifier: MIT */
/*
 * What the disk (blk.c) and its request engines (blk_queue.c, blk_request.c) share: the disk
 * object, and a parsed request.
 */
#ifndef VIRTUE_SRC_DEVICES_BLK_IMPL_H
#define VIRTUE_SRC_DEVICES_BLK_IMPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <virtue/blk.h>

struct vt_blk {
	int fd;		 /* the backing; -1 for a RAM disk */
	int fd_buffered; /* direct: a second, buffered descriptor for what O_DIRECT refuses */
	uint8_t *ram;	 /* RAM disk */
	uint64_t ram_size;
	bool read_only, direct, sync_io, is_bdev;
	uint64_t capacity; /* sectors */
	uint32_t blk_size; /* logical block size, bytes */
	uint8_t physical_block_exp;
	unsigned int num_queues, queue_size;
	char serial[VIRTIO_BLK_ID_BYTES];
	uint64_t offered;
	const struct vt_log *log;
	atomic_uint writeback;	     /* config field: 1 writeback, 0 writethrough */
	_Atomic uint64_t negotiated; /* as of the last FEATURES_OK */
	/* The backing refused a fallocate mode once: later requests skip straight to the fallback.
	 */
	atomic_bool no_punch_hole, no_zero_range;
};

/* What a request asks for, once parsed and validated. */
enum blk_op {
	BLK_OP_NONE, /* completed during parsing (error, UNSUPP, GET_ID) */
	BLK_OP_READ,
	BLK_OP_WRITE,
	BLK_OP_FLUSH,
	BLK_OP_DISCARD,
	BLK_OP_WRITE_ZEROES,
};

/* One DISCARD or WRITE_ZEROES segment, in bytes, copied out of driver memory at validation. */
struct blk_extent {
	uint64_t offset, len;
	bool unmap;
};

struct blk_parsed {
	enum blk_op op;
	uint32_t type;			     /* the request type, for statistics */
	uint8_t status;			     /* when op == BLK_OP_NONE */
	bool malformed;			     /* broke a rule of 5.2.6 (IOERR) */
	const char *why;		     /* the rule, when malformed */
	uint8_t *status_p;		     /* the status byte in driver memory */
	uint64_t offset;		     /* READ/WRITE: byte offset on the disk */
	uint64_t len;			     /* READ/WRITE: data bytes */
	unsigned int data_first, data_count; /* READ/WRITE: data iovecs (trimmed in place) */
	uint32_t written; /* bytes written to the writable part, status excluded */
	unsigned int nextent;
	struct blk_extent extent[VT_BLK_MAX_DISCARD_SEG];
};

/*
 * Parses the chain in @iov (readable then writable, as vt_vq_dev_pop returned it) into @r, trimming
 * the data iovecs in place. GET_ID is answered here. Returns 0, or -EPROTO when the chain has no
 * writable byte for a status (nothing can be returned to the driver).
 */
int blk_parse(const struct vt_blk *blk, uint64_t negotiated, const struct vt_vq_chain *chain,
	      struct iovec *iov, struct blk_parsed *r);

#endif
