/* SPDX-License-Identifier: MIT */
/*
 * What the disk (blk.c) and its request engines (blk_request.c, blk_queue.c, blk_exec.c) share:
 * the disk object, a parsed request, and a queue with the I/O steps it issues.
 */
#ifndef VIRTUE_SRC_DEVICES_BLK_IMPL_H
#define VIRTUE_SRC_DEVICES_BLK_IMPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <liburing.h>

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

/* One I/O step of a request. */
enum io_kind { IO_READV, IO_WRITEV, IO_FSYNC, IO_FALLOCATE };

struct blk_io {
	enum io_kind kind;
	int fd;
	const struct iovec *iov;
	unsigned int iovcnt;
	uint64_t offset, len;
	int mode;     /* fallocate */
	int rw_flags; /* RWF_DSYNC for a write that must be stable */
};

/* A statistics counter: one writer (the queue's thread), readers anywhere. */
struct counter {
	_Atomic uint64_t v;
};

/* One request in flight, from pop to push (blk_queue.c). */
struct blk_slot;

/* One virtio-blk queue: its request slots, and the io_uring their steps go through. */
struct vt_blk_queue {
	struct vt_blk *blk;
	struct vt_vq_dev *vq;
	char name[64];
	const struct vt_log *log;
	uint64_t negotiated;
	bool in_order, always_stable, wce;
	bool broken;

	bool uring;
	struct io_uring ring;
	int event_fd;
	unsigned int outstanding; /* steps prepared or in the kernel, not yet reaped */
	unsigned int unsubmitted; /* steps prepared, not yet submitted */

	unsigned int nslots;
	struct blk_slot *slots;
	struct iovec *iov_pool;
	unsigned int iov_limit;
	unsigned int *free_slots;
	unsigned int nfree;
	unsigned int *order; /* IN_ORDER: slots in the order they were popped */
	unsigned int order_head, order_count;

	unsigned int unflushed, completed;
	bool notify;
	bool logged_malformed, logged_io_error;
	void *zero_buf;

	struct counter requests, reads, writes, flushes, discards, write_zeroes, get_ids;
	struct counter bytes_read, bytes_written, io_errors, unsupported, malformed, in_flight;
};

/* Runs @s from where it stands: applies @res (when @have_result), then issues its next steps. */
void blk_slot_run(struct vt_blk_queue *q, struct blk_slot *s, bool have_result, int64_t res);

/* RAM disk: carries @io out with memcpy and memset; returns the bytes moved, or -errno. */
int64_t blk_ram_exec(struct vt_blk *blk, const struct blk_io *io);

/* File or block device: carries @io out inline, with a system call; bytes moved, or -errno. */
int64_t blk_sync_exec(const struct blk_io *io);

/* Queues @io of @s on @q's io_uring, unsubmitted; false when the submission ring stays full. */
bool blk_uring_prep(struct vt_blk_queue *q, struct blk_slot *s, const struct blk_io *io);

/* Hands every completion the kernel posted to blk_slot_run, without waiting. */
void blk_uring_reap(struct vt_blk_queue *q);

/* Submits and reaps until no step is waiting for submission (inline completions chain). */
void blk_uring_kick(struct vt_blk_queue *q);

/* Sets up @q's io_uring and its eventfd; 0 and inline I/O when the kernel refuses io_uring. */
int blk_queue_uring_init(struct vt_blk_queue *q);

#endif
