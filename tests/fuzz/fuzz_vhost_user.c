/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the vhost-user back-end's control channel: the input is a stream of front-end messages
 * written to a socketpair whose other end an in-process back-end serves (on a thread joined every
 * iteration), with a trivial device model. Whatever arrives, the back-end must not crash, hang,
 * leak memory, fds or mappings, and must end the connection with 0 or -EPROTO.
 *
 * Input: [0] mode (bit 0: attach fds to the requests that carry them: a 64 KiB memfd per memory
 * region, an eventfd per vring fd, a socket for SET_BACKEND_REQ_FD), then messages: a 12-byte
 * header (request, flags, size; host order) and min(size, what is left) payload bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <virtue/spec/vhost_user.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/vhost_user_backend.h>

#define MEMFD_SIZE (64u << 10)
#define IOV_MAX_FZ 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void quiet(void *opaque, enum vt_log_level level, const char *message)
{
	(void)opaque, (void)level, (void)message;
}

static const struct vt_log quiet_log = { .fn = quiet };

/* ---------------------------------------------------------------- a trivial device model */

struct sink_queue {
	struct vt_vq_dev *vq;
	struct iovec iov[IOV_MAX_FZ];
};

static int sink_start(void *opaque, unsigned int index, struct vt_vq_dev *vq, uint64_t features,
		      void **engine)
{
	struct sink_queue *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	q->vq = vq;
	*engine = q;
	return 0;
}

/* Returns every buffer at once, having written one byte where it may. */
static int sink_poll(void *engine, bool *notify)
{
	struct sink_queue *q = engine;
	struct vt_vq_chain c;
	int done = 0, rc;

	while ((rc = vt_vq_dev_pop(q->vq, &c, q->iov, IOV_MAX_FZ)) == 0 && done < 64) {
		uint32_t written = 0;
		if (c.nwritable) {
			*(uint8_t *)q->iov[c.nreadable].iov_base = 0x5a;
			written = 1;
		}
		if (vt_vq_dev_push(q->vq, &c, written) < 0)
			break;
		done++;
	}
	*notify = vt_vq_dev_flush(q->vq);
	if (rc == -EFAULT)
		return -EFAULT;
	if (rc == -EPROTO || rc == -ENOBUFS)
		return -EPROTO;
	return done;
}

static int sink_drain(void *engine, bool *notify)
{
	struct sink_queue *q = engine;

	*notify = vt_vq_dev_flush(q->vq);
	return 0;
}

static void sink_stop(void *engine)
{
	free(engine);
}

static const struct vt_vu_queue_ops sink_ops = {
	.start = sink_start,
	.poll = sink_poll,
	.drain = sink_drain,
	.stop = sink_stop,
};

/* ---------------------------------------------------------------- the harness */

static const uint8_t config[16] = { 1, 2, 3, 4, 5, 6, 7, 8 };

static struct vt_vhost_backend *backend(void)
{
	static struct vt_vhost_backend *be;

	if (!be) {
		struct vt_vhost_backend_params p = {
			.device_id = VIRTIO_ID_RNG,
			.name = "fuzz",
			.num_queues = 2,
			.max_queue_size = 256,
			.config = config,
			.config_size = sizeof(config),
			.queue_ops = &sink_ops,
			.num_threads = 2,
			.log = &quiet_log,
		};
		if (vt_vhost_backend_new(&p, &be) < 0)
			abort();
	}
	return be;
}

struct serve_arg {
	struct vt_vhost_backend *be;
	int fd;
	int rc;
};

static void *serve_main(void *opaque)
{
	struct serve_arg *a = opaque;

	a->rc = vt_vhost_backend_serve(a->be, a->fd);
	return NULL;
}

static int count_fds(void)
{
	int n = 0;

	/* Cheaper than reading /proc/self/fd: probe the low fds this process uses. */
	for (int fd = 0; fd < 256; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n;
}

/* The fds a request carries, made fresh (the caller closes them after sending). */
static unsigned int make_fds(const struct vhost_user_header *h, const uint8_t *payload, size_t len,
			     int *fds, int *chan)
{
	unsigned int n = 0;

	switch (h->request) {
	case VHOST_USER_SET_MEM_TABLE: {
		uint32_t regions = 0;
		if (len >= 4)
			memcpy(&regions, payload, 4);
		n = regions > VHOST_USER_MAX_FDS ? VHOST_USER_MAX_FDS : regions;
		for (unsigned int i = 0; i < n; i++) {
			fds[i] = memfd_create("fuzz-mem", MFD_CLOEXEC);
			if (fds[i] >= 0 && ftruncate(fds[i], MEMFD_SIZE) < 0) {
				/* An empty memfd: the back-end must refuse it. */
			}
		}
		return n;
	}
	case VHOST_USER_ADD_MEM_REG:
		fds[0] = memfd_create("fuzz-mem", MFD_CLOEXEC);
		if (fds[0] >= 0 && ftruncate(fds[0], MEMFD_SIZE) < 0) {
			/* As above. */
		}
		return 1;
	case VHOST_USER_SET_VRING_KICK:
	case VHOST_USER_SET_VRING_CALL:
	case VHOST_USER_SET_VRING_ERR: {
		uint64_t v = 0;
		memcpy(&v, payload, len < 8 ? len : 8);
		if (v & VHOST_USER_VRING_NOFD_MASK)
			return 0;
		fds[0] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		return 1;
	}
	case VHOST_USER_SET_BACKEND_REQ_FD: {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			return 0;
		if (*chan >= 0)
			close(*chan);
		*chan = sv[0];
		fds[0] = sv[1];
		return 1;
	}
	default:
		return 0;
	}
}

/* Reads whatever is waiting on @fd (replies, back-end messages): -1 once it is closed. */
static int drain_fd(int fd)
{
	char buf[4096];

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0)
			continue;
		if (n == 0)
			return -1;
		return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
	}
}

/* Sends one message, reading replies meanwhile so neither side blocks on a full socket. */
static int send_message(int sock, int chan, const void *buf, size_t len, const int *fds,
			unsigned int nfds)
{
	char control[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
	size_t done = 0;

	while (done < len) {
		struct pollfd pfd[2] = { { .fd = sock, .events = POLLIN | POLLOUT },
					 { .fd = chan, .events = POLLIN } };
		int r = poll(pfd, chan >= 0 ? 2 : 1, 10000);
		if (r < 0 && errno == EINTR) /* libFuzzer's timeout timer */
			continue;
		if (r <= 0)
			return -1; /* the back-end stopped reading: the abort below says so */
		if (pfd[0].revents & POLLIN && drain_fd(sock) < 0)
			return -1;
		if (chan >= 0 && pfd[1].revents & POLLIN)
			drain_fd(chan);
		if (pfd[0].revents & (POLLERR | POLLHUP))
			return -1;
		if (!(pfd[0].revents & POLLOUT))
			continue;
		struct iovec iov = { (char *)buf + done, len - done };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (done == 0 && nfds) {
			memset(control, 0, sizeof(control));
			mh.msg_control = control;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
		}
		ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool with_fds = data[0] & 1;
	data++;
	size--;

	struct vt_vhost_backend *be = backend();
	int before = count_fds();
	int sv[2], chan = -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	struct serve_arg arg = { .be = be, .fd = sv[1] };
	pthread_t thread;
	if (pthread_create(&thread, NULL, serve_main, &arg) != 0) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}

	uint8_t msg[sizeof(struct vhost_user_header) + 512];
	while (size >= sizeof(struct vhost_user_header)) {
		struct vhost_user_header h;
		memcpy(&h, data, sizeof(h));
		size_t payload = h.size < size - sizeof(h) ? h.size : size - sizeof(h);
		if (payload > sizeof(msg) - sizeof(h))
			payload = sizeof(msg) - sizeof(h);
		size_t len = sizeof(h) + payload;
		memcpy(msg, data, len);
		data += len;
		size -= len;
		int fds[VHOST_USER_MAX_FDS];
		unsigned int nfds = 0;
		if (with_fds)
			nfds = make_fds(&h, msg + sizeof(h), payload, fds, &chan);
		int rc = send_message(sv[0], chan, msg, len, fds, nfds);
		for (unsigned int i = 0; i < nfds; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		if (rc < 0)
			break;
	}
	/* Trailing bytes shorter than a header go out as a truncated message. */
	if (size)
		send_message(sv[0], chan, data, size, NULL, 0);
	shutdown(sv[0], SHUT_WR);
	/* Read until the back-end closes its end: serve has returned. */
	for (;;) {
		struct pollfd pfd[2] = { { .fd = sv[0], .events = POLLIN },
					 { .fd = chan, .events = POLLIN } };
		int r = poll(pfd, chan >= 0 ? 2 : 1, 10000);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			abort(); /* the back-end hangs */
		if (chan >= 0 && pfd[1].revents & POLLIN && drain_fd(chan) < 0) {
			close(chan);
			chan = -1;
		}
		if (pfd[0].revents && drain_fd(sv[0]) < 0)
			break;
	}
	pthread_join(thread, NULL);
	close(sv[0]);
	if (chan >= 0)
		close(chan);
	if (arg.rc != 0 && arg.rc != -EPROTO)
		abort();
	struct vt_vhost_backend_stats st;
	vt_vhost_backend_get_stats(be, &st);
	if (st.mem_regions != 0 || count_fds() != before)
		abort(); /* a mapping or an fd outlived the connection */
	return 0;
}
