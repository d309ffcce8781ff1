/* SPDX-License-Identifier: MIT */
/*
 * Carries out one I/O step of a virtio-blk request (blk_queue.c) against the backing: memcpy on a
 * RAM disk, a system call inline, or through the queue's io_uring, whose completions go back to it.
 */
#include <errno.h>
#include <liburing.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "blk_impl.h"

/* ---------------------------------------------------------------- executing the steps */

/* RAM disk: the step, done with memcpy and memset. */
int64_t blk_ram_exec(struct vt_blk *blk, const struct blk_io *io)
{
	uint8_t *at = blk->ram + io->offset;
	uint64_t done = 0;

	switch (io->kind) {
	case IO_READV:
	case IO_WRITEV:
		for (unsigned int i = 0; i < io->iovcnt && done < io->len; i++) {
			size_t k = io->iov[i].iov_len;
			if (k > io->len - done)
				k = (size_t)(io->len - done);
			if (io->kind == IO_READV)
				memcpy(io->iov[i].iov_base, at + done, k);
			else
				memcpy(at + done, io->iov[i].iov_base, k);
			done += k;
		}
		return (int64_t)done;
	case IO_FSYNC:
		return 0;
	case IO_FALLOCATE: {
		/* Whole pages go back to the kernel (they read as zeroes again); edges are cleared.
		 */
		uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
		uintptr_t start = (uintptr_t)at, end = start + io->len;
		uintptr_t first = (start + page - 1) & ~(page - 1), last = end & ~(page - 1);
		if (first < last && madvise((void *)first, last - first, MADV_DONTNEED) == 0) {
			memset(at, 0, first - start);
			memset((void *)last, 0, end - last);
		} else {
			memset(at, 0, io->len);
		}
		return 0;
	}
	}
	return -EINVAL;
}

/* File or block device, inline. */
int64_t blk_sync_exec(const struct blk_io *io)
{
	ssize_t n = 0;

	switch (io->kind) {
	case IO_READV:
		n = preadv2(io->fd, io->iov, (int)io->iovcnt, (off_t)io->offset, 0);
		break;
	case IO_WRITEV:
		n = pwritev2(io->fd, io->iov, (int)io->iovcnt, (off_t)io->offset, io->rw_flags);
		break;
	case IO_FSYNC:
		n = fdatasync(io->fd);
		break;
	case IO_FALLOCATE:
		n = fallocate(io->fd, io->mode, (off_t)io->offset, (off_t)io->len);
		break;
	}
	return n < 0 ? -errno : n;
}

bool blk_uring_prep(struct vt_blk_queue *q, struct blk_slot *s, const struct blk_io *io)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

	if (!sqe) {
		/* The submission ring is full: hand it to the kernel to make room. */
		io_uring_submit(&q->ring);
		q->unsubmitted = 0;
		sqe = io_uring_get_sqe(&q->ring);
		if (!sqe)
			return false;
	}
	switch (io->kind) {
	case IO_READV:
		io_uring_prep_readv(sqe, io->fd, io->iov, io->iovcnt, io->offset);
		break;
	case IO_WRITEV:
		io_uring_prep_writev2(sqe, io->fd, io->iov, io->iovcnt, io->offset, io->rw_flags);
		break;
	case IO_FSYNC:
		io_uring_prep_fsync(sqe, io->fd, IORING_FSYNC_DATASYNC);
		break;
	case IO_FALLOCATE:
		io_uring_prep_fallocate(sqe, io->fd, io->mode, (off_t)io->offset, (off_t)io->len);
		break;
	}
	io_uring_sqe_set_data(sqe, s);
	q->outstanding++;
	q->unsubmitted++;
	return true;
}

/* ---------------------------------------------------------------- io_uring plumbing */

static void uring_submit(struct vt_blk_queue *q)
{
	if (!q->unsubmitted)
		return;
	int ret = io_uring_submit(&q->ring);
	if (ret >= 0) {
		q->unsubmitted = 0;
	} else if (!q->logged_io_error) {
		/* -EAGAIN/-EBUSY: the kernel is short of resources; the steps stay queued. */
		q->logged_io_error = true;
		vt_log(q->log, VT_LOG_WARN, "%s: io_uring_submit: %s", q->name, strerror(-ret));
	}
}

/* Handles every completion the kernel posted, without waiting. */
void blk_uring_reap(struct vt_blk_queue *q)
{
	struct io_uring_cqe *cqes[64];
	unsigned int n;

	while ((n = io_uring_peek_batch_cqe(&q->ring, cqes, 64)) > 0) {
		struct {
			struct blk_slot *s;
			int res;
		} done[64];
		for (unsigned int i = 0; i < n; i++) {
			done[i].s = io_uring_cqe_get_data(cqes[i]);
			done[i].res = cqes[i]->res;
		}
		io_uring_cq_advance(&q->ring, n);
		q->outstanding -= n;
		for (unsigned int i = 0; i < n; i++)
			blk_slot_run(q, done[i].s, true, done[i].res);
	}
}

/* Submits and reaps until no step is waiting for submission (inline completions chain). */
void blk_uring_kick(struct vt_blk_queue *q)
{
	do {
		uring_submit(q);
		blk_uring_reap(q);
	} while (q->unsubmitted && !q->broken);
}

int blk_queue_uring_init(struct vt_blk_queue *q)
{
	/* One step in flight per slot at most; the completion ring is twice the submission one. */
	int ret = io_uring_queue_init(q->nslots, &q->ring, 0);
	if (ret == -ENOSYS || ret == -EPERM) {
		vt_log(q->log, VT_LOG_WARN, "%s: io_uring unavailable (%s): inline I/O", q->name,
		       strerror(-ret));
		return 0;
	}
	if (ret < 0)
		return ret;
	q->uring = true;
	q->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->event_fd < 0)
		return -errno;
	return io_uring_register_eventfd(&q->ring, q->event_fd);
}
