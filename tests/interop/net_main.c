/* SPDX-License-Identifier: MIT */
/*
 * The `virtue net` subcommand (tools/virtue/net.c) as a program of its own, for the DPDK interop
 * test (tests/interop/dpdk_net.py) and the benchmark (net_bench.py), built whether or not the
 * virtue CLI is: the same code the CLI runs.
 */
#include "net.h"

int main(int argc, char **argv)
{
	return virtue_cmd_net(argc, argv);
}
