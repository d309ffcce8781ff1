/* SPDX-License-Identifier: MIT */
/*
 * `virtue net --socket PATH`: drives a vhost-user net back-end (DPDK's net_vhost, ...) through the
 * front-end and the virtio-net driver: transmits --count frames of --size bytes and/or receives
 * --count frames, over --queues pairs, in any DMA mode, and reports Mpps and Gbps each way.
 * Frames are busy-polled on one thread (notifications suppressed); every wait is bounded by
 * --timeout-ms without progress.
 *
 * Test-only: --poison-iova posts one frame whose descriptor the front-end then points at an IOVA
 * it never mapped (rewritten in ring memory after the post, as a buggy driver could publish):
 * under ACCESS_PLATFORM the back-end's miss is denied and its access fails, which the run reports
 * (the frame must never be read, so the peer must count nothing).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <virtue/dma.h>
#include <virtue/features.h>
#include <virtue/net_driver.h>
#include <virtue/shm.h>
#include <virtue/spec/vhost_user.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/vhost_user_frontend.h>

#include "net.h"

#define F(bit) VT_BIT(VIRTIO_F_##bit)

#define SHM_GPA	      0x100000000ull
#define MAX_PAIRS     8
#define RX_FRAME_CAP  VT_NET_MAX_FRAME
#define NEVER_MAPPED  0x7ff000000000ull /* an IOVA no DMA mode hands out */
#define IDLE_CHECK_NS 1000000ull	/* idle this long: look for faults */

struct net_opts {
	const char *socket;
	bool tx, rx, json, quiet, packed, in_order, poison;
	uint64_t count;
	uint32_t size;
	unsigned int pairs, qsize, batch, timeout_ms;
	int cpu;
	enum vt_dma_mode dma;
};

struct pair {
	unsigned int index;
	struct vt_net_txq *tx;
	struct vt_net_rxq *rx;
	uint64_t tx_frames, rx_frames; /* this pair's part of the totals */
};

struct dir_result {
	uint64_t frames, bytes, bad;
	uint64_t start_ns, end_ns;
	uint32_t min_size, max_size;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: virtue net --socket PATH [--tx] [--rx] [--count N] [--size BYTES]\n"
	    "                  [--queues N] [--dma direct|strict|lazy|premapped|bounce]\n"
	    "                  [--packed] [--in-order] [--qsize N] [--batch N]\n"
	    "                  [--timeout-ms MS] [--cpu N] [--json] [--quiet]\n"
	    "  --tx / --rx     transmit and/or receive --count frames (default: --tx)\n"
	    "  --size          bytes per transmitted frame, Ethernet header included (64)\n"
	    "  --queues        queue pairs (as many as the back-end serves, at most %d)\n"
	    "  --dma           direct: no ACCESS_PLATFORM; otherwise offered, with this mode\n"
	    "  --in-order      offer VIRTIO_F_IN_ORDER (the device may return a batch at once)\n"
	    "  --timeout-ms    give up after this long without progress (10000)\n",
	    MAX_PAIRS);
}

static int parse_opts(int argc, char **argv, struct net_opts *o)
{
	enum { O_COUNT = 256, O_SIZE, O_QUEUES, O_DMA, O_QSIZE, O_BATCH, O_TIMEOUT, O_CPU };
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "tx", no_argument, NULL, 't' },
		{ "rx", no_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "packed", no_argument, NULL, 'p' },
		{ "in-order", no_argument, NULL, 'I' },
		{ "poison-iova", no_argument, NULL, 'P' },
		{ "count", required_argument, NULL, O_COUNT },
		{ "size", required_argument, NULL, O_SIZE },
		{ "queues", required_argument, NULL, O_QUEUES },
		{ "dma", required_argument, NULL, O_DMA },
		{ "qsize", required_argument, NULL, O_QSIZE },
		{ "batch", required_argument, NULL, O_BATCH },
		{ "timeout-ms", required_argument, NULL, O_TIMEOUT },
		{ "cpu", required_argument, NULL, O_CPU },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	*o = (struct net_opts){ .count = 1000000,
				.size = 64,
				.pairs = 1,
				.qsize = 256,
				.batch = 32,
				.timeout_ms = 10000,
				.cpu = -1,
				.dma = VT_DMA_DIRECT };
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		char *end = NULL;
		unsigned long long v = 0;
		if (c >= O_COUNT && c != O_DMA) {
			errno = 0;
			v = strtoull(optarg, &end, 0);
			if (errno || !end || *end || end == optarg) {
				fprintf(stderr, "virtue net: bad number '%s'\n", optarg);
				return -EINVAL;
			}
		}
		switch (c) {
		case 's':
			o->socket = optarg;
			break;
		case 't':
			o->tx = true;
			break;
		case 'r':
			o->rx = true;
			break;
		case 'j':
			o->json = true;
			break;
		case 'q':
			o->quiet = true;
			break;
		case 'p':
			o->packed = true;
			break;
		case 'I':
			o->in_order = true;
			break;
		case 'P':
			o->poison = true;
			break;
		case O_COUNT:
			o->count = v;
			break;
		case O_SIZE:
			o->size = (uint32_t)v;
			break;
		case O_QUEUES:
			o->pairs = (unsigned int)v;
			break;
		case O_QSIZE:
			o->qsize = (unsigned int)v;
			break;
		case O_BATCH:
			o->batch = (unsigned int)v;
			break;
		case O_TIMEOUT:
			o->timeout_ms = (unsigned int)v;
			break;
		case O_CPU:
			o->cpu = (int)v;
			break;
		case O_DMA:
			if (vt_dma_mode_parse(optarg, &o->dma) < 0) {
				fprintf(stderr, "virtue net: unknown DMA mode '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (!o->socket || optind != argc) {
		usage(stderr);
		return -EINVAL;
	}
	if (!o->tx && !o->rx)
		o->tx = true;
	if (o->size < VT_NET_ETH_HLEN || o->size > VT_NET_DEFAULT_FRAME || o->pairs == 0 ||
	    o->pairs > MAX_PAIRS || o->qsize < 2 || o->qsize > 32768 || o->batch == 0 ||
	    o->timeout_ms == 0) {
		fprintf(stderr,
			"virtue net: --size 14..1514, --queues 1..%d, --qsize 2..32768, "
			"--batch and --timeout-ms above 0\n",
			MAX_PAIRS);
		return -EINVAL;
	}
	if (o->packed == false && (o->qsize & (o->qsize - 1))) {
		fprintf(stderr, "virtue net: a split ring's --qsize is a power of two\n");
		return -EINVAL;
	}
	return 0;
}

/* An Ethernet frame: broadcast, from @mac, the local experimental EtherType, then a counter. */
static void make_frame(uint8_t *f, uint32_t size, const uint8_t *mac, uint64_t seq)
{
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x88;
	f[13] = 0xb5;
	for (uint32_t i = VT_NET_ETH_HLEN; i < size; i++)
		f[i] = (uint8_t)(seq + i);
	if (size >= VT_NET_ETH_HLEN + 8)
		memcpy(f + VT_NET_ETH_HLEN, &seq, 8);
}

/* Fault, broken queue or hang-up on any running queue: the error, else 0. */
static int check_faults(struct vt_vu_frontend *fe, const struct pair *pairs, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		unsigned int idx[2] = { vt_net_rx_queue(pairs[i].index),
					vt_net_tx_queue(pairs[i].index) };
		for (int k = 0; k < 2; k++) {
			int rc = vt_vu_frontend_wait(fe, idx[k], 0);
			if (rc < 0 && rc != -ETIMEDOUT)
				return rc;
		}
	}
	return 0;
}

/*
 * --poison-iova: one frame posted on pair 0's transmitq, its descriptor then pointed at an IOVA
 * nothing maps. The one descriptor holding a buffer of exactly header + size bytes is found in
 * the descriptor area (split and packed descriptors both start with the 64-bit address, followed
 * by the 32-bit length).
 */
static int poison_post(struct vt_vu_frontend *fe, struct pair *p, const struct net_opts *o,
		       const uint8_t *frame)
{
	unsigned int qi = vt_net_tx_queue(p->index);
	struct vt_vq_drv *vq = vt_vu_frontend_vq(fe, qi);
	int rc = vt_net_txq_send(p->tx, frame, o->size, NULL);
	if (rc < 0)
		return rc;
	uint64_t desc, driver, device;
	vt_vq_drv_addrs(vq, &desc, &driver, &device);
	void *hva;
	size_t bytes = (size_t)o->qsize * 16;
	rc = vt_vu_frontend_bus_to_hva(fe, desc, bytes, VT_ACCESS_RW, &hva);
	if (rc < 0)
		return rc;
	uint32_t want = vt_net_hdr_len(vt_vu_frontend_features(fe)) + o->size;
	uint8_t *d = hva;
	for (unsigned int i = 0; i < o->qsize; i++, d += 16) {
		uint64_t addr;
		uint32_t len;
		memcpy(&addr, d, 8);
		memcpy(&len, d + 8, 4);
		if (addr && len == want) {
			uint64_t poison = NEVER_MAPPED;
			memcpy(d, &poison, 8);
			return vt_vu_frontend_kick(fe, qi);
		}
	}
	return -ENOENT;
}

static double seconds(const struct dir_result *r)
{
	return r->end_ns > r->start_ns ? (double)(r->end_ns - r->start_ns) / 1e9 : 0.0;
}

static void print_dir(const char *name, const struct dir_result *r, bool json, bool last)
{
	double s = seconds(r);
	double mpps = s > 0 ? (double)r->frames / s / 1e6 : 0;
	double gbps = s > 0 ? (double)r->bytes * 8 / s / 1e9 : 0;
	if (json) {
		printf("\"%s\":{\"frames\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"seconds\":%.6f,"
		       "\"mpps\":%.4f,\"gbps\":%.4f,\"min_size\":%u,\"max_size\":%u,"
		       "\"bad\":%" PRIu64 "}%s",
		       name, r->frames, r->bytes, s, mpps, gbps, r->frames ? r->min_size : 0,
		       r->max_size, r->bad, last ? "" : ",");
		return;
	}
	printf("%s: %" PRIu64 " frames, %" PRIu64 " bytes in %.3f s: %.3f Mpps, %.3f Gbps", name,
	       r->frames, r->bytes, s, mpps, gbps);
	if (r->frames)
		printf(" (sizes %u..%u)", r->min_size, r->max_size);
	if (r->bad)
		printf(", %" PRIu64 " bad frames dropped", r->bad);
	printf("\n");
}

struct run {
	struct net_opts o;
	struct vt_vu_frontend *fe;
	struct vt_shm *shm;
	struct pair pairs[MAX_PAIRS];
	unsigned int npairs;
	struct vt_net_info info;
	uint8_t mac[6];
	struct dir_result tx, rx;
	int fault;		   /* the error that ended the run early, 0 */
	const char *why;	   /* ... in words */
	int poison_rc;		   /* --poison-iova: the wait's answer */
	uint64_t poison_reclaimed; /* ... and frames that came back anyway */
};

static int setup(struct run *r)
{
	const struct net_opts *o = &r->o;
	bool platform = o->dma != VT_DMA_DIRECT;
	uint64_t supported = F(VERSION_1) | F(EVENT_IDX) | VT_NET_DRIVER_FEATURES |
			     (o->packed ? F(RING_PACKED) : 0) | (o->in_order ? F(IN_ORDER) : 0) |
			     (platform ? F(ACCESS_PLATFORM) : 0); /* offer per the DMA mode */
	/* Per pair: two rings, receive buffers (2 KiB each), transmit slots; plus slack. */
	uint64_t shm_size = (uint64_t)o->pairs * o->qsize * (2048 + 2048 + 256) + (8u << 20);
	const struct vt_shm_region *region;
	/*
	 * Bounce: the window (memory of the front-end's own) holds the rings and every buffer in
	 * flight; its allocator wants a power of two.
	 */
	uint64_t window = 0;
	if (o->dma == VT_DMA_BOUNCE)
		for (window = 1u << 20; window < shm_size; window <<= 1)
			;
	int rc = vt_shm_new(&r->shm);
	if (rc == 0)
		rc = vt_shm_add_memfd(r->shm, shm_size, SHM_GPA, &region);
	if (rc < 0)
		return rc;
	struct vt_vu_frontend_params p = {
		.socket_path = o->socket,
		.fd = -1,
		.device_id = VIRTIO_ID_NET,
		.supported = supported,
		.platform_dma = platform ? o->dma : VT_DMA_IOMMU_STRICT,
		.shm = r->shm,
		.bounce_window_size = window,
		.name = "net",
	};
	rc = vt_vu_frontend_connect(&p, &r->fe);
	if (rc < 0) {
		r->why = "connect";
		return rc;
	}
	rc = vt_vu_frontend_negotiate(r->fe);
	if (rc < 0) {
		r->why = "negotiate";
		return rc;
	}
	uint64_t features = vt_vu_frontend_features(r->fe);
	if (!o->quiet) {
		char names[1024];
		FILE *f = o->json ? stderr : stdout;
		vt_features_str(VIRTIO_ID_NET, vt_vu_frontend_offered_features(r->fe), names,
				sizeof(names));
		fprintf(f, "offered: %s\n", names);
		vt_features_str(VIRTIO_ID_NET, features, names, sizeof(names));
		fprintf(f, "negotiated: %s\n", names);
		fprintf(f, "dma: %s\n", vt_dma_mode_name(vt_dma_mode(vt_vu_frontend_dma(r->fe))));
	}

	/*
	 * vhost-user net back-ends rarely serve the configuration space (QEMU's model does): read
	 * it when CONFIG was negotiated, else decode without the fields it would have given.
	 */
	struct virtio_net_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	uint64_t config_bits = VT_BIT(VIRTIO_NET_F_MAC) | VT_BIT(VIRTIO_NET_F_STATUS) |
			       VT_BIT(VIRTIO_NET_F_MQ) | VT_BIT(VIRTIO_NET_F_MTU);
	bool have_config =
	    (vt_vu_frontend_protocol_features(r->fe) & VT_BIT(VHOST_USER_PROTOCOL_F_CONFIG)) &&
	    vt_vu_frontend_config_read(r->fe, 0, &cfg, 12) == 0;
	rc = have_config ? vt_net_config_decode(&cfg, 12, features, &r->info)
			 : vt_net_config_decode(NULL, 0, features & ~config_bits, &r->info);
	if (rc < 0) {
		r->why = "config";
		return rc;
	}
	r->info.features = features;
	static const uint8_t local_mac[6] = { 0x02, 0x76, 0x74, 0x00, 0x00, 0x01 };
	memcpy(r->mac, r->info.has_mac ? r->info.mac : local_mac, 6);

	unsigned int served = vt_vu_frontend_num_queues(r->fe) / 2;
	if (have_config && (features & VT_BIT(VIRTIO_NET_F_MQ)) &&
	    r->info.max_virtqueue_pairs < served)
		served = r->info.max_virtqueue_pairs;
	r->npairs = o->pairs < served ? o->pairs : served;
	if (r->npairs == 0) {
		r->why = "queues";
		return -ENODEV;
	}
	for (unsigned int i = 0; i < r->npairs; i++) {
		struct pair *pp = &r->pairs[i];
		pp->index = i;
		unsigned int rxi = vt_net_rx_queue(i), txi = vt_net_tx_queue(i);
		rc = vt_vu_frontend_queue_start(r->fe, rxi, o->qsize, 0);
		if (rc == 0)
			rc = vt_vu_frontend_queue_start(r->fe, txi, o->qsize, 0);
		if (rc < 0) {
			r->why = "queue start";
			return rc;
		}
		struct vt_net_rxq_params rp = { .vq = vt_vu_frontend_vq(r->fe, rxi),
						.num = o->qsize,
						.shm = r->shm,
						.info = &r->info,
						.name = "net-rx" };
		struct vt_net_txq_params tp = { .vq = vt_vu_frontend_vq(r->fe, txi),
						.num = o->qsize,
						.shm = r->shm,
						.features = features,
						.frame_room = o->size,
						.name = "net-tx" };
		rc = vt_net_rxq_new(&rp, &pp->rx);
		if (rc == 0)
			rc = vt_net_txq_new(&tp, &pp->tx);
		if (rc < 0) {
			r->why = "engines";
			return rc;
		}
		/* Busy-polled: no used-buffer notifications. */
		vt_vq_drv_disable_cb(rp.vq);
		vt_vq_drv_disable_cb(tp.vq);
		/* Receive buffers are posted even when only transmitting: the peer may echo. */
		rc = vt_net_rxq_fill(pp->rx);
		if (rc < 0) {
			r->why = "receive fill";
			return rc;
		}
		rc = vt_vu_frontend_kick(r->fe, rxi);
		if (rc < 0)
			return rc;
	}
	rc = vt_vu_frontend_ready(r->fe);
	if (rc < 0)
		r->why = "DRIVER_OK";
	return rc;
}

static void rx_account(struct dir_result *d, uint32_t len, uint64_t now)
{
	if (d->frames == 0) {
		d->start_ns = now;
		d->min_size = len;
	}
	d->frames++;
	d->bytes += len;
	d->end_ns = now;
	if (len < d->min_size)
		d->min_size = len;
	if (len > d->max_size)
		d->max_size = len;
}

static int workload(struct run *r)
{
	const struct net_opts *o = &r->o;
	uint64_t tx_target = o->tx ? o->count : 0, rx_target = o->rx ? o->count : 0;
	uint64_t tx_posted = 0;
	uint8_t *frame = malloc(o->size);
	uint8_t *rxbuf = malloc(RX_FRAME_CAP);
	/* One batch of the same frame, posted with one burst. */
	struct iovec *burst = calloc(o->batch, sizeof(*burst));
	int ret = frame && rxbuf && burst ? 0 : -ENOMEM;
	uint64_t last_progress = now_ns(), last_check = last_progress;
	uint64_t timeout_ns = (uint64_t)o->timeout_ms * 1000000ull;

	make_frame(frame, o->size, r->mac, 0);
	for (unsigned int i = 0; burst && i < o->batch; i++)
		burst[i] = (struct iovec){ frame, o->size };
	r->tx.min_size = r->tx.max_size = o->size;
	while (ret == 0 && (r->tx.frames < tx_target || r->rx.frames < rx_target)) {
		bool progress = false;
		for (unsigned int i = 0; i < r->npairs && ret == 0; i++) {
			struct pair *p = &r->pairs[i];
			if (o->tx) {
				/*
				 * Packed: look for completions only once a batch no longer fits.
				 * Each look reads the descriptor slot the device writes next, so
				 * polling takes lines from the device while it works through them
				 * (split polls the used index alone, a line the device writes once
				 * per batch).
				 */
				bool later = o->packed && tx_posted < tx_target &&
					     o->qsize - vt_net_txq_in_flight(p->tx) >= o->batch;
				int n = later ? 0 : vt_net_txq_reclaim(p->tx, NULL, o->qsize);
				if (n < 0) {
					ret = n;
					break;
				}
				if (n > 0) {
					r->tx.frames += (uint64_t)n;
					p->tx_frames += (uint64_t)n;
					r->tx.bytes += (uint64_t)n * o->size;
					r->tx.end_ns = now_ns();
					progress = true;
				}
				unsigned int posted = 0;
				if (tx_posted < tx_target) {
					uint64_t want = tx_target - tx_posted;
					int rc = vt_net_txq_send_burst(
					    p->tx, burst,
					    want < o->batch ? (unsigned int)want : o->batch, NULL);
					if (rc < 0 && rc != -EAGAIN)
						ret = rc;
					if (rc > 0) {
						if (tx_posted == 0)
							r->tx.start_ns = now_ns();
						tx_posted += (uint64_t)rc;
						posted = (unsigned int)rc;
					}
				}
				if (posted) {
					progress = true;
					int rc =
					    vt_vu_frontend_kick(r->fe, vt_net_tx_queue(p->index));
					if (rc < 0)
						ret = rc;
				}
			}
			/* Received frames are drained (and counted when asked for) either way. */
			unsigned int got = 0;
			for (;;) {
				struct vt_net_rx_info info;
				int rc = vt_net_rxq_recv(p->rx, rxbuf, RX_FRAME_CAP, &info);
				if (rc == 0)
					break;
				got++;
				if (rc == -EBADMSG || rc == -EMSGSIZE) {
					r->rx.bad++;
					continue;
				}
				if (rc < 0) {
					ret = rc;
					break;
				}
				if (o->rx && r->rx.frames < rx_target) {
					rx_account(&r->rx, info.len, now_ns());
					p->rx_frames++;
				}
			}
			if (got) {
				progress = true;
				int rc = vt_net_rxq_fill(p->rx);
				if (rc > 0)
					rc = vt_vu_frontend_kick(r->fe, vt_net_rx_queue(p->index));
				if (rc < 0)
					ret = rc;
			}
		}
		uint64_t now = progress ? 0 : now_ns();
		if (progress) {
			last_progress = 0;
			continue;
		}
		if (last_progress == 0)
			last_progress = now;
		if (now - last_check >= IDLE_CHECK_NS) {
			last_check = now;
			int rc = check_faults(r->fe, r->pairs, r->npairs);
			if (rc < 0) {
				ret = rc;
				r->why = rc == -EFAULT ? "the back-end faulted (IOTLB)" : "queue";
				break;
			}
			sched_yield();
		}
		if (now - last_progress >= timeout_ns) {
			ret = -ETIMEDOUT;
			r->why = "no progress within --timeout-ms";
		}
	}
	free(frame);
	free(rxbuf);
	free(burst);
	return ret;
}

static int poison_run(struct run *r)
{
	uint8_t frame[VT_NET_DEFAULT_FRAME];
	make_frame(frame, r->o.size, r->mac, 0);
	int rc = poison_post(r->fe, &r->pairs[0], &r->o, frame);
	if (rc < 0) {
		r->why = "poison post";
		return rc;
	}
	uint64_t deadline = now_ns() + (uint64_t)r->o.timeout_ms * 1000000ull;
	r->poison_rc = -ETIMEDOUT;
	while (now_ns() < deadline) {
		rc = vt_vu_frontend_wait(r->fe, vt_net_tx_queue(0), 50);
		int n = vt_net_txq_reclaim(r->pairs[0].tx, NULL, 1);
		if (n > 0)
			r->poison_reclaimed += (uint64_t)n;
		if (rc == -EFAULT || rc == -EIO || rc == -ECONNRESET) {
			r->poison_rc = rc;
			break;
		}
	}
	return 0;
}

static void report(struct run *r, int rc)
{
	const struct net_opts *o = &r->o;
	struct vt_vu_frontend_stats st = { 0 };
	uint64_t features = 0;
	if (r->fe) {
		vt_vu_frontend_get_stats(r->fe, &st);
		features = vt_vu_frontend_features(r->fe);
	}
	char names[1024];
	vt_features_str(VIRTIO_ID_NET, features, names, sizeof(names));
	bool platform = r->fe && vt_vu_frontend_dma(r->fe) &&
			vt_dma_mode(vt_vu_frontend_dma(r->fe)) != VT_DMA_DIRECT;
	if (o->json) {
		printf("{\"result\":\"%s\",\"error\":%d,\"why\":\"%s\",\"features\":\"%s\","
		       "\"features_hex\":\"0x%" PRIx64 "\",\"platform_dma\":%s,\"dma\":\"%s\","
		       "\"ring\":\"%s\",\"pairs\":%u,\"size\":%u,",
		       rc == 0 ? "ok" : "error", rc, r->why ? r->why : "", names, features,
		       platform ? "true" : "false", vt_dma_mode_name(o->dma),
		       o->packed ? "packed" : "split", r->npairs, o->size);
		print_dir("tx", &r->tx, true, false);
		print_dir("rx", &r->rx, true, false);
		printf("\"per_pair\":[");
		for (unsigned int i = 0; i < r->npairs; i++)
			printf("%s{\"tx\":%" PRIu64 ",\"rx\":%" PRIu64 "}", i ? "," : "",
			       r->pairs[i].tx_frames, r->pairs[i].rx_frames);
		printf("],");
		printf("\"frontend\":{\"iotlb_updates\":%" PRIu64
		       ",\"iotlb_invalidations\":%" PRIu64 ",\"misses\":%" PRIu64
		       ",\"misses_answered\":%" PRIu64 ",\"misses_denied\":%" PRIu64
		       ",\"access_fails\":%" PRIu64 ",\"last_fault_iova\":\"0x%" PRIx64 "\"}",
		       st.iotlb_updates, st.iotlb_invalidations, st.misses, st.misses_answered,
		       st.misses_denied, st.access_fails, st.last_fault_iova);
		if (o->poison)
			printf(",\"poison\":{\"iova\":\"0x%llx\",\"wait\":%d,\"reclaimed\":%" PRIu64
			       "}",
			       NEVER_MAPPED, r->poison_rc, r->poison_reclaimed);
		printf("}\n");
		return;
	}
	if (o->poison) {
		printf("poison: frame at IOVA 0x%llx: %s (%d); frames returned: %" PRIu64 "\n",
		       NEVER_MAPPED,
		       r->poison_rc == -EFAULT ? "the back-end's access failed" : "no fault seen",
		       r->poison_rc, r->poison_reclaimed);
	} else {
		if (o->tx)
			print_dir("tx", &r->tx, false, true);
		if (o->rx)
			print_dir("rx", &r->rx, false, true);
	}
	if (platform)
		printf("iotlb: %" PRIu64 " updates, %" PRIu64 " invalidations, %" PRIu64
		       " misses (%" PRIu64 " answered, %" PRIu64 " denied), %" PRIu64
		       " access failures\n",
		       st.iotlb_updates, st.iotlb_invalidations, st.misses, st.misses_answered,
		       st.misses_denied, st.access_fails);
	if (rc < 0)
		fprintf(stderr, "virtue net: %s: %s\n", r->why ? r->why : "failed", strerror(-rc));
}

int virtue_cmd_net(int argc, char **argv)
{
	struct run *r = calloc(1, sizeof(*r));
	if (!r)
		return 1;
	int rc = parse_opts(argc, argv, &r->o);
	if (rc != 0) {
		free(r);
		return rc > 0 ? 0 : 2;
	}
	if (r->o.cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(r->o.cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			perror("virtue net: --cpu");
	}
	rc = setup(r);
	if (rc == 0 && r->o.poison)
		rc = poison_run(r);
	else if (rc == 0)
		rc = workload(r);
	report(r, rc);
	if (r->fe)
		vt_vu_frontend_close(r->fe);
	for (unsigned int i = 0; i < MAX_PAIRS; i++) {
		vt_net_txq_free(r->pairs[i].tx);
		vt_net_rxq_free(r->pairs[i].rx);
	}
	vt_shm_free(r->shm);
	bool ok = rc == 0 && (!r->o.poison || r->poison_rc == -EFAULT);
	free(r);
	return ok ? 0 : 1;
}
