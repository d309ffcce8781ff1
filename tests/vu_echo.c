/* SPDX-License-Identifier: MIT */
/* The echo device model (vu_echo.h). */
#include "vu_echo.h"

#include <errno.h>
#include <stdlib.h>

#define ECHO_IOV_MAX 64

struct echo_queue {
	struct vu_echo *echo;
	unsigned int index;
	struct vt_vq_dev *vq;
	struct iovec iov[ECHO_IOV_MAX];
	uint64_t taken;
	struct vt_vq_chain *held; /* hold_every: buffers kept (at most the queue size) */
	unsigned int nheld;
};

static int echo_start(void *opaque, unsigned int index, struct vt_vq_dev *vq, uint64_t features,
		      void **engine)
{
	struct vu_echo *echo = opaque;
	struct echo_queue *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	q->echo = echo;
	q->index = index;
	q->vq = vq;
	if (echo->hold_every) {
		q->held = calloc(32768, sizeof(*q->held));
		if (!q->held) {
			free(q);
			return -ENOMEM;
		}
	}
	atomic_store(&echo->features, features);
	atomic_fetch_add(&echo->starts, 1);
	*engine = q;
	return 0;
}

/* Copies the readable bytes, XORed, into the writable part: the bytes written. */
static uint32_t echo_one(struct echo_queue *q, const struct vt_vq_chain *c)
{
	const struct iovec *in = q->iov, *out = q->iov + c->nreadable;
	unsigned int ii = 0, oi = 0;
	size_t io = 0, oo = 0;
	uint32_t written = 0;

	while (ii < c->nreadable && oi < c->nwritable) {
		if (io == in[ii].iov_len) {
			ii++, io = 0;
			continue;
		}
		if (oo == out[oi].iov_len) {
			oi++, oo = 0;
			continue;
		}
		((uint8_t *)out[oi].iov_base)[oo++] =
		    ((const uint8_t *)in[ii].iov_base)[io++] ^ VU_ECHO_XOR;
		written++;
	}
	return written;
}

static int echo_poll(void *engine, bool *notify)
{
	struct echo_queue *q = engine;
	int done = 0, rc = 0;

	for (;;) {
		vt_vq_dev_disable_notify(q->vq);
		for (;;) {
			struct vt_vq_chain c;
			rc = vt_vq_dev_pop(q->vq, &c, q->iov, ECHO_IOV_MAX);
			if (rc < 0)
				break;
			if (q->held && ++q->taken % q->echo->hold_every == 0) {
				q->held[q->nheld++] = c;
				atomic_fetch_add(&q->echo->held, 1);
				continue;
			}
			uint32_t written = echo_one(q, &c);
			rc = vt_vq_dev_push(q->vq, &c, written);
			if (rc < 0)
				break;
			done++;
			atomic_fetch_add(&q->echo->buffers, 1);
			atomic_fetch_add(&q->echo->bytes, written);
			if (q->index < VU_ECHO_MAX_QUEUES)
				atomic_fetch_add(&q->echo->queue_buffers[q->index], 1);
		}
		if (rc != -EAGAIN || !vt_vq_dev_enable_notify(q->vq))
			break;
	}
	*notify = vt_vq_dev_flush(q->vq);
	if (rc == -EAGAIN)
		return done;
	return rc == -EFAULT ? -EFAULT : -EPROTO;
}

static int echo_drain(void *engine, bool *notify)
{
	struct echo_queue *q = engine;

	/* Every buffer is pushed as soon as it is popped, but the held ones, never. */
	*notify = vt_vq_dev_flush(q->vq);
	return 0;
}

static void echo_stop(void *engine)
{
	struct echo_queue *q = engine;

	atomic_fetch_add(&q->echo->stops, 1);
	free(q->held);
	free(q);
}

const struct vt_vu_queue_ops vu_echo_ops = {
	.start = echo_start,
	.poll = echo_poll,
	.drain = echo_drain,
	.stop = echo_stop,
};
