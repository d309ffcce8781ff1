/* SPDX-License-Identifier: MIT */
/*
 * Transport-level numbers of virtio 1.3: device status bits ("Device Status Field"), the reserved
 * (transport) feature bits 24 to 41 ("Reserved Feature Bits") and device type IDs. The one place
 * these numbers are written down; everything else includes this file.
 */
#ifndef VIRTUE_SPEC_VIRTIO_CONFIG_H
#define VIRTUE_SPEC_VIRTIO_CONFIG_H

/* Device status field, virtio 1.3 section 2.1. */
#define VIRTIO_CONFIG_S_ACKNOWLEDGE 0x01
#define VIRTIO_CONFIG_S_DRIVER	    0x02
#define VIRTIO_CONFIG_S_DRIVER_OK   0x04
#define VIRTIO_CONFIG_S_FEATURES_OK 0x08
#define VIRTIO_CONFIG_S_NEEDS_RESET 0x40
#define VIRTIO_CONFIG_S_FAILED	    0x80

/* Feature bits 24..41 belong to the transport and the queue; the rest to the device type. */
#define VIRTIO_TRANSPORT_F_START 24
#define VIRTIO_TRANSPORT_F_END	 42

/* Legacy-only bits: meaningless once VERSION_1 is negotiated, still seen on the wire. */
#define VIRTIO_F_NOTIFY_ON_EMPTY 24
#define VIRTIO_F_ANY_LAYOUT	 27

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX     29
/* Bit 30 is reserved by virtio; vhost-user uses it to announce protocol features. */
#define VHOST_USER_F_PROTOCOL_FEATURES 30
#define VIRTIO_F_VERSION_1	       32
/*
 * Set: the device reaches driver memory only through the platform (IOMMU, bounce buffers), so
 * every address it sees is a bus address. Clear: the device uses driver-physical addresses.
 * Only vt_uses_platform_dma() may interpret it.
 */
#define VIRTIO_F_ACCESS_PLATFORM 33
#define VIRTIO_F_RING_PACKED	 34
#define VIRTIO_F_IN_ORDER	 35
/* Set: driver and device order memory accesses as the platform does for real DMA. */
#define VIRTIO_F_ORDER_PLATFORM	   36
#define VIRTIO_F_SR_IOV		   37
#define VIRTIO_F_NOTIFICATION_DATA 38
#define VIRTIO_F_NOTIF_CONFIG_DATA 39
#define VIRTIO_F_RING_RESET	   40
#define VIRTIO_F_ADMIN_VQ	   41

#define VT_BIT(b) (1ULL << (b))

/* Device IDs, virtio 1.3 section 5. */
#define VIRTIO_ID_NET	  1
#define VIRTIO_ID_BLOCK	  2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG	  4

#endif
