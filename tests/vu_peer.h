/* SPDX-License-Identifier: MIT */
/*
 * A test front-end that speaks raw vhost-user to a back-end serving the other end of a socketpair
 * on a thread of its own. Any request can be sent with any flags, payload size and fds, so hostile
 * messages are built with the same helpers as friendly ones; every wait is bounded.
 */
#ifndef VIRTUE_TESTS_VU_PEER_H
#define VIRTUE_TESTS_VU_PEER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <virtue/shm.h>
#include <virtue/spec/vhost_user.h>
#include <virtue/vhost_user_backend.h>

/* How long any reply, notification or back-end message may take before a test fails. */
#define VU_PEER_WAIT_MS 5000

/* Header flags of a well-formed front-end request. */
#define VU_V1 VHOST_USER_VERSION

struct vu_peer {
	struct vt_vhost_backend *be;
	int sock;    /* the front-end's end of the connection */
	int chan;    /* the front-end's end of the back-end channel, or -1 */
	int done_fd; /* eventfd: vt_vhost_backend_serve returned */
	pthread_t thread;
	bool serving; /* the serve thread is not joined yet */
	int serve_fd; /* the back-end's end, handed to serve */
	int serve_rc; /* what serve returned, once joined */
};

/* Connects a new socketpair and starts vt_vhost_backend_serve on a thread. 0 or -errno. */
int vu_peer_connect(struct vu_peer *p, struct vt_vhost_backend *be);

/*
 * Waits (bounded) for serve to return and joins it: 0 with *rc set, or -ETIMEDOUT (the thread is
 * left running; the test has failed anyway).
 */
int vu_peer_wait_serve(struct vu_peer *p, int timeout_ms, int *rc);

/* Closes the front-end's ends (the back-end sees a disconnect) and joins serve: its result. */
int vu_peer_disconnect(struct vu_peer *p);

/* Sends one message: any request, flags and size; @payload may be NULL for size 0. */
int vu_peer_send(struct vu_peer *p, uint32_t request, uint32_t flags, const void *payload,
		 uint32_t size, const int *fds, unsigned int nfds);

/*
 * Receives one message from @sock within @timeout_ms: 0, -ETIMEDOUT, -ECONNRESET (closed), or
 * -EMSGSIZE (payload larger than @max: the rest is discarded). Received fds are closed.
 */
int vu_peer_recv(int sock, struct vhost_user_header *hdr, void *payload, size_t max,
		 int timeout_ms);

/*
 * Sends a request that the back-end answers (GET_*) and receives the reply into @reply: the
 * reply's payload size, or -errno (-EBADMSG: the reply is not a reply to @request).
 */
int vu_peer_call(struct vu_peer *p, uint32_t request, const void *payload, uint32_t size,
		 void *reply, size_t reply_max);
int vu_peer_get_u64(struct vu_peer *p, uint32_t request, uint64_t *value);

/*
 * Sends a request with NEED_REPLY and returns the REPLY_ACK status (0: success, nonzero:
 * refused), or -errno (-ECONNRESET: the back-end closed the connection instead).
 */
int vu_peer_ack(struct vu_peer *p, uint32_t request, const void *payload, uint32_t size,
		const int *fds, unsigned int nfds);
int vu_peer_ack_u64(struct vu_peer *p, uint32_t request, uint64_t value);
int vu_peer_ack_state(struct vu_peer *p, uint32_t request, uint32_t index, uint32_t num);

/* True when the back-end closed the connection (EOF within the bounded wait). */
bool vu_peer_closed(struct vu_peer *p);

/* True when a GET_FEATURES round trip works: the connection is still usable. */
bool vu_peer_alive(struct vu_peer *p);

/*
 * The usual opening: GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES(@protocol),
 * SET_OWNER, SET_FEATURES(@features | PROTOCOL_FEATURES), each acknowledged. 0 or -errno
 * (-EPROTO: a step was refused).
 */
int vu_peer_handshake(struct vu_peer *p, uint64_t features, uint64_t protocol);

/* Creates the back-end channel (SET_BACKEND_REQ_FD); p->chan is the front-end's end. */
int vu_peer_open_channel(struct vu_peer *p);

/* Receives one BACKEND_IOTLB_MSG from the channel (bounded): 0, or -errno. */
int vu_peer_recv_iotlb(struct vu_peer *p, struct vhost_iotlb_msg *msg, int timeout_ms);

/* A shm region as the front-end describes it: userspace_addr is this process's address. */
struct vhost_user_memory_region vu_peer_region(const struct vt_shm_region *r);

/* SET_MEM_TABLE with every region of @shm (at most 8), acknowledged: the ack status or -errno. */
int vu_peer_set_mem_table(struct vu_peer *p, const struct vt_shm *shm);
/* ADD_MEM_REG / REM_MEM_REG of one region, acknowledged. */
int vu_peer_add_mem_reg(struct vu_peer *p, const struct vt_shm_region *r);
int vu_peer_rem_mem_reg(struct vu_peer *p, const struct vt_shm_region *r);

/* This process's address of driver-physical @gpa in @shm (what ring addresses are given as). */
uint64_t vu_peer_uaddr(const struct vt_shm *shm, uint64_t gpa);

/* Open fds of this process, and mappings of memfds: leak checks. */
int vu_count_fds(void);
int vu_count_memfd_maps(void);

#endif
