/* SPDX-License-Identifier: MIT */
/*
 * The virtio-net driver (virtio 1.3 section 5.1), transport-agnostic: the configuration space
 * decoded (struct vt_net_info), a transmit engine and a receive engine per queue pair, and the
 * control queue's MQ command, each over a driver half (virtqueue.h) that a transport created,
 * such as the vhost-user front-end's vt_vu_frontend_vq(). Queue indices follow 5.1.2: receiveq
 * of pair N is 2N, transmitq 2N + 1, the control queue 2 * max_virtqueue_pairs.
 *
 * Every packet carries a struct virtio_net_hdr (the VERSION_1 layout, num_buffers included,
 * 5.1.6); headers and receive buffers live in shared memory the engines allocate once, at
 * creation, from a struct vt_shm, and the virtqueue maps every segment through the DMA API when
 * it is posted, so the same code is right in every DMA mode (in bounce mode received bytes are
 * copied back at that unmap).
 *
 * Receive: the engine keeps the ring filled with buffers of one size. With MRG_RXBUF a frame may
 * span several buffers: the header in the first says how many (num_buffers, 5.1.6.4), and that is
 * checked against what the device actually returned; without it every buffer holds a whole frame.
 * A device that returns a used length shorter than the header, longer than the buffer, or a
 * num_buffers of 0 or more than it used, gets the frame dropped and counted, never read past.
 *
 * Multiqueue: with CTRL_VQ and MQ negotiated, vt_net_ctrl_mq_pairs_set asks the device to use N
 * pairs (5.1.6.5.5). Under vhost-user the control queue is the front-end's own (as QEMU's
 * virtio-net model is): the back-end is only told which rings are enabled, so there a driver
 * starts its N pairs and needs no control queue.
 *
 * Threading: an engine is used by one thread at a time (different engines by different threads);
 * the decoding functions have no state.
 */
#ifndef VIRTUE_NET_DRIVER_H
#define VIRTUE_NET_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "log.h"
#include "shm.h"
#include "spec/virtio_config.h"
#include "spec/virtio_net.h"
#include "virtqueue.h"

/*
 * The device-type feature bits this driver implements: give them (with the transport bits you
 * want) as vt_driver_params.supported or vt_vu_frontend_params.supported. No offloads: frames
 * go out and come in whole, checksummed by whoever built them.
 */
#define VT_NET_DRIVER_FEATURES                                                                     \
	(VT_BIT(VIRTIO_NET_F_MAC) | VT_BIT(VIRTIO_NET_F_MRG_RXBUF) | VT_BIT(VIRTIO_NET_F_STATUS) | \
	 VT_BIT(VIRTIO_NET_F_CTRL_VQ) | VT_BIT(VIRTIO_NET_F_MQ) | VT_BIT(VIRTIO_NET_F_MTU))

/* Ethernet: the frame without FCS a buffer must hold when MTU is not negotiated (1500 + 14). */
#define VT_NET_ETH_HLEN	     14u
#define VT_NET_DEFAULT_FRAME 1514u
/* The largest frame the engines accept at all (a 64 KiB IP packet plus its Ethernet header). */
#define VT_NET_MAX_FRAME (65535u + VT_NET_ETH_HLEN)

/* Queue indices of 5.1.2. */
static inline unsigned int vt_net_rx_queue(unsigned int pair)
{
	return 2 * pair;
}

static inline unsigned int vt_net_tx_queue(unsigned int pair)
{
	return 2 * pair + 1;
}

static inline unsigned int vt_net_ctrl_queue(unsigned int max_pairs)
{
	return 2 * max_pairs;
}

/* Bytes of the header in front of every packet under @features: 12 (VERSION_1 layout). */
uint32_t vt_net_hdr_len(uint64_t features);

/* ---------------------------------------------------------------- configuration */

/*
 * The configuration space as the negotiated features let a driver read it. A field whose
 * feature was not negotiated holds its "not advertised" value, given beside it.
 */
struct vt_net_info {
	uint64_t features; /* negotiated, as given to vt_net_config_decode */
	bool has_mac;	   /* MAC; otherwise mac[] is zero (the driver picks one, 5.1.5) */
	uint8_t mac[6];
	bool has_status;	      /* STATUS; otherwise the link is taken as up (5.1.4.2) */
	uint16_t status;	      /* VIRTIO_NET_S_* as read; VIRTIO_NET_S_LINK_UP otherwise */
	bool link_up;		      /* status & VIRTIO_NET_S_LINK_UP */
	uint16_t max_virtqueue_pairs; /* MQ; 1 otherwise */
	uint16_t mtu;		      /* MTU: the device's maximum; 0 otherwise */
	uint32_t hdr_len;	      /* vt_net_hdr_len(features) */
	/* The largest frame (no FCS) a receive buffer set must hold: mtu + 14, or 1514. */
	uint32_t max_frame;
};

/*
 * vt_net_config_decode - decode @len bytes of a virtio-net configuration space (struct
 * virtio_net_config, little-endian, as read from the device) under the @features negotiated.
 *
 * Only fields whose feature is negotiated are read; with none of MAC, STATUS, MQ, MTU negotiated
 * @config may be NULL (a device whose configuration space cannot be read). Returns 0 with *@info
 * filled, or -EINVAL: @len shorter than a negotiated feature's field, max_virtqueue_pairs outside
 * 1..0x8000 (5.1.4.1), an MTU below 68 (5.1.4.1: the device MUST supply at least 68).
 */
int vt_net_config_decode(const void *config, size_t len, uint64_t features,
			 struct vt_net_info *info);

/*
 * vt_net_info_str - @info as "name: value" lines (MAC, link, queue pairs, MTU, header), for
 * `virtue info`. Returns what snprintf returns (cut to fit @size, NUL-terminated when @size > 0).
 */
int vt_net_info_str(const struct vt_net_info *info, char *buf, size_t size);

/* ---------------------------------------------------------------- transmit */

struct vt_net_txq_params {
	struct vt_vq_drv *vq; /* the transmitq's driver half; must outlive the engine */
	unsigned int num;     /* its queue size: frames in flight at most */
	struct vt_shm *shm;   /* where headers (and copied frames) are allocated */
	uint64_t features;    /* negotiated */
	/* Bytes of frame room per slot for vt_net_txq_send (copies); 0: 1514. At most 65549. */
	uint32_t frame_room;
	const char *name; /* for log lines (not copied); NULL: "net-tx" */
	const struct vt_log *log;
};

struct vt_net_txq_stats {
	uint64_t frames, bytes; /* posted */
	uint64_t completed;	/* returned by the device */
	uint64_t ring_full;	/* sends answered -EAGAIN */
	uint64_t rejected;	/* sends refused before reaching the ring (-EINVAL, -EMSGSIZE) */
	uint64_t kicks, kicks_suppressed; /* the ring's (vt_vq_drv_stats) */
	unsigned int in_flight;
};

struct vt_net_txq;

/*
 * vt_net_txq_new - a transmit engine for one transmitq. Allocates @num slots (a header and
 * frame_room bytes each) from params->shm. 0, -EINVAL (no vq or shm, num 0, frame_room too big),
 * -ENOMEM (shared memory exhausted too).
 */
int vt_net_txq_new(const struct vt_net_txq_params *params, struct vt_net_txq **out);

/* Frees the engine; frames still posted must have been taken back (device stopped). NULL: no-op. */
void vt_net_txq_free(struct vt_net_txq *q);

/*
 * vt_net_txq_send - copy @len bytes of @frame behind a zeroed header (no offload, num_buffers 0)
 * in one slot, and post it as one segment; invisible to the device until kicked. @cookie comes
 * back from vt_net_txq_reclaim. Returns 0, or with nothing posted: -EINVAL (len 0),
 * -EMSGSIZE (more than frame_room), -EAGAIN (every slot or descriptor in use: reclaim, retry),
 * -EPROTO (the virtqueue is broken), or the DMA API's error.
 */
int vt_net_txq_send(struct vt_net_txq *q, const void *frame, size_t len, void *cookie);

/*
 * vt_net_txq_send_burst - vt_net_txq_send for @n frames, frame i copied from @frames[i] with
 * cookie @cookies[i] (@cookies may be NULL: every cookie NULL). The frames are posted in order
 * through the ring's burst add, which writes a batch's descriptors together. Returns how many
 * were posted: the first frame that cannot be posted ends the burst, and its error (as
 * vt_net_txq_send's) is returned only when it is the first, with nothing posted.
 */
int vt_net_txq_send_burst(struct vt_net_txq *q, const struct iovec *frames, unsigned int n,
			  void *const *cookies);

/*
 * vt_net_txq_send_sg - zero copy: the header from a slot, then the caller's @iovcnt segments
 * (memory the DMA mode can map: shared memory, or anywhere under bounce), which must stay
 * untouched until the frame is reclaimed. Errors as vt_net_txq_send (-EMSGSIZE: more than
 * VT_NET_MAX_FRAME bytes, -EAGAIN also when the ring lacks 1 + @iovcnt descriptors).
 */
int vt_net_txq_send_sg(struct vt_net_txq *q, const struct iovec *iov, unsigned int iovcnt,
		       void *cookie);

/*
 * vt_net_txq_kick - publish everything posted since the last kick. Returns true when the device
 * must be notified. (A transport may do this itself: vt_vu_frontend_kick.)
 */
bool vt_net_txq_kick(struct vt_net_txq *q);

/*
 * vt_net_txq_reclaim - collect up to @max frames the device is done with, their cookies into
 * @cookies (may be NULL). Returns how many, or -EPROTO when the virtqueue is broken and nothing
 * was collected.
 */
int vt_net_txq_reclaim(struct vt_net_txq *q, void **cookies, unsigned int max);

/*
 * vt_net_txq_forget - a token a transport handed back after a reset (vt_vu_frontend_reset's
 * release callback, vt_vq_drv_detach_unused) is returned to its slot; *cookie (if given) gets the
 * frame's cookie. 0, or -EINVAL when @token is not a frame of this engine in flight.
 */
int vt_net_txq_forget(struct vt_net_txq *q, void *token, void **cookie);

unsigned int vt_net_txq_in_flight(const struct vt_net_txq *q);
void vt_net_txq_get_stats(const struct vt_net_txq *q, struct vt_net_txq_stats *stats);

/* ---------------------------------------------------------------- receive */

struct vt_net_rxq_params {
	struct vt_vq_drv *vq; /* the receiveq's driver half; must outlive the engine */
	unsigned int num;     /* its queue size: buffers posted at most */
	struct vt_shm *shm;   /* where the receive buffers are allocated */
	/* The decoded configuration (copied): features, header length, max_frame. */
	const struct vt_net_info *info;
	/*
	 * Bytes per receive buffer, header included. 0: 2048 with MRG_RXBUF (a frame spans as many
	 * as it needs), else hdr_len + max_frame (every buffer holds a whole frame, 5.1.6.3.1).
	 * With MRG_RXBUF at least hdr_len + 1; without, at least hdr_len + max_frame.
	 */
	uint32_t buf_size;
	const char *name; /* for log lines (not copied); NULL: "net-rx" */
	const struct vt_log *log;
};

/* A received frame, as vt_net_rxq_recv reports it. */
struct vt_net_rx_info {
	uint32_t len;		   /* frame bytes (without the header) */
	uint16_t num_buffers;	   /* receive buffers it spanned */
	struct virtio_net_hdr hdr; /* as the device wrote it (little-endian fields) */
};

struct vt_net_rxq_stats {
	uint64_t frames, bytes;		  /* delivered */
	uint64_t buffers;		  /* used buffers collected */
	uint64_t posted;		  /* buffers posted */
	uint64_t kicks, kicks_suppressed; /* the ring's (vt_vq_drv_stats) */
	/* Protocol violations by the device: the frame is dropped and its buffers reposted. */
	uint64_t bad_header;	  /* used length shorter than the header (5.1.6.4) */
	uint64_t bad_length;	  /* used length longer than the buffer */
	uint64_t bad_num_buffers; /* num_buffers 0, more than the ring, or more than were used */
	uint64_t runts;		  /* a frame of fewer bytes than an Ethernet header */
	uint64_t too_big;	  /* a frame longer than the caller's buffer (-EMSGSIZE) */
	unsigned int posted_now;  /* buffers the device holds */
};

struct vt_net_rxq;

/*
 * vt_net_rxq_new - a receive engine for one receiveq: @num buffers of buf_size bytes from
 * params->shm. Nothing is posted until vt_net_rxq_fill. 0, -EINVAL (no vq, shm or info, num 0,
 * buf_size too small or above 1 MiB), -ENOMEM.
 */
int vt_net_rxq_new(const struct vt_net_rxq_params *params, struct vt_net_rxq **out);

/* Frees the engine; buffers still posted must have been taken back (device stopped). */
void vt_net_rxq_free(struct vt_net_rxq *q);

/*
 * vt_net_rxq_fill - post every free receive buffer (invisible to the device until kicked).
 * Returns how many were posted (0: the ring is full already), or -EPROTO / the DMA API's error
 * when none could be.
 */
int vt_net_rxq_fill(struct vt_net_rxq *q);

/* Publishes posted buffers; true when the device must be notified (or vt_vu_frontend_kick). */
bool vt_net_rxq_kick(struct vt_net_rxq *q);

/*
 * vt_net_rxq_recv - take the next received frame: its bytes (the header stripped) copied into
 * @buf (@cap bytes), *@info (may be NULL) filled, its buffers made free again (vt_net_rxq_fill
 * reposts them). Returns 1 with a frame, 0 when none is waiting, or
 *   -EMSGSIZE  the frame is longer than @cap: dropped (info->len says how long it was);
 *   -EBADMSG   the device broke a rule for this frame (counted in the stats): dropped;
 *   -EPROTO    the virtqueue is broken (the device violated the ring rules).
 * A frame is never read past the bytes the device said it wrote.
 */
int vt_net_rxq_recv(struct vt_net_rxq *q, void *buf, size_t cap, struct vt_net_rx_info *info);

/*
 * vt_net_rxq_forget - a token handed back after a reset (vt_vu_frontend_reset's release callback,
 * vt_vq_drv_detach_unused): its buffer is free again. 0, or -EINVAL if it is no posted buffer.
 */
int vt_net_rxq_forget(struct vt_net_rxq *q, void *token);

uint32_t vt_net_rxq_buf_size(const struct vt_net_rxq *q);
void vt_net_rxq_get_stats(const struct vt_net_rxq *q, struct vt_net_rxq_stats *stats);

/* ---------------------------------------------------------------- control queue */

struct vt_net_ctrl_params {
	struct vt_vq_drv *vq; /* the control queue's driver half (at least 3 entries) */
	struct vt_shm *shm;
	const struct vt_net_info *info; /* copied */
	const char *name;
	const struct vt_log *log;
};

struct vt_net_ctrl;

int vt_net_ctrl_new(const struct vt_net_ctrl_params *params, struct vt_net_ctrl **out);
void vt_net_ctrl_free(struct vt_net_ctrl *c);

/*
 * vt_net_ctrl_mq_pairs_set - post VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET for @pairs queue pairs
 * (5.1.6.5.5); one command at a time. Kick, then vt_net_ctrl_poll for the answer. Returns 0, or
 * -ENOTSUP (MQ or CTRL_VQ not negotiated), -EINVAL (@pairs outside 1..max_virtqueue_pairs),
 * -EBUSY (a command is in flight), -EPROTO, or the DMA API's error.
 */
int vt_net_ctrl_mq_pairs_set(struct vt_net_ctrl *c, uint16_t pairs);

bool vt_net_ctrl_kick(struct vt_net_ctrl *c);

/*
 * vt_net_ctrl_poll - the answer to the command in flight: 0 (VIRTIO_NET_OK), -EAGAIN (not yet),
 * -EIO (VIRTIO_NET_ERR), -EBADMSG (an ack byte that is neither, or not written: used length 0),
 * -EPROTO (virtqueue broken), -EINVAL (no command in flight).
 */
int vt_net_ctrl_poll(struct vt_net_ctrl *c);

/* The pairs in use: 1 until a VQ_PAIRS_SET was acknowledged. */
uint16_t vt_net_ctrl_pairs(const struct vt_net_ctrl *c);

/* A token handed back after a reset. 0, or -EINVAL. */
int vt_net_ctrl_forget(struct vt_net_ctrl *c, void *token);

#endif
