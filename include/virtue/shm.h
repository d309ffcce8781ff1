/* SPDX-License-Identifier: MIT */
/*
 * Driver-side shared memory: the regions a driver shares with a device (memfd-backed, so another
 * process can map them), each placed at a driver-physical address. This is what a vhost-user
 * frontend sends in its memory table, and what the direct DMA mode turns pointers into addresses
 * with. A pointer outside every region cannot be given to the device.
 */
#ifndef VIRTUE_SHM_H
#define VIRTUE_SHM_H

#include <stddef.h>
#include <stdint.h>

#define VT_SHM_MAX_REGIONS 32

struct vt_shm_region {
	void *hva; /* this process's mapping */
	uint64_t size;
	uint64_t gpa; /* driver-physical address the device is told */
	int fd;	      /* memfd, for sharing; -1 for memory the caller provided */
	uint64_t fd_offset;
};

struct vt_shm;

int vt_shm_new(struct vt_shm **out);
/* Unmaps and closes the regions it created. */
void vt_shm_free(struct vt_shm *shm);

/*
 * Creates a memfd region of @size bytes (rounded up to the page size) at driver-physical @gpa and
 * maps it. -EEXIST: overlaps an existing region; -ENOSPC: VT_SHM_MAX_REGIONS reached.
 */
int vt_shm_add_memfd(struct vt_shm *shm, uint64_t size, uint64_t gpa,
		     const struct vt_shm_region **out);

/* Registers memory the caller owns (not shareable across processes: fd -1). */
int vt_shm_add_host(struct vt_shm *shm, void *hva, uint64_t size, uint64_t gpa,
		    const struct vt_shm_region **out);

unsigned int vt_shm_count(const struct vt_shm *shm);
const struct vt_shm_region *vt_shm_region(const struct vt_shm *shm, unsigned int index);

/*
 * The region holding the byte at @ptr, or NULL. Regions are never removed, so the pointer stays
 * valid as long as the shm: a caller checking many buffers (a DMA burst) tests each against the
 * last region found before it searches.
 */
const struct vt_shm_region *vt_shm_find(const struct vt_shm *shm, const void *ptr);

/*
 * The driver-physical address of [ptr, ptr + len), which must lie inside one region: 0, or
 * -EFAULT when it does not.
 */
int vt_shm_gpa(const struct vt_shm *shm, const void *ptr, size_t len, uint64_t *gpa);

/*
 * Allocates @size bytes aligned to @align (a power of two, at most the page size; 0: 64) from the
 * regions this shm created or registered: buffers and rings a device will be given come from here.
 * Bounded: -ENOMEM when no region has room. Memory is not zeroed.
 */
int vt_shm_alloc(struct vt_shm *shm, size_t size, size_t align, void **ptr);
/* Returns memory from vt_shm_alloc with the same size. */
void vt_shm_release(struct vt_shm *shm, void *ptr, size_t size);

#endif
