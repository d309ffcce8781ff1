/* SPDX-License-Identifier: MIT */
/*
 * The virtue CLI's shared parts: common options, connecting and negotiating through the
 * vhost-user front-end with errors a person can act on, feature sets by name, number parsing.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <virtue/blk_driver.h>
#include <virtue/features.h>
#include <virtue/net_driver.h>
#include <virtue/platform.h>
#include <virtue/spec/vhost_user.h>
#include <virtue/spec/virtio_config.h>

#include "cli.h"

const char *cli_prog = "virtue";

void cli_err(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", cli_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

const char cli_common_help[] =
    "  --socket PATH          the back-end's vhost-user unix socket (required)\n"
    "  --device blk|net       the device type (vhost-user cannot tell; default blk)\n"
    "  --dma MODE             direct: VIRTIO_F_ACCESS_PLATFORM is not accepted and the back-end\n"
    "                         reaches the driver's memory as shared memory; strict, lazy,\n"
    "                         premapped (IOMMU: the front-end publishes IOTLB entries) or\n"
    "                         bounce (a shared window, data copied): ACCESS_PLATFORM is accepted\n"
    "                         when offered, and the mode used when it is negotiated\n"
    "                         (default direct; strict with --restricted)\n"
    "  --restricted           restricted-memory policy: refuse a back-end that does not offer\n"
    "                         ACCESS_PLATFORM (it would reach memory outside the platform)\n"
    "  --packed               accept RING_PACKED when offered (default: split rings)\n"
    "  --quiet                do not print the negotiated features\n"
    "  --verbose              log every negotiation step\n"
    "  --server               create the socket and wait for the back-end to connect\n"
    "  --connect-timeout MS   wait this long for the socket or the back-end (default 2000)\n"
    "  --timeout MS           the most any reply may take (default 5000)\n";

void cli_common_defaults(struct cli_common *c)
{
	*c = (struct cli_common){
		.device_id = VIRTIO_ID_BLOCK,
		.dma = VT_DMA_DIRECT,
		.connect_timeout_ms = 2000,
		.timeout_ms = 5000,
	};
}

int cli_common_option(struct cli_common *c, int opt, const char *arg)
{
	uint64_t v;

	switch (opt) {
	case CLI_OPT_SOCKET:
		c->socket_path = arg;
		return 1;
	case CLI_OPT_DEVICE:
		if (strcmp(arg, "blk") == 0 || strcmp(arg, "block") == 0) {
			c->device_id = VIRTIO_ID_BLOCK;
		} else if (strcmp(arg, "net") == 0) {
			c->device_id = VIRTIO_ID_NET;
		} else {
			cli_err("--device %s: blk or net", arg);
			return -1;
		}
		return 1;
	case CLI_OPT_DMA:
		if (vt_dma_mode_parse(arg, &c->dma) < 0) {
			cli_err("--dma %s: direct, strict, lazy, premapped or bounce", arg);
			return -1;
		}
		c->dma_given = true;
		return 1;
	case CLI_OPT_RESTRICTED:
		c->restricted = true;
		return 1;
	case CLI_OPT_PACKED:
		c->packed = true;
		return 1;
	case CLI_OPT_QUIET:
		c->quiet = true;
		return 1;
	case CLI_OPT_VERBOSE:
		c->verbose = true;
		return 1;
	case CLI_OPT_SERVER:
		c->server = true;
		return 1;
	case CLI_OPT_CONNECT_TIMEOUT:
	case CLI_OPT_TIMEOUT:
		if (cli_parse_uint(arg, 1, 600000, &v) < 0) {
			cli_err("--%s %s: milliseconds, 1..600000",
				opt == CLI_OPT_TIMEOUT ? "timeout" : "connect-timeout", arg);
			return -1;
		}
		if (opt == CLI_OPT_TIMEOUT)
			c->timeout_ms = (unsigned int)v;
		else
			c->connect_timeout_ms = (unsigned int)v;
		return 1;
	default:
		return 0;
	}
}

int cli_common_finish(struct cli_common *c)
{
	if (!c->socket_path) {
		cli_err("--socket PATH is required");
		return -1;
	}
	if (c->restricted && !c->dma_given)
		c->dma = VT_DMA_IOMMU_STRICT;
	if (c->restricted && c->dma == VT_DMA_DIRECT) {
		cli_err(
		    "--restricted needs a platform DMA mode (strict, lazy, premapped or bounce): "
		    "with --dma direct ACCESS_PLATFORM is never accepted");
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------- logging */

static void log_line(void *opaque, enum vt_log_level level, const char *message)
{
	(void)opaque;
	static const char *const names[] = { "error", "warning", "info", "debug" };
	fprintf(stderr, "%s: %s: %s\n", cli_prog, names[level <= VT_LOG_DEBUG ? level : 3],
		message);
}

/* ---------------------------------------------------------------- connecting */

int cli_connect(const struct cli_common *c, uint64_t shm_size, uint64_t bounce_window,
		struct cli_device *d)
{
	const struct vt_shm_region *region;

	memset(d, 0, sizeof(*d));
	d->log =
	    (struct vt_log){ .fn = log_line, .max_level = c->verbose ? VT_LOG_DEBUG : VT_LOG_WARN };
	d->supported = VT_BIT(VIRTIO_F_VERSION_1) | VT_BIT(VIRTIO_F_EVENT_IDX) |
		       VT_BIT(VIRTIO_F_INDIRECT_DESC);
	if (c->device_id == VIRTIO_ID_BLOCK)
		d->supported |= VT_BLK_DRIVER_FEATURES;
	else
		d->supported |= VT_NET_DRIVER_FEATURES;
	if (c->packed)
		d->supported |= VT_BIT(VIRTIO_F_RING_PACKED);
	if (c->dma != VT_DMA_DIRECT)
		d->supported |= VT_BIT(VIRTIO_F_ACCESS_PLATFORM); /* offer: platform DMA modes */

	int rc = vt_shm_new(&d->shm);
	if (rc == 0)
		rc = vt_shm_add_memfd(d->shm, shm_size, CLI_SHM_GPA, &region);
	if (rc < 0) {
		cli_err("shared memory of %llu bytes: %s", (unsigned long long)shm_size,
			strerror(-rc));
		cli_close(d);
		return rc;
	}
	struct vt_vu_frontend_params p = {
		.socket_path = c->socket_path,
		.server = c->server,
		.fd = -1,
		.connect_timeout_ms = c->connect_timeout_ms,
		.timeout_ms = c->timeout_ms,
		.device_id = c->device_id,
		.supported = d->supported,
		.restricted_memory = c->restricted,
		/* Direct never negotiates the platform; the front-end still wants a mode. */
		.platform_dma = c->dma == VT_DMA_DIRECT ? VT_DMA_IOMMU_STRICT : c->dma,
		.shm = d->shm,
		.bounce_window_size = bounce_window,
		.name = "virtue",
		.log = &d->log,
	};
	rc = vt_vu_frontend_connect(&p, &d->fe);
	if (rc < 0) {
		d->fe = NULL;
		if (rc == -ENOENT || rc == -ECONNREFUSED || rc == -ETIMEDOUT)
			cli_err("cannot reach a vhost-user back-end at %s: %s", c->socket_path,
				strerror(-rc));
		else
			cli_err("vhost-user handshake with %s failed: %s", c->socket_path,
				strerror(-rc));
		cli_close(d);
		return rc;
	}
	return 0;
}

int cli_negotiate(const struct cli_common *c, struct cli_device *d)
{
	int rc = vt_vu_frontend_negotiate(d->fe);
	if (rc == 0)
		return 0;
	uint64_t offered = vt_vu_frontend_offered_features(d->fe);
	if (rc == -EPERM && c->restricted && !vt_uses_platform_dma(offered))
		cli_err("negotiation refused by the restricted-memory policy: the back-end at %s "
			"does not offer ACCESS_PLATFORM (VIRTIO_F_ACCESS_PLATFORM, bit 33), so it "
			"would reach the driver's memory without the platform",
			c->socket_path);
	else if (rc == -EPERM)
		cli_err("negotiation refused by the restricted-memory policy (ACCESS_PLATFORM "
			"not accepted)");
	else if (rc == -ENOTSUP)
		cli_err("the back-end does not offer VERSION_1 (legacy devices are not supported)");
	else
		cli_err("feature negotiation failed: %s", strerror(-rc));
	return rc;
}

void cli_close(struct cli_device *d)
{
	if (d->fe)
		vt_vu_frontend_close(d->fe);
	d->fe = NULL;
	if (d->shm)
		vt_shm_free(d->shm);
	d->shm = NULL;
}

/* ---------------------------------------------------------------- names */

static const char *const protocol_names[] = {
	[VHOST_USER_PROTOCOL_F_MQ] = "MQ",
	[VHOST_USER_PROTOCOL_F_LOG_SHMFD] = "LOG_SHMFD",
	[VHOST_USER_PROTOCOL_F_RARP] = "RARP",
	[VHOST_USER_PROTOCOL_F_REPLY_ACK] = "REPLY_ACK",
	[VHOST_USER_PROTOCOL_F_NET_MTU] = "NET_MTU",
	[VHOST_USER_PROTOCOL_F_BACKEND_REQ] = "BACKEND_REQ",
	[VHOST_USER_PROTOCOL_F_CROSS_ENDIAN] = "CROSS_ENDIAN",
	[VHOST_USER_PROTOCOL_F_CRYPTO_SESSION] = "CRYPTO_SESSION",
	[VHOST_USER_PROTOCOL_F_PAGEFAULT] = "PAGEFAULT",
	[VHOST_USER_PROTOCOL_F_CONFIG] = "CONFIG",
	[VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD] = "BACKEND_SEND_FD",
	[VHOST_USER_PROTOCOL_F_HOST_NOTIFIER] = "HOST_NOTIFIER",
	[VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD] = "INFLIGHT_SHMFD",
	[VHOST_USER_PROTOCOL_F_RESET_DEVICE] = "RESET_DEVICE",
	[VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS] = "INBAND_NOTIFICATIONS",
	[VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS] = "CONFIGURE_MEM_SLOTS",
	[VHOST_USER_PROTOCOL_F_STATUS] = "STATUS",
};

void cli_protocol_str(uint64_t protocol, char *buf, size_t size)
{
	size_t len = 0;

	if (size == 0)
		return;
	buf[0] = '\0';
	for (unsigned int bit = 0; bit < 64; bit++) {
		if (!(protocol & VT_BIT(bit)))
			continue;
		char unknown[16];
		const char *name = bit < sizeof(protocol_names) / sizeof(protocol_names[0])
				       ? protocol_names[bit]
				       : NULL;
		if (!name) {
			snprintf(unknown, sizeof(unknown), "bit%u", bit);
			name = unknown;
		}
		int n = snprintf(buf + len, size - len, "%s%s", len ? " " : "", name);
		if (n < 0 || (size_t)n >= size - len)
			return;
		len += (size_t)n;
	}
	if (len == 0)
		snprintf(buf, size, "(none)");
}

void cli_print_negotiated(FILE *f, const struct cli_common *c, struct cli_device *d)
{
	char names[1024];
	uint64_t features = vt_vu_frontend_features(d->fe);

	if (c->quiet)
		return;
	vt_features_str(c->device_id, features, names, sizeof(names));
	fprintf(f, "negotiated: %s\n", names);
	cli_protocol_str(vt_vu_frontend_protocol_features(d->fe), names, sizeof(names));
	fprintf(f, "protocol: %s\n", names);
	fprintf(f, "dma: %s%s\n", vt_dma_mode_name(vt_dma_mode(vt_vu_frontend_dma(d->fe))),
		c->restricted ? " (restricted-memory policy)" : "");
}

/* ---------------------------------------------------------------- numbers */

int cli_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;

	if (!s || *s == '\0' || *s == '-')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int cli_parse_size(const char *s, uint64_t *out)
{
	char *end;

	if (!s || *s == '\0' || *s == '-')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	unsigned int shift = 0;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case 't':
	case 'T':
		shift = 40;
		break;
	case '\0':
		break;
	default:
		return -1;
	}
	if (shift) {
		end++;
		if (*end == 'i' && end[1] == 'B')
			end += 2;
		else if (*end == 'B' || *end == 'b')
			end++;
	}
	if (*end != '\0' || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

int cli_parse_seconds(const char *s, uint64_t *ms)
{
	char *end;

	if (!s || *s == '\0' || *s == '-')
		return -1;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0 || v > 1e7)
		return -1;
	if (strcmp(end, "ms") == 0)
		*ms = (uint64_t)v;
	else if (*end == '\0' || strcmp(end, "s") == 0)
		*ms = (uint64_t)(v * 1000.0 + 0.5);
	else
		return -1;
	return 0;
}

uint64_t cli_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
