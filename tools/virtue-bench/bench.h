/* SPDX-License-Identifier: MIT */
/* Shared pieces of virtue-bench: timing, result rows, the ping-pong reference. */
#ifndef VIRTUE_BENCH_H
#define VIRTUE_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct bench_opts {
	bool json;
	unsigned int runs; /* repetitions per configuration; the median is reported */
	double scale;	   /* fraction of the default operation counts (quick runs: --quick) */
	const char *only;  /* run only configurations whose label contains this (--only) */
	uint64_t buffers;  /* ring: buffers per run, when set (--buffers); else scaled */
	bool phases;	   /* ring: time each call of both halves too (--phases) */
};

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double bench_median(double *values, unsigned int n);

/* Pins the calling thread to @cpu (best effort: on a one-CPU machine figures are still printed). */
void bench_pin(int cpu);

/*
 * A cheap monotonic tick count for timing single calls (the time-stamp counter on x86, the
 * virtual counter on arm64); callers convert ticks to ns with the ratio over a whole run.
 */
static inline uint64_t bench_ticks(void)
{
#if defined(__x86_64__) || defined(__i386__)
	return __builtin_ia32_rdtsc();
#elif defined(__aarch64__)
	uint64_t v;
	__asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(v));
	return v;
#else
	return bench_now_ns();
#endif
}

/*
 * One-way latency of a cache line bouncing between two threads pinned to CPUs 0 and 1, in ns.
 * Printed next to every result: this machine's vCPUs move between placements, so a figure means
 * something only beside the ping-pong of the same run.
 */
double bench_pingpong_ns(const struct bench_opts *opts);

/* Prints one result row (table or JSON line). @extra is a JSON fragment or NULL. */
void bench_row(const struct bench_opts *opts, const char *bench, const char *config,
	       const char *access, double ns_per_op, double pingpong_ns, const char *extra);
void bench_header(const struct bench_opts *opts, const char *title, double pingpong_ns);

/*
 * ns per buffer of the bare split or packed ring (bench_bare.c): the spec's layout driven as
 * virtue-bench ring drives virtue's (with @in_order, one used entry per device burst and
 * descriptors in ring order, as virtue's in-order rows; with @iommu, every buffer mapped in a
 * one-level page table before it is posted and unmapped when it is back, as the strict rows),
 * with nothing else; -1 when it could not run.
 */
double bench_bare_run(bool packed, bool in_order, bool iommu, unsigned int batch, size_t size,
		      uint64_t count);

int bench_mem(const struct bench_opts *opts);
int bench_ring(const struct bench_opts *opts);
int bench_ringcost(const struct bench_opts *opts);

#endif
