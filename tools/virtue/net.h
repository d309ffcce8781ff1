/* SPDX-License-Identifier: MIT */
/*
 * `virtue net`: a virtio-net workload through the vhost-user front-end (tools/virtue/net.c).
 * tools/virtue/main.c dispatches the "net" subcommand here, with argv[0] == "net".
 */
#ifndef VIRTUE_TOOLS_NET_H
#define VIRTUE_TOOLS_NET_H

/* Returns the process exit status: 0 done, 1 the workload failed, 2 bad usage. */
int virtue_cmd_net(int argc, char **argv);

#endif
