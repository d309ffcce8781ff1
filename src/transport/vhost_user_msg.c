/* SPDX-License-Identifier: MIT */
/* vhost-user message codec: the request table, receive with fds, strict checks, send. */
#include "transport/vhost_user_msg.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define U64   sizeof(uint64_t)
#define STATE sizeof(struct vhost_vring_state)
#define ROW(req, sz, srule, frule, reply)                                                          \
	[VHOST_USER_##req] = { #req, (uint32_t)(sz), VT_VU_SIZE_##srule, VT_VU_FDS_##frule, reply }

/*
 * One row per request the back-end accepts: payload size, fds, whether it always replies. A code
 * without a row (log, postcopy, crypto, GPU, in-band kicks) is refused: virtue offers none of the
 * protocol features that would make a front-end send it.
 */
static const struct vt_vu_request_info request_table[VHOST_USER_REQUEST__COUNT] = {
	ROW(GET_FEATURES, 0, EXACT, NONE, true),
	ROW(SET_FEATURES, U64, EXACT, NONE, false),
	ROW(SET_OWNER, 0, EXACT, NONE, false),
	ROW(RESET_OWNER, 0, EXACT, NONE, false),
	ROW(SET_MEM_TABLE, offsetof(struct vhost_user_memory, regions), MEMORY, PER_REGION, false),
	ROW(SET_VRING_NUM, STATE, EXACT, NONE, false),
	ROW(SET_VRING_ADDR, sizeof(struct vhost_vring_addr), EXACT, NONE, false),
	ROW(SET_VRING_BASE, STATE, EXACT, NONE, false),
	ROW(GET_VRING_BASE, STATE, EXACT, NONE, true),
	ROW(SET_VRING_KICK, U64, EXACT, VRING, false),
	ROW(SET_VRING_CALL, U64, EXACT, VRING, false),
	ROW(SET_VRING_ERR, U64, EXACT, VRING, false),
	ROW(GET_PROTOCOL_FEATURES, 0, EXACT, NONE, true),
	ROW(SET_PROTOCOL_FEATURES, U64, EXACT, NONE, false),
	ROW(GET_QUEUE_NUM, 0, EXACT, NONE, true),
	ROW(SET_VRING_ENABLE, STATE, EXACT, NONE, false),
	ROW(SET_BACKEND_REQ_FD, 0, EXACT, ONE, false),
	ROW(IOTLB_MSG, sizeof(struct vhost_iotlb_msg), EXACT, NONE, false),
	ROW(GET_CONFIG, VHOST_USER_CONFIG_HDR_SIZE, CONFIG, NONE, true),
	ROW(SET_CONFIG, VHOST_USER_CONFIG_HDR_SIZE, CONFIG, NONE, false),
	ROW(GET_INFLIGHT_FD, sizeof(struct vhost_user_inflight), EXACT, NONE, true),
	ROW(SET_INFLIGHT_FD, sizeof(struct vhost_user_inflight), EXACT, ONE, false),
	ROW(RESET_DEVICE, 0, EXACT, NONE, false),
	ROW(GET_MAX_MEM_SLOTS, 0, EXACT, NONE, true),
	ROW(ADD_MEM_REG, sizeof(struct vhost_user_memory_single), EXACT, ONE, false),
	ROW(REM_MEM_REG, sizeof(struct vhost_user_memory_single), EXACT, OPTIONAL, false),
	ROW(SET_STATUS, U64, EXACT, NONE, false),
	ROW(GET_STATUS, 0, EXACT, NONE, true),
};

const struct vt_vu_request_info *vt_vu_request_info(uint32_t request)
{
	if (request >= VHOST_USER_REQUEST__COUNT || !request_table[request].name)
		return NULL;
	return &request_table[request];
}

const char *vt_vu_request_name(uint32_t request)
{
	const struct vt_vu_request_info *info = vt_vu_request_info(request);

	return info ? info->name : "UNKNOWN";
}

void vt_vu_msg_close_fds(struct vt_vu_msg *msg)
{
	for (unsigned int i = 0; i < msg->nfds; i++) {
		if (msg->fds[i] >= 0)
			close(msg->fds[i]);
		msg->fds[i] = -1;
	}
	msg->nfds = 0;
}

/* Reads exactly @len bytes; -EPROTO if the peer closes part way. */
static int read_full(int sock, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = recv(sock, (char *)buf + done, len - done, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EPROTO;
		done += (size_t)n;
	}
	return 0;
}

int vt_vu_msg_recv(int sock, struct vt_vu_msg *msg)
{
	char control[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
	struct iovec iov = { .iov_base = &msg->hdr, .iov_len = sizeof(msg->hdr) };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control,
		.msg_controllen = sizeof(control),
	};
	ssize_t n;
	int err;

	msg->nfds = 0;
	memset(&msg->payload, 0, sizeof(msg->payload));
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;

	/* fds arrive with the header's first byte; collect them before any check can fail. */
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		unsigned int count = (unsigned int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (unsigned int i = 0; i < count; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (msg->nfds < VHOST_USER_MAX_FDS)
				msg->fds[msg->nfds++] = fd;
			else
				close(fd);
		}
	}
	if (mh.msg_flags & MSG_CTRUNC) {
		/* More fds than any request carries: the kernel dropped some. */
		err = -EPROTO;
		goto fail;
	}
	if ((size_t)n < sizeof(msg->hdr)) {
		err = read_full(sock, (char *)&msg->hdr + n, sizeof(msg->hdr) - (size_t)n);
		if (err)
			goto fail;
	}
	if ((msg->hdr.flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION ||
	    msg->hdr.size > sizeof(msg->payload)) {
		err = -EPROTO;
		goto fail;
	}
	err = read_full(sock, &msg->payload, msg->hdr.size);
	if (err)
		goto fail;
	return 0;
fail:
	vt_vu_msg_close_fds(msg);
	return err;
}

int vt_vu_msg_check(const struct vt_vu_msg *msg, const char **why)
{
	const struct vt_vu_request_info *info = vt_vu_request_info(msg->hdr.request);
	unsigned int fds_wanted = 0;

	if (!info) {
		*why = "unknown request";
		return -EPROTO;
	}
	switch (info->size_rule) {
	case VT_VU_SIZE_EXACT:
		if (msg->hdr.size != info->size) {
			*why = "payload size is not the request's";
			return -EPROTO;
		}
		break;
	case VT_VU_SIZE_MEMORY: {
		uint32_t n = msg->payload.memory.nregions;
		if (msg->hdr.size < info->size || n == 0 || n > VHOST_MEMORY_BASELINE_NREGIONS ||
		    msg->hdr.size != info->size + n * sizeof(struct vhost_user_memory_region)) {
			*why = "region count and payload size disagree";
			return -EPROTO;
		}
		break;
	}
	case VT_VU_SIZE_CONFIG:
		if (msg->hdr.size < info->size ||
		    msg->payload.config.size > VHOST_USER_MAX_CONFIG_SIZE ||
		    msg->hdr.size != info->size + msg->payload.config.size) {
			*why = "config size and payload size disagree";
			return -EPROTO;
		}
		break;
	}
	switch (info->fd_rule) {
	case VT_VU_FDS_NONE:
		break;
	case VT_VU_FDS_ONE:
		fds_wanted = 1;
		break;
	case VT_VU_FDS_VRING:
		if (msg->payload.u64 &
		    ~(uint64_t)(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK)) {
			*why = "reserved bits set in the vring index";
			return -EPROTO;
		}
		fds_wanted = (msg->payload.u64 & VHOST_USER_VRING_NOFD_MASK) ? 0 : 1;
		break;
	case VT_VU_FDS_PER_REGION:
		fds_wanted = msg->payload.memory.nregions;
		break;
	case VT_VU_FDS_OPTIONAL:
		fds_wanted = msg->nfds ? 1 : 0;
		break;
	}
	if (msg->nfds != fds_wanted) {
		*why = msg->nfds > fds_wanted ? "more fds than the request carries"
					      : "fewer fds than the request carries";
		return -EPROTO;
	}
	return 0;
}

int vt_vu_msg_send(int sock, const struct vt_vu_msg *msg)
{
	char control[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
	struct iovec iov[2] = {
		{ .iov_base = (void *)&msg->hdr, .iov_len = sizeof(msg->hdr) },
		{ .iov_base = (void *)&msg->payload, .iov_len = msg->hdr.size },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = msg->hdr.size ? 2 : 1 };
	size_t total = sizeof(msg->hdr) + msg->hdr.size;
	ssize_t n;

	if (msg->hdr.size > sizeof(msg->payload) || msg->nfds > VHOST_USER_MAX_FDS)
		return -EINVAL;
	if (msg->nfds) {
		memset(control, 0, sizeof(control));
		mh.msg_control = control;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * msg->nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * msg->nfds);
		memcpy(CMSG_DATA(c), msg->fds, sizeof(int) * msg->nfds);
	}
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	/* A unix stream socket takes a message this small whole, or the peer is gone. */
	return (size_t)n == total ? 0 : -EPIPE;
}

/* Messages per sendmsg: each is two iovecs, within the kernel's UIO_MAXIOV (1024). */
#define SEND_MANY_MAX 64u

/* Drops @n bytes from the front of @iov[0..*cnt): what a partial sendmsg took. */
static struct iovec *advance(struct iovec *iov, size_t *cnt, size_t n)
{
	while (*cnt && n >= iov->iov_len) {
		n -= iov->iov_len;
		iov++;
		(*cnt)--;
	}
	if (*cnt) {
		iov->iov_base = (char *)iov->iov_base + n;
		iov->iov_len -= n;
	}
	return iov;
}

int vt_vu_msg_send_many(int sock, const struct vt_vu_msg *msgs, unsigned int count)
{
	struct iovec iov[2 * SEND_MANY_MAX];

	for (unsigned int i = 0; i < count; i++)
		if (msgs[i].nfds || msgs[i].hdr.size > sizeof(msgs[i].payload))
			return -EINVAL;
	for (unsigned int done = 0; done < count;) {
		unsigned int n = count - done < SEND_MANY_MAX ? count - done : SEND_MANY_MAX;
		size_t cnt = 0;
		for (unsigned int i = 0; i < n; i++) {
			const struct vt_vu_msg *m = &msgs[done + i];
			iov[cnt++] = (struct iovec){ (void *)&m->hdr, sizeof(m->hdr) };
			if (m->hdr.size)
				iov[cnt++] = (struct iovec){ (void *)&m->payload, m->hdr.size };
		}
		struct iovec *next = iov;
		while (cnt) {
			struct msghdr mh = { .msg_iov = next, .msg_iovlen = cnt };
			ssize_t sent = sendmsg(sock, &mh, MSG_NOSIGNAL);
			if (sent < 0 && errno == EINTR)
				continue;
			if (sent < 0)
				return -errno;
			if (sent == 0)
				return -EPIPE;
			/* A stream socket short of room takes part: the rest follows. */
			next = advance(next, &cnt, (size_t)sent);
		}
		done += n;
	}
	return 0;
}
