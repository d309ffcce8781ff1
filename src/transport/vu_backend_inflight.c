/* SPDX-License-Identifier: MIT */
/*
 * vhost-user back-end: the inflight buffer (INFLIGHT_SHMFD). The back-end allocates it on
 * GET_INFLIGHT_FD and the front-end keeps it: after a back-end crash or a reconnect it hands the
 * same buffer to the next back-end with SET_INFLIGHT_FD, whose rings then resubmit whatever was
 * taken and not returned (the ring layer's vq_inflight.c records and recovers; this file only
 * sizes, maps and hands out each queue's region).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport/vu_backend_impl.h"

static size_t region_stride(unsigned int queue_size)
{
	size_t n = vt_vq_inflight_size(queue_size);
	return (n + VHOST_USER_INFLIGHT_ALIGN - 1) & ~(size_t)(VHOST_USER_INFLIGHT_ALIGN - 1);
}

void vu_inflight_unmap(struct vt_vhost_backend *be)
{
	if (be->inflight_base)
		munmap(be->inflight_base, be->inflight_map_len);
	be->inflight_base = NULL;
	be->inflight_map_len = 0;
	be->inflight_queues = 0;
	be->inflight_queue_size = 0;
}

static int check_geometry(struct vt_vhost_backend *be, const struct vhost_user_inflight *in)
{
	if (!vu_has_protocol(be, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD))
		return -ENOTSUP;
	if (in->num_queues == 0 || in->num_queues > be->params.num_queues || in->queue_size == 0 ||
	    in->queue_size > be->params.max_queue_size) {
		vt_log(be->log, VT_LOG_ERROR, "%s: inflight buffer for %u queues of %u refused",
		       be->name, in->num_queues, in->queue_size);
		return -EINVAL;
	}
	if (vu_any_queue_running(be)) {
		vt_log(be->log, VT_LOG_ERROR, "%s: inflight buffer changed while rings run",
		       be->name);
		return -EBUSY;
	}
	return 0;
}

int vu_get_inflight_fd(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	struct vhost_user_inflight *in = &msg->payload.inflight;
	int rc = check_geometry(be, in);

	if (rc < 0)
		return rc;
	size_t size = region_stride(in->queue_size) * in->num_queues;
	int fd = memfd_create("virtue-inflight", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	void *base = MAP_FAILED;
	if (ftruncate(fd, (off_t)size) == 0)
		base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		close(fd);
		return rc;
	}
	/* Zero-filled: version 0 in every region, which the rings initialize at start. */
	vu_inflight_unmap(be);
	be->inflight_base = base;
	be->inflight_map_len = size;
	be->inflight_queues = in->num_queues;
	be->inflight_queue_size = in->queue_size;
	in->mmap_size = size;
	in->mmap_offset = 0;
	be->reply_fd = fd; /* sent with the reply, then closed: the mapping stays */
	return 0;
}

int vu_set_inflight_fd(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	const struct vhost_user_inflight *in = &msg->payload.inflight;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	struct stat st;
	int rc = check_geometry(be, in);

	if (rc < 0)
		return rc;
	uint64_t need = region_stride(in->queue_size) * in->num_queues;
	if (in->mmap_size < need || (in->mmap_offset & (page - 1)) ||
	    in->mmap_offset + in->mmap_size < in->mmap_offset || in->mmap_size > SIZE_MAX) {
		vt_log(be->log, VT_LOG_ERROR,
		       "%s: inflight buffer of %llu bytes at %llu: %llu needed, page aligned",
		       be->name, (unsigned long long)in->mmap_size,
		       (unsigned long long)in->mmap_offset, (unsigned long long)need);
		return -EINVAL;
	}
	if (fstat(msg->fds[0], &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < in->mmap_offset + in->mmap_size) {
		vt_log(be->log, VT_LOG_ERROR, "%s: inflight buffer past the end of its fd",
		       be->name);
		return -EINVAL;
	}
	void *base = mmap(NULL, (size_t)in->mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			  msg->fds[0], (off_t)in->mmap_offset);
	if (base == MAP_FAILED)
		return -errno;
	vu_inflight_unmap(be);
	be->inflight_base = base;
	be->inflight_map_len = (size_t)in->mmap_size;
	be->inflight_queues = in->num_queues;
	be->inflight_queue_size = in->queue_size;
	return 0;
}

void *vu_inflight_region(struct vt_vhost_backend *be, const struct vu_queue *q)
{
	if (!be->inflight_base || q->index >= be->inflight_queues ||
	    q->num > be->inflight_queue_size)
		return NULL;
	/* Sized for either layout (vt_vq_inflight_size): the ring picks its own. */
	return (uint8_t *)be->inflight_base + region_stride(be->inflight_queue_size) * q->index;
}
