/* SPDX-License-Identifier: MIT */
/*
 * virtue-blk: a vhost-user-blk back-end daemon. QEMU (or any vhost-user front-end) attaches a
 * virtio-blk device whose requests virtue serves from a file, a block device or a RAM disk; with
 * a vIOMMU the guest negotiates VIRTIO_F_ACCESS_PLATFORM and every address goes through the
 * IOTLB. Command line per QEMU's "Backend program conventions" (docs/interop/vhost-user.rst).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <virtue/blk.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/vhost_user_backend.h>

#define DEFAULT_SOCKET "/tmp/virtue-blk.sock"
#define DEFAULT_SIZE   (64ull << 20)

struct options {
	const char *socket_path;
	int fd;
	const char *blk_file;
	uint64_t size;
	bool read_only;
	bool direct;
	unsigned int num_queues;
	unsigned int queue_size;
	unsigned int iothreads;
	unsigned int poll_us;
	unsigned int stats_seconds;
	bool verbose;
};

struct daemon {
	struct options opt;
	struct vt_blk *blk;
	struct vt_vhost_backend *be;
	struct vt_log log;
	/* Per-queue engines, for the stats line: the lock keeps one from being freed under it. */
	pthread_mutex_t engines_lock;
	struct vt_blk_queue *engines[VT_BLK_MAX_QUEUES];
	uint64_t crash_at; /* VIRTUE_BLK_TEST_CRASH_AT: see q_poll */
};

static struct vt_vhost_backend *stop_target;
static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
	if (stop_target)
		vt_vhost_backend_stop(stop_target);
}

static void print_log(void *opaque, enum vt_log_level level, const char *message)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	(void)opaque;
	fprintf(stderr, "virtue-blk: %s: %s\n", names[level], message);
}

/* ------------------------------------------------------------------ model glue */

/* What the back-end holds per queue: the request engine and where the stats line finds it. */
struct blk_engine {
	struct daemon *d;
	unsigned int index;
	struct vt_blk_queue *q;
};

static int q_start(void *opaque, unsigned int index, struct vt_vq_dev *vq, uint64_t features,
		   void **engine)
{
	struct daemon *d = opaque;
	char name[32];

	if (index >= VT_BLK_MAX_QUEUES)
		return -EINVAL;
	struct blk_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	snprintf(name, sizeof(name), "virtue-blk:q%u", index);
	int rc = vt_blk_queue_new(d->blk, vq, features, name, &e->q);
	if (rc < 0) {
		free(e);
		return rc;
	}
	e->d = d;
	e->index = index;
	pthread_mutex_lock(&d->engines_lock);
	d->engines[index] = e->q;
	pthread_mutex_unlock(&d->engines_lock);
	*engine = e;
	return 0;
}

static int q_poll(void *engine, bool *notify)
{
	struct blk_engine *e = engine;
	int rc = vt_blk_queue_poll(e->q, notify);

	if (e->d->crash_at) {
		/*
		 * A test hook (VIRTUE_BLK_TEST_CRASH_AT=N): die like a crash once N requests
		 * completed and some are still in flight, so that the restarted daemon must
		 * resubmit them from the inflight buffer the front-end kept.
		 */
		struct vt_blk_queue_stats st;
		vt_blk_queue_stats(e->q, &st);
		if (st.requests >= e->d->crash_at && st.in_flight > 0) {
			fprintf(stderr, "virtue-blk: test crash with %llu requests in flight\n",
				(unsigned long long)st.in_flight);
			raise(SIGKILL);
		}
	}
	return rc;
}

static int q_event_fd(void *engine)
{
	return vt_blk_queue_event_fd(((struct blk_engine *)engine)->q);
}

static int q_drain(void *engine, bool *notify)
{
	return vt_blk_queue_drain(((struct blk_engine *)engine)->q, 10000, notify);
}

static void q_stop(void *engine)
{
	struct blk_engine *e = engine;

	pthread_mutex_lock(&e->d->engines_lock);
	e->d->engines[e->index] = NULL;
	pthread_mutex_unlock(&e->d->engines_lock);
	vt_blk_queue_free(e->q);
	free(e);
}

static const struct vt_vu_queue_ops blk_queue_ops = {
	.start = q_start,
	.poll = q_poll,
	.event_fd = q_event_fd,
	.drain = q_drain,
	.stop = q_stop,
};

static int blk_features_ok(void *opaque, uint64_t negotiated)
{
	struct daemon *d = opaque;
	return vt_blk_features_ok(d->blk, negotiated);
}

static void blk_config_read(void *opaque, void *config, uint32_t size)
{
	struct daemon *d = opaque;
	struct virtio_blk_config c;

	vt_blk_config(d->blk, &c);
	memcpy(config, &c, size < sizeof(c) ? size : sizeof(c));
}

static int blk_config_write(void *opaque, uint32_t offset, const void *buf, uint32_t len)
{
	struct daemon *d = opaque;
	return vt_blk_config_write(d->blk, offset, buf, len);
}

/* ------------------------------------------------------------------ stats */

static void *stats_main(void *arg)
{
	struct daemon *d = arg;

	while (!stopping) {
		for (unsigned int s = 0; s < d->opt.stats_seconds && !stopping; s++)
			sleep(1);
		if (stopping)
			break;
		struct vt_vhost_backend_stats bs;
		vt_vhost_backend_get_stats(d->be, &bs);
		fprintf(stderr,
			"virtue-blk: stats: messages %" PRIu64 " (bad %" PRIu64
			") iotlb hits %" PRIu64 " misses %" PRIu64 "\n",
			bs.messages, bs.bad_messages, bs.iotlb_hits, bs.iotlb_misses);
		for (unsigned int i = 0; i < d->opt.num_queues; i++) {
			struct vt_vhost_backend_queue_stats qs;
			struct vt_blk_queue_stats st = { 0 };
			vt_vhost_backend_get_queue_stats(d->be, i, &qs);
			if (!qs.running)
				continue;
			/* Its counters are atomic; the lock only keeps the engine alive. */
			pthread_mutex_lock(&d->engines_lock);
			if (i < VT_BLK_MAX_QUEUES && d->engines[i])
				vt_blk_queue_stats(d->engines[i], &st);
			pthread_mutex_unlock(&d->engines_lock);
			fprintf(stderr,
				"virtue-blk: stats: q%u requests %" PRIu64 " read %" PRIu64
				" B written %" PRIu64 " B errors %" PRIu64 " kicks %" PRIu64
				" calls %" PRIu64 " iotlb misses %" PRIu64 "%s%s\n",
				i, st.requests, st.bytes_read, st.bytes_written, st.io_errors,
				qs.kicks, qs.calls, qs.misses, qs.parked ? " parked" : "",
				qs.broken ? " BROKEN" : "");
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------ command line */

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: virtue-blk [options]\n"
	    "  --socket-path PATH   listen on this unix socket (default " DEFAULT_SOCKET ")\n"
	    "  --fd FD              serve this connected socket instead, then exit\n"
	    "  --print-capabilities print the back-end's capabilities (JSON) and exit\n"
	    "  --blk-file PATH      backing file or block device (default: a RAM disk)\n"
	    "  --size BYTES         RAM disk size, suffixes K M G (default 64M)\n"
	    "  --read-only          offer VIRTIO_BLK_F_RO; writes fail\n"
	    "  --direct             O_DIRECT on the backing file\n"
	    "  --num-queues N       request queues, 1..16 (default 1)\n"
	    "  --queue-size N       the front-end's queue size (QEMU's queue-size, default 128):\n"
	    "                       seg_max is N - 2\n"
	    "  --iothreads N        I/O threads (default 1)\n"
	    "  --poll-us N          keep polling the queues N us after the last request before\n"
	    "                       sleeping (default 32, as QEMU's iothread poll-max-ns; 0: off)\n"
	    "  --stats SECONDS      print per-queue statistics every SECONDS\n"
	    "  --verbose            log every negotiation step\n");
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'G':
	case 'g':
		v <<= 10;
		__attribute__((fallthrough));
	case 'M':
	case 'm':
		v <<= 10;
		__attribute__((fallthrough));
	case 'K':
	case 'k':
		v <<= 10;
		end++;
		break;
	case '\0':
		break;
	default:
		return -1;
	}
	if (*end)
		return -1;
	*out = v;
	return 0;
}

static int parse_uint(const char *s, unsigned int lo, unsigned int hi, unsigned int *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 0);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = (unsigned int)v;
	return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	enum {
		O_SOCK = 1,
		O_FD,
		O_CAPS,
		O_FILE,
		O_SIZE,
		O_RO,
		O_DIRECT,
		O_NQ,
		O_QS,
		O_IOT,
		O_POLL,
		O_STATS,
		O_VERBOSE,
		O_HELP
	};
	static const struct option longopts[] = {
		{ "socket-path", required_argument, NULL, O_SOCK },
		{ "fd", required_argument, NULL, O_FD },
		{ "print-capabilities", no_argument, NULL, O_CAPS },
		{ "blk-file", required_argument, NULL, O_FILE },
		{ "size", required_argument, NULL, O_SIZE },
		{ "read-only", no_argument, NULL, O_RO },
		{ "direct", no_argument, NULL, O_DIRECT },
		{ "num-queues", required_argument, NULL, O_NQ },
		{ "queue-size", required_argument, NULL, O_QS },
		{ "iothreads", required_argument, NULL, O_IOT },
		{ "poll-us", required_argument, NULL, O_POLL },
		{ "stats", required_argument, NULL, O_STATS },
		{ "verbose", no_argument, NULL, O_VERBOSE },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	*o = (struct options){ .socket_path = DEFAULT_SOCKET,
			       .fd = -1,
			       .size = DEFAULT_SIZE,
			       .num_queues = 1,
			       .queue_size = 128,
			       .iothreads = 1,
			       .poll_us = 32 };
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case O_SOCK:
			o->socket_path = optarg;
			break;
		case O_FD: {
			unsigned int fd;
			bad = parse_uint(optarg, 0, 1u << 30, &fd);
			o->fd = (int)fd;
			break;
		}
		case O_CAPS:
			/* vhost-user.json: type "block" with the features this daemon supports. */
			printf("{\n  \"type\": \"block\",\n  \"features\": [\n    \"read-only\",\n"
			       "    \"blk-file\"\n  ]\n}\n");
			exit(0);
		case O_FILE:
			o->blk_file = optarg;
			break;
		case O_SIZE:
			bad = parse_size(optarg, &o->size) || o->size == 0 || o->size % 512;
			break;
		case O_RO:
			o->read_only = true;
			break;
		case O_DIRECT:
			o->direct = true;
			break;
		case O_NQ:
			bad = parse_uint(optarg, 1, VT_BLK_MAX_QUEUES, &o->num_queues);
			break;
		case O_QS:
			bad = parse_uint(optarg, 4, VT_BLK_MAX_QUEUE_SIZE, &o->queue_size);
			break;
		case O_IOT:
			bad = parse_uint(optarg, 1, 16, &o->iothreads);
			break;
		case O_POLL:
			bad = parse_uint(optarg, 0, 1000000, &o->poll_us);
			break;
		case O_STATS:
			bad = parse_uint(optarg, 1, 86400, &o->stats_seconds);
			break;
		case O_VERBOSE:
			o->verbose = true;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
		if (bad) {
			fprintf(stderr, "virtue-blk: bad value for --%s: %s\n",
				longopts[c - 1].name, optarg);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "virtue-blk: unexpected argument %s\n", argv[optind]);
		return -1;
	}
	return 0;
}

static void print_qemu_hint(const struct options *o, uint64_t capacity)
{
	printf("virtue-blk: %s, %" PRIu64 " bytes, %u queue(s)%s, listening on %s\n",
	       o->blk_file ? o->blk_file : "RAM disk", capacity * 512, o->num_queues,
	       o->read_only ? ", read-only" : "", o->socket_path);
	printf("virtue-blk: attach it with:\n"
	       "  qemu-system-x86_64 -machine q35,memory-backend=mem \\\n"
	       "    -object memory-backend-memfd,id=mem,size=1G,share=on -m 1G \\\n"
	       "    -chardev socket,id=vblk,path=%s \\\n"
	       "    -device vhost-user-blk-pci,chardev=vblk,num-queues=%u ...\n",
	       o->socket_path, o->num_queues);
	printf("virtue-blk: behind a vIOMMU (the guest negotiates VIRTIO_F_ACCESS_PLATFORM):\n"
	       "  qemu-system-x86_64 -machine q35,kernel-irqchip=split,memory-backend=mem \\\n"
	       "    -object memory-backend-memfd,id=mem,size=1G,share=on -m 1G \\\n"
	       "    -device intel-iommu,intremap=on,device-iotlb=on \\\n"
	       "    -chardev socket,id=vblk,path=%s \\\n"
	       "    -device vhost-user-blk-pci,chardev=vblk,num-queues=%u,iommu_platform=on,ats=on "
	       "\\\n"
	       "    -append '... intel_iommu=on iommu.strict=1' ...\n",
	       o->socket_path, o->num_queues);
	fflush(stdout);
}

static int listen_on(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "virtue-blk: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(addr.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path); /* a stale socket from an earlier run */
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 1) < 0) {
		fprintf(stderr, "virtue-blk: %s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	static struct daemon d = { .engines_lock = PTHREAD_MUTEX_INITIALIZER };
	int status = 0;

	if (parse_options(argc, argv, &d.opt) < 0)
		return 2;
	const char *crash_at = getenv("VIRTUE_BLK_TEST_CRASH_AT");
	if (crash_at)
		d.crash_at = strtoull(crash_at, NULL, 0);
	d.log = (struct vt_log){ .fn = print_log,
				 .max_level = d.opt.verbose ? VT_LOG_DEBUG : VT_LOG_WARN };
	struct vt_blk_params bp = {
		.path = d.opt.blk_file,
		.size = d.opt.blk_file ? 0 : d.opt.size,
		.read_only = d.opt.read_only,
		.direct = d.opt.direct,
		.num_queues = d.opt.num_queues,
		.queue_size = d.opt.queue_size,
		.log = &d.log,
	};
	int rc = vt_blk_new(&bp, &d.blk);
	if (rc < 0) {
		fprintf(stderr, "virtue-blk: %s: %s\n",
			d.opt.blk_file ? d.opt.blk_file : "RAM disk", strerror(-rc));
		return 1;
	}
	struct virtio_blk_config config;
	vt_blk_config(d.blk, &config);
	struct vt_vhost_backend_params params = {
		.device_id = VIRTIO_ID_BLOCK,
		.name = "virtue-blk",
		.device_features = vt_blk_offered_features(d.blk),
		.num_queues = d.opt.num_queues,
		/* Rings may be larger than the size seg_max was derived from; chains stay within
		   it. */
		.max_queue_size = VT_BLK_MAX_QUEUE_SIZE,
		.max_chain = d.opt.queue_size,
		.config = &config,
		.config_size = sizeof(config),
		.config_read = blk_config_read,
		.features_ok = blk_features_ok,
		.config_write = blk_config_write,
		.queue_ops = &blk_queue_ops,
		.opaque = &d,
		.num_threads = d.opt.iothreads,
		.poll_us = d.opt.poll_us,
		.log = &d.log,
	};
	rc = vt_vhost_backend_new(&params, &d.be);
	if (rc < 0) {
		fprintf(stderr, "virtue-blk: back-end: %s\n", strerror(-rc));
		vt_blk_free(d.blk);
		return 1;
	}
	stop_target = d.be;
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	pthread_t stats_thread;
	bool stats_running =
	    d.opt.stats_seconds && pthread_create(&stats_thread, NULL, stats_main, &d) == 0;

	if (d.opt.fd >= 0) {
		rc = vt_vhost_backend_serve(d.be, d.opt.fd);
		status = rc == -EPROTO ? 1 : 0;
	} else {
		int lfd = listen_on(d.opt.socket_path);
		if (lfd < 0) {
			status = 1;
			stopping = 1;
		} else {
			print_qemu_hint(&d.opt, vt_blk_capacity(d.blk));
		}
		/* One front-end at a time; after a disconnect, wait for the next (a reconnect). */
		while (!stopping) {
			int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (conn < 0) {
				if (errno == EINTR)
					continue;
				fprintf(stderr, "virtue-blk: accept: %s\n", strerror(errno));
				status = 1;
				break;
			}
			rc = vt_vhost_backend_serve(d.be, conn);
			if (rc == -ECANCELED)
				break;
		}
		if (lfd >= 0) {
			close(lfd);
			unlink(d.opt.socket_path);
		}
	}
	stopping = 1;
	if (stats_running)
		pthread_join(stats_thread, NULL);
	/* serve() completed every request in flight; make them durable before exiting. */
	rc = vt_blk_flush_all(d.blk);
	if (rc < 0) {
		fprintf(stderr, "virtue-blk: flush: %s\n", strerror(-rc));
		status = 1;
	}
	stop_target = NULL;
	vt_vhost_backend_free(d.be);
	vt_blk_free(d.blk);
	return status;
}
