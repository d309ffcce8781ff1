/* SPDX-License-Identifier: MIT */
/*
 * Memory table: the driver-physical (guest-physical) regions a driver shares with the device, as
 * vhost-user's SET_MEM_TABLE / ADD_MEM_REG describe them, each mapped at a host address of the
 * device's process. Sorted by address; lookups are O(log n) with a last-hit fast path.
 *
 * Threading: lookups may run on several threads at once; adding or removing regions must not run
 * concurrently with lookups (the transport quiesces the queues first, as vhost-user requires).
 */
#ifndef VIRTUE_MEMTABLE_H
#define VIRTUE_MEMTABLE_H

#include <stdint.h>

#include "as.h"
#include "log.h"

/* vhost-user's VHOST_USER_GET_MAX_MEM_SLOTS answer: the most regions a frontend may share. */
#define VT_MEMTABLE_MAX_REGIONS 509

struct vt_mem_region {
	uint64_t gpa;	/* driver-physical start */
	uint64_t size;	/* bytes, > 0 */
	void *hva;	/* where the device's process sees the first byte */
	uint64_t uaddr; /* the driver process's own address of the first byte (vhost-user), or 0 */
};

struct vt_memtable;
struct vt_shm;

/* Returns NULL only when out of memory. */
struct vt_memtable *vt_memtable_new(const struct vt_log *log);
void vt_memtable_free(struct vt_memtable *table);

/*
 * Adds a region. -EINVAL: size 0 or gpa + size wraps; -EEXIST: overlaps a region already present
 * (in driver-physical addresses); -ENOSPC: VT_MEMTABLE_MAX_REGIONS are present.
 */
int vt_memtable_add(struct vt_memtable *table, const struct vt_mem_region *region);

/*
 * Adds every memfd region of @shm (fd >= 0: what a vhost-user frontend would share) as a device in
 * the driver's own process sees it: hva and uaddr are the region's hva, gpa its gpa. Regions of
 * caller memory (vt_shm_add_host) are left out. For in-process device halves, tests and benchmarks,
 * which would otherwise each spell out the same vt_mem_region per region. Returns 0 (also when
 * @shm has no memfd region: the table is unchanged), or the first vt_memtable_add error, after
 * removing the regions this call had added.
 */
int vt_memtable_add_shm(struct vt_memtable *table, const struct vt_shm *shm);

/* Removes the region that starts at @gpa with @size exactly; -ENOENT if there is none. */
int vt_memtable_remove(struct vt_memtable *table, uint64_t gpa, uint64_t size);

/* Removes every region. */
void vt_memtable_clear(struct vt_memtable *table);

unsigned int vt_memtable_count(const struct vt_memtable *table);

/* The region containing @gpa, or NULL. Valid until the table is next modified. */
const struct vt_mem_region *vt_memtable_find(const struct vt_memtable *table, uint64_t gpa);

/*
 * The region whose driver-process addresses hold all of [uaddr, uaddr + len), or NULL (with
 * *@err -EFAULT or -EOVERFLOW). Valid until the table is next modified: a caller converting many
 * addresses at once (an IOTLB burst) checks each against it instead of searching again.
 */
const struct vt_mem_region *vt_memtable_find_uaddr(const struct vt_memtable *table, uint64_t uaddr,
						   uint64_t len, int *err);

/*
 * Converts a driver-process address (a region's uaddr range) to this process's address, as
 * vhost-user ring addresses and IOTLB entries need. The whole [uaddr, uaddr + len) must lie in
 * one region. Returns 0, -EFAULT (not covered) or -EOVERFLOW.
 */
int vt_memtable_uaddr_to_hva(const struct vt_memtable *table, uint64_t uaddr, uint64_t len,
			     void **hva);

/*
 * The same conversion to a driver-physical address: vhost-user gives ring addresses in the
 * frontend's own addresses unless ACCESS_PLATFORM is negotiated, while descriptors carry
 * driver-physical ones, and the ring code reads both through one address space.
 */
int vt_memtable_uaddr_to_gpa(const struct vt_memtable *table, uint64_t uaddr, uint64_t len,
			     uint64_t *gpa);
/* Translation as vt_as_translate (memtable regions are readable and writable). */
int vt_memtable_translate(const struct vt_memtable *table, uint64_t gpa, uint64_t len,
			  unsigned int access, struct iovec *iov, unsigned int iov_max,
			  unsigned int *iov_count, struct vt_as_fault *fault);

uint64_t vt_memtable_generation(const struct vt_memtable *table);

/* The table as an address space; valid as long as the table lives. */
struct vt_as vt_memtable_as(struct vt_memtable *table);

#endif
