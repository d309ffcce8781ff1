/* SPDX-License-Identifier: MIT */
/*
 * Device-side address space: how an address written by the driver becomes bytes the device can
 * touch. Two implementations: the memory table (driver-physical addresses, memtable.h) and the
 * IOTLB (bus addresses under VIRTIO_F_ACCESS_PLATFORM, iotlb.h). Ring and device code hold a
 * struct vt_as and never learn which one it is.
 */
#ifndef VIRTUE_AS_H
#define VIRTUE_AS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* What the device does with the bytes. Mappings carry the same bits as permissions. */
enum vt_access {
	VT_ACCESS_READ = 1,  /* device reads driver memory (driver-to-device buffer) */
	VT_ACCESS_WRITE = 2, /* device writes driver memory (device-to-driver buffer) */
	VT_ACCESS_RW = 3,
};

/* Where and why a translation failed, for -EFAULT and -EACCES. */
struct vt_as_fault {
	uint64_t addr;	     /* first address that is not mapped or not permitted */
	unsigned int access; /* the access that was asked for (enum vt_access bits) */
};

/*
 * A miss in this address space can be filled later (an IOTLB asks the driver and waits for an
 * UPDATE), so a ring that meets one parks the queue instead of declaring the driver broken. Without
 * it (the memory table), an unmapped address is final: the driver broke the rules.
 */
#define VT_AS_F_MISS_RETRYABLE 1u

struct vt_as_ops {
	unsigned int flags; /* VT_AS_F_* */
	int (*translate)(void *impl, uint64_t addr, uint64_t len, unsigned int access,
			 struct iovec *iov, unsigned int iov_max, unsigned int *iov_count,
			 struct vt_as_fault *fault);
	uint64_t (*generation)(const void *impl);
};

struct vt_as {
	const struct vt_as_ops *ops;
	void *impl;
};

/*
 * vt_as_translate - turn [addr, addr + len) into host iovecs the device may access as @access.
 *
 * Ranges that are adjacent in both address spaces are merged into one iovec; a buffer crossing
 * regions or mappings that are not contiguous on the host yields several. len 0 yields no iovec and
 * succeeds. Returns 0 with *iov_count set, or:
 *   -EFAULT    some byte is not mapped; fault->addr is the first such byte (a transport can ask the
 *              driver for it, as vhost-user's IOTLB miss does);
 *   -EACCES    mapped, but not with @access; fault->addr is the first such byte;
 *   -EOVERFLOW addr + len wraps past 2^64;
 *   -ENOBUFS   the buffer needs more than @iov_max iovecs; the first @iov_max are filled (a
 *              valid prefix, *iov_count == @iov_max) so a caller can go on in pieces;
 *   -EINVAL    @access is not a valid combination.
 * @fault may be NULL.
 */
static inline int vt_as_translate(const struct vt_as *as, uint64_t addr, uint64_t len,
				  unsigned int access, struct iovec *iov, unsigned int iov_max,
				  unsigned int *iov_count, struct vt_as_fault *fault)
{
	return as->ops->translate(as->impl, addr, len, access, iov, iov_max, iov_count, fault);
}

/*
 * Generation of the address space's contents: it changes whenever a translation may have been
 * removed or changed (region removal, IOTLB invalidation, eviction, overlapping update). A cached
 * host pointer is valid only while the generation it was taken under is current.
 */
static inline uint64_t vt_as_generation(const struct vt_as *as)
{
	return as->ops->generation(as->impl);
}

/*
 * Resolve [addr, addr + len) to one contiguous host range, for ring metadata. Errors as
 * vt_as_translate, and -ENOBUFS when the range is mapped but not contiguous on the host.
 */
int vt_as_map_contig(const struct vt_as *as, uint64_t addr, uint64_t len, unsigned int access,
		     void **hva, struct vt_as_fault *fault);

/* Copy between a host buffer and the address space, checked as vt_as_translate. */
int vt_as_read(const struct vt_as *as, uint64_t addr, void *buf, size_t len,
	       struct vt_as_fault *fault);
int vt_as_write(const struct vt_as *as, uint64_t addr, const void *buf, size_t len,
		struct vt_as_fault *fault);

#endif
