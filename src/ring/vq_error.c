/* SPDX-License-Identifier: MIT */
/* The rule behind each virtqueue error, as log lines and tools print it. */
#include <virtue/virtqueue.h>

static const char *const messages[VT_VQ_ERR__COUNT] = {
	[VT_VQ_OK] = "no error",
	[VT_VQ_ERR_RING_UNMAPPED] = "a ring area is not mapped, misaligned or not contiguous",
	[VT_VQ_ERR_AVAIL_IDX] = "available index moved by more than the queue size",
	[VT_VQ_ERR_HEAD_RANGE] = "descriptor head index not below the queue size",
	[VT_VQ_ERR_NEXT_RANGE] = "descriptor next index not below the table size",
	[VT_VQ_ERR_CHAIN_TOO_LONG] = "descriptor chain longer than the queue allows: a loop",
	[VT_VQ_ERR_INDIRECT_NOT_NEGOTIATED] = "indirect descriptor without VIRTIO_F_INDIRECT_DESC",
	[VT_VQ_ERR_INDIRECT_NESTED] = "indirect descriptor inside an indirect table",
	[VT_VQ_ERR_INDIRECT_WITH_NEXT] = "descriptor with both INDIRECT and NEXT",
	[VT_VQ_ERR_INDIRECT_LEN] =
	    "indirect table length zero, not a multiple of 16, or larger than the queue allows",
	[VT_VQ_ERR_READABLE_AFTER_WRITABLE] =
	    "device-readable descriptor after a device-writable one",
	[VT_VQ_ERR_TOTAL_LEN] = "descriptor chain longer than 2^32 bytes",
	[VT_VQ_ERR_UNMAPPED] = "buffer address not mapped for the device",
	[VT_VQ_ERR_PERMISSION] = "buffer mapping does not permit the access its descriptor needs",
	[VT_VQ_ERR_BUFFER_ID] = "packed buffer id not below the queue size",
	[VT_VQ_ERR_BUFFER_ID_IN_FLIGHT] =
	    "buffer made available again while in flight at the device",
	[VT_VQ_ERR_USED_IDX] = "used index moved by more than the buffers outstanding",
	[VT_VQ_ERR_USED_ID] = "used id out of range or not an outstanding buffer",
	[VT_VQ_ERR_USED_WRAP] = "packed used descriptor with inconsistent AVAIL/USED bits",
	[VT_VQ_ERR_NOT_IN_FLIGHT] = "device returned a buffer that was not in flight",
};

const char *vt_vq_error_str(enum vt_vq_error error)
{
	if ((unsigned int)error >= VT_VQ_ERR__COUNT || !messages[error])
		return "unknown virtqueue error";
	return messages[error];
}
