/* SPDX-License-Identifier: MIT */
/*
 * vhost-user front-end, queues: a driver-half ring per queue (ring memory from the DMA API), the
 * ring messages that hand it to the back-end, kick / call / error eventfds, bounded waits, and
 * the stop and reset paths that get every posted buffer back.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "transport/vhost_user_frontend_impl.h"
#include "virtue/spec/virtio_config.h"

void fe_queues_init(struct vt_vu_frontend *fe)
{
	for (unsigned int i = 0; i < FE_MAX_QUEUES; i++)
		fe->queues[i] = (struct fe_queue){ .kick_fd = -1, .call_fd = -1, .err_fd = -1 };
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void queue_free(struct fe_queue *q)
{
	if (q->vq)
		vt_vq_drv_free(q->vq);
	q->vq = NULL;
	close_fd(&q->kick_fd);
	close_fd(&q->call_fd);
	close_fd(&q->err_fd);
	q->running = false;
	q->num = 0;
}

static int send_vring_fd(struct vt_vu_frontend *fe, uint32_t request, unsigned int index, int fd)
{
	struct vt_vu_msg msg = {
		.hdr = { .request = request, .size = sizeof(uint64_t) },
		.fds = { fd },
		.nfds = 1,
	};
	msg.payload.u64 = index;
	return fe_request(fe, &msg, true);
}

static bool vring_enable_used(const struct vt_vu_frontend *fe)
{
	/* With VHOST_USER_F_PROTOCOL_FEATURES a ring starts disabled: SET_VRING_ENABLE rules. */
	return (fe->offered_raw & VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES)) != 0;
}

/* ------------------------------------------------------------------ inflight buffer */

static int send_inflight(struct vt_vu_frontend *fe)
{
	struct vt_vu_msg msg = {
		.hdr = { .request = VHOST_USER_SET_INFLIGHT_FD,
			 .size = sizeof(struct vhost_user_inflight) },
		.fds = { fe->inflight_fd },
		.nfds = 1,
	};
	msg.payload.inflight = fe->inflight;
	return fe_request(fe, &msg, true);
}

/*
 * The back-end sizes and creates the buffer (GET_INFLIGHT_FD, zero-filled: nothing in flight);
 * the front-end only keeps it, for the next back-end. Never read here: the layout is the
 * back-end's business.
 */
static int inflight_setup(struct vt_vu_frontend *fe, unsigned int num)
{
	if (!fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD))
		return 0;
	if (fe->inflight_fd >= 0) {
		if (num == fe->inflight.queue_size)
			return 0;
		vt_log(fe->log, VT_LOG_ERROR,
		       "%s: INFLIGHT_SHMFD: every queue must have %u entries, not %u", fe->name,
		       fe->inflight.queue_size, num);
		return -EINVAL;
	}
	struct vt_vu_msg msg = {
		.hdr = { .request = VHOST_USER_GET_INFLIGHT_FD,
			 .size = sizeof(struct vhost_user_inflight) },
	};
	msg.payload.inflight = (struct vhost_user_inflight){ .num_queues = (uint16_t)fe->num_queues,
							     .queue_size = (uint16_t)num };
	int fd = -1;
	int rc = fe_call_fd(fe, &msg, sizeof(struct vhost_user_inflight), &fd);
	if (rc < 0)
		return rc;
	const struct vhost_user_inflight *in = &msg.payload.inflight;
	if (in->mmap_size == 0 || in->num_queues != fe->num_queues || in->queue_size != num) {
		vt_log(
		    fe->log, VT_LOG_ERROR,
		    "%s: GET_INFLIGHT_FD answered %llu bytes for %u queues of %u, asked %u of %u",
		    fe->name, (unsigned long long)in->mmap_size, in->num_queues, in->queue_size,
		    fe->num_queues, num);
		close(fd);
		return -EPROTO;
	}
	fe->inflight = *in;
	fe->inflight_fd = fd;
	rc = send_inflight(fe);
	if (rc < 0)
		fe_inflight_free(fe);
	return rc;
}

void fe_inflight_free(struct vt_vu_frontend *fe)
{
	close_fd(&fe->inflight_fd);
	fe->inflight = (struct vhost_user_inflight){ 0 };
}

/* ------------------------------------------------------------------ queues */

/* Hands queue @index to the back-end, resuming at @base (SET_VRING_BASE). */
static int queue_announce(struct vt_vu_frontend *fe, unsigned int index, uint32_t base)
{
	struct fe_queue *q = &fe->queues[index];
	uint64_t desc, driver, device, ua_desc, ua_driver, ua_device;

	vt_vq_drv_addrs(q->vq, &desc, &driver, &device);
	int rc = fe_ring_addr(fe, desc, 1, &ua_desc);
	if (rc == 0)
		rc = fe_ring_addr(fe, driver, 1, &ua_driver);
	if (rc == 0)
		rc = fe_ring_addr(fe, device, 1, &ua_device);
	if (rc < 0) {
		vt_log(fe->log, VT_LOG_ERROR, "%s q%u: ring outside the shared memory", fe->name,
		       index);
		return rc;
	}
	rc = fe_send_state(fe, VHOST_USER_SET_VRING_NUM, index, q->num, true);
	if (rc == 0)
		rc = fe_send_state(fe, VHOST_USER_SET_VRING_BASE, index, base, true);
	if (rc == 0) {
		struct vt_vu_msg msg = {
			.hdr = { .request = VHOST_USER_SET_VRING_ADDR,
				 .size = sizeof(struct vhost_vring_addr) },
		};
		msg.payload.addr = (struct vhost_vring_addr){
			.index = index,
			.desc_user_addr = ua_desc,
			.avail_user_addr = ua_driver,
			.used_user_addr = ua_device,
		};
		rc = fe_request(fe, &msg, true);
	}
	/* Call and error fds first: the back-end starts the ring when the kick fd arrives. */
	if (rc == 0)
		rc = send_vring_fd(fe, VHOST_USER_SET_VRING_CALL, index, q->call_fd);
	if (rc == 0)
		rc = send_vring_fd(fe, VHOST_USER_SET_VRING_ERR, index, q->err_fd);
	if (rc == 0)
		rc = send_vring_fd(fe, VHOST_USER_SET_VRING_KICK, index, q->kick_fd);
	if (rc == 0)
		q->running = true;
	if (rc == 0 && vring_enable_used(fe))
		rc = fe_send_state(fe, VHOST_USER_SET_VRING_ENABLE, index, 1, true);
	return rc;
}

int fe_queues_resume(struct vt_vu_frontend *fe)
{
	uint64_t one = 1;
	int rc = fe->inflight_fd >= 0 ? send_inflight(fe) : 0;

	for (unsigned int i = 0; rc == 0 && i < FE_MAX_QUEUES; i++) {
		struct fe_queue *q = &fe->queues[i];
		if (!q->vq || !q->running)
			continue;
		uint32_t base;
		rc = vt_vq_drv_rebase(q->vq, &base);
		if (rc < 0) {
			vt_log(fe->log, VT_LOG_ERROR, "%s q%u: cannot resume the ring: %s",
			       fe->name, i,
			       rc == -EBUSY ? "used buffers not collected" : strerror(-rc));
			break;
		}
		/* Still running if this fails half way: a later attempt hands it over again. */
		rc = queue_announce(fe, i, base);
		/* Whatever the ring holds now is the new back-end's to take. */
		if (rc == 0 && write(q->kick_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			rc = -errno;
	}
	return rc;
}

int vt_vu_frontend_queue_start(struct vt_vu_frontend *fe, unsigned int index, unsigned int num,
			       unsigned int indirect_max)
{
	char name[96];
	int rc;

	if (!fe->dma || index >= fe->num_queues || num == 0 || num > 32768)
		return -EINVAL;
	struct fe_queue *q = &fe->queues[index];
	if (q->vq)
		return -EBUSY;
	snprintf(name, sizeof(name), "%s q%u", fe->name, index);
	struct vt_vq_drv_params vp = {
		.num = num,
		.features = fe->features,
		.dma = fe->dma,
		.indirect_max = indirect_max,
		.name = name,
		.log = fe->log,
	};
	rc = vt_vq_drv_new(&vp, &q->vq);
	if (rc < 0) {
		vt_log(fe->log, VT_LOG_ERROR, "%s: ring of %u: %s", name, num, strerror(-rc));
		return rc;
	}
	q->num = num;
	q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->err_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->kick_fd < 0 || q->call_fd < 0 || q->err_fd < 0) {
		rc = -errno;
		goto fail;
	}

	bool packed = (fe->features & VT_BIT(VIRTIO_F_RING_PACKED)) != 0;
	rc = inflight_setup(fe, num);
	if (rc == 0)
		rc = queue_announce(fe, index, packed ? VT_VQ_PACKED_START : 0);
	if (rc < 0)
		goto fail;
	return 0;
fail:
	if (q->running)
		vt_vu_frontend_queue_stop(fe, index, NULL);
	queue_free(q);
	return rc;
}

int vt_vu_frontend_queue_stop(struct vt_vu_frontend *fe, unsigned int index, uint32_t *base)
{
	if (index >= fe->num_queues || !fe->queues[index].vq)
		return -EINVAL;
	struct fe_queue *q = &fe->queues[index];
	if (!q->running)
		return 0;
	q->running = false;
	int rc = vring_enable_used(fe)
		     ? fe_send_state(fe, VHOST_USER_SET_VRING_ENABLE, index, 0, true)
		     : 0;
	if (rc < 0 && fe->broken)
		return rc;
	/* GET_VRING_BASE: when it answers, the back-end has stopped the ring. */
	struct vt_vu_msg msg = {
		.hdr = { .request = VHOST_USER_GET_VRING_BASE,
			 .size = sizeof(struct vhost_vring_state) },
	};
	msg.payload.state.index = index;
	rc = fe_call(fe, &msg, sizeof(struct vhost_vring_state));
	if (rc == 0 && msg.payload.state.index != index) {
		vt_log(fe->log, VT_LOG_ERROR, "%s: GET_VRING_BASE answered for queue %u, asked %u",
		       fe->name, msg.payload.state.index, index);
		rc = -EPROTO;
	}
	if (rc == 0 && base)
		*base = msg.payload.state.num;
	return rc;
}

void fe_queues_teardown(struct vt_vu_frontend *fe, void (*release)(void *opaque, void *token),
			void *opaque)
{
	for (unsigned int i = 0; i < FE_MAX_QUEUES; i++) {
		struct fe_queue *q = &fe->queues[i];
		if (!q->vq) {
			queue_free(q);
			continue;
		}
		vt_vu_frontend_queue_stop(fe, i, NULL);
		/* Used or not, every buffer still posted comes back unmapped. */
		void *token;
		while ((token = vt_vq_drv_detach_unused(q->vq)))
			if (release)
				release(opaque, token);
		queue_free(q);
	}
	/* The rings start over: so does what was in flight (a reset device has nothing). */
	fe_inflight_free(fe);
}

struct vt_vq_drv *vt_vu_frontend_vq(struct vt_vu_frontend *fe, unsigned int index)
{
	return index < FE_MAX_QUEUES ? fe->queues[index].vq : NULL;
}

int vt_vu_frontend_kick(struct vt_vu_frontend *fe, unsigned int index)
{
	uint64_t one = 1;

	if (index >= FE_MAX_QUEUES || !fe->queues[index].running)
		return -EINVAL;
	struct fe_queue *q = &fe->queues[index];
	if (atomic_load_explicit(&fe->acks_pending, memory_order_relaxed)) {
		/* The UPDATEs for these buffers are processed before the back-end sees them. */
		pthread_mutex_lock(&fe->io_lock);
		int rc = fe_collect_acks_locked(fe);
		pthread_mutex_unlock(&fe->io_lock);
		if (rc < 0)
			return rc;
	}
	if (!vt_vq_drv_kick_prepare(q->vq))
		return 0;
	/* The eventfd write orders the ring writes before the back-end's read (its epoll). */
	if (write(q->kick_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int vt_vu_frontend_wait(struct vt_vu_frontend *fe, unsigned int index, int timeout_ms)
{
	if (index >= FE_MAX_QUEUES || !fe->queues[index].vq)
		return -EINVAL;
	struct fe_queue *q = &fe->queues[index];
	uint64_t deadline = now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);

	for (;;) {
		struct pollfd pfd[4] = {
			{ .fd = q->call_fd, .events = POLLIN },
			{ .fd = q->err_fd, .events = POLLIN },
			{ .fd = fe->fault_fd, .events = POLLIN },
			/* Hang-up only: replies on the socket belong to whoever sent the request.
			 */
			{ .fd = fe->sock, .events = POLLRDHUP },
		};
		uint64_t now = now_ms();
		int left = now >= deadline ? 0 : (int)(deadline - now);
		int n = poll(pfd, 4, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (pfd[0].revents & POLLIN) {
			uint64_t v;
			if (read(q->call_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				return -errno;
			return 0;
		}
		if (pfd[1].revents & POLLIN)
			return -EIO;
		if (pfd[2].revents & POLLIN)
			return -EFAULT;
		if (pfd[3].revents & (POLLRDHUP | POLLHUP | POLLERR))
			return -ECONNRESET;
		if (n == 0 || left == 0)
			return -ETIMEDOUT;
	}
}
