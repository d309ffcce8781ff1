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

/*
 * ThreadSanitizer does not understand the asm fences below; in TSan builds a C11 fence of the
 * same strength is added beside each, so it sees the ordering that is really there.
 */
#if defined(__SANITIZE_THREAD__)
#define VT_BARRIER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VT_BARRIER_TSAN 1
#endif
#endif
#ifdef VT_BARRIER_TSAN
#define vt_barrier_tsan_fence(order) atomic_thread_fence(order)
#else
#define vt_barrier_tsan_fence(order) ((void)0)
#endif

/* Orders earlier loads and stores against later loads and stores. */
static inline void vt_mb(enum vt_barrier_kind kind)
{
	if (kind == VT_BARRIERS_WEAK) {
		atomic_thread_fence(memory_order_seq_cst);
		return;
	}
	vt_barrier_tsan_fence(memory_order_seq_cst);
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
	vt_barrier_tsan_fence(memory_order_acquire);
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
	vt_barrier_tsan_fence(memory_order_release);
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("sfence" ::: "memory");
#elif defined(__aarch64__)
	__asm__ __volatile__("dmb oshst" ::: "memory");
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

#endif
