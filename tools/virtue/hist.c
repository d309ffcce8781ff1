/* SPDX-License-Identifier: MIT */
/*
 * The CLI's latency histogram (hist.h): values below 2 * HIST_SUB have a bucket each; above,
 * the bucket is the value's top HIST_SUB_BITS + 1 bits, so each power of two is cut into
 * HIST_SUB equal buckets.
 */
#include <string.h>

#include "hist.h"

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

unsigned int hist_index(uint64_t value)
{
	if (value < 2 * HIST_SUB)
		return (unsigned int)value;
	unsigned int msb = 63u - (unsigned int)__builtin_clzll(value); /* >= HIST_SUB_BITS + 1 */
	unsigned int shift = msb - HIST_SUB_BITS; /* value >> shift: [SUB, 2SUB) */
	return 2 * HIST_SUB + (shift - 1) * HIST_SUB + (unsigned int)(value >> shift) - HIST_SUB;
}

uint64_t hist_bucket_low(unsigned int index)
{
	if (index < 2 * HIST_SUB)
		return index;
	unsigned int shift = (index - 2 * HIST_SUB) / HIST_SUB + 1;
	uint64_t top = HIST_SUB + (index - 2 * HIST_SUB) % HIST_SUB;
	return top << shift;
}

void hist_record(struct hist *h, uint64_t value)
{
	h->count++;
	h->sum += value;
	if (value < h->min)
		h->min = value;
	if (value > h->max)
		h->max = value;
	h->buckets[hist_index(value)]++;
}

void hist_merge(struct hist *to, const struct hist *from)
{
	if (from->count == 0)
		return;
	to->count += from->count;
	to->sum += from->sum;
	if (from->min < to->min)
		to->min = from->min;
	if (from->max > to->max)
		to->max = from->max;
	for (unsigned int i = 0; i < HIST_BUCKETS; i++)
		to->buckets[i] += from->buckets[i];
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	if (h->count == 0)
		return 0;
	double want = p / 100.0 * (double)h->count;
	uint64_t rank = (uint64_t)want;
	if ((double)rank < want)
		rank++;
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned int i = 0; i < HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen < rank)
			continue;
		uint64_t low = hist_bucket_low(i);
		uint64_t high = i + 1 < HIST_BUCKETS ? hist_bucket_low(i + 1) - 1 : UINT64_MAX;
		uint64_t mid = low + (high - low) / 2;
		if (mid < h->min)
			mid = h->min;
		if (mid > h->max)
			mid = h->max;
		return mid;
	}
	return h->max;
}
