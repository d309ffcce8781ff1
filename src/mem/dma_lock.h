/* SPDX-License-Identifier: MIT */
/*
 * The lock of a DMA mode that keeps state per mapping (IOMMU, bounce), and of the IOTLB's
 * writers, with batches: a batch (vt_dma_batch_begin, vt_iotlb_batch_begin) holds the mutex from
 * its begin to its end and names its thread, and the calls that thread makes inside it (maps and
 * unmaps; IOTLB updates and invalidations) skip the mutex. A recursive mutex would take it again
 * at the cost of a lock and an unlock per call, which a ring burst pays per buffer.
 */
#ifndef VIRTUE_DMA_LOCK_H
#define VIRTUE_DMA_LOCK_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct vt_dma_lock {
	pthread_mutex_t mutex;
	/*
	 * The thread holding the mutex for a batch (vt_dma_lock_thread_id), 0 outside batches.
	 * Set after the mutex is taken and cleared before it is let go, so a thread that reads its
	 * own id here is inside its batch: no other thread stores that id, and its own last store,
	 * when its batch ended, was 0. Relaxed: the mutex orders everything else.
	 */
	_Atomic uintptr_t batch_thread;
	unsigned int batch_depth; /* open batches, under the mutex */
};

/*
 * The calling thread, as batch_thread records it: never 0. The thread pointer (the TLS base,
 * distinct for every live thread and never 0) where the compiler reads it inline: every map
 * and unmap asks, and pthread_self() is a call through the PLT, which also makes a caller
 * whose fast path calls nothing else save its registers around it. Else a pthread_t (an
 * address on Linux).
 */
#if defined(__has_builtin) && (defined(__x86_64__) || defined(__aarch64__))
#if __has_builtin(__builtin_thread_pointer)
#define VT_DMA_LOCK_THREAD_POINTER 1
#endif
#endif

static inline uintptr_t vt_dma_lock_thread_id(void)
{
#ifdef VT_DMA_LOCK_THREAD_POINTER
	return (uintptr_t)__builtin_thread_pointer();
#else
	_Static_assert(sizeof(pthread_t) <= sizeof(uintptr_t), "pthread_t must fit a uintptr_t");
	return (uintptr_t)pthread_self();
#endif
}

/* 0 or a positive errno value, as pthread_mutex_init. */
static inline int vt_dma_lock_init(struct vt_dma_lock *l)
{
	atomic_init(&l->batch_thread, 0);
	l->batch_depth = 0;
	return pthread_mutex_init(&l->mutex, NULL);
}

static inline void vt_dma_lock_destroy(struct vt_dma_lock *l)
{
	pthread_mutex_destroy(&l->mutex);
}

/* Whether the calling thread holds the mutex for a batch. */
static inline bool vt_dma_lock_in_batch(struct vt_dma_lock *l)
{
	return atomic_load_explicit(&l->batch_thread, memory_order_relaxed) ==
	       vt_dma_lock_thread_id();
}

/* Takes the mutex unless this thread holds it for a batch; what to pass to vt_dma_unlock. */
static inline bool vt_dma_lock(struct vt_dma_lock *l)
{
	if (vt_dma_lock_in_batch(l))
		return false;
	pthread_mutex_lock(&l->mutex);
	return true;
}

static inline void vt_dma_unlock(struct vt_dma_lock *l, bool locked)
{
	if (locked)
		pthread_mutex_unlock(&l->mutex);
}

/* Opens a batch; one opened inside this thread's own batch only counts. */
static inline void vt_dma_lock_batch_begin(struct vt_dma_lock *l)
{
	if (vt_dma_lock(l))
		atomic_store_explicit(&l->batch_thread, vt_dma_lock_thread_id(),
				      memory_order_relaxed);
	l->batch_depth++;
}

/*
 * Closes a batch: 1 when it was the outermost, whose end the caller then completes (still
 * holding the mutex) before vt_dma_lock_batch_release; 0 for one nested in it; -EINVAL, with
 * nothing changed, when this thread has no batch open (the depth would wrap and the mutex stay
 * held for good).
 */
static inline int vt_dma_lock_batch_closing(struct vt_dma_lock *l)
{
	if (!vt_dma_lock_in_batch(l))
		return -EINVAL;
	return --l->batch_depth == 0;
}

static inline void vt_dma_lock_batch_release(struct vt_dma_lock *l)
{
	atomic_store_explicit(&l->batch_thread, 0, memory_order_relaxed);
	pthread_mutex_unlock(&l->mutex);
}

#endif
