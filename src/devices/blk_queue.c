/* SPDX-License-Identifier: MIT */
/*
 * The request engine of one virtio-blk queue: request slots that carry a chain from pop to push,
 * and the I/O steps each request runs as (a short readv resumes, a refused fallocate becomes
 * zeroes written). blk_exec.c carries the steps out; all of them end in one completion path.
 */
#include <errno.h>
#include <inttypes.h>
#include <liburing.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <virtue/spec/virtio_config.h>

#include "blk_impl.h"

#define IOV_INITIAL   32	  /* iovecs per slot until a chain needs more */
#define IOV_PER_OP    1024	  /* UIO_MAXIOV: most iovecs one readv/writev takes */
#define ZERO_BUF_SIZE (64u << 10) /* WRITE_ZEROES fallback: written from this many zeroes */
#define ZERO_IOVS     16
#define FLUSH_EVERY   64   /* used entries recorded before they are published mid-poll */
#define FREE_DRAIN_MS 5000 /* vt_blk_queue_free waits this long for the kernel */

enum slot_state { SLOT_FREE, SLOT_BUSY, SLOT_DONE };

struct blk_slot {
	struct vt_vq_chain chain;
	struct iovec *iov;
	unsigned int iov_cap;
	bool iov_owned; /* grown: malloc'ed, not in the queue's pool */
	enum slot_state state;
	bool buffered;	       /* O_DIRECT refused the buffers: the page cache fd */
	bool zero_fill;	       /* writing the current extent's zeroes by hand */
	bool stable;	       /* writethrough: writes complete only once stable */
	bool need_sync;	       /* an fdatasync is still owed (FLUSH, stable fallocate) */
	int last_mode;	       /* the fallocate mode of the step in flight */
	unsigned int cur, end; /* READ/WRITE: data iovecs left */
	uint64_t pos, left;    /* next byte on the disk, bytes left in the step sequence */
	unsigned int ext;      /* DISCARD/WRITE_ZEROES: current extent */
	struct blk_io io;      /* the step in flight */
	struct blk_parsed req;
};

/* Counters have one writer (the queue's thread) and readers anywhere: no read-modify-write. */
static void count(struct counter *c, uint64_t n)
{
	atomic_store_explicit(&c->v, atomic_load_explicit(&c->v, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static int queue_break(struct vt_blk_queue *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int queue_break(struct vt_blk_queue *q, const char *fmt, ...)
{
	if (!q->broken) {
		char why[256];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, sizeof(why), fmt, ap);
		va_end(ap);
		vt_log(q->log, VT_LOG_ERROR, "%s: queue broken: %s", q->name, why);
		q->broken = true;
	}
	return -EPROTO;
}

/* ---------------------------------------------------------------- completion */

static void queue_flush(struct vt_blk_queue *q)
{
	if (q->unflushed) {
		q->notify |= vt_vq_dev_flush(q->vq);
		q->unflushed = 0;
	}
}

static void slot_release(struct vt_blk_queue *q, struct blk_slot *s)
{
	s->state = SLOT_FREE;
	q->free_slots[q->nfree++] = (unsigned int)(s - q->slots);
	count(&q->in_flight, (uint64_t)-1);
}

/* Returns a finished request used. */
static void slot_retire(struct vt_blk_queue *q, struct blk_slot *s)
{
	uint32_t written = 1 + (s->req.status == VIRTIO_BLK_S_OK ? s->req.written : 0);

	if (vt_vq_dev_push(q->vq, &s->chain, written) < 0)
		queue_break(q, "the ring refused a used entry: %s",
			    vt_vq_error_str(vt_vq_dev_error(q->vq)));
	slot_release(q, s);
	q->completed++;
	if (++q->unflushed >= FLUSH_EVERY)
		queue_flush(q);
}

static void slot_complete(struct vt_blk_queue *q, struct blk_slot *s, uint8_t status)
{
	s->req.status = status;
	/* The status byte is the last thing written before the used entry publishes it. */
	*s->req.status_p = status;
	s->state = SLOT_DONE;
	count(&q->requests, 1);
	if (status == VIRTIO_BLK_S_IOERR)
		count(&q->io_errors, 1);
	else if (status == VIRTIO_BLK_S_UNSUPP)
		count(&q->unsupported, 1);
	if (!q->in_order) {
		slot_retire(q, s);
		return;
	}
	/* IN_ORDER: only the oldest request may go, then every finished one behind it. */
	while (q->order_count && q->slots[q->order[q->order_head]].state == SLOT_DONE) {
		slot_retire(q, &q->slots[q->order[q->order_head]]);
		q->order_head = (q->order_head + 1) % q->nslots;
		q->order_count--;
	}
}

static void io_error(struct vt_blk_queue *q, struct blk_slot *s, const char *what, int err)
{
	if (!q->logged_io_error) {
		q->logged_io_error = true;
		vt_log(q->log, VT_LOG_WARN,
		       "%s: %s at byte %" PRIu64 " failed: %s (further errors counted only)",
		       q->name, what, s->pos, strerror(err));
	}
	slot_complete(q, s, VIRTIO_BLK_S_IOERR);
}

/* ---------------------------------------------------------------- the steps of a request */

static int slot_fd(const struct vt_blk_queue *q, const struct blk_slot *s)
{
	return s->buffered && q->blk->fd_buffered >= 0 ? q->blk->fd_buffered : q->blk->fd;
}

/* Moves the current extent on to the next one with bytes left; false when all are done. */
static bool slot_next_extent(struct blk_slot *s)
{
	while (s->left == 0) {
		if (++s->ext >= s->req.nextent)
			return false;
		s->pos = s->req.extent[s->ext].offset;
		s->left = s->req.extent[s->ext].len;
		s->zero_fill = false;
	}
	return true;
}

/* The zeroes a WRITE_ZEROES fallback writes next, in the slot's own iovecs (its data is done). */
static unsigned int slot_zero_iov(struct vt_blk_queue *q, struct blk_slot *s)
{
	unsigned int n = 0;
	uint64_t left = s->left;
	unsigned int max = s->iov_cap < ZERO_IOVS ? s->iov_cap : ZERO_IOVS;

	while (left && n < max) {
		size_t k = left < ZERO_BUF_SIZE ? (size_t)left : ZERO_BUF_SIZE;
		s->iov[n++] = (struct iovec){ q->zero_buf, k };
		left -= k;
	}
	return n;
}

/* The next step of @s, or false when the request has nothing left to do. */
static bool slot_next_io(struct vt_blk_queue *q, struct blk_slot *s, struct blk_io *io)
{
	struct vt_blk *blk = q->blk;

	*io = (struct blk_io){ .fd = slot_fd(q, s), .offset = s->pos, .len = s->left };
	switch (s->req.op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		if (s->left == 0)
			return false;
		io->kind = s->req.op == BLK_OP_READ ? IO_READV : IO_WRITEV;
		io->iov = s->iov + s->cur;
		io->iovcnt = s->end - s->cur < IOV_PER_OP ? s->end - s->cur : IOV_PER_OP;
		io->rw_flags = s->req.op == BLK_OP_WRITE && s->stable ? RWF_DSYNC : 0;
		return true;
	case BLK_OP_DISCARD:
	case BLK_OP_WRITE_ZEROES:
		if (slot_next_extent(s))
			break;
		/* Every extent done: a sync may be owed. */
		__attribute__((fallthrough));
	case BLK_OP_FLUSH:
		if (!s->need_sync)
			return false;
		io->kind = IO_FSYNC;
		return true;
	default:
		return false;
	}

	/* An extent with bytes left. */
	io->offset = s->pos;
	io->len = s->left;
	const struct blk_extent *e = &s->req.extent[s->ext];
	bool discard = s->req.op == BLK_OP_DISCARD;
	bool punch = !atomic_load_explicit(&blk->no_punch_hole, memory_order_relaxed);
	bool zero_range = !atomic_load_explicit(&blk->no_zero_range, memory_order_relaxed);
	if (discard && !punch) {
		/* Discarding is a hint (5.2.6.2: the device MAY deallocate): nothing to do. */
		s->left = 0;
		return slot_next_io(q, s, io);
	}
	if (!s->zero_fill && (discard || (e->unmap && punch))) {
		io->kind = IO_FALLOCATE;
		io->mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	} else if (!s->zero_fill && zero_range) {
		io->kind = IO_FALLOCATE;
		io->mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
	} else {
		s->zero_fill = true;
		io->kind = IO_WRITEV;
		io->iov = s->iov;
		io->iovcnt = slot_zero_iov(q, s);
		io->rw_flags = s->stable ? RWF_DSYNC : 0;
	}
	s->last_mode = io->mode;
	return true;
}

/* Advances the data cursor past @n bytes that were transferred. */
static void slot_advance(struct blk_slot *s, uint64_t n)
{
	s->pos += n;
	s->left -= n;
	while (n && s->cur < s->end) {
		struct iovec *v = &s->iov[s->cur];
		if (n >= v->iov_len) {
			n -= v->iov_len;
			s->cur++;
		} else {
			v->iov_base = (uint8_t *)v->iov_base + n;
			v->iov_len -= n;
			n = 0;
		}
	}
}

/*
 * Applies the result of the step @io of @s. Returns true when the request goes on (the next step,
 * or the same one again), false when it was completed.
 */
static bool slot_result(struct vt_blk_queue *q, struct blk_slot *s, const struct blk_io *io,
			int64_t res)
{
	struct vt_blk *blk = q->blk;

	if (res == -EINTR || res == -EAGAIN)
		return true;
	switch (io->kind) {
	case IO_READV:
	case IO_WRITEV:
		if (res == -EINVAL && blk->direct && !s->buffered) {
			/* O_DIRECT wants aligned buffers; these are not: use the page cache. */
			s->buffered = true;
			return true;
		}
		if (res < 0) {
			io_error(q, s, io->kind == IO_READV ? "read" : "write", (int)-res);
			return false;
		}
		if (res == 0 || (uint64_t)res > s->left) {
			io_error(q, s, io->kind == IO_READV ? "read" : "write", EIO);
			return false;
		}
		if (s->zero_fill) {
			s->pos += (uint64_t)res;
			s->left -= (uint64_t)res;
			count(&q->bytes_written, (uint64_t)res);
			return true;
		}
		slot_advance(s, (uint64_t)res);
		if (io->kind == IO_READV) {
			s->req.written += (uint32_t)res;
			count(&q->bytes_read, (uint64_t)res);
		} else {
			count(&q->bytes_written, (uint64_t)res);
		}
		return true;
	case IO_FSYNC:
		if (res < 0) {
			io_error(q, s, "fdatasync", (int)-res);
			return false;
		}
		s->need_sync = false;
		return true;
	case IO_FALLOCATE:
		if (res == -EOPNOTSUPP || (res == -EINVAL && blk->is_bdev)) {
			/* Not on this backing: remember, and take the next way for this extent. */
			if (s->last_mode & FALLOC_FL_PUNCH_HOLE)
				atomic_store_explicit(&blk->no_punch_hole, true,
						      memory_order_relaxed);
			else
				atomic_store_explicit(&blk->no_zero_range, true,
						      memory_order_relaxed);
			return true;
		}
		if (res < 0) {
			io_error(q, s, "fallocate", (int)-res);
			return false;
		}
		s->left = 0;
		return true;
	}
	return true;
}

/*
 * Runs @s from where it stands: applies the result of the step that just finished (when
 * @have_result), then issues steps until one is in the kernel or the request is complete.
 */
void blk_slot_run(struct vt_blk_queue *q, struct blk_slot *s, bool have_result, int64_t res)
{
	if (have_result && !slot_result(q, s, &s->io, res))
		return;
	for (;;) {
		if (!slot_next_io(q, s, &s->io)) {
			slot_complete(q, s, VIRTIO_BLK_S_OK);
			return;
		}
		if (q->uring) {
			if (!blk_uring_prep(q, s, &s->io))
				io_error(q, s, "submission", EBUSY);
			return;
		}
		res = q->blk->fd < 0 ? blk_ram_exec(q->blk, &s->io) : blk_sync_exec(&s->io);
		if (!slot_result(q, s, &s->io, res))
			return;
	}
}

/* A request just popped into @s: parse it, then start it. */
static void slot_start(struct vt_blk_queue *q, struct blk_slot *s)
{
	struct blk_parsed *r = &s->req;

	if (blk_parse(q->blk, q->negotiated, &s->chain, s->iov, r) < 0) {
		slot_release(q, s);
		if (q->in_order)
			q->order_count--; /* it was the newest */
		queue_break(q, "request %u has no device-writable byte for its status (5.2.6)",
			    s->chain.id);
		return;
	}
	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		count(&q->reads, 1);
		break;
	case VIRTIO_BLK_T_OUT:
		count(&q->writes, 1);
		break;
	case VIRTIO_BLK_T_FLUSH:
		count(&q->flushes, 1);
		break;
	case VIRTIO_BLK_T_GET_ID:
		count(&q->get_ids, 1);
		break;
	case VIRTIO_BLK_T_DISCARD:
		count(&q->discards, 1);
		break;
	case VIRTIO_BLK_T_WRITE_ZEROES:
		count(&q->write_zeroes, 1);
		break;
	}
	if (r->malformed) {
		count(&q->malformed, 1);
		if (!q->logged_malformed) {
			q->logged_malformed = true;
			vt_log(
			    q->log, VT_LOG_WARN,
			    "%s: request %u completed with IOERR: %s (further ones counted only)",
			    q->name, s->chain.id, r->why);
		}
	}
	if (r->op == BLK_OP_NONE) {
		slot_complete(q, s, r->status);
		return;
	}
	s->buffered = s->zero_fill = false;
	s->stable =
	    q->blk->fd >= 0 &&
	    (q->always_stable ||
	     (q->wce && atomic_load_explicit(&q->blk->writeback, memory_order_relaxed) == 0));
	s->need_sync = r->op == BLK_OP_FLUSH ||
		       (s->stable && (r->op == BLK_OP_DISCARD || r->op == BLK_OP_WRITE_ZEROES));
	s->cur = r->data_first;
	s->end = r->data_first + r->data_count;
	s->pos = r->offset;
	s->left = r->len;
	s->ext = 0;
	if (r->nextent) {
		s->pos = r->extent[0].offset;
		s->left = r->extent[0].len;
	}
	blk_slot_run(q, s, false, 0);
}

/* ---------------------------------------------------------------- the queue */

static int slot_grow(struct vt_blk_queue *q, struct blk_slot *s)
{
	if (s->iov_cap >= q->iov_limit)
		return -E2BIG;
	unsigned int cap = s->iov_cap * 2 < q->iov_limit ? s->iov_cap * 2 : q->iov_limit;
	struct iovec *iov = malloc(cap * sizeof(*iov));
	if (!iov)
		return -ENOMEM;
	if (s->iov_owned)
		free(s->iov);
	s->iov = iov;
	s->iov_cap = cap;
	s->iov_owned = true;
	return 0;
}

/* Pops and starts requests: 0 when the ring is empty, 1 when no slot is free, or -errno. */
static int queue_pop_all(struct vt_blk_queue *q)
{
	while (q->nfree) {
		struct blk_slot *s = &q->slots[q->free_slots[q->nfree - 1]];
		int ret = vt_vq_dev_pop(q->vq, &s->chain, s->iov, s->iov_cap);
		if (ret == -ENOBUFS) {
			ret = slot_grow(q, s);
			if (ret < 0)
				return queue_break(q, "a chain needs more than %u iovecs (%s)",
						   q->iov_limit, strerror(-ret));
			continue;
		}
		if (ret == -EAGAIN)
			return 0;
		if (ret == -EFAULT)
			return -EFAULT;
		if (ret < 0)
			return queue_break(q, "%s", vt_vq_error_str(vt_vq_dev_error(q->vq)));
		q->nfree--;
		s->state = SLOT_BUSY;
		count(&q->in_flight, 1);
		if (q->in_order) {
			q->order[(q->order_head + q->order_count) % q->nslots] =
			    (unsigned int)(s - q->slots);
			q->order_count++;
		}
		slot_start(q, s);
		if (q->broken)
			return -EPROTO;
	}
	return 1;
}

int vt_blk_queue_poll(struct vt_blk_queue *q, bool *notify)
{
	int ret;

	*notify = false;
	q->completed = 0;
	if (q->broken)
		return -EPROTO;
	if (q->uring) {
		uint64_t v;
		/* Cleared before reaping: a completion posted after the reap signals again. */
		if (read(q->event_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			vt_log(q->log, VT_LOG_WARN, "%s: eventfd read: %s", q->name,
			       strerror(errno));
		blk_uring_reap(q);
	}
	/*
	 * Notifications off while draining; back on once the ring looks empty, then one more look,
	 * since a buffer made available before enable_notify would otherwise never be kicked.
	 * Without a free slot they stay off: completions bring the caller back.
	 */
	for (;;) {
		vt_vq_dev_disable_notify(q->vq);
		ret = queue_pop_all(q);
		if (ret != 0 || !vt_vq_dev_enable_notify(q->vq))
			break;
	}
	if (q->uring)
		blk_uring_kick(q);
	queue_flush(q);
	*notify = q->notify;
	q->notify = false;
	if (q->broken)
		return -EPROTO;
	return ret == -EFAULT ? -EFAULT : (int)q->completed;
}

int vt_blk_queue_event_fd(const struct vt_blk_queue *q)
{
	return q->uring ? q->event_fd : -1;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vt_blk_queue_drain(struct vt_blk_queue *q, int timeout_ms, bool *notify)
{
	int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);

	*notify = false;
	q->completed = 0;
	while (q->uring && q->outstanding) {
		blk_uring_kick(q);
		if (!q->outstanding)
			break;
		int64_t left = deadline - now_ms();
		if (left <= 0)
			break;
		struct __kernel_timespec ts = { .tv_sec = 0,
						.tv_nsec = (left < 100 ? left : 100) * 1000000 };
		struct io_uring_cqe *cqe;
		io_uring_wait_cqe_timeout(&q->ring, &cqe, &ts);
		blk_uring_reap(q);
		queue_flush(q);
	}
	queue_flush(q);
	*notify = q->notify;
	q->notify = false;
	return q->outstanding ? -ETIMEDOUT : 0;
}

void vt_blk_queue_stats(const struct vt_blk_queue *q, struct vt_blk_queue_stats *st)
{
#define LOAD(field) atomic_load_explicit(&((struct vt_blk_queue *)q)->field.v, memory_order_relaxed)
	*st = (struct vt_blk_queue_stats){
		.requests = LOAD(requests),
		.reads = LOAD(reads),
		.writes = LOAD(writes),
		.flushes = LOAD(flushes),
		.discards = LOAD(discards),
		.write_zeroes = LOAD(write_zeroes),
		.get_ids = LOAD(get_ids),
		.bytes_read = LOAD(bytes_read),
		.bytes_written = LOAD(bytes_written),
		.io_errors = LOAD(io_errors),
		.unsupported = LOAD(unsupported),
		.malformed = LOAD(malformed),
		.in_flight = LOAD(in_flight),
	};
#undef LOAD
}

int vt_blk_queue_new(struct vt_blk *blk, struct vt_vq_dev *vq, uint64_t negotiated,
		     const char *name, struct vt_blk_queue **out)
{
	*out = NULL;
	if (!blk || !vq)
		return -EINVAL;
	struct vt_blk_queue *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->blk = blk;
	q->vq = vq;
	q->log = blk->log;
	q->event_fd = -1;
	snprintf(q->name, sizeof(q->name), "%s", name ? name : "blk");
	q->negotiated = negotiated;
	q->in_order = negotiated & VT_BIT(VIRTIO_F_IN_ORDER);
	q->wce = negotiated & VT_BIT(VIRTIO_BLK_F_CONFIG_WCE);
	/* 5.2.6.2: FLUSH offered but neither it nor CONFIG_WCE negotiated: writes are stable. */
	q->always_stable = !(negotiated & VT_BIT(VIRTIO_BLK_F_FLUSH)) && !q->wce;
	q->nslots = blk->queue_size;
	/* Each descriptor may cross a region boundary: twice the longest chain, and some. */
	q->iov_limit = 2 * blk->queue_size + 8;

	q->slots = calloc(q->nslots, sizeof(*q->slots));
	q->iov_pool = calloc((size_t)q->nslots * IOV_INITIAL, sizeof(*q->iov_pool));
	q->free_slots = calloc(q->nslots, sizeof(*q->free_slots));
	q->order = calloc(q->nslots, sizeof(*q->order));
	q->zero_buf = aligned_alloc(4096, ZERO_BUF_SIZE);
	int ret = 0;
	if (!q->slots || !q->iov_pool || !q->free_slots || !q->order || !q->zero_buf)
		ret = -ENOMEM;
	if (ret == 0) {
		memset(q->zero_buf, 0, ZERO_BUF_SIZE);
		for (unsigned int i = 0; i < q->nslots; i++) {
			q->slots[i].iov = q->iov_pool + (size_t)i * IOV_INITIAL;
			q->slots[i].iov_cap = IOV_INITIAL;
			/* Popped lowest first, which keeps a short test's slots predictable. */
			q->free_slots[i] = q->nslots - 1 - i;
		}
		q->nfree = q->nslots;
		if (blk->fd >= 0 && !blk->sync_io)
			ret = blk_queue_uring_init(q);
	}
	if (ret < 0) {
		vt_blk_queue_free(q);
		return ret;
	}
	*out = q;
	return 0;
}

void vt_blk_queue_free(struct vt_blk_queue *q)
{
	if (!q)
		return;
	if (q->uring) {
		bool notify;
		if (vt_blk_queue_drain(q, FREE_DRAIN_MS, &notify) < 0)
			vt_log(q->log, VT_LOG_ERROR,
			       "%s: %u I/O steps still in the kernel after %d ms; abandoned",
			       q->name, q->outstanding, FREE_DRAIN_MS);
		io_uring_queue_exit(&q->ring);
	}
	if (q->event_fd >= 0)
		close(q->event_fd);
	for (unsigned int i = 0; q->slots && i < q->nslots; i++)
		if (q->slots[i].iov_owned)
			free(q->slots[i].iov);
	free(q->slots);
	free(q->iov_pool);
	free(q->free_slots);
	free(q->order);
	free(q->zero_buf);
	free(q);
}
