/* SPDX-License-Identifier: MIT */
/*
 * A test device model for the vhost-user back-end: each buffer's readable bytes come back in its
 * writable part, every byte XORed with VU_ECHO_XOR, and the used length is what was written
 * (the smaller of the two parts). Counts what it did, per queue, for the tests to check.
 */
#ifndef VIRTUE_TESTS_VU_ECHO_H
#define VIRTUE_TESTS_VU_ECHO_H

#include <stdatomic.h>
#include <stdint.h>

#include <sys/uio.h>

#include <virtue/vhost_user_backend.h>
#include <virtue/virtqueue.h>

#define VU_ECHO_XOR	   0x5a
#define VU_ECHO_MAX_QUEUES 8

struct vu_echo {
	/*
	 * Set before serving: every hold_every-th buffer taken (counting from 1) is kept and never
	 * answered, not even by a drain, as by a back-end about to die with requests in flight
	 * (0: none). Only for a back-end that is killed, not stopped.
	 */
	unsigned int hold_every;
	_Atomic uint64_t starts, stops, buffers, bytes, held;
	_Atomic uint64_t features; /* what the last start() was given */
	_Atomic uint64_t queue_buffers[VU_ECHO_MAX_QUEUES];
};

/*
 * Posts one echo request on @vq: @in as two readable segments (split after @split bytes when it
 * is longer, so chains of more than one descriptor are exercised), then @out writable.
 */
static inline int vu_echo_post(struct vt_vq_drv *vq, uint8_t *in, uint32_t in_len, uint8_t *out,
			       uint32_t out_len, uint32_t split, void *token)
{
	struct iovec sg[3];
	unsigned int nr = 1;

	if (in_len > split) {
		sg[0] = (struct iovec){ in, split };
		sg[1] = (struct iovec){ in + split, in_len - split };
		nr = 2;
	} else {
		sg[0] = (struct iovec){ in, in_len };
	}
	sg[nr] = (struct iovec){ out, out_len };
	return vt_vq_drv_add(vq, sg, nr, 1, token);
}

/* Give as params.queue_ops with a struct vu_echo as params.opaque. */
extern const struct vt_vu_queue_ops vu_echo_ops;

#endif
