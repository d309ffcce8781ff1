/* SPDX-License-Identifier: MIT */
/*
 * Driver-side initialization (virtio 1.3 section 3.1.1) over any transport: reset, ACKNOWLEDGE,
 * DRIVER, feature selection under the shared dependency rules and the restricted-memory policy,
 * FEATURES_OK and its re-read, then the DMA mode the negotiated features call for.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/driver.h>
#include <virtue/features.h>
#include <virtue/platform.h>
#include <virtue/spec/virtio_config.h>

/* How often a config read is retried while the device keeps changing it. */
#define CONFIG_READ_RETRIES 64

struct vt_driver {
	const struct vt_transport_ops *ops;
	void *transport;
	uint64_t supported;
	bool restricted_memory;
	enum vt_dma_mode platform_dma;
	const struct vt_log *log;
	uint32_t device_id;
	uint64_t offered;
	uint64_t negotiated;
};

int vt_driver_new(const struct vt_driver_params *params, struct vt_driver **out)
{
	if (!params->ops)
		return -EINVAL;
	struct vt_driver *drv = calloc(1, sizeof(*drv));
	if (!drv)
		return -ENOMEM;
	drv->ops = params->ops;
	drv->transport = params->transport;
	drv->supported = params->supported | VT_BIT(VIRTIO_F_VERSION_1);
	drv->restricted_memory = params->restricted_memory;
	drv->platform_dma = params->platform_dma;
	drv->log = params->log;
	*out = drv;
	return 0;
}

void vt_driver_free(struct vt_driver *drv)
{
	free(drv);
}

static int add_status(struct vt_driver *drv, uint8_t bits)
{
	uint8_t status = drv->ops->get_status(drv->transport);
	return drv->ops->set_status(drv->transport,
				    (uint8_t)((status & ~VIRTIO_CONFIG_S_NEEDS_RESET) | bits));
}

int vt_driver_fail(struct vt_driver *drv)
{
	return add_status(drv, VIRTIO_CONFIG_S_FAILED);
}

int vt_driver_reset(struct vt_driver *drv)
{
	drv->negotiated = 0;
	int r = drv->ops->set_status(drv->transport, 0);
	if (r < 0)
		return r;
	/* 4.1.4.3.2 and 4.2.2.2: a reset is complete when the status reads back as 0. */
	if (drv->ops->get_status(drv->transport) != 0)
		return -EIO;
	return 0;
}

static int negotiate_fail(struct vt_driver *drv, int err)
{
	drv->negotiated = 0;
	vt_driver_fail(drv);
	return err;
}

int vt_driver_negotiate(struct vt_driver *drv)
{
	char names[512];
	int r = vt_driver_reset(drv);
	if (r < 0)
		return r;
	drv->device_id = drv->ops->device_id(drv->transport);
	r = add_status(drv, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	if (r == 0)
		r = add_status(drv, VIRTIO_CONFIG_S_DRIVER);
	if (r < 0)
		return negotiate_fail(drv, r);

	drv->offered = drv->ops->get_device_features(drv->transport);
	if (!(drv->offered & VT_BIT(VIRTIO_F_VERSION_1))) {
		vt_log(drv->log, VT_LOG_ERROR,
		       "device does not offer VERSION_1: legacy devices are not supported");
		return negotiate_fail(drv, -ENOTSUP);
	}

	uint64_t wanted = vt_features_close_deps(drv->device_id, drv->offered & drv->supported);

	/*
	 * The restricted-memory policy: the device may only see memory through the platform. Ask
	 * the platform rule about the set we are about to accept, so the policy and the DMA mode
	 * can never disagree.
	 */
	if (drv->restricted_memory && !vt_uses_platform_dma(wanted)) {
		vt_features_str(drv->device_id, drv->offered, names, sizeof(names));
		vt_log(drv->log, VT_LOG_ERROR,
		       "restricted-memory policy: the device must offer VERSION_1 and "
		       "ACCESS_PLATFORM (and this driver accept them) so that it reaches memory "
		       "only through the platform; offered: %s",
		       names);
		return negotiate_fail(drv, -EPERM);
	}

	r = drv->ops->set_driver_features(drv->transport, wanted);
	if (r < 0)
		return negotiate_fail(drv, r);
	r = add_status(drv, VIRTIO_CONFIG_S_FEATURES_OK);
	if (r < 0)
		return negotiate_fail(drv, r);
	/* 3.1.1 step 6: re-read; the device clears FEATURES_OK when it refuses the subset. */
	if (!(drv->ops->get_status(drv->transport) & VIRTIO_CONFIG_S_FEATURES_OK)) {
		vt_features_str(drv->device_id, wanted, names, sizeof(names));
		vt_log(drv->log, VT_LOG_ERROR, "device refused FEATURES_OK for: %s", names);
		return negotiate_fail(drv, -EPROTO);
	}
	drv->negotiated = wanted;
	return 0;
}

int vt_driver_ready(struct vt_driver *drv)
{
	if (!drv->negotiated)
		return -EPROTO;
	return add_status(drv, VIRTIO_CONFIG_S_DRIVER_OK);
}

uint64_t vt_driver_features(const struct vt_driver *drv)
{
	return drv->negotiated;
}

uint64_t vt_driver_offered_features(const struct vt_driver *drv)
{
	return drv->offered;
}

enum vt_dma_mode vt_driver_dma_mode(const struct vt_driver *drv)
{
	return vt_dma_mode_for(drv->negotiated, drv->platform_dma);
}

bool vt_driver_device_needs_reset(const struct vt_driver *drv)
{
	return (drv->ops->get_status(drv->transport) & VIRTIO_CONFIG_S_NEEDS_RESET) != 0;
}

int vt_driver_config_read(struct vt_driver *drv, uint32_t offset, void *buf, uint32_t len)
{
	/* 2.5.1 Driver Requirements: Device Configuration Space: read until generation is stable.
	 */
	for (int attempt = 0; attempt < CONFIG_READ_RETRIES; attempt++) {
		uint32_t before = drv->ops->config_generation(drv->transport);
		int r = drv->ops->read_config(drv->transport, offset, buf, len);
		if (r < 0)
			return r;
		if (drv->ops->config_generation(drv->transport) == before)
			return 0;
	}
	vt_log(drv->log, VT_LOG_ERROR, "config space kept changing over %d reads",
	       CONFIG_READ_RETRIES);
	return -EAGAIN;
}

int vt_driver_config_write(struct vt_driver *drv, uint32_t offset, const void *buf, uint32_t len)
{
	return drv->ops->write_config(drv->transport, offset, buf, len);
}
