/* SPDX-License-Identifier: MIT */
/*
 * `virtue info`: what a vhost-user back-end offers (features and protocol features by name,
 * queues, memory slots), its configuration space decoded as a driver would read it, what this
 * driver negotiates with it, and for a block device its GET_ID answer.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <virtue/blk_driver.h>
#include <virtue/features.h>
#include <virtue/net_driver.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/spec/virtio_net.h>

#include "cli.h"

#define INFO_SHM_SIZE (4u << 20)
#define INFO_QUEUE    16
#define INFO_WAIT_MS  5000

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: virtue info --socket PATH [options]\n"
	    "Connects, prints what the back-end offers and its configuration, negotiates (as\n"
	    "`virtue blk` would with the same --dma, --restricted and --packed) and, for a block\n"
	    "device, asks for its id. Exit 1 when the back-end cannot be reached or negotiation\n"
	    "fails.\n"
	    "%s",
	    cli_common_help);
}

static void print_blk_config(struct cli_device *d, uint64_t offered)
{
	struct vt_blk_info info;
	char text[2048];

	/* Decoded under the features a driver would accept: what it would read. */
	if (cli_blk_config(d, offered & d->supported, &info) < 0)
		return;
	vt_blk_info_str(&info, text, sizeof(text));
	printf("config:\n");
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		printf("  %s\n", line);
}

static void print_net_config(struct cli_device *d, uint64_t offered)
{
	struct virtio_net_config c;
	struct vt_net_info info;
	char text[1024];

	/* mac, status, max_virtqueue_pairs, mtu: the fields the driver's features put there. */
	memset(&c, 0, sizeof(c));
	int rc =
	    vt_vu_frontend_config_read(d->fe, 0, &c, offsetof(struct virtio_net_config, speed));
	if (rc < 0) {
		printf("config: not readable (%s)\n",
		       rc == -ENOTSUP ? "no CONFIG protocol feature" : strerror(-rc));
		return;
	}
	if (vt_net_config_decode(&c, sizeof(c), offered & d->supported, &info) < 0) {
		cli_err("the back-end's virtio-net configuration is invalid (queue pairs outside "
			"1..0x8000, or an MTU below 68)");
		return;
	}
	vt_net_info_str(&info, text, sizeof(text));
	printf("config:\n");
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		printf("  %s\n", line);
}

/* GET_ID on queue 0: the device's serial, or why not. */
static void print_blk_id(struct cli_device *d)
{
	struct vt_blk_info info;
	struct cli_blk_queue q;
	struct vt_blk_completion done;
	char id[VIRTIO_BLK_ID_BYTES + 1];
	void *buf = NULL;

	if (cli_blk_config(d, vt_vu_frontend_features(d->fe), &info) < 0)
		return;
	if (vt_shm_alloc(d->shm, VIRTIO_BLK_ID_BYTES, 64, &buf) < 0)
		return;
	memset(buf, 0, VIRTIO_BLK_ID_BYTES);
	int rc = cli_blk_queue_open(d, &info, 0, INFO_QUEUE, &q);
	if (rc == 0)
		rc = vt_vu_frontend_ready(d->fe);
	if (rc == 0)
		rc = vt_blk_driver_queue_get_id(q.engine, buf, NULL);
	if (rc == 0)
		rc = vt_vu_frontend_kick(d->fe, 0);
	if (rc == 0)
		rc = cli_blk_queue_reap(d, &q, &done, 1, INFO_WAIT_MS);
	if (rc == 1 && done.result == 0)
		printf("id: %s\n", vt_blk_id_str(buf, done.bytes, id));
	else if (rc == 1)
		printf("id: (GET_ID answered %s)\n",
		       done.result == -ENOTSUP ? "unsupported" : "an I/O error");
	else
		cli_err("GET_ID: %s", cli_blk_error(rc));
	/* The request is back (or the device is gone): stop the queue before freeing its engine.
	 */
	vt_vu_frontend_reset(d->fe, NULL, NULL);
	if (q.engine)
		cli_blk_queue_close(&q);
	vt_shm_release(d->shm, buf, VIRTIO_BLK_ID_BYTES);
}

int cli_info_main(int argc, char **argv)
{
	static const struct option options[] = {
		CLI_COMMON_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_common c;
	struct cli_device d;
	char names[1024];
	int opt;

	cli_common_defaults(&c);
	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (opt == 'h') {
			usage(stdout);
			return 0;
		}
		int r = cli_common_option(&c, opt, optarg);
		if (r < 0)
			return CLI_EXIT_USAGE;
		if (r == 0) {
			usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		cli_err("unexpected argument '%s'", argv[optind]);
		return CLI_EXIT_USAGE;
	}
	if (cli_common_finish(&c) < 0)
		return CLI_EXIT_USAGE;
	if (cli_connect(&c, INFO_SHM_SIZE, 0, &d) < 0)
		return CLI_EXIT_FAIL;

	uint64_t offered = vt_vu_frontend_offered_features(d.fe);
	printf("socket: %s\n", c.socket_path);
	printf("device: %s (from --device: vhost-user does not say)\n",
	       vt_device_type_name(c.device_id));
	vt_features_str(c.device_id, offered, names, sizeof(names));
	printf("features offered: %s (0x%llx)\n", names, (unsigned long long)offered);
	uint64_t protocol = vt_vu_frontend_protocol_offered(d.fe);
	cli_protocol_str(protocol, names, sizeof(names));
	printf("protocol features offered: %s (0x%llx)\n", names, (unsigned long long)protocol);
	protocol = vt_vu_frontend_protocol_features(d.fe);
	cli_protocol_str(protocol, names, sizeof(names));
	printf("protocol features accepted: %s\n", names);
	printf("queues: %u\n", vt_vu_frontend_num_queues(d.fe));
	unsigned int slots = vt_vu_frontend_max_mem_slots(d.fe);
	if (slots)
		printf("max memory slots: %u\n", slots);
	else
		printf("max memory slots: (not asked: no CONFIGURE_MEM_SLOTS)\n");
	if (c.device_id == VIRTIO_ID_BLOCK)
		print_blk_config(&d, offered);
	else
		print_net_config(&d, offered);
	fflush(stdout);

	int rc = cli_negotiate(&c, &d);
	if (rc == 0) {
		cli_print_negotiated(stdout, &c, &d);
		if (c.device_id == VIRTIO_ID_BLOCK)
			print_blk_id(&d);
	}
	cli_close(&d);
	return rc == 0 ? 0 : CLI_EXIT_FAIL;
}
