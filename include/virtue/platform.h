/* SPDX-License-Identifier: MIT */
/*
 * The platform rule. Whether a device reaches driver memory through the platform (IOMMU or bounce
 * buffers) and how strongly the two sides order their memory accesses are decided by negotiated
 * feature bits and nothing else: no architecture, hypervisor or environment probe. These two
 * functions are the only code in virtue that reads VIRTIO_F_ACCESS_PLATFORM and
 * VIRTIO_F_ORDER_PLATFORM (tests/lint/platform-rule.sh checks it); every path asks them, and hot
 * paths cache the answer once per device or queue.
 */
#ifndef VIRTUE_PLATFORM_H
#define VIRTUE_PLATFORM_H

#include <stdbool.h>
#include <stdint.h>

#include "spec/virtio_config.h"

/*
 * True exactly when VIRTIO_F_ACCESS_PLATFORM is set in @negotiated: then every address in a
 * descriptor or ring register is a bus address (IOVA) that the device must translate through the
 * platform, and the driver must map buffers with its DMA API. False: addresses are driver-physical.
 */
static inline bool vt_uses_platform_dma(uint64_t negotiated)
{
	return (negotiated & VT_BIT(VIRTIO_F_ACCESS_PLATFORM)) != 0;
}

/* Barrier strength a queue uses, chosen once from the negotiated features (see barrier.h). */
enum vt_barrier_kind {
	/* The other side is a CPU in the same coherence domain: SMP barriers suffice. */
	VT_BARRIERS_WEAK = 0,
	/* ORDER_PLATFORM: order as for real DMA (e.g. arm64 dmb osh rather than ish). */
	VT_BARRIERS_PLATFORM = 1,
};

static inline enum vt_barrier_kind vt_barrier_kind(uint64_t negotiated)
{
	return (negotiated & VT_BIT(VIRTIO_F_ORDER_PLATFORM)) ? VT_BARRIERS_PLATFORM
							      : VT_BARRIERS_WEAK;
}

#endif
