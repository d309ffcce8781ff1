/* SPDX-License-Identifier: MIT */
/*
 * vhost-user back-end (device side): serves one front-end connection at a time (QEMU, or virtue's
 * own front-end), maps the memory it shares, runs its virtqueues on I/O threads and hands each
 * queue to a device model through a small callback table. The model never learns the transport.
 *
 * When the front-end negotiates VIRTIO_F_ACCESS_PLATFORM, every ring and buffer address is an
 * IOVA translated through a device IOTLB fed by IOTLB_MSG; a miss parks only the queue that met
 * it and asks the front-end (BACKEND_IOTLB_MSG, MISS) while the control thread keeps serving
 * messages. Without it, addresses are driver-physical and go through the memory table.
 *
 * Threading: vt_vhost_backend_serve runs the control loop on the caller's thread; queues run on
 * params.num_threads I/O threads owned by the back-end. vt_vhost_backend_stop may be called from
 * any thread or a signal handler.
 */
#ifndef VIRTUE_VHOST_USER_BACKEND_H
#define VIRTUE_VHOST_USER_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "virtqueue.h"

/*
 * A device model's queue engine. start() runs on the control thread; poll() and event_fd() on the
 * queue's I/O thread; drain() and stop() on either, never concurrently with poll().
 */
struct vt_vu_queue_ops {
	/* Takes over @vq (negotiated @features) for queue @index; *engine is passed back below. */
	int (*start)(void *opaque, unsigned int index, struct vt_vq_dev *vq, uint64_t features,
		     void **engine);
	/*
	 * Processes what is available and what completed. Returns >= 0 (work done; 0: nothing left
	 * until the next kick or event), -EFAULT (the ring met an IOTLB miss: vt_vq_dev_fault says
	 * where), -EPROTO (the driver broke the queue). *notify: signal the used-buffer
	 * notification.
	 */
	int (*poll)(void *engine, bool *notify);
	/* An fd that becomes readable when poll() has work besides kicks (I/O completions), or -1.
	 */
	int (*event_fd)(void *engine);
	/* Completes every request in flight (bounded wait). */
	int (*drain)(void *engine, bool *notify);
	void (*stop)(void *engine);
};

struct vt_vhost_backend_params {
	uint32_t device_id; /* VIRTIO_ID_* */
	const char *name;   /* for log lines */
	/* Device-type features the model offers; the back-end adds the transport features. */
	uint64_t device_features;
	/* Transport features the model can't use (e.g. VIRTIO_F_IN_ORDER): never offered. */
	uint64_t transport_features_excluded;
	unsigned int num_queues;     /* GET_QUEUE_NUM; at most 64 */
	unsigned int max_queue_size; /* SET_VRING_NUM above it is refused; at most 32768 */
	unsigned int max_chain;	     /* vt_vq_dev_params.max_chain of every queue */
	const void *config;	     /* config space the front-end reads with GET_CONFIG */
	uint32_t config_size;
	/*
	 * The model's current config space (config_size bytes), read at every GET_CONFIG: fields
	 * the model changes itself (virtio-blk's writeback after negotiation) stay current.
	 * Optional: absent, GET_CONFIG answers @config as given and as SET_CONFIG changed it.
	 */
	void (*config_read)(void *opaque, void *config, uint32_t size);
	/* SET_FEATURES passed the generic rules: the model may still refuse (-errno). Optional. */
	int (*features_ok)(void *opaque, uint64_t negotiated);
	/* SET_CONFIG: 0 to accept the bytes, -EPERM for a read-only field. NULL: refuse all. */
	int (*config_write)(void *opaque, uint32_t offset, const void *buf, uint32_t len);
	const struct vt_vu_queue_ops *queue_ops;
	void *opaque;		  /* passed to the callbacks above and queue_ops->start */
	unsigned int num_threads; /* I/O threads; queue i runs on thread i % num_threads */
	/*
	 * Microseconds an I/O thread keeps polling its queues after the last work it found
	 * before it sleeps (QEMU's iothread poll-max-ns is 32 us): a driver that submits again
	 * within that time is served without a wake-up. 0: sleep at once.
	 */
	unsigned int poll_us;
	const struct vt_log *log;
};

/* Per-queue counters, readable while the back-end runs. */
struct vt_vhost_backend_queue_stats {
	bool running;	 /* started (kick fd given) and not stopped */
	bool enabled;	 /* SET_VRING_ENABLE 1, or no protocol features */
	bool broken;	 /* the driver broke a ring rule; stopped until reset */
	bool parked;	 /* waiting for an IOTLB update */
	uint64_t kicks;	 /* kick eventfd wake-ups */
	uint64_t calls;	 /* used-buffer notifications sent */
	uint64_t misses; /* IOTLB misses sent to the front-end */
};

struct vt_vhost_backend_stats {
	uint64_t messages;	    /* front-end requests handled */
	uint64_t bad_messages;	    /* refused: malformed, out of order, or invalid */
	uint64_t iotlb_updates;	    /* IOTLB UPDATE applied */
	uint64_t iotlb_invalidates; /* IOTLB INVALIDATE applied */
	uint64_t iotlb_hits, iotlb_misses;
	uint64_t features;	    /* negotiated virtio features (0 before SET_FEATURES) */
	uint64_t protocol_features; /* negotiated protocol features */
	unsigned int mem_regions;
};

struct vt_vhost_backend;

/* -EINVAL for bad parameters; starts the I/O threads. */
int vt_vhost_backend_new(const struct vt_vhost_backend_params *params,
			 struct vt_vhost_backend **out);
/* Stops the I/O threads (any connection must have ended). */
void vt_vhost_backend_free(struct vt_vhost_backend *be);

/*
 * Serves the connected socket @fd (taken over, closed on return) until the front-end disconnects
 * (returns 0), breaks the protocol (-EPROTO) or vt_vhost_backend_stop is called (-ECANCELED).
 * Every queue is then stopped with its requests completed, the shared memory unmapped and every
 * fd closed; the device model's state (a disk) lives on for the next connection.
 */
int vt_vhost_backend_serve(struct vt_vhost_backend *be, int fd);

/* Makes a running or the next vt_vhost_backend_serve return -ECANCELED. Async-signal-safe. */
void vt_vhost_backend_stop(struct vt_vhost_backend *be);

void vt_vhost_backend_get_stats(struct vt_vhost_backend *be, struct vt_vhost_backend_stats *stats);
/* -EINVAL if @index is not below num_queues. */
int vt_vhost_backend_get_queue_stats(struct vt_vhost_backend *be, unsigned int index,
				     struct vt_vhost_backend_queue_stats *stats);

#endif
