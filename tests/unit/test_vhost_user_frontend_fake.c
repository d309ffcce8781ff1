/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user front-end against hostile back-ends: raw sockets driven by the test answer with
 * wrong sizes, codes, flags and versions, stall or hang up (errors within the timeout, no crash),
 * and a scripted back-end floods the back-end channel with IOTLB misses and malformed requests:
 * only mapped addresses are answered, with the access they were mapped for.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <virtue/dma.h>
#include <virtue/shm.h>
#include <virtue/spec/vhost_user.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/vhost_user_frontend.h>

#include "harness.h"
#include "vu_peer.h"

#define F(bit) VT_BIT(VIRTIO_F_##bit)
#define P(bit) VT_BIT(VHOST_USER_PROTOCOL_F_##bit)

#define SHM_GPA	 0x100000000ull
#define SHM_SIZE (1u << 20)
#define WAIT_MS	 5000
/* An IOVA the front-end never hands out (its allocator starts at 1 MiB and grows upwards). */
#define NEVER_MAPPED 0x7ff000000000ull

/* ---------------------------------------------------------------- replies to the handshake */

static void put_msg(int fd, uint32_t request, uint32_t flags, const void *payload, uint32_t size)
{
	struct vhost_user_header h = { .request = request, .flags = flags, .size = size };
	uint8_t buf[sizeof(h) + 512];
	memcpy(buf, &h, sizeof(h));
	if (size)
		memcpy(buf + sizeof(h), payload, size);
	CHECK_EQ(send(fd, buf, sizeof(h) + size, MSG_NOSIGNAL), (ssize_t)(sizeof(h) + size));
}

#define REPLY (VHOST_USER_VERSION | VHOST_USER_REPLY_MASK)

/* Connects to a fake whose first reply (to GET_FEATURES) is already waiting in the socket. */
static int connect_fake(int fake_reply(int fd), int timeout_ms, int64_t *elapsed_ms)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	if (fake_reply(sv[1]) < 0)
		close(sv[1]), sv[1] = -1;
	struct vt_vu_frontend_params p = {
		.fd = sv[0],
		.timeout_ms = (unsigned int)timeout_ms,
		.supported = F(VERSION_1),
	};
	struct vt_vu_frontend *fe = NULL;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = vt_vu_frontend_connect(&p, &fe);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	*elapsed_ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	CHECK(fe == NULL || rc == 0);
	if (fe)
		vt_vu_frontend_close(fe);
	if (sv[1] >= 0)
		close(sv[1]);
	return rc;
}

static int reply_short(int fd)
{
	uint32_t v = 1;
	put_msg(fd, VHOST_USER_GET_FEATURES, REPLY, &v, sizeof(v));
	return 0;
}

static int reply_other_request(int fd)
{
	uint64_t v = F(VERSION_1);
	put_msg(fd, VHOST_USER_GET_QUEUE_NUM, REPLY, &v, sizeof(v));
	return 0;
}

static int reply_without_reply_flag(int fd)
{
	uint64_t v = F(VERSION_1);
	put_msg(fd, VHOST_USER_GET_FEATURES, VHOST_USER_VERSION, &v, sizeof(v));
	return 0;
}

static int reply_wrong_version(int fd)
{
	uint64_t v = F(VERSION_1);
	put_msg(fd, VHOST_USER_GET_FEATURES, 2 | VHOST_USER_REPLY_MASK, &v, sizeof(v));
	return 0;
}

static int reply_half_then_stall(int fd)
{
	struct vhost_user_header h = { VHOST_USER_GET_FEATURES, REPLY, 8 };
	CHECK_EQ(send(fd, &h, sizeof(h), MSG_NOSIGNAL), (ssize_t)sizeof(h));
	return 0;
}

static int reply_nothing(int fd)
{
	return 0;
}

static int hang_up(int fd)
{
	return -1;
}

VT_TEST(a_reply_of_the_wrong_size_code_flags_or_version_is_a_protocol_error)
{
	int64_t ms = 0;
	CHECK_EQ(connect_fake(reply_short, 1000, &ms), -EPROTO);
	CHECK_EQ(connect_fake(reply_other_request, 1000, &ms), -EPROTO);
	CHECK_EQ(connect_fake(reply_without_reply_flag, 1000, &ms), -EPROTO);
	CHECK_EQ(connect_fake(reply_wrong_version, 1000, &ms), -EPROTO);
	CHECK(ms < 1000);
}

VT_TEST(a_backend_that_never_answers_times_out_within_the_bound)
{
	int64_t ms = 0;
	CHECK_EQ(connect_fake(reply_nothing, 200, &ms), -ETIMEDOUT);
	CHECK(ms >= 150 && ms < 2000);
	CHECK_EQ(connect_fake(reply_half_then_stall, 200, &ms), -ETIMEDOUT);
	CHECK(ms < 2000);
	int rc = connect_fake(hang_up, 200, &ms);
	CHECK(rc == -EPIPE || rc == -ECONNRESET);
}

/* ---------------------------------------------------------------- the back-end channel */

/*
 * A scripted back-end on a thread: offers ACCESS_PLATFORM with REPLY_ACK and BACKEND_REQ, acks
 * everything, records the IOTLB messages it gets, and hands the test its end of the channel.
 */
#define FAKE_KEPT 64

struct fake {
	int sock;
	pthread_t thread;
	_Atomic int chan;
	pthread_mutex_t lock;
	unsigned int updates, invalidations;
	struct vhost_iotlb_msg last_update;
	/*
	 * The UPDATE (counting from 1) answered with status 1 (a refusal), and the one answered
	 * with a 4-byte payload (no acknowledgement at all); 0: none.
	 */
	unsigned int refuse_update, garble_update;
	/* The first FAKE_KEPT updates, and whether each asked for a reply. */
	struct vhost_iotlb_msg kept[FAKE_KEPT];
	bool kept_need_reply[FAKE_KEPT];
};

static int fake_recv(int fd, struct vhost_user_header *h, uint8_t *payload, int *rfd)
{
	char control[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = { h, sizeof(*h) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = sizeof(control) };
	ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
	if (n != (ssize_t)sizeof(*h))
		return -1;
	*rfd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < count; i++) {
			int f;
			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*rfd < 0)
				*rfd = f;
			else
				close(f);
		}
	}
	if (h->size > 512)
		return -1;
	if (h->size && recv(fd, payload, h->size, MSG_WAITALL) != (ssize_t)h->size)
		return -1;
	return 0;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct vhost_user_header h;
	uint8_t payload[512];
	int fd;

	while (fake_recv(f->sock, &h, payload, &fd) == 0) {
		uint64_t v = 0;
		bool reply = true;
		switch (h.request) {
		case VHOST_USER_GET_FEATURES:
			v = F(VERSION_1) | F(ACCESS_PLATFORM) |
			    VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES);
			break;
		case VHOST_USER_GET_PROTOCOL_FEATURES:
			v = P(REPLY_ACK) | P(BACKEND_REQ);
			break;
		case VHOST_USER_SET_BACKEND_REQ_FD:
			atomic_store(&f->chan, fd);
			fd = -1;
			reply = h.flags & VHOST_USER_NEED_REPLY;
			break;
		case VHOST_USER_IOTLB_MSG: {
			struct vhost_iotlb_msg m;
			memcpy(&m, payload, sizeof(m));
			pthread_mutex_lock(&f->lock);
			if (m.type == VHOST_IOTLB_UPDATE) {
				if (f->updates < FAKE_KEPT) {
					f->kept[f->updates] = m;
					f->kept_need_reply[f->updates] =
					    h.flags & VHOST_USER_NEED_REPLY;
				}
				f->updates++;
				f->last_update = m;
				v = f->updates == f->refuse_update;
				if (f->updates == f->garble_update) {
					uint32_t four = 4;
					put_msg(f->sock, h.request, REPLY, &four, sizeof(four));
					h.flags &= ~VHOST_USER_NEED_REPLY;
				}
			} else {
				f->invalidations++;
			}
			pthread_mutex_unlock(&f->lock);
			reply = h.flags & VHOST_USER_NEED_REPLY;
			break;
		}
		default:
			reply = h.flags & VHOST_USER_NEED_REPLY;
			break;
		}
		if (fd >= 0)
			close(fd);
		if (reply)
			put_msg(f->sock, h.request, REPLY, &v, sizeof(v));
	}
	return NULL;
}

static struct vhost_iotlb_msg miss(uint64_t iova, uint8_t perm)
{
	return (struct vhost_iotlb_msg){ .iova = iova, .perm = perm, .type = VHOST_IOTLB_MISS };
}

static unsigned int fake_updates(struct fake *f, struct vhost_iotlb_msg *last)
{
	pthread_mutex_lock(&f->lock);
	unsigned int n = f->updates;
	if (last)
		*last = f->last_update;
	pthread_mutex_unlock(&f->lock);
	return n;
}

/*
 * A mapping's UPDATE goes out without waiting for its acknowledgement (collected at the next
 * kick or request): the fake may process it a moment after vt_dma_map returned.
 */
static unsigned int wait_updates(struct fake *f, unsigned int want, struct vhost_iotlb_msg *last)
{
	unsigned int n = 0;
	for (int i = 0; i < WAIT_MS && (n = fake_updates(f, last)) < want; i++)
		usleep(1000);
	return n;
}

/* The channel carries a request with NEED_REPLY: the front-end's status answer, or -1. */
static int64_t channel_call(int chan, uint32_t request, const void *payload, uint32_t size)
{
	put_msg(chan, request, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY, payload, size);
	struct pollfd pfd = { .fd = chan, .events = POLLIN };
	if (poll(&pfd, 1, WAIT_MS) != 1)
		return -1;
	struct vhost_user_header h;
	uint64_t v;
	if (recv(chan, &h, sizeof(h), MSG_WAITALL) != (ssize_t)sizeof(h) || h.request != request ||
	    !(h.flags & VHOST_USER_REPLY_MASK) || h.size != sizeof(v) ||
	    recv(chan, &v, sizeof(v), MSG_WAITALL) != (ssize_t)sizeof(v))
		return -1;
	return (int64_t)v;
}

/* A front-end in strict mode, over shared memory of its own, connected to a fake on a thread. */
struct fake_rig {
	struct vt_shm *shm;
	struct fake f;
	int sv[2];
	struct vt_vu_frontend *fe;
};

/* Starts the fake and connects and negotiates the front-end, which logs through @log. */
static int fake_rig_start(struct fake_rig *g, const struct vt_log *log)
{
	const struct vt_shm_region *r;

	*g = (struct fake_rig){ .f = { .chan = -1 }, .sv = { -1, -1 } };
	pthread_mutex_init(&g->f.lock, NULL);
	int rc = vt_shm_new(&g->shm);
	if (rc == 0)
		rc = vt_shm_add_memfd(g->shm, SHM_SIZE, SHM_GPA, &r);
	if (rc == 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, g->sv) < 0)
		rc = -errno;
	if (rc < 0)
		return rc;
	g->f.sock = g->sv[1];
	rc = -pthread_create(&g->f.thread, NULL, fake_main, &g->f);
	if (rc < 0)
		return rc;
	struct vt_vu_frontend_params p = {
		.fd = g->sv[0],
		.timeout_ms = WAIT_MS,
		.device_id = VIRTIO_ID_RNG,
		.supported = F(VERSION_1) | F(ACCESS_PLATFORM),
		.platform_dma = VT_DMA_IOMMU_STRICT,
		.shm = g->shm,
		.name = "fe",
		.log = log,
	};
	rc = vt_vu_frontend_connect(&p, &g->fe);
	return rc < 0 ? rc : vt_vu_frontend_negotiate(g->fe);
}

/* Closes the front-end, which ends the fake, and frees the rest. */
static void fake_rig_finish(struct fake_rig *g)
{
	vt_vu_frontend_close(g->fe);
	pthread_join(g->f.thread, NULL);
	close(g->sv[1]);
	int chan = atomic_load(&g->f.chan);
	if (chan >= 0)
		close(chan);
	pthread_mutex_destroy(&g->f.lock);
	vt_shm_free(g->shm);
}

VT_TEST(misses_are_answered_only_for_mapped_addresses_with_that_access)
{
	int fds_before = vu_count_fds(), maps_before = vu_count_memfd_maps();
	struct fake_rig g;
	REQUIRE_EQ(fake_rig_start(&g, NULL), 0);
	struct fake *f = &g.f;
	struct vt_vu_frontend *fe = g.fe;
	struct vt_shm *shm = g.shm;
	int chan = atomic_load(&f->chan);
	REQUIRE(chan >= 0);
	struct timeval tv = { .tv_sec = WAIT_MS / 1000 };
	setsockopt(chan, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	/* A to-device mapping: published read-only. */
	void *buf;
	REQUIRE_EQ(vt_shm_alloc(shm, 4096, 4096, &buf), 0);
	uint64_t iova;
	struct vt_dma *dma = vt_vu_frontend_dma(fe);
	REQUIRE_EQ(vt_dma_map(dma, buf, 4096, VT_DMA_TO_DEVICE, &iova), 0);
	struct vhost_iotlb_msg last;
	CHECK_EQ(wait_updates(f, 1, &last), 1);
	CHECK_EQ(last.iova, iova);
	CHECK_EQ(last.size, 4096);
	CHECK_EQ(last.uaddr, (uint64_t)(uintptr_t)buf);
	CHECK_EQ(last.perm, VHOST_ACCESS_RO);

	/* A read miss inside it: answered with the whole mapping, read-only. */
	struct vhost_iotlb_msg m = miss(iova + 100, VHOST_ACCESS_RO);
	CHECK_EQ(channel_call(chan, VHOST_USER_BACKEND_IOTLB_MSG, &m, sizeof(m)), 0);
	CHECK_EQ(fake_updates(f, &last), 2);
	CHECK_EQ(last.iova, iova);
	CHECK_EQ(last.perm, VHOST_ACCESS_RO);

	/* A write miss on it, and misses where nothing is mapped: no update, faults recorded. */
	m = miss(iova + 100, VHOST_ACCESS_WO);
	CHECK_EQ(channel_call(chan, VHOST_USER_BACKEND_IOTLB_MSG, &m, sizeof(m)), 0);
	unsigned int storm = (unsigned int)vt_test_scaled(5000);
	for (unsigned int i = 0; i < storm; i++) {
		m = miss(NEVER_MAPPED + i * 4096ull, VHOST_ACCESS_RW);
		put_msg(chan, VHOST_USER_BACKEND_IOTLB_MSG, VHOST_USER_VERSION, &m, sizeof(m));
	}
	m = miss(iova + 4096, VHOST_ACCESS_RO); /* one past the end */
	CHECK_EQ(channel_call(chan, VHOST_USER_BACKEND_IOTLB_MSG, &m, sizeof(m)), 0);
	CHECK_EQ(fake_updates(f, NULL), 2);
	struct vt_vu_frontend_stats st;
	vt_vu_frontend_get_stats(fe, &st);
	CHECK_EQ(st.misses, storm + 3);
	CHECK_EQ(st.misses_answered, 1);
	CHECK_EQ(st.misses_denied, storm + 2);
	CHECK_EQ(st.last_fault_iova, iova + 4096);

	/* After the unmap the address is gone for misses too. */
	REQUIRE_EQ(vt_dma_unmap(dma, iova, 4096, VT_DMA_TO_DEVICE), 0);
	m = miss(iova, VHOST_ACCESS_RO);
	CHECK_EQ(channel_call(chan, VHOST_USER_BACKEND_IOTLB_MSG, &m, sizeof(m)), 0);
	CHECK_EQ(fake_updates(f, NULL), 2);
	vt_vu_frontend_get_stats(fe, &st);
	CHECK_EQ(st.mappings, 0);

	/* Malformed channel traffic: refused (status 1), counted, nothing else happens. */
	uint32_t four = 4;
	CHECK_EQ(channel_call(chan, VHOST_USER_BACKEND_IOTLB_MSG, &four, sizeof(four)), 1);
	CHECK_EQ(channel_call(chan, 77, NULL, 0), 1);
	m.type = VHOST_IOTLB_UPDATE;
	CHECK_EQ(channel_call(chan, VHOST_USER_BACKEND_IOTLB_MSG, &m, sizeof(m)), 1);
	CHECK_EQ(channel_call(chan, VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, NULL, 0), 0);
	vt_vu_frontend_get_stats(fe, &st);
	CHECK_EQ(st.bad_backend_messages, 3);
	CHECK_EQ(st.config_changes, 1);
	/* A broken stream: the front-end closes its end of the channel. */
	put_msg(chan, VHOST_USER_BACKEND_IOTLB_MSG, 3, &m, sizeof(m));
	struct pollfd pfd = { .fd = chan, .events = POLLIN };
	CHECK_EQ(poll(&pfd, 1, WAIT_MS), 1);
	char c;
	CHECK_EQ(recv(chan, &c, 1, 0), 0);

	vt_shm_release(shm, buf, 4096);
	fake_rig_finish(&g);
	CHECK_EQ(vu_count_fds(), fds_before);
	CHECK_EQ(vu_count_memfd_maps(), maps_before);
}

VT_TEST(a_burst_of_maps_reaches_the_backend_as_one_update_each_in_order)
{
	struct fake_rig g;
	REQUIRE_EQ(fake_rig_start(&g, NULL), 0);
	struct fake *f = &g.f;
	struct vt_vu_frontend *fe = g.fe;
	struct vt_shm *shm = g.shm;
	struct vt_dma *dma = vt_vu_frontend_dma(fe);
	REQUIRE(dma);

	/* More than one group of messages (16), and more than the pipeline holds unacknowledged. */
	enum { N = 40 };
	struct iovec bufs[N];
	uint64_t bus[N];
	for (unsigned int i = 0; i < N; i++) {
		void *b;
		REQUIRE_EQ(vt_shm_alloc(shm, 256, 64, &b), 0);
		bufs[i] = (struct iovec){ b, 64 + i };
	}
	struct vt_vu_frontend_stats before, after;
	vt_vu_frontend_get_stats(fe, &before);
	int error = 0;
	CHECK_EQ(vt_dma_map_burst(dma, bufs, N, VT_DMA_FROM_DEVICE, bus, &error), N);
	CHECK_EQ(error, 0);
	CHECK_EQ(wait_updates(f, N, NULL), N);
	vt_vu_frontend_get_stats(fe, &after);
	CHECK_EQ(after.iotlb_updates - before.iotlb_updates, N);
	CHECK_EQ(after.mappings, N);

	/* One UPDATE per buffer, in the burst's order, each its own whole page, write-only. */
	pthread_mutex_lock(&f->lock);
	unsigned int first = f->updates - N;
	for (unsigned int i = 0; i < N; i++) {
		const struct vhost_iotlb_msg *m = &f->kept[first + i];
		uint64_t addr = (uint64_t)(uintptr_t)bufs[i].iov_base;
		CHECK_EQ(m->type, VHOST_IOTLB_UPDATE);
		CHECK_EQ(m->iova, bus[i] & ~4095ull);
		CHECK_EQ(m->size, 4096);
		CHECK_EQ(m->uaddr, addr & ~4095ull);
		CHECK_EQ(m->perm, VHOST_ACCESS_WO);
		CHECK(f->kept_need_reply[first + i]);
		CHECK_EQ(bus[i] & 4095, addr & 4095);
	}
	pthread_mutex_unlock(&f->lock);
	/* The front-end's own table has them too: what it answers misses from. */
	void *hva;
	for (unsigned int i = 0; i < N; i++) {
		CHECK_EQ(
		    vt_vu_frontend_bus_to_hva(fe, bus[i], bufs[i].iov_len, VT_ACCESS_WRITE, &hva),
		    0);
		CHECK(hva == bufs[i].iov_base);
		CHECK_EQ(
		    vt_vu_frontend_bus_to_hva(fe, bus[i], bufs[i].iov_len, VT_ACCESS_READ, &hva),
		    -EACCES);
	}

	/* Strict unmaps wait for their acknowledgements, the burst's included: all were acked. */
	for (unsigned int i = 0; i < N; i++)
		CHECK_EQ(vt_dma_unmap(dma, bus[i], bufs[i].iov_len, VT_DMA_FROM_DEVICE), 0);
	vt_vu_frontend_get_stats(fe, &after);
	CHECK_EQ(after.mappings, 0);
	CHECK_EQ(after.iotlb_invalidations - before.iotlb_invalidations, N);

	for (unsigned int i = 0; i < N; i++)
		vt_shm_release(shm, bufs[i].iov_base, 256);
	fake_rig_finish(&g);
}

struct log_lines {
	pthread_mutex_t lock;
	char text[4096];
};

static void keep_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_lines *l = opaque;
	pthread_mutex_lock(&l->lock);
	size_t used = strlen(l->text);
	snprintf(l->text + used, sizeof(l->text) - used, "%s\n", message);
	pthread_mutex_unlock(&l->lock);
}

static bool log_has(struct log_lines *l, const char *what)
{
	pthread_mutex_lock(&l->lock);
	bool has = strstr(l->text, what) != NULL;
	pthread_mutex_unlock(&l->lock);
	return has;
}

/*
 * A burst's UPDATEs go out without waiting; the acknowledgements owed are read together at the
 * next request. @garble: the third is answered with a malformed reply instead of a refusal.
 * Either way the connection is latched broken (the refusal cannot be handed back to whoever
 * mapped), and from then on the front-end's table alone is the IOMMU.
 */
static void third_update_not_acknowledged(bool garble)
{
	struct log_lines lines = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct vt_log log = { .fn = keep_log, .opaque = &lines, .max_level = VT_LOG_ERROR };
	struct fake_rig g;
	REQUIRE_EQ(fake_rig_start(&g, &log), 0);
	struct fake *f = &g.f;
	struct vt_vu_frontend *fe = g.fe;
	struct vt_shm *shm = g.shm;
	struct vt_dma *dma = vt_vu_frontend_dma(fe);
	REQUIRE(dma);

	enum { N = 5 };
	struct iovec bufs[N];
	uint64_t bus[N];
	for (unsigned int i = 0; i < N; i++) {
		void *b;
		REQUIRE_EQ(vt_shm_alloc(shm, 64, 64, &b), 0);
		bufs[i] = (struct iovec){ b, 64 };
	}
	pthread_mutex_lock(&f->lock);
	if (garble)
		f->garble_update = f->updates + 3;
	else
		f->refuse_update = f->updates + 3;
	pthread_mutex_unlock(&f->lock);
	int error = 0;
	CHECK_EQ(vt_dma_map_burst(dma, bufs, N, VT_DMA_TO_DEVICE, bus, &error), N);
	CHECK_EQ(wait_updates(f, f->updates + 0 + N, NULL) >= N, true);
	CHECK(!log_has(&lines, "refused") && !log_has(&lines, "REPLY_ACK"));

	/* The next request reads the acknowledgements owed: the third breaks the connection. */
	struct vt_vu_frontend_stats before, after;
	vt_vu_frontend_get_stats(fe, &before);
	CHECK_EQ(vt_dma_unmap(dma, bus[0], 64, VT_DMA_TO_DEVICE), 0);
	if (garble)
		CHECK(log_has(&lines, "not the REPLY_ACK of an IOTLB message where one was owed"));
	else
		CHECK(log_has(&lines,
			      "an UPDATE published ahead of its acknowledgement was refused"));
	/* Nothing more goes to that back-end; the table still maps and unmaps. */
	vt_vu_frontend_get_stats(fe, &after);
	CHECK_EQ(after.requests, before.requests);
	for (unsigned int i = 1; i < N; i++)
		CHECK_EQ(vt_dma_unmap(dma, bus[i], 64, VT_DMA_TO_DEVICE), 0);
	vt_vu_frontend_get_stats(fe, &after);
	CHECK_EQ(after.mappings, 0);
	CHECK_EQ(after.requests, before.requests);

	for (unsigned int i = 0; i < N; i++)
		vt_shm_release(shm, bufs[i].iov_base, 64);
	fake_rig_finish(&g);
}

VT_TEST(a_refused_pipelined_update_breaks_the_connection_at_the_next_request)
{
	third_update_not_acknowledged(false);
}

VT_TEST(a_malformed_reply_where_an_acknowledgement_was_owed_breaks_the_connection)
{
	third_update_not_acknowledged(true);
}
