/* SPDX-License-Identifier: MIT */
/*
 * Inside the vhost-user back-end: the connection state the control thread owns, the queues the I/O
 * threads run, and the locking between them. Split in three files: vhost_user_backend.c (serve
 * loop, dispatch, negotiation), vu_backend_mem.c (memory regions, IOTLB), vu_backend_queue.c
 * (rings and I/O threads).
 *
 * Locking: each I/O thread holds its worker lock while it touches its queues. The control thread
 * takes a worker's lock to change a queue it runs, and every worker's lock (vu_quiesce) to change
 * what all queues translate with (the memory table) or to make an invalidation take effect. Lock
 * order: worker locks in index order, then chan_lock; nothing is taken while chan_lock is held.
 */
#ifndef VIRTUE_TRANSPORT_VU_BACKEND_IMPL_H
#define VIRTUE_TRANSPORT_VU_BACKEND_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "transport/vhost_user_msg.h"
#include "virtue/device.h"
#include "virtue/iotlb.h"
#include "virtue/memtable.h"
#include "virtue/vhost_user_backend.h"

#define VU_MAX_QUEUES  64
#define VU_MAX_THREADS 16

struct vu_region {
	uint64_t gpa, size, uaddr;
	void *map_base; /* what mmap returned */
	size_t map_len;
};

struct vu_worker;

struct vu_queue {
	struct vt_vhost_backend *be;
	struct vu_worker *worker;
	unsigned int index;
	char name[80];

	/* Set by the front-end's messages (control thread). */
	unsigned int num; /* 0: not set */
	bool have_addr;
	struct vhost_vring_addr addr;
	uint16_t base; /* SET_VRING_BASE */
	int kick_fd, err_fd;
	int call_fd; /* changed under the worker lock: the I/O thread signals it */
	bool enabled;

	/* While running: used by the I/O thread under the worker lock. */
	bool running;
	struct vt_vq_dev *vq;
	void *engine;
	int event_fd;
	bool broken;
	bool parked;
	uint64_t parked_seq; /* iotlb_seq when the miss was met */

	_Atomic uint64_t kicks, calls, misses;
};

struct vu_worker {
	struct vt_vhost_backend *be;
	unsigned int index;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_mutex_t gate; /* control side: see control_lock() */
	int epfd;
	int wake_fd; /* eventfd: re-run parked and budget-limited queues, or exit */
	bool exit;
	bool thread_started;
};

struct vt_vhost_backend {
	struct vt_vhost_backend_params params;
	char name[64];
	const struct vt_log *log;
	struct vt_device *dev;
	uint64_t offered;	   /* virtio features, transport bits included */
	uint64_t protocol_offered; /* protocol features */
	int stop_fd;		   /* eventfd: vt_vhost_backend_stop */

	/* Connection state: control thread only, unless noted. */
	int sock;
	bool owner;
	bool features_set;
	uint64_t
	    features; /* negotiated virtio features (read by workers: stable while queues run) */
	bool protocol_features_acked; /* VHOST_USER_F_PROTOCOL_FEATURES was set */
	uint64_t protocol;	      /* negotiated protocol features */
	uint8_t status;		      /* SET_STATUS */

	pthread_mutex_t chan_lock;
	int backend_fd; /* SET_BACKEND_REQ_FD channel, under chan_lock */

	struct vt_memtable *mem; /* changed only with every worker quiesced */
	struct vu_region *regions;
	unsigned int nregions;
	struct vt_iotlb *iotlb;
	_Atomic uint64_t iotlb_seq; /* bumps after every UPDATE: parked queues retry */
	atomic_int parked_queues;   /* queues waiting for an UPDATE: wake the threads for them */

	/* INFLIGHT_SHMFD buffer (vu_backend_inflight.c); regions handed to the rings at start. */
	void *inflight_base;
	size_t inflight_map_len;
	unsigned int inflight_queues, inflight_queue_size;
	int reply_fd; /* an fd the reply being built carries (GET_INFLIGHT_FD), or -1 */

	struct vu_queue queues[VU_MAX_QUEUES];
	struct vu_worker workers[VU_MAX_THREADS];
	unsigned int nworkers;

	_Atomic uint64_t messages, bad_messages, iotlb_updates, iotlb_invalidates;
	/* Copies of protocol and nregions for vt_vhost_backend_get_stats on any thread. */
	_Atomic uint64_t stats_protocol;
	_Atomic unsigned int stats_mem_regions;
};

/* A handler's verdict on a message. */
enum {
	VU_OK = 0,
	VU_CLOSE = 1, /* protocol violation: close the connection */
};

/* vu_backend_mem.c */
int vu_mem_set_table(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
int vu_mem_add_region(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
int vu_mem_rem_region(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
void vu_mem_unmap_all(struct vt_vhost_backend *be);
int vu_iotlb_msg(struct vt_vhost_backend *be, struct vt_vu_msg *msg);

/* vu_backend_inflight.c */
int vu_get_inflight_fd(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
int vu_set_inflight_fd(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
void vu_inflight_unmap(struct vt_vhost_backend *be);
void *vu_inflight_region(struct vt_vhost_backend *be, const struct vu_queue *q);

/* vu_backend_queue.c */
int vu_workers_start(struct vt_vhost_backend *be);
void vu_workers_stop(struct vt_vhost_backend *be);
void vu_quiesce(struct vt_vhost_backend *be);
void vu_unquiesce(struct vt_vhost_backend *be);
void vu_wake_all(struct vt_vhost_backend *be);
/* With every worker quiesced: complete what every running queue has in flight. */
void vu_drain_all_locked(struct vt_vhost_backend *be);
void vu_queue_init(struct vt_vhost_backend *be, struct vu_queue *q, unsigned int index);
/* Stops a running queue (requests completed) and forgets the front-end's settings. */
void vu_queue_reset(struct vu_queue *q);
int vu_set_vring_num(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
int vu_set_vring_addr(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
int vu_set_vring_base(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
int vu_get_vring_base(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
int vu_set_vring_fd(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
int vu_set_vring_enable(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
bool vu_any_queue_running(const struct vt_vhost_backend *be);

/* vhost_user_backend.c: the back-end channel. */
int vu_backend_send(struct vt_vhost_backend *be, struct vt_vu_msg *msg);
static inline bool vu_has_protocol(const struct vt_vhost_backend *be, unsigned int bit)
{
	return (be->protocol >> bit) & 1;
}

#endif
