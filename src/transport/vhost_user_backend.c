/* SPDX-License-Identifier: MIT */
/*
 * vhost-user back-end: the control loop. Receives a message, checks it against the codec's table,
 * checks the connection state the handler needs, runs the handler, answers (a reply, or a
 * REPLY_ACK status), and closes whatever fds the handler did not keep. Negotiation, config and
 * status live here; memory, IOTLB and rings in their own files.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "transport/vu_backend_impl.h"
#include "virtue/features.h"
#include "virtue/platform.h"

/*
 * Transport features the back-end implements for any device model. ACCESS_PLATFORM and
 * ORDER_PLATFORM are offered; whether the driver took them is asked of platform.h only.
 */
#define VU_PLATFORM_FEATURES                                                                       \
	(VT_BIT(VIRTIO_F_ACCESS_PLATFORM) | VT_BIT(VIRTIO_F_ORDER_PLATFORM)) /* offer */
#define VU_TRANSPORT_FEATURES                                                                      \
	(VT_BIT(VIRTIO_F_VERSION_1) | VT_BIT(VIRTIO_F_INDIRECT_DESC) |                             \
	 VT_BIT(VIRTIO_F_EVENT_IDX) | VT_BIT(VIRTIO_F_RING_PACKED) | VT_BIT(VIRTIO_F_IN_ORDER) |   \
	 VU_PLATFORM_FEATURES)

#define VU_PROTOCOL_FEATURES                                                                       \
	(VT_BIT(VHOST_USER_PROTOCOL_F_MQ) | VT_BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) |              \
	 VT_BIT(VHOST_USER_PROTOCOL_F_BACKEND_REQ) | VT_BIT(VHOST_USER_PROTOCOL_F_CONFIG) |        \
	 VT_BIT(VHOST_USER_PROTOCOL_F_RESET_DEVICE) |                                              \
	 VT_BIT(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) |                                            \
	 VT_BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS) | VT_BIT(VHOST_USER_PROTOCOL_F_STATUS))

/* ------------------------------------------------------------------ back-end channel */

int vu_backend_send(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	int rc = -ENOTCONN;

	msg->hdr.flags = VHOST_USER_VERSION;
	pthread_mutex_lock(&be->chan_lock);
	if (be->backend_fd >= 0)
		rc = vt_vu_msg_send(be->backend_fd, msg);
	pthread_mutex_unlock(&be->chan_lock);
	return rc;
}

static void set_backend_fd(struct vt_vhost_backend *be, int fd)
{
	pthread_mutex_lock(&be->chan_lock);
	if (be->backend_fd >= 0)
		close(be->backend_fd);
	be->backend_fd = fd;
	pthread_mutex_unlock(&be->chan_lock);
}

/* ------------------------------------------------------------------ negotiation */

static void reply_u64(struct vt_vu_msg *msg, uint64_t value)
{
	msg->payload.u64 = value;
	msg->hdr.size = sizeof(uint64_t);
}

static int get_features(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	reply_u64(msg, be->offered | VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES));
	return 0;
}

static int set_features(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	uint64_t wanted = msg->payload.u64;
	uint64_t virtio = wanted & ~VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES);
	char names[512];

	if (virtio & ~be->offered) {
		vt_features_str(be->params.device_id, virtio & ~be->offered, names, sizeof(names));
		vt_log(be->log, VT_LOG_ERROR, "%s: SET_FEATURES refused: not offered: %s", be->name,
		       names);
		return -EINVAL;
	}
	if (be->features_set && virtio == be->features &&
	    be->protocol_features_acked == (wanted != virtio))
		return 0; /* QEMU repeats SET_FEATURES on every start */
	if (vu_any_queue_running(be)) {
		vt_log(be->log, VT_LOG_ERROR,
		       "%s: SET_FEATURES refused: features change while rings run", be->name);
		return -EBUSY;
	}
	/* Run the negotiation through the device object: it enforces the spec's dependency rules.
	 */
	vt_device_set_status(be->dev, 0);
	vt_device_set_status(be->dev, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	vt_device_set_status(be->dev, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
	int rc = vt_device_set_driver_features(be->dev, virtio);
	if (rc == 0)
		rc = vt_device_set_status(be->dev, VIRTIO_CONFIG_S_ACKNOWLEDGE |
						       VIRTIO_CONFIG_S_DRIVER |
						       VIRTIO_CONFIG_S_FEATURES_OK);
	if (rc == 0 && !(vt_device_status(be->dev) & VIRTIO_CONFIG_S_FEATURES_OK))
		rc = -EINVAL; /* the device object logged the rule broken */
	if (rc < 0) {
		be->features_set = false;
		be->features = 0;
		return rc;
	}
	be->features = virtio;
	be->features_set = true;
	be->protocol_features_acked = wanted != virtio;
	vt_features_str(be->params.device_id, virtio, names, sizeof(names));
	vt_log(be->log, VT_LOG_INFO, "%s: negotiated %s", be->name, names);
	return 0;
}

static int get_protocol_features(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	reply_u64(msg, be->protocol_offered);
	return 0;
}

static int set_protocol_features(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	if (msg->payload.u64 & ~be->protocol_offered) {
		vt_log(be->log, VT_LOG_ERROR,
		       "%s: SET_PROTOCOL_FEATURES refused: 0x%llx not offered", be->name,
		       (unsigned long long)(msg->payload.u64 & ~be->protocol_offered));
		return -EINVAL;
	}
	be->protocol = msg->payload.u64;
	return 0;
}

static int set_owner(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	be->owner = true;
	return 0;
}

/* Every ring stopped with its requests completed, negotiation forgotten; memory stays mapped. */
static void reset_device(struct vt_vhost_backend *be)
{
	for (unsigned int i = 0; i < be->params.num_queues; i++)
		vu_queue_reset(&be->queues[i]);
	be->features_set = false;
	be->features = 0;
	be->protocol_features_acked = false;
	be->status = 0;
	vt_device_set_status(be->dev, 0);
}

static int reset_owner(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	reset_device(be);
	return 0;
}

static int reset_device_msg(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	if (!vu_has_protocol(be, VHOST_USER_PROTOCOL_F_RESET_DEVICE))
		return -ENOTSUP;
	reset_device(be);
	return 0;
}

static int get_queue_num(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	reply_u64(msg, be->params.num_queues);
	return 0;
}

static int get_max_mem_slots(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	reply_u64(msg, VT_MEMTABLE_MAX_REGIONS);
	return 0;
}

static int set_backend_req_fd(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	if (!vu_has_protocol(be, VHOST_USER_PROTOCOL_F_BACKEND_REQ))
		return -ENOTSUP;
	/* A front-end that stops reading must not stall an I/O thread for long. */
	struct timeval timeout = { .tv_sec = 1 };
	setsockopt(msg->fds[0], SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
	set_backend_fd(be, msg->fds[0]);
	msg->fds[0] = -1;
	return 0;
}

/* ------------------------------------------------------------------ config and status */

static int get_config(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	struct vhost_user_config *c = &msg->payload.config;
	uint32_t have = vt_device_config_size(be->dev);

	if (!vu_has_protocol(be, VHOST_USER_PROTOCOL_F_CONFIG))
		return -ENOTSUP;
	if (c->offset > VHOST_USER_MAX_CONFIG_SIZE ||
	    c->size > VHOST_USER_MAX_CONFIG_SIZE - c->offset) {
		vt_log(be->log, VT_LOG_ERROR, "%s: GET_CONFIG refused: offset %u size %u", be->name,
		       c->offset, c->size);
		return -EINVAL;
	}
	if (be->params.config_read) {
		uint8_t current[VHOST_USER_MAX_CONFIG_SIZE];
		be->params.config_read(be->params.opaque, current, have);
		vt_device_config_update(be->dev, 0, current, have);
	}
	/* Bytes past the model's config read as zero: a front-end may know newer fields. */
	memset(c->region, 0, c->size);
	if (c->offset < have) {
		uint32_t n = c->size < have - c->offset ? c->size : have - c->offset;
		vt_device_config_read(be->dev, c->offset, c->region, n);
	}
	msg->hdr.size = VHOST_USER_CONFIG_HDR_SIZE + c->size;
	vt_log(be->log, VT_LOG_DEBUG, "%s: GET_CONFIG offset %u size %u", be->name, c->offset,
	       c->size);
	return 0;
}

static int set_config(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	const struct vhost_user_config *c = &msg->payload.config;

	if (!vu_has_protocol(be, VHOST_USER_PROTOCOL_F_CONFIG))
		return -ENOTSUP;
	if (c->flags != VHOST_SET_CONFIG_TYPE_FRONTEND &&
	    c->flags != VHOST_SET_CONFIG_TYPE_MIGRATION)
		return -EINVAL;
	int rc = vt_device_config_write(be->dev, c->offset, c->region, c->size);
	if (rc < 0)
		vt_log(be->log, VT_LOG_ERROR, "%s: SET_CONFIG offset %u size %u refused: %s",
		       be->name, c->offset, c->size, strerror(-rc));
	return rc;
}

static int set_status(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	if (!vu_has_protocol(be, VHOST_USER_PROTOCOL_F_STATUS))
		return -ENOTSUP;
	if (msg->payload.u64 > 0xff)
		return -EINVAL;
	uint8_t status = (uint8_t)msg->payload.u64;
	/*
	 * The front-end reports its driver's progress; rings are governed by the ring messages
	 * (QEMU sends status 0 before it stops the rings). FEATURES_OK only sticks if SET_FEATURES
	 * did.
	 */
	if ((status & VIRTIO_CONFIG_S_FEATURES_OK) && !be->features_set)
		status &= (uint8_t)~VIRTIO_CONFIG_S_FEATURES_OK;
	be->status = status;
	return 0;
}

static int get_status(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	if (!vu_has_protocol(be, VHOST_USER_PROTOCOL_F_STATUS))
		return -EPROTO;
	uint8_t status = be->status;
	if (vt_device_is_broken(be->dev))
		status |= VIRTIO_CONFIG_S_NEEDS_RESET;
	reply_u64(msg, status);
	return 0;
}

/* ------------------------------------------------------------------ dispatch */

struct vu_handler {
	int (*fn)(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
	bool needs_owner; /* state-changing requests come after SET_OWNER */
};

static const struct vu_handler handlers[VHOST_USER_REQUEST__COUNT] = {
	[VHOST_USER_GET_FEATURES] = { get_features, false },
	[VHOST_USER_SET_FEATURES] = { set_features, true },
	[VHOST_USER_SET_OWNER] = { set_owner, false },
	[VHOST_USER_RESET_OWNER] = { reset_owner, false },
	[VHOST_USER_SET_MEM_TABLE] = { vu_mem_set_table, true },
	[VHOST_USER_SET_VRING_NUM] = { vu_set_vring_num, true },
	[VHOST_USER_SET_VRING_ADDR] = { vu_set_vring_addr, true },
	[VHOST_USER_SET_VRING_BASE] = { vu_set_vring_base, true },
	[VHOST_USER_GET_VRING_BASE] = { vu_get_vring_base, true },
	[VHOST_USER_SET_VRING_KICK] = { vu_set_vring_fd, true },
	[VHOST_USER_SET_VRING_CALL] = { vu_set_vring_fd, true },
	[VHOST_USER_SET_VRING_ERR] = { vu_set_vring_fd, true },
	[VHOST_USER_GET_PROTOCOL_FEATURES] = { get_protocol_features, false },
	[VHOST_USER_SET_PROTOCOL_FEATURES] = { set_protocol_features, false },
	[VHOST_USER_GET_QUEUE_NUM] = { get_queue_num, false },
	[VHOST_USER_SET_VRING_ENABLE] = { vu_set_vring_enable, true },
	[VHOST_USER_SET_BACKEND_REQ_FD] = { set_backend_req_fd, false },
	[VHOST_USER_IOTLB_MSG] = { vu_iotlb_msg, true },
	[VHOST_USER_GET_CONFIG] = { get_config, false },
	[VHOST_USER_SET_CONFIG] = { set_config, true },
	[VHOST_USER_GET_INFLIGHT_FD] = { vu_get_inflight_fd, true },
	[VHOST_USER_SET_INFLIGHT_FD] = { vu_set_inflight_fd, true },
	[VHOST_USER_RESET_DEVICE] = { reset_device_msg, false },
	[VHOST_USER_GET_MAX_MEM_SLOTS] = { get_max_mem_slots, false },
	[VHOST_USER_ADD_MEM_REG] = { vu_mem_add_region, true },
	[VHOST_USER_REM_MEM_REG] = { vu_mem_rem_region, true },
	[VHOST_USER_SET_STATUS] = { set_status, true },
	[VHOST_USER_GET_STATUS] = { get_status, false },
};

static int send_reply(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	msg->hdr.flags = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;
	msg->nfds = 0;
	if (be->reply_fd >= 0) {
		msg->fds[0] = be->reply_fd;
		msg->nfds = 1;
	}
	int rc = vt_vu_msg_send(be->sock, msg);
	if (be->reply_fd >= 0) {
		close(be->reply_fd);
		be->reply_fd = -1;
		msg->nfds = 0;
	}
	if (rc < 0)
		vt_log(be->log, VT_LOG_ERROR, "%s: reply to %s not sent: %s", be->name,
		       vt_vu_request_name(msg->hdr.request), strerror(-rc));
	return rc < 0 ? VU_CLOSE : VU_OK;
}

/* Control-thread state that vt_vhost_backend_get_stats reports from other threads. */
static void publish_stats(struct vt_vhost_backend *be)
{
	atomic_store_explicit(&be->stats_protocol, be->protocol, memory_order_relaxed);
	atomic_store_explicit(&be->stats_mem_regions, be->nregions, memory_order_relaxed);
}

static int dispatch(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	const struct vt_vu_request_info *info = vt_vu_request_info(msg->hdr.request);
	const char *name = vt_vu_request_name(msg->hdr.request);
	bool need_ack = (msg->hdr.flags & VHOST_USER_NEED_REPLY) != 0;
	const char *why = NULL;
	int rc;

	atomic_fetch_add_explicit(&be->messages, 1, memory_order_relaxed);
	vt_log(be->log, VT_LOG_DEBUG, "%s: %s flags 0x%x size %u fds %u", be->name, name,
	       msg->hdr.flags, msg->hdr.size, msg->nfds);
	if (vt_vu_msg_check(msg, &why) < 0) {
		rc = -EPROTO;
	} else if (handlers[msg->hdr.request].needs_owner && !be->owner) {
		why = "before SET_OWNER";
		rc = -EPROTO;
	} else {
		rc = handlers[msg->hdr.request].fn(be, msg);
		if (rc < 0)
			why = strerror(-rc);
		publish_stats(be);
	}
	vt_vu_msg_close_fds(msg);
	if (rc < 0 && be->reply_fd >= 0) {
		close(be->reply_fd);
		be->reply_fd = -1;
	}
	if (rc == VU_CLOSE) {
		atomic_fetch_add_explicit(&be->bad_messages, 1, memory_order_relaxed);
		return VU_CLOSE;
	}
	if (rc < 0) {
		atomic_fetch_add_explicit(&be->bad_messages, 1, memory_order_relaxed);
		vt_log(be->log, VT_LOG_ERROR, "%s: %s (request %u, %u bytes) refused: %s", be->name,
		       name, msg->hdr.request, msg->hdr.size, why);
	}
	if (info && info->has_reply) {
		/* No reply format carries an error: the front-end would wait forever, so close. */
		if (rc < 0)
			return VU_CLOSE;
		return send_reply(be, msg);
	}
	if (need_ack && vu_has_protocol(be, VHOST_USER_PROTOCOL_F_REPLY_ACK)) {
		reply_u64(msg, rc < 0 ? 1 : 0);
		return send_reply(be, msg);
	}
	return VU_OK;
}

/* ------------------------------------------------------------------ connection */

static void disconnect(struct vt_vhost_backend *be)
{
	reset_device(be);
	vu_mem_unmap_all(be);
	vu_inflight_unmap(be); /* the front-end keeps it and gives it to the next connection */
	set_backend_fd(be, -1);
	/* The I/O threads look at every queue of theirs on a wake-up: not while it is rewritten. */
	vu_quiesce(be);
	for (unsigned int i = 0; i < be->params.num_queues; i++)
		vu_queue_init(be, &be->queues[i], i);
	vu_unquiesce(be);
	be->owner = false;
	be->protocol = 0;
	publish_stats(be);
}

int vt_vhost_backend_serve(struct vt_vhost_backend *be, int fd)
{
	struct vt_vu_msg *msg = calloc(1, sizeof(*msg));
	int rc = 0;

	if (!msg) {
		close(fd);
		return -ENOMEM;
	}
	be->sock = fd;
	vt_log(be->log, VT_LOG_INFO, "%s: front-end connected", be->name);
	for (;;) {
		struct pollfd pfd[2] = { { .fd = fd, .events = POLLIN },
					 { .fd = be->stop_fd, .events = POLLIN } };
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			break;
		}
		if (pfd[1].revents & POLLIN) {
			uint64_t v;
			if (read(be->stop_fd, &v, sizeof(v)) < 0) {
				/* Another thread consumed it: the stop still stands. */
			}
			rc = -ECANCELED;
			break;
		}
		rc = vt_vu_msg_recv(fd, msg);
		if (rc == -ECONNRESET) {
			rc = 0;
			vt_log(be->log, VT_LOG_INFO, "%s: front-end disconnected", be->name);
			break;
		}
		if (rc < 0) {
			vt_log(be->log, VT_LOG_ERROR,
			       "%s: connection closed: message %u (flags 0x%x, %u bytes) "
			       "unreadable: %s",
			       be->name, msg->hdr.request, msg->hdr.flags, msg->hdr.size,
			       rc == -EPROTO ? "truncated, wrong version or oversized"
					     : strerror(-rc));
			atomic_fetch_add_explicit(&be->bad_messages, 1, memory_order_relaxed);
			rc = -EPROTO;
			break;
		}
		if (dispatch(be, msg) == VU_CLOSE) {
			vt_log(be->log, VT_LOG_ERROR, "%s: connection closed after %s", be->name,
			       vt_vu_request_name(msg->hdr.request));
			rc = -EPROTO;
			break;
		}
	}
	disconnect(be);
	close(fd);
	be->sock = -1;
	free(msg);
	return rc;
}

void vt_vhost_backend_stop(struct vt_vhost_backend *be)
{
	uint64_t one = 1;
	ssize_t n = write(be->stop_fd, &one, sizeof(one));
	(void)n; /* an eventfd counter only overflows after 2^64 - 1 stops */
}

/* ------------------------------------------------------------------ lifetime */

/* Bits 24..41: the transport's, whatever the model claims. */
#define VU_TRANSPORT_BITS (VT_BIT(VIRTIO_TRANSPORT_F_END) - VT_BIT(VIRTIO_TRANSPORT_F_START))

/* SET_CONFIG goes through the device object (range checks), then to the model. */
static int forward_config_write(void *opaque, uint32_t offset, const void *buf, uint32_t len)
{
	struct vt_vhost_backend *be = opaque;

	return be->params.config_write(be->params.opaque, offset, buf, len);
}

static int forward_features_ok(void *opaque, uint64_t negotiated)
{
	struct vt_vhost_backend *be = opaque;

	return be->params.features_ok ? be->params.features_ok(be->params.opaque, negotiated) : 0;
}

static const struct vt_device_ops forwarding_ops = {
	.features_ok = forward_features_ok,
	.config_write = forward_config_write,
};
static const struct vt_device_ops read_only_config_ops = { .features_ok = forward_features_ok };

int vt_vhost_backend_new(const struct vt_vhost_backend_params *params,
			 struct vt_vhost_backend **out)
{
	if (!params->queue_ops || !params->queue_ops->start || !params->queue_ops->poll ||
	    !params->queue_ops->drain || !params->queue_ops->stop || params->num_queues == 0 ||
	    params->num_queues > VU_MAX_QUEUES || params->max_queue_size == 0 ||
	    params->max_queue_size > 32768 || params->config_size > VHOST_USER_MAX_CONFIG_SIZE)
		return -EINVAL;
	struct vt_vhost_backend *be = calloc(1, sizeof(*be));
	if (!be)
		return -ENOMEM;
	be->params = *params;
	snprintf(be->name, sizeof(be->name), "%s", params->name ? params->name : "vhost-user");
	be->params.name = be->name;
	be->log = params->log;
	be->sock = -1;
	be->backend_fd = -1;
	be->stop_fd = -1;
	be->reply_fd = -1;
	pthread_mutex_init(&be->chan_lock, NULL);
	be->offered = (params->device_features & ~VU_TRANSPORT_BITS) |
		      (VU_TRANSPORT_FEATURES & ~params->transport_features_excluded);
	be->protocol_offered = VU_PROTOCOL_FEATURES;
	be->nworkers = params->num_threads ? params->num_threads : 1;
	if (be->nworkers > VU_MAX_THREADS)
		be->nworkers = VU_MAX_THREADS;
	if (be->nworkers > params->num_queues)
		be->nworkers = params->num_queues;

	int rc = -ENOMEM;
	struct vt_device_params dp = {
		.device_id = params->device_id,
		.name = be->name,
		.offered = be->offered,
		.config = params->config,
		.config_size = params->config_size,
		.opaque = be,
		.log = params->log,
	};
	dp.ops = params->config_write ? &forwarding_ops : &read_only_config_ops;
	be->mem = vt_memtable_new(params->log);
	be->regions = calloc(VT_MEMTABLE_MAX_REGIONS, sizeof(*be->regions));
	struct vt_iotlb_params ip = { .full_policy = VT_IOTLB_FULL_EVICT, .log = params->log };
	if (!be->mem || !be->regions || vt_iotlb_new(&ip, &be->iotlb) < 0)
		goto fail;
	be->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (be->stop_fd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = vt_device_new(&dp, &be->dev);
	if (rc < 0)
		goto fail;
	for (unsigned int i = 0; i < params->num_queues; i++)
		vu_queue_init(be, &be->queues[i], i);
	rc = vu_workers_start(be);
	if (rc < 0)
		goto fail;
	*out = be;
	return 0;
fail:
	vt_vhost_backend_free(be);
	return rc;
}

void vt_vhost_backend_free(struct vt_vhost_backend *be)
{
	if (!be)
		return;
	if (be->nregions)
		vu_mem_unmap_all(be);
	vu_workers_stop(be);
	set_backend_fd(be, -1);
	vu_inflight_unmap(be);
	if (be->dev)
		vt_device_free(be->dev);
	if (be->iotlb)
		vt_iotlb_free(be->iotlb);
	if (be->mem)
		vt_memtable_free(be->mem);
	free(be->regions);
	if (be->stop_fd >= 0)
		close(be->stop_fd);
	pthread_mutex_destroy(&be->chan_lock);
	free(be);
}

void vt_vhost_backend_get_stats(struct vt_vhost_backend *be, struct vt_vhost_backend_stats *stats)
{
	struct vt_iotlb_stats is;

	vt_iotlb_get_stats(be->iotlb, &is);
	*stats = (struct vt_vhost_backend_stats){
		.messages = atomic_load_explicit(&be->messages, memory_order_relaxed),
		.bad_messages = atomic_load_explicit(&be->bad_messages, memory_order_relaxed),
		.iotlb_updates = atomic_load_explicit(&be->iotlb_updates, memory_order_relaxed),
		.iotlb_invalidates =
		    atomic_load_explicit(&be->iotlb_invalidates, memory_order_relaxed),
		.iotlb_hits = is.hits,
		.iotlb_misses = is.misses,
		.features = vt_device_features(be->dev),
		.protocol_features =
		    atomic_load_explicit(&be->stats_protocol, memory_order_relaxed),
		.mem_regions = atomic_load_explicit(&be->stats_mem_regions, memory_order_relaxed),
	};
}
