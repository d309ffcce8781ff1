/* SPDX-License-Identifier: MIT */
/*
 * vhost-user front-end (driver side): connects to any vhost-user back-end, negotiates through the
 * driver object (driver.h: dependency rules, restricted-memory policy), shares the driver's memfd
 * memory, runs N virtqueues of either format with kick/call eventfds, and, when
 * VIRTIO_F_ACCESS_PLATFORM is negotiated, acts as the back-end's IOMMU: the DMA API publishes
 * every mapping as an IOTLB UPDATE (RO to-device, WO from-device, RW rings) and every unmapping
 * as an INVALIDATE, each acknowledged; a back-end's IOTLB MISS is answered only for an address
 * mapped with the permission asked, so an access to anything else fails on its side.
 *
 * Lifecycle: connect (handshake) -> negotiate (features, DMA mode, memory) -> queue_start for each
 * queue -> ready (DRIVER_OK) -> data path -> queue_stop / reset -> close.
 *
 * Threading: control calls (connect, negotiate, queue_start/stop, ready, reset, config, close)
 * come from one thread at a time. The data path of a queue (its vt_vq_drv, kick, wait) belongs to
 * one thread; different queues may run on different threads. DMA mapping may run on any thread:
 * requests on the socket are serialized inside. The back-end channel (SET_BACKEND_REQ_FD) is
 * served on a thread the front-end owns, so misses are answered while the caller blocks in
 * vt_vu_frontend_wait or anywhere else; config_changed runs on that thread.
 *
 * Every wait is bounded: a back-end that stops answering makes the call return -ETIMEDOUT, after
 * which the connection is latched broken (a late reply would desynchronize the stream) and every
 * later request returns -ENOTCONN. A reply of the wrong size, type or request code is -EPROTO,
 * latched the same way.
 */
#ifndef VIRTUE_VHOST_USER_FRONTEND_H
#define VIRTUE_VHOST_USER_FRONTEND_H

#include <stdbool.h>
#include <stdint.h>

#include "dma.h"
#include "driver.h"
#include "log.h"
#include "shm.h"
#include "virtqueue.h"

struct vt_vu_frontend_params {
	/* Connect to this unix socket (client). NULL: @fd is an already connected socket. */
	const char *socket_path;
	int fd; /* taken over (closed by vt_vu_frontend_close, or on a failed connect) */
	/*
	 * Server mode: create @socket_path and wait for the back-end to connect (as QEMU's
	 * `server=on` chardev; DPDK's net_vhost with `client=1` connects). The path is removed once
	 * the connection is made.
	 */
	bool server;
	/*
	 * Client: while the socket is absent or refuses, connect retries until this. Server: how
	 * long to wait for the back-end. 0: 5000 ms.
	 */
	unsigned int connect_timeout_ms;
	/* The most any reply or acknowledgement may take (0: 5000 ms). */
	unsigned int timeout_ms;

	/* vhost-user does not say what the device is: the dependency rules need it. */
	uint32_t device_id;
	/* Driver features (device-type and transport bits); VERSION_1 is always required. */
	uint64_t supported;
	/* driver.h: refuse a device that could reach driver memory without the platform. */
	bool restricted_memory;
	/*
	 * The DMA mode used when ACCESS_PLATFORM is negotiated: strict, lazy, premapped or bounce.
	 * VT_DMA_DIRECT is refused (-EINVAL) when @supported would let the platform be used.
	 */
	enum vt_dma_mode platform_dma;
	/* The driver's memory: its memfd regions are shared with the back-end (not in bounce). */
	struct vt_shm *shm;
	/* Protocol features never to negotiate, even when offered (tests, interop workarounds). */
	uint64_t protocol_excluded;
	unsigned int lazy_batch;     /* vt_dma_params.lazy_batch */
	uint64_t bounce_window_size; /* bounce: the window the back-end sees (0: 4 MiB) */
	uint64_t bounce_window_gpa;  /* bounce: its address (0: 1 TiB) */

	/* CONFIG_CHANGE_MSG from the back-end (on the channel thread). Optional. */
	void (*config_changed)(void *opaque);
	void *opaque;
	const char *name; /* for log lines */
	const struct vt_log *log;
};

struct vt_vu_frontend_stats {
	uint64_t requests;	       /* messages sent on the main socket */
	uint64_t iotlb_updates;	       /* UPDATE acknowledged (mappings and miss answers) */
	uint64_t iotlb_invalidations;  /* INVALIDATE acknowledged */
	uint64_t reconnects;	       /* vt_vu_frontend_reconnect that succeeded */
	uint64_t misses;	       /* MISS received */
	uint64_t misses_answered;      /* ... answered with an UPDATE */
	uint64_t misses_denied;	       /* ... for an address not mapped with that permission */
	uint64_t access_fails;	       /* ACCESS_FAIL received */
	uint64_t config_changes;       /* CONFIG_CHANGE_MSG received */
	uint64_t bad_backend_messages; /* malformed or unexpected on the channel */
	unsigned int mappings;	       /* live translations in the front-end's table */
	/* The last fault (denied miss or access failure): where and which access. */
	uint64_t last_fault_iova;
	unsigned int last_fault_perm; /* VHOST_ACCESS_* */
};

struct vt_vu_frontend;

/*
 * Connects (bounded by connect_timeout_ms) and runs the handshake: GET_FEATURES,
 * GET/SET_PROTOCOL_FEATURES (MQ, REPLY_ACK, BACKEND_REQ, CONFIG, CONFIGURE_MEM_SLOTS, STATUS,
 * RESET_DEVICE, INFLIGHT_SHMFD as offered, minus protocol_excluded), SET_OWNER, GET_QUEUE_NUM,
 * GET_MAX_MEM_SLOTS, SET_BACKEND_REQ_FD (starting the channel thread). Returns 0, or -EINVAL (bad
 * params), -ETIMEDOUT, -ECONNREFUSED/-ENOENT (nothing listening when the time ran out), -EPROTO
 * (a bad or refused reply), -errno.
 */
int vt_vu_frontend_connect(const struct vt_vu_frontend_params *params, struct vt_vu_frontend **out);

/*
 * Stops every queue, unmaps everything, stops the channel thread and closes the connection.
 * Tokens of buffers still posted are forgotten (use vt_vu_frontend_reset first to get them).
 */
void vt_vu_frontend_close(struct vt_vu_frontend *fe);

/*
 * Negotiates through the driver object (reset, ACKNOWLEDGE, DRIVER, features with the dependency
 * rules, FEATURES_OK re-read: SET_FEATURES, and SET_STATUS when STATUS is negotiated), then
 * creates the DMA object in the mode the features call for and shares memory: SET_MEM_TABLE, or
 * ADD_MEM_REG per region with CONFIGURE_MEM_SLOTS. Direct and iommu modes share the memfd regions
 * of params.shm; bounce shares only a window of its own and maps it once, RW. Premapped publishes
 * every region at once. Errors as vt_driver_negotiate (-EPERM: restricted-memory policy), or the
 * transport's.
 */
int vt_vu_frontend_negotiate(struct vt_vu_frontend *fe);

/*
 * Sets up queue @index (below vt_vu_frontend_num_queues) with @num entries: ring memory from
 * the DMA API, SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR (IOVAs under ACCESS_PLATFORM, else
 * this process's addresses), SET_VRING_CALL, SET_VRING_ERR, SET_VRING_KICK, SET_VRING_ENABLE 1.
 * With INFLIGHT_SHMFD negotiated, the first queue started gets the inflight buffer from the
 * back-end (GET_INFLIGHT_FD for every queue at @num entries, then SET_INFLIGHT_FD); every queue
 * must then have @num entries (-EINVAL otherwise), as in QEMU.
 * @indirect_max: vt_vq_drv_params.indirect_max (0: default). -EBUSY if it already runs.
 */
int vt_vu_frontend_queue_start(struct vt_vu_frontend *fe, unsigned int index, unsigned int num,
			       unsigned int indirect_max);

/*
 * Stops queue @index: SET_VRING_ENABLE 0, then GET_VRING_BASE, after which the back-end no longer
 * touches the ring (*base, if given: where it stopped). Used buffers can still be collected and
 * the rest detached with vt_vq_drv_detach_unused; the ring is freed by reset or close.
 */
int vt_vu_frontend_queue_stop(struct vt_vu_frontend *fe, unsigned int index, uint32_t *base);

/*
 * After the back-end went away (vt_vu_frontend_wait said -ECONNRESET, or requests fail with
 * -ENOTCONN): connects again as the first time (client: retrying until connect_timeout_ms;
 * server: waiting that long for a back-end) and hands the device over as the driver left it.
 * A connection closed during the hand-over (the old back-end's listening socket can outlive it
 * for a moment) is dialled again within the same time. The new back-end must offer every
 * feature and protocol feature negotiated (-EPROTO if not).
 * It gets the features, the status, the memory, the inflight buffer when INFLIGHT_SHMFD was
 * negotiated, and every running queue, its ring rebased (vt_vq_drv_rebase) and kicked: buffers
 * posted before are completed once each, whether or not the back-end keeps inflight records.
 * Under ACCESS_PLATFORM it starts with an empty IOTLB and its misses are answered from the live
 * mappings. The caller first collects every used buffer (-EBUSY otherwise; the connection then
 * stays down, call again), and no queue's data path may run meanwhile. -ENOTSUP when the
 * front-end was given a connected fd instead of a path.
 */
int vt_vu_frontend_reconnect(struct vt_vu_frontend *fe);

/* DRIVER_OK, after the queues are set up. */
int vt_vu_frontend_ready(struct vt_vu_frontend *fe);

/*
 * Resets the device: every queue stopped, every buffer still posted (used or not) detached,
 * unmapped and handed to @release (if given), rings freed, mappings invalidated, the DMA object
 * freed, memory unshared, RESET_DEVICE when negotiated, status 0, faults cleared. Negotiate again
 * to use the device.
 */
int vt_vu_frontend_reset(struct vt_vu_frontend *fe, void (*release)(void *opaque, void *token),
			 void *opaque);

/* The driver half of a running queue (add buffers, collect used ones), or NULL. */
struct vt_vq_drv *vt_vu_frontend_vq(struct vt_vu_frontend *fe, unsigned int index);

/* Publishes posted buffers and notifies the back-end if the ring says it must. 0 or -errno. */
int vt_vu_frontend_kick(struct vt_vu_frontend *fe, unsigned int index);

/*
 * Waits at most @timeout_ms for queue @index's used-buffer notification (consumed). Returns 0, or
 *   -ETIMEDOUT    nothing happened;
 *   -EIO          the back-end reported the queue broken (SET_VRING_ERR eventfd);
 *   -EFAULT       the back-end faulted: a miss the front-end could not answer (an address never
 *                 mapped, or mapped without the access asked) or an ACCESS_FAIL; stays until
 *                 reset (vt_vu_frontend_get_stats says where);
 *   -ECONNRESET   the back-end closed the connection.
 */
int vt_vu_frontend_wait(struct vt_vu_frontend *fe, unsigned int index, int timeout_ms);

/* GET_CONFIG / SET_CONFIG through the driver object (generation loop). -ENOTSUP without CONFIG. */
int vt_vu_frontend_config_read(struct vt_vu_frontend *fe, uint32_t offset, void *buf, uint32_t len);
int vt_vu_frontend_config_write(struct vt_vu_frontend *fe, uint32_t offset, const void *buf,
				uint32_t len);

/* What the handshake learned, and what negotiation settled. */
uint64_t vt_vu_frontend_offered_features(const struct vt_vu_frontend *fe); /* virtio bits */
uint64_t vt_vu_frontend_features(const struct vt_vu_frontend *fe);	   /* negotiated */
uint64_t vt_vu_frontend_protocol_offered(const struct vt_vu_frontend *fe);
uint64_t vt_vu_frontend_protocol_features(const struct vt_vu_frontend *fe); /* negotiated */
/* Rings the back-end serves: GET_QUEUE_NUM (1 without MQ), doubled for net (it counts pairs). */
unsigned int vt_vu_frontend_num_queues(const struct vt_vu_frontend *fe);
unsigned int vt_vu_frontend_max_mem_slots(const struct vt_vu_frontend *fe); /* 0: not asked */
struct vt_driver *vt_vu_frontend_driver(struct vt_vu_frontend *fe);
/* The DMA object buffers are mapped with (after negotiate), or NULL. */
struct vt_dma *vt_vu_frontend_dma(struct vt_vu_frontend *fe);

/*
 * What the back-end reaches at bus address [bus, bus + len) as this process's pointer: through
 * the shared memory (direct), the front-end's table of live mappings (iommu; -EACCES without
 * @access) or the bounce window. -EFAULT when nothing is there. For tests and diagnostics.
 */
int vt_vu_frontend_bus_to_hva(struct vt_vu_frontend *fe, uint64_t bus, uint64_t len,
			      unsigned int access, void **hva);

void vt_vu_frontend_get_stats(struct vt_vu_frontend *fe, struct vt_vu_frontend_stats *stats);

#endif
