/* SPDX-License-Identifier: MIT */
/*
 * vhost-user message codec, shared by the back-end and the front-end: one message off a socket
 * with its fds, one message onto it, and the table that says what each request carries. Decoding
 * is strict and happens here, before any handler runs: the payload size and fd count of every
 * request are checked against the table (spec: docs/interop/vhost-user.rst, "Message
 * Specification"), so handlers see only well-formed payloads.
 */
#ifndef VIRTUE_TRANSPORT_VHOST_USER_MSG_H
#define VIRTUE_TRANSPORT_VHOST_USER_MSG_H

#include <stdbool.h>
#include <stdint.h>

#include "virtue/spec/vhost_user.h"

struct vt_vu_msg {
	struct vhost_user_header hdr;
	union vhost_user_payload payload;
	int fds[VHOST_USER_MAX_FDS];
	unsigned int nfds;
};

/* How a request's payload size is fixed. */
enum vt_vu_size_rule {
	VT_VU_SIZE_EXACT,  /* exactly `size` bytes */
	VT_VU_SIZE_MEMORY, /* struct vhost_user_memory with nregions (1..8) regions */
	VT_VU_SIZE_CONFIG, /* the 12-byte config header plus its `size` bytes (at most 256) */
};

/* How many fds a request may carry. */
enum vt_vu_fd_rule {
	VT_VU_FDS_NONE,	 /* none */
	VT_VU_FDS_ONE,	 /* exactly one */
	VT_VU_FDS_VRING, /* one unless the payload's NOFD bit is set (SET_VRING_KICK/CALL/ERR) */
	VT_VU_FDS_PER_REGION, /* one per region (SET_MEM_TABLE) */
	VT_VU_FDS_OPTIONAL    /* none or one (REM_MEM_REG: QEMU sends the region's fd) */
};

struct vt_vu_request_info {
	const char *name;
	uint32_t size; /* payload bytes (EXACT), or the fixed part */
	enum vt_vu_size_rule size_rule;
	enum vt_vu_fd_rule fd_rule;
	bool has_reply; /* the back-end always answers (GET_* requests) */
};

/* The table row of a front-end request, or NULL for a code the table doesn't know. */
const struct vt_vu_request_info *vt_vu_request_info(uint32_t request);
/* The request's name for log lines ("UNKNOWN" for codes outside the table). */
const char *vt_vu_request_name(uint32_t request);

/*
 * Receives one message (blocking). The header and the payload size are checked before the payload
 * is read. Returns 0, or:
 *   -ECONNRESET  the peer closed the connection between messages;
 *   -EPROTO      a truncated message, a wrong version or a payload larger than any request has:
 *                the stream can't be trusted any more, close the connection;
 *   -errno       from the socket.
 * Received fds are close-on-exec; on any error none stays open.
 */
int vt_vu_msg_recv(int sock, struct vt_vu_msg *msg);

/*
 * Checks a received front-end request against the table: a known code, the exact payload size,
 * the allowed fd count. Returns 0, or -EPROTO with *why naming the rule broken.
 */
int vt_vu_msg_check(const struct vt_vu_msg *msg, const char **why);

/* Sends the header, hdr.size payload bytes and nfds fds. 0 or -errno (-EPIPE: peer gone). */
int vt_vu_msg_send(int sock, const struct vt_vu_msg *msg);

/*
 * Sends @count messages that carry no fds, in order, in as few system calls as the socket
 * allows (one, unless it is short of room): a burst of IOTLB updates. 0 or -errno; -EINVAL
 * (nothing sent) when one carries fds or too large a payload. On an error after part was sent,
 * the stream is cut mid-message: the connection must be closed.
 */
int vt_vu_msg_send_many(int sock, const struct vt_vu_msg *msgs, unsigned int count);

/* Closes every fd still held by @msg (handlers set the ones they keep to -1). */
void vt_vu_msg_close_fds(struct vt_vu_msg *msg);

#endif
