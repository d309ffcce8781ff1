/* SPDX-License-Identifier: MIT */
/*
 * Inside the vhost-user front-end. Four files: vhost_user_frontend.c (connection, requests and
 * replies, handshake, lifecycle), vhost_user_frontend_driver.c (the driver object's transport),
 * vhost_user_frontend_mem.c (memory table,
 * IOTLB publishing, the table of live mappings, the back-end channel thread) and
 * vhost_user_frontend_queue.c (rings, kick, wait, stop, reset).
 *
 * Locking: io_lock serializes every request on the main socket with its reply, and every change
 * of the mapping table: a miss is looked up and answered under it, an invalidation leaves the
 * table and reaches the back-end under it, so an answer can never revive a translation already
 * invalidated. Lock order: the DMA object's lock (its callbacks run under it), then io_lock.
 */
#ifndef VIRTUE_TRANSPORT_VHOST_USER_FRONTEND_IMPL_H
#define VIRTUE_TRANSPORT_VHOST_USER_FRONTEND_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "transport/vhost_user_msg.h"
#include "virtue/iotlb.h"
#include "virtue/vhost_user_frontend.h"

#define FE_MAX_QUEUES 64
/* IOTLB UPDATEs sent ahead of their acknowledgements, at most. */
#define FE_MAX_PIPELINED_ACKS 64

struct fe_queue {
	struct vt_vq_drv *vq; /* NULL: not set up */
	unsigned int num;
	int kick_fd, call_fd, err_fd;
	bool running; /* started and not stopped with GET_VRING_BASE */
};

/* A log line at most once a second, counting the ones suppressed. */
struct fe_ratelimit {
	uint64_t next_ns;
	uint64_t suppressed;
};

struct vt_vu_frontend {
	struct vt_vu_frontend_params params;
	char name[64];
	const struct vt_log *log;
	int timeout_ms;

	pthread_mutex_t io_lock;
	int sock;
	_Atomic int broken; /* latched: 0, or the error that broke the stream (set under io_lock) */
	/*
	 * REPLY_ACKs owed for IOTLB UPDATEs sent without waiting (written under io_lock; read
	 * without it by the kick, as a hint): collected before any other request's reply, before
	 * a kick, and before an invalidation.
	 */
	_Atomic unsigned int acks_pending;

	uint64_t offered;	    /* virtio features (bit 30 removed) */
	uint64_t offered_raw;	    /* GET_FEATURES as answered */
	uint64_t protocol_offered;  /* GET_PROTOCOL_FEATURES */
	uint64_t protocol;	    /* negotiated */
	unsigned int num_queues;    /* GET_QUEUE_NUM (1 without MQ) */
	unsigned int max_mem_slots; /* GET_MAX_MEM_SLOTS, 0 if not asked */

	/* The driver object's view (transport ops). */
	struct vt_driver *drv;
	uint64_t driver_features; /* set_driver_features, sent at FEATURES_OK */
	uint8_t status;		  /* what the driver last set, as kept by the back-end */
	_Atomic uint32_t config_generation;

	/* After negotiate. */
	uint64_t features;
	struct vt_dma *dma;
	bool platform;		 /* vt_uses_platform_dma(features), cached */
	struct vt_shm *bounce;	 /* bounce: the window's own memory, the only memory shared */
	struct vt_shm *shared;	 /* the shm whose memfd regions the back-end has */
	bool regions_added;	 /* shared with ADD_MEM_REG (taken back with REM_MEM_REG) */
	struct vt_iotlb *mapped; /* live mappings: iova -> hva, perm (under io_lock) */
	bool window_mapped;	 /* bounce: the window's UPDATE was published */
	uint64_t window_iova, window_size;

	struct fe_queue queues[FE_MAX_QUEUES];
	/*
	 * INFLIGHT_SHMFD: the buffer the back-end records its inflight buffers in, got from it
	 * (GET_INFLIGHT_FD) when the first queue starts and handed to every later back-end
	 * (SET_INFLIGHT_FD) so that one restarted after a crash finds what was in flight. -1: none.
	 */
	int inflight_fd;
	struct vhost_user_inflight inflight;

	/* Back-end channel. */
	int chan;      /* front-end's end, owned by the channel thread once it runs */
	int chan_stop; /* eventfd: the channel thread exits */
	int fault_fd;  /* eventfd: a fault was reported; readable until reset */
	pthread_t chan_thread;
	bool chan_running;
	struct fe_ratelimit miss_log, fail_log, bad_log;

	_Atomic uint64_t requests, iotlb_updates, iotlb_invalidations, reconnects;
	_Atomic uint64_t misses, misses_answered, misses_denied, access_fails, config_changes,
	    bad_backend_messages;
	_Atomic uint64_t last_fault_iova;
	_Atomic unsigned int last_fault_perm;
};

static inline bool fe_has_protocol(const struct vt_vu_frontend *fe, unsigned int bit)
{
	return (fe->protocol >> bit) & 1;
}

/* vhost_user_frontend.c: requests on the main socket. Callers hold io_lock. */
/* Sends @msg (NEED_REPLY added and the ack checked when @ack and REPLY_ACK is negotiated). */
int fe_request_locked(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, bool ack);
/* Sends @msg and receives its reply of exactly @reply_size payload bytes into @msg. */
int fe_call_locked(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, uint32_t reply_size);
/* The same, taking io_lock. */
int fe_request(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, bool ack);
int fe_call(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, uint32_t reply_size);
/* fe_call for a reply that carries one fd (GET_INFLIGHT_FD): *fd is ours on success. */
int fe_call_fd(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, uint32_t reply_size, int *fd);
int fe_send_u64(struct vt_vu_frontend *fe, uint32_t request, uint64_t value, bool ack);
int fe_send_state(struct vt_vu_frontend *fe, uint32_t request, uint32_t index, uint32_t num,
		  bool ack);
int fe_get_u64(struct vt_vu_frontend *fe, uint32_t request, uint64_t *value);
/*
 * Sends @count messages (more than one: fd-less, then sent together) with NEED_REPLY and does
 * not wait: the acknowledgements are collected later (a refusal then breaks the connection).
 * Without REPLY_ACK, fe_request_locked of each. 0 or -errno.
 */
int fe_request_pipelined_locked(struct vt_vu_frontend *fe, struct vt_vu_msg *msgs,
				unsigned int count);
/* Receives every acknowledgement still owed. */
int fe_collect_acks_locked(struct vt_vu_frontend *fe);
/* Latches the stream broken with @err (logged once), under io_lock: returns @err. */
int fe_break(struct vt_vu_frontend *fe, int err, const char *request, const char *why);
bool fe_ratelimit(struct fe_ratelimit *rl, uint64_t *suppressed);

/* vhost_user_frontend_driver.c: what the driver object negotiates through. */
extern const struct vt_transport_ops fe_transport_ops;

/* vhost_user_frontend_mem.c */
int fe_mem_share(struct vt_vu_frontend *fe);
void fe_mem_unshare(struct vt_vu_frontend *fe);
int fe_dma_create(struct vt_vu_frontend *fe);
void fe_dma_destroy(struct vt_vu_frontend *fe);
int fe_channel_start(struct vt_vu_frontend *fe);
void fe_channel_stop(struct vt_vu_frontend *fe);
/* The back-end's view of a ring address: this process's address without ACCESS_PLATFORM. */
int fe_ring_addr(struct vt_vu_frontend *fe, uint64_t bus, uint64_t len, uint64_t *out);
void fe_fault(struct vt_vu_frontend *fe, uint64_t iova, unsigned int perm);
void fe_clear_fault(struct vt_vu_frontend *fe);

/* vhost_user_frontend_queue.c */
void fe_queues_init(struct vt_vu_frontend *fe);
/* Stops, detaches (to @release) and frees every queue. */
void fe_queues_teardown(struct vt_vu_frontend *fe, void (*release)(void *opaque, void *token),
			void *opaque);
/*
 * After a reconnect: hands every running queue to the new back-end (the inflight buffer first),
 * each ring rebased (vt_vq_drv_rebase) so the back-end sees each outstanding buffer once.
 */
int fe_queues_resume(struct vt_vu_frontend *fe);
void fe_inflight_free(struct vt_vu_frontend *fe);

#endif
