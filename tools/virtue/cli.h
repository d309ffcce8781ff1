/* SPDX-License-Identifier: MIT */
/*
 * The virtue CLI's shared parts: options every subcommand takes (socket, device type, DMA mode,
 * restricted-memory policy, quiet, verbose), connecting and negotiating through the vhost-user
 * front-end, printing feature sets by name, and number parsing.
 */
#ifndef VIRTUE_CLI_H
#define VIRTUE_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <getopt.h>
#include <stdio.h>

#include <virtue/dma.h>
#include <virtue/log.h>
#include <virtue/shm.h>
#include <virtue/vhost_user_frontend.h>

/* Exit codes: 0 success, 1 the device or the run failed, 2 a bad command line. */
#define CLI_EXIT_FAIL  1
#define CLI_EXIT_USAGE 2

/* Where the shared memory sits in the driver-physical space the back-end is told about. */
#define CLI_SHM_GPA (1ull << 32)

struct cli_common {
	const char *socket_path;
	uint32_t device_id; /* VIRTIO_ID_BLOCK unless --device */
	enum vt_dma_mode dma;
	bool dma_given;
	bool restricted;
	bool packed; /* accept RING_PACKED when offered */
	bool quiet;
	bool verbose;
	bool server; /* listen on the socket path; the back-end connects */
	unsigned int connect_timeout_ms;
	unsigned int timeout_ms;
};

/* A connected (and, after cli_negotiate, negotiated) device. */
struct cli_device {
	struct vt_shm *shm;
	struct vt_vu_frontend *fe;
	struct vt_log log;
	uint64_t supported;
};

extern const char *cli_prog;

/* Prints "virtue: " and the message to stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Options every subcommand takes, as getopt_long entries whose values are CLI_OPT_* (a
 * subcommand lists them after its own). cli_common_option handles one: 1 when @opt was one of
 * them, 0 when it was not, -1 (message printed) when its value is bad.
 */
enum {
	CLI_OPT_SOCKET = 1000,
	CLI_OPT_DEVICE,
	CLI_OPT_DMA,
	CLI_OPT_RESTRICTED,
	CLI_OPT_PACKED,
	CLI_OPT_QUIET,
	CLI_OPT_VERBOSE,
	CLI_OPT_CONNECT_TIMEOUT,
	CLI_OPT_TIMEOUT,
	CLI_OPT_SERVER,
};
#define CLI_COMMON_OPTIONS                                                                         \
	{ "socket", required_argument, NULL, CLI_OPT_SOCKET },                                     \
	    { "device", required_argument, NULL, CLI_OPT_DEVICE },                                 \
	    { "dma", required_argument, NULL, CLI_OPT_DMA },                                       \
	    { "restricted", no_argument, NULL, CLI_OPT_RESTRICTED },                               \
	    { "packed", no_argument, NULL, CLI_OPT_PACKED },                                       \
	    { "quiet", no_argument, NULL, CLI_OPT_QUIET },                                         \
	    { "verbose", no_argument, NULL, CLI_OPT_VERBOSE },                                     \
	    { "connect-timeout", required_argument, NULL, CLI_OPT_CONNECT_TIMEOUT },               \
	    { "server", no_argument, NULL, CLI_OPT_SERVER },                                       \
	{                                                                                          \
		"timeout", required_argument, NULL, CLI_OPT_TIMEOUT                                \
	}
int cli_common_option(struct cli_common *c, int opt, const char *arg);
void cli_common_defaults(struct cli_common *c);
/* Checks the combination (e.g. --restricted with --dma direct); -1 with a message. */
int cli_common_finish(struct cli_common *c);
extern const char cli_common_help[];

/*
 * Connects to the back-end with @shm_size bytes of shared memory (the driver's memory) and a
 * bounce window of @bounce_window bytes (0: the front-end's default). Returns 0, or prints why
 * and returns -errno.
 */
int cli_connect(const struct cli_common *c, uint64_t shm_size, uint64_t bounce_window,
		struct cli_device *d);
/* Negotiates; prints why on failure (the restricted-memory policy named). */
int cli_negotiate(const struct cli_common *c, struct cli_device *d);
void cli_close(struct cli_device *d);

/* "MQ REPLY_ACK ..." for a protocol feature set. */
void cli_protocol_str(uint64_t protocol, char *buf, size_t size);
/* Prints the negotiated features (and DMA mode) to @f as "negotiated: ..." lines. */
void cli_print_negotiated(FILE *f, const struct cli_common *c, struct cli_device *d);

/* ---------------------------------------------------------------- virtio-blk on the device */

struct vt_blk_info;
struct vt_blk_completion;

/* One request queue: the ring the front-end runs and the driver's engine over it. */
struct cli_blk_queue {
	struct vt_blk_driver_queue *engine;
	struct vt_vq_drv *vq;
	unsigned int index;
};

/*
 * Reads the configuration space (the largest size the back-end answers) and decodes it under
 * @features. 0, or -errno with a message printed.
 */
int cli_blk_config(struct cli_device *d, uint64_t features, struct vt_blk_info *info);
/* Starts queue @index with @num entries and an engine over it (allocating from d->shm). */
int cli_blk_queue_open(struct cli_device *d, const struct vt_blk_info *info, unsigned int index,
		       unsigned int num, struct cli_blk_queue *q);
/* Frees the engine (the queue itself goes with the front-end's reset or close). */
void cli_blk_queue_close(struct cli_blk_queue *q);
/*
 * Collects up to @max completions, blocking up to @timeout_ms for the first: how many, or
 * -ETIMEDOUT, or the front-end's / engine's error (-EIO, -EFAULT, -ECONNRESET, -EPROTO).
 */
int cli_blk_queue_reap(struct cli_device *d, struct cli_blk_queue *q, struct vt_blk_completion *out,
		       unsigned int max, int timeout_ms);
/* What a wait or poll error means, for people. */
const char *cli_blk_error(int rc);

/* "4k", "64K", "1m", "512", "2G": bytes (binary suffixes). -1 when not a number. */
int cli_parse_size(const char *s, uint64_t *out);
int cli_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* "30", "2.5", "500ms": milliseconds. */
int cli_parse_seconds(const char *s, uint64_t *ms);

uint64_t cli_now_ns(void);

int cli_info_main(int argc, char **argv);
int cli_blk_main(int argc, char **argv);

#endif
