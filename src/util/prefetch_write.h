/* SPDX-License-Identifier: MIT */
/*
 * Prefetching lines for writing. A line the peer's CPU read last (a ring's descriptors, an
 * IOTLB's page table) is shared by both caches, and a store to it waits until the peer's copy is
 * invalidated. Stores commit in program order, so a burst that writes such lines one after
 * another waits for their transfers one after another. Asking for the lines in exclusive state
 * first (PREFETCHW on x86, PRFM PSTL1KEEP on arm64) lets those transfers overlap. A hint only: it
 * changes no value and never faults.
 */
#ifndef VIRTUE_UTIL_PREFETCH_WRITE_H
#define VIRTUE_UTIL_PREFETCH_WRITE_H

#include <stdbool.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

/*
 * Whether this CPU has the instruction prefetch_line_for_write uses. A queue's or an IOTLB's
 * constructor asks once: an x86 CPU without it need not treat its opcode as a no-op.
 */
static inline bool cpu_prefetches_for_write(void)
{
#if defined(__x86_64__) || defined(__i386__)
	unsigned int eax, ebx, ecx, edx;
	/* CPUID 0x80000001, ECX bit 8: PREFETCHW (AMD's 3DNowPrefetch, Intel's PRFCHW). */
	return __get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 8));
#else
	return true;
#endif
}

/* Asks for the line holding @p in a state this CPU can write it in. */
static inline void prefetch_line_for_write(const void *p)
{
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("prefetchw %0" ::"m"(*(const char *)p));
#else
	__builtin_prefetch(p, 1);
#endif
}

#endif
