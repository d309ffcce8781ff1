/* SPDX-License-Identifier: MIT */
/*
 * The virtue CLI's virtio-blk plumbing: the configuration read from the back-end and decoded,
 * a request engine per queue, and completions collected with a bounded wait (notifications
 * enabled only while blocking, so a busy queue costs the back-end no eventfd writes).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <virtue/blk_driver.h>
#include <virtue/spec/virtio_config.h>

#include "cli.h"

int cli_blk_config(struct cli_device *d, uint64_t features, struct vt_blk_info *info)
{
	/*
	 * Up to write_zeroes_may_unmap and its padding: every field a feature this driver accepts
	 * puts there. Not the whole structure: a back-end answers a size it does not know with an
	 * empty reply (qemu-storage-daemon does), which breaks the connection.
	 */
	struct virtio_blk_config config;
	uint32_t len = offsetof(struct virtio_blk_config, max_secure_erase_sectors);

	memset(&config, 0, sizeof(config));
	int rc = vt_vu_frontend_config_read(d->fe, 0, &config, len);
	if (rc < 0) {
		cli_err("reading the configuration space: %s%s", strerror(-rc),
			rc == -ENOTSUP
			    ? " (the back-end does not offer the CONFIG protocol feature)"
			    : "");
		return rc;
	}
	/*
	 * qemu-storage-daemon offers SIZE_MAX and leaves size_max 0, which Linux reads as "no
	 * limit"; so does this tool (the decoder refuses it: no request could satisfy it).
	 */
	if ((features & VT_BIT(VIRTIO_BLK_F_SIZE_MAX)) && vt_le32_to_cpu(config.size_max) == 0) {
		features &= ~VT_BIT(VIRTIO_BLK_F_SIZE_MAX);
		vt_log(&d->log, VT_LOG_INFO,
		       "size_max is 0 although SIZE_MAX is offered: no limit");
	}
	rc = vt_blk_config_decode(&config, sizeof(config), features, info);
	if (rc < 0)
		cli_err("the back-end's virtio-blk configuration is invalid (a limit of 0, or a "
			"block size that is no power of two in 512..64K)");
	return rc;
}

int cli_blk_queue_open(struct cli_device *d, const struct vt_blk_info *info, unsigned int index,
		       unsigned int num, struct cli_blk_queue *q)
{
	memset(q, 0, sizeof(*q));
	q->index = index;
	int rc = vt_vu_frontend_queue_start(d->fe, index, num, 0);
	if (rc < 0) {
		cli_err("starting queue %u (%u entries): %s", index, num, strerror(-rc));
		return rc;
	}
	q->vq = vt_vu_frontend_vq(d->fe, index);
	struct vt_blk_driver_queue_params p = {
		.vq = q->vq,
		.num = num,
		.shm = d->shm,
		.info = info,
		.name = "virtue blk",
		.log = &d->log,
	};
	rc = vt_blk_driver_queue_new(&p, &q->engine);
	if (rc < 0) {
		q->engine = NULL;
		cli_err("request engine for queue %u: %s", index, strerror(-rc));
		return rc;
	}
	/* Notifications only while blocked in cli_blk_queue_reap. */
	vt_vq_drv_disable_cb(q->vq);
	return 0;
}

void cli_blk_queue_close(struct cli_blk_queue *q)
{
	vt_blk_driver_queue_free(q->engine);
	q->engine = NULL;
}

int cli_blk_queue_reap(struct cli_device *d, struct cli_blk_queue *q, struct vt_blk_completion *out,
		       unsigned int max, int timeout_ms)
{
	uint64_t deadline = cli_now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		int n = vt_blk_driver_queue_poll(q->engine, out, max);
		if (n != 0)
			return n;
		/* Re-enabling re-checks: a buffer used in between is seen here, not waited for. */
		if (vt_vq_drv_enable_cb(q->vq)) {
			vt_vq_drv_disable_cb(q->vq);
			continue;
		}
		uint64_t now = cli_now_ns();
		int left = now >= deadline ? 0 : (int)((deadline - now) / 1000000u);
		int rc = vt_vu_frontend_wait(d->fe, q->index, left);
		vt_vq_drv_disable_cb(q->vq);
		if (rc == -ETIMEDOUT) {
			/* A last look: the notification may have been suppressed. */
			n = vt_blk_driver_queue_poll(q->engine, out, max);
			return n != 0 ? n : -ETIMEDOUT;
		}
		if (rc < 0)
			return rc;
	}
}

const char *cli_blk_error(int rc)
{
	switch (rc) {
	case -ETIMEDOUT:
		return "the back-end stopped answering (no completion within the timeout)";
	case -EIO:
		return "the back-end reported the queue broken";
	case -EFAULT:
		return "the back-end faulted: it accessed memory that was not mapped for it";
	case -ECONNRESET:
		return "the back-end closed the connection";
	case -EPROTO:
		return "the back-end broke the virtqueue rules";
	default:
		return strerror(-rc);
	}
}
