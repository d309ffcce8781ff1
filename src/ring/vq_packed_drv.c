/* SPDX-License-Identifier: MIT */
/* Driver half of the packed virtqueue (virtio 1.3 section 2.8): not yet written. */
#include <errno.h>

#include "vq_impl.h"

int vq_packed_drv_init(struct vt_vq_drv *vq)
{
	(void)vq;
	return -ENOTSUP;
}

int vq_packed_drv_add(struct vt_vq_drv *vq, const struct iovec *sg, unsigned int nreadable,
		      unsigned int nwritable, void *token)
{
	(void)vq, (void)sg, (void)nreadable, (void)nwritable, (void)token;
	return -ENOTSUP;
}

bool vq_packed_drv_kick_prepare(struct vt_vq_drv *vq)
{
	(void)vq;
	return false;
}

int vq_packed_drv_get(struct vt_vq_drv *vq, void **token, uint32_t *len)
{
	(void)vq, (void)token, (void)len;
	return -ENOTSUP;
}

void vq_packed_drv_disable_cb(struct vt_vq_drv *vq)
{
	(void)vq;
}

bool vq_packed_drv_enable_cb(struct vt_vq_drv *vq)
{
	(void)vq;
	return false;
}

void *vq_packed_drv_detach_unused(struct vt_vq_drv *vq)
{
	(void)vq;
	return NULL;
}
