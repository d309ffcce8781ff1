/* SPDX-License-Identifier: MIT */
/* The raw vhost-user test front-end (vu_peer.h). */
#include "vu_peer.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <virtue/spec/virtio_config.h>

static void *serve_main(void *arg)
{
	struct vu_peer *p = arg;
	uint64_t one = 1;

	p->serve_rc = vt_vhost_backend_serve(p->be, p->serve_fd);
	if (write(p->done_fd, &one, sizeof(one)) != sizeof(one)) {
		/* The waiter times out and reports it. */
	}
	return NULL;
}

int vu_peer_connect(struct vu_peer *p, struct vt_vhost_backend *be)
{
	int sv[2];

	memset(p, 0, sizeof(*p));
	p->be = be;
	p->sock = p->chan = p->serve_fd = p->done_fd = -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	p->done_fd = eventfd(0, EFD_CLOEXEC);
	if (p->done_fd < 0) {
		int err = -errno;
		close(sv[0]);
		close(sv[1]);
		return err;
	}
	p->sock = sv[0];
	p->serve_fd = sv[1];
	int rc = pthread_create(&p->thread, NULL, serve_main, p);
	if (rc) {
		close(sv[0]);
		close(sv[1]);
		close(p->done_fd);
		p->sock = p->done_fd = -1;
		return -rc;
	}
	p->serving = true;
	return 0;
}

int vu_peer_wait_serve(struct vu_peer *p, int timeout_ms, int *rc)
{
	struct pollfd pfd = { .fd = p->done_fd, .events = POLLIN };

	if (!p->serving) {
		*rc = p->serve_rc;
		return 0;
	}
	int n;
	do
		n = poll(&pfd, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return -ETIMEDOUT;
	pthread_join(p->thread, NULL);
	p->serving = false;
	close(p->done_fd);
	p->done_fd = -1;
	*rc = p->serve_rc;
	return 0;
}

int vu_peer_disconnect(struct vu_peer *p)
{
	int rc = -ETIMEDOUT;

	if (p->sock >= 0)
		close(p->sock);
	if (p->chan >= 0)
		close(p->chan);
	p->sock = p->chan = -1;
	if (vu_peer_wait_serve(p, VU_PEER_WAIT_MS, &rc) < 0)
		return -ETIMEDOUT;
	return rc;
}

int vu_peer_send(struct vu_peer *p, uint32_t request, uint32_t flags, const void *payload,
		 uint32_t size, const int *fds, unsigned int nfds)
{
	struct vhost_user_header hdr = { .request = request, .flags = flags, .size = size };
	char control[CMSG_SPACE(sizeof(int) * 32)];
	struct iovec iov[2] = { { &hdr, sizeof(hdr) }, { (void *)payload, payload ? size : 0 } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = payload && size ? 2 : 1 };
	size_t total = iov[0].iov_len + iov[1].iov_len;

	if (nfds > 32)
		return -EINVAL;
	if (nfds) {
		memset(control, 0, sizeof(control));
		mh.msg_control = control;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	ssize_t n;
	do
		n = sendmsg(p->sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == total ? 0 : -EPIPE;
}

/* Waits for @fd to become readable: 0, or -ETIMEDOUT. */
static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int n;

	do
		n = poll(&pfd, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == 0 ? -ETIMEDOUT : 0;
}

static int read_full(int sock, void *buf, size_t len, int timeout_ms)
{
	size_t done = 0;

	while (done < len) {
		int rc = wait_readable(sock, timeout_ms);
		if (rc < 0)
			return rc;
		ssize_t n = recv(sock, (char *)buf + done, len - done, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == ECONNRESET ? -ECONNRESET : -errno;
		if (n == 0)
			return -ECONNRESET;
		done += (size_t)n;
	}
	return 0;
}

int vu_peer_recv(int sock, struct vhost_user_header *hdr, void *payload, size_t max, int timeout_ms)
{
	char control[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
	struct iovec iov = { hdr, sizeof(*hdr) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = sizeof(control) };
	int rc = wait_readable(sock, timeout_ms);
	if (rc < 0)
		return rc;
	ssize_t n;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == ECONNRESET ? -ECONNRESET : -errno;
	if (n == 0)
		return -ECONNRESET;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(fd);
		}
	}
	if ((size_t)n < sizeof(*hdr)) {
		rc = read_full(sock, (char *)hdr + n, sizeof(*hdr) - (size_t)n, timeout_ms);
		if (rc < 0)
			return rc;
	}
	size_t take = hdr->size < max ? hdr->size : max;
	rc = read_full(sock, payload, take, timeout_ms);
	if (rc < 0)
		return rc;
	for (size_t left = hdr->size - take; left;) {
		char sink[256];
		size_t chunk = left < sizeof(sink) ? left : sizeof(sink);
		rc = read_full(sock, sink, chunk, timeout_ms);
		if (rc < 0)
			return rc;
		left -= chunk;
	}
	return take == hdr->size ? 0 : -EMSGSIZE;
}

int vu_peer_call(struct vu_peer *p, uint32_t request, const void *payload, uint32_t size,
		 void *reply, size_t reply_max)
{
	struct vhost_user_header hdr;
	int rc = vu_peer_send(p, request, VU_V1, payload, size, NULL, 0);
	if (rc < 0)
		return rc;
	rc = vu_peer_recv(p->sock, &hdr, reply, reply_max, VU_PEER_WAIT_MS);
	if (rc < 0)
		return rc;
	if (hdr.request != request || hdr.flags != (VU_V1 | VHOST_USER_REPLY_MASK))
		return -EBADMSG;
	return (int)hdr.size;
}

int vu_peer_get_u64(struct vu_peer *p, uint32_t request, uint64_t *value)
{
	int rc = vu_peer_call(p, request, NULL, 0, value, sizeof(*value));
	if (rc < 0)
		return rc;
	return rc == sizeof(*value) ? 0 : -EBADMSG;
}

int vu_peer_ack(struct vu_peer *p, uint32_t request, const void *payload, uint32_t size,
		const int *fds, unsigned int nfds)
{
	struct vhost_user_header hdr;
	uint64_t status = 0;
	int rc = vu_peer_send(p, request, VU_V1 | VHOST_USER_NEED_REPLY, payload, size, fds, nfds);
	if (rc < 0)
		return rc == -EPIPE ? -ECONNRESET : rc;
	rc = vu_peer_recv(p->sock, &hdr, &status, sizeof(status), VU_PEER_WAIT_MS);
	if (rc < 0)
		return rc;
	if (hdr.request != request || hdr.flags != (VU_V1 | VHOST_USER_REPLY_MASK) ||
	    hdr.size != sizeof(status))
		return -EBADMSG;
	return status ? 1 : 0;
}

int vu_peer_ack_u64(struct vu_peer *p, uint32_t request, uint64_t value)
{
	return vu_peer_ack(p, request, &value, sizeof(value), NULL, 0);
}

int vu_peer_ack_state(struct vu_peer *p, uint32_t request, uint32_t index, uint32_t num)
{
	struct vhost_vring_state s = { .index = index, .num = num };

	return vu_peer_ack(p, request, &s, sizeof(s), NULL, 0);
}

bool vu_peer_closed(struct vu_peer *p)
{
	char buf[512];

	/* Whatever the back-end sent before it closed is read past. */
	for (;;) {
		if (wait_readable(p->sock, VU_PEER_WAIT_MS) < 0)
			return false;
		ssize_t n = recv(p->sock, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n < 0)
			return false;
	}
}

bool vu_peer_alive(struct vu_peer *p)
{
	uint64_t features = 0;

	return vu_peer_get_u64(p, VHOST_USER_GET_FEATURES, &features) == 0 &&
	       (features & VT_BIT(VIRTIO_F_VERSION_1));
}

int vu_peer_handshake(struct vu_peer *p, uint64_t features, uint64_t protocol)
{
	uint64_t offered, protocol_offered;
	int rc;

	if ((rc = vu_peer_get_u64(p, VHOST_USER_GET_FEATURES, &offered)) < 0 ||
	    (rc = vu_peer_get_u64(p, VHOST_USER_GET_PROTOCOL_FEATURES, &protocol_offered)) < 0)
		return rc;
	/* Without REPLY_ACK nothing could be acknowledged: the handshake always asks for it. */
	protocol |= VT_BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK);
	rc = vu_peer_send(p, VHOST_USER_SET_PROTOCOL_FEATURES, VU_V1, &protocol, sizeof(protocol),
			  NULL, 0);
	if (rc < 0)
		return rc;
	rc = vu_peer_ack(p, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0);
	if (rc == 0)
		rc = vu_peer_ack_u64(p, VHOST_USER_SET_FEATURES,
				     features | VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES));
	return rc > 0 ? -EPROTO : rc;
}

int vu_peer_open_channel(struct vu_peer *p)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	int rc = vu_peer_ack(p, VHOST_USER_SET_BACKEND_REQ_FD, NULL, 0, &sv[1], 1);
	close(sv[1]);
	if (rc != 0) {
		close(sv[0]);
		return rc > 0 ? -EPROTO : rc;
	}
	if (p->chan >= 0)
		close(p->chan);
	p->chan = sv[0];
	return 0;
}

int vu_peer_recv_iotlb(struct vu_peer *p, struct vhost_iotlb_msg *msg, int timeout_ms)
{
	struct vhost_user_header hdr;

	if (p->chan < 0)
		return -ENOTCONN;
	int rc = vu_peer_recv(p->chan, &hdr, msg, sizeof(*msg), timeout_ms);
	if (rc < 0)
		return rc;
	if (hdr.request != VHOST_USER_BACKEND_IOTLB_MSG || hdr.size != sizeof(*msg) ||
	    (hdr.flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION)
		return -EBADMSG;
	return 0;
}

struct vhost_user_memory_region vu_peer_region(const struct vt_shm_region *r)
{
	return (struct vhost_user_memory_region){
		.guest_phys_addr = r->gpa,
		.memory_size = r->size,
		.userspace_addr = (uint64_t)(uintptr_t)r->hva,
		.mmap_offset = r->fd_offset,
	};
}

int vu_peer_set_mem_table(struct vu_peer *p, const struct vt_shm *shm)
{
	struct vhost_user_memory m = { 0 };
	int fds[VHOST_MEMORY_BASELINE_NREGIONS];
	unsigned int n = vt_shm_count(shm);

	if (n == 0 || n > VHOST_MEMORY_BASELINE_NREGIONS)
		return -EINVAL;
	m.nregions = n;
	for (unsigned int i = 0; i < n; i++) {
		const struct vt_shm_region *r = vt_shm_region(shm, i);
		m.regions[i] = vu_peer_region(r);
		fds[i] = r->fd;
	}
	return vu_peer_ack(p, VHOST_USER_SET_MEM_TABLE, &m,
			   (uint32_t)(offsetof(struct vhost_user_memory, regions) +
				      n * sizeof(struct vhost_user_memory_region)),
			   fds, n);
}

int vu_peer_add_mem_reg(struct vu_peer *p, const struct vt_shm_region *r)
{
	struct vhost_user_memory_single m = { .region = vu_peer_region(r) };

	return vu_peer_ack(p, VHOST_USER_ADD_MEM_REG, &m, sizeof(m), &r->fd, 1);
}

int vu_peer_rem_mem_reg(struct vu_peer *p, const struct vt_shm_region *r)
{
	struct vhost_user_memory_single m = { .region = vu_peer_region(r) };

	return vu_peer_ack(p, VHOST_USER_REM_MEM_REG, &m, sizeof(m), NULL, 0);
}

uint64_t vu_peer_uaddr(const struct vt_shm *shm, uint64_t gpa)
{
	for (unsigned int i = 0; i < vt_shm_count(shm); i++) {
		const struct vt_shm_region *r = vt_shm_region(shm, i);
		if (gpa >= r->gpa && gpa - r->gpa < r->size)
			return (uint64_t)(uintptr_t)r->hva + (gpa - r->gpa);
	}
	return 0;
}

int vu_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -errno;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

int vu_count_memfd_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	int n = 0;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "/memfd:"))
			n++;
	fclose(f);
	return n;
}
