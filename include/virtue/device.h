/* SPDX-License-Identifier: MIT */
/*
 * The device object: what a virtio device is before any queue runs. It holds the features the
 * device offers, what the driver accepted, the status byte and its state machine (virtio 1.3
 * section 3.1, "Device Initialization"), and the configuration space with its generation counter.
 * Transports call the vt_device_* functions when the driver touches the matching registers or
 * messages; the device model plugs in through struct vt_device_ops.
 *
 * Thread-safe: the control path (transport) and data path (a queue that found the driver broken)
 * may call in concurrently. Callbacks run without the device's lock held.
 */
#ifndef VIRTUE_DEVICE_H
#define VIRTUE_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"

#define VT_DEVICE_CONFIG_MAX 256

struct vt_device_ops {
	/*
	 * The driver set FEATURES_OK with @negotiated, which already passed the generic rules. The
	 * model may still refuse (return -errno; FEATURES_OK then stays clear). Optional.
	 */
	int (*features_ok)(void *opaque, uint64_t negotiated);
	/* The driver set DRIVER_OK: queues may run. Optional. */
	void (*driver_ok)(void *opaque);
	/* The driver reset the device (status 0): stop queues, forget negotiated state. Optional.
	 */
	void (*reset)(void *opaque);
	/*
	 * The driver wrote config space. Return 0 to accept (the bytes are stored), -EPERM for a
	 * read-only field. Optional: absent, every driver write is refused.
	 */
	int (*config_write)(void *opaque, uint32_t offset, const void *buf, uint32_t len);
	/*
	 * The transport's hook to send a configuration change notification: config space changed
	 * after DRIVER_OK, or DEVICE_NEEDS_RESET was set. Optional.
	 */
	void (*config_changed)(void *opaque);
};

struct vt_device_params {
	uint32_t device_id; /* VIRTIO_ID_* */
	const char *name;   /* for log lines, e.g. "virtue-blk0" */
	uint64_t offered;   /* device features offered; VERSION_1 is added */
	/*
	 * Features the device cannot operate without (spec 6.1: a device "MAY fail to operate
	 * further" if, e.g., ACCESS_PLATFORM is not accepted). VERSION_1 always.
	 */
	uint64_t required;
	const void *config;   /* initial config space */
	uint32_t config_size; /* at most VT_DEVICE_CONFIG_MAX */
	const struct vt_device_ops *ops;
	void *opaque;
	const struct vt_log *log;
};

struct vt_device;

int vt_device_new(const struct vt_device_params *params, struct vt_device **out);
void vt_device_free(struct vt_device *dev);

uint32_t vt_device_id(const struct vt_device *dev);
const char *vt_device_name(const struct vt_device *dev);

/* Feature registers. */
uint64_t vt_device_offered_features(const struct vt_device *dev);
/*
 * The driver writes the features it accepts. Allowed while DRIVER is set and FEATURES_OK is not
 * (-EBUSY after FEATURES_OK: features cannot change; -EPROTO before DRIVER). What was written is
 * validated when the driver sets FEATURES_OK.
 */
int vt_device_set_driver_features(struct vt_device *dev, uint64_t features);
uint64_t vt_device_driver_features(const struct vt_device *dev);
/* The negotiated features: valid once FEATURES_OK is set, 0 before. */
uint64_t vt_device_features(const struct vt_device *dev);

/*
 * Status register. Writing 0 resets. Otherwise the driver may only add bits, in the spec's order
 * (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK; FAILED at any time); an out-of-order write or one
 * that clears a bit is refused with -EPROTO and changes nothing. Setting FEATURES_OK validates the
 * accepted features (offered, VERSION_1, required, dependency rules, the model's veto): if they
 * are invalid, the rest of the write takes effect, FEATURES_OK stays clear (the driver sees it on
 * re-reading, as the spec intends) and the reason is logged; the call returns 0 either way.
 */
int vt_device_set_status(struct vt_device *dev, uint8_t status);
uint8_t vt_device_status(const struct vt_device *dev);

/*
 * The device found the driver broke a rule (e.g. a malformed ring): set DEVICE_NEEDS_RESET and
 * notify the driver through config_changed. Logged once (the first reason), until reset.
 */
void vt_device_needs_reset(struct vt_device *dev, const char *reason);
bool vt_device_is_broken(const struct vt_device *dev);

/* Configuration space. Out-of-range access: -EINVAL. */
int vt_device_config_read(struct vt_device *dev, uint32_t offset, void *buf, uint32_t len);
int vt_device_config_write(struct vt_device *dev, uint32_t offset, const void *buf, uint32_t len);
/* The device changes its own config: the generation moves, the driver is notified after DRIVER_OK.
 */
int vt_device_config_update(struct vt_device *dev, uint32_t offset, const void *buf, uint32_t len);
uint32_t vt_device_config_generation(const struct vt_device *dev);
uint32_t vt_device_config_size(const struct vt_device *dev);

#endif
