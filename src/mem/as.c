/* SPDX-License-Identifier: MIT */
/*
 * Address-space helpers built on translate alone, so they behave identically over the memory
 * table and the IOTLB: contiguous resolution for ring metadata and checked copies.
 */
#include <errno.h>
#include <string.h>

#include <virtue/as.h>

int vt_as_map_contig(const struct vt_as *as, uint64_t addr, uint64_t len, unsigned int access,
		     void **hva, struct vt_as_fault *fault)
{
	struct iovec iov;
	unsigned int n = 0;

	if (len == 0)
		return -EINVAL;
	int ret = vt_as_translate(as, addr, len, access, &iov, 1, &n, fault);
	if (ret < 0)
		return ret;
	*hva = iov.iov_base;
	return 0;
}

/* Copies in pieces of at most this many iovecs, so any buffer is copied without allocation. */
#define AS_COPY_IOV 16

static int as_copy(const struct vt_as *as, uint64_t addr, void *buf, size_t len, int to_as,
		   struct vt_as_fault *fault)
{
	unsigned int access = to_as ? VT_ACCESS_WRITE : VT_ACCESS_READ;
	uint8_t *p = buf;

	if (len && addr + len - 1 < addr)
		return -EOVERFLOW;
	while (len) {
		struct iovec iov[AS_COPY_IOV];
		unsigned int n = 0;
		int ret = vt_as_translate(as, addr, len, access, iov, AS_COPY_IOV, &n, fault);
		if (ret < 0 && ret != -ENOBUFS)
			return ret;
		/* -ENOBUFS: the iovecs hold a valid prefix; copy it and translate the rest. */
		if (n == 0)
			return -EIO; /* an implementation that made no progress */
		for (unsigned int i = 0; i < n; i++) {
			if (to_as)
				memcpy(iov[i].iov_base, p, iov[i].iov_len);
			else
				memcpy(p, iov[i].iov_base, iov[i].iov_len);
			p += iov[i].iov_len;
			addr += iov[i].iov_len;
			len -= iov[i].iov_len;
		}
	}
	return 0;
}

int vt_as_read(const struct vt_as *as, uint64_t addr, void *buf, size_t len,
	       struct vt_as_fault *fault)
{
	return as_copy(as, addr, buf, len, 0, fault);
}

int vt_as_write(const struct vt_as *as, uint64_t addr, const void *buf, size_t len,
		struct vt_as_fault *fault)
{
	return as_copy(as, addr, (void *)buf, len, 1, fault);
}
