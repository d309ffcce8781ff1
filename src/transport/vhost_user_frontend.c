/* SPDX-License-Identifier: MIT */
/*
 * vhost-user front-end: the connection (bounded connect, every reply awaited with a deadline and
 * checked for its request code, size and flags), the handshake, negotiation, reset and close.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "transport/vhost_user_frontend_impl.h"
#include "virtue/features.h"
#include "virtue/platform.h"
#include "virtue/spec/virtio_config.h"

#define DEFAULT_TIMEOUT_MS 5000
#define CONNECT_RETRY_MS   10

/* Protocol features this front-end implements (what it asks for when offered). */
#define FE_PROTOCOL_FEATURES                                                                       \
	(VT_BIT(VHOST_USER_PROTOCOL_F_MQ) | VT_BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) |              \
	 VT_BIT(VHOST_USER_PROTOCOL_F_BACKEND_REQ) | VT_BIT(VHOST_USER_PROTOCOL_F_CONFIG) |        \
	 VT_BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS) |                                       \
	 VT_BIT(VHOST_USER_PROTOCOL_F_STATUS) | VT_BIT(VHOST_USER_PROTOCOL_F_RESET_DEVICE) |       \
	 VT_BIT(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD))

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool fe_ratelimit(struct fe_ratelimit *rl, uint64_t *suppressed)
{
	uint64_t now = now_ns();

	if (now < rl->next_ns) {
		rl->suppressed++;
		return false;
	}
	rl->next_ns = now + 1000000000ull;
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	return true;
}

/* ------------------------------------------------------------------ requests and replies */

/* Latches the stream broken: after a timeout or a bad reply nothing on it can be trusted. */
int fe_break(struct vt_vu_frontend *fe, int err, const char *request, const char *why)
{
	if (!fe->broken) {
		fe->broken = err;
		vt_log(fe->log, VT_LOG_ERROR, "%s: connection unusable after %s: %s", fe->name,
		       request, why);
	}
	return err;
}

#define REPLY_SPIN_NS 50000ull

/* Waits until the socket has something to read, within the timeout: 0, or the broken state. */
static int wait_readable_locked(struct vt_vu_frontend *fe, const char *name)
{
	uint64_t deadline = now_ns() + (uint64_t)fe->timeout_ms * 1000000ull;
	struct pollfd pfd = { .fd = fe->sock, .events = POLLIN };
	int rc;

	/*
	 * A reply usually comes within microseconds, while waking a sleeping thread on a VM can
	 * take hundreds: look without sleeping for a short while first (IOTLB updates in strict
	 * mode wait here once per mapping).
	 */
	for (uint64_t spin_end = now_ns() + REPLY_SPIN_NS; now_ns() < spin_end;) {
		char byte;
		if (recv(fe->sock, &byte, 1, MSG_PEEK | MSG_DONTWAIT) != -1 || errno != EAGAIN)
			break;
	}
	for (;;) {
		uint64_t now = now_ns();
		if (now >= deadline)
			return fe_break(fe, -ETIMEDOUT, name, "no reply in time");
		rc = poll(&pfd, 1, (int)((deadline - now + 999999) / 1000000));
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR)
			return fe_break(fe, -errno, name, strerror(errno));
	}
}

static int recv_reply_locked(struct vt_vu_frontend *fe, struct vt_vu_msg *reply, uint32_t request,
			     int *fd)
{
	const char *name = vt_vu_request_name(request);
	int rc = wait_readable_locked(fe, name);
	if (rc < 0)
		return rc;
	/* SO_RCVTIMEO bounds a message that arrives in pieces. */
	rc = vt_vu_msg_recv(fe->sock, reply);
	if (rc == -EAGAIN || rc == -EWOULDBLOCK)
		return fe_break(fe, -ETIMEDOUT, name, "reply truncated");
	if (rc == -ECONNRESET)
		return fe_break(fe, rc, name, "back-end closed the connection");
	if (rc < 0)
		return fe_break(fe, rc, name,
				"reply unreadable (truncated, wrong version, oversized)");
	if (reply->nfds > (fd ? 1u : 0u) || (fd && reply->nfds != 1)) {
		vt_vu_msg_close_fds(reply);
		return fe_break(fe, -EPROTO, name,
				fd ? "reply without its fd" : "reply carries fds");
	}
	if (!(reply->hdr.flags & VHOST_USER_REPLY_MASK)) {
		vt_vu_msg_close_fds(reply);
		return fe_break(fe, -EPROTO, name, "message without the reply flag");
	}
	if (reply->hdr.request != request) {
		char why[96];
		snprintf(why, sizeof(why), "reply is for request %u (%s)", reply->hdr.request,
			 vt_vu_request_name(reply->hdr.request));
		vt_vu_msg_close_fds(reply);
		return fe_break(fe, -EPROTO, name, why);
	}
	if (fd)
		*fd = reply->fds[0];
	return 0;
}

/* Sends @count messages (more than one: fd-less, in one vt_vu_msg_send_many). */
static int send_locked(struct vt_vu_frontend *fe, struct vt_vu_msg *msgs, unsigned int count)
{
	if (fe->broken)
		return -ENOTCONN;
	int rc = count == 1 ? vt_vu_msg_send(fe->sock, msgs)
			    : vt_vu_msg_send_many(fe->sock, msgs, count);
	if (rc == -EAGAIN || rc == -EWOULDBLOCK)
		rc = -ETIMEDOUT;
	if (rc < 0)
		return fe_break(fe, rc, vt_vu_request_name(msgs[0].hdr.request), strerror(-rc));
	atomic_fetch_add_explicit(&fe->requests, count, memory_order_relaxed);
	return 0;
}

/* Checks one REPLY_ACK to @request: 0, or -EPROTO when the back-end refused it. */
static int recv_ack_locked(struct vt_vu_frontend *fe, uint32_t request)
{
	struct vt_vu_msg reply;
	int rc = recv_reply_locked(fe, &reply, request, NULL);
	if (rc < 0)
		return rc;
	if (reply.hdr.size != sizeof(uint64_t))
		return fe_break(fe, -EPROTO, vt_vu_request_name(request),
				"REPLY_ACK payload is not a u64");
	if (reply.payload.u64 != 0) {
		vt_log(fe->log, VT_LOG_ERROR, "%s: back-end refused %s (status %llu)", fe->name,
		       vt_vu_request_name(request), (unsigned long long)reply.payload.u64);
		return -EPROTO;
	}
	return 0;
}

/* A REPLY_ACK on the wire: a header and its u64 status, unpadded. */
#define ACK_BYTES (sizeof(struct vhost_user_header) + sizeof(uint64_t))

/* Whether @h heads the REPLY_ACK of an IOTLB message. */
static bool is_iotlb_ack(const struct vhost_user_header *h)
{
	return (h->flags & VHOST_USER_VERSION_MASK) == VHOST_USER_VERSION &&
	       (h->flags & VHOST_USER_REPLY_MASK) && h->request == VHOST_USER_IOTLB_MSG &&
	       h->size == sizeof(uint64_t);
}

/*
 * Reads the next @n acknowledgements of pipelined IOTLB messages (n <= FE_MAX_PIPELINED_ACKS)
 * with as few recvmsg calls as they take to arrive, rather than two each (vt_vu_msg_recv reads a
 * header, then its payload): they all have one size. Each is checked as soon as it is in, as
 * recv_ack_locked checks a reply; anything else in its place (another size or request, fds)
 * breaks the connection there and then.
 */
static int recv_acks_locked(struct vt_vu_frontend *fe, unsigned int n)
{
	const char *name = vt_vu_request_name(VHOST_USER_IOTLB_MSG);
	uint8_t acks[FE_MAX_PIPELINED_ACKS * ACK_BYTES];
	char control[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
	size_t have = 0, want = n * ACK_BYTES;
	unsigned int checked = 0;

	while (checked < n) {
		int rc = wait_readable_locked(fe, name);
		if (rc < 0)
			return rc;
		struct iovec iov = { .iov_base = acks + have, .iov_len = want - have };
		struct msghdr mh = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = control,
			.msg_controllen = sizeof(control),
		};
		ssize_t got = recvmsg(fe->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
			continue;
		if (got < 0)
			return fe_break(fe, -errno, name, strerror(errno));
		if (got == 0)
			return fe_break(fe, -ECONNRESET, name, "back-end closed the connection");
		bool fds = mh.msg_flags & MSG_CTRUNC;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			unsigned int count =
			    (unsigned int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (unsigned int i = 0; i < count; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				close(fd);
			}
			fds = true;
		}
		if (fds)
			return fe_break(fe, -EPROTO, name, "reply carries fds");
		have += (size_t)got;
		/* A header as soon as it is in; its status once that is too. */
		for (; checked < n; checked++) {
			size_t at = checked * ACK_BYTES;
			struct vhost_user_header h;
			uint64_t status;
			if (have < at + sizeof(h))
				break;
			memcpy(&h, acks + at, sizeof(h));
			if (!is_iotlb_ack(&h))
				return fe_break(fe, -EPROTO, name,
						"not the REPLY_ACK of an IOTLB message where one "
						"was owed");
			if (have < at + ACK_BYTES)
				break;
			memcpy(&status, acks + at + sizeof(h), sizeof(status));
			if (status != 0) {
				vt_log(fe->log, VT_LOG_ERROR,
				       "%s: back-end refused %s (status %llu)", fe->name, name,
				       (unsigned long long)status);
				/*
				 * The mapping was reported done when it was sent: a refusal found
				 * now cannot be handed back to whoever mapped, so nothing on this
				 * connection is trusted after it.
				 */
				return fe_break(
				    fe, -EPROTO, name,
				    "an UPDATE published ahead of its acknowledgement was refused");
			}
		}
	}
	return 0;
}

int fe_collect_acks_locked(struct vt_vu_frontend *fe)
{
	while (fe->acks_pending > 0) {
		unsigned int n = fe->acks_pending < FE_MAX_PIPELINED_ACKS ? fe->acks_pending
									  : FE_MAX_PIPELINED_ACKS;
		int rc = recv_acks_locked(fe, n);
		atomic_store_explicit(&fe->acks_pending, fe->acks_pending - n,
				      memory_order_relaxed);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int fe_request_pipelined_locked(struct vt_vu_frontend *fe, struct vt_vu_msg *msgs,
				unsigned int count)
{
	if (!fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_REPLY_ACK)) {
		for (unsigned int i = 0; i < count; i++) {
			int rc = fe_request_locked(fe, &msgs[i], true);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
	/*
	 * Bounded, so that the back-end never blocks writing acknowledgements nobody reads while
	 * this side blocks writing requests it does not read. (count is at most the bound.)
	 */
	if (fe->acks_pending + count > FE_MAX_PIPELINED_ACKS) {
		int rc = fe_collect_acks_locked(fe);
		if (rc < 0)
			return rc;
	}
	for (unsigned int i = 0; i < count; i++)
		msgs[i].hdr.flags = VHOST_USER_VERSION | VHOST_USER_NEED_REPLY;
	int rc = send_locked(fe, msgs, count);
	if (rc == 0)
		atomic_store_explicit(&fe->acks_pending, fe->acks_pending + count,
				      memory_order_relaxed);
	return rc;
}

static int call_locked(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, uint32_t reply_size,
		       int *fd)
{
	struct vt_vu_msg reply;
	uint32_t request = msg->hdr.request;

	/* Replies come in order: the acknowledgements still owed come first. */
	int rc = fe_collect_acks_locked(fe);
	if (rc < 0)
		return rc;
	msg->hdr.flags = VHOST_USER_VERSION;
	rc = send_locked(fe, msg, 1);
	if (rc == 0)
		rc = recv_reply_locked(fe, &reply, request, fd);
	if (rc < 0)
		return rc;
	if (reply.hdr.size != reply_size) {
		char why[64];
		snprintf(why, sizeof(why), "reply of %u bytes, expected %u", reply.hdr.size,
			 reply_size);
		if (fd)
			close(*fd);
		return fe_break(fe, -EPROTO, vt_vu_request_name(request), why);
	}
	msg->hdr = reply.hdr;
	memcpy(&msg->payload, &reply.payload, reply_size);
	return 0;
}

int fe_call_locked(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, uint32_t reply_size)
{
	return call_locked(fe, msg, reply_size, NULL);
}

int fe_call_fd(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, uint32_t reply_size, int *fd)
{
	pthread_mutex_lock(&fe->io_lock);
	int rc = call_locked(fe, msg, reply_size, fd);
	pthread_mutex_unlock(&fe->io_lock);
	return rc;
}

int fe_request_locked(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, bool ack)
{
	uint32_t request = msg->hdr.request;
	bool need_reply = ack && fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_REPLY_ACK);

	int rc = fe_collect_acks_locked(fe);
	if (rc < 0)
		return rc;
	msg->hdr.flags = VHOST_USER_VERSION | (need_reply ? VHOST_USER_NEED_REPLY : 0);
	rc = send_locked(fe, msg, 1);
	if (rc < 0 || !ack)
		return rc;
	if (!need_reply) {
		/*
		 * No REPLY_ACK: a GET_FEATURES round trip at least proves the back-end processed
		 * the request (it handles them in order), though not that it accepted it.
		 */
		struct vt_vu_msg sync = { .hdr.request = VHOST_USER_GET_FEATURES };
		return fe_call_locked(fe, &sync, sizeof(uint64_t));
	}
	return recv_ack_locked(fe, request);
}

int fe_request(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, bool ack)
{
	pthread_mutex_lock(&fe->io_lock);
	int rc = fe_request_locked(fe, msg, ack);
	pthread_mutex_unlock(&fe->io_lock);
	return rc;
}

int fe_call(struct vt_vu_frontend *fe, struct vt_vu_msg *msg, uint32_t reply_size)
{
	pthread_mutex_lock(&fe->io_lock);
	int rc = fe_call_locked(fe, msg, reply_size);
	pthread_mutex_unlock(&fe->io_lock);
	return rc;
}

int fe_send_u64(struct vt_vu_frontend *fe, uint32_t request, uint64_t value, bool ack)
{
	struct vt_vu_msg msg = { .hdr = { .request = request, .size = sizeof(uint64_t) } };

	msg.payload.u64 = value;
	return fe_request(fe, &msg, ack);
}

int fe_send_state(struct vt_vu_frontend *fe, uint32_t request, uint32_t index, uint32_t num,
		  bool ack)
{
	struct vt_vu_msg msg = { .hdr = { .request = request,
					  .size = sizeof(struct vhost_vring_state) } };

	msg.payload.state = (struct vhost_vring_state){ .index = index, .num = num };
	return fe_request(fe, &msg, ack);
}

int fe_get_u64(struct vt_vu_frontend *fe, uint32_t request, uint64_t *value)
{
	struct vt_vu_msg msg = { .hdr.request = request };
	int rc = fe_call(fe, &msg, sizeof(uint64_t));
	if (rc == 0)
		*value = msg.payload.u64;
	return rc;
}

/* ------------------------------------------------------------------ connection */

static int connect_path(const char *path, unsigned int timeout_ms, int *out)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
			*out = fd;
			return 0;
		}
		int err = -errno;
		close(fd);
		/* Not there yet, or its backlog is full: a back-end starting up. */
		if (err != -ENOENT && err != -ECONNREFUSED && err != -EAGAIN && err != -EINTR)
			return err;
		if (now_ns() >= deadline)
			return err;
		struct timespec pause = { .tv_nsec = CONNECT_RETRY_MS * 1000000L };
		nanosleep(&pause, NULL);
	}
}

/* Server mode: listens on @path, takes the first connection within the timeout. */
static int accept_path(const char *path, unsigned int timeout_ms, int *out)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, path);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path); /* a stale socket from an earlier run, never another kind of file */
	int rc = 0;
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 1) < 0) {
		rc = -errno;
		close(lfd);
		return rc;
	}
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	do
		rc = poll(&pfd, 1, (int)timeout_ms);
	while (rc < 0 && errno == EINTR);
	if (rc == 0)
		rc = -ETIMEDOUT;
	else if (rc > 0) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		rc = fd < 0 ? -errno : 0;
		if (fd >= 0)
			*out = fd;
	} else {
		rc = -errno;
	}
	close(lfd);
	unlink(path);
	return rc;
}

/*
 * A back-end that replaces the one this front-end negotiated with (@again: reconnect) must offer
 * at least what was negotiated: the device, its rings and the driver's state depend on it.
 */
static int check_still_offered(struct vt_vu_frontend *fe, uint64_t offered_raw,
			       uint64_t protocol_offered)
{
	uint64_t lost = fe->dma ? fe->features & ~offered_raw : 0;
	uint64_t lost_protocol = fe->protocol & ~protocol_offered;
	bool protocol_bit =
	    (offered_raw ^ fe->offered_raw) & VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES);

	if (!lost && !lost_protocol && !protocol_bit)
		return 0;
	char names[256];
	vt_features_str(fe->params.device_id, lost, names, sizeof(names));
	vt_log(fe->log, VT_LOG_ERROR,
	       "%s: the new back-end no longer offers what was negotiated: features %s, protocol "
	       "features 0x%llx%s",
	       fe->name, lost ? names : "(none)", (unsigned long long)lost_protocol,
	       protocol_bit ? ", VHOST_USER_F_PROTOCOL_FEATURES changed" : "");
	return -EPROTO;
}

static int handshake(struct vt_vu_frontend *fe, bool again)
{
	uint64_t offered_raw = 0, protocol_offered = 0;
	int rc = fe_get_u64(fe, VHOST_USER_GET_FEATURES, &offered_raw);
	if (rc < 0)
		return rc;
	if (offered_raw & VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES)) {
		rc = fe_get_u64(fe, VHOST_USER_GET_PROTOCOL_FEATURES, &protocol_offered);
		if (rc < 0)
			return rc;
	}
	if (again && (rc = check_still_offered(fe, offered_raw, protocol_offered)) < 0)
		return rc;
	fe->offered_raw = offered_raw;
	fe->offered = fe->offered_raw & ~VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES);
	fe->protocol_offered = protocol_offered;
	if (fe->offered_raw & VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES)) {
		uint64_t wanted = again ? fe->protocol
					: fe->protocol_offered & FE_PROTOCOL_FEATURES &
					      ~fe->params.protocol_excluded;
		/* Not acknowledged: whether REPLY_ACK applies to this very message is unclear. */
		rc = fe_send_u64(fe, VHOST_USER_SET_PROTOCOL_FEATURES, wanted, false);
		if (rc < 0)
			return rc;
		fe->protocol = wanted;
	}
	struct vt_vu_msg owner = { .hdr.request = VHOST_USER_SET_OWNER };
	rc = fe_request(fe, &owner, true);
	if (rc < 0)
		return rc;

	/*
	 * A net back-end counts queue pairs (QEMU's vhost-user net, DPDK): a receiveq and a
	 * transmitq each. Its control queue stays with the front-end, as in QEMU.
	 */
	unsigned int per = fe->params.device_id == VIRTIO_ID_NET ? 2 : 1;
	fe->num_queues = per;
	if (fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_MQ)) {
		uint64_t n = 0;
		rc = fe_get_u64(fe, VHOST_USER_GET_QUEUE_NUM, &n);
		if (rc < 0)
			return rc;
		if (n == 0) {
			vt_log(fe->log, VT_LOG_ERROR, "%s: GET_QUEUE_NUM answered 0", fe->name);
			return -EPROTO;
		}
		/* An upper bound, not a count: DPDK answers its compile-time maximum (128). */
		if (n > FE_MAX_QUEUES / per) {
			vt_log(fe->log, VT_LOG_INFO, "%s: GET_QUEUE_NUM answered %llu: using %u",
			       fe->name, (unsigned long long)n, FE_MAX_QUEUES / per);
			n = FE_MAX_QUEUES / per;
		}
		if (again && (unsigned int)n * per < fe->num_queues) {
			vt_log(fe->log, VT_LOG_ERROR,
			       "%s: the new back-end serves %llu queues, the old one %u", fe->name,
			       (unsigned long long)n * per, fe->num_queues);
			return -EPROTO;
		}
		fe->num_queues = (unsigned int)n * per;
	}
	if (fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
		uint64_t n = 0;
		rc = fe_get_u64(fe, VHOST_USER_GET_MAX_MEM_SLOTS, &n);
		if (rc < 0)
			return rc;
		fe->max_mem_slots = n > 4096 ? 4096 : (unsigned int)n;
	}
	if (fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_BACKEND_REQ)) {
		rc = fe_channel_start(fe);
		if (rc < 0)
			return rc;
	}
	char names[512];
	vt_features_str(fe->params.device_id, fe->offered, names, sizeof(names));
	vt_log(fe->log, VT_LOG_INFO, "%s: back-end offers %s; protocol 0x%llx of 0x%llx; %u queues",
	       fe->name, names, (unsigned long long)fe->protocol,
	       (unsigned long long)fe->protocol_offered, fe->num_queues);
	return 0;
}

/* Connects to the back-end (client) or waits for it (server), bounded by connect_timeout_ms. */
static unsigned int connect_wait_ms(const struct vt_vu_frontend *fe)
{
	return fe->params.connect_timeout_ms ? fe->params.connect_timeout_ms : DEFAULT_TIMEOUT_MS;
}

/* Connects (client) or waits for the back-end (server), for at most @wait_ms. */
static int open_connection(struct vt_vu_frontend *fe, unsigned int wait_ms, int *sock)
{
	const struct vt_vu_frontend_params *params = &fe->params;
	int rc = params->server ? accept_path(params->socket_path, wait_ms, sock)
				: connect_path(params->socket_path, wait_ms, sock);
	if (rc < 0)
		vt_log(fe->log, VT_LOG_ERROR, "%s: %s %s: %s", fe->name,
		       params->server ? "waiting for a back-end on" : "connect to",
		       params->socket_path, strerror(-rc));
	return rc;
}

/* Backstops for a message that starts and then stalls half way, in either direction. */
static void set_socket_timeouts(struct vt_vu_frontend *fe, int sock)
{
	struct timeval tv = { .tv_sec = fe->timeout_ms / 1000,
			      .tv_usec = (fe->timeout_ms % 1000) * 1000 };
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

int vt_vu_frontend_connect(const struct vt_vu_frontend_params *params, struct vt_vu_frontend **out)
{
	int sock = params->socket_path ? -1 : params->fd;
	int rc;

	if ((!params->socket_path && params->fd < 0) ||
	    (vt_uses_platform_dma(params->supported) && params->platform_dma == VT_DMA_DIRECT)) {
		if (!params->socket_path && params->fd >= 0)
			close(params->fd);
		return -EINVAL;
	}
	struct vt_vu_frontend *fe = calloc(1, sizeof(*fe));
	if (!fe) {
		if (sock >= 0)
			close(sock);
		return -ENOMEM;
	}
	fe->params = *params;
	snprintf(fe->name, sizeof(fe->name), "%s", params->name ? params->name : "vhost-user");
	fe->params.name = fe->name;
	fe->log = params->log;
	fe->timeout_ms = params->timeout_ms ? (int)params->timeout_ms : DEFAULT_TIMEOUT_MS;
	fe->sock = sock; /* a given socket is ours from here on */
	fe->chan = fe->chan_stop = fe->fault_fd = fe->inflight_fd = -1;
	pthread_mutex_init(&fe->io_lock, NULL);
	fe_queues_init(fe);
	fe->chan_stop = eventfd(0, EFD_CLOEXEC);
	fe->fault_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fe->chan_stop < 0 || fe->fault_fd < 0) {
		rc = -errno;
		goto fail;
	}

	if (params->socket_path) {
		rc = open_connection(fe, connect_wait_ms(fe), &sock);
		if (rc < 0)
			goto fail;
		fe->sock = sock;
	}
	set_socket_timeouts(fe, sock);

	struct vt_driver_params dp = {
		.ops = &fe_transport_ops,
		.transport = fe,
		.supported = params->supported,
		.restricted_memory = params->restricted_memory,
		.platform_dma = params->platform_dma,
		.log = params->log,
	};
	rc = vt_driver_new(&dp, &fe->drv);
	if (rc == 0)
		rc = handshake(fe, false);
	if (rc < 0)
		goto fail;
	*out = fe;
	return 0;
fail:
	vt_vu_frontend_close(fe);
	return rc;
}

void vt_vu_frontend_close(struct vt_vu_frontend *fe)
{
	if (!fe)
		return;
	fe_queues_teardown(fe, NULL, NULL);
	fe_dma_destroy(fe);
	fe_mem_unshare(fe);
	fe_channel_stop(fe);
	if (fe->sock >= 0)
		close(fe->sock);
	if (fe->chan_stop >= 0)
		close(fe->chan_stop);
	if (fe->fault_fd >= 0)
		close(fe->fault_fd);
	if (fe->drv)
		vt_driver_free(fe->drv);
	pthread_mutex_destroy(&fe->io_lock);
	free(fe);
}

/* ------------------------------------------------------------------ negotiation and reset */

int vt_vu_frontend_negotiate(struct vt_vu_frontend *fe)
{
	char names[512];

	if (fe->dma)
		return -EBUSY;
	if (fe->broken)
		return -ENOTCONN;
	int rc = vt_driver_negotiate(fe->drv);
	if (rc < 0)
		return fe->broken ? fe->broken : rc;
	fe->features = vt_driver_features(fe->drv);
	fe->platform = vt_uses_platform_dma(fe->features);
	if (fe->platform && (!fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_BACKEND_REQ) ||
			     !fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_REPLY_ACK)))
		vt_log(fe->log, VT_LOG_WARN,
		       "%s: platform DMA without BACKEND_REQ and REPLY_ACK: IOTLB misses cannot be "
		       "answered",
		       fe->name);
	rc = fe_dma_create(fe);
	if (rc < 0) {
		vt_driver_fail(fe->drv);
		fe->features = 0;
		fe->platform = false;
		return rc;
	}
	vt_features_str(fe->params.device_id, fe->features, names, sizeof(names));
	vt_log(fe->log, VT_LOG_INFO, "%s: negotiated %s; DMA %s", fe->name, names,
	       vt_dma_mode_name(vt_dma_mode(fe->dma)));
	return 0;
}

int vt_vu_frontend_ready(struct vt_vu_frontend *fe)
{
	if (!fe->dma)
		return -EPROTO;
	return vt_driver_ready(fe->drv);
}

/* The device as the driver left it, told to a back-end that knows nothing of it. */
static int replay_device(struct vt_vu_frontend *fe)
{
	bool has_status = fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_STATUS);
	uint8_t status = fe->status;

	uint64_t wire = fe->driver_features;
	if (fe->offered_raw & VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES))
		wire |= VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES);
	int rc = fe_send_u64(fe, VHOST_USER_SET_FEATURES, wire, true);
	if (rc == 0 && has_status)
		rc = fe_send_u64(fe, VHOST_USER_SET_STATUS,
				 status & (uint8_t)~VIRTIO_CONFIG_S_DRIVER_OK, true);
	/* Its memory: the same regions (or bounce window); IOTLB misses refill the rest. */
	fe->regions_added = false;
	if (rc == 0)
		rc = fe_mem_share(fe);
	if (rc == 0)
		rc = fe_queues_resume(fe);
	if (rc == 0 && has_status && (status & VIRTIO_CONFIG_S_DRIVER_OK))
		rc = fe_send_u64(fe, VHOST_USER_SET_STATUS, status, true);
	return rc;
}

/* Drops the connection: until a new one is up, every request fails at once. */
static void disconnect(struct vt_vu_frontend *fe)
{
	fe_channel_stop(fe);
	pthread_mutex_lock(&fe->io_lock);
	if (fe->sock >= 0)
		close(fe->sock);
	fe->sock = -1;
	fe->broken = -ENOTCONN;
	/* Acknowledgements the old back-end owed are gone with it; its table entries are not. */
	atomic_store_explicit(&fe->acks_pending, 0, memory_order_relaxed);
	pthread_mutex_unlock(&fe->io_lock);
}

int vt_vu_frontend_reconnect(struct vt_vu_frontend *fe)
{
	int sock, rc;

	if (!fe->params.socket_path)
		return -ENOTSUP; /* a socket handed in cannot be dialled again */
	disconnect(fe);
	fe_clear_fault(fe);

	uint64_t deadline = now_ns() + (uint64_t)connect_wait_ms(fe) * 1000000ull;
	for (;;) {
		uint64_t now = now_ns();
		unsigned int left_ms =
		    now < deadline ? (unsigned int)((deadline - now) / 1000000u) : 0;
		rc = open_connection(fe, left_ms ? left_ms : 1, &sock);
		if (rc < 0)
			return rc;
		set_socket_timeouts(fe, sock);
		pthread_mutex_lock(&fe->io_lock);
		fe->sock = sock;
		fe->broken = 0;
		pthread_mutex_unlock(&fe->io_lock);
		rc = handshake(fe, true);
		if (rc == 0 && fe->dma)
			rc = replay_device(fe);
		if (rc == 0)
			break;
		/*
		 * Closed on us half way: the old back-end, going down, can still take a connection
		 * on its listening socket before its exit closes both; a restarting one may do the
		 * same. Anything else is the new back-end's answer.
		 */
		if ((rc == -ECONNRESET || rc == -EPIPE) && now_ns() < deadline) {
			vt_log(fe->log, VT_LOG_INFO,
			       "%s: the back-end closed the new connection during the hand-over: "
			       "dialling again",
			       fe->name);
			disconnect(fe);
			struct timespec pause = { .tv_nsec = CONNECT_RETRY_MS * 1000000L };
			nanosleep(&pause, NULL);
			continue;
		}
		pthread_mutex_lock(&fe->io_lock);
		fe_break(fe, rc, "reconnect", "the new back-end could not take the device over");
		pthread_mutex_unlock(&fe->io_lock);
		return rc;
	}
	uint64_t n = atomic_fetch_add_explicit(&fe->reconnects, 1, memory_order_relaxed) + 1;
	vt_log(fe->log, VT_LOG_INFO, "%s: reconnected (%llu so far)%s", fe->name,
	       (unsigned long long)n,
	       fe->inflight_fd >= 0 ? "; the back-end has the inflight records" : "");
	return 0;
}

int vt_vu_frontend_reset(struct vt_vu_frontend *fe, void (*release)(void *opaque, void *token),
			 void *opaque)
{
	fe_queues_teardown(fe, release, opaque);
	fe_dma_destroy(fe);
	fe_mem_unshare(fe);
	int rc = vt_driver_reset(fe->drv);
	fe->features = 0;
	fe->platform = false;
	fe->status = 0;
	fe_clear_fault(fe);
	return fe->broken ? -ENOTCONN : rc;
}

/* ------------------------------------------------------------------ accessors */

int vt_vu_frontend_config_read(struct vt_vu_frontend *fe, uint32_t offset, void *buf, uint32_t len)
{
	return vt_driver_config_read(fe->drv, offset, buf, len);
}

int vt_vu_frontend_config_write(struct vt_vu_frontend *fe, uint32_t offset, const void *buf,
				uint32_t len)
{
	return vt_driver_config_write(fe->drv, offset, buf, len);
}

uint64_t vt_vu_frontend_offered_features(const struct vt_vu_frontend *fe)
{
	return fe->offered;
}

uint64_t vt_vu_frontend_features(const struct vt_vu_frontend *fe)
{
	return fe->features;
}

uint64_t vt_vu_frontend_protocol_offered(const struct vt_vu_frontend *fe)
{
	return fe->protocol_offered;
}

uint64_t vt_vu_frontend_protocol_features(const struct vt_vu_frontend *fe)
{
	return fe->protocol;
}

unsigned int vt_vu_frontend_num_queues(const struct vt_vu_frontend *fe)
{
	return fe->num_queues;
}

unsigned int vt_vu_frontend_max_mem_slots(const struct vt_vu_frontend *fe)
{
	return fe->max_mem_slots;
}

struct vt_driver *vt_vu_frontend_driver(struct vt_vu_frontend *fe)
{
	return fe->drv;
}

struct vt_dma *vt_vu_frontend_dma(struct vt_vu_frontend *fe)
{
	return fe->dma;
}

void vt_vu_frontend_get_stats(struct vt_vu_frontend *fe, struct vt_vu_frontend_stats *stats)
{
	unsigned int mappings = 0;

	pthread_mutex_lock(&fe->io_lock);
	if (fe->mapped) {
		struct vt_iotlb_stats is;
		vt_iotlb_get_stats(fe->mapped, &is);
		mappings = is.entries;
	}
	pthread_mutex_unlock(&fe->io_lock);
#define LOAD(field) atomic_load_explicit(&fe->field, memory_order_relaxed)
	*stats = (struct vt_vu_frontend_stats){
		.requests = LOAD(requests),
		.iotlb_updates = LOAD(iotlb_updates),
		.iotlb_invalidations = LOAD(iotlb_invalidations),
		.reconnects = LOAD(reconnects),
		.misses = LOAD(misses),
		.misses_answered = LOAD(misses_answered),
		.misses_denied = LOAD(misses_denied),
		.access_fails = LOAD(access_fails),
		.config_changes = LOAD(config_changes),
		.bad_backend_messages = LOAD(bad_backend_messages),
		.mappings = mappings,
		.last_fault_iova = LOAD(last_fault_iova),
		.last_fault_perm = LOAD(last_fault_perm),
	};
#undef LOAD
}
