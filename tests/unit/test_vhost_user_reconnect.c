/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user front-end outlives its back-end: a virtue back-end (echo model) runs in a child
 * process that keeps every third buffer it takes unanswered and is then killed with SIGKILL, a
 * real crash with requests in flight. The front-end sees the hang-up, a new back-end process
 * starts on the same socket path, vt_vu_frontend_reconnect hands the device over, and every
 * buffer posted before, during and after the outage comes back exactly once with the right bytes.
 * Both ring formats; with INFLIGHT_SHMFD (the new back-end resubmits from the inflight records)
 * and without (the front-end's rebased ring alone must do it); every DMA mode (under
 * ACCESS_PLATFORM the new back-end starts with an empty IOTLB and is fed by misses, the bounce
 * window included); client mode and server mode
 * (the front-end listens and the new back-end dials in). A back-end that no longer offers a
 * negotiated feature is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <virtue/dma.h>
#include <virtue/shm.h>
#include <virtue/spec/vhost_user.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/vhost_user_backend.h>
#include <virtue/vhost_user_frontend.h>
#include <virtue/virtqueue.h>

#include "harness.h"
#include "vu_echo.h"

#define F(bit) VT_BIT(VIRTIO_F_##bit)
#define P(bit) VT_BIT(VHOST_USER_PROTOCOL_F_##bit)

#define SHM_GPA	 0x100000000ull
#define SHM_SIZE (4u << 20)
#define QSIZE	 32
#define NBUF	 96 /* buffers in the scenario: three ring-fulls */
#define WAIT_MS	 5000
#define HOLD	 3

struct buffer {
	uint8_t *in, *out;
	uint32_t in_len, out_len;
	bool posted, done;
};

struct rig {
	char dir[64], path[96];
	bool server; /* the front-end listens, the back-ends dial in */
	/*
	 * What the driver finds past the echo's answer: its poison, except in bounce mode, which
	 * copies the whole buffer back from a window slot zeroed at map time.
	 */
	uint8_t past;
	pid_t child;
	struct vt_shm *shm;
	struct vt_vu_frontend *fe;
	struct buffer bufs[NBUF];
	struct vt_log log;
};

/* The child's end of the connection: accepted on @lfd, or dialled to @addr (retrying 5 s). */
static int child_connection(int lfd, const struct sockaddr_un *addr)
{
	if (lfd >= 0)
		return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	for (int tries = 0; tries < 500; tries++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
			return fd;
		if (fd >= 0)
			close(fd);
		usleep(10000);
	}
	return -1;
}

/*
 * The back-end's part, in a process of its own: it serves one connection and exits. Client
 * front-end: it accepts on @lfd, bound by the parent so that a connect cannot race it. Server
 * front-end (@lfd < 0): it connects to the front-end's socket at @addr instead, as DPDK's
 * net_vhost with client=1 does. @hold_every: vu_echo.hold_every; @excluded: transport features
 * it does not offer.
 */
static __attribute__((noreturn)) void serve_backend(int lfd, const struct sockaddr_un *addr,
						    unsigned int hold_every, uint64_t excluded)
{
	struct vu_echo echo = { .hold_every = hold_every };
	struct vt_log quiet = { .max_level = VT_LOG_WARN };
	struct vt_vhost_backend_params params = {
		.device_id = VIRTIO_ID_RNG,
		.name = "echo-child",
		.transport_features_excluded = excluded,
		.num_queues = 1,
		.max_queue_size = 256,
		.queue_ops = &vu_echo_ops,
		.opaque = &echo,
		.num_threads = 1,
		.log = &quiet,
	};
	struct vt_vhost_backend *be;
	int fd = child_connection(lfd, addr);
	/*
	 * A back-end that goes down only after taking a connection (the old one's listening
	 * socket outlives it for a moment) is played by hanging up on the first one: a negative
	 * @hold_every.
	 */
	if (fd >= 0 && (int)hold_every < 0) {
		struct timespec pause = { .tv_nsec = 20 * 1000000L };
		nanosleep(&pause, NULL);
		close(fd);
		echo.hold_every = 0;
		fd = child_connection(lfd, addr);
	}
	if (fd < 0 || vt_vhost_backend_new(&params, &be) < 0)
		_exit(2);
	vt_vhost_backend_serve(be, fd);
	_exit(0);
}

#define BACKEND_ENV "VT_TEST_RECONNECT_BACKEND"

extern char **environ;

/*
 * A child started by spawn_backend: this binary again, told by BACKEND_ENV to be the back-end
 * before main runs. (A forked child of this multi-threaded process may call only what is
 * async-signal-safe until it execs, and TSan ends it when it starts a thread.)
 */
static __attribute__((constructor)) void backend_child(void)
{
	const char *spec = getenv(BACKEND_ENV);
	if (!spec)
		return;
	int lfd, consumed = 0;
	unsigned int hold_every;
	unsigned long long excluded;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (sscanf(spec, "%d %u %llu %n", &lfd, &hold_every, &excluded, &consumed) != 3 ||
	    !consumed)
		_exit(3);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", spec + consumed);
	serve_backend(lfd, &addr, hold_every, excluded);
}

/* Starts a back-end process (serve_backend) for @path; its pid, or -errno. */
static pid_t spawn_backend(const char *path, bool dial, unsigned int hold_every, uint64_t excluded)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	int lfd = -1;
	if (!dial) {
		unlink(path);
		lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
		    listen(lfd, 1) < 0)
			return -errno;
	}
	/* Everything the child needs, built before the fork: after it, only exec. */
	char spec[sizeof(addr.sun_path) + 64], env[sizeof(spec) + sizeof(BACKEND_ENV) + 1];
	snprintf(spec, sizeof(spec), "%d %u %llu %s", lfd, hold_every, (unsigned long long)excluded,
		 path);
	snprintf(env, sizeof(env), "%s=%s", BACKEND_ENV, spec);
	char *const child_argv[] = { "test_vhost_user_reconnect-backend", NULL };
	/* The environment passed on (sanitizer options), with BACKEND_ENV added. */
	size_t n = 0;
	while (environ[n])
		n++;
	char **child_env = calloc(n + 2, sizeof(*child_env));
	if (!child_env) {
		if (lfd >= 0)
			close(lfd);
		return -ENOMEM;
	}
	memcpy(child_env, environ, n * sizeof(*child_env));
	child_env[n] = env;
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		/* The listening socket crosses the exec; nothing else does. */
		if (lfd >= 0)
			fcntl(lfd, F_SETFD, 0);
		execve("/proc/self/exe", child_argv, child_env);
		_exit(127);
	}
	int err = errno;
	free(child_env);
	if (lfd >= 0)
		close(lfd);
	return pid < 0 ? -err : pid;
}

static void kill_backend(struct rig *g)
{
	if (g->child > 0) {
		kill(g->child, SIGKILL);
		waitpid(g->child, NULL, 0);
	}
	g->child = 0;
}

static pid_t start_backend(struct rig *g, unsigned int hold_every, uint64_t excluded)
{
	return spawn_backend(g->path, g->server, hold_every, excluded);
}

/* @mode: the DMA mode; every one but direct negotiates ACCESS_PLATFORM. */
static int rig_init(struct rig *g, bool packed, enum vt_dma_mode mode, bool inflight, bool server)
{
	memset(g, 0, sizeof(*g));
	g->server = server;
	g->past = mode == VT_DMA_BOUNCE ? 0 : 0xee;
	g->log = (struct vt_log){ .max_level = VT_LOG_WARN };
	snprintf(g->dir, sizeof(g->dir), "/tmp/vt-reconnect-XXXXXX");
	if (!mkdtemp(g->dir))
		return -errno;
	snprintf(g->path, sizeof(g->path), "%s/sock", g->dir);
	const struct vt_shm_region *r;
	int rc = vt_shm_new(&g->shm);
	if (rc == 0)
		rc = vt_shm_add_memfd(g->shm, SHM_SIZE, SHM_GPA, &r);
	if (rc < 0)
		return rc;
	g->child = start_backend(g, HOLD, 0);
	if (g->child < 0)
		return g->child;
	struct vt_vu_frontend_params p = {
		.socket_path = g->path,
		.fd = -1,
		.server = server,
		.timeout_ms = WAIT_MS,
		.device_id = VIRTIO_ID_RNG,
		.supported = F(VERSION_1) | F(EVENT_IDX) | F(INDIRECT_DESC) |
			     (packed ? F(RING_PACKED) : 0) |
			     (mode != VT_DMA_DIRECT ? F(ACCESS_PLATFORM) : 0),
		.platform_dma = mode == VT_DMA_DIRECT ? VT_DMA_IOMMU_STRICT : mode,
		.shm = g->shm,
		.protocol_excluded = inflight ? 0 : P(INFLIGHT_SHMFD),
		.name = "fe",
		.log = &g->log,
	};
	rc = vt_vu_frontend_connect(&p, &g->fe);
	if (rc == 0)
		rc = vt_vu_frontend_negotiate(g->fe);
	if (rc == 0)
		rc = vt_vu_frontend_queue_start(g->fe, 0, QSIZE, 0);
	if (rc == 0)
		rc = vt_vu_frontend_ready(g->fe);
	return rc;
}

static void rig_destroy(struct rig *g)
{
	if (g->fe)
		vt_vu_frontend_close(g->fe);
	kill_backend(g);
	for (unsigned int i = 0; i < NBUF; i++) {
		if (g->bufs[i].in)
			vt_shm_release(g->shm, g->bufs[i].in, g->bufs[i].in_len);
		if (g->bufs[i].out)
			vt_shm_release(g->shm, g->bufs[i].out, g->bufs[i].out_len);
	}
	if (g->shm)
		vt_shm_free(g->shm);
	unlink(g->path);
	rmdir(g->dir);
}

static int buf_make(struct rig *g, struct buffer *b, uint64_t *seed)
{
	void *p;
	b->in_len = 1 + (uint32_t)(vt_test_rand(seed) % 2000);
	b->out_len = b->in_len + (uint32_t)(vt_test_rand(seed) % 64);
	if (vt_shm_alloc(g->shm, b->in_len, 64, &p) < 0)
		return -ENOMEM;
	b->in = p;
	if (vt_shm_alloc(g->shm, b->out_len, 64, &p) < 0)
		return -ENOMEM;
	b->out = p;
	for (uint32_t i = 0; i < b->in_len; i++)
		b->in[i] = (uint8_t)vt_test_rand(seed);
	memset(b->out, 0xee, b->out_len);
	return 0;
}

/* Posts buffers [from, to): two readable segments when long enough, one writable. */
static int post(struct rig *g, unsigned int from, unsigned int to)
{
	struct vt_vq_drv *vq = vt_vu_frontend_vq(g->fe, 0);
	for (unsigned int i = from; i < to; i++) {
		struct buffer *b = &g->bufs[i];
		int rc = vu_echo_post(vq, b->in, b->in_len, b->out, b->out_len, 16, b);
		if (rc < 0)
			return rc;
		b->posted = true;
	}
	return 0;
}

/* Collects what is there; each buffer once, with the echo's answer and nothing past it. */
static int drain_used(struct rig *g, unsigned int *got)
{
	struct vt_vq_drv *vq = vt_vu_frontend_vq(g->fe, 0);
	void *token;
	uint32_t len;
	int rc;
	while ((rc = vt_vq_drv_get(vq, &token, &len)) == 0) {
		struct buffer *b = token;
		if (!b->posted || b->done || len != b->in_len) {
			fprintf(stderr, "  buffer %u: posted %d done %d len %u of %u\n",
				(unsigned int)(b - g->bufs), b->posted, b->done, len, b->in_len);
			return -EBADMSG;
		}
		for (uint32_t i = 0; i < b->in_len; i++)
			if (b->out[i] != (b->in[i] ^ VU_ECHO_XOR))
				return -EBADMSG;
		for (uint32_t i = b->in_len; i < b->out_len; i++)
			if (b->out[i] != g->past)
				return -EBADMSG;
		b->done = true;
		(*got)++;
	}
	return rc == -EAGAIN ? 0 : rc;
}

/* Waits until @want buffers in all were collected (bounded), or the connection dropped. */
static int collect_until(struct rig *g, unsigned int *got, unsigned int want)
{
	struct vt_vq_drv *vq = vt_vu_frontend_vq(g->fe, 0);
	for (;;) {
		int rc = drain_used(g, got);
		if (rc < 0 || *got >= want)
			return rc;
		if (vt_vq_drv_enable_cb(vq))
			continue;
		rc = vt_vu_frontend_wait(g->fe, 0, WAIT_MS);
		if (rc < 0)
			return rc;
	}
}

static void crash_and_reconnect(bool packed, enum vt_dma_mode mode, bool inflight, bool server)
{
	struct rig g;
	bool platform = mode != VT_DMA_DIRECT;
	uint64_t seed = vt_test_seed() ^ (packed * 3 + mode * 5 + inflight * 11);
	unsigned int got = 0;

	fprintf(stderr, "  row: %s, %s, %s%s\n", packed ? "packed" : "split",
		vt_dma_mode_name(mode), inflight ? "inflight" : "no inflight",
		server ? ", server mode" : "");
	REQUIRE_EQ(rig_init(&g, packed, mode, inflight, server), 0);
	CHECK_EQ((vt_vu_frontend_protocol_features(g.fe) & P(INFLIGHT_SHMFD)) != 0, inflight);
	for (unsigned int i = 0; i < NBUF; i++)
		REQUIRE_EQ(buf_make(&g, &g.bufs[i], &seed), 0);

	/* A ring-full: the back-end answers two of every three and holds the third. */
	REQUIRE_EQ(post(&g, 0, QSIZE / 2), 0);
	REQUIRE_EQ(vt_vu_frontend_kick(g.fe, 0), 0);
	unsigned int answered = QSIZE / 2 - QSIZE / 2 / HOLD;
	REQUIRE_EQ(collect_until(&g, &got, answered), 0);
	CHECK_EQ(got, answered);

	kill_backend(&g);
	/* The hang-up is seen (after a notification left over, maybe), requests in flight. */
	int rc = vt_vu_frontend_wait(g.fe, 0, WAIT_MS);
	if (rc == 0)
		rc = vt_vu_frontend_wait(g.fe, 0, WAIT_MS);
	CHECK_EQ(rc, -ECONNRESET);
	CHECK_EQ(drain_used(&g, &got), 0);
	CHECK_EQ(got, answered);
	/* Posted while no back-end runs. */
	REQUIRE_EQ(post(&g, QSIZE / 2, QSIZE), 0);
	vt_vu_frontend_kick(g.fe, 0);

	g.child = start_backend(&g, 0, 0);
	REQUIRE(g.child > 0);
	REQUIRE_EQ(vt_vu_frontend_reconnect(g.fe), 0);
	REQUIRE_EQ(collect_until(&g, &got, QSIZE), 0);
	CHECK_EQ(got, QSIZE);

	/* The ring goes on with the new back-end, laps past where it was. */
	for (unsigned int from = QSIZE; from < NBUF; from += QSIZE / 2) {
		REQUIRE_EQ(post(&g, from, from + QSIZE / 2), 0);
		REQUIRE_EQ(vt_vu_frontend_kick(g.fe, 0), 0);
		REQUIRE_EQ(collect_until(&g, &got, from + QSIZE / 2), 0);
	}
	CHECK_EQ(got, NBUF);
	for (unsigned int i = 0; i < NBUF; i++)
		CHECK(g.bufs[i].done);
	struct vt_vu_frontend_stats st;
	vt_vu_frontend_get_stats(g.fe, &st);
	CHECK_EQ(st.reconnects, 1);
	if (platform)
		CHECK(st.misses_answered > 0); /* the new back-end's IOTLB was filled by misses */
	CHECK_EQ(vt_dma_mode(vt_vu_frontend_dma(g.fe)), mode);
	CHECK_EQ(st.misses_denied, 0);
	CHECK(!vt_vq_drv_is_broken(vt_vu_frontend_vq(g.fe, 0)));
	rig_destroy(&g);
}

VT_TEST(split_ring_survives_a_backend_crash_with_inflight_records)
{
	crash_and_reconnect(false, VT_DMA_DIRECT, true, false);
}

VT_TEST(split_ring_survives_a_backend_crash_without_inflight_records)
{
	crash_and_reconnect(false, VT_DMA_DIRECT, false, false);
}

VT_TEST(packed_ring_survives_a_backend_crash_with_inflight_records)
{
	crash_and_reconnect(true, VT_DMA_DIRECT, true, false);
}

VT_TEST(packed_ring_survives_a_backend_crash_without_inflight_records)
{
	crash_and_reconnect(true, VT_DMA_DIRECT, false, false);
}

VT_TEST(strict_iommu_survives_a_backend_crash_and_refills_its_iotlb_by_misses)
{
	crash_and_reconnect(false, VT_DMA_IOMMU_STRICT, true, false);
	crash_and_reconnect(true, VT_DMA_IOMMU_STRICT, false, false);
}

/*
 * Makes buffer @i, posts it, kicks, and waits until the back-end returned it (@got counts the
 * buffers collected so far, in order): 0 or the first error.
 */
static int round_trip(struct rig *g, unsigned int i, uint64_t *seed, unsigned int *got)
{
	int rc = buf_make(g, &g->bufs[i], seed);
	if (rc == 0)
		rc = post(g, i, i + 1);
	if (rc == 0)
		rc = vt_vu_frontend_kick(g->fe, 0);
	return rc < 0 ? rc : collect_until(g, got, i + 1);
}

VT_TEST(a_new_backend_that_lost_a_negotiated_feature_is_refused)
{
	struct rig g;
	uint64_t seed = vt_test_seed();
	unsigned int got = 0;

	REQUIRE_EQ(rig_init(&g, false, VT_DMA_DIRECT, true, false), 0);
	CHECK(vt_vu_frontend_features(g.fe) & F(EVENT_IDX));
	REQUIRE_EQ(round_trip(&g, 0, &seed, &got), 0);
	kill_backend(&g);
	g.child = start_backend(&g, 0, F(EVENT_IDX));
	REQUIRE(g.child > 0);
	CHECK_EQ(vt_vu_frontend_reconnect(g.fe), -EPROTO);
	/* The connection stays down, cleanly: requests fail, nothing hangs. */
	uint8_t byte;
	CHECK_EQ(vt_vu_frontend_config_read(g.fe, 0, &byte, 1), -ENOTCONN);
	/* A proper back-end afterwards takes the device over. */
	kill_backend(&g);
	g.child = start_backend(&g, 0, 0);
	REQUIRE(g.child > 0);
	CHECK_EQ(vt_vu_frontend_reconnect(g.fe), 0);
	CHECK_EQ(round_trip(&g, 1, &seed, &got), 0);
	rig_destroy(&g);
}

VT_TEST(server_mode_waits_for_the_restarted_backend_to_dial_in_again)
{
	crash_and_reconnect(false, VT_DMA_DIRECT, true, true);
	crash_and_reconnect(true, VT_DMA_IOMMU_STRICT, false, true);
}

VT_TEST(lazy_premapped_and_bounce_survive_a_backend_crash)
{
	crash_and_reconnect(false, VT_DMA_IOMMU_LAZY, true, false);
	crash_and_reconnect(true, VT_DMA_IOMMU_PREMAPPED, false, false);
	crash_and_reconnect(false, VT_DMA_BOUNCE, false, false);
}

VT_TEST(a_backend_that_hangs_up_during_the_hand_over_is_dialled_again)
{
	struct rig g;
	uint64_t seed = vt_test_seed();
	unsigned int got = 0;

	REQUIRE_EQ(rig_init(&g, false, VT_DMA_DIRECT, true, false), 0);
	REQUIRE_EQ(round_trip(&g, 0, &seed, &got), 0);
	kill_backend(&g);
	g.child = start_backend(&g, (unsigned int)-1, 0);
	REQUIRE(g.child > 0);
	CHECK_EQ(vt_vu_frontend_reconnect(g.fe), 0);
	CHECK_EQ(round_trip(&g, 1, &seed, &got), 0);
	struct vt_vu_frontend_stats st;
	vt_vu_frontend_get_stats(g.fe, &st);
	CHECK_EQ(st.reconnects, 1);
	rig_destroy(&g);
}
