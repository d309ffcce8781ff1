/* SPDX-License-Identifier: MIT */
/*
 * virtue: the command-line driver for vhost-user back-ends. `virtue info` shows what a back-end
 * offers; `virtue blk` runs an fio-like workload on a vhost-user-blk back-end through virtue's
 * front-end and virtio-blk driver, `virtue net` (net.c) moves frames through the virtio-net
 * driver; both in any DMA mode (the front-end acting as the back-end's IOMMU when
 * ACCESS_PLATFORM is negotiated).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "net.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: virtue COMMAND --socket PATH [options]\n"
		   "commands:\n"
		   "  info   what the back-end offers: features, protocol features, queues,\n"
		   "         memory slots, the configuration decoded\n"
		   "  blk    an I/O workload on a vhost-user-blk back-end (fio-like)\n"
		   "  net    transmit and/or receive frames on a vhost-user net back-end\n"
		   "`virtue COMMAND --help` lists its options.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "info") == 0)
		return cli_info_main(argc - 1, argv + 1);
	if (strcmp(cmd, "blk") == 0)
		return cli_blk_main(argc - 1, argv + 1);
	if (strcmp(cmd, "net") == 0)
		return virtue_cmd_net(argc - 1, argv + 1);
	cli_err("unknown command '%s'", cmd);
	usage(stderr);
	return CLI_EXIT_USAGE;
}
