/* SPDX-License-Identifier: MIT */
/* Device half of the packed virtqueue (virtio 1.3 section 2.8): not yet written. */
#include <errno.h>

#include "vq_impl.h"

int vq_packed_dev_init(struct vt_vq_dev *vq)
{
	(void)vq;
	return -ENOTSUP;
}

int vq_packed_dev_resolve(struct vt_vq_dev *vq)
{
	(void)vq;
	return -ENOTSUP;
}

int vq_packed_dev_pop(struct vt_vq_dev *vq, struct vt_vq_chain *chain, struct iovec *iov,
		      unsigned int iov_max)
{
	(void)vq, (void)chain, (void)iov, (void)iov_max;
	return -ENOTSUP;
}

int vq_packed_dev_push(struct vt_vq_dev *vq, uint16_t id, uint16_t ndesc, uint32_t written,
		       unsigned int batch)
{
	(void)vq, (void)id, (void)ndesc, (void)written, (void)batch;
	return -ENOTSUP;
}

bool vq_packed_dev_flush(struct vt_vq_dev *vq)
{
	(void)vq;
	return false;
}

void vq_packed_dev_disable_notify(struct vt_vq_dev *vq)
{
	(void)vq;
}

bool vq_packed_dev_enable_notify(struct vt_vq_dev *vq)
{
	(void)vq;
	return false;
}
