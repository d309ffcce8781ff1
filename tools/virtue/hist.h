/* SPDX-License-Identifier: MIT */
/*
 * A latency histogram of fixed size: log-linear buckets (values below 128 exact, then 64
 * buckets per power of two, so a percentile is off by at most 1/64 of its value), covering every
 * uint64_t. Recording is one index computation and an increment; no allocation, no bound on how
 * many values it takes.
 */
#ifndef VIRTUE_CLI_HIST_H
#define VIRTUE_CLI_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_SUB      (1u << HIST_SUB_BITS) /* buckets per power of two */
#define HIST_BUCKETS  (2 * HIST_SUB + (63 - HIST_SUB_BITS) * HIST_SUB) /* 3776 */

struct hist {
	uint64_t count, sum, min, max;
	uint64_t buckets[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t value);
/* Adds @from's values to @to. */
void hist_merge(struct hist *to, const struct hist *from);
/*
 * The value at percentile @p (0..100): the middle of the bucket holding the value ranked
 * ceil(p/100 * count), clamped to [min, max]. 0 when empty.
 */
uint64_t hist_percentile(const struct hist *h, double p);
/* The smallest value of bucket @index, and the bucket of @value (for tests). */
uint64_t hist_bucket_low(unsigned int index);
unsigned int hist_index(uint64_t value);

#endif
