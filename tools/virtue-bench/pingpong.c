/* SPDX-License-Identifier: MIT */
/*
 * The reference every virtue-bench figure is printed beside: how long one cache line takes to
 * travel between the two CPUs right now. Two threads, pinned, alternately write a counter.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

struct pingpong {
	_Alignas(64) _Atomic uint64_t ball;
	uint64_t rounds;
};

void bench_pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	/* Best effort: on a one-CPU machine the figure is still printed, and still honest. */
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *pong(void *arg)
{
	struct pingpong *pp = arg;
	bench_pin(1);
	for (uint64_t i = 0; i < pp->rounds; i++) {
		/* Wait for the odd value (ping's write), answer with the next even one. */
		while (atomic_load_explicit(&pp->ball, memory_order_acquire) != 2 * i + 1)
			;
		atomic_store_explicit(&pp->ball, 2 * i + 2, memory_order_release);
	}
	return NULL;
}

static double pingpong_once(uint64_t rounds)
{
	struct pingpong *pp = aligned_alloc(64, sizeof(*pp));
	if (!pp)
		return -1;
	atomic_init(&pp->ball, 0);
	pp->rounds = rounds;
	pthread_t t;
	if (pthread_create(&t, NULL, pong, pp) != 0) {
		free(pp);
		return -1;
	}
	bench_pin(0);
	uint64_t start = bench_now_ns();
	for (uint64_t i = 0; i < rounds; i++) {
		atomic_store_explicit(&pp->ball, 2 * i + 1, memory_order_release);
		while (atomic_load_explicit(&pp->ball, memory_order_acquire) != 2 * i + 2)
			;
	}
	uint64_t elapsed = bench_now_ns() - start;
	pthread_join(t, NULL);
	free(pp);
	/* Each round is two one-way trips. */
	return (double)elapsed / (double)(2 * rounds);
}

double bench_pingpong_ns(const struct bench_opts *opts)
{
	double v[9];
	unsigned int n = opts->runs < 9 ? opts->runs : 9;
	uint64_t rounds = (uint64_t)(200000 * opts->scale) + 1000;
	for (unsigned int i = 0; i < n; i++)
		v[i] = pingpong_once(rounds);
	/* Unpin the main thread again. */
	cpu_set_t all;
	CPU_ZERO(&all);
	for (int c = 0; c < CPU_SETSIZE; c++)
		CPU_SET(c, &all);
	sched_setaffinity(0, sizeof(all), &all);
	return bench_median(v, n);
}
