/* SPDX-License-Identifier: MIT */
/*
 * virtue-bench: micro-benchmarks of the library's layers. Every figure is a median of several runs
 * and is printed beside the cache-line ping-pong measured in the same run.
 *
 *   virtue-bench mem|ring|ringcost|pingpong [--json] [--runs N] [--quick] [--only TEXT]
 *                [--buffers N] [--phases]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static int usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: virtue-bench mem|ring|ringcost|pingpong [--json] [--runs N] [--quick]\n"
	    "                    [--only TEXT] [--buffers N] [--phases]\n"
	    "  mem     address translation (memory table, IOTLB) and DMA map+unmap per mode\n"
	    "  ring    virtqueue throughput between two pinned threads, per format and mode\n"
	    "  ringcost both halves on one thread: the code's own cost per buffer (run it\n"
	    "          under valgrind --tool=callgrind for instructions per buffer)\n"
	    "  pingpong only the cache-line ping-pong (ns one way), the reference printed\n"
	    "          beside every figure (blk_bench.py runs it around each guest run)\n"
	    "  --json  one JSON object per result line\n"
	    "  --runs  repetitions per configuration, median reported (default 5)\n"
	    "  --quick a tenth of the operations (a smoke run)\n"
	    "  --only  ring: only configurations whose label (\"split direct 64 32 no\") has it\n"
	    "  --buffers ring: buffers per run (default 10,000,000; --quick: a tenth)\n"
	    "  --phases ring: also where each half's time goes (driver add, kick, get and\n"
	    "          empty polls; device busy), timed around every call: a little slower\n");
	return out == stdout ? 0 : 2;
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double bench_median(double *values, unsigned int n)
{
	qsort(values, n, sizeof(values[0]), compare_double);
	return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

void bench_header(const struct bench_opts *opts, const char *title, double pingpong_ns)
{
	if (opts->json)
		return;
	printf("%s  (cache-line ping-pong this run: %.0f ns one way)\n", title, pingpong_ns);
	printf("%-22s %-26s %-12s %10s\n", "bench", "config", "access", "ns/op");
}

void bench_row(const struct bench_opts *opts, const char *bench, const char *config,
	       const char *access, double ns_per_op, double pingpong_ns, const char *extra)
{
	if (opts->json) {
		printf("{\"bench\":\"%s\",\"config\":\"%s\",\"access\":\"%s\",\"ns_per_op\":%.2f,"
		       "\"pingpong_ns\":%.1f%s%s}\n",
		       bench, config, access, ns_per_op, pingpong_ns, extra ? "," : "",
		       extra ? extra : "");
	} else {
		printf("%-22s %-26s %-12s %10.2f\n", bench, config, access, ns_per_op);
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct bench_opts opts = { .runs = 5, .scale = 1.0 };
	const char *what = NULL;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			opts.json = true;
		else if (strcmp(argv[i], "--quick") == 0)
			opts.scale = 0.1;
		else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
			opts.only = argv[++i];
		else if (strcmp(argv[i], "--phases") == 0)
			opts.phases = true;
		else if (strcmp(argv[i], "--buffers") == 0 && i + 1 < argc)
			opts.buffers = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
			opts.runs = (unsigned int)strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return usage(stdout);
		else if (argv[i][0] != '-' && !what)
			what = argv[i];
		else
			return usage(stderr);
	}
	if (opts.runs == 0 || opts.runs > 99)
		opts.runs = 5;
	if (!what)
		return usage(stderr);
	if (strcmp(what, "mem") == 0)
		return bench_mem(&opts) < 0 ? 1 : 0;
	if (strcmp(what, "ring") == 0)
		return bench_ring(&opts) < 0 ? 1 : 0;
	if (strcmp(what, "ringcost") == 0)
		return bench_ringcost(&opts) < 0 ? 1 : 0;
	if (strcmp(what, "pingpong") == 0) {
		double pp = bench_pingpong_ns(&opts);
		if (opts.json)
			printf("{\"bench\":\"pingpong\",\"pingpong_ns\":%.1f}\n", pp);
		else
			printf("pingpong %.1f ns one way\n", pp);
		return pp < 0 ? 1 : 0;
	}
	fprintf(stderr, "virtue-bench: unknown benchmark '%s'\n", what);
	return usage(stderr);
}
