/* SPDX-License-Identifier: MIT */
/*
 * The driver object: the other half of negotiation. It reaches a device through a transport
 * (struct vt_transport_ops: the register-level operations every transport offers), runs the
 * initialization sequence of virtio 1.3 section 3.1.1, picks the DMA mode from the negotiated
 * features, and reads config space in a generation loop.
 */
#ifndef VIRTUE_DRIVER_H
#define VIRTUE_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "dma.h"
#include "log.h"

struct vt_transport_ops {
	uint32_t (*device_id)(void *transport);
	uint64_t (*get_device_features)(void *transport);
	int (*set_driver_features)(void *transport, uint64_t features);
	uint8_t (*get_status)(void *transport);
	int (*set_status)(void *transport, uint8_t status);
	int (*read_config)(void *transport, uint32_t offset, void *buf, uint32_t len);
	int (*write_config)(void *transport, uint32_t offset, const void *buf, uint32_t len);
	uint32_t (*config_generation)(void *transport);
};

struct vt_driver_params {
	const struct vt_transport_ops *ops;
	void *transport;
	/*
	 * Features this driver implements and would accept when offered. Dependencies are
	 * enforced (a bit whose requirements are not met is dropped). VERSION_1 is required.
	 */
	uint64_t supported;
	/*
	 * Restricted-memory policy (as a confidential guest: the device must not be trusted with
	 * driver-physical memory). Set: negotiation fails unless the device offers VERSION_1 and
	 * VIRTIO_F_ACCESS_PLATFORM and the driver accepts both. Never inferred from the
	 * environment: the caller says so.
	 */
	bool restricted_memory;
	/* The DMA mode of this platform, used when ACCESS_PLATFORM is negotiated. */
	enum vt_dma_mode platform_dma;
	const struct vt_log *log;
};

struct vt_driver;

int vt_driver_new(const struct vt_driver_params *params, struct vt_driver **out);
void vt_driver_free(struct vt_driver *drv);

/*
 * Resets the device and negotiates: ACKNOWLEDGE, DRIVER, features, FEATURES_OK, then re-reads the
 * status to see whether the device kept FEATURES_OK. On failure the driver sets FAILED and returns
 *   -ENOTSUP  the device does not offer VERSION_1 (legacy devices are not supported);
 *   -EPERM    restricted_memory is set and the device does not offer ACCESS_PLATFORM;
 *   -EPROTO   the device refused FEATURES_OK (or the transport refused a status write);
 *   other     the transport's error.
 */
int vt_driver_negotiate(struct vt_driver *drv);

/* Sets DRIVER_OK (after queues are set up). */
int vt_driver_ready(struct vt_driver *drv);

/* Sets FAILED: the driver gave up on the device. */
int vt_driver_fail(struct vt_driver *drv);

int vt_driver_reset(struct vt_driver *drv);

/* Negotiated features (0 before a successful negotiation). */
uint64_t vt_driver_features(const struct vt_driver *drv);
uint64_t vt_driver_offered_features(const struct vt_driver *drv);

/* The DMA mode the negotiated features call for (vt_dma_mode_for). */
enum vt_dma_mode vt_driver_dma_mode(const struct vt_driver *drv);

/* Whether the device has set DEVICE_NEEDS_RESET. */
bool vt_driver_device_needs_reset(const struct vt_driver *drv);

/*
 * Reads config space consistently: generation before and after must agree (virtio 1.3 section
 * 2.5.1), retrying a bounded number of times; -EAGAIN if the device never settles.
 */
int vt_driver_config_read(struct vt_driver *drv, uint32_t offset, void *buf, uint32_t len);
int vt_driver_config_write(struct vt_driver *drv, uint32_t offset, const void *buf, uint32_t len);

/* A transport that calls a struct vt_device in the same process directly (tests, demos). */
extern const struct vt_transport_ops vt_local_transport_ops;

#endif
