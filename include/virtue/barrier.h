/* SPDX-License-Identifier: MIT */
/*
 * Memory barriers between driver and device, in the two strengths of platform.h. Weak barriers are
 * C11 thread fences (the peer is another CPU). Platform barriers must also order accesses against
 * real DMA masters, which C11 cannot express, so they use the architecture's outer-shareable or
 * I/O-ordering instructions; where none is known here they fall back to a sequentially
 * consistent fence, which is at least as strong as the weak kind.
 */
#ifndef VIRTUE_BARRIER_H
#define VIRTUE_BARRIER_H

#include <stdatomic.h>

#include "platform.h"

/* Orders earlier loads and stores against later loads and stores. */
static inline void vt_mb(enum vt_barrier_kind kind)
{
	if (kind == VT_BARRIERS_WEAK) {
		atomic_thread_fence(memory_order_seq_cst);
		return;
	}
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("mfence" ::: "memory");
#elif defined(__aarch64__)
	__asm__ __volatile__("dmb osh" ::: "memory");
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* Orders earlier loads against later loads and stores (reading what the peer published). */
static inline void vt_rmb(enum vt_barrier_kind kind)
{
	if (kind == VT_BARRIERS_WEAK) {
		atomic_thread_fence(memory_order_acquire);
		return;
	}
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("lfence" ::: "memory");
#elif defined(__aarch64__)
	__asm__ __volatile__("dmb oshld" ::: "memory");
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* Orders earlier stores against later stores (publishing to the peer). */
static inline void vt_wmb(enum vt_barrier_kind kind)
{
	if (kind == VT_BARRIERS_WEAK) {
		atomic_thread_fence(memory_order_release);
		return;
	}
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("sfence" ::: "memory");
#elif defined(__aarch64__)
	__asm__ __volatile__("dmb oshst" ::: "memory");
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

#endif
